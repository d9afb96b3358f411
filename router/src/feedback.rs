//! Feedback: a caller scores an answered query by its request id (gRPC `Feedback`,
//! `POST /v1/feedback`, `llm-router feedback`). Only the tenant that made the request may score it,
//! once; an unknown, expired or foreign id is NOT_FOUND, a score outside [0, 1] INVALID_ARGUMENT.
//! An accepted score is counted per model (`llmroute_feedback_total`), checked against what was
//! predicted — the rolling σ-interval coverage of the last `WINDOW` scores per model
//! (`llmroute_feedback_sigma_coverage`, the estimator's own check, on σ as the estimator predicted
//! it) — and appended to `feedback.log` as one JSON line when configured. The same window
//! re-calibrates σ: the factor that makes the window's σ-intervals fit their scores
//! (`estimator::metrics::sigma_scale`) multiplies the model's σ from then on
//! (`llmroute_feedback_sigma_scale`). It is kept within [1, 4], only widening: letting it shrink to
//! 0.5 cost 1.5 points of routed accuracy on the healthy stream of
//! `inprocess.rs::feedback_on_a_degraded_model_raises_routed_accuracy`.

use crate::metrics::names;
use crate::query::resolve_tenant;
use crate::requests::{Answered, Claim};
use crate::state::Shared;
use crate::{Result, RouterError};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Scores per model in the rolling calibration check.
const WINDOW: usize = 500;
/// Scores a model needs before its coverage is reported and its σ re-calibrated.
const MIN_SCORES: usize = 50;
/// The range of the re-calibrated σ's factor.
const SIGMA_SCALE: (f64, f64) = (1.0, 4.0);

/// A feedback call as it arrives.
#[derive(Debug, Clone, Default)]
pub struct FeedbackInput {
    pub tenant: String,
    pub api_key: Option<String>,
    pub request_id: String,
    pub score: f64,
    /// The answer's realized output tokens, when the caller knows them.
    pub output_tokens: Option<u32>,
}

/// What the router answers to accepted feedback.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackReply {
    pub model: String,
    pub predicted_mu: f64,
    pub predicted_sigma: f64,
}

/// One model's last scores with what was predicted for them: (μ, σ, score, the trained μ).
type Window = VecDeque<(f64, f64, f64, f64)>;

/// Pseudo-scores that hold a model's learned bias at 0 until its own scores outweigh them.
const BIAS_PRIOR: f64 = 20.0;
/// The same for a model on a day-0 prior (a guess from its parent and its card): after n scores
/// its μ is (4·prior + Σ scores) / (4 + n), and no dead zone holds it.
const DAY0_BIAS_PRIOR: f64 = 4.0;
/// A bias this small is not applied (and larger ones are applied less this much): the answers a
/// router picks are those whose μ came out high, so their scores sit a little below μ even when
/// nothing is wrong (the winner's curse); only a clear shift — a model that degraded — moves μ.
const BIAS_DEAD_ZONE: f64 = 0.1;

/// What a model's window teaches its predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Learned {
    /// How far its recent scores sit from the trained μ, shrunk toward 0
    /// (Σ (score − μ) / (n + `BIAS_PRIOR`) over its window).
    pub bias: f64,
    /// The factor its predicted σ is multiplied by (1 until `MIN_SCORES` scores).
    pub sigma_scale: f64,
}

impl Default for Learned {
    fn default() -> Learned {
        Learned { bias: 0.0, sigma_scale: 1.0 }
    }
}

/// The feedback state: the rolling windows per model, what they teach, and the open log file.
#[derive(Default)]
pub struct Feedback {
    windows: Mutex<HashMap<String, Window>>,
    learned: std::sync::RwLock<HashMap<String, Learned>>,
    log: Mutex<Option<(PathBuf, std::fs::File)>>,
}

/// A score feedback may carry: a number in [0, 1].
fn valid_score(s: f64) -> bool {
    s.is_finite() && (0.0..=1.0).contains(&s)
}

impl Feedback {
    /// Adds a score to its model's window and updates what it teaches; once the window is full
    /// enough, its σ-interval coverage (also set as the model's coverage gauge).
    fn observe(&self, a: &Answered, score: f64) -> Option<f64> {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let q = w.entry(a.model.clone()).or_default();
        q.push_back((a.mu, a.sigma, score, a.base_mu));
        if q.len() > WINDOW {
            q.pop_front();
        }
        let residual: f64 = q.iter().map(|t| t.2 - t.3).sum();
        let (weight, dead_zone) = if a.prior { (DAY0_BIAS_PRIOR, 0.0) } else { (BIAS_PRIOR, BIAS_DEAD_ZONE) };
        let shrunk = residual / (q.len() as f64 + weight);
        let mut learned =
            Learned { bias: shrunk.signum() * (shrunk.abs() - dead_zone).max(0.0), ..self.learned(&a.model) };
        let mut coverage = None;
        if q.len() >= MIN_SCORES {
            let (mu, sigma, y): (Vec<f64>, Vec<f64>, Vec<f64>) =
                (q.iter().map(|t| t.0).collect(), q.iter().map(|t| t.1).collect(), q.iter().map(|t| t.2).collect());
            learned.sigma_scale = estimator::metrics::sigma_scale(&y, &mu, &sigma, 10, SIGMA_SCALE.0, SIGMA_SCALE.1);
            metrics::gauge!(names::FEEDBACK_SIGMA_SCALE, "model" => a.model.clone()).set(learned.sigma_scale);
            let c = estimator::metrics::sigma_check(&y, &mu, &sigma, 10).coverage;
            metrics::gauge!(names::FEEDBACK_SIGMA_COVERAGE, "model" => a.model.clone()).set(c);
            coverage = Some(c);
        }
        // Written while the window is still locked: scores of one model update it in order.
        self.learned.write().unwrap_or_else(|p| p.into_inner()).insert(a.model.clone(), learned);
        coverage
    }

    /// What `model`'s window teaches (no bias, σ unscaled without feedback).
    pub fn learned(&self, model: &str) -> Learned {
        self.learned.read().unwrap_or_else(|p| p.into_inner()).get(model).copied().unwrap_or_default()
    }

    /// How far `model`'s recent scores sit from what the trained estimator predicted.
    pub fn bias(&self, model: &str) -> f64 {
        self.learned(model).bias
    }

    /// The factor `model`'s predicted σ is multiplied by.
    pub fn sigma_scale(&self, model: &str) -> f64 {
        self.learned(model).sigma_scale
    }

    /// Appends one line to the log at `path` (opened on first use and when the path changes).
    fn append(&self, path: &Path, line: &str) -> Result<()> {
        let io = |e| RouterError::Io { path: path.to_path_buf(), source: e };
        let mut g = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if g.as_ref().is_none_or(|(p, _)| p != path) {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
            *g = Some((path.to_path_buf(), f));
        }
        match g.as_mut() {
            Some((_, f)) => {
                f.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
                f.flush().map_err(io)
            }
            None => Ok(()),
        }
    }
}

/// What `restore` read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    /// Scores applied (windows, biases, σ factors).
    pub scores: usize,
    /// Of them, the ones that also became online-index documents (lines with features).
    pub documents: usize,
    /// Lines that were not a feedback record (reported, not fatal).
    pub skipped: usize,
}

/// One line of the feedback log as `restore` reads it (lines written before the log carried
/// `base_mu`, `prior` or `features` still restore the windows).
#[derive(serde::Deserialize)]
struct LogLine {
    model: String,
    score: f64,
    mu: f64,
    sigma: f64,
    #[serde(default)]
    base_mu: Option<f64>,
    #[serde(default)]
    prior: bool,
    #[serde(default)]
    features: estimator::features::SparseVec,
}

/// Rebuilds what feedback taught — the per-model windows (bias, σ factor, coverage) and, with
/// `online`, the online index — from the feedback log at `path`, in order, so a restart does not
/// forget it. A missing file restores nothing; a line that is not a feedback record is skipped and
/// counted.
pub fn restore(feedback: &Feedback, online: Option<&crate::online::OnlineIndex>, path: &Path) -> Result<Restored> {
    let mut out = Restored::default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(RouterError::Io { path: path.to_path_buf(), source: e }),
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(l) = serde_json::from_str::<LogLine>(line) else {
            out.skipped += 1;
            continue;
        };
        if !valid_score(l.score) {
            out.skipped += 1;
            continue;
        }
        let a = Answered {
            tenant: String::new(),
            prompt_hash: 0,
            prompt: None,
            task: None,
            model: l.model,
            mu: l.mu,
            sigma: l.sigma,
            dispatched: true,
            features: l.features,
            base_mu: l.base_mu.unwrap_or(l.mu),
            prior: l.prior,
        };
        feedback.observe(&a, l.score);
        out.scores += 1;
        if let Some(idx) = online.filter(|_| !a.features.is_empty()) {
            idx.add(&a.features, &a.model, l.score);
            out.documents += 1;
        }
    }
    Ok(out)
}

/// Checks and records one score.
pub fn submit(shared: &Shared, input: FeedbackInput) -> Result<FeedbackReply> {
    let live = shared.live();
    let tenant = resolve_tenant(&live, &input.tenant, input.api_key.as_deref())?;
    if input.request_id.is_empty() {
        return Err(RouterError::bad("request_id", "missing: the request_id of a Route reply"));
    }
    if !valid_score(input.score) {
        return Err(RouterError::bad("score", format!("{} is not a number in [0, 1]", input.score)));
    }
    let cfg = &live.config.feedback;
    let a = match shared.requests.claim(&input.request_id, &tenant.name, cfg.retention(), Instant::now()) {
        Claim::Missing => {
            return Err(RouterError::NotFound(format!(
                "no answered request `{}` for tenant `{}` (unknown, older than {} s, or another tenant's)",
                input.request_id, tenant.name, cfg.retention_s
            )))
        }
        Claim::Scored => {
            return Err(RouterError::AlreadyExists(format!("request `{}` has been scored already", input.request_id)))
        }
        Claim::Claimed(a) => a,
    };
    if let Some(path) = &cfg.log {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let mut line = serde_json::json!({
            "at": at, "request_id": input.request_id, "tenant": a.tenant, "model": a.model, "task": a.task,
            "prompt_hash": format!("{:016x}", a.prompt_hash), "mu": a.mu, "sigma": a.sigma, "score": input.score,
            "output_tokens": input.output_tokens, "dispatched": a.dispatched, "base_mu": a.base_mu, "prior": a.prior,
            // The query's retrieval features (hashed term ids and weights, no text): what a
            // restart needs to rebuild the online index from this log (`restore`).
            "features": a.features,
        });
        if let Some(p) = &a.prompt {
            // `feedback.log_prompts`: what `estimator train --feedback` learns from.
            line["prompt"] = serde_json::json!(p);
        }
        if let Err(e) = shared.feedback.append(path, &line.to_string()) {
            // Not recorded: the caller may send it again.
            shared.requests.unclaim(&input.request_id);
            tracing::error!(error = %e, "feedback log not written");
            return Err(e);
        }
    }
    if cfg.online {
        shared.online.add(&a.features, &a.model, input.score);
    }
    metrics::counter!(names::FEEDBACK_TOTAL, "model" => a.model.clone()).increment(1);
    shared.feedback.observe(&a, input.score);
    Ok(FeedbackReply { model: a.model, predicted_mu: a.mu, predicted_sigma: a.sigma })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(mu: f64) -> Answered {
        Answered {
            tenant: "t".into(),
            prompt_hash: 7,
            prompt: None,
            task: None,
            model: "m".into(),
            mu,
            sigma: 0.05,
            dispatched: true,
            features: Vec::new(),
            base_mu: mu,
            prior: false,
        }
    }

    /// Coverage is reported once a model has enough scores: high when the scores' rate matches μ,
    /// low when the model does much worse than predicted.
    #[test]
    fn coverage_tracks_how_well_mu_matched_the_scores() {
        let good = Feedback::default();
        let bad = Feedback::default();
        let mut last = (None, None);
        for i in 0..200 {
            // μ 0.5: every other answer right (rate 0.5) vs none right.
            let y = if i % 2 == 0 { 1.0 } else { 0.0 };
            last = (good.observe(&answered(0.5), y), bad.observe(&answered(0.5), 0.0));
            if i < MIN_SCORES - 1 {
                assert_eq!(last, (None, None));
            }
        }
        assert_eq!(last.0, Some(1.0));
        assert_eq!(last.1, Some(0.0));
        assert!(good.bias("m").abs() < 0.01, "{}", good.bias("m"));
        // 200 zeros against μ 0.5: −100 / 220, less the dead zone.
        assert!((bad.bias("m") + (100.0 / 220.0 - BIAS_DEAD_ZONE)).abs() < 1e-9, "{}", bad.bias("m"));
        assert_eq!(bad.bias("other"), 0.0);
        // σ re-calibrated: the good model's intervals already fit (the smallest factor), the
        // bad one's are far too narrow (widened, up to the cap).
        assert_eq!(good.sigma_scale("m"), SIGMA_SCALE.0);
        assert_eq!(bad.sigma_scale("m"), SIGMA_SCALE.1);
        assert_eq!(good.sigma_scale("other"), 1.0);
    }

    /// Scores that scatter around μ more than σ says widen σ by the factor that fits them.
    #[test]
    fn sigma_is_recalibrated_on_the_window() {
        let f = Feedback::default();
        for i in 0..400 {
            // μ in 10 levels 0.3 … 0.75; each level's rate is off by ±0.15 (alternating), σ 0.02.
            let level = i % 10;
            let mu = 0.3 + 0.05 * level as f64;
            let rate = mu + if level % 2 == 0 { 0.15 } else { -0.15 };
            let y = if ((i / 10) as f64 + 0.5) / 40.0 < rate { 1.0 } else { 0.0 };
            f.observe(&Answered { sigma: 0.02, ..answered(mu) }, y);
        }
        let s = f.sigma_scale("m");
        assert!(s > 3.0 && s <= SIGMA_SCALE.1, "{s}");
    }

    /// A restart reads the log back: the windows (so the learned bias) and the online index are
    /// as before; old-format lines restore the windows only; junk is counted, not fatal.
    #[test]
    fn a_restart_restores_what_the_log_taught() {
        let dir = std::env::temp_dir().join(format!("llmroute-restore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("feedback.jsonl");
        let mut lines = Vec::new();
        for i in 0..60 {
            lines.push(
                serde_json::json!({"model": "m", "score": 0.0, "mu": 0.5, "sigma": 0.05, "base_mu": 0.5,
                    "prior": false, "features": [[i % 5, 1.0]]})
                .to_string(),
            );
        }
        lines.push(r#"{"model": "old", "score": 1.0, "mu": 0.5, "sigma": 0.1}"#.into());
        lines.push("not json".into());
        lines.push(r#"{"model": "m", "score": 7.0, "mu": 0.5, "sigma": 0.1}"#.into());
        std::fs::write(&path, lines.join("\n")).unwrap();
        let (f, idx) = (Feedback::default(), crate::online::OnlineIndex::new(1000));
        let r = restore(&f, Some(&idx), &path).unwrap();
        assert_eq!(r, Restored { scores: 61, documents: 60, skipped: 2 });
        // The same as 60 live zeros against μ 0.5: −30 / 80, less the dead zone.
        assert!((f.bias("m") + (30.0 / 80.0 - BIAS_DEAD_ZONE)).abs() < 1e-9, "{}", f.bias("m"));
        assert_eq!(idx.len(), 60);
        assert!(idx.evidence(&vec![(3, 1.0)])["m"].1 > 0.0);
        assert_eq!(restore(&f, None, &dir.join("none.jsonl")).unwrap(), Restored::default());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_log_appends_lines_and_reports_a_bad_path() {
        let dir = std::env::temp_dir().join(format!("llmroute-feedback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("feedback.jsonl");
        let f = Feedback::default();
        f.append(&path, "{\"a\":1}").unwrap();
        f.append(&path, "{\"a\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        let e = f.append(&dir.join("missing/feedback.jsonl"), "{}").unwrap_err();
        assert!(e.to_string().contains("missing/feedback.jsonl"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! How long a model takes to answer, learned from its answers: seconds ≈ a + b·input tokens +
//! c·output tokens (a: the fixed cost and any queue at the backend; b: prefill; c: decoding),
//! fitted by least squares with exponential forgetting (the recent ~`1 / (1 − FORGET)` answers
//! count), each coefficient kept ≥ 0. The decision passes over a model whose predicted time for
//! a query is past the call's remaining deadline while another model can answer in time
//! (`backends.deadline_aware`): a slow backend (a 1-thread llama.cpp server, 5–10 s an answer)
//! no longer takes calls it cannot finish, which its callers saw as timeouts. The time compared
//! with the deadline is the fit's prediction for what the decision knows (the prompt, the
//! predicted output) times the 90th percentile of the recent ratios of actual to such
//! predictions, each made before its answer was learned (so it also covers the output-length
//! error and a backend's own queue: two calls sharing a 1-thread server each take longer). A
//! model passed over gets no answers to learn from, so when a fit has had no new answer for
//! `STALE`, one call (the one with the most time left in its batch) is let through to measure
//! the model again (it may have recovered, or been restarted elsewhere); a call the deadline cuts
//! short is learned as an answer that took that long, so a model still too slow costs one
//! late call per `STALE`.

use std::time::{Duration, Instant};

/// Weight kept by the past at each new answer.
const FORGET: f64 = 0.98;
/// Answers seen before the fit is used.
pub const MIN_ANSWERS: u64 = 8;
/// Tokens are counted in thousands (coefficients of like size).
const SCALE: f64 = 1e-3;
/// Ridge on the token coefficients (keeps the solve defined while the lengths barely vary).
const RIDGE: f64 = 1e-6;
/// A fit with no answer for this long is not used.
pub const STALE: Duration = Duration::from_secs(60);
/// Recent ratios of actual to predicted answer time kept, and the quantile taken of them.
const RATIOS: usize = 64;
const QUANTILE: f64 = 0.9;

#[derive(Debug, Clone)]
pub struct LatencyFit {
    /// Σ w·x·xᵀ and Σ w·x·y over x = (1, input / 1000, output / 1000), y = seconds.
    xx: [[f64; 3]; 3],
    xy: [f64; 3],
    answers: u64,
    coef: [f64; 3],
    /// When the last answer came.
    last: Option<Instant>,
    /// Actual / predicted time of the last `RATIOS` answers (the prediction from what the
    /// decision knew, made before the answer was learned); a ring of `n_ratios`.
    ratios: [f64; RATIOS],
    n_ratios: usize,
    next_ratio: usize,
    /// Their 90th percentile (1 until `MIN_ANSWERS` are in), kept up to date by `observe`.
    scale: f64,
}

impl Default for LatencyFit {
    fn default() -> Self {
        LatencyFit {
            xx: [[0.0; 3]; 3],
            xy: [0.0; 3],
            answers: 0,
            coef: [0.0; 3],
            last: None,
            ratios: [0.0; RATIOS],
            n_ratios: 0,
            next_ratio: 0,
            scale: 1.0,
        }
    }
}

/// A fit's seconds for a call: a + b·(input tokens / 1000) + c·(output tokens / 1000), ≥ 0.
fn seconds([a, b, c]: [f64; 3], input_tokens: f64, output_tokens: f64) -> f64 {
    (a + b * input_tokens.max(0.0) * SCALE + c * output_tokens.max(0.0) * SCALE).max(0.0)
}

/// A fit as one batch's decision reads it (`LatencyFit::predictor`).
#[derive(Debug, Clone, Copy)]
pub struct LatencyPredictor {
    coef: [f64; 3],
    scale: f64,
}

impl LatencyPredictor {
    /// The 90th-percentile answer time of a call with this prompt and planned output: the fit's
    /// time × the 90th percentile of recent actual / predicted ratios (× 1 until `MIN_ANSWERS`
    /// ratios are in).
    pub fn predict(&self, input_tokens: f64, planned_output: f64) -> Option<Duration> {
        Duration::try_from_secs_f64(seconds(self.coef, input_tokens, planned_output) * self.scale).ok()
    }
}

impl LatencyFit {
    /// Learns an answer: its prompt and output tokens and how long it took; `planned_output` is
    /// the output length the decision went by (for the ratio of actual to predicted time).
    pub fn observe(&mut self, input_tokens: f64, output_tokens: f64, planned_output: f64, took: Duration) {
        self.observe_at(input_tokens, output_tokens, planned_output, took, Instant::now());
    }

    /// Learns a call its deadline cut short after `took`: as an answer of the planned length
    /// that took that long (it would have taken at least that), so a model too slow to finish
    /// any call still has a fresh fit that passes it over, instead of going stale and being
    /// sent call after call that times out.
    pub fn observe_cut(&mut self, input_tokens: f64, planned_output: f64, took: Duration) {
        self.observe(input_tokens, planned_output, planned_output, took);
    }

    fn observe_at(&mut self, input_tokens: f64, output_tokens: f64, planned_output: f64, took: Duration, now: Instant) {
        let x = [1.0, input_tokens.max(0.0) * SCALE, output_tokens.max(0.0) * SCALE];
        let y = took.as_secs_f64();
        if !y.is_finite() {
            return;
        }
        if let Some(pred) = self.point(input_tokens, planned_output).filter(|p| *p > 1e-6) {
            self.ratios[self.next_ratio] = y / pred;
            self.next_ratio = (self.next_ratio + 1) % RATIOS;
            self.n_ratios = (self.n_ratios + 1).min(RATIOS);
            if self.n_ratios >= MIN_ANSWERS as usize {
                let mut r = self.ratios;
                let r = &mut r[..self.n_ratios];
                r.sort_by(f64::total_cmp);
                self.scale = r[((r.len() - 1) as f64 * QUANTILE).round() as usize];
            }
        }
        for r in 0..3 {
            for c in 0..3 {
                self.xx[r][c] = FORGET * self.xx[r][c] + x[r] * x[c];
            }
            self.xy[r] = FORGET * self.xy[r] + x[r] * y;
        }
        self.answers += 1;
        self.last = Some(now);
        self.coef = self.solve();
    }

    /// The fit can be used at `now`: `MIN_ANSWERS` answers came in, the last within `STALE`.
    pub fn usable(&self, now: Instant) -> bool {
        self.answers >= MIN_ANSWERS && !self.stale(now)
    }

    /// `MIN_ANSWERS` answers came in, but none within `STALE`: the model should be measured
    /// again (by one call, `probed`).
    pub fn stale(&self, now: Instant) -> bool {
        self.answers >= MIN_ANSWERS && self.last.is_none_or(|t| now.saturating_duration_since(t) >= STALE)
    }

    /// One call was let through to measure a stale model: the fit counts as fresh for another
    /// `STALE` (its answer, or its cut, updates it), so the next ones are judged by it.
    pub fn probed(&mut self, now: Instant) {
        self.last = Some(now);
    }

    /// The fit's seconds for a call, once `MIN_ANSWERS` answers came in.
    fn point(&self, input_tokens: f64, output_tokens: f64) -> Option<f64> {
        (self.answers >= MIN_ANSWERS).then(|| seconds(self.coef, input_tokens, output_tokens))
    }

    /// What a decision needs of the fit, once `MIN_ANSWERS` answers came in: a copy of its
    /// coefficients and ratio scale (not of its sums and ratio ring).
    pub fn predictor(&self) -> Option<LatencyPredictor> {
        (self.answers >= MIN_ANSWERS).then_some(LatencyPredictor { coef: self.coef, scale: self.scale })
    }

    /// The 90th-percentile answer time of a call with this prompt and planned output, once
    /// `MIN_ANSWERS` answers came in (`LatencyPredictor::predict`).
    pub fn predict(&self, input_tokens: f64, planned_output: f64) -> Option<Duration> {
        self.predictor()?.predict(input_tokens, planned_output)
    }

    /// The least-squares coefficients with every one ≥ 0: the full model if its solution is,
    /// else the best of the smaller ones (a term that would come out negative is dropped).
    fn solve(&self) -> [f64; 3] {
        let mut best: Option<([f64; 3], f64)> = None;
        for keep in [[true, true, true], [true, false, true], [true, true, false], [true, false, false]] {
            let Some(coef) = self.solve_subset(keep) else { continue };
            if coef.iter().any(|&c| c < 0.0) {
                continue;
            }
            let sse = self.residual(&coef);
            if best.as_ref().is_none_or(|(_, b)| sse < *b - 1e-15) {
                best = Some((coef, sse));
            }
        }
        best.map_or([0.0; 3], |(c, _)| c)
    }

    /// Weighted residual sum of squares up to a constant (Σ w·y² is left out): cᵀ·XX·c − 2·cᵀ·XY.
    fn residual(&self, c: &[f64; 3]) -> f64 {
        let mut q = 0.0;
        for r in 0..3 {
            for k in 0..3 {
                q += c[r] * self.xx[r][k] * c[k];
            }
            q -= 2.0 * c[r] * self.xy[r];
        }
        q
    }

    /// Solves the normal equations over the kept terms (Gaussian elimination with pivoting);
    /// the dropped ones are 0.
    fn solve_subset(&self, keep: [bool; 3]) -> Option<[f64; 3]> {
        let idx: Vec<usize> = (0..3).filter(|&i| keep[i]).collect();
        let n = idx.len();
        let mut a = vec![vec![0.0; n + 1]; n];
        for (r, &i) in idx.iter().enumerate() {
            for (c, &j) in idx.iter().enumerate() {
                a[r][c] = self.xx[i][j] + if i == j && i > 0 { RIDGE } else { 0.0 };
            }
            a[r][n] = self.xy[i];
        }
        for col in 0..n {
            let piv = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
            if a[piv][col].abs() < 1e-12 {
                return None;
            }
            a.swap(col, piv);
            let pivot = a[col].clone();
            for (r, row) in a.iter_mut().enumerate() {
                if r != col {
                    let f = row[col] / pivot[col];
                    for (x, p) in row[col..].iter_mut().zip(&pivot[col..]) {
                        *x -= f * p;
                    }
                }
            }
        }
        let mut out = [0.0; 3];
        for (r, &i) in idx.iter().enumerate() {
            out[i] = a[r][n] / a[r][r];
        }
        out.iter().all(|v| v.is_finite()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn learns_a_linear_latency_after_enough_answers() {
        let mut f = LatencyFit::default();
        // 0.2 s + 1 ms per input token + 20 ms per output token.
        let truth = |i: f64, o: f64| 0.2 + 0.001 * i + 0.02 * o;
        for k in 0..40 {
            let (i, o) = (100.0 + 37.0 * (k % 7) as f64, 10.0 + 13.0 * (k % 5) as f64);
            if k < MIN_ANSWERS as usize {
                assert_eq!(f.predict(i, o), None, "answer {k}: too few to predict");
            }
            f.observe(i, o, o, secs(truth(i, o)));
        }
        let p = f.predict(500.0, 200.0).unwrap().as_secs_f64();
        assert!((p - truth(500.0, 200.0)).abs() < 0.01, "{p}");
    }

    #[test]
    fn a_fit_without_new_answers_goes_stale() {
        let mut f = LatencyFit::default();
        let t0 = Instant::now();
        for k in 0..MIN_ANSWERS {
            assert!(!f.usable(t0), "answer {k}");
            f.observe_at(100.0, 10.0, 10.0, secs(3.0), t0);
        }
        assert!(f.usable(t0));
        assert!(f.usable(t0 + STALE - Duration::from_secs(1)));
        assert!(!f.usable(t0 + STALE), "no answer for STALE: measure the model again");
        assert!(f.stale(t0 + STALE));
        f.probed(t0 + STALE);
        assert!(f.usable(t0 + STALE) && !f.stale(t0 + STALE), "one call measures it; the rest go by the fit");
        f.observe_at(100.0, 10.0, 10.0, secs(3.0), t0 + STALE);
        assert!(f.usable(t0 + STALE));
    }

    #[test]
    fn a_call_cut_by_its_deadline_refreshes_the_fit() {
        let mut f = LatencyFit::default();
        let t0 = Instant::now();
        for _ in 0..MIN_ANSWERS {
            f.observe_at(100.0, 50.0, 50.0, secs(6.0), t0);
        }
        let later = t0 + STALE + Duration::from_secs(5);
        assert!(!f.usable(later));
        f.observe_cut(100.0, 50.0, secs(5.0)); // at the real clock: now
        assert!(f.usable(Instant::now()), "fresh again: passed over for another STALE");
        assert!(f.predict(100.0, 50.0).unwrap() >= secs(5.0));
    }

    #[test]
    fn coefficients_stay_non_negative() {
        let mut f = LatencyFit::default();
        // Longer prompts came back a little faster (noise): no negative prefill cost.
        for k in 0..30 {
            let i = 100.0 + 50.0 * (k % 6) as f64;
            f.observe(i, 50.0, 50.0, secs(2.0 - 0.0001 * i));
        }
        assert!(f.coef.iter().all(|&c| c >= 0.0), "{:?}", f.coef);
        let short = f.predict(10.0, 50.0).unwrap();
        let long = f.predict(5000.0, 50.0).unwrap();
        assert!(long >= short);
        assert!((short.as_secs_f64() - 1.98).abs() < 0.05, "{short:?}");
    }

    /// Two calls share a 1-thread server half the time (then each takes twice as long), and the
    /// planned output is twice the real one: the fit alone is right on average, so about half
    /// the calls would run past a prediction of it; the ratio quantile lifts the prediction to
    /// what 90 % of calls stay within.
    #[test]
    fn the_prediction_covers_nine_in_ten_answers() {
        let mut f = LatencyFit::default();
        let took = |k: usize, o: f64| secs((0.5 + 0.01 * o) * if k.is_multiple_of(2) { 1.0 } else { 2.0 });
        for k in 0..200 {
            let o = 20.0 + (k % 9) as f64 * 10.0;
            f.observe(300.0, o, 2.0 * o, took(k, o));
        }
        let mut within = 0;
        for k in 0..100 {
            let o = 20.0 + (k % 9) as f64 * 10.0;
            let p = f.predict(300.0, 2.0 * o).unwrap();
            within += usize::from(took(k, o) <= p);
        }
        assert!(within >= 85, "{within} of 100 within the prediction");
        // And not wildly above: the slow half stays within ~1.3× of it.
        let p = f.predict(300.0, 2.0 * 60.0).unwrap().as_secs_f64();
        assert!(p < 1.3 * took(1, 60.0).as_secs_f64(), "{p}");
    }

    #[test]
    fn recent_answers_outweigh_old_ones() {
        let mut f = LatencyFit::default();
        for _ in 0..50 {
            f.observe(200.0, 100.0, 100.0, secs(0.5));
        }
        // The backend slowed down tenfold (a restart onto a slower host, a noisy neighbour).
        for _ in 0..100 {
            f.observe(200.0, 100.0, 100.0, secs(5.0));
        }
        let p = f.predict(200.0, 100.0).unwrap().as_secs_f64();
        assert!(p > 4.5, "{p}");
    }
}

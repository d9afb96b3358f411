//! Request ids and what the router keeps of each answered query for later feedback: its tenant,
//! a hash of its prompt, its task, the model that answered and the μ, σ predicted for it, and its
//! heaviest retrieval features. Kept for `feedback.retention_s`, at most `feedback.max_requests`
//! (the oldest go first; about 0.5 KB each); never the answer, and the prompt's text only with
//! `feedback.log_prompts` (so the feedback log can train the estimator).

use crate::config::FeedbackSection;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A fresh request id: 128 random bits, hex.
pub fn new_request_id() -> String {
    format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>())
}

/// The prompt's identity without its text (FNV-1a, 64 bits).
pub fn prompt_hash(prompt: &str) -> u64 {
    estimator::features::fnv1a(0, prompt.as_bytes())
}

/// A request id as the log keys it (ids are 32 hex digits; anything else names nothing kept).
fn key(id: &str) -> Option<u128> {
    (id.len() == 32).then(|| u128::from_str_radix(id, 16).ok()).flatten()
}

/// One answered query, as feedback needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    pub tenant: String,
    pub prompt_hash: u64,
    /// The prompt's text: only with `feedback.log_prompts`.
    pub prompt: Option<String>,
    pub task: Option<String>,
    pub model: String,
    pub mu: f64,
    pub sigma: f64,
    pub dispatched: bool,
    /// The query's retrieval features (its heaviest TF-IDF terms; no text), for the online index.
    pub features: estimator::features::SparseVec,
    /// The trained estimator's μ for the model, before feedback moved it.
    pub base_mu: f64,
    /// The model ran on a day-0 prior (no records of its own): feedback moves it faster.
    pub prior: bool,
}

/// What a feedback call finds under a request id.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Unknown, expired, or another tenant's.
    Missing,
    /// Already scored once.
    Scored,
    /// Now marked scored.
    Claimed(Answered),
}

struct Kept {
    at: Instant,
    answered: Answered,
    scored: bool,
}

#[derive(Default)]
struct Inner {
    /// A B-tree, not a hash map: the log churns (one insert and one eviction per call once full)
    /// and a hash map's deletion tombstones then force a rehash of all ~50k entries every ~60k
    /// calls, under this lock — a 15–80 ms stall of every call (the p99 of the first minute at
    /// 10k calls/s was 40–90 ms). The tree costs ~0.6 µs per insert + evict, never a stall.
    by_id: BTreeMap<u128, Kept>,
    /// Ids in the order they were kept (with when), oldest first.
    order: VecDeque<(Instant, u128)>,
}

/// The bounded, expiring log of answered queries, by request id.
#[derive(Default)]
pub struct RequestLog {
    inner: Mutex<Inner>,
}

impl RequestLog {
    /// Keeps `a` under `id` (replacing an entry of the same id); drops what expired and, past
    /// `max_requests`, the oldest.
    pub fn record(&self, id: &str, a: Answered, cfg: &FeedbackSection, now: Instant) {
        let Some(k) = key(id) else { return };
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.by_id.insert(k, Kept { at: now, answered: a, scored: false });
        g.order.push_back((now, k));
        let keep = cfg.retention();
        while let Some(&(at, old)) = g.order.front() {
            let expired = now.saturating_duration_since(at) > keep;
            if !expired && g.by_id.len() <= cfg.max_requests {
                break;
            }
            g.order.pop_front();
            // An id recorded again later has a newer entry: only its own time removes it.
            if g.by_id.get(&old).is_some_and(|k| k.at == at) {
                g.by_id.remove(&old);
            }
        }
        metrics::gauge!(crate::metrics::names::REQUESTS_KEPT).set(g.by_id.len() as f64);
    }

    /// The answered query `id` names, unless unknown or older than the retention.
    pub fn get(&self, id: &str, retention: Duration, now: Instant) -> Option<Answered> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(id)?;
        g.by_id.get(&k).filter(|k| now.saturating_duration_since(k.at) <= retention).map(|k| k.answered.clone())
    }

    /// Marks `id` scored for `tenant` (once): what it answered, or why not.
    pub fn claim(&self, id: &str, tenant: &str, retention: Duration, now: Instant) -> Claim {
        let Some(id) = key(id) else { return Claim::Missing };
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match g.by_id.get_mut(&id) {
            Some(k) if now.saturating_duration_since(k.at) <= retention && k.answered.tenant == tenant => {
                if k.scored {
                    Claim::Scored
                } else {
                    k.scored = true;
                    Claim::Claimed(k.answered.clone())
                }
            }
            _ => Claim::Missing,
        }
    }

    /// Takes a claim back (its feedback could not be recorded).
    pub fn unclaim(&self, id: &str) {
        let Some(id) = key(id) else { return };
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = g.by_id.get_mut(&id) {
            k.scored = false;
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 32-hex-digit id from a short name.
    fn id(name: &str) -> String {
        format!("{:032x}", prompt_hash(name))
    }

    fn answered(model: &str) -> Answered {
        Answered {
            tenant: "t".into(),
            prompt_hash: prompt_hash("p"),
            prompt: None,
            task: None,
            model: model.into(),
            mu: 0.5,
            sigma: 0.1,
            dispatched: true,
            features: vec![(1, 1.0)],
            base_mu: 0.5,
            prior: false,
        }
    }

    #[test]
    fn entries_expire_and_the_oldest_go_past_the_bound() {
        let cfg = FeedbackSection { retention_s: 10, max_requests: 3, ..Default::default() };
        let log = RequestLog::default();
        let t0 = Instant::now();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            log.record(&id(name), answered(name), &cfg, t0 + Duration::from_secs(i as u64));
        }
        assert_eq!(log.len(), 3);
        assert_eq!(log.get(&id("a"), cfg.retention(), t0 + Duration::from_secs(3)).unwrap().model, "a");
        // A fourth: the oldest goes.
        log.record(&id("d"), answered("d"), &cfg, t0 + Duration::from_secs(3));
        assert_eq!(log.len(), 3);
        assert!(log.get(&id("a"), cfg.retention(), t0 + Duration::from_secs(3)).is_none());
        // Past the retention: unknown even before a record sweeps it.
        assert!(log.get(&id("b"), cfg.retention(), t0 + Duration::from_secs(12)).is_none());
        assert!(log.get(&id("d"), cfg.retention(), t0 + Duration::from_secs(12)).is_some());
        // A record sweeps what expired.
        log.record(&id("e"), answered("e"), &cfg, t0 + Duration::from_secs(13));
        assert_eq!(log.len(), 2, "b and c expired; d and e kept");
    }

    #[test]
    fn an_id_recorded_again_keeps_its_newest_entry() {
        let cfg = FeedbackSection { retention_s: 10, max_requests: 2, ..Default::default() };
        let log = RequestLog::default();
        let t0 = Instant::now();
        log.record(&id("a"), answered("first"), &cfg, t0);
        log.record(&id("a"), answered("second"), &cfg, t0 + Duration::from_secs(1));
        log.record(&id("b"), answered("b"), &cfg, t0 + Duration::from_secs(2));
        assert_eq!(log.get(&id("a"), cfg.retention(), t0 + Duration::from_secs(2)).unwrap().model, "second");
        assert_eq!(log.len(), 2);
    }

    #[test]
    fn a_request_is_claimed_once_by_its_own_tenant() {
        let cfg = FeedbackSection::default();
        let log = RequestLog::default();
        let t0 = Instant::now();
        log.record(&id("a"), answered("m"), &cfg, t0);
        let keep = cfg.retention();
        assert_eq!(log.claim(&id("a"), "other", keep, t0), Claim::Missing, "another tenant's id is not found");
        assert_eq!(log.claim(&id("zz"), "t", keep, t0), Claim::Missing);
        assert_eq!(log.claim(&id("a"), "t", keep, t0), Claim::Claimed(answered("m")));
        assert_eq!(log.claim(&id("a"), "t", keep, t0), Claim::Scored);
        log.unclaim(&id("a"));
        assert!(matches!(log.claim(&id("a"), "t", keep, t0), Claim::Claimed(_)));
        assert_eq!(log.claim(&id("a"), "t", keep, t0 + keep + Duration::from_secs(1)), Claim::Missing, "expired");
    }

    #[test]
    fn ids_are_unique_hex_and_hashes_hide_the_prompt() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit())));
        assert_eq!(prompt_hash("hello"), prompt_hash("hello"));
        assert_eq!((prompt_hash(""), prompt_hash("a")), (0xcbf2_9ce4_8422_2325, 0xaf63_dc4c_8601_ec8c), "FNV-1a");
        assert_ne!(prompt_hash("hello"), prompt_hash("hello!"));
        assert_eq!(key("not an id"), None);
        let log = RequestLog::default();
        log.record("short", answered("m"), &FeedbackSection::default(), Instant::now());
        assert!(log.is_empty(), "an id that is not one is not kept");
    }
}

//! Per-backend circuit breaker: `failures` consecutive failures open it (no query is sent); after
//! `open_for` a prober checks the server's health and, when it answers, half-opens the breaker;
//! the next success closes it, a failure opens it again.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }

    /// Gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            Circuit::Closed => 0.0,
            Circuit::Open => 1.0,
            Circuit::HalfOpen => 2.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Breaker {
    state: Circuit,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { state: Circuit::Closed, consecutive_failures: 0, opened_at: None }
    }
}

impl Breaker {
    pub fn state(&self) -> Circuit {
        self.state
    }

    /// May queries be sent to this backend?
    pub fn allows(&self) -> bool {
        self.state != Circuit::Open
    }

    pub fn on_success(&mut self) {
        self.state = Circuit::Closed;
        self.consecutive_failures = 0;
        self.opened_at = None;
    }

    /// Returns true when this failure opened the breaker.
    pub fn on_failure(&mut self, threshold: u32, now: Instant) -> bool {
        self.consecutive_failures += 1;
        let open = self.state == Circuit::HalfOpen || self.consecutive_failures >= threshold;
        if open && self.state != Circuit::Open {
            self.state = Circuit::Open;
            self.opened_at = Some(now);
            return true;
        }
        if open {
            self.opened_at = Some(now);
        }
        false
    }

    /// Is it time to probe an open breaker?
    pub fn due_for_probe(&self, open_for: Duration, now: Instant) -> bool {
        self.state == Circuit::Open && self.opened_at.is_some_and(|t| now.duration_since(t) >= open_for)
    }

    /// A health probe answered: let one query through.
    pub fn on_probe_ok(&mut self) {
        if self.state == Circuit::Open {
            self.state = Circuit::HalfOpen;
        }
    }

    /// A health probe failed: stay open for another period.
    pub fn on_probe_failed(&mut self, now: Instant) {
        if self.state == Circuit::Open {
            self.opened_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_and_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        assert!(!b.on_failure(3, t0));
        assert!(!b.on_failure(3, t0));
        assert!(b.allows());
        assert!(b.on_failure(3, t0));
        assert!(!b.allows());
        assert!(!b.due_for_probe(Duration::from_secs(1), t0));
        let later = t0 + Duration::from_secs(2);
        assert!(b.due_for_probe(Duration::from_secs(1), later));
        b.on_probe_ok();
        assert_eq!(b.state(), Circuit::HalfOpen);
        assert!(b.allows());
        // A half-open failure reopens at once.
        assert!(b.on_failure(3, later));
        assert_eq!(b.state(), Circuit::Open);
        b.on_probe_ok();
        b.on_success();
        assert_eq!(b.state(), Circuit::Closed);
        assert!(!b.on_failure(3, later));
    }
}

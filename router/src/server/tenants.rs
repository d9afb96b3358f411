//! Per-tenant rolling budgets (reserve, then settle): a call is admitted while the tenant's spend
//! in the last `window` plus what it has reserved in flight is below its budget.

use crate::{Result, RouterError};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Spend {
    /// (when, realized USD) of settled calls inside the window.
    settled: VecDeque<(Instant, f64)>,
    settled_sum: f64,
    reserved: f64,
}

impl Spend {
    fn expire(&mut self, window: Duration, now: Instant) {
        while let Some(&(t, c)) = self.settled.front() {
            if now.duration_since(t) <= window {
                break;
            }
            self.settled.pop_front();
            self.settled_sum -= c;
        }
        if self.settled.is_empty() {
            self.settled_sum = 0.0;
        }
    }
}

#[derive(Default)]
pub struct TenantBook {
    spend: Mutex<HashMap<String, Spend>>,
}

impl TenantBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Spend>> {
        self.spend.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Errors when the tenant has no budget left in its window.
    pub fn check(&self, tenant: &str, budget: f64, window: Duration) -> Result<()> {
        let mut book = self.lock();
        let s = book.entry(tenant.to_string()).or_default();
        s.expire(window, Instant::now());
        let used = s.settled_sum + s.reserved;
        if used >= budget {
            return Err(RouterError::TenantOverBudget {
                tenant: tenant.to_string(),
                spent: used,
                budget,
                window_s: window.as_secs(),
            });
        }
        Ok(())
    }

    /// Reserves `amount` (a call's predicted cost) for a dispatched call.
    pub fn reserve(&self, tenant: &str, amount: f64) {
        self.lock().entry(tenant.to_string()).or_default().reserved += amount;
    }

    /// Replaces a reservation by the realized cost (0 when the call failed).
    pub fn settle(&self, tenant: &str, reserved: f64, realized: f64) {
        let mut book = self.lock();
        let s = book.entry(tenant.to_string()).or_default();
        s.reserved = (s.reserved - reserved).max(0.0);
        if realized > 0.0 {
            s.settled.push_back((Instant::now(), realized));
            s.settled_sum += realized;
        }
    }

    /// (settled in window, reserved) for the metrics.
    pub fn usage(&self, tenant: &str, window: Duration) -> (f64, f64) {
        let mut book = self.lock();
        let s = book.entry(tenant.to_string()).or_default();
        s.expire(window, Instant::now());
        (s.settled_sum, s.reserved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_is_refused_until_the_window_passes() {
        let book = TenantBook::default();
        let w = Duration::from_millis(50);
        book.check("a", 1.0, w).unwrap();
        book.reserve("a", 0.6);
        book.check("a", 1.0, w).unwrap();
        book.reserve("a", 0.6);
        let e = book.check("a", 1.0, w).unwrap_err();
        assert!(e.to_string().contains("tenant `a` is over budget"), "{e}");
        book.settle("a", 0.6, 0.5);
        book.settle("a", 0.6, 0.0);
        book.check("a", 1.0, w).unwrap();
        book.reserve("a", 0.0);
        book.settle("a", 0.0, 0.6);
        assert!(book.check("a", 1.0, w).is_err());
        std::thread::sleep(Duration::from_millis(80));
        book.check("a", 1.0, w).unwrap();
        assert_eq!(book.usage("a", w), (0.0, 0.0));
    }
}

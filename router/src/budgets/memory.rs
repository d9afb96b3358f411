//! Per-tenant rolling budgets in this process (the default store, and a replica's local slice
//! while a shared store is unreachable): a reservation is admitted only when the tenant's settled
//! spend in the last `window`, plus what is reserved in flight, plus the new amount stays within
//! the budget — checked and recorded under one lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Settled spend is kept in slots of this width: at most one entry per slot in the window
/// (before, one per call: a soak at 800 calls/s grew the router by ~6 MB a minute for the
/// window's hour).
const SLOT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Spend {
    /// (slot start, last settle in it, realized USD) of the settled calls inside the window; a
    /// slot leaves the window when its last settle does (spend is never dropped early).
    settled: VecDeque<(Instant, Instant, f64)>,
    settled_sum: f64,
    reserved: f64,
}

impl Spend {
    fn expire(&mut self, window: Duration, now: Instant) {
        while let Some(&(_, t, c)) = self.settled.front() {
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

/// What a refused reservation saw: (settled in window + reserved, budget).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refused {
    pub used: f64,
    pub budget: f64,
}

#[derive(Default)]
pub struct MemoryBook {
    spend: Mutex<HashMap<String, Spend>>,
}

impl MemoryBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Spend>> {
        self.spend.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `amount` for the tenant if it fits its budget (atomically).
    pub fn reserve(&self, tenant: &str, amount: f64, budget: f64, window: Duration) -> Result<(), Refused> {
        let mut book = self.lock();
        let s = book.entry(tenant.to_string()).or_default();
        s.expire(window, Instant::now());
        let used = s.settled_sum + s.reserved;
        if used + amount > budget + 1e-12 {
            return Err(Refused { used, budget });
        }
        s.reserved += amount;
        Ok(())
    }

    /// Replaces a reservation by the realized cost (0 when the call failed or never ran).
    pub fn settle(&self, tenant: &str, reserved: f64, realized: f64) {
        let mut book = self.lock();
        let s = book.entry(tenant.to_string()).or_default();
        s.reserved = (s.reserved - reserved).max(0.0);
        if realized > 0.0 {
            let now = Instant::now();
            match s.settled.back_mut() {
                Some((start, last, c)) if now.duration_since(*start) < SLOT => {
                    *last = now;
                    *c += realized;
                }
                _ => s.settled.push_back((now, now, realized)),
            }
            s.settled_sum += realized;
        }
    }

    /// (settled in window, reserved).
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
    fn reservations_fit_the_budget_until_the_window_passes() {
        let book = MemoryBook::default();
        let w = Duration::from_millis(50);
        book.reserve("a", 0.4, 1.0, w).unwrap();
        book.reserve("a", 0.4, 1.0, w).unwrap();
        let r = book.reserve("a", 0.4, 1.0, w).unwrap_err();
        assert!((r.used - 0.8).abs() < 1e-12 && r.budget == 1.0);
        book.settle("a", 0.4, 0.3);
        book.settle("a", 0.4, 0.0);
        book.reserve("a", 0.7, 1.0, w).unwrap();
        book.settle("a", 0.7, 0.6);
        assert!(book.reserve("a", 0.2, 1.0, w).is_err());
        std::thread::sleep(Duration::from_millis(80));
        book.reserve("a", 1.0, 1.0, w).unwrap();
        book.settle("a", 1.0, 0.0);
        assert_eq!(book.usage("a", w), (0.0, 0.0));
    }

    /// Many settles within a slot take one entry, and the slot's spend stays until its last
    /// settle leaves the window.
    #[test]
    fn settled_spend_is_kept_per_slot() {
        let book = MemoryBook::default();
        let w = Duration::from_millis(60);
        for _ in 0..1000 {
            book.settle("a", 0.0, 0.001);
        }
        assert_eq!(book.lock()["a"].settled.len(), 1);
        std::thread::sleep(Duration::from_millis(40));
        book.settle("a", 0.0, 0.001);
        std::thread::sleep(Duration::from_millis(40));
        // 80 ms after the first settles, 40 ms after the last: all of it still counts.
        let (settled, _) = book.usage("a", w);
        assert!((settled - 1.001).abs() < 1e-9, "{settled}");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(book.usage("a", w), (0.0, 0.0));
    }
}

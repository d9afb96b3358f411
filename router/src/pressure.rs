//! Queue-aware shedding: the router knows how many dispatched calls it holds and how fast calls
//! leave it (completions over the last second), so it can tell at admission how long a new call
//! would wait (Little's law: calls held / completion rate). A call whose deadline comes before
//! that is refused at once (RESOURCE_EXHAUSTED, retryable) instead of queueing until it times out.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Completions are counted in 10 buckets of 100 ms.
const BUCKET: Duration = Duration::from_millis(100);
const BUCKETS: usize = 10;
/// Below this many completions in the window the rate is not trusted (no shedding on it).
const MIN_COMPLETIONS: u32 = 10;

struct Window {
    counts: [u32; BUCKETS],
    /// Start of the bucket `cur`.
    start: Instant,
    cur: usize,
}

impl Window {
    /// Moves the window to `now`, clearing buckets it passed.
    fn advance(&mut self, now: Instant) {
        let mut steps = 0;
        while now.duration_since(self.start) >= BUCKET && steps <= BUCKETS {
            self.start += BUCKET;
            self.cur = (self.cur + 1) % BUCKETS;
            self.counts[self.cur] = 0;
            steps += 1;
        }
        if now.duration_since(self.start) >= BUCKET {
            // Idle for longer than the window: start afresh.
            self.start = now;
        }
    }
}

pub struct Pressure {
    held: AtomicUsize,
    window: Mutex<Window>,
}

impl Default for Pressure {
    fn default() -> Self {
        Pressure {
            held: AtomicUsize::new(0),
            window: Mutex::new(Window { counts: [0; BUCKETS], start: Instant::now(), cur: 0 }),
        }
    }
}

/// A dispatched call inside the router; it leaves (and counts as a completion) when dropped.
pub struct Held(Arc<Pressure>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
        let mut w = self.0.window.lock().unwrap_or_else(|p| p.into_inner());
        w.advance(Instant::now());
        let cur = w.cur;
        w.counts[cur] += 1;
    }
}

impl Pressure {
    pub fn enter(self: &Arc<Self>) -> Held {
        self.held.fetch_add(1, Ordering::Relaxed);
        Held(self.clone())
    }

    /// How long a call arriving now would wait to leave the router: (calls held + 1) / the
    /// completion rate of the last second; None while that rate rests on too few completions.
    pub fn expected_wait(&self) -> Option<Duration> {
        let done: u32 = {
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            w.advance(Instant::now());
            w.counts.iter().sum()
        };
        if done < MIN_COMPLETIONS {
            return None;
        }
        let rate = done as f64 / (BUCKET.as_secs_f64() * BUCKETS as f64);
        Some(Duration::from_secs_f64((self.held.load(Ordering::Relaxed) + 1) as f64 / rate))
    }
}

/// How far behind the runtime runs: a probe task asks to wake every `PROBE` and records how late
/// it woke. The signal is the lateness averaged over the last probes (an exponential average,
/// weight 0.2 on the newest): one slow poll elsewhere barely moves it, a saturated CPU — every
/// task, the probe included, waiting its turn — brings it to the lag within ~10 probes.
pub struct LoopLag {
    micros: AtomicU64,
}

const PROBE: Duration = Duration::from_millis(2);

impl LoopLag {
    /// Starts the probe on the current runtime.
    pub fn start() -> Arc<LoopLag> {
        let lag = Arc::new(LoopLag { micros: AtomicU64::new(0) });
        let l = lag.clone();
        tokio::spawn(async move {
            loop {
                let t = tokio::time::Instant::now();
                tokio::time::sleep(PROBE).await;
                // Timers fire on whole milliseconds: up to 1 ms late is the timer, not the CPU.
                let late = t.elapsed().saturating_sub(PROBE + Duration::from_millis(1));
                l.observe(late);
            }
        });
        lag
    }

    fn observe(&self, late: Duration) {
        let prev = self.micros.load(Ordering::Relaxed);
        let now = (prev * 4 + late.as_micros() as u64) / 5;
        self.micros.store(now, Ordering::Relaxed);
    }

    /// A signal fixed at `lag` (no probe), for tests.
    #[cfg(test)]
    pub fn fixed(lag: Duration) -> Arc<LoopLag> {
        Arc::new(LoopLag { micros: AtomicU64::new(lag.as_micros() as u64) })
    }

    pub fn current(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_calls_held_over_the_completion_rate() {
        let p = Arc::new(Pressure::default());
        assert_eq!(p.expected_wait(), None, "no completions yet");
        // 20 calls leave within the window: 20 per second.
        for _ in 0..20 {
            drop(p.enter());
        }
        let held: Vec<Held> = (0..39).map(|_| p.enter()).collect();
        let w = p.expected_wait().unwrap();
        assert!((w.as_secs_f64() - 2.0).abs() < 1e-9, "{w:?}"); // (39 + 1) / 20
        drop(held);
    }

    #[test]
    fn loop_lag_averages_the_recent_lateness() {
        let l = LoopLag { micros: AtomicU64::new(0) };
        l.observe(Duration::from_millis(40));
        assert_eq!(l.current(), Duration::from_millis(8), "one late probe: a fifth of it");
        for _ in 0..10 {
            l.observe(Duration::from_millis(25));
        }
        let c = l.current();
        assert!(c > Duration::from_millis(22) && c <= Duration::from_millis(25), "sustained: {c:?}");
        for _ in 0..30 {
            l.observe(Duration::ZERO);
        }
        assert!(l.current() < Duration::from_millis(1), "{:?}", l.current());
    }

    /// A runtime kept busy by a task that never yields for 30 ms at a time lags; the probe sees it.
    #[tokio::test(flavor = "current_thread")]
    async fn the_probe_sees_a_blocked_runtime() {
        let l = LoopLag::start();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(l.current() < Duration::from_millis(15), "idle: {:?}", l.current());
        for _ in 0..12 {
            std::thread::sleep(Duration::from_millis(30)); // blocks the only worker
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        assert!(l.current() >= Duration::from_millis(10), "busy: {:?}", l.current());
    }
}

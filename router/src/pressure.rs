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
const WINDOW: Duration = BUCKET.saturating_mul(BUCKETS as u32);
/// Below this many completions in the window the rate is not trusted (no shedding on it).
const MIN_COMPLETIONS: u32 = 10;
/// At most this many completions before a pause are stragglers (see `Window::since`).
const STRAGGLERS: u32 = 2;
/// The shortest span a rate is measured over (completions that land together do not make an
/// unbounded rate).
const MIN_SPAN: Duration = Duration::from_millis(10);

struct Window {
    counts: [u32; BUCKETS],
    /// Start of the bucket `cur`.
    start: Instant,
    cur: usize,
    /// Where the span the rate is measured over starts, when that is later than the window's
    /// start: right after start-up or an idle spell the window covers less than its length, and
    /// the rate is the completions over the time since the first call of the new load arrived.
    /// (Counted over the whole window, the first 10 completions after an idle minute read as 10
    /// per second, and a router answering 600 calls/s refused calls for an expected wait of
    /// 9.7 s. Counted from the first completion, the span leaves out one service time and reads
    /// the rate high: 30 answers over 0.8 s read as 50/s, not 37.5/s.) A completion after a
    /// pause of a bucket or more that follows at most `STRAGGLERS` others starts the span again:
    /// a straggler or two (a slow backend's answers in an otherwise idle gap, which keep the
    /// router from ever being idle) do not stretch the span of the load that follows. (Not more:
    /// completions in bursts — a few slots, 200 ms an answer — would restart it at every burst.)
    since: Option<Instant>,
    /// When the last completion came.
    last: Option<Instant>,
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
        // An empty window whose span began more than a window ago (no call came, or none
        // completed since): the next arrival or completion starts it again.
        if self.counts.iter().all(|&c| c == 0) && self.since.is_some_and(|s| now.saturating_duration_since(s) >= WINDOW)
        {
            self.since = None;
        }
    }

    /// A call arrives while none is held: if the window is empty, the span starts here.
    fn arrive(&mut self, now: Instant) {
        self.advance(now);
        if self.since.is_none() {
            self.since = Some(now);
        }
    }

    fn record(&mut self, now: Instant) {
        self.advance(now);
        let done: u32 = self.counts.iter().sum();
        let paused = self.last.is_none_or(|l| now.saturating_duration_since(l) >= BUCKET);
        if self.since.is_none() || ((1..=STRAGGLERS).contains(&done) && paused) {
            self.since = Some(now);
        }
        self.last = Some(now);
        self.counts[self.cur] += 1;
    }

    /// Completions per second over the window (or over the shorter span from `since`); None
    /// below `MIN_COMPLETIONS`.
    fn rate(&mut self, now: Instant) -> Option<f64> {
        self.advance(now);
        let done: u32 = self.counts.iter().sum();
        if done < MIN_COMPLETIONS {
            return None;
        }
        let span = self.since.map_or(WINDOW, |s| now.duration_since(s)).clamp(MIN_SPAN, WINDOW);
        Some(done as f64 / span.as_secs_f64())
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
            window: Mutex::new(Window { counts: [0; BUCKETS], start: Instant::now(), cur: 0, since: None, last: None }),
        }
    }
}

/// A dispatched call inside the router; it leaves (and counts as a completion) when dropped.
pub struct Held(Arc<Pressure>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
        self.0.window().record(Instant::now());
    }
}

impl Pressure {
    pub fn enter(self: &Arc<Self>) -> Held {
        if self.held.fetch_add(1, Ordering::Relaxed) == 0 {
            self.window().arrive(Instant::now());
        }
        Held(self.clone())
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        // A poisoned lock only means a panic elsewhere; the counts are still valid.
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a call arriving now would wait to leave the router: (calls held + 1) / the
    /// completion rate of the last second; None while that rate rests on too few completions.
    pub fn expected_wait(&self) -> Option<Duration> {
        self.expected_wait_at(Instant::now())
    }

    fn expected_wait_at(&self, now: Instant) -> Option<Duration> {
        let rate = self.window().rate(now)?;
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

    /// `n` completions spread evenly over `over`, the first at `t0`.
    fn complete(p: &Pressure, t0: Instant, n: u32, over: Duration) {
        for k in 0..n {
            p.window().record(t0 + over * k / n);
        }
    }

    #[test]
    fn the_wait_is_calls_held_over_the_completion_rate() {
        let p = Arc::new(Pressure::default());
        assert_eq!(p.expected_wait(), None, "no completions yet");
        let t0 = Instant::now();
        // 40 calls leave over two seconds: 20 per second in the last one.
        complete(&p, t0, 40, Duration::from_secs(2));
        let held: Vec<Held> = (0..39).map(|_| p.enter()).collect();
        let w = p.expected_wait_at(t0 + Duration::from_secs(2)).unwrap();
        // (39 + 1) / 20 = 2 s, give or take the completions of one 100 ms bucket.
        assert!((w.as_secs_f64() - 2.0).abs() < 0.25, "{w:?}");
        std::mem::forget(held); // their drops would record at the real clock
    }

    /// After an idle spell the span starts when the new load's first call arrived: 10 calls
    /// leaving 155–170 ms into a load read as ~59 per second, not 10 (which made a router
    /// answering 600 calls/s refuse calls for an expected wait of 9.7 s at the start of each
    /// load run), nor ~670 (from the first completion, which leaves out the service time).
    #[test]
    fn a_ramp_after_idle_is_measured_over_its_own_span() {
        let ms = Duration::from_millis;
        let p = Pressure::default();
        let t0 = Instant::now();
        p.window().arrive(t0);
        complete(&p, t0, 30, ms(500));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.expected_wait_at(later), None, "idle: the old completions are gone");
        p.window().arrive(later);
        complete(&p, later + ms(155), 10, ms(15));
        p.held.store(96, Ordering::Relaxed);
        let w = p.expected_wait_at(later + ms(170)).unwrap().as_secs_f64();
        assert!((w - 97.0 / (10.0 / 0.17)).abs() < 0.05, "{w}");
        // A straggler 0.9 s before the load (a slow backend's answer in the gap, the router
        // never idle) does not stretch the load's span to the whole window (10 / s, 9.7 s).
        let r = Pressure::default();
        r.window().arrive(later);
        complete(&r, later, 1, Duration::ZERO);
        let load = later + ms(900);
        complete(&r, load, 9, ms(15));
        r.held.store(96, Ordering::Relaxed);
        let w = r.expected_wait_at(load + ms(15)).unwrap();
        assert!(w < ms(200), "{w:?}");
        // Bursts of 9 every 200 ms (9 slots, 200 ms an answer): the span runs from the first
        // arrival, 27 / 600 ms = 45/s, the real rate (restarted at each burst it read 27 / 0 s,
        // and admitted 74 calls for 33 answers in the in-process shedding test).
        let b = Pressure::default();
        b.window().arrive(later);
        for k in 1..=3 {
            complete(&b, later + ms(200 * k), 9, Duration::ZERO);
        }
        let w = b.expected_wait_at(later + ms(600)).unwrap();
        let rate = 1.0 / w.as_secs_f64(); // held 0: wait = 1 / rate
        assert!((rate - 45.0).abs() < 0.5, "{rate}");
        // Ten completing at one instant: the rate is taken over at least MIN_SPAN.
        let q = Pressure::default();
        complete(&q, later, 10, Duration::ZERO);
        q.held.store(9, Ordering::Relaxed);
        assert_eq!(q.expected_wait_at(later), Some(ms(10)));
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

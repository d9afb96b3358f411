//! The micro-batcher: one task collects queries into a batch that closes after `window_ms`, when
//! `max_batch` queries are in, or just before the earliest deadline in it; a closed batch goes to
//! a second task that decides and launches batches one at a time, so a slow decision (HiGHS) never
//! holds the next batch open past its close. A client's own batch (`RouteBatch`) goes to the
//! deciding task as it arrives, as one batch.

use super::decide::decide;
use super::dispatch::launch;
use super::query::Query;
use super::state::Shared;
use crate::metrics::names;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub enum Job<T = Query> {
    One(Box<T>),
    Batch(Vec<T>),
}

/// What the collector needs to know of a queued item.
pub trait Timed {
    fn deadline(&self) -> std::time::Instant;
}

impl Timed for Query {
    fn deadline(&self) -> std::time::Instant {
        self.deadline
    }
}

/// The sending side: a bounded queue; a full queue sheds load at once.
pub struct Batcher<T = Query> {
    tx: mpsc::Sender<Job<T>>,
    depth: Arc<AtomicI64>,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Batcher { tx: self.tx.clone(), depth: self.depth.clone() }
    }
}

impl Batcher<Query> {
    pub fn start(shared: Arc<Shared>, capacity: usize) -> Batcher {
        let (batcher, rx) = Batcher::channel(capacity);
        let (closed_tx, closed_rx) = mpsc::unbounded_channel();
        let limits = {
            let shared = shared.clone();
            move || {
                let live = shared.live();
                (live.config.batch.window(), live.config.batch.max_batch)
            }
        };
        tokio::spawn(collect_loop(rx, batcher.depth.clone(), limits, closed_tx));
        tokio::spawn(decide_loop(shared, closed_rx));
        batcher
    }
}

impl<T> Batcher<T> {
    fn channel(capacity: usize) -> (Batcher<T>, mpsc::Receiver<Job<T>>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Batcher { tx, depth: Arc::new(AtomicI64::new(0)) }, rx)
    }

    /// Queues a job; false when the queue is full (the caller answers RESOURCE_EXHAUSTED).
    pub fn submit(&self, job: Job<T>) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => {
                let d = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::gauge!(names::QUEUE_DEPTH).set(d as f64);
                true
            }
            Err(_) => false,
        }
    }
}

/// Deadlines leave this much time after the batch closes for the decision itself.
const DECISION_SLACK: Duration = Duration::from_micros(500);

/// A batch ready to be decided, with the moment it closed.
pub struct Closed<T> {
    pub at: Instant,
    pub items: Vec<T>,
}

/// Collects batches for ever: each starts with the next queued query and closes after the window
/// (read when it opens, so a reload applies to the next batch), at `max_batch`, or
/// `DECISION_SLACK` before its earliest deadline. Client batches pass straight through.
async fn collect_loop<T: Timed>(
    mut rx: mpsc::Receiver<Job<T>>,
    depth: Arc<AtomicI64>,
    limits: impl Fn() -> (Duration, usize),
    out: mpsc::UnboundedSender<Closed<T>>,
) {
    let took = |depth: &AtomicI64| {
        let d = depth.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!(names::QUEUE_DEPTH).set(d.max(0) as f64);
    };
    let send = |items: Vec<T>| out.send(Closed { at: Instant::now(), items }).is_ok();
    loop {
        let Some(job) = rx.recv().await else { return };
        took(&depth);
        let first = match job {
            Job::Batch(items) => {
                if !send(items) {
                    return;
                }
                continue;
            }
            Job::One(q) => *q,
        };
        let (window, max_batch) = limits();
        let mut close_at = Instant::now() + window;
        let by_deadline = |q: &T, close_at: &mut Instant| {
            let d = Instant::from_std(q.deadline()).checked_sub(DECISION_SLACK).unwrap_or_else(Instant::now);
            if d < *close_at {
                *close_at = d;
            }
        };
        by_deadline(&first, &mut close_at);
        let mut batch = vec![first];
        while batch.len() < max_batch {
            // What is queued already joins at once. The timer only runs while the window is
            // open: tokio rounds a deadline up to its next 1 ms tick and fires it when the driver
            // turns, so even a deadline that has passed (window 0) would hold the batch ~1 ms.
            let next = match rx.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if Instant::now() >= close_at {
                        break;
                    }
                    match tokio::time::timeout_at(close_at, rx.recv()).await {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
            };
            match next {
                Some(Job::One(q)) => {
                    took(&depth);
                    by_deadline(&q, &mut close_at);
                    batch.push(*q);
                }
                Some(Job::Batch(items)) => {
                    took(&depth);
                    if !send(items) {
                        return;
                    }
                }
                None => break,
            }
        }
        if !send(batch) {
            return;
        }
    }
}

/// Decides and launches closed batches in order, one at a time: each decision sees the slots
/// the previous one took.
async fn decide_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Closed<Query>>) {
    while let Some(c) = rx.recv().await {
        metrics::histogram!(names::DECISION_QUEUE_SECONDS).record(c.at.elapsed().as_secs_f64());
        if let Some(d) = decide(&shared, c.items).await {
            launch(&shared, d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item {
        id: usize,
        deadline: std::time::Instant,
    }

    impl Timed for Item {
        fn deadline(&self) -> std::time::Instant {
            self.deadline
        }
    }

    const WINDOW: Duration = Duration::from_millis(5);

    fn item(id: usize) -> Job<Item> {
        Job::One(Box::new(Item { id, deadline: std::time::Instant::now() + Duration::from_secs(30) }))
    }

    /// A collector with window 5 ms and `max_batch`; returns its queue and the closed batches.
    fn collector(max_batch: usize, capacity: usize) -> (Batcher<Item>, mpsc::UnboundedReceiver<Closed<Item>>) {
        let (b, rx) = Batcher::channel(capacity);
        let (tx, out) = mpsc::unbounded_channel();
        tokio::spawn(collect_loop(rx, b.depth.clone(), move || (WINDOW, max_batch), tx));
        (b, out)
    }

    /// Window 0: a batch is what is queued when its first query is taken, closed at once — no
    /// timer tick (tokio's 1 ms granularity held every window-0 batch about a millisecond).
    #[tokio::test(start_paused = true)]
    async fn a_zero_window_closes_at_once_with_what_is_queued() {
        let (b, rx) = Batcher::channel(16);
        let (tx, mut out) = mpsc::unbounded_channel();
        for i in 0..3 {
            assert!(b.submit(item(i)));
        }
        // Off the millisecond grid, as real time always is (tokio's timer rounds deadlines up to it).
        tokio::time::advance(Duration::from_micros(300)).await;
        let t0 = Instant::now();
        tokio::spawn(collect_loop(rx, b.depth.clone(), || (Duration::ZERO, 64), tx));
        let c = out.recv().await.unwrap();
        assert_eq!(c.at - t0, Duration::ZERO, "a zero window waited for the clock");
        assert_eq!(c.items.iter().map(|i| i.id).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(b.submit(item(3)));
        let c = out.recv().await.unwrap();
        assert_eq!(c.at - t0, Duration::ZERO);
        assert_eq!(c.items.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_when_its_window_ends() {
        let (b, mut out) = collector(64, 16);
        let t0 = Instant::now();
        assert!(b.submit(item(0)));
        tokio::time::sleep(Duration::from_millis(3)).await;
        assert!(b.submit(item(1)));
        let c = out.recv().await.unwrap();
        assert_eq!(c.at - t0, WINDOW, "closes 5 ms after its first query, not after the last");
        assert_eq!(c.items.iter().map(|i| i.id).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_closes_at_once() {
        let (b, mut out) = collector(3, 16);
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(b.submit(item(i)));
        }
        let c = out.recv().await.unwrap();
        assert_eq!((c.at - t0, c.items.len()), (Duration::ZERO, 3));
        let c = out.recv().await.unwrap();
        assert_eq!((c.at - t0, c.items.len()), (WINDOW, 1), "the fourth opens the next batch");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_before_its_earliest_deadline() {
        let (b, mut out) = collector(64, 16);
        let t0 = Instant::now();
        assert!(b.submit(item(0)));
        let soon = std::time::Instant::now() + Duration::from_millis(2);
        assert!(b.submit(Job::One(Box::new(Item { id: 1, deadline: soon }))));
        let c = out.recv().await.unwrap();
        // Timers fire on whole milliseconds: 2 ms − the slack rounds up to 2 ms, well before 5 ms.
        assert!(c.at - t0 <= Duration::from_millis(2), "{:?}", c.at - t0);
        assert_eq!(c.items.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_sheds_at_once() {
        // Nothing collects: the queue holds 2.
        let (b, _rx) = Batcher::<Item>::channel(2);
        assert!(b.submit(item(0)) && b.submit(item(1)));
        assert!(!b.submit(item(2)));
        assert_eq!(b.depth.load(Ordering::Relaxed), 2);
    }

    /// Finding 11: batches keep closing on time while nobody takes them (a slow decision): the
    /// second batch closes one window after its first query, not after the first batch's
    /// decision. Before, the collector decided each batch itself and stopped collecting meanwhile.
    #[tokio::test(start_paused = true)]
    async fn batches_close_on_time_while_a_decision_is_slow() {
        let (b, mut out) = collector(64, 16);
        let t0 = Instant::now();
        assert!(b.submit(item(0)));
        tokio::time::sleep(Duration::from_millis(6)).await;
        assert!(b.submit(item(1)));
        // The decider is busy for 200 ms before it reads anything.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let first = out.recv().await.unwrap();
        let second = out.recv().await.unwrap();
        assert_eq!(first.at - t0, WINDOW);
        assert_eq!(second.at - t0, Duration::from_millis(6) + WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_batch_passes_through_without_waiting() {
        let (b, mut out) = collector(64, 16);
        let t0 = Instant::now();
        assert!(b.submit(item(0)));
        let now = std::time::Instant::now() + Duration::from_secs(30);
        assert!(b.submit(Job::Batch(vec![Item { id: 7, deadline: now }, Item { id: 8, deadline: now }])));
        let c = out.recv().await.unwrap();
        assert_eq!((c.at - t0, c.items.len()), (Duration::ZERO, 2), "the client's batch goes first, at once");
        let c = out.recv().await.unwrap();
        assert_eq!(c.at - t0, WINDOW);
    }
}

//! The micro-batcher: one task collects queries into a batch that closes after `window_ms`, when
//! `max_batch` queries are in, or just before the earliest deadline in it; then it is decided and
//! launched. A client's own batch (`RouteBatch`) is decided as it arrives, as one batch.

use super::decide::decide;
use super::dispatch::launch;
use super::query::Query;
use super::state::Shared;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub enum Job {
    One(Box<Query>),
    Batch(Vec<Query>),
}

/// The sending side: a bounded queue; a full queue sheds load at once.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    depth: Arc<AtomicI64>,
}

impl Batcher {
    pub fn start(shared: Arc<Shared>, capacity: usize) -> Batcher {
        let (tx, rx) = mpsc::channel(capacity);
        let depth = Arc::new(AtomicI64::new(0));
        tokio::spawn(run(shared, rx, depth.clone()));
        Batcher { tx, depth }
    }

    /// Queues a job; false when the queue is full (the caller answers RESOURCE_EXHAUSTED).
    pub fn submit(&self, job: Job) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => {
                let d = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::gauge!("llmroute_queue_depth").set(d as f64);
                true
            }
            Err(_) => false,
        }
    }
}

/// Deadlines leave this much time after the batch closes for the decision itself.
const DECISION_SLACK: Duration = Duration::from_micros(500);

async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>, depth: Arc<AtomicI64>) {
    let took = |depth: &AtomicI64| {
        let d = depth.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("llmroute_queue_depth").set(d.max(0) as f64);
    };
    loop {
        let Some(job) = rx.recv().await else { return };
        took(&depth);
        let first = match job {
            Job::Batch(qs) => {
                run_batch(&shared, qs).await;
                continue;
            }
            Job::One(q) => *q,
        };
        let (window, max_batch) = {
            let live = shared.live();
            (live.config.window, live.config.max_batch)
        };
        let mut close_at = Instant::now() + window;
        let by_deadline = |q: &Query, close_at: &mut Instant| {
            let d = Instant::from_std(q.deadline).checked_sub(DECISION_SLACK).unwrap_or_else(Instant::now);
            if d < *close_at {
                *close_at = d;
            }
        };
        by_deadline(&first, &mut close_at);
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match tokio::time::timeout_at(close_at, rx.recv()).await {
                Ok(Some(Job::One(q))) => {
                    took(&depth);
                    by_deadline(&q, &mut close_at);
                    batch.push(*q);
                }
                Ok(Some(Job::Batch(qs))) => {
                    took(&depth);
                    run_batch(&shared, qs).await;
                }
                Ok(None) | Err(_) => break,
            }
        }
        run_batch(&shared, batch).await;
    }
}

async fn run_batch(shared: &Arc<Shared>, queries: Vec<Query>) {
    if let Some(d) = decide(shared, queries).await {
        launch(shared, d);
    }
}

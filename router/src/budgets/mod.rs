//! Tenants' rolling budgets: reserve an upper bound of a call's cost when it is admitted, settle
//! the realized cost when it ends (a reservation dropped without settling is released). The store
//! is this process (`memory`, the default) or Redis shared by every replica (`redis`).
//!
//! With Redis, settles go through an outbox: a settle that cannot reach Redis is retried until it
//! lands, and each carries the reservation's id so a retry of one that did land is not charged
//! twice. When Redis cannot be reached for a reservation, `on_unreachable` decides: `fail_closed`
//! refuses the call (UNAVAILABLE, safe to retry); `fail_open` admits it against a local slice of
//! the tenant's budget (`local_slice` × budget per replica), settled into Redis once it is back.
//!
//! The same Redis store shares the models' slots between replicas: `lease_slots` leases what a
//! batch needs per model in one round trip, a `SlotLease` is released (in batches) when its call
//! ends, and expires with the lease time when a replica dies.

mod memory;
mod redis_book;

pub use memory::MemoryBook;
pub use redis_book::{nano, RedisBook};

use super::config::{BudgetStore, StoreKind, Tenant, Unreachable};
use crate::metrics::names;
use crate::{Result, RouterError};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A settle waiting for Redis.
struct Settle {
    tenant: String,
    id: String,
    realized: i64,
    window: Duration,
}

struct RedisStore {
    book: RedisBook,
    settings: RedisSettings,
    outbox: mpsc::UnboundedSender<Settle>,
    /// Slot leases to release (model, id), batched by `releaser`.
    releases: mpsc::UnboundedSender<(String, String)>,
    pending: AtomicUsize,
    up: AtomicBool,
}

#[derive(Debug, Clone)]
struct RedisSettings {
    on_unreachable: Unreachable,
    local_slice: f64,
    lease: Duration,
    dedup: Duration,
}

pub struct Budgets {
    config: BudgetStore,
    local: MemoryBook,
    redis: Option<Arc<RedisStore>>,
    replica: String,
    seq: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In this process's book (the memory store).
    Memory,
    /// In Redis.
    Redis,
    /// In this replica's local slice while Redis was unreachable (fail open).
    LocalSlice,
}

/// A call's reserved budget. `settle` records the realized cost; dropping it unsettled releases it.
pub struct Reservation {
    budgets: Arc<Budgets>,
    tenant: String,
    window: Duration,
    id: String,
    amount: f64,
    place: Place,
    done: bool,
}

impl Reservation {
    pub fn amount(&self) -> f64 {
        self.amount
    }

    /// Records the realized cost (0 for a call that failed) in place of the reservation.
    pub fn settle(mut self, realized: f64) {
        self.finish(realized);
    }

    fn finish(&mut self, realized: f64) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if realized > self.amount + 1e-12 {
            // The reservation is an upper bound; this means a backend reported more tokens than
            // the bound allows. Charged anyway (the money was spent), and counted.
            metrics::counter!(names::BUDGET_OVERRUNS_TOTAL).increment(1);
            tracing::warn!(tenant = %self.tenant, reserved = self.amount, realized, "realized cost above its reservation");
        }
        let b = &self.budgets;
        match self.place {
            Place::Memory => b.local.settle(&self.tenant, self.amount, realized),
            Place::LocalSlice => {
                b.local.settle(&self.tenant, self.amount, realized);
                b.enqueue(&self.tenant, &self.id, realized, self.window);
            }
            Place::Redis => b.enqueue(&self.tenant, &self.id, realized, self.window),
        }
    }
}

/// A Redis reservation sent and not answered yet; dropped with an id, it is released.
struct Unanswered<'a> {
    budgets: &'a Budgets,
    tenant: &'a str,
    id: String,
    window: Duration,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.id.is_empty() {
            metrics::counter!(names::BUDGET_RELEASES_TOTAL).increment(1);
            tracing::debug!(tenant = self.tenant, id = %self.id, "reservation reply lost; releasing it by id");
            self.budgets.enqueue(self.tenant, &self.id, 0.0, self.window);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.finish(0.0);
    }
}

/// A model slot leased in Redis, shared by every replica; released (batched) when dropped, and
/// expired by Redis after the lease time if this replica dies first.
pub struct SlotLease {
    store: Arc<RedisStore>,
    model: String,
    id: String,
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        let _ = self.store.releases.send((std::mem::take(&mut self.model), std::mem::take(&mut self.id)));
    }
}

impl Budgets {
    /// Are model slots shared by the replicas (through the Redis store)?
    pub fn shares_slots(&self) -> bool {
        self.redis.is_some()
    }

    /// Leases up to `want` slots of each model `(model, capacity, want)` in one round trip: for
    /// each model, the leases granted (possibly fewer, none when it is full). None when slots
    /// are not shared or Redis did not answer: the caller goes on with its own limits.
    pub async fn lease_slots(&self, wants: &[(&str, u64, u64)]) -> Option<Vec<Vec<SlotLease>>> {
        let redis = self.redis.as_ref()?;
        let asks: Vec<(&str, u64, u64, String)> = wants
            .iter()
            .map(|(m, cap, want)| {
                (*m, *cap, *want, format!("{}-{}-", self.replica, self.seq.fetch_add(1, Ordering::Relaxed)))
            })
            .collect();
        match redis.book.acquire_slots(&asks, redis.settings.lease).await {
            Ok(granted) => Some(
                asks.iter()
                    .zip(granted)
                    .map(|((m, _, _, prefix), g)| {
                        (1..=g)
                            .map(|i| SlotLease {
                                store: redis.clone(),
                                model: m.to_string(),
                                id: format!("{prefix}{i}"),
                            })
                            .collect()
                    })
                    .collect(),
            ),
            Err(e) => {
                metrics::counter!(names::BUDGET_STORE_ERRORS_TOTAL, "op" => "slots").increment(1);
                tracing::warn!(error = %e, "Redis did not lease model slots; this replica uses its own limits meanwhile");
                None
            }
        }
    }

    /// The store the config names. With Redis, starts the settle outbox (needs a tokio runtime).
    pub fn new(config: &BudgetStore) -> Result<Arc<Budgets>> {
        let replica = format!("{:016x}", rand::random::<u64>());
        let redis = match &config.kind {
            StoreKind::Memory => None,
            StoreKind::Redis { url, key_prefix, timeout, on_unreachable, local_slice, lease, dedup } => {
                let book = RedisBook::new(url, key_prefix, *timeout)
                    .map_err(|e| RouterError::config("(config)", "budget_store.redis_url", e))?;
                let (tx, rx) = mpsc::unbounded_channel();
                let (release_tx, release_rx) = mpsc::unbounded_channel();
                let shared = Arc::new(RedisStore {
                    book,
                    releases: release_tx,
                    settings: RedisSettings {
                        on_unreachable: *on_unreachable,
                        local_slice: *local_slice,
                        lease: *lease,
                        dedup: *dedup,
                    },
                    outbox: tx,
                    pending: AtomicUsize::new(0),
                    up: AtomicBool::new(true),
                });
                let handle = tokio::runtime::Handle::try_current()
                    .map_err(|_| RouterError::Internal("the Redis budget store needs a tokio runtime".into()))?;
                handle.spawn(settler(shared.clone(), rx));
                handle.spawn(releaser(shared.clone(), release_rx));
                Some(shared)
            }
        };
        Ok(Arc::new(Budgets {
            config: config.clone(),
            local: MemoryBook::default(),
            redis,
            replica,
            seq: AtomicU64::new(0),
        }))
    }

    /// The config this store was built from (a reload may not change it).
    pub fn config(&self) -> &BudgetStore {
        &self.config
    }

    /// Reserves `amount` (an upper bound of the call's cost) from the tenant's budget.
    pub async fn reserve(self: &Arc<Self>, tenant: &Tenant, amount: f64) -> Result<Reservation> {
        let id = format!("{}-{}", self.replica, self.seq.fetch_add(1, Ordering::Relaxed));
        let mut r = Reservation {
            budgets: self.clone(),
            tenant: tenant.name.clone(),
            window: tenant.window,
            id,
            amount,
            place: Place::Memory,
            done: true,
        };
        let over = |used: f64, budget: f64| RouterError::TenantOverBudget {
            tenant: tenant.name.clone(),
            spent: used,
            budget,
            window_s: tenant.window.as_secs(),
        };
        let Some(redis) = &self.redis else {
            self.local
                .reserve(&tenant.name, amount, tenant.budget_usd, tenant.window)
                .map_err(|e| over(e.used, e.budget))?;
            r.done = false;
            return Ok(r);
        };
        let s = &redis.settings;
        // Until Redis answers, the reservation may be held there with its reply lost (a timeout,
        // or this call cancelled mid-await): then it is released by id (a settle of 0, retried
        // by the outbox until Redis takes it) instead of staying held until its lease.
        let mut unanswered =
            Unanswered { budgets: self, tenant: &tenant.name, id: r.id.clone(), window: tenant.window };
        let answer = match redis.book.connect().await {
            // Not connected: the reservation was never sent, there is nothing to release.
            Err(e) => {
                unanswered.id.clear();
                Err(e)
            }
            Ok(()) => {
                redis
                    .book
                    .reserve(&tenant.name, &r.id, nano(amount).max(0), nano(tenant.budget_usd), tenant.window, s.lease)
                    .await
            }
        };
        if answer.is_ok() {
            unanswered.id.clear();
        }
        drop(unanswered);
        match answer {
            Ok(Ok(())) => {
                redis.mark_up(true);
                r.place = Place::Redis;
                r.done = false;
                Ok(r)
            }
            Ok(Err((settled, reserved))) => {
                redis.mark_up(true);
                Err(over((settled + reserved) as f64 / 1e9, tenant.budget_usd))
            }
            Err(e) => {
                redis.mark_up(false);
                metrics::counter!(names::BUDGET_STORE_ERRORS_TOTAL, "op" => "reserve").increment(1);
                match s.on_unreachable {
                    Unreachable::FailClosed => Err(RouterError::StoreUnavailable(format!(
                        "the Redis budget store did not answer ({e}); calls are refused until it does (fail closed)"
                    ))),
                    Unreachable::FailOpen => {
                        let slice = tenant.budget_usd * s.local_slice;
                        self.local
                            .reserve(&tenant.name, amount, slice, tenant.window)
                            .map_err(|e| over(e.used, e.budget))?;
                        metrics::counter!(names::BUDGET_LOCAL_SLICE_TOTAL).increment(1);
                        // Its own id: the release of the unanswered reservation uses the first.
                        r.id.push_str("-local");
                        r.place = Place::LocalSlice;
                        r.done = false;
                        Ok(r)
                    }
                }
            }
        }
    }

    fn enqueue(&self, tenant: &str, id: &str, realized: f64, window: Duration) {
        if let Some(redis) = &self.redis {
            redis.pending_add(1);
            let s = Settle { tenant: tenant.to_string(), id: id.to_string(), realized: nano(realized), window };
            if redis.outbox.send(s).is_err() {
                redis.pending_add(-1);
                tracing::error!(tenant, id, realized, "settle outbox closed; this settle is lost");
            }
        }
    }

    /// (settled in window, reserved) in USD; with Redis, the shared figures (None when it does
    /// not answer).
    pub async fn usage(&self, tenant: &Tenant) -> Option<(f64, f64)> {
        match &self.redis {
            None => Some(self.local.usage(&tenant.name, tenant.window)),
            Some(r) => match r.book.usage(&tenant.name, tenant.window).await {
                Ok((s, res)) => {
                    r.mark_up(true);
                    Some((s as f64 / 1e9, res as f64 / 1e9))
                }
                Err(_) => {
                    r.mark_up(false);
                    None
                }
            },
        }
    }

    /// Settles not yet written to Redis (0 for the memory store).
    pub fn pending(&self) -> usize {
        self.redis.as_ref().map_or(0, |r| r.pending.load(Ordering::Relaxed))
    }

    /// Whether the shared store answered last time (always true for memory).
    pub fn store_up(&self) -> bool {
        self.redis.as_ref().is_none_or(|r| r.up.load(Ordering::Relaxed))
    }

    /// Waits (up to `limit`) until every settle reached Redis; returns how many did not.
    pub async fn flush(&self, limit: Duration) -> usize {
        let until = tokio::time::Instant::now() + limit;
        while self.pending() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.pending()
    }
}

impl RedisStore {
    /// Records whether Redis answered; the gauge and the log change only on a transition.
    fn mark_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("Redis budget store answers again");
            } else {
                tracing::warn!(policy = ?self.settings.on_unreachable, "Redis budget store unreachable");
            }
            metrics::gauge!(names::BUDGET_STORE_UP).set(if up { 1.0 } else { 0.0 });
        }
    }

    /// Moves the count of settles not yet in Redis, and its gauge with it (so /metrics never shows
    /// 0 while one waits).
    fn pending_add(&self, n: i64) {
        if n >= 0 {
            self.pending.fetch_add(n as usize, Ordering::Relaxed);
        } else {
            self.pending.fetch_sub(n.unsigned_abs() as usize, Ordering::Relaxed);
        }
        metrics::gauge!(names::BUDGET_SETTLES_PENDING).increment(n as f64);
    }
}

/// Writes settles to Redis, many at once (pipelined on one connection); those that fail wait and
/// go again, until they land.
/// Most items one Redis round trip carries (settles, slot releases).
const BATCH: usize = 256;

/// Adds what is waiting in `rx` to `batch`, up to `BATCH` items, without waiting.
fn top_up<T>(rx: &mut mpsc::UnboundedReceiver<T>, batch: &mut Vec<T>) {
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(x) => batch.push(x),
            Err(_) => break,
        }
    }
}

/// Releases slot leases in batches (one round trip for up to 256); a release that fails is
/// retried twice, then left to expire with its lease.
async fn releaser(shared: Arc<RedisStore>, mut rx: mpsc::UnboundedReceiver<(String, String)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        top_up(&mut rx, &mut batch);
        for attempt in 0..3 {
            match shared.book.release_slots(&batch).await {
                Ok(()) => break,
                Err(e) if attempt == 2 => {
                    tracing::warn!(error = %e, leases = batch.len(), "slot leases not released; they expire with their lease");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100 << attempt)).await,
            }
        }
    }
}

async fn settler(shared: Arc<RedisStore>, mut rx: mpsc::UnboundedReceiver<Settle>) {
    let mut retry: Vec<Settle> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut batch = std::mem::take(&mut retry);
        if batch.is_empty() {
            match rx.recv().await {
                Some(s) => batch.push(s),
                None => return,
            }
        }
        top_up(&mut rx, &mut batch);
        let book = &shared.book;
        let dedup = shared.settings.dedup;
        let results = futures_util::future::join_all(
            batch.iter().map(|s| book.settle(&s.tenant, &s.id, s.realized, s.window, dedup)),
        )
        .await;
        let mut failed = 0;
        for (s, r) in batch.into_iter().zip(results) {
            match r {
                Ok(applied) => {
                    shared.pending_add(-1);
                    if !applied {
                        metrics::counter!(names::BUDGET_SETTLE_DUPLICATES_TOTAL).increment(1);
                        tracing::info!(id = %s.id, "settle already applied (a retry); not charged again");
                    }
                }
                Err(e) => {
                    if failed == 0 {
                        tracing::debug!(error = %e, "settle did not reach Redis; will retry");
                    }
                    failed += 1;
                    retry.push(s);
                }
            }
        }
        if failed > 0 {
            metrics::counter!(names::BUDGET_STORE_ERRORS_TOTAL, "op" => "settle").increment(failed as u64);
            shared.mark_up(false);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        } else {
            backoff = Duration::from_millis(100);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(budget: f64) -> Tenant {
        Tenant {
            name: "t".into(),
            key_sha256: None,
            budget_usd: budget,
            window: Duration::from_secs(60),
            allowed_models: None,
        }
    }

    #[tokio::test]
    async fn memory_reservations_release_when_dropped() {
        let b = Budgets::new(&BudgetStore::default()).unwrap();
        let t = tenant(1.0);
        let r1 = b.reserve(&t, 0.6).await.unwrap();
        let e = b.reserve(&t, 0.6).await.err().unwrap();
        assert!(matches!(e, RouterError::TenantOverBudget { .. }), "{e}");
        drop(r1);
        let r2 = b.reserve(&t, 0.6).await.unwrap();
        r2.settle(0.5);
        assert_eq!(b.usage(&t).await, Some((0.5, 0.0)));
        assert!(b.reserve(&t, 0.6).await.is_err());
        b.reserve(&t, 0.5).await.unwrap().settle(0.5);
        assert_eq!(b.pending(), 0);
    }

    #[tokio::test]
    async fn unreachable_redis_fails_closed_or_open_by_config() {
        // Port 9 (discard) on loopback: connection refused at once.
        let mk = |policy| BudgetStore {
            kind: StoreKind::Redis {
                url: "redis://127.0.0.1:9/".into(),
                key_prefix: "test".into(),
                timeout: Duration::from_millis(200),
                on_unreachable: policy,
                local_slice: 0.25,
                lease: Duration::from_secs(60),
                dedup: Duration::from_secs(60),
            },
        };
        let t = tenant(1.0);
        let closed = Budgets::new(&mk(Unreachable::FailClosed)).unwrap();
        let e = closed.reserve(&t, 0.1).await.err().unwrap();
        assert!(matches!(e, RouterError::StoreUnavailable(_)) && e.retryable(), "{e}");
        let open = Budgets::new(&mk(Unreachable::FailOpen)).unwrap();
        let r = open.reserve(&t, 0.2).await.unwrap();
        assert!(!open.store_up());
        // The slice is a quarter of the budget.
        assert!(matches!(open.reserve(&t, 0.1).await.err().unwrap(), RouterError::TenantOverBudget { .. }));
        r.settle(0.1);
        // The realized spend waits in the outbox for Redis.
        assert_eq!(open.pending(), 1);
    }
}

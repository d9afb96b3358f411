//! Tenants' rolling budgets in Redis, shared by every router replica: reserve-then-settle as Lua
//! scripts (each one atomic on the server), amounts in integer nano-USD, time from Redis' own
//! clock (`TIME`) so replicas with skewed clocks agree. Keys of one tenant share a hash tag
//! (`{tenant}`), so the scripts also run on a Redis Cluster.
//!
//! The window is rolling with a granularity of 1/60 of its length (at least 1 s): settled spend
//! goes into per-bucket counters and buckets older than the window are dropped.

use redis::aio::MultiplexedConnection;
use redis::Script;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// After a failed connect, calls fail at once for this long instead of each trying again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(300);

/// USD → integer nano-USD (exact in Lua's doubles up to $9M).
pub fn nano(usd: f64) -> i64 {
    (usd * 1e9).round() as i64
}

/// The keys of one tenant.
struct Keys {
    spent: String,
    reservations: String,
    leases: String,
    reserved: String,
    total: String,
    count: String,
}

pub struct RedisBook {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    failed_at: Mutex<Option<Instant>>,
    prefix: String,
    timeout: Duration,
    reserve: Script,
    settle: Script,
    usage: Script,
    slots: Script,
    release: Script,
}

/// Window → (bucket width ms, window ms). Buckets are keyed by their absolute end time (ms) and
/// count while their end is inside the window, so spend settled under one window is read right
/// under another after a reload (keyed by bucket number, it was dropped or kept for ever).
fn buckets(window: Duration) -> (u64, u64) {
    let ms = window.as_millis().max(1) as u64;
    ((ms / 60).max(1000), ms)
}

impl RedisBook {
    /// `url` was checked when the config was loaded.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisBook, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(RedisBook {
            client,
            conn: tokio::sync::Mutex::new(None),
            failed_at: Mutex::new(None),
            prefix: prefix.to_string(),
            timeout,
            reserve: Script::new(include_str!("lua/reserve.lua")),
            settle: Script::new(include_str!("lua/settle.lua")),
            usage: Script::new(include_str!("lua/usage.lua")),
            slots: Script::new(include_str!("lua/slots.lua")),
            release: Script::new(include_str!("lua/release.lua")),
        })
    }

    fn keys(&self, tenant: &str) -> Keys {
        let k = |s: &str| format!("{}:{{{tenant}}}:{s}", self.prefix);
        Keys {
            spent: k("spent"),
            reservations: k("res"),
            leases: k("lease"),
            reserved: k("reserved"),
            total: k("settled_total"),
            count: k("settled_count"),
        }
    }

    /// Connects when there is no connection; Err when Redis cannot be reached (nothing sent).
    pub async fn connect(&self) -> Result<(), String> {
        self.conn().await.map(|_| ())
    }

    /// The shared connection, connecting (again) when there is none.
    async fn conn(&self) -> Result<MultiplexedConnection, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        {
            let failed = self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
            if failed.is_some_and(|t| t.elapsed() < RECONNECT_PAUSE) {
                return Err("not connected (reconnecting)".into());
            }
        }
        let r = tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection()).await;
        match r {
            Ok(Ok(c)) => {
                tracing::info!("connected to the Redis budget store");
                *guard = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => Err(self.failed(format!("connect: {e}"))),
            Err(_) => Err(self.failed(format!("connect: no answer in {} ms", self.timeout.as_millis()))),
        }
    }

    fn failed(&self, msg: String) -> String {
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        msg
    }

    /// Runs a script invocation with the timeout; an I/O error or timeout drops the connection.
    async fn run<T: redis::FromRedisValue>(&self, inv: redis::ScriptInvocation<'_>) -> Result<T, String> {
        let mut c = self.conn().await?;
        match tokio::time::timeout(self.timeout, inv.invoke_async(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
                    *self.conn.lock().await = None;
                    return Err(self.failed(e.to_string()));
                }
                Err(e.to_string())
            }
            Err(_) => {
                *self.conn.lock().await = None;
                Err(self.failed(format!("no answer in {} ms", self.timeout.as_millis())))
            }
        }
    }

    /// The key that marks `id` settled (or released).
    fn marker(&self, tenant: &str, id: &str) -> String {
        format!("{}:{{{tenant}}}:done:{id}", self.prefix)
    }

    /// Reserves `amount` nano-USD under `id` if it fits `budget`: Ok(Ok(())) admitted,
    /// Ok(Err((settled, reserved))) refused, Err(_) the store did not answer.
    pub async fn reserve(
        &self,
        tenant: &str,
        id: &str,
        amount: i64,
        budget: i64,
        window: Duration,
        lease: Duration,
    ) -> Result<Result<(), (i64, i64)>, String> {
        let k = self.keys(tenant);
        let (width, n) = buckets(window);
        let marker = self.marker(tenant, id);
        let mut inv = self.reserve.prepare_invoke();
        inv.key(&k.spent).key(&k.reservations).key(&k.leases).key(&k.reserved).key(&marker);
        inv.arg(id).arg(amount).arg(budget).arg(width).arg(n).arg(lease.as_millis() as u64);
        let (ok, settled, reserved): (i64, i64, i64) = self.run(inv).await?;
        Ok(if ok == 1 { Ok(()) } else { Err((settled, reserved)) })
    }

    /// Settles `id` with `realized` nano-USD; Ok(false) when it was settled before (not charged
    /// again).
    pub async fn settle(
        &self,
        tenant: &str,
        id: &str,
        realized: i64,
        window: Duration,
        dedup: Duration,
    ) -> Result<bool, String> {
        let k = self.keys(tenant);
        let (width, _) = buckets(window);
        let marker = self.marker(tenant, id);
        let mut inv = self.settle.prepare_invoke();
        inv.key(&k.spent).key(&k.reservations).key(&k.leases).key(&k.reserved).key(&marker).key(&k.total).key(&k.count);
        inv.arg(id).arg(realized.max(0)).arg(width).arg(dedup.as_millis().max(1) as u64);
        let applied: i64 = self.run(inv).await?;
        Ok(applied == 1)
    }

    /// (settled in window, reserved) in nano-USD.
    pub async fn usage(&self, tenant: &str, window: Duration) -> Result<(i64, i64), String> {
        let k = self.keys(tenant);
        let (width, n) = buckets(window);
        let mut inv = self.usage.prepare_invoke();
        inv.key(&k.spent).key(&k.reserved).arg(width).arg(n);
        self.run(inv).await
    }
}

impl RedisBook {
    /// The sorted set of a model's slot leases (one hash tag for all models: one script call).
    fn slot_key(&self, model: &str) -> String {
        format!("{}:{{slots}}:{model}", self.prefix)
    }

    /// Leases up to `want` slots of each model (`(model, capacity, want, id prefix)`) in one
    /// round trip; returns how many each got (ids prefix1 .. prefixN).
    pub async fn acquire_slots(&self, wants: &[(&str, u64, u64, String)], lease: Duration) -> Result<Vec<u64>, String> {
        let mut inv = self.slots.prepare_invoke();
        inv.arg(lease.as_millis().max(1) as u64);
        for (model, cap, want, prefix) in wants {
            inv.key(self.slot_key(model));
            inv.arg(*cap).arg(*want).arg(prefix);
        }
        self.run(inv).await
    }

    /// Releases leases by id (`(model, id)`), in one round trip.
    pub async fn release_slots(&self, leases: &[(String, String)]) -> Result<(), String> {
        let mut inv = self.release.prepare_invoke();
        for (model, id) in leases {
            inv.key(self.slot_key(model)).arg(id);
        }
        let _: i64 = self.run(inv).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_window() {
        assert_eq!(buckets(Duration::from_secs(3600)), (60_000, 3_600_000));
        assert_eq!(buckets(Duration::from_secs(30)), (1000, 30_000));
        assert_eq!(buckets(Duration::from_millis(1500)), (1000, 1500));
        assert_eq!(nano(0.000_000_001_4), 1);
        assert_eq!(nano(1.0), 1_000_000_000);
    }
}

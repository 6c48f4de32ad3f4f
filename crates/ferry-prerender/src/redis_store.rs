//! The Redis store: entries and invalidation marks shared by every `ferry start` on one Redis,
//! with a bounded memory tier in front so a hit never leaves the process.
//!
//! Keys (prefix `ferry:<namespace>:`, the namespace being the build id and deployment id, so two
//! deployments never mix): `e:<pathname>` the encoded entry (with a TTL when it expires),
//! `index` (hash pathname → creation time in ns), `marks` and `expired` (hash key → time, kept at
//! the maximum by a script). Every write is followed by a PUBLISH on `<prefix>events:db<N>`:
//! `E` (an entry changed: others fetch it), `M` (marks, applied as they come), `D` (deleted).
//!
//! The request path never waits on Redis except [`CacheStore::fetch`] on a memory miss, and that
//! is bounded by the command timeout and skipped while Redis is known to be down. Writes go
//! through a background task; the ones that fail while Redis is down are kept (latest per
//! pathname, marks merged) and replayed after the reconnection. A supervisor task keeps the
//! subscription up: on (re)connection it subscribes, then resynchronizes marks and entries from
//! the hashes, so nothing published during an outage is missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, mpsc};

use crate::CachedEntry;
use crate::codec::{self, from_nanos, to_nanos};
use crate::store::{BoxFuture, CacheStore, MemoryStore};

/// Settings of a [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host[:port][/db]`.
    pub url: String,
    /// Separates deployments sharing a Redis (build id, deployment id).
    pub namespace: String,
    /// Bound of the memory tier, in bytes.
    pub memory_bytes: u64,
    /// Bound of a connection attempt.
    pub connect_timeout: Duration,
    /// Bound of one command (a request waits at most this long on Redis).
    pub command_timeout: Duration,
    /// How long [`RedisStore::connect`] waits for the first connection and sync.
    pub startup_timeout: Duration,
}

impl RedisOptions {
    /// Defaults: 256 MiB memory tier, 200 ms connect and command timeouts, 2 s startup wait.
    pub fn new(url: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: namespace.into(),
            memory_bytes: 256 * 1024 * 1024,
            connect_timeout: Duration::from_millis(200),
            command_timeout: Duration::from_millis(200),
            startup_timeout: Duration::from_secs(2),
        }
    }
}

/// Errors creating a [`RedisStore`] (an unreachable Redis is not one: the store starts degraded).
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL {url:?}: {source}")]
    Url {
        /// The URL given.
        url: String,
        /// The client's message.
        source: redis::RedisError,
    },
}

/// Memory tier + Redis, coherent across instances through pub/sub.
#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
enum Write {
    Entry(String, Arc<CachedEntry>),
    Delete(String),
    Mark {
        keys: Vec<String>,
        at: SystemTime,
        expired: bool,
    },
    /// Releases a regeneration lock (queued after the entry writes it follows).
    Unlock(String),
}

/// Writes that failed while Redis was down, compacted: the latest per pathname, marks merged.
#[derive(Debug, Default)]
struct Pending {
    entries: HashMap<String, Option<Arc<CachedEntry>>>,
    marks: HashMap<String, SystemTime>,
    expired: HashMap<String, SystemTime>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.marks.is_empty() && self.expired.is_empty()
    }

    fn add(&mut self, w: Write) {
        match w {
            Write::Entry(p, e) => {
                self.entries.insert(p, Some(e));
            }
            Write::Delete(p) => {
                self.entries.insert(p, None);
            }
            // Not kept: the lock expires by itself (its TTL).
            Write::Unlock(_) => {}
            Write::Mark { keys, at, expired } => {
                let map = if expired {
                    &mut self.expired
                } else {
                    &mut self.marks
                };
                for k in keys {
                    let slot = map.entry(k).or_insert(at);
                    if *slot < at {
                        *slot = at;
                    }
                }
            }
        }
    }

    /// Drains into writes, marks grouped by time.
    fn drain(&mut self) -> Vec<Write> {
        let mut out = Vec::new();
        for (expired, map) in [
            (false, std::mem::take(&mut self.marks)),
            (true, std::mem::take(&mut self.expired)),
        ] {
            let mut by_time: HashMap<SystemTime, Vec<String>> = HashMap::new();
            for (k, at) in map {
                by_time.entry(at).or_default().push(k);
            }
            for (at, keys) in by_time {
                out.push(Write::Mark { keys, at, expired });
            }
        }
        for (p, e) in self.entries.drain() {
            out.push(match e {
                Some(e) => Write::Entry(p, e),
                None => Write::Delete(p),
            });
        }
        out
    }
}

#[derive(Debug)]
struct Inner {
    client: redis::Client,
    opts: RedisOptions,
    prefix: String,
    channel: String,
    /// This process's id in published messages (its own are ignored).
    origin: String,
    memory: MemoryStore,
    conn: RwLock<Option<MultiplexedConnection>>,
    up: AtomicBool,
    writes: mpsc::UnboundedSender<Write>,
    pending: Mutex<Pending>,
    /// Held while writing to Redis: a replay and a live write never interleave (an older kept
    /// entry must not land after a newer one).
    apply_lock: tokio::sync::Mutex<()>,
    synced: Notify,
}

/// Keeps the later of two marks per key, both stored as 20-digit zero-padded ns strings (Lua
/// numbers are doubles; fixed-width strings compare exactly).
const MARK_SCRIPT: &str = r"
for i = 3, #ARGV do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or cur < ARGV[1] then redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]) end
  if ARGV[2] == '1' then
    cur = redis.call('HGET', KEYS[2], ARGV[i])
    if (not cur) or cur < ARGV[1] then redis.call('HSET', KEYS[2], ARGV[i], ARGV[1]) end
  end
end
return 1
";

/// Deletes a lock only if this instance still holds it (it may have expired and been taken).
const UNLOCK_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

fn padded(t: SystemTime) -> String {
    format!("{:020}", to_nanos(t))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn random_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!(
        "{:016x}{:08x}",
        RandomState::new().hash_one(SystemTime::now()),
        std::process::id()
    )
}

impl RedisStore {
    /// Creates the store and starts its background tasks (needs a Tokio runtime), waiting up to
    /// `startup_timeout` for the first connection and sync. An unreachable Redis is logged and
    /// retried in the background; the store serves from memory meanwhile.
    pub async fn connect(opts: RedisOptions) -> Result<Self, RedisStoreError> {
        let client =
            redis::Client::open(opts.url.as_str()).map_err(|source| RedisStoreError::Url {
                url: opts.url.clone(),
                source,
            })?;
        let db = client.get_connection_info().redis_settings().db();
        let prefix = format!("ferry:{}:", opts.namespace);
        let channel = format!("{prefix}events:db{db}");
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            client,
            prefix,
            channel,
            origin: random_id(),
            memory: MemoryStore::bounded(opts.memory_bytes),
            conn: RwLock::new(None),
            up: AtomicBool::new(false),
            writes: tx,
            pending: Mutex::new(Pending::default()),
            apply_lock: tokio::sync::Mutex::new(()),
            synced: Notify::new(),
            opts,
        });
        let synced = inner.synced.notified();
        tokio::spawn(supervise(inner.clone()));
        tokio::spawn(write_loop(inner.clone(), rx));
        // Woken by the first successful sync, or by the first failed attempt.
        let _ = tokio::time::timeout(inner.opts.startup_timeout, synced).await;
        if !inner.up.load(Ordering::SeqCst) {
            tracing::warn!(
                "shared cache: Redis at {} not reachable yet; serving from memory and the bundle's seeds, reconnecting in the background",
                inner.opts.url
            );
        }
        Ok(RedisStore { inner })
    }

    /// Whether the store is connected to Redis right now.
    pub fn is_connected(&self) -> bool {
        self.inner.up.load(Ordering::SeqCst)
    }

    /// The key prefix (`ferry:<namespace>:`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }
}

impl Inner {
    fn connection(&self) -> Option<MultiplexedConnection> {
        if !self.up.load(Ordering::SeqCst) {
            return None;
        }
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn entry_key(&self, pathname: &str) -> String {
        format!("{}e:{pathname}", self.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}lock:{key}", self.prefix)
    }

    async fn timed<T>(
        &self,
        d: Duration,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(d, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("timed out after {d:?}")),
        }
    }

    async fn get_entry(&self, pathname: &str, d: Duration) -> Option<CachedEntry> {
        let mut conn = self.connection()?;
        self.get_entry_with(&mut conn, pathname, d).await
    }

    async fn get_entry_with(
        &self,
        conn: &mut MultiplexedConnection,
        pathname: &str,
        d: Duration,
    ) -> Option<CachedEntry> {
        let key = self.entry_key(pathname);
        let data: Option<Vec<u8>> = match self.timed(d, conn.get(&key)).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!("shared cache: GET {pathname}: {e}");
                return None;
            }
        };
        match codec::decode(&Bytes::from(data?)) {
            Ok(e) if e.pathname == pathname => Some(e),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("shared cache: entry {pathname} in Redis is invalid ({e}): a miss");
                None
            }
        }
    }

    async fn apply(&self, conn: &mut MultiplexedConnection, w: &Write) -> Result<(), String> {
        let d = self.opts.command_timeout;
        match w {
            Write::Entry(pathname, entry) => {
                let data = codec::encode(entry);
                let key = self.entry_key(pathname);
                let created = to_nanos(entry.created);
                let mut pipe = redis::pipe();
                match entry.expire.filter(|_| entry.revalidate.is_some()) {
                    // Past its expiration the entry must not be served anyway.
                    Some(secs) => pipe.set_ex(&key, data, secs.max(1)).ignore(),
                    None => pipe.set(&key, data).ignore(),
                };
                pipe.hset(format!("{}index", self.prefix), pathname, created)
                    .ignore()
                    .publish(
                        &self.channel,
                        format!("E {} {created} {pathname}", self.origin),
                    )
                    .ignore();
                self.timed(d, pipe.query_async::<()>(conn)).await
            }
            Write::Delete(pathname) => {
                let mut pipe = redis::pipe();
                pipe.del(self.entry_key(pathname))
                    .ignore()
                    .hdel(format!("{}index", self.prefix), pathname)
                    .ignore()
                    .publish(&self.channel, format!("D {} {pathname}", self.origin))
                    .ignore();
                self.timed(d, pipe.query_async::<()>(conn)).await
            }
            Write::Mark { keys, at, expired } => {
                let script = redis::Script::new(MARK_SCRIPT);
                let mut inv = script.prepare_invoke();
                inv.key(format!("{}marks", self.prefix))
                    .key(format!("{}expired", self.prefix))
                    .arg(padded(*at))
                    .arg(if *expired { "1" } else { "0" });
                for k in keys {
                    inv.arg(k.as_bytes());
                }
                self.timed(d, inv.invoke_async::<()>(conn)).await?;
                let msg = format!(
                    "M {} {} {} {}",
                    self.origin,
                    u8::from(*expired),
                    to_nanos(*at),
                    serde_json::Value::from(keys.clone())
                );
                self.timed(d, conn.publish::<_, _, ()>(&self.channel, msg))
                    .await
            }
            Write::Unlock(key) => {
                let script = redis::Script::new(UNLOCK_SCRIPT);
                let mut inv = script.prepare_invoke();
                inv.key(self.lock_key(key)).arg(&self.origin);
                self.timed(d, inv.invoke_async::<()>(conn)).await
            }
        }
    }

    /// Replays the writes kept while Redis was down.
    async fn flush_pending(&self) {
        let _serial = self.apply_lock.lock().await;
        let writes = lock(&self.pending).drain();
        if writes.is_empty() {
            return;
        }
        let Some(mut conn) = self.connection() else {
            let mut pending = lock(&self.pending);
            for w in writes {
                pending.add(w);
            }
            return;
        };
        let n = writes.len();
        let mut failed = Vec::new();
        for w in writes {
            if !failed.is_empty() {
                failed.push(w);
                continue;
            }
            if let Err(e) = self.apply(&mut conn, &w).await {
                tracing::debug!("shared cache: replay failed: {e}");
                failed.push(w);
            }
        }
        if failed.is_empty() {
            tracing::info!("shared cache: replayed {n} writes made while Redis was unreachable");
        }
        let mut pending = lock(&self.pending);
        for w in failed {
            pending.add(w);
        }
    }

    fn handle_message(self: &Arc<Self>, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        let mut parts = text.splitn(3, ' ');
        let (Some(kind), Some(origin), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if origin == self.origin {
            return;
        }
        match kind {
            "E" => {
                let Some((created, pathname)) = rest.split_once(' ') else {
                    return;
                };
                let Ok(created) = created.parse::<u64>() else {
                    return;
                };
                let pathname = pathname.to_owned();
                let inner = self.clone();
                tokio::spawn(async move {
                    inner.refresh(&pathname, from_nanos(created)).await;
                });
            }
            "D" => self.memory.delete(rest),
            "M" => {
                let mut f = rest.splitn(3, ' ');
                let (Some(expired), Some(at), Some(keys)) = (f.next(), f.next(), f.next()) else {
                    return;
                };
                let (Ok(at), Ok(keys)) =
                    (at.parse::<u64>(), serde_json::from_str::<Vec<String>>(keys))
                else {
                    return;
                };
                if expired == "1" {
                    self.memory.mark_expired(&keys, from_nanos(at));
                } else {
                    self.memory.mark(&keys, from_nanos(at));
                }
            }
            _ => {}
        }
    }

    /// Fetches `pathname` if Redis has a newer version than the memory tier.
    async fn refresh(&self, pathname: &str, created: SystemTime) {
        if self
            .memory
            .get(pathname)
            .is_some_and(|e| e.created >= created)
        {
            return;
        }
        if let Some(e) = self
            .get_entry(pathname, self.opts.command_timeout * 5)
            .await
        {
            self.memory.insert_if_newer(pathname, Arc::new(e));
        }
    }

    /// After a (re)connection: marks and entries that changed while unsubscribed.
    async fn resync(self: &Arc<Self>, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let d = self.opts.command_timeout * 10;
        for (field, expired) in [("marks", false), ("expired", true)] {
            let map: HashMap<Vec<u8>, String> = self
                .timed(d, conn.hgetall(format!("{}{field}", self.prefix)))
                .await?;
            for (k, v) in map {
                let (Ok(k), Ok(n)) = (String::from_utf8(k), v.parse::<u64>()) else {
                    continue;
                };
                let keys = [k];
                if expired {
                    self.memory.mark_expired(&keys, from_nanos(n));
                } else {
                    self.memory.mark(&keys, from_nanos(n));
                }
            }
        }
        let index: HashMap<String, u64> = self
            .timed(d, conn.hgetall(format!("{}index", self.prefix)))
            .await?;
        let mut fetched = 0;
        for (pathname, created) in index {
            let created = from_nanos(created);
            if self
                .memory
                .get(&pathname)
                .is_some_and(|e| e.created >= created)
            {
                continue;
            }
            if let Some(e) = self.get_entry_with(conn, &pathname, d).await {
                self.memory.insert_if_newer(&pathname, Arc::new(e));
                fetched += 1;
            }
        }
        tracing::debug!("shared cache: resynced, {fetched} entries fetched");
        Ok(())
    }

    async fn establish(self: &Arc<Self>) -> Result<redis::aio::PubSubStream, String> {
        let c = self.opts.connect_timeout;
        let mut pubsub = self.timed(c, self.client.get_async_pubsub()).await?;
        self.timed(self.opts.command_timeout, pubsub.subscribe(&self.channel))
            .await?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(c))
            .set_response_timeout(Some(self.opts.command_timeout));
        let mut conn = self
            .timed(
                c + self.opts.command_timeout,
                self.client
                    .get_multiplexed_async_connection_with_config(&config),
            )
            .await?;
        // Subscribed first, then resynced: nothing published in between is lost.
        self.resync(&mut conn).await?;
        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        self.up.store(true, Ordering::SeqCst);
        Ok(pubsub.into_on_message())
    }
}

/// Keeps the subscription (and the command connection) up, forever.
async fn supervise(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_once = false;
    let mut failing_since_logged = false;
    loop {
        match inner.establish().await {
            Ok(mut messages) => {
                if connected_once {
                    tracing::info!("shared cache: reconnected to Redis, resubscribed and resynced");
                } else {
                    tracing::info!("shared cache: connected to Redis at {}", inner.opts.url);
                }
                connected_once = true;
                failing_since_logged = false;
                backoff = Duration::from_millis(50);
                inner.synced.notify_waiters();
                inner.flush_pending().await;
                // Messages until the subscription drops; a PING every second also catches a
                // server that stopped answering without closing the socket.
                let mut ping = tokio::time::interval(Duration::from_secs(1));
                ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut misses = 0;
                loop {
                    tokio::select! {
                        msg = messages.next() => match msg {
                            Some(msg) => inner.handle_message(msg.get_payload_bytes()),
                            None => break,
                        },
                        _ = ping.tick() => {
                            let alive = match inner.connection() {
                                Some(mut c) => inner
                                    .timed(inner.opts.command_timeout, redis::cmd("PING").query_async::<()>(&mut c))
                                    .await
                                    .is_ok(),
                                None => false,
                            };
                            misses = if alive { 0 } else { misses + 1 };
                            if misses >= 2 {
                                break;
                            }
                            if alive {
                                inner.flush_pending().await;
                            }
                        }
                    }
                }
                inner.up.store(false, Ordering::SeqCst);
                *inner.conn.write().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::warn!(
                    "shared cache: lost the connection to Redis; serving from memory, reconnecting"
                );
            }
            Err(e) => {
                inner.up.store(false, Ordering::SeqCst);
                if !failing_since_logged {
                    tracing::warn!(
                        "shared cache: cannot connect to Redis at {}: {e}",
                        inner.opts.url
                    );
                    failing_since_logged = true;
                }
                if !connected_once {
                    // Do not hold the server's start for a Redis that refuses connections.
                    inner.synced.notify_waiters();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Applies writes in order; what fails is kept for the replay after reconnection.
async fn write_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Write>) {
    while let Some(w) = rx.recv().await {
        let has_pending = !lock(&inner.pending).is_empty();
        if has_pending {
            // Keep the order: the new write joins the kept ones, then all are replayed.
            lock(&inner.pending).add(w);
            inner.flush_pending().await;
            continue;
        }
        let Some(mut conn) = inner.connection() else {
            lock(&inner.pending).add(w);
            continue;
        };
        let serial = inner.apply_lock.lock().await;
        if !lock(&inner.pending).is_empty() {
            // A failure elsewhere queued writes meanwhile: join them, keep the order.
            lock(&inner.pending).add(w);
            drop(serial);
            inner.flush_pending().await;
            continue;
        }
        let result = inner.apply(&mut conn, &w).await;
        drop(serial);
        if let Err(e) = result {
            tracing::warn!("shared cache: write failed ({e}); kept for replay");
            lock(&inner.pending).add(w);
        }
    }
}

impl CacheStore for RedisStore {
    fn get(&self, pathname: &str) -> Option<Arc<CachedEntry>> {
        self.inner.memory.get(pathname)
    }

    fn set(&self, pathname: &str, entry: Arc<CachedEntry>) {
        self.inner.memory.set(pathname, entry.clone());
        let _ = self
            .inner
            .writes
            .send(Write::Entry(pathname.to_owned(), entry));
    }

    fn set_if_absent(&self, pathname: &str, entry: Arc<CachedEntry>) {
        // Seeds stay local: every instance has them in its bundle.
        self.inner.memory.insert_if_newer(pathname, entry);
    }

    fn delete(&self, pathname: &str) {
        self.inner.memory.delete(pathname);
        let _ = self.inner.writes.send(Write::Delete(pathname.to_owned()));
    }

    fn mark(&self, keys: &[String], at: SystemTime) {
        self.inner.memory.mark(keys, at);
        let _ = self.inner.writes.send(Write::Mark {
            keys: keys.to_vec(),
            at,
            expired: false,
        });
    }

    fn latest_mark(&self, keys: &mut dyn Iterator<Item = &str>) -> Option<SystemTime> {
        self.inner.memory.latest_mark(keys)
    }

    fn mark_expired(&self, keys: &[String], at: SystemTime) {
        self.inner.memory.mark_expired(keys, at);
        let _ = self.inner.writes.send(Write::Mark {
            keys: keys.to_vec(),
            at,
            expired: true,
        });
    }

    fn latest_expired_mark(&self, keys: &mut dyn Iterator<Item = &str>) -> Option<SystemTime> {
        self.inner.memory.latest_expired_mark(keys)
    }

    fn fetch<'a>(&'a self, pathname: &'a str) -> BoxFuture<'a, Option<Arc<CachedEntry>>> {
        Box::pin(async move {
            if let Some(hit) = self.inner.memory.get(pathname) {
                return Some(hit);
            }
            let entry = Arc::new(
                self.inner
                    .get_entry(pathname, self.inner.opts.command_timeout)
                    .await?,
            );
            self.inner.memory.insert_if_newer(pathname, entry.clone());
            Some(entry)
        })
    }

    fn try_lock<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(mut conn) = self.inner.connection() else {
                return true;
            };
            // SET NX PX: one holder at a time, gone after `ttl` if the holder dies.
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let cmd = redis::cmd("SET")
                .arg(self.inner.lock_key(key))
                .arg(&self.inner.origin)
                .arg("NX")
                .arg("PX")
                .arg(ms)
                .to_owned();
            let set = cmd.query_async::<Option<String>>(&mut conn);
            match self.inner.timed(self.inner.opts.command_timeout, set).await {
                Ok(reply) => reply.is_some(),
                Err(e) => {
                    tracing::debug!("shared cache: regeneration lock {key}: {e}; regenerating");
                    true
                }
            }
        })
    }

    fn unlock(&self, key: &str) {
        let _ = self.inner.writes.send(Write::Unlock(key.to_owned()));
    }

    fn refresh<'a>(&'a self, pathname: &'a str) -> BoxFuture<'a, Option<Arc<CachedEntry>>> {
        Box::pin(async move {
            if let Some(e) = self
                .inner
                .get_entry(pathname, self.inner.opts.command_timeout)
                .await
            {
                self.inner.memory.insert_if_newer(pathname, Arc::new(e));
            }
            self.inner.memory.get(pathname)
        })
    }
}

//! The image cache shared between instances through Redis: an image optimized by one instance
//! is a hit on the others (next start re-encodes it on every replica).
//!
//! One Redis string per cache key, `<prefix><key>`, holding a small text header (max-age,
//! expiry, ETags, extension) and the image bytes; Redis expires it an hour after the entry goes
//! stale, so other instances can still serve it STALE while one regenerates. Every command has
//! a deadline and a failed connection is retried at most every few seconds: an unreachable
//! Redis costs a miss, never a hang or an error response.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::AsyncCommands as _;
use redis::aio::MultiplexedConnection;

use crate::cache::{CacheEntry, now_ms};

/// Deadline of one Redis command (and of connecting).
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a failed connection is not retried.
const RETRY_AFTER: Duration = Duration::from_secs(3);
/// How long Redis keeps an entry past its expiry (served STALE meanwhile).
const STALE_KEEP_MS: u64 = 3_600_000;
/// Format tag at the start of every stored value.
const MAGIC: &[u8] = b"ferry-image-1\n";

/// Why the shared cache could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("invalid Redis URL for the image cache: {0}")]
pub struct SharedCacheError(#[from] redis::RedisError);

/// Where to share the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// `redis://host:port[/db]` (or `rediss://`).
    pub url: String,
    /// Key prefix (the deployment's namespace: instances of one deployment share entries).
    pub prefix: String,
}

/// A connection to the shared cache, made on first use.
pub struct SharedCache {
    client: redis::Client,
    prefix: String,
    state: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    failed_at: Mutex<Option<Instant>>,
}

impl SharedCache {
    /// A cache at `config.url`; nothing is connected yet.
    pub fn new(config: &SharedConfig) -> Result<Self, SharedCacheError> {
        Ok(Self {
            client: redis::Client::open(config.url.as_str())?,
            prefix: config.prefix.clone(),
            state: tokio::sync::Mutex::new(None),
            failed_at: Mutex::new(None),
        })
    }

    /// The connection, made (or retried, after [`RETRY_AFTER`]) when there is none.
    async fn connection(&self) -> Option<MultiplexedConnection> {
        let mut state = self.state.lock().await;
        if let Some(conn) = &*state {
            return Some(conn.clone());
        }
        let recently_failed = self
            .failed_at
            .lock()
            .ok()
            .and_then(|f| *f)
            .is_some_and(|t| t.elapsed() < RETRY_AFTER);
        if recently_failed {
            return None;
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => {
                *state = Some(conn.clone());
                Some(conn)
            }
            Err(err) => {
                tracing::warn!("shared image cache: cannot connect to Redis: {err}");
                if let Ok(mut f) = self.failed_at.lock() {
                    *f = Some(Instant::now());
                }
                None
            }
        }
    }

    /// Forgets a connection that failed a command (the next use reconnects).
    async fn drop_connection(&self) {
        *self.state.lock().await = None;
        if let Ok(mut f) = self.failed_at.lock() {
            *f = Some(Instant::now());
        }
    }

    /// The entry stored for `key` and its expiry (ms since the epoch); `None` on a miss, an
    /// unreadable value or any Redis problem.
    pub async fn get(&self, key: &str) -> Option<(CacheEntry, u64)> {
        let mut conn = self.connection().await?;
        let name = format!("{}{key}", self.prefix);
        let got: redis::RedisResult<Option<Vec<u8>>> =
            match tokio::time::timeout(COMMAND_TIMEOUT, conn.get(&name)).await {
                Ok(r) => r,
                Err(_) => Err(redis::RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                ))),
            };
        match got {
            Ok(value) => decode(&value?),
            Err(err) => {
                tracing::warn!("shared image cache: GET failed: {err}");
                self.drop_connection().await;
                None
            }
        }
    }

    /// Stores `entry` for `key` until `expire_at` (ms since the epoch), plus the stale window.
    pub async fn set(&self, key: &str, entry: &CacheEntry, expire_at: u64) {
        let Some(mut conn) = self.connection().await else {
            return;
        };
        let name = format!("{}{key}", self.prefix);
        let ttl = expire_at
            .saturating_sub(now_ms())
            .saturating_add(STALE_KEEP_MS);
        let value = encode(entry, expire_at);
        let set = conn.pset_ex::<_, _, ()>(&name, value, ttl);
        match tokio::time::timeout(COMMAND_TIMEOUT, set).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!("shared image cache: SET failed: {err}");
                self.drop_connection().await;
            }
            Err(_) => {
                tracing::warn!("shared image cache: SET timed out");
                self.drop_connection().await;
            }
        }
    }
}

/// `MAGIC`, then `max_age expire_at etag upstream_etag extension` on one line, then the bytes.
fn encode(entry: &CacheEntry, expire_at: u64) -> Vec<u8> {
    let head = format!(
        "{} {} {} {} {}\n",
        entry.max_age,
        expire_at,
        or_dash(&entry.etag),
        or_dash(&entry.upstream_etag),
        entry.extension
    );
    let mut out = Vec::with_capacity(MAGIC.len() + head.len() + entry.buffer.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&entry.buffer);
    out
}

/// An empty field is stored as `-` (base64url ETags never are `-`).
fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn decode(value: &[u8]) -> Option<(CacheEntry, u64)> {
    let rest = value.strip_prefix(MAGIC)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&rest[..end]).ok()?;
    let mut f = head.split(' ');
    let field = |s: &str| {
        if s == "-" {
            String::new()
        } else {
            s.to_owned()
        }
    };
    let max_age = f.next()?.parse().ok()?;
    let expire_at = f.next()?.parse().ok()?;
    let etag = field(f.next()?);
    let upstream_etag = field(f.next()?);
    let extension = f.next()?.to_owned();
    let buffer = Bytes::copy_from_slice(&rest[end + 1..]);
    if buffer.is_empty() || f.next().is_some() {
        return None;
    }
    let entry = CacheEntry {
        buffer,
        extension,
        etag,
        upstream_etag,
        max_age,
    };
    Some((entry, expire_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let entry = CacheEntry {
            buffer: Bytes::from_static(b"RIFF....WEBP"),
            extension: "webp".into(),
            etag: "abc_-1".into(),
            upstream_etag: String::new(),
            max_age: 60,
        };
        let value = encode(&entry, 1_700_000_000_000);
        assert_eq!(decode(&value), Some((entry, 1_700_000_000_000)));
        assert_eq!(decode(b"something else"), None);
        assert_eq!(decode(&value[..value.len() - 12]), None);
    }
}

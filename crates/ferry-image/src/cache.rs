//! The disk cache, in next's layout (`<dir>/<key>/<maxAge>.<expireAt>.<etag>.<upstreamEtag>.<ext>`,
//! so entries survive a switch between next start and Ferry), bounded by
//! `images.maximumDiskCacheSize` with least-recently-used eviction, with a bounded memory tier
//! in front so a warm hit touches no file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::OnceCell;

/// One optimized (or passed-through) image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The bytes sent.
    pub buffer: Bytes,
    /// Extension of its content type (`webp`, `jpeg`...).
    pub extension: String,
    /// `ETag` sent (base64url SHA-256 of the output, or the upstream's for pass-throughs).
    pub etag: String,
    /// The upstream's ETag (base64url), to skip re-encoding an unchanged source.
    pub upstream_etag: String,
    /// `max-age` sent, in seconds.
    pub max_age: u64,
}

/// Milliseconds since the epoch (next's `Date.now()`).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// When an entry stored now expires: `max(max_age, minimum_ttl)` seconds from now (next's
/// `expireAt`), in ms since the epoch.
pub fn expire_at(entry: &CacheEntry, minimum_ttl: u64) -> u64 {
    entry.max_age.max(minimum_ttl).saturating_mul(1000) + now_ms()
}

/// Sizes and recency of entries (on disk, in the memory tier, of remembered outputs).
#[derive(Default)]
pub(crate) struct Lru {
    entries: HashMap<String, (u64, u64)>,
    order: BTreeMap<u64, String>,
    total: u64,
    tick: u64,
}

impl Lru {
    pub(crate) fn touch(&mut self, key: &str) {
        let recent = (self.entries.len() as u64 / 4).max(1);
        if let Some((_, t)) = self.entries.get_mut(key) {
            // Already in the most recent quarter: moving it changes no eviction worth the
            // cost (a hot entry hit over and over is touched once).
            if self.tick - *t < recent {
                return;
            }
            self.order.remove(t);
            self.tick += 1;
            *t = self.tick;
            self.order.insert(self.tick, key.to_owned());
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        if let Some((size, t)) = self.entries.remove(key) {
            self.order.remove(&t);
            self.total -= size;
        }
    }

    /// Records `key`; the keys to evict so the total stays within `max`, or `None` when the
    /// entry alone is larger than `max` (next's LRU refuses it, and nothing is written).
    pub(crate) fn insert(&mut self, key: &str, size: u64, max: u64) -> Option<Vec<String>> {
        if size > max || size == 0 {
            return None;
        }
        self.remove(key);
        self.tick += 1;
        self.entries.insert(key.to_owned(), (size, self.tick));
        self.order.insert(self.tick, key.to_owned());
        self.total += size;
        let mut evicted = Vec::new();
        while self.total > max {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((s, _)) = self.entries.remove(&oldest) {
                self.total -= s;
            }
            evicted.push(oldest);
        }
        Some(evicted)
    }
}

/// The image disk cache under one directory.
pub struct DiskCache {
    dir: PathBuf,
    configured_max: Option<u64>,
    max: OnceCell<u64>,
    lru: Mutex<Lru>,
    seq: AtomicU64,
    /// Hot entries with their expiry (ms), so a warm hit reads no directory and no file.
    hot: Mutex<Hot>,
    /// Pause before each file write (tests: shows that no response waits for one).
    write_delay: Duration,
}

/// Bytes of optimized images kept in memory in front of the disk.
pub const MEMORY_TIER_BYTES: u64 = 64 * 1024 * 1024;

/// The memory tier: entries and their expiry, least recently used evicted first.
#[derive(Default)]
struct Hot {
    entries: HashMap<String, (Arc<CacheEntry>, u64)>,
    lru: Lru,
}

impl Hot {
    fn get(&mut self, key: &str) -> Option<(Arc<CacheEntry>, u64)> {
        let (entry, expire_at) = self.entries.get(key)?;
        let found = (Arc::clone(entry), *expire_at);
        self.lru.touch(key);
        Some(found)
    }

    fn put(&mut self, key: &str, entry: Arc<CacheEntry>, expire_at: u64) {
        let size = entry.buffer.len() as u64;
        let Some(evicted) = self.lru.insert(key, size, MEMORY_TIER_BYTES) else {
            self.remove(key);
            return;
        };
        for old in evicted {
            self.entries.remove(&old);
        }
        self.entries.insert(key.to_owned(), (entry, expire_at));
    }

    fn remove(&mut self, key: &str) {
        self.lru.remove(key);
        self.entries.remove(key);
    }
}

/// A file name's fields.
struct FileName {
    max_age: u64,
    expire_at: u64,
    etag: String,
    upstream_etag: String,
    extension: String,
}

fn parse_name(name: &str) -> Option<FileName> {
    let mut it = name.splitn(5, '.');
    Some(FileName {
        max_age: it.next()?.parse().ok()?,
        expire_at: it.next()?.parse().ok()?,
        etag: it.next()?.to_owned(),
        upstream_etag: it.next()?.to_owned(),
        extension: it.next()?.to_owned(),
    })
}

/// The first file of an entry's directory (next reads `files[0]`).
fn entry_file(dir: &Path) -> Option<(PathBuf, FileName)> {
    let file = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let name = file.file_name().into_string().ok()?;
    Some((file.path(), parse_name(&name)?))
}

impl DiskCache {
    /// A cache in `dir` (created on first write); `max_size` is `images.maximumDiskCacheSize`
    /// (`None`: half the free space, as next). Returns `None` when the size is 0 (disabled).
    pub fn new(dir: PathBuf, max_size: Option<u64>) -> Option<Self> {
        if max_size == Some(0) {
            return None;
        }
        Some(Self {
            dir,
            configured_max: max_size,
            max: OnceCell::new(),
            lru: Mutex::new(Lru::default()),
            seq: AtomicU64::new(0),
            hot: Mutex::new(Hot::default()),
            write_delay: Duration::ZERO,
        })
    }

    /// The same cache, pausing `delay` before each file write (for tests).
    pub fn with_write_delay(mut self, delay: Duration) -> Self {
        self.write_delay = delay;
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Byte budget, and the LRU filled from what is on disk (oldest expiry first), once.
    async fn budget(&self) -> u64 {
        *self
            .max
            .get_or_init(|| async {
                let dir = self.dir.clone();
                let configured = self.configured_max;
                let scan = tokio::task::spawn_blocking(move || {
                    let _ = std::fs::create_dir_all(&dir);
                    let max = configured.unwrap_or_else(|| {
                        rustix::fs::statvfs(&dir)
                            .map(|s| s.f_bavail.saturating_mul(s.f_frsize) / 2)
                            .unwrap_or(u64::MAX)
                    });
                    let mut found = Vec::new();
                    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                        let Ok(key) = e.file_name().into_string() else {
                            continue;
                        };
                        if key.starts_with('.') {
                            // A write that never finished; not an entry.
                            let _ = std::fs::remove_dir_all(e.path());
                            continue;
                        }
                        if let Some((path, name)) = entry_file(&e.path()) {
                            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                            found.push((name.expire_at, key, size));
                        }
                    }
                    found.sort();
                    (max, found)
                })
                .await;
                let (max, found) = scan.unwrap_or((u64::MAX, Vec::new()));
                let mut evict = Vec::new();
                if let Ok(mut lru) = self.lru.lock() {
                    for (_, key, size) in found {
                        evict.extend(lru.insert(&key, size, max).unwrap_or_default());
                    }
                }
                for key in evict {
                    let _ = tokio::fs::remove_dir_all(self.dir.join(key)).await;
                }
                max
            })
            .await
    }

    /// The entry for `key` and whether it is past its expiry; `None` on a miss or any read
    /// problem (next treats those as a miss). The same `Arc` comes back while the entry stays
    /// in the memory tier, so callers can key derived data on it.
    pub async fn get(&self, key: &str) -> Option<(Arc<CacheEntry>, bool)> {
        let hot = self.hot.lock().ok().and_then(|mut hot| hot.get(key));
        if let Some((entry, expire_at)) = hot {
            if let Ok(mut lru) = self.lru.lock() {
                lru.touch(key);
            }
            return Some((entry, now_ms() > expire_at));
        }
        self.budget().await;
        // One directory read in the local cache directory, on this thread: a cold request
        // (a miss) then costs no trip to the blocking pool and back before its transform.
        let (path, name) = entry_file(&self.dir.join(key))?;
        let buffer = tokio::fs::read(&path).await.ok()?;
        if buffer.is_empty() {
            return None;
        }
        if let Ok(mut lru) = self.lru.lock() {
            lru.touch(key);
        }
        let stale = now_ms() > name.expire_at;
        let entry = Arc::new(CacheEntry {
            buffer: Bytes::from(buffer),
            extension: name.extension,
            etag: name.etag,
            upstream_etag: name.upstream_etag,
            max_age: name.max_age,
        });
        if let Ok(mut hot) = self.hot.lock() {
            hot.put(key, Arc::clone(&entry), name.expire_at);
        }
        Some((entry, stale))
    }

    /// Stores `entry` to expire `max(entry.max_age, minimum_ttl)` seconds from now, evicting
    /// least recently used entries beyond the budget. Failures are logged, as next does.
    pub async fn set(&self, key: &str, entry: &Arc<CacheEntry>, minimum_ttl: u64) {
        self.put(key, entry, expire_at(entry, minimum_ttl)).await;
    }

    /// Puts `entry` in the memory tier only, to expire at `expire_at` (ms since the epoch): a
    /// request for `key` is a hit from now on, while [`DiskCache::put`] writes the file after
    /// the response has gone (which puts it here again, or takes it out if the write fails).
    pub fn remember(&self, key: &str, entry: &Arc<CacheEntry>, expire_at: u64) {
        if let Ok(mut hot) = self.hot.lock() {
            hot.put(key, Arc::clone(entry), expire_at);
        }
    }

    /// Stores `entry` to expire at `expire_at` (ms since the epoch), as [`DiskCache::set`].
    pub async fn put(&self, key: &str, entry: &Arc<CacheEntry>, expire_at: u64) {
        let max = self.budget().await;
        let evicted = match self.lru.lock() {
            Ok(mut lru) => lru.insert(key, entry.buffer.len() as u64, max),
            Err(_) => None,
        };
        let Some(evicted) = evicted else {
            tracing::warn!(
                "image of size {} could not be tracked by the image cache",
                entry.buffer.len()
            );
            // Not cached, as next's LRU refuses it (a `remember` before is undone).
            if let Ok(mut hot) = self.hot.lock() {
                hot.remove(key);
            }
            return;
        };
        if let Ok(mut hot) = self.hot.lock() {
            for old in &evicted {
                hot.remove(old);
            }
        }
        let name = format!(
            "{}.{}.{}.{}.{}",
            entry.max_age, expire_at, entry.etag, entry.upstream_etag, entry.extension
        );
        // Written in a side directory and renamed into place: a reader never sees half a file.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{seq}-{key}", std::process::id()));
        let target = self.dir.join(key);
        // Evictions and the write in one trip to the blocking pool (each tokio::fs call is a
        // trip of its own, and a cold request waits for this one).
        let (dir, buffer, tmp_dir) = (self.dir.clone(), entry.buffer.clone(), tmp.clone());
        let delay = self.write_delay;
        let write = tokio::task::spawn_blocking(move || {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            for old in evicted {
                let _ = std::fs::remove_dir_all(dir.join(old));
            }
            std::fs::create_dir_all(&tmp_dir)?;
            std::fs::write(tmp_dir.join(&name), &buffer)?;
            let _ = std::fs::remove_dir_all(&target);
            std::fs::rename(&tmp_dir, &target)
        });
        match write
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        {
            Ok(()) => {
                if let Ok(mut hot) = self.hot.lock() {
                    hot.put(key, Arc::clone(entry), expire_at);
                }
            }
            Err(err) => {
                tracing::error!("failed to write image to cache {key}: {err}");
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                if let Ok(mut lru) = self.lru.lock() {
                    lru.remove(key);
                }
                if let Ok(mut hot) = self.hot.lock() {
                    hot.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> Arc<CacheEntry> {
        Arc::new(CacheEntry {
            buffer: Bytes::from(vec![7u8; n]),
            extension: "webp".into(),
            etag: "abc".into(),
            upstream_etag: "def".into(),
            max_age: 60,
        })
    }

    #[tokio::test]
    async fn round_trips_in_next_layout() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let cache = DiskCache::new(tmp.path().into(), Some(1 << 20))
            .ok_or_else(|| std::io::Error::other("disabled"))?;
        assert!(cache.get("k").await.is_none());
        cache.set("k", &entry(10), 14400).await;
        let (got, stale) = cache
            .get("k")
            .await
            .ok_or_else(|| std::io::Error::other("miss"))?;
        assert_eq!(got, entry(10));
        assert!(!stale);
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("k"))?
            .flatten()
            .map(|e| e.file_name().into_string().unwrap_or_default())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with("60.") && names[0].ends_with(".abc.def.webp"));
        // An entry already past its expiry reads as stale (in a new process: no memory tier).
        std::fs::rename(
            tmp.path().join("k").join(&names[0]),
            tmp.path().join("k").join("60.1.abc.def.webp"),
        )?;
        let again = DiskCache::new(tmp.path().into(), Some(1 << 20))
            .ok_or_else(|| std::io::Error::other("disabled"))?;
        assert!(again.get("k").await.is_some_and(|(_, stale)| stale));
        Ok(())
    }

    #[tokio::test]
    async fn warm_hits_come_from_memory() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let cache = DiskCache::new(tmp.path().into(), Some(1 << 20))
            .ok_or_else(|| std::io::Error::other("disabled"))?;
        cache.set("k", &entry(10), 14400).await;
        std::fs::remove_dir_all(tmp.path().join("k"))?;
        // The file is gone: only the memory tier can answer.
        assert_eq!(cache.get("k").await.map(|(e, _)| e), Some(entry(10)));
        let cold = DiskCache::new(tmp.path().into(), Some(1 << 20))
            .ok_or_else(|| std::io::Error::other("disabled"))?;
        assert!(cold.get("k").await.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn remembered_entries_hit_until_the_write_refuses_them() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let cache = DiskCache::new(tmp.path().into(), Some(100))
            .ok_or_else(|| std::io::Error::other("disabled"))?;
        let far = now_ms() + 60_000;
        cache.remember("k", &entry(10), far);
        assert_eq!(cache.get("k").await.map(|(e, _)| e), Some(entry(10)));
        assert!(!tmp.path().join("k").exists());
        // Larger than the whole budget: next's LRU refuses it, so it is no hit either.
        cache.remember("big", &entry(200), far);
        cache.put("big", &entry(200), far).await;
        assert!(cache.get("big").await.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn evicts_least_recently_used() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let cache = DiskCache::new(tmp.path().into(), Some(250))
            .ok_or_else(|| std::io::Error::other("disabled"))?;
        cache.set("a", &entry(100), 60).await;
        cache.set("b", &entry(100), 60).await;
        assert!(cache.get("a").await.is_some()); // a is now the most recent
        cache.set("c", &entry(100), 60).await;
        assert!(cache.get("a").await.is_some());
        assert!(cache.get("b").await.is_none());
        assert!(cache.get("c").await.is_some());
        assert!(!tmp.path().join("b").exists());
        // Larger than the whole budget: not stored.
        cache.set("huge", &entry(300), 60).await;
        assert!(cache.get("huge").await.is_none());
        // A new process sees what is on disk and keeps within the budget.
        let again = DiskCache::new(tmp.path().into(), Some(150))
            .ok_or_else(|| std::io::Error::other("disabled"))?;
        let kept = ["a", "c"]
            .iter()
            .filter(|k| tmp.path().join(k).exists())
            .count();
        assert_eq!(kept, 2);
        again.set("d", &entry(100), 60).await;
        let kept = ["a", "c", "d"]
            .iter()
            .filter(|k| tmp.path().join(k).exists())
            .count();
        assert_eq!(kept, 1);
        assert!(DiskCache::new(tmp.path().into(), Some(0)).is_none());
        Ok(())
    }
}

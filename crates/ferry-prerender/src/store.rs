//! Where cache entries live. Three stores implement [`CacheStore`]:
//!
//! - [`MemoryStore`]: in-process only (also the memory tier of the other two);
//! - [`DiskStore`](crate::DiskStore): memory tier + durable files (the `ferry start` default);
//! - [`RedisStore`](crate::RedisStore): memory tier + Redis shared by every instance, kept
//!   coherent by pub/sub.
//!
//! The request path only ever calls the synchronous methods, which answer from memory and never
//! wait on the network; [`CacheStore::fetch`] looks further (disk, Redis) on a memory miss,
//! bounded by the store's timeout.
//!
//! Invalidation is recorded as *marks* (key → time), the way Next's tags manifest works: an entry
//! is stale when any of its keys (its cache tags, plus an internal per-path key) was marked at or
//! after the entry was created. Marking is O(keys), needs no scan of the entries, and maps directly
//! onto a shared hash in Redis.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::CachedEntry;

/// A boxed, sendable future (the trait is object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Storage for prerender entries and invalidation marks.
pub trait CacheStore: Send + Sync + std::fmt::Debug + 'static {
    /// The entry for `pathname` held in memory (never does I/O).
    fn get(&self, pathname: &str) -> Option<Arc<CachedEntry>>;
    /// Replaces the entry for `pathname`. Durable stores write through (a disk store does
    /// blocking file I/O here: call it off the async executor).
    fn set(&self, pathname: &str, entry: Arc<CachedEntry>);
    /// Replaces several entries (one regeneration's variants: HTML, RSC, segments, data JSON).
    /// Stores with a memory tier make them all visible before the slow writes, so no request
    /// sees one variant new and its twin old while the rest is still being written.
    fn set_many(&self, entries: Vec<(String, Arc<CachedEntry>)>) {
        for (pathname, entry) in entries {
            self.set(&pathname, entry);
        }
    }
    /// Seeding: sets the entry unless the store already holds one at least as new (seeds must not
    /// clobber newer persisted or shared entries).
    fn set_if_absent(&self, pathname: &str, entry: Arc<CachedEntry>);
    /// Removes the entry for `pathname`.
    fn delete(&self, pathname: &str);
    /// Records that `keys` were invalidated at `at`.
    fn mark(&self, keys: &[String], at: SystemTime);
    /// The latest mark among `keys`, if any.
    fn latest_mark(&self, keys: &mut dyn Iterator<Item = &str>) -> Option<SystemTime>;
    /// Records that `keys` expired at `at`: entries created before must not be served at all,
    /// not even stale (`revalidatePath`, `revalidateTag` without a profile). Also a [`mark`].
    ///
    /// [`mark`]: CacheStore::mark
    fn mark_expired(&self, keys: &[String], at: SystemTime) {
        self.mark(keys, at);
    }
    /// The latest expiry mark among `keys`, if any.
    fn latest_expired_mark(&self, keys: &mut dyn Iterator<Item = &str>) -> Option<SystemTime> {
        let _ = keys;
        None
    }
    /// The entry for `pathname`, looking behind the memory tier (disk, Redis) on a miss and
    /// keeping what it finds in memory. Bounded by the store's own timeout; `None` on any failure.
    fn fetch<'a>(&'a self, pathname: &'a str) -> BoxFuture<'a, Option<Arc<CachedEntry>>> {
        let hit = self.get(pathname);
        Box::pin(async move { hit })
    }
    /// Takes the regeneration lock `key` shared by every instance on this store, for at most
    /// `ttl` (so a crashed holder blocks nobody for longer); `false` when another instance holds
    /// it. Stores no other instance shares grant it at once (the in-process claim is enough);
    /// a shared store that cannot be reached grants it too (availability over deduplication).
    fn try_lock<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, bool> {
        let _ = (key, ttl);
        Box::pin(async { true })
    }
    /// Releases a lock taken with [`try_lock`](CacheStore::try_lock), after the writes this
    /// instance made before are visible to the others.
    fn unlock(&self, key: &str) {
        let _ = key;
    }
    /// The entry for `pathname` re-read from the shared backing store (another instance may have
    /// written a newer one this instance has not heard of yet), kept in memory if newer.
    fn refresh<'a>(&'a self, pathname: &'a str) -> BoxFuture<'a, Option<Arc<CachedEntry>>> {
        self.fetch(pathname)
    }
}

/// Recency clock shared by every memory tier (a counter, not wall time: cheap and monotonic).
static CLOCK: AtomicU64 = AtomicU64::new(1);

pub(crate) fn tick() -> u64 {
    CLOCK.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug)]
struct Slot {
    entry: Arc<CachedEntry>,
    last_used: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, Slot>,
    bytes: u64,
}

/// An in-process store, optionally bounded in bytes (least recently used entries go first).
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: RwLock<Entries>,
    marks: RwLock<HashMap<String, SystemTime>>,
    expired: RwLock<HashMap<String, SystemTime>>,
    limit: Option<u64>,
}

// A poisoned lock only means another thread panicked mid-update of a plain map: the data is still
// usable, so recover it rather than propagate the panic to every request.
macro_rules! read {
    ($l:expr) => {
        $l.read().unwrap_or_else(|p| p.into_inner())
    };
}
macro_rules! write {
    ($l:expr) => {
        $l.write().unwrap_or_else(|p| p.into_inner())
    };
}

/// Bytes an entry is accounted for in a memory tier (body, headers, tags, bookkeeping).
pub fn entry_size(entry: &CachedEntry) -> u64 {
    let headers: usize = entry
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 16)
        .sum();
    let tags: usize = entry.tags.iter().map(|t| t.len() + 24).sum();
    (entry.body.len()
        + entry.postponed.as_ref().map_or(0, |p| p.len())
        + headers
        + tags
        + entry.pathname.len() * 2
        + 256) as u64
}

impl MemoryStore {
    /// An empty, unbounded store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store holding at most about `bytes` of entries (see [`entry_size`]).
    pub fn bounded(bytes: u64) -> Self {
        Self {
            limit: Some(bytes),
            ..Self::default()
        }
    }

    /// Bytes accounted to the entries held.
    pub fn bytes(&self) -> u64 {
        read!(self.entries).bytes
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        read!(self.entries).map.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When `pathname` was last read or written here (recency clock), if held.
    pub fn last_used(&self, pathname: &str) -> Option<u64> {
        read!(self.entries)
            .map
            .get(pathname)
            .map(|s| s.last_used.load(Ordering::Relaxed))
    }

    /// Inserts unless an entry at least as new is held; returns whether it was inserted.
    pub fn insert_if_newer(&self, pathname: &str, entry: Arc<CachedEntry>) -> bool {
        {
            let entries = read!(self.entries);
            if let Some(slot) = entries.map.get(pathname)
                && slot.entry.created >= entry.created
            {
                return false;
            }
        }
        self.set(pathname, entry);
        true
    }

    /// Every mark and expiry mark (for persisting them).
    pub fn marks_snapshot(&self) -> (HashMap<String, SystemTime>, HashMap<String, SystemTime>) {
        (read!(self.marks).clone(), read!(self.expired).clone())
    }

    fn evict(&self, entries: &mut Entries, keep: &str) {
        let Some(limit) = self.limit else { return };
        if entries.bytes <= limit {
            return;
        }
        // Evict down to 90% so a full tier does not scan on every insert.
        let target = limit / 10 * 9;
        let mut order: Vec<(u64, String, u64)> = entries
            .map
            .iter()
            .filter(|(k, _)| k.as_str() != keep)
            .map(|(k, s)| {
                (
                    s.last_used.load(Ordering::Relaxed),
                    k.clone(),
                    entry_size(&s.entry),
                )
            })
            .collect();
        order.sort_unstable();
        for (_, key, size) in order {
            if entries.bytes <= target {
                break;
            }
            entries.map.remove(&key);
            entries.bytes = entries.bytes.saturating_sub(size);
        }
    }
}

fn merge_max(map: &mut HashMap<String, SystemTime>, keys: &[String], at: SystemTime) {
    for k in keys {
        let slot = map.entry(k.clone()).or_insert(at);
        if *slot < at {
            *slot = at;
        }
    }
}

impl CacheStore for MemoryStore {
    fn get(&self, pathname: &str) -> Option<Arc<CachedEntry>> {
        let entries = read!(self.entries);
        let slot = entries.map.get(pathname)?;
        slot.last_used.store(tick(), Ordering::Relaxed);
        Some(slot.entry.clone())
    }

    fn set(&self, pathname: &str, entry: Arc<CachedEntry>) {
        let size = entry_size(&entry);
        let mut entries = write!(self.entries);
        let old = entries.map.insert(
            pathname.to_owned(),
            Slot {
                entry,
                last_used: AtomicU64::new(tick()),
            },
        );
        if let Some(old) = old {
            entries.bytes = entries.bytes.saturating_sub(entry_size(&old.entry));
        }
        entries.bytes += size;
        self.evict(&mut entries, pathname);
    }

    fn set_if_absent(&self, pathname: &str, entry: Arc<CachedEntry>) {
        self.insert_if_newer(pathname, entry);
    }

    fn delete(&self, pathname: &str) {
        let mut entries = write!(self.entries);
        if let Some(old) = entries.map.remove(pathname) {
            entries.bytes = entries.bytes.saturating_sub(entry_size(&old.entry));
        }
    }

    fn mark(&self, keys: &[String], at: SystemTime) {
        merge_max(&mut write!(self.marks), keys, at);
    }

    fn latest_mark(&self, keys: &mut dyn Iterator<Item = &str>) -> Option<SystemTime> {
        let marks = read!(self.marks);
        if marks.is_empty() {
            return None;
        }
        keys.filter_map(|k| marks.get(k).copied()).max()
    }

    fn mark_expired(&self, keys: &[String], at: SystemTime) {
        self.mark(keys, at);
        merge_max(&mut write!(self.expired), keys, at);
    }

    fn latest_expired_mark(&self, keys: &mut dyn Iterator<Item = &str>) -> Option<SystemTime> {
        let expired = read!(self.expired);
        if expired.is_empty() {
            return None;
        }
        keys.filter_map(|k| expired.get(k).copied()).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CachedEntry;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn entry(path: &str, body: usize) -> Arc<CachedEntry> {
        Arc::new(CachedEntry::new(
            path,
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(vec![b'x'; body]),
            vec![],
            None,
            None,
            SystemTime::now(),
            true,
        ))
    }

    #[test]
    fn bounded_tier_evicts_least_recently_used() {
        let one = entry_size(&entry("/a", 1000));
        let store = MemoryStore::bounded(one * 3);
        store.set("/a", entry("/a", 1000));
        store.set("/b", entry("/b", 1000));
        store.set("/c", entry("/c", 1000));
        assert!(store.get("/a").is_some()); // /a is now more recent than /b
        store.set("/d", entry("/d", 1000));
        assert!(store.get("/b").is_none(), "least recently used goes first");
        assert!(store.get("/a").is_some() && store.get("/d").is_some());
        assert!(store.bytes() <= one * 3);
    }

    #[test]
    fn set_if_absent_keeps_the_newer_entry() {
        let store = MemoryStore::new();
        let newer = entry("/a", 1);
        let older = Arc::new(CachedEntry::new(
            "/a",
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from_static(b"old"),
            vec![],
            None,
            None,
            SystemTime::UNIX_EPOCH,
            true,
        ));
        store.set("/a", newer.clone());
        store.set_if_absent("/a", older);
        assert!(Arc::ptr_eq(&store.get("/a").expect("entry"), &newer));
    }
}

//! Where cache entries live. One instance uses [`MemoryStore`]; a shared store (Redis) implements
//! the same trait later, so `revalidateTag` on one instance reaches all of them.
//!
//! Invalidation is recorded as *marks* (key → time), the way Next's tags manifest works: an entry
//! is stale when any of its keys (its cache tags, plus an internal per-path key) was marked at or
//! after the entry was created. Marking is O(keys), needs no scan of the entries, and maps directly
//! onto a shared hash in Redis.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::CachedEntry;

/// Storage for prerender entries and invalidation marks.
pub trait CacheStore: Send + Sync + std::fmt::Debug + 'static {
    /// The current entry for `pathname`.
    fn get(&self, pathname: &str) -> Option<Arc<CachedEntry>>;
    /// Replaces the entry for `pathname`.
    fn set(&self, pathname: &str, entry: Arc<CachedEntry>);
    /// Sets the entry only if there is none (seeding must not clobber newer shared entries).
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
}

/// An in-process store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: RwLock<HashMap<String, Arc<CachedEntry>>>,
    marks: RwLock<HashMap<String, SystemTime>>,
    expired: RwLock<HashMap<String, SystemTime>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
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

impl CacheStore for MemoryStore {
    fn get(&self, pathname: &str) -> Option<Arc<CachedEntry>> {
        read!(self.entries).get(pathname).cloned()
    }

    fn set(&self, pathname: &str, entry: Arc<CachedEntry>) {
        write!(self.entries).insert(pathname.to_owned(), entry);
    }

    fn set_if_absent(&self, pathname: &str, entry: Arc<CachedEntry>) {
        write!(self.entries)
            .entry(pathname.to_owned())
            .or_insert(entry);
    }

    fn delete(&self, pathname: &str) {
        write!(self.entries).remove(pathname);
    }

    fn mark(&self, keys: &[String], at: SystemTime) {
        let mut marks = write!(self.marks);
        for k in keys {
            let slot = marks.entry(k.clone()).or_insert(at);
            if *slot < at {
                *slot = at;
            }
        }
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
        let mut expired = write!(self.expired);
        for k in keys {
            let slot = expired.entry(k.clone()).or_insert(at);
            if *slot < at {
                *slot = at;
            }
        }
    }

    fn latest_expired_mark(&self, keys: &mut dyn Iterator<Item = &str>) -> Option<SystemTime> {
        let expired = read!(self.expired);
        if expired.is_empty() {
            return None;
        }
        keys.filter_map(|k| expired.get(k).copied()).max()
    }
}

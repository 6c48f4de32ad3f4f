//! The data cache: entries of Next's fetch cache, `unstable_cache` and `'use cache'`, written and
//! read by the workers' cache handlers (`js/cache-handler/`) through Ferry's control endpoint.
//!
//! They live in the same [`CacheStore`](crate::CacheStore) as the prerendered pages (memory,
//! disk or Redis: whatever `ferry start` chose), under keys `data:<key>` that cannot collide with
//! a page (page pathnames start with `/`), and they are invalidated by the same marks: one
//! `revalidateTag('x')` makes both the pages and the data entries tagged `x` stale. Values are
//! opaque bytes to Ferry (the handler's serialization).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::{CachedEntry, PrerenderCache};

/// Prefix of data entries in the store (page pathnames start with `/`, so never with this).
pub const DATA_PREFIX: &str = "data:";

/// The store key of a data cache key.
pub fn data_key(key: &str) -> String {
    format!("{DATA_PREFIX}{key}")
}

/// A data cache entry to store.
#[derive(Debug, Clone)]
pub struct DataEntry {
    /// The handler's serialized value.
    pub value: Bytes,
    /// Cache tags (user tags; soft tags are passed at read time).
    pub tags: Vec<String>,
    /// When the value was produced (marks at or after it invalidate the entry).
    pub created: SystemTime,
    /// Seconds until stale, as the handler reported it (`None`: never). Informational: the
    /// handlers compute time-based staleness themselves.
    pub revalidate: Option<u64>,
    /// Seconds after which the entry must not be served at all (`None`: never).
    pub expire: Option<u64>,
}

/// A data cache entry read back, with its invalidation state.
#[derive(Debug, Clone)]
pub struct DataHit {
    /// The entry as stored.
    pub entry: DataEntry,
    /// One of its tags (or of the soft tags asked with) was revalidated after it was created:
    /// serve it while it is refreshed (`revalidateTag(tag, profile)`).
    pub stale: bool,
}

/// The latest invalidation marks of a set of tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TagMarks {
    /// Latest time any of them was marked stale (expiry marks count too).
    pub stale: Option<SystemTime>,
    /// Latest time any of them was expired (`revalidatePath`, profile-less `revalidateTag`).
    pub expired: Option<SystemTime>,
}

impl PrerenderCache {
    /// Stores a data cache entry. Durable stores write through: call it off the async executor.
    pub fn data_set(&self, key: &str, entry: DataEntry) {
        let store_key = data_key(key);
        let cached = CachedEntry::new(
            &store_key,
            StatusCode::OK,
            HeaderMap::new(),
            entry.value,
            entry.tags,
            // The stores give an entry with both a revalidate and an expire time a TTL.
            entry.revalidate.or(entry.expire.map(|_| 0)),
            entry.expire,
            entry.created,
            false,
        );
        self.store.set(&store_key, Arc::new(cached));
    }

    /// Removes a data cache entry.
    pub fn data_delete(&self, key: &str) {
        self.store.delete(&data_key(key));
    }

    /// The data cache entry for `key`, unless it is past its `expire` time or one of its tags
    /// or `soft_tags` was expired at or after it was created. Looks behind the memory tier
    /// (disk, Redis) on a miss, bounded by the store's timeout.
    pub async fn data_get(
        &self,
        key: &str,
        soft_tags: &[String],
        now: SystemTime,
    ) -> Option<DataHit> {
        let cached = self.store.fetch(&data_key(key)).await?;
        if let Some(expire) = cached.expire
            && now.duration_since(cached.created).unwrap_or(Duration::ZERO)
                >= Duration::from_secs(expire)
        {
            return None;
        }
        let keys = || cached.tags.iter().chain(soft_tags).map(String::as_str);
        if self
            .store
            .latest_expired_mark(&mut keys())
            .is_some_and(|m| m >= cached.created)
        {
            return None;
        }
        let stale = self
            .store
            .latest_mark(&mut keys())
            .is_some_and(|m| m >= cached.created);
        Some(DataHit {
            entry: DataEntry {
                value: cached.body.clone(),
                tags: cached.tags.clone(),
                created: cached.created,
                revalidate: cached.revalidate,
                expire: cached.expire,
            },
            stale,
        })
    }

    /// The latest marks among `tags` (for `'use cache'`'s `getExpiration` of soft tags).
    pub fn tag_marks(&self, tags: &[String]) -> TagMarks {
        let keys = || tags.iter().map(String::as_str);
        TagMarks {
            stale: self.store.latest_mark(&mut keys()),
            expired: self.store.latest_expired_mark(&mut keys()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use ferry_manifest::Manifest;

    fn cache() -> PrerenderCache {
        let m = serde_json::json!({
            "version": 1, "ferryVersion": "0.1.0", "nextVersion": "16.4.6", "kind": "server",
            "buildId": "B1", "config": {}, "routing": {},
        });
        let manifest =
            Manifest::from_json(&m.to_string(), std::path::Path::new("m")).expect("manifest");
        PrerenderCache::with_store(
            std::path::Path::new("/nonexistent"),
            &manifest,
            Arc::new(MemoryStore::new()),
        )
        .expect("empty manifest")
    }

    fn entry(tags: &[&str], created: SystemTime, expire: Option<u64>) -> DataEntry {
        DataEntry {
            value: Bytes::from_static(b"{\"v\":1}"),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            created,
            revalidate: Some(60),
            expire,
        }
    }

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn tags_and_soft_tags_invalidate_data_entries() {
        let c = cache();
        let t0 = SystemTime::now() - Duration::from_secs(10);
        c.data_set("k", entry(&["x"], t0, None));
        let hit = c.data_get("k", &[], SystemTime::now()).await.expect("hit");
        assert!(!hit.stale);
        assert_eq!(&hit.entry.value[..], b"{\"v\":1}");
        assert_eq!(hit.entry.tags, tags(&["x"]));

        // A stale mark on a stored tag: served, stale.
        c.invalidate_tags(&tags(&["x"]));
        assert!(
            c.data_get("k", &[], SystemTime::now())
                .await
                .expect("hit")
                .stale
        );
        // An entry created after the mark is fresh again.
        c.data_set("k", entry(&["x"], SystemTime::now(), None));
        assert!(
            !c.data_get("k", &[], SystemTime::now())
                .await
                .expect("hit")
                .stale
        );

        // An expiry mark on a soft tag passed at read time: a miss, for that reader only.
        std::thread::sleep(Duration::from_millis(2));
        c.expire_tags(&tags(&["_N_T_/page"]));
        assert!(
            c.data_get("k", &tags(&["_N_T_/page"]), SystemTime::now())
                .await
                .is_none()
        );
        assert!(c.data_get("k", &[], SystemTime::now()).await.is_some());
        // Keys never collide with pages.
        assert!(c.lookup("k", SystemTime::now()).is_none());
        assert!(c.cache_store().get("data:k").is_some());
    }

    #[tokio::test]
    async fn expire_time_and_marks() {
        let c = cache();
        let old = SystemTime::now() - Duration::from_secs(100);
        c.data_set("old", entry(&[], old, Some(50)));
        assert!(c.data_get("old", &[], SystemTime::now()).await.is_none());
        c.data_set("young", entry(&[], old, Some(500)));
        assert!(c.data_get("young", &[], SystemTime::now()).await.is_some());
        c.data_delete("young");
        assert!(c.data_get("young", &[], SystemTime::now()).await.is_none());

        assert_eq!(c.tag_marks(&tags(&["a"])), TagMarks::default());
        c.invalidate_tags(&tags(&["a"]));
        let m = c.tag_marks(&tags(&["a", "b"]));
        assert!(m.stale.is_some() && m.expired.is_none());
        c.expire_tags(&tags(&["b"]));
        let m = c.tag_marks(&tags(&["a", "b"]));
        assert!(m.expired.is_some() && m.stale >= m.expired);
    }

    #[tokio::test]
    async fn data_entries_and_marks_survive_a_disk_store_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = serde_json::json!({
            "version": 1, "ferryVersion": "0.1.0", "nextVersion": "16.4.6", "kind": "server",
            "buildId": "B1", "config": {}, "routing": {},
        });
        let manifest =
            Manifest::from_json(&m.to_string(), std::path::Path::new("m")).expect("manifest");
        let open = || {
            let store = crate::DiskStore::open(dir.path(), 1 << 20, 1 << 20).expect("open");
            PrerenderCache::with_store(dir.path(), &manifest, Arc::new(store)).expect("cache")
        };
        let created = SystemTime::now() - Duration::from_secs(1);
        {
            let c = open();
            c.data_set("k", entry(&["x"], created, None));
            c.invalidate_tags(&tags(&["x"]));
        }
        let c = open();
        let hit = c
            .data_get("k", &[], SystemTime::now())
            .await
            .expect("read from disk");
        assert_eq!(&hit.entry.value[..], b"{\"v\":1}");
        assert!(hit.stale, "the mark survived too");
    }
}

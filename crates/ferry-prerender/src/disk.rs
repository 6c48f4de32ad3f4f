//! The disk store: a bounded memory tier in front of one file per entry, written atomically
//! (temp file, fsync, rename, fsync of the directory), bounded in bytes with least-recently-used
//! eviction, and the invalidation marks in one atomically replaced JSON file. Entries and marks
//! survive a restart; a corrupt or truncated file is a logged miss, never a crash.
//!
//! Writes are synchronous (durable when `set` / `mark` return): call them off the async executor
//! (`spawn_blocking`). Memory hits never touch the disk.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use crate::CachedEntry;
use crate::codec::{self, fnv1a64, from_nanos, to_nanos};
use crate::store::{BoxFuture, CacheStore, MemoryStore};

const ENTRIES_DIR: &str = "entries";
const MARKS_FILE: &str = "marks.json";
const ENTRY_EXT: &str = "entry";

#[derive(Debug, Clone)]
struct FileInfo {
    size: u64,
    /// Recency on the memory tier's clock (disk writes and reads).
    stamp: u64,
    pathname: Option<String>,
}

#[derive(Debug, Default)]
struct Index {
    files: HashMap<String, FileInfo>,
    bytes: u64,
}

/// Memory tier + durable files under one directory.
#[derive(Debug)]
pub struct DiskStore {
    root: PathBuf,
    entries_dir: PathBuf,
    memory: MemoryStore,
    /// `memory_bytes == 0`: no entry is kept in memory, every read decodes its file (marks
    /// still live in memory). For measuring the disk path; not a production setting.
    no_memory_tier: bool,
    index: Mutex<Index>,
    max_bytes: u64,
    marks_lock: Mutex<()>,
    tmp_counter: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// File name of a pathname's entry (the pathname itself is stored inside and checked on read).
fn file_name(pathname: &str) -> String {
    format!("{:016x}.{ENTRY_EXT}", fnv1a64(pathname.as_bytes()))
}

/// The pathname stored at the head of an entry file, without reading the body.
fn read_pathname(path: &Path) -> Option<String> {
    let mut f = fs::File::open(path).ok()?;
    let mut head = [0u8; 13];
    f.read_exact(&mut head).ok()?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[5..13]);
    let len = usize::try_from(u64::from_be_bytes(len)).ok()?;
    if len > 64 * 1024 {
        return None;
    }
    let mut name = vec![0u8; len];
    f.read_exact(&mut name).ok()?;
    String::from_utf8(name).ok()
}

impl DiskStore {
    /// Opens (creating) the store in `root`: at most `max_bytes` of entry files, a memory tier of
    /// at most `memory_bytes`. Leftover temp files are removed, existing entries indexed (oldest
    /// modification first in the eviction order) and the marks loaded.
    pub fn open(root: &Path, max_bytes: u64, memory_bytes: u64) -> io::Result<Self> {
        let entries_dir = root.join(ENTRIES_DIR);
        fs::create_dir_all(&entries_dir)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(&entries_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.ends_with(".tmp") {
                // A write interrupted by a crash: never renamed, never valid.
                let _ = fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(ENTRY_EXT) {
                continue;
            }
            let meta = entry.metadata()?;
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((mtime, name, meta.len(), read_pathname(&path)));
        }
        found.sort();
        let mut index = Index::default();
        for (_, name, size, pathname) in found {
            index.bytes += size;
            index.files.insert(
                name,
                FileInfo {
                    size,
                    stamp: crate::store::tick(),
                    pathname,
                },
            );
        }
        let store = DiskStore {
            root: root.to_owned(),
            entries_dir,
            memory: MemoryStore::bounded(memory_bytes),
            no_memory_tier: memory_bytes == 0,
            index: Mutex::new(index),
            max_bytes,
            marks_lock: Mutex::new(()),
            tmp_counter: AtomicU64::new(0),
        };
        store.load_marks();
        store.evict(None);
        Ok(store)
    }

    /// Bytes of entry files on disk.
    pub fn disk_bytes(&self) -> u64 {
        lock(&self.index).bytes
    }

    /// The directory holding the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn write_atomic(&self, dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, dir.join(name))?;
            // The rename is durable once the directory is synced.
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads and decodes the file of `pathname`; a bad file is logged, removed and a miss.
    fn read_entry(&self, pathname: &str) -> Option<CachedEntry> {
        let name = file_name(pathname);
        let path = self.entries_dir.join(&name);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("cache entry {} unreadable: {e}", path.display());
                return None;
            }
        };
        match codec::decode(&Bytes::from(data)) {
            Ok(entry) if entry.pathname == pathname => {
                if let Some(info) = lock(&self.index).files.get_mut(&name) {
                    info.stamp = crate::store::tick();
                }
                Some(entry)
            }
            // A hash collision (another pathname): not ours, leave it.
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(
                    "cache entry {} for {pathname} is invalid ({e}): treated as a miss and removed",
                    path.display()
                );
                self.remove_file(&name);
                None
            }
        }
    }

    fn remove_file(&self, name: &str) {
        let _ = fs::remove_file(self.entries_dir.join(name));
        let mut index = lock(&self.index);
        if let Some(info) = index.files.remove(name) {
            index.bytes = index.bytes.saturating_sub(info.size);
        }
    }

    fn persist(&self, pathname: &str, entry: &CachedEntry) {
        let data = codec::encode(entry);
        if data.len() as u64 > self.max_bytes {
            tracing::debug!("cache entry {pathname} larger than the disk cache: memory only");
            return;
        }
        let name = file_name(pathname);
        if let Err(e) = self.write_atomic(&self.entries_dir, &name, &data) {
            tracing::warn!("cannot write cache entry {pathname}: {e}");
            return;
        }
        {
            let mut index = lock(&self.index);
            let info = FileInfo {
                size: data.len() as u64,
                stamp: crate::store::tick(),
                pathname: Some(pathname.to_owned()),
            };
            if let Some(old) = index.files.insert(name.clone(), info) {
                index.bytes = index.bytes.saturating_sub(old.size);
            }
            index.bytes += data.len() as u64;
        }
        self.evict(Some(&name));
    }

    /// Deletes least recently used files (recency: the later of the file's own and its memory
    /// tier copy's) until the store fits, keeping `keep`.
    fn evict(&self, keep: Option<&str>) {
        let victims: Vec<String> = {
            let index = lock(&self.index);
            if index.bytes <= self.max_bytes {
                return;
            }
            let target = self.max_bytes / 10 * 9;
            let mut order: Vec<(u64, &String, u64)> = index
                .files
                .iter()
                .filter(|(name, _)| Some(name.as_str()) != keep)
                .map(|(name, info)| {
                    let hot = info
                        .pathname
                        .as_deref()
                        .and_then(|p| self.memory.last_used(p))
                        .unwrap_or(0);
                    (info.stamp.max(hot), name, info.size)
                })
                .collect();
            order.sort_unstable();
            let mut bytes = index.bytes;
            let mut victims = Vec::new();
            for (_, name, size) in order {
                if bytes <= target {
                    break;
                }
                bytes = bytes.saturating_sub(size);
                victims.push(name.clone());
            }
            victims
        };
        for name in victims {
            self.remove_file(&name);
        }
    }

    fn load_marks(&self) {
        let path = self.root.join(MARKS_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!("cannot read {}: {e}", path.display());
                return;
            }
        };
        let json: serde_json::Value = match serde_json::from_slice(&text) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!("{} is invalid ({e}): marks ignored", path.display());
                return;
            }
        };
        let each = |field: &str, f: &dyn Fn(&[String], SystemTime)| {
            if let Some(map) = json.get(field).and_then(serde_json::Value::as_object) {
                for (k, v) in map {
                    if let Some(n) = v.as_u64() {
                        f(std::slice::from_ref(k), from_nanos(n));
                    }
                }
            }
        };
        each("marks", &|k, at| self.memory.mark(k, at));
        each("expired", &|k, at| self.memory.mark_expired(k, at));
    }

    fn persist_marks(&self) {
        let _guard = lock(&self.marks_lock);
        let (marks, expired) = self.memory.marks_snapshot();
        let to_json =
            |m: HashMap<String, SystemTime>| -> serde_json::Map<String, serde_json::Value> {
                m.into_iter()
                    .map(|(k, v)| (k, serde_json::Value::from(to_nanos(v))))
                    .collect()
            };
        let doc = serde_json::json!({ "marks": to_json(marks), "expired": to_json(expired) });
        if let Err(e) = self.write_atomic(&self.root, MARKS_FILE, doc.to_string().as_bytes()) {
            tracing::warn!("cannot write cache marks: {e}");
        }
    }
}

impl CacheStore for DiskStore {
    fn get(&self, pathname: &str) -> Option<Arc<CachedEntry>> {
        self.memory.get(pathname)
    }

    fn set(&self, pathname: &str, entry: Arc<CachedEntry>) {
        if !self.no_memory_tier {
            self.memory.set(pathname, entry.clone());
        }
        self.persist(pathname, &entry);
    }

    fn set_many(&self, entries: Vec<(String, Arc<CachedEntry>)>) {
        // Memory first, for all: the fsynced file writes take a few ms each.
        if !self.no_memory_tier {
            for (pathname, entry) in &entries {
                self.memory.set(pathname, entry.clone());
            }
        }
        for (pathname, entry) in &entries {
            self.persist(pathname, entry);
        }
    }

    fn set_if_absent(&self, pathname: &str, entry: Arc<CachedEntry>) {
        if self.no_memory_tier {
            // Seeds go to disk: that is where every read looks.
            if self
                .read_entry(pathname)
                .is_none_or(|disk| disk.created < entry.created)
            {
                self.persist(pathname, &entry);
            }
            return;
        }
        if self
            .memory
            .get(pathname)
            .is_some_and(|e| e.created >= entry.created)
        {
            return;
        }
        // A persisted entry newer than the seed (a regeneration before a restart) wins.
        if let Some(disk) = self.read_entry(pathname)
            && disk.created >= entry.created
        {
            self.memory.insert_if_newer(pathname, Arc::new(disk));
            return;
        }
        self.memory.insert_if_newer(pathname, entry);
    }

    fn delete(&self, pathname: &str) {
        self.memory.delete(pathname);
        self.remove_file(&file_name(pathname));
    }

    fn mark(&self, keys: &[String], at: SystemTime) {
        self.memory.mark(keys, at);
        self.persist_marks();
    }

    fn latest_mark(&self, keys: &mut dyn Iterator<Item = &str>) -> Option<SystemTime> {
        self.memory.latest_mark(keys)
    }

    fn mark_expired(&self, keys: &[String], at: SystemTime) {
        self.memory.mark_expired(keys, at);
        self.persist_marks();
    }

    fn latest_expired_mark(&self, keys: &mut dyn Iterator<Item = &str>) -> Option<SystemTime> {
        self.memory.latest_expired_mark(keys)
    }

    fn fetch<'a>(&'a self, pathname: &'a str) -> BoxFuture<'a, Option<Arc<CachedEntry>>> {
        Box::pin(async move {
            if let Some(hit) = self.memory.get(pathname) {
                return Some(hit);
            }
            let entry = match tokio::runtime::Handle::try_current() {
                // Tell the executor this thread blocks: the read may take a while on a slow disk.
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(|| self.read_entry(pathname))
                }
                _ => self.read_entry(pathname),
            }?;
            let entry = Arc::new(entry);
            if self.no_memory_tier {
                return Some(entry);
            }
            self.memory.insert_if_newer(pathname, entry.clone());
            self.memory.get(pathname).or(Some(entry))
        })
    }
}

//! The disk store: a bounded memory tier in front of one file per entry, written atomically
//! (temp file, fsync, rename, fsync of the directory), bounded in bytes with least-recently-used
//! eviction, and the invalidation marks in one atomically replaced JSON file. Entries and marks
//! survive a restart; a corrupt or truncated file is a logged miss, never a crash.
//!
//! Writes are synchronous (durable when `set` / `mark` return): call them off the async executor
//! (`spawn_blocking`). Memory hits never touch the disk. A read behind the memory tier
//! ([`CacheStore::fetch`]) is done on the executor when the page cache holds the whole file, as
//! nginx reads page-cache-hot files in its event loop (`preadv2` with `RWF_NOWAIT` says so without
//! waiting): a thread hand-off would cost more than the read. Only a read that would wait for the
//! disk is moved off the executor (`block_in_place`).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use crate::CachedEntry;
use crate::codec::{self, fnv1a64, from_nanos, to_nanos};
use crate::store::{BoxFuture, CacheStore, MemoryStore};

const ENTRIES_DIR: &str = "entries";
const MARKS_FILE: &str = "marks.json";
const ENTRY_EXT: &str = "entry";
/// Larger entry files are read off the executor even when the page cache holds them: copying
/// and checking them takes longer than the thread hand-off it would save.
const NOWAIT_MAX_BYTES: u64 = 1024 * 1024;

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
    /// Whether reads try `RWF_NOWAIT` first (off once the kernel or file system refuses it).
    nowait: AtomicBool,
}

/// A read that would have waited for the disk (the page cache does not hold the whole file).
#[derive(Debug)]
struct WouldBlock;

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
            nowait: AtomicBool::new(cfg!(target_os = "linux")),
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
        self.read_entry_with(pathname, false).unwrap_or(None)
    }

    /// [`read_entry`](Self::read_entry); with `only_if_cached`, `Err(WouldBlock)` instead of
    /// waiting for the disk (nothing is logged or removed then: the caller reads again).
    fn read_entry_with(
        &self,
        pathname: &str,
        only_if_cached: bool,
    ) -> Result<Option<CachedEntry>, WouldBlock> {
        let name = file_name(pathname);
        let path = self.entries_dir.join(&name);
        let read = if only_if_cached {
            self.read_if_cached(&path)
        } else {
            fs::read(&path).map(Some)
        };
        let data = match read {
            Ok(Some(d)) => d,
            Ok(None) => return Err(WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                tracing::warn!("cache entry {} unreadable: {e}", path.display());
                return Ok(None);
            }
        };
        Ok(match codec::decode(&Bytes::from(data)) {
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
        })
    }

    /// The whole file at `path` if the page cache holds it, read without waiting for the disk;
    /// `Ok(None)` when (part of) it would have to come from the disk, or the kernel cannot say.
    fn read_if_cached(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        if !self.nowait.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        if len > NOWAIT_MAX_BYTES {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| io::Error::other("cache entry too large"))?;
        // Exactly the stat'ed size, no read to EOF: entry files are replaced by renames, never
        // rewritten in place, and one that changed anyway fails its checksum.
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match read_nowait(&file, &mut buf[done..], done as u64) {
                Ok(0) => {
                    buf.truncate(done);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    // An old kernel or a file system without RWF_NOWAIT: always off the executor.
                    tracing::debug!(
                        "RWF_NOWAIT reads unsupported ({e}): disk reads go off the executor"
                    );
                    self.nowait.store(false, Ordering::Relaxed);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(buf))
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

/// One `preadv2(RWF_NOWAIT)`: `WouldBlock` when the data is not in the page cache,
/// `Unsupported` when the kernel or file system cannot tell.
#[cfg(target_os = "linux")]
fn read_nowait(file: &fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use rustix::io::{Errno, ReadWriteFlags, preadv2};
    match preadv2(
        file,
        &mut [io::IoSliceMut::new(buf)],
        offset,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(n) => Ok(n),
        Err(Errno::AGAIN) => Err(io::ErrorKind::WouldBlock.into()),
        Err(e @ (Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL)) => {
            Err(io::Error::new(io::ErrorKind::Unsupported, e))
        }
        Err(e) => Err(e.into()),
    }
}

/// No `RWF_NOWAIT` outside Linux: every read behind the memory tier goes off the executor.
#[cfg(not(target_os = "linux"))]
fn read_nowait(_file: &fs::File, _buf: &mut [u8], _offset: u64) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
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
            let entry = match self.read_entry_with(pathname, true) {
                Ok(found) => found,
                Err(WouldBlock) => match tokio::runtime::Handle::try_current() {
                    // Tell the executor this thread blocks: the read waits for the disk.
                    Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                        tokio::task::block_in_place(|| self.read_entry(pathname))
                    }
                    _ => self.read_entry(pathname),
                },
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};

    fn entry(pathname: &str, body: &str) -> Arc<CachedEntry> {
        Arc::new(CachedEntry::new(
            pathname,
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(body.to_owned()),
            vec!["t".into()],
            Some(5),
            None,
            SystemTime::now(),
            true,
        ))
    }

    fn body(e: &CachedEntry) -> &str {
        std::str::from_utf8(&e.body).unwrap_or("<not utf-8>")
    }

    /// A file just written is in the page cache: read on the executor, no hand-off.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_page_cache_hot_file_is_read_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DiskStore::open(dir.path(), 1 << 20, 0).expect("open");
        store.set("/p", entry("/p", "hot"));
        let path = store.entries_dir.join(file_name("/p"));
        let data = store
            .read_if_cached(&path)
            .expect("read")
            .expect("hot file read without blocking");
        assert_eq!(data, fs::read(&path).expect("read"));
        let e = store.read_entry_with("/p", true).expect("not blocking");
        assert_eq!(e.as_ref().map(body), Some("hot"));
        assert!(store.nowait.load(Ordering::Relaxed));
    }

    /// A file the page cache dropped would block: the executor is not made to wait, and
    /// `fetch` still answers, from a read moved off the executor.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_cold_file_is_read_off_the_executor() {
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DiskStore::open(dir.path(), 1 << 20, 0).expect("open");
        store.set("/p", entry("/p", &"cold ".repeat(20_000)));
        let path = store.entries_dir.join(file_name("/p"));
        // The file is fsynced (clean): DONTNEED drops its pages from the page cache.
        let file = fs::File::open(&path).expect("open");
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
        // `f_type`'s integer type differs between architectures.
        #[allow(clippy::useless_conversion)]
        let on_tmpfs = rustix::fs::statfs(dir.path())
            .map(|s| i64::from(s.f_type) == TMPFS_MAGIC)
            .unwrap_or(true);
        if !on_tmpfs {
            assert!(
                matches!(store.read_entry_with("/p", true), Err(WouldBlock)),
                "a dropped file must not be read on the executor"
            );
        }
        let e = store.fetch("/p").await.expect("fetched off the executor");
        assert_eq!(e.body.len(), 100_000);
        // Read once, it is hot again.
        assert!(store.read_entry_with("/p", true).is_ok_and(|e| e.is_some()));
    }

    /// A large entry is read off the executor even when it is hot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_large_file_is_read_off_the_executor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DiskStore::open(dir.path(), 8 << 20, 0).expect("open");
        let big = "x".repeat(usize::try_from(NOWAIT_MAX_BYTES).expect("usize") + 1);
        store.set("/big", entry("/big", &big));
        assert!(matches!(
            store.read_entry_with("/big", true),
            Err(WouldBlock)
        ));
        let e = store.fetch("/big").await.expect("read off the executor");
        assert_eq!(e.body.len(), big.len());
    }

    /// Without a memory tier every hit reads the file: a truncated or corrupt one is a logged
    /// miss, removed, never a panic; a good one keeps answering.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn bad_files_read_on_the_executor_are_misses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DiskStore::open(dir.path(), 1 << 20, 0).expect("open");
        for p in ["/good", "/truncated", "/flipped", "/empty", "/grown"] {
            store.set(p, entry(p, &format!("body of {p}")));
        }
        let file = |p: &str| store.entries_dir.join(file_name(p));
        let data = fs::read(file("/truncated")).expect("read");
        fs::write(file("/truncated"), &data[..data.len() - 3]).expect("truncate");
        let mut data = fs::read(file("/flipped")).expect("read");
        let mid = data.len() / 2;
        data[mid] ^= 0x01;
        fs::write(file("/flipped"), data).expect("flip");
        fs::write(file("/empty"), b"").expect("empty");
        let mut data = fs::read(file("/grown")).expect("read");
        data.extend_from_slice(b"tail");
        fs::write(file("/grown"), data).expect("grow");
        let before = store.disk_bytes();

        for _ in 0..3 {
            let good = store.fetch("/good").await.expect("good entry");
            assert_eq!(body(&good), "body of /good");
        }
        for p in ["/truncated", "/flipped", "/empty", "/grown"] {
            assert!(store.fetch(p).await.is_none(), "{p} must be a miss");
            assert!(!file(p).exists(), "{p} must be removed");
            assert!(store.fetch(p).await.is_none(), "{p} stays a miss");
        }
        assert!(store.disk_bytes() < before);
        assert!(store.fetch("/good").await.is_some());
    }
}

//! The disk and Redis stores against real things: real files in a temp dir (restarts are a new
//! store on the same directory), and a real `redis-server` started on a loopback port of
//! 41600-41699, killed and restarted for the fault tests.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ferry_prerender::{CacheStore, CachedEntry, DiskStore, RedisOptions, RedisStore, Rendered};
use http::{HeaderMap, HeaderValue, StatusCode};

const REDIS_SERVER: &str = "/usr/bin/redis-server";

fn entry(path: &str, body: &str, created: SystemTime) -> Arc<CachedEntry> {
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        "cache-control",
        HeaderValue::from_static("s-maxage=5, stale-while-revalidate=100"),
    );
    h.insert("x-next-cache-tags", HeaderValue::from_static("t1,_N_T_/p"));
    let r = Rendered::from_response(StatusCode::OK, h, Bytes::from(body.to_owned()));
    Arc::new(CachedEntry::from_rendered(path, r, created, true))
}

fn body(store: &dyn CacheStore, path: &str) -> Option<String> {
    store
        .get(path)
        .map(|e| String::from_utf8_lossy(&e.body).into_owned())
}

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Disk
// ---------------------------------------------------------------------------------------------

#[test]
fn disk_entries_and_marks_survive_a_restart_and_beat_older_seeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = SystemTime::now();
    {
        let store = DiskStore::open(dir.path(), 1 << 20, 1 << 20).expect("open");
        store.set("/isr", entry("/isr", "regenerated", t));
        store.mark(&keys(&["tag-a"]), t);
        store.mark_expired(&keys(&["tag-b"]), t);
    }
    let store = DiskStore::open(dir.path(), 1 << 20, 1 << 20).expect("reopen");
    // Nothing in memory after a restart: the seed (older) is offered, the disk entry wins.
    assert_eq!(body(&store, "/isr"), None);
    store.set_if_absent("/isr", entry("/isr", "seed", t - Duration::from_secs(60)));
    assert_eq!(body(&store, "/isr").as_deref(), Some("regenerated"));
    let e = store.get("/isr").expect("entry");
    assert_eq!(e.tags, keys(&["t1", "_N_T_/p"]));
    assert_eq!((e.revalidate, e.expire), (Some(5), Some(105)));
    assert_eq!(e.created, t);
    assert_eq!(store.latest_mark(&mut ["tag-a", "x"].into_iter()), Some(t));
    assert_eq!(
        store.latest_expired_mark(&mut ["tag-b"].into_iter()),
        Some(t)
    );
    assert_eq!(store.latest_expired_mark(&mut ["tag-a"].into_iter()), None);
    // A seed newer than what is on disk (a fresh build into the same namespace) wins.
    store.set_if_absent("/other", entry("/other", "seed-new", t));
    assert_eq!(body(&store, "/other").as_deref(), Some("seed-new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_corrupt_or_truncated_entries_are_misses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = SystemTime::now();
    {
        let store = DiskStore::open(dir.path(), 1 << 20, 1 << 20).expect("open");
        store.set("/a", entry("/a", "aaaa", t));
        store.set("/b", entry("/b", "bbbb", t));
    }
    let files: Vec<_> = std::fs::read_dir(dir.path().join("entries"))
        .expect("entries dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    // Truncate one, flip a byte in the other; garbage marks file; a leftover temp file.
    let data = std::fs::read(&files[0]).expect("read");
    std::fs::write(&files[0], &data[..data.len() / 2]).expect("truncate");
    let mut data = std::fs::read(&files[1]).expect("read");
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&files[1], data).expect("corrupt");
    std::fs::write(dir.path().join("marks.json"), b"{not json").expect("marks");
    std::fs::write(dir.path().join("entries/.x.1.1.tmp"), b"half").expect("tmp");

    let store = DiskStore::open(dir.path(), 1 << 20, 1 << 20).expect("reopen despite garbage");
    assert!(
        !dir.path().join("entries/.x.1.1.tmp").exists(),
        "temp file left"
    );
    assert!(store.fetch("/a").await.is_none());
    assert!(store.fetch("/b").await.is_none());
    // A seed is used instead, and the bad files are gone.
    store.set_if_absent("/a", entry("/a", "seed", t - Duration::from_secs(1)));
    assert_eq!(body(&store, "/a").as_deref(), Some("seed"));
    assert_eq!(
        std::fs::read_dir(dir.path().join("entries"))
            .expect("dir")
            .count(),
        0
    );
    assert_eq!(store.disk_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_is_bounded_with_lru_eviction_and_memory_misses_read_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = SystemTime::now();
    let big = "x".repeat(10_000);
    let one = ferry_prerender::codec::encode(&entry("/p0", &big, t)).len() as u64;
    // Room for 4 files on disk, 2 entries in memory.
    let mem = ferry_prerender::store::entry_size(&entry("/p0", &big, t)) * 2;
    let store = DiskStore::open(dir.path(), one * 4 + 10, mem).expect("open");
    for i in 0..4 {
        let p = format!("/p{i}");
        store.set(&p, entry(&p, &big, t));
    }
    // /p0 is used (a disk read, as it left the memory tier), so /p1 is the least recent.
    assert!(store.get("/p0").is_none(), "memory tier holds only two");
    assert!(
        store.fetch("/p0").await.is_some(),
        "a memory miss reads the disk"
    );
    store.set("/p4", entry("/p4", &big, t));
    assert!(
        store.disk_bytes() <= one * 4 + 10,
        "{} bytes",
        store.disk_bytes()
    );
    assert!(
        store.fetch("/p1").await.is_none(),
        "least recently used evicted"
    );
    for p in ["/p0", "/p4"] {
        assert!(store.fetch(p).await.is_some(), "{p} kept");
    }
    // The bound holds across a restart, and entries larger than the whole cache stay in memory.
    drop(store);
    let store = DiskStore::open(dir.path(), one * 2 + 10, mem).expect("reopen smaller");
    assert!(store.disk_bytes() <= one * 2 + 10);
    let huge = "y".repeat(100_000);
    store.set("/huge", entry("/huge", &huge, t));
    assert!(store.get("/huge").is_some());
    assert!(store.disk_bytes() <= one * 2 + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_without_a_memory_tier_reads_every_hit_from_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = SystemTime::now();
    let store = DiskStore::open(dir.path(), 1 << 20, 0).expect("open");
    // A seed is written to disk (nothing else would hold it).
    store.set_if_absent("/seed", entry("/seed", "seed", t));
    store.set("/p", entry("/p", "one", t));
    for p in ["/seed", "/p"] {
        assert!(store.get(p).is_none(), "{p}: no memory tier");
    }
    let read = |p: &'static str| {
        let store = &store;
        async move {
            store
                .fetch(p)
                .await
                .map(|e| String::from_utf8_lossy(&e.body).into_owned())
        }
    };
    assert_eq!(read("/seed").await.as_deref(), Some("seed"));
    assert_eq!(read("/p").await.as_deref(), Some("one"));
    // A newer write is what the next read sees; an older seed does not clobber it.
    store.set("/p", entry("/p", "two", t + Duration::from_secs(1)));
    store.set_if_absent("/p", entry("/p", "old seed", t));
    assert_eq!(read("/p").await.as_deref(), Some("two"));
    assert!(store.get("/p").is_none(), "still nothing in memory");
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

static NEXT_PORT: AtomicU16 = AtomicU16::new(41600);

/// A port of 41600-41699 free right now.
fn redis_port() -> u16 {
    loop {
        let p = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        assert!(p < 41700, "no free port left in 41600-41699");
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A redis-server on 127.0.0.1:port, killed on drop.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start(port: u16) -> Redis {
        assert!(
            Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} is missing: the Redis store tests need a real redis-server \
             (apt-get install redis-server; scripts/test.sh installs it)"
        );
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server");
        let r = Redis {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn redis_store(url: &str, ns: &str) -> RedisStore {
    let mut o = RedisOptions::new(url, ns);
    o.memory_bytes = 1 << 20;
    RedisStore::connect(o).await.expect("connect")
}

/// Polls `f` every 5 ms until it holds, up to `limit`; returns how long it took.
async fn within(limit: Duration, what: &str, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_entries_and_marks_reach_other_instances_and_namespaces_stay_apart() {
    let redis = Redis::start(redis_port());
    let a = redis_store(&redis.url(), "build-1").await;
    let b = redis_store(&redis.url(), "build-1").await;
    let other = redis_store(&redis.url(), "build-2").await;
    assert!(a.is_connected() && b.is_connected());
    let t = SystemTime::now();

    // B's seed is older than A's regeneration: B serves A's entry once it arrives.
    b.set_if_absent("/isr", entry("/isr", "seed", t - Duration::from_secs(10)));
    a.set("/isr", entry("/isr", "from A", t));
    let took = within(Duration::from_secs(1), "entry A -> B", || {
        body(&b, "/isr").as_deref() == Some("from A")
    })
    .await;
    eprintln!("entry propagation: {took:?}");
    a.mark_expired(&keys(&["_N_T_/isr"]), t + Duration::from_secs(1));
    within(Duration::from_secs(1), "expiry mark A -> B", || {
        b.latest_expired_mark(&mut ["_N_T_/isr"].into_iter()) == Some(t + Duration::from_secs(1))
    })
    .await;
    // An older mark never lowers a newer one.
    b.mark(&keys(&["_N_T_/isr"]), t);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        a.latest_mark(&mut ["_N_T_/isr"].into_iter()),
        Some(t + Duration::from_secs(1))
    );
    // Another deployment sees none of it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(other.fetch("/isr").await.is_none());
    assert_eq!(other.latest_mark(&mut ["_N_T_/isr"].into_iter()), None);

    // A new instance starts with what is shared (sync at connect), not its seed.
    let c = redis_store(&redis.url(), "build-1").await;
    c.set_if_absent("/isr", entry("/isr", "seed", t - Duration::from_secs(10)));
    assert_eq!(body(&c, "/isr").as_deref(), Some("from A"));
    assert_eq!(
        c.latest_expired_mark(&mut ["_N_T_/isr"].into_iter()),
        Some(t + Duration::from_secs(1))
    );
    // Deletes propagate too; a memory miss fetches from Redis.
    a.set("/x", entry("/x", "x", t));
    // A's write leaves through its own queue: C deletes once it is in Redis (seen by B), else
    // the write could land after the delete (two instances' writes are not ordered).
    within(Duration::from_secs(1), "entry /x A -> B", || {
        b.get("/x").is_some()
    })
    .await;
    c.delete("/x");
    within(Duration::from_secs(1), "delete C -> A", || {
        a.get("/x").is_none()
    })
    .await;
    within(Duration::from_secs(1), "delete C -> B", || {
        b.get("/x").is_none()
    })
    .await;
    assert!(b.fetch("/x").await.is_none());
    a.set("/y", entry("/y", "y", t));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A memory tier with room for one entry: the others are fetched from Redis on demand.
    let mut o = RedisOptions::new(redis.url(), "build-1");
    o.memory_bytes = ferry_prerender::store::entry_size(&entry("/y", "y", t)) * 3 / 2;
    let small = RedisStore::connect(o).await.expect("connect");
    let missing: Vec<&str> = ["/isr", "/y"]
        .into_iter()
        .filter(|p| small.get(p).is_none())
        .collect();
    assert!(!missing.is_empty(), "memory tier not bounded");
    for p in missing {
        let e = small.fetch(p).await.expect("fetched from Redis");
        assert_eq!(e.pathname, p);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_never_blocks_and_recovers_with_replayed_writes() {
    let port = redis_port();
    let mut redis = Redis::start(port);
    let a = redis_store(&redis.url(), "ns").await;
    let b = redis_store(&redis.url(), "ns").await;
    let t = SystemTime::now();
    a.set("/p", entry("/p", "v1", t));
    within(Duration::from_secs(1), "v1 at B", || {
        body(&b, "/p").as_deref() == Some("v1")
    })
    .await;

    redis.kill();
    // Every call stays fast while Redis is gone, and memory keeps answering.
    for i in 0..20u32 {
        let started = Instant::now();
        assert_eq!(body(&b, "/p").as_deref(), Some("v1"));
        assert!(b.fetch("/missing").await.is_none());
        a.set(
            "/p",
            entry("/p", "v2", t + Duration::from_millis(u64::from(i) + 1)),
        );
        a.mark_expired(&keys(&["tag"]), t + Duration::from_secs(5));
        let took = started.elapsed();
        assert!(took < Duration::from_millis(250), "call {i} took {took:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    within(Duration::from_secs(5), "outage noticed", || {
        !a.is_connected() && !b.is_connected()
    })
    .await;

    // Redis returns (empty: no persistence): both reconnect, A replays what it wrote meanwhile,
    // B resubscribes and sees it.
    let _redis = Redis::start(port);
    let took = within(Duration::from_secs(5), "v2 at B after recovery", || {
        body(&b, "/p").as_deref() == Some("v2")
            && b.latest_expired_mark(&mut ["tag"].into_iter()) == Some(t + Duration::from_secs(5))
    })
    .await;
    eprintln!("recovered in {took:?}");
    assert!(a.is_connected() && b.is_connected());
    // And the live path works again.
    b.set("/q", entry("/q", "after", SystemTime::now()));
    within(Duration::from_secs(1), "B -> A after recovery", || {
        body(&a, "/q").as_deref() == Some("after")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_at_start_serves_from_memory_then_connects() {
    let port = redis_port();
    let started = Instant::now();
    let a = redis_store(&format!("redis://127.0.0.1:{port}/"), "ns").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "start waited {:?} for a refused Redis",
        started.elapsed()
    );
    assert!(!a.is_connected());
    let t = SystemTime::now();
    a.set_if_absent("/p", entry("/p", "seed", t));
    a.set("/p", entry("/p", "regen", t + Duration::from_secs(1)));
    assert_eq!(body(&a, "/p").as_deref(), Some("regen"));
    let redis = Redis::start(port);
    within(Duration::from_secs(5), "connects later", || {
        a.is_connected()
    })
    .await;
    let b = redis_store(&redis.url(), "ns").await;
    within(
        Duration::from_secs(2),
        "write made offline reaches B",
        || body(&b, "/p").as_deref() == Some("regen"),
    )
    .await;
}

//! Cost of one disk-store hit without a memory tier (`--cache-memory-size 0`), the path
//! `bench/isr.sh`'s "disk only" column measures, and of its parts. A measurement, not a test:
//! run it pinned to one core as the bench pins the server:
//!
//! ```text
//! taskset -c 0 cargo bench -p ferry-prerender --bench disk_hit
//! ```

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use ferry_prerender::{CacheStore, CachedEntry, DiskStore, Rendered, codec};
use http::{HeaderMap, HeaderValue, StatusCode};

/// An entry shaped like the showcase's `/isr` HTML (6.6 KB body, next start's headers).
fn isr_entry() -> Arc<CachedEntry> {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-type", "text/html; charset=utf-8"),
        (
            "vary",
            "rsc, next-router-state-tree, next-router-prefetch, next-router-segment-prefetch",
        ),
        ("x-nextjs-stale-time", "300"),
        ("x-nextjs-prerender", "1"),
        (
            "x-next-cache-tags",
            "_N_T_/layout,_N_T_/isr/layout,_N_T_/isr/page,_N_T_/isr",
        ),
        (
            "cache-control",
            "s-maxage=5, stale-while-revalidate=31535995",
        ),
    ] {
        h.append(k, HeaderValue::from_static(v));
    }
    let body: Vec<u8> = (0..6605u32)
        .map(|i| b"<div>isr</div>\n"[i as usize % 15])
        .collect();
    let r = Rendered::from_response(StatusCode::OK, h, Bytes::from(body));
    Arc::new(CachedEntry::from_rendered(
        "/isr",
        r,
        SystemTime::now(),
        true,
    ))
}

fn per_op(label: &str, n: u32, f: impl FnMut()) -> f64 {
    let mut f = f;
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{label:<48} {us:8.2} µs");
    us
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(DiskStore::open(dir.path(), 1 << 30, 0).expect("open"));
    let entry = isr_entry();
    store.set("/isr", entry.clone());
    let file = std::fs::read_dir(dir.path().join("entries"))
        .expect("entries dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "entry"))
        .expect("entry file");
    let encoded = Bytes::from(std::fs::read(&file).expect("read"));
    println!("entry file: {} bytes", encoded.len());
    let n = 20_000;

    per_op("std::fs::read of the entry file", n, || {
        assert!(!std::fs::read(&file).expect("read").is_empty());
    });
    per_op("codec::decode (checksum + fields)", n, || {
        let e = codec::decode(&encoded).expect("decode");
        assert_eq!(e.body.len(), entry.body.len());
    });
    per_op("codec::encode", n, || {
        assert!(!codec::encode(&entry).is_empty());
    });

    // As `ferry start` runs it under `taskset -c 0`: a multi-threaded runtime with one worker,
    // the hit running in a spawned task (on the worker, as a request does).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let s = store.clone();
    let us = rt
        .block_on(rt.spawn(async move {
            let iters = 20_000u32;
            for _ in 0..iters / 10 {
                assert!(s.fetch("/isr").await.is_some());
            }
            let t = Instant::now();
            for _ in 0..iters {
                let e = s.fetch("/isr").await.expect("hit");
                assert_eq!(e.body.len(), 6605);
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
        }))
        .expect("task");
    println!(
        "{:<48} {us:8.2} µs",
        "DiskStore::fetch on a 1-worker runtime"
    );
}

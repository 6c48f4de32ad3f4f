//! Real files in a temp bundle, served by a tiny hyper server using `StaticFiles::respond`, hit with
//! a real HTTP client. Expected header values were measured from next start 16.4.6 on
//! `/tmp/ref/showcase` (a 15725-byte chunk, `public/robots.txt`, `public/ferry.png`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_manifest::{Encoding, Manifest, StaticFile, StaticSource};
use ferry_static::{StaticFiles, compress_bytes};
use http::{Method, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const CHUNK: &str = "/_next/static/chunks/0i9bfanyibmja.js";
const CHUNK_SIZE: usize = 15725;
const BIG: &str = "/_next/static/media/big.bin";
const BIG_SIZE: usize = 5 * 1024 * 1024 + 123;

struct Fixture {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    client: reqwest::Client,
    chunk: Vec<u8>,
    big: Vec<u8>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn chunk_bytes() -> Vec<u8> {
    let mut s = String::from("(globalThis.TURBOPACK||(globalThis.TURBOPACK=[])).push([");
    let mut i = 0u64;
    while s.len() < CHUNK_SIZE {
        s.push_str(&format!("function f{i}(e){{return e*{i}}},"));
        i += 1;
    }
    s.truncate(CHUNK_SIZE - 5);
    s.push_str("}}]);");
    s.into_bytes()
}

fn big_bytes() -> Vec<u8> {
    // Not compressible, every offset distinguishable.
    let mut x: u32 = 0x1234_5678;
    (0..BIG_SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn write(dir: &std::path::Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, data).expect("write");
}

fn file(
    pathname: &str,
    rel: &str,
    source: StaticSource,
    ct: &str,
    data: &[u8],
    encodings: Vec<Encoding>,
) -> StaticFile {
    StaticFile {
        pathname: pathname.into(),
        file: rel.into(),
        source,
        content_type: ct.into(),
        size: data.len() as u64,
        hash: format!(
            "{:016x}{:016x}",
            data.len(),
            data.iter().map(|b| *b as u64).sum::<u64>()
        ),
        immutable_hash: None,
        encodings,
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let chunk = chunk_bytes();
    let big = big_bytes();
    write(root, "static/chunks/a.js", &chunk);
    write(
        root,
        "static/chunks/a.js.gz",
        &compress_bytes(&chunk, Encoding::Gzip).expect("gz"),
    );
    write(
        root,
        "static/chunks/a.js.br",
        &compress_bytes(&chunk, Encoding::Br).expect("br"),
    );
    write(root, "static/media/big.bin", &big);
    write(root, "public/robots.txt", b"User-agent: *\n");
    let png = [&[0x89u8, b'P', b'N', b'G'][..], &[7u8; 2000]].concat();
    write(root, "public/ferry.png", &png);

    let manifest_json = serde_json::json!({
        "version": 1, "ferryVersion": "0.1.0", "nextVersion": "16.4.6", "kind": "server",
        "buildId": "b", "config": {}, "routing": {}
    });
    let mut manifest =
        Manifest::from_json(&manifest_json.to_string(), std::path::Path::new("m")).expect("m");
    manifest.static_files = vec![
        file(
            CHUNK,
            "static/chunks/a.js",
            StaticSource::NextStatic,
            "application/javascript; charset=UTF-8",
            &chunk,
            vec![Encoding::Br, Encoding::Gzip],
        ),
        file(
            BIG,
            "static/media/big.bin",
            StaticSource::NextStatic,
            "application/octet-stream",
            &big,
            vec![],
        ),
        file(
            "/robots.txt",
            "public/robots.txt",
            StaticSource::Public,
            "text/plain; charset=UTF-8",
            b"User-agent: *\n",
            vec![],
        ),
        file(
            "/ferry.png",
            "public/ferry.png",
            StaticSource::Public,
            "image/png",
            &png,
            vec![],
        ),
    ];
    let files = Arc::new(StaticFiles::new(root, &manifest).expect("static files"));
    assert!(files.get(CHUNK).expect("chunk").is_cached());
    assert!(!files.get(BIG).expect("big").is_cached());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let files = files.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let files = files.clone();
                    async move {
                        let res = match files.get(req.uri().path()) {
                            Some(e) => files.respond(e, req.method(), req.headers()).await,
                            None => ferry_http::text_response(StatusCode::NOT_FOUND, "nope"),
                        };
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    Fixture {
        _dir: dir,
        addr,
        client,
        chunk,
        big,
        server,
    }
}

impl Fixture {
    async fn req(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut rb = self
            .client
            .request(method, format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().await.expect("request")
    }
}

fn hv<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn chunk_headers_match_next_start() {
    let f = fixture().await;
    let res = f.req(Method::GET, CHUNK, &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Measured from next start 16.4.6.
    assert_eq!(
        hv(&res, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(hv(&res, "accept-ranges"), Some("bytes"));
    assert_eq!(
        hv(&res, "content-type"),
        Some("application/javascript; charset=UTF-8")
    );
    assert_eq!(hv(&res, "content-length"), Some("15725"));
    assert_eq!(hv(&res, "vary"), Some("Accept-Encoding"));
    assert!(hv(&res, "content-encoding").is_none());
    let etag = hv(&res, "etag").expect("etag").to_owned();
    assert!(etag.starts_with("W/\"3d6d-"), "{etag}");
    let lm = hv(&res, "last-modified").expect("last-modified").to_owned();
    assert!(httpdate::parse_http_date(&lm).is_ok());
    assert_eq!(res.bytes().await.expect("body"), f.chunk);

    // HEAD: same headers, no body.
    let head = f.req(Method::HEAD, CHUNK, &[]).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(hv(&head, "content-length"), Some("15725"));
    assert_eq!(hv(&head, "etag"), Some(etag.as_str()));
    assert!(head.bytes().await.expect("body").is_empty());

    // POST: 405.
    let post = f.req(Method::POST, CHUNK, &[]).await;
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow: Vec<_> = post
        .headers()
        .get_all("allow")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(allow, ["GET", "HEAD"]);

    // OPTIONS: 400, like next start (its 405 error page refuses OPTIONS).
    let options = f.req(Method::OPTIONS, CHUNK, &[]).await;
    assert_eq!(options.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn public_files_match_next_start() {
    let f = fixture().await;
    let res = f.req(Method::GET, "/robots.txt", &[]).await;
    // Measured from next start 16.4.6: public files are `public, max-age=0`; text gets Vary.
    assert_eq!(hv(&res, "cache-control"), Some("public, max-age=0"));
    assert_eq!(hv(&res, "content-type"), Some("text/plain; charset=UTF-8"));
    assert_eq!(hv(&res, "content-length"), Some("14"));
    assert_eq!(hv(&res, "vary"), Some("Accept-Encoding"));
    assert_eq!(hv(&res, "etag").map(|e| &e[..5]), Some("W/\"e-"));
    let png = f
        .req(Method::GET, "/ferry.png", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(hv(&png, "cache-control"), Some("public, max-age=0"));
    assert_eq!(hv(&png, "content-type"), Some("image/png"));
    // next start sends no Vary on a png.
    assert!(hv(&png, "vary").is_none());
    assert!(hv(&png, "content-encoding").is_none());
}

#[tokio::test]
async fn precompressed_variants_by_accept_encoding() {
    let f = fixture().await;
    let gz = compress_bytes(&f.chunk, Encoding::Gzip).expect("gz");
    let br = compress_bytes(&f.chunk, Encoding::Br).expect("br");
    for (ae, want) in [
        ("gzip", Some(("gzip", &gz))),
        ("br", Some(("br", &br))),
        ("gzip, deflate, br", Some(("br", &br))),
        ("br;q=0.5, gzip", Some(("gzip", &gz))),
        ("br;q=0", None),
        ("*", Some(("br", &br))),
        ("*;q=0", None),
        ("identity", None),
    ] {
        let res = f.req(Method::GET, CHUNK, &[("accept-encoding", ae)]).await;
        assert_eq!(res.status(), StatusCode::OK, "{ae}");
        assert_eq!(hv(&res, "vary"), Some("Accept-Encoding"), "{ae}");
        match want {
            Some((token, bytes)) => {
                assert_eq!(hv(&res, "content-encoding"), Some(token), "{ae}");
                assert_eq!(
                    hv(&res, "content-length"),
                    Some(bytes.len().to_string().as_str())
                );
                assert_eq!(&res.bytes().await.expect("body"), bytes, "{ae}");
            }
            None => {
                assert!(hv(&res, "content-encoding").is_none(), "{ae}");
                assert_eq!(res.bytes().await.expect("body"), f.chunk, "{ae}");
            }
        }
    }
}

#[tokio::test]
async fn ranges_like_next_start() {
    let f = fixture().await;
    let n = CHUNK_SIZE;
    // (Range, status, Content-Range, body slice) — measured from next start 16.4.6 on a
    // 15725-byte chunk (except `-99999`, where Ferry follows RFC 9110, see the crate docs).
    type Case<'a> = (&'a str, u16, Option<String>, Option<(usize, usize)>);
    let cases: Vec<Case> = vec![
        (
            "bytes=0-9",
            206,
            Some(format!("bytes 0-9/{n}")),
            Some((0, 10)),
        ),
        (
            "bytes=-5",
            206,
            Some(format!("bytes 15720-15724/{n}")),
            Some((15720, n)),
        ),
        (
            "bytes=15720-",
            206,
            Some(format!("bytes 15720-15724/{n}")),
            Some((15720, n)),
        ),
        (
            "bytes=0-99999",
            206,
            Some(format!("bytes 0-15724/{n}")),
            Some((0, n)),
        ),
        ("bytes=0-9,20-29", 200, None, Some((0, n))),
        ("bytes=0-0,-1", 200, None, Some((0, n))),
        ("items=0-5", 200, None, Some((0, n))),
        ("bytes=99999-", 416, Some(format!("bytes */{n}")), None),
        ("bytes=20000-30000", 416, Some(format!("bytes */{n}")), None),
        ("bytes=5-3", 416, Some(format!("bytes */{n}")), None),
        ("bytes=abc", 416, Some(format!("bytes */{n}")), None),
        (
            "bytes=-99999",
            206,
            Some(format!("bytes 0-15724/{n}")),
            Some((0, n)),
        ),
    ];
    for (range, status, content_range, slice) in cases {
        // Ranges apply to the identity bytes even when gzip is acceptable (as next start does).
        let res = f
            .req(
                Method::GET,
                CHUNK,
                &[("range", range), ("accept-encoding", "gzip, br")],
            )
            .await;
        assert_eq!(res.status().as_u16(), status, "{range}");
        assert_eq!(
            hv(&res, "content-range"),
            content_range.as_deref(),
            "{range}"
        );
        if status == 200 {
            // Range ignored: the whole representation, negotiated as usual.
            assert_eq!(hv(&res, "content-encoding"), Some("br"), "{range}");
        }
        if status == 206 {
            assert!(hv(&res, "content-encoding").is_none(), "{range}");
            assert_eq!(
                hv(&res, "cache-control"),
                Some("public, max-age=31536000, immutable")
            );
        }
        let body = res.bytes().await.expect("body");
        match slice {
            Some((a, b)) if status == 206 => assert_eq!(&body[..], &f.chunk[a..b], "{range}"),
            Some(_) => assert!(!body.is_empty(), "{range}"),
            None => assert!(body.is_empty(), "{range}"),
        }
    }
    // If-Range with our ETag honours the range; a different tag sends the whole file.
    let etag = f.req(Method::HEAD, CHUNK, &[]).await;
    let etag = hv(&etag, "etag").expect("etag").to_owned();
    let res = f
        .req(
            Method::GET,
            CHUNK,
            &[("range", "bytes=0-9"), ("if-range", &etag)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    let res = f
        .req(
            Method::GET,
            CHUNK,
            &[("range", "bytes=0-9"), ("if-range", "\"zz\"")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.expect("body").len(), CHUNK_SIZE);
}

#[tokio::test]
async fn conditional_requests_answer_304() {
    let f = fixture().await;
    let first = f.req(Method::GET, CHUNK, &[]).await;
    let etag = hv(&first, "etag").expect("etag").to_owned();
    let lm = hv(&first, "last-modified").expect("lm").to_owned();
    let strong_form = etag.trim_start_matches("W/").to_owned();
    let list = format!("\"x\", {etag}");
    for headers in [
        vec![("if-none-match", etag.as_str())],
        vec![("if-none-match", strong_form.as_str())],
        vec![("if-none-match", list.as_str())],
        vec![("if-none-match", "*")],
        vec![("if-modified-since", lm.as_str())],
        vec![("if-modified-since", "Sat, 21 Nov 2099 00:33:29 GMT")],
        vec![("if-none-match", etag.as_str()), ("range", "bytes=0-9")],
    ] {
        let res = f.req(Method::GET, CHUNK, &headers).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{headers:?}");
        // Measured from next start 16.4.6: 304 keeps Cache-Control, Accept-Ranges,
        // Last-Modified and ETag.
        assert_eq!(
            hv(&res, "cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(hv(&res, "accept-ranges"), Some("bytes"));
        assert_eq!(hv(&res, "etag"), Some(etag.as_str()));
        assert_eq!(hv(&res, "last-modified"), Some(lm.as_str()));
        assert!(hv(&res, "content-type").is_none());
        assert!(res.bytes().await.expect("body").is_empty());
    }
    for headers in [
        vec![("if-none-match", "\"x\"")],
        vec![("if-modified-since", "Sat, 01 Jan 2000 00:00:00 GMT")],
        vec![
            ("if-none-match", "\"x\""),
            ("if-modified-since", lm.as_str()),
        ],
        vec![
            ("if-none-match", etag.as_str()),
            ("cache-control", "no-cache"),
        ],
    ] {
        let res = f.req(Method::GET, CHUNK, &headers).await;
        assert_eq!(res.status(), StatusCode::OK, "{headers:?}");
    }
    let res = f.req(Method::GET, CHUNK, &[("if-match", "\"zz\"")]).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn large_files_stream_from_disk() {
    let f = fixture().await;
    let res = f
        .req(Method::GET, BIG, &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        hv(&res, "content-length"),
        Some(BIG_SIZE.to_string().as_str())
    );
    // Not a compressible type: no Vary, no encoding.
    assert!(hv(&res, "vary").is_none());
    // Read it as a stream: several chunks must arrive.
    let mut res = res;
    let mut got = Vec::with_capacity(BIG_SIZE);
    let mut frames = 0;
    while let Some(chunk) = res.chunk().await.expect("chunk") {
        frames += 1;
        got.extend_from_slice(&chunk);
    }
    assert!(frames > 1, "a 5 MB file arrives in several chunks");
    assert!(got == f.big, "large body round-trips byte for byte");

    // A range in the middle of a large file, crossing chunk boundaries.
    let (a, b) = (1_000_000usize, 1_400_000usize);
    let range = format!("bytes={a}-{}", b - 1);
    let res = f.req(Method::GET, BIG, &[("range", &range)]).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        hv(&res, "content-range"),
        Some(format!("bytes {a}-{}/{BIG_SIZE}", b - 1).as_str())
    );
    let body = res.bytes().await.expect("body");
    assert!(body[..] == f.big[a..b]);

    // Suffix range of a large file.
    let res = f.req(Method::GET, BIG, &[("range", "bytes=-7")]).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert!(res.bytes().await.expect("body")[..] == f.big[BIG_SIZE - 7..]);
}

#[test]
fn startup_rejects_a_bundle_that_does_not_match_its_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "public/a.txt", b"hello");
    let m = serde_json::json!({
        "version": 1, "ferryVersion": "0.1.0", "nextVersion": "16.4.6", "kind": "server",
        "buildId": "b", "config": {}, "routing": {},
        "staticFiles": [{"pathname": "/a.txt", "file": "public/a.txt", "source": "public",
            "contentType": "text/plain", "size": 99, "hash": "ab"}]
    });
    let m = Manifest::from_json(&m.to_string(), std::path::Path::new("m")).expect("m");
    let err = StaticFiles::new(dir.path(), &m).expect_err("size mismatch");
    assert!(err.to_string().contains("99"), "{err}");
    let m2 = serde_json::json!({
        "version": 1, "ferryVersion": "0.1.0", "nextVersion": "16.4.6", "kind": "server",
        "buildId": "b", "config": {}, "routing": {},
        "staticFiles": [{"pathname": "/a.txt", "file": "public/a.txt", "source": "public",
            "contentType": "text/plain", "size": 5, "hash": "ab", "encodings": ["br"]}]
    });
    let m2 = Manifest::from_json(&m2.to_string(), std::path::Path::new("m")).expect("m");
    assert!(
        StaticFiles::new(dir.path(), &m2).is_err(),
        "missing .br variant"
    );
}

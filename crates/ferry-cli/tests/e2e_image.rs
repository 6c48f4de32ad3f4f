//! End-to-end: `/_next/image` on `ferry start` behaves like `next start` on the same build.
//!
//! One `ferry build` of examples/showcase; `ferry start` serves the bundle with the app's
//! `node_modules` removed (the bundle must carry the optimizer), `next start` serves a copy of the
//! same build with the showcase's `node_modules`. Each case goes to both servers in the same order
//! (so cache MISS / HIT line up) and compares status, the headers users and CDNs rely on, and the
//! decoded image's format and dimensions (not bytes: Ferry encodes with its own codecs, so the
//! bytes and the ETag, a hash of them, differ; each server's ETag must answer its own 304).
//! Besides the showcase's `ferry.png`, the build gets a corpus in `public/corpus/` (the
//! fixtures of crates/ferry-image: JPEG, EXIF-rotated JPEG, WebP, PNG with alpha, SVG, a
//! truncated JPEG, corrupt JPEGs) and a truncated copy of the showcase's `ferry.avif`. The build's
//! `images.formats` is `['image/avif', 'image/webp']`: AVIF is encoded in Rust (rav1e), not by
//! next's optimizer in a worker, which the Ferry log proves. AVIF *sources* (which Rust cannot
//! decode) are transformed by next's optimizer (sharp) in a worker, and cached by Ferry's own
//! optimizer: MISS then HIT, shared through Redis.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use support::images::{ImageInfo, image_info};
use support::redis::Redis;
use support::{FerryServer, RawRequest, RawResponse, ServerProcess};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Headers compared exactly (case-insensitive names).
const COMPARED: &[&str] = &[
    "content-type",
    "cache-control",
    "vary",
    "content-disposition",
    "content-security-policy",
    "x-nextjs-cache",
    "content-encoding",
    "x-powered-by-ferry-example",
];

fn built_app() -> &'static PathBuf {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| {
        support::build_app_once("image", &support::showcase_src(), |app| {
            let corpus = app.join("public/corpus");
            std::fs::create_dir_all(&corpus)?;
            let fixtures = support::repo_root().join("crates/ferry-image/tests/fixtures");
            for entry in std::fs::read_dir(fixtures)? {
                let entry = entry?;
                std::fs::copy(entry.path(), corpus.join(entry.file_name()))?;
            }
            // An AVIF whose header (ftyp, meta with the size) is whole but whose data is cut.
            let avif = std::fs::read(app.join("public/ferry.avif"))?;
            anyhow::ensure!(avif.len() > 400, "ferry.avif is {} bytes", avif.len());
            std::fs::write(corpus.join("broken.avif"), &avif[..300])?;
            // AVIF first, as apps that opt into it write it.
            let config = app.join("next.config.mjs");
            let text = std::fs::read_to_string(&config)?;
            let with = text.replacen(
                "const nextConfig = {",
                "const nextConfig = {\n  images: { formats: ['image/avif', 'image/webp'] },",
                1,
            );
            anyhow::ensure!(
                with != text,
                "next.config.mjs has no `const nextConfig = {{`"
            );
            std::fs::write(&config, with)?;
            Ok(())
        })
        .expect("ferry build of the showcase")
    })
}

fn header_values(r: &RawResponse, name: &str) -> Vec<String> {
    r.header_all(name).into_iter().map(str::to_owned).collect()
}

/// Differences between next start's (`a`) and Ferry's (`b`) answers.
fn differences(a: &RawResponse, b: &RawResponse) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if a.status != b.status {
        out.push(format!("status: next {} ferry {}", a.status, b.status));
    }
    for name in COMPARED {
        let (va, vb) = (header_values(a, name), header_values(b, name));
        if va != vb {
            out.push(format!("{name}: next {va:?} ferry {vb:?}"));
        }
    }
    let (ia, ib) = (
        image_info(&a.decoded_body()?),
        image_info(&b.decoded_body()?),
    );
    if ia != ib {
        out.push(format!("image: next {ia:?} ferry {ib:?}"));
    }
    if ia.is_none() && a.decoded_body()? != b.decoded_body()? {
        out.push(format!(
            "body: next {:?} ferry {:?}",
            String::from_utf8_lossy(&a.body),
            String::from_utf8_lossy(&b.body)
        ));
    }
    Ok(out)
}

/// A request, the status and `x-nextjs-cache` Ferry must answer with, and the image it must
/// send (format, width, height).
type Case = (
    RawRequest,
    u16,
    Option<&'static str>,
    Option<(&'static str, u32, u32)>,
);

#[test]
fn next_image_matches_next_start() -> Result<()> {
    let app = built_app();
    let logs = tempfile::Builder::new().prefix("ferry-image-").tempdir()?;

    // next start on a copy of the same build, with the showcase's node_modules.
    let next_app = logs.path().join("next-app");
    support::clone_built_app(app, &next_app)?;
    std::os::unix::fs::symlink(
        std::fs::canonicalize(support::showcase_src().join("node_modules"))?,
        next_app.join("node_modules"),
    )?;
    let port = support::free_port()?;
    let next = ServerProcess::start(
        "next start",
        &support::next_start(&next_app, port),
        ([127, 0, 0, 1], port).into(),
        &logs.path().join("next.log"),
        TIMEOUT,
    )?;
    // Debug logs of the image stage: every Rust transform, and any request handed to a worker.
    let ferry = FerryServer::start(
        app,
        &[],
        &[(
            "FERRY_LOG",
            "info,ferry_image=debug,ferry_server::pipeline::image=debug",
        )],
    )?;

    let send_both = |req: &RawRequest| -> Result<(RawResponse, RawResponse)> {
        let with_host = |r: &RawRequest| {
            r.clone()
                .header("Host", "localhost:3000")
                .header("Connection", "close")
        };
        let a = support::send(next.addr, &with_host(req), TIMEOUT).context("next start")?;
        let b = ferry.send(with_host(req), TIMEOUT).context("ferry start")?;
        Ok((a, b))
    };

    let png = "/_next/image?url=%2Fferry.png&w=640&q=75";
    let small = "/_next/image?url=%2Fferry.png&w=256&q=75";
    let recursive =
        "/_next/image?url=%2F_next%2Fimage%3Furl%3D%252Fferry.png%26w%3D640%26q%3D75&w=640&q=75";
    let avif_src = "/_next/image?url=%2Fferry.avif&w=256&q=75";
    let webp = |t: &str| RawRequest::get(t).header("Accept", "image/webp,*/*");
    // A browser's Accept: AVIF, the first of `formats` it names, wins.
    let avif = |t: &str| RawRequest::get(t).header("Accept", "image/avif,image/webp,*/*");
    let cases: Vec<Case> = vec![
        (webp(png), 200, Some("MISS"), Some(("webp", 640, 400))),
        (webp(png), 200, Some("HIT"), Some(("webp", 640, 400))),
        (avif(png), 200, Some("MISS"), Some(("avif", 640, 400))),
        (avif(png), 200, Some("HIT"), Some(("avif", 640, 400))),
        (
            // `formats` order decides, not the Accept order.
            RawRequest::get(small).header("Accept", "image/webp,image/avif"),
            200,
            Some("MISS"),
            Some(("avif", 256, 160)),
        ),
        (
            RawRequest::get(small).header("Accept", "image/webp;q=0.9,image/avif;q=0.5"),
            200,
            Some("MISS"),
            Some(("webp", 256, 160)),
        ),
        (
            avif("/_next/image?url=%2Fcorpus%2Fphoto.jpg&w=640&q=75"),
            200,
            Some("MISS"),
            Some(("avif", 640, 427)),
        ),
        (
            avif("/_next/image?url=%2Fcorpus%2Falpha.png&w=128&q=75"),
            200,
            Some("MISS"),
            Some(("avif", 128, 85)),
        ),
        (
            RawRequest::get(png),
            200,
            Some("MISS"),
            Some(("png", 640, 400)),
        ),
        (
            RawRequest::get(png),
            200,
            Some("HIT"),
            Some(("png", 640, 400)),
        ),
        (webp(small), 200, Some("HIT"), Some(("webp", 256, 160))),
        (
            webp("/_next/image?url=%2Fferry.png&w=641&q=75"),
            400,
            None,
            None,
        ),
        (
            webp("/_next/image?url=%2Fferry.png&w=640&q=12"),
            400,
            None,
            None,
        ),
        (webp("/_next/image?w=640&q=75"), 400, None, None),
        (webp("/_next/image"), 400, None, None),
        (
            webp("/_next/image?url=https%3A%2F%2Fexample.com%2Fa.png&w=640&q=75"),
            400,
            None,
            None,
        ),
        (webp(recursive), 400, None, None),
        (
            webp("/_next/image?url=%2Fmissing.png&w=640&q=75"),
            404,
            None,
            None,
        ),
        (
            webp("/_next/image?url=%2Frobots.txt&w=640&q=75"),
            400,
            None,
            None,
        ),
        // The corpus.
        (
            webp("/_next/image?url=%2Fcorpus%2Fphoto.jpg&w=640&q=75"),
            200,
            Some("MISS"),
            Some(("webp", 640, 427)),
        ),
        (
            RawRequest::get("/_next/image?url=%2Fcorpus%2Fphoto.jpg&w=640&q=75"),
            200,
            Some("MISS"),
            Some(("jpeg", 640, 427)),
        ),
        (
            RawRequest::get("/_next/image?url=%2Fcorpus%2Fphoto.jpg&w=3840&q=75"),
            200,
            Some("MISS"),
            Some(("jpeg", 900, 600)),
        ),
        (
            webp("/_next/image?url=%2Fcorpus%2Frotated.jpg&w=256&q=75"),
            200,
            Some("MISS"),
            Some(("webp", 256, 384)),
        ),
        (
            RawRequest::get("/_next/image?url=%2Fcorpus%2Fphoto.webp&w=256&q=75")
                .header("Accept", "image/png"),
            200,
            Some("MISS"),
            Some(("jpeg", 256, 171)),
        ),
        (
            webp("/_next/image?url=%2Fcorpus%2Falpha.png&w=128&q=75"),
            200,
            Some("MISS"),
            Some(("webp", 128, 85)),
        ),
        (
            RawRequest::get("/_next/image?url=%2Fcorpus%2Falpha.png&w=128&q=75"),
            200,
            Some("MISS"),
            Some(("png", 128, 85)),
        ),
        (
            webp("/_next/image?url=%2Fcorpus%2Ficon.svg&w=64&q=75"),
            400,
            None,
            None,
        ),
        (
            // Truncated: both serve it as it is.
            webp("/_next/image?url=%2Fcorpus%2Fbroken.jpg&w=640&q=75"),
            200,
            Some("MISS"),
            Some(("jpeg", 900, 600)),
        ),
        (
            // libjpeg warns ("premature end of data segment") and sharp fails on warnings:
            // both serve it as it is.
            webp("/_next/image?url=%2Fcorpus%2Fcorrupt-cut-scan.jpg&w=64&q=75"),
            200,
            Some("MISS"),
            Some(("jpeg", 123, 82)),
        ),
        (
            // A warning in the last rows, which libvips reads before its last strip at this
            // size (at 1/4, which no allowed width reaches for 123 px, it would pass).
            webp("/_next/image?url=%2Fcorpus%2Fcorrupt-last-rows.jpg&w=64&q=75"),
            200,
            Some("MISS"),
            Some(("jpeg", 123, 82)),
        ),
        (
            // Stray bytes before the end marker: only `jpeg_finish_decompress` would warn, and
            // libvips never calls it, so both transform it.
            webp("/_next/image?url=%2Fcorpus%2Fcorrupt-tail-bytes.jpg&w=64&q=75"),
            200,
            Some("MISS"),
            Some(("webp", 64, 43)),
        ),
        // An AVIF source (480x300): transformed by next's optimizer in a worker, cached here.
        (avif(avif_src), 200, Some("MISS"), Some(("avif", 256, 160))),
        (avif(avif_src), 200, Some("HIT"), Some(("avif", 256, 160))),
        (webp(avif_src), 200, Some("MISS"), Some(("webp", 256, 160))),
        (webp(avif_src), 200, Some("HIT"), Some(("webp", 256, 160))),
        (
            // Neither accepted: next turns an AVIF source into JPEG.
            RawRequest::get(avif_src).header("Accept", "*/*"),
            200,
            Some("MISS"),
            Some(("jpeg", 256, 160)),
        ),
        (
            RawRequest::get(avif_src).header("Accept", "*/*"),
            200,
            Some("HIT"),
            Some(("jpeg", 256, 160)),
        ),
        (
            // Never enlarged.
            RawRequest::get("/_next/image?url=%2Fferry.avif&w=640&q=75"),
            200,
            Some("MISS"),
            Some(("jpeg", 480, 300)),
        ),
        (
            // sharp cannot decode it: both serve it as it is.
            webp("/_next/image?url=%2Fcorpus%2Fbroken.avif&w=256&q=75"),
            200,
            Some("MISS"),
            Some(("avif", 480, 300)),
        ),
        (
            webp("/_next/image?url=%2Fcorpus%2Fphoto.jpg&w=640&q=100"),
            400,
            None,
            None,
        ),
        (
            webp("/_next/image?url=%2Fcorpus%2Fphoto.jpg&url=%2Fa.png&w=640&q=75"),
            400,
            None,
            None,
        ),
        (
            webp("/_next/image?url=%2F%2Fexample.com%2Fa.png&w=640&q=75"),
            400,
            None,
            None,
        ),
        (
            webp("/_next/image?url=%2Fcorpus%2Fphoto.jpg%3Fv%3D1&w=640&q=75"),
            400,
            None,
            None,
        ),
    ];

    let mut failures = Vec::new();
    for (req, status, cache, image) in &cases {
        let (a, b) = send_both(req)?;
        let label = format!(
            "GET {} (Accept: {:?})",
            req.target,
            req.header_value("accept")
        );
        for d in differences(&a, &b)? {
            failures.push(format!("{label}: {d}"));
        }
        // Absolute expectations too, so both servers failing alike cannot pass.
        if b.status != *status {
            failures.push(format!("{label}: ferry status {} != {status}", b.status));
        }
        if b.header("x-nextjs-cache") != *cache {
            failures.push(format!(
                "{label}: ferry x-nextjs-cache {:?} != {cache:?}",
                b.header("x-nextjs-cache")
            ));
        }
        let got = image_info(&b.decoded_body()?);
        let want = image.map(|(format, width, height)| ImageInfo {
            format,
            width,
            height,
        });
        if got != want {
            failures.push(format!("{label}: ferry image {got:?} != {want:?}"));
        }
    }

    // AVIF from Rust: each AVIF was a transform in Ferry's optimizer, none went to a worker,
    // and a real decoder (sharp's libheif + dav1d/aom) reads Ferry's bytes.
    let log = ferry.log();
    for href in ["/ferry.png", "/corpus/photo.jpg", "/corpus/alpha.png"] {
        if !log.contains(&format!("optimizing {href} into image/avif")) {
            failures.push(format!("no Rust AVIF transform of {href} in the Ferry log"));
        }
    }
    if log.contains("/_next/image in a worker") {
        failures.push("a /_next/image request went to a worker".into());
    }
    // The AVIF source's three types were each one transform by next's optimizer in a worker.
    for ty in ["image/avif", "image/webp", "image/jpeg"] {
        let line = format!("transforming /ferry.avif (image/avif source) into {ty} at w=256");
        if log.matches(&line).count() != 1 {
            failures.push(format!("not one `{line}` in the Ferry log"));
        }
    }
    let photo = ferry.send(
        avif("/_next/image?url=%2Fcorpus%2Fphoto.jpg&w=640&q=75")
            .header("Host", "localhost:3000")
            .header("Connection", "close"),
        TIMEOUT,
    )?;
    match support::images::sharp_decode(&photo.body, logs.path()) {
        Ok((640, 427, 3)) => {}
        Ok(dims) => failures.push(format!("sharp decodes Ferry's AVIF as {dims:?}")),
        Err(err) => failures.push(format!("sharp cannot decode Ferry's AVIF: {err:#}")),
    }

    // Conditional request: each server's ETag of a cached entry answers its own 304.
    let (a, b) = send_both(&webp(png))?;
    match (a.header("etag"), b.header("etag")) {
        (Some(ea), Some(eb)) if !ea.is_empty() && !eb.is_empty() => {
            let with = |etag: &str| {
                webp(png)
                    .header("If-None-Match", etag)
                    .header("Host", "localhost:3000")
                    .header("Connection", "close")
            };
            let a = support::send(next.addr, &with(ea), TIMEOUT).context("next start")?;
            let b = ferry.send(with(eb), TIMEOUT).context("ferry start")?;
            for d in differences(&a, &b)? {
                failures.push(format!("If-None-Match: {d}"));
            }
            if b.status != 304 || !b.body.is_empty() || b.header("etag") != Some(eb) {
                failures.push(format!(
                    "If-None-Match: ferry {} with {} body bytes",
                    b.status,
                    b.body.len()
                ));
            }
        }
        (ea, eb) => failures.push(format!("ETag: next {ea:?} ferry {eb:?}")),
    }

    if !failures.is_empty() {
        bail!(
            "{} difference(s):\n{}\n--- ferry log tail ---\n{}",
            failures.len(),
            failures.join("\n"),
            ferry.log_tail()
        );
    }
    Ok(())
}

/// A redis-server on a free loopback port (no persistence), killed on drop.
/// Two `ferry start` instances with their own disk caches and one Redis `--cache-url`: an
/// image optimized by the first is a HIT on the second, with the same bytes.
#[test]
fn image_cache_is_shared_through_redis() -> Result<()> {
    let app = built_app();
    let work = tempfile::Builder::new()
        .prefix("ferry-image-redis-")
        .tempdir()?;
    let redis = Redis::start()?;
    let url = redis.url();
    let args = ["--cache-url", url.as_str()];
    let a = FerryServer::start(app, &args, &[])?;
    // A copy of the bundle elsewhere: its own `.ferry-cache`, so only Redis can make a hit.
    let bundle = support::copy_bundle_outside(app, &work.path().join("bundle"))?;
    let b = FerryServer::start(&bundle, &args, &[])?;
    let req = RawRequest::get("/_next/image?url=%2Fcorpus%2Fphoto.jpg&w=384&q=75")
        .header("Accept", "image/webp,*/*");
    let first = a.send(req.clone(), TIMEOUT)?;
    let second = b.send(req, TIMEOUT)?;
    let cache = |r: &RawResponse| r.header("x-nextjs-cache").map(str::to_owned);
    if first.status != 200 || cache(&first).as_deref() != Some("MISS") {
        bail!(
            "instance A: {} {:?}\n{}",
            first.status,
            cache(&first),
            a.log_tail()
        );
    }
    if second.status != 200 || cache(&second).as_deref() != Some("HIT") {
        bail!(
            "instance B: {} {:?}\n{}",
            second.status,
            cache(&second),
            b.log_tail()
        );
    }
    if second.body != first.body || second.header("etag") != first.header("etag") {
        bail!("instance B served other bytes than A optimized");
    }
    let info = image_info(&second.body).context("not an image")?;
    if (info.format, info.width) != ("webp", 384) {
        bail!("unexpected image {info:?}");
    }
    // An AVIF source (transformed in A's worker) is cached by the same optimizer: a HIT on B.
    let req = RawRequest::get("/_next/image?url=%2Fferry.avif&w=128&q=75")
        .header("Accept", "image/webp,*/*");
    let first = a.send(req.clone(), TIMEOUT)?;
    let second = b.send(req, TIMEOUT)?;
    let info = image_info(&first.body).map(|i| (i.format, i.width, i.height));
    if first.status != 200
        || cache(&first).as_deref() != Some("MISS")
        || info != Some(("webp", 128, 80))
    {
        bail!(
            "AVIF source on A: {} {:?} {info:?}\n{}",
            first.status,
            cache(&first),
            a.log_tail()
        );
    }
    if cache(&second).as_deref() != Some("HIT") || second.body != first.body {
        bail!(
            "AVIF source on B: {} {:?}\n{}",
            second.status,
            cache(&second),
            b.log_tail()
        );
    }
    Ok(())
}

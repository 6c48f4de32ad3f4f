//! The optimizer end to end over real sockets: a small HTTP file server plays the app's routing
//! (what `LoopbackSource` fetches), images are generated with the `image` crate, responses are
//! decoded and checked.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use ferry_image::{ImageConfig, LoopbackSource, Optimizer, Options};
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body_util::BodyExt as _;
use image::{ImageEncoder, RgbImage, RgbaImage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A file the test server answers with.
#[derive(Clone)]
struct File {
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

/// A loopback HTTP/1.1 server answering GETs from a table, counting requests per path.
struct Origin {
    addr: SocketAddr,
    files: Arc<Mutex<HashMap<String, File>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Origin {
    async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let files: Arc<Mutex<HashMap<String, File>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (f, h) = (files.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (f, h) = (f.clone(), h.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&buf);
                    let target = text.split(' ').nth(1).unwrap_or("/").to_owned();
                    *h.lock().expect("hits").entry(target.clone()).or_default() += 1;
                    let file = f.lock().expect("files").get(&target).cloned();
                    let mut head = match &file {
                        Some(_) => "HTTP/1.1 200 OK\r\n".to_owned(),
                        None => "HTTP/1.1 404 Not Found\r\n".to_owned(),
                    };
                    let body = file.as_ref().map(|f| f.body.clone()).unwrap_or_default();
                    for (k, v) in file.map(|f| f.headers).unwrap_or_default() {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str(&format!(
                        "content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    ));
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                });
            }
        });
        Ok(Self { addr, files, hits })
    }

    fn put(&self, path: &str, body: Vec<u8>, headers: &[(&'static str, &str)]) {
        let headers = headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self.files
            .lock()
            .expect("files")
            .insert(path.to_owned(), File { body, headers });
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("hits")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

struct Setup {
    origin: Origin,
    optimizer: Arc<Optimizer>,
    _cache: tempfile::TempDir,
    cache_dir: PathBuf,
}

async fn setup(edit: impl FnOnce(&mut ImageConfig)) -> Result<Setup> {
    let origin = Origin::start().await?;
    let mut config = ImageConfig {
        device_sizes: vec![64, 640],
        image_sizes: vec![16, 32],
        ..ImageConfig::default()
    };
    edit(&mut config);
    let cache = tempfile::tempdir()?;
    let cache_dir = cache.path().join("images");
    let source = LoopbackSource::new(
        format!("http://{}", origin.addr),
        (
            http::HeaderName::from_static("ferry-image-fetch"),
            HeaderValue::from_static("1"),
        ),
    )?;
    let optimizer = Optimizer::new(
        Options::new(config, "", Some(cache_dir.clone())),
        Arc::new(source),
    );
    Ok(Setup {
        origin,
        optimizer,
        _cache: cache,
        cache_dir,
    })
}

struct Got {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn collect(res: Response<ferry_http::Body>) -> Result<Got> {
    let (parts, body) = res.into_parts();
    Ok(Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

async fn get(s: &Setup, query: &str, accept: &str) -> Result<Got> {
    let mut h = HeaderMap::new();
    h.insert("accept", HeaderValue::from_str(accept)?);
    collect(s.optimizer.handle(&Method::GET, query, &h).await).await
}

fn png(w: u32, h: u32) -> Result<Vec<u8>> {
    // A gradient with many colours, so the palette path has work to do.
    let img = RgbaImage::from_fn(w, h, |x, y| {
        image::Rgba([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x + y) % 256) as u8,
            255,
        ])
    });
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(
        &img,
        w,
        h,
        image::ExtendedColorType::Rgba8,
    )?;
    Ok(out)
}

fn jpeg(w: u32, h: u32) -> Result<Vec<u8>> {
    let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 90]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).write_image(
        &img,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

/// A JPEG carrying an EXIF orientation (APP1 inserted after SOI).
fn jpeg_with_orientation(w: u32, h: u32, orientation: u16) -> Result<Vec<u8>> {
    let plain = jpeg(w, h)?;
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01".to_vec();
    tiff.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01]);
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let len = (app1.len() + 2) as u16;
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&plain[2..]);
    Ok(out)
}

fn decoded(body: &[u8]) -> Result<(image::ImageFormat, u32, u32)> {
    let reader = image::ImageReader::new(Cursor::new(body)).with_guessed_format()?;
    let format = reader.format().context("unknown format")?;
    let img = reader.decode()?;
    Ok((format, img.width(), img.height()))
}

/// Entries (key directories, not in-progress writes) in a cache directory.
fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

/// Waits (10 s at most) until `dir` holds `n` entries; the count then.
async fn wait_for_entries(dir: &std::path::Path, n: usize) -> Result<usize> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while entries(dir) < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(entries(dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_answered_before_its_cache_file_is_written() -> Result<()> {
    let origin = Origin::start().await?;
    origin.put("/w.png", png(300, 200)?, &[]);
    let cache = tempfile::tempdir()?;
    let dir = cache.path().join("images");
    let config = ImageConfig {
        device_sizes: vec![64, 640],
        image_sizes: vec![16, 32],
        ..ImageConfig::default()
    };
    let source = || {
        LoopbackSource::new(
            format!("http://{}", origin.addr),
            (
                http::HeaderName::from_static("ferry-image-fetch"),
                HeaderValue::from_static("1"),
            ),
        )
    };
    let mut options = Options::new(config.clone(), "", Some(dir.clone()));
    // Every file write takes 3 s: a response that waited for it would take as long.
    options.cache_write_delay = Duration::from_secs(3);
    let optimizer = Optimizer::new(options, Arc::new(source()?));
    let mut h = HeaderMap::new();
    h.insert("accept", HeaderValue::from_static("image/webp"));
    let q = "url=%2Fw.png&w=64&q=75";
    let started = std::time::Instant::now();
    let miss = collect(optimizer.handle(&Method::GET, q, &h).await).await?;
    let took = started.elapsed();
    ensure!(miss.status == 200 && miss.header("x-nextjs-cache") == "MISS");
    ensure!(took < Duration::from_secs(2), "the miss waited {took:?}");
    ensure!(
        entries(&dir) == 0,
        "the file was written before the response"
    );
    // Right after, while the file is still being written: a hit from memory, same bytes and
    // headers, no second fetch or transform.
    let hit = collect(optimizer.handle(&Method::GET, q, &h).await).await?;
    ensure!(
        hit.header("x-nextjs-cache") == "HIT",
        "{}",
        hit.header("x-nextjs-cache")
    );
    ensure!(hit.body == miss.body && hit.header("etag") == miss.header("etag"));
    for name in [
        "content-type",
        "cache-control",
        "content-length",
        "content-disposition",
    ] {
        ensure!(hit.header(name) == miss.header(name), "{name} differs");
    }
    ensure!(optimizer.transforms() == 1 && origin.hits("/w.png") == 1);
    // The file arrives, and a new process (no memory tier) reads the same entry from it.
    ensure!(
        wait_for_entries(&dir, 1).await? == 1,
        "the file was never written"
    );
    let fresh = Optimizer::new(Options::new(config, "", Some(dir)), Arc::new(source()?));
    let disk = collect(fresh.handle(&Method::GET, q, &h).await).await?;
    ensure!(disk.header("x-nextjs-cache") == "HIT" && disk.body == miss.body);
    ensure!(disk.header("etag") == miss.header("etag") && fresh.transforms() == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webp_miss_hit_etag_and_304() -> Result<()> {
    let s = setup(|_| {}).await?;
    s.origin.put(
        "/a.png",
        png(800, 500)?,
        &[("cache-control", "public, max-age=0")],
    );
    let q = "url=%2Fa.png&w=640&q=75";
    let miss = get(&s, q, "image/avif,image/webp,*/*").await?;
    ensure!(miss.status == 200, "status {}", miss.status);
    ensure!(miss.header("x-nextjs-cache") == "MISS");
    ensure!(miss.header("content-type") == "image/webp");
    ensure!(miss.header("cache-control") == "public, max-age=14400, must-revalidate");
    ensure!(miss.header("vary") == "Accept");
    ensure!(miss.header("content-disposition") == "attachment; filename=\"a.webp\"");
    ensure!(
        miss.header("content-security-policy") == "script-src 'none'; frame-src 'none'; sandbox;"
    );
    ensure!(decoded(&miss.body)? == (image::ImageFormat::WebP, 640, 400));
    let hit = get(&s, q, "image/webp").await?;
    ensure!(hit.header("x-nextjs-cache") == "HIT");
    ensure!(hit.body == miss.body && hit.header("etag") == miss.header("etag"));
    ensure!(!miss.header("etag").is_empty());
    // One directory per key, one file in it, named like next's (written after the response).
    let dirs = wait_for_entries(&s.cache_dir, 1).await?;
    ensure!(dirs == 1, "{dirs} cache entries");
    let mut h = HeaderMap::new();
    h.insert("accept", HeaderValue::from_static("image/webp"));
    h.insert("if-none-match", HeaderValue::from_str(miss.header("etag"))?);
    let not_modified = collect(s.optimizer.handle(&Method::GET, q, &h).await).await?;
    ensure!(not_modified.status == 304 && not_modified.body.is_empty());
    ensure!(not_modified.header("etag") == miss.header("etag"));
    // HEAD: headers only.
    h.remove("if-none-match");
    let head = collect(s.optimizer.handle(&Method::HEAD, q, &h).await).await?;
    ensure!(head.status == 200 && head.body.is_empty());
    ensure!(head.header("content-length") == miss.body.len().to_string());
    ensure!(s.origin.hits("/a.png") == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_requests_share_one_transform() -> Result<()> {
    let s = setup(|_| {}).await?;
    s.origin.put("/big.jpg", jpeg(1600, 1200)?, &[]);
    let q = "url=%2Fbig.jpg&w=640&q=75";
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let opt = s.optimizer.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = HeaderMap::new();
            h.insert("accept", HeaderValue::from_static("image/webp"));
            collect(opt.handle(&Method::GET, q, &h).await).await
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let got = t.await??;
        ensure!(got.status == 200 && got.header("x-nextjs-cache") == "MISS");
        bodies.push(got.body);
    }
    ensure!(bodies.windows(2).all(|w| w[0] == w[1]));
    ensure!(
        s.optimizer.transforms() == 1,
        "{} transforms",
        s.optimizer.transforms()
    );
    ensure!(s.origin.hits("/big.jpg") == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_orientation_and_no_upscaling() -> Result<()> {
    let s = setup(|_| {}).await?;
    s.origin.put("/p.png", png(48, 30)?, &[]);
    s.origin.put("/j.jpg", jpeg(100, 60)?, &[]);
    s.origin
        .put("/r.jpg", jpeg_with_orientation(40, 20, 6)?, &[]);
    // No webp in Accept: the source's type (palette PNG), never wider than the source.
    let p = get(&s, "url=%2Fp.png&w=64&q=75", "*/*").await?;
    ensure!(p.header("content-type") == "image/png");
    ensure!(decoded(&p.body)? == (image::ImageFormat::Png, 48, 30));
    ensure!(
        p.body[25] == 3,
        "PNG colour type {} (want palette)",
        p.body[25]
    );
    let j = get(&s, "url=%2Fj.jpg&w=32&q=75", "text/html").await?;
    ensure!(j.header("content-type") == "image/jpeg");
    ensure!(decoded(&j.body)? == (image::ImageFormat::Jpeg, 32, 19));
    // EXIF orientation 6 (rotate 90° clockwise) is applied: 40x20 becomes 20x40.
    let r = get(&s, "url=%2Fr.jpg&w=64&q=75", "image/webp").await?;
    ensure!(decoded(&r.body)? == (image::ImageFormat::WebP, 20, 40));
    // A WebP source without webp in Accept comes back as JPEG (next downlevels it).
    let webp = get(&s, "url=%2Fj.jpg&w=64&q=75", "image/webp").await?;
    s.origin.put("/w.webp", webp.body.to_vec(), &[]);
    let down = get(&s, "url=%2Fw.webp&w=32&q=75", "image/png").await?;
    ensure!(down.header("content-type") == "image/jpeg");
    ensure!(down.header("content-disposition") == "attachment; filename=\"w.jpeg\"");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_and_broken_sources() -> Result<()> {
    let s = setup(|_| {}).await?;
    // A PNG whose header claims 20000 x 20000: refused from the header alone.
    let mut bomb = png(4, 4)?;
    bomb[16..20].copy_from_slice(&20000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&20000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    s.origin.put("/bomb.png", bomb, &[]);
    let r = get(&s, "url=%2Fbomb.png&w=64&q=75", "image/webp").await?;
    ensure!(r.status == 400, "bomb status {}", r.status);
    ensure!(String::from_utf8_lossy(&r.body).contains("too large"));
    // JPEG magic, garbage after: next serves the source as it is.
    let broken = [&[0xffu8, 0xd8, 0xff, 0xe0][..], &[0x42; 64]].concat();
    s.origin.put("/broken.jpg", broken.clone(), &[]);
    let r = get(&s, "url=%2Fbroken.jpg&w=64&q=75", "image/webp").await?;
    ensure!(r.status == 200 && r.header("content-type") == "image/jpeg");
    ensure!(r.body.as_ref() == broken.as_slice());
    s.origin.put("/robots.txt", b"User-agent: *".to_vec(), &[]);
    let r = get(&s, "url=%2Frobots.txt&w=64&q=75", "image/webp").await?;
    ensure!(r.status == 400 && r.body.as_ref() == b"The requested resource isn't a valid image.");
    s.origin.put(
        "/i.svg",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
        &[],
    );
    let r = get(&s, "url=%2Fi.svg&w=64&q=75", "image/webp").await?;
    ensure!(r.status == 400);
    ensure!(r.body.as_ref() == b"\"url\" parameter is valid but image type is not allowed");
    let r = get(&s, "url=%2Fmissing.png&w=64&q=75", "image/webp").await?;
    ensure!(r.status == 404);
    ensure!(r.body.as_ref() == b"\"url\" parameter is valid but internal response is invalid");
    ensure!(r.headers.get("content-type").is_none());
    let r = get(&s, "url=%2Fa.png&w=65&q=75", "image/webp").await?;
    ensure!(r.status == 400 && r.body.as_ref() == b"\"w\" parameter (width) of 65 is not allowed");
    Ok(())
}

/// Corrupt JPEGs that libjpeg decodes with a warning: where sharp (`failOn: 'warning'`) threw,
/// next serves the source as it is, with `minimumCacheTTL`; where it did not, a WebP. The
/// fixtures and sharp's outcomes: `transform::tests::SHARP_THREW` (123x82 sources; width 64
/// is decoded at full size, 16 at 1/4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_jpegs_are_served_as_they_are_where_sharp_fails() -> Result<()> {
    let s = setup(|_| {}).await?;
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (fixture, width, sharp_threw) in [
        ("corrupt-cut-scan.jpg", 64, true),
        ("corrupt-header-bytes.jpg", 16, true),
        ("corrupt-progressive-cut.jpg", 64, true),
        ("corrupt-cmyk-cut-scan.jpg", 32, true),
        ("corrupt-last-rows.jpg", 64, true),
        ("corrupt-last-rows.jpg", 16, false),
        ("corrupt-tail-bytes.jpg", 64, false),
    ] {
        let src = std::fs::read(fixtures.join(fixture))?;
        s.origin.put(&format!("/{fixture}"), src.clone(), &[]);
        let q = format!("url=%2F{fixture}&w={width}&q=75");
        let r = get(&s, &q, "image/webp").await?;
        ensure!(r.status == 200, "{fixture} at {width}: status {}", r.status);
        if sharp_threw {
            ensure!(
                r.header("content-type") == "image/jpeg" && r.body.as_ref() == src.as_slice(),
                "{fixture} at {width}: {} of {} bytes, expected the source",
                r.header("content-type"),
                r.body.len()
            );
            ensure!(r.header("cache-control") == "public, max-age=14400, must-revalidate");
        } else {
            ensure!(
                r.header("content-type") == "image/webp",
                "{fixture} at {width}"
            );
            ensure!(decoded(&r.body)?.0 == image::ImageFormat::WebP);
            ensure!(decoded(&r.body)?.1 == width, "{fixture} at {width}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svg_and_animations_pass_through() -> Result<()> {
    let s = setup(|c| {
        c.dangerously_allow_svg = true;
        c.content_disposition_type = "inline".into();
    })
    .await?;
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec();
    s.origin.put("/i.svg", svg.clone(), &[("etag", "\"v1\"")]);
    let r = get(&s, "url=%2Fi.svg&w=64&q=75", "image/webp").await?;
    ensure!(r.status == 200 && r.header("content-type") == "image/svg+xml");
    ensure!(r.body.as_ref() == svg.as_slice());
    ensure!(r.header("content-disposition") == "inline; filename=\"i.svg\"");
    // Pass-throughs carry the upstream ETag, base64url-encoded.
    ensure!(r.header("etag") == "InYxIg", "etag {}", r.header("etag"));
    let mut gif = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut gif);
        for i in 0..2u8 {
            let frame = RgbaImage::from_pixel(8, 8, image::Rgba([i * 100, 0, 0, 255]));
            enc.encode_frame(image::Frame::new(frame))?;
        }
    }
    s.origin.put("/anim.gif", gif.clone(), &[]);
    let r = get(&s, "url=%2Fanim.gif&w=64&q=75", "image/webp").await?;
    ensure!(r.header("content-type") == "image/gif" && r.body.as_ref() == gif.as_slice());
    ensure!(s.optimizer.transforms() == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_served_then_refreshed() -> Result<()> {
    let s = setup(|c| c.minimum_cache_ttl = 0).await?;
    s.origin
        .put("/s.png", png(64, 64)?, &[("etag", "\"same\"")]);
    let q = "url=%2Fs.png&w=32&q=75";
    let first = get(&s, q, "image/webp").await?;
    ensure!(first.header("x-nextjs-cache") == "MISS");
    ensure!(first.header("cache-control") == "public, max-age=0, must-revalidate");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = get(&s, q, "image/webp").await?;
    ensure!(
        second.header("x-nextjs-cache") == "STALE",
        "{}",
        second.header("x-nextjs-cache")
    );
    ensure!(second.body == first.body);
    // The background refresh fetches the source again; the unchanged upstream ETag means the
    // previous output is reused without a new transform.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.origin.hits("/s.png") < 2 {
        if tokio::time::Instant::now() > deadline {
            bail!("no background refresh");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(s.optimizer.transforms() == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_disk_cache_always_misses() -> Result<()> {
    let s = setup(|c| c.maximum_disk_cache_size = Some(0)).await?;
    s.origin.put("/a.png", png(40, 40)?, &[]);
    for _ in 0..2 {
        let r = get(&s, "url=%2Fa.png&w=32&q=75", "image/webp").await?;
        ensure!(r.header("x-nextjs-cache") == "MISS");
    }
    ensure!(!s.cache_dir.exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn widths_above_the_source_share_one_transform() -> Result<()> {
    let s = setup(|c| c.device_sizes = vec![64, 640, 750, 828, 1080, 3840]).await?;
    s.origin.put("/small.png", png(300, 200)?, &[]);
    // Four keys at once, all at or above the source's 300 px: one decode + encode.
    let mut tasks = Vec::new();
    for w in [640, 750, 828, 3840] {
        let opt = s.optimizer.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = HeaderMap::new();
            h.insert("accept", HeaderValue::from_static("image/webp"));
            let q = format!("url=%2Fsmall.png&w={w}&q=75");
            collect(opt.handle(&Method::GET, &q, &h).await).await
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await??);
    }
    ensure!(
        s.optimizer.transforms() == 1,
        "{} transforms",
        s.optimizer.transforms()
    );
    for g in &got {
        ensure!(g.status == 200 && g.header("x-nextjs-cache") == "MISS");
        ensure!(g.body == got[0].body && g.header("etag") == got[0].header("etag"));
        ensure!(decoded(&g.body)? == (image::ImageFormat::WebP, 300, 200));
    }
    // Each key is its own cache entry (next's layout), served from the cache next time.
    ensure!(wait_for_entries(&s.cache_dir, 4).await? == 4);
    ensure!(
        get(&s, "url=%2Fsmall.png&w=750&q=75", "image/webp")
            .await?
            .header("x-nextjs-cache")
            == "HIT"
    );
    // Another quality, type or a smaller width is another output.
    get(&s, "url=%2Fsmall.png&w=64&q=75", "image/webp").await?;
    get(&s, "url=%2Fsmall.png&w=640&q=75", "image/png").await?;
    ensure!(s.optimizer.transforms() == 3);
    // A changed source of the same size (new bytes, so a new ETag) under the same url is
    // transformed again for a key not cached yet, though the old output is remembered.
    s.origin.put("/small.png", jpeg(300, 200)?, &[]);
    let new = get(&s, "url=%2Fsmall.png&w=1080&q=75", "image/webp").await?;
    ensure!(decoded(&new.body)? == (image::ImageFormat::WebP, 300, 200));
    ensure!(new.body != got[0].body);
    ensure!(s.optimizer.transforms() == 4);
    Ok(())
}

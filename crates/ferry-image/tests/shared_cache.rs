//! The image cache shared through a real `redis-server` (started here on a free loopback port):
//! an image optimized by one optimizer is a hit on another with its own (empty) disk cache, and
//! an unreachable Redis only costs misses.

use std::io::Cursor;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use ferry_image::{
    ImageConfig, ImageError, LocalSource, Optimizer, Options, SharedConfig, Upstream,
};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt as _;

/// Serves one PNG for every local url, counting fetches.
struct OnePng {
    body: Bytes,
    fetches: AtomicUsize,
}

impl LocalSource for OnePng {
    fn fetch(&self, _: String, _: u64) -> BoxFuture<'static, Result<Upstream, ImageError>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let body = self.body.clone();
        async move { Ok(Upstream::new(body, None, None)) }.boxed()
    }
}

/// A redis-server on a free port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server")?;
        let redis = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn png() -> Result<Bytes> {
    let img = image::RgbImage::from_fn(400, 300, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)?;
    Ok(Bytes::from(out))
}

fn optimizer(dir: &tempfile::TempDir, url: &str, source: Arc<OnePng>) -> Arc<Optimizer> {
    let mut options = Options::new(ImageConfig::default(), "", Some(dir.path().into()));
    options.shared = Some(SharedConfig {
        url: url.to_owned(),
        prefix: "ferry:test:image:".to_owned(),
    });
    Optimizer::new(options, source)
}

async fn get(o: &Arc<Optimizer>) -> Result<(String, Bytes)> {
    let mut headers = HeaderMap::new();
    headers.insert("accept", HeaderValue::from_static("image/webp,*/*"));
    let res = o
        .handle(&Method::GET, "url=%2Fa.png&w=256&q=75", &headers)
        .await;
    ensure!(res.status() == 200, "status {}", res.status());
    let cache = res
        .headers()
        .get("x-nextjs-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = tokio::time::timeout(Duration::from_secs(10), res.into_body().collect())
        .await??
        .to_bytes();
    Ok((cache, body))
}

#[tokio::test]
async fn an_image_optimized_on_one_instance_is_a_hit_on_another() -> Result<()> {
    let redis = Redis::start()?;
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let source = Arc::new(OnePng {
        body: png()?,
        fetches: AtomicUsize::new(0),
    });
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = optimizer(&dir_a, &url, source.clone());
    let b = optimizer(&dir_b, &url, source.clone());

    let (cache, first) = get(&a).await?;
    ensure!(cache == "MISS", "first request on A: {cache}");
    ensure!(first.starts_with(b"RIFF"), "not a WebP");
    ensure!(a.transforms() == 1);

    let (cache, second) = get(&b).await?;
    ensure!(cache == "HIT", "B after A: {cache}");
    ensure!(second == first, "B serves other bytes than A made");
    ensure!(b.transforms() == 0, "B transformed the image itself");
    ensure!(
        source.fetches.load(Ordering::SeqCst) == 1,
        "B fetched the source"
    );
    // B keeps it locally too (its disk cache now has the entry).
    ensure!(
        std::fs::read_dir(dir_b.path())?
            .flatten()
            .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
    );

    // Without Redis the optimizers still answer, as misses.
    drop(redis);
    let dir_c = tempfile::tempdir()?;
    let c = optimizer(&dir_c, &url, source.clone());
    let started = Instant::now();
    let (cache, third) = get(&c).await?;
    ensure!(cache == "MISS" && third.starts_with(b"RIFF"));
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "a dead Redis slowed the miss"
    );
    Ok(())
}

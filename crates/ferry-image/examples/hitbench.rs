//! Measures the optimizer's warm-hit path in process: `hitbench <image> [iterations]`.
//! A cached `/_next/image` request costs this much inside `Optimizer::handle`, before any
//! routing or HTTP.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferry_image::{ImageConfig, ImageError, LocalSource, Optimizer, Options, Upstream};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method};

/// Answers every local url with the same file.
struct OneFile(Bytes);

impl LocalSource for OneFile {
    fn fetch(&self, _: String, _: u64) -> BoxFuture<'static, Result<Upstream, ImageError>> {
        let body = self.0.clone();
        async move { Ok(Upstream::new(body, None, None)) }.boxed()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: hitbench <image> [iterations]")?;
    let n: u32 = args.get(2).map_or(Ok(200_000), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let options = Options::new(ImageConfig::default(), "", Some(dir.path().into()));
    let optimizer = Optimizer::new(
        options,
        Arc::new(OneFile(Bytes::from(std::fs::read(path)?))),
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        "accept",
        HeaderValue::from_static("image/avif,image/webp,*/*"),
    );
    let query = "url=%2Fcorpus%2Fphoto.jpg&w=640&q=75";
    let first = optimizer.handle(&Method::GET, query, &headers).await;
    println!("first: {}", first.status());
    let start = Instant::now();
    for _ in 0..n {
        let res = optimizer.handle(&Method::GET, query, &headers).await;
        std::hint::black_box(res);
    }
    println!(
        "hit: {:.2} µs",
        start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
    Ok(())
}

//! The /_next/image optimizer: next start's contract (validation messages and status codes,
//! `Accept` negotiation, headers, ETag / 304, `X-Nextjs-Cache` MISS / HIT / STALE, the disk cache
//! layout) with Rust codecs (pure-Rust decoders, SIMD resizing, mozjpeg, libwebp, rav1e for AVIF).
//! AVIF *sources* are not decoded here (no pure-Rust AV1 decoder): their transform (resize +
//! encode) goes to an [`ExternalTransform`] when the caller gives one (the server: next's own
//! `imageOptimizer`, with sharp, in a worker), everything else (fetch, validation, caching in
//! memory, on disk and in Redis, headers) staying here; without one, or when it fails, they are
//! served as they are, as next start does when sharp is missing or fails.
//!
//! Safety: image dimensions are read from the header and checked against a pixel limit before
//! any pixel buffer is allocated, transforms run on the blocking pool under a semaphore, remote
//! sources are fetched with next's limits (deadline, body size, redirects, no private addresses),
//! and identical concurrent requests share one fetch and one transform; requests whose outputs
//! cannot differ (widths at or above the source's own) share one transform too ([`outputs`]).

#[cfg(feature = "avif-aom")]
pub mod aom;
pub mod cache;
pub mod config;
pub mod detect;
pub mod fetch;
pub mod outputs;
pub mod params;
mod quantize;
mod resample;
pub mod shared;
pub mod transform;
pub mod webp;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferry_http::Body;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use tokio::sync::Semaphore;

pub use cache::{CacheEntry, DiskCache};
pub use config::ImageConfig;
pub use fetch::Upstream;
use outputs::{Outcome, OutputKey, Outputs};
pub use params::Params;
pub use shared::{SharedCache, SharedConfig};

/// Whether a source of `source_type` is served untransformed (animated, or one of next's
/// `BYPASS_TYPES`).
pub fn served_as_is(source_type: &str, buffer: &[u8]) -> bool {
    let animatable = [detect::WEBP, detect::PNG, detect::GIF].contains(&source_type);
    (animatable && detect::is_animated(buffer)) || detect::BYPASS.contains(&source_type)
}

/// The type a `source_type` source is transformed into for the negotiated `mime_type` (empty:
/// keep the source's type, except WebP and AVIF sources, which next turns into JPEG).
pub fn output_type(source_type: &'static str, mime_type: &str) -> &'static str {
    if !mime_type.is_empty() {
        detect::from_extension(detect::extension(mime_type).unwrap_or("")).unwrap_or(detect::WEBP)
    } else if source_type == detect::WEBP || source_type == detect::AVIF {
        detect::JPEG
    } else {
        source_type
    }
}

/// The optimizer's synchronous path for a fetched body, as the server runs it: sniff the type,
/// skip what is served as is (`Ok(None)`, also for bytes that are no image), then decode with
/// the pixel limit, resize to `width`, encode as [`output_type`]. Used by the fuzz target.
pub fn transform_source(
    buffer: &[u8],
    mime_type: &str,
    width: u32,
    quality: u8,
    max_pixels: u64,
) -> Result<Option<(Vec<u8>, &'static str)>, transform::TransformError> {
    let Some(source_type) = detect::content_type(buffer).filter(|t| t.starts_with("image/")) else {
        return Ok(None);
    };
    if source_type == detect::SVG || served_as_is(source_type, buffer) {
        return Ok(None);
    }
    let content_type = output_type(source_type, mime_type);
    transform::optimize(buffer, content_type, width, quality, max_pixels)
        .map(|out| Some((out, content_type)))
}

/// Whether this build decodes `source_type` sources (AVIF does not: no pure-Rust AV1 decoder).
pub fn decodable(source_type: &str) -> bool {
    source_type != detect::AVIF
}

/// A transform of a source this build cannot [decode](decodable), run elsewhere (the server:
/// next's `imageOptimizer` with sharp in a worker).
pub trait ExternalTransform: Send + Sync + std::fmt::Debug + 'static {
    /// `source` resized to `width` (never enlarged) and encoded as `content_type` at `quality`,
    /// as next's `optimizeImage`; `Err` says why it failed (the source is then served as it is,
    /// as next does when sharp fails).
    fn transform(
        &self,
        source: Bytes,
        content_type: &'static str,
        width: u32,
        quality: u8,
    ) -> BoxFuture<'static, Result<Bytes, String>>;
}

/// next's cache key version (`CACHE_VERSION`), part of every key.
const CACHE_VERSION: &str = "4";

/// An error answered to the client: next's `ImageError` (status and plain message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ImageError {
    /// HTTP status (next turns anything below 400 into 500).
    pub status: u16,
    /// Response body.
    pub message: String,
}

impl ImageError {
    /// An error with next's status rule (below 400 becomes 500).
    pub fn new(status: u16, message: &str) -> Self {
        Self {
            status: if status >= 400 { status } else { 500 },
            message: message.to_owned(),
        }
    }

    /// A failure next does not turn into an `ImageError` (its error page: 500).
    pub fn internal() -> Self {
        Self::new(500, "Internal Server Error")
    }
}

impl ferry_http::HttpError for ImageError {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Where local urls (`/foo.png`) come from: next runs them through its own routing.
pub trait LocalSource: Send + Sync + 'static {
    /// Fetches `href` (a path and query) as the server would answer it.
    fn fetch(
        &self,
        href: String,
        max_body: u64,
    ) -> BoxFuture<'static, Result<Upstream, ImageError>>;
}

/// A [`LocalSource`] that asks the server itself over loopback, marked with a header so the
/// server can refuse to route the request back to the optimizer.
pub struct LoopbackSource {
    origin: String,
    marker: (http::HeaderName, HeaderValue),
    client: reqwest::Client,
}

impl LoopbackSource {
    /// Fetches from `origin` (`http://127.0.0.1:3000`) with `marker` set on every request.
    pub fn new(
        origin: String,
        marker: (http::HeaderName, HeaderValue),
    ) -> Result<Self, ImageError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|_| ImageError::internal())?;
        Ok(Self {
            origin,
            marker,
            client,
        })
    }
}

impl LocalSource for LoopbackSource {
    fn fetch(
        &self,
        href: String,
        max_body: u64,
    ) -> BoxFuture<'static, Result<Upstream, ImageError>> {
        let req = self
            .client
            .get(format!("{}{href}", self.origin))
            .header(self.marker.0.clone(), self.marker.1.clone());
        async move {
            let invalid = |status: u16| {
                ImageError::new(
                    status,
                    "\"url\" parameter is valid but internal response is invalid",
                )
            };
            let failed = |err: &dyn std::fmt::Display| {
                tracing::error!("upstream image response failed for {href}: {err}");
                ImageError::new(
                    500,
                    "\"url\" parameter is valid but upstream response is invalid",
                )
            };
            let res = req.send().await.map_err(|e| failed(&e))?;
            let status = res.status().as_u16();
            if !(200..=299).contains(&status) {
                tracing::error!("internal image response failed for {href} {status}");
                return Err(invalid(status));
            }
            let header = |n: http::header::HeaderName| {
                res.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let cache_control = header(http::header::CACHE_CONTROL);
            let etag = header(http::header::ETAG);
            let mut res = res;
            let mut body = bytes::BytesMut::new();
            while let Some(chunk) = res.chunk().await.map_err(|e| failed(&e))? {
                if (body.len() + chunk.len()) as u64 > max_body {
                    tracing::error!("internal image response exceeded maximum size for {href}");
                    return Err(invalid(413));
                }
                body.extend_from_slice(&chunk);
            }
            if body.is_empty() {
                tracing::error!("internal image response is empty for {href}");
                return Err(invalid(400));
            }
            Ok(Upstream::new(body.freeze(), cache_control, etag.as_deref()))
        }
        .boxed()
    }
}

/// Runs CPU-bound `f` off the async scheduler; `Err` if it panicked. On a multi-thread runtime
/// it runs on the current worker thread (`block_in_place`: the worker's other tasks move to
/// another thread), so a cold request does not wait for a blocking-pool thread to be scheduled
/// and then for the worker to be woken again: on a busy core each of those waits can last a
/// scheduler slice. Elsewhere (a current-thread runtime) it goes to the blocking pool.
async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ()> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| ())
        })
    } else {
        tokio::task::spawn_blocking(f).await.map_err(|_| ())
    }
}

/// How an optimizer is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// next.config `images`.
    pub config: ImageConfig,
    /// next.config `basePath` (for the immutable `/_next/static/media` check).
    pub base_path: String,
    /// Disk cache directory (next's `<distDir>/cache/images`); `None` for no disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Transforms allowed at once.
    pub concurrency: usize,
    /// Largest source accepted, in pixels (width × height from the header).
    pub max_input_pixels: u64,
    /// Redis shared by the instances of a deployment (`--cache-url`); `None`: this instance's
    /// caches only.
    pub shared: Option<SharedConfig>,
    /// Pause before each disk cache file write: zero, but in tests (which use it to show that
    /// no response waits for a write).
    pub cache_write_delay: std::time::Duration,
    /// Where sources this build cannot decode are transformed; `None`: served as they are.
    pub external: Option<Arc<dyn ExternalTransform>>,
}

impl Options {
    /// Options for `config` with next's defaults: one transform per core, sharp's pixel limit.
    pub fn new(config: ImageConfig, base_path: &str, cache_dir: Option<PathBuf>) -> Self {
        Self {
            config,
            base_path: base_path.to_owned(),
            cache_dir,
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_input_pixels: config::DEFAULT_MAX_INPUT_PIXELS,
            shared: None,
            cache_write_delay: std::time::Duration::ZERO,
            external: None,
        }
    }
}

type Flight = Shared<BoxFuture<'static, Result<Arc<CacheEntry>, ImageError>>>;

/// What a flight writes to the disk cache once its waiters have their answer: the entry and
/// when it expires (ms since the epoch). It is in the memory tier already.
struct Store {
    entry: Arc<CacheEntry>,
    expire_at: u64,
}

/// A validated request, remembered by its query and `Accept` so a repeated request (every warm
/// hit) skips validation and key hashing, with the response headers last built for it.
struct Memo {
    params: Params,
    key: String,
    /// Headers of the 200 for one entry (weak: the memory tier decides how long bytes live).
    head: Mutex<Option<(std::sync::Weak<CacheEntry>, HeaderMap)>>,
}

/// Requests remembered at most; the table is emptied when full (a burst of distinct
/// requests costs a re-validation, never memory).
const MEMO_ENTRIES: usize = 2048;

/// The image optimizer of one app.
pub struct Optimizer {
    options: Options,
    cache: Option<DiskCache>,
    shared: Option<SharedCache>,
    local: Arc<dyn LocalSource>,
    /// Requests past the cache (fetch + transform) at once: a queued request holds only its
    /// parameters, so a burst of cold requests keeps at most this many sources in memory.
    pipeline: Semaphore,
    /// Decodes + encodes at once (CPU-bound, one per core by default).
    permits: Semaphore,
    inflight: Mutex<HashMap<String, Flight>>,
    /// Transforms shared by keys with identical outputs (widths above the source's).
    outputs: Outputs,
    memo: Mutex<HashMap<String, Arc<Memo>>>,
    /// `content-security-policy`, parsed once.
    csp: Option<HeaderValue>,
    transforms: AtomicU64,
}

/// Output types this build can encode.
pub const ENCODABLE: &[&str] = &[detect::AVIF, detect::WEBP, detect::JPEG, detect::PNG];

impl Optimizer {
    /// An optimizer reading local urls from `local`.
    pub fn new(options: Options, local: Arc<dyn LocalSource>) -> Arc<Self> {
        let cache = options
            .cache_dir
            .clone()
            .and_then(|dir| DiskCache::new(dir, options.config.maximum_disk_cache_size))
            .map(|c| c.with_write_delay(options.cache_write_delay));
        let concurrency = options.concurrency.max(1);
        let csp = HeaderValue::from_str(&options.config.content_security_policy).ok();
        let shared = options
            .shared
            .as_ref()
            .and_then(|c| match SharedCache::new(c) {
                Ok(s) => Some(s),
                Err(err) => {
                    tracing::error!("{err}; images are cached by this instance only");
                    None
                }
            });
        Arc::new(Self {
            options,
            cache,
            shared,
            local,
            // Twice the transforms: the next sources are fetched while the current ones encode.
            pipeline: Semaphore::new(concurrency * 2),
            permits: Semaphore::new(concurrency),
            inflight: Mutex::new(HashMap::new()),
            outputs: Outputs::default(),
            memo: Mutex::new(HashMap::new()),
            csp,
            transforms: AtomicU64::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ImageConfig {
        &self.options.config
    }

    /// Whether every type in `formats` can be produced here (else the caller needs another
    /// optimizer for such apps).
    pub fn supports_formats(config: &ImageConfig) -> bool {
        config
            .formats
            .iter()
            .all(|f| ENCODABLE.contains(&f.as_str()))
    }

    /// How many transforms (decode + encode) have run.
    pub fn transforms(&self) -> u64 {
        self.transforms.load(Ordering::Relaxed)
    }

    /// Answers a `/_next/image` request (`query` without the `?`).
    pub async fn handle(
        self: &Arc<Self>,
        method: &Method,
        query: &str,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let memo = match self.memo(query, headers) {
            Ok(m) => m,
            Err(message) => return plain(400, &message),
        };
        let (entry, x_cache) = match self.entry(&memo.key, &memo.params).await {
            Ok(found) => found,
            Err(err) => return plain(err.status, &err.message),
        };
        self.respond(method, headers, &memo, &entry, x_cache)
    }

    /// The validated parameters and cache key for a query and `Accept`, remembered.
    fn memo(&self, query: &str, headers: &HeaderMap) -> Result<Arc<Memo>, String> {
        let accept = headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        // The negotiated type depends on `Accept` only through `formats`, which is fixed.
        let id = format!("{}\n{query}", accept.unwrap_or(""));
        if let Some(m) = self.memo.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(m);
        }
        let params =
            params::validate(query, accept, &self.options.config, &self.options.base_path)?;
        let memo = Arc::new(Memo {
            key: cache_key(&params),
            params,
            head: Mutex::new(None),
        });
        if let Ok(mut map) = self.memo.lock() {
            if map.len() >= MEMO_ENTRIES {
                map.clear();
            }
            map.insert(id, Arc::clone(&memo));
        }
        Ok(memo)
    }

    /// The entry for a request and how it was found.
    async fn entry(
        self: &Arc<Self>,
        key: &str,
        params: &Params,
    ) -> Result<(Arc<CacheEntry>, &'static str), ImageError> {
        if let Some(cache) = &self.cache
            && let Some((entry, stale)) = cache.get(key).await
        {
            if !stale {
                return Ok((entry, "HIT"));
            }
            // Serve the stale entry; one background refresh per key.
            drop(self.flight(key, params, Some(Arc::clone(&entry))));
            return Ok((entry, "STALE"));
        }
        if let Some(shared) = &self.shared
            && let Some((entry, expire_at)) = shared.get(key).await
        {
            // Made by another instance: kept here too, and served as next would its own.
            let entry = Arc::new(entry);
            if let Some(cache) = &self.cache {
                cache.put(key, &entry, expire_at).await;
            }
            if cache::now_ms() <= expire_at {
                return Ok((entry, "HIT"));
            }
            drop(self.flight(key, params, Some(Arc::clone(&entry))));
            return Ok((entry, "STALE"));
        }
        let entry = self.flight(key, params, None).await?;
        Ok((entry, "MISS"))
    }

    /// The shared fetch + transform for `key`, started unless one is running.
    fn flight(
        self: &Arc<Self>,
        key: &str,
        params: &Params,
        previous: Option<Arc<CacheEntry>>,
    ) -> Flight {
        let Ok(mut map) = self.inflight.lock() else {
            return futures_util::future::ready(Err(ImageError::internal()))
                .boxed()
                .shared();
        };
        if let Some(f) = map.get(key) {
            return f.clone();
        }
        let this = Arc::clone(self);
        let (k, p) = (key.to_owned(), params.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Its own task: a client going away does not cancel the work others wait on.
        // The waiters are answered as soon as the entry exists (it is in the memory tier by
        // then, so a new request for the key is a hit); the file is written after, and the
        // flight stays registered until it is, so the key is never transformed twice.
        tokio::spawn(async move {
            let (result, store) = this.generate(&k, &p, previous).await;
            let _ = tx.send(result);
            if let (Some(cache), Some(store)) = (&this.cache, store) {
                cache.put(&k, &store.entry, store.expire_at).await;
            }
            if let Ok(mut map) = this.inflight.lock() {
                map.remove(&k);
            }
        });
        // A dropped sender (the task panicked) is an internal error.
        let flight = async move { rx.await.unwrap_or_else(|_| Err(ImageError::internal())) }
            .boxed()
            .shared();
        map.insert(key.to_owned(), flight.clone());
        flight
    }

    /// Fetch, transform, store (next's response generator + `ImageOptimizerCache.set`): the
    /// result, in the memory tier (and Redis) already, and what is left to write to disk.
    async fn generate(
        &self,
        key: &str,
        params: &Params,
        previous: Option<Arc<CacheEntry>>,
    ) -> (Result<Arc<CacheEntry>, ImageError>, Option<Store>) {
        let cfg = &self.options.config;
        let Ok(_pipeline) = self.pipeline.acquire().await else {
            return (Err(ImageError::internal()), None);
        };
        let upstream = if params.is_absolute {
            fetch::fetch_external(
                &params.href,
                cfg.dangerously_allow_local_ip,
                cfg.maximum_response_body,
                cfg.maximum_redirects,
            )
            .await
        } else {
            self.local
                .fetch(params.href.clone(), cfg.maximum_response_body)
                .await
        };
        let result = match upstream {
            Ok(up) => self
                .optimize(up, params, previous.as_deref())
                .await
                .map(Arc::new),
            Err(e) => Err(e),
        };
        // Redis before the answer: another instance asked right after must find it there.
        if let (Some(shared), Ok(entry)) = (&self.shared, &result) {
            let expire_at = cache::expire_at(entry, cfg.minimum_cache_ttl);
            shared.set(key, entry, expire_at).await;
        }
        let Some(cache) = &self.cache else {
            return (result, None);
        };
        let store = match &result {
            Ok(entry) => Some(Store {
                entry: Arc::clone(entry),
                expire_at: cache::expire_at(entry, cfg.minimum_cache_ttl),
            }),
            // next keeps the previous entry and retries it soon (3 to 30 s).
            Err(_) => previous.map(|prev| {
                let mut prev = CacheEntry::clone(&prev);
                prev.max_age = prev.max_age.clamp(3, 30);
                let entry = Arc::new(prev);
                Store {
                    expire_at: cache::expire_at(&entry, 0),
                    entry,
                }
            }),
        };
        // In memory before the waiters are answered: the next request for the key is a hit
        // while the file is still being written.
        if let Some(store) = &store {
            cache.remember(key, &store.entry, store.expire_at);
        }
        (result, store)
    }

    /// next's `imageOptimizerTransform`.
    async fn optimize(
        &self,
        upstream: Upstream,
        params: &Params,
        previous: Option<&CacheEntry>,
    ) -> Result<CacheEntry, ImageError> {
        let cfg = &self.options.config;
        let max_age = cfg
            .minimum_cache_ttl
            .max(fetch::max_age(upstream.cache_control.as_deref()));
        let Some(source_type) =
            detect::content_type(&upstream.buffer).filter(|t| t.starts_with("image/"))
        else {
            tracing::error!(
                "The requested resource isn't a valid image for {}",
                params.href
            );
            return Err(ImageError::new(
                400,
                "The requested resource isn't a valid image.",
            ));
        };
        if source_type == detect::SVG && !cfg.dangerously_allow_svg {
            tracing::error!(
                "The requested resource \"{}\" has type \"{source_type}\" but dangerouslyAllowSVG is disabled",
                params.href
            );
            return Err(ImageError::new(
                400,
                "\"url\" parameter is valid but image type is not allowed",
            ));
        }
        let as_is = |max_age: u64| CacheEntry {
            buffer: upstream.buffer.clone(),
            extension: detect::extension(source_type).unwrap_or("bin").to_owned(),
            etag: upstream.etag.clone(),
            upstream_etag: upstream.etag.clone(),
            max_age,
        };
        if served_as_is(source_type, &upstream.buffer) {
            return Ok(as_is(max_age));
        }
        let content_type = output_type(source_type, &params.mime_type);
        let extension = detect::extension(content_type).unwrap_or("bin").to_owned();
        if let Some(prev) = previous
            && prev.upstream_etag != prev.etag
            && upstream.etag == prev.upstream_etag
        {
            return Ok(CacheEntry {
                extension,
                max_age: if prev.max_age > 0 {
                    prev.max_age
                } else {
                    max_age
                },
                ..prev.clone()
            });
        }
        if !decodable(source_type)
            && let Some(external) = &self.options.external
        {
            // Not under a transform permit: the work is another process's, bounded there.
            tracing::debug!(
                "transforming {} ({source_type} source) into {content_type} at w={} q={} with next's optimizer in a worker",
                params.href,
                params.width,
                params.quality
            );
            let out = external
                .transform(
                    upstream.buffer.clone(),
                    content_type,
                    params.width,
                    params.quality,
                )
                .await;
            return Ok(match out {
                Ok(bytes) => CacheEntry {
                    etag: fetch::hash(&[&bytes]),
                    buffer: bytes,
                    extension,
                    upstream_etag: upstream.etag.clone(),
                    max_age,
                },
                // next serves the source as it is when sharp fails (or is missing).
                Err(err) => {
                    tracing::warn!("cannot optimize {}: {err}; serving it as is", params.href);
                    as_is(cfg.minimum_cache_ttl)
                }
            });
        }
        let key = OutputKey::new(
            &params.href,
            &upstream.etag,
            &upstream.buffer,
            content_type,
            params.width,
            params.quality,
        );
        let outcome = self
            .outputs
            .get_or_make(key, || {
                self.transform(&upstream.buffer, content_type, params)
            })
            .await;
        match outcome {
            Outcome::Encoded { bytes, etag } => Ok(CacheEntry {
                buffer: bytes,
                extension,
                etag,
                upstream_etag: upstream.etag.clone(),
                max_age,
            }),
            Outcome::TooLarge(reason) => {
                tracing::error!("refusing to optimize {}: {reason}", params.href);
                Err(ImageError::new(
                    400,
                    "\"url\" parameter is valid but the image is too large to optimize",
                ))
            }
            // next serves the source as it is when sharp fails.
            Outcome::Failed(reason) => {
                tracing::warn!(
                    "cannot optimize {}: {reason}; serving it as is",
                    params.href
                );
                Ok(as_is(cfg.minimum_cache_ttl))
            }
        }
    }

    /// One decode + encode on the blocking pool, under a transform permit.
    async fn transform(
        &self,
        source: &Bytes,
        content_type: &'static str,
        params: &Params,
    ) -> Outcome {
        let Ok(_permit) = self.permits.acquire().await else {
            return Outcome::Failed("the optimizer is shutting down".to_owned());
        };
        self.transforms.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            "optimizing {} into {content_type} at w={} q={}",
            params.href,
            params.width,
            params.quality
        );
        let input = source.clone();
        let (width, quality, limit) = (params.width, params.quality, self.options.max_input_pixels);
        let out =
            run_blocking(move || transform::optimize(&input, content_type, width, quality, limit))
                .await;
        match out {
            Ok(Ok(bytes)) => Outcome::encoded(Bytes::from(bytes)),
            Ok(Err(err @ transform::TransformError::TooLarge { .. })) => {
                Outcome::TooLarge(err.to_string())
            }
            Ok(Err(err)) => Outcome::Failed(err.to_string()),
            Err(()) => Outcome::Failed("the transform panicked".to_owned()),
        }
    }

    /// next's `sendResponse`.
    fn respond(
        &self,
        method: &Method,
        req: &HeaderMap,
        memo: &Memo,
        entry: &Arc<CacheEntry>,
        x_cache: &'static str,
    ) -> Response<Body> {
        let mut head = None;
        if let Ok(built) = memo.head.lock()
            && let Some((weak, headers)) = &*built
            && std::ptr::eq(weak.as_ptr(), Arc::as_ptr(entry))
        {
            head = Some(headers.clone());
        }
        let mut head = match head {
            Some(h) => h,
            None => {
                let built = self.head(&memo.params, entry);
                if let Ok(mut slot) = memo.head.lock() {
                    *slot = Some((Arc::downgrade(entry), built.clone()));
                }
                built
            }
        };
        if is_fresh(req, &entry.etag) {
            // 304: the validators and caching headers only.
            for name in [
                http::header::CONTENT_TYPE,
                http::header::CONTENT_DISPOSITION,
                http::header::CONTENT_SECURITY_POLICY,
                http::header::CONTENT_LENGTH,
            ] {
                head.remove(name);
            }
            head.remove("x-nextjs-cache");
            let mut res = Response::new(ferry_http::empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            *res.headers_mut() = head;
            return res;
        }
        head.insert("x-nextjs-cache", HeaderValue::from_static(x_cache));
        let body = if method == Method::HEAD {
            ferry_http::empty()
        } else {
            ferry_http::full(entry.buffer.clone())
        };
        let mut res = Response::new(body);
        *res.headers_mut() = head;
        res
    }

    /// The 200's headers for `entry`, in next's order (`x-nextjs-cache` goes before
    /// `content-length` and is filled in per response).
    fn head(&self, params: &Params, entry: &CacheEntry) -> HeaderMap {
        let cfg = &self.options.config;
        let mut h = HeaderMap::with_capacity(9);
        h.insert(http::header::VARY, HeaderValue::from_static("Accept"));
        let cache_control = if params.is_static {
            HeaderValue::from_static("public, max-age=315360000, immutable")
        } else {
            HeaderValue::from_str(&format!(
                "public, max-age={}, must-revalidate",
                entry.max_age
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("public, max-age=0, must-revalidate"))
        };
        h.insert(http::header::CACHE_CONTROL, cache_control);
        if !entry.etag.is_empty()
            && let Ok(v) = HeaderValue::from_str(&entry.etag)
        {
            h.insert(http::header::ETAG, v);
        }
        let content_type = detect::from_extension(&entry.extension);
        if let Some(ct) = content_type {
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        let disposition = content_disposition(
            &file_name(&params.href, content_type),
            &cfg.content_disposition_type,
        );
        if let Ok(v) = HeaderValue::from_bytes(&disposition) {
            h.insert(http::header::CONTENT_DISPOSITION, v);
        }
        if let Some(csp) = &self.csp {
            h.insert(http::header::CONTENT_SECURITY_POLICY, csp.clone());
        }
        h.insert("x-nextjs-cache", HeaderValue::from_static("MISS"));
        h.insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(entry.buffer.len()),
        );
        h
    }
}

/// next's `getCacheKey`: hash of version, href, width, quality, negotiated type.
pub fn cache_key(p: &Params) -> String {
    fetch::hash(&[
        CACHE_VERSION.as_bytes(),
        p.href.as_bytes(),
        p.width.to_string().as_bytes(),
        p.quality.to_string().as_bytes(),
        p.mime_type.as_bytes(),
    ])
}

/// An error as next sends it: the status and the message, no content type.
fn plain(status: u16, message: &str) -> Response<Body> {
    let mut res = Response::new(ferry_http::full(Bytes::from(message.to_owned())));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res
}

/// `fresh` (as next's `sendEtagResponse` uses it) for an entry with no Last-Modified.
fn is_fresh(req: &HeaderMap, etag: &str) -> bool {
    let get = |n: http::header::HeaderName| req.get(n).and_then(|v| v.to_str().ok());
    let inm = get(http::header::IF_NONE_MATCH);
    let ims = get(http::header::IF_MODIFIED_SINCE);
    if inm.is_none() && ims.is_none() {
        return false;
    }
    if get(http::header::CACHE_CONTROL)
        .is_some_and(|cc| cc.split(',').any(|d| d.trim() == "no-cache"))
    {
        return false;
    }
    if let Some(inm) = inm
        && inm != "*"
    {
        if etag.is_empty() {
            return false;
        }
        let weak = format!("W/{etag}");
        let matched = inm
            .split(',')
            .map(str::trim)
            .any(|t| t == etag || t == weak || format!("W/{t}") == etag);
        if !matched {
            return false;
        }
    }
    // No Last-Modified is ever sent, so If-Modified-Since alone never matches.
    ims.is_none()
}

/// next's `getFileNameWithExtension`.
fn file_name(href: &str, content_type: Option<&str>) -> String {
    let path = href.split('?').next().unwrap_or("");
    let last = path.rsplit('/').next().unwrap_or("");
    let ext = content_type.and_then(detect::extension);
    match ext {
        Some(ext) if !last.is_empty() => {
            format!("{}.{ext}", last.split('.').next().unwrap_or(""))
        }
        _ => "image.bin".to_owned(),
    }
}

/// The `content-disposition` package's header for `name` (latin-1 bytes; a UTF-8 `filename*`
/// when the name is not latin-1 or holds percent escapes).
fn content_disposition(name: &str, kind: &str) -> Vec<u8> {
    let latin1 = name
        .chars()
        .all(|c| (c as u32) >= 0x20 && (c as u32) <= 0xff && c != '\x7f');
    let fallback: String = name
        .chars()
        .map(|c| if (c as u32) <= 0xff { c } else { '?' })
        .collect();
    let quoted = |s: &str| -> Vec<u8> {
        let mut out = vec![b'"'];
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push(b'\\');
            }
            out.push(c as u32 as u8);
        }
        out.push(b'"');
        out
    };
    let has_escape = name
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    let mut out = format!("{kind}; filename=").into_bytes();
    out.extend(quoted(&fallback));
    if !latin1 || has_escape {
        out.extend_from_slice(b"; filename*=UTF-8''");
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                out.push(b);
            } else {
                out.extend(format!("%{b:02X}").into_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_matches_the_package() {
        let cd =
            |n: &str| String::from_utf8_lossy(&content_disposition(n, "attachment")).into_owned();
        assert_eq!(cd("ferry.webp"), "attachment; filename=\"ferry.webp\"");
        assert_eq!(
            cd("caf%C3%A9.webp"),
            "attachment; filename=\"caf%C3%A9.webp\"; filename*=UTF-8''caf%25C3%25A9.webp"
        );
        assert_eq!(
            cd("日本.png"),
            "attachment; filename=\"??.png\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.png"
        );
        assert_eq!(cd("a\"b.png"), "attachment; filename=\"a\\\"b.png\"");
        assert_eq!(
            content_disposition("café.webp", "inline")[..8],
            *b"inline; "
        );
        assert_eq!(
            file_name("/a/ferry.png?v=1", Some(detect::WEBP)),
            "ferry.webp"
        );
        assert_eq!(file_name("/a/x.tar.gz", Some(detect::PNG)), "x.png");
        assert_eq!(file_name("/a/", Some(detect::PNG)), "image.bin");
    }

    #[test]
    fn fresh_follows_the_package() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(is_fresh(&h(&[("if-none-match", "abc")]), "abc"));
        assert!(is_fresh(&h(&[("if-none-match", "x, W/abc")]), "abc"));
        assert!(is_fresh(&h(&[("if-none-match", "*")]), "abc"));
        assert!(!is_fresh(&h(&[("if-none-match", "abd")]), "abc"));
        assert!(!is_fresh(&h(&[]), "abc"));
        assert!(!is_fresh(
            &h(&[("if-none-match", "abc"), ("cache-control", "no-cache")]),
            "abc"
        ));
        assert!(!is_fresh(
            &h(&[("if-modified-since", "Sat, 01 Jan 2000 00:00:00 GMT")]),
            "abc"
        ));
    }

    /// The showcase's AVIF and PNG, served as local urls.
    struct Files;

    const AVIF_SOURCE: &[u8] = include_bytes!("../../../examples/showcase/public/ferry.avif");
    const PNG_SOURCE: &[u8] = include_bytes!("../../../examples/showcase/public/ferry.png");

    impl LocalSource for Files {
        fn fetch(&self, href: String, _: u64) -> BoxFuture<'static, Result<Upstream, ImageError>> {
            let body = match href.as_str() {
                "/ferry.avif" => Ok(Bytes::from_static(AVIF_SOURCE)),
                "/ferry.png" => Ok(Bytes::from_static(PNG_SOURCE)),
                _ => Err(ImageError::new(404, "not found")),
            };
            futures_util::future::ready(body.map(|b| Upstream::new(b, None, None))).boxed()
        }
    }

    /// Answers every transform with `answer`, recording what it was asked.
    #[derive(Debug)]
    struct Recorder {
        answer: Result<Bytes, String>,
        calls: Mutex<Vec<(usize, &'static str, u32, u8)>>,
    }

    impl ExternalTransform for Recorder {
        fn transform(
            &self,
            source: Bytes,
            content_type: &'static str,
            width: u32,
            quality: u8,
        ) -> BoxFuture<'static, Result<Bytes, String>> {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push((source.len(), content_type, width, quality));
            }
            futures_util::future::ready(self.answer.clone()).boxed()
        }
    }

    async fn get(o: &Arc<Optimizer>, query: &str, accept: &'static str) -> (HeaderMap, Bytes) {
        use http_body_util::BodyExt as _;
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, HeaderValue::from_static(accept));
        let res = o.handle(&Method::GET, query, &h).await;
        assert_eq!(res.status(), 200, "{query}");
        let head = res.headers().clone();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (head, body)
    }

    fn optimizer(external: Option<Arc<Recorder>>, dir: &std::path::Path) -> Arc<Optimizer> {
        let mut options = Options::new(ImageConfig::default(), "", Some(dir.to_owned()));
        options.external = external.map(|e| e as Arc<dyn ExternalTransform>);
        Optimizer::new(options, Arc::new(Files))
    }

    #[tokio::test]
    async fn avif_sources_go_to_the_external_transform_and_are_cached_here() {
        let dir = tempfile::tempdir().expect("tempdir");
        let external = Arc::new(Recorder {
            answer: Ok(Bytes::from_static(b"RIFF....WEBP from elsewhere")),
            calls: Mutex::new(Vec::new()),
        });
        let o = optimizer(Some(Arc::clone(&external)), dir.path());
        let q = "url=%2Fferry.avif&w=256&q=75";
        let (miss, body) = get(&o, q, "image/webp,*/*").await;
        assert_eq!(miss["x-nextjs-cache"], "MISS");
        assert_eq!(miss["content-type"], "image/webp");
        assert_eq!(&body[..], b"RIFF....WEBP from elsewhere");
        let (hit, again) = get(&o, q, "image/webp,*/*").await;
        assert_eq!(hit["x-nextjs-cache"], "HIT");
        assert_eq!((again, &hit["etag"]), (body, &miss["etag"]));
        // No Accept match: next turns an AVIF source into JPEG.
        get(&o, q, "*/*").await;
        // Other sources stay in Rust.
        let (png, _) = get(&o, "url=%2Fferry.png&w=256&q=75", "image/webp").await;
        assert_eq!(png["content-type"], "image/webp");
        let calls = external.calls.lock().expect("calls").clone();
        assert_eq!(
            calls,
            vec![
                (AVIF_SOURCE.len(), detect::WEBP, 256, 75),
                (AVIF_SOURCE.len(), detect::JPEG, 256, 75),
            ]
        );
        assert_eq!(o.transforms(), 1, "only the PNG was transformed in Rust");
    }

    #[tokio::test]
    async fn avif_sources_are_served_as_they_are_when_the_transform_fails_or_is_missing() {
        for external in [
            Some(Arc::new(Recorder {
                answer: Err("Module `sharp` not found".to_owned()),
                calls: Mutex::new(Vec::new()),
            })),
            None,
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let o = optimizer(external, dir.path());
            let (head, body) = get(&o, "url=%2Fferry.avif&w=256&q=75", "image/webp").await;
            assert_eq!(head["content-type"], "image/avif");
            assert_eq!(&body[..], AVIF_SOURCE);
            // next's fallback: the minimum TTL, not the upstream's.
            assert_eq!(
                head["cache-control"],
                "public, max-age=14400, must-revalidate"
            );
        }
    }

    #[test]
    fn cache_key_matches_next() {
        // node -e 'getHash([4, "/ferry.png", 640, 75, "image/webp"])' with next's extract-etag.
        let p = Params {
            href: "/ferry.png".into(),
            is_absolute: false,
            is_static: false,
            width: 640,
            quality: 75,
            mime_type: "image/webp".into(),
        };
        assert_eq!(cache_key(&p), fetch::hash(&[b"4/ferry.png64075image/webp"]));
    }
}

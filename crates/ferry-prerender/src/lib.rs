//! The prerender / ISR cache: seeds from the bundle, stale-while-revalidate state, on-demand invalidation.
//!
//! Headers measured from `next start` 16.4.6 on `/tmp/ref/showcase` (and mirrored by
//! [`PrerenderCache::respond`]):
//!
//! | request | status | headers next start sends |
//! |---|---|---|
//! | `GET /` (app, static) | 200 | `Vary: rsc, next-router-state-tree, next-router-prefetch, next-router-segment-prefetch, Accept-Encoding`, `x-nextjs-cache: HIT`, `x-nextjs-prerender: 1` (twice for a build seed: once from the seed headers, once added), `x-nextjs-stale-time: 300`, `X-Powered-By: Next.js`, `Cache-Control: s-maxage=31536000`, `ETag: "6vdg5di8514v3"` (strong, fnv1a52 of the body), `Content-Type: text/html; charset=utf-8`, `Content-Length` |
//! | `GET /isr` (revalidate 5, expire 31536000) | 200 | as above with `Cache-Control: s-maxage=5, stale-while-revalidate=31535995`; first hit after start `x-nextjs-cache: STALE` (seed age = file mtime), then `HIT` with new content; after 5 s `STALE` (old body) then `HIT` (new body and ETag) |
//! | `GET /isr` + `rsc: 1` | 307 | `location: /isr?_rsc` (no `_rsc` query → redirect; the router's job) |
//! | `GET /isr?_rsc` + `rsc: 1` | 200 | same Vary / x-nextjs-* / Cache-Control, `Content-Type: text/x-component`, **no ETag, no X-Powered-By**, chunked |
//! | `GET /blog/hello` | 200 | like `/` (`s-maxage=31536000`), own ETag |
//! | `GET /legacy/static` (pages, revalidate 10) | 200 | `x-nextjs-cache`, `Cache-Control: s-maxage=10, stale-while-revalidate=31535990`, `X-Powered-By`, `ETag`, `Content-Type: text/html; charset=utf-8`, `Vary: Accept-Encoding` only (no RSC vary, no x-nextjs-prerender/stale-time) |
//! | `GET /_next/data/<id>/legacy/static.json` | 200 | `x-nextjs-matched-path: /legacy/static`, `x-nextjs-cache`, `Cache-Control` as the page, `ETag`, `Content-Type: application/json; charset=utf-8`, `Vary: Accept-Encoding`; no X-Powered-By |
//! | HEAD | 200 | same headers, identity `Content-Length`, no body |
//! | `If-None-Match` (weak compare) | 304 | all of the above except Content-Type/Content-Length; Vary without `Accept-Encoding` |
//! | `Accept-Encoding: gzip` | 200 | gzip on the fly, chunked, same strong ETag |
//! | `Range` | 200 | ranges ignored |
//!
//! Deliberate differences: `x-nextjs-prerender` is sent once; `Content-Length` is sent for RSC
//! bodies too; compressed bodies are computed once per entry (Brotli or gzip, `br` preferred) and
//! sent with their `Content-Length`; a 304 keeps `Accept-Encoding` in `Vary` (RFC 9110 §15.4.5);
//! `x-next-cache-tags` is never sent to clients (next start does not either).

mod bypass;
pub mod codec;
mod data;
mod disk;
pub mod etag;
mod on_demand;
mod redis_store;
pub mod store;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ferry_http::{Body, HttpError};
use ferry_manifest::{Encoding, FunctionKind, Manifest, Prerender};
use ferry_static::{is_compressible, negotiate};
use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

pub use bypass::BypassRule;
pub use data::{DATA_PREFIX, DataEntry, DataHit, TagMarks, data_key};
pub use disk::DiskStore;
pub use etag::generate_etag;
pub use on_demand::DEFAULT_ON_DEMAND_PAGES;
pub use on_demand::is_bot;
pub use redis_store::{RedisOptions, RedisStore};
pub use store::{BoxFuture, CacheStore, MemoryStore};

/// `CACHE_ONE_YEAR_SECONDS`: next's `s-maxage` for entries that never revalidate.
pub const CACHE_ONE_YEAR: u64 = 31_536_000;
/// A regeneration that neither stored nor failed within this time is presumed lost: the next
/// stale lookup may start another one (also the TTL of the shared regeneration lock).
pub const DEFAULT_REGENERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// After another instance was found regenerating a group, this instance asks again no sooner
/// than this (its new entry normally arrives well before).
const LOCK_RETRY: Duration = Duration::from_secs(1);
/// How often [`PrerenderCache::lookup_after_regeneration`] checks whether the group's
/// regeneration ended (a render takes far longer; a store write a few ms).
const REGENERATION_POLL: Duration = Duration::from_millis(5);
/// Cookie that carries draft mode (`__prerender_bypass`).
pub const DRAFT_MODE_COOKIE: &str = "__prerender_bypass";
/// Header carrying the bypass token on revalidation requests.
pub const REVALIDATE_HEADER: &str = "x-prerender-revalidate";
/// Content type of RSC payloads (no ETag, no X-Powered-By on those).
const RSC_CONTENT_TYPE: &str = "text/x-component";
/// Stored headers that are never replayed from the cache (recomputed, hop-by-hop or unsafe).
const DROPPED_HEADERS: &[&str] = &[
    "cache-control",
    "etag",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "date",
    "x-nextjs-cache",
    "x-powered-by",
    "x-next-cache-tags",
    "set-cookie",
];

/// Errors loading prerender seeds.
#[derive(Debug, thiserror::Error)]
pub enum PrerenderError {
    /// A seed path is absolute or climbs out of the bundle.
    #[error("prerender {pathname}: seed path {file:?} escapes the bundle directory")]
    PathEscapes {
        /// The prerender pathname.
        pathname: String,
        /// The offending path.
        file: String,
    },
    /// A seed file could not be read.
    #[error("cannot read prerender seed {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A seed header name or value cannot be sent over HTTP.
    #[error("prerender {pathname}: header {name:?} is not valid")]
    InvalidHeader {
        /// The prerender pathname.
        pathname: String,
        /// The header name.
        name: String,
    },
    /// A `bypassFor` value is not a regex we can compile.
    #[error("prerender {pathname}: bypassFor value {pattern:?} is not a valid regex: {message}")]
    BadRegex {
        /// The prerender pathname.
        pathname: String,
        /// The pattern.
        pattern: String,
        /// The compiler's message.
        message: String,
    },
    /// `store_dynamic` was given a route template the manifest does not have.
    #[error("no prerender route {0} in the manifest")]
    UnknownRoute(String),
}

impl HttpError for PrerenderError {
    fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// A cached response.
#[derive(Debug)]
pub struct CachedEntry {
    /// The pathname it answers.
    pub pathname: String,
    /// Response status.
    pub status: StatusCode,
    /// Headers replayed to clients (cleaned: no Cache-Control, ETag, lengths, cache tags).
    pub headers: HeaderMap,
    /// The identity body.
    pub body: Bytes,
    /// Cache tags (`x-next-cache-tags`).
    pub tags: Vec<String>,
    /// Seconds until stale; `None` = never (static).
    pub revalidate: Option<u64>,
    /// Seconds after which it must not be served at all; `None` = never.
    pub expire: Option<u64>,
    /// When this content was generated.
    pub created: SystemTime,
    /// PPR: the postponed state rendered together with this shell (opaque), which a resume of
    /// the shell's dynamic parts needs. `None` for every other entry, and for PPR shells stored
    /// before Ferry kept it (those are the build's seeds: their state is the build's).
    pub postponed: Option<Arc<str>>,
    etag: Option<HeaderValue>,
    cache_control: HeaderValue,
    compressible: bool,
    gzip: OnceLock<Option<Bytes>>,
    br: OnceLock<Option<Bytes>>,
}

impl CachedEntry {
    #[allow(clippy::too_many_arguments)] // private constructor; every field is required
    pub(crate) fn new(
        pathname: &str,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        tags: Vec<String>,
        revalidate: Option<u64>,
        expire: Option<u64>,
        created: SystemTime,
        generate_etags: bool,
    ) -> Self {
        let rsc = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .starts_with(RSC_CONTENT_TYPE);
        // next sends no ETag on RSC payloads (they go out as a stream there).
        let etag = (generate_etags && !rsc)
            .then(|| HeaderValue::from_str(&generate_etag(&body)).ok())
            .flatten();
        Self::from_parts(
            pathname, status, headers, body, tags, revalidate, expire, created, etag,
        )
    }

    /// An entry from a render result (its `x-next-cache-tags` become the tags; headers that are
    /// never replayed are dropped), as the cache stores it.
    pub fn from_rendered(
        pathname: &str,
        rendered: Rendered,
        created: SystemTime,
        generate_etags: bool,
    ) -> Self {
        let mut headers = rendered.headers;
        let tags = clean_headers(&mut headers);
        Self::new(
            pathname,
            rendered.status,
            headers,
            rendered.body,
            tags,
            rendered.revalidate,
            rendered.expire,
            created,
            generate_etags,
        )
        .with_postponed(rendered.postponed)
    }

    /// An entry with a known ETag (decoding a stored one).
    #[allow(clippy::too_many_arguments)] // private constructor; every field is required
    pub(crate) fn from_parts(
        pathname: &str,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        tags: Vec<String>,
        revalidate: Option<u64>,
        expire: Option<u64>,
        created: SystemTime,
        etag: Option<HeaderValue>,
    ) -> Self {
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let compressible = is_compressible(content_type);
        CachedEntry {
            pathname: pathname.to_owned(),
            status,
            headers,
            tags,
            revalidate,
            expire,
            created,
            postponed: None,
            etag,
            cache_control: cache_control_header(revalidate, expire),
            compressible,
            gzip: OnceLock::new(),
            br: OnceLock::new(),
            body,
        }
    }

    /// The entry with `postponed` as its PPR postponed state.
    pub fn with_postponed(mut self, postponed: Option<Arc<str>>) -> Self {
        self.postponed = postponed;
        self
    }

    /// The strong ETag sent (none for RSC payloads).
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.etag.as_ref()
    }

    /// The `Cache-Control` sent.
    pub fn cache_control(&self) -> &HeaderValue {
        &self.cache_control
    }

    /// The body compressed with `enc`, computed once.
    fn compressed(&self, enc: Encoding) -> Option<&Bytes> {
        let cell = match enc {
            Encoding::Gzip => &self.gzip,
            Encoding::Br => &self.br,
        };
        cell.get_or_init(|| ferry_static::compress_bytes(&self.body, enc).ok())
            .as_ref()
    }
}

/// next's `getCacheControlHeader`.
pub fn cache_control_header(revalidate: Option<u64>, expire: Option<u64>) -> HeaderValue {
    let value = match (revalidate, expire) {
        (Some(0), _) => "private, no-cache, no-store, max-age=0, must-revalidate".to_owned(),
        (Some(r), Some(e)) if r < e => format!("s-maxage={r}, stale-while-revalidate={}", e - r),
        (Some(r), _) => format!("s-maxage={r}"),
        (None, Some(e)) if CACHE_ONE_YEAR < e => format!(
            "s-maxage={CACHE_ONE_YEAR}, stale-while-revalidate={}",
            e - CACHE_ONE_YEAR
        ),
        (None, _) => format!("s-maxage={CACHE_ONE_YEAR}"),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("no-store"))
}

/// Freshness of a cache hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// Serve it (`x-nextjs-cache: HIT`).
    Fresh,
    /// Serve it at once (`x-nextjs-cache: STALE`) and regenerate in the background.
    Stale,
    /// Past its expiration: must NOT be served; render blocking (and store the result).
    Expired,
}

/// What the server needs to regenerate an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regeneration {
    /// The pathname that was looked up.
    pub pathname: String,
    /// The function that renders it ([`ferry_manifest::FunctionOutput::id`]).
    pub parent_output_id: String,
    /// The manifest group id (HTML + RSC of one page share it).
    pub group_id: u64,
    /// Every pathname of the group, to store together ([`PrerenderCache::store_group`]).
    pub group_pathnames: Vec<String>,
    /// Send as `x-prerender-revalidate` so the worker renders and does not serve from a cache.
    pub bypass_token: Option<String>,
    /// The group's name for the regeneration lock shared by instances on one store.
    pub lock_key: String,
}

/// The result of [`PrerenderCache::lookup`].
#[derive(Debug, Clone)]
pub struct CacheHit {
    /// The cached response.
    pub entry: Arc<CachedEntry>,
    /// Its freshness now.
    pub state: CacheState,
    /// True for exactly one caller per group until the regeneration is stored or fails.
    pub needs_regeneration: bool,
    /// Present iff `needs_regeneration`.
    pub regeneration: Option<Regeneration>,
}

/// A freshly rendered response to cache.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Status code.
    pub status: StatusCode,
    /// Response headers (Cache-Control etc. are ignored; `x-next-cache-tags` gives the tags).
    pub headers: HeaderMap,
    /// The complete body.
    pub body: Bytes,
    /// Seconds until stale: `None` = never, `Some(0)` = not cacheable.
    pub revalidate: Option<u64>,
    /// Seconds until it must not be served stale.
    pub expire: Option<u64>,
    /// PPR: the postponed state of this shell's render (stored with it, atomically).
    pub postponed: Option<Arc<str>>,
}

impl Rendered {
    /// Builds a result from a worker's response, reading the lifetime from its `Cache-Control`
    /// (`s-maxage=N[, stale-while-revalidate=M]`; `s-maxage=31536000` = static; `private` /
    /// `no-store` / `no-cache` / none = not cacheable), as next's response cache does.
    pub fn from_response(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        let (revalidate, expire) = parse_cache_control(&headers);
        Rendered {
            status,
            headers,
            body,
            revalidate,
            expire,
            postponed: None,
        }
    }

    /// Whether this result may be cached at all.
    pub fn is_cacheable(&self) -> bool {
        self.revalidate != Some(0)
            && (self.status.is_success() || self.status == StatusCode::NOT_FOUND)
    }
}

fn parse_cache_control(headers: &HeaderMap) -> (Option<u64>, Option<u64>) {
    let mut s_maxage = None;
    let mut swr = None;
    let mut uncacheable = false;
    for v in headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for d in v.split(',').map(str::trim) {
            let (k, val) = d
                .split_once('=')
                .map_or((d, None), |(k, v)| (k.trim(), Some(v.trim())));
            match k.to_ascii_lowercase().as_str() {
                "s-maxage" => s_maxage = val.and_then(|v| v.parse::<u64>().ok()),
                "stale-while-revalidate" => swr = val.and_then(|v| v.parse::<u64>().ok()),
                "private" | "no-store" | "no-cache" => uncacheable = true,
                _ => {}
            }
        }
    }
    match s_maxage {
        _ if uncacheable => (Some(0), None),
        None => (Some(0), None),
        Some(CACHE_ONE_YEAR) => (None, swr.map(|m| CACHE_ONE_YEAR + m)),
        Some(n) => (Some(n), swr.map(|m| n.saturating_add(m))),
    }
}

/// Entries of one group regenerate together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    group_id: u64,
    /// For pages generated at runtime from a dynamic route: the page's base pathname.
    base: Option<String>,
}

/// What the manifest says about one prerender pathname.
#[derive(Debug)]
struct Route {
    parent_output_id: String,
    group: GroupKey,
    bypass_token: Option<String>,
    bypass_rules: Vec<BypassRule>,
    /// The template it was created from (for runtime pages of a dynamic route).
    template: Option<String>,
    kind: Option<FunctionKind>,
}

/// The prerender / ISR cache of one instance.
#[derive(Debug)]
pub struct PrerenderCache {
    routes: RwLock<HashMap<String, Arc<Route>>>,
    groups: RwLock<HashMap<GroupKey, Vec<String>>>,
    store: Arc<dyn CacheStore>,
    inflight: Mutex<HashMap<GroupKey, Instant>>,
    /// Shared regeneration locks this instance holds (released with the group's claim).
    locks_held: Mutex<std::collections::HashSet<String>>,
    regeneration_timeout: Duration,
    bypass_token: Option<String>,
    powered_by: bool,
    generate_etags: bool,
    build_id: String,
    bundle_dir: PathBuf,
    /// Seeded prerenders, to reload a seed the store no longer holds (evicted, lost).
    seeds: HashMap<String, (Arc<Prerender>, Option<FunctionKind>)>,
    seed_config: SeedConfig,
    /// Route templates that render unknown params on demand, by HTML template pathname.
    templates: HashMap<String, on_demand::Template>,
    /// The pages registered from those templates (bounded).
    registry: Mutex<on_demand::Registry>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent across a panic elsewhere; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn seed_path(bundle_dir: &Path, pathname: &str, file: &str) -> Result<PathBuf, PrerenderError> {
    let ok = !file.is_empty()
        && Path::new(file)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !ok {
        return Err(PrerenderError::PathEscapes {
            pathname: pathname.to_owned(),
            file: file.to_owned(),
        });
    }
    Ok(bundle_dir.join(file))
}

/// Removes headers that are recomputed per response or must not be replayed; returns the tags.
fn clean_headers(headers: &mut HeaderMap) -> Vec<String> {
    let tags = headers
        .get_all("x-next-cache-tags")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    for h in DROPPED_HEADERS {
        headers.remove(*h);
    }
    tags
}

/// The regeneration lock name of a group (the same on every instance of one build).
fn lock_key(group: &GroupKey) -> String {
    match &group.base {
        Some(base) => format!("{}:{base}", group.group_id),
        None => group.group_id.to_string(),
    }
}

/// Internal invalidation key of a path (cannot collide with a user tag: NUL is not allowed in
/// header values, so no `x-next-cache-tags` entry can contain it).
fn path_key(pathname: &str) -> String {
    format!("\0path:{pathname}")
}

/// `/_next/data/<id>/legacy/static.json` → `/legacy/static` (`index.json` → `/`).
fn data_page(pathname: &str, build_id: &str) -> Option<String> {
    let rest = pathname
        .strip_prefix("/_next/data/")?
        .strip_prefix(build_id)?
        .strip_suffix(".json")?;
    Some(match rest {
        "/index" => "/".to_owned(),
        _ => rest.to_owned(),
    })
}

/// The base page of an output pathname: `/isr.rsc`, `/isr.segments/...` → `/isr`.
fn base_pathname(pathname: &str) -> &str {
    if let Some(i) = pathname.find(".segments/") {
        return &pathname[..i];
    }
    pathname.strip_suffix(".rsc").unwrap_or(pathname)
}

impl PrerenderCache {
    /// Loads every seeded prerender of the manifest into an in-memory store.
    pub fn new(bundle_dir: &Path, manifest: &Manifest) -> Result<Self, PrerenderError> {
        Self::with_store(bundle_dir, manifest, Arc::new(MemoryStore::new()))
    }

    /// Like [`new`](Self::new) with another store; seeds never overwrite entries already in it.
    pub fn with_store(
        bundle_dir: &Path,
        manifest: &Manifest,
        store: Arc<dyn CacheStore>,
    ) -> Result<Self, PrerenderError> {
        let kinds: HashMap<&str, FunctionKind> = manifest
            .functions
            .iter()
            .map(|f| (f.id.as_str(), f.kind))
            .collect();
        let mut routes = HashMap::new();
        let mut groups: HashMap<GroupKey, Vec<String>> = HashMap::new();
        let mut bypass_token = None;
        let mut seeds = HashMap::new();
        let seed_config = SeedConfig {
            expire_time: manifest.config.expire_time,
            generate_etags: manifest.config.generate_etags,
        };
        for p in &manifest.prerenders {
            let bypass_rules = p
                .bypass_for
                .iter()
                .flatten()
                .map(|h| BypassRule::compile(&p.pathname, h))
                .collect::<Result<Vec<_>, _>>()?;
            if bypass_token.is_none() {
                bypass_token.clone_from(&p.bypass_token);
            }
            let group = GroupKey {
                group_id: p.group_id,
                base: None,
            };
            groups
                .entry(group.clone())
                .or_default()
                .push(p.pathname.clone());
            let kind = kinds.get(p.parent_output_id.as_str()).copied();
            routes.insert(
                p.pathname.clone(),
                Arc::new(Route {
                    parent_output_id: p.parent_output_id.clone(),
                    group,
                    bypass_token: p.bypass_token.clone(),
                    bypass_rules,
                    template: None,
                    kind,
                }),
            );
            if let Some(entry) = load_seed(bundle_dir, p, kind, seed_config)? {
                store.set_if_absent(&p.pathname, Arc::new(entry));
                seeds.insert(p.pathname.clone(), (Arc::new(p.clone()), kind));
            }
        }
        Ok(PrerenderCache {
            routes: RwLock::new(routes),
            groups: RwLock::new(groups),
            store,
            inflight: Mutex::new(HashMap::new()),
            locks_held: Mutex::new(std::collections::HashSet::new()),
            regeneration_timeout: DEFAULT_REGENERATION_TIMEOUT,
            bypass_token,
            powered_by: manifest.config.powered_by_header,
            generate_etags: manifest.config.generate_etags,
            build_id: manifest.build_id.clone(),
            bundle_dir: bundle_dir.to_owned(),
            seeds,
            seed_config,
            templates: on_demand::templates(manifest),
            registry: Mutex::new(on_demand::Registry::new(DEFAULT_ON_DEMAND_PAGES)),
        })
    }

    /// Changes how long a regeneration may run before another may start.
    pub fn set_regeneration_timeout(&mut self, timeout: Duration) {
        self.regeneration_timeout = timeout;
    }

    fn route(&self, pathname: &str) -> Option<Arc<Route>> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(pathname)
            .cloned()
    }

    /// Whether the manifest (or a runtime store) knows this pathname as a prerender.
    pub fn is_prerender(&self, pathname: &str) -> bool {
        self.route(pathname).is_some()
    }

    fn state_of(&self, e: &CachedEntry, now: SystemTime) -> CacheState {
        let age = now.duration_since(e.created).unwrap_or(Duration::ZERO);
        if e.revalidate.is_some()
            && let Some(exp) = e.expire
            && age >= Duration::from_secs(exp)
        {
            return CacheState::Expired;
        }
        let path_key = path_key(&e.pathname);
        let keys = || {
            e.tags
                .iter()
                .map(String::as_str)
                .chain(std::iter::once(path_key.as_str()))
        };
        if let Some(mark) = self.store.latest_expired_mark(&mut keys())
            && mark >= e.created
        {
            return CacheState::Expired;
        }
        let mut keys = keys();
        if let Some(mark) = self.store.latest_mark(&mut keys)
            && mark >= e.created
        {
            return CacheState::Stale;
        }
        match e.revalidate {
            Some(r) if age >= Duration::from_secs(r) => CacheState::Stale,
            _ => CacheState::Fresh,
        }
    }

    /// Looks up the prerender for a concrete pathname (`/isr`, `/isr.rsc`, `/blog/hello`,
    /// `/_next/data/<id>/legacy/static.json`). `None`: nothing cached, render it.
    pub fn lookup(&self, pathname: &str, now: SystemTime) -> Option<CacheHit> {
        let entry = self.store.get(pathname)?;
        Some(self.hit(pathname, entry, now))
    }

    /// The freshness of `entry` (found for `pathname`) and, when it is not fresh, the group's
    /// regeneration claim.
    fn hit(&self, pathname: &str, entry: Arc<CachedEntry>, now: SystemTime) -> CacheHit {
        let state = self.state_of(&entry, now);
        let regeneration = match state {
            CacheState::Fresh => None,
            CacheState::Stale | CacheState::Expired => self.claim_regeneration(pathname),
        };
        CacheHit {
            entry,
            state,
            needs_regeneration: regeneration.is_some(),
            regeneration,
        }
    }

    /// [`lookup`](Self::lookup), looking behind the store's memory tier on a miss (disk, Redis,
    /// then the bundle's seed). Waits at most the store's timeout.
    pub async fn lookup_or_fetch(&self, pathname: &str, now: SystemTime) -> Option<CacheHit> {
        if let Some(hit) = self.lookup(pathname, now) {
            return Some(hit);
        }
        // The fetched entry itself: a store without a memory tier does not keep it.
        let entry = self.fetch(pathname).await?;
        Some(self.hit(pathname, entry, now))
    }

    /// Whether a regeneration of `pathname`'s group is claimed (in flight) in this process.
    pub fn is_regenerating(&self, pathname: &str) -> bool {
        let Some(route) = self.route(pathname) else {
            return false;
        };
        lock(&self.inflight)
            .get(&route.group)
            .is_some_and(|started| started.elapsed() < self.regeneration_timeout)
    }

    /// Waits (at most `timeout`) until no regeneration of `pathname`'s group is in flight, then
    /// looks it up again (claiming the regeneration if it is still not fresh). For a request that
    /// must not be answered from the entry it found (expired) while another request or a
    /// background regeneration renders the group: like next start's response cache, it shares
    /// that render instead of rendering beside it. `None`: still in flight after `timeout`, or
    /// nothing cached.
    pub async fn lookup_after_regeneration(
        &self,
        pathname: &str,
        timeout: Duration,
    ) -> Option<CacheHit> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.is_regenerating(pathname) {
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(REGENERATION_POLL).await;
        }
        self.lookup_or_fetch(pathname, SystemTime::now()).await
    }

    /// The entry for `pathname` from anywhere the store keeps it, else its seed reloaded from the
    /// bundle (kept in the store's memory tier).
    pub async fn fetch(&self, pathname: &str) -> Option<Arc<CachedEntry>> {
        if let Some(entry) = self.store.fetch(pathname).await {
            return Some(entry);
        }
        let (p, kind) = self.seeds.get(pathname)?;
        let entry = match blocking(|| load_seed(&self.bundle_dir, p, *kind, self.seed_config)) {
            Ok(Some(e)) => Arc::new(e),
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!("cannot reload the seed of {pathname}: {e}");
                return None;
            }
        };
        self.store.set_if_absent(pathname, entry.clone());
        self.store.get(pathname).or(Some(entry))
    }

    /// The store behind this cache.
    pub fn cache_store(&self) -> &Arc<dyn CacheStore> {
        &self.store
    }

    /// Claims the group's regeneration slot; `Some` for exactly one caller at a time.
    fn claim_regeneration(&self, pathname: &str) -> Option<Regeneration> {
        let route = self.route(pathname)?;
        {
            let mut inflight = lock(&self.inflight);
            let now = Instant::now();
            match inflight.get(&route.group) {
                Some(started) if now.duration_since(*started) < self.regeneration_timeout => {
                    return None;
                }
                _ => {
                    inflight.insert(route.group.clone(), now);
                }
            }
        }
        let group_pathnames = self
            .groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&route.group)
            .cloned()
            .unwrap_or_else(|| vec![pathname.to_owned()]);
        Some(Regeneration {
            pathname: pathname.to_owned(),
            parent_output_id: route.parent_output_id.clone(),
            group_id: route.group.group_id,
            group_pathnames,
            bypass_token: route
                .bypass_token
                .clone()
                .or_else(|| self.bypass_token.clone()),
            lock_key: lock_key(&route.group),
        })
    }

    fn release(&self, pathname: &str) {
        if let Some(route) = self.route(pathname) {
            lock(&self.inflight).remove(&route.group);
            let key = lock_key(&route.group);
            if lock(&self.locks_held).remove(&key) {
                // Queued after this instance's entry writes: whoever takes the lock next sees
                // the new entry.
                self.store.unlock(&key);
            }
        }
    }

    /// Before a background regeneration claimed by [`lookup`](Self::lookup): takes the group's
    /// lock shared by every instance on the store. `false`: do not render, because another
    /// instance is regenerating the group (this instance asks again after a second at the
    /// earliest) or has just stored a fresh entry (adopted). Stores that no other instance
    /// shares always answer `true`.
    pub async fn begin_regeneration(&self, regen: &Regeneration) -> bool {
        if !self
            .store
            .try_lock(&regen.lock_key, self.regeneration_timeout)
            .await
        {
            self.retry_after(&regen.pathname, LOCK_RETRY);
            return false;
        }
        lock(&self.locks_held).insert(regen.lock_key.clone());
        // The previous holder may have stored its entry just before this lock was taken.
        if let Some(entry) = self.store.refresh(&regen.pathname).await
            && self.state_of(&entry, SystemTime::now()) == CacheState::Fresh
        {
            self.release(&regen.pathname);
            return false;
        }
        true
    }

    /// Keeps the group's claim for `delay` more, then lets a stale lookup claim it again.
    fn retry_after(&self, pathname: &str, delay: Duration) {
        let Some(route) = self.route(pathname) else {
            return;
        };
        let back = self.regeneration_timeout.saturating_sub(delay);
        let now = Instant::now();
        lock(&self.inflight).insert(route.group.clone(), now.checked_sub(back).unwrap_or(now));
    }

    /// Stores a regeneration result for a known prerender pathname and ends the group's
    /// regeneration. An uncacheable result (`revalidate 0`, 5xx) removes nothing: the old entry
    /// stays (next keeps serving stale on a failed regeneration).
    pub fn store(&self, pathname: &str, rendered: Rendered, now: SystemTime) {
        self.put(pathname, rendered, now);
        self.release(pathname);
    }

    /// Stores the results for several pathnames of one group (HTML + RSC), then ends the group's
    /// regeneration once.
    pub fn store_group(&self, results: Vec<(String, Rendered)>, now: SystemTime) {
        let first = results.first().map(|(p, _)| p.clone());
        let entries = results
            .into_iter()
            .filter_map(|(pathname, rendered)| {
                let entry = self.entry_for(&pathname, rendered, now)?;
                Some((pathname, entry))
            })
            .collect();
        // All variants at once: a request must not find the HTML new and its data JSON / RSC
        // old (and claimed) while the rest of the group is still being written.
        self.store.set_many(entries);
        if let Some(p) = first {
            self.release(&p);
        }
    }

    fn put(&self, pathname: &str, rendered: Rendered, now: SystemTime) {
        if let Some(entry) = self.entry_for(pathname, rendered, now) {
            self.store.set(pathname, entry);
        }
    }

    /// The entry to store for a render of `pathname`; `None` when it is not cacheable.
    fn entry_for(
        &self,
        pathname: &str,
        rendered: Rendered,
        now: SystemTime,
    ) -> Option<Arc<CachedEntry>> {
        if !rendered.is_cacheable() {
            return None;
        }
        let mut headers = rendered.headers;
        let mut tags = clean_headers(&mut headers);
        if tags.is_empty() {
            // Outside minimal mode Next does not send `x-next-cache-tags` with a render; the
            // entry keeps the tags it had (from the build's seed), or `revalidatePath` /
            // `revalidateTag` would stop reaching a page once it was regenerated.
            tags = self
                .store
                .get(pathname)
                .map(|e| e.tags.clone())
                .unwrap_or_default();
        }
        tracing::debug!(
            "stored {pathname} (created {:?}, tags {tags:?}, revalidate {:?})",
            now.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
            rendered.revalidate
        );
        let entry = CachedEntry::new(
            pathname,
            rendered.status,
            headers,
            rendered.body,
            tags,
            rendered.revalidate,
            rendered.expire,
            now,
            self.generate_etags,
        )
        .with_postponed(rendered.postponed);
        Some(Arc::new(entry))
    }

    /// Stores a page rendered at runtime for a dynamic route (`/blog/new` of template
    /// `/blog/[slug]`, or `/blog/new.rsc` of `/blog/[slug].rsc`), registering it so later lookups,
    /// bypass checks and regenerations work like for a seeded page.
    pub fn store_dynamic(
        &self,
        pathname: &str,
        template: &str,
        rendered: Rendered,
        now: SystemTime,
    ) -> Result<(), PrerenderError> {
        if self.route(pathname).is_none() {
            let t = self
                .route(template)
                .ok_or_else(|| PrerenderError::UnknownRoute(template.to_owned()))?;
            let group = GroupKey {
                group_id: t.group.group_id,
                base: Some(base_pathname(pathname).to_owned()),
            };
            let route = Arc::new(Route {
                parent_output_id: t.parent_output_id.clone(),
                group: group.clone(),
                bypass_token: t.bypass_token.clone(),
                bypass_rules: t.bypass_rules.clone(),
                template: Some(template.to_owned()),
                kind: t.kind,
            });
            self.routes
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(pathname.to_owned(), route);
            let mut groups = self.groups.write().unwrap_or_else(|p| p.into_inner());
            let members = groups.entry(group).or_default();
            if !members.iter().any(|m| m == pathname) {
                members.push(pathname.to_owned());
            }
        }
        self.store(pathname, rendered, now);
        Ok(())
    }

    /// The route template a runtime page was stored under, if it was.
    pub fn template_of(&self, pathname: &str) -> Option<String> {
        self.route(pathname).and_then(|r| r.template.clone())
    }

    /// On-demand ISR: makes `pathname` (`/blog/new`, `/blog/new.rsc`, a segment prefetch of it,
    /// `/_next/data/<id>/legacy/new.json`) a prerender of the dynamic route whose HTML template
    /// is `template` (`/blog/[slug]`), if that route renders unknown params on demand (see
    /// `on_demand::templates`). Its variants form one group, so a regeneration or `res.revalidate`
    /// covers HTML and RSC / data together. `true` when `pathname` is a prerender afterwards.
    /// The registry is bounded ([`DEFAULT_ON_DEMAND_PAGES`]); dropped pages are registered again
    /// on their next request (their entries stay in the store).
    pub fn register_on_demand(&self, pathname: &str, template: &str) -> bool {
        if self.route(pathname).is_some() {
            return true;
        }
        let Some(t) = self.templates.get(template) else {
            return false;
        };
        let page = match data_page(pathname, &self.build_id) {
            Some(page) => page,
            None => match base_pathname(pathname) {
                "/index" => "/".to_owned(),
                base => base.to_owned(),
            },
        };
        let mut members = on_demand::concrete_members(template, &page, &t.members);
        let segment = pathname.contains(".segments/");
        if !segment && !members.iter().any(|m| m == pathname) {
            return false;
        }
        let group = GroupKey {
            group_id: t.group_id,
            base: Some(page.clone()),
        };
        let Some(tr) = self.route(template) else {
            return false;
        };
        let route = Arc::new(Route {
            parent_output_id: tr.parent_output_id.clone(),
            group: group.clone(),
            bypass_token: tr.bypass_token.clone(),
            bypass_rules: tr.bypass_rules.clone(),
            template: Some(template.to_owned()),
            kind: tr.kind,
        });
        if segment {
            members.push(pathname.to_owned());
        }
        // One registry lock around the map updates (order: registry, routes, groups), so a page
        // dropped by one registration cannot be re-inserted behind the registry's back by another.
        let mut registry = lock(&self.registry);
        let mut dropped = Vec::new();
        for m in &members {
            dropped.extend(registry.add(&page, m));
        }
        let mut dropped_groups = Vec::new();
        {
            let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
            let mut groups = self.groups.write().unwrap_or_else(|p| p.into_inner());
            for (_, paths) in dropped {
                for p in &paths {
                    if let Some(r) = routes.remove(p) {
                        groups.remove(&r.group);
                        dropped_groups.push(r.group.clone());
                    }
                }
            }
            for m in &members {
                routes.entry(m.clone()).or_insert_with(|| route.clone());
            }
            let list = groups.entry(group).or_default();
            for m in members {
                if !list.contains(&m) {
                    list.push(m);
                }
            }
        }
        drop(registry);
        if !dropped_groups.is_empty() {
            // A render of a dropped page still in flight can no longer release its claim by
            // pathname: release it now, or the page would wait for the claim's timeout.
            let mut inflight = lock(&self.inflight);
            for g in &dropped_groups {
                inflight.remove(g);
            }
        }
        true
    }

    /// The fallback shell's pathname (the route's template, `/legacy/[slug]`) when `pathname` is
    /// the HTML page (not the data JSON) of an on-demand page of a pages-router route with
    /// `fallback: true`: next start answers its first non-bot HTML request with that shell
    /// (`x-nextjs-cache: MISS`, not cached) until the page was rendered.
    pub fn fallback_shell_for(&self, pathname: &str) -> Option<String> {
        let template = self.route(pathname)?.template.clone()?;
        let t = self.templates.get(&template)?;
        (t.fallback_shell && data_page(pathname, &self.build_id).is_none()).then_some(template)
    }

    /// The function that resumes `pathname` when it is the HTML page (the shell) of an
    /// on-demand page of a partially static (PPR) route: its entry is a shell stored with the
    /// postponed state of its own render (see `on_demand::templates`). `None` for anything else.
    pub fn on_demand_shell(&self, pathname: &str) -> Option<String> {
        let route = self.route(pathname)?;
        let t = self.templates.get(route.template.as_deref()?)?;
        (t.partially_static && base_pathname(pathname) == pathname)
            .then(|| route.parent_output_id.clone())
    }

    /// How many on-demand pages are registered now.
    pub fn on_demand_pages(&self) -> usize {
        lock(&self.registry).len()
    }

    /// Changes how many on-demand pages stay registered at once.
    pub fn set_on_demand_limit(&self, pages: usize) {
        lock(&self.registry).set_limit(pages);
    }

    /// Claims the render of `pathname`'s group when nothing is cached for it yet (an on-demand
    /// page's first request): `Some` for exactly one caller until the result is stored
    /// ([`store_group`](Self::store_group)) or the render fails
    /// ([`regeneration_failed`](Self::regeneration_failed)); the others wait for it with
    /// [`lookup_after_regeneration`](Self::lookup_after_regeneration).
    pub fn claim_render(&self, pathname: &str) -> Option<Regeneration> {
        self.claim_regeneration(pathname)
    }

    /// Ends a regeneration that failed: the stale entry stays, and the next stale lookup may try
    /// again.
    pub fn regeneration_failed(&self, pathname: &str) {
        self.release(pathname);
    }

    /// Marks every entry carrying one of `tags` stale now (on-demand `revalidateTag`).
    pub fn invalidate_tags(&self, tags: &[String]) {
        self.invalidate_tags_at(tags, SystemTime::now());
    }

    /// [`invalidate_tags`](Self::invalidate_tags) at a given time.
    pub fn invalidate_tags_at(&self, tags: &[String], at: SystemTime) {
        self.store.mark(tags, at);
    }

    /// Expires every entry carrying one of `tags` now: the next request renders before it
    /// answers (`MISS`), as next start does after `revalidatePath` / a profile-less
    /// `revalidateTag`.
    pub fn expire_tags(&self, tags: &[String]) {
        self.expire_tags_at(tags, SystemTime::now());
    }

    /// [`expire_tags`](Self::expire_tags) at a given time.
    pub fn expire_tags_at(&self, tags: &[String], at: SystemTime) {
        self.store.mark_expired(tags, at);
    }

    /// Marks the entries of `pathname`'s group stale now (on-demand `revalidatePath` for pages
    /// without tags, e.g. the pages router).
    pub fn invalidate_path(&self, pathname: &str) {
        self.invalidate_path_at(pathname, SystemTime::now());
    }

    /// [`invalidate_path`](Self::invalidate_path) at a given time.
    pub fn invalidate_path_at(&self, pathname: &str, at: SystemTime) {
        let members = self.route(pathname).and_then(|r| {
            self.groups
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&r.group)
                .cloned()
        });
        let keys: Vec<String> = members
            .unwrap_or_else(|| vec![pathname.to_owned()])
            .iter()
            .map(|p| path_key(p))
            .collect();
        self.store.mark(&keys, at);
    }

    /// The token that makes a request bypass the cache and regenerate (`x-prerender-revalidate`,
    /// draft-mode cookie value).
    pub fn bypass_token(&self) -> Option<&str> {
        self.bypass_token.as_deref()
    }

    /// Whether `req` must skip the cache for `pathname` and be rendered: methods other than
    /// GET/HEAD, the prerender's `bypassFor` conditions (a `next-action` header, a multipart
    /// POST), draft mode (`__prerender_bypass` cookie equal to the token), or
    /// `x-prerender-revalidate` equal to the token.
    pub fn should_bypass<B>(&self, pathname: &str, req: &http::Request<B>) -> bool {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return true;
        }
        let route = self.route(pathname);
        let token = route
            .as_ref()
            .and_then(|r| r.bypass_token.as_deref())
            .or(self.bypass_token.as_deref());
        if let Some(token) = token {
            let headers = req.headers();
            if headers
                .get_all(REVALIDATE_HEADER)
                .iter()
                .any(|v| v.as_bytes() == token.as_bytes())
            {
                return true;
            }
            if bypass::cookie(headers, DRAFT_MODE_COOKIE).is_some_and(|v| v == token) {
                return true;
            }
        }
        route.is_some_and(|r| r.bypass_rules.iter().any(|rule| rule.matches(req)))
    }

    /// Answers from a cache hit with next start's headers (`x-nextjs-cache` from the state).
    pub fn respond(
        &self,
        hit: &CacheHit,
        method: &Method,
        req_headers: &HeaderMap,
    ) -> Response<Body> {
        let label = match hit.state {
            CacheState::Fresh => "HIT",
            CacheState::Stale | CacheState::Expired => "STALE",
        };
        self.respond_with_label(&hit.entry, label, method, req_headers)
    }

    /// Answers with `entry` and an explicit `x-nextjs-cache` value (`MISS` after a blocking
    /// render, `REVALIDATED` after an on-demand one).
    pub fn respond_with_label(
        &self,
        entry: &CachedEntry,
        x_nextjs_cache: &'static str,
        method: &Method,
        req_headers: &HeaderMap,
    ) -> Response<Body> {
        let mut headers = entry.headers.clone();
        let content_type = headers.remove(CONTENT_TYPE);
        if entry.pathname.contains(".segments/") {
            // next start answers a segment prefetch straight from the segment data, without the
            // page entry's stored headers (app-page template, "Segment Cache" branch).
            headers.remove("x-nextjs-stale-time");
        }
        headers.insert("x-nextjs-cache", HeaderValue::from_static(x_nextjs_cache));
        if let Some(page) = data_page(&entry.pathname, &self.build_id)
            && !headers.contains_key("x-nextjs-matched-path")
            && let Ok(v) = HeaderValue::from_str(&page)
        {
            headers.insert(HeaderName::from_static("x-nextjs-matched-path"), v);
        }
        let is_html = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
        if self.powered_by && is_html {
            headers.insert("x-powered-by", HeaderValue::from_static("Next.js"));
        }
        headers.insert(CACHE_CONTROL, entry.cache_control.clone());
        // next start sends no ETag (so no conditional request turns the answer into a 304)
        // with a `_next/data` request's `{"notFound":true}` (base-server writes it straight to
        // the response) nor with a cached route handler's response (the app-route template
        // sends the stored Response as it is).
        let etag = entry.etag.as_ref().filter(|_| {
            let not_found_data = entry.status == StatusCode::NOT_FOUND
                && data_page(&entry.pathname, &self.build_id).is_some();
            !not_found_data
                && !self
                    .route(&entry.pathname)
                    .is_some_and(|r| r.kind == Some(FunctionKind::AppRoute))
        });
        if let Some(etag) = etag {
            headers.insert(ETAG, etag.clone());
        }
        if entry.compressible {
            ferry_static::add_vary(&mut headers, "Accept-Encoding");
        }

        let etag_str = etag.and_then(|e| e.to_str().ok());
        if etag_str.is_some() && ferry_static::is_fresh(req_headers, etag_str, None) {
            let mut res = Response::new(ferry_http::empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            *res.headers_mut() = headers;
            return res;
        }
        if let Some(ct) = content_type {
            headers.insert(CONTENT_TYPE, ct);
        }

        let is_head = method == Method::HEAD;
        let mut body = entry.body.clone();
        if entry.compressible
            && !is_head
            && body.len() as u64 >= ferry_static::COMPRESSION_THRESHOLD
            && let Some(accept) = req_headers
                .get(ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok())
            && let Some(enc) = negotiate(accept, &[Encoding::Br, Encoding::Gzip])
            && let Some(compressed) = entry.compressed(enc)
        {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(enc.token()));
            body = compressed.clone();
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut res = Response::new(if is_head {
            ferry_http::empty()
        } else {
            ferry_http::full(body)
        });
        *res.status_mut() = entry.status;
        *res.headers_mut() = headers;
        res
    }
}

/// Reads one seed into an entry (`None` when the prerender has no seed body).
fn load_seed(
    bundle_dir: &Path,
    p: &Prerender,
    kind: Option<FunctionKind>,
    config: SeedConfig,
) -> Result<Option<CachedEntry>, PrerenderError> {
    let Some(seed) = &p.seed else { return Ok(None) };
    let Some(file) = &seed.file else {
        return Ok(None);
    };
    let path = seed_path(bundle_dir, &p.pathname, file)?;
    let io = |source| PrerenderError::Io {
        path: path.clone(),
        source,
    };
    let body = std::fs::read(&path).map_err(io)?;
    // next dates a build seed by its file: the first request after a late start may be STALE.
    let created = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .map_err(io)?;
    let mut headers = HeaderMap::new();
    for (name, value) in &seed.headers {
        let bad = || PrerenderError::InvalidHeader {
            pathname: p.pathname.clone(),
            name: name.clone(),
        };
        let hn = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        for v in value.values() {
            headers.append(hn.clone(), HeaderValue::from_str(v).map_err(|_| bad())?);
        }
    }
    // The adapter gives pages-router seeds the app router's RSC Vary; next start does not send
    // it for them (measured on /legacy/static and its data route).
    if kind == Some(FunctionKind::Pages) {
        headers.remove(VARY);
    }
    let tags = clean_headers(&mut headers);
    let revalidate = seed.revalidate.and_then(|r| r.seconds());
    let expire = seed.expiration.or(config.expire_time);
    let status = seed
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let entry = CachedEntry::new(
        &p.pathname,
        status,
        headers,
        Bytes::from(body),
        tags,
        revalidate,
        // A static entry has no expiry in next either.
        if revalidate.is_some() { expire } else { None },
        created,
        config.generate_etags,
    );
    // A PPR shell (its seed has a file and a postponed state) and its state are one pair.
    Ok(Some(entry.with_postponed(
        seed.postponed_state.as_deref().map(Arc::from),
    )))
}

/// The manifest settings a seed is read with.
#[derive(Debug, Clone, Copy)]
struct SeedConfig {
    expire_time: Option<u64>,
    generate_etags: bool,
}

/// Runs blocking file I/O, telling a multi-threaded Tokio executor about it.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_like_next() {
        assert_eq!(cache_control_header(None, None), "s-maxage=31536000");
        assert_eq!(
            cache_control_header(Some(5), Some(31_536_000)),
            "s-maxage=5, stale-while-revalidate=31535995"
        );
        assert_eq!(
            cache_control_header(Some(10), Some(31_536_000)),
            "s-maxage=10, stale-while-revalidate=31535990"
        );
        assert_eq!(cache_control_header(Some(5), Some(5)), "s-maxage=5");
        assert_eq!(
            cache_control_header(Some(0), None),
            "private, no-cache, no-store, max-age=0, must-revalidate"
        );
    }

    #[test]
    fn parses_worker_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("s-maxage=5, stale-while-revalidate=31535995"),
        );
        assert_eq!(parse_cache_control(&h), (Some(5), Some(31_536_000)));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("s-maxage=31536000"));
        assert_eq!(parse_cache_control(&h), (None, None));
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache, no-store, max-age=0, must-revalidate"),
        );
        assert_eq!(parse_cache_control(&h).0, Some(0));
        h.remove(CACHE_CONTROL);
        assert_eq!(parse_cache_control(&h).0, Some(0));
    }

    #[test]
    fn data_and_base_pathnames() {
        assert_eq!(
            data_page("/_next/data/B1/legacy/static.json", "B1").as_deref(),
            Some("/legacy/static")
        );
        assert_eq!(
            data_page("/_next/data/B1/index.json", "B1").as_deref(),
            Some("/")
        );
        assert_eq!(data_page("/_next/data/B2/x.json", "B1"), None);
        assert_eq!(base_pathname("/isr.rsc"), "/isr");
        assert_eq!(base_pathname("/isr.segments/_tree.segment.rsc"), "/isr");
        assert_eq!(base_pathname("/isr"), "/isr");
    }

    #[test]
    fn cleans_replayed_headers_and_keeps_tags() {
        let mut h = HeaderMap::new();
        h.insert("x-next-cache-tags", HeaderValue::from_static("a,_N_T_/isr"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("s-maxage=1"));
        h.insert("set-cookie", HeaderValue::from_static("a=b"));
        h.insert("x-nextjs-stale-time", HeaderValue::from_static("300"));
        let tags = clean_headers(&mut h);
        assert_eq!(tags, vec!["a".to_owned(), "_N_T_/isr".to_owned()]);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-nextjs-stale-time"));
    }
}

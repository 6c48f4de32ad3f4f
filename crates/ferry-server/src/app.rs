//! The loaded deployment: every stage's state, built once at startup, shared by all requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferry_manifest::{BundleKind, FunctionKind, Manifest};
use ferry_prerender::{
    CacheStore, DiskStore, MemoryStore, PrerenderCache, RedisOptions, RedisStore,
};
use ferry_router::Router;
use ferry_static::StaticFiles;
use ferry_workers::{EntryKind, PoolConfig, WorkerPool};
use hyper::body::Incoming;
use tokio::sync::Notify;

use crate::{ServerConfig, ServerError, pipeline};

/// A JavaScript entrypoint the pipeline can invoke.
#[derive(Debug, Clone)]
pub struct Function {
    /// Absolute path of the entry module.
    pub entry: String,
    /// Calling convention.
    pub kind: EntryKind,
    /// A page next-server treats as SSG (`isSSG` in base-server.js): an app page or route
    /// handler whose own (non-dynamic) pathname is prerendered, or a pages-router page with
    /// `getStaticProps` (any prerender names it as parent). Only GET and HEAD may reach it.
    pub ssg: bool,
    /// An edge-runtime entrypoint (next-server runs it through its edge sandbox, which skips
    /// `setVaryHeader`).
    pub edge: bool,
    /// No prerender is this function's or names it as parent: every request it answers is
    /// rendered, never served from a cache, so the middleware may run in the same worker trip
    /// (`pipeline/fused.rs`).
    pub always_renders: bool,
}

/// The loaded deployment.
pub struct App {
    /// The bundle's manifest.
    pub manifest: Manifest,
    /// The bundle directory.
    pub bundle_dir: PathBuf,
    /// Compiled routing tables.
    pub router: Router,
    /// Static and public files.
    pub statics: StaticFiles,
    /// Prerendered pages and their ISR state.
    pub prerenders: PrerenderCache,
    /// Functions by output pathname (`/blog/[slug]`, `/blog/[slug].rsc`).
    pub functions: HashMap<String, Function>,
    /// Functions by adapter output id (what prerenders name as their parent).
    pub functions_by_id: HashMap<String, Function>,
    /// The middleware / proxy entry, if any.
    pub middleware: Option<Function>,
    /// PPR: the build's postponed state by HTML prerender pathname (see `pipeline/prerendered.rs`).
    pub(crate) postponed: HashMap<String, crate::pipeline::prerendered::PprShell>,
    /// The Node worker pool (absent for static exports).
    pub workers: Option<WorkerPool>,
    local_addr: OnceLock<SocketAddr>,
    /// The hostname next start would put in `initURL`: `-H` as given, `localhost` when unset.
    init_hostname: String,
    /// Secret the workers present on control requests (`/__ferry/control/*`).
    pub control_token: String,
    /// The `/_next/image` optimizer, made on first use (see `pipeline/image.rs`).
    pub(crate) image_optimizer: OnceLock<Arc<ferry_image::Optimizer>>,
    /// `/_next/image` answered before routing when no rule can change it (`pipeline/image.rs`).
    /// Computed off the start-up path (a second router compile): until it is set, image
    /// requests are routed like any other.
    pub(crate) image_preroute: OnceLock<Option<pipeline::image::Preroute>>,
    /// `--cache-url` when it is Redis: the image optimizer shares its cache there too.
    pub(crate) image_cache_url: Option<String>,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl App {
    /// Loads every stage from the bundle and starts the workers.
    pub async fn load(
        manifest: Manifest,
        config: &ServerConfig,
        local_addr: SocketAddr,
    ) -> Result<Arc<Self>, ServerError> {
        let bundle_dir = config.bundle_dir.clone();
        let router = Router::new(&manifest)
            .map_err(|e| ServerError::Bundle(e.to_string()))?
            .with_next_start_data_urls(true)
            .with_next_start_semantics(true);
        let statics = StaticFiles::new(&bundle_dir, &manifest)
            .map_err(|e| ServerError::Bundle(e.to_string()))?;
        let cache_root = cache_root(&bundle_dir);
        let store = open_store(config, &cache_root, &manifest).await?;
        let prerenders = PrerenderCache::with_store(&bundle_dir, &manifest, store)
            .map_err(|e| ServerError::Bundle(e.to_string()))?;
        // Manifest entries are bundle-relative; workers run in the project dir, so go absolute.
        let absolute = |entry: &str| bundle_dir.join(entry).to_string_lossy().into_owned();
        let prerendered: std::collections::HashSet<&str> = manifest
            .prerenders
            .iter()
            .map(|p| p.pathname.as_str())
            .collect();
        let has_prerender_child =
            |id: &str| manifest.prerenders.iter().any(|p| p.parent_output_id == id);
        let function = |f: &ferry_manifest::FunctionOutput| Function {
            entry: absolute(&f.entry),
            kind: entry_kind(f.kind),
            ssg: match f.kind {
                FunctionKind::AppPage => {
                    !f.pathname.contains('[') && prerendered.contains(f.pathname.as_str())
                }
                FunctionKind::Pages => has_prerender_child(&f.id),
                FunctionKind::AppRoute => {
                    !f.pathname.contains('[') && prerendered.contains(f.pathname.as_str())
                }
                _ => false,
            },
            edge: f.runtime == "edge",
            always_renders: f.runtime != "edge"
                && !prerendered.contains(f.pathname.as_str())
                && !has_prerender_child(&f.id),
        };
        let functions = manifest
            .functions
            .iter()
            .map(|f| (f.pathname.clone(), function(f)))
            .collect();
        let functions_by_id = manifest
            .functions
            .iter()
            .map(|f| (f.id.clone(), function(f)))
            .collect();
        let middleware = manifest.middleware.as_ref().map(|m| Function {
            entry: absolute(&m.entry),
            kind: EntryKind::Middleware,
            ssg: false,
            edge: m.runtime == "edge",
            always_renders: false,
        });
        let control_token = random_token();
        let workers = match (&manifest.kind, &manifest.server) {
            (BundleKind::Server, Some(layout)) => {
                let mut pool = PoolConfig::new(bundle_dir.join(&layout.project_dir));
                pool.workers = config.workers;
                pool.node = config.node.clone();
                pool.queue_limit = config.queue_limit;
                pool.request_timeout = config.worker_timeout;
                pool.env = layout
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                pool.env.push(("NODE_ENV".into(), "production".into()));
                pool.env
                    .push(("PORT".into(), local_addr.port().to_string()));
                pool.env.push((
                    "FERRY_CONTROL_URL".into(),
                    format!(
                        "http://127.0.0.1:{}{}",
                        local_addr.port(),
                        crate::pipeline::control::PREFIX
                    ),
                ));
                pool.env
                    .push(("FERRY_CONTROL_TOKEN".into(), control_token.clone()));
                // The image optimizer's disk cache (`cache/images` under it): the bundle is
                // immutable, so beside it when writable, else in the temp dir.
                pool.env.push((
                    "FERRY_CACHE_DIR".into(),
                    cache_root.to_string_lossy().into_owned(),
                ));
                // Answer what needs no JavaScript at once; requests for workers queue until
                // they are up. A pool that cannot start at all is fatal, with a clear message.
                let (pool, startup) = WorkerPool::spawn(pool)?;
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    match startup.wait().await {
                        Ok(()) => tracing::info!(
                            "Node.js workers ready in {} ms",
                            started.elapsed().as_millis()
                        ),
                        Err(err) => {
                            tracing::error!("cannot start the Node.js workers: {err}");
                            std::process::exit(1);
                        }
                    }
                });
                Some(pool)
            }
            _ => None,
        };
        let postponed = crate::pipeline::prerendered::postponed_states(&manifest);
        let app = Arc::new(App {
            manifest,
            bundle_dir,
            router,
            statics,
            prerenders,
            functions,
            functions_by_id,
            postponed,
            middleware,
            workers,
            local_addr: OnceLock::from(local_addr),
            image_preroute: OnceLock::new(),
            image_optimizer: OnceLock::new(),
            image_cache_url: config
                .cache_url
                .as_deref()
                .map(str::trim)
                .filter(|u| u.starts_with("redis://") || u.starts_with("rediss://"))
                .map(str::to_owned),
            // The CLI's default (all interfaces) stands for "no -H", which next start reports as
            // localhost.
            init_hostname: match config.host.as_str() {
                "" | "0.0.0.0" | "::" | "[::]" => "localhost".to_owned(),
                host => host.to_owned(),
            },
            control_token,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        // The image pre-routing decision compiles a probe router (tens of ms for a large
        // table): made after the server is up rather than before its first answer.
        let weak = Arc::downgrade(&app);
        tokio::task::spawn_blocking(move || {
            if let Some(app) = weak.upgrade() {
                let _ = app
                    .image_preroute
                    .set(pipeline::image::preroute(&app.manifest, &app.router));
            }
        });
        Ok(app)
    }

    /// The hostname next start puts in `initURL` (`-H`, else `localhost`).
    pub fn init_hostname(&self) -> &str {
        &self.init_hostname
    }

    /// The bound address, once listening.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr.get().copied()
    }

    /// Serves one request through the pipeline.
    pub async fn handle(
        self: &Arc<Self>,
        req: hyper::Request<Incoming>,
        remote: SocketAddr,
    ) -> hyper::Response<ferry_http::Body> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _guard = InFlight(self);
        pipeline::handle(self, req, remote).await
    }

    /// Waits until no request is in the pipeline (response bodies may still stream).
    pub async fn drain(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Stops the workers, letting pending `after()` work finish within `grace`.
    pub async fn shutdown_workers(&self, grace: Duration) {
        if let Some(pool) = &self.workers {
            pool.shutdown(grace).await;
        }
    }
}

struct InFlight<'a>(&'a App);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Memory tier of the disk and Redis stores: at most this much (or the whole cache if smaller).
const MEMORY_TIER_BYTES: u64 = 256 * 1024 * 1024;

/// The prerender cache store `config` asks for. Entries are namespaced by build id and
/// deployment id, so a new build never serves an older build's pages.
async fn open_store(
    config: &ServerConfig,
    cache_root: &std::path::Path,
    manifest: &Manifest,
) -> Result<Arc<dyn CacheStore>, ServerError> {
    let namespace = match &manifest.deployment_id {
        Some(d) if !d.is_empty() => format!("{}.{d}", manifest.build_id),
        _ => manifest.build_id.clone(),
    };
    let memory_bytes = config
        .cache_memory_size
        .unwrap_or(MEMORY_TIER_BYTES)
        .min(config.cache_max_size);
    match config.cache_url.as_deref().map(str::trim) {
        None | Some("") | Some("disk") => {
            // Directory names from the namespace: keep it to a safe alphabet.
            let dir: String = namespace
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let root = cache_root.join("prerender").join(dir);
            match DiskStore::open(&root, config.cache_max_size, memory_bytes) {
                Ok(store) => {
                    tracing::info!(
                        "prerender cache: disk, {} (max {} MB)",
                        root.display(),
                        config.cache_max_size / 1_000_000
                    );
                    Ok(Arc::new(store))
                }
                Err(e) => {
                    tracing::warn!(
                        "prerender cache: cannot use {} ({e}); keeping it in memory only",
                        root.display()
                    );
                    Ok(Arc::new(MemoryStore::bounded(memory_bytes)))
                }
            }
        }
        Some("memory" | "memory:" | "memory://") => {
            tracing::info!("prerender cache: memory only");
            Ok(Arc::new(MemoryStore::bounded(config.cache_max_size)))
        }
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            let mut opts = RedisOptions::new(url, namespace);
            opts.memory_bytes = memory_bytes;
            let store = RedisStore::connect(opts)
                .await
                .map_err(|e| ServerError::Cache(e.to_string()))?;
            tracing::info!(
                "prerender cache: shared through Redis (keys {}*)",
                store.prefix()
            );
            Ok(Arc::new(store))
        }
        Some(other) => Err(ServerError::Cache(format!(
            "unsupported cache URL {other:?} (expected redis://host:port[/db], memory or disk)"
        ))),
    }
}

/// `<bundle>/../.ferry-cache` when it can be created, else `<tmp>/ferry-cache`.
pub(crate) fn cache_root(bundle_dir: &std::path::Path) -> PathBuf {
    let beside = bundle_dir
        .canonicalize()
        .ok()
        .and_then(|b| b.parent().map(|p| p.join(".ferry-cache")));
    match beside {
        Some(dir) if std::fs::create_dir_all(&dir).is_ok() => dir,
        _ => std::env::temp_dir().join("ferry-cache"),
    }
}

fn entry_kind(kind: FunctionKind) -> EntryKind {
    kind.into()
}

/// 32 random bytes as hex, from the OS.
fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut bytes);
    }
    if bytes == [0u8; 32] {
        // No urandom (very unusual): fall back to the std hasher's per-process random keys.
        use std::hash::{BuildHasher, RandomState};
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&RandomState::new().hash_one(i).to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! The HTTP server: the request pipeline that composes router, static files, prerender cache and workers.
//!
//! [`run`] binds the listener, starts the worker pool and serves until SIGTERM/SIGINT. The request
//! path is [`pipeline`]: an explicit, ordered list of stages, one module each.

mod app;
mod listener;
pub mod pipeline;
mod signals;

use std::path::PathBuf;
use std::time::Duration;

use ferry_manifest::Manifest;

pub use app::App;

/// Everything `ferry start` decided before serving.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The bundle directory (holding `manifest.json`).
    pub bundle_dir: PathBuf,
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// Idle keep-alive timeout (next start's default is Node's 5 s).
    pub keep_alive_timeout: Option<Duration>,
    /// Number of Node workers.
    pub workers: usize,
    /// Grace period on SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// Time a worker may take to start answering.
    pub worker_timeout: Duration,
    /// Requests that may wait for a worker before 503.
    pub queue_limit: usize,
    /// The `node` executable.
    pub node: PathBuf,
    /// Where the prerender cache lives: `None` = on disk beside the bundle (the default),
    /// `redis://host:port[/db]` = shared through Redis, `memory` = in-process only.
    pub cache_url: Option<String>,
    /// Bound of the disk cache in bytes (the memory tier holds at most 256 MiB of it).
    pub cache_max_size: u64,
    /// Bound of the memory tier in front of the disk / Redis store (`None`: 256 MiB, or
    /// `cache_max_size` if smaller); `Some(0)` turns it off for the disk store (every hit reads
    /// its file: for measurements).
    pub cache_memory_size: Option<u64>,
}

/// The default `cache_max_size`: 1 GiB.
pub const DEFAULT_CACHE_MAX_SIZE: u64 = 1024 * 1024 * 1024;

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The bundle could not be loaded.
    #[error("cannot load the bundle: {0}")]
    Bundle(String),
    /// The prerender cache store could not be set up (bad `--cache-url`).
    #[error("cannot set up the cache: {0}")]
    Cache(String),
    /// The worker pool could not start.
    #[error("cannot start the Node.js workers: {0}")]
    Workers(#[from] ferry_workers::WorkerError),
}

/// Serves `manifest` until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(manifest: Manifest, config: ServerConfig) -> Result<(), ServerError> {
    let (listener, local) = listener::bind(&config).await?;
    let app = App::load(manifest, &config, local).await?;
    listener::serve(listener, app, &config, signals::shutdown_signal()).await
}

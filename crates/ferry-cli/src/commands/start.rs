//! `ferry start`: find the bundle, load its manifest, serve it until a signal arrives.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use ferry_manifest::{BUNDLE_DIR, MANIFEST_FILE, Manifest};
use ferry_server::ServerConfig;

use crate::cli::StartArgs;

/// Runs `ferry start`.
pub fn run(args: StartArgs) -> anyhow::Result<ExitCode> {
    let bundle_dir = find_bundle(&args.dir)?;
    let manifest = Manifest::load(&bundle_dir)?;
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let config = ServerConfig {
        bundle_dir,
        host: args.host,
        port: args.port,
        keep_alive_timeout: args.keep_alive_timeout.map(Duration::from_millis),
        workers: workers.max(1),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        worker_timeout: Duration::from_secs(args.worker_timeout),
        queue_limit: args.queue_limit,
        node: args.node,
        cache_url: args.cache_url.filter(|u| !u.trim().is_empty()),
        cache_max_size: args.cache_max_size,
        cache_memory_size: args.cache_memory_size,
    };
    // Before any thread exists: image transforms' large buffers go back to the OS when freed.
    crate::alloc::return_large_buffers_to_the_os();
    // Before the runtime starts: its threads and the Node.js workers inherit the policy (see
    // ferry_workers::sched: no preemption ping-pong between Ferry and a worker on one core).
    if let Err(err) = ferry_workers::sched::apply_batch_policy() {
        tracing::debug!("SCHED_BATCH not applied: {err}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(ferry_server::run(manifest, config))?;
    Ok(ExitCode::SUCCESS)
}

/// `DIR` may be an app directory (with `.ferry/`) or a bundle directory itself.
fn find_bundle(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("directory {} does not exist", dir.display()))?;
    if dir.join(MANIFEST_FILE).is_file() {
        return Ok(dir);
    }
    let nested = dir.join(BUNDLE_DIR);
    if nested.join(MANIFEST_FILE).is_file() {
        return Ok(nested);
    }
    bail!(
        "no Ferry bundle in {}: run `ferry build {}` first",
        dir.display(),
        dir.display()
    )
}

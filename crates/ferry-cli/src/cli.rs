//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Ferry: build and serve Next.js apps on machines you own.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). `FERRY_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the app's `next build` with Ferry's adapter and write the deployment bundle (DIR/.ferry).
    Build(BuildArgs),
    /// Serve a bundle built by `ferry build`.
    Start(StartArgs),
}

/// `ferry build [DIR] [-- NEXT_BUILD_ARGS]`
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The Next.js app directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Where to write the bundle (default: DIR/.ferry).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Extra arguments passed to `next build` (after `--`).
    #[arg(last = true)]
    pub next_args: Vec<String>,
}

/// `ferry start [DIR] [-p PORT] [-H HOST] [--keepAliveTimeout MS]`
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The app directory (containing .ferry) or a bundle directory (containing manifest.json).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Port to listen on.
    #[arg(short = 'p', long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Host to bind (like next start: all interfaces by default).
    #[arg(
        short = 'H',
        long = "hostname",
        env = "HOSTNAME",
        default_value = "0.0.0.0"
    )]
    pub host: String,
    /// Milliseconds an idle keep-alive connection stays open.
    #[arg(long = "keepAliveTimeout", alias = "keep-alive-timeout")]
    pub keep_alive_timeout: Option<u64>,
    /// Number of Node.js workers (default: one per core).
    #[arg(long, env = "FERRY_WORKERS")]
    pub workers: Option<usize>,
    /// Seconds to let in-flight requests and `after()` work finish on SIGTERM/SIGINT.
    #[arg(long = "shutdown-timeout", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Seconds a worker may take to start answering a request before it is replaced (504).
    #[arg(long = "worker-timeout", default_value_t = 120)]
    pub worker_timeout: u64,
    /// Requests that may wait for a worker before new ones get 503.
    #[arg(long = "queue-limit", default_value_t = 1024)]
    pub queue_limit: usize,
    /// The `node` executable for workers.
    #[arg(long, env = "FERRY_NODE", default_value = "node")]
    pub node: PathBuf,
}

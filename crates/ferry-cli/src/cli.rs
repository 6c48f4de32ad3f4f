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

/// `ferry start [DIR] [-p PORT] [-H HOST] [--keepAliveTimeout MS] [--cache-url URL] [--cache-max-size SIZE]`
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
    /// Where the prerender/ISR cache lives: `redis://host:port[/db]` shares it between instances;
    /// `memory` keeps it in-process; default: on disk beside the bundle (`.ferry-cache/`).
    #[arg(long = "cache-url", env = "FERRY_CACHE_URL")]
    pub cache_url: Option<String>,
    /// Largest size of the disk cache (e.g. `512MB`, `2GB`; K/M/G are powers of 1024).
    #[arg(
        long = "cache-max-size",
        env = "FERRY_CACHE_MAX_SIZE",
        default_value = "1GB",
        value_parser = parse_size
    )]
    pub cache_max_size: u64,
    /// Size of the memory tier in front of the cache store (default 256MB, at most the max
    /// size); `0` turns it off for the disk store, so every hit reads its file (measurements).
    #[arg(long = "cache-memory-size", env = "FERRY_CACHE_MEMORY_SIZE", value_parser = parse_size_or_zero)]
    pub cache_memory_size: Option<u64>,
}

/// [`parse_size`], also accepting `0` (a bound that turns something off).
pub fn parse_size_or_zero(s: &str) -> Result<u64, String> {
    if s.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" {
        return Ok(0);
    }
    parse_size(s)
}

/// `512MB`, `1GB`, `1.5G`, `2GiB`, `1048576` → bytes (K/M/G/T are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 512MB or 1GB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use KB, MB or GB)"
            ));
        }
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is not a usable size"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::{parse_size, parse_size_or_zero};

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MB"), Ok(512 << 20));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(parse_size_or_zero("0"), Ok(0));
        assert_eq!(parse_size_or_zero("0MB"), Ok(0));
        assert_eq!(parse_size_or_zero("64MB"), Ok(64 << 20));
        assert!(parse_size_or_zero("x").is_err());
    }
}

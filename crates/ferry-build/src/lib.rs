//! `ferry build`: runs the app's `next build` with Ferry's adapter and writes the deployment bundle.
//!
//! [`build`] checks the app, pins the build id, deployment id and Server Actions key, runs the
//! app's own `next build` with `NEXT_ADAPTER_PATH` pointing at Ferry's adapter (embedded from
//! `js/adapter/adapter.cjs`), reads the adapter's JSON and writes a self-contained bundle
//! (see [`bundle`] for the layout) that is swapped in only once complete.

pub mod adapter;
pub mod bundle;
pub mod content;
pub mod detect;
pub mod ids;
pub mod ordered_json;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_manifest::{BUNDLE_DIR, BundleKind, Manifest};

pub use bundle::BundleStats;
pub use ids::PinnedIds;

/// Env var naming the Node.js binary to run `next build` with (default `node` on `PATH`).
pub const ENV_NODE: &str = "FERRY_NODE";

/// What to build and where.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Next.js app directory.
    pub app_dir: PathBuf,
    /// Extra arguments for `next build` (after `--`).
    pub next_args: Vec<String>,
    /// Bundle directory; `<app_dir>/.ferry` when `None`.
    pub out_dir: Option<PathBuf>,
    /// Environment for `next build` on top of the process environment; also consulted first for
    /// `FERRY_BUILD_ID`, `FERRY_DEPLOYMENT_ID`, `NEXT_DEPLOYMENT_ID`,
    /// `NEXT_SERVER_ACTIONS_ENCRYPTION_KEY` and `FERRY_NODE`.
    pub env: BTreeMap<String, String>,
    /// Kill `next build` and fail after this long (`None`: wait as long as it takes).
    pub timeout: Option<Duration>,
}

impl BuildOptions {
    /// Options building `app_dir` into its default bundle dir.
    pub fn new(app_dir: impl Into<PathBuf>) -> Self {
        Self {
            app_dir: app_dir.into(),
            ..Self::default()
        }
    }

    fn var(&self, key: &str) -> Option<String> {
        self.env
            .get(key)
            .cloned()
            .or_else(|| std::env::var(key).ok())
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The bundle directory.
    pub bundle_dir: PathBuf,
    /// Server or static export.
    pub kind: BundleKind,
    /// The build id Next used.
    pub build_id: String,
    /// The deployment id baked into the build, if any.
    pub deployment_id: Option<String>,
    /// Counts and bytes.
    pub stats: BundleStats,
    /// Time spent in `next build`.
    pub next_build_time: Duration,
    /// Time spent writing the bundle (copying, hashing, compressing).
    pub bundle_time: Duration,
    /// Wall time of the whole build.
    pub total_time: Duration,
}

/// Why a build failed. [`BuildError::exit_code`] gives the process exit code for each.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The directory is not a Next.js app.
    #[error("{dir} is not a Next.js app: {reason}")]
    NotNextApp {
        /// The directory given.
        dir: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// `next` is not installed.
    #[error("`next` is not installed in {dir}: run `{install}` in that directory first")]
    NextNotInstalled {
        /// The app directory.
        dir: PathBuf,
        /// The install command for its package manager.
        install: String,
    },
    /// Node.js could not be started.
    #[error("cannot run Node.js ({node}): {source}; install Node.js or set FERRY_NODE")]
    NodeNotFound {
        /// The binary tried.
        node: String,
        /// The spawn error.
        source: std::io::Error,
    },
    /// `next build` exited with an error (its output went to the terminal).
    #[error("`next build` failed{}", .code.map(|c| format!(" with exit code {c}")).unwrap_or_else(|| " (killed by a signal)".into()))]
    NextBuildFailed {
        /// Its exit code; `None` when killed by a signal.
        code: Option<i32>,
    },
    /// `next build` ran longer than [`BuildOptions::timeout`] and was killed.
    #[error("`next build` did not finish within {0:?} and was stopped")]
    NextBuildTimedOut(Duration),
    /// `next build` succeeded but the adapter wrote nothing.
    #[error(
        "`next build` finished but Ferry's adapter did not run (no {path}); Ferry needs Next.js 16.4 or newer and no other adapterPath"
    )]
    AdapterDidNotRun {
        /// Where the output was expected.
        path: PathBuf,
    },
    /// The adapter's JSON could not be read.
    #[error("cannot read the adapter output {path}: {source}")]
    AdapterOutput {
        /// The JSON file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A traced file lies outside the repository root, so the bundle cannot hold it.
    #[error("{path} is outside the repository root {root}; cannot put it in the bundle")]
    OutsideRepo {
        /// The file.
        path: PathBuf,
        /// The repository root Next detected.
        root: PathBuf,
    },
    /// The output directory exists and is not a Ferry bundle; Ferry will not replace it.
    #[error("{0} exists and is not a Ferry bundle (no manifest.json); refusing to replace it")]
    OutDirNotBundle(PathBuf),
    /// Copying a file into the bundle failed.
    #[error("cannot copy {from} to {to}: {source}")]
    Copy {
        /// Source file.
        from: PathBuf,
        /// Destination.
        to: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The OS random source failed.
    #[error("cannot get random bytes: {0}")]
    Random(String),
    /// The build context did not have the expected shape.
    #[error("unexpected build output: {0}")]
    Invalid(String),
}

impl BuildError {
    /// The exit code `ferry build` should end with: `next build`'s own code when it failed,
    /// 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            BuildError::NextBuildFailed { code: Some(c) } if *c != 0 => *c,
            _ => 1,
        }
    }
}

/// Builds the app and writes its bundle.
pub fn build(opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    let app = detect::detect(&opts.app_dir)?;
    let out_dir = match &opts.out_dir {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => std::env::current_dir()
            .map_err(|source| BuildError::Io {
                path: d.clone(),
                source,
            })?
            .join(d),
        None => app.dir.join(BUNDLE_DIR),
    };
    let ids = ids::resolve(&app.dir, &|k| opts.var(k))?;

    let work = tempfile::Builder::new()
        .prefix("ferry-build-")
        .tempdir()
        .map_err(|source| BuildError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    let adapter_path = work.path().join("ferry-adapter.cjs");
    std::fs::write(&adapter_path, adapter::ADAPTER_JS).map_err(|source| BuildError::Io {
        path: adapter_path.clone(),
        source,
    })?;
    let handlers_dir = work.path().join("cache-handler");
    for (name, source) in adapter::CACHE_HANDLER_JS {
        let path = handlers_dir.join(name);
        std::fs::create_dir_all(&handlers_dir)
            .and_then(|()| std::fs::write(&path, source))
            .map_err(|source| BuildError::Io { path, source })?;
    }
    let ctx_path = work.path().join("build-context.json");

    let next_started = Instant::now();
    run_next_build(opts, &app, &ids, &adapter_path, &ctx_path)?;
    let next_build_time = next_started.elapsed();

    let ctx = read_context(&ctx_path)?;
    let bundle_started = Instant::now();
    let mut pinned_env = BTreeMap::new();
    // What `next start`'s server process sees (next-server sets process.env.NEXT_DEPLOYMENT_ID to
    // it), not necessarily the id Ferry pinned into the client assets.
    if let Some(d) = &ctx.runtime_deployment_id() {
        pinned_env.insert(ids::ENV_NEXT_DEPLOYMENT_ID.to_string(), d.clone());
    }
    pinned_env.insert(ids::ENV_ACTIONS_KEY.to_string(), ids.actions_key.clone());
    let (manifest, stats) = bundle::write_bundle(&ctx, &out_dir, pinned_env)?;
    Ok(BuildReport {
        bundle_dir: out_dir,
        kind: manifest.kind,
        build_id: manifest.build_id,
        deployment_id: manifest.deployment_id,
        stats,
        next_build_time,
        bundle_time: bundle_started.elapsed(),
        total_time: started.elapsed(),
    })
}

/// Runs `node <app>/node_modules/next/dist/bin/next build <args>` with stdio passed through.
fn run_next_build(
    opts: &BuildOptions,
    app: &detect::NextApp,
    ids: &PinnedIds,
    adapter_path: &Path,
    ctx_path: &Path,
) -> Result<(), BuildError> {
    let node = opts.var(ENV_NODE).unwrap_or_else(|| "node".to_string());
    let mut cmd = Command::new(&node);
    cmd.arg(&app.next_bin)
        .arg("build")
        .args(&opts.next_args)
        .current_dir(&app.dir)
        .envs(&opts.env)
        .env("NEXT_ADAPTER_PATH", adapter_path)
        .env("FERRY_ADAPTER_OUTPUT", ctx_path)
        .env("NEXT_TELEMETRY_DISABLED", "1")
        .env(ids::ENV_BUILD_ID, &ids.build_id)
        .env(ids::ENV_DEPLOYMENT_ID, &ids.deployment_id)
        .env(ids::ENV_ACTIONS_KEY, &ids.actions_key)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // With a time limit, run next in its own process group so a timeout can stop its workers
    // too. Without one, stay in the terminal's group so Ctrl-C reaches `next build` directly.
    #[cfg(unix)]
    if opts.timeout.is_some() {
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    }
    let mut child = cmd.spawn().map_err(|source| BuildError::NodeNotFound {
        node: node.clone(),
        source,
    })?;
    let wait_err = |source| BuildError::Io {
        path: app.next_bin.clone(),
        source,
    };
    let status = match opts.timeout {
        None => child.wait().map_err(wait_err)?,
        Some(limit) => {
            let started = Instant::now();
            loop {
                if let Some(status) = child.try_wait().map_err(wait_err)? {
                    break status;
                }
                if started.elapsed() > limit {
                    #[cfg(unix)]
                    let _ = Command::new("kill")
                        .args(["-KILL", "--", &format!("-{}", child.id())])
                        .status();
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BuildError::NextBuildTimedOut(limit));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    if !status.success() {
        return Err(BuildError::NextBuildFailed {
            code: status.code(),
        });
    }
    Ok(())
}

fn read_context(path: &Path) -> Result<adapter::AdapterContext, BuildError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BuildError::AdapterDidNotRun {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(BuildError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text).map_err(|source| BuildError::AdapterOutput {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads the manifest of a finished bundle (a convenience for callers of [`build`]).
pub fn load_manifest(bundle_dir: &Path) -> Result<Manifest, ferry_manifest::ManifestError> {
    Manifest::load(bundle_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_next_build() {
        assert_eq!(BuildError::NextBuildFailed { code: Some(3) }.exit_code(), 3);
        assert_eq!(BuildError::NextBuildFailed { code: None }.exit_code(), 1);
        let e = BuildError::NotNextApp {
            dir: "/x".into(),
            reason: "r".into(),
        };
        assert_eq!(e.exit_code(), 1);
        assert!(
            BuildError::NextBuildFailed { code: Some(3) }
                .to_string()
                .contains("exit code 3")
        );
    }

    #[test]
    fn the_reference_context_makes_a_valid_bundle() {
        // /tmp/ref/ctx.json is a real next 16.4.6 context of the showcase (when present).
        let ctx_path = Path::new("/tmp/ref/ctx.json");
        if !ctx_path.is_file() {
            return;
        }
        let ctx = read_context(ctx_path).expect("context parses");
        let tmp = tempfile::tempdir().expect("tmp");
        let out = tmp.path().join(".ferry");
        let (manifest, stats) =
            bundle::write_bundle(&ctx, &out, BTreeMap::new()).expect("bundle written");
        let loaded = Manifest::load(&out).expect("manifest loads");
        assert_eq!(loaded, manifest);
        assert!(stats.functions > 0 && stats.prerenders > 0 && stats.static_files > 0);
        for f in &manifest.functions {
            assert!(out.join(&f.entry).is_file(), "{}", f.entry);
        }
    }
}

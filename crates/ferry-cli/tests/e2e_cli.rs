//! End-to-end tests of the `ferry` command line: error messages and exit codes of `ferry build`
//! and `ferry start`, `--help`, and a static export served without any Node.js process.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use support::{FerryServer, ProcessSpec};

const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

fn ferry(args: &[&str], cwd: &Path) -> ProcessSpec {
    ProcessSpec::new(support::ferry_bin(), cwd)
        .args(args.iter().copied())
        .env("NEXT_TELEMETRY_DISABLED", "1")
}

fn faults_src() -> PathBuf {
    support::repo_root().join("tests/fixtures/faults-app")
}

/// Copies the sources of the faults app (no node_modules, no build output) to `dst`.
fn copy_sources(dst: &Path) -> Result<()> {
    let src = faults_src();
    std::fs::create_dir_all(dst)?;
    for name in [
        "package.json",
        "package-lock.json",
        "next.config.mjs",
        "app",
    ] {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(src.join(name))
            .arg(dst.join(name))
            .status()?;
        ensure!(status.success(), "copying {name}");
    }
    Ok(())
}

#[test]
fn build_rejects_a_directory_that_is_not_a_next_app() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("README.md"), "not an app\n")?;
    let (status, out) = support::run_capture(
        &ferry(&["build", &dir.path().to_string_lossy()], dir.path()),
        Duration::from_secs(60),
    )?;
    ensure!(
        !status.success(),
        "ferry build succeeded on a non-app:\n{out}"
    );
    ensure!(
        out.contains("is not a Next.js app") && out.contains("package.json"),
        "unclear message for a directory without package.json:\n{out}"
    );

    // A package.json without `next` is not a Next.js app either.
    std::fs::write(
        dir.path().join("package.json"),
        r#"{"name":"x","dependencies":{"react":"19.3.1"}}"#,
    )?;
    let (status, out) = support::run_capture(
        &ferry(&["build", &dir.path().to_string_lossy()], dir.path()),
        Duration::from_secs(60),
    )?;
    ensure!(
        !status.success(),
        "ferry build succeeded on a package without next:\n{out}"
    );
    ensure!(
        out.contains("is not a Next.js app") && out.contains("next"),
        "unclear message for a package without next:\n{out}"
    );
    Ok(())
}

#[test]
fn build_without_node_modules_names_the_install_command() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let app = dir.path().join("app");
    copy_sources(&app)?;
    let (status, out) = support::run_capture(
        &ferry(&["build", &app.to_string_lossy()], &app),
        Duration::from_secs(60),
    )?;
    ensure!(
        !status.success(),
        "ferry build succeeded without node_modules:\n{out}"
    );
    ensure!(
        out.contains("npm ci") || out.contains("npm install"),
        "the message does not name `npm ci` / `npm install`:\n{out}"
    );
    ensure!(
        !app.join(".ferry").exists(),
        "a bundle was written although the build failed"
    );
    Ok(())
}

#[test]
fn failing_next_build_passes_output_and_exit_code_through() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = faults_src();
    support::install_node_modules(&src, dir.path())?;
    let app = dir.path().join("app");
    support::copy_app(&src, &app)?;
    std::fs::write(
        app.join("app/page.js"),
        "export default function Home( {\n  return <h1>broken</h1>\n",
    )?;

    let (ferry_status, ferry_out) = support::run_capture(
        &ferry(&["build", &app.to_string_lossy()], &app),
        BUILD_TIMEOUT,
    )?;
    // The reference: plain `next build` on the same broken copy.
    let (next_status, next_out) =
        support::run_capture(&support::next_cli(&app, &["build"]), BUILD_TIMEOUT)?;
    ensure!(
        !next_status.success(),
        "next build accepted the broken page:\n{next_out}"
    );
    ensure!(
        ferry_status.code() == next_status.code(),
        "ferry build exit code {:?}, next build's {:?}; ferry output:\n{ferry_out}",
        ferry_status.code(),
        next_status.code()
    );
    // next's diagnostic (it names the broken file) reaches the user through ferry.
    ensure!(
        next_out.contains("page.js"),
        "next build output does not name the file:\n{next_out}"
    );
    let diagnostic: Vec<&str> = next_out
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("page.js") || l.contains("rror"))
        .collect();
    eprintln!(
        "next build exit {:?}, ferry build exit {:?}; diagnostic lines: {diagnostic:?}",
        next_status.code(),
        ferry_status.code()
    );
    ensure!(
        !diagnostic.is_empty() && diagnostic.iter().all(|l| ferry_out.contains(l)),
        "next's diagnostic lines {diagnostic:?} are not all in ferry build's output:\n{ferry_out}"
    );
    ensure!(
        !app.join(".ferry/manifest.json").exists(),
        "a bundle was written although next build failed"
    );
    Ok(())
}

#[test]
fn start_without_a_bundle_fails_clearly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = support::free_port()?.to_string();
    let (status, out) = support::run_capture(
        &ferry(
            &[
                "start",
                &dir.path().to_string_lossy(),
                "-p",
                &port,
                "-H",
                "127.0.0.1",
            ],
            dir.path(),
        ),
        Duration::from_secs(30),
    )?;
    ensure!(
        !status.success(),
        "ferry start succeeded without a bundle:\n{out}"
    );
    ensure!(
        out.contains("no Ferry bundle") && out.contains("ferry build"),
        "unclear message without a bundle:\n{out}"
    );

    let missing = dir.path().join("does-not-exist");
    let (status, out) = support::run_capture(
        &ferry(
            &["start", &missing.to_string_lossy(), "-p", &port],
            dir.path(),
        ),
        Duration::from_secs(30),
    )?;
    ensure!(
        !status.success(),
        "ferry start succeeded on a missing directory:\n{out}"
    );
    ensure!(
        out.contains("does-not-exist"),
        "the message does not name the missing directory:\n{out}"
    );
    Ok(())
}

#[test]
fn help_lists_the_documented_commands_and_flags() -> Result<()> {
    let cwd = std::env::temp_dir();
    let (status, out) = support::run_capture(&ferry(&["--help"], &cwd), Duration::from_secs(30))?;
    ensure!(status.success(), "ferry --help failed:\n{out}");
    for word in ["build", "start", "--help", "--version"] {
        ensure!(out.contains(word), "ferry --help lacks {word}:\n{out}");
    }

    let (status, out) =
        support::run_capture(&ferry(&["start", "--help"], &cwd), Duration::from_secs(30))?;
    ensure!(status.success(), "ferry start --help failed:\n{out}");
    for flag in [
        "-p, --port",
        "-H, --hostname",
        "--keepAliveTimeout",
        "--workers",
        "--shutdown-timeout",
        "--worker-timeout",
        "--queue-limit",
        "--node",
        "PORT",
        "HOSTNAME",
        "FERRY_WORKERS",
    ] {
        ensure!(
            out.contains(flag),
            "ferry start --help lacks {flag}:\n{out}"
        );
    }

    let (status, out) =
        support::run_capture(&ferry(&["build", "--help"], &cwd), Duration::from_secs(30))?;
    ensure!(status.success(), "ferry build --help failed:\n{out}");
    ensure!(
        out.contains("--out"),
        "ferry build --help lacks --out:\n{out}"
    );

    let (status, out) =
        support::run_capture(&ferry(&["start", "--bogus"], &cwd), Duration::from_secs(30))?;
    ensure!(
        status.code() == Some(2),
        "an unknown flag exits {status}, expected 2 (usage error):\n{out}"
    );
    Ok(())
}

static EXPORT_APP: OnceLock<Result<PathBuf, String>> = OnceLock::new();

fn export_app() -> Result<&'static Path> {
    EXPORT_APP
        .get_or_init(|| {
            support::build_app_once(
                "export",
                &support::repo_root().join("tests/fixtures/export-app"),
                |_| Ok(()),
            )
            .map_err(|e| format!("{e:#}"))
        })
        .as_deref()
        .map_err(|e| anyhow!("building the export app failed: {e}"))
}

#[test]
fn static_export_is_served_without_node() -> Result<()> {
    let app = export_app()?;
    let ferry = FerryServer::start(app, &["--workers", "2"], &[])?;
    let checks = [
        ("/", "Static export"),
        ("/about", "About this static export."),
        ("/hello.txt", ""),
    ];
    for (path, needle) in checks {
        let resp = ferry.get(path)?;
        ensure!(
            resp.status == 200,
            "GET {path}: HTTP {} (expected 200)\n{}",
            resp.status,
            ferry.log_tail()
        );
        let body = String::from_utf8_lossy(&resp.decoded_body()?).into_owned();
        ensure!(body.contains(needle), "GET {path}: body lacks {needle:?}");
    }
    let missing = ferry.get("/no-such-page")?;
    ensure!(
        missing.status == 404,
        "GET /no-such-page: HTTP {}",
        missing.status
    );
    // No Node.js worker: ferry has no child process at any point of a short watch.
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let children: Vec<String> = ferry
            .children()
            .into_iter()
            .map(|p| format!("{p} {}", support::cmdline(p)))
            .collect();
        ensure!(
            children.is_empty(),
            "ferry started processes for a static export: {children:?}"
        );
        if Instant::now() >= deadline {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

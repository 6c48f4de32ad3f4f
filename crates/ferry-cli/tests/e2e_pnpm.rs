//! An app installed with pnpm (tests/fixtures/pnpm-app): its `node_modules/next`, `react` and
//! `react-dom` are symlinks into `node_modules/.pnpm`. `ferry build` keeps those links in the
//! bundle (regression: it tried to copy a linked directory as a file and failed), and the bundle
//! serves with the app's node_modules deleted: prerendered pages from Rust, a dynamic page and a
//! route handler from workers that resolve `next` and `react` through the bundle's links.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Result, anyhow, ensure};
use support::{FerryServer, RawRequest};

fn app() -> Result<&'static Path> {
    static APP: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    APP.get_or_init(|| {
        support::build_app_once(
            "pnpm",
            &support::repo_root().join("tests/fixtures/pnpm-app"),
            |app| {
                ensure!(
                    std::fs::symlink_metadata(app.join("node_modules/next"))?
                        .file_type()
                        .is_symlink(),
                    "the pnpm fixture's node_modules/next is not a symlink: not a pnpm install"
                );
                Ok(())
            },
        )
        .map_err(|e| format!("{e:#}"))
    })
    .as_deref()
    .map_err(|e| anyhow!("building the pnpm app failed: {e}"))
}

#[test]
fn pnpm_links_stay_links_in_the_bundle() -> Result<()> {
    let link = app()?.join(".ferry/server/node_modules/next");
    let meta = std::fs::symlink_metadata(&link)?;
    ensure!(
        meta.file_type().is_symlink(),
        "{} is not a symlink",
        link.display()
    );
    let target = std::fs::read_link(&link)?;
    ensure!(
        target.is_relative() && target.starts_with(".pnpm"),
        "{} -> {}: expected a relative link into .pnpm (the bundle must be movable)",
        link.display(),
        target.display()
    );
    ensure!(
        link.join("package.json").is_file(),
        "{} does not resolve inside the bundle",
        link.display()
    );
    Ok(())
}

#[test]
fn pnpm_app_bundle_serves_without_node_modules() -> Result<()> {
    let app = app()?;
    ensure!(
        !app.join("node_modules").exists(),
        "node_modules still there"
    );
    let ferry = FerryServer::start(app, &["--workers", "1"], &[])?;
    let check = |req: RawRequest, needle: &str| -> Result<()> {
        let target = req.target.clone();
        let resp = ferry.send(req, std::time::Duration::from_secs(60))?;
        let body = String::from_utf8_lossy(&resp.decoded_body()?).into_owned();
        ensure!(
            resp.status == 200 && body.contains(needle),
            "GET {target}: HTTP {}, body lacks {needle:?}: {body:.300}\n{}",
            resp.status,
            ferry.log_tail()
        );
        Ok(())
    };
    check(RawRequest::get("/"), "pnpm fixture: prerendered")?;
    check(
        RawRequest::get("/hello").header("User-Agent", "ferry-pnpm-test"),
        "ferry-pnpm-test",
    )?;
    check(RawRequest::get("/api/ping"), "\"pong\":true")?;
    Ok(())
}

//! An app shaped like many existing ones (tests/fixtures/pnpm-app): installed with pnpm, so its
//! `node_modules/next`, `react` and `react-dom` are symlinks into `node_modules/.pnpm`, and with a
//! classic `middleware.js`, which runs in the edge runtime.
//! - `ferry build` keeps those links in the bundle (regression: it tried to copy a linked
//!   directory as a file and failed), and the bundle serves with the app's node_modules deleted:
//!   prerendered pages from Rust, a dynamic page and a route handler from workers that resolve
//!   `next` and `react` through the bundle's links.
//! - The edge middleware runs in Next's edge sandbox inside the workers (regression: every
//!   request it matched answered 500, "exports no middleware handler"; then Ferry's cache handler,
//!   bundled into the middleware, threw on `require('node:http')`).
//! - An edge-runtime route handler (`export const runtime = 'edge'`) builds (regression: Next
//!   cannot compile it once `cacheHandlers` is set, so Ferry's adapter leaves them out for such an
//!   app) and answers from the same sandbox, with next start's headers.

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

#[test]
fn edge_middleware_runs_in_the_edge_runtime() -> Result<()> {
    let ferry = FerryServer::start(app()?, &["--workers", "1"], &[])?;
    let timeout = std::time::Duration::from_secs(60);
    // NextResponse.next with a request header and a response header.
    let page = ferry.send(RawRequest::get("/hello"), timeout)?;
    let body = String::from_utf8_lossy(&page.decoded_body()?).into_owned();
    ensure!(
        page.status == 200 && page.header("x-from-middleware") == Some("edge"),
        "GET /hello: HTTP {} x-from-middleware {:?}\n{}",
        page.status,
        page.header("x-from-middleware"),
        ferry.log_tail()
    );
    // `EdgeRuntime` is defined only in the edge sandbox ("edge-runtime").
    ensure!(
        body.contains("middleware runtime: <!-- -->edge-runtime")
            || body.contains("middleware runtime: edge-runtime"),
        "the page did not see the edge middleware's request header: {body:.400}"
    );
    // A prerendered page the middleware matches: served from Rust, the header still added.
    let home = ferry.get("/")?;
    ensure!(
        home.status == 200 && home.header("x-from-middleware") == Some("edge"),
        "GET /: HTTP {} x-from-middleware {:?}",
        home.status,
        home.header("x-from-middleware")
    );
    // Redirect and rewrite answered by the edge middleware.
    let redirect = ferry.get("/old-hello")?;
    ensure!(
        redirect.status == 307
            && redirect
                .header("location")
                .is_some_and(|l| l.ends_with("/hello")),
        "GET /old-hello: HTTP {} location {:?}",
        redirect.status,
        redirect.header("location")
    );
    let rewritten = ferry.get("/rewritten")?;
    let body = String::from_utf8_lossy(&rewritten.decoded_body()?).into_owned();
    ensure!(
        rewritten.status == 200 && body.contains("rendered for"),
        "GET /rewritten: HTTP {}: {body:.300}",
        rewritten.status
    );
    Ok(())
}

#[test]
fn edge_route_handler_answers_from_the_edge_sandbox() -> Result<()> {
    let ferry = FerryServer::start(app()?, &["--workers", "1"], &[])?;
    let timeout = std::time::Duration::from_secs(60);
    let get = ferry.send(RawRequest::get("/api/edge?q=ferry"), timeout)?;
    let body = String::from_utf8_lossy(&get.decoded_body()?).into_owned();
    ensure!(
        get.status == 200 && body == r#"{"runtime":"edge-runtime","q":"ferry"}"#,
        "GET /api/edge: HTTP {}: {body}\n{}",
        get.status,
        ferry.log_tail()
    );
    // next start runs edge routes in its sandbox before `setVaryHeader`: no router Vary tokens.
    let vary = get.header_all("vary").join(", ");
    ensure!(
        !vary.contains("rsc"),
        "an edge route got the router's Vary: {vary}"
    );
    let mut post = RawRequest::get("/api/edge");
    post.method = "POST".into();
    post.body = b"hello".to_vec();
    let post = post
        .header("Content-Length", "5")
        .header("Content-Type", "text/plain");
    let echoed = ferry.send(post, timeout)?;
    let body = String::from_utf8_lossy(&echoed.decoded_body()?).into_owned();
    ensure!(
        echoed.status == 200 && body == "echo:hello" && echoed.header("x-edge-route") == Some("1"),
        "POST /api/edge: HTTP {}: {body}",
        echoed.status
    );
    Ok(())
}

//! JavaScript entrypoints (pages, app pages, route handlers, API routes) run in the worker pool.

use std::sync::Arc;

use ferry_http::{Body, HttpError};
use ferry_workers::{Invocation, InvocationMeta, WorkerResponseInfo};
use http::{Response, Uri};

use super::{RequestCtx, guard, not_found, route::header_map};
use crate::App;

/// Invokes the function behind the output, if there is one.
pub async fn serve(
    app: &Arc<App>,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
    body: Body,
) -> Option<Response<Body>> {
    let function = app.functions.get(&output.pathname)?;
    let pool = app.workers.as_ref()?;
    let Ok(uri) = invocation_uri(&output.invocation_path, &output.query) else {
        return Some(guard::reject(400));
    };
    let mut inv = Invocation::new(
        function.entry.clone(),
        function.kind,
        ctx.parts.method.clone(),
        uri,
    );
    inv.headers = header_map(&output.request_headers);
    inv.body = body;
    inv.meta = meta(app, ctx);
    let res = match pool.dispatch(inv).await {
        Ok(res) => res,
        Err(err) => {
            tracing::error!("{} {}: {err}", ctx.parts.method, ctx.parts.uri);
            return Some(err.to_response());
        }
    };
    let not_found = res
        .extensions()
        .get::<WorkerResponseInfo>()
        .is_some_and(|info| info.not_found);
    if not_found {
        return Some(not_found::respond(app, ctx, &output.request_headers).await);
    }
    let mut res = res;
    let rsc_request = output.rsc.as_ref().is_some_and(|r| r.header);
    if needs_router_vary(function.kind, rsc_request) {
        prepend_vary(res.headers_mut(), &app.manifest.routing.rsc.vary_header);
    }
    if function.kind == ferry_workers::EntryKind::Pages
        && res.status() == http::StatusCode::OK
        && let Some(page) = data_request_page(app, &output.pathname)
        && let Ok(value) = http::HeaderValue::from_str(&page)
    {
        // base-server.js: a `_next/data` request (router-server marks it `x-nextjs-data`)
        // answered 200 names the page it matched.
        res.headers_mut().insert("x-nextjs-matched-path", value);
    }
    Some(res)
}

/// The page behind a `_next/data/<buildId>/<page>.json` output pathname (`/index` is `/`).
fn data_request_page(app: &App, pathname: &str) -> Option<String> {
    let prefix = format!(
        "{}/_next/data/{}",
        app.manifest.config.base_path, app.manifest.build_id
    );
    let page = pathname.strip_prefix(&prefix)?.strip_suffix(".json")?;
    Some(if page == "/index" {
        "/".into()
    } else {
        page.into()
    })
}

/// next-server's `setVaryHeader` (base-server.js) appends the router headers to `Vary` before it
/// runs a route handler, or a pages-router page for an RSC request; app pages set their own
/// `Vary`, API routes never get one. Invoked directly, the entrypoints skip that layer.
fn needs_router_vary(kind: ferry_workers::EntryKind, rsc_request: bool) -> bool {
    use ferry_workers::EntryKind;
    match kind {
        EntryKind::AppRoute => true,
        EntryKind::Pages => rsc_request,
        EntryKind::AppPage | EntryKind::PagesApi | EntryKind::Middleware | EntryKind::Image => {
            false
        }
    }
}

/// Puts `value` first in `Vary` (it was appended before the handler added its own), as one line.
pub fn prepend_vary(headers: &mut http::HeaderMap, value: &str) {
    let existing: Vec<String> = headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let joined = std::iter::once(value.to_owned())
        .chain(existing)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = http::HeaderValue::from_str(&joined) {
        headers.insert(http::header::VARY, v);
    }
}

/// `path?query` with the query re-encoded like `URLSearchParams`.
pub fn invocation_uri(
    path: &str,
    query: &[(String, String)],
) -> Result<Uri, http::uri::InvalidUri> {
    if query.is_empty() {
        return path.parse();
    }
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query.iter())
        .finish();
    format!("{path}?{encoded}").parse()
}

/// The `requestMeta` every entrypoint invocation gets. `initURL` is built like next start's
/// router (resolve-routes.js): `http://<-H hostname, else localhost>:<port><original url>`, not
/// from the Host header; app code sees it as `request.url`, `_error` shows its hostname.
pub fn meta(app: &App, ctx: &RequestCtx) -> InvocationMeta {
    let mut meta = base_meta(app, ctx);
    if let Some(port) = meta.port {
        let host = app.init_hostname();
        meta.init_url = Some(format!(
            "http://{}:{port}{}",
            format_hostname(host),
            ctx.parts.uri.path_and_query().map_or("/", |pq| pq.as_str())
        ));
    }
    meta
}

/// The `requestMeta` for the middleware / proxy: its request URL is the one routing resolved
/// for it ([`ferry_router::RoutingState::middleware_url`]: next start's initURL origin once the
/// server listens), the origin its rewrites and redirects are resolved against.
pub fn middleware_meta(app: &App, ctx: &RequestCtx, url: &str) -> InvocationMeta {
    InvocationMeta {
        init_url: Some(url.to_owned()),
        ..base_meta(app, ctx)
    }
}

/// What every invocation gets: the client's host name, Ferry's port, the revalidation origin.
fn base_meta(app: &App, ctx: &RequestCtx) -> InvocationMeta {
    let port = app.local_addr().map(|a| a.port());
    let host = ctx
        .parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    InvocationMeta {
        hostname: Some(host.split(':').next().unwrap_or("localhost").to_owned()),
        port,
        protocol: Some("http".into()),
        init_url: Some(format!(
            "http://{host}{}",
            ctx.parts.uri.path_and_query().map_or("/", |pq| pq.as_str())
        )),
        revalidate_origin: port.map(|p| format!("http://127.0.0.1:{p}")),
        ..InvocationMeta::default()
    }
}

/// next start's `initURL` origin: `http://<-H, else localhost>:<port>` (router-server.js).
pub fn init_origin(app: &App) -> Option<String> {
    let port = app.local_addr()?.port();
    Some(format!(
        "http://{}:{port}",
        format_hostname(app.init_hostname())
    ))
}

/// `formatHostname`: IPv6 literals in brackets.
fn format_hostname(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

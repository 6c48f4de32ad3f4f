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
    let function = function_for(app, &output.pathname)?;
    let pool = app.workers.as_ref()?;
    let Ok(inv) = invocation(app, ctx, output, function, body) else {
        return Some(guard::reject(400));
    };
    let res = match pool.dispatch(inv).await {
        Ok(res) => res,
        Err(err) => {
            tracing::error!("{} {}: {err}", ctx.parts.method, ctx.parts.uri);
            return Some(err.to_response());
        }
    };
    Some(complete(app, ctx, output, function, res).await)
}

/// The worker request for `function` answering `output`; an error when the request target
/// cannot be handed on (the client gets a 400).
pub fn invocation(
    app: &App,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
    function: &crate::app::Function,
    body: Body,
) -> Result<Invocation, http::uri::InvalidUri> {
    // next-server hands the entrypoint the URL the client asked for (`request.url` is the
    // initURL's path and query) and what routing resolved in requestMeta (`query`, `locale`);
    // the page shows the former as its `asPath`, whatever it was rewritten to.
    let uri = original_uri(&ctx.parts.uri)?;
    let mut inv = Invocation::new(
        function.entry.clone(),
        function.kind,
        ctx.parts.method.clone(),
        uri,
    );
    inv.headers = header_map(&output.request_headers);
    add_forwarded_headers(app, ctx, &mut inv.headers);
    inv.body = body;
    inv.meta = meta(app, ctx);
    add_routing_meta(app, ctx, output, &mut inv.meta);
    Ok(inv)
}

/// What next-server does with an entrypoint's response before it leaves: the 404 page when the
/// handler asked for it, the router `Vary`, the matched path of a `_next/data` answer.
pub async fn complete(
    app: &Arc<App>,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
    function: &crate::app::Function,
    res: Response<Body>,
) -> Response<Body> {
    let not_found = res
        .extensions()
        .get::<WorkerResponseInfo>()
        .is_some_and(|info| info.not_found);
    if not_found {
        // With no Cache-Control set, it was a `fallback: false` miss: next start gives up on the
        // page and its router renders the 404 page of the default locale.
        let locale = (!res.headers().contains_key(http::header::CACHE_CONTROL))
            .then(|| default_locale(app, ctx));
        return not_found_page(app, ctx, output, res.headers(), locale).await;
    }
    let mut res = res;
    let rsc_request = output.rsc.as_ref().is_some_and(|r| r.header);
    if !function.edge && needs_router_vary(function.kind, rsc_request) {
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
    res
}

/// The 404 page for a pages-router `notFound`: the pages handler set the entry's Cache-Control
/// and `x-nextjs-cache` (in `entry`) before it asked for the 404 page (getStaticProps'
/// `notFound` is cached like a page); next start's 404 render keeps them.
pub async fn not_found_page(
    app: &Arc<App>,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
    entry: &http::HeaderMap,
    locale: Option<&str>,
) -> Response<Body> {
    let mut page = not_found::respond_in(app, ctx, &output.request_headers, locale).await;
    if let Some(cc) = entry.get(http::header::CACHE_CONTROL) {
        page.headers_mut()
            .insert(http::header::CACHE_CONTROL, cc.clone());
    }
    if let Some(state) = entry.get("x-nextjs-cache") {
        page.headers_mut().insert("x-nextjs-cache", state.clone());
    }
    page
}

/// The page behind a `_next/data/<buildId>/<page>.json` output pathname (`/index` is `/`).
pub fn data_request_page(app: &App, pathname: &str) -> Option<String> {
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
/// `Vary`, API routes never get one. Invoked directly, the entrypoints skip that layer. Edge
/// entrypoints never get it (next-server hands them to its edge sandbox before that point).
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

/// base-server.js `handleRequestImpl` fills in the `x-forwarded-*` request headers the client
/// did not send before anything runs (the middleware, pages, API routes, route handlers):
/// host from `Host`, the server's port, `http`, the client's address.
pub fn add_forwarded_headers(app: &App, ctx: &RequestCtx, headers: &mut http::HeaderMap) {
    use http::HeaderValue;
    let existing_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let host = ctx
        .parts
        .headers
        .get(http::header::HOST)
        .cloned()
        .or_else(|| HeaderValue::from_str(app.init_hostname()).ok());
    if let Some(host) = host {
        headers.entry("x-forwarded-host").or_insert(host);
    }
    let https = existing_proto.as_deref() == Some("https");
    let port = app
        .local_addr()
        .map_or(if https { 443 } else { 80 }, |a| a.port());
    headers
        .entry("x-forwarded-port")
        .or_insert_with(|| HeaderValue::from(port));
    headers
        .entry("x-forwarded-proto")
        .or_insert_with(|| HeaderValue::from_static(if https { "https" } else { "http" }));
    if let Ok(ip) = HeaderValue::from_str(&ctx.remote.ip().to_string()) {
        headers.entry("x-forwarded-for").or_insert(ip);
    }
}

/// The request target next-server gives an entrypoint: the original path and query, with dot
/// segments resolved as `new URL()` does (`parseUrl(initURL)`).
pub fn original_uri(uri: &Uri) -> Result<Uri, http::uri::InvalidUri> {
    let raw = uri.path_and_query().map_or("/", |pq| pq.as_str());
    match url::Url::parse(&format!("http://n{raw}")) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()).parse(),
            None => u.path().parse(),
        },
        Err(_) => raw.parse(),
    }
}

/// What next start's router resolved, as next-server passes it to the entrypoint: `query` (the
/// routed query, `invokeQuery`; sent as `ferryQuery` pairs, see the bridge), `locale` (of the routed path, else
/// the request's) and `defaultLocale` (the domain's, else the config's; never inferred from
/// the path's locale, which would make a `fr` page on `localhost` default to `fr`).
pub fn add_routing_meta(
    app: &App,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
    meta: &mut InvocationMeta,
) {
    // As ordered pairs: the meta's JSON objects do not keep key order; the bridge builds the
    // `query` object (and the page's `query` prop shows keys in this order). A third element
    // marks a key next start holds as an array even with one value.
    let pairs: Vec<serde_json::Value> = output
        .query
        .iter()
        .map(|(k, v)| {
            if output.query_arrays.contains(k) {
                serde_json::json!([k, v, true])
            } else {
                serde_json::json!([k, v])
            }
        })
        .collect();
    meta.extra.insert("ferryQuery".into(), pairs.into());
    if app.manifest.config.i18n.is_some() {
        let locale = path_locale(app, &output.invocation_path)
            .or_else(|| path_locale(app, ctx.parts.uri.path()))
            .unwrap_or_else(|| default_locale(app, ctx));
        meta.extra.insert("locale".into(), locale.into());
        meta.extra
            .insert("defaultLocale".into(), default_locale(app, ctx).into());
    }
}

/// The configured locale a path starts with (after the basePath and a `_next/data/<id>`
/// prefix), in its configured spelling.
fn path_locale<'a>(app: &'a App, path: &str) -> Option<&'a str> {
    let i18n = app.manifest.config.i18n.as_ref()?;
    let base = app.manifest.config.base_path.as_str();
    let rest = path
        .strip_prefix(base)
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .unwrap_or(path);
    let data_prefix = format!("/_next/data/{}", app.manifest.build_id);
    let rest = rest.strip_prefix(data_prefix.as_str()).unwrap_or(rest);
    let first = rest.split('/').nth(1)?;
    let first = first.strip_suffix(".json").unwrap_or(first);
    i18n.locales
        .iter()
        .find(|l| l.eq_ignore_ascii_case(first))
        .map(String::as_str)
}

/// The request's default locale: the one of the `i18n.domains` entry its host name matches
/// (`detectDomainLocale` on the Host header), else `i18n.defaultLocale`; `""` without i18n.
pub fn default_locale<'a>(app: &'a App, ctx: &RequestCtx) -> &'a str {
    let Some(i18n) = app.manifest.config.i18n.as_ref() else {
        return "";
    };
    let host = ctx
        .parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
    host.and_then(|host| {
        i18n.domains.iter().find(|d| {
            d.domain
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
                == host
        })
    })
    .map_or(i18n.default_locale.as_str(), |d| d.default_locale.as_str())
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
    let mut extra = serde_json::Map::new();
    if let Some(connection) = ctx
        .parts
        .headers
        .get(http::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
    {
        // Hop-by-hop on the way to the worker; the bridge gives it back to the request.
        extra.insert("ferryConnection".into(), connection.into());
    }
    InvocationMeta {
        hostname: Some(host.split(':').next().unwrap_or("localhost").to_owned()),
        port,
        protocol: Some("http".into()),
        init_url: Some(format!(
            "http://{host}{}",
            ctx.parts.uri.path_and_query().map_or("/", |pq| pq.as_str())
        )),
        revalidate_origin: port.map(|p| format!("http://127.0.0.1:{p}")),
        extra,
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

/// The function behind an output pathname: its own, else (PPR) the page function a concrete
/// prerendered page (`/posts/one` of `/posts/[id]`) was rendered from. The router names such a
/// page by its prerender pathname; whatever Ferry's cache does not answer for it (a dynamic RSC
/// navigation, a prefetch of a PPR shell, a bypassing request) is next start's page to render.
pub fn function_for<'a>(app: &'a App, pathname: &str) -> Option<&'a crate::app::Function> {
    app.functions
        .get(pathname)
        .or_else(|| ppr_page_function(app, pathname))
        .or_else(|| data_page_function(app, pathname))
}

/// The pages-router page function behind a `_next/data/<id>/<page>.json` prerender pathname
/// (`/legacy/[slug]` for `/_next/data/<id>/legacy/[slug].json`): a data request its prerender
/// does not answer (a render Ferry does not store, such as a `getStaticProps` redirect) is the
/// page's to answer, as next-server hands it to the page.
fn data_page_function<'a>(app: &'a App, pathname: &str) -> Option<&'a crate::app::Function> {
    let page = data_request_page(app, pathname)?;
    let base = &app.manifest.config.base_path;
    app.functions.get(&format!("{base}{page}")).or_else(|| {
        // A localized data URL (`/en-US/legacy`): the page without its locale.
        let i18n = app.manifest.config.i18n.as_ref()?;
        let rest = page.strip_prefix('/')?;
        let (locale, unlocalized) = rest.split_once('/').unwrap_or((rest, ""));
        i18n.locales.iter().any(|l| l == locale).then_some(())?;
        app.functions.get(&format!("{base}/{unlocalized}"))
    })
}

/// The page function of a PPR page's concrete pathname, or of its `.rsc` / segment variant.
fn ppr_page_function<'a>(app: &'a App, pathname: &str) -> Option<&'a crate::app::Function> {
    let rsc = &app.manifest.routing.rsc;
    let segments = format!("{}/", rsc.prefetch_segment_dir_suffix);
    let base = pathname
        .find(&segments)
        .filter(|_| segments.len() > 1)
        .map_or(pathname, |i| &pathname[..i]);
    let base = base.strip_suffix(rsc.suffix.as_str()).unwrap_or(base);
    let shell = app.postponed.get(base).or_else(|| match base {
        "/index" => app.postponed.get("/"),
        "/" => app.postponed.get("/index"),
        _ => None,
    })?;
    app.functions_by_id.get(shell.parent_output_id())
}

/// PPR: the invocation that resumes a partially prerendered page from its postponed state. The
/// request is the client's, as [`serve`] would send it; the body is the postponed state and the
/// meta's `ferryResume` tells the bridge to hand it to the entrypoint as `requestMeta.postponed`
/// (the adapter docs' resume protocol, in-process flavour). The entrypoint then renders only the
/// postponed Suspense boundaries and streams them.
pub fn resume_invocation(
    app: &App,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
    function: &crate::app::Function,
    postponed: &str,
) -> Option<Invocation> {
    let uri = original_uri(&ctx.parts.uri).ok()?;
    let mut inv = Invocation::new(
        function.entry.clone(),
        function.kind,
        ctx.parts.method.clone(),
        uri,
    );
    inv.headers = header_map(&output.request_headers);
    // The body is Ferry's, not the client's: its framing headers must not reach the page.
    for name in [
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::CONTENT_TYPE,
    ] {
        inv.headers.remove(name);
    }
    add_forwarded_headers(app, ctx, &mut inv.headers);
    inv.body = ferry_http::full(bytes::Bytes::copy_from_slice(postponed.as_bytes()));
    inv.meta = meta(app, ctx);
    add_routing_meta(app, ctx, output, &mut inv.meta);
    inv.meta.extra.insert("ferryResume".into(), true.into());
    Some(inv)
}

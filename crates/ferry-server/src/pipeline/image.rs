//! `/_next/image`: next start's image optimizer, answered in Rust by [`ferry_image`].
//!
//! next start matches `<basePath>/_next/image` in routing's filesystem check (`check_fs`), so
//! `headers()` rules, redirects, the middleware and `beforeFiles` rewrites run first and their
//! response headers apply, while `afterFiles`, dynamic routes and `fallback` never see it. The
//! manifest has no output for it, so Ferry's router ends such a request as not found (or in a
//! catch-all route): this stage takes it over then. [`ferry_image::Optimizer`] gives next's
//! validation messages, headers, disk cache (`<cache root>/cache/images`, next's layout), ETag /
//! 304; one optimizer per app, made on first use.
//!
//! A local `url` is fetched from Ferry's public port with [`FETCH_HEADER`] set (next runs it
//! through its own routing the same way); such a request never reaches the optimizer again, so a
//! rewrite pointing back at `/_next/image` cannot loop (next-server refuses the same with an
//! invariant error).
//!
//! Routing a request costs more than a warm hit itself, so when no routing rule can change a
//! `GET`/`HEAD <basePath>/_next/image` request ([`preroute`], decided once at startup), it is
//! answered before routing ([`serve_prerouted`]) with the routing headers every such request
//! gets.
//!
//! With a Redis `--cache-url`, optimized images are shared between instances
//! ([`ferry_image::SharedCache`]): one instance's transform is a hit on the others.
//!
//! AVIF *sources* (which Rust cannot decode) are transformed by next's own `imageOptimizer`
//! (sharp) in a worker ([`WorkerTransform`], the IMAGE section of `js/bridge/bridge.cjs`): the
//! optimizer fetches, validates and caches them as any other source (memory, disk, Redis) and
//! only hands the worker the source bytes, the width, the quality and the output type.
//!
//! Every type next's `images.formats` accepts (AVIF, WebP) is encoded here. An app whose
//! `formats` names a type [`ferry_image::ENCODABLE`] lacks would keep next's own optimizer in a
//! worker (`next/dist/server/image-optimizer`, the IMAGE section of `js/bridge/bridge.cjs`);
//! that path logs at debug level.

use std::sync::Arc;

use ferry_http::Body;
use ferry_image::{ImageConfig, LoopbackSource, Optimizer, Options, SharedConfig};
use ferry_manifest::{Manifest, Route};
use ferry_router::{RequestInfo, Resolution, Router, Step};
use ferry_workers::{EntryKind, Invocation};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use super::{RequestCtx, finish, route};
use crate::App;

/// Request header marking the optimizer's own fetch of a local image (never answered here).
pub const FETCH_HEADER: &str = "ferry-image-fetch";

/// What the bridge is told to run (it ignores the entry for [`EntryKind::Image`]).
const ENTRY: &str = "next/dist/server/image-optimizer";

/// What every `GET`/`HEAD` request for the image path gets from routing, when that depends on
/// nothing but the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preroute {
    /// `<basePath>/_next/image`.
    path: String,
    /// The response headers routing resolves for it (`headers()` rules matching every path),
    /// parsed once, those [`finish::finish`] would apply.
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Whether routing can change no `GET`/`HEAD <basePath>/_next/image` request (exact path, no
/// RSC header), and the headers it adds to every one; `None` when in doubt (route them).
///
/// Routing can change one when i18n is on (locale handling reads headers and the host), when a
/// `beforeMiddleware`, `beforeFiles` or `onMatch` rule that matches the path redirects,
/// rewrites, sets a status or has a `has` / `missing` condition that reads the request (one on
/// the RSC header alone is decided: these requests have none), or when a middleware matcher
/// matches the path (whatever its conditions). Which rules match is asked of the router itself:
/// a probe router whose rules are those, each turned into a rule that only sets a marker header
/// (its regex kept), routes the path. What is left are `headers()` / `onMatch` header rules; the
/// app's router resolves them once for the path.
pub fn preroute(manifest: &Manifest, router: &Router) -> Option<Preroute> {
    if manifest.config.i18n.is_some() {
        return None;
    }
    let path = format!("{}/_next/image", manifest.config.base_path);
    let routing = &manifest.routing;
    let rules: Vec<&Route> = routing
        .before_middleware
        .iter()
        .chain(&routing.before_files)
        .chain(&routing.on_match)
        .collect();
    let marker = |i: usize| format!("x-ferry-probe-{i}");
    let mut probe = manifest.clone();
    probe.routing.before_middleware = rules
        .iter()
        .enumerate()
        .map(|(i, r)| Route {
            source: r.source.clone(),
            source_regex: r.source_regex.clone(),
            headers: Some([(marker(i), "1".to_owned())].into_iter().collect()),
            ..Route::default()
        })
        .collect();
    probe.routing.before_files.clear();
    probe.routing.after_files.clear();
    probe.routing.dynamic_routes.clear();
    probe.routing.on_match.clear();
    probe.routing.fallback.clear();
    probe.functions.clear();
    probe.prerenders.clear();
    probe.static_files.clear();
    // A matcher's conditions hold for some requests: only its path decides here.
    if let Some(m) = probe.middleware.as_mut() {
        for matcher in &mut m.matchers {
            matcher.has = None;
            matcher.missing = None;
        }
    }
    let probe = Router::new(&probe)
        .ok()?
        .with_next_start_data_urls(true)
        .with_next_start_semantics(true);
    let req = RequestInfo {
        method: "GET".to_owned(),
        path: path.clone(),
        query: Some("url=%2Fa.png&w=64&q=75".to_owned()),
        ..RequestInfo::default()
    };
    let Step::Continue(state) = probe.start(&req) else {
        return None;
    };
    if probe.middleware_matches(&state) {
        return None;
    }
    let Resolution::NotFound {
        headers: marked,
        status: None,
        declined: None,
        ..
    } = probe.finish(state)
    else {
        return None;
    };
    let rsc = manifest.routing.rsc.header.as_str();
    let reads_request = |c: &ferry_manifest::RouteHas| {
        !(c.kind == ferry_manifest::HasKind::Header
            && c.key
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case(rsc)))
    };
    let changes = |r: &&Route| {
        r.destination.is_some()
            || r.status.is_some()
            || r.has.iter().chain(&r.missing).flatten().any(reads_request)
    };
    let matched = |i: usize| {
        let name = marker(i);
        marked.iter().any(|(k, _)| k.eq_ignore_ascii_case(&name))
    };
    if rules
        .iter()
        .enumerate()
        .any(|(i, rule)| matched(i) && changes(rule))
    {
        return None;
    }
    // The app's own router resolves the plain header rules that are left.
    let headers = match router.resolve(&req) {
        Resolution::NotFound {
            headers,
            status: None,
            declined: None,
            ..
        } => headers,
        Resolution::Output(output) if output.invocation_path == path && output.status.is_none() => {
            output.headers
        }
        _ => return None,
    };
    // As `finish` applies routing headers (the middleware protocol never leaves).
    let headers = headers
        .iter()
        .filter(|(name, _)| !name.starts_with("x-middleware-") || name == "x-middleware-rewrite")
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                route::latin1_header(value).ok()?,
            ))
        })
        .collect();
    Some(Preroute { path, headers })
}

/// Answers an image request before routing when [`preroute`] found that routing cannot change
/// it and the optimizer exists (the first request, routed, makes it); `None` to route it.
pub async fn serve_prerouted(app: &Arc<App>, ctx: &RequestCtx) -> Option<Response<Body>> {
    let pre = app.image_preroute.get()?.as_ref()?;
    let parts = &ctx.parts;
    if !matches!(parts.method, http::Method::GET | http::Method::HEAD)
        || parts.uri.path() != pre.path
        || parts.headers.contains_key(app.router.rsc_header())
        || parts.headers.contains_key(FETCH_HEADER)
    {
        return None;
    }
    let optimizer = app.image_optimizer.get()?;
    if !optimizer.config().optimizer_enabled() {
        return None;
    }
    // No middleware runs, so the request's own headers are the ones to read.
    let mut res = optimizer
        .handle(
            &parts.method,
            parts.uri.query().unwrap_or(""),
            &parts.headers,
        )
        .await;
    // The routing headers, parsed at startup; the response's own win (as in `finish`).
    let headers = res.headers_mut();
    for (name, value) in &pre.headers {
        if name == http::header::SET_COOKIE {
            headers.append(name.clone(), value.clone());
        } else if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    Some(finish::finish(app, ctx, res, &[]))
}

/// Serves the request when it is an image optimizer request that routing did not claim:
/// the response plus the routing headers to finish it with; `None` to serve the resolution.
pub async fn serve<'r>(
    app: &Arc<App>,
    ctx: &RequestCtx,
    resolution: &'r Resolution,
) -> Option<(Response<Body>, &'r [(String, String)])> {
    let (path, headers, request_headers) = match resolution {
        Resolution::NotFound {
            headers,
            request_headers,
            ..
        } => (ctx.parts.uri.path(), headers, request_headers),
        Resolution::Output(output) => (
            output.invocation_path.as_str(),
            &output.headers,
            &output.request_headers,
        ),
        // Redirects, external rewrites and rejections come first in next start too.
        _ => return None,
    };
    if !is_image_path(&app.manifest.config.base_path, path) {
        return None;
    }
    // Once the optimizer exists, its parsed config answers (a warm hit parses no JSON).
    let made = app.image_optimizer.get().cloned();
    let parsed;
    let config = match &made {
        Some(o) => o.config(),
        None => {
            parsed = ImageConfig::from_json(&app.manifest.config.images);
            &parsed
        }
    };
    if !config.optimizer_enabled() {
        return None;
    }
    if ctx.parts.headers.contains_key(FETCH_HEADER) {
        // The optimizer's own fetch of a local image was routed back here.
        tracing::warn!("image url routes back to /_next/image: {}", ctx.parts.uri);
        return Some((
            ferry_http::text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
            headers,
        ));
    }
    if !Optimizer::supports_formats(config) {
        return serve_in_worker(app, ctx, route::header_map(request_headers))
            .await
            .map(|res| (res, headers.as_slice()));
    }
    let optimizer = match made {
        Some(o) => o,
        None => optimizer(app, config.clone())?,
    };
    let res = optimizer
        .handle(
            &ctx.parts.method,
            ctx.parts.uri.query().unwrap_or(""),
            &optimizer_headers(request_headers),
        )
        .await;
    Some((res, headers))
}

/// next's own optimizer in a worker, for what [`Optimizer`] cannot produce.
async fn serve_in_worker(
    app: &Arc<App>,
    ctx: &RequestCtx,
    request_headers: http::HeaderMap,
) -> Option<Response<Body>> {
    let pool = app.workers.as_ref()?;
    tracing::debug!("/_next/image in a worker: {}", ctx.parts.uri);
    let mut inv = Invocation::new(
        ENTRY,
        EntryKind::Image,
        ctx.parts.method.clone(),
        ctx.parts.uri.clone(),
    );
    inv.headers = request_headers;
    Some(match pool.dispatch(inv).await {
        Ok(res) => res,
        Err(err) => {
            tracing::error!("image optimizer failed for {}: {err}", ctx.parts.uri);
            ferry_http::HttpError::to_response(&err)
        }
    })
}

/// next's `imageOptimizer` (sharp, with the build's `experimental.imgOpt*` settings) in a
/// worker, for sources [`Optimizer`] cannot decode. Weak: the app owns the optimizer owning this.
struct WorkerTransform {
    app: std::sync::Weak<App>,
}

impl std::fmt::Debug for WorkerTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerTransform")
    }
}

/// The `requestMeta` field telling the bridge's IMAGE handler to transform the request body.
const TRANSFORM_META: &str = "ferryImageTransform";

impl ferry_image::ExternalTransform for WorkerTransform {
    fn transform(
        &self,
        source: bytes::Bytes,
        content_type: &'static str,
        width: u32,
        quality: u8,
    ) -> futures_util::future::BoxFuture<'static, Result<bytes::Bytes, String>> {
        use futures_util::FutureExt as _;
        use http_body_util::BodyExt as _;
        let app = self.app.upgrade();
        async move {
            let app = app.ok_or("the server is shutting down")?;
            let pool = app.workers.as_ref().ok_or("no worker pool")?;
            let mut inv = Invocation::new(
                ENTRY,
                EntryKind::Image,
                http::Method::POST,
                http::Uri::from_static("/_next/image"),
            );
            inv.body = ferry_http::full(source);
            inv.meta.extra.insert(
                TRANSFORM_META.to_owned(),
                serde_json::json!({
                    "contentType": content_type,
                    "width": width,
                    "quality": quality,
                }),
            );
            let res = pool.dispatch(inv).await.map_err(|e| e.to_string())?;
            let status = res.status();
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(format!(
                    "next's optimizer answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            Ok(body)
        }
        .boxed()
    }
}

/// The app's optimizer, made on first use; `None` before the server has an address.
fn optimizer(app: &Arc<App>, config: ImageConfig) -> Option<Arc<Optimizer>> {
    if let Some(o) = app.image_optimizer.get() {
        return Some(Arc::clone(o));
    }
    let addr = app.local_addr()?;
    let marker = (
        HeaderName::from_static(FETCH_HEADER),
        HeaderValue::from_static("1"),
    );
    let source = match LoopbackSource::new(format!("http://127.0.0.1:{}", addr.port()), marker) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!("cannot start the image optimizer: {err}");
            return None;
        }
    };
    let mut options = Options::new(
        config,
        &app.manifest.config.base_path,
        Some(
            crate::app::cache_root(&app.bundle_dir)
                .join("cache")
                .join("images"),
        ),
    );
    // With Redis, the instances of one deployment share optimized images (keys under the
    // same namespace as the prerender store's).
    options.shared = app.image_cache_url.as_ref().map(|url| SharedConfig {
        url: url.clone(),
        prefix: match &app.manifest.deployment_id {
            Some(d) if !d.is_empty() => format!("ferry:{}.{d}:image:", app.manifest.build_id),
            _ => format!("ferry:{}:image:", app.manifest.build_id),
        },
    });
    // Sources Rust cannot decode (AVIF) go to next's optimizer in a worker, as next start
    // transforms them with sharp.
    if app.workers.is_some() {
        options.external = Some(Arc::new(WorkerTransform {
            app: Arc::downgrade(app),
        }));
    }
    // Two first requests racing: one optimizer wins, the other is dropped unused.
    let optimizer = app
        .image_optimizer
        .get_or_init(|| Optimizer::new(options, Arc::new(source)));
    Some(Arc::clone(optimizer))
}

/// The request headers [`Optimizer::handle`] reads (`Accept` and the conditional ones), so a
/// warm hit converts no others.
fn optimizer_headers(pairs: &[(String, String)]) -> http::HeaderMap {
    const READ: [http::header::HeaderName; 4] = [
        http::header::ACCEPT,
        http::header::IF_NONE_MATCH,
        http::header::IF_MODIFIED_SINCE,
        http::header::CACHE_CONTROL,
    ];
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        let Some(known) = READ.iter().find(|n| name.eq_ignore_ascii_case(n.as_str())) else {
            continue;
        };
        if let Ok(v) = route::latin1_header(value) {
            map.append(known.clone(), v);
        }
    }
    map
}

/// `<basePath>/_next/image`, with next's trailing-slash tolerance.
fn is_image_path(base_path: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(base_path) else {
        return false;
    };
    rest == "/_next/image" || rest == "/_next/image/"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest with these routing phases, middleware matchers and config overrides.
    fn manifest(
        routing: serde_json::Value,
        matchers: &[&str],
        config: serde_json::Value,
    ) -> Manifest {
        let mut cfg =
            serde_json::to_value(ferry_manifest::RuntimeConfig::default()).expect("config");
        if let (Some(cfg), Some(extra)) = (cfg.as_object_mut(), config.as_object()) {
            cfg.extend(extra.clone());
        }
        let middleware = (!matchers.is_empty()).then(|| {
            serde_json::json!({
                "entry": "middleware.js", "runtime": "nodejs",
                "matchers": matchers.iter().map(|re| serde_json::json!({
                    "sourceRegex": re,
                    "missing": [{"type": "header", "key": "x-prerender-revalidate", "value": "x"}],
                })).collect::<Vec<_>>(),
            })
        });
        serde_json::from_value(serde_json::json!({
            "version": ferry_manifest::MANIFEST_VERSION,
            "ferryVersion": "test",
            "nextVersion": "16.4.6",
            "kind": "server",
            "buildId": "b",
            "config": cfg,
            "routing": routing,
            "middleware": middleware,
        }))
        .expect("manifest json")
    }

    fn decide(m: &Manifest) -> Option<Preroute> {
        let router = Router::new(m)
            .expect("router")
            .with_next_start_data_urls(true)
            .with_next_start_semantics(true);
        preroute(m, &router)
    }

    const ALL: &str = r"^(?:\/((?:[^\/]+?)(?:\/(?:[^\/]+?))*))?(?:\/)?$";
    const TRAILING: &str = r"^(?:\/((?:[^\/]+?)(?:\/(?:[^\/]+?))*))\/$";
    const NEXT_ANY: &str = r"^\/_next(?:\/((?:[^\/]+?)(?:\/(?:[^\/]+?))*))?(?:\/)?$";

    #[test]
    fn preroutes_without_rules_and_with_plain_header_rules() {
        let none = manifest(serde_json::json!({}), &[], serde_json::json!({}));
        let pre = decide(&none).expect("no rule: preroute");
        assert_eq!(pre.path, "/_next/image");
        assert!(pre.headers.is_empty());

        // The showcase's shape: a header rule for every path, redirects elsewhere, the
        // trailing-slash redirect (not this path), a middleware for other paths.
        let showcase = manifest(
            serde_json::json!({
                "beforeMiddleware": [
                    {"source": "/:path*", "sourceRegex": ALL, "headers": {"x-example": "yes"}},
                    {"sourceRegex": r"^\/ssr(?:\/)?$", "headers": {"x-debug": "on"},
                     "has": [{"type": "query", "key": "debug"}]},
                    {"sourceRegex": TRAILING, "headers": {"Location": "/$1"}, "status": 308, "priority": true},
                ],
                "beforeFiles": [{"sourceRegex": r"^\/docs(?:\/(.*))?$", "destination": "/blog/$1"}],
                "afterFiles": [{"sourceRegex": NEXT_ANY, "destination": "/api/hello"}],
                "dynamicRoutes": [{"sourceRegex": "^/(?<all>.+?)(?:/)?$", "destination": "/[...all]"}],
            }),
            &[r"^(?:\/(_next\/data\/[^/]{1,}))?\/ssr(\.json|\.rsc)?[\/#\?]?$"],
            serde_json::json!({}),
        );
        let mut showcase = showcase;
        // next's deployment-id rule: only for RSC requests, which are routed.
        showcase.routing.on_match = serde_json::from_value(serde_json::json!([
            {"sourceRegex": ALL, "headers": {"x-nextjs-deployment-id": "d"},
             "has": [{"type": "header", "key": "rsc", "value": "1"}]},
        ]))
        .expect("onMatch json");
        let pre = decide(&showcase).expect("plain header rule: preroute");
        assert_eq!(
            pre.headers,
            vec![(
                HeaderName::from_static("x-example"),
                HeaderValue::from_static("yes")
            )]
        );

        let based = manifest(
            serde_json::json!({"beforeFiles": [{"sourceRegex": NEXT_ANY, "destination": "/x"}]}),
            &[],
            serde_json::json!({"basePath": "/docs"}),
        );
        assert_eq!(
            decide(&based).expect("rule misses /docs/_next/image").path,
            "/docs/_next/image"
        );
    }

    #[test]
    fn routes_when_a_rule_or_the_middleware_could_change_the_request() {
        let routed = |routing: serde_json::Value, matchers: &[&str], config: serde_json::Value| {
            decide(&manifest(routing, matchers, config)).is_none()
        };
        let empty = serde_json::json!({});
        // A header rule with a condition reads the request.
        assert!(routed(
            serde_json::json!({"beforeMiddleware": [{"sourceRegex": ALL, "headers": {"x": "1"},
                "has": [{"type": "cookie", "key": "c"}]}]}),
            &[],
            empty.clone()
        ));
        assert!(routed(
            serde_json::json!({"beforeMiddleware": [{"sourceRegex": ALL, "headers": {"x": "1"},
                "missing": [{"type": "header", "key": "h"}]}]}),
            &[],
            empty.clone()
        ));
        // Redirects and beforeFiles rewrites of the path.
        assert!(routed(
            serde_json::json!({"beforeMiddleware": [{"sourceRegex": NEXT_ANY,
                "headers": {"Location": "/"}, "status": 307}]}),
            &[],
            empty.clone()
        ));
        assert!(routed(
            serde_json::json!({"beforeFiles": [{"sourceRegex": NEXT_ANY, "destination": "/other"}]}),
            &[],
            empty.clone()
        ));
        // onMatch rules for the path that read the request.
        assert!(routed(
            serde_json::json!({"onMatch": [{"sourceRegex": "/_next/image", "headers": {"x": "1"},
                "has": [{"type": "query", "key": "w"}]}]}),
            &[],
            empty.clone()
        ));
        // A middleware matching every path, whatever its conditions.
        assert!(routed(
            serde_json::json!({}),
            &[r"^(?:\/(.*))?$"],
            empty.clone()
        ));
        // i18n.
        assert!(routed(
            serde_json::json!({}),
            &[],
            serde_json::json!({"i18n": {"locales": ["en", "fr"], "defaultLocale": "en"}})
        ));
    }

    #[test]
    fn image_path_honours_base_path_and_trailing_slash() {
        assert!(is_image_path("", "/_next/image"));
        assert!(is_image_path("", "/_next/image/"));
        assert!(is_image_path("/docs", "/docs/_next/image"));
        assert!(!is_image_path("/docs", "/_next/image"));
        assert!(!is_image_path("", "/_next/images"));
        assert!(!is_image_path("", "/_next/image/x"));
        assert!(!is_image_path("", "/_next/IMAGE"));
    }
}

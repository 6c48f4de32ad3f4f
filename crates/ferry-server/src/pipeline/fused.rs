//! One worker trip for the middleware and the page after it. When the middleware / proxy
//! matches a request whose plain `NextResponse.next()` would lead to a function that always
//! renders, Ferry sends the page's invocation with the middleware's riding along (meta
//! `ferryMiddleware`). The bridge runs the middleware first, exactly as its own invocation would;
//! only when it answers a plain `next()` (status 200, no body, no `x-middleware-*` signal but
//! `x-middleware-next`, no `Location`) does it render the page, whose response then carries the
//! middleware's headers ([`MIDDLEWARE_HEADERS`]). Any other answer comes back as the middleware's
//! ([`MIDDLEWARE_ANSWER`]) and routing goes on from it as usual. Ferry's router applies the
//! middleware's headers either way and keeps the page's response only if routing then resolves
//! to the very invocation it planned; otherwise the render is dropped and routing's answer
//! served (a wasted render, never a different response).
//!
//! next start runs the middleware in-process; two worker trips cost a request parse, a response
//! and a context switch each way more than this one (~0.25 ms of CPU on a page the proxy
//! matches).

use std::sync::Arc;

use ferry_http::{Body, HttpError};
use ferry_router::{HeaderList, MiddlewareEffect, Resolution, RoutingState};
use ferry_workers::{EntryKind, Invocation};
use http::Response;

use super::{RequestCtx, files, functions, prerendered, route};
use crate::App;
use crate::app::Function;

/// Response header of a fused trip whose page ran: the middleware's response headers, as JSON
/// `[name, value]` pairs.
pub const MIDDLEWARE_HEADERS: &str = "x-ferry-middleware";
/// Response header of a fused trip whose middleware answered something else than a plain
/// `next()`: the response is the middleware's, the page did not run.
pub const MIDDLEWARE_ANSWER: &str = "x-ferry-middleware-answer";

/// The page a plain `next()` leads to, and its invocation.
pub struct Plan {
    output: ferry_router::Output,
    function: Function,
    invocation: Invocation,
}

/// A page rendered in the middleware's trip, with the output routing resolved for it.
pub struct Rendered {
    /// What routing resolved (with the middleware's response headers applied).
    pub output: ferry_router::Output,
    /// The function that rendered it.
    pub function: Function,
    /// The worker's response.
    pub response: Response<Body>,
}

/// What a fused trip came back with.
pub enum Outcome {
    /// The page ran and routing agrees: serve its response.
    Rendered(Box<Rendered>),
    /// The middleware answered (anything but a plain `next()`), or routing went elsewhere:
    /// what [`route`] does with a middleware answer applies.
    Routed(route::Routed),
    /// The middleware's answer, to be interpreted as if it came from its own trip.
    MiddlewareAnswered(Response<Body>),
}

/// The fused trip for this request, when one is possible: a GET or HEAD without body, no RSC
/// request, no i18n (locale handling may send routing round again), a Node middleware, and a
/// plain `next()` that routes to a function every request of which renders (no file, no
/// prerender, no cache answers it first, see `serve_output`).
pub fn plan(
    app: &App,
    ctx: &RequestCtx,
    state: &RoutingState,
    middleware: &Function,
    middleware_invocation: &Invocation,
) -> Option<Plan> {
    app.workers.as_ref()?;
    let parts = &ctx.parts;
    if !matches!(parts.method, http::Method::GET | http::Method::HEAD)
        || parts.headers.contains_key(http::header::CONTENT_LENGTH)
        || parts.headers.contains_key(http::header::TRANSFER_ENCODING)
        || parts.headers.contains_key(app.router.rsc_header())
        || middleware.edge
        || app.manifest.config.i18n.is_some()
    {
        return None;
    }
    let mut speculative = state.clone();
    let plain_next = [("x-middleware-next".to_owned(), "1".to_owned())];
    if !matches!(
        app.router
            .apply_middleware(&mut speculative, 200, &plain_next),
        MiddlewareEffect::Continue
    ) {
        return None;
    }
    let Resolution::Output(output) = app.router.finish(speculative) else {
        return None;
    };
    let function = app.functions.get(&output.pathname)?;
    if !function.always_renders
        || !matches!(
            function.kind,
            EntryKind::AppPage | EntryKind::AppRoute | EntryKind::Pages | EntryKind::PagesApi
        )
        || output.next_data_page
        || !reaches_function(app, &output)
    {
        return None;
    }
    let invocation =
        functions::invocation(app, ctx, &output, function, ferry_http::empty()).ok()?;
    // The bridge gives the middleware the page request's own headers: only when they are the
    // ones its own trip would get (they are, unless routing changed them).
    if invocation.headers != middleware_invocation.headers {
        return None;
    }
    Some(Plan {
        output,
        function: function.clone(),
        invocation,
    })
}

/// `serve_output`'s stages before `functions` would all pass this output on.
fn reaches_function(app: &App, output: &ferry_router::Output) -> bool {
    let page = files::page_of(app, &output.pathname);
    let base = app.manifest.config.base_path.as_str();
    let unprefixed = output
        .pathname
        .strip_prefix(base)
        .unwrap_or(&output.pathname);
    !matches!(page, "/_app" | "/_document" | "/_error" | "/500" | "/404")
        && !unprefixed.starts_with("/_next/")
        && !page.ends_with(app.manifest.routing.rsc.suffix.as_str())
        && !page.contains(".segments/")
        && app.statics.get(&output.pathname).is_none()
        && !app.prerenders.is_prerender(&prerendered::cache_key(output))
}

/// Sends the planned page with the middleware riding along, and sorts out the answer.
pub async fn run(
    app: &Arc<App>,
    ctx: &RequestCtx,
    pool: &ferry_workers::WorkerPool,
    state: &mut RoutingState,
    plan: Plan,
    middleware_invocation: Invocation,
) -> Outcome {
    let Plan {
        output: planned,
        function,
        mut invocation,
    } = plan;
    invocation.meta.extra.insert(
        "ferryMiddleware".into(),
        serde_json::json!({
            "entry": middleware_invocation.entry,
            "meta": middleware_invocation.meta,
        }),
    );
    let mut res = match pool.dispatch(invocation).await {
        Ok(res) => res,
        Err(err) => {
            tracing::error!("middleware and page failed for {}: {err}", ctx.parts.uri);
            return Outcome::Routed(route::Routed::Respond(err.to_response(), Vec::new()));
        }
    };
    let Some(raw) = res.headers_mut().remove(MIDDLEWARE_HEADERS) else {
        // The middleware's own answer (or the bridge failed before the page could run).
        res.headers_mut().remove(MIDDLEWARE_ANSWER);
        return Outcome::MiddlewareAnswered(res);
    };
    let Some(pairs) = middleware_headers(raw.as_bytes()) else {
        tracing::error!(
            "{}: the worker sent unreadable middleware headers",
            ctx.parts.uri
        );
        return Outcome::Routed(route::Routed::Respond(
            super::guard::reject(502),
            Vec::new(),
        ));
    };
    match app.router.apply_middleware(state, 200, &pairs) {
        MiddlewareEffect::Continue => match app.router.finish(state.clone()) {
            Resolution::Output(output) if same_invocation(&output, &planned, &pairs) => {
                Outcome::Rendered(Box::new(Rendered {
                    output,
                    function,
                    response: res,
                }))
            }
            other => {
                tracing::warn!(
                    "{}: routing after the middleware left the page rendered with it; \
                     serving routing's answer",
                    ctx.parts.uri
                );
                Outcome::Routed(route::Routed::Resolved(other, ferry_http::empty()))
            }
        },
        MiddlewareEffect::Done(resolution) => {
            Outcome::Routed(route::Routed::Resolved(*resolution, ferry_http::empty()))
        }
        MiddlewareEffect::Respond => {
            // The bridge only renders after a plain `next()`, which never answers by itself;
            // answered anyway, the middleware's response was status 200, its headers, no body.
            let mut answer = Response::new(ferry_http::empty());
            *answer.headers_mut() = route::header_map(&pairs);
            Outcome::Routed(route::Routed::Respond(
                route::strip_middleware_signals(answer),
                state.response_headers().sorted_combined(),
            ))
        }
    }
}

/// Whether routing's output is invoked exactly like the planned one was in the bridge: the
/// same page and query, and the planned request headers with the middleware's response headers
/// set on them, as resolve-routes does after a plain `next()` (and `requestWithMiddlewareHeaders`
/// in js/bridge/bridge.cjs).
fn same_invocation(
    routed: &ferry_router::Output,
    planned: &ferry_router::Output,
    middleware_headers: &[(String, String)],
) -> bool {
    routed.pathname == planned.pathname
        && routed.invocation_path == planned.invocation_path
        && routed.query == planned.query
        && routed.query_arrays == planned.query_arrays
        && routed.status == planned.status
        && routed.rsc == planned.rsc
        && routed.next_data_page == planned.next_data_page
        && routed.request_headers == with_middleware_headers(planned, middleware_headers)
}

/// The planned request headers with the middleware's response headers set on them.
fn with_middleware_headers(
    planned: &ferry_router::Output,
    middleware_headers: &[(String, String)],
) -> ferry_router::SharedHeaders {
    let mut headers = HeaderList::from_shared(&planned.request_headers);
    let response = HeaderList::from_pairs(
        middleware_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    for (name, value) in response.sorted_combined() {
        if name != "x-middleware-next" && name != "content-length" {
            headers.set(&name, &value);
        }
    }
    headers.into_shared()
}

/// The middleware's response headers from [`MIDDLEWARE_HEADERS`] (latin-1 bytes of a JSON
/// array of `[name, value]` pairs).
fn middleware_headers(raw: &[u8]) -> Option<Vec<(String, String)>> {
    let text: String = raw.iter().map(|&b| b as char).collect();
    serde_json::from_str::<Vec<(String, String)>>(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn middleware_headers_are_latin1_json_pairs() {
        let raw = b"[[\"x-middleware-next\",\"1\"],[\"x-a\",\"caf\xe9\"]]";
        assert_eq!(
            middleware_headers(raw),
            Some(vec![
                ("x-middleware-next".to_owned(), "1".to_owned()),
                ("x-a".to_owned(), "caf\u{e9}".to_owned()),
            ])
        );
        assert_eq!(middleware_headers(b"not json"), None);
        assert_eq!(middleware_headers(b"[[\"a\"]]"), None);
    }
}

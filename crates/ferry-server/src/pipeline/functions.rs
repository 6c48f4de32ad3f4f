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
    Some(res)
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

/// The `requestMeta` every invocation gets: where the public server listens.
pub fn meta(app: &App, ctx: &RequestCtx) -> InvocationMeta {
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

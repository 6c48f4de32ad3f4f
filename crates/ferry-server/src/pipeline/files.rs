//! Static and public files, answered from Rust with next start's headers.

use std::sync::Arc;

use ferry_http::Body;
use http::Response;

use super::RequestCtx;
use crate::App;

/// Serves the output when it is a file listed in the bundle.
pub async fn serve(
    app: &Arc<App>,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
) -> Option<Response<Body>> {
    let entry = app.statics.get(&output.pathname)?;
    Some(
        app.statics
            .respond(entry, &ctx.parts.method, &ctx.parts.headers)
            .await,
    )
}

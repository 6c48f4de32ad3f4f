//! Accepting connections: HTTP/1.1 and h2c on one port, connection limits, timeouts, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::pipeline::guard::{MAX_HEAD_BYTES, MAX_HEADERS};
use crate::pipeline::proxy::{self, CloseConnection};
use crate::{App, ServerConfig, ServerError};

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 16 * 1024;
/// next start keeps idle connections for Node's default 5 s.
const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Binds the listening socket (before the workers start, so they can be told the port).
pub async fn bind(config: &ServerConfig) -> Result<(TcpListener, SocketAddr), ServerError> {
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok((listener, local))
}

/// Announces readiness on stdout, serves until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    if let Some(local) = app.local_addr() {
        announce(local, &config.host);
    }
    let keep_alive = config.keep_alive_timeout.unwrap_or(DEFAULT_KEEP_ALIVE);
    let keep_alive_header = keep_alive_header(keep_alive);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also bounds idle keep-alive time: the timer runs while waiting for the next request.
        .header_read_timeout(keep_alive)
        .keep_alive(true)
        // More header fields than this: hyper answers 431 itself. Heads over MAX_HEAD_BYTES
        // are read whole (up to hyper's ~400 KB buffer) and refused with 431 by the guard, so
        // the client gets its answer instead of a reset; targets over 8 KB get 414 there too.
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        // HPACK counts 32 bytes per field on top of name and value: leave room for that so the
        // guard's byte count (431, the same as HTTP/1.1) decides; past this the h2 layer itself
        // answers 431 on the stream.
        .max_header_list_size(u32::try_from(MAX_HEAD_BYTES + 32 * MAX_HEADERS).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let keep_alive_header = keep_alive_header.clone();
        // next start (Node) states what happens to the connection in every HTTP/1 answer.
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            let keeps_alive = keeps_alive(&req);
            let timeout = keep_alive_header.clone();
            async move {
                let mut res = app.handle(req, remote).await;
                if let Some(keep_alive) = keeps_alive {
                    announce_connection(&mut res, keep_alive, timeout);
                }
                // An upgrade next start would not answer: hyper closes the connection on an
                // error from the service, without writing a response.
                if res.extensions().get::<CloseConnection>().is_some() {
                    return Err(CloseConnection);
                }
                Ok(res)
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!("connection from {remote}: {err}");
            }
            drop(permit);
        });
    }

    drop(listener);
    tracing::info!("no longer accepting connections; draining");
    let grace = config.shutdown_timeout;
    let drained = tokio::time::timeout(grace, async {
        graceful.shutdown().await;
        app.drain().await;
        // Upgraded (WebSocket) connections left hyper's watch when they switched protocols.
        proxy::tunnels_closed().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown timeout of {grace:?} reached with requests still in flight ({} upgraded \
             connection(s) open)",
            proxy::open_tunnels()
        );
    }
    app.shutdown_workers(grace).await;
    if let Some(pool) = app.workers.as_ref() {
        let stats = pool.stats();
        tracing::info!(
            "workers: {} requests, {} restarts, {} crashed, {} timed out, {} refused",
            stats.dispatched,
            stats.restarts,
            stats.crashed,
            stats.timeouts,
            stats.rejected
        );
    }
    tracing::info!("bye");
    Ok(())
}

/// next start's (Node's) `Keep-Alive: timeout=<whole seconds>` announcement of the idle timeout,
/// which lets clients stop reusing a connection before the server closes it; Node sends none
/// when the timeout is 0.
fn keep_alive_header(timeout: Duration) -> Option<HeaderValue> {
    (!timeout.is_zero())
        .then(|| HeaderValue::from_str(&format!("timeout={}", timeout.as_secs())).ok())
        .flatten()
}

/// What Node says about the connection in its answer to `req`: `Some(true)` (HTTP/1.1 unless
/// the client sent `Connection: close`, HTTP/1.0 with `Connection: keep-alive`): it stays open;
/// `Some(false)` (HTTP/1.0 without keep-alive): `Connection: close`; `None` where hyper's own
/// header is already Node's (HTTP/1.1 `close`) or there are no connection headers (HTTP/2).
fn keeps_alive<B>(req: &hyper::Request<B>) -> Option<bool> {
    let has_token = |token: &str| {
        req.headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match req.version() {
        http::Version::HTTP_11 => (!has_token("close")).then_some(true),
        http::Version::HTTP_10 => Some(has_token("keep-alive")),
        _ => None,
    }
}

/// Adds Node's connection headers to a response that does not set its own (nor switches
/// protocols): `Connection: keep-alive` + `Keep-Alive: timeout=N` when the connection stays
/// open, `Connection: close` when it does not. If the server starts shutting down meanwhile,
/// hyper appends `close` to the Connection header, which wins.
fn announce_connection<B>(
    res: &mut hyper::Response<B>,
    keep_alive: bool,
    timeout: Option<HeaderValue>,
) {
    if res.status() == http::StatusCode::SWITCHING_PROTOCOLS
        || res.headers().contains_key(http::header::CONNECTION)
    {
        return;
    }
    let headers = res.headers_mut();
    if !keep_alive {
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        return;
    }
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("keep-alive"),
    );
    if let Some(timeout) = timeout {
        headers.insert("keep-alive", timeout);
    }
}

fn announce(local: SocketAddr, host: &str) {
    let shown = match host {
        "0.0.0.0" | "::" | "[::]" => format!("http://localhost:{}", local.port()),
        _ => format!("http://{local}"),
    };
    println!("  ▲ Ferry {}", env!("CARGO_PKG_VERSION"));
    println!("  - Local: {shown}");
    println!("  ✓ Ready on http://{}:{}", bind_host(host), local.port());
}

fn bind_host(host: &str) -> &str {
    match host {
        "0.0.0.0" | "::" | "[::]" => "127.0.0.1",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: http::Version, connection: Option<&str>) -> hyper::Request<()> {
        let mut b = hyper::Request::builder().version(version).uri("/");
        if let Some(c) = connection {
            b = b.header(http::header::CONNECTION, c);
        }
        b.body(()).unwrap_or_default()
    }

    fn connection_headers(keep_alive: bool, res: hyper::Response<()>) -> (String, String) {
        let mut res = res;
        announce_connection(&mut res, keep_alive, keep_alive_header(DEFAULT_KEEP_ALIVE));
        let get = |n: &str| {
            res.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        (get("connection"), get("keep-alive"))
    }

    #[test]
    fn connection_is_decided_as_node_decides_it() {
        use http::Version;
        assert_eq!(keeps_alive(&request(Version::HTTP_11, None)), Some(true));
        assert_eq!(
            keeps_alive(&request(Version::HTTP_11, Some("Keep-Alive"))),
            Some(true)
        );
        // hyper already answers `connection: close` itself, as Node does.
        assert_eq!(
            keeps_alive(&request(Version::HTTP_11, Some("foo, Close"))),
            None
        );
        assert_eq!(keeps_alive(&request(Version::HTTP_10, None)), Some(false));
        assert_eq!(
            keeps_alive(&request(Version::HTTP_10, Some("keep-alive"))),
            Some(true)
        );
        assert_eq!(keeps_alive(&request(Version::HTTP_2, None)), None);
    }

    #[test]
    fn keep_alive_answers_carry_nodes_timeout_announcement() {
        let ok = || hyper::Response::new(());
        assert_eq!(
            connection_headers(true, ok()),
            ("keep-alive".into(), "timeout=5".into())
        );
        assert_eq!(
            connection_headers(false, ok()),
            ("close".into(), String::new())
        );
        // A protocol switch and a response that decides for itself are left alone.
        let mut upgrade = ok();
        *upgrade.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        assert_eq!(
            connection_headers(true, upgrade),
            (String::new(), String::new())
        );
        let mut own = ok();
        own.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        assert_eq!(
            connection_headers(true, own),
            ("close".into(), String::new())
        );
        // Node sends whole seconds, and no announcement for a timeout of 0.
        assert_eq!(
            keep_alive_header(Duration::from_millis(6500))
                .as_ref()
                .map(HeaderValue::as_bytes),
            Some(&b"timeout=6"[..])
        );
        assert!(keep_alive_header(Duration::ZERO).is_none());
    }
}

//! Accepting connections: HTTP/1.1 and h2c on one port, connection limits, timeouts, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            async move {
                let res = app.handle(req, remote).await;
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

//! End-to-end WebSocket upgrades: the real `ferry start` serving `tests/fixtures/routing-app`
//! (built with `ferry build`, its external rewrites pointed at a WebSocket echo server this test
//! runs on 127.0.0.1) does what next 16.4.6's `next start` does with an `Upgrade` request
//! (router-server.js `upgradeHandler`, measured):
//! - an upgrade that routes to an external rewrite is proxied: the destination sees the same
//!   `Host` / `x-forwarded-host` / query as for HTTP, the client gets the destination's `101`,
//!   and frames flow both ways until either side closes;
//! - a destination that refuses (no `101`) has its answer passed through, then the connection
//!   closes; a destination that is down is a 502 (next start writes a bare `Internal Server
//!   Error` into the socket);
//! - a client that goes away closes the destination's connection;
//! - an upgrade that does not route to an external rewrite gets no answer: the connection is
//!   closed (next start ends the socket, or for unmatched paths leaves it open forever);
//! - SIGTERM with a WebSocket open: the tunnel keeps working during the grace period, and the
//!   server exits when it closes, or at `--shutdown-timeout` when it does not.
//!
//! The WebSocket framing (RFC 6455: masked client frames, unmasked server frames) is written by
//! hand here; the echo server's `Sec-WebSocket-Accept` is a marker (Ferry passes it through, it
//! does not check it).

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use support::FerryServer;

/// Longest wait for any single read or event.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The key every handshake sends (RFC 6455's example).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

// ---------------------------------------------------------------------------------------------
// The WebSocket echo server behind the rewrites
// ---------------------------------------------------------------------------------------------

/// What the echo server saw, by connection id (the path segment after `/upstream/` or
/// `/fallback/`).
#[derive(Default)]
struct Seen {
    /// The request head (request line and header lines, as received).
    heads: HashMap<String, String>,
    /// Connections whose client side ended (EOF, error or close frame).
    closed: HashSet<String>,
}

/// A WebSocket echo server on a loopback port, one thread per connection:
/// - `/upstream/refuse…` answers 403 (`x-upstream: refused`, body `refused by upstream`);
/// - a request without `Upgrade` gets a plain 200 `plain http`;
/// - any other upgrade gets a `101` (`x-upstream: echo`), a `hello from upstream` text frame,
///   then `echo: <text>` for every text frame, and a close frame back for a close frame.
struct EchoServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl EchoServer {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = shared.clone();
                thread::spawn(move || {
                    let _ = serve_echo(stream, &seen);
                });
            }
        });
        Ok(Self { addr, seen })
    }

    fn head(&self, id: &str) -> Option<String> {
        self.seen.lock().ok()?.heads.get(id).cloned()
    }

    /// Waits until connection `id`'s client side has ended.
    fn wait_closed(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.seen.lock().is_ok_and(|s| s.closed.contains(id)) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

fn serve_echo(mut stream: TcpStream, seen: &Mutex<Seen>) -> Result<()> {
    // Connections idle longer than this are dropped (no thread outlives the test for long).
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let (head, rest) = read_head(&mut stream)?;
    let target = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    let path = target.split('?').next().unwrap_or_default();
    let id = path.rsplit('/').next().unwrap_or_default().to_owned();
    if let Ok(mut s) = seen.lock() {
        s.heads.insert(id.clone(), head.clone());
    }
    let upgrade = header_of(&head, "upgrade").is_some();
    if !upgrade {
        stream.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\
              connection: close\r\n\r\nplain http",
        )?;
        return Ok(());
    }
    if id.starts_with("refuse") {
        stream.write_all(
            b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\nx-upstream: refused\r\n\
              content-length: 19\r\nconnection: close\r\n\r\nrefused by upstream",
        )?;
        return Ok(());
    }
    let key = header_of(&head, "sec-websocket-key").unwrap_or_default();
    write!(
        stream,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: accept-for-{key}\r\nx-upstream: echo\r\n\r\n"
    )?;
    stream.write_all(&frame(0x1, b"hello from upstream", None))?;
    let mut reader = Buffered::new(rest);
    loop {
        match reader.frame(&mut stream) {
            Ok(Some((0x1, payload))) => {
                let mut reply = b"echo: ".to_vec();
                reply.extend_from_slice(&payload);
                stream.write_all(&frame(0x1, &reply, None))?;
            }
            Ok(Some((0x8, payload))) => {
                stream.write_all(&frame(0x8, &payload, None))?;
                break;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    if let Ok(mut s) = seen.lock() {
        s.closed.insert(id);
    }
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Framing and raw HTTP
// ---------------------------------------------------------------------------------------------

/// One final frame; masked (as a client must) when `mask` is given.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match u16::try_from(payload.len()) {
        Ok(n) if n < 126 => out.push(mask_bit | n as u8),
        Ok(n) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Err(_) => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Bytes already read past a head, then the socket.
struct Buffered {
    pending: Vec<u8>,
}

impl Buffered {
    fn new(pending: Vec<u8>) -> Self {
        Self { pending }
    }

    /// Fills `buf` from the pending bytes, then the socket; `false` on EOF before any byte.
    fn fill(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> Result<bool> {
        let mut at = 0;
        let take = self.pending.len().min(buf.len());
        buf[..take].copy_from_slice(&self.pending[..take]);
        self.pending.drain(..take);
        at += take;
        while at < buf.len() {
            let n = stream.read(&mut buf[at..])?;
            if n == 0 {
                if at == 0 {
                    return Ok(false);
                }
                bail!("connection ended inside a frame");
            }
            at += n;
        }
        Ok(true)
    }

    /// The next frame (opcode, unmasked payload); `None` when the connection ended.
    fn frame(&mut self, stream: &mut TcpStream) -> Result<Option<(u8, Vec<u8>)>> {
        let mut hdr = [0u8; 2];
        if !self.fill(stream, &mut hdr)? {
            return Ok(None);
        }
        let opcode = hdr[0] & 0x0f;
        let masked = hdr[1] & 0x80 != 0;
        let len = match hdr[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.fill(stream, &mut b)?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.fill(stream, &mut b)?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut mask = [0u8; 4];
        if masked {
            self.fill(stream, &mut mask)?;
        }
        let mut payload = vec![0u8; usize::try_from(len)?];
        if !payload.is_empty() {
            self.fill(stream, &mut payload)?;
        }
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        Ok(Some((opcode, payload)))
    }
}

/// Reads up to the end of an HTTP head; the head as text and the bytes read past it.
fn read_head(stream: &mut TcpStream) -> Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Ok((head, buf[end + 4..].to_vec()));
        }
        let n = stream.read(&mut chunk)?;
        ensure!(
            n > 0,
            "connection ended before the end of the head ({} bytes: {:?})",
            buf.len(),
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A header's value in a raw head (first one, name case-insensitive).
fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// Every header name of a raw head, lowercased.
fn header_names(head: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, _)| k.trim().to_ascii_lowercase())
        })
        .collect()
}

/// A client connection to Ferry.
struct Client {
    stream: TcpStream,
    reader: Buffered,
}

impl Client {
    /// Sends a WebSocket handshake for `target` (with `extra` header lines); returns the client
    /// and the response head.
    fn handshake(addr: SocketAddr, target: &str, extra: &[(&str, &str)]) -> Result<(Self, String)> {
        let mut req = format!(
            "GET {target} HTTP/1.1\r\nHost: localhost:{}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n",
            addr.port()
        );
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        Self::raw(addr, req.as_bytes())
    }

    /// Writes `request` as is; returns the client and the response head.
    fn raw(addr: SocketAddr, request: &[u8]) -> Result<(Self, String)> {
        let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.write_all(request)?;
        let (head, rest) = read_head(&mut stream)?;
        Ok((
            Self {
                stream,
                reader: Buffered::new(rest),
            },
            head,
        ))
    }

    fn send_text(&mut self, text: &str) -> Result<()> {
        let m = [0x37, 0xfa, 0x21, 0x3d];
        self.stream
            .write_all(&frame(0x1, text.as_bytes(), Some(m)))?;
        Ok(())
    }

    /// The next frame, which must be an unmasked text frame; its text.
    fn recv_text(&mut self) -> Result<String> {
        let (opcode, payload) = self
            .reader
            .frame(&mut self.stream)?
            .ok_or_else(|| anyhow!("connection ended; expected a text frame"))?;
        ensure!(opcode == 0x1, "expected a text frame, got opcode {opcode}");
        Ok(String::from_utf8(payload)?)
    }

    /// Everything until the peer closes (fails if it does not within the read timeout).
    fn read_to_end(&mut self) -> Result<Vec<u8>> {
        let mut out = std::mem::take(&mut self.reader.pending);
        self.stream
            .read_to_end(&mut out)
            .context("waiting for the server to close the connection")?;
        Ok(out)
    }
}

/// Writes `request` and expects the connection to be closed with no byte of answer.
fn expect_no_answer(addr: SocketAddr, request: &str, what: &str) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(request.as_bytes())?;
    let mut got = Vec::new();
    let started = Instant::now();
    match stream.read_to_end(&mut got) {
        Ok(_) => {}
        // A reset is a close too (not expected, but not an answer either).
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => bail!(
            "{what}: connection still open after {:?} ({e})",
            started.elapsed()
        ),
    }
    ensure!(
        got.is_empty(),
        "{what}: expected no answer, got {:?}",
        String::from_utf8_lossy(&got)
    );
    Ok(())
}

fn upgrade_request(target: &str, method: &str, upgrade: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: {upgrade}\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The app
// ---------------------------------------------------------------------------------------------

struct Fixture {
    app: PathBuf,
    echo: EchoServer,
}

static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();

/// The routing fixture built once for this test binary, its upstream origin (compiled into
/// the rewrites) set to the echo server, plus `/ws-down/:path*` rewritten to a closed port.
fn fixture() -> Result<&'static Fixture> {
    FIXTURE
        .get_or_init(|| {
            let build = || -> Result<Fixture> {
                let echo = EchoServer::start()?;
                let dead = support::free_port()?;
                let src = support::repo_root().join("tests/fixtures/routing-app");
                let app = support::build_app_once("websocket", &src, |app| {
                    let path = app.join("next.config.mjs");
                    let config = std::fs::read_to_string(&path)?;
                    let upstream = "process.env.ROUTING_APP_UPSTREAM || 'http://127.0.0.1:41250'";
                    let after = "afterFiles: [";
                    ensure!(
                        config.contains(upstream) && config.contains(after),
                        "routing-app's next.config.mjs changed: update this test"
                    );
                    let config = config
                        .replace(upstream, &format!("'http://{}'", echo.addr))
                        .replace(
                            after,
                            &format!(
                                "{after}\n        {{ source: '/ws-down/:path*', destination: \
                                 'http://127.0.0.1:{dead}/down/:path*' }},"
                            ),
                        );
                    std::fs::write(&path, config)?;
                    Ok(())
                })?;
                Ok(Fixture { app, echo })
            };
            build().map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow!("building the routing fixture failed: {e}"))
}

fn start(shutdown_timeout: &str) -> Result<(FerryServer, &'static Fixture)> {
    let fx = fixture()?;
    let port = support::free_port()?;
    let spec = support::ferry_start(&support::ferry_bin(), &fx.app, port).args([
        "--workers",
        "1",
        "--shutdown-timeout",
        shutdown_timeout,
    ]);
    Ok((
        FerryServer::start_spec(&spec, ([127, 0, 0, 1], port).into())?,
        fx,
    ))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn websocket_frames_flow_both_ways_through_an_external_rewrite() -> Result<()> {
    let (ferry, fx) = start("5")?;
    let (mut ws, head) =
        Client::handshake(ferry.addr, "/docs/proxy-me/echo-1/?room=blue&n=1", &[])?;
    ensure!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "handshake: {head}\n{}",
        ferry.log_tail()
    );
    // The destination's 101 as it is.
    for (name, value) in [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-accept", &format!("accept-for-{KEY}")),
        ("x-upstream", "echo"),
    ] {
        ensure!(
            header_of(&head, name).as_deref() == Some(value),
            "101 header {name}: {head}"
        );
    }
    ensure!(header_of(&head, "x-powered-by").is_none(), "{head}");

    // What the destination saw: next start's proxied handshake (measured): the rewrite's path
    // with the request's query, `Host` = the destination, `x-forwarded-host` = the client's
    // `Host`, the handshake headers, and no x-forwarded-for/-port/-proto (httpxy without xfwd).
    let up = fx
        .echo
        .head("echo-1")
        .context("the echo server saw no handshake")?;
    ensure!(
        up.starts_with("GET /upstream/echo-1?room=blue&n=1 HTTP/1.1\r\n"),
        "upstream request line: {up}"
    );
    let expected_host = fx.echo.addr.to_string();
    let client_host = format!("localhost:{}", ferry.addr.port());
    for (name, value) in [
        ("host", expected_host.as_str()),
        ("x-forwarded-host", client_host.as_str()),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", KEY),
        ("sec-websocket-version", "13"),
    ] {
        ensure!(
            header_of(&up, name).as_deref() == Some(value),
            "upstream header {name}: {up}"
        );
    }
    let names = header_names(&up);
    for absent in ["x-forwarded-for", "x-forwarded-port", "x-forwarded-proto"] {
        ensure!(!names.iter().any(|n| n == absent), "{absent} sent: {up}");
    }

    // Destination → client, then client → destination → client, short and 16-bit lengths.
    ensure!(ws.recv_text()? == "hello from upstream");
    for msg in ["one", "two", &"x".repeat(300), "ünïcødé"] {
        ws.send_text(msg)?;
        let reply = ws.recv_text()?;
        ensure!(
            reply == format!("echo: {msg}"),
            "reply {reply:?} to {msg:?}"
        );
    }
    // A close handshake: the destination answers it and closes; so does Ferry's side.
    ws.stream
        .write_all(&frame(0x8, &[0x03, 0xe8], Some([1, 2, 3, 4])))?;
    let (opcode, _) = ws
        .reader
        .frame(&mut ws.stream)?
        .context("no close frame back")?;
    ensure!(opcode == 0x8, "expected a close frame, got opcode {opcode}");
    ensure!(ws.read_to_end()?.is_empty(), "bytes after the close frame");

    // A fallback rewrite to the same destination is proxied too.
    let (mut ws, head) = Client::handshake(ferry.addr, "/docs/ext-fallback/echo-fb/", &[])?;
    ensure!(status_of(&head) == 101, "fallback rewrite: {head}");
    ensure!(ws.recv_text()? == "hello from upstream");
    ws.send_text("via fallback")?;
    ensure!(ws.recv_text()? == "echo: via fallback");
    let up = fx.echo.head("echo-fb").context("no fallback handshake")?;
    ensure!(up.starts_with("GET /fallback/echo-fb HTTP/1.1\r\n"), "{up}");

    // Plain HTTP through the same rewrite still goes through the HTTP proxy.
    let plain = ferry.get("/docs/proxy-me/plain-1/")?;
    ensure!(
        plain.status == 200 && plain.body == b"plain http",
        "plain proxy: {} {:?}",
        plain.status,
        String::from_utf8_lossy(&plain.body)
    );
    Ok(())
}

#[test]
fn a_refused_upgrade_is_passed_through_and_the_connection_closed() -> Result<()> {
    let (ferry, _fx) = start("5")?;
    let (mut client, head) = Client::handshake(ferry.addr, "/docs/proxy-me/refuse-1/", &[])?;
    ensure!(status_of(&head) == 403, "refused: {head}");
    ensure!(
        header_of(&head, "x-upstream").as_deref() == Some("refused"),
        "{head}"
    );
    ensure!(
        header_of(&head, "connection").as_deref() == Some("close"),
        "{head}"
    );
    let body = client.read_to_end()?;
    ensure!(
        body == b"refused by upstream",
        "body {:?}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

#[test]
fn an_unreachable_destination_is_a_502_like_the_http_proxy() -> Result<()> {
    let (ferry, _fx) = start("5")?;
    let (mut client, head) = Client::handshake(ferry.addr, "/docs/ws-down/x/", &[])?;
    ensure!(status_of(&head) == 502, "down: {head}");
    ensure!(
        header_of(&head, "connection").as_deref() == Some("close"),
        "{head}"
    );
    let body = client.read_to_end()?;
    ensure!(
        body == b"Bad Gateway",
        "{:?}",
        String::from_utf8_lossy(&body)
    );
    let plain = ferry.get("/docs/ws-down/x/")?;
    ensure!(
        plain.status == 502,
        "plain HTTP to the same rewrite: {}",
        plain.status
    );
    Ok(())
}

#[test]
fn a_client_that_goes_away_closes_the_destination_connection() -> Result<()> {
    let (ferry, fx) = start("5")?;
    let (mut ws, head) = Client::handshake(ferry.addr, "/docs/proxy-me/echo-gone/", &[])?;
    ensure!(status_of(&head) == 101, "{head}");
    ensure!(ws.recv_text()? == "hello from upstream");
    ws.send_text("bye")?;
    ensure!(ws.recv_text()? == "echo: bye");
    // No close frame: the client just disappears.
    drop(ws);
    ensure!(
        fx.echo.wait_closed("echo-gone", Duration::from_secs(10)),
        "the destination connection is still open 10 s after the client left"
    );
    Ok(())
}

#[test]
fn upgrades_that_do_not_route_to_an_external_rewrite_get_no_answer() -> Result<()> {
    let (ferry, _fx) = start("5")?;
    let addr = ferry.addr;
    // next start: a page (matched output) → socket ended; an unknown path, a redirect or a
    // middleware answer → socket left open forever. Ferry closes the connection in every case.
    for target in [
        "/docs/static/",
        "/docs/nothing-here/",
        "/docs/proxy-me/echo-x",
        "/docs/api/echo/",
        "/docs/mw/json/",
        "/docs//x",
        "/docs/_next/static/nope.js",
    ] {
        expect_no_answer(
            addr,
            &upgrade_request(target, "GET", "websocket"),
            &format!("websocket upgrade of {target}"),
        )?;
    }
    // httpxy destroys the socket of a non-GET websocket upgrade, even to a rewrite.
    expect_no_answer(
        addr,
        &upgrade_request("/docs/proxy-me/echo-post/", "POST", "websocket"),
        "POST upgrade",
    )?;
    // Deliberate difference (see `proxy::is_upgrade`): next start gives an h2c upgrade
    // (`curl --http2` over http://) an empty reply; Ferry ignores that `Upgrade` and answers
    // over HTTP/1.1.
    let h2c = ferry.send(
        support::RawRequest::get("/docs/static/")
            .header("Connection", "Upgrade, HTTP2-Settings")
            .header("Upgrade", "h2c")
            .header("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        TIMEOUT,
    )?;
    ensure!(h2c.status == 200, "h2c upgrade of a page: {}", h2c.status);
    // `Upgrade` without `Connection: upgrade` is no upgrade (Node's parser): served normally.
    let resp = ferry.send(
        support::RawRequest::get("/docs/static/").header("Upgrade", "websocket"),
        TIMEOUT,
    )?;
    ensure!(
        resp.status == 200,
        "Upgrade without Connection: {}",
        resp.status
    );
    Ok(())
}

#[test]
fn sigterm_lets_an_open_websocket_finish_within_the_shutdown_timeout() -> Result<()> {
    // The client closes during the grace period: the server exits right after.
    let (mut ferry, _fx) = start("20")?;
    // The worker is up (a worker still booting would hold up the shutdown on its own account).
    let ssr = ferry.get("/docs/ssr/")?;
    ensure!(
        ssr.status == 200,
        "/docs/ssr/: {}\n{}",
        ssr.status,
        ferry.log_tail()
    );
    let (mut ws, head) = Client::handshake(ferry.addr, "/docs/proxy-me/echo-term-1/", &[])?;
    ensure!(status_of(&head) == 101, "{head}");
    ensure!(ws.recv_text()? == "hello from upstream");
    ferry.process().signal("-TERM");
    thread::sleep(Duration::from_millis(300));
    ws.send_text("still there?")?;
    ensure!(
        ws.recv_text()? == "echo: still there?",
        "tunnel cut by SIGTERM"
    );
    ensure!(
        ferry
            .process()
            .wait_exit(Duration::from_millis(500))?
            .is_none(),
        "exited with a WebSocket open"
    );
    let closed_at = Instant::now();
    drop(ws);
    let status = ferry
        .process()
        .wait_exit(Duration::from_secs(15))?
        .with_context(|| {
            format!(
                "still running after the tunnel closed\n{}",
                ferry.log_tail()
            )
        })?;
    ensure!(
        status.success(),
        "exit status {status}\n{}",
        ferry.log_tail()
    );
    ensure!(
        closed_at.elapsed() < Duration::from_secs(10),
        "exit took {:?} after the tunnel closed",
        closed_at.elapsed()
    );

    // The client never closes: the server exits at the shutdown timeout anyway.
    let (mut ferry, _fx) = start("2")?;
    let (mut ws, head) = Client::handshake(ferry.addr, "/docs/proxy-me/echo-term-2/", &[])?;
    ensure!(status_of(&head) == 101, "{head}");
    ensure!(ws.recv_text()? == "hello from upstream");
    let signalled = Instant::now();
    ferry.process().signal("-TERM");
    let status = ferry
        .process()
        .wait_exit(Duration::from_secs(15))?
        .with_context(|| format!("an open WebSocket blocked shutdown\n{}", ferry.log_tail()))?;
    let took = signalled.elapsed();
    ensure!(
        status.success(),
        "exit status {status}\n{}",
        ferry.log_tail()
    );
    ensure!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(12),
        "exit {took:?} after SIGTERM with --shutdown-timeout 2"
    );
    // The tunnel went with the process.
    ensure!(ws.read_to_end().is_ok(), "client connection not closed");
    Ok(())
}

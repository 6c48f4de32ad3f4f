//! WebSocket upgrades through `pipeline::proxy::forward_upgrade_with` to `https://` (wss) and
//! `http://` destinations, over real loopback sockets: a front hyper server (HTTP/1.1 with
//! upgrades, as `ferry start` serves) hands each request to the proxy; the destination answers
//! the handshake with a `101` and echoes raw bytes. (The end-to-end behaviour through the real
//! binary is in crates/ferry-cli/tests/e2e_websocket.rs.)

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_server::pipeline::RequestCtx;
use ferry_server::pipeline::proxy::{Origin, UpstreamClient, forward_upgrade_with};
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A throwaway CA's PEM and a TLS acceptor for 127.0.0.1 with a certificate it signed.
fn tls() -> Result<(String, tokio_rustls::TlsAcceptor), Box<dyn std::error::Error>> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Ferry test CA (throwaway)");
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.subject_alt_names
        .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![leaf_cert.der().clone()], key)?;
    Ok((
        ca_cert.pem(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    ))
}

/// The destination's handshake: `101` with the request's path in `x-path`, then a raw echo of
/// whatever arrives, prefixed once with `up:`.
async fn destination(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, hyper::Error> {
    let path = req.uri().to_string();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(io) = on_upgrade.await {
            let mut io = TokioIo::new(io);
            let mut buf = [0u8; 1024];
            let _ = io.write_all(b"up:").await;
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut res = Response::new(Empty::new());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    res.headers_mut()
        .insert("upgrade", http::HeaderValue::from_static("websocket"));
    res.headers_mut()
        .insert("connection", http::HeaderValue::from_static("Upgrade"));
    if let Ok(v) = http::HeaderValue::from_str(&path) {
        res.headers_mut().insert("x-path", v);
    }
    Ok(res)
}

/// Serves `destination` on 127.0.0.1, over TLS when `acceptor` is given.
async fn serve_destination(acceptor: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new();
                let svc = service_fn(destination);
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = conn
                                .serve_connection(TokioIo::new(tls), svc)
                                .with_upgrades()
                                .await;
                        }
                    }
                    None => {
                        let _ = conn
                            .serve_connection(TokioIo::new(tcp), svc)
                            .with_upgrades()
                            .await;
                    }
                }
            });
        }
    });
    addr
}

/// A front server proxying every request's upgrade to `url` through `client`.
async fn serve_front(client: UpstreamClient, url: String) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((tcp, remote)) = listener.accept().await {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let client = client.clone();
                    let url = url.clone();
                    async move {
                        let (parts, _) = req.into_parts();
                        let ctx = RequestCtx { parts, remote };
                        Ok::<_, std::convert::Infallible>(
                            forward_upgrade_with(&client, &ctx, &url, Origin::Rule, &[]).await,
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Handshakes through the front server, sends `hello`; the response head and what came back.
async fn roundtrip(front: SocketAddr) -> Result<(String, String), Box<dyn std::error::Error>> {
    tokio::time::timeout(TIMEOUT, async {
        let mut tcp = TcpStream::connect(front).await?;
        tcp.write_all(
            b"GET /chat?room=1 HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await?;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let head_end = loop {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                return Err(format!("closed: {:?}", String::from_utf8_lossy(&got)).into());
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
        let mut rest = got[head_end..].to_vec();
        if head.starts_with("HTTP/1.1 101") {
            tcp.write_all(b"hello").await?;
            while rest.len() < b"up:hello".len() {
                let n = tcp.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                rest.extend_from_slice(&buf[..n]);
            }
        }
        Ok((head, String::from_utf8_lossy(&rest).into_owned()))
    })
    .await?
}

#[tokio::test]
async fn wss_destination_is_proxied_and_bytes_flow_both_ways() -> TestResult {
    let (ca_pem, acceptor) = tls()?;
    let dest = serve_destination(Some(acceptor)).await;
    let (client, added) = UpstreamClient::new(Some(ca_pem.as_bytes()))?;
    assert_eq!(added, 1);
    let front = serve_front(client, format!("https://127.0.0.1:{}/socket", dest.port())).await;
    let (head, echoed) = roundtrip(front).await?;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    // The rule's destination with the request's query (prepareDestination).
    assert!(head.contains("x-path: /socket?room=1\r\n"), "{head}");
    assert_eq!(echoed, "up:hello");
    Ok(())
}

#[tokio::test]
async fn ws_destination_is_proxied_and_bytes_flow_both_ways() -> TestResult {
    let dest = serve_destination(None).await;
    let (client, _) = UpstreamClient::new(None)?;
    let front = serve_front(client, format!("http://127.0.0.1:{}/socket", dest.port())).await;
    let (head, echoed) = roundtrip(front).await?;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert_eq!(echoed, "up:hello");
    Ok(())
}

#[tokio::test]
async fn wss_destination_with_an_untrusted_certificate_is_a_bad_gateway() -> TestResult {
    let (_, acceptor) = tls()?;
    let dest = serve_destination(Some(acceptor)).await;
    let (client, _) = UpstreamClient::new(None)?;
    let front = serve_front(client, format!("https://127.0.0.1:{}/socket", dest.port())).await;
    let (head, _) = roundtrip(front).await?;
    assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
    Ok(())
}

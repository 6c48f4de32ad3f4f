//! External rewrites to `https://` destinations: real TLS over loopback sockets. Each test makes a
//! throwaway CA and a certificate for 127.0.0.1 (rcgen), serves an origin with it (tokio-rustls +
//! hyper), and proxies a request there through `pipeline::proxy`, as `ferry start` does when a
//! rewrite or the middleware points at an external URL.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_server::pipeline::RequestCtx;
use ferry_server::pipeline::proxy::{Origin, UpstreamClient, forward_with};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A CA (its PEM) and a leaf certificate for 127.0.0.1 signed by it (DER chain and key).
struct Pki {
    ca_pem: String,
    leaf: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn pki() -> Result<Pki, rcgen::Error> {
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
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        leaf: leaf_cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    })
}

/// What the origin answers: the request as it arrived, so the test sees what the proxy sent.
async fn describe(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let text = format!(
        "{} {} host={} x-forwarded-host={}",
        req.method(),
        req.uri(),
        header("host"),
        header("x-forwarded-host")
    );
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// Serves `describe` on 127.0.0.1, over TLS when `tls` is given; returns the address.
async fn origin(tls: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local addr");
    let acceptor = tls.map(|(cert, key)| {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server certificate");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(acceptor) => {
                        // A client that refuses the certificate ends the handshake: not an error
                        // of the origin.
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = conn
                                .serve_connection(TokioIo::new(tls), service_fn(describe))
                                .await;
                        }
                    }
                    None => {
                        let _ = conn
                            .serve_connection(TokioIo::new(tcp), service_fn(describe))
                            .await;
                    }
                }
            });
        }
    });
    addr
}

fn client_request() -> RequestCtx {
    let (parts, ()) = Request::get("/docs/page?from=client")
        .header("host", "app.example")
        .body(())
        .expect("request")
        .into_parts();
    RequestCtx {
        parts,
        remote: (Ipv4Addr::LOCALHOST, 40000).into(),
    }
}

async fn proxy(client: &UpstreamClient, url: &str) -> (StatusCode, String) {
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        forward_with(
            client,
            &client_request(),
            url,
            Origin::Middleware,
            &[],
            None,
            ferry_http::empty(),
        ),
    )
    .await
    .expect("the proxy answers in time");
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_else(|e| format!("body error: {e}"));
    (status, body)
}

#[tokio::test]
async fn https_destination_trusted_through_extra_ca_certificates_is_proxied() -> TestResult {
    let pki = pki()?;
    let addr = origin(Some((pki.leaf, pki.key))).await;
    // Like NODE_EXTRA_CA_CERTS: a PEM file may hold other blocks; only certificates count.
    let pem = format!("not a certificate\n{}", pki.ca_pem);
    let (client, added) = UpstreamClient::new(Some(pem.as_bytes()))?;
    assert_eq!(added, 1);
    let url = format!("https://127.0.0.1:{}/upstream/page?x=1", addr.port());
    let (status, body) = proxy(&client, &url).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        format!(
            "GET /upstream/page?x=1 host=127.0.0.1:{} x-forwarded-host=app.example",
            addr.port()
        )
    );
    Ok(())
}

#[tokio::test]
async fn https_destination_with_an_untrusted_certificate_is_a_bad_gateway() -> TestResult {
    let pki = pki()?;
    let addr = origin(Some((pki.leaf, pki.key))).await;
    let (client, added) = UpstreamClient::new(None)?;
    assert_eq!(added, 0);
    let url = format!("https://127.0.0.1:{}/upstream/page", addr.port());
    let (status, body) = proxy(&client, &url).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    Ok(())
}

#[tokio::test]
async fn http_destination_goes_through_the_same_client_without_tls() -> TestResult {
    let addr = origin(None).await;
    let (client, _) = UpstreamClient::new(None)?;
    let url = format!("http://127.0.0.1:{}/plain", addr.port());
    let (status, body) = proxy(&client, &url).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("GET /plain host=127.0.0.1:"), "{body}");
    Ok(())
}

#[tokio::test]
async fn other_schemes_are_refused_with_a_clear_message() -> TestResult {
    let (client, _) = UpstreamClient::new(None)?;
    let (status, body) = proxy(&client, "ftp://127.0.0.1:21/file").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("http:// or https://"), "{body}");
    Ok(())
}

//! Runtime compression for dynamic responses, mirroring `next start`'s `compression` middleware:
//! gzip only (see [`crate::negotiate_dynamic`]), compressible content types only (mime-db's
//! `compressible` list), bodies of at least 1024 bytes when the length is known, no
//! `Cache-Control: no-transform`, nothing already encoded, no HEAD. `Vary: Accept-Encoding` is
//! added whenever the type is compressible (even below the threshold), as the middleware does.
//! Every chunk of the source body is flushed through the encoder (`Z_SYNC_FLUSH` / Brotli flush),
//! like next's `res.flush()` after each write, so streamed SSR is never held back.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use ferry_manifest::Encoding;
use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};

use ferry_http::{Body, is_compressible};

/// `compression`'s default `threshold`: smaller known-length bodies are sent as they are.
pub const COMPRESSION_THRESHOLD: u64 = 1024;

/// Gzip level of `zlib`'s default (what Node's `createGzip()` uses).
const GZIP_LEVEL: u32 = 6;
/// Brotli quality for streamed bodies: fast enough per request, much better than gzip -1.
const BROTLI_STREAM_QUALITY: u32 = 5;
/// Brotli quality for one-shot compression of cached bodies (done once per cache entry).
const BROTLI_CACHED_QUALITY: u32 = 9;
const BROTLI_LGWIN: u32 = 22;

/// Whether a response with these headers should be compressed on the fly (the middleware's
/// checks, in its order, minus the negotiation itself).
pub fn should_compress(method: &Method, status: StatusCode, headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if !is_compressible(ct) || has_no_transform(headers) {
        return false;
    }
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        && len < COMPRESSION_THRESHOLD
    {
        return false;
    }
    if headers
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return false;
    }
    // No body to compress.
    !(method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational())
}

fn has_no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
}

/// Appends `token` to `Vary` unless it is already listed (or `*`).
pub fn add_vary(headers: &mut HeaderMap, token: &'static str) {
    let existing: Vec<String> = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let listed = existing
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.eq_ignore_ascii_case(token));
    if listed {
        return;
    }
    let value = if existing.is_empty() {
        token.to_owned()
    } else {
        format!("{}, {token}", existing.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(VARY, v);
    }
}

/// Applies `next start`'s dynamic compression to a response: adds `Vary: Accept-Encoding` for a
/// compressible type and, when the checks pass and the client accepts gzip, streams it gzipped
/// (removing `Content-Length`). `accept_encoding` is the request's header value.
pub fn compress_response(
    mut res: Response<Body>,
    method: &Method,
    accept_encoding: Option<&str>,
) -> Response<Body> {
    let compressible = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_compressible);
    if !compressible || has_no_transform(res.headers()) {
        return res;
    }
    add_vary(res.headers_mut(), "Accept-Encoding");
    if !should_compress(method, res.status(), res.headers()) {
        return res;
    }
    let Some(enc) = crate::negotiate_dynamic(accept_encoding.unwrap_or("")) else {
        return res;
    };
    let (mut parts, body) = res.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_ENCODING, HeaderValue::from_static(enc.token()));
    Response::from_parts(parts, compress_stream(body, enc))
}

/// Compresses `bytes` in one go (for cached bodies: done once, served many times).
pub fn compress_bytes(bytes: &[u8], encoding: Encoding) -> std::io::Result<Bytes> {
    match encoding {
        Encoding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(bytes.len() / 3 + 64),
                flate2::Compression::new(GZIP_LEVEL),
            );
            enc.write_all(bytes)?;
            Ok(Bytes::from(enc.finish()?))
        }
        Encoding::Br => {
            let mut out = Vec::with_capacity(bytes.len() / 4 + 64);
            {
                let mut w = brotli::CompressorWriter::new(
                    &mut out,
                    4096,
                    BROTLI_CACHED_QUALITY,
                    BROTLI_LGWIN,
                );
                w.write_all(bytes)?;
                w.flush()?;
            }
            Ok(Bytes::from(out))
        }
    }
}

/// A streaming encoder writing into a `Vec` we drain after every flush.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Encoder {
    fn new(encoding: Encoding) -> Self {
        match encoding {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Encoding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                BROTLI_STREAM_QUALITY,
                BROTLI_LGWIN,
            ))),
        }
    }

    /// Compresses `chunk`, flushes, and returns everything produced so far.
    fn write_flush(&mut self, chunk: &[u8]) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => {
                e.write_all(chunk)?;
                e.flush()?;
                Ok(Bytes::from(std::mem::take(e.get_mut())))
            }
            Encoder::Br(e) => {
                e.write_all(chunk)?;
                e.flush()?;
                Ok(Bytes::from(std::mem::take(e.get_mut())))
            }
        }
    }

    /// Ends the stream and returns the trailer bytes.
    fn finish(self) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => Ok(Bytes::from(e.finish()?)),
            Encoder::Br(e) => Ok(Bytes::from(e.into_inner())),
        }
    }
}

/// A body compressed on the fly, one flushed block per source chunk.
struct CompressBody {
    inner: Body,
    encoder: Option<Encoder>,
}

impl HttpBody for CompressBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        loop {
            if self.encoder.is_none() {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    self.encoder = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        let Some(encoder) = self.encoder.as_mut() else {
                            return Poll::Ready(None);
                        };
                        match encoder.write_flush(&data) {
                            Ok(out) if out.is_empty() => continue,
                            Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                            Err(e) => {
                                self.encoder = None;
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                    }
                    // Trailers end the data: finish the stream first, then they are dropped
                    // (HTTP/1.1 chunked trailers are not something next start sends).
                    Err(_trailers) => return self.as_mut().finish_frame(),
                },
                Poll::Ready(None) => return self.as_mut().finish_frame(),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl CompressBody {
    fn finish_frame(
        mut self: Pin<&mut Self>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.encoder.take() {
            None => Poll::Ready(None),
            Some(enc) => match enc.finish() {
                Ok(out) if out.is_empty() => Poll::Ready(None),
                Ok(out) => Poll::Ready(Some(Ok(Frame::data(out)))),
                Err(e) => Poll::Ready(Some(Err(e))),
            },
        }
    }
}

/// Wraps `body` so it is compressed with `encoding` as it streams, flushing after every chunk.
pub fn compress_stream(body: Body, encoding: Encoding) -> Body {
    ferry_http::boxed(CompressBody {
        inner: body,
        encoder: Some(Encoder::new(encoding)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Read;

    #[test]
    fn compressible_types_match_mime_db() {
        for ct in [
            "text/html; charset=utf-8",
            "application/javascript; charset=UTF-8",
            "application/json",
            "image/svg+xml",
            "text/x-component",
            "application/manifest+json",
            "font/ttf",
        ] {
            assert!(is_compressible(ct), "{ct}");
        }
        for ct in [
            "image/png",
            "image/webp",
            "font/woff2",
            "application/octet-stream",
            "",
        ] {
            assert!(!is_compressible(ct), "{ct}");
        }
    }

    #[test]
    fn should_compress_follows_the_middleware() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(should_compress(&Method::GET, StatusCode::OK, &h));
        assert!(!should_compress(&Method::HEAD, StatusCode::OK, &h));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("1023"));
        assert!(!should_compress(&Method::GET, StatusCode::OK, &h));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("1024"));
        assert!(should_compress(&Method::GET, StatusCode::OK, &h));
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, no-transform"),
        );
        assert!(!should_compress(&Method::GET, StatusCode::OK, &h));
    }

    #[test]
    fn vary_is_appended_once() {
        let mut h = HeaderMap::new();
        h.insert(
            VARY,
            HeaderValue::from_static("rsc, next-router-state-tree"),
        );
        add_vary(&mut h, "Accept-Encoding");
        add_vary(&mut h, "Accept-Encoding");
        assert_eq!(h[VARY], "rsc, next-router-state-tree, Accept-Encoding");
    }

    #[tokio::test]
    async fn gzip_stream_flushes_every_chunk_and_round_trips() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        let src = http_body_util::StreamBody::new(tokio_stream_from(rx));
        let mut body = compress_stream(ferry_http::boxed(src), Encoding::Gzip);
        tx.send(Ok(Frame::data(Bytes::from_static(b"<html>first chunk"))))
            .await
            .expect("send");
        // The first chunk must come out before the source ends.
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
            .await
            .expect("first compressed chunk is flushed without waiting for the end")
            .expect("frame")
            .expect("ok")
            .into_data()
            .expect("data");
        let mut all = first.to_vec();
        tx.send(Ok(Frame::data(Bytes::from_static(b" second</html>"))))
            .await
            .expect("send");
        drop(tx);
        while let Some(f) = body.frame().await {
            all.extend_from_slice(&f.expect("ok").into_data().expect("data"));
        }
        let mut out = String::new();
        flate2::read::GzDecoder::new(&all[..])
            .read_to_string(&mut out)
            .expect("valid gzip");
        assert_eq!(out, "<html>first chunk second</html>");
    }

    #[tokio::test]
    async fn brotli_stream_round_trips() {
        let body = compress_stream(ferry_http::full("hello brotli ".repeat(100)), Encoding::Br);
        let bytes = body.collect().await.expect("collect").to_bytes();
        let mut out = Vec::new();
        brotli::Decompressor::new(&bytes[..], 4096)
            .read_to_end(&mut out)
            .expect("valid br");
        assert_eq!(out, "hello brotli ".repeat(100).as_bytes());
    }

    #[test]
    fn one_shot_compression_round_trips() {
        let data = b"abcabcabc".repeat(500);
        let gz = compress_bytes(&data, Encoding::Gzip).expect("gzip");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .expect("gunzip");
        assert_eq!(out, data);
        let br = compress_bytes(&data, Encoding::Br).expect("br");
        let mut out = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut out)
            .expect("unbrotli");
        assert_eq!(out, data);
    }

    fn tokio_stream_from(
        rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> {
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
    }
}

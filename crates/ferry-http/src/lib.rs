//! HTTP types shared by Ferry's crates: the response body type and errors that know their status.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// The body every Ferry response carries: streamed, boxed, with I/O errors.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A body holding `bytes` in one piece.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Boxes any body whose error converts into an I/O error.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    body.map_err(std::io::Error::other).boxed()
}

/// An error that knows which HTTP status it answers with.
pub trait HttpError: std::error::Error {
    /// The status the client receives.
    fn status(&self) -> StatusCode;

    /// A plain-text response for this error (the message is safe to show: no internals).
    fn to_response(&self) -> Response<Body> {
        text_response(self.status(), &self.public_message())
    }

    /// The message shown to the client; defaults to the status's reason phrase.
    fn public_message(&self) -> String {
        self.status()
            .canonical_reason()
            .unwrap_or("Error")
            .to_string()
    }
}

/// A `text/plain` response with `status` and `message`.
pub fn text_response(status: StatusCode, message: &str) -> Response<Body> {
    let mut res = Response::new(full(message.to_owned()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Headers that describe one connection and are never forwarded (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// mime-db types flagged compressible that the `^text/|+json|+text|+xml` rule does not cover
/// (extracted from next 16.4.6's compiled `compression`).
const COMPRESSIBLE_EXTRA: &[&str] = &[
    "application/dart",
    "application/ecmascript",
    "application/javascript",
    "application/json",
    "application/postscript",
    "application/raml+yaml",
    "application/rtf",
    "application/tar",
    "application/toml",
    "application/vnd.dart",
    "application/vnd.ms-fontobject",
    "application/vnd.ms-opentype",
    "application/wasm",
    "application/x-httpd-php",
    "application/x-javascript",
    "application/x-ns-proxy-autoconfig",
    "application/x-sh",
    "application/x-tar",
    "application/x-virtualbox-hdd",
    "application/x-virtualbox-ova",
    "application/x-virtualbox-ovf",
    "application/x-virtualbox-vbox",
    "application/x-virtualbox-vdi",
    "application/x-virtualbox-vhd",
    "application/x-virtualbox-vmdk",
    "application/x-www-form-urlencoded",
    "application/xml",
    "application/xml-dtd",
    "font/otf",
    "font/ttf",
    "image/bmp",
    "image/vnd.adobe.photoshop",
    "image/vnd.microsoft.icon",
    "image/vnd.ms-dds",
    "image/x-icon",
    "image/x-ms-bmp",
    "message/rfc822",
    "model/gltf-binary",
    "x-shader/x-fragment",
    "x-shader/x-vertex",
];

/// Whether `compression` would compress this `Content-Type` (the `compressible` package).
pub fn is_compressible(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+text")
        || essence.ends_with("+xml")
    {
        return true;
    }
    COMPRESSIBLE_EXTRA.contains(&essence.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Overloaded;
    impl std::fmt::Display for Overloaded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("queue full")
        }
    }
    impl std::error::Error for Overloaded {}
    impl HttpError for Overloaded {
        fn status(&self) -> StatusCode {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }

    #[test]
    fn error_response_carries_status_and_reason() {
        let res = Overloaded.to_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}

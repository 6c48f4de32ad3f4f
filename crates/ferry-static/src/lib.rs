//! Serves files as they are: next start's headers, ETag/304, Range/206, precompressed variants.
//!
//! Headers measured from `next start` 16.4.6 (`/tmp/ref/showcase`), and what Ferry sends:
//!
//! | case | next start | Ferry |
//! |---|---|---|
//! | `/_next/static/**` | `Cache-Control: public, max-age=31536000, immutable` | same |
//! | `public/**` | `Cache-Control: public, max-age=0` | same |
//! | every file | `Accept-Ranges: bytes`, `Last-Modified` (mtime), `ETag: W/"<size hex>-<mtime ms hex>"`, `Content-Type`, `Content-Length` | same, ETag `W/"<size hex>-<16 hex of the content hash>"` (stable across restarts and machines) |
//! | compressible type (`text/*`, js, json, …; not png) | `Vary: Accept-Encoding` even below 1 KB and without compressing | same, and also whenever precompressed variants exist |
//! | `Accept-Encoding: gzip` (js ≥ 1 KB) | gzip on the fly, chunked, same weak ETag, no Content-Length | the stored `.gz` (or `.br`) variant with its Content-Length, same weak ETag |
//! | `Accept-Encoding: br` | identity (next never sends br) | the stored `.br` variant when present |
//! | HEAD | same headers, identity Content-Length | same |
//! | `If-None-Match` (weak compare, `*`, lists) / `If-Modified-Since` ≥ mtime | 304 with Cache-Control, Accept-Ranges, Last-Modified, ETag | same plus `Vary` (RFC 9110 §15.4.5) |
//! | request `Cache-Control: no-cache` | conditional headers ignored (200) | same |
//! | `Range: bytes=0-9` / `-5` / `15720-` / `0-99999` | 206, `Content-Range: bytes a-b/N`, identity bytes even with `Accept-Encoding: gzip` | same (ranges always apply to the identity representation, never to a variant) |
//! | several ranges (`0-9,20-29`) | 200 whole file (adjacent/overlapping ones are combined first) | same |
//! | `bytes=99999-`, `5-3`, `abc`, `-0` | 416 `Content-Range: bytes */N` (+ next's HTML error page) | 416 `Content-Range: bytes */N`, empty body |
//! | `bytes=-99999` (suffix > size) | 416 | 206 whole file (RFC 9110 §14.1.3) |
//! | `items=0-5` | 200 | 200 |
//! | `If-Range` matching ETag/date | 206; otherwise 200 | same |
//! | `If-Match` mismatch | 412 | 412, empty body |
//! | POST | 405, `Allow: GET` + `Allow: HEAD`, next's HTML error page | 405, `Allow: GET` + `Allow: HEAD`, empty body |
//! | OPTIONS | 400, `Allow: GET` + `Allow: HEAD` | same |
//!
//! Small files (< [`SMALL_FILE_LIMIT`]) and their variants are held in memory; larger ones are
//! streamed from disk in [`STREAM_CHUNK`]-sized reads, never read whole.

mod compress;
mod conditional;
mod negotiate;
mod range;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use ferry_http::{Body, HttpError};
use ferry_manifest::{Manifest, StaticFile, StaticSource};
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, LAST_MODIFIED, RANGE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

pub use compress::{
    COMPRESSION_THRESHOLD, add_vary, compress_bytes, compress_response, compress_stream,
    should_compress,
};
pub use conditional::{if_range_allows, is_fresh, precondition_failed};
pub use ferry_http::is_compressible;
pub use ferry_manifest::Encoding;
pub use negotiate::{negotiate, negotiate_dynamic};
pub use range::{RangeDecision, parse_range};

/// Files (and variants) smaller than this are kept in memory.
pub const SMALL_FILE_LIMIT: u64 = 64 * 1024;
/// Read size when streaming a large file from disk. Under glibc's mmap threshold as `ferry start`
/// fixes it (`crates/ferry-cli/src/alloc.rs`; it was 128 KiB when this was measured): a 128 KiB
/// read buffer was mapped and unmapped for every chunk, which halved a 348 KB chunk's req/s
/// (10.1k → 4.5k on one core).
pub const STREAM_CHUNK: usize = 64 * 1024;

/// `Cache-Control` of content-addressed `_next/static` files (measured from next start).
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of `public/` files (measured from next start).
pub const CACHE_PUBLIC: &str = "public, max-age=0";
/// `Cache-Control` next start puts on error and uncacheable responses.
pub const CACHE_PRIVATE: &str = "private, no-cache, no-store, max-age=0, must-revalidate";

/// Errors building the static file table or reading a file.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    /// A manifest path is absolute or climbs out of the bundle.
    #[error("static file {pathname}: path {file:?} escapes the bundle directory")]
    PathEscapes {
        /// The URL pathname.
        pathname: String,
        /// The offending path.
        file: String,
    },
    /// A file could not be read or stat'ed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file on disk does not have the size the manifest recorded (the bundle was altered).
    #[error("{path}: manifest says {expected} bytes, the file has {found}")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Size in the manifest.
        expected: u64,
        /// Size on disk.
        found: u64,
    },
    /// A manifest value cannot be sent as a header.
    #[error("static file {pathname}: {what} {value:?} is not a valid header value")]
    InvalidHeader {
        /// The URL pathname.
        pathname: String,
        /// Which value.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// Two static files claim the same pathname.
    #[error("static pathname {0} is listed twice in the manifest")]
    Duplicate(String),
}

impl HttpError for StaticError {
    fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// Where the bytes of one representation are.
#[derive(Debug, Clone)]
struct Repr {
    size: u64,
    path: PathBuf,
    /// Present for small files: served without touching the disk.
    data: Option<Bytes>,
}

/// One file ready to serve, with its headers precomputed.
#[derive(Debug)]
pub struct StaticEntry {
    pathname: String,
    content_type: HeaderValue,
    cache_control: HeaderValue,
    etag: HeaderValue,
    last_modified: Option<SystemTime>,
    last_modified_header: Option<HeaderValue>,
    vary: bool,
    identity: Repr,
    variants: Vec<(Encoding, Repr)>,
    encodings: Vec<Encoding>,
}

impl StaticEntry {
    /// The URL pathname.
    pub fn pathname(&self) -> &str {
        &self.pathname
    }
    /// Size of the identity file in bytes.
    pub fn size(&self) -> u64 {
        self.identity.size
    }
    /// The `Content-Type` sent.
    pub fn content_type(&self) -> &HeaderValue {
        &self.content_type
    }
    /// The (weak) `ETag` sent.
    pub fn etag(&self) -> &HeaderValue {
        &self.etag
    }
    /// The precompressed variants available.
    pub fn encodings(&self) -> &[Encoding] {
        &self.encodings
    }
    /// Whether the identity body is held in memory.
    pub fn is_cached(&self) -> bool {
        self.identity.data.is_some()
    }
}

/// The table of static files of one bundle: pathname → ready-to-serve entry.
#[derive(Debug)]
pub struct StaticFiles {
    entries: HashMap<String, StaticEntry>,
}

/// Joins a manifest-relative path onto the bundle, refusing absolute paths and `..`.
fn bundle_path(bundle_dir: &Path, pathname: &str, file: &str) -> Result<PathBuf, StaticError> {
    let rel = Path::new(file);
    let safe = rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !safe || file.is_empty() {
        return Err(StaticError::PathEscapes {
            pathname: pathname.to_owned(),
            file: file.to_owned(),
        });
    }
    Ok(bundle_dir.join(rel))
}

fn load_repr(path: PathBuf, expected: Option<u64>) -> Result<(Repr, SystemTime), StaticError> {
    let meta = std::fs::metadata(&path).map_err(|source| StaticError::Io {
        path: path.clone(),
        source,
    })?;
    let size = meta.len();
    if let Some(expected) = expected
        && expected != size
    {
        return Err(StaticError::SizeMismatch {
            path,
            expected,
            found: size,
        });
    }
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let data = if size < SMALL_FILE_LIMIT {
        let bytes = std::fs::read(&path).map_err(|source| StaticError::Io {
            path: path.clone(),
            source,
        })?;
        Some(Bytes::from(bytes))
    } else {
        None
    };
    Ok((Repr { size, path, data }, mtime))
}

fn header(pathname: &str, what: &'static str, value: &str) -> Result<HeaderValue, StaticError> {
    HeaderValue::from_str(value).map_err(|_| StaticError::InvalidHeader {
        pathname: pathname.to_owned(),
        what,
        value: value.to_owned(),
    })
}

impl StaticEntry {
    fn build(bundle_dir: &Path, f: &StaticFile) -> Result<Self, StaticError> {
        let path = bundle_path(bundle_dir, &f.pathname, &f.file)?;
        let (identity, mtime) = load_repr(path, Some(f.size))?;
        let mut variants = Vec::with_capacity(f.encodings.len());
        for enc in &f.encodings {
            let vpath = bundle_path(
                bundle_dir,
                &f.pathname,
                &format!("{}{}", f.file, enc.suffix()),
            )?;
            let (repr, _) = load_repr(vpath, None)?;
            variants.push((*enc, repr));
        }
        let cache_control = match f.source {
            StaticSource::NextStatic => CACHE_IMMUTABLE,
            StaticSource::Public => CACHE_PUBLIC,
            // Adapter outputs (`/404`, `/500`, rsc fallbacks) are error/fallback bodies that
            // next start renders uncacheable.
            StaticSource::Output => CACHE_PRIVATE,
        };
        // Short hash prefix: enough to be unique per content, short on the wire.
        let hash: String = f.hash.chars().take(16).collect();
        let etag = header(&f.pathname, "etag", &format!("W/\"{:x}-{hash}\"", f.size))?;
        let last_modified = conditional::truncate_secs(mtime);
        Ok(StaticEntry {
            pathname: f.pathname.clone(),
            content_type: header(&f.pathname, "content type", &f.content_type)?,
            cache_control: HeaderValue::from_static(cache_control),
            etag,
            last_modified: Some(last_modified),
            last_modified_header: HeaderValue::from_str(&httpdate::fmt_http_date(last_modified))
                .ok(),
            vary: !variants.is_empty() || is_compressible(&f.content_type),
            identity,
            encodings: variants.iter().map(|(e, _)| *e).collect(),
            variants,
        })
    }

    /// Headers every answer about this file carries (200, 206, 304).
    fn validators(&self, headers: &mut HeaderMap) {
        headers.insert(CACHE_CONTROL, self.cache_control.clone());
        headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(lm) = &self.last_modified_header {
            headers.insert(LAST_MODIFIED, lm.clone());
        }
        headers.insert(ETAG, self.etag.clone());
    }

    fn etag_str(&self) -> Option<&str> {
        self.etag.to_str().ok()
    }
}

fn bare(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(ferry_http::empty());
    *res.status_mut() = status;
    res
}

impl StaticFiles {
    /// Builds the table from the manifest's `static_files`, checking every file exists with the
    /// recorded size and loading small files (and their variants) into memory.
    pub fn new(bundle_dir: &Path, manifest: &Manifest) -> Result<Self, StaticError> {
        let mut entries = HashMap::with_capacity(manifest.static_files.len());
        for f in &manifest.static_files {
            let entry = StaticEntry::build(bundle_dir, f)?;
            if entries.insert(f.pathname.clone(), entry).is_some() {
                return Err(StaticError::Duplicate(f.pathname.clone()));
            }
        }
        Ok(StaticFiles { entries })
    }

    /// The entry for a URL pathname (exact match, no basePath).
    pub fn get(&self, pathname: &str) -> Option<&StaticEntry> {
        self.entries.get(pathname)
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Answers a request for `entry` like next start does (see the crate docs for the table).
    pub async fn respond(
        &self,
        entry: &StaticEntry,
        method: &Method,
        req_headers: &HeaderMap,
    ) -> Response<Body> {
        respond(entry, method, req_headers).await
    }
}

/// Answers a request for `entry` (the free-function form of [`StaticFiles::respond`]).
pub async fn respond(
    entry: &StaticEntry,
    method: &Method,
    req_headers: &HeaderMap,
) -> Response<Body> {
    let is_head = method == Method::HEAD;
    if method != Method::GET && !is_head {
        // next start answers 405 by rendering its error page, which turns an OPTIONS request
        // into a bare 400 (base-server.js: "An OPTIONS request to a page handler is invalid").
        let status = if method == Method::OPTIONS {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::METHOD_NOT_ALLOWED
        };
        let mut res = bare(status);
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_PRIVATE));
        // Node's setHeader('Allow', ['GET', 'HEAD']) sends two header lines.
        res.headers_mut()
            .append(ALLOW, HeaderValue::from_static("GET"));
        res.headers_mut()
            .append(ALLOW, HeaderValue::from_static("HEAD"));
        res.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        return res;
    }
    let etag = entry.etag_str();
    if conditional::precondition_failed(req_headers, etag, entry.last_modified) {
        let mut res = bare(StatusCode::PRECONDITION_FAILED);
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_PRIVATE));
        res.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        return res;
    }
    if conditional::is_fresh(req_headers, etag, entry.last_modified) {
        let mut res = bare(StatusCode::NOT_MODIFIED);
        entry.validators(res.headers_mut());
        if entry.vary {
            res.headers_mut()
                .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        return res;
    }

    let size = entry.identity.size;
    let range = match req_headers.get(RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if conditional::if_range_allows(req_headers, etag, entry.last_modified) => {
            parse_range(r, size)
        }
        _ => RangeDecision::Full,
    };

    let mut res = bare(StatusCode::OK);
    let h = res.headers_mut();
    entry.validators(h);
    h.insert(CONTENT_TYPE, entry.content_type.clone());

    let (repr, start, len) = match range {
        RangeDecision::Unsatisfiable => {
            // next start's `send` has already set the file's validators and type when it finds
            // the range unsatisfiable; they stay on its 416.
            let validators = res.headers().clone();
            let mut res = bare(StatusCode::RANGE_NOT_SATISFIABLE);
            let h = res.headers_mut();
            h.extend(validators);
            h.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_PRIVATE));
            h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                h.insert(CONTENT_RANGE, v);
            }
            h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            return res;
        }
        RangeDecision::Partial { start, end } => {
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
                res.headers_mut().insert(CONTENT_RANGE, v);
            }
            (&entry.identity, start, end - start + 1)
        }
        RangeDecision::Full => {
            let accept = req_headers
                .get(ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            match negotiate(accept, &entry.encodings)
                .and_then(|enc| entry.variants.iter().find(|(e, _)| *e == enc))
            {
                Some((enc, repr)) => {
                    res.headers_mut()
                        .insert(CONTENT_ENCODING, HeaderValue::from_static(enc.token()));
                    (repr, 0, repr.size)
                }
                None => (&entry.identity, 0, size),
            }
        }
    };
    let h = res.headers_mut();
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if entry.vary {
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if is_head || len == 0 {
        return res;
    }
    let body = match &repr.data {
        Some(data) => {
            // `start + len` never exceeds the size: ranges are clamped when parsed.
            let end = usize::try_from(start + len)
                .unwrap_or(data.len())
                .min(data.len());
            let begin = usize::try_from(start).unwrap_or(end).min(end);
            ferry_http::full(data.slice(begin..end))
        }
        None => match open_stream(&repr.path, start, len).await {
            Ok(body) => body,
            Err(source) => {
                return StaticError::Io {
                    path: repr.path.clone(),
                    source,
                }
                .to_response();
            }
        },
    };
    *res.body_mut() = body;
    res
}

/// Streams `len` bytes of `path` from `start`, [`STREAM_CHUNK`] at a time.
pub async fn open_stream(path: &Path, start: u64, len: u64) -> std::io::Result<Body> {
    let mut file = tokio::fs::File::open(path).await?;
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    let stream =
        futures_util::stream::try_unfold((file, len), |(mut file, remaining)| async move {
            if remaining == 0 {
                return Ok(None);
            }
            let want = usize::try_from(remaining)
                .unwrap_or(STREAM_CHUNK)
                .min(STREAM_CHUNK);
            let mut buf = BytesMut::with_capacity(want);
            while buf.len() < want {
                let n = (&mut file)
                    .take((want - buf.len()) as u64)
                    .read_buf(&mut buf)
                    .await?;
                if n == 0 {
                    // The file shrank under us: fail the body rather than send short data.
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "static file truncated while streaming",
                    ));
                }
            }
            let chunk = buf.freeze();
            let left = remaining - chunk.len() as u64;
            Ok(Some((http_body::Frame::data(chunk), (file, left))))
        });
    Ok(ferry_http::boxed(http_body_util::StreamBody::new(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_outside_the_bundle() {
        let dir = Path::new("/b");
        assert!(bundle_path(dir, "/x", "../etc/passwd").is_err());
        assert!(bundle_path(dir, "/x", "/etc/passwd").is_err());
        assert!(bundle_path(dir, "/x", "").is_err());
        assert_eq!(
            bundle_path(dir, "/x", "static/a.js").expect("ok"),
            Path::new("/b/static/a.js")
        );
    }
}

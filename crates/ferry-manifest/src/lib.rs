//! Ferry's versioned deployment manifest: the contract between `ferry build` and `ferry start`.
//!
//! A bundle is a directory (by default `<app>/.ferry`) holding `manifest.json` plus the files it
//! names. Every path in the manifest is relative to the bundle root and uses `/` separators, so a
//! bundle can be moved or copied anywhere. The routing tables are Next.js's own (from the adapter's
//! `onBuildComplete`), kept verbatim: their `sourceRegex` strings are JavaScript regexes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest schema version this crate reads and writes.
pub const MANIFEST_VERSION: u32 = 1;
/// File name of the manifest inside a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Default bundle directory name inside an app directory.
pub const BUNDLE_DIR: &str = ".ferry";

/// Errors reading or validating a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("{path} is not a valid Ferry manifest: {source}")]
    Parse {
        /// The file that failed.
        path: PathBuf,
        /// The underlying parse error.
        source: serde_json::Error,
    },
    /// The manifest was written by an incompatible Ferry.
    #[error(
        "{path} has manifest version {found}, this ferry reads version {MANIFEST_VERSION}; rebuild with `ferry build`"
    )]
    Version {
        /// The file that failed.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
    },
}

/// The whole deployment manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Schema version, [`MANIFEST_VERSION`].
    pub version: u32,
    /// Version of the `ferry` binary that wrote the bundle.
    pub ferry_version: String,
    /// Version of Next.js that built the app.
    pub next_version: String,
    /// Whether the bundle needs Node workers or is a pure static export.
    pub kind: BundleKind,
    /// The Next.js build id (also the `_next/data/<buildId>` segment).
    pub build_id: String,
    /// The deployment id (`?dpl=` / `x-deployment-id`), if any.
    #[serde(default)]
    pub deployment_id: Option<String>,
    /// The subset of `next.config` the server needs at runtime.
    pub config: RuntimeConfig,
    /// Next.js routing phases, verbatim from the adapter.
    pub routing: Routing,
    /// Entrypoints that need JavaScript (pages, app pages, route handlers, API routes).
    #[serde(default)]
    pub functions: Vec<FunctionOutput>,
    /// The middleware / proxy function, if the app has one.
    #[serde(default)]
    pub middleware: Option<MiddlewareOutput>,
    /// Prerendered responses (static and ISR) with their seed files.
    #[serde(default)]
    pub prerenders: Vec<Prerender>,
    /// Files served as they are: `_next/static/**`, `public/**`, static HTML pages.
    #[serde(default)]
    pub static_files: Vec<StaticFile>,
    /// Where the Node side of the app lives inside the bundle.
    #[serde(default)]
    pub server: Option<ServerLayout>,
}

/// What a bundle needs to run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BundleKind {
    /// A full app: Rust front plus Node workers.
    Server,
    /// `output: 'export'`: static files only, no Node at all.
    StaticExport,
}

/// Runtime-relevant `next.config` values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// `basePath`, `""` when unset.
    #[serde(default)]
    pub base_path: String,
    /// `trailingSlash`.
    #[serde(default)]
    pub trailing_slash: bool,
    /// `skipTrailingSlashRedirect`.
    #[serde(default)]
    pub skip_trailing_slash_redirect: bool,
    /// `skipMiddlewareUrlNormalize` / `skipProxyUrlNormalize`.
    #[serde(default)]
    pub skip_middleware_url_normalize: bool,
    /// `i18n`, for pages-router apps.
    #[serde(default)]
    pub i18n: Option<I18nConfig>,
    /// `compress`: gzip dynamic responses (default true).
    #[serde(default = "default_true")]
    pub compress: bool,
    /// `poweredByHeader`: send `X-Powered-By: Next.js` (default true).
    #[serde(default = "default_true")]
    pub powered_by_header: bool,
    /// `generateEtags` (default true).
    #[serde(default = "default_true")]
    pub generate_etags: bool,
    /// `images`, kept as JSON for the image optimizer.
    #[serde(default)]
    pub images: serde_json::Value,
    /// `experimental.validateRSCRequestHeaders` (default true): RSC requests need a matching `_rsc`.
    #[serde(default = "default_true")]
    pub validate_rsc_request_headers: bool,
    /// `expireTime`: seconds a stale ISR entry may still be served.
    #[serde(default)]
    pub expire_time: Option<u64>,
}

fn default_true() -> bool {
    true
}

impl Default for RuntimeConfig {
    /// Next.js's own defaults (what an empty `next.config` means).
    fn default() -> Self {
        Self {
            base_path: String::new(),
            trailing_slash: false,
            skip_trailing_slash_redirect: false,
            skip_middleware_url_normalize: false,
            i18n: None,
            compress: true,
            powered_by_header: true,
            generate_etags: true,
            images: serde_json::Value::Null,
            validate_rsc_request_headers: true,
            expire_time: None,
        }
    }
}

/// `i18n` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct I18nConfig {
    /// Supported locales.
    pub locales: Vec<String>,
    /// The default locale.
    pub default_locale: String,
    /// Domain-specific locale routing.
    #[serde(default)]
    pub domains: Vec<I18nDomain>,
    /// `false` disables Accept-Language detection.
    #[serde(default)]
    pub locale_detection: Option<bool>,
}

/// One `i18n.domains` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct I18nDomain {
    /// Host name.
    pub domain: String,
    /// Default locale on that domain.
    pub default_locale: String,
    /// Other locales on that domain.
    #[serde(default)]
    pub locales: Vec<String>,
    /// Use `http` instead of `https` in redirects.
    #[serde(default)]
    pub http: Option<bool>,
}

/// Next.js routing phases as the adapter's `onBuildComplete` hands them over.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// Headers rules, trailing-slash and user redirects.
    #[serde(default)]
    pub before_middleware: Vec<Route>,
    /// Rewrites checked before the filesystem.
    #[serde(default)]
    pub before_files: Vec<Route>,
    /// Rewrites checked after the filesystem.
    #[serde(default)]
    pub after_files: Vec<Route>,
    /// Dynamic route matchers.
    #[serde(default)]
    pub dynamic_routes: Vec<Route>,
    /// Headers applied on a match (e.g. immutable cache headers).
    #[serde(default)]
    pub on_match: Vec<Route>,
    /// Final rewrites.
    #[serde(default)]
    pub fallback: Vec<Route>,
    /// Normalize `/_next/data/<buildId>/…json` URLs while matching.
    #[serde(default)]
    pub should_normalize_next_data: bool,
    /// RSC request conventions.
    #[serde(default)]
    pub rsc: RscConfig,
}

/// One routing rule. `sourceRegex` is a JavaScript regex.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The user's pattern, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The compiled JavaScript regex.
    pub source_regex: String,
    /// Rewrite / redirect destination with `$1` / `$name` placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Headers to set (for redirects, `Location`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Conditions that must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has: Option<Vec<RouteHas>>,
    /// Conditions that must not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<RouteHas>>,
    /// Status code (redirects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Internal priority flag (trailing-slash redirect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<bool>,
}

/// A `has` / `missing` condition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteHas {
    /// What is tested.
    #[serde(rename = "type")]
    pub kind: HasKind,
    /// Header / cookie / query name (absent for `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A JavaScript regex source the value must match (whole value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What a `has` condition looks at.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HasKind {
    /// A request header.
    Header,
    /// A cookie.
    Cookie,
    /// A query parameter.
    Query,
    /// The Host header.
    Host,
}

/// RSC request conventions (`routing.rsc`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RscConfig {
    /// Request header marking an RSC request (`rsc`).
    pub header: String,
    /// Value of `Vary` on RSC-capable responses.
    pub vary_header: String,
    /// Prefetch request header.
    pub prefetch_header: String,
    /// Header set when rendering postponed.
    pub did_postpone_header: String,
    /// Content type of RSC payloads.
    pub content_type_header: String,
    /// Pathname suffix of RSC outputs (`.rsc`).
    pub suffix: String,
    /// Segment prefetch request header.
    pub prefetch_segment_header: String,
    /// Suffix of segment prefetch outputs.
    pub prefetch_segment_suffix: String,
    /// Directory suffix of segment prefetch outputs.
    pub prefetch_segment_dir_suffix: String,
    /// `clientParamParsing`.
    #[serde(default)]
    pub client_param_parsing: bool,
    /// `dynamicRSCPrerender`.
    #[serde(default, rename = "dynamicRSCPrerender")]
    pub dynamic_rsc_prerender: bool,
}

impl Default for RscConfig {
    fn default() -> Self {
        Self {
            header: "rsc".into(),
            vary_header:
                "rsc, next-router-state-tree, next-router-prefetch, next-router-segment-prefetch"
                    .into(),
            prefetch_header: "next-router-prefetch".into(),
            did_postpone_header: "x-nextjs-postponed".into(),
            content_type_header: "text/x-component".into(),
            suffix: ".rsc".into(),
            prefetch_segment_header: "next-router-segment-prefetch".into(),
            prefetch_segment_suffix: ".segment.rsc".into(),
            prefetch_segment_dir_suffix: ".segments".into(),
            client_param_parsing: false,
            dynamic_rsc_prerender: false,
        }
    }
}

/// The kind of a JavaScript entrypoint.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FunctionKind {
    /// `pages/` page.
    Pages,
    /// `pages/api` route.
    PagesApi,
    /// `app/` page.
    AppPage,
    /// `app/` route handler.
    AppRoute,
}

/// A JavaScript entrypoint served by the worker pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionOutput {
    /// The adapter's output id.
    pub id: String,
    /// Entrypoint kind.
    pub kind: FunctionKind,
    /// URL pathname the output answers (dynamic segments as `[slug]`).
    pub pathname: String,
    /// Source page (`/blog/[slug]/page`, `legacy/ssr`).
    pub source_page: String,
    /// The entrypoint module, relative to the bundle root.
    pub entry: String,
    /// `nodejs` or `edge`.
    pub runtime: String,
    /// `maxDuration` in seconds, if configured.
    #[serde(default)]
    pub max_duration: Option<u64>,
}

/// The middleware / proxy function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MiddlewareOutput {
    /// The entrypoint module, relative to the bundle root.
    pub entry: String,
    /// `nodejs` or `edge`.
    pub runtime: String,
    /// When the middleware runs.
    pub matchers: Vec<MiddlewareMatcher>,
}

/// One middleware matcher.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MiddlewareMatcher {
    /// The user's pattern.
    #[serde(default)]
    pub source: Option<String>,
    /// The compiled JavaScript regex.
    pub source_regex: String,
    /// Conditions that must hold.
    #[serde(default)]
    pub has: Option<Vec<RouteHas>>,
    /// Conditions that must not hold.
    #[serde(default)]
    pub missing: Option<Vec<RouteHas>>,
}

/// `revalidate` of a prerender: seconds, or `false` for fully static.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Revalidate {
    /// Regenerate after this many seconds.
    Seconds(u64),
    /// Never regenerate on time (`false`).
    Never(bool),
}

impl Revalidate {
    /// The revalidate period in seconds, `None` for fully static.
    pub fn seconds(self) -> Option<u64> {
        match self {
            Revalidate::Seconds(s) => Some(s),
            Revalidate::Never(_) => None,
        }
    }
}

/// A header value in a prerender seed: one string or several.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum HeaderValue {
    /// A single value.
    One(String),
    /// Several values (e.g. `set-cookie`).
    Many(Vec<String>),
}

impl HeaderValue {
    /// All values, in order.
    pub fn values(&self) -> Vec<&str> {
        match self {
            HeaderValue::One(v) => vec![v.as_str()],
            HeaderValue::Many(vs) => vs.iter().map(String::as_str).collect(),
        }
    }
}

/// A prerendered response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Prerender {
    /// URL pathname (`/isr`, `/isr.rsc`, `/_next/data/<id>/x.json`, `/blog/[slug]`).
    pub pathname: String,
    /// The function that renders it again (its [`FunctionOutput::id`]).
    pub parent_output_id: String,
    /// Prerenders with the same group revalidate together (HTML + RSC of one page).
    pub group_id: u64,
    /// The route it belongs to (`/blog/[slug]`).
    pub route: String,
    /// The build-time seed, if one was generated.
    #[serde(default)]
    pub seed: Option<PrerenderSeed>,
    /// `fallback` mode of the parent: `None` = blocking, `Some(false)`-like values kept as JSON.
    #[serde(default)]
    pub parent_fallback_mode: serde_json::Value,
    /// Query keys that take part in the cache key.
    #[serde(default)]
    pub allow_query: Option<Vec<String>>,
    /// Headers that take part in the cache key.
    #[serde(default)]
    pub allow_header: Option<Vec<String>>,
    /// Conditions under which the cache is bypassed (Server Actions, …).
    #[serde(default)]
    pub bypass_for: Option<Vec<RouteHas>>,
    /// The token that forces a regeneration (`x-prerender-revalidate`).
    #[serde(default)]
    pub bypass_token: Option<String>,
    /// `STATIC` or `PARTIALLY_STATIC`.
    #[serde(default)]
    pub rendering_mode: Option<String>,
}

/// The build-time content of a prerender.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrerenderSeed {
    /// Body file relative to the bundle root (absent for e.g. an empty fallback).
    #[serde(default)]
    pub file: Option<String>,
    /// Initial status code (200 when absent).
    #[serde(default)]
    pub status: Option<u16>,
    /// Initial headers (content-type, vary, x-next-cache-tags, …).
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    /// Seconds until stale, or never.
    #[serde(default)]
    pub revalidate: Option<Revalidate>,
    /// Seconds until the entry must not be served stale any more.
    #[serde(default)]
    pub expiration: Option<u64>,
    /// Serialized PPR state.
    #[serde(default)]
    pub postponed_state: Option<String>,
}

/// Where a static file came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StaticSource {
    /// `.next/static/**` (served under `/_next/static`).
    NextStatic,
    /// The app's `public/` directory.
    Public,
    /// A static HTML page or other output listed by the adapter (`/404`, `/500`, `*.rsc` fallbacks).
    Output,
}

/// A file served as it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StaticFile {
    /// URL pathname, with the basePath like every manifest pathname (a static export's files
    /// are named without it).
    pub pathname: String,
    /// Body file relative to the bundle root.
    pub file: String,
    /// Where it came from (decides the default Cache-Control).
    pub source: StaticSource,
    /// `Content-Type` to send.
    pub content_type: String,
    /// Size in bytes of the identity file.
    pub size: u64,
    /// Content hash (hex) of the identity file; ETags derive from it.
    pub hash: String,
    /// Content hash when the file name is content-addressed (immutable).
    #[serde(default)]
    pub immutable_hash: Option<String>,
    /// Precompressed variants present beside the file (`<file>.br`, `<file>.gz`).
    #[serde(default)]
    pub encodings: Vec<Encoding>,
}

/// A precompressed content encoding.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Brotli, stored as `<file>.br`.
    Br,
    /// Gzip, stored as `<file>.gz`.
    Gzip,
}

impl Encoding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }
    /// The file-name suffix of the variant.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Br => ".br",
            Encoding::Gzip => ".gz",
        }
    }
}

/// Where the Node side of the app lives in the bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerLayout {
    /// The app's project directory (the workers' cwd), relative to the bundle root.
    pub project_dir: String,
    /// The `distDir` (usually `.next`), relative to `project_dir`.
    pub dist_dir: String,
    /// Environment variables the build pinned for runtime (e.g. `NEXT_DEPLOYMENT_ID`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl Manifest {
    /// Reads and validates `<bundle_dir>/manifest.json`.
    pub fn load(bundle_dir: &Path) -> Result<Self, ManifestError> {
        let path = bundle_dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        Self::from_json(&text, &path)
    }

    /// Parses a manifest from JSON text; `path` is only used in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let version: VersionOnly =
            serde_json::from_str(text).map_err(|source| ManifestError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if version.version != MANIFEST_VERSION {
            return Err(ManifestError::Version {
                path: path.to_path_buf(),
                found: version.version,
            });
        }
        serde_json::from_str(text).map_err(|source| ManifestError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Serializes the manifest as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Every pathname the filesystem phase of routing can match: functions, static files and
    /// prerenders (the `pathnames` `@next/routing` takes).
    pub fn route_pathnames(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .functions
            .iter()
            .map(|f| f.pathname.as_str())
            .chain(self.static_files.iter().map(|s| s.pathname.as_str()))
            .chain(self.prerenders.iter().map(|p| p.pathname.as_str()))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            ferry_version: "0.1.0".into(),
            next_version: "16.4.6".into(),
            kind: BundleKind::Server,
            build_id: "b1".into(),
            deployment_id: None,
            config: RuntimeConfig::default(),
            routing: Routing::default(),
            functions: vec![],
            middleware: None,
            prerenders: vec![],
            static_files: vec![],
            server: None,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let m = minimal();
        let back = Manifest::from_json(&m.to_json(), Path::new("m.json")).expect("parses");
        assert_eq!(back, m);
    }

    #[test]
    fn rejects_other_versions_with_a_clear_error() {
        let mut m = minimal();
        m.version = 99;
        let err = Manifest::from_json(&m.to_json(), Path::new("m.json")).expect_err("must fail");
        assert!(err.to_string().contains("version 99"), "{err}");
    }

    #[test]
    fn reads_adapter_route_shapes() {
        let json = r#"{"source":"/old/:slug","sourceRegex":"^\\/old(?:\\/([^\\/]+?))(?:\\/)?$",
            "headers":{"Location":"/new/$1"},"status":308,
            "has":[{"type":"cookie","key":"beta","value":"yes"},{"type":"host","value":"a.com"}]}"#;
        let r: Route = serde_json::from_str(json).expect("route parses");
        assert_eq!(r.status, Some(308));
        let has = r.has.expect("has");
        assert_eq!(has[0].kind, HasKind::Cookie);
        assert_eq!(has[1].key, None);
    }

    #[test]
    fn revalidate_accepts_false_and_seconds() {
        let r: Revalidate = serde_json::from_str("false").expect("false");
        assert_eq!(r.seconds(), None);
        let r: Revalidate = serde_json::from_str("5").expect("5");
        assert_eq!(r.seconds(), Some(5));
    }
}

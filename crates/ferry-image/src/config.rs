//! The `images` section of next.config, as the manifest carries it (next's resolved config, so
//! defaults only fill what is missing).

use serde::Deserialize;

/// next's default `contentSecurityPolicy`.
pub const DEFAULT_CSP: &str = "script-src 'none'; frame-src 'none'; sandbox;";

/// sharp's default `limitInputPixels` (0x3FFF × 0x3FFF), which next keeps.
pub const DEFAULT_MAX_INPUT_PIXELS: u64 = 268_402_689;

/// One `images.localPatterns` entry.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct LocalPattern {
    /// Glob on the pathname (`**` when absent).
    pub pathname: Option<String>,
    /// Exact search string (`""` means no query), any when absent.
    pub search: Option<String>,
}

/// One `images.remotePatterns` entry.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RemotePattern {
    /// `http` / `https` (a trailing `:` is ignored), any when absent.
    pub protocol: Option<String>,
    /// Glob on the hostname (required by next).
    pub hostname: Option<String>,
    /// Exact port string (`""` for the default port), any when absent.
    pub port: Option<String>,
    /// Glob on the pathname (`**` when absent).
    pub pathname: Option<String>,
    /// Exact search string, any when absent.
    pub search: Option<String>,
}

/// The image optimizer's configuration (`images` in next.config).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageConfig {
    /// `loader`: only `default` is served by the optimizer.
    pub loader: String,
    /// `unoptimized`: the optimizer answers 404 when set.
    pub unoptimized: bool,
    /// `deviceSizes`: allowed widths (with `imageSizes`).
    pub device_sizes: Vec<u32>,
    /// `imageSizes`: allowed widths (with `deviceSizes`).
    pub image_sizes: Vec<u32>,
    /// `qualities`: allowed qualities; every 1..=100 when absent.
    pub qualities: Option<Vec<u32>>,
    /// `formats`: output types offered to `Accept`, in preference order.
    pub formats: Vec<String>,
    /// `minimumCacheTTL` in seconds.
    #[serde(rename = "minimumCacheTTL")]
    pub minimum_cache_ttl: u64,
    /// Deprecated `domains`: exact remote hostnames allowed.
    pub domains: Vec<String>,
    /// `remotePatterns`: absolute urls allowed.
    pub remote_patterns: Vec<RemotePattern>,
    /// `localPatterns`: local urls allowed; all when absent.
    pub local_patterns: Option<Vec<LocalPattern>>,
    /// `dangerouslyAllowSVG`: serve SVG sources (as they are).
    #[serde(rename = "dangerouslyAllowSVG")]
    pub dangerously_allow_svg: bool,
    /// `dangerouslyAllowLocalIP`: let remote urls resolve to private addresses.
    #[serde(rename = "dangerouslyAllowLocalIP")]
    pub dangerously_allow_local_ip: bool,
    /// `contentSecurityPolicy` sent with every image.
    pub content_security_policy: String,
    /// `contentDispositionType`: `inline` or `attachment`.
    pub content_disposition_type: String,
    /// `maximumRedirects` followed for a remote url.
    pub maximum_redirects: u32,
    /// `maximumResponseBody`: largest upstream body in bytes.
    pub maximum_response_body: u64,
    /// `maximumDiskCacheSize` in bytes (0 disables the disk cache; absent: half the free disk).
    pub maximum_disk_cache_size: Option<u64>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            loader: "default".into(),
            unoptimized: false,
            device_sizes: vec![640, 750, 828, 1080, 1200, 1920, 2048, 3840],
            image_sizes: vec![32, 48, 64, 96, 128, 256, 384],
            qualities: Some(vec![75]),
            formats: vec!["image/webp".into()],
            minimum_cache_ttl: 14400,
            domains: Vec::new(),
            remote_patterns: Vec::new(),
            local_patterns: None,
            dangerously_allow_svg: false,
            dangerously_allow_local_ip: false,
            content_security_policy: DEFAULT_CSP.into(),
            content_disposition_type: "attachment".into(),
            maximum_redirects: 3,
            maximum_response_body: 50_000_000,
            maximum_disk_cache_size: None,
        }
    }
}

impl ImageConfig {
    /// Reads the manifest's `config.images` JSON; missing or malformed fields take next's
    /// defaults (a `null` section is the default config).
    pub fn from_json(value: &serde_json::Value) -> Self {
        if value.is_null() {
            return Self::default();
        }
        match serde_json::from_value(value.clone()) {
            Ok(config) => config,
            Err(err) => {
                tracing::warn!("images config not understood ({err}); using next's defaults");
                Self::default()
            }
        }
    }

    /// Whether `/_next/image` is served at all (next answers 404 otherwise).
    pub fn optimizer_enabled(&self) -> bool {
        self.loader == "default" && !self.unoptimized
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_next_resolved_config() {
        let v = serde_json::json!({
            "deviceSizes": [640], "imageSizes": [32], "qualities": [50, 75],
            "formats": ["image/avif", "image/webp"], "minimumCacheTTL": 60,
            "dangerouslyAllowSVG": true, "dangerouslyAllowLocalIP": true,
            "contentDispositionType": "inline", "maximumDiskCacheSize": 0,
            "localPatterns": [{"pathname": "/a/**", "search": ""}],
            "remotePatterns": [{"protocol": "https", "hostname": "*.example.com"}],
            "loader": "default", "unoptimized": false, "customCacheHandler": false
        });
        let c = ImageConfig::from_json(&v);
        assert_eq!(c.device_sizes, [640]);
        assert_eq!(c.qualities, Some(vec![50, 75]));
        assert_eq!(c.minimum_cache_ttl, 60);
        assert!(c.dangerously_allow_svg && c.dangerously_allow_local_ip);
        assert_eq!(c.maximum_disk_cache_size, Some(0));
        assert_eq!(c.content_security_policy, DEFAULT_CSP);
        assert_eq!(
            c.remote_patterns[0].hostname.as_deref(),
            Some("*.example.com")
        );
        assert!(c.optimizer_enabled());
        let null = ImageConfig::from_json(&serde_json::Value::Null);
        assert_eq!(null.formats, ["image/webp"]);
    }
}

//! The adapter's output: Next.js's `onBuildComplete` context as `js/adapter/adapter.cjs` writes it.
//!
//! Only the fields Ferry uses are typed; everything else is ignored. Shapes follow
//! `next/dist/docs/01-app/03-api-reference/07-adapters/09-output-types.md` (next 16.4).

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferry_manifest::{MiddlewareMatcher, RouteHas, Routing};
use serde::Deserialize;

/// The adapter's JavaScript source, written to a temp file and passed as `NEXT_ADAPTER_PATH`.
pub const ADAPTER_JS: &str = include_str!("../../../js/adapter/adapter.cjs");
/// Ferry's Next.js cache handlers (`js/cache-handler/`), written to `cache-handler/` beside the
/// adapter, which installs them into the app's build (file name, source).
pub const CACHE_HANDLER_JS: &[(&str, &str)] = &[
    (
        "client.cjs",
        include_str!("../../../js/cache-handler/client.cjs"),
    ),
    (
        "incremental.cjs",
        include_str!("../../../js/cache-handler/incremental.cjs"),
    ),
    (
        "use-cache.cjs",
        include_str!("../../../js/cache-handler/use-cache.cjs"),
    ),
];

/// The whole `onBuildComplete` context.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterContext {
    /// Routing phases as JSON (see [`AdapterContext::routing`]).
    #[serde(rename = "routing")]
    pub routing_json: serde_json::Value,
    /// Build outputs by kind.
    pub outputs: AdapterOutputs,
    /// The final `next.config` (functions dropped by JSON).
    #[serde(default)]
    pub config: serde_json::Value,
    /// The build id Next used.
    pub build_id: String,
    /// The Next.js version.
    pub next_version: String,
    /// Absolute `distDir`.
    pub dist_dir: PathBuf,
    /// Absolute project directory.
    pub project_dir: PathBuf,
    /// Absolute repository root (traced asset keys are relative to it).
    pub repo_root: PathBuf,
    /// Files Ferry's worker bridge loads besides the entrypoints (`@next/env`, Next's image
    /// optimizer and `sharp`, ...), traced by the adapter: repo-relative key → absolute path.
    #[serde(default)]
    pub runtime_files: BTreeMap<String, PathBuf>,
    /// The deployment id `next start` would see at runtime: `config.deploymentId` unless Ferry's
    /// adapter pinned it (then empty). `None` from an adapter that did not report it.
    #[serde(default)]
    pub runtime_deployment_id: Option<String>,
}

impl AdapterContext {
    /// The deployment id the app's server code must see at runtime (`None`: none), as under
    /// `next start`, which re-reads next.config without Ferry's adapter.
    pub fn runtime_deployment_id(&self) -> Option<String> {
        match &self.runtime_deployment_id {
            Some(id) => Some(id.clone()),
            None => self
                .config
                .get("deploymentId")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        }
        .filter(|s| !s.is_empty())
    }

    /// The routing phases, typed as the manifest keeps them.
    pub fn routing(&self) -> Result<Routing, serde_json::Error> {
        serde_json::from_value(self.routing_json.clone())
    }

    /// The parts of `routing` the manifest's [`Routing`] does not keep.
    pub fn routing_extra(&self) -> Result<RoutingExtra, serde_json::Error> {
        serde_json::from_value(self.routing_json.clone())
    }
}

/// The parts of `routing` the manifest's [`Routing`] does not keep.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingExtra {
    /// `routing.middlewareMatchers`.
    #[serde(default)]
    pub middleware_matchers: Vec<MiddlewareMatcher>,
}

/// `ctx.outputs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterOutputs {
    /// `pages/` pages.
    #[serde(default)]
    pub pages: Vec<FunctionEntry>,
    /// `pages/api` routes.
    #[serde(default)]
    pub pages_api: Vec<FunctionEntry>,
    /// `app/` pages (each with a `.rsc` twin).
    #[serde(default)]
    pub app_pages: Vec<FunctionEntry>,
    /// `app/` route handlers.
    #[serde(default)]
    pub app_routes: Vec<FunctionEntry>,
    /// Prerendered responses.
    #[serde(default)]
    pub prerenders: Vec<PrerenderEntry>,
    /// Static files (`.next/static/**`, `/404`, `/500`, rsc fallbacks).
    #[serde(default)]
    pub static_files: Vec<StaticFileEntry>,
    /// The middleware / proxy function.
    #[serde(default)]
    pub middleware: Option<FunctionEntry>,
}

impl AdapterOutputs {
    /// Every function-like output (pages, API routes, app pages and routes, middleware).
    pub fn all_functions(&self) -> impl Iterator<Item = &FunctionEntry> {
        self.pages
            .iter()
            .chain(&self.pages_api)
            .chain(&self.app_pages)
            .chain(&self.app_routes)
            .chain(self.middleware.iter())
    }
}

/// A page, API route, app page, app route or middleware output.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionEntry {
    /// Output id.
    pub id: String,
    /// `PAGES`, `PAGES_API`, `APP_PAGE`, `APP_ROUTE`, `MIDDLEWARE`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The built entry module (absolute).
    pub file_path: PathBuf,
    /// URL pathname.
    pub pathname: String,
    /// Source page.
    #[serde(default)]
    pub source_page: String,
    /// `nodejs` or `edge`.
    #[serde(default = "nodejs")]
    pub runtime: String,
    /// Traced files: repo-relative key → absolute path.
    #[serde(default)]
    pub assets: BTreeMap<String, PathBuf>,
    /// Bundled wasm files: name → absolute path.
    #[serde(default)]
    pub wasm_assets: BTreeMap<String, PathBuf>,
    /// Edge entry metadata.
    #[serde(default)]
    pub edge_runtime: Option<EdgeRuntime>,
    /// Per-output config.
    #[serde(default)]
    pub config: FunctionConfig,
}

fn nodejs() -> String {
    "nodejs".into()
}

/// `edgeRuntime` of an edge output.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeRuntime {
    /// Absolute path of the module registered in the edge runtime.
    pub module_path: PathBuf,
}

/// An output's `config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionConfig {
    /// `maxDuration` in seconds.
    #[serde(default)]
    pub max_duration: Option<f64>,
    /// Middleware matchers.
    #[serde(default)]
    pub matchers: Option<Vec<MiddlewareMatcher>>,
}

/// A prerender output.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrerenderEntry {
    /// URL pathname.
    pub pathname: String,
    /// The function that renders it.
    pub parent_output_id: String,
    /// Revalidation group.
    pub group_id: u64,
    /// Route with dynamic segments.
    #[serde(default)]
    pub route: String,
    /// `false`, `null` or a fallback path.
    #[serde(default)]
    pub parent_fallback_mode: serde_json::Value,
    /// The build-time seed.
    #[serde(default)]
    pub fallback: Option<PrerenderFallback>,
    /// Cache-key and bypass config.
    #[serde(default)]
    pub config: PrerenderConfig,
}

/// A prerender's `fallback` (its seed).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrerenderFallback {
    /// Seed body file (absolute).
    #[serde(default)]
    pub file_path: Option<PathBuf>,
    /// Initial status.
    #[serde(default)]
    pub initial_status: Option<u16>,
    /// Initial headers.
    #[serde(default)]
    pub initial_headers: BTreeMap<String, ferry_manifest::HeaderValue>,
    /// Seconds until expiry.
    #[serde(default)]
    pub initial_expiration: Option<f64>,
    /// Seconds until stale, or `false`.
    #[serde(default)]
    pub initial_revalidate: Option<serde_json::Value>,
    /// PPR state.
    #[serde(default)]
    pub postponed_state: Option<String>,
}

/// A prerender's `config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrerenderConfig {
    /// Query keys in the cache key.
    #[serde(default)]
    pub allow_query: Option<Vec<String>>,
    /// Headers in the cache key.
    #[serde(default)]
    pub allow_header: Option<Vec<String>>,
    /// Bypass conditions.
    #[serde(default)]
    pub bypass_for: Option<Vec<RouteHas>>,
    /// Revalidation token.
    #[serde(default)]
    pub bypass_token: Option<String>,
    /// `STATIC` / `PARTIALLY_STATIC`.
    #[serde(default)]
    pub rendering_mode: Option<String>,
}

/// A static file output.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticFileEntry {
    /// The file (absolute).
    pub file_path: PathBuf,
    /// URL pathname.
    pub pathname: String,
    /// Full content hash when the name is content-addressed.
    #[serde(default)]
    pub immutable_hash: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_context_shape() {
        // A trimmed copy of a real next 16.4.6 context.
        let json = r#"{
          "routing": {"beforeMiddleware": [], "middlewareMatchers": [{"source": "/ssr", "sourceRegex": "^/ssr$"}],
                      "shouldNormalizeNextData": true},
          "outputs": {
            "pages": [], "pagesApi": [], "appRoutes": [],
            "appPages": [{"id": "/ssr", "type": "APP_PAGE", "filePath": "/r/.next/server/app/ssr/page.js",
                          "pathname": "/ssr", "sourcePage": "/ssr/page", "runtime": "nodejs",
                          "assets": {"node_modules/react/index.js": "/r/node_modules/react/index.js"}, "config": {}}],
            "prerenders": [{"id": "/isr", "type": "PRERENDER", "pathname": "/isr", "parentOutputId": "/isr",
                            "groupId": 6, "route": "/isr",
                            "fallback": {"filePath": "/r/.next/x/isr.html", "initialRevalidate": 5,
                                         "initialExpiration": 31536000, "initialHeaders": {"vary": "rsc"}},
                            "config": {"allowQuery": [], "bypassFor": [{"type": "header", "key": "next-action"}]}}],
            "staticFiles": [{"type": "STATIC_FILE", "id": "/404", "pathname": "/404", "filePath": "/r/.next/server/pages/404.html"}],
            "middleware": {"id": "/_middleware", "type": "MIDDLEWARE", "filePath": "/r/.next/server/middleware.js",
                           "pathname": "/_middleware", "runtime": "nodejs", "assets": {},
                           "config": {"matchers": [{"source": "/ssr", "sourceRegex": "^/ssr$"}]}}
          },
          "config": {"basePath": ""}, "buildId": "b", "nextVersion": "16.4.6",
          "distDir": "/r/.next", "projectDir": "/r", "repoRoot": "/r"
        }"#;
        let ctx: AdapterContext = serde_json::from_str(json).expect("parses");
        assert!(ctx.routing().expect("routing").should_normalize_next_data);
        let extra = ctx.routing_extra().expect("extra");
        assert_eq!(extra.middleware_matchers.len(), 1);
        assert_eq!(ctx.outputs.all_functions().count(), 2);
        let pr = &ctx.outputs.prerenders[0];
        let fb = pr.fallback.as_ref().expect("fallback");
        assert_eq!(fb.initial_revalidate, Some(serde_json::json!(5)));
        assert_eq!(pr.config.bypass_for.as_ref().map(Vec::len), Some(1));
    }

    /// The quoted ids after each `call(` in `js`.
    fn quoted_args<'a>(js: &'a str, call: &str) -> Vec<&'a str> {
        js.split(call)
            .skip(1)
            .filter_map(|rest| {
                let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
                rest[1..].split(quote).next()
            })
            .collect()
    }

    #[test]
    fn the_adapter_traces_every_module_the_bridge_loads() {
        let bridge = include_str!("../../../js/bridge/bridge.cjs");
        let list = ADAPTER_JS
            .split("const BRIDGE_MODULES = [")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .unwrap_or_default();
        // The strings of a one-quote-style array literal are its odd `'`-separated pieces.
        let traced: Vec<&str> = list.split('\'').skip(1).step_by(2).collect();
        let mut loaded = quoted_args(bridge, "projectRequire(");
        loaded.extend(quoted_args(bridge, "optionalRequire("));
        assert!(loaded.contains(&"@next/env"), "{loaded:?}");
        assert!(loaded.contains(&"next/dist/server/image-optimizer"));
        for id in loaded {
            assert!(
                traced.contains(&id),
                "js/bridge/bridge.cjs loads {id:?} but js/adapter/adapter.cjs's BRIDGE_MODULES does not trace it"
            );
        }
    }

    #[test]
    fn embeds_the_adapter() {
        assert!(ADAPTER_JS.contains("onBuildComplete"));
        assert!(ADAPTER_JS.contains("FERRY_ADAPTER_OUTPUT"));
    }
}

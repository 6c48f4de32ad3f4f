//! Turns the adapter's build context into a bundle directory.
//!
//! Layout (every path relative to the bundle root):
//! - `manifest.json`
//! - `static/_next/static/**`: `.next/static/**`
//! - `public/**`: the app's `public/` directory
//! - `outputs/**`: other static outputs (`/404` → `outputs/404.html`, rsc fallbacks)
//! - `prerender/**`: prerender seeds, named after their pathname (`/isr` → `prerender/isr.html`)
//! - `server/<repo-relative path>`: traced server files, entrypoints, `.next` runtime files, and
//!   what Ferry's worker bridge loads (`AdapterContext::runtime_files`)
//! - `<file>.br` / `<file>.gz` beside compressible static files

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read as _, Write as _};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_manifest::{
    BundleKind, Encoding, FunctionKind, FunctionOutput, MANIFEST_FILE, MANIFEST_VERSION, Manifest,
    MiddlewareOutput, Prerender, PrerenderSeed, Revalidate, RuntimeConfig, ServerLayout,
    StaticFile, StaticSource,
};
use sha2::{Digest as _, Sha256};

use crate::BuildError;
use crate::adapter::{AdapterContext, FunctionEntry, StaticFileEntry};
use crate::content;
use crate::ordered_json::OrderedJson;

/// `.env` files `next start` loads in production, copied so workers can load them too.
pub const ENV_FILES: &[&str] = &[
    ".env.production.local",
    ".env.local",
    ".env.production",
    ".env",
];

/// Counts of what a bundle holds.
#[derive(Debug, Clone, Default)]
pub struct BundleStats {
    /// Function entrypoints (including `.rsc` twins).
    pub functions: usize,
    /// Prerenders.
    pub prerenders: usize,
    /// Static files.
    pub static_files: usize,
    /// Files under `server/`.
    pub server_files: usize,
    /// Precompressed variants written.
    pub precompressed: usize,
    /// Total bytes written.
    pub bytes: u64,
}

/// Where the bundle is being staged and what has been written there.
struct Stage {
    root: PathBuf,
    used: HashSet<String>,
    bytes: u64,
}

impl Stage {
    /// Reserves a unique bundle-relative path, suffixing `~N` on a clash.
    fn reserve(&mut self, wanted: &str) -> String {
        let mut candidate = wanted.to_string();
        let mut n = 1;
        while !self.used.insert(candidate.clone()) {
            candidate = format!("{wanted}~{n}");
            n += 1;
        }
        candidate
    }

    fn abs(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Copies `src` to bundle path `rel` (a real copy: bundles are immutable).
    fn copy(&mut self, src: &Path, rel: &str) -> Result<u64, BuildError> {
        let dst = self.abs(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let n = std::fs::copy(src, &dst).map_err(|source| BuildError::Copy {
            from: src.to_path_buf(),
            to: dst.clone(),
            source,
        })?;
        // Keep the modification time: a prerender seed is dated by its file's mtime (as next
        // start does), so its ISR age must start when Next rendered it, not when we copied it.
        let keep_mtime = || -> std::io::Result<()> {
            let modified = std::fs::metadata(src)?.modified()?;
            std::fs::File::options()
                .write(true)
                .open(&dst)?
                .set_modified(modified)
        };
        keep_mtime().map_err(|source| BuildError::Copy {
            from: src.to_path_buf(),
            to: dst.clone(),
            source,
        })?;
        self.bytes += n;
        Ok(n)
    }

    /// Makes bundle path `rel` a symbolic link to `target` (relative to `rel`'s directory).
    fn symlink(&mut self, rel: &str, target: &Path) -> Result<(), BuildError> {
        let dst = self.abs(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::os::unix::fs::symlink(target, &dst).map_err(io_err(&dst))
    }

    /// Writes `bytes` to bundle path `rel`.
    fn write(&mut self, rel: &str, bytes: &[u8]) -> Result<(), BuildError> {
        let dst = self.abs(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&dst, bytes).map_err(io_err(&dst))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Copies `src` to `rel`, returning its size and sha256.
    fn copy_hashed(&mut self, src: &Path, rel: &str) -> Result<(u64, String), BuildError> {
        let dst = self.abs(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let copy_err = |source| BuildError::Copy {
            from: src.to_path_buf(),
            to: dst.clone(),
            source,
        };
        let mut input = std::fs::File::open(src).map_err(copy_err)?;
        let mut output = std::fs::File::create(&dst).map_err(copy_err)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buf).map_err(copy_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            output.write_all(&buf[..n]).map_err(copy_err)?;
            size += n as u64;
        }
        self.bytes += size;
        Ok((size, hex::encode(hasher.finalize())))
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes a staging directory unless the build committed it.
struct StagingGuard {
    path: PathBuf,
    committed: bool,
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes the bundle for `ctx` into `out_dir`, replacing a previous bundle only once the new one
/// is complete.
pub fn write_bundle(
    ctx: &AdapterContext,
    out_dir: &Path,
    pinned_env: BTreeMap<String, String>,
) -> Result<(Manifest, BundleStats), BuildError> {
    check_out_dir(out_dir)?;
    let parent = out_dir
        .parent()
        .ok_or_else(|| BuildError::Invalid(format!("{} has no parent", out_dir.display())))?;
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    let staging = parent.join(format!(".{name}.tmp-{}", crate::ids::random_id()?));
    std::fs::create_dir(&staging).map_err(io_err(&staging))?;
    let mut guard = StagingGuard {
        path: staging.clone(),
        committed: false,
    };

    let mut stage = Stage {
        root: staging.clone(),
        used: HashSet::new(),
        bytes: 0,
    };
    let (manifest, mut stats) = assemble(ctx, &mut stage, pinned_env)?;

    let manifest_path = staging.join(MANIFEST_FILE);
    let json = manifest.to_json();
    std::fs::write(&manifest_path, &json).map_err(io_err(&manifest_path))?;
    stats.bytes = stage.bytes + json.len() as u64;

    swap_in(&staging, out_dir)?;
    guard.committed = true;
    Ok((manifest, stats))
}

/// Refuses to replace a directory that is not a Ferry bundle (the swap deletes the old one).
fn check_out_dir(out_dir: &Path) -> Result<(), BuildError> {
    match std::fs::read_dir(out_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() && !out_dir.join(MANIFEST_FILE).is_file() {
                return Err(BuildError::OutDirNotBundle(out_dir.to_path_buf()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(BuildError::OutDirNotBundle(out_dir.to_path_buf()))
        }
        Err(source) => Err(BuildError::Io {
            path: out_dir.to_path_buf(),
            source,
        }),
    }
}

/// Moves the finished staging dir to `out_dir`. The old bundle is renamed aside first and only
/// deleted after the new one is in place, so readers see either bundle, never a half one.
fn swap_in(staging: &Path, out_dir: &Path) -> Result<(), BuildError> {
    if out_dir.exists() {
        let old = out_dir.with_file_name(format!(
            ".{}.old-{}",
            out_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            crate::ids::random_id()?
        ));
        std::fs::rename(out_dir, &old).map_err(io_err(out_dir))?;
        if let Err(source) = std::fs::rename(staging, out_dir) {
            // Put the previous bundle back rather than leave nothing.
            let _ = std::fs::rename(&old, out_dir);
            return Err(BuildError::Io {
                path: out_dir.to_path_buf(),
                source,
            });
        }
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(staging, out_dir).map_err(io_err(out_dir))?;
    }
    Ok(())
}

fn assemble(
    ctx: &AdapterContext,
    stage: &mut Stage,
    pinned_env: BTreeMap<String, String>,
) -> Result<(Manifest, BundleStats), BuildError> {
    let config = runtime_config(&ctx.config)?;
    let routing = ctx
        .routing()
        .map_err(|e| BuildError::Invalid(format!("adapter routing: {e}")))?;
    let is_export = ctx.config.get("output").and_then(|v| v.as_str()) == Some("export");
    let deployment_id = ctx
        .config
        .get("deploymentId")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);

    let mut stats = BundleStats::default();
    let mut manifest = Manifest {
        version: MANIFEST_VERSION,
        ferry_version: env!("CARGO_PKG_VERSION").to_string(),
        next_version: ctx.next_version.clone(),
        kind: if is_export {
            BundleKind::StaticExport
        } else {
            BundleKind::Server
        },
        build_id: ctx.build_id.clone(),
        deployment_id,
        config,
        routing,
        functions: Vec::new(),
        middleware: None,
        prerenders: Vec::new(),
        static_files: Vec::new(),
        server: None,
    };

    if is_export {
        manifest.static_files = export_static_files(ctx, stage, &manifest.config.base_path)?;
    } else {
        stats.server_files = copy_server_files(ctx, stage)?;
        manifest.functions = functions(ctx)?;
        manifest.middleware = middleware(ctx)?;
        manifest.prerenders = prerenders(ctx, stage)?;
        manifest.static_files = server_static_files(ctx, stage, &manifest.config.base_path)?;
        let project = repo_relative(&ctx.repo_root, &ctx.project_dir)?;
        let dist = ctx
            .dist_dir
            .strip_prefix(&ctx.project_dir)
            .map(slash_path)
            .map_err(|_| {
                BuildError::Invalid(format!(
                    "distDir {} is outside the project {}",
                    ctx.dist_dir.display(),
                    ctx.project_dir.display()
                ))
            })?;
        manifest.server = Some(ServerLayout {
            project_dir: if project.is_empty() {
                "server".into()
            } else {
                format!("server/{project}")
            },
            dist_dir: dist,
            env: pinned_env,
        });
    }
    let (precompressed, packed_bytes) = precompress(stage, &mut manifest.static_files)?;
    stats.precompressed = precompressed;
    stage.bytes += packed_bytes;
    stats.functions = manifest.functions.len();
    stats.prerenders = manifest.prerenders.len();
    stats.static_files = manifest.static_files.len();
    Ok((manifest, stats))
}

/// The runtime subset of `next.config`.
fn runtime_config(cfg: &serde_json::Value) -> Result<RuntimeConfig, BuildError> {
    let flag = |k: &str| cfg.get(k).and_then(|v| v.as_bool());
    let experimental = |k: &str| {
        cfg.get("experimental")
            .and_then(|e| e.get(k))
            .and_then(|v| v.as_bool())
    };
    let i18n = match cfg.get("i18n") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value(v.clone())
                .map_err(|e| BuildError::Invalid(format!("next.config i18n: {e}")))?,
        ),
    };
    Ok(RuntimeConfig {
        base_path: cfg
            .get("basePath")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        trailing_slash: flag("trailingSlash").unwrap_or(false),
        skip_trailing_slash_redirect: flag("skipTrailingSlashRedirect").unwrap_or(false),
        skip_middleware_url_normalize: flag("skipProxyUrlNormalize")
            .or(flag("skipMiddlewareUrlNormalize"))
            .or(experimental("skipMiddlewareUrlNormalize"))
            .unwrap_or(false),
        i18n,
        compress: flag("compress").unwrap_or(true),
        powered_by_header: flag("poweredByHeader").unwrap_or(true),
        generate_etags: flag("generateEtags").unwrap_or(true),
        images: cfg
            .get("images")
            .cloned()
            .unwrap_or(serde_json::Value::Null),
        validate_rsc_request_headers: experimental("validateRSCRequestHeaders").unwrap_or(true),
        expire_time: cfg.get("expireTime").and_then(|v| v.as_u64()),
    })
}

/// `path` relative to `root`, with `/` separators; an error if it is outside `root`.
fn repo_relative(root: &Path, path: &Path) -> Result<String, BuildError> {
    path.strip_prefix(root)
        .map(slash_path)
        .map_err(|_| BuildError::OutsideRepo {
            path: path.to_path_buf(),
            root: root.to_path_buf(),
        })
}

/// A relative path with `/` separators.
fn slash_path(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Checks a repo-relative key from the adapter cannot escape the bundle.
fn safe_relative(key: &str) -> bool {
    !key.is_empty()
        && Path::new(key)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Copies everything the Node side needs under `server/`, keeping the repo-relative layout.
fn copy_server_files(ctx: &AdapterContext, stage: &mut Stage) -> Result<usize, BuildError> {
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let add_abs = |abs: &Path, files: &mut BTreeMap<String, PathBuf>| {
        let rel = repo_relative(&ctx.repo_root, abs)?;
        files.insert(rel, abs.to_path_buf());
        Ok::<(), BuildError>(())
    };
    let add_traced = |key: &String, abs: &PathBuf, files: &mut BTreeMap<String, PathBuf>| {
        if !safe_relative(key) {
            return Err(BuildError::OutsideRepo {
                path: abs.clone(),
                root: ctx.repo_root.clone(),
            });
        }
        files.insert(key.clone(), abs.clone());
        Ok(())
    };
    // What the worker bridge itself loads (no entrypoint traces it).
    for (key, abs) in &ctx.runtime_files {
        add_traced(key, abs, &mut files)?;
    }
    for f in ctx.outputs.all_functions() {
        for (key, abs) in &f.assets {
            add_traced(key, abs, &mut files)?;
        }
        add_abs(&f.file_path, &mut files)?;
        for abs in f.wasm_assets.values() {
            add_abs(abs, &mut files)?;
        }
        if let Some(edge) = &f.edge_runtime {
            add_abs(&edge.module_path, &mut files)?;
        }
    }
    // What the runtime reads beside the traced files: the top-level manifests, BUILD_ID,
    // required-server-files.json, everything under `.next/server` (manifests, route-cache seeds,
    // `_global-error`, `_app`/`_document`, rsc-fallback.json). Source maps and trace files are
    // left out: the runtime does not read them.
    let dist = &ctx.dist_dir;
    for entry in std::fs::read_dir(dist).map_err(io_err(dist))? {
        let entry = entry.map_err(io_err(dist))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_file() && !name.starts_with("trace") && !name.ends_with(".map") {
            add_abs(&path, &mut files)?;
        }
    }
    let server_dir = dist.join("server");
    if server_dir.is_dir() {
        for entry in walkdir::WalkDir::new(&server_dir).follow_links(true) {
            let entry = entry.map_err(|e| walk_err(&server_dir, e))?;
            let name = entry.file_name().to_string_lossy();
            if entry.file_type().is_file()
                && !name.ends_with(".map")
                && !name.ends_with(".nft.json")
            {
                add_abs(entry.path(), &mut files)?;
            }
        }
    }
    // `next start` loads these from the project dir at startup; the workers need them too.
    for name in ENV_FILES.iter().chain(&["package.json"]) {
        let p = ctx.project_dir.join(name);
        if p.is_file() {
            add_abs(&p, &mut files)?;
        }
    }

    let runtime_id = ctx.runtime_deployment_id().unwrap_or_default();
    for (rel, abs) in &files {
        let dest = stage.reserve(&format!("server/{rel}"));
        // pnpm (and workspaces) link packages into `node_modules`: the traces list the links and,
        // separately, the files they point to. The link is kept as a link, as Next's standalone
        // output does, so `require('next')` resolves in the bundle as in the app.
        if let Some(target) = link_within(&ctx.repo_root, abs)? {
            stage.symlink(&dest, &target)?;
            continue;
        }
        let rewritten = if abs.parent() == Some(dist.as_path()) {
            server_files_manifest_for_runtime(abs, &runtime_id)?
        } else {
            None
        };
        match rewritten {
            Some(bytes) => stage.write(&dest, &bytes)?,
            None => {
                stage.copy(abs, &dest)?;
            }
        }
    }
    Ok(files.len())
}

/// When `path` is a symbolic link to somewhere inside `root`: its target, relative to the link's
/// directory (so the bundle can move). `None` for anything else: a regular file, or a link
/// out of the repository (its content is copied; a directory there cannot be, and the copy
/// says so).
fn link_within(root: &Path, path: &Path) -> Result<Option<PathBuf>, BuildError> {
    let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
    if !meta.file_type().is_symlink() {
        return Ok(None);
    }
    let target = std::fs::read_link(path).map_err(io_err(path))?;
    let Some(dir) = path.parent() else {
        return Ok(None);
    };
    let resolved = lexical_normalize(&dir.join(&target));
    let root = lexical_normalize(root);
    if !resolved.starts_with(&root) {
        return Ok(None);
    }
    Ok(Some(relative_path(&lexical_normalize(dir), &resolved)))
}

/// `path` with `.` and `..` components resolved without touching the file system.
fn lexical_normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The relative path from directory `from` to `to` (both absolute and normalized).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// `required-server-files.{json,js}` with `config.deploymentId` set to what the server sees at
/// runtime, when that differs from the build's value; `None` to copy the file as it is.
///
/// The entrypoints take `deploymentId` from this config (it decides `<html data-dpl-id>`, the
/// build id in RSC payloads, `x-nextjs-deployment-id`). `next start` instead re-reads
/// next.config without Ferry's adapter, so a deployment id Ferry pinned for the build is not
/// there; the workers must see the same.
fn server_files_manifest_for_runtime(
    path: &Path,
    runtime_id: &str,
) -> Result<Option<Vec<u8>>, BuildError> {
    const JS_PREFIX: &str = "self.__SERVER_FILES_MANIFEST=";
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let is_js = match name {
        "required-server-files.json" => false,
        "required-server-files.js" => true,
        _ => return Ok(None),
    };
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let json = if is_js {
        match text.trim().strip_prefix(JS_PREFIX) {
            Some(rest) => rest.trim_end().trim_end_matches(';'),
            None => return Ok(None),
        }
    } else {
        text.as_str()
    };
    // Key order matters: the entrypoints read this config as it is (see `ordered_json`).
    let Ok(mut value) = serde_json::from_str::<OrderedJson>(json) else {
        return Ok(None);
    };
    let Some(config) = value
        .get_mut("config")
        .filter(|c| matches!(c, OrderedJson::Object(_)))
    else {
        return Ok(None);
    };
    if config
        .get_mut("deploymentId")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        == runtime_id
    {
        return Ok(None);
    }
    config.insert("deploymentId", OrderedJson::Scalar(runtime_id.into()));
    let out = serde_json::to_string(&value)
        .map_err(|e| BuildError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(Some(if is_js {
        format!("{JS_PREFIX}{out}").into_bytes()
    } else {
        out.into_bytes()
    }))
}

fn walk_err(root: &Path, e: walkdir::Error) -> BuildError {
    let path = e.path().unwrap_or(root).to_path_buf();
    BuildError::Io {
        path,
        source: e.into(),
    }
}

fn function_kind(kind: &str) -> Option<FunctionKind> {
    Some(match kind {
        "PAGES" => FunctionKind::Pages,
        "PAGES_API" => FunctionKind::PagesApi,
        "APP_PAGE" => FunctionKind::AppPage,
        "APP_ROUTE" => FunctionKind::AppRoute,
        _ => return None,
    })
}

fn entry_path(ctx: &AdapterContext, f: &FunctionEntry) -> Result<String, BuildError> {
    Ok(format!(
        "server/{}",
        repo_relative(&ctx.repo_root, &f.file_path)?
    ))
}

fn functions(ctx: &AdapterContext) -> Result<Vec<FunctionOutput>, BuildError> {
    let o = &ctx.outputs;
    let mut out = Vec::new();
    for f in o
        .pages
        .iter()
        .chain(&o.pages_api)
        .chain(&o.app_pages)
        .chain(&o.app_routes)
    {
        let kind = function_kind(&f.kind).ok_or_else(|| {
            BuildError::Invalid(format!("output {} has unknown type {}", f.id, f.kind))
        })?;
        out.push(FunctionOutput {
            id: f.id.clone(),
            kind,
            pathname: f.pathname.clone(),
            source_page: f.source_page.clone(),
            entry: entry_path(ctx, f)?,
            runtime: f.runtime.clone(),
            max_duration: f.config.max_duration.map(|d| d.ceil() as u64),
        });
    }
    Ok(out)
}

fn middleware(ctx: &AdapterContext) -> Result<Option<MiddlewareOutput>, BuildError> {
    let Some(m) = &ctx.outputs.middleware else {
        return Ok(None);
    };
    let matchers = match &m.config.matchers {
        Some(ms) => ms.clone(),
        None => {
            ctx.routing_extra()
                .map_err(|e| BuildError::Invalid(format!("adapter middlewareMatchers: {e}")))?
                .middleware_matchers
        }
    };
    Ok(Some(MiddlewareOutput {
        entry: entry_path(ctx, m)?,
        runtime: m.runtime.clone(),
        matchers,
    }))
}

/// The bundle file name for a URL pathname: the pathname itself, plus the source file's
/// extension when the pathname has none (`/isr` + `isr.html` → `isr.html`, `/` → `index.html`).
fn pathname_file(pathname: &str, src: &Path) -> String {
    let mut segments: Vec<String> = pathname
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match s {
            // Never let a pathname climb out of its directory.
            "." | ".." => s.replace('.', "%2E"),
            _ => s.to_string(),
        })
        .collect();
    if segments.is_empty() || pathname.ends_with('/') {
        segments.push("index".into());
    }
    let last = segments.last_mut().map(|s| {
        let has_ext = s.rsplit_once('.').is_some_and(|(stem, _)| !stem.is_empty());
        (s, has_ext)
    });
    if let Some((last, false)) = last
        && let Some(ext) = src.extension()
    {
        last.push('.');
        last.push_str(&ext.to_string_lossy());
    }
    segments.join("/")
}

fn prerenders(ctx: &AdapterContext, stage: &mut Stage) -> Result<Vec<Prerender>, BuildError> {
    let mut out = Vec::new();
    for p in &ctx.outputs.prerenders {
        let seed = match &p.fallback {
            None => None,
            Some(fb) => {
                let file = match &fb.file_path {
                    Some(src) if src.is_file() => {
                        let rel = stage
                            .reserve(&format!("prerender/{}", pathname_file(&p.pathname, src)));
                        stage.copy(src, &rel)?;
                        Some(rel)
                    }
                    _ => None,
                };
                let revalidate = match &fb.initial_revalidate {
                    Some(serde_json::Value::Bool(b)) => Some(Revalidate::Never(*b)),
                    Some(v) => v
                        .as_f64()
                        .map(|s| Revalidate::Seconds(s.max(0.0).ceil() as u64)),
                    None => None,
                };
                Some(PrerenderSeed {
                    file,
                    status: fb.initial_status,
                    headers: fb.initial_headers.clone(),
                    revalidate,
                    expiration: fb.initial_expiration.map(|s| s.max(0.0).ceil() as u64),
                    postponed_state: fb.postponed_state.clone(),
                })
            }
        };
        out.push(Prerender {
            pathname: p.pathname.clone(),
            parent_output_id: p.parent_output_id.clone(),
            group_id: p.group_id,
            route: p.route.clone(),
            seed,
            parent_fallback_mode: p.parent_fallback_mode.clone(),
            allow_query: p.config.allow_query.clone(),
            allow_header: p.config.allow_header.clone(),
            bypass_for: p.config.bypass_for.clone(),
            bypass_token: p.config.bypass_token.clone(),
            rendering_mode: p.config.rendering_mode.clone(),
        });
    }
    Ok(out)
}

/// `basePath` + `pathname` (`/docs` for `/` is `/docs`, as next's router names the root).
fn with_base(pathname: &str, base: &str) -> String {
    match (base.is_empty(), pathname) {
        (true, _) => pathname.to_owned(),
        (false, "/") => base.to_owned(),
        _ => format!("{base}{pathname}"),
    }
}

/// Strips `basePath` from an adapter pathname (for the bundle's file names, and for static
/// exports, whose `out/` directory is the site without its basePath).
fn strip_base<'a>(pathname: &'a str, base: &str) -> &'a str {
    if base.is_empty() {
        return pathname;
    }
    match pathname.strip_prefix(base) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => pathname,
    }
}

fn static_file(
    stage: &mut Stage,
    src: &Path,
    rel: &str,
    pathname: String,
    source: StaticSource,
    content_type: String,
    immutable_hash: Option<String>,
) -> Result<StaticFile, BuildError> {
    let file = stage.reserve(rel);
    let (size, hash) = stage.copy_hashed(src, &file)?;
    Ok(StaticFile {
        pathname,
        file,
        source,
        content_type,
        size,
        hash,
        immutable_hash,
        encodings: Vec::new(),
    })
}

/// Files of `dir` (following symlinks) as `(absolute, slash-relative)` pairs, sorted.
fn walk_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, BuildError> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| walk_err(dir, e))?;
        if entry.file_type().is_file() {
            let rel = entry
                .path()
                .strip_prefix(dir)
                .map(slash_path)
                .unwrap_or_default();
            out.push((entry.path().to_path_buf(), rel));
        }
    }
    Ok(out)
}

fn server_static_files(
    ctx: &AdapterContext,
    stage: &mut Stage,
    base: &str,
) -> Result<Vec<StaticFile>, BuildError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    // Pathnames keep the basePath, like every other manifest pathname (functions, prerenders,
    // routing regexes): the router matches them against basePath-prefixed URLs.
    let adapter_static: BTreeMap<String, &StaticFileEntry> = ctx
        .outputs
        .static_files
        .iter()
        .map(|s| (with_base(strip_base(&s.pathname, base), base), s))
        .collect();
    let build_dir_prefix = format!("{}/", ctx.build_id);

    // `.next/static/**` → `<basePath>/_next/static/**`, immutable like `next start` serves them.
    for (abs, rel) in walk_files(&ctx.dist_dir.join("static"))? {
        let pathname = format!("{base}/_next/static/{rel}");
        let immutable = adapter_static
            .get(pathname.as_str())
            .and_then(|s| s.immutable_hash.clone());
        let content_type = content::content_type_for(&rel);
        let mut file = static_file(
            stage,
            &abs,
            &format!("static/_next/static/{rel}"),
            pathname.clone(),
            StaticSource::NextStatic,
            content_type,
            immutable,
        )?;
        // Turbopack names chunks and media after their content; the build-id directory is
        // per-build. Either way the URL never changes meaning, so the content hash stands in.
        if file.immutable_hash.is_none() && !rel.starts_with(&build_dir_prefix) {
            file.immutable_hash = Some(file.hash.clone());
        }
        seen.insert(pathname);
        out.push(file);
    }

    // Other adapter outputs: `/404`, `/500`, rsc fallbacks, auto-static pages.
    for (pathname, s) in &adapter_static {
        if seen.contains(pathname) {
            continue;
        }
        let unbased = strip_base(pathname, base);
        let (source, rel, content_type) = if let Some(rel) = unbased.strip_prefix("/_next/static/")
        {
            (
                StaticSource::NextStatic,
                format!("static/_next/static/{rel}"),
                content::content_type_for(rel),
            )
        } else {
            (
                StaticSource::Output,
                format!("outputs/{}", pathname_file(unbased, &s.file_path)),
                content::content_type_for_output(unbased, &s.file_path),
            )
        };
        out.push(static_file(
            stage,
            &s.file_path,
            &rel,
            pathname.clone(),
            source,
            content_type,
            s.immutable_hash.clone(),
        )?);
        seen.insert(pathname.clone());
    }

    // `public/` is not in the adapter outputs: `next start` serves it from the project dir,
    // under the basePath.
    for (abs, rel) in walk_files(&ctx.project_dir.join("public"))? {
        let pathname = format!("{base}/{rel}");
        if seen.contains(&pathname) {
            continue;
        }
        out.push(static_file(
            stage,
            &abs,
            &format!("public/{rel}"),
            pathname.clone(),
            StaticSource::Public,
            content::content_type_for(&rel),
            None,
        )?);
        seen.insert(pathname);
    }
    Ok(out)
}

/// `output: 'export'`: the exported `out/` directory is the whole site. The adapter names most
/// of its files (`/about` → `out/about.html`, `/index` → `out/index.html`); files it does not
/// name are added under their own path.
fn export_static_files(
    ctx: &AdapterContext,
    stage: &mut Stage,
    base: &str,
) -> Result<Vec<StaticFile>, BuildError> {
    let out_dir = ctx.project_dir.join("out");
    if !out_dir.is_dir() {
        return Err(BuildError::Invalid(format!(
            "`output: 'export'` build left no {} directory",
            out_dir.display()
        )));
    }
    let public = ctx.project_dir.join("public");
    let classify = |rel: &str| {
        if rel.starts_with("_next/static/") {
            (StaticSource::NextStatic, format!("static/{rel}"))
        } else if public.join(rel).is_file() {
            (StaticSource::Public, format!("public/{rel}"))
        } else {
            (StaticSource::Output, format!("outputs/{rel}"))
        }
    };
    let mut out = Vec::new();
    let mut covered = BTreeSet::new();
    let mut add = |stage: &mut Stage,
                   abs: &Path,
                   rel: &str,
                   pathname: &str,
                   immutable: Option<String>|
     -> Result<(), BuildError> {
        let (source, dest) = classify(rel);
        let content_type = match source {
            StaticSource::Output => content::content_type_for_output(pathname, abs),
            _ => content::content_type_for(rel),
        };
        let mut file = static_file(
            stage,
            abs,
            &dest,
            pathname.to_string(),
            source,
            content_type,
            immutable,
        )?;
        if source == StaticSource::NextStatic && file.immutable_hash.is_none() {
            file.immutable_hash = Some(file.hash.clone());
        }
        out.push(file);
        Ok(())
    };
    for s in &ctx.outputs.static_files {
        let Ok(rel) = s.file_path.strip_prefix(&out_dir) else {
            continue;
        };
        let rel = slash_path(rel);
        // The adapter names the home page `/index`; it is served at `/`.
        let pathname = match strip_base(&s.pathname, base) {
            "/index" => "/",
            other => other,
        };
        add(
            stage,
            &s.file_path,
            &rel,
            pathname,
            s.immutable_hash.clone(),
        )?;
        covered.insert(rel);
    }
    for (abs, rel) in walk_files(&out_dir)? {
        if !covered.contains(&rel) {
            add(stage, &abs, &rel, &format!("/{rel}"), None)?;
        }
    }
    Ok(out)
}

/// Writes `<file>.br` / `<file>.gz` for compressible files above the size floor, on every core.
fn precompress(stage: &Stage, files: &mut [StaticFile]) -> Result<(usize, u64), BuildError> {
    let todo: Vec<usize> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            f.size > content::MIN_COMPRESS_SIZE && content::is_compressible(&f.content_type)
        })
        .map(|(i, _)| i)
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Vec<Encoding>, u64)>> = Mutex::new(Vec::new());
    let first_error: Mutex<Option<BuildError>> = Mutex::new(None);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let paths: Vec<PathBuf> = todo.iter().map(|&i| stage.abs(&files[i].file)).collect();

    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(k) else { break };
                    match compress_one(path) {
                        Ok((encs, bytes)) => {
                            if let Ok(mut r) = results.lock() {
                                r.push((todo[k], encs, bytes));
                            }
                        }
                        Err(e) => {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let results = results.into_inner().unwrap_or_default();
    let (mut written, mut bytes) = (0, 0);
    for (i, encs, n) in results {
        written += encs.len();
        bytes += n;
        files[i].encodings = encs;
    }
    Ok((written, bytes))
}

fn compress_one(path: &Path) -> Result<(Vec<Encoding>, u64), BuildError> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    let variants = content::variants(&data).map_err(io_err(path))?;
    let mut encs = Vec::new();
    let mut bytes = 0;
    for (enc, packed) in variants {
        let mut name = path.as_os_str().to_owned();
        name.push(enc.suffix());
        let dst = PathBuf::from(name);
        std::fs::write(&dst, &packed).map_err(io_err(&dst))?;
        bytes += packed.len() as u64;
        encs.push(enc);
    }
    Ok((encs, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_files_manifest_gets_the_runtime_deployment_id() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let json = dir.path().join("required-server-files.json");
        let js = dir.path().join("required-server-files.js");
        let body =
            r#"{"version":1,"config":{"deploymentId":"pinned","distDir":".next"},"files":[]}"#;
        std::fs::write(&json, body).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&js, format!("self.__SERVER_FILES_MANIFEST={body};\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let read = |b: Vec<u8>| -> serde_json::Value {
            let s = String::from_utf8(b).unwrap_or_default();
            let s = s
                .strip_prefix("self.__SERVER_FILES_MANIFEST=")
                .unwrap_or(&s)
                .to_string();
            serde_json::from_str(&s).unwrap_or_default()
        };
        let out = server_files_manifest_for_runtime(&json, "").unwrap_or_default();
        let v = read(out.unwrap_or_default());
        assert_eq!(v["config"]["deploymentId"], "");
        assert_eq!(v["config"]["distDir"], ".next");
        let out = server_files_manifest_for_runtime(&js, "other").unwrap_or_default();
        assert_eq!(
            read(out.unwrap_or_default())["config"]["deploymentId"],
            "other"
        );
        // Unchanged id, or another file: copied as is.
        assert!(matches!(
            server_files_manifest_for_runtime(&json, "pinned"),
            Ok(None)
        ));
        let other = dir.path().join("routes-manifest.json");
        std::fs::write(&other, body).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            server_files_manifest_for_runtime(&other, ""),
            Ok(None)
        ));
    }

    #[test]
    fn pathname_files() {
        let html = Path::new("/x/isr.html");
        assert_eq!(pathname_file("/", html), "index.html");
        assert_eq!(pathname_file("/isr", html), "isr.html");
        assert_eq!(pathname_file("/isr.rsc", Path::new("a.rsc")), "isr.rsc");
        assert_eq!(
            pathname_file("/legacy/ssr.rsc", Path::new("/x/rsc-fallback.json")),
            "legacy/ssr.rsc"
        );
        assert_eq!(
            pathname_file("/isr.segments/_tree.segment.rsc", Path::new("a.rsc")),
            "isr.segments/_tree.segment.rsc"
        );
        assert_eq!(
            pathname_file("/../../etc/passwd", html),
            "%2E%2E/%2E%2E/etc/passwd.html"
        );
    }

    #[test]
    fn strips_base_path() {
        assert_eq!(
            strip_base("/docs/_next/static/a.js", "/docs"),
            "/_next/static/a.js"
        );
        assert_eq!(strip_base("/docs", "/docs"), "/");
        assert_eq!(strip_base("/docsx", "/docs"), "/docsx");
        assert_eq!(strip_base("/a", ""), "/a");
        assert_eq!(
            with_base("/_next/static/a.js", "/docs"),
            "/docs/_next/static/a.js"
        );
        assert_eq!(with_base("/", "/docs"), "/docs");
        assert_eq!(with_base("/a", ""), "/a");
    }

    #[test]
    fn links_inside_the_repo_become_relative_links_and_others_are_copied() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("repo");
        let real = root.join("node_modules/.pnpm/next@16/node_modules/next");
        std::fs::create_dir_all(&real).expect("mkdir");
        let outside = dir.path().join("elsewhere");
        std::fs::create_dir_all(&outside).expect("mkdir");
        let nm = root.join("node_modules");
        std::os::unix::fs::symlink(".pnpm/next@16/node_modules/next", nm.join("next"))
            .expect("relative link");
        std::os::unix::fs::symlink(&real, nm.join("abs")).expect("absolute link");
        std::os::unix::fs::symlink(&outside, nm.join("out")).expect("outside link");
        std::os::unix::fs::symlink("../../repo/node_modules/.pnpm", nm.join("dotdot"))
            .expect("dot-dot link");
        let link = |name: &str| link_within(&root, &nm.join(name)).expect("link_within");
        assert_eq!(
            link("next"),
            Some(PathBuf::from(".pnpm/next@16/node_modules/next"))
        );
        assert_eq!(
            link("abs"),
            Some(PathBuf::from(".pnpm/next@16/node_modules/next"))
        );
        assert_eq!(link("out"), None);
        assert_eq!(link("dotdot"), Some(PathBuf::from(".pnpm")));
        assert_eq!(link(".pnpm"), None, "a real directory is not a link");
        assert_eq!(
            relative_path(Path::new("/a/b/c"), Path::new("/a/x/y")),
            PathBuf::from("../../x/y")
        );
    }

    #[test]
    fn unsafe_keys_are_rejected() {
        assert!(safe_relative("node_modules/next/package.json"));
        assert!(!safe_relative("../outside.js"));
        assert!(!safe_relative("/etc/passwd"));
        assert!(!safe_relative(""));
    }

    #[test]
    fn refuses_to_replace_a_directory_that_is_not_a_bundle() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("important");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("notes.txt"), "keep me").expect("write");
        assert!(matches!(
            check_out_dir(&dir),
            Err(BuildError::OutDirNotBundle(_))
        ));
        std::fs::write(dir.join(MANIFEST_FILE), "{}").expect("write");
        assert!(check_out_dir(&dir).is_ok());
        assert!(check_out_dir(&tmp.path().join("absent")).is_ok());
    }

    #[test]
    fn swap_replaces_the_old_bundle_whole() {
        let tmp = tempfile::tempdir().expect("tmp");
        let out = tmp.path().join(".ferry");
        std::fs::create_dir(&out).expect("mkdir");
        std::fs::write(out.join("old-only"), "x").expect("write");
        let staging = tmp.path().join(".ferry.tmp");
        std::fs::create_dir(&staging).expect("mkdir");
        std::fs::write(staging.join(MANIFEST_FILE), "{}").expect("write");
        swap_in(&staging, &out).expect("swap");
        assert!(out.join(MANIFEST_FILE).is_file());
        assert!(!out.join("old-only").exists());
        assert!(!staging.exists());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "old bundle removed");
    }
}

//! Real `next build`s of throwaway copies of examples/showcase and tests/fixtures/export-app.
//!
//! Builds are slow (~10-20 s each), so the showcase is built twice once (in a `OnceLock`) and
//! every showcase test reads those results; real builds never run concurrently (`BUILD_LOCK`).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ferry_build::{BuildError, BuildOptions, BuildReport, build};
use ferry_manifest::{BundleKind, Encoding, FunctionKind, Manifest, Revalidate, StaticSource};
use sha2::{Digest as _, Sha256};

/// Serializes real builds: the machine has two cores.
static BUILD_LOCK: Mutex<()> = Mutex::new(());
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// Port for the HTTP check of the moved bundle (range 4450-4499).
const PORT: u16 = 4452;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Copies an app dir (node_modules included) with `cp -a`, dropping build leftovers.
fn copy_app(src: &Path, dst: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("cp runs");
    assert!(
        status.success(),
        "cp -a {} {}",
        src.display(),
        dst.display()
    );
    for leftover in [".next", ".ferry", "out"] {
        let _ = std::fs::remove_dir_all(dst.join(leftover));
    }
}

fn locked_build(opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    build(opts)
}

fn opts(app: &Path, env: &[(&str, &str)]) -> BuildOptions {
    let mut env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Keep the caller's environment from pinning ids the tests expect to be generated.
    for k in [
        "FERRY_BUILD_ID",
        "FERRY_DEPLOYMENT_ID",
        "NEXT_DEPLOYMENT_ID",
        "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY",
    ] {
        env.entry(k.to_string()).or_default();
    }
    BuildOptions {
        env,
        timeout: Some(BUILD_TIMEOUT),
        ..BuildOptions::new(app)
    }
}

struct Showcase {
    _tmp: tempfile::TempDir,
    app: PathBuf,
    first: BuildReport,
    first_manifest: Manifest,
    first_key: String,
    second: BuildReport,
}

fn showcase() -> &'static Showcase {
    static SHOWCASE: OnceLock<Showcase> = OnceLock::new();
    SHOWCASE.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tmp");
        let app = tmp.path().join("showcase");
        copy_app(&repo_root().join("examples/showcase"), &app);

        let first = locked_build(&opts(&app, &[])).expect("first build");
        let first_manifest = Manifest::load(&first.bundle_dir).expect("first manifest");
        let first_key = read(&app.join(".next/cache/ferry/server-actions-key"))
            .trim()
            .to_string();
        let second = locked_build(&opts(&app, &[("FERRY_BUILD_ID", "ferry-test-build-2")]))
            .expect("second build");
        Showcase {
            _tmp: tmp,
            app,
            first,
            first_manifest,
            first_key,
            second,
        }
    })
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn showcase_manifest_has_the_expected_outputs() {
    let s = showcase();
    let m = Manifest::load(&s.second.bundle_dir).expect("manifest loads");
    let bundle = &s.second.bundle_dir;
    assert_eq!(m.kind, BundleKind::Server);
    assert_eq!(m.next_version, "16.4.6");
    assert_eq!(s.second.stats.functions, m.functions.len());

    let func = |p: &str| {
        m.functions
            .iter()
            .find(|f| f.pathname == p)
            .unwrap_or_else(|| panic!("function {p} missing"))
    };
    assert_eq!(func("/ssr").kind, FunctionKind::AppPage);
    assert_eq!(func("/ssr.rsc").kind, FunctionKind::AppPage);
    assert_eq!(func("/api/hello").kind, FunctionKind::AppRoute);
    assert_eq!(func("/api/legacy").kind, FunctionKind::PagesApi);
    assert_eq!(func("/legacy/ssr").kind, FunctionKind::Pages);
    assert_eq!(func("/ssr").entry, "server/.next/server/app/ssr/page.js");
    for f in &m.functions {
        assert_eq!(f.runtime, "nodejs");
        assert!(bundle.join(&f.entry).is_file(), "entry {}", f.entry);
    }

    let mw = m.middleware.as_ref().expect("proxy.js is the middleware");
    assert!(bundle.join(&mw.entry).is_file());
    assert!(
        mw.matchers
            .iter()
            .any(|x| x.source.as_deref() == Some("/ssr"))
    );

    let pr = |p: &str| {
        m.prerenders
            .iter()
            .find(|x| x.pathname == p)
            .unwrap_or_else(|| panic!("prerender {p} missing"))
    };
    let isr = pr("/isr").seed.as_ref().expect("isr seed");
    assert_eq!(isr.revalidate, Some(Revalidate::Seconds(5)));
    assert_eq!(isr.expiration, Some(31_536_000));
    assert!(isr.headers.contains_key("x-next-cache-tags"));
    let isr_html = read(&bundle.join(isr.file.as_ref().expect("isr file")));
    assert!(isr_html.contains("<html"), "seed is the prerendered HTML");
    let home = pr("/").seed.as_ref().expect("home seed");
    assert_eq!(home.revalidate.and_then(Revalidate::seconds), None);
    let blog = pr("/blog/[slug]");
    assert!(blog.seed.is_none(), "blocking fallback has no seed");
    assert_eq!(
        blog.allow_query.as_deref(),
        Some(&["nxtPslug".to_string()][..])
    );
    assert!(pr("/blog/hello").seed.is_some());
    assert!(pr("/isr").bypass_token.is_some());
    let data = format!("/_next/data/{}/legacy/static.json", m.build_id);
    assert_eq!(
        pr(&data).seed.as_ref().and_then(|x| x.revalidate),
        Some(Revalidate::Seconds(10))
    );
    for p in &m.prerenders {
        if let Some(file) = p.seed.as_ref().and_then(|x| x.file.as_ref()) {
            assert!(bundle.join(file).is_file(), "seed {file}");
        }
    }

    assert!(!m.routing.before_middleware.is_empty());
    assert_eq!(m.routing.after_files.len(), 1);
    assert!(m.routing.should_normalize_next_data);
    assert!(m.config.compress && m.config.powered_by_header && m.config.generate_etags);
    assert_eq!(m.config.expire_time, Some(31_536_000));
    assert_eq!(m.config.images["minimumCacheTTL"], 14400);

    let server = m.server.as_ref().expect("server layout");
    assert_eq!(server.project_dir, "server");
    assert_eq!(server.dist_dir, ".next");
    let dist = bundle.join(&server.project_dir).join(&server.dist_dir);
    for f in [
        "BUILD_ID",
        "required-server-files.json",
        "routes-manifest.json",
        "prerender-manifest.json",
        "build-manifest.json",
        "server/server-reference-manifest.json",
        "server/rsc-fallback.json",
    ] {
        assert!(dist.join(f).is_file(), "{f} copied");
    }
    assert!(dist.join("server/route-cache").is_dir());
    assert!(bundle.join("server/package.json").is_file());
}

#[test]
fn showcase_static_files_are_hashed_typed_and_precompressed() {
    let s = showcase();
    let m = Manifest::load(&s.second.bundle_dir).expect("manifest loads");
    let bundle = &s.second.bundle_dir;
    let mut compressed = 0;
    for f in &m.static_files {
        let body = std::fs::read(bundle.join(&f.file)).expect("static file");
        assert_eq!(body.len() as u64, f.size, "{}", f.pathname);
        assert_eq!(sha256(&body), f.hash, "{}", f.pathname);
        for enc in &f.encodings {
            let packed =
                std::fs::read(bundle.join(format!("{}{}", f.file, enc.suffix()))).expect("variant");
            assert!(packed.len() < body.len(), "{} {enc:?} smaller", f.pathname);
            let mut back = Vec::new();
            match enc {
                Encoding::Br => {
                    brotli::Decompressor::new(&packed[..], 4096)
                        .read_to_end(&mut back)
                        .expect("brotli");
                }
                Encoding::Gzip => {
                    flate2::read::GzDecoder::new(&packed[..])
                        .read_to_end(&mut back)
                        .expect("gzip");
                }
            }
            assert_eq!(back, body, "{} {enc:?} round-trips", f.pathname);
            compressed += 1;
        }
        if f.size <= 1024 {
            assert!(
                f.encodings.is_empty(),
                "{} is too small to compress",
                f.pathname
            );
        }
    }
    assert!(compressed > 10, "chunks got precompressed variants");

    let chunks: Vec<_> = m
        .static_files
        .iter()
        .filter(|f| f.pathname.starts_with("/_next/static/chunks/"))
        .collect();
    assert!(!chunks.is_empty());
    for c in &chunks {
        assert_eq!(c.source, StaticSource::NextStatic);
        assert_eq!(c.content_type, "application/javascript; charset=UTF-8");
        assert_eq!(c.immutable_hash.as_deref(), Some(c.hash.as_str()));
        assert!(c.file.starts_with("static/_next/static/chunks/"));
    }
    let big = chunks.iter().max_by_key(|c| c.size).expect("a chunk");
    assert_eq!(big.encodings, vec![Encoding::Br, Encoding::Gzip]);

    let by_path = |p: &str| {
        m.static_files
            .iter()
            .find(|f| f.pathname == p)
            .unwrap_or_else(|| panic!("static {p} missing"))
    };
    let not_found = by_path("/404");
    assert_eq!(not_found.source, StaticSource::Output);
    assert_eq!(not_found.content_type, "text/html; charset=utf-8");
    assert_eq!(by_path("/legacy/ssr.rsc").content_type, "text/x-component");
}

#[test]
fn showcase_public_files_are_in_the_bundle() {
    let s = showcase();
    let m = Manifest::load(&s.second.bundle_dir).expect("manifest loads");
    for (pathname, content_type) in [
        ("/ferry.png", "image/png"),
        ("/robots.txt", "text/plain; charset=UTF-8"),
    ] {
        let f = m
            .static_files
            .iter()
            .find(|f| f.pathname == pathname)
            .unwrap_or_else(|| panic!("{pathname} missing"));
        assert_eq!(f.source, StaticSource::Public);
        assert_eq!(f.content_type, content_type);
        let original = std::fs::read(s.app.join("public").join(&pathname[1..])).expect("public");
        let copied = std::fs::read(s.second.bundle_dir.join(&f.file)).expect("copied");
        assert_eq!(original, copied);
    }
}

#[test]
fn showcase_ids_are_pinned_and_stable_across_builds() {
    let s = showcase();
    // First build: generated build id, deployment id = build id.
    let first = &s.first_manifest;
    assert_eq!(first.build_id.len(), 21, "{}", first.build_id);
    assert_eq!(
        first.deployment_id.as_deref(),
        Some(first.build_id.as_str())
    );
    assert_eq!(s.first.build_id, first.build_id);

    // Second build: FERRY_BUILD_ID pinned both ids; the Server Actions key was kept.
    let m = Manifest::load(&s.second.bundle_dir).expect("manifest loads");
    assert_eq!(m.build_id, "ferry-test-build-2");
    assert_eq!(m.deployment_id.as_deref(), Some("ferry-test-build-2"));
    let server = m.server.as_ref().expect("server");
    let dist = s.second.bundle_dir.join("server/.next");
    assert_eq!(read(&dist.join("BUILD_ID")).trim(), "ferry-test-build-2");
    // The build carries the pinned id (client assets use it)...
    let built: serde_json::Value =
        serde_json::from_str(&read(&s.app.join(".next/required-server-files.json"))).expect("json");
    assert_eq!(built["config"]["deploymentId"], "ferry-test-build-2");
    // ...but `next start` re-reads next.config without Ferry's adapter, so its server sees no
    // deployment id; the bundle's server config says the same.
    let rsf: serde_json::Value =
        serde_json::from_str(&read(&dist.join("required-server-files.json"))).expect("json");
    assert_eq!(rsf["config"]["deploymentId"], "");

    let key = read(&s.app.join(".next/cache/ferry/server-actions-key"));
    assert_eq!(key.trim(), s.first_key, "key persisted across builds");
    let refs: serde_json::Value =
        serde_json::from_str(&read(&dist.join("server/server-reference-manifest.json")))
            .expect("json");
    assert_eq!(refs["encryptionKey"], s.first_key.as_str());
    assert_eq!(
        server
            .env
            .get("NEXT_SERVER_ACTIONS_ENCRYPTION_KEY")
            .map(String::as_str),
        Some(s.first_key.as_str())
    );
    assert_eq!(
        server.env.get("NEXT_DEPLOYMENT_ID").map(String::as_str),
        None,
        "next start's server process sees no deployment id Ferry pinned"
    );

    // `.next/cache` survives builds, and the swap left no staging or old bundle behind.
    assert!(s.app.join(".next/cache").is_dir());
    let leftovers: Vec<String> = std::fs::read_dir(&s.app)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ferry."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(s.second.stats.bytes > 0 && s.second.total_time >= s.second.next_build_time);
}

/// Runs `node` with a time limit; returns (status ok, stdout, stderr).
fn node_with_timeout(cwd: &Path, args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut child = Command::new("node")
        .args(args)
        .current_dir(cwd)
        .env_remove("NODE_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.success(), out, err)
}

#[test]
fn showcase_bundle_runs_after_node_modules_is_deleted_and_the_bundle_moved() {
    let s = showcase();
    let moved_root = tempfile::tempdir().expect("tmp");
    let moved = moved_root.path().join("elsewhere");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&s.second.bundle_dir)
        .arg(&moved)
        .status()
        .expect("cp");
    assert!(status.success());
    // The builds are done (they ran inside `showcase()`), so the app's node_modules can go.
    std::fs::remove_dir_all(s.app.join("node_modules")).expect("delete node_modules");

    let m = Manifest::load(&moved).expect("moved manifest loads");
    let project = moved.join(&m.server.as_ref().expect("server").project_dir);
    let script = format!(
        r#"
const path = require('path');
const http = require('http');
const resolved = require.resolve('next/dist/server/node-environment', {{ paths: [process.cwd()] }});
if (!resolved.startsWith(process.cwd())) throw new Error('next resolved outside the bundle: ' + resolved);
require(resolved);
const entries = {{ '/ssr': {ssr:?}, '/api/hello': {hello:?}, '/api/legacy': {legacy:?} }};
const mods = {{}};
for (const [p, file] of Object.entries(entries)) {{
  mods[p] = require(path.resolve({bundle:?}, file));
  if (typeof mods[p].handler !== 'function') throw new Error(p + ' has no handler');
}}
const srv = http.createServer((req, res) => {{
  const m = mods[req.url.split('?')[0]];
  m.handler(req, res, {{ waitUntil: () => {{}}, requestMeta: {{}} }}).catch((e) => {{
    res.statusCode = 500; res.end(String(e && e.stack));
  }});
}});
srv.listen({port}, '127.0.0.1', async () => {{
  const out = {{}};
  for (const p of Object.keys(entries)) {{
    const r = await fetch('http://127.0.0.1:{port}' + p);
    out[p] = {{ status: r.status, body: (await r.text()).slice(0, 200) }};
  }}
  console.log(JSON.stringify(out));
  srv.close();
  process.exit(0);
}});
"#,
        ssr = entry(&m, "/ssr"),
        hello = entry(&m, "/api/hello"),
        legacy = entry(&m, "/api/legacy"),
        bundle = moved.to_string_lossy(),
        port = PORT,
    );
    let (ok, out, err) = node_with_timeout(&project, &["-e", &script], Duration::from_secs(60));
    assert!(ok, "node failed:\n{out}\n{err}");
    let results: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);

    // What the worker bridge loads beyond the entrypoints resolves inside the moved bundle too,
    // and Next's image optimizer runs there with the app's sharp (native @img packages).
    let optimized = run_bundled_image_optimizer(&moved, &project);
    assert_eq!(optimized["contentType"], "image/webp", "{optimized}");
    assert_eq!(optimized["error"], serde_json::Value::Null, "{optimized}");
    assert!(
        optimized["width"].as_u64() == Some(16),
        "resized by sharp: {optimized}"
    );
    assert_eq!(results["/ssr"]["status"], 200, "{results}");
    assert_eq!(results["/api/hello"]["status"], 200, "{results}");
    assert!(
        results["/api/hello"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("\"hello\":\"world\"")),
        "{results}"
    );
    assert_eq!(results["/api/legacy"]["status"], 200, "{results}");
}

/// Runs, with cwd `project` inside the bundle at `bundle`, what the worker bridge does at start
/// and for `/_next/image`: resolves its modules the way it does (from the project dir, each must
/// land inside the bundle), loads `.env` files with `@next/env`, and runs Next's `imageOptimizer`
/// on the bundle's `public/ferry.png` asking for a 16 px WebP. Returns the result's content type,
/// byte-equality with the input, width (when sharp can read it back) and error message.
fn run_bundled_image_optimizer(bundle: &Path, project: &Path) -> serde_json::Value {
    let script = format!(
        r#"
const path = require('path');
const fs = require('fs');
const {{ createRequire }} = require('module');
const bundle = fs.realpathSync({bundle:?});
const projectRequire = createRequire(path.join(process.cwd(), 'package.json'));
for (const id of ['@next/env', 'next/dist/server/node-environment', 'next/dist/server/image-optimizer',
                  'next/dist/server/response-cache', 'next/dist/server/route-kind', 'next/dist/server/serve-static']) {{
  const file = fs.realpathSync(projectRequire.resolve(id));
  if (!file.startsWith(bundle + path.sep)) throw new Error(id + ' resolved outside the bundle: ' + file);
}}
projectRequire('@next/env').loadEnvConfig(process.cwd(), false, {{ info() {{}}, error: console.error }}, true);
const optimizer = projectRequire('next/dist/server/image-optimizer');
const rsf = JSON.parse(fs.readFileSync(path.join(process.cwd(), '.next/required-server-files.json'), 'utf8'));
const input = fs.readFileSync(path.join(bundle, 'public/ferry.png'));
(async () => {{
  const out = await optimizer.imageOptimizer(
    {{ buffer: input, contentType: 'image/png', cacheControl: null, etag: 'x' }},
    {{ href: '/ferry.png', quality: 75, width: 16, mimeType: 'image/webp', isAbsolute: false, isStatic: false }},
    rsf.config, {{ isDev: false, silent: true }});
  let width = null;
  let sharpFile = null;
  try {{
    sharpFile = fs.realpathSync(projectRequire.resolve('sharp'));
    if (!sharpFile.startsWith(bundle + path.sep)) throw new Error('sharp resolved outside the bundle: ' + sharpFile);
    width = (await projectRequire('sharp')(out.buffer).metadata()).width;
  }} catch (e) {{
    if (e.code !== 'MODULE_NOT_FOUND') throw e;
  }}
  console.log(JSON.stringify({{
    contentType: out.contentType, unchanged: Buffer.compare(out.buffer, input) === 0, width,
    sharp: sharpFile !== null, error: out.error ? String(out.error.message) : null,
  }}));
}})().catch((e) => {{ console.error(e); process.exit(1); }});
"#,
        bundle = bundle.to_string_lossy(),
    );
    let (ok, out, err) = node_with_timeout(project, &["-e", &script], Duration::from_secs(60));
    assert!(ok, "node failed:\n{out}\n{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
}

/// Without `sharp` (an optional dependency of next) the image optimizer is still bundled and
/// behaves as under `next start` without sharp: the original image is served as it is.
#[test]
fn bundle_without_sharp_keeps_the_image_optimizer() {
    let tmp = tempfile::tempdir().expect("tmp");
    let app = tmp.path().join("no-sharp");
    copy_app(&repo_root().join("examples/showcase"), &app);
    let modules = app.join("node_modules");
    let _ = std::fs::remove_dir_all(modules.join("sharp"));
    for entry in std::fs::read_dir(modules.join("@img"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("sharp-") {
            std::fs::remove_dir_all(entry.path()).expect("remove @img/sharp-*");
        }
    }
    let report = locked_build(&opts(&app, &[])).expect("build without sharp");
    let server = report.bundle_dir.join("server");
    assert!(
        server
            .join("node_modules/next/dist/server/image-optimizer.js")
            .is_file()
    );
    assert!(
        server
            .join("node_modules/@next/env/dist/index.js")
            .is_file()
    );
    assert!(!server.join("node_modules/sharp").exists());

    let moved = tmp.path().join("moved");
    std::fs::rename(&report.bundle_dir, &moved).expect("move the bundle");
    std::fs::remove_dir_all(&modules).expect("delete node_modules");
    let m = Manifest::load(&moved).expect("manifest");
    let project = moved.join(&m.server.as_ref().expect("server").project_dir);
    let optimized = run_bundled_image_optimizer(&moved, &project);
    assert_eq!(optimized["sharp"], false, "{optimized}");
    assert_eq!(optimized["unchanged"], true, "{optimized}");
    assert_eq!(optimized["contentType"], "image/png", "{optimized}");
    assert!(
        optimized["error"]
            .as_str()
            .is_some_and(|e| e.contains("sharp")),
        "{optimized}"
    );
}

fn entry(m: &Manifest, pathname: &str) -> String {
    m.functions
        .iter()
        .find(|f| f.pathname == pathname)
        .map(|f| f.entry.clone())
        .unwrap_or_else(|| panic!("{pathname} missing"))
}

#[test]
fn not_a_next_app_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("package.json"), r#"{"name":"x"}"#).expect("write");
    let err = build(&BuildOptions::new(tmp.path())).expect_err("not an app");
    assert!(matches!(err, BuildError::NotNextApp { .. }), "{err}");
    assert_ne!(err.exit_code(), 0);
    assert!(!tmp.path().join(".ferry").exists());
}

#[test]
fn missing_next_says_to_install() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("package.json"),
        r#"{"dependencies":{"next":"16.4.6"}}"#,
    )
    .expect("write");
    std::fs::create_dir(tmp.path().join("app")).expect("mkdir");
    let err = build(&BuildOptions::new(tmp.path())).expect_err("next missing");
    assert!(matches!(err, BuildError::NextNotInstalled { .. }), "{err}");
    assert!(err.to_string().contains("npm install"), "{err}");
}

#[test]
fn failing_next_build_keeps_its_exit_code_and_the_old_bundle() {
    let tmp = tempfile::tempdir().expect("tmp");
    let app = tmp.path().join("broken");
    copy_app(&repo_root().join("examples/showcase"), &app);
    std::fs::create_dir_all(app.join("app/broken")).expect("mkdir");
    std::fs::write(
        app.join("app/broken/page.js"),
        "export default function Broken( {\n  return <p>\n}\n",
    )
    .expect("write");
    // A previous bundle must survive a failed build untouched.
    std::fs::create_dir(app.join(".ferry")).expect("mkdir");
    std::fs::write(app.join(".ferry/manifest.json"), "previous").expect("write");

    let err = locked_build(&opts(&app, &[])).expect_err("syntax error fails the build");
    match err {
        BuildError::NextBuildFailed { code: Some(code) } => {
            assert_ne!(code, 0);
            assert_eq!(err.exit_code(), code);
        }
        other => panic!("unexpected error: {other}"),
    }
    assert_eq!(read(&app.join(".ferry/manifest.json")), "previous");
}

/// Installs the export fixture's node_modules from its lockfile when missing.
fn export_fixture() -> PathBuf {
    let dir = repo_root().join("tests/fixtures/export-app");
    if !dir.join("node_modules/next/dist/bin/next").is_file() {
        // scripts/npm-install.sh: `npm ci`, or `npm install` when the registry cannot serve every
        // optional platform package the lockfile would need.
        let mut child = Command::new("bash")
            .arg(repo_root().join("scripts/npm-install.sh"))
            .arg(&dir)
            .spawn()
            .expect("npm runs");
        let started = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                assert!(st.success(), "npm install failed in {}", dir.display());
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("npm ci timed out");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    dir
}

#[test]
fn export_app_becomes_a_static_export_bundle() {
    let fixture = export_fixture();
    let tmp = tempfile::tempdir().expect("tmp");
    let app = tmp.path().join("export-app");
    copy_app(&fixture, &app);
    let report = locked_build(&opts(&app, &[])).expect("export build");
    assert_eq!(report.kind, BundleKind::StaticExport);
    let m = Manifest::load(&report.bundle_dir).expect("manifest loads");
    assert_eq!(m.kind, BundleKind::StaticExport);
    assert!(m.server.is_none() && m.functions.is_empty() && m.prerenders.is_empty());
    let by_path = |p: &str| {
        m.static_files
            .iter()
            .find(|f| f.pathname == p)
            .unwrap_or_else(|| panic!("{p} missing"))
    };
    let about = by_path("/about");
    assert_eq!(about.content_type, "text/html; charset=utf-8");
    assert!(read(&report.bundle_dir.join(&about.file)).contains("About this static export"));
    let hello = by_path("/hello.txt");
    assert_eq!(hello.source, StaticSource::Public);
    assert_eq!(
        read(&report.bundle_dir.join(&hello.file)),
        "hello from public\n"
    );
    assert!(
        m.static_files
            .iter()
            .any(|f| f.source == StaticSource::NextStatic && !f.encodings.is_empty())
    );
    for f in &m.static_files {
        assert!(report.bundle_dir.join(&f.file).is_file(), "{}", f.file);
    }
}

//! Is this a Next.js app, and where is its `next`?

use std::path::{Path, PathBuf};

use crate::BuildError;

/// `next.config` file names Next.js loads.
pub const NEXT_CONFIG_FILES: &[&str] = &[
    "next.config.js",
    "next.config.mjs",
    "next.config.cjs",
    "next.config.ts",
    "next.config.mts",
    "next.config.cts",
];

/// A Next.js app ready to build.
#[derive(Debug, Clone)]
pub struct NextApp {
    /// Canonical app directory.
    pub dir: PathBuf,
    /// `node_modules/next/dist/bin/next` of the app (possibly hoisted to a parent directory).
    pub next_bin: PathBuf,
}

/// Checks `dir` is a Next.js app with `next` installed.
///
/// A Next.js app has a `package.json`, depends on `next` (or has a `next.config.*`), and has an
/// `app/` or `pages/` directory (optionally under `src/`).
pub fn detect(dir: &Path) -> Result<NextApp, BuildError> {
    let not_app = |reason: String| BuildError::NotNextApp {
        dir: dir.to_path_buf(),
        reason,
    };
    let dir = dir
        .canonicalize()
        .map_err(|e| not_app(format!("cannot open the directory: {e}")))?;
    if !dir.is_dir() {
        return Err(not_app("it is not a directory".into()));
    }
    let pkg_path = dir.join("package.json");
    let pkg = match std::fs::read_to_string(&pkg_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_app("there is no package.json".into()));
        }
        Err(source) => {
            return Err(BuildError::Io {
                path: pkg_path,
                source,
            });
        }
    };
    let pkg: serde_json::Value = serde_json::from_str(&pkg)
        .map_err(|e| not_app(format!("package.json is not valid JSON: {e}")))?;
    let depends_on_next = ["dependencies", "devDependencies", "peerDependencies"]
        .iter()
        .any(|k| pkg.get(k).and_then(|d| d.get("next")).is_some());
    let has_config = NEXT_CONFIG_FILES.iter().any(|f| dir.join(f).is_file());
    if !depends_on_next && !has_config {
        return Err(not_app(
            "package.json does not depend on `next` and there is no next.config.*".into(),
        ));
    }
    let has_routes = ["app", "pages", "src/app", "src/pages"]
        .iter()
        .any(|d| dir.join(d).is_dir());
    if !has_routes {
        return Err(not_app(
            "there is no app/ or pages/ directory (nor src/app, src/pages)".into(),
        ));
    }
    // Node resolves `next` from the app upwards (workspaces hoist it), so do the same.
    let next_bin = dir
        .ancestors()
        .map(|d| d.join("node_modules/next/dist/bin/next"))
        .find(|p| p.is_file())
        .ok_or_else(|| BuildError::NextNotInstalled {
            dir: dir.clone(),
            install: install_command(&dir),
        })?;
    Ok(NextApp { dir, next_bin })
}

/// The install command matching the app's lockfile.
fn install_command(dir: &Path) -> String {
    let has = |f: &str| dir.join(f).is_file();
    if has("pnpm-lock.yaml") {
        "pnpm install".into()
    } else if has("yarn.lock") {
        "yarn install".into()
    } else if has("bun.lock") || has("bun.lockb") {
        "bun install".into()
    } else if has("package-lock.json") {
        "npm ci` (or `npm install".into()
    } else {
        "npm install".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn rejects_dirs_that_are_not_next_apps() {
        let tmp = tempfile::tempdir().expect("tmp");
        let err = detect(tmp.path()).expect_err("no package.json");
        assert!(err.to_string().contains("no package.json"), "{err}");

        write(
            tmp.path(),
            "package.json",
            r#"{"dependencies":{"react":"19"}}"#,
        );
        let err = detect(tmp.path()).expect_err("no next");
        assert!(
            err.to_string().contains("does not depend on `next`"),
            "{err}"
        );

        write(
            tmp.path(),
            "package.json",
            r#"{"dependencies":{"next":"16"}}"#,
        );
        let err = detect(tmp.path()).expect_err("no routes");
        assert!(err.to_string().contains("no app/ or pages/"), "{err}");

        let err = detect(&tmp.path().join("missing")).expect_err("missing dir");
        assert!(matches!(err, BuildError::NotNextApp { .. }), "{err}");
    }

    #[test]
    fn asks_for_an_install_when_next_is_missing() {
        let tmp = tempfile::tempdir().expect("tmp");
        write(
            tmp.path(),
            "package.json",
            r#"{"dependencies":{"next":"16"}}"#,
        );
        write(tmp.path(), "package-lock.json", "{}");
        write(tmp.path(), "app/page.js", "export default () => null");
        let err = detect(tmp.path()).expect_err("next missing");
        let msg = err.to_string();
        assert!(matches!(err, BuildError::NextNotInstalled { .. }), "{msg}");
        assert!(msg.contains("npm ci"), "{msg}");

        write(tmp.path(), "node_modules/next/dist/bin/next", "");
        let app = detect(tmp.path()).expect("detected");
        assert!(app.next_bin.ends_with("node_modules/next/dist/bin/next"));
    }
}

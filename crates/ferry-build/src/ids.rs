//! The ids a build pins: build id, deployment id and the Server Actions encryption key.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::BuildError;

/// Env var with a caller-chosen build id.
pub const ENV_BUILD_ID: &str = "FERRY_BUILD_ID";
/// Env var with a caller-chosen deployment id.
pub const ENV_DEPLOYMENT_ID: &str = "FERRY_DEPLOYMENT_ID";
/// Next's own deployment id env var.
pub const ENV_NEXT_DEPLOYMENT_ID: &str = "NEXT_DEPLOYMENT_ID";
/// Next's Server Actions key env var.
pub const ENV_ACTIONS_KEY: &str = "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY";
/// Where the persisted Server Actions key lives, relative to the app dir. Inside `.next/cache`
/// because `next build` keeps that directory between builds.
pub const ACTIONS_KEY_FILE: &str = ".next/cache/ferry/server-actions-key";

/// nanoid's url-safe alphabet (64 symbols, so a byte masked to 6 bits picks one uniformly).
const ALPHABET: &[u8; 64] = b"ModuleSymbhasOwnPr-0123456789ABCDEFGHNRVfgctiUvz_KqYTJkLxpZXIjQW";

/// The ids pinned for one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedIds {
    /// Build id handed to `generateBuildId`.
    pub build_id: String,
    /// Deployment id handed to `deploymentId`.
    pub deployment_id: String,
    /// Server Actions key (base64 of 32 bytes).
    pub actions_key: String,
}

/// Fills `buf` with OS randomness.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), BuildError> {
    getrandom::fill(buf).map_err(|e| BuildError::Random(e.to_string()))
}

/// A fresh 21-character url-safe id (like Next's own nanoid build ids).
pub fn random_id() -> Result<String, BuildError> {
    loop {
        let mut bytes = [0u8; 21];
        random_bytes(&mut bytes)?;
        let id: String = bytes
            .iter()
            .map(|b| ALPHABET[usize::from(b & 63)] as char)
            .collect();
        // Next regenerates ids containing "ad" so ad blockers do not eat `_next/data` URLs.
        if !id.to_ascii_lowercase().contains("ad") {
            return Ok(id);
        }
    }
}

/// Resolves the ids from the environment (`env` looks a variable up), generating and persisting
/// what is missing.
pub fn resolve(
    app_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PinnedIds, BuildError> {
    let build_id = match non_empty(env(ENV_BUILD_ID)) {
        Some(id) => id,
        None => random_id()?,
    };
    let deployment_id = non_empty(env(ENV_DEPLOYMENT_ID))
        .or_else(|| non_empty(env(ENV_NEXT_DEPLOYMENT_ID)))
        .unwrap_or_else(|| build_id.clone());
    let actions_key = match non_empty(env(ENV_ACTIONS_KEY)) {
        Some(key) => key,
        None => persisted_actions_key(&app_dir.join(ACTIONS_KEY_FILE))?,
    };
    Ok(PinnedIds {
        build_id,
        deployment_id,
        actions_key,
    })
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Reads the key persisted at `path`, or creates it (32 random bytes, base64) when it is missing
/// or not a valid AES-256 key.
pub fn persisted_actions_key(path: &Path) -> Result<String, BuildError> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let key = text.trim();
        if STANDARD.decode(key).map(|k| k.len() == 32).unwrap_or(false) {
            return Ok(key.to_string());
        }
    }
    let mut raw = [0u8; 32];
    random_bytes(&mut raw)?;
    let key = STANDARD.encode(raw);
    let io = |source| BuildError::Io {
        path: PathBuf::from(path),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, format!("{key}\n")).map_err(io)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_21_url_safe_chars_and_differ() {
        let a = random_id().expect("id");
        let b = random_id().expect("id");
        assert_eq!(a.len(), 21);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
    }

    #[test]
    fn env_wins_and_deployment_defaults_to_build_id() {
        let dir = tempfile::tempdir().expect("tmp");
        let env = |k: &str| (k == ENV_BUILD_ID).then(|| "my-build".to_string());
        let ids = resolve(dir.path(), &env).expect("ids");
        assert_eq!(ids.build_id, "my-build");
        assert_eq!(ids.deployment_id, "my-build");

        let env = |k: &str| match k {
            ENV_NEXT_DEPLOYMENT_ID => Some("dpl-next".to_string()),
            ENV_ACTIONS_KEY => Some("k".to_string()),
            _ => None,
        };
        let ids = resolve(dir.path(), &env).expect("ids");
        assert_eq!(ids.deployment_id, "dpl-next");
        assert_eq!(ids.actions_key, "k");
    }

    #[test]
    fn actions_key_is_created_once_and_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(ACTIONS_KEY_FILE);
        let first = persisted_actions_key(&path).expect("key");
        assert_eq!(STANDARD.decode(&first).expect("base64").len(), 32);
        assert_eq!(persisted_actions_key(&path).expect("key"), first);
        // A corrupt file is replaced rather than passed to Next.
        std::fs::write(&path, "garbage").expect("write");
        let third = persisted_actions_key(&path).expect("key");
        assert_ne!(third, "garbage");
        assert_eq!(persisted_actions_key(&path).expect("key"), third);
    }
}

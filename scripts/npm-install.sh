#!/usr/bin/env bash
# Installs an app's npm packages from its committed lockfile: `npm ci`, falling back to
# `npm install` when the registry in use cannot serve every optional platform package the lockfile
# would need to list (npm ci then refuses the lockfile; npm install skips the missing optional
# packages and keeps the locked versions).
set -euo pipefail
dir="${1:?usage: npm-install.sh APP_DIR}"
cd "$dir"
if ! npm ci --no-audit --no-fund --loglevel=error 2>/tmp/ferry-npm-ci.$$; then
  echo "npm ci refused the lockfile in $dir; falling back to npm install" >&2
  npm install --no-audit --no-fund --loglevel=error
fi
rm -f /tmp/ferry-npm-ci.$$

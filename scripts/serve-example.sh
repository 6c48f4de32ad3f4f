#!/usr/bin/env bash
# Builds Ferry, builds the bundled example app with it and serves it on http://127.0.0.1:3000.
# Needs only Rust, Node.js 20+ and npm. Extra arguments go to `ferry start` (e.g. -p 8080).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# nasm when possible, for the codecs' SIMD; the build works without it (scripts/lib.sh).
source scripts/lib.sh
codec_setup
cargo build --release -p ferry-cli ${FERRY_FEATURES[@]+"${FERRY_FEATURES[@]}"}
if [ ! -d examples/showcase/node_modules/next ]; then
  bash scripts/npm-install.sh examples/showcase
fi
./target/release/ferry build examples/showcase
exec ./target/release/ferry start examples/showcase -H 127.0.0.1 "$@"

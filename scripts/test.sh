#!/usr/bin/env bash
# Runs every test: installs what the tests need (npm packages of the example and fixture apps,
# system packages), then the whole Cargo test suite (unit, integration, end-to-end, differential).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# npm packages for every app the tests build (lockfiles are committed; `npm ci` is reproducible).
while IFS= read -r lock; do
  dir="$(dirname "$lock")"
  if [ ! -d "$dir/node_modules" ]; then
    echo "== npm packages for $dir"
    bash scripts/npm-install.sh "$dir"
  fi
done < <(find examples tests crates -name package-lock.json -not -path '*/node_modules/*' | sort)
# pnpm apps (symlinked node_modules): pnpm through npx, the version the tests name (support/mod.rs).
while IFS= read -r lock; do
  dir="$(dirname "$lock")"
  if [ ! -d "$dir/node_modules" ]; then
    echo "== pnpm packages for $dir"
    (cd "$dir" && npx -y pnpm@9.15.9 install --frozen-lockfile)
  fi
done < <(find examples tests crates -name pnpm-lock.yaml -not -path '*/node_modules/*' | sort)

# System packages: a real redis-server for the shared-cache tests (started by the tests
# themselves); nasm when possible, for the codecs' SIMD (scripts/lib.sh).
source scripts/lib.sh
apt_install redis-server redis-server
codec_setup

threads="${FERRY_TEST_THREADS:-2}"
echo "== cargo test (unit, integration, end-to-end)"
# The differential suites run on their own below, with their reports (EQUAL n/total) shown.
cargo test --workspace --locked ${FERRY_FEATURES[@]+"${FERRY_FEATURES[@]}"} -- --test-threads="$threads" \
  --skip showcase_matches_next_start --skip routing_app_matches_next_start \
  --skip ppr_app_matches_next_start --skip edge_app_matches_next_start \
  --skip revalidation_matches_next_start

# One suite at a time: each builds an app and runs next start and ferry start side by side.
echo "== differential suite: next start vs ferry start on the same build (examples/showcase)"
cargo test -p ferry-cli ${FERRY_FEATURES[@]+"${FERRY_FEATURES[@]}"} --locked --test differential -- --nocapture --exact showcase_matches_next_start
echo "== differential suite: next start vs ferry start on the same build (tests/fixtures/routing-app)"
cargo test -p ferry-cli ${FERRY_FEATURES[@]+"${FERRY_FEATURES[@]}"} --locked --test differential -- --nocapture --exact routing_app_matches_next_start
echo "== differential suite: next start vs ferry start on the same build (tests/fixtures/ppr-app)"
cargo test -p ferry-cli ${FERRY_FEATURES[@]+"${FERRY_FEATURES[@]}"} --locked --test differential -- --nocapture --exact ppr_app_matches_next_start
echo "== differential suite: next start vs ferry start on the same build (tests/fixtures/pnpm-app, edge middleware)"
cargo test -p ferry-cli ${FERRY_FEATURES[@]+"${FERRY_FEATURES[@]}"} --locked --test differential -- --nocapture --exact edge_app_matches_next_start
echo "== differential suite: revalidation scenarios, next start vs ferry start (tests/fixtures/cache-app)"
cargo test -p ferry-cli ${FERRY_FEATURES[@]+"${FERRY_FEATURES[@]}"} --locked --test differential_revalidation -- --nocapture --exact revalidation_matches_next_start

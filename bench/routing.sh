#!/usr/bin/env bash
# Routing speed: Ferry's router (divan, crates/ferry-router/benches/resolve.rs) against
# @next/routing's resolveRoutes (crates/ferry-router/benches/next_routing.js), same tables
# (the example app's, and 500 generated rules) and same requests; median per resolution.
# Usage: bash bench/routing.sh   (set PIN="taskset -c 1" to pin both to one core)
set -euo pipefail
cd "$(dirname "$0")/.."
PIN=${PIN:-}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

oracle=crates/ferry-router/tests/oracle
if [ ! -d "$oracle/node_modules/@next/routing" ]; then
  bash scripts/npm-install.sh "$oracle" >/dev/null
fi

echo "ferry: cargo bench -p ferry-router --bench resolve" >&2
$PIN cargo bench -q -p ferry-router --bench resolve -- --sample-count 200 >"$out/ferry.txt"
echo "@next/routing: node crates/ferry-router/benches/next_routing.js" >&2
$PIN node crates/ferry-router/benches/next_routing.js >"$out/next.jsonl"

python3 - "$out/ferry.txt" "$out/next.jsonl" <<'PY'
import json, re, sys

units = {"ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
ferry, group = {}, None
num = re.compile(r"([\d.]+)\s*(ns|µs|us|ms|s)(?=\s|$)")
for line in open(sys.argv[1], encoding="utf-8"):
    body = line.rstrip("\n").lstrip("│├╰─ ")
    if not body or body.startswith(("Timer", "resolve ")):
        continue
    name = body.split()[0]
    vals = num.findall(body)
    if len(vals) < 3:  # a group line: `showcase` / `rules500`
        group = name
        continue
    # columns: fastest │ slowest │ median │ mean │ samples │ iters
    v, unit = vals[2]
    ferry[(group, name)] = float(v) * units[unit]
nxt = {}
for line in open(sys.argv[2]):
    r = json.loads(line)
    nxt[(r["table"], r["case"])] = r["median_ns"]
print(f"| table | request | Ferry median | @next/routing median | ratio |")
print(f"|---|---|---|---|---|")
for key, n in nxt.items():
    f = ferry.get(key)
    if f is None:
        print(f"| {key[0]} | {key[1]} | ? | {n/1e3:.2f} µs | ? |")
        continue
    print(f"| {key[0]} | {key[1]} | {f/1e3:.2f} µs | {n/1e3:.2f} µs | {n/f:.1f}× |")
PY

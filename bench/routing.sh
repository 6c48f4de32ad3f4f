#!/usr/bin/env bash
# Routing speed: Ferry's router (divan, crates/ferry-router/benches/resolve.rs) against
# @next/routing's resolveRoutes (crates/ferry-router/benches/next_routing.js), same tables
# (the example app's, and 500 generated rules) and same requests; median per resolution.
# Usage: bash bench/routing.sh
#   PIN="taskset -c 1"  pins both sides to one core (default: no pinning)
#   ROUNDS=3            runs both sides that many times, alternating, and reports the median of
#                       the per-round medians (a shared machine drifts: one round is not enough)
set -euo pipefail
cd "$(dirname "$0")/.."
PIN=${PIN:-}
ROUNDS=${ROUNDS:-3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

oracle=crates/ferry-router/tests/oracle
if [ ! -d "$oracle/node_modules/@next/routing" ]; then
  bash scripts/npm-install.sh "$oracle" >/dev/null
fi

echo "ferry: cargo bench -p ferry-router --bench resolve (building)" >&2
cargo bench -q -p ferry-router --bench resolve --no-run >/dev/null 2>&1
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS: ferry, then @next/routing" >&2
  $PIN cargo bench -q -p ferry-router --bench resolve -- --skip build --sample-count 200 >"$out/ferry.$r.txt"
  $PIN node crates/ferry-router/benches/next_routing.js >"$out/next.$r.jsonl"
done

python3 - "$out" "$ROUNDS" <<'PY'
import json, re, statistics, sys

out, rounds = sys.argv[1], int(sys.argv[2])
units = {"ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
num = re.compile(r"([\d.]+)\s*(ns|µs|us|ms|s)(?=\s|$)")

def ferry_round(path):
    ferry, group = {}, None
    for line in open(path, encoding="utf-8"):
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
    return ferry

def next_round(path):
    return {(r["table"], r["case"]): r["median_ns"] for r in map(json.loads, open(path))}

fr = [ferry_round(f"{out}/ferry.{r}.txt") for r in range(1, rounds + 1)]
nr = [next_round(f"{out}/next.{r}.jsonl") for r in range(1, rounds + 1)]
print(f"median of {rounds} round(s)")
print("| table | request | Ferry median | @next/routing median | ratio |")
print("|---|---|---|---|---|")
for key in nr[0]:
    n = statistics.median(r[key] for r in nr)
    fs = [r[key] for r in fr if key in r]
    if not fs:
        print(f"| {key[0]} | {key[1]} | ? | {n/1e3:.2f} µs | ? |")
        continue
    f = statistics.median(fs)
    print(f"| {key[0]} | {key[1]} | {f/1e3:.2f} µs | {n/1e3:.2f} µs | {n/f:.1f}× |")
PY

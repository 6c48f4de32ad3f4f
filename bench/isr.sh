#!/usr/bin/env bash
# ISR cache hits, Ferry per cache tier vs `next start`, on examples/showcase, same build, same core.
#
# Usage:
#   bench/isr.sh
# Environment:
#   BENCH_DURATION=10     seconds per wrk run
#   BENCH_RUNS=3          wrk runs per case and server (the median is reported)
#   BENCH_CONNECTIONS=32  wrk connections (one wrk thread)
#   BENCH_PORT_BASE=45100 ports BASE+1..BASE+5 are used on 127.0.0.1
#   FERRY_BIN=path        ferry binary (default target/release/ferry, built with cargo if missing)
#   REDIS_SERVER=path     redis-server (default /usr/bin/redis-server; the Redis row reads n/a
#                         without it)
#   BENCH_KEEP=1          keep the work directory (build, logs)
#   BENCH_SERVERS="next memory disk redis"  the servers to measure (a subset skips the others)
#   BENCH_APP=dir         reuse a showcase copy already built by `ferry build` (e.g. one kept with
#                         BENCH_KEEP=1: <work dir>/app) instead of copying and building it again;
#                         compare two binaries on one build with it
#   BENCH_REDIS_CPU=0     the core redis-server is pinned to (default 0, the server's core, so
#                         Redis' own CPU time counts against Ferry; 1 shares wrk's core instead)
#   BENCH_OUT=path        where the table is written (default bench/results/isr-latest.md)
#
# What it does: copies examples/showcase, builds it ONCE with `ferry build`, then runs one server
# at a time, pinned with `taskset -c 0` (wrk pinned with `taskset -c 1`, as bench/run.sh does):
#   - `next start` (its own file-system + in-memory ISR cache);
#   - `ferry start --workers 1` (default disk store: hits come from the memory tier);
#   - `ferry start --workers 1 --cache-memory-size 0` (no memory tier: every hit reads and
#     decodes the entry's file from the disk store; the page cache keeps the file hot);
#   - `ferry start --workers 1 --cache-url redis://…` (a redis-server, also on core 0: hits come
#     from the memory tier in front of Redis, which is how the Redis store serves hits).
# Cases: `/isr` HTML and its RSC payload (`/isr?_rsc=` with `rsc: 1`). The showcase's /isr
# revalidates every 5 s, so a run serves `HIT` and `STALE` answers (both from the cache) and
# regenerates in the background every 5 s, on every server alike.
# Prints medians as a markdown table (also written to bench/results/isr-latest.md). Every
# process it starts is stopped on exit, including Ctrl-C.
set -euo pipefail
[[ "${BENCH_TRACE:-0}" == 1 ]] && set -x

BENCH_LOG_PREFIX=bench-isr
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION="${BENCH_DURATION:-10}"
RUNS="${BENCH_RUNS:-3}"
CONNS="${BENCH_CONNECTIONS:-32}"
PORT_BASE="${BENCH_PORT_BASE:-45100}"
NEXT_PORT=$((PORT_BASE + 1))
MEM_PORT=$((PORT_BASE + 2))
DISK_PORT=$((PORT_BASE + 3))
REDIS_FERRY_PORT=$((PORT_BASE + 4))
REDIS_PORT=$((PORT_BASE + 5))
REDIS_SERVER="${REDIS_SERVER:-/usr/bin/redis-server}"
OUT="${BENCH_OUT:-$RESULTS_DIR/isr-latest.md}"
REDIS_CPU="${BENCH_REDIS_CPU:-0}"

for tool in wrk taskset setsid curl node ps; do command -v "$tool" >/dev/null || die "$tool not found"; done

# --- ferry binary and one build ------------------------------------------------------------------
[[ -x "$FERRY" ]] || die "no ferry binary at $FERRY"
"$FERRY" start --help 2>/dev/null | grep -q -- --cache-memory-size \
  || die "$FERRY has no --cache-memory-size (rebuild it: cargo build --release -p ferry-cli)"

if [[ -n "${BENCH_APP:-}" ]]; then
  APP="$(cd "$BENCH_APP" && pwd)"
  [[ -f "$APP/.ferry/manifest.json" ]] || die "$APP has no .ferry/manifest.json (build it with ferry build)"
  WORK="$(mktemp -d /tmp/ferry-bench-isr.XXXXXX)"
  log "reusing the build in $APP (logs in $WORK)"
else
  copy_showcase /tmp/ferry-bench-isr.XXXXXX
  log "building it with ferry build"
  (cd "$APP" && "$FERRY" build "$APP" >"$WORK/build.log" 2>&1) || die "ferry build failed: $(tail -20 "$WORK/build.log")"
fi

# --- measurement ---------------------------------------------------------------------------------
# cache_header URL [HEADER]: the x-nextjs-cache value of one answer.
cache_header() {
  curl -s -o /dev/null -D - ${2:+-H "$2"} "$1" | awk -F': *' 'tolower($1) == "x-nextjs-cache" { gsub(/\r/, "", $2); print $2 }'
}

# name | path | header
CASES=(
  "\`/isr\` HTML|/isr|"
  "\`/isr\` RSC (\`rsc: 1\`)|/isr?_rsc=|rsc: 1"
)
read -r -a SERVERS <<<"${BENCH_SERVERS:-next memory disk redis}"
declare -A RESULT SEEN
REDIS_PID=""

# bench_server NAME PORT: warms and measures every case on one running server.
bench_server() {
  local name=$1 port=$2 spec case_name path header run
  for spec in "${CASES[@]}"; do
    IFS='|' read -r case_name path header <<<"$spec"
    for _ in $(seq 20); do curl -s -o /dev/null ${header:+-H "$header"} "http://127.0.0.1:$port$path" || true; done
    SEEN["$case_name|$name"]="$(cache_header "http://127.0.0.1:$port$path" "$header")"
    for run in $(seq "$RUNS"); do
      log "$name: $case_name, run $run/$RUNS"
      run_wrk "http://127.0.0.1:$port$path" "$header"
      RESULT["$case_name|$name"]+="$WRK_RPS "
    done
  done
}

for server in "${SERVERS[@]}"; do
  port=""
  case $server in
    next)
      port=$NEXT_PORT
      start_bg "$WORK/next.log" env NEXT_TELEMETRY_DISABLED=1 node "$APP/node_modules/next/dist/bin/next" start -p "$port" -H 127.0.0.1 ;;
    memory)
      port=$MEM_PORT
      rm -rf "$APP/.ferry-cache"
      start_bg "$WORK/ferry-memory.log" "$FERRY" start "$APP" -p "$port" -H 127.0.0.1 --workers 1 ;;
    disk)
      port=$DISK_PORT
      rm -rf "$APP/.ferry-cache"
      start_bg "$WORK/ferry-disk.log" "$FERRY" start "$APP" -p "$port" -H 127.0.0.1 --workers 1 --cache-memory-size 0 ;;
    redis)
      if [[ ! -x "$REDIS_SERVER" ]]; then log "no $REDIS_SERVER: Redis = n/a"; continue; fi
      start_bg "$WORK/redis.log" "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no
      REDIS_PID=$BG_PID
      [[ "$REDIS_CPU" == 0 ]] || taskset -a -p -c "$REDIS_CPU" "$REDIS_PID" >/dev/null
      for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break; sleep 0.05; done
      port=$REDIS_FERRY_PORT
      start_bg "$WORK/ferry-redis.log" "$FERRY" start "$APP" -p "$port" -H 127.0.0.1 --workers 1 --cache-url "redis://127.0.0.1:$REDIS_PORT/" ;;
  esac
  pid=$BG_PID
  if ! wait_200 "http://127.0.0.1:$port/isr" 90 "$pid"; then
    log "$server did not serve /isr (its column reads n/a): $(tail -5 "$WORK"/*"$server"*.log 2>/dev/null)"
    stop_bg "$pid"
    if [[ -n "$REDIS_PID" ]]; then stop_bg "$REDIS_PID"; REDIS_PID=""; fi
    continue
  fi
  bench_server "$server" "$port"
  stop_bg "$pid"
  if [[ -n "$REDIS_PID" ]]; then stop_bg "$REDIS_PID"; REDIS_PID=""; fi
done

# --- report --------------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
{
  echo "ISR hits, req/s (median of $RUNS × ${DURATION}s, wrk -t1 -c$CONNS pinned to core 1; each server alone on core 0, \`--workers 1\`)"
  echo
  echo "| request | next start | Ferry memory tier | Ferry disk only | Ferry + Redis | memory / next | disk / next | Redis / next |"
  echo "|---|---|---|---|---|---|---|---|"
  for spec in "${CASES[@]}"; do
    IFS='|' read -r case_name _ _ <<<"$spec"
    declare -A M=([next]=n/a [memory]=n/a [disk]=n/a [redis]=n/a)
    for s in "${SERVERS[@]}"; do
      raw="${RESULT["$case_name|$s"]:-}"
      if [[ -z "$raw" ]]; then M[$s]=n/a; else M[$s]="$(echo "$raw" | median)"; fi
    done
    echo "| $case_name | $(fmt_rps "${M[next]}") | $(fmt_rps "${M[memory]}") | $(fmt_rps "${M[disk]}") | $(fmt_rps "${M[redis]}") | $(ratio "${M[memory]}" "${M[next]}" 1) | $(ratio "${M[disk]}" "${M[next]}" 1) | $(ratio "${M[redis]}" "${M[next]}" 1) |"
  done
  echo
  echo "x-nextjs-cache after warm-up:"
  for spec in "${CASES[@]}"; do
    IFS='|' read -r case_name _ _ <<<"$spec"
    line="- $case_name:"
    for s in "${SERVERS[@]}"; do line+=" $s=${SEEN["$case_name|$s"]:-n/a}"; done
    echo "$line"
  done
  echo
  echo "Raw runs (req/s; * = wrk saw errors or non-2xx/3xx):"
  for key in "${!RESULT[@]}"; do echo "- $key: ${RESULT[$key]}"; done | sort
  echo
  echo "Machine: $(nproc) cores, $(uname -r); $(date -u +%Y-%m-%dT%H:%MZ); load average $(cut -d' ' -f1-3 /proc/loadavg); ferry $("$FERRY" --version 2>/dev/null || echo '?') ($FERRY); redis-server on core $REDIS_CPU."
} | tee "$OUT"

#!/usr/bin/env bash
# Ferry vs `next start` (vs nginx for static files) on examples/showcase, same build, same core.
#
# Usage (as root: installs wrk and nginx with apt-get when absent):
#   bench/run.sh
# Environment:
#   BENCH_DURATION=10     seconds per wrk run
#   BENCH_RUNS=3          wrk runs per case and server (the median is reported)
#   BENCH_WARMUP=20       seconds of CPU each server (with its workers) spends under wrk load
#                         before the runs of a case whose requests run JavaScript (the proxy, a
#                         render), so V8 is warm; 0: none
#   BENCH_CONNECTIONS=32  wrk connections (one wrk thread)
#   BENCH_STARTS=5        starts per server for start-to-first-200
#   BENCH_PORT_BASE=4700  ports BASE+1..BASE+5 are used on 127.0.0.1
#   FERRY_BIN=path        ferry binary (default target/release/ferry, built with cargo if missing;
#                         when FERRY_BIN is set and missing, nothing is built)
#   BENCH_KEEP=1          keep the work directory (build, logs)
#   BENCH_ONLY=regex      run only the cases whose name matches (grep -E), e.g. 'ssr|api'
#
# What it does: copies examples/showcase to a temp dir, builds it ONCE with `ferry build` (plain
# `next build` if that fails, and the Ferry columns then read n/a), starts `next start` and
# `ferry start --workers 1` on that build, each pinned with `taskset -c 0`, runs
# `wrk -t1 -cC -dDs` pinned with `taskset -c 1` against both (and nginx, one worker on core 0,
# for the static rows), and prints medians as a markdown table, also written to
# bench/results/latest.md. Every process it starts is stopped on exit, including Ctrl-C.
set -euo pipefail
[[ "${BENCH_TRACE:-0}" == 1 ]] && set -x

BENCH_LOG_PREFIX=bench
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION="${BENCH_DURATION:-10}"
RUNS="${BENCH_RUNS:-3}"
WARMUP="${BENCH_WARMUP:-20}"
CONNS="${BENCH_CONNECTIONS:-32}"
STARTS="${BENCH_STARTS:-5}"
PORT_BASE="${BENCH_PORT_BASE:-4700}"
NEXT_PORT=$((PORT_BASE + 1))
FERRY_PORT=$((PORT_BASE + 2))
NGINX_PORT=$((PORT_BASE + 3))
COLD_NEXT_PORT=$((PORT_BASE + 4))
COLD_FERRY_PORT=$((PORT_BASE + 5))
OUT="$RESULTS_DIR/latest.md"

# --- tools -----------------------------------------------------------------------------------------
need_apt() {
  [[ $(id -u) == 0 ]] || die "run as root (needs apt-get for: $*)"
  log "installing $* with apt-get"
  # Do not let the nginx package start a system-wide server on port 80.
  local policy=/usr/sbin/policy-rc.d created=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; }
  if (( created )); then rm -f "$policy"; fi
}
command -v wrk >/dev/null || need_apt wrk
command -v nginx >/dev/null || need_apt nginx
for tool in taskset setsid curl node ps; do command -v "$tool" >/dev/null || die "$tool not found"; done

# --- one build ------------------------------------------------------------------------------------
copy_showcase /tmp/ferry-bench.XXXXXX

FERRY_OK=0
if [[ -x "$FERRY" ]] && (cd "$APP" && "$FERRY" build "$APP" >"$WORK/build.log" 2>&1); then
  log "built with ferry build"
  FERRY_OK=1
else
  log "ferry build unavailable or failed (see $WORK/build.log): building with plain next build; Ferry = n/a"
  (cd "$APP" && NEXT_TELEMETRY_DISABLED=1 node node_modules/next/dist/bin/next build >"$WORK/next-build.log" 2>&1) \
    || die "next build failed: $(tail -20 "$WORK/next-build.log")"
fi
BUILD_ID="$(cat "$APP/.next/BUILD_ID")"

# start_next LOG PORT / start_ferry LOG PORT: start a server pinned to core 0 (sets BG_PID).
start_next() { start_bg "$1" env NEXT_TELEMETRY_DISABLED=1 node "$APP/node_modules/next/dist/bin/next" start -p "$2" -H 127.0.0.1; }
start_ferry() { start_bg "$1" "$FERRY" start "$APP" -p "$2" -H 127.0.0.1 --workers 1; }

# --- chunks ---------------------------------------------------------------------------------------
# The chunk closest to 15 KB and the largest chunk, both as URL paths.
CHUNK_15K="$(cd "$APP/.next/static/chunks" && for f in *.js; do s=$(stat -c %s "$f"); d=$((s > 15000 ? s - 15000 : 15000 - s)); echo "$d $f"; done | sort -n | head -1 | cut -d' ' -f2)"
CHUNK_BIG="$(cd "$APP/.next/static/chunks" && ls -S -- *.js | head -1)"
SIZE_15K=$(stat -c %s "$APP/.next/static/chunks/$CHUNK_15K")
SIZE_BIG=$(stat -c %s "$APP/.next/static/chunks/$CHUNK_BIG")

# nginx serves the same chunk files from the bundle (from .next/static when there is no bundle).
STATIC_DIR="$APP/.next/static"
STATIC_FROM=".next/static (no Ferry bundle)"
if (( FERRY_OK )); then
  found="$(find "$APP/.ferry" -type f -path "*/chunks/$CHUNK_BIG" | head -1)"
  if [[ -n "$found" ]]; then STATIC_DIR="${found%/chunks/$CHUNK_BIG}"; STATIC_FROM=".ferry (${STATIC_DIR#"$APP/"})"; fi
fi
mkdir -p "$WORK/nginx-tmp"
cat >"$WORK/nginx.conf" <<EOF
user root;
worker_processes 1;
worker_cpu_affinity 01;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-tmp/body;
  proxy_temp_path $WORK/nginx-tmp/proxy;
  fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
  scgi_temp_path $WORK/nginx-tmp/scgi;
  types { application/javascript js; }
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  gzip_static on;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location /_next/static/ {
      alias $STATIC_DIR/;
      add_header Cache-Control "public, max-age=31536000, immutable";
    }
  }
}
EOF

# --- measurement helpers --------------------------------------------------------------------------
# rss_mb FIELD PID...: sum of a /proc/<pid>/status field (VmRSS, VmHWM) in MB.
rss_mb() {
  local field=$1; shift
  local total=0 p kb
  for p in "$@"; do
    kb=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${kb:-0}))
  done
  awk -v kb="$total" 'BEGIN { printf "%.0f", kb / 1024 }'
}
tree_mb() { local field=$1 pid=$2; # shellcheck disable=SC2046
  rss_mb "$field" $(descendants "$pid"); }

encoding_of() { curl -s -o /dev/null -D - -H "$2" "$1" | awk -F': *' 'tolower($1) == "content-encoding" { gsub(/\r/, "", $2); print $2 }' | head -1; }

# --- start to first 200 (fresh processes, median of BENCH_STARTS) ---------------------------------
startup_ms() {
  local kind=$1 port=$2 i t0 t1 times=()
  for i in $(seq "$STARTS"); do
    t0=$(date +%s%N)
    if [[ $kind == next ]]; then start_next "$WORK/cold-next-$i.log" "$port"; else start_ferry "$WORK/cold-ferry-$i.log" "$port"; fi
    if wait_200 "http://127.0.0.1:$port/" 60 "$BG_PID"; then
      t1=$(date +%s%N)
      times+=($(( (t1 - t0) / 1000000 )))
    fi
    stop_bg "$BG_PID"
  done
  echo "${times[*]:-}" | median | awk '{ if ($1 == "n/a") print; else printf "%.0f\n", $1 }'
}
log "measuring start to first 200 ($STARTS starts each)"
START_NEXT="$(startup_ms next "$COLD_NEXT_PORT")"
START_FERRY=n/a
if (( FERRY_OK )); then START_FERRY="$(startup_ms ferry "$COLD_FERRY_PORT")"; fi

# --- servers under test ---------------------------------------------------------------------------
start_next "$WORK/next.log" "$NEXT_PORT"
NEXT_PID=$BG_PID
wait_200 "http://127.0.0.1:$NEXT_PORT/" 90 "$NEXT_PID" || die "next start did not serve: $(tail -20 "$WORK/next.log")"
FERRY_PID=""
if (( FERRY_OK )); then
  start_ferry "$WORK/ferry.log" "$FERRY_PORT"
  FERRY_PID=$BG_PID
  if ! wait_200 "http://127.0.0.1:$FERRY_PORT/" 90 "$FERRY_PID"; then
    log "ferry start did not serve (see $WORK/ferry.log): Ferry = n/a"
    stop_bg "$FERRY_PID"; FERRY_PID=""; FERRY_OK=0
  fi
fi
start_bg "$WORK/nginx.log" nginx -c "$WORK/nginx.conf" -p "$WORK"
NGINX_PID=$BG_PID
wait_200 "http://127.0.0.1:$NGINX_PORT/_next/static/chunks/$CHUNK_15K" 20 "$NGINX_PID" || die "nginx did not serve: $(cat "$WORK/nginx-error.log" 2>/dev/null)"

sleep 2
MEM_NEXT_IDLE="$(tree_mb VmRSS "$NEXT_PID")"
MEM_FERRY_IDLE=n/a; MEM_FERRY_TREE_IDLE=n/a; MEM_FERRY_AFTER=n/a; MEM_FERRY_TREE_PEAK=n/a
if (( FERRY_OK )); then
  MEM_FERRY_IDLE="$(rss_mb VmRSS "$FERRY_PID")"
  MEM_FERRY_TREE_IDLE="$(tree_mb VmRSS "$FERRY_PID")"
fi

# --- load -----------------------------------------------------------------------------------------
AE='Accept-Encoding: br, gzip'
# name | path | header | nginx too? | runs JavaScript (the proxy or a render) on every request?
# warm_up PID URL [HEADER]: wrk load in 5 s slices until PID's process tree has used WARMUP s of
# CPU. Counted in CPU, not wall time: on a shared core a wall-time warm-up leaves V8 cold.
warm_up() {
  local pid=$1 hz start used=0 deadline=$((SECONDS + 6 * WARMUP))
  hz=$(getconf CLK_TCK)
  start=$(tree_cpu_ticks "$pid")
  while (( SECONDS < deadline )); do
    DURATION=5 run_wrk "$2" "${3:-}"
    used=$(( $(tree_cpu_ticks "$pid") - start ))
    (( used >= WARMUP * hz )) && return 0
  done
  log "warm-up ended after $((6 * WARMUP)) s of wall time with $((used / hz)) s of CPU"
}
CASES=(
  "hashed chunk ${SIZE_15K} B|/_next/static/chunks/$CHUNK_15K||yes|no"
  "largest chunk ${SIZE_BIG} B|/_next/static/chunks/$CHUNK_BIG||yes|no"
  "largest chunk, \`$AE\`|/_next/static/chunks/$CHUNK_BIG|$AE|yes|no"
  "\`/\` prerendered (proxy does not match)|/||no|no"
  "\`/blog/hello\` prerendered (proxy matches)|/blog/hello||no|yes"
  "\`/isr\` cache hit|/isr||no|no"
  "\`/ssr\` dynamic|/ssr||no|yes"
  "\`/api/hello\` route handler|/api/hello||no|yes"
)
if [[ -n "${BENCH_ONLY:-}" ]]; then
  mapfile -t CASES < <(printf '%s\n' "${CASES[@]}" | grep -E -- "^[^|]*(${BENCH_ONLY})" || true)
  (( ${#CASES[@]} )) || die "BENCH_ONLY='$BENCH_ONLY' matches no case"
fi
declare -A RESULT CPU
for spec in "${CASES[@]}"; do
  IFS='|' read -r name path header with_nginx runs_js <<<"$spec"
  # Warm up: prerender caches, ISR regeneration, JIT.
  for port in "$NEXT_PORT" ${FERRY_PID:+"$FERRY_PORT"}; do
    for _ in 1 2 3; do curl -s -o /dev/null ${header:+-H "$header"} "http://127.0.0.1:$port$path" || true; done
    # JavaScript reaches steady state only after tens of seconds of load (V8 compiles hot code
    # on the same core meanwhile: CPU per request falls ~2.5x over the first ~40 s of /ssr on
    # both servers); measured without it, a row compares JIT warm-ups, not servers.
    if [[ $runs_js == yes ]] && (( WARMUP > 0 )); then
      log "$name: warming up port $port for ${WARMUP} s of CPU"
      warm_up "$([[ $port == "$NEXT_PORT" ]] && echo "$NEXT_PID" || echo "$FERRY_PID")" \
        "http://127.0.0.1:$port$path" "$header"
    fi
  done
  for run in $(seq "$RUNS"); do
    log "$name: run $run/$RUNS"
    run_wrk_cpu "$NEXT_PID" "http://127.0.0.1:$NEXT_PORT$path" "$header"
    RESULT["$name|next"]+="$WRK_RPS "; CPU["$name|next"]+="$WRK_CPU_US "
    if (( FERRY_OK )); then
      run_wrk_cpu "$FERRY_PID" "http://127.0.0.1:$FERRY_PORT$path" "$header"
      RESULT["$name|ferry"]+="$WRK_RPS "; CPU["$name|ferry"]+="$WRK_CPU_US "
    fi
    if [[ $with_nginx == yes ]]; then run_wrk "http://127.0.0.1:$NGINX_PORT$path" "$header"; RESULT["$name|nginx"]+="$WRK_RPS "; fi
  done
done

MEM_NEXT_PEAK="$(tree_mb VmHWM "$NEXT_PID")"
if (( FERRY_OK )); then
  MEM_FERRY_AFTER="$(rss_mb VmRSS "$FERRY_PID")"
  MEM_FERRY_TREE_PEAK="$(tree_mb VmHWM "$FERRY_PID")"
fi
ENC_NEXT="$(encoding_of "http://127.0.0.1:$NEXT_PORT/_next/static/chunks/$CHUNK_BIG" "$AE")"
ENC_FERRY=n/a
if (( FERRY_OK )); then ENC_FERRY="$(encoding_of "http://127.0.0.1:$FERRY_PORT/_next/static/chunks/$CHUNK_BIG" "$AE")"; fi
ENC_NGINX="$(encoding_of "http://127.0.0.1:$NGINX_PORT/_next/static/chunks/$CHUNK_BIG" "$AE")"

# --- report ---------------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
flagged=0
for key in "${!RESULT[@]}"; do [[ "${RESULT[$key]}" == *"*"* ]] && flagged=1; done
cell() { # cell KEY: median req/s, formatted, starred when a run saw errors
  local raw="${RESULT[$1]:-}" star=""
  [[ -z "$raw" ]] && { echo n/a; return; }
  [[ "$raw" == *"*"* ]] && star='\*'
  echo "$(fmt_rps "$(echo "$raw" | median)")$star"
}
{
  echo "# Ferry benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "examples/showcase, build \`$BUILD_ID\`; servers pinned to core 0, \`wrk -t1 -c$CONNS -d${DURATION}s\` pinned to core 1;"
  echo "median of $RUNS runs per case after warm-up load until each server used ${WARMUP} s of CPU on rows that run JavaScript, both servers in the same run. CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)."
  echo "next $(node -p "require('$APP/node_modules/next/package.json').version"), node $(node --version), $(nginx -v 2>&1 | sed 's/^nginx version: //'), ferry: $( ((FERRY_OK)) && echo "$FERRY (git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))" || echo 'n/a (not serving)')."
  echo
  echo "| request | next start req/s | Ferry req/s | Ferry / next start | nginx req/s |"
  echo "|---|---|---|---|---|"
  for spec in "${CASES[@]}"; do
    IFS='|' read -r name _ _ with_nginx _ <<<"$spec"
    n_med="$(echo "${RESULT[$name|next]:-}" | median)"
    f_med="$(echo "${RESULT[$name|ferry]:-}" | median)"
    echo "| $name | $(cell "$name|next") | $(cell "$name|ferry") | $(ratio "$f_med" "$n_med") | $( [[ $with_nginx == yes ]] && cell "$name|nginx" || echo '—') |"
  done
  echo
  echo "CPU time per request of the whole server (Ferry: with its worker; from /proc utime + stime"
  echo "around each wrk run, median of the runs). Time spent waiting for the core is not counted, so"
  echo "this is steadier than req/s on a shared machine; next start / Ferry above 1 means Ferry spends less."
  echo
  echo "| request | next start µs/req | Ferry µs/req | next start / Ferry |"
  echo "|---|---|---|---|"
  for spec in "${CASES[@]}"; do
    IFS='|' read -r name _ _ _ <<<"$spec"
    n_cpu="$(echo "${CPU[$name|next]:-}" | median)"
    f_cpu="$(echo "${CPU[$name|ferry]:-}" | median)"
    echo "| $name | $n_cpu | $f_cpu | $(ratio "$n_cpu" "$f_cpu") |"
  done
  echo
  echo "Content-Encoding for the largest chunk with \`$AE\`: next start \`${ENC_NEXT:-identity}\`, Ferry \`${ENC_FERRY:-identity}\`, nginx \`${ENC_NGINX:-identity}\` (nginx: gzip_static, serves .gz when the bundle has one)."
  echo "nginx serves the chunks from $STATIC_FROM, one worker on core 0."
  echo
  echo "| memory / start | next start | Ferry |"
  echo "|---|---|---|"
  echo "| start to first 200 on \`/\` (median of $STARTS) | ${START_NEXT} ms | ${START_FERRY}$( [[ $START_FERRY == n/a ]] || echo ' ms') |"
  echo "| RSS idle, server process alone | — | ${MEM_FERRY_IDLE}$( [[ $MEM_FERRY_IDLE == n/a ]] || echo ' MB') |"
  echo "| RSS idle, with child/worker processes | ${MEM_NEXT_IDLE} MB | ${MEM_FERRY_TREE_IDLE}$( [[ $MEM_FERRY_TREE_IDLE == n/a ]] || echo ' MB') |"
  echo "| RSS after load, server process alone | — | ${MEM_FERRY_AFTER}$( [[ $MEM_FERRY_AFTER == n/a ]] || echo ' MB') |"
  echo "| peak RSS, with child/worker processes (sum of VmHWM) | ${MEM_NEXT_PEAK} MB | ${MEM_FERRY_TREE_PEAK}$( [[ $MEM_FERRY_TREE_PEAK == n/a ]] || echo ' MB') |"
  if (( flagged )); then
    echo
    echo "\\* wrk reported non-2xx/3xx responses or socket errors in at least one run of a starred cell's case."
  fi
  echo
  echo "Raw req/s per run:"
  echo
  for spec in "${CASES[@]}"; do
    IFS='|' read -r name _ _ _ <<<"$spec"
    n_raw="${RESULT[$name|next]:-}"; f_raw="${RESULT[$name|ferry]:-n/a}"; x_raw="${RESULT[$name|nginx]:-—}"
    echo "- $name: next [${n_raw% }] ferry [${f_raw% }] nginx [${x_raw% }]; CPU µs/req: next [$(echo ${CPU[$name|next]:-})] ferry [$(echo ${CPU[$name|ferry]:-n/a})]"
  done
} | tee "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "written to $OUT"

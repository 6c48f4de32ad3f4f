# Shared by the benchmark scripts (source it after setting BENCH_LOG_PREFIX): logging, process
# bookkeeping (every process in its own session, whole groups killed on exit or Ctrl-C), waiting
# for a server, wrk runs and medians, the ferry binary and a fresh copy of the showcase.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="$ROOT/bench/results"

log() { printf '[%s] %s\n' "${BENCH_LOG_PREFIX:-bench}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- process bookkeeping ----------------------------------------------------------------------------
STARTED_PGIDS=()
WORK=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local pgid
  for pgid in "${STARTED_PGIDS[@]}"; do kill -TERM -- "-$pgid" 2>/dev/null || true; done
  sleep 0.5
  for pgid in "${STARTED_PGIDS[@]}"; do kill -KILL -- "-$pgid" 2>/dev/null || true; done
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

# start_bg LOGFILE CMD...: runs CMD in the app directory ($APP), pinned to core 0, in a new
# session; sets BG_PID (= its pgid; the subshell execs, so $! is the server itself).
start_bg() {
  local logfile=$1; shift
  (cd "${APP:-/}" && exec setsid taskset -c 0 "$@") >"$logfile" 2>&1 &
  BG_PID=$!
  STARTED_PGIDS+=("$BG_PID")
}

# forget_pgid PID: drops PID from the groups cleanup kills.
forget_pgid() {
  local kept=() p
  for p in "${STARTED_PGIDS[@]}"; do [[ "$p" == "$1" ]] || kept+=("$p"); done
  STARTED_PGIDS=("${kept[@]}")
}

# alive PID: the process exists and is not a zombie.
alive() { local st; st="$(ps -o stat= -p "$1" 2>/dev/null)" && [[ -n "$st" && "$st" != Z* ]]; }

# stop_bg PID: stops one group started by start_bg and forgets it.
stop_bg() {
  local pid=$1 i
  kill -TERM -- "-$pid" 2>/dev/null || true
  for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pgid "$pid"
}

# wait_200 URL TIMEOUT_S PID: waits for a 200; fails if PID died or on timeout.
wait_200() {
  local url=$1 timeout=$2 pid=$3 deadline
  deadline=$(( $(date +%s) + timeout ))
  while (( $(date +%s) < deadline )); do
    alive "$pid" || return 1
    [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" || true)" == 200 ]] && return 0
    sleep 0.01
  done
  return 1
}

# wait_idle PID [TIMEOUT_S]: waits until PID's process tree stops using CPU (at most 1 tick in
# half a second), so start-up work still running after the first 200 (Ferry's Node workers
# booting) is not counted in what is measured next. After TIMEOUT_S (30) it says so and returns.
wait_idle() {
  local pid=$1 deadline before after
  deadline=$(( $(date +%s) + ${2:-30} ))
  before=$(tree_cpu_ticks "$pid")
  while (( $(date +%s) < deadline )); do
    sleep 0.5
    after=$(tree_cpu_ticks "$pid")
    (( after - before <= 1 )) && return 0
    before=$after
  done
  log "still busy after ${2:-30} s: measuring anyway"
}

# --- measurement ------------------------------------------------------------------------------------
# run_wrk URL [HEADER]: sets WRK_RPS to req/s ("123.45", suffixed "*" if wrk saw non-2xx/3xx or
# socket errors). Uses CONNS and DURATION. wrk runs in its own session, pinned to core 1, and is
# waited for with `wait`, which a trapped Ctrl-C interrupts at once.
run_wrk() {
  local url=$1 header=${2:-} out="$WORK/wrk.out"
  local args=(-t1 "-c$CONNS" "-d${DURATION}s")
  [[ -n "$header" ]] && args+=(-H "$header")
  setsid taskset -c 1 wrk "${args[@]}" "$url" >"$out" 2>&1 &
  local pid=$!
  STARTED_PGIDS+=("$pid")
  wait "$pid" || true
  forget_pgid "$pid"
  local rps flag=""
  rps="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
  grep -qE 'Non-2xx or 3xx responses|Socket errors' "$out" && flag="*"
  WRK_RPS="${rps:-0}${flag}"
}
# descendants PID: PID and all its descendants.
descendants() {
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      n = 1; list[1] = root; seen[root] = 1
      for (i = 1; i <= n; i++)
        for (p in parent) if (parent[p] == list[i] && !(p in seen)) { seen[p] = 1; list[++n] = p }
      for (i = 1; i <= n; i++) print list[i]
    }'
}
# tree_cpu_ticks PID: user + system CPU ticks (1/CLK_TCK s) used so far by PID and every live
# descendant (a server's Node workers, next-server's children).
tree_cpu_ticks() {
  local p total=0 t
  for p in $(descendants "$1"); do
    # Fields after the parenthesized command name: utime and stime are the 12th and 13th.
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
# run_wrk_cpu PID URL [HEADER]: run_wrk, and sets WRK_CPU_US to the CPU time PID's process tree
# spent per request during the run, in µs (less sensitive than req/s to other load on a shared
# machine: time the server waits for a CPU is not counted).
run_wrk_cpu() {
  local pid=$1 before after requests
  before=$(tree_cpu_ticks "$pid")
  run_wrk "$2" "${3:-}"
  after=$(tree_cpu_ticks "$pid")
  requests="$(awk '/ requests in / { print $1 }' "$WORK/wrk.out")"
  WRK_CPU_US="$(awk -v d=$((after - before)) -v n="${requests:-0}" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (n > 0) printf "%.1f", d * 1e6 / hz / n; else print "n/a" }')"
}
# median: of the space-separated numbers on stdin ("n/a" when there are none; "*" flags dropped).
median() { tr ' ' '\n' | sed -e '/^$/d' -e 's/\*$//' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# fmt_rps N: 1234.5 -> 1.2k.
fmt_rps() { [[ "$1" == n/a ]] && echo n/a || awk -v v="$1" 'BEGIN { if (v >= 1000) printf "%.1fk", v / 1000; else printf "%.0f", v }'; }
# ratio A B [DIGITS]: A / B as "1.23×".
ratio() { [[ "$1" == n/a || "$2" == n/a ]] && echo n/a || awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (b > 0) printf "%.*f×", d, a / b; else print "n/a" }'; }

# --- what is measured ---------------------------------------------------------------------------------
# FERRY: the ferry binary ($FERRY_BIN, else target/release/ferry, built with cargo when missing
# and FERRY_BIN is unset). Callers check `-x "$FERRY"` themselves.
FERRY="${FERRY_BIN:-$ROOT/target/release/ferry}"
if [[ ! -x "$FERRY" && -z "${FERRY_BIN:-}" ]]; then
  log "building target/release/ferry"
  # With the codecs scripts/test.sh builds it with (scripts/lib.sh's codec_setup).
  # shellcheck source=scripts/lib.sh
  source "$ROOT/scripts/lib.sh"
  codec_setup >&2
  (cd "$ROOT" && cargo build --release -p ferry-cli --bin ferry ${FERRY_FEATURES[@]+"${FERRY_FEATURES[@]}"} >&2) ||
    log "cargo build failed"
fi
# Absolute: the scripts run it from the app's directory (a relative FERRY_BIN silently gave
# "Ferry = n/a").
if [[ -e "$FERRY" ]]; then FERRY="$(readlink -f "$FERRY")"; fi

# copy_showcase WORKDIR_TEMPLATE: sets WORK (a new temp dir) and APP (a clean copy of
# examples/showcase in it, npm packages installed, its build output gone but `.next/cache` kept).
copy_showcase() {
  WORK="$(mktemp -d "$1")"
  APP="$WORK/app"
  local src="$ROOT/examples/showcase"
  if [[ ! -f "$src/node_modules/next/package.json" ]]; then bash "$ROOT/scripts/npm-install.sh" "$src" >&2; fi
  log "copying the showcase to $APP"
  cp -a --reflink=auto "$(readlink -f "$src")" "$APP"
  rm -rf "$APP/.ferry" "$APP/.ferry-cache"
  find "$APP/.next" -mindepth 1 -maxdepth 1 ! -name cache -exec rm -rf {} + 2>/dev/null || true
}

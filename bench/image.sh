#!/usr/bin/env bash
# /_next/image: Ferry's Rust optimizer vs next start (sharp), on the same build.
#
# Usage: bench/image.sh
# Environment:
#   BENCH_PORT_BASE=41400  ports BASE+1 (next start) and BASE+2 (ferry) on 127.0.0.1
#   BENCH_DURATION=10      seconds of wrk for the warm (cached) rate
#   BENCH_REPEATS=5        transforms per type for the codec medians
#   BENCH_RUNS=3           serving runs (fresh servers, empty caches each); medians are reported
#   BENCH_BURST=64         concurrent distinct cold requests for the peak-RSS burst
#   BENCH_OUT=bench/results/image.md  where the serving table is written too
#   FERRY_ENV="VAR=value ..."  extra environment for `ferry start` (experiments)
#   FERRY_BIN=path         ferry binary (default target/release/ferry, built when missing)
#   BENCH_SKIP_SERVE=1     only the codec comparison
#   BENCH_SKIP_CODECS=1    only the serving comparison
#   BENCH_TYPES=jpeg,png,webp,avif  output types of the codec comparison
#
# 1. Codecs: for each fixture (crates/ferry-image/tests/fixtures; alpha.png at 128 and at its own
#    240 px), a 2700x1800 JPEG and the showcase's ferry.png,
#    Ferry's transform (examples/transform.rs, release) and sharp with next's settings
#    (bench/image-sharp.cjs) at the same width and quality: bytes, SSIM against a lossless
#    resize, median transform time. AVIF: libaom with the `avif-aom` feature (built when cmake
#    and nasm are installed; src/aom.rs), else rav1e (transform::AVIF_SPEED), vs sharp's
#    libheif + aom at next's `quality * 50 / 80`, effort 3.
# 2. Serving: one `ferry build` of the showcase (+ the fixtures and a 2700x1800 photo in
#    public/corpus), then BENCH_RUNS times, for next start and for `ferry start` in turn (fresh
#    server, empty image cache, server pinned to core 0, clients to core 1 as bench/run.sh):
#    - cold: median latency over distinct never-cached requests, one at a time (after one
#      warm-up request for another key and the server idle: start-up costs are not counted);
#      also over the subset whose output is new (a width at or above the source's own gives the
#      same bytes as the source's width, and Ferry shares that transform: the subset is what
#      both servers must decode and encode);
#    - burst: BENCH_BURST distinct cold requests at once; peak RSS of the server's whole session
#      (Ferry's Node workers included), sampled every 20 ms, and the burst's wall time;
#    - warm: wrk -t1 -c16 on one cached URL.
#    Prints a markdown table (medians over the runs, ratios) and writes it to BENCH_OUT.
#    Everything started is stopped on exit.
set -euo pipefail
BENCH_LOG_PREFIX=image-bench
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PORT_BASE="${BENCH_PORT_BASE:-41400}"
NEXT_PORT=$((PORT_BASE + 1)); FERRY_PORT=$((PORT_BASE + 2))
DURATION="${BENCH_DURATION:-10}"; REPEATS="${BENCH_REPEATS:-5}"; CONNS=16
SRC="$ROOT/examples/showcase"
FIX="$ROOT/crates/ferry-image/tests/fixtures"
export NODE_PATH="$SRC/node_modules"
# The serving part works on a fresh copy of the showcase (WORK holds it); the codecs alone on a
# bare temp dir.
if [[ "${BENCH_SKIP_SERVE:-0}" != 1 ]]; then
  copy_showcase /tmp/ferry-image-bench.XXXXXX
else
  WORK="$(mktemp -d /tmp/ferry-image-bench.XXXXXX)"
fi

# --- 1. codecs ---------------------------------------------------------------------------------
if [[ "${BENCH_SKIP_CODECS:-0}" != 1 ]]; then
log "building the transform example (release)"
# rav1e's assembly (AVIF) needs nasm at build time, libaom (AVIF with sharp's encoder) cmake and
# nasm: on when they are installed, and libaom with `tune=iq` linked when it can be built, as in
# scripts/test.sh (scripts/lib.sh's codec_setup).
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
codec_setup >&2
feat=(${FERRY_IMAGE_FEATURES[@]+"${FERRY_IMAGE_FEATURES[@]}"}) # ferry-image's own features
(cd "$ROOT" && cargo build --release -q -p ferry-image --example transform ${feat[@]+"${feat[@]}"} >&2)
EX="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/transform"
TYPES="${BENCH_TYPES:-jpeg,png,webp,avif}"
echo "## Codecs: Ferry vs sharp (next's settings), same width and quality"
echo
echo "| source | type | sharp bytes | Ferry bytes | Ferry vs sharp | sharp SSIM | Ferry SSIM | sharp ms | Ferry ms |"
echo "|---|---|---|---|---|---|---|---|---|"
# A camera-sized JPEG too: the size where shrink-on-load decides the time.
node -e "require('sharp')(process.argv[1]).resize(2700).jpeg({quality:90}).toFile(process.argv[2])" \
  "$FIX/photo.jpg" "$WORK/large.jpg"
for spec in "$FIX/photo.jpg 640" "$WORK/large.jpg 640" "$FIX/alpha.png 128" "$FIX/alpha.png 240" "$FIX/photo.webp 256" "$SRC/public/ferry.png 640"; do
  set -- $spec
  d="$WORK/codec-$(basename "$1")"; mkdir -p "$d"
  ms="{"; while read -r ext bytes t; do ms+="\"$ext\":$t,"; done < <(FERRY_TYPES="$TYPES" "$EX" "$1" "$d" "$2" 75 "$REPEATS")
  TYPES="$TYPES" FERRY_MS="${ms%,}}" node "$ROOT/bench/image-sharp.cjs" "$1" "$d" "$2" 75 "$REPEATS"
done
echo
fi
[[ "${BENCH_SKIP_SERVE:-0}" == 1 ]] && exit 0

# --- 2. serving --------------------------------------------------------------------------------
RUNS="${BENCH_RUNS:-3}"; BURST="${BENCH_BURST:-64}"; OUT="${BENCH_OUT:-$RESULTS_DIR/image.md}"
for tool in taskset setsid curl wrk ps node; do command -v "$tool" >/dev/null || die "$tool not found"; done
[[ -x "$FERRY" ]] || die "no ferry binary at $FERRY"
mkdir -p "$APP/public/corpus"; cp "$FIX"/* "$APP/public/corpus/"
# A camera-sized source (4.9 MP): what makes transforms and their memory costly.
node -e "require('sharp')(process.argv[1]).resize(2700).jpeg({quality:90}).toFile(process.argv[2])" \
  "$FIX/photo.jpg" "$APP/public/corpus/large.jpg"
log "ferry build"
(cd "$APP" && "$FERRY" build "$APP" >"$WORK/build.log" 2>&1) || { tail -20 "$WORK/build.log"; exit 1; }

SERVER=""
start_server() { # next|ferry PORT: fresh server on core 0, empty image caches; sets SERVER
  rm -rf "$APP/.next/cache/images" "$APP/.ferry-cache/cache/images"
  if [[ $1 == next ]]; then
    start_bg "$WORK/$1.log" env NEXT_TELEMETRY_DISABLED=1 node "$APP/node_modules/next/dist/bin/next" start "$APP" -p "$2" -H 127.0.0.1
  else
    # shellcheck disable=SC2086 # FERRY_ENV: extra VAR=value words for experiments (e.g. MALLOC_ARENA_MAX=2)
    start_bg "$WORK/$1.log" env ${FERRY_ENV:-} "$FERRY" start "$APP" -p "$2" -H 127.0.0.1
  fi
  SERVER=$BG_PID
  if ! wait_200 "http://127.0.0.1:$2/" 30 "$SERVER"; then
    log "$1 did not come up:"; tail -20 "$WORK/$1.log" >&2; exit 1
  fi
  # One-time start costs are not a transform's: next start loads its image optimizer and sharp
  # on the first /_next/image request, Ferry builds its optimizer then and boots its Node
  # workers after the first 200. One request for a key no measurement uses, then quiet.
  curl -s -o /dev/null -H 'Accept: */*' "http://127.0.0.1:$2$WARMUP_URL"
  wait_idle "$SERVER"
}
session_rss_kb() { ps -s "$1" -o rss= 2>/dev/null | awk '{s+=$1} END {print s+0}'; }

# Requests: every (source, width, Accept) pair is a distinct cache key. Accept `image/webp`
# gives WebP, `*/*` the source's own type (JPEG for a WebP source).
IMGS=(corpus/large.jpg corpus/photo.jpg corpus/rotated.jpg corpus/alpha.png corpus/photo.webp ferry.png)
WIDTHS=(3840 2048 1920 1200 1080 828 750 640 384 256 128 96 64 48 32)
url() { local i=$1; echo "/_next/image?url=%2F${i//\//%2F}&w=$2&q=75"; }
COLD=(); BURSTSET=()
for img in "${IMGS[@]}"; do for w in 256 384 640 750 828; do COLD+=("image/webp $(url "$img" "$w")"); done; done
for w in "${WIDTHS[@]}"; do for img in "${IMGS[@]}"; do for acc in 'image/webp' '*/*'; do
  e="$acc $(url "$img" "$w")"
  [[ " ${COLD[*]} " == *" $e "* ]] || BURSTSET+=("$e")
done; done; done
BURSTSET=("${BURSTSET[@]:0:$BURST}")
# Which cold requests have an output no earlier one had: never upscaled, a width at or above the
# source's upright width gives the same bytes as the source's own width (Ferry then shares one
# transform, src/outputs.rs; next start transforms every key). OWN[i] = 1 for a new output.
declare -A UPRIGHT
for img in "${IMGS[@]}"; do
  UPRIGHT[$img]="$(node -e "require('sharp')(process.argv[1]).metadata().then(m => console.log((m.orientation || 1) >= 5 ? m.height : m.width))" "$APP/public/$img")"
done
OWN=(); declare -A SEEN
for e in "${COLD[@]}"; do
  q="${e#*url=%2F}"; img="${q%%&*}"; img="${img//%2F//}"; w="${q#*&w=}"; w="${w%%&*}"
  (( w > UPRIGHT[$img] )) && w=${UPRIGHT[$img]}
  if [[ -n "${SEEN[$img $w]:-}" ]]; then OWN+=(0); else OWN+=(1); SEEN[$img $w]=1; fi
done
N_OWN=0; for o in "${OWN[@]}"; do N_OWN=$((N_OWN + o)); done
WARM_URL="$(url corpus/photo.jpg 640)"
WARMUP_URL="$(url ferry.png 32)" # the last width: in neither the cold nor the burst set

# median of lib.sh, one decimal (the table's format).
median1() { median | awk '$1 == "n/a" {print; next} {printf "%.1f\n", $1}'; }
cold() { # PORT: "median_all median_own": ms over the distinct cold requests, one at a time,
  # and over those with a new output (OWN)
  local e i=0 t all=() own=()
  for e in "${COLD[@]}"; do
    t="$(taskset -c 1 curl -s -o /dev/null -H "Accept: ${e%% *}" -w '%{time_total}' "http://127.0.0.1:$1${e#* }" | awk '{print $1*1000}')"
    all+=("$t"); (( OWN[i] )) && own+=("$t"); i=$((i + 1))
  done
  echo "$(echo "${all[*]}" | median1) $(echo "${own[*]}" | median1)"
}
burst() { # PORT SESSION: prints "peak_rss_mb wall_ms non_200_count idle_rss_mb main_peak_rss_mb"
  local base peak=0 r t0 t1 sampler
  base="$(session_rss_kb "$2")"
  # Whole session, and the server process alone (Ferry's Rust process; next start's main process).
  ( pk=0; pm=0; while :; do
      r="$(session_rss_kb "$2")"; m="$(ps -o rss= -p "$2" 2>/dev/null | awk '{print $1+0}')"
      (( r > pk )) && { pk=$r; echo "$pk" > "$WORK/peak"; }
      (( ${m:-0} > pm )) && { pm=$m; echo "$pm" > "$WORK/peak-main"; }
      sleep 0.02; done ) &
  sampler=$!
  t0=$(date +%s%N)
  printf '%s\n' "${BURSTSET[@]}" | taskset -c 1 xargs -P "$BURST" -I{} sh -c \
    'e="$1"; curl -s -o /dev/null -w "%{http_code}\n" --max-time 120 -H "Accept: ${e%% *}" "http://127.0.0.1:$2${e#* }"' _ {} "$1" > "$WORK/codes"
  t1=$(date +%s%N)
  sleep 0.1; kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  peak="$(cat "$WORK/peak" 2>/dev/null || echo "$base")"; main="$(cat "$WORK/peak-main" 2>/dev/null || echo 0)"
  rm -f "$WORK/peak" "$WORK/peak-main"
  echo "$(( peak / 1024 )) $(( (t1 - t0) / 1000000 )) $(grep -vc '^200$' "$WORK/codes" || true) $(( base / 1024 )) $(( main / 1024 ))"
}
warm() { # PORT: requests/s on one cached URL
  curl -s -o /dev/null -H 'Accept: image/webp' "http://127.0.0.1:$1$WARM_URL"
  curl -s -o /dev/null -H 'Accept: image/webp' "http://127.0.0.1:$1$WARM_URL"
  run_wrk "http://127.0.0.1:$1$WARM_URL" 'Accept: image/webp'
  echo "$WRK_RPS"
}

declare -A R
for run in $(seq 1 "$RUNS"); do
  for s in next ferry; do
    port=$NEXT_PORT; [[ $s == ferry ]] && port=$FERRY_PORT
    start_server "$s" "$port"
    read -r c co < <(cold "$port")
    read -r peak wall bad base main < <(burst "$port" "$SERVER")
    w="$(warm "$port")"
    stop_bg "$SERVER"
    log "run $run $s: cold ${c} ms (new outputs ${co} ms), burst peak ${peak} MB (idle ${base} MB, server process ${main} MB) in ${wall} ms (${bad} non-200), warm ${w} req/s"
    R[$s,cold]+="$c "; R[$s,coldown]+="$co "; R[$s,peak]+="$peak "; R[$s,base]+="$base "; R[$s,wall]+="$wall "; R[$s,warm]+="$w "; R[$s,bad]+="$bad "; R[$s,main]+="$main "
  done
done
med() { median1; }
declare -A M
for k in cold coldown peak base wall warm bad main; do for s in next ferry; do M[$s,$k]="$(echo "${R[$s,$k]}" | med)"; done; done
num() { echo "${1%×}"; } # lib.sh's ratio, as a number
pass() { awk -v v="$1" -v t="$2" -v d="$3" 'BEGIN {print ((d == "ge" ? v >= t : v <= t) ? "yes" : "**no**")}'; }
CR="$(num "$(ratio "${M[next,cold]}" "${M[ferry,cold]}")")"
COR="$(num "$(ratio "${M[next,coldown]}" "${M[ferry,coldown]}")")"
WR="$(num "$(ratio "${M[ferry,warm]}" "${M[next,warm]}")")"
PR="$(num "$(ratio "${M[ferry,peak]}" "${M[next,peak]}")")"
{
  echo "# /_next/image: Ferry vs next start — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "examples/showcase + public/corpus (fixtures, a 2700×1800 JPEG), one \`ferry build\`; next $(node -p "require('$APP/node_modules/next/package.json').version") (sharp $(node -p "require('$APP/node_modules/sharp/package.json').version")), node $(node -v)."
  echo "Each server alone, fresh and with an empty image cache per run, pinned to core 0; clients on core 1."
  echo "Medians of $RUNS runs (per-run values in parentheses). CPU: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores (shared machine)."
  echo
  echo "| measure | next start | Ferry | ratio | target | met |"
  echo "|---|---|---|---|---|---|"
  echo "| cold transform, median latency of ${#COLD[@]} distinct requests (WebP, w 256–828), ms | ${M[next,cold]} (${R[next,cold]% }) | ${M[ferry,cold]} (${R[ferry,cold]% }) | ${CR}× faster | ≥ 2× | $(pass "$CR" 2 ge) |"
  echo "| … of which the ${N_OWN} whose output no earlier request had (a decode + encode in both servers; the other $(( ${#COLD[@]} - N_OWN )) ask a width above the source's, which Ferry serves from the transform already made), ms | ${M[next,coldown]} (${R[next,coldown]% }) | ${M[ferry,coldown]} (${R[ferry,coldown]% }) | ${COR}× faster | | |"
  echo "| warm (cached) req/s, \`wrk -t1 -c16 -d${DURATION}s\` | ${M[next,warm]} (${R[next,warm]% }) | ${M[ferry,warm]} (${R[ferry,warm]% }) | ${WR}× | ≥ 10× | $(pass "$WR" 10 ge) |"
  echo "| peak RSS during a burst of ${#BURSTSET[@]} concurrent cold requests, MB (whole process tree) | ${M[next,peak]} (${R[next,peak]% }) | ${M[ferry,peak]} (${R[ferry,peak]% }) | $(awk -v r="$PR" 'BEGIN {printf "%.0f", r * 100}') % | ≤ 50 % | $(pass "$PR" 0.5 le) |"
  echo "| peak RSS of the server process alone during the burst, MB (Ferry: without its Node workers) | ${M[next,main]} | ${M[ferry,main]} | | | |"
  echo "| idle RSS before the burst, MB (whole process tree) | ${M[next,base]} | ${M[ferry,base]} | | | |"
  echo "| burst wall time, ms | ${M[next,wall]} (${R[next,wall]% }) | ${M[ferry,wall]} (${R[ferry,wall]% }) | $(ratio "${M[next,wall]}" "${M[ferry,wall]}") faster | | |"
  echo "| burst responses other than 200 (median) | ${M[next,bad]} | ${M[ferry,bad]} | | | |"
  echo
  echo "Burst: widths 3840 → 32 over all sources, \`Accept: image/webp\` and \`*/*\` (source type), the ${#BURSTSET[@]} largest pairs not in the cold set."
} | tee "$OUT.tmp"
mv "$OUT.tmp" "$OUT"

#!/usr/bin/env bash
# /_next/image output quality on a wider corpus: Ferry's transform vs sharp with next's settings.
#
# The issue's target: for every source and output type, Ferry's file is within 10 % of sharp's
# bytes at equal or better SSIM. bench/image.sh's codec section measures six cases; this bench
# runs ~20 images of every kind (photos, screenshots with text, diagrams, logos, gradients,
# alpha icons and cut-outs, grayscale, images under 100 px; bench/corpus/README.md) at several
# widths, so that every gap stays visible.
#
# Usage: bench/image-corpus.sh
# Environment:
#   BENCH_TYPES=jpeg,png,webp,avif  output types
#   BENCH_WIDTHS="3840 640 256"     requested widths; each image is measured at min(w, its own
#                                   width), duplicates dropped (next never enlarges)
#   BENCH_QUALITIES=75              next's `q` values, e.g. "50 75 90"
#   BENCH_ONLY=regex                only the sources whose name matches (quick checks)
#   BENCH_JOBS=2                    cases run at once (the figures do not depend on it)
#   BENCH_OUT=bench/results/image-corpus.md  where the tables are written
#   BENCH_APPEND=1                  append to BENCH_OUT instead of replacing it
#   BENCH_TRANSFORM=path            a transform example binary to measure instead of building one
#   BENCH_KEEP=1                    keep the temp dir (sources and every output file)
#
# Per case (source × width × type × q): Ferry's transform (crates/ferry-image/examples/
# transform.rs, release; AVIF with libaom when built with `avif-aom`, which needs cmake and nasm)
# and sharp with next's optimizer settings (bench/image-sharp.cjs, one encode each), both scored
# by image-sharp.cjs: SSIM of the luma over white, 8×8 windows, against sharp's lossless resize.
# PASS = Ferry bytes ≤ 1.10 × sharp bytes AND Ferry SSIM ≥ sharp SSIM, compared exactly on the
# 4-decimal values image-sharp.cjs prints (a difference under 0.00005 counts as equal).
#
# Sources: the generated ones are drawn at bench time by bench/image-corpus.cjs (sharp renders
# SVG; text in DejaVu Sans, so a machine without those fonts draws other glyphs: the corpus table
# lists each source's SHA-256 to compare runs); the rest are the ferry-image test fixtures, the
# showcase's ferry.png and the screenshots committed in bench/corpus/. No network; needs node,
# the showcase's npm packages (installed with scripts/npm-install.sh when missing) and cargo.
# Takes 1–2 min per quality on the 2-core development machine (~200 cases each).
set -euo pipefail
BENCH_LOG_PREFIX=image-corpus
# This bench never runs the ferry binary; lib.sh builds one unless FERRY_BIN is set.
FERRY_BIN="${FERRY_BIN:-unused}"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TYPES="${BENCH_TYPES:-jpeg,png,webp,avif}"
read -r -a WIDTHS <<<"${BENCH_WIDTHS:-3840 640 256}"
read -r -a QUALITIES <<<"${BENCH_QUALITIES:-75}"
ONLY="${BENCH_ONLY:-}"
JOBS="${BENCH_JOBS:-2}"
OUT="${BENCH_OUT:-$RESULTS_DIR/image-corpus.md}"
SHOW="$ROOT/examples/showcase"
FIX="$ROOT/crates/ferry-image/tests/fixtures"
export NODE_PATH="$SHOW/node_modules"
command -v node >/dev/null || die "node not found"
if [[ ! -f "$SHOW/node_modules/sharp/package.json" ]]; then
  log "installing the showcase's npm packages (sharp)"
  bash "$ROOT/scripts/npm-install.sh" "$SHOW" >&2
fi

# --- the transform example ---------------------------------------------------------------------
if [[ -n "${BENCH_TRANSFORM:-}" ]]; then
  EX="$(readlink -f "$BENCH_TRANSFORM")"
  AVIF_ENC="given binary ($BENCH_TRANSFORM)"
else
  # As scripts/test.sh: rav1e's assembly with nasm, libaom with nasm and cmake (scripts/lib.sh's
  # codec_setup, which also links the libaom with sharp's `tune=iq` when it can be built).
  # shellcheck source=scripts/lib.sh
  source "$ROOT/scripts/lib.sh"
  codec_setup >&2
  feat=(${FERRY_IMAGE_FEATURES[@]+"${FERRY_IMAGE_FEATURES[@]}"})
  case "${feat[*]:-}" in
    *avif-aom*) AVIF_ENC="libaom ${FERRY_LIBAOM_VERSION:-3.11.0} (avif-aom)" ;;
    *avif-asm*) AVIF_ENC="rav1e (avif-asm)" ;;
    *) AVIF_ENC="rav1e, no asm" ;;
  esac
  log "building the transform example (release, ${feat[*]:-no features})"
  (cd "$ROOT" && cargo build --release -q -p ferry-image --example transform ${feat[@]+"${feat[@]}"} >&2)
  EX="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/transform"
fi
[[ -x "$EX" ]] || die "no transform example at $EX"

# --- the corpus ----------------------------------------------------------------------------------
WORK="$(mktemp -d /tmp/ferry-image-corpus.XXXXXX)"
log "generating the corpus in $WORK/src"
node "$ROOT/bench/image-corpus.cjs" generate "$WORK/src"
# A camera-sized JPEG (4.9 MP), made as bench/image.sh makes it.
node -e "require('sharp')(process.argv[1]).resize(2700).jpeg({quality:90}).toFile(process.argv[2])" \
  "$FIX/photo.jpg" "$WORK/src/large.jpg"
# name|path|kind, in table order.
CORPUS=(
  "photo.jpg|$FIX/photo.jpg|colour fields (fixture)"
  "large.jpg|$WORK/src/large.jpg|photo.jpg at 2700 px, q 90"
  "rotated.jpg|$FIX/rotated.jpg|EXIF orientation 6 (fixture)"
  "photo.webp|$FIX/photo.webp|colour checkerboard, WebP (fixture)"
  "landscape.jpg|$WORK/src/landscape.jpg|photo-like: clouds, rock, grass, grain"
  "bokeh.webp|$WORK/src/bokeh.webp|photo-like: blur, shaded textured subject, WebP"
  "stone-gray.jpg|$WORK/src/stone-gray.jpg|grayscale (1-channel) texture"
  "thumb-96.jpg|$WORK/src/thumb-96.jpg|small photo"
  "ui.png|$WORK/src/ui.png|UI screenshot, text"
  "terminal.png|$WORK/src/terminal.png|terminal screenshot, text"
  "rustdoc-page.png|$ROOT/bench/corpus/rustdoc-page.png|browser screenshot (Rust book)"
  "rustdoc-trait-impls.png|$ROOT/bench/corpus/rustdoc-trait-impls.png|small browser screenshot (rustdoc book)"
  "diagram.png|$WORK/src/diagram.png|diagram, line art, palette PNG"
  "cargo-timings-chart.png|$ROOT/bench/corpus/cargo-timings-chart.png|chart, alpha (Cargo book)"
  "ferry.png|$SHOW/public/ferry.png|flat logo (showcase)"
  "gradient.png|$WORK/src/gradient.png|smooth gradients"
  "icon.png|$WORK/src/icon.png|flat icon, soft shadow, alpha"
  "cutout.png|$WORK/src/cutout.png|textured cut-out, feathered alpha"
  "alpha.png|$FIX/alpha.png|gradient with alpha (fixture)"
  "icon-48.png|$WORK/src/icon-48.png|small icon, alpha"
)
# Real photographs and screenshots, read in place from the Rust toolchain's documentation (the
# rust-docs component, CC-BY-SA 4.0 for the embedded book's prose and figures, MIT/Apache-2.0 for
# the Rust book; not copied into the repository). The only camera photos on a machine without
# network: without rust-docs the report says they were left out.
DOCS="$(rustc --print sysroot 2>/dev/null)/share/doc/rust/html"
DOC_IMAGES=(
  "docs-f3.jpg|$DOCS/embedded-book/assets/f3.jpg|camera photo: circuit board, progressive JPEG (Embedded Rust book)"
  "docs-verify.jpeg|$DOCS/embedded-book/assets/verify.jpeg|camera photo: board and cables (Embedded Rust book)"
  "docs-nrf52-map.png|$DOCS/embedded-book/assets/nrf52-memory-map.png|datasheet screenshot, dense text (Embedded Rust book)"
  "docs-trpl14-03.png|$DOCS/book/img/trpl14-03.png|browser screenshot (Rust book)"
)
DOCS_MISSING=()
for entry in "${DOC_IMAGES[@]}"; do
  IFS='|' read -r name file _ <<<"$entry"
  if [[ -f "$file" ]]; then CORPUS+=("$entry"); else DOCS_MISSING+=("$name"); fi
done
(( ${#DOCS_MISSING[@]} == 0 )) || log "rust-docs images not found, left out: ${DOCS_MISSING[*]}"
CASES=() # "name|path|width"
corpus_rows=()
for entry in "${CORPUS[@]}"; do
  IFS='|' read -r name file kind <<<"$entry"
  [[ -z "$ONLY" || "$name" =~ $ONLY ]] || continue
  [[ -f "$file" ]] || die "missing corpus image $file"
  IFS=$'\t' read -r _ w h ch sha < <(node "$ROOT/bench/image-corpus.cjs" info "$file")
  corpus_rows+=("| $name | $kind | ${w}×${h} | $ch | $(stat -c %s "$file") | \`$sha\` |")
  seen=" "
  for rw in "${WIDTHS[@]}"; do
    ew=$(( rw < w ? rw : w ))
    [[ "$seen" == *" $ew "* ]] && continue
    seen+="$ew "
    CASES+=("$name|$file|$ew")
  done
done
(( ${#CASES[@]} > 0 )) || die "no corpus image matches BENCH_ONLY=$ONLY"

# --- the cases -----------------------------------------------------------------------------------
# run_case INDEX NAME FILE WIDTH Q: writes "name|width|q|type|sharp bytes|ferry bytes|sharp
# ssim|ferry ssim" lines to $WORK/rows/INDEX ("error" where a side failed; its log says why).
run_case() {
  local idx=$1 name=$2 file=$3 w=$4 q=$5 d="$WORK/out/$1" t ok=()
  mkdir -p "$d"
  # One type per run: the example stops at the first type that fails.
  for t in ${TYPES//,/ }; do
    if FERRY_TYPES="$t" "$EX" "$file" "$d" "$w" "$q" 1 >>"$d/ferry.log" 2>&1; then
      ok+=("$t")
    else
      log "Ferry failed on $name at $w, q $q, $t: $(tail -1 "$d/ferry.log")"
      echo "$name|$w|$q|$t|error|error|error|error" >>"$d/rows"
    fi
  done
  if (( ${#ok[@]} > 0 )); then
    if TYPES="$(IFS=,; echo "${ok[*]}")" node "$ROOT/bench/image-sharp.cjs" "$file" "$d" "$w" "$q" 1 >"$d/sharp.log" 2>&1; then
      # image-sharp.cjs's row: | source | type | sharp bytes | Ferry bytes | % | sharp SSIM | Ferry SSIM | ms | ms |
      awk -F'|' -v n="$name" -v w="$w" -v q="$q" '/^\|/ { gsub(/ /, ""); print n "|" w "|" q "|" $3 "|" $4 "|" $5 "|" $7 "|" $8 }' \
        "$d/sharp.log" >>"$d/rows"
    else
      log "sharp side failed on $name at $w, q $q: $(tail -1 "$d/sharp.log")"
      for t in "${ok[@]}"; do echo "$name|$w|$q|$t|error|error|error|error"; done >>"$d/rows"
    fi
  fi
  # Back in type order.
  for t in ${TYPES//,/ }; do awk -F'|' -v t="$t" '$4 == t' "$d/rows"; done >"$WORK/rows/$idx"
  # Keep only the logs unless asked (a 2700 px PNG pair is ~2.5 MB).
  [[ "${BENCH_KEEP:-0}" == 1 ]] || rm -f "$d"/ferry.{jpeg,png,webp,avif} "$d"/sharp.{jpeg,png,webp,avif}
}

mkdir -p "$WORK/rows" "$WORK/out"
# Ctrl-C: stop the cases running in the background too (lib.sh's EXIT trap removes WORK).
trap 'log interrupted; kill $(jobs -p) 2>/dev/null; exit 130' INT TERM
total=$(( ${#CASES[@]} * ${#QUALITIES[@]} ))
log "${#CASES[@]} sizes × ${#QUALITIES[@]} qualities × types $TYPES, $JOBS at once"
idx=0
running=0
for q in "${QUALITIES[@]}"; do
  for c in "${CASES[@]}"; do
    IFS='|' read -r name file w <<<"$c"
    idx=$((idx + 1))
    printf -v key '%05d' "$idx"
    run_case "$key" "$name" "$file" "$w" "$q" &
    running=$((running + 1))
    if (( running >= JOBS )); then wait -n || true; running=$((running - 1)); fi
    if (( idx % 10 == 0 )); then log "$idx / $total"; fi
  done
done
wait

# --- the report ----------------------------------------------------------------------------------
# Rows with the verdict appended; the rows come in corpus order, then width, type order kept.
cat "$WORK"/rows/* | awk -F'|' -v OFS='|' '{
    pass = ($5 != "error" && $6 != "error" && $6 * 100 <= $5 * 110 && $8 + 0 >= $7 + 0) ? "PASS" : "FAIL"
    delta = ($5 != "error" && $6 != "error") ? sprintf("%+.1f", ($6 / $5 - 1) * 100) : "n/a"
    print $0, delta, pass }' >"$WORK/all"

commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git -C "$ROOT" status --porcelain -- crates 2>/dev/null | grep -q . && echo ', crates/ modified' || true)"
cmd="BENCH_QUALITIES=\"${QUALITIES[*]}\" BENCH_TYPES=$TYPES"
[[ -n "${BENCH_WIDTHS:-}" ]] && cmd+=" BENCH_WIDTHS=\"${WIDTHS[*]}\""
[[ -n "$ONLY" ]] && cmd+=" BENCH_ONLY='$ONLY'"
{
  echo "# /_next/image corpus: Ferry vs sharp — q ${QUALITIES[*]}, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "\`$cmd bash bench/image-corpus.sh\`; commit $commit$dirty; sharp $(node -p "require('sharp').versions.sharp") (libvips $(node -p "require('sharp').versions.vips")), AVIF: $AVIF_ENC."
  echo "PASS: Ferry bytes ≤ 1.10 × sharp's AND Ferry SSIM ≥ sharp's (4 decimals as printed; luma over white, 8×8 windows, against sharp's lossless resize)."
  echo "JPEG output of a source with alpha is flattened onto black by both (libvips' default), so its SSIM against the reference over white is low on both sides and only their equality means something."
  echo
  if (( ${#DOCS_MISSING[@]} > 0 )); then
    echo "**Left out** (the toolchain's rust-docs component is not installed): ${DOCS_MISSING[*]}."
    echo
  fi
  echo "| source | kind | size | channels | bytes | sha256 |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${corpus_rows[@]}"
  echo
  echo "| source | width | type | q | sharp bytes | Ferry bytes | Δ bytes % | sharp SSIM | Ferry SSIM | result |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  awk -F'|' '{ r = $10 == "FAIL" ? "**FAIL**" : "PASS"
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $4, $3, $5, $6, $9, $7, $8, r }' "$WORK/all"
  echo
  echo "**Pass counts**"
  echo
  for q in "${QUALITIES[@]}"; do
    for t in ${TYPES//,/ }; do
      awk -F'|' -v t="$t" -v q="$q" '$4 == t && $3 == q { m++; if ($10 == "PASS") n++
          if ($1 ~ /^docs-/) { dm++; if ($10 == "PASS") dn++ } }
        END { printf "- q %s %s: %d of %d pass%s\n", q, t, n, m, dm ? sprintf(" (the real docs-* images: %d of %d)", dn, dm) : "" }' "$WORK/all"
    done
  done
  echo
  echo "**Largest byte excess and SSIM deficit per type** (failing cases; \"bytes\": Ferry over sharp, \"SSIM\": sharp minus Ferry)"
  echo
  for q in "${QUALITIES[@]}"; do
    for t in ${TYPES//,/ }; do
      over="$(awk -F'|' -v t="$t" -v q="$q" '$4 == t && $3 == q && $10 == "FAIL" && $9 != "n/a" && $9 + 0 > 10 { printf "%s\t%s %s %+.1f %% (SSIM %s vs %s)\n", $9, $1, $2, $9, $8, $7 }' "$WORK/all" | sort -t$'\t' -k1,1gr | head -5 | cut -f2 | paste -sd';' | sed 's/;/; /g')"
      under="$(awk -F'|' -v t="$t" -v q="$q" '$4 == t && $3 == q && $10 == "FAIL" && $9 != "n/a" && $8 + 0 < $7 + 0 { printf "%.4f\t%s %s −%.4f (%s vs %s, %+.1f %% bytes)\n", $7 - $8, $1, $2, $7 - $8, $8, $7, $9 }' "$WORK/all" | sort -t$'\t' -k1,1gr | head -5 | cut -f2 | paste -sd';' | sed 's/;/; /g')"
      errors="$(awk -F'|' -v t="$t" -v q="$q" '$4 == t && $3 == q && $9 == "n/a" { printf "%s %s; ", $1, $2 }' "$WORK/all")"
      echo "- q $q $t — bytes: ${over:-none}. SSIM: ${under:-none}.${errors:+ Errors: ${errors%; }.}"
    done
  done
} >"$WORK/report.md"

mkdir -p "$(dirname "$OUT")"
if [[ "${BENCH_APPEND:-0}" == 1 && -f "$OUT" ]]; then
  { echo; cat "$WORK/report.md"; } >>"$OUT"
else
  cp "$WORK/report.md" "$OUT"
fi
cat "$WORK/report.md"
log "written to $OUT"

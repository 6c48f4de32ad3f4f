# Shared by the scripts (source it): system packages and the cargo features they allow.

# apt_install CMD PKG [optional]: installs Debian package PKG with apt-get when command CMD is
# missing. Required packages fail the script when they cannot be installed; optional ones only
# print a note, and are tried only as root or with password-less sudo (never a password prompt).
apt_install() {
  local cmd=$1 pkg=$2 optional=${3:-} sudo_cmd=""
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
  if [ -n "$optional" ]; then
    if ! command -v apt-get >/dev/null 2>&1 || { [ -n "$sudo_cmd" ] && ! sudo -n true 2>/dev/null; }; then
      echo "== $pkg not installed (optional: no apt-get or no password-less sudo)"
      return 0
    fi
  fi
  echo "== apt: $pkg${optional:+ (optional)}"
  if { $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$pkg" >/dev/null; }; then
    return 0
  fi
  [ -n "$optional" ] && { echo "   ($pkg could not be installed: going on without it)"; return 0; }
  echo "error: could not install $pkg" >&2
  return 1
}

# codec_setup: installs nasm and cmake when possible (libjpeg-turbo's SIMD in mozjpeg and rav1e's
# assembly for AVIF are built with nasm; libaom, sharp's AV1 encoder, with cmake and nasm) and
# sets FERRY_FEATURES to the cargo arguments that turn rav1e's assembly (`avif-asm`) and AVIF
# through libaom (`avif-aom`) on, and FERRY_IMAGE_FEATURES to the same for ferry-image alone.
# Without them everything still builds (mozjpeg falls back to C by itself; rav1e's build script
# would panic without nasm and libaom-sys's without cmake, so those features stay off), with
# slower JPEG/AVIF codecs and rav1e for AVIF. With libaom, `libaom_setup` (below) links the
# libaom that has sharp's `tune=iq`.
codec_setup() {
  apt_install nasm nasm optional
  apt_install cmake cmake optional
  FERRY_FEATURES=()
  FERRY_IMAGE_FEATURES=()
  if command -v nasm >/dev/null 2>&1; then
    FERRY_FEATURES=(--features ferry-cli/avif-asm)
    FERRY_IMAGE_FEATURES=(--features avif-asm)
    if command -v cmake >/dev/null 2>&1; then
      FERRY_FEATURES+=(--features ferry-cli/avif-aom)
      FERRY_IMAGE_FEATURES+=(--features avif-aom)
      libaom_setup
    fi
  fi
}

# The libaom release libaom_setup builds: version, source tarball in Debian's archive (sid), its
# SHA-256. libaom-sys (the crate) vendors 3.11.0, which lacks `tune=iq`, the tuning sharp codes
# AVIF with; 3.14 codes it as sharp's 3.15 does (3.12's early `iq` does not: docs/image.md,
# "AVIF"). Debian drops a tarball from its archive once no suite carries that release: then
# the scripts say so and AVIF falls back to libaom-sys's 3.11.
LIBAOM_RELEASES=(
  "3.14.1 https://deb.debian.org/debian/pool/main/a/aom/aom_3.14.1.orig.tar.xz 4ef9882eda023582499511b845f4d4368a34c9886f545a7eea4ca20799d3c161"
)

# libaom_setup: builds the first of LIBAOM_RELEASES that can be fetched and checks out (encoder
# only, static, Release, as libaom-sys builds its own) into <target dir>/libaom/<version>, once,
# and points libaom-sys at it (LIB_AOM_STATIC_LIB_PATH, LIB_AOM_INCLUDE_PATH,
# LIB_AOM_PKG_CONFIG_PATH; libaom-sys reruns its build script when they change).
# FERRY_LIBAOM_VERSION is exported for the test that checks the binary links it. When none can
# be had (no network, a checksum mismatch, a failed build) it says so and libaom-sys builds its
# own 3.11, coded with Ferry's stand-in tuning. FERRY_LIBAOM=vendored skips it.
libaom_setup() {
  [ "${FERRY_LIBAOM:-}" = vendored ] && { echo "== libaom: libaom-sys's own (FERRY_LIBAOM=vendored)"; return 0; }
  local root target entry ver url sha prefix
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  target="${CARGO_TARGET_DIR:-$root/target}"
  case "$target" in /*) ;; *) target="$root/$target" ;; esac
  for entry in "${LIBAOM_RELEASES[@]}"; do
    read -r ver url sha <<<"$entry"
    prefix="$target/libaom/$ver"
    if [ -f "$prefix/lib/libaom.a" ] || build_libaom "$ver" "$url" "$sha" "$prefix"; then
      export LIB_AOM_STATIC_LIB_PATH="$prefix/lib" LIB_AOM_INCLUDE_PATH="$prefix/include"
      export LIB_AOM_PKG_CONFIG_PATH="$prefix/lib/pkgconfig" FERRY_LIBAOM_VERSION="$ver"
      echo "== libaom $ver (tune=iq) from $prefix"
      return 0
    fi
  done
  echo "== libaom with tune=iq could not be had: AVIF is coded by libaom-sys's own 3.11"
  unset LIB_AOM_STATIC_LIB_PATH LIB_AOM_INCLUDE_PATH LIB_AOM_PKG_CONFIG_PATH FERRY_LIBAOM_VERSION
}

# build_libaom VERSION URL SHA256 PREFIX: fetch, verify, configure, build and install into
# PREFIX (through a temporary directory: an interrupted build leaves no half-installed PREFIX).
build_libaom() {
  local ver=$1 url=$2 sha=$3 prefix=$4 work tarball
  case "$url" in *.xz) apt_install xz xz-utils optional ;; esac
  work="$(mktemp -d "${TMPDIR:-/tmp}/ferry-libaom.XXXXXX")"
  tarball="$work/${url##*/}"
  echo "== libaom $ver: fetching ${url##*/}"
  # curl, else wget, else Node's fetch (Node is on every machine Ferry builds on).
  if ! { curl -fsSL --retry 2 --connect-timeout 20 --max-time 600 -o "$tarball" "$url" 2>/dev/null \
      || wget -q -T 60 -O "$tarball" "$url" 2>/dev/null \
      || node -e 'fetch(process.argv[1], { signal: AbortSignal.timeout(600000) })
          .then((r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); return r.arrayBuffer(); })
          .then((b) => require("fs").writeFileSync(process.argv[2], Buffer.from(b)))' "$url" "$tarball"; }; then
    echo "   (could not fetch $url)"; rm -rf "$work"; return 1
  fi
  if [ "$(sha256sum "$tarball" | cut -d' ' -f1)" != "$sha" ]; then
    echo "   (checksum mismatch for ${url##*/})"; rm -rf "$work"; return 1
  fi
  echo "== libaom $ver: building (cmake, encoder only; about a minute on 2 cores)"
  # Debian's 3.14.1 tarball holds the tree at its top; others put it under aom-<version>/.
  mkdir -p "$work/src" "$work/build" && tar xf "$tarball" -C "$work/src" 2>/dev/null
  local src="$work/src"
  [ -f "$src/CMakeLists.txt" ] || src="$(dirname "$(find "$work/src" -maxdepth 2 -name CMakeLists.txt | head -1)")"
  if ! { [ -f "$src/CMakeLists.txt" ] && cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DENABLE_DOCS=0 \
        -DENABLE_EXAMPLES=0 -DENABLE_TESTDATA=0 -DENABLE_TESTS=0 -DENABLE_TOOLS=0 \
        -DCONFIG_AV1_DECODER=0 -DCMAKE_INSTALL_PREFIX="$work/install" \
        -DCMAKE_INSTALL_LIBDIR=lib >"$work/cmake.log" 2>&1 \
      && cmake --build "$work/build" -j "$(nproc 2>/dev/null || echo 2)" >"$work/build.log" 2>&1 \
      && cmake --install "$work/build" >"$work/install.log" 2>&1; }; then
    echo "   (libaom $ver did not build; last lines of its log:)"
    tail -5 "$work"/*.log 2>/dev/null | sed 's/^/   /'
    rm -rf "$work"; return 1
  fi
  mkdir -p "$(dirname "$prefix")" && rm -rf "$prefix" && mv "$work/install" "$prefix"
  rm -rf "$work"
}

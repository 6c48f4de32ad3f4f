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
# through libaom (`avif-aom`) on. Without them everything still builds (mozjpeg falls back to C
# by itself; rav1e's build script would panic without nasm and libaom-sys's without cmake, so
# those features stay off), with slower JPEG/AVIF codecs and rav1e for AVIF.
codec_setup() {
  apt_install nasm nasm optional
  apt_install cmake cmake optional
  FERRY_FEATURES=()
  if command -v nasm >/dev/null 2>&1; then
    FERRY_FEATURES=(--features ferry-cli/avif-asm)
    if command -v cmake >/dev/null 2>&1; then FERRY_FEATURES+=(--features ferry-cli/avif-aom); fi
  fi
}

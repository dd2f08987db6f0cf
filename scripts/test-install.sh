#!/usr/bin/env bash
# The package as a user gets it: build cport (static and shared), install
# it into build/install-prefix, check what was installed, then build
# tests/consumer/ (an echo round trip over 127.0.0.1) against the installed
# copy only, and run it:
#   - find_package(cport): cport::cport (shared) and cport::cport_static
#   - CMake's pkg_check_modules(cport)
#   - plain cc with `pkg-config --cflags --libs cport` (shared) and
#     `pkg-config --static ...` (static libcport.a)
# Checks on the way: the SONAME, that the shared library exports exactly the
# CPORT_API functions, and that every public header compiles on its own as
# C11 and as C++11/C++17 with gcc and clang (where installed), warnings as
# errors. Exits non-zero on any failure. Linux (Debian) and macOS.
#
#   ./scripts/test-install.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

"$here/deps.sh"

log() { echo "test-install: $*" >&2; }
die() {
  log "FAILED: $*"
  exit 1
}

build="$repo_root/build/pkg-build"
prefix="$repo_root/build/install-prefix"
work="$repo_root/build/pkg-consumer"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)

# A C++ compiler, for the header check; Debian's gcc comes without one.
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 &&
  ! command -v clang++ >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing g++ with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
    --no-install-recommends g++ >/dev/null
fi

# ---- build and install ----
log "building and installing into $prefix"
cport_configure "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCPORT_WERROR=ON \
  -DCPORT_BUILD_TESTS=OFF -DCPORT_BUILD_EXAMPLES=OFF \
  -DCPORT_INSTALL=ON -DCPORT_BUILD_SHARED=ON \
  -DCMAKE_INSTALL_PREFIX="$prefix"
cport_build "$build"
rm -rf "$prefix" "$work"
cmake --install "$build" >/dev/null
mkdir -p "$work"

pcfile=$(find "$prefix" -name cport.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pcfile" ] || die "no cport.pc installed"
PKG_CONFIG_PATH="$(dirname "$pcfile")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PKG_CONFIG_PATH
libdir=$(pkg-config --variable=libdir cport)
incdir=$(pkg-config --variable=includedir cport)
[ "$(pkg-config --modversion cport)" = "$(sed -n \
  's/^project(cport VERSION \([0-9.]*\).*/\1/p' "$repo_root/CMakeLists.txt")" ] ||
  die "cport.pc's version is not the project's"
for f in "$libdir/libcport.a" "$libdir/cmake/cport/cportConfig.cmake" \
  "$libdir/cmake/cport/cportConfigVersion.cmake" "$incdir/cport/cport.h"; do
  [ -f "$f" ] || die "not installed: $f"
done
for h in "$repo_root"/include/cport/*.h; do
  cmp -s "$h" "$incdir/cport/$(basename "$h")" ||
    die "header not installed as is: $(basename "$h")"
done

# ---- the shared library: SONAME and exported symbols ----
case "$(uname -s)" in
  Linux)
    shared=$(find "$libdir" -maxdepth 1 -name 'libcport.so.*.*.*' | head -n 1)
    [ -n "$shared" ] || die "no libcport.so.X.Y.Z installed"
    soname=$(readelf -d "$shared" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
    [ -n "$soname" ] && [ -e "$libdir/$soname" ] ||
      die "SONAME '$soname' missing or not installed"
    exported() { nm -D --defined-only "$1" | awk '$2 ~ /^[TDBRW]$/ {print $3}'; }
    ;;
  Darwin)
    shared=$(find "$libdir" -maxdepth 1 -name 'libcport.*.*.*.dylib' | head -n 1)
    [ -n "$shared" ] || die "no libcport.X.Y.Z.dylib installed"
    soname=$(otool -D "$shared" | tail -n 1)
    exported() { nm -gU "$1" | awk '{sub(/^_/, "", $3); print $3}'; }
    ;;
  *) die "unsupported system $(uname -s)" ;;
esac
log "shared library $(basename "$shared"), SONAME $(basename "$soname")"
# Every function declared CPORT_API, and nothing else (no cport__ internals).
grep -ho 'CPORT_API[^(]*(' "$incdir"/cport/*.h | grep -v '^CPORT_API __' |
  sed 's/($//; s/.*[ *]//' | sort -u >"$work/declared"
exported "$shared" | sort -u >"$work/exported"
if ! diff -u "$work/declared" "$work/exported" >"$work/symbols.diff"; then
  cat "$work/symbols.diff" >&2
  die "exported symbols differ from the CPORT_API declarations (- declared only, + exported only)"
fi
log "exports exactly the $(wc -l <"$work/declared" | tr -d ' ') CPORT_API functions"

# ---- the public headers: alone, as C11 and as C++ ----
ccs=()
for c in gcc clang; do command -v "$c" >/dev/null 2>&1 && ccs+=("$c"); done
cxxs=()
for c in g++ clang++; do command -v "$c" >/dev/null 2>&1 && cxxs+=("$c"); done
[ ${#ccs[@]} -gt 0 ] || ccs=(cc)
[ ${#cxxs[@]} -gt 0 ] || cxxs=(c++)
warn=(-Wall -Wextra -Wpedantic -Werror)
# One declaration after the header, because ISO C forbids an empty
# translation unit (export.h alone declares nothing).
tu() { printf '#include <%s>\nextern int cport_header_check;\n' "$1"; }
for h in "$incdir"/cport/*.h; do
  name=cport/$(basename "$h")
  for c in "${ccs[@]}"; do
    tu "$name" | "$c" -std=c11 "${warn[@]}" -Wstrict-prototypes \
      -Wshadow -I"$incdir" -fsyntax-only -x c - ||
      die "$name alone as C11 with $c"
  done
  for c in "${cxxs[@]}"; do
    for std in c++11 c++17; do
      tu "$name" | "$c" -std="$std" "${warn[@]}" -I"$incdir" \
        -fsyntax-only -x c++ - || die "$name alone as $std with $c"
    done
  done
done
for c in "${cxxs[@]}"; do
  for std in c++11 c++17; do
    # shellcheck disable=SC2046 # pkg-config's output is a list of words
    "$c" -std="$std" "${warn[@]}" "$repo_root/tests/headers_cxx.cpp" \
      -o "$work/headers_cxx" $(pkg-config --cflags --libs cport) \
      -Wl,-rpath,"$libdir" || die "tests/headers_cxx.cpp as $std with $c"
    "$work/headers_cxx" >/dev/null || die "headers_cxx ($std, $c) failed"
  done
done
log "headers: each alone as C11 (${ccs[*]}) and C++11/17 (${cxxs[*]}): ok"

# ---- consumers ----
# needs_shared PROGRAM: does it load libcport's shared library?
needs_shared() {
  case "$(uname -s)" in
    Darwin) otool -L "$1" | grep -q 'libcport' ;;
    *) readelf -d "$1" | grep -q "NEEDED.*libcport" ;;
  esac
}

run_consumer() {
  local what=$1 exe=$2 want=$3
  "$exe" >"$work/out" 2>&1 || {
    cat "$work/out" >&2
    die "consumer ($what) failed"
  }
  if [ "$want" = shared ]; then
    needs_shared "$exe" || die "consumer ($what) does not load libcport's shared library"
  else
    ! needs_shared "$exe" || die "consumer ($what) loads libcport's shared library"
  fi
  log "consumer, $what ($want): $(cat "$work/out")"
}

for mode in shared static pkg-config; do
  dir="$work/cmake-$mode"
  cmake -S "$repo_root/tests/consumer" -B "$dir" ${generator[@]+"${generator[@]}"} \
    -DCMAKE_PREFIX_PATH="$prefix" -DCONSUMER_LINK="$mode" >"$work/configure-$mode.log" || {
    cat "$work/configure-$mode.log" >&2
    die "consumer configure ($mode)"
  }
  cmake --build "$dir" >"$work/build-$mode.log" || {
    cat "$work/build-$mode.log" >&2
    die "consumer build ($mode)"
  }
  case $mode in
    shared) run_consumer "find_package, cport::cport" "$dir/consumer" shared ;;
    static) run_consumer "find_package, cport::cport_static" "$dir/consumer" static ;;
    # -lcport with both libraries installed: the linker takes the shared one.
    pkg-config) run_consumer "pkg_check_modules" "$dir/consumer" shared ;;
  esac
done

cc=${CC:-cc}
# shellcheck disable=SC2046 # pkg-config's output is a list of words
"$cc" -std=c11 "${warn[@]}" "$repo_root/tests/consumer/consumer.c" \
  -o "$work/consumer-pc" $(pkg-config --cflags --libs cport) \
  -Wl,-rpath,"$libdir" || die "cc with pkg-config --libs cport"
run_consumer "cc \$(pkg-config --cflags --libs cport)" "$work/consumer-pc" shared
# --static adds what libuv itself links; libcport.a is named by path, since
# -lcport would pick the shared library that sits next to it.
static_libs=$(pkg-config --static --libs cport | sed "s|-lcport|$libdir/libcport.a|")
# shellcheck disable=SC2046,SC2086 # lists of words
"$cc" -std=c11 "${warn[@]}" "$repo_root/tests/consumer/consumer.c" \
  -o "$work/consumer-pc-static" $(pkg-config --cflags cport) $static_libs ||
  die "cc with pkg-config --static --libs cport"
run_consumer "cc \$(pkg-config --static ...)" "$work/consumer-pc-static" static

echo "test-install.sh: all passed"

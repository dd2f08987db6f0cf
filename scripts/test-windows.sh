#!/usr/bin/env bash
# The Windows build, tested here: cross-compile cport, its examples and its
# tests for 64-bit Windows with MinGW-w64, run the whole ctest suite under
# wine (libuv's IOCP backend, over 127.0.0.1), then run the Windows
# echo_server under wine against the Linux echo_client, and chat_server
# under wine with two Linux chat_clients (cross-OS smoke).
# Debian only (apt-get); run as root or with sudo.
#
#   ./scripts/test-windows.sh
#
# libuv, cmocka and OpenSSL (for the TLS sessions and their tests) are
# cross-built once from Debian's own source packages into a cache outside
# the clone, so that a new clone on the same machine reuses them (OpenSSL
# takes 5 to 10 minutes): $CPORT_WIN_DEPS, else ~/.cache/cport/win-deps;
# reused when present, delete it to rebuild.
# The source packages come through a temporary deb-src entry derived from
# the machine's apt source definition, removed again straight after.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

cache="${CPORT_WIN_DEPS:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/cport/win-deps}"
prefix="$cache/prefix"
toolchain="$repo_root/cmake/mingw-w64-x86_64.cmake"
build="$repo_root/build/test-windows"
export WINEDEBUG=-all
export WINEPREFIX="$cache/wineprefix"
# libuv.dll, cmocka.dll, libssl-3-x64.dll and libcrypto-3-x64.dll.
export WINEPATH="$prefix/bin"

log() { echo "test-windows: $*" >&2; }
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

# ---- packages ----
need=()
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need+=(gcc-mingw-w64-x86-64)
command -v wine >/dev/null 2>&1 || need+=(wine wine64)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
# OpenSSL builds with make (and Perl, which comes with the compiler).
command -v make >/dev/null 2>&1 || need+=(make)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
    --no-install-recommends "${need[@]}" >/dev/null
fi

# ---- libuv, cmocka and OpenSSL sources, from Debian ----
src_entry=""
remove_src_entry() {
  if [ -n "$src_entry" ]; then
    $sudo rm -f "$src_entry"
    src_entry=""
  fi
}
trap remove_src_entry EXIT

# orig_tarball PACKAGE: the upstream tarball of a fetched source package.
orig_tarball() {
  local f
  for f in "$cache/src/$1"_*.orig.tar.*; do
    case "$f" in
      *.asc) ;;
      *) [ -f "$f" ] && echo "$f" && return 0 ;;
    esac
  done
  return 1
}

fetch_sources() {
  local f
  mkdir -p "$cache/src"
  if [ -n "$(orig_tarball libuv1 2>/dev/null)" ] &&
    [ -n "$(orig_tarball cmocka 2>/dev/null)" ] &&
    [ -n "$(orig_tarball openssl 2>/dev/null)" ]; then
    return 0
  fi
  # The same archive the machine already uses, with the type changed to
  # deb-src; no host name is written anywhere but apt's own folder. Both
  # formats: deb822 .sources files and one-line .list files.
  local sources=() lists=()
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sources+=("$f")
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && lists+=("$f")
  done
  if [ ${#sources[@]} -gt 0 ]; then
    src_entry=/etc/apt/sources.list.d/cport-deb-src.sources
    for f in "${sources[@]}"; do
      sed 's/^Types:.*$/Types: deb-src/' "$f"
      echo
    done | $sudo tee "$src_entry" >/dev/null
  elif [ ${#lists[@]} -gt 0 ]; then
    src_entry=/etc/apt/sources.list.d/cport-deb-src.list
    cat "${lists[@]}" | sed -n 's/^deb /deb-src /p' |
      $sudo tee "$src_entry" >/dev/null
  else
    log "no apt source definition found to derive a deb-src entry from"
    exit 1
  fi
  $sudo apt-get update -qq
  for pkg in libuv1 cmocka openssl; do
    [ -n "$(orig_tarball "$pkg" 2>/dev/null)" ] && continue
    log "fetching the $pkg source package"
    (cd "$cache/src" && apt-get source --download-only -qq "$pkg") &&
      continue
    # Only the upstream tarball is used: enough when it came although the
    # .dsc did not. An archive's index can also name a version its pool
    # does not serve (seen with bookworm-security's openssl); then the
    # other versions the indexes list, newest first.
    [ -n "$(orig_tarball "$pkg" 2>/dev/null)" ] && continue
    for v in $(apt-cache showsrc "$pkg" | sed -n 's/^Version: //p' |
      sort -rV); do # portable: this script runs on Debian only (GNU sort)
      log "trying $pkg $v"
      (cd "$cache/src" && apt-get source --download-only -qq "$pkg=$v") &&
        continue 2
      [ -n "$(orig_tarball "$pkg" 2>/dev/null)" ] && continue 2
    done
    log "no source package of $pkg could be fetched"
    exit 1
  done
  remove_src_entry
}

# cross_build NAME TARBALL CMAKE-ARGS...: unpack and install into $prefix.
cross_build() {
  local name=$1 tarball=$2 dir
  shift 2
  rm -rf "${cache:?}/${name:?}"
  mkdir -p "$cache/$name"
  tar -xf "$tarball" -C "$cache/$name" --strip-components=1
  dir="$cache/$name"
  log "cross-building $name"
  cmake -S "$dir" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DCMAKE_INSTALL_PREFIX="$prefix" \
    "$@" >"$dir/configure.log"
  cmake --build "$dir/build" >"$dir/build.log"
  cmake --install "$dir/build" >/dev/null
}

if [ ! -f "$prefix/bin/libuv.dll" ] || [ ! -f "$prefix/bin/cmocka.dll" ]; then
  fetch_sources
  cross_build libuv "$(orig_tarball libuv1)" \
    -DLIBUV_BUILD_TESTS=OFF -DLIBUV_BUILD_BENCH=OFF
  cross_build cmocka "$(orig_tarball cmocka)" \
    -DWITH_EXAMPLES=OFF -DUNIT_TESTING=OFF
fi

# OpenSSL's own Configure, then only its two DLLs (with their import
# libraries) and headers: its make's build_libs also compiles every source
# a second time for the static libraries, twice the time for nothing used
# here; no tests, no legacy provider. The DLLs are libcrypto-3-x64.dll and
# libssl-3-x64.dll, in $prefix/bin.
if [ ! -f "$prefix/bin/libssl-3-x64.dll" ]; then
  fetch_sources
  started=$SECONDS
  dir="$cache/openssl"
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -xf "$(orig_tarball openssl)" -C "$dir" --strip-components=1
  log "cross-building openssl (some minutes, once)"
  (cd "$dir" &&
    ./Configure mingw64 --cross-compile-prefix=x86_64-w64-mingw32- \
      --prefix="$prefix" --libdir=lib shared no-tests no-legacy \
      -static-libgcc >configure.log &&
    make build_generated >build.log 2>&1 &&
    make -j"$(cport_jobs)" libcrypto-3-x64.dll libssl-3-x64.dll \
      >>build.log 2>&1) || {
    log "the openssl cross build failed: see $dir/*.log"
    exit 1
  }
  mkdir -p "$prefix/bin" "$prefix/lib" "$prefix/include/openssl"
  cp "$dir"/include/openssl/*.h "$prefix/include/openssl/"
  cp "$dir/libcrypto.dll.a" "$dir/libssl.dll.a" "$prefix/lib/"
  cp "$dir/libcrypto-3-x64.dll" "$dir/libssl-3-x64.dll" "$prefix/bin/"
  log "openssl cross-built in $((SECONDS - started)) s"
fi

# ---- wine: boot the private prefix once, before ctest runs tests in
# parallel (two first boots at once would race) ----
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  log "creating the wine prefix (first boot takes a few seconds)"
  wineboot -i >/dev/null 2>&1 || true
fi
wineserver -w 2>/dev/null || true
# One wineserver for the whole run, kept up between test programs (its
# default is to exit a few seconds after the last one, and the next start
# then boots it again); stopped on every way out.
stop_wine() {
  wineserver -k 2>/dev/null || true
  remove_src_entry
}
trap stop_wine EXIT
wineserver -p

# ---- cmocka 2 under MSVC, emulated: its skip() and fail() do not return,
# so /W4 /WX calls code after them unreachable (C4702). clang, aimed at
# Windows so that the _WIN32 branches count, with the two declared noreturn
# (scripts/shims/cmocka2_noreturn.h); the native clang builds do the same
# for the other branches (tests/CMakeLists.txt). ----
if command -v clang >/dev/null 2>&1; then
  log "checking the tests' Windows branches for code after skip()/fail()"
  for f in "$repo_root"/tests/test_*.c "$repo_root"/tests/fixture.c; do
    clang --target=x86_64-w64-mingw32 -fsyntax-only -std=gnu11 \
      -I"$prefix/include" -I"$repo_root/include" -I"$repo_root/src" \
      -I"$repo_root/tests" \
      -include "$repo_root/scripts/shims/cmocka2_noreturn.h" \
      -Wunreachable-code -Werror "$f"
  done
else
  log "no clang: the cmocka 2 check of the Windows branches is skipped"
fi

# ---- cport for Windows ----
# pkg-config must see only the cross-built packages, never the host's.
export PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig"
cport_configure "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DCMAKE_PREFIX_PATH="$prefix" \
  "-UOPENSSL_*" -DOPENSSL_ROOT_DIR="$prefix" -DCPORT_WITH_TLS=ON \
  -DCPORT_WERROR=ON -DCPORT_BUILD_TESTS=ON -DCPORT_BUILD_EXAMPLES=ON \
  "-DCMAKE_CROSSCOMPILING_EMULATOR=$here/shims/wine-test.sh"
cport_build "$build"
log "running the test suite under wine"
(cd "$build" && ctest --output-on-failure --parallel 2)

# ---- cross-OS smoke: echo_server.exe under wine, Linux echo_client ----
native="$repo_root/build/test-plain"
if [ ! -x "$native/examples/echo_client" ] ||
  [ ! -x "$native/examples/chat_client" ]; then
  unset PKG_CONFIG_LIBDIR
  cport_configure "$native" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCPORT_BUILD_TESTS=OFF -DCPORT_BUILD_EXAMPLES=ON
  cport_build "$native" --target echo_client chat_client
fi
# Once on one port (libuv's own accept), once on three (cport's accept()
# and uv_tcp_open on each port's completion port).
status=0
for threads in 1 3; do
  out=$(mktemp)
  wine "$build/examples/echo_server.exe" --port 0 --threads "$threads" \
    >"$out" 2>&1 &
  server=$!
  port=$(cport_listening_port "$out" "$server") || port=""
  if [ -z "$port" ]; then
    log "echo_server.exe --threads $threads did not start: $(cat "$out")"
    status=1
  elif "$native/examples/echo_client" --host 127.0.0.1 --port "$port" \
    --sessions 20 --messages 50; then
    log "cross-OS smoke: Linux echo_client against echo_server.exe" \
      "--threads $threads under wine: ok"
  else
    log "cross-OS smoke with --threads $threads failed"
    status=1
  fi
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -f "$out"
done

# ---- cross-OS smoke: chat_server.exe on two loops, two Linux clients ----
# The packets' wire format is the same on both systems; a room's line goes
# from one client through the Windows server's shared buffer to the other.
chat=$(mktemp -d)
wine "$build/examples/chat_server.exe" --port 0 --threads 2 \
  >"$chat/server" 2>&1 &
server=$!
port=$(cport_listening_port "$chat/server" "$server") || port=""
printf '%s\n' '/join lobby' '/expect * b joined lobby' 'hello from a' \
  '/expect [lobby] b: hello from b' >"$chat/a.script"
printf '%s\n' '/join lobby' '/expect [lobby] a: hello from a' \
  'hello from b' >"$chat/b.script"
if [ -z "$port" ]; then
  log "chat_server.exe did not start: $(cat "$chat/server")"
  status=1
else
  "$native/examples/chat_client" --port "$port" --name a \
    --script "$chat/a.script" >"$chat/a.out" 2>&1 &
  a=$!
  # b joins once a is in the room, so that a sees b arrive.
  for _ in $(seq 1 100); do
    grep -qxF '* a joined lobby' "$chat/a.out" && break
    kill -0 "$a" 2>/dev/null || break
    sleep 0.1
  done
  if "$native/examples/chat_client" --port "$port" --name b \
    --script "$chat/b.script" >"$chat/b.out" 2>&1 && wait "$a"; then
    log "cross-OS smoke: two Linux chat_clients through chat_server.exe" \
      "--threads 2 under wine: ok"
  else
    log "chat smoke failed: a: $(cat "$chat/a.out") b: $(cat "$chat/b.out")"
    kill "$a" 2>/dev/null || true
    status=1
  fi
fi
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
rm -rf "$chat"
wineserver -k 2>/dev/null || true
[ "$status" = 0 ] && echo "test-windows.sh: all passed"
exit "$status"

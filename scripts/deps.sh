#!/usr/bin/env bash
# Installs what building cport needs, when it is missing: a C compiler,
# CMake, pkg-config, libuv, cmocka and OpenSSL 3 (for TLS), the tests'
# TLS peers (OpenSSL's and GnuTLS's command-line tools) and the balancers
# and tools of tests/proxy_peers_test.sh (HAProxy, nginx with its stream
# module, curl, socat, and systemd's systemd-socket-activate on Linux; the
# test runs its own instances, on loopback), and tests/dualstack_test.sh's
# resolver wrapper (nss_wrapper, Linux) and netcat, which with socat are
# tests/local_peers_test.sh's Unix socket peers too (macOS has its own nc).
# Debian/Ubuntu use apt-get, macOS uses Homebrew, Windows (Git Bash) uses vcpkg from
# $VCPKG_ROOT. Safe to run again: it installs nothing that is already there.
#
#   scripts/deps.sh           what the library, examples and tests need
#   scripts/deps.sh --bench   also the benchmark's reference servers' libraries
#                             (libevent, Boost headers, a C++ compiler)
set -euo pipefail

bench=0
case "${1:-}" in
  "") ;;
  --bench) bench=1 ;;
  *)
    echo "usage: scripts/deps.sh [--bench]" >&2
    exit 2
    ;;
esac

log() { echo "deps: $*" >&2; }

debian_has() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}

install_debian() {
  local pkgs=() optional=() sudo="" clang_major
  command -v cc >/dev/null 2>&1 || pkgs+=(gcc)
  command -v cmake >/dev/null 2>&1 || pkgs+=(cmake)
  command -v pkg-config >/dev/null 2>&1 || pkgs+=(pkg-config)
  debian_has libuv1-dev || pkgs+=(libuv1-dev)
  debian_has libcmocka-dev || pkgs+=(libcmocka-dev)
  debian_has libssl-dev || pkgs+=(libssl-dev)
  command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
  command -v gnutls-cli >/dev/null 2>&1 || pkgs+=(gnutls-bin)
  # The balancers are in /usr/sbin, which a user's PATH may lack.
  debian_has haproxy || pkgs+=(haproxy)
  debian_has nginx || pkgs+=(nginx)
  debian_has libnginx-mod-stream || pkgs+=(libnginx-mod-stream)
  command -v curl >/dev/null 2>&1 || pkgs+=(curl)
  command -v socat >/dev/null 2>&1 || pkgs+=(socat)
  command -v systemd-socket-activate >/dev/null 2>&1 || pkgs+=(systemd)
  debian_has libnss-wrapper || pkgs+=(libnss-wrapper)
  debian_has netcat-openbsd || pkgs+=(netcat-openbsd)
  if [ "$bench" = 1 ]; then
    command -v c++ >/dev/null 2>&1 || pkgs+=(g++)
    debian_has libevent-dev || pkgs+=(libevent-dev)
    debian_has libboost-dev || pkgs+=(libboost-dev)
  fi
  # clang's sanitizer runtimes are a package of their own (Debian 12:
  # libclang-rt-14-dev); test.sh uses clang for its sanitizer builds when
  # they are there, and gcc otherwise, so they are optional.
  if command -v clang >/dev/null 2>&1; then
    clang_major=$(clang -dumpversion 2>/dev/null | cut -d. -f1)
    if [ -n "$clang_major" ] && ! debian_has "libclang-rt-$clang_major-dev"; then
      optional+=("libclang-rt-$clang_major-dev")
    fi
  fi
  if [ ${#pkgs[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ]; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      log "need root (or sudo) to install: ${pkgs[*]} ${optional[*]}"
      [ ${#pkgs[@]} -eq 0 ] && return 0
      exit 1
    }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
  if [ ${#optional[@]} -gt 0 ]; then
    log "installing ${optional[*]} with apt-get (optional)"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends "${optional[@]}" >/dev/null ||
      log "could not install ${optional[*]}; sanitizer builds will use gcc"
  fi
}

install_macos() {
  local pkgs=() p
  command -v brew >/dev/null 2>&1 || {
    log "Homebrew is needed on macOS"
    exit 1
  }
  # No systemd on macOS: proxy_peers_test.sh skips its socket activation.
  local want=(cmake pkg-config libuv cmocka openssl@3 gnutls haproxy nginx
    curl socat)
  [ "$bench" = 1 ] && want+=(libevent boost)
  for p in "${want[@]}"; do
    brew list --versions "$p" >/dev/null 2>&1 || pkgs+=("$p")
  done
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]} with Homebrew"
    brew install "${pkgs[@]}"
  fi
}

install_windows() {
  if [ -z "${VCPKG_ROOT:-}" ] || [ ! -x "$VCPKG_ROOT/vcpkg.exe" ]; then
    log "set VCPKG_ROOT to a vcpkg checkout; libuv and cmocka come from vcpkg"
    exit 1
  fi
  "$VCPKG_ROOT/vcpkg.exe" install libuv cmocka openssl
}

case "$(uname -s)" in
  Linux)
    if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
      install_debian
    elif pkg-config --exists libuv 2>/dev/null && pkg-config --exists cmocka 2>/dev/null; then
      :
    else
      log "install libuv and cmocka development packages with your package manager"
      exit 1
    fi
    ;;
  Darwin) install_macos ;;
  MINGW* | MSYS* | CYGWIN*) install_windows ;;
  *)
    log "unknown system $(uname -s): install libuv, cmocka, CMake and pkg-config"
    ;;
esac

#!/usr/bin/env bash
# The fuzz command: build the libFuzzer targets with clang in build/fuzz,
# fuzz_packet (the receive buffer and the packet framer,
# tests/fuzz/fuzz_packet.c), fuzz_proxy (the PROXY protocol parser,
# tests/fuzz/fuzz_proxy.c) and, when cport is built with TLS, fuzz_tls
# (the TLS engine fed in pieces, tests/fuzz/fuzz_tls.c), then fuzz each
# from its seed corpus and its regression inputs for a bounded time. New
# inputs go to a scratch corpus in build/fuzz, so the committed ones stay
# as they are. Exits non-zero on any crash, leak, timeout or oracle
# mismatch, saying where the input is; it must then become a regression
# test (docs/fuzzing.md). Installs clang and its libFuzzer runtime with
# apt-get when they are missing (Debian/Ubuntu).
#
#   ./scripts/fuzz.sh              60 seconds, split between the targets
#   ./scripts/fuzz.sh --seconds N  N seconds, split the same way
#   ./scripts/fuzz.sh --target T   only T: packet, proxy or tls (all: every
#                                  one)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

usage() {
  echo "usage: $0 [--seconds N] [--target packet|proxy|tls|all]" >&2
  exit 2
}

seconds=60
target=all
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds)
      if [ $# -lt 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -eq 0 ]; then
        echo "fuzz.sh: --seconds needs a whole number above 0" >&2
        exit 2
      fi
      seconds=$2
      shift 2
      ;;
    --target)
      if [ $# -lt 2 ]; then
        usage
      fi
      case "$2" in
        packet | proxy | tls | all) target=$2 ;;
        *) usage ;;
      esac
      shift 2
      ;;
    *)
      usage
      ;;
  esac
done

log() { echo "fuzz.sh: $*" >&2; }

dir="$repo_root/build/fuzz"
fuzz_dir="$repo_root/tests/fuzz"

"$here/deps.sh"

# Can clang link a libFuzzer program? (Debian ships the runtime apart from
# clang: libclang-rt-<major>-dev.)
fuzzer_works() {
  local probe rc
  probe=$(mktemp -d)
  printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n);' \
    'int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {' \
    '  (void)d; (void)n; return 0; }' >"$probe/p.c"
  rc=0
  clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" \
    >/dev/null 2>&1 || rc=1
  rm -rf "$probe"
  return $rc
}

apt_install() {
  local sudo=""
  if ! command -v apt-get >/dev/null 2>&1; then
    return 1
  fi
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing $* with apt-get"
  $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends "$@" >/dev/null
}

if ! command -v clang >/dev/null 2>&1; then
  apt_install clang || true
fi
if command -v clang >/dev/null 2>&1 && ! fuzzer_works; then
  apt_install "libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev" || true
fi
if ! command -v clang >/dev/null 2>&1 || ! fuzzer_works; then
  log "clang with its libFuzzer runtime is needed (Debian: clang and" \
    "libclang-rt-<major>-dev)"
  exit 1
fi

# ---- build ----
log "building the fuzzers with clang in $dir"
cport_configure "$dir" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
  -DCPORT_WERROR=ON -DCPORT_FUZZ=ON -DCPORT_BUILD_TESTS=OFF \
  -DCPORT_BUILD_EXAMPLES=OFF -DCPORT_BUILD_BENCH=OFF
# fuzz_tls exists only when cport is built with TLS (OpenSSL 3 found).
have_tls=0
if grep -q '^CPORT_WITH_TLS:BOOL=ON$' "$dir/CMakeCache.txt"; then
  have_tls=1
fi
targets=""
case "$target" in
  packet) targets=packet ;;
  proxy) targets=proxy ;;
  tls) targets=tls ;;
  all) targets="packet proxy tls" ;;
esac
if [ "$have_tls" = 0 ]; then
  if [ "$target" = tls ]; then
    log "cport is built without TLS here (OpenSSL 3 not found): no fuzz_tls"
    exit 1
  fi
  if [ "$target" = all ]; then
    log "cport is built without TLS here: no fuzz_tls"
    targets="packet proxy"
  fi
fi
for t in $targets; do
  cport_build "$dir" --target "fuzz_$t"
done

# ---- fuzz ----
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# fuzz_one NAME SECONDS: fuzz tests/fuzz/fuzz_NAME.c's target. Its seeds
# and regressions are corpus/ and regressions/ for packet, corpus-NAME/
# and regressions-NAME/ for the others; its scratch corpus and what it
# finds go under build/fuzz likewise.
fuzz_one() {
  local name=$1 secs=$2 suffix="" max_len=4096 asan="" found rc
  local artifacts scratch out fuzzer
  if [ "$name" != packet ]; then
    suffix="-$name"
  fi
  fuzzer="$dir/tests/fuzz/fuzz_$name"
  artifacts="$dir/artifacts$suffix"
  scratch="$dir/corpus$suffix"
  out="$dir/fuzz$suffix.log"
  case "$name" in
    # Past the receive buffer's first 4 KiB, so that it grows.
    packet) max_len=8192 ;;
    # OpenSSL's buffers are large and many; a small quarantine keeps
    # AddressSanitizer from faulting in fresh pages for each (4x faster),
    # and still holds a run's freed blocks.
    tls) asan=:quarantine_size_mb=16 ;;
  esac
  # libFuzzer writes what it finds into the first folder only: the scratch
  # one, kept between local runs so they build on each other.
  mkdir -p "$scratch" "$artifacts"
  rm -f "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* \
    "$artifacts"/oom-* "$artifacts"/slow-unit-*
  log "fuzzing fuzz_$name for ${secs}s (log: $out)"
  rc=0
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1$asan" \
    "$fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -max_len="$max_len" -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$scratch" "$fuzz_dir/corpus$suffix" \
    "$fuzz_dir/regressions$suffix" >"$out" 2>&1 || rc=$?

  found=$(find "$artifacts" -type f 2>/dev/null | sort)
  if [ "$rc" != 0 ] || [ -n "$found" ]; then
    tail -n 60 "$out" >&2
    log "fuzz_$name FAILED (exit code $rc). The input that failed:"
    for f in $found; do
      echo "  $f" >&2
    done
    log "reproduce it with: $fuzzer FILE (or" \
      "build/*/tests/fuzz/fuzz${suffix:+_$name}_replay FILE)"
    log "it must become a regression test: copy it into" \
      "tests/fuzz/regressions$suffix/ under a name that says what broke," \
      "fix the bug, and check that the" \
      "fuzz${suffix:+_$name}_replay ctest passes (docs/fuzzing.md)"
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' \
    "$out" >&2 || true
  grep -E '^#[0-9]+' "$out" | tail -n 1 >&2 || true
  log "fuzz_$name: no crash in ${secs}s; scratch corpus: $(find "$scratch" \
    -type f | wc -l | tr -d ' ') inputs in $scratch"
}

# The time is split between the targets, a second each at least.
count=$(echo "$targets" | wc -w | tr -d ' ')
share=$((seconds / count))
if [ "$share" -lt 1 ]; then
  share=1
fi
left=$seconds
for t in $targets; do
  count=$((count - 1))
  secs=$share
  if [ "$count" = 0 ]; then
    secs=$left # the last takes what the division left over
  fi
  if [ "$secs" -lt 1 ]; then
    secs=1
  fi
  left=$((left - secs))
  fuzz_one "$t" "$secs"
done

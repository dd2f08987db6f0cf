#!/usr/bin/env bash
# The fuzz command: build the libFuzzer target fuzz_packet (the receive
# buffer and the packet framer, tests/fuzz/fuzz_packet.c) with clang in
# build/fuzz, then fuzz it from the seed corpus and the regression inputs
# for a bounded time. New inputs go to a scratch corpus in build/fuzz, so
# the committed one stays as it is. Exits non-zero on any crash, leak,
# timeout or oracle mismatch, saying where the input is; it must then
# become a regression test (docs/fuzzing.md). Installs clang and its
# libFuzzer runtime with apt-get when they are missing (Debian/Ubuntu).
#
#   ./scripts/fuzz.sh              60 seconds
#   ./scripts/fuzz.sh --seconds N  N seconds
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

seconds=60
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
    *)
      echo "usage: $0 [--seconds N]" >&2
      exit 2
      ;;
  esac
done

log() { echo "fuzz.sh: $*" >&2; }

dir="$repo_root/build/fuzz"
artifacts="$dir/artifacts"
scratch="$dir/corpus"
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
log "building fuzz_packet with clang in $dir"
cport_configure "$dir" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
  -DCPORT_WERROR=ON -DCPORT_FUZZ=ON -DCPORT_BUILD_TESTS=OFF \
  -DCPORT_BUILD_EXAMPLES=OFF -DCPORT_BUILD_BENCH=OFF
cport_build "$dir" --target fuzz_packet
fuzzer="$dir/tests/fuzz/fuzz_packet"

# ---- fuzz ----
# libFuzzer writes what it finds into the first folder only: the scratch
# one, kept between local runs so they build on each other.
mkdir -p "$scratch" "$artifacts"
rm -f "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* \
  "$artifacts"/oom-* "$artifacts"/slow-unit-*
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
out="$dir/fuzz.log"
log "fuzzing for ${seconds}s (log: $out)"
rc=0
# -max_len 8192: past the receive buffer's first 4 KiB, so that it grows.
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -max_len=8192 -print_final_stats=1 -artifact_prefix="$artifacts/" \
  "$scratch" "$fuzz_dir/corpus" "$fuzz_dir/regressions" >"$out" 2>&1 || rc=$?

found=$(find "$artifacts" -type f 2>/dev/null | sort)
if [ "$rc" != 0 ] || [ -n "$found" ]; then
  tail -n 60 "$out" >&2
  log "FAILED (exit code $rc). The input that failed:"
  for f in $found; do
    echo "  $f" >&2
  done
  log "reproduce it with: $fuzzer FILE (or build/*/tests/fuzz/fuzz_replay FILE)"
  log "it must become a regression test: copy it into" \
    "tests/fuzz/regressions/ under a name that says what broke, fix the" \
    "bug, and check that the fuzz_replay ctest passes (docs/fuzzing.md)"
  exit 1
fi
grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' \
  "$out" >&2 || true
grep -E '^#[0-9]+' "$out" | tail -n 1 >&2 || true
log "no crash in ${seconds}s; scratch corpus: $(find "$scratch" -type f |
  wc -l | tr -d ' ') inputs in $scratch"

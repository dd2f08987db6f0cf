#!/usr/bin/env bash
# The test command: install what is missing, then build with warnings as
# errors and run every test with ctest, three times over: a plain build, an
# AddressSanitizer + UndefinedBehaviorSanitizer build and a ThreadSanitizer
# build. The benchmark's programs are built too (reference servers whose
# library is missing are skipped), so that its load client's self-test runs
# with the others. Exits non-zero on any failure.
#
#   ./scripts/test.sh          all three builds
#   ./scripts/test.sh --quick  the plain build only
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac

"$here/deps.sh"

run_suite() {
  local name=$1 sanitize=$2 type=$3 cc=$4 prefix=()
  local dir="$repo_root/build/test-$name"
  echo "== $name build with $cc ($dir)"
  cport_configure "$dir" -DCMAKE_BUILD_TYPE="$type" -DCPORT_WERROR=ON \
    -DCMAKE_C_COMPILER="$cc" -DCPORT_SANITIZE="$sanitize" \
    -DCPORT_BUILD_TESTS=ON -DCPORT_BUILD_EXAMPLES=ON -DCPORT_BUILD_BENCH=ON
  cport_build "$dir"
  # ThreadSanitizer of gcc 12 / clang 14 cannot map its shadow memory with
  # the high address randomisation of newer kernels; without randomisation
  # it works everywhere.
  if [ "$name" = tsan ] && [ "$(uname -s)" = Linux ] &&
     setarch "$(uname -m)" -R true 2>/dev/null; then
    prefix=(setarch "$(uname -m)" -R)
  fi
  # ${a[@]+...}: an empty array under set -u, also on macOS's bash 3.2.
  (cd "$dir" && ${prefix[@]+"${prefix[@]}"} ctest --output-on-failure \
     --parallel 2 -C "$type")
}

cport_sanitizer_env

# Can compiler $1 build and link a program with -fsanitize=$2?
sanitizer_works() {
  local probe
  probe=$(mktemp -d)
  echo 'int main(void) { return 0; }' >"$probe/p.c"
  "$1" -fsanitize="$2" "$probe/p.c" -o "$probe/p" >/dev/null 2>&1
  local rc=$?
  rm -rf "$probe"
  return $rc
}

# The default compiler for the plain build; a second compiler, where there
# is one and its sanitizer runtimes are installed, for the sanitizer builds,
# so both compilers see -Werror.
cc_default=${CC:-cc}
cc_other=$cc_default
if command -v clang >/dev/null 2>&1 &&
   sanitizer_works clang address,undefined && sanitizer_works clang thread; then
  cc_other=clang
fi

run_suite plain "" RelWithDebInfo "$cc_default"
if [ "$quick" = 0 ] && [[ "$(uname -s)" != MINGW* ]]; then
  run_suite asan "address,undefined" Debug "$cc_other"
  run_suite tsan "thread" Debug "$cc_other"
fi
echo "test.sh: all suites passed"

#!/usr/bin/env bash
# ctest's emulator for the Windows build (scripts/test-windows.sh):
# runs one test program under wine. Wine itself now and then fails to start
# a program (seen once in CI: exit 66, no output, 0.02 s; 66 is the low
# byte of STATUS_DLL_INIT_FAILED, which a cold start also gave here once).
# A program that ran always prints something (cmocka's banner, the fuzz
# replays' file list), so a failure with no output at all is wine's, and
# that start is tried again, at most twice, saying so. A test that ran and
# failed is never retried.
#
#   wine-test.sh PROGRAM.exe [ARGS...]
set -u
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for try in 1 2 3; do
  wine "$@" >"$out" 2>&1
  rc=$?
  if [ "$rc" = 0 ] || [ -s "$out" ] || [ "$try" = 3 ]; then
    break
  fi
  echo "wine-test.sh: wine exited $rc before $1 printed anything;" \
    "starting it again" >&2
done
cat "$out"
exit "$rc"

#!/usr/bin/env bash
# The stress lane: tests/test_stress.c's seeded random rounds, run for a
# while under AddressSanitizer + UndefinedBehaviorSanitizer and then under
# ThreadSanitizer, in the build folders that scripts/test.sh makes
# (build/test-asan, build/test-tsan; only test_stress is rebuilt here).
# Prints each run's seed, the command that replays it, and PASS or FAIL;
# exits non-zero if either run failed.
#
#   ./scripts/stress.sh          60 s per sanitizer, with fresh seeds
#   ./scripts/stress.sh 600      600 s per sanitizer
#   CPORT_STRESS_SEED=N ./scripts/stress.sh   replay seed N in both
#
# Other CPORT_STRESS_* variables (tests/test_stress.c) pass through.
# Runs on bash 3.2 (macOS) too.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

seconds=${1:-60}
case "$seconds" in
  "" | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 2
    ;;
esac

# One seed per run, printed before the run starts; a seed given by the
# caller is replayed in both.
if [ -n "${CPORT_STRESS_SEED:-}" ]; then
  seed_asan=$CPORT_STRESS_SEED
  seed_tsan=$CPORT_STRESS_SEED
else
  seed_asan=$(( ($(date +%s) % 1000000) * 1000 + $$ % 1000 + 1 ))
  seed_tsan=$((seed_asan + 1))
fi

cport_sanitizer_env

status=0
results=""

# run_lane NAME SEED: build and run build/test-NAME's test_stress.
run_lane() {
  local name=$1 seed=$2 dir="$repo_root/build/test-$1" prefix=() rc
  local bin="$dir/tests/test_stress"
  echo "== stress $name: seed $seed, $seconds s ($dir)"
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    echo "stress.sh: $dir is missing: run scripts/test.sh first" >&2
    results="$results
stress.sh: $name seed $seed: FAIL (no build)"
    status=1
    return
  fi
  if ! cport_build "$dir" --target test_stress >/dev/null; then
    echo "stress.sh: building test_stress in $dir failed" >&2
    results="$results
stress.sh: $name seed $seed: FAIL (build)"
    status=1
    return
  fi
  # ThreadSanitizer needs the address randomisation off (see test.sh).
  if [ "$name" = tsan ] && [ "$(uname -s)" = Linux ] &&
     setarch "$(uname -m)" -R true 2>/dev/null; then
    prefix=(setarch "$(uname -m)" -R)
  fi
  # ${a[@]+...}: an empty array under set -u, also on bash 3.2.
  CPORT_STRESS_SEED=$seed CPORT_STRESS_SECONDS=$seconds \
    ${prefix[@]+"${prefix[@]}"} "$bin"
  rc=$?
  if [ "$rc" = 0 ]; then
    results="$results
stress.sh: $name seed $seed: PASS"
  else
    results="$results
stress.sh: $name seed $seed: FAIL (exit $rc; replay: CPORT_STRESS_SEED=$seed ${prefix[*]+${prefix[*]} }$bin)"
    status=1
  fi
}

run_lane asan "$seed_asan"
run_lane tsan "$seed_tsan"
echo "$results" | sed '/^$/d'
if [ "$status" = 0 ]; then
  echo "stress.sh: passed"
else
  echo "stress.sh: FAILED"
fi
exit "$status"

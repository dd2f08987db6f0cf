# shellcheck shell=bash disable=SC2034,SC2154
# (Variables set here are read by the sourcing script, and server_bin is
# set by it.)
# Shared by the shell tests that drive the example programs
# (examples_test.sh, chat_test.sh): a scratch folder, a record of every
# process started so that the EXIT trap stops them all, pass/fail counters,
# and bounded waits. Source it after setting server_bin.
work=$(mktemp -d)
pids=()
failures=0
passes=0

cleanup() {
  local pid
  # ${a[@]+...}: bash 3.2 (macOS) calls an empty array unbound under set -u.
  for pid in ${pids[@]+"${pids[@]}"}; do
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

ok() { passes=$((passes + 1)); echo "ok: $*"; }
bad() { failures=$((failures + 1)); echo "FAIL: $*"; }

# Start $server_bin with the given arguments and wait up to 10 s for its
# "listening on HOST:PORT" line; sets server_pid, server_port, server_out,
# server_err. Returns 1 if the line never came (the server may have exited).
start_server() {
  local out=$work/server.$RANDOM _
  "$server_bin" "$@" >"$out.out" 2>"$out.err" &
  server_pid=$!
  pids+=("$server_pid")
  server_out=$out.out
  server_err=$out.err
  for _ in $(seq 1 100); do
    if grep -q '^listening on ' "$server_out"; then
      server_port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$server_out")
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

# expect_usage NAME ARGS COMMAND...: run COMMAND with the words of ARGS
# added, without input; it must exit 2 with its usage on stderr, and the
# first stderr line must start with "NAME: bad" (NAME empty: any line).
expect_usage() {
  local name=$1 args=$2 code
  shift 2
  # shellcheck disable=SC2086 # ARGS is split into arguments on purpose
  "$@" $args </dev/null >"$work/o" 2>"$work/e"
  code=$?
  if [ "$code" = 2 ] && grep -q usage "$work/e" &&
    { [ -z "$name" ] || grep -q "^$name: bad " "$work/e"; }; then
    ok "${name:-$(basename "$1")} $args: exit 2, '$(head -n 1 "$work/e")'"
  else
    bad "${name:-$(basename "$1")} $args: exit $code," \
      "stderr: $(head -c 200 "$work/e")"
  fi
}

# Wait up to $2 seconds for pid $1 to exit; sets exit_code ("timeout" if it
# did not).
wait_exit() {
  local _
  for _ in $(seq 1 $(($2 * 10))); do
    if ! kill -0 "$1" 2>/dev/null; then
      wait "$1"
      exit_code=$?
      return 0
    fi
    sleep 0.1
  done
  exit_code=timeout
  return 1
}

# wait_until SECONDS COMMAND...: poll COMMAND every 0.1 s until it succeeds
# (return 0) or SECONDS have passed (return 1).
wait_until() {
  local limit=$1 _
  shift
  for _ in $(seq 1 $((limit * 10))); do
    "$@" && return 0
    sleep 0.1
  done
  "$@"
}

# Stop pid $1 with SIGTERM, or SIGKILL after 5 s; sets exit_code.
stop_pid() {
  kill -TERM "$1" 2>/dev/null
  wait_exit "$1" 5 || { kill -KILL "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
}

#!/usr/bin/env bash
# Drives examples/embed_uv_loop, cport embedded on an application's own
# libuv loop: bad arguments; a busy port; echo round trips (a half-closing
# peer, then echo_client load) while the application's heartbeat timer on
# the same loop keeps ticking; SIGTERM and SIGINT. Every wait is bounded and
# every process started here is stopped here.
#
#   embed_test.sh EMBED_UV_LOOP ECHO_CLIENT TCP_PEER
set -u
server_bin=$1
client_bin=$2
peer_bin=$3
# shellcheck source-path=SCRIPTDIR source=script_lib.sh
source "$(dirname "$0")/script_lib.sh"

# The number of the last "tick N sessions=S" line in file $1, 0 if none.
last_tick() {
  local n
  n=$(sed -n 's/^tick \([0-9]*\) sessions=[0-9]*$/\1/p' "$1" | tail -n 1)
  echo "${n:-0}"
}

# Wait up to $3 seconds for the heartbeat in file $1 to pass tick $2, while
# pid $4 runs.
wait_tick() {
  local _
  for _ in $(seq 1 $(($3 * 10))); do
    [ "$(last_tick "$1")" -gt "$2" ] && return 0
    kill -0 "$4" 2>/dev/null || break
    sleep 0.1
  done
  [ "$(last_tick "$1")" -gt "$2" ]
}

# ---- bad arguments: a message and usage on stderr, exit 2 ----
for args in "--port abc" "--port 70000" "--port -1" "--tick-ms 0" \
            "--tick-ms x" "--bogus 1" "--host 999.1.1.1" "--host" "--port"; do
  expect_usage embed_uv_loop "$args" "$server_bin"
done
"$server_bin" --help >"$work/o" 2>"$work/e"
code=$?
[ "$code" = 0 ] && grep -q '^usage: embed_uv_loop' "$work/o" &&
  ok "embed_uv_loop --help: usage, exit 0" ||
  bad "embed_uv_loop --help: exit $code"

# ---- the embedded server on an ephemeral port, heartbeat every 50 ms ----
if ! start_server --port 0 --tick-ms 50; then
  bad "embed_uv_loop --port 0 did not print 'listening on': $(cat "$server_err")"
  exit 1
fi
ok "$(head -n 1 "$server_out")"

"$server_bin" --port "$server_port" >"$work/o" 2>"$work/e"
code=$?
[ "$code" = 1 ] &&
  grep -q "cannot listen on 127.0.0.1:$server_port: address already in use" "$work/e" &&
  ok "second instance on the port: exit 1, '$(cat "$work/e")'" ||
  bad "second instance on the port: exit $code, stderr: $(cat "$work/e")"

wait_tick "$server_out" 0 10 "$server_pid" &&
  ok "the application's timer ticks: $(last_tick "$server_out")" ||
  bad "no tick within 10 s: $(cat "$server_out" "$server_err")"

# A peer that sends, half-closes and expects every byte back.
"$peer_bin" halfclose "$server_port" 100000 >"$work/po" 2>"$work/pe" &
peer_pid=$!
pids+=("$peer_pid")
wait_exit "$peer_pid" 30
[ "$exit_code" = 0 ] && ok "half-closing peer got its 100000 bytes back" ||
  bad "half-closing peer: exit $exit_code $(cat "$work/pe")"

# A second of load from four sessions. The heartbeat shares the loop with
# them, so it must keep ticking, and some of its ticks must fall while all
# four are connected.
before=$(last_tick "$server_out")
"$client_bin" --host 127.0.0.1 --port "$server_port" --sessions 4 \
  --seconds 1 >"$work/co" 2>"$work/ce" &
client_pid=$!
pids+=("$client_pid")
wait_exit "$client_pid" 30
[ "$exit_code" = 0 ] && grep -q ' errors=0 ' "$work/co" &&
  ok "echo_client: $(cat "$work/co")" ||
  bad "echo_client: exit $exit_code $(cat "$work/co" "$work/ce")"
after=$(last_tick "$server_out")
[ "$after" -ge $((before + 5)) ] &&
  ok "ticks went on during the load: $before -> $after" ||
  bad "ticks stalled during the load: $before -> $after"
grep -q '^tick [0-9]* sessions=4$' "$server_out" &&
  ok "a tick saw the four sessions: $(grep -m 1 '^tick [0-9]* sessions=4$' "$server_out")" ||
  bad "no tick saw the four sessions"

# ---- SIGTERM: graceful stop, summary, exit 0 ----
kill -TERM "$server_pid"
wait_exit "$server_pid" 10
[ "$exit_code" = 0 ] && ok "SIGTERM: exit 0" ||
  bad "SIGTERM: exit $exit_code $(cat "$server_err")"
summary=$(tail -n 1 "$server_out")
if [[ "$summary" =~ ^embed_uv_loop:\ ([0-9]+)\ ticks,\ served\ 5\ sessions,\ echoed\ ([0-9]+)\ bytes$ ]] &&
   [ "${BASH_REMATCH[1]}" -ge "$after" ] && [ "${BASH_REMATCH[2]}" -ge 100000 ]; then
  ok "summary: $summary"
else
  bad "summary: $summary"
fi

# ---- SIGINT ----
if start_server --port 0; then
  kill -INT "$server_pid"
  wait_exit "$server_pid" 10 && [ "$exit_code" = 0 ] &&
    grep -q '^embed_uv_loop: [0-9]* ticks, served 0 sessions' "$server_out" &&
    ok "SIGINT: exit 0, $(tail -n 1 "$server_out")" ||
    bad "SIGINT: exit $exit_code $(cat "$server_out" "$server_err")"
else
  bad "second embed_uv_loop did not start"
fi

echo "$passes passed, $failures failed"
[ "$failures" = 0 ]

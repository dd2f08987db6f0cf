#!/usr/bin/env bash
# Drives examples/echo_server and examples/echo_client the way a user would:
# bad arguments, a busy port, many clients (also on several client threads,
# and for a fixed time with latency percentiles), a half-closing peer, a peer
# that never reads, and SIGTERM/SIGINT in the middle of it all. Every wait is
# bounded and every process started here is stopped here.
#
#   examples_test.sh ECHO_SERVER ECHO_CLIENT TCP_PEER
set -u
server_bin=$1
client_bin=$2
peer_bin=$3
# shellcheck source-path=SCRIPTDIR source=script_lib.sh
source "$(dirname "$0")/script_lib.sh"

rss_kib() {
  awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}

# Run echo_client in the background with the arguments after $1, wait up to
# $1 seconds for it (killing it after that), stdout in $work/co, stderr in
# $work/ce; sets exit_code.
run_client() {
  local limit=$1 pid
  shift
  "$client_bin" "$@" >"$work/co" 2>"$work/ce" &
  pid=$!
  pids+=("$pid")
  if ! wait_exit "$pid" "$limit"; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
}

# The value of field $1 (as in "msg/s=123") in the summary line in file $2.
summary_field() {
  sed -n "s|.* $1=\([^ ]*\).*|\1|p" "$2"
}

# Succeeds if the number $1 is >= the number $2 (decimals allowed).
num_ge() {
  awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'
}

# ---- bad arguments: usage on stderr, exit 2 ----
for args in "--port abc" "--port 70000" "--port -1" "--bogus" "--threads 0" \
            "--threads 257" "--max-sessions x" "--idle-timeout -1" \
            "--stats-every x" "--host 999.1.1.1" "--host" "--port"; do
  expect_usage "" "$args" "$server_bin"
done
"$client_bin" --port 1 >"$work/o" 2>"$work/e"
code=$?
[ "$code" = 2 ] && ok "echo_client without --host: exit 2" ||
  bad "echo_client without --host: exit $code"
"$client_bin" --host 127.0.0.1 --port 1 --size 0 >"$work/o" 2>"$work/e"
code=$?
[ "$code" = 2 ] && ok "echo_client --size 0: exit 2" ||
  bad "echo_client --size 0: exit $code"
for args in "--threads 0" "--threads 257" "--threads x" "--seconds 0" \
            "--seconds abc" "--seconds -1" "--seconds 1e3" "--seconds" \
            "--seconds 1 --messages 5" "--messages 5 --seconds 1" \
            "--seconds 5 --timeout 2"; do
  expect_usage "" "$args" "$client_bin" --host 127.0.0.1 --port 1
done

# ---- a server on an ephemeral port ----
if ! start_server --port 0; then
  bad "echo_server --port 0 did not print 'listening on'"
  exit 1
fi
main_pid=$server_pid
main_out=$server_out
main_port=$server_port
[ "$(wc -l <"$main_out" | tr -d ' ')" = 1 ] && ok "exactly one line when ready: $(cat "$main_out")" ||
  bad "ready output: $(cat "$main_out")"

# ---- the port is taken: exit 1 naming address and error ----
"$server_bin" --port "$main_port" >"$work/o" 2>"$work/e"
code=$?
if [ "$code" = 1 ] && grep -q "127.0.0.1:$main_port" "$work/e" &&
   grep -q "address already in use" "$work/e"; then
  ok "second server on the port: exit 1, '$(cat "$work/e")'"
else
  bad "second server on the port: exit $code, stderr: $(cat "$work/e")"
fi
# A spreading server (several threads) owns its listening socket itself: it
# must be refused the same way, never share the port.
"$server_bin" --port "$main_port" --threads 4 >"$work/o" 2>"$work/e"
code=$?
if [ "$code" = 1 ] && grep -q "address already in use" "$work/e"; then
  ok "second server on the port with --threads 4: exit 1"
else
  bad "second server with --threads 4: exit $code, stderr: $(cat "$work/e")"
fi

# ---- many concurrent clients ----
if "$client_bin" --host 127.0.0.1 --port "$main_port" --sessions 200 \
     --messages 50 --size 512 >"$work/c" 2>"$work/ce"; then
  grep -q "sessions=200 messages=10000 .*errors=0" "$work/c" &&
    ok "200 sessions: $(cat "$work/c")" || bad "200 sessions summary: $(cat "$work/c")"
else
  bad "200 sessions failed: $(cat "$work/c" "$work/ce")"
fi

# ---- half-close: every byte comes back, then EOF ----
if "$peer_bin" halfclose "$main_port" 3000000 2>"$work/pe"; then
  ok "half-closing peer got 3000000 bytes back and EOF"
else
  bad "half-closing peer: $(cat "$work/pe")"
fi

# ---- a peer that never reads: memory stays bounded, others still served --
"$peer_bin" noread "$main_port" 4 2>/dev/null &
noread_pid=$!
pids+=("$noread_pid")
rss_before=$(rss_kib "$main_pid")
"$client_bin" --host 127.0.0.1 --port "$main_port" --sessions 10 \
  --messages 200 >"$work/c2" 2>&1 &&
  ok "others served while a peer never reads" ||
  bad "others not served: $(cat "$work/c2")"
wait_exit "$noread_pid" 15
rss_after=$(rss_kib "$main_pid")
if [ -r "/proc/$main_pid/status" ]; then
  if [ "$rss_after" -lt $((rss_before + 32768)) ]; then
    ok "server RSS bounded with a non-reading peer: ${rss_before} -> ${rss_after} KiB"
  else
    bad "server RSS grew: ${rss_before} -> ${rss_after} KiB"
  fi
fi

# ---- SIGTERM with clients mid-transfer: graceful exit 0 and a summary ----
"$peer_bin" noread "$main_port" 30 2>/dev/null &
stuck_pid=$!
pids+=("$stuck_pid")
"$client_bin" --host 127.0.0.1 --port "$main_port" --sessions 20 \
  --messages 100000000 --timeout 30 >/dev/null 2>&1 &
busy_pid=$!
pids+=("$busy_pid")
sleep 0.5 # let the transfers get going; the exit is what is measured
kill -TERM "$main_pid"
if wait_exit "$main_pid" 10 && [ "$exit_code" = 0 ]; then
  ok "SIGTERM mid-transfer: exit 0"
else
  bad "SIGTERM mid-transfer: exit $exit_code"
fi
grep -q "^echo_server: served [0-9]* sessions, echoed [0-9]* bytes" "$main_out" &&
  ok "summary: $(tail -n 1 "$main_out")" || bad "no summary in: $(cat "$main_out")"
wait_exit "$busy_pid" 10
[ "$exit_code" = 1 ] && ok "client cut off by the stop reports failure" ||
  bad "client cut off by the stop: exit $exit_code"
kill -KILL "$stuck_pid" 2>/dev/null

# ---- --threads 4: sessions spread over four loops, then SIGINT ----
if start_server --port 0 --threads 4; then
  grep -q "4 threads" "$server_err" && ok "--threads 4 runs four threads" ||
    bad "--threads 4: $(cat "$server_err")"
  if "$client_bin" --host 127.0.0.1 --port "$server_port" --sessions 40 \
       --messages 200 --size 300 --timeout 30 >"$work/o" 2>"$work/e"; then
    ok "--threads 4 echoes 40 sessions: $(tail -n 1 "$work/o")"
  else
    bad "--threads 4 echo: $(cat "$work/o" "$work/e")"
  fi
  # The client on four loops too: one client service per loop, 10 each.
  run_client 60 --host 127.0.0.1 --port "$server_port" --threads 4 \
    --sessions 40 --messages 200 --size 300 --timeout 30
  if [ "$exit_code" = 0 ] &&
     grep -q "^sessions=40 messages=8000 .*errors=0 threads=4 " "$work/co"; then
    ok "echo_client --threads 4: $(cat "$work/co")"
  else
    bad "echo_client --threads 4: exit $exit_code: $(cat "$work/co" "$work/ce")"
  fi
  # Duration mode: one second from when all 20 sessions are up, then each
  # finishes its message in flight.
  run_client 60 --host 127.0.0.1 --port "$server_port" --threads 2 \
    --sessions 20 --seconds 1 --size 64 --timeout 30
  secs=$(summary_field seconds "$work/co")
  rate=$(summary_field msg/s "$work/co")
  p50=$(summary_field p50_us "$work/co")
  p99=$(summary_field p99_us "$work/co")
  max=$(summary_field max_us "$work/co")
  if [ "$exit_code" = 0 ] && grep -q "^sessions=20 .*errors=0 threads=2 " "$work/co" &&
     [ -n "$secs" ] && num_ge "$secs" 0.99 && ! num_ge "$secs" 20 &&
     [ -n "$rate" ] && ! num_ge 0 "$rate" &&
     [ -n "$p50" ] && [ -n "$p99" ] && [ -n "$max" ] && ! num_ge 0 "$p50" &&
     num_ge "$p99" "$p50" && num_ge "$max" "$p99"; then
    ok "echo_client --seconds 1: $(cat "$work/co")"
  else
    bad "echo_client --seconds 1: exit $exit_code: $(cat "$work/co" "$work/ce")"
  fi
  kill -INT "$server_pid"
  wait_exit "$server_pid" 10 && [ "$exit_code" = 0 ] && ok "SIGINT: exit 0" ||
    bad "SIGINT: exit $exit_code"
  # 40 sessions from each of the two --messages clients, 20 from --seconds.
  grep -q "^echo_server: served 100 sessions" "$server_out" &&
    ok "--threads 4 summary counts every port: $(tail -n 1 "$server_out")" ||
    bad "--threads 4 summary: $(cat "$server_out")"
else
  bad "second server did not start"
fi

# ---- --idle-timeout ends a silent peer; --stats-every prints the counters ----
if start_server --port 0 --idle-timeout 300 --stats-every 1; then
  # A peer that connects and says nothing (a slowloris): the server must
  # close it after 0.3 s; read then sees EOF long before its own 10 s.
  if exec 8<>"/dev/tcp/127.0.0.1/$server_port"; then
    started=$SECONDS
    read -r -t 10 -u 8 _ 2>/dev/null
    code=$?
    exec 8<&-
    if [ "$code" -lt 128 ] && [ $((SECONDS - started)) -le 5 ]; then
      ok "--idle-timeout 300 closed a silent peer"
    else
      bad "--idle-timeout 300: silent peer not closed (read status $code)"
    fi
  else
    bad "could not connect to the --idle-timeout server"
  fi
  # At least one periodic line before the exit's own (bounded: 5 s).
  for i in $(seq 1 50); do
    grep -q "^echo_server: stats .*idle=1" "$server_out" && break
    sleep 0.1
  done
  grep -q "^echo_server: stats .*idle=1" "$server_out" &&
    ok "--stats-every 1 prints the counters: idle=1" ||
    bad "--stats-every: $(cat "$server_out")"
  kill -TERM "$server_pid"
  wait_exit "$server_pid" 10 && [ "$exit_code" = 0 ] &&
    [ "$(grep -c '^echo_server: stats ' "$server_out")" -ge 2 ] &&
    ok "stats line again on exit" || bad "exit stats: $(cat "$server_out")"
else
  bad "echo_server --idle-timeout did not start"
fi

# ---- SIGTERM the moment "listening on" appears (handlers come first) ----
fast_fails=0
for i in 1 2 3 4 5; do
  rm -f "$work/fast.fifo"
  mkfifo "$work/fast.fifo"
  "$server_bin" --port 0 >"$work/fast.fifo" 2>/dev/null &
  fast_pid=$!
  pids+=("$fast_pid")
  exec 9<"$work/fast.fifo" # a fixed fd: bash 3.2 has no {var} redirections
  if read -r -t 10 first_line <&9; then
    kill -TERM "$fast_pid"
    # ThreadSanitizer's runtime (clang 14) now and then never delivers a
    # signal to a thread blocked in epoll_wait (seen about once in 80 runs
    # on a loaded machine, before and after the mailbox redesign; never in
    # plain builds). A second SIGTERM is harmless (the stop is under way or
    # done), so a server that is still there gets one, and only a server
    # that then still does not exit 0 fails.
    if ! wait_exit "$fast_pid" 5; then
      echo "note: no exit 5 s after SIGTERM; sending it again"
      kill -TERM "$fast_pid"
      wait_exit "$fast_pid" 10
    fi
    [ "$exit_code" = 0 ] || fast_fails=$((fast_fails + 1))
  else
    fast_fails=$((fast_fails + 1))
    kill -KILL "$fast_pid" 2>/dev/null
  fi
  exec 9<&-
done
[ "$fast_fails" = 0 ] && ok "SIGTERM right after 'listening on': exit 0 (5 times)" ||
  bad "SIGTERM right after 'listening on': $fast_fails of 5 did not exit 0"

# ---- the client against a closed port ----
"$client_bin" --host 127.0.0.1 --port "$main_port" --sessions 3 >"$work/c3" 2>"$work/c3e"
code=$?
[ "$code" = 1 ] && grep -q "connection refused" "$work/c3e" &&
  ok "client to a closed port: exit 1, refused" ||
  bad "client to a closed port: exit $code $(cat "$work/c3e")"

# ---- request_reply: worker threads wait for replies across a reconnect ----
# (guide, section 13). Built next to echo_server; one process, its own
# server on a free port; it exits 0 only when every request got its reply,
# the one the server dropped got the disconnect, and the client reconnected.
request_reply_bin=$(dirname "$server_bin")/request_reply
if [ -x "$request_reply_bin" ]; then
  "$request_reply_bin" >"$work/rr" 2>"$work/rre" &
  rr_pid=$!
  pids+=("$rr_pid")
  if ! wait_exit "$rr_pid" 60; then
    kill -KILL "$rr_pid" 2>/dev/null
  fi
  if [ "$exit_code" = 0 ] &&
     grep -q "^request_reply: 4 workers, 200 requests: 199 replied, 0 failed, drop: EOF;.* reconnects [1-9]" "$work/rr"; then
    ok "request_reply: $(cat "$work/rr")"
  else
    bad "request_reply: exit $exit_code: $(cat "$work/rr" "$work/rre")"
  fi
else
  bad "request_reply: no program at $request_reply_bin"
fi

echo "$passes passed, $failures failed"
[ "$failures" = 0 ]

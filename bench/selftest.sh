#!/usr/bin/env bash
# The benchmark's self-test: proves that bench_load (bench/load.c) catches
# each way an echo server can go wrong, by loading faulty_echo in each of its
# modes, and checks bench_load's exit codes, --idle and --server-pid against
# cport's echo_server.
#
#   bench/selftest.sh BENCH_LOAD FAULTY_ECHO ECHO_SERVER
#
# Prints "ok - ..." or "not ok - ..." per check and exits 1 if any failed.
# ctest runs it as bench_selftest. It takes about 8 s (and 2 s more for
# the TLS checks, run when bench_load has --tls), more than half of it
# in the two stall checks: bench_load calls a waiting connection stalled once
# the server has sent nothing on any connection for 2 s, so those runs are
# the shortest past 2 s. Its other rule, 10 s of waiting while the server
# still answers elsewhere, is not tested: it would triple the time.
#
# Design notes: every process that runs in the background (the servers and
# the --idle client) writes its stdout into a pipe this script reads with
# `read -t`. Waiting for its "listening on" or "ready" line, and for it to
# exit after SIGTERM (its end of the pipe closes), then needs no sleep, ends
# as soon as the event happens, and still has a bound.
set -u

# Linux only (bench/CMakeLists.txt registers it there): it times reads with
# bash 4's EPOCHREALTIME and {fd} redirections, and bench_load reads the
# server's CPU time through clock_getcpuclockid.
if [ "$(uname -s)" != Linux ] || [ "${BASH_VERSINFO[0]}" -lt 4 ]; then
  echo "selftest.sh: runs on Linux with bash 4 or later only" >&2
  exit 2
fi

if [ $# -ne 3 ]; then
  echo "usage: selftest.sh BENCH_LOAD FAULTY_ECHO ECHO_SERVER" >&2
  exit 2
fi
load=$1
faulty=$2
echo_server=$3

# Each run crosses byte 1000 of every connection's stream, where faulty_echo
# breaks it, within its first few messages.
run_args=(--conns 4 --size 256 --warmup 0.1 --seconds 0.5)
run_ms=600
# A run stops at the end of its window, or 10 s later at bench_load's hard
# deadline; a bound between the two tells a caught fault from a missed one.
slack_ms=3000
summary_keys="conns size pipeline seconds msgs msg/s MiB/s p50_us p99_us max_us errors"
number='^[0-9]+(\.[0-9]+)?$'

work=$(mktemp -d) || exit 1
# pid of a background process -> read end of its stdout
declare -A fd_of # portable: Linux only (bench/CMakeLists.txt)
failed=0
checks=0
server_exits=""
load_pid="" # the running bench_load (its timeout), if any

cleanup() {
  local pid
  # timeout passes SIGTERM on to bench_load, and SIGKILLs it 2 s later.
  if [ -n "$load_pid" ]; then
    kill -TERM "$load_pid" 2>/dev/null
    wait "$load_pid" 2>/dev/null
  fi
  for pid in "${!fd_of[@]}"; do
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_us() {
  local t=${EPOCHREALTIME//[!0-9]/} # portable: Linux only (bench/CMakeLists.txt)
  echo $((10#$t))
}

# spawn NAME CMD...: starts CMD in the background with its stdout on a pipe
# and its stderr in $work/NAME.err; sets `pid`.
spawn() {
  local name=$1 fifo="$work/$1.fifo" fd
  shift
  mkfifo "$fifo" || return 1
  "$@" >"$fifo" 2>"$work/$name.err" &
  pid=$!
  # Blocks only until the child has opened its end, which it does first.
  exec {fd}<"$fifo" # portable: Linux only (bench/CMakeLists.txt)
  rm -f "$fifo"
  fd_of[$pid]=$fd
}

# expect_line PID REGEX SECONDS: reads PID's stdout until a line matches;
# sets `line`. Fails when PID closes its stdout (it exited) or after
# SECONDS without a line.
expect_line() {
  local fd=${fd_of[$1]}
  while IFS= read -r -t "$3" -u "$fd" line; do
    [[ $line =~ $2 ]] && return 0
  done
  return 1
}

# stop PID: SIGTERM, then waits up to 10 s for PID to close its stdout,
# SIGKILL after that; sets `status` to its exit status, or "hung".
stop() {
  local pid=$1 fd=${fd_of[$1]} rest rc hung=0
  kill -TERM "$pid" 2>/dev/null
  while :; do
    IFS= read -r -t 10 -u "$fd" rest
    rc=$?
    [ "$rc" -eq 0 ] || break
  done
  if [ "$rc" -gt 128 ]; then
    hung=1
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid"
  status=$?
  [ "$hung" = 0 ] || status=hung
  exec {fd}<&- # portable: Linux only (bench/CMakeLists.txt)
  unset "fd_of[$pid]"
}

# start_server NAME CMD...: spawns a server and waits for its port; sets
# `pid` and `port`. Fails, and stops it, if it prints no port for 10 s.
start_server() {
  port=""
  spawn "$@" || return 1
  if ! expect_line "$pid" '^listening on 127\.0\.0\.1:([0-9]+)$' 10; then
    stop_server "$1" "$pid"
    return 1
  fi
  port=${BASH_REMATCH[1]}
}

# stop_server NAME PID: stops a server and remembers a bad exit, checked
# once at the end.
stop_server() {
  stop "$2"
  [ "$status" = 0 ] || server_exits+=" $1:$status"
}

# run_load ARGS...: runs bench_load to its end; sets `rc`, `line` (the last
# line of its stdout, the summary) and `ms` (wall time).
run_load() {
  local t0
  t0=$(now_us)
  # bench_load has its own hard deadline; this one only catches a hang. In
  # the background, so that a signal to this script runs cleanup() at once.
  timeout -k 2 40 "$load" "$@" >"$work/load.out" 2>"$work/load.err" & # portable: Linux only
  load_pid=$!
  wait "$load_pid"
  rc=$?
  load_pid=""
  ms=$((($(now_us) - t0) / 1000))
  line=$(tail -n 1 "$work/load.out")
}

# value KEY: the value of KEY=value in $line.
value() {
  local f
  for f in $line; do
    if [ "${f%%=*}" = "$1" ]; then
      echo "${f#*=}"
      return
    fi
  done
}

# keys: the keys of $line, in order.
keys() {
  local f k=()
  for f in $line; do k+=("${f%%=*}"); done
  echo "${k[*]}"
}

# all_numbers: succeeds when every value in $line is a plain number.
all_numbers() {
  local f
  for f in $line; do
    [[ ${f#*=} =~ $number ]] || return 1
  done
}

# verdict DESCRIPTION PROBLEM [LOG]: an empty PROBLEM means the check passed;
# otherwise it is printed, with the summary line and LOG, as diagnostics.
verdict() {
  checks=$((checks + 1))
  if [ -z "$2" ]; then
    echo "ok - $1"
    return
  fi
  failed=$((failed + 1))
  echo "not ok - $1"
  echo "#   $2"
  [ -z "${line:-}" ] || echo "#   last line: $line"
  if [ -n "${3:-}" ] && [ -s "$3" ]; then
    head -n 8 "$3" | sed 's/^/#   /'
  fi
}

# clean_run KEYS: the problem with the last run as a clean one, if any.
clean_run() {
  local errors msgs
  errors=$(value errors)
  msgs=$(value msgs)
  if [ "$rc" != 0 ]; then
    echo "exit status $rc, expected 0"
  elif [ "$(keys)" != "$1" ]; then
    echo "summary keys are '$(keys)', expected '$1'"
  elif ! all_numbers; then
    echo "a summary value is not a number"
  elif [ "$errors" != 0 ]; then
    echo "errors=$errors, expected 0"
  elif [ "$msgs" -eq 0 ]; then
    echo "msgs=0, expected some"
  fi
}

# caught_fault MAX_MS [ERRORS]: the problem with the last run as one that
# caught a fault (exit 1, errors > 0, or exactly ERRORS), if any.
caught_fault() {
  local errors
  errors=$(value errors)
  if [ "$rc" != 1 ]; then
    echo "exit status $rc, expected 1"
  elif ! [[ $errors =~ ^[0-9]+$ ]]; then
    echo "no summary line with errors="
  elif [ "$errors" -eq 0 ]; then
    echo "errors=0, expected some"
  elif [ -n "${2:-}" ] && [ "$errors" != "$2" ]; then
    echo "errors=$errors, expected $2"
  elif [ "$ms" -gt "$1" ]; then
    echo "took $ms ms, expected at most $1 ms"
  fi
}

# load_mode MODE ARGS...: runs bench_load with ARGS against a fresh
# faulty_echo MODE, fresh because `swap` picks connections by the order the
# server accepted them; sets what run_load sets.
load_mode() {
  local mode=$1
  shift
  line=""
  if ! start_server "faulty_$mode" "$faulty" "$mode"; then
    rc="none (faulty_echo $mode did not start)"
    cp "$work/faulty_$mode.err" "$work/load.err"
    return
  fi
  run_load --port "$port" "$@"
  stop_server "faulty_$mode" "$pid"
}

# check_idle NAME CONNS ARGS...: bench_load --idle --conns CONNS ARGS must
# print "ready conns=CONNS", then exit 0 on SIGTERM; NAME names its files.
check_idle() {
  local name=$1 n=$2 idle_pid problem=""
  shift 2
  line=""
  spawn "$name" "$load" --idle --conns "$n" --size 64 "$@"
  idle_pid=$pid
  if ! expect_line "$idle_pid" '^ready' 20; then
    problem="no 'ready' line within 20 s"
  elif [ "$line" != "ready conns=$n" ]; then
    problem="printed '$line', expected 'ready conns=$n'"
  fi
  stop "$idle_pid"
  if [ -z "$problem" ] && [ "$status" != 0 ]; then
    problem="exit status $status after SIGTERM, expected 0"
  fi
  verdict "$([ "$name" = idle ] || echo "--tls ")--idle --conns $n: 'ready conns=$n', then exit 0 on SIGTERM" \
    "$problem" "$work/$name.err"
}

t_start=$(now_us)

# ---- each mode of faulty_echo ----
for pipeline in 1 4; do
  load_mode good "${run_args[@]}" --pipeline "$pipeline"
  verdict "good echo, pipeline $pipeline: exit 0, errors=0, msgs>0, keys in order" \
    "$(clean_run "$summary_keys")" "$work/load.err"
done

declare -A fault_of=( # portable: Linux only (bench/CMakeLists.txt)
  [flip]="a flipped byte"
  [drop]="a dropped byte"
  [extra]="an extra byte"
  [swap]="bytes sent to the wrong connection"
  [close]="a server that closes connections")
for mode in flip drop extra swap close; do
  for pipeline in 1 4; do
    load_mode "$mode" "${run_args[@]}" --pipeline "$pipeline"
    if [ "$mode" = swap ]; then
      # Exactly the two swapped connections fail; the other two are fine.
      verdict "${fault_of[$mode]}, pipeline $pipeline: exit 1, errors=2" \
        "$(caught_fault $((run_ms + slack_ms)) 2)" "$work/load.err"
    else
      verdict "${fault_of[$mode]}, pipeline $pipeline: exit 1, errors>0" \
        "$(caught_fault $((run_ms + slack_ms)))" "$work/load.err"
    fi
  done
done

# The first echoes complete inside the window, then the server falls silent
# on every connection: the 2 s silence rule applies, so the window must
# outlast it.
for pipeline in 1 4; do
  load_mode stall --conns 4 --size 256 --warmup 0 --seconds 2.2 \
    --pipeline "$pipeline"
  verdict "a server that stops answering, pipeline $pipeline: exit 1, errors>0" \
    "$(caught_fault $((2300 + slack_ms)))" "$work/load.err"
done

# ---- command line ----
# bad_args ARGS...: bench_load must refuse ARGS before connecting anywhere.
bad_args() {
  local problem=""
  run_load "$@"
  if [ "$rc" != 2 ]; then
    problem="exit status $rc, expected 2"
  elif [ -n "$line" ]; then
    problem="printed '$line', expected nothing on stdout"
  fi
  verdict "bad arguments '$*': exit 2" "$problem" "$work/load.err"
}
bad_args --port 1 --size 0
bad_args --port 1 --frobnicate
bad_args --conns 1 # no --port
bad_args --unix /nonexistent/s.sock --port 1 # both kinds of address
bad_args --unix /nonexistent/s.sock --tls    # no TLS over a Unix socket

# A port whose listener has just gone refuses connections.
if start_server faulty_gone "$faulty" good; then
  gone_port=$port
  stop_server faulty_gone "$pid"
  run_load --port "$gone_port" "${run_args[@]}"
  verdict "a refused port: exit 1, errors=4, under 2 s" \
    "$(caught_fault 2000 4)" "$work/load.err"
else
  verdict "faulty_echo good starts" "no 'listening on' line" \
    "$work/faulty_gone.err"
fi

# ---- against cport's echo_server ----
if start_server echo_server "$echo_server" --port 0; then
  server_pid=$pid
  server_port=$port
  check_idle idle 50 --port "$server_port"

  run_load --port "$server_port" "${run_args[@]}" --server-pid "$server_pid"
  verdict "--server-pid: exit 0, server_cpu_s= and cpu_us_per_msg= last" \
    "$(clean_run "$summary_keys server_cpu_s cpu_us_per_msg")" \
    "$work/load.err"
  stop_server echo_server "$server_pid"
else
  verdict "echo_server starts" "no 'listening on' line" \
    "$work/echo_server.err"
fi

# ---- TLS (bench_load --tls) ----
# Against cport's echo_server once it takes --tls-cert, else against
# bench_libevent_tls, built next to bench_load; skipped when bench_load has
# no TLS, or there is no TLS server or openssl command.
tls_server=""
if "$echo_server" --help 2>&1 | grep -q -- --tls-cert; then
  tls_server=$echo_server
elif [ -x "$(dirname "$load")/bench_libevent_tls" ]; then
  tls_server="$(dirname "$load")/bench_libevent_tls"
fi
tls_probe=$("$load" --tls --resume --port 1 2>&1)
if [[ $tls_probe == *"without OpenSSL"* ]] || [ -z "$tls_server" ] ||
  ! command -v openssl >/dev/null 2>&1; then
  echo "ok - TLS checks # SKIP no TLS in bench_load, no TLS server or no openssl"
elif ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -nodes -subj /CN=localhost -days 2 -keyout "$work/key.pem" \
  -out "$work/cert.pem" 2>"$work/openssl.err"; then
  line=""
  verdict "a certificate for the TLS checks" "openssl req failed" \
    "$work/openssl.err"
elif start_server tls_server "$tls_server" --port 0 \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"; then
  server_pid=$pid
  server_port=$port
  run_load --tls --port "$server_port" "${run_args[@]}" --pipeline 4 \
    --server-pid "$server_pid"
  verdict "--tls, pipeline 4: exit 0, errors=0, msgs>0, keys in order" \
    "$(clean_run "$summary_keys server_cpu_s cpu_us_per_msg")" \
    "$work/load.err"

  run_load --tls --handshakes --resume --port "$server_port" --conns 4 \
    --warmup 0.1 --seconds 0.5 --server-pid "$server_pid"
  problem=""
  if [ "$rc" != 0 ] || [ "$(value errors)" != 0 ]; then
    problem="exit status $rc, errors=$(value errors), expected 0 and 0"
  elif [ "$(keys)" != "conns size seconds handshakes hs/s resumed p50_us p99_us max_us errors server_cpu_s cpu_us_per_handshake" ]; then
    problem="summary keys are '$(keys)'"
  elif ! all_numbers || [ "$(value handshakes)" -eq 0 ]; then
    problem="no handshakes counted"
  elif [ "$(value resumed)" != "$(value handshakes)" ]; then
    # Each slot's one full handshake comes before the window.
    problem="resumed=$(value resumed) of handshakes=$(value handshakes)"
  fi
  verdict "--tls --handshakes --resume: exit 0, every measured handshake resumed" \
    "$problem" "$work/load.err"

  check_idle tls_idle 20 --tls --port "$server_port"

  # Plain bytes to a TLS server: the handshake fails, and that is caught.
  run_load --port "$server_port" "${run_args[@]}"
  verdict "plain load against a TLS server: exit 1, errors>0" \
    "$(caught_fault $((run_ms + slack_ms)))" "$work/load.err"
  stop_server tls_server "$server_pid"
else
  verdict "$(basename "$tls_server") starts" "no 'listening on' line" \
    "$work/tls_server.err"
fi

line=""
problem=""
[ -z "$server_exits" ] ||
  problem="exit status (name:status):$server_exits"
verdict "every server exits 0 on SIGTERM" "$problem"

echo "# $checks checks, $failed failed, in" \
  "$((($(now_us) - t_start) / 1000)) ms"
[ "$failed" = 0 ]

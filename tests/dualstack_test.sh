#!/usr/bin/env bash
# Dual-stack clients and servers against real resolvers and peers:
#   - Happy Eyeballs: a name whose first address (IPv6) never answers and
#     whose second (IPv4) has the server: echo_client connects, by racing
#     (without the race it would wait for the operating system's connect
#     timeout, minutes). The name is served by nss_wrapper
#     (NSS_WRAPPER_HOSTS, Debian's libnss-wrapper) from a hosts file of the
#     test's own; the silent address is tcp_peer's "deaf" listener.
#   - The same name changed to another address: the next run looks it up
#     again and reaches the server there.
#   - A name that moves while one client runs: reconnect_client, under a
#     reconnect policy, holds a session to the name's address; the name
#     moves and that server stops, and the same process reconnects to the
#     new address (a client looks its name up at every connect attempt).
#   - A server on "::" takes `nc -4` and `nc -6` clients (opts.ipv6_only 0).
# Loopback only; every wait bounded; every process started here is stopped
# here. Parts without their tools (nss_wrapper: Linux only; IPv6
# loopback; nc) are skipped with the reason printed; exits 77 (ctest:
# skipped) when every part was.
#
#   dualstack_test.sh ECHO_SERVER ECHO_CLIENT TCP_PEER RECONNECT_CLIENT
set -u
server_bin=$1
client_bin=$2
peer_bin=$3
moving_bin=$4
# shellcheck source-path=SCRIPTDIR source=script_lib.sh
source "$(dirname "$0")/script_lib.sh"

skipped=0
skip_part() {
  skipped=$((skipped + 1))
  echo "SKIP: $*"
}

# nss_wrapper's library, or nothing.
nss_wrapper=
for dir in /usr/lib/*-linux-gnu /usr/lib64 /usr/lib /usr/local/lib; do
  if [ -e "$dir/libnss_wrapper.so" ]; then
    nss_wrapper=$dir/libnss_wrapper.so
    break
  fi
done

# Run a command with the test's hosts file in front of the system's.
with_hosts() {
  LD_PRELOAD=$nss_wrapper NSS_WRAPPER_HOSTS=$work/hosts "$@"
}

# client HOST PORT LOG: echo_client through the hosts file, 15 s at most;
# returns its exit code (124 when it had to be stopped). One session: one
# lookup at a time, since nss_wrapper's getaddrinfo (1.1.12) gives wrong
# answers, or crashes, when called from several threads at once (cport's
# own lookups run on libuv's thread pool, concurrently with the system's
# resolver in test_service).
client() {
  local pid
  with_hosts "$client_bin" --host "$1" --port "$2" --sessions 1 \
    --messages 20 >"$3" 2>&1 &
  pid=$!
  pids+=("$pid")
  if ! wait_exit "$pid" 15; then
    stop_pid "$pid"
    return 124
  fi
  return "$exit_code"
}

deaf_ready() { grep -q '^deaf: ready' "$work/deaf.out"; }

# ---- Happy Eyeballs through a real resolver ----
if [ -z "$nss_wrapper" ]; then
  skip_part "Happy Eyeballs: no libnss_wrapper.so (Debian: libnss-wrapper)"
elif grep -aq -e __asan_init -e __tsan_init "$client_bin"; then
  # Its dlopen of libc with RTLD_DEEPBIND stops ASan, and TSan reports its
  # own mutexes; the plain build's run covers this part.
  skip_part "Happy Eyeballs: nss_wrapper cannot run under a sanitizer"
elif ! start_server --host 127.0.0.1 --port 0; then
  bad "echo_server did not start: $(cat "$server_err")"
else
  port=$server_port
  "$peer_bin" deaf "$port" 40 >"$work/deaf.out" 2>&1 &
  deaf_pid=$!
  pids+=("$deaf_pid")
  if ! wait_until 5 deaf_ready; then
    skip_part "Happy Eyeballs: no IPv6 loopback ($(cat "$work/deaf.out"))"
  else
    printf '::1 he.test\n127.0.0.1 he.test\n' >"$work/hosts"
    first=$(with_hosts getent ahosts he.test | awk 'NR == 1 { print $1 }')
    if [ "$first" != "::1" ]; then
      skip_part "Happy Eyeballs: the resolver gives '$first' first, not ::1"
    elif client he.test "$port" "$work/client.out"; then
      ok "Happy Eyeballs: he.test (::1 silent, then 127.0.0.1):" \
        "$(head -n 1 "$work/client.out")"
    else
      bad "Happy Eyeballs: echo_client exit $?: $(tail -n 3 "$work/client.out")"
    fi
    # The name moves: a new lookup finds it (and ::1 is gone from it).
    server1_pid=$server_pid server1_out=$server_out
    if start_server --host 127.0.0.2 --port "$port"; then
      printf '127.0.0.2 he.test\n' >"$work/hosts"
      if client he.test "$port" "$work/client2.out"; then
        stop_pid "$server_pid"
        if grep -q 'served 1 sessions' "$server_out"; then
          ok "the name moved to 127.0.0.2: a new lookup reached it"
        else
          bad "the name moved: 127.0.0.2's server says" \
            "$(grep served "$server_out")"
        fi
      else
        bad "the name moved: echo_client exit $?:" \
          "$(tail -n 3 "$work/client2.out")"
      fi
    else
      skip_part "the name moves: cannot listen on 127.0.0.2 ($(cat "$server_err"))"
    fi
    stop_pid "$server1_pid"
    if grep -q 'served 1 sessions' "$server1_out"; then
      ok "127.0.0.1's server served the raced session, nothing more"
    else
      bad "127.0.0.1's server says $(grep served "$server1_out")"
    fi
  fi
  stop_pid "$deaf_pid"
fi

# ---- the name moves under one running client ----
# Two echo servers on one port number, A on 127.0.0.1 and B on 127.0.0.2;
# reconnect_client reaches A through cport-moving.test. The name then moves
# to 127.0.0.2 and A stops: the same process, reconnecting, must reach B,
# which only a new lookup can find. The hosts file is replaced (mv), not
# rewritten: nss_wrapper reopens a replaced file at the next lookup, but
# rereads one rewritten in place only when its mtime, in whole seconds,
# changed.
# set_name ADDR: cport-moving.test now resolves to ADDR.
set_name() {
  printf '%s cport-moving.test\n' "$1" >"$work/hosts.new"
  mv "$work/hosts.new" "$work/hosts"
}
moved_out=$work/moving.out
moved_echoed() { grep -q "^echoed $1: 3 lines from $2:$port\$" "$moved_out"; }
if [ -z "$nss_wrapper" ]; then
  skip_part "moving name: no libnss_wrapper.so (Debian: libnss-wrapper)"
elif grep -aq -e __asan_init -e __tsan_init "$moving_bin"; then
  skip_part "moving name: nss_wrapper cannot run under a sanitizer"
else
  # A takes a free port; B the same number on 127.0.0.2, which another
  # process may hold already: a few tries.
  a_pid='' b_pid='' b_why=''
  for _ in 1 2 3 4 5; do
    if ! start_server --host 127.0.0.1 --port 0; then
      b_why="127.0.0.1: $(cat "$server_err")"
      break
    fi
    a_pid=$server_pid a_out=$server_out port=$server_port
    if start_server --host 127.0.0.2 --port "$port"; then
      b_pid=$server_pid b_out=$server_out
      break
    fi
    b_why="127.0.0.2: $(cat "$server_err")"
    stop_pid "$a_pid"
    a_pid=
    grep -qi 'in use' "$server_err" || break
  done
  if [ -z "$b_pid" ]; then
    skip_part "moving name: cannot listen on one port twice ($b_why)"
  else
    set_name 127.0.0.1
    # Not through with_hosts: $! must be the client itself.
    LD_PRELOAD=$nss_wrapper NSS_WRAPPER_HOSTS=$work/hosts \
      "$moving_bin" cport-moving.test "$port" 2 10 >"$moved_out" 2>&1 &
    moving_pid=$!
    pids+=("$moving_pid")
    if ! wait_until 10 moved_echoed 1 127.0.0.1; then
      stop_pid "$moving_pid"
      bad "moving name: no echo from 127.0.0.1: $(tail -n 3 "$moved_out")"
    else
      set_name 127.0.0.2
      stop_pid "$a_pid" # its session ends: the client reconnects
      wait_exit "$moving_pid" 15 || stop_pid "$moving_pid"
      if [ "$exit_code" = 0 ] &&
        grep -q "^connected 1 to 127.0.0.1:$port (pid $moving_pid)\$" \
          "$moved_out" &&
        grep -q "^connected 2 to 127.0.0.2:$port (pid $moving_pid)\$" \
          "$moved_out" && moved_echoed 2 127.0.0.2; then
        ok "moving name: process $moving_pid reconnected to 127.0.0.2" \
          "after the move and echoed there"
      else
        bad "moving name: reconnect_client exit $exit_code:" \
          "$(grep -E '^(connected|echoed)' "$moved_out" | tr '\n' ';')" \
          "last: $(tail -n 2 "$moved_out" | tr '\n' ';')"
      fi
    fi
    stop_pid "$a_pid" # if the first echo never came
    stop_pid "$b_pid"
    if grep -q 'served 1 sessions, echoed 36 bytes' "$a_out" &&
      grep -q 'served 1 sessions, echoed 36 bytes' "$b_out"; then
      ok "moving name: 127.0.0.1 and 127.0.0.2 each served the one session"
    else
      bad "moving name: the servers say $(grep -h served "$a_out" "$b_out")"
    fi
  fi
fi

# ---- a server on :: takes both families ----
# nc_echo FLAG HOST PORT: one line through nc (-4 or -6), back.
nc_echo() {
  printf 'hello %s\n' "$1" | nc "$1" -N -w 3 "$2" "$3" 2>&1
}
if ! command -v nc >/dev/null 2>&1 || ! nc -h 2>&1 | grep -q -- '-N'; then
  skip_part ":: server: no nc with -N (Debian: netcat-openbsd)"
elif ! start_server --host :: --port 0; then
  skip_part ":: server: cannot listen on :: ($(cat "$server_err"))"
else
  for fam in -4 -6; do
    host=127.0.0.1
    [ "$fam" = -6 ] && host=::1
    got=$(nc_echo "$fam" "$host" "$server_port")
    if [ "$got" = "hello $fam" ]; then
      ok ":: server: nc $fam $host echoed"
    else
      bad ":: server: nc $fam $host got '$got'"
    fi
  done
  stop_pid "$server_pid"
fi

echo "dualstack: $passes passed, $failures failed, $skipped parts skipped"
if [ "$failures" = 0 ] && [ "$passes" = 0 ]; then
  exit 77
fi
[ "$failures" = 0 ]

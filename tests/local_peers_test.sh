#!/usr/bin/env bash
# Local endpoints against real, independent peers: echo_server --unix
# serving socat and nc -U byte-exact, echo_client --unix, the peer
# credentials of a socat client (its pid, the test's uid and gid),
# --unix-mode, the socket file removed on stop (only the server's own), a
# stale file (nothing listens) replaced, a live server's file and a
# regular file refused and left alone, the path length limit (107 bytes
# on Linux, 103 on macOS and the BSDs: one byte more is refused, exactly
# the limit is served), and a Linux abstract name. Every wait is bounded
# and every process started here is stopped here; the socket files live
# in a private folder under /tmp (macOS's $TMPDIR is too long for them),
# removed on exit. Parts without their tools (socat, nc -U, python3) are
# skipped with the reason printed; exits 77 (ctest: skipped) when every
# part was.
#
#   local_peers_test.sh ECHO_SERVER ECHO_CLIENT
set -u
server_bin=$1
client_bin=$2
# shellcheck source-path=SCRIPTDIR source=script_lib.sh
source "$(dirname "$0")/script_lib.sh"
trap '' PIPE
# A short folder: sun_path holds 108 bytes on Linux, 104 on macOS.
rm -rf "$work"
work=$(mktemp -d /tmp/cport.XXXXXX) || {
  echo "FAIL: cannot make a folder under /tmp"
  exit 1
}

skipped=0
skip_part() {
  skipped=$((skipped + 1))
  echo "SKIP: $*"
}
have() { command -v "$1" >/dev/null 2>&1; }
size() { wc -c <"$1" | tr -d ' '; }
os=$(uname -s)

# nc's flag to end after its input's end (OpenBSD's -N; -q on others), or
# nothing when this nc cannot do it or has no -U.
nc_end=
if have nc; then
  nc_help=$(nc -h 2>&1)
  if echo "$nc_help" | grep -q -- '-U'; then
    if echo "$nc_help" | grep -q -- '-N'; then
      nc_end=-N
    elif echo "$nc_help" | grep -q -- '-q'; then
      nc_end="-q 2"
    fi
  fi
fi

# The permission bits of a file, in octal: GNU stat, else BSD stat.
if stat -c %a "$work" >/dev/null 2>&1; then # portable: BSD falls back
  file_mode() { stat -c %a "$1"; } # portable: only where it worked
else
  file_mode() { stat -f %Lp "$1"; }
fi

# The default mode a socket file gets (755) is not the one checked for.
umask 022
head -c 65536 /dev/urandom >"$work/msg"

# run NAME COMMAND...: COMMAND with $work/msg as input, its output in
# $work/NAME.echo and .err, 15 s at most; sets run_pid and exit_code.
run() {
  local name=$1
  shift
  "$@" <"$work/msg" >"$work/$name.echo" 2>"$work/$name.err" &
  run_pid=$!
  pids+=("$run_pid")
  wait_exit "$run_pid" 15 || stop_pid "$run_pid"
}

# through NAME COMMAND...: send $work/msg through COMMAND (a client that
# ends after its input's end and the server's close); the same bytes must
# come back.
through() {
  run "$@"
  cmp -s "$work/msg" "$work/$1.echo"
}

# echo_exact NAME WHAT COMMAND...: through, with an ok or FAIL line
# about WHAT.
echo_exact() {
  local name=$1 what=$2
  shift 2
  if through "$name" "$@"; then
    ok "$what: 64 KiB came back byte-exact"
  else
    bad "$what: $(size "$work/$name.echo") bytes back," \
      "$(head -c 200 "$work/$name.err")"
  fi
}

# serves NAME PATH: the server at PATH echoes: socat byte-exact, or
# echo_client without socat.
serves() {
  if have socat; then
    through "$1" socat -t 10 -T 10 - "UNIX-CONNECT:$2"
  else
    run "$1" "$client_bin" --unix "$2" --sessions 1 --messages 10
    [ "$exit_code" = 0 ] && grep -q ' errors=0 ' "$work/$1.echo"
  fi
}

# start_and_serve NAME PATH WHAT: echo_server --unix PATH starts and
# serves, and is stopped; WHAT names the case in the ok or FAIL line.
start_and_serve() {
  if ! start_server --unix "$2"; then
    bad "$3: echo_server did not start: $(cat "$server_err")"
    return
  fi
  if serves "$1" "$2"; then
    ok "$3: served"
  else
    bad "$3: the server started but does not echo"
  fi
  stop_pid "$server_pid"
}

# expect_refused NAME PATH CODE TEXT: echo_server --unix PATH must exit
# CODE within 10 s with TEXT in its stderr.
expect_refused() {
  local pid
  "$server_bin" --unix "$2" >"$work/$1.out" 2>"$work/$1.err" &
  pid=$!
  pids+=("$pid")
  wait_exit "$pid" 10 || stop_pid "$pid"
  [ "$exit_code" = "$3" ] && grep -q "$4" "$work/$1.err"
}

# ---- 1. socat and nc -U, byte-exact ----
sock=$work/s
if ! start_server --unix "$sock"; then
  bad "echo_server --unix did not start: $(cat "$server_err")"
else
  server1_pid=$server_pid server1_out=$server_out
  if ! grep -q "^listening on unix:$sock\$" "$server_out"; then
    bad "echo_server --unix printed '$(head -n 1 "$server_out")'"
  fi
  if ! have socat; then
    skip_part "socat echo and peer credentials: no socat" \
      "(scripts/deps.sh installs it)"
  else
    echo_exact socat "socat UNIX-CONNECT" \
      socat -t 10 -T 10 - "UNIX-CONNECT:$sock"
    # ---- 3. the peer's credentials: socat's pid, our uid and gid ----
    want="uid $(id -u) gid $(id -g)"
    line=$(grep "from pid $run_pid " "$server1_out")
    if [ -n "$line" ]; then
      if echo "$line" | grep -q "from pid $run_pid $want\$"; then
        ok "peer credentials: '$line' (socat's pid, $want)"
      else
        bad "peer credentials: '$line', wanted $want"
      fi
    elif [ "$os" = Linux ] || [ "$os" = Darwin ]; then
      bad "peer credentials: no session from socat's pid $run_pid:" \
        "$(grep session "$server1_out" | tail -n 3)"
    else
      skip_part "peer pid: $os does not give it"
      if grep -q "from pid -1 $want\$" "$server1_out"; then
        ok "peer credentials: $want"
      else
        bad "peer credentials: wanted $want:" \
          "$(grep session "$server1_out" | tail -n 3)"
      fi
    fi
  fi
  if [ -z "$nc_end" ]; then
    skip_part "nc -U: no nc with -U and -N or -q (Debian: netcat-openbsd)"
  else
    # shellcheck disable=SC2086 # nc_end may be two words
    echo_exact nc "nc -U $nc_end" nc -U $nc_end "$sock"
  fi

  # ---- 2. echo_client, several sessions ----
  run client "$client_bin" --unix "$sock" --sessions 8 --messages 50
  if [ "$exit_code" = 0 ] && grep -q ' errors=0 ' "$work/client.echo"; then
    ok "echo_client --unix: $(head -n 1 "$work/client.echo")"
  else
    bad "echo_client --unix: exit $exit_code:" \
      "$(cat "$work/client.echo" "$work/client.err" | tail -n 3)"
  fi

  # ---- 7. a live server's file: refused, left alone ----
  if expect_refused live "$sock" 1 'address already in use'; then
    ok "a second server on a live path: exit 1, '$(head -n 1 "$work/live.err")'"
  else
    bad "a second server on a live path: exit $exit_code," \
      "'$(head -n 1 "$work/live.err")'"
  fi
  if [ -S "$sock" ] && serves live_after "$sock"; then
    ok "the live server kept its file and still serves"
  else
    bad "the live server after the second one: file" \
      "$([ -S "$sock" ] && echo there || echo gone), no echo"
  fi

  # ---- 5. the file is removed on stop ----
  stop_pid "$server1_pid"
  if [ "$exit_code" = 0 ] && [ ! -e "$sock" ]; then
    ok "SIGTERM: exit 0, socket file removed"
  else
    bad "SIGTERM: exit $exit_code, socket file" \
      "$([ -e "$sock" ] && echo still there || echo gone)"
  fi
fi

# ---- 5. ...but only the file the server made ----
# Server A's file is removed under it and B makes a new one there: A's
# stop must leave B's alone.
if start_server --unix "$work/r"; then
  a_pid=$server_pid
  rm -f "$work/r"
  if ! start_server --unix "$work/r"; then
    bad "a second server on a removed file's path did not start:" \
      "$(cat "$server_err")"
    stop_pid "$a_pid"
  else
    stop_pid "$a_pid"
    if [ -S "$work/r" ] && serves replaced "$work/r"; then
      ok "the first server's stop left the second one's file, which serves"
    else
      bad "after the first server's stop, the second one's file (no echo):" \
        "$(ls -l "$work/r" 2>&1)"
    fi
    stop_pid "$server_pid"
  fi
else
  bad "echo_server --unix $work/r did not start: $(cat "$server_err")"
fi

# ---- 4. --unix-mode ----
if ! start_server --unix "$work/m" --unix-mode 0660; then
  bad "echo_server --unix-mode 0660 did not start: $(cat "$server_err")"
else
  mode=$(file_mode "$work/m")
  if [ "$mode" = 660 ]; then
    ok "--unix-mode 0660: the file's mode is $mode"
  else
    bad "--unix-mode 0660: the file's mode is '$mode'"
  fi
  stop_pid "$server_pid"
fi

# ---- 6. a stale file (nothing listens) is replaced ----
stale=$work/stale
if have python3; then
  python3 -c 'import socket, sys
socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$stale"
  how=python3
elif have socat; then
  # socat removes its file when it closes, but not when it is killed.
  socat "UNIX-LISTEN:$stale" /dev/null &
  pid=$!
  pids+=("$pid")
  wait_until 5 test -S "$stale"
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  how=socat
fi
if ! have python3 && ! have socat; then
  skip_part "stale file: neither python3 nor socat to leave one"
elif [ ! -S "$stale" ]; then
  bad "stale file: $how left no socket file"
else
  start_and_serve stale "$stale" "stale file ($how's, nothing listening)"
fi

# ---- 8. a regular file is refused and left alone ----
printf 'keep me\n' >"$work/plain"
if expect_refused plain "$work/plain" 1 'address already in use' &&
  [ -f "$work/plain" ] && [ "$(cat "$work/plain")" = "keep me" ]; then
  ok "a regular file: exit 1, the file untouched"
else
  bad "a regular file: exit $exit_code, '$(head -n 1 "$work/plain.err")'," \
    "file now: $(ls -l "$work/plain" 2>&1)"
fi

# ---- 9. the path length limit ----
limit=103
[ "$os" = Linux ] && limit=107
pad() { printf "%$1s" '' | tr ' ' x; }
at_limit=$work/$(pad $((limit - ${#work} - 1)))
if expect_refused long "${at_limit}y" 2 'too long'; then
  ok "a $((limit + 1))-byte path: exit 2, '$(head -n 1 "$work/long.err" |
    sed 's/x\{20,\}/x.../')'"
else
  bad "a $((limit + 1))-byte path: exit $exit_code," \
    "'$(head -n 1 "$work/long.err")'"
fi
if [ ${#at_limit} != "$limit" ]; then
  bad "the test built a ${#at_limit}-byte path, not $limit"
else
  start_and_serve limit "$at_limit" "a $limit-byte path"
fi

# ---- 10. a Linux abstract name ----
if [ "$os" != Linux ]; then
  skip_part "abstract name: Linux only ($os)"
elif ! have socat; then
  skip_part "abstract name: no socat"
elif ! start_server --unix "@cport-test-$$"; then
  bad "echo_server --unix @cport-test-$$ did not start: $(cat "$server_err")"
else
  echo_exact abstract "abstract name @cport-test-$$" \
    socat -t 10 -T 10 - "ABSTRACT-CONNECT:cport-test-$$"
  if expect_refused abstract2 "@cport-test-$$" 1 'address already in use'; then
    ok "a second server on a live abstract name: exit 1"
  else
    bad "a second server on a live abstract name: exit $exit_code," \
      "'$(head -n 1 "$work/abstract2.err")'"
  fi
  stop_pid "$server_pid"
fi

echo "local_peers: $passes passed, $failures failed, $skipped parts skipped"
if [ "$failures" = 0 ] && [ "$passes" = 0 ]; then
  exit 77
fi
[ "$failures" = 0 ]

#!/usr/bin/env bash
# Drives examples/chat_server and examples/chat_client end to end: bad
# arguments; three scripted clients in two rooms on a server of two threads,
# each of which must see exactly its room's traffic; the server's answers to
# invalid requests; peers that break the packet framing, dropped while
# others keep chatting; a client whose server goes away; a client over its
# message budget, refused but kept; one flooding a room of 200 with room
# changes or messages, disconnected while a newcomer is still answered at
# once; SIGTERM and SIGINT. Clients synchronise with the script's /expect,
# never with sleeps; every wait is bounded and every process started here
# is stopped here.
#
#   chat_test.sh CHAT_SERVER CHAT_CLIENT CHAT_FLOOD
set -u
server_bin=$1
client_bin=$2
flood_bin=$3
# shellcheck source-path=SCRIPTDIR source=script_lib.sh
source "$(dirname "$0")/script_lib.sh"

# Wait up to $3 seconds for file $1 to hold the line $2 exactly, while pid
# $4 runs.
wait_line() {
  local _
  for _ in $(seq 1 $(($3 * 10))); do
    grep -qxF -- "$2" "$1" 2>/dev/null && return 0
    kill -0 "$4" 2>/dev/null || break
    sleep 0.1
  done
  grep -qxF -- "$2" "$1" 2>/dev/null
}

# start_client NAME [client arguments...]: run chat_client --name NAME
# --script $work/NAME.script against the server in the background, stdout
# in $work/NAME.out, stderr in $work/NAME.err; sets client_pid.
start_client() {
  local name=$1
  shift
  "$client_bin" --port "$server_port" --name "$name" \
    --script "$work/$name.script" "$@" \
    >"$work/$name.out" 2>"$work/$name.err" &
  client_pid=$!
  pids+=("$client_pid")
}

# check_client NAME PID: the client exits 0 within 20 s and printed exactly
# the lines in $work/NAME.expected.
check_client() {
  wait_exit "$2" 20
  if [ "$exit_code" != 0 ]; then
    bad "$1: exit $exit_code: $(cat "$work/$1.err")"
  elif diff -u "$work/$1.expected" "$work/$1.out" >"$work/$1.diff"; then
    ok "$1 saw exactly its room: $(wc -l <"$work/$1.out" | tr -d ' ') lines"
  else
    bad "$1 saw other lines: $(cat "$work/$1.diff")"
  fi
}

# ---- bad arguments: a message and usage on stderr, exit 2 ----
for args in "--port abc" "--port 70000" "--port -1" "--threads 0" \
            "--threads 257" "--threads x" "--bogus 1" "--host 999.1.1.1" \
            "--host" "--port"; do
  expect_usage chat_server "$args" "$server_bin"
done
"$server_bin" --help >"$work/o" 2>"$work/e"
code=$?
[ "$code" = 0 ] && grep -q '^usage: chat_server' "$work/o" &&
  ok "chat_server --help: usage, exit 0" || bad "chat_server --help: exit $code"
long_name=$(printf 'n%.0s' $(seq 1 25))
for args in "--port 0" "--port abc" "--timeout 0" "--name $long_name" \
            "--name" "--host 999.1.1.1" "--bogus 1"; do
  expect_usage chat_client "$args" "$client_bin"
done
"$client_bin" --name "two words" </dev/null >"$work/o" 2>"$work/e"
code=$?
[ "$code" = 2 ] && grep -q "bad argument '--name' two words" "$work/e" &&
  ok "chat_client --name 'two words': exit 2" ||
  bad "chat_client --name 'two words': exit $code $(cat "$work/e")"
"$client_bin" --script "$work/no-such-script" >"$work/o" 2>"$work/e"
code=$?
[ "$code" = 2 ] && grep -q "cannot open script" "$work/e" &&
  ok "chat_client --script missing: exit 2, '$(cat "$work/e")'" ||
  bad "chat_client --script missing: exit $code $(cat "$work/e")"

# ---- a server of two threads on an ephemeral port ----
if ! start_server --port 0 --threads 2; then
  bad "chat_server --port 0 --threads 2 did not print 'listening on'"
  exit 1
fi
main_pid=$server_pid
main_out=$server_out
main_err=$server_err
main_port=$server_port
ok "$(cat "$main_out")"

"$server_bin" --port "$main_port" >"$work/o" 2>"$work/e"
code=$?
[ "$code" = 1 ] && grep -q "cannot listen on 127.0.0.1:$main_port: address already in use" "$work/e" &&
  ok "second server on the port: exit 1, '$(cat "$work/e")'" ||
  bad "second server on the port: exit $code, stderr: $(cat "$work/e")"

# ---- three clients, two rooms ----
# carol alone in "den", alice and bob in "lobby". Bob then visits den and
# comes back. The server spreads its sessions over its two threads in turn,
# so alice and bob (connected one after the other) live on different
# threads, and every lobby message crosses from one to the other.
# Causality makes the outputs exact: carol hears bob join den only after
# the lobby's messages were sent (she must not have them), and alice hears
# bob's goodbye only after carol spoke in den (she must not have that).
cat >"$work/carol.script" <<'EOF'
# carol: alone in den until bob drops by
/join den
/expect * bob joined den
hi from carol
/expect * bob left den
EOF
cat >"$work/alice.script" <<'EOF'
/join lobby
/expect * bob joined lobby
hello from alice
/expect [lobby] bob: hello from bob
/expect [lobby] bob: bye from bob
/leave
/expect * alice left lobby
EOF
cat >"$work/bob.script" <<'EOF'
/join lobby
/expect [lobby] alice: hello from alice
hello from bob
/expect [lobby] bob: hello from bob
/join den
/expect [den] carol: hi from carol
/join lobby
/expect * bob joined lobby
bye from bob
/expect * alice left lobby
EOF
cat >"$work/carol.expected" <<'EOF'
* you are now carol
* carol joined den
* bob joined den
[den] carol: hi from carol
* bob left den
EOF
cat >"$work/alice.expected" <<'EOF'
* you are now alice
* alice joined lobby
* bob joined lobby
[lobby] alice: hello from alice
[lobby] bob: hello from bob
* bob left lobby
* bob joined lobby
[lobby] bob: bye from bob
* alice left lobby
EOF
cat >"$work/bob.expected" <<'EOF'
* you are now bob
* bob joined lobby
[lobby] alice: hello from alice
[lobby] bob: hello from bob
* bob left lobby
* bob joined den
[den] carol: hi from carol
* bob left den
* bob joined lobby
[lobby] bob: bye from bob
* alice left lobby
EOF
# Each waits for the one before it to be in its room: a join notice goes
# only to those already there.
start_client carol
carol_pid=$client_pid
wait_line "$work/carol.out" "* carol joined den" 10 "$carol_pid" ||
  bad "carol did not join den: $(cat "$work/carol.err")"
start_client alice
alice_pid=$client_pid
wait_line "$work/alice.out" "* alice joined lobby" 10 "$alice_pid" ||
  bad "alice did not join lobby: $(cat "$work/alice.err")"
start_client bob
bob_pid=$client_pid
check_client carol "$carol_pid"
check_client alice "$alice_pid"
check_client bob "$bob_pid"

# ---- invalid requests: an error back, the session unharmed ----
text_1000=$(printf 'a%.0s' $(seq 1 1000))
cat >"$work/probe.script" <<EOF
hello
/expect ! join a room first
/leave
/expect ! not in a room
/join has space
/expect ! room name must be 1 to 32 visible characters
/join $(printf 'r%.0s' $(seq 1 33))
/expect ! room name must be
/join
/expect ! room name must be
/nick
/expect ! name must be 1 to 24 visible characters
/nick $long_name
/expect ! name must be
# an unknown id, and a server-to-client id sent the wrong way
/raw 0400 6300
/expect ! unknown packet id 99
/raw 0400 6500
/expect ! unknown packet id 101
# SAY with a tab in it; LEAVE with a payload
/raw 0500 0300 09
/expect ! text must be 1 to 1000 bytes
/raw 0500 0400 78
/expect ! LEAVE takes no payload
/nick probe
/expect * you are now probe
/join solo
/expect * probe joined solo
/join solo
/expect ! already in room solo
${text_1000}b
/expect ! text must be
$text_1000
/expect [solo] probe: $text_1000
still here
/expect [solo] probe: still here
EOF
start_client probe
probe_pid=$client_pid
wait_exit "$probe_pid" 20
[ "$exit_code" = 0 ] &&
  ok "every invalid request answered with an error: $(grep -c '^! ' "$work/probe.out") errors" ||
  bad "invalid requests: exit $exit_code: $(cat "$work/probe.err")"

# ---- broken framing: those peers are dropped, the room talks on ----
cat >"$work/dave.script" <<'EOF'
/join r2
/expect * erin joined r2
still here
/expect [r2] erin: me too
/leave
/expect * dave left r2
EOF
cat >"$work/erin.script" <<'EOF'
/join r2
/expect [r2] dave: still here
me too
/expect * dave left r2
EOF
cat >"$work/dave.expected" <<'EOF'
* you are now dave
* dave joined r2
* erin joined r2
[r2] dave: still here
[r2] erin: me too
* dave left r2
EOF
cat >"$work/erin.expected" <<'EOF'
* you are now erin
* erin joined r2
[r2] dave: still here
[r2] erin: me too
* dave left r2
EOF
start_client dave
dave_pid=$client_pid
wait_line "$work/dave.out" "* dave joined r2" 10 "$dave_pid" ||
  bad "dave did not join r2: $(cat "$work/dave.err")"
# A raw peer: a header whose size (2) is below the header's own 4 bytes.
# The server must close it at once: read sees the end long before 10 s.
if exec 8<>"/dev/tcp/127.0.0.1/$main_port"; then
  printf '\002\000\000\000' >&8
  read -r -t 10 -u 8 _ 2>/dev/null
  code=$?
  exec 8<&-
  [ "$code" -lt 128 ] && ok "raw peer with a malformed header closed" ||
    bad "raw peer with a malformed header not closed (read status $code)"
else
  bad "could not connect a raw peer"
fi
# The client's own /raw: a packet of 60000 bytes, over CHAT_PACKET_MAX, and
# again a size below the header. Each must end that client alone, at once
# (its --timeout is far longer), with a clear message.
for hex in "60ea 0300" "0200 0000"; do
  printf '/raw %s\n/expect never comes\n' "$hex" >"$work/rogue.script"
  start_client rogue --timeout 60
  rogue_pid=$client_pid
  wait_exit "$rogue_pid" 20
  if [ "$exit_code" = 1 ] &&
     grep -q "connection to 127.0.0.1:$main_port lost" "$work/rogue.err"; then
    ok "client sending header $hex dropped: $(tr '\n' ' ' <"$work/rogue.err")"
  else
    bad "client sending header $hex: exit $exit_code $(cat "$work/rogue.err")"
  fi
done
start_client erin
erin_pid=$client_pid
check_client dave "$dave_pid"
check_client erin "$erin_pid"
grep -q "dropped: malformed packet header" "$main_err" &&
  grep -q "rogue dropped: packet too large" "$main_err" &&
  ok "the server names the dropped peers" || bad "server stderr: $(cat "$main_err")"

# ---- typed input (stdin, not --script), ended by end of file ----
printf '/join pipe\nfrom a pipe\n/expect from a pipe\n' >"$work/typed"
"$client_bin" --port "$main_port" <"$work/typed" >"$work/typed.out" \
  2>"$work/typed.err" &
typed_pid=$!
pids+=("$typed_pid")
wait_exit "$typed_pid" 20
[ "$exit_code" = 0 ] && grep -q '^\[pipe\] guest[0-9]*: from a pipe$' "$work/typed.out" &&
  ok "stdin client: $(tail -n 1 "$work/typed.out")" ||
  bad "stdin client: exit $exit_code $(cat "$work/typed.out" "$work/typed.err")"

# ---- the server goes away: SIGTERM, exit 0; its client exits 1 ----
printf '/join x\n/expect never comes\n' >"$work/frank.script"
start_client frank --timeout 60
frank_pid=$client_pid
wait_line "$work/frank.out" "* frank joined x" 10 "$frank_pid" ||
  bad "frank did not join x: $(cat "$work/frank.err")"
kill -TERM "$main_pid"
wait_exit "$main_pid" 10
[ "$exit_code" = 0 ] && ok "SIGTERM: exit 0" || bad "SIGTERM: exit $exit_code"
# carol alice bob probe dave raw rogue rogue erin typed frank: 11 sessions,
# three of them dropped for their headers.
grep -q '^chat_server: served 11 sessions, [0-9]* packets in, 3 dropped for bad packets$' "$main_out" &&
  ok "summary: $(tail -n 1 "$main_out")" || bad "summary: $(cat "$main_out")"
wait_exit "$frank_pid" 10
if [ "$exit_code" = 1 ] &&
   grep -q "connection to 127.0.0.1:$main_port lost" "$work/frank.err"; then
  ok "client of a stopped server: exit 1, $(tr '\n' ' ' <"$work/frank.err")"
else
  bad "client of a stopped server: exit $exit_code $(cat "$work/frank.err")"
fi

# ---- no server: the client says so ----
printf '/join x\n' >"$work/late.script"
start_client late
late_pid=$client_pid
wait_exit "$late_pid" 20
[ "$exit_code" = 1 ] && grep -q "cannot connect to 127.0.0.1:$main_port: connection refused" "$work/late.err" &&
  ok "client without a server: exit 1, $(cat "$work/late.err")" ||
  bad "client without a server: exit $exit_code $(cat "$work/late.err")"

# ---- budgets: one session cannot keep the server to itself ----
# A room of 200 (chat_flood), and a server on one thread, where one
# session's work holds back every other. Before the budgets, the flood
# cost the server 10 s of CPU and the newcomer waited for all of it (11 s
# and more); now it takes milliseconds, and the 3 s bound only catches the
# old behaviour. macOS starts with 256 descriptors, too close to 200.
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 1024 ] ||
  ulimit -n 1024 2>/dev/null
if start_server --port 0; then
  flood_pid=$server_pid
  flood_err=$server_err
  # Twenty messages at once: the ten past the burst are refused, one short
  # of a disconnect, and the session carries on.
  {
    echo "/join burst"
    for i in $(seq 1 20); do echo "message $i"; done
    echo "/expect ! slow down: at most 10 messages at once, then one every 200 ms"
    echo "/nick polite"
    echo "/expect * you are now polite"
  } >"$work/polite.script"
  start_client polite
  polite_pid=$client_pid
  wait_exit "$polite_pid" 20
  [ "$exit_code" = 0 ] &&
    ok "client over its message budget refused, kept: $(grep -c '^! slow down' "$work/polite.out") refusals" ||
    bad "client over its message budget: exit $exit_code $(cat "$work/polite.out" "$work/polite.err")"
  for kind in rooms messages; do
    case $kind in
      rooms) what="room changes" ;;
      *) what=messages ;;
    esac
    "$flood_bin" "$kind" "$server_port" 200 3000 >"$work/flood.out" 2>&1 &
    helper_pid=$!
    pids+=("$helper_pid")
    wait_exit "$helper_pid" 150
    probe=$(grep '^probe: ' "$work/flood.out")
    attacker=$(grep '^attacker: ' "$work/flood.out")
    if [ "$exit_code" = 0 ] && [ -n "$probe" ] &&
       case $attacker in
         *'"slow down: at most '*" $what at once"*"\", \"too many $what, disconnected\"), closed by the server: "*) true ;;
         *) false ;;
       esac; then
      ok "flood of $kind in a room of 200: $probe; $attacker"
    else
      bad "flood of $kind: exit $exit_code: $(cat "$work/flood.out")"
    fi
    grep -q "^chat_server: attacker dropped: too many $what\$" "$flood_err" &&
      ok "the server names the flooder: too many $what" ||
      bad "no flooder named: $(cat "$flood_err")"
  done
  kill -TERM "$flood_pid"
  wait_exit "$flood_pid" 10 && [ "$exit_code" = 0 ] ||
    bad "the flooded server did not stop: $exit_code"
else
  bad "chat_server for the budgets did not start"
fi

# ---- SIGINT ----
if start_server --port 0; then
  kill -INT "$server_pid"
  wait_exit "$server_pid" 10 && [ "$exit_code" = 0 ] && ok "SIGINT: exit 0" ||
    bad "SIGINT: exit $exit_code"
else
  bad "second chat_server did not start"
fi

echo "$passes passed, $failures failed"
[ "$failures" = 0 ]

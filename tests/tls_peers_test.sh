#!/usr/bin/env bash
# cport's TLS against other TLS implementations: OpenSSL's s_client and
# s_server and GnuTLS's gnutls-cli and gnutls-serv talk to the example
# programs (echo_server, echo_client, chat_server, chat_client). The
# certificates are made here, in a scratch folder removed at exit: a CA, a
# server certificate for localhost and 127.0.0.1, an expired one, one for
# another name, one from a CA nobody trusts, and a client certificate.
# Loopback only; every wait is bounded and every process started here is
# stopped here. Exits 77 (ctest: skipped) without an OpenSSL 3 command
# line; without gnutls-cli and gnutls-serv, their checks are skipped.
#
#   tls_peers_test.sh ECHO_SERVER ECHO_CLIENT CHAT_SERVER CHAT_CLIENT
set -u
server_bin=$1
client_bin=$2
chat_server_bin=$3
chat_client_bin=$4
# shellcheck source-path=SCRIPTDIR source=script_lib.sh
source "$(dirname "$0")/script_lib.sh"

big_size=10485760 # bytes echoed through each peer
trap '' PIPE # see peer_send

skip() {
  echo "SKIP: $*"
  exit 77
}

# ---- the peers: OpenSSL 3 (on macOS Homebrew's: /usr/bin/openssl is
# LibreSSL), and GnuTLS ----
openssl_bin=
for o in ${OPENSSL:-} openssl /opt/homebrew/opt/openssl@3/bin/openssl \
         /usr/local/opt/openssl@3/bin/openssl; do
  if "$o" version 2>/dev/null | grep -q '^OpenSSL 3'; then
    openssl_bin=$o
    break
  fi
done
[ -n "$openssl_bin" ] || skip "no OpenSSL 3 'openssl' command (scripts/deps.sh installs it)"
have_gnutls=1
if ! command -v gnutls-cli >/dev/null 2>&1 ||
   ! command -v gnutls-serv >/dev/null 2>&1; then
  have_gnutls=0
  echo "SKIP: gnutls-cli or gnutls-serv not found: the GnuTLS checks"
fi

# ---- certificates ----
certs=$work/certs
mkdir "$certs"
serial=1
# new_ca NAME: a self-signed CA.
new_ca() {
  "$openssl_bin" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -keyout "$certs/$1.key" -out "$certs/$1.pem" -days 2 \
    -subj "/CN=cport test $1" >/dev/null 2>&1
}
# new_cert NAME CA DAYS SAN: a certificate issued by CA, valid from now for
# DAYS days (-1: expired yesterday), for the subjectAltName SAN.
new_cert() {
  serial=$((serial + 1))
  printf 'subjectAltName=%s\n' "$4" >"$certs/$1.ext"
  "$openssl_bin" req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -keyout "$certs/$1.key" -out "$certs/$1.csr" -subj "/CN=$1" \
    >/dev/null 2>&1 &&
    "$openssl_bin" x509 -req -in "$certs/$1.csr" -CA "$certs/$2.pem" \
      -CAkey "$certs/$2.key" -set_serial "$serial" -days "$3" \
      -extfile "$certs/$1.ext" -out "$certs/$1.pem" >/dev/null 2>&1
}
here="DNS:localhost,IP:127.0.0.1"
if ! { new_ca ca && new_ca rogue_ca && new_cert server ca 2 "$here" &&
       new_cert expired ca -1 "$here" &&
       new_cert other ca 2 "DNS:other.example" &&
       new_cert stranger rogue_ca 2 "$here" &&
       new_cert client ca 2 "DNS:client.example"; }; then
  bad "could not make the certificates with $openssl_bin"
  exit 1
fi
if "$openssl_bin" x509 -in "$certs/expired.pem" -noout -checkend 0 >/dev/null; then
  bad "the expired certificate is not expired"
fi
ca=$certs/ca.pem
head -c "$big_size" /dev/urandom >"$work/big"

# ---- helpers ----
sha256() { "$openssl_bin" dgst -sha256; }
has_line() { grep -q -x -- "$2" "$1"; }
peer_gone() { ! kill -0 "$peer_pid" 2>/dev/null; }
# Has the peer printed $1 bytes, or is it gone?
echoed_or_gone() { [ "$(wc -c <"$out" | tr -d ' ')" -ge "$1" ] || peer_gone; }
# Has the peer printed line $1, or is it gone?
line_or_gone() { has_line "$out" "$1" || peer_gone; }
# Has the peer said $1 on stderr $2 times, or is it gone?
said_or_gone() { [ "$(grep -c "$1" "$err")" -ge "$2" ] || peer_gone; }
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A peer session: peer_start NAME COMMAND... starts COMMAND with its stdin a
# FIFO that this script holds open on fd 4, so that the peer sees the end
# of its input only at peer_end; its stdout goes to $out, stderr to $err.
peer_start() {
  local name=$1
  shift
  out=$work/$name.out
  err=$work/$name.err
  rm -f "$work/stdin"
  mkfifo "$work/stdin"
  "$@" <"$work/stdin" >"$out" 2>"$err" &
  peer_pid=$!
  pids+=("$peer_pid")
  exec 4>"$work/stdin"
}
# A peer that has gone must fail the check, not end this script with
# SIGPIPE (ignored from the start).
peer_send() { printf '%s\n' "$@" >&4 2>/dev/null; }
# peer_end SECONDS: close the peer's input and wait for it to exit, killing
# it after SECONDS; sets exit_code.
peer_end() {
  exec 4>&-
  if ! wait_exit "$peer_pid" "$1"; then
    kill -KILL "$peer_pid" 2>/dev/null
    wait "$peer_pid" 2>/dev/null
  fi
}

# stop_example NAME: stop the example server started last; it must exit
# 0 (the sanitizers' reports end it otherwise).
stop_example() {
  stop_pid "$server_pid"
  [ "$exit_code" = 0 ] && ok "$1 stopped: exit 0" ||
    bad "$1 stopped: exit $exit_code, $(tail -n 5 "$server_err")"
}

# The peers' servers cannot listen on port 0 and say which port they got:
# try_listen NAME COMMAND... starts COMMAND with PORT in its arguments
# replaced by a port below the ephemeral ranges (Linux 32768-, macOS
# 49152-), where no outgoing connection sits, and waits for it to listen.
# Sets srv_pid, srv_port and srv_err; returns 1 (the server stopped) if it
# did not listen, say because the port was taken: try again.
try_listen() {
  local name=$1 arg args=()
  shift
  srv_port=$((20000 + RANDOM % 12000))
  for arg in "$@"; do
    args+=("${arg//PORT/$srv_port}")
  done
  srv_err=$work/$name.err
  "${args[@]}" >"$work/$name.out" 2>"$srv_err" &
  srv_pid=$!
  pids+=("$srv_pid")
  # A plain connection that closes at once: the server logs a failed
  # handshake and goes on.
  wait_until 5 tcp_open "$srv_port" && kill -0 "$srv_pid" 2>/dev/null &&
    return 0
  stop_pid "$srv_pid"
  return 1
}

# openssl s_server presenting certificate $1, as an echo server: it prints
# what it receives (-quiet: nothing else, and no commands) and sends what
# it reads, so its output is looped back into its input, through tee for
# $work/s_server.in (every byte it received). Sets s_server_pid and
# s_server_port.
s_server_pid=
start_s_server() {
  stop_s_server
  for _ in 1 2 3 4 5; do
    rm -f "$work/loop.in" "$work/loop.out" "$work/s_server.in"
    mkfifo "$work/loop.in" "$work/loop.out"
    # tee opens loop.in first, which lets s_server's shell open it.
    tee "$work/s_server.in" >"$work/loop.in" <"$work/loop.out" &
    tee_pid=$!
    pids+=("$tee_pid")
    # shellcheck disable=SC2016 # the inner shell expands them
    if try_listen s_server sh -c 'i=$1 o=$2; shift 2; exec "$@" <"$i" >"$o"' \
         sh "$work/loop.in" "$work/loop.out" "$openssl_bin" s_server -quiet \
         -cert "$certs/$1.pem" -key "$certs/$1.key" -accept 127.0.0.1:PORT; then
      s_server_pid=$srv_pid
      s_server_port=$srv_port
      return 0
    fi
    stop_pid "$tee_pid"
  done
  bad "openssl s_server with $1.pem did not listen: $(cat "$srv_err")"
  return 1
}
stop_s_server() {
  if [ -n "$s_server_pid" ]; then
    stop_pid "$s_server_pid"
    stop_pid "$tee_pid"
  fi
  s_server_pid=
}

# Run echo_client with the arguments given, at most 30 s; stdout in
# $work/co, stderr in $work/ce; sets exit_code.
run_client() {
  local pid
  "$client_bin" "$@" >"$work/co" 2>"$work/ce" &
  pid=$!
  pids+=("$pid")
  if ! wait_exit "$pid" 30; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
}

# ---- bad TLS options: usage on stderr, exit 2 ----
for args in "--tls-cert $certs/server.pem" "--tls-key $certs/server.key" \
            "--tls-ca $ca" "--tls" "--tls-name localhost"; do
  expect_usage "" "$args" "$server_bin"
done
for args in "--tls-insecure --tls-ca $ca" "--tls-name localhost" \
            "--tls-cert $certs/client.pem --tls-key $certs/client.key" \
            "--tls --tls-cert $certs/client.pem" "--tls-ca"; do
  expect_usage "" "$args" "$client_bin" --host 127.0.0.1 --port 1
done

# ---- echo_server over TLS ----
if ! start_server --port 0 --tls-cert "$certs/server.pem" \
       --tls-key "$certs/server.key"; then
  bad "echo_server with TLS did not start: $(cat "$server_err")"
  exit 1
fi
port=$server_port

# echo_through NAME FILE COMMAND...: send FILE to echo_server through the
# peer COMMAND; the same bytes must come back.
echo_through() {
  local name=$1 file=$2
  shift 2
  peer_start "$name" "$@"
  cat "$file" >&4 &
  pids+=($!)
  wait_until 30 echoed_or_gone "$(wc -c <"$file" | tr -d ' ')"
  peer_end 1
  if [ "$(sha256 <"$out")" = "$(sha256 <"$file")" ]; then
    ok "$name: $(wc -c <"$file" | tr -d ' ') random bytes echoed exactly"
  else
    bad "$name: $(wc -c <"$out" | tr -d ' ') bytes back, not those sent:" \
      "$(tail -n 3 "$err")"
  fi
}
# s_client reads its input to the end and stays connected (-quiet also
# ignores the end of its input) until peer_end kills it.
echo_through s_client "$work/big" "$openssl_bin" s_client -quiet \
  -connect "127.0.0.1:$port" -servername localhost -alpn cport-test \
  -verify_return_error -CAfile "$ca"
# gnutls-cli writes what it receives a byte at a time (a system call
# each): 10 MiB would take minutes, so it echoes 256 KiB.
if [ "$have_gnutls" = 1 ]; then
  head -c 262144 "$work/big" >"$work/small"
  echo_through gnutls-cli "$work/small" gnutls-cli \
    --logfile "$work/gnutls_echo.log" --x509cafile "$ca" -p "$port" localhost
fi

# Resumption: a second connection with the first one's session (a TLS 1.3
# ticket, which arrives after the handshake: wait for an echo first).
resume_round() {
  peer_start "s_client_$1" "$openssl_bin" s_client \
    -connect "127.0.0.1:$port" -servername localhost -verify_return_error \
    -CAfile "$ca" "$2" "$work/session.pem"
  peer_send "ping"
  wait_until 10 line_or_gone ping
  peer_end 5
}
resume_round first -sess_out
resume_round second -sess_in
if grep -q '^New, TLS' "$work/s_client_first.out" &&
   grep -q '^Reused, TLSv1.3' "$work/s_client_second.out"; then
  ok "openssl s_client resumed its session: $(grep '^Reused' "$out")"
else
  bad "openssl s_client did not resume:" \
    "$(grep -E '^(New|Reused),' "$work/s_client_first.out" "$out")"
fi
if [ "$have_gnutls" = 1 ]; then
  # Where there is --waitresumption, gnutls-cli waits for the ticket
  # before it reconnects, rather than race it.
  wait_ticket=
  gnutls-cli --help 2>&1 | grep -q -e --waitresumption &&
    wait_ticket=--waitresumption
  peer_start gnutls_resume gnutls-cli ${wait_ticket:+"$wait_ticket"} \
    --resume --x509cafile "$ca" -p "$port" localhost
  peer_send "ping"
  wait_until 10 line_or_gone ping
  peer_end 5
  if grep -q "This is a resumed session" "$out" && has_line "$out" ping; then
    ok "gnutls-cli --resume resumed its session"
  else
    bad "gnutls-cli --resume: $(grep -i -E 'resum|error' "$out" "$err" | head -n 5)"
  fi
fi

# Renegotiation is refused: s_client's "R" asks for it (TLS 1.2); the
# server must end that connection rather than renegotiate, and go on
# serving others.
peer_start s_client_reneg "$openssl_bin" s_client -tls1_2 \
  -connect "127.0.0.1:$port" -servername localhost -CAfile "$ca"
peer_send "before"
wait_until 10 line_or_gone before
# s_client takes a whole read of its input for the command: send the next
# line only once it has said it took this one.
peer_send "R"
wait_until 10 said_or_gone RENEGOTIATING 1
peer_send "after"
if wait_exit "$peer_pid" 10 && has_line "$out" before &&
   ! has_line "$out" after; then
  ok "renegotiation refused: s_client ended, $(grep -i -m 1 -E 'error|alert' "$err")"
else
  bad "renegotiation: s_client exit $exit_code; echoed:" \
    "$(grep -x -E 'before|after' "$out" | tr '\n' ' ')"
fi
peer_end 1
run_client --host 127.0.0.1 --port "$port" --tls-ca "$ca" --messages 20
[ "$exit_code" = 0 ] && ok "echo_server serves on after the renegotiation" ||
  bad "echo_server after the renegotiation: $(cat "$work/co" "$work/ce")"

# KeyUpdate (TLS 1.3): "k" updates s_client's keys, "K" also asks the
# server to update its own; the echo goes on after each.
peer_start s_client_keyupdate "$openssl_bin" s_client -tls1_3 \
  -connect "127.0.0.1:$port" -servername localhost -CAfile "$ca"
peer_send one
wait_until 10 line_or_gone one
peer_send k
wait_until 10 said_or_gone KEYUPDATE 1
peer_send two
wait_until 10 line_or_gone two
peer_send K
wait_until 10 said_or_gone KEYUPDATE 2
peer_send three
wait_until 10 line_or_gone three
peer_end 5
if has_line "$out" three && said_or_gone KEYUPDATE 2; then
  ok "KeyUpdate both ways: the echo went on after 'k' and 'K'"
else
  bad "KeyUpdate: echoed $(grep -x -E 'one|two|three' "$out" | tr '\n' ' ');" \
    "$(grep -i -E 'KEYUPDATE|error' "$err" "$out" | head -n 4)"
fi

stop_example echo_server

# ---- echo_client against GnuTLS's and OpenSSL's servers ----
if [ "$have_gnutls" = 1 ]; then
  # gnutls-serv --echo answers whole lines of text (it stops at a zero
  # byte): --text. It listens on every interface; we only connect on
  # loopback. It logs each line: 2 MiB of them is enough.
  for _ in 1 2 3 4 5; do
    try_listen gnutls_serv gnutls-serv --echo \
      --x509certfile "$certs/server.pem" --x509keyfile "$certs/server.key" \
      -p PORT && break
  done
  if kill -0 "$srv_pid" 2>/dev/null; then
    run_client --host 127.0.0.1 --port "$srv_port" --tls-ca "$ca" \
      --tls-name localhost --text --size 65536 --messages 32
    if [ "$exit_code" = 0 ] &&
       grep -q "messages=32 bytes=2097152 .*errors=0" "$work/co"; then
      ok "echo_client against gnutls-serv: 2097152 bytes echoed exactly"
    else
      bad "echo_client against gnutls-serv: exit $exit_code," \
        "$(cat "$work/co" "$work/ce")"
    fi
    stop_pid "$srv_pid"
  else
    bad "gnutls-serv did not listen: $(cat "$srv_err")"
  fi
fi

if start_s_server server; then
  run_client --host 127.0.0.1 --port "$s_server_port" --tls-ca "$ca" \
    --tls-name localhost --size 65536 --messages 160
  received=$(wc -c <"$work/s_server.in" | tr -d ' ')
  if [ "$exit_code" = 0 ] &&
     grep -q "messages=160 bytes=$big_size .*errors=0" "$work/co" &&
     [ "$received" = "$big_size" ]; then
    ok "echo_client against openssl s_server: $big_size bytes exactly"
  else
    bad "echo_client against openssl s_server: exit $exit_code, s_server" \
      "received $received bytes; $(cat "$work/co" "$work/ce")"
  fi
  # Without --tls-name the address itself is verified (IP:127.0.0.1).
  run_client --host 127.0.0.1 --port "$s_server_port" --tls-ca "$ca" \
    --messages 5
  [ "$exit_code" = 0 ] && ok "echo_client verified the IP address 127.0.0.1" ||
    bad "echo_client by IP address: exit $exit_code, $(cat "$work/ce")"
fi

# ---- verification failures: the code's name, at once ----
# expect_failure CERT CODE: s_server presents CERT; echo_client must fail
# with CODE.
expect_failure() {
  start_s_server "$1" || return
  run_client --host 127.0.0.1 --port "$s_server_port" --tls-ca "$ca" \
    --tls-name localhost --messages 1 --timeout 10
  if [ "$exit_code" = 1 ] && grep -q "connect failed: $2: " "$work/ce"; then
    ok "$1 certificate: $(head -n 1 "$work/ce")"
  else
    bad "$1 certificate: exit $exit_code, want $2: $(cat "$work/ce")"
  fi
}
expect_failure other ETLSNAME
expect_failure stranger ETLSCA
expect_failure expired ETLSEXPIRED
# --tls-insecure accepts the stranger, and says so.
run_client --host 127.0.0.1 --port "$s_server_port" --tls-insecure \
  --messages 5
[ "$exit_code" = 0 ] && grep -q "warning: --tls-insecure" "$work/ce" &&
  ok "--tls-insecure connects anyway, with a warning" ||
  bad "--tls-insecure: exit $exit_code, $(cat "$work/ce")"
stop_s_server

# ---- chat over TLS, with client certificates required ----
server_bin=$chat_server_bin
if start_server --port 0 --tls-cert "$certs/server.pem" \
     --tls-key "$certs/server.key" --tls-ca "$ca"; then
  printf '%s\n' "/join tls" "hello over TLS" "/expect hello over TLS" \
    >"$work/chat.script"
  "$chat_client_bin" --port "$server_port" --tls-ca "$ca" \
    --tls-name localhost --tls-cert "$certs/client.pem" \
    --tls-key "$certs/client.key" --script "$work/chat.script" \
    --timeout 10 >"$work/chat.out" 2>"$work/chat.err" &
  chat_pid=$!
  pids+=("$chat_pid")
  wait_exit "$chat_pid" 20
  [ "$exit_code" = 0 ] && grep -q "over TLSv1.3" "$work/chat.err" &&
    ok "chat_client with a client certificate: $(tail -n 1 "$work/chat.out")" ||
    bad "chat_client with a client certificate: exit $exit_code," \
      "$(cat "$work/chat.out" "$work/chat.err")"
  "$chat_client_bin" --port "$server_port" --tls-ca "$ca" \
    --tls-name localhost --script "$work/chat.script" --timeout 10 \
    >"$work/chat.out" 2>"$work/chat.err" &
  chat_pid=$!
  pids+=("$chat_pid")
  wait_exit "$chat_pid" 20
  [ "$exit_code" = 1 ] &&
    ok "chat_client without a client certificate refused: $(tail -n 1 "$work/chat.err")" ||
    bad "chat_client without a client certificate: exit $exit_code," \
      "$(cat "$work/chat.out" "$work/chat.err")"
  stop_example chat_server
else
  bad "chat_server with TLS did not start: $(cat "$server_err")"
fi

echo "tls_peers: $passes passed, $failures failed"
[ "$failures" = 0 ]

#!/usr/bin/env bash
# echo_server behind real balancers: HAProxy (send-proxy, send-proxy-v2,
# send-proxy-v2-ssl, send-proxy-v2-ssl-cn, check-send-proxy health checks), nginx's stream
# module (v1) and curl --haproxy-protocol as PROXY protocol senders; an
# untrusted sender; systemd-socket-activate passing the listening socket;
# a zero-downtime restart under ping-pong load through HAProxy (a second
# server on the inherited socket, the first drained); SO_REUSEPORT; and a
# drained server going DOWN in HAProxy's health checks. The HAProxy and
# nginx configurations are read out of docs/deploy.md (blocks marked
# "<!-- test: NAME -->"), with only addresses, paths and the health
# check's timing changed. Clients bind to 127.0.0.7, which the servers'
# logs must name. Loopback only; every wait is bounded and every process
# started here is stopped here. Exits 77 (ctest: skipped) without haproxy
# or socat; without nginx, curl or systemd-socket-activate, their parts
# are skipped.
#
#   proxy_peers_test.sh ECHO_SERVER TCP_PEER DEPLOY_MD
# shellcheck disable=SC2154 # start_named sets NAME_pid, _port, _out, _err
set -u
server_bin=$1
peer_bin=$2
deploy_md=$3
# shellcheck source-path=SCRIPTDIR source=script_lib.sh
source "$(dirname "$0")/script_lib.sh"
trap '' PIPE

skip() {
  echo "SKIP: $*"
  exit 77
}
PATH=$PATH:/usr/sbin:/usr/local/sbin
command -v haproxy >/dev/null 2>&1 ||
  skip "no haproxy (scripts/deps.sh installs it)"
command -v socat >/dev/null 2>&1 || skip "no socat (scripts/deps.sh installs it)"
command -v openssl >/dev/null 2>&1 || skip "no openssl"
[ -f "$deploy_md" ] || { bad "no $deploy_md"; exit 1; }

# ---- helpers ----
# A port below the ephemeral ranges (Linux 32768-, macOS 49152-) that
# nothing listens on now.
free_port() {
  local p _
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# config NAME: the block of docs/deploy.md marked NAME, with the
# substitutions in $subst (sed expressions, one per line) applied.
config() {
  awk -v name="<!-- test: $1 -->" '
    $0 == name { want = 1; next }
    want && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' "$deploy_md" | sed -e "$subst"
}
# Lines of file $1 after its first $2.
lines_after() { tail -n +$(($2 + 1)) "$1"; }
count_lines() { wc -l <"$1" | tr -d ' '; }
# echo_via NAME PORT ADDRESS...: send $work/msg to 127.0.0.1:PORT through
# socat (bound to 127.0.0.7; ADDRESS: TCP or OPENSSL and its options),
# which half-closes after it; the same bytes must come back.
echo_via() {
  local name=$1 port=$2 kind=$3 pid
  shift 3
  socat -t 10 -T 10 - "$kind:127.0.0.1:$port,bind=127.0.0.7${1:+,$1}" \
    <"$work/msg" >"$work/$name.echo" 2>"$work/$name.err" &
  pid=$!
  pids+=("$pid")
  wait_exit "$pid" 15 || stop_pid "$pid"
  cmp -s "$work/msg" "$work/$name.echo"
}
# The status HAProxy's stats socket $1 gives server $3 of back end $2.
hap_status() {
  echo "show stat" | socat -t 2 - "UNIX-CONNECT:$1" 2>/dev/null |
    awk -F, -v b="$2" -v s="$3" '$1 == b && $2 == s { print $18 }'
}
hap_is() { [ "$(hap_status "$1" "$2" "$3")" = "$4" ]; }
# start_named NAME ARGS...: start_server, and keep what it set as NAME_pid,
# NAME_port, NAME_out, NAME_err.
start_named() {
  local name=$1
  shift
  start_server "$@" || return 1
  eval "${name}_pid=\$server_pid ${name}_port=\$server_port" \
    "${name}_out=\$server_out ${name}_err=\$server_err"
}
# expect_exit NAME PID: SIGTERM PID; it must exit 0 (the sanitizers' reports
# end it otherwise).
expect_exit() {
  stop_pid "$2"
  [ "$exit_code" = 0 ] && ok "$1 stopped: exit 0" || bad "$1 stopped: exit $exit_code"
}
head -c 65536 /dev/urandom >"$work/msg"

# ---- bad options: usage on stderr, exit 2 ----
for args in "--proxy-protocol v3" "--proxy-protocol" \
            "--proxy-protocol v2 --trusted-proxy 10.0.0.0/33" \
            "--proxy-protocol v2 --trusted-proxy example.com" \
            "--proxy-protocol v2 --trusted-proxy 10.0.0.0/x" \
            "--trusted-proxy 10.0.0.0/8" "--drain-timeout -1" \
            "--inherit-fd x" "--reuse-port 1"; do
  expect_usage echo_server "$args" "$server_bin"
done

# ---- certificates: HAProxy's (localhost) and a client's (CN client),
# each self-signed; the client's is its own CA ----
certs=$work/certs
mkdir "$certs"
for name in balancer client; do
  cn=localhost
  [ "$name" = client ] && cn=client
  if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
       -nodes -keyout "$certs/$name.key" -out "$certs/$name.pem" -days 2 \
       -subj "/CN=$cn" >/dev/null 2>&1; then
    bad "openssl could not make the $name certificate"
    exit 1
  fi
done
cat "$certs/balancer.pem" "$certs/balancer.key" >"$certs/echo.pem"

# ---- echo_server A and B, HAProxy in front ----
trusted="--trusted-proxy 127.0.0.1 --trusted-proxy 127.0.0.7"
# shellcheck disable=SC2086 # $trusted is two options
start_named a --port 0 --proxy-protocol any $trusted --drain-timeout 20000 ||
  { bad "echo_server A did not start: $(cat "$server_err")"; exit 1; }
# shellcheck disable=SC2086
start_named b --port 0 --proxy-protocol any $trusted ||
  { bad "echo_server B did not start: $(cat "$server_err")"; exit 1; }
hap_sock=$work/haproxy.sock
hap_pid=
for _ in 1 2 3 4 5; do
  fe=$(free_port) fe_v1=$(free_port) fe_tls=$(free_port) fe_ssl=$(free_port)
  subst="s|127.0.0.1:7000|127.0.0.1:$fe|
s|127.0.0.1:7001|127.0.0.1:$fe_v1|
s|127.0.0.1:7443|127.0.0.1:$fe_tls|
s|127.0.0.1:7444|127.0.0.1:$fe_ssl|
s|127.0.0.1:7101|127.0.0.1:$a_port|
s|127.0.0.1:7102|127.0.0.1:$b_port|
s|/run/haproxy/cport.sock|$hap_sock|
s|/etc/haproxy/echo.pem|$certs/echo.pem|
s|/etc/haproxy/clients-ca.pem|$certs/client.pem|
s|inter 2s fall 2 rise 3|inter 100 fall 1 rise 1|"
  config haproxy.cfg >"$work/haproxy.cfg"
  haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.out" 2>&1 &
  hap_pid=$!
  pids+=("$hap_pid")
  if wait_until 5 listening "$fe" && listening "$fe_v1" &&
     listening "$fe_tls" && listening "$fe_ssl"; then
    break
  fi
  stop_pid "$hap_pid"
  hap_pid=
done
if [ -z "$hap_pid" ]; then
  bad "haproxy did not start: $(tail -n 5 "$work/haproxy.out")"
  exit 1
fi
if wait_until 10 hap_is "$hap_sock" echo a UP && hap_is "$hap_sock" echo b UP; then
  ok "haproxy: A and B UP by check-send-proxy health checks"
else
  bad "haproxy health checks: A $(hap_status "$hap_sock" echo a)," \
    "B $(hap_status "$hap_sock" echo b); $(tail -n 5 "$work/haproxy.out")"
fi

# via_balancer NAME PORT KIND OPTIONS WANT: echo through a front end; the
# session line of A or B must name 127.0.0.7 and contain WANT.
via_balancer() {
  local name=$1 port=$2 kind=$3 opts=$4 want=$5 na nb line
  na=$(count_lines "$a_out") nb=$(count_lines "$b_out")
  if echo_via "$name" "$port" "$kind" "$opts"; then
    ok "$name: 65536 random bytes echoed exactly"
  else
    bad "$name: $(wc -c <"$work/$name.echo" | tr -d ' ') bytes back," \
      "$(head -c 300 "$work/$name.err")"
  fi
  line=$({ lines_after "$a_out" "$na"; lines_after "$b_out" "$nb"; } |
    grep -v LOCAL | grep '^echo_server: session ')
  case $line in
    *" from 127.0.0.7:"*"$want"*) ok "$name: $line" ;;
    *) bad "$name: the server logged '$line', want 127.0.0.7 and '$want'" ;;
  esac
}
via_balancer haproxy-send-proxy-v2 "$fe" TCP "" "(PROXY v2)"
via_balancer haproxy-send-proxy "$fe_v1" TCP "" "(PROXY v1)"
via_balancer haproxy-send-proxy-v2-ssl-cn "$fe_tls" OPENSSL \
  "verify=0,cert=$certs/client.pem,key=$certs/client.key" \
  "(PROXY v2, ssl TLSv1.3, cn client"
via_balancer haproxy-send-proxy-v2-ssl "$fe_ssl" OPENSSL \
  "verify=0,cert=$certs/client.pem,key=$certs/client.key" \
  "(PROXY v2, ssl TLSv1.3)"

# ---- nginx stream, proxy_protocol on (v1), in front of A ----
if command -v nginx >/dev/null 2>&1; then
  mkdir "$work/nginx"
  # Debian builds the stream module as a module to load (--with-stream=
  # dynamic); Homebrew builds it in, and a load_module line would fail.
  modules=$(nginx -V 2>&1 | tr ' ' '\n' | sed -n 's/^--modules-path=//p')
  load="s|/usr/lib/nginx/modules|${modules:-/usr/lib/nginx/modules}|"
  nginx -V 2>&1 | grep -q -e '--with-stream=dynamic' || load='/^load_module/d'
  nginx_pid=
  for _ in 1 2 3 4 5; do
    ng=$(free_port)
    subst="$load
s|127.0.0.1:7200|127.0.0.1:$ng|
s|127.0.0.1:7101|127.0.0.1:$a_port|
s|/run/nginx-cport.pid|$work/nginx/nginx.pid|
s|/var/log/nginx/cport-error.log|$work/nginx/error.log|"
    config nginx.conf >"$work/nginx/nginx.conf"
    nginx -p "$work/nginx/" -e "$work/nginx/error.log" \
      -c "$work/nginx/nginx.conf" -g 'daemon off; master_process off;' \
      >"$work/nginx/out" 2>&1 &
    nginx_pid=$!
    pids+=("$nginx_pid")
    wait_until 5 listening "$ng" && break
    stop_pid "$nginx_pid"
    nginx_pid=
  done
  if [ -n "$nginx_pid" ]; then
    via_balancer nginx-proxy_protocol "$ng" TCP "" "(PROXY v1)"
    stop_pid "$nginx_pid"
  else
    bad "nginx did not start: $(tail -n 5 "$work/nginx/out" "$work/nginx/error.log")"
  fi
else
  echo "SKIP: no nginx: the nginx stream check"
fi

# ---- curl --haproxy-protocol (v1) straight to A: curl sends an HTTP
# request after the header and A echoes it back, which curl refuses as a
# response; what counts is A's log line ----
if command -v curl >/dev/null 2>&1; then
  na=$(count_lines "$a_out")
  curl -s --max-time 3 --interface 127.0.0.7 --haproxy-protocol \
    "http://127.0.0.1:$a_port/" >/dev/null 2>&1
  line=$(lines_after "$a_out" "$na" | grep '^echo_server: session ')
  case $line in
    *" from 127.0.0.7:"*"(PROXY v1)"*) ok "curl --haproxy-protocol: $line" ;;
    *) bad "curl --haproxy-protocol: A logged '$line'" ;;
  esac
else
  echo "SKIP: no curl: the curl --haproxy-protocol check"
fi

# ---- a header from an address not trusted ----
if start_named u --port 0 --proxy-protocol v1 --trusted-proxy 10.0.0.0/8; then
  printf 'PROXY TCP4 192.0.2.1 127.0.0.1 4000 80\r\nhello\n' |
    socat -t 5 -T 5 - "TCP:127.0.0.1:$u_port" >"$work/untrusted.out" 2>&1
  stop_pid "$u_pid"
  if [ ! -s "$work/untrusted.out" ] && [ "$exit_code" = 0 ] &&
     grep -q '^echo_server: stats .*proxy_untrusted=1' "$u_out" &&
     ! grep -q '^echo_server: session ' "$u_out"; then
    ok "untrusted sender: closed unanswered, proxy_untrusted=1"
  else
    bad "untrusted sender: got '$(head -c 100 "$work/untrusted.out")'," \
      "exit $exit_code, $(grep stats "$u_out")"
  fi
else
  bad "echo_server --trusted-proxy 10.0.0.0/8 did not start: $(cat "$server_err")"
fi

# ---- the health check: A drains, HAProxy marks it DOWN, B stays UP, a
# session A still has goes on ----
# A session through HAProxy that landed on A (round robin: a few tries).
held=0
for _ in 1 2 3 4; do
  na=$(count_lines "$a_out")
  exec 5<>"/dev/tcp/127.0.0.1/$fe" || break
  printf 'held one\n' >&5
  line=
  read -r -t 5 line <&5
  if [ "$line" = "held one" ] &&
     lines_after "$a_out" "$na" | grep -v LOCAL | grep -q '^echo_server: session '; then
    held=1
    break
  fi
  exec 5>&-
done
if [ "$held" = 1 ]; then
  kill -TERM "$a_pid"
  if wait_until 5 hap_is "$hap_sock" echo a DOWN; then
    ok "A draining: haproxy reports it DOWN"
  else
    bad "A draining: haproxy says A is $(hap_status "$hap_sock" echo a)"
  fi
  hap_is "$hap_sock" echo b UP && ok "B stays UP" ||
    bad "B is $(hap_status "$hap_sock" echo b)"
  if echo_via after-drain "$fe" TCP ""; then
    ok "a new connection through haproxy is served (by B)"
  else
    bad "a new connection through haproxy after A drained:" \
      "$(head -c 300 "$work/after-drain.err")"
  fi
  printf 'held two\n' >&5
  line=
  read -r -t 5 line <&5
  [ "$line" = "held two" ] && ok "the session A still had echoes on" ||
    bad "the session on draining A: got '$line'"
  kill -0 "$a_pid" 2>/dev/null && ok "A waits for its session" ||
    bad "A left before its session ended"
  exec 5>&-
  wait_exit "$a_pid" 10
  if [ "$exit_code" = 0 ] &&
     grep -q '^echo_server: drained, 0 sessions cut at the deadline' "$a_out" &&
     grep -q '^echo_server: served [0-9]* sessions' "$a_out"; then
    ok "A exits 0 once drained: $(grep '^echo_server: served' "$a_out")"
  else
    bad "A after the drain: exit $exit_code; $(tail -n 3 "$a_out" "$a_err")"
  fi
else
  bad "no session through haproxy landed on A"
  stop_pid "$a_pid"
fi
expect_exit "echo_server B" "$b_pid"
stop_pid "$hap_pid"

# ---- SO_REUSEPORT: two servers on one port; without it, a clear error ----
if start_named r1 --port 0 --reuse-port; then
  start_named r2 --port "$r1_port" --reuse-port ||
    bad "a second --reuse-port server on $r1_port: $(cat "$server_err")"
  "$peer_bin" pingpong "$r1_port" 1 8 >"$work/reuse.out" 2>&1
  pp=$?
  "$server_bin" --port "$r1_port" >"$work/r3.out" 2>"$work/r3.err" &
  r3_pid=$!
  pids+=("$r3_pid")
  wait_exit "$r3_pid" 10
  if [ "$exit_code" = 1 ] &&
     grep -q "^echo_server: cannot listen on 127.0.0.1:$r1_port: address already in use" \
       "$work/r3.err"; then
    ok "without --reuse-port: $(cat "$work/r3.err")"
  else
    bad "a third server without --reuse-port: exit $exit_code, $(cat "$work/r3.err")"
  fi
  expect_exit "reuse-port server 1" "$r1_pid"
  [ -n "${r2_pid:-}" ] && expect_exit "reuse-port server 2" "$r2_pid"
  s1=$(sed -n 's/^echo_server: served \([0-9]*\) sessions.*/\1/p' "$r1_out")
  s2=$(sed -n 's/^echo_server: served \([0-9]*\) sessions.*/\1/p' "$r2_out")
  # macOS gives every connection to the last to bind.
  if [ "$pp" = 0 ] && [ "${s1:-0}" -gt 0 ] &&
     { [ "${s2:-0}" -gt 0 ] || [ "$(uname -s)" != Linux ]; }; then
    ok "--reuse-port: both servers on port $r1_port, sessions $s1 and $s2"
  else
    bad "--reuse-port: pingpong exit $pp ($(cat "$work/reuse.out")), sessions '$s1' and '$s2'"
  fi
else
  bad "echo_server --reuse-port did not start: $(cat "$server_err")"
fi

# ---- systemd socket activation ----
if ! command -v systemd-socket-activate >/dev/null 2>&1; then
  echo "SKIP: no systemd-socket-activate: the socket activation and" \
    "zero-downtime restart checks"
  echo "proxy_peers: $passes passed, $failures failed"
  [ "$failures" = 0 ]
  exit
fi
# activate NAME PROGRAM...: systemd-socket-activate listening on a free
# port, $act_port, with PROGRAM to run on the first connection; the
# program's output in $work/NAME.out and .err. Sets act_pid.
activate() {
  local name=$1 _
  shift
  for _ in 1 2 3 4 5; do
    act_port=$(free_port)
    systemd-socket-activate -l "127.0.0.1:$act_port" "$@" \
      >"$work/$name.out" 2>"$work/$name.err" &
    act_pid=$!
    pids+=("$act_pid")
    wait_until 5 listening "$act_port" && return 0
    stop_pid "$act_pid"
  done
  return 1
}
# The wrapper writes its pid, which stays echo_server's (exec) and is
# LISTEN_PID: the activator does not pass a signal on.
# shellcheck disable=SC2016 # the inner shell expands them
if activate activated sh -c 'echo $$ >"$0"; exec "$@"' "$work/activated.pid" \
     "$server_bin" --port 1; then
  # The first connection starts echo_server, which accepts it.
  if echo_via activated "$act_port" TCP ""; then
    ok "systemd-socket-activate (LISTEN_FDS): 65536 bytes echoed exactly"
  else
    bad "systemd-socket-activate: $(cat "$work/activated.err")"
  fi
  grep -q "^listening on 127.0.0.1:$act_port\$" "$work/activated.out" &&
    ok "echo_server on the passed socket: $(head -n 1 "$work/activated.out")" ||
    bad "echo_server on the passed socket said: $(head -n 2 "$work/activated.out")"
  kill -TERM "$(cat "$work/activated.pid" 2>/dev/null)" 2>/dev/null
  wait_exit "$act_pid" 10 || stop_pid "$act_pid"
  [ "$exit_code" = 0 ] && ok "socket-activated echo_server: exit 0" ||
    bad "socket-activated echo_server: exit $exit_code, $(tail -n 3 "$work/activated.err")"
else
  bad "systemd-socket-activate did not listen: $(cat "$work/activated.err")"
fi

# ---- zero-downtime restart: a launcher holds the socket (fd 3) and runs A,
# then B, both with --inherit-fd 3; HAProxy in front, ping-pong load through
# it; B starts, A drains ----
zd=$work/zd
mkdir "$zd"
# shellcheck disable=SC2016 # the inner shell expands them
launcher='bin=$1 dir=$2
echo $$ >"$dir/sh.pid"
"$bin" --inherit-fd 3 --proxy-protocol v2 --trusted-proxy 127.0.0.1 \
  --drain-timeout 10000 >"$dir/a.out" 2>"$dir/a.err" &
a=$!
echo $a >"$dir/a.pid"
i=0
while [ ! -f "$dir/go" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
"$bin" --inherit-fd 3 --proxy-protocol v2 --trusted-proxy 127.0.0.1 \
  >"$dir/b.out" 2>"$dir/b.err" &
b=$!
echo $b >"$dir/b.pid"
wait $a
echo $? >"$dir/a.rc"
wait $b
echo $? >"$dir/b.rc"'
if activate launcher sh -c "$launcher" sh "$server_bin" "$zd"; then
  hap2_sock=$work/haproxy-restart.sock
  hap2_pid=
  for _ in 1 2 3 4 5; do
    fe2=$(free_port)
    subst="s|127.0.0.1:7300|127.0.0.1:$fe2|
s|127.0.0.1:7301|127.0.0.1:$act_port|
s|/run/haproxy/cport-restart.sock|$hap2_sock|
s|inter 2s fall 2 rise 3|inter 100 fall 1 rise 1|"
    config haproxy-restart.cfg >"$work/haproxy-restart.cfg"
    haproxy -db -f "$work/haproxy-restart.cfg" >"$work/haproxy2.out" 2>&1 &
    hap2_pid=$!
    pids+=("$hap2_pid")
    wait_until 5 listening "$fe2" && break
    stop_pid "$hap2_pid"
    hap2_pid=
  done
  # HAProxy's first health check starts the launcher, and A.
  a_started() { grep -q '^listening on' "$zd/a.out" 2>/dev/null; }
  b_started() { grep -q '^listening on' "$zd/b.out" 2>/dev/null; }
  # $1 sessions served with a header (not LOCAL) in $2.
  served() { [ "$(grep -v LOCAL "$2" 2>/dev/null | grep -c '^echo_server: session ')" -ge "$1" ]; }
  a_rc() { [ -s "$zd/a.rc" ]; }
  if [ -n "$hap2_pid" ] && wait_until 10 a_started &&
     wait_until 10 hap_is "$hap2_sock" echo_restart s UP; then
    pids+=("$(cat "$zd/sh.pid")" "$(cat "$zd/a.pid")")
    "$peer_bin" pingpong "$fe2" 30 8 >"$work/pingpong.out" 2>"$work/pingpong.err" &
    pp_pid=$!
    pids+=("$pp_pid")
    wait_until 10 served 50 "$zd/a.out" || bad "no load reached A"
    touch "$zd/go"
    wait_until 10 b_started || bad "B did not start: $(cat "$zd/b.err")"
    pids+=("$(cat "$zd/b.pid")")
    kill -TERM "$(cat "$zd/a.pid")"
    if wait_until 15 a_rc && [ "$(cat "$zd/a.rc")" = 0 ] &&
       grep -q '^echo_server: drained, 0 sessions cut' "$zd/a.out"; then
      ok "A drained under load, exit 0: $(grep '^echo_server: served' "$zd/a.out")"
    else
      bad "A under load: exit '$(cat "$zd/a.rc" 2>/dev/null)'," \
        "$(tail -n 3 "$zd/a.out" "$zd/a.err")"
    fi
    nb=$(grep -v LOCAL "$zd/b.out" | grep -c '^echo_server: session ')
    wait_until 10 served $((nb + 50)) "$zd/b.out" ||
      bad "B served no load after A left"
    kill -INT "$pp_pid"
    wait_exit "$pp_pid" 30 || stop_pid "$pp_pid"
    if [ "$exit_code" = 0 ]; then
      ok "zero-downtime restart: $(cat "$work/pingpong.out")"
    else
      bad "zero-downtime restart: exit $exit_code, $(cat "$work/pingpong.out")" \
        "$(head -n 5 "$work/pingpong.err")"
    fi
    kill -TERM "$(cat "$zd/b.pid")"
    wait_exit "$act_pid" 10 || stop_pid "$act_pid"
    [ "$(cat "$zd/b.rc" 2>/dev/null)" = 0 ] && ok "B stopped: exit 0" ||
      bad "B stopped: exit '$(cat "$zd/b.rc" 2>/dev/null)', $(tail -n 3 "$zd/b.err")"
  else
    bad "the restart set-up: haproxy $hap2_pid, A: $(cat "$zd/a.err" 2>/dev/null)," \
      "$(tail -n 3 "$work/haproxy2.out" "$work/launcher.err")"
  fi
  [ -n "$hap2_pid" ] && stop_pid "$hap2_pid"
else
  bad "systemd-socket-activate (launcher) did not listen: $(cat "$work/launcher.err")"
fi

echo "proxy_peers: $passes passed, $failures failed"
[ "$failures" = 0 ]

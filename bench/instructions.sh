#!/usr/bin/env bash
# User-space instructions per echoed message, counted by valgrind's
# callgrind: a figure that does not drift with the machine's load, unlike
# msg/s and CPU time (bench/run.sh). Kernel work (the system calls, most of
# the cost for small messages) is not counted, so this compares what each
# server's own code and library add on top of the kernel.
#
#   bench/instructions.sh [--messages N] [--servers LIST] [--sizes 'LIST']
#                         [--tls]
#
# Each server runs under callgrind on one ephemeral port; one connection
# sends N ping-pong messages (default 20000; a tenth of that at 64 KiB);
# the server's whole run (start-up included) is divided by N. Needs the
# build of bench/run.sh (it builds it if missing) and valgrind.
# --tls does the same over TLS against the TLS servers (bench/run.sh
# --tls), with a certificate made for the run. There the start-up and the
# handshake (millions of instructions) would swamp a short run, so a run of
# 10 messages is counted too and taken off: (whole(N) - whole(10)) / (N - 10).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/common.sh
. "$repo_root/scripts/common.sh"
# shellcheck source=servers.sh
. "$repo_root/bench/servers.sh"
messages=20000
servers_wanted=$bench_all_servers
sizes_list="64 65536"
tls=0

die() {
  echo "instructions.sh: $*" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --messages | --servers | --sizes)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --messages) messages=$2 ;;
        --servers) servers_wanted=$2 ;;
        --sizes) sizes_list=$2 ;;
      esac
      shift 2
      ;;
    --tls)
      tls=1
      [ "$servers_wanted" != "$bench_all_servers" ] || servers_wanted=$bench_tls_servers
      shift
      ;;
    -h | --help)
      sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument '$1'" ;;
  esac
done
[[ "$messages" =~ ^[1-9][0-9]*$ ]] || die "--messages must be a positive integer"
[ "$tls" = 0 ] || [ "$messages" -ge 200 ] || die "--tls needs --messages 200 or more"
command -v valgrind >/dev/null 2>&1 || die "valgrind is needed (apt-get install valgrind)"
command -v callgrind_annotate >/dev/null 2>&1 || die "callgrind_annotate is missing"
[ -x "$bench_build_dir/bench/bench_load" ] ||
  "$repo_root/bench/run.sh" --smoke --idle 0 >/dev/null


work=$(mktemp -d)
vg=""
cleanup() {
  [ -n "$vg" ] && kill "$vg" 2>/dev/null && wait "$vg" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

tls_args=()
if [ "$tls" = 1 ]; then
  tls_args=(--tls)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj /CN=localhost -days 2 -keyout "$work/key.pem" \
    -out "$work/cert.pem" 2>"$work/openssl.err" ||
    die "cannot make a certificate: $(cat "$work/openssl.err")"
fi

# line NAME: the command line of server NAME in this mode.
line() {
  if [ "$tls" = 1 ]; then
    echo "$(server_tls_cmd "$1") --tls-cert $work/cert.pem --tls-key $work/key.pem"
  else
    server_cmd "$1"
  fi
}

# total SERVER SIZE N: the server's instructions over a whole run of N
# messages
total() {
  local name=$1 size=$2 n=$3 port
  # Emptied here, not by the background job: the last server's port must
  # not be read again before that job has started.
  : >"$work/srv.out"
  # shellcheck disable=SC2046
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    $(line "$name") --host 127.0.0.1 --port 0 >"$work/srv.out" \
    2>"$work/srv.err" &
  vg=$!
  port=$(cport_listening_port "$work/srv.out" "$vg") ||
    die "$name did not start under valgrind"
  "$bench_build_dir/bench/bench_load" "${tls_args[@]}" --port "$port" --conns 1 --size "$size" \
    --messages "$n" --warmup 0 >/dev/null 2>>"$work/load.err" ||
    die "$name: the load run failed: $(tail -3 "$work/load.err")"
  kill -INT "$vg"
  wait "$vg" 2>/dev/null || true
  vg=""
  callgrind_annotate "$work/cg.out" 2>/dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

# count SERVER SIZE N: instructions per message
count() {
  local base
  if [ "$tls" = 1 ]; then
    base=$(total "$1" "$2" 10)
    echo $((($(total "$1" "$2" "$3") - base) / ($3 - 10)))
  else
    echo $(($(total "$1" "$2" "$3") / $3))
  fi
}

IFS=, read -r -a servers <<<"$servers_wanted"
header="| server |"
rule="|---|"
for size in $sizes_list; do
  header+=" $size B |"
  rule+="---:|"
done
echo "User-space instructions per echoed message (callgrind, one connection$([ "$tls" = 0 ] || echo ", TLS"))."
echo
echo "$header"
echo "$rule"
for s in "${servers[@]}"; do
  cmd=$(line "$s") || die "unknown server '$s'"
  if [ ! -x "${cmd%% *}" ] ||
    { [ "$tls" = 1 ] && ! "${cmd%% *}" --help 2>&1 | grep -q -- --tls-cert; }; then
    echo "instructions.sh: skipping $s: not built" >&2
    continue
  fi
  row="| $s |"
  for size in $sizes_list; do
    n=$messages
    [ "$size" -ge 16384 ] && n=$(((messages + 9) / 10))
    row+=" $(count "$s" "$size" "$n") |"
  done
  echo "$row"
done

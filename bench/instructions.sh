#!/usr/bin/env bash
# User-space instructions per echoed message, counted by valgrind's
# callgrind: a figure that does not drift with the machine's load, unlike
# msg/s and CPU time (bench/run.sh). Kernel work (the system calls, most of
# the cost for small messages) is not counted, so this compares what each
# server's own code and library add on top of the kernel.
#
#   bench/instructions.sh [--messages N] [--servers LIST] [--sizes 'LIST']
#
# Each server runs under callgrind on one ephemeral port; one connection
# sends N ping-pong messages (default 20000; a tenth of that at 64 KiB);
# the server's whole run (start-up included) is divided by N. Needs the
# build of bench/run.sh (it builds it if missing) and valgrind.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/common.sh
. "$repo_root/scripts/common.sh"
# shellcheck source=servers.sh
. "$repo_root/bench/servers.sh"
messages=20000
servers_wanted=$bench_all_servers
sizes_list="64 65536"

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
    -h | --help)
      sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument '$1'" ;;
  esac
done
[[ "$messages" =~ ^[1-9][0-9]*$ ]] || die "--messages must be a positive integer"
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

# count SERVER SIZE N: instructions per message
count() {
  local name=$1 size=$2 n=$3 port total
  # shellcheck disable=SC2046
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    $(server_cmd "$name") --host 127.0.0.1 --port 0 >"$work/srv.out" \
    2>"$work/srv.err" &
  vg=$!
  port=$(cport_listening_port "$work/srv.out" "$vg") ||
    die "$name did not start under valgrind"
  "$bench_build_dir/bench/bench_load" --port "$port" --conns 1 --size "$size" \
    --messages "$n" --warmup 0 >/dev/null 2>>"$work/load.err" ||
    die "$name: the load run failed: $(tail -3 "$work/load.err")"
  kill -INT "$vg"
  wait "$vg" 2>/dev/null || true
  vg=""
  total=$(callgrind_annotate "$work/cg.out" 2>/dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  echo $((total / n))
}

IFS=, read -r -a servers <<<"$servers_wanted"
header="| server |"
rule="|---|"
for size in $sizes_list; do
  header+=" $size B |"
  rule+="---:|"
done
echo "User-space instructions per echoed message (callgrind, one connection)."
echo
echo "$header"
echo "$rule"
for s in "${servers[@]}"; do
  cmd=$(server_cmd "$s") || die "unknown server '$s'"
  if [ ! -x "${cmd%% *}" ]; then
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

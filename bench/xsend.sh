#!/usr/bin/env bash
# The cross-thread send benchmark (bench/xsend.c): T producer threads send
# 64-byte messages round-robin to 64 connections, to a sink in the same
# process that checks every byte. Mode `cport`: client sessions on two
# loops, sent to from the producer threads, so every send is queued to its
# session's port and leaves in a gathered write. Mode `lecture`: the
# lecture's design, a mutex around every send and one send() per message.
#
#   bench/xsend.sh                 T in {1, 4}, 3 s x 3 reps per mode, ~40 s
#   bench/xsend.sh --smoke         1 s, 1 rep; fails on any error (CI)
#   bench/xsend.sh --seconds 5 --reps 5 --threads '1 2 4 8'
#
# Each repetition runs both modes, one after the other, the first mode
# alternating between repetitions. Nothing is pinned. The table shows
# medians, and the ratios cport/lecture of the median msg/s and of the
# median CPU per message (the whole process: producers, loops and sink).
#
# Output: a Markdown table on stdout; the raw runs in BUILD/xsend-runs.tsv.
# Exits 1 if any run reports an error (a lost, extra or misordered byte, a
# lost connection), 2 on bad arguments.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Plain `shellcheck` does not follow it (SC1091); `shellcheck -x`, run from
# the repository's root, does.
# shellcheck source=scripts/common.sh disable=SC1091
. "$repo_root/scripts/common.sh"

seconds=3
reps=3
threads_list="1 4"
sessions=64
size=64
loops=2
# The tree bench/run.sh builds (bench/servers.sh), configured the same way.
build_dir="$repo_root/build/bench"

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  echo "options: --smoke --seconds S --reps N --threads 'LIST' --build DIR"
}

die() {
  echo "xsend.sh: $*" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --smoke)
      seconds=1
      reps=1
      shift
      ;;
    --seconds | --reps | --threads | --build)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --seconds) seconds=$2 ;;
        --reps) reps=$2 ;;
        --threads) threads_list=$2 ;;
        --build) build_dir=$2 ;;
      esac
      shift 2
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer"
[[ "$seconds" =~ ^[0-9]*\.?[0-9]+$ ]] || die "--seconds must be a number"
for t in $threads_list; do
  [[ "$t" =~ ^[1-9][0-9]*$ ]] || die "--threads: '$t' is not a positive integer"
done
[ -n "$threads_list" ] || die "--threads needs at least one value"

# ---- build ----
"$repo_root/scripts/deps.sh"
cport_configure "$build_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCPORT_BUILD_TESTS=OFF -DCPORT_BUILD_EXAMPLES=ON -DCPORT_BUILD_BENCH=ON
cport_build "$build_dir" --target xsend >/dev/null
xsend="$build_dir/bench/xsend"
[ -x "$xsend" ] || die "xsend was not built"

# value KEY LINE: the value of KEY=value in a summary line.
value() {
  awk -v k="$1" '{ for (i = 1; i <= NF; i++) {
    n = index($i, "="); if (substr($i, 1, n - 1) == k) print substr($i, n + 1) } }' <<<"$2"
}

# median of the numbers on stdin
median() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "nan"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

nruns=$(($(wc -w <<<"$threads_list") * reps * 2))
echo "xsend.sh: $nruns runs of ${seconds}s (threads: $threads_list; $reps reps)," \
  "about $(awk -v n="$nruns" -v d="$seconds" 'BEGIN { printf "%.0f", n * (d + 0.5) }')s" >&2

runs="$build_dir/xsend-runs.tsv"
printf 'mode\tthreads\trep\tmsgs_per_s\tcpu_us_per_msg\tsends_per_write\tretries\terrors\n' >"$runs"
failed=0
for threads in $threads_list; do
  for rep in $(seq 1 "$reps"); do
    if [ $((rep % 2)) = 1 ]; then
      modes="lecture cport"
    else
      modes="cport lecture"
    fi
    for mode in $modes; do
      rc=0
      line=$("$xsend" --mode "$mode" --threads "$threads" --sessions "$sessions" \
        --loops "$loops" --size "$size" --seconds "$seconds" \
        2>>"$work/xsend.err") || rc=$?
      errors=$(value errors "$line")
      if [ "$rc" != 0 ] || [ -z "$line" ] || [ "${errors:-1}" != 0 ]; then
        echo "xsend.sh: $mode threads=$threads: exit $rc: ${line:-no summary}" >&2
        failed=1
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$threads" "$rep" \
        "$(value msg/s "$line")" "$(value cpu_us_per_msg "$line")" \
        "$(value sends_per_write "$line")" "$(value retries "$line")" \
        "${errors:-1}" >>"$runs"
    done
  done
done
if [ "$failed" != 0 ]; then
  echo "xsend.sh: what xsend said:" >&2
  grep -vE '^xsend: (cport|lecture), ' "$work/xsend.err" | head -20 >&2 || true
fi

# ---- the table ----
cell() { # cell MODE THREADS COLUMN: median of a column over the reps
  awk -F'\t' -v m="$1" -v t="$2" -v col="$3" \
    'NR > 1 && $1 == m && $2 == t && $col != "" { print $col }' "$runs" | median
}
fmt_rate() { awk -v v="$1" 'BEGIN { if (v == "nan") print "-";
  else if (v >= 1e6) printf "%.2fM", v/1e6; else printf "%.1fk", v/1e3 }'; }
fmt_num() { awk -v v="$1" 'BEGIN { if (v == "nan") print "-"; else printf "%.2f", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {
  if (a == "nan" || b == "nan" || b == 0) print "-"; else printf "%.2fx", a/b }'; }

echo
echo "Cross-thread sends: $sessions sessions, $size-byte messages, cport on $loops loops;"
echo "${seconds}s x $reps (median); not pinned. CPU: the whole process (producers,"
echo "loops or sockets, and the sink) per delivered message."
echo
echo "| threads | lecture msg/s | lecture CPU us/msg | cport msg/s | cport CPU us/msg | cport sends/write | msg/s cport/lecture | CPU/msg cport/lecture |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for threads in $threads_list; do
  l_rate=$(cell lecture "$threads" 4)
  l_cpu=$(cell lecture "$threads" 5)
  c_rate=$(cell cport "$threads" 4)
  c_cpu=$(cell cport "$threads" 5)
  c_spw=$(cell cport "$threads" 6)
  echo "| $threads | $(fmt_rate "$l_rate") | $(fmt_num "$l_cpu") |" \
    "$(fmt_rate "$c_rate") | $(fmt_num "$c_cpu") | $(fmt_num "$c_spw") |" \
    "$(ratio "$c_rate" "$l_rate") | $(ratio "$c_cpu" "$l_cpu") |"
done
echo
echo "raw runs: $runs" >&2
exit "$failed"

#!/usr/bin/env bash
# The echo benchmark: cport's echo_server against hand-written raw libuv,
# libevent and Boost.Asio echo servers, driven by bench/load.c (plain
# sockets, no libuv), on loopback.
#
#   bench/run.sh                 the full matrix, about five minutes
#   bench/run.sh --smoke         one short row and a small idle run (CI)
#   bench/run.sh --seconds 3 --reps 5 --idle 20000 --servers cport,uv-trywrite
#   bench/run.sh --fresh --reps 15 --conns 1 --sizes 64 --idle 0 --servers cport,asio
#   bench/run.sh --tls           the same over TLS 1.3, about ten minutes
#   bench/run.sh --smoke --tls   the TLS variant of --smoke (CI, ~15 s)
#   bench/run.sh --unix          the plain matrix over a Unix domain socket
#   bench/run.sh --smoke --unix  its --smoke variant (CI)
#
# Every server is started once, pinned to core 0; the client is pinned to
# core 1 (when the machine has two cores and taskset). Rows are connections
# {1, 64, 1000} x message size {64, 4096, 65536}, ping-pong; each
# configuration runs --reps times, interleaved across servers, and the table
# shows medians. The client reads each server's CPU time for exactly its
# measured window (clock_getcpuclockid on the server's pid), so "us/msg" is
# server CPU per echoed message. Then each server is started afresh and
# --idle connections are opened and held, for its memory per connection
# (RSS growth / connections; kernel socket memory is not in RSS).
# --fresh starts every server afresh for each single measurement instead: a
# process keeps a bias of a percent or two for its whole life (where its
# memory landed), which only new processes average out. With two or more
# repetitions the output also shows, per row, the median over repetitions
# of cport's CPU per message divided by each other server's in the same
# repetition (paired ratios), the finest comparison this machine allows.
#
# --tls runs the matrix over TLS 1.3 (TLS_AES_128_GCM_SHA256) against the
# TLS servers cport (echo_server --tls-cert --tls-key), asio and libevent
# (bench_asio_tls, bench_libevent_tls), with a P-256 certificate made for
# the run in a temporary directory. It adds handshake rows (64 connections
# in flight, each connecting, handshaking, echoing 64 bytes once and
# closing; full, then resuming the previous connection's session ticket:
# server CPU per handshake), holds the idle connections over TLS, and
# shows per size what the cipher alone needs per echoed message (one
# decrypt and one encrypt, from `openssl speed`): a floor no server beats.
#
# --unix runs the plain matrix and the idle connections over a Unix domain
# stream socket in the run's temporary directory (local endpoints, issue
# 19) against the servers that can listen on one: cport (echo_server --unix
# PATH) and the raw libuv servers (uv_pipe_t); bench_load connects with
# --unix PATH. Not with --tls.
#
# Output: a Markdown table on stdout; the raw runs in build/bench/runs.tsv
# (with --tls: runs-tls.tsv and handshakes.tsv; with --unix: runs-unix.tsv).
set -euo pipefail

# bash 4 or later, said plainly rather than by a bash 3.2 syntax error:
# the tables are kept in associative arrays. (CPU per message also needs
# Linux, see docs/benchmarks.md; elsewhere the table shows msg/s only.)
if [ "${BASH_VERSINFO[0]}" -lt 4 ]; then
  echo "bench/run.sh: needs bash 4 or later (macOS: brew install bash," \
    "then run it with that bash)" >&2
  exit 2
fi

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/common.sh
. "$repo_root/scripts/common.sh"
# shellcheck source=servers.sh
. "$repo_root/bench/servers.sh"

seconds=1.5
warmup=0.3
reps=3
idle=10000
servers_wanted=$bench_all_servers
conns_list="1 64 1000"
sizes_list="64 4096 65536"
pipeline=1
smoke=0
fresh=0
tls=0
unix=0
servers_set=0

usage() {
  sed -n '2,48p' "$0" | sed 's/^# \{0,1\}//'
  echo "options: --smoke --fresh --tls --unix --seconds S --reps N --idle N --servers LIST"
  echo "         --conns 'LIST' --sizes 'LIST' --pipeline K --build DIR"
}

die() {
  echo "run.sh: $*" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --smoke)
      smoke=1
      # Every server, the loop-thread variant included, starts and echoes.
      [ "$servers_set" = 1 ] || servers_wanted="$bench_all_servers,uv-trywrite-lt"
      seconds=0.3
      warmup=0.1
      reps=1
      idle=200
      conns_list="64"
      sizes_list="4096"
      shift
      ;;
    --seconds | --reps | --idle | --servers | --conns | --sizes | --pipeline | --build)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --seconds) seconds=$2 ;;
        --reps) reps=$2 ;;
        --idle) idle=$2 ;;
        --servers)
          servers_wanted=$2
          servers_set=1
          ;;
        --conns) conns_list=$2 ;;
        --sizes) sizes_list=$2 ;;
        --pipeline) pipeline=$2 ;;
        --build) bench_build_dir=$2 ;;
      esac
      shift 2
      ;;
    --fresh)
      fresh=1
      shift
      ;;
    --tls)
      tls=1
      shift
      ;;
    --unix)
      unix=1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer"
[[ "$idle" =~ ^[0-9]+$ ]] || die "--idle must be a number"
[[ "$seconds" =~ ^[0-9]*\.?[0-9]+$ ]] || die "--seconds must be a number"
if [ "$tls" = 1 ] && [ "$servers_set" = 0 ]; then
  servers_wanted=$bench_tls_servers
fi
[ "$tls" = 0 ] || [ "$unix" = 0 ] || die "--tls and --unix do not go together"
if [ "$unix" = 1 ] && [ "$servers_set" = 0 ]; then
  servers_wanted=$bench_unix_servers
fi

[ "$(uname -s)" = Linux ] ||
  echo "run.sh: CPU per message needs Linux (/proc, clock_getcpuclockid)" >&2

# ---- build ----
"$repo_root/scripts/deps.sh" --bench
cport_configure "$bench_build_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCPORT_BUILD_TESTS=OFF -DCPORT_BUILD_EXAMPLES=ON -DCPORT_BUILD_BENCH=ON
cport_build "$bench_build_dir" >/dev/null

load="$bench_build_dir/bench/bench_load"
[ -x "$load" ] || die "bench_load was not built"
tls_args=()
if [ "$tls" = 1 ]; then
  tls_args=(--tls)
  # bench_load refuses --tls with status 2 when built without OpenSSL.
  # (--resume alone is refused either way, before anything connects.)
  probe=$("$load" --tls --resume --port 1 2>&1 || true)
  case "$probe" in
    *"without OpenSSL"*) die "bench_load was built without OpenSSL 3 (libssl-dev)" ;;
  esac
  command -v openssl >/dev/null 2>&1 ||
    die "--tls needs the openssl command, for the certificate"
fi

# server_line NAME: the command line of server NAME in this mode; with
# --tls, $cert and $key are made before any server starts. (With --unix,
# start_server appends --unix PATH.)
server_line() {
  if [ "$tls" = 1 ]; then
    echo "$(server_tls_cmd "$1") --tls-cert $cert --tls-key $key"
  elif [ "$unix" = 1 ]; then
    server_unix_cmd "$1"
  else
    server_cmd "$1"
  fi
}

servers=()
IFS=, read -r -a wanted <<<"$servers_wanted"
for s in "${wanted[@]}"; do
  if [ "$tls" = 1 ]; then
    cmd=$(server_tls_cmd "$s") || die "unknown TLS server '$s' (the TLS servers: $bench_tls_servers)"
  elif [ "$unix" = 1 ]; then
    cmd=$(server_unix_cmd "$s") || die "no Unix socket server '$s' (those with --unix: $bench_unix_servers)"
  else
    cmd=$(server_cmd "$s") || die "unknown server '$s'"
  fi
  if [ "$tls" = 1 ] && [ "$s" = cport ] && [ -x "${cmd%% *}" ] &&
    ! "${cmd%% *}" --help 2>&1 | grep -q -- --tls-cert; then
    # Only until echo_server has its TLS flags: then it is measured, and in
    # --smoke must start like every other server.
    echo "run.sh: skipping cport: ${cmd%% *} has no --tls-cert" >&2
  elif [ -x "${cmd%% *}" ]; then
    servers+=("$s")
  elif [ "$smoke" = 1 ]; then
    # The smoke run guards the benchmark itself: every server must build.
    die "$s: ${cmd%% *} was not built"
  else
    echo "run.sh: skipping $s: ${cmd%% *} was not built" >&2
  fi
done
[ ${#servers[@]} -gt 0 ] || die "no server to measure"

# ---- pinning and limits ----
pin_server=()
pin_client=()
if [ "$(cport_jobs)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
  pin_server=(taskset -c 0)
  pin_client=(taskset -c 1)
  pinning="server on core 0, client on core 1"
else
  pinning="not pinned (one core, or no taskset)"
fi
want_fds=$((idle + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want_fds" ]; then
  ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want_fds" ]; then
    idle=$(($(ulimit -n) - 1024))
    [ "$idle" -gt 0 ] || idle=0
    echo "run.sh: open-file limit $(ulimit -n): idle run reduced to $idle" >&2
  fi
fi

# ---- server processes ----
work=$(mktemp -d)
declare -A pid_of port_of # portable: bash 4; run.sh measures on Linux (/proc)
cleanup() {
  local p
  for p in "${pid_of[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pid_of[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$tls" = 1 ]; then
  # Valid for two days and gone with $work: nothing outlives the run.
  cert="$work/cert.pem"
  key="$work/key.pem"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj /CN=localhost -days 2 -keyout "$key" -out "$cert" 2>"$work/openssl.err" ||
    die "cannot make a certificate: $(cat "$work/openssl.err")"
fi

# sock_path NAME: with --unix, the socket server NAME listens on.
sock_path() { echo "$work/$1.sock"; }

# unix_listening FILE PID PATH: wait (up to 30 s) for PID to print
# "listening on unix:PATH" into FILE. Fails if PID exits first or the time
# runs out.
unix_listening() {
  local _
  for _ in $(seq 1 300); do
    grep -qxF "listening on unix:$3" "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# start_server NAME: start it on a free port (with --unix: on its socket
# in $work), set pid_of/port_of.
start_server() {
  local name=$1 out="$work/$1.out" port sock
  # Created here, so that cport_listening_port never reads a file the
  # background job has not opened yet.
  : >"$out"
  if [ "$unix" = 1 ]; then
    sock=$(sock_path "$name")
    # Left by an earlier process of this run (--fresh); only our own path.
    rm -f "$sock"
    # shellcheck disable=SC2046
    "${pin_server[@]}" $(server_line "$name") --unix "$sock" \
      >"$out" 2>"$work/$name.err" &
    pid_of[$name]=$!
    unix_listening "$out" "${pid_of[$name]}" "$sock" ||
      die "$name did not start: $(cat "$work/$name.err")"
    return 0
  fi
  # shellcheck disable=SC2046
  "${pin_server[@]}" $(server_line "$name") --host 127.0.0.1 --port 0 \
    >"$out" 2>"$work/$name.err" &
  pid_of[$name]=$!
  port=$(cport_listening_port "$out" "${pid_of[$name]}") ||
    die "$name did not start: $(cat "$work/$name.err")"
  port_of[$name]=$port
}

# set_target NAME: `target`, the arguments bench_load reaches server NAME
# with.
set_target() {
  if [ "$unix" = 1 ]; then
    target=(--unix "$(sock_path "$1")")
  else
    target=(--port "${port_of[$1]}")
  fi
}

stop_server() {
  local name=$1 pid=${pid_of[$1]} i
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "pid_of[$name]"
}

status_kb() { # status_kb PID FIELD: a /proc/PID/status field in kB
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

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

nrows=$(($(wc -w <<<"$conns_list") * $(wc -w <<<"$sizes_list")))
# --tls adds the two handshake rows.
[ "$tls" = 0 ] || nrows=$((nrows + 2))
est=$(awk -v r="$nrows" -v s="${#servers[@]}" -v n="$reps" \
  -v d="$seconds" -v w="$warmup" 'BEGIN { printf "%.0f", r*s*n*(d+w+0.3) }')
{
  echo "run.sh: ${servers[*]}; $nrows rows x $reps reps x ${seconds}s;"
  echo "        about ${est}s, then $idle idle connections per server; $pinning"
} >&2

declare -A peak_kb # portable: bash 4; run.sh measures on Linux (/proc)
# note_peak NAME: keep the largest peak RSS of NAME's processes so far.
note_peak() {
  local kb
  kb=$(status_kb "${pid_of[$1]}" VmHWM)
  if [ "${kb:-0}" -gt "${peak_kb[$1]:-0}" ]; then peak_kb[$1]=$kb; fi
}

if [ "$fresh" = 0 ]; then
  for s in "${servers[@]}"; do start_server "$s"; done
fi

runs="$bench_build_dir/runs.tsv"
[ "$tls" = 0 ] || runs="$bench_build_dir/runs-tls.tsv"
[ "$unix" = 0 ] || runs="$bench_build_dir/runs-unix.tsv"
printf 'server\tconns\tsize\trep\tmsgs_per_s\tcpu_us_per_msg\tp99_us\terrors\n' >"$runs"
failed=0

# measure NAME ARGS...: one bench_load run with ARGS against server NAME
# (started for it alone with --fresh) for the window, reading its CPU time;
# sets `line` and `errors`, and `failed` when the run had errors.
measure() {
  local s=$1
  shift
  [ "$fresh" = 0 ] || start_server "$s"
  set_target "$s"
  line=$("${pin_client[@]}" "$load" "$@" "${target[@]}" \
    --seconds "$seconds" --warmup "$warmup" \
    --server-pid "${pid_of[$s]}" 2>>"$work/load.err") || true
  errors=$(value errors "$line")
  if [ -z "$line" ] || [ "${errors:-1}" != 0 ]; then
    echo "run.sh: $s $*: ${line:-no summary}" >&2
    failed=1
  fi
  if [ "$fresh" = 1 ]; then
    note_peak "$s"
    stop_server "$s"
  fi
}

for conns in $conns_list; do
  for size in $sizes_list; do
    for rep in $(seq 1 "$reps"); do
      # Rotate the order each repetition, so no server always runs first.
      n=${#servers[@]}
      for k in $(seq 0 $((n - 1))); do
        s=${servers[$(((k + rep) % n))]}
        measure "$s" "${tls_args[@]}" --conns "$conns" --size "$size" \
          --pipeline "$pipeline"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$conns" "$size" \
          "$rep" "$(value msg/s "$line")" "$(value cpu_us_per_msg "$line")" \
          "$(value p99_us "$line")" "${errors:-1}" >>"$runs"
      done
    done
  done
done

# ---- TLS handshakes: full, then resumed ----
hs_runs="$bench_build_dir/handshakes.tsv"
hs_conns=64
if [ "$tls" = 1 ]; then
  printf 'server\tmode\trep\thandshakes_per_s\tcpu_us_per_handshake\tresumed\thandshakes\terrors\n' >"$hs_runs"
  for mode in full resume; do
    mode_args=(--handshakes)
    [ "$mode" = full ] || mode_args+=(--resume)
    for rep in $(seq 1 "$reps"); do
      n=${#servers[@]}
      for k in $(seq 0 $((n - 1))); do
        s=${servers[$(((k + rep) % n))]}
        measure "$s" --tls "${mode_args[@]}" --conns "$hs_conns" --size 64
        resumed=$(value resumed "$line")
        count=$(value handshakes "$line")
        if [ -n "$line" ] && [ "$mode" = resume ] && [ "$resumed" != "$count" ]; then
          # Each slot's first handshake is full, before the window.
          echo "run.sh: $s: $resumed of $count handshakes resumed" >&2
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$mode" "$rep" \
          "$(value hs/s "$line")" "$(value cpu_us_per_handshake "$line")" \
          "$resumed" "$count" "${errors:-1}" >>"$hs_runs"
      done
    done
  done
fi

if [ "$fresh" = 0 ]; then
  for s in "${servers[@]}"; do
    note_peak "$s"
    stop_server "$s"
  done
fi

# ---- TLS: what the cipher alone needs per echoed message ----
# One decrypt and one encrypt of the message, at `openssl speed`'s rate for
# that size on the server's core: the floor under any server's CPU/msg.
declare -A cipher_us # portable: bash 4; run.sh measures on Linux (/proc)
if [ "$tls" = 1 ]; then
  for size in $sizes_list; do
    bps=$("${pin_server[@]}" openssl speed -evp aes-128-gcm -bytes "$size" \
      -seconds 1 -mr 2>/dev/null | awk -F: '$1 == "+F" { print $4 }' | tail -n 1)
    cipher_us[$size]=$(awk -v b="${bps:-0}" -v z="$size" 'BEGIN {
      if (b > 0) print 2 * z / b * 1e6; else print "nan" }')
  done
fi

# ---- idle connections: memory per connection ----
declare -A idle_bytes # portable: bash 4; run.sh measures on Linux (/proc)
if [ "$idle" -gt 0 ]; then
  for s in "${servers[@]}"; do
    start_server "$s"
    before=$(status_kb "${pid_of[$s]}" VmRSS)
    set_target "$s"
    "${pin_client[@]}" "$load" "${tls_args[@]}" --idle "${target[@]}" \
      --conns "$idle" --size 64 >"$work/idle.out" 2>>"$work/load.err" &
    client=$!
    ready=0
    for i in $(seq 1 1200); do
      if grep -q '^ready' "$work/idle.out"; then
        ready=1
        break
      fi
      kill -0 "$client" 2>/dev/null || break
      sleep 0.05
    done
    if [ "$ready" = 1 ]; then
      after=$(status_kb "${pid_of[$s]}" VmRSS)
      idle_bytes[$s]=$(((after - before) * 1024 / idle))
    else
      echo "run.sh: $s: idle connections did not come up" >&2
      idle_bytes[$s]=nan
      failed=1
    fi
    kill -TERM "$client" 2>/dev/null || true
    wait "$client" 2>/dev/null || true
    stop_server "$s"
  done
fi

# ---- the table ----
cell() { # cell SERVER CONNS SIZE COLUMN: median of a column over the reps
  awk -F'\t' -v s="$1" -v c="$2" -v z="$3" -v col="$4" \
    'NR > 1 && $1 == s && $2 == c && $3 == z && $col != "" { print $col }' \
    "$runs" | median
}
fmt_rate() { awk -v v="$1" 'BEGIN { if (v == "nan") print "-";
  else if (v >= 1e6) printf "%.2fM", v/1e6; else printf "%.1fk", v/1e3 }'; }
fmt_num() { awk -v v="$1" 'BEGIN { if (v == "nan") print "-"; else printf "%.2f", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {
  if (a == "nan" || b == "nan" || b == 0) print "-"; else printf "%.2fx", a/b }'; }

echo
if [ "$tls" = 1 ]; then
  echo "Ping-pong echo over TLS 1.3 (TLS_AES_128_GCM_SHA256), pipeline $pipeline,"
  echo "${seconds}s x $reps (median); $pinning."
elif [ "$unix" = 1 ]; then
  echo "Ping-pong echo over a Unix domain socket, pipeline $pipeline,"
  echo "${seconds}s x $reps (median); $pinning."
else
  echo "Ping-pong echo, pipeline $pipeline, ${seconds}s x $reps (median); $pinning."
fi
echo "Each cell: messages per second / server CPU microseconds per message."
echo "vs libuv: cport against the best raw libuv server of the row (msg/s; CPU/msg);"
[ "$unix" = 1 ] || echo "vs asio: cport against Boost.Asio, likewise."
[ "$tls" = 0 ] || {
  echo "vs libevent: cport against libevent, likewise."
  echo "cipher: microseconds the cipher alone needs per message (one decrypt,"
  echo "one encrypt; openssl speed -evp aes-128-gcm), the floor under CPU/msg."
}
echo
header="| conns | size |"
rule="|---:|---:|"
if [ "$tls" = 1 ]; then
  header+=" cipher |"
  rule+="---:|"
fi
for s in "${servers[@]}"; do
  header+=" $s |"
  rule+="---:|"
done
has_uv=0
for s in "${servers[@]}"; do
  case "$s" in uv-*) has_uv=1 ;; esac
done
has_cport=0
for s in "${servers[@]}"; do [ "$s" = cport ] && has_cport=1; done
if [ "$has_uv" = 1 ] && [ "$has_cport" = 1 ]; then
  header+=" cport vs libuv |"
  rule+="---:|"
fi
has_asio=0
for s in "${servers[@]}"; do [ "$s" = asio ] && has_asio=1; done
if [ "$has_asio" = 1 ] && [ "$has_cport" = 1 ]; then
  header+=" cport vs asio |"
  rule+="---:|"
fi
has_libevent=0
for s in "${servers[@]}"; do [ "$s" = libevent ] && has_libevent=1; done
if [ "$tls" = 1 ] && [ "$has_libevent" = 1 ] && [ "$has_cport" = 1 ]; then
  header+=" cport vs libevent |"
  rule+="---:|"
fi
echo "$header"
echo "$rule"
for conns in $conns_list; do
  for size in $sizes_list; do
    row="| $conns | $size |"
    [ "$tls" = 0 ] || row+=" $(fmt_num "${cipher_us[$size]:-nan}") |"
    best_rate=nan
    best_cpu=nan
    for s in "${servers[@]}"; do
      rate=$(cell "$s" "$conns" "$size" 5)
      cpu=$(cell "$s" "$conns" "$size" 6)
      row+=" $(fmt_rate "$rate") / $(fmt_num "$cpu") |"
      case "$s" in
        uv-*)
          best_rate=$(awk -v a="$best_rate" -v b="$rate" 'BEGIN {
            if (b == "nan") print a; else if (a == "nan" || b > a) print b; else print a }')
          best_cpu=$(awk -v a="$best_cpu" -v b="$cpu" 'BEGIN {
            if (b == "nan") print a; else if (a == "nan" || b < a) print b; else print a }')
          ;;
        cport)
          cport_rate=$rate
          cport_cpu=$cpu
          ;;
        asio)
          asio_rate=$rate
          asio_cpu=$cpu
          ;;
        libevent)
          libevent_rate=$rate
          libevent_cpu=$cpu
          ;;
      esac
    done
    if [ "$has_uv" = 1 ] && [ "$has_cport" = 1 ]; then
      row+=" $(ratio "$cport_rate" "$best_rate"); $(ratio "$cport_cpu" "$best_cpu") |"
    fi
    if [ "$has_asio" = 1 ] && [ "$has_cport" = 1 ]; then
      row+=" $(ratio "$cport_rate" "$asio_rate"); $(ratio "$cport_cpu" "$asio_cpu") |"
    fi
    if [ "$tls" = 1 ] && [ "$has_libevent" = 1 ] && [ "$has_cport" = 1 ]; then
      row+=" $(ratio "$cport_rate" "$libevent_rate"); $(ratio "$cport_cpu" "$libevent_cpu") |"
    fi
    echo "$row"
  done
done

# Paired ratios: per repetition, cport's CPU per message over each other
# server's in the same repetition; the median of those per row.
if [ "$has_cport" = 1 ] && [ "$reps" -ge 2 ] && [ ${#servers[@]} -ge 2 ]; then
  echo
  echo "Paired: median over the $reps repetitions of cport's CPU per message /"
  echo "the other server's in the same repetition$([ "$fresh" = 1 ] && echo ", fresh processes")."
  echo
  header="| conns | size |"
  rule="|---:|---:|"
  for s in "${servers[@]}"; do
    [ "$s" = cport ] && continue
    header+=" cport / $s |"
    rule+="---:|"
  done
  echo "$header"
  echo "$rule"
  for conns in $conns_list; do
    for size in $sizes_list; do
      row="| $conns | $size |"
      for s in "${servers[@]}"; do
        [ "$s" = cport ] && continue
        r=$(awk -F'\t' -v s="$s" -v c="$conns" -v z="$size" '
          NR > 1 && $2 == c && $3 == z && $6 != "" {
            if ($1 == "cport") a[$4] = $6; else if ($1 == s) b[$4] = $6 }
          END { for (k in a) if ((k in b) && b[k] > 0) print a[k] / b[k] }' \
          "$runs" | median)
        row+=" $(awk -v v="$r" 'BEGIN { if (v == "nan") print "-"; else printf "%.3fx", v }') |"
      done
      echo "$row"
    done
  done
fi

if [ "$tls" = 1 ]; then
  # hs_cell SERVER MODE COLUMN: median of a handshakes.tsv column over reps
  hs_cell() {
    awk -F'\t' -v s="$1" -v m="$2" -v col="$3" \
      'NR > 1 && $1 == s && $2 == m && $col != "" { print $col }' \
      "$hs_runs" | median
  }
  echo
  echo "Handshakes: $hs_conns connections in flight, each connecting, completing a"
  echo "handshake (P-256 certificate), echoing 64 bytes once and closing"
  echo "(close_notify); resumed: offering the previous connection's session"
  echo "ticket. Each cell: handshakes per second / server CPU microseconds per"
  echo "handshake (median of $reps); resumed also shows how many of the measured"
  echo "handshakes the server resumed."
  echo
  header="| handshake |"
  rule="|---|"
  for s in "${servers[@]}"; do
    header+=" $s |"
    rule+="---:|"
  done
  for s in "${servers[@]}"; do
    [ "$s" = cport ] && continue
    [ "$has_cport" = 1 ] || continue
    header+=" cport / $s (CPU) |"
    rule+="---:|"
  done
  echo "$header"
  echo "$rule"
  for mode in full resume; do
    row="| $([ "$mode" = full ] && echo full || echo resumed) |"
    declare -A hs_cpu=() # portable: bash 4; run.sh measures on Linux (/proc)
    for s in "${servers[@]}"; do
      rate=$(hs_cell "$s" "$mode" 4)
      hs_cpu[$s]=$(hs_cell "$s" "$mode" 5)
      cell="$(fmt_rate "$rate") / $(fmt_num "${hs_cpu[$s]}")"
      if [ "$mode" = resume ]; then
        cell+=" ($(hs_cell "$s" "$mode" 6 | awk '{ printf "%.0f", $1 }') of"
        cell+=" $(hs_cell "$s" "$mode" 7 | awk '{ printf "%.0f", $1 }'))"
      fi
      row+=" $cell |"
    done
    for s in "${servers[@]}"; do
      [ "$s" = cport ] && continue
      [ "$has_cport" = 1 ] || continue
      row+=" $(ratio "${hs_cpu[cport]}" "${hs_cpu[$s]}") |"
    done
    echo "$row"
  done
fi

echo
if [ "$tls" = 1 ]; then
  echo "Memory: $idle idle TLS connections (handshake and one 64-byte echo each, then held)."
elif [ "$unix" = 1 ]; then
  echo "Memory: $idle idle Unix socket connections (one 64-byte echo each, then held)."
else
  echo "Memory: $idle idle connections (one 64-byte echo each, then held)."
fi
echo
echo "| server | RSS bytes per idle connection | peak RSS during the matrix |"
echo "|---|---:|---:|"
for s in "${servers[@]}"; do
  echo "| $s | ${idle_bytes[$s]:--} | $(awk -v k="${peak_kb[$s]:-0}" 'BEGIN { printf "%.1f MiB", k/1024 }') |"
done
echo
echo "raw runs: $runs$([ "$tls" = 0 ] || echo " $hs_runs")" >&2
exit "$failed"

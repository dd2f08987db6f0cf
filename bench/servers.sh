# Sourced by bench/run.sh and bench/instructions.sh: where the benchmark is
# built and how each server it compares is started (all take --host and
# --port, print "listening on HOST:PORT" and exit 0 on SIGTERM).
bench_build_dir="$repo_root/build/bench"

# server_cmd NAME: the command line of server NAME; fails for an unknown name.
server_cmd() {
  case "$1" in
    cport) echo "$bench_build_dir/examples/echo_server --max-sessions 0" ;;
    # Several loops: the server's connections spread over N loop threads.
    cport-t[0-9]*)
      echo "$bench_build_dir/examples/echo_server --max-sessions 0 --threads ${1#cport-t}"
      ;;
    uv-trywrite) echo "$bench_build_dir/bench/bench_uv_trywrite" ;;
    # The same on a loop thread, main waiting to join it: what a process
    # with a second thread costs (docs/benchmarks.md, "Threads").
    uv-trywrite-lt) echo "$bench_build_dir/bench/bench_uv_trywrite --loop-thread 1" ;;
    uv-write) echo "$bench_build_dir/bench/bench_uv_write" ;;
    libevent) echo "$bench_build_dir/bench/bench_libevent" ;;
    asio) echo "$bench_build_dir/bench/bench_asio --threads 1" ;;
    *) return 1 ;;
  esac
}

bench_all_servers="cport,uv-trywrite,uv-write,libevent,asio"

# server_tls_cmd NAME: the command line of the TLS echo server NAME, without
# its certificate: the caller appends --tls-cert FILE --tls-key FILE. Fails
# for an unknown name.
server_tls_cmd() {
  case "$1" in
    cport) echo "$bench_build_dir/examples/echo_server --max-sessions 0" ;;
    asio) echo "$bench_build_dir/bench/bench_asio_tls --threads 1" ;;
    libevent) echo "$bench_build_dir/bench/bench_libevent_tls" ;;
    *) return 1 ;;
  esac
}

bench_tls_servers="cport,asio,libevent"

# server_unix_cmd NAME: the command line of server NAME listening on a Unix
# domain socket, without its path: the caller appends --unix PATH (the
# server then prints "listening on unix:PATH"). Fails for a server that has
# no --unix.
server_unix_cmd() {
  case "$1" in
    cport | uv-trywrite | uv-trywrite-lt | uv-write) server_cmd "$1" ;;
    *) return 1 ;;
  esac
}

bench_unix_servers="cport,uv-trywrite,uv-write"

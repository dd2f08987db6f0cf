# Sourced by demo.sh, test.sh and stress.sh: configure a build folder of this checkout.
#   cport_configure BUILD_DIR [cmake -D options...]
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

cport_configure() {
  local dir=$1
  shift
  local args=(-S "$repo_root" -B "$dir")
  if command -v ninja >/dev/null 2>&1; then
    args+=(-G Ninja)
  fi
  if [ -n "${VCPKG_ROOT:-}" ] && [ -f "$VCPKG_ROOT/scripts/buildsystems/vcpkg.cmake" ]; then
    args+=("-DCMAKE_TOOLCHAIN_FILE=$VCPKG_ROOT/scripts/buildsystems/vcpkg.cmake")
  fi
  cmake "${args[@]}" "$@" >/dev/null
}

cport_build() {
  cmake --build "$1" --parallel "$(cport_jobs)" "${@:2}"
}

cport_jobs() {
  getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2
}

# cport_listening_port FILE PID: wait (up to 30 s) for PID to print
# "listening on 127.0.0.1:PORT" into FILE; print PORT. Fails if PID exits
# first or the time runs out.
cport_listening_port() {
  local port="" _
  for _ in $(seq 1 300); do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*$/\1/p' "$1")
    if [ -n "$port" ]; then
      echo "$port"
      return 0
    fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# The sanitizers' options every test run uses: LeakSanitizer exists on
# Linux only (Apple's ASan aborts when asked for it); stop at the first
# report.
cport_sanitizer_env() {
  if [ "$(uname -s)" = Linux ]; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  else
    export ASAN_OPTIONS=abort_on_error=1
  fi
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
}

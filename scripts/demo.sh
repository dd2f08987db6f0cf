#!/usr/bin/env bash
# The five-minute tour: install what is missing, build, start echo_server on
# a free loopback port, run echo_client with 100 sessions against it, print
# both summaries, stop the server. Exits 0 when every echo matched.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

"$here/deps.sh"
build="$repo_root/build/demo"
cport_configure "$build" -DCMAKE_BUILD_TYPE=Release -DCPORT_BUILD_TESTS=OFF \
  -DCPORT_BUILD_EXAMPLES=ON
cport_build "$build" --target echo_server echo_client >/dev/null

bin="$build/examples"
[ -x "$bin/echo_server" ] || bin="$build/examples/Release" # multi-config
out=$(mktemp)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -f "$out"
}
trap cleanup EXIT

"$bin/echo_server" --host 127.0.0.1 --port 0 >"$out" &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$out" && break
  kill -0 "$server_pid" 2>/dev/null || { echo "demo: echo_server exited"; exit 1; }
  sleep 0.1
done
grep -q '^listening on ' "$out" || { echo "demo: echo_server not ready"; exit 1; }
port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$out")
echo "demo: $(head -n 1 "$out")"

status=0
"$bin/echo_client" --host 127.0.0.1 --port "$port" --sessions 100 \
  --messages 1000 --size 64 || status=$?

kill -TERM "$server_pid"
wait "$server_pid" || status=1
server_pid=""
tail -n 1 "$out"
if [ "$status" = 0 ]; then
  echo "demo: OK"
else
  echo "demo: FAILED"
fi
exit "$status"

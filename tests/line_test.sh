#!/usr/bin/env bash
# Drives examples/line_server (the guide's sections 4 and 5): lines split
# across writes come back whole and in order, a line longer than the limit
# ends its connection, each connection's line count is
# reported when it closes, and bad arguments exit 2. Every wait is bounded
# and every process started here is stopped here.
#
#   line_test.sh LINE_SERVER
set -u
server_bin=$1
# shellcheck source-path=SCRIPTDIR source=script_lib.sh
source "$(dirname "$0")/script_lib.sh"

# Wait up to 10 s for the server's output to hold a line matching $1.
wait_output() {
  local _
  for _ in $(seq 1 100); do
    grep -qE -- "$1" "$server_out" && return 0
    sleep 0.1
  done
  return 1
}

for args in "abc" "70000" "-1" "1 2"; do
  expect_usage "" "$args" "$server_bin"
done

if ! start_server 0; then
  bad "line_server did not start: $(cat "$server_out" "$server_err")"
  exit 1
fi

# Three writes that split both lines.
exec 3<>"/dev/tcp/127.0.0.1/$server_port"
printf 'hel' >&3
printf 'lo\nwor' >&3
printf 'ld\n' >&3
if read -r -t 10 first <&3 && read -r -t 10 second <&3 &&
  [ "$first" = "> hello" ] && [ "$second" = "> world" ]; then
  ok "split lines come back whole, in order"
else
  bad "replies: '${first-}' '${second-}'"
fi
exec 3>&-
if wait_output ': 2 lines, end of file'; then
  ok "the closed connection reports its 2 lines"
else
  bad "no '2 lines' report: $(cat "$server_out")"
fi

# A line of 5000 bytes, past LINE_MAX_LEN, ends the connection: with
# "line too long" when it arrives whole in one read, or when the partial
# line kept reaches the receive limit, with CPORT_ERECVFULL's text.
# The server may close while the line is still being written: a write
# error then, not a SIGPIPE that would end this script.
trap '' PIPE
exec 3<>"/dev/tcp/127.0.0.1/$server_port"
{
  head -c 5000 /dev/zero | tr '\0' x
  printf '\n'
} >&3 2>/dev/null
if wait_output ': 0 lines, (line too long|receive buffer limit reached)'; then
  ok "a line past the limit ends its connection"
else
  bad "no end for the long line: $(cat "$server_out")"
fi
exec 3>&-

echo "line_test: $passes passed, $failures failed"
[ "$failures" = 0 ]

#!/usr/bin/env bash
# Checks the structure rules of CONVENTIONS.md section 13 that a reader could
# otherwise only take on trust (docs/design.md, "Structure"):
#
# - struct cport_service_s is defined in src/service.c only: other files
#   reach a service through service_internal.h;
# - core.c knows nothing of sessions or services (its mailbox runs each
#   entry's own hook), so core.c and session.c form no include or call
#   cycle;
# - packet.c calls nothing above it: it includes no header but its own and
#   common.h, and names no session, service or port function;
# - every list in src/ is the one in src/queue.h: no other file declares a
#   next or prev pointer;
# - every counter of src/stats.h is described in docs/api/service.md.
#
# Exits 0 when all holds, 1 listing every problem otherwise. Needs only
# bash, grep and sed (BSD or GNU).
#
#   scripts/check-structure.sh [REPO_ROOT]
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
src="$root/src"
problems=0

problem() {
  echo "check-structure: $*" >&2
  problems=$((problems + 1))
}

# ---- the service struct has one home ----
defs=$(grep -l 'struct cport_service_s *{' "$src"/*.c "$src"/*.h || true)
[ "$defs" = "$src/service.c" ] ||
  problem "struct cport_service_s must be defined in src/service.c only (found in: ${defs:-nowhere})"

# ---- core.c: no session or service knowledge ----
if grep -nE '#include "(session|service|listener)_internal\.h"' "$src/core.c"; then
  problem "core.c includes a session, service or listener header"
fi
if grep -nE 'cport_+(session|service)_' "$src/core.c"; then
  problem "core.c names a session or service function"
fi

# ---- packet.c: nothing above it ----
other_includes=$(grep -E '^#include "' "$src/packet.c" |
  grep -vE '"(packet_internal|common)\.h"' || true)
[ -z "$other_includes" ] ||
  problem "packet.c includes more than its own header: $other_includes"
if grep -nE 'cport_+(session|service|port|core)_' "$src/packet.c"; then
  problem "packet.c calls a session, service, port or core function"
fi

# ---- one list type ----
for f in "$src"/*.c "$src"/*.h; do
  [ "$(basename "$f")" = queue.h ] && continue
  if grep -nE '\*[ ]*(next|prev)[ ]*;' "$f"; then
    problem "$(basename "$f") declares a list link of its own; use src/queue.h"
  fi
done

# ---- code comments say what a thing is, not what the lecture called it ----
# The mapping from the lecture's objects to cport's lives in one table
# (docs/design.md, section 1); a reader of src/ or include/ need not know it.
if grep -n -i 'lecture' "$src"/*.c "$src"/*.h "$src"/platform/*.c \
    "$root"/include/cport/*.h; then
  problem "src/ and include/ name the lecture; say what the thing is (the mapping lives in docs/design.md)"
fi

# ---- every counter is documented ----
stats=$(sed -n '/^#define CPORT__STATS(X)/,/^$/p' "$src/stats.h" |
  grep -oE 'X\([a-z_]+\)' | sed -e 's/^X(//' -e 's/)$//')
[ -n "$stats" ] || problem "no counters found in src/stats.h"
for name in $stats; do
  grep -qE "(^|[^a-z_])$name([^a-z_]|\$)" "$root/docs/api/service.md" ||
    problem "stats.$name is not described in docs/api/service.md"
done

if [ "$problems" -gt 0 ]; then
  echo "check-structure: $problems problem(s)" >&2
  exit 1
fi
echo "check-structure: ok ($(echo "$stats" | wc -w | tr -d ' ') counters)"

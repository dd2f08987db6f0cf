#!/usr/bin/env bash
# Checks that the hand-kept API reference (docs/api/*.md) matches the public
# headers (include/cport/*.h), so that neither can drift from the other:
#
# - every public function (declared with CPORT_API), public type (typedef
#   cport_*_t / cport_*_fn, named enum) and public macro (CPORT_*, not the
#   include guards, CPORT_API or CPORT__ internals) has a "## symbol"
#   heading in docs/api; a heading may name several, separated by commas;
# - every "## cport_..." / "## CPORT_..." heading names a symbol that still
#   exists in the headers;
# - every enum constant (also those of CPORT_ERRNO_MAP) appears somewhere in
#   docs/api;
# - every function's section has an "**Ownership:**" and a "**Thread:**"
#   bullet, and a "**Returns:**" bullet unless the function returns void;
# - every function's header comment, directly above its declaration (or
#   above the declarations it is grouped with), has a "Thread" line: the
#   header-comment contract of CONVENTIONS.md, section 2.
#
# Exits 0 when all holds, 1 listing every problem otherwise. Needs only bash,
# awk, grep, sed and sort.
#
#   scripts/check-docs.sh [REPO_ROOT]
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
headers=("$root"/include/cport/*.h)
docs=("$root"/docs/api/*.md)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- the headers' symbols, one record a line ----
#   F name void|value has_thread_comment file:line   a function
#   T name                                           a type
#   M name                                           a macro
#   E name                                           an enum constant
awk '
  FNR == 1 { in_comment = 0; comment_end = -1; decl_end = -1; decl_thread = 0
             stmt = ""; depth = 0; in_typedef = 0; in_enum = 0 }
  # Comments: remember where the last one ended and whether it says Thread.
  in_comment || /^[ \t]*\/\*/ {
    if (!in_comment) { in_comment = 1; comment_thread = 0 }
    if ($0 ~ /Thread/) comment_thread = 1
    if ($0 ~ /\*\//) { in_comment = 0; comment_end = FNR; last_thread = comment_thread }
    next
  }
  /^#[ \t]*define[ \t]+CPORT_[A-Z0-9_]+/ {
    name = $0
    sub(/^#[ \t]*define[ \t]+/, "", name)
    sub(/[^A-Z0-9_].*$/, "", name)
    if (name !~ /^CPORT__/ && name !~ /_H$/ && name != "CPORT_API")
      print "M", name
  }
  # The error codes come from the X-macro: XX(ELOCAL, -5000, "...").
  /^[ \t]*XX\([A-Z0-9_]+,/ {
    name = $0
    sub(/^[ \t]*XX\(/, "", name)
    sub(/,.*$/, "", name)
    print "E", "CPORT_" name
  }
  /^#/ { next }
  # The C++ wrapper (extern "C" { ... }) is not a scope of C declarations.
  /^extern "C"/ || /^}[ \t]*$/ { next }
  # Functions: from CPORT_API to the semicolon, possibly over several lines.
  in_decl || /^[ \t]*CPORT_API[ \t]/ {
    if (!in_decl) { in_decl = 1; decl = ""; decl_start = FNR }
    decl = decl " " $0
    if ($0 !~ /;/) next
    in_decl = 0
    head = decl
    sub(/\(.*$/, "", head)
    n = split(head, words, /[ \t*]+/)
    name = words[n]
    ret = head
    sub(/^[ \t]*CPORT_API[ \t]+/, "", ret)
    sub(/[A-Za-z0-9_]+[ \t]*$/, "", ret)
    gsub(/[ \t]+/, "", ret)
    if (comment_end == decl_start - 1) thread = last_thread
    else if (decl_end == decl_start - 1) thread = decl_thread  # grouped
    else thread = 0
    decl_end = FNR
    decl_thread = thread
    print "F", name, (ret == "void" ? "void" : "value"), thread, \
          FILENAME ":" decl_start
    next
  }
  # Types: typedef ... name; and typedef ret (*name)(...); named enums.
  /^[ \t]*typedef[ \t]/ { in_typedef = 1; stmt = "" }
  /^[ \t]*enum[ \t]+cport_[a-z0-9_]+[ \t]*\{/ {
    name = $0
    sub(/^[ \t]*enum[ \t]+/, "", name)
    sub(/[^a-z0-9_].*$/, "", name)
    print "T", "enum " name
  }
  /enum[^;]*\{/ { in_enum = 1 }
  in_enum && /^[ \t]*CPORT_[A-Z0-9_]+[ \t]*(=|,|$)/ {
    name = $0
    sub(/^[ \t]*/, "", name)
    sub(/[^A-Z0-9_].*$/, "", name)
    if (name !~ /^CPORT__/) print "E", name
  }
  {
    line = $0
    depth += gsub(/\{/, "{", line) - gsub(/\}/, "}", line)
    if (in_enum && depth == 0 && $0 ~ /\}/) in_enum = 0
    if (in_typedef) {
      stmt = stmt " " $0
      if (depth == 0 && $0 ~ /;/) {
        in_typedef = 0
        # A function pointer type, not a struct with such members.
        if (stmt !~ /\{/ && match(stmt, /\(\*[ \t]*[A-Za-z0-9_]+[ \t]*\)/)) {
          name = substr(stmt, RSTART + 2, RLENGTH - 3)
          gsub(/[ \t]/, "", name)
        } else {
          name = stmt
          sub(/[ \t]*;[ \t]*$/, "", name)
          sub(/^.*[^A-Za-z0-9_]/, "", name)
        }
        if (name ~ /^cport_/) print "T", name
      }
    }
  }
' "${headers[@]}" | sort -u >"$tmp/symbols"

# ---- the headings of docs/api: "file:line<TAB>symbol" per named symbol ----
awk '
  /^```/ { fence = !fence; next }
  !fence && /^## / {
    text = substr($0, 4)
    n = split(text, parts, /,[ \t]*/)
    for (i = 1; i <= n; i++) {
      s = parts[i]
      gsub(/`/, "", s)
      sub(/^[ \t]+/, "", s)
      sub(/[ \t]+$/, "", s)
      if (s ~ /^(enum )?(cport|CPORT)_[A-Za-z0-9_]+$/)
        print FILENAME ":" FNR "\t" s
    }
  }
' "${docs[@]}" >"$tmp/headings"
cut -f2 "$tmp/headings" | sort -u >"$tmp/documented"

problems=()
fail() { problems+=("$*"); }

# Every symbol has a heading.
while read -r kind name rest; do
  case $kind in
    E) continue ;;
    T) [ "$name" = enum ] && name="enum ${rest%% *}" ;;
  esac
  grep -qxF -- "$name" "$tmp/documented" ||
    fail "no '## $name' heading in docs/api/*.md"
done <"$tmp/symbols"

# Every heading names a symbol that exists.
awk '{ if ($1 == "T" && $2 == "enum") print "enum " $3; else if ($1 != "E") print $2 }' \
  "$tmp/symbols" | sort -u >"$tmp/names"
while IFS=$'\t' read -r where name; do
  grep -qxF -- "$name" "$tmp/names" ||
    fail "${where#"$root"/}: heading '## $name' names nothing in include/cport/*.h"
done <"$tmp/headings"

# Every enum constant is mentioned.
cat "${docs[@]}" >"$tmp/all.md"
while read -r kind name _; do
  [ "$kind" = E ] || continue
  grep -qw -- "$name" "$tmp/all.md" ||
    fail "enum constant $name is not mentioned in docs/api/*.md"
done <"$tmp/symbols"

# Every function's section says Ownership and Thread (and Returns when it
# returns a value); every function's header comment says Thread.
while read -r kind name ret thread where; do
  [ "$kind" = F ] || continue
  [ "$thread" = 1 ] ||
    fail "${where#"$root"/}: $name: the comment above it has no 'Thread' line"
  section=$(awk -v name="$name" '
    /^```/ { fence = !fence }
    !fence && /^## / {
      inside = 0
      n = split(substr($0, 4), parts, /,[ \t]*/)
      for (i = 1; i <= n; i++) {
        s = parts[i]
        gsub(/[` \t]/, "", s)
        if (s == name) inside = 1
      }
      next
    }
    inside { print }
  ' "${docs[@]}")
  [ -n "$section" ] || continue # reported above as a missing heading
  grep -q '^- \*\*Ownership:\*\*' <<<"$section" ||
    fail "docs/api: section '## $name' has no '- **Ownership:**' bullet"
  grep -q '^- \*\*Thread:\*\*' <<<"$section" ||
    fail "docs/api: section '## $name' has no '- **Thread:**' bullet"
  if [ "$ret" != void ]; then
    grep -q '^- \*\*Returns:\*\*' <<<"$section" ||
      fail "docs/api: section '## $name' has no '- **Returns:**' bullet (it returns a value)"
  fi
done <"$tmp/symbols"

# A guide listing marked "<!-- file: examples/X.c -->" is that program,
# which CI builds: the code block after the marker must be the file,
# byte for byte, so that the guide never shows code that does not build.
guide="$root/docs/guide.md"
listings=0
while IFS= read -r file; do
  listings=$((listings + 1))
  if [ ! -f "$root/$file" ]; then
    fail "docs/guide.md: the listing marked for $file names no file"
    continue
  fi
  awk -v file="$file" '
    $0 == "<!-- file: " file " -->" { found = 1; next }
    found == 1 && /^```c$/ { found = 2; next }
    found == 2 && /^```$/ { exit }
    found == 2 { print }
  ' "$guide" >"$tmp/listing"
  cmp -s "$tmp/listing" "$root/$file" ||
    fail "docs/guide.md: the listing marked for $file differs from the file"
done < <(sed -n 's/^<!-- file: \(.*\) -->$/\1/p' "$guide")

counts=$(awk '{ n[$1]++ } END { printf "%d functions, %d types, %d macros, %d enum constants", n["F"], n["T"], n["M"], n["E"] }' "$tmp/symbols")
if [ ${#problems[@]} -gt 0 ]; then
  printf 'check-docs: %s\n' "${problems[@]}" >&2
  echo "check-docs: ${#problems[@]} problems ($counts checked)" >&2
  exit 1
fi
echo "check-docs: docs/api matches include/cport ($counts);" \
  "$listings guide listings match their files"

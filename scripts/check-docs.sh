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
#   header-comment contract of CONVENTIONS.md, section 2;
# - each docs/api/X.md (version.md: cport.h) has a "Contents:" paragraph
#   whose links reach headings of the page that name exactly the functions,
#   types and macros of include/cport/X.h, and a "**Any thread:**"
#   paragraph naming exactly the functions whose comment says "Thread: any";
# - the version: cport.h, project(), docs/api/version.md's code block, and
#   every SONAME and find_package(cport X.Y) in README.md and docs agree;
# - the code blocks of README.md and docs: every -std= is -std=gnu11; every
#   configure line before a `cmake --install` turns tests and examples off;
#   every `pkg-config --libs cport` is followed, in its section, by the
#   -Wl,-rpath / LD_LIBRARY_PATH note; every `cc` command's flags compile a
#   program that includes <cport/cport.h> and <uv.h> (and the example it
#   names), and README's first C listing compiles warning-free;
# - guide listings marked "<!-- file: X -->" are file X, and code marked
#   "<!-- excerpt: X -->" appears in X verbatim.
#
# Exits 0 when all holds, 1 listing every problem otherwise. Needs only bash,
# awk, grep, sed, sort and a C compiler ($CC, else cc; without one that can
# compile <uv.h>, the compile checks are skipped with a note).
#
#   scripts/check-docs.sh [REPO_ROOT]
set -euo pipefail
export LC_ALL=C # one order for sort and comm
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
awk -v owners="$tmp/owners" -v threads="$tmp/threads" '
  # The header a symbol belongs to, as "core" for include/cport/core.h.
  function header(   h) { h = FILENAME; sub(/^.*\//, "", h); sub(/\.h$/, "", h); return h }
  # "any" if the Thread value of `text` (a header comment) for function
  # `name` starts with the word any, else "other". A comment over several
  # functions may give each its own value: "Thread: set_data: loop.
  # get_data: any ...".
  function thread_value(text, name,   v, suffix, i) {
    if (!match(text, /Thread:/)) return "other"
    v = substr(text, RSTART + RLENGTH)
    if (match(v, /(Returns|Blocks|Callback|Ownership):/)) v = substr(v, 1, RSTART - 1)
    suffix = name
    sub(/^cport_[a-z0-9]+_/, "", suffix)
    i = index(v, suffix ":")
    if (i > 0) v = substr(v, i + length(suffix) + 1)
    sub(/^[ \t]+/, "", v)
    return (v ~ /^any([^a-z_]|$)/) ? "any" : "other"
  }
  FNR == 1 { in_comment = 0; comment_end = -1; decl_end = -1; decl_thread = 0
             stmt = ""; depth = 0; in_typedef = 0; in_enum = 0 }
  # Comments: remember where the last one ended, whether it says Thread,
  # and its text.
  in_comment || /^[ \t]*\/\*/ {
    if (!in_comment) { in_comment = 1; comment_thread = 0; comment_text = "" }
    if ($0 ~ /Thread/) comment_thread = 1
    line = $0
    sub(/^[ \t]*(\/\*|\*)?/, "", line)
    comment_text = comment_text " " line
    if ($0 ~ /\*\//) { in_comment = 0; comment_end = FNR; last_thread = comment_thread
                      last_text = comment_text }
    next
  }
  /^#[ \t]*define[ \t]+CPORT_[A-Z0-9_]+/ {
    name = $0
    sub(/^#[ \t]*define[ \t]+/, "", name)
    sub(/[^A-Z0-9_].*$/, "", name)
    if (name !~ /^CPORT__/ && name !~ /_H$/ && name != "CPORT_API") {
      print "M", name
      print header() "\t" name > owners
    }
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
    if (comment_end == decl_start - 1) { thread = last_thread; text = last_text }
    else if (decl_end == decl_start - 1) { thread = decl_thread; text = decl_text } # grouped
    else { thread = 0; text = "" }
    decl_end = FNR
    decl_thread = thread
    decl_text = text
    print "F", name, (ret == "void" ? "void" : "value"), thread, \
          FILENAME ":" decl_start
    print header() "\t" name > owners
    print header() "\t" name "\t" thread_value(text, name) > threads
    next
  }
  # Types: typedef ... name; and typedef ret (*name)(...); named enums.
  /^[ \t]*typedef[ \t]/ { in_typedef = 1; stmt = "" }
  /^[ \t]*enum[ \t]+cport_[a-z0-9_]+[ \t]*\{/ {
    name = $0
    sub(/^[ \t]*enum[ \t]+/, "", name)
    sub(/[^a-z0-9_].*$/, "", name)
    print "T", "enum " name
    print header() "\tenum " name > owners
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
        if (name ~ /^cport_/) {
          print "T", name
          print header() "\t" name > owners
        }
      }
    }
  }
' "${headers[@]}" | sort -u >"$tmp/symbols"
# An object's handle type, cport_X_t, belongs to X.h wherever it is
# declared (cport_service_t is declared in session.h, cport_session_t in
# session.h and again in packet.h).
sort -u "$tmp/owners" | awk -F '\t' '
  { seen[$1] = 1; hdr[NR] = $1; name[NR] = $2 }
  END {
    for (i = 1; i <= NR; i++) {
      h = hdr[i]
      if (name[i] ~ /^cport_[a-z]+_t$/) {
        object = substr(name[i], 7, length(name[i]) - 8)
        if (object in seen) h = object
      }
      print h "\t" name[i]
    }
  }
' | sort -u >"$tmp/owners.1"
mv "$tmp/owners.1" "$tmp/owners"

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

# ---- the API pages against their headers: Contents and any-thread lists --
# Checks in pipelines write their problems here, one a line.
: >"$tmp/problems"
# docs/api/X.md documents include/cport/X.h (version.md: cport.h).
page_header() {
  case $1 in
    version) echo cport ;;
    *) echo "$1" ;;
  esac
}

# Every docs/api page whose header declares something: the "Contents:"
# paragraph links ([`name`](#anchor)) to headings of the page, and the
# names under those headings are exactly the header's functions, types and
# macros; the "**Any thread:**" paragraph names, in backticks, exactly the
# header's functions whose header comment says "Thread: any..." (the value
# starts with the word any, whatever follows it), so notes in it must not
# put other function names in backticks. Anchors are GitHub's: the heading
# in lower case, punctuation but - and _ dropped, spaces made -.
pages=()
for page in "${docs[@]}"; do
  hdr=$(page_header "$(basename "$page" .md)")
  if [ -f "$root/include/cport/$hdr.h" ]; then
    pages+=("$page")
  else
    fail "${page#"$root"/}: documents no header (no include/cport/$hdr.h)"
  fi
done
awk -F '\t' -v owners="$tmp/owners" -v threads="$tmp/threads" -v root="$root/" '
  function finish(   t, i, left, rest, j, target, anchor, text, n, parts, k,
                     found, key, kk, listed, name) {
    if (page == "") return
    delete covered
    if (!(hdr in hdrs)) return # the header declares nothing
    if (ncontents != 1)
      print rel ": " ncontents " Contents: paragraphs, not 1"
    t = contents
    while ((i = index(t, "](")) > 0) {
      left = substr(t, 1, i - 1)
      rest = substr(t, i + 2)
      if (match(left, /\[[^[]*$/)) text = substr(left, RSTART + 1)
      else text = ""
      gsub(/`/, "", text)
      j = index(rest, ")")
      target = substr(rest, 1, j - 1)
      t = substr(rest, j + 1)
      anchor = substr(target, 2)
      if (substr(target, 1, 1) != "#" || !(anchor in head)) {
        print rel ": Contents links " target ", which is no heading of the page"
        continue
      }
      n = split(head[anchor], parts, /,[ \t]*/)
      found = 0
      for (k = 1; k <= n; k++) {
        covered[parts[k]] = 1
        if (parts[k] == text) found = 1
      }
      if (!found)
        print rel ": Contents shows \"" text "\" for #" anchor ", whose heading is \"" head[anchor] "\""
    }
    for (key in decl) {
      split(key, kk, SUBSEP)
      if (kk[1] == hdr && !(kk[2] in covered))
        print rel ": Contents lacks " kk[2] " (include/cport/" hdr ".h declares it)"
    }
    for (name in covered)
      if (!((hdr, name) in decl))
        print rel ": Contents lists " name ", which include/cport/" hdr ".h does not declare"
    if (!(hdr in hasf)) return
    if (nany != 1) {
      print rel ": " nany " **Any thread:** paragraphs, not 1"
      return
    }
    delete listed
    t = anylist
    while (match(t, /`cport_[a-z0-9_]+`/)) {
      listed[substr(t, RSTART + 1, RLENGTH - 2)] = 1
      t = substr(t, RSTART + RLENGTH)
    }
    for (key in anyf) {
      split(key, kk, SUBSEP)
      if (kk[1] == hdr && !(kk[2] in listed))
        print rel ": **Any thread:** lacks " kk[2] " (its header comment says Thread: any)"
    }
    for (name in listed)
      if (!((hdr, name) in anyf))
        print rel ": **Any thread:** names " name ", whose header comment does not say Thread: any"
  }
  FILENAME == owners { decl[$1, $2] = 1; hdrs[$1] = 1; next }
  FILENAME == threads { hasf[$1] = 1; if ($3 == "any") anyf[$1, $2] = 1; next }
  FNR == 1 {
    finish()
    page = FILENAME
    rel = substr(page, length(root) + 1)
    hdr = page
    sub(/^.*\//, "", hdr)
    sub(/\.md$/, "", hdr)
    if (hdr == "version") hdr = "cport"
    fence = 0; para = ""; ncontents = 0; nany = 0; contents = ""; anylist = ""
    delete head
  }
  /^```/ { fence = !fence; para = ""; next }
  fence { next }
  /^[ \t]*$/ { para = ""; next }
  /^#+ / {
    text = $0
    sub(/^#+ /, "", text)
    gsub(/`/, "", text)
    slug = tolower(text)
    gsub(/[^a-z0-9 _-]/, "", slug)
    gsub(/ /, "-", slug)
    head[slug] = text
    para = ""
    next
  }
  para == "" && index($0, "Contents:") == 1 { para = "contents"; ncontents++ }
  para == "" && index($0, "**Any thread:**") == 1 { para = "any"; nany++ }
  para == "contents" { contents = contents " " $0 }
  para == "any" { anylist = anylist " " $0 }
  para == "" { para = "other" }
  END { finish() }
' "$tmp/owners" "$tmp/threads" ${pages[@]+"${pages[@]}"} >>"$tmp/problems"
# A header with declarations but no page.
cut -f1 "$tmp/owners" | sort -u | while IFS= read -r hdr; do
  base=$hdr
  [ "$hdr" = cport ] && base=version
  [ -f "$root/docs/api/$base.md" ] ||
    echo "include/cport/$hdr.h: no page docs/api/$base.md"
done >>"$tmp/problems"

# ---- the version, said the same everywhere ----
# cport.h's three macros, CMakeLists.txt's project() version, the code
# block of docs/api/version.md (its three macros and the string), and every
# SONAME and find_package(cport X.Y) in README.md and docs: MAJOR.MINOR.
hv=$(for part in MAJOR MINOR PATCH; do
  sed -n "s/^#define CPORT_VERSION_$part \([0-9]*\).*/\1/p" "$root/include/cport/cport.h"
done | tr '\n' '.' | sed 's/\.$//')
pv=$(sed -n 's/^project(cport VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
dv=$(for part in MAJOR MINOR PATCH; do
  awk '/^```/ { fence = !fence; next } fence' "$root/docs/api/version.md" |
    sed -n "s/^#define CPORT_VERSION_$part \([0-9]*\).*/\1/p"
done | tr '\n' '.' | sed 's/\.$//')
ds=$(sed -n 's/^#define CPORT_VERSION_STRING "\([0-9.]*\)".*/\1/p' "$root/docs/api/version.md")
if [ -z "$hv" ] || [ "$hv" != "$pv" ]; then
  fail "include/cport/cport.h says version '$hv', CMakeLists.txt's project() '$pv'"
fi
[ "$dv" = "$hv" ] ||
  fail "docs/api/version.md's code block says version '$dv', include/cport/cport.h '$hv'"
[ "$ds" = "$hv" ] ||
  fail "docs/api/version.md shows CPORT_VERSION_STRING \"$ds\", the headers make \"$hv\""
mm=${hv%.*}
grep -Eno 'libcport\.so\.[0-9][0-9.]*[0-9]|libcport\.[0-9][0-9.]*[0-9]\.dylib|find_package\(cport [0-9][0-9.]*[0-9]' \
  "$root/README.md" "$root"/docs/*.md "${docs[@]}" >"$tmp/versions" || true
while IFS= read -r hit; do
  where=${hit%:*}
  what=${hit##*:}
  v=$(printf '%s\n' "$what" | sed 's/^libcport\.so\.//; s/^libcport\.//; s/\.dylib$//; s/^find_package(cport //')
  [ "$v" = "$mm" ] ||
    fail "${where#"$root"/}: '$what' names version $v, the headers say $mm"
done <"$tmp/versions"

# ---- the shell snippets of README.md and docs/*.md (code blocks) ----
# Each code block's lines, continuation lines joined, as
# "file:line<TAB>block number<TAB>text".
awk '
  FNR == 1 { fence = 0; block = 0; held = "" }
  /^```/ { fence = !fence; if (fence) block++; next }
  fence {
    line = $0
    if (held != "") { line = held " " line; held = "" }
    else start = FNR
    if (line ~ /\\$/) { sub(/\\$/, "", line); held = line; next }
    print FILENAME ":" start "\t" FILENAME ":" block "\t" line
  }
' "$root/README.md" "$root"/docs/*.md "${docs[@]}" >"$tmp/snippets"

# Every -std= in a command names gnu11: libuv's <uv.h> needs POSIX
# declarations that plain -std=c11 hides on glibc.
std=gnu11
set -f # the words of a command, not the files they match
while IFS=$'\t' read -r where _ text; do
  for word in $text; do
    case $word in
      -std="$std") ;;
      -std=*) fail "${where#"$root"/}: '$word' (the documented standard is -std=$std)" ;;
    esac
  done
done < <(grep -- '-std=' "$tmp/snippets" || true)
set +f

# Every configure line in a block that installs (cmake --install) builds
# neither tests nor examples, and such a block has one.
awk -F '\t' -v root="$root/" '
  function rel(s) { return substr(s, length(root) + 1) }
  $3 ~ /cmake --install/ { installs[$2] = 1 }
  $3 ~ /^[ \t]*cmake .*-[SB]/ && $3 !~ / --(build|install) / {
    configures[$2] = 1
    if ((" " $3 " ") !~ / -DCPORT_BUILD_TESTS=OFF /)
      bad[$2] = bad[$2] rel($1) ": a configure line without -DCPORT_BUILD_TESTS=OFF before cmake --install\n"
    if ((" " $3 " ") !~ / -DCPORT_BUILD_EXAMPLES=OFF /)
      bad[$2] = bad[$2] rel($1) ": a configure line without -DCPORT_BUILD_EXAMPLES=OFF before cmake --install\n"
  }
  END {
    for (b in installs) {
      if (!(b in configures))
        print rel(b) ": a code block runs cmake --install but shows no configure line"
      else if (b in bad)
        printf "%s", bad[b]
    }
  }
' "$tmp/snippets" >>"$tmp/problems"

# Every command that links with `pkg-config --libs cport` is followed, in
# its section, by the note on finding the shared library at run time:
# -Wl,-rpath and LD_LIBRARY_PATH (cport is often installed outside the
# loader's search path).
for f in "$root/README.md" "$root"/docs/*.md "${docs[@]}"; do
  awk -v rel="${f#"$root"/}" '
    function finish() {
      if (pending && !(rest ~ /-Wl,-rpath/ && rest ~ /(^|[^Y])LD_LIBRARY_PATH/))
        print rel ":" pending ": pkg-config --libs cport without the -Wl,-rpath / LD_LIBRARY_PATH note after it in its section"
      pending = 0; rest = ""
    }
    /^```/ { fence = !fence }
    !fence && /^#/ { finish() }
    pending { rest = rest "\n" $0 }
    fence && /pkg-config[^)]*--libs[^)]*cport/ { finish(); pending = FNR; rest = $0 }
    END { finish() }
  ' "$f" >>"$tmp/problems"
done

# Compile what the docs tell a reader to compile, with the flags they
# give: every "cc ..." command's -std/-W/-D/-pthread flags on a program
# that includes both <cport/cport.h> and <uv.h> (and on the example it
# names, if examples/ has it), and the README's first C listing. Only
# compiled, against include/ and libuv's headers (pkg-config, when it
# knows libuv); skipped with a note where even -std=gnu11 cannot compile
# that program, so that a machine without libuv's headers fails nothing.
cc_bin=${CC:-cc}
cat >"$tmp/probe.c" <<'PROBE'
#include <cport/cport.h>
#include <uv.h>
int main(void) {
  uv_mutex_t m;
  if (uv_mutex_init(&m) != 0)
    return 1;
  uv_mutex_destroy(&m);
  return cport_version() == 0;
}
PROBE
uv_cflags=$(pkg-config --cflags libuv 2>/dev/null || true)
compiled=0
compile() { # compile SOURCE FLAGS...: 0 if it compiles without a warning
  local src=$1
  shift
  # shellcheck disable=SC2086 # uv_cflags is a list of words
  "$cc_bin" "$@" -Werror -I"$root/include" $uv_cflags -c "$src" \
    -o "$tmp/out.o" >"$tmp/cc.log" 2>&1
}
if ! command -v "$cc_bin" >/dev/null 2>&1 || ! compile "$tmp/probe.c" -std=$std; then
  compile_note="; compile checks skipped: '$cc_bin -std=$std' cannot compile <uv.h> here"
else
  compile_note=""
  set -f
  while IFS=$'\t' read -r where _ text; do
    flags=()
    files=()
    for word in $text; do
      case $word in
        -Wl,*) ;;
        -std=* | -W* | -D* | -U* | -pthread) flags+=("$word") ;;
        *.c) [ -f "$root/examples/$(basename "$word")" ] &&
          files+=("$root/examples/$(basename "$word")") ;;
      esac
    done
    for src in "$tmp/probe.c" ${files[@]+"${files[@]}"}; do
      compiled=$((compiled + 1))
      compile "$src" ${flags[@]+"${flags[@]}"} ||
        fail "${where#"$root"/}: the documented command's flags (${flags[*]:-none}) do not compile $(basename "$src"): $(head -n 3 "$tmp/cc.log" | tr '\n' ' ')"
    done
  done < <(grep -E $'\t[ ]*(\\$ )?cc ' "$tmp/snippets" || true)
  set +f
  awk '/^```c$/ { inside = 1; next } inside && /^```$/ { exit } inside' \
    "$root/README.md" >"$tmp/readme.c"
  compiled=$((compiled + 1))
  if [ ! -s "$tmp/readme.c" ]; then
    fail "README.md: no C listing to compile"
  elif ! compile "$tmp/readme.c" -std=$std -Wall -Wextra; then
    fail "README.md: its first C listing does not compile (-std=$std -Wall -Wextra -Werror): $(head -n 3 "$tmp/cc.log" | tr '\n' ' ')"
  fi
fi

# ---- guide excerpts: "<!-- excerpt: examples/X.c -->" before a code
# block means those lines appear in examples/X.c, in a row, verbatim. In a
# section with one such marker, every C block carries one (or a file
# marker), so that no unchecked code slips in beside them.
excerpts=0
while IFS=$'\t' read -r line file; do
  excerpts=$((excerpts + 1))
  if [ ! -f "$root/$file" ]; then
    fail "docs/guide.md:$line: the excerpt marked for $file names no file"
    continue
  fi
  awk -v from="$line" '
    NR == from + 1 && /^```c$/ { inside = 1; next }
    inside && /^```$/ { exit }
    inside { print }
  ' "$guide" >"$tmp/excerpt"
  if [ ! -s "$tmp/excerpt" ]; then
    fail "docs/guide.md:$line: no \`\`\`c block right after the excerpt marker"
    continue
  fi
  awk '
    NR == FNR { want[++n] = $0; next }
    { have[++m] = $0 }
    END {
      for (i = 1; i + n - 1 <= m; i++) {
        for (j = 1; j <= n && have[i + j - 1] == want[j]; j++) ;
        if (j > n) exit 0
      }
      exit 1
    }
  ' "$tmp/excerpt" "$root/$file" ||
    fail "docs/guide.md:$line: the excerpt is not in $file as it stands (first line: $(head -n 1 "$tmp/excerpt"))"
done < <(awk '/^<!-- excerpt: .* -->$/ {
                f = $0; sub(/^<!-- excerpt: /, "", f); sub(/ -->$/, "", f)
                print NR "\t" f }' "$guide")
# The programs whose guide sections are excerpts of them: at least one
# excerpt each, so that dropping the markers does not drop the check.
excerpted=(examples/request_reply.c)
for file in "${excerpted[@]}"; do
  grep -qxF "<!-- excerpt: $file -->" "$guide" ||
    fail "docs/guide.md: no excerpt of $file (its section shows it in excerpts)"
done
awk '
  fence && /^```/ { fence = 0; next }
  !fence && /^## / { section = $0 }
  /^<!-- excerpt: .* -->$/ { has_excerpt[section] = 1 }
  !fence && /^```c$/ && prev !~ /^<!-- (excerpt|file): .* -->$/ &&
    !(section in bare) { bare[section] = NR }
  !fence && /^```/ { fence = 1 }
  { prev = $0 }
  END {
    for (s in bare)
      if (s in has_excerpt)
        print "docs/guide.md:" bare[s] ": a C block without an excerpt marker in \"" s "\", whose other C blocks are checked excerpts"
  }
' "$guide" >>"$tmp/problems"

while IFS= read -r problem; do
  problems+=("$problem")
done <"$tmp/problems"

counts=$(awk '{ n[$1]++ } END { printf "%d functions, %d types, %d macros, %d enum constants", n["F"], n["T"], n["M"], n["E"] }' "$tmp/symbols")
if [ ${#problems[@]} -gt 0 ]; then
  printf 'check-docs: %s\n' "${problems[@]}" >&2
  echo "check-docs: ${#problems[@]} problems ($counts checked)" >&2
  exit 1
fi
echo "check-docs: docs/api matches include/cport ($counts), Contents and" \
  "any-thread lists included; $listings guide listings and $excerpts excerpts" \
  "match their files; versions agree; $compiled documented compiles" \
  "pass$compile_note"

#!/usr/bin/env bash
# Static check that the project's shell scripts (scripts/*.sh, tests/*.sh,
# bench/*.sh, examples/*.sh, .ci/run) stay runnable on macOS: bash 3.2 and
# BSD tools. Prints FILE:LINE: RULE for each use of a GNU-only tool option or
# a bash 4 feature and exits 1 if there is any. ctest runs it as `portable`.
#
#   scripts/check-portable.sh [REPO_ROOT]
#
# A deliberate use (guarded, or in a script that only runs on Linux) is
# marked on its line with a trailing comment `# portable: <why>`. Comment
# lines are not checked. Before the scan, every rule must flag a sample of
# what it is for (the first one is the `wc -l` comparison that once failed
# on macOS, whose wc pads the count with spaces), so a rule cannot rot
# into matching nothing.
set -u
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
self=scripts/check-portable.sh

# One rule a line: an extended regular expression (grep -E), a tab, the
# rule's text, a tab, a line it must flag.
rules=$(
  cat <<'EOF'
wc( -[lcwm])* *<|(\||^[[:space:]]*)wc( -[lcwm])* *(\)|$)	wc output (padded with spaces on macOS) not through tr -d ' ' or $(( ))	[ "$(wc -l <"$main_out")" = 1 ] && ok
sed( -[A-Za-z]+)* -[A-Za-z]*i( |$|'')	sed -i (BSD needs a suffix argument, GNU none): write a temporary file	sed -i 's/a/b/' f
sed( -[A-Za-z]+)* -[A-Za-z]*r	sed -r is GNU: use sed -E	sed -r 's/a+/b/' f
date .*(%N|-d |--date)	date -d / %N are GNU	t=$(date +%s%N)
(^[[:space:]]*|[;&|(!] *|then +|do +)timeout +[-0-9]	timeout(1) is GNU coreutils, not on macOS	timeout 5 cmd
readlink +-[a-z]*f	readlink -f is GNU (macOS before 12.3): cd and pwd -P	d=$(readlink -f x)
(^|[^-A-Za-z_])nproc([^A-Za-z_]|$)	nproc is GNU: getconf _NPROCESSORS_ONLN	j=$(nproc)
stat +(-c|--)	stat -c is GNU (BSD: stat -f)	stat -c %s f
grep( -[A-Za-z]+)* -[A-Za-z]*P	grep -P is GNU: use grep -E	grep -P '\d' f
xargs( -[A-Za-z0-9]+)* -[A-Za-z]*r|xargs +--no-run	xargs -r is GNU	ls | xargs -r rm
mktemp +(--|-[A-Za-z]*p)	mktemp --suffix/--tmpdir/-p are GNU: mktemp or mktemp -d	f=$(mktemp --suffix .c)
sort( -[A-Za-z]+)* -[A-Za-z]*V	sort -V is GNU	sort -V f
find .*-printf	find -printf is GNU	find . -printf '%p\n'
(^|[^A-Za-z_])tac([^A-Za-z_]|$)	tac is GNU: tail -r (BSD) or awk	tac f
(grep|sed)( +-[A-DF-Za-z]+)* +'[^']*\\[|+]	\| and \+ in a basic regular expression are GNU: use -E	grep 'a\|b' f
(declare|local|typeset) +-[A-Za-z]*A	associative arrays need bash 4	declare -A m
(mapfile|readarray)([^A-Za-z_]|$)	mapfile/readarray need bash 4	mapfile -t a <f
\$\{[^}]*(,,|\^\^|,|\^)\}	${x,,} / ${x^^} case changes need bash 4	l=${x,,}
\|&	|& needs bash 4	cmd |& tee f
&>>	&>> needs bash 4	cmd &>>f
(declare|local|typeset) +-[A-Za-z]*n	namerefs need bash 4.3	declare -n r=x
\$\{[A-Za-z_]+\[-[0-9]+\]\}	negative array indices need bash 4.3	last=${a[-1]}
\[\[ +-v	[[ -v ]] needs bash 4.2	[[ -v x ]]
echo +-[a-zA-Z]*e	echo -e differs between shells: printf	echo -e 'a\tb'
EPOCH(REALTIME|SECONDS)	EPOCHREALTIME/EPOCHSECONDS need bash 5	t=$EPOCHREALTIME
(^|[^$])\{[A-Za-z_]+\}[<>]	{var}> redirections need bash 4.1	exec {fd}<f
(^|[;&| ])(coproc|wait +-n)([^A-Za-z_]|$)	coproc / wait -n need bash 4	wait -n
\$\{[^}]*@[QEPAaKkUuL]\}	${x@Q} transformations need bash 4.4	q=${x@Q}
EOF
)

# flags REGEX FILE...: the lines (FILE:LINE:TEXT) that break REGEX's rule,
# minus comment lines, marked lines and uses of wc that are normalised.
flags() {
  local re=$1
  shift
  grep -n -H -E -- "$re" "$@" | grep -v -E '^[^:]*:[0-9]+:[[:space:]]*#' |
    grep -v -E '# portable:' |
    if [ "${re#wc}" != "$re" ]; then
      grep -v -E "tr -d|\\$\\(\\("
    else
      cat
    fi
}

failed=0
tmp=$(mktemp) || exit 2
trap 'rm -f "$tmp"' EXIT
# ---- every rule flags its sample ----
while IFS='	' read -r re what sample; do
  [ -n "$re" ] || continue
  printf '%s\n' "$sample" >"$tmp"
  if [ -z "$(flags "$re" "$tmp")" ]; then
    echo "check-portable: rule '$what' does not flag its sample: $sample"
    failed=1
  fi
done <<EOF
$rules
EOF

# ---- the scripts ----
cd "$root" || exit 2
files=()
for f in scripts/*.sh tests/*.sh bench/*.sh examples/*.sh .ci/run; do
  [ -f "$f" ] && [ "$f" != "$self" ] && files+=("$f")
done
found=0
while IFS='	' read -r re what sample; do
  [ -n "$re" ] || continue
  hits=$(flags "$re" "${files[@]}")
  if [ -n "$hits" ]; then
    printf '%s\n' "$hits" | sed -n 's/^\([^:]*:[0-9]*\):.*$/\1/p' |
      while read -r where; do echo "$where: $what"; done
    found=1
  fi
done <<EOF
$rules
EOF
if [ "$found" = 1 ] || [ "$failed" = 1 ]; then
  echo "check-portable: failed (mark a deliberate use '# portable: <why>')"
  exit 1
fi
echo "check-portable: ok (${#files[@]} scripts)"

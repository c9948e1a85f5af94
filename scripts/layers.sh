#!/usr/bin/env bash
# Checks the kernel's layering (DESIGN.md 6a): a file under microkernel/src may
# name only modules of its own layer or lower ones. Fails, listing each
# offending line, on an upward path. What counts as naming a module:
#   - `crate::x` and `$crate::x` (any position: `use` lines, paths in code,
#     `sym`/`const` asm operands); `crate::println!`/`print!` are logger's;
#   - each first-level name of a `crate::{a, b::c, ...}` group, which may
#     span lines (a, b);
#   - `crate::*` and `crate as` are refused outright outside main.rs (a
#     glob or an alias of the root hides which layers a file names);
#   - a bare `println!`/`print!` (the logger's macros);
#   - `super::` chains that climb out of the file's top-level module.
# Comments (`//`, `//!`, `///`) are ignored.
#
# The one exception: the entry stubs' `sym crate::...` up-calls listed in the
# "Entry up-calls" section of microkernel/src/arch/x86_64/mod.rs, and only on a
# `sym` line of an arch file. `ktest` may name anything; only main.rs (the
# composition root, which starts the test mode) may name `ktest`.
#
#   scripts/layers.sh [SRC_DIR]      (default microkernel/src)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SRC=${1:-microkernel/src}
export LC_ALL=C

files=$(find "$SRC" -name '*.rs' | sort)
upcalls=$(sed -n 's/^\/\/! - `sym \(crate::[A-Za-z0-9_:]*\)`.*/\1/p' "$SRC/arch/x86_64/mod.rs" | tr '\n' ' ')
# shellcheck disable=SC2086
awk -v src="$SRC" -v upcalls="$upcalls" '
# The layer of each top-level module (a file x.rs or a directory x/).
BEGIN {
  split("arch:0 sync:1 time:1 logger:1 panic:1 fmt:1 bootinfo:1 trace:1 mem:2 cpu:2 object:3 sched:4 ipc:5 lifecycle:6 bootstrap:6 interrupt:7 smp:7 syscall:7 main:8 ktest:T", kv, " ")
  for (i in kv) { split(kv[i], pr, ":"); layer[pr[1]] = pr[2] }
  # Macros exported at the crate root by logger.
  macro["println"] = "logger"; macro["print"] = "logger"
  fail = 0; nfiles = 0; gdepth = 0
  nup = split(upcalls, u, " ")
  for (i = 1; i <= nup; i++) upcall[u[i]] = 1
}
# Scans `s` inside a `crate::{...}` group (the caller starts it at its
# `{`; `gdepth` carries an open group over to the next line): records each
# name at depth 1 that follows `{` or `,` as a target. Returns what follows
# the closing `}` ("" while it is still open).
function scan_group(s,    i, c, id) {
  i = 1
  while (i <= length(s)) {
    c = substr(s, i, 1)
    if (c == "{") { gdepth++; if (gdepth == 1) gexpect = 1; i++; continue }
    if (c == "}") {
      gdepth--; i++
      if (gdepth <= 0) { gdepth = 0; return substr(s, i) }
      continue
    }
    if (c == "," && gdepth == 1) { gexpect = 1; i++; continue }
    if (c ~ /[A-Za-z_]/) {
      id = substr(s, i); match(id, /^[A-Za-z_][A-Za-z0-9_]*/); id = substr(id, 1, RLENGTH)
      if (gdepth == 1 && gexpect && id != "self") tgt[++nt] = (id in macro) ? macro[id] : id
      gexpect = 0
      i += length(id); continue
    }
    i++
  }
  return ""
}
FNR == 1 {
  gdepth = 0
  nfiles++
  rel = substr(FILENAME, length(src) + 2)
  n = split(rel, parts, "/")
  # The file'"'"'s module path: x/y/z.rs -> x y z; x/mod.rs -> x.
  depth = n
  if (parts[n] == "mod.rs") depth = n - 1
  else sub(/\.rs$/, "", parts[n])
  mod = parts[1]; sub(/\.rs$/, "", mod)
  mine = (mod in layer) ? layer[mod] : "?"
  if (mine == "?") {
    printf "layers: %s: module %s has no layer (add it to scripts/layers.sh)\n", FILENAME, mod
    fail = 1
  }
}
{
  code = $0
  sub(/\/\/.*/, "", code)
  if (code ~ /^[ \t]*$/ || mine == "?") next
  line = $0; sub(/^[ \t]+/, "", line)
  nt = 0; split("", tsym)
  # A crate::{...} group: open from an earlier line, then any on this one.
  rest = code
  if (gdepth > 0) rest = scan_group(rest)
  while (match(rest, /(^|[^A-Za-z0-9_])\$?crate::[ \t]*\{/)) {
    rest = substr(rest, RSTART + RLENGTH - 1)
    rest = scan_group(rest)
  }
  # A glob or an alias of the crate root hides what it names.
  if (mod != "main" && code ~ /(^|[^A-Za-z0-9_])crate::[ \t]*\*|(^|[^A-Za-z0-9_$])crate[ \t]+as[ \t]/) {
    printf "layers: %s:%d: a glob or alias of the crate root (name each module): %s\n", FILENAME, FNR, line
    fail = 1
  }
  # crate::x, $crate::x
  rest = code
  # Each occurrence remembers its full path if it is a `sym` operand: only
  # such an occurrence, and only a listed one, may point up (below).
  seen = ""
  while (match(rest, /(^|[^A-Za-z0-9_])\$?crate::[A-Za-z_][A-Za-z0-9_:]*/)) {
    m = substr(rest, RSTART, RLENGTH)
    path = m; sub(/.*crate::/, "crate::", path)
    lead = m; sub(/\$?crate::.*/, "", lead)
    seen = seen substr(rest, 1, RSTART - 1) lead
    t = path; sub(/^crate::/, "", t); sub(/::.*/, "", t)
    if (t in macro) t = macro[t]
    tgt[++nt] = t
    tsym[nt] = (seen ~ /(^|[^A-Za-z0-9_])sym[ \t]+$/) ? path : ""
    seen = seen substr(m, length(lead) + 1)
    rest = substr(rest, RSTART + RLENGTH)
  }
  # bare print macros
  if (code ~ /(^|[^A-Za-z0-9_:])(println|print)!/) tgt[++nt] = "logger"
  # super:: chains: climbing `depth` levels reaches the crate root.
  rest = code
  while (match(rest, /(super::)+[A-Za-z_][A-Za-z0-9_]*/)) {
    t = substr(rest, RSTART, RLENGTH)
    ups = gsub(/super::/, "", t)
    if (ups >= depth) tgt[++nt] = t
    rest = substr(rest, RSTART + RLENGTH)
  }
  for (k = 1; k <= nt; k++) {
    t = tgt[k]
    if (t == mod) continue
    theirs = (t in layer) ? layer[t] : 8   # other crate-root items: main.rs
    if (theirs == "T") {
      if (mod == "main" || mod == "ktest") continue
      printf "layers: %s:%d: production code names ktest: %s\n", FILENAME, FNR, line
      fail = 1; continue
    }
    if (mine == "T") continue
    if (theirs + 0 > mine + 0) {
      if (mine == "0" && (k in tsym) && (tsym[k] in upcall)) continue
      printf "layers: %s:%d: layer %s (%s) names layer %s (%s): %s\n", FILENAME, FNR, mine, mod, theirs, t, line
      fail = 1
    }
  }
}
END {
  if (nup == 0) { print "layers: no entry up-calls listed in arch/x86_64/mod.rs"; fail = 1 }
  if (fail) { print "layers: FAILED (a path points up; see DESIGN.md 6a)"; exit 1 }
  printf "layers: ok (%d files, %d listed entry up-calls)\n", nfiles, nup
}
' $files

#!/usr/bin/env bash
# Boots Mica with `init=bench` headless and prints the benchmark figures as a table.
#
#   scripts/bench.sh [--icount] [--smp N] [--timeout SECS]
#
#   --icount   deterministic mode (-accel tcg,thread=single -icount shift=0): rdtsc
#              counts guest instructions, so figures are exact path lengths.
#              Without it, figures are noisy TCG wall-clock cycles.
#   --smp N    CPUs (default 1; cross-core figures need 2 or more)
#   --timeout  seconds before giving up (default $BENCH_TIMEOUT or 600)
#
# The guest prints `BENCH name=<n> unit=<u> min=<n> median=<n> iters=<n>` lines (the
# kernel's bare, the programs' behind their `[pid N] ` prefix) and then init prints
# `[pid 1] BENCH-DONE`. The transcript is kept in target/bench/bench.log. Fails if
# BENCH-DONE never appears or the guest does not report success.
# BENCH_RUNNER=PATH uses that runner binary instead of building with cargo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LC_ALL=C

icount=0 smp=1 limit=${BENCH_TIMEOUT:-600}
while [[ $# -gt 0 ]]; do
  case $1 in
    --icount) icount=1 ;;
    --smp) smp=${2:?--smp needs a value}; shift ;;
    --smp=*) smp=${1#--smp=} ;;
    --timeout) limit=${2:?--timeout needs a value}; shift ;;
    --timeout=*) limit=${1#--timeout=} ;;
    -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=$TARGET_DIR/bench
mkdir -p "$OUT"
log=$OUT/bench.log

args=(--headless --timeout "$limit" --smp "$smp" --cmdline init=bench)
mode="tcg smp=$smp"
if [[ $icount -eq 1 ]]; then
  # (the runner then picks -cpu max,-x2apic: QEMU's x2APIC MSRs break icount)
  args+=(--icount)
  mode="icount smp=$smp"
fi

RUNNER=${BENCH_RUNNER:-}
if [[ -z $RUNNER ]]; then
  cargo build -q
  RUNNER=$TARGET_DIR/debug/mica
fi
echo "bench: booting init=bench ($mode), up to ${limit}s; transcript in $log" >&2
status=0
# The transcript is kept as plain text: no CRs, no terminal escapes from GRUB.
"$RUNNER" "${args[@]}" </dev/null 2>&1 |
  sed -E $'s/\x1b\\[[0-9;?]*[A-Za-z]//g; s/\r//g' >"$log" || status=${PIPESTATUS[0]}

if ! grep -q '^\[pid 1\] BENCH-DONE' "$log"; then
  echo "bench: FAILED: no BENCH-DONE line (runner exit $status); last lines of $log:" >&2
  tail -n 20 "$log" | sed 's/^/    | /' >&2
  exit 1
fi

awk -v mode="$mode" '
  function field(key,   i, kv) {
    for (i = 2; i <= NF; i++) {
      split($i, kv, "=")
      if (kv[1] == key) return substr($i, length(key) + 2)
    }
    return "?"
  }
  /^\[pid 1\] BENCH-DONE/ { exit }
  { sub(/^\[pid [0-9]+\] /, "") }
  /^BENCH / {
    n++
    name[n] = field("name"); unit[n] = field("unit")
    min[n] = field("min"); med[n] = field("median"); iters[n] = field("iters")
    if (length(name[n]) > w) w = length(name[n])
  }
  END {
    if (w < 4) w = 4
    fmt = "%-" w "s  %12s  %12s  %8s  %-7s  %s\n"
    printf fmt, "name", "min", "median", "iters", "unit", "mode"
    for (i = 1; i <= n; i++)
      printf fmt, name[i], min[i], med[i], iters[i], unit[i], mode
    if (n == 0) print "(no BENCH lines before BENCH-DONE)"
  }
' "$log"

if [[ $status -ne 0 ]]; then
  echo "bench: FAILED: the guest did not report success (runner exit $status)" >&2
  exit 1
fi

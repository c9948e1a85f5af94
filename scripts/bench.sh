#!/usr/bin/env bash
# Boots Mica with `init=bench` headless and prints the benchmark figures as a table.
#
#   scripts/bench.sh [--icount] [--smp N] [--timeout SECS]
#   scripts/bench.sh --check
#
#   --icount   deterministic mode (-accel tcg,thread=single -icount shift=0,sleep=off): rdtsc
#              counts guest instructions, so figures are exact path lengths and
#              print unit=instructions (the runner adds `bench.icount` to the kernel
#              command line so the guest knows). Without it, figures are noisy TCG
#              wall-clock cycles (unit=cycles).
#   --smp N    CPUs (default 1; cross-core figures need 2 or more)
#   --timeout  seconds before giving up (default $BENCH_TIMEOUT or 600)
#   --check    one run in icount mode at --smp 2, compared with
#              scripts/bench-baseline.txt: fails if a figure is missing or failed, or
#              its median is worse than the baseline by more than that figure's margin.
#
# The guest prints `BENCH name=<n> unit=<u> min=<n> median=<n> iters=<n> failed=<n>`
# lines (the kernel's bare, the programs' behind their `[pid N] ` prefix) and then
# init prints `[pid 1] BENCH-DONE`. The transcript is kept in target/bench/bench.log.
# Fails (exit 1) if BENCH-DONE never appears, the guest does not report success, a
# figure has failed samples or none at all, a figure the baseline file lists (and the
# CPU count allows) is missing, or a figure's unit does not match the mode.
# BENCH_RUNNER=PATH uses that runner binary instead of building with cargo;
# BENCH_BASELINE=PATH another baseline file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LC_ALL=C

icount=0 smp=1 check=0 limit=${BENCH_TIMEOUT:-600}
while [[ $# -gt 0 ]]; do
  case $1 in
    --icount) icount=1 ;;
    --check) check=1 ;;
    --smp) smp=${2:?--smp needs a value}; shift ;;
    --smp=*) smp=${1#--smp=} ;;
    --timeout) limit=${2:?--timeout needs a value}; shift ;;
    --timeout=*) limit=${1#--timeout=} ;;
    -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ $check -eq 1 ]]; then
  icount=1 smp=2
fi

TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=$TARGET_DIR/bench
BASELINE=${BENCH_BASELINE:-scripts/bench-baseline.txt}
mkdir -p "$OUT"
log=$OUT/bench.log

args=(--headless --timeout "$limit" --smp "$smp" --cmdline init=bench)
mode="tcg smp=$smp" unit=cycles
if [[ $icount -eq 1 ]]; then
  # (the runner then picks -cpu max,-x2apic: QEMU's x2APIC MSRs break icount)
  args+=(--icount)
  mode="icount smp=$smp" unit=instructions
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

# Prints the table, then one `PROBLEM ...` line per problem found.
# us-unit figures (irq latency) are wall-clock in every mode.
verdict=0
awk -v mode="$mode" -v unit="$unit" -v smp="$smp" -v check="$check" '
  function field(key,   i, kv) {
    for (i = 2; i <= NF; i++) {
      split($i, kv, "=")
      if (kv[1] == key) return substr($i, length(key) + 2)
    }
    return "?"
  }
  FNR == NR {   # the baseline file
    if ($0 ~ /^[[:space:]]*(#|$)/) next
    nb++; bname[nb] = $1; bmed[$1] = $2; bmargin[$1] = $3; bsmp[$1] = $4
    next
  }
  /^\[pid 1\] BENCH-DONE/ { done = 1 }
  done { next }
  { sub(/^\[pid [0-9]+\] /, "") }
  /^BENCH / {
    n++
    name[n] = field("name"); u[n] = field("unit"); failed[n] = field("failed")
    min[n] = field("min"); med[n] = field("median"); iters[n] = field("iters")
    seen[name[n]] = n
    if (length(name[n]) > w) w = length(name[n])
  }
  END {
    if (w < 4) w = 4
    fmt = "%-" w "s  %12s  %12s  %8s  %-12s  %s%s\n"
    printf fmt, "name", "min", "median", "iters", "unit", "mode", ""
    for (i = 1; i <= n; i++)
      printf fmt, name[i], min[i], med[i], iters[i], u[i], mode, (failed[i] > 0 ? "  (" failed[i] " failed)" : "")
    if (n == 0) print "(no BENCH lines before BENCH-DONE)"
    for (i = 1; i <= n; i++) {
      if (failed[i] == "?" || failed[i] > 0 || iters[i] == 0)
        printf "PROBLEM %s: failed=%s iters=%s\n", name[i], failed[i], iters[i]
      if (u[i] != unit && u[i] != "us")
        printf "PROBLEM %s: unit=%s in %s mode (expected %s)\n", name[i], u[i], mode, unit
    }
    for (j = 1; j <= nb; j++) {
      b = bname[j]
      if (bsmp[b] > smp) continue
      if (!(b in seen)) { printf "PROBLEM %s: missing (listed in the baseline)\n", b; continue }
      if (!check || bmargin[b] == "-") continue
      i = seen[b]
      limit = bmed[b] * (1 + bmargin[b] / 100)
      if (med[i] + 0 > limit)
        printf "PROBLEM %s: median %d is worse than baseline %d by more than %s%%\n", b, med[i], bmed[b], bmargin[b]
      else
        printf "ok %s: median %d, baseline %d (+%s%% allowed)\n", b, med[i], bmed[b], bmargin[b]
    }
  }
' "$BASELINE" "$log" >"$OUT/table.txt"
grep -v -e '^PROBLEM ' -e '^ok ' "$OUT/table.txt"
if [[ $check -eq 1 ]]; then
  grep '^ok ' "$OUT/table.txt" | sed 's/^/bench: /' >&2 || true
fi
if grep -q '^PROBLEM ' "$OUT/table.txt"; then
  grep '^PROBLEM ' "$OUT/table.txt" | sed 's/^PROBLEM /bench: FAILED: /' >&2
  verdict=1
fi

if [[ $status -ne 0 ]]; then
  echo "bench: FAILED: the guest did not report success (runner exit $status)" >&2
  verdict=1
fi
exit $verdict

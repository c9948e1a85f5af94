#!/usr/bin/env bash
# Runs the in-tree syscall fuzzer (apps/fuzz) once and judges it:
#
#   scripts/fuzz.sh [--seed S] [--iters N] [--smp N] [--skip a,b] [--timeout SECS] [-- RUNNER FLAGS]
#
# Boots `init=fuzz fuzz.seed=S fuzz.iters=N [fuzz.skip=...] log=error` headless,
# keeps the transcript in target/fuzz/seed-S.log, prints every finding and the
# summary line, and exits 0 only if the guest reported success and the
# summary says `ok`. The default timeout allows about 1.5 ms per syscall
# plus two minutes (a million syscalls at -smp 4 took 76 s here; a heavily
# loaded 2-core host can make that several times longer).
#
# --skip takes the fuzzer's categories (huge, ldt, prio, exit_race, orphans,
# flip, hazards, storms); see the README's fuzzer section.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seed=1 iters=100000 smp=4 skip="" timeout=""
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --seed) seed=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --skip) skip=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
timeout=${timeout:-$((120 + iters * 3 / 2000))}
cmdline="init=fuzz fuzz.seed=$seed fuzz.iters=$iters log=error"
[[ -z $skip ]] || cmdline+=" fuzz.skip=$skip"

cargo build -q
mkdir -p target/fuzz
log=target/fuzz/seed-$seed.log
echo "fuzz.sh: seed=$seed iters=$iters smp=$smp skip=${skip:-none} timeout=${timeout}s; transcript in $log"
start=$SECONDS
status=0
target/debug/mica --headless --timeout "$timeout" --smp "$smp" --cmdline "$cmdline" "${extra[@]}" \
  </dev/null 2>&1 | sed -u -E $'s/\x1b\\[[0-9;?]*[A-Za-z]//g; s/\x1b[()][A-Z0-9]//g; s/\r//g' >"$log" \
  || status=$?
secs=$((SECONDS - start))
grep -a -E '^(\[pid [0-9]+\] )?fuzz: (FINDING|phase|seed=)|KERNEL PANIC|EXCEPTION' "$log" || true
summary=$(grep -a -E '^(\[pid [0-9]+\] )?fuzz: seed=[0-9]+ syscalls=' "$log" | tail -n 1 || true)
if [[ $status -eq 0 && $summary == *" ok" ]]; then
  echo "fuzz.sh: PASS in ${secs}s"
  exit 0
fi
echo "fuzz.sh: FAIL (runner exit $status after ${secs}s); last lines of $log:"
tail -n 15 "$log" | sed 's/^/    | /'
echo "reproduce: scripts/fuzz.sh --seed $seed --iters $iters --smp $smp${skip:+ --skip $skip}"
exit 1

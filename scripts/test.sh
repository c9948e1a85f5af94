#!/usr/bin/env bash
# Everything CI checks, in order: tools, host unit tests, formatting, the kernel's
# layering, clippy (host and kernel-side crates), the boot tests (scripts/smoke.sh, which check each
# suite's exact case count), then the benchmark check (scripts/bench.sh --check).
# Stops at the first failing stage and exits non-zero. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Host-testable crates (unit tests and host clippy).
HOST_CRATES=(mica kcore abi wire kv fuzz loader procmgr console)
# Crates built for x86_64-unknown-none (clippy for that target).
KERNEL_CRATES=(mica-kernel init libipc kv tests testkit bench fuzz loader hello procmgr console shell)

pkg_flags() {
  local c
  for c in "$@"; do printf -- '-p\n%s\n' "$c"; done
}
mapfile -t HOST_P < <(pkg_flags "${HOST_CRATES[@]}")
mapfile -t KERNEL_P < <(pkg_flags "${KERNEL_CRATES[@]}")

START=$SECONDS
CURRENT=""
stage() {
  CURRENT=$1
  printf '\n==> %s  [%ds]\n' "$1" $((SECONDS - START))
}
trap 'rc=$?; if [[ $rc -ne 0 ]]; then printf "\ntest.sh: FAILED at stage \"%s\" (exit %d, %ds)\n" "$CURRENT" "$rc" $((SECONDS - START)); fi' EXIT

stage "deps"
scripts/deps.sh

LOGS=$(mktemp -d)
trap_cleanup() { rm -rf "$LOGS"; }

stage "host unit tests (${HOST_CRATES[*]})"
cargo test "${HOST_P[@]}" 2>&1 | tee "$LOGS/unit.log"

# The ELF loader's host fuzzer (servers/loader/src/fuzz.rs): a seeded mutation
# loop for LOADER_FUZZ_SECS seconds (20 unless set); LOADER_FUZZ_SEED replays.
stage "loader fuzz (${LOADER_FUZZ_SECS:-20}s)"
cargo test -p loader --lib fuzz_timed -- --ignored --nocapture

stage "format (cargo fmt --check)"
cargo fmt --all -- --check

# The kernel's layering (DESIGN.md 6a): no file names a higher layer.
stage "kernel layering (scripts/layers.sh)"
scripts/layers.sh
scripts/layers-selftest.sh

stage "clippy, host (${HOST_CRATES[*]})"
cargo clippy "${HOST_P[@]}" --all-targets -- -D warnings

stage "clippy, x86_64-unknown-none (${KERNEL_CRATES[*]})"
cargo clippy --target x86_64-unknown-none "${KERNEL_P[@]}" -- -D warnings

stage "boot tests (scripts/smoke.sh)"
scripts/smoke.sh 2>&1 | tee "$LOGS/smoke.log"

# One icount run compared with scripts/bench-baseline.txt: a change that slows the
# syscall, switch or IPI path, or loses a figure, fails here.
stage "benchmarks against the baseline (scripts/bench.sh --check)"
BENCH_RUNNER=${CARGO_TARGET_DIR:-target}/debug/mica scripts/bench.sh --check

# One closing tally: every host unit test plus every boot case.
unit=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($i == "passed;") n += $(i - 1) } END { print n + 0 }' "$LOGS/unit.log")
boot=$(awk '/^[0-9]+ passed, [0-9]+ failed$/ { n = $1 } END { print n + 0 }' "$LOGS/smoke.log")
trap_cleanup
CURRENT="done"
printf '\ntest.sh: all stages passed in %ds (%d host unit tests, %d boot cases)\n' \
  $((SECONDS - START)) "$unit" "$boot"
printf 'total: %d passed, 0 failed\n' $((unit + boot))

#!/usr/bin/env bash
# Builds Mica and boots it in QEMU with the serial console on this terminal.
# Every argument goes to the runner (src/main.rs); see `scripts/run.sh --help`.
# The serial console is on this terminal: Ctrl-C goes to the guest, Ctrl-A x quits QEMU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/deps.sh >&2
exec cargo run -- "$@"

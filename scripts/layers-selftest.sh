#!/usr/bin/env bash
# Checks that scripts/layers.sh catches every way of writing an upward import:
# a copy of microkernel/src passes as it is, and fails once any one of the
# forms below is added: to a layer-2 file (mem/kstack.rs naming sched, layer
# 4), or, for the `sym` exception of the entry stubs, to an arch file.
#
#   scripts/layers-selftest.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r microkernel/src "$tmp/src"
cp "$tmp/src/mem/kstack.rs" "$tmp/kstack.orig"
cp "$tmp/src/arch/x86_64/cpu.rs" "$tmp/cpu.orig"

if ! scripts/layers.sh "$tmp/src" >/dev/null; then
    echo "layers-selftest: the unmodified tree fails layers.sh"
    exit 1
fi

# Each form on one line; `\n` separates the lines of a multi-line form.
forms=(
    'use crate::sched::yield_now;'
    'use crate::{sched::yield_now};'
    'use crate::{mem, sched};'
    'use crate::{\n    mem::DirectMem,\n    sched::yield_now,\n};'
    'use crate::{mem::{self, DirectMem}, sched::{yield_now}};'
    'use crate::*;'
    'use crate as root;'
    'fn f() { crate::sched::yield_now() }'
    'fn f() { super::super::sched::yield_now() }'
    # In arch (layer 0): a listed up-call only as a `sym` operand.
    'arch: core::arch::global_asm!("call {f}", f = sym crate::lifecycle::exit_current);'
    'arch: fn f() { let _ = "sym crate::interrupt::trap_dispatch"; crate::sched::yield_now() }'
    'arch: fn f() { crate::interrupt::trap_dispatch as usize }'
)
bad=0
for form in "${forms[@]}"; do
    cp "$tmp/kstack.orig" "$tmp/src/mem/kstack.rs"
    cp "$tmp/cpu.orig" "$tmp/src/arch/x86_64/cpu.rs"
    case "$form" in
    arch:*) printf '\n%b\n' "${form#arch: }" >>"$tmp/src/arch/x86_64/cpu.rs" ;;
    *) printf '\n%b\n' "$form" >>"$tmp/src/mem/kstack.rs" ;;
    esac
    if scripts/layers.sh "$tmp/src" >/dev/null 2>&1; then
        echo "layers-selftest: NOT caught: $form"
        bad=1
    fi
done
# A group that names only lower layers stays allowed.
cp "$tmp/kstack.orig" "$tmp/src/mem/kstack.rs"
cp "$tmp/cpu.orig" "$tmp/src/arch/x86_64/cpu.rs"
printf '\nuse crate::{arch::{self, mmu}, sync::IrqMutex};\n' >>"$tmp/src/mem/kstack.rs"
if ! scripts/layers.sh "$tmp/src" >/dev/null; then
    echo "layers-selftest: a group of lower-layer paths was refused"
    bad=1
fi
if [ "$bad" -ne 0 ]; then
    echo "layers-selftest: FAILED"
    exit 1
fi
echo "layers-selftest: ok (${#forms[@]} upward forms caught, a lower-layer group allowed)"

#!/usr/bin/env bash
# Checks that scripts/layers.sh catches every way of writing an upward import:
# a copy of microkernel/src passes as it is, and fails once any one of the
# forms below is added to a layer-2 file (mem/kstack.rs naming sched, layer 4).
#
#   scripts/layers-selftest.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r microkernel/src "$tmp/src"
cp "$tmp/src/mem/kstack.rs" "$tmp/kstack.orig"

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
)
bad=0
for form in "${forms[@]}"; do
    cp "$tmp/kstack.orig" "$tmp/src/mem/kstack.rs"
    printf '\n%b\n' "$form" >>"$tmp/src/mem/kstack.rs"
    if scripts/layers.sh "$tmp/src" >/dev/null 2>&1; then
        echo "layers-selftest: NOT caught: $form"
        bad=1
    fi
done
# A group that names only lower layers stays allowed.
cp "$tmp/kstack.orig" "$tmp/src/mem/kstack.rs"
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

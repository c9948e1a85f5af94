#!/bin/sh
# QEMU with a TB trace: every translated block's code (in_asm) and every execution (exec, nochain).
exec qemu-system-x86_64 "$@" -d in_asm,exec,nochain -D "${TRACE_DIR:-/tmp/trace}/qemu.log"

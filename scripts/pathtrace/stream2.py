#!/usr/bin/env python3
"""stream.py, but TBs keyed by QEMU's TB pointer (icount retranslates TBs at one pc with other lengths)."""
import sys, re
log, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bypc, byptr, cur, pending = {}, {}, None, {}
pat = re.compile(r'^Trace \d+: (\S+) \[[0-9a-f]+/([0-9a-f]+)/')
with open(log, 'r', errors='replace') as f:
    for n, line in enumerate(f, 1):
        if n >= end:
            break
        if line.startswith('IN:'):
            cur = []
            continue
        if cur is not None:
            if line.startswith('0x'):
                a, txt = line.split(':', 1)
                a = int(a, 16)
                if not cur or cur[-1][0] != a:
                    cur.append((a, txt.strip()))
                continue
            if cur:
                pending[cur[0][0]] = cur
            cur = None
        if line.startswith('Trace'):
            m = pat.match(line)
            if not m:
                continue
            ptr, pc = m.group(1), int(m.group(2), 16)
            if pc in pending:
                byptr[ptr] = pending.pop(pc)
            if n >= start:
                for a, t in byptr.get(ptr, [(pc, '?')]):
                    print(f'{a:x} {t}')

#!/usr/bin/env python3
"""Per-function instruction counts of a window of a QEMU -d in_asm,exec,nochain log.
usage: window.py LOG KERNEL_ELF START_LINE END_LINE DIVISOR [DEPTH]
Counts every instruction executed from START_LINE (an exec line) to END_LINE (excluded),
attributed to the innermost (DEPTH=0: outermost symbol) inline frame addr2line gives."""
import sys, subprocess, collections, re
log, elf, start, end, div = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
depth = int(sys.argv[6]) if len(sys.argv) > 6 else 0
tbs = {}
cur = None
seq = []
pat = re.compile(r'^Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/')
with open(log, 'r', errors='replace') as f:
    for n, line in enumerate(f, 1):
        if n >= end:
            break
        if line.startswith('IN:'):
            cur = []
            continue
        if cur is not None:
            if line.startswith('0x'):
                a = int(line.split(':', 1)[0], 16)
                if not cur or cur[-1] != a:
                    cur.append(a)
                continue
            if cur:
                tbs[cur[0]] = cur
            cur = None
        if n >= start and line.startswith('Trace'):
            m = pat.match(line)
            if m:
                pc = int(m.group(1), 16)
                seq.append(list(tbs.get(pc, [pc])))
addrs = sorted({a for tb in seq for a in tb if a >= 0xffff800000000000})
names = {}
if addrs:
    p = subprocess.run(['addr2line', '-f', '-i', '-C', '-a', '-e', elf], input='\n'.join(hex(a) for a in addrs), capture_output=True, text=True)
    blocks = p.stdout.split('\n0x')
    for b in blocks:
        ls = b.strip().split('\n')
        a = int(ls[0].replace('0x', ''), 16)
        fr = [ls[i] for i in range(1, len(ls), 2)]
        fr = [re.sub(r'<.*?>', '', x).replace('::{{closure}}', '{c}') for x in fr]
        # fr[0] innermost, fr[-1] outermost
        if depth == 0:
            names[a] = fr[-1]
        else:
            names[a] = ' > '.join(fr[::-1][:depth]) if len(fr) else '?'
cnt = collections.Counter()
order = []
for tb in seq:
    for a in tb:
        nm = names.get(a, 'user' if a < 0x800000000000 else hex(a))
        if nm not in cnt:
            order.append(nm)
        cnt[nm] += 1
tot = sum(cnt.values())
print(f'total {tot} / {div} = {tot/div:.1f}')
for nm in order:
    print(f'{cnt[nm]/div:8.1f}  {nm}')

#!/usr/bin/env python3
"""Annotates stream.py's output with addr2line's innermost frame and the outermost-but-ipc frame."""
import sys, re
a2l, stream = sys.argv[1], sys.argv[2]
info = {}
blk = open(a2l).read().split('\n0x')
for b in blk:
    ls = b.strip().split('\n')
    a = int(ls[0].replace('0x', ''), 16)
    fr = [(re.sub(r'<.*?>', '', ls[i]).replace('kernel::', ''), ls[i+1].split('/')[-1]) for i in range(1, len(ls)-1, 2)]
    info[a] = fr
for line in open(stream):
    a, t = line.split(' ', 1)
    a = int(a, 16)
    fr = info.get(a)
    if fr:
        inner = fr[0][0].split('::')[-1] + '@' + fr[0][1]
        outer = fr[-1][0].split('::')[-1]
        print(f'{a & 0xfffff:05x} {outer[:22]:22} {inner[:45]:45} {t.strip()[26:] if len(t)>26 else t.strip()}')
    else:
        print(f'{a:x} user {t.strip()}')

#!/usr/bin/env python3
"""Instructions per function of one IPC round trip, from a QEMU
`-d exec,nochain` log (docs/ipc.md section 5, "How the trace is taken").

usage: ipc-trace-steps.py TRACE KERNEL_ELF BENCH_ELF [ANCHOR_PC [FUNC | --inline DEPTH]]

The window is one period of ANCHOR_PC (a user address executed once per
round trip; default 0x201d6d, the bench client's loop head: check it with
objdump). Each logged TB is expanded into its instructions from the ELF's
disassembly: up to its first control transfer, or to the next logged PC
when that is its fall-through (TBs that end at a WRMSR, a CR write, ...);
one iteration of a `rep` string instruction counts one. The echo server's
code (copied from the bench's .rodata to 0x400000) is disassembled from
there. Prints the sequence of functions with their counts, then the sum
per function. FUNC: also list each executed TB of functions whose name
contains FUNC. --inline DEPTH: the count per inline chain (addr2line -i),
cut at DEPTH levels from the outermost function. Agrees with the bench's
icount figure to about 1% (the window differs by the rdtsc pair).
"""
import sys, subprocess, re, collections
log, kelf, uelf = sys.argv[1:4]
anchor = int(sys.argv[4],16) if len(sys.argv)>4 else 0x201d6d
def disasm(elf, extra=()):
    out = subprocess.run(["objdump","-d","--no-show-raw-insn","-M","intel","-C",*extra,elf],capture_output=True,text=True).stdout
    ins = {}; order=[]; fn=None; fnof={}
    for line in out.splitlines():
        m = re.match(r'^([0-9a-f]+) <(.*)>:$', line)
        if m: fn = m.group(2); continue
        m = re.match(r'^\s*([0-9a-f]+):\s+(.*)$', line)
        if m:
            a=int(m.group(1),16); ins[a]=m.group(2).strip(); order.append(a); fnof[a]=fn
    nxt = {order[i]:order[i+1] for i in range(len(order)-1)}
    return ins, nxt, fnof
K = disasm(kelf); U = disasm(uelf)
# the echo: copied to 0x400000 + offset from mica_bench_echo
E = disasm(uelf, ['-D','-j','.rodata','--start-address=0x200200','--stop-address=0x200292'])
echo=[0x200200]
CF = re.compile(r'^(j\w+|call|ret|syscall|sysret|iret|sysretq|iretq|hlt|wrmsr|mov\s+cr\d|rep|int|ud2|lret|swapgs|xrstor|xsave|invlpg|lock)\b')
ENDS = re.compile(r'^(j\w+|call|ret|syscall|sysret|iret|sysretq|iretq|hlt|ud2|lret|int)')
pcs = [int(l.split('/')[1],16) for l in open(log) if l.startswith('Trace')]
def tb(pc, nextpc):
    if pc >= 0xffffffff00000000: D = K
    elif 0x400000 <= pc < 0x401000:
        base=min(echo); D=E; pc = base + (pc-0x400000); nextpc = base + (nextpc-0x400000) if 0x400000<=nextpc<0x401000 else nextpc
    else: D = U
    ins, nxt, fnof = D
    n=0; a=pc; f=fnof.get(pc,'?')
    if ins.get(pc,'').startswith('rep') and nextpc == pc:
        return f, 1  # one iteration of a rep string instruction
    while a in ins:
        n+=1
        if ENDS.match(ins[a]): break
        b = nxt.get(a)
        if b == nextpc: break
        if b is None or n>200: break
        a=b
    return f, n
# one window: between the last two anchors
idx=[i for i,p in enumerate(pcs) if p==anchor]
i0,i1 = idx[-3], idx[-2]
tot=0; per=collections.OrderedDict(); seq=[]
for i in range(i0,i1):
    f,n = tb(pcs[i], pcs[i+1]); tot+=n
    per[f]=per.get(f,0)+n
    if seq and seq[-1][0]==f: seq[-1][1]+=n
    else: seq.append([f,n])
print("total", tot)
for f,n in seq: print(f"{n:5d}  {f}")
print("---- per function")
for f,n in sorted(per.items(), key=lambda x:-x[1]): print(f"{n:5d}  {f}")
if len(sys.argv)>5 and sys.argv[5]!='--inline':
    want=sys.argv[5]
    for i in range(i0,i1):
        pc=pcs[i]; nextpc=pcs[i+1]
        if pc < 0xffffffff00000000: continue
        ins,nxt,fnof=K
        if want not in fnof.get(pc,''): continue
        a=pc;n=0
        print('--- TB', hex(pc))
        while a in ins:
            n+=1; print('   ',hex(a)[-5:], ins[a][:90])
            if ENDS.match(ins[a]): break
            b=nxt.get(a)
            if b==nextpc or b is None or n>200: break
            a=b

def inline_breakdown():
    # every executed kernel instruction of the window, by its inline chain
    addrs=[]
    for i in range(i0,i1):
        pc=pcs[i]; nextpc=pcs[i+1]
        if pc < 0xffffffff00000000: continue
        ins,nxt,fnof=K
        if ins.get(pc,'').startswith('rep') and nextpc==pc:
            addrs.append(pc); continue
        a=pc;n=0
        while a in ins:
            n+=1; addrs.append(a)
            if ENDS.match(ins[a]): break
            b=nxt.get(a)
            if b==nextpc or b is None or n>200: break
            a=b
    uniq=sorted(set(addrs))
    # addr2line -i prints a variable number of (func, file) pairs per
    # address; -a prints the address first, as the delimiter.
    out=subprocess.run(["addr2line","-a","-f","-i","-C","-e",kelf]+[hex(a) for a in uniq],capture_output=True,text=True).stdout.splitlines()
    chains={}; cur=None
    j=0
    while j < len(out):
        l=out[j]
        if l.startswith('0x'):
            cur=int(l,16); chains[cur]=[]; j+=1; continue
        fn=l; loc=out[j+1] if j+1<len(out) else ''
        chains[cur].append((fn,loc)); j+=2
    tally=collections.Counter()
    depth=int(sys.argv[6]) if len(sys.argv)>6 else 2
    for a in addrs:
        ch=[f for f,_ in chains.get(a,[])]  # innermost first
        ch=list(reversed(ch))               # outermost first
        key=' > '.join(x.split('::')[-1] if '::' in x else x for x in ch[:depth])
        tally[key]+=1
    for k,n in tally.most_common(): print(f"{n:5d}  {k}")
if len(sys.argv)>5 and sys.argv[5]=='--inline':
    inline_breakdown()

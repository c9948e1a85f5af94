//! CPU state ring 3 must never be able to use or disturb: the LDT (a null one:
//! every TI=1 selector raises #GP), the lowest mappable address (64 KiB),
//! RFLAGS.AC (set by ring 3, it must never reach a kernel handler), NMIs
//! landing in ring 3 (never the thread's fault), and TSC_AUX (the CPU id).
//!
//! The LDT cases are the regression tests of a ring-0 escape: with LDTR left
//! at its reset value (base 0, limit 0xffff) and page 0xf000 mappable, a
//! DPL-3 call gate written at 0xffe8 let `lcall 0xffef` run the caller's code
//! at CPL 0 (on a CPU without SMEP/SMAP; with SMAP the descriptor read merely
//! page-faulted). They run under `-cpu max` and `--cpu qemu64` (smoke cases
//! `tests-smp*` and `xapic-smp4`).

use crate::note;
use crate::util::{self, arg_of, expect_fault, expect_ok, from_arg, run, TestResult};
use abi::{prot, Error, Sysnum};
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::sys;

/// The lowest address a process may map (`abi::layout::USER_MIN`).
const USER_MIN: u64 = abi::layout::USER_MIN;
/// The page below USER_MIN where the reset LDT would find its descriptors.
const BELOW_MIN: u64 = 0xf000;
/// The kernel's 64-bit code selector (what a forged gate would target).
const KERNEL_CS: u64 = 0x08;
/// RFLAGS.AC.
const AC: u64 = 1 << 18;
/// RFLAGS.TF.
const TF: u64 = 1 << 8;

/// Loads selector `arg & 0xffff` into the segment register `arg >> 16` (0 DS,
/// 1 ES, 2 FS, 3 GS, 4 SS); exits 0 if that did not fault.
extern "C" fn load_selector(arg: u64) -> ! {
    let sel = arg as u16;
    // SAFETY: loading a TI=1 selector with a null LDT raises #GP before
    // anything changes; if it did not, this thread only exits.
    unsafe {
        match arg >> 16 {
            0 => asm!("mov ds, {0:x}", in(reg) sel, options(nostack)),
            1 => asm!("mov es, {0:x}", in(reg) sel, options(nostack)),
            2 => asm!("mov fs, {0:x}", in(reg) sel, options(nostack)),
            3 => asm!("mov gs, {0:x}", in(reg) sel, options(nostack)),
            _ => asm!("mov ss, {0:x}", in(reg) sel, options(nostack)),
        }
    }
    sys::thread_exit(0)
}

/// Loading an LDT selector (TI=1) into any segment register raises #GP: the
/// LDT is null. With the reset LDT it was a #PF at a low address instead.
pub fn ldt_selectors_raise_gp() -> TestResult {
    const REGS: [&str; 5] = ["ds", "es", "fs", "gs", "ss"];
    for sel in [0x7u64, 0xfff7] {
        for (i, reg) in REGS.iter().enumerate() {
            let st = run(load_selector, sel | (i as u64) << 16)?;
            if let Err(e) = expect_fault(st, &[13]) {
                note!("mov {reg}, 0x{sel:x}");
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Nothing below 64 KiB can be mapped, or named as a thread's entry point.
pub fn nothing_maps_below_64k() -> TestResult {
    for (addr, len) in [
        (BELOW_MIN, 4096),
        (0x1000, 4096),
        (BELOW_MIN, 0x2000),
        (0, 0x10000),
    ] {
        let r = sys::map_anon(addr, len, prot::WRITE);
        if r.is_ok() {
            // SAFETY: nothing references the range just mapped by mistake; it
            // must not stay (the call-gate case maps it itself).
            let _ = unsafe { sys::unmap(addr, len) };
        }
        util::expect_err(
            r,
            &[Error::BadAddress],
            "a mapping below 0x10000 was not refused",
        )?;
    }
    // SAFETY: the thread never starts (refused), or faults at once.
    let r = unsafe { util::spawn_at(0x1000, 0) };
    if let Ok(t) = r {
        let _ = t.join();
        return Err("a thread entry below 0x10000 was accepted");
    }
    sys::map_anon(USER_MIN, 4096, prot::WRITE).map_err(|e| {
        note!("map_anon(0x{USER_MIN:x}): {e}");
        "the lowest allowed page cannot be mapped"
    })?;
    // SAFETY: nothing references the page.
    let _ = unsafe { sys::unmap(USER_MIN, 4096) };
    Ok(())
}

/// Set by [`cpu_state_cpl0_probe`] if it ever runs (it stores CR3).
static CPL0_MARKER: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    // The target of the forged call gate: reading CR3 succeeds only at CPL
    // 0; the value goes to CPL0_MARKER (rdi), then lretq returns to ring 3
    // through the frame the gate pushed.
    .global cpu_state_cpl0_probe
cpu_state_cpl0_probe:
    mov rax, cr3                            // rax: CR3 (faults at CPL 3)
    mov [rdi], rax                          // CPL0_MARKER := CR3
    .byte 0x48, 0xcb                        // lretq
    "#
);

extern "C" {
    fn cpu_state_cpl0_probe();
}

/// `lcall` through selector `arg` (a far pointer whose offset a call gate
/// ignores); exits 0 if it came back.
extern "C" fn lcall_selector(arg: u64) -> ! {
    // m16:32 far pointer: 4 bytes of offset, then the selector.
    let mut far = [0u8; 6];
    far[4..].copy_from_slice(&(arg as u16).to_le_bytes());
    // SAFETY: with a null LDT the far call raises #GP; through a forged gate
    // it would run cpu_state_cpl0_probe, which returns here (clobbering rax).
    unsafe {
        asm!(
            ".byte 0xff, 0x18",                 // call far [rax]: through the selector
            inout("rax") far.as_ptr() => _,    // rax: the far pointer; CR3 if the probe ran
            in("rdi") CPL0_MARKER.as_ptr(),    // rdi: where the probe writes
        );
    }
    sys::thread_exit(0)
}

/// A present DPL-3 64-bit call gate to `target` in the kernel code segment.
fn call_gate(target: u64) -> [u64; 2] {
    let low = (target & 0xffff)
        | KERNEL_CS << 16
        | 0xec << 40 // present, DPL 3, type 0xc: 64-bit call gate
        | ((target >> 16) & 0xffff) << 48;
    [low, target >> 32]
}

/// Writes a gate to the probe at `addr` (mapped writable by the caller).
fn plant_gate(addr: u64) {
    let gate = call_gate(cpu_state_cpl0_probe as *const () as u64);
    // SAFETY: the caller mapped the page writable for this case alone.
    unsafe { core::ptr::copy_nonoverlapping(gate.as_ptr(), addr as *mut u64, 2) };
}

/// A DPL-3 call gate written where ring 3 can write is never used: `lcall`
/// through TI=1 selectors raises #GP and the gated code never runs at CPL 0.
/// Gates are planted at 0xf000 and 0xffe8 (where the reset LDT, base 0 limit
/// 0xffff, would read the descriptors of selectors 0xf007 and 0xffef) if that
/// page can be mapped, which must fail, and at the lowest page that can.
/// (0xffe8, not 0xfff0: QEMU looks for a 64-bit gate's upper half through
/// selector + 8, which for 0xfff7 lands past the limit.)
pub fn ldt_call_gate_is_never_used() -> TestResult {
    let mut verdict = Ok(());
    let low_mapped = sys::map_anon(BELOW_MIN, 4096, prot::WRITE).is_ok();
    if low_mapped {
        verdict = Err("page 0xf000 (below USER_MIN) could be mapped");
        plant_gate(BELOW_MIN);
        plant_gate(BELOW_MIN + 0xfe8);
    }
    let min_mapped = sys::map_anon(USER_MIN, 4096, prot::WRITE).is_ok();
    if min_mapped {
        plant_gate(USER_MIN);
    }
    for sel in [0xffefu64, 0xf007, 0xfff7, 0x7] {
        CPL0_MARKER.store(0, Ordering::SeqCst);
        let st = run(lcall_selector, sel);
        let cr3 = CPL0_MARKER.load(Ordering::SeqCst);
        if cr3 != 0 {
            note!("lcall 0x{sel:x}:0 ran user code at CPL 0 (it read CR3 = 0x{cr3:x})");
            verdict = Err("ring-3 code ran at CPL 0 through an LDT call gate");
            break;
        }
        if let Err(e) = st.and_then(|s| expect_fault(s, &[13])) {
            note!("lcall 0x{sel:x}:0");
            verdict = verdict.and(Err(e));
            break;
        }
    }
    // SAFETY: the threads that used the pages have ended.
    unsafe {
        if low_mapped {
            let _ = sys::unmap(BELOW_MIN, 4096);
        }
        if min_mapped {
            let _ = sys::unmap(USER_MIN, 4096);
        }
    }
    verdict
}

// Register sentinels of `cpu_state_spin` (rbx rbp rsi rdi r8-r15).
const S: [u64; 12] = [
    0xa5a5_0000_0000_00b1,
    0xa5a5_0000_0000_00b2,
    0xa5a5_0000_0000_0051,
    0xa5a5_0000_0000_00d1,
    0xa5a5_0000_0000_0008,
    0xa5a5_0000_0000_0009,
    0xa5a5_0000_0000_0010,
    0xa5a5_0000_0000_0011,
    0xa5a5_0000_0000_0012,
    0xa5a5_0000_0000_0013,
    0xa5a5_0000_0000_0014,
    0xa5a5_0000_0000_0015,
];

global_asm!(
    r#"
    // cpu_state_spin(rdi = TSC deadline) -> never returns: sets RFLAGS.AC,
    // loads sentinels into rbx rbp rsi rdi r8-r15, spins on rdtsc until the
    // deadline (interrupts and NMIs land here meanwhile), then checks every
    // sentinel and that AC is still set, and exits with 0 or with the number
    // of the first check that failed (1-12 registers, 13 AC).
    .global cpu_state_spin
cpu_state_spin:
    push rdi                                // [rsp]: the deadline
    pushfq
    or qword ptr [rsp], {ac}                // AC on: ring 3 may set it
    popfq
    movabs rbx, {s0}
    movabs rbp, {s1}
    movabs rsi, {s2}
    movabs rdi, {s3}
    movabs r8, {s4}
    movabs r9, {s5}
    movabs r10, {s6}
    movabs r11, {s7}
    movabs r12, {s8}
    movabs r13, {s9}
    movabs r14, {s10}
    movabs r15, {s11}
2:  rdtsc                                   // edx:eax: TSC (rax, rdx are scratch)
    shl rdx, 32
    or rax, rdx                             // rax: the TSC
    cmp rax, [rsp]
    jb 2b
    movabs rax, {s0}
    cmp rbx, rax
    mov ecx, 1                              // ecx: the check's number (flags kept)
    jne 9f
    movabs rax, {s1}
    cmp rbp, rax
    mov ecx, 2
    jne 9f
    movabs rax, {s2}
    cmp rsi, rax
    mov ecx, 3
    jne 9f
    movabs rax, {s3}
    cmp rdi, rax
    mov ecx, 4
    jne 9f
    movabs rax, {s4}
    cmp r8, rax
    mov ecx, 5
    jne 9f
    movabs rax, {s5}
    cmp r9, rax
    mov ecx, 6
    jne 9f
    movabs rax, {s6}
    cmp r10, rax
    mov ecx, 7
    jne 9f
    movabs rax, {s7}
    cmp r11, rax
    mov ecx, 8
    jne 9f
    movabs rax, {s8}
    cmp r12, rax
    mov ecx, 9
    jne 9f
    movabs rax, {s9}
    cmp r13, rax
    mov ecx, 10
    jne 9f
    movabs rax, {s10}
    cmp r14, rax
    mov ecx, 11
    jne 9f
    movabs rax, {s11}
    cmp r15, rax
    mov ecx, 12
    jne 9f
    pushfq
    pop rax                                 // rax: RFLAGS now
    mov ecx, 13
    test eax, {ac}                          // AC still set (restored by every iretq)?
    jz 9f
    xor ecx, ecx                            // ecx: 0 = every check passed
9:  pushfq
    and qword ptr [rsp], {not_ac}           // AC off again
    popfq
    mov edi, ecx                            // rdi: exit code
    mov eax, {exit}                         // rax: thread_exit
    syscall
    ud2
    "#,
    ac = const AC,
    not_ac = const !AC as i64,
    exit = const Sysnum::ThreadExit as u64,
    s0 = const S[0],
    s1 = const S[1],
    s2 = const S[2],
    s3 = const S[3],
    s4 = const S[4],
    s5 = const S[5],
    s6 = const S[6],
    s7 = const S[7],
    s8 = const S[8],
    s9 = const S[9],
    s10 = const S[10],
    s11 = const S[11],
);

extern "C" {
    fn cpu_state_spin(deadline: u64) -> !;
}

/// Where a pinned spinner runs and until when.
struct SpinArg {
    cpu: u64,
    deadline: u64,
}

/// Pins itself to `arg.cpu`, then becomes [`cpu_state_spin`].
extern "C" fn pinned_spin(arg: u64) -> ! {
    // SAFETY: the spawner passes a SpinArg it keeps alive until the join.
    let a: &mut SpinArg = unsafe { from_arg(arg) };
    if sys::set_affinity(a.cpu).is_err() {
        sys::thread_exit(100);
    }
    let deadline = a.deadline;
    // SAFETY: cpu_state_spin never returns and uses only this thread's stack.
    unsafe { cpu_state_spin(deadline) }
}

/// Runs one pinned spinner on every CPU for `ms` milliseconds and checks
/// each kept its registers and RFLAGS.AC.
fn spin_everywhere(ms: u64) -> TestResult {
    let cpus = sys::cpu_count().clamp(1, 8);
    let mut args: [SpinArg; 8] = core::array::from_fn(|i| SpinArg {
        cpu: i as u64,
        deadline: 0,
    });
    let deadline = util::deadline_ms(ms);
    let mut threads: [Option<util::Thread>; 8] = Default::default();
    for i in 0..cpus as usize {
        args[i].deadline = deadline;
        threads[i] = Some(util::spawn(pinned_spin, arg_of(&mut args[i]))?);
    }
    let mut verdict = Ok(());
    for (i, slot) in threads.iter_mut().enumerate() {
        let Some(t) = slot.take() else { continue };
        let st = t.join()?;
        if let Err(e) = expect_ok(st) {
            note!("spinner on CPU {i}: exit code = failed check (1-12 register, 13 AC)");
            verdict = verdict.and(Err(e));
        }
    }
    verdict
}

/// Sets RFLAGS.AC and TF (or runs `icebp`/`int3`) in ring 3: the thread ends
/// with #DB or #BP, and the handler that ends it ran with AC clear.
extern "C" fn trap_with_ac(which: u64) -> ! {
    // SAFETY: each variant traps at once and the kernel ends the thread; no
    // memory is touched but this thread's stack.
    unsafe {
        match which {
            0 => asm!(
                "pushfq",
                "or qword ptr [rsp], {f}",      // AC and TF on
                "popfq",
                "nop",                          // single-step trap after here
                f = const AC | TF,
            ),
            1 => asm!(
                "pushfq",
                "or qword ptr [rsp], {ac}",
                "popfq",
                ".byte 0xf1",                   // icebp: #DB through the IDT, no DPL check
                ac = const AC,
            ),
            _ => asm!(
                "pushfq",
                "or qword ptr [rsp], {ac}",
                "popfq",
                "int3",                         // #BP through the DPL-3 gate
                ac = const AC,
            ),
        }
    }
    sys::thread_exit(0)
}

/// RFLAGS.AC set in ring 3 never reaches a kernel handler: the timer
/// interrupts a spinner holding AC (the kernel panics if a handler runs with
/// AC set while SMAP is on), and #DB/#BP taken with AC set go through both
/// entry paths. Without SMAP the kernel cannot check (`clac` does not exist),
/// and the case checks only that AC survives.
pub fn ac_set_in_ring3_never_reaches_the_kernel() -> TestResult {
    let (_, ebx, _, _) = {
        let r = core::arch::x86_64::__cpuid_count(7, 0);
        (r.eax, r.ebx, r.ecx, r.edx)
    };
    if ebx & (1 << 20) == 0 {
        note!("no SMAP on this CPU: only AC's survival is checked");
    }
    let mut arg = SpinArg {
        cpu: 0,
        deadline: util::deadline_ms(30),
    };
    expect_ok(run(pinned_spin, arg_of(&mut arg))?)?;
    for (which, vector, what) in [(0, 1, "TF"), (1, 1, "icebp"), (2, 3, "int3")] {
        if let Err(e) = expect_fault(run(trap_with_ac, which)?, &[vector]) {
            note!("{what} with AC set");
            return Err(e);
        }
    }
    Ok(())
}

/// A spinner on every CPU keeps its registers and AC for 200 ms while
/// interrupts, and in the `nmi-storm-smp4` boot case NMIs, land on it: an NMI
/// in ring 3 is never the thread's fault.
pub fn nmi_in_ring3_leaves_threads_intact() -> TestResult {
    spin_everywhere(200)
}

/// Whether RDTSCP and RDPID exist (CPUID).
fn rdtscp_rdpid() -> (bool, bool) {
    let ext = core::arch::x86_64::__cpuid_count(0x8000_0000, 0).eax;
    let rdtscp = ext >= 0x8000_0001
        && core::arch::x86_64::__cpuid_count(0x8000_0001, 0).edx & (1 << 27) != 0;
    let max = core::arch::x86_64::__cpuid_count(0, 0).eax;
    let rdpid = max >= 7 && core::arch::x86_64::__cpuid_count(7, 0).ecx & (1 << 22) != 0;
    (rdtscp, rdpid)
}

/// RDTSCP and RDPID report the CPU id (TSC_AUX is set at boot on every CPU).
pub fn tsc_aux_is_the_cpu_id() -> TestResult {
    let (rdtscp, rdpid) = rdtscp_rdpid();
    if !rdtscp && !rdpid {
        note!("no RDTSCP or RDPID on this CPU: nothing to check");
        return Ok(());
    }
    for cpu in 0..sys::cpu_count() {
        sys::set_affinity(cpu).map_err(|_| "set_affinity failed")?;
        if sys::cpu_id() != cpu {
            return Err("set_affinity did not move the thread");
        }
        if rdtscp {
            let aux: u32;
            // SAFETY: RDTSCP only reads the TSC and TSC_AUX.
            unsafe {
                asm!("rdtscp", out("eax") _, out("edx") _, out("ecx") aux, options(nomem, nostack))
            };
            if u64::from(aux) != cpu {
                note!("CPU {cpu}: RDTSCP reported {aux}");
                return Err("RDTSCP does not report the CPU id");
            }
        }
        if rdpid {
            let aux: u64;
            // SAFETY: RDPID only reads TSC_AUX.
            unsafe { asm!("rdpid {}", out(reg) aux, options(nomem, nostack)) };
            if aux != cpu {
                note!("CPU {cpu}: RDPID reported {aux}");
                return Err("RDPID does not report the CPU id");
            }
        }
    }
    let _ = sys::set_affinity(u64::MAX);
    Ok(())
}

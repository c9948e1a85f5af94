//! Cases where ring 3 does something it may not: each runs in its own
//! thread, which the CPU exception must stop (and only that thread).

use crate::note;
use crate::util::{self, run_expect_fault, Entry, TestResult};
use abi::{prot, Error};
use core::arch::asm;
use libipc::sys;

/// A canonical kernel-half address (inside the kernel image's window).
pub const KERNEL_ADDR: u64 = 0xffff_ffff_8010_0000;
/// The first non-canonical address above the user half.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

/// Defines `extern "C" fn $name(_: u64) -> !` that runs one asm block (which
/// must fault) and exits 0 if it did not.
macro_rules! fault_entry {
    ($(#[$doc:meta])* $name:ident => $($asm:tt)*) => {
        $(#[$doc])*
        extern "C" fn $name(_arg: u64) -> ! {
            // SAFETY: the instruction is privileged or touches memory ring 3
            // cannot reach, so the CPU raises an exception before it has any
            // effect, and the kernel ends this thread.
            unsafe { asm!($($asm)*) };
            sys::thread_exit(0)
        }
    };
}

fault_entry!(
    /// Reads a kernel address.
    read_kernel => "mov {t}, qword ptr [{a}]", a = in(reg) KERNEL_ADDR, t = out(reg) _,
    options(nostack)
);
fault_entry!(
    /// Writes a kernel address.
    write_kernel => "mov qword ptr [{a}], {a}", a = in(reg) KERNEL_ADDR, options(nostack)
);
fault_entry!(
    /// Reads address 0 (page 0 is never mapped).
    read_null => "mov {t}, qword ptr [{a}]", a = in(reg) 0u64, t = out(reg) _,
    options(nostack)
);
fault_entry!(
    /// Reads the first non-canonical address.
    read_non_canonical => "mov {t}, qword ptr [{a}]", a = in(reg) NON_CANONICAL,
    t = out(reg) _, options(nostack)
);
fault_entry!(
    /// Jumps into the kernel half.
    jump_kernel => "jmp {a}", a = in(reg) KERNEL_ADDR, options(nostack)
);
fault_entry!(
    /// `ud2`: #UD.
    do_ud2 => "ud2", options(nomem, nostack)
);
fault_entry!(cli => "cli", options(nomem, nostack));
fault_entry!(sti => "sti", options(nomem, nostack));
fault_entry!(hlt => "hlt", options(nomem, nostack));
fault_entry!(read_cr3 => "mov {t}, cr3", t = out(reg) _, options(nomem, nostack));
fault_entry!(write_cr3 => "mov cr3, {t}", t = in(reg) 0u64, options(nomem, nostack));
fault_entry!(read_dr7 => "mov {t}, dr7", t = out(reg) _, options(nomem, nostack));
fault_entry!(write_dr7 => "mov dr7, {t}", t = in(reg) 0x3u64, options(nomem, nostack));
fault_entry!(rdmsr => "rdmsr", in("ecx") 0x10u32, out("eax") _, out("edx") _,
    options(nomem, nostack));
fault_entry!(wrmsr => "wrmsr", in("ecx") 0xc000_0082u32, in("eax") 0u32, in("edx") 0u32,
    options(nomem, nostack));
fault_entry!(port_in => "in al, 0x80", out("al") _, options(nomem, nostack));
fault_entry!(port_out => "out 0x80, al", in("al") 0u8, options(nomem, nostack));
fault_entry!(swapgs => "swapgs", options(nomem, nostack));
fault_entry!(invlpg => "invlpg [{a}]", a = in(reg) 0x1000u64, options(nostack));
fault_entry!(sysretq => "sysretq", out("rcx") _, out("r11") _, options(nomem, nostack));
fault_entry!(int_0e => "int 0x0e", options(nomem, nostack));
fault_entry!(int_08 => "int 0x08", options(nomem, nostack));
fault_entry!(int_20 => "int 0x20", options(nomem, nostack));
fault_entry!(int_80 => "int 0x80", options(nomem, nostack));
fault_entry!(int_ff => "int 0xff", options(nomem, nostack));
fault_entry!(int3 => "int3", options(nomem, nostack));
fault_entry!(
    sgdt => "sgdt [{a}]", a = in(reg) core::ptr::addr_of_mut!(SCRATCH), options(nostack)
);
fault_entry!(
    sidt => "sidt [{a}]", a = in(reg) core::ptr::addr_of_mut!(SCRATCH), options(nostack)
);
fault_entry!(smsw => "smsw {t:e}", t = out(reg) _, options(nomem, nostack));

/// Where `sgdt`/`sidt` would write if UMIP were off (never read).
static mut SCRATCH: [u64; 2] = [0; 2];

/// Case 7: reading or writing the kernel half, address 0 or a non-canonical
/// address stops the thread (#PF; #GP or #PF for non-canonical).
pub fn user_cannot_read_kernel_memory() -> TestResult {
    run_expect_fault(read_kernel, &[14])?;
    run_expect_fault(write_kernel, &[14])?;
    run_expect_fault(read_null, &[14])?;
    run_expect_fault(read_non_canonical, &[13, 14])
}

/// Case 8: jumping to a kernel address stops the thread with #PF.
pub fn user_cannot_jump_to_kernel() -> TestResult {
    run_expect_fault(jump_kernel, &[14])
}

/// Case 12: `ud2` stops the thread with #UD.
pub fn ud2_faults_thread_only() -> TestResult {
    run_expect_fault(do_ud2, &[6])?;
    if sys::null() != 0 {
        return Err("the main thread is not well after a #UD");
    }
    Ok(())
}

/// Case 11: privileged instructions stop the thread with #GP (or #UD where
/// the instruction does not exist for ring 3). `wbinvd` is left out: QEMU
/// 10's TCG runs it in ring 3 without #GP (a QEMU bug, not the kernel's:
/// no control bit lets ring 3 run it).
pub fn privileged_instructions_fault() -> TestResult {
    const GP: &[u8] = &[13];
    let table: [(&str, Entry, &[u8]); 24] = [
        ("cli", cli, GP),
        ("sti", sti, GP),
        ("hlt", hlt, GP),
        ("mov from cr3", read_cr3, GP),
        ("mov to cr3", write_cr3, GP),
        ("mov from dr7", read_dr7, GP),
        ("mov to dr7", write_dr7, GP),
        ("rdmsr", rdmsr, GP),
        ("wrmsr", wrmsr, GP),
        ("in", port_in, GP),
        ("out", port_out, GP),
        ("swapgs", swapgs, GP),
        ("invlpg", invlpg, GP),
        ("sysretq", sysretq, GP),
        // Software interrupts through DPL-0 gates: #GP, never the handler.
        ("int 0x0e", int_0e, GP),
        ("int 0x08", int_08, GP),
        ("int 0x20", int_20, GP),
        ("int 0x80", int_80, GP),
        ("int 0xff", int_ff, GP),
        // #BP if the kernel gives int3 a DPL-3 gate, else #GP.
        ("int3", int3, &[3, 13]),
        // UMIP: only checked below when the CPU has it.
        ("sgdt", sgdt, GP),
        ("sidt", sidt, GP),
        ("smsw", smsw, GP),
        ("ud2", do_ud2, &[6]),
    ];
    let umip = util::has_umip();
    if !umip {
        note!("no UMIP on this CPU: sgdt/sidt/smsw skipped");
    }
    for (name, entry, vectors) in table {
        if !umip && matches!(name, "sgdt" | "sidt" | "smsw") {
            continue;
        }
        if let Err(e) = run_expect_fault(entry, vectors) {
            note!("instruction: {name}");
            return Err(e);
        }
    }
    Ok(())
}

/// Where [`syscall_in_last_user_page`] puts its code.
const LAST_PAGE: u64 = 0x0000_7fff_ffff_f000;

/// Case 6: a `syscall` whose last byte ends the user half returns to a
/// non-canonical RIP; the kernel must not `sysret` there (CVE-2012-0217)
/// and the thread ends with the kernel's #GP (counted: a SYSRET there
/// faults in ring 3 under TCG too, [`util::expect_rip_refused`]).
pub fn syscall_in_last_user_page() -> TestResult {
    // The last page is an ordinary user page: refusing it would be a bug
    // of its own, and would leave this case nothing to check.
    if let Err(e) = sys::map_anon(LAST_PAGE, 4096, prot::WRITE) {
        note!("map_anon(last page): {e}");
        return Err("map_anon of the last user page failed");
    }
    // mov eax, 20 (Null) ; syscall -- ending exactly at USER_END.
    let code: [u8; 7] = [0xb8, abi::Sysnum::Null as u8, 0, 0, 0, 0x0f, 0x05];
    let start = LAST_PAGE + 4096 - code.len() as u64;
    // SAFETY: the page was just mapped writable and nothing else uses it.
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), start as *mut u8, code.len()) };
    // SAFETY: nothing holds a reference into the page.
    if let Err(e) = unsafe { sys::protect(LAST_PAGE, 4096, prot::EXEC) } {
        note!("protect(last page, EXEC): {e}");
        let _ = unsafe_unmap(LAST_PAGE);
        return Err("protect to EXEC failed");
    }
    let refused = util::rip_refusals();
    // SAFETY: the thread runs the two instructions above and then faults.
    let r = match unsafe { util::spawn_at(start, 0) } {
        Ok(t) => t
            .join()
            .and_then(|st| util::expect_rip_refused(st, refused)),
        Err(e) => {
            note!("thread_spawn: {e}");
            Err("thread_spawn at the last page failed")
        }
    };
    let _ = unsafe_unmap(LAST_PAGE);
    r?;
    if sys::null() != 0 {
        return Err("the main thread is not well afterwards");
    }
    Ok(())
}

/// Unmaps one test page nothing references any more.
fn unsafe_unmap(addr: u64) -> Result<u64, Error> {
    // SAFETY: callers pass pages only their own case used, after its threads ended.
    unsafe { sys::unmap(addr, 4096) }
}

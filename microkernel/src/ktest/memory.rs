//! ktests of memory: frames, the heap, kernel mappings and their
//! protections, kernel stacks.

use super::check;
use crate::arch::probe;
use crate::mem::{self, kstack::KernelStack, layout};
use alloc::boxed::Box;
use alloc::vec::Vec;
use kcore::paging::{PageSize, PteFlags};

pub(super) fn frames_are_distinct_and_hold_data() -> Result<(), &'static str> {
    let before = mem::free_frames();
    let mut frames = Vec::new();
    for i in 0..512u64 {
        let f = mem::alloc_frame().map_err(|_| "allocation failed")?;
        // SAFETY: the frame is ours until freed below; the direct map covers it.
        unsafe { *(mem::phys_to_virt(f.addr()) as *mut u64) = i ^ 0x5a5a_5a5a };
        frames.push(f);
    }
    let mut addrs: Vec<u64> = frames.iter().map(|f| f.addr()).collect();
    addrs.sort_unstable();
    addrs.dedup();
    check(addrs.len() == frames.len(), "a frame was handed out twice")?;
    for (i, f) in frames.iter().enumerate() {
        // SAFETY: as above.
        let v = unsafe { *(mem::phys_to_virt(f.addr()) as *const u64) };
        check(v == i as u64 ^ 0x5a5a_5a5a, "frame contents changed")?;
    }
    check(mem::free_frames() == before - 512, "free count is off")?;
    for f in frames {
        mem::free_frame(f).map_err(|_| "free failed")?;
    }
    check(mem::free_frames() == before, "free count not restored")
}

pub(super) fn double_free_is_refused() -> Result<(), &'static str> {
    let f = mem::alloc_frame().map_err(|_| "allocation failed")?;
    mem::free_frame(f).map_err(|_| "first free failed")?;
    check(mem::free_frame(f).is_err(), "second free accepted")
}

pub(super) fn heap_serves_small_and_large_blocks() -> Result<(), &'static str> {
    let v: Vec<u64> = (0..10_000).collect();
    check(v.iter().sum::<u64>() == 49_995_000, "vector contents wrong")?;
    let big = alloc::vec![0xa5u8; 1 << 20].into_boxed_slice();
    check(big.iter().all(|&b| b == 0xa5), "large block contents wrong")?;
    let boxes: Vec<Box<u32>> = (0..1000).map(Box::new).collect();
    check(
        boxes.iter().enumerate().all(|(i, b)| **b == i as u32),
        "boxes wrong",
    )?;
    drop((v, big, boxes));
    let (used, _) = mem::heap::stats();
    check(used < 1 << 20, "heap memory not returned")
}

/// A kernel virtual address no mapping uses (PML4 entry 508).
const TEST_VA: u64 = 0xffff_fe00_0000_0000;

pub(super) fn map_write_translate_unmap() -> Result<(), &'static str> {
    let f = mem::alloc_zeroed_frame().map_err(|_| "allocation failed")?;
    let flags = PteFlags::WRITABLE | mem::nx_flag();
    mem::with_kernel_pt(|pt, m| pt.map(m, TEST_VA, f.addr(), PageSize::Size4K, flags))
        .map_err(|_| "map failed")?;
    // SAFETY: TEST_VA was just mapped to a frame only this test uses.
    unsafe { *((TEST_VA + 8) as *mut u64) = 0xfeed_f00d };
    // SAFETY: the same frame through the direct map.
    let via_direct = unsafe { *((mem::phys_to_virt(f.addr()) + 8) as *const u64) };
    check(
        via_direct == 0xfeed_f00d,
        "write not visible through the direct map",
    )?;
    let t = mem::with_kernel_pt(|pt, m| pt.translate(m, TEST_VA + 8));
    check(
        t.map(|(pa, _, _)| pa) == Some(f.addr() + 8),
        "translate is wrong",
    )?;
    let (pa, _) = mem::with_kernel_pt(|pt, m| pt.unmap(m, TEST_VA)).map_err(|_| "unmap failed")?;
    mem::flush_local(TEST_VA);
    check(pa == f.addr(), "unmap returned another frame")?;
    check(
        probe::read_u64(TEST_VA).is_none(),
        "unmapped page still readable",
    )?;
    mem::free_frame(f).map_err(|_| "free failed")
}

pub(super) fn kernel_text_is_not_writable() -> Result<(), &'static str> {
    let target = kernel_text_is_not_writable as *const () as u64;
    // SAFETY: the write faults (text is read-only) — which is what is tested;
    // if it did not, the byte written is the one already there.
    let wrote = unsafe { probe::write_u8(target, *(target as *const u8)) };
    check(!wrote, "wrote to kernel text")
}

static RODATA_BYTE: u8 = 0x42;

pub(super) fn kernel_rodata_is_not_writable() -> Result<(), &'static str> {
    let target = core::ptr::addr_of!(RODATA_BYTE) as u64;
    // SAFETY: expected to fault; otherwise rewrites the same value.
    let wrote = unsafe { probe::write_u8(target, 0x42) };
    check(!wrote, "wrote to kernel rodata")
}

/// The syscall table (`syscall::SYSCALL_TABLE`, its own section inside
/// `.rodata`, written once at boot through the direct map by
/// `syscall::trace_entries`; its ELF section is writable, an `UnsafeCell`)
/// is mapped read-only by the kernel's own image mapping, first to last
/// entry (break25l: lookup3's table swap).
pub(super) fn syscall_table_is_not_writable() -> Result<(), &'static str> {
    let start = core::ptr::addr_of!(crate::syscall::SYSCALL_TABLE) as u64;
    let end = start + core::mem::size_of_val(&crate::syscall::SYSCALL_TABLE) as u64;
    for a in [start, end - 1] {
        let t = mem::with_kernel_pt(|pt, m| pt.translate(m, a));
        let Some((_, flags, _)) = t else {
            return Err("the syscall table is not mapped");
        };
        check(
            !flags.contains(PteFlags::WRITABLE),
            "the syscall table is mapped writable",
        )?;
        // SAFETY: expected to fault; otherwise rewrites the byte already
        // there (on the boot CPU, before any syscall reads it mid-write:
        // a one-byte store of the same value).
        let wrote = unsafe { probe::write_u8(a, *(a as *const u8)) };
        check(!wrote, "wrote to the syscall table")?;
    }
    Ok(())
}

/// A `ret` instruction placed in writable data.
static mut DATA_RET: [u8; 1] = [0xc3];

pub(super) fn kernel_data_is_not_executable() -> Result<(), &'static str> {
    let target = core::ptr::addr_of!(DATA_RET) as u64;
    // SAFETY: the target is a `ret`; executing it (if NX failed) just returns.
    let ran = unsafe { probe::exec(target) };
    check(!ran, "executed kernel data")
}

pub(super) fn kernel_stack_is_not_executable() -> Result<(), &'static str> {
    let code = [0xc3u8; 16];
    let target = code.as_ptr() as u64;
    // SAFETY: as above: the bytes are `ret`s.
    let ran = unsafe { probe::exec(target) };
    core::hint::black_box(&code);
    check(!ran, "executed the kernel stack")
}

core::arch::global_asm!(
    ".section .text.ktest, \"ax\"",
    ".global ktest_text_ret",
    "ktest_text_ret: ret", // a `ret` in kernel text
);

extern "C" {
    fn ktest_text_ret();
}

pub(super) fn kernel_text_is_executable() -> Result<(), &'static str> {
    // SAFETY: the target is a bare `ret` in kernel text.
    let ran = unsafe { probe::exec(ktest_text_ret as *const () as u64) };
    check(ran, "kernel text did not execute")
}

pub(super) fn boot_identity_map_is_gone() -> Result<(), &'static str> {
    // The boot stub identity-mapped 0..1 GiB; the kernel image sits at 1 MiB.
    check(
        probe::read_u64(0x10_0000).is_none(),
        "low identity map still present",
    )
}

pub(super) fn kernel_stack_has_guard_page() -> Result<(), &'static str> {
    let stack = KernelStack::new()?;
    check(
        probe::read_u64(stack.bottom()).is_some(),
        "stack bottom unmapped",
    )?;
    check(
        probe::read_u64(stack.top() - 8).is_some(),
        "stack top unmapped",
    )?;
    check(
        probe::read_u64(stack.bottom() - 8).is_none(),
        "guard page is mapped",
    )?;
    check(
        stack.top() - stack.bottom() == layout::KSTACK_BYTES,
        "stack size wrong",
    )
}

/// An `Arc<Thread>` block goes through `mem::retire`'s deferral (its layout
/// computed as std's `ArcInner`: two counts, then the value). If the
/// assumption ever broke, frees of thread memory would silently stop being
/// deferred: a use-after-free of `WaitOn::Reply`'s uncounted server. The
/// block is held back (not handed out again) while this CPU takes no tick,
/// and given back once every CPU ticked.
pub(super) fn an_arc_thread_free_is_deferred_a_grace_period() -> Result<(), &'static str> {
    use crate::object::thread::Thread;
    use alloc::sync::Arc;
    // What `Thread::from_parts` registers (most ktests run before any
    // thread is built).
    mem::retire::defer_arcs_of::<Thread>();
    let were_on = crate::arch::cpu::interrupts_enabled();
    crate::arch::cpu::disable_interrupts();
    // No tick on this CPU from here: nothing retired now can be released.
    let before = mem::heap::deferred_blocks();
    let a = Arc::<Thread>::new_uninit();
    let freed = Arc::as_ptr(&a) as usize;
    drop(a);
    let held = mem::heap::deferred_blocks();
    let b = Arc::<Thread>::new_uninit();
    let again = Arc::as_ptr(&b) as usize;
    if were_on {
        crate::arch::cpu::enable_interrupts();
    }
    check(held == before + 1, "an Arc<Thread> free was not deferred")?;
    check(
        again != freed,
        "a thread block was reused within its grace period",
    )?;
    drop(b);
    // Every online CPU ticks (1 kHz): give it 50 ms.
    let end = crate::arch::cpu::rdtsc() + 50 * crate::arch::apic::tsc_per_ms();
    while crate::arch::cpu::rdtsc() < end {
        // Ticks taken here too if the ktests run with interrupts off.
        crate::arch::cpu::preemption_point();
    }
    let _ = mem::heap::stats(); // gives back the ripe blocks
    check(
        mem::heap::deferred_blocks() == 0,
        "deferred thread blocks were not given back after every CPU ticked",
    )
}

//! In-kernel tests, run when the command line says `ktest` (all cases) or
//! `ktest=<name>` for a deliberate-crash case. Each case prints one line; the
//! run ends with `<N> passed, <M> failed` and exits QEMU with the verdict.
//!
//! The crash cases (`ktest=fault`, `ktest=stack-overflow`) never return: they
//! prove that the diagnosis path works, and the smoke test reads it.

use crate::arch::{probe, qemu};
use crate::bootinfo::BootInfo;
use crate::mem::{self, kstack::KernelStack, layout};
use crate::println;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use kcore::paging::{PageSize, PteFlags};

/// Per CPU: 0 = not checked, 1 = `gs:` view agrees with the PerCpu, 2 = not.
static PERCPU_OK: [AtomicU8; crate::arch::apic::MAX_CPUS] =
    [const { AtomicU8::new(0) }; crate::arch::apic::MAX_CPUS];

/// Set to make the next ping IPI panic on the CPU that receives it.
pub static PANIC_ON_PING: AtomicBool = AtomicBool::new(false);

/// Records whether this CPU's `gs:` view (self pointer, CPU id, APIC id) agrees
/// with its PerCpu record and with the APIC. Every CPU runs it at bring-up.
pub fn percpu_selfcheck() {
    let (p, id, apic) = crate::arch::percpu::read_via_gs();
    let pc = crate::arch::percpu::this();
    let ok = p == pc as *const _ as u64
        && id == pc.cpu_id
        && apic == pc.apic_id
        && apic == crate::arch::apic::local_id()
        && apic == crate::smp::apic_id_of(id as usize);
    PERCPU_OK[id as usize].store(if ok { 1 } else { 2 }, Ordering::SeqCst);
}

type Case = (&'static str, fn() -> Result<(), &'static str>);

const CASES: &[Case] = &[
    (
        "frames_are_distinct_and_hold_data",
        frames_are_distinct_and_hold_data,
    ),
    ("double_free_is_refused", double_free_is_refused),
    (
        "heap_serves_small_and_large_blocks",
        heap_serves_small_and_large_blocks,
    ),
    ("map_write_translate_unmap", map_write_translate_unmap),
    (
        "borrowed_record_goes_with_unmap",
        crate::vm::ktest_borrowed_record_goes_with_unmap,
    ),
    ("kernel_text_is_not_writable", kernel_text_is_not_writable),
    (
        "kernel_rodata_is_not_writable",
        kernel_rodata_is_not_writable,
    ),
    (
        "kernel_data_is_not_executable",
        kernel_data_is_not_executable,
    ),
    (
        "kernel_stack_is_not_executable",
        kernel_stack_is_not_executable,
    ),
    ("kernel_text_is_executable", kernel_text_is_executable),
    ("boot_identity_map_is_gone", boot_identity_map_is_gone),
    ("kernel_stack_has_guard_page", kernel_stack_has_guard_page),
    (
        "percpu_fields_agree_on_every_cpu",
        percpu_fields_agree_on_every_cpu,
    ),
    ("every_ap_answers_ipis", every_ap_answers_ipis),
    (
        "isa_irq4_reaches_the_chosen_cpu",
        isa_irq4_reaches_the_chosen_cpu,
    ),
];

/// Runs the named ktest mode and exits QEMU.
pub fn run(which: &str, _boot: &BootInfo) -> ! {
    match which {
        "" | "all" => {}
        "fault" => deliberate_page_fault(),
        "stack-overflow" => deliberate_stack_overflow(),
        "ap-panic" => deliberate_ap_panic(),
        other => {
            println!("ktest: unknown mode {other:?} (all, fault, stack-overflow, ap-panic)");
            qemu::exit(false)
        }
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in CASES {
        match case() {
            Ok(()) => {
                passed += 1;
                println!("ktest {name} ... ok");
            }
            Err(why) => {
                failed += 1;
                println!("ktest {name} ... FAILED: {why}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    qemu::exit(failed == 0)
}

fn check(cond: bool, why: &'static str) -> Result<(), &'static str> {
    if cond {
        Ok(())
    } else {
        Err(why)
    }
}

fn frames_are_distinct_and_hold_data() -> Result<(), &'static str> {
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

fn double_free_is_refused() -> Result<(), &'static str> {
    let f = mem::alloc_frame().map_err(|_| "allocation failed")?;
    mem::free_frame(f).map_err(|_| "first free failed")?;
    check(mem::free_frame(f).is_err(), "second free accepted")
}

fn heap_serves_small_and_large_blocks() -> Result<(), &'static str> {
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

fn map_write_translate_unmap() -> Result<(), &'static str> {
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

fn kernel_text_is_not_writable() -> Result<(), &'static str> {
    let target = kernel_text_is_not_writable as *const () as u64;
    // SAFETY: the write faults (text is read-only) — which is what is tested;
    // if it did not, the byte written is the one already there.
    let wrote = unsafe { probe::write_u8(target, *(target as *const u8)) };
    check(!wrote, "wrote to kernel text")
}

static RODATA_BYTE: u8 = 0x42;

fn kernel_rodata_is_not_writable() -> Result<(), &'static str> {
    let target = core::ptr::addr_of!(RODATA_BYTE) as u64;
    // SAFETY: expected to fault; otherwise rewrites the same value.
    let wrote = unsafe { probe::write_u8(target, 0x42) };
    check(!wrote, "wrote to kernel rodata")
}

/// A `ret` instruction placed in writable data.
static mut DATA_RET: [u8; 1] = [0xc3];

fn kernel_data_is_not_executable() -> Result<(), &'static str> {
    let target = core::ptr::addr_of!(DATA_RET) as u64;
    // SAFETY: the target is a `ret`; executing it (if NX failed) just returns.
    let ran = unsafe { probe::exec(target) };
    check(!ran, "executed kernel data")
}

fn kernel_stack_is_not_executable() -> Result<(), &'static str> {
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

fn kernel_text_is_executable() -> Result<(), &'static str> {
    // SAFETY: the target is a bare `ret` in kernel text.
    let ran = unsafe { probe::exec(ktest_text_ret as *const () as u64) };
    check(ran, "kernel text did not execute")
}

fn boot_identity_map_is_gone() -> Result<(), &'static str> {
    // The boot stub identity-mapped 0..1 GiB; the kernel image sits at 1 MiB.
    check(
        probe::read_u64(0x10_0000).is_none(),
        "low identity map still present",
    )
}

fn kernel_stack_has_guard_page() -> Result<(), &'static str> {
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

fn percpu_fields_agree_on_every_cpu() -> Result<(), &'static str> {
    percpu_selfcheck();
    for ok in &PERCPU_OK[..crate::smp::online()] {
        check(
            ok.load(Ordering::SeqCst) == 1,
            "a CPU's gs: view disagrees with its PerCpu",
        )?;
    }
    Ok(())
}

fn every_ap_answers_ipis() -> Result<(), &'static str> {
    for cpu in 1..crate::smp::online() {
        for _ in 0..10 {
            crate::smp::ping(cpu).ok_or("an AP did not answer a ping IPI")?;
        }
    }
    Ok(())
}

/// Routes the UART's IRQ 4 to the last CPU, makes the UART raise it (transmitter
/// empty), and checks it arrived there.
fn isa_irq4_reaches_the_chosen_cpu() -> Result<(), &'static str> {
    use x86_64::instructions::port::Port;
    let target = crate::smp::online() - 1;
    let (before, _) = crate::arch::ioapic::hits(4);
    crate::arch::ioapic::route_isa_irq(4, crate::smp::apic_id_of(target))?;
    let mut ier = Port::<u8>::new(0x3f9);
    // SAFETY: enabling only the UART's transmitter-empty interrupt; the kernel's
    // polled output is unaffected, and it is switched off again below.
    unsafe { ier.write(0x02) };
    crate::arch::cpu::enable_interrupts();
    let deadline = crate::arch::cpu::rdtsc() + 200 * crate::arch::apic::tsc_per_ms();
    while crate::arch::ioapic::hits(4).0 == before && crate::arch::cpu::rdtsc() < deadline {
        core::hint::spin_loop();
    }
    crate::arch::cpu::disable_interrupts();
    // SAFETY: UART interrupts off again.
    unsafe { ier.write(0x00) };
    crate::arch::ioapic::mask_isa_irq(4);
    let (after, cpu) = crate::arch::ioapic::hits(4);
    check(after > before, "IRQ 4 never arrived")?;
    check(cpu as usize == target, "IRQ 4 arrived on another CPU")
}

fn deliberate_ap_panic() -> ! {
    if crate::smp::online() < 2 {
        println!("ktest: ap-panic needs at least 2 CPUs");
        qemu::exit(false)
    }
    println!("ktest: making CPU 1 panic on purpose");
    PANIC_ON_PING.store(true, Ordering::SeqCst);
    let _ = crate::smp::ping(1);
    // The panic on CPU 1 stops this CPU with an NMI; reaching here means not.
    crate::arch::apic::delay_us(500_000);
    println!("ktest: CPU 1 did not panic");
    qemu::exit(false)
}

fn deliberate_page_fault() -> ! {
    println!("ktest: reading unmapped address 0x10000000 on purpose");
    // SAFETY: deliberately invalid: the read must fault and the fault handler
    // must print a diagnosis and stop the machine.
    let v = unsafe { core::ptr::read_volatile(0x1000_0000 as *const u64) };
    println!("ktest: read 0x{v:x} from an unmapped address: the fault was missed");
    qemu::exit(false)
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let pad = [depth; 64];
    core::hint::black_box(&pad);
    recurse(depth + 1) + pad[0]
}

extern "C" fn overflow_on_stack(_: u64) -> ! {
    let r = recurse(0);
    println!("ktest: recursion returned {r}: the guard page was missed");
    qemu::exit(false)
}

fn deliberate_stack_overflow() -> ! {
    println!("ktest: overflowing a guarded kernel stack on purpose");
    let stack = match KernelStack::new() {
        Ok(s) => s,
        Err(e) => {
            println!("ktest: {e}");
            qemu::exit(false)
        }
    };
    let top = stack.top();
    core::mem::forget(stack);
    // SAFETY: switches to a fresh, mapped kernel stack and calls a function that
    // never returns; the old stack is abandoned on purpose.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",   // rsp: the new stack's top
            "xor ebp, ebp",     // rbp: end of the frame chain
            "call {f}",         // never returns
            top = in(reg) top,
            f = sym overflow_on_stack,
            in("rdi") 0,
            options(noreturn)
        )
    }
}

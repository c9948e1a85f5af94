//! TLB shootdown: the mailbox other CPUs serve from the TLB IPI, and the
//! range flushes built on it.
//!
//! Below `sync`: an [`crate::sync::IrqMutex`] waiter keeps serving requests
//! ([`service_shootdown`]) so two CPUs never deadlock, one spinning for a lock
//! with interrupts off and the other waiting for its acknowledgement. It needs
//! only the APIC, the per-CPU table (each CPU's pending flag and loaded root)
//! and atomics.

use super::apic;
use super::mmu::{self, flush_local};
use super::percpu::{self, PerCpu, MAX_CPUS};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// One shootdown at a time; a CPU waiting for it keeps serving requests.
static SHOOTDOWN_BUSY: AtomicBool = AtomicBool::new(false);
/// Request: the root whose TLB entries go (0 = kernel/global mappings).
static SD_ROOT: AtomicU64 = AtomicU64::new(0);
static SD_ADDR: AtomicU64 = AtomicU64::new(0);
static SD_PAGES: AtomicU64 = AtomicU64::new(0);
/// Targets that still have to acknowledge.
static SD_PENDING: AtomicUsize = AtomicUsize::new(0);

/// Above this many pages a range flush becomes a full flush (one CR3 reload
/// instead of a loop of `invlpg`): no flush ever loops over a length a caller
/// named, however large.
pub const FULL_FLUSH_PAGES: u64 = 64;

/// `global`: the range is kernel (global) mappings. A CR3 reload keeps
/// global entries, so a full flush of those toggles CR4.PGE instead, which
/// drops every entry, global ones included (SDM 4.10.4.1). (QEMU's TCG TLB
/// ignores the G bit, so no test under TCG can see the difference: the rule
/// is stated here instead.)
fn flush_pages(addr: u64, pages: u64, global: bool) {
    if pages > FULL_FLUSH_PAGES && global {
        use x86_64::registers::control::{Cr4, Cr4Flags};
        // SAFETY: clearing and restoring PGE only flushes the TLB; interrupts
        // are off (callers: shootdown paths), so nothing runs in between.
        unsafe {
            let cr4 = Cr4::read();
            if cr4.contains(Cr4Flags::PAGE_GLOBAL) {
                Cr4::write(cr4 - Cr4Flags::PAGE_GLOBAL);
                Cr4::write(cr4);
            } else {
                x86_64::instructions::tlb::flush_all();
            }
        }
    } else if pages > FULL_FLUSH_PAGES {
        x86_64::instructions::tlb::flush_all();
    } else {
        for i in 0..pages {
            flush_local(addr + i * 4096);
        }
    }
}

/// Serves a pending shootdown request for this CPU (IPI handler, and waiters).
pub fn service_shootdown() {
    // Before the boot CPU's per-CPU data exists nobody can have sent one.
    let Some(me) = percpu::this_if_up() else {
        return;
    };
    if !me.shootdown_pending.swap(false, Ordering::AcqRel) {
        return;
    }
    let root = SD_ROOT.load(Ordering::Acquire);
    if root == 0 || mmu::current_root() == root {
        flush_pages(
            SD_ADDR.load(Ordering::Acquire),
            SD_PAGES.load(Ordering::Acquire),
            root == 0, // kernel (global) mappings
        );
    }
    SD_PENDING.fetch_sub(1, Ordering::AcqRel);
}

fn shootdown(root: u64, mask: u64, addr: u64, pages: u64) {
    let me = percpu::cpu_index();
    let others = mask & !(1 << me);
    if others == 0 || percpu::online() == 1 {
        return;
    }
    while SHOOTDOWN_BUSY
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        service_shootdown(); // never deadlock against the current sender
        core::hint::spin_loop();
    }
    SD_ROOT.store(root, Ordering::Release);
    SD_ADDR.store(addr, Ordering::Release);
    SD_PAGES.store(pages, Ordering::Release);
    let target = |c: usize| others & (1 << c) != 0;
    let targets: usize = (0..MAX_CPUS)
        .filter(|&c| {
            target(c)
                && percpu::slot(percpu::CpuId::from_index(c))
                    .apic_id()
                    .is_some()
        })
        .count();
    SD_PENDING.store(targets, Ordering::Release);
    for c in (0..MAX_CPUS).filter(|&c| target(c)) {
        let pc = percpu::slot(percpu::CpuId::from_index(c));
        if let Some(apic_id) = pc.apic_id() {
            pc.shootdown_pending.store(true, Ordering::Release);
            apic::send_ipi(apic::TLB_VECTOR, apic_id);
        }
    }
    while SD_PENDING.load(Ordering::Acquire) != 0 {
        service_shootdown();
        core::hint::spin_loop();
    }
    SHOOTDOWN_BUSY.store(false, Ordering::Release);
}

/// Invalidates `pages` pages from `addr` in the address space whose
/// page-table root is `root` on every CPU that may cache them, before
/// returning.
pub fn flush_range(root: u64, addr: u64, pages: u64) {
    if mmu::current_root() == root {
        flush_pages(addr, pages, false);
    }
    // Only CPUs running this space can cache its entries (CR3 loads flush
    // non-global entries; no PCID).
    //
    // Ordering (the Dekker pattern, both sides): this CPU *stored* page-table
    // entries and now *loads* every CPU's loaded root; a CPU switching to the
    // space *stores* its loaded root (`mmu::load_root`) and then *loads*
    // page-table entries through its walks after the CR3 write, which is
    // serialising (the store is drained before it completes). Under x86-TSO a load may pass an earlier store to
    // another location (the store buffer), so without a full fence here this
    // CPU could read a stale root (miss the CPU) while that CPU walks the old
    // entries: a physical use-after-free once the frames are freed. The local
    // `invlpg` above used to serialise by luck, but an editor that does not
    // run the space (a process manager editing a child) flushes nothing
    // locally. With the fence (mfence) on this side and the serialising CR3
    // write on the other, at least one CPU sees the other's store: either the root is seen
    // here (the CPU is shot down) or that CPU's walk sees the edited tables.
    core::sync::atomic::fence(Ordering::SeqCst);
    let running = percpu::online_cpus()
        .filter(|pc| mmu::loaded_root(pc) == root)
        .fold(0u64, |m, pc: &PerCpu| m | (1 << pc.id().index()));
    shootdown(root, running, addr, pages);
}

/// Invalidates kernel (global) mappings on every CPU.
pub fn flush_kernel_range(addr: u64, pages: u64) {
    flush_pages(addr, pages, true);
    shootdown(0, u64::MAX, addr, pages);
}

//! The bootstrap path: boot images into processes, and init with its
//! boot-information page.
//!
//! The kernel has no ELF parser: it maps only the trivial boot-image format of
//! [`abi::bootimg`] (validated in full by its parser: user range, alignment,
//! overlap, W^X). init gets the other boot modules read-only plus a boot-info
//! page ([`abi::bootinfo`]); real ELF loading is the loader server's job.

use crate::arch::cpu::preemption_point;
use crate::bootinfo::BootInfo;
use crate::lifecycle;
use crate::mem::{self, phys_to_virt};
use crate::object::process::{Process, INIT_PID};
use crate::object::space::prot_flags;
use abi::bootimg::{BootImage, SEG_W, SEG_X};
use abi::layout::{INIT_STACK_BYTES, INIT_STACK_TOP, PAGE_SIZE};
use abi::{prot, Error};
use alloc::sync::Arc;
use alloc::vec::Vec;

/// Where init finds its boot-information page.
pub const BOOTINFO_VA: u64 = abi::bootinfo::MODULES_BASE - PAGE_SIZE;

/// The most memory a boot image's segments may span in total (the flat-image
/// format is the bootstrap path; programs with more memory are ELF files the
/// loader maps with the memory syscalls).
pub const MAX_IMAGE_MEM_BYTES: u64 = 16 << 20;

/// Pages copied between two preemption points while building a process.
const PREEMPT_PAGES: u64 = 16;

/// The boot modules (names and physical bytes), recorded by [`start_init`]
/// so [`boot_program`] can tell which program an image is.
static BOOT_PROGRAMS: spin::Once<Vec<kcore::bootinfo::Module>> = spin::Once::new();

/// The boot module `image` is a byte-for-byte copy of, if any (init spawns
/// the programs it was lent this way). Only modules of the same length are
/// compared, so a spawn of anything else costs a few length checks; a
/// comparison lets interrupts in between 64 KiB chunks, as the copy does.
pub fn boot_program(image: &[u8]) -> Option<kcore::bootinfo::ModuleName> {
    const CHUNK: usize = 64 << 10;
    BOOT_PROGRAMS.get()?.iter().find_map(|m| {
        if m.range.len() != image.len() as u64 {
            return None;
        }
        // SAFETY: the module's physical range was validated at boot, is
        // reserved from the frame allocator (never reused) and lies in the
        // direct map; nothing writes it (init gets it read-only).
        let bytes = unsafe {
            core::slice::from_raw_parts(
                phys_to_virt(m.range.start) as *const u8,
                m.range.len() as usize,
            )
        };
        for (i, (a, b)) in bytes.chunks(CHUNK).zip(image.chunks(CHUNK)).enumerate() {
            if i != 0 {
                preemption_point();
            }
            if a != b {
                return None;
            }
        }
        Some(m.name.clone())
    })
}

/// Builds a process from a boot image: maps every segment (file bytes copied,
/// the rest zero) and a stack. Returns the process and its entry point.
pub fn build(image: &[u8], parent: Option<&Arc<Process>>) -> Result<(Arc<Process>, u64), Error> {
    let img = BootImage::parse(image).map_err(|e| {
        log::warn!("refusing boot image: {e}");
        Error::InvalidArgument
    })?;
    // Refuse at once what could only end in NoMemory after filling memory
    // (a huge `mem_size` costs nothing to write): the image's pages must fit
    // the bootstrap bound and what is free right now.
    let pages = img
        .segments()
        .iter()
        .map(|s| s.mem_size.div_ceil(PAGE_SIZE))
        .fold(0u64, u64::saturating_add);
    if pages > MAX_IMAGE_MEM_BYTES / PAGE_SIZE || pages > mem::free_frames() as u64 {
        return Err(Error::NoMemory);
    }
    let p = Process::new(parent)?;
    let space = p.space().ok_or(Error::NotFound)?;
    let r = (|| {
        for seg in img.segments() {
            let bytes = img.segment_bytes(seg);
            let mut p_bits = 0;
            if seg.flags & SEG_W != 0 {
                p_bits |= prot::WRITE;
            }
            if seg.flags & SEG_X != 0 {
                p_bits |= prot::EXEC;
            }
            let flags = prot_flags(p_bits)?;
            let pages = seg.mem_size.div_ceil(PAGE_SIZE);
            for i in 0..pages {
                // The image can be up to 16 MiB: let interrupts in every few
                // pages (no lock is held here; the new process is not running).
                if i % PREEMPT_PAGES == PREEMPT_PAGES - 1 {
                    preemption_point();
                }
                let frame = mem::alloc_zeroed_frame().map_err(|_| Error::NoMemory)?;
                let off = (i * PAGE_SIZE) as usize;
                if off < bytes.len() {
                    let n = (bytes.len() - off).min(PAGE_SIZE as usize);
                    // SAFETY: the frame is fresh and mapped in the direct map;
                    // `n` bytes fit in it.
                    unsafe {
                        core::ptr::copy_nonoverlapping(
                            bytes[off..].as_ptr(),
                            phys_to_virt(frame.addr()) as *mut u8,
                            n,
                        )
                    };
                }
                if let Err(e) =
                    space.map_frames(seg.vaddr + i * PAGE_SIZE, frame.addr(), 1, flags, false)
                {
                    let _ = mem::free_frame(frame);
                    return Err(e);
                }
            }
        }
        space.map_anon(
            INIT_STACK_TOP - INIT_STACK_BYTES,
            INIT_STACK_BYTES,
            prot::WRITE,
        )
    })();
    match r {
        Ok(()) => Ok((p, img.entry)),
        Err(e) => {
            // Up to a whole image mapped: freed in preemptible chunks here,
            // not in the drop (interrupts off throughout).
            // The record and its quota units go with `p`.
            space.teardown();
            Err(e)
        }
    }
}

/// The TSC when the boot CPU entered Rust (`kernel_entry`).
static ENTRY_TSC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Records the TSC at the kernel's entry (called first thing).
pub fn record_entry_tsc() {
    // Relaxed: read later by the same CPU (start_init).
    ENTRY_TSC.store(
        crate::arch::cpu::rdtsc(),
        core::sync::atomic::Ordering::Relaxed,
    );
}

/// Starts init from its boot module, lending it the other modules.
pub fn start_init(boot: &BootInfo) -> Result<(), &'static str> {
    let m = boot.module("init").ok_or("no boot module named \"init\"")?;
    BOOT_PROGRAMS.call_once(|| boot.modules.iter().cloned().collect());
    // SAFETY: the module's physical range was validated at boot, is reserved
    // from the frame allocator and lies in the direct map.
    let image = unsafe {
        core::slice::from_raw_parts(
            phys_to_virt(m.range.start) as *const u8,
            m.range.len() as usize,
        )
    };
    let (p, entry) = build(image, None).map_err(|_| "init's boot image is invalid")?;
    if p.pid != INIT_PID {
        return Err("init did not get pid 1");
    }
    p.program.call_once(|| m.name.clone());
    crate::trace::process_start(p.pid.get(), m.name.as_str());
    install_hw_roots(&p)?;
    let space = p.space().ok_or("init's address space vanished")?;

    let info_frame = mem::alloc_zeroed_frame().map_err(|_| "out of memory")?;
    // SAFETY: fresh zeroed frame, page-sized, in the direct map; BootInfo fits
    // in a page (compile-time assertion in abi).
    let info = unsafe { &mut *(phys_to_virt(info_frame.addr()) as *mut abi::bootinfo::BootInfo) };
    info.magic = abi::bootinfo::MAGIC;
    let cmd = boot.cmdline.as_bytes();
    let n = cmd.len().min(abi::bootinfo::CMDLINE_BYTES);
    info.cmdline[..n].copy_from_slice(&cmd[..n]);
    info.cmdline_len = n as u64;

    let ro = prot_flags(0).map_err(|_| "bad flags")?;
    let mut va = abi::bootinfo::MODULES_BASE;
    let mut count = 0;
    for module in boot.modules.iter().filter(|x| x.name.as_str() != "init") {
        if count == abi::bootinfo::MAX_MODULES {
            log::warn!(
                "more than {} modules; the rest are not lent to init",
                abi::bootinfo::MAX_MODULES
            );
            break;
        }
        let first = module.range.start & !(PAGE_SIZE - 1);
        let pages = (module.range.end - first).div_ceil(PAGE_SIZE);
        space
            .map_frames(va, first, pages, ro, true)
            .map_err(|_| "cannot map a boot module into init")?;
        let d = &mut info.modules[count];
        let name = module.name.as_bytes();
        let nl = name.len().min(abi::bootinfo::NAME_BYTES);
        d.name[..nl].copy_from_slice(&name[..nl]);
        d.name_len = nl as u64;
        d.addr = va + (module.range.start - first);
        d.len = module.range.len();
        va += pages * PAGE_SIZE;
        count += 1;
    }
    info.nmodules = count as u64;
    // Relaxed: stored by this CPU at entry, before any other CPU started.
    info.entry_tsc = ENTRY_TSC.load(core::sync::atomic::Ordering::Relaxed);
    space
        .map_frames(BOOTINFO_VA, info_frame.addr(), 1, ro, false)
        .map_err(|_| "cannot map the boot-info page")?;
    lifecycle::start_thread(&p, entry, INIT_STACK_TOP, BOOTINFO_VA)
        .map_err(|_| "cannot start init's thread")?;
    Ok(())
}

/// hw (issue 11): puts init's I/O-port root (every port) and IRQ root first
/// in its fresh handle table, so they have the numbers `abi::boot_handles`
/// promises.
fn install_hw_roots(p: &Arc<Process>) -> Result<(), &'static str> {
    use crate::object::hw::{IoPorts, IrqObj};
    use crate::object::kobject::{charge, Object};
    use kcore::handles::{Entry, Rights};
    let rights = Rights::from_bits_truncate(abi::rights_sets::HW);
    let ports = charge(&p.ipc.objects, IoPorts::ALL).map_err(|_| "out of memory")?;
    let irqs = charge(&p.ipc.objects, IrqObj::Root).map_err(|_| "out of memory")?;
    let mut t = p.ipc.handles.lock();
    for (object, want) in [
        (Object::IoPorts(ports), abi::boot_handles::IOPORTS),
        (Object::Irq(irqs), abi::boot_handles::IRQS),
    ] {
        let h = t
            .insert(Entry {
                object,
                rights,
                badge: 0,
            })
            .map_err(|_| "cannot install init's hardware roots")?;
        if h.raw() != want {
            return Err("init's hardware roots did not get their abi numbers");
        }
    }
    Ok(())
}

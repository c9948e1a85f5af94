//! Physical and virtual memory: the frame allocator, the kernel's page tables,
//! the kernel heap and guarded kernel stacks.
//!
//! # Kernel virtual layout
//! | range | what |
//! |---|---|
//! | `0x0000_0000_0000_0000 .. 0x0000_8000_0000_0000` | user half (per process) |
//! | `DIRECT_MAP ..` (PML4 256) | all physical memory, RW NX |
//! | `KSTACK_BASE ..` (PML4 510) | kernel stacks, each below an unmapped guard page |
//! | `KERNEL_VMA ..` (PML4 511) | the kernel image: text RX, rodata R, data/bss RW NX |
//!
//! All 256 kernel-half PDPTs are allocated at boot, so every address space can
//! share them by copying PML4 entries 256..512 once.

pub mod heap;
pub mod kstack;
pub mod layout;
pub mod retire;
pub mod user;

use crate::bootinfo::BootInfo;
use crate::sync::IrqMutex;
use kcore::cow::FrameRefs;
use kcore::frame::{bitmap_words_for, FrameAllocator, FrameError, PhysFrame};
use kcore::memmap::{self, Range};
use kcore::paging::{MapError, PageSize, PageTable, PhysMem, PteFlags, ENTRIES, KERNEL_PML4_START};
use layout::{DIRECT_MAP, KERNEL_VMA};

/// The most physical memory the frame allocator manages (the rest is ignored
/// with a warning).
pub const MAX_PHYS: u64 = 64 << 30;
const MAX_FRAMES: usize = (MAX_PHYS / 4096) as usize;

static mut FRAME_BITMAP: [u64; bitmap_words_for(MAX_FRAMES)] = [0; bitmap_words_for(MAX_FRAMES)];

/// The physical frame allocator (lock order: after page tables, before heap).
static FRAMES: IrqMutex<Option<FrameAllocator<'static>>> = IrqMutex::new(None);

/// The kernel's page tables (the template every address space copies).
static KERNEL_PT: IrqMutex<Option<PageTable>> = IrqMutex::new(None);

/// Whether NX may be used in page-table entries.
static mut NX: bool = false;

pub use crate::arch::mmu::phys_to_virt;

/// The NO_EXECUTE flag if the CPU supports it, else nothing.
pub fn nx_flag() -> PteFlags {
    // SAFETY: written once during `init` on the boot CPU before anything reads it.
    if unsafe { NX } {
        PteFlags::NO_EXECUTE
    } else {
        PteFlags::empty()
    }
}

/// Allocates one physical frame (contents undefined).
pub fn alloc_frame() -> Result<PhysFrame, FrameError> {
    FRAMES
        .lock()
        .as_mut()
        .ok_or(FrameError::OutOfMemory)?
        .alloc()
}

/// Allocates one zeroed physical frame.
pub fn alloc_zeroed_frame() -> Result<PhysFrame, FrameError> {
    let f = alloc_frame()?;
    // SAFETY: the frame was just allocated, so nothing else refers to it, and
    // the direct map covers all managed physical memory.
    unsafe { core::ptr::write_bytes(phys_to_virt(f.addr()) as *mut u8, 0, 4096) };
    Ok(f)
}

/// Allocates `count` contiguous frames aligned to `align` frames.
pub fn alloc_contiguous(count: usize, align: usize) -> Result<PhysFrame, FrameError> {
    FRAMES
        .lock()
        .as_mut()
        .ok_or(FrameError::OutOfMemory)?
        .alloc_contiguous(count, align)
}

/// The page below 1 MiB reserved at boot for the SMP trampoline (0 if none).
static TRAMPOLINE_PAGE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The page reserved for the SMP trampoline, if low memory had one.
pub fn trampoline_page() -> Option<PhysFrame> {
    PhysFrame::from_addr(TRAMPOLINE_PAGE.load(core::sync::atomic::Ordering::SeqCst))
        .filter(|f| f.addr() != 0)
}

/// Returns a frame to the allocator.
pub fn free_frame(f: PhysFrame) -> Result<(), FrameError> {
    FRAMES
        .lock()
        .as_mut()
        .ok_or(FrameError::OutOfMemory)?
        .free(f)
}

/// One counter per managed frame (see [`kcore::cow`]): set up at boot.
static FRAME_REFS: spin::Once<&'static [core::sync::atomic::AtomicU32]> = spin::Once::new();

fn frame_refs() -> FrameRefs<'static> {
    FrameRefs::new(FRAME_REFS.get().copied().unwrap_or(&[]))
}

fn frame_number(pa: u64) -> usize {
    (pa / 4096) as usize
}

/// Owners of the frame at `pa` (1 unless it is shared).
pub fn frame_owners(pa: u64) -> u32 {
    frame_refs().owners(frame_number(pa))
}

/// Adds an owner to the frame at `pa`, which the caller owns a reference to
/// (`NoMemory` if its counter is full).
pub fn frame_acquire(pa: u64) -> Result<(), abi::Error> {
    frame_refs()
        .acquire(frame_number(pa))
        .map_err(|_| abi::Error::NoMemory)
}

/// Drops one owner of the user frame at `pa` and frees it when that was the
/// last. The caller has made sure no CPU reaches it through a mapping it
/// removed (shot down first).
pub fn frame_release(pa: u64) {
    if frame_refs().release(frame_number(pa)) {
        let _ = free_frame(PhysFrame::containing(pa));
    }
}

/// Bytes of memory the frame allocator started with.
static TOTAL_BYTES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Bytes of memory the frame allocator manages (free at boot).
pub fn total_bytes() -> u64 {
    TOTAL_BYTES.load(core::sync::atomic::Ordering::Relaxed)
}

/// Free frames right now.
pub fn free_frames() -> usize {
    FRAMES.lock().as_ref().map_or(0, |a| a.free_count())
}

/// Page-table memory reached through the direct map, frames from the allocator.
pub struct DirectMem;

impl PhysMem for DirectMem {
    fn table(&mut self, phys: u64) -> &mut [u64; ENTRIES] {
        // SAFETY: page-table frames are allocated from the frame allocator and
        // only reached by the page-table code while the caller holds the lock
        // of the address space they belong to.
        unsafe { &mut *(phys_to_virt(phys) as *mut [u64; ENTRIES]) }
    }
    fn alloc_table(&mut self) -> Option<u64> {
        alloc_zeroed_frame().ok().map(|f| f.addr())
    }
    fn free_table(&mut self, phys: u64) {
        if let Some(f) = PhysFrame::from_addr(phys) {
            let _ = free_frame(f);
        }
    }
}

/// Page-table memory before the direct map exists: physical 0..1 GiB through
/// the boot stub's higher-half map, tables allocated below 1 GiB.
struct EarlyMem<'a> {
    frames: &'a mut FrameAllocator<'static>,
}

const EARLY_LIMIT: u64 = 1 << 30;

impl PhysMem for EarlyMem<'_> {
    fn table(&mut self, phys: u64) -> &mut [u64; ENTRIES] {
        debug_assert!(phys < EARLY_LIMIT);
        // SAFETY: tables come from `alloc_table` below 1 GiB, which the boot
        // stub maps at KERNEL_VMA; only the boot CPU runs now.
        unsafe { &mut *((phys + KERNEL_VMA) as *mut [u64; ENTRIES]) }
    }
    fn alloc_table(&mut self) -> Option<u64> {
        let f = self.frames.alloc_below(EARLY_LIMIT).ok()?;
        // SAFETY: fresh frame below 1 GiB, mapped at KERNEL_VMA + phys.
        unsafe { core::ptr::write_bytes((f.addr() + KERNEL_VMA) as *mut u8, 0, 4096) };
        Some(f.addr())
    }
    fn free_table(&mut self, phys: u64) {
        if let Some(f) = PhysFrame::from_addr(phys) {
            let _ = self.frames.free(f);
        }
    }
}

extern "C" {
    static __kernel_phys_start: u8;
    static __kernel_phys_end: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
}

fn sym(s: *const u8) -> u64 {
    s as u64
}

/// The kernel image's physical range.
pub fn kernel_phys_range() -> Range {
    // Linker-script symbols: only their addresses are used.
    Range::new(
        sym(core::ptr::addr_of!(__kernel_phys_start)),
        sym(core::ptr::addr_of!(__kernel_phys_end)),
    )
}

/// The kernel's text, rodata and data/bss virtual ranges.
pub fn kernel_sections() -> [(Range, PteFlags); 3] {
    let nx = nx_flag();
    // Linker-script symbols: only their addresses are used.
    {
        [
            (
                Range::new(
                    sym(core::ptr::addr_of!(__text_start)),
                    sym(core::ptr::addr_of!(__text_end)),
                ),
                PteFlags::GLOBAL,
            ),
            (
                Range::new(
                    sym(core::ptr::addr_of!(__rodata_start)),
                    sym(core::ptr::addr_of!(__rodata_end)),
                ),
                PteFlags::GLOBAL | nx,
            ),
            (
                Range::new(
                    sym(core::ptr::addr_of!(__data_start)),
                    sym(core::ptr::addr_of!(__data_end)),
                ),
                PteFlags::GLOBAL | PteFlags::WRITABLE | nx,
            ),
        ]
    }
}

/// What memory setup found.
pub struct MemStats {
    /// Bytes the frame allocator started with.
    pub usable_bytes: u64,
    /// The end of the direct map.
    pub direct_map_end: u64,
}

/// Sets up physical memory management and the kernel's own page tables, then
/// switches to them (dropping the boot identity map).
pub fn init(
    boot: &BootInfo,
    features: &crate::arch::cpu::Features,
) -> Result<MemStats, &'static str> {
    // SAFETY: single-threaded boot; nothing has read NX yet.
    unsafe { NX = features.nx };

    let kernel = kernel_phys_range();
    let mut reserved: heapless::Vec<Range, { memmap::MAX_RESERVED }> = heapless::Vec::new();
    let _ = reserved.push(Range::new(0, 0x1000)); // real-mode IVT/BDA, and null
    let _ = reserved.push(kernel);
    let _ = reserved.push(boot.mbi);
    for m in &boot.modules {
        let _ = reserved.push(m.range);
    }

    let top = memmap::highest_usable_end(&boot.regions);
    if top > MAX_PHYS {
        log::warn!("ignoring physical memory above {} GiB", MAX_PHYS >> 30);
    }
    let nframes = (top.min(MAX_PHYS) / 4096) as usize;
    // SAFETY: the bitmap is only ever used through the allocator created here,
    // once, on the boot CPU.
    let bitmap = unsafe { &mut *core::ptr::addr_of_mut!(FRAME_BITMAP) };
    let mut frames = FrameAllocator::new(&mut bitmap[..bitmap_words_for(nframes)], nframes);
    memmap::for_each_free_range(&boot.regions, &reserved, |s, e| {
        frames.add_free_range(s, e.min(MAX_PHYS));
    })
    .map_err(|e| e.as_str())?;
    // The SMP trampoline needs a page below 1 MiB; take it before low memory
    // goes to page tables (the allocator hands out the lowest frames first).
    if let Ok(f) = frames.alloc_below(0x10_0000) {
        TRAMPOLINE_PAGE.store(f.addr(), core::sync::atomic::Ordering::SeqCst);
    }
    let usable_bytes = frames.total_free_bytes();
    TOTAL_BYTES.store(usable_bytes, core::sync::atomic::Ordering::SeqCst);
    if usable_bytes == 0 {
        return Err("no usable memory after reserving the kernel and modules");
    }

    // The direct map covers RAM and the 32-bit MMIO hole (APIC, I/O APIC).
    let direct_map_end = top.max(4 << 30).next_multiple_of(1 << 30);
    let pt = {
        let mut mem = EarlyMem {
            frames: &mut frames,
        };
        build_kernel_tables(&mut mem, direct_map_end, features)
            .map_err(|_| "out of memory building the kernel page tables")?
    };

    // SAFETY: the new tables map the kernel image (text, rodata, data, bss —
    // including the boot stack we run on) at the same virtual addresses, so
    // execution continues; the boot identity map is simply not part of them.
    unsafe { crate::arch::mmu::load_root(pt.root()) };
    crate::arch::cpu::init_paging_features(features);
    let refs_pages = (nframes * 4).div_ceil(4096);
    let refs = frames
        .alloc_contiguous(refs_pages, 1)
        .map_err(|_| "out of memory for the frame reference counts")?;
    *FRAMES.lock() = Some(frames);
    // SAFETY: the frames were just allocated for this table alone and lie in
    // the direct map (loaded above); zeroed (every frame: one owner) before
    // the table is published, and never freed. AtomicU32 has u32's layout.
    let counts = unsafe {
        let p = phys_to_virt(refs.addr()) as *mut u32;
        core::ptr::write_bytes(p, 0, nframes);
        core::slice::from_raw_parts(p as *const core::sync::atomic::AtomicU32, nframes)
    };
    FRAME_REFS.call_once(|| counts);
    KERNEL_ROOT.store(pt.root(), core::sync::atomic::Ordering::SeqCst);
    *KERNEL_PT.lock() = Some(pt);
    heap::init(usable_bytes)?;
    kstack::preallocate_tables()?;
    Ok(MemStats {
        usable_bytes,
        direct_map_end,
    })
}

fn build_kernel_tables<M: PhysMem>(
    mem: &mut M,
    direct_map_end: u64,
    features: &crate::arch::cpu::Features,
) -> Result<PageTable, MapError> {
    let pt = PageTable::create(mem)?;
    // Pre-allocate every kernel-half PDPT so address spaces can share them.
    for i in KERNEL_PML4_START..ENTRIES {
        let pdpt = mem.alloc_table().ok_or(MapError::NoMemory)?;
        mem.table(pt.root())[i] = pdpt | (PteFlags::PRESENT | PteFlags::WRITABLE).bits();
    }
    let data = PteFlags::WRITABLE | PteFlags::GLOBAL | nx_flag();
    let (step, size) = if features.page_1g {
        (1u64 << 30, PageSize::Size1G)
    } else {
        (1u64 << 21, PageSize::Size2M)
    };
    let mut pa = 0;
    while pa < direct_map_end {
        pt.map(mem, DIRECT_MAP + pa, pa, size, data)?;
        pa += step;
    }
    for (range, flags) in kernel_sections() {
        let mut va = range.start;
        while va < range.end {
            pt.map(mem, va, va - KERNEL_VMA, PageSize::Size4K, flags)?;
            va += 4096;
        }
    }
    Ok(pt)
}

/// Runs `f` with the kernel page tables.
pub fn with_kernel_pt<R>(f: impl FnOnce(&PageTable, &mut DirectMem) -> R) -> R {
    let guard = KERNEL_PT.lock();
    let pt = guard
        .as_ref()
        .expect("kernel page tables are set up at boot");
    f(pt, &mut DirectMem)
}

pub use crate::arch::mmu::flush_local;

/// The kernel page tables' root, fixed at boot (what idle CPUs run on).
static KERNEL_ROOT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The kernel page tables' root (what idle CPUs run on).
pub fn kernel_root() -> u64 {
    KERNEL_ROOT.load(core::sync::atomic::Ordering::Relaxed)
}

//! Creating processes from boot images, starting init, and ending processes.
//!
//! The kernel has no ELF parser: it maps only the trivial boot-image format of
//! [`abi::bootimg`] (validated in full by its parser: user range, alignment,
//! overlap, W^X). init gets the other boot modules read-only plus a boot-info
//! page ([`abi::bootinfo`]); real ELF loading is the loader server's job.

use crate::arch::gdt::{USER_CS, USER_DS};
use crate::arch::trap::TrapFrame;
use crate::bootinfo::BootInfo;
use crate::mem::{self, phys_to_virt};
use crate::sched;
use crate::task::{self, Process, State, Thread};
use abi::bootimg::{BootImage, SEG_W, SEG_X};
use abi::layout::{INIT_STACK_BYTES, INIT_STACK_TOP, PAGE_SIZE};
use abi::{prot, Error};
use alloc::sync::Arc;
use alloc::vec::Vec;

/// The pid of init.
pub const INIT_PID: u64 = 1;

/// Where init finds its boot-information page.
pub const BOOTINFO_VA: u64 = abi::bootinfo::MODULES_BASE - PAGE_SIZE;

/// The most memory a boot image's segments may span in total (the flat-image
/// format is the bootstrap path; programs with more memory are ELF files the
/// loader maps with the memory syscalls).
pub const MAX_IMAGE_MEM_BYTES: u64 = 16 << 20;

/// Pages copied between two preemption points while building a process.
const PREEMPT_PAGES: u64 = 16;

/// The boot modules (names and physical bytes), recorded by [`start_init`]
/// so [`spawn`] can tell which program an image is.
static BOOT_PROGRAMS: spin::Once<Vec<kcore::bootinfo::Module>> = spin::Once::new();

/// The boot module `image` is a byte-for-byte copy of, if any (init spawns
/// the programs it was lent this way). Only modules of the same length are
/// compared, so a spawn of anything else costs a few length checks; a
/// comparison lets interrupts in between 64 KiB chunks, as the copy does.
fn boot_program(image: &[u8]) -> Option<kcore::bootinfo::ModuleName> {
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
                crate::sched::preemption_point();
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
            let flags = crate::vm::prot_flags(p_bits)?;
            let pages = seg.mem_size.div_ceil(PAGE_SIZE);
            for i in 0..pages {
                // The image can be up to 16 MiB: let interrupts in every few
                // pages (no lock is held here; the new process is not running).
                if i % PREEMPT_PAGES == PREEMPT_PAGES - 1 {
                    crate::sched::preemption_point();
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
            space.teardown();
            discard(&p, parent);
            Err(e)
        }
    }
}

/// Drops the record of a process that never started (and its quota unit).
fn discard(p: &Arc<Process>, parent: Option<&Arc<Process>>) {
    task::forget_process(p.pid);
    if let Some(pp) = parent {
        pp.release_child();
    }
}

/// The first user frame of a thread at `entry` with `arg` in RDI and the
/// stack at `stack_top`.
fn user_frame(entry: u64, stack_top: u64, arg: u64) -> TrapFrame {
    TrapFrame {
        rip: entry,
        cs: USER_CS as u64,
        rflags: 0x202,      // IF set, reserved bit 1
        rsp: stack_top - 8, // as if `entry` had been called
        ss: USER_DS as u64,
        rdi: arg,
        ..TrapFrame::default()
    }
}

/// Starts a thread of `p` in ring 3 at `entry` with `arg` in RDI and the stack
/// at `stack_top`.
pub fn start_thread(p: &Arc<Process>, entry: u64, stack_top: u64, arg: u64) -> Result<u64, Error> {
    let t = Thread::new_user(p, &user_frame(entry, stack_top, arg), p.initial_priority())?;
    let tid = t.tid;
    sched::enqueue(t);
    Ok(tid)
}

/// Spawns a process from a boot image (the `process_spawn` syscall).
///
/// A child never starts after its creator was killed: building it is long
/// (the image is copied and mapped with preemption points between chunks,
/// where a kill from another CPU lands without stopping this thread, which
/// dies only on its way back to ring 3), and a child started then would run
/// on as an orphan of a process that was already ending. So its first
/// thread is queued under the creator's thread-table lock, the lock
/// `process_exit` marks the creator exiting under: either the kill comes
/// later (the child is an ordinary orphan), or the child is dropped here
/// without ever running (as Linux's `copy_process` checks for a fatal
/// signal under the siglock at its end).
pub fn spawn(image: &[u8], parent: &Arc<Process>, arg: u64) -> Result<u64, Error> {
    let (p, entry) = build(image, Some(parent))?;
    if let Some(name) = boot_program(image) {
        p.program.call_once(|| name);
    }
    let frame = user_frame(entry, INIT_STACK_TOP, arg);
    let t = match Thread::new_user(&p, &frame, p.initial_priority()) {
        Ok(t) => t,
        Err(e) => {
            discard(&p, Some(parent));
            return Err(e);
        }
    };
    let mut t = Some(t);
    {
        let table = parent.threads.lock();
        if !table.is_exiting() {
            // Lock order: a thread table before a run queue (as kill_all).
            sched::enqueue(t.take().expect("the thread is still ours"));
        }
    }
    if let Some(t) = t {
        // The creator is being killed. The child's thread table holds the
        // thread too (a cycle through `Thread::process` until the thread
        // exits, which it never will): empty it, then drop the last
        // reference outside every lock. The child ends here without having
        // run; its record stays the parent's child until `discard`.
        let rows = p.threads.lock().take_rows();
        drop(rows);
        drop(t);
        discard(&p, Some(parent));
        return Err(Error::NotFound);
    }
    Ok(p.pid)
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

    let ro = crate::vm::prot_flags(0).map_err(|_| "bad flags")?;
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
    space
        .map_frames(BOOTINFO_VA, info_frame.addr(), 1, ro, false)
        .map_err(|_| "cannot map the boot-info page")?;
    start_thread(&p, entry, INIT_STACK_TOP, BOOTINFO_VA)
        .map_err(|_| "cannot start init's thread")?;
    Ok(())
}

/// The last thread of `p` is gone (called from the drop of that `Thread`,
/// after its kernel stack and address-space reference were released): record
/// the status, release the memory, settle the family's records, then wake
/// waiters — so a parent whose wait returns sees the memory already freed.
pub fn ended(p: Arc<Process>, status: u64) {
    let status = {
        let mut s = p.status.lock();
        *s.get_or_insert(status)
    };
    let rows = p.threads.lock().take_rows();
    drop(rows); // only status words are left: no thread references
    crate::ipc::close_all(&p.ipc.handles); // peers see peer death
    p.release_space();
    p.mark_ended();
    let waiters = core::mem::take(&mut *p.waiters.lock());
    let pid = p.pid;
    // The dying thread's reference goes before anyone is woken (if it is
    // the last one, the process count drops now).
    drop(p);
    for w in waiters {
        sched::wake(&w);
    }
    if pid == INIT_PID {
        let code = abi::status::decode(status);
        crate::println!("mica: init ended ({code:?}); powering off");
        crate::arch::qemu::exit(code == abi::status::Status::Exited(0));
    }
}

/// Ends the caller's whole process with `status` (the `process_exit` syscall).
///
/// Under the thread-table lock (the lock thread creation takes to add a
/// thread) the process is marked exiting and every listed thread is killed
/// ([`Thread::kill`]): no thread can be added afterwards, and none listed
/// before escapes, so every thread dies before it runs user code again.
pub fn exit_current_process(status: u64) -> ! {
    let cur = sched::current();
    if let Some(p) = &cur.process {
        p.status.lock().get_or_insert(status);
        p.threads.lock().kill_all(cur.tid);
    }
    sched::exit_current(status)
}

/// How a blocking wait ended: with a result, or because the waiter's own
/// process is being killed (it must then die, holding no references).
enum Woken {
    Done(Result<u64, Error>),
    Killed,
}

/// Ends the caller if `w` says it was killed. Its references are gone by
/// now: the thread never returns from `exit_current`, so anything still
/// held on this stack would leak and keep it (and its process) alive.
fn finish(w: Woken) -> Result<u64, Error> {
    match w {
        Woken::Done(r) => r,
        Woken::Killed => {
            sched::check_killed();
            unreachable!("a killed thread returned from check_killed")
        }
    }
}

/// Waits for child `pid` of the caller to end; returns its status word.
pub fn wait(pid: u64) -> Result<u64, Error> {
    finish(wait_inner(pid))
}

fn wait_inner(pid: u64) -> Woken {
    let cur = sched::current_arc();
    let Some(me) = cur.process.clone() else {
        return Woken::Done(Err(Error::NotFound));
    };
    let Some(child) = task::process_by_id(pid) else {
        return Woken::Done(Err(Error::NotFound));
    };
    if child.parent() != me.pid {
        return Woken::Done(Err(Error::NotFound));
    }
    loop {
        {
            let mut w = child.waiters.lock();
            if child.has_ended() {
                drop(w);
                let st = child.status.lock().unwrap_or(0);
                // Only the parent removes a child that has a parent; two of
                // its threads waiting at once: the second finds nothing.
                if task::take_process(pid).is_some() {
                    me.release_child();
                    return Woken::Done(Ok(st));
                }
                return Woken::Done(Err(Error::NotFound));
            }
            if w.try_reserve(1).is_err() {
                return Woken::Done(Err(Error::NoMemory));
            }
            cur.set_state(State::Blocked);
            w.push(cur.clone());
        }
        sched::block();
        if cur.killed() {
            // Woken by a kill, not by the child: leave its list now. A stale
            // entry would keep this dead thread -- and so its whole process
            // -- alive until the child ends.
            let stale = {
                let mut w = child.waiters.lock();
                w.iter()
                    .position(|x| Arc::ptr_eq(x, &cur))
                    .map(|i| w.swap_remove(i))
            };
            drop(stale); // outside the lock (not the last reference: `cur`)
            return Woken::Killed;
        }
    }
}

/// Waits for thread `tid` of the caller's process to end; returns its status
/// and forgets it (its row in the thread table goes).
pub fn join(tid: u64) -> Result<u64, Error> {
    finish(join_inner(tid))
}

fn join_inner(tid: u64) -> Woken {
    let cur = sched::current_arc();
    if tid == cur.tid {
        return Woken::Done(Err(Error::InvalidArgument));
    }
    let Some(p) = cur.process.clone() else {
        return Woken::Done(Err(Error::NotFound));
    };
    loop {
        let r = p.threads.lock().join(tid);
        let t = match r {
            None => return Woken::Done(Err(Error::NotFound)),
            Some(Ok(status)) => return Woken::Done(Ok(status)),
            Some(Err(t)) => t,
        };
        let mut j = t.joiners.lock();
        // The exiting thread records its status in the table before it
        // turns Dead, and takes its joiners after: seen Dead => the table
        // has the status (loop); not Dead => it will wake us.
        if t.state() == State::Dead {
            continue;
        }
        if j.try_reserve(1).is_err() {
            return Woken::Done(Err(Error::NoMemory));
        }
        cur.set_state(State::Blocked);
        j.push(cur.clone());
        drop(j);
        sched::block();
        if cur.killed() {
            // The joinee is of the same process, so it is being killed too
            // and will drop its joiner list; leave it now all the same.
            let stale = {
                let mut j = t.joiners.lock();
                j.iter()
                    .position(|x| Arc::ptr_eq(x, &cur))
                    .map(|i| j.swap_remove(i))
            };
            drop(stale);
            return Woken::Killed;
        }
    }
}

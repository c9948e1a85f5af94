//! `killed_process_spawns_no_child`: a process killed while one of its
//! threads is inside a long `process_spawn` starts no child. Its child
//! program (spawn_killed), the image it spawns and the zero pages that
//! image's data segment is copied from.

use super::{fixed_sleeper, CHILD_STACK_TOP};
use crate::lifecycle::{code, info, settle, spawn_code};
use crate::note;
use crate::util::TestResult;
use abi::status::{self, Status};
use abi::Sysnum;
use core::arch::global_asm;

/// Where the spawn_killed child builds its image.
const SPAWN_BUF: u64 = 0x2000_0000;
/// The spawn_killed child's sysinfo page; its last word is the flag its
/// spawning thread raises when `process_spawn` returns.
const SPAWN_INFO: u64 = 0x70_0000;
const SPAWN_FLAG_AT: u64 = 4092;
/// Where this program builds that image first.
const IMAGE_AT: u64 = 0x6300_0000_0000;
/// The zero data segment of that image (large: slow to copy and map).
const IMAGE_DATA_BYTES: usize = 8 << 20;

global_asm!(
    ".pushsection .rodata.mica_rev_life_spawn_killed, \"a\"",
    // spawn_killed: RDI = a boot image's length (low 32 bits) | the length
    // of its non-zero prefix (high 32 bits), which follows the code. Maps
    // the image's bytes at SPAWN_BUF (zero-filled), copies the prefix in,
    // reads the free memory (sysinfo into the SPAWN_INFO page), starts a
    // killer thread with that figure, and spawns the (large, slow to copy)
    // image: on its return it raises the SPAWN_INFO flag, then
    // process_exit(8). The killer watches the free memory, yielding between
    // looks; once half the image's size has gone, the kernel's transient
    // copy of the image exists (allocated whole when the spawn starts): the
    // spawn is in flight, so process_exit(9), or 10 if the flag says the
    // spawn had already returned. The kill is triggered by the spawn's own
    // progress, not by a timer (the old 1 ms sleep lost the race to the
    // whole spawn under icount), so it lands inside the spawn at one CPU too,
    // where the killer runs only when the spawn reaches a preemption point.
    // The spawner runs below the killer, and the killer sleeps 20 us
    // between looks: its wake-up preempts the spawn at the next preemption
    // point. (With equal priorities the killer ran only when the spawner's
    // time slice ended; once the user copy moved quadwords, session 22, an
    // 8 MiB spawn under icount ended inside one slice and no kill landed.)
    "mica_rev_spawn_killed:",
    "mov r12d, edi",               // r12: the image's length
    "mov r13, rdi",
    "shr r13, 32",                 // r13: its prefix's length
    "mov edi, {sbuf}",             // rdi: the buffer
    "mov rsi, r12",                // rsi: the image's length
    "mov edx, {write}",
    "mov eax, {map}",
    "syscall",
    "cmp rax, -4095",
    "jae 9f",
    "lea rsi, [rip + mica_rev_spawn_killed_end]", // rsi: the prefix
    "mov edi, {sbuf}",             // rdi: the buffer
    "mov rcx, r13",                // rcx: bytes to copy
    "rep movsb",
    "mov edi, {sinfo}",            // rdi: the info page
    "mov esi, 4096",
    "mov edx, {write}",
    "mov eax, {map}",
    "syscall",
    "cmp rax, -4095",
    "jae 9f",
    "mov edi, {sinfo}",
    "mov esi, {info_len}",
    "mov eax, {sysinfo}",
    "syscall",
    "lea rdi, [rip + 2f]",         // rdi: entry = the killer thread
    "mov rsi, {stack_top}",
    "mov rdx, [{sinfo} + {info_free}]", // rdx: arg = the free bytes now
    "mov eax, {spawn}",
    "syscall",
    "cmp rax, -4095",
    "jae 9f",
    "mov edi, {lowest}",           // the spawner below its killer: the
    "mov eax, {setprio}",          // killer's wake-up preempts the spawn at
    "syscall",                     // its next preemption point
    "mov edi, {sbuf}",             // rdi: the image
    "mov rsi, r12",                // rsi: its length
    "xor edx, edx",
    "mov eax, {pspawn}",
    "syscall",
    "mov dword ptr [{sinfo} + {sflag}], 1", // the spawn came back
    "mov edi, 8",                  // ... before the kill
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "2:",                          // killer: rdi = the free bytes before
    "mov r12, rdi",
    "mov r13, {mark}",             // r13: half the image's data size
    "sub r12, r13",                // r12: the mark, that far lower
    "3:",
    "mov edi, {sinfo}",
    "mov esi, {info_len}",
    "mov eax, {sysinfo}",
    "syscall",
    "cmp [{sinfo} + {info_free}], r12", // at or below the mark: in flight
    "jbe 4f",
    "mov edi, {nap}",              // not yet: sleep (the spawner runs
    "mov eax, {sleep}",            // meanwhile, even on this CPU: it is
    "syscall",                     // below us, so a yield would not run it)
    "jmp 3b",
    "4:",
    "mov edi, 9",                  // the spawn is in flight
    "cmp dword ptr [{sinfo} + {sflag}], 0",
    "je 5f",
    "mov edi, 10",                 // too late: the spawn had returned
    "5:",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "9:",
    "mov edi, 99",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_rev_spawn_killed_end:",
    ".popsection",
    pexit = const Sysnum::ProcessExit as u64,
    spawn = const Sysnum::ThreadSpawn as u64,
    pspawn = const Sysnum::ProcessSpawn as u64,
    write = const abi::prot::WRITE,
    map = const Sysnum::MapAnon as u64,
    sbuf = const SPAWN_BUF,
    sysinfo = const Sysnum::SysInfo as u64,
    info_len = const core::mem::size_of::<abi::SysInfo>(),
    stack_top = const CHILD_STACK_TOP,
    sinfo = const SPAWN_INFO,
    sflag = const SPAWN_FLAG_AT,
    info_free = const core::mem::offset_of!(abi::SysInfo, free_bytes),
    mark = const IMAGE_DATA_BYTES / 2,
    sleep = const Sysnum::SleepNs as u64,
    nap = const 20_000,
    setprio = const Sysnum::SetPriority as u64,
    lowest = const abi::MAX_PRIORITY,
);

extern "C" {
    static mica_rev_spawn_killed: u8;
    static mica_rev_spawn_killed_end: u8;
}

/// Case: a process killed while one of its threads is inside a long
/// `process_spawn` (copying and mapping an 8 MiB image, with preemption
/// points where the kill lands) must not start the child: the old kernel
/// finished the spawn and the child ran on as an orphan of a process that
/// had already been ended. The kill is timed by the spawn itself (its
/// killer thread ends the process once the kernel's copy of the image
/// shows in the free memory), so it lands inside the spawn in every mode,
/// icount included. A round counts when the kill won (the process's status
/// is the killer's 9, not the spawner's 8 or the killer's late 10). Two
/// layers stop the orphan today: `lifecycle::spawn`'s exiting check and
/// the syscall exit's `undo_spawn` (which kills a child whose handle never
/// reached user space); the case fails, in every mode, once both are gone.
pub fn killed_process_spawns_no_child() -> TestResult {
    let sleeper = fixed_sleeper();
    let killed = code(
        core::ptr::addr_of!(mica_rev_spawn_killed),
        core::ptr::addr_of!(mica_rev_spawn_killed_end),
    );
    let specs_len = abi::bootimg::encoded_len(&image_specs(sleeper, &[]));
    let total = specs_len + IMAGE_DATA_BYTES;
    libipc::sys::map_anon(IMAGE_AT, total as u64, abi::prot::WRITE)
        .map_err(|_| "map_anon(image) failed")?;
    let r = (|| {
        // SAFETY: mapped writable just above; nothing else references it.
        let out = unsafe { core::slice::from_raw_parts_mut(IMAGE_AT as *mut u8, total) };
        // The data bytes are zeros, read from a zero mapping of their own.
        let zeros = ZeroSlice::new(IMAGE_DATA_BYTES)?;
        let len = abi::bootimg::encode(0x40_0000, &image_specs(sleeper, zeros.bytes()), out)
            .map_err(|_| "cannot encode the big image")?;
        let prefix = out[..len]
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i + 1);
        // Rounds the kill won with no child left (`clean`), and with one
        // (`late`). A kill set after the spawn's last test of it (the
        // exit's work test) is taken, as a pending IPI, on the spawner's
        // first user instruction: the spawn had returned, the flag not yet
        // raised, and the child rightly runs on (its handle died in RAX;
        // Linux delivers a signal the same way, after the syscall's
        // effects). On a loaded host a vCPU descheduled in that window
        // widens it (seen twice in session 24's smoke runs at -smp 4 and
        // 8), so one such round is tolerated; a kernel that does not undo
        // a spawn its kill landed inside leaves a child in every round the
        // kill won, so it fails on the second (or finds no clean round).
        let (mut clean, mut late) = (0, 0);
        for round in 0..6 {
            if round >= 3 && clean > 0 {
                break;
            }
            let (before, _) = settle(50, |_| false)?;
            let pid = spawn_code(killed, &out[..prefix], len as u64 | (prefix as u64) << 32)?;
            let st = libipc::sys::process_wait(pid).map(status::decode);
            let now = info()?;
            note!(
                "round {round}: {st:?}; processes {} -> {}",
                before.processes,
                now.processes
            );
            match st {
                Ok(Status::Exited(9)) if now.processes > before.processes => {
                    late += 1;
                    if late > 1 {
                        return Err("a child spawned after its creator's kill runs on");
                    }
                }
                Ok(Status::Exited(9)) => clean += 1,
                Ok(Status::Exited(8 | 10)) => {}
                _ => return Err("the spawning child ended oddly"),
            }
            settle(3000, |a| a.processes <= before.processes)?;
        }
        if clean == 0 {
            return Err(if late > 0 {
                "a child spawned after its creator's kill runs on"
            } else {
                "the kill never landed during the spawn"
            });
        }
        Ok(())
    })();
    // SAFETY: nothing references the image buffer any more.
    let _ = unsafe { libipc::sys::unmap(IMAGE_AT, total as u64) };
    r
}

/// A code segment of `code` and a writable data segment of `data`.
fn image_specs<'a>(code: &'a [u8], data: &'a [u8]) -> [abi::bootimg::SegmentSpec<'a>; 2] {
    use abi::bootimg::{SegmentSpec, SEG_R, SEG_W, SEG_X};
    [
        SegmentSpec {
            vaddr: 0x40_0000,
            bytes: code,
            mem_size: code.len() as u64,
            flags: SEG_R | SEG_X,
        },
        SegmentSpec {
            vaddr: 0x100_0000,
            bytes: data,
            mem_size: data.len() as u64,
            flags: SEG_R | SEG_W,
        },
    ]
}

/// A read-only mapping of zero pages, unmapped on drop.
struct ZeroSlice(usize);

const ZERO_AT: u64 = 0x6380_0000_0000;

impl ZeroSlice {
    fn new(len: usize) -> Result<ZeroSlice, &'static str> {
        libipc::sys::map_anon(ZERO_AT, len as u64, 0).map_err(|_| "map_anon(zeros) failed")?;
        Ok(ZeroSlice(len))
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: mapped read-only (zero-filled) by `new` until drop.
        unsafe { core::slice::from_raw_parts(ZERO_AT as *const u8, self.0) }
    }
}

impl Drop for ZeroSlice {
    fn drop(&mut self) {
        // SAFETY: the slice from `bytes` does not outlive `self`.
        let _ = unsafe { libipc::sys::unmap(ZERO_AT, self.0 as u64) };
    }
}

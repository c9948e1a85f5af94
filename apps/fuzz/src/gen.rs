//! Random syscalls: numbers across the whole range and beyond, arguments
//! from a mix of interesting values, and the rules that decide whether a
//! call may run in the fuzz process itself or must go to a throwaway child.
//!
//! # Argument mix
//! Each argument is drawn from one of: small integers, a mapped user address
//! (the worker's own arena, or the child's code, data and stack), an
//! unmapped user address, a kernel-half address, a non-canonical address,
//! the last user page, a wrapping length, a length up to the whole user
//! range, a page multiple, or 64 random bits. Numbers are sometimes a
//! declared code with high bits set.
//!
//! # Direct or child
//! A call runs directly when it cannot hurt the fuzzer: it ends nobody, it
//! writes or unmaps only the worker's arena (or nothing the kernel will
//! accept), and it starts no thread. Everything else is appended to the
//! worker's next child script, unchanged except for the few sanitising rules
//! in [`for_child`] (exit codes that say where the script stopped, bounded
//! sleeps, and the `fuzz.skip` switches).

use crate::child::{self, Call, CHILD_DATA, CHILD_TEXT, TIMED};
use crate::util::Rng;
use abi::layout::{INIT_STACK_TOP, PAGE_SIZE, USER_END, USER_MIN};
use abi::{prot, Sysnum, SYSNUM_END};
use fuzz::{Category, Config};

/// The last user page.
pub const LAST_PAGE: u64 = USER_END - PAGE_SIZE;
/// Where worker arenas live: worker `w` owns
/// `[ARENA_BASE + w * ARENA_STRIDE, + ARENA_BYTES)`, one 2 MiB page table.
pub const ARENA_BASE: u64 = 0x6000_0000_0000;
/// Distance between arenas.
pub const ARENA_STRIDE: u64 = 0x40_0000;
/// Bytes of an arena.
pub const ARENA_BYTES: u64 = 0x20_0000;
/// A user range nobody maps on purpose (the "unmapped" category; a child's
/// random `map_anon` may still land there).
const UNMAPPED: u64 = 0x3000_0000_0000;
/// A user page no call ever names, for `debug_write`'s quiet pointers.
const NEVER_MAPPED: u64 = 0x3100_0000_0000;
/// A length above this (2 MiB) is "huge" (`fuzz.skip=huge`): zeroing 16 MiB
/// for `map_anon` already keeps TCG in the kernel for 25-35 ms.
pub const HUGE_BYTES: u64 = 2 << 20;
/// The longest sleep a script or a worker may ask for.
const MAX_SLEEP_NS: u64 = 2_000_000;

/// Where a call will run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// In the worker thread.
    Direct,
    /// In the next child script.
    Child,
}

/// The start of worker `w`'s arena.
pub fn arena(w: usize) -> u64 {
    ARENA_BASE + w as u64 * ARENA_STRIDE
}

/// A random syscall number: mostly valid ones, sometimes just past the end,
/// sometimes anything.
fn number(r: &mut Rng) -> u64 {
    match r.below(16) {
        0 => SYSNUM_END + r.below(8),
        1 => r.pick(&[u64::MAX, 1 << 32, 1 << 63, 0xffff_ffff, SYSNUM_END + 0x100]),
        2 => r.next(),
        // A declared code with high bits set (a dispatcher that truncated
        // the number would run that syscall instead of refusing it).
        3 => r.pick(&TRUNCATED) | r.below(SYSNUM_END),
        _ => r.below(SYSNUM_END),
    }
}

/// High bits a cast to u8, u16 or u32 would drop, or a signed view would
/// read as negative.
const TRUNCATED: [u64; 6] = [
    1 << 8,
    1 << 16,
    1 << 32,
    1 << 63,
    0xffff_ffff_0000_0000,
    0xffff_ffff_ffff_ff00,
];

/// A random argument; `mapped` is a mapped user address of the target.
fn arg(r: &mut Rng, mapped: u64) -> u64 {
    let page = r.below(512) * PAGE_SIZE;
    match r.below(11) {
        0 => r.below(17),
        1 => r.pick(&[0, 1, 2, 3, 4, 7, 8, 0xfff, 0x1000, 0x1001, u32::MAX as u64]),
        2 => mapped + page + if r.one_in(4) { r.below(PAGE_SIZE) } else { 0 },
        3 => UNMAPPED + page,
        4 => {
            let any = 0xffff_8000_0000_0000 | r.next();
            r.pick(&[
                0xffff_8000_0000_0000,
                0xffff_ffff_8000_0000,
                0xffff_ffff_8010_0000,
                0xffff_ffff_ffff_f000,
                any,
            ])
        }
        5 => {
            let low = r.next() & 0x7fff_ffff_f000 & r.pick(&[0, u64::MAX]);
            r.pick(&[USER_END, 0x8000_0000_0000_0000, 0x0000_8000_0000_1000]) | low
        }
        6 => LAST_PAGE + r.pick(&[0, 8, 0xff8, 0xfff]),
        7 => r.pick(&[
            u64::MAX,
            u64::MAX - 0xfff,
            1 << 63,
            0u64.wrapping_sub(PAGE_SIZE),
        ]),
        8 => r.pick(&[
            USER_END,
            USER_END - USER_MIN,
            USER_END - mapped,
            1 << 46,
            1 << 40,
            1 << 30,
        ]),
        9 => (r.below(64) + 1) * PAGE_SIZE,
        _ => r.next(),
    }
}

/// A random call, with the arguments the memory calls care about drawn a
/// little more often (protection bits, page-aligned addresses).
pub fn random_call(r: &mut Rng, mapped: u64) -> Call {
    let nr = number(r);
    let mut args = [0u64; 6];
    for a in args.iter_mut() {
        *a = arg(r, mapped);
    }
    if matches!(Sysnum::try_from(nr), Ok(Sysnum::MapAnon | Sysnum::Protect)) && r.one_in(2) {
        args[2] = r.pick(&[0, prot::WRITE, prot::EXEC, prot::ALL, 1, 1 << 40]);
    }
    // vm (issue 11): the process argument is often SELF or a small handle
    // number, the protection often a valid one.
    if matches!(
        Sysnum::try_from(nr),
        Ok(Sysnum::SpaceMap | Sysnum::SpaceProtect | Sysnum::SpaceUnmap | Sysnum::SpaceClone)
    ) && r.one_in(2)
    {
        args[0] = r.pick(&[abi::vm::SELF, 0, 1, 2, 3]);
        args[3] = r.pick(&[0, prot::WRITE, prot::EXEC, prot::ALL, 1, 1 << 40]);
    }
    Call { flags: 0, nr, args }
}

/// Whether the kernel would accept `[addr, addr+len)` as a range to map,
/// unmap or protect (mirrors its check: page-aligned start, non-empty, no
/// overflow once rounded up, inside the user half).
fn accepted_range(addr: u64, len: u64) -> Option<(u64, u64)> {
    if !addr.is_multiple_of(PAGE_SIZE) || len == 0 {
        return None;
    }
    let len = len.checked_next_multiple_of(PAGE_SIZE)?;
    let end = addr.checked_add(len)?;
    (addr >= USER_MIN && end <= USER_END).then_some((addr, end))
}

/// Whether `[addr, addr+len)` passes the kernel's user-range test.
fn user_range_ok(addr: u64, len: u64) -> bool {
    match addr.checked_add(len) {
        Some(end) => len == 0 && addr < USER_END || addr >= USER_MIN && end <= USER_END,
        None => false,
    }
}

/// Whether a call may block or give up the CPU (never timed).
pub fn blocking(nr: u64) -> bool {
    matches!(
        Sysnum::try_from(nr),
        Ok(Sysnum::Yield
            | Sysnum::SleepNs
            | Sysnum::ThreadJoin
            | Sysnum::ProcessWait
            | Sysnum::ThreadExit
            | Sysnum::ProcessExit
            // These may hand the CPU to another thread on the way out
            // (migration, a lower priority, a new thread preempting).
            | Sysnum::SetAffinity
            | Sysnum::SetPriority
            | Sysnum::ThreadSpawn
            | Sysnum::ThreadStart
            // IPC waits (a random handle is almost never valid; a valid
            // one may wait for its timeout).
            | Sysnum::IpcCall
            | Sysnum::IpcRecv
            | Sysnum::IpcReplyRecv
            | Sysnum::NtfWait)
    )
}

/// Output only from ranges that cannot be mapped: the call still checks and
/// copies, but the transcript gets no junk.
fn quiet_debug_write(c: &mut Call) {
    if c.nr == Sysnum::DebugWrite as u64 && user_range_ok(c.args[0], c.args[1]) {
        c.args[0] = NEVER_MAPPED + (c.args[0] & 0xfff);
    }
}

/// Rules every call obeys wherever it runs: bounded sleeps, no output of
/// mapped bytes (the transcript stays readable), the skip switches.
fn common(c: &mut Call, cfg: &Config, r: &mut Rng) {
    let Ok(n) = Sysnum::try_from(c.nr) else {
        return;
    };
    match n {
        Sysnum::SleepNs => c.args[0] %= MAX_SLEEP_NS + 1,
        Sysnum::DebugWrite => quiet_debug_write(c),
        Sysnum::SetPriority if cfg.skips(Category::Prio) && c.args[0] < 4 => {
            c.args[0] = 4 + r.below(4);
        }
        _ => {}
    }
    clip_huge(c, cfg);
    if !blocking(c.nr) {
        c.flags |= TIMED;
    }
}

/// `fuzz.skip=huge`: a valid range over [`HUGE_BYTES`] is cut to that.
/// Applied again after [`for_child`] moves addresses (an arena address
/// plus a length up to `USER_END` is refused; the same length from a child's
/// low address is not).
fn clip_huge(c: &mut Call, cfg: &Config) {
    if !cfg.skips(Category::Huge) || c.args[1] <= HUGE_BYTES {
        return;
    }
    let valid = match Sysnum::try_from(c.nr) {
        Ok(Sysnum::MapAnon | Sysnum::Unmap | Sysnum::Protect) => {
            accepted_range(c.args[0], c.args[1]).is_some()
        }
        Ok(Sysnum::ProcessSpawn) => user_range_ok(c.args[0], c.args[1]),
        _ => false,
    };
    if valid {
        c.args[1] = HUGE_BYTES;
    }
}

/// Decides where `c` runs for worker `w`, adjusting it to be safe there.
pub fn place(c: &mut Call, w: usize, cfg: &Config, r: &mut Rng) -> Target {
    common(c, cfg, r);
    let Ok(n) = Sysnum::try_from(c.nr) else {
        return Target::Direct;
    };
    let own = |addr: u64, len: u64| match accepted_range(addr, len) {
        None => true, // refused whatever it names
        Some((s, e)) => {
            (s >= arena(w) && e <= arena(w) + ARENA_BYTES) || (s == LAST_PAGE && e == USER_END)
        }
    };
    let direct = match n {
        Sysnum::Null
        | Sysnum::Yield
        | Sysnum::SleepNs
        | Sysnum::ClockNs
        | Sysnum::CpuId
        | Sysnum::ThreadId
        | Sysnum::SetAffinity
        | Sysnum::SetPriority
        | Sysnum::CpuSyscalls
        | Sysnum::CpuCount
        | Sysnum::SetFsBase
        | Sysnum::SetGsBase
        | Sysnum::DebugWrite
        | Sysnum::ProcessWait
        | Sysnum::ProcessSpawn => true,
        Sysnum::MapAnon | Sysnum::Unmap | Sysnum::Protect => own(c.args[0], c.args[1]),
        Sysnum::SysInfo => {
            c.args[1] < core::mem::size_of::<abi::SysInfo>() as u64
                || !user_range_ok(c.args[0], core::mem::size_of::<abi::SysInfo>() as u64)
                || own(c.args[0] & !0xfff, 4096)
        }
        Sysnum::ThreadExit
        | Sysnum::ProcessExit
        | Sysnum::Shutdown
        | Sysnum::ThreadSpawn
        | Sysnum::ThreadJoin
        | Sysnum::SetChildMaxPriority => false,
        // A random handle here could name one of the fuzzer's own threads
        // or a worker's child: in a child they name its own.
        Sysnum::ThreadKill | Sysnum::ProcessKill => false,
        // IPC: handles are per process; in a child they name its own.
        Sysnum::HandleDup
        | Sysnum::HandleClose
        | Sysnum::EndpointCreate
        | Sysnum::NotificationCreate
        | Sysnum::IpcCall
        | Sysnum::IpcSend
        | Sysnum::IpcRecv
        | Sysnum::IpcReply
        | Sysnum::IpcReplyRecv
        | Sysnum::NtfSignal
        | Sysnum::NtfWait
        | Sysnum::NtfBind
        | Sysnum::HandleGive => false,
        // --- trace (issue 12) --- only reads the caller's memory.
        Sysnum::TraceMark => true,
        // vm (issue 11): random process and memory handles, random
        // addresses. In a child, SELF and its own handles edit only the
        // child (a worker's arena is not at risk there).
        Sysnum::ProcessCreate
        | Sysnum::SpaceMap
        | Sysnum::SpaceUnmap
        | Sysnum::SpaceProtect
        | Sysnum::MemCreate
        | Sysnum::MemMap
        | Sysnum::ThreadStart
        | Sysnum::SpaceClone => false,
        // hw (issue 11): handles again (the fuzzer holds no hardware root,
        // so only the refusals are reachable; a child finds its own table).
        Sysnum::ProcessNotify
        | Sysnum::IoportGrant
        | Sysnum::IoportEnable
        | Sysnum::IrqBind
        | Sysnum::IrqAck => false,
        // Like ThreadKill: a random handle could name a fuzzer thread.
        Sysnum::ThreadSuspend | Sysnum::ThreadResume | Sysnum::ProcessSetFaultEp => false,
        // --- loader (issue 11) --- reads a handle's pid, changes nothing.
        Sysnum::ProcessId => true,
        // init only: always refused here.
        Sysnum::ProcessAllowPrograms => true,
        // --- shell3 --- init only: always refused here.
        Sysnum::TraceDump => true,
    };
    if direct && r.below(8) != 0 {
        Target::Direct
    } else {
        Target::Child
    }
}

/// Re-draws `c`'s address arguments for a child (its mapped addresses are
/// its code, data and stack, not the worker's arena) and applies the child
/// rules: exit codes say where the script stopped, and the `exit_race` /
/// `orphans` switches.
pub fn for_child(c: &mut Call, index: usize, cfg: &Config, r: &mut Rng) {
    let child_mapped = r.pick(&[CHILD_TEXT, CHILD_DATA, INIT_STACK_TOP - 0x1_0000]);
    for a in c.args.iter_mut() {
        if *a >= ARENA_BASE && *a < ARENA_BASE + 64 * ARENA_STRIDE {
            *a = child_mapped + (*a & 0x1f_ffff) % 0x2000;
        }
    }
    quiet_debug_write(c);
    clip_huge(c, cfg);
    let Ok(n) = Sysnum::try_from(c.nr) else {
        return;
    };
    match n {
        Sysnum::ThreadExit | Sysnum::ProcessExit => {
            c.args[0] = child::EXIT_MARK | index as u64;
        }
        Sysnum::ThreadSpawn => {
            // Sometimes start another interpreter on the child's stack page.
            if r.one_in(4) {
                c.args[0] = CHILD_TEXT;
                c.args[1] = INIT_STACK_TOP - 0x8000 - 16 * r.below(64);
            }
            // A thread must start either at the interpreter's first byte
            // (it ends: the script is finite) or where it faults at once:
            // entered mid-interpreter it could loop forever, and then the
            // child never ends (there is no kill yet). The rest of the code
            // page is zeros (`add [rax], al` with RAX = 0: #PF).
            let in_text = c.args[0] > CHILD_TEXT && c.args[0] < CHILD_TEXT + PAGE_SIZE;
            if in_text || cfg.skips(Category::ExitRace) && c.args[0] == CHILD_TEXT {
                c.args[0] = CHILD_TEXT + 0x800;
            }
        }
        // The data segment holds the script: never let it become code a
        // thread could loop in (anonymous pages elsewhere are zeros and
        // fault at once).
        Sysnum::Protect | Sysnum::MapAnon
            if c.args[2] & prot::EXEC != 0
                && c.args[0] < CHILD_DATA + child::DATA_PAGES * PAGE_SIZE
                && c.args[0].saturating_add(c.args[1]) > CHILD_DATA =>
        {
            c.args[2] &= !prot::EXEC;
        }
        // vm (issue 11): as for `thread_spawn`, a thread started in the
        // child itself must not begin mid-interpreter (it could loop).
        Sysnum::ThreadStart => {
            if c.args[1] > CHILD_TEXT && c.args[1] < CHILD_TEXT + PAGE_SIZE {
                c.args[1] = CHILD_TEXT + 0x800;
            }
            if r.one_in(4) {
                c.args[0] = abi::vm::SELF;
            }
        }
        // Its space, edited through SELF: the script's data never becomes
        // code (as for `protect`; the arguments sit one further on).
        Sysnum::SpaceMap | Sysnum::SpaceProtect
            if c.args[3] & prot::EXEC != 0
                && c.args[1] < CHILD_DATA + child::DATA_PAGES * PAGE_SIZE
                && c.args[1].saturating_add(c.args[2]) > CHILD_DATA =>
        {
            c.args[3] &= !prot::EXEC;
        }
        Sysnum::ProcessSpawn => {
            if r.one_in(3) {
                c.args[0] = child::GRANDCHILD_ADDR;
                c.args[1] = child::grandchild_len();
            }
            if cfg.skips(Category::Orphans)
                && c.args[0] >= CHILD_DATA
                && c.args[0] < CHILD_DATA + 0x2000
            {
                c.args[0] = UNMAPPED;
            }
        }
        _ => {}
    }
}

//! fastpath3 (issue 10 item 4's leftovers): ring-3 cases.
//!
//! - [`killed_spawner_leaves_no_child`]: a `thread_kill` that lands while
//!   its victim is inside `process_spawn` (copying a 4 MiB image, with
//!   preemption points) must not leave the new child running with its
//!   handle installed where no thread can name it (breakit2's note 2):
//!   the syscall exit of the killed spawner kills the child and closes the
//!   handle, so the process count settles back.
//! - [`first_fpu_use_after_many_switches_sees_init_state`]: a thread that
//!   never touched the FPU makes thousands of fast-path round trips to a
//!   server whose SIMD/x87 registers hold live values (so no XSAVE/XRSTOR
//!   is done for it: the first-use trap, CR0.TS), then uses the FPU for the
//!   first time: it must see the init state, never the server's values;
//!   afterwards both sides keep their own values across more round trips.

use crate::fastpath::{fpu_echo, same, FPU_BAD, STOP};
use crate::fpu::{self, SimdState};
use crate::lifecycle::{info, settle};
use crate::note;
use crate::spawnrace;
use crate::util::{self, check, ok, TestResult};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message};
use libipc::sys;

/// Case: see the module docs. Eight rounds; in each the spawner is killed
/// 0 to 7/12 of a whole spawn's time into its spawn (or its spawn completed
/// first: then the case ends the child itself), and the process count must
/// settle back to where it was. Before the fix a kill inside the copy left the sleeper running,
/// counted and unreachable (seen: the count stayed one higher).
pub fn killed_spawner_leaves_no_child() -> TestResult {
    spawnrace::with_image(|_, whole| {
        let base = info()?.processes;
        let (mut inside, mut after, mut unstored) = (0, 0, 0);
        for k in 0..8 {
            let t = spawnrace::start()?;
            // 0 to 7/24 of a whole spawn in: the kill lands inside it, at
            // a different stage each round (the copy, the build), and far
            // from its end (7/12 let 1 or 2 of 8 spawns finish first, and
            // one kill in a suite run landed in the window below, session
            // 22: the spawns vary more than `whole`'s two samples show). A
            // kill that lands after the syscall returned,
            // before the spawner stored the handle, is a thread losing a
            // handle it was given (the program's race, as for any
            // handle): near a spawn's end that window is wide at -smp 1,
            // where the killer's timer interrupt waits for the spawn's
            // last preemption point or the return.
            let at = whole * k / 24;
            if at != 0 {
                sys::sleep_ns(at);
            }
            let _ = sys::thread_kill(t.handle());
            let _ = t.join()?;
            if let Some(h) = spawnrace::returned() {
                // The spawn returned before the kill: end the child ourselves.
                after += 1;
                spawnrace::end_child(h);
            } else {
                inside += 1;
            }
            let (mut s, mut ok) = settle(2000, |s| s.processes == base)?;
            // A kill that landed on the spawner's first user instruction
            // after its spawn returned (the program's race, see
            // `spawnrace::end_unstored_child`) leaves a child whose number
            // the spawner never stored: tolerated once a case, as it is
            // rare (a host stall in the spawn's last instructions), while
            // a kernel that does not undo a killed spawn leaves a child in
            // every round killed inside (session 23: two of ~8 loaded
            // suite runs hit the race).
            if !ok && unstored == 0 && spawnrace::end_unstored_child() {
                unstored += 1;
                inside -= 1;
                (s, ok) = settle(2000, |s| s.processes == base)?;
            }
            if !ok {
                note!(
                    "processes {} after the spawner's kill, {base} before ({inside} killed inside, {after} after, {unstored} unstored)",
                    s.processes
                );
                return Err("a killed spawner left its child behind");
            }
        }
        note!(
            "{inside} spawns killed inside, {after} completed first, {unstored} returned unstored (a whole spawn: {} us)",
            whole / 1000
        );
        Ok(())
    })
}

/// Round trips on each side of the first FPU use.
const CALLS: u64 = 2000;

/// `CALLS` register-only round trips to the server.
fn ping(ep: Endpoint, after: impl Fn() -> TestResult) -> TestResult {
    for i in 0..CALLS {
        let m = Message {
            label: 1 + i as u32,
            words: [i, i + 1, i + 2, i + 3, i + 4, i + 5],
        };
        if ok(ipc::call(ep, &m, Some(3_000_000)), "call")? != m {
            return Err("a reply was not the echo of its call");
        }
        after()?;
    }
    Ok(())
}

/// Case: see the module docs. The case's own thread is the client: it is
/// fresh, and this code is soft-float, so nothing touched the FPU in it
/// before `fpu::store` below.
pub fn first_fpu_use_after_many_switches_sees_init_state() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    FPU_BAD.store(0, Ordering::SeqCst);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let t = util::spawn(fpu_echo, ep.0 as u64 | 0x5eed_0003 << 32)?;
    let avx = util::has_avx();
    let r = (|| {
        ping(ep, || Ok(()))?;
        // The first FPU instruction of this thread, after 2 * CALLS
        // switches to and from a server with live values.
        let mut got = SimdState::zeroed();
        fpu::store(&mut got, avx);
        let mut init = SimdState::zeroed();
        init.mxcsr = 0x1f80;
        init.fcw = 0x037f;
        if let Err(e) = got.check(&init, avx) {
            note!("first FPU use after {} round trips", CALLS);
            return Err(e);
        }
        let want = SimdState::pattern(0x0c1e_0004);
        fpu::load(&want, avx);
        let bad = AtomicU64::new(0);
        ping(ep, || {
            let mut got = SimdState::zeroed();
            fpu::store(&mut got, avx);
            if !same(&got, &want, avx) {
                bad.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })?;
        if bad.load(Ordering::Relaxed) != 0 {
            note!(
                "client's registers wrong after {} calls",
                bad.load(Ordering::Relaxed)
            );
            return Err("the client's SIMD/FPU state changed");
        }
        Ok(())
    })();
    let stop = Message {
        label: STOP,
        words: [0; 6],
    };
    ok(ipc::call(ep, &stop, Some(3_000_000)), "stop the server")?;
    util::expect_ok(t.join()?)?;
    ok(ipc::handle_close(ep.0), "close")?;
    r?;
    let srv = FPU_BAD.load(Ordering::SeqCst);
    if srv != 0 {
        note!("server's registers wrong after {srv} receives");
        return Err("the server's SIMD/FPU state changed");
    }
    Ok(())
}

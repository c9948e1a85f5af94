//! break27p (session 27): attacks on cut27p's frame-to-frame message copy
//! (`ipc::fastasm::copy_msg`), both ways of the same-core fast round trip.
//!
//! - [`fast_round_trip_every_register`]: a client and a server on CPU 0,
//!   each making every IPC through [`gpr::syscall_regs`] (every general
//!   register set: garbage in RBX/RBP with no handle sent, a non-canonical
//!   R14 with capacity 0, R15's upper half garbage, which the fast path
//!   ignores without a timeout bit), check every register they get back:
//!   the call arrives with the handle's badge (nonzero, bit 63 set: the
//!   `BADGED` copy's register operand), the label alone (bit 31 set) in
//!   RSI, the six words, RBX/RBP zero, R14/R15 kept; the reply the same
//!   with badge 0. cut27p's own case passed 0 in R14/R15 (and
//!   `ipc_syscall` names them inputs only, so it never reads them back)
//!   and a badge of 0 on the call. Seen failing with `copy_msg` storing
//!   the immediate 0 for the call's badge too (the server's RDI 0) and
//!   with a stray store of 0 into R15's slot (the receiver's R15 lost),
//!   neither of which cut27p's or break24e's cases saw.
//! - [`fast_calls_into_a_bound_receiver_carry_the_badge`]: the same with
//!   a notification bound to the server: a fast call into its bound
//!   receive delivers through its result slot (`give_call`'s
//!   `MsgSource::msg`, not the asm copy), its reply_recv takes the slow
//!   path. Seen failing with `FrameMsg::msg` building the message with
//!   badge 0 (the fast path's own echo cases with a bound server never
//!   look at the badge).

use crate::fastpath::fast_counts;
use crate::gpr::{self, GprFrame, R11, R14, R15, RBP, RBX, RCX, RDI, RSI, WORDS};
use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::{decode_result, rights, Sysnum};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message};
use libipc::sys;

/// Round trips.
const ROUNDS: u64 = 200;
/// The client's handle's badge: bit 63 and low bits set.
const BADGE: u64 = 0x8027_bade_0000_27b1;
/// The server's first bad round (0: none).
static SERVER_BAD: AtomicU64 = AtomicU64::new(0);

/// Request `i` (label bit 31 set).
fn request(i: u64) -> Message {
    Message {
        label: 0x8027_0000 | i as u32,
        words: [
            i ^ 0x27b0_0000_0000_0001,
            !i,
            i << 13 | 5,
            u64::MAX - i,
            i.rotate_right(9),
            0x1234_5678_9abc_def0 ^ i,
        ],
    }
}

/// The reply to request `i`.
fn reply(i: u64) -> Message {
    let r = request(i);
    Message {
        label: 0xf027_0000 | i as u32,
        words: r.words.map(|w| w ^ 0xfeed_f00d_0000_0027),
    }
}

/// One IPC `nr` on handle `h` sending `m`, every other register garbage
/// from `seed` (RBX/RBP: no handle is sent; R14 non-canonical with
/// capacity 0; R15's upper half garbage).
fn ipc_regs(nr: Sysnum, h: u64, m: &Message, seed: u64) -> GprFrame {
    let mut f = GprFrame::new(seed, 0x202);
    f.nr = nr as u64;
    f.vals[RDI] = h;
    f.vals[RSI] = u64::from(m.label);
    for (k, &r) in WORDS.iter().enumerate() {
        f.vals[r] = m.words[k];
    }
    f.vals[RBX] = 0x5151_0000_27b0_0001 ^ seed;
    f.vals[RBP] = 0x5151_0000_27b0_0002 ^ seed;
    f.vals[R14] = 0xdead_27b0_0000_0014 ^ (seed & 0xffff_ff00);
    f.vals[R15] = (0x27b0_0000 | (seed & 0xffff)) << 32;
    gpr::syscall_regs(&mut f);
    f
}

/// `f` came back with RAX 0 and message `m` with `badge`: RDI, RSI (the
/// label alone), the words, RBX/RBP 0, every other register but RCX/R11
/// as it went in.
fn check_received(what: &str, f: &GprFrame, m: &Message, badge: u64) -> TestResult {
    if decode_result(f.rax_out) != Ok(0) {
        note!("{what}: rax {:#x}", f.rax_out);
        return Err("the IPC failed");
    }
    let mut want = f.vals;
    want[RDI] = badge;
    want[RSI] = u64::from(m.label);
    want[RBX] = 0;
    want[RBP] = 0;
    for (k, &r) in WORDS.iter().enumerate() {
        want[r] = m.words[k];
    }
    for (i, (&got, &want)) in f.out.iter().zip(&want).enumerate() {
        if i != RCX && i != R11 && got != want {
            note!("{what}: {} = {got:#x}, expected {want:#x}", gpr::NAMES[i]);
            return Err("a register after a fast IPC is not what the ABI defines");
        }
    }
    check(f.rsp_after == f.rsp_before, "RSP changed across an IPC")
}

/// [`server`]'s mode bit (`arg` bit 32): a notification bound to it.
const BOUND: u64 = 1 << 32;

/// The server on CPU 0 (`arg`: the endpoint, and [`BOUND`]): the first
/// request by `recv`, then each answered by a `reply_recv` through
/// [`gpr::syscall_regs`] whose registers are checked; exits 0, else with
/// the bad round (also in [`SERVER_BAD`]).
extern "C" fn server(arg: u64) -> ! {
    if !util::pin0() {
        sys::thread_exit(1000);
    }
    if arg & BOUND != 0
        && ipc::notification_create()
            .and_then(|n| ipc::bind(Some(n)))
            .is_err()
    {
        sys::thread_exit(1002);
    }
    let arg = arg as u32 as u64;
    if ipc::recv(Endpoint(arg as u32), None).is_err() {
        sys::thread_exit(1001);
    }
    for i in 1..ROUNDS {
        let f = ipc_regs(Sysnum::IpcReplyRecv, arg, &reply(i - 1), 0x27b1 ^ i << 20);
        if check_received("server", &f, &request(i), BADGE).is_err() {
            SERVER_BAD.store(i, Ordering::SeqCst);
            let _ = ipc::reply(&reply(i));
            sys::thread_exit(i as i32);
        }
    }
    let _ = ipc::reply(&reply(ROUNDS - 1));
    sys::thread_exit(0)
}

/// Case: see the module docs.
pub fn fast_round_trip_every_register() -> TestResult {
    round_trips(0)
}

/// Case: see the module docs.
pub fn fast_calls_into_a_bound_receiver_carry_the_badge() -> TestResult {
    round_trips(BOUND)
}

/// [`ROUNDS`] round trips with a [`server`] in `mode`, every register
/// checked on both sides; the calls mostly fast, and the replies too
/// unless the server is [`BOUND`].
fn round_trips(mode: u64) -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    SERVER_BAD.store(0, Ordering::SeqCst);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let badged = ok(
        ipc::handle_dup(ep.0, rights::SEND, BADGE),
        "handle_dup with a badge",
    )?;
    let t = util::spawn(server, u64::from(ep.0) | mode)?;
    let (c0, r0) = fast_counts();
    let mut verdict = Ok(());
    for i in 0..ROUNDS {
        if SERVER_BAD.load(Ordering::SeqCst) != 0 {
            break;
        }
        let f = ipc_regs(
            Sysnum::IpcCall,
            u64::from(badged),
            &request(i),
            0x27c0 ^ i << 24,
        );
        // The first wrong reply kept; the rounds go on, so that the
        // server (waiting for the next call) ends.
        if verdict.is_ok() {
            verdict = check_received("client", &f, &reply(i), 0);
        }
    }
    let (c1, r1) = fast_counts();
    let st = t.join()?;
    let _ = ipc::handle_close(badged);
    let _ = ipc::handle_close(ep.0);
    let bad = SERVER_BAD.load(Ordering::SeqCst);
    if bad != 0 || st != abi::status::Status::Exited(0) {
        note!("server: bad round {bad}, status {st:?}");
        return Err("the server received registers the ABI does not define");
    }
    verdict?;
    // Both directions mostly fast (the counters are the machine's).
    let replies_slow = mode & BOUND != 0;
    if c1 - c0 < ROUNDS / 2 || (!replies_slow && r1 - r0 < ROUNDS / 2) {
        note!("fast calls {}, fast reply_recvs {}", c1 - c0, r1 - r0);
        return Err("the round trips did not take the fast path");
    }
    Ok(())
}

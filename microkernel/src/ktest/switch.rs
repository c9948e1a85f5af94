//! ktest of `switch_context`: two kernel contexts swap and each keeps its
//! callee-saved registers.

use crate::mem::kstack::KernelStack;
use crate::println;
use core::sync::atomic::{AtomicU64, Ordering};

/// Saved RSP of the ktest's context while the probe context runs.
static SWITCH_MAIN_RSP: AtomicU64 = AtomicU64::new(0);
/// Saved RSP of the probe context while the ktest runs.
static SWITCH_OTHER_RSP: AtomicU64 = AtomicU64::new(0);
/// What the probe context saw in rbx, rbp, r12-r15 when resumed.
static SWITCH_OTHER_SEEN: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

/// The ktest side's sentinels (rbx, rbp, r12, r13, r14, r15).
const SENTINELS_MAIN: [u64; 6] = [
    0x5ca1_ab1e_0000_00b1,
    0x5ca1_ab1e_0000_00b2,
    0x5ca1_ab1e_0000_0012,
    0x5ca1_ab1e_0000_0013,
    0x5ca1_ab1e_0000_0014,
    0x5ca1_ab1e_0000_0015,
];
/// The probe side's sentinels.
const SENTINELS_OTHER: [u64; 6] = [
    0x0dd_ba11_0000_00b1,
    0x0dd_ba11_0000_00b2,
    0x0dd_ba11_0000_0012,
    0x0dd_ba11_0000_0013,
    0x0dd_ba11_0000_0014,
    0x0dd_ba11_0000_0015,
];

core::arch::global_asm!(
    r#"
    .section .text.ktest, "ax"
    // ktest_switch_there_and_back(rdi = &main saved RSP, rsi = probe's RSP,
    // rdx = *mut [u64; 6]): holds SENTINELS_MAIN in the six callee-saved
    // registers across switch_context to the probe and back, then stores
    // what they hold afterwards.
    .global ktest_switch_there_and_back
ktest_switch_there_and_back:
    push rbx                                // the caller's callee-saved registers
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdx                                // rdx: result pointer (caller-saved)
    movabs rbx, {m0}
    movabs rbp, {m1}
    movabs r12, {m2}
    movabs r13, {m3}
    movabs r14, {m4}
    movabs r15, {m5}
    call switch_context                     // to the probe; back when it switches
    pop rdx
    mov [rdx], rbx                          // what survived the round trip
    mov [rdx + 8], rbp
    mov [rdx + 16], r12
    mov [rdx + 24], r13
    mov [rdx + 32], r14
    mov [rdx + 40], r15
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    // The probe context (first entered by switch_context's `ret` on a fresh
    // stack): loads SENTINELS_OTHER, switches back, and when resumed records
    // what its registers hold, then switches back for good.
    .global ktest_switch_probe
ktest_switch_probe:
    movabs rbx, {o0}
    movabs rbp, {o1}
    movabs r12, {o2}
    movabs r13, {o3}
    movabs r14, {o4}
    movabs r15, {o5}
    lea rdi, [rip + {other}]                // rdi: where the probe's RSP is saved
    mov rsi, [rip + {main}]                 // rsi: the ktest's saved RSP
    call switch_context
    lea rax, [rip + {seen}]                 // rax: SWITCH_OTHER_SEEN
    mov [rax], rbx
    mov [rax + 8], rbp
    mov [rax + 16], r12
    mov [rax + 24], r13
    mov [rax + 32], r14
    mov [rax + 40], r15
    lea rdi, [rip + {other}]
    mov rsi, [rip + {main}]
    call switch_context                     // never resumed
    ud2
    "#,
    m0 = const SENTINELS_MAIN[0],
    m1 = const SENTINELS_MAIN[1],
    m2 = const SENTINELS_MAIN[2],
    m3 = const SENTINELS_MAIN[3],
    m4 = const SENTINELS_MAIN[4],
    m5 = const SENTINELS_MAIN[5],
    o0 = const SENTINELS_OTHER[0],
    o1 = const SENTINELS_OTHER[1],
    o2 = const SENTINELS_OTHER[2],
    o3 = const SENTINELS_OTHER[3],
    o4 = const SENTINELS_OTHER[4],
    o5 = const SENTINELS_OTHER[5],
    other = sym SWITCH_OTHER_RSP,
    main = sym SWITCH_MAIN_RSP,
    seen = sym SWITCH_OTHER_SEEN,
);

extern "C" {
    fn ktest_switch_there_and_back(main_rsp: *mut u64, other_rsp: u64, out: *mut [u64; 6]);
    fn ktest_switch_probe();
}

/// Two kernel contexts, each holding its own sentinels in rbx, rbp and
/// r12-r15, switch to each other twice through `switch_context`; each must
/// find all six as it left them (its caller in the scheduler saves them
/// itself today, so only this catches a missing restore).
pub(super) fn switch_context_restores_callee_saved() -> Result<(), &'static str> {
    let stack = KernelStack::new()?;
    // The probe's first switch pops r15..rbp, RFLAGS (IF off) and returns
    // into ktest_switch_probe with RSP = top - 8, as if called.
    let words: [u64; 8] = [
        0,
        0,
        0,
        0,
        0,
        0,
        0x2,
        ktest_switch_probe as *const () as u64,
    ];
    let base = stack.top() - 8 - 8 * words.len() as u64;
    // SAFETY: the stack is mapped, ours and unused; the words fit in its top.
    unsafe { core::ptr::copy_nonoverlapping(words.as_ptr(), base as *mut u64, words.len()) };
    SWITCH_OTHER_RSP.store(base, Ordering::SeqCst);
    let was_on = crate::arch::cpu::interrupts_enabled();
    crate::arch::cpu::disable_interrupts();
    let mut first = [0u64; 6];
    let mut second = [0u64; 6];
    // Sound because the probe runs on its own stack, touches only the statics
    // above, and always switches back here; interrupts are off, so no other
    // code runs on this CPU in between. The probe is never resumed after the
    // second call, and its stack is freed only then.
    // SAFETY: as explained just above.
    unsafe {
        ktest_switch_there_and_back(
            SWITCH_MAIN_RSP.as_ptr(),
            SWITCH_OTHER_RSP.load(Ordering::SeqCst),
            &mut first,
        );
        ktest_switch_there_and_back(
            SWITCH_MAIN_RSP.as_ptr(),
            SWITCH_OTHER_RSP.load(Ordering::SeqCst),
            &mut second,
        );
    }
    if was_on {
        crate::arch::cpu::enable_interrupts();
    }
    drop(stack);
    let seen: [u64; 6] = core::array::from_fn(|i| SWITCH_OTHER_SEEN[i].load(Ordering::SeqCst));
    const NAMES: [&str; 6] = ["rbx", "rbp", "r12", "r13", "r14", "r15"];
    for i in 0..6 {
        if first[i] != SENTINELS_MAIN[i] || second[i] != SENTINELS_MAIN[i] {
            println!("  note: {} came back as 0x{:x}", NAMES[i], first[i]);
            return Err("a callee-saved register was not restored for the switching side");
        }
        if seen[i] != SENTINELS_OTHER[i] {
            println!(
                "  note: {} came back as 0x{:x} in the probe",
                NAMES[i], seen[i]
            );
            return Err("a callee-saved register was not restored for the resumed side");
        }
    }
    Ok(())
}

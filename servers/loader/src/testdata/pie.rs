#![no_std]
#![no_main]
// A minimal static PIE whose data holds pointers, so the linker emits
// R_X86_64_RELATIVE relocations: TABLE (read-only after relocation: RELRO),
// PTRS (writable data), COUNTER (BSS).
#[no_mangle]
pub static MESSAGE: &str = "hello from a static PIE";
#[no_mangle]
pub static TABLE: [&u8; 3] = [&1, &2, &3];
#[no_mangle]
pub static mut COUNTER: [u64; 512] = [0; 512];
#[no_mangle]
pub static mut PTRS: [&str; 2] = ["a", "b"];
#[no_mangle]
pub extern "C" fn _start() -> ! {
    let t = core::hint::black_box(&TABLE);
    let mut sum = core::hint::black_box(MESSAGE).len() as u64;
    for p in t.iter() {
        sum += **p as u64;
    }
    // SAFETY: one thread, no other references to these statics.
    unsafe {
        let c = &raw mut COUNTER;
        (*c)[sum as usize % 512] += 1;
        let p = core::hint::black_box(&raw mut PTRS);
        sum += (&(*p)[0]).len() as u64;
    }
    loop {
        core::hint::black_box(sum);
    }
}
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

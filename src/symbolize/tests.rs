use super::*;

#[test]
fn backtrace_entries_and_headers_are_recognized() {
    assert_eq!(parse_line("  backtrace:"), Line::Backtrace);
    assert_eq!(parse_line("  backtrace:\r"), Line::Backtrace);
    assert_eq!(
        parse_line("    0xffffffff80107a1d"),
        Line::Address(0xffff_ffff_8010_7a1d)
    );
    assert_eq!(
        parse_line(
            "KERNEL PANIC on CPU 0: EXCEPTION #PF page fault in kernel mode: error=0x0 \
             RIP=0xffffffff80107a1d CS=0x8 RFLAGS=0x10046 RSP=0xffffffff8016a4c0 CR2=0x10000000"
        ),
        Line::Panic {
            rip: Some(0xffff_ffff_8010_7a1d)
        }
    );
    assert_eq!(
        parse_line("KERNEL PANIC on CPU 1: deliberate panic at microkernel/src/smp.rs:511"),
        Line::Panic { rip: None }
    );
}

#[test]
fn user_fault_lines_name_the_program_and_rip() {
    assert_eq!(
        parse_line(
            "[ WARN cpu1] user fault: pid 2 (tests) tid 9 #UD invalid opcode: error=0x0 \
             RIP=0x2012ab RSP=0x7fffffffef00; thread stopped"
        ),
        Line::UserFault {
            program: "tests".into(),
            rip: 0x2012ab
        }
    );
    assert_eq!(
        parse_line(
            "[ WARN cpu0] user fault: pid 5 (?) tid 6 #PF page fault: error=0x4 \
             RIP=0x400000 RSP=0x7ff0 CR2=0x0; thread stopped"
        ),
        Line::UserFault {
            program: "?".into(),
            rip: 0x400000
        }
    );
}

#[test]
fn garbage_and_forged_lines_are_left_alone() {
    for l in [
        "",
        "    0x",
        "    0xzz",
        "    0x00000000000000000", // 17 digits
        "    0xffffffff80107a1d trailing",
        "     0xffffffff80107a1d",
        "[pid 3]     0xffffffff80107a1d",
        "[pid 3] KERNEL PANIC on CPU 0: fake RIP=0x1",
        "[pid 3] [ WARN cpu0] user fault: pid 2 (tests) tid 9 #UD: RIP=0x1",
        "[ WARN cpu0] user fault: pid (tests) tid 9 RIP=0x1",
        "[ WARN cpu0] user fault: pid 2 tid 9 #UD: RIP=0x1",
        "[ WARN cpu0] user fault: pid 2 (tests) tid 9 #UD: RIP=0x",
        "[ WARN cpu0] user fault: pid 2 (tests) tid 9 #UD: RIP=0x11111111111111111",
        "user fault: pid 2 (tests) tid 9 #UD: RIP=0x1",
        "\u{fffd}\u{fffd}\x1b[2J",
    ] {
        assert_eq!(parse_line(l), Line::Other, "{l:?}");
    }
    assert_eq!(
        parse_line("KERNEL PANIC on CPU 0: x RIP=0xnothex"),
        Line::Panic { rip: None }
    );
}

#[test]
fn paths_are_shortened_for_display() {
    assert_eq!(
        short_path("/work/m/microkernel/src/ktest.rs", Some("/work/m")),
        "microkernel/src/ktest.rs"
    );
    assert_eq!(
        short_path("/work/mx/a.rs", Some("/work/m")),
        "/work/mx/a.rs"
    );
    assert_eq!(
        short_path(
            "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/ptr/mod.rs",
            None
        ),
        "library/core/src/ptr/mod.rs"
    );
    assert_eq!(
        short_path(
            "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/spin-0.9.8/src/mutex.rs",
            None
        ),
        "spin-0.9.8/src/mutex.rs"
    );
    assert_eq!(short_path("kernel-cgu.12", None), "kernel-cgu.12");
}

#[test]
fn rust_names_are_demangled_without_their_hash() {
    assert_eq!(
        demangle("_ZN6kernel5ktest21deliberate_page_fault17h909bf5f19df58254E"),
        "kernel::ktest::deliberate_page_fault"
    );
    assert_eq!(demangle("boot_long_mode"), "boot_long_mode");
}

#[test]
fn a_non_elf_is_refused_cleanly() {
    assert!(Symbolizer::parse(b"MICAIMG1 not an elf", None).is_err());
    assert!(Symbolizer::parse(&[], None).is_err());
}

/// The kernel ELF build.rs made (the runner's own build makes it too).
fn kernel() -> (Symbolizer, Vec<u8>) {
    // build.rs names it even when MICA_SKIP_IMAGE skips building it.
    let path = env!("MICA_KERNEL_ELF");
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (built with MICA_SKIP_IMAGE?)"));
    let root = env!("CARGO_MANIFEST_DIR");
    (Symbolizer::parse(&bytes, Some(root)).unwrap(), bytes)
}

/// The address range of the function whose demangled name is `name`.
fn function_range(bytes: &[u8], name: &str) -> Range<u64> {
    let obj = object::File::parse(bytes).unwrap();
    let s = obj
        .symbols()
        .find(|s| s.name().is_ok_and(|n| demangle(n) == name))
        .unwrap_or_else(|| panic!("no symbol {name}"));
    s.address()..s.address() + s.size()
}

#[test]
fn kernel_addresses_become_functions_with_files_lines_and_inlined_frames() {
    let (k, bytes) = kernel();
    let f = function_range(&bytes, "kernel::ktest::deliberate_page_fault");
    assert!(!f.is_empty());
    // Every address of the function names it as the outermost frame;
    // some lie in ktest.rs (a macro's code, `println!`'s, is placed at
    // the macro's definition); somewhere in it `read_volatile` is inlined.
    let (mut saw_inlined, mut in_ktest) = (false, 0);
    for pc in f.clone() {
        let frames = k.frames(pc);
        let outer = frames
            .last()
            .unwrap_or_else(|| panic!("{pc:#x}: no frames"));
        assert_eq!(outer.function, "kernel::ktest::deliberate_page_fault");
        assert!(!outer.inlined);
        assert!(frames[..frames.len() - 1].iter().all(|f| f.inlined));
        let (file, line) = outer.location.clone().expect("a location");
        assert!(line > 0);
        if file == "microkernel/src/ktest.rs" {
            in_ktest += 1;
        }
        if frames.len() > 1 && frames[0].function == "core::ptr::read_volatile" {
            assert!(frames[0].render().ends_with(" [inlined]"));
            // The call site of the inlined read is the function's own line.
            assert_eq!(
                outer.location.as_ref().unwrap().0,
                "microkernel/src/ktest.rs"
            );
            assert!(frames[0]
                .location
                .as_ref()
                .unwrap()
                .0
                .starts_with("library/core/src/"));
            saw_inlined = true;
        }
    }
    assert!(in_ktest > 0, "no address of the function is in ktest.rs");
    assert!(saw_inlined, "read_volatile is not inlined anywhere");
}

#[test]
fn asm_without_debug_info_is_named_from_the_symbol_table() {
    let (k, bytes) = kernel();
    let obj = object::File::parse(&*bytes).unwrap();
    let entry = obj
        .symbols()
        .find(|s| s.name() == Ok("syscall_entry"))
        .expect("syscall_entry")
        .address();
    let frames = k.frames(entry + 2);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(!frames[0].inlined);
    assert!(
        frames[0].function.starts_with("syscall_entry"),
        "{frames:?}"
    );
}

#[test]
fn addresses_outside_the_kernel_code_give_nothing() {
    let (k, _) = kernel();
    for a in [
        0,
        1,
        0x1000_0000,
        0xffff_8000_0000_0000,
        u64::MAX,
        0x7fff_ffff_f000,
    ] {
        assert_eq!(k.frames(a), Vec::new(), "{a:#x}");
    }
}

#[test]
fn the_annotator_follows_a_panic_report() {
    let (k, bytes) = kernel();
    let f = function_range(&bytes, "kernel::ktest::deliberate_page_fault");
    let run = function_range(&bytes, "kernel::ktest::run");
    let mut a = Annotator::with_kernel(k, Programs::new(Vec::new()));
    // The faulting instruction is looked up as it is: the function's
    // first byte still names the function.
    let rip = f.start;
    assert!(a
        .line(&format!(
            "KERNEL PANIC on CPU 0: EXCEPTION #PF page fault in kernel mode: error=0x0 RIP={rip:#x} CS=0x8"
        ))
        .is_empty());
    assert!(a.line("  backtrace:").is_empty());
    let first = a.line(&format!("    0x{rip:016x}"));
    assert!(first
        .last()
        .unwrap()
        .starts_with("      at kernel::ktest::deliberate_page_fault (microkernel/src/ktest.rs:"));
    // A return address just past the start of `run` is looked up one
    // byte back: still in `run`.
    let second = a.line(&format!("    0x{:016x}\r", run.start + 1));
    assert!(second
        .last()
        .unwrap()
        .starts_with("      at kernel::ktest::run ("));
    // Any later entry is a return address, looked up one byte back: at a
    // function's first byte that is the code before it.
    let third = a.line(&format!("    0x{rip:016x}"));
    assert!(
        !third.iter().any(|l| l.contains("deliberate_page_fault")),
        "{third:?}"
    );
    // Out of the kernel: left alone; so is a frame line after the backtrace ended.
    assert!(a.line("    0x0000000000000010").is_empty());
    assert!(a.line("mica: guest reported failure").is_empty());
    assert!(a.line(&format!("    0x{rip:016x}")).is_empty());
    // A frame line without a backtrace header is not a frame.
    let mut b = Annotator::with_kernel(kernel().0, Programs::new(Vec::new()));
    assert!(b.line(&format!("    0x{rip:016x}")).is_empty());
}

#[test]
fn user_faults_are_looked_up_in_the_program_elf() {
    let (_, bytes) = kernel();
    let f = function_range(&bytes, "kernel::ktest::deliberate_page_fault");
    let path = PathBuf::from(env!("MICA_KERNEL_ELF"));
    // Any ELF will do as "a program": name the kernel's `prog`.
    let mut programs = Programs::new(vec![PathBuf::from("/nonexistent")]);
    programs.add("prog", path);
    let mut a = Annotator::new(None, programs, Some(env!("CARGO_MANIFEST_DIR").into()));
    let line = |prog: &str| {
        format!(
            "[ WARN cpu0] user fault: pid 2 ({prog}) tid 9 #UD invalid opcode: error=0x0 \
             RIP={:#x} RSP=0x7000; thread stopped",
            f.start
        )
    };
    let out = a.line(&line("prog"));
    assert!(
        out.last()
            .unwrap()
            .starts_with("    at kernel::ktest::deliberate_page_fault (microkernel/src/ktest.rs:"),
        "{out:?}"
    );
    // Unknown programs, unnamed ones and path tricks: nothing.
    for p in ["?", "nosuch", "../prog", ".", "a/b", ""] {
        assert!(a.line(&line(p)).is_empty(), "{p}");
    }
    // No kernel ELF: backtraces are passed through as they are.
    assert!(a.line("  backtrace:").is_empty());
    assert!(a.line(&format!("    0x{:016x}", f.start)).is_empty());
}

#[test]
fn the_pump_passes_every_byte_and_adds_annotations_after_lines() {
    let (k, bytes) = kernel();
    let f = function_range(&bytes, "kernel::ktest::deliberate_page_fault");
    let mut a = Annotator::with_kernel(k, Programs::new(Vec::new()));
    let input = format!(
        "boot\r\nKERNEL PANIC on CPU 0: x RIP={:#x}\r\n  backtrace:\r\n    0x{:016x}\r\nprompt> ",
        f.start, f.start
    );
    let mut out = Vec::new();
    pump(input.as_bytes(), &mut out, &mut a);
    let out = String::from_utf8(out).unwrap();
    let raw_end = input.find("prompt> ").unwrap();
    let frame_line = input.find("  backtrace:").unwrap();
    assert!(out.starts_with(&input[..raw_end]), "{out}");
    assert!(out.ends_with("\r\nprompt> "), "{out}");
    assert!(out[frame_line..]
        .contains("\r\n      at kernel::ktest::deliberate_page_fault (microkernel/src/ktest.rs:"));
    // Without annotations, the output is the input exactly.
    let mut plain = Vec::new();
    let mut none = Annotator::new(None, Programs::new(Vec::new()), None);
    pump(input.as_bytes(), &mut plain, &mut none);
    assert_eq!(plain, input.as_bytes());
    // Invalid UTF-8 and endless lines pass through unchanged too.
    let junk: Vec<u8> = (0..20000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut out = Vec::new();
    pump(&junk[..], &mut out, &mut none);
    assert_eq!(out, junk);
}

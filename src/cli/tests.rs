use super::*;

fn run(args: &[&str]) -> Options {
    match parse(args.iter().copied()) {
        Ok(Command::Run(o)) => o,
        other => panic!("expected Run, got {other:?}"),
    }
}

fn err(args: &[&str]) -> String {
    match parse(args.iter().copied()) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn no_arguments_give_the_documented_defaults() {
    let o = run(&[]);
    assert_eq!(o, Options::default());
    assert_eq!((o.smp, o.mem_mib, o.cpu.as_str()), (1, 256, "max"));
    assert_eq!(o.accel, Accel::Tcg);
    assert_eq!((o.firmware, o.machine), (Firmware::Bios, Machine::Pc));
    assert!(!o.needs_custom_iso());
}

#[test]
fn symbolizing_is_on_unless_switched_off() {
    assert!(run(&[]).symbolize);
    assert!(!run(&["--no-symbolize"]).symbolize);
    assert!(parse(["--no-symbolize=1"]).is_err());
}

#[test]
fn values_are_accepted_after_a_space_or_an_equals_sign() {
    let o = run(&["--smp", "4", "--mem=512", "--cpu", "qemu64", "--timeout=30"]);
    assert_eq!(o.smp, 4);
    assert_eq!(o.mem_mib, 512);
    assert_eq!(o.cpu, "qemu64");
    assert_eq!(o.timeout_secs, Some(30));
}

#[test]
fn a_repeated_scalar_option_keeps_its_last_value() {
    let o = run(&["--timeout", "60", "--smp", "2", "--timeout", "5"]);
    assert_eq!(o.timeout_secs, Some(5));
}

#[test]
fn repeated_cmdlines_are_joined_with_single_spaces() {
    let o = run(&["--cmdline", "  log=debug  ktest ", "--cmdline=init=bench"]);
    assert_eq!(o.cmdline.as_deref(), Some("log=debug ktest init=bench"));
    assert!(o.needs_custom_iso());
}

#[test]
fn an_empty_cmdline_changes_nothing() {
    let o = run(&["--cmdline", ""]);
    assert_eq!(o.cmdline, None);
    assert!(!o.needs_custom_iso());
}

#[test]
fn boolean_flags_are_recognised() {
    let o = run(&["--gdb", "--headless", "--icount"]);
    assert!(o.gdb && o.headless && o.icount);
}

#[test]
fn accel_accepts_only_tcg_and_kvm() {
    assert_eq!(run(&["--accel", "kvm"]).accel, Accel::Kvm);
    assert_eq!(run(&["--accel=tcg"]).accel, Accel::Tcg);
    assert!(err(&["--accel", "hvf"]).contains("tcg or kvm"));
}

#[test]
fn icount_defaults_to_the_xapic_but_respects_an_explicit_cpu() {
    assert_eq!(run(&["--icount"]).cpu, ICOUNT_CPU);
    assert_eq!(run(&["--icount", "--cpu", "qemu64"]).cpu, "qemu64");
    assert_eq!(run(&["--cpu", "qemu64", "--icount"]).cpu, "qemu64");
}

#[test]
fn icount_tells_the_guest_that_rdtsc_counts_instructions() {
    assert_eq!(run(&["--icount"]).cmdline.as_deref(), Some("bench.icount"));
    assert_eq!(
        run(&["--cmdline", "init=bench", "--icount"])
            .cmdline
            .as_deref(),
        Some("init=bench bench.icount")
    );
    assert_eq!(
        run(&["--cmdline", "init=bench"]).cmdline.as_deref(),
        Some("init=bench")
    );
}

#[test]
fn icount_cannot_be_combined_with_kvm() {
    assert!(err(&["--icount", "--accel", "kvm"]).contains("--icount"));
}

#[test]
fn help_wins_over_everything_before_it() {
    assert_eq!(parse(["--smp", "2", "--help"]), Ok(Command::Help));
    assert_eq!(parse(["-h"]), Ok(Command::Help));
}

#[test]
fn unknown_options_and_stray_arguments_are_usage_errors() {
    assert!(err(&["--frobnicate"]).contains("unknown option --frobnicate"));
    assert!(err(&["kernel.elf"]).contains("unexpected argument"));
    assert!(err(&["--gdb=yes"]).contains("takes no value"));
}

#[test]
fn an_option_missing_its_value_is_an_error() {
    assert!(err(&["--smp"]).contains("--smp needs a value"));
}

#[test]
fn numbers_out_of_range_or_malformed_are_rejected() {
    assert!(err(&["--smp", "0"]).contains("--smp"));
    assert!(err(&["--smp", "two"]).contains("--smp"));
    assert!(err(&["--mem", "-5"]).contains("--mem"));
    assert!(err(&["--timeout", "0"]).contains("--timeout"));
}

#[test]
fn a_module_name_defaults_to_the_file_name() {
    let o = run(&["--module", "target/x86_64-unknown-none/debug/hello"]);
    assert_eq!(
        o.modules,
        vec![Module {
            file: PathBuf::from("target/x86_64-unknown-none/debug/hello"),
            name: "hello".to_string(),
        }]
    );
    assert!(o.needs_custom_iso());
}

#[test]
fn a_module_name_can_be_given_after_a_colon() {
    let m = parse_module("/tmp/prog.elf:shell").unwrap();
    assert_eq!(m.file, PathBuf::from("/tmp/prog.elf"));
    assert_eq!(m.name, "shell");
}

#[test]
fn a_colon_inside_a_directory_name_is_part_of_the_path() {
    let m = parse_module("/tmp/a:b/prog").unwrap();
    assert_eq!(m.file, PathBuf::from("/tmp/a:b/prog"));
    assert_eq!(m.name, "prog");
}

#[test]
fn unsafe_or_reserved_module_names_are_rejected() {
    assert!(parse_module("/tmp/x:has space").is_err());
    assert!(parse_module("/tmp/x:semi;colon").is_err());
    assert!(parse_module("/tmp/x:kernel").is_err());
    assert!(parse_module("/tmp/grub").is_err());
    assert!(parse_module("/tmp/x:").is_err());
    assert!(parse_module(":name").is_err());
}

#[test]
fn the_same_module_name_twice_is_an_error() {
    assert!(err(&["--module", "a/x", "--module", "b/x"]).contains("given twice"));
}

#[test]
fn a_prebuilt_iso_cannot_be_combined_with_iso_rewriting_options() {
    assert_eq!(
        run(&["--iso", "/tmp/m.iso"]).iso,
        Some(PathBuf::from("/tmp/m.iso"))
    );
    assert!(err(&["--iso", "/tmp/m.iso", "--cmdline", "ktest"]).contains("--iso"));
}

#[test]
fn firmware_accepts_only_bios_and_uefi() {
    assert_eq!(run(&["--firmware", "uefi"]).firmware, Firmware::Uefi);
    assert_eq!(run(&["--firmware=bios"]).firmware, Firmware::Bios);
    assert!(err(&["--firmware", "efi"]).contains("bios or uefi"));
    assert!(err(&["--firmware"]).contains("--firmware needs a value"));
}

#[test]
fn machine_accepts_only_pc_and_q35() {
    assert_eq!(run(&["--machine", "q35"]).machine, Machine::Q35);
    assert_eq!(run(&["--machine=pc"]).machine, Machine::Pc);
    assert!(err(&["--machine", "microvm"]).contains("pc or q35"));
}

#[test]
fn record_runs_in_icount_mode_on_one_cpu() {
    let o = run(&["--record", "/tmp/rec", "--cmdline", "init=tests"]);
    assert_eq!(o.record, Some(PathBuf::from("/tmp/rec")));
    assert!(o.icount);
    assert_eq!(o.cpu, ICOUNT_CPU);
    assert_eq!(o.cmdline.as_deref(), Some("init=tests bench.icount"));
}

#[test]
fn record_refuses_smp_and_names_the_icount_alternative() {
    let e = err(&["--record", "/tmp/rec", "--smp", "2"]);
    assert!(e.contains("single CPU") && e.contains("--smp 2"), "{e}");
    assert!(e.contains("--icount") && e.contains("--repeat"), "{e}");
    assert!(err(&["--record", "/tmp/r", "--firmware", "uefi"]).contains("bios only"));
    assert!(err(&["--record", "/tmp/r", "--accel", "kvm"]).contains("TCG"));
    assert!(err(&["--record", "/tmp/r", "--gdb"]).contains("--replay DIR --gdb"));
    assert!(err(&["--record", ""]).contains("needs a directory"));
}

#[test]
fn replay_takes_everything_that_shapes_the_machine_from_the_recording() {
    let o = run(&[
        "--replay",
        "/tmp/rec",
        "--gdb",
        "--headless",
        "--timeout",
        "9",
    ]);
    assert_eq!(o.replay, Some(PathBuf::from("/tmp/rec")));
    assert!(o.gdb && o.headless && !o.icount);
    assert_eq!(o.timeout_secs, Some(9));
    for extra in [
        &["--smp", "2"][..],
        &["--cmdline", "ktest"],
        &["--icount"],
        &["--cpu", "qemu64"],
        &["--iso", "/tmp/x.iso"],
        &["--record", "/tmp/other"],
    ] {
        let mut a = vec!["--replay", "/tmp/rec"];
        a.extend_from_slice(extra);
        assert!(err(&a).contains("from the recording"), "{extra:?}");
    }
}

#[test]
fn trace_turns_the_kernel_trace_on_unless_the_command_line_chooses() {
    let o = run(&["--trace", "t.json"]);
    assert_eq!(o.trace, Some(PathBuf::from("t.json")));
    assert_eq!(o.cmdline.as_deref(), Some("trace=on"));
    assert!(o.needs_custom_iso());
    let o = run(&["--cmdline", "init=bench", "--trace=t.json"]);
    assert_eq!(o.cmdline.as_deref(), Some("init=bench trace=on"));
    let o = run(&["--cmdline", "trace=ipc,sched", "--trace", "t.json"]);
    assert_eq!(o.cmdline.as_deref(), Some("trace=ipc,sched"));
    // `tracer=x` is not `trace=`.
    let o = run(&["--cmdline", "tracer=x", "--trace", "t.json"]);
    assert_eq!(o.cmdline.as_deref(), Some("tracer=x trace=on"));
    assert!(err(&["--trace"]).contains("needs a value"));
    assert!(err(&["--trace="]).contains("needs a file name"));
    assert!(run(&[]).trace.is_none());
}

//! The QEMU command line and the meaning of QEMU's exit status.

use crate::cli::{Accel, Firmware, Options};
use abi::debug_exit;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The QEMU binary run unless `MICA_QEMU` names another.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// The exit status of the runner when `--timeout` expires (as with timeout(1)).
pub const EXIT_TIMEOUT: i32 = 124;
/// The exit status for usage errors.
pub const EXIT_USAGE: i32 = 2;
/// The exit status when the guest reset or powered off without reporting a result.
pub const EXIT_NO_RESULT: i32 = 3;

/// OVMF's two flash images: the firmware code and a variable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    /// The code image, mapped read-only.
    pub code: PathBuf,
    /// The variable store: the package's pristine template when returned by
    /// [`find_ovmf`], the run's private writable copy when passed to [`argv`].
    pub vars: PathBuf,
}

/// Where distributions install OVMF, as matching (code, vars) pairs (a code
/// image only works with a variable store of its own flash size): Debian and
/// Ubuntu (4 MiB, then 2 MiB), Fedora, Arch.
pub const OVMF_PAIRS: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ),
];

/// Finds OVMF: `MICA_OVMF_CODE`/`MICA_OVMF_VARS` when given (both), else the
/// first of [`OVMF_PAIRS`] whose two files exist (`is_file` tells).
pub fn find_ovmf(
    code_env: Option<PathBuf>,
    vars_env: Option<PathBuf>,
    is_file: impl Fn(&Path) -> bool,
) -> Result<Ovmf, String> {
    match (code_env, vars_env) {
        (Some(code), Some(vars)) => {
            for p in [&code, &vars] {
                if !is_file(p) {
                    return Err(format!("OVMF image {} does not exist", p.display()));
                }
            }
            Ok(Ovmf { code, vars })
        }
        (None, None) => OVMF_PAIRS
            .iter()
            .map(|(c, v)| (Path::new(c), Path::new(v)))
            .find(|(c, v)| is_file(c) && is_file(v))
            .map(|(c, v)| Ovmf {
                code: c.to_path_buf(),
                vars: v.to_path_buf(),
            })
            .ok_or_else(|| {
                format!(
                    "--firmware uefi needs OVMF, and none was found (looked for {}); \
                     install it with scripts/deps.sh (apt-get install ovmf), or set \
                     MICA_OVMF_CODE and MICA_OVMF_VARS",
                    OVMF_PAIRS
                        .iter()
                        .map(|(c, _)| *c)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        _ => Err("MICA_OVMF_CODE and MICA_OVMF_VARS must be set together".to_string()),
    }
}

/// QEMU's arguments (without the program name) to boot `iso` as `opts` asks;
/// `ovmf` (with the run's private variable store) is required for
/// `--firmware uefi` and ignored otherwise.
pub fn argv(iso: &Path, opts: &Options, ovmf: Option<&Ovmf>) -> Vec<OsString> {
    fn push(a: &mut Vec<OsString>, items: &[&str]) {
        a.extend(items.iter().map(OsString::from));
    }
    let mut a: Vec<OsString> = vec!["-machine".into(), opts.machine.name().into()];
    if let (Firmware::Uefi, Some(ovmf)) = (opts.firmware, ovmf) {
        // Unit 0 is the code, never written; unit 1 the run's own variables.
        for (unit, file, ro) in [(0, &ovmf.code, ",readonly=on"), (1, &ovmf.vars, "")] {
            let mut d = OsString::from(format!("if=pflash,format=raw,unit={unit}{ro},file="));
            d.push(file);
            a.push("-drive".into());
            a.push(d);
        }
    }
    let record = opts.record.is_some();
    if record {
        // Record/replay: every block read goes through a blkreplay node so its
        // completion lands at the same instruction in the replay; the qcow2
        // image (attached to no device) holds QEMU's start-of-recording
        // snapshot, which reverse execution rewinds to.
        let mut cd = OsString::from("if=none,id=cd0,media=cdrom,readonly=on,file=");
        cd.push(iso);
        a.push("-drive".into());
        a.push(cd);
        push(
            &mut a,
            &[
                "-drive",
                "driver=blkreplay,if=none,image=cd0,id=cd,readonly=on",
                "-device",
                "ide-cd,drive=cd,bootindex=0",
                "-drive",
                &format!("file={},if=none,id=rrsnap", crate::replay::SNAPSHOTS),
            ],
        );
    } else {
        push(&mut a, &["-cdrom"]);
        a.push(iso.as_os_str().to_owned());
        push(&mut a, &["-boot", "d"]);
    }
    push(&mut a, &["-m", &opts.mem_mib.to_string()]);
    push(&mut a, &["-smp", &opts.smp.to_string()]);
    push(&mut a, &["-cpu", &opts.cpu]);
    match (record, opts.icount, opts.accel) {
        (true, _, _) => push(
            &mut a,
            &[
                "-accel",
                "tcg,thread=single",
                "-icount",
                &crate::replay::icount_value("record"),
                // A NIC would need a filter-replay; the guest uses none.
                "-nic",
                "none",
            ],
        ),
        // sleep=off: when every CPU idles, guest time jumps to the next timer
        // instead of waiting for the host clock, so host load does not change
        // what the guest sees (with sleep=on, two runs' thread ids and fault
        // lines differed).
        (false, true, _) => push(
            &mut a,
            &[
                "-accel",
                "tcg,thread=single",
                "-icount",
                "shift=0,sleep=off",
            ],
        ),
        (false, false, Accel::Tcg) => push(&mut a, &["-accel", "tcg"]),
        (false, false, Accel::Kvm) => push(&mut a, &["-accel", "kvm"]),
    }
    if opts.headless || record {
        // (A recording's serial is plain stdio, interactive or not: the
        // replay needs the same character device.)
        push(&mut a, &["-serial", "stdio"]);
    } else {
        // The terminal stays raw with signals off, so Ctrl-C reaches the guest as a
        // byte instead of killing QEMU (and the runner) behind the shell's back; the
        // mux gives QEMU's escape keys: Ctrl-A x quits, Ctrl-A h lists the rest.
        push(
            &mut a,
            &[
                "-chardev",
                "stdio,id=console,mux=on,signal=off",
                "-serial",
                "chardev:console",
            ],
        );
    }
    push(
        &mut a,
        &[
            "-display",
            "none",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-monitor",
            "none",
        ],
    );
    if opts.gdb {
        push(&mut a, &["-s", "-S"]);
    }
    if let Some(log) = &opts.qemu_log {
        push(&mut a, &["-d", "int,cpu_reset", "-D"]);
        a.push(log.as_os_str().to_owned());
    }
    a
}

/// What the runner does after QEMU exited on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The runner's exit status.
    pub exit: i32,
    /// A line for stderr, if the status needs explaining.
    pub message: Option<String>,
}

/// Maps QEMU's exit status (`None`: killed by a signal) to the runner's.
/// The guest ends QEMU by writing `v` to the isa-debug-exit port, which makes QEMU
/// exit with `(v << 1) | 1`; with `-no-reboot`, a reset or power-off exits with 0
/// (and so does quitting an interactive session with Ctrl-A x).
pub fn verdict(code: Option<i32>, interactive: bool) -> Verdict {
    let (exit, message) = match code {
        Some(debug_exit::QEMU_SUCCESS) => (0, None),
        Some(debug_exit::QEMU_FAILURE) => (1, Some("mica: guest reported failure".to_string())),
        Some(0) => (
            EXIT_NO_RESULT,
            Some(format!(
                "mica: guest reset or powered off without reporting a result (triple fault?){}",
                if interactive {
                    ", or QEMU was quit with Ctrl-A x"
                } else {
                    ""
                }
            )),
        ),
        Some(1) => (
            1,
            Some(
                "mica: QEMU exited with status 1 (a QEMU error, or the guest wrote 0 to the \
                 debug-exit port)"
                    .to_string(),
            ),
        ),
        Some(c) if c & 1 == 1 => (
            1,
            Some(format!(
                "mica: guest wrote unexpected value {:#x} to the debug-exit port (QEMU exit {c})",
                c >> 1
            )),
        ),
        Some(c) => (1, Some(format!("mica: QEMU exited with status {c}"))),
        None => (1, Some("mica: QEMU was killed by a signal".to_string())),
    };
    Verdict { exit, message }
}

/// Renders a command line for humans, quoting words the shell would split or expand.
pub fn shell_words<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> String {
    let mut out = program.to_string();
    for arg in args {
        let arg = arg.as_ref().to_string_lossy();
        out.push(' ');
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:+@%".contains(c));
        if plain {
            out.push_str(&arg);
        } else {
            out.push('\'');
            out.push_str(&arg.replace('\'', r"'\''"));
            out.push('\'');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn words(opts: &Options) -> Vec<String> {
        argv(Path::new("/tmp/mica.iso"), opts, None)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    fn has_pair(w: &[String], a: &str, b: &str) -> bool {
        w.windows(2).any(|p| p[0] == a && p[1] == b)
    }

    #[test]
    fn a_headless_boot_uses_the_cdrom_under_tcg_with_serial_on_stdio() {
        let w = words(&Options {
            headless: true,
            ..Options::default()
        })
        .join(" ");
        assert_eq!(
            w,
            "-machine pc -cdrom /tmp/mica.iso -boot d -m 256 -smp 1 -cpu max -accel tcg \
             -serial stdio -display none -no-reboot \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 -monitor none"
        );
    }

    #[test]
    fn interactive_mode_puts_the_serial_console_on_a_mux_without_signals() {
        let w = words(&Options::default());
        assert!(has_pair(
            &w,
            "-chardev",
            "stdio,id=console,mux=on,signal=off"
        ));
        assert!(has_pair(&w, "-serial", "chardev:console"));
    }

    #[test]
    fn quitting_interactively_is_mentioned_as_a_cause_of_a_silent_exit() {
        let v = verdict(Some(0), true);
        assert_eq!(v.exit, 3);
        assert!(v
            .message
            .unwrap()
            .ends_with("or QEMU was quit with Ctrl-A x"));
    }

    #[test]
    fn smp_memory_and_cpu_model_are_passed_through() {
        let opts = Options {
            smp: 4,
            mem_mib: 1024,
            cpu: "qemu64".into(),
            ..Options::default()
        };
        let w = words(&opts);
        assert!(has_pair(&w, "-smp", "4"));
        assert!(has_pair(&w, "-m", "1024"));
        assert!(has_pair(&w, "-cpu", "qemu64"));
    }

    #[test]
    fn kvm_is_used_only_when_asked_for() {
        let opts = Options {
            accel: Accel::Kvm,
            ..Options::default()
        };
        assert!(has_pair(&words(&opts), "-accel", "kvm"));
    }

    #[test]
    fn icount_selects_single_threaded_tcg_with_exact_instruction_counting() {
        let opts = Options {
            icount: true,
            smp: 2,
            ..Options::default()
        };
        let w = words(&opts);
        assert!(has_pair(&w, "-accel", "tcg,thread=single"));
        assert!(has_pair(&w, "-icount", "shift=0,sleep=off"));
        assert_eq!(w.iter().filter(|s| *s == "-accel").count(), 1);
    }

    #[test]
    fn gdb_adds_the_stub_and_stops_at_reset() {
        let w = words(&Options {
            gdb: true,
            ..Options::default()
        });
        assert!(has_pair(&w, "-s", "-S"));
        assert!(!words(&Options::default()).contains(&"-s".to_string()));
    }

    #[test]
    fn qemu_log_records_interrupts_and_resets_to_the_file() {
        let w = words(&Options {
            qemu_log: Some(PathBuf::from("/tmp/q.log")),
            ..Options::default()
        });
        assert!(has_pair(&w, "-d", "int,cpu_reset"));
        assert!(has_pair(&w, "-D", "/tmp/q.log"));
    }

    #[test]
    fn guest_success_maps_to_zero_silently() {
        assert_eq!(
            verdict(Some(33), false),
            Verdict {
                exit: 0,
                message: None
            }
        );
    }

    #[test]
    fn guest_failure_maps_to_one() {
        assert_eq!(verdict(Some(35), false).exit, 1);
    }

    #[test]
    fn a_silent_reset_maps_to_three_and_blames_a_triple_fault() {
        let v = verdict(Some(0), false);
        assert_eq!(v.exit, 3);
        assert_eq!(
            v.message.as_deref(),
            Some("mica: guest reset or powered off without reporting a result (triple fault?)")
        );
    }

    #[test]
    fn other_debug_exit_values_are_reported_and_map_to_one() {
        let v = verdict(Some((0x42 << 1) | 1), false);
        assert_eq!(v.exit, 1);
        assert!(v.message.unwrap().contains("0x42"));
    }

    #[test]
    fn qemu_errors_and_signals_map_to_one() {
        assert_eq!(verdict(Some(1), false).exit, 1);
        assert_eq!(verdict(Some(2), false).exit, 1);
        assert_eq!(verdict(None, false).exit, 1);
        assert!(verdict(None, false).message.unwrap().contains("signal"));
    }

    #[test]
    fn shell_words_quote_only_what_needs_it() {
        assert_eq!(
            shell_words("qemu", &["-m", "256", "a b", "it's", ""]),
            r"qemu -m 256 'a b' 'it'\''s' ''"
        );
    }

    fn ovmf() -> Ovmf {
        Ovmf {
            code: PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            vars: PathBuf::from("/tmp/run/vars.fd"),
        }
    }

    #[test]
    fn uefi_maps_the_code_read_only_and_the_private_variable_copy_writable() {
        let opts = Options {
            firmware: Firmware::Uefi,
            ..Options::default()
        };
        let w = argv(Path::new("/tmp/mica.iso"), &opts, Some(&ovmf()))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect::<Vec<_>>();
        assert!(has_pair(
            &w,
            "-drive",
            "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
        ));
        assert!(has_pair(
            &w,
            "-drive",
            "if=pflash,format=raw,unit=1,file=/tmp/run/vars.fd"
        ));
        assert_eq!(w.iter().filter(|s| *s == "-drive").count(), 2);
        // The package's pristine variable store is never handed to QEMU.
        assert!(!w.iter().any(|s| s.contains("OVMF_VARS")));
    }

    #[test]
    fn bios_boots_use_no_flash() {
        let w = argv(
            Path::new("/tmp/mica.iso"),
            &Options::default(),
            Some(&ovmf()),
        );
        assert!(!w.iter().any(|s| s == "-drive"));
    }

    #[test]
    fn the_machine_type_is_always_explicit() {
        assert!(has_pair(&words(&Options::default()), "-machine", "pc"));
        let opts = Options {
            machine: crate::cli::Machine::Q35,
            ..Options::default()
        };
        assert!(has_pair(&words(&opts), "-machine", "q35"));
    }

    #[test]
    fn ovmf_is_found_as_a_matching_pair() {
        // Only the 2 MiB pair installed: its code goes with its own vars.
        let present = [
            "/usr/share/OVMF/OVMF_CODE.fd",
            "/usr/share/OVMF/OVMF_VARS.fd",
        ];
        let o = find_ovmf(None, None, |p| present.iter().any(|q| p == Path::new(q))).unwrap();
        assert_eq!(o.code, PathBuf::from(present[0]));
        assert_eq!(o.vars, PathBuf::from(present[1]));
        // A code image without its vars is not a pair.
        let lone = "/usr/share/OVMF/OVMF_CODE_4M.fd";
        assert!(find_ovmf(None, None, |p| p == Path::new(lone)).is_err());
    }

    #[test]
    fn missing_ovmf_is_a_clear_error() {
        let e = find_ovmf(None, None, |_| false).unwrap_err();
        assert!(e.contains("--firmware uefi needs OVMF"), "{e}");
        assert!(e.contains("scripts/deps.sh"), "{e}");
    }

    #[test]
    fn ovmf_paths_from_the_environment_must_exist_and_come_together() {
        let (c, v) = (PathBuf::from("/x/code.fd"), PathBuf::from("/x/vars.fd"));
        let all = find_ovmf(Some(c.clone()), Some(v.clone()), |_| true).unwrap();
        assert_eq!((all.code, all.vars), (c.clone(), v.clone()));
        let e = find_ovmf(Some(c.clone()), Some(v), |p| p != Path::new("/x/vars.fd"));
        assert!(e.unwrap_err().contains("/x/vars.fd does not exist"));
        assert!(find_ovmf(Some(c), None, |_| true)
            .unwrap_err()
            .contains("together"));
    }

    #[test]
    fn a_recording_puts_the_cdrom_behind_blkreplay_and_keeps_a_snapshot_image() {
        let opts = Options {
            record: Some(PathBuf::from("/tmp/rec")),
            icount: true,
            headless: false,
            ..Options::default()
        };
        let w = argv(Path::new("mica.iso"), &opts, None)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect::<Vec<_>>();
        assert_eq!(
            w.join(" "),
            "-machine pc -drive if=none,id=cd0,media=cdrom,readonly=on,file=mica.iso \
             -drive driver=blkreplay,if=none,image=cd0,id=cd,readonly=on \
             -device ide-cd,drive=cd,bootindex=0 \
             -drive file=snapshots.qcow2,if=none,id=rrsnap -m 256 -smp 1 -cpu max \
             -accel tcg,thread=single \
             -icount shift=0,rr=record,rrfile=replay.bin,rrsnapshot=init -nic none \
             -serial stdio -display none -no-reboot \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 -monitor none"
        );
    }
}

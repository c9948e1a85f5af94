//! The QEMU command line and the meaning of QEMU's exit status.

use crate::cli::{Accel, Options};
use abi::debug_exit;
use std::ffi::OsString;
use std::path::Path;

/// The QEMU binary run unless `MICA_QEMU` names another.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// The exit status of the runner when `--timeout` expires (as with timeout(1)).
pub const EXIT_TIMEOUT: i32 = 124;
/// The exit status for usage errors.
pub const EXIT_USAGE: i32 = 2;
/// The exit status when the guest reset or powered off without reporting a result.
pub const EXIT_NO_RESULT: i32 = 3;

/// QEMU's arguments (without the program name) to boot `iso` as `opts` asks.
/// The machine is QEMU's default `pc` (i440fx).
pub fn argv(iso: &Path, opts: &Options) -> Vec<OsString> {
    fn push(a: &mut Vec<OsString>, items: &[&str]) {
        a.extend(items.iter().map(OsString::from));
    }
    let mut a: Vec<OsString> = vec!["-cdrom".into(), iso.as_os_str().to_owned()];
    push(&mut a, &["-boot", "d"]);
    push(&mut a, &["-m", &opts.mem_mib.to_string()]);
    push(&mut a, &["-smp", &opts.smp.to_string()]);
    push(&mut a, &["-cpu", &opts.cpu]);
    match (opts.icount, opts.accel) {
        (true, _) => push(
            &mut a,
            &["-accel", "tcg,thread=single", "-icount", "shift=0"],
        ),
        (false, Accel::Tcg) => push(&mut a, &["-accel", "tcg"]),
        (false, Accel::Kvm) => push(&mut a, &["-accel", "kvm"]),
    }
    if opts.headless {
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
        argv(Path::new("/tmp/mica.iso"), opts)
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
            "-cdrom /tmp/mica.iso -boot d -m 256 -smp 1 -cpu max -accel tcg \
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
        assert!(has_pair(&w, "-icount", "shift=0"));
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
}

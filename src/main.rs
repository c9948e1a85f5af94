//! The Mica runner behind `cargo run`: boots the ISO that build.rs assembled in QEMU,
//! with the serial console on the terminal, and turns the guest's isa-debug-exit
//! report into the process exit status. See `--help` and README.md.

mod cli;
mod grubcfg;
mod grubiso;
mod input;
mod iso;
mod qemu;
mod record;
mod replay;
mod symbolize;
mod trace;

use cli::{Command, Firmware, Options};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn main() {
    std::process::exit(run());
}

/// A path fixed by build.rs at compile time (`cargo:rustc-env`), overridable at run
/// time through the environment variable of the same name.
fn build_path(runtime: Option<std::ffi::OsString>, compiled: Option<&str>) -> Option<PathBuf> {
    runtime
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| compiled.map(PathBuf::from))
}

fn iso_root() -> Result<PathBuf, String> {
    build_path(
        std::env::var_os("MICA_ISO_ROOT"),
        option_env!("MICA_ISO_ROOT"),
    )
    .ok_or_else(|| {
        "MICA_ISO_ROOT is not set: build.rs did not provide the ISO staging tree \
         (build with `cargo build`, or set MICA_ISO_ROOT)"
            .to_string()
    })
}

fn default_iso() -> Result<PathBuf, String> {
    build_path(std::env::var_os("MICA_ISO"), option_env!("MICA_ISO")).ok_or_else(|| {
        "MICA_ISO is not set: build.rs did not provide the ISO (build with `cargo build`, \
         or set MICA_ISO, or pass --iso PATH)"
            .to_string()
    })
}

fn run() -> i32 {
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                eprintln!("mica: argument {a:?} is not valid UTF-8");
                return qemu::EXIT_USAGE;
            }
        }
    }
    let mut opts = match cli::parse(args) {
        Ok(Command::Run(opts)) => opts,
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            return 0;
        }
        Err(e) => {
            eprintln!("mica: {e}\n\n{}", cli::USAGE);
            return qemu::EXIT_USAGE;
        }
    };
    // Standard input that is not a terminal (a pipe, a file, /dev/null)
    // cannot be a person at a console: such a run is headless (`-serial
    // stdio`, no mux escape keys) and its input is fed to the guest, ending
    // with Ctrl-D (`input::feed_stdin`), so `scripts/run.sh </dev/null` ends.
    {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            opts.headless = true;
        }
    }
    match boot(&opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mica: {e}");
            1
        }
    }
}

/// Refuses to boot an ISO under firmware it has no boot image for, when the
/// ISO's firmware list (`bios`, `uefi`) is known.
fn check_iso_firmware(wanted: Firmware, iso_firmwares: Option<&[&str]>) -> Result<(), String> {
    match iso_firmwares {
        Some(have) if !have.contains(&wanted.name()) => Err(format!(
            "the ISO has no {} boot image (it boots under: {}); {}",
            wanted.name(),
            if have.is_empty() {
                "nothing".to_string()
            } else {
                have.join(", ")
            },
            match wanted {
                Firmware::Uefi =>
                    "install GRUB's x86_64-efi platform (scripts/deps.sh, or \
                                   apt-get install grub-efi-amd64-bin) and rebuild",
                Firmware::Bios =>
                    "install GRUB's i386-pc platform (scripts/deps.sh, or \
                                   apt-get install grub-pc-bin) and rebuild",
            }
        )),
        _ => Ok(()),
    }
}

/// OVMF with a private copy of its variable store in a temporary directory
/// (removed when the returned guard drops), so runs never share or change the
/// package's template.
fn private_ovmf() -> Result<(iso::TempDir, qemu::Ovmf), String> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let found = qemu::find_ovmf(env("MICA_OVMF_CODE"), env("MICA_OVMF_VARS"), |p| {
        p.is_file()
    })?;
    let dir = iso::TempDir::new("mica-ovmf")
        .map_err(|e| format!("cannot create a temp dir for OVMF's variables: {e}"))?;
    let vars = dir.path().join("OVMF_VARS.fd");
    std::fs::copy(&found.vars, &vars).map_err(|e| {
        format!(
            "cannot copy OVMF's variable store {}: {e}",
            found.vars.display()
        )
    })?;
    Ok((
        dir,
        qemu::Ovmf {
            code: found.code,
            vars,
        },
    ))
}

fn boot(opts: &Options) -> Result<i32, String> {
    if let Some(dir) = &opts.replay {
        return record::replay_run(opts, dir);
    }
    // Keeps a one-off ISO alive until QEMU has exited.
    let mut _custom = None;
    let compiled_firmwares: Vec<&str> = option_env!("MICA_ISO_FIRMWARE")
        .map(|f| f.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let (iso, firmwares) = if let Some(iso) = &opts.iso {
        (iso.clone(), None)
    } else if opts.needs_custom_iso() {
        let custom = iso::build_custom_iso(&iso_root()?, opts.cmdline.as_deref(), &opts.modules)?;
        let iso = custom.iso.clone();
        let firmwares = custom.firmwares.clone();
        _custom = Some(custom);
        (iso, Some(firmwares))
    } else {
        // What build.rs made, unless MICA_ISO points elsewhere.
        let known = std::env::var_os("MICA_ISO").is_none_or(|v| v.is_empty())
            && option_env!("MICA_ISO_FIRMWARE").is_some();
        (default_iso()?, known.then(|| compiled_firmwares.clone()))
    };
    if !iso.is_file() {
        return Err(format!("ISO {} does not exist", iso.display()));
    }
    check_iso_firmware(opts.firmware, firmwares.as_deref()).map_err(|e| {
        match grubiso::directory_from_env() {
            Some(d) if opts.needs_custom_iso() => format!(
                "{e} (note: {}={} restricts the ISO to that one platform)",
                grubiso::DIRECTORY_ENV,
                d.display()
            ),
            _ => e,
        }
    })?;
    // Keeps OVMF's private variable store until QEMU has exited.
    let (_ovmf_dir, ovmf) = match opts.firmware {
        Firmware::Uefi => {
            let (dir, ovmf) = private_ovmf()?;
            (Some(dir), Some(ovmf))
        }
        Firmware::Bios => (None, None),
    };

    let program = qemu_program();
    if let Some(dir) = &opts.record {
        return record::record_run(opts, &program, &iso, dir);
    }
    let args = qemu::argv(&iso, opts, ovmf.as_ref());
    if std::env::var("MICA_VERBOSE").is_ok_and(|v| v == "1") {
        eprintln!("mica: {}", qemu::shell_words(&program, &args));
    }
    if opts.gdb {
        let kernel = build_path(None, option_env!("MICA_KERNEL_ELF"))
            .or_else(|| iso_root().ok().map(|r| r.join("boot/kernel")))
            .map_or_else(|| "<kernel ELF>".to_string(), |p| p.display().to_string());
        eprintln!("mica: QEMU is waiting for gdb on :1234; attach with:");
        eprintln!("    gdb {kernel} -ex 'target remote :1234'");
    }

    if !opts.headless {
        eprintln!("mica: serial console on this terminal; Ctrl-A x quits QEMU, Ctrl-A h helps");
    }

    let status = match spawn_and_wait(opts, &program, &args, None, None, annotator_for(opts))? {
        Some(status) => status,
        None => return Ok(qemu::EXIT_TIMEOUT),
    };
    let verdict = qemu::verdict(status.code(), !opts.headless);
    if let Some(msg) = verdict.message {
        eprintln!("{msg}");
    }
    Ok(verdict.exit)
}

fn qemu_program() -> String {
    std::env::var("MICA_QEMU")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| qemu::DEFAULT_QEMU.to_string())
}

fn annotator_for(opts: &Options) -> Option<symbolize::Annotator> {
    opts.symbolize.then(|| annotator(opts))
}

/// A reader that copies every byte it reads into a file: the raw serial
/// transcript of a recording or replay, before the symbolizer adds lines.
struct Tee<R> {
    inner: R,
    copy: std::fs::File,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Runs QEMU (in `cwd` if given), passing its serial output through the
/// symbolizer and into `transcript` (raw) if given; `None` on timeout (QEMU
/// is then stopped).
fn spawn_and_wait(
    opts: &Options,
    program: &str,
    args: &[OsString],
    cwd: Option<&Path>,
    transcript: Option<std::fs::File>,
    annotator: Option<symbolize::Annotator>,
) -> Result<Option<ExitStatus>, String> {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    // A headless run whose standard input is not a terminal feeds it to the
    // guest's serial port (stdin feeding, below); a recording or a replay
    // never does (the replay must see the recorded input only).
    let feed = input::stdin_feeds_guest(opts);
    if feed {
        cmd.stdin(Stdio::piped());
    } else if opts.headless || opts.replay.is_some() {
        cmd.stdin(Stdio::null());
    }
    let piped = feed || annotator.is_some() || transcript.is_some() || opts.trace.is_some();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    // Kernel trace frames (`TRACE ...` lines) are taken out of the stream
    // here, whether or not --trace asked for them (src/trace.rs).
    let frames: trace::Sink = Default::default();
    let sink = frames.clone();
    if piped {
        // The serial stream passes through the symbolizer (a thread that
        // copies every byte as it comes and adds lines after some).
        cmd.stdout(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program} (run scripts/deps.sh): {e}"))?;
    if let (true, Some(qemu_in)) = (feed, child.stdin.take()) {
        std::thread::spawn(move || input::feed_stdin(ready_rx, qemu_in));
    }
    let mut pump = match (piped, child.stdout.take()) {
        (true, Some(out)) => Some(std::thread::spawn(move || {
            let out = input::ReadyWatch::new(out, feed.then_some(ready_tx));
            let input: Box<dyn Read + Send> = match transcript {
                Some(copy) => Box::new(Tee { inner: out, copy }),
                None => Box::new(out),
            };
            let input = trace::FrameFilter::new(input, sink);
            match annotator {
                Some(mut a) => symbolize::pump(input, std::io::stdout(), &mut a),
                None => {
                    let mut input = input;
                    let _ = std::io::copy(&mut input, &mut std::io::stdout());
                }
            }
        })),
        _ => None,
    };
    // The whole transcript is out before the runner's own last words.
    let mut drain = || {
        if let Some(p) = pump.take() {
            let _ = p.join();
        }
    };

    let mut drain = || {
        drain();
        report_trace(opts, &frames.lock().map(|f| f.clone()).unwrap_or_default());
    };
    match wait(&mut child, opts.timeout_secs.map(Duration::from_secs))? {
        Some(status) => {
            drain();
            Ok(Some(status))
        }
        None => {
            terminate(&mut child);
            drain();
            eprintln!(
                "mica: timeout after {} s",
                opts.timeout_secs.unwrap_or_default()
            );
            Ok(None)
        }
    }
}

/// After a run: writes the `--trace` file from the frame lines, or says
/// that frames were folded out of the transcript without one.
fn report_trace(opts: &Options, lines: &[String]) {
    match &opts.trace {
        Some(path) => match trace::write(lines, path) {
            Ok(line) | Err(line) => eprintln!("{line}"),
        },
        None if !lines.is_empty() => eprintln!(
            "mica: trace: {} frame lines folded out of the transcript (pass --trace FILE.json to keep them)",
            lines.len()
        ),
        None => {}
    }
}

/// A path made absolute against the current directory (QEMU runs in the
/// recording directory).
fn absolute(p: &Path) -> PathBuf {
    std::env::current_dir().map_or_else(|_| p.to_path_buf(), |d| d.join(p))
}

/// QEMU's `-d`/`-D` arguments for `--qemu-log` (not part of a recording's
/// command line: a replay may log or not).
fn qemu_log_args(opts: &Options) -> Vec<OsString> {
    match &opts.qemu_log {
        Some(log) => vec![
            "-d".into(),
            "int,cpu_reset".into(),
            "-D".into(),
            absolute(log).into_os_string(),
        ],
        None => Vec::new(),
    }
}

/// The symbolizer for this run: the kernel ELF and the user programs' ELFs
/// build.rs made (or the `MICA_KERNEL_ELF` / `MICA_USER_ELF_DIR` given at run
/// time), and every `--module FILE:NAME` as program NAME's ELF. An `--iso`
/// from elsewhere is symbolized only against ELFs named at run time: the
/// built ones may not be what it holds.
fn annotator(opts: &Options) -> symbolize::Annotator {
    let (kernel, user) = elf_paths(
        opts.iso.is_some(),
        std::env::var_os("MICA_KERNEL_ELF"),
        std::env::var_os("MICA_USER_ELF_DIR"),
    );
    let mut programs = symbolize::Programs::new(user.into_iter().collect());
    for m in &opts.modules {
        programs.add(&m.name, m.file.clone());
    }
    symbolize::Annotator::new(
        kernel,
        programs,
        Some(env!("CARGO_MANIFEST_DIR").to_string()),
    )
}

/// The kernel ELF and the user programs' ELF directory: the run-time
/// variables if set, else build.rs's, except for an `--iso` (`iso_given`).
fn elf_paths(
    iso_given: bool,
    kernel_env: Option<std::ffi::OsString>,
    user_env: Option<std::ffi::OsString>,
) -> (Option<PathBuf>, Option<PathBuf>) {
    let built = |path: Option<&'static str>| if iso_given { None } else { path };
    (
        build_path(kernel_env, built(option_env!("MICA_KERNEL_ELF"))),
        build_path(user_env, built(option_env!("MICA_USER_ELF_DIR"))),
    )
}

/// Waits for `child` to exit; `None` if `timeout` passed first.
fn wait(child: &mut Child, timeout: Option<Duration>) -> Result<Option<ExitStatus>, String> {
    let Some(timeout) = timeout else {
        return child
            .wait()
            .map(Some)
            .map_err(|e| format!("waiting for QEMU: {e}"));
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for QEMU: {e}"))?
        {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

/// Stops QEMU: SIGTERM first so it can restore the terminal, SIGKILL if it lingers.
fn terminate(child: &mut Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    if let Ok(Some(_)) = wait(child, Some(Duration::from_secs(3))) {
        return;
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_path_overrides_the_compiled_one() {
        assert_eq!(
            build_path(Some("/run".into()), Some("/built")),
            Some(PathBuf::from("/run"))
        );
    }

    #[test]
    fn the_compiled_path_is_used_when_the_environment_is_empty() {
        assert_eq!(
            build_path(Some("".into()), Some("/built")),
            Some(PathBuf::from("/built"))
        );
        assert_eq!(
            build_path(None, Some("/built")),
            Some(PathBuf::from("/built"))
        );
        assert_eq!(build_path(None, None), None);
    }

    #[test]
    fn an_iso_from_elsewhere_is_symbolized_only_against_elfs_named_at_run_time() {
        assert_eq!(elf_paths(true, None, None), (None, None));
        assert_eq!(
            elf_paths(true, Some("/k".into()), Some("/u".into())),
            (Some(PathBuf::from("/k")), Some(PathBuf::from("/u")))
        );
        let built = elf_paths(false, None, None);
        assert_eq!(built.0, option_env!("MICA_KERNEL_ELF").map(PathBuf::from));
        assert_eq!(built.1, option_env!("MICA_USER_ELF_DIR").map(PathBuf::from));
        assert_eq!(
            elf_paths(false, Some("/k".into()), None).0,
            Some(PathBuf::from("/k"))
        );
    }

    #[test]
    fn uefi_is_refused_for_an_iso_without_an_efi_image() {
        let e = check_iso_firmware(Firmware::Uefi, Some(&["bios"])).unwrap_err();
        assert!(e.contains("no uefi boot image"), "{e}");
        assert!(e.contains("grub-efi-amd64-bin"), "{e}");
        assert!(check_iso_firmware(Firmware::Uefi, Some(&["bios", "uefi"])).is_ok());
        assert!(check_iso_firmware(Firmware::Bios, Some(&["bios", "uefi"])).is_ok());
        assert!(check_iso_firmware(Firmware::Bios, Some(&["uefi"])).is_err());
        // An ISO the runner did not build (--iso, MICA_ISO) is not second-guessed.
        assert!(check_iso_firmware(Firmware::Uefi, None).is_ok());
    }
}

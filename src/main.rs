//! The Mica runner behind `cargo run`: boots the ISO that build.rs assembled in QEMU,
//! with the serial console on the terminal, and turns the guest's isa-debug-exit
//! report into the process exit status. See `--help` and README.md.

mod cli;
mod grubcfg;
mod iso;
mod qemu;

use cli::{Command, Options};
use std::path::PathBuf;
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
    let opts = match cli::parse(args) {
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
    match boot(&opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mica: {e}");
            1
        }
    }
}

fn boot(opts: &Options) -> Result<i32, String> {
    // Keeps a one-off ISO alive until QEMU has exited.
    let mut _custom = None;
    let iso = if let Some(iso) = &opts.iso {
        iso.clone()
    } else if opts.needs_custom_iso() {
        let (dir, iso) =
            iso::build_custom_iso(&iso_root()?, opts.cmdline.as_deref(), &opts.modules)?;
        _custom = Some(dir);
        iso
    } else {
        default_iso()?
    };
    if !iso.is_file() {
        return Err(format!("ISO {} does not exist", iso.display()));
    }

    let program = std::env::var("MICA_QEMU")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| qemu::DEFAULT_QEMU.to_string());
    let args = qemu::argv(&iso, opts);
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

    let mut cmd = std::process::Command::new(&program);
    cmd.args(&args);
    if opts.headless {
        cmd.stdin(Stdio::null());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program} (run scripts/deps.sh): {e}"))?;

    let status = match wait(&mut child, opts.timeout_secs.map(Duration::from_secs))? {
        Some(status) => status,
        None => {
            terminate(&mut child);
            eprintln!(
                "mica: timeout after {} s",
                opts.timeout_secs.unwrap_or_default()
            );
            return Ok(qemu::EXIT_TIMEOUT);
        }
    };
    let verdict = qemu::verdict(status.code(), !opts.headless);
    if let Some(msg) = verdict.message {
        eprintln!("{msg}");
    }
    Ok(verdict.exit)
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
}

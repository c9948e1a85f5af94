//! `--record DIR` and `--replay DIR`: a boot recorded with QEMU's
//! record/replay, and its replay checked against the manifest (the
//! manifest's format and checks are in [`crate::replay`]).

use crate::cli::Options;
use crate::{
    annotator_for, build_path, elf_paths, qemu, qemu_log_args, qemu_program, replay,
    spawn_and_wait, symbolize,
};
use std::ffi::OsString;
use std::path::Path;

/// `--record DIR`: copies the ISO (and kernel ELF) into DIR, boots with
/// record/replay on, and writes DIR/manifest when QEMU has exited.
pub(crate) fn record_run(
    opts: &Options,
    program: &str,
    iso: &Path,
    dir: &Path,
) -> Result<i32, String> {
    let ctx = |what: &str, e: std::io::Error| format!("--record {}: {what}: {e}", dir.display());
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "--record {}: the directory is not empty (pick a new one; a \
                     recording is never overwritten)",
                    dir.display()
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| ctx("cannot create it", e))?
        }
        Err(e) => return Err(ctx("cannot read it", e)),
    }
    std::fs::copy(iso, dir.join(replay::ISO)).map_err(|e| ctx("cannot copy the ISO", e))?;
    let iso_digest = replay::Digest::of_file(&dir.join(replay::ISO))?;
    let kernel = build_path(
        std::env::var_os("MICA_KERNEL_ELF"),
        if opts.iso.is_some() {
            None
        } else {
            option_env!("MICA_KERNEL_ELF")
        },
    );
    if let Some(k) = kernel.filter(|k| k.is_file()) {
        std::fs::copy(&k, dir.join(replay::KERNEL_ELF))
            .map_err(|e| ctx("cannot copy the kernel ELF", e))?;
    }
    let img = qemu_img(program);
    let made = std::process::Command::new(&img)
        .args(["create", "-q", "-f", "qcow2", replay::SNAPSHOTS, "64M"])
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cannot run {img}: {e}"))?;
    if !made.success() {
        return Err(format!("{img} could not create {}", replay::SNAPSHOTS));
    }
    let rec_opts = Options {
        qemu_log: None,
        ..opts.clone()
    };
    let args = qemu::argv(Path::new(replay::ISO), &rec_opts, None);
    let mut all = args.clone();
    all.extend(qemu_log_args(opts));
    if std::env::var("MICA_VERBOSE").is_ok_and(|v| v == "1") {
        eprintln!(
            "mica: (in {}) {}",
            dir.display(),
            qemu::shell_words(program, &all)
        );
    }
    let transcript = std::fs::File::create(dir.join(replay::SERIAL))
        .map_err(|e| ctx("cannot create serial.log", e))?;
    let status = spawn_and_wait(
        opts,
        program,
        &all,
        Some(dir),
        Some(transcript),
        annotator_for(opts),
    )?;
    let exit = match status {
        Some(status) => {
            let verdict = qemu::verdict(status.code(), !opts.headless);
            if let Some(msg) = verdict.message {
                eprintln!("{msg}");
            }
            verdict.exit
        }
        None => qemu::EXIT_TIMEOUT,
    };
    let manifest = replay::Manifest {
        iso: iso_digest,
        log: replay::Digest::of_file(&dir.join(replay::LOG))?,
        exit,
        args: args
            .iter()
            .map(|a| {
                a.to_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("QEMU argument {a:?} is not UTF-8"))
            })
            .collect::<Result<_, _>>()?,
    };
    std::fs::write(dir.join(replay::MANIFEST), manifest.render()?)
        .map_err(|e| ctx("cannot write the manifest", e))?;
    eprintln!(
        "mica: recorded into {} (exit {exit}); replay with: cargo run -- --replay {} [--gdb]",
        dir.display(),
        dir.display()
    );
    Ok(exit)
}

/// `qemu-img`, next to a `MICA_QEMU` given as a path, else from PATH.
fn qemu_img(program: &str) -> String {
    match Path::new(program).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join("qemu-img").display().to_string(),
        _ => "qemu-img".to_string(),
    }
}

/// `--replay DIR`: checks the ISO and log against the manifest and runs the
/// recorded command line with `rr=replay`.
pub(crate) fn replay_run(opts: &Options, dir: &Path) -> Result<i32, String> {
    let mpath = dir.join(replay::MANIFEST);
    let text = std::fs::read_to_string(&mpath).map_err(|e| {
        format!(
            "--replay {}: cannot read {} ({e}); is it a --record directory?",
            dir.display(),
            mpath.display()
        )
    })?;
    let manifest =
        replay::Manifest::parse(&text).map_err(|e| format!("{}: {e}", mpath.display()))?;
    manifest
        .check_files(
            replay::Digest::of_file(&dir.join(replay::ISO))?,
            replay::Digest::of_file(&dir.join(replay::LOG))?,
        )
        .map_err(|e| format!("--replay {}: {e}", dir.display()))?;
    let program = qemu_program();
    let mut args: Vec<OsString> = manifest
        .replay_args(opts.gdb)
        .into_iter()
        .map(OsString::from)
        .collect();
    args.extend(qemu_log_args(opts));
    if std::env::var("MICA_VERBOSE").is_ok_and(|v| v == "1") {
        eprintln!(
            "mica: (in {}) {}",
            dir.display(),
            qemu::shell_words(&program, &args)
        );
    }
    if opts.gdb {
        let elf = dir.join(replay::KERNEL_ELF);
        eprintln!("mica: replay halted at reset; QEMU waits for gdb on :1234; attach with:");
        eprintln!("    gdb {} -ex 'target remote :1234'", elf.display());
        eprintln!("  (reverse-stepi and reverse-continue work; they rewind to the snapshot taken when recording began)");
    }
    let transcript = std::fs::File::create(dir.join(replay::REPLAY_SERIAL)).map_err(|e| {
        format!(
            "--replay {}: cannot create {}: {e}",
            dir.display(),
            replay::REPLAY_SERIAL
        )
    })?;
    let annot = opts.symbolize.then(|| {
        let (_, user) = elf_paths(false, None, std::env::var_os("MICA_USER_ELF_DIR"));
        let kernel = Some(dir.join(replay::KERNEL_ELF)).filter(|k| k.is_file());
        symbolize::Annotator::new(
            kernel,
            symbolize::Programs::new(user.into_iter().collect()),
            Some(env!("CARGO_MANIFEST_DIR").to_string()),
        )
    });
    let Some(status) = spawn_and_wait(opts, &program, &args, Some(dir), Some(transcript), annot)?
    else {
        return Ok(qemu::EXIT_TIMEOUT);
    };
    let (exit, msg) = replay_verdict(status.code(), manifest.exit);
    eprintln!("{msg}");
    Ok(exit)
}

/// The runner's status after a replay: the recorded one when QEMU reached the
/// end of the log (it exits 0 there) or ended as the recording did; 1 when
/// QEMU gave up (it aborts when the log does not match what the guest does).
fn replay_verdict(code: Option<i32>, recorded: i32) -> (i32, String) {
    let replayed = qemu::verdict(code, false).exit;
    match code {
        Some(0) => (
            recorded,
            format!("mica: replay reached the end of the recording (recorded exit {recorded})"),
        ),
        _ if replayed == recorded && code != Some(1) => (
            recorded,
            format!("mica: replay ended as recorded (exit {recorded})"),
        ),
        _ => (
            1,
            format!(
                "mica: replay FAILED: QEMU {} (the recording ended with exit {recorded}); \
                 the log does not match this ISO or this QEMU",
                match code {
                    Some(c) => format!("exited with status {c}"),
                    None => "was killed by a signal (it aborts when the log diverges)".to_string(),
                }
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_that_reaches_the_end_or_ends_alike_gives_the_recorded_status() {
        assert_eq!(replay_verdict(Some(0), 1).0, 1);
        assert_eq!(replay_verdict(Some(0), 0).0, 0);
        assert_eq!(replay_verdict(Some(33), 0).0, 0);
        assert_eq!(replay_verdict(Some(35), 1).0, 1);
        // QEMU aborts (SIGABRT) when the log diverges: a failure, said so.
        let (exit, msg) = replay_verdict(None, 0);
        assert_eq!(exit, 1);
        assert!(msg.contains("replay FAILED"), "{msg}");
        // A result other than the recorded one is a failure too.
        assert!(replay_verdict(Some(35), 0).1.contains("FAILED"));
        assert!(replay_verdict(Some(1), 1).1.contains("FAILED"));
    }
}

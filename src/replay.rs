//! Record and replay (`--record DIR`, `--replay DIR`): QEMU's deterministic
//! record/replay (icount, `-icount ...,rr=record|replay,rrfile=...`) with the
//! CD-ROM behind a `blkreplay` drive, and a recording directory that holds
//! everything a replay needs:
//!
//! - `mica.iso`        a copy of the booted ISO
//! - `replay.bin`      QEMU's replay log (every nondeterministic input)
//! - `snapshots.qcow2` where QEMU keeps the `init` snapshot it takes at the
//!   start (`rrsnapshot=init`), which reverse-stepi/reverse-continue need
//! - `kernel.elf`      the kernel ELF of the build, for gdb and symbolizing
//! - `serial.log`      the raw serial transcript of the recorded run
//! - `manifest`        the exact QEMU command line (relative to DIR) and the
//!   size and hash of the ISO and of the log, checked before a replay
//!
//! A replay writes its transcript to `replay-serial.log`.

use std::path::Path;

/// The manifest's file name inside a recording directory.
pub const MANIFEST: &str = "manifest";
/// The ISO copy's file name.
pub const ISO: &str = "mica.iso";
/// QEMU's replay log.
pub const LOG: &str = "replay.bin";
/// The qcow2 image QEMU stores its start-of-recording snapshot in.
pub const SNAPSHOTS: &str = "snapshots.qcow2";
/// The snapshot's name (`rrsnapshot=`).
pub const SNAPSHOT_NAME: &str = "init";
/// The kernel ELF copy.
pub const KERNEL_ELF: &str = "kernel.elf";
/// The raw serial transcript of the recording.
pub const SERIAL: &str = "serial.log";
/// The raw serial transcript of the last replay.
pub const REPLAY_SERIAL: &str = "replay-serial.log";

const HEADER: &str = "# Mica recording: replay with `cargo run -- --replay DIR` (see README.md)";
const VERSION: u32 = 1;

/// Size and FNV-1a 64-bit hash of a file: catches a replaced or changed ISO or
/// log (accidents, not malice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub size: u64,
    pub fnv64: u64,
}

impl Digest {
    /// Digests `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Digest {
            size: bytes.len() as u64,
            fnv64: h,
        }
    }

    /// Digests the file at `path`.
    pub fn of_file(path: &Path) -> Result<Digest, String> {
        std::fs::read(path)
            .map(|b| Digest::of(&b))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    }
}

/// What a recording directory's `manifest` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The ISO copy's digest.
    pub iso: Digest,
    /// The replay log's digest, taken when the recording ended.
    pub log: Digest,
    /// The runner's exit status for the recorded run.
    pub exit: i32,
    /// QEMU's arguments as recorded (`rr=record`), paths relative to the directory.
    pub args: Vec<String>,
}

impl Manifest {
    /// The manifest's text.
    pub fn render(&self) -> Result<String, String> {
        let mut s = format!("{HEADER}\nversion {VERSION}\n");
        for (name, file, d) in [("iso", ISO, self.iso), ("log", LOG, self.log)] {
            s.push_str(&format!("{name} {file} {} {:016x}\n", d.size, d.fnv64));
        }
        s.push_str(&format!("exit {}\n", self.exit));
        for a in &self.args {
            if a.contains('\n') {
                return Err(format!("QEMU argument {a:?} contains a newline"));
            }
            s.push_str("arg ");
            s.push_str(a);
            s.push('\n');
        }
        Ok(s)
    }

    /// Parses a manifest's text; every line must be understood.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut version = None;
        let (mut iso, mut log, mut exit) = (None, None, None);
        let mut args = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let bad = |why: &str| format!("manifest line {}: {why}: {line:?}", n + 1);
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (key, rest) = line.split_once(' ').ok_or_else(|| bad("no value"))?;
            match key {
                "version" => version = Some(rest.parse::<u32>().map_err(|_| bad("bad version"))?),
                "iso" | "log" => {
                    let w: Vec<&str> = rest.split(' ').collect();
                    let want = if key == "iso" { ISO } else { LOG };
                    let [file, size, hash] = w[..] else {
                        return Err(bad("expected FILE SIZE HASH"));
                    };
                    if file != want {
                        return Err(bad(&format!("the file must be {want}")));
                    }
                    let d = Digest {
                        size: size.parse().map_err(|_| bad("bad size"))?,
                        fnv64: u64::from_str_radix(hash, 16).map_err(|_| bad("bad hash"))?,
                    };
                    *(if key == "iso" { &mut iso } else { &mut log }) = Some(d);
                }
                "exit" => exit = Some(rest.parse::<i32>().map_err(|_| bad("bad exit status"))?),
                "arg" => args.push(rest.to_string()),
                _ => return Err(bad("unknown key")),
            }
        }
        match version {
            Some(VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "manifest version {v}; this runner reads version {VERSION}"
                ))
            }
            None => return Err("manifest has no version line".to_string()),
        }
        let missing = |what: &str| format!("manifest has no {what} line");
        let m = Manifest {
            iso: iso.ok_or_else(|| missing("iso"))?,
            log: log.ok_or_else(|| missing("log"))?,
            exit: exit.ok_or_else(|| missing("exit"))?,
            args,
        };
        if m.args.iter().filter(|a| a.contains("rr=record")).count() != 1 {
            return Err("manifest's QEMU command line has no single `rr=record`".to_string());
        }
        Ok(m)
    }

    /// QEMU's arguments to replay the recording: the recorded ones with
    /// `rr=replay`, plus the gdb stub (halted at reset) when asked for.
    pub fn replay_args(&self, gdb: bool) -> Vec<String> {
        let mut a: Vec<String> = self
            .args
            .iter()
            .map(|s| s.replace("rr=record", "rr=replay"))
            .collect();
        if gdb {
            a.extend(["-s".to_string(), "-S".to_string()]);
        }
        a
    }

    /// Checks the directory's ISO and log against the manifest.
    pub fn check_files(&self, iso: Digest, log: Digest) -> Result<(), String> {
        let what = |name: &str, want: Digest, have: Digest| {
            format!(
                "{name} differs from the one recorded ({} bytes, hash {:016x}; the manifest \
                 says {} bytes, hash {:016x}): the replay would diverge or show another run",
                have.size, have.fnv64, want.size, want.fnv64
            )
        };
        if iso != self.iso {
            return Err(what(ISO, self.iso, iso));
        }
        if log != self.log {
            return Err(what(LOG, self.log, log));
        }
        Ok(())
    }
}

/// The `-icount` value for a recording: exact instruction counting
/// (`shift=0`) with record/replay. Not `sleep=off`: QEMU 10 records nothing
/// past SeaBIOS with it (the boot hangs without output; tried by hand).
pub fn icount_value(mode: &str) -> String {
    format!("shift=0,rr={mode},rrfile={LOG},rrsnapshot={SNAPSHOT_NAME}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            iso: Digest::of(b"iso"),
            log: Digest::of(b"log"),
            exit: 0,
            args: vec![
                "-machine".into(),
                "pc".into(),
                "-icount".into(),
                icount_value("record"),
                "-cmdline has spaces".into(),
            ],
        }
    }

    #[test]
    fn a_manifest_survives_a_round_trip() {
        let m = sample();
        let text = m.render().unwrap();
        assert!(text.starts_with("# Mica recording"));
        assert!(text
            .contains("\narg -icount\narg shift=0,rr=record,rrfile=replay.bin,rrsnapshot=init\n"));
        assert_eq!(Manifest::parse(&text).unwrap(), m);
    }

    #[test]
    fn replay_switches_the_mode_and_adds_gdb_only_when_asked() {
        let m = sample();
        let a = m.replay_args(false);
        assert_eq!(a.len(), m.args.len());
        assert!(a.contains(&"shift=0,rr=replay,rrfile=replay.bin,rrsnapshot=init".to_string()));
        assert!(!a.iter().any(|s| s.contains("rr=record")));
        let g = m.replay_args(true);
        assert_eq!(&g[g.len() - 2..], ["-s", "-S"]);
    }

    #[test]
    fn a_changed_iso_or_log_is_refused() {
        let m = sample();
        assert!(m
            .check_files(Digest::of(b"iso"), Digest::of(b"log"))
            .is_ok());
        let e = m
            .check_files(Digest::of(b"isp"), Digest::of(b"log"))
            .unwrap_err();
        assert!(e.starts_with("mica.iso differs"), "{e}");
        let e = m
            .check_files(Digest::of(b"iso"), Digest::of(b"log!"))
            .unwrap_err();
        assert!(e.starts_with("replay.bin differs"), "{e}");
    }

    #[test]
    fn the_digest_is_fnv1a_64() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(Digest::of(b"").fnv64, 0xcbf2_9ce4_8422_2325);
        assert_eq!(Digest::of(b"a").fnv64, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Digest::of(b"foobar").fnv64, 0x8594_4171_f739_67e8);
    }

    #[test]
    fn malformed_manifests_are_refused_with_the_line() {
        let good = sample().render().unwrap();
        let e = Manifest::parse(&good.replace("version 1", "version 2")).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
        let e = Manifest::parse(&good.replace("version 1\n", "")).unwrap_err();
        assert!(e.contains("no version"), "{e}");
        let e = Manifest::parse(&format!("{good}colour blue\n")).unwrap_err();
        assert!(
            e.contains("unknown key") && e.contains("colour blue"),
            "{e}"
        );
        let e = Manifest::parse(&good.replace("iso mica.iso", "iso other.iso")).unwrap_err();
        assert!(e.contains("must be mica.iso"), "{e}");
        let e = Manifest::parse(&good.replace("rr=record", "rr=off")).unwrap_err();
        assert!(e.contains("rr=record"), "{e}");
        let e = Manifest::parse(&good.replace("exit 0\n", "")).unwrap_err();
        assert!(e.contains("no exit"), "{e}");
    }

    #[test]
    fn an_argument_with_a_newline_cannot_be_written() {
        let mut m = sample();
        m.args.push("two\nlines".into());
        assert!(m.render().is_err());
    }
}

//! Command-line parsing for the runner (hand-written, no argument-parsing crate).

use std::path::{Path, PathBuf};

/// The usage text printed by `--help` and after a usage error.
pub const USAGE: &str = "\
usage: cargo run -- [OPTIONS]        (or scripts/run.sh [OPTIONS])

Boots the Mica ISO in QEMU with the serial console on this terminal
(Ctrl-C goes to the guest; Ctrl-A x quits QEMU, Ctrl-A h lists its other keys).

options:
  --smp N              number of CPUs (default 1)
  --mem MIB            guest RAM in MiB (default 256)
  --cmdline \"ARGS\"     append ARGS to the kernel command line (repeatable;
                       rebuilds the ISO in a temporary directory)
  --module FILE[:NAME] add FILE as boot module NAME (default: FILE's name);
                       repeatable; an existing module of that name is replaced
  --gdb                start halted with a gdb stub on :1234 (-s -S)
  --headless           do not connect stdin to the guest (for scripts)
  --timeout SECS       kill QEMU after SECS seconds and exit with 124
  --accel tcg|kvm      QEMU accelerator (default tcg; kvm only on real VT-x/AMD-V)
  --firmware bios|uefi boot through SeaBIOS (default) or OVMF's UEFI; uefi runs
                       OVMF's code read-only with a private copy of its
                       variable store, deleted afterwards (needs the ovmf package)
  --machine pc|q35     QEMU machine: pc (i440fx, default) or q35 (ICH9, PCIe)
  --icount             deterministic mode: -accel tcg,thread=single
                       -icount shift=0,sleep=off (guest time never waits for the
                       host; what still varies at --smp 2+: README.md)
  --record DIR         record the run with QEMU's record/replay (single CPU
                       only) into DIR (new or empty): the ISO, the QEMU command
                       line (DIR/manifest), the replay log, the serial transcript
  --replay DIR         replay a recording instruction for instruction; with
                       --gdb, gdb can step backwards (reverse-stepi)
  --cpu MODEL          QEMU CPU model (default max; with --icount max,-x2apic)
  --qemu-log FILE      log interrupts and CPU resets to FILE (-d int,cpu_reset)
  --iso PATH           boot PATH instead of the ISO built by cargo
  --no-symbolize       pass the serial output through without adding
                       `at function (file:line)` lines under kernel backtraces
                       and user faults
  --trace FILE.json    turn the kernel trace on (adds `trace=on` to the kernel
                       command line unless it names `trace=` itself) and write
                       the rings the kernel prints at shutdown or panic as a
                       Chrome trace-event file for ui.perfetto.dev (the frame
                       lines are folded out of the transcript; src/trace.rs)
  -h, --help           show this help

exit status:
  0 guest reported success   1 guest reported failure / QEMU error
  2 usage error              3 guest reset or powered off without a result
  124 timeout

environment:
  MICA_VERBOSE=1       print the QEMU command line to stderr
  MICA_QEMU=PROGRAM    QEMU binary to run (default qemu-system-x86_64)
  MICA_KERNEL_ELF, MICA_USER_ELF_DIR  the kernel ELF and the directory of the
                       user programs' ELFs used to symbolize (fixed by build.rs;
                       with --iso, only these variables enable symbolizing)
  MICA_ISO, MICA_ISO_ROOT  override the default ISO / its staging tree (both are
                       normally fixed by build.rs when the runner is compiled)
  MICA_OVMF_CODE, MICA_OVMF_VARS  OVMF's code and variable-store images for
                       --firmware uefi (default: the ovmf package's files)
  MICA_GRUB_DIRECTORY=DIR  build ISOs for the one GRUB platform in DIR (e.g.
                       /usr/lib/grub/i386-pc) instead of every installed one";

/// The QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Multi-threaded TCG (the default).
    Tcg,
    /// KVM; only on hosts with real hardware virtualization.
    Kvm,
}

/// The firmware QEMU boots the ISO with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// OVMF (EDK II's UEFI for QEMU).
    Uefi,
}

impl Firmware {
    /// The name used on the command line and by build.rs (`MICA_ISO_FIRMWARE`).
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

/// The QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// i440fx + PIIX3, QEMU's default.
    Pc,
    /// ICH9 with PCIe.
    Q35,
}

impl Machine {
    /// QEMU's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
        }
    }
}

/// A `--module FILE[:NAME]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The host file to copy into the ISO.
    pub file: PathBuf,
    /// The module's name: its file is `boot/NAME`, its GRUB command line `NAME`.
    pub name: String,
}

/// Everything the runner was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub smp: u32,
    pub mem_mib: u32,
    /// Words appended to the kernel's multiboot2 line (all `--cmdline`s, space-joined).
    pub cmdline: Option<String>,
    pub modules: Vec<Module>,
    pub gdb: bool,
    pub headless: bool,
    /// Seconds after which QEMU is killed.
    pub timeout_secs: Option<u64>,
    pub accel: Accel,
    pub firmware: Firmware,
    pub machine: Machine,
    pub icount: bool,
    pub cpu: String,
    pub qemu_log: Option<PathBuf>,
    pub iso: Option<PathBuf>,
    /// Annotate backtraces and user faults with function names (src/symbolize.rs).
    pub symbolize: bool,
    /// `--record DIR`: record the run into DIR (src/replay.rs).
    pub record: Option<PathBuf>,
    /// `--replay DIR`: replay the recording in DIR.
    pub replay: Option<PathBuf>,
    /// `--trace FILE.json`: where the decoded kernel trace goes (src/trace.rs).
    pub trace: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            smp: 1,
            mem_mib: 256,
            cmdline: None,
            modules: Vec::new(),
            gdb: false,
            headless: false,
            timeout_secs: None,
            accel: Accel::Tcg,
            firmware: Firmware::Bios,
            machine: Machine::Pc,
            icount: false,
            cpu: "max".to_string(),
            qemu_log: None,
            iso: None,
            symbolize: true,
            record: None,
            replay: None,
            trace: None,
        }
    }
}

impl Options {
    /// Whether the ISO must be rebuilt because grub.cfg or the module set changes.
    pub fn needs_custom_iso(&self) -> bool {
        self.cmdline.is_some() || !self.modules.is_empty()
    }
}

/// What the runner should do.
// One value per run, never stored in bulk: its size does not matter, and
// boxing `Options` would only add derefs at every use.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Help,
}

/// The kernel command-line word `--icount` adds (libipc's
/// `bench::ICOUNT_CMDLINE_FLAG`): rdtsc counts instructions.
pub const ICOUNT_CMDLINE_FLAG: &str = "bench.icount";

/// The kernel command-line word `--trace` adds when the command line does
/// not choose categories itself.
pub const TRACE_ON: &str = "trace=on";

/// Whether a kernel command line already says what to trace.
fn names_trace(cmdline: Option<&str>) -> bool {
    cmdline.is_some_and(|c| {
        c.split_whitespace()
            .any(|w| w == "trace" || w.starts_with("trace="))
    })
}

/// The CPU model `--icount` uses unless `--cpu` says otherwise.
pub const ICOUNT_CPU: &str = "max,-x2apic";

/// Parses the runner's arguments (without the program name). Options take their value
/// either as the next argument or after `=` (`--smp 2`, `--smp=2`). A repeated scalar
/// option keeps its last value, so callers can override defaults they prepended.
pub fn parse<I, S>(args: I) -> Result<Command, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut opts = Options::default();
    let mut cpu_given = false;
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let takes_value = matches!(
            flag.as_str(),
            "--smp"
                | "--mem"
                | "--cmdline"
                | "--module"
                | "--timeout"
                | "--accel"
                | "--firmware"
                | "--machine"
                | "--cpu"
                | "--qemu-log"
                | "--iso"
                | "--record"
                | "--replay"
                | "--trace"
        );
        let value = if takes_value {
            match inline {
                Some(v) => v,
                None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
            }
        } else {
            if inline.is_some() {
                return Err(format!("{flag} takes no value"));
            }
            String::new()
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--smp" => opts.smp = parse_number(&flag, &value, 1, 255)?,
            "--mem" => opts.mem_mib = parse_number(&flag, &value, 16, 1 << 20)?,
            "--cmdline" => {
                let words = value.split_whitespace().collect::<Vec<_>>().join(" ");
                if !words.is_empty() {
                    opts.cmdline = Some(match opts.cmdline.take() {
                        Some(prev) => format!("{prev} {words}"),
                        None => words,
                    });
                }
            }
            "--module" => opts.modules.push(parse_module(&value)?),
            "--gdb" => opts.gdb = true,
            "--headless" => opts.headless = true,
            "--timeout" => {
                opts.timeout_secs = Some(parse_number(&flag, &value, 1, 7 * 24 * 3600)?.into())
            }
            "--accel" => {
                opts.accel = match value.as_str() {
                    "tcg" => Accel::Tcg,
                    "kvm" => Accel::Kvm,
                    _ => return Err(format!("--accel must be tcg or kvm, not {value:?}")),
                }
            }
            "--firmware" => {
                opts.firmware = match value.as_str() {
                    "bios" => Firmware::Bios,
                    "uefi" => Firmware::Uefi,
                    _ => return Err(format!("--firmware must be bios or uefi, not {value:?}")),
                }
            }
            "--machine" => {
                opts.machine = match value.as_str() {
                    "pc" => Machine::Pc,
                    "q35" => Machine::Q35,
                    _ => return Err(format!("--machine must be pc or q35, not {value:?}")),
                }
            }
            "--icount" => opts.icount = true,
            "--cpu" => {
                cpu_given = true;
                if value.is_empty() {
                    return Err("--cpu needs a model name".to_string());
                }
                opts.cpu = value;
            }
            "--qemu-log" => opts.qemu_log = Some(PathBuf::from(value)),
            "--iso" => opts.iso = Some(PathBuf::from(value)),
            "--no-symbolize" => opts.symbolize = false,
            "--record" | "--replay" if value.is_empty() => {
                return Err(format!("{flag} needs a directory"))
            }
            "--record" => opts.record = Some(PathBuf::from(value)),
            "--replay" => opts.replay = Some(PathBuf::from(value)),
            "--trace" if value.is_empty() => return Err("--trace needs a file name".to_string()),
            "--trace" => opts.trace = Some(PathBuf::from(value)),
            _ if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    if opts.replay.is_some() {
        return check_replay(opts);
    }
    if opts.trace.is_some() && !names_trace(opts.cmdline.as_deref()) {
        opts.cmdline = Some(match opts.cmdline.take() {
            Some(prev) => format!("{prev} {TRACE_ON}"),
            None => TRACE_ON.to_string(),
        });
    }
    if opts.record.is_some() {
        check_record(&opts)?;
        // A recording runs in icount mode: the same CPU model and the same
        // `bench.icount` word as --icount.
        opts.icount = true;
    }
    if opts.icount && opts.accel == Accel::Kvm {
        return Err("--icount needs TCG; it cannot be combined with --accel kvm".to_string());
    }
    // QEMU 10 aborts ("Bad icount read") when the guest programs the x2APIC
    // timer through MSRs under -icount; the xAPIC's MMIO path works.
    if opts.icount && !cpu_given {
        opts.cpu = ICOUNT_CPU.to_string();
    }
    if opts.iso.is_some() && opts.needs_custom_iso() {
        return Err(
            "--iso cannot be combined with --cmdline or --module (those rebuild the ISO \
             from cargo's staging tree)"
                .to_string(),
        );
    }
    // Under -icount rdtsc counts guest instructions, not cycles; the guest
    // learns it from this word so its benchmarks print the right unit. (A
    // prebuilt --iso keeps its own command line.)
    if opts.icount && opts.iso.is_none() {
        opts.cmdline = Some(match opts.cmdline.take() {
            Some(prev) => format!("{prev} {ICOUNT_CMDLINE_FLAG}"),
            None => ICOUNT_CMDLINE_FLAG.to_string(),
        });
    }
    for (i, m) in opts.modules.iter().enumerate() {
        if opts.modules[..i].iter().any(|o| o.name == m.name) {
            return Err(format!("module name {:?} given twice", m.name));
        }
    }
    Ok(Command::Run(opts))
}

/// What `--record` cannot be combined with.
fn check_record(opts: &Options) -> Result<(), String> {
    if opts.smp > 1 {
        return Err(format!(
            "--record needs a single CPU (QEMU's record/replay does not support \
             multiple CPUs), not --smp {}; for SMP, the closest tool is the \
             deterministic --icount mode (scripts/smoke.sh --repeat N CASE reruns \
             a case in it)",
            opts.smp
        ));
    }
    if opts.accel == Accel::Kvm {
        return Err("--record needs TCG; it cannot be combined with --accel kvm".to_string());
    }
    if opts.firmware == Firmware::Uefi {
        return Err(
            "--record supports --firmware bios only (OVMF's writable variable \
             flash is not behind a blkreplay drive)"
                .to_string(),
        );
    }
    if opts.gdb {
        return Err(
            "--record cannot be combined with --gdb; attach gdb to the replay \
             (--replay DIR --gdb)"
                .to_string(),
        );
    }
    Ok(())
}

/// `--replay DIR` takes the machine from the recording: only the options
/// that do not change what QEMU runs are allowed beside it.
fn check_replay(opts: Options) -> Result<Command, String> {
    let free = Options {
        gdb: opts.gdb,
        headless: opts.headless,
        timeout_secs: opts.timeout_secs,
        symbolize: opts.symbolize,
        qemu_log: opts.qemu_log.clone(),
        replay: opts.replay.clone(),
        ..Options::default()
    };
    if free != opts {
        return Err(
            "--replay takes the machine, CPU count and ISO from the recording; only \
             --gdb, --headless, --timeout, --qemu-log and --no-symbolize go with it"
                .to_string(),
        );
    }
    Ok(Command::Run(opts))
}

fn parse_number(flag: &str, value: &str, min: u32, max: u32) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag} needs a whole number from {min} to {max}, not {value:?}"
        )),
    }
}

/// Parses `FILE[:NAME]`. The name is split off at the last `:` only when what follows
/// looks like a name (no `/`), so `dir:x/file` still means a file.
pub fn parse_module(spec: &str) -> Result<Module, String> {
    let (file, name) = match spec.rsplit_once(':') {
        Some((file, name)) if !name.contains('/') && !file.is_empty() => {
            (file, Some(name.to_string()))
        }
        _ => (spec, None),
    };
    if file.is_empty() {
        return Err("--module needs a file".to_string());
    }
    let file = PathBuf::from(file);
    let name = match name {
        Some(n) => n,
        None => default_module_name(&file)?,
    };
    check_module_name(&name)?;
    Ok(Module { file, name })
}

fn default_module_name(file: &Path) -> Result<String, String> {
    file.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| format!("cannot derive a module name from {}", file.display()))
}

/// A module name becomes both a file name in `boot/` and an unquoted GRUB word, so it
/// is limited to a safe alphabet and must not collide with the kernel or GRUB's files.
pub fn check_module_name(name: &str) -> Result<(), String> {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+');
    if name.is_empty() || !name.chars().all(safe) || name.starts_with('.') {
        return Err(format!(
            "module name {name:?} must be non-empty and use only letters, digits, . _ - +"
        ));
    }
    if name == "kernel" || name == "grub" {
        return Err(format!("module name {name:?} is reserved"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

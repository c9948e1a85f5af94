//! Builds the Mica kernel and every boot program for `x86_64-unknown-none` and
//! assembles the bootable GRUB ISO, then hands its paths to the runner
//! (`src/main.rs`) as compile-time environment variables.
//!
//! Nested `cargo build` calls need care on stable (all verified):
//! - a separate `--target-dir` per flag set (the outer build holds the lock on its
//!   own target dir, and sharing one deadlocks silently);
//! - `CARGO_ENCODED_RUSTFLAGS` set explicitly (cargo sets it to empty for build
//!   scripts, which would silently drop any `[target]` rustflags), and the
//!   clippy/rustc wrappers removed so `cargo clippy` on the host does not leak into
//!   the cross build;
//! - the nested output shown when it fails.
//!
//! The kernel contains no ELF parser, so init's ELF is converted here into the
//! trivial boot-image format of [`abi::bootimg`]; every other boot program
//! stays ELF (its section headers and debug info cut off: see [`strip`]) and
//! is loaded by the loader server (init loads the loader itself). The
//! runner's symbolizer reads the unstripped ELFs in `MICA_USER_ELF_DIR`.

use abi::bootinfo::modules;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/grubiso.rs"]
mod grubiso;

/// (package, binary, module name, flat?).
type Program = (&'static str, &'static str, &'static str, bool);

/// User programs built for the boot image: (package, binary, module name, flat?).
/// `flat` programs (init alone) are converted to the boot-image format the
/// kernel maps directly; the rest stay ELF for the loader. To add a program:
/// a workspace member, a line here, its name in `abi::bootinfo::modules`
/// and a `module2` line in grub/grub.cfg (README, "Adding a program").
/// Module names come from [`abi::bootinfo::modules`] (grub/grub.cfg loads
/// the same list; a runner test checks it).
const USER_PROGRAMS: &[Program] = &[
    ("init", "init", modules::INIT, true),
    ("tests", "tests", modules::TESTS, false),
    ("bench", "bench", modules::BENCH, false),
    ("fuzz", "fuzz", modules::FUZZ, false),
    ("kv", "kv", modules::KV, false),
    ("loader", "loader", modules::LOADER, false),
    ("hello", "hello", modules::HELLO, false),
    ("procmgr", "procmgr", modules::PROCMGR, false),
    ("console", "console", modules::CONSOLE, false),
    ("shell", "shell", modules::SHELL, false),
];

/// Boot programs other programs embed as flat images (the tests program
/// spawns the kv server from its own copy with the kernel's
/// `process_spawn`): built first; each one's flat image (next to the ISO
/// root, not in it) reaches the second build as `MICA_<NAME>_IMAGE`
/// (apps/tests/build.rs reads it).
const EMBEDDED: &[&str] = &["kv"];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    for dir in ["microkernel", "libipc", "init", "servers", "apps", "grub"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-changed=Cargo.lock");
    // The root manifest holds the profiles (debug info, panic strategy) the
    // cross builds use: a change there must rebuild the image.
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-env-changed=MICA_SKIP_IMAGE");
    println!("cargo:rerun-if-env-changed={}", grubiso::DIRECTORY_ENV);
    // Installing or removing a GRUB platform (grub-efi-amd64-bin) changes the ISO.
    println!("cargo:rerun-if-changed={}", grubiso::GRUB_LIB_DIR);

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let cross = target_dir.join("cross");
    let out = target_dir.join("mica");
    let iso_root = out.join("iso_root");
    let iso = out.join("mica.iso");
    println!("cargo:rustc-env=MICA_ISO_ROOT={}", iso_root.display());
    println!("cargo:rustc-env=MICA_ISO={}", iso.display());
    let kernel_elf = cross.join("kernel/x86_64-unknown-none/release/kernel");
    println!("cargo:rustc-env=MICA_KERNEL_ELF={}", kernel_elf.display());
    // The user programs' ELFs (before flattening), for the runner's symbolizer.
    let user_elf_dir = cross.join("user/x86_64-unknown-none/release");
    println!(
        "cargo:rustc-env=MICA_USER_ELF_DIR={}",
        user_elf_dir.display()
    );

    if env::var_os("MICA_SKIP_IMAGE").is_some() {
        return;
    }

    // The kernel: higher half, so static relocations and the kernel code model;
    // frame pointers for the panic backtrace. The linker script comes from
    // microkernel/build.rs.
    cross_build(
        &root,
        &cross.join("kernel"),
        &["mica-kernel"],
        &[
            "-Crelocation-model=static",
            "-Ccode-model=kernel",
            "-Cforce-frame-pointers=yes",
        ],
        &[],
    );
    let boot = iso_root.join("boot");
    fs::create_dir_all(boot.join("grub")).unwrap();
    fs::copy(&kernel_elf, boot.join("kernel")).expect("copy kernel");
    // User programs: plain static executables at lld's default base; the
    // embedded ones first, then the rest with their images' paths.
    let user_flags = [
        "-Crelocation-model=static",
        "-Cforce-frame-pointers=yes",
        // Page-aligned segments map 1:1 onto pages in the boot image.
        "-Clink-arg=-zseparate-loadable-segments",
    ];
    let (first, rest): (Vec<&Program>, Vec<&Program>) =
        USER_PROGRAMS.iter().partition(|p| EMBEDDED.contains(&p.0));
    // Empty for the first build; the embedded images' paths for the second.
    let mut embedded_env = Vec::new();
    for programs in [first, rest] {
        let packages: Vec<&str> = programs.iter().map(|p| p.0).collect();
        cross_build(
            &root,
            &cross.join("user"),
            &packages,
            &user_flags,
            &embedded_env,
        );
        for (package, bin, module, flat) in programs {
            let elf_path = user_elf_dir.join(bin);
            let bytes =
                fs::read(&elf_path).unwrap_or_else(|e| panic!("{}: {e}", elf_path.display()));
            let image = if *flat {
                flatten(&elf_path, &bytes)
            } else {
                strip(&elf_path, &bytes)
            };
            fs::write(boot.join(module), image).unwrap();
            if EMBEDDED.contains(package) {
                let flat_path = out.join(format!("{module}.flat"));
                fs::write(&flat_path, flatten(&elf_path, &bytes)).unwrap();
                embedded_env.push((format!("MICA_{}_IMAGE", package.to_uppercase()), flat_path));
            }
        }
    }
    fs::copy(root.join("grub/grub.cfg"), boot.join("grub/grub.cfg")).expect("copy grub.cfg");

    // Every GRUB platform installed (or only MICA_GRUB_DIRECTORY's) goes into
    // one hybrid ISO, with modules all of them have (see src/grubiso.rs).
    let directory = grubiso::directory_from_env();
    let plan = grubiso::plan(directory.as_deref(), &iso, &iso_root)
        .unwrap_or_else(|e| panic!("cannot build the ISO: {e}"));
    grubiso::run(&plan).unwrap_or_else(|e| panic!("{e}"));
    // The runner refuses `--firmware uefi` with an ISO that cannot boot it.
    println!(
        "cargo:rustc-env=MICA_ISO_FIRMWARE={}",
        grubiso::firmwares(&plan.platforms).join(",")
    );
}

/// Runs `cargo build --release --target x86_64-unknown-none` for `packages` with
/// exactly `rustflags` and the extra environment `env`, in its own target dir.
fn cross_build(
    root: &Path,
    target_dir: &Path,
    packages: &[&str],
    rustflags: &[&str],
    env: &[(String, PathBuf)],
) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--target", "x86_64-unknown-none"])
        .arg("--target-dir")
        .arg(target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    for var in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    if !output.status.success() {
        panic!(
            "cross build of {packages:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// What the loader needs of an ELF: the bytes up to the end of the last
/// segment's file bytes (and of the program headers), with the section
/// header fields zeroed, as the section headers and the debug info after
/// the segments are cut off. A static executable lays its segments out
/// first, so this is `strip` without a tool: tests goes from megabytes of
/// DWARF to its code and data.
fn strip(path: &Path, bytes: &[u8]) -> Vec<u8> {
    use elf::endian::LittleEndian;
    let file = elf::ElfBytes::<LittleEndian>::minimal_parse(bytes)
        .unwrap_or_else(|e| panic!("{}: not an ELF: {e}", path.display()));
    let phdrs_end = file.ehdr.e_phoff + u64::from(file.ehdr.e_phnum) * 56;
    let end = file
        .segments()
        .expect("program headers")
        .iter()
        .map(|ph| ph.p_offset + ph.p_filesz)
        .fold(phdrs_end, u64::max);
    let mut out = bytes[..end as usize].to_vec();
    // e_shoff (8 bytes at 0x28), e_shnum (2 at 0x3c), e_shstrndx (2 at 0x3e).
    out[0x28..0x30].fill(0);
    out[0x3c..0x40].fill(0);
    out
}

/// Converts a static ELF executable into the boot-image format: one record per
/// PT_LOAD segment, file bytes appended in order.
fn flatten(path: &Path, bytes: &[u8]) -> Vec<u8> {
    use abi::bootimg::{encode, encoded_len, SegmentSpec};
    use elf::abi::{PF_R, PF_W, PF_X, PT_LOAD};
    use elf::endian::LittleEndian;
    let file = elf::ElfBytes::<LittleEndian>::minimal_parse(bytes)
        .unwrap_or_else(|e| panic!("{}: not an ELF: {e}", path.display()));
    let mut segments = Vec::new();
    for ph in file.segments().expect("program headers").iter() {
        if ph.p_type != PT_LOAD || ph.p_memsz == 0 {
            continue;
        }
        let mut flags = 0;
        if ph.p_flags & PF_R != 0 {
            flags |= abi::bootimg::SEG_R;
        }
        if ph.p_flags & PF_W != 0 {
            flags |= abi::bootimg::SEG_W;
        }
        if ph.p_flags & PF_X != 0 {
            flags |= abi::bootimg::SEG_X;
        }
        let data = &bytes[ph.p_offset as usize..(ph.p_offset + ph.p_filesz) as usize];
        segments.push((ph.p_vaddr, data.to_vec(), ph.p_memsz, flags));
    }
    let specs: Vec<SegmentSpec> = segments
        .iter()
        .map(|(vaddr, bytes, mem_size, flags)| SegmentSpec {
            vaddr: *vaddr,
            bytes,
            mem_size: *mem_size,
            flags: *flags,
        })
        .collect();
    let mut image = vec![0u8; encoded_len(&specs)];
    let len = encode(file.ehdr.e_entry, &specs, &mut image)
        .unwrap_or_else(|e| panic!("{}: cannot make a boot image: {e}", path.display()));
    image.truncate(len);
    image
}

//! How `grub-mkrescue` is asked to build a Mica ISO: which GRUB platforms it
//! uses and which GRUB modules it installs. Shared by build.rs (through
//! `#[path]`, so std only) and the runner's `--cmdline`/`--module` rebuild
//! (`src/iso.rs`), so both make the same image.
//!
//! Without `--directory`, grub-mkrescue puts every platform installed under
//! GRUB's library directory into one hybrid ISO: `i386-pc` (from
//! grub-pc-bin) boots it under BIOS, `x86_64-efi` (grub-efi-amd64-bin) under
//! UEFI. Its `--install-modules` list applies to *every* such platform and
//! fails on the first module one of them lacks (`cannot open
//! '/usr/lib/grub/x86_64-efi/biosdisk.mod'`), so [`install_modules`] asks
//! only for modules every present platform has.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

/// Where grub-mkrescue finds its platforms (GRUB's compiled-in `pkglibdir`;
/// it cannot be redirected except one platform at a time with `--directory`).
pub const GRUB_LIB_DIR: &str = "/usr/lib/grub";

/// Set to one platform directory (e.g. `/usr/lib/grub/i386-pc`) to build an
/// ISO for that platform only (grub-mkrescue's `--directory`).
pub const DIRECTORY_ENV: &str = "MICA_GRUB_DIRECTORY";

/// Modules the boot menu needs on every platform: the multiboot2 loader, the
/// config parser, the CD file system and the serial console commands.
pub const REQUIRED_MODULES: &[&str] = &["multiboot2", "normal", "iso9660", "serial", "terminal"];

/// Modules installed when every platform has them. `biosdisk` exists only for
/// BIOS (grub-mkrescue builds it into the BIOS core image anyway).
pub const OPTIONAL_MODULES: &[&str] = &["biosdisk"];

/// The firmware a GRUB platform boots from, for the platforms Mica can use.
pub fn firmware_of(platform: &str) -> Option<&'static str> {
    match platform {
        "i386-pc" => Some("bios"),
        "x86_64-efi" => Some("uefi"),
        _ => None,
    }
}

/// One installed GRUB platform: what grub-mkrescue will read from its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// GRUB's name for it, e.g. `x86_64-efi` (its directory's name).
    pub name: String,
    /// The module names it has (`NAME.mod` files).
    pub modules: BTreeSet<String>,
    /// The partition-map modules its `partmap.lst` names: grub-mkrescue's
    /// early config `insmod`s each of them, and a missing one prints
    /// "error: file ... not found" at every EFI boot.
    pub partmaps: Vec<String>,
}

impl Platform {
    /// Reads the platform in `dir` (named by the directory).
    pub fn read(dir: &Path) -> Result<Platform, String> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: not a GRUB platform directory", dir.display()))?
            .to_string();
        let entries =
            fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let mut modules = BTreeSet::new();
        for entry in entries.flatten() {
            if let Some(m) = entry
                .file_name()
                .to_str()
                .and_then(|f| f.strip_suffix(".mod"))
            {
                modules.insert(m.to_string());
            }
        }
        let partmaps = fs::read_to_string(dir.join("partmap.lst"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        Ok(Platform {
            name,
            modules,
            partmaps,
        })
    }
}

/// The platform directories grub-mkrescue will use: only `directory` when
/// given, else every directory under `lib_dir` with a `modinfo.sh` (what
/// grub-mkrescue itself treats as a platform), sorted by name.
pub fn platform_dirs(lib_dir: &Path, directory: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    if let Some(dir) = directory {
        if !dir.join("modinfo.sh").is_file() {
            return Err(format!(
                "{DIRECTORY_ENV}={}: not a GRUB platform directory (no modinfo.sh)",
                dir.display()
            ));
        }
        return Ok(vec![dir.to_path_buf()]);
    }
    let entries = fs::read_dir(lib_dir).map_err(|e| {
        format!(
            "cannot read {} ({e}): GRUB is not installed; run scripts/deps.sh",
            lib_dir.display()
        )
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("modinfo.sh").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// The `--install-modules` list for an ISO carrying `platforms`: every
/// [`REQUIRED_MODULES`] entry (an error naming the platform if one lacks it),
/// then every optional or partition-map module that *all* platforms have.
pub fn install_modules(platforms: &[Platform]) -> Result<Vec<String>, String> {
    if platforms.is_empty() {
        return Err(format!(
            "no GRUB platform is installed under {GRUB_LIB_DIR}; run scripts/deps.sh \
             (grub-pc-bin for BIOS, grub-efi-amd64-bin for UEFI)"
        ));
    }
    let everywhere = |m: &str| platforms.iter().all(|p| p.modules.contains(m));
    let mut out: Vec<String> = Vec::new();
    for m in REQUIRED_MODULES {
        if let Some(p) = platforms.iter().find(|p| !p.modules.contains(*m)) {
            return Err(format!(
                "GRUB platform {} has no {m}.mod, which the Mica ISO needs; set \
                 {DIRECTORY_ENV} to the one platform directory to use (e.g. {GRUB_LIB_DIR}/i386-pc)",
                p.name
            ));
        }
        out.push(m.to_string());
    }
    let partmaps = platforms
        .iter()
        .flat_map(|p| p.partmaps.iter().map(String::as_str));
    for m in OPTIONAL_MODULES.iter().copied().chain(partmaps) {
        if everywhere(m) && !out.iter().any(|o| o == m) {
            out.push(m.to_string());
        }
    }
    Ok(out)
}

/// The firmware an ISO carrying `platforms` boots under (`bios`, `uefi`), in order.
pub fn firmwares(platforms: &[Platform]) -> Vec<&'static str> {
    let mut f: Vec<&'static str> = platforms
        .iter()
        .filter_map(|p| firmware_of(&p.name))
        .collect();
    f.sort_unstable();
    f.dedup();
    f
}

/// What to run to build `iso` from the staging tree `root`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The platforms the ISO will carry.
    pub platforms: Vec<Platform>,
    /// grub-mkrescue's arguments.
    pub args: Vec<OsString>,
}

/// Plans a grub-mkrescue run: reads the platforms (all installed ones, or only
/// `directory`) and chooses the modules.
pub fn plan(directory: Option<&Path>, iso: &Path, root: &Path) -> Result<Plan, String> {
    let platforms = platform_dirs(Path::new(GRUB_LIB_DIR), directory)?
        .iter()
        .map(|d| Platform::read(d))
        .collect::<Result<Vec<_>, _>>()?;
    let modules = install_modules(&platforms)?;
    let mut args: Vec<OsString> = Vec::new();
    if let Some(dir) = directory {
        let mut a = OsString::from("--directory=");
        a.push(dir);
        args.push(a);
    }
    args.push(format!("--install-modules={}", modules.join(" ")).into());
    for a in ["--fonts=", "--locales=", "--themes=", "-o"] {
        args.push(a.into());
    }
    args.push(iso.into());
    args.push(root.into());
    Ok(Plan { platforms, args })
}

/// `MICA_GRUB_DIRECTORY` from the environment, if set and non-empty.
pub fn directory_from_env() -> Option<PathBuf> {
    std::env::var_os(DIRECTORY_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Runs grub-mkrescue as `plan` says.
pub fn run(plan: &Plan) -> Result<(), String> {
    let out = std::process::Command::new("grub-mkrescue")
        .args(&plan.args)
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue (run scripts/deps.sh): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "grub-mkrescue failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso::TempDir;

    fn platform(name: &str, modules: &[&str], partmaps: &[&str]) -> Platform {
        Platform {
            name: name.to_string(),
            modules: modules.iter().map(|m| m.to_string()).collect(),
            partmaps: partmaps.iter().map(|m| m.to_string()).collect(),
        }
    }

    const COMMON: &[&str] = &[
        "multiboot2",
        "normal",
        "iso9660",
        "serial",
        "terminal",
        "part_gpt",
        "part_sun",
    ];

    fn bios() -> Platform {
        let mut p = platform("i386-pc", COMMON, &["part_gpt", "part_sun"]);
        p.modules.insert("biosdisk".to_string());
        p
    }

    fn efi() -> Platform {
        let mut p = platform("x86_64-efi", COMMON, &["part_gpt", "part_sun"]);
        p.modules.insert("efi_gop".to_string());
        p
    }

    #[test]
    fn a_bios_only_install_keeps_biosdisk() {
        let m = install_modules(&[bios()]).unwrap();
        assert_eq!(
            m,
            [REQUIRED_MODULES, &["biosdisk", "part_gpt", "part_sun"]].concat()
        );
    }

    #[test]
    fn with_the_efi_platform_present_only_modules_both_have_are_asked_for() {
        // The bug: `biosdisk` in the list made grub-mkrescue fail on x86_64-efi.
        let m = install_modules(&[bios(), efi()]).unwrap();
        assert!(!m.iter().any(|m| m == "biosdisk"), "{m:?}");
        assert!(!m.iter().any(|m| m == "efi_gop"), "{m:?}");
        for r in REQUIRED_MODULES {
            assert!(m.iter().any(|m| m == r), "{r} missing from {m:?}");
        }
        // Partition maps from partmap.lst are kept, so GRUB's EFI early config
        // finds every module it insmods.
        assert!(m.iter().any(|m| m == "part_sun"));
        assert_eq!(
            install_modules(&[efi()]).unwrap(),
            install_modules(&[efi(), bios()]).unwrap()
        );
    }

    #[test]
    fn a_platform_lacking_a_required_module_is_named() {
        let arm = platform(
            "arm64-efi",
            &["normal", "iso9660", "serial", "terminal"],
            &[],
        );
        let e = install_modules(&[bios(), arm]).unwrap_err();
        assert!(e.contains("arm64-efi has no multiboot2.mod"), "{e}");
        assert!(e.contains(DIRECTORY_ENV), "{e}");
    }

    #[test]
    fn no_platform_at_all_is_an_error() {
        assert!(install_modules(&[])
            .unwrap_err()
            .contains("scripts/deps.sh"));
    }

    #[test]
    fn firmwares_name_what_the_iso_boots_under() {
        assert_eq!(firmwares(&[efi(), bios()]), ["bios", "uefi"]);
        assert_eq!(firmwares(&[bios()]), ["bios"]);
        assert!(firmwares(&[platform("i386-efi", &[], &[])]).is_empty());
    }

    #[test]
    fn platform_directories_are_those_with_a_modinfo_file() {
        let tmp = TempDir::new("mica-grub-test").unwrap();
        for (dir, modinfo) in [("i386-pc", true), ("x86_64-efi", true), ("locale", false)] {
            let d = tmp.path().join(dir);
            fs::create_dir_all(&d).unwrap();
            if modinfo {
                fs::write(d.join("modinfo.sh"), "").unwrap();
            }
        }
        fs::write(tmp.path().join("x86_64-efi/biosdisk.mod"), "").unwrap();
        fs::write(
            tmp.path().join("x86_64-efi/partmap.lst"),
            "part_gpt\npart_msdos\n",
        )
        .unwrap();
        let dirs = platform_dirs(tmp.path(), None).unwrap();
        assert_eq!(
            dirs,
            [tmp.path().join("i386-pc"), tmp.path().join("x86_64-efi")]
        );
        let efi = Platform::read(&dirs[1]).unwrap();
        assert_eq!(efi.name, "x86_64-efi");
        assert!(efi.modules.contains("biosdisk"));
        assert_eq!(efi.partmaps, ["part_gpt", "part_msdos"]);
        // --directory restricts the ISO to one platform, and must be one.
        let only = tmp.path().join("i386-pc");
        assert_eq!(platform_dirs(tmp.path(), Some(&only)).unwrap(), [only]);
        let e = platform_dirs(tmp.path(), Some(&tmp.path().join("locale"))).unwrap_err();
        assert!(e.contains("not a GRUB platform directory"), "{e}");
    }

    /// The El Torito boot images of `iso` (`BIOS`, `UEFI`), as xorriso reports them.
    fn el_torito(iso: &Path) -> Vec<String> {
        let out = std::process::Command::new("xorriso")
            .args(["-indev"])
            .arg(iso)
            .args(["-report_el_torito", "plain"])
            .output()
            .expect("xorriso (scripts/deps.sh installs it)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("El Torito boot img :"))
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect()
    }

    /// Builds real ISOs with grub-mkrescue from a tiny tree: with every GRUB
    /// platform installed here (the hybrid ISO build.rs makes), and with each
    /// one alone through `--directory` (a machine without the others, e.g.
    /// without grub-efi-amd64-bin). Each must build and carry exactly the
    /// boot images of its platforms.
    #[test]
    fn real_isos_build_with_every_installed_platform_set() {
        let installed = platform_dirs(Path::new(GRUB_LIB_DIR), None).unwrap();
        assert!(!installed.is_empty(), "no GRUB platform installed");
        if !installed.iter().any(|d| d.ends_with("x86_64-efi")) {
            eprintln!("note: {GRUB_LIB_DIR}/x86_64-efi is not installed; only BIOS ISOs tested");
        }
        let tmp = TempDir::new("mica-grub-iso-test").unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("boot/grub")).unwrap();
        fs::write(root.join("boot/grub/grub.cfg"), "set timeout=0\n").unwrap();
        fs::write(root.join("boot/kernel"), "not a kernel").unwrap();
        let mut situations: Vec<Option<PathBuf>> = vec![None];
        situations.extend(installed.iter().cloned().map(Some));
        for (i, directory) in situations.iter().enumerate() {
            let iso = tmp.path().join(format!("{i}.iso"));
            let plan = plan(directory.as_deref(), &iso, &root).unwrap();
            run(&plan).unwrap_or_else(|e| panic!("{directory:?}: {e}"));
            let mut want: Vec<String> = firmwares(&plan.platforms)
                .iter()
                .map(|f| f.to_uppercase())
                .collect();
            want.sort();
            let mut have = el_torito(&iso);
            have.sort();
            assert_eq!(have, want, "boot images of the ISO for {directory:?}");
        }
    }
}

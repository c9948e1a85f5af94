//! Building a one-off ISO for `--cmdline` / `--module` from cargo's staging tree.

use crate::cli::Module;
use crate::grubcfg;
use crate::grubiso;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A one-off ISO; its directory is removed when this is dropped, so keep it
/// alive for as long as QEMU uses the ISO.
pub struct CustomIso {
    _dir: TempDir,
    /// The ISO file.
    pub iso: PathBuf,
    /// The firmware it boots under (`bios`, `uefi`).
    pub firmwares: Vec<&'static str>,
}

/// A directory removed (with its contents) when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, uniquely named directory under the system's temp directory.
    pub fn new(prefix: &str) -> io::Result<TempDir> {
        let base = std::env::temp_dir();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for attempt in 0..100u32 {
            let path = base.join(format!(
                "{prefix}-{}-{nanos:x}-{attempt}",
                std::process::id()
            ));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary directory name",
        ))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Copies the directory tree `src` to `dst` (created), following symlinks.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if fs::metadata(&from)?.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Builds `<tmp>/mica.iso` from a copy of `iso_root` whose grub.cfg gets `cmdline`
/// and whose `boot/` gets `modules`, for the GRUB platforms grub-mkrescue finds
/// (see [`grubiso`]).
pub fn build_custom_iso(
    iso_root: &Path,
    cmdline: Option<&str>,
    modules: &[Module],
) -> Result<CustomIso, String> {
    let tmp = TempDir::new("mica-iso").map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let root = tmp.path().join("root");
    copy_tree(iso_root, &root).map_err(|e| {
        format!(
            "cannot copy {} to {}: {e}",
            iso_root.display(),
            root.display()
        )
    })?;

    let cfg_path = root.join("boot/grub/grub.cfg");
    let cfg = fs::read_to_string(&cfg_path)
        .map_err(|e| format!("cannot read {}: {e}", cfg_path.display()))?;
    let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
    let cfg = grubcfg::rewrite(&cfg, cmdline, &names)
        .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    fs::write(&cfg_path, cfg).map_err(|e| format!("cannot write {}: {e}", cfg_path.display()))?;

    for m in modules {
        let to = root.join("boot").join(&m.name);
        fs::copy(&m.file, &to).map_err(|e| {
            format!(
                "cannot copy module {} to {}: {e}",
                m.file.display(),
                to.display()
            )
        })?;
    }

    let iso = tmp.path().join("mica.iso");
    let plan = grubiso::plan(grubiso::directory_from_env().as_deref(), &iso, &root)?;
    grubiso::run(&plan)?;
    Ok(CustomIso {
        _dir: tmp,
        iso,
        firmwares: grubiso::firmwares(&plan.platforms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_tree_copies_nested_files_and_temp_dirs_clean_up_after_themselves() {
        let tmp = TempDir::new("mica-test").unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("boot/grub")).unwrap();
        fs::write(src.join("boot/kernel"), b"ELF").unwrap();
        fs::write(src.join("boot/grub/grub.cfg"), b"cfg").unwrap();
        let dst = tmp.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("boot/kernel")).unwrap(), b"ELF");
        assert_eq!(fs::read(dst.join("boot/grub/grub.cfg")).unwrap(), b"cfg");
        let path = tmp.path().to_owned();
        drop(tmp);
        assert!(!path.exists());
    }
}

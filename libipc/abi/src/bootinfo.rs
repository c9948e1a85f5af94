//! The page the kernel hands init (its first thread's RDI points at it, mapped
//! read-only): the kernel command line and the boot modules other than init,
//! each mapped read-only into init's address space.

/// Identifies a valid page.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MICABOOT");
/// The most modules described.
pub const MAX_MODULES: usize = 15;
/// Longest module name.
pub const NAME_BYTES: usize = 32;
/// Longest command line kept.
pub const CMDLINE_BYTES: usize = 1024;
/// Where the kernel maps the first module in init's address space; the rest
/// follow, each page-aligned.
pub const MODULES_BASE: u64 = 0x0000_1000_0000_0000;

/// The boot modules' names: the GRUB configuration (`grub/grub.cfg`, checked
/// by a host test of the runner), `build.rs`, init's `init=` choices and the
/// kernel all name them through these.
pub mod modules {
    /// The first process, the only one the kernel starts.
    pub const INIT: &str = "init";
    /// The ring-3 test program (`init=tests`).
    pub const TESTS: &str = "tests";
    /// The benchmark program (`init=bench`).
    pub const BENCH: &str = "bench";
    /// The syscall fuzzer (`init=fuzz`).
    pub const FUZZ: &str = "fuzz";
    /// The example key-value server (`servers/kv`); the tests program
    /// embeds the same image and spawns it.
    pub const KV: &str = "kv";
    /// The process manager (`servers/procmgr`), supervised by init.
    pub const PROCMGR: &str = "procmgr";
    /// The console server (`servers/console`), supervised by init.
    pub const CONSOLE: &str = "console";
    /// The shell (`apps/shell`, `init=shell`).
    pub const SHELL: &str = "shell";
    /// The ELF loader server (`servers/loader`): init loads it itself.
    pub const LOADER: &str = "loader";
    /// The smallest program (`apps/hello`): the loader's tests and the
    /// `spawn_exit_wait` benchmark load it.
    pub const HELLO: &str = "hello";
    /// Every module the boot image carries, in load order.
    pub const ALL: [&str; 10] = [
        INIT, TESTS, BENCH, FUZZ, KV, LOADER, HELLO, PROCMGR, CONSOLE, SHELL,
    ];
    /// The command-line key that picks what init runs (`init=tests`).
    pub const INIT_KEY: &str = "init";
}

/// One boot module as init sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleDesc {
    /// The module's name bytes (its GRUB command line), `name_len` long.
    pub name: [u8; NAME_BYTES],
    /// Valid bytes of `name`.
    pub name_len: u64,
    /// User address of the module's bytes.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The boot-information page.
#[repr(C)]
pub struct BootInfo {
    /// [`MAGIC`].
    pub magic: u64,
    /// Valid bytes of `cmdline`.
    pub cmdline_len: u64,
    /// The kernel command line.
    pub cmdline: [u8; CMDLINE_BYTES],
    /// Valid entries of `modules`.
    pub nmodules: u64,
    /// The modules.
    pub modules: [ModuleDesc; MAX_MODULES],
    /// The TSC when the kernel entered Rust on the boot CPU (loader,
    /// issue 11: init's `boot_to_servers_up` benchmark).
    pub entry_tsc: u64,
}

const _: () = assert!(core::mem::size_of::<BootInfo>() <= 4096);

impl BootInfo {
    /// The command line (empty if it is not UTF-8 or the length is bogus).
    pub fn cmdline(&self) -> &str {
        let n = (self.cmdline_len as usize).min(CMDLINE_BYTES);
        core::str::from_utf8(&self.cmdline[..n]).unwrap_or("")
    }

    /// The valid module descriptors.
    pub fn modules(&self) -> &[ModuleDesc] {
        &self.modules[..(self.nmodules as usize).min(MAX_MODULES)]
    }
}

impl ModuleDesc {
    /// The module's name (empty if not UTF-8).
    pub fn name(&self) -> &str {
        let n = (self.name_len as usize).min(NAME_BYTES);
        core::str::from_utf8(&self.name[..n]).unwrap_or("")
    }
}

/// Looks `key` up in a space-separated `key[=value]` command line; a bare `key`
/// yields `Some("")`; the last occurrence wins.
pub fn cmdline_arg<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .rev()
        .find_map(|w| match w.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if w == key => Some(""),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_arg_finds_values_bare_keys_and_last_occurrence() {
        assert_eq!(cmdline_arg("log=debug init=tests", "init"), Some("tests"));
        assert_eq!(cmdline_arg("ktest log=info", "ktest"), Some(""));
        assert_eq!(cmdline_arg("a=1 a=2", "a"), Some("2"));
        assert_eq!(cmdline_arg("init=tests", "ini"), None);
        assert_eq!(cmdline_arg("", "x"), None);
        assert_eq!(cmdline_arg("k=v=w", "k"), Some("v=w"));
    }
}

/// How programs init starts find its name service (issue 11 item 1;
/// libipc's `names` module has the protocol).
pub mod names {
    /// The handle number of the name-service endpoint in every program init
    /// starts with it (the supervised servers, `init=tests`): init gives it
    /// with `handle_give` right after `process_spawn`, so it is the child's
    /// first handle (slot 0, generation 1). A badged SEND handle.
    pub const HANDLE: u32 = 1 << 10;
    /// The argument init starts a supervised server with: "register your
    /// endpoint with the name service at [`HANDLE`]" (a server spawned by
    /// another program gets its own endpoint there instead, argument 0).
    pub const SUPERVISED_ARG: u64 = 0x4e41_4d45; // "NAME"
}

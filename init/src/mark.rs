//! init's kernel-trace marks: a supervised server's restart.

use libipc::sys;

/// Puts the restart of server `name` into the kernel trace (issue 12 part
/// 4): a `trace_mark` named `restart:<name>` whose value is its restart
/// count, shown by the runner's `--trace` JSON as the instant `mark
/// restart:<name>` on the CPU init's service ran on. A no-op unless the
/// kernel's `mark` category is on.
pub fn restart(name: &str, restarts: u64) {
    const PREFIX: &[u8] = b"restart:";
    let mut buf = [0u8; abi::trace::MAX_MARK_NAME];
    let n = (PREFIX.len() + name.len()).min(buf.len());
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    buf[PREFIX.len()..n].copy_from_slice(&name.as_bytes()[..n - PREFIX.len()]);
    let _ = sys::trace_mark(&buf[..n], restarts);
}

// Every supervised server's mark name fits whole.
const _: () = {
    let mut i = 0;
    while i < crate::names::SERVERS.len() {
        assert!(
            b"restart:".len() + crate::names::SERVERS[i].name.len() <= abi::trace::MAX_MARK_NAME
        );
        i += 1;
    }
};

//! gaps2 (session 20): only the console's controller (the shell init
//! started, whose `console` lookups init badges with
//! `console::CONTROL_BADGE`) may name the foreground reader, the one client
//! that takes a Ctrl-C. Anyone else naming it would let a program take the
//! shell's Ctrl-C again (or deny it to the shell). The end-to-end check
//! (a program polling for Ctrl-C while the shell runs it never gets one)
//! is the smoke case `console-ctrl-c-foreground`: ring 3 cannot type.

use crate::util::TestResult;
use libipc::console::{self, Client, Reply, FOREGROUND_SELF};
use libipc::ipc::{self, Endpoint};
use libipc::names;
use libipc::server::Caller;

/// `Foreground` from this program's own `console` handle (badged with its
/// pid by init's lookup) and from a session it opened is `Denied`, for
/// itself, another pid and "anyone"; its `interrupted` poll still
/// answers (`Empty`: no Ctrl-C is typed during the suite).
pub fn console_foreground_is_the_controllers_alone() -> TestResult {
    let names_ep = Endpoint(abi::bootinfo::names::HANDLE);
    let (con, _) = names::lookup_newer(names_ep, console::NAME, 0, names::RECOVERY_NS)
        .map_err(|_| "cannot look the console up")?;
    let session = {
        let mut buf = [0u8; 64];
        match Client::new(Caller::new(con, None), &mut buf).open() {
            Ok(Reply::Opened { ep }) => Some(Endpoint(ep.0)),
            _ => None,
        }
    };
    let mut result = Ok(());
    for ep in [Some(con), session].into_iter().flatten() {
        for pid in [FOREGROUND_SELF, 1, 0, 1 << 32] {
            let r = console::set_foreground(ep, pid);
            if r != Ok(false) {
                crate::note!("foreground({pid:#x}) through handle {}: {r:?}", ep.0);
                result = Err("a program that is not the console's controller named its foreground");
            }
        }
    }
    if console::interrupted(con) != Ok(false) {
        result = result.and(Err("the Ctrl-C poll did not answer Empty"));
    }
    for ep in [Some(con), session].into_iter().flatten() {
        let _ = ipc::handle_close(ep.0);
    }
    result
}

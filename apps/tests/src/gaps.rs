//! gaps (session 19): the name service's `LookupFor` (a lookup badged for
//! another process's pid, so the console prints a spawned program's lines
//! under its own pid) is procmgr's alone: anyone else could otherwise
//! write console lines under any pid it names.

use crate::util::TestResult;
use libipc::ipc::{self, Endpoint};
use libipc::names::{Client, Reply, BUFFER};
use libipc::server::Caller;

/// `LookupFor` from the tests program is `Denied` for every pid it could
/// name (init's, the loader's, procmgr's, its own under `init=tests`, 0,
/// a counter badge, `u64::MAX`), and hands out no handle.
pub fn names_lookup_for_is_procmgr_only() -> TestResult {
    let names_ep = Endpoint(abi::bootinfo::names::HANDLE);
    for pid in [1, 2, 5, 6, 0, 1 << 62, u64::MAX] {
        for name in [libipc::console::NAME, "kv"] {
            let mut buf = [0u8; BUFFER];
            let mut c = Client::new(Caller::new(names_ep, None), &mut buf);
            match c.lookup_for(name, pid) {
                Ok(Reply::Denied {}) => {}
                Ok(Reply::Found { ep, .. }) => {
                    let _ = ipc::handle_close(ep.0);
                    crate::note!("lookup_for({name}, {pid}) was answered");
                    return Err("LookupFor was answered for a program other than procmgr");
                }
                other => {
                    crate::note!("lookup_for({name}, {pid}): {other:?}");
                    return Err("LookupFor was not refused with Denied");
                }
            }
        }
    }
    Ok(())
}

//! The key-value server: serves the [`kv::Kv`] protocol with a
//! [`kv::Store`] until its owner asks it to shut down. Started by init
//! (argument [`SUPERVISED_ARG`](abi::bootinfo::names::SUPERVISED_ARG)) it
//! makes its endpoint and registers it as `kv` with the name service init
//! gave it; started by another program (argument 0) it takes the endpoint
//! that parent gives it.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod ring3 {
    use abi::bootinfo::names::SUPERVISED_ARG;
    use abi::rights;
    use kv::{Kernel, Kv, Store, BUFFER};
    use libipc::ipc::{endpoint_create, handle_close, handle_dup, signal, Endpoint, Notification};
    use libipc::server::Caller;
    use libipc::wire::CopiedHandle;
    use libipc::{names, println, server};

    /// The store's kernel side: the real syscalls.
    struct Syscalls;

    impl Kernel for Syscalls {
        fn signal(&mut self, ntf: u32, bits: u64) {
            // A watcher that handed over something other than a
            // notification gets no signals (`WrongType`, ignored).
            let _ = signal(Notification(ntf), bits);
        }
        fn close(&mut self, h: u32) {
            let _ = handle_close(h);
        }
    }

    /// How long to wait for the parent's `handle_give`.
    const GIVE_TIMEOUT_NS: u64 = 5_000_000_000;

    /// The badge of the handle clients get by name: not the owner's
    /// unbadged one, so no client can shut the supervised server down.
    const NAMED_BADGE: u64 = 1;

    /// Makes an endpoint and registers it as `kv`; returns it.
    fn register() -> Option<Endpoint> {
        let names = server::first_endpoint(GIVE_TIMEOUT_NS)?;
        let ep = endpoint_create().ok()?;
        let copy = handle_dup(
            ep.0,
            rights::SEND | rights::DUPLICATE | rights::TRANSFER,
            NAMED_BADGE,
        )
        .ok()?;
        let mut buf = [0u8; names::BUFFER];
        let mut c = names::Client::new(Caller::new(names, None), &mut buf);
        let r = c.register("kv", CopiedHandle(copy));
        let _ = handle_close(copy);
        match r {
            Ok(names::Reply::Registered { .. }) => Some(ep),
            other => {
                println!("kv: registering failed: {other:?}");
                None
            }
        }
    }

    #[no_mangle]
    fn main(arg: u64) -> i32 {
        // A demand-zero stack takes all its frames now (see the function).
        libipc::rt::pretouch_stack();
        let ep = if arg == SUPERVISED_ARG {
            register()
        } else {
            server::first_endpoint(GIVE_TIMEOUT_NS)
        };
        let Some(ep) = ep else {
            println!("kv: no endpoint was given");
            return 1;
        };
        let mut store = Store::new(Syscalls);
        let (mut a, mut b) = ([0u8; BUFFER], [0u8; BUFFER]);
        match server::serve::<Kv, _>(ep, &mut store, &mut a, &mut b) {
            Ok(()) => 0,
            Err(e) => {
                println!("kv: serving failed: {e}");
                2
            }
        }
    }
}

/// On the host the server is a stub (its logic is tested in `lib.rs`).
#[cfg(not(target_os = "none"))]
fn main() {}

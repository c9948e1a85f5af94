//! The key-value server: takes the endpoint its parent gives it, then
//! serves the [`kv::Kv`] protocol with a [`kv::Store`] until its owner
//! asks it to shut down.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod ring3 {
    use kv::{Kernel, Kv, Store, BUFFER};
    use libipc::ipc::{handle_close, signal, Notification};
    use libipc::{println, server};

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

    #[no_mangle]
    fn main(_arg: u64) -> i32 {
        let Some(ep) = server::first_endpoint(GIVE_TIMEOUT_NS) else {
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

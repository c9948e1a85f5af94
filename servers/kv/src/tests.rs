//! The store through the whole protocol (a loopback transport runs
//! `wire::dispatch`, as the ring-3 serve loop does), and hostile raw
//! messages.

use super::*;
use wire::{dispatch, CallError, Dispatched, Frame, Incoming, Message, Transport, WireError};

/// Records what the store asked of the kernel.
#[derive(Default)]
struct Rec {
    signals: Vec<(u32, u64)>,
    closed: Vec<u32>,
}

impl Kernel for Rec {
    fn signal(&mut self, ntf: u32, bits: u64) {
        self.signals.push((ntf, bits));
    }
    fn close(&mut self, h: u32) {
        self.closed.push(h);
    }
}

/// The server behind a loopback, as the kernel would copy: request bytes
/// into the server's buffer, reply bytes back.
struct Loop {
    store: Store<Rec>,
    badge: u64,
}

impl Transport for Loop {
    type Error = ();
    fn call<'b>(&mut self, f: &Frame, buf: &'b mut [u8]) -> Result<Incoming<'b>, ()> {
        let mut rx = [0u8; BUFFER];
        let mut tx = [0u8; BUFFER];
        rx[..f.len].copy_from_slice(&buf[..f.len]);
        let m = f.incoming(&rx);
        let r = dispatch::<Kv, _>(&mut self.store, self.badge, &m, &mut tx).frame();
        buf[..r.len].copy_from_slice(&tx[..r.len]);
        Ok(r.incoming(buf))
    }
}

fn with_client(badge: u64, f: impl FnOnce(&mut Client<'_, Loop>)) {
    let mut buf = [0u8; BUFFER];
    let mut c = Client::new(
        Loop {
            store: Store::new(Rec::default()),
            badge,
        },
        &mut buf,
    );
    f(&mut c);
}

#[test]
fn put_get_delete_count() {
    with_client(7, |c| {
        assert_eq!(
            c.count(),
            Ok(Reply::Count {
                entries: 0,
                capacity: 16
            })
        );
        assert_eq!(c.put(b"a", b"1"), Ok(Reply::Stored { replaced: false }));
        assert_eq!(c.put(b"a", b"22"), Ok(Reply::Stored { replaced: true }));
        assert_eq!(c.get(b"a"), Ok(Reply::Value { value: b"22" }));
        assert_eq!(c.put(b"", b""), Ok(Reply::Stored { replaced: false }));
        assert_eq!(c.get(b""), Ok(Reply::Value { value: b"" }));
        assert_eq!(
            c.count(),
            Ok(Reply::Count {
                entries: 2,
                capacity: 16
            })
        );
        assert_eq!(c.delete(b"a"), Ok(Reply::Deleted {}));
        assert_eq!(c.delete(b"a"), Ok(Reply::NotFound {}));
        assert_eq!(c.get(b"a"), Ok(Reply::NotFound {}));
        assert_eq!(
            c.count(),
            Ok(Reply::Count {
                entries: 1,
                capacity: 16
            })
        );
    });
}

#[test]
fn full_and_too_long_are_clear_errors_that_change_nothing() {
    with_client(7, |c| {
        for i in 0..MAX_ENTRIES as u8 {
            assert_eq!(
                c.put(&[i], &[i; MAX_VALUE]),
                Ok(Reply::Stored { replaced: false })
            );
        }
        assert_eq!(c.put(b"x", b"y"), Ok(Reply::Full { capacity: 16 }));
        // Replacing needs no new slot.
        assert_eq!(c.put(&[3], b"z"), Ok(Reply::Stored { replaced: true }));
        let too_long = Reply::TooLong {
            max_key: 32,
            max_value: 512,
        };
        assert_eq!(c.put(&[0; MAX_KEY + 1], b""), Ok(too_long));
        assert_eq!(c.put(b"k", &[0; MAX_VALUE + 1]), Ok(too_long));
        assert_eq!(
            c.count(),
            Ok(Reply::Count {
                entries: 16,
                capacity: 16
            })
        );
        assert_eq!(c.delete(&[5]), Ok(Reply::Deleted {}));
        assert_eq!(c.put(b"x", b"y"), Ok(Reply::Stored { replaced: false }));
        assert_eq!(c.get(&[3]), Ok(Reply::Value { value: b"z" }));
    });
}

#[test]
fn only_the_unbadged_owner_may_shut_it_down() {
    with_client(7, |c| {
        assert_eq!(c.shutdown(), Ok(Reply::Denied {}));
        assert!(!c.transport().store.done());
    });
    with_client(0, |c| {
        assert_eq!(c.shutdown(), Ok(Reply::Bye {}));
        assert!(c.transport().store.done());
    });
}

#[test]
fn hostile_raw_messages_get_error_replies_and_the_store_goes_on() {
    let mut s = Store::new(Rec::default());
    let mut out = [0u8; BUFFER];
    let mut refuse = |m: Incoming<'_>, want: WireError, s: &mut Store<Rec>| match dispatch::<Kv, _>(
        s, 1, &m, &mut out,
    ) {
        Dispatched::Refused(f, e) => {
            assert_eq!(e, want);
            assert_eq!(f, Frame::error(want));
        }
        other => panic!("{m:?} was handled: {other:?}"),
    };
    refuse(Incoming::words(99, [0; 6]), WireError::UnknownOp, &mut s);
    // A key length past the bytes sent (a truncated buffer).
    let bytes = *b"keyval";
    let mut m = Incoming::words(1, [3, 4, 0, 0, 0, 0]);
    m.buf = &bytes[..5];
    refuse(m, WireError::BadLength, &mut s);
    // Lengths near u64::MAX.
    m.words = [u64::MAX, 1, 0, 0, 0, 0];
    refuse(m, WireError::BadLength, &mut s);
    // A handle nobody asked for.
    let mut m = Incoming::words(4, [0; 6]);
    (m.handles[0], m.nhandles) = (0x401, 1);
    refuse(m, WireError::Trailing, &mut s);
    // A watch without its handle.
    refuse(Incoming::words(6, [0; 6]), WireError::MissingHandle, &mut s);
    // Still serving.
    let mut tx = [0u8; 64];
    let f = Request::Count {}.encode_into(&mut tx).unwrap();
    let d = dispatch::<Kv, _>(&mut s, 1, &f.incoming(&tx), &mut out);
    assert_eq!(
        Reply::decode(&d.frame().incoming(&out)),
        Ok(Reply::Count {
            entries: 0,
            capacity: 16
        })
    );
}

#[test]
fn a_watcher_is_signalled_on_every_change_and_a_replaced_one_closed() {
    with_client(7, |c| {
        assert_eq!(
            c.watch(wire::CopiedHandle(0x401)),
            Ok(Reply::Watching { replaced: false })
        );
        assert_eq!(c.put(b"k", b"v"), Ok(Reply::Stored { replaced: false }));
        assert_eq!(c.get(b"k"), Ok(Reply::Value { value: b"v" }));
        assert_eq!(
            c.put(&[0; 40], b""),
            Ok(Reply::TooLong {
                max_key: 32,
                max_value: 512
            })
        );
        assert_eq!(
            c.watch(wire::CopiedHandle(0x802)),
            Ok(Reply::Watching { replaced: true })
        );
        assert_eq!(c.delete(b"k"), Ok(Reply::Deleted {}));
        assert_eq!(c.delete(b"k"), Ok(Reply::NotFound {}));
        let k = c.transport().store.kernel();
        // Only real changes signal; the old watcher's handle is closed.
        assert_eq!(k.signals, [(0x401, CHANGED), (0x802, CHANGED)]);
        assert_eq!(k.closed, [0x401]);
    });
}

#[test]
fn a_refused_request_is_a_call_error_for_the_client() {
    struct Refuser;
    impl Transport for Refuser {
        type Error = ();
        fn call<'b>(&mut self, _: &Frame, buf: &'b mut [u8]) -> Result<Incoming<'b>, ()> {
            Ok(Frame::error(WireError::BadLength).incoming(buf))
        }
    }
    let mut buf = [0u8; 8];
    let mut c = Client::new(Refuser, &mut buf);
    assert_eq!(c.count(), Err(CallError::Refused(WireError::BadLength)));
    // A request that does not fit the client's own buffer is not sent.
    assert_eq!(
        c.put(b"0123456789", b""),
        Err(CallError::Encode(WireError::BufferFull))
    );
}

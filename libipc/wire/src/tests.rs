//! Host tests: every field kind round-trips, every malformed message is
//! refused with the right error, random input never panics the decoder,
//! and a client talks to a handler through a loopback transport.

use crate::*;
use proptest::prelude::*;

crate::protocol! {
    /// Every field kind.
    pub protocol Test<'a>;
    /// Requests.
    pub enum Request {
        /// No field (idempotent: a client may send it again).
        Ping = 1 (idempotent) => fn ping {},
        /// Words of each integer kind.
        Ints = 2 => fn ints { a: u64, b: u32, c: u16, d: u8, e: bool, f: i64 },
        /// Two byte strings and a str.
        Bytes = 3 => fn bytes { k: &'a [u8], v: &'a [u8], s: &'a str },
        /// A handle between words, then a copied one.
        Give = 4 => fn give { tag: u64, h: Handle, h2: CopiedHandle },
        /// Six words: the most a message has.
        Six = 5 => fn six { a: u64, b: u64, c: u64, d: u64, e: u64, f: u64 },
    }
    /// Replies.
    pub enum Reply {
        /// Pong.
        Pong = 1 {},
        /// A sum.
        Sum = 2 { sum: u64 },
        /// Bytes echoed.
        Echo = 3 { b: &'a [u8] },
    }
    /// The client.
    pub struct Client;
}

fn roundtrip(r: Request<'_>) {
    let mut buf = [0u8; 512];
    let f = r.encode_into(&mut buf).unwrap();
    let m = f.incoming(&buf);
    assert_eq!(Request::decode(&m), Ok(r));
}

#[test]
fn every_field_kind_round_trips() {
    roundtrip(Request::Ping {});
    roundtrip(Request::Ints {
        a: u64::MAX,
        b: u32::MAX,
        c: 7,
        d: 255,
        e: true,
        f: -5,
    });
    roundtrip(Request::Bytes {
        k: b"key",
        v: &[0, 1, 2, 255],
        s: "h\u{e9}llo",
    });
    roundtrip(Request::Bytes {
        k: b"",
        v: b"",
        s: "",
    });
    roundtrip(Request::Give {
        tag: 9,
        h: Handle(0x401),
        h2: CopiedHandle(0x802),
    });
}

#[test]
fn layout_is_words_then_buffer_then_handles_in_field_order() {
    let mut buf = [0u8; 64];
    let f = Request::Bytes {
        k: b"ab",
        v: b"cde",
        s: "f",
    }
    .encode_into(&mut buf)
    .unwrap();
    assert_eq!(f.label, 3);
    assert_eq!(f.words, [2, 3, 1, 0, 0, 0]);
    assert_eq!(&buf[..f.len], b"abcdef");
    let f = Request::Give {
        tag: 1,
        h: Handle(5),
        h2: CopiedHandle(6),
    }
    .encode_into(&mut buf)
    .unwrap();
    assert_eq!((f.nhandles, f.handles), (2, [5, 6, 0, 0]));
    // The second handle is copied, the first moved.
    assert_eq!(f.copy_mask, 0b10);
    assert_eq!(f.words, [1, 0, 0, 0, 0, 0]);
}

fn decode_err(m: Incoming<'_>) -> WireError {
    Request::decode(&m).unwrap_err()
}

#[test]
fn unknown_ops_are_refused() {
    for label in [0, 6, 100, ERROR_LABEL] {
        assert_eq!(
            decode_err(Incoming::words(label, [0; 6])),
            WireError::UnknownOp
        );
    }
}

#[test]
fn lengths_past_the_buffer_are_refused() {
    let buf = *b"abcdef";
    let mut m = Incoming::words(3, [2, 3, 2, 0, 0, 0]);
    m.buf = &buf[..5]; // one byte short
    assert_eq!(decode_err(m), WireError::BadLength);
    m.words = [u64::MAX, 0, 0, 0, 0, 0];
    assert_eq!(decode_err(m), WireError::BadLength);
    m.words = [1, u64::MAX, 0, 0, 0, 0];
    assert_eq!(decode_err(m), WireError::BadLength);
    // Sums that would wrap a usize.
    m.words = [1, u64::MAX - 1, 1, 0, 0, 0];
    assert_eq!(decode_err(m), WireError::BadLength);
}

#[test]
fn leftovers_are_refused() {
    let buf = *b"abcdefg";
    let mut m = Incoming::words(3, [2, 3, 1, 0, 0, 0]);
    m.buf = &buf; // one byte too many
    assert_eq!(decode_err(m), WireError::Trailing);
    // A non-zero word the op does not use.
    assert_eq!(
        decode_err(Incoming::words(1, [0, 0, 0, 0, 0, 1])),
        WireError::Trailing
    );
    // A handle nobody asked for.
    let mut m = Incoming::words(1, [0; 6]);
    m.handles[0] = 5;
    m.nhandles = 1;
    assert_eq!(decode_err(m), WireError::Trailing);
}

#[test]
fn missing_handles_are_refused() {
    let mut m = Incoming::words(4, [1, 0, 0, 0, 0, 0]);
    assert_eq!(decode_err(m), WireError::MissingHandle);
    m.handles = [5, 0, 0, 0];
    m.nhandles = 1;
    assert_eq!(decode_err(m), WireError::MissingHandle);
    // A count saying two while the second number is 0 (none installed).
    m.nhandles = 2;
    assert_eq!(decode_err(m), WireError::MissingHandle);
    // A count above four is clamped, never an out-of-bounds read.
    m.handles = [5, 6, 0, 0];
    m.nhandles = 99;
    assert_eq!(decode_err(m), WireError::Trailing);
}

#[test]
fn out_of_range_values_and_bad_utf8_are_refused() {
    let ints = |w: [u64; 6]| decode_err(Incoming::words(2, w));
    assert_eq!(ints([0, 1 << 32, 0, 0, 0, 0]), WireError::BadValue);
    assert_eq!(ints([0, 0, 1 << 16, 0, 0, 0]), WireError::BadValue);
    assert_eq!(ints([0, 0, 0, 256, 0, 0]), WireError::BadValue);
    assert_eq!(ints([0, 0, 0, 0, 2, 0]), WireError::BadValue);
    let buf = [b'k', 0xff, 0xfe];
    let mut m = Incoming::words(3, [1, 0, 2, 0, 0, 0]);
    m.buf = &buf;
    assert_eq!(decode_err(m), WireError::BadUtf8);
}

#[test]
fn encoding_reports_protocol_bugs_and_small_buffers() {
    let mut buf = [0u8; 4];
    let big = Request::Bytes {
        k: b"12345",
        v: b"",
        s: "",
    };
    assert_eq!(big.encode_into(&mut buf), Err(WireError::BufferFull));
    // Six words is the most a variant has (a seventh does not compile:
    // the doc test on `protocol!`); six fit.
    let six = Request::Six {
        a: 1,
        b: 2,
        c: 3,
        d: 4,
        e: 5,
        f: 6,
    };
    let f = six.encode_into(&mut buf).unwrap();
    assert_eq!(f.words, [1, 2, 3, 4, 5, 6]);
    assert_eq!(Request::decode(&f.incoming(&buf)), Ok(six));
    let mut c = Client::new(Canned(Frame::default()), &mut buf);
    assert!(!matches!(
        c.six(1, 2, 3, 4, 5, 6),
        Err(CallError::Encode(_))
    ));
    // The encoder and decoder still refuse a seventh word at run time, for
    // a hand-written `Message` or `Field` that asks for one.
    let mut e = Encoder::new(5, &mut buf);
    for w in 0..6 {
        assert_eq!(e.word(w), Ok(()));
    }
    assert_eq!(e.word(6), Err(WireError::TooManyWords));
    let m = Incoming::words(5, [1; 6]);
    let mut d = Decoder::new(&m);
    for _ in 0..6 {
        assert_eq!(d.word(), Ok(1));
    }
    assert_eq!(d.word(), Err(WireError::TooManyWords));
}

#[test]
fn error_codes_round_trip_and_unknown_codes_stay_unknown() {
    for e in WireError::ALL {
        assert_eq!(WireError::from_code(e.code()), e);
        assert_eq!(Frame::error(e).label, ERROR_LABEL);
    }
    assert_eq!(WireError::from_code(0), WireError::Unknown);
    assert_eq!(WireError::from_code(u64::MAX), WireError::Unknown);
}

/// A server state for the loopback tests.
#[derive(Default)]
struct Summer {
    total: u64,
    last_badge: u64,
    store: [u8; 16],
}

impl Handler<Test> for Summer {
    fn handle<'r>(&'r mut self, badge: u64, req: Request<'r>) -> Reply<'r> {
        self.last_badge = badge;
        match req {
            Request::Ping {} => Reply::Pong {},
            Request::Ints { a, b, f, .. } => {
                self.total = self.total.wrapping_add(a + b as u64).wrapping_add(f as u64);
                Reply::Sum { sum: self.total }
            }
            // Echo from the request (borrowing the received buffer).
            Request::Bytes { k, .. } if k.len() > 16 => Reply::Echo { b: k },
            // Echo from the server's own state.
            Request::Bytes { k, .. } => {
                self.store[..k.len()].copy_from_slice(k);
                Reply::Echo {
                    b: &self.store[..k.len()],
                }
            }
            Request::Give { h, h2, .. } => Reply::Sum {
                sum: (h.0 + h2.0) as u64,
            },
            Request::Six { .. } => Reply::Pong {},
        }
    }
}

/// Calls a handler directly, as the kernel would: the request's bytes are
/// copied into the server's buffer, the reply's back into the caller's.
struct Loopback {
    server: Summer,
    badge: u64,
    refused: usize,
}

impl Transport for Loopback {
    type Error = ();
    fn call<'b>(&mut self, f: &Frame, buf: &'b mut [u8]) -> Result<Incoming<'b>, ()> {
        let mut rx = [0u8; 256];
        rx[..f.len].copy_from_slice(&buf[..f.len]);
        let mut tx = [0u8; 256];
        let m = f.incoming(&rx);
        let d = dispatch::<Test, _>(&mut self.server, self.badge, &m, &mut tx);
        if let Dispatched::Refused(..) = d {
            self.refused += 1;
        }
        let r = d.frame();
        buf[..r.len].copy_from_slice(&tx[..r.len]);
        Ok(r.incoming(buf))
    }
}

#[test]
fn typed_client_talks_to_a_handler_through_a_loopback() {
    let mut buf = [0u8; 256];
    let mut c = Client::new(
        Loopback {
            server: Summer::default(),
            badge: 42,
            refused: 0,
        },
        &mut buf,
    );
    assert_eq!(c.ping(), Ok(Reply::Pong {}));
    assert_eq!(c.ints(1, 2, 3, 4, true, -1), Ok(Reply::Sum { sum: 2 }));
    assert_eq!(c.ints(10, 0, 0, 0, false, 0), Ok(Reply::Sum { sum: 12 }));
    assert_eq!(c.bytes(b"abc", b"", "x"), Ok(Reply::Echo { b: b"abc" }));
    let long = [7u8; 40];
    assert_eq!(c.bytes(&long, b"", ""), Ok(Reply::Echo { b: &long }));
    assert_eq!(
        c.give(0, Handle(3), CopiedHandle(4)),
        Ok(Reply::Sum { sum: 7 })
    );
    // A request too big for the buffer fails on our side, nothing sent.
    let huge = [0u8; 300];
    assert_eq!(
        c.bytes(&huge, b"", ""),
        Err(CallError::Encode(WireError::BufferFull))
    );
    assert_eq!(c.transport().server.last_badge, 42);
    assert_eq!(c.transport().refused, 0);
}

#[test]
fn a_refused_request_comes_back_as_the_servers_error() {
    let mut srv = Summer::default();
    let mut out = [0u8; 16];
    let m = Incoming::words(77, [0; 6]);
    let d = dispatch::<Test, _>(&mut srv, 0, &m, &mut out);
    assert_eq!(
        d,
        Dispatched::Refused(Frame::error(WireError::UnknownOp), WireError::UnknownOp)
    );
    // A reply too big for the server's buffer becomes an error reply.
    let key = [1u8; 40];
    let mut rx = [0u8; 64];
    let f = Request::Bytes {
        k: &key,
        v: b"",
        s: "",
    }
    .encode_into(&mut rx)
    .unwrap();
    let m = f.incoming(&rx);
    let d = dispatch::<Test, _>(&mut srv, 0, &m, &mut out);
    assert_eq!(d, Dispatched::Handled(Frame::error(WireError::BufferFull)));
    // And the client sees those as Refused.
    let mut buf = [0u8; 8];
    let mut c = Client::new(Canned(Frame::error(WireError::BadUtf8)), &mut buf);
    assert_eq!(c.ping(), Err(CallError::Refused(WireError::BadUtf8)));
    // A reply that does not decode is BadReply, not a panic.
    let mut c = Client::new(Canned(Frame::default()), &mut buf);
    assert_eq!(c.ping(), Err(CallError::BadReply(WireError::UnknownOp)));
}

/// A transport that answers every call with one canned reply.
struct Canned(Frame);

impl Transport for Canned {
    type Error = ();
    fn call<'b>(&mut self, _: &Frame, buf: &'b mut [u8]) -> Result<Incoming<'b>, ()> {
        Ok(self.0.incoming(buf))
    }
}

fn any_request() -> impl Strategy<Value = (u32, [u64; 6], Vec<u8>, [u32; 4], usize)> {
    (
        prop_oneof![0u32..8, any::<u32>()],
        prop::array::uniform6(prop_oneof![0u64..16, any::<u64>()]),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::array::uniform4(prop_oneof![Just(0u32), any::<u32>()]),
        0usize..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// Random labels, words, bytes and handle counts never panic the
    /// decoder; whatever decodes re-encodes to the same message.
    #[test]
    fn random_messages_never_panic_and_what_decodes_reencodes_exactly(
        (label, words, bytes, handles, nhandles) in any_request()
    ) {
        let m = Incoming { label, words, buf: &bytes, handles, nhandles };
        if let Ok(r) = Request::decode(&m) {
            let mut out = [0u8; 128];
            let f = r.encode_into(&mut out).unwrap();
            prop_assert_eq!(f.label, label);
            prop_assert_eq!(f.words, words);
            prop_assert_eq!(&out[..f.len], &bytes[..]);
            prop_assert_eq!(f.handles(), m.handles());
        }
        let _ = Reply::decode(&m);
        // The server side too: dispatch never panics either.
        let mut out = [0u8; 32];
        let _ = dispatch::<Test, _>(&mut Summer::default(), 0, &m, &mut out);
    }

    /// Encode then decode is the identity for every request.
    #[test]
    fn encode_then_decode_is_identity(
        a in any::<u64>(), b in any::<u32>(), c in any::<u16>(), d in any::<u8>(),
        e in any::<bool>(), f in any::<i64>(),
        k in prop::collection::vec(any::<u8>(), 0..40),
        v in prop::collection::vec(any::<u8>(), 0..40),
        s in "\\PC{0,12}",
        h in 1u32.., h2 in 1u32..,
    ) {
        for r in [
            Request::Ping {},
            Request::Ints { a, b, c, d, e, f },
            Request::Bytes { k: &k, v: &v, s: &s },
            Request::Give { tag: a, h: Handle(h), h2: CopiedHandle(h2) },
        ] {
            let mut buf = [0u8; 256];
            let fr = r.encode_into(&mut buf).unwrap();
            prop_assert_eq!(Request::decode(&fr.incoming(&buf)), Ok(r));
        }
    }
}

impl Frame {
    fn handles(&self) -> &[u32] {
        &self.handles[..self.nhandles]
    }
}

/// `(idempotent)` in the declaration is what `Protocol::idempotent` says,
/// for that op only; an op nobody declared is not.
#[test]
fn idempotent_marks_only_the_marked_ops() {
    use crate::Protocol;
    assert!(Test::idempotent(1));
    for op in [2, 3, 4, 0, 99, crate::ERROR_LABEL] {
        assert!(!Test::idempotent(op), "op {op}");
    }
}

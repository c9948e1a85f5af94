//! [`protocol!`](crate::protocol): one declaration, every piece of a
//! protocol.

/// Declares a protocol once: a request enum and a reply enum, their checked
/// encode/decode ([`Message`](crate::Message)), a unit struct implementing
/// [`Protocol`](crate::Protocol) (what a server implements
/// [`Handler`](crate::Handler) for) and a typed client with one method per
/// request.
///
/// ```
/// wire::protocol! {
///     /// A counter service.
///     pub protocol Counter<'a>;
///     /// What clients ask.
///     pub enum Request {
///         /// Adds `n`; answered with `Total`.
///         Add = 1 => fn add { n: u64 },
///         /// Names the counter; answered with `Done`.
///         Name = 2 => fn name { name: &'a str },
///     }
///     /// What the server answers.
///     pub enum Reply {
///         /// The running total.
///         Total = 1 { total: u64 },
///         /// Done.
///         Done = 2 {},
///     }
///     /// Typed calls.
///     pub struct Client;
/// }
/// ```
///
/// - The protocol's lifetime (`'a` above) is what borrowed fields (`&'a
///   [u8]`, `&'a str`) borrow: the received buffer. Both enums carry it (a
///   hidden, uninhabited variant uses it, so a protocol without borrowed
///   fields still compiles; a by-value `match` need not name it).
/// - A request variant is `Name = op => fn method { fields }`, or
///   `Name = op (idempotent) => fn method { fields }` for a request that
///   may safely run twice ([`Protocol::idempotent`](crate::Protocol::idempotent):
///   a client may retry it after the server died); a reply variant
///   `Name = label { fields }`. Ops and labels must be distinct and
///   not [`ERROR_LABEL`](crate::ERROR_LABEL) (checked at compile time).
/// - Field types implement [`Field`](crate::Field); fields are laid out in
///   declaration order. A variant whose fields need more than six words
///   ([`WORDS`](crate::WORDS)) or four handles
///   ([`MAX_HANDLES`](crate::MAX_HANDLES)) does not compile:
///
/// ```compile_fail,E0080
/// wire::protocol! {
///     pub protocol Wide<'a>;
///     pub enum Request {
///         /// Seven words: one more than a message has.
///         Seven = 1 => fn seven { a: u64, b: u64, c: u64, d: u64, e: u64, f: u64, g: u64 },
///     }
///     pub enum Reply {
///         Done = 1 {},
///     }
///     pub struct Client;
/// }
/// ```
///
/// Nor do five handles:
///
/// ```compile_fail,E0080
/// use wire::Handle;
/// wire::protocol! {
///     pub protocol Many<'a>;
///     pub enum Request {
///         /// Five handles: one more than a message carries.
///         Five = 1 => fn five { a: Handle, b: Handle, c: Handle, d: Handle, e: Handle },
///     }
///     pub enum Reply {
///         Done = 1 {},
///     }
///     pub struct Client;
/// }
/// ```
///
/// (Six words compile: the crate's host tests have `Request::Six`.)
/// - The client is `Client<'buf, T: Transport>`, made with
///   `Client::new(transport, buf)`: each method encodes its request into
///   `buf`, calls, and decodes the reply (which borrows `buf`).
#[macro_export]
macro_rules! protocol {
    (
        $(#[$pm:meta])* $pv:vis protocol $proto:ident <$lt:lifetime>;
        $(#[$qm:meta])* $qv:vis enum $req:ident {
            $( $(#[$vm:meta])* $var:ident = $op:literal $(($idem:ident))? => fn $method:ident { $($f:ident : $t:ty),* $(,)? } ),* $(,)?
        }
        $(#[$rm:meta])* $rv:vis enum $rep:ident {
            $( $(#[$wm:meta])* $rvar:ident = $rop:literal { $($rf:ident : $rt:ty),* $(,)? } ),* $(,)?
        }
        $(#[$cm:meta])* $cv:vis struct $client:ident;
    ) => {
        $(#[$pm])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $pv struct $proto;

        impl $crate::Protocol for $proto {
            type Request<$lt> = $req<$lt>;
            type Reply<$lt> = $rep<$lt>;

            fn idempotent(op: u32) -> bool {
                match op {
                    $( $op => false $(|| $crate::protocol!(@idempotent $idem))?, )*
                    _ => false,
                }
            }
        }

        $crate::protocol!(@enum $lt; $(#[$qm])* $qv $req { $( $(#[$vm])* $var = $op { $($f : $t),* } ),* });
        $crate::protocol!(@enum $lt; $(#[$rm])* $rv $rep { $( $(#[$wm])* $rvar = $rop { $($rf : $rt),* } ),* });

        $(#[$cm])*
        $cv struct $client<'buf, T> {
            transport: T,
            buf: &'buf mut [u8],
        }

        impl<'buf, T: $crate::Transport> $client<'buf, T> {
            /// A client calling through `transport`, encoding requests into
            /// and receiving replies in `buf`.
            pub fn new(transport: T, buf: &'buf mut [u8]) -> Self {
                $client { transport, buf }
            }

            /// The transport (to change its timeout, say).
            pub fn transport(&mut self) -> &mut T {
                &mut self.transport
            }

            $(
                $(#[$vm])*
                #[allow(clippy::needless_lifetimes, clippy::extra_unused_lifetimes, clippy::too_many_arguments)]
                pub fn $method<$lt>(
                    &mut self,
                    $($f: $t),*
                ) -> ::core::result::Result<$rep<'_>, $crate::CallError<T::Error>> {
                    $crate::call::<$proto, T>(
                        &mut self.transport,
                        &$req::$var { $($f),* },
                        &mut *self.buf,
                    )
                }
            )*
        }
    };

    // The only marker a request takes: `(idempotent)`.
    (@idempotent idempotent) => { true };

    (@enum $lt:lifetime; $(#[$em:meta])* $ev:vis $name:ident {
        $( $(#[$vm:meta])* $var:ident = $op:literal { $($f:ident : $t:ty),* } ),*
    }) => {
        $(#[$em])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $ev enum $name<$lt> {
            $( $(#[$vm])* $var { $($f: $t),* }, )*
            #[doc(hidden)]
            __Lifetime(::core::marker::PhantomData<&$lt ()>, $crate::Never),
        }

        // Every label distinct and none the error label.
        const _: () = {
            let ops: &[u32] = &[$($op),*];
            let mut i = 0;
            while i < ops.len() {
                assert!(ops[i] != $crate::ERROR_LABEL, "a variant uses the error label");
                let mut j = i + 1;
                while j < ops.len() {
                    assert!(ops[i] != ops[j], "two variants share a label");
                    j += 1;
                }
                i += 1;
            }
        };

        // Every variant within a message's six words and four handles: a
        // seventh word is a compile error here, not an `InvalidArgument`
        // (`TooManyWords`) at the first call. A `const fn` per variant
        // because the field types may borrow the protocol's lifetime,
        // which only a generic item can name.
        const _: () = {
            $(
                #[allow(non_snake_case, clippy::extra_unused_lifetimes)]
                const fn $var<$lt>() -> (usize, usize) {
                    (
                        0 $(+ <$t as $crate::Field<$lt>>::WORDS)*,
                        0 $(+ <$t as $crate::Field<$lt>>::HANDLES)*,
                    )
                }
                assert!(
                    $var().0 <= $crate::WORDS,
                    concat!(stringify!($name), "::", stringify!($var), " needs more than six words"),
                );
                assert!(
                    $var().1 <= $crate::MAX_HANDLES,
                    concat!(stringify!($name), "::", stringify!($var), " carries more than four handles"),
                );
            )*
        };

        impl<'de: $lt, $lt> $crate::Message<'de> for $name<$lt> {
            #[allow(unused_mut)]
            fn decode(
                m: &$crate::Incoming<'de>,
            ) -> ::core::result::Result<Self, $crate::WireError> {
                let mut d = $crate::Decoder::new(m);
                let v = match m.label {
                    $( $op => $name::$var { $($f: d.get()?),* }, )*
                    _ => return Err($crate::WireError::UnknownOp),
                };
                d.finish()?;
                Ok(v)
            }

            fn label(&self) -> u32 {
                match self {
                    $( $name::$var { .. } => $op, )*
                    $name::__Lifetime(_, n) => match *n {},
                }
            }

            #[allow(unused_variables)]
            fn encode_fields(
                &self,
                e: &mut $crate::Encoder<'_>,
            ) -> ::core::result::Result<(), $crate::WireError> {
                match self {
                    $( $name::$var { $($f),* } => { $( $crate::Field::put($f, e)?; )* } )*
                    $name::__Lifetime(_, n) => match *n {},
                }
                Ok(())
            }
        }
    };
}

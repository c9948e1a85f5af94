//! Lists shared by the kernel, user programs and tests, declared once.
//!
//! An enum the two sides agree on used to be written three times by hand (the
//! enum, its `TryFrom`/`ALL` list, and its `END`/`as_str`), and a test that
//! wanted "every variant" wrote a fourth copy that silently missed a new one.
//! [`shared_enum!`](crate::shared_enum) writes them all from one declaration;
//! [`shared_bits!`](crate::shared_bits) does the same for a set of flag bits
//! ([`prot`](crate::prot), handle [`rights`](crate::rights)).

/// Declares an enum once and derives from that one list what used to be
/// written by hand beside it.
///
/// With codes (`enum Name: u64, else UNKNOWN => ErrType { Variant = 3 =>
/// "description", ... }`), for values that cross the kernel/user boundary
/// ([`Sysnum`](crate::Sysnum), [`Error`](crate::Error)):
/// - the `#[repr($repr)]` enum, `Clone, Copy, Debug, PartialEq, Eq`;
/// - `TryFrom<$repr>`, failing with `UNKNOWN` for any other code;
/// - `ALL`: every variant in declaration order;
/// - `END`: one past the highest code;
/// - `from_code(code) -> Option<Self>`: an explicit `match` on the codes, so
///   a dense list compiles to one bounds check;
/// - `code(self)`, `as_str(self)` (the description) and `Display`.
///
/// Without codes (`Variant => "description",`), for error lists that stay
/// on one side ([`BootImageError`](crate::bootimg::BootImageError), the page
/// tables' `MapError`): the enum, `ALL`, `as_str` and `Display`.
///
/// A duplicate code is a compile error (E0081, from the enum itself).
#[macro_export]
macro_rules! shared_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident, else $unknown:expr => $err:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $desc:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $code, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];

            /// One past the highest code.
            pub const END: $repr = {
                let mut end = 0;
                let mut i = 0;
                while i < Self::ALL.len() {
                    if Self::ALL[i] as $repr >= end {
                        end = Self::ALL[i] as $repr + 1;
                    }
                    i += 1;
                }
                end
            };

            /// The value with this code, if there is one.
            #[inline(always)]
            pub const fn from_code(code: $repr) -> Option<$name> {
                match code {
                    $( $code => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// The code of this value.
            pub const fn code(self) -> $repr {
                self as $repr
            }

            /// A short human-readable description.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $desc, )+
                }
            }
        }

        impl ::core::convert::TryFrom<$repr> for $name {
            type Error = $err;
            /// The value with this code; the `else` error of the declaration
            /// for any other. Its own `match` (not `from_code`'s `Option`),
            /// in the shape the hand-written one had: the kernel's
            /// dispatcher matches on it and the compiler folds it into that
            /// function's bounds check and jump table; other shapes cost the
            /// syscall path 7 instructions (`scripts/bench.sh --check`).
            /// Always inlined: past about 40 codes the compiler stops
            /// inlining it on its own and the dispatcher pays a call and
            /// an early stack frame (+18 instructions on `null`).
            #[inline(always)]
            fn try_from(code: $repr) -> ::core::result::Result<$name, $err> {
                Ok(match code {
                    $( $code => $name::$variant, )+
                    _ => return Err($unknown),
                })
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $desc:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];

            /// A short human-readable description.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $desc, )+
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Declares a set of flag bits once, as a module of constants plus what is
/// derived from the list: `ALL` (every valid bit), `NAMES` (each bit with
/// its name, in declaration order) and `valid(bits)` (no undefined bit set).
/// Each constant must be a single bit, and no two may share one (checked
/// at compile time).
///
/// ```
/// abi::shared_bits! {
///     /// Example rights.
///     pub mod rights: u64 {
///         /// May read.
///         READ = 1 << 0 => "read",
///         /// May write.
///         WRITE = 1 << 1 => "write",
///     }
/// }
/// assert_eq!(rights::ALL, 3);
/// assert!(!rights::valid(4));
/// ```
#[macro_export]
macro_rules! shared_bits {
    (
        $(#[$meta:meta])*
        $vis:vis mod $name:ident: $ty:ident {
            $( $(#[$cmeta:meta])* $bit:ident = $value:expr => $desc:literal, )+
        }
    ) => {
        $(#[$meta])*
        $vis mod $name {
            $( $(#[$cmeta])* pub const $bit: $ty = $value; )+

            /// Every valid bit.
            pub const ALL: $ty = 0 $( | $bit )+;

            /// Each bit with its name, in declaration order.
            pub const NAMES: &[($ty, &str)] = &[$( ($bit, $desc) ),+];

            /// Whether `bits` sets only bits of this list.
            pub const fn valid(bits: $ty) -> bool {
                bits & !ALL == 0
            }

            // Single bits, pairwise disjoint.
            const _: () = {
                let mut seen: $ty = 0;
                let mut i = 0;
                while i < NAMES.len() {
                    let b = NAMES[i].0;
                    assert!(b.count_ones() == 1, "a flag is not a single bit");
                    assert!(seen & b == 0, "two flags share a bit");
                    seen |= b;
                    i += 1;
                }
            };
        }
    };
}

#[cfg(test)]
mod tests {
    crate::shared_enum! {
        /// A list with gaps in its codes.
        enum Sparse: u32, else "unknown" => &'static str {
            /// First.
            A = 1 => "a",
            /// Second.
            B = 5 => "b",
            /// Third.
            C = 2 => "c",
        }
    }

    crate::shared_enum! {
        /// A list without codes.
        enum Plain {
            /// First.
            X => "ex",
            /// Second.
            Y => "why",
        }
    }

    crate::shared_bits! {
        /// Three bits.
        mod flags: u8 {
            /// One.
            ONE = 1 << 0 => "one",
            /// Four.
            FOUR = 1 << 2 => "four",
            /// Eight.
            EIGHT = 1 << 3 => "eight",
        }
    }

    #[test]
    fn shared_enum_lists_every_variant_in_declaration_order() {
        assert_eq!(Sparse::ALL, [Sparse::A, Sparse::B, Sparse::C]);
        assert_eq!(Plain::ALL, [Plain::X, Plain::Y]);
    }

    #[test]
    fn shared_enum_end_is_one_past_the_highest_code_not_the_count() {
        assert_eq!(Sparse::END, 6);
    }

    #[test]
    fn shared_enum_from_code_finds_exactly_the_declared_codes() {
        for v in Sparse::ALL {
            assert_eq!(Sparse::from_code(v.code()), Some(v));
        }
        for code in [0, 3, 4, 6, u32::MAX] {
            assert_eq!(Sparse::from_code(code), None, "code {code}");
            assert_eq!(Sparse::try_from(code), Err("unknown"), "code {code}");
        }
        assert_eq!(Sparse::try_from(5), Ok(Sparse::B));
    }

    #[test]
    fn shared_enum_descriptions_come_from_the_declaration() {
        assert_eq!(Sparse::B.as_str(), "b");
        assert_eq!(Sparse::C.to_string(), "c");
        assert_eq!(Plain::Y.to_string(), "why");
    }

    /// High bits a truncating cast (to u8, u16, u32) would drop, and the
    /// sign bit.
    const HIGH: [u64; 6] = [
        1 << 8,
        1 << 16,
        1 << 32,
        1 << 63,
        0xffff_ffff_0000_0000,
        0xffff_ffff_ffff_ff00,
    ];

    #[test]
    fn the_abi_lists_accept_exactly_their_codes_and_nothing_with_high_bits() {
        use crate::{Error, Sysnum};
        // Every value up to well past END, and every declared code with
        // high bits set: a generated match that compared a truncated value
        // would accept some of them.
        for n in 0..0x1_0000u64 {
            let declared = Sysnum::ALL.iter().any(|s| s.code() == n);
            assert_eq!(Sysnum::from_code(n).is_some(), declared, "sysnum {n}");
            assert_eq!(Sysnum::try_from(n).is_ok(), declared, "sysnum {n}");
            let declared = Error::ALL.iter().any(|e| e.code() == n);
            assert_eq!(Error::from_code(n).is_some(), declared, "error {n}");
            assert_eq!(Error::try_from(n).is_ok(), declared, "error {n}");
        }
        for h in HIGH {
            for s in Sysnum::ALL {
                assert_eq!(Sysnum::try_from(h | s.code()), Err(Error::BadSyscall));
                assert_eq!(Sysnum::from_code(h | s.code()), None);
            }
            for e in Error::ALL {
                assert_eq!(Error::try_from(h | e.code()), Err(()));
                assert_eq!(Error::from_code(h | e.code()), None);
            }
        }
        for n in [
            Sysnum::END,
            Sysnum::END + 1,
            u64::MAX,
            0u64.wrapping_sub(20),
        ] {
            assert_eq!(Sysnum::try_from(n), Err(Error::BadSyscall), "{n:#x}");
        }
        for n in [0, Error::END, Error::END + 1, u64::MAX] {
            assert_eq!(Error::try_from(n), Err(()), "{n:#x}");
        }
        // A decoded syscall result never names an undeclared error.
        for n in 0..=4096u64 {
            if let Err(e) = crate::decode_result(n.wrapping_neg()) {
                assert!(Error::ALL.contains(&e));
            }
        }
    }

    #[test]
    fn shared_bits_derive_the_mask_the_names_and_validity() {
        assert_eq!(flags::ALL, 0b1101);
        assert_eq!(flags::NAMES, &[(1, "one"), (4, "four"), (8, "eight")][..]);
        assert!(flags::valid(flags::ONE | flags::EIGHT));
        assert!(flags::valid(0));
        assert!(!flags::valid(0b10));
    }
}

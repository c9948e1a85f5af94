//! The message format: `MsgInfo` and `RecvSpec` decoding, handle
//! numbers in registers, the error codes, and any register value.

use super::*;
use crate::handles::{Handle, TransferMode};

#[test]
fn message_info_round_trips() {
    let i = MsgInfo::new(0xdead_beef, 3, 0b101, MAX_BUFFER).with_timeout();
    let j = MsgInfo::from_user(i.raw()).unwrap();
    assert_eq!(
        (j.label(), j.handles(), j.copy_mask(), j.buffer_len()),
        (0xdead_beef, 3, 0b101, MAX_BUFFER)
    );
    assert!(j.has_timeout());
    assert!(!j.is_register_only());
    assert!(MsgInfo::from_user(7).unwrap().is_register_only());
}

#[test]
fn malformed_message_info_is_refused() {
    assert_eq!(
        MsgInfo::from_user(5 << 32),
        Err(MsgError::Malformed),
        "five handles"
    );
    assert_eq!(
        MsgInfo::from_user(1 << 32 | 0b10 << 35),
        Err(MsgError::Malformed),
        "copy bit past count"
    );
    assert_eq!(
        MsgInfo::from_user(MsgInfo::NOTIFIED),
        Err(MsgError::Malformed),
        "output-only bit"
    );
    assert_eq!(
        MsgInfo::from_user(1 << 63),
        Err(MsgError::Malformed),
        "reserved bit"
    );
    assert_eq!(
        MsgInfo::from_user(((MAX_BUFFER as u64) + 1) << 40),
        Err(MsgError::BufferTooLarge)
    );
}

#[test]
fn handle_numbers_travel_in_rbx_and_rbp() {
    let hs = [
        Handle::from_raw(0x401),
        Handle::from_raw(0x802),
        Handle::from_raw(0xc03),
    ];
    let (rbx, rbp) = msg::pack_handles(&hs);
    let info = MsgInfo::from_user(MsgInfo::new(1, 3, 0b010, 0).raw()).unwrap();
    let t = info.transfers(rbx, rbp);
    assert_eq!(
        &t[..],
        &[
            (hs[0], TransferMode::Move),
            (hs[1], TransferMode::Copy),
            (hs[2], TransferMode::Move)
        ]
    );
    assert_eq!(rbp >> 32, 0, "unused slots are 0");
}

#[test]
fn receive_spec_checks_capacity_and_decodes_the_timeout() {
    let plain = MsgInfo::new(0, 0, 0, 0);
    let timed = plain.with_timeout();
    let r = RecvSpec::from_user(5000 | 250 << 32, timed).unwrap();
    assert_eq!(
        r,
        RecvSpec {
            capacity: 5000,
            timeout_us: Some(250)
        }
    );
    assert_eq!(RecvSpec::from_user(r.to_reg(), timed), Ok(r));
    assert_eq!(
        RecvSpec::from_user(5000 | 250 << 32, plain)
            .unwrap()
            .timeout_us,
        None
    );
    assert_eq!(
        RecvSpec::from_user(MAX_BUFFER as u64 + 1, plain),
        Err(MsgError::BufferTooLarge)
    );
    assert_eq!(r.accepts(5000), Ok(()));
    assert_eq!(r.accepts(5001), Err(MsgError::DoesNotFit));
}

#[test]
fn ipc_errors_map_onto_abi_codes() {
    assert_eq!(abi::Error::from(IpcError::PeerDied), abi::Error::PeerDied);
    assert_eq!(
        abi::Error::from(IpcError::NotDelivered),
        abi::Error::NotDelivered
    );
    assert_eq!(
        abi::Error::from(IpcError::WouldBlock),
        abi::Error::WouldBlock
    );
    assert_eq!(
        abi::Error::from(MsgError::DoesNotFit),
        abi::Error::InvalidArgument
    );
}

// ---- any register value ----

use proptest::strategy::Strategy as _;

proptest::proptest! {
    /// Whatever user space puts in the registers, decoding either refuses it
    /// or yields a message within the limits; it never panics.
    #[test]
    fn any_register_values_decode_within_limits_or_are_refused(
        rsi in proptest::prop_oneof![
            proptest::prelude::any::<u64>(),
            // Mostly well-formed words, every field pushed past its limit.
            (
                proptest::prelude::any::<u32>(),
                0u64..8,
                0u64..16,
                proptest::prelude::any::<bool>(),
                0u64..(1 << 17),
                proptest::prop_oneof![4 => proptest::strategy::Just(0u64), 1 => 0u64..128],
            )
                .prop_map(|(label, n, copy, t, len, top)| {
                    label as u64 | n << 32 | copy << 35 | (t as u64) << 39 | len << 40 | top << 57
                }),
        ],
        r15 in proptest::prelude::any::<u64>(),
        rbx in proptest::prelude::any::<u64>(),
        rbp in proptest::prelude::any::<u64>(),
        rdi in proptest::prelude::any::<u64>(),
    ) {
        if let Ok(info) = MsgInfo::from_user(rsi) {
            proptest::prop_assert!(info.handles() <= crate::handles::MAX_TRANSFER);
            proptest::prop_assert!(info.buffer_len() <= MAX_BUFFER);
            proptest::prop_assert_eq!(info.copy_mask() >> info.handles(), 0);
            proptest::prop_assert_eq!(info.transfers(rbx, rbp).len(), info.handles());
            proptest::prop_assert_eq!(MsgInfo::from_user(info.raw()), Ok(info));
            if let Ok(spec) = RecvSpec::from_user(r15, info) {
                proptest::prop_assert!(spec.capacity <= MAX_BUFFER);
                let _ = spec.accepts(info.buffer_len());
            }
        }
        let _ = crate::handles::Handle::from_reg(rdi);
    }
}

proptest::proptest! {
    /// The kernel's fast IPC register case (`syscall/ipc.rs`'s `fast_regs`,
    /// lookup3: RSI with nothing above its label, R15's low half at most
    /// `MAX_BUFFER`; copied here) is exactly the set of registers the full
    /// decode accepts as a register-only message with no timeout, and its
    /// shortcut decode (`MsgInfo::new(label)`, `RecvSpec::of`) gives what
    /// the full one does: the fast case may skip `from_user` and refuse
    /// nothing the slow decode would accept, nor accept anything it refuses
    /// (break25l).
    #[test]
    fn the_fast_register_case_is_the_register_only_decode(
        rsi in proptest::prop_oneof![
            proptest::prelude::any::<u64>(),
            proptest::prelude::any::<u32>().prop_map(u64::from),
            (proptest::prelude::any::<u32>(), 0u32..32)
                .prop_map(|(label, bit)| label as u64 | 1u64 << (32 + bit)),
        ],
        r15 in proptest::prop_oneof![
            proptest::prelude::any::<u64>(),
            (proptest::prelude::any::<u32>(), 0u64..4)
                .prop_map(|(hi, d)| (hi as u64) << 32 | (MAX_BUFFER as u64 - 1 + d)),
            (proptest::prelude::any::<u32>(), 0u64..3)
                .prop_map(|(hi, d)| (hi as u64) << 32 | (u32::MAX as u64 - d)),
        ],
    ) {
        let fast = rsi >> 32 == 0 && r15 as u32 as usize <= MAX_BUFFER;
        let full = MsgInfo::from_user(rsi)
            .and_then(|info| RecvSpec::from_user(r15, info).map(|spec| (info, spec)));
        let register_only = matches!(
            full,
            Ok((info, spec)) if info.is_register_only() && spec.timeout_us.is_none()
        );
        proptest::prop_assert_eq!(fast, register_only);
        if fast {
            let info = MsgInfo::new(rsi as u32, 0, 0, 0);
            proptest::prop_assert_eq!(full, Ok((info, RecvSpec::of(r15, info))));
        }
    }
}

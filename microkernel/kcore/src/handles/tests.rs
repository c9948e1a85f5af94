//! Example tests of the handle table's rules (issue 10, "Rights").

use super::*;

type T = HandleTable<&'static str>;

fn ent(o: &'static str, rights: Rights) -> Entry<&'static str> {
    Entry {
        object: o,
        rights,
        badge: 0,
    }
}

#[test]
fn zero_is_never_a_handle_and_numbers_encode_slot_and_generation() {
    let mut t = T::new(8);
    let h = t.insert(ent("ep", Rights::SEND)).unwrap();
    assert_ne!(h.raw(), 0);
    assert_eq!(h.generation(), 1);
    assert_eq!(h.raw(), (1 << SLOT_BITS) | h.slot() as u32);
    assert_eq!(
        t.get(Handle::from_raw(0), Rights::empty()),
        Err(HandleError::BadHandle)
    );
}

#[test]
fn register_values_with_upper_bits_are_bad_handles() {
    assert_eq!(
        Handle::from_reg(1 << 32 | 1025),
        Err(HandleError::BadHandle)
    );
    assert_eq!(Handle::from_reg(1025), Ok(Handle::from_raw(1025)));
}

#[test]
fn a_register_lookup_finds_only_the_live_number_itself() {
    let mut t = T::new(8);
    let h = t.insert(ent("ep", Rights::SEND)).unwrap();
    let reg = h.raw() as u64;
    assert_eq!(t.find_reg(reg), Some(&ent("ep", Rights::SEND)));
    assert_eq!(t.find(h), Some(&ent("ep", Rights::SEND)));
    // Upper bits set (what `Handle::from_reg` refuses): no slot's number.
    for bit in [32, 40, 63] {
        assert_eq!(t.find_reg(reg | 1 << bit), None);
    }
    // Another generation of the slot; a free slot named by the number it
    // will have when filled next; a slot past the table (8 slots).
    assert_eq!(t.find_reg(reg + (1 << SLOT_BITS)), None);
    assert_eq!(t.find_reg(reg | 7), None);
    assert_eq!(t.find_reg(reg | 9), None);
    t.close(h).unwrap();
    assert_eq!(t.find_reg(reg), None);
    assert_eq!(t.find_reg(reg + (1 << SLOT_BITS)), None);
    let again = t.insert(ent("ntf", Rights::WAIT)).unwrap();
    assert_eq!(again.raw() as u64, reg + (1 << SLOT_BITS));
    assert_eq!(
        t.find_reg(again.raw() as u64),
        Some(&ent("ntf", Rights::WAIT))
    );
}

#[test]
fn lookup_requires_every_named_right() {
    let mut t = T::new(8);
    let h = t.insert(ent("ep", Rights::RECV)).unwrap();
    assert_eq!(t.get(h, Rights::SEND), Err(HandleError::PermissionDenied));
    assert_eq!(
        t.get(h, Rights::SEND | Rights::RECV),
        Err(HandleError::PermissionDenied)
    );
    assert_eq!(t.get(h, Rights::RECV).unwrap().object, "ep");
}

#[test]
fn a_closed_handle_is_an_error_and_its_reused_slot_does_not_answer_to_it() {
    let mut t = T::new(8);
    let old = t.insert(ent("a", Rights::SEND)).unwrap();
    assert_eq!(t.close(old).unwrap().object, "a");
    assert_eq!(t.get(old, Rights::empty()), Err(HandleError::BadHandle));
    assert_eq!(t.close(old), Err(HandleError::BadHandle));
    let new = t.insert(ent("b", Rights::SEND)).unwrap();
    assert_eq!(new.slot(), old.slot(), "LIFO reuse of the freed slot");
    assert_ne!(new, old);
    assert_eq!(t.get(old, Rights::empty()), Err(HandleError::BadHandle));
    assert_eq!(t.get(new, Rights::empty()).unwrap().object, "b");
}

#[test]
fn a_full_table_is_an_error_not_a_panic() {
    let mut t = T::new(3);
    for _ in 0..3 {
        t.insert(ent("x", Rights::all())).unwrap();
    }
    assert_eq!(
        t.insert(ent("y", Rights::all())),
        Err(HandleError::TableFull)
    );
    let h = Handle::new(0, 1);
    assert_eq!(
        t.duplicate(h, Rights::SEND, None),
        Err(HandleError::TableFull)
    );
    assert_eq!(t.len(), 3);
    t.close(h).unwrap();
    t.insert(ent("y", Rights::all())).unwrap();
}

#[test]
fn the_maximum_is_clamped_to_what_a_number_can_address() {
    let mut t = T::new(usize::MAX);
    assert_eq!(t.max(), MAX_SLOTS);
    for _ in 0..MAX_SLOTS {
        t.insert(ent("x", Rights::empty())).unwrap();
    }
    assert_eq!(
        t.insert(ent("x", Rights::empty())),
        Err(HandleError::TableFull)
    );
}

#[test]
fn a_duplicate_can_drop_rights_but_never_add_them() {
    let mut t = T::new(8);
    let h = t
        .insert(ent("ep", Rights::SEND | Rights::RECV | Rights::DUPLICATE))
        .unwrap();
    let d = t.duplicate(h, Rights::SEND, None).unwrap();
    assert_eq!(t.get(d, Rights::SEND).unwrap().object, "ep");
    assert_eq!(t.get(d, Rights::RECV), Err(HandleError::PermissionDenied));
    // The reduced copy cannot be duplicated (no DUPLICATE) ...
    assert_eq!(
        t.duplicate(d, Rights::SEND, None),
        Err(HandleError::PermissionDenied)
    );
    // ... and the original cannot grant what it lacks.
    assert_eq!(
        t.duplicate(h, Rights::SEND | Rights::KILL, None),
        Err(HandleError::PermissionDenied)
    );
}

#[test]
fn duplicate_needs_the_duplicate_right() {
    let mut t = T::new(8);
    let h = t.insert(ent("ep", Rights::SEND)).unwrap();
    assert_eq!(
        t.duplicate(h, Rights::SEND, None),
        Err(HandleError::PermissionDenied)
    );
}

#[test]
fn a_badge_is_set_once_and_inherited_by_later_copies() {
    let mut t = T::new(8);
    let h = t
        .insert(ent("ep", Rights::SEND | Rights::DUPLICATE))
        .unwrap();
    let b = t
        .duplicate(h, Rights::SEND | Rights::DUPLICATE, Some(7))
        .unwrap();
    assert_eq!(t.get(b, Rights::SEND).unwrap().badge, 7);
    assert_eq!(
        t.duplicate(b, Rights::SEND, Some(8)),
        Err(HandleError::AlreadyBadged)
    );
    let c = t.duplicate(b, Rights::SEND, None).unwrap();
    assert_eq!(t.get(c, Rights::SEND).unwrap().badge, 7);
}

#[test]
fn a_slot_at_the_last_generation_is_retired_not_wrapped() {
    let mut t = T::new(1);
    let h = t.insert(ent("x", Rights::empty())).unwrap();
    t.close(h).unwrap();
    // Drive the (free) slot to the last generation quickly.
    t.slots[0].set_number(Handle::new(0, MAX_GENERATION));
    let h = t.insert(ent("x", Rights::empty())).unwrap();
    assert_eq!(h.generation(), MAX_GENERATION);
    t.close(h).unwrap();
    assert_eq!(
        t.insert(ent("y", Rights::empty())),
        Err(HandleError::TableFull)
    );
    assert_eq!(
        t.get(Handle::new(0, 1), Rights::empty()),
        Err(HandleError::BadHandle)
    );
}

#[test]
fn transfer_moves_and_copies_with_the_right_rights() {
    let mut a = T::new(8);
    let mut b = T::new(8);
    let mv = a
        .insert(ent("mv", Rights::SEND | Rights::TRANSFER))
        .unwrap();
    let cp = a
        .insert(ent(
            "cp",
            Rights::SEND | Rights::TRANSFER | Rights::DUPLICATE,
        ))
        .unwrap();
    let got = transfer_between(
        &mut a,
        &mut b,
        &[(mv, TransferMode::Move), (cp, TransferMode::Copy)],
    )
    .unwrap();
    assert_eq!(b.get(got[0], Rights::SEND).unwrap().object, "mv");
    assert_eq!(b.get(got[1], Rights::SEND).unwrap().object, "cp");
    assert_eq!(a.get(mv, Rights::empty()), Err(HandleError::BadHandle));
    assert_eq!(a.get(cp, Rights::empty()).unwrap().object, "cp");
}

#[test]
fn a_refused_transfer_changes_neither_table() {
    let mut a = T::new(8);
    let mut b = T::new(8);
    let ok = a.insert(ent("ok", Rights::TRANSFER)).unwrap();
    let no_dup = a.insert(ent("nd", Rights::TRANSFER)).unwrap();
    let no_xfer = a.insert(ent("nx", Rights::DUPLICATE)).unwrap();
    for specs in [
        &[(ok, TransferMode::Move), (no_dup, TransferMode::Copy)][..],
        &[(ok, TransferMode::Move), (no_xfer, TransferMode::Move)][..],
        &[(ok, TransferMode::Move), (ok, TransferMode::Move)][..],
        &[
            (ok, TransferMode::Move),
            (Handle::from_raw(0), TransferMode::Move),
        ][..],
        &[(ok, TransferMode::Move); 5][..],
    ] {
        assert!(
            transfer_between(&mut a, &mut b, specs).is_err(),
            "{specs:?}"
        );
        assert_eq!(a.len(), 3);
        assert!(b.is_empty());
    }
    // A receiver without room refuses the whole message.
    let mut full = T::new(0);
    assert_eq!(
        transfer_between(&mut a, &mut full, &[(ok, TransferMode::Move)]),
        Err(HandleError::TableFull)
    );
    assert!(a.get(ok, Rights::empty()).is_ok());
}

#[test]
fn a_move_within_a_full_table_needs_no_extra_room() {
    let mut t = T::new(1);
    let h = t.insert(ent("x", Rights::TRANSFER)).unwrap();
    let got = transfer_within(&mut t, &[(h, TransferMode::Move)]).unwrap();
    assert_ne!(got[0], h);
    assert_eq!(t.get(got[0], Rights::empty()).unwrap().object, "x");
}

#[test]
fn close_all_returns_every_entry_and_invalidates_every_number() {
    let mut t = T::new(8);
    let hs: alloc::vec::Vec<_> = (0..5)
        .map(|_| t.insert(ent("x", Rights::all())).unwrap())
        .collect();
    t.close(hs[2]).unwrap();
    let mut n = 0;
    t.close_all(|_| n += 1);
    assert_eq!(n, 4);
    assert!(t.is_empty());
    for h in hs {
        assert_eq!(t.get(h, Rights::empty()), Err(HandleError::BadHandle));
    }
}

#[test]
fn errors_map_onto_abi_codes() {
    assert_eq!(
        abi::Error::from(HandleError::PermissionDenied),
        abi::Error::PermissionDenied
    );
    assert_eq!(
        abi::Error::from(HandleError::TableFull),
        abi::Error::NoMemory
    );
}

#[test]
fn rights_are_the_abi_declaration_bit_for_bit_and_name_for_name() {
    // The kernel's flags and the ABI list (what libipc re-exports) must
    // agree on every bit and its meaning: a flag wired to another ABI bit,
    // or a bit on one side only, fails here.
    let kernel: Vec<(String, u32)> = Rights::all()
        .iter_names()
        .map(|(n, r)| (n.to_lowercase(), r.bits()))
        .collect();
    let abi: Vec<(String, u32)> = abi::rights::NAMES
        .iter()
        .map(|(b, n)| (n.to_string(), *b))
        .collect();
    assert_eq!(kernel, abi);
    assert_eq!(Rights::all().bits(), abi::rights::ALL);
}

#[test]
fn a_register_lookup_with_a_kind_test_finds_only_live_entries_it_accepts() {
    let mut t = T::new(8);
    let ep = t.insert(ent("ep", Rights::SEND)).unwrap().raw() as u64;
    let ntf = t.insert(ent("ntf", Rights::WAIT)).unwrap().raw() as u64;
    let is_ep = |e: &Entry<&str>| e.object == "ep";
    assert_eq!(t.find_reg_if(ep, is_ep), Some(&ent("ep", Rights::SEND)));
    // Live, of another kind: nothing.
    assert_eq!(t.find_reg_if(ntf, is_ep), None);
    assert_eq!(
        t.find_reg_if(ntf, |_| true),
        Some(&ent("ntf", Rights::WAIT))
    );
    // Not live (closed; free, named by its next number; upper bits set):
    // nothing, and the kind test is not asked.
    t.close(Handle::from_raw(ep as u32)).unwrap();
    let next = ep + (1 << SLOT_BITS);
    for reg in [ep, next, ntf | 1 << 40, 7] {
        assert_eq!(
            t.find_reg_if(reg, |e| panic!("asked of {reg:#x}: {e:?}")),
            None
        );
    }
}

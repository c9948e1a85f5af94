//! Model-based test: random operation sequences on a [`HandleTable`] and on a
//! reference model (a map from issued numbers to entries); both must give the
//! same answers, and the table's invariants hold after every step.

use super::*;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Insert(u8, u32),
    Get(usize, u32),
    Close(usize),
    Dup(usize, u32, Option<u64>),
    Transfer(Vec<(usize, bool)>),
    /// A number nobody issued (or from "another process").
    Forged(u32),
    /// A syscall register for [`HandleTable::find_reg`]: an issued number
    /// (live or not), the number its slot gets next (what a free slot
    /// holds), or slot `i`'s first number, with `hi` in the upper half.
    Reg(usize, u8, u32),
}

fn rights() -> impl Strategy<Value = u32> {
    0u32..(1 << 7)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<u8>(), rights()).prop_map(|(o, r)| Op::Insert(o, r)),
        3 => (any::<usize>(), rights()).prop_map(|(i, r)| Op::Get(i, r)),
        2 => any::<usize>().prop_map(Op::Close),
        2 => (any::<usize>(), rights(), proptest::option::of(0u64..3)).prop_map(|(i, r, b)| Op::Dup(i, r, b)),
        1 => proptest::collection::vec((any::<usize>(), any::<bool>()), 0..6).prop_map(Op::Transfer),
        1 => any::<u32>().prop_map(Op::Forged),
        2 => (any::<usize>(), 0u8..3, prop_oneof![Just(0u32), Just(1), any::<u32>()])
            .prop_map(|(i, k, hi)| Op::Reg(i, k, hi)),
    ]
}

/// The reference: which numbers were ever issued, and the live ones' entries.
#[derive(Default)]
struct Model {
    issued: Vec<Handle>,
    live: BTreeMap<Handle, Entry<u8>>,
}

impl Model {
    fn pick(&self, i: usize) -> Handle {
        if self.issued.is_empty() {
            Handle::from_raw(0)
        } else {
            self.issued[i % self.issued.len()]
        }
    }
    fn get(&self, h: Handle, req: Rights) -> Result<&Entry<u8>, HandleError> {
        let e = self.live.get(&h).ok_or(HandleError::BadHandle)?;
        if e.rights.contains(req) {
            Ok(e)
        } else {
            Err(HandleError::PermissionDenied)
        }
    }
    fn issue(
        &mut self,
        got: Result<Handle, HandleError>,
        e: Entry<u8>,
        max: usize,
    ) -> Result<(), TestCaseError> {
        if self.live.len() >= max {
            prop_assert_eq!(got, Err(HandleError::TableFull));
            return Ok(());
        }
        let h = got.map_err(|e| TestCaseError::fail(alloc::format!("insert failed: {e:?}")))?;
        prop_assert!(!self.issued.contains(&h), "number {h:?} reissued");
        prop_assert_ne!(h.raw(), 0);
        self.issued.push(h);
        self.live.insert(h, e);
        Ok(())
    }
}

const MAX: usize = 12;

fn check(t: &HandleTable<u8>, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(t.len(), m.live.len());
    for h in &m.issued {
        match m.live.get(h) {
            Some(e) => prop_assert_eq!(t.get(*h, e.rights), Ok(e)),
            None => prop_assert_eq!(t.get(*h, Rights::empty()), Err(HandleError::BadHandle)),
        }
    }
    // Structural invariants: free list and counters agree with the slots.
    prop_assert!(t.slots.len() <= t.max);
    let mut free = 0;
    let mut at = t.free_head;
    while at != NO_FREE {
        free += 1;
        prop_assert!(free <= t.slots.len(), "free list cycles");
        match t.slots[at as usize].state {
            SlotState::Free(next) => at = next,
            _ => return Err(TestCaseError::fail("free list names a used slot")),
        }
    }
    prop_assert_eq!(free, t.free_count);
    let used = t
        .slots
        .iter()
        .filter(|s| matches!(s.state, SlotState::Used(_)))
        .count();
    prop_assert_eq!(used, t.live);
    // Each slot's number names that slot, at a generation in range.
    for (i, s) in t.slots.iter().enumerate() {
        prop_assert_eq!(s.number >> 32, 0);
        prop_assert_eq!(s.number().slot(), i);
        prop_assert!((1..=MAX_GENERATION).contains(&s.generation()));
    }
    prop_assert_eq!(used + free, t.slots.len());
    // The register lookup: every live number whole, none with an upper
    // bit set; no number issued before (closed, or stale after reuse);
    // no slot's own number unless it is live (a free slot holds the
    // number it gets next, a retired one its last).
    for (h, e) in &m.live {
        prop_assert_eq!(t.find_reg(h.raw() as u64), Some(e));
        for bit in [32, 33, 63] {
            prop_assert_eq!(t.find_reg(h.raw() as u64 | 1 << bit), None);
        }
    }
    for h in m.issued.iter().filter(|h| !m.live.contains_key(h)) {
        prop_assert_eq!(t.find_reg(h.raw() as u64), None);
    }
    for s in &t.slots {
        prop_assert_eq!(
            t.find_reg(s.number).is_some(),
            matches!(s.state, SlotState::Used(_))
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn handle_table_agrees_with_the_reference_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut t = HandleTable::<u8>::new(MAX);
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Insert(o, r) => {
                    let e = Entry { object: o, rights: Rights::from_bits_truncate(r), badge: 0 };
                    let got = t.insert(e.clone());
                    m.issue(got, e, MAX)?;
                }
                Op::Get(i, r) => {
                    let h = m.pick(i);
                    let req = Rights::from_bits_truncate(r);
                    prop_assert_eq!(t.get(h, req), m.get(h, req));
                }
                Op::Close(i) => {
                    let h = m.pick(i);
                    let want = m.live.remove(&h).ok_or(HandleError::BadHandle);
                    prop_assert_eq!(t.close(h), want);
                }
                Op::Dup(i, r, badge) => {
                    let h = m.pick(i);
                    let rights = Rights::from_bits_truncate(r);
                    let got = t.duplicate(h, rights, badge);
                    let want = m.get(h, Rights::DUPLICATE).and_then(|src| {
                        if !src.rights.contains(rights) {
                            return Err(HandleError::PermissionDenied);
                        }
                        match badge {
                            Some(_) if src.badge != 0 => Err(HandleError::AlreadyBadged),
                            b => Ok(Entry { object: src.object, rights, badge: b.unwrap_or(src.badge) }),
                        }
                    });
                    match want {
                        Ok(e) => m.issue(got, e, MAX)?,
                        Err(e) => prop_assert_eq!(got, Err(e)),
                    }
                }
                Op::Transfer(picks) => {
                    let specs: Vec<_> = picks
                        .iter()
                        .map(|(i, copy)| (m.pick(*i), if *copy { TransferMode::Copy } else { TransferMode::Move }))
                        .collect();
                    let before = t.len();
                    let got = transfer_within(&mut t, &specs);
                    // Model: refuse unless every handle is distinct, live and
                    // has the rights its mode needs, and the copies fit.
                    let mut ok = specs.len() <= MAX_TRANSFER;
                    for (k, (h, mode)) in specs.iter().enumerate() {
                        let need = match mode {
                            TransferMode::Move => Rights::TRANSFER,
                            TransferMode::Copy => Rights::TRANSFER | Rights::DUPLICATE,
                        };
                        ok &= !specs[..k].iter().any(|(o, _)| o == h) && m.get(*h, need).is_ok();
                    }
                    let copies = specs.iter().filter(|(_, md)| *md == TransferMode::Copy).count();
                    ok &= m.live.len() + copies <= MAX;
                    prop_assert_eq!(got.is_ok(), ok, "{:?} -> {:?}", specs, got);
                    match got {
                        Err(_) => prop_assert_eq!(t.len(), before),
                        Ok(new) => {
                            prop_assert_eq!(new.len(), specs.len());
                            for ((h, mode), n) in specs.iter().zip(new.iter()) {
                                let e = m.live.get(h).cloned().unwrap();
                                if *mode == TransferMode::Move {
                                    m.live.remove(h);
                                }
                                prop_assert!(!m.issued.contains(n));
                                m.issued.push(*n);
                                m.live.insert(*n, e);
                            }
                        }
                    }
                }
                Op::Forged(raw) => {
                    let h = Handle::from_raw(raw);
                    prop_assert_eq!(t.get(h, Rights::empty()), m.get(h, Rights::empty()));
                }
                Op::Reg(i, kind, hi) => {
                    let low = match kind {
                        0 => m.pick(i).raw(),
                        1 => m.pick(i).raw().wrapping_add(1 << SLOT_BITS),
                        _ => Handle::new(i % MAX, 1).raw(),
                    };
                    let reg = u64::from(hi) << 32 | u64::from(low);
                    // Upper bits set: nothing (as `Handle::from_reg`).
                    let want = if hi == 0 { m.live.get(&Handle::from_raw(low)) } else { None };
                    prop_assert_eq!(t.find_reg(reg), want, "register {:#x}", reg);
                    // With a kind test (`find_reg_if`): the same entry if
                    // it accepts it, else nothing; never asked of a slot
                    // that is not live.
                    for k in 0..3u8 {
                        let mut asked = None;
                        let got = t.find_reg_if(reg, |e| {
                            asked = Some(e.clone());
                            e.object % 3 == k
                        });
                        prop_assert_eq!(got, want.filter(|e| e.object % 3 == k));
                        prop_assert_eq!(asked.as_ref(), want, "kind asked of {:#x}", reg);
                    }
                }
            }
            check(&t, &m)?;
        }
    }
}

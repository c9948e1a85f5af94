use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// Waiters told anything (delivered or asked again).
fn woken(r: &Released) -> Vec<u32> {
    r.iter()
        .filter(|x| x.1 != Wake::Drop)
        .map(|x| x.0)
        .collect()
}

fn dropped(r: &Released) -> Vec<u32> {
    r.iter()
        .filter(|x| x.1 == Wake::Drop)
        .map(|x| x.0)
        .collect()
}

fn delivered(r: &Released) -> Vec<(u32, Pid, Ended)> {
    r.iter()
        .filter_map(|(t, w)| match w {
            Wake::Delivered(p, e) => Some((t, p, e)),
            _ => None,
        })
        .collect()
}

/// Records a waiter whose cookie is its token.
fn aw(t: &mut Table, caller: Pid, target: Target, token: u32) -> Result<Option<u32>, Error> {
    t.add_waiter(caller, target, token, u64::from(token))
}

#[test]
fn init_is_pid_1_and_children_get_fresh_pids() {
    let mut t = Table::new();
    assert_eq!(t.get(INIT).unwrap().ppid, 0);
    let (a, _) = t.insert(INIT, "tests").unwrap();
    let (b, _) = t.insert(a, "child").unwrap();
    assert_eq!((a, b), (2, 3));
    assert_eq!(t.ppid(b), Some(a));
    assert_eq!(t.get(b).unwrap().name(), "child");
    assert_eq!(t.insert(99, "x"), Err(Error::NoSuchProcess));
}

#[test]
fn exit_status_reaches_the_parent_once() {
    let mut t = Table::new();
    let (p, _) = t.insert(INIT, "p").unwrap();
    let (c, _) = t.insert(p, "c").unwrap();
    assert_eq!(t.wait(p, Target::Pid(c)).unwrap().0, None);
    t.end(c, Ended::Exited(42)).unwrap();
    assert_eq!(t.get(c).unwrap().state, State::Zombie(Ended::Exited(42)));
    assert_eq!(
        t.wait(p, Target::Any).unwrap().0,
        Some((c, Ended::Exited(42)))
    );
    assert_eq!(t.wait(p, Target::Any).unwrap_err(), Error::NoChild);
    assert!(t.get(c).is_none());
    // An end is recorded once.
    assert_eq!(t.end(c, Ended::Killed).unwrap_err(), Error::NoSuchProcess);
}

#[test]
fn waitpid_of_a_non_child_a_bogus_pid_or_init_is_no_child() {
    let mut t = Table::new();
    let (a, _) = t.insert(INIT, "a").unwrap();
    let (b, _) = t.insert(INIT, "b").unwrap();
    let (bc, _) = t.insert(b, "bc").unwrap();
    for target in [
        Target::Pid(bc),
        Target::Pid(12345),
        Target::Pid(INIT),
        Target::Pid(a),
    ] {
        assert_eq!(t.wait(a, target).unwrap_err(), Error::NoChild);
        assert_eq!(aw(&mut t, a, target, 7).unwrap_err(), Error::NoChild);
    }
    assert_eq!(t.wait(a, Target::Any).unwrap_err(), Error::NoChild);
}

#[test]
fn a_blocked_waiter_is_woken_exactly_once() {
    let mut t = Table::new();
    let (p, _) = t.insert(INIT, "p").unwrap();
    let (c1, _) = t.insert(p, "c1").unwrap();
    let (c2, _) = t.insert(p, "c2").unwrap();
    aw(&mut t, p, Target::Pid(c2), 10).unwrap();
    aw(&mut t, p, Target::Any, 11).unwrap();
    let out = t.end(c1, Ended::Exited(1)).unwrap();
    assert_eq!(delivered(&out.released), vec![(11, c1, Ended::Exited(1))]);
    let out = t.end(c2, Ended::Faulted(14)).unwrap();
    assert_eq!(delivered(&out.released), vec![(10, c2, Ended::Faulted(14))]);
    assert_eq!(t.waiters(), 0);
    // Both were reaped for their waiters: no zombie left.
    assert!(t.get(c1).is_none() && t.get(c2).is_none());
    assert_eq!(t.wait(p, Target::Any).unwrap_err(), Error::NoChild);
}

/// forku: an end goes to one waiter, one for that PID before a wait-any;
/// a wait-any stays while another child runs, and is asked again when the
/// last one went to someone else.
#[test]
fn an_end_is_delivered_to_one_waiter_pid_first() {
    let mut t = Table::new();
    let (p, _) = t.insert(INIT, "p").unwrap();
    let (c, _) = t.insert(p, "c").unwrap();
    let (d, _) = t.insert(p, "d").unwrap();
    aw(&mut t, p, Target::Any, 6).unwrap();
    aw(&mut t, p, Target::Pid(c), 5).unwrap();
    aw(&mut t, p, Target::Pid(c), 4).unwrap();
    let out = t.end(c, Ended::Killed).unwrap();
    assert_eq!(delivered(&out.released), vec![(5, c, Ended::Killed)]);
    // The other waiter for c asks again (and finds no child c); the
    // wait-any still has d.
    assert_eq!(woken(&out.released), vec![5, 4]);
    assert_eq!(t.waiters(), 1);
    aw(&mut t, p, Target::Pid(d), 7).unwrap();
    let out = t.end(d, Ended::Exited(2)).unwrap();
    assert_eq!(delivered(&out.released), vec![(7, d, Ended::Exited(2))]);
    // d was the last child: the wait-any is asked again.
    let mut w = woken(&out.released);
    w.sort();
    assert_eq!(w, vec![6, 7]);
    assert_eq!(t.waiters(), 0);
    assert_eq!(t.wait(p, Target::Any).unwrap_err(), Error::NoChild);
}

/// forku: a cancelled waiter is never told; the end then leaves a zombie
/// for a later wait. A cancel after the delivery finds nothing (the
/// client reads its notification instead).
#[test]
fn a_cancelled_waiter_is_not_told_and_a_late_cancel_finds_nothing() {
    let mut t = Table::new();
    let (p, _) = t.insert(INIT, "p").unwrap();
    let (q, _) = t.insert(INIT, "q").unwrap();
    let (c, _) = t.insert(p, "c").unwrap();
    let (d, _) = t.insert(p, "d").unwrap();
    t.add_waiter(p, Target::Pid(c), 20, 900).unwrap();
    // Only the caller's own, by its cookie.
    assert_eq!(t.cancel_waiter(q, 900), None);
    assert_eq!(t.cancel_waiter(p, 901), None);
    assert_eq!(t.cancel_waiter(p, 900), Some(20));
    assert_eq!(t.cancel_waiter(p, 900), None);
    let out = t.end(c, Ended::Exited(9)).unwrap();
    assert!(out.released.is_empty());
    assert_eq!(t.get(c).unwrap().state, State::Zombie(Ended::Exited(9)));
    assert_eq!(
        t.wait(p, Target::Pid(c)).unwrap().0,
        Some((c, Ended::Exited(9)))
    );
    t.add_waiter(p, Target::Pid(d), 21, 901).unwrap();
    let out = t.end(d, Ended::Exited(1)).unwrap();
    assert_eq!(delivered(&out.released), vec![(21, d, Ended::Exited(1))]);
    assert_eq!(t.cancel_waiter(p, 901), None);
}

#[test]
fn an_exec_drops_the_old_images_waiters_and_the_new_image_reaps_the_child() {
    let mut t = Table::new();
    let (p, _) = t.insert(INIT, "p").unwrap();
    let (c, _) = t.insert(p, "c").unwrap();
    let (d, _) = t.insert(p, "d").unwrap();
    // The old image: one thread waits for c, another for any child.
    aw(&mut t, p, Target::Pid(c), 30).unwrap();
    aw(&mut t, p, Target::Any, 31).unwrap();
    // It execs: both are dropped, untold; the children stay p's.
    let out = t.replace_image(p);
    assert_eq!(dropped(&out), vec![30, 31]);
    assert!(woken(&out).is_empty());
    assert_eq!(t.waiters(), 0);
    assert_eq!(t.ppid(c), Some(p));
    // c's end is kept for the new image (no stale waiter reaps it).
    let out = t.end(c, Ended::Exited(4)).unwrap();
    assert!(out.released.is_empty(), "told a waiter of the old image");
    assert_eq!(
        t.wait(p, Target::Pid(c)).unwrap().0,
        Some((c, Ended::Exited(4)))
    );
    // The new image's own waiter gets d's end.
    aw(&mut t, p, Target::Pid(d), 32).unwrap();
    let out = t.end(d, Ended::Killed).unwrap();
    assert_eq!(delivered(&out.released), vec![(32, d, Ended::Killed)]);
    // Not running: nothing.
    assert!(t.replace_image(d).is_empty());
    assert!(t.replace_image(999).is_empty());
}

#[test]
fn a_process_whose_attach_failed_is_removed_without_a_status() {
    let mut t = Table::new();
    let (p, _) = t.insert(INIT, "p").unwrap();
    let (c, _) = t.insert(p, "c").unwrap();
    aw(&mut t, p, Target::Any, 3).unwrap();
    let (n, _) = t.insert(p, "new").unwrap();
    assert_eq!(t.remove_new(n), Ok(()));
    assert!(t.get(n).is_none());
    assert_eq!(t.waiters(), 1, "the wait-any was not told");
    // Not for a process with children or waiters, nor init.
    assert_eq!(t.remove_new(p), Err(Error::NoSuchProcess));
    assert_eq!(t.remove_new(INIT), Err(Error::NoSuchProcess));
    let out = t.end(c, Ended::Exited(0)).unwrap();
    assert_eq!(delivered(&out.released), vec![(3, c, Ended::Exited(0))]);
}

#[test]
fn orphans_go_to_init_and_their_zombies_are_reaped() {
    let mut t = Table::new();
    let (p, _) = t.insert(INIT, "p").unwrap();
    let (c, _) = t.insert(p, "c").unwrap();
    let (z, _) = t.insert(p, "z").unwrap();
    t.end(z, Ended::Exited(0)).unwrap();
    aw(&mut t, p, Target::Pid(c), 9).unwrap();
    let out = t.end(p, Ended::Exited(3)).unwrap();
    // p's parent is init: p itself and its zombie z are reaped at once.
    assert_eq!(out.reaped_for_init, 2);
    assert_eq!(dropped(&out.released), vec![9]);
    assert!(t.get(p).is_none() && t.get(z).is_none());
    assert_eq!(t.ppid(c), Some(INIT));
    // c ends later: init's child, reaped at once.
    let out = t.end(c, Ended::Exited(0)).unwrap();
    assert_eq!(out.reaped_for_init, 1);
    assert!(t.is_empty());
}

#[test]
fn init_cannot_end_and_cannot_be_killed() {
    let mut t = Table::new();
    let (a, _) = t.insert(INIT, "a").unwrap();
    assert_eq!(
        t.end(INIT, Ended::Killed).unwrap_err(),
        Error::NoSuchProcess
    );
    assert_eq!(t.may_kill(a, INIT), Err(Error::Denied));
    assert_eq!(t.may_kill(INIT, INIT), Err(Error::Denied));
}

#[test]
fn kill_reaches_descendants_only() {
    let mut t = Table::new();
    let (a, _) = t.insert(INIT, "a").unwrap();
    let (b, _) = t.insert(a, "b").unwrap();
    let (c, _) = t.insert(b, "c").unwrap();
    let (x, _) = t.insert(INIT, "x").unwrap();
    assert_eq!(t.may_kill(a, c), Ok(()));
    assert_eq!(t.may_kill(a, b), Ok(()));
    assert_eq!(t.may_kill(c, a), Err(Error::Denied));
    assert_eq!(t.may_kill(x, b), Err(Error::Denied));
    assert_eq!(t.may_kill(a, a), Err(Error::Denied));
    assert_eq!(t.may_kill(INIT, c), Ok(()));
    assert_eq!(t.may_kill(a, 999), Err(Error::NoSuchProcess));
    t.end(c, Ended::Exited(0)).unwrap();
    assert_eq!(t.may_kill(a, c), Err(Error::NoSuchProcess));
}

#[test]
fn the_table_and_the_waiters_are_bounded() {
    let mut t = Table::new();
    let (p, _) = t.insert(INIT, "p").unwrap();
    let mut kids = vec![];
    while let Ok((c, _)) = t.insert(p, "c") {
        kids.push(c);
    }
    assert_eq!(t.len(), MAX_PROCS);
    assert_eq!(t.insert(p, "c"), Err(Error::Full));
    for i in 0..MAX_WAITERS_PER_PROCESS as u32 {
        assert_eq!(aw(&mut t, p, Target::Any, i), Ok(None));
    }
    // At its bound a process's oldest waiter is replaced (whatever it
    // waited for), then the next oldest.
    assert_eq!(aw(&mut t, p, Target::Pid(kids[1]), 98), Ok(Some(0)));
    assert_eq!(aw(&mut t, p, Target::Any, 99), Ok(Some(1)));
    assert_eq!(t.waiters(), MAX_WAITERS_PER_PROCESS);
    // The end of kids[1] goes to the one waiter for it; the wait-anys stay
    // (other children run).
    let out = t.end(kids[1], Ended::Exited(0)).unwrap();
    assert_eq!(
        delivered(&out.released),
        vec![(98, kids[1], Ended::Exited(0))]
    );
    assert_eq!(woken(&out.released), vec![98]);
    assert_eq!(t.waiters(), MAX_WAITERS_PER_PROCESS - 1);
}

/// breakit finding 1: a process whose timed-out waits stay recorded (the
/// client cannot take a waiter back) keeps at most its bound, so every
/// other process can still block in `wait`.
#[test]
fn one_process_cannot_fill_the_waiters_of_all() {
    let mut t = Table::new();
    let (greedy, _) = t.insert(INIT, "greedy").unwrap();
    let (sleeper, _) = t.insert(greedy, "sleeper").unwrap();
    let (other, _) = t.insert(INIT, "other").unwrap();
    let (kid, _) = t.insert(other, "kid").unwrap();
    let mut handed_back = vec![];
    for token in 0..1000 {
        if let Some(old) = aw(&mut t, greedy, Target::Pid(sleeper), token).unwrap() {
            handed_back.push(old);
        }
    }
    assert_eq!(t.waiters(), MAX_WAITERS_PER_PROCESS);
    assert_eq!(handed_back.len(), 1000 - MAX_WAITERS_PER_PROCESS);
    assert_eq!(aw(&mut t, other, Target::Pid(kid), 5000), Ok(None));
    // Nor its own waits for another child.
    let (second, _) = t.insert(greedy, "second").unwrap();
    assert_eq!(
        aw(&mut t, greedy, Target::Pid(second), 6000),
        Ok(Some(1000 - MAX_WAITERS_PER_PROCESS as u32))
    );
    let out = t.end(kid, Ended::Exited(3)).unwrap();
    assert_eq!(woken(&out.released), vec![5000]);
}

#[test]
fn pids_wrap_around_and_skip_zombies() {
    let mut t = Table::with_pid_limit(0); // raised to MAX_PROCS + 2
    let limit = MAX_PROCS as Pid + 2;
    let (p, _) = t.insert(INIT, "p").unwrap();
    assert_eq!(p, 2);
    let (z, _) = t.insert(p, "z").unwrap();
    t.end(z, Ended::Exited(0)).unwrap(); // a zombie holding PID 3
    let mut seen = BTreeSet::new();
    for _ in 0..3 * limit {
        let (c, _) = t.insert(p, "c").unwrap();
        assert!(c >= 2 && c < limit);
        assert!(c != p && c != z, "pid {c} reused while held");
        seen.insert(c);
        t.end(c, Ended::Exited(0)).unwrap();
        t.wait(p, Target::Pid(c)).unwrap();
    }
    // Every free PID came round.
    assert_eq!(seen.len(), (limit - 4) as usize);
}

#[test]
fn long_names_are_cut_at_a_character_boundary() {
    let mut t = Table::new();
    let (a, _) = t.insert(INIT, "aaaaaaaaaaaaaaa\u{e9}b").unwrap();
    assert_eq!(t.get(a).unwrap().name(), "aaaaaaaaaaaaaaa");
    t.rename(a, "sh");
    assert_eq!(t.get(a).unwrap().name(), "sh");
}

#[derive(Clone, Debug)]
enum Op {
    Insert(usize),
    End(usize, u8),
    Wait(usize, Option<usize>),
    Block(usize, Option<usize>),
    Kill(usize, usize),
    Cancel(usize, u32),
    Exec(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..40usize).prop_map(Op::Insert),
        2 => (0..40usize, any::<u8>()).prop_map(|(a, b)| Op::End(a, b)),
        2 => (0..40usize, proptest::option::of(0..40usize)).prop_map(|(a, b)| Op::Wait(a, b)),
        2 => (0..40usize, proptest::option::of(0..40usize)).prop_map(|(a, b)| Op::Block(a, b)),
        1 => (0..40usize, 0..40usize).prop_map(|(a, b)| Op::Kill(a, b)),
        1 => (0..40usize, 0..60u32).prop_map(|(a, b)| Op::Cancel(a, b)),
        1 => (0..40usize).prop_map(Op::Exec),
    ]
}

proptest! {
    /// Random sequences never panic and keep every invariant: unique PIDs,
    /// live parents, init present, each waiter handed back exactly once,
    /// statuses delivered to the right parent.
    #[test]
    fn random_operation_sequences_keep_the_invariants(ops in proptest::collection::vec(op(), 1..300)) {
        let mut t = Table::with_pid_limit(200);
        // Every PID ever handed out, to pick operands from (dead ones too:
        // bogus PIDs are part of the input).
        let mut pids: Vec<Pid> = vec![INIT, 0, 7777];
        let mut outstanding: BTreeMap<u32, Pid> = BTreeMap::new();
        let mut next_token = 0u32;
        let mut ended: BTreeMap<Pid, (Pid, Ended)> = BTreeMap::new();
        let pick = |pids: &Vec<Pid>, i: usize| pids[i % pids.len()];
        let released_ok = |r: &Released, outstanding: &mut BTreeMap<u32, Pid>| {
            for (tok, _) in r.iter() {
                prop_assert!(outstanding.remove(&tok).is_some(), "token {} handed back twice", tok);
            }
            Ok(())
        };
        for o in ops {
            match o {
                Op::Insert(p) => {
                    let pp = pick(&pids, p);
                    if let Ok((c, _)) = t.insert(pp, "x") {
                        prop_assert!(!pids[3..].contains(&c) || t.iter().filter(|e| e.pid == c).count() == 1);
                        ended.remove(&c);
                        pids.push(c);
                    }
                }
                Op::End(p, s) => {
                    let pid = pick(&pids, p);
                    let st = match s % 3 { 0 => Ended::Exited(s as i32), 1 => Ended::Killed, _ => Ended::Faulted(s) };
                    let parent = t.ppid(pid);
                    let owners = outstanding.clone();
                    if let Ok(out) = t.end(pid, st) {
                        released_ok(&out.released, &mut outstanding)?;
                        let d = delivered(&out.released);
                        prop_assert!(d.len() <= 1, "one end delivered twice: {:?}", d);
                        if let Some(&(tok, dpid, dst)) = d.first() {
                            // To a waiter of its parent, with its status; it
                            // is reaped (no zombie).
                            prop_assert_eq!((dpid, dst), (pid, st));
                            prop_assert_eq!(Some(owners[&tok]), parent);
                            prop_assert!(t.get(pid).is_none());
                        } else if let Some(pp) = parent {
                            ended.insert(pid, (pp, st));
                        }
                    }
                }
                Op::Wait(p, c) => {
                    let caller = pick(&pids, p);
                    let target = c.map_or(Target::Any, |c| Target::Pid(pick(&pids, c)));
                    if let Ok((got, rel)) = t.wait(caller, target) {
                        released_ok(&rel, &mut outstanding)?;
                        if let Some((pid, st)) = got {
                            let (_, want) = ended.remove(&pid).expect("reaped a pid that never ended");
                            prop_assert_eq!(st, want);
                            prop_assert!(t.get(pid).is_none());
                        }
                    }
                }
                Op::Block(p, c) => {
                    let caller = pick(&pids, p);
                    let target = c.map_or(Target::Any, |c| Target::Pid(pick(&pids, c)));
                    if let Ok(replaced) = aw(&mut t, caller, target, next_token) {
                        if let Some(old) = replaced {
                            prop_assert_eq!(outstanding.remove(&old), Some(caller), "replaced a waiter not the caller's");
                        }
                        outstanding.insert(next_token, caller);
                        next_token += 1;
                    }
                }
                Op::Cancel(p, tok) => {
                    let caller = pick(&pids, p);
                    // Cookies are tokens here: only the caller's own come back.
                    let mine = outstanding.get(&tok) == Some(&caller);
                    match t.cancel_waiter(caller, u64::from(tok)) {
                        Some(got) => {
                            prop_assert!(mine && got == tok, "cancelled {} for {}", got, caller);
                            outstanding.remove(&tok);
                        }
                        None => prop_assert!(!mine, "waiter {} of {} not cancelled", tok, caller),
                    }
                }
                Op::Exec(p) => {
                    // Exec: the image's waiters dropped untold, only its own.
                    let pid = pick(&pids, p);
                    let out = t.replace_image(pid);
                    prop_assert!(woken(&out).is_empty(), "an exec told a waiter");
                    for tok in dropped(&out) {
                        prop_assert_eq!(outstanding.get(&tok), Some(&pid), "dropped another's waiter");
                    }
                    released_ok(&out, &mut outstanding)?;
                    prop_assert!(!outstanding.values().any(|&o| o == pid), "a waiter of the old image stayed");
                }
                Op::Kill(a, b) => {
                    let (a, b) = (pick(&pids, a), pick(&pids, b));
                    if t.may_kill(a, b).is_ok() {
                        prop_assert!(b != INIT);
                        prop_assert!(a == INIT || t.is_ancestor(a, b));
                    }
                }
            }
            // Invariants.
            prop_assert_eq!(t.get(INIT).map(|p| p.state), Some(State::Running));
            let live: Vec<Pid> = t.iter().map(|p| p.pid).collect();
            let uniq: BTreeSet<Pid> = live.iter().copied().collect();
            prop_assert_eq!(uniq.len(), live.len());
            for p in t.iter() {
                if p.pid != INIT {
                    prop_assert!(t.get(p.ppid).is_some_and(|q| q.state == State::Running),
                        "pid {} has a dead parent {}", p.pid, p.ppid);
                    // init never keeps zombies.
                    prop_assert!(!(p.ppid == INIT && p.state != State::Running));
                }
            }
            prop_assert_eq!(t.waiters(), outstanding.len());
            prop_assert!(t.len() <= MAX_PROCS && t.waiters() <= MAX_WAITERS);
            // The index (forkperf2): a row holds only waiters of the process
            // in its slot, running, each for a running child of it (so a
            // reap or an end finds every waiter it must wake in the parent's
            // row); an empty slot has an empty row.
            for (i, row) in t.waiters.iter().enumerate() {
                for w in row.iter().flatten() {
                    let owner = t.at(i);
                    prop_assert!(owner.is_some_and(|p| p.pid == w.parent && p.state == State::Running),
                        "waiter {:?} in the row of slot {} ({:?})", w, i, owner.map(|p| p.pid));
                    prop_assert!(t.iter().any(|c| c.ppid == w.parent && c.state == State::Running && w.target.matches(c.pid)),
                        "waiter {:?} has no running child to wait for", w);
                }
            }
        }
        // End everything (children before parents is not needed: orphans go
        // to init): every waiter comes back exactly once, the table empties.
        loop {
            let running: Vec<Pid> = t.iter().filter(|p| p.pid != INIT && p.state == State::Running).map(|p| p.pid).collect();
            if running.is_empty() { break; }
            for pid in running {
                if let Ok(out) = t.end(pid, Ended::Killed) {
                    released_ok(&out.released, &mut outstanding)?;
                }
            }
        }
        prop_assert!(outstanding.is_empty(), "waiters never handed back: {:?}", outstanding);
        prop_assert!(t.is_empty(), "left: {:?}", t.iter().map(|p| p.pid).collect::<Vec<_>>());
    }
}

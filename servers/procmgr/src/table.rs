//! The process table: PIDs, parent and child, running and zombie, exit
//! statuses, waiters. Pure logic with no syscalls (the server in `main.rs`
//! holds the kernel handles beside it), host-tested and property-tested.
//!
//! # Invariants
//! - PID 1 is init, always present, always running, its own root (parent
//!   0). It never waits through procmgr, so its zombie children are reaped
//!   at once (orphans re-parented to it included).
//! - A PID names at most one entry; a PID is not handed out again while any
//!   entry (running or zombie) holds it. PIDs run from 2 up to the limit and
//!   wrap around to 2, skipping those in use.
//! - Every entry's parent is a live (running) entry: a process that ends
//!   hands its children to init first.
//! - A waiter is recorded only for a running parent that has a running
//!   child it could wait for; it is handed back exactly once: delivered
//!   (a matching child ended: it is reaped at once for this waiter, and
//!   the waiter is handed back with its PID and status), woken to ask
//!   again (another waiter got that child, the child was reaped by
//!   someone else, or the waiter was replaced at its process's bound),
//!   cancelled by its own process, or dropped when that process ends.
//! - An end with a matching waiter never leaves a zombie: the status goes
//!   to exactly one waiter (one for that PID first, else the oldest
//!   wait-any), so a wait is one request and one notification wait
//!   (forku: the second `WaitOn` that reaped cost ~9,200 instructions).
//! - Waiters are kept in the row of the waiting process's slot
//!   (`waiters[slot(parent)]`, [`MAX_WAITERS_PER_PROCESS`] each). A waiter
//!   names a child of its process (`Pid(c)`: `c`'s parent is the waiter's
//!   process; `Any`: any child of it); a child changes parent only when its
//!   parent ends, which drops that row. So the waiters a reap or an end
//!   can wake all sit in one row, the row of the ended or reaped process's
//!   parent, and no operation scans the whole pool (forkperf2: the merged
//!   512-entry pool, scanned five times per fork-exit-wait, cost ~10,000
//!   instructions). A slot's row is empty when the slot is (re)filled.
//! - Every failure is an [`Error`]; nothing panics, whatever the sequence.

use abi::status::Ended;

/// A process id (for display and for naming a child in `waitpid`/`kill`;
/// authority is the badge of the caller's procmgr endpoint).
pub type Pid = u32;
/// init's PID.
pub const INIT: Pid = 1;
/// Most entries, running or zombie, init included.
pub const MAX_PROCS: usize = 128;
/// Most blocked waiters one process may have recorded at once (breakit:
/// a waiter whose client timed out stays recorded, so without a bound per
/// process one process polling `wait` with a timeout filled a pool shared
/// by all). At the bound a new waiter replaces (wakes) the process's
/// oldest: a timed-out client's stale waiter goes, a live thread woken
/// that way asks again (more than this many threads of one process blocked
/// in `wait` at once keep waking each other: they spin, correctly).
pub const MAX_WAITERS_PER_PROCESS: usize = 4;
/// Most blocked waiters at once: every process at its own bound, so the
/// pool never fills before a process's share does.
pub const MAX_WAITERS: usize = MAX_PROCS * MAX_WAITERS_PER_PROCESS;
/// The most waiters one table operation hands back ([`Released`]).
pub const RELEASED_MAX: usize = 4 * MAX_WAITERS_PER_PROCESS;
/// PIDs are below this (wrapping to 2).
pub const PID_LIMIT: Pid = 1 << 15;
/// Bytes of a program name kept.
pub const NAME_BYTES: usize = 16;

/// Why an operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The table holds [`MAX_PROCS`] entries.
    Full,
    /// [`MAX_WAITERS`] are recorded in all (cannot happen while each
    /// process keeps to [`MAX_WAITERS_PER_PROCESS`]).
    TooManyWaiters,
    /// No such process (or it is not running).
    NoSuchProcess,
    /// The caller has no such child (none at all, for `wait(any)`).
    NoChild,
    /// The caller may not do this to that process.
    Denied,
}

/// Whether an entry runs or waits to be reaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Running (or not yet started).
    Running,
    /// Ended; its parent has not reaped it yet.
    Zombie(Ended),
}

/// One process.
#[derive(Clone, Copy, Debug)]
pub struct Proc {
    /// Its PID.
    pub pid: Pid,
    /// Its parent's PID (0 for init).
    pub ppid: Pid,
    /// Running or zombie.
    pub state: State,
    name: [u8; NAME_BYTES],
    name_len: usize,
}

impl Proc {
    /// The program's name (as given when it was registered, cut to
    /// [`NAME_BYTES`] at a character boundary).
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("")
    }

    fn running(&self) -> bool {
        self.state == State::Running
    }
}

/// Which child a wait is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Any child.
    Any,
    /// This child.
    Pid(Pid),
}

impl Target {
    fn matches(self, pid: Pid) -> bool {
        match self {
            Target::Any => true,
            Target::Pid(p) => p == pid,
        }
    }
}

/// A blocked wait: `parent` waits for `target`; `token` is the server's
/// (its copy of the waiter's notification), `cookie` the client's name for
/// it (what `CancelWait` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// The waiting process.
    pub parent: Pid,
    /// What it waits for.
    pub target: Target,
    /// The server's token for it.
    pub token: u32,
    /// The client's name for it (its own handle number of the
    /// notification): [`cancel_waiter`](Table::cancel_waiter) finds it by
    /// this. Not unique if a client says so twice: it only cancels its own.
    pub cookie: u64,
    /// When it was recorded (the table's counter): the oldest is replaced.
    age: u64,
}

/// How a waiter handed back is to be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Not at all, only released: its own process ended.
    Drop,
    /// Woken with no status: its child went elsewhere (reaped by another
    /// waiter or request) or it was replaced; a live client asks again.
    Again,
    /// Its wait is over: child `Pid` ended with this status and was reaped
    /// for it (no zombie is left).
    Delivered(Pid, Ended),
}

/// Waiters handed back by one operation, each with how it is to be told
/// ([`Wake`]). Each recorded waiter comes back exactly once.
///
/// Bounded by what one operation can release, not by the pool: `end`
/// drops the ended process's own waiters (at most
/// [`MAX_WAITERS_PER_PROCESS`]), delivers to or wakes its parent's (at most
/// as many) or,
/// when the parent is init, init's that named it (as many); reaping its
/// zombie children wakes only waiters their parent recorded, which are the
/// ended process's own, already dropped. `wait` reaps one zombie of the
/// caller's: the caller's waiters at most. A pool-sized array (4 KiB) made
/// procmgr's inlined server loop a 59 KiB frame that overflowed its 64 KiB
/// stack (`fork_exit_wait` in the merged tree); the proptest's
/// exactly-once check would see a release the bound dropped.
#[derive(Clone, Copy, Debug)]
pub struct Released {
    tokens: [(u32, Wake); RELEASED_MAX],
    n: usize,
}

impl Released {
    const fn new() -> Self {
        Released {
            tokens: [(0, Wake::Drop); RELEASED_MAX],
            n: 0,
        }
    }

    fn push(&mut self, token: u32, wake: Wake) {
        // At most RELEASED_MAX per operation (see the type's docs).
        debug_assert!(
            self.n < RELEASED_MAX,
            "one operation released more than its bound"
        );
        if let Some(slot) = self.tokens.get_mut(self.n) {
            *slot = (token, wake);
            self.n += 1;
        }
    }

    /// `(token, how)` for each released waiter.
    pub fn iter(&self) -> impl Iterator<Item = (u32, Wake)> + '_ {
        self.tokens[..self.n].iter().copied()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.n
    }

    /// None released.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// What `end` did.
#[derive(Clone, Copy, Debug)]
pub struct EndOutcome {
    /// The waiters released.
    pub released: Released,
    /// Zombies reaped on init's behalf (the process itself if init was its
    /// parent, its own zombie children, now init's): their count.
    pub reaped_for_init: usize,
}

/// The table.
pub struct Table {
    procs: [Option<Proc>; MAX_PROCS],
    /// Row `i`: the waiters recorded by the process in slot `i`.
    waiters: [[Option<Waiter>; MAX_WAITERS_PER_PROCESS]; MAX_PROCS],
    /// Counts recorded waiters (their `age`).
    clock: u64,
    next_pid: Pid,
    pid_limit: Pid,
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

impl Table {
    /// A table holding only init.
    pub const fn new() -> Self {
        Table::with_pid_limit(PID_LIMIT)
    }

    /// As [`new`](Table::new) with PIDs below `limit` (at least
    /// `MAX_PROCS + 2`, raised to it): for the wrap-around tests.
    pub const fn with_pid_limit(limit: Pid) -> Self {
        let min = MAX_PROCS as Pid + 2;
        let mut procs = [None; MAX_PROCS];
        procs[0] = Some(Proc {
            pid: INIT,
            ppid: 0,
            state: State::Running,
            name: *b"init\0\0\0\0\0\0\0\0\0\0\0\0",
            name_len: 4,
        });
        Table {
            procs,
            waiters: [[None; MAX_WAITERS_PER_PROCESS]; MAX_PROCS],
            clock: 0,
            next_pid: INIT + 1,
            pid_limit: if limit < min { min } else { limit },
        }
    }

    fn index(&self, pid: Pid) -> Option<usize> {
        if pid == 0 {
            return None;
        }
        self.procs
            .iter()
            .position(|p| p.is_some_and(|p| p.pid == pid))
    }

    /// The entry for `pid`.
    pub fn get(&self, pid: Pid) -> Option<&Proc> {
        self.index(pid).and_then(|i| self.procs[i].as_ref())
    }

    /// The slot `pid` lives in (the server keeps its handles per slot).
    pub fn slot(&self, pid: Pid) -> Option<usize> {
        self.index(pid)
    }

    /// The entry in slot `i`, if any.
    pub fn at(&self, i: usize) -> Option<&Proc> {
        self.procs.get(i).and_then(Option::as_ref)
    }

    /// Entries in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().flatten()
    }

    /// How many entries (init included).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Only init is left.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    /// Recorded waiters.
    pub fn waiters(&self) -> usize {
        self.waiters.iter().flatten().flatten().count()
    }

    /// Wakes the waiters in the row of slot `row` that `wakes` selects.
    fn wake_row(&mut self, row: usize, released: &mut Released, wakes: impl Fn(&Waiter) -> bool) {
        if let Some(ws) = self.waiters.get_mut(row) {
            for w in ws.iter_mut() {
                if w.as_ref().is_some_and(&wakes) {
                    if let Some(w) = w.take() {
                        released.push(w.token, Wake::Again);
                    }
                }
            }
        }
    }

    fn alloc_pid(&mut self) -> Option<Pid> {
        for _ in 0..self.pid_limit {
            let pid = self.next_pid;
            self.next_pid = if pid + 1 >= self.pid_limit {
                2
            } else {
                pid + 1
            };
            if self.index(pid).is_none() {
                return Some(pid);
            }
        }
        None
    }

    /// Records a new running process, child of `ppid` (running), named
    /// `name`: its PID and slot.
    pub fn insert(&mut self, ppid: Pid, name: &str) -> Result<(Pid, usize), Error> {
        if !self.get(ppid).is_some_and(Proc::running) {
            return Err(Error::NoSuchProcess);
        }
        let slot = self
            .procs
            .iter()
            .position(Option::is_none)
            .ok_or(Error::Full)?;
        let pid = self.alloc_pid().ok_or(Error::Full)?;
        let mut n = name.len().min(NAME_BYTES);
        while !name.is_char_boundary(n) {
            n -= 1;
        }
        let mut bytes = [0u8; NAME_BYTES];
        bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.procs[slot] = Some(Proc {
            pid,
            ppid,
            state: State::Running,
            name: bytes,
            name_len: n,
        });
        Ok((pid, slot))
    }

    /// Renames `pid` (exec).
    pub fn rename(&mut self, pid: Pid, name: &str) {
        if let Some(p) = self.index(pid).and_then(|i| self.procs[i].as_mut()) {
            let mut n = name.len().min(NAME_BYTES);
            while !name.is_char_boundary(n) {
                n -= 1;
            }
            p.name = [0; NAME_BYTES];
            p.name[..n].copy_from_slice(&name.as_bytes()[..n]);
            p.name_len = n;
        }
    }

    /// `pid`'s parent, if `pid` is running or a zombie.
    pub fn ppid(&self, pid: Pid) -> Option<Pid> {
        self.get(pid).map(|p| p.ppid)
    }

    /// Whether `anc` is a proper ancestor of `pid`.
    pub fn is_ancestor(&self, anc: Pid, pid: Pid) -> bool {
        let mut cur = pid;
        // The parent chain is acyclic (parents are older entries, init is
        // its own root); the bound only guards the loop.
        for _ in 0..MAX_PROCS {
            match self.ppid(cur) {
                Some(0) | None => return false,
                Some(p) if p == anc => return true,
                Some(p) => cur = p,
            }
        }
        false
    }

    /// Whether `caller` may kill `target`: init may kill any process but
    /// itself; any other process only its own running descendants.
    pub fn may_kill(&self, caller: Pid, target: Pid) -> Result<(), Error> {
        let t = self.get(target).ok_or(Error::NoSuchProcess)?;
        if !t.running() {
            return Err(Error::NoSuchProcess);
        }
        if target == INIT {
            return Err(Error::Denied);
        }
        if caller == INIT || self.is_ancestor(caller, target) {
            Ok(())
        } else {
            Err(Error::Denied)
        }
    }

    /// Frees `pid`'s entry and wakes the waiters that named it (all in
    /// its parent's row: see the module's invariants).
    fn reap(&mut self, pid: Pid, released: &mut Released) {
        let Some(i) = self.index(pid) else {
            return;
        };
        let parent = self.procs[i].map_or(0, |p| p.ppid);
        self.procs[i] = None;
        if let Some(row) = self.index(parent) {
            self.wake_row(row, released, |w| w.target == Target::Pid(pid));
        }
    }

    /// `pid` ended with `status`: its status is delivered to one of its
    /// parent's matching waiters and it is reaped (the others that named
    /// it ask again), or with none it becomes a zombie for its parent (or
    /// is reaped at once if that is init); its children go to init
    /// (zombies among them reaped), its own waiters are dropped. `NoSuchProcess` if it is not running (an end
    /// is recorded once) or is init.
    pub fn end(&mut self, pid: Pid, status: Ended) -> Result<EndOutcome, Error> {
        let i = self.index(pid).ok_or(Error::NoSuchProcess)?;
        let Some(me) = self.procs[i].filter(|p| p.running() && p.pid != INIT) else {
            return Err(Error::NoSuchProcess);
        };
        let mut out = EndOutcome {
            released: Released::new(),
            reaped_for_init: 0,
        };
        for w in self.waiters[i].iter_mut() {
            if let Some(w) = w.take() {
                out.released.push(w.token, Wake::Drop);
            }
        }
        // Orphans to init; the zombies among them are reaped at once.
        let mut zombies = [0 as Pid; MAX_PROCS];
        let mut nz = 0;
        for p in self.procs.iter_mut().flatten() {
            if p.ppid == pid {
                p.ppid = INIT;
                if !p.running() {
                    zombies[nz] = p.pid;
                    nz += 1;
                }
            }
        }
        for &z in &zombies[..nz] {
            self.reap(z, &mut out.released);
            out.reaped_for_init += 1;
        }
        if me.ppid == INIT {
            self.reap(pid, &mut out.released);
            out.reaped_for_init += 1;
            return Ok(out);
        }
        if let Some(row) = self.index(me.ppid) {
            if let Some(w) = self.deliverable(row, pid) {
                // Reaped for that waiter: the entry goes (its children
                // went to init above, it has no waiters), every other
                // waiter that named it asks again.
                out.released.push(w.token, Wake::Delivered(pid, status));
                self.procs[i] = None;
                // A wait-any with another running child to wait for stays.
                let more = self.iter().any(|p| p.ppid == me.ppid && p.running());
                self.wake_row(row, &mut out.released, |w| match w.target {
                    Target::Pid(p) => p == pid,
                    Target::Any => !more,
                });
                return Ok(out);
            }
        }
        if let Some(p) = self.procs[i].as_mut() {
            p.state = State::Zombie(status);
        }
        Ok(out)
    }

    /// Takes the waiter in row `row` that an end of `pid` is delivered to:
    /// the oldest for that PID, else the oldest wait-any.
    fn deliverable(&mut self, row: usize, pid: Pid) -> Option<Waiter> {
        let ws = self.waiters.get_mut(row)?;
        let rank = |w: &Waiter| (w.target == Target::Any, w.age);
        let k = ws
            .iter()
            .enumerate()
            .filter_map(|(k, w)| w.filter(|w| w.target.matches(pid)).map(|w| (k, rank(&w))))
            .min_by_key(|&(_, r)| r)?
            .0;
        ws[k].take()
    }

    /// `pid`'s image was replaced (`Exec`: same PID, same children, a new
    /// program): the old image's waiters are dropped (handed back to be
    /// released, never told: their notifications were the old image's, and
    /// nobody reads them). Kept, the oldest of them would take the status
    /// of the next child to end (`end` delivers to the oldest match) and
    /// reap it for nobody: the new image's own wait for that child would
    /// find no child (breaku, session 19). Empty if `pid` is not running.
    pub fn replace_image(&mut self, pid: Pid) -> Released {
        let mut out = Released::new();
        let running = self.get(pid).is_some_and(|p| p.running());
        if let (true, Some(i)) = (running, self.index(pid)) {
            for w in self.waiters[i].iter_mut() {
                if let Some(w) = w.take() {
                    out.push(w.token, Wake::Drop);
                }
            }
        }
        out
    }

    /// `caller` stops waiting: takes back its waiter named `cookie` (the
    /// token, to be closed unsignalled). `None` if it has none of that
    /// name: it was handed back already (delivered or woken: its signal is
    /// in the client's notification) or never recorded.
    pub fn cancel_waiter(&mut self, caller: Pid, cookie: u64) -> Option<u32> {
        let row = self.index(caller)?;
        let ws = &mut self.waiters[row];
        let k = ws
            .iter()
            .position(|w| w.is_some_and(|w| w.parent == caller && w.cookie == cookie))?;
        ws[k].take().map(|w| w.token)
    }

    /// Removes `pid`, just inserted and never started (its attach failed):
    /// no status to anyone, no waiter woken. `NoSuchProcess` unless it runs
    /// and has no children and no waiters (then nothing can name it).
    pub fn remove_new(&mut self, pid: Pid) -> Result<(), Error> {
        let i = self.index(pid).ok_or(Error::NoSuchProcess)?;
        let fresh = self.procs[i].is_some_and(|p| p.running() && p.pid != INIT)
            && self.waiters[i].iter().all(Option::is_none)
            && !self.iter().any(|p| p.ppid == pid);
        if !fresh {
            return Err(Error::NoSuchProcess);
        }
        self.procs[i] = None;
        Ok(())
    }

    /// `caller` waits for `target` without blocking: `Ok(Some((pid,
    /// status)))` reaps a zombie child, `Ok(None)` means a matching child
    /// still runs (block: [`add_waiter`](Table::add_waiter)), `NoChild` if
    /// there is none. Reaping may wake other waiters (returned).
    pub fn wait(
        &mut self,
        caller: Pid,
        target: Target,
    ) -> Result<(Option<(Pid, Ended)>, Released), Error> {
        let mut released = Released::new();
        let mut any = false;
        let mut zombie = None;
        for p in self.iter() {
            if p.ppid == caller && target.matches(p.pid) {
                any = true;
                if let State::Zombie(st) = p.state {
                    zombie = Some((p.pid, st));
                    break;
                }
            }
        }
        // init's zombies never wait: it has nothing to reap here.
        if !any || caller == INIT {
            return Err(Error::NoChild);
        }
        if let Some((pid, _)) = zombie {
            self.reap(pid, &mut released);
        }
        Ok((zombie, released))
    }

    /// Records that `caller` blocks waiting for `target` (after
    /// [`wait`](Table::wait) said `Ok(None)`); `token` comes back once in
    /// a [`Released`] or from [`cancel_waiter`](Table::cancel_waiter)
    /// (by `cookie`). When `caller` already has
    /// [`MAX_WAITERS_PER_PROCESS`] waiters, its oldest is replaced: that
    /// token is returned here, to be woken (handed back, like any released
    /// one).
    pub fn add_waiter(
        &mut self,
        caller: Pid,
        target: Target,
        token: u32,
        cookie: u64,
    ) -> Result<Option<u32>, Error> {
        let row = self
            .index(caller)
            .filter(|&i| self.procs[i].is_some_and(|p| p.running()))
            .ok_or(Error::NoSuchProcess)?;
        if caller == INIT {
            return Err(Error::NoChild);
        }
        let running_child = self
            .iter()
            .any(|p| p.ppid == caller && target.matches(p.pid) && p.running());
        if !running_child {
            return Err(Error::NoChild);
        }
        let ws = &mut self.waiters[row];
        let (slot, replaced) = match ws.iter().position(Option::is_none) {
            Some(slot) => (slot, None),
            // The row is full: its oldest goes.
            None => {
                let oldest = ws
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| w.map(|w| (i, w)))
                    .min_by_key(|(_, w)| w.age);
                match oldest {
                    Some((i, w)) => (i, Some(w.token)),
                    None => return Err(Error::TooManyWaiters),
                }
            }
        };
        self.clock += 1;
        ws[slot] = Some(Waiter {
            parent: caller,
            target,
            token,
            cookie,
            age: self.clock,
        });
        Ok(replaced)
    }
}

#[cfg(test)]
mod tests;

//! A process's handle table: small integers naming kernel objects, each with
//! rights and a badge. A process can use only what its table holds.
//!
//! # Handle numbers
//! A [`Handle`] is a `u32`; in a syscall register it is a `u64` whose upper
//! 32 bits must be zero ([`Handle::from_reg`]).
//!
//! ```text
//!  31                              10 9            0
//! +----------------------------------+--------------+
//! |  generation (22 bits, 1..=MAX)   | slot (10 b)  |
//! +----------------------------------+--------------+
//! ```
//! - `slot` indexes the table (so a table holds at most [`MAX_SLOTS`] = 1024).
//! - `generation` counts how often the slot was filled. It starts at 1, so the
//!   number 0 is never a handle (user code can use it as "none"). Every close
//!   bumps it, so a closed number, or one a thread kept after the slot was
//!   reused, no longer matches: [`HandleError::BadHandle`], never another object.
//! - A slot whose generation reaches [`MAX_GENERATION`] is retired for good
//!   instead of wrapping, so a number is never reused for a different object
//!   in the process's lifetime (about four million reuses of one slot; the
//!   table shrinks by one slot each time that happens).
//! - A number from another process indexes *this* process's table: at best it
//!   names nothing, at worst an object this process already holds. Numbers are
//!   not authority by themselves; the table is.
//!
//! # Rights
//! [`Rights`] are checked on every lookup ([`HandleTable::get`]). A duplicate
//! or a transfer can only keep or drop rights, never add them. `DUPLICATE`
//! allows copies (a `dup` in the own table, and a *copied* transfer);
//! `TRANSFER` allows the handle to leave the process at all (a move, or a copy
//! when `DUPLICATE` is held as well). The bits are declared once, in
//! [`abi::rights`]; [`Rights`] takes its values from there.
//!
//! # Memory
//! Slots live in a `Vec` that grows by doubling, fallibly (`try_reserve`), up
//! to the table's maximum: lookups, closes and duplicates into a free slot
//! never allocate, and a full table or a failed allocation is an error, never
//! a panic. [`HandleTable::reserve`] lets a transfer make room first so the
//! commit cannot fail half-way.
//!
//! # Locking (kernel side)
//! The table is plain data: the kernel keeps it behind the process's lock.
//! A transfer between two processes holds both tables' locks (in a fixed
//! order, e.g. by process id) from [`HandleTable::check_transfer`] to the last
//! [`HandleTable::install`]; see `docs/ipc.md`.

use alloc::vec::Vec;

bitflags::bitflags! {
    /// What a handle allows. The bit values are part of the syscall ABI and
    /// come from its one declaration, [`abi::rights`] (see its docs for what
    /// each allows); the assertion below fails the build if a bit is added
    /// there and not here.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Rights: u32 {
        /// `call` / `send` on an endpoint.
        const SEND = abi::rights::SEND;
        /// `recv` / `reply_recv` on an endpoint.
        const RECV = abi::rights::RECV;
        /// `signal` on a notification.
        const SIGNAL = abi::rights::SIGNAL;
        /// Wait on / bind a notification; join a thread; wait for a process.
        const WAIT = abi::rights::WAIT;
        /// Kill a thread or process; give handles to a process.
        const KILL = abi::rights::KILL;
        /// Copy the handle: `dup` in the own table, or a copied transfer.
        const DUPLICATE = abi::rights::DUPLICATE;
        /// Let the handle leave the process in a message.
        const TRANSFER = abi::rights::TRANSFER;
        /// Edit a process's address space; map a memory object (issue 11).
        const MAP = abi::rights::MAP;
        /// Use a hardware object: grant/enable I/O ports, bind/ack an IRQ.
        const IO = abi::rights::IO;
    }
}

// Every bit the ABI declares is a `Rights` flag and no other.
const _: () = assert!(Rights::all().bits() == abi::rights::ALL);

/// Bits of a handle number that name the slot.
pub const SLOT_BITS: u32 = 10;
/// The most slots any table can have.
pub const MAX_SLOTS: usize = 1 << SLOT_BITS;
/// The highest generation; a slot that reaches it is retired.
pub const MAX_GENERATION: u32 = (1 << (32 - SLOT_BITS)) - 1;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

/// A handle number: slot and generation (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(u32);

impl Handle {
    /// The number for `slot` at `generation`.
    const fn new(slot: usize, generation: u32) -> Self {
        Handle((generation << SLOT_BITS) | slot as u32)
    }
    /// The raw number (what user space sees).
    pub const fn raw(self) -> u32 {
        self.0
    }
    /// A number taken from user space; any `u32` is accepted here and checked
    /// against the table on use.
    pub const fn from_raw(raw: u32) -> Self {
        Handle(raw)
    }
    /// A number from a syscall register: the upper 32 bits must be zero.
    pub fn from_reg(reg: u64) -> Result<Self, HandleError> {
        u32::try_from(reg)
            .map(Handle)
            .map_err(|_| HandleError::BadHandle)
    }
    /// The slot index.
    pub const fn slot(self) -> usize {
        (self.0 & SLOT_MASK) as usize
    }
    /// The generation.
    pub const fn generation(self) -> u32 {
        self.0 >> SLOT_BITS
    }
}

/// Why a handle operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleError {
    /// The number names no live handle of this process (never was one,
    /// closed, or stale after reuse).
    BadHandle,
    /// The handle lacks a right the operation needs, or a duplicate asked
    /// for rights it does not have.
    PermissionDenied,
    /// A badge was asked for on a handle that already carries one (a client
    /// must not forge another client's badge).
    AlreadyBadged,
    /// The table is at its maximum size.
    TableFull,
    /// Growing the table failed.
    NoMemory,
    /// A transfer names more than [`MAX_TRANSFER`] handles or one twice.
    InvalidTransfer,
}

impl From<HandleError> for abi::Error {
    fn from(e: HandleError) -> Self {
        match e {
            HandleError::BadHandle => abi::Error::BadHandle,
            HandleError::PermissionDenied => abi::Error::PermissionDenied,
            HandleError::AlreadyBadged | HandleError::InvalidTransfer => {
                abi::Error::InvalidArgument
            }
            HandleError::TableFull | HandleError::NoMemory => abi::Error::NoMemory,
        }
    }
}

/// One live handle: the object, its rights and its badge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<O> {
    /// The object (the kernel uses a reference-counted pointer or an enum of
    /// them; the table only clones and drops it).
    pub object: O,
    /// What the handle allows.
    pub rights: Rights,
    /// Set when the handle was minted; 0 is "no badge". A server reads the
    /// badge of the handle a message was sent through.
    pub badge: u64,
}

#[derive(Debug)]
enum SlotState<O> {
    /// Free; the index of the next free slot (`u16::MAX` ends the list).
    Free(u16),
    Used(Entry<O>),
    /// Generation exhausted: never handed out again.
    Retired,
}

/// One slot. It keeps the whole number that names it now (its generation
/// and its own index, [`Handle::new`]) rather than the generation alone,
/// widened to a register's width (the padding after a `u32` was there
/// anyway), so a lookup compares the syscall register it was given as it
/// is ([`HandleTable::find_reg`]; entry2: the shift that took the
/// generation out of it and the test of the register's upper half were
/// 6 instructions of an IPC round trip, as measured).
#[derive(Debug)]
struct Slot<O> {
    /// `Handle::raw` of the number, zero-extended.
    number: u64,
    state: SlotState<O>,
}

impl<O> Slot<O> {
    /// The number that names the slot now.
    fn number(&self) -> Handle {
        Handle(self.number as u32)
    }
    /// How often the slot was filled.
    fn generation(&self) -> u32 {
        self.number().generation()
    }
    /// Names the slot `h` from now on.
    fn set_number(&mut self, h: Handle) {
        self.number = h.0 as u64;
    }
}

const NO_FREE: u16 = u16::MAX;

/// How one handle goes into a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferMode {
    /// The sender loses the handle. Needs `TRANSFER`.
    Move,
    /// The sender keeps it; the receiver gets a copy. Needs `TRANSFER` and
    /// `DUPLICATE`.
    Copy,
}

/// At most this many handles travel in one message.
pub const MAX_TRANSFER: usize = 4;

/// A per-process handle table.
///
/// # Invariants
/// - `slots.len() <= max`, `max <= MAX_SLOTS`.
/// - The free list links exactly the `Free` slots; `live` counts `Used` ones.
/// - A slot's generation is in `1..=MAX_GENERATION` and only grows.
#[derive(Debug)]
pub struct HandleTable<O> {
    slots: Vec<Slot<O>>,
    free_head: u16,
    free_count: usize,
    live: usize,
    max: usize,
}

impl<O: Clone> HandleTable<O> {
    /// An empty table that can grow to `max` handles (clamped to
    /// [`MAX_SLOTS`]). Allocates nothing until the first insert.
    pub const fn new(max: usize) -> Self {
        HandleTable {
            slots: Vec::new(),
            free_head: NO_FREE,
            free_count: 0,
            live: 0,
            max: if max > MAX_SLOTS { MAX_SLOTS } else { max },
        }
    }

    /// Live handles.
    pub fn len(&self) -> usize {
        self.live
    }

    /// No live handles.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The most handles this table may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Makes sure `n` more handles can be inserted without failing: grows the
    /// table (fallibly) if needed.
    pub fn reserve(&mut self, n: usize) -> Result<(), HandleError> {
        if self.free_count >= n {
            return Ok(());
        }
        let needed = self.slots.len() + (n - self.free_count);
        if needed > self.max {
            return Err(HandleError::TableFull);
        }
        // Double (at least 8) so growth is amortised, capped at `max`.
        let target = needed.max(self.slots.len() * 2).max(8).min(self.max);
        self.slots
            .try_reserve_exact(target - self.slots.len())
            .map_err(|_| HandleError::NoMemory)?;
        // The new slots chain in index order in front of the old free list.
        let first_new = self.slots.len();
        for i in first_new..target {
            let next = if i + 1 < target {
                (i + 1) as u16
            } else {
                self.free_head
            };
            self.slots.push(Slot {
                number: Handle::new(i, 1).0 as u64,
                state: SlotState::Free(next),
            });
        }
        self.free_head = first_new as u16;
        self.free_count += target - first_new;
        Ok(())
    }

    /// Inserts a new handle and returns its number.
    pub fn insert(&mut self, entry: Entry<O>) -> Result<Handle, HandleError> {
        self.reserve(1)?;
        Ok(self.install(entry))
    }

    /// Inserts into a free slot that [`reserve`](Self::reserve) guaranteed.
    ///
    /// # Panics
    /// If no slot is free: a kernel bug (the caller skipped `reserve`), not
    /// something user input can cause.
    pub fn install(&mut self, entry: Entry<O>) -> Handle {
        let index = self.free_head as usize;
        let slot = &mut self.slots[index];
        let SlotState::Free(next) = slot.state else {
            unreachable!("handle free list corrupt");
        };
        self.free_head = next;
        self.free_count -= 1;
        self.live += 1;
        slot.state = SlotState::Used(entry);
        slot.number()
    }

    fn entry(&self, h: Handle) -> Result<&Entry<O>, HandleError> {
        self.find(h).ok_or(HandleError::BadHandle)
    }

    /// The entry `h` names, if any (no rights checked): [`get`](Self::get)
    /// without a rights test or an error to make.
    pub fn find(&self, h: Handle) -> Option<&Entry<O>> {
        self.find_reg(h.0 as u64)
    }

    /// [`find`](Self::find) for a number straight from a syscall register:
    /// a register with any of its upper 32 bits set names nothing (as
    /// [`Handle::from_reg`] refuses it), found by the one compare of the
    /// slot's number with the whole register. For a caller that tests its
    /// good case as one condition and tells refusals apart out of line
    /// (the kernel's IPC lookup).
    #[inline(always)]
    pub fn find_reg(&self, reg: u64) -> Option<&Entry<O>> {
        self.find_reg_if(reg, |_| true)
    }

    /// [`find_reg`](Self::find_reg) of an entry `kind` accepts (`None`
    /// when it does not): for a `kind` that matches one variant of the
    /// object's enum, the slot's "live" test and the variant's are then
    /// one compare of the discriminant the two share (the state's niche),
    /// where a test of the kind after `find_reg` left them two (cut28l:
    /// the kernel's IPC lookup, 2 instructions a side). `kind` runs on a
    /// live entry only; the entry is then read again (the same load)
    /// rather than passed through, which is what lets the compiler fold
    /// the two tests: `kind` should be a `matches!` on the object alone.
    #[inline(always)]
    pub fn find_reg_if(&self, reg: u64, kind: impl FnOnce(&Entry<O>) -> bool) -> Option<&Entry<O>> {
        let slot = self.slots.get(reg as usize & SLOT_MASK as usize)?;
        if slot.number != reg {
            return None;
        }
        let accepted = match &slot.state {
            SlotState::Used(e) => kind(e),
            _ => false,
        };
        if !accepted {
            return None;
        }
        match &slot.state {
            SlotState::Used(e) => Some(e),
            _ => None,
        }
    }

    /// The entry `h` names, if it has every right in `required`.
    pub fn get(&self, h: Handle, required: Rights) -> Result<&Entry<O>, HandleError> {
        let e = self.entry(h)?;
        if e.rights.contains(required) {
            Ok(e)
        } else {
            Err(HandleError::PermissionDenied)
        }
    }

    /// Closes `h`; returns its entry so the caller drops the object (and
    /// updates e.g. the endpoint's receiver count) outside the table lock.
    pub fn close(&mut self, h: Handle) -> Result<Entry<O>, HandleError> {
        self.entry(h)?;
        let index = h.slot();
        let slot = &mut self.slots[index];
        let (new_state, retired) = if slot.generation() == MAX_GENERATION {
            (SlotState::Retired, true)
        } else {
            let next = Handle::new(index, slot.generation() + 1);
            slot.set_number(next);
            (SlotState::Free(self.free_head), false)
        };
        let SlotState::Used(entry) = core::mem::replace(&mut slot.state, new_state) else {
            unreachable!("checked above");
        };
        if !retired {
            self.free_head = index as u16;
            self.free_count += 1;
        }
        self.live -= 1;
        Ok(entry)
    }

    /// A new handle to the same object with `rights` (a subset of the
    /// source's) and, if `badge` is given, that badge (only on an unbadged
    /// source). Needs `DUPLICATE` on the source.
    pub fn duplicate(
        &mut self,
        h: Handle,
        rights: Rights,
        badge: Option<u64>,
    ) -> Result<Handle, HandleError> {
        let src = self.get(h, Rights::DUPLICATE)?;
        if !src.rights.contains(rights) {
            return Err(HandleError::PermissionDenied);
        }
        let badge = match badge {
            None => src.badge,
            Some(b) if src.badge == 0 => b,
            Some(_) => return Err(HandleError::AlreadyBadged),
        };
        let entry = Entry {
            object: src.object.clone(),
            rights,
            badge,
        };
        self.insert(entry)
    }

    /// Checks that every `(handle, mode)` may be transferred: distinct live
    /// handles with the rights their mode needs. Changes nothing.
    pub fn check_transfer(&self, specs: &[(Handle, TransferMode)]) -> Result<(), HandleError> {
        if specs.len() > MAX_TRANSFER {
            return Err(HandleError::InvalidTransfer);
        }
        for (i, (h, mode)) in specs.iter().enumerate() {
            if specs[..i].iter().any(|(o, _)| o == h) {
                return Err(HandleError::InvalidTransfer);
            }
            let need = match mode {
                TransferMode::Move => Rights::TRANSFER,
                TransferMode::Copy => Rights::TRANSFER | Rights::DUPLICATE,
            };
            self.get(*h, need)?;
        }
        Ok(())
    }

    /// Takes the entries for a transfer that [`check_transfer`] accepted:
    /// moved handles are closed here, copied ones cloned. All or nothing.
    ///
    /// [`check_transfer`]: Self::check_transfer
    pub fn take_transfer(
        &mut self,
        specs: &[(Handle, TransferMode)],
    ) -> Result<heapless::Vec<Entry<O>, MAX_TRANSFER>, HandleError> {
        self.check_transfer(specs)?;
        let mut out = heapless::Vec::new();
        for (h, mode) in specs {
            let e = match mode {
                TransferMode::Move => self.close(*h)?,
                TransferMode::Copy => self.get(*h, Rights::empty())?.clone(),
            };
            // Cannot fail: check_transfer bounded the count.
            let _ = out.push(e);
        }
        Ok(out)
    }

    /// Closes every live handle, passing each entry to `f` (process
    /// teardown). Generations advance as for [`close`](Self::close), so the
    /// table stays consistent and usable afterwards.
    pub fn close_all(&mut self, mut f: impl FnMut(Entry<O>)) {
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if matches!(slot.state, SlotState::Used(_)) {
                let h = slot.number();
                if let Ok(e) = self.close(h) {
                    f(e);
                }
            }
        }
    }
}

/// Moves or copies `specs` from `src` into `dst` (two processes' tables, both
/// locked by the caller). All or nothing: on error neither table changed.
/// Returns the numbers in `dst`, in `specs` order.
pub fn transfer_between<O: Clone>(
    src: &mut HandleTable<O>,
    dst: &mut HandleTable<O>,
    specs: &[(Handle, TransferMode)],
) -> Result<heapless::Vec<Handle, MAX_TRANSFER>, HandleError> {
    src.check_transfer(specs)?;
    dst.reserve(specs.len())?;
    let entries = src.take_transfer(specs)?;
    Ok(entries.into_iter().map(|e| dst.install(e)).collect())
}

/// [`transfer_between`] when sender and receiver are the same process.
pub fn transfer_within<O: Clone>(
    table: &mut HandleTable<O>,
    specs: &[(Handle, TransferMode)],
) -> Result<heapless::Vec<Handle, MAX_TRANSFER>, HandleError> {
    table.check_transfer(specs)?;
    // A moved handle frees its slot in the take before it is installed again,
    // so only copies need room.
    let copies = specs
        .iter()
        .filter(|(_, m)| *m == TransferMode::Copy)
        .count();
    table.reserve(copies)?;
    let entries = table.take_transfer(specs)?;
    Ok(entries.into_iter().map(|e| table.install(e)).collect())
}

#[cfg(test)]
mod lockfree_loom;
#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

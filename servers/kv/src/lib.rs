//! The key-value server's protocol and store: pure logic, host-tested. The
//! ring-3 loop is `main.rs` (libipc's `serve`); the README's "Writing a
//! server" walks through both.
//!
//! Keys and values are bytes, at most [`MAX_KEY`] and [`MAX_VALUE`] long;
//! the store holds at most [`MAX_ENTRIES`] pairs. Too long is
//! [`Reply::TooLong`], full is [`Reply::Full`]; neither changes the store.
//! A client may hand over a notification ([`Request::Watch`], a copy of
//! its handle sent in the message): every change signals it with
//! [`CHANGED`].
#![cfg_attr(not(test), no_std)]

use wire::{CopiedHandle, Handler};

/// Longest key, in bytes.
pub const MAX_KEY: usize = 32;
/// Longest value, in bytes.
pub const MAX_VALUE: usize = 512;
/// Most pairs held.
pub const MAX_ENTRIES: usize = 16;
/// Bytes each of the server's two buffers needs: the largest request (a
/// key and a value) and reply (a value).
pub const BUFFER: usize = 1024;
const _: () = assert!(MAX_KEY + MAX_VALUE <= BUFFER);
/// The bit a watcher's notification gets on every change.
pub const CHANGED: u64 = 1;

/// What the store needs from the kernel (a trait, so the host tests can
/// record it): signal the watcher, close a handle it no longer keeps.
pub trait Kernel {
    /// ORs `bits` into notification `ntf`.
    fn signal(&mut self, ntf: u32, bits: u64);
    /// Closes handle `h`.
    fn close(&mut self, h: u32);
}

wire::protocol! {
    /// The key-value protocol.
    pub protocol Kv<'a>;
    /// What clients ask.
    pub enum Request {
        /// Stores `value` under `key`: `Stored`, `TooLong` or `Full`.
        /// Idempotent (marked so: a client by name retries it after the
        /// server died): storing the same pair twice leaves the same store
        /// (only `replaced` can differ). `Delete` is not marked, so a
        /// client sees a death under it.
        Put = 1 (idempotent) => fn put { key: &'a [u8], value: &'a [u8] },
        /// The value under `key`: `Value` or `NotFound`.
        Get = 2 (idempotent) => fn get { key: &'a [u8] },
        /// Removes `key`: `Deleted` or `NotFound`.
        Delete = 3 => fn delete { key: &'a [u8] },
        /// How many pairs are held: `Count`.
        Count = 4 (idempotent) => fn count {},
        /// Ends the server: `Bye`, or `Denied` through a badged handle
        /// (only its owner's unbadged handle may).
        Shutdown = 5 => fn shutdown {},
        /// Signals `ntf` (a notification; the server gets a copy) on every
        /// change from now on: `Watching`. A previous watcher's copy is
        /// closed.
        Watch = 6 => fn watch { ntf: CopiedHandle },
    }
    /// What the server answers.
    pub enum Reply {
        /// Stored; `replaced` if the key had a value.
        Stored = 1 { replaced: bool },
        /// The value.
        Value = 2 { value: &'a [u8] },
        /// Removed.
        Deleted = 3 {},
        /// Pairs held, out of `capacity`.
        Count = 4 { entries: u64, capacity: u64 },
        /// No such key.
        NotFound = 5 {},
        /// No room for another pair.
        Full = 6 { capacity: u64 },
        /// The key or value is longer than allowed.
        TooLong = 7 { max_key: u64, max_value: u64 },
        /// Not allowed through this handle.
        Denied = 8 {},
        /// The server ends after this reply.
        Bye = 9 {},
        /// The notification is watched; `replaced` if one was before.
        Watching = 10 { replaced: bool },
    }
    /// A typed kv client.
    pub struct Client;
}

/// One pair.
#[derive(Clone, Copy)]
struct Slot {
    key: [u8; MAX_KEY],
    key_len: usize,
    value: [u8; MAX_VALUE],
    value_len: usize,
    used: bool,
}

const EMPTY: Slot = Slot {
    key: [0; MAX_KEY],
    key_len: 0,
    value: [0; MAX_VALUE],
    value_len: 0,
    used: false,
};

/// The store: a fixed array of slots (a server has no heap yet), and the
/// watcher's notification.
pub struct Store<K> {
    slots: [Slot; MAX_ENTRIES],
    watcher: Option<u32>,
    kernel: K,
    done: bool,
}

impl<K: Kernel> Store<K> {
    /// An empty store.
    pub const fn new(kernel: K) -> Self {
        Store {
            slots: [EMPTY; MAX_ENTRIES],
            watcher: None,
            kernel,
            done: false,
        }
    }

    /// The kernel side (tests inspect it).
    pub fn kernel(&mut self) -> &mut K {
        &mut self.kernel
    }

    fn changed(&mut self) {
        if let Some(n) = self.watcher {
            self.kernel.signal(n, CHANGED);
        }
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.used && &s.key[..s.key_len] == key)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Reply<'_> {
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Reply::TooLong {
                max_key: MAX_KEY as u64,
                max_value: MAX_VALUE as u64,
            };
        }
        let replaced = self.find(key);
        let Some(i) = replaced.or_else(|| self.slots.iter().position(|s| !s.used)) else {
            return Reply::Full {
                capacity: MAX_ENTRIES as u64,
            };
        };
        let s = &mut self.slots[i];
        s.key[..key.len()].copy_from_slice(key);
        s.value[..value.len()].copy_from_slice(value);
        (s.key_len, s.value_len, s.used) = (key.len(), value.len(), true);
        self.changed();
        Reply::Stored {
            replaced: replaced.is_some(),
        }
    }

    fn count(&self) -> u64 {
        self.slots.iter().filter(|s| s.used).count() as u64
    }
}

impl<K: Kernel> Handler<Kv> for Store<K> {
    fn handle<'r>(&'r mut self, badge: u64, req: Request<'r>) -> Reply<'r> {
        match req {
            Request::Put { key, value } => self.put(key, value),
            Request::Get { key } => match self.find(key) {
                Some(i) => Reply::Value {
                    value: &self.slots[i].value[..self.slots[i].value_len],
                },
                None => Reply::NotFound {},
            },
            Request::Delete { key } => match self.find(key) {
                Some(i) => {
                    self.slots[i].used = false;
                    self.changed();
                    Reply::Deleted {}
                }
                None => Reply::NotFound {},
            },
            Request::Count {} => Reply::Count {
                entries: self.count(),
                capacity: MAX_ENTRIES as u64,
            },
            Request::Shutdown {} if badge != 0 => Reply::Denied {},
            Request::Shutdown {} => {
                self.done = true;
                Reply::Bye {}
            }
            Request::Watch { ntf } => {
                let old = self.watcher.replace(ntf.0);
                if let Some(h) = old {
                    self.kernel.close(h);
                }
                Reply::Watching {
                    replaced: old.is_some(),
                }
            }
        }
    }

    fn done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests;

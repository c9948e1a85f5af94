//! Page budgets: the frames an address space, or a whole program, holds
//! against its limit.

use crate::mem::DirectMem;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::paging::{PhysMem, ENTRIES};

/// Frames held against a limit: one address space's, or a whole program's
/// (a program and every process it starts share one, see
/// `process::Account`). What is charged: every owned frame mapped into a user
/// space (anonymous memory, boot-image pages) and every page-table frame,
/// the PML4 included; lent (borrowed) frames are not.
pub struct PageBudget {
    used: AtomicU64,
    limit: u64,
}

impl PageBudget {
    /// An empty budget of `limit` pages.
    pub const fn new(limit: u64) -> PageBudget {
        PageBudget {
            used: AtomicU64::new(0),
            limit,
        }
    }

    /// Charges `n` pages unless that would pass the limit.
    pub fn try_charge(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                u.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    /// Charges `n` pages already taken (page tables found allocated after a
    /// map: at most three per page mapped, so the limit is passed by at most
    /// that much before the next `try_charge` refuses).
    pub(super) fn force_charge(&self, n: u64) {
        self.used.fetch_add(n, Ordering::SeqCst);
    }

    /// Returns `n` pages. Returning more than was charged is a kernel bug:
    /// logged, and the count stops at 0 (a wrapped count would refuse every
    /// later charge, NoMemory for good).
    pub fn uncharge(&self, n: u64) {
        if self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| u.checked_sub(n))
            .is_err()
        {
            log::error!("page budget: {n} pages returned, more than charged");
            self.used.store(0, Ordering::SeqCst);
        }
    }

    /// Pages charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }
}

/// [`DirectMem`] that counts the page-table frames it allocates and frees,
/// so an operation can charge them.
pub(super) struct CountingMem {
    pub(super) mem: DirectMem,
    pub(super) tables: i64,
}

impl PhysMem for CountingMem {
    fn table(&mut self, phys: u64) -> &mut [u64; ENTRIES] {
        self.mem.table(phys)
    }
    fn alloc_table(&mut self) -> Option<u64> {
        let t = self.mem.alloc_table();
        self.tables += t.is_some() as i64;
        t
    }
    fn free_table(&mut self, phys: u64) {
        self.tables -= 1;
        self.mem.free_table(phys)
    }
}

//! A per-CPU run queue with priorities: one FIFO per priority level and a bitmap
//! of non-empty levels, so picking the next thread is a `trailing_zeros` and a
//! pop. Round robin within a level comes from pushing a preempted thread to the
//! back of its level.
//!
//! Generic over the item type so the host tests use plain integers and the
//! kernel uses thread references.

use alloc::collections::VecDeque;

/// Priority levels: 0 is the highest.
pub const LEVELS: usize = 8;

/// The ready threads of one CPU.
pub struct RunQueue<T> {
    levels: [VecDeque<T>; LEVELS],
    nonempty: u8,
    len: usize,
}

impl<T> Default for RunQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> RunQueue<T> {
    /// An empty queue.
    pub const fn new() -> Self {
        RunQueue {
            levels: [const { VecDeque::new() }; LEVELS],
            nonempty: 0,
            len: 0,
        }
    }

    /// Appends `item` at `priority` (clamped to the lowest level).
    pub fn push(&mut self, item: T, priority: usize) {
        let p = priority.min(LEVELS - 1);
        self.levels[p].push_back(item);
        self.nonempty |= 1 << p;
        self.len += 1;
    }

    /// Takes the first item of the highest non-empty level.
    pub fn pop(&mut self) -> Option<T> {
        if self.nonempty == 0 {
            return None;
        }
        let p = self.nonempty.trailing_zeros() as usize;
        let item = self.levels[p].pop_front();
        if self.levels[p].is_empty() {
            self.nonempty &= !(1 << p);
        }
        self.len -= 1;
        item
    }

    /// Takes the first item, at any level from the lowest priority up, for which
    /// `pred` holds (work stealing takes what the victim would run last).
    pub fn steal(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<T> {
        for p in (0..LEVELS).rev() {
            if let Some(i) = self.levels[p].iter().position(&mut pred) {
                let item = self.levels[p].remove(i);
                if self.levels[p].is_empty() {
                    self.nonempty &= !(1 << p);
                }
                self.len -= 1;
                return item;
            }
        }
        None
    }

    /// The highest non-empty priority, if any.
    pub fn best_priority(&self) -> Option<usize> {
        (self.nonempty != 0).then(|| self.nonempty.trailing_zeros() as usize)
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_runs_first_and_levels_are_fifo() {
        let mut q = RunQueue::new();
        q.push(1, 3);
        q.push(2, 1);
        q.push(3, 3);
        q.push(4, 1);
        assert_eq!(q.len(), 4);
        assert_eq!(q.best_priority(), Some(1));
        assert_eq!(
            core::iter::from_fn(|| q.pop()).collect::<Vec<_>>(),
            vec![2, 4, 1, 3]
        );
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        assert_eq!(q.best_priority(), None);
    }

    #[test]
    fn out_of_range_priorities_clamp_to_the_lowest_level() {
        let mut q = RunQueue::new();
        q.push(9, 100);
        q.push(1, 0);
        assert_eq!(q.best_priority(), Some(0));
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.best_priority(), Some(LEVELS - 1));
        assert_eq!(q.pop(), Some(9));
    }

    #[test]
    fn round_robin_by_pushing_back() {
        let mut q = RunQueue::new();
        q.push('a', 2);
        q.push('b', 2);
        let mut order = Vec::new();
        for _ in 0..4 {
            let t = q.pop().unwrap();
            order.push(t);
            q.push(t, 2);
        }
        assert_eq!(order, vec!['a', 'b', 'a', 'b']);
    }

    #[test]
    fn steal_takes_lowest_priority_matching_item_and_keeps_counts() {
        let mut q = RunQueue::new();
        q.push(10, 0);
        q.push(20, 5);
        q.push(21, 5);
        assert_eq!(q.steal(|&x| x != 20), Some(21));
        assert_eq!(q.len(), 2);
        assert_eq!(q.steal(|&x| x > 100), None);
        assert_eq!(q.steal(|_| true), Some(20));
        assert_eq!(q.best_priority(), Some(0));
        assert_eq!(q.pop(), Some(10));
        assert!(q.is_empty());
    }
}

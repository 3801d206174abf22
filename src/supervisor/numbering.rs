//! `NODE_APP_INSTANCE` numbers of one app: the lowest free number for a new instance (PM2 fills
//! gaps), in O(log n) per instance, so starting N instances costs O(N log N), not O(N³).
//!
//! Owner: the coordinator, one per app. Must never hand out a number still in use.

use std::collections::BTreeSet;

#[derive(Debug, Default, Clone)]
pub struct Numbering {
    /// Every number below `next` is in use unless it is in `free`.
    next: u32,
    free: BTreeSet<u32>,
}

impl Numbering {
    /// The lowest number not in use, now taken.
    pub fn take(&mut self) -> u32 {
        if let Some(n) = self.free.pop_first() {
            return n;
        }
        let n = self.next;
        self.next += 1;
        n
    }

    /// `n` is no longer in use (its instance is gone).
    pub fn give_back(&mut self, n: u32) {
        if n + 1 == self.next {
            self.next = n;
            // Trailing free numbers shrink `next` too, so `free` only holds real gaps.
            while self.next > 0 && self.free.remove(&(self.next - 1)) {
                self.next -= 1;
            }
        } else if n < self.next {
            self.free.insert(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_number_first() {
        let mut n = Numbering::default();
        assert_eq!((0..4).map(|_| n.take()).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        n.give_back(1);
        n.give_back(0);
        assert_eq!(n.take(), 0);
        assert_eq!(n.take(), 1);
        assert_eq!(n.take(), 4);
        // Giving back the top numbers shrinks the range: no gap is remembered for them.
        n.give_back(4);
        n.give_back(2);
        n.give_back(3);
        assert!(n.free.is_empty() && n.next == 2, "{n:?}");
        assert_eq!(n.take(), 2);
    }

    #[test]
    fn many_instances_are_cheap() {
        let mut n = Numbering::default();
        for _ in 0..100_000 {
            n.take();
        }
        for i in (0..100_000).step_by(2) {
            n.give_back(i);
        }
        assert_eq!(n.take(), 0);
        assert_eq!(n.take(), 2);
    }
}

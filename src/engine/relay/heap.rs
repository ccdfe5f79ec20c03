//! The relay's time-ordered heap.
//!
//! Invariant: `pop` returns entries in (due, push order) order, so records
//! due at the same instant leave in the order they were parked. Sifting
//! moves only small keys; the items (records of a few hundred bytes) stay
//! put in a slab.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A heap entry: ordered by (due, seq), pointing at its record's slot.
#[derive(PartialEq, Eq)]
struct Key {
    due: Instant,
    seq: u64,
    slot: usize,
}
// Min-heap on (due, seq): BinaryHeap is a max-heap, so compare reversed.
impl Ord for Key {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// The relay's time-ordered heap of `T`.
pub(crate) struct SlabHeap<T> {
    keys: BinaryHeap<Key>,
    slab: Vec<Option<T>>,
    free: Vec<usize>,
    /// Push order, the tie-break between equal due times.
    next_seq: u64,
}

impl<T> Default for SlabHeap<T> {
    fn default() -> Self {
        SlabHeap {
            keys: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
        }
    }
}

impl<T> SlabHeap<T> {
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The earliest due time.
    pub(crate) fn peek_due(&self) -> Option<Instant> {
        self.keys.peek().map(|k| k.due)
    }

    pub(crate) fn push(&mut self, due: Instant, item: T) {
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slab.push(None);
                self.slab.len() - 1
            }
        };
        self.slab[slot] = Some(item);
        self.keys.push(Key {
            due,
            seq: self.next_seq,
            slot,
        });
    }

    /// Removes the earliest entry.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let k = self.keys.pop()?;
        self.free.push(k.slot);
        self.slab[k.slot].take()
    }

    /// Removes and returns all but the `keep` earliest of the entries
    /// `evictable` accepts (the others always stay), in no particular
    /// order. O(n): the caller batches its calls (see `Relay::evict_whole`).
    pub(crate) fn evict_latest(
        &mut self,
        keep: usize,
        evictable: impl Fn(Instant, &T) -> bool,
    ) -> Vec<(Instant, T)> {
        let slab = &self.slab;
        let (mut cand, mut stay): (Vec<Key>, Vec<Key>) =
            std::mem::take(&mut self.keys).into_iter().partition(|k| {
                slab[k.slot]
                    .as_ref()
                    .is_some_and(|item| evictable(k.due, item))
            });
        let room = keep.saturating_sub(stay.len());
        let mut out = Vec::new();
        if cand.len() > room {
            // (due, seq): of equal due times the later parked go first, so
            // the order kept whole is the order they leave in.
            if room > 0 {
                cand.select_nth_unstable_by_key(room, |k| (k.due, k.seq));
            }
            out.reserve(cand.len() - room);
            for k in cand.drain(room..) {
                self.free.push(k.slot);
                if let Some(item) = self.slab[k.slot].take() {
                    out.push((k.due, item));
                }
            }
        }
        stay.append(&mut cand);
        self.keys = BinaryHeap::from(stay);
        out
    }

    /// Keeps only the entries `f` accepts.
    pub(crate) fn retain(&mut self, f: impl Fn(&T) -> bool) {
        let slab = &mut self.slab;
        let free = &mut self.free;
        self.keys.retain(|k| {
            let keep = slab[k.slot].as_ref().is_some_and(&f);
            if !keep {
                slab[k.slot] = None;
                free.push(k.slot);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_by_due_time_then_push_order_and_retain_frees_slots() {
        let t0 = Instant::now();
        let mut h = SlabHeap::default();
        h.push(t0 + Duration::from_millis(5), "c");
        h.push(t0, "a");
        h.push(t0, "b");
        h.push(t0 + Duration::from_millis(1), "drop");
        h.retain(|s| *s != "drop");
        assert_eq!(h.len(), 3);
        assert_eq!(h.peek_due(), Some(t0));
        assert_eq!(h.pop(), Some("a"));
        assert_eq!(h.pop(), Some("b"));
        h.push(t0, "d"); // reuses a freed slot
        assert_eq!(h.pop(), Some("d"));
        assert_eq!(h.pop(), Some("c"));
        assert_eq!(h.pop(), None);
    }

    #[test]
    fn evict_latest_keeps_the_earliest_and_every_protected_entry() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut h = SlabHeap::default();
        for (ms, name) in [
            (5, "e"),
            (1, "b"),
            (9, "late-protected"),
            (0, "a"),
            (3, "c"),
            (3, "d"),
        ] {
            h.push(at(ms), name);
        }
        let mut out = h.evict_latest(4, |_, s| !s.ends_with("protected"));
        out.sort_by_key(|&(due, _)| due);
        // One place protected, so three of the five others stay; of the
        // two due at 3 ms the later pushed ("d") goes.
        assert_eq!(out, vec![(at(3), "d"), (at(5), "e")]);
        assert_eq!(h.len(), 4);
        let left: Vec<_> = std::iter::from_fn(|| h.pop()).collect();
        assert_eq!(left, ["a", "b", "c", "late-protected"]);
        // Fewer than `keep`: nothing goes; the slots are reused.
        h.push(at(1), "x");
        assert!(h.evict_latest(4, |_, _| true).is_empty());
        assert_eq!(h.pop(), Some("x"));
        assert!(h.evict_latest(0, |_, _| true).is_empty());
    }
}

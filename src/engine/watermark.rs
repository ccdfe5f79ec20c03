//! Per-partition offset watermarks.
//!
//! Invariant: the offset we commit for a partition is the lowest offset
//! still in flight (or, with nothing in flight, one past the highest offset
//! seen). Workers finish out of order; committing the highest finished
//! offset would skip an unfinished record on restart, i.e. lose it.

use std::collections::VecDeque;

/// Tracks records of one partition from dispatch to done.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    /// Dispatched offsets in ascending order with their done flag. The front
    /// is always unfinished (finished ones are popped), so the front is the
    /// watermark. Offsets need not be contiguous (compaction, control
    /// batches), only ascending.
    pending: VecDeque<(i64, bool)>,
    /// One past the highest offset seen.
    next: Option<i64>,
    /// What was last committed (or known committed).
    committed: Option<i64>,
    /// The first offset tracked.
    first: Option<i64>,
}

impl OffsetTracker {
    /// Registers a dispatched record. Offsets must arrive in ascending order;
    /// a lower or repeated offset (a re-fetch after a rewind) is ignored and
    /// reported as `false` so the caller does not dispatch it twice.
    pub(crate) fn track(&mut self, offset: i64) -> bool {
        if let Some(n) = self.next {
            if offset < n {
                return false;
            }
        }
        self.pending.push_back((offset, false));
        self.first.get_or_insert(offset);
        self.next = Some(offset.saturating_add(1));
        true
    }

    /// Marks `offset` done. Unknown offsets are ignored.
    pub(crate) fn done(&mut self, offset: i64) {
        // Completions mostly arrive near the front: search from there.
        let front = match self.pending.front() {
            Some(&(o, _)) => o,
            None => return,
        };
        if offset < front {
            return;
        }
        // Offsets are nearly always contiguous: try the direct index first.
        let guess = (offset - front) as usize;
        let idx = if self.pending.get(guess).is_some_and(|&(o, _)| o == offset) {
            Ok(guess)
        } else {
            self.pending.binary_search_by_key(&offset, |&(o, _)| o)
        };
        let idx = match idx {
            Ok(i) => i,
            Err(_) => return,
        };
        self.pending[idx].1 = true;
        while matches!(self.pending.front(), Some(&(_, true))) {
            self.pending.pop_front();
        }
    }

    /// Records in flight (dispatched, not done).
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.iter().filter(|(_, d)| !d).count()
    }

    /// The offset safe to commit: the lowest unfinished offset, or one past
    /// the highest seen. `None` before any record was seen.
    pub(crate) fn watermark(&self) -> Option<i64> {
        match self.pending.front() {
            Some(&(o, _)) => Some(o),
            None => self.next,
        }
    }

    /// The watermark if it moved since the last [`OffsetTracker::committed`].
    pub(crate) fn to_commit(&self) -> Option<i64> {
        let w = self.watermark()?;
        if self.committed.is_none_or(|c| w > c) {
            Some(w)
        } else {
            None
        }
    }

    /// The first offset read but not committed (where the next owner
    /// starts reading again), or `None` when everything read is committed.
    pub(crate) fn uncommitted_from(&self) -> Option<i64> {
        let next = self.next?;
        match self.committed {
            Some(c) if c >= next => None,
            Some(c) => Some(c),
            None => self.first,
        }
    }

    /// Where the group stands: the offset last committed (or known
    /// committed), else the watermark. `None` before any record was seen.
    #[cfg(feature = "metrics")]
    pub(crate) fn group_position(&self) -> Option<i64> {
        self.committed.or_else(|| self.watermark())
    }

    /// Notes that `offset` was committed.
    pub(crate) fn committed(&mut self, offset: i64) {
        self.committed = Some(self.committed.map_or(offset, |c| c.max(offset)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_never_passes_an_unfinished_record() {
        let mut t = OffsetTracker::default();
        assert_eq!(t.watermark(), None);
        for o in 10..20 {
            assert!(t.track(o));
        }
        // Finish everything but 12, out of order.
        for o in [19, 11, 15, 10, 13, 14, 16, 18, 17] {
            t.done(o);
        }
        assert_eq!(t.watermark(), Some(12));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.to_commit(), Some(12));
        t.committed(12);
        assert_eq!(t.to_commit(), None);
        t.done(12);
        assert_eq!(t.watermark(), Some(20));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.to_commit(), Some(20));
        assert_eq!(t.uncommitted_from(), Some(12));
        t.committed(20);
        assert_eq!(t.uncommitted_from(), None);
    }

    #[test]
    fn gaps_in_offsets_are_fine_and_repeats_are_refused() {
        let mut t = OffsetTracker::default();
        assert!(t.track(5));
        assert!(t.track(9));
        assert!(!t.track(9));
        assert!(!t.track(3));
        t.done(9);
        assert_eq!(t.watermark(), Some(5));
        t.done(7); // unknown: ignored
        t.done(5);
        assert_eq!(t.watermark(), Some(10));
    }

    #[test]
    fn random_completion_orders_match_a_reference_model() {
        let mut seed: u64 = 42;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let mut t = OffsetTracker::default();
            let n = 1 + rnd() % 60;
            let mut open: Vec<i64> = (0..n as i64).collect();
            for &o in &open {
                t.track(o);
            }
            while !open.is_empty() {
                let i = (rnd() % open.len() as u64) as usize;
                let o = open.swap_remove(i);
                t.done(o);
                let expect = open.iter().min().copied().unwrap_or(n as i64);
                assert_eq!(t.watermark(), Some(expect));
            }
        }
    }
}

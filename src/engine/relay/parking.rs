//! Where the relay keeps a parked record: whole in the time heap, or as
//! an index entry read again just before it is due (hybrid parking: whole
//! up to `max_parked`, the overflow indexed), and the pause backstop. The
//! invariants are in the parent module's notes and in `index.rs`.

use super::*;

impl Relay {
    /// Parks a tracked record: whole while the whole part has room; past
    /// it indexed when it is not due soon and due at or after the `cut`,
    /// else whole (`evict_whole` then moves the latest-due to the index).
    pub(super) fn place(
        &mut self,
        lease: Arc<Lease>,
        record: Record,
        plan: Plan,
        due: Instant,
        failures: u32,
    ) {
        if let Some(ix) = &mut self.index {
            if self.heap.len() < self.ctx.max_parked {
                // Room: whatever comes is kept whole, so the cut (which
                // bounds the whole records from above) no longer holds.
                self.cut = None;
            } else if matches!(plan, Plan::Retry(_)) // malformed: due now, whole
                && self.cut.is_some_and(|c| due >= c)
                && ix.wants(due)
                && ix.push(&lease, record.offset, due, failures)
            {
                return;
            }
        }
        self.heap.push(
            due,
            Parked {
                lease,
                record,
                plan,
                failures,
                #[cfg(feature = "metrics")]
                due,
            },
        );
    }

    /// Most whole records before `evict_whole` moves the latest-due to the
    /// index: `max_parked` plus an eighth, so its O(n) pass runs once per
    /// `max_parked / 8` records parked at most.
    pub(super) fn whole_high(&self) -> usize {
        let max = self.ctx.max_parked;
        max.saturating_add((max / 8).max(1))
    }

    /// Hybrid parking: past [`Relay::whole_high`] whole records, moves the
    /// latest-due of them to the index, down to `max_parked`. Never one due
    /// within `GUARD` (it would be read straight back), a malformed one
    /// (due now) or one of a revoked lease (dropped at its due time). Its
    /// offset stays tracked, not done, so dropping the copy loses nothing.
    pub(super) fn evict_whole(&mut self) {
        let high = self.whole_high();
        if self.index.is_none() || self.heap.len() <= high {
            return;
        }
        let guard = Instant::now() + index::GUARD;
        let moved = self.heap.evict_latest(self.ctx.max_parked, |due, p| {
            due > guard && matches!(p.plan, Plan::Retry(_)) && !p.lease.is_revoked()
        });
        let Some(ix) = &mut self.index else { return };
        let mut cut: Option<Instant> = None;
        for (due, p) in moved {
            if ix.push(&p.lease, p.record.offset, due, p.failures) {
                cut = Some(cut.map_or(due, |c| c.min(due)));
            } else {
                // Not this assignment's record (cannot happen while its
                // lease is live): kept whole, dropped once revoked.
                self.heap.push(due, p);
            }
        }
        // Every whole record left is due at or before the earliest moved;
        // the index's entries at or after it (the cut only moves down).
        if cut.is_some() {
            self.cut = cut;
        }
        log::debug!(
            "relay: whole records past {high}: latest-due moved to the index, {} kept whole, {} indexed",
            self.heap.len(),
            ix.len()
        );
    }

    /// Moves index entries falling due into the whole-record heap (read
    /// again from the retry topic), and with room, rescans evicted records.
    pub(super) fn refill(&mut self) {
        // Room on top of the whole part (which `evict_whole` holds to
        // `whole_high`), so a heap full of far-due whole records never
        // starves the refill of an indexed record falling due.
        let high = self.whole_high().saturating_add(index::HOT_MAX);
        let Some(ix) = &mut self.index else { return };
        // One relay batch at a time, so reads interleave with the writes
        // of what is due now (a whole prefetch window in one go held those
        // up by milliseconds).
        let room = high.saturating_sub(self.heap.len()).min(RELAY_BATCH);
        let mut read = ix.refill(room, &self.ctx.counters);
        // A few rescan reads at a time (each re-indexes up to 1,000), so a
        // long rescan does not hold up what is due.
        for _ in 0..8 {
            let Some(ix) = &mut self.index else { return };
            let rescanned = ix.rescan(&self.ctx.counters);
            if rescanned.is_empty() {
                break;
            }
            self.place_reread(rescanned);
        }
        self.place_reread(std::mem::take(&mut read));
        self.evict_whole();
        self.count_parked();
    }

    pub(super) fn place_reread(&mut self, read: Vec<index::Reread>) {
        let (now, at) = (now_ms(), Instant::now());
        self.refresh_anchor(at);
        for r in read {
            let plan = self.plan(&r.record, now, at);
            let due = match r.due {
                Some(d) => d,
                None => self.due_of(&r.record, &plan),
            };
            // Straight to the heap when read for its due time (`wants` is
            // false then); a rescanned record goes back in the index.
            self.place(r.lease, r.record, plan, due, r.failures);
        }
    }

    pub(super) fn update_pause(&mut self) {
        // With an index the heap holds at most the whole part (far-due
        // records past `whole_high` move to the index) plus the refills'
        // HOT_MAX, which refills never exceed; only records read due now
        // (a backlog after an outage: within GUARD, malformed) take it
        // further. So the backstop pauses once HOT_MAX of those are on top
        // and resumes once they are gone, a level the heap always drains
        // to (resuming below the whole part could wait forever).
        let (pause_at, resume_at) = match self.index {
            Some(_) => {
                let normal = self.whole_high().saturating_add(index::HOT_MAX);
                (normal.saturating_add(index::HOT_MAX), normal)
            }
            None => {
                let max = self.ctx.max_parked;
                (max, max - max.div_ceil(4))
            }
        };
        if !self.paused && self.heap.len() >= pause_at {
            let tps = self.parts.keys();
            log::info!(
                "relay: {} records parked whole (max {pause_at}); pausing the retry topic",
                self.heap.len()
            );
            self.consumer.pause(&tps);
            self.paused = true;
        } else if self.paused && self.heap.len() <= resume_at {
            let tps = self.parts.keys();
            self.consumer.resume(&tps);
            self.paused = false;
        }
    }
}

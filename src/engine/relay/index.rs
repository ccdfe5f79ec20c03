//! Index-only parking: the relay keeps, per parked record, only when it is
//! due and where to read it again, and re-reads it from the retry topic
//! shortly before it is due. The relay (`mod.rs`) keeps up to `max_parked`
//! records whole and puts only the overflow here (hybrid parking).
//!
//! Invariants:
//! - An indexed (or evicted) record's offset stays tracked, not done, in its
//!   lease's tracker, so it is never committed: a crash re-reads it.
//! - Each retry-topic offset of a partition is in at most one place: the
//!   index, the set of evicted offsets, or the relay's whole-record heap
//!   (kept whole from the start, moved here from there, or read again). A
//!   rescan re-indexes only evicted offsets, so a record is never relayed
//!   twice by one relay.
//! - An entry belongs to the lease that parked it: `push` refuses a record
//!   of another lease of the partition, and a revoked lease's entries are
//!   dropped unread.
//! - Past the budget the latest-due entries are evicted (never one due
//!   within [`GUARD`]); they are read again by a rescan once there is room.
//!   New records are still indexed, so a near-due record never waits
//!   behind far-due ones (no head-of-line blocking, no pause).
//! - A record gone from the log (retention) is counted in
//!   `Stats::parked_gone` and its offset settled: nothing is left to relay.
//!   So is one past the log end for [`PAST_END_GRACE`] (the log was
//!   truncated under it: an unclean leader election); until then a read
//!   that finds nothing there is a transient failure, as is any empty read
//!   inside the log.
//! - A failed read puts its entries back unchanged and backs off; nothing
//!   is settled on an error.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::backoff::Backoff;
use super::super::context::Context;
use super::super::lease::Lease;
use crate::record::{Record, TopicPartition};
use crate::stats::Counters;
use crate::transport::Reader;

/// How long before its due time a record is read again: enough for a read
/// from Kafka, so it is relayed on time, and the only records kept whole.
pub(super) const PREFETCH: Duration = Duration::from_millis(50);
/// Entries (and whole records) due this soon are never evicted.
pub(super) const GUARD: Duration = Duration::from_millis(100);
/// Most records kept whole at once by refills, on top of the relay's
/// whole-record budget (a burst due in the same instant is read in parts
/// as the heap drains).
pub(super) const HOT_MAX: usize = 20_000;
/// Longest one read waits for its records: they are in the log already,
/// so this is only reached on a failing broker, but a zero wait made the
/// Kafka reader answer empty before its first fetch was back.
const READ_WAIT: Duration = Duration::from_millis(50);
/// Most records one read asks for.
const READ_MAX: usize = 1_000;
/// Offsets closer than this are read in one request (the records between
/// them are read and skipped: cheaper than another round trip).
const MERGE_GAP: i64 = 32;
/// How long a parked offset must stay at or past the log end the broker
/// reports before its record counts as gone. An offset is indexed only
/// after its record was read, so the log end was above it once; it falls
/// back only when the log is truncated (an unclean leader election), or
/// for a moment when a new leader's high watermark still lags (Kafka's
/// leader catches up within a replica fetch or two). Long enough for the
/// second, so the first is never confused with it.
pub(super) const PAST_END_GRACE: Duration = Duration::from_secs(30);
/// Index entries per whole record of `max_parked`: a whole record costs
/// ~870 B, an entry 32 B plus 16 B in the offset tracker, so the default
/// (100,000) allows 10 M entries in about 500 MB.
pub(super) const ENTRIES_PER_PARKED: usize = 100;

/// One parked record: 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Due time, µs after [`Index::base`].
    due: u64,
    offset: i64,
    /// Partition slot and its generation (stale once the slot is reused).
    slot: u32,
    gen: u32,
    /// Failed writes so far, for backoff.
    failures: u32,
}

/// Bytes per index entry (printed by `bench_engine`).
pub(crate) const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

// Min-heap on (due, slot, offset): records of one partition due at the
// same instant leave in offset order, the order they were parked in.
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.slot, other.offset).cmp(&(self.due, self.slot, self.offset))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// Offsets evicted from the index, as a bitmap from `base`.
#[derive(Debug, Default)]
struct Evicted {
    base: i64,
    bits: Vec<u64>,
    count: usize,
    /// Where the rescan reads next (the lowest evicted offset or above).
    cursor: i64,
}

impl Evicted {
    fn insert(&mut self, offset: i64) {
        if self.count == 0 {
            self.bits.clear();
            self.base = offset & !63;
            self.cursor = offset;
        } else if offset < self.base {
            let new_base = offset & !63;
            let words = ((self.base - new_base) / 64) as usize;
            self.bits.splice(0..0, std::iter::repeat_n(0, words));
            self.base = new_base;
        }
        self.cursor = self.cursor.min(offset);
        let i = (offset - self.base) as usize;
        if i / 64 >= self.bits.len() {
            self.bits.resize(i / 64 + 1, 0);
        }
        if self.bits[i / 64] & (1 << (i % 64)) == 0 {
            self.bits[i / 64] |= 1 << (i % 64);
            self.count += 1;
        }
    }

    /// Clears `offset`; true if it was evicted.
    fn take(&mut self, offset: i64) -> bool {
        if self.count == 0 || offset < self.base {
            return false;
        }
        let i = (offset - self.base) as usize;
        match self.bits.get_mut(i / 64) {
            Some(w) if *w & (1 << (i % 64)) != 0 => {
                *w &= !(1 << (i % 64));
                self.count -= 1;
                true
            }
            _ => false,
        }
    }

    /// One past the highest offset the bitmap can hold.
    fn end(&self) -> i64 {
        self.base + 64 * self.bits.len() as i64
    }
}

struct Slot {
    tp: TopicPartition,
    lease: Arc<Lease>,
    gen: u32,
    evicted: Evicted,
}

/// A record read again, ready for the whole-record heap.
pub(super) struct Reread {
    pub lease: Arc<Lease>,
    pub record: Record,
    /// `None` for a rescanned record (its due time comes from its headers
    /// again), else the indexed due time.
    pub due: Option<Instant>,
    pub failures: u32,
}

pub(super) struct Index {
    reader: Box<dyn Reader>,
    base: Instant,
    heap: BinaryHeap<Entry>,
    slots: Vec<Option<Slot>>,
    by_tp: HashMap<TopicPartition, u32>,
    next_gen: u32,
    budget: usize,
    /// Reads wait until then after a failure.
    retry_at: Option<Instant>,
    read_failures: u32,
    /// Per partition, since when a read has found nothing at or past the
    /// log end (cleared by a read that finds records).
    past_end: HashMap<TopicPartition, Instant>,
    past_end_grace: Duration,
}

impl Index {
    pub(super) fn new(reader: Box<dyn Reader>, budget: usize) -> Self {
        Index {
            reader,
            base: Instant::now(),
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            by_tp: HashMap::new(),
            next_gen: 0,
            budget: budget.max(8),
            retry_at: None,
            read_failures: 0,
            past_end: HashMap::new(),
            past_end_grace: PAST_END_GRACE,
        }
    }

    /// Indexed entries.
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Evicted records waiting for a rescan.
    pub(super) fn unindexed(&self) -> usize {
        self.slots.iter().flatten().map(|s| s.evicted.count).sum()
    }

    pub(super) fn assign(&mut self, tp: &TopicPartition, lease: Arc<Lease>) {
        // Still owned (a cooperative assignment adds to what is kept): its
        // entries stay valid, as its lease does.
        if let Some(&i) = self.by_tp.get(tp) {
            if self.slots[i as usize]
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(&s.lease, &lease))
            {
                return;
            }
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let slot = Slot {
            tp: tp.clone(),
            lease,
            gen: self.next_gen,
            evicted: Evicted::default(),
        };
        let i = match self.by_tp.get(tp) {
            Some(&i) => i as usize,
            None => match self.slots.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.slots.push(None);
                    self.slots.len() - 1
                }
            },
        };
        self.slots[i] = Some(slot);
        self.by_tp.insert(tp.clone(), i as u32);
    }

    /// Forgets released partitions: their entries and evicted offsets are
    /// dropped uncommitted, for the next owner to read.
    pub(super) fn release(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            if let Some(i) = self.by_tp.remove(tp) {
                self.slots[i as usize] = None;
            }
        }
        let slots = &self.slots;
        self.heap.retain(|e| valid(slots, e).is_some());
    }

    /// Whether a record due at `due` belongs in the index (not due soon).
    pub(super) fn wants(&self, due: Instant) -> bool {
        due > Instant::now() + PREFETCH
    }

    /// Indexes `offset` of the lease's partition; false if that lease is
    /// not the partition's assignment here (the caller keeps the record
    /// whole: it is dropped, uncommitted, once the lease is revoked).
    pub(super) fn push(
        &mut self,
        lease: &Arc<Lease>,
        offset: i64,
        due: Instant,
        failures: u32,
    ) -> bool {
        let Some(&slot) = self.by_tp.get(&lease.tp) else {
            return false;
        };
        // A record of an older assignment must not be read back under the
        // new one: its offset is tracked by the old lease's tracker only.
        let Some(s) = self.slots[slot as usize]
            .as_ref()
            .filter(|s| Arc::ptr_eq(&s.lease, lease))
        else {
            return false;
        };
        self.heap.push(Entry {
            due: self.micros(due),
            offset,
            slot,
            gen: s.gen,
            failures,
        });
        true
    }

    fn micros(&self, due: Instant) -> u64 {
        // Rounded up, so an entry never becomes due early.
        let d = due.saturating_duration_since(self.base);
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        if Duration::from_micros(us) < d {
            us.saturating_add(1)
        } else {
            us
        }
    }

    fn instant(&self, due_us: u64) -> Instant {
        self.base
            .checked_add(Duration::from_micros(due_us))
            .unwrap_or_else(|| crate::clock::deadline_after(Duration::MAX))
    }

    /// When the relay should next refill (the head's due time less the
    /// prefetch), or the end of a read back-off.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let head = self.heap.peek().map(|e| self.instant(e.due))?;
        let at = head.checked_sub(PREFETCH).unwrap_or(head);
        Some(match self.retry_at {
            Some(r) => at.max(r),
            None => at,
        })
    }

    /// Past the budget, evicts the latest-due entries down to 7/8 of it
    /// (never one due within [`GUARD`]) and remembers their offsets for a
    /// rescan. O(n), once per budget/8 pushes at most.
    pub(super) fn evict_if_full(&mut self, counters: &Counters) {
        if self.heap.len() <= self.budget {
            return;
        }
        let keep = self.budget - self.budget / 8;
        let guard = self.micros(Instant::now() + GUARD);
        let mut v = std::mem::take(&mut self.heap).into_vec();
        let protected = v.iter().filter(|e| e.due <= guard).count();
        let cut = keep.max(protected);
        if cut < v.len() {
            v.select_nth_unstable_by_key(cut, |e| (e.due, e.slot, e.offset));
            for e in v.drain(cut..) {
                if let Some(s) = self.slots[e.slot as usize].as_mut() {
                    if s.gen == e.gen {
                        s.evicted.insert(e.offset);
                    }
                }
            }
        }
        self.heap = BinaryHeap::from(v);
        let unindexed = self.unindexed();
        log::debug!(
            "relay: index over its budget ({}): {} entries kept, {unindexed} offsets to rescan",
            self.budget,
            self.heap.len()
        );
        counters
            .parked_unindexed
            .store(unindexed as i64, Ordering::Relaxed);
    }

    fn backing_off(&self) -> bool {
        self.retry_at.is_some_and(|r| Instant::now() < r)
    }

    /// After a read that found nothing at `from` (inside the log start):
    /// the log end, if `from` has been at or past it for the grace period.
    fn past_end(&mut self, tp: &TopicPartition, from: i64) -> Option<i64> {
        match self.reader.log_end(tp) {
            Some(end) if from >= end => {
                let since = *self.past_end.entry(tp.clone()).or_insert_with(Instant::now);
                (since.elapsed() >= self.past_end_grace).then_some(end)
            }
            _ => {
                self.past_end.remove(tp);
                None
            }
        }
    }

    fn read_succeeded(&mut self, tp: &TopicPartition) {
        self.read_failures = 0;
        self.retry_at = None;
        if !self.past_end.is_empty() {
            self.past_end.remove(tp);
        }
    }

    fn read_failed(&mut self, tp: &TopicPartition, e: &crate::Error) {
        self.read_failures += 1;
        let wait = Backoff::after_failures(self.read_failures);
        log::warn!("relay: re-reading {tp} failed (next in {wait:?}): {e}");
        self.retry_at = Some(Instant::now() + wait);
    }

    /// Reads up to `max` records of entries due by `now + PREFETCH` again.
    /// Entries of revoked partitions are dropped; gone records counted and
    /// settled; on a read error the unread entries go back and reads back
    /// off.
    pub(super) fn refill(&mut self, max: usize, counters: &Counters) -> Vec<Reread> {
        let mut out = Vec::new();
        if max == 0 || self.backing_off() {
            return out;
        }
        let horizon = self.micros(Instant::now() + PREFETCH);
        let mut due: Vec<Entry> = Vec::new();
        while due.len() < max {
            match self.heap.peek() {
                Some(e) if e.due <= horizon => {}
                _ => break,
            }
            let Some(e) = self.heap.pop() else { break };
            if valid(&self.slots, &e).is_some() {
                due.push(e);
            }
        }
        if due.is_empty() {
            return out;
        }
        // Contiguous offsets of a partition in one read.
        due.sort_unstable_by_key(|e| (e.slot, e.offset));
        let mut i = 0;
        while i < due.len() {
            let mut j = i + 1;
            while j < due.len()
                && due[j].slot == due[i].slot
                && due[j].offset - due[j - 1].offset <= MERGE_GAP
                && (due[j].offset - due[i].offset) < READ_MAX as i64
            {
                j += 1;
            }
            if self.read_range(&due[i..j], &mut out, counters).is_err() {
                // Back unchanged (the failed range put back its own rest).
                for e in &due[j..] {
                    self.heap.push(*e);
                }
                break;
            }
            i = j;
        }
        out
    }

    /// Reads one range of one partition's entries (ascending offsets).
    fn read_range(
        &mut self,
        entries: &[Entry],
        out: &mut Vec<Reread>,
        counters: &Counters,
    ) -> Result<(), ()> {
        let Some(s) = valid(&self.slots, &entries[0]) else {
            return Ok(());
        };
        let (tp, lease) = (s.tp.clone(), s.lease.clone());
        let mut k = 0; // next entry to find
        while k < entries.len() {
            let from = entries[k].offset;
            let last = entries[entries.len() - 1].offset;
            let want = (last - from + 1) as usize;
            let mut records = match self.reader.read(&tp, from, want.min(READ_MAX), READ_WAIT) {
                Ok(r) => r,
                Err(e) => {
                    self.read_failed(&tp, &e);
                    // Keep what was read; put back the rest.
                    for e in &entries[k..] {
                        self.heap.push(*e);
                    }
                    return Err(());
                }
            };
            // Records below `from`: the read was out of range past the log
            // end and started again at the log start. None of them is
            // wanted, and keeping them would read the same range forever.
            records.retain(|r| r.offset >= from);
            if records.is_empty() {
                // Nothing at or after `from`: gone if below the log start
                // or (for the grace period) past the log end, else a
                // transient answer (read again after a back-off).
                match self.log_start(&tp) {
                    Ok(start) if from < start => {
                        while k < entries.len() && entries[k].offset < start {
                            gone(counters, &lease, &tp, entries[k].offset);
                            k += 1;
                        }
                        continue;
                    }
                    Ok(_) if self.past_end(&tp, from).is_some() => {
                        // Every entry left is at or past `from`.
                        for e in &entries[k..] {
                            truncated(counters, &lease, &tp, e.offset);
                        }
                        return Ok(());
                    }
                    Ok(_) => {
                        let e = crate::Error::Protocol(format!("no record at offset {from}"));
                        self.read_failed(&tp, &e);
                        for e in &entries[k..] {
                            self.heap.push(*e);
                        }
                        return Err(());
                    }
                    Err(e) => {
                        self.read_failed(&tp, &e);
                        for e in &entries[k..] {
                            self.heap.push(*e);
                        }
                        return Err(());
                    }
                }
            }
            self.read_succeeded(&tp);
            let upto = records.last().map_or(from, |r| r.offset);
            let mut records = records.into_iter().peekable();
            while k < entries.len() && entries[k].offset <= upto {
                let e = entries[k];
                while records.next_if(|r| r.offset < e.offset).is_some() {}
                match records.next_if(|r| r.offset == e.offset) {
                    Some(record) => out.push(Reread {
                        lease: lease.clone(),
                        record,
                        due: Some(self.instant(e.due)),
                        failures: e.failures,
                    }),
                    // Skipped by the read: removed (retention, compaction).
                    None => gone(counters, &lease, &tp, e.offset),
                }
                k += 1;
            }
        }
        Ok(())
    }

    fn log_start(&mut self, tp: &TopicPartition) -> crate::Result<i64> {
        let offsets = self.reader.offsets(&tp.topic)?;
        offsets
            .iter()
            .find(|o| o.partition == tp.partition)
            .map(|o| o.earliest)
            .ok_or_else(|| crate::Error::Protocol(format!("no offsets for {tp}")))
    }

    /// With room in the index (under 3/4 of the budget), reads evicted
    /// records again, one read per call, up to 7/8 of the budget (the
    /// caller re-indexes them by their headers).
    pub(super) fn rescan(&mut self, counters: &Counters) -> Vec<Reread> {
        let mut out = Vec::new();
        if self.heap.len() >= self.budget / 4 * 3 || self.backing_off() {
            return out;
        }
        let room = (self.budget - self.budget / 8).saturating_sub(self.heap.len());
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.evicted.count > 0))
        else {
            return out;
        };
        let s = self.slots[i].as_ref().expect("just found");
        let (tp, lease, from, end) = (
            s.tp.clone(),
            s.lease.clone(),
            s.evicted.cursor,
            s.evicted.end(),
        );
        let want = ((end - from).max(1) as usize)
            .min(READ_MAX)
            .min(room.max(1));
        let mut records = match self.reader.read(&tp, from, want, READ_WAIT) {
            Ok(r) => r,
            Err(e) => {
                self.read_failed(&tp, &e);
                return out;
            }
        };
        // As in `read_range`: records below `from` are an out-of-range
        // read past the log end that started again at the log start.
        records.retain(|r| r.offset >= from);
        let upto = match records.last() {
            Some(r) => r.offset,
            None => match self.log_start(&tp) {
                // Everything evicted below the log start is gone.
                Ok(start) if from < start => start - 1,
                // Everything evicted at or past the log end is gone.
                Ok(_) if self.past_end(&tp, from).is_some() => end - 1,
                Ok(_) => {
                    let e = crate::Error::Protocol(format!("no record at offset {from}"));
                    self.read_failed(&tp, &e);
                    return out;
                }
                Err(e) => {
                    self.read_failed(&tp, &e);
                    return out;
                }
            },
        };
        self.read_succeeded(&tp);
        let s = self.slots[i].as_mut().expect("just found");
        let mut records = records.into_iter().peekable();
        for o in from..=upto.min(s.evicted.end() - 1) {
            let record = records.next_if(|r| r.offset == o);
            if !s.evicted.take(o) {
                continue;
            }
            match record {
                Some(record) => out.push(Reread {
                    lease: lease.clone(),
                    record,
                    due: None,
                    failures: 0,
                }),
                None => gone(counters, &lease, &tp, o),
            }
            if s.evicted.count == 0 {
                break;
            }
        }
        s.evicted.cursor = upto + 1;
        counters
            .parked_unindexed
            .store(self.unindexed() as i64, Ordering::Relaxed);
        out
    }
}

/// The index, if the transport has a Reader: the one place that chooses
/// between index-only and whole-record parking.
pub(super) fn open(ctx: &Context) -> Option<Index> {
    match ctx.transport.reader() {
        Ok(reader) => Some(Index::new(
            reader,
            ctx.max_parked.saturating_mul(ENTRIES_PER_PARKED),
        )),
        Err(e) => {
            log::info!("relay: parked records kept whole ({e})");
            None
        }
    }
}

fn valid<'a>(slots: &'a [Option<Slot>], e: &Entry) -> Option<&'a Slot> {
    slots
        .get(e.slot as usize)?
        .as_ref()
        .filter(|s| s.gen == e.gen && !s.lease.is_revoked())
}

/// A parked record no longer in the log: counted and settled.
fn gone(counters: &Counters, lease: &Lease, tp: &TopicPartition, offset: i64) {
    log::warn!("relay: {tp}@{offset} is gone from the log (retention?); settled");
    settle_gone(counters, lease, offset);
}

/// A parked record past the log end for [`PAST_END_GRACE`]: counted and
/// settled as gone.
fn truncated(counters: &Counters, lease: &Lease, tp: &TopicPartition, offset: i64) {
    log::warn!(
        "relay: {tp}@{offset} is past the log end for {PAST_END_GRACE:?} (the log was truncated: \
         an unclean leader election?); its record is lost to the retry topic; settled"
    );
    settle_gone(counters, lease, offset);
}

fn settle_gone(counters: &Counters, lease: &Lease, offset: i64) {
    counters.parked_gone.fetch_add(1, Ordering::Relaxed);
    lease.tracker().done(offset);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_still_owned_keeps_its_entries() {
        let mem = crate::MemoryBroker::new();
        let mut ix = Index::new(crate::transport::Transport::reader(&mem).unwrap(), 100);
        let tp = TopicPartition::new("r", 0);
        let lease = Lease::new(tp.clone());
        ix.assign(&tp, lease.clone());
        assert!(ix.push(&lease, 7, Instant::now() + Duration::from_secs(60), 0));
        // Another lease of the same partition: not this assignment's record.
        assert!(!ix.push(
            &Lease::new(tp.clone()),
            8,
            Instant::now() + Duration::from_secs(60),
            0
        ));
        ix.assign(&tp, lease); // the same lease: kept
        ix.release(&[]);
        assert_eq!(ix.len(), 1);
        ix.assign(&tp, Lease::new(tp.clone())); // a new lease: a new owner
        ix.release(&[]);
        assert_eq!(ix.len(), 0);
    }

    /// A memory-broker reader that, like the Kafka one, answers a read past
    /// the log end from the log start (an out-of-range reset), counting reads.
    #[derive(Debug)]
    struct ResetsPastEnd {
        inner: Box<dyn Reader>,
        reads: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Reader for ResetsPastEnd {
        fn partitions(&mut self, topic: &str) -> crate::Result<Option<i32>> {
            self.inner.partitions(topic)
        }
        fn offsets(
            &mut self,
            topic: &str,
        ) -> crate::Result<Vec<crate::transport::PartitionOffsets>> {
            self.inner.offsets(topic)
        }
        fn read(
            &mut self,
            tp: &TopicPartition,
            offset: i64,
            max: usize,
            timeout: Duration,
        ) -> crate::Result<Vec<Record>> {
            if self.reads.fetch_add(1, Ordering::Relaxed) > 50 {
                return Err(crate::Error::Protocol("read in a loop".into()));
            }
            let from = match self.inner.log_end(tp) {
                Some(end) if offset >= end => 0,
                _ => offset,
            };
            self.inner.read(tp, from, max, timeout)
        }
        fn log_end(&self, tp: &TopicPartition) -> Option<i64> {
            self.inner.log_end(tp)
        }
        fn committed(
            &mut self,
            group: &str,
            topic: &str,
        ) -> crate::Result<std::collections::BTreeMap<i32, i64>> {
            self.inner.committed(group, topic)
        }
    }

    /// Offsets 0..3 in "r"-0, and an index over it with entries at 1 (in
    /// the log) and 5 (past its end: as after a truncation), both due now.
    fn past_the_end(grace: Duration) -> (Index, Arc<Lease>, Arc<std::sync::atomic::AtomicUsize>) {
        let mem = crate::MemoryBroker::new();
        mem.create_topic("r", 1).unwrap();
        for v in ["a", "b", "c"] {
            mem.produce(crate::OutRecord::new("r").partition(0).value(v))
                .unwrap();
        }
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reader = ResetsPastEnd {
            inner: crate::transport::Transport::reader(&mem).unwrap(),
            reads: reads.clone(),
        };
        let mut ix = Index::new(Box::new(reader), 100);
        ix.past_end_grace = grace;
        let tp = TopicPartition::new("r", 0);
        let lease = Lease::new(tp.clone());
        ix.assign(&tp, lease.clone());
        for o in [1, 5] {
            assert!(lease.tracker().track(o));
            assert!(ix.push(&lease, o, Instant::now(), 0));
        }
        (ix, lease, reads)
    }

    #[test]
    fn a_record_past_the_log_end_is_gone_after_the_grace_period() {
        let (mut ix, lease, reads) = past_the_end(Duration::ZERO);
        let counters = Counters::default();
        let out = ix.refill(10, &counters);
        let offsets: Vec<i64> = out.iter().map(|r| r.record.offset).collect();
        assert_eq!(offsets, [1]);
        assert_eq!(counters.parked_gone.load(Ordering::Relaxed), 1);
        assert_eq!(ix.len(), 0);
        assert!(!ix.backing_off());
        // 5 is settled; 1 is still the relay's to settle.
        assert_eq!(lease.tracker().in_flight(), 1);
        assert!(reads.load(Ordering::Relaxed) <= 3, "{reads:?} reads");
    }

    #[test]
    fn a_record_past_the_log_end_is_read_again_within_the_grace_period() {
        let (mut ix, lease, reads) = past_the_end(PAST_END_GRACE);
        let counters = Counters::default();
        let out = ix.refill(10, &counters);
        assert_eq!(out.len(), 1);
        // Not gone yet: put back, read again after a back-off.
        assert_eq!(counters.parked_gone.load(Ordering::Relaxed), 0);
        assert_eq!(ix.len(), 1);
        assert!(ix.backing_off());
        assert_eq!(lease.tracker().in_flight(), 2);
        assert!(reads.load(Ordering::Relaxed) <= 3, "{reads:?} reads");
    }

    #[test]
    fn an_entry_is_32_bytes() {
        assert_eq!(ENTRY_BYTES, 32);
    }

    #[test]
    fn evicted_offsets_grow_downwards_and_are_taken_once() {
        let mut ev = Evicted::default();
        ev.insert(1000);
        ev.insert(1200);
        ev.insert(5); // below the base: the bitmap grows at the front
        ev.insert(1000); // twice counts once
        assert_eq!((ev.count, ev.cursor), (3, 5));
        assert!(ev.take(5));
        assert!(!ev.take(5));
        assert!(!ev.take(6));
        assert!(ev.take(1000) && ev.take(1200));
        assert_eq!(ev.count, 0);
        assert!(!ev.take(99_999));
    }
}

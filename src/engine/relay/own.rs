//! Retry copies the relay takes in-process: a worker whose retry copy was
//! acknowledged hands the record and its recipe here (with the partition
//! and offset the broker gave it), and the relay parks it without fetching
//! it back, decoding it and parsing its headers. On Kafka that saves the
//! broker a Fetch per batch of copies and the client its decode (about a
//! third of the relay's time per retried record).
//!
//! Invariants:
//! - The retry topic stays the source of truth. A copy is taken only where
//!   the relay's consumer stands exactly at its offset
//!   ([`Consumer::skip_from`](crate::transport::Consumer::skip_from)), and
//!   only as a run of consecutive offsets, every one of which this
//!   engine's workers wrote; the consumer then moves past the run. So no
//!   record of another writer is ever skipped: a record in between leaves
//!   a gap that the consumer reads as it always did.
//! - A copy is tracked and committed exactly like a fetched one (its
//!   offset), so a crash re-reads it from the topic. Nothing is lost when
//!   a copy is not taken (a full channel, a partition of another member,
//!   a write sent again after a failure): the consumer fetches it.
//! - While its copies come in-process, a retry partition is paused, or the
//!   consumer's long-poll would fetch each copy before the worker's
//!   acknowledgement reached the relay. It resumes on a gap (a record the
//!   workers did not hand over: another instance's, or one of ours that
//!   was not taken): after [`OWN_IDLE`] without a copy taken it fetches
//!   again, so a record of another writer waits at most that long behind
//!   ours. A partition that resumed with copies held past a gap (another
//!   instance writes to it too) is fetched as before for [`OWN_COOLDOWN`].
//! - Workers acknowledge out of order (one reaps sooner than another), so
//!   copies are held by offset until the consumer stands at the first.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::Receiver;

use super::Relay;
use crate::clock::now_ms;
use crate::engine::lease::Lease;
use crate::engine::worker::{retry_copy, Recipe};
use crate::record::{Header, OutRecord, Record, TopicPartition};

/// Copies waiting in the channel from the workers to the relay; past it a
/// worker drops its copy (the relay fetches it instead).
pub(crate) const OWN_CHANNEL: usize = 16_384;
/// Copies held for an offset the relay's consumer has not reached yet; past
/// it new ones are dropped (fetched instead).
const HELD_MAX: usize = 16_384;
/// A partition taken in-process resumes fetching after this long without a
/// copy, so another writer's records behind ours are read.
const OWN_IDLE: Duration = Duration::from_millis(50);
/// Copies received with none taken after which the relay stops asking for
/// them (its consumer cannot skip, or every partition has other writers).
const GIVE_UP_AFTER: u64 = 20_000;
/// How long a retry partition whose copies came with gaps is fetched
/// before its copies are taken in-process again.
const OWN_COOLDOWN: Duration = Duration::from_secs(1);
/// The relay's longest poll while it takes copies in-process: the channel
/// cannot wake the poll, so this bounds how long a copy waits in it.
pub(super) const OWN_POLL: Duration = Duration::from_millis(5);

/// A retry copy a worker wrote, acknowledged at `partition`/`offset` of
/// the retry topic.
pub(crate) struct OwnCopy {
    pub partition: i32,
    pub offset: i64,
    /// The job's record (the origin record, or in private mode the
    /// retry-topic record it came back as): with `recipe` it builds the
    /// copy's exact key, value and headers.
    pub record: Record,
    pub recipe: Recipe,
}

/// The copy as the record the relay would have fetched, with bytes of its
/// own: the job's key, value and user headers are slices of the origin
/// topic's fetch buffer, and a parked slice would keep that whole buffer
/// (every record fetched with it) alive for as long as the record is
/// parked. One allocation for all of them.
fn detached(out: OutRecord, partition: i32, offset: i64) -> Record {
    let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
    let size = len(&out.key)
        + len(&out.value)
        + out
            .headers
            .iter()
            .map(|h| h.key.len() + len(&h.value))
            .sum::<usize>();
    let mut buf = BytesMut::with_capacity(size);
    let mut own = |b: &[u8]| {
        buf.extend_from_slice(b);
        buf.split().freeze()
    };
    let key = out.key.as_deref().map(&mut own);
    let value = out.value.as_deref().map(&mut own);
    let headers = out
        .headers
        .iter()
        .map(|h| Header {
            key: own(&h.key),
            value: h.value.as_deref().map(&mut own),
        })
        .collect();
    Record {
        topic: out.topic,
        partition,
        offset,
        timestamp: now_ms(),
        key,
        value,
        headers,
    }
}

/// The relay's side of the hand-over.
#[derive(Default)]
pub(super) struct Own {
    rx: Option<Receiver<OwnCopy>>,
    /// Copies not taken yet, per retry partition, by offset.
    held: HashMap<i32, BTreeMap<i64, OwnCopy>>,
    held_len: usize,
    /// Retry partitions paused because their copies come in-process: the
    /// offset their next copy should have and when the last one came.
    taking: HashMap<i32, (i64, Instant)>,
    /// Retry partitions not taken in-process until then: their copies
    /// came with gaps (another instance writes to them too).
    cooldown: HashMap<i32, Instant>,
    /// Copies received and taken, until the first is taken.
    received: u64,
    taken: bool,
}

impl Own {
    pub(super) fn new(rx: Option<Receiver<OwnCopy>>) -> Self {
        Own {
            rx,
            ..Own::default()
        }
    }

    /// Whether partitions are paused for copies that come in-process: the
    /// relay then polls for at most [`OWN_POLL`]. (Held copies the consumer
    /// has not reached need no such wake-up: its poll returns once it
    /// reads up to them.)
    pub(super) fn active(&self) -> bool {
        !self.taking.is_empty()
    }

    /// Forgets the copies and the state of released retry partitions
    /// (their pauses end with the revoke).
    pub(super) fn release(&mut self, partitions: impl Iterator<Item = i32>) {
        for q in partitions {
            self.taking.remove(&q);
            self.cooldown.remove(&q);
            if let Some(h) = self.held.remove(&q) {
                self.held_len -= h.len();
            }
        }
    }

    /// The backstop paused every retry partition: none is taken in-process
    /// until it resumes them all.
    pub(super) fn paused_all(&mut self) {
        self.taking.clear();
    }

    fn drain(&mut self, now: Instant) {
        let Some(rx) = &self.rx else { return };
        self.cooldown.retain(|_, until| *until > now);
        while let Ok(c) = rx.try_recv() {
            self.received += 1;
            if self.held_len >= HELD_MAX || self.cooldown.contains_key(&c.partition) {
                continue; // dropped: the consumer fetches it
            }
            let part = self.held.entry(c.partition).or_default();
            if part.insert(c.offset, c).is_none() {
                self.held_len += 1;
            }
        }
    }
}

impl Relay {
    /// Takes the retry copies the workers handed over, where the consumer
    /// stands at their offsets (see the module notes).
    pub(super) fn take_own(&mut self) {
        let now = Instant::now();
        self.own.drain(now);
        // A consumer that never skips (a transport without `skip_from`):
        // the channel closes, so the workers stop handing copies over.
        if !self.own.taken && self.own.received >= GIVE_UP_AFTER {
            log::info!("relay: its consumer takes no copy in-process; fetching every retry copy");
            let paused: Vec<i32> = self.own.taking.keys().copied().collect();
            for q in paused {
                self.stop_taking(q);
            }
            self.own = Own::default();
            return;
        }
        if self.paused {
            return; // the backstop: parking no more until the heap drains
        }
        let partitions: Vec<i32> = self.own.held.keys().copied().collect();
        for q in partitions {
            self.take_partition(q);
        }
        let idle: Vec<i32> = self
            .own
            .taking
            .iter()
            .filter(|(_, (_, last))| now.saturating_duration_since(*last) >= OWN_IDLE)
            .map(|(q, _)| *q)
            .collect();
        for q in idle {
            // Copies held past a gap: someone else writes here too, and
            // every gap would hold their records back by OWN_IDLE.
            if self.own.held.contains_key(&q) {
                log::debug!("relay: retry partition {q} has other writers; fetching it");
                self.own.cooldown.insert(q, now + OWN_COOLDOWN);
            }
            self.stop_taking(q);
        }
    }

    fn take_partition(&mut self, q: i32) {
        let tp = TopicPartition::new(self.ctx.retry_topic.clone(), q);
        let Some(lease) = self.parts.get(&tp).map(|p| p.lease.clone()) else {
            // Not ours (another member's, or released): its owner fetches it.
            self.own.release(std::iter::once(q));
            return;
        };
        let Some(mut held) = self.own.held.remove(&q) else {
            return;
        };
        self.own.held_len -= held.len();
        // Below the tracker's next offset: fetched already, parked from
        // there. The consumer got there first (its long-poll answered
        // before the acknowledgement reached the relay): paused from now
        // on, it stands where the next copy will be.
        if let Some(next) = lease.tracker().next() {
            let raced = held.keys().next().is_some_and(|&first| first < next);
            held = held.split_off(&next);
            if raced && !self.own.taking.contains_key(&q) {
                self.consumer.pause(std::slice::from_ref(&tp));
                self.own.taking.insert(q, (next, Instant::now()));
            }
        }
        while let Some(&from) = held.keys().next() {
            let mut to = from;
            while held.contains_key(&to) {
                to += 1;
            }
            // False where the consumer does not stand at `from`: not there
            // yet, or (paused) a gap before it.
            if !self.consumer.skip_from(&tp, from, to) {
                break;
            }
            if !self.own.taking.contains_key(&q) {
                self.consumer.pause(std::slice::from_ref(&tp));
            }
            self.own.taking.insert(q, (to, Instant::now()));
            let rest = held.split_off(&to);
            for (_, c) in std::mem::replace(&mut held, rest) {
                self.park_own(&lease, c);
            }
        }
        if !held.is_empty() {
            self.own.held_len += held.len();
            self.own.held.insert(q, held);
        }
    }

    fn stop_taking(&mut self, q: i32) {
        if self.own.taking.remove(&q).is_some() {
            let tp = TopicPartition::new(self.ctx.retry_topic.clone(), q);
            self.consumer.resume(std::slice::from_ref(&tp));
        }
    }
    /// Parks a copy taken in-process as if it had been fetched.
    fn park_own(&mut self, lease: &Arc<Lease>, c: OwnCopy) {
        if !lease.tracker().track(c.offset) {
            return;
        }
        let record = detached(
            retry_copy(&self.ctx, &c.record, &c.recipe),
            c.partition,
            c.offset,
        );
        drop(c.record);
        let info = c.recipe.info;
        // The headers say what the recipe says (the relay would parse them
        // into the same info had it fetched the copy).
        debug_assert_eq!(
            crate::headers::RetryInfo::parse(&record, now_ms()).as_ref(),
            Ok(&info)
        );
        let plan = self.plan_info(info);
        self.own.taken = true;
        self.ctx
            .counters
            .relay_in_process
            .fetch_add(1, Ordering::Relaxed);
        self.park_planned(lease.clone(), record, plan);
    }
}

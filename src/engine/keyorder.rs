//! Key order kept across retries ([`KeyOrder::Kept`]): while a record of
//! key K is parked, later records of K are parked behind it and released
//! in origin order.
//!
//! Design (the invariants this file keeps):
//! - **What "blocked" means.** Per origin partition and key, the set of
//!   origin offsets of K's records that live on the retry side (parked for
//!   a retry, held behind another, or handed to a worker from there) and
//!   are not settled yet. K is blocked while that set is not empty. Only
//!   its lowest offset (the head) may be handled; every other one waits.
//!   A record that fails again keeps its offset in the set (same origin
//!   offset, new retry copy), so it keeps blocking K.
//! - **Who updates it.** A worker that gets `Retry` for K adds the offset
//!   before it takes its next job, and a worker about to handle an origin
//!   record of a blocked K writes a *held* copy instead (header
//!   [`HELD`](crate::HELD)) and adds its offset: same key → same worker,
//!   so a later K record already queued to that worker is parked, not
//!   handled. The relay adds the offset of every copy it reads (that is
//!   how the set is rebuilt from Kafka after a crash or a rebalance). The
//!   consumer thread removes an offset when the worker's completion says
//!   the head was settled (`Done` or dead-lettered, acknowledged) and the
//!   relay removes one it dead-letters itself (expired); either then
//!   releases K's next waiting copy, which is handled next.
//! - **A key's copies land in order.** Retry and held copies go through
//!   the batching writer like every retry-path write, but a worker sends a
//!   copy of key K only once its earlier copies of K are acknowledged
//!   (worker.rs, `Writes`): were the later one to land while the earlier
//!   one failed, a relay rebuilding K after a crash would take the later
//!   record for K's head (the earlier one comes back only from its origin
//!   partition) and hand it out first.
//! - **Held, not failed.** A held copy never went through the handler: it
//!   is not an attempt, it is not on the relay's time heap (it never falls
//!   due or expires on its own), and once released and handled its retry
//!   history starts then (attempts 0, first-received = release time), so
//!   waiting behind its key does not eat its `max_retry_duration`.
//! - **Co-partitioning.** Every copy of a record of origin partition p goes
//!   to retry partition `p % n` (`n` the retry topic's partition count; the
//!   engine creates the retry topic with the largest origin partition
//!   count, so `p` itself), so the relay that owns retry partition q knows
//!   every blocked key of every origin partition mapping to q. Several
//!   origin topics share the retry topic: keys are tracked per (origin
//!   topic, partition, key), so the same key in two topics never blocks
//!   across topics.
//! - **Knowing before handing out.** Origin partition p is only dispatched
//!   once this instance's relay owns retry partition `p % n` and has read
//!   it to an end offset seen *after p was assigned* ([`KeyOrderState::ready`]):
//!   each assignment of p asks for a new catch-up ([`KeyOrderState::renew`]),
//!   since while p was away another member may have parked records of p's
//!   keys on `p % n` that this relay, though it kept `p % n`, has not read
//!   yet. A catch-up counts for the requests made before it measured its
//!   end (a request number, [`KeyOrderState::requests`]).
//!   The relay group follows the engine group: the consumer thread claims
//!   for the relay the retry partitions of what it owns after every
//!   assignment change ([`KeyOrderState::claim`]; the relay consumer
//!   publishes the claim and the relay group's leader honours it,
//!   `transport/claims.rs`). Between the two groups' rebalances they still
//!   disagree; meanwhile (or for [`READY_WAIT`] at most) p waits, and after
//!   that it is dispatched in *hold-all* mode (counted in
//!   `Stats::hold_all`): a worker parks every keyed record of a
//!   partition whose keys it does not know. That is always safe for order
//!   (every parked copy is ordered by origin offset by whichever relay owns
//!   its retry partition), only slower.
//! - **Giving a retry partition up.** The relay stops handing out copies of
//!   it, waits (up to `revoke_timeout`) for the copies workers are handling,
//!   then forgets its keys: a write of theirs landing after the next owner
//!   read the partition to its end would be unknown to that owner.
//! - **Stale copies.** A copy whose origin offset is no longer blocked once
//!   its partition is read to the end was settled through another copy; it
//!   is marked done, not handled (it would come after later records).
//! - **Memory.** Per blocked key: one map entry (key bytes + a `BTreeSet`
//!   of the blocked offsets), about 200 bytes with 10-byte keys (measured in
//!   tests/engine_key_order.rs), plus, for held copies the relay has read,
//!   the copy itself until it is released; those are bounded by
//!   `max_parked` (the consumer thread pauses its origin partitions at that
//!   many, [`KeyOrderState::waiting`]). Nothing is kept for a key that is
//!   not blocked.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use super::context::Context;
use super::job::Job;
use crate::headers::{self, RetryInfo};
use crate::record::{Header, OutRecord, Partitioning, Record, TopicPartition};
use crate::transport::Claims;

/// Whether the engine keeps each key's order across retries, set with
/// [`EngineBuilder::key_order`](crate::EngineBuilder::key_order).
///
/// `Kept` requires [`Redelivery::Private`](crate::Redelivery::Private):
/// writing a released record back to its origin topic would put it behind
/// the later records of its key that were read meanwhile, which is exactly
/// the overtaking this mode exists to prevent.
///
/// ```
/// use kafka_retry::{Engine, KeyOrder, MemoryBroker, Outcome, Redelivery};
/// let builder = Engine::builder(MemoryBroker::new())
///     .group_id("accounts")
///     .topics(["account-events"])
///     .redelivery(Redelivery::Private)
///     .key_order(KeyOrder::Kept)
///     .handler(|_r| Outcome::Done);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyOrder {
    /// No order across retries (the article's pattern): a parked record is
    /// overtaken by the later records of its key.
    #[default]
    Any,
    /// While a record of a key is parked, the later records of that key
    /// (from the same origin partition) are parked behind it and handled,
    /// in origin order, once it is done or dead-lettered. Records without a
    /// key are never held.
    Kept,
}

/// Longest an origin partition waits for this instance's relay to own and
/// read its retry partition before it is dispatched in hold-all mode.
pub(crate) const READY_WAIT: Duration = Duration::from_secs(10);

type Key = (TopicPartition, Bytes);

/// A private job handed to a worker, by (retry partition, retry offset).
struct Busy {
    origin_offset: i64,
    /// The worker parked it again: its offset stays blocked.
    retried: bool,
}

#[derive(Default)]
struct Inner {
    /// Origin offsets of unsettled retry-side records, per (origin
    /// partition, key). Never holds an empty set.
    blocked: HashMap<TopicPartition, HashMap<Bytes, BTreeSet<i64>>>,
    /// Copies read by the relay that may not be handled yet, by origin
    /// offset (one per offset: the latest copy read).
    waiting: HashMap<Key, BTreeMap<i64, Job>>,
    /// Copies in `waiting`, all keys together.
    waiting_len: usize,
    /// The key's record a worker is handling from the retry side.
    busy: HashMap<Key, Busy>,
    /// Retry partitions this instance's relay owns and has read to the end
    /// offset it saw at assignment.
    ready: HashSet<i32>,
    /// Catch-up requests: the last number handed out.
    request: u64,
    /// Retry partitions with a request the relay has not taken yet.
    requested: HashSet<i32>,
    /// Per retry partition, the last request a finished catch-up covers.
    caught_up: HashMap<i32, u64>,
    /// Per origin partition, the request of its latest assignment: it is
    /// known here once its retry partition is ready and caught up to it.
    assigned: HashMap<TopicPartition, u64>,
    /// Per retry partition, the latest request of any origin partition
    /// mapping to it: while its catch-up covers that, every such origin
    /// partition is known without a per-partition lookup (the per-record
    /// check stays one small hash).
    assigned_max: HashMap<i32, u64>,
    /// Copies handed to a worker, by (retry partition, retry offset), so a
    /// completion finds its key.
    dispatched: HashMap<(i32, i64), Origin>,
}

/// The shared blocked-key state (see the module notes).
pub(crate) struct KeyOrderState {
    retry_partitions: i32,
    inner: Mutex<Inner>,
    retry_topic: String,
    /// The relay consumer's claims: the retry partitions of the origin
    /// partitions this instance owns ([`KeyOrderState::claim`]).
    claims: Claims,
}

/// The origin partition and key of a record the relay read, from its
/// retry headers.
pub(crate) struct Origin {
    pub tp: TopicPartition,
    pub key: Bytes,
    pub offset: i64,
}

impl KeyOrderState {
    pub(crate) fn new(retry_topic: &str, retry_partitions: i32) -> Self {
        KeyOrderState {
            retry_partitions: retry_partitions.max(1),
            inner: Mutex::new(Inner::default()),
            retry_topic: retry_topic.to_string(),
            claims: Claims::new(),
        }
    }

    /// The handle the relay consumer publishes (its `ConsumerConfig::claims`).
    pub(crate) fn claims(&self) -> Claims {
        self.claims.clone()
    }

    /// The engine now owns `origin` (its whole assignment), decided in
    /// `generation`: its relay claims their retry partitions, so the relay
    /// group's leader gives them to it (`transport/claims.rs`) and each
    /// origin partition becomes ready without waiting for the groups to
    /// agree by chance. The relay consumer rejoins when this changes.
    pub(crate) fn claim<'a>(
        &self,
        origin: impl IntoIterator<Item = &'a TopicPartition>,
        generation: Option<i32>,
    ) {
        let qs: BTreeSet<i32> = origin
            .into_iter()
            .map(|tp| self.retry_partition(tp.partition))
            .collect();
        self.claims.set(
            qs.into_iter()
                .map(|q| TopicPartition::new(self.retry_topic.clone(), q)),
            generation.unwrap_or(-1),
        );
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the relay read and keeps whole until their key's turn (held
    /// copies, and retries that fell due behind their key's head). The
    /// consumer thread holds its origin partitions while these reach
    /// `max_parked` (dispatch.rs), so they are bounded by traffic no more.
    /// Read once per pass of the consumer loop, so one lock is cheap.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiting_len
    }

    /// The retry partition that holds the copies of origin partition `p`.
    pub(crate) fn retry_partition(&self, p: i32) -> i32 {
        p.max(0) % self.retry_partitions
    }

    /// Where a copy of a record of origin partition `p` is written.
    pub(crate) fn partitioning(&self, p: i32) -> Partitioning {
        Partitioning::Explicit(self.retry_partition(p))
    }

    /// Whether the keys of origin partition `tp` are known here: its
    /// retry partition is ready and was read to an end offset seen after
    /// `tp`'s latest [`renew`](KeyOrderState::renew).
    pub(crate) fn ready(&self, tp: &TopicPartition) -> bool {
        known(&self.lock(), tp, self.retry_partition(tp.partition))
    }

    /// Origin partition `tp` was just assigned: whatever this instance
    /// knew of its keys before is stale (while `tp` was away, another
    /// member may have parked records of its keys that this relay has not
    /// read yet), so its retry partition must be read again to its current
    /// end. Returns whether `tp` is known already (it never is here; see
    /// [`ready`](KeyOrderState::ready)).
    pub(crate) fn renew(&self, tp: &TopicPartition) -> bool {
        let q = self.retry_partition(tp.partition);
        let mut inner = self.lock();
        inner.request += 1;
        let n = inner.request;
        inner.assigned.insert(tp.clone(), n);
        inner.assigned_max.insert(q, n);
        inner.requested.insert(q);
        known(&inner, tp, q)
    }

    /// For the relay: the retry partitions with catch-up requests it has
    /// not taken yet, and the number a catch-up whose end is measured from
    /// now on covers.
    pub(crate) fn requests(&self) -> (Vec<i32>, u64) {
        let mut inner = self.lock();
        let qs = inner.requested.drain().collect();
        (qs, inner.request)
    }

    /// The last request number handed out: a catch-up whose end is
    /// measured from now on covers it.
    pub(crate) fn request_number(&self) -> u64 {
        self.lock().request
    }

    /// Whether a worker must park `record` (read from its origin topic)
    /// behind its key instead of handling it: its key is blocked, or the
    /// keys of its partition are not known here (hold-all). Never for a
    /// record without a key.
    pub(crate) fn must_hold(&self, record: &Record) -> bool {
        let Some(key) = &record.key else {
            return false;
        };
        let inner = self.lock();
        let tp = record.topic_partition();
        if !known(&inner, &tp, self.retry_partition(record.partition)) {
            return true;
        }
        inner
            .blocked
            .get(&tp)
            .is_some_and(|keys| keys.contains_key(key))
    }

    /// `record` (origin topic, partition and offset: a worker's view) is
    /// being parked, failed or held: its key is blocked from now on. Called
    /// before the worker takes its next job.
    pub(crate) fn block(&self, record: &Record) {
        let Some(key) = &record.key else {
            return;
        };
        let tp = record.topic_partition();
        let mut inner = self.lock();
        if let Some(b) = inner.busy.get_mut(&(tp.clone(), key.clone())) {
            if b.origin_offset == record.offset {
                b.retried = true;
            }
        }
        inner
            .blocked
            .entry(tp)
            .or_default()
            .entry(key.clone())
            .or_default()
            .insert(record.offset);
    }

    /// The relay read a copy of `origin`'s record: it blocks its key (the
    /// rebuild after a restart or a rebalance).
    pub(crate) fn register(&self, origin: &Origin) {
        self.lock()
            .blocked
            .entry(origin.tp.clone())
            .or_default()
            .entry(origin.key.clone())
            .or_default()
            .insert(origin.offset);
    }

    /// A copy the relay hands to the workers (held, or a retry that fell
    /// due): returns it when it is its key's head and nothing of its key is
    /// being handled; otherwise keeps it until it is (`None`). A copy
    /// replaced by a later copy of the same record is settled at once
    /// (marked done: the later copy stands for it).
    pub(crate) fn arrive(&self, origin: Origin, job: Job) -> Option<Job> {
        let offset = origin.offset;
        let q = self.retry_partition(origin.tp.partition);
        let key = (origin.tp, origin.key);
        let mut inner = self.lock();
        let set = inner.blocked.get(&key.0).and_then(|k| k.get(&key.1));
        let head = set.and_then(|s| s.first().copied());
        let known = set.is_some_and(|s| s.contains(&offset));
        // Until the retry partition is read to its end, an earlier copy of
        // the key may still be unread: nothing of it is handed out.
        if inner.ready.contains(&q) {
            if !known {
                // Registered when read and removed since: its record was
                // settled (done or dead-lettered) through another copy.
                // Handling this stale copy again would put it behind later
                // records of its key; it is done.
                settle_stale(&job);
                return None;
            }
            if head == Some(offset) && !inner.busy.contains_key(&key) {
                inner.busy.insert(
                    key.clone(),
                    Busy {
                        origin_offset: offset,
                        retried: false,
                    },
                );
                dispatch(&mut inner, &job, key, offset);
                return Some(job);
            }
        }
        match inner.waiting.entry(key).or_default().insert(offset, job) {
            Some(old) => settle_stale(&old),
            None => inner.waiting_len += 1,
        }
        None
    }

    /// A worker finished the copy at `retry_offset` of retry partition
    /// `q`: `settled` (done or dead-lettered, acknowledged) removes its
    /// origin offset unless the worker parked it again. Returns the key's
    /// next copy when it may be handled now.
    pub(crate) fn finished(&self, q: i32, retry_offset: i64, settled: bool) -> Option<Job> {
        let mut inner = self.lock();
        let origin = inner.dispatched.remove(&(q, retry_offset))?;
        let key = (origin.tp.clone(), origin.key.clone());
        let retried = match inner.busy.remove(&key) {
            Some(b) if b.origin_offset == origin.offset => b.retried,
            Some(b) => {
                // Another copy of the key is being handled: not ours.
                inner.busy.insert(key, b);
                return None;
            }
            None => false,
        };
        if settled && !retried {
            remove(&mut inner, &key, origin.offset);
        }
        next(&mut inner, &key, q)
    }

    /// The relay settled `origin`'s record itself (dead-lettered or dropped
    /// when it expired). Returns the key's next copy when it may be handled.
    pub(crate) fn settled_by_relay(&self, origin: &Origin) -> Option<Job> {
        let key = (origin.tp.clone(), origin.key.clone());
        let q = self.retry_partition(origin.tp.partition);
        let mut inner = self.lock();
        remove(&mut inner, &key, origin.offset);
        next(&mut inner, &key, q)
    }

    /// The relay owns retry partition `q` and has read it to an end offset
    /// it measured after request number `covers` was handed out (at
    /// assignment, or for a [`renew`](KeyOrderState::renew)).
    /// Returns the copies that may be handled now (each key's head).
    pub(crate) fn set_ready(&self, q: i32, covers: u64) -> Vec<Job> {
        let n = self.retry_partitions;
        let mut inner = self.lock();
        inner.ready.insert(q);
        let c = inner.caught_up.entry(q).or_default();
        *c = (*c).max(covers);
        let keys: Vec<Key> = inner
            .waiting
            .keys()
            .filter(|(tp, _)| tp.partition.max(0) % n == q)
            .cloned()
            .collect();
        keys.iter().filter_map(|k| next(&mut inner, k, q)).collect()
    }

    /// The relay is giving retry partition `q` up: nothing more of it is
    /// handed out from now on (see [`KeyOrderState::in_flight`]).
    pub(crate) fn stop_handing_out(&self, q: i32) {
        self.lock().ready.remove(&q);
    }

    /// Copies of retry partition `q` a worker is handling. The relay waits
    /// for them before it gives `q` up: a write of theirs landing after the
    /// next owner read `q` to its end would be unknown to it, and it could
    /// release a later record of that key too early.
    pub(crate) fn in_flight(&self, q: i32) -> usize {
        self.lock()
            .dispatched
            .keys()
            .filter(|(p, _)| *p == q)
            .count()
    }

    /// Whether a copy of `origin`'s record is stale: its retry partition
    /// is read to the end and the record was settled through another copy
    /// since this one was read (so it is not blocked any more).
    pub(crate) fn is_stale(&self, origin: &Origin) -> bool {
        let inner = self.lock();
        inner
            .ready
            .contains(&self.retry_partition(origin.tp.partition))
            && !inner
                .blocked
                .get(&origin.tp)
                .and_then(|k| k.get(&origin.key))
                .is_some_and(|s| s.contains(&origin.offset))
    }

    /// Whether any copy from the retry side is being handled.
    pub(crate) fn any_in_flight(&self) -> bool {
        !self.lock().dispatched.is_empty()
    }

    /// A handed-out copy was dropped before a worker got it (its lease
    /// was revoked): no completion will come for it.
    pub(crate) fn forget(&self, q: i32, retry_offset: i64) {
        self.lock().dispatched.remove(&(q, retry_offset));
    }

    /// The relay gave retry partition `q` up: forget what it told about the
    /// origin partitions mapping to it (the next owner rebuilds it).
    pub(crate) fn unready(&self, q: i32) {
        let n = self.retry_partitions;
        let mine = |tp: &TopicPartition| tp.partition.max(0) % n == q;
        let mut inner = self.lock();
        inner.ready.remove(&q);
        inner.blocked.retain(|tp, _| !mine(tp));
        inner.waiting.retain(|(tp, _), _| !mine(tp));
        inner.waiting_len = inner.waiting.values().map(BTreeMap::len).sum();
        inner.busy.retain(|(tp, _), _| !mine(tp));
        inner.dispatched.retain(|_, o| !mine(&o.tp));
    }
}

/// Whether the keys of origin partition `tp` (retry partition `q`) are
/// known: `q` is ready and caught up to `tp`'s latest assignment.
fn known(inner: &Inner, tp: &TopicPartition, q: i32) -> bool {
    if !inner.ready.contains(&q) {
        return false;
    }
    let caught_up = inner.caught_up.get(&q).copied().unwrap_or(0);
    inner.assigned_max.get(&q).copied().unwrap_or(0) <= caught_up
        || inner.assigned.get(tp).copied().unwrap_or(0) <= caught_up
}

/// A copy whose record was settled through another copy: done, not handled.
fn settle_stale(job: &Job) {
    log::debug!(
        "key order: {}@{} is a copy of a record already settled; skipped",
        job.lease.tp,
        job.record.offset
    );
    job.lease.tracker().done(job.record.offset);
}

fn dispatch(inner: &mut Inner, job: &Job, key: Key, offset: i64) {
    inner.dispatched.insert(
        (job.lease.tp.partition, job.record.offset),
        Origin {
            tp: key.0,
            key: key.1,
            offset,
        },
    );
}

fn remove(inner: &mut Inner, key: &Key, offset: i64) {
    if let Some(keys) = inner.blocked.get_mut(&key.0) {
        if let Some(set) = keys.get_mut(&key.1) {
            set.remove(&offset);
            if set.is_empty() {
                keys.remove(&key.1);
            }
        }
        if keys.is_empty() {
            inner.blocked.remove(&key.0);
        }
    }
}

/// The key's waiting copy that is its head, if nothing of it is busy.
/// Waiting copies whose record was settled meanwhile are done, skipped.
fn next(inner: &mut Inner, key: &Key, q: i32) -> Option<Job> {
    if inner.busy.contains_key(key) || !inner.ready.contains(&q) {
        return None;
    }
    let set = inner.blocked.get(&key.0).and_then(|k| k.get(&key.1));
    let head = set.and_then(|s| s.first().copied());
    let waiting = inner.waiting.get_mut(key)?;
    // Everything below the head was settled (the head is the lowest
    // offset still blocked).
    let before = waiting.len();
    while let Some(entry) = waiting.first_entry() {
        if head.is_some_and(|h| *entry.key() >= h) {
            break;
        }
        settle_stale(&entry.remove()); // settled through another copy (see arrive)
    }
    let job = match waiting.first_key_value() {
        Some((&first, _)) if Some(first) == head => waiting.remove(&first),
        // The head is a retry still on the relay's heap, or being handled.
        _ => None,
    };
    inner.waiting_len -= before - waiting.len();
    if waiting.is_empty() {
        inner.waiting.remove(key);
    }
    let job = job?;
    let first = head?;
    inner.busy.insert(
        key.clone(),
        Busy {
            origin_offset: first,
            retried: false,
        },
    );
    dispatch(inner, &job, key.clone(), first);
    Some(job)
}

/// Parks `record` (read from its origin topic) behind its key: blocks the
/// key's offset and returns the held copy (not an attempt: attempts 0) for
/// its retry partition, with its key. The worker writes it once the
/// earlier copies of the key are acknowledged (worker.rs, `Writes`); the
/// record is done once the write is acknowledged. Only for a keyed record
/// (see [`KeyOrderState::must_hold`]).
pub(crate) fn hold(
    ctx: &Context,
    ko: &KeyOrderState,
    record: &Record,
    received_ms: i64,
) -> (OutRecord, (TopicPartition, Bytes)) {
    ko.block(record);
    let mut hs = RetryInfo::first(record, received_ms).headers(
        &record.headers,
        "held behind an earlier record of its key",
        None,
    );
    hs.push(Header::new(headers::HELD, "1"));
    let out = OutRecord::forward(
        record,
        ctx.retry_topic.clone(),
        ko.partitioning(record.partition),
        hs,
    );
    let key = record.key.clone().unwrap_or_default();
    (out, (record.topic_partition(), key))
}

/// The origin of a copy on the retry topic, from its retry headers (the
/// relay validated them). `None` for a keyless record.
pub(crate) fn origin_of(record: &Record, info: &RetryInfo) -> Option<Origin> {
    Some(Origin {
        tp: TopicPartition::new(info.origin_topic.clone(), info.origin_partition),
        key: record.key.clone()?,
        offset: info.origin_offset,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::lease::Lease;

    fn record(topic: &str, offset: i64, key: Option<&'static [u8]>) -> Record {
        Record {
            topic: topic.into(),
            partition: 0,
            offset,
            timestamp: 0,
            key: key.map(Bytes::from_static),
            value: None,
            headers: Vec::new(),
        }
    }

    fn job(lease: &Arc<Lease>, retry_offset: i64) -> Job {
        lease.tracker().track(retry_offset);
        let record = record("retry", retry_offset, Some(b"k"));
        Job {
            record,
            lease: lease.clone(),
            received_ms: 0,
        }
    }

    fn origin(offset: i64) -> Origin {
        Origin {
            tp: TopicPartition::new("t", 0),
            key: Bytes::from_static(b"k"),
            offset,
        }
    }

    /// The head is handed out, a held copy waits until the head is
    /// settled (not when it is parked again), stale copies are skipped.
    #[test]
    fn a_key_moves_on_only_when_its_head_is_settled() {
        let ko = KeyOrderState::new("r", 1);
        let lease = Lease::new(TopicPartition::new("retry", 0));
        for o in [10, 12] {
            ko.register(&origin(o));
        }
        // Not read to the end yet: nothing is handed out.
        assert!(ko.arrive(origin(12), job(&lease, 1)).is_none());
        assert!(ko.set_ready(0, 0).is_empty(), "12 is not the head");
        let head = ko
            .arrive(origin(10), job(&lease, 2))
            .expect("the head goes");
        assert_eq!(head.record.offset, 2);
        // Parked again: still blocks.
        ko.block(&record("t", 10, Some(b"k")));
        assert!(ko.finished(0, 2, true).is_none());
        // Its next copy comes due and is done: 12 is released.
        assert!(ko.arrive(origin(10), job(&lease, 3)).is_some());
        let next = ko.finished(0, 3, true).expect("12 is released");
        assert_eq!(next.record.offset, 1);
        assert_eq!(ko.in_flight(0), 1);
        assert!(ko.finished(0, 1, true).is_none());
        // (The consumer thread marks handed-out copies done.)
        for o in 1..=3 {
            lease.tracker().done(o);
        }
        // A late copy of 10 (settled) is stale: done, not handed out.
        assert!(ko.arrive(origin(10), job(&lease, 4)).is_none());
        assert_eq!(lease.tracker().to_commit(), Some(5), "all done");
        assert!(
            !ko.must_hold(&record("t", 20, None)),
            "keyless records are never held"
        );
    }
}

//! The relay thread: parks retry-topic records in a time-ordered heap and,
//! when each is due, sends it back to its origin topic or dead-letters it.
//!
//! Invariants:
//! - Due times come only from the record's headers (enqueued-at plus the
//!   policy's wait for its attempt), so a restarted relay needs no state.
//! - A retry-topic offset is committed only when every record at or below it
//!   was relayed or dead-lettered and the broker acknowledged the write
//!   (the same watermark tracker as the main path). Parked records are never
//!   committed: a crash re-reads and re-parks them.
//! - With a transport that has a [`Reader`](crate::transport::Reader) (the
//!   memory broker, Kafka), parking is hybrid: up to `max_parked` records
//!   are kept whole (no re-read: a burst falls due at memory speed), and
//!   the overflow is kept as 32-byte index entries, read again from the
//!   retry topic just before they are due (see `index.rs`). Past
//!   `max_parked` (plus an eighth, so the O(n) pass is batched) the
//!   latest-due whole records move to the index (`evict_whole`; their
//!   offsets stay tracked, so dropping the copy is safe), never one due
//!   within `GUARD`, malformed or of a revoked lease. So the whole part
//!   holds the earliest-due records: every indexed entry is due at or
//!   after `cut`, and, while `cut` is set, every evictable whole record at
//!   or before it. Refills have `HOT_MAX` of room on top of the whole
//!   part, so a heap full of far-due records never holds up an indexed
//!   one falling due. The index holds up to 100 × `max_parked` entries
//!   (10 M by default, ~500 MB with the offset tracker's share); past that
//!   its latest-due entries are evicted and rescanned later, so nothing
//!   pauses for far-due records and nothing due soon waits.
//! - Without a Reader (a custom transport) records are kept whole, and the
//!   heap is bounded by `max_parked`: past it the relay pauses its retry
//!   partitions instead of growing.
//!
//! - A parked record carries the [`Lease`] of the assignment that read it:
//!   once that lease is revoked, the record is dropped (uncommitted) and
//!   the next owner re-reads it.
//!
//! The wait for the next due record is the consumer's own `poll(timeout)`
//! with the timeout set to that due time: it plays the part of
//! `recv_deadline` and wakes early only for new records or group events.

mod deliver;
mod heap;
mod index;
mod parking;
pub(crate) mod private;

pub(crate) use self::index::ENTRY_BYTES as PARKED_ENTRY_BYTES;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::heap::SlabHeap;
use self::index::Index;
use self::private::Handoff;
use super::context::Context;
use super::lease::Lease;
use super::partitions::Partitions;
use super::poll::Poller;
use super::supervisor::{Doing, ThreadStatus};
use crate::clock::{deadline_after, now_ms};
use crate::headers::{self, DeadReason, RetryInfo};
use crate::pending::Pending;
use crate::policy::millis;
use crate::record::{OutRecord, Record, TopicPartition};
use crate::transport::{Consumer, ConsumerEvent};

/// Longest the relay blocks in poll with nothing due, so stop requests and
/// commits are noticed.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How soon the relay tries again to hand jobs to full worker queues.
const PRIVATE_RETRY: Duration = Duration::from_millis(5);
/// Most due records written in one batch (bigger batches made the
/// requests slower and the lateness worse on Tansu; see
/// [`RELAY_IN_FLIGHT`] for how many go unsettled at once).
const RELAY_BATCH: usize = 500;
/// How long a partition-count lookup of an origin topic is trusted.
const TOPIC_CACHE_TTL: Duration = Duration::from_secs(30);

/// What to do with a parked record once it is due.
#[derive(Debug)]
enum Plan {
    /// Valid headers: relay (or expire) at the due time.
    Retry(RetryInfo),
    /// Bad headers: dead-letter with reason `malformed`.
    Malformed(String),
}

struct Parked {
    /// The assignment of the partition that parked it; stale once revoked.
    lease: Arc<Lease>,
    record: Record,
    plan: Plan,
    /// Failed writes so far, for backoff.
    failures: u32,
    /// When it fell due (first), for the lateness histogram.
    #[cfg(feature = "metrics")]
    due: Instant,
}

/// A relay batch written and not yet settled.
struct InFlight {
    batch: Vec<Parked>,
    routes: Vec<Route>,
    /// One per written record (Origin and Dead routes), in order.
    pending: Vec<Pending>,
    /// The answers of `pending[..answered.len()]`, taken by [`InFlight::wait_until`].
    answered: Vec<crate::Result<crate::record::Delivered>>,
    now_wall: i64,
}

impl InFlight {
    /// Waits until `deadline` for the batch's answers, keeping those that
    /// came; true once every one is in.
    fn wait_until(&mut self, deadline: Instant) -> bool {
        while let Some(p) = self.pending.get(self.answered.len()) {
            match p.wait_deadline(deadline) {
                Some(r) => self.answered.push(r),
                None => return false,
            }
        }
        true
    }
}

/// A due record and where it goes.
enum Route {
    Origin(OutRecord),
    /// Private redelivery: to this engine's workers, nothing written.
    Private,
    Dead(OutRecord, DeadReason),
    /// Given up on with dead-lettering switched off.
    Drop(DeadReason),
}

struct Relay {
    ctx: Arc<Context>,
    consumer: Box<dyn Consumer>,
    heap: SlabHeap<Parked>,
    parts: Partitions,
    paused: bool,
    topic_cache: HashMap<String, (Option<i32>, Instant)>,
    last_commit: Instant,
    anchor: (Instant, i64),
    status: Arc<ThreadStatus>,
    /// The worker queues, in private mode.
    handoff: Option<Handoff>,
    /// Index-only parking of the overflow, when the transport has a Reader.
    index: Option<Index>,
    /// With an index: the earliest due time last moved from the heap to
    /// the index. With the whole part full, a record due at or after it
    /// goes straight to the index (it would be the next moved); cleared
    /// once the whole part has room again.
    cut: Option<Instant>,
    /// Relay batches written and not yet settled, oldest first. Kept
    /// across `deliver_due` calls, so a return to poll (see
    /// `DELIVER_BUDGET` in `deliver.rs`) does not wait out the writes; settled before a
    /// revoke is handled and before the final commit.
    in_flight: VecDeque<InFlight>,
}

pub(crate) fn run(
    ctx: Arc<Context>,
    consumer: Box<dyn Consumer>,
    status: Arc<ThreadStatus>,
    handoff: Option<Handoff>,
) -> Result<(), String> {
    let mut r = Relay {
        ctx,
        consumer,
        heap: SlabHeap::default(),
        parts: Partitions::default(),
        paused: false,
        topic_cache: HashMap::new(),
        last_commit: Instant::now(),
        anchor: (Instant::now(), now_us()),
        status,
        handoff,
        index: None,
        cut: None,
        in_flight: VecDeque::new(),
    };
    r.index = index::open(&r.ctx);
    let mut poller = Poller::new(
        "relay consumer",
        r.ctx.retry_topic.clone(),
        r.ctx.counters.clone(),
    );
    while !r.ctx.signal.stopping() {
        if let Some(h) = &mut r.handoff {
            // Key order: origin partitions assigned since the last turn.
            let retry_topic = &r.ctx.retry_topic;
            let parts = &r.parts;
            let consumer = &r.consumer;
            h.renew(
                &r.ctx,
                |q| {
                    parts
                        .get(&TopicPartition::new(retry_topic.clone(), q))
                        .is_some()
                },
                || consumer.progress(),
            );
        }
        r.deliver_due();
        r.update_pause();
        if r.last_commit.elapsed() >= r.ctx.commit_interval {
            r.last_commit = Instant::now();
            if let Err(e) = r.commit() {
                log::warn!("relay commit failed (retried next interval): {e}");
            }
        }
        let timeout = match r.next_wake() {
            // Jobs waiting for a full worker queue: look again soon.
            _ if r.handoff.as_ref().is_some_and(|h| h.queued() > 0) => PRIVATE_RETRY,
            // Held by the dead-letter limit: what is due waits, no spinning.
            Some(_) if r.ctx.dead_letters_paused() => IDLE_POLL,
            Some(due) => due.saturating_duration_since(Instant::now()).min(IDLE_POLL),
            None => IDLE_POLL,
        };
        match poller.poll(&mut *r.consumer, timeout, &r.ctx.health.relay_polls)? {
            Some(event) => {
                r.handle(event);
                if let Some(h) = r.handoff.as_mut().filter(|h| h.catching_up()) {
                    h.on_progress(&r.ctx, &r.consumer.progress()); // key order
                }
            }
            // Keep relaying what is due while the poll side recovers.
            None => {
                let signal = r.ctx.signal.clone();
                poller.back_off(&signal, || r.deliver_due());
            }
        }
    }
    r.shutdown()
}

impl Relay {
    fn handle(&mut self, event: ConsumerEvent) {
        match event {
            ConsumerEvent::Records(records) => {
                // Records come in runs of one partition: one lease lookup
                // per run, and the clocks read once per poll rather than
                // per record.
                let (now, at) = (now_ms(), Instant::now());
                self.refresh_anchor(at);
                let mut run: Option<(TopicPartition, Option<Arc<Lease>>)> = None;
                for record in records {
                    let same = run.as_ref().is_some_and(|(tp, _)| {
                        tp.partition == record.partition && tp.topic == record.topic
                    });
                    if !same {
                        let tp = record.topic_partition();
                        let lease = self.parts.get(&tp).map(|p| p.lease.clone());
                        run = Some((tp, lease));
                    }
                    if let Some((_, Some(lease))) = &run {
                        let lease = lease.clone();
                        self.park(record, lease, now, at);
                    }
                }
                self.evict_whole();
                if let Some(ix) = &mut self.index {
                    ix.evict_if_full(&self.ctx.counters);
                }
                self.count_parked();
            }
            ConsumerEvent::Assigned(tps) => {
                log::info!("relay: assigned {}", tps.len());
                self.paused = false;
                self.parts.assign(tps.clone());
                if let Some(ix) = &mut self.index {
                    for tp in &tps {
                        if let Some(p) = self.parts.get(tp) {
                            ix.assign(tp, p.lease.clone());
                        }
                    }
                }
                if let Some(h) = &mut self.handoff {
                    let progress = self.consumer.progress();
                    h.on_assigned(&self.ctx, &tps, &progress); // key order: catch-up
                }
                self.count_partitions();
            }
            ConsumerEvent::Revoked(tps) => {
                self.count_rebalance();
                // Written records count in this commit once acknowledged.
                self.settle_in_flight();
                if let Err(e) = self.commit() {
                    log::warn!("relay commit on revoke failed: {e}");
                }
                self.release(&tps);
            }
            ConsumerEvent::Lost(tps) => {
                self.count_rebalance();
                // Failed writes re-park first, so the release drops them.
                self.settle_in_flight();
                self.release(&tps);
            }
        }
    }

    /// Parked records of released partitions are dropped uncommitted: the
    /// next owner re-reads and re-parks them.
    fn release(&mut self, tps: &[TopicPartition]) {
        self.parts.revoke(tps);
        self.parts.remove(tps);
        self.heap.retain(|p| !p.lease.is_revoked());
        if let Some(ix) = &mut self.index {
            ix.release(tps);
        }
        if let Some(h) = &mut self.handoff {
            h.on_released(&self.ctx, tps); // key order: forget their keys
            h.flush(&self.ctx); // drops the released partitions' queued jobs
        }
        self.count_parked();
        self.count_partitions();
    }

    /// When the relay next has work: the earliest whole record's due time
    /// or the index's next refill.
    fn next_wake(&self) -> Option<Instant> {
        let index = self.index.as_ref().and_then(Index::next_wake);
        match (self.heap.peek_due(), index) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `Stats::relay_rebalances`.
    fn count_rebalance(&self) {
        self.ctx
            .counters
            .relay_rebalances
            .fetch_add(1, Ordering::Relaxed);
    }

    /// `Stats::relay_partitions`.
    fn count_partitions(&self) {
        self.ctx
            .counters
            .relay_partitions
            .store(self.parts.len() as i64, Ordering::Relaxed);
    }

    /// Parked = kept whole + indexed + evicted for a rescan.
    fn count_parked(&self) {
        let c = &self.ctx.counters;
        let (indexed, unindexed) = self
            .index
            .as_ref()
            .map_or((0, 0), |ix| (ix.len(), ix.unindexed()));
        c.parked_unindexed
            .store(unindexed as i64, Ordering::Relaxed);
        c.parked.store(
            (self.heap.len() + indexed + unindexed) as i64,
            Ordering::Relaxed,
        );
    }

    /// Parks a record of a partition of ours (`lease`), read at `now`
    /// (wall ms) and `at`.
    fn park(&mut self, record: Record, lease: Arc<Lease>, now: i64, at: Instant) {
        if !lease.tracker().track(record.offset) {
            return;
        }
        let plan = self.plan(&record, now, at);
        // Key order: every copy blocks its key; a held one waits for its
        // key's turn in the handoff, not on the time heap (held copies are
        // kept whole there, never indexed).
        if let (Plan::Retry(info), Some(h)) = (&plan, &mut self.handoff) {
            if h.on_read(&self.ctx, &lease, &record, info) {
                return;
            }
        }
        let due = self.due_of(&record, &plan);
        self.place(lease, record, plan, due, 0);
    }

    /// Renews the (Instant, wall µs) anchor of `due_of` once it is a
    /// second old; called once per batch of records, before `due_of`.
    fn refresh_anchor(&mut self, at: Instant) {
        if at.saturating_duration_since(self.anchor.0) > Duration::from_secs(1) {
            self.anchor = (Instant::now(), now_us());
        }
    }

    /// When a parked record is due, from its headers alone.
    fn due_of(&self, record: &Record, plan: &Plan) -> Instant {
        match plan {
            Plan::Retry(info) => {
                let seed = u64::from(info.origin_partition as u32)
                    .rotate_left(40)
                    .wrapping_add(info.origin_offset as u64)
                    ^ fnv(info.origin_topic.as_bytes());
                let wait = self.ctx.policy.interval_for(info.attempts.max(1), seed);
                // A due time the handler chose (`retry_after`) wins over the
                // policy's wait; it is clamped to the moment the record
                // expires, so a forged or stale far-future `retry.due-at`
                // cannot park a record for longer than the policy allows.
                let due_ms = match info.due_at {
                    Some(d) => d.min(
                        info.first_received_at
                            .saturating_add(millis(self.ctx.policy.max_retry_duration))
                            .saturating_add(1),
                    ),
                    None => info.enqueued_at.saturating_add(millis(wait)),
                };
                // Wall-clock due time to the monotonic clock, through one
                // (Instant, wall µs) anchor per second (`refresh_anchor`):
                // records due in the same millisecond share one instant and
                // one wake-up, and the instant is never before the
                // wall-clock due time.
                let (ai, aus) = self.anchor;
                let ahead = due_ms.saturating_mul(1000).saturating_sub(aus).max(0) as u64;
                ai.checked_add(Duration::from_micros(ahead))
                    .unwrap_or_else(|| deadline_after(Duration::MAX))
            }
            Plan::Malformed(reason) => {
                log::warn!(
                    "relay: {}@{}: malformed retry headers: {reason}",
                    record.topic_partition(),
                    record.offset
                );
                Instant::now()
            }
        }
    }

    /// What to do with a parked record read at `now` (wall ms) and `at`.
    fn plan(&mut self, record: &Record, now: i64, at: Instant) -> Plan {
        if let Some(h) = record.header(headers::UNDECODABLE) {
            let why = h
                .value
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            return Plan::Malformed(format!("undecodable record batch: {why}"));
        }
        let info = match RetryInfo::parse(record, now) {
            Ok(i) => i,
            Err(m) => return Plan::Malformed(m.0),
        };
        if !self.ctx.topics.iter().any(|t| *t == *info.origin_topic) {
            return Plan::Malformed(format!(
                "origin topic {:?} is not one of this engine's topics",
                info.origin_topic
            ));
        }
        match self.partition_count(&info.origin_topic, at) {
            Some(_) => Plan::Retry(info),
            None => Plan::Malformed(format!(
                "origin topic {:?} does not exist",
                info.origin_topic
            )),
        }
    }

    /// The partition count of `topic`, cached for `TOPIC_CACHE_TTL` (`now`:
    /// the caller's clock reading, one per batch of records).
    fn partition_count(&mut self, topic: &str, now: Instant) -> Option<i32> {
        if let Some((n, at)) = self.topic_cache.get(topic) {
            if now.saturating_duration_since(*at) < TOPIC_CACHE_TTL {
                return *n;
            }
        }
        match self.ctx.transport.partition_count(topic) {
            Ok(n) => {
                self.topic_cache
                    .insert(topic.to_string(), (n, Instant::now()));
                n
            }
            // Unknown because the broker is unreachable: assume it exists,
            // the write will fail and be retried rather than dead-lettering
            // a good record on a transient error.
            // Remembered for a few seconds, so an outage costs one lookup
            // per topic rather than one per parked record.
            Err(e) => {
                log::warn!("relay: partition count of {topic}: {e}");
                let retry_at = Instant::now()
                    .checked_sub(TOPIC_CACHE_TTL - Duration::from_secs(5))
                    .unwrap_or_else(Instant::now);
                // Some(0): exists, partition unknown (the default partitioner is used).
                self.topic_cache
                    .insert(topic.to_string(), (Some(0), retry_at));
                Some(0)
            }
        }
    }

    fn commit(&mut self) -> crate::Result<()> {
        self.parts.commit_all(
            &mut *self.consumer,
            &self.ctx.counters,
            &self.ctx.health.relay_commits,
        )
    }

    fn shutdown(mut self) -> Result<(), String> {
        // Written before the stop: settled (or, unanswered, re-parked)
        // before the final commit.
        self.settle_in_flight();
        // Parked records stay uncommitted: the next relay re-reads them.
        // So do due ones still in the handoff queue (they never reached a
        // worker); only those a worker had and did not finish by the
        // deadline count as abandoned.
        let mut unfinished = 0;
        if let Some(h) = &mut self.handoff {
            // Private redelivery: records handed to the workers are marked
            // done by the consumer thread, which drains their completions
            // as it stops. Commit after that, not before, or a record
            // settled just before the stop is handled again by the next
            // relay (a duplicate a graceful stop must not make).
            h.abandon(&self.ctx);
            let until = self.ctx.signal.drain_until().unwrap_or_else(Instant::now);
            let busy = || -> usize {
                self.parts
                    .values()
                    .map(|p| p.lease.outstanding.load(Ordering::Relaxed))
                    // Saturating: a miscount must cost a wait, not a panic.
                    .fold(0, usize::saturating_add)
            };
            while busy() > 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
            unfinished = busy();
        }
        self.status.step(Doing::Committing);
        let committed = self.commit();
        if unfinished > 0 {
            let from: Vec<(TopicPartition, i64)> = self
                .parts
                .iter_mut()
                .filter(|(_, p)| p.lease.outstanding.load(Ordering::Relaxed) > 0)
                .filter_map(|(tp, p)| Some((tp.clone(), p.lease.tracker().uncommitted_from()?)))
                .collect();
            log::warn!(
                "{}: relay shutdown: {unfinished} redelivered records still in the handlers, not committed",
                self.ctx.group_id
            );
            self.ctx.signal.add_to_report(|r| {
                r.abandoned += unfinished as u64;
                r.uncommitted.extend(from);
            });
        }
        if let Err(e) = committed {
            let error = format!("relay final commit failed: {e}");
            log::warn!("{}: {error}", self.ctx.group_id);
            let (_, uncommitted) = self.parts.unfinished();
            self.ctx.signal.add_to_report(|r| {
                r.uncommitted.extend(uncommitted);
                r.errors.push(error);
            });
        }
        self.status.step(Doing::LeavingGroup);
        let closed = if self.ctx.signal.for_restart() {
            self.consumer.close_for_restart()
        } else {
            self.consumer.close()
        };
        if let Err(e) = closed {
            log::debug!("relay leave group: {e}");
        }
        self.status.step(Doing::Idle);
        Ok(())
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

//! Private redelivery: a due record goes from the relay straight to this
//! engine's handler pool instead of back to its origin topic.
//!
//! Invariants:
//! - The relay tracked the record's retry-topic offset when it parked it;
//!   handing it to a worker does not mark it done. The worker's completion
//!   (through the consumer thread, which marks any lease's tracker) does,
//!   once the record is settled: handled `Done`, parked again with an
//!   acknowledged write, or dead-lettered with an acknowledged write. So the
//!   relay's commits of the retry topic stay at-least-once.
//! - A job carries the relay's lease of its retry partition: a revoke or
//!   lost partition makes the workers skip it (uncommitted, re-read by the
//!   next owner), exactly as for the origin path.
//! - Same key → same worker: the consumer thread's rule (murmur2 of the key
//!   modulo the worker count), so a retried record shares its key's worker.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};

use super::super::context::Context;
use super::super::job::{worker_for, Job, JOB_BATCH};
use super::super::keyorder::{origin_of, Origin, READY_WAIT};
use super::super::lease::Lease;
use crate::clock::now_ms;
use crate::headers::{self, RetryInfo};
use crate::record::{Record, TopicPartition};
use crate::transport::PartitionProgress;

/// Where the relay sends a due record, set with
/// [`EngineBuilder::redelivery`](crate::EngineBuilder::redelivery).
///
/// Switching a running group from one mode to the other (a rolling restart
/// with the new setting) is safe: nothing in a parked record depends on the
/// mode, so whatever is parked when an instance starts is redelivered the
/// new instance's way. During the roll each instance uses its own mode for
/// the retry partitions it is assigned.
///
/// ```
/// use kafka_retry::{Engine, MemoryBroker, Outcome, Redelivery};
/// let builder = Engine::builder(MemoryBroker::new())
///     .group_id("billing")
///     .topics(["orders"])
///     .redelivery(Redelivery::Private)
///     .handler(|_r| Outcome::Done);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Redelivery {
    /// The article's pattern: the relay writes a due record back to its
    /// origin topic, where this group reads it again. Every other group
    /// reading that topic sees it too.
    #[default]
    Origin,
    /// The relay hands a due record straight to this engine's workers;
    /// nothing is ever written to an origin topic by the engine, so other
    /// groups never see a retry. The handler sees the record with its origin
    /// topic, partition and offset (its `retry.*` headers as on the origin
    /// path). Counted in [`Stats::redelivered_private`](crate::Stats::redelivered_private)
    /// instead of `relayed` and `received`.
    Private,
}

/// Most jobs the relay holds for full worker queues before it stops taking
/// due records off its heap (they wait there, uncommitted).
const MAX_QUEUED: usize = 4 * JOB_BATCH;

/// A retry partition the relay reads to an end offset before its copies
/// are handed out and the origin partitions mapping to it are dispatched
/// (key order; see keyorder.rs).
struct CatchUp {
    end: End,
    /// Give up waiting (hand out what was read so far) at.
    give_up: Instant,
    /// The last catch-up request (keyorder.rs) this one covers: its end
    /// was measured after that request was made.
    covers: u64,
}

enum End {
    /// A ListOffsets answer: caught up once a record at or past `end - 1`
    /// was read.
    Listed(i64),
    /// The log end the relay consumer's fetch replies report
    /// ([`Handoff::on_progress`]): the first one seen at or past `floor`
    /// (0 for a fresh assignment; for a renewal the ListOffsets answer
    /// after the request, so a log end seen before it does not count)
    /// becomes the target, and the partition is caught up once the
    /// consumer's position reaches it.
    Progress { floor: i64, target: Option<i64> },
}

/// The relay's side of the worker queues, in private mode.
pub(crate) struct Handoff {
    jobs: Vec<Sender<Vec<Job>>>,
    outbox: Vec<VecDeque<Job>>,
    round_robin: usize,
    /// The relay's group, for its committed offsets (key order's catch-up).
    relay_group: String,
    /// Key order: retry partitions being read to an end offset.
    catching_up: HashMap<i32, CatchUp>,
    /// Key order: per owned retry partition, the offset after the last
    /// record the relay read (for a renewal without progress reports).
    read_to: HashMap<i32, i64>,
}

impl Handoff {
    pub(crate) fn new(jobs: Vec<Sender<Vec<Job>>>, relay_group: String) -> Self {
        Handoff {
            outbox: jobs.iter().map(|_| VecDeque::new()).collect(),
            jobs,
            round_robin: 0,
            relay_group,
            catching_up: HashMap::new(),
            read_to: HashMap::new(),
        }
    }

    /// Key order: the relay was assigned `tps`. Each is "caught up" once
    /// the relay has read it to its end offset as of now (nothing to read
    /// when the relay group's committed offset is there already); until
    /// then no copy of it is handed out and the origin partitions mapping
    /// to it are not dispatched (see keyorder.rs).
    ///
    /// Where the relay's consumer reports its [`progress`](crate::transport::Consumer::progress)
    /// (both transports do), the end is the log end of its fetch replies
    /// instead, checked by [`Handoff::on_progress`]: Tansu 0.6 answers
    /// ListOffsets "latest" with the last batch's base offset + 1, below
    /// the high watermark its fetches report, which would declare a
    /// partition caught up before its blocked keys were read.
    pub(crate) fn on_assigned(
        &mut self,
        ctx: &Context,
        tps: &[TopicPartition],
        progress: &[PartitionProgress],
    ) {
        let Some(ko) = &ctx.key_order else { return };
        // Read before the end is measured: the requests made so far are
        // covered by this catch-up.
        let covers = ko.request_number();
        let give_up = Instant::now() + READY_WAIT;
        for tp in tps {
            self.read_to.remove(&tp.partition);
        }
        let by_progress = |tp: &TopicPartition| progress.iter().any(|p| &p.partition == tp);
        if tps.iter().all(by_progress) {
            for tp in tps {
                let end = End::Progress {
                    floor: 0,
                    target: None,
                };
                self.catching_up.insert(
                    tp.partition,
                    CatchUp {
                        end,
                        give_up,
                        covers,
                    },
                );
            }
            return;
        }
        let ends = self.list_ends(ctx);
        for tp in tps {
            let q = tp.partition;
            match &ends {
                Ok((latest, committed)) => {
                    let end = latest.get(&q).copied().unwrap_or(0);
                    let from = committed.get(&q).copied().unwrap_or(0);
                    self.start(ctx, q, End::Listed(end), from, covers);
                }
                Err(e) => {
                    // Unknown end: wait the bounded time, then hand out.
                    log::warn!("relay: end offset of {tp} for key order: {e}");
                    self.start(ctx, q, End::Listed(i64::MAX), 0, covers);
                }
            }
        }
    }

    /// Key order: origin partitions mapping to retry partitions this relay
    /// owns (`owned`) were assigned to this engine since the last call
    /// ([`KeyOrderState::renew`](super::super::keyorder::KeyOrderState::renew)):
    /// each such retry partition is read again to its current end. A
    /// request for one it does not own waits for the catch-up of its
    /// assignment, which covers it.
    pub(crate) fn renew(
        &mut self,
        ctx: &Context,
        owned: impl Fn(i32) -> bool,
        progress: impl FnOnce() -> Vec<PartitionProgress>,
    ) {
        let Some(ko) = &ctx.key_order else { return };
        let (qs, covers) = ko.requests();
        let qs: Vec<i32> = qs.into_iter().filter(|&q| owned(q)).collect();
        if qs.is_empty() {
            return;
        }
        let progress = progress();
        // Measured after the requests were taken (so after the origin
        // assignments that made them): every copy a former owner of those
        // origin partitions wrote is below it.
        let ends = self.list_ends(ctx);
        for q in qs {
            let seen = progress
                .iter()
                .find(|p| p.partition.topic == ctx.retry_topic && p.partition.partition == q);
            match &ends {
                Ok((latest, committed)) => {
                    let end = latest.get(&q).copied().unwrap_or(0);
                    if seen.is_some() {
                        let end = End::Progress {
                            floor: end,
                            target: None,
                        };
                        self.start(ctx, q, end, 0, covers);
                    } else {
                        let read = self.read_to.get(&q).copied().unwrap_or(0);
                        let from = read.max(committed.get(&q).copied().unwrap_or(0));
                        self.start(ctx, q, End::Listed(end), from, covers);
                    }
                }
                Err(e) => {
                    log::warn!("relay: end offset of retry partition {q} for key order: {e}");
                    self.start(ctx, q, End::Listed(i64::MAX), 0, covers);
                }
            }
        }
        // A renewal whose target is known already (memory broker) may be
        // done at once.
        self.on_progress(ctx, &progress);
    }

    /// Latest and committed offsets of the retry topic, by partition.
    fn list_ends(&self, ctx: &Context) -> crate::Result<(HashMap<i32, i64>, BTreeMap<i32, i64>)> {
        let mut r = ctx.transport.reader()?;
        let latest = r
            .offsets(&ctx.retry_topic)?
            .iter()
            .map(|o| (o.partition, o.latest))
            .collect();
        let committed = r.committed(&self.relay_group, &ctx.retry_topic)?;
        Ok((latest, committed))
    }

    /// Starts (or restarts: a later end replaces an earlier one) the
    /// catch-up of `q`; `from` is where the relay stands in it.
    fn start(&mut self, ctx: &Context, q: i32, end: End, from: i64, covers: u64) {
        if let End::Listed(e) = end {
            if e <= from {
                self.catching_up.remove(&q);
                self.ready_covering(ctx, q, covers);
                return;
            }
        }
        let give_up = Instant::now() + READY_WAIT;
        self.catching_up.insert(
            q,
            CatchUp {
                end,
                give_up,
                covers,
            },
        );
    }

    /// Key order: the relay gave `tps` up; their keys are forgotten here.
    pub(crate) fn on_released(&mut self, ctx: &Context, tps: &[TopicPartition]) {
        let Some(ko) = &ctx.key_order else { return };
        for tp in tps {
            ko.stop_handing_out(tp.partition);
        }
        self.flush(ctx); // drops (and forgets) the revoked leases' queued copies
                         // Let the copies being handled finish first (bounded like a revoke):
                         // their writes must land before the next owner reads to the end.
        let deadline = Instant::now() + ctx.revoke_timeout;
        while tps.iter().any(|tp| ko.in_flight(tp.partition) > 0) && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        for tp in tps {
            self.catching_up.remove(&tp.partition);
            self.read_to.remove(&tp.partition);
            ko.unready(tp.partition);
        }
    }

    /// Key order: a copy the relay read (valid headers, `info`). Its key is
    /// blocked from now on; a held copy is queued for its key here instead
    /// of the heap (true: taken).
    pub(crate) fn on_read(
        &mut self,
        ctx: &Context,
        lease: &Arc<Lease>,
        record: &Record,
        info: &RetryInfo,
    ) -> bool {
        let Some(ko) = &ctx.key_order else {
            return false;
        };
        let q = record.partition;
        self.read_to.insert(q, record.offset.saturating_add(1));
        if let Some(c) = self.catching_up.get(&q) {
            if matches!(c.end, End::Listed(end) if record.offset.saturating_add(1) >= end) {
                self.ready(ctx, q);
            }
        }
        let Some(origin) = origin_of(record, info) else {
            return false; // keyless: never blocks, never held
        };
        ko.register(&origin);
        if record.header(headers::HELD).is_none() {
            return false;
        }
        let job = Job {
            record: record.clone(),
            lease: lease.clone(),
            received_ms: now_ms(),
        };
        if let Some(job) = ko.arrive(origin, job) {
            self.queue(ctx, job);
        }
        true
    }

    /// Key order: a due copy whose record was settled through another copy
    /// (true): it is done, neither handed out nor expired into the DLT.
    pub(crate) fn drop_stale(&self, ctx: &Context, lease: &Lease, record: &Record) -> bool {
        let Some(ko) = &ctx.key_order else {
            return false;
        };
        let stale = origin_from_headers(record).is_some_and(|o| ko.is_stale(&o));
        if stale {
            log::debug!(
                "key order: {}@{} is a copy of a record already settled; skipped",
                lease.tp,
                record.offset
            );
            lease.tracker().done(record.offset);
        }
        stale
    }

    /// Key order: the relay dead-lettered (or dropped) `record` itself.
    pub(crate) fn on_relay_settled(&mut self, ctx: &Context, record: &Record) {
        let Some(ko) = &ctx.key_order else { return };
        let Some(origin) = origin_from_headers(record) else {
            return;
        };
        if let Some(job) = ko.settled_by_relay(&origin) {
            self.queue(ctx, job);
        }
    }

    /// `q`'s catch-up is over (read to its end, or given up on).
    fn ready(&mut self, ctx: &Context, q: i32) {
        if let Some(c) = self.catching_up.remove(&q) {
            self.ready_covering(ctx, q, c.covers);
        }
    }

    fn ready_covering(&mut self, ctx: &Context, q: i32, covers: u64) {
        if let Some(ko) = &ctx.key_order {
            for job in ko.set_ready(q, covers) {
                self.queue(ctx, job);
            }
        }
    }

    /// Key order: a retry partition is caught up once the relay has taken
    /// (and registered) every record below the log end its consumer saw in
    /// a fetch reply after the catch-up started (see [`End::Progress`]).
    pub(crate) fn on_progress(&mut self, ctx: &Context, progress: &[PartitionProgress]) {
        let mut done = Vec::new();
        for p in progress {
            if p.partition.topic != ctx.retry_topic {
                continue;
            }
            let q = p.partition.partition;
            let Some(CatchUp {
                end: End::Progress { floor, target },
                ..
            }) = self.catching_up.get_mut(&q)
            else {
                continue;
            };
            if target.is_none() {
                *target = p.log_end.filter(|end| end >= floor);
            }
            if matches!((p.position, *target), (Some(at), Some(end)) if at >= end) {
                done.push(q);
            }
        }
        for q in done {
            self.ready(ctx, q);
        }
    }

    /// Whether a retry partition is still being caught up (key order).
    pub(crate) fn catching_up(&self) -> bool {
        !self.catching_up.is_empty()
    }

    /// Catch-ups that took longer than [`READY_WAIT`] end (with a warning).
    fn tick(&mut self, ctx: &Context) {
        if self.catching_up.is_empty() {
            return;
        }
        let now = Instant::now();
        let late: Vec<i32> = self
            .catching_up
            .iter()
            .filter(|(_, c)| c.give_up <= now)
            .map(|(q, _)| *q)
            .collect();
        for q in late {
            log::warn!(
                "relay: retry partition {q} not read to its end within {READY_WAIT:?}; handing its copies out as read so far"
            );
            self.ready(ctx, q);
        }
    }

    /// Jobs waiting for a worker queue.
    pub(crate) fn queued(&self) -> usize {
        self.outbox.iter().map(VecDeque::len).sum()
    }

    /// Whether the relay should stop taking due records for now.
    pub(crate) fn full(&self) -> bool {
        self.queued() >= MAX_QUEUED
    }

    /// Queues `job` for its key's worker (counted in flight, as the
    /// consumer thread counts its jobs: the completion subtracts it).
    pub(crate) fn push(&mut self, ctx: &Context, job: Job) {
        if let Some(ko) = &ctx.key_order {
            // Key order: a due copy waits while its key's head is not it.
            if let Some(origin) = origin_from_headers(&job.record) {
                if let Some(job) = ko.arrive(origin, job) {
                    self.queue(ctx, job);
                }
                return;
            }
        }
        self.queue(ctx, job);
    }

    fn queue(&mut self, ctx: &Context, mut job: Job) {
        // Handed out now: a held copy's retry history starts at its
        // release (keyorder.rs), not when the relay read it, which may be
        // long before (it waited behind its key).
        job.received_ms = now_ms();
        let w = worker_for(
            job.record.key.as_deref(),
            self.jobs.len(),
            &mut self.round_robin,
        );
        ctx.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        ctx.counters
            .redelivered_private
            .fetch_add(1, Ordering::Relaxed);
        // Balanced by the consumer thread's completion (or by dropping the
        // job): the relay's final commit waits for it to reach 0.
        job.lease.outstanding.fetch_add(1, Ordering::Relaxed);
        self.outbox[w].push_back(job);
    }

    /// At shutdown: drops the jobs no worker queue took (uncommitted, the
    /// next relay re-reads them).
    pub(crate) fn abandon(&mut self, ctx: &Context) {
        for outbox in &mut self.outbox {
            for job in outbox.drain(..) {
                job.lease.outstanding.fetch_sub(1, Ordering::Relaxed);
                ctx.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                if let Some(ko) = &ctx.key_order {
                    ko.forget(job.lease.tp.partition, job.record.offset);
                }
            }
        }
    }

    /// Hands queued jobs to the workers without blocking; what does not fit
    /// waits for the next call. Jobs of revoked leases are dropped here
    /// (uncommitted: the next owner re-reads them).
    pub(crate) fn flush(&mut self, ctx: &Context) {
        self.tick(ctx);
        for (w, outbox) in self.outbox.iter_mut().enumerate() {
            let before = outbox.len();
            outbox.retain(|j| {
                let keep = !j.lease.is_revoked();
                if !keep {
                    j.lease.outstanding.fetch_sub(1, Ordering::Relaxed);
                    if let Some(ko) = &ctx.key_order {
                        ko.forget(j.lease.tp.partition, j.record.offset);
                    }
                }
                keep
            });
            let dropped = before - outbox.len();
            if dropped > 0 {
                ctx.counters
                    .in_flight
                    .fetch_sub(dropped as i64, Ordering::Relaxed);
            }
            while !outbox.is_empty() {
                let n = outbox.len().min(JOB_BATCH);
                let mut batch = ctx.spares.take();
                batch.extend(outbox.drain(..n));
                match self.jobs[w].try_send(batch) {
                    Ok(()) => {}
                    Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => {
                        for job in batch.into_iter().rev() {
                            outbox.push_front(job);
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// The origin of a retry-topic copy, from its headers; `None` when it has
/// no key or the headers are missing (never blocked then).
fn origin_from_headers(record: &Record) -> Option<Origin> {
    Some(Origin {
        tp: TopicPartition::new(
            record.origin_topic()?.to_string(),
            record.origin_partition()?,
        ),
        key: record.key.clone()?,
        offset: record.origin_offset()?,
    })
}

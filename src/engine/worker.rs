//! The handler pool: worker threads that run the user's handler and write
//! retries and dead letters.
//!
//! A worker keeps its writes to the retry and dead-letter topics in flight
//! while it handles the next records, and reports a record done only once
//! its write is acknowledged.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::context::Context;
use super::job::{Completion, Job, JOB_BATCH};
use super::lease::Lease;
use super::panic::panic_message;
use super::supervisor::{Doing, ThreadStatus};
use super::writes::{await_ack, dead_letter_record, send_until_acked};
use crate::clock::now_ms;
use crate::handler::{Handler, Outcome};
use crate::headers::{self, DeadReason, RetryInfo};
use crate::pending::Pending;
use crate::policy::millis;
use crate::record::{OutRecord, Partitioning, Record, TopicPartition};

use bytes::Bytes;

/// Longest a worker holds finished records before reporting them.
const COMPLETION_FLUSH: Duration = Duration::from_millis(1);

pub(crate) fn run_worker(
    ctx: Arc<Context>,
    handler: Arc<dyn Handler>,
    jobs: Receiver<Vec<Job>>,
    completions: Sender<Vec<Completion>>,
    status: Arc<ThreadStatus>,
) {
    // Writes to the retry or dead-letter topic still waiting for their
    // acknowledgement, oldest first: the worker goes on with the next
    // records (and the next batches) meanwhile, so neither a round trip per
    // retry nor one per batch caps the worker's throughput. The writer
    // batches them with every other worker's (`BatchWriter`).
    let mut writes = Writes::default();
    let mut out: Vec<Completion> = Vec::new();
    // Whether the last job's lease is of the retry topic (private
    // redelivery), decided once per lease rather than per record.
    let mut private: Option<(Arc<Lease>, bool)> = None;
    loop {
        let mut batch = if writes.is_empty() {
            // Ends when the consumer thread drops its sender (shutdown by
            // disconnection).
            match jobs.recv() {
                Ok(b) => b,
                Err(_) => return,
            }
        } else {
            match jobs.try_recv() {
                Ok(b) => b,
                Err(TryRecvError::Disconnected) => {
                    status.step(Doing::AwaitingAck);
                    reap(&ctx, &mut writes, &mut out, Reap::All);
                    status.step(Doing::Idle);
                    let _ = completions.send(out);
                    return;
                }
                Err(TryRecvError::Empty) => {
                    // Nothing else to do: wait a step for the oldest write,
                    // then report what is finished and look for jobs again.
                    status.step(Doing::AwaitingAck);
                    reap(&ctx, &mut writes, &mut out, Reap::Step);
                    status.step(Doing::Idle);
                    if !out.is_empty() && completions.send(take_sized(&mut out)).is_err() {
                        return;
                    }
                    continue;
                }
            }
        };
        let mut last_flush = Instant::now();
        for job in batch.drain(..) {
            reap(&ctx, &mut writes, &mut out, Reap::Ready);
            // Too many writes unanswered (a slow or unreachable broker):
            // wait for the oldest, so memory stays bounded.
            if writes.len() >= MAX_WRITES {
                status.step(Doing::AwaitingAck);
                while writes.len() >= MAX_WRITES {
                    reap(&ctx, &mut writes, &mut out, Reap::Oldest);
                }
                status.step(Doing::Idle);
            }
            // Report finished records before moving to another partition
            // and at least every millisecond, so a slow record never holds
            // back the commits (or a revoke) of records finished before it
            // in other partitions. Within one partition a slow record holds
            // back at most its own predecessors' reports, for its duration.
            let switch = out
                .last()
                .is_some_and(|c| !Arc::ptr_eq(&c.lease, &job.lease));
            if !out.is_empty() && (switch || last_flush.elapsed() >= COMPLETION_FLUSH) {
                let n = out.len();
                if completions
                    .send(std::mem::replace(&mut out, Vec::with_capacity(n)))
                    .is_err()
                {
                    return;
                }
                last_flush = Instant::now();
            }
            // The dead-letter limit: no new record reaches the handler
            // until it is lifted (or the record is no longer ours).
            if ctx.breaker.is_some() {
                while ctx.dead_letters_paused() && !gives_up(&ctx, &job.lease) {
                    reap(&ctx, &mut writes, &mut out, Reap::Ready);
                    if !out.is_empty() {
                        let n = out.len();
                        if completions
                            .send(std::mem::replace(&mut out, Vec::with_capacity(n)))
                            .is_err()
                        {
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let is_private = match &private {
                Some((lease, p)) if Arc::ptr_eq(lease, &job.lease) => *p,
                _ => {
                    let p = job.lease.tp.topic == ctx.retry_topic;
                    private = Some((job.lease.clone(), p));
                    p
                }
            };
            let step = if gives_up(&ctx, &job.lease) {
                Step::Finished(false)
            } else {
                // The handler's panics are caught inside; this catches our
                // own (a user-supplied Producer, a logger) so the worker
                // never dies. The record stays uncommitted.
                catch_unwind(AssertUnwindSafe(|| {
                    process(&ctx, &*handler, &job, is_private, &status)
                }))
                .unwrap_or_else(|panic| {
                    log::error!(
                        "{}@{}: worker failed outside the handler: {}",
                        job.lease.tp,
                        job.record.offset,
                        panic_message(&*panic)
                    );
                    Step::Finished(false)
                })
            };
            match step {
                Step::Finished(done) => out.push(Completion {
                    lease: job.lease,
                    offset: job.record.offset,
                    done,
                }),
                Step::Writing(pending, record, kind) => writes.push(Write {
                    lease: job.lease,
                    offset: job.record.offset,
                    pending: Some(pending),
                    record: Copy::Built(record),
                    kind,
                    order: None,
                }),
                Step::Retrying(pending, recipe) => writes.push(Write {
                    lease: job.lease,
                    offset: job.record.offset,
                    pending: Some(pending),
                    // The job's record, moved: built into its copy again
                    // only should the write fail.
                    record: Copy::Retry {
                        record: job.record,
                        recipe,
                    },
                    kind: Kind::Retry,
                    order: None,
                }),
                Step::Copy(record, kind, order) => writes.push_copy(
                    &ctx,
                    Write {
                        lease: job.lease,
                        offset: job.record.offset,
                        pending: None,
                        record: Copy::Built(record),
                        kind,
                        order: Some(order),
                    },
                ),
            }
        }
        ctx.spares.give(batch);
        reap(&ctx, &mut writes, &mut out, Reap::Ready);
        if !out.is_empty() && completions.send(take_sized(&mut out)).is_err() {
            return;
        }
    }
}

/// The finished records to report, leaving an empty Vec as large as they
/// were in their place: a fresh `Vec::new()` grew by doubling again for
/// every batch (5% of a worker's time at 10% retries on Kafka).
fn take_sized(out: &mut Vec<Completion>) -> Vec<Completion> {
    let n = out.len();
    std::mem::replace(out, Vec::with_capacity(n))
}

/// Most writes a worker keeps unanswered before it waits for the oldest.
const MAX_WRITES: usize = 4 * JOB_BATCH;
/// How long an idle worker waits for its oldest write before it looks for
/// new jobs again.
const IDLE_ACK_STEP: Duration = Duration::from_millis(1);

/// How far [`reap`] waits.
#[derive(Clone, Copy, PartialEq)]
enum Reap {
    /// Not at all: only writes already answered.
    Ready,
    /// Up to [`IDLE_ACK_STEP`] for the oldest write, then as `Ready`.
    Step,
    /// For the oldest write (until answered or given up on), then as `Ready`.
    Oldest,
    /// For every write.
    All,
}

/// What a write is for, counted once acknowledged.
#[derive(Clone, Copy)]
enum Kind {
    Retry,
    /// Key order: parked behind its key (counted in `held`).
    Held,
    Dead(DeadReason),
}

/// What `process` did with a record.
enum Step {
    /// Done (`true`) or skipped (`false`).
    Finished(bool),
    /// A write to the retry or dead-letter topic is in flight.
    Writing(Pending, OutRecord, Kind),
    /// A retry copy's write is in flight; the copy can be built again from
    /// the job's record and this recipe.
    Retrying(Pending, Recipe),
    /// Key order: a retry or held copy of a keyed record, to be written
    /// once the earlier copies of its key are acknowledged ([`Writes`]).
    Copy(OutRecord, Kind, OrderKey),
}

/// A key of an origin partition (key order).
type OrderKey = (TopicPartition, Bytes);

/// What a retry copy is made of besides the record: [`retry_copy`] builds
/// the same copy from the same recipe.
struct Recipe {
    info: RetryInfo,
    reason: String,
    partitioning: Partitioning,
}

/// The copy a write sent, kept to send it again should the write fail.
enum Copy {
    Built(OutRecord),
    /// A retry copy, not kept built: the worker would otherwise clone
    /// every copy it sends (a topic String, a header Vec and their
    /// reference counts, then drop them all on the acknowledgement) for
    /// the rare write that fails. The record is the job's, moved.
    Retry {
        record: Record,
        recipe: Recipe,
    },
}

impl Copy {
    /// The copy, built again if need be (the same bytes as the first time).
    fn build(self, ctx: &Context) -> OutRecord {
        match self {
            Copy::Built(out) => out,
            Copy::Retry { record, recipe } => retry_copy(ctx, &record, &recipe),
        }
    }

    fn topic<'a>(&'a self, ctx: &'a Context) -> &'a str {
        match self {
            Copy::Built(out) => &out.topic,
            Copy::Retry { .. } => &ctx.retry_topic,
        }
    }

    /// A key-order copy (always built: it is sent when its turn comes).
    fn built(&self) -> Option<&OutRecord> {
        match self {
            Copy::Built(out) => Some(out),
            Copy::Retry { .. } => None,
        }
    }
}

/// A write in flight, with what is needed to send it again.
struct Write {
    lease: Arc<Lease>,
    offset: i64,
    /// `None`: not sent yet, waiting for an earlier copy of its key.
    pending: Option<Pending>,
    record: Copy,
    kind: Kind,
    /// Key order: the key whose copy this is.
    order: Option<OrderKey>,
}

/// A worker's writes in flight, oldest first.
///
/// Key order: a copy of a key is sent only once every earlier copy of that
/// key this worker wrote is acknowledged (or given up on). Sent together,
/// the earlier one could fail while the later one lands (a batch cut in
/// two requests, a lost connection, a crash between the two): a relay
/// rebuilding the key from the retry topic would then see the later
/// record's held copy alone, take it for the key's head and hand it out
/// before the earlier record, which comes back from its origin partition
/// only after the crash. Same key → same worker, so one worker sees every
/// copy of a key it writes; copies of other keys go on meanwhile.
#[derive(Default)]
struct Writes {
    queue: VecDeque<Write>,
    /// Sequence number of `queue[0]`.
    front: u64,
    /// Per key with copies in `queue`: their sequence numbers, oldest first.
    by_key: HashMap<OrderKey, VecDeque<u64>>,
}

impl Writes {
    fn len(&self) -> usize {
        self.queue.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn front(&self) -> Option<&Write> {
        self.queue.front()
    }

    fn push(&mut self, w: Write) {
        self.queue.push_back(w);
    }

    /// Queues a key-order copy: sent now unless an earlier copy of its key
    /// is still in the queue, else when that one is settled ([`Writes::settled`]).
    fn push_copy(&mut self, ctx: &Context, mut w: Write) {
        let seq = self.front + self.queue.len() as u64;
        if let Some(key) = &w.order {
            let earlier = self.by_key.entry(key.clone()).or_default();
            if let (true, Some(out)) = (earlier.is_empty(), w.record.built()) {
                w.pending = Some(ctx.writer.send(out.clone()));
            }
            earlier.push_back(seq);
        }
        self.queue.push_back(w);
    }

    fn pop_front(&mut self) -> Option<Write> {
        let w = self.queue.pop_front()?;
        self.front += 1;
        Some(w)
    }

    /// The copy of `key` popped last is settled (acknowledged, or given up
    /// on): the next copy of that key, if any, is sent now.
    fn settled(&mut self, ctx: &Context, key: &OrderKey) {
        let Some(seqs) = self.by_key.get_mut(key) else {
            return;
        };
        seqs.pop_front();
        let Some(&next) = seqs.front() else {
            self.by_key.remove(key);
            return;
        };
        let Some(w) = self.queue.get_mut((next - self.front) as usize) else {
            return;
        };
        // A copy whose record is no longer ours is never sent (reap gives
        // it up when it reaches the front).
        if w.pending.is_none() && !gives_up(ctx, &w.lease) {
            // At once, without the writer's linger: a key's chain of copies
            // moves one acknowledgement per copy, not one linger per copy.
            if let Some(out) = w.record.built() {
                w.pending = ctx.writer.send_now(vec![out.clone()]).pop();
            }
        }
    }
}

/// Moves acknowledged writes to `out`, oldest first, stopping at the first
/// one not answered yet (writes are answered about in order, so this costs
/// a look or two per record, not one per write in flight). A failed write
/// falls back to [`send_until_acked`] (blocking, with backoff). `how` says
/// how long to wait.
fn reap(ctx: &Context, writes: &mut Writes, out: &mut Vec<Completion>, how: Reap) {
    let mut first = true;
    while let Some(w) = writes.front() {
        let result = match (&w.pending, how) {
            // A copy that waited for its key's earlier ones, which are
            // settled (or it would not be first): given up on below.
            (None, _) => None,
            (Some(p), Reap::All) => await_ack(p, || gives_up(ctx, &w.lease)),
            (Some(p), Reap::Oldest) if first => await_ack(p, || gives_up(ctx, &w.lease)),
            (Some(p), Reap::Step) if first => p.wait_deadline(Instant::now() + IDLE_ACK_STEP),
            (Some(p), _) => p.try_take(),
        };
        first = false;
        let Some(result) = result else {
            if w.pending.is_none() || gives_up(ctx, &w.lease) {
                // Given up on (revoked, abandoning): the record stays
                // uncommitted; the write may still land (a duplicate).
                if let Some(w) = writes.pop_front() {
                    if let Some(key) = &w.order {
                        writes.settled(ctx, key);
                    }
                    out.push(Completion {
                        lease: w.lease,
                        offset: w.offset,
                        done: false,
                    });
                }
                continue;
            }
            return;
        };
        let Some(w) = writes.pop_front() else { return };
        let done = match result {
            Ok(_) => true,
            Err(e) => {
                ctx.counters
                    .send_failed(&format!("write to {}", w.record.topic(ctx)), &e);
                let lease = &w.lease;
                let restamp = !matches!(w.kind, Kind::Dead(_));
                send_until_acked(ctx, w.record.build(ctx), restamp, || gives_up(ctx, lease))
            }
        };
        // Only now (acknowledged, or sent again until it was) may the next
        // copy of its key go.
        if let Some(key) = &w.order {
            writes.settled(ctx, key);
        }
        if done {
            match w.kind {
                Kind::Retry => {
                    ctx.counters.retried.fetch_add(1, Ordering::Relaxed);
                }
                Kind::Held => {
                    ctx.counters.held.fetch_add(1, Ordering::Relaxed);
                }
                Kind::Dead(reason) => ctx.dead_lettered(reason),
            }
        }
        out.push(Completion {
            lease: w.lease,
            offset: w.offset,
            done,
        });
    }
}

/// Handles one record: done, skipped, or a write in flight (done once the
/// retry or dead-letter topic acknowledges it).
fn process(
    ctx: &Context,
    handler: &dyn Handler,
    job: &Job,
    private: bool,
    status: &ThreadStatus,
) -> Step {
    let view;
    let record = if private {
        view = private_view(&job.record);
        &view
    } else {
        &job.record
    };
    if let Some(reason) = record
        .header(headers::UNDECODABLE)
        .and_then(|h| h.value.as_ref())
    {
        let reason = format!(
            "undecodable record batch: {}",
            String::from_utf8_lossy(reason)
        );
        log::warn!("{}@{}: {reason}", record.topic_partition(), record.offset);
        let hs = headers::malformed_headers(&record.headers, &reason);
        return dead_letter(ctx, record, hs, DeadReason::Malformed);
    }
    // Key order: a record of a blocked key is parked behind its key.
    // (A job from the retry side is its key's turn already.)
    if let Some(ko) = ctx.key_order.as_deref() {
        if !private && ko.must_hold(record) {
            let (out, key) = super::keyorder::hold(ctx, ko, record, job.received_ms);
            return Step::Copy(out, Kind::Held, key);
        }
    }
    status.record(Doing::Handler, record.partition, record.offset);
    #[cfg(feature = "metrics")]
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(record)));
    #[cfg(feature = "metrics")]
    ctx.metrics
        .handler_time
        .record(started.elapsed().as_secs_f64());
    status.record(Doing::Idle, record.partition, record.offset);
    let outcome = match outcome {
        Ok(o) => o,
        Err(panic) => {
            ctx.counters.panics.fetch_add(1, Ordering::Relaxed);
            let msg = format!("handler panicked: {}", panic_message(&*panic));
            log::warn!("{}@{}: {msg}", record.topic_partition(), record.offset);
            Outcome::Retry(msg)
        }
    };
    if outcome == Outcome::Done {
        ctx.counters.done.fetch_add(1, Ordering::Relaxed);
        return Step::Finished(true);
    }
    // Abandoned while in the handler: its offset is no longer committed,
    // so a write now would only add a duplicate.
    if gives_up(ctx, &job.lease) {
        return Step::Finished(false);
    }
    // A relayed record carries its history; a fresh one starts it. Bad
    // retry headers on the origin topic are not the handler's problem: the
    // record was handled and, as it failed, starts a fresh history.
    let now = now_ms();
    let info = if record.header(headers::HELD).is_some() {
        // Held, not failed: its retry history starts now (keyorder.rs).
        RetryInfo::first(record, job.received_ms)
    } else if RetryInfo::present(record) {
        RetryInfo::parse(record, now).unwrap_or_else(|m| {
            log::debug!(
                "{}@{}: ignoring bad retry headers: {}",
                record.topic,
                record.offset,
                m.0
            );
            RetryInfo::first(record, job.received_ms)
        })
    } else {
        RetryInfo::first(record, job.received_ms)
    };
    match outcome {
        Outcome::Done => Step::Finished(true),
        Outcome::Reject(reason) => {
            let hs = info.headers(&record.headers, &reason, Some(DeadReason::Rejected));
            dead_letter(ctx, record, hs, DeadReason::Rejected)
        }
        Outcome::Retry(reason) => retry(ctx, record, info, now, None, reason),
        Outcome::RetryAfter { delay, reason } => {
            // Zero: no delay of the handler's own, the policy's applies.
            let delay = (!delay.is_zero()).then_some(delay);
            retry(ctx, record, info, now, delay, reason)
        }
    }
}

/// Parks the job's record again (or dead-letters it when the policy says
/// it is done for), `delay` from now when the handler chose one.
fn retry(
    ctx: &Context,
    record: &Record,
    info: RetryInfo,
    now: i64,
    delay: Option<Duration>,
    reason: String,
) -> Step {
    let mut next = info;
    next.attempts = next.attempts.saturating_add(1);
    next.enqueued_at = now;
    next.due_at = None;
    if let Some(max) = ctx.policy.max_attempts {
        if next.attempts >= max {
            let why = format!("gave up after {} attempts: {reason}", next.attempts);
            let hs = next.headers(&record.headers, &why, Some(DeadReason::Attempts));
            return dead_letter(ctx, record, hs, DeadReason::Attempts);
        }
    }
    let age = now.saturating_sub(next.first_received_at);
    let max_age = millis(ctx.policy.max_retry_duration);
    if age > max_age {
        let hs = next.headers(&record.headers, &reason, Some(DeadReason::Expired));
        return dead_letter(ctx, record, hs, DeadReason::Expired);
    }
    if let Some(delay) = delay {
        // Rounded up, so the record never comes back before `delay`, and
        // one more millisecond for `now` itself, which is truncated to the
        // millisecond; saturating, so `Duration::MAX` is just "too late".
        let ms = millis(delay.saturating_add(Duration::from_nanos(999_999)));
        let due = now.saturating_add(ms).saturating_add(1);
        if due.saturating_sub(next.first_received_at) > max_age {
            let why = format!(
                "retry_after({delay:?}) would outlast max_retry_duration ({:?}): {reason}",
                ctx.policy.max_retry_duration
            );
            let hs = next.headers(&record.headers, &why, Some(DeadReason::Expired));
            return dead_letter(ctx, record, hs, DeadReason::Expired);
        }
        next.due_at = Some(due);
    }
    // Key order: blocked before the next job, co-partitioned (keyorder.rs).
    let partitioning = match ctx.key_order.as_deref() {
        Some(ko) => {
            ko.block(record);
            ko.partitioning(record.partition)
        }
        None => Partitioning::Default,
    };
    let recipe = Recipe {
        info: next,
        reason,
        partitioning,
    };
    let out = retry_copy(ctx, record, &recipe);
    if ctx.key_order.is_some() {
        if let Some(key) = &record.key {
            return Step::Copy(out, Kind::Retry, (record.topic_partition(), key.clone()));
        }
    }
    Step::Retrying(ctx.writer.send(out), recipe)
}

/// The retry-topic copy of `record`. Only the key, value and headers of
/// `record` count, so a private redelivery's view and the retry-topic
/// record it was made from give the same copy.
fn retry_copy(ctx: &Context, record: &Record, recipe: &Recipe) -> OutRecord {
    OutRecord::forward(
        record,
        ctx.retry_topic.clone(),
        recipe.partitioning,
        recipe.info.headers(&record.headers, &recipe.reason, None),
    )
}

/// Writes a dead-letter copy of the job's record (or drops it when
/// dead-lettering is off). True when done.
fn dead_letter(
    ctx: &Context,
    record: &Record,
    headers: Vec<crate::record::Header>,
    reason: DeadReason,
) -> Step {
    let Some(out) = dead_letter_record(ctx, record, headers, reason) else {
        log::warn!(
            "{}@{}: dropped ({}), dead-lettering is off",
            record.topic_partition(),
            record.offset,
            reason.as_str()
        );
        ctx.dropped();
        return Step::Finished(true);
    };
    // Straight to the producer, not through the batching writer: the
    // dead-letter limit counts acknowledged dead letters, and a linger
    // would let many more records reach the handler before it trips.
    Step::Writing(
        ctx.producer.send_async(out.clone()),
        out,
        Kind::Dead(reason),
    )
}

/// What the handler sees of a record redelivered privately (straight from
/// the relay, `Redelivery::Private`): the retry-topic copy with the topic,
/// partition and offset it was first read at, so a handler cannot tell the
/// modes apart except by the stats. The relay checked the headers.
fn private_view(parked: &Record) -> Record {
    let mut r = parked.clone();
    if let (Some(t), Some(p), Some(o)) = (
        parked.origin_topic(),
        parked.origin_partition(),
        parked.origin_offset(),
    ) {
        r.topic = t.into();
        r.partition = p;
        r.offset = o;
    }
    r
}

/// A worker stops waiting for a record's write (and skips queued records)
/// once its partition is revoked or the engine abandons work.
fn gives_up(ctx: &Context, lease: &Lease) -> bool {
    lease.is_revoked() || ctx.signal.abandoning()
}

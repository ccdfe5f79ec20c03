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

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Sender, TrySendError};

use super::super::context::Context;
use super::super::job::{worker_for, Job, JOB_BATCH};

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

/// The relay's side of the worker queues, in private mode.
pub(crate) struct Handoff {
    jobs: Vec<Sender<Vec<Job>>>,
    outbox: Vec<VecDeque<Job>>,
    round_robin: usize,
}

impl Handoff {
    pub(crate) fn new(jobs: Vec<Sender<Vec<Job>>>) -> Self {
        Handoff {
            outbox: jobs.iter().map(|_| VecDeque::new()).collect(),
            jobs,
            round_robin: 0,
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
            }
        }
    }

    /// Hands queued jobs to the workers without blocking; what does not fit
    /// waits for the next call. Jobs of revoked leases are dropped here
    /// (uncommitted: the next owner re-reads them).
    pub(crate) fn flush(&mut self, ctx: &Context) {
        for (w, outbox) in self.outbox.iter_mut().enumerate() {
            let before = outbox.len();
            outbox.retain(|j| {
                let revoked = j.lease.is_revoked();
                if revoked {
                    j.lease.outstanding.fetch_sub(1, Ordering::Relaxed);
                }
                !revoked
            });
            let dropped = before - outbox.len();
            if dropped > 0 {
                ctx.counters
                    .in_flight
                    .fetch_sub(dropped as i64, Ordering::Relaxed);
            }
            while !outbox.is_empty() {
                let n = outbox.len().min(JOB_BATCH);
                let batch: Vec<Job> = outbox.drain(..n).collect();
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

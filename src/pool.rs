//! The handler pool: worker threads that run the user's handler and write
//! retries and dead letters.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::engine::{now_ms, panic_message, Context};
use crate::handler::{Handler, Outcome};
use crate::headers::{self, DeadReason, RetryInfo};
use crate::offsets::OffsetTracker;
use crate::record::{OutRecord, Record, TopicPartition};

/// One assignment of one partition to this engine. A new lease is made on
/// every assignment, so completions of a revoked lease can never mark
/// offsets done in a later assignment of the same partition.
#[derive(Debug)]
pub(crate) struct Lease {
    pub tp: TopicPartition,
    /// Set on revoke: workers skip this lease's queued jobs.
    pub revoked: AtomicBool,
    /// Offsets of this lease; locked by the consumer thread only (never
    /// contended), kept here so a completion needs no map lookup.
    tracker: Mutex<OffsetTracker>,
}

impl Lease {
    pub(crate) fn new(tp: TopicPartition) -> Arc<Self> {
        Arc::new(Lease {
            tp,
            revoked: AtomicBool::new(false),
            tracker: Mutex::new(OffsetTracker::default()),
        })
    }

    pub(crate) fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

/// A record for a worker.
pub(crate) struct Job {
    pub record: Record,
    pub lease: Arc<Lease>,
    /// When the consumer thread received it (wall clock, ms).
    pub received_ms: i64,
}

/// A worker's answer for one job. `done == false` means skipped (the lease
/// was revoked or the engine is abandoning work): the offset stays
/// uncommitted and the record is read again later.
pub(crate) struct Completion {
    pub lease: Arc<Lease>,
    pub offset: i64,
    pub done: bool,
}

/// Longest a worker holds finished records before reporting them.
const COMPLETION_FLUSH: Duration = Duration::from_millis(20);

pub(crate) fn run_worker(
    ctx: Arc<Context>,
    handler: Arc<dyn Handler>,
    jobs: Receiver<Vec<Job>>,
    completions: Sender<Vec<Completion>>,
) {
    // Ends when the consumer thread drops its sender (shutdown by disconnection).
    for batch in jobs.iter() {
        let mut out = Vec::with_capacity(batch.len());
        let mut last_flush = Instant::now();
        for job in batch {
            // Report finished records every so often inside a long batch,
            // so slow handlers do not hold back commits and revokes.
            if !out.is_empty() && last_flush.elapsed() >= COMPLETION_FLUSH {
                let n = out.len();
                if completions
                    .send(std::mem::replace(&mut out, Vec::with_capacity(n)))
                    .is_err()
                {
                    return;
                }
                last_flush = Instant::now();
            }
            let done = if job.lease.is_revoked() || ctx.signal.abandoning() {
                false
            } else {
                process(&ctx, &*handler, &job)
            };
            out.push(Completion {
                lease: job.lease,
                offset: job.record.offset,
                done,
            });
        }
        if completions.send(out).is_err() {
            return;
        }
    }
}

/// Handles one record; true when it is done (handled, or acknowledged on
/// the retry or dead-letter topic).
fn process(ctx: &Context, handler: &dyn Handler, job: &Job) -> bool {
    let record = &job.record;
    let now = now_ms();
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
        return dead_letter(ctx, job, hs, DeadReason::Malformed);
    }
    // A relayed record carries its history; a fresh one starts it. Bad
    // retry headers on the origin topic are not the handler's problem: the
    // record is handled and, if it fails, starts a fresh history.
    let info = if RetryInfo::present(record) {
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
    let outcome = match catch_unwind(AssertUnwindSafe(|| handler.handle(record))) {
        Ok(o) => o,
        Err(panic) => {
            ctx.counters.panics.fetch_add(1, Ordering::Relaxed);
            let msg = format!("handler panicked: {}", panic_message(&*panic));
            log::warn!("{}@{}: {msg}", record.topic_partition(), record.offset);
            Outcome::Retry(msg)
        }
    };
    match outcome {
        Outcome::Done => {
            ctx.counters.done.fetch_add(1, Ordering::Relaxed);
            true
        }
        Outcome::Reject(reason) => {
            let hs = info.headers(&record.headers, &reason, Some(DeadReason::Rejected));
            dead_letter(ctx, job, hs, DeadReason::Rejected)
        }
        Outcome::Retry(reason) => {
            let mut next = info;
            next.attempts = next.attempts.saturating_add(1);
            next.enqueued_at = now;
            if let Some(max) = ctx.policy.max_attempts {
                if next.attempts >= max {
                    let why = format!("gave up after {} attempts: {reason}", next.attempts);
                    let hs = next.headers(&record.headers, &why, Some(DeadReason::Expired));
                    return dead_letter(ctx, job, hs, DeadReason::Expired);
                }
            }
            let age = now.saturating_sub(next.first_received_at);
            if age > ctx.policy.max_retry_duration.as_millis() as i64 {
                let hs = next.headers(&record.headers, &reason, Some(DeadReason::Expired));
                return dead_letter(ctx, job, hs, DeadReason::Expired);
            }
            let out = OutRecord {
                topic: ctx.retry_topic.clone(),
                partitioning: Default::default(),
                key: record.key.clone(),
                value: record.value.clone(),
                headers: next.headers(&record.headers, &reason, None),
                timestamp: None,
            };
            let ok = send_until_acked(ctx, &job.lease, out);
            if ok {
                ctx.counters.retried.fetch_add(1, Ordering::Relaxed);
            }
            ok
        }
    }
}

/// Writes a dead-letter copy of the job's record (or drops it when
/// dead-lettering is off). True when done.
fn dead_letter(
    ctx: &Context,
    job: &Job,
    headers: Vec<crate::record::Header>,
    reason: DeadReason,
) -> bool {
    let record = &job.record;
    let Some(topic) = &ctx.dead_letter_topic else {
        log::warn!(
            "{}@{}: dropped ({}), dead-lettering is off",
            record.topic_partition(),
            record.offset,
            reason.as_str()
        );
        ctx.counters.dropped.fetch_add(1, Ordering::Relaxed);
        return true;
    };
    let out = OutRecord {
        topic: topic.clone(),
        partitioning: Default::default(),
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
        timestamp: None,
    };
    let ok = send_until_acked(ctx, &job.lease, out);
    if ok {
        ctx.counters.dead(reason);
    }
    ok
}

/// Sends until the broker acknowledges, backing off on errors. Gives up
/// (false: the record stays uncommitted) only when the lease is revoked or
/// the engine abandons work: an error never turns into a lost record.
pub(crate) fn send_until_acked(ctx: &Context, lease: &Lease, record: OutRecord) -> bool {
    let mut backoff = Duration::from_millis(50);
    loop {
        match ctx.producer.send(record.clone()) {
            Ok(_) => return true,
            Err(e) => {
                ctx.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "write to {} failed, retrying in {backoff:?}: {e}",
                    record.topic
                );
            }
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if lease.is_revoked() || ctx.signal.abandoning() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10).min(backoff));
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

//! Acknowledged writes: waiting for a broker's acknowledgement without
//! missing a stop, and sending again until acknowledged, by the engine's
//! one backoff schedule. An error never turns into a lost record: a write
//! that is given up on leaves its record uncommitted.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::backoff::Backoff;
use super::context::Context;
use super::health::HealthBoard;
use super::panic::panic_message;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::headers::{self, DeadReason};
use crate::pending::{Completer, Pending};
use crate::record::{Delivered, Header, OutRecord, Partitioning, Record};
use crate::transport::Producer;

/// Step of every wait for an acknowledgement, so a stop is noticed.
const ACK_STEP: Duration = Duration::from_millis(50);
/// Step of the wait between attempts.
const SLEEP_STEP: Duration = Duration::from_millis(10);

/// Waits for a write's acknowledgement in short steps, so `give_up` (a
/// revoke, a shutdown) ends the wait (`None`: the record stays
/// uncommitted; the write may still land, which is a duplicate, never a
/// loss). A broker outage can hold a single write for the producer's whole
/// delivery timeout.
pub(crate) fn await_ack(
    pending: &Pending,
    give_up: impl Fn() -> bool,
) -> Option<Result<Delivered>> {
    loop {
        if let Some(r) = pending.wait_deadline(Instant::now() + ACK_STEP) {
            return Some(r);
        }
        if give_up() {
            return None;
        }
    }
}

/// Sends again, after a failed write, until the broker acknowledges,
/// backing off between attempts. Gives up (false: the record stays
/// uncommitted) only when `give_up` says so.
///
/// With `restamp`, each new attempt rewrites `retry.enqueued-at` to now: the
/// relay counts the interval from it, so a write that succeeded only after
/// an outage must not come back early.
pub(crate) fn send_until_acked(
    ctx: &Context,
    mut record: OutRecord,
    restamp: bool,
    give_up: impl Fn() -> bool,
) -> bool {
    let mut backoff = Backoff::default();
    loop {
        let wait = backoff.next_wait();
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if give_up() {
                return false;
            }
            std::thread::sleep(SLEEP_STEP.min(wait));
        }
        if restamp {
            let now = now_ms().to_string();
            for h in record.headers.iter_mut() {
                if &h.key[..] == headers::ENQUEUED_AT.as_bytes() {
                    h.value = Some(now.clone().into());
                }
            }
        }
        let pending = ctx.producer.send_async(record.clone());
        match await_ack(&pending, &give_up) {
            Some(Ok(_)) => return true,
            Some(Err(e)) => {
                ctx.counters
                    .send_failed(&format!("write to {}", record.topic), &e);
            }
            None => return false,
        }
    }
}

/// The dead-letter copy of `record` with `headers`: on the topic the
/// dead-letter router chose (or the default one, with the router's problem
/// put first in `retry.reason`), stamped with the group and the time.
/// `None` when dead-lettering is off and the router chose nothing: the
/// caller drops the record.
pub(crate) fn dead_letter_record(
    ctx: &Context,
    record: &Record,
    mut headers: Vec<Header>,
    reason: DeadReason,
) -> Option<OutRecord> {
    let (topic, problem) = ctx.dead_letters.choose(record, reason);
    if let Some(problem) = problem {
        log::warn!(
            "{}@{}: {problem}; dead-lettering to the default topic",
            record.topic_partition(),
            record.offset
        );
        // The problem first in `retry.reason`, in its place among the
        // headers (every dead letter carries one, from `RetryInfo::headers`
        // or `malformed_headers`).
        if let Some(h) = headers
            .iter_mut()
            .rev()
            .find(|h| &h.key[..] == headers::REASON.as_bytes())
        {
            let old = h
                .value
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let why = format!("{problem}; {old}");
            h.value = Some(headers::truncate(&why).to_string().into());
        }
    }
    let topic = topic?;
    headers::stamp_dead_letter(&mut headers, &ctx.group_id, now_ms());
    Some(OutRecord::forward(
        record,
        topic.into(),
        Partitioning::Default,
        headers,
    ))
}

/// Longest between the starts of two batches of [`BatchWriter`] (20 ms
/// measured cheaper than 5 ms on Tansu at 10% retries: broker CPU per
/// record 0.8 against 1.1 µs, client 1.5 against 1.9 µs): while
/// batches follow each other, records gather this long, so the retry path
/// costs the broker one request per linger at most instead of one per
/// round trip (Tansu spends about as much on a small Produce request as on
/// a big one). After a quiet spell the first record goes at once.
const WRITE_LINGER: Duration = Duration::from_millis(20);
/// Most records in one batch (a `send_batch` call; the producer cuts it
/// into requests of its own size).
const WRITE_BATCH: usize = 16_384;

/// Records for the writer thread and the slots their results go to.
enum WriteJob {
    /// Gathered with others for up to [`WRITE_LINGER`].
    One(OutRecord, Completer),
    /// Sent at once, with what is gathered so far: the relay's due
    /// records, whose lateness a linger would add to.
    Now(Vec<(OutRecord, Completer)>),
}

/// The retry path's writes (retry copies, dead letters, relayed records)
/// from every worker and the relay, gathered by one thread,
/// `kafka-retry-writer`, into large [`Producer::send_batch`] calls.
///
/// Invariant: a record's [`Pending`] is completed only with the producer's
/// own result for that record (or an error when the writer cannot send
/// it), so "done once acknowledged" holds exactly as with `send_async`.
/// The thread ends once the writer is dropped and every queued record is
/// answered; dropping joins it.
///
/// Supervised: should the thread die (a bug, or a user's producer whose
/// panic escapes the `catch_unwind` around `send_batch`), it is reported
/// in the engine's health as `ThreadDied` and every write from then on goes
/// straight to [`Producer::send_async`], unbatched but acknowledged the
/// same way, so neither the workers nor the relay are left with writes
/// that fail forever. Records queued when it died are answered with an
/// error (their completers are dropped) and sent again by their callers.
pub(crate) struct BatchWriter {
    queue: Option<Sender<WriteJob>>,
    thread: Option<JoinHandle<()>>,
    producer: Arc<dyn Producer>,
    /// Raised by the thread when it dies; read before every write.
    dead: Arc<AtomicBool>,
}

/// The writer thread's name, as health reports it.
const WRITER_THREAD: &str = "kafka-retry-writer";

impl BatchWriter {
    /// Starts `kafka-retry-writer` on `producer`; its death is reported
    /// to `health`.
    pub(crate) fn start(
        producer: Arc<dyn Producer>,
        health: Arc<HealthBoard>,
    ) -> Result<BatchWriter> {
        BatchWriter::start_with(producer, health, WRITE_LINGER)
    }

    /// As [`BatchWriter::start`], with `linger` in place of
    /// [`WRITE_LINGER`] (the tests lengthen it).
    fn start_with(
        producer: Arc<dyn Producer>,
        health: Arc<HealthBoard>,
        linger: Duration,
    ) -> Result<BatchWriter> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let dead = Arc::new(AtomicBool::new(false));
        let thread = {
            let producer = producer.clone();
            let dead = dead.clone();
            std::thread::Builder::new()
                .name(WRITER_THREAD.into())
                .spawn(move || {
                    let result = catch_unwind(AssertUnwindSafe(|| run_writer(&*producer, &rx, linger)));
                    if let Err(panic) = result {
                        let reason = format!("panicked: {}", panic_message(&*panic));
                        // A payload whose drop panics again must not take
                        // the report below with it: leak it (the thread
                        // ends anyway).
                        std::mem::forget(panic);
                        // Raised before `rx` is dropped (at the end of this
                        // closure): from here on no write waits on us.
                        dead.store(true, Ordering::Release);
                        log::error!("{WRITER_THREAD} died: {reason}; retry-path writes go unbatched to the producer");
                        health.thread_died(WRITER_THREAD.into(), reason);
                    }
                })
                .map_err(|e| Error::Thread(format!("start {WRITER_THREAD}: {e}")))?
        };
        Ok(BatchWriter {
            queue: Some(tx),
            thread: Some(thread),
            producer,
            dead,
        })
    }

    /// The queue, while the writer thread lives.
    fn queue(&self) -> Option<&Sender<WriteJob>> {
        if self.dead.load(Ordering::Acquire) {
            return None;
        }
        self.queue.as_ref()
    }

    /// Queues `record`; the [`Pending`] answers once the broker
    /// acknowledged it (or the write failed).
    pub(crate) fn send(&self, record: OutRecord) -> Pending {
        let Some(queue) = self.queue() else {
            return self.producer.send_async(record);
        };
        let (pending, completer) = Pending::new();
        match queue.send(WriteJob::One(record, completer)) {
            Ok(()) => pending,
            // The thread just died: straight to the producer.
            Err(e) => match e.into_inner() {
                WriteJob::One(record, _) => self.producer.send_async(record),
                WriteJob::Now(_) => pending,
            },
        }
    }

    /// Queues `records` to go at once (no linger), with whatever else is
    /// gathered; one [`Pending`] per record, in order.
    pub(crate) fn send_now(&self, records: Vec<OutRecord>) -> Vec<Pending> {
        let Some(queue) = self.queue() else {
            return self.send_unbatched(records);
        };
        if records.is_empty() {
            return Vec::new();
        }
        let (pending, jobs): (Vec<Pending>, Vec<(OutRecord, Completer)>) = records
            .into_iter()
            .map(|r| {
                let (p, c) = Pending::new();
                (p, (r, c))
            })
            .unzip();
        match queue.send(WriteJob::Now(jobs)) {
            Ok(()) => {
                // The writer may be sleeping out its linger (it is not woken
                // by `send`'s records): these go at once.
                if let Some(t) = &self.thread {
                    t.thread().unpark();
                }
                pending
            }
            Err(e) => match e.into_inner() {
                WriteJob::Now(jobs) => {
                    self.send_unbatched(jobs.into_iter().map(|(r, _)| r).collect())
                }
                WriteJob::One(..) => pending,
            },
        }
    }

    fn send_unbatched(&self, records: Vec<OutRecord>) -> Vec<Pending> {
        records
            .into_iter()
            .map(|r| self.producer.send_async(r))
            .collect()
    }
}

impl Drop for BatchWriter {
    fn drop(&mut self) {
        // Disconnecting ends the loop once what is queued is answered.
        self.queue = None;
        if let Some(t) = self.thread.take() {
            // Asleep on a linger, it would notice only at its end.
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn run_writer(producer: &dyn Producer, rx: &Receiver<WriteJob>, linger: Duration) {
    let mut last_start: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut now = take(first, &mut batch);
        let deadline = last_start.map_or_else(Instant::now, |t| t + linger);
        while batch.len() < WRITE_BATCH {
            // What is queued already goes in whatever the deadline.
            match rx.try_recv() {
                Ok(job) => now |= take(job, &mut batch),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if now || left.is_zero() {
                        break;
                    }
                    // Sleep out the linger rather than block on the
                    // channel, which woke this thread for every record a
                    // worker queued (about one wake-up of each side per
                    // retried record); only `send_now` wakes it early
                    // (unpark). A spurious wake-up just looks again.
                    std::thread::park_timeout(left);
                }
            }
        }
        last_start = Some(Instant::now());
        let (records, completers): (Vec<OutRecord>, Vec<Completer>) = batch.into_iter().unzip();
        // A user-supplied producer that panics must not end the thread
        // every retry write goes through; its records fail (and are sent
        // again by their workers).
        let results = catch_unwind(AssertUnwindSafe(|| producer.send_batch(records)))
            .unwrap_or_else(|panic| {
                let msg = format!("producer panicked: {}", panic_message(&*panic));
                log::error!("kafka-retry-writer: {msg}");
                vec![Err(Error::Thread(msg))]
            });
        let mut results = results.into_iter();
        for c in completers {
            c.complete(results.next().unwrap_or_else(|| {
                Err(Error::Protocol(
                    "producer returned fewer results than records".into(),
                ))
            }));
        }
    }
}

/// Adds `job`'s records to `batch`; true when they are to go at once.
fn take(job: WriteJob, batch: &mut Vec<(OutRecord, Completer)>) -> bool {
    match job {
        WriteJob::One(r, c) => {
            batch.push((r, c));
            false
        }
        WriteJob::Now(jobs) => {
            batch.extend(jobs);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBroker;

    /// The relay's records (`send_now`) go at once even while the writer
    /// sleeps out its linger on a worker's record, which does not wake it:
    /// with an hour's linger, both are answered within seconds.
    #[test]
    fn send_now_cuts_the_linger_short() {
        let broker = MemoryBroker::new();
        broker.create_topic("t", 1).unwrap();
        let producer = crate::transport::Transport::producer(&broker).unwrap();
        let health = Arc::new(HealthBoard::new(None));
        let writer = BatchWriter::start_with(producer, health, Duration::from_secs(3600)).unwrap();
        // The first batch goes at once; the next one lingers an hour.
        let first = writer.send(OutRecord::new("t").value("a"));
        assert!(first
            .wait_deadline(Instant::now() + Duration::from_secs(10))
            .is_some());
        let lingering = writer.send(OutRecord::new("t").value("b"));
        // Time for the writer to take it and fall asleep on the linger (on
        // a machine too slow for that the test passes without testing).
        std::thread::sleep(Duration::from_millis(200));
        assert!(lingering.try_take().is_none());
        let now = writer.send_now(vec![OutRecord::new("t").value("c")]);
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(now[0].wait_deadline(deadline).is_some_and(|r| r.is_ok()));
        // Gathered with the lingering one: that went too.
        assert!(lingering.wait_deadline(deadline).is_some_and(|r| r.is_ok()));
        assert_eq!(broker.end_offset("t", 0).unwrap(), 3);
    }
}

//! The consumer thread: polls the origin topics, dispatches records to the
//! workers by key, tracks offsets and commits the done watermark.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::context::Context;
use super::job::{Completion, Job, JOB_BATCH};
use super::lease::Lease;
use super::partitions::Partitions;
use super::poll::Poller;
use crate::clock::{deadline_after, now_ms};
use crate::partitioner::murmur2;
use crate::record::{Record, TopicPartition};
use crate::transport::{Consumer, ConsumerEvent};

/// Longest a poll blocks, so stop requests and commits are noticed.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// Relaxed is enough: the counters are touched by the consumer thread only.
const R: Ordering = Ordering::Relaxed;

struct Dispatcher {
    ctx: Arc<Context>,
    consumer: Box<dyn Consumer>,
    parts: Partitions,
    /// Per worker: jobs the worker's full queue could not take yet. FIFO per
    /// worker keeps per-key order (a key always maps to one worker).
    outbox: Vec<VecDeque<Job>>,
    job_txs: Vec<Sender<Vec<Job>>>,
    completions: Receiver<Vec<Completion>>,
    round_robin: usize,
    last_commit: Instant,
    /// Last `poll(ZERO)` while the workers are saturated.
    last_zero_poll: Instant,
    /// Set when the engine cannot go on (a worker is gone).
    failed: Option<String>,
}

pub(crate) fn run(
    ctx: Arc<Context>,
    consumer: Box<dyn Consumer>,
    job_txs: Vec<Sender<Vec<Job>>>,
    completions: Receiver<Vec<Completion>>,
) -> Result<(), String> {
    let mut d = Dispatcher {
        outbox: job_txs.iter().map(|_| VecDeque::new()).collect(),
        ctx,
        consumer,
        parts: Partitions::default(),
        job_txs,
        completions,
        round_robin: 0,
        last_commit: Instant::now(),
        last_zero_poll: Instant::now(),
        failed: None,
    };
    let mut poller = Poller::new(
        "consumer",
        format!("{:?}", d.ctx.topics),
        d.ctx.counters.clone(),
    );
    while !d.ctx.signal.stopping() {
        d.drain_completions();
        d.flush_outboxes();
        if let Some(why) = d.failed.take() {
            log::error!("{}: consumer thread stops: {why}", d.ctx.group_id);
            let _ = d.shutdown();
            return Err(why);
        }
        if d.last_commit.elapsed() >= d.ctx.commit_interval {
            d.commit_all();
        }
        let timeout = if d.outbox.iter().any(|o| !o.is_empty()) {
            // Workers are saturated: wait for one to finish something
            // rather than poll (paused partitions return nothing anyway).
            if let Ok(batch) = d.completions.recv_timeout(Duration::from_millis(20)) {
                d.complete(batch);
            }
            // Paused partitions return nothing; poll only now and then for
            // group events and unpaused partitions, not after every
            // completion (each poll may be a Fetch round trip on Kafka).
            if d.last_zero_poll.elapsed() < Duration::from_millis(20) {
                continue;
            }
            d.last_zero_poll = Instant::now();
            Duration::ZERO
        } else {
            POLL_TIMEOUT
        };
        match poller.poll(&mut *d.consumer, timeout)? {
            Some(event) => d.handle(event),
            None => poller.back_off(&d.ctx.signal, || {}),
        }
    }
    d.shutdown()
}

impl Dispatcher {
    fn handle(&mut self, event: ConsumerEvent) {
        self.handle_event(event);
        let c = &self.ctx.counters;
        c.assigned_partitions
            .store(self.parts.len() as i64, Ordering::Relaxed);
        let paused = self.parts.values().filter(|p| p.paused).count();
        c.paused_partitions.store(paused as i64, Ordering::Relaxed);
    }

    fn handle_event(&mut self, event: ConsumerEvent) {
        match event {
            ConsumerEvent::Records(records) => self.dispatch(records),
            ConsumerEvent::Assigned(tps) => {
                log::info!("{}: assigned {}", self.ctx.group_id, list(&tps));
                self.parts.assign(tps);
            }
            ConsumerEvent::Revoked(tps) => {
                log::info!("{}: revoking {}", self.ctx.group_id, list(&tps));
                self.ctx.counters.rebalances.fetch_add(1, Ordering::Relaxed);
                let deadline = deadline_after(self.ctx.revoke_timeout);
                self.release(&tps, Some(deadline));
            }
            ConsumerEvent::Lost(tps) => {
                log::warn!(
                    "{}: lost {} without a clean revoke",
                    self.ctx.group_id,
                    list(&tps)
                );
                self.ctx.counters.rebalances.fetch_add(1, Ordering::Relaxed);
                self.release(&tps, None);
            }
        }
    }

    fn dispatch(&mut self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let received_ms = now_ms();
        let workers = self.job_txs.len();
        let mut count = 0;
        let mut current: Option<Arc<Lease>> = None;
        for record in records {
            // Records come grouped by partition: look the lease up once per run.
            if current
                .as_ref()
                .is_none_or(|l| l.tp.partition != record.partition || l.tp.topic != record.topic)
            {
                current = self
                    .parts
                    .get(&record.topic_partition())
                    .map(|p| p.lease.clone());
            }
            let Some(lease) = &current else {
                log::warn!(
                    "record {}@{} from an unassigned partition ignored",
                    record.topic_partition(),
                    record.offset
                );
                continue;
            };
            if !lease.tracker().track(record.offset) {
                continue; // already dispatched (a re-fetch after a rewind)
            }
            let worker = match &record.key {
                Some(k) => (murmur2(k) as u32 as usize) % workers,
                None => {
                    self.round_robin = self.round_robin.wrapping_add(1);
                    self.round_robin % workers
                }
            };
            lease.outstanding.fetch_add(1, R);
            lease.outboxed.fetch_add(1, R);
            self.outbox[worker].push_back(Job {
                record,
                lease: lease.clone(),
                received_ms,
            });
            count += 1;
        }
        self.ctx
            .counters
            .received
            .fetch_add(count, Ordering::Relaxed);
        self.ctx
            .counters
            .in_flight
            .fetch_add(count as i64, Ordering::Relaxed);
        self.flush_outboxes();
    }

    /// Hands outbox jobs to workers without blocking, then pauses partitions
    /// that still have jobs waiting and resumes those that have none.
    fn flush_outboxes(&mut self) {
        for (w, outbox) in self.outbox.iter_mut().enumerate() {
            while !outbox.is_empty() {
                let n = outbox.len().min(JOB_BATCH);
                let batch: Vec<Job> = outbox.drain(..n).collect();
                for job in &batch {
                    job.lease.outboxed.fetch_sub(1, R);
                }
                match self.job_txs[w].try_send(batch) {
                    Ok(()) => {}
                    Err(TrySendError::Disconnected(batch)) => {
                        for job in &batch {
                            job.lease.outboxed.fetch_add(1, R);
                        }
                        // Workers catch every panic, so this is a bug; stop
                        // rather than keep its partitions paused forever.
                        self.failed = Some(format!("worker {w} is gone"));
                        for job in batch.into_iter().rev() {
                            outbox.push_front(job);
                        }
                        break;
                    }
                    Err(TrySendError::Full(batch)) => {
                        for job in &batch {
                            job.lease.outboxed.fetch_add(1, R);
                        }
                        for job in batch.into_iter().rev() {
                            outbox.push_front(job);
                        }
                        break;
                    }
                }
            }
        }
        let mut pause = Vec::new();
        let mut resume = Vec::new();
        for (tp, p) in self.parts.iter_mut() {
            let waiting = p.lease.outboxed.load(R);
            if waiting > 0 && !p.paused {
                p.paused = true;
                pause.push(tp.clone());
            } else if waiting == 0 && p.paused {
                p.paused = false;
                resume.push(tp.clone());
            }
        }
        if !pause.is_empty() || !resume.is_empty() {
            let paused = self.parts.values().filter(|p| p.paused).count();
            self.ctx
                .counters
                .paused_partitions
                .store(paused as i64, Ordering::Relaxed);
        }
        if !pause.is_empty() {
            log::debug!("workers busy: pausing {}", list(&pause));
            self.consumer.pause(&pause);
        }
        if !resume.is_empty() {
            log::debug!("resuming {}", list(&resume));
            self.consumer.resume(&resume);
        }
    }

    fn drain_completions(&mut self) {
        while let Ok(batch) = self.completions.try_recv() {
            self.complete(batch);
        }
    }

    fn complete(&mut self, batch: Vec<Completion>) {
        let n = batch.len();
        let mut i = 0;
        while i < batch.len() {
            // Completions come in runs of one lease: one tracker lock per run.
            let lease = &batch[i].lease;
            let mut tracker = lease.tracker();
            let mut j = i;
            while j < batch.len() && Arc::ptr_eq(&batch[j].lease, lease) {
                if batch[j].done {
                    tracker.done(batch[j].offset);
                }
                j += 1;
            }
            drop(tracker);
            // A stale lease's counter is simply never read again.
            lease.outstanding.fetch_sub(j - i, R);
            i = j;
        }
        self.ctx
            .counters
            .in_flight
            .fetch_sub(n as i64, Ordering::Relaxed);
    }

    /// Commits the done watermark of every partition that moved.
    fn commit_all(&mut self) {
        self.last_commit = Instant::now();
        if let Err(e) = self
            .parts
            .commit_all(&mut *self.consumer, &self.ctx.counters)
        {
            log::warn!(
                "{}: commit failed (retried next interval): {e}",
                self.ctx.group_id
            );
        }
    }

    fn commit(&mut self, tps: &[TopicPartition]) -> crate::Result<()> {
        self.parts
            .commit(&mut *self.consumer, &self.ctx.counters, tps)
    }

    /// Gives partitions up. With a deadline (clean revoke) running records
    /// may finish until then and the done watermark is committed; without
    /// one (lost) nothing is committed. Queued jobs are skipped either way:
    /// the next owner reads them from the committed offset.
    fn release(&mut self, tps: &[TopicPartition], deadline: Option<Instant>) {
        self.parts.revoke(tps);
        self.drop_outboxed(|lease| tps.contains(&lease.tp));
        if let Some(deadline) = deadline {
            self.wait_outstanding(tps, deadline);
            if let Err(e) = self.commit(tps) {
                log::warn!("{}: commit on revoke failed: {e}", self.ctx.group_id);
            }
        }
        self.parts.remove(tps);
    }

    /// Removes outbox jobs whose lease matches; they count as skipped.
    fn drop_outboxed(&mut self, matches: impl Fn(&Lease) -> bool) {
        let mut skipped = 0;
        for outbox in &mut self.outbox {
            outbox.retain(|job| {
                if !matches(&job.lease) {
                    return true;
                }
                job.lease.outboxed.fetch_sub(1, R);
                job.lease.outstanding.fetch_sub(1, R);
                skipped += 1;
                false
            });
        }
        if skipped > 0 {
            self.ctx
                .counters
                .in_flight
                .fetch_sub(skipped as i64, Ordering::Relaxed);
        }
    }

    /// Waits until no record of `tps` is outstanding, or the deadline.
    fn wait_outstanding(&mut self, tps: &[TopicPartition], deadline: Instant) {
        loop {
            let busy: usize = tps
                .iter()
                .filter_map(|tp| self.parts.get(tp))
                .map(|p| p.lease.outstanding.load(R))
                .sum();
            if busy == 0 {
                return;
            }
            // A shutdown during a revoke wait shortens the wait to the
            // shutdown's own deadline.
            let limit = match self.ctx.signal.deadline() {
                Some(d) if self.ctx.signal.stopping() => deadline.min(d),
                _ => deadline,
            };
            let step = limit.min(Instant::now() + Duration::from_millis(50));
            match self.completions.recv_deadline(step) {
                Ok(batch) => self.complete(batch),
                Err(_) if Instant::now() < limit => {}
                Err(_) => {
                    log::warn!(
                        "{}: {busy} records still running at the deadline; abandoned, the next owner re-reads them",
                        self.ctx.group_id
                    );
                    return;
                }
            }
        }
    }

    /// Stop: drain until shortly before the deadline, commit, leave.
    fn shutdown(mut self) -> Result<(), String> {
        let deadline = self.ctx.signal.deadline().unwrap_or_else(Instant::now);
        let now = Instant::now();
        // Keep a slice of the time for the commit and the leave.
        let margin = deadline.saturating_duration_since(now) / 4;
        let drain_until = deadline
            .checked_sub(margin.min(Duration::from_secs(2)))
            .unwrap_or(now);
        self.drop_outboxed(|_| true);
        let tps = self.parts.keys();
        self.wait_outstanding(&tps, drain_until);
        self.ctx.signal.request_abandon();
        let mut unfinished = 0;
        for p in self.parts.values() {
            unfinished += p.lease.tracker().in_flight();
        }
        if unfinished > 0 {
            // Not an error: their offsets stay uncommitted and the next
            // owner (or the next start) reads them again.
            log::info!(
                "{}: {unfinished} records left unfinished at shutdown",
                self.ctx.group_id
            );
        }
        let wanted: Vec<String> = self
            .parts
            .to_commit(&tps)
            .iter()
            .map(|(tp, w)| format!("{tp}@{w}"))
            .collect();
        let mut problems = Vec::new();
        if let Err(e) = self.commit(&tps) {
            problems.push(format!("final commit of {} failed: {e}", wanted.join(", ")));
        }
        if !problems.is_empty() {
            self.ctx
                .signal
                .report(format!("not committed: {}", problems.join("; ")));
        }
        // Disconnect the workers so they exit once their queue is drained.
        self.job_txs.clear();
        if let Err(e) = self.consumer.close() {
            log::debug!("leave group: {e}");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("not committed: {}", problems.join("; ")))
        }
    }
}

fn list(tps: &[TopicPartition]) -> String {
    if tps.is_empty() {
        return "nothing".into();
    }
    let v: Vec<String> = tps.iter().map(|t| t.to_string()).collect();
    v.join(", ")
}

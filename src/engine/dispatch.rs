//! The consumer thread: polls the origin topics, dispatches records to the
//! workers by key, tracks offsets and commits the done watermark.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::context::Context;
use super::job::{worker_for, Completion, Job, Spares, JOB_BATCH};
use super::keyorder::READY_WAIT;
use super::lease::Lease;
use super::partitions::Partitions;
use super::poll::Poller;
use super::supervisor::{Doing, ThreadStatus};
use crate::clock::{deadline_after, now_ms};
use crate::record::{Record, TopicPartition};
use crate::transport::{Consumer, ConsumerEvent};

/// Longest a poll blocks, so stop requests and commits are noticed.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// Longest a poll blocks while copies from the retry side are being
/// handled with `KeyOrder::Kept` (their completions release held records).
const KEY_TURN_POLL: Duration = Duration::from_millis(5);

/// Relaxed is enough: the counters are touched by the consumer thread only.
const R: Ordering = Ordering::Relaxed;

struct Dispatcher {
    ctx: Arc<Context>,
    consumer: Box<dyn Consumer>,
    parts: Partitions,
    /// Per worker: jobs the worker's full queue could not take yet. FIFO per
    /// worker keeps per-key order (a key always maps to one worker).
    outbox: Vec<Outbox>,
    job_txs: Vec<Sender<Vec<Job>>>,
    completions: Receiver<Vec<Completion>>,
    round_robin: usize,
    last_commit: Instant,
    /// Last `poll(ZERO)` while the workers are saturated.
    last_zero_poll: Instant,
    /// Set when the engine cannot go on (a worker is gone).
    failed: Option<String>,
    /// The dead-letter limit holds the outboxes and pauses everything.
    held: bool,
    /// Key order: the relay keeps `max_parked` copies whole for their
    /// key's turn; every origin partition is paused until they drain to
    /// 3/4 (see [`Dispatcher::keys_full`]).
    keys_full: bool,
    status: Arc<ThreadStatus>,
    /// Key order: assigned partitions whose blocked keys this instance's
    /// relay has not read yet (paused since, records fetched meanwhile kept
    /// here), with when they were assigned.
    unready: HashMap<TopicPartition, (Instant, Vec<Record>)>,
    #[cfg(feature = "metrics")]
    last_publish: Instant,
}

pub(crate) fn run(
    ctx: Arc<Context>,
    consumer: Box<dyn Consumer>,
    job_txs: Vec<Sender<Vec<Job>>>,
    completions: Receiver<Vec<Completion>>,
    status: Arc<ThreadStatus>,
) -> Result<(), String> {
    let mut d = Dispatcher {
        outbox: job_txs.iter().map(|_| Outbox::default()).collect(),
        ctx,
        consumer,
        parts: Partitions::default(),
        job_txs,
        completions,
        round_robin: 0,
        last_commit: Instant::now(),
        last_zero_poll: Instant::now(),
        failed: None,
        held: false,
        keys_full: false,
        status,
        unready: HashMap::new(),
        #[cfg(feature = "metrics")]
        last_publish: Instant::now(),
    };
    let mut poller = Poller::new(
        "consumer",
        format!("{:?}", d.ctx.topics),
        d.ctx.counters.clone(),
    );
    while !d.ctx.signal.stopping() {
        d.drain_completions();
        d.release_ready();
        d.flush_outboxes();
        if let Some(why) = d.failed.take() {
            log::error!("{}: consumer thread stops: {why}", d.ctx.group_id);
            let _ = d.shutdown();
            return Err(why);
        }
        if d.last_commit.elapsed() >= d.ctx.commit_interval {
            d.commit_all();
        }
        #[cfg(feature = "metrics")]
        if d.last_publish.elapsed() >= super::metrics::PUBLISH_INTERVAL {
            d.last_publish = Instant::now();
            d.publish();
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
        } else if d.ctx.key_order.as_ref().is_some_and(|k| k.any_in_flight()) {
            // Key order: a completion may release a key's next held record,
            // handed out from here; do not sit out a whole poll on it.
            KEY_TURN_POLL
        } else {
            POLL_TIMEOUT
        };
        match poller.poll(&mut *d.consumer, timeout, &d.ctx.health.consumer_polls)? {
            Some(event) => d.handle(event),
            None => poller.back_off(&d.ctx.signal, || {}),
        }
    }
    d.shutdown()
}

impl Dispatcher {
    fn handle(&mut self, event: ConsumerEvent) {
        let assigned = matches!(event, ConsumerEvent::Assigned(_));
        // Not on Revoked: an Assigned follows it (eager: the whole new
        // share; cooperative: what was added), and claiming once then saves
        // the relay group a rebalance. Meanwhile the partitions' new owners
        // claim them in a newer generation, which wins the tie.
        let claim = matches!(event, ConsumerEvent::Assigned(_) | ConsumerEvent::Lost(_));
        self.handle_event(event);
        if claim {
            if let Some(ko) = &self.ctx.key_order {
                // The relay asks for the retry partitions of what we own
                // now (its consumer rejoins when that changed).
                ko.claim(self.parts.keys().iter(), self.consumer.generation());
            }
        }
        if assigned && self.held {
            // New partitions start paused while the limit holds.
            self.held = false;
        }
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
                self.hold_until_ready(&tps);
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
        let mut records = records.into_iter();
        // Records come grouped by partition: per run of one partition one
        // key-order check, one lease lookup, one tracker lock and one update
        // of each lease counter, not one per record. Runs are found on the
        // iterator's remaining slice, so records move once, into their job.
        while let Some(first) = records.as_slice().first() {
            let partition = first.partition;
            let len = records
                .as_slice()
                .iter()
                .take_while(|r| r.partition == partition && r.topic == first.topic)
                .count();
            let (tp, from) = (
                TopicPartition::new(first.topic.clone(), partition),
                first.offset,
            );
            let run = records.by_ref().take(len);
            if !self.unready.is_empty() {
                if let Some((_, kept)) = self.unready.get_mut(&tp) {
                    kept.extend(run); // key order: its keys are not known yet
                    continue;
                }
            }
            let Some(lease) = self.parts.get(&tp).map(|p| p.lease.clone()) else {
                log::warn!("{len} records {tp}@{from}.. from an unassigned partition ignored");
                run.for_each(drop);
                continue;
            };
            let mut n = 0;
            // Held for the run: only a key-order completion contends, and
            // it waits at most one run.
            let mut tracker = lease.tracker();
            for record in run {
                if !tracker.track(record.offset) {
                    continue; // already dispatched (a re-fetch after a rewind)
                }
                let worker = worker_for(record.key.as_deref(), workers, &mut self.round_robin);
                self.outbox[worker].push_back(
                    Job {
                        record,
                        lease: lease.clone(),
                        received_ms,
                    },
                    &self.ctx.spares,
                );
                n += 1;
            }
            drop(tracker);
            // After the pushes is soon enough: the outboxes are handed to
            // the workers by this thread, below.
            lease.outstanding.fetch_add(n, R);
            lease.outboxed.fetch_add(n, R);
            count += n;
        }
        self.ctx
            .counters
            .received
            .fetch_add(count as u64, Ordering::Relaxed);
        self.ctx
            .counters
            .in_flight
            .fetch_add(count as i64, Ordering::Relaxed);
        self.flush_outboxes();
    }

    /// Hands outbox jobs to workers without blocking, then pauses partitions
    /// that still have jobs waiting and resumes those that have none.
    fn flush_outboxes(&mut self) {
        // The dead-letter limit: hand nothing out and pause every partition
        // until it is lifted; what is queued stays queued, nothing skipped.
        let hold = self.ctx.dead_letters_paused();
        if hold && !self.held {
            let tps = self.parts.keys();
            for p in self.parts.iter_mut() {
                p.1.paused = true;
            }
            self.consumer.pause(&tps);
            self.held = true;
            self.ctx
                .counters
                .paused_partitions
                .store(tps.len() as i64, Ordering::Relaxed);
        }
        if hold {
            return;
        }
        if self.held {
            // Lifted: unpause what has no jobs waiting (below).
            self.held = false;
            let tps = self.parts.keys();
            for p in self.parts.iter_mut() {
                p.1.paused = false;
            }
            self.consumer.resume(&tps);
        }
        for (w, outbox) in self.outbox.iter_mut().enumerate() {
            while let Some(batch) = outbox.batches.pop_front() {
                // Before the send: once sent, a worker may finish them.
                outboxed_by_runs(&batch, |lease, n| lease.outboxed.fetch_sub(n, R));
                match self.job_txs[w].try_send(batch) {
                    Ok(()) => {}
                    Err(TrySendError::Disconnected(batch)) => {
                        outboxed_by_runs(&batch, |lease, n| lease.outboxed.fetch_add(n, R));
                        // Workers catch every panic, so this is a bug; stop
                        // rather than keep its partitions paused forever.
                        self.failed = Some(format!("worker {w} is gone"));
                        outbox.batches.push_front(batch);
                        break;
                    }
                    Err(TrySendError::Full(batch)) => {
                        outboxed_by_runs(&batch, |lease, n| lease.outboxed.fetch_add(n, R));
                        outbox.batches.push_front(batch);
                        break;
                    }
                }
            }
        }
        let keys_full = self.keys_full();
        let mut pause = Vec::new();
        let mut resume = Vec::new();
        for (tp, p) in self.parts.iter_mut() {
            let waiting = p.lease.outboxed.load(R);
            if (waiting > 0 || keys_full) && !p.paused {
                p.paused = true;
                pause.push(tp.clone());
            } else if waiting == 0 && !keys_full && p.paused && !self.unready.contains_key(tp) {
                // (An unready partition stays paused until release_ready.)
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

    /// Key order: pauses the newly assigned partitions whose blocked keys
    /// this instance's relay has not read yet (see keyorder.rs).
    fn hold_until_ready(&mut self, tps: &[TopicPartition]) {
        let Some(ko) = &self.ctx.key_order else {
            return;
        };
        let wait: Vec<TopicPartition> = tps
            .iter()
            .filter(|tp| self.parts.get(tp).is_none() && !ko.renew(tp))
            .cloned()
            .collect();
        if wait.is_empty() {
            return;
        }
        log::debug!("key order: {} wait for their blocked keys", list(&wait));
        self.consumer.pause(&wait);
        for tp in wait {
            self.unready.insert(tp, (Instant::now(), Vec::new()));
        }
    }

    /// Key order's bound: while the relay keeps `max_parked` copies whole
    /// for their key's turn, no more origin records are fetched (each could
    /// add a held copy), until they drain to 3/4. Pausing the relay's retry
    /// topic instead could deadlock: a key's head, parked again, can sit
    /// unread behind its own held copies. Here the heads still come due,
    /// and the copies they release still reach the workers (the outboxes
    /// are not held), so the count goes down. Records already fetched or
    /// queued to a worker can still add held copies: the bound is
    /// `max_parked` plus those.
    fn keys_full(&mut self) -> bool {
        let Some(ko) = &self.ctx.key_order else {
            return false;
        };
        let n = ko.waiting();
        self.ctx
            .counters
            .held_waiting
            .store(n as i64, Ordering::Relaxed);
        let max = self.ctx.max_parked.max(1);
        if !self.keys_full && n >= max {
            log::info!(
                "{}: key order: {n} held copies wait for their key (max_parked {max}); \
                 pausing the origin partitions",
                self.ctx.group_id
            );
            self.keys_full = true;
        } else if self.keys_full && n <= max - max.div_ceil(4) {
            log::info!(
                "{}: key order: {n} held copies wait for their key; resuming",
                self.ctx.group_id
            );
            self.keys_full = false;
        }
        self.keys_full
    }

    /// Key order: resumes and dispatches the partitions whose keys are now
    /// known, or that waited [`READY_WAIT`] (then workers park every keyed
    /// record of theirs until they are known: slower, never out of order).
    fn release_ready(&mut self) {
        let Some(ko) = self.ctx.key_order.clone() else {
            return;
        };
        if self.unready.is_empty() {
            return;
        }
        let go: Vec<TopicPartition> = self
            .unready
            .iter()
            .filter(|(tp, (since, _))| ko.ready(tp) || since.elapsed() >= READY_WAIT)
            .map(|(tp, _)| tp.clone())
            .collect();
        if go.is_empty() {
            return;
        }
        let mut records = Vec::new();
        for tp in &go {
            if let Some((_, kept)) = self.unready.remove(tp) {
                if !ko.ready(tp) {
                    self.ctx.counters.hold_all.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "{}: {tp}: this instance's relay has not read its blocked keys within {READY_WAIT:?}; its keyed records are parked until it has",
                        self.ctx.group_id
                    );
                }
                records.extend(kept);
            }
        }
        // One paused by the flush meanwhile (key order's bound) stays
        // paused: the flush resumes it once that is over.
        let resume: Vec<TopicPartition> = go
            .into_iter()
            .filter(|tp| !self.parts.get(tp).is_some_and(|p| p.paused))
            .collect();
        self.consumer.resume(&resume);
        self.dispatch(records);
    }

    fn drain_completions(&mut self) {
        while let Ok(batch) = self.completions.try_recv() {
            self.complete(batch);
        }
    }

    fn complete(&mut self, batch: Vec<Completion>) {
        let n = batch.len();
        if self.ctx.key_order.is_some() {
            self.key_turns(&batch);
        }
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

    /// Key order: a worker finished a copy from the retry side; its key's
    /// next copy, if it may be handled now, goes to the key's worker.
    fn key_turns(&mut self, batch: &[Completion]) {
        let Some(ko) = self.ctx.key_order.clone() else {
            return;
        };
        let workers = self.job_txs.len();
        for c in batch {
            if c.lease.tp.topic != self.ctx.retry_topic {
                continue;
            }
            let Some(mut job) = ko.finished(c.lease.tp.partition, c.offset, c.done) else {
                continue;
            };
            job.received_ms = now_ms();
            let w = worker_for(job.record.key.as_deref(), workers, &mut self.round_robin);
            // As for every job: the completion and drop_outboxed take both
            // back (the relay's final commit waits for `outstanding`).
            job.lease.outstanding.fetch_add(1, R);
            job.lease.outboxed.fetch_add(1, R);
            let c = &self.ctx.counters;
            c.in_flight.fetch_add(1, Ordering::Relaxed);
            c.redelivered_private.fetch_add(1, Ordering::Relaxed);
            self.outbox[w].push_back(job, &self.ctx.spares);
        }
    }

    /// Commits the done watermark of every partition that moved.
    fn commit_all(&mut self) {
        self.last_commit = Instant::now();
        if let Err(e) = self.parts.commit_all(
            &mut *self.consumer,
            &self.ctx.counters,
            &self.ctx.health.consumer_commits,
        ) {
            log::warn!(
                "{}: commit failed (retried next interval): {e}",
                self.ctx.group_id
            );
        }
    }

    fn commit(&mut self, tps: &[TopicPartition]) -> crate::Result<()> {
        self.parts.commit(
            &mut *self.consumer,
            &self.ctx.counters,
            &self.ctx.health.consumer_commits,
            tps,
        )
    }

    /// Gives partitions up. With a deadline (clean revoke) running records
    /// may finish until then and the done watermark is committed; without
    /// one (lost) nothing is committed. Queued jobs are skipped either way:
    /// the next owner reads them from the committed offset.
    fn release(&mut self, tps: &[TopicPartition], deadline: Option<Instant>) {
        for tp in tps {
            self.unready.remove(tp); // its kept records are re-read by the next owner
        }
        self.parts.revoke(tps);
        self.drop_outboxed(|lease| tps.contains(&lease.tp));
        if let Some(deadline) = deadline {
            let busy = self.wait_outstanding(tps, deadline);
            if busy > 0 {
                log::warn!(
                    "{}: {busy} records of revoked partitions still running at the deadline; abandoned, the next owner re-reads them",
                    self.ctx.group_id
                );
            }
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
            outbox.retain(|job: &Job| {
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

    /// Waits until no record of `tps` is outstanding, or the deadline;
    /// returns how many still are.
    fn wait_outstanding(&mut self, tps: &[TopicPartition], deadline: Instant) -> usize {
        loop {
            let busy: usize = tps
                .iter()
                .filter_map(|tp| self.parts.get(tp))
                .map(|p| p.lease.outstanding.load(R))
                .sum();
            if busy == 0 {
                return 0;
            }
            // A shutdown during a revoke wait shortens the wait to the
            // shutdown's own drain time, not its deadline: the time after
            // it is for the commits and the leave (a wait to the deadline
            // left the consumer thread running past it).
            let limit = match self.ctx.signal.drain_until() {
                Some(d) if self.ctx.signal.stopping() => deadline.min(d),
                _ => deadline,
            };
            self.flush_outboxes();
            let step = limit.min(Instant::now() + Duration::from_millis(50));
            match self.completions.recv_deadline(step) {
                Ok(batch) => self.complete(batch),
                Err(_) if Instant::now() < limit => {}
                Err(_) => return busy,
            }
        }
    }

    /// Stop: drain until shortly before the deadline, commit, leave.
    fn shutdown(mut self) -> Result<(), String> {
        // Keep a slice of the time for the commit and the leave.
        let drain_until = self.ctx.signal.drain_until().unwrap_or_else(Instant::now);
        // Records fetched but not yet handed out are worked off too, as
        // far as the time allows: what is left is abandoned, uncommitted.
        let tps = self.parts.keys();
        self.wait_outstanding(&tps, drain_until);
        // Records the relay handed to the workers (private redelivery)
        // are in flight too: their completions come through here, and
        // the relay's final commit waits for them. (With key order a
        // completion can queue its key's next copy: handed out as well,
        // within the same time.)
        while self.ctx.counters.in_flight.load(Ordering::Relaxed) > 0
            && Instant::now() < drain_until
        {
            self.flush_outboxes();
            let step = drain_until.min(Instant::now() + Duration::from_millis(50));
            if let Ok(batch) = self.completions.recv_deadline(step) {
                self.complete(batch);
            }
        }
        self.drop_outboxed(|_| true);
        self.ctx.signal.request_abandon();
        // Collect what finished while abandoning, then commit it.
        self.drain_completions();
        let wanted: Vec<String> = self
            .parts
            .to_commit(&tps)
            .iter()
            .map(|(tp, w)| format!("{tp}@{w}"))
            .collect();
        self.status.step(Doing::Committing);
        let commit = self.commit(&tps);
        // One count, one list: records not done, and where each partition
        // will be read again (nothing unfinished is committed).
        let (abandoned, uncommitted) = self.parts.unfinished();
        let error = commit
            .err()
            .map(|e| format!("final commit of {} failed: {e}", wanted.join(", ")));
        if abandoned > 0 || !uncommitted.is_empty() || error.is_some() {
            let from: Vec<String> = uncommitted
                .iter()
                .map(|(tp, o)| format!("{tp} from offset {o}"))
                .collect();
            log::warn!(
                "{}: shutdown: {abandoned} records abandoned, not committed: {}{}",
                self.ctx.group_id,
                if from.is_empty() {
                    "nothing".to_string()
                } else {
                    from.join(", ")
                },
                error
                    .as_deref()
                    .map(|e| format!("; {e}"))
                    .unwrap_or_default()
            );
        }
        self.ctx.signal.add_to_report(|r| {
            r.abandoned += abandoned;
            r.uncommitted.extend(uncommitted);
            r.errors.extend(error);
        });
        // Disconnect the workers so they exit once their queue is drained.
        self.job_txs.clear();
        self.status.step(Doing::LeavingGroup);
        let closed = if self.ctx.signal.for_restart() {
            self.consumer.close_for_restart()
        } else {
            self.consumer.close()
        };
        if let Err(e) = closed {
            log::debug!("leave group: {e}");
        }
        self.status.step(Doing::Idle);
        #[cfg(feature = "metrics")]
        self.publish();
        Ok(())
    }

    /// Copies the counters into the metrics.
    #[cfg(feature = "metrics")]
    fn publish(&self) {
        self.ctx
            .metrics
            .publish(&self.ctx.counters.snapshot(), &self.ctx.health);
        let lags = self.parts.lags(&self.consumer.progress());
        self.ctx.metrics.publish_lag(&lags);
    }
}

/// One worker's outbox: its jobs in order, already cut into the batches
/// they are sent in (at most [`JOB_BATCH`] each, all full but the last
/// unless jobs were dropped), so a job moves once, into its batch, and a
/// send moves a whole batch.
#[derive(Default)]
struct Outbox {
    batches: VecDeque<Vec<Job>>,
}

impl Outbox {
    fn push_back(&mut self, job: Job, spares: &Spares) {
        match self.batches.back_mut() {
            Some(b) if b.len() < JOB_BATCH => b.push(job),
            _ => {
                let mut b = spares.take();
                b.push(job);
                self.batches.push_back(b);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Keeps the jobs `keep` says to, in order.
    fn retain(&mut self, mut keep: impl FnMut(&Job) -> bool) {
        for b in &mut self.batches {
            b.retain(&mut keep);
        }
        self.batches.retain(|b| !b.is_empty());
    }
}

/// Calls `f(lease, n)` once per run of `n` consecutive jobs of one lease:
/// jobs mostly come in long runs of one partition, so a counter is
/// updated once per run rather than once per job.
fn outboxed_by_runs(jobs: &[Job], mut f: impl FnMut(&Lease, usize) -> usize) {
    let mut i = 0;
    while i < jobs.len() {
        let lease = &jobs[i].lease;
        let n = jobs[i..]
            .iter()
            .take_while(|j| Arc::ptr_eq(&j.lease, lease))
            .count();
        f(lease, n);
        i += n;
    }
}

fn list(tps: &[TopicPartition]) -> String {
    if tps.is_empty() {
        return "nothing".into();
    }
    let v: Vec<String> = tps.iter().map(|t| t.to_string()).collect();
    v.join(", ")
}

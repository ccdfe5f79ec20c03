//! The engine: builder, start-up, stats and shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub(crate) use crate::clock::{deadline_after, now_ms};

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::policy::RetryPolicy;
use crate::stats::{Counters, Stats};
use crate::transport::{ConsumerConfig, OffsetReset, Producer, Transport};
use crate::{consumer, pool, relay};

/// Commits `offsets` (nothing to do when empty), counting failures and
/// stamping the time of the last success. Shared by the consumer thread and
/// the relay.
pub(crate) fn commit_offsets(
    consumer: &mut dyn crate::transport::Consumer,
    counters: &Counters,
    offsets: &[(crate::record::TopicPartition, i64)],
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    match consumer.commit(offsets) {
        Ok(()) => {
            counters.last_commit_ms.store(now_ms(), Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            counters.commit_errors.fetch_add(1, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// Shared stop signal. `stop` ends the polling loops; `abandon` tells
/// workers to skip queued jobs (their records stay uncommitted and are
/// re-read later, never lost).
#[derive(Debug, Default)]
pub(crate) struct Signal {
    pub stop: AtomicBool,
    pub abandon: AtomicBool,
    pub deadline: Mutex<Option<Instant>>,
    /// What a stopping thread could not finish, said before its last
    /// blocking step (leaving the group), so the shutdown error names it
    /// even when that step outlasts the deadline.
    reports: Mutex<Vec<(String, String)>>,
}

impl Signal {
    /// Records what the current thread could not finish.
    pub(crate) fn report(&self, problem: String) {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, problem));
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
    pub(crate) fn abandoning(&self) -> bool {
        self.abandon.load(Ordering::Acquire)
    }
    pub(crate) fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Everything the engine's threads share.
pub(crate) struct Context {
    pub group_id: String,
    pub topics: Vec<String>,
    pub retry_topic: String,
    pub dead_letter_topic: Option<String>,
    pub policy: RetryPolicy,
    pub producer: Arc<dyn Producer>,
    pub transport: Arc<dyn Transport>,
    pub counters: Arc<Counters>,
    pub signal: Arc<Signal>,
    pub commit_interval: Duration,
    pub revoke_timeout: Duration,
    pub max_parked: usize,
    pub queue_batches: usize,
}

/// Builds an [`Engine`]. Every setter's default is listed in its doc;
/// [`EngineBuilder::build`] validates, creates the retry and dead-letter
/// topics when missing, and starts the threads.
///
/// ```
/// use std::time::Duration;
/// use kafka_retry::{Engine, MemoryBroker, Outcome, Record, RetryPolicy};
///
/// let broker = MemoryBroker::new();
/// broker.create_topic("orders", 2).unwrap();
/// let engine = Engine::builder(broker.clone())
///     .group_id("billing")
///     .topics(["orders"])
///     .handler(|_r: &Record| Outcome::Done)
///     .policy(RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(5)))
///     .build()
///     .unwrap();
/// engine.shutdown(Duration::from_secs(5)).unwrap();
/// ```
pub struct EngineBuilder {
    transport: Arc<dyn Transport>,
    group_id: Option<String>,
    topics: Vec<String>,
    handler: Option<Arc<dyn Handler>>,
    workers: usize,
    policy: RetryPolicy,
    retry_topic: Option<String>,
    dead_letter_topic: Option<Option<String>>,
    topic_partitions: Option<i32>,
    replication_factor: Option<i16>,
    commit_interval: Duration,
    revoke_timeout: Duration,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    offset_reset: OffsetReset,
    max_parked: usize,
    queue_capacity: usize,
    max_poll_records: usize,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("workers", &self.workers)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Records per job batch sent to a worker.
pub(crate) const JOB_BATCH: usize = 256;

impl EngineBuilder {
    fn new(transport: Arc<dyn Transport>) -> Self {
        EngineBuilder {
            transport,
            group_id: None,
            topics: Vec::new(),
            handler: None,
            workers: 4,
            policy: RetryPolicy::default(),
            retry_topic: None,
            dead_letter_topic: None,
            topic_partitions: None,
            replication_factor: None,
            commit_interval: Duration::from_secs(1),
            revoke_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            offset_reset: OffsetReset::Earliest,
            max_parked: 100_000,
            queue_capacity: 1024,
            max_poll_records: 500,
        }
    }

    /// Consumer group id. Required.
    pub fn group_id(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = Some(group_id.into());
        self
    }

    /// Origin topics to consume. Required, at least one.
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// The record handler. Required.
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Worker threads running the handler. Defaults to 4.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Retry policy. Defaults to [`RetryPolicy::default`]: every 5 s for up to 1 h.
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Retry topic. Defaults to `<group>-retry`.
    pub fn retry_topic(mut self, topic: impl Into<String>) -> Self {
        self.retry_topic = Some(topic.into());
        self
    }

    /// Dead-letter topic; `None` switches dead-lettering off: given-up
    /// records are then dropped with a warning and counted in
    /// [`Stats::dropped`]. Defaults to `Some("<group>-dlt")`.
    pub fn dead_letter_topic(mut self, topic: Option<impl Into<String>>) -> Self {
        self.dead_letter_topic = Some(topic.map(Into::into));
        self
    }

    /// Partitions for retry and dead-letter topics created by `build`.
    /// Defaults to the largest partition count among the origin topics.
    pub fn topic_partitions(mut self, partitions: i32) -> Self {
        self.topic_partitions = Some(partitions);
        self
    }

    /// Replication factor of the retry and dead-letter topics created by
    /// `build` (at least 1). Defaults to the broker's
    /// `default.replication.factor`.
    pub fn replication_factor(mut self, replication_factor: i16) -> Self {
        self.replication_factor = Some(replication_factor);
        self
    }

    /// How often done offsets are committed. Defaults to 1 s.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// On a rebalance, how long in-flight records of revoked partitions may
    /// take to finish before they are abandoned (and re-read by the new
    /// owner). Defaults to 10 s; must be below the rebalance timeout.
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_timeout = timeout;
        self
    }

    /// Group session timeout. Defaults to 10 s.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Group rebalance timeout. Defaults to 30 s.
    pub fn rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.rebalance_timeout = timeout;
        self
    }

    /// Where to start without a committed offset. Defaults to earliest.
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }

    /// Most records the relay keeps parked in memory; past it, the relay
    /// pauses its retry partitions. Defaults to 100,000.
    pub fn max_parked(mut self, max: usize) -> Self {
        self.max_parked = max;
        self
    }

    /// Records queued per worker before fetching pauses. Records travel to
    /// a worker in batches of up to 256, and the queue holds
    /// `ceil(records / 256)` batches, so when records trickle in one at a
    /// time it fills with fewer records than this. Defaults to 1024.
    pub fn queue_capacity(mut self, records: usize) -> Self {
        self.queue_capacity = records;
        self
    }

    /// Most records per poll. Defaults to 500.
    pub fn max_poll_records(mut self, records: usize) -> Self {
        self.max_poll_records = records;
        self
    }

    /// Validates, creates missing retry and dead-letter topics, and starts
    /// the consumer, worker and relay threads.
    pub fn build(self) -> Result<Engine> {
        let group_id = match &self.group_id {
            Some(g) if !g.trim().is_empty() => g.clone(),
            _ => {
                return Err(Error::config(
                    "group_id",
                    "is required and must not be empty",
                ))
            }
        };
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(Error::config(
                "topics",
                "at least one non-empty topic is required",
            ));
        }
        let handler = self
            .handler
            .clone()
            .ok_or_else(|| Error::config("handler", "is required"))?;
        if self.workers == 0 || self.workers > 1024 {
            return Err(Error::config(
                "workers",
                format!("{} is outside 1..=1024", self.workers),
            ));
        }
        self.policy.validate()?;
        if self.commit_interval.is_zero() {
            return Err(Error::config(
                "commit_interval",
                "must be greater than zero",
            ));
        }
        if self.revoke_timeout >= self.rebalance_timeout {
            return Err(Error::config(
                "revoke_timeout",
                format!(
                    "{:?} must be shorter than rebalance_timeout {:?}",
                    self.revoke_timeout, self.rebalance_timeout
                ),
            ));
        }
        if self.max_parked == 0 {
            return Err(Error::config("max_parked", "must be at least 1"));
        }
        if self.queue_capacity == 0 {
            return Err(Error::config("queue_capacity", "must be at least 1"));
        }
        if self.max_poll_records == 0 {
            return Err(Error::config("max_poll_records", "must be at least 1"));
        }
        let retry_topic = self
            .retry_topic
            .clone()
            .unwrap_or_else(|| format!("{group_id}-retry"));
        let dead_letter_topic = match &self.dead_letter_topic {
            Some(t) => t.clone(),
            None => Some(format!("{group_id}-dlt")),
        };
        if self.topics.contains(&retry_topic) {
            return Err(Error::config(
                "retry_topic",
                "must not be one of the origin topics",
            ));
        }
        if let Some(d) = &dead_letter_topic {
            if d == &retry_topic || self.topics.contains(d) {
                return Err(Error::config(
                    "dead_letter_topic",
                    "must differ from the retry topic and the origin topics",
                ));
            }
        }
        let mut max_partitions = 1;
        for t in &self.topics {
            match self.transport.partition_count(t)? {
                Some(n) => max_partitions = max_partitions.max(n),
                None => return Err(Error::UnknownTopic(t.clone())),
            }
        }
        let partitions = self.topic_partitions.unwrap_or(max_partitions);
        if partitions < 1 {
            return Err(Error::config("topic_partitions", "must be at least 1"));
        }
        for t in std::iter::once(&retry_topic).chain(dead_letter_topic.iter()) {
            if self.transport.partition_count(t)?.is_none() {
                log::info!("creating topic {t} with {partitions} partitions");
                self.transport
                    .create_topic(t, partitions, self.replication_factor)?;
            }
        }
        let producer = self.transport.producer()?;
        let counters = Arc::new(Counters::default());
        let signal = Arc::new(Signal::default());
        let ctx = Arc::new(Context {
            group_id: group_id.clone(),
            topics: self.topics.clone(),
            retry_topic: retry_topic.clone(),
            dead_letter_topic,
            policy: self.policy.clone(),
            producer,
            transport: self.transport.clone(),
            counters: counters.clone(),
            signal: signal.clone(),
            commit_interval: self.commit_interval,
            revoke_timeout: self.revoke_timeout,
            max_parked: self.max_parked,
            queue_batches: self.queue_capacity.div_ceil(JOB_BATCH).max(1),
        });
        let consumer_config = |group: String, topics: Vec<String>| ConsumerConfig {
            group_id: group,
            topics,
            offset_reset: self.offset_reset,
            session_timeout: self.session_timeout,
            rebalance_timeout: self.rebalance_timeout,
            max_poll_records: self.max_poll_records,
            client_id: Some(format!("kafka-retry-{group_id}")),
        };
        // Create both group members before starting any thread, so a broker
        // error surfaces from build() and not from a thread later.
        let main = self
            .transport
            .consumer(consumer_config(group_id.clone(), self.topics.clone()))?;
        let relay_consumer = self.transport.consumer(consumer_config(
            format!("{group_id}-relay"),
            vec![retry_topic.clone()],
        ))?;

        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut threads = Threads {
            handles: Vec::new(),
            signal: signal.clone(),
            done_rx,
        };
        let (completion_tx, completion_rx) = crossbeam_channel::unbounded();
        let mut job_txs = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            let (tx, rx) = crossbeam_channel::bounded(ctx.queue_batches);
            job_txs.push(tx);
            let ctx = ctx.clone();
            let handler = handler.clone();
            let completion_tx = completion_tx.clone();
            threads.spawn(format!("kafka-retry-worker-{i}"), &done_tx, move || {
                pool::run_worker(ctx, handler, rx, completion_tx);
                Ok(())
            })?;
        }
        drop(completion_tx);
        {
            let ctx = ctx.clone();
            threads.spawn("kafka-retry-consumer".into(), &done_tx, move || {
                consumer::run(ctx, main, job_txs, completion_rx)
            })?;
        }
        {
            let ctx = ctx.clone();
            threads.spawn("kafka-retry-relay".into(), &done_tx, move || {
                relay::run(ctx, relay_consumer)
            })?;
        }
        log::info!(
            "engine started: group {group_id}, topics {:?}, retry topic {retry_topic}, {} workers",
            self.topics,
            self.workers
        );
        Ok(Engine {
            threads: Some(threads),
            counters,
        })
    }
}

type ThreadResult = std::result::Result<(), String>;

/// The engine's threads. Dropping it before they are handed to an
/// [`Engine`] (a spawn failed half way) stops the ones already started.
struct Threads {
    handles: Vec<(String, JoinHandle<ThreadResult>)>,
    signal: Arc<Signal>,
    done_rx: Receiver<String>,
}

/// Tells the engine a thread ended, even when it panicked.
struct DoneGuard(String, Sender<String>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.1.send(std::mem::take(&mut self.0));
    }
}

impl Threads {
    fn spawn(
        &mut self,
        name: String,
        done_tx: &Sender<String>,
        f: impl FnOnce() -> ThreadResult + Send + 'static,
    ) -> Result<()> {
        let guard = DoneGuard(name.clone(), done_tx.clone());
        let handle = thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _guard = guard;
                f()
            })
            .map_err(|e| Error::Thread(format!("spawn {name}: {e}")))?;
        self.handles.push((name, handle));
        Ok(())
    }

    /// Signals stop and waits for every thread until `deadline`. Threads
    /// still running then are left detached and named in the error.
    fn stop(&mut self, deadline: Instant) -> Result<()> {
        *self
            .signal
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(deadline);
        self.signal.stop.store(true, Ordering::Release);
        let mut problems = Vec::new();
        let mut finished = std::collections::HashSet::new();
        while finished.len() < self.handles.len() {
            match self.done_rx.recv_deadline(deadline) {
                Ok(name) => {
                    finished.insert(name);
                }
                Err(_) => break,
            }
        }
        // Whatever is still running past the deadline stops waiting on the
        // broker: workers retrying a write give up (their records stay
        // uncommitted), even if the consumer thread died before saying so.
        self.signal.abandon.store(true, Ordering::Release);
        for (name, handle) in self.handles.drain(..) {
            // A thread that signalled is past its work (the signal is sent
            // by a guard on its way out), so joining it cannot block long.
            if !finished.contains(&name) {
                let reports = self
                    .signal
                    .reports
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let said: Vec<&str> = reports
                    .iter()
                    .filter(|(n, _)| *n == name)
                    .map(|(_, p)| p.as_str())
                    .collect();
                if said.is_empty() {
                    problems.push(format!("{name} still running at the deadline"));
                } else {
                    problems.push(format!(
                        "{name} still running at the deadline: {}",
                        said.join("; ")
                    ));
                }
                continue;
            }
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problems.push(format!("{name}: {e}")),
                Err(panic) => problems.push(format!("{name} panicked: {}", panic_message(&*panic))),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Shutdown(problems.join("; ")))
        }
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        if !self.handles.is_empty() {
            let _ = self.stop(Instant::now() + Duration::from_secs(10));
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// A running retry engine: a consumer thread, a handler pool and a relay.
///
/// Dropping it shuts it down with a 10 s deadline, ignoring errors; call
/// [`Engine::shutdown`] to learn what could not be finished.
pub struct Engine {
    threads: Option<Threads>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Engine {
    /// Starts building an engine on `transport` (a [`MemoryBroker`](crate::MemoryBroker)
    /// or a [`KafkaTransport`](crate::KafkaTransport)).
    pub fn builder(transport: impl Transport) -> EngineBuilder {
        EngineBuilder::new(Arc::new(transport))
    }

    /// Like [`Engine::builder`], for a transport already behind an `Arc`.
    pub fn builder_shared(transport: Arc<dyn Transport>) -> EngineBuilder {
        EngineBuilder::new(transport)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Stops fetching, lets in-flight records finish until shortly before
    /// `timeout`, commits what is done, leaves the groups and joins every
    /// thread. Returns within `timeout` (plus a commit round trip); an
    /// error says what was not finished or committed, or which thread
    /// panicked. Nothing unfinished is committed, so it is re-read later.
    pub fn shutdown(mut self, timeout: Duration) -> Result<()> {
        match self.threads.take() {
            Some(mut t) => t.stop(deadline_after(timeout)),
            None => Ok(()),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut t) = self.threads.take() {
            if let Err(e) = t.stop(Instant::now() + Duration::from_secs(10)) {
                log::warn!("engine dropped: {e}");
            }
        }
    }
}

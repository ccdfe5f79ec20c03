//! [`EngineBuilder`]: settings, their validation, topic creation, and the
//! start of the engine's threads.

use std::sync::Arc;
use std::time::Duration;

use super::context::{Context, StopSignal};
use super::job::JOB_BATCH;
use super::running::Engine;
use super::supervisor::Threads;
use super::{dispatch, relay, worker};
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::policy::RetryPolicy;
use crate::stats::Counters;
use crate::transport::{ConsumerConfig, OffsetReset, Transport};

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
        let signal = Arc::new(StopSignal::default());
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
            client_id: format!("kafka-retry-{group_id}"),
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

        let mut threads = Threads::new(signal);
        let (completion_tx, completion_rx) = crossbeam_channel::unbounded();
        let mut job_txs = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            let (tx, rx) = crossbeam_channel::bounded(ctx.queue_batches);
            job_txs.push(tx);
            let ctx = ctx.clone();
            let handler = handler.clone();
            let completion_tx = completion_tx.clone();
            threads.spawn(format!("kafka-retry-worker-{i}"), move || {
                worker::run_worker(ctx, handler, rx, completion_tx);
                Ok(())
            })?;
        }
        drop(completion_tx);
        {
            let ctx = ctx.clone();
            threads.spawn("kafka-retry-consumer".into(), move || {
                dispatch::run(ctx, main, job_txs, completion_rx)
            })?;
        }
        {
            let ctx = ctx.clone();
            threads.spawn("kafka-retry-relay".into(), move || {
                relay::run(ctx, relay_consumer)
            })?;
        }
        log::info!(
            "engine started: group {group_id}, topics {:?}, retry topic {retry_topic}, {} workers",
            self.topics,
            self.workers
        );
        Ok(Engine::new(threads, counters))
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
}

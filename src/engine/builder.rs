//! [`EngineBuilder`]: settings, their validation, topic creation, and the
//! start of the engine's threads.

use std::sync::Arc;
use std::time::Duration;

use super::breaker::{Breaker, DeadLetterLimit};
use super::context::{Context, StopSignal};
use super::health::HealthBoard;
use super::job::JOB_BATCH;
use super::keyorder::{KeyOrder, KeyOrderState};
use super::relay::private::Redelivery;
use super::running::Engine;
use super::supervisor::Threads;
use super::topics::{check_derived_topic, check_topic, DeadLetterTopics, MissingTopics, Router};
use super::{dispatch, relay, worker};
use crate::error::{Error, Result};
use crate::handler::{Handler, Outcome};
use crate::headers::DeadReason;
use crate::policy::RetryPolicy;
use crate::record::Record;
use crate::stats::Counters;
use crate::transport::{ConsumerConfig, IsolationLevel, OffsetReset, Transport};

// `build()`: validation, topic creation and the start of the threads.
mod build;

/// [`EngineBuilder::max_poll_records`] unless set.
const DEFAULT_MAX_POLL_RECORDS: usize = 2000;

/// Builds an [`Engine`]. Every setter's default is listed in its doc;
/// [`EngineBuilder::build`] validates, creates the retry and dead-letter
/// topics when missing, and starts the threads.
///
/// ```
/// use std::time::Duration;
/// use kafka_retry::{Engine, MemoryBroker, Outcome, RetryPolicy};
///
/// let broker = MemoryBroker::new();
/// broker.create_topic("orders", 2)?;
/// let engine = Engine::builder(broker.clone())
///     .group_id("billing")
///     .topics(["orders"])
///     .handler(|r| match r.value.as_deref() {
///         Some(b"Create") => Outcome::Done,
///         _ => Outcome::retry("order not created yet"),
///     })
///     .policy(RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(5)))
///     .build()?;
/// engine.shutdown(Duration::from_secs(5))?;
/// # Ok::<(), kafka_retry::Error>(())
/// ```
pub struct EngineBuilder {
    transport: Arc<dyn Transport>,
    group_id: Option<String>,
    topics: Vec<String>,
    handler: Option<Arc<dyn Handler>>,
    workers: usize,
    policy: RetryPolicy,
    retry_topic: Option<String>,
    /// `None`: the default name; `Some(None)`: dead-lettering off.
    dead_letter_topic: Option<Option<String>>,
    relay_group_id: Option<String>,
    group_instance_id: Option<String>,
    rebalance_protocol: crate::transport::RebalanceProtocol,
    missing_topics: MissingTopics,
    topic_partitions: Option<i32>,
    replication_factor: Option<i16>,
    commit_interval: Duration,
    revoke_timeout: Duration,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    offset_reset: OffsetReset,
    isolation_level: IsolationLevel,
    max_parked: usize,
    queue_capacity: usize,
    max_poll_records: usize,
    dead_letter_limit: Option<DeadLetterLimit>,
    dead_letter_router: Option<Router>,
    redelivery: Redelivery,
    key_order: KeyOrder,
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

impl Engine {
    /// Starts building an engine on `transport`: a
    /// [`MemoryBroker`](crate::MemoryBroker), a
    /// [`KafkaTransport`](crate::KafkaTransport), or either behind an `Arc`
    /// or a `Box` (so one transport can serve several engines, and
    /// `Arc<dyn Transport>` works too).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kafka_retry::{transport::Transport, Engine, MemoryBroker};
    /// let shared: Arc<dyn Transport> = Arc::new(MemoryBroker::new());
    /// let a = Engine::builder(shared.clone()).group_id("billing");
    /// let b = Engine::builder(shared).group_id("shipping");
    /// ```
    // `KafkaTransport` exists only with the `kafka` feature.
    #[cfg_attr(not(feature = "kafka"), allow(rustdoc::broken_intra_doc_links))]
    pub fn builder(transport: impl Transport) -> EngineBuilder {
        EngineBuilder::new(Arc::new(transport))
    }
}

/// `Engine::builder(MemoryBroker::new())`, for the setters' examples.
macro_rules! doc_builder {
    () => {
        "let b = kafka_retry::Engine::builder(kafka_retry::MemoryBroker::new())"
    };
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
            relay_group_id: None,
            group_instance_id: None,
            rebalance_protocol: crate::transport::RebalanceProtocol::Cooperative,
            missing_topics: MissingTopics::Fail,
            topic_partitions: None,
            replication_factor: None,
            commit_interval: Duration::from_secs(1),
            revoke_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            offset_reset: OffsetReset::Earliest,
            isolation_level: IsolationLevel::ReadUncommitted,
            max_parked: 100_000,
            queue_capacity: 1024,
            max_poll_records: DEFAULT_MAX_POLL_RECORDS,
            dead_letter_limit: None,
            dead_letter_router: None,
            redelivery: Redelivery::Origin,
            key_order: KeyOrder::Any,
        }
    }

    /// Consumer group id. Required. The retry and dead-letter topics and
    /// the relay's group are named after it unless set.
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .group_id("billing");
    /// ```
    pub fn group_id(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = Some(group_id.into());
        self
    }

    /// Origin topics to consume. Required, at least one.
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .topics(["orders", "payments"]);
    /// ```
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// The record handler, a closure. Required (this or
    /// [`EngineBuilder::handler_impl`]). Called from several worker threads
    /// at once; see [`Handler`].
    ///
    /// ```
    /// use kafka_retry::Outcome;
    #[doc = doc_builder!()]
    ///     .handler(|r| {
    ///         if r.attempts() >= 3 {
    ///             Outcome::reject("tried three times")
    ///         } else if r.value.is_some() {
    ///             Outcome::Done
    ///         } else {
    ///             Outcome::retry("no value yet")
    ///         }
    ///     });
    /// ```
    pub fn handler<F>(mut self, handler: F) -> Self
    where
        F: Fn(&Record) -> Outcome + Send + Sync + 'static,
    {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// The record handler, a type implementing [`Handler`] (for handlers
    /// with state of their own). Required (this or
    /// [`EngineBuilder::handler`]).
    ///
    /// ```
    /// use kafka_retry::{Handler, Outcome, Record};
    /// struct Billing;
    /// impl Handler for Billing {
    ///     fn handle(&self, _r: &Record) -> Outcome {
    ///         Outcome::Done
    ///     }
    /// }
    #[doc = doc_builder!()]
    ///     .handler_impl(Billing);
    /// ```
    pub fn handler_impl(mut self, handler: impl Handler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Worker threads running the handler. Defaults to 4.
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .workers(8);
    /// ```
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Retry policy. Defaults to [`RetryPolicy::default`]: every 5 s for up to 1 h.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kafka_retry::RetryPolicy;
    #[doc = doc_builder!()]
    ///     .policy(RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(600)));
    /// ```
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Retry topic. Defaults to `<group>-retry`.
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .retry_topic("billing.retry");
    /// ```
    pub fn retry_topic(mut self, topic: impl Into<String>) -> Self {
        self.retry_topic = Some(topic.into());
        self
    }

    /// Dead-letter topic. Defaults to `<group>-dlt`; see
    /// [`EngineBuilder::no_dead_letter_topic`] to switch dead-lettering off.
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .dead_letter_topic("billing.dlt");
    /// ```
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(Some(topic.into()));
        self
    }

    /// Switches dead-lettering off: given-up records are dropped with a
    /// warning and counted in [`Stats::dropped`](crate::Stats::dropped).
    /// Defaults to dead-lettering on `<group>-dlt`.
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .no_dead_letter_topic();
    /// ```
    pub fn no_dead_letter_topic(mut self) -> Self {
        self.dead_letter_topic = Some(None);
        self
    }

    /// Where due records go: back to their origin topic
    /// ([`Redelivery::Origin`], the default) or straight to this engine's
    /// workers ([`Redelivery::Private`]); see the README's "Choosing a
    /// redelivery mode".
    pub fn redelivery(mut self, mode: Redelivery) -> Self {
        self.redelivery = mode;
        self
    }

    /// Whether each key's order is kept across retries: with
    /// [`KeyOrder::Kept`], while a record of a key is parked the later
    /// records of that key are parked behind it and handled in origin
    /// order once it is done or dead-lettered. Requires
    /// [`Redelivery::Private`] (`build()` refuses it otherwise: a record
    /// written back to its origin topic would land behind its key's later
    /// records). See the README's "Choosing a redelivery mode".
    /// Defaults to [`KeyOrder::Any`].
    pub fn key_order(mut self, order: KeyOrder) -> Self {
        self.key_order = order;
        self
    }

    /// Routes dead letters by record and reason: `Some(topic)` sends the
    /// record there, `None` to the default dead-letter topic. Called from
    /// the worker and relay threads for every record given up on; it gets
    /// the record as read (for a record expired while parked, the
    /// retry-topic copy: use [`Record::origin_topic`] and friends).
    ///
    /// The engine creates each routed topic the first time it is chosen
    /// (partitions and replication as for the retry topic). A choice that
    /// cannot be used (an empty or illegal name, one of the engine's origin
    /// topics or its retry topic, where the record would be handled again,
    /// a topic that cannot be created, a panicking router) sends the record to the default topic
    /// instead, the problem put first in its `retry.reason` and logged; a
    /// failed creation is tried again after 5 s. With
    /// [`no_dead_letter_topic`](Self::no_dead_letter_topic) such records
    /// are dropped.
    ///
    /// ```
    /// use kafka_retry::{DeadReason, Engine, MemoryBroker, Outcome};
    /// let builder = Engine::builder(MemoryBroker::new())
    ///     .group_id("billing")
    ///     .topics(["orders"])
    ///     .dead_letter_router(|_r, reason| match reason {
    ///         DeadReason::Rejected => Some("billing-rejected".to_string()),
    ///         _ => None, // `billing-dlt`
    ///     })
    ///     .handler(|_r| Outcome::Done);
    /// ```
    pub fn dead_letter_router(
        mut self,
        router: impl Fn(&Record, DeadReason) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.dead_letter_router = Some(Arc::new(router));
        self
    }

    /// Consumer group of the relay, which reads the retry topic: grant it
    /// read access to the retry topic (ACLs) and watch its lag to see how
    /// many records are parked. Defaults to `<group>-relay`.
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .relay_group_id("billing-retry-relay");
    /// ```
    pub fn relay_group_id(mut self, group_id: impl Into<String>) -> Self {
        self.relay_group_id = Some(group_id.into());
        self
    }

    /// Static membership (KIP-345, Kafka's `group.instance.id`) for this
    /// engine's group members, so a restart does not rebalance the group:
    /// stop with [`Engine::shutdown_for_restart`](crate::Engine::shutdown_for_restart)
    /// (no LeaveGroup) and start again with the same id within the session
    /// timeout, and the engine gets its partitions back while the other
    /// members keep theirs. [`Engine::shutdown`](crate::Engine::shutdown)
    /// is final and leaves the group.
    ///
    /// The main consumer uses `id`; the relay, a member of the relay's own
    /// group, uses `<id>-relay` (instance ids are per group, the suffix
    /// only keeps the two apart in broker logs and tools). Give every
    /// engine instance of a group its own id, stable across its restarts
    /// (a pod name, say): a second live member with the same id fences the
    /// first, which then fails with `FENCED_INSTANCE_ID` (82) on every poll
    /// and commit. 1 to 243 characters of `[a-zA-Z0-9._-]`. Default: none
    /// (dynamic membership). Needs JoinGroup v5 (Kafka 2.3+).
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .group_instance_id("billing-0");
    /// ```
    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.group_instance_id = Some(id.into());
        self
    }

    /// Cooperative (the default) or eager rebalances for the engine's
    /// consumers (main and relay); see
    /// [`RebalanceProtocol`](crate::transport::RebalanceProtocol). With
    /// cooperative, a rebalance only revokes the partitions that move: the
    /// engine finishes (or, at the revoke timeout, abandons) and commits
    /// their in-flight records while the others keep being handled. Both
    /// transports implement it (on Kafka: `cooperative-sticky`, with
    /// `range` offered second, so a group with an eager-only member falls
    /// back to eager). Defaults to [`RebalanceProtocol::Cooperative`](crate::transport::RebalanceProtocol::Cooperative).
    ///
    /// ```
    /// use kafka_retry::transport::RebalanceProtocol;
    #[doc = doc_builder!()]
    ///     .rebalance_protocol(RebalanceProtocol::Eager);
    /// ```
    pub fn rebalance_protocol(mut self, protocol: crate::transport::RebalanceProtocol) -> Self {
        self.rebalance_protocol = protocol;
        self
    }

    /// What `build()` does when an origin topic does not exist: fail, or
    /// start and handle its records once it is created. Defaults to
    /// [`MissingTopics::Fail`].
    ///
    /// While an origin topic is missing its partition count is unknown, so
    /// retry and dead-letter topics created by `build()` get
    /// [`EngineBuilder::topic_partitions`] partitions when set, else the
    /// largest count among the origin topics that exist, else 1.
    ///
    /// ```
    /// use kafka_retry::MissingTopics;
    #[doc = doc_builder!()]
    ///     .missing_topics(MissingTopics::Wait)
    ///     .topic_partitions(6);
    /// ```
    pub fn missing_topics(mut self, missing: MissingTopics) -> Self {
        self.missing_topics = missing;
        self
    }

    /// Partitions for retry and dead-letter topics created by `build`.
    /// Defaults to the largest partition count among the origin topics
    /// (1 when none exists yet, see [`EngineBuilder::missing_topics`]).
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .topic_partitions(12);
    /// ```
    pub fn topic_partitions(mut self, partitions: i32) -> Self {
        self.topic_partitions = Some(partitions);
        self
    }

    /// Replication factor of the retry and dead-letter topics created by
    /// `build` (at least 1). Defaults to the broker's
    /// `default.replication.factor`.
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .replication_factor(3);
    /// ```
    pub fn replication_factor(mut self, replication_factor: i16) -> Self {
        self.replication_factor = Some(replication_factor);
        self
    }

    /// How often done offsets are committed. Defaults to 1 s.
    ///
    /// ```
    /// use std::time::Duration;
    #[doc = doc_builder!()]
    ///     .commit_interval(Duration::from_millis(500));
    /// ```
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// On a rebalance, how long in-flight records of revoked partitions may
    /// take to finish before they are abandoned (and re-read by the new
    /// owner). Defaults to 10 s; must be below the rebalance timeout.
    ///
    /// ```
    /// use std::time::Duration;
    #[doc = doc_builder!()]
    ///     .revoke_timeout(Duration::from_secs(5));
    /// ```
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_timeout = timeout;
        self
    }

    /// Group session timeout. Defaults to 10 s.
    ///
    /// ```
    /// use std::time::Duration;
    #[doc = doc_builder!()]
    ///     .session_timeout(Duration::from_secs(6));
    /// ```
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Group rebalance timeout. Defaults to 30 s.
    ///
    /// ```
    /// use std::time::Duration;
    #[doc = doc_builder!()]
    ///     .rebalance_timeout(Duration::from_secs(60));
    /// ```
    pub fn rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.rebalance_timeout = timeout;
        self
    }

    /// Where to start without a committed offset. Defaults to earliest.
    ///
    /// ```
    /// use kafka_retry::transport::OffsetReset;
    #[doc = doc_builder!()]
    ///     .offset_reset(OffsetReset::Latest);
    /// ```
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }

    /// Which records of transactional producers the engine reads (Kafka's
    /// `isolation.level`). Defaults to [`IsolationLevel::ReadUncommitted`],
    /// as Kafka's; with [`IsolationLevel::ReadCommitted`] the handler never
    /// sees records of aborted transactions, nor of open ones on a broker
    /// that holds them back as Kafka does (Tansu does not: see the
    /// README's Kafka section). Applies to the
    /// relay's consumer too (the retry topic holds no transactions, so it
    /// changes nothing there). On Kafka,
    /// `KafkaConfig::isolation_level` (the `isolation.level` property)
    /// can turn it on for every consumer of a transport; the memory broker
    /// has no transactions, so both levels read the same records there.
    ///
    /// The engine's own writes (retry and dead-letter topics, records sent
    /// back to their origin topic) are not transactional.
    ///
    /// ```
    /// use kafka_retry::transport::IsolationLevel;
    #[doc = doc_builder!()]
    ///     .isolation_level(IsolationLevel::ReadCommitted);
    /// ```
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = level;
        self
    }

    /// Bounds the relay's memory for parked records. On a transport with a
    /// [`Reader`](crate::transport::Reader) (the memory broker and Kafka)
    /// the relay keeps up to `max_parked` parked records whole, the ones
    /// due soonest (about 800 B each with a 100-byte value, so about 80 MB
    /// at the default), and for the rest a 32-byte index entry each,
    /// reading the record again from the retry topic shortly before it is
    /// due: up to 100 × `max_parked` entries (10 M, about 500 MB, by
    /// default); past that the latest-due entries are evicted and read
    /// again later, so nothing pauses and a record due soon never waits
    /// behind records due later (`Stats::parked_unindexed` counts the
    /// evicted ones). A lower `max_parked` saves memory at the price of
    /// that re-read, which on Kafka bounds how fast a large burst falling
    /// due at once is relayed. On a transport without a reader every
    /// parked record is kept whole, and past `max_parked` the relay pauses
    /// its retry partitions until the heap drains to 3/4 of it. Defaults
    /// to 100,000.
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .max_parked(10_000);
    /// ```
    pub fn max_parked(mut self, max: usize) -> Self {
        self.max_parked = max;
        self
    }

    /// Records queued per worker before fetching pauses. Records travel to
    /// a worker in batches of up to 256, and the queue holds
    /// `ceil(records / 256)` batches, so when records trickle in one at a
    /// time it fills with fewer records than this. Defaults to 1024.
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .queue_capacity(4096);
    /// ```
    pub fn queue_capacity(mut self, records: usize) -> Self {
        self.queue_capacity = records;
        self
    }

    /// Most records per poll of the engine's consumers (the origin topics'
    /// and the relay's). Defaults to 2000: the engine's poll loop only
    /// hands records to the handler pool, so it is not the Java client's
    /// 500 (a caller's processing between polls) that applies. Each poll
    /// hands each worker its share at once; with 500, every worker got
    /// half a job batch per poll and woke up twice as often (measured on
    /// Tansu: 2000 gave about 15% more records/s at 0% retries and 10%
    /// more at 10%, against 500; 5000 was no better).
    ///
    /// ```
    #[doc = doc_builder!()]
    ///     .max_poll_records(1000);
    /// ```
    pub fn max_poll_records(mut self, records: usize) -> Self {
        self.max_poll_records = records;
        self
    }

    /// A dead-letter circuit breaker: more than `limit.limit` records
    /// dead-lettered within its window pause the engine; see
    /// [`DeadLetterLimit`]. Defaults to none (no limit).
    ///
    /// ```
    /// use std::time::Duration;
    /// use kafka_retry::DeadLetterLimit;
    #[doc = doc_builder!()]
    ///     .dead_letter_limit(DeadLetterLimit::new(100, Duration::from_secs(60)));
    /// ```
    pub fn dead_letter_limit(mut self, limit: DeadLetterLimit) -> Self {
        self.dead_letter_limit = Some(limit);
        self
    }
}

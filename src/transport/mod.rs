//! The broker abstraction the engine runs on, for those who implement a
//! transport or drive one directly.
//!
//! The engine needs three things from a broker: a group consumer, an
//! acknowledged producer and topic admin. The traits model Kafka's semantics
//! (consumer groups, eager rebalances, committed offsets, partitions), not a
//! queue's, so the in-process [`MemoryBroker`](crate::MemoryBroker) and the
//! [`KafkaTransport`](crate::KafkaTransport) behave the same way under the
//! engine. An application needs none of this: it hands a transport to
//! [`Engine::builder`](crate::Engine::builder) and is done.
//!
//! # Stability
//!
//! [`Transport`], [`Consumer`] and [`Producer`] can be implemented outside
//! this crate, so adding a required method to them is a breaking change and
//! happens only in a new major (or, before 1.0, minor) version; new methods
//! with a default body may come in any release. The crate root holds what
//! an application uses and changes less often.
//!
//! ```
//! use kafka_retry::transport::{ConsumerConfig, ConsumerEvent, Transport};
//! use kafka_retry::{MemoryBroker, OutRecord};
//! use std::time::Duration;
//!
//! let broker = MemoryBroker::new();
//! broker.create_topic("orders", 1)?;
//! broker.producer()?.send(OutRecord::new("orders").value("hi"))?;
//! let mut consumer = broker.consumer(ConsumerConfig::new("peek", ["orders"]))?;
//! let mut seen = 0;
//! while seen == 0 {
//!     if let ConsumerEvent::Records(r) = consumer.poll(Duration::from_millis(100))? {
//!         seen += r.len();
//!     }
//! }
//! # Ok::<(), kafka_retry::Error>(())
//! ```

// The docs above link `KafkaTransport`, which needs the `kafka` feature.
#![cfg_attr(not(feature = "kafka"), allow(rustdoc::broken_intra_doc_links))]

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::record::{Delivered, OutRecord, Record, TopicPartition};

pub(crate) mod claims;
#[cfg(feature = "kafka")]
pub(crate) mod kafka;
pub(crate) mod memory;
mod reader;
pub(crate) mod sticky;
mod wakeup;

pub use crate::partitioner::{murmur2, partition_for_key};
pub use crate::pending::{Completer, Pending};
pub use claims::Claims;
pub use reader::{PartitionOffsets, Reader};
pub use wakeup::Wakeup;

/// Where a consumer starts in a partition that has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// The oldest record still in the partition.
    #[default]
    Earliest,
    /// Only records written after the consumer joined.
    Latest,
}

/// Which records a consumer reads from partitions written by transactional
/// producers (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    /// Every record, including those of open and aborted transactions
    /// (Kafka's default).
    #[default]
    ReadUncommitted,
    /// Only records below the last stable offset, without those of aborted
    /// transactions.
    ReadCommitted,
}

/// How a group rebalances (the consumer protocol's assignment strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebalanceProtocol {
    /// Every rebalance revokes every partition of every member first
    /// (`range`, Kafka's classic default). For groups that must stay
    /// eager, e.g. while members of an older release that only speak
    /// eager are still running (a mixed group falls back to eager by
    /// itself, but revokes everything once when it does).
    Eager,
    /// Incremental cooperative rebalancing (KIP-429, `cooperative-sticky`):
    /// members keep their partitions during a rebalance and revoke only
    /// those that move, which their new owner gets in a follow-up
    /// rebalance. Used when every member of the group offers it, else the
    /// group falls back to eager. Both transports implement it: the Kafka
    /// one offers `cooperative-sticky` first and `range` second in
    /// JoinGroup, and the broker picks what every member offers. The
    /// default, as `cooperative-sticky` is for the Java client's
    /// `partition.assignment.strategy` in recent releases (a member that
    /// stays makes no pause when a member joins or leaves). It has been run
    /// against a fake coordinator and Tansu 0.6; choose
    /// [`RebalanceProtocol::Eager`] to keep the classic behaviour.
    #[default]
    Cooperative,
}

/// What a group consumer needs to join its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Consumer group id.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Start position for partitions without a committed offset.
    pub offset_reset: OffsetReset,
    /// The member is evicted when the broker hears nothing for this long.
    /// Transports heartbeat in the background, so a slow caller does not
    /// lose its membership.
    pub session_timeout: Duration,
    /// How long the group waits for members to rejoin during a rebalance,
    /// i.e. how long the caller has between [`ConsumerEvent::Revoked`] and
    /// its next [`Consumer::poll`]. Defaults to 30 s, as
    /// [`EngineBuilder::rebalance_timeout`](crate::EngineBuilder::rebalance_timeout).
    pub rebalance_timeout: Duration,
    /// Most records one `poll` returns.
    pub max_poll_records: usize,
    /// Client id of this group member (brokers build member ids from it and
    /// show it in group listings). `None`: the transport's own, i.e.
    /// [`KafkaConfig::client_id`](crate::KafkaConfig::client_id) on Kafka and
    /// `"kafka-retry"` on the memory broker.
    pub client_id: Option<String>,
    /// Static membership (KIP-345, Kafka's `group.instance.id`): a member
    /// that comes back with the same id within the session timeout gets its
    /// partitions back without a rebalance (it must have stopped with
    /// [`Consumer::close_for_restart`]; [`Consumer::close`] leaves). Until
    /// then its partitions are read by nobody. Two live members with one id
    /// fence each other: the older one gets `FENCED_INSTANCE_ID` (82) from
    /// then on, fatal for it, as in Java. 1 to 249 characters of
    /// `[a-zA-Z0-9._-]`; unique per group. `None` (the default): dynamic
    /// membership.
    pub group_instance_id: Option<String>,
    /// Which records of transactional producers are read. Default
    /// [`IsolationLevel::ReadUncommitted`], as Kafka's. The memory broker
    /// has no transactions: there both levels read every record.
    pub isolation_level: IsolationLevel,
    /// Cooperative (the default) or eager rebalances; see
    /// [`RebalanceProtocol`].
    pub rebalance_protocol: RebalanceProtocol,
    /// Joint assignment with another group: the partitions this member
    /// asks for, kept up to date by its owner through the shared handle
    /// (an engine with [`KeyOrder::Kept`](crate::KeyOrder::Kept) claims
    /// for its relay the retry partitions of the origin partitions it
    /// owns). The member publishes its claim to the group and rejoins when
    /// it changes; the group's assignor then gives each claimed partition
    /// to its claimant (a claim of a newer generation first, then the
    /// lower member id), spreads the unclaimed ones, and under
    /// [`RebalanceProtocol::Cooperative`] has a partition another member
    /// still owns revoked first. Members without claims (older releases)
    /// get unclaimed partitions only; in a group where nobody claims, the
    /// usual assignor runs. On Kafka a member whose claims were never
    /// [set](Claims::set) waits for the first claim, up to
    /// `rebalance_timeout`, before it first joins (so its first assignment
    /// already fits). The memory broker and Kafka both implement it.
    /// `None` (the default): no claims.
    pub claims: Option<Claims>,
    /// Lets another thread stop a poll waiting for a group join (see
    /// [`Wakeup`]); the engine sets one and wakes it when it shuts down.
    /// `None` (the default): a poll waits until the join completes or
    /// fails.
    pub wakeup: Option<Wakeup>,
}

impl ConsumerConfig {
    /// A config for `group_id` reading `topics`, with defaults for the rest:
    /// earliest reset, 10 s session timeout, 30 s rebalance timeout (the
    /// engine's default too), 500 records per poll, the transport's client
    /// id, cooperative rebalances.
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = kafka_retry::transport::ConsumerConfig::new("billing", ["orders"]);
    /// assert_eq!(c.topics, vec!["orders".to_string()]);
    /// assert_eq!(c.rebalance_timeout, Duration::from_secs(30));
    /// assert_eq!(c.client_id, None);
    /// ```
    pub fn new<I, S>(group_id: impl Into<String>, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ConsumerConfig {
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            offset_reset: OffsetReset::Earliest,
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            max_poll_records: 500,
            client_id: None,
            group_instance_id: None,
            isolation_level: IsolationLevel::ReadUncommitted,
            rebalance_protocol: RebalanceProtocol::Cooperative,
            claims: None,
            wakeup: None,
        }
    }
}

/// Kafka's rule for `group.instance.id` (as for topic names): 1 to 249
/// characters of `[a-zA-Z0-9._-]`.
pub(crate) fn validate_instance_id(id: &str) -> Result<()> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > 249 || !id.chars().all(legal) {
        return Err(crate::Error::config(
            "group_instance_id",
            format!("{id:?}: need 1 to 249 characters of [a-zA-Z0-9._-]"),
        ));
    }
    Ok(())
}

/// What one [`Consumer::poll`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerEvent {
    /// Records from assigned, unpaused partitions, in offset order per
    /// partition. Empty when the poll timed out.
    Records(Vec<Record>),
    /// These partitions are now this member's, in addition to those it
    /// kept (eager: it kept none, so this is its whole assignment;
    /// cooperative: only the new ones, possibly none). Reading starts at
    /// the committed offset, or per [`OffsetReset`] when there is none.
    Assigned(Vec<TopicPartition>),
    /// These partitions will be released. Eager protocol: a rebalance
    /// started and every owned partition is revoked, and the next polls
    /// rejoin and return `Assigned` with the new assignment. Cooperative
    /// protocol ([`RebalanceProtocol::Cooperative`]): only the partitions
    /// that move to another member; the others stay owned and keep
    /// delivering records, and an `Assigned` with the partitions *added*
    /// follows (possibly none). Until the next `poll` the revoked
    /// partitions are still owned: finish or abandon their work and commit
    /// their offsets, then poll again, within the rebalance timeout.
    Revoked(Vec<TopicPartition>),
    /// These partitions were taken away without a clean revoke (the session
    /// expired, or the member was fenced). Their offsets can no longer be
    /// committed; abandon their in-flight work, another member re-reads it.
    Lost(Vec<TopicPartition>),
}

/// A member of a consumer group.
///
/// Lifecycle: created subscribed by [`Transport::consumer`]; the first
/// polls join the group and return [`ConsumerEvent::Assigned`]. Dropping the
/// consumer leaves the group (like [`Consumer::close`], errors ignored).
pub trait Consumer: Send + Debug {
    /// Waits up to `timeout` for records or a group event.
    fn poll(&mut self, timeout: Duration) -> Result<ConsumerEvent>;

    /// Stops returning records of these partitions until [`Consumer::resume`].
    /// No record is skipped: resuming continues where the last returned
    /// record left off. Pauses end when a partition is revoked.
    fn pause(&mut self, partitions: &[TopicPartition]);

    /// Resumes paused partitions.
    fn resume(&mut self, partitions: &[TopicPartition]);

    /// Synchronously commits, for each partition, the offset of the next
    /// record to read (last processed + 1). Fails if this member no longer
    /// owns the partition's generation.
    fn commit(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<()>;

    /// Partitions currently assigned to this member.
    fn assignment(&self) -> Vec<TopicPartition>;

    /// Leaves the group (a final close: LeaveGroup on Kafka, also for a
    /// static member). Later calls fail with [`Error::Closed`](crate::Error::Closed).
    fn close(&mut self) -> Result<()>;

    /// Closes for a restart: a static member (one with
    /// [`ConsumerConfig::group_instance_id`]) stops *without* leaving, so
    /// the group keeps its partitions for it, unassigned, until it comes
    /// back with the same instance id or its session times out; a dynamic
    /// member leaves as on [`Consumer::close`]. The default is `close`, for
    /// transports without static membership.
    fn close_for_restart(&mut self) -> Result<()> {
        self.close()
    }

    /// For lag gauges: per assigned partition, the end of its log as this
    /// consumer last saw it (the high watermark from its latest fetch
    /// reply; with `read_committed`, the last stable offset) and the
    /// offset of the next record it will fetch. Costs no request. The
    /// default (a transport that does not know) is empty.
    fn progress(&self) -> Vec<PartitionProgress> {
        Vec::new()
    }

    /// The group generation this member is in, once it has joined (for a
    /// [`Claims`] decided from this member's assignment: a claim of a
    /// newer generation wins a tie). The default (a transport that does
    /// not say) is `None`.
    fn generation(&self) -> Option<i32> {
        None
    }
}

/// Where a [`Consumer`] stands in one assigned partition
/// ([`Consumer::progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The partition.
    pub partition: TopicPartition,
    /// Offset of the next record to fetch, once known (after the committed
    /// offset or the reset policy set it).
    pub position: Option<i64>,
    /// Offset the next record written will get, as last seen; `None`
    /// before the first fetch reply.
    pub log_end: Option<i64>,
}

/// An acknowledged producer, shared by every thread of an engine.
pub trait Producer: Send + Sync + Debug {
    /// Writes one record and returns once the broker holds it (acks=all on
    /// Kafka). An `Err` means the record may or may not have been written.
    fn send(&self, record: OutRecord) -> Result<Delivered>;

    /// Queues one record and returns at once; the [`Pending`]
    /// says when the broker acknowledged it (or the write failed). Lets one
    /// thread keep many writes in flight. Transports that cannot queue
    /// answer synchronously, which is the default.
    fn send_async(&self, record: OutRecord) -> Pending {
        Pending::ready(self.send(record))
    }

    /// Writes several records, batched where the transport can, and returns
    /// once every one is acknowledged or failed; results are in input order.
    fn send_batch(&self, records: Vec<OutRecord>) -> Vec<Result<Delivered>> {
        records.into_iter().map(|r| self.send(r)).collect()
    }
}

/// A broker: consumers, producers and topic admin.
pub trait Transport: Send + Sync + Debug + 'static {
    /// A new group member subscribed to `config.topics`.
    fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>>;

    /// A producer. Cheap to share.
    fn producer(&self) -> Result<Arc<dyn Producer>>;

    /// The producer of an engine's own writes (retry copies, relayed
    /// records, dead letters), which a transport may encode differently
    /// from the user's: the Kafka transport compresses them by
    /// [`KafkaConfig::engine_compression`](crate::KafkaConfig::engine_compression)
    /// (lz4 by default). Defaults to [`Transport::producer`], which is also
    /// what a wrapping transport that does not forward this gets.
    fn engine_producer(&self) -> Result<Arc<dyn Producer>> {
        self.producer()
    }

    /// Creates a topic with `partitions` (at least 1) partitions. A topic
    /// that already exists is success. `replication` is the replication
    /// factor; `None` leaves it to the broker (`default.replication.factor`
    /// on Kafka).
    fn create_topic(&self, topic: &str, partitions: i32, replication: Option<i16>) -> Result<()>;

    /// Number of partitions of `topic`, `None` if it does not exist.
    fn partition_count(&self, topic: &str) -> Result<Option<i32>>;

    /// A group-less [`Reader`]: offsets, records and committed offsets
    /// without joining a group. The default fails with
    /// [`Error::Protocol`](crate::Error::Protocol) saying this transport
    /// has none (a default body, so transports written outside this crate
    /// keep compiling); the memory broker and Kafka have one.
    fn reader(&self) -> Result<Box<dyn Reader>> {
        Err(crate::Error::Protocol(format!(
            "reading without a consumer group is not supported by this transport ({})",
            std::any::type_name::<Self>()
        )))
    }

    /// How the broker cleans up `topic`'s log, for the engine's check of
    /// its retry topic at build: `Ok(None)` when this transport or broker
    /// does not say (the default, and the memory broker, which never
    /// deletes a record).
    fn retention(&self, topic: &str) -> Result<Option<Retention>> {
        let _ = topic;
        Ok(None)
    }
}

/// A topic's log cleanup settings ([`Transport::retention`]): what can
/// remove a parked record from the retry topic before it is due.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// `retention.ms`: records older than this may be deleted; `None` when
    /// unlimited (-1) or not reported.
    pub time: Option<Duration>,
    /// `retention.bytes`: a partition larger than this loses its oldest
    /// records; `None` when unlimited (-1) or not reported.
    pub bytes: Option<u64>,
    /// `cleanup.policy` includes `compact`: only the latest record of each
    /// key is kept.
    pub compacted: bool,
}

impl Retention {
    /// Settings with these values (for transports written outside this
    /// crate; the struct is non-exhaustive).
    pub fn new(time: Option<Duration>, bytes: Option<u64>, compacted: bool) -> Self {
        Retention {
            time,
            bytes,
            compacted,
        }
    }
}

/// Forwards every `Transport` method through a smart pointer.
macro_rules! transport_through {
    ($(#[$doc:meta])* $ptr:ident) => {
        $(#[$doc])*
        impl<T: Transport + ?Sized> Transport for $ptr<T> {
            fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
                (**self).consumer(config)
            }
            fn producer(&self) -> Result<Arc<dyn Producer>> {
                (**self).producer()
            }
            fn engine_producer(&self) -> Result<Arc<dyn Producer>> {
                (**self).engine_producer()
            }
            fn create_topic(&self, topic: &str, partitions: i32, rf: Option<i16>) -> Result<()> {
                (**self).create_topic(topic, partitions, rf)
            }
            fn partition_count(&self, topic: &str) -> Result<Option<i32>> {
                (**self).partition_count(topic)
            }
            fn reader(&self) -> Result<Box<dyn Reader>> {
                (**self).reader()
            }
            fn retention(&self, topic: &str) -> Result<Option<Retention>> {
                (**self).retention(topic)
            }
        }
    };
}

transport_through!(
    /// A shared transport is a transport: `Arc<MemoryBroker>`,
    /// `Arc<dyn Transport>`.
    Arc
);
transport_through!(
    /// A boxed transport is a transport: `Box<dyn Transport>`.
    Box
);

//! A group-less reader: partitions, offsets and records of a topic, and a
//! group's committed offsets, without joining a group or committing
//! anything. For tools that inspect topics (the `kafka-retry` command line,
//! lag gauges), not for consuming: nothing it does is visible to a group.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use crate::error::Result;
use crate::record::{Record, TopicPartition};

/// The offsets bounding one partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// Partition index.
    pub partition: i32,
    /// Offset of the oldest record still in the log (Kafka's log start
    /// offset; 0 on the memory broker, which keeps everything).
    pub earliest: i64,
    /// Offset the next record will get (the high watermark).
    pub latest: i64,
}

impl PartitionOffsets {
    /// Records between `earliest` and `latest` (0 when the log is empty).
    pub fn len(&self) -> i64 {
        (self.latest - self.earliest).max(0)
    }

    /// No record in the log.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads topics without a consumer group. Made by
/// [`Transport::reader`](crate::transport::Transport::reader).
///
/// ```
/// use std::time::Duration;
/// use kafka_retry::transport::{Reader, Transport};
/// use kafka_retry::{MemoryBroker, OutRecord, TopicPartition};
///
/// let broker = MemoryBroker::new();
/// broker.create_topic("orders", 2)?;
/// broker.produce(OutRecord::new("orders").partition(1).value("a"))?;
/// let mut reader = broker.reader()?;
/// assert_eq!(reader.partitions("orders")?, Some(2));
/// let offsets = reader.offsets("orders")?;
/// assert_eq!((offsets[1].earliest, offsets[1].latest), (0, 1));
/// let records = reader.read(&TopicPartition::new("orders", 1), 0, 10, Duration::ZERO)?;
/// assert_eq!(records[0].value.as_deref(), Some(&b"a"[..]));
/// assert!(reader.committed("billing", "orders")?.is_empty());
/// # Ok::<(), kafka_retry::Error>(())
/// ```
pub trait Reader: Send + Debug {
    /// Number of partitions of `topic`, `None` if it does not exist.
    fn partitions(&mut self, topic: &str) -> Result<Option<i32>>;

    /// Earliest and latest offsets of every partition of `topic`, by
    /// partition index. [`Error::UnknownTopic`](crate::Error::UnknownTopic)
    /// if it does not exist.
    fn offsets(&mut self, topic: &str) -> Result<Vec<PartitionOffsets>>;

    /// Up to `max` records of `tp` from `offset` on, in offset order,
    /// waiting up to `timeout` when there is none yet (an empty vector
    /// then). Records may start past `offset`: a compacted topic has gaps,
    /// and an offset below the log start reads from the log start.
    fn read(
        &mut self,
        tp: &TopicPartition,
        offset: i64,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Record>>;

    /// The log end (high watermark) of `tp` as the broker last reported it
    /// to a [`read`](Reader::read), if this reader knows it; `None` (the
    /// default) otherwise. A read that finds nothing at an offset at or
    /// past it read past the end of the log.
    fn log_end(&self, tp: &TopicPartition) -> Option<i64> {
        let _ = tp;
        None
    }

    /// The offsets `group` committed for the partitions of `topic`: the
    /// offset of the next record the group will read, by partition.
    /// Partitions without a committed offset are left out (so a group that
    /// never committed gives an empty map). Reads only (OffsetFetch on
    /// Kafka): the group is neither joined nor disturbed.
    fn committed(&mut self, group: &str, topic: &str) -> Result<BTreeMap<i32, i64>>;
}

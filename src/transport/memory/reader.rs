//! The memory broker's group-less [`Reader`]: straight reads of the logs
//! and of the groups' committed offsets.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lock, Inner};
use crate::error::{Error, Result};
use crate::record::{Record, Topic, TopicPartition};
use crate::transport::{PartitionOffsets, Reader};

/// A [`Reader`] over a [`MemoryBroker`](crate::MemoryBroker).
pub(super) struct MemoryReader {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReader").finish_non_exhaustive()
    }
}

/// How often `read` looks again while waiting for a record. Reads are for
/// tools, not the hot path, so a short sleep beats registering as a waiter
/// (which is tied to group members).
const READ_POLL: Duration = Duration::from_millis(5);

impl Reader for MemoryReader {
    fn partitions(&mut self, topic: &str) -> Result<Option<i32>> {
        Ok(self.inner.partition_count(topic))
    }

    fn offsets(&mut self, topic: &str) -> Result<Vec<PartitionOffsets>> {
        let t = self.inner.topic(topic)?;
        let parts = super::read(&t.partitions);
        Ok(parts
            .iter()
            .enumerate()
            .map(|(i, p)| PartitionOffsets {
                partition: i as i32,
                // No retention: the log always starts at 0.
                earliest: 0,
                latest: p.end.load(Ordering::SeqCst),
            })
            .collect())
    }

    fn read(
        &mut self,
        tp: &TopicPartition,
        offset: i64,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Record>> {
        let part = self.inner.topic(&tp.topic)?.partition(tp.partition)?;
        let from = offset.max(0);
        let deadline = Instant::now() + timeout;
        loop {
            if part.end.load(Ordering::SeqCst) > from || max == 0 {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            std::thread::sleep(READ_POLL.min(deadline - now));
        }
        let log = lock(&part.log);
        let start = usize::try_from(from)
            .map_err(|_| Error::Protocol(format!("offset {from} is out of range")))?;
        let topic = Topic::from(&tp.topic);
        Ok(log
            .range(start, start.saturating_add(max))
            .enumerate()
            .map(|(i, s)| s.to_record(&topic, tp.partition, (start + i) as i64))
            .collect())
    }

    fn log_end(&self, tp: &TopicPartition) -> Option<i64> {
        let part = self
            .inner
            .topic(&tp.topic)
            .ok()?
            .partition(tp.partition)
            .ok()?;
        Some(part.end.load(Ordering::SeqCst))
    }

    fn committed(&mut self, group: &str, topic: &str) -> Result<BTreeMap<i32, i64>> {
        // As on Kafka: a topic that does not exist is an error.
        self.inner.topic(topic)?;
        let Some(g) = lock(&self.inner.groups).get(group).cloned() else {
            return Ok(BTreeMap::new());
        };
        let st = lock(&g.state);
        Ok(st
            .committed
            .iter()
            .filter(|(tp, _)| tp.topic == topic)
            .map(|(tp, &o)| (tp.partition, o))
            .collect())
    }
}

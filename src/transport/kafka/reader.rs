//! The Kafka transport's group-less [`Reader`]: Metadata for partitions,
//! ListOffsets for the log bounds, Fetch for records and OffsetFetch for a
//! group's committed offsets. It reuses the group consumer's fetch side
//! ([`Fetcher`]: positions, leader connections, decoding, out-of-range
//! resets) and its OffsetFetch ([`fetch_committed`]), never joining a group.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::Client;
use super::fetch::Fetcher;
use super::group::fetch_committed;
use super::retry::{classify, Retry};
use crate::error::{Error, Result};
use crate::record::{Record, TopicPartition};
// The reader reads what is in the log (dead letters and parked records are
// not transactional); `KafkaConfig::isolation_level` still applies as a floor.
use crate::transport::{IsolationLevel, OffsetReset, PartitionOffsets, Reader};

/// A [`Reader`] over a [`KafkaTransport`](crate::KafkaTransport)'s client.
pub(crate) struct KafkaReader {
    client: Arc<Client>,
    /// Fetches the partition being read (every other partition read so
    /// far is assigned but paused, keeping its buffer); an offset below
    /// the log start resets to the earliest offset (see [`Reader::read`]).
    fetcher: Fetcher,
    /// Per partition read so far, the offset after the last record
    /// returned: a read that continues there keeps the fetcher's buffer
    /// (one Fetch reply can hold many more than `max` records). Per
    /// partition because the relay's re-reads go round the retry
    /// partitions: with one position for all, every read re-fetched and
    /// re-decoded a whole reply to use a few hundred of its records (on
    /// Tansu, 100,000 re-reads cost ~45 µs of client and broker CPU each).
    at: HashMap<TopicPartition, i64>,
    /// Partition counts seen, and when: the relay re-reads parked records
    /// by offset, each read at a new position, and a Metadata round trip
    /// before every one of them doubled its cost.
    counts: HashMap<String, (i32, Instant)>,
    /// The partition read last: the only one not paused (a partition the
    /// fetcher is newly assigned starts unpaused, and becomes this one).
    active: Option<TopicPartition>,
}

/// How long a partition count is trusted for the existence check of a read.
const COUNT_TTL: Duration = Duration::from_secs(30);

impl std::fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaReader")
            .field("client", &self.client)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl KafkaReader {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        KafkaReader {
            fetcher: Fetcher::new(
                Arc::clone(&client),
                OffsetReset::Earliest,
                IsolationLevel::ReadUncommitted,
            ),
            client,
            at: HashMap::new(),
            counts: HashMap::new(),
            active: None,
        }
    }

    fn require(&self, topic: &str) -> Result<i32> {
        self.client
            .partition_count(topic)?
            .ok_or_else(|| Error::UnknownTopic(topic.to_string()))
    }

    /// The offsets ListOffsets gives for every partition of `topic` at
    /// `reset` (earliest or latest), by partition index. Retried per the
    /// client's settings: a partition can lack a leader for a moment.
    fn list_offsets(&self, topic: &str, n: i32, reset: OffsetReset) -> Result<Vec<i64>> {
        let tps: Vec<TopicPartition> = (0..n).map(|p| TopicPartition::new(topic, p)).collect();
        let mut fetcher = Fetcher::new(
            Arc::clone(&self.client),
            reset,
            IsolationLevel::ReadUncommitted,
        );
        fetcher.assign(&tps);
        Retry::new(self.client.config()).run(
            "ListOffsets",
            &mut fetcher,
            |f| {
                // Partitions answered by an earlier attempt keep their offset.
                let missing = f.missing_positions();
                f.reset_positions(&missing)?;
                tps.iter()
                    .map(|tp| {
                        f.position(tp).ok_or_else(|| {
                            Error::Protocol(format!("ListOffsets {tp}: no offset in the reply"))
                        })
                    })
                    .collect()
            },
            |_, e| classify(e),
        )
    }
}

impl Reader for KafkaReader {
    fn partitions(&mut self, topic: &str) -> Result<Option<i32>> {
        self.client.partition_count(topic)
    }

    fn offsets(&mut self, topic: &str) -> Result<Vec<PartitionOffsets>> {
        let n = self.require(topic)?;
        let earliest = self.list_offsets(topic, n, OffsetReset::Earliest)?;
        let latest = self.list_offsets(topic, n, OffsetReset::Latest)?;
        Ok(earliest
            .into_iter()
            .zip(latest)
            .enumerate()
            .map(|(p, (earliest, latest))| PartitionOffsets {
                partition: p as i32,
                earliest,
                latest,
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
        if self.at.get(tp) != Some(&offset) {
            // A fetch round swallows errors (it is a consumer's retry loop),
            // so a partition that does not exist must be caught here, or the
            // read would only time out.
            let n = match self.counts.get(tp.topic.as_str()) {
                Some(&(n, at)) if at.elapsed() < COUNT_TTL && (0..n).contains(&tp.partition) => n,
                _ => {
                    let n = self.require(&tp.topic)?;
                    self.counts.insert(tp.topic.clone(), (n, Instant::now()));
                    n
                }
            };
            if !(0..n).contains(&tp.partition) {
                return Err(Error::config(
                    "partition",
                    format!(
                        "topic `{}` has {n} partitions, {tp} does not exist",
                        tp.topic
                    ),
                ));
            }
            if !self.at.contains_key(tp) {
                // Bounded by the partitions of the topics read (the relay:
                // its retry partitions).
                let mut known: Vec<TopicPartition> = self.at.keys().cloned().collect();
                known.push(tp.clone());
                self.fetcher.reassign(&known);
            }
            self.fetcher.set_position(tp, offset.max(0));
            self.at.insert(tp.clone(), offset);
        }
        // Only `tp` is fetched and taken from; the others keep what they
        // have buffered for their next read. Every other partition was
        // paused when a read last left it, so only that one changes.
        if self.active.as_ref() != Some(tp) {
            if let Some(last) = self.active.take() {
                self.fetcher.pause(std::slice::from_ref(&last), true);
            }
            self.fetcher.pause(std::slice::from_ref(tp), false);
            self.active = Some(tp.clone());
        }
        let deadline = Instant::now() + timeout;
        // At least one fetch round, even at a zero timeout: the records may
        // be there already.
        let mut rounds = 0;
        loop {
            let records = self.fetcher.take(max);
            if let Some(last) = records.last() {
                self.at.insert(tp.clone(), last.offset + 1);
                return Ok(records);
            }
            if let Some(e) = self.fetcher.take_auth_failure() {
                return Err(e);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if max == 0 || (rounds > 0 && left.is_zero()) {
                return Ok(Vec::new());
            }
            self.fetcher.fetch_round(left);
            rounds += 1;
        }
    }

    fn log_end(&self, tp: &TopicPartition) -> Option<i64> {
        self.fetcher.log_end(tp)
    }

    fn committed(&mut self, group: &str, topic: &str) -> Result<BTreeMap<i32, i64>> {
        let n = self.require(topic)?;
        let tps: Vec<TopicPartition> = (0..n).map(|p| TopicPartition::new(topic, p)).collect();
        Ok(fetch_committed(&self.client, group, &tps)?
            .into_iter()
            .filter(|(tp, off)| tp.topic == topic && *off >= 0)
            .map(|(tp, off)| (tp.partition, off))
            .collect())
    }
}

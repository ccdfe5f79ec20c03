//! The Fetch request.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::record::TopicPartition;

/// A Fetch of `list` (partition, offset), the broker waiting `wait` at
/// most. Grouped by topic (one entry per topic), rotating by `turn` the
/// topic order and each topic's partition order: the broker fills
/// `max_bytes` in request order, so a fixed order could starve the last
/// partitions.
pub(super) fn fetch_request(
    cfg: &crate::KafkaConfig,
    read_committed: bool,
    turn: usize,
    list: &[(TopicPartition, i64)],
    wait: Duration,
) -> FetchRequest {
    let mut topics: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for (tp, pos) in list {
        topics
            .entry(&tp.topic)
            .or_default()
            .push((tp.partition, *pos));
    }
    let mut fetch_topics: Vec<FetchTopic> = topics
        .into_iter()
        .map(|(name, mut parts)| {
            let n = parts.len();
            parts.rotate_left(turn % n);
            let mut t = FetchTopic::default();
            t.topic = TopicName(StrBytes::from_string(name.to_string()));
            t.partitions = parts
                .into_iter()
                .map(|(partition, pos)| {
                    let mut p = FetchPartition::default();
                    p.partition = partition;
                    p.fetch_offset = pos;
                    p.partition_max_bytes = cfg.partition_fetch_max_bytes;
                    p
                })
                .collect();
            t
        })
        .collect();
    let n = fetch_topics.len().max(1);
    fetch_topics.rotate_left(turn % n);

    let mut req = FetchRequest::default();
    // No fetch session (session 0, epoch -1): every request is complete.
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    req.min_bytes = cfg.fetch_min_bytes;
    req.max_bytes = cfg.fetch_max_bytes;
    // Fetch v4+ (our minimum) carries the isolation level.
    req.isolation_level = i8::from(read_committed);
    req.session_id = 0;
    req.session_epoch = -1;
    req.topics = fetch_topics;
    req
}

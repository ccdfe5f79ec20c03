//! Committed offsets: OffsetFetch for the start positions of new
//! partitions (ListOffsets per reset policy when there is none), and
//! OffsetCommit at the member's generation.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::OffsetFetchResponse;
use kafka_protocol::protocol::StrBytes;

use super::super::client::{topic_name, Client};
use super::super::errors::check;
use super::super::retry::{Action, Retry};
use super::coordinator::{group_id, Coordinator};
use super::membership::{Generation, GenerationEnd};
use super::GroupConsumer;
use crate::error::{Error, KafkaCode, Result};
use crate::record::TopicPartition;

impl GroupConsumer {
    /// Gives every assigned partition without a position its committed
    /// offset (OffsetFetch), or resets it per policy (ListOffsets).
    pub(super) fn init_positions(&mut self) -> Result<()> {
        let missing = self.fetcher.missing_positions();
        if missing.is_empty() {
            return Ok(());
        }
        let committed = self.offset_fetch(&missing)?;
        let mut reset = Vec::new();
        for tp in &missing {
            match committed.get(tp) {
                Some(&off) if off >= 0 => {
                    log::debug!("{tp}: starting at committed offset {off}");
                    self.fetcher.set_position(tp, off);
                }
                _ => reset.push(tp.clone()),
            }
        }
        if reset.is_empty() {
            return Ok(());
        }
        self.fetcher.reset_positions(&reset)
    }

    /// Committed offsets of `partitions` (-1 = none). No retries: it runs
    /// from a poll, which must not wait out a retry budget while the
    /// coordinator is away; the driver still repairs the coordinator
    /// connection, and the next poll asks again.
    fn offset_fetch(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        Retry::new(self.client.config()).retries(0).run(
            "OffsetFetch",
            self,
            |me| me.offset_fetch_once(partitions),
            |me, e| me.coord.recover(e),
        )
    }

    fn offset_fetch_once(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let group = self.config.group_id.clone();
        let timeout = self.client.config().request_timeout;
        let (version, resp) = self
            .coord
            .call(timeout, |v| offset_fetch_request(&group, v, &by_topic))?;
        committed_offsets(&group, version, &resp)
    }

    /// Commits `offsets` at `gen`, retried per the driver. A stale
    /// membership cannot be repaired here: it is reported to the poll side
    /// (which revokes or loses the partitions) and returned as
    /// [`Error::Rebalance`].
    pub(super) fn commit_offsets(
        &mut self,
        gen: &Generation,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<()> {
        let result = Retry::new(self.client.config()).run(
            "OffsetCommit",
            self,
            |me| me.commit_once(gen, offsets),
            |me, e| match me.coord.recover(e) {
                Action::Rejoin => Action::Fail,
                a => a,
            },
        );
        let err = match result {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match err.kafka_code() {
            Some(super::FENCED_INSTANCE_ID) => {
                self.membership.report(gen, GenerationEnd::InstanceFenced);
                Err(err)
            }
            Some(c @ (KafkaCode::ILLEGAL_GENERATION | KafkaCode::UNKNOWN_MEMBER_ID)) => {
                self.membership.report(gen, GenerationEnd::Fenced(c));
                Err(Error::Rebalance(err.to_string()))
            }
            Some(c) if c.is_rejoin() => {
                self.membership.report(gen, GenerationEnd::Rebalance);
                Err(Error::Rebalance(err.to_string()))
            }
            _ => Err(err),
        }
    }

    fn commit_once(&mut self, gen: &Generation, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for (tp, off) in offsets {
            by_topic
                .entry(&tp.topic)
                .or_default()
                .push((tp.partition, *off));
        }
        let group = self.config.group_id.clone();
        let timeout = self.client.config().request_timeout;
        let instance = self.config.group_instance_id.clone();
        // A successful commit proves the generation (see `Membership::prove`).
        let sent = std::time::Instant::now();
        let (_, resp) = self.coord.call(timeout, |v| {
            let mut req = OffsetCommitRequest::default();
            req.group_id = group_id(&group);
            req.generation_id_or_member_epoch = gen.id;
            req.member_id = StrBytes::from_string(gen.member_id.clone());
            if v >= 7 {
                req.group_instance_id = instance.map(StrBytes::from_string);
            }
            // -1: the broker's retention (v2-4; later versions lack the field,
            // whose default is also -1).
            req.retention_time_ms = -1;
            req.topics = by_topic
                .iter()
                .map(|(t, parts)| {
                    let mut x = OffsetCommitRequestTopic::default();
                    x.name = topic_name(t);
                    x.partitions = parts
                        .iter()
                        .map(|&(p, off)| {
                            let mut cp = OffsetCommitRequestPartition::default();
                            cp.partition_index = p;
                            cp.committed_offset = off;
                            cp.committed_leader_epoch = -1;
                            cp
                        })
                        .collect();
                    x
                })
                .collect();
            req
        })?;
        for t in &resp.topics {
            for p in &t.partitions {
                let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                check(format!("OffsetCommit {group} {tp}"), p.error_code)?;
            }
        }
        self.membership.prove(gen, sent);
        Ok(())
    }
}

/// The committed offsets of `group` for `partitions` (-1 = none), read
/// group-less: a coordinator connection of its own, no membership, retried
/// per the client's settings. For [`KafkaReader`](super::super::reader).
pub(crate) fn fetch_committed(
    client: &Arc<Client>,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, i64>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let timeout = client.config().request_timeout;
    let mut coord = Coordinator::new(Arc::clone(client), group.to_string(), None);
    Retry::new(client.config()).run(
        "OffsetFetch",
        &mut coord,
        |coord| {
            let (version, resp) =
                coord.call(timeout, |v| offset_fetch_request(group, v, &by_topic))?;
            committed_offsets(group, version, &resp)
        },
        |coord, e| coord.recover(e),
    )
}

/// An OffsetFetch request at version `v` for these partitions by topic.
fn offset_fetch_request(
    group: &str,
    v: i16,
    by_topic: &BTreeMap<&str, Vec<i32>>,
) -> OffsetFetchRequest {
    let mut req = OffsetFetchRequest::default();
    if v >= 8 {
        // v8+ batches groups; the v1-7 fields must stay at their defaults.
        let mut g = OffsetFetchRequestGroup::default();
        g.group_id = group_id(group);
        g.topics = Some(
            by_topic
                .iter()
                .map(|(t, parts)| {
                    let mut x = OffsetFetchRequestTopics::default();
                    x.name = topic_name(t);
                    x.partition_indexes = parts.clone();
                    x
                })
                .collect(),
        );
        req.groups = vec![g];
    } else {
        req.group_id = group_id(group);
        req.topics = Some(
            by_topic
                .iter()
                .map(|(t, parts)| {
                    let mut x = OffsetFetchRequestTopic::default();
                    x.name = topic_name(t);
                    x.partition_indexes = parts.clone();
                    x
                })
                .collect(),
        );
    }
    req
}

/// The committed offsets in an OffsetFetch reply at `version`; the first
/// error code (group or partition) fails it.
fn committed_offsets(
    group: &str,
    version: i16,
    resp: &OffsetFetchResponse,
) -> Result<BTreeMap<TopicPartition, i64>> {
    let ctx = format!("OffsetFetch {group}");
    let mut out = BTreeMap::new();
    if version >= 8 {
        let g = resp
            .groups
            .iter()
            .find(|g| *g.group_id.0 == *group)
            .ok_or_else(|| Error::Protocol(format!("{ctx}: reply lacks the group")))?;
        check(&ctx, g.error_code)?;
        for t in &g.topics {
            for p in &t.partitions {
                let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                check(format!("{ctx} {tp}"), p.error_code)?;
                out.insert(tp, p.committed_offset);
            }
        }
    } else {
        check(&ctx, resp.error_code)?;
        for t in &resp.topics {
            for p in &t.partitions {
                let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                check(format!("{ctx} {tp}"), p.error_code)?;
                out.insert(tp, p.committed_offset);
            }
        }
    }
    Ok(out)
}

//! Per-partition accumulation: what a record costs, how records are taken
//! from the backlog, grouped by partition into size-bounded chunks (one
//! record batch each) and planned into Produce requests; and the partition
//! a record goes to.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::idempotence::Seq;
use super::state::{Chunk, Inner, Item, Job, Meta, SenderState, Tp, Work};
use crate::error::{Error, KafkaCode, Result};
use crate::partitioner::partition_for_key;
use crate::record::{OutRecord, Partitioning, Topic};

/// Batch header bytes (record batch v2).
pub(super) const BATCH_OVERHEAD: usize = 61;

/// Target size (estimated bytes before compression) of one Produce request:
/// small enough that encoding the next request overlaps the broker's work on
/// this one, big enough to spread the broker's per-request and per-batch
/// cost over many records (through Tansu, 1 KiB records in 1 MiB requests
/// cost the broker more CPU per record than in 2 MiB ones, and ran slower).
/// A single bigger record still goes, alone.
pub(super) const REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// An upper bound of a record's encoded size in a v2 batch: varint fields at
/// their widest (length 5, attributes 1, timestamp delta 10, offset delta 5,
/// key/value lengths 5 + 5, header count 5, per header 10).
pub(super) fn estimate(r: &OutRecord) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|h| 10 + h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    36 + r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + headers
}

impl<'a> SenderState<'a> {
    /// Picks each record's partition and queues it; a record that cannot
    /// have one is answered at once.
    pub(super) fn intake(&mut self, work: Work) {
        match work {
            Work::One(job) => self.intake_one(job, Instant::now()),
            Work::Many(jobs) => {
                let now = Instant::now();
                for job in jobs {
                    self.intake_one(job, now);
                }
            }
        }
    }

    pub(super) fn intake_one(&mut self, job: Job, now: Instant) {
        match self.inner.partition(&job.record, &mut self.counts) {
            Ok(partition) => {
                let size = estimate(&job.record);
                self.held += 1;
                self.backlog_bytes += size;
                self.backlog.push_back(Item {
                    record: job.record,
                    meta: Meta {
                        reply: job.reply,
                        partition,
                        size,
                        arrived: now,
                        failures: 0,
                        reconnected: false,
                        batch: job.batch,
                        seq: None,
                    },
                });
            }
            Err(e) => {
                self.inner.unanswered.fetch_sub(1, Ordering::SeqCst);
                job.reply.complete(Err(e));
            }
        }
    }

    pub(super) fn is_blocked(&self, topic: &str, partition: i32) -> bool {
        self.blocked
            .get(topic)
            .is_some_and(|ps| ps.contains_key(&partition))
    }

    /// Whether `backlog` holds a record that [`take_request`](Self::take_request)
    /// would take: not blocked behind parked records, not held back behind
    /// a retry (see [`RetryGate`]).
    pub(super) fn sendable(&self) -> bool {
        let gate = RetryGate::new(self);
        if self.blocked.is_empty() && gate.is_empty() {
            return !self.backlog.is_empty();
        }
        self.backlog.iter().any(|i| self.may_take(&gate, i))
    }

    fn may_take(&self, gate: &RetryGate, item: &Item) -> bool {
        if !self.blocked.is_empty() && self.is_blocked(&item.record.topic, item.meta.partition) {
            return false;
        }
        gate.admits(item)
    }

    /// Takes up to a request's worth of records from the front of `backlog`
    /// (at least one if [`sendable`](Self::sendable)), skipping blocked and
    /// held-back partitions, order kept.
    pub(super) fn take_request(&mut self) -> Vec<Item> {
        let gate = RetryGate::new(self);
        let mut taken: Vec<Item> = Vec::new();
        let mut bytes = 0;
        let mut skipped: Vec<Item> = Vec::new();
        while let Some(item) = self.backlog.pop_front() {
            if !self.may_take(&gate, &item) {
                skipped.push(item);
                continue;
            }
            // A numbered batch is resent whole (its sequence range names
            // it to the broker): never cut it between two requests.
            let same_batch = item.meta.seq.is_some()
                && taken.last().is_some_and(|l| {
                    l.meta.seq == item.meta.seq
                        && l.meta.partition == item.meta.partition
                        && l.record.topic == item.record.topic
                });
            if !taken.is_empty() && bytes + item.meta.size > REQUEST_BYTES && !same_batch {
                self.backlog.push_front(item);
                break;
            }
            bytes += item.meta.size;
            taken.push(item);
        }
        for item in skipped.into_iter().rev() {
            self.backlog.push_front(item);
        }
        self.backlog_bytes -= bytes;
        taken
    }

    /// Writes the records at the front of `backlog`: one request per leader
    /// (more if a partition's records pass `batch_size`).
    pub(super) fn send_some(&mut self) {
        let mut items = self.take_request();
        if let Some(idem) = &self.idem {
            // Numbers of an older generation are void: numbered again.
            for item in &mut items {
                if !idem.current(item.meta.seq) {
                    item.meta.seq = None;
                }
            }
        }
        let chunk_limit = self.config.batch_size.saturating_sub(BATCH_OVERHEAD).max(1);
        // Partition -> item indices, order kept within a partition. Keyed
        // by the borrowed topic: one String per partition, not per record.
        let mut by_tp: BTreeMap<(&str, i32), Vec<usize>> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            by_tp
                .entry((item.record.topic.as_str(), item.meta.partition))
                .or_default()
                .push(i);
        }
        let mut by_tp: Vec<(Tp, Vec<usize>)> = by_tp
            .into_iter()
            .map(|((t, p), indices)| ((t.to_string(), p), indices))
            .collect();
        if self.idem.is_some() {
            // Retried batches go first, in sequence order (the broker takes
            // a partition's batches only in order); new records after them,
            // in the order they came. The sort is stable.
            for (_, indices) in &mut by_tp {
                indices.sort_by_key(|&i| items[i].meta.seq.map_or((1, 0), |s| (0, s.1)));
            }
        }
        let mut slots: Vec<Option<Item>> = items.into_iter().map(Some).collect();
        // Leader -> partitions -> size-bounded chunks.
        let mut by_leader: BTreeMap<i32, Vec<Vec<Chunk>>> = BTreeMap::new();
        for (tp, indices) in by_tp {
            let group = indices.iter().filter_map(|&i| slots[i].take());
            match self.inner.client.leader(&tp.0, tp.1) {
                Ok(leader) => {
                    let mut chunks: Vec<Chunk> = Vec::new();
                    let mut left = indices.len();
                    for item in group {
                        // Sized once: what is left of the partition, or
                        // what fits in a chunk of records of this size.
                        let cap = left.min(chunk_limit / item.meta.size.max(1) + 1);
                        left = left.saturating_sub(1);
                        // A numbered batch stays as it was; new records
                        // never join it.
                        let fits = chunks.last().is_some_and(|c| {
                            let same = c.metas.last().map(|m| m.seq) == Some(item.meta.seq);
                            same && (item.meta.seq.is_some()
                                || c.bytes + item.meta.size <= chunk_limit)
                        });
                        if !fits {
                            chunks.push(Chunk {
                                tp: tp.clone(),
                                records: Vec::with_capacity(cap),
                                metas: Vec::with_capacity(cap),
                                bytes: 0,
                            });
                        }
                        if let Some(c) = chunks.last_mut() {
                            c.bytes += item.meta.size;
                            c.records.push(item.record);
                            c.metas.push(item.meta);
                        }
                    }
                    by_leader.entry(leader).or_default().push(chunks);
                }
                Err(e) => {
                    let (records, metas) = group.map(|i| (i.record, i.meta)).unzip();
                    self.fail_or_retry(&tp, records, metas, e);
                }
            }
        }
        for (leader, partitions) in by_leader {
            let mut requests = plan_requests(partitions, REQUEST_BYTES).into_iter();
            while let Some(request) = requests.next() {
                self.send_request(leader, request);
                if self.links.get(&leader).is_some_and(|l| l.conn.is_none()) {
                    // The connection broke (or could not be made): the rest
                    // waits behind the resends, not on a new connection
                    // ahead of them.
                    let rest: Vec<Chunk> = requests.by_ref().flatten().collect();
                    self.requeue_behind_resends(rest);
                    break;
                }
            }
        }
    }
}

impl Inner {
    /// The partition for a record: explicit, Java's murmur2 of the key, or
    /// round robin for keyless records.
    pub(super) fn partition(
        &self,
        r: &OutRecord,
        counts: &mut HashMap<Topic, Result<i32>>,
    ) -> Result<i32> {
        // One hash of the topic per record in the usual case (it is known);
        // not `entry`, which would clone the topic per record.
        let n = match counts.get(r.topic.as_str()) {
            Some(Ok(n)) => *n,
            Some(Err(e)) => return Err(e.clone()),
            None => {
                let count = match self.client.cached_partition_count(&r.topic) {
                    Ok(Some(n)) => Ok(n),
                    Ok(None) => Err(Error::UnknownTopic(r.topic.to_string())),
                    Err(e) => Err(e),
                };
                counts.insert(r.topic.clone(), count.clone());
                count?
            }
        };
        match r.partitioning {
            Partitioning::Explicit(p) if p >= 0 && p < n => Ok(p),
            Partitioning::Explicit(p) => {
                // The topic may have grown: check once more before failing.
                match self.client.partition_count(&r.topic)? {
                    Some(m) if p >= 0 && p < m => {
                        counts.insert(r.topic.clone(), Ok(m));
                        Ok(p)
                    }
                    Some(_) => Err(Error::kafka(
                        format!("Produce {}-{p}", r.topic),
                        KafkaCode::UNKNOWN_TOPIC_OR_PARTITION,
                    )),
                    None => Err(Error::UnknownTopic(r.topic.to_string())),
                }
            }
            Partitioning::Default => match &r.key {
                Some(key) => Ok(partition_for_key(key, n)),
                None => Ok((self.next.fetch_add(1, Ordering::Relaxed) % n as u32) as i32),
            },
        }
    }
}

/// Holds a partition's records back while it has batches to resend, as
/// the Java client does (`RecordAccumulator.shouldStopDrainBatchesForPartition`):
/// a numbered batch in the backlog is one the broker may or may not have
/// (its connection broke, or it was refused and its back-off passed). If
/// newer batches went out next to or before it, a broker that writes
/// whatever sequence follows its last one would put them first; Tansu 0.6
/// was seen to. So, per partition with numbered batches in the backlog:
/// - only its lowest numbered batch may go, and only once nothing of the
///   partition is in flight (its reply tells whether the next may follow);
/// - its new records wait until every numbered batch is answered.
///
/// Partitions without retries are not affected, and without idempotence
/// nothing is numbered (order then needs `max_in_flight(1)`).
pub(super) struct RetryGate {
    /// Topic -> partition -> the batch allowed to go (`None`: held back,
    /// something of the partition is in flight).
    next: HashMap<Topic, HashMap<i32, Option<Seq>>>,
}

impl RetryGate {
    pub(super) fn new(state: &SenderState<'_>) -> RetryGate {
        let mut next: HashMap<Topic, HashMap<i32, Option<Seq>>> = HashMap::new();
        for item in &state.backlog {
            let Some(seq) = item.meta.seq else { continue };
            if !next.contains_key(item.record.topic.as_str()) {
                next.insert(item.record.topic.clone(), HashMap::new());
            }
            let Some(parts) = next.get_mut(item.record.topic.as_str()) else {
                continue;
            };
            let lowest = parts.entry(item.meta.partition).or_insert(Some(seq));
            // Generations are numbered up, base sequences up within one.
            if let Some(l) = lowest {
                if seq < *l {
                    *l = seq;
                }
            }
        }
        if !next.is_empty() {
            for link in state.links.values() {
                for chunk in link.flights.iter().flat_map(|f| &f.chunks) {
                    let allowed = next
                        .get_mut(chunk.tp.0.as_str())
                        .and_then(|p| p.get_mut(&chunk.tp.1));
                    if let Some(allowed) = allowed {
                        *allowed = None;
                    }
                }
            }
        }
        RetryGate { next }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// Whether `item` may go now.
    pub(super) fn admits(&self, item: &Item) -> bool {
        if self.next.is_empty() {
            return true;
        }
        match self
            .next
            .get(item.record.topic.as_str())
            .and_then(|p| p.get(&item.meta.partition))
        {
            None => true,
            Some(allowed) => allowed.is_some() && item.meta.seq == *allowed,
        }
    }
}

/// Splits each leader's partitions into requests: the k-th chunk of every
/// partition goes to the k-th request (one batch per partition per request),
/// and a request closes when it would pass `max_bytes`.
pub(super) fn plan_requests(partitions: Vec<Vec<Chunk>>, max_bytes: usize) -> Vec<Vec<Chunk>> {
    let mut requests = Vec::new();
    let mut queues: Vec<std::vec::IntoIter<Chunk>> =
        partitions.into_iter().map(Vec::into_iter).collect();
    loop {
        let layer: Vec<Chunk> = queues.iter_mut().filter_map(Iterator::next).collect();
        if layer.is_empty() {
            break;
        }
        let mut cur: Vec<Chunk> = Vec::new();
        let mut bytes = 0;
        for chunk in layer {
            if !cur.is_empty() && bytes + chunk.bytes > max_bytes {
                requests.push(std::mem::take(&mut cur));
                bytes = 0;
            }
            bytes += chunk.bytes;
            cur.push(chunk);
        }
        requests.push(cur);
    }
    requests
}

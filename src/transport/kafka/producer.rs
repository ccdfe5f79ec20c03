//! The acknowledged producer.
//!
//! Design: `send_batch` does its work on the calling thread. `send` hands
//! its record to one background thread (`kafka-retry-producer`) and waits on
//! a private one-shot reply slot. That thread takes what is queued (plus whatever
//! arrives within `linger`, up to a size cap) and produces it in one go, so
//! many threads calling `send` at once share Produce round trips.
//!
//! Linger ends early once the batch holds every unanswered `send`: callers
//! block until answered, so nobody else is about to add a record, and waiting
//! out `linger` would only idle them (N threads would get N records per
//! linger period). Records sent while a Produce is in flight queue up and
//! share the next one.
//!
//! One go ([`Inner::produce`]): pick a partition per record; group records by
//! partition into record batches (one batch per partition per request: Kafka
//! rejects more with INVALID_RECORD) and by leader into one Produce request
//! per broker; retry retriable per-partition errors on those partitions only,
//! after a metadata refresh, at most `max_retries` times.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};

use super::client::{topic_name, Client, TopicState};
use super::config::Compression;
use super::errors::{
    clone_error, code_name, is_retriable_code, kafka_error, needs_metadata_refresh,
};
use super::records::{self, encode_batch};
use crate::error::{Error, Result};
use crate::partitioner::partition_for_key;
use crate::pending::{Completer, Pending};
use crate::record::{Delivered, OutRecord, Partitioning};
use crate::transport::Producer;

/// Batch header bytes (record batch v2).
const BATCH_OVERHEAD: usize = 61;
/// Most bytes (estimated, before compression) in one Produce request; a
/// request holds at least one batch whatever its size. Kafka's
/// `socket.request.max.bytes` is 100 MiB.
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// An upper bound of a record's encoded size in a v2 batch: varint fields at
/// their widest (length 5, attributes 1, timestamp delta 10, offset delta 5,
/// key/value lengths 5 + 5, header count 5, per header 10).
fn estimate(r: &OutRecord) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|h| 10 + h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    36 + r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + headers
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn codec(c: Compression) -> records::Compression {
    match c {
        Compression::None => records::Compression::None,
        Compression::Gzip => records::Compression::Gzip,
        Compression::Snappy => records::Compression::Snappy,
    }
}

struct Job {
    record: OutRecord,
    /// Answers the caller's [`Pending`]; dropped unanswered (the sender
    /// thread died) it answers with an error, so no caller waits forever.
    reply: Completer,
}

/// The Kafka producer (see the module docs).
pub(crate) struct KafkaProducer {
    inner: Arc<Inner>,
    queue: Option<Sender<Job>>,
    sender: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("client", &self.inner.client)
            .finish_non_exhaustive()
    }
}

struct Inner {
    client: Arc<Client>,
    /// Round-robin position for keyless records.
    next: AtomicU32,
    /// `send` jobs queued or being produced, not yet answered: raised by the
    /// caller before queueing, lowered by the sender thread before replying.
    unanswered: AtomicUsize,
}

impl KafkaProducer {
    /// A producer on `client`; starts the `kafka-retry-producer` thread.
    pub(crate) fn new(client: Arc<Client>) -> Result<KafkaProducer> {
        let inner = Arc::new(Inner {
            client,
            next: AtomicU32::new(0),
            unanswered: AtomicUsize::new(0),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread_inner = inner.clone();
        let sender = thread::Builder::new()
            .name("kafka-retry-producer".into())
            .spawn(move || run_sender(&thread_inner, &rx))
            .map_err(|e| Error::Thread(format!("start kafka-retry-producer: {e}")))?;
        Ok(KafkaProducer {
            inner,
            queue: Some(tx),
            sender: Some(sender),
        })
    }
}

impl Drop for KafkaProducer {
    fn drop(&mut self) {
        // Disconnecting the queue ends the sender loop once it has drained.
        self.queue = None;
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
    }
}

impl Producer for KafkaProducer {
    fn send(&self, record: OutRecord) -> Result<Delivered> {
        self.send_async(record).wait()
    }

    fn send_async(&self, record: OutRecord) -> Pending {
        let Some(queue) = self.queue.as_ref() else {
            return Pending::ready(Err(Error::Closed));
        };
        let (pending, reply) = Pending::new();
        // Raised before queueing, so the sender never sees a job it has
        // not counted (see `run_sender`).
        self.inner.unanswered.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = queue.send(Job { record, reply }) {
            self.inner.unanswered.fetch_sub(1, Ordering::SeqCst);
            e.into_inner().reply.complete(Err(Error::Closed));
        }
        pending
    }

    fn send_batch(&self, records: Vec<OutRecord>) -> Vec<Result<Delivered>> {
        self.inner.produce(records)
    }
}

/// The sender loop: gather queued sends (linger), produce them together.
fn run_sender(inner: &Inner, rx: &Receiver<Job>) {
    let config = inner.client.config();
    let cap = config.batch_size.max(MAX_REQUEST_BYTES);
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + config.linger;
        let mut bytes = estimate(&first.record);
        let mut jobs = vec![first];
        while bytes < cap {
            // Every unanswered send is in hand: its caller is blocked, so no
            // one else is about to add a record; stop lingering. While this
            // thread runs only it lowers `unanswered` (a caller lowers it only
            // when the queue is gone), so the check cannot miss a job.
            if inner.unanswered.load(Ordering::SeqCst) <= jobs.len() {
                break;
            }
            let next = match rx.try_recv() {
                Ok(j) => j,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => match rx.recv_deadline(deadline) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            };
            bytes += estimate(&next.record);
            jobs.push(next);
        }
        let (records, replies): (Vec<OutRecord>, Vec<Completer>) =
            jobs.into_iter().map(|j| (j.record, j.reply)).unzip();
        let n = records.len();
        log::trace!("kafka: producing {n} queued send(s)");
        // A bug in produce must not kill the thread every sender depends on.
        let results =
            catch_unwind(AssertUnwindSafe(|| inner.produce(records))).unwrap_or_else(|_| {
                (0..n)
                    .map(|_| {
                        Err(Error::Thread(
                            "kafka-retry-producer panicked while producing".into(),
                        ))
                    })
                    .collect()
            });
        // Lowered before replying: a caller that sends again right away is
        // then counted once, by its new job.
        inner.unanswered.fetch_sub(n, Ordering::SeqCst);
        for (reply, result) in replies.into_iter().zip(results) {
            reply.complete(result);
        }
    }
}

type Tp = (String, i32);

/// Records of one partition bound for one request.
struct Chunk {
    tp: Tp,
    indices: Vec<usize>,
    bytes: usize,
}

impl Inner {
    /// Produces `records` and returns one result per record, in order.
    fn produce(&self, mut records: Vec<OutRecord>) -> Vec<Result<Delivered>> {
        let config = self.client.config();
        let mut results: Vec<Option<Result<Delivered>>> =
            (0..records.len()).map(|_| None).collect();
        let mut counts: HashMap<String, Result<i32>> = HashMap::new();
        // (record index, partition) still to write.
        let mut todo: Vec<(usize, i32)> = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            match self.partition(r, &mut counts) {
                Ok(p) => todo.push((i, p)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }

        let start = Instant::now();
        let mut attempt = 0;
        while !todo.is_empty() {
            let mut retry: Vec<(usize, i32, Error)> = Vec::new();
            let mut stale: HashSet<String> = HashSet::new();
            let mut round = Round {
                records: &mut records,
                results: &mut results,
                retry: &mut retry,
                stale: &mut stale,
            };
            self.produce_once(&todo, &mut round);

            if retry.is_empty() {
                break;
            }
            attempt += 1;
            if attempt > config.max_retries || start.elapsed() >= config.delivery_timeout {
                for (i, _, e) in retry {
                    results[i] = Some(Err(e));
                }
                break;
            }
            // Exponential back-off up to 1 s (as KIP-580): a broker that is
            // failing over (KRaft fences it after ~9 s) is outlasted by the
            // default retries instead of failing fast.
            let backoff = config
                .retry_backoff
                .saturating_mul(1 << (attempt - 1).min(10))
                .min(config.retry_backoff.max(Duration::from_secs(1)));
            let left = config.delivery_timeout.saturating_sub(start.elapsed());
            thread::sleep(backoff.min(left));
            // Refresh what moved; a topic the broker now says is gone fails
            // with UnknownTopic instead of burning the retries.
            let mut topics: Vec<String> = stale.into_iter().collect();
            topics.sort();
            let states = if topics.is_empty() {
                HashMap::new()
            } else {
                // One attempt: this loop is the retry loop.
                self.client.fetch_metadata_once(&topics).unwrap_or_default()
            };
            todo.clear();
            for (i, p, e) in retry {
                let topic = &records[i].topic;
                if states.get(topic) == Some(&TopicState::Missing) {
                    results[i] = Some(Err(Error::UnknownTopic(topic.clone())));
                } else {
                    log::debug!("kafka: retrying {topic}-{p} after: {e}");
                    todo.push((i, p));
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(Error::Protocol("record was not produced (bug)".into())))
            })
            .collect()
    }

    /// The partition for a record: explicit, Java's murmur2 of the key, or
    /// round robin for keyless records.
    fn partition(&self, r: &OutRecord, counts: &mut HashMap<String, Result<i32>>) -> Result<i32> {
        // Looked up before `entry`, which would clone the topic per record.
        if !counts.contains_key(&r.topic) {
            let count = match self.client.cached_partition_count(&r.topic) {
                Ok(Some(n)) => Ok(n),
                Ok(None) => Err(Error::UnknownTopic(r.topic.clone())),
                Err(e) => Err(e),
            };
            counts.insert(r.topic.clone(), count);
        }
        let Some(count) = counts.get(&r.topic) else {
            return Err(Error::Protocol("partition count missing (bug)".into()));
        };
        let n = match count {
            Ok(n) => *n,
            Err(e) => return Err(clone_error(e)),
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
                    Some(_) => Err(kafka_error(format!("Produce {}-{p}", r.topic), 3)),
                    None => Err(Error::UnknownTopic(r.topic.clone())),
                }
            }
            Partitioning::Default => match &r.key {
                Some(key) => Ok(partition_for_key(key, n)),
                None => Ok((self.next.fetch_add(1, Ordering::Relaxed) % n as u32) as i32),
            },
        }
    }

    /// One pass over `todo`: every record is either finished in
    /// `round.results` or queued in `round.retry`.
    fn produce_once(&self, todo: &[(usize, i32)], round: &mut Round<'_>) {
        let config = self.client.config();
        let chunk_limit = config.batch_size.saturating_sub(BATCH_OVERHEAD).max(1);

        // Partition -> record indices, input order kept within a partition.
        // Keyed by the borrowed topic: one String per partition, not per record.
        let mut by_tp: BTreeMap<(&str, i32), Vec<usize>> = BTreeMap::new();
        for &(i, p) in todo {
            by_tp
                .entry((round.records[i].topic.as_str(), p))
                .or_default()
                .push(i);
        }
        let by_tp: Vec<(Tp, Vec<usize>)> = by_tp
            .into_iter()
            .map(|((t, p), indices)| ((t.to_string(), p), indices))
            .collect();
        // Leader -> partitions -> size-bounded chunks.
        let mut by_leader: BTreeMap<i32, Vec<Vec<Chunk>>> = BTreeMap::new();
        for (tp, indices) in by_tp {
            match self.client.leader(&tp.0, tp.1) {
                Ok(leader) => {
                    let mut chunks = Vec::new();
                    let mut cur = Chunk {
                        tp: tp.clone(),
                        indices: Vec::new(),
                        bytes: 0,
                    };
                    for i in indices {
                        let size = estimate(&round.records[i]);
                        if !cur.indices.is_empty() && cur.bytes + size > chunk_limit {
                            let full = std::mem::replace(
                                &mut cur,
                                Chunk {
                                    tp: tp.clone(),
                                    indices: Vec::new(),
                                    bytes: 0,
                                },
                            );
                            chunks.push(full);
                        }
                        cur.bytes += size;
                        cur.indices.push(i);
                    }
                    chunks.push(cur);
                    by_leader.entry(leader).or_default().push(chunks);
                }
                Err(e) => round.fail_or_retry(&tp, &indices, e),
            }
        }

        for (leader, partitions) in by_leader {
            for request in plan_requests(partitions) {
                self.send_request(leader, request, round);
            }
        }
    }

    /// Encodes and sends one Produce request to `leader`, filing each
    /// partition's outcome.
    fn send_request(&self, leader: i32, chunks: Vec<Chunk>, round: &mut Round<'_>) {
        let config = self.client.config();
        let now = now_ms();
        let mut topics: BTreeMap<String, Vec<PartitionProduceData>> = BTreeMap::new();
        let mut sent: Vec<Chunk> = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            // Lent to the encoder and put back (a retry needs them again):
            // a clone would cost three allocations per record.
            let recs: Vec<OutRecord> = chunk
                .indices
                .iter()
                .map(|&i| std::mem::replace(&mut round.records[i], OutRecord::new(String::new())))
                .collect();
            let encoded = encode_batch(&recs, now, codec(config.compression));
            for (&i, r) in chunk.indices.iter().zip(recs) {
                round.records[i] = r;
            }
            match encoded {
                Ok(batch) => {
                    let mut pd = PartitionProduceData::default();
                    pd.index = chunk.tp.1;
                    pd.records = Some(batch);
                    topics.entry(chunk.tp.0.clone()).or_default().push(pd);
                    sent.push(chunk);
                }
                Err(e) => round.fail_all(&chunk.indices, &e),
            }
        }
        if sent.is_empty() {
            return;
        }
        let mut req = ProduceRequest::default();
        req.acks = config.acks;
        req.timeout_ms = i32::try_from(config.request_timeout.as_millis()).unwrap_or(i32::MAX);
        req.topic_data = topics
            .into_iter()
            .map(|(t, parts)| {
                let mut td = TopicProduceData::default();
                td.name = topic_name(&t);
                td.partition_data = parts;
                td
            })
            .collect();
        // The reply may take up to the broker-side timeout plus the trip.
        let timeout = config.request_timeout + config.request_timeout / 2;
        let reply = self.client.with_node(leader, |c| {
            let v = c.version(ApiKey::Produce)?;
            c.call(v, &req, timeout)
        });
        match reply {
            Ok(resp) => self.file_response(&resp, sent, round),
            Err(e) => {
                for chunk in sent {
                    round.fail_or_retry(&chunk.tp, &chunk.indices, clone_error(&e));
                }
            }
        }
    }

    fn file_response(&self, resp: &ProduceResponse, sent: Vec<Chunk>, round: &mut Round<'_>) {
        for chunk in sent {
            let (topic, partition) = &chunk.tp;
            let ctx = format!("Produce {topic}-{partition}");
            let part = resp
                .responses
                .iter()
                .filter(|t| &*t.name.0 == topic.as_str())
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == *partition);
            let part = match part {
                Some(p) => p,
                None => {
                    let e = Error::Protocol(format!("{ctx}: partition missing from the reply"));
                    round.fail_all(&chunk.indices, &e);
                    continue;
                }
            };
            match part.error_code {
                0 => {
                    for (k, &i) in chunk.indices.iter().enumerate() {
                        round.results[i] = Some(Ok(Delivered {
                            topic: topic.clone(),
                            partition: *partition,
                            offset: part.base_offset + k as i64,
                        }));
                    }
                }
                code => {
                    let ctx = match &part.error_message {
                        Some(m) if !m.is_empty() => format!("{ctx} ({})", &**m),
                        _ => ctx,
                    };
                    log::debug!("kafka: {ctx}: {} ({code})", code_name(code));
                    round.fail_or_retry(&chunk.tp, &chunk.indices, kafka_error(ctx, code));
                }
            }
        }
    }
}

/// Splits each leader's partitions into requests: the k-th chunk of every
/// partition goes to the k-th request (one batch per partition per request),
/// and a request closes when it would pass `MAX_REQUEST_BYTES`.
fn plan_requests(partitions: Vec<Vec<Chunk>>) -> Vec<Vec<Chunk>> {
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
            if !cur.is_empty() && bytes + chunk.bytes > MAX_REQUEST_BYTES {
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

/// Where one pass files its outcomes.
struct Round<'a> {
    /// Mutable only so that `send_request` can lend records to the encoder
    /// without cloning them; every record is back in place when it returns.
    records: &'a mut [OutRecord],
    results: &'a mut Vec<Option<Result<Delivered>>>,
    retry: &'a mut Vec<(usize, i32, Error)>,
    stale: &'a mut HashSet<String>,
}

impl Round<'_> {
    fn fail_all(&mut self, indices: &[usize], e: &Error) {
        for &i in indices {
            self.results[i] = Some(Err(clone_error(e)));
        }
    }

    /// Retriable errors (leader moves, timeouts, dropped connections) go to
    /// the retry list, the rest are final.
    fn fail_or_retry(&mut self, tp: &Tp, indices: &[usize], e: Error) {
        let retriable = match &e {
            Error::Kafka { code, .. } => is_retriable_code(*code),
            Error::Io { .. } | Error::Timeout(_) => true,
            _ => false,
        };
        if !retriable {
            self.fail_all(indices, &e);
            return;
        }
        let refresh = match &e {
            Error::Kafka { code, .. } => needs_metadata_refresh(*code),
            _ => true,
        };
        if refresh {
            self.stale.insert(tp.0.clone());
        }
        for &i in indices {
            self.retry.push((i, tp.1, clone_error(&e)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_reply_answers_with_an_error() {
        let (pending, reply) = Pending::new();
        // The sender thread dying with the job in hand drops the completer.
        thread::spawn(move || drop(reply)).join().unwrap();
        assert!(matches!(pending.wait(), Err(Error::Thread(_))));
    }
}

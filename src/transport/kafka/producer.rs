//! The acknowledged producer.
//!
//! Design: every write goes through one background thread
//! (`kafka-retry-producer`). `send_async` queues a record, `send` queues one
//! and waits for it, `send_batch` queues its records together and waits for
//! all of them. The thread picks each record's partition as it arrives,
//! packs records into Produce requests of about [`REQUEST_BYTES`] (one record
//! batch per partition per request: Kafka rejects more with INVALID_RECORD)
//! and keeps up to `max_in_flight` requests unanswered per broker
//! connection: it encodes and writes the next request while the broker works
//! on the earlier ones. Replies are read in order (Kafka answers one
//! connection's requests in order; correlation ids are still checked), and
//! each completes its records' `Pending`s at once.
//!
//! When to write a request:
//! - Nothing in flight: gather records until a request is full, `linger` has
//!   passed since the oldest arrived, or the thread holds every unanswered
//!   record (callers block until answered, so nobody else is about to add
//!   one, and waiting out `linger` would only idle them).
//! - Requests in flight: write full requests, or the rest of `send_batch`
//!   calls when nothing else is unanswered; otherwise read the oldest reply
//!   first (records keep queueing meanwhile). A small request costs the
//!   broker about as much as a big one, and async callers, or `send` callers
//!   waking up, are usually about to add more.
//!
//! Invariants:
//! - A record is reported delivered only from the reply to the request that
//!   carried it. A broken connection (I/O error, timeout, bad reply) fails
//!   every request in flight on it; their records are retried (an I/O error
//!   once at once on a new connection, as an idle connection the broker
//!   closed would cause, then with back-off) or failed.
//! - Retriable per-partition errors, timeouts and dropped connections park
//!   the records with exponential back-off (at most `max_retries` times,
//!   none after `delivery_timeout`); when due, their topics' metadata is
//!   refreshed if the error calls for it and they go first in line. A
//!   partition with records parked holds back its newer records, so with
//!   `max_in_flight(1)` each partition keeps the order records were sent in.
//!   With more in flight, requests already written cannot be held back: a
//!   retried record may land after later ones (see
//!   [`KafkaConfig::max_in_flight`](super::config::KafkaConfig::max_in_flight)).
//! - `held` counts the records the thread holds (queued for a request,
//!   parked, in flight); `Inner::unanswered` counts those plus the ones
//!   still in the channel. Both are lowered before a record is answered.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};

use super::client::{topic_name, Client, TopicState};
use super::config::{Compression, KafkaConfig};
use super::conn::{Connection, Sent};
use super::errors::{code_name, needs_metadata_refresh};
use super::records::{self, encode_batch};
use crate::clock::now_ms;
use crate::error::{Error, KafkaCode, Result};
use crate::partitioner::partition_for_key;
use crate::pending::{Completer, Pending};
use crate::record::{Delivered, OutRecord, Partitioning};
use crate::transport::Producer;

/// Batch header bytes (record batch v2).
const BATCH_OVERHEAD: usize = 61;
/// Target size (estimated bytes before compression) of one Produce request:
/// small enough that encoding the next request overlaps the broker's work on
/// this one, big enough to spread the broker's per-request and per-batch
/// cost over many records (through Tansu, 1 KiB records in 1 MiB requests
/// cost the broker more CPU per record than in 2 MiB ones, and ran slower).
/// A single bigger record still goes, alone.
const REQUEST_BYTES: usize = 2 * 1024 * 1024;

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

fn codec(c: Compression) -> records::Compression {
    match c {
        Compression::None => records::Compression::None,
        Compression::Gzip => records::Compression::Gzip,
        Compression::Snappy => records::Compression::Snappy,
    }
}

struct Job {
    record: OutRecord,
    /// Answers the caller; dropped unanswered (the sender thread died) it
    /// answers with an error, so no caller waits forever.
    reply: Reply,
    /// Whether it came with a whole `send_batch`, whose caller waits for
    /// all of it and adds nothing meanwhile.
    batch: bool,
}

/// Where a record's result goes.
enum Reply {
    /// A `send` / `send_async` caller's [`Pending`].
    One(Completer),
    /// One record of a `send_batch`.
    Batch(BatchReply),
}

impl Reply {
    fn complete(self, result: Result<Delivered>) {
        match self {
            Reply::One(c) => c.complete(result),
            Reply::Batch(b) => b.complete(result),
        }
    }
}

/// The results of one `send_batch`, woken once when the last lands: a
/// [`Pending`] per record would wake the waiting caller once per record
/// whenever it runs ahead of the answers.
#[derive(Default)]
struct BatchSlot {
    state: Mutex<BatchState>,
    done: Condvar,
}

#[derive(Default)]
struct BatchState {
    results: Vec<Option<Result<Delivered>>>,
    left: usize,
}

impl BatchSlot {
    fn new(n: usize) -> Arc<BatchSlot> {
        Arc::new(BatchSlot {
            state: Mutex::new(BatchState {
                results: (0..n).map(|_| None).collect(),
                left: n,
            }),
            done: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until every record is answered; results in input order.
    fn wait(&self) -> Vec<Result<Delivered>> {
        let mut st = self.lock();
        while st.left > 0 {
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        std::mem::take(&mut st.results)
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Protocol("record not answered (bug)".into()))))
            .collect()
    }
}

/// The answering half for one record of a [`BatchSlot`]; dropped
/// unanswered, it answers with an error.
struct BatchReply {
    slot: Option<Arc<BatchSlot>>,
    index: usize,
}

impl BatchReply {
    fn complete(mut self, result: Result<Delivered>) {
        self.fill(result);
    }

    fn fill(&mut self, result: Result<Delivered>) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut st = slot.lock();
        if let Some(r) = st.results.get_mut(self.index) {
            if r.is_none() {
                *r = Some(result);
                st.left -= 1;
            }
        }
        let last = st.left == 0;
        drop(st);
        if last {
            slot.done.notify_all();
        }
    }
}

impl Drop for BatchReply {
    fn drop(&mut self) {
        self.fill(Err(Error::Thread(
            "the write was dropped without an answer".into(),
        )));
    }
}

/// What callers queue for the sender thread.
enum Work {
    One(Job),
    /// A `send_batch`: one message, so its records stay together.
    Many(Vec<Job>),
}

/// The Kafka producer (see the module docs).
pub(crate) struct KafkaProducer {
    inner: Arc<Inner>,
    queue: Option<Sender<Work>>,
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
    /// Records queued or held by the sender thread, not yet answered:
    /// raised by the caller before queueing, lowered by the sender thread
    /// before answering.
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
        // Disconnecting the queue ends the sender loop once it has answered
        // every record it holds.
        self.queue = None;
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
    }
}

impl KafkaProducer {
    /// Queues one record for `send` / `send_async`.
    fn enqueue(&self, record: OutRecord) -> Pending {
        let Some(queue) = self.queue.as_ref() else {
            return Pending::ready(Err(Error::Closed));
        };
        let (pending, reply) = Pending::new();
        // Raised before queueing, so the sender never holds a record it has
        // not counted (see `SenderState::linger`).
        self.inner.unanswered.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            record,
            reply: Reply::One(reply),
            batch: false,
        };
        if let Err(e) = queue.send(Work::One(job)) {
            self.inner.unanswered.fetch_sub(1, Ordering::SeqCst);
            if let Work::One(job) = e.into_inner() {
                job.reply.complete(Err(Error::Closed));
            }
        }
        pending
    }
}

impl Producer for KafkaProducer {
    fn send(&self, record: OutRecord) -> Result<Delivered> {
        self.send_async(record).wait()
    }

    fn send_async(&self, record: OutRecord) -> Pending {
        self.enqueue(record)
    }

    fn send_batch(&self, records: Vec<OutRecord>) -> Vec<Result<Delivered>> {
        let Some(queue) = self.queue.as_ref() else {
            return records.iter().map(|_| Err(Error::Closed)).collect();
        };
        if records.is_empty() {
            return Vec::new();
        }
        let n = records.len();
        let slot = BatchSlot::new(n);
        let jobs: Vec<Job> = records
            .into_iter()
            .enumerate()
            .map(|(index, record)| Job {
                record,
                reply: Reply::Batch(BatchReply {
                    slot: Some(slot.clone()),
                    index,
                }),
                batch: true,
            })
            .collect();
        self.inner.unanswered.fetch_add(n, Ordering::SeqCst);
        if let Err(e) = queue.send(Work::Many(jobs)) {
            self.inner.unanswered.fetch_sub(n, Ordering::SeqCst);
            if let Work::Many(jobs) = e.into_inner() {
                for job in jobs {
                    job.reply.complete(Err(Error::Closed));
                }
            }
        }
        slot.wait()
    }
}

/// The sender loop (see the module docs). A bug that panics must not kill
/// the thread every caller depends on: the records it held are failed and
/// it starts over with new connections.
fn run_sender(inner: &Inner, rx: &Receiver<Work>) {
    let mut sender = SenderState::new(inner);
    loop {
        match catch_unwind(AssertUnwindSafe(|| sender.step(rx))) {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => {
                log::error!("kafka-retry-producer panicked; failing the records it held");
                let open = sender.open;
                sender.abandon("kafka-retry-producer panicked while producing");
                sender = SenderState::new(inner);
                sender.open = open;
            }
        }
    }
}

type Tp = (String, i32);

/// What the sender thread keeps of a record besides the record itself.
struct Meta {
    reply: Reply,
    partition: i32,
    /// [`estimate`] of the record.
    size: usize,
    /// When the sender took it in; `delivery_timeout` counts from here.
    arrived: Instant,
    /// Failed attempts so far (retriable errors).
    failures: u32,
    /// Already resent once on a new connection after its connection broke,
    /// without counting a failure.
    reconnected: bool,
    /// See [`Job::batch`].
    batch: bool,
}

/// A record in the sender thread's hands.
struct Item {
    record: OutRecord,
    meta: Meta,
}

/// A record waiting out a retry back-off, with when it is due.
type Parked = (Instant, Item);

/// Records of one partition bound for one request. Records and their
/// metadata apart, so that the records can be encoded as one slice.
struct Chunk {
    tp: Tp,
    records: Vec<OutRecord>,
    metas: Vec<Meta>,
    bytes: usize,
}

/// A Produce request written and not yet answered.
struct Flight {
    sent: Sent<ProduceRequest>,
    chunks: Vec<Chunk>,
    /// Write order across all connections, to read the oldest reply first.
    seq: u64,
}

/// The producer's own connection to one broker (not the client's pool: its
/// requests interleave with no one else's).
#[derive(Default)]
struct Link {
    conn: Option<Connection>,
    /// Oldest first; the connection answers them in this order.
    flights: VecDeque<Flight>,
    /// When the last connection attempt failed: the next waits
    /// `retry_backoff` after it.
    last_failure: Option<Instant>,
}

/// The sender thread's state.
struct SenderState<'a> {
    inner: &'a Inner,
    config: &'a KafkaConfig,
    /// Records to write, oldest first (records due for a retry go in front).
    backlog: VecDeque<Item>,
    /// Sum of the estimates in `backlog`.
    backlog_bytes: usize,
    /// Records waiting out a retry back-off, with when they are due, in
    /// the order they failed.
    waiting: Vec<Parked>,
    /// Partitions with records in `waiting`: topic -> partition -> count.
    blocked: HashMap<String, HashMap<i32, usize>>,
    /// Topics whose metadata to refresh before their records are retried.
    stale: HashSet<String>,
    /// Per leader node id.
    links: HashMap<i32, Link>,
    /// Records held: in `backlog`, `waiting`, in flight or being handled.
    held: usize,
    /// Next request's write order.
    seq: u64,
    /// When the last reply was read: records that arrived before it had
    /// to wait anyway, so `linger` counts from here for them (callers just
    /// answered get their time to send again).
    last_reply: Option<Instant>,
    /// Partition counts, kept for one step.
    counts: HashMap<String, Result<i32>>,
    /// Whether callers may still queue records.
    open: bool,
}

impl<'a> SenderState<'a> {
    fn new(inner: &'a Inner) -> Self {
        SenderState {
            inner,
            config: inner.client.config(),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            waiting: Vec::new(),
            blocked: HashMap::new(),
            stale: HashSet::new(),
            links: HashMap::new(),
            held: 0,
            seq: 0,
            last_reply: None,
            counts: HashMap::new(),
            open: true,
        }
    }

    /// One turn of the loop: take in records, then write one request or
    /// read one reply or wait for a retry. `false` once the queue is closed
    /// and every record answered.
    fn step(&mut self, rx: &Receiver<Work>) -> bool {
        self.counts.clear();
        if self.held == 0 {
            if !self.open {
                return false;
            }
            match rx.recv() {
                Ok(work) => self.intake(work),
                Err(_) => {
                    self.open = false;
                    return false;
                }
            }
        }
        self.drain(rx);
        self.release_due();
        let in_flight = self.in_flight();
        if self.sendable() {
            if in_flight == 0 {
                self.linger(rx);
                self.send_some();
                return true;
            }
            // A full request, or nothing more is coming: every unanswered
            // record is in hand and came with a whole `send_batch` (the
            // rest of a big batch). Otherwise wait for a reply rather than
            // write a small request: an async caller may be about to add
            // more, and `send` callers just answered are waking up to.
            if self.backlog_bytes >= REQUEST_BYTES
                || (self.inner.unanswered.load(Ordering::SeqCst) <= self.held
                    && self.backlog.iter().all(|i| i.meta.batch))
            {
                self.send_some();
                return true;
            }
        }
        if in_flight > 0 {
            self.read_oldest();
            return true;
        }
        // Only parked records (and records blocked behind them): wait for
        // the first to be due, taking in new records meanwhile.
        match self.waiting.iter().map(|(d, _)| *d).min() {
            Some(due) if self.open => match rx.recv_deadline(due) {
                Ok(work) => self.intake(work),
                Err(RecvTimeoutError::Disconnected) => self.open = false,
                Err(RecvTimeoutError::Timeout) => {}
            },
            Some(due) => thread::sleep(due.saturating_duration_since(Instant::now())),
            None => {
                // Nothing held after all (`held` is off: a bug). Never spin.
                log::error!(
                    "kafka-retry-producer: {} record(s) counted but not held",
                    self.held
                );
                self.held = 0;
            }
        }
        true
    }

    /// Takes in what is queued, without blocking, until a request's worth
    /// is on hand.
    fn drain(&mut self, rx: &Receiver<Work>) {
        while self.open && self.backlog_bytes < REQUEST_BYTES {
            match rx.try_recv() {
                Ok(work) => self.intake(work),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.open = false,
            }
        }
    }

    /// With nothing in flight: waits for more records until a request is
    /// full, `linger` has passed since the oldest queued record arrived (or
    /// since the last reply, if later), or every unanswered record is in
    /// hand.
    fn linger(&mut self, rx: &Receiver<Work>) {
        let Some(oldest) = self.backlog.iter().map(|i| i.meta.arrived).min() else {
            return;
        };
        let start = self.last_reply.map_or(oldest, |t| t.max(oldest));
        let deadline = start + self.config.linger;
        while self.open && self.backlog_bytes < REQUEST_BYTES {
            // Every unanswered record is in hand: its caller is blocked, so
            // no one else is about to add one; stop lingering. While this
            // thread runs only it lowers `unanswered` (a caller lowers it
            // only when the queue is gone), so the check cannot miss a record.
            if self.inner.unanswered.load(Ordering::SeqCst) <= self.held {
                break;
            }
            let work = match rx.try_recv() {
                Ok(w) => w,
                Err(TryRecvError::Disconnected) => {
                    self.open = false;
                    break;
                }
                Err(TryRecvError::Empty) => match rx.recv_deadline(deadline) {
                    Ok(w) => w,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.open = false;
                        break;
                    }
                },
            };
            self.intake(work);
        }
    }

    /// Picks each record's partition and queues it; a record that cannot
    /// have one is answered at once.
    fn intake(&mut self, work: Work) {
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

    fn intake_one(&mut self, job: Job, now: Instant) {
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
                    },
                });
            }
            Err(e) => {
                self.inner.unanswered.fetch_sub(1, Ordering::SeqCst);
                job.reply.complete(Err(e));
            }
        }
    }

    /// Answers records the thread holds (lowering the counts first: a
    /// caller that sends again right away is then counted once, by its new
    /// record).
    fn answer(&mut self, answers: Vec<(Reply, Result<Delivered>)>) {
        if answers.is_empty() {
            return;
        }
        self.held -= answers.len();
        self.inner
            .unanswered
            .fetch_sub(answers.len(), Ordering::SeqCst);
        for (reply, result) in answers {
            reply.complete(result);
        }
    }

    /// Answers every record of `metas` with (a copy of) `e`.
    fn fail_all(&mut self, metas: Vec<Meta>, e: &Error) {
        let answers = metas
            .into_iter()
            .map(|m| (m.reply, Err(e.clone())))
            .collect();
        self.answer(answers);
    }

    fn is_blocked(&self, topic: &str, partition: i32) -> bool {
        self.blocked
            .get(topic)
            .is_some_and(|ps| ps.contains_key(&partition))
    }

    /// Whether `backlog` holds a record not blocked behind parked ones.
    fn sendable(&self) -> bool {
        if self.blocked.is_empty() {
            return !self.backlog.is_empty();
        }
        self.backlog
            .iter()
            .any(|i| !self.is_blocked(&i.record.topic, i.meta.partition))
    }

    fn in_flight(&self) -> usize {
        self.links.values().map(|l| l.flights.len()).sum()
    }

    /// Takes up to a request's worth of records from the front of `backlog`
    /// (at least one), skipping blocked partitions, order kept.
    fn take_request(&mut self) -> Vec<Item> {
        let mut taken: Vec<Item> = Vec::new();
        let mut bytes = 0;
        let mut skipped: Vec<Item> = Vec::new();
        while let Some(item) = self.backlog.pop_front() {
            if !self.blocked.is_empty() && self.is_blocked(&item.record.topic, item.meta.partition)
            {
                skipped.push(item);
                continue;
            }
            if !taken.is_empty() && bytes + item.meta.size > REQUEST_BYTES {
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
    fn send_some(&mut self) {
        let items = self.take_request();
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
        let by_tp: Vec<(Tp, Vec<usize>)> = by_tp
            .into_iter()
            .map(|((t, p), indices)| ((t.to_string(), p), indices))
            .collect();
        let mut slots: Vec<Option<Item>> = items.into_iter().map(Some).collect();
        // Leader -> partitions -> size-bounded chunks.
        let mut by_leader: BTreeMap<i32, Vec<Vec<Chunk>>> = BTreeMap::new();
        for (tp, indices) in by_tp {
            let group = indices.iter().filter_map(|&i| slots[i].take());
            match self.inner.client.leader(&tp.0, tp.1) {
                Ok(leader) => {
                    let mut chunks: Vec<Chunk> = Vec::new();
                    for item in group {
                        let fits = chunks
                            .last()
                            .is_some_and(|c| c.bytes + item.meta.size <= chunk_limit);
                        if !fits {
                            chunks.push(Chunk {
                                tp: tp.clone(),
                                records: Vec::new(),
                                metas: Vec::new(),
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
            for request in plan_requests(partitions, REQUEST_BYTES) {
                self.send_request(leader, request);
            }
        }
    }

    /// Encodes and writes one Produce request to `leader`, first reading
    /// the oldest reply there if `max_in_flight` requests are unanswered.
    fn send_request(&mut self, leader: i32, chunks: Vec<Chunk>) {
        let max = self.config.max_in_flight.max(1);
        while self
            .links
            .get(&leader)
            .is_some_and(|l| l.flights.len() >= max)
        {
            self.read_reply(leader);
        }
        let link = self.links.entry(leader).or_default();
        if link.conn.is_none() {
            if let Some(t) = link.last_failure {
                let wait = self.config.retry_backoff.saturating_sub(t.elapsed());
                if !wait.is_zero() {
                    thread::sleep(wait);
                }
            }
            match self.inner.client.connect_node(leader) {
                Ok(c) => {
                    link.conn = Some(c);
                    link.last_failure = None;
                }
                Err(e) => {
                    link.last_failure = Some(Instant::now());
                    for chunk in chunks {
                        self.fail_or_retry(&chunk.tp, chunk.records, chunk.metas, e.clone());
                    }
                    return;
                }
            }
        }

        let now = now_ms();
        let mut topics: BTreeMap<String, Vec<PartitionProduceData>> = BTreeMap::new();
        let mut sent: Vec<Chunk> = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            match encode_batch(&chunk.records, now, codec(self.config.compression)) {
                Ok(batch) => {
                    let mut pd = PartitionProduceData::default();
                    pd.index = chunk.tp.1;
                    pd.records = Some(batch);
                    topics.entry(chunk.tp.0.clone()).or_default().push(pd);
                    sent.push(chunk);
                }
                Err(e) => self.fail_all(chunk.metas, &e),
            }
        }
        if sent.is_empty() {
            return;
        }
        let mut req = ProduceRequest::default();
        req.acks = self.config.acks.wire();
        req.timeout_ms = i32::try_from(self.config.request_timeout.as_millis()).unwrap_or(i32::MAX);
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
        let timeout = self.config.request_timeout + self.config.request_timeout / 2;
        let link = self.links.entry(leader).or_default();
        let result = match link.conn.as_mut() {
            Some(conn) => conn
                .version(ApiKey::Produce)
                .and_then(|v| conn.send(v, &req, timeout)),
            None => Err(Error::Protocol("producer connection missing (bug)".into())),
        };
        drop(req);
        match result {
            Ok(s) => {
                self.seq += 1;
                link.flights.push_back(Flight {
                    sent: s,
                    chunks: sent,
                    seq: self.seq,
                });
            }
            Err(e) => {
                if link.conn.as_ref().is_some_and(Connection::is_broken) {
                    // Whatever was in flight on it is lost with it.
                    let mut lost: Vec<Chunk> = self.break_link(leader);
                    lost.extend(sent);
                    self.connection_failed(lost, &e);
                } else {
                    for chunk in sent {
                        self.fail_or_retry(&chunk.tp, chunk.records, chunk.metas, e.clone());
                    }
                }
            }
        }
    }

    /// Drops `leader`'s connection; returns the chunks of every request
    /// that was in flight on it, oldest first.
    fn break_link(&mut self, leader: i32) -> Vec<Chunk> {
        let Some(link) = self.links.get_mut(&leader) else {
            return Vec::new();
        };
        link.conn = None;
        link.flights.drain(..).flat_map(|f| f.chunks).collect()
    }

    /// Reads the oldest reply of all connections.
    fn read_oldest(&mut self) {
        let oldest = self
            .links
            .iter()
            .filter_map(|(&id, l)| l.flights.front().map(|f| (f.seq, id)))
            .min();
        if let Some((_, leader)) = oldest {
            self.read_reply(leader);
        }
    }

    /// Reads the oldest reply from `leader` and files it.
    fn read_reply(&mut self, leader: i32) {
        let Some(link) = self.links.get_mut(&leader) else {
            return;
        };
        let Some(flight) = link.flights.pop_front() else {
            return;
        };
        let result = match link.conn.as_mut() {
            Some(conn) => conn.receive(flight.sent),
            None => Err(Error::Protocol("producer connection missing (bug)".into())),
        };
        self.last_reply = Some(Instant::now());
        match result {
            Ok(resp) => self.file_response(&resp, flight.chunks),
            Err(e) => {
                let mut lost = flight.chunks;
                lost.extend(self.break_link(leader));
                self.connection_failed(lost, &e);
            }
        }
    }

    /// Files the chunks of requests lost with their connection: after an
    /// I/O error each record gets one immediate resend on a new connection
    /// (an idle connection the broker closed fails that way), then the
    /// usual retry rules apply.
    fn connection_failed(&mut self, chunks: Vec<Chunk>, e: &Error) {
        let mut resend: Vec<Item> = Vec::new();
        for chunk in chunks {
            let mut records = Vec::new();
            let mut metas = Vec::new();
            for (record, mut meta) in chunk.records.into_iter().zip(chunk.metas) {
                if matches!(e, Error::Io { .. }) && !meta.reconnected {
                    meta.reconnected = true;
                    resend.push(Item { record, meta });
                } else {
                    records.push(record);
                    metas.push(meta);
                }
            }
            if !metas.is_empty() {
                self.fail_or_retry(&chunk.tp, records, metas, e.clone());
            }
        }
        if !resend.is_empty() {
            log::debug!(
                "kafka: {e}; resending {} record(s) on a new connection",
                resend.len()
            );
        }
        for item in resend.into_iter().rev() {
            self.backlog_bytes += item.meta.size;
            self.backlog.push_front(item);
        }
    }

    fn file_response(&mut self, resp: &ProduceResponse, chunks: Vec<Chunk>) {
        for chunk in chunks {
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
                    self.fail_all(chunk.metas, &e);
                    continue;
                }
            };
            match part.error_code {
                0 => {
                    let base = part.base_offset;
                    let answers = chunk
                        .metas
                        .into_iter()
                        .enumerate()
                        .map(|(k, m)| {
                            let delivered = Delivered {
                                topic: topic.clone(),
                                partition: *partition,
                                offset: base + k as i64,
                            };
                            (m.reply, Ok(delivered))
                        })
                        .collect();
                    self.answer(answers);
                }
                code => {
                    let ctx = match &part.error_message {
                        Some(m) if !m.is_empty() => format!("{ctx} ({})", &**m),
                        _ => ctx,
                    };
                    log::debug!("kafka: {ctx}: {} ({code})", code_name(code));
                    self.fail_or_retry(
                        &chunk.tp,
                        chunk.records,
                        chunk.metas,
                        Error::kafka(ctx, code),
                    );
                }
            }
        }
    }

    /// Retriable errors (leader moves, timeouts, dropped connections) park
    /// the records for a retry unless they are out of retries or time; the
    /// rest are answered with `e`.
    fn fail_or_retry(&mut self, tp: &Tp, records: Vec<OutRecord>, metas: Vec<Meta>, e: Error) {
        let retriable = match &e {
            Error::Kafka { code, .. } => code.is_retriable(),
            Error::Io { .. } | Error::Timeout(_) => true,
            _ => false,
        };
        if !retriable {
            self.fail_all(metas, &e);
            return;
        }
        let mut answers = Vec::new();
        let refresh = match &e {
            Error::Kafka { code, .. } => needs_metadata_refresh(*code),
            _ => true,
        };
        let config = self.config;
        let now = Instant::now();
        let mut parked = 0;
        for (record, mut meta) in records.into_iter().zip(metas) {
            meta.failures += 1;
            let spent = meta.arrived.elapsed();
            if meta.failures > config.max_retries || spent >= config.delivery_timeout {
                answers.push((meta.reply, Err(e.clone())));
                continue;
            }
            // Exponential back-off up to 1 s (as KIP-580): a broker that is
            // failing over (KRaft fences it after ~9 s) is outlasted by the
            // default retries instead of failing fast.
            let backoff = config
                .retry_backoff
                .saturating_mul(1 << (meta.failures - 1).min(10))
                .min(config.retry_backoff.max(Duration::from_secs(1)))
                .min(config.delivery_timeout.saturating_sub(spent));
            self.waiting.push((now + backoff, Item { record, meta }));
            parked += 1;
        }
        if parked > 0 {
            log::debug!(
                "kafka: {e}; retrying {parked} record(s) of {}-{}",
                tp.0,
                tp.1
            );
            *self
                .blocked
                .entry(tp.0.clone())
                .or_default()
                .entry(tp.1)
                .or_default() += parked;
            if refresh {
                self.stale.insert(tp.0.clone());
            }
        }
        self.answer(answers);
    }

    /// Moves parked records whose back-off has passed to the front of the
    /// backlog, after a metadata refresh of their topics where needed; a
    /// topic the broker now says is gone fails with UnknownTopic instead of
    /// burning the retries.
    fn release_due(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let now = Instant::now();
        if !self.waiting.iter().any(|(due, _)| *due <= now) {
            return;
        }
        let (due, later): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(due, _)| *due <= now);
        self.waiting = later;
        let mut topics: Vec<String> = due
            .iter()
            .map(|(_, i)| &i.record.topic)
            .filter(|t| self.stale.contains(*t))
            .cloned()
            .collect::<HashSet<String>>()
            .into_iter()
            .collect();
        topics.sort();
        let states = if topics.is_empty() {
            HashMap::new()
        } else {
            for t in &topics {
                self.stale.remove(t);
            }
            // One attempt: the parking is the retry loop.
            self.inner
                .client
                .fetch_metadata_once(&topics)
                .unwrap_or_default()
        };
        let mut answers = Vec::new();
        let mut ready = Vec::new();
        for (_, item) in due {
            let topic = &item.record.topic;
            if let Some(ps) = self.blocked.get_mut(topic) {
                if let Some(n) = ps.get_mut(&item.meta.partition) {
                    *n -= 1;
                    if *n == 0 {
                        ps.remove(&item.meta.partition);
                    }
                }
                if ps.is_empty() {
                    self.blocked.remove(topic);
                }
            }
            if states.get(topic) == Some(&TopicState::Missing) {
                answers.push((item.meta.reply, Err(Error::UnknownTopic(topic.clone()))));
            } else {
                ready.push(item);
            }
        }
        for item in ready.into_iter().rev() {
            self.backlog_bytes += item.meta.size;
            self.backlog.push_front(item);
        }
        self.answer(answers);
    }

    /// Answers every record held with an error (after a panic).
    fn abandon(&mut self, why: &str) {
        let mut replies: Vec<Reply> = Vec::new();
        replies.extend(self.backlog.drain(..).map(|i| i.meta.reply));
        replies.extend(self.waiting.drain(..).map(|(_, i)| i.meta.reply));
        for link in self.links.values_mut() {
            for flight in link.flights.drain(..) {
                for chunk in flight.chunks {
                    replies.extend(chunk.metas.into_iter().map(|m| m.reply));
                }
            }
        }
        // Records dropped while unwinding answered themselves (a dropped
        // Completer answers with an error) but are still counted in `held`.
        self.inner.unanswered.fetch_sub(self.held, Ordering::SeqCst);
        self.held = 0;
        for reply in replies {
            reply.complete(Err(Error::Thread(why.to_string())));
        }
    }
}

impl Inner {
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
            Err(e) => return Err(e.clone()),
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
                    None => Err(Error::UnknownTopic(r.topic.clone())),
                }
            }
            Partitioning::Default => match &r.key {
                Some(key) => Ok(partition_for_key(key, n)),
                None => Ok((self.next.fetch_add(1, Ordering::Relaxed) % n as u32) as i32),
            },
        }
    }
}

/// Splits each leader's partitions into requests: the k-th chunk of every
/// partition goes to the k-th request (one batch per partition per request),
/// and a request closes when it would pass `max_bytes`.
fn plan_requests(partitions: Vec<Vec<Chunk>>, max_bytes: usize) -> Vec<Vec<Chunk>> {
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

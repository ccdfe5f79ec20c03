//! The in-process broker: topics, partitions, offsets, headers and consumer
//! groups with Kafka's classic (eager) rebalance protocol.
//!
//! # Design note: locks and wake-ups
//!
//! - `Inner::topics` (`RwLock`) maps names to topics; each topic has its
//!   partitions (`RwLock<Vec<_>>`, written only to add partitions) and each
//!   partition its own `Mutex<Log>` (segments of records) plus an atomic `end`
//!   (= log length) so "is there data?" needs no lock. Producers of different
//!   partitions never contend.
//! - Each group has one `Mutex<GroupState>`. Each member has a [`WakeFlag`]
//!   (a sticky "something happened" flag with its own `Condvar`) and blocks
//!   on it, never on the group lock, so producers never touch group locks.
//! - Group changes (rebalance started, generation formed, eviction) raise
//!   every member's signal while holding the group lock. Producers raise the
//!   signals registered in the topic's waiter list.
//! - Lock order: group state → topic waiters → signal. Producers take a
//!   partition lock and release it before taking any other lock.
//! - No lost wake-up: a polling member first lowers its signal, then checks
//!   the group state and, under the group lock, registers in the topic's
//!   waiter list (`waiter_count += 1`, SeqCst) and re-reads the partitions'
//!   `end` (SeqCst) before waiting. A producer stores `end` (SeqCst) then
//!   reads `waiter_count` (SeqCst). In the single total order of SeqCst
//!   operations one of the two sees the other: either the member sees the
//!   record, or the producer sees the registration and raises the signal
//!   after the member lowered it, so the wait returns at once. The flag is
//!   sticky, so a raise that lands before the wait starts is not lost, and a
//!   raised flag lets later producers skip the notification entirely.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use bytes::Bytes;

use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::partitioner::partition_for_key;
use crate::record::{Delivered, OutRecord, Partitioning, Record, TopicPartition};
use crate::transport::{Consumer, ConsumerConfig, Producer, Reader, Transport};

mod consumer;
mod group;
mod reader;
mod stored;

use consumer::MemoryConsumer;
use group::Group;
use stored::{Fields, Log, Stored};

/// Most partitions one topic may have (a guard against allocating the
/// machine away on a typo).
const MAX_PARTITIONS: i32 = 100_000;

// Our code never panics while holding a lock, but a user thread could be
// killed inside a call; the data is still consistent, so ignore poisoning.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// An in-process, thread-safe broker with Kafka's semantics: topics with
/// partitions, offsets from 0, headers (duplicates and null values kept),
/// Java's default partitioner, and consumer groups with committed offsets
/// and both rebalance protocols: cooperative-sticky (the default) and range
/// with eager rebalances.
///
/// Cloning is cheap and every clone is the same broker. Nothing is persisted:
/// the data lives as long as the last clone (and consumers and producers,
/// which hold a reference).
///
/// Differences from Kafka: no retention (every record stays until the broker
/// is dropped), no auto-creation of topics, and no session timeout: an
/// in-process member is alive until it is closed or dropped
/// ([`ConsumerConfig::session_timeout`] is ignored), except for a static
/// member ([`ConsumerConfig::group_instance_id`]) closed with
/// [`Consumer::close_for_restart`](crate::transport::Consumer::close_for_restart):
/// it keeps its place and partitions, unread, for its session timeout, and
/// a consumer with the same instance id within that time takes them over
/// without a rebalance (KIP-345). The rebalance timeout is
/// honoured: a member that does not poll within it during a rebalance is
/// evicted and sees [`ConsumerEvent::Lost`](crate::transport::ConsumerEvent::Lost).
///
/// ```
/// use std::time::Duration;
/// use kafka_retry::transport::{ConsumerConfig, ConsumerEvent, Transport};
/// use kafka_retry::{MemoryBroker, OutRecord};
///
/// let broker = MemoryBroker::new();
/// broker.create_topic("orders", 3)?;
/// broker.produce(OutRecord::new("orders").key("order-1").value("created"))?;
///
/// let mut consumer = broker.consumer(ConsumerConfig::new("billing", ["orders"]))?;
/// // The first poll joins the group; alone in it, this member gets every partition.
/// let event = consumer.poll(Duration::from_secs(1))?;
/// assert!(matches!(event, ConsumerEvent::Assigned(ref tps) if tps.len() == 3));
///
/// let ConsumerEvent::Records(records) = consumer.poll(Duration::from_secs(1))? else {
///     panic!("expected records");
/// };
/// assert_eq!(records[0].value.as_deref(), Some(&b"created"[..]));
///
/// // Commit the offset of the next record to read.
/// let r = &records[0];
/// consumer.commit(&[(r.topic_partition(), r.offset + 1)])?;
/// assert_eq!(broker.committed("billing", "orders", r.partition), Some(1));
/// # Ok::<(), kafka_retry::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

struct Inner {
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topics: BTreeMap<String, usize> = read(&self.topics)
            .iter()
            .map(|(name, t)| (name.clone(), read(&t.partitions).len()))
            .collect();
        let groups: BTreeSet<String> = lock(&self.groups).keys().cloned().collect();
        f.debug_struct("MemoryBroker")
            .field("topics", &topics)
            .field("groups", &groups)
            .finish()
    }
}

struct Topic {
    name: String,
    partitions: RwLock<Vec<Arc<Partition>>>,
    /// Next partition for a keyless record.
    round_robin: AtomicUsize,
    /// Signals of members blocked in `poll` on this topic, and their count,
    /// read without the lock by producers.
    waiters: Mutex<Vec<Arc<WakeFlag>>>,
    waiter_count: AtomicUsize,
}

struct Partition {
    log: Mutex<Log>,
    /// `log.len()`, for lock-free "is there data past my position?".
    end: AtomicI64,
}

impl Partition {
    fn new() -> Arc<Partition> {
        Arc::new(Partition {
            log: Mutex::new(Log::default()),
            end: AtomicI64::new(0),
        })
    }
}

impl Topic {
    fn new(name: &str, partitions: i32) -> Topic {
        Topic {
            name: name.to_string(),
            partitions: RwLock::new((0..partitions).map(|_| Partition::new()).collect()),
            round_robin: AtomicUsize::new(0),
            waiters: Mutex::new(Vec::new()),
            waiter_count: AtomicUsize::new(0),
        }
    }

    fn partition(&self, partition: i32) -> Result<Arc<Partition>> {
        let parts = read(&self.partitions);
        usize::try_from(partition)
            .ok()
            .and_then(|p| parts.get(p).cloned())
            .ok_or_else(|| no_such_partition(&self.name, parts.len(), partition))
    }

    /// The partition index (`< n`, the partition count) for a record:
    /// Java's default partitioner, or the explicit choice.
    fn pick(&self, n: usize, how: Partitioning, key: Option<&Bytes>) -> Result<usize> {
        let p = match how {
            Partitioning::Explicit(p) => p,
            Partitioning::Default => match key {
                // An empty key is a key: Java hashes it too.
                Some(k) => partition_for_key(k, n as i32),
                None => (self.round_robin.fetch_add(1, Ordering::Relaxed) % n.max(1)) as i32,
            },
        };
        usize::try_from(p)
            .ok()
            .filter(|&i| i < n)
            .ok_or_else(|| no_such_partition(&self.name, n, p))
    }

    fn add_waiter(&self, signal: &Arc<WakeFlag>) {
        let mut w = lock(&self.waiters);
        w.push(Arc::clone(signal));
        self.waiter_count.fetch_add(1, Ordering::SeqCst);
    }

    fn remove_waiter(&self, signal: &Arc<WakeFlag>) {
        let mut w = lock(&self.waiters);
        if let Some(i) = w.iter().position(|s| Arc::ptr_eq(s, signal)) {
            w.swap_remove(i);
            self.waiter_count.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Wakes members blocked in `poll` on this topic. Call after storing
    /// `end` (see the design note).
    fn wake(&self) {
        if self.waiter_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        for s in lock(&self.waiters).iter() {
            s.raise();
        }
    }
}

/// A member's wake-up flag: sticky until the member lowers it.
struct WakeFlag {
    raised: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
}

impl WakeFlag {
    fn new() -> Arc<WakeFlag> {
        Arc::new(WakeFlag {
            raised: AtomicBool::new(false),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        })
    }

    fn raise(&self) {
        // Already raised: the member has not looked yet and will see it.
        if self.raised.swap(true, Ordering::SeqCst) {
            return;
        }
        // The waiter checks `raised` under `lock`; taking it orders this
        // notify after that check.
        drop(lock(&self.lock));
        self.cond.notify_one();
    }

    fn lower(&self) {
        self.raised.store(false, Ordering::SeqCst);
    }

    /// Blocks until raised or `deadline` (`None`: no deadline) passes.
    fn wait(&self, deadline: Option<Instant>) {
        let mut guard = lock(&self.lock);
        while !self.raised.load(Ordering::SeqCst) {
            guard = match deadline {
                None => self.cond.wait(guard).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return;
                    }
                    self.cond
                        .wait_timeout(guard, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

fn no_such_partition(topic: &str, count: usize, partition: i32) -> Error {
    Error::config(
        "partition",
        format!("topic `{topic}` has {count} partitions, partition {partition} does not exist"),
    )
}

/// Kafka's topic name rules: 1-249 characters of `[a-zA-Z0-9._-]`, not `.`
/// or `..`.
fn validate_topic_name(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 249 || !ok_chars || name == "." || name == ".." {
        return Err(Error::config(
            "topic",
            format!("`{name}` is not a legal topic name (1-249 characters of [a-zA-Z0-9._-])"),
        ));
    }
    Ok(())
}

fn validate_partitions(partitions: i32) -> Result<()> {
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(Error::config(
            "partitions",
            format!("{partitions} is not between 1 and {MAX_PARTITIONS}"),
        ));
    }
    Ok(())
}

impl Inner {
    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        read(&self.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic(name.to_string()))
    }

    fn partition_count(&self, name: &str) -> Option<i32> {
        read(&self.topics)
            .get(name)
            .map(|t| read(&t.partitions).len() as i32)
    }

    fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        validate_topic_name(name)?;
        validate_partitions(partitions)?;
        {
            let mut topics = write(&self.topics);
            if topics.contains_key(name) {
                return Ok(());
            }
            topics.insert(name.to_string(), Arc::new(Topic::new(name, partitions)));
        }
        self.metadata_changed(name);
        Ok(())
    }

    fn create_partitions(&self, name: &str, total: i32) -> Result<()> {
        validate_partitions(total)?;
        let topic = self.topic(name)?;
        {
            let mut parts = write(&topic.partitions);
            let current = parts.len() as i32;
            if total <= current {
                return Err(Error::config(
                    "partitions",
                    format!("topic `{name}` has {current} partitions; {total} does not add any"),
                ));
            }
            parts.extend((current..total).map(|_| Partition::new()));
        }
        self.metadata_changed(name);
        Ok(())
    }

    /// A topic was created or grew: groups subscribed to it rebalance (what
    /// Kafka's consumers do when their metadata refresh sees the change).
    fn metadata_changed(&self, topic: &str) {
        let groups: Vec<Arc<Group>> = lock(&self.groups).values().cloned().collect();
        let now = Instant::now();
        for g in groups {
            let mut st = lock(&g.state);
            if st
                .members
                .values()
                .any(|m| m.topics.iter().any(|t| t == topic))
            {
                st.start_rebalance(now, self);
            }
        }
    }

    fn produce(&self, record: OutRecord) -> Result<Delivered> {
        // Work under the read guards instead of cloning the `Arc`s: a
        // refcount bump per record would bounce the partition's cache line
        // (shared with its log lock and `end`) with the consumers.
        let topics = read(&self.topics);
        let topic = topics
            .get(record.topic.as_str())
            .ok_or_else(|| Error::UnknownTopic(record.topic.to_string()))?;
        let parts = read(&topic.partitions);
        let p = topic.pick(parts.len(), record.partitioning, record.key.as_ref())?;
        let Some(part) = parts.get(p) else {
            return Err(no_such_partition(&topic.name, parts.len(), p as i32));
        };
        // Copied into one buffer before the partition lock is taken.
        let stored = Stored::new(
            record.timestamp.unwrap_or_else(now_ms),
            record.key,
            record.value,
            record.headers,
        );
        let offset = {
            let mut log = lock(&part.log);
            let offset = log.len() as i64;
            log.push(stored);
            part.end.store(offset + 1, Ordering::SeqCst);
            offset
        };
        drop(parts);
        topic.wake();
        Ok(Delivered {
            topic: record.topic,
            partition: p as i32,
            offset,
        })
    }

    fn produce_batch(&self, records: Vec<OutRecord>) -> Vec<Result<Delivered>> {
        let now = now_ms();
        let mut results: Vec<Option<Result<Delivered>>> = Vec::with_capacity(records.len());
        results.resize_with(records.len(), || None);
        // The batch's distinct topics with their partition counts (looked up
        // once), and per record (topic index, partition, input index).
        let mut topics: Vec<(Arc<Topic>, usize)> = Vec::new();
        let mut targets: Vec<(usize, usize, usize)> = Vec::with_capacity(records.len());
        {
            let map = read(&self.topics);
            let mut last = usize::MAX;
            for (i, rec) in records.iter().enumerate() {
                let known = match topics.get(last) {
                    Some((t, _)) if t.name == rec.topic => Some(last),
                    _ => topics.iter().position(|(t, _)| t.name == rec.topic),
                };
                let ti = match known {
                    Some(ti) => ti,
                    None => match map.get(rec.topic.as_str()) {
                        Some(t) => {
                            topics.push((Arc::clone(t), read(&t.partitions).len()));
                            topics.len() - 1
                        }
                        None => {
                            results[i] = Some(Err(Error::UnknownTopic(rec.topic.to_string())));
                            continue;
                        }
                    },
                };
                last = ti;
                let (topic, n) = &topics[ti];
                match topic.pick(*n, rec.partitioning, rec.key.as_ref()) {
                    Ok(p) => targets.push((ti, p, i)),
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
        }
        // Sorting groups records by partition; the input index in the key
        // keeps input order (hence offset order) inside a partition. Each
        // partition is then locked once.
        targets.sort_unstable();
        let mut records: Vec<Option<OutRecord>> = records.into_iter().map(Some).collect();
        let mut k = 0;
        while k < targets.len() {
            let (ti, p, _) = targets[k];
            let end = targets[k..]
                .iter()
                .position(|&(t, q, _)| (t, q) != (ti, p))
                .map_or(targets.len(), |e| k + e);
            let run = &targets[k..end];
            k = end;
            let part = match topics[ti].0.partition(p as i32) {
                Ok(part) => part,
                Err(e) => {
                    // Unreachable: partitions never shrink. Report, no panic.
                    for &(_, _, i) in run {
                        results[i] = Some(Err(Error::Protocol(e.to_string())));
                    }
                    continue;
                }
            };
            // Copied into one buffer for the run before the partition
            // lock is taken (see stored.rs).
            let (placed, fields): (Vec<(usize, crate::record::Topic)>, Vec<Fields>) = run
                .iter()
                .filter_map(|&(_, _, i)| {
                    let rec = records[i].take()?;
                    let fields = Fields {
                        timestamp: rec.timestamp.unwrap_or(now),
                        key: rec.key,
                        value: rec.value,
                        headers: rec.headers,
                    };
                    Some(((i, rec.topic), fields))
                })
                .unzip();
            let stored = Stored::all(fields);
            let mut log = lock(&part.log);
            for ((i, topic), stored) in placed.into_iter().zip(stored) {
                let offset = log.len() as i64;
                log.push(stored);
                results[i] = Some(Ok(Delivered {
                    topic,
                    partition: p as i32,
                    offset,
                }));
            }
            part.end.store(log.len() as i64, Ordering::SeqCst);
        }
        for (t, _) in &topics {
            t.wake();
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Protocol("record was not sent".into()))))
            .collect()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker::new()
    }
}

impl MemoryBroker {
    /// An empty broker: no topics, no groups.
    ///
    /// ```
    /// let broker = kafka_retry::MemoryBroker::new();
    /// assert!(broker.topics().is_empty());
    /// ```
    pub fn new() -> Self {
        MemoryBroker {
            inner: Arc::new(Inner {
                topics: RwLock::new(HashMap::new()),
                groups: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Creates `topic` with `partitions` partitions. A topic that already
    /// exists is success and keeps its partitions (like Kafka's
    /// `TOPIC_ALREADY_EXISTS`, which callers treat as done).
    ///
    /// Errors: [`Error::Config`] for a partition count outside
    /// 1..=100000 or a name Kafka would refuse (1-249 of `[a-zA-Z0-9._-]`).
    /// Groups subscribed to the topic rebalance to pick it up.
    ///
    /// ```
    /// let broker = kafka_retry::MemoryBroker::new();
    /// broker.create_topic("orders", 3)?;
    /// broker.create_topic("orders", 5)?; // exists: unchanged
    /// assert_eq!(broker.end_offset("orders", 2)?, 0);
    /// assert!(broker.create_topic("bad", 0).is_err());
    /// # Ok::<(), kafka_retry::Error>(())
    /// ```
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        self.inner.create_topic(topic, partitions)
    }

    /// Grows `topic` to `total` partitions, like Kafka's CreatePartitions.
    /// Groups subscribed to it rebalance. Keyed records may map to other
    /// partitions afterwards, as on Kafka.
    ///
    /// Errors: [`Error::UnknownTopic`]; [`Error::Config`] if `total` does not
    /// add partitions.
    ///
    /// ```
    /// let broker = kafka_retry::MemoryBroker::new();
    /// broker.create_topic("orders", 2)?;
    /// broker.create_partitions("orders", 4)?;
    /// assert_eq!(broker.end_offset("orders", 3)?, 0);
    /// # Ok::<(), kafka_retry::Error>(())
    /// ```
    pub fn create_partitions(&self, topic: &str, total: i32) -> Result<()> {
        self.inner.create_partitions(topic, total)
    }

    /// Writes one record, as a [`Producer`] would, and returns where it went.
    ///
    /// Keyed records with [`Partitioning::Default`] go to
    /// [`partition_for_key`](crate::transport::partition_for_key); keyless ones are
    /// spread round-robin. Errors: [`Error::UnknownTopic`] (topics are never
    /// created implicitly), [`Error::Config`] for an explicit partition that
    /// does not exist.
    ///
    /// ```
    /// use kafka_retry::{MemoryBroker, OutRecord};
    /// let broker = MemoryBroker::new();
    /// broker.create_topic("orders", 1)?;
    /// let d = broker.produce(OutRecord::new("orders").value("a"))?;
    /// assert_eq!((d.partition, d.offset), (0, 0));
    /// assert!(broker.produce(OutRecord::new("nope")).is_err());
    /// # Ok::<(), kafka_retry::Error>(())
    /// ```
    pub fn produce(&self, record: OutRecord) -> Result<Delivered> {
        self.inner.produce(record)
    }

    /// Every record of a partition, from offset 0.
    ///
    /// ```
    /// use kafka_retry::{MemoryBroker, OutRecord};
    /// let broker = MemoryBroker::new();
    /// broker.create_topic("orders", 1)?;
    /// broker.produce(OutRecord::new("orders").value("a"))?;
    /// let records = broker.records("orders", 0)?;
    /// assert_eq!(records[0].value.as_deref(), Some(&b"a"[..]));
    /// # Ok::<(), kafka_retry::Error>(())
    /// ```
    pub fn records(&self, topic: &str, partition: i32) -> Result<Vec<Record>> {
        let part = self.inner.topic(topic)?.partition(partition)?;
        let log = lock(&part.log);
        let topic = crate::record::Topic::from(topic);
        Ok(log
            .range(0, log.len())
            .enumerate()
            .map(|(offset, s)| s.to_record(&topic, partition, offset as i64))
            .collect())
    }

    /// The offset the next record of the partition will get.
    ///
    /// ```
    /// let broker = kafka_retry::MemoryBroker::new();
    /// broker.create_topic("orders", 1)?;
    /// assert_eq!(broker.end_offset("orders", 0)?, 0);
    /// assert!(broker.end_offset("orders", 1).is_err());
    /// # Ok::<(), kafka_retry::Error>(())
    /// ```
    pub fn end_offset(&self, topic: &str, partition: i32) -> Result<i64> {
        let part = self.inner.topic(topic)?.partition(partition)?;
        let end = part.end.load(Ordering::SeqCst);
        Ok(end)
    }

    /// The offset `group` committed for a partition, if any. Committed
    /// offsets outlive the members that committed them.
    ///
    /// ```
    /// let broker = kafka_retry::MemoryBroker::new();
    /// assert_eq!(broker.committed("billing", "orders", 0), None);
    /// ```
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        let g = lock(&self.inner.groups).get(group).cloned()?;
        let st = lock(&g.state);
        st.committed
            .get(&TopicPartition::new(topic, partition))
            .copied()
    }

    /// Names of all topics, sorted.
    ///
    /// ```
    /// let broker = kafka_retry::MemoryBroker::new();
    /// broker.create_topic("b", 1)?;
    /// broker.create_topic("a", 1)?;
    /// assert_eq!(broker.topics(), ["a", "b"]);
    /// # Ok::<(), kafka_retry::Error>(())
    /// ```
    pub fn topics(&self) -> Vec<String> {
        let mut names: Vec<String> = read(&self.inner.topics).keys().cloned().collect();
        names.sort();
        names
    }
}

impl Transport for MemoryBroker {
    /// [`ConsumerConfig::isolation_level`] changes nothing here: the memory
    /// broker has no transactions, so every record is committed and both
    /// levels read the same records.
    fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(MemoryConsumer::new(
            Arc::clone(&self.inner),
            config,
        )?))
    }

    fn producer(&self) -> Result<Arc<dyn Producer>> {
        Ok(Arc::new(MemoryProducer {
            broker: self.clone(),
        }))
    }

    /// `replication`, when given, must be at least 1; the memory broker has
    /// no replicas and ignores it otherwise.
    fn create_topic(&self, topic: &str, partitions: i32, replication: Option<i16>) -> Result<()> {
        if let Some(rf) = replication.filter(|&rf| rf < 1) {
            return Err(Error::config(
                "replication_factor",
                format!("{rf} is not at least 1"),
            ));
        }
        self.inner.create_topic(topic, partitions)
    }

    fn partition_count(&self, topic: &str) -> Result<Option<i32>> {
        Ok(self.inner.partition_count(topic))
    }

    fn reader(&self) -> Result<Box<dyn Reader>> {
        Ok(Box::new(reader::MemoryReader {
            inner: Arc::clone(&self.inner),
        }))
    }
}

/// The memory broker's producer: a record is stored before `send` returns.
#[derive(Debug)]
struct MemoryProducer {
    broker: MemoryBroker,
}

impl Producer for MemoryProducer {
    fn send(&self, record: OutRecord) -> Result<Delivered> {
        self.broker.inner.produce(record)
    }

    fn send_batch(&self, records: Vec<OutRecord>) -> Vec<Result<Delivered>> {
        self.broker.inner.produce_batch(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.retry_1-x").is_ok());
        for bad in ["", ".", "..", "a b", "ä", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}

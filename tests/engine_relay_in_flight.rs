//! The relay keeps several batches of due records written and unsettled
//! at once: while the broker sits on one relay write, the next due records
//! are queued behind it, so they go out together in the next request
//! instead of waiting a whole round trip per batch of 500. That holds for
//! records due with the held ones and for those falling due while the
//! write is held. And a relay behind on a backlog of due records still
//! returns to poll (and commit) between its writes.

#[macro_use]
mod forward;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_retry::transport::{Consumer, ConsumerConfig, ConsumerEvent, Producer, Transport};
use kafka_retry::{Delivered, Engine, MemoryBroker, OutRecord, Outcome, Record, RetryPolicy};

/// `n` records (key `k<i>`, value `<i>`) on a one-partition topic `t`.
fn topic_t(n: u64) -> MemoryBroker {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let records: Vec<OutRecord> = (0..n)
        .map(|i| {
            OutRecord::new("t")
                .key(format!("k{i}"))
                .value(i.to_string())
        })
        .collect();
    for r in broker.producer().unwrap().send_batch(records) {
        r.unwrap();
    }
    broker
}

/// Runs an engine (group `g` on `t`, 2 workers, the retry `interval`)
/// with `handler` over `transport` until all `n` records are done and
/// relayed, within `limit`, then shuts it down; asserts that they were.
fn run_until_relayed(
    transport: impl Transport,
    n: u64,
    interval: Duration,
    limit: Duration,
    handler: impl Fn(&Record) -> Outcome + Send + Sync + 'static,
) {
    let engine = Engine::builder(transport)
        .group_id("g")
        .topics(["t"])
        .workers(2)
        .policy(RetryPolicy::new(interval, Duration::from_secs(3600)))
        .handler(handler)
        .build()
        .unwrap();
    // `relayed` is counted once the relay settles a write, which may
    // come after the record's second delivery is done.
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let s = engine.stats();
        if s.done >= n && s.relayed >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!((s.done, s.relayed), (n, n), "{s:?}");
}

/// Retries a record on its first delivery, done on the next.
fn retry_once(r: &Record) -> Outcome {
    if r.header("retry.attempts").is_none() {
        Outcome::retry("later")
    } else {
        Outcome::Done
    }
}

/// A memory broker whose first write of relayed records (to the origin
/// topic `t`) is held before it is answered, until `due_all` after the
/// last of the `n` retry copies was written, so every record falls due
/// during the hold however long the first pass took. It records the most
/// origin records one `send_batch` carried.
#[derive(Clone)]
struct Slow {
    inner: MemoryBroker,
    n: u64,
    due_all: Duration,
    held_once: Arc<AtomicBool>,
    most_in_one_call: Arc<AtomicU64>,
    copies: Arc<AtomicU64>,
    last_copy_at: Arc<Mutex<Option<Instant>>>,
}

/// How long after its due time the last record still waits in the hold.
const MARGIN: Duration = Duration::from_millis(200);
/// The longest hold, should the copies not all be written by then.
const MAX_HOLD: Duration = Duration::from_secs(10);

impl Slow {
    /// `n` records on a one-partition topic `t`.
    fn new(n: u64, due_all: Duration) -> Slow {
        Slow {
            inner: topic_t(n),
            n,
            due_all: due_all + MARGIN,
            held_once: Arc::default(),
            most_in_one_call: Arc::default(),
            copies: Arc::default(),
            last_copy_at: Arc::default(),
        }
    }

    /// The hold of the first relay write. The copies are written long
    /// before the first is due (the first pass takes milliseconds), so
    /// none waits behind this in the engine's one writer thread.
    fn hold(&self) {
        let start = Instant::now();
        loop {
            let until = self.last_copy_at.lock().unwrap().map(|t| t + self.due_all);
            match until {
                Some(t) if Instant::now() >= t => return,
                _ if start.elapsed() >= MAX_HOLD => return,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Runs an engine with `handler` until all `n` are done, twice
    /// delivered; the most relayed records one write carried.
    fn run(
        &self,
        interval: Duration,
        handler: impl Fn(&Record) -> Outcome + Send + Sync + 'static,
    ) -> u64 {
        run_until_relayed(
            self.clone(),
            self.n,
            interval,
            Duration::from_secs(30),
            handler,
        );
        assert!(
            self.held_once.load(Ordering::SeqCst),
            "no relay write was held"
        );
        self.most_in_one_call.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for Slow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slow")
    }
}

impl Transport for Slow {
    fn consumer(&self, config: ConsumerConfig) -> kafka_retry::Result<Box<dyn Consumer>> {
        self.inner.consumer(config)
    }
    fn producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
        Ok(Arc::new(SlowProducer {
            inner: self.inner.producer()?,
            t: self.clone(),
        }))
    }
    forward_transport!(create_topic, partition_count, reader);
}

#[derive(Debug)]
struct SlowProducer {
    inner: Arc<dyn Producer>,
    t: Slow,
}

impl Producer for SlowProducer {
    fn send(&self, record: OutRecord) -> kafka_retry::Result<Delivered> {
        self.inner.send(record)
    }
    fn send_batch(&self, records: Vec<OutRecord>) -> Vec<kafka_retry::Result<Delivered>> {
        let relayed = records.iter().filter(|r| r.topic == "t").count() as u64;
        let copies = records.iter().filter(|r| r.topic == "g-retry").count() as u64;
        self.t.most_in_one_call.fetch_max(relayed, Ordering::SeqCst);
        let results = self.inner.send_batch(records);
        if copies > 0 && self.t.copies.fetch_add(copies, Ordering::SeqCst) + copies == self.t.n {
            *self.t.last_copy_at.lock().unwrap() = Some(Instant::now());
        }
        if relayed > 0 && !self.t.held_once.swap(true, Ordering::SeqCst) {
            self.t.hold();
        }
        results
    }
}

/// 3,000 records retried once, all due together: with one batch in flight
/// the call after the held one carried at most one batch (500); with
/// batches in flight, the backlog queued during the hold goes in one call.
#[test]
fn due_records_queue_behind_a_slow_relay_write() {
    let interval = Duration::from_millis(1500);
    let t = Slow::new(3_000, interval);
    let most = t.run(interval, retry_once);
    assert!(
        most > 500,
        "at most {most} relayed records in one write: the relay waited on each batch"
    );
}

/// 300 records due 1 s from the start, the other 1,500 at 2 s (the same
/// instant for all, give or take a millisecond): the first relay write
/// (the 300) is held past 2 s. The relay waits for its answer only until
/// the next record is due, so the 1,500 are popped and queued behind it
/// and go out in one call (with any early ones due after the first write)
/// once it is answered. A relay that waited out
/// the held write first popped them only afterwards, 500 at a time, each
/// batch taken by the writer as it came.
#[test]
fn records_falling_due_during_a_slow_relay_write_queue_behind_it() {
    let (early, late) = (300u64, 1_500u64);
    let t = Slow::new(early + late, Duration::from_secs(2));
    let start = Instant::now();
    let most = t.run(Duration::from_secs(1), move |r: &Record| {
        let at = |s| (start + Duration::from_secs(s)).saturating_duration_since(Instant::now());
        if r.header("retry.attempts").is_some() {
            Outcome::Done
        } else if r.offset < early as i64 {
            Outcome::retry_after(at(1), "early")
        } else {
            Outcome::retry_after(at(2), "late")
        }
    });
    // The early records due a millisecond after the first may be in it too.
    assert!(
        most >= late,
        "at most {most} relayed records in one write: the {late} due during the held write did \
         not go out together"
    );
}

/// A memory broker on which every write of relayed records (to `t`) takes
/// `hold` before it is answered; it notes when each such write started
/// and when the relay's consumer (of `g-retry`) was polled.
#[derive(Clone)]
struct Steady {
    inner: MemoryBroker,
    hold: Duration,
    writes: Arc<Mutex<Vec<Instant>>>,
    relay_polls: Arc<Mutex<Vec<Instant>>>,
}

impl fmt::Debug for Steady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Steady")
    }
}

impl Transport for Steady {
    fn consumer(&self, config: ConsumerConfig) -> kafka_retry::Result<Box<dyn Consumer>> {
        let relay = config.topics.iter().any(|t| t == "g-retry");
        let inner = self.inner.consumer(config)?;
        Ok(if relay {
            Box::new(PollLog {
                inner,
                polls: self.relay_polls.clone(),
            })
        } else {
            inner
        })
    }
    fn producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
        Ok(Arc::new(SteadyProducer {
            inner: self.inner.producer()?,
            t: self.clone(),
        }))
    }
    forward_transport!(create_topic, partition_count, reader);
}

#[derive(Debug)]
struct PollLog {
    inner: Box<dyn Consumer>,
    polls: Arc<Mutex<Vec<Instant>>>,
}

impl Consumer for PollLog {
    fn poll(&mut self, timeout: Duration) -> kafka_retry::Result<ConsumerEvent> {
        self.polls.lock().unwrap().push(Instant::now());
        self.inner.poll(timeout)
    }
    forward_consumer!(pause, resume, commit, assignment, close);
}

#[derive(Debug)]
struct SteadyProducer {
    inner: Arc<dyn Producer>,
    t: Steady,
}

impl Producer for SteadyProducer {
    fn send(&self, record: OutRecord) -> kafka_retry::Result<Delivered> {
        self.inner.send(record)
    }
    fn send_batch(&self, records: Vec<OutRecord>) -> Vec<kafka_retry::Result<Delivered>> {
        let relayed = records.iter().any(|r| r.topic == "t");
        if relayed {
            self.t.writes.lock().unwrap().push(Instant::now());
        }
        let results = self.inner.send_batch(records);
        if relayed {
            std::thread::sleep(self.t.hold);
        }
        results
    }
}

/// 40,000 records retried once, parked before the first falls due (1 s
/// after its copy) and falling due about as fast as the first pass wrote
/// them: far faster than the relay writes them (each of its writes takes
/// 200 ms), so it is behind from its first writes to its last. The relay
/// must still poll its consumer between those writes, to commit, park new
/// records and take part in a rebalance; one that kept writing while
/// anything was due polled only once the whole backlog was written.
#[test]
fn a_relay_behind_on_due_records_still_polls_between_writes() {
    let n = 40_000u64;
    let t = Steady {
        inner: topic_t(n),
        hold: Duration::from_millis(200),
        writes: Arc::default(),
        relay_polls: Arc::default(),
    };
    run_until_relayed(
        t.clone(),
        n,
        Duration::from_secs(1),
        Duration::from_secs(60),
        retry_once,
    );
    let writes = t.writes.lock().unwrap().clone();
    let polls = t.relay_polls.lock().unwrap().clone();
    // Skip the first writes (the relay may still be catching up with the
    // due times then) and the last (the backlog is gone).
    assert!(writes.len() >= 8, "{} relay writes", writes.len());
    let (from, to) = (writes[2], writes[writes.len() - 2]);
    let between = polls.iter().filter(|&&p| p > from && p < to).count();
    assert!(
        between >= 2,
        "{between} relay polls during {:?} of relay writes ({} writes): the relay did not poll \
         while behind",
        to - from,
        writes.len()
    );
}

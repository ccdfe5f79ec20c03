//! The relay keeps several batches of due records written and unsettled
//! at once: while the broker sits on one relay write, the next due records
//! are queued behind it, so they go out together in the next request
//! instead of waiting a whole round trip per batch of 500. That holds for
//! records due with the held ones and for those falling due while the
//! write is held.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_retry::transport::{Consumer, ConsumerConfig, Producer, Reader, Transport};
use kafka_retry::{Delivered, Engine, MemoryBroker, OutRecord, Outcome, Record, RetryPolicy};

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
        let inner = MemoryBroker::new();
        inner.create_topic("t", 1).unwrap();
        for i in 0..n {
            let record = OutRecord::new("t")
                .key(format!("k{i}"))
                .value(i.to_string());
            inner.produce(record).unwrap();
        }
        Slow {
            inner,
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
        let engine = Engine::builder(self.clone())
            .group_id("g")
            .topics(["t"])
            .workers(2)
            .policy(RetryPolicy::new(interval, Duration::from_secs(3600)))
            .handler(handler)
            .build()
            .unwrap();
        // `relayed` is counted once the relay settles a write, which may
        // come after the record's second delivery is done.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let s = engine.stats();
            if s.done >= self.n && s.relayed >= self.n {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let s = engine.stats();
        engine.shutdown(Duration::from_secs(5)).unwrap();
        assert_eq!((s.done, s.relayed), (self.n, self.n), "{s:?}");
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
    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        rf: Option<i16>,
    ) -> kafka_retry::Result<()> {
        Transport::create_topic(&self.inner, topic, partitions, rf)
    }
    fn partition_count(&self, topic: &str) -> kafka_retry::Result<Option<i32>> {
        self.inner.partition_count(topic)
    }
    fn reader(&self) -> kafka_retry::Result<Box<dyn Reader>> {
        Transport::reader(&self.inner)
    }
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
    let most = t.run(interval, |r: &Record| {
        if r.header("retry.attempts").is_none() {
            Outcome::retry("later")
        } else {
            Outcome::Done
        }
    });
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

//! The relay keeps several batches of due records written and unsettled
//! at once: while the broker sits on one relay write, the next due records
//! are queued behind it, so they go out together in the next request
//! instead of waiting a whole round trip per batch of 500.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_retry::transport::{Consumer, ConsumerConfig, Producer, Reader, Transport};
use kafka_retry::{Delivered, Engine, MemoryBroker, OutRecord, Outcome, Record, RetryPolicy};

/// A memory broker whose first write of relayed records (to the origin
/// topic `t`) is held for `HOLD` before it is answered; it records the
/// most origin records one `send_batch` carried.
#[derive(Clone)]
struct Slow {
    inner: MemoryBroker,
    held_once: Arc<AtomicBool>,
    most_in_one_call: Arc<AtomicU64>,
}

const HOLD: Duration = Duration::from_millis(500);

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
        self.t.most_in_one_call.fetch_max(relayed, Ordering::SeqCst);
        let results = self.inner.send_batch(records);
        if relayed > 0 && !self.t.held_once.swap(true, Ordering::SeqCst) {
            std::thread::sleep(HOLD);
        }
        results
    }
}

#[test]
fn due_records_queue_behind_a_slow_relay_write() {
    let inner = MemoryBroker::new();
    inner.create_topic("t", 1).unwrap();
    let t = Slow {
        inner,
        held_once: Arc::default(),
        most_in_one_call: Arc::default(),
    };
    let n: u64 = 3_000;
    for i in 0..n {
        t.inner
            .produce(
                OutRecord::new("t")
                    .key(format!("k{i}"))
                    .value(i.to_string()),
            )
            .unwrap();
    }
    // Every record is retried once; all fall due within a few
    // milliseconds of each other, well inside the held write.
    let engine = Engine::builder(t.clone())
        .group_id("g")
        .topics(["t"])
        .workers(2)
        .policy(RetryPolicy::new(
            Duration::from_millis(1500),
            Duration::from_secs(3600),
        ))
        .handler(|r: &Record| {
            if r.header("retry.attempts").is_none() {
                Outcome::retry("later")
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.stats().done < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!((s.done, s.relayed), (n, n), "{s:?}");
    assert!(
        t.held_once.load(Ordering::SeqCst),
        "no relay write was held"
    );
    // One batch at a time, the call after the held one carried at most
    // one batch (500); with batches in flight, the backlog queued during
    // the hold goes in one call.
    let most = t.most_in_one_call.load(Ordering::SeqCst);
    assert!(
        most > 500,
        "at most {most} relayed records in one write: the relay waited on each batch"
    );
}

//! The retry path's batched writes keep the acknowledgement rule: a record
//! whose handler asked for a retry is done (and its origin offset
//! committed) only once its retry-topic copy is acknowledged, however the
//! engine gathers the copies into batches.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_retry::transport::{Consumer, ConsumerConfig, Producer, Transport};
use kafka_retry::{
    Delivered, Engine, Error, MemoryBroker, OutRecord, Outcome, Record, RetryPolicy,
};

const RETRY_TOPIC: &str = "g-retry";

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A memory broker whose retry-topic writes land at once but whose
/// acknowledgements are held back while `hold` is set, and fail (the write
/// landed all the same: a lost acknowledgement) while `fail` is.
#[derive(Clone)]
struct Held {
    inner: MemoryBroker,
    hold: Arc<AtomicBool>,
    fail: Arc<AtomicBool>,
    /// Retry-topic writes made so far.
    writes: Arc<AtomicU64>,
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Held")
    }
}

impl Transport for Held {
    fn consumer(&self, config: ConsumerConfig) -> kafka_retry::Result<Box<dyn Consumer>> {
        self.inner.consumer(config)
    }
    fn producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
        Ok(Arc::new(HeldProducer {
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
}

#[derive(Debug)]
struct HeldProducer {
    inner: Arc<dyn Producer>,
    t: Held,
}

impl Producer for HeldProducer {
    fn send(&self, record: OutRecord) -> kafka_retry::Result<Delivered> {
        if record.topic != RETRY_TOPIC {
            return self.inner.send(record);
        }
        let delivered = self.inner.send(record)?;
        self.t.writes.fetch_add(1, Ordering::SeqCst);
        while self.t.hold.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(2));
        }
        if self.t.fail.load(Ordering::SeqCst) {
            return Err(Error::Timeout("acknowledgement lost".into()));
        }
        Ok(delivered)
    }
}

fn held() -> Held {
    let inner = MemoryBroker::new();
    inner.create_topic("t", 1).unwrap();
    Held {
        inner,
        hold: Arc::new(AtomicBool::new(false)),
        fail: Arc::new(AtomicBool::new(false)),
        writes: Arc::new(AtomicU64::new(0)),
    }
}

/// Every tenth record asks for a retry on its first delivery; the interval
/// is long, so nothing comes back during the test.
fn engine(t: &Held) -> Engine {
    Engine::builder(t.clone())
        .group_id("g")
        .topics(["t"])
        .workers(2)
        .commit_interval(Duration::from_millis(20))
        .policy(RetryPolicy::new(
            Duration::from_secs(600),
            Duration::from_secs(3600),
        ))
        .handler(|r: &Record| {
            if r.offset % 10 == 0 && r.header("retry.attempts").is_none() {
                Outcome::retry("later")
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap()
}

fn fill(t: &Held, n: u64) {
    for i in 0..n {
        t.inner
            .produce(
                OutRecord::new("t")
                    .key(format!("k{}", i % 7))
                    .value(i.to_string()),
            )
            .unwrap();
    }
}

#[test]
fn smoke() {
    let t = held();
    let engine = engine(&t);
    fill(&t, 20);
    assert!(wait_until(Duration::from_secs(10), || t
        .inner
        .committed("g", "t", 0)
        == Some(20)));
    let s = engine.stats();
    assert_eq!((s.done, s.retried), (18, 2), "{s:?}");
    assert_eq!(t.inner.end_offset(RETRY_TOPIC, 0).unwrap(), 2);
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

/// With the copies on the retry topic but their acknowledgements held
/// back, nothing at or past the first retried record is committed and
/// nothing counts as retried; released, everything is.
#[test]
fn held_acknowledgements_hold_the_commit() {
    let t = held();
    t.hold.store(true, Ordering::SeqCst);
    let n = 500;
    let engine = engine(&t);
    fill(&t, n);
    // Every record handled, every copy written (so the writer has sent
    // them all), none acknowledged.
    assert!(wait_until(Duration::from_secs(10), || {
        engine.stats().done == n - n / 10 && t.inner.end_offset(RETRY_TOPIC, 0).unwrap() >= 1
    }));
    std::thread::sleep(Duration::from_millis(300));
    let s = engine.stats();
    // Record 0 is retried: with its copy unacknowledged, offset 0 is the
    // watermark.
    let committed = t.inner.committed("g", "t", 0).unwrap_or(0);
    assert_eq!(committed, 0, "committed past an unacknowledged copy: {s:?}");
    assert_eq!(s.retried, 0, "{s:?}");
    t.hold.store(false, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(10), || t.inner.committed("g", "t", 0)
            == Some(n as i64)),
        "{:?}",
        engine.stats()
    );
    let s = engine.stats();
    assert_eq!((s.done, s.retried), (n - n / 10, n / 10), "{s:?}");
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

/// Failed acknowledgements (the copies landed, the answers were lost) do
/// not count: the records stay uncommitted and their copies are sent again
/// until one is acknowledged.
#[test]
fn failed_acknowledgements_are_sent_again() {
    let t = held();
    t.fail.store(true, Ordering::SeqCst);
    let n = 200;
    let engine = engine(&t);
    fill(&t, n);
    // A failed write is sent again by its worker (with backoff, before it
    // takes the next record): wait for some copies written twice.
    assert!(wait_until(Duration::from_secs(10), || {
        t.writes.load(Ordering::SeqCst) >= 10 && engine.stats().send_errors >= 10
    }));
    let s = engine.stats();
    assert_eq!(t.inner.committed("g", "t", 0).unwrap_or(0), 0, "{s:?}");
    assert_eq!(s.retried, 0, "{s:?}");
    t.fail.store(false, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(20), || t.inner.committed("g", "t", 0)
            == Some(n as i64)),
        "{:?}",
        engine.stats()
    );
    assert_eq!(engine.stats().retried, n / 10);
    // At least once: every retried record has a copy, some have more.
    let copies = t.inner.records(RETRY_TOPIC, 0).unwrap();
    let mut origins: Vec<i64> = copies.iter().filter_map(|r| r.origin_offset()).collect();
    origins.sort_unstable();
    origins.dedup();
    assert_eq!(origins, (0..n as i64).step_by(10).collect::<Vec<_>>());
    // A copy sent again is the same copy (the worker builds it again
    // rather than keeping it): key, value and every header but the
    // restamped `retry.enqueued-at` as the first time.
    let same = |r: &kafka_retry::Record| {
        let headers: Vec<_> = r
            .headers
            .iter()
            .filter(|h| &h.key[..] != kafka_retry::ENQUEUED_AT.as_bytes())
            .cloned()
            .collect();
        (r.key.clone(), r.value.clone(), headers)
    };
    let mut again = 0;
    for origin in &origins {
        let of: Vec<_> = copies
            .iter()
            .filter(|r| r.origin_offset() == Some(*origin))
            .collect();
        again += of.len() - 1;
        for c in &of[1..] {
            assert_eq!(same(c), same(of[0]), "copies of {origin}");
        }
    }
    assert!(again > 0, "no copy was sent twice");
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

/// A worker hands its retry copies to the writer together, but a slow
/// handler does not hold back the copy of a record before it in the same
/// batch: the copy of record 0 reaches the retry topic while the handler
/// is still busy with record 1 (it waits for that copy, up to 5 s).
#[test]
fn a_slow_handler_does_not_hold_back_an_earlier_copy() {
    let t = held();
    // Both records before the engine starts: one fetch, one job batch.
    fill(&t, 2);
    let saw = Arc::new(AtomicBool::new(false));
    let engine = {
        let inner = t.inner.clone();
        let saw = saw.clone();
        Engine::builder(t.clone())
            .group_id("g")
            .topics(["t"])
            .workers(1)
            .policy(RetryPolicy::new(
                Duration::from_secs(600),
                Duration::from_secs(3600),
            ))
            .handler(move |r: &Record| {
                if r.offset == 0 {
                    return Outcome::retry("later");
                }
                let landed = wait_until(Duration::from_secs(5), || {
                    inner.end_offset(RETRY_TOPIC, 0).unwrap_or(0) >= 1
                });
                saw.store(landed, Ordering::SeqCst);
                Outcome::Done
            })
            .build()
            .unwrap()
    };
    assert!(wait_until(Duration::from_secs(10), || t
        .inner
        .committed("g", "t", 0)
        == Some(2)));
    assert!(
        saw.load(Ordering::SeqCst),
        "record 0's copy waited for record 1's handler"
    );
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

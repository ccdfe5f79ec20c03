//! Hybrid parking in the relay (memory broker, and one smoke test on
//! Kafka): up to `max_parked` parked records are kept whole, the overflow
//! as index entries read again from the retry topic when due. Tests of the
//! index set a small `max_parked` and make the records they look at the
//! latest due, so those are the overflow.

#[macro_use]
mod forward;
#[cfg(feature = "kafka")]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_retry::transport::{Reader, Transport};
use kafka_retry::{
    Engine, EngineBuilder, MemoryBroker, OutRecord, Outcome, Record, RetryPolicy, Stats,
    TopicPartition,
};

/// The memory broker with a `Reader` that counts reads, notes the offset
/// each asks for and the values it returns, fails the next `fail` of them,
/// and hides the records whose value is in `hide` (as retention would).
#[derive(Debug, Clone)]
struct Wrap {
    inner: MemoryBroker,
    reads: Arc<AtomicU64>,
    read_from: Arc<Mutex<Vec<i64>>>,
    read_values: Arc<Mutex<Vec<String>>>,
    fail: Arc<AtomicU64>,
    hide: Arc<Mutex<Vec<String>>>,
}

impl Wrap {
    fn new() -> Wrap {
        Wrap {
            inner: MemoryBroker::new(),
            reads: Arc::default(),
            read_from: Arc::default(),
            read_values: Arc::default(),
            fail: Arc::default(),
            hide: Arc::default(),
        }
    }
}

#[derive(Debug)]
struct WrapReader {
    inner: Box<dyn Reader>,
    w: Wrap,
}

impl Transport for Wrap {
    forward_transport!(consumer, producer, create_topic, partition_count);
    fn reader(&self) -> kafka_retry::Result<Box<dyn Reader>> {
        Ok(Box::new(WrapReader {
            inner: self.inner.reader()?,
            w: self.clone(),
        }))
    }
}

impl Reader for WrapReader {
    fn read(
        &mut self,
        tp: &TopicPartition,
        offset: i64,
        max: usize,
        timeout: Duration,
    ) -> kafka_retry::Result<Vec<Record>> {
        self.w.reads.fetch_add(1, Ordering::SeqCst);
        self.w.read_from.lock().unwrap().push(offset);
        let failing = self
            .w
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(kafka_retry::Error::Protocol("injected read error".into()));
        }
        let hide = self.w.hide.lock().unwrap().clone();
        let mut records = self.inner.read(tp, offset, max, timeout)?;
        records.retain(|r| !hide.contains(&text(r)));
        self.w
            .read_values
            .lock()
            .unwrap()
            .extend(records.iter().map(text));
        Ok(records)
    }
    forward_reader!(partitions, offsets, committed);
}

fn builder(w: &Wrap, partitions: i32) -> EngineBuilder {
    w.inner.create_topic("t", partitions).unwrap();
    Engine::builder(w.clone())
        .group_id("g")
        .topics(["t"])
        .policy(RetryPolicy::new(
            Duration::from_millis(300),
            Duration::from_secs(7200),
        ))
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

fn produce(w: &Wrap, records: impl IntoIterator<Item = OutRecord>) {
    for r in w
        .inner
        .producer()
        .unwrap()
        .send_batch(records.into_iter().collect())
    {
        r.unwrap();
    }
}

fn attempts(r: &Record) -> u32 {
    r.header(kafka_retry::ATTEMPTS)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Value as text.
fn text(r: &Record) -> String {
    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
}

/// First delivery of record `i` (its value): retried, due in 300 + 100 × i
/// ms, so the higher values are the latest due. With `max_parked(1)` and
/// three records, "1" and "2" are past the whole part: indexed.
fn staggered(r: &Record) -> Outcome {
    let i: u64 = text(r).parse().unwrap();
    Outcome::retry_after(Duration::from_millis(300 + 100 * i), "later")
}

/// Keeps every record it sees in `seen`; a first attempt is retried
/// [`staggered`], a later one done.
fn keep_then_staggered(
    seen: Arc<Mutex<Vec<Record>>>,
) -> impl Fn(&Record) -> Outcome + Send + Sync + 'static {
    move |r: &Record| {
        seen.lock().unwrap().push(r.clone());
        if attempts(r) == 0 {
            staggered(r)
        } else {
            Outcome::Done
        }
    }
}

/// Three records, values "0" to "2".
fn three(key: bool) -> impl Iterator<Item = OutRecord> {
    (0..3).map(move |i| {
        let r = OutRecord::new("t")
            .value(i.to_string())
            .header("trace", "abc");
        if key {
            r.key(format!("k{i}"))
        } else {
            r
        }
    })
}

/// A retried record past the whole part comes back through the index
/// (read again from the retry topic) with its key, value and the caller's
/// headers intact.
#[test]
fn smoke_reread_keeps_key_value_and_headers() {
    let w = Wrap::new();
    let seen: Arc<Mutex<Vec<Record>>> = Arc::default();
    let s = seen.clone();
    let engine = builder(&w, 1)
        .max_parked(1)
        .handler(keep_then_staggered(s))
        .build()
        .unwrap();
    produce(&w, three(true));
    assert!(wait_until(Duration::from_secs(10), || {
        let s = engine.stats();
        (s.done, s.relayed) == (3, 3)
    }));
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(stats.relayed, 3, "{stats:?}");
    assert!(
        w.read_values.lock().unwrap().contains(&"2".to_string()),
        "the latest-due record was never read again"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 6);
    let again = seen
        .iter()
        .find(|r| text(r) == "2" && attempts(r) == 1)
        .expect("record 2 again");
    assert_eq!(again.key.as_deref(), Some(&b"k2"[..]));
    assert_eq!(again.value.as_deref(), Some(&b"2"[..]));
    let trace = again.header("trace").and_then(|h| h.value.as_deref());
    assert_eq!(trace, Some(&b"abc"[..]));
    // Both topics committed to their ends: the relayed copies were settled.
    assert_eq!(w.inner.committed("g-relay", "g-retry", 0), Some(3));
}

/// Below the whole budget (`max_parked`, 100,000 by default) parked records
/// are kept whole: nothing is read again from the retry topic.
#[test]
fn below_the_whole_budget_nothing_is_read_again() {
    let w = Wrap::new();
    let back = Arc::new(AtomicU64::new(0));
    let b = back.clone();
    let engine = builder(&w, 2)
        .handler(move |r: &Record| {
            if attempts(r) == 0 {
                Outcome::retry("once")
            } else {
                b.fetch_add(1, Ordering::SeqCst);
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    produce(
        &w,
        (0..50).map(|i| OutRecord::new("t").value(i.to_string())),
    );
    // The counters move once the writes are acknowledged, which the
    // handler may beat.
    let ok = wait_until(Duration::from_secs(10), || {
        let s = engine.stats();
        back.load(Ordering::SeqCst) == 50 && (s.relayed, s.parked) == (50, 0)
    });
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert!(ok, "{stats:?}");
    assert_eq!((stats.relayed, stats.parked), (50, 0), "{stats:?}");
    assert_eq!(w.reads.load(Ordering::SeqCst), 0, "read again: {stats:?}");
}

/// Past `max_parked` only the overflow, the latest due, is indexed: of 15
/// records due 10 ms apart with `max_parked` 10, only the last five are
/// read again, and each of the 15 comes back once.
#[test]
fn past_the_whole_budget_only_the_latest_due_are_indexed() {
    let w = Wrap::new();
    let again: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let a = again.clone();
    let engine = builder(&w, 1)
        .max_parked(10)
        // One worker: retry-topic offsets in the order of the values.
        .workers(1)
        .handler(move |r: &Record| {
            let id = text(r);
            if attempts(r) == 0 {
                let i: u64 = id.parse().unwrap();
                Outcome::retry_after(Duration::from_millis(1500 + 10 * i), "later")
            } else {
                *a.lock().unwrap().entry(id).or_default() += 1;
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    produce(
        &w,
        (0..15).map(|i| OutRecord::new("t").value(i.to_string())),
    );
    let ok = wait_until(Duration::from_secs(15), || {
        let s = engine.stats();
        again.lock().unwrap().len() == 15 && (s.relayed, s.parked) == (15, 0)
    });
    std::thread::sleep(Duration::from_millis(100)); // a duplicate would show by now
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert!(ok, "{stats:?}");
    assert!(again.lock().unwrap().values().all(|&c| c == 1), "{again:?}");
    let mut read = w.read_values.lock().unwrap().clone();
    read.sort_by_key(|v| v.parse::<u64>().unwrap());
    read.dedup();
    let overflow: Vec<String> = (10..15).map(|i: u64| i.to_string()).collect();
    assert_eq!(read, overflow, "read again (the whole ones must not be)");
    assert!(
        w.read_from.lock().unwrap().iter().all(|&o| o >= 10),
        "a read reached into the whole part: {:?}",
        w.read_from.lock().unwrap()
    );
    assert_eq!((stats.relayed, stats.parked), (15, 0), "{stats:?}");
    assert_eq!(w.inner.committed("g-relay", "g-retry", 0), Some(15));
}

/// With the whole part full of records due in an hour (more of them than
/// the relay's 20,000 of refill room, and past `max_parked`, so the latest
/// are indexed), a record due in 500 ms is relayed at its due time (not
/// early), before every far-due one (a paused relay would never read it).
#[test]
fn a_near_record_is_relayed_on_time_with_the_whole_part_full_of_far_ones() {
    const FAR: u64 = 30_000;
    let w = Wrap::new();
    let near_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let near_back: Arc<Mutex<Option<Duration>>> = Arc::default();
    let (na, nb) = (near_at.clone(), near_back.clone());
    let engine = builder(&w, 1)
        .max_parked(25_000)
        .handler(move |r: &Record| match (text(r).as_str(), attempts(r)) {
            ("far", _) => Outcome::retry_after(Duration::from_secs(3600), "later"),
            ("near", 0) => {
                *na.lock().unwrap() = Some(Instant::now());
                Outcome::retry_after(Duration::from_millis(500), "soon")
            }
            _ => {
                let at = na.lock().unwrap().expect("near seen first");
                *nb.lock().unwrap() = Some(at.elapsed());
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    produce(&w, (0..FAR).map(|_| OutRecord::new("t").value("far")));
    assert!(wait_until(Duration::from_secs(60), || {
        engine.stats().parked as u64 >= FAR
    }));
    produce(&w, [OutRecord::new("t").value("near")]);
    let back = wait_until(Duration::from_secs(10), || {
        near_back.lock().unwrap().is_some()
    });
    // The relay counts the write once acknowledged, the handler may see
    // the record first.
    wait_until(Duration::from_secs(5), || engine.stats().relayed == 1);
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10)).unwrap();
    assert!(
        back,
        "the near-due record waited behind far-due ones: {stats:?}"
    );
    let took = near_back.lock().unwrap().unwrap();
    assert!(took >= Duration::from_millis(500), "early: {took:?}");
    assert_eq!((stats.relayed, stats.parked as u64), (1, FAR), "{stats:?}");
}

/// With the whole part (max_parked = 1) and the index budget (100 x
/// max_parked = 100 entries) full of records due in an hour, a record due
/// in 500 ms is still relayed: nothing pauses, the far-due entries are the
/// ones evicted.
#[test]
fn no_head_of_line_blocking_with_the_budget_full() {
    let w = Wrap::new();
    let near_back = Arc::new(AtomicU64::new(0));
    let nb = near_back.clone();
    let engine = builder(&w, 1)
        .max_parked(1)
        .handler(move |r: &Record| match (text(r).as_str(), attempts(r)) {
            ("far", _) => Outcome::retry_after(Duration::from_secs(3600), "later"),
            ("near", 0) => Outcome::retry_after(Duration::from_millis(500), "soon"),
            _ => {
                nb.fetch_add(1, Ordering::SeqCst);
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    produce(&w, (0..400).map(|_| OutRecord::new("t").value("far")));
    assert!(wait_until(Duration::from_secs(10), || {
        let s = engine.stats();
        s.parked >= 400 && s.parked_unindexed > 0
    }));
    produce(&w, [OutRecord::new("t").value("near")]);
    let back = wait_until(Duration::from_secs(10), || {
        near_back.load(Ordering::SeqCst) == 1
    });
    wait_until(Duration::from_secs(5), || engine.stats().relayed == 1); // counted once acked
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert!(
        back,
        "the near-due record waited behind far-due ones: {stats:?}"
    );
    assert_eq!(stats.relayed, 1, "{stats:?}");
    assert_eq!(stats.parked, 400, "{stats:?}");
    assert!(stats.parked_unindexed >= 300, "{stats:?}");
}

/// Records evicted past the budget are read again by a rescan once there
/// is room, and each is handled again exactly once.
#[test]
fn evicted_records_come_back_once() {
    let w = Wrap::new();
    let n = 600u64;
    let again: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let a = again.clone();
    let engine = builder(&w, 2)
        .max_parked(1)
        .handler(move |r: &Record| {
            let id = text(r);
            if attempts(r) == 0 {
                // Due over 0.3-1.5 s, latest first in each partition, so the
                // evicted ones (latest due) sit low in the log.
                let i: u64 = id.parse().unwrap();
                Outcome::retry_after(Duration::from_millis(1500 - 2 * i), "later")
            } else {
                *a.lock().unwrap().entry(id).or_default() += 1;
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    let max_unindexed = Arc::new(AtomicU64::new(0));
    produce(
        &w,
        (0..n).map(|i| {
            OutRecord::new("t")
                .key(format!("k{i}"))
                .value(i.to_string())
        }),
    );
    let done = wait_until(Duration::from_secs(20), || {
        let s = engine.stats();
        max_unindexed.fetch_max(s.parked_unindexed as u64, Ordering::SeqCst);
        again.lock().unwrap().len() as u64 == n
    });
    std::thread::sleep(Duration::from_millis(300)); // a duplicate would show by now
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert!(
        done,
        "{} of {n} came back: {stats:?}",
        again.lock().unwrap().len()
    );
    assert!(
        max_unindexed.load(Ordering::SeqCst) > 0,
        "nothing was evicted"
    );
    assert!(
        again.lock().unwrap().values().all(|&c| c == 1),
        "a record came back twice"
    );
    assert_eq!(
        (stats.relayed, stats.parked, stats.parked_unindexed),
        (n, 0, 0)
    );
}

/// Failed re-reads are retried (with a back-off): the record is relayed
/// once the reader recovers, and not before it was read.
#[test]
fn read_errors_are_retried() {
    let w = Wrap::new();
    w.fail.store(3, Ordering::SeqCst);
    let back = Arc::new(AtomicU64::new(0));
    let b = back.clone();
    let engine = builder(&w, 1)
        .max_parked(1)
        .handler(move |r: &Record| {
            if attempts(r) == 0 {
                staggered(r)
            } else {
                b.fetch_add(1, Ordering::SeqCst);
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    produce(&w, three(false));
    let ok = wait_until(Duration::from_secs(15), || {
        back.load(Ordering::SeqCst) == 3 && engine.stats().relayed == 3
    });
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert!(ok, "{stats:?}");
    assert_eq!(w.fail.load(Ordering::SeqCst), 0, "the errors were not hit");
    assert!(w.reads.load(Ordering::SeqCst) >= 4);
    assert_eq!((stats.relayed, stats.parked_gone), (3, 0), "{stats:?}");
}

/// A parked (indexed) record gone from the log when due is counted and
/// settled; the others are relayed and the retry topic is committed past
/// it.
#[test]
fn a_gone_record_is_counted_and_settled() {
    let w = Wrap::new();
    // Past the whole part, indexed, and read with "2" after it (a read
    // finding nothing at all is taken for a transient answer). "1" and
    // "2" fall due together, so one refill always reads them in one go
    // (with due times 100 ms apart, whether a refill took both depended
    // on timing, and a read of "1" alone is retried forever).
    w.hide.lock().unwrap().push("1".into());
    let back = Arc::new(AtomicU64::new(0));
    let b = back.clone();
    // One worker writes the copies in value order, so "2" is at the
    // offset after "1" (with several, "1" could land last and be read
    // alone).
    let engine = builder(&w, 1)
        .workers(1)
        .max_parked(1)
        .handler(move |r: &Record| {
            if attempts(r) == 0 {
                let ms = if text(r) == "0" { 300 } else { 600 };
                Outcome::retry_after(Duration::from_millis(ms), "later")
            } else {
                b.fetch_add(1, Ordering::SeqCst);
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    produce(&w, three(false));
    let ok = wait_until(Duration::from_secs(10), || {
        let s = engine.stats();
        back.load(Ordering::SeqCst) == 2 && (s.parked_gone, s.relayed, s.parked) == (1, 2, 0)
    });
    let stats: Stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert!(ok, "{stats:?}");
    assert_eq!((stats.relayed, stats.parked), (2, 0), "{stats:?}");
    assert_eq!(w.inner.committed("g-relay", "g-retry", 0), Some(3));
}

/// On Kafka (the Tansu of `scripts/test`).
#[cfg(feature = "kafka")]
mod kafka {
    use super::*;
    use kafka_retry::{KafkaConfig, KafkaTransport};

    /// Any transport, with its `Reader`'s reads counted.
    #[derive(Debug, Clone)]
    struct Counted {
        inner: Arc<dyn Transport>,
        reads: Arc<AtomicU64>,
    }

    #[derive(Debug)]
    struct CountedReader {
        inner: Box<dyn Reader>,
        reads: Arc<AtomicU64>,
    }

    impl Transport for Counted {
        forward_transport!(consumer, producer, create_topic, partition_count);
        fn reader(&self) -> kafka_retry::Result<Box<dyn Reader>> {
            Ok(Box::new(CountedReader {
                inner: self.inner.reader()?,
                reads: self.reads.clone(),
            }))
        }
    }

    impl Reader for CountedReader {
        fn read(
            &mut self,
            tp: &TopicPartition,
            offset: i64,
            max: usize,
            timeout: Duration,
        ) -> kafka_retry::Result<Vec<Record>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.read(tp, offset, max, timeout)
        }
        forward_reader!(partitions, offsets, committed);
    }

    /// On Kafka (the Tansu of `scripts/test`): a retried record past the
    /// whole part (`max_parked` 1, the latest due of three) is read again
    /// from the retry topic by offset and comes back with its key, value and
    /// headers.
    #[test]
    fn kafka_smoke_reread_keeps_key_value_and_headers() {
        let config = KafkaConfig::new(common::kafka_bootstrap())
            .request_timeout(Duration::from_secs(10))
            .fetch_max_wait(Duration::from_millis(50));
        let kafka: Arc<dyn Transport> =
            Arc::new(KafkaTransport::connect(config).expect("connect to the test broker"));
        let t = common::unique("parking");
        kafka.create_topic(&t, 1, None).unwrap();
        let w = Counted {
            inner: kafka.clone(),
            reads: Arc::default(),
        };
        let seen: Arc<Mutex<Vec<Record>>> = Arc::default();
        let s = seen.clone();
        let engine = Engine::builder(w.clone())
            .group_id(common::unique("g"))
            .topics([t.as_str()])
            .session_timeout(Duration::from_secs(2))
            .commit_interval(Duration::from_millis(100))
            .policy(RetryPolicy::new(
                Duration::from_millis(500),
                Duration::from_secs(600),
            ))
            .max_parked(1)
            .handler(keep_then_staggered(s))
            .build()
            .unwrap();
        let records = (0..3)
            .map(|i| {
                OutRecord::new(t.as_str())
                    .key(format!("k{i}"))
                    .value(i.to_string())
                    .header("trace", "abc")
            })
            .collect();
        for r in kafka.producer().unwrap().send_batch(records) {
            r.unwrap();
        }
        let done = wait_until(Duration::from_secs(30), || engine.stats().done == 3);
        let stats = engine.stats();
        engine.shutdown(Duration::from_secs(10)).unwrap();
        assert!(done, "{stats:?}");
        assert_eq!(stats.relayed, 3, "{stats:?}");
        assert!(w.reads.load(Ordering::SeqCst) >= 1, "never read again");
        let seen = seen.lock().unwrap();
        let again = seen
            .iter()
            .find(|r| text(r) == "2" && attempts(r) == 1)
            .expect("record 2 again");
        assert_eq!(again.key.as_deref(), Some(&b"k2"[..]));
        assert_eq!(again.value.as_deref(), Some(&b"2"[..]));
        let trace = again.header("trace").and_then(|h| h.value.as_deref());
        assert_eq!(trace, Some(&b"abc"[..]));
        assert_eq!(attempts(again), 1);
    }
}

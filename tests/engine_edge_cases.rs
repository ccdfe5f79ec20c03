//! Engine edge cases found in review: slow records of another partition,
//! enqueued-at after the handler, huge durations. Each asserts the right
//! behaviour (each failed before its fix).

mod scenarios;

use std::time::Duration;

use kafka_retry::{Engine, MemoryBroker, OutRecord, Outcome, Record, RetryPolicy};
use scenarios::{memory_t, wait_until};

/// A done record of partition 0 is held in the worker's completion buffer
/// while the same worker runs a slow record of partition 1: partition 0
/// does not commit until the slow handler returns.
#[test]
fn done_record_of_one_partition_is_not_held_behind_a_slow_record_of_another() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 2).unwrap();
    broker
        .produce(OutRecord::new("t").value("fast").partition(0))
        .unwrap();
    broker
        .produce(OutRecord::new("t").value("slow").partition(1))
        .unwrap();
    let engine = Engine::builder(broker.clone())
        .group_id("g1")
        .topics(["t"])
        .workers(1)
        .commit_interval(Duration::from_millis(50))
        .handler(|r: &Record| {
            if r.value.as_deref() == Some(&b"slow"[..]) {
                std::thread::sleep(Duration::from_secs(3));
            }
            Outcome::Done
        })
        .build()
        .unwrap();
    let committed = wait_until(Duration::from_millis(1500), || {
        broker.committed("g1", "t", 0) == Some(1)
    });
    let done_at_check = engine.stats().done;
    engine.shutdown(Duration::from_secs(5)).ok();
    assert!(
        committed,
        "partition 0's record was done (done={done_at_check}) but not committed within 1.5 s"
    );
}

/// `max_retry_duration = Duration::MAX` ("retry for ever") wraps to -1 ms
/// in `as_millis() as i64`, so every retry expires at once.
#[test]
fn huge_max_retry_duration_does_not_expire_everything() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    broker.produce(OutRecord::new("t").value("x")).unwrap();
    let engine = Engine::builder(broker.clone())
        .group_id("g2")
        .topics(["t"])
        .policy(RetryPolicy::new(Duration::from_millis(200), Duration::MAX))
        .handler(|_r: &Record| Outcome::retry("later"))
        .build()
        .unwrap();
    wait_until(Duration::from_secs(2), || {
        let s = engine.stats();
        s.retried + s.dead_lettered.total() + s.dropped > 0
    });
    let s = engine.stats();
    engine.shutdown(Duration::from_secs(5)).ok();
    assert_eq!(s.dead_lettered.expired, 0, "expired at once: {s:?}");
    assert!(s.retried >= 1, "{s:?}");
}

/// `retry.enqueued-at` is stamped before the handler runs, so a slow
/// handler makes the relay's due time (enqueued-at + interval) early.
#[test]
fn enqueued_at_is_when_the_record_was_put_on_the_retry_topic() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    broker.produce(OutRecord::new("t").value("x")).unwrap();
    let engine = Engine::builder(broker.clone())
        .group_id("g3")
        .topics(["t"])
        .policy(RetryPolicy::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
        ))
        .handler(|_r: &Record| {
            std::thread::sleep(Duration::from_millis(900));
            Outcome::retry("slow failure")
        })
        .build()
        .unwrap();
    wait_until(Duration::from_secs(3), || {
        broker.end_offset("g3-retry", 0).unwrap_or(0) > 0
    });
    engine.shutdown(Duration::from_secs(5)).ok();
    let recs = broker.records("g3-retry", 0).unwrap();
    let r = &recs[0];
    let enq: i64 = std::str::from_utf8(
        r.header("retry.enqueued-at")
            .unwrap()
            .value
            .as_deref()
            .unwrap(),
    )
    .unwrap()
    .parse()
    .unwrap();
    let lag = r.timestamp - enq;
    assert!(
        lag < 200,
        "written {lag} ms after its enqueued-at: the relay will send it back {lag} ms early"
    );
}

/// `shutdown(Duration::MAX)` ("wait as long as it takes") panics on
/// `Instant::now() + timeout`.
#[test]
fn shutdown_with_a_huge_timeout_does_not_panic() {
    let (_broker, builder) = memory_t("g4", 1);
    let engine = builder
        .handler(|_r: &Record| Outcome::Done)
        .build()
        .unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        engine.shutdown(Duration::MAX)
    }));
    assert!(r.is_ok(), "shutdown(Duration::MAX) panicked");
}

/// A policy that validates can make `interval_for` panic (it runs on the
/// relay thread, which then dies).
#[test]
fn interval_for_never_panics_for_a_valid_policy() {
    let p = RetryPolicy::new(Duration::from_secs(1), Duration::MAX).with_backoff(
        2.0,
        Duration::MAX,
        0.0,
    );
    p.validate().unwrap();
    let r = std::panic::catch_unwind(|| p.interval_for(100, 0));
    assert!(r.is_ok(), "interval_for panicked for a validated policy");
}

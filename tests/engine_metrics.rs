//! The `metrics` feature: names, labels and values, read back through the
//! small text recorder of examples/shared/prometheus.rs.

#[path = "../examples/shared/prometheus.rs"]
mod prometheus;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kafka_retry::{Engine, MemoryBroker, OutRecord, Outcome, RetryPolicy};
use prometheus::{TextRecorder, Value};

/// One recorder for the process (the facade takes one); the tests use
/// their own group labels.
fn recorder() -> &'static TextRecorder {
    static R: OnceLock<TextRecorder> = OnceLock::new();
    R.get_or_init(TextRecorder::install)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn smoke() {
    let recorder = recorder();

    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let engine = Engine::builder(broker.clone())
        .group_id("m")
        .topics(["t"])
        .policy(RetryPolicy::new(
            Duration::from_millis(50),
            Duration::from_secs(30),
        ))
        .commit_interval(Duration::from_millis(20))
        .handler(|r| match r.value.as_deref() {
            Some(b"reject") => Outcome::reject("no"),
            Some(b"retry") if r.attempts() == 0 => Outcome::retry("later"),
            _ => {
                std::thread::sleep(Duration::from_millis(2));
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    for v in ["a", "b", "c", "retry", "retry", "reject"] {
        broker.produce(OutRecord::new("t").value(v)).unwrap();
    }
    let end = Instant::now() + Duration::from_secs(10);
    while engine.stats().done < 5 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = engine.stats();
    assert_eq!(stats.done, 5, "{stats:?}");
    assert_eq!(
        stats.relay_partitions, 1,
        "the relay holds the retry partition"
    );
    engine.shutdown(Duration::from_secs(5)).unwrap();

    let text = recorder.render();
    println!("{text}");
    let group = r#"group="m""#;
    let counter = |name: &str, labels: &str| match recorder.get(name, labels) {
        Some(Value::Counter(c)) => c.load(Ordering::Relaxed),
        other => panic!("{name}{{{labels}}}: {other:?} in\n{text}"),
    };
    assert_eq!(counter("kafka_retry_records_received_total", group), 8);
    assert_eq!(counter("kafka_retry_records_done_total", group), 5);
    assert_eq!(counter("kafka_retry_records_retried_total", group), 2);
    assert_eq!(counter("kafka_retry_records_relayed_total", group), 2);
    let rejected = r#"group="m",reason="rejected""#;
    assert_eq!(
        counter("kafka_retry_records_dead_lettered_total", rejected),
        1
    );
    for reason in ["expired", "malformed"] {
        let l = format!(r#"group="m",reason="{reason}""#);
        assert_eq!(counter("kafka_retry_records_dead_lettered_total", &l), 0);
    }
    for name in [
        "kafka_retry_records_dropped_total",
        "kafka_retry_records_held_total",
        "kafka_retry_handler_panics_total",
        "kafka_retry_send_errors_total",
        "kafka_retry_commit_errors_total",
        "kafka_retry_auth_failures_total",
        "kafka_retry_dead_letter_limit_trips_total",
        "kafka_retry_rebalances_total",
        "kafka_retry_relay_rebalances_total",
        "kafka_retry_records_parked_gone_total",
        "kafka_retry_key_order_hold_all_total",
    ] {
        assert_eq!(counter(name, group), 0, "{name}");
    }
    let gauge = |name: &str| match recorder.get(name, group) {
        Some(Value::Gauge(g)) => f64::from_bits(g.load(Ordering::Relaxed)),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(gauge("kafka_retry_records_in_flight"), 0.0);
    assert_eq!(gauge("kafka_retry_records_parked"), 0.0);
    assert_eq!(gauge("kafka_retry_records_parked_unindexed"), 0.0);
    assert_eq!(gauge("kafka_retry_records_held_waiting"), 0.0);
    assert_eq!(gauge("kafka_retry_partitions_assigned"), 1.0);
    assert_eq!(gauge("kafka_retry_partitions_paused"), 0.0);
    // The relay's own group: the retry topic's one partition.
    assert_eq!(gauge("kafka_retry_relay_partitions_assigned"), 1.0);
    assert_eq!(gauge("kafka_retry_dead_letter_limit_paused"), 0.0);
    assert_eq!(
        gauge("kafka_retry_health_status"),
        2.0,
        "stopped at the last publish"
    );
    assert!(gauge("kafka_retry_last_commit_timestamp_seconds") > 1.7e9);
    let histogram = |name: &str| match recorder.get(name, group) {
        Some(Value::Histogram(h)) => h,
        other => panic!("{name}: {other:?}"),
    };
    let handler = histogram("kafka_retry_handler_duration_seconds");
    assert_eq!(handler.count(), 8, "one per handler call");
    // Five calls slept 2 ms.
    assert!(handler.count() - handler.at_most(0.0015) >= 5);
    let late = histogram("kafka_retry_relay_lateness_seconds");
    assert_eq!(late.count(), 2);
    assert_eq!(late.at_most(1.0), 2, "relayed within a second of due");
    assert!(text.contains("# TYPE kafka_retry_records_retried_total counter"));
    assert!(text.contains(r#"kafka_retry_records_retried_total{group="m"} 2"#));
}

/// `kafka_retry_consumer_lag{group,topic,partition}`: log end minus the
/// committed offset, per owned origin partition; back to 0 once handled
/// and committed, and 0 once the member owns nothing.
#[test]
fn consumer_lag_per_partition() {
    let recorder = recorder();
    let broker = MemoryBroker::new();
    broker.create_topic("lagged", 2).unwrap();
    for (p, n) in [(0, 30), (1, 20)] {
        for i in 0..n {
            let r = OutRecord::new("lagged").partition(p).key(format!("k{i}"));
            broker.produce(r).unwrap();
        }
    }
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let engine = Engine::builder(broker.clone())
        .group_id("lag")
        .topics(["lagged"])
        .workers(1)
        .commit_interval(Duration::from_millis(20))
        .handler(move |_r| {
            while !gate.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Outcome::Done
        })
        .build()
        .unwrap();
    let lag = |p: i32| match recorder.get(
        "kafka_retry_consumer_lag",
        &format!(r#"group="lag",partition="{p}",topic="lagged""#),
    ) {
        Some(Value::Gauge(g)) => Some(f64::from_bits(g.load(Ordering::Relaxed))),
        _ => None,
    };
    // Nothing handled, nothing committed: the whole log is lag.
    wait_for("lag 30 and 20", || {
        lag(0) == Some(30.0) && lag(1) == Some(20.0)
    });
    open.store(true, Ordering::Relaxed);
    wait_for("everything done", || engine.stats().done == 50);
    wait_for("lag 0", || lag(0) == Some(0.0) && lag(1) == Some(0.0));
    // New records on one partition show up there only.
    for _ in 0..5 {
        broker
            .produce(OutRecord::new("lagged").partition(1))
            .unwrap();
    }
    wait_for("done 55", || engine.stats().done == 55);
    wait_for("lag 0 again", || lag(0) == Some(0.0) && lag(1) == Some(0.0));
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!((lag(0), lag(1)), (Some(0.0), Some(0.0)));
}

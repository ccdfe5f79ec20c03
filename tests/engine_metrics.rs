//! The `metrics` feature: names, labels and values, read back through the
//! small text recorder of examples/shared/prometheus.rs.

#[path = "../examples/shared/prometheus.rs"]
mod prometheus;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kafka_retry::{Engine, MemoryBroker, OutRecord, Outcome, RetryPolicy};
use prometheus::{TextRecorder, Value};

#[test]
fn smoke() {
    let recorder = TextRecorder::install();

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
        "kafka_retry_handler_panics_total",
        "kafka_retry_send_errors_total",
        "kafka_retry_commit_errors_total",
        "kafka_retry_auth_failures_total",
        "kafka_retry_dead_letter_limit_trips_total",
        "kafka_retry_rebalances_total",
    ] {
        assert_eq!(counter(name, group), 0, "{name}");
    }
    let gauge = |name: &str| match recorder.get(name, group) {
        Some(Value::Gauge(g)) => f64::from_bits(g.load(Ordering::Relaxed)),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(gauge("kafka_retry_records_in_flight"), 0.0);
    assert_eq!(gauge("kafka_retry_records_parked"), 0.0);
    assert_eq!(gauge("kafka_retry_partitions_assigned"), 1.0);
    assert_eq!(gauge("kafka_retry_partitions_paused"), 0.0);
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

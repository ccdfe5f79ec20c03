//! The engine scenarios of tests/engine_memory.rs, run unchanged on the
//! Kafka transport against the broker in `KAFKA_BOOTSTRAP` (Tansu, started by
//! `scripts/test`). Independent groups run in parallel: Tansu completes a
//! join only after about half the session timeout.

mod common;
mod scenarios;

use std::sync::Arc;
use std::time::Duration;

use kafka_retry::{KafkaConfig, KafkaTransport};
use scenarios::Env;

fn env() -> Env {
    let config = KafkaConfig::new(common::kafka_bootstrap())
        .request_timeout(Duration::from_secs(10))
        .fetch_max_wait(Duration::from_millis(50));
    Env {
        transport: Arc::new(KafkaTransport::connect(config).expect("connect to the test broker")),
        session_timeout: Duration::from_secs(2),
        slack: Duration::from_millis(500),
        name: "kafka",
    }
}

#[test]
fn smoke() {
    let env = env();
    let t = env.topic("smoke", 1);
    env.produce(kafka_retry::OutRecord::new(&t).value("x"));
    assert_eq!(env.read(&t, 1, Duration::from_secs(20)).len(), 1);
}

// Every scenario of tests/scenarios, as one #[test] each.
scenario_tests!(env());

/// Issue 11 §2, joint assignment: three key-order engines whose members
/// all share one client id (so the two groups' member ids sort unalike and
/// their own assignors mostly disagree) still get, on their relays, the
/// retry partitions of the origin partitions they own: every origin
/// partition is dispatched once its relay read it, after the joins and
/// after a member leaves, and none falls back to hold-all after the 10 s
/// wait (`Stats::hold_all`), nor parks a record it could handle (`held`).
#[test]
fn key_order_relays_follow_the_engine_assignment_with_one_client_id() {
    joint_assignment(kafka_retry::transport::RebalanceProtocol::Cooperative);
}

/// The same under eager rebalances (every claim change revokes every
/// relay's partitions once).
#[test]
fn key_order_relays_follow_the_engine_assignment_with_one_client_id_eager() {
    joint_assignment(kafka_retry::transport::RebalanceProtocol::Eager);
}

fn joint_assignment(protocol: kafka_retry::transport::RebalanceProtocol) {
    use kafka_retry::{KeyOrder, OutRecord, Outcome, Record, Redelivery};
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::time::Instant;

    // The engine's READY_WAIT: an unready origin partition runs hold-all
    // after this long.
    const READY_WAIT: Duration = Duration::from_secs(10);
    common::init_log();
    let config = KafkaConfig::new(common::kafka_bootstrap())
        .client_id("ko-shared")
        .request_timeout(Duration::from_secs(10))
        .fetch_max_wait(Duration::from_millis(50));
    let env = Env {
        transport: Arc::new(KafkaTransport::connect(config).expect("connect to the test broker")),
        ..env()
    };
    let partitions = 6;
    let topic = env.topic("joint", partitions);
    let group = scenarios::unique("g-joint");
    let handled: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let start = || {
        let handled = handled.clone();
        env.builder(&group, &[&topic])
            .rebalance_protocol(protocol)
            .workers(2)
            .redelivery(Redelivery::Private)
            .key_order(KeyOrder::Kept)
            .handler(move |r: &Record| {
                handled.lock().unwrap().insert(scenarios::value_of(r));
                Outcome::Done
            })
            .build()
            .unwrap()
    };
    let mut engines: Vec<_> = (0..3).map(|_| start()).collect();
    let producer = env.transport.producer().unwrap();
    let assigned = |engines: &[kafka_retry::Engine]| {
        engines
            .iter()
            .map(|e| e.stats().assigned_partitions)
            .collect::<Vec<_>>()
    };
    // One keyed record per origin partition; how long until all are
    // handled (`None`: not within 40 s).
    let round = |from: u32| {
        let t0 = Instant::now();
        let records = (0..partitions).map(|p| {
            OutRecord::new(&topic)
                .partition(p)
                .key(format!("k{p}"))
                .value((from + p as u32).to_string())
        });
        for r in producer.send_batch(records.collect()) {
            r.unwrap();
        }
        let all = scenarios::wait_until(Duration::from_secs(40), || {
            let h = handled.lock().unwrap();
            (from..from + partitions as u32).all(|v| h.contains(&v))
        });
        all.then(|| t0.elapsed())
    };
    let settled = |engines: &[kafka_retry::Engine]| {
        scenarios::wait_until(Duration::from_secs(40), || {
            let a = assigned(engines);
            a.iter().sum::<i64>() == partitions as i64 && a.iter().all(|&n| n > 0)
        })
    };
    let t0 = Instant::now();
    assert!(settled(&engines), "joins: {:?}", assigned(&engines));
    let joined = t0.elapsed();
    let first = round(0);
    // One member leaves (a clean shutdown: it leaves both groups).
    let gone = engines.remove(1);
    let mut stats = vec![gone.stats()];
    gone.shutdown(Duration::from_secs(10)).unwrap();
    let t1 = Instant::now();
    assert!(settled(&engines), "after a leave: {:?}", assigned(&engines));
    let resettled = t1.elapsed();
    let second = round(100);
    // Long enough for any partition still unready to fall back.
    std::thread::sleep(READY_WAIT + Duration::from_secs(2));
    stats.extend(engines.iter().map(|e| e.stats()));
    for e in engines {
        e.shutdown(Duration::from_secs(10)).unwrap();
    }
    let hold_all: u64 = stats.iter().map(|s| s.hold_all).sum();
    let held: u64 = stats.iter().map(|s| s.held).sum();
    println!(
        "joint assignment on {} ({protocol:?}): joined in {joined:?}, first round handled in {first:?}; \
         after a leave: settled in {resettled:?}, handled in {second:?}; \
         hold-all fallbacks {hold_all}, held {held}",
        env.name
    );
    assert_eq!(
        hold_all, 0,
        "origin partitions fell back to hold-all: {stats:?}"
    );
    assert_eq!(held, 0, "records parked for want of their keys: {stats:?}");
    // The same as "no fallback", seen from outside: each round was handled
    // before an unready partition would have been handed out in hold-all.
    for (name, took) in [("first", first), ("second", second)] {
        assert!(
            took.is_some_and(|t| t < READY_WAIT),
            "{name} round: {took:?}"
        );
    }
}

//! The relay takes its own engine's retry copies in-process
//! (`src/engine/relay/own.rs`) and still relays every record once, also
//! where another instance writes copies into the same retry partitions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_retry::{Engine, OutRecord, Outcome, Record, RetryPolicy, Stats};

use super::{unique, wait_until, Env};

/// Per (origin partition, origin offset): the attempts each delivery saw.
type Deliveries = Arc<Mutex<HashMap<(i32, i64), Vec<u32>>>>;

/// A handler that retries every record once and records each delivery
/// under the offset it was first read at.
fn retry_once(seen: &Deliveries) -> impl Fn(&Record) -> Outcome + Send + Sync + 'static {
    let seen = seen.clone();
    move |r: &Record| {
        let at = (
            r.origin_partition().unwrap_or(r.partition),
            r.origin_offset().unwrap_or(r.offset),
        );
        seen.lock()
            .unwrap()
            .entry(at)
            .or_default()
            .push(r.attempts());
        match r.attempts() {
            0 => Outcome::retry("once"),
            _ => Outcome::Done,
        }
    }
}

/// Every one of `n` records delivered exactly twice, attempts 0 then 1.
fn assert_each_twice(seen: &Deliveries, n: usize) {
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), n, "records handled");
    for (at, attempts) in seen.iter() {
        assert_eq!(attempts, &[0, 1], "deliveries of {at:?}");
    }
}

/// `n` keyed records, spread over `partitions` by number rather than by
/// key: a retry copy goes to the retry partition of its key's hash, so the
/// copies of one origin partition land in every retry partition.
fn produce_spread(env: &Env, topic: &str, partitions: i32, n: usize) {
    let producer = env.transport.producer().unwrap();
    let records = (0..n)
        .map(|i| {
            OutRecord::new(topic)
                .partition(i as i32 % partitions)
                .key(format!("k{i}"))
                .value(format!("v{i}"))
        })
        .collect();
    for r in producer.send_batch(records) {
        r.unwrap();
    }
}

fn engine(env: &Env, group: &str, topic: &str, seen: &Deliveries) -> Engine {
    env.builder(group, &[topic])
        .workers(3)
        .policy(RetryPolicy::new(
            Duration::from_millis(50),
            Duration::from_secs(120),
        ))
        .handler(retry_once(seen))
        .build()
        .unwrap()
}

fn settled(stats: &[Stats], n: u64) -> bool {
    let sum = |f: fn(&Stats) -> u64| stats.iter().map(f).sum::<u64>();
    sum(|s| s.done) >= n && sum(|s| s.relayed) >= n
}

/// One engine: its relay parks copies handed over by its workers (not
/// fetched back), and each record is still relayed once and handled twice.
pub fn retry_copies_are_taken_in_process(env: &Env) {
    let topic = env.topic("own", 3);
    let group = unique("g-own");
    let seen: Deliveries = Arc::default();
    let engine = engine(env, &group, &topic, &seen);
    let n = 3000;
    // In waves, so copies keep coming while the relay is at the log end.
    for _ in 0..10 {
        produce_spread(env, &topic, 3, n / 10);
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(
        wait_until(Duration::from_secs(60), || settled(
            &[engine.stats()],
            n as u64
        )),
        "not settled: {:?}",
        engine.stats()
    );
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10)).unwrap();
    assert_each_twice(&seen, n);
    assert_eq!(stats.retried, n as u64);
    assert_eq!(stats.relayed, n as u64);
    assert!(
        stats.relay_in_process > 0,
        "no copy taken in-process: {stats:?}"
    );
    eprintln!(
        "{}: {} of {n} copies taken in-process",
        env.name, stats.relay_in_process
    );
}

/// Two engines of one group: each writes copies into every retry
/// partition, and each relay owns some of them, so the copies of one
/// instance sit between those of the other. None is skipped or relayed
/// twice.
pub fn two_instances_write_one_retry_partition(env: &Env) {
    let topic = env.topic("own2", 4);
    let group = unique("g-own2");
    let seen: Deliveries = Arc::default();
    let a = engine(env, &group, &topic, &seen);
    let b = engine(env, &group, &topic, &seen);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (sa, sb) = (a.stats(), b.stats());
            sa.assigned_partitions > 0
                && sb.assigned_partitions > 0
                && sa.relay_partitions > 0
                && sb.relay_partitions > 0
        }),
        "both engines and both relays assigned: {:?} / {:?}",
        a.stats(),
        b.stats()
    );
    let n = 2000;
    for _ in 0..10 {
        produce_spread(env, &topic, 4, n / 10);
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(
        wait_until(Duration::from_secs(60), || settled(
            &[a.stats(), b.stats()],
            n as u64
        )),
        "not settled: {:?} / {:?}",
        a.stats(),
        b.stats()
    );
    let (sa, sb) = (a.stats(), b.stats());
    a.shutdown(Duration::from_secs(10)).unwrap();
    b.shutdown(Duration::from_secs(10)).unwrap();
    assert_each_twice(&seen, n);
    assert_eq!(sa.relayed + sb.relayed, n as u64, "{sa:?} / {sb:?}");
    eprintln!(
        "{}: in-process {} + {} of {n}",
        env.name, sa.relay_in_process, sb.relay_in_process
    );
}

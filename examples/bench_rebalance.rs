//! A third engine joins a group of two under load: how long partitions
//! that do not move stop being handled, and the total pause, eager vs
//! cooperative (`RebalanceProtocol`), on the memory broker and, with
//! `kafka` (and `KAFKA_BOOTSTRAP`), on Kafka. Prints numbers; no pass/fail.
//!
//! ```sh
//! cargo run --release --example bench_rebalance          # memory broker
//! scripts/bench-kafka rebalance                          # Kafka (Tansu)
//! ```
//!
//! The handler takes ~0.2 ms per record, so a revoke has in-flight work to
//! finish. "Unmoved" partitions are those handled by the same engine before
//! and after the join; their longest gap in handling from the join until
//! the group settled is the stop they saw. On Kafka every run has its own
//! topic and group, a 6 s session (Tansu completes a join after about half
//! of it, which is most of the eager pause), and `BENCH_REPEAT` (default 3)
//! runs per protocol.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kafka_retry::transport::{RebalanceProtocol, Transport};
use kafka_retry::{Engine, MemoryBroker, OutRecord, Outcome, Record};
#[cfg(feature = "kafka")]
use kafka_retry::{KafkaConfig, KafkaTransport};

const PARTITIONS: i32 = 6;

type Log = Arc<Mutex<Vec<(usize, i32, Instant)>>>;

fn run<T: Transport + Clone>(
    broker: T,
    topic: &str,
    group: &str,
    protocol: RebalanceProtocol,
) -> (Duration, Duration, usize) {
    broker.create_topic(topic, PARTITIONS, None).unwrap();
    let log: Log = Arc::default();
    let make = |who: usize| {
        let log = log.clone();
        Engine::builder(broker.clone())
            .group_id(group)
            .topics([topic])
            .workers(2)
            .rebalance_protocol(protocol)
            .session_timeout(Duration::from_secs(6))
            .commit_interval(Duration::from_millis(50))
            .handler(move |r: &Record| {
                let spin = Instant::now();
                while spin.elapsed() < Duration::from_micros(200) {}
                log.lock().unwrap().push((who, r.partition, Instant::now()));
                Outcome::Done
            })
            .build()
            .unwrap()
    };
    let wait = |f: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(60);
        while !f() && Instant::now() < end {
            thread::sleep(Duration::from_millis(5));
        }
    };
    let a = make(0);
    let b = make(1);
    wait(&|| a.stats().assigned_partitions == 3 && b.stats().assigned_partitions == 3);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (broker, stop, topic) = (broker.clone(), stop.clone(), topic.to_string());
        thread::spawn(move || {
            let producer = broker.producer().unwrap();
            let mut n = 0;
            let mut pending = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let r = OutRecord::new(&topic).partition(n % PARTITIONS).value("x");
                pending.push(producer.send_async(r));
                n += 1;
                thread::sleep(Duration::from_micros(250));
            }
            for p in pending {
                p.wait().unwrap();
            }
        })
    };
    thread::sleep(Duration::from_millis(1000));
    let joined = Instant::now();
    let c = make(2);
    wait(&|| {
        a.stats().assigned_partitions == 2
            && b.stats().assigned_partitions == 2
            && c.stats().assigned_partitions == 2
    });
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    for e in [a, b, c] {
        // On Kafka the relay's member may be in a join (Tansu parks it for
        // seconds): a slow stop is reported, not fatal to the numbers.
        if let Err(err) = e.shutdown(Duration::from_secs(20)) {
            eprintln!("shutdown: {err}");
        }
    }
    let log = log.lock().unwrap();
    let (mut owner_before, mut owner_after) = (BTreeMap::new(), BTreeMap::new());
    let mut last: BTreeMap<i32, Instant> = BTreeMap::new();
    let mut gap: BTreeMap<i32, Duration> = BTreeMap::new();
    for &(who, p, t) in log.iter() {
        if t < joined {
            owner_before.insert(p, who);
            last.insert(p, t);
            continue;
        }
        owner_after.insert(p, who);
        let prev = last.insert(p, t).unwrap_or(joined);
        let g = gap.entry(p).or_default();
        *g = (*g).max(t.saturating_duration_since(prev));
    }
    let unmoved: Vec<i32> = (0..PARTITIONS)
        .filter(|p| owner_before.get(p) == owner_after.get(p))
        .collect();
    let unmoved_stop = unmoved.iter().filter_map(|p| gap.get(p)).max().copied();
    let total = gap.values().max().copied().unwrap_or_default();
    (unmoved_stop.unwrap_or_default(), total, unmoved.len())
}

fn main() {
    let kafka = std::env::args().skip(1).any(|a| a == "kafka");
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let on = if kafka { "Kafka" } else { "memory broker" };
    println!(
        "{on}: third engine joins two, {PARTITIONS} partitions, ~4000 records/s, 0.2 ms/record"
    );
    let mut n = 0;
    for protocol in [RebalanceProtocol::Eager, RebalanceProtocol::Cooperative] {
        let mut rows = Vec::new();
        for _ in 0..repeat {
            n += 1;
            let (topic, group) = (
                format!("rebalance-{}-{n}", std::process::id()),
                format!("g-{n}"),
            );
            rows.push(if kafka {
                on_kafka(&topic, &group, protocol)
            } else {
                run(MemoryBroker::new(), &topic, &group, protocol)
            });
        }
        for (unmoved, total, n) in rows {
            println!(
                "{on} {protocol:?}: unmoved partitions ({n}) stopped at most {unmoved:?}; \
                 longest pause of any partition {total:?}"
            );
        }
    }
}

#[cfg(feature = "kafka")]
fn on_kafka(topic: &str, group: &str, protocol: RebalanceProtocol) -> (Duration, Duration, usize) {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").expect("KAFKA_BOOTSTRAP");
    let t = KafkaTransport::connect(KafkaConfig::new(bootstrap)).unwrap();
    run(
        t,
        topic,
        &format!("{group}-{}", std::process::id()),
        protocol,
    )
}

#[cfg(not(feature = "kafka"))]
fn on_kafka(_: &str, _: &str, _: RebalanceProtocol) -> (Duration, Duration, usize) {
    panic!("built without the kafka feature");
}

//! The Kafka client on "many brokers": Tansu behind the 3-node cluster
//! harness of `tests/common/cluster.rs` (metadata and FindCoordinator
//! rewritten, leadership and coordination enforced per port). Routing to
//! leaders, leader moves, coordinator moves, a dead broker and a dead first
//! bootstrap address. Failover times are printed (`--nocapture`), not
//! asserted beyond generous bounds.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use kafka_retry::transport::{Consumer, ConsumerConfig, ConsumerEvent, Producer, Transport};
use kafka_retry::{
    Engine, KafkaConfig, KafkaTransport, Outcome, OutRecord, Record, RetryPolicy, TopicPartition,
};

use common::cluster::{Cluster, NODES};
use common::{kafka_bootstrap, unique};

const SESSION: Duration = Duration::from_secs(2);
/// Generous bound on any failover here: the client must follow a move by
/// itself, well before this.
const FAILOVER_BOUND: Duration = Duration::from_secs(15);

fn config(bootstrap: &str) -> KafkaConfig {
    common::init_log();
    KafkaConfig::new(bootstrap)
        .request_timeout(Duration::from_secs(10))
        .retry_backoff(Duration::from_millis(50))
        .fetch_max_wait(Duration::from_millis(200))
}

fn connect(cluster: &Cluster) -> KafkaTransport {
    KafkaTransport::connect(config(&cluster.addr(0))).expect("connect through the cluster")
}

fn consumer_config(group: &str, topics: &[&str]) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group, topics.iter().copied());
    c.session_timeout = SESSION;
    c.rebalance_timeout = Duration::from_secs(10);
    c
}

/// A fresh topic with `partitions` partitions, created directly on Tansu.
fn topic(name: &str, partitions: i32) -> String {
    let t = unique(name);
    KafkaTransport::connect(config(&kafka_bootstrap()))
        .unwrap()
        .create_topic(&t, partitions, None)
        .unwrap();
    t
}

/// Polls until the first `Assigned`.
fn join(c: &mut dyn Consumer) -> Vec<TopicPartition> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(300)).expect("poll") {
            ConsumerEvent::Assigned(p) => return p,
            ConsumerEvent::Records(r) if r.is_empty() => {}
            other => panic!("expected Assigned, got {other:?}"),
        }
    }
    panic!("no Assigned within 30 s");
}

/// Values of every record in `topic` (all partitions), read by a fresh
/// group member straight from Tansu until `n` arrived or `within` passed.
fn read_all(topic: &str, n: usize, within: Duration) -> Vec<Record> {
    let kafka = KafkaTransport::connect(config(&kafka_bootstrap())).unwrap();
    let mut c = kafka
        .consumer(consumer_config(&unique("g-check"), &[topic]))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let ConsumerEvent::Records(r) = c.poll(Duration::from_millis(300)).unwrap() {
            out.extend(r);
        }
    }
    out
}

/// Counts of each value: (missing from `sent`, duplicated).
fn loss_and_dups(sent: &[String], got: &[Record]) -> (Vec<String>, Vec<String>) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in got {
        let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        *counts.entry(v).or_default() += 1;
    }
    let missing = sent
        .iter()
        .filter(|v| !counts.contains_key(*v))
        .cloned()
        .collect();
    let dups = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(v, _)| v.clone())
        .collect();
    (missing, dups)
}

#[test]
fn requests_go_to_each_partitions_leader() {
    let cluster = Cluster::start(&kafka_bootstrap());
    let t = topic("cl-route", 6);
    let kafka = connect(&cluster);
    let producer = kafka.producer().unwrap();
    let records: Vec<OutRecord> = (0..6)
        .flat_map(|p| (0..5).map(move |i| (p, i)))
        .map(|(p, i)| OutRecord::new(&t).partition(p).value(format!("{p}-{i}")))
        .collect();
    for r in producer.send_batch(records) {
        r.expect("produce");
    }
    let mut c = kafka
        .consumer(consumer_config(&unique("g-route"), &[&t]))
        .unwrap();
    join(c.as_mut());
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got < 30 && Instant::now() < deadline {
        if let ConsumerEvent::Records(r) = c.poll(Duration::from_millis(300)).unwrap() {
            got += r.len();
        }
    }
    assert_eq!(got, 30);
    c.commit(&[(TopicPartition::new(&t, 0), 5)]).unwrap();

    for api in [ApiKey::Produce, ApiKey::Fetch] {
        let routes = cluster.routes(api, &t);
        println!("{api:?} routes (node, partition, requests): {routes:?}");
        for p in 0..6 {
            assert!(
                cluster.partition_requests(cluster.leader(&t, p), api, &t, p) > 0,
                "{api:?} for partition {p} never reached its leader"
            );
        }
        for &(node, p, n) in &routes {
            assert_eq!(
                node,
                cluster.leader(&t, p),
                "{n} {api:?} request(s) for partition {p} went to node {node}"
            );
        }
        for node in 0..NODES {
            assert_eq!(cluster.refused(node, api), 0);
        }
    }
    // Group requests only to the coordinator (node 0).
    for api in [ApiKey::JoinGroup, ApiKey::SyncGroup, ApiKey::OffsetCommit] {
        assert!(cluster.requests(0, api) > 0, "{api:?}");
        for node in 1..NODES {
            assert_eq!(cluster.requests(node, api), 0, "{api:?} to node {node}");
        }
    }
}

#[test]
fn a_dead_first_bootstrap_address_is_skipped() {
    let cluster = Cluster::start(&kafka_bootstrap());
    // A port nobody listens on: bound, then closed.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let t = topic("cl-boot", 3);
    let started = Instant::now();
    let kafka = KafkaTransport::connect(config(&format!("{dead},{}", cluster.addr(1))))
        .expect("the second bootstrap address works");
    let connected = started.elapsed();
    let d = kafka
        .producer()
        .unwrap()
        .send(OutRecord::new(&t).partition(2).value("v"))
        .unwrap();
    assert_eq!(d.partition, 2);
    println!("bootstrap with a dead first address: connected in {connected:?}");
    assert!(connected < FAILOVER_BOUND);
    assert_eq!(cluster.requests(1, ApiKey::Metadata) > 0, true);
}

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
    Engine, KafkaConfig, KafkaTransport, OutRecord, Outcome, Record, RetryPolicy, TopicPartition,
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
    assert!(cluster.requests(1, ApiKey::Metadata) > 0);
}

/// What [`produce_until`] reports: acknowledged (value, partition, sent
/// at), failed sends, the slowest send.
type Sent = (Vec<(String, i32, Instant)>, usize, Duration);

/// Sends `"<tag>-<i>"` to `partitions` round robin, one acknowledged
/// record at a time, until `stop`; returns the values acknowledged (with
/// when they were sent) and the number of failed sends.
fn produce_until(
    producer: Arc<dyn Producer>,
    topic: String,
    partitions: i32,
    tag: &'static str,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Sent> {
    thread::spawn(move || {
        let mut ok = Vec::new();
        let mut failed = 0;
        let mut slowest = Duration::ZERO;
        let mut i = 0usize;
        while !stop.load(Ordering::SeqCst) {
            let p = (i % partitions as usize) as i32;
            let v = format!("{tag}-{i}");
            let at = Instant::now();
            match producer.send(OutRecord::new(&topic).partition(p).value(v.clone())) {
                Ok(_) => ok.push((v, p, at)),
                Err(e) => {
                    eprintln!("send {v}: {e}");
                    failed += 1;
                }
            }
            slowest = slowest.max(at.elapsed());
            i += 1;
            thread::sleep(Duration::from_millis(5));
        }
        (ok, failed, slowest)
    })
}

#[test]
fn a_leader_move_is_followed_by_producer_and_consumer() {
    let cluster = Cluster::start(&kafka_bootstrap());
    let t = topic("cl-leader", 2);
    let kafka = connect(&cluster);
    let mut c = kafka
        .consumer(consumer_config(&unique("g-leader"), &[&t]))
        .unwrap();
    join(c.as_mut());
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce_until(kafka.producer().unwrap(), t.clone(), 2, "lm", stop.clone());
    let mut seen: Vec<Record> = Vec::new();
    let poll_for = |c: &mut Box<dyn Consumer>, d: Duration, seen: &mut Vec<Record>| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if let ConsumerEvent::Records(r) = c.poll(Duration::from_millis(100)).unwrap() {
                seen.extend(r);
            }
        }
    };
    poll_for(&mut c, Duration::from_millis(800), &mut seen);
    assert_eq!(cluster.leader(&t, 0), 0);
    cluster.forget_first_served();
    let moved = Instant::now();
    cluster.move_leader(&t, 0, 1);
    // Keep consuming while the clients notice.
    let mut produce_at = None;
    let mut fetch_at = None;
    let deadline = moved + FAILOVER_BOUND;
    while (produce_at.is_none() || fetch_at.is_none()) && Instant::now() < deadline {
        poll_for(&mut c, Duration::from_millis(50), &mut seen);
        produce_at = produce_at.or(cluster.first_served(1, ApiKey::Produce, &t, 0));
        fetch_at = fetch_at.or(cluster.first_served(1, ApiKey::Fetch, &t, 0));
    }
    let produce_at = produce_at.expect("producer followed the leader");
    let fetch_at = fetch_at.expect("consumer followed the leader");
    poll_for(&mut c, Duration::from_millis(500), &mut seen);
    stop.store(true, Ordering::SeqCst);
    let (sent, failed, slowest) = producer.join().unwrap();
    // Drain what is left through the cluster.
    let want: Vec<String> = sent.iter().map(|(v, _, _)| v.clone()).collect();
    let until = Instant::now() + Duration::from_secs(10);
    while !loss_and_dups(&want, &seen).0.is_empty() && Instant::now() < until {
        poll_for(&mut c, Duration::from_millis(100), &mut seen);
    }
    println!(
        "leader move: producer on the new leader after {:?}, consumer after {:?}; \
         slowest send {slowest:?}; {} sent, {failed} failed; refused by the old leader: \
         {} produce, {} fetch partitions",
        produce_at - moved,
        fetch_at - moved,
        sent.len(),
        cluster.refused(0, ApiKey::Produce),
        cluster.refused(0, ApiKey::Fetch),
    );
    assert_eq!(failed, 0, "no send fails over a leader move");
    assert!(cluster.refused(0, ApiKey::Produce) + cluster.refused(0, ApiKey::Fetch) > 0);
    let (missing, dups) = loss_and_dups(&want, &seen);
    assert!(missing.is_empty(), "the consumer missed {missing:?}");
    assert!(dups.is_empty(), "the consumer read twice {dups:?}");
    // What is in the log itself, read straight from Tansu.
    let log = read_all(&t, want.len(), Duration::from_secs(15));
    let (missing, dups) = loss_and_dups(&want, &log);
    println!(
        "leader move: log holds {} records, {} duplicated",
        log.len(),
        dups.len()
    );
    assert!(missing.is_empty(), "lost {missing:?}");
    // A refused Produce writes nothing (the harness never forwards it), so
    // even without idempotence nothing is written twice here.
    assert!(dups.is_empty(), "written twice {dups:?}");
    // Partition 1 never moved: no refusal for it anywhere.
    for node in 0..NODES {
        if node != 1 {
            assert_eq!(cluster.partition_requests(node, ApiKey::Produce, &t, 1), 0);
        }
    }
}

#[test]
fn a_coordinator_move_is_followed_by_the_consumer_and_its_commits() {
    let cluster = Cluster::start(&kafka_bootstrap());
    let t = topic("cl-coord", 1);
    let group = unique("g-coord");
    let kafka = connect(&cluster);
    let producer = kafka.producer().unwrap();
    let send = |from: usize, to: usize| {
        for i in from..to {
            producer
                .send(OutRecord::new(&t).partition(0).value(format!("c-{i}")))
                .unwrap();
        }
    };
    let mut c = kafka.consumer(consumer_config(&group, &[&t])).unwrap();
    join(c.as_mut());
    send(0, 10);
    let read = |c: &mut Box<dyn Consumer>, n: usize| -> Vec<Record> {
        let mut out = Vec::new();
        let until = Instant::now() + Duration::from_secs(20);
        while out.len() < n {
            assert!(Instant::now() < until, "read {} of {n}", out.len());
            match c.poll(Duration::from_millis(100)).unwrap() {
                ConsumerEvent::Records(r) => out.extend(r),
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    };
    let first = read(&mut c, 10);
    c.commit(&[(TopicPartition::new(&t, 0), first[9].offset + 1)])
        .unwrap();
    assert_eq!(cluster.coordinator(), 0);

    // Heartbeats are flowing to the old coordinator before it moves.
    let until = Instant::now() + FAILOVER_BOUND;
    while cluster.requests(0, ApiKey::Heartbeat) == 0 {
        assert!(Instant::now() < until, "no heartbeat");
        let _ = c.poll(Duration::from_millis(100)).unwrap();
    }
    cluster.forget_first_served();
    let moved = Instant::now();
    cluster.move_coordinator(2);
    send(10, 20);
    // No commit yet: the heartbeats alone must find the new coordinator,
    // while records keep coming.
    let mut second = Vec::new();
    let mut events = Vec::new();
    let until = moved + FAILOVER_BOUND;
    while second.len() < 10 || cluster.first_group_request(2, ApiKey::Heartbeat).is_none() {
        assert!(
            Instant::now() < until,
            "after the move: {} records, heartbeats on node 2: {:?}, events {events:?}",
            second.len(),
            cluster.first_group_request(2, ApiKey::Heartbeat)
        );
        match c.poll(Duration::from_millis(100)).unwrap() {
            ConsumerEvent::Records(r) => second.extend(r),
            other => events.push(other),
        }
    }
    let heartbeat_at = cluster.first_group_request(2, ApiKey::Heartbeat).unwrap();
    let commit_started = Instant::now();
    c.commit(&[(TopicPartition::new(&t, 0), second[9].offset + 1)])
        .expect("commit after the coordinator moved");
    let committed = Instant::now();
    println!(
        "coordinator move: heartbeats on the new coordinator after {:?}; then a commit took \
         {:?}; refused by the old one: {} heartbeats, {} commits; group events meanwhile: \
         {events:?}",
        heartbeat_at - moved,
        committed - commit_started,
        cluster.refused(0, ApiKey::Heartbeat),
        cluster.refused(0, ApiKey::OffsetCommit),
    );
    assert!(
        cluster.refused(0, ApiKey::Heartbeat) > 0,
        "the old coordinator refused a heartbeat"
    );
    assert!(cluster
        .first_group_request(2, ApiKey::OffsetCommit)
        .is_some());
    c.close().unwrap();
    // The commit landed: a new member of the group starts after it.
    send(20, 21);
    let direct = KafkaTransport::connect(config(&kafka_bootstrap())).unwrap();
    let mut d = direct.consumer(consumer_config(&group, &[&t])).unwrap();
    join(d.as_mut());
    let next = read(&mut d, 1);
    assert_eq!(next[0].value.as_deref(), Some(&b"c-20"[..]));
}

#[test]
fn a_dead_coordinator_broker_does_not_stop_the_engine() {
    dead_broker(1);
}

/// Node 0: the bootstrap address the client met first, where its admin
/// (metadata) connection lives, the controller, and the coordinator.
#[test]
fn a_dead_bootstrap_broker_does_not_stop_the_engine() {
    dead_broker(0);
}

/// An engine on the cluster, a producer writing to every partition; then
/// `victim` dies: it leads partition `victim` of every topic (origin,
/// retry) and coordinates both groups. Nothing may be lost.
fn dead_broker(victim: usize) {
    let cluster = Cluster::start(&kafka_bootstrap());
    let t = topic("cl-dead", 3);
    let group = unique("g-dead");
    cluster.move_coordinator(victim);
    let handled: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let h = handled.clone();
    let retried = Arc::new(AtomicUsize::new(0));
    let r2 = retried.clone();
    let engine = Engine::builder(KafkaTransport::connect(config(&cluster.bootstrap())).unwrap())
        .group_id(&group)
        .topics([t.as_str()])
        .workers(2)
        .session_timeout(SESSION)
        .commit_interval(Duration::from_millis(200))
        .policy(RetryPolicy::new(
            Duration::from_millis(200),
            Duration::from_secs(120),
        ))
        .handler(move |r| {
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            // Every 7th record takes the retry topic once.
            let n: usize = v
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if n.is_multiple_of(7) && r.attempts() == 0 {
                r2.fetch_add(1, Ordering::SeqCst);
                return Outcome::retry("once");
            }
            h.lock().unwrap().push((v, Instant::now()));
            Outcome::Done
        })
        .build()
        .expect("engine on the cluster");
    let producer = KafkaTransport::connect(config(&cluster.bootstrap()))
        .unwrap()
        .producer()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = produce_until(producer, t.clone(), 3, "d", stop.clone());
    let seen = |v: &str| handled.lock().unwrap().iter().any(|(x, _)| x == v);
    let started = common::eventually(Duration::from_secs(30), || {
        seen(&format!("d-{}", victim + 3)) && seen("d-7")
    });
    let so_far = handled.lock().unwrap().len();
    assert!(
        started,
        "engine started handling partition 1 and the retry path: {so_far} handled, {:?}; \
         fetch routes {:?}",
        engine.stats(),
        cluster.routes(ApiKey::Fetch, &t),
    );
    let killed = Instant::now();
    cluster.kill(victim);
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let (sent, failed, slowest) = sender.join().unwrap();
    let want: Vec<String> = sent.iter().map(|(v, _, _)| v.clone()).collect();
    let all_seen = common::eventually(Duration::from_secs(40), || {
        let got = handled.lock().unwrap();
        let set: HashSet<&str> = got.iter().map(|(v, _)| v.as_str()).collect();
        want.iter().all(|v| set.contains(v.as_str()))
    });
    // First record of the moved partition sent after the kill, and when the
    // handler had it.
    let moved_first = sent
        .iter()
        .find(|(_, p, at)| *p == victim as i32 && *at > killed)
        .map(|(v, _, _)| v.clone());
    let got = handled.lock().unwrap().clone();
    let handled_at = moved_first
        .as_ref()
        .and_then(|v| got.iter().find(|(x, _)| x == v).map(|(_, at)| *at));
    let counts = got
        .iter()
        .fold(BTreeMap::<&str, usize>::new(), |mut m, (v, _)| {
            *m.entry(v.as_str()).or_default() += 1;
            m
        });
    println!(
        "dead broker {victim}: {} sent ({failed} failed, slowest send {slowest:?}), {} handled, {} \
         handled twice, {} retried; first record of the moved partition sent after the kill \
         handled {:?} after the kill; stats {:?}",
        sent.len(),
        got.len(),
        counts.values().filter(|c| **c > 1).count(),
        retried.load(Ordering::SeqCst),
        handled_at.map(|at| at - killed),
        engine.stats(),
    );
    let missing: Vec<&String> = want
        .iter()
        .filter(|v| !counts.contains_key(v.as_str()))
        .collect();
    assert!(all_seen && missing.is_empty(), "lost {missing:?}");
    assert!(handled_at.is_some(), "the moved partition is handled again");
    // The engine's own writes (retry topic, relay) never failed: the client
    // followed the moved leaders within its retries.
    assert_eq!(engine.stats().send_errors, 0);
    engine.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_leader_move_that_metadata_shows_late_is_retried_through() {
    let cluster = Cluster::start(&kafka_bootstrap());
    let t = topic("cl-lag", 1);
    let kafka = connect(&cluster);
    let producer = kafka.producer().unwrap();
    let send = |v: &str| {
        let at = Instant::now();
        let r = producer.send(OutRecord::new(&t).partition(0).value(v.to_string()));
        (r, at.elapsed())
    };
    assert!(send("before").0.is_ok());
    let lag = Duration::from_secs(1);
    let moved = Instant::now();
    cluster.move_leader_lagging(&t, 0, 2, lag);
    let (r, took) = send("during");
    let served = cluster.first_served(2, ApiKey::Produce, &t, 0);
    println!(
        "leader move with metadata {lag:?} late: send done after {took:?}, on the new leader \
         {:?} after the move; {} refusals by the old leader, {} metadata requests",
        served.map(|s| s - moved),
        cluster.refused(0, ApiKey::Produce),
        cluster.requests(0, ApiKey::Metadata)
            + cluster.requests(1, ApiKey::Metadata)
            + cluster.requests(2, ApiKey::Metadata),
    );
    r.expect("the send outlasts the lag within its retries");
    assert!(
        took >= lag,
        "it cannot have been written before metadata showed the move"
    );
    assert!(
        cluster.refused(0, ApiKey::Produce) >= 2,
        "retried on the old leader meanwhile"
    );
    let log = read_all(&t, 2, Duration::from_secs(15));
    assert_eq!(values_of(&log), vec!["before", "during"]);
}

fn values_of(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

//! Cooperative rebalancing (KIP-429) against the real broker
//! (`KAFKA_BOOTSTRAP`): a third member joins a group of two while records
//! stream into every partition. With `RebalanceProtocol::Cooperative` the
//! partitions that do not move keep delivering while the group rebalances
//! (between the third member's start and its first partitions), the two
//! members revoke only what moves, and every record written is read by
//! some member (at least once: a moved partition is re-read from its last
//! commit). The eager run beside it shows the difference: there every
//! partition stops.
//!
//! Tansu 0.6 picks the protocol every member lists first
//! (`cooperative-sticky` here); the test checks that it did (a member that
//! kept partitions through the rebalance saw no revoke of them), so a
//! broker that falls back to range fails it loudly rather than passing on
//! eager behaviour. The protocol flow itself is tested against a fake
//! coordinator in `src/transport/kafka/group/cooperative_tests.rs`.

// Kafka only (as the other kafka_* tests, which Cargo.toml gates the same
// way with required-features).
#![cfg(feature = "kafka")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kafka_retry::transport::{ConsumerConfig, ConsumerEvent, RebalanceProtocol, Transport};
use kafka_retry::{KafkaConfig, KafkaTransport, OutRecord, TopicPartition};

use common::{kafka_bootstrap, unique};

const PARTITIONS: i32 = 6;

fn transport() -> KafkaTransport {
    common::init_log();
    let config = KafkaConfig::new(kafka_bootstrap())
        .request_timeout(Duration::from_secs(10))
        .fetch_max_wait(Duration::from_millis(100));
    KafkaTransport::connect(config).expect("connect to KAFKA_BOOTSTRAP")
}

/// What one member did, with when.
#[derive(Default)]
struct Seen {
    /// (partition, offset, when) of every record delivered.
    records: Vec<(i32, i64, Instant)>,
    /// Revoked events: when, and what.
    revoked: Vec<(Instant, Vec<TopicPartition>)>,
    /// The partitions owned now.
    owned: BTreeSet<TopicPartition>,
}

type Shared = Arc<Mutex<Seen>>;

/// A member polling on its own thread until `stop`: commits what it read
/// after every batch and on every revoke.
fn member(
    kafka: &KafkaTransport,
    group: &str,
    topic: &str,
    protocol: RebalanceProtocol,
    stop: Arc<AtomicBool>,
) -> (Shared, thread::JoinHandle<()>) {
    let mut c = ConsumerConfig::new(group, [topic]);
    c.session_timeout = Duration::from_secs(6);
    c.rebalance_timeout = Duration::from_secs(10);
    c.rebalance_protocol = protocol;
    let mut consumer = kafka.consumer(c).unwrap();
    let seen: Shared = Arc::default();
    let s = seen.clone();
    let h = thread::spawn(move || {
        let mut next: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        while !stop.load(Ordering::SeqCst) {
            match consumer.poll(Duration::from_millis(100)) {
                Ok(ConsumerEvent::Records(rs)) => {
                    let now = Instant::now();
                    let mut g = s.lock().unwrap();
                    for r in &rs {
                        g.records.push((r.partition, r.offset, now));
                        next.insert(TopicPartition::new(&r.topic, r.partition), r.offset + 1);
                    }
                    drop(g);
                    let offsets: Vec<_> = next.iter().map(|(tp, o)| (tp.clone(), *o)).collect();
                    if let Err(e) = consumer.commit(&offsets) {
                        log::warn!("commit: {e}");
                    }
                }
                Ok(ConsumerEvent::Assigned(ps)) => s.lock().unwrap().owned.extend(ps),
                Ok(ConsumerEvent::Revoked(ps)) => {
                    let offsets: Vec<_> = ps
                        .iter()
                        .filter_map(|tp| next.get(tp).map(|o| (tp.clone(), *o)))
                        .collect();
                    if let Err(e) = consumer.commit(&offsets) {
                        log::warn!("commit on revoke: {e}");
                    }
                    for tp in &ps {
                        next.remove(tp);
                    }
                    let mut g = s.lock().unwrap();
                    for tp in &ps {
                        g.owned.remove(tp);
                    }
                    g.revoked.push((Instant::now(), ps));
                }
                Ok(ConsumerEvent::Lost(ps)) => {
                    let mut g = s.lock().unwrap();
                    for tp in &ps {
                        g.owned.remove(tp);
                        next.remove(tp);
                    }
                }
                Err(e) => log::warn!("poll: {e}"),
            }
        }
        consumer.close().unwrap();
    });
    (seen, h)
}

fn owned(s: &Shared) -> BTreeSet<TopicPartition> {
    s.lock().unwrap().owned.clone()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

struct Run {
    /// Partitions owned by the same member before and after the join.
    unmoved: Vec<TopicPartition>,
    /// Records of unmoved partitions delivered between the third member's
    /// start and its first partitions (the rebalance).
    unmoved_during: usize,
    /// Longest gap in delivery of any unmoved partition, and of any
    /// partition, from the third member's start until the group settled.
    unmoved_gap: Duration,
    total_gap: Duration,
    /// Revoked events of the first two members after the join, by size.
    revokes: Vec<usize>,
    /// Unmoved partitions that were revoked (and given back) on the way.
    unmoved_revoked: Vec<TopicPartition>,
}

fn run(protocol: RebalanceProtocol) -> Run {
    let kafka = transport();
    let topic = unique("coop");
    let group = unique("g-coop");
    kafka.create_topic(&topic, PARTITIONS, None).unwrap();
    let stop_members = Arc::new(AtomicBool::new(false));
    let (a, ha) = member(&kafka, &group, &topic, protocol, stop_members.clone());
    let (b, hb) = member(&kafka, &group, &topic, protocol, stop_members.clone());
    wait_until(
        "a and b to share the partitions",
        Duration::from_secs(40),
        || owned(&a).len() == 3 && owned(&b).len() == 3,
    );
    // Records into every partition, numbered, until stopped.
    let stop_producer = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let (kafka, topic, stop) = (kafka.clone(), topic.clone(), stop_producer.clone());
        thread::spawn(move || {
            let producer = kafka.producer().unwrap();
            let mut n: i64 = 0;
            let mut pending = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                for p in 0..PARTITIONS {
                    let r = OutRecord::new(&topic).partition(p).value(n.to_string());
                    pending.push(producer.send_async(r));
                    n += 1;
                }
                thread::sleep(Duration::from_millis(10));
            }
            let mut written: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
            for p in pending {
                let d = p.wait().expect("record written");
                written.entry(d.partition).or_default().insert(d.offset);
            }
            written
        })
    };
    thread::sleep(Duration::from_secs(1));
    let before: Vec<BTreeSet<TopicPartition>> = vec![owned(&a), owned(&b)];
    let joined = Instant::now();
    let (c, hc) = member(&kafka, &group, &topic, protocol, stop_members.clone());
    wait_until("c's first partitions", Duration::from_secs(60), || {
        !owned(&c).is_empty()
    });
    let c_assigned = Instant::now();
    wait_until("2 partitions each", Duration::from_secs(60), || {
        owned(&a).len() == 2 && owned(&b).len() == 2 && owned(&c).len() == 2
    });
    thread::sleep(Duration::from_secs(1));
    let settled = Instant::now();
    stop_producer.store(true, Ordering::SeqCst);
    // Everything written (the offsets the broker acknowledged) is read.
    let written = producer_thread.join().unwrap();
    let read = || {
        let mut got: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
        for s in [&a, &b, &c] {
            for &(p, o, _) in &s.lock().unwrap().records {
                got.entry(p).or_default().insert(o);
            }
        }
        got
    };
    let missing = |got: &BTreeMap<i32, BTreeSet<i64>>| -> Vec<(i32, i64)> {
        written
            .iter()
            .flat_map(|(p, os)| os.iter().map(move |o| (*p, *o)))
            .filter(|(p, o)| !got.get(p).is_some_and(|s| s.contains(o)))
            .collect()
    };
    let end = Instant::now() + Duration::from_secs(30);
    while !missing(&read()).is_empty() && Instant::now() < end {
        thread::sleep(Duration::from_millis(50));
    }
    stop_members.store(true, Ordering::SeqCst);
    for h in [ha, hb, hc] {
        h.join().unwrap();
    }
    let lost = missing(&read());
    assert!(
        lost.is_empty(),
        "{protocol:?}: {} written records never read, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // Who handled what, before the join and after the group settled.
    let after = [owned(&a), owned(&b)];
    let unmoved: Vec<TopicPartition> = (0..2)
        .flat_map(|i| {
            before[i]
                .intersection(&after[i])
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    let mut unmoved_during = 0;
    let mut gaps: BTreeMap<i32, Duration> = BTreeMap::new();
    let mut last: BTreeMap<i32, Instant> = BTreeMap::new();
    let mut all: Vec<(i32, Instant)> = Vec::new();
    for s in [&a, &b, &c] {
        all.extend(s.lock().unwrap().records.iter().map(|&(p, _, t)| (p, t)));
    }
    all.sort_by_key(|&(_, t)| t);
    for (p, t) in all {
        if t > settled {
            continue;
        }
        if t < joined {
            last.insert(p, t);
            continue;
        }
        if t < c_assigned && unmoved.iter().any(|tp| tp.partition == p) {
            unmoved_during += 1;
        }
        let prev = last.insert(p, t).unwrap_or(joined);
        let g = gaps.entry(p).or_default();
        *g = (*g).max(t.saturating_duration_since(prev));
    }
    let unmoved_gap = unmoved
        .iter()
        .filter_map(|tp| gaps.get(&tp.partition))
        .max()
        .copied()
        .unwrap_or_default();
    let total_gap = gaps.values().max().copied().unwrap_or_default();
    let mut revokes = Vec::new();
    let mut unmoved_revoked = Vec::new();
    for s in [&a, &b] {
        for (t, ps) in &s.lock().unwrap().revoked {
            if *t >= joined {
                revokes.push(ps.len());
                unmoved_revoked.extend(ps.iter().filter(|tp| unmoved.contains(tp)).cloned());
            }
        }
    }
    Run {
        unmoved,
        unmoved_revoked,
        unmoved_during,
        unmoved_gap,
        total_gap,
        revokes,
    }
}

#[test]
fn a_third_member_joins_and_unmoved_partitions_keep_delivering() {
    let coop = run(RebalanceProtocol::Cooperative);
    println!(
        "cooperative: unmoved {} partitions, {} of their records delivered during the \
         rebalance, longest stop of an unmoved partition {:?}, of any partition {:?}, \
         revokes {:?}",
        coop.unmoved.len(),
        coop.unmoved_during,
        coop.unmoved_gap,
        coop.total_gap,
        coop.revokes
    );
    // Sticky: a and b keep two partitions each.
    assert_eq!(coop.unmoved.len(), 4, "{:?}", coop.unmoved);
    // Only the moving partitions were revoked (one each), never all three.
    assert!(
        coop.revokes.iter().all(|&n| n == 1),
        "cooperative revokes only what moves: {:?}",
        coop.revokes
    );
    assert!(
        coop.unmoved_revoked.is_empty(),
        "partitions that stayed were revoked: {:?}",
        coop.unmoved_revoked
    );
    assert!(
        coop.unmoved_during > 0,
        "no record of an unmoved partition delivered during the rebalance"
    );
    // The unmoved partitions never stopped as long as the moving ones
    // (which wait for their old owner's revoke and the follow-up
    // rebalance); under eager every partition stops for the whole join.
    assert!(
        coop.unmoved_gap < coop.total_gap,
        "unmoved partitions stopped {:?}, as long as any ({:?})",
        coop.unmoved_gap,
        coop.total_gap
    );
}

#[test]
fn eager_for_comparison_every_partition_stops() {
    let eager = run(RebalanceProtocol::Eager);
    println!(
        "eager: unmoved {} partitions, {} of their records delivered during the rebalance, \
         longest stop of an unmoved partition {:?}, of any partition {:?}, revokes {:?}",
        eager.unmoved.len(),
        eager.unmoved_during,
        eager.unmoved_gap,
        eager.total_gap,
        eager.revokes
    );
    // Eager: each of the two revoked all it owned, the partitions it kept
    // too.
    assert!(eager.revokes.contains(&3), "{:?}", eager.revokes);
    assert!(!eager.unmoved_revoked.is_empty());
}

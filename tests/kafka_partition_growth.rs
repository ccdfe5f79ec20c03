//! New partitions get an owner without an unrelated rebalance: the group
//! leader re-reads the partition counts of the group's topics every
//! `metadata_max_age` and rebalances when one changed (a topic grew, or a
//! subscribed topic was created after the group formed), like Java's
//! consumer. Against a real broker (`KAFKA_BOOTSTRAP`, see
//! `scripts/test-broker`).
//!
//! Tansu 0.6.0 has no CreatePartitions (API 37), so on Tansu growth is shown
//! with a subscribed topic created after the group formed;
//! [`grown_topic_is_reassigned`] grows a topic on brokers that have it.
//! Tansu completes a JoinGroup after about half the session timeout: 2 s
//! sessions keep joins near 1 s.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreatePartitionsRequest,
    CreatePartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_retry::transport::{
    ConsumerConfig, ConsumerEvent, Producer, RebalanceProtocol, Transport,
};
use kafka_retry::{KafkaConfig, KafkaTransport, OutRecord, TopicPartition};

use common::{eventually, kafka_bootstrap, raw_kafka, tps, unique};

const SESSION: Duration = Duration::from_secs(2);

fn transport(metadata_max_age: Duration) -> KafkaTransport {
    common::init_log();
    let config = KafkaConfig::new(kafka_bootstrap())
        .request_timeout(Duration::from_secs(10))
        .fetch_max_wait(Duration::from_millis(200))
        .metadata_max_age(metadata_max_age);
    KafkaTransport::connect(config).expect("connect to KAFKA_BOOTSTRAP")
}

/// Eager members: the tests below spell out the eager flow (Revoked
/// everything, Assigned the new share);
/// `topic_created_after_the_group_formed_is_added_cooperatively` is the
/// cooperative default's.
fn config(group: &str, topics: &[&str]) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group, topics.iter().copied());
    c.rebalance_protocol = RebalanceProtocol::Eager;
    c.session_timeout = SESSION;
    c.rebalance_timeout = Duration::from_secs(10);
    c.client_id = Some("partition-growth-test".into());
    c
}

/// One record per listed partition, value `"<tag>-<partition>"`.
fn produce(producer: &Arc<dyn Producer>, topic: &str, partitions: &[i32], tag: &str) {
    let records: Vec<OutRecord> = partitions
        .iter()
        .map(|&p| {
            OutRecord::new(topic)
                .partition(p)
                .value(format!("{tag}-{p}"))
        })
        .collect();
    for r in producer.send_batch(records) {
        r.expect("produce");
    }
}

/// What a member saw (records reduced to partition and value).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
    Lost(Vec<TopicPartition>),
    Record(TopicPartition, String),
}

impl Ev {
    fn is_group_event(&self) -> bool {
        !matches!(self, Ev::Record(..))
    }
}

/// A group member polling on its own thread and recording what it sees;
/// closed when dropped.
struct Member {
    events: Arc<Mutex<Vec<(Instant, Ev)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Member {
    fn spawn(kafka: &KafkaTransport, cfg: ConsumerConfig) -> Member {
        let events: Arc<Mutex<Vec<(Instant, Ev)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut consumer = kafka.consumer(cfg).expect("consumer");
        let handle = {
            let (events, stop) = (events.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let ev = consumer.poll(Duration::from_millis(200)).expect("poll");
                    let now = Instant::now();
                    let mut out = events.lock().unwrap();
                    match ev {
                        ConsumerEvent::Records(rs) => {
                            for r in rs {
                                let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or(b""))
                                    .into_owned();
                                out.push((now, Ev::Record(r.topic_partition(), v)));
                            }
                        }
                        ConsumerEvent::Assigned(p) => out.push((now, Ev::Assigned(p))),
                        ConsumerEvent::Revoked(p) => out.push((now, Ev::Revoked(p))),
                        ConsumerEvent::Lost(p) => out.push((now, Ev::Lost(p))),
                    }
                }
                consumer.close().expect("close");
            })
        };
        Member {
            events,
            stop,
            handle: Some(handle),
        }
    }

    fn events(&self) -> Vec<(Instant, Ev)> {
        self.events.lock().unwrap().clone()
    }

    /// Group events (not records) seen after `since`.
    fn group_events_since(&self, since: Instant) -> Vec<Ev> {
        self.events()
            .into_iter()
            .filter(|(t, e)| *t >= since && e.is_group_event())
            .map(|(_, e)| e)
            .collect()
    }

    /// The current assignment if the last group event was an Assigned.
    fn settled_assignment(&self) -> Option<Vec<TopicPartition>> {
        match self
            .events()
            .into_iter()
            .rev()
            .find(|(_, e)| e.is_group_event())
        {
            Some((_, Ev::Assigned(p))) => Some(p),
            _ => None,
        }
    }

    /// What the member owns now, from every group event so far (right for
    /// both protocols: eager revokes everything before it assigns).
    fn owned(&self) -> BTreeSet<TopicPartition> {
        let mut owned = BTreeSet::new();
        for (_, e) in self.events() {
            match e {
                Ev::Assigned(p) => owned.extend(p),
                Ev::Revoked(p) | Ev::Lost(p) => {
                    for tp in &p {
                        owned.remove(tp);
                    }
                }
                Ev::Record(..) => {}
            }
        }
        owned
    }

    /// Values of the records read from these partitions.
    fn values(&self, of: &[TopicPartition]) -> BTreeSet<String> {
        self.events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Ev::Record(tp, v) if of.contains(&tp) => Some(v),
                _ => None,
            })
            .collect()
    }

    /// Stops polling and closes; panics if the thread did (a poll failed).
    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("member thread failed");
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// True when every member sits on an assignment and together they own
/// exactly `expect`, each partition once.
fn split_is(members: &[&Member], expect: &[TopicPartition]) -> bool {
    let mut owned = Vec::new();
    for m in members {
        match m.settled_assignment() {
            Some(p) => owned.extend(p),
            None => return false,
        }
    }
    owned.sort();
    let mut want = expect.to_vec();
    want.sort();
    owned == want
}

/// Two members with `cfg`, once they have split `topic`'s 2 partitions.
fn settled_pair(kafka: &KafkaTransport, cfg: ConsumerConfig, topic: &str) -> (Member, Member) {
    let a = Member::spawn(kafka, cfg.clone());
    let b = Member::spawn(kafka, cfg);
    let both = [&a, &b];
    assert!(
        eventually(Duration::from_secs(30), || split_is(
            &both,
            &tps(topic, 0..2)
        )),
        "the group did not settle on {topic}'s 2 partitions:\n{}",
        describe(&both)
    );
    (a, b)
}

fn describe(members: &[&Member]) -> String {
    members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let evs: Vec<Ev> = m.events().into_iter().map(|(_, e)| e).collect();
            format!("member {i}: {evs:?}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Two members subscribed to `existing` (2 partitions) and `late` (missing)
/// form a group; `late` is then created with 2 partitions. The leader's
/// check notices within `metadata_max_age`, both members go through
/// Revoked -> Assigned, `late`'s partitions get owners and records written
/// to them are read.
#[test]
fn topic_created_after_the_group_formed_is_assigned() {
    let kafka = transport(Duration::from_millis(500));
    let existing = unique("growth-existing");
    let late = unique("growth-late");
    let group = unique("g-growth");
    kafka.create_topic(&existing, 2, None).unwrap();
    let cfg = config(&group, &[&existing, &late]);

    let started = Instant::now();
    let (a, b) = settled_pair(&kafka, cfg, &existing);
    let both = [&a, &b];
    let before = [
        a.settled_assignment().unwrap(),
        b.settled_assignment().unwrap(),
    ];
    println!("group formed in {:?}: {before:?}", started.elapsed());

    let created = Instant::now();
    kafka.create_topic(&late, 2, None).unwrap();
    produce(&kafka.producer().unwrap(), &late, &[0, 1], "late");

    let mut all = tps(&existing, 0..2);
    all.extend(tps(&late, 0..2));
    let late_parts = tps(&late, 0..2);
    let read_late = || -> BTreeSet<String> {
        a.values(&late_parts)
            .union(&b.values(&late_parts))
            .cloned()
            .collect()
    };
    let want: BTreeSet<String> = ["late-0".to_string(), "late-1".to_string()].into();
    assert!(
        eventually(Duration::from_secs(15), || split_is(&both, &all)
            && read_late() == want),
        "late's partitions were not assigned and read within 15 s:\n{}",
        describe(&both)
    );
    let done = created.elapsed();
    let assigned_at = both
        .iter()
        .filter_map(|m| {
            m.events()
                .into_iter()
                .rev()
                .find(|(_, e)| matches!(e, Ev::Assigned(_)))
                .map(|(t, _)| t.duration_since(created))
        })
        .max()
        .unwrap();
    println!("after creating {late}: reassigned in {assigned_at:?}, records read in {done:?}");

    // Exactly one rebalance, eager: each member first revokes everything it
    // had, then gets its share of all four partitions.
    for (m, old) in both.iter().zip(&before) {
        let seen = m.group_events_since(created);
        let new = m.settled_assignment().unwrap();
        assert_eq!(
            seen,
            vec![Ev::Revoked(old.clone()), Ev::Assigned(new.clone())],
            "{}",
            describe(&both)
        );
        assert_eq!(new.len(), 2, "range splits each topic: {new:?}");
    }
    a.finish();
    b.finish();
}

/// The cooperative default: `late` is created after the group formed; the
/// members keep what they own (no Revoked at all) and each is only added
/// one of `late`'s partitions.
#[test]
fn topic_created_after_the_group_formed_is_added_cooperatively() {
    let kafka = transport(Duration::from_millis(500));
    let existing = unique("growth-coop-existing");
    let late = unique("growth-coop-late");
    let group = unique("g-growth-coop");
    kafka.create_topic(&existing, 2, None).unwrap();
    let mut cfg = config(&group, &[&existing, &late]);
    cfg.rebalance_protocol = RebalanceProtocol::Cooperative;
    let a = Member::spawn(&kafka, cfg.clone());
    let b = Member::spawn(&kafka, cfg);
    let both = [&a, &b];
    let split = |want: &[TopicPartition]| {
        let (oa, ob) = (a.owned(), b.owned());
        oa.len() + ob.len() == want.len()
            && oa.union(&ob).cloned().collect::<BTreeSet<_>>()
                == want.iter().cloned().collect::<BTreeSet<_>>()
    };
    assert!(
        eventually(Duration::from_secs(30), || split(&tps(&existing, 0..2))
            && a.owned().len() == 1),
        "the group did not settle on {existing}'s 2 partitions:\n{}",
        describe(&both)
    );
    let before = [a.owned(), b.owned()];

    let created = Instant::now();
    kafka.create_topic(&late, 2, None).unwrap();
    produce(&kafka.producer().unwrap(), &late, &[0, 1], "late");
    let mut all = tps(&existing, 0..2);
    all.extend(tps(&late, 0..2));
    let late_parts = tps(&late, 0..2);
    let want: BTreeSet<String> = ["late-0".to_string(), "late-1".to_string()].into();
    assert!(
        eventually(Duration::from_secs(15), || split(&all)
            && a.values(&late_parts)
                .union(&b.values(&late_parts))
                .cloned()
                .collect::<BTreeSet<_>>()
                == want),
        "late's partitions were not assigned and read within 15 s:\n{}",
        describe(&both)
    );
    println!(
        "cooperative: after creating {late}: assigned and read in {:?}",
        created.elapsed()
    );
    for (m, old) in both.iter().zip(&before) {
        let seen = m.group_events_since(created);
        assert!(
            !seen
                .iter()
                .any(|e| matches!(e, Ev::Revoked(_) | Ev::Lost(_))),
            "a member gave something up:\n{}",
            describe(&both)
        );
        let now = m.owned();
        assert!(now.is_superset(old), "{}", describe(&both));
        assert_eq!(now.len(), 2, "{}", describe(&both));
    }
    a.finish();
    b.finish();
}

/// Nothing changes: over several check intervals no member sees a group
/// event, records keep flowing, and a subscribed topic that stays missing is
/// no reason to rebalance either.
#[test]
fn no_rebalance_while_partition_counts_stay_the_same() {
    let max_age = Duration::from_millis(300);
    let kafka = transport(max_age);
    let topic = unique("growth-quiet");
    let missing = unique("growth-never");
    let group = unique("g-quiet");
    kafka.create_topic(&topic, 2, None).unwrap();
    let cfg = config(&group, &[&topic, &missing]);
    let (a, b) = settled_pair(&kafka, cfg, &topic);
    let both = [&a, &b];
    // Heartbeats of a late rejoin could still be on the way: start the
    // quiet period once both members have held their assignment a while.
    thread::sleep(SESSION / 2);
    assert!(split_is(&both, &tps(&topic, 0..2)), "{}", describe(&both));
    let quiet_from = Instant::now();
    let producer = kafka.producer().unwrap();
    let rounds = 10;
    for i in 0..rounds {
        produce(&producer, &topic, &[0, 1], &format!("q{i}"));
        thread::sleep(max_age);
    }
    let quiet = quiet_from.elapsed();
    let parts = tps(&topic, 0..2);
    let read = || a.values(&parts).len() + b.values(&parts).len();
    assert!(
        eventually(Duration::from_secs(5), || read() == 2 * rounds),
        "records stopped flowing:\n{}",
        describe(&both)
    );
    for m in both {
        assert_eq!(
            m.group_events_since(quiet_from),
            Vec::<Ev>::new(),
            "a rebalance over {quiet:?} of unchanged partition counts:\n{}",
            describe(&both)
        );
    }
    println!(
        "{quiet:?} (~{} checks of {max_age:?}) without a rebalance",
        quiet.as_millis() / max_age.as_millis()
    );
    a.finish();
    b.finish();
}

// ---------------------------------------------------------------------------
// Raw admin calls (the crate has no CreatePartitions: the engine never grows
// topics).

const CLIENT_ID: &str = "partition-growth-test";

/// The CreatePartitions version to use with the broker, `None` if it has
/// none in common with kafka-protocol's 0..=3.
fn create_partitions_version(bootstrap: &str) -> Option<i16> {
    let resp: ApiVersionsResponse = raw_kafka::call(
        &mut raw_kafka::connect(bootstrap),
        ApiKey::ApiVersions,
        0,
        7,
        CLIENT_ID,
        &ApiVersionsRequest::default(),
    );
    assert_eq!(resp.error_code, 0, "ApiVersions failed");
    let k = resp
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::CreatePartitions as i16)?;
    let v = k.max_version.min(3);
    (v >= k.min_version).then_some(v)
}

/// Grows `topic` to `count` partitions (CreatePartitions to the bootstrap
/// broker, which Kafka forwards to the controller).
fn grow(bootstrap: &str, version: i16, topic: &str, count: i32) {
    let mut t = CreatePartitionsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.count = count;
    let mut req = CreatePartitionsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    let resp: CreatePartitionsResponse = raw_kafka::call(
        &mut raw_kafka::connect(bootstrap),
        ApiKey::CreatePartitions,
        version,
        7,
        CLIENT_ID,
        &req,
    );
    for r in &resp.results {
        assert_eq!(
            r.error_code, 0,
            "CreatePartitions {topic} to {count}: {:?}",
            r.error_message
        );
    }
}

/// A single member owns a 2-partition topic; the topic grows to 4 and
/// records are written to the new partitions. The member goes through
/// Revoked(0, 1) -> Assigned(0..4) and reads them. Needs CreatePartitions,
/// which Tansu 0.6.0 lacks: there the test checks that Tansu still lacks it
/// (so that this test is turned on when it does not) and stops.
#[test]
fn grown_topic_is_reassigned() {
    let bootstrap = kafka_bootstrap();
    let Some(version) = create_partitions_version(&bootstrap) else {
        assert!(
            common::broker_is_tansu(),
            "the broker at {bootstrap} has no CreatePartitions"
        );
        eprintln!(
            "grown_topic_is_reassigned: Tansu has no CreatePartitions; growth is covered by \
             topic_created_after_the_group_formed_is_assigned"
        );
        return;
    };
    let kafka = transport(Duration::from_millis(500));
    let topic = unique("growth-grown");
    let group = unique("g-grown");
    kafka.create_topic(&topic, 2, None).unwrap();
    let mut c = kafka.consumer(config(&group, &[&topic])).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no Assigned within 30 s");
        match c.poll(Duration::from_millis(200)).expect("poll") {
            ConsumerEvent::Assigned(p) => {
                assert_eq!(p, tps(&topic, 0..2));
                break;
            }
            ConsumerEvent::Records(r) if r.is_empty() => {}
            other => panic!("expected Assigned, got {other:?}"),
        }
    }

    let grown = Instant::now();
    grow(&bootstrap, version, &topic, 4);
    assert!(
        eventually(Duration::from_secs(10), || kafka
            .partition_count(&topic)
            .ok()
            .flatten()
            == Some(4)),
        "{topic} did not grow to 4 partitions"
    );
    produce(&kafka.producer().unwrap(), &topic, &[2, 3], "new");

    let mut seen = Vec::new();
    let mut values = BTreeSet::new();
    let want: BTreeSet<String> = ["new-2".to_string(), "new-3".to_string()].into();
    while values != want {
        assert!(
            grown.elapsed() < Duration::from_secs(15),
            "new partitions not read within 15 s; saw {seen:?}, read {values:?}"
        );
        match c.poll(Duration::from_millis(200)).expect("poll") {
            ConsumerEvent::Records(r) => {
                for rec in r {
                    assert!(
                        rec.partition >= 2,
                        "nothing was written to {rec:?}'s partition"
                    );
                    values.insert(
                        String::from_utf8_lossy(rec.value.as_deref().unwrap_or(b"")).into_owned(),
                    );
                }
            }
            ev => {
                println!("{:?} after growth: {ev:?}", grown.elapsed());
                seen.push(ev);
            }
        }
    }
    println!("new partitions read {:?} after growth", grown.elapsed());
    assert_eq!(
        seen,
        vec![
            ConsumerEvent::Revoked(tps(&topic, 0..2)),
            ConsumerEvent::Assigned(tps(&topic, 0..4))
        ]
    );
    c.close().unwrap();
}

//! The Kafka group consumer against a real broker (`KAFKA_BOOTSTRAP`, see
//! `scripts/test-broker`): join, assignment, fetch, commit, rebalances,
//! heartbeats, pause/resume, offset reset, leaving.
//!
//! Tansu completes a JoinGroup only after about half the session timeout, so
//! these tests use 2 s sessions (joins take ~1 s) and independent groups and
//! topics, so they can run in parallel.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kafka_retry::transport::{
    Consumer, ConsumerConfig, ConsumerEvent, OffsetReset, Producer, RebalanceProtocol, Transport,
};
use kafka_retry::{Error, KafkaConfig, KafkaTransport, OutRecord, Record, TopicPartition};

use common::{kafka_bootstrap, tps, unique};

const SESSION: Duration = Duration::from_secs(2);

fn transport() -> KafkaTransport {
    transport_with(|c| c)
}

fn transport_with(f: impl FnOnce(KafkaConfig) -> KafkaConfig) -> KafkaTransport {
    common::init_log();
    let config = KafkaConfig::new(kafka_bootstrap())
        .request_timeout(Duration::from_secs(10))
        .fetch_max_wait(Duration::from_millis(200));
    KafkaTransport::connect(f(config)).expect("connect to KAFKA_BOOTSTRAP")
}

fn config(group: &str, topic: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group, [topic]);
    c.session_timeout = SESSION;
    c.rebalance_timeout = Duration::from_secs(10);
    c.client_id = Some("kafka-group-test".into());
    c
}

/// A member under the eager protocol: the tests that spell out the classic
/// flow (Revoked everything, then Assigned the whole new share) pin it; the
/// cooperative default has `leave_on_drop_*` here and tests/kafka_cooperative.rs.
fn eager(group: &str, topic: &str) -> ConsumerConfig {
    let mut c = config(group, topic);
    c.rebalance_protocol = RebalanceProtocol::Eager;
    c
}

/// A fresh topic `group-<name>` with `partitions` partitions and a fresh
/// group name `g-<name>`.
fn topic_and_group(kafka: &KafkaTransport, name: &str, partitions: i32) -> (String, String) {
    let topic = unique(&format!("group-{name}"));
    kafka.create_topic(&topic, partitions, None).unwrap();
    (topic, unique(&format!("g-{name}")))
}

/// Writes `per_partition` records to each of `partitions` partitions, values
/// `"<tag>-<partition>-<i>"`.
fn produce(
    producer: &Arc<dyn Producer>,
    topic: &str,
    partitions: i32,
    per_partition: usize,
    tag: &str,
) {
    let records: Vec<OutRecord> = (0..partitions)
        .flat_map(|p| {
            (0..per_partition).map(move |i| {
                OutRecord::new(topic)
                    .partition(p)
                    .key(format!("k{i}"))
                    .value(format!("{tag}-{p}-{i}"))
            })
        })
        .collect();
    for r in producer.send_batch(records) {
        r.expect("produce");
    }
}

/// Polls until the first `Assigned`; panics on anything else but empty
/// record batches.
fn join(c: &mut dyn Consumer) -> Vec<TopicPartition> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(500)).expect("poll") {
            ConsumerEvent::Assigned(p) => return p,
            ConsumerEvent::Records(r) if r.is_empty() => {}
            other => panic!("expected Assigned, got {other:?}"),
        }
    }
    panic!("no Assigned within 30 s");
}

/// Polls until `n` records arrived (panics after `within`, or on a group event).
fn read(c: &mut dyn Consumer, n: usize, within: Duration) -> Vec<Record> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "got {} of {n} records within {within:?}",
            out.len()
        );
        match c.poll(Duration::from_millis(300)).expect("poll") {
            ConsumerEvent::Records(r) => out.extend(r),
            other => panic!("unexpected {other:?} after {} records", out.len()),
        }
    }
    out
}

/// Next offset to read per partition (last + 1), for a commit.
fn next_offsets(records: &[Record]) -> Vec<(TopicPartition, i64)> {
    let mut m: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for r in records {
        let e = m.entry(r.topic_partition()).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    m.into_iter().collect()
}

/// Asserts that per partition the offsets are exactly `from..from + n`, in order.
fn assert_contiguous(records: &[Record], expect: &BTreeMap<TopicPartition, (i64, i64)>) {
    let mut by: BTreeMap<TopicPartition, Vec<i64>> = BTreeMap::new();
    for r in records {
        by.entry(r.topic_partition()).or_default().push(r.offset);
    }
    let got: BTreeSet<&TopicPartition> = by.keys().collect();
    let want: BTreeSet<&TopicPartition> = expect.keys().collect();
    assert_eq!(got, want, "partitions with records");
    for (tp, (from, to)) in expect {
        assert_eq!(by[tp], (*from..*to).collect::<Vec<_>>(), "offsets of {tp}");
    }
}

#[test]
fn smoke() {
    let kafka = transport();
    let (topic, group) = topic_and_group(&kafka, "smoke", 4);
    let producer = kafka.producer().unwrap();
    produce(&producer, &topic, 4, 3, "before");

    let started = Instant::now();
    let mut c = kafka.consumer(config(&group, &topic)).unwrap();
    assert!(c.assignment().is_empty());
    let assigned = join(&mut *c);
    let joined = started.elapsed();
    assert_eq!(assigned, tps(&topic, 0..4));
    assert_eq!(c.assignment(), assigned);
    let first = read(&mut *c, 1, Duration::from_secs(10));
    println!(
        "new member -> Assigned in {joined:?}, first record after {:?}",
        started.elapsed()
    );
    let mut records = first;
    records.extend(read(&mut *c, 12 - records.len(), Duration::from_secs(10)));
    let expect: BTreeMap<_, _> = tps(&topic, 0..4)
        .into_iter()
        .map(|tp| (tp, (0, 3)))
        .collect();
    assert_contiguous(&records, &expect);
    for r in &records {
        let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
        assert_eq!(v, format!("before-{}-{}", r.partition, r.offset));
    }

    // Written while the member is polling.
    produce(&producer, &topic, 4, 2, "after");
    let later = read(&mut *c, 8, Duration::from_secs(10));
    let expect: BTreeMap<_, _> = tps(&topic, 0..4)
        .into_iter()
        .map(|tp| (tp, (3, 5)))
        .collect();
    assert_contiguous(&later, &expect);
    records.extend(later);
    c.commit(&next_offsets(&records)).expect("commit");

    // Nothing more: an empty poll within about its timeout.
    let t = Instant::now();
    assert_eq!(
        c.poll(Duration::from_millis(300)).unwrap(),
        ConsumerEvent::Records(vec![])
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "empty poll took {:?}",
        t.elapsed()
    );

    c.close().expect("close");
    assert!(matches!(c.poll(Duration::ZERO), Err(Error::Closed)));
    assert!(matches!(c.commit(&[]), Err(Error::Closed)));
    assert!(matches!(c.close(), Err(Error::Closed)));
}

#[test]
fn committed_offsets_resume_a_new_member() {
    let kafka = transport();
    let (topic, group) = topic_and_group(&kafka, "resume", 2);
    let producer = kafka.producer().unwrap();
    produce(&producer, &topic, 2, 5, "r");

    let mut first = kafka.consumer(config(&group, &topic)).unwrap();
    join(&mut *first);
    let records = read(&mut *first, 10, Duration::from_secs(10));
    assert_eq!(records.len(), 10);
    // Partition 0 processed up to offset 2, partition 1 completely.
    first
        .commit(&[
            (TopicPartition::new(&topic, 0), 3),
            (TopicPartition::new(&topic, 1), 5),
        ])
        .unwrap();
    first.close().unwrap();

    let mut second = kafka.consumer(config(&group, &topic)).unwrap();
    assert_eq!(join(&mut *second), tps(&topic, 0..2));
    let again = read(&mut *second, 2, Duration::from_secs(10));
    let expect: BTreeMap<_, _> = [(TopicPartition::new(&topic, 0), (3, 5))]
        .into_iter()
        .collect();
    assert_contiguous(&again, &expect);
    // Nothing from partition 1: it was committed at its end.
    match second.poll(Duration::from_millis(500)).unwrap() {
        ConsumerEvent::Records(r) => assert!(r.is_empty(), "unexpected {r:?}"),
        other => panic!("unexpected {other:?}"),
    }
}

/// What one member saw, for the two-member test.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
    Lost(Vec<TopicPartition>),
}

/// Polls until `stop(events)` says so, committing on Revoked; records ignored.
fn run_until(
    c: &mut dyn Consumer,
    within: Duration,
    mut stop: impl FnMut(&[Seen]) -> bool,
) -> Vec<Seen> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut read: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    while !stop(&seen) {
        assert!(Instant::now() < deadline, "gave up waiting; saw {seen:?}");
        match c.poll(Duration::from_millis(200)).expect("poll") {
            ConsumerEvent::Records(r) => {
                for rec in r {
                    read.insert(rec.topic_partition(), rec.offset + 1);
                }
            }
            ConsumerEvent::Assigned(p) => seen.push(Seen::Assigned(p)),
            ConsumerEvent::Revoked(p) => {
                // Commits at the old generation still work after Revoked.
                let offsets: Vec<_> = p
                    .iter()
                    .filter_map(|tp| read.get(tp).map(|o| (tp.clone(), *o)))
                    .collect();
                c.commit(&offsets).expect("commit after Revoked");
                seen.push(Seen::Revoked(p))
            }
            ConsumerEvent::Lost(p) => seen.push(Seen::Lost(p)),
        }
    }
    seen
}

fn last_assigned(seen: &[Seen]) -> Option<&Vec<TopicPartition>> {
    seen.iter().rev().find_map(|s| match s {
        Seen::Assigned(p) => Some(p),
        _ => None,
    })
}

#[test]
fn two_members_split_then_one_takes_over_after_close() {
    let kafka = transport();
    let (topic, group) = topic_and_group(&kafka, "two", 4);
    produce(&kafka.producer().unwrap(), &topic, 4, 2, "t");

    let mut a = kafka.consumer(eager(&group, &topic)).unwrap();
    assert_eq!(join(&mut *a), tps(&topic, 0..4));

    // B joins on its own thread: its JoinGroup waits until A rejoins.
    let b_kafka = kafka.clone();
    let (b_group, b_topic) = (group.clone(), topic.clone());
    let (to_b, b_rx) = std::sync::mpsc::channel::<()>();
    let b = thread::spawn(move || {
        let mut b = b_kafka.consumer(eager(&b_group, &b_topic)).unwrap();
        let started = Instant::now();
        let seen = run_until(&mut *b, Duration::from_secs(30), |s| !s.is_empty());
        println!("B: {seen:?} after {:?}", started.elapsed());
        // Wait until A has its half too, then leave.
        b_rx.recv().unwrap();
        b.close().expect("B close");
        seen
    });

    let started = Instant::now();
    let seen_a = run_until(&mut *a, Duration::from_secs(30), |s| {
        matches!(s.last(), Some(Seen::Assigned(_)))
    });
    println!("A: {seen_a:?} after {:?}", started.elapsed());
    assert_eq!(
        seen_a,
        vec![Seen::Revoked(tps(&topic, 0..4)), seen_a[1].clone()],
        "A revokes everything, then gets its new share"
    );
    to_b.send(()).unwrap();
    let seen_b = b.join().unwrap();
    let a_parts = last_assigned(&seen_a).unwrap().clone();
    let b_parts = match seen_b.as_slice() {
        [Seen::Assigned(p)] => p.clone(),
        other => panic!("B saw {other:?}"),
    };
    assert_eq!(
        a_parts.len(),
        2,
        "range gives 2 and 2: {a_parts:?} / {b_parts:?}"
    );
    assert_eq!(b_parts.len(), 2);
    let union: BTreeSet<_> = a_parts.iter().chain(&b_parts).cloned().collect();
    assert_eq!(union.into_iter().collect::<Vec<_>>(), tps(&topic, 0..4));

    // B left: A goes through Revoked -> Assigned(all 4).
    let started = Instant::now();
    let seen_a = run_until(&mut *a, Duration::from_secs(30), |s| {
        matches!(s.last(), Some(Seen::Assigned(_)))
    });
    println!("A after B left: {seen_a:?} after {:?}", started.elapsed());
    assert_eq!(
        seen_a,
        vec![Seen::Revoked(a_parts), Seen::Assigned(tps(&topic, 0..4))]
    );
}

/// Joins `group` on another thread, returns the member and its first assignment.
fn join_in_background(
    kafka: &KafkaTransport,
    cfg: ConsumerConfig,
) -> thread::JoinHandle<(Box<dyn Consumer>, Vec<TopicPartition>)> {
    let kafka = kafka.clone();
    thread::spawn(move || {
        let mut c = kafka.consumer(cfg).unwrap();
        let parts = join(&mut *c);
        (c, parts)
    })
}

#[test]
fn slow_caller_keeps_membership_thanks_to_heartbeats() {
    let kafka = transport();
    let (topic, group) = topic_and_group(&kafka, "slow", 2);
    let producer = kafka.producer().unwrap();
    let mut a = kafka.consumer(eager(&group, &topic)).unwrap();
    assert_eq!(join(&mut *a), tps(&topic, 0..2));

    // A slow handler: no poll for 3 session timeouts.
    thread::sleep(SESSION * 3);
    // Tansu only checks sessions when the group is touched: a new member
    // joining makes it evict A if A's heartbeats had stopped.
    let b = join_in_background(&kafka, eager(&group, &topic));
    let seen = run_until(&mut *a, Duration::from_secs(30), |s| {
        matches!(s.last(), Some(Seen::Assigned(_)))
    });
    let (_b, b_parts) = b.join().unwrap();
    assert_eq!(seen.len(), 2, "A saw {seen:?}");
    assert_eq!(
        seen[0],
        Seen::Revoked(tps(&topic, 0..2)),
        "a clean revoke, not Lost"
    );
    let a_parts = last_assigned(&seen).unwrap().clone();
    assert_eq!(a_parts.len(), 1);
    assert_eq!(b_parts.len(), 1);
    assert_ne!(a_parts, b_parts);

    // And A still reads.
    let p = a_parts[0].partition;
    producer
        .send(OutRecord::new(&topic).partition(p).value("after the nap"))
        .unwrap();
    let records = read(&mut *a, 1, Duration::from_secs(10));
    assert_eq!(records[0].partition, p);
    assert_eq!(records[0].value.as_deref(), Some(&b"after the nap"[..]));
    a.commit(&next_offsets(&records))
        .expect("commit at the same generation");
}

#[test]
fn without_heartbeats_a_slow_caller_is_fenced() {
    // The control for the test above. A heartbeats only every 3 sessions:
    // its session expires (Tansu notices when B joins), B gets everything,
    // and A's late heartbeat learns it was fenced: Lost.
    let slow_kafka = transport_with(|c| c.heartbeat_interval(Some(SESSION * 3)));
    let kafka = transport();
    let (topic, group) = topic_and_group(&kafka, "noheart", 2);
    let mut a = slow_kafka.consumer(config(&group, &topic)).unwrap();
    assert_eq!(join(&mut *a), tps(&topic, 0..2));
    let joined = Instant::now();
    thread::sleep(SESSION * 3 / 2);
    let (_b, b_parts) = join_in_background(&kafka, config(&group, &topic))
        .join()
        .unwrap();
    assert_eq!(
        b_parts,
        tps(&topic, 0..2),
        "A was evicted, B has everything"
    );
    assert!(
        joined.elapsed() < SESSION * 3,
        "B joined too late for this test"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        match a.poll(Duration::from_millis(100)).unwrap() {
            ConsumerEvent::Records(r) if r.is_empty() => {
                assert!(Instant::now() < deadline, "A never learnt it was fenced");
            }
            other => break other,
        }
    };
    assert_eq!(event, ConsumerEvent::Lost(tps(&topic, 0..2)));
    assert!(a.assignment().is_empty());
    let err = a
        .commit(&[(TopicPartition::new(&topic, 0), 0)])
        .expect_err("commit without a generation");
    assert!(matches!(err, Error::Rebalance(_)), "{err:?}");
}

#[test]
fn heartbeats_continue_between_revoked_and_the_next_poll() {
    let kafka = transport();
    let (topic, group) = topic_and_group(&kafka, "revslow", 2);
    let mut a = kafka.consumer(eager(&group, &topic)).unwrap();
    assert_eq!(join(&mut *a), tps(&topic, 0..2));
    let b = join_in_background(&kafka, eager(&group, &topic));
    let seen = run_until(&mut *a, Duration::from_secs(30), |s| !s.is_empty());
    assert_eq!(seen, vec![Seen::Revoked(tps(&topic, 0..2))]);
    // The caller takes its time finishing the revoked partitions' work.
    let started = Instant::now();
    thread::sleep(SESSION * 3);
    a.commit(&[(TopicPartition::new(&topic, 0), 0)])
        .expect("commit after Revoked, before rejoining");
    let seen = run_until(&mut *a, Duration::from_secs(30), |s| !s.is_empty());
    println!(
        "A after a slow revoke: {seen:?} after {:?}",
        started.elapsed()
    );
    let (_b, b_parts) = b.join().unwrap();
    assert!(
        matches!(seen.as_slice(), [Seen::Assigned(p)] if p.len() == 1),
        "A saw {seen:?}"
    );
    assert_eq!(b_parts.len(), 1);
}

#[test]
fn pause_and_resume_skip_nothing() {
    let kafka = transport();
    let (topic, group) = topic_and_group(&kafka, "pause", 2);
    produce(&kafka.producer().unwrap(), &topic, 2, 20, "p");
    let mut cfg = config(&group, &topic);
    cfg.max_poll_records = 5;
    let mut c = kafka.consumer(cfg).unwrap();
    join(&mut *c);
    let p0 = TopicPartition::new(&topic, 0);

    let mut all = read(&mut *c, 1, Duration::from_secs(10));
    c.pause(std::slice::from_ref(&p0));
    // While paused: only partition 1, until it is drained.
    let mut during = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = match c.poll(Duration::from_millis(300)).unwrap() {
            ConsumerEvent::Records(r) => r,
            other => panic!("unexpected {other:?}"),
        };
        assert!(got.len() <= 5, "max_poll_records");
        if got.is_empty()
            && during.iter().filter(|r: &&Record| r.partition == 1).count()
                + all.iter().filter(|r| r.partition == 1).count()
                >= 20
        {
            break;
        }
        assert!(Instant::now() < deadline, "partition 1 not drained");
        during.extend(got);
    }
    assert!(
        during.iter().all(|r| r.partition == 1),
        "paused partition 0 returned records"
    );
    all.extend(during);
    c.resume(&[p0]);
    let n = 40 - all.len();
    all.extend(read(&mut *c, n, Duration::from_secs(10)));
    let expect: BTreeMap<_, _> = tps(&topic, 0..2)
        .into_iter()
        .map(|tp| (tp, (0, 20)))
        .collect();
    assert_contiguous(&all, &expect);
}

#[test]
fn earliest_and_latest_reset() {
    let kafka = transport();
    let topic = unique("group-reset");
    kafka.create_topic(&topic, 1, None).unwrap();
    let producer = kafka.producer().unwrap();
    // One batch per record: Tansu 0.6 (memory storage) answers ListOffsets
    // "latest" with the newest batch's base offset + 1, which is only the
    // log end when that batch holds one record.
    for i in 0..5 {
        producer
            .send(
                OutRecord::new(&topic)
                    .partition(0)
                    .value(format!("old-0-{i}")),
            )
            .unwrap();
        thread::sleep(Duration::from_millis(5));
    }

    let mut early_cfg = config(&unique("g-early"), &topic);
    early_cfg.offset_reset = OffsetReset::Earliest;
    let mut late_cfg = config(&unique("g-late"), &topic);
    late_cfg.offset_reset = OffsetReset::Latest;
    let mut early = kafka.consumer(early_cfg).unwrap();
    let mut late = kafka.consumer(late_cfg).unwrap();
    // Join both at once (each join takes ~half a session on Tansu).
    let late = thread::spawn(move || {
        join(&mut *late);
        late
    });
    join(&mut *early);
    let mut late = late.join().unwrap();

    produce(&producer, &topic, 1, 3, "new");
    let got = read(&mut *early, 8, Duration::from_secs(10));
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    let got = read(&mut *late, 3, Duration::from_secs(10));
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert_eq!(got[0].value.as_deref(), Some(&b"new-0-0"[..]));
}

#[test]
fn leave_on_drop_lets_the_other_member_take_over_quickly() {
    leave_on_drop(RebalanceProtocol::Eager);
}

#[test]
fn leave_on_drop_lets_the_other_member_take_over_quickly_cooperative() {
    leave_on_drop(RebalanceProtocol::Cooperative);
}

/// What a member owns after `seen`, from `owned` before (eager: `Revoked`
/// empties it and `Assigned` is the whole share; cooperative: both name
/// only what changes).
fn own(mut owned: BTreeSet<TopicPartition>, seen: &[Seen]) -> BTreeSet<TopicPartition> {
    for s in seen {
        match s {
            Seen::Assigned(p) => owned.extend(p.iter().cloned()),
            Seen::Revoked(p) | Seen::Lost(p) => {
                for tp in p {
                    owned.remove(tp);
                }
            }
        }
    }
    owned
}

fn leave_on_drop(protocol: RebalanceProtocol) {
    // A longer session, so that "well before the session timeout" means something.
    let session = Duration::from_secs(8);
    let kafka = transport_with(|c| c.heartbeat_interval(Some(Duration::from_millis(300))));
    let (topic, group) = topic_and_group(&kafka, "drop", 2);
    let cfg = |g: &str| {
        let mut c = config(g, &topic);
        c.session_timeout = session;
        c.rebalance_protocol = protocol;
        c
    };
    let mut a = kafka.consumer(cfg(&group)).unwrap();
    let b_kafka = kafka.clone();
    let b_cfg = cfg(&group);
    let b = thread::spawn(move || {
        let mut b = b_kafka.consumer(b_cfg).unwrap();
        // Cooperative: the first assignment may be empty (the partition
        // that moves is still A's), the follow-up brings it.
        let mut got = BTreeSet::new();
        while got.is_empty() {
            got.extend(join(&mut *b));
        }
        (b, got)
    });
    // A may see Assigned(2) straight away, or Assigned(all) -> Revoked -> Assigned(1).
    let seen = run_until(&mut *a, Duration::from_secs(40), |s| {
        own(BTreeSet::new(), s).len() == 1 && matches!(s.last(), Some(Seen::Assigned(_)))
    });
    println!("A ({protocol:?}) while B joins: {seen:?}");
    let a_owned = own(BTreeSet::new(), &seen);
    let (b, b_parts) = b.join().unwrap();
    assert_eq!(b_parts.len(), 1, "B got {b_parts:?}");
    if protocol == RebalanceProtocol::Cooperative {
        // Only the partition that moved was revoked, never both.
        assert!(
            seen.iter()
                .all(|s| !matches!(s, Seen::Revoked(p) if p.len() > 1)),
            "{seen:?}"
        );
    }

    let dropped = Instant::now();
    drop(b);
    let seen = run_until(&mut *a, Duration::from_secs(40), |s| {
        own(a_owned.clone(), s).len() == 2
    });
    let took = dropped.elapsed();
    println!("A ({protocol:?}) after B dropped: {seen:?} in {took:?}");
    if protocol == RebalanceProtocol::Cooperative {
        // A keeps its partition: it only gains B's.
        assert!(
            !seen.iter().any(|s| matches!(s, Seen::Revoked(_))),
            "{seen:?}"
        );
    }
    assert!(
        took < session,
        "takeover took {took:?}, session timeout is {session:?}"
    );
}

#[test]
fn fetch_and_heartbeat_survive_a_connection_cut() {
    let broker = common::TansuBroker::start_behind_proxy();
    let topic = unique("group-cut");
    broker.create_topic(&topic, 2);
    let settings = KafkaConfig::new(broker.bootstrap())
        .request_timeout(Duration::from_millis(800))
        .connect_timeout(Duration::from_millis(300))
        .retry_backoff(Duration::from_millis(50))
        .fetch_max_wait(Duration::from_millis(200))
        .heartbeat_interval(Some(Duration::from_millis(300)));
    common::init_log();
    let kafka = KafkaTransport::connect(settings).unwrap();
    let producer = kafka.producer().unwrap();
    produce(&producer, &topic, 2, 5, "before");
    // A cut the membership survives: the last heartbeat answered before it
    // and the first after it are well within the session less the lapse
    // margin (3.2 s of 4 s), so the member does not fence itself.
    let mut cfg = config(&unique("g-cut"), &topic);
    cfg.session_timeout = Duration::from_secs(4);
    let mut c = kafka.consumer(cfg).unwrap();
    assert_eq!(join(&mut *c), tps(&topic, 0..2));
    let mut records = read(&mut *c, 10, Duration::from_secs(10));

    // Every connection (fetch, coordinator, heartbeat) dies; polls keep
    // returning on time, empty, without errors.
    broker.proxy().cut();
    let cut = Instant::now();
    while cut.elapsed() < Duration::from_millis(1500) {
        let t = Instant::now();
        match c
            .poll(Duration::from_millis(200))
            .expect("poll during the cut")
        {
            ConsumerEvent::Records(r) => assert!(r.is_empty(), "{r:?}"),
            other => panic!("unexpected {other:?} during the cut"),
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "poll took {:?}",
            t.elapsed()
        );
    }
    broker.proxy().restore();
    // Only reachable through new fetch connections.
    produce(&producer, &topic, 2, 5, "after");
    let restored = Instant::now();
    records.extend(read(&mut *c, 10, Duration::from_secs(15)));
    println!("read again {:?} after the restore", restored.elapsed());
    let expect: BTreeMap<_, _> = tps(&topic, 0..2)
        .into_iter()
        .map(|tp| (tp, (0, 10)))
        .collect();
    assert_contiguous(&records, &expect);
    c.commit(&next_offsets(&records))
        .expect("commit after the cut");
    c.close().expect("close after the cut");
}

/// A member cut off from the broker for longer than its session gives its
/// partitions up (`Lost`) before the coordinator can have expired it (a
/// session after the last heartbeat it received, which was sent at most a
/// heartbeat interval before the cut), refuses to commit, and rejoins once
/// the network is back.
#[test]
fn a_member_cut_off_for_its_session_reports_lost_before_it_expires() {
    let broker = common::TansuBroker::start_behind_proxy();
    let topic = unique("group-lapse");
    broker.create_topic(&topic, 2);
    let interval = Duration::from_millis(300);
    let settings = KafkaConfig::new(broker.bootstrap())
        .request_timeout(Duration::from_millis(800))
        .connect_timeout(Duration::from_millis(300))
        .retry_backoff(Duration::from_millis(50))
        .fetch_max_wait(Duration::from_millis(200))
        .heartbeat_interval(Some(interval));
    common::init_log();
    let kafka = KafkaTransport::connect(settings).unwrap();
    let session = Duration::from_secs(4);
    let mut cfg = config(&unique("g-lapse"), &topic);
    cfg.session_timeout = session;
    let mut c = kafka.consumer(cfg).unwrap();
    assert_eq!(join(&mut *c), tps(&topic, 0..2));
    // Heartbeats flow for a while first.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        let ev = c.poll(Duration::from_millis(100)).unwrap();
        assert!(
            matches!(&ev, ConsumerEvent::Records(r) if r.is_empty()),
            "{ev:?}"
        );
    }

    broker.proxy().cut();
    let cut = Instant::now();
    let lost = loop {
        match c.poll(Duration::from_millis(100)) {
            Ok(ConsumerEvent::Records(r)) => assert!(r.is_empty(), "{r:?}"),
            Ok(ConsumerEvent::Lost(p)) => break p,
            Ok(other) => panic!("unexpected {other:?} during the cut"),
            Err(e) => panic!("poll during the cut: {e}"),
        }
        assert!(cut.elapsed() < session * 2, "no Lost");
    };
    let took = cut.elapsed();
    println!("Lost {lost:?} {took:?} into the cut (session {session:?})");
    assert_eq!(lost, tps(&topic, 0..2));
    assert!(
        took < session - interval,
        "Lost {took:?} into the cut: the coordinator may have expired the member already"
    );
    let err = c
        .commit(&[(TopicPartition::new(topic.clone(), 0), 1)])
        .expect_err("commit after the lapse");
    assert!(matches!(err, Error::Rebalance(_)), "{err:?}");

    broker.proxy().restore();
    assert_eq!(join(&mut *c), tps(&topic, 0..2), "rejoined");
    c.commit(&[(TopicPartition::new(topic.clone(), 0), 0)])
        .expect("commit after the rejoin");
    c.close().expect("close");
}

/// Two members; one is cut off from the broker (only its connections, by
/// client id). It reports its partition `Lost` before the coordinator
/// expires it and assigns that partition to the other member: the two
/// never both own it.
#[test]
fn a_cut_off_member_reports_lost_before_the_other_is_assigned_its_partition() {
    let broker = common::TansuBroker::start_behind_proxy();
    let topic = unique("group-split");
    broker.create_topic(&topic, 2);
    let session = Duration::from_secs(4);
    common::init_log();
    let transport = |id: &str| {
        let settings = KafkaConfig::new(broker.bootstrap())
            .client_id(id)
            .request_timeout(Duration::from_millis(800))
            .connect_timeout(Duration::from_millis(300))
            .retry_backoff(Duration::from_millis(50))
            .fetch_max_wait(Duration::from_millis(200))
            .heartbeat_interval(Some(Duration::from_millis(300)));
        KafkaTransport::connect(settings).unwrap()
    };
    let group = unique("g-split");
    let cfg = |id: &str| {
        let mut c = eager(&group, &topic);
        c.session_timeout = session;
        c.client_id = Some(id.to_string());
        c
    };
    let (ka, kb) = (transport("split-victim"), transport("split-peer"));
    let mut a = ka.consumer(cfg("split-victim")).unwrap();
    assert_eq!(join(&mut *a), tps(&topic, 0..2));
    let b = join_in_background(&kb, cfg("split-peer"));
    let seen = run_until(&mut *a, Duration::from_secs(30), |s| {
        matches!(s.last(), Some(Seen::Assigned(_)))
    });
    let (mut b, b_parts) = b.join().unwrap();
    let a_parts = last_assigned(&seen).unwrap().clone();
    assert_eq!(
        (a_parts.len(), b_parts.len()),
        (1, 1),
        "{a_parts:?} / {b_parts:?}"
    );

    broker.proxy().cut_client("split-victim");
    let cut = Instant::now();
    let a_side = thread::spawn(move || loop {
        match a.poll(Duration::from_millis(100)) {
            Ok(ConsumerEvent::Lost(p)) => return (cut.elapsed(), p, a),
            Ok(ConsumerEvent::Records(r)) => assert!(r.is_empty(), "{r:?}"),
            Ok(other) => panic!("A: unexpected {other:?} during the cut"),
            Err(e) => panic!("A: poll during the cut: {e}"),
        }
        assert!(cut.elapsed() < session * 3, "A saw no Lost");
    });
    let seen_b = run_until(&mut *b, Duration::from_secs(30), |s| {
        last_assigned(s).is_some_and(|p| p.contains(&a_parts[0]))
    });
    let b_took = cut.elapsed();
    let (a_took, lost, _a) = a_side.join().unwrap();
    println!("A lost {lost:?} {a_took:?} into the cut; B: {seen_b:?} {b_took:?} into it");
    assert_eq!(lost, a_parts);
    assert!(
        a_took < b_took,
        "B was assigned A's partition {b_took:?} into the cut, A gave it up only after {a_took:?}"
    );
    broker.proxy().restore();
}

/// `ConsumerConfig::claims` on Kafka: the leader assigns by the members'
/// claims (whatever their member ids), and a changed claim rejoins and is
/// honoured, under both protocols.
#[test]
fn claims_decide_the_assignment() {
    for protocol in [RebalanceProtocol::Cooperative, RebalanceProtocol::Eager] {
        let kafka = transport();
        let (topic, group) = topic_and_group(&kafka, "claims", 4);
        common::claims_are_followed(Arc::new(kafka), move || {
            let mut c = config(&group, &topic);
            c.rebalance_protocol = protocol;
            c
        });
    }
}

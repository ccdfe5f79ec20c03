//! The in-process broker: produce/consume, partitioning, consumer groups.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_retry::transport::{
    partition_for_key, Consumer, ConsumerConfig, ConsumerEvent, OffsetReset, RebalanceProtocol,
    Transport,
};
use kafka_retry::{Error, Header, MemoryBroker, OutRecord, Record, TopicPartition};

const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(5);

fn tps(topic: &str, partitions: &[i32]) -> Vec<TopicPartition> {
    partitions
        .iter()
        .map(|&p| TopicPartition::new(topic, p))
        .collect()
}

fn consumer(broker: &MemoryBroker, group: &str, topic: &str) -> Box<dyn Consumer> {
    broker
        .consumer(ConsumerConfig::new(group, [topic]))
        .expect("consumer")
}

/// A member under the eager protocol (every rebalance revokes everything
/// first), which the group tests below spell out event by event; the
/// cooperative default has its own tests at the end.
fn eager(group: &str, topic: &str) -> ConsumerConfig {
    let mut cfg = ConsumerConfig::new(group, [topic]);
    cfg.rebalance_protocol = RebalanceProtocol::Eager;
    cfg
}

fn eager_consumer(broker: &MemoryBroker, group: &str, topic: &str) -> Box<dyn Consumer> {
    broker.consumer(eager(group, topic)).expect("consumer")
}

/// The next poll result that is not an empty `Records` (fails after 5 s).
fn next_event(c: &mut dyn Consumer) -> ConsumerEvent {
    let start = Instant::now();
    loop {
        match c.poll(Duration::from_millis(100)).expect("poll") {
            ConsumerEvent::Records(r) if r.is_empty() => {
                assert!(start.elapsed() < LONG, "no event within 5 s");
            }
            ev => return ev,
        }
    }
}

fn expect_assigned(c: &mut dyn Consumer) -> Vec<TopicPartition> {
    match next_event(c) {
        ConsumerEvent::Assigned(a) => a,
        ev => panic!("expected Assigned, got {ev:?}"),
    }
}

/// Polls until `n` records arrived (fails on any group event or after 5 s).
fn collect(c: &mut dyn Consumer, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    while out.len() < n {
        match next_event(c) {
            ConsumerEvent::Records(r) => out.extend(r),
            ev => panic!("expected records, got {ev:?}"),
        }
    }
    out
}

fn produce_n(broker: &MemoryBroker, topic: &str, partition: i32, n: usize) {
    for i in 0..n {
        broker
            .produce(
                OutRecord::new(topic)
                    .partition(partition)
                    .value(i.to_string()),
            )
            .expect("produce");
    }
}

#[test]
fn smoke() {
    let broker = MemoryBroker::new();
    broker.create_topic("orders", 1).unwrap();
    let d = broker
        .produce(OutRecord::new("orders").key("k").value("v"))
        .unwrap();
    assert_eq!((d.topic.as_str(), d.partition, d.offset), ("orders", 0, 0));

    let mut c = consumer(&broker, "g", "orders");
    assert_eq!(expect_assigned(&mut *c), tps("orders", &[0]));
    assert_eq!(c.assignment(), tps("orders", &[0]));
    let recs = collect(&mut *c, 1);
    assert_eq!(recs[0].value.as_deref(), Some(&b"v"[..]));
    c.commit(&[(recs[0].topic_partition(), 1)]).unwrap();
    assert_eq!(broker.committed("g", "orders", 0), Some(1));
    assert_eq!(broker.end_offset("orders", 0).unwrap(), 1);
    assert_eq!(broker.topics(), vec!["orders".to_string()]);
}

#[test]
fn round_trip_keeps_every_byte() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let headers = vec![
        Header::new("dup", "first"),
        Header {
            key: Bytes::from_static(b"\xff\x00raw"),
            value: None,
        },
        Header::new("dup", ""),
        Header::new("dup", "third"),
    ];
    let sent = vec![
        OutRecord {
            headers: headers.clone(),
            timestamp: Some(1_234),
            ..OutRecord::new("t")
                .key(Bytes::from_static(b"\x00\x01k"))
                .value("v")
        },
        OutRecord::new("t").key("tombstone"),  // null value
        OutRecord::new("t").key("").value(""), // empty key and value
        OutRecord::new("t"),                   // null key, null value
    ];
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let results = broker.producer().unwrap().send_batch(sent.clone());
    let offsets: Vec<i64> = results.into_iter().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);

    let mut c = consumer(&broker, "g", "t");
    expect_assigned(&mut *c);
    let got = collect(&mut *c, 4);
    assert_eq!(got, broker.records("t", 0).unwrap());
    for (i, (r, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(
            (r.topic.as_str(), r.partition, r.offset),
            ("t", 0, i as i64)
        );
        assert_eq!(r.key, s.key, "key {i}");
        assert_eq!(r.value, s.value, "value {i}");
        assert_eq!(r.headers, s.headers, "headers {i}");
    }
    assert_eq!(got[0].timestamp, 1_234);
    assert!(got[1].timestamp >= before, "default timestamp is now");
    assert_eq!(got[1].value, None);
    assert_eq!(got[2].value, Some(Bytes::new()));
    assert_eq!(got[2].key, Some(Bytes::new()));
    assert_eq!(got[3].key, None);
    assert_eq!(
        got[0].header("dup").unwrap().value.as_deref(),
        Some(&b"third"[..])
    );
}

#[test]
fn keyed_records_follow_java_partitioner() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 10).unwrap();
    // A vector from Kafka's UtilsTest: "foobar" % 10 = 6.
    let d = broker
        .produce(OutRecord::new("t").key("foobar").value("x"))
        .unwrap();
    assert_eq!(d.partition, 6);
    let mut used = BTreeSet::new();
    for i in 0..200 {
        let key = format!("key-{i}");
        let d = broker
            .produce(OutRecord::new("t").key(key.clone()))
            .unwrap();
        assert_eq!(d.partition, partition_for_key(key.as_bytes(), 10), "{key}");
        used.insert(d.partition);
    }
    assert_eq!(used.len(), 10);
    // Same key, same partition, increasing offsets.
    let a = broker.produce(OutRecord::new("t").key("same")).unwrap();
    let b = broker.produce(OutRecord::new("t").key("same")).unwrap();
    assert_eq!(a.partition, b.partition);
    assert_eq!(b.offset, a.offset + 1);
}

#[test]
fn keyless_records_spread_and_explicit_partition_is_checked() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    for _ in 0..8 {
        broker.produce(OutRecord::new("t").value("x")).unwrap();
    }
    for p in 0..4 {
        assert_eq!(broker.end_offset("t", p).unwrap(), 2, "partition {p}");
    }
    let d = broker
        .produce(OutRecord::new("t").key("k").partition(3))
        .unwrap();
    assert_eq!((d.partition, d.offset), (3, 2));
    for bad in [4, -1] {
        let err = broker
            .produce(OutRecord::new("t").partition(bad))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config {
                    field: "partition",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.is_retriable());
    }
}

#[test]
fn unknown_topics_and_bad_configs_are_errors() {
    let broker = MemoryBroker::new();
    let err = broker.produce(OutRecord::new("nope")).unwrap_err();
    assert!(
        matches!(err, Error::UnknownTopic(ref t) if t == "nope"),
        "{err}"
    );
    assert!(broker.records("nope", 0).is_err());
    assert!(broker.end_offset("nope", 0).is_err());
    assert_eq!(broker.partition_count("nope").unwrap(), None);

    broker.create_topic("t", 2).unwrap();
    let producer = broker.producer().unwrap();
    assert!(matches!(
        producer.send(OutRecord::new("nope")),
        Err(Error::UnknownTopic(_))
    ));
    // A batch reports per record, in input order.
    let res = producer.send_batch(vec![
        OutRecord::new("t").partition(1),
        OutRecord::new("nope"),
        OutRecord::new("t").partition(7),
        OutRecord::new("t").partition(1),
        OutRecord::new("t").partition(0),
    ]);
    assert_eq!(res[0].as_ref().unwrap().offset, 0);
    assert!(matches!(res[1], Err(Error::UnknownTopic(_))));
    assert!(matches!(res[2], Err(Error::Config { .. })));
    assert_eq!(res[3].as_ref().unwrap().offset, 1);
    assert_eq!(res[4].as_ref().unwrap().partition, 0);
    assert!(broker.records("t", 2).is_err());

    for bad in [0, -3] {
        assert!(matches!(
            broker.create_topic("x", bad),
            Err(Error::Config {
                field: "partitions",
                ..
            })
        ));
    }
    assert!(broker.create_topic("bad name", 1).is_err());
    assert!(Transport::create_topic(&broker, "x", 1, Some(0)).is_err());
    Transport::create_topic(&broker, "x", 3, None).unwrap();
    Transport::create_topic(&broker, "x", 5, Some(1)).unwrap(); // exists: unchanged
    assert_eq!(broker.partition_count("x").unwrap(), Some(3));

    let mut cfg = ConsumerConfig::new("g", ["t"]);
    cfg.max_poll_records = 0;
    assert!(broker.consumer(cfg).is_err());
    assert!(broker
        .consumer(ConsumerConfig::new("g", Vec::<String>::new()))
        .is_err());
}

#[test]
fn poll_blocks_then_wakes_on_new_data() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 8).unwrap();
    let mut c = consumer(&broker, "g", "t");
    expect_assigned(&mut *c);

    // Nothing there: an empty poll lasts its whole timeout.
    let start = Instant::now();
    assert_eq!(c.poll(SHORT).unwrap(), ConsumerEvent::Records(vec![]));
    assert!(start.elapsed() >= SHORT);

    let b = broker.clone();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        b.produce(OutRecord::new("t").partition(5).value("late"))
            .unwrap();
    });
    let start = Instant::now();
    let ev = c.poll(Duration::from_secs(10)).unwrap();
    let waited = start.elapsed();
    writer.join().unwrap();
    let ConsumerEvent::Records(recs) = ev else {
        panic!("expected records, got {ev:?}")
    };
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].partition, recs[0].offset), (5, 0));
    assert!(
        waited >= Duration::from_millis(90),
        "returned early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "woke too late: {waited:?}");
}

#[test]
fn producer_batch_wakes_a_blocked_poll() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 2).unwrap();
    let mut c = consumer(&broker, "g", "t");
    expect_assigned(&mut *c);
    let producer = broker.producer().unwrap();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        let res = producer.send_batch(vec![OutRecord::new("t").value("a"); 10]);
        assert!(res.iter().all(Result::is_ok));
    });
    let start = Instant::now();
    let ev = c.poll(Duration::from_secs(10)).unwrap();
    writer.join().unwrap();
    assert!(matches!(ev, ConsumerEvent::Records(ref r) if !r.is_empty()));
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn pause_and_resume_skip_nothing() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 2).unwrap();
    let mut cfg = ConsumerConfig::new("g", ["t"]);
    cfg.max_poll_records = 3;
    let mut c = broker.consumer(cfg).unwrap();
    expect_assigned(&mut *c);
    produce_n(&broker, "t", 0, 10);

    let first = collect(&mut *c, 3);
    assert_eq!(
        first.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let p0 = tps("t", &[0]);
    c.pause(&p0);
    produce_n(&broker, "t", 0, 5);
    produce_n(&broker, "t", 1, 1);
    // Only the unpaused partition's record comes back.
    let other = collect(&mut *c, 1);
    assert_eq!((other[0].partition, other[0].offset), (1, 0));
    assert_eq!(c.poll(SHORT).unwrap(), ConsumerEvent::Records(vec![]));

    c.resume(&p0);
    let rest = collect(&mut *c, 12);
    assert!(rest.len() <= 12 && rest.iter().all(|r| r.partition == 0));
    let offsets: Vec<i64> = rest.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (3..15).collect::<Vec<i64>>());
}

#[test]
fn polls_are_fair_across_partitions() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 8).unwrap();
    produce_n(&broker, "t", 0, 1_000);
    produce_n(&broker, "t", 7, 1);
    let mut cfg = ConsumerConfig::new("g", ["t"]);
    cfg.max_poll_records = 100;
    let mut c = broker.consumer(cfg).unwrap();
    expect_assigned(&mut *c);
    let ConsumerEvent::Records(recs) = c.poll(LONG).unwrap() else {
        panic!("expected records")
    };
    assert_eq!(recs.len(), 100, "a full batch");
    assert!(
        recs.iter().any(|r| r.partition == 7),
        "partition 7 starved behind partition 0"
    );
    // Offsets stay in order per partition.
    let p0: Vec<i64> = recs
        .iter()
        .filter(|r| r.partition == 0)
        .map(|r| r.offset)
        .collect();
    assert_eq!(p0, (0..p0.len() as i64).collect::<Vec<_>>());
}

#[test]
fn committed_offsets_resume_a_new_member() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    produce_n(&broker, "t", 0, 10);
    let mut cfg = ConsumerConfig::new("g", ["t"]);
    cfg.max_poll_records = 5;
    let mut a = broker.consumer(cfg.clone()).unwrap();
    expect_assigned(&mut *a);
    let got = collect(&mut *a, 5);
    assert_eq!(got.len(), 5);
    a.commit(&[(TopicPartition::new("t", 0), 5)]).unwrap();
    a.close().unwrap();
    assert_eq!(broker.committed("g", "t", 0), Some(5));

    let mut b = broker.consumer(cfg).unwrap();
    expect_assigned(&mut *b);
    let got = collect(&mut *b, 5);
    assert_eq!(got[0].offset, 5);
    assert_eq!(got[4].offset, 9);
    // Another group starts from the beginning.
    let mut other = consumer(&broker, "other", "t");
    expect_assigned(&mut *other);
    assert_eq!(collect(&mut *other, 1)[0].offset, 0);
}

#[test]
fn latest_reset_skips_old_records() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    produce_n(&broker, "t", 0, 5);
    let mut cfg = ConsumerConfig::new("g", ["t"]);
    cfg.offset_reset = OffsetReset::Latest;
    let mut c = broker.consumer(cfg).unwrap();
    expect_assigned(&mut *c);
    assert_eq!(c.poll(SHORT).unwrap(), ConsumerEvent::Records(vec![]));
    produce_n(&broker, "t", 0, 1);
    let got = collect(&mut *c, 1);
    assert_eq!(got[0].offset, 5);
}

#[test]
fn two_members_split_by_range_and_hand_over_on_close() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    let all = tps("t", &[0, 1, 2, 3]);
    let mut a = eager_consumer(&broker, "g", "t");
    let mut b = eager_consumer(&broker, "g", "t");
    assert_eq!(expect_assigned(&mut *a), all);

    // b joins: it waits while a still owns everything.
    assert_eq!(b.poll(SHORT).unwrap(), ConsumerEvent::Records(vec![]));
    assert_eq!(a.poll(SHORT).unwrap(), ConsumerEvent::Revoked(all.clone()));
    // Between Revoked and the next poll, a still owns and may commit.
    assert_eq!(a.assignment(), all);
    a.commit(&[(TopicPartition::new("t", 3), 0)]).unwrap();
    // a's next poll rejoins; everybody is in, so the generation forms.
    // Member ids sort in join order, so a gets the lower range.
    assert_eq!(expect_assigned(&mut *a), tps("t", &[0, 1]));
    assert_eq!(expect_assigned(&mut *b), tps("t", &[2, 3]));
    assert_eq!(b.assignment(), tps("t", &[2, 3]));

    // a may not commit b's partitions.
    let err = a.commit(&[(TopicPartition::new("t", 2), 0)]).unwrap_err();
    assert!(matches!(err, Error::Rebalance(_)), "{err}");
    b.commit(&[(TopicPartition::new("t", 2), 0)]).unwrap();

    b.close().unwrap();
    assert!(matches!(b.poll(SHORT), Err(Error::Closed)));
    assert!(matches!(b.commit(&[]), Err(Error::Closed)));
    assert!(b.assignment().is_empty());

    assert_eq!(
        next_event(&mut *a),
        ConsumerEvent::Revoked(tps("t", &[0, 1]))
    );
    a.commit(&[(TopicPartition::new("t", 1), 0)]).unwrap();
    assert_eq!(expect_assigned(&mut *a), all);
}

#[test]
fn blocked_polls_wake_on_group_events() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 2).unwrap();
    let mut a = eager_consumer(&broker, "g", "t");
    expect_assigned(&mut *a);

    // a blocks waiting for data; b joining must wake it with Revoked.
    let a_thread = thread::spawn(move || {
        let start = Instant::now();
        let ev = a.poll(Duration::from_secs(10)).unwrap();
        (a, ev, start.elapsed())
    });
    thread::sleep(Duration::from_millis(50));
    let mut b = eager_consumer(&broker, "g", "t");
    assert_eq!(
        b.poll(Duration::ZERO).unwrap(),
        ConsumerEvent::Records(vec![])
    );
    let (mut a, ev, waited) = a_thread.join().unwrap();
    assert_eq!(ev, ConsumerEvent::Revoked(tps("t", &[0, 1])));
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    // b blocks waiting for the generation; a rejoining must wake it.
    let b_thread = thread::spawn(move || {
        let start = Instant::now();
        let ev = b.poll(Duration::from_secs(10)).unwrap();
        (ev, start.elapsed())
    });
    thread::sleep(Duration::from_millis(50));
    assert_eq!(expect_assigned(&mut *a), tps("t", &[0]));
    let (ev, waited) = b_thread.join().unwrap();
    assert_eq!(ev, ConsumerEvent::Assigned(tps("t", &[1])));
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[test]
fn dropping_a_member_rebalances_the_others() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 3).unwrap();
    let mut a = eager_consumer(&broker, "g", "t");
    expect_assigned(&mut *a);
    let mut b = eager_consumer(&broker, "g", "t");
    b.poll(Duration::ZERO).unwrap();
    assert!(matches!(next_event(&mut *a), ConsumerEvent::Revoked(_)));
    assert_eq!(expect_assigned(&mut *a), tps("t", &[0, 1]));
    assert_eq!(expect_assigned(&mut *b), tps("t", &[2]));
    drop(b);
    assert_eq!(
        next_event(&mut *a),
        ConsumerEvent::Revoked(tps("t", &[0, 1]))
    );
    assert_eq!(expect_assigned(&mut *a), tps("t", &[0, 1, 2]));
}

#[test]
fn member_that_does_not_rejoin_is_evicted_and_sees_lost() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    let all = tps("t", &[0, 1, 2, 3]);
    let mut cfg = eager("g", "t");
    cfg.rebalance_timeout = Duration::from_millis(200);
    let mut a = broker.consumer(cfg.clone()).unwrap();
    let mut b = broker.consumer(cfg).unwrap();
    assert_eq!(expect_assigned(&mut *a), all);

    // b joins and waits; a never polls, so after the rebalance timeout it is
    // evicted and b gets everything. b's poll wakes at the deadline.
    let start = Instant::now();
    let ev = b.poll(Duration::from_secs(5)).unwrap();
    let waited = start.elapsed();
    assert_eq!(ev, ConsumerEvent::Assigned(all.clone()));
    assert!(waited >= Duration::from_millis(190), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    // a's partitions are gone: commits fail, then it learns it lost them.
    let err = a.commit(&[(TopicPartition::new("t", 0), 1)]).unwrap_err();
    assert!(matches!(err, Error::Rebalance(_)), "{err}");
    assert_eq!(broker.committed("g", "t", 0), None);
    assert_eq!(a.poll(SHORT).unwrap(), ConsumerEvent::Lost(all.clone()));
    assert!(a.assignment().is_empty());

    // Then a rejoins as a fresh member, which rebalances b.
    assert_eq!(a.poll(SHORT).unwrap(), ConsumerEvent::Records(vec![]));
    assert_eq!(next_event(&mut *b), ConsumerEvent::Revoked(all));
    let got_b = expect_assigned(&mut *b);
    let got_a = expect_assigned(&mut *a);
    // a's new member id sorts after b's: b gets the lower range.
    assert_eq!(got_b, tps("t", &[0, 1]));
    assert_eq!(got_a, tps("t", &[2, 3]));
}

#[test]
fn revoked_member_that_is_too_slow_loses_its_commit() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 2).unwrap();
    let mut cfg = eager("g", "t");
    cfg.rebalance_timeout = Duration::from_millis(100);
    let mut a = broker.consumer(cfg.clone()).unwrap();
    let mut b = broker.consumer(cfg).unwrap();
    expect_assigned(&mut *a);
    b.poll(Duration::ZERO).unwrap();
    assert!(matches!(a.poll(SHORT).unwrap(), ConsumerEvent::Revoked(_)));
    // Too slow: the deadline passes before a commits or polls again.
    thread::sleep(Duration::from_millis(150));
    assert!(matches!(
        a.commit(&[(TopicPartition::new("t", 0), 1)]),
        Err(Error::Rebalance(_))
    ));
    assert_eq!(
        a.poll(SHORT).unwrap(),
        ConsumerEvent::Lost(tps("t", &[0, 1]))
    );
    assert_eq!(expect_assigned(&mut *b), tps("t", &[0, 1]));
}

#[test]
fn topic_created_later_is_picked_up() {
    let broker = MemoryBroker::new();
    let mut c = eager_consumer(&broker, "g", "later");
    assert_eq!(expect_assigned(&mut *c), vec![]);
    broker.create_topic("later", 2).unwrap();
    // Nothing owned, so no Revoked: straight to the new assignment.
    assert_eq!(expect_assigned(&mut *c), tps("later", &[0, 1]));
    produce_n(&broker, "later", 1, 1);
    assert_eq!(collect(&mut *c, 1)[0].partition, 1);

    broker.create_partitions("later", 3).unwrap();
    assert_eq!(
        next_event(&mut *c),
        ConsumerEvent::Revoked(tps("later", &[0, 1]))
    );
    assert_eq!(expect_assigned(&mut *c), tps("later", &[0, 1, 2]));
    assert!(broker.create_partitions("later", 3).is_err());
}

#[test]
fn rebalance_completes_across_threads() {
    // Three members polling from their own threads, a busy producer, and
    // members joining late: every record is read once, no more.
    let broker = MemoryBroker::new();
    broker.create_topic("t", 6).unwrap();
    let total = 3_000usize;
    let start = Arc::new(Barrier::new(4));
    let mut handles = Vec::new();
    for i in 0..3u64 {
        let broker = broker.clone();
        let start = Arc::clone(&start);
        handles.push(thread::spawn(move || {
            let mut cfg = ConsumerConfig::new("g", ["t"]);
            cfg.max_poll_records = 50;
            let mut c = broker.consumer(cfg).unwrap();
            start.wait();
            thread::sleep(Duration::from_millis(20 * i));
            let mut seen: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
            let mut last: BTreeMap<TopicPartition, i64> = BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let done: usize = broker.committed_total("g");
                if done >= total || Instant::now() > deadline {
                    break;
                }
                match c.poll(Duration::from_millis(20)).unwrap() {
                    ConsumerEvent::Records(recs) => {
                        for r in &recs {
                            seen.entry(r.partition).or_default().push(r.offset);
                            last.insert(r.topic_partition(), r.offset + 1);
                        }
                        let offsets: Vec<_> = last.iter().map(|(t, o)| (t.clone(), *o)).collect();
                        c.commit(&offsets).unwrap();
                    }
                    ConsumerEvent::Revoked(_) => last.clear(),
                    ConsumerEvent::Assigned(_) => {}
                    ConsumerEvent::Lost(l) => panic!("lost {l:?}"),
                }
            }
            seen
        }));
    }
    start.wait();
    let producer = broker.producer().unwrap();
    for i in 0..total {
        producer
            .send(OutRecord::new("t").key(format!("k{i}")).value("v"))
            .unwrap();
    }
    let mut all: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for h in handles {
        for (p, offs) in h.join().unwrap() {
            all.entry(p).or_default().extend(offs);
        }
    }
    let mut count = 0;
    for (p, mut offs) in all {
        offs.sort();
        let end = broker.end_offset("t", p).unwrap();
        assert_eq!(offs, (0..end).collect::<Vec<_>>(), "partition {p}");
        count += offs.len();
    }
    assert_eq!(count, total);
}

/// Sum of the group's committed offsets over the topic's partitions.
trait CommittedTotal {
    fn committed_total(&self, group: &str) -> usize;
}

impl CommittedTotal for MemoryBroker {
    fn committed_total(&self, group: &str) -> usize {
        (0..6)
            .map(|p| self.committed(group, "t", p).unwrap_or(0) as usize)
            .sum()
    }
}

// The default protocol, cooperative-sticky: a rebalance revokes only what
// moves, `Assigned` names only what is added, and a member keeps reading
// the rest throughout.

#[test]
fn cooperative_members_hand_over_only_what_moves() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    let all = tps("t", &[0, 1, 2, 3]);
    let mut a = consumer(&broker, "g", "t");
    assert_eq!(expect_assigned(&mut *a), all);
    produce_n(&broker, "t", 0, 3);

    let mut b = consumer(&broker, "g", "t");
    assert_eq!(b.poll(SHORT).unwrap(), ConsumerEvent::Records(vec![]));
    // a gives up two partitions, keeps two, and was not asked to give up
    // the rest.
    let ConsumerEvent::Revoked(moved) = next_event(&mut *a) else {
        panic!("a: expected a partial revoke");
    };
    assert_eq!(moved.len(), 2, "{moved:?}");
    let kept: Vec<_> = all
        .iter()
        .filter(|tp| !moved.contains(tp))
        .cloned()
        .collect();
    assert_eq!(a.assignment(), all, "owned until the next poll");
    // a's next poll rejoins: nothing is added to it, and it still owns
    // (and may commit) what it kept.
    let mut got_b = Vec::new();
    let deadline = Instant::now() + LONG;
    let mut a_added = None;
    while (a_added.is_none() || got_b.len() < 2) && Instant::now() < deadline {
        match a.poll(SHORT).unwrap() {
            ConsumerEvent::Assigned(p) => a_added = Some(p),
            ConsumerEvent::Records(_) => {}
            other => panic!("a: {other:?}"),
        }
        match b.poll(SHORT).unwrap() {
            ConsumerEvent::Assigned(p) => got_b.extend(p),
            ConsumerEvent::Records(_) => {}
            other => panic!("b: {other:?}"),
        }
    }
    assert_eq!(a_added, Some(vec![]));
    got_b.sort();
    assert_eq!(got_b, moved);
    assert_eq!(a.assignment(), kept);
    a.commit(&[(kept[0].clone(), 0)]).unwrap();
    let err = a.commit(&[(moved[0].clone(), 0)]).unwrap_err();
    assert!(matches!(err, Error::Rebalance(_)), "{err}");

    // b leaves: a takes b's partitions without revoking its own.
    // (An empty `Assigned` of the follow-up rebalance may come first.)
    b.close().unwrap();
    let mut added = Vec::new();
    while added.len() < 2 {
        match next_event(&mut *a) {
            ConsumerEvent::Assigned(p) => added.extend(p),
            other => panic!("a: {other:?}"),
        }
    }
    assert_eq!(added, moved);
    assert_eq!(a.assignment(), all);
}

#[test]
fn cooperative_member_gets_only_the_new_partitions_when_a_topic_grows() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 2).unwrap();
    let mut c = consumer(&broker, "g", "t");
    assert_eq!(expect_assigned(&mut *c), tps("t", &[0, 1]));
    broker.create_partitions("t", 3).unwrap();
    assert_eq!(next_event(&mut *c), ConsumerEvent::Assigned(tps("t", &[2])));
    assert_eq!(c.assignment(), tps("t", &[0, 1, 2]));
}

#[test]
fn cooperative_member_that_does_not_rejoin_is_evicted_and_sees_lost() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    let mut cfg = ConsumerConfig::new("g", ["t"]);
    cfg.rebalance_timeout = Duration::from_millis(200);
    let mut a = broker.consumer(cfg.clone()).unwrap();
    assert_eq!(expect_assigned(&mut *a).len(), 4);
    let mut b = broker.consumer(cfg).unwrap();
    // b joins; a never polls again, so it is evicted and b ends up with
    // everything.
    let mut got_b = Vec::new();
    let deadline = Instant::now() + LONG;
    while got_b.len() < 4 && Instant::now() < deadline {
        if let ConsumerEvent::Assigned(p) = b.poll(SHORT).unwrap() {
            got_b.extend(p);
        }
    }
    got_b.sort();
    assert_eq!(got_b, tps("t", &[0, 1, 2, 3]));
    let ConsumerEvent::Lost(lost) = a.poll(SHORT).unwrap() else {
        panic!("a: expected Lost");
    };
    assert_eq!(lost.len(), 4);
    assert!(a.assignment().is_empty());
}

/// `ConsumerConfig::claims`: the group's assignment follows its members'
/// claims, under both protocols (range alone would give the first member
/// partitions 0 and 1).
#[test]
fn claims_decide_the_assignment() {
    for protocol in [RebalanceProtocol::Eager, RebalanceProtocol::Cooperative] {
        let broker = MemoryBroker::new();
        broker.create_topic("t", 4).unwrap();
        common::claims_are_followed(Arc::new(broker), move || {
            let mut c = ConsumerConfig::new("claims", ["t"]);
            c.rebalance_protocol = protocol;
            c
        });
    }
}

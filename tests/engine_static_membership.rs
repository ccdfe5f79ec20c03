//! Static membership (KIP-345) on the memory broker: the transport's rules
//! (a restarted static member gets its partitions back without a
//! rebalance; one that stays away past its session timeout is replaced;
//! two live members with one instance id fence the older), and the
//! engine's restart path, measured with and without an instance id.
//! Kafka's side: `tests/kafka_static_membership.rs` and the fake-coordinator
//! tests in `src/transport/kafka/group/static_tests.rs`.

mod scenarios;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kafka_retry::transport::{Consumer, ConsumerConfig, ConsumerEvent, Transport};
use kafka_retry::{Engine, Error, MemoryBroker, OutRecord, Outcome, Record, TopicPartition};
use scenarios::wait_until;

fn config(instance: Option<&str>, session: Duration) -> ConsumerConfig {
    let mut c = ConsumerConfig::new("g", ["t"]);
    c.group_instance_id = instance.map(str::to_string);
    c.session_timeout = session;
    c
}

/// Polls until `Assigned`; fails on `Revoked`/`Lost`.
fn assigned(c: &mut dyn Consumer) -> Vec<TopicPartition> {
    for _ in 0..100 {
        match c.poll(Duration::from_millis(20)).unwrap() {
            ConsumerEvent::Assigned(p) => return p,
            ConsumerEvent::Records(_) => {}
            other => panic!("while joining: {other:?}"),
        }
    }
    panic!("not assigned");
}

/// A group of a static member `a` and a dynamic `b`, settled.
fn two_members(
    broker: &MemoryBroker,
    session: Duration,
) -> (Box<dyn Consumer>, Box<dyn Consumer>, Vec<TopicPartition>) {
    let mut a = broker.consumer(config(Some("a"), session)).unwrap();
    assert_eq!(assigned(&mut *a).len(), 4);
    let mut b = broker.consumer(config(None, session)).unwrap();
    // b joins: a revokes, both rejoin.
    let _ = b.poll(Duration::from_millis(10)).unwrap();
    assert!(matches!(
        a.poll(Duration::from_millis(10)).unwrap(),
        ConsumerEvent::Revoked(_)
    ));
    let mine = loop {
        match a.poll(Duration::from_millis(10)).unwrap() {
            ConsumerEvent::Assigned(p) => break p,
            _ => {
                let _ = b.poll(Duration::from_millis(1)).unwrap();
            }
        }
    };
    assert_eq!(assigned(&mut *b).len(), 2);
    assert_eq!(mine.len(), 2);
    (a, b, mine)
}

/// The events `c` returns within `d`, records left out.
fn events(c: &mut dyn Consumer, d: Duration) -> Vec<ConsumerEvent> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    while Instant::now() < end {
        match c.poll(Duration::from_millis(10)).unwrap() {
            ConsumerEvent::Records(_) => {}
            e => out.push(e),
        }
    }
    out
}

#[test]
fn a_restarted_static_member_gets_its_partitions_back_without_a_rebalance() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    let (mut a, mut b, mine) = two_members(&broker, Duration::from_secs(10));
    a.close_for_restart().unwrap();
    drop(a);
    assert!(
        events(&mut *b, Duration::from_millis(50)).is_empty(),
        "away: no rebalance"
    );
    let mut a2 = broker
        .consumer(config(Some("a"), Duration::from_secs(10)))
        .unwrap();
    assert_eq!(assigned(&mut *a2), mine, "the same partitions, at once");
    assert!(
        events(&mut *b, Duration::from_millis(50)).is_empty(),
        "back: no rebalance"
    );
    // Commits of the returned member count.
    a2.commit(&[(mine[0].clone(), 3)]).unwrap();
    assert_eq!(
        broker.committed("g", &mine[0].topic, mine[0].partition),
        Some(3)
    );
    // A final close leaves: b gets everything.
    a2.close().unwrap();
    let ev = events(&mut *b, Duration::from_millis(100));
    assert!(
        matches!(ev.last(), Some(ConsumerEvent::Assigned(p)) if p.len() == 4),
        "{ev:?}"
    );
}

#[test]
fn a_dynamic_member_rebalances_the_group_on_restart() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    let mut b = broker
        .consumer(config(None, Duration::from_secs(10)))
        .unwrap();
    assigned(&mut *b);
    let mut a = broker
        .consumer(config(None, Duration::from_secs(10)))
        .unwrap();
    let _ = a.poll(Duration::from_millis(10)).unwrap();
    let _ = events(&mut *b, Duration::from_millis(50));
    assigned(&mut *a);
    a.close_for_restart().unwrap();
    let ev = events(&mut *b, Duration::from_millis(50));
    assert!(
        matches!(ev.first(), Some(ConsumerEvent::Revoked(_))),
        "{ev:?}"
    );
}

#[test]
fn a_static_member_away_past_its_session_is_replaced() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    let session = Duration::from_millis(200);
    let (mut a, mut b, _) = two_members(&broker, session);
    a.close_for_restart().unwrap();
    assert!(events(&mut *b, session / 2).is_empty());
    let ev = events(&mut *b, session * 2);
    assert!(
        matches!(ev.first(), Some(ConsumerEvent::Revoked(_))),
        "{ev:?}"
    );
    assert!(
        matches!(ev.last(), Some(ConsumerEvent::Assigned(p)) if p.len() == 4),
        "{ev:?}"
    );
    // Coming back late is joining anew: a rebalance.
    let mut a2 = broker.consumer(config(Some("a"), session)).unwrap();
    let _ = a2.poll(Duration::from_millis(10)).unwrap();
    let ev = events(&mut *b, Duration::from_millis(50));
    assert!(
        matches!(ev.first(), Some(ConsumerEvent::Revoked(_))),
        "{ev:?}"
    );
}

#[test]
fn a_second_live_member_with_the_same_instance_id_fences_the_first() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    let (mut a, mut b, mine) = two_members(&broker, Duration::from_secs(10));
    let mut a2 = broker
        .consumer(config(Some("a"), Duration::from_secs(10)))
        .unwrap();
    assert_eq!(assigned(&mut *a2), mine);
    assert_eq!(
        a.poll(Duration::from_millis(10)).unwrap(),
        ConsumerEvent::Lost(mine.clone())
    );
    let fenced = |e: Error| e.kafka_code().map(|c| c.code()) == Some(82);
    assert!(fenced(a.poll(Duration::ZERO).unwrap_err()));
    assert!(fenced(a.commit(&[(mine[0].clone(), 1)]).unwrap_err()));
    // The fenced member's close does not remove the newer one.
    a.close().unwrap();
    assert!(events(&mut *b, Duration::from_millis(50)).is_empty());
    a2.commit(&[(mine[0].clone(), 2)]).unwrap();
}

#[test]
fn instance_ids_are_validated() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    for bad in ["", "a b", &"x".repeat(250)] {
        let err = broker
            .consumer(config(Some(bad), Duration::from_secs(1)))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config {
                    field: "group_instance_id",
                    ..
                }
            ),
            "{err}"
        );
    }
    let err = Engine::builder(broker.clone())
        .group_id("g")
        .topics(["t"])
        .group_instance_id("x".repeat(244))
        .handler(|_r| Outcome::Done)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "group_instance_id",
                ..
            }
        ),
        "{err}"
    );
}

/// What one engine restart did.
#[derive(Debug)]
struct Restart {
    /// From `shutdown_for_restart` returning to the new engine handling
    /// its first record.
    handling_again_after: Duration,
    /// Rebalances the other engine went through meanwhile.
    other_rebalances: u64,
}

/// Two engines under a steady load; engine `a` restarts.
fn engine_restart(instance: Option<&str>) -> Restart {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    let handled: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let make = |who: usize, instance: Option<&str>| {
        let h = handled.clone();
        let mut b = Engine::builder(broker.clone())
            .group_id("g")
            .topics(["t"])
            .workers(2)
            .commit_interval(Duration::from_millis(50))
            .handler(move |r: &Record| {
                let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
                h.lock().unwrap().push((who, v.into_owned()));
                Outcome::Done
            });
        if let Some(id) = instance {
            b = b.group_instance_id(id);
        }
        b.build().unwrap()
    };
    let a = make(0, instance);
    assert!(wait_until(Duration::from_secs(5), || a
        .stats()
        .assigned_partitions
        == 4));
    let b = make(1, None);
    assert!(wait_until(Duration::from_secs(5), || {
        a.stats().assigned_partitions == 2 && b.stats().assigned_partitions == 2
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = {
        let (broker, stop) = (broker.clone(), stop.clone());
        thread::spawn(move || {
            let producer = broker.producer().unwrap();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                producer
                    .send(
                        OutRecord::new("t")
                            .key(format!("k{n}"))
                            .value(n.to_string()),
                    )
                    .unwrap();
                n += 1;
                thread::sleep(Duration::from_micros(500));
            }
            n
        })
    };
    thread::sleep(Duration::from_millis(200));
    let before = b.stats().rebalances;
    a.shutdown_for_restart(Duration::from_secs(5)).unwrap();
    let t0 = Instant::now();
    let a2 = make(2, instance);
    assert!(wait_until(Duration::from_secs(10), || {
        handled.lock().unwrap().iter().any(|(w, _)| *w == 2)
    }));
    let handling_again_after = t0.elapsed();
    thread::sleep(Duration::from_millis(200));
    let other_rebalances = b.stats().rebalances - before;
    stop.store(true, Ordering::SeqCst);
    let n = sent.join().unwrap();
    // Nothing lost: every value sent is handled at least once.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let h = handled.lock().unwrap();
            h.iter()
                .map(|(_, v)| v.as_str())
                .collect::<HashSet<_>>()
                .len()
                == n
        }),
        "not every record was handled"
    );
    a2.shutdown(Duration::from_secs(5)).unwrap();
    b.shutdown(Duration::from_secs(5)).unwrap();
    Restart {
        handling_again_after,
        other_rebalances,
    }
}

/// The restart path on the memory broker, with numbers printed: a static
/// engine comes back without the other engine rebalancing; a dynamic one
/// costs it a rebalance (the leave and the join each start one, which may
/// merge).
#[test]
fn engine_restart_with_and_without_static_membership() {
    let dynamic = engine_restart(None);
    let fixed = engine_restart(Some("engine-a"));
    println!(
        "memory broker, engine restart: dynamic: handling again after {:?}, other engine \
         rebalanced {}x; static: handling again after {:?}, other engine rebalanced {}x",
        dynamic.handling_again_after,
        dynamic.other_rebalances,
        fixed.handling_again_after,
        fixed.other_rebalances
    );
    assert!(dynamic.other_rebalances >= 1, "{dynamic:?}");
    assert_eq!(fixed.other_rebalances, 0, "{fixed:?}");
}

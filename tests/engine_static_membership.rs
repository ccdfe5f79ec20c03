//! Static membership (KIP-345) on the memory broker: the transport's rules
//! (a restarted static member gets its partitions back without a
//! rebalance; one that stays away past its session timeout is replaced;
//! two live members with one instance id fence the older), and the
//! engine's restart path, measured with and without an instance id.
//! Every transport test runs under both rebalance protocols: cooperative
//! (the default) revokes only what moves and reports only what is added.
//! Kafka's side: `tests/kafka_static_membership.rs` and the fake-coordinator
//! tests in `src/transport/kafka/group/static_tests.rs`.

mod scenarios;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kafka_retry::transport::{
    Consumer, ConsumerConfig, ConsumerEvent, RebalanceProtocol, Transport,
};
use kafka_retry::{Engine, Error, MemoryBroker, OutRecord, Outcome, Record, TopicPartition};
use scenarios::wait_until;

const BOTH: [RebalanceProtocol; 2] = [RebalanceProtocol::Eager, RebalanceProtocol::Cooperative];

fn config(
    instance: Option<&str>,
    session: Duration,
    protocol: RebalanceProtocol,
) -> ConsumerConfig {
    let mut c = ConsumerConfig::new("g", ["t"]);
    c.group_instance_id = instance.map(str::to_string);
    c.session_timeout = session;
    c.rebalance_protocol = protocol;
    c
}

/// The partitions a member owns after `events`, from `owned` before
/// (eager: `Revoked` empties it and `Assigned` is the whole assignment;
/// cooperative: both name only what changes).
fn owned_after(
    mut owned: HashSet<TopicPartition>,
    events: &[ConsumerEvent],
) -> HashSet<TopicPartition> {
    for e in events {
        match e {
            ConsumerEvent::Assigned(p) => owned.extend(p.iter().cloned()),
            ConsumerEvent::Revoked(p) | ConsumerEvent::Lost(p) => {
                for tp in p {
                    owned.remove(tp);
                }
            }
            _ => {}
        }
    }
    owned
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

/// A group of a static member `a` and a dynamic `b`, settled; `a`'s
/// partitions, sorted.
fn two_members(
    broker: &MemoryBroker,
    session: Duration,
    protocol: RebalanceProtocol,
) -> (Box<dyn Consumer>, Box<dyn Consumer>, Vec<TopicPartition>) {
    let mut a = broker
        .consumer(config(Some("a"), session, protocol))
        .unwrap();
    let first = assigned(&mut *a);
    assert_eq!(first.len(), 4);
    let mut b = broker.consumer(config(None, session, protocol)).unwrap();
    // b joins: a revokes (eager: all four; cooperative: the two that move),
    // both rejoin.
    let _ = b.poll(Duration::from_millis(10)).unwrap();
    let revoked = a.poll(Duration::from_millis(10)).unwrap();
    match (&revoked, protocol) {
        (ConsumerEvent::Revoked(p), RebalanceProtocol::Eager) => assert_eq!(p.len(), 4),
        (ConsumerEvent::Revoked(p), _) => assert_eq!(p.len(), 2),
        _ => panic!("{revoked:?}"),
    }
    // Both poll until settled: a gets its (eager: new, cooperative: empty)
    // assignment, b the two partitions (cooperative: after a follow-up
    // rebalance, since they were a's when b first joined).
    let mut seen = vec![revoked];
    let mut b_owned = HashSet::new();
    let mut a_assigned = false;
    for _ in 0..200 {
        if a_assigned && b_owned.len() == 2 {
            break;
        }
        match a.poll(Duration::from_millis(5)).unwrap() {
            ConsumerEvent::Records(_) => {}
            e => {
                a_assigned |= matches!(e, ConsumerEvent::Assigned(_));
                seen.push(e);
            }
        }
        let ev = events(&mut *b, Duration::from_millis(5));
        b_owned = owned_after(b_owned, &ev);
    }
    assert!(a_assigned, "{seen:?}");
    assert_eq!(b_owned.len(), 2);
    let mut mine: Vec<_> = owned_after(first.into_iter().collect(), &seen)
        .into_iter()
        .collect();
    mine.sort();
    assert_eq!(mine.len(), 2);
    (a, b, mine)
}

fn sorted(mut p: Vec<TopicPartition>) -> Vec<TopicPartition> {
    p.sort();
    p
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
    for protocol in BOTH {
        static_restart(protocol);
    }
}

fn static_restart(protocol: RebalanceProtocol) {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    let (mut a, mut b, mine) = two_members(&broker, Duration::from_secs(10), protocol);
    let b_owned: HashSet<_> = (0..4)
        .map(|p| TopicPartition::new("t", p))
        .filter(|tp| !mine.contains(tp))
        .collect();
    a.close_for_restart().unwrap();
    drop(a);
    assert!(
        events(&mut *b, Duration::from_millis(50)).is_empty(),
        "away: no rebalance"
    );
    let mut a2 = broker
        .consumer(config(Some("a"), Duration::from_secs(10), protocol))
        .unwrap();
    assert_eq!(
        sorted(assigned(&mut *a2)),
        mine,
        "the same partitions, at once"
    );
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
    assert_eq!(owned_after(b_owned, &ev).len(), 4, "{protocol:?}: {ev:?}");
    if protocol == RebalanceProtocol::Cooperative {
        // b kept its own two throughout.
        assert!(
            !ev.iter().any(|e| matches!(e, ConsumerEvent::Revoked(_))),
            "{ev:?}"
        );
    }
}

#[test]
fn a_dynamic_member_rebalances_the_group_on_restart() {
    for protocol in BOTH {
        let broker = MemoryBroker::new();
        broker.create_topic("t", 4).unwrap();
        let mut b = broker
            .consumer(config(None, Duration::from_secs(10), protocol))
            .unwrap();
        let b_owned = assigned(&mut *b).into_iter().collect();
        let mut a = broker
            .consumer(config(None, Duration::from_secs(10), protocol))
            .unwrap();
        let _ = a.poll(Duration::from_millis(10)).unwrap();
        let b_owned = owned_after(b_owned, &events(&mut *b, Duration::from_millis(50)));
        assert_eq!(b_owned.len(), 2);
        assigned(&mut *a);
        a.close_for_restart().unwrap();
        // A dynamic member's restart is a leave: b rebalances and takes
        // a's partitions (eager: revoking its own first).
        let ev = events(&mut *b, Duration::from_millis(50));
        if protocol == RebalanceProtocol::Eager {
            assert!(
                matches!(ev.first(), Some(ConsumerEvent::Revoked(_))),
                "{ev:?}"
            );
        }
        assert_eq!(owned_after(b_owned, &ev).len(), 4, "{protocol:?}: {ev:?}");
    }
}

#[test]
fn a_static_member_away_past_its_session_is_replaced() {
    for protocol in BOTH {
        let broker = MemoryBroker::new();
        broker.create_topic("t", 4).unwrap();
        let session = Duration::from_millis(200);
        let (mut a, mut b, mine) = two_members(&broker, session, protocol);
        let b_owned: HashSet<_> = (0..4)
            .map(|p| TopicPartition::new("t", p))
            .filter(|tp| !mine.contains(tp))
            .collect();
        a.close_for_restart().unwrap();
        assert!(events(&mut *b, session / 2).is_empty());
        let ev = events(&mut *b, session * 2);
        if protocol == RebalanceProtocol::Eager {
            assert!(
                matches!(ev.first(), Some(ConsumerEvent::Revoked(_))),
                "{ev:?}"
            );
        }
        let b_owned = owned_after(b_owned, &ev);
        assert_eq!(b_owned.len(), 4, "{protocol:?}: {ev:?}");
        // Coming back late is joining anew: a rebalance that takes
        // partitions from b.
        let mut a2 = broker
            .consumer(config(Some("a"), session, protocol))
            .unwrap();
        let _ = a2.poll(Duration::from_millis(10)).unwrap();
        let ev = events(&mut *b, Duration::from_millis(50));
        assert!(
            matches!(ev.first(), Some(ConsumerEvent::Revoked(_))),
            "{ev:?}"
        );
    }
}

#[test]
fn a_second_live_member_with_the_same_instance_id_fences_the_first() {
    for protocol in BOTH {
        let broker = MemoryBroker::new();
        broker.create_topic("t", 4).unwrap();
        let (mut a, mut b, mine) = two_members(&broker, Duration::from_secs(10), protocol);
        let mut a2 = broker
            .consumer(config(Some("a"), Duration::from_secs(10), protocol))
            .unwrap();
        assert_eq!(sorted(assigned(&mut *a2)), mine);
        match a.poll(Duration::from_millis(10)).unwrap() {
            ConsumerEvent::Lost(p) => assert_eq!(sorted(p), mine),
            other => panic!("{protocol:?}: {other:?}"),
        }
        let fenced = |e: Error| e.kafka_code().map(|c| c.code()) == Some(82);
        assert!(fenced(a.poll(Duration::ZERO).unwrap_err()));
        assert!(fenced(a.commit(&[(mine[0].clone(), 1)]).unwrap_err()));
        // The fenced member's close does not remove the newer one.
        a.close().unwrap();
        assert!(events(&mut *b, Duration::from_millis(50)).is_empty());
        a2.commit(&[(mine[0].clone(), 2)]).unwrap();
    }
}

#[test]
fn instance_ids_are_validated() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    for bad in ["", "a b", &"x".repeat(250)] {
        let err = broker
            .consumer(config(
                Some(bad),
                Duration::from_secs(1),
                RebalanceProtocol::default(),
            ))
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
fn engine_restart(instance: Option<&str>, protocol: RebalanceProtocol) -> Restart {
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
            .rebalance_protocol(protocol)
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
    for protocol in BOTH {
        let dynamic = engine_restart(None, protocol);
        let fixed = engine_restart(Some("engine-a"), protocol);
        println!(
            "memory broker, {protocol:?}, engine restart: dynamic: handling again after {:?}, \
             other engine rebalanced {}x; static: handling again after {:?}, other engine \
             rebalanced {}x",
            dynamic.handling_again_after,
            dynamic.other_rebalances,
            fixed.handling_again_after,
            fixed.other_rebalances
        );
        // `rebalances` counts revokes and losses: under cooperative the
        // leave only adds partitions to the other engine, the join takes
        // them back, so at least that one counts.
        assert!(dynamic.other_rebalances >= 1, "{protocol:?}: {dynamic:?}");
        assert_eq!(fixed.other_rebalances, 0, "{protocol:?}: {fixed:?}");
    }
}

//! Cooperative rebalancing (KIP-429) under the engine, on the memory
//! broker: a third engine joins a group of two under load while one of the
//! two is slow to rejoin (its poll is held for a while), so the rebalance
//! lasts that long. With cooperative, the other engine keeps handling its
//! partitions during the whole rebalance; with eager it handles none (it
//! revoked them all). In both, every record is handled at least once.

#[macro_use]
mod forward;
mod scenarios;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kafka_retry::transport::{
    Consumer, ConsumerConfig, ConsumerEvent, Producer, RebalanceProtocol, Transport,
};
use kafka_retry::{Engine, MemoryBroker, OutRecord, Outcome, Record};
use scenarios::wait_until;

const HOLD: Duration = Duration::from_millis(600);

#[derive(Default)]
struct Marks {
    /// Set to make `b`'s next poll wait `HOLD` first.
    hold_b: AtomicBool,
    c_joined: Mutex<Option<Instant>>,
    b_woke: Mutex<Option<Instant>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    A,
    B,
    C,
}

/// The memory broker, with the main consumer of engine `role` instrumented.
#[derive(Clone)]
struct Wrap {
    broker: MemoryBroker,
    role: Role,
    marks: Arc<Marks>,
}

impl std::fmt::Debug for Wrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wrap({:?})", self.role)
    }
}

struct Instrumented {
    inner: Box<dyn Consumer>,
    role: Role,
    marks: Arc<Marks>,
}

impl std::fmt::Debug for Instrumented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Instrumented({:?})", self.role)
    }
}

impl Consumer for Instrumented {
    fn poll(&mut self, timeout: Duration) -> kafka_retry::Result<ConsumerEvent> {
        match self.role {
            Role::B if self.marks.hold_b.swap(false, Ordering::SeqCst) => {
                thread::sleep(HOLD);
                *self.marks.b_woke.lock().unwrap() = Some(Instant::now());
            }
            Role::C => {
                let mut j = self.marks.c_joined.lock().unwrap();
                if j.is_none() {
                    *j = Some(Instant::now());
                }
            }
            _ => {}
        }
        self.inner.poll(timeout)
    }
    forward_consumer!(pause, resume, commit, assignment, close);
}

impl Transport for Wrap {
    fn consumer(&self, config: ConsumerConfig) -> kafka_retry::Result<Box<dyn Consumer>> {
        let main = config.group_id == "g";
        let inner = self.broker.consumer(config)?;
        if !main {
            return Ok(inner);
        }
        Ok(Box::new(Instrumented {
            inner,
            role: self.role,
            marks: self.marks.clone(),
        }))
    }
    fn producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
        self.broker.producer()
    }
    fn create_topic(&self, t: &str, p: i32, r: Option<i16>) -> kafka_retry::Result<()> {
        Transport::create_topic(&self.broker, t, p, r)
    }
    fn partition_count(&self, t: &str) -> kafka_retry::Result<Option<i32>> {
        self.broker.partition_count(t)
    }
}

/// What a third engine's arrival did.
#[derive(Debug)]
struct Arrival {
    /// Records engine A handled while the rebalance was held open (from
    /// 100 ms after C's join, to give eager revokes time to finish, until
    /// B rejoined).
    a_handled_during_rebalance: usize,
    distinct_handled: usize,
    sent: usize,
    /// Including duplicates (at least once).
    handled: usize,
}

fn third_member_joins(protocol: RebalanceProtocol) -> Arrival {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 6).unwrap();
    let marks = Arc::new(Marks::default());
    let handled: Arc<Mutex<Vec<(Role, Instant, String)>>> = Arc::default();
    let make = |role: Role| {
        let h = handled.clone();
        let transport = Wrap {
            broker: broker.clone(),
            role,
            marks: marks.clone(),
        };
        Engine::builder(transport)
            .group_id("g")
            .topics(["t"])
            .workers(2)
            .rebalance_protocol(protocol)
            .commit_interval(Duration::from_millis(50))
            .handler(move |r: &Record| {
                let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
                h.lock()
                    .unwrap()
                    .push((role, Instant::now(), v.into_owned()));
                Outcome::Done
            })
            .build()
            .unwrap()
    };
    let a = make(Role::A);
    assert!(wait_until(Duration::from_secs(5), || a
        .stats()
        .assigned_partitions
        == 6));
    let b = make(Role::B);
    assert!(
        wait_until(Duration::from_secs(5), || {
            a.stats().assigned_partitions == 3 && b.stats().assigned_partitions == 3
        }),
        "{protocol:?}: {} + {}",
        a.stats().assigned_partitions,
        b.stats().assigned_partitions
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (broker, stop) = (broker.clone(), stop.clone());
        thread::spawn(move || {
            let producer = broker.producer().unwrap();
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let r = OutRecord::new("t")
                    .partition((n % 6) as i32)
                    .value(n.to_string());
                producer.send(r).unwrap();
                n += 1;
                thread::sleep(Duration::from_micros(300));
            }
            n
        })
    };
    thread::sleep(Duration::from_millis(200));
    marks.hold_b.store(true, Ordering::SeqCst);
    let c = make(Role::C);
    assert!(wait_until(Duration::from_secs(10), || {
        let (sa, sb, sc) = (a.stats(), b.stats(), c.stats());
        sa.assigned_partitions == 2 && sb.assigned_partitions == 2 && sc.assigned_partitions == 2
    }));
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let sent = sender.join().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let h = handled.lock().unwrap();
            h.iter()
                .map(|(_, _, v)| v.as_str())
                .collect::<HashSet<_>>()
                .len()
                == sent
        }),
        "not every record was handled"
    );
    for e in [a, b, c] {
        e.shutdown(Duration::from_secs(5)).unwrap();
    }
    let joined = marks.c_joined.lock().unwrap().expect("c polled");
    let woke = marks.b_woke.lock().unwrap().expect("b was held");
    let h = handled.lock().unwrap();
    let from = joined + Duration::from_millis(100);
    Arrival {
        a_handled_during_rebalance: h
            .iter()
            .filter(|(r, t, _)| *r == Role::A && *t > from && *t < woke)
            .count(),
        distinct_handled: h
            .iter()
            .map(|(_, _, v)| v.as_str())
            .collect::<HashSet<_>>()
            .len(),
        sent,
        handled: h.len(),
    }
}

#[test]
fn cooperative_keeps_unmoved_partitions_delivering_and_eager_stops_them() {
    let eager = third_member_joins(RebalanceProtocol::Eager);
    let cooperative = third_member_joins(RebalanceProtocol::Cooperative);
    println!("eager: {eager:?}\ncooperative: {cooperative:?}");
    // Held open for HOLD with a record every 0.3 ms: hundreds for A's
    // partitions, unless A stopped.
    assert_eq!(eager.a_handled_during_rebalance, 0, "{eager:?}");
    assert!(
        cooperative.a_handled_during_rebalance > 0,
        "{cooperative:?}"
    );
    for run in [&eager, &cooperative] {
        assert_eq!(run.distinct_handled, run.sent, "nothing lost: {run:?}");
        assert!(run.handled >= run.sent, "{run:?}");
    }
}

fn member(broker: &MemoryBroker, protocol: RebalanceProtocol) -> Box<dyn Consumer> {
    let mut c = ConsumerConfig::new("g", ["t"]);
    c.rebalance_protocol = protocol;
    broker.consumer(c).unwrap()
}

/// Non-empty events of `c` over a few polls.
fn events(c: &mut dyn Consumer, polls: usize) -> Vec<ConsumerEvent> {
    (0..polls)
        .map(|_| c.poll(Duration::from_millis(5)).unwrap())
        .filter(|e| !matches!(e, ConsumerEvent::Records(r) if r.is_empty()))
        .collect()
}

fn tp(p: i32) -> kafka_retry::TopicPartition {
    kafka_retry::TopicPartition::new("t", p)
}

#[test]
fn cooperative_members_revoke_only_what_moves_and_eager_ones_everything() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 6).unwrap();
    let mut a = member(&broker, RebalanceProtocol::Cooperative);
    assert_eq!(
        events(&mut *a, 1),
        vec![ConsumerEvent::Assigned((0..6).map(tp).collect())]
    );
    let mut b = member(&broker, RebalanceProtocol::Cooperative);
    let _ = b.poll(Duration::from_millis(5)).unwrap();
    // a keeps 0-2 and revokes 3-5; it may still commit them until its next poll.
    let revoked: Vec<_> = (3..6).map(tp).collect();
    assert_eq!(
        events(&mut *a, 1),
        vec![ConsumerEvent::Revoked(revoked.clone())]
    );
    a.commit(&[(tp(4), 0), (tp(0), 0)]).unwrap();
    // Then nothing new for a; b gets 3-5 in the follow-up rebalance.
    let mut seen_b = Vec::new();
    let mut seen_a = Vec::new();
    for _ in 0..4 {
        seen_b.extend(events(&mut *b, 1));
        seen_a.extend(events(&mut *a, 1));
    }
    assert!(
        seen_a.iter().all(|e| *e == ConsumerEvent::Assigned(vec![])),
        "{seen_a:?}"
    );
    assert!(
        !seen_b
            .iter()
            .any(|e| matches!(e, ConsumerEvent::Revoked(_))),
        "{seen_b:?}"
    );
    assert_eq!(seen_b.last(), Some(&ConsumerEvent::Assigned(revoked)));
    assert_eq!(a.assignment(), (0..3).map(tp).collect::<Vec<_>>());
    assert!(a.commit(&[(tp(4), 1)]).is_err(), "released");

    // An eager member joins: the group falls back to eager, everything is
    // revoked.
    let mut c = member(&broker, RebalanceProtocol::Eager);
    let _ = c.poll(Duration::from_millis(5)).unwrap();
    assert_eq!(
        events(&mut *a, 1),
        vec![ConsumerEvent::Revoked((0..3).map(tp).collect())]
    );
    assert_eq!(
        events(&mut *b, 1),
        vec![ConsumerEvent::Revoked((3..6).map(tp).collect())]
    );
}

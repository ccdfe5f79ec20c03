//! The engine on the embedded memory broker: the shared scenarios plus
//! crash/no-loss and watermark tests that need broker internals.

#[macro_use]
mod forward;
mod faulty;
mod scenarios;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faulty::{Faulty, Rng};
use kafka_retry::transport::{Consumer, ConsumerConfig, ConsumerEvent, Producer, Transport};
use kafka_retry::{Engine, Error, MemoryBroker, OutRecord, Outcome, Record, RetryPolicy};
use scenarios::{header, memory_t, wait_until, Env};

fn env() -> Env {
    Env {
        transport: Arc::new(MemoryBroker::new()),
        session_timeout: Duration::from_secs(2),
        slack: Duration::from_millis(100),
        name: "memory",
    }
}

#[test]
fn smoke() {
    let (broker, builder) = memory_t("g", 1);
    let engine = builder
        .handler(|_r: &Record| Outcome::Done)
        .build()
        .unwrap();
    broker.produce(OutRecord::new("t").value("x")).unwrap();
    wait_until(Duration::from_secs(5), || engine.stats().done >= 1);
    assert_eq!(engine.stats().done, 1);
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(broker.committed("g", "t", 0), Some(1));
}

// Every scenario of tests/scenarios, as one #[test] each.
scenario_tests!(env());

#[test]
fn build_validates_and_names_the_field() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let base = || {
        Engine::builder(broker.clone())
            .group_id("g")
            .topics(["t"])
            .handler(|_r: &Record| Outcome::Done)
    };
    let field = |r: kafka_retry::Result<Engine>| match r {
        Err(Error::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    assert_eq!(field(base().workers(0).build()), "workers");
    assert_eq!(field(base().group_id("").build()), "group_id");
    assert_eq!(field(base().retry_topic("t").build()), "retry_topic");
    assert_eq!(
        field(
            base()
                .policy(RetryPolicy::new(Duration::ZERO, Duration::from_secs(1)))
                .build()
        ),
        "retry_interval"
    );
    assert_eq!(
        field(
            Engine::builder(broker.clone())
                .group_id("g")
                .topics(["t"])
                .build()
        ),
        "handler"
    );
    match base().topics(["missing"]).build() {
        Err(Error::UnknownTopic(t)) => assert_eq!(t, "missing"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dead_lettering_off_drops_with_a_counter() {
    let (broker, builder) = memory_t("g", 1);
    let engine = builder
        .no_dead_letter_topic()
        .handler(|_r: &Record| Outcome::reject("no"))
        .build()
        .unwrap();
    broker.produce(OutRecord::new("t").value("x")).unwrap();
    wait_until(Duration::from_secs(5), || engine.stats().dropped >= 1);
    assert_eq!(engine.stats().dropped, 1);
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert!(!broker.topics().contains(&"g-dlt".to_string()));
}

/// The watermark never passes an unfinished record: with offset 0 stuck in
/// a slow handler, later records finish but the commit stays at 0.
#[test]
fn watermark_waits_for_a_slow_record() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let release = Arc::new(AtomicBool::new(false));
    let r2 = release.clone();
    let engine = Engine::builder(broker.clone())
        .group_id("g")
        .topics(["t"])
        .workers(4)
        .commit_interval(Duration::from_millis(20))
        .handler(move |r: &Record| {
            if r.value.as_deref() == Some(b"slow") {
                while !r2.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Outcome::Done
        })
        .build()
        .unwrap();
    broker
        .produce(OutRecord::new("t").key("slow-key").value("slow"))
        .unwrap();
    for i in 0..50 {
        broker
            .produce(OutRecord::new("t").key(format!("k{i}")).value("fast"))
            .unwrap();
    }
    // Records keyed to the slow record's worker wait behind it (per-key
    // order); the other three workers finish theirs.
    wait_until(Duration::from_secs(5), || engine.stats().done >= 25);
    assert!(
        engine.stats().done >= 25,
        "fast records finished behind the slow one"
    );
    std::thread::sleep(Duration::from_millis(100)); // several commit intervals
    assert!(
        broker.committed("g", "t", 0).unwrap_or(0) == 0,
        "committed past the unfinished record 0: {:?}",
        broker.committed("g", "t", 0)
    );
    release.store(true, Ordering::SeqCst);
    wait_until(Duration::from_secs(5), || {
        broker.committed("g", "t", 0) == Some(51)
    });
    assert_eq!(broker.committed("g", "t", 0), Some(51));
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

/// A slow handler does not let the consumer buffer without bound: fetching
/// pauses and in-flight stays near the queue capacity.
#[test]
fn slow_handlers_pause_fetching() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 2).unwrap();
    let batch: Vec<OutRecord> = (0..20_000)
        .map(|i| OutRecord::new("t").key(format!("k{i}")).value("v"))
        .collect();
    for r in broker.producer().unwrap().send_batch(batch) {
        r.unwrap();
    }
    let engine = Engine::builder(broker.clone())
        .group_id("g")
        .topics(["t"])
        .workers(2)
        .queue_capacity(256)
        .max_poll_records(100)
        .handler(|_r: &Record| {
            std::thread::sleep(Duration::from_millis(1));
            Outcome::Done
        })
        .build()
        .unwrap();
    let mut max_in_flight = 0;
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        max_in_flight = max_in_flight.max(engine.stats().in_flight);
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    // 2 workers x 256 queued + one poll of outbox + the running ones.
    assert!(
        max_in_flight <= 2 * 256 + 100 + 2 + 256,
        "in flight grew to {max_in_flight}"
    );
    assert!(
        stats.received < 5_000,
        "read {} records ahead of slow handlers",
        stats.received
    );
}

// ---------------------------------------------------------------------------
// No loss under abrupt failure.

/// Seeded random mixes of success, retry, reject and panic over thousands of
/// records; the engine's transport fails abruptly at random moments (no
/// drain, no commit) and a new engine starts on the same broker. Every record
/// ends handled or dead-lettered: duplicates are counted, losses fail.
#[test]
fn no_loss_across_abrupt_failures() {
    let seed: u64 = std::env::var("KAFKA_RETRY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng(seed);
    let broker = MemoryBroker::new();
    broker.create_topic("in", 4).unwrap();
    let n = 10_000u64;
    // Fate per record: 0..70 done, 70..85 retry once then done, 85..92 reject, 92..97 panic once, 97..100 always retry (expires).
    let fates: Vec<u64> = (0..n).map(|_| rng.next() % 100).collect();
    let batch: Vec<OutRecord> = (0..n)
        .map(|i| {
            OutRecord::new("in")
                .key(format!("k{}", i % 500))
                .value(i.to_string())
        })
        .collect();
    for r in broker.producer().unwrap().send_batch(batch) {
        r.unwrap();
    }
    let done: Arc<Mutex<Vec<u64>>> = Arc::default();
    let attempts: Arc<Mutex<std::collections::HashMap<u64, u32>>> = Arc::default();
    let fates = Arc::new(fates);
    let mut restarts = 0;
    let start = Instant::now();
    loop {
        let (faulty, broken) = Faulty::new(broker.clone());
        let (d, a, f) = (done.clone(), attempts.clone(), fates.clone());
        let engine = Engine::builder(faulty)
            .group_id("crash")
            .topics(["in"])
            .workers(3)
            .session_timeout(Duration::from_secs(1))
            .rebalance_timeout(Duration::from_secs(2))
            .revoke_timeout(Duration::from_millis(500))
            .commit_interval(Duration::from_millis(30))
            .policy(RetryPolicy::new(
                Duration::from_millis(40),
                Duration::from_millis(400),
            ))
            .handler(move |r: &Record| {
                let id: u64 = std::str::from_utf8(r.value.as_deref().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                let tries = {
                    let mut a = a.lock().unwrap();
                    let e = a.entry(id).or_insert(0);
                    *e += 1;
                    *e
                };
                let outcome = match f[id as usize] {
                    0..=69 => Outcome::Done,
                    70..=84 if tries > 1 => Outcome::Done,
                    70..=84 => Outcome::retry("not yet"),
                    85..=91 => Outcome::reject("bad"),
                    92..=96 if tries == 1 => panic!("injected panic {id}"),
                    92..=96 => Outcome::Done,
                    _ => Outcome::retry("never"),
                };
                if outcome == Outcome::Done {
                    d.lock().unwrap().push(id);
                }
                outcome
            })
            .build()
            .unwrap();
        // Let it run a random while, then fail every call abruptly.
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 200));
        broken.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(rng.next() % 50));
        // A short deadline: the commit fails, nothing is drained cleanly.
        let _ = engine.shutdown(Duration::from_millis(300));
        restarts += 1;
        let dead: HashSet<u64> = (0..4)
            .flat_map(|p| broker.records("crash-dlt", p).unwrap_or_default())
            .map(|r| {
                std::str::from_utf8(r.value.as_deref().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        let handled: HashSet<u64> = done.lock().unwrap().iter().copied().collect();
        let missing = (0..n)
            .filter(|i| !handled.contains(i) && !dead.contains(i))
            .count();
        if missing == 0 {
            let total_done = done.lock().unwrap().len();
            let dead_total: usize = (0..4)
                .map(|p| broker.records("crash-dlt", p).unwrap().len())
                .sum();
            let duplicates = total_done + dead_total - n as usize;
            println!(
                "no-loss: seed {seed:#x}, {n} records, {restarts} abrupt failures, 0 lost, {duplicates} duplicates, {:?}",
                start.elapsed()
            );
            // Every dead letter has a reason.
            for p in 0..4 {
                for r in broker.records("crash-dlt", p).unwrap() {
                    assert!(header(&r, kafka_retry::DEAD_REASON).is_some());
                }
            }
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{missing} records still missing after {restarts} restarts"
        );
    }
    assert!(
        restarts >= 2,
        "the test must have crashed the engine more than once"
    );
}

#[test]
fn shutdown_reports_uncommitted_work_when_the_broker_is_gone() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let (faulty, broken) = Faulty::new(broker.clone());
    let engine = Engine::builder(faulty)
        .group_id("g")
        .topics(["t"])
        .commit_interval(Duration::from_secs(60))
        .handler(|_r: &Record| Outcome::Done)
        .build()
        .unwrap();
    broker.produce(OutRecord::new("t").value("x")).unwrap();
    wait_until(Duration::from_secs(5), || engine.stats().done >= 1);
    broken.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let err = engine.shutdown(Duration::from_secs(1)).unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "shutdown took {:?}",
        t0.elapsed()
    );
    let msg = err.to_string();
    assert!(
        msg.contains("t-0@1"),
        "error names what was not committed: {msg}"
    );
}

/// A shutdown that interrupts a revoke wait keeps its time for the final
/// commit and the leave: the consumer thread stops by the deadline even
/// though the revoked partition's record is still in a handler (revoke
/// timeout 20 s, shutdown 2 s). Before, the revoke wait ran to the
/// shutdown's deadline and the consumer thread was reported still running.
#[test]
fn a_shutdown_during_a_revoke_wait_still_stops_the_consumer() {
    let (broker, builder) = memory_t("g-revoke-stop", 2);
    let (entered, release) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (e, r) = (entered.clone(), release.clone());
    let make = |b: kafka_retry::EngineBuilder| {
        b.rebalance_protocol(kafka_retry::transport::RebalanceProtocol::Eager)
            .revoke_timeout(Duration::from_secs(20))
            .session_timeout(Duration::from_secs(30))
    };
    let a = make(builder)
        .handler(move |_r: &Record| {
            e.store(true, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Outcome::Done
        })
        .build()
        .unwrap();
    broker.produce(OutRecord::new("t").value("block")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || entered.load(Ordering::SeqCst)));
    // A second member: `a` revokes everything (eager) and waits for the
    // record in its handler.
    let b = make(
        Engine::builder(broker.clone())
            .group_id("g-revoke-stop")
            .topics(["t"]),
    )
    .handler(|_r: &Record| Outcome::Done)
    .build()
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || a.stats().rebalances >= 1));
    let t0 = Instant::now();
    let err = a.shutdown(Duration::from_secs(2)).unwrap_err();
    let took = t0.elapsed();
    release.store(true, Ordering::SeqCst);
    let Error::Shutdown(report) = err else {
        panic!("expected a shutdown report, got {err:?}")
    };
    // It ends at its deadline (a worker is still running), not later.
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    // The worker is in the handler (it cannot be interrupted); the
    // consumer thread committed, left and stopped.
    assert!(
        report
            .threads_not_stopped
            .iter()
            .any(|t| t.contains("worker") && t.contains("in the handler")),
        "{report:?}"
    );
    assert!(
        !report
            .threads_not_stopped
            .iter()
            .any(|t| t.contains("consumer")),
        "{report:?}"
    );
    b.shutdown(Duration::from_secs(5)).unwrap();
}

/// The relay's own group counts its rebalances apart
/// (`Stats::relay_rebalances`): a second engine of the group takes part of
/// the retry topic from the first one's relay (eager: everything is
/// revoked first), which the consumer thread's count does not show.
#[test]
fn relay_rebalances_are_counted() {
    let (broker, builder) = memory_t("g-relay-rebalance", 2);
    let eager = |b: kafka_retry::EngineBuilder| {
        b.rebalance_protocol(kafka_retry::transport::RebalanceProtocol::Eager)
            .session_timeout(Duration::from_secs(30))
            .handler(|_r: &Record| Outcome::Done)
    };
    let a = eager(builder).build().unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        let s = a.stats();
        s.assigned_partitions == 2 && s.relay_partitions > 0
    }));
    let before = a.stats();
    assert_eq!(
        (before.rebalances, before.relay_rebalances),
        (0, 0),
        "{before:?}"
    );
    let b = eager(
        Engine::builder(broker.clone())
            .group_id("g-relay-rebalance")
            .topics(["t"]),
    )
    .build()
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let s = a.stats();
            s.relay_rebalances >= 1 && s.rebalances >= 1
        }),
        "{:?}",
        a.stats()
    );
    b.shutdown(Duration::from_secs(5)).unwrap();
    a.shutdown(Duration::from_secs(5)).unwrap();
}

/// The relay's heap is bounded: past `max_parked` it pauses the retry topic
/// instead of growing, and everything is still relayed in the end. Through
/// a transport without a `Reader` (`Losing` has none), where parked records
/// are kept whole; with one they are indexed (tests/engine_parking.rs).
#[test]
fn relay_heap_is_bounded() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let whole = Losing {
        inner: broker.clone(),
        lose: Arc::new(AtomicBool::new(false)),
    };
    let engine = Engine::builder(whole)
        .group_id("g")
        .topics(["t"])
        .max_parked(50)
        .max_poll_records(20)
        .policy(RetryPolicy::new(
            Duration::from_millis(400),
            Duration::from_secs(60),
        ))
        .handler(move |r: &Record| {
            if header(r, kafka_retry::ATTEMPTS).is_some() {
                h.fetch_add(1, Ordering::SeqCst);
                Outcome::Done
            } else {
                Outcome::retry("later")
            }
        })
        .build()
        .unwrap();
    let batch: Vec<OutRecord> = (0..500)
        .map(|i| OutRecord::new("t").key(format!("k{i}")).value("v"))
        .collect();
    for r in broker.producer().unwrap().send_batch(batch) {
        r.unwrap();
    }
    let mut max_parked = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while handled.load(Ordering::SeqCst) < 500 && Instant::now() < deadline {
        max_parked = max_parked.max(engine.stats().parked);
        std::thread::sleep(Duration::from_millis(2));
    }
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 500, "{stats:?}");
    // One poll past the bound at most: 50 + 20.
    assert!(max_parked >= 40, "the heap never filled: {max_parked}");
    assert!(
        max_parked <= 70,
        "the heap grew past its bound: {max_parked}"
    );
}

/// Wraps the memory broker; on demand a consumer reports its partitions
/// `Lost` (as after a session expiry) and rejoins as a new member.
#[derive(Debug, Clone)]
struct Losing {
    inner: MemoryBroker,
    lose: Arc<AtomicBool>,
}

#[derive(Debug)]
struct LosingConsumer {
    broker: MemoryBroker,
    config: ConsumerConfig,
    inner: Box<dyn Consumer>,
    lose: Arc<AtomicBool>,
}

impl Transport for Losing {
    fn consumer(&self, config: ConsumerConfig) -> kafka_retry::Result<Box<dyn Consumer>> {
        Ok(Box::new(LosingConsumer {
            broker: self.inner.clone(),
            inner: self.inner.consumer(config.clone())?,
            config,
            lose: self.lose.clone(),
        }))
    }
    fn producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
        self.inner.producer()
    }
    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        rf: Option<i16>,
    ) -> kafka_retry::Result<()> {
        Transport::create_topic(&self.inner, topic, partitions, rf)
    }
    fn partition_count(&self, topic: &str) -> kafka_retry::Result<Option<i32>> {
        self.inner.partition_count(topic)
    }
}

impl Consumer for LosingConsumer {
    fn poll(&mut self, timeout: Duration) -> kafka_retry::Result<ConsumerEvent> {
        // Only the main group (not the relay's) loses its partitions.
        if !self.config.group_id.ends_with("-relay") && self.lose.swap(false, Ordering::SeqCst) {
            let lost = self.inner.assignment();
            // A fenced member: a new one joins in its place.
            self.inner = self.broker.consumer(self.config.clone())?;
            return Ok(ConsumerEvent::Lost(lost));
        }
        self.inner.poll(timeout)
    }
    forward_consumer!(pause, resume, commit, assignment, close);
}

/// Partitions lost without a clean revoke (session expiry): in-flight work
/// is abandoned uncommitted, the new assignment re-reads it, nothing is lost.
#[test]
fn lost_partitions_are_reread_not_lost() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 3).unwrap();
    let n = 3_000u64;
    let batch: Vec<OutRecord> = (0..n)
        .map(|i| {
            OutRecord::new("t")
                .key(format!("k{i}"))
                .value(i.to_string())
        })
        .collect();
    for r in broker.producer().unwrap().send_batch(batch) {
        r.unwrap();
    }
    let lose = Arc::new(AtomicBool::new(false));
    let done: Arc<Mutex<Vec<u64>>> = Arc::default();
    let d = done.clone();
    let engine = Engine::builder(Losing {
        inner: broker.clone(),
        lose: lose.clone(),
    })
    .group_id("g")
    .topics(["t"])
    .workers(2)
    .commit_interval(Duration::from_millis(10))
    .handler(move |r: &Record| {
        std::thread::sleep(Duration::from_micros(200));
        let id: u64 = std::str::from_utf8(r.value.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        d.lock().unwrap().push(id);
        Outcome::Done
    })
    .build()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.lock().unwrap().len() < 500 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    lose.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    let all = |d: &Vec<u64>| d.iter().copied().collect::<HashSet<u64>>().len() as u64;
    while all(&done.lock().unwrap()) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert!(!lose.load(Ordering::SeqCst), "the loss was never injected");
    assert!(stats.rebalances >= 1, "{stats:?}");
    let d = done.lock().unwrap();
    assert_eq!(all(&d), n, "records lost after a Lost event");
    println!(
        "lost partitions: {n} records, {} handled twice",
        d.len() as u64 - n
    );
    for p in 0..3 {
        assert_eq!(
            broker.committed("g", "t", p),
            Some(broker.end_offset("t", p).unwrap()),
            "partition {p} fully committed by the new member"
        );
    }
}

//! Operating the engine on the memory broker: a shutdown that says what it
//! could not finish, health states, the dead-letter circuit breaker.

#[macro_use]
mod forward;
mod scenarios;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kafka_retry::transport::{Consumer, ConsumerConfig, ConsumerEvent, Producer, Transport};
use kafka_retry::{
    DeadLetterLimit, Delivered, Engine, Error, HealthIssue, HealthStatus, MemoryBroker, OutRecord,
    Outcome, Record, RetryPolicy, ShutdownReport, TopicPartition,
};
use scenarios::wait_until;

/// Log lines of this test binary, with the thread that logged them.
fn logs() -> &'static Mutex<Vec<(Instant, String, String)>> {
    static LOGS: OnceLock<Mutex<Vec<(Instant, String, String)>>> = OnceLock::new();
    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Info
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                let t = std::thread::current().name().unwrap_or("?").to_string();
                logs()
                    .lock()
                    .unwrap()
                    .push((Instant::now(), t, r.args().to_string()));
            }
        }
        fn flush(&self) {}
    }
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        log::set_boxed_logger(Box::new(Capture)).unwrap();
        log::set_max_level(log::LevelFilter::Info);
    });
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

fn report(r: kafka_retry::Result<()>) -> ShutdownReport {
    match r {
        Err(Error::Shutdown(report)) => *report,
        other => panic!("expected a shutdown report, got {other:?}"),
    }
}

fn fill(broker: &MemoryBroker, topic: &str, n: u64) {
    let batch: Vec<OutRecord> = (0..n)
        .map(|i| {
            OutRecord::new(topic)
                .key(format!("k{i}"))
                .value(i.to_string())
        })
        .collect();
    for r in broker.producer().unwrap().send_batch(batch) {
        r.unwrap();
    }
}

fn id(r: &Record) -> u64 {
    std::str::from_utf8(r.value.as_deref().unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------
// A transport that can be broken (every call fails) or closed under the
// engine (polls say `Closed`).

#[derive(Clone)]
struct Faulty {
    /// In the injected errors, to tell this test's logs from the others'.
    name: &'static str,
    inner: MemoryBroker,
    broken: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl Faulty {
    fn new(name: &'static str, inner: &MemoryBroker) -> Self {
        Faulty {
            name,
            inner: inner.clone(),
            broken: Arc::default(),
            closed: Arc::default(),
        }
    }
}

impl fmt::Debug for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Faulty")
    }
}

fn down(name: &str) -> Error {
    Error::Timeout(format!("injected fault ({name})"))
}

impl Transport for Faulty {
    fn consumer(&self, config: ConsumerConfig) -> kafka_retry::Result<Box<dyn Consumer>> {
        Ok(Box::new(FaultyConsumer {
            main: !config.group_id.ends_with("-relay"),
            inner: self.inner.consumer(config)?,
            t: self.clone(),
        }))
    }
    fn producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
        Ok(Arc::new(FaultyProducer {
            inner: self.inner.producer()?,
            t: self.clone(),
        }))
    }
    fn create_topic(&self, t: &str, p: i32, rf: Option<i16>) -> kafka_retry::Result<()> {
        Transport::create_topic(&self.inner, t, p, rf)
    }
    fn partition_count(&self, topic: &str) -> kafka_retry::Result<Option<i32>> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(down(self.name));
        }
        self.inner.partition_count(topic)
    }
}

#[derive(Debug)]
struct FaultyConsumer {
    inner: Box<dyn Consumer>,
    t: Faulty,
    main: bool,
}

impl Consumer for FaultyConsumer {
    fn poll(&mut self, timeout: Duration) -> kafka_retry::Result<ConsumerEvent> {
        if self.main && self.t.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        if self.t.broken.load(Ordering::SeqCst) {
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return Err(down(self.t.name));
        }
        self.inner.poll(timeout)
    }
    fn commit(&mut self, offsets: &[(TopicPartition, i64)]) -> kafka_retry::Result<()> {
        if self.t.broken.load(Ordering::SeqCst) {
            return Err(down(self.t.name));
        }
        self.inner.commit(offsets)
    }
    forward_consumer!(pause, resume, assignment, close);
}

#[derive(Debug)]
struct FaultyProducer {
    inner: Arc<dyn Producer>,
    t: Faulty,
}

impl Producer for FaultyProducer {
    fn send(&self, record: OutRecord) -> kafka_retry::Result<Delivered> {
        if self.t.broken.load(Ordering::SeqCst) {
            return Err(down(self.t.name));
        }
        self.inner.send(record)
    }
}

#[test]
fn smoke() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let engine = Engine::builder(broker.clone())
        .group_id("g")
        .topics(["t"])
        .handler(|_r| Outcome::Done)
        .build()
        .unwrap();
    assert_eq!(engine.health().status, HealthStatus::Running);
    fill(&broker, "t", 10);
    assert!(wait_until(Duration::from_secs(5), || engine.stats().done == 10));
    // Everything finished and committed: a clean shutdown.
    assert!(wait_until(Duration::from_secs(5), || broker
        .committed("g", "t", 0)
        == Some(10)));
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

// ---------------------------------------------------------------------------
// Shutdown tells the truth.

/// Handlers still busy at the deadline: `shutdown` returns an error with
/// one count of abandoned records and the offset each partition is read
/// again from, which is what was committed; a new engine handles them.
#[test]
fn shutdown_with_busy_handlers_reports_what_was_abandoned() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let n = 3000;
    fill(&broker, "t", n);
    let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let s = seen.clone();
    let engine = Engine::builder(broker.clone())
        .group_id("g")
        .topics(["t"])
        .workers(2)
        .commit_interval(Duration::from_millis(20))
        .handler(move |r: &Record| {
            std::thread::sleep(Duration::from_millis(2));
            s.lock().unwrap().insert(id(r));
            Outcome::Done
        })
        .build()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || engine.stats().done >= 50));
    let t0 = Instant::now();
    let err = engine.shutdown(Duration::from_millis(500));
    let took = t0.elapsed();
    println!("{}", err.as_ref().unwrap_err());
    let r = report(err);
    assert!(took < Duration::from_millis(800), "shutdown took {took:?}");
    assert!(r.abandoned > 0, "{r}");
    assert!(r.threads_not_stopped.is_empty(), "{r}");
    assert!(r.errors.is_empty(), "{r}");
    let committed = broker.committed("g", "t", 0).expect("a commit");
    assert_eq!(
        r.uncommitted,
        vec![(TopicPartition::new("t", 0), committed)],
        "{r}"
    );
    assert!(committed < n as i64, "{r}");
    let msg = Error::Shutdown(Box::new(r.clone())).to_string();
    assert!(
        msg.contains(&format!("{} records abandoned", r.abandoned))
            && msg.contains(&format!("t-0 from offset {committed}")),
        "{msg}"
    );
    // Nothing lost: a new engine handles the rest, from the committed offset.
    let s = seen.clone();
    let engine = Engine::builder(broker.clone())
        .group_id("g")
        .topics(["t"])
        .workers(4)
        .handler(move |r: &Record| {
            s.lock().unwrap().insert(id(r));
            Outcome::Done
        })
        .build()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || seen
        .lock()
        .unwrap()
        .len()
        == n as usize));
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

/// A handler that outlasts the deadline cannot be interrupted: the error
/// names its thread and what it is doing, and shutdown still returns on
/// time.
#[test]
fn shutdown_names_a_thread_stuck_in_the_handler() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let entered = Arc::new(AtomicBool::new(false));
    let e = entered.clone();
    let engine = Engine::builder(broker.clone())
        .group_id("g")
        .topics(["t"])
        .workers(1)
        .handler(move |_r: &Record| {
            e.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(2));
            Outcome::Done
        })
        .build()
        .unwrap();
    broker.produce(OutRecord::new("t").value("0")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || entered.load(Ordering::SeqCst)));
    let t0 = Instant::now();
    let err = engine.shutdown(Duration::from_millis(400));
    println!("{}", err.as_ref().unwrap_err());
    let r = report(err);
    assert!(
        t0.elapsed() < Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.abandoned, 1, "{r}");
    assert_eq!(r.uncommitted, vec![(TopicPartition::new("t", 0), 0)], "{r}");
    assert_eq!(r.threads_not_stopped.len(), 1, "{r}");
    assert!(
        r.threads_not_stopped[0]
            .starts_with("kafka-retry-worker-0: in the handler (partition 0, offset 0)"),
        "{r}"
    );
}

/// The broker is gone: shutdown returns by the deadline, names the
/// partitions and offsets not committed and the failed commit, every
/// thread has stopped (none logs after it returned).
#[test]
fn shutdown_with_the_broker_gone_names_partitions_and_stops_every_thread() {
    let _ = logs();
    let broker = MemoryBroker::new();
    broker.create_topic("t", 2).unwrap();
    let faulty = Faulty::new("gone", &broker);
    let engine = Engine::builder(faulty.clone())
        .group_id("gone")
        .topics(["t"])
        .commit_interval(Duration::from_secs(60))
        .policy(RetryPolicy::new(
            Duration::from_millis(50),
            Duration::from_secs(30),
        ))
        .handler(|r: &Record| {
            if id(r).is_multiple_of(2) {
                Outcome::Done
            } else {
                Outcome::retry("odd")
            }
        })
        .build()
        .unwrap();
    fill(&broker, "t", 20);
    assert!(wait_until(Duration::from_secs(5), || engine.stats().done >= 10));
    assert!(wait_until(Duration::from_secs(5), || engine
        .stats()
        .relayed
        >= 1));
    faulty.broken.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let err = engine.shutdown(Duration::from_secs(1));
    let returned = Instant::now();
    println!("{}", err.as_ref().unwrap_err());
    let r = report(err);
    assert!(
        t0.elapsed() < Duration::from_millis(1300),
        "{:?}",
        t0.elapsed()
    );
    assert!(r.threads_not_stopped.is_empty(), "{r}");
    let tps: Vec<&TopicPartition> = r.uncommitted.iter().map(|(tp, _)| tp).collect();
    assert!(
        tps.contains(&&TopicPartition::new("t", 0)) && tps.contains(&&TopicPartition::new("t", 1)),
        "{r}"
    );
    // Nothing was ever committed: both are read again from their start.
    for (tp, from) in &r.uncommitted {
        if tp.topic == "t" {
            assert_eq!(*from, 0, "{r}");
        }
    }
    assert!(
        r.errors
            .iter()
            .any(|e| e.starts_with("final commit of") && e.contains("injected fault (gone)")),
        "{r}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let late: Vec<String> = logs()
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, thread, m)| {
            *at > returned && thread.starts_with("kafka-retry-") && m.contains("(gone)")
        })
        .map(|(_, t, m)| format!("{t}: {m}"))
        .collect();
    assert!(
        late.is_empty(),
        "engine threads logged after shutdown: {late:?}"
    );
}

// ---------------------------------------------------------------------------
// Health.

#[test]
fn health_running_degraded_and_stopped() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let faulty = Faulty::new("health", &broker);
    let engine = Engine::builder(faulty.clone())
        .group_id("h")
        .topics(["t"])
        .commit_interval(Duration::from_millis(20))
        .handler(|_r: &Record| Outcome::Done)
        .build()
        .unwrap();
    let probe = engine.health_probe();
    fill(&broker, "t", 5);
    assert!(wait_until(Duration::from_secs(5), || engine.stats().done == 5));
    let h = engine.health();
    assert_eq!(h.status, HealthStatus::Running, "{h}");
    assert!(h.issues.is_empty() && h.is_healthy(), "{h}");
    assert_eq!(h.to_string(), "running");

    // Broker unreachable: polls and commits fail, both are named.
    faulty.broken.store(true, Ordering::SeqCst);
    fill(&broker, "t", 1);
    assert!(wait_until(Duration::from_secs(5), || {
        let h = probe.health();
        h.issues.iter().any(|i| {
            matches!(
                i,
                HealthIssue::BrokerUnreachable {
                    reader: "consumer",
                    ..
                }
            )
        }) && h.issues.iter().any(|i| {
            matches!(
                i,
                HealthIssue::CommitsFailing {
                    reader: "consumer",
                    ..
                }
            )
        })
    }));
    let h = engine.health();
    println!("{h}");
    assert_eq!(h.status, HealthStatus::Degraded, "{h}");
    assert!(!h.is_healthy());
    assert!(
        h.to_string().starts_with("degraded: ") && h.to_string().contains("injected fault"),
        "{h}"
    );
    // Back: running again once a poll and a commit succeed.
    faulty.broken.store(false, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(5), || engine.health().is_healthy()),
        "{}",
        engine.health()
    );

    // A thread died: degraded, naming it.
    faulty.closed.store(true, Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(5), || {
        engine
            .health()
            .issues
            .iter()
            .any(|i| matches!(i, HealthIssue::ThreadDied(t) if t.thread == "kafka-retry-consumer"))
    }));
    assert_eq!(engine.health().status, HealthStatus::Degraded);
    let _ = engine.shutdown(Duration::from_secs(2));
    // Stopped, seen through the probe that outlives the engine.
    let h = probe.health();
    assert_eq!(h.status, HealthStatus::Stopped, "{h}");
    assert_eq!(h.to_string(), "stopped");
}

/// `health()` is a handful of atomic loads: cheap enough to call in a loop.
#[test]
fn health_is_cheap() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let engine = Engine::builder(broker.clone())
        .group_id("g")
        .topics(["t"])
        .handler(|_r| Outcome::Done)
        .build()
        .unwrap();
    let t0 = Instant::now();
    for _ in 0..100_000 {
        assert!(engine.health().is_healthy());
    }
    let per_call = t0.elapsed() / 100_000;
    println!("health(): {per_call:?} per call");
    assert!(per_call < Duration::from_micros(20), "{per_call:?}");
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

// ---------------------------------------------------------------------------
// The dead-letter circuit breaker.

fn dead_letters(broker: &MemoryBroker, topic: &str) -> usize {
    broker.records(topic, 0).map(|r| r.len()).unwrap_or(0)
}

/// A handler that starts rejecting everything does not empty the topic into
/// the dead-letter topic: past the limit the engine pauses, says so in
/// health, stats and the callback, commits nothing it did not handle, and
/// goes on when resumed.
#[test]
fn dead_letter_limit_pauses_and_resume_goes_on() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let n = 2000u64;
    let limit = 20u64;
    let workers = 2u64;
    let rejecting = Arc::new(AtomicBool::new(true));
    let trips = Arc::new(AtomicU64::new(0));
    let (rj, tr) = (rejecting.clone(), trips.clone());
    let engine = Engine::builder(broker.clone())
        .group_id("b")
        .topics(["t"])
        .workers(workers as usize)
        .commit_interval(Duration::from_millis(20))
        .dead_letter_limit(
            DeadLetterLimit::new(limit, Duration::from_secs(60)).on_trip(move |trip| {
                println!("on_trip: {trip}");
                assert_eq!(trip.group, "b");
                assert_eq!(trip.count, 21);
                tr.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .handler(move |_r: &Record| {
            if rj.load(Ordering::SeqCst) {
                Outcome::reject("downstream says no")
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    fill(&broker, "t", n);
    assert!(wait_until(Duration::from_secs(5), || engine
        .stats()
        .dead_letter_paused));
    std::thread::sleep(Duration::from_millis(300));
    let stats = engine.stats();
    let dead = dead_letters(&broker, "b-dlt") as u64;
    println!("paused after {dead} dead letters (limit {limit}): {stats:?}");
    // The limit, the one past it, and what was already inside a handler.
    assert!(dead <= limit + 1 + workers, "{dead} dead letters");
    assert_eq!(stats.dead_lettered.rejected, dead);
    assert_eq!(stats.dead_letter_trips, 1);
    assert_eq!(trips.load(Ordering::SeqCst), 1);
    assert_eq!(stats.paused_partitions, 1);
    let h = engine.health();
    println!("{h}");
    assert_eq!(h.status, HealthStatus::Degraded, "{h}");
    assert!(h.issues.contains(&HealthIssue::DeadLetterLimit), "{h}");
    // Still paused: nothing more dead-lettered, nothing committed past it.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(dead_letters(&broker, "b-dlt") as u64, dead);
    let committed = broker.committed("b", "t", 0).unwrap_or(0);
    assert!(
        committed as u64 <= dead,
        "committed {committed} > {dead} handled"
    );

    // The downstream is back; resume.
    rejecting.store(false, Ordering::SeqCst);
    assert!(engine.resume_dead_letters());
    assert!(!engine.resume_dead_letters(), "already resumed");
    assert!(wait_until(Duration::from_secs(10), || {
        broker.committed("b", "t", 0) == Some(n as i64)
    }));
    let stats = engine.stats();
    assert_eq!(stats.done + stats.dead_lettered.rejected, n, "{stats:?}");
    assert!(!stats.dead_letter_paused);
    assert!(engine.health().is_healthy(), "{}", engine.health());
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

/// With a cool-down the engine goes on by itself (and trips again while
/// the handler keeps rejecting).
#[test]
fn dead_letter_limit_cool_down_goes_on_by_itself() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    fill(&broker, "t", 500);
    let engine = Engine::builder(broker.clone())
        .group_id("c")
        .topics(["t"])
        .workers(1)
        .dead_letter_limit(
            DeadLetterLimit::new(10, Duration::from_secs(60)).cool_down(Duration::from_millis(200)),
        )
        .handler(|_r: &Record| Outcome::reject("no"))
        .build()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || engine
        .stats()
        .dead_letter_trips
        >= 2));
    let s = engine.stats();
    assert!(s.dead_lettered.rejected >= 22, "{s:?}");
    assert!(s.dead_lettered.rejected < 500, "{s:?}");
    // Shut down while paused: what is held is abandoned, not committed.
    if let Err(e) = engine.shutdown(Duration::from_secs(5)) {
        let Error::Shutdown(r) = e else { panic!("{e}") };
        assert!(
            r.threads_not_stopped.is_empty() && r.errors.is_empty(),
            "{r}"
        );
    }
}

#[test]
fn dead_letter_limit_is_validated() {
    let b = || {
        Engine::builder(MemoryBroker::new())
            .group_id("g")
            .topics(["t"])
            .handler(|_r| Outcome::Done)
    };
    for l in [
        DeadLetterLimit::new(10, Duration::ZERO),
        DeadLetterLimit::new(2_000_000, Duration::from_secs(1)),
    ] {
        let err = b().dead_letter_limit(l).build().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config {
                    field: "dead_letter_limit",
                    ..
                }
            ),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------
// The batching writer is supervised.

/// A panic payload whose drop panics again. The writer catches a panic of
/// `send_batch` and then drops its payload outside the catch, so this one
/// kills the writer thread: a faulty producer's way in, no test hook.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("the panic payload's drop panicked too");
    }
}

/// Passes everything to the memory broker; its producer's first
/// `send_batch` (the writer's first batch) panics with [`PanicsOnDrop`].
#[derive(Debug, Clone)]
struct KillsWriter {
    inner: MemoryBroker,
    armed: Arc<AtomicBool>,
}

impl Transport for KillsWriter {
    fn consumer(&self, config: ConsumerConfig) -> kafka_retry::Result<Box<dyn Consumer>> {
        self.inner.consumer(config)
    }
    fn producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
        Ok(Arc::new(KillsWriterProducer {
            inner: self.inner.producer()?,
            armed: self.armed.clone(),
        }))
    }
    fn create_topic(&self, t: &str, p: i32, rf: Option<i16>) -> kafka_retry::Result<()> {
        Transport::create_topic(&self.inner, t, p, rf)
    }
    fn partition_count(&self, topic: &str) -> kafka_retry::Result<Option<i32>> {
        self.inner.partition_count(topic)
    }
}

#[derive(Debug)]
struct KillsWriterProducer {
    inner: Arc<dyn Producer>,
    armed: Arc<AtomicBool>,
}

impl Producer for KillsWriterProducer {
    fn send(&self, record: OutRecord) -> kafka_retry::Result<Delivered> {
        self.inner.send(record)
    }
    fn send_batch(&self, records: Vec<OutRecord>) -> Vec<kafka_retry::Result<Delivered>> {
        if self.armed.swap(false, Ordering::SeqCst) {
            std::panic::panic_any(PanicsOnDrop);
        }
        self.inner.send_batch(records)
    }
}

/// The writer thread dies on its first batch (the first retry copy):
/// health says so, and every record still comes back, its retry copy and
/// the relay's write going straight to the producer. Without supervision
/// health stays `Running` and the relay's writes fail for ever (nothing
/// comes back to be done).
#[test]
fn writer_death_degrades_health_and_writes_go_on() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 2).unwrap();
    let transport = KillsWriter {
        inner: broker.clone(),
        armed: Arc::new(AtomicBool::new(true)),
    };
    let engine = Engine::builder(transport.clone())
        .group_id("writer-death")
        .topics(["t"])
        .policy(RetryPolicy::new(
            Duration::from_millis(20),
            Duration::from_secs(60),
        ))
        .handler(|r: &Record| {
            if r.attempts() == 0 {
                Outcome::retry("first attempt")
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    assert!(engine.health().is_healthy());
    fill(&broker, "t", 20);
    assert!(
        wait_until(Duration::from_secs(10), || engine.stats().done == 20),
        "{:?}; {}",
        engine.stats(),
        engine.health()
    );
    assert!(
        !transport.armed.load(Ordering::SeqCst),
        "the writer was used"
    );
    let h = engine.health();
    assert_eq!(h.status, HealthStatus::Degraded, "{h}");
    assert!(
        h.issues.iter().any(|i| matches!(
            i,
            HealthIssue::ThreadDied(t)
                if t.thread == "kafka-retry-writer" && t.reason.contains("drop panicked")
        )),
        "{h}"
    );
    // Every record came back through the relay, each once handled again.
    let stats = engine.stats();
    assert_eq!((stats.retried, stats.relayed), (20, 20), "{stats:?}");
    let relayed: HashSet<u64> = (0..2)
        .flat_map(|p| broker.records("t", p).unwrap())
        .filter(|r| r.header(kafka_retry::ORIGIN_TOPIC).is_some())
        .map(|r| id(&r))
        .collect();
    assert_eq!(relayed, (0..20).collect::<HashSet<u64>>());
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

//! The engine's public API on the memory broker: builder setters, the
//! retry accessors of `Record`, health, transports behind `Arc` and `Box`.

#[macro_use]
mod forward;
mod scenarios;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kafka_retry::transport::{
    Consumer, ConsumerConfig, ConsumerEvent, Producer, Retention, Transport,
};
use kafka_retry::{
    Engine, EngineBuilder, Error, Handler, MemoryBroker, MissingTopics, OutRecord, Outcome, Record,
    RetryPolicy,
};
use scenarios::{memory_t, now_ms, wait_until};

fn fast(b: EngineBuilder) -> EngineBuilder {
    b.policy(RetryPolicy::new(
        Duration::from_millis(50),
        Duration::from_secs(30),
    ))
    .commit_interval(Duration::from_millis(20))
}

/// Log lines seen by this test binary (every test shares the logger).
fn logs() -> &'static Mutex<Vec<(log::Level, String)>> {
    static LOGS: OnceLock<Mutex<Vec<(log::Level, String)>>> = OnceLock::new();
    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Info
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                logs()
                    .lock()
                    .unwrap()
                    .push((r.level(), r.args().to_string()));
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

fn logged(level: log::Level, needle: &str) -> usize {
    logs()
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, m)| *l == level && m.contains(needle))
        .count()
}

#[test]
fn smoke() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    // No type on the closure's argument: the builder gives it one.
    let engine = Engine::builder(broker.clone())
        .group_id("g")
        .topics(["t"])
        .handler(|r| {
            if r.value.is_some() {
                Outcome::Done
            } else {
                Outcome::retry("no value")
            }
        })
        .build()
        .unwrap();
    broker.produce(OutRecord::new("t").value("x")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || engine.stats().done >= 1));
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

/// attempts, first received at, origin topic, partition, offset.
type RetryState = (u32, Option<i64>, Option<String>, Option<i32>, Option<i64>);

#[test]
fn record_accessors_read_the_retry_state() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 2).unwrap();
    let seen: Arc<Mutex<Vec<RetryState>>> = Arc::default();
    let s = seen.clone();
    let engine = fast(Engine::builder(broker.clone()))
        .group_id("g")
        .topics(["t"])
        .handler(move |r| {
            s.lock().unwrap().push((
                r.attempts(),
                r.first_received_at(),
                r.origin_topic().map(str::to_string),
                r.origin_partition(),
                r.origin_offset(),
            ));
            if r.attempts() < 2 {
                Outcome::retry("again")
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    let before = now_ms();
    broker
        .produce(OutRecord::new("t").key("k").value("v").partition(1))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || engine.stats().done >= 1));
    engine.shutdown(Duration::from_secs(5)).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0], (0, None, None, None, None), "first delivery");
    for (i, s) in seen.iter().enumerate().skip(1) {
        assert_eq!(s.0, i as u32);
        let first = s.1.expect("first-received-at on a redelivery");
        assert!(first >= before - 1000 && first <= now_ms(), "{first}");
        assert_eq!(s.2.as_deref(), Some("t"));
        assert_eq!(s.3, Some(1));
        assert_eq!(s.4, Some(0));
    }
    // The first-received time survives every hop.
    assert_eq!(seen[1].1, seen[2].1);
}

#[test]
fn handler_impl_takes_a_handler_type() {
    struct Counting(Arc<AtomicBool>);
    impl Handler for Counting {
        fn handle(&self, _r: &Record) -> Outcome {
            self.0.store(true, Ordering::SeqCst);
            Outcome::Done
        }
    }
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let called = Arc::new(AtomicBool::new(false));
    let engine = Engine::builder(broker.clone())
        .group_id("g")
        .topics(["t"])
        .handler_impl(Counting(called.clone()))
        .build()
        .unwrap();
    broker.produce(OutRecord::new("t").value("x")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || engine.stats().done >= 1));
    assert!(called.load(Ordering::SeqCst));
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn transports_behind_arc_and_box_build_engines() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let shared: Arc<dyn Transport> = Arc::new(broker.clone());
    let boxed: Box<dyn Transport> = Box::new(broker.clone());
    let concrete: Arc<MemoryBroker> = Arc::new(broker.clone());
    let engines = vec![
        Engine::builder(shared.clone()).group_id("g1"),
        Engine::builder(boxed).group_id("g2"),
        Engine::builder(concrete).group_id("g3"),
    ]
    .into_iter()
    .map(|b| b.topics(["t"]).handler(|_r| Outcome::Done).build().unwrap())
    .collect::<Vec<_>>();
    broker.produce(OutRecord::new("t").value("x")).unwrap();
    for e in &engines {
        assert!(wait_until(Duration::from_secs(5), || e.stats().done >= 1));
    }
    for e in engines {
        e.shutdown(Duration::from_secs(5)).unwrap();
    }
    // Each engine created its own retry topic through the shared handle.
    for g in ["g1", "g2", "g3"] {
        assert!(shared
            .partition_count(&format!("{g}-retry"))
            .unwrap()
            .is_some());
    }
}

#[test]
fn dead_letter_topic_by_name_or_none() {
    let (broker, builder) = memory_t("named", 1);
    let engine = builder
        .dead_letter_topic("named.dead")
        .handler(|_r| Outcome::reject("never"))
        .build()
        .unwrap();
    broker.produce(OutRecord::new("t").value("x")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        broker.end_offset("named.dead", 0).unwrap_or(0) >= 1
    }));
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert!(!broker.topics().contains(&"named-dlt".to_string()));

    let engine = Engine::builder(broker.clone())
        .group_id("off")
        .topics(["t"])
        .no_dead_letter_topic()
        .handler(|_r| Outcome::reject("never"))
        .build()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || engine
        .stats()
        .dropped
        >= 1));
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert!(!broker.topics().iter().any(|t| t.starts_with("off-dlt")));
}

#[test]
fn last_commit_is_none_until_the_first_commit() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let engine = fast(Engine::builder(broker.clone()))
        .group_id("g")
        .topics(["t"])
        .handler(|_r| Outcome::Done)
        .build()
        .unwrap();
    assert_eq!(engine.stats().last_commit_ms, None);
    let before = now_ms();
    broker.produce(OutRecord::new("t").value("x")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        engine.stats().last_commit_ms.is_some()
    }));
    assert!(engine.stats().last_commit_ms.unwrap() >= before);
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn build_checks_topic_names_and_names_the_group_id_when_derived() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let base = |group: &str| {
        Engine::builder(broker.clone())
            .group_id(group)
            .topics(["t"])
            .handler(|_r| Outcome::Done)
    };
    let err = base("my group").build().unwrap_err();
    match &err {
        Error::Config { field, reason } => {
            assert_eq!(*field, "group_id");
            assert!(reason.contains("`my group`"), "{reason}");
            assert!(reason.contains("`my group-retry`"), "{reason}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    // The dead-letter topic is checked too once the retry topic is named.
    let err = base("my group").retry_topic("ok").build().unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: "group_id", reason } if reason.contains("`my group-dlt`")),
        "{err}"
    );
    // Explicit names: the group id itself may hold a space.
    let engine = base("my group")
        .retry_topic("my_group-retry")
        .dead_letter_topic("my_group-dlt")
        .build()
        .unwrap();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    let field = |b: EngineBuilder| match b.build() {
        Err(Error::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    assert_eq!(field(base("g").retry_topic("bad name")), "retry_topic");
    assert_eq!(
        field(base("g").dead_letter_topic("..")),
        "dead_letter_topic"
    );
    assert_eq!(field(base("g").retry_topic("x".repeat(250))), "retry_topic");
    assert_eq!(field(base("g").topics(["bad/topic"])), "topics");
    assert_eq!(field(base("g").relay_group_id("g")), "relay_group_id");
    assert_eq!(field(base("g").relay_group_id(" ")), "relay_group_id");
}

#[test]
fn a_missing_origin_topic_fails_build_by_default() {
    let broker = MemoryBroker::new();
    let err = Engine::builder(broker.clone())
        .group_id("g")
        .topics(["later"])
        .handler(|_r| Outcome::Done)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTopic(t) if t == "later"),
        "{err}"
    );
    assert!(broker.topics().is_empty(), "{:?}", broker.topics());
}

#[test]
fn a_missing_origin_topic_is_waited_for_when_asked() {
    let broker = MemoryBroker::new();
    let engine = fast(Engine::builder(broker.clone()))
        .group_id("g")
        .topics(["later"])
        .missing_topics(MissingTopics::Wait)
        .handler(|r| {
            if r.attempts() == 0 {
                Outcome::retry("first time")
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    // Nothing to size them by: one partition each.
    assert_eq!(broker.partition_count("g-retry").unwrap(), Some(1));
    assert_eq!(broker.partition_count("g-dlt").unwrap(), Some(1));
    std::thread::sleep(Duration::from_millis(100));
    broker.create_topic("later", 3).unwrap();
    broker
        .produce(OutRecord::new("later").key("k").value("x"))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        let s = engine.stats();
        s.done >= 1 && s.relayed >= 1
    }));
    assert!(engine.health().is_healthy());
    engine.shutdown(Duration::from_secs(5)).unwrap();

    // topic_partitions sizes them when set.
    let engine = Engine::builder(broker.clone())
        .group_id("h")
        .topics(["never"])
        .missing_topics(MissingTopics::Wait)
        .topic_partitions(4)
        .handler(|_r| Outcome::Done)
        .build()
        .unwrap();
    assert_eq!(broker.partition_count("h-retry").unwrap(), Some(4));
    engine.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn the_relay_group_is_settable() {
    for (relay_group, expect) in [(None, "g1-relay"), (Some("billing-relay"), "billing-relay")] {
        let broker = MemoryBroker::new();
        broker.create_topic("t", 1).unwrap();
        let group = if relay_group.is_some() { "g2" } else { "g1" };
        let mut b = fast(Engine::builder(broker.clone()))
            .group_id(group)
            .topics(["t"])
            .handler(|r| {
                if r.attempts() == 0 {
                    Outcome::retry("first time")
                } else {
                    Outcome::Done
                }
            });
        if let Some(g) = relay_group {
            b = b.relay_group_id(g);
        }
        let engine = b.build().unwrap();
        broker.produce(OutRecord::new("t").value("x")).unwrap();
        let retry_topic = format!("{group}-retry");
        assert!(wait_until(Duration::from_secs(10), || {
            broker.committed(expect, &retry_topic, 0) == Some(1)
        }));
        engine.shutdown(Duration::from_secs(5)).unwrap();
        if relay_group.is_some() {
            assert_eq!(broker.committed("g2-relay", &retry_topic, 0), None);
        }
    }
}

/// A transport whose consumers of `group` report `Closed` once `kill` is set.
#[derive(Debug)]
struct Killable {
    inner: MemoryBroker,
    group: String,
    kill: Arc<AtomicBool>,
}

#[derive(Debug)]
struct KillableConsumer {
    inner: Box<dyn Consumer>,
    kill: Option<Arc<AtomicBool>>,
}

impl Consumer for KillableConsumer {
    fn poll(&mut self, timeout: Duration) -> kafka_retry::Result<ConsumerEvent> {
        if self.kill.as_ref().is_some_and(|k| k.load(Ordering::SeqCst)) {
            return Err(Error::Closed);
        }
        self.inner.poll(timeout)
    }
    forward_consumer!(pause, resume, commit, assignment, close);
}

impl Transport for Killable {
    fn consumer(&self, config: ConsumerConfig) -> kafka_retry::Result<Box<dyn Consumer>> {
        let kill = (config.group_id == self.group).then(|| self.kill.clone());
        Ok(Box::new(KillableConsumer {
            inner: self.inner.consumer(config)?,
            kill,
        }))
    }
    fn producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
        self.inner.producer()
    }
    fn create_topic(&self, t: &str, p: i32, rf: Option<i16>) -> kafka_retry::Result<()> {
        Transport::create_topic(&self.inner, t, p, rf)
    }
    fn partition_count(&self, t: &str) -> kafka_retry::Result<Option<i32>> {
        self.inner.partition_count(t)
    }
}

#[test]
fn health_names_a_dead_thread_at_once_and_it_is_logged() {
    for (group, thread, why) in [
        ("g", "kafka-retry-consumer", "consumer closed"),
        ("g-relay", "kafka-retry-relay", "relay consumer closed"),
    ] {
        let _ = logs();
        let broker = MemoryBroker::new();
        broker.create_topic("t", 1).unwrap();
        let kill = Arc::new(AtomicBool::new(false));
        let engine = Engine::builder(Killable {
            inner: broker.clone(),
            group: group.into(),
            kill: kill.clone(),
        })
        .group_id("g")
        .topics(["t"])
        .handler(|_r| Outcome::Done)
        .build()
        .unwrap();
        broker.produce(OutRecord::new("t").value("x")).unwrap();
        assert!(wait_until(Duration::from_secs(5), || engine.stats().done >= 1));
        assert!(engine.health().is_healthy(), "{}", engine.health());
        kill.store(true, Ordering::SeqCst);
        assert!(
            wait_until(Duration::from_secs(5), || !engine.health().is_healthy()),
            "{thread} never reported"
        );
        let health = engine.health();
        let failed = health
            .failed
            .iter()
            .find(|f| f.thread == thread)
            .unwrap_or_else(|| panic!("{thread} not in {health}"));
        assert_eq!(failed.thread, thread, "{health}");
        assert_eq!(failed.reason, why, "{health}");
        assert!(health.to_string().contains(thread), "{health}");
        assert!(
            logged(log::Level::Error, &format!("{thread} died: {why}")) >= 1,
            "no error logged for {thread}"
        );
        let err = engine.shutdown(Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
}

#[test]
fn dropping_an_engine_says_it_may_block_once() {
    let _ = logs();
    let (broker, builder) = memory_t("dropped-group", 1);
    let engine = builder.handler(|_r| Outcome::Done).build().unwrap();
    let before = logged(log::Level::Info, "engine dropped without shutdown()");
    drop(engine);
    let after = logged(log::Level::Info, "engine dropped without shutdown()");
    assert_eq!(after - before, 1);
    let lines = logs().lock().unwrap();
    let line = lines
        .iter()
        .rev()
        .find(|(_, m)| m.contains("engine dropped without shutdown()"))
        .unwrap();
    assert!(
        line.1.contains("10s") && line.1.contains("shutdown(deadline)"),
        "{}",
        line.1
    );
    // A shut-down engine says nothing of the kind.
    drop(lines);
    let engine = Engine::builder(broker.clone())
        .group_id("shut-group")
        .topics(["t"])
        .handler(|_r| Outcome::Done)
        .build()
        .unwrap();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(
        logged(log::Level::Info, "engine dropped without shutdown()"),
        after
    );
}

/// The memory broker, reporting the given cleanup settings (or an error)
/// for every topic.
#[derive(Debug)]
struct Cleanup {
    inner: MemoryBroker,
    settings: Result<Retention, &'static str>,
}

impl Transport for Cleanup {
    forward_transport!(consumer, producer, create_topic, partition_count, reader);
    fn retention(&self, _topic: &str) -> kafka_retry::Result<Option<Retention>> {
        match &self.settings {
            Ok(r) => Ok(Some(r.clone())),
            Err(e) => Err(Error::Protocol(e.to_string())),
        }
    }
}

fn build_with_cleanup(
    group: &str,
    settings: Result<Retention, &'static str>,
) -> kafka_retry::Result<Engine> {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let _ = logs();
    fast(Engine::builder(Cleanup {
        inner: broker,
        settings,
    }))
    .group_id(group)
    .topics(["t"])
    .handler(|_r| Outcome::Done)
    .build()
}

#[test]
fn a_compacted_retry_topic_is_refused_and_short_retention_is_a_warning() {
    // Compaction would delete all but the latest parked record of a key.
    let err = build_with_cleanup("cleanup-compact", Ok(Retention::new(None, None, true)))
        .expect_err("a compacted retry topic must be refused");
    assert!(
        matches!(
            &err,
            Error::Config {
                field: "retry_topic",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("cleanup-compact-retry"), "{err}");

    // Retention below max_retry_duration (30 s in `fast`), a byte limit:
    // warnings that name the topic; the engine runs.
    let e = build_with_cleanup(
        "cleanup-short",
        Ok(Retention::new(
            Some(Duration::from_secs(10)),
            Some(1 << 20),
            false,
        )),
    )
    .unwrap();
    e.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(
        logged(
            log::Level::Warn,
            "retry topic cleanup-short-retry keeps records for 10s"
        ),
        1
    );
    assert_eq!(
        logged(
            log::Level::Warn,
            "retry topic cleanup-short-retry has retention.bytes 1048576"
        ),
        1
    );

    // Long enough, unlimited bytes: silent. A refused DescribeConfigs: an
    // info line, and the engine runs.
    for (group, settings) in [
        (
            "cleanup-long",
            Ok(Retention::new(Some(Duration::from_secs(3600)), None, false)),
        ),
        ("cleanup-refused", Err("DESCRIBE_CONFIGS denied")),
    ] {
        build_with_cleanup(group, settings)
            .unwrap()
            .shutdown(Duration::from_secs(5))
            .unwrap();
    }
    assert_eq!(logged(log::Level::Warn, "cleanup-long-retry"), 0);
    assert_eq!(
        logged(
            log::Level::Info,
            "could not read the cleanup settings of topic cleanup-refused-retry"
        ),
        1
    );
}

/// The engine takes its producer from `Transport::engine_producer` (the
/// Kafka transport compresses the engine's writes by it), and every write
/// of the retry path goes through it: `producer()` here fails, so an
/// engine that asked for it would not build.
#[test]
fn the_engine_writes_through_its_transports_engine_producer() {
    #[derive(Debug)]
    struct OnlyEngineProducer {
        inner: MemoryBroker,
        asked: Arc<AtomicUsize>,
    }
    impl Transport for OnlyEngineProducer {
        forward_transport!(consumer, create_topic, partition_count, reader);
        fn producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
            Err(Error::Protocol(
                "the engine must use engine_producer".into(),
            ))
        }
        fn engine_producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            self.inner.producer()
        }
    }
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let engine = fast(Engine::builder(OnlyEngineProducer {
        inner: broker.clone(),
        asked: asked.clone(),
    }))
    .group_id("g")
    .topics(["t"])
    .handler(|r: &Record| match r.attempts() {
        0 => Outcome::retry("once"),
        _ => Outcome::Done,
    })
    .build()
    .unwrap();
    broker.produce(OutRecord::new("t").value("v")).unwrap();
    // Retried once, relayed back and done: a retry-topic write and an
    // origin write, both through the engine producer.
    assert!(wait_until(Duration::from_secs(10), || engine.stats().done >= 1));
    assert_eq!(engine.stats().relayed, 1);
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

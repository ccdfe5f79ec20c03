//! Engine scenarios written once and run on every transport: the memory
//! broker (tests/engine_memory.rs) and Kafka (tests/engine_kafka.rs).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_retry::transport::{ConsumerConfig, ConsumerEvent, Transport};
use kafka_retry::{
    Engine, EngineBuilder, Header, MemoryBroker, OutRecord, Outcome, Record, RetryPolicy, Stats,
};

/// Declares one `#[test]` per scenario, each running it on `$env`, so every
/// transport runs the same list.
#[macro_export]
macro_rules! scenario_tests {
    ($env:expr) => {
        $crate::scenario_tests!(@each $env;
            retry_redelivers_after_interval,
            expiry_and_reject_dead_letter,
            panic_is_caught_and_retried,
            malformed_retry_headers_are_dead_lettered,
            per_key_order_holds,
            two_engines_split_and_take_over,
            restart_resumes_after_commit,
            retry_after_and_dead_reasons,
            dead_letters_are_routed,
            private_redelivery_skips_the_origin_topic,
            switching_modes_keeps_parked_records,
            key_order_holds_a_failing_key,
            key_order_dead_lettered_head_releases_next,
            key_order_survives_a_rebalance,
            key_order_bounds_held_copies,
        );
    };
    (@each $env:expr; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                scenarios::$name(&$env);
            }
        )*
    };
}

/// A transport plus what differs between brokers.
#[derive(Clone)]
pub struct Env {
    pub transport: Arc<dyn Transport>,
    /// Session timeout for engines (Tansu joins take about half of it).
    pub session_timeout: Duration,
    /// Slack for "within" assertions (network brokers are slower).
    pub slack: Duration,
    pub name: &'static str,
}

mod key_order;
mod redelivery;
#[allow(unused_imports)] // used by the binaries that run scenario_tests!
pub use key_order::*;
#[allow(unused_imports)] // used by the binaries that run scenario_tests!
pub use redelivery::*;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn unique(name: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{name}-{}-{n}-{nanos}", std::process::id())
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The memory-broker tests' usual start: a broker with topic `t` of
/// `partitions` partitions, and a builder for group `group` reading it.
pub fn memory_t(group: &str, partitions: i32) -> (MemoryBroker, EngineBuilder) {
    let broker = MemoryBroker::new();
    broker.create_topic("t", partitions).unwrap();
    let builder = Engine::builder(broker.clone())
        .group_id(group)
        .topics(["t"]);
    (broker, builder)
}

impl Env {
    pub fn topic(&self, name: &str, partitions: i32) -> String {
        let t = unique(name);
        self.transport.create_topic(&t, partitions, None).unwrap();
        t
    }

    pub fn builder(&self, group: &str, topics: &[&str]) -> EngineBuilder {
        Engine::builder(self.transport.clone())
            .group_id(group)
            .topics(topics.iter().copied())
            .session_timeout(self.session_timeout)
            .rebalance_timeout(self.session_timeout * 4)
            .revoke_timeout(self.session_timeout * 2)
            .commit_interval(Duration::from_millis(100))
    }

    pub fn produce(&self, record: OutRecord) {
        self.transport.producer().unwrap().send(record).unwrap();
    }

    /// Reads `topic` from the beginning with a fresh group until `n`
    /// records arrived or `timeout` passed.
    pub fn read(&self, topic: &str, n: usize, timeout: Duration) -> Vec<Record> {
        self.read_until(topic, timeout, |out| out.len() >= n)
    }

    /// Reads `topic` from the beginning with a fresh group until `enough`
    /// holds for what arrived or `timeout` passed.
    pub fn read_until(
        &self,
        topic: &str,
        timeout: Duration,
        enough: impl Fn(&[Record]) -> bool,
    ) -> Vec<Record> {
        let mut cfg = ConsumerConfig::new(unique("reader"), [topic]);
        cfg.session_timeout = self.session_timeout;
        cfg.rebalance_timeout = self.session_timeout * 2;
        let mut c = self.transport.consumer(cfg).unwrap();
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while !enough(&out) && Instant::now() < deadline {
            if let Ok(ConsumerEvent::Records(rs)) = c.poll(Duration::from_millis(100)) {
                out.extend(rs);
            }
        }
        let _ = c.close();
        out
    }
}

pub fn header<'a>(r: &'a Record, name: &str) -> Option<&'a str> {
    r.header(name)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

fn key_of(r: &Record) -> String {
    String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned()
}

/// Polls `f` every 10 ms until it holds or `timeout` passes; its last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A retried record comes back no earlier than its interval, with
/// first-received-at unchanged across hops and attempts counting up.
pub fn retry_redelivers_after_interval(env: &Env) {
    let topic = env.topic("orders", 2);
    let group = unique("g-retry");
    let interval = Duration::from_millis(300);
    // (when, first-received-at, attempts) per delivery.
    type Seen = Vec<(Instant, Option<String>, Option<String>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    let engine = env
        .builder(&group, &[&topic])
        .policy(RetryPolicy::new(interval, Duration::from_secs(60)))
        .handler(move |r: &Record| {
            let mut s = s.lock().unwrap();
            s.push((
                Instant::now(),
                header(r, kafka_retry::FIRST_RECEIVED_AT).map(String::from),
                header(r, kafka_retry::ATTEMPTS).map(String::from),
            ));
            if s.len() <= 3 {
                Outcome::retry(format!("try {}", s.len()))
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    env.produce(
        OutRecord::new(&topic)
            .key("k")
            .value("v")
            .header("user", "u1"),
    );
    assert!(
        wait_until(Duration::from_secs(10) + env.slack * 4, || seen
            .lock()
            .unwrap()
            .len()
            >= 4),
        "record not handled 4 times: {:?}",
        seen.lock().unwrap().len()
    );
    let seen = seen.lock().unwrap().clone();
    // Counters move just after the handler returns or the broker acks.
    wait_until(Duration::from_secs(2), || {
        let s = engine.stats();
        s.done >= 1 && s.relayed >= 3
    });
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(seen[0].1, None, "the first delivery has no retry headers");
    let first = seen[1]
        .1
        .clone()
        .expect("first-received-at on a redelivery");
    for (i, w) in seen.windows(2).enumerate() {
        let gap = w[1].0 - w[0].0;
        // Due = enqueued-at (ms, after the handler returned) + interval.
        assert!(
            gap + Duration::from_millis(2) >= interval,
            "hop {i} came back early: {gap:?} < {interval:?}"
        );
    }
    for (i, s) in seen.iter().enumerate().skip(1) {
        assert_eq!(
            s.1.as_deref(),
            Some(first.as_str()),
            "first-received-at changed"
        );
        assert_eq!(
            s.2.as_deref(),
            Some(i.to_string().as_str()),
            "attempts at delivery {i}"
        );
    }
    assert_eq!(stats.retried, 3);
    assert_eq!(stats.relayed, 3);
    assert_eq!(stats.done, 1);
}

/// A record that keeps failing is dead-lettered as expired within one
/// interval after the max duration; Reject goes straight to the dead-letter
/// topic; dead letters keep key, value, user headers and say why.
pub fn expiry_and_reject_dead_letter(env: &Env) {
    let topic = env.topic("orders", 1);
    let group = unique("g-expire");
    let interval = Duration::from_millis(200);
    let max = Duration::from_millis(1000);
    let engine = env
        .builder(&group, &[&topic])
        .policy(RetryPolicy::new(interval, max))
        .handler(|r: &Record| match r.value.as_deref() {
            Some(b"reject") => Outcome::reject("bad payload"),
            _ => Outcome::retry("never works"),
        })
        .build()
        .unwrap();
    let sent = now_ms();
    env.produce(
        OutRecord::new(&topic)
            .key("k1")
            .value("fail")
            .header("user", "a")
            .header("user", "b"),
    );
    env.produce(
        OutRecord::new(&topic)
            .key("k2")
            .value("reject")
            .header("trace", "t"),
    );
    let dlt = format!("{group}-dlt");
    let dead = env.read(&dlt, 2, Duration::from_secs(10) + env.slack * 4);
    // Counters move just after the broker acknowledges the dead letter.
    wait_until(Duration::from_secs(2), || {
        engine.stats().dead_lettered.total() >= 2
    });
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    let rejected = dead
        .iter()
        .find(|r| key_of(r) == "k2")
        .expect("rejected record");
    assert_eq!(header(rejected, kafka_retry::DEAD_REASON), Some("rejected"));
    assert_eq!(header(rejected, kafka_retry::REASON), Some("bad payload"));
    assert_eq!(rejected.value.as_deref(), Some(&b"reject"[..]));
    assert_eq!(rejected.headers[0], Header::new("trace", "t"));
    let expired = dead
        .iter()
        .find(|r| key_of(r) == "k1")
        .expect("expired record");
    assert_eq!(header(expired, kafka_retry::DEAD_REASON), Some("expired"));
    assert_eq!(expired.value.as_deref(), Some(&b"fail"[..]));
    // User headers first, duplicates kept, in order.
    assert_eq!(expired.headers[0], Header::new("user", "a"));
    assert_eq!(expired.headers[1], Header::new("user", "b"));
    let first: i64 = header(expired, kafka_retry::FIRST_RECEIVED_AT)
        .unwrap()
        .parse()
        .unwrap();
    assert!(first >= sent - 5);
    // Dead-lettered after max duration, within one retry round trip: the
    // interval plus the trip through the broker (retry write, relay fetch,
    // redelivery, the next attempt), which is where a slow environment
    // shows. One trip took about 950 ms through the TLS front end on a
    // loaded CI machine, hence the slack taken four times.
    let at = expired.timestamp;
    assert!(
        at - first > max.as_millis() as i64,
        "expired early: {} ms",
        at - first
    );
    assert!(
        at - first <= (max + interval + env.slack * 4).as_millis() as i64 + 100,
        "expired late: {} ms",
        at - first
    );
    assert_eq!(stats.dead_lettered.rejected, 1);
    assert_eq!(stats.dead_lettered.expired, 1);
}

/// A panicking handler does not kill its worker; the record is retried.
pub fn panic_is_caught_and_retried(env: &Env) {
    let topic = env.topic("orders", 1);
    let group = unique("g-panic");
    let calls = Arc::new(AtomicUsize::new(0));
    let done: Arc<Mutex<Vec<String>>> = Arc::default();
    let (c, d) = (calls.clone(), done.clone());
    let engine = env
        .builder(&group, &[&topic])
        .workers(1)
        .policy(RetryPolicy::new(
            Duration::from_millis(100),
            Duration::from_secs(30),
        ))
        .handler(move |r: &Record| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            if r.value.as_deref() == Some(b"boom") && n == 0 {
                panic!("kaboom");
            }
            d.lock().unwrap().push(format!(
                "{}:{}",
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()),
                header(r, kafka_retry::REASON).unwrap_or("")
            ));
            Outcome::Done
        })
        .build()
        .unwrap();
    env.produce(OutRecord::new(&topic).value("boom"));
    env.produce(OutRecord::new(&topic).value("after"));
    assert!(wait_until(Duration::from_secs(10) + env.slack * 4, || done
        .lock()
        .unwrap()
        .len()
        >= 2));
    wait_until(Duration::from_secs(2), || engine.stats().done >= 2);
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10)).unwrap();
    let done = done.lock().unwrap().clone();
    assert!(done.contains(&"after:".to_string()), "{done:?}");
    assert!(
        done.iter()
            .any(|d| d.starts_with("boom:handler panicked: kaboom")),
        "the retried record carries the panic as its reason: {done:?}"
    );
    assert_eq!(stats.panics, 1);
}

/// Retry-topic records with bad headers end on the dead-letter topic with
/// reason `malformed`, user headers intact.
pub fn malformed_retry_headers_are_dead_lettered(env: &Env) {
    let topic = env.topic("orders", 1);
    let other = env.topic("not-ours", 1);
    let group = unique("g-malformed");
    let engine = env
        .builder(&group, &[&topic])
        .policy(RetryPolicy::new(
            Duration::from_millis(100),
            Duration::from_secs(30),
        ))
        .handler(|_r: &Record| Outcome::Done)
        .build()
        .unwrap();
    let now = now_ms();
    let good = |name: &str, value: String| -> Vec<(String, String)> {
        let mut hs = vec![
            (kafka_retry::ORIGIN_TOPIC.to_string(), topic.clone()),
            (kafka_retry::ORIGIN_PARTITION.to_string(), "0".into()),
            (kafka_retry::ORIGIN_OFFSET.to_string(), "0".into()),
            (kafka_retry::FIRST_RECEIVED_AT.to_string(), now.to_string()),
            (kafka_retry::ENQUEUED_AT.to_string(), now.to_string()),
            (kafka_retry::ATTEMPTS.to_string(), "1".into()),
        ];
        hs.retain(|(k, _)| k != name);
        if !value.is_empty() {
            hs.push((name.to_string(), value));
        }
        hs
    };
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        (
            "missing",
            good(kafka_retry::FIRST_RECEIVED_AT, String::new()),
        ),
        (
            "non-numeric",
            good(kafka_retry::FIRST_RECEIVED_AT, "soon".into()),
        ),
        ("negative", good(kafka_retry::ENQUEUED_AT, "-17".into())),
        (
            "future",
            good(
                kafka_retry::FIRST_RECEIVED_AT,
                (now + 86_400_000).to_string(),
            ),
        ),
        (
            "unknown-topic",
            good(kafka_retry::ORIGIN_TOPIC, "no-such-topic-anywhere".into()),
        ),
        (
            "other-topic",
            good(kafka_retry::ORIGIN_TOPIC, other.clone()),
        ),
        ("bad-attempts", good(kafka_retry::ATTEMPTS, "many".into())),
    ];
    let retry = format!("{group}-retry");
    for (name, hs) in &cases {
        let mut r = OutRecord::new(&retry)
            .key(*name)
            .value("payload")
            .header("user", *name);
        for (k, v) in hs {
            r = r.header(k.clone(), v.clone());
        }
        env.produce(r);
    }
    // Until every case is there: duplicates (below) must not end the read
    // before the last one.
    let dead = env.read_until(
        &format!("{group}-dlt"),
        Duration::from_secs(10) + env.slack * 4,
        |out| distinct_keys(out) >= cases.len(),
    );
    wait_until(Duration::from_secs(2), || {
        engine.stats().dead_lettered.malformed >= cases.len() as u64
    });
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10)).unwrap();
    // The relay's group rebalancing re-reads uncommitted copies and
    // dead-letters them again (see `no_rebalance`).
    let exact = no_rebalance(&stats);
    if exact {
        assert_eq!(dead.len(), cases.len(), "{dead:?}");
    }
    assert_eq!(distinct_keys(&dead), cases.len(), "{dead:?}");
    for (name, _) in &cases {
        let r = dead
            .iter()
            .find(|r| key_of(r) == *name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            header(r, kafka_retry::DEAD_REASON),
            Some("malformed"),
            "{name}"
        );
        assert!(
            !header(r, kafka_retry::REASON).unwrap_or("").is_empty(),
            "{name} has a reason"
        );
        assert_eq!(
            r.headers[0],
            Header::new("user", *name),
            "{name}: user header first, intact"
        );
        assert_eq!(r.value.as_deref(), Some(&b"payload"[..]));
    }
    if exact {
        assert_eq!(
            stats.dead_lettered.malformed,
            cases.len() as u64,
            "{stats:?}"
        );
    } else {
        assert!(
            stats.dead_lettered.malformed >= cases.len() as u64,
            "{stats:?}"
        );
    }
    assert_eq!(stats.relayed, 0);
}

/// Whether neither of the engine's groups (its consumer thread's, its
/// relay's) rebalanced, so counts can be asserted exactly. Delivery is at
/// least once: after a rebalance (a heartbeat late past the 2 s session on
/// a loaded machine), the next assignment reads again the records whose
/// offsets were not committed yet, on either topic.
pub fn no_rebalance(stats: &Stats) -> bool {
    stats.rebalances == 0 && stats.relay_rebalances == 0
}

/// How many different keys `records` have.
fn distinct_keys(records: &[Record]) -> usize {
    records.iter().map(key_of).collect::<HashSet<_>>().len()
}

/// Records with the same key are handled in partition order on the main path.
pub fn per_key_order_holds(env: &Env) {
    let topic = env.topic("orders", 3);
    let group = unique("g-order");
    let seen: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let s = seen.clone();
    let engine = env
        .builder(&group, &[&topic])
        .workers(4)
        .handler(move |r: &Record| {
            let v: u32 = std::str::from_utf8(r.value.as_deref().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            s.lock().unwrap().entry(key_of(r)).or_default().push(v);
            Outcome::Done
        })
        .build()
        .unwrap();
    let producer = env.transport.producer().unwrap();
    let keys = 20;
    let per_key = 100;
    let batch: Vec<OutRecord> = (0..per_key)
        .flat_map(|i| (0..keys).map(move |k| (i, k)))
        .map(|(i, k)| {
            OutRecord::new(&topic)
                .key(format!("key-{k}"))
                .value(i.to_string())
        })
        .collect();
    for r in producer.send_batch(batch) {
        r.unwrap();
    }
    assert!(wait_until(Duration::from_secs(20) + env.slack * 4, || {
        seen.lock().unwrap().values().map(Vec::len).sum::<usize>() >= keys * per_key as usize
    }));
    engine.shutdown(Duration::from_secs(10)).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), keys);
    for (k, vs) in seen.iter() {
        let want: Vec<u32> = (0..per_key).collect();
        assert_eq!(vs, &want, "order of {k}");
    }
}

/// Two engines in one group split the partitions and together handle every
/// record; when one stops, the other takes over and nothing is lost.
pub fn two_engines_split_and_take_over(env: &Env) {
    let topic = env.topic("orders", 4);
    let group = unique("g-split");
    let handled: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let make = |id: usize| {
        let h = handled.clone();
        env.builder(&group, &[&topic])
            .workers(2)
            .handler(move |r: &Record| {
                h.lock().unwrap().push((
                    id,
                    String::from_utf8_lossy(r.value.as_deref().unwrap()).into(),
                ));
                Outcome::Done
            })
            .build()
            .unwrap()
    };
    let a = make(0);
    let b = make(1);
    assert!(
        wait_until(Duration::from_secs(30) + env.slack * 10, || {
            let (sa, sb) = (a.stats(), b.stats());
            sa.assigned_partitions > 0
                && sb.assigned_partitions > 0
                && sa.assigned_partitions + sb.assigned_partitions == 4
        }),
        "the group did not settle with both members: {} + {}",
        a.stats().assigned_partitions,
        b.stats().assigned_partitions
    );
    let producer = env.transport.producer().unwrap();
    let send = |from: usize, to: usize| {
        let batch: Vec<OutRecord> = (from..to)
            .map(|i| {
                OutRecord::new(&topic)
                    .key(format!("k{i}"))
                    .value(i.to_string())
            })
            .collect();
        for r in producer.send_batch(batch) {
            r.unwrap();
        }
    };
    send(0, 400);
    let distinct = |h: &Vec<(usize, String)>| {
        h.iter()
            .map(|(_, v)| v.clone())
            .collect::<HashSet<_>>()
            .len()
    };
    assert!(
        wait_until(Duration::from_secs(30) + env.slack * 10, || distinct(
            &handled.lock().unwrap()
        ) >= 400),
        "only {} of 400 handled",
        distinct(&handled.lock().unwrap())
    );
    // Both members had work once the group settled.
    assert!(
        wait_until(Duration::from_secs(30), || {
            let h = handled.lock().unwrap();
            h.iter().any(|(id, _)| *id == 0) && h.iter().any(|(id, _)| *id == 1)
        }),
        "one member got no partition"
    );
    a.shutdown(Duration::from_secs(10)).unwrap();
    send(400, 800);
    assert!(
        wait_until(Duration::from_secs(30) + env.slack * 10, || distinct(
            &handled.lock().unwrap()
        ) >= 800),
        "after the takeover only {} of 800 handled",
        distinct(&handled.lock().unwrap())
    );
    b.shutdown(Duration::from_secs(10)).unwrap();
}

/// Committed offsets survive a restart: a new engine in the same group
/// resumes after the last committed record.
pub fn restart_resumes_after_commit(env: &Env) {
    let topic = env.topic("orders", 2);
    let group = unique("g-resume");
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let make = || {
        let h = handled.clone();
        env.builder(&group, &[&topic])
            .handler(move |r: &Record| {
                h.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(r.value.as_deref().unwrap()).into());
                Outcome::Done
            })
            .build()
            .unwrap()
    };
    let e = make();
    for i in 0..50 {
        env.produce(
            OutRecord::new(&topic)
                .key(format!("k{i}"))
                .value(format!("first-{i}")),
        );
    }
    assert!(wait_until(
        Duration::from_secs(20) + env.slack * 4,
        || handled.lock().unwrap().len() >= 50
    ));
    e.shutdown(Duration::from_secs(10)).unwrap();
    for i in 0..50 {
        env.produce(
            OutRecord::new(&topic)
                .key(format!("k{i}"))
                .value(format!("second-{i}")),
        );
    }
    let e = make();
    assert!(wait_until(
        Duration::from_secs(20) + env.slack * 4,
        || handled.lock().unwrap().len() >= 100
    ));
    std::thread::sleep(Duration::from_millis(300));
    e.shutdown(Duration::from_secs(10)).unwrap();
    let h = handled.lock().unwrap();
    assert_eq!(
        h.len(),
        100,
        "a record of the first round was handled again after a clean restart"
    );
}

//! Issue 11 §2 on the memory broker: `KeyOrder::Kept`. The shared
//! scenarios (tests/scenarios/key_order.rs) run here on the memory broker
//! and from tests/engine_kafka.rs on Kafka; the tests below need to stop and
//! start engines at chosen moments.

#[macro_use]
mod forward;
mod faulty;
mod scenarios;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faulty::{Faulty, Rng};
use kafka_retry::transport::Transport;
use kafka_retry::{
    Engine, Error, KeyOrder, MemoryBroker, OutRecord, Outcome, Record, Redelivery, RetryPolicy,
    Stats,
};
use scenarios::{
    key_order_dead_lettered_head_releases_next, key_order_holds_a_failing_key, note, successes,
    value_of, wait_until, Env, Seen,
};

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
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    key_order_holds_a_failing_key(&env());
}

#[test]
fn dead_lettered_head_releases_next() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    key_order_dead_lettered_head_releases_next(&env());
}

/// `KeyOrder::Kept` with the origin redelivery is refused, and says why.
#[test]
fn kept_requires_private_redelivery() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let err = Engine::builder(broker)
        .group_id("g")
        .topics(["t"])
        .key_order(KeyOrder::Kept)
        .handler(|_r: &Record| Outcome::Done)
        .build()
        .unwrap_err();
    match &err {
        Error::Config { field, .. } => assert_eq!(*field, "key_order"),
        other => panic!("expected a config error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("Redelivery::Private"), "{text}");
    assert!(text.contains("behind"), "says why: {text}");
}

fn kept(broker: &MemoryBroker, group: &str, seen: &Seen, fail_a0: bool) -> Engine {
    let s = seen.clone();
    Engine::builder(broker.clone())
        .group_id(group)
        .topics(["t"])
        .workers(2)
        .session_timeout(Duration::from_secs(2))
        .commit_interval(Duration::from_millis(50))
        .redelivery(Redelivery::Private)
        .key_order(KeyOrder::Kept)
        .policy(RetryPolicy::new(
            Duration::from_millis(300),
            Duration::from_secs(120),
        ))
        .handler(move |r: &Record| {
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            let fail = fail_a0 && key == "a" && value_of(r) == 0;
            note(&s, r, !fail);
            if fail {
                Outcome::retry("down")
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap()
}

/// An engine stops while key `a` is blocked (its head parked, three records
/// held behind it). The next engine rebuilds the blocked set from the retry
/// topic before it hands out any record: a record of `a` produced after the
/// restart is held behind the others, and `a` is handled in origin order.
#[test]
fn restart_mid_block_rebuilds_the_blocked_keys() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let broker = MemoryBroker::new();
    broker.create_topic("t", 2).unwrap();
    let seen: Seen = Arc::default();
    let first = kept(&broker, "g-restart", &seen, true);
    for i in 0..4 {
        broker
            .produce(OutRecord::new("t").key("a").value(i.to_string()))
            .unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(10), || first.stats().held == 3),
        "{:?}",
        first.stats()
    );
    first.shutdown(Duration::from_secs(5)).unwrap();
    assert!(successes(&seen, "a").is_empty(), "a handled while blocked");
    let second = kept(&broker, "g-restart", &seen, false);
    broker
        .produce(OutRecord::new("t").key("a").value("4"))
        .unwrap();
    let ok = wait_until(Duration::from_secs(20), || successes(&seen, "a").len() >= 5);
    let stats = second.stats();
    second.shutdown(Duration::from_secs(5)).unwrap();
    assert!(ok, "{stats:?} {:?}", seen.lock().unwrap());
    assert_eq!(successes(&seen, "a"), vec![0, 1, 2, 3, 4]);
    assert_eq!(
        stats.held, 1,
        "the record produced after the restart is held: {stats:?}"
    );
}

/// Two instances, four partitions, 40 keys of which every fourth fails its
/// first record once; the second instance joins while keys are blocked, then
/// the first leaves. Every key's records are all handled, each first
/// handled in origin order; replays of handled but uncommitted records
/// across the rebalance are counted as duplicates.
#[test]
fn two_instances_with_a_rebalance_keep_every_key_in_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    let seen: Seen = Arc::default();
    let make = |seen: &Seen| {
        let s = seen.clone();
        Engine::builder(broker.clone())
            .group_id("g-two")
            .topics(["t"])
            .workers(2)
            .session_timeout(Duration::from_secs(2))
            .commit_interval(Duration::from_millis(50))
            .redelivery(Redelivery::Private)
            .key_order(KeyOrder::Kept)
            .policy(RetryPolicy::new(
                Duration::from_millis(400),
                Duration::from_secs(120),
            ))
            .handler(move |r: &Record| {
                let k = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
                let n: usize = k[1..].parse().unwrap_or(1);
                let fail = n.is_multiple_of(4) && value_of(r) == 0 && r.attempts() == 0;
                note(&s, r, !fail);
                if fail {
                    Outcome::retry("once")
                } else {
                    Outcome::Done
                }
            })
            .build()
            .unwrap()
    };
    let keys = 40;
    let per_key = 6;
    let a = make(&seen);
    let produce = |from: u32, to: u32| {
        for i in from..to {
            for k in 0..keys {
                broker
                    .produce(
                        OutRecord::new("t")
                            .key(format!("k{k}"))
                            .value(i.to_string()),
                    )
                    .unwrap();
            }
        }
    };
    produce(0, 3);
    assert!(wait_until(Duration::from_secs(10), || a.stats().held > 0));
    let b = make(&seen);
    produce(3, per_key);
    std::thread::sleep(Duration::from_millis(500));
    a.shutdown(Duration::from_secs(10)).unwrap();
    let ok = wait_until(Duration::from_secs(30), || {
        (0..keys).all(|k| {
            // Distinct values: a duplicate does not stand for a missing one.
            let mut got = successes(&seen, &format!("k{k}"));
            got.sort_unstable();
            got.dedup();
            got.len() >= per_key as usize
        })
    });
    let idle = wait_until(Duration::from_secs(10), || b.stats().in_flight == 0);
    let stats = b.stats();
    b.shutdown(Duration::from_secs(10)).unwrap();
    assert!(idle, "records left in flight: {stats:?}");
    let want: Vec<u32> = (0..per_key).collect();
    let mut dups = 0;
    for k in 0..keys {
        let got = successes(&seen, &format!("k{k}"));
        // At-least-once: a rebalance may replay what was handled but not
        // committed yet (a duplicate). Never out of order otherwise: the
        // first handling of each record comes in origin order.
        let mut first = Vec::new();
        for v in &got {
            if !first.contains(v) {
                first.push(*v);
            }
        }
        dups += got.len() - first.len();
        assert_eq!(first, want, "k{k}: {got:?} ({stats:?})");
    }
    assert!(ok, "not every key was handled: {stats:?}");
    println!("two instances: {dups} duplicate handlings, second instance {stats:?}");
}

/// Counts live heap bytes, for the memory cost of a blocked key.
struct Counting;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Live heap bytes with `keys` keys parked (each key's one record failed,
/// due in ten minutes), private redelivery, key order `order`.
fn live_bytes_with_parked_keys(order: KeyOrder, keys: usize) -> isize {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 4).unwrap();
    let engine = Engine::builder(broker.clone())
        .group_id("g-mem")
        .topics(["t"])
        .workers(2)
        .redelivery(Redelivery::Private)
        .key_order(order)
        .policy(RetryPolicy::new(
            Duration::from_secs(600),
            Duration::from_secs(3600),
        ))
        .handler(|_r: &Record| Outcome::retry("down"))
        .build()
        .unwrap();
    for k in 0..keys {
        broker
            .produce(OutRecord::new("t").key(format!("key-{k:06}")).value("v"))
            .unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(60), || {
            let s = engine.stats();
            s.retried == keys as u64 && s.parked == keys as i64
        }),
        "{:?}",
        engine.stats()
    );
    std::thread::sleep(Duration::from_millis(300));
    let live = LIVE.load(std::sync::atomic::Ordering::Relaxed);
    engine.shutdown(Duration::from_secs(10)).unwrap();
    live
}

/// What one blocked key costs: live heap with 20,000 parked keys under
/// `KeyOrder::Kept` minus the same under `KeyOrder::Any` (the parked
/// records themselves cost the same in both), per key. Printed, not
/// asserted (allocator noise); the test checks every key is parked.
#[test]
fn memory_per_blocked_key() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let keys = 20_000;
    let any = live_bytes_with_parked_keys(KeyOrder::Any, keys);
    let kept = live_bytes_with_parked_keys(KeyOrder::Kept, keys);
    println!(
        "memory per blocked key (10-byte keys): {} B ({} B live with KeyOrder::Any, {} B with Kept, {keys} keys)",
        (kept - any) / keys as isize,
        any,
        kept
    );
}

/// Serializes the tests of this file, so the memory measurement counts
/// only its own engine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// (value, instance, done) of one handling, for a failure's message.
type Handled = (u32, usize, bool);

/// Issue 11 §2's randomized test, in process on the memory broker: 10,000
/// keys, three records each, a seeded mix of fates (most records are done at
/// once, some fail once or three times, some always fail and expire, some
/// are rejected), three instances in one group, and every half second one
/// of them fails abruptly (no commit, writes lost or unacknowledged) or
/// stops cleanly, and a new one takes its place. For every key the first
/// handlings are exactly its records in origin order, minus the
/// dead-lettered ones: nothing lost, never out of order (a record is first
/// handled only after every earlier record of its key was handled `Done`,
/// rejected or dead-lettered). Duplicates are counted and printed.
/// (`KAFKA_RETRY_SEED` replays a run. The same with real SIGKILLs of
/// processes on Kafka: tests/reliability_kafka.rs,
/// `key_order_survives_sigkills_and_rebalances`.)
#[test]
fn randomized_crashes_and_rebalances_keep_every_key_in_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = std::env::var("KAFKA_RETRY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0bde_12ed);
    let mut rng = Rng(seed);
    // Handling instants to wall-clock ms, to compare with dead-letter stamps.
    let (base, base_ms) = (Instant::now(), scenarios::now_ms());
    let broker = MemoryBroker::new();
    broker.create_topic("t", 6).unwrap();
    let keys = 10_000u64;
    let per_key = 3u64;
    // Fate per record (key * per_key + i): 0..80 done, 80..90 fail once,
    // 90..94 fail three times, 94..97 rejected, 97..100 always fail.
    let fates: Arc<Vec<u64>> = Arc::new((0..keys * per_key).map(|_| rng.next() % 100).collect());
    let tries: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let seen: Seen = Arc::default();
    // For a failure's message: which instance handled what, and when
    // instances came and went.
    let who: Arc<Mutex<HashMap<String, Vec<Handled>>>> = Arc::default();
    let timeline: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let instances = std::sync::atomic::AtomicUsize::new(0);
    let start_one = |rng: &mut Rng| {
        let (transport, broken) = Faulty::new(broker.clone());
        let (f, t, s) = (fates.clone(), tries.clone(), seen.clone());
        let me = instances.fetch_add(1, Ordering::SeqCst);
        timeline
            .lock()
            .unwrap()
            .push((Instant::now(), format!("start {me}")));
        let w = who.clone();
        let engine = Engine::builder(transport)
            .group_id("g-random")
            .topics(["t"])
            .workers(2 + (rng.next() % 3) as usize)
            .session_timeout(Duration::from_secs(1))
            .rebalance_timeout(Duration::from_secs(3))
            .revoke_timeout(Duration::from_millis(500))
            .commit_interval(Duration::from_millis(30))
            .redelivery(Redelivery::Private)
            .key_order(KeyOrder::Kept)
            .policy(RetryPolicy::new(
                Duration::from_millis(150),
                Duration::from_millis(1500),
            ))
            .handler(move |r: &Record| {
                let k: u64 = r.key.as_deref().map_or(0, |k| {
                    std::str::from_utf8(&k[1..]).unwrap().parse().unwrap()
                });
                let id = k * per_key + u64::from(value_of(r));
                let n = {
                    let mut t = t.lock().unwrap();
                    let e = t.entry(id).or_insert(0);
                    *e += 1;
                    *e
                };
                let outcome = match f[id as usize] {
                    0..=79 => Outcome::Done,
                    80..=89 if n > 1 => Outcome::Done,
                    90..=93 if n > 3 => Outcome::Done,
                    80..=93 => Outcome::retry("not yet"),
                    94..=96 => Outcome::reject("bad"),
                    _ => Outcome::retry("never"),
                };
                note(&s, r, outcome == Outcome::Done);
                w.lock().unwrap().entry(format!("k{k}")).or_default().push((
                    value_of(r),
                    me,
                    outcome == Outcome::Done,
                ));
                outcome
            })
            .build()
            .unwrap();
        (engine, broken, me)
    };
    let mut engines: Vec<(Engine, Arc<AtomicBool>, usize)> =
        (0..3).map(|_| start_one(&mut rng)).collect();
    // Records go in while the instances come and go.
    // A key's records next to each other, so a later one is read while an
    // earlier one is parked (the case key order is for).
    let records: Vec<OutRecord> = (0..keys)
        .flat_map(|k| (0..per_key).map(move |i| (i, k)))
        .map(|(i, k)| {
            OutRecord::new("t")
                .key(format!("k{k}"))
                .value(i.to_string())
        })
        .collect();
    let producer = broker.producer().unwrap();
    let mut chunks = records.chunks(3_000);
    let started = Instant::now();
    let (mut crashes, mut stops) = (0, 0);
    let dead_values = || -> HashSet<(String, u32)> {
        (0..6)
            .flat_map(|p| broker.records("g-random-dlt", p).unwrap_or_default())
            .map(|r| {
                let k = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
                (k, value_of(&r))
            })
            .collect()
    };
    let missing = |dead: &HashSet<(String, u32)>| -> usize {
        let seen = seen.lock().unwrap();
        (0..keys)
            .map(|k| {
                let key = format!("k{k}");
                let done: HashSet<u32> = seen
                    .get(&key)
                    .map(|v| v.iter().filter(|e| e.4).map(|e| e.0).collect())
                    .unwrap_or_default();
                (0..per_key as u32)
                    .filter(|i| !done.contains(i) && !dead.contains(&(key.clone(), *i)))
                    .count()
            })
            .sum()
    };
    for round in 0..12 {
        if let Some(chunk) = chunks.next() {
            for r in producer.send_batch(chunk.to_vec()) {
                r.unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(200 + rng.next() % 400));
        let victim = (rng.next() % 3) as usize;
        let (engine, broken, me) = engines.remove(victim);
        if round % 3 == 2 {
            timeline
                .lock()
                .unwrap()
                .push((Instant::now(), format!("stop {me}")));
            let _ = engine.shutdown(Duration::from_secs(5));
            stops += 1;
        } else {
            timeline
                .lock()
                .unwrap()
                .push((Instant::now(), format!("break {me}")));
            broken.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(rng.next() % 50));
            let _ = engine.shutdown(Duration::from_millis(300));
            crashes += 1;
        }
        engines.push(start_one(&mut rng));
    }
    for chunk in chunks {
        for r in producer.send_batch(chunk.to_vec()) {
            r.unwrap();
        }
    }
    let ok = wait_until(Duration::from_secs(120), || missing(&dead_values()) == 0);
    let stats: Vec<Stats> = engines.iter().map(|(e, _, _)| e.stats()).collect();
    for (e, _, _) in engines {
        e.shutdown(Duration::from_secs(10)).unwrap();
    }
    let dead = dead_values();
    assert!(ok, "{} records missing; {stats:?}", missing(&dead));
    // When each record was first dead-lettered (its `retry.dead-lettered-at`).
    let mut dead_at: HashMap<(String, u32), i64> = HashMap::new();
    for r in (0..6).flat_map(|p| broker.records("g-random-dlt", p).unwrap_or_default()) {
        let k = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let at: i64 = scenarios::header(&r, kafka_retry::DEAD_LETTERED_AT)
            .and_then(|v| v.parse().ok())
            .unwrap();
        let e = dead_at.entry((k, value_of(&r))).or_insert(at);
        *e = (*e).min(at);
    }
    let wall =
        |t: Instant| -> i64 { base_ms + t.saturating_duration_since(base).as_millis() as i64 };
    let seen = seen.lock().unwrap();
    let (mut dups, mut handled, mut dead_only) = (0, 0, 0);
    for k in 0..keys {
        let key = format!("k{k}");
        let got: Vec<u32> = seen
            .get(&key)
            .map(|v| v.iter().filter(|e| e.4).map(|e| e.0).collect())
            .unwrap_or_default();
        let mut first = Vec::new();
        for v in &got {
            if !first.contains(v) {
                first.push(*v);
            }
        }
        handled += got.len();
        dups += got.len() - first.len();
        // Never out of order: when a record is first handled, every earlier
        // record of its key was handled or dead-lettered before. Every record
        // not handled was dead-lettered (nothing lost).
        let first_done = |i: u32| -> Option<i64> {
            seen[&key]
                .iter()
                .find(|e| e.4 && e.0 == i)
                .map(|e| wall(e.3))
        };
        for j in 0..per_key as u32 {
            let Some(tj) = first_done(j) else {
                assert!(
                    dead_at.contains_key(&(key.clone(), j)),
                    "{key}/{j} lost (seed {seed:#x})"
                );
                dead_only += 1;
                continue;
            };
            for i in 0..j {
                // A rejected record is settled by the handler's decision:
                // its dead letter may land later (its write failed with its
                // instance, and a replay rejected it again), as on the main
                // path, where a rejected record does not hold its key.
                let rejected = (94..=96).contains(&fates[(k * per_key + u64::from(i)) as usize]);
                let first_rejected = seen[&key]
                    .iter()
                    .find(|e| rejected && e.0 == i)
                    .map(|e| wall(e.3));
                let settled = first_done(i)
                    .into_iter()
                    .chain(dead_at.get(&(key.clone(), i)).copied())
                    .chain(first_rejected)
                    .min();
                assert!(
                    settled.is_some_and(|t| t <= tj + 2),
                    "{key}/{j} handled at {tj} before {key}/{i} was settled ({settled:?}); handlings {got:?}, \
                     every handling (value, attempts, held, done, at ms): {:?}; by instance (value, instance, done): {:?}; \
                     instances: {:?}; copies on the retry topic (partition, offset, value, attempts, held): {:?}; \
                     fates {:?} (seed {seed:#x})",
                    seen[&key].iter().map(|e| (e.0, e.1, e.2, e.4, wall(e.3))).collect::<Vec<_>>(),
                    who.lock().unwrap().get(&key),
                    timeline.lock().unwrap().iter().map(|(t, e)| (wall(*t), e.clone())).collect::<Vec<_>>(),
                    (0..6)
                        .flat_map(|p| broker.records("g-random-retry", p).unwrap_or_default())
                        .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
                        .map(|r| (r.partition, r.offset, value_of(&r), r.attempts(), r.header(kafka_retry::HELD).is_some()))
                        .collect::<Vec<_>>(),
                    &fates[(k * per_key) as usize..((k + 1) * per_key) as usize]
                );
            }
        }
    }
    assert!(crashes >= 2, "the test must fail instances abruptly");
    println!(
        "randomized key order: seed {seed:#x}, {keys} keys x {per_key}, {crashes} abrupt failures, \
         {stops} clean stops, 0 lost, 0 out of order, {dead_only} records only dead-lettered ({} distinct in the DLT), \
         {handled} successful handlings, {dups} duplicates, {:?}",
        dead.len(),
        started.elapsed()
    );
}

/// A transport whose relay consumer (the one reading the retry topic)
/// reads nothing while `frozen`: a relay lagging behind its retry
/// partition. `progress` is forwarded only when `with_progress` (the
/// catch-up then uses the fetch replies' log end, else ListOffsets).
#[derive(Clone, Debug)]
struct Freezable {
    inner: MemoryBroker,
    frozen: Arc<AtomicBool>,
    with_progress: bool,
}

impl Transport for Freezable {
    fn consumer(
        &self,
        config: kafka_retry::transport::ConsumerConfig,
    ) -> kafka_retry::Result<Box<dyn kafka_retry::transport::Consumer>> {
        let relay = config.topics.iter().all(|t| t.ends_with("-retry"));
        Ok(Box::new(FreezableConsumer {
            inner: self.inner.consumer(config)?,
            frozen: relay.then(|| self.frozen.clone()),
            with_progress: self.with_progress,
        }))
    }
    forward_transport!(producer, create_topic, partition_count, reader);
}

#[derive(Debug)]
struct FreezableConsumer {
    inner: Box<dyn kafka_retry::transport::Consumer>,
    frozen: Option<Arc<AtomicBool>>,
    with_progress: bool,
}

impl kafka_retry::transport::Consumer for FreezableConsumer {
    fn poll(
        &mut self,
        timeout: Duration,
    ) -> kafka_retry::Result<kafka_retry::transport::ConsumerEvent> {
        if self
            .frozen
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
        {
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return Ok(kafka_retry::transport::ConsumerEvent::Records(Vec::new()));
        }
        self.inner.poll(timeout)
    }
    fn progress(&self) -> Vec<kafka_retry::transport::PartitionProgress> {
        if self.with_progress {
            self.inner.progress()
        } else {
            Vec::new()
        }
    }
    forward_consumer!(pause, resume, commit, assignment, close);
}

/// Origin partition p leaves this instance and comes back while its relay
/// keeps p's retry partition: meanwhile the member that had p parked a
/// record of key `a` behind its key (a held copy on the retry partition),
/// which this relay has not read yet when p comes back. The readiness from
/// before p left is stale: p must wait until the relay has read the retry
/// partition to its end as of the new assignment, so `a`'s next record is
/// handled after the held one, not before.
fn stale_readiness_is_renewed(with_progress: bool) {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let frozen = Arc::new(AtomicBool::new(false));
    let transport = Freezable {
        inner: broker.clone(),
        frozen: frozen.clone(),
        with_progress,
    };
    let group = if with_progress {
        "g-stale-p"
    } else {
        "g-stale-l"
    };
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let engine = Engine::builder(transport)
        .group_id(group)
        .topics(["t"])
        .workers(2)
        .session_timeout(Duration::from_secs(2))
        .commit_interval(Duration::from_millis(20))
        // Eager, so that the range assignor moves t-0 to the other member
        // below (cooperative-sticky would leave it with this engine).
        .rebalance_protocol(kafka_retry::transport::RebalanceProtocol::Eager)
        .redelivery(Redelivery::Private)
        .key_order(KeyOrder::Kept)
        .handler(move |r: &Record| {
            note(&s, r, true);
            Outcome::Done
        })
        .build()
        .unwrap();
    let produce = |v: u32| {
        broker
            .produce(OutRecord::new("t").key("a").value(v.to_string()))
            .unwrap();
    };
    produce(0);
    assert!(wait_until(Duration::from_secs(10), || successes(
        &seen, "a"
    ) == [0]));
    // Another member of the group ("a-…" sorts before the engine's member
    // id, so the range assignor gives it t-0) takes p over.
    let mut other = broker
        .consumer(kafka_retry::transport::ConsumerConfig {
            client_id: Some("a".into()),
            rebalance_protocol: kafka_retry::transport::RebalanceProtocol::Eager,
            ..kafka_retry::transport::ConsumerConfig::new(group, ["t"])
        })
        .unwrap();
    let tp = kafka_retry::TopicPartition::new("t", 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the other member never got t-0");
        if let kafka_retry::transport::ConsumerEvent::Assigned(tps) =
            other.poll(Duration::from_millis(100)).unwrap()
        {
            if tps.contains(&tp) {
                break;
            }
        }
    }
    assert!(wait_until(Duration::from_secs(10), || engine
        .stats()
        .assigned_partitions
        == 0));
    // This instance's relay lags from now on (once its poll under way,
    // up to 100 ms, has returned).
    frozen.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    // The other member reads a@1, parks it behind its key as an engine
    // does (a held copy on retry partition 0), commits past it and leaves.
    produce(1);
    let now = scenarios::now_ms().to_string();
    broker
        .produce(
            OutRecord::new(format!("{group}-retry"))
                .partition(0)
                .key("a")
                .value("1")
                .header(kafka_retry::ORIGIN_TOPIC, "t")
                .header(kafka_retry::ORIGIN_PARTITION, "0")
                .header(kafka_retry::ORIGIN_OFFSET, "1")
                .header(kafka_retry::FIRST_RECEIVED_AT, now.clone())
                .header(kafka_retry::ENQUEUED_AT, now)
                .header(kafka_retry::ATTEMPTS, "0")
                .header(
                    kafka_retry::REASON,
                    "held behind an earlier record of its key",
                )
                .header(kafka_retry::HELD, "1"),
        )
        .unwrap();
    other.commit(&[(tp.clone(), 2)]).unwrap();
    other.close().unwrap();
    // p is back here; a@2 arrives while the relay has not read a@1's copy.
    assert!(wait_until(Duration::from_secs(10), || engine
        .stats()
        .assigned_partitions
        == 1));
    produce(2);
    std::thread::sleep(Duration::from_millis(500));
    let early = successes(&seen, "a");
    frozen.store(false, Ordering::SeqCst);
    let ok = wait_until(Duration::from_secs(20), || successes(&seen, "a").len() >= 3);
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(
        early,
        [0],
        "handled while the relay had not caught up: {stats:?}"
    );
    assert!(ok, "{stats:?} {:?}", seen.lock().unwrap());
    assert_eq!(successes(&seen, "a"), [0, 1, 2], "{stats:?}");
}

#[test]
fn stale_readiness_is_renewed_with_progress() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    stale_readiness_is_renewed(true);
}

#[test]
fn stale_readiness_is_renewed_with_list_offsets() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    stale_readiness_is_renewed(false);
}

/// A held record's retry history starts when it is released, also when the
/// relay releases it (its key's head expired on the relay's heap): here it
/// waited behind its head longer than `max_retry_duration`, then fails
/// once, and is retried and done, not expired at once.
#[test]
fn record_released_by_the_relay_starts_its_retry_history_then() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    // a0 always fails: parked at 0 s and 0.8 s, expired by the relay when
    // due at 1.6 s (older than 1 s). a1 is held from 0 s, released then,
    // fails once and is done on its retry.
    let engine = Engine::builder(broker.clone())
        .group_id("g-release-age")
        .topics(["t"])
        .workers(2)
        .commit_interval(Duration::from_millis(20))
        .redelivery(Redelivery::Private)
        .key_order(KeyOrder::Kept)
        .policy(RetryPolicy::new(
            Duration::from_millis(800),
            Duration::from_secs(1),
        ))
        .handler(move |r: &Record| {
            let ok = value_of(r) == 1 && r.attempts() > 0;
            note(&s, r, ok);
            if ok {
                Outcome::Done
            } else {
                Outcome::retry("not yet")
            }
        })
        .build()
        .unwrap();
    for v in 0..2 {
        broker
            .produce(OutRecord::new("t").key("a").value(v.to_string()))
            .unwrap();
    }
    let ok = wait_until(Duration::from_secs(15), || {
        !successes(&seen, "a").is_empty()
            || broker
                .records("g-release-age-dlt", 0)
                .unwrap_or_default()
                .len()
                >= 2
    });
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    let dead: Vec<u32> = broker
        .records("g-release-age-dlt", 0)
        .unwrap_or_default()
        .iter()
        .map(value_of)
        .collect();
    assert!(ok, "{stats:?} {:?}", seen.lock().unwrap());
    assert_eq!(dead, [0], "only a0 expires: {stats:?}");
    assert_eq!(successes(&seen, "a"), [1], "{stats:?}");
}

/// A transport whose producer fails (without writing it) the first write
/// of a retry-topic copy of value "0".
#[derive(Clone, Debug)]
struct FailFirstCopy {
    inner: MemoryBroker,
    failed: Arc<AtomicBool>,
}

impl Transport for FailFirstCopy {
    fn producer(&self) -> kafka_retry::Result<Arc<dyn kafka_retry::transport::Producer>> {
        Ok(Arc::new(FailFirstProducer {
            inner: self.inner.producer()?,
            failed: self.failed.clone(),
        }))
    }
    forward_transport!(consumer, create_topic, partition_count, reader);
}

#[derive(Debug)]
struct FailFirstProducer {
    inner: Arc<dyn kafka_retry::transport::Producer>,
    failed: Arc<AtomicBool>,
}

impl kafka_retry::transport::Producer for FailFirstProducer {
    fn send(&self, record: OutRecord) -> kafka_retry::Result<kafka_retry::Delivered> {
        let copy_of_0 =
            record.topic.ends_with("-retry") && record.value.as_deref() == Some(&b"0"[..]);
        if copy_of_0 && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(Error::Timeout("injected: copy of a0 not written".into()));
        }
        self.inner.send(record)
    }
}

/// A key's copies land on the retry topic in origin order even when a
/// write fails: a0's retry copy fails once (not written) and is sent again
/// after a backoff; a1, held behind a0 meanwhile, is written only after
/// a0's copy is acknowledged. (Sent at once, a1's held copy would land
/// first, and a relay rebuilding the key after a crash would take a1 for
/// the head while a0 comes back from its origin partition.)
#[test]
fn a_failed_copy_write_keeps_its_key_s_copies_in_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let broker = MemoryBroker::new();
    broker.create_topic("t", 1).unwrap();
    let failed = Arc::new(AtomicBool::new(false));
    let transport = FailFirstCopy {
        inner: broker.clone(),
        failed: failed.clone(),
    };
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let engine = Engine::builder(transport)
        .group_id("g-copy-order")
        .topics(["t"])
        .workers(1)
        .redelivery(Redelivery::Private)
        .key_order(KeyOrder::Kept)
        .policy(RetryPolicy::new(
            Duration::from_millis(200),
            Duration::from_secs(30),
        ))
        .handler(move |r: &Record| {
            let ok = value_of(r) != 0 || r.attempts() > 0;
            note(&s, r, ok);
            if ok {
                Outcome::Done
            } else {
                Outcome::retry("not yet")
            }
        })
        .build()
        .unwrap();
    let batch: Vec<OutRecord> = (0..2)
        .map(|v| OutRecord::new("t").key("a").value(v.to_string()))
        .collect();
    for r in broker.producer().unwrap().send_batch(batch) {
        r.unwrap();
    }
    let ok = wait_until(Duration::from_secs(15), || successes(&seen, "a").len() >= 2);
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert!(ok, "{stats:?} {:?}", seen.lock().unwrap());
    assert!(failed.load(Ordering::SeqCst), "the fault was not injected");
    assert_eq!(successes(&seen, "a"), [0, 1]);
    let copies: Vec<(u32, bool)> = broker
        .records("g-copy-order-retry", 0)
        .unwrap()
        .iter()
        .map(|r| (value_of(r), r.header(kafka_retry::HELD).is_some()))
        .collect();
    assert_eq!(
        copies,
        [(0, false), (1, true)],
        "a0's retry copy first, then a1's held copy: {stats:?}"
    );
}

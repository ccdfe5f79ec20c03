//! Issue 11 §2 on the memory broker: `KeyOrder::Kept`. The shared
//! scenarios (tests/scenarios/key_order.rs) run here on the memory broker
//! and from tests/engine_kafka.rs on Kafka; the tests below need to stop and
//! start engines at chosen moments.

mod scenarios;

use std::sync::Arc;
use std::time::Duration;

use kafka_retry::{
    Engine, Error, KeyOrder, MemoryBroker, OutRecord, Outcome, Record, Redelivery, RetryPolicy,
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
        (0..keys).all(|k| successes(&seen, &format!("k{k}")).len() >= per_key as usize)
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

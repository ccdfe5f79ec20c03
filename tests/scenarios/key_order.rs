//! Scenarios for issue 11 §2: `KeyOrder::Kept` (key order kept across
//! retries, with private redelivery).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_retry::{KeyOrder, OutRecord, Outcome, Record, Redelivery, RetryPolicy, HELD};

use super::{header, key_of, unique, wait_until, Env};

/// What a handler saw: per key, `(value, attempts, held header, when,
/// done)` in handling order.
pub type Seen = Arc<Mutex<HashMap<String, Vec<(u32, u32, bool, Instant, bool)>>>>;

pub fn value_of(r: &Record) -> u32 {
    std::str::from_utf8(r.value.as_deref().unwrap_or_default())
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Records one handling in `seen`.
pub fn note(seen: &Seen, r: &Record, done: bool) {
    seen.lock().unwrap().entry(key_of(r)).or_default().push((
        value_of(r),
        r.attempts(),
        r.header(HELD).is_some(),
        Instant::now(),
        done,
    ));
}

/// The values handled `Done` for `key`, in handling order.
pub fn successes(seen: &Seen, key: &str) -> Vec<u32> {
    seen.lock()
        .unwrap()
        .get(key)
        .map(|v| v.iter().filter(|e| e.4).map(|e| e.0).collect())
        .unwrap_or_default()
}

/// Key `a`'s first record fails twice: its four later records are held
/// behind it (not failed: attempts 0 when released) and handled after it,
/// in origin order. Key `b` flows meanwhile; keyless records are never held.
pub fn key_order_holds_a_failing_key(env: &Env) {
    let topic = env.topic("accounts", 2);
    let group = unique("g-keyorder");
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let engine = env
        .builder(&group, &[&topic])
        .workers(3)
        .redelivery(Redelivery::Private)
        .key_order(KeyOrder::Kept)
        // Long enough that every record is read while `a` is blocked, on
        // any transport.
        .policy(RetryPolicy::new(
            Duration::from_millis(300) + env.slack * 2,
            Duration::from_secs(60),
        ))
        .handler(move |r: &Record| {
            let fail = key_of(r) == "a" && value_of(r) == 0 && r.attempts() < 2;
            note(&s, r, !fail);
            if fail {
                Outcome::retry("not yet")
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    let batch: Vec<OutRecord> = (0..5)
        .flat_map(|i| {
            [
                OutRecord::new(&topic).key("a").value(i.to_string()),
                OutRecord::new(&topic).key("b").value(i.to_string()),
                OutRecord::new(&topic).partition(0).value(i.to_string()),
            ]
        })
        .collect();
    for r in env.transport.producer().unwrap().send_batch(batch) {
        r.unwrap();
    }
    let ok = wait_until(Duration::from_secs(20) + env.slack * 8, || {
        successes(&seen, "a").len() >= 5 && successes(&seen, "").len() >= 5
    });
    // Nothing left in flight once everything is handled.
    let idle = wait_until(Duration::from_secs(5) + env.slack * 4, || {
        engine.stats().in_flight == 0
    });
    let stats = engine.stats();
    assert!(idle, "{stats:?}");
    engine.shutdown(Duration::from_secs(10)).unwrap();
    assert!(ok, "{stats:?}\n{:?}", seen.lock().unwrap());
    assert_eq!(
        successes(&seen, "a"),
        vec![0, 1, 2, 3, 4],
        "a in origin order"
    );
    assert_eq!(
        successes(&seen, "b"),
        vec![0, 1, 2, 3, 4],
        "b in origin order"
    );
    let seen = seen.lock().unwrap();
    let a = &seen["a"];
    // a0 fails at attempts 0 and 1, then is done; a1..a4 come after it,
    // released from the hold: not attempts, marked held.
    assert_eq!(
        a.iter().map(|e| (e.0, e.1, e.2)).collect::<Vec<_>>(),
        vec![
            (0, 0, false),
            (0, 1, false),
            (0, 2, false),
            (1, 0, true),
            (2, 0, true),
            (3, 0, true),
            (4, 0, true)
        ],
        "a's handlings"
    );
    let a0_done = a[2].3;
    let b_last = seen["b"].last().unwrap().3;
    assert!(b_last < a0_done, "b flowed while a was blocked");
    for e in &seen[""] {
        assert!(!e.2 && e.1 == 0, "a keyless record was held: {e:?}");
    }
    assert_eq!(stats.held, 4, "{stats:?}");
    assert_eq!(stats.retried, 2, "{stats:?}");
}

/// Key `a`'s head runs out of `max_attempts`: it is dead-lettered and its
/// held records are handled next, in order.
pub fn key_order_dead_lettered_head_releases_next(env: &Env) {
    let topic = env.topic("accounts", 1);
    let group = unique("g-keyorder-dlt");
    let dlt = format!("{group}-dlt");
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let engine = env
        .builder(&group, &[&topic])
        .workers(2)
        .redelivery(Redelivery::Private)
        .key_order(KeyOrder::Kept)
        .policy(
            RetryPolicy::new(
                Duration::from_millis(300) + env.slack * 2,
                Duration::from_secs(60),
            )
            .with_max_attempts(2),
        )
        .handler(move |r: &Record| {
            let fail = value_of(r) == 0;
            note(&s, r, !fail);
            if fail {
                Outcome::retry("never")
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    let batch: Vec<OutRecord> = (0..4)
        .map(|i| OutRecord::new(&topic).key("a").value(i.to_string()))
        .collect();
    for r in env.transport.producer().unwrap().send_batch(batch) {
        r.unwrap();
    }
    let ok = wait_until(Duration::from_secs(20) + env.slack * 8, || {
        successes(&seen, "a").len() >= 3
    });
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10)).unwrap();
    assert!(ok, "{stats:?}\n{:?}", seen.lock().unwrap());
    assert_eq!(successes(&seen, "a"), vec![1, 2, 3]);
    let dead = env.read(&dlt, 1, Duration::from_secs(5) + env.slack * 4);
    assert_eq!(dead.len(), 1);
    assert_eq!(value_of(&dead[0]), 0);
    assert_eq!(header(&dead[0], "retry.dead-reason"), Some("attempts"));
    assert!(
        dead[0].header(HELD).is_none(),
        "held marker left on a dead letter"
    );
    assert_eq!(stats.dead_lettered.attempts, 1, "{stats:?}");
    assert_eq!(stats.held, 3, "{stats:?}");
    // a1..a3 are handled only after a0 gave up.
    let seen = seen.lock().unwrap();
    let a = &seen["a"];
    assert_eq!(
        a.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![0, 0, 1, 2, 3]
    );
}

/// Two instances in one group, 20 keys of which every fourth fails its
/// first record once: the second instance joins while keys are blocked and
/// the first leaves. Every record is handled, each first handled only after
/// every earlier record of its key (a rebalance may replay: duplicates are
/// allowed, counted and printed).
pub fn key_order_survives_a_rebalance(env: &Env) {
    let topic = env.topic("accounts", 4);
    let group = unique("g-keyorder-two");
    let seen: Seen = Arc::default();
    let make = || {
        let s = seen.clone();
        env.builder(&group, &[&topic])
            .workers(2)
            .redelivery(Redelivery::Private)
            .key_order(KeyOrder::Kept)
            .policy(RetryPolicy::new(
                Duration::from_millis(300) + env.slack * 2,
                Duration::from_secs(120),
            ))
            .handler(move |r: &Record| {
                let n: usize = key_of(r)[1..].parse().unwrap_or(1);
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
    let (keys, per_key) = (20, 5u32);
    let produce = |from: u32, to: u32| {
        let batch: Vec<OutRecord> = (0..keys)
            .flat_map(|k| (from..to).map(move |i| (k, i)))
            .map(|(k, i)| {
                OutRecord::new(&topic)
                    .key(format!("k{k}"))
                    .value(i.to_string())
            })
            .collect();
        for r in env.transport.producer().unwrap().send_batch(batch) {
            r.unwrap();
        }
    };
    let a = make();
    produce(0, 2);
    assert!(wait_until(Duration::from_secs(20) + env.slack * 8, || a
        .stats()
        .held
        > 0));
    let b = make();
    produce(2, per_key);
    std::thread::sleep(Duration::from_millis(500) + env.slack * 2);
    a.shutdown(Duration::from_secs(10)).unwrap();
    let all = || {
        (0..keys).all(|k| {
            let mut got = successes(&seen, &format!("k{k}"));
            got.sort_unstable();
            got.dedup();
            got.len() >= per_key as usize
        })
    };
    // Up to the engine's 10 s wait for its relay, plus the retries.
    let ok = wait_until(Duration::from_secs(40) + env.slack * 8, all);
    let stats = b.stats();
    // Checked after the order and completeness, which say more when both fail.
    let stopped = b.shutdown(Duration::from_secs(10));
    let mut dups = 0;
    for k in 0..keys {
        let got = successes(&seen, &format!("k{k}"));
        let mut first: Vec<u32> = Vec::new();
        for v in &got {
            if !first.contains(v) {
                first.push(*v);
            }
        }
        dups += got.len() - first.len();
        assert_eq!(
            first,
            (0..per_key).collect::<Vec<_>>(),
            "k{k}: {got:?} ({stats:?})"
        );
    }
    assert!(ok, "not every key was handled: {stats:?}");
    stopped.unwrap();
    println!(
        "{}: key order across a rebalance: {dups} duplicate handlings",
        env.name
    );
}

/// Held copies are bounded by `max_parked`: while the relay keeps that
/// many whole for their key's turn, the origin partition is paused (no
/// record fetched, so none held or handled), and once the head is done
/// everything flows again, in order, nothing lost. Without the bound the
/// second wave of `a` is fetched and held too, and `b` is handled.
pub fn key_order_bounds_held_copies(env: &Env) {
    let topic = env.topic("accounts", 1);
    let group = unique("g-keyorder-bound");
    let seen: Seen = Arc::default();
    let release = Arc::new(AtomicBool::new(false));
    let (s, go) = (seen.clone(), release.clone());
    let engine = env
        .builder(&group, &[&topic])
        .workers(1)
        .redelivery(Redelivery::Private)
        .key_order(KeyOrder::Kept)
        .max_parked(5)
        .policy(RetryPolicy::new(
            Duration::from_millis(100),
            Duration::from_secs(120),
        ))
        .handler(move |r: &Record| {
            let fail = key_of(r) == "a" && value_of(r) == 0 && !go.load(Ordering::SeqCst);
            note(&s, r, !fail);
            if fail {
                Outcome::retry("not yet")
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    let produce = |key: &str, values: std::ops::Range<u32>| {
        let batch = values
            .map(|i| {
                OutRecord::new(&topic)
                    .key(key.to_string())
                    .value(i.to_string())
            })
            .collect();
        for r in env.transport.producer().unwrap().send_batch(batch) {
            r.unwrap();
        }
    };
    // a0 fails until released; a1..a7 are held behind it, past the bound.
    produce("a", 0..8);
    assert!(
        wait_until(Duration::from_secs(10) + env.slack * 8, || {
            let s = engine.stats();
            s.held == 7 && s.held_waiting >= 5 && s.paused_partitions == 1
        }),
        "{:?}",
        engine.stats()
    );
    // A second wave while paused: not fetched, so neither held nor handled.
    produce("a", 8..40);
    produce("b", 0..5);
    std::thread::sleep(Duration::from_millis(800) + env.slack * 4);
    let paused = engine.stats();
    assert_eq!(paused.held, 7, "fetched while paused: {paused:?}");
    assert!(paused.held_waiting <= 7, "{paused:?}");
    assert_eq!(paused.paused_partitions, 1, "{paused:?}");
    assert!(successes(&seen, "b").is_empty(), "b handled while paused");

    release.store(true, Ordering::SeqCst);
    let ok = wait_until(Duration::from_secs(20) + env.slack * 8, || {
        successes(&seen, "a").len() >= 40 && successes(&seen, "b").len() >= 5
    });
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10)).unwrap();
    assert!(ok, "{stats:?}");
    assert_eq!(successes(&seen, "a"), (0..40).collect::<Vec<_>>());
    assert_eq!(successes(&seen, "b"), (0..5).collect::<Vec<_>>());
    assert_eq!(stats.held_waiting, 0, "{stats:?}");
    assert_eq!(stats.paused_partitions, 0, "{stats:?}");
}

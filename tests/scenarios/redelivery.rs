//! Scenarios for issue 11: handler-chosen delays (`retry_after`), the
//! `attempts` dead reason, dead-letter stamps and routing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_retry::{DeadReason, OutRecord, Outcome, Record, RetryPolicy};

use super::{header, key_of, no_rebalance, unique, wait_until, Env};

/// `retry_after(600 ms)` with a 50 ms policy interval comes back no earlier
/// than 600 ms; zero means the policy's interval; `Duration::MAX` and a delay
/// past `max_retry_duration` dead-letter at once as `expired`; running out
/// of `max_attempts` is `attempts`. Every dead letter says who and when.
pub fn retry_after_and_dead_reasons(env: &Env) {
    let topic = env.topic("orders", 1);
    let group = unique("g-after");
    let dlt = format!("{group}-dlt");
    type Seen = Vec<(String, u32, Instant)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    let engine = env
        .builder(&group, &[&topic])
        .policy(
            RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(20))
                .with_max_attempts(3),
        )
        .handler(move |r: &Record| {
            let key = key_of(r);
            s.lock()
                .unwrap()
                .push((key.clone(), r.attempts(), Instant::now()));
            match (key.as_str(), r.attempts()) {
                ("delay", 0) => Outcome::retry_after(Duration::from_millis(600), "Retry-After"),
                ("zero", 0) => Outcome::retry_after(Duration::ZERO, "zero"),
                ("max", _) => Outcome::retry_after(Duration::MAX, "forever"),
                ("long", _) => Outcome::retry_after(Duration::from_secs(3600), "an hour"),
                ("attempts", _) => Outcome::retry("again"),
                _ => Outcome::Done,
            }
        })
        .build()
        .unwrap();
    let sent = super::now_ms();
    for k in ["delay", "zero", "max", "long", "attempts"] {
        env.produce(OutRecord::new(&topic).key(k).value("v"));
    }
    assert!(
        wait_until(Duration::from_secs(15) + env.slack * 4, || {
            let s = engine.stats();
            s.done >= 2 && s.dead_lettered.total() >= 3
        }),
        "{:?}",
        engine.stats()
    );
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10)).unwrap();
    let seen = seen.lock().unwrap().clone();
    let at = |k: &str, a: u32| {
        seen.iter()
            .find(|(key, n, _)| key == k && *n == a)
            .map(|x| x.2)
            .unwrap_or_else(|| panic!("{k} attempt {a} not seen: {seen:?}"))
    };
    let gap = at("delay", 1) - at("delay", 0);
    assert!(
        gap >= Duration::from_millis(600),
        "came back early: {gap:?}"
    );
    assert!(gap < Duration::from_millis(600) + Duration::from_secs(2) + env.slack * 4);
    let zero_gap = at("zero", 1) - at("zero", 0);
    // The policy's interval counts from `retry.enqueued-at`, a wall-clock
    // millisecond taken after the handler returned: up to 1 ms before the
    // `Instant` here (as in `retry_redelivers_after_interval`).
    assert!(
        zero_gap + Duration::from_millis(2) >= Duration::from_millis(50),
        "{zero_gap:?}"
    );
    assert_eq!(stats.dead_lettered.expired, 2, "{stats:?}");
    assert_eq!(stats.dead_lettered.attempts, 1, "{stats:?}");
    let dead = env.read(&dlt, 3, Duration::from_secs(10));
    assert_eq!(dead.len(), 3);
    for r in &dead {
        let want = if key_of(r) == "attempts" {
            "attempts"
        } else {
            "expired"
        };
        assert_eq!(header(r, kafka_retry::DEAD_REASON), Some(want), "{r:?}");
        assert_eq!(header(r, kafka_retry::GROUP), Some(group.as_str()));
        let when: i64 = header(r, kafka_retry::DEAD_LETTERED_AT)
            .unwrap()
            .parse()
            .unwrap();
        assert!(when >= sent && when <= super::now_ms(), "{when}");
        if want == "expired" {
            // Dead-lettered at once, not after waiting for the delay.
            assert_eq!(r.attempts(), 1, "{r:?}");
            assert!(header(r, kafka_retry::REASON)
                .unwrap()
                .contains("retry_after"));
        } else {
            assert_eq!(r.attempts(), 3);
        }
    }
    // Handled once each: the huge delays never came back.
    assert_eq!(seen.iter().filter(|s| s.0 == "max").count(), 1);
    assert_eq!(seen.iter().filter(|s| s.0 == "long").count(), 1);
}

/// A dead-letter router: `rejected` to a topic the engine creates, a bad
/// choice (empty, illegal, the origin topic or the retry topic, which
/// would loop) to the default topic with the problem in `retry.reason`,
/// `None` to the default topic.
pub fn dead_letters_are_routed(env: &Env) {
    let topic = env.topic("orders", 1);
    let group = unique("g-route");
    let dlt = format!("{group}-dlt");
    let routed = format!("{group}-rejected");
    let r2 = routed.clone();
    let (origin, retry) = (topic.clone(), format!("{group}-retry"));
    let engine = env
        .builder(&group, &[&topic])
        .dead_letter_router(move |r: &Record, reason| match key_of(r).as_str() {
            "empty" => Some(String::new()),
            "illegal" => Some("not a topic/name".into()),
            "origin" => Some(origin.clone()),
            "retry" => Some(retry.clone()),
            "default" => None,
            _ if reason == DeadReason::Rejected => Some(r2.clone()),
            _ => None,
        })
        .handler(|_r: &Record| Outcome::reject("no"))
        .build()
        .unwrap();
    let keys = ["a", "b", "empty", "illegal", "origin", "retry", "default"];
    for k in keys {
        env.produce(OutRecord::new(&topic).key(k).value("v"));
    }
    assert!(
        wait_until(Duration::from_secs(10) + env.slack * 4, || engine
            .stats()
            .dead_lettered
            .rejected
            >= keys.len() as u64),
        "{:?}",
        engine.stats()
    );
    engine.shutdown(Duration::from_secs(10)).unwrap();
    let mut on_routed: Vec<String> = env
        .read(&routed, 2, Duration::from_secs(10))
        .iter()
        .map(key_of)
        .collect();
    on_routed.sort();
    assert_eq!(on_routed, ["a", "b"]);
    let default = env.read(&dlt, 5, Duration::from_secs(10));
    assert_eq!(default.len(), 5, "{default:?}");
    // Nothing but the produced records on the origin topic: no loop.
    assert_eq!(
        env.read(&topic, keys.len() + 1, Duration::from_secs(3))
            .len(),
        keys.len()
    );
    for r in &default {
        let reason = header(r, kafka_retry::REASON).unwrap();
        match key_of(r).as_str() {
            "origin" | "retry" => {
                assert!(reason.contains("handled again"), "{reason}");
                assert!(reason.ends_with("; no"), "{reason}");
            }
            "empty" | "illegal" => {
                assert!(reason.contains("dead-letter router chose"), "{reason}");
                assert!(reason.ends_with("; no"), "{reason}");
            }
            "default" => assert_eq!(reason, "no"),
            other => panic!("{other} on the default topic"),
        }
        assert_eq!(header(r, kafka_retry::DEAD_REASON), Some("rejected"));
        assert_eq!(header(r, kafka_retry::GROUP), Some(group.as_str()));
    }
}

/// `Redelivery::Private`: due records reach the handler straight from the
/// relay (origin topic, partition and offset shown, attempts counting up,
/// first-received kept, same worker per key), nothing is ever written back
/// to the origin topic, and the stats count them apart. Then a restart
/// commits nothing twice: a second engine of the group handles nothing.
pub fn private_redelivery_skips_the_origin_topic(env: &Env) {
    let topic = env.topic("orders", 2);
    let group = unique("g-private");
    let n = 20usize;
    type Seen = Vec<(String, String, u32, Option<i64>, std::thread::ThreadId)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    let engine = env
        .builder(&group, &[&topic])
        .redelivery(kafka_retry::Redelivery::Private)
        .workers(3)
        .policy(RetryPolicy::new(
            Duration::from_millis(100),
            Duration::from_secs(60),
        ))
        .handler(move |r: &Record| {
            s.lock().unwrap().push((
                key_of(r),
                r.topic.to_string(),
                r.attempts(),
                r.first_received_at(),
                std::thread::current().id(),
            ));
            if r.attempts() < 2 {
                Outcome::retry("not yet")
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    for i in 0..n {
        env.produce(OutRecord::new(&topic).key(format!("k{i}")).value("v"));
    }
    assert!(
        wait_until(Duration::from_secs(15) + env.slack * 4, || engine
            .stats()
            .done
            >= n as u64),
        "{:?}",
        engine.stats()
    );
    // Let a commit interval pass so the relay commits what is settled.
    std::thread::sleep(Duration::from_millis(400));
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10)).unwrap();
    // Exactly once unless a group rebalanced (see `no_rebalance`).
    let exact = no_rebalance(&stats);
    if exact {
        assert_eq!(stats.redelivered_private, 2 * n as u64, "{stats:?}");
        assert_eq!(stats.received, n as u64, "{stats:?}");
    } else {
        assert!(stats.redelivered_private >= 2 * n as u64, "{stats:?}");
        assert!(stats.received >= n as u64, "{stats:?}");
    }
    assert_eq!(stats.relayed, 0, "{stats:?}");
    let seen = seen.lock().unwrap().clone();
    for i in 0..n {
        let k = format!("k{i}");
        let mine: Vec<_> = seen.iter().filter(|s| s.0 == k).collect();
        assert!(mine.len() >= 3, "{k}: {mine:?}");
        let attempts: Vec<u32> = mine.iter().map(|s| s.2).collect();
        if exact {
            assert_eq!(&attempts[..3], &[0, 1, 2], "{k}");
            assert!(
                mine[1].3.is_some() && mine[1].3 == mine[2].3,
                "first-received kept"
            );
        } else {
            // Each attempt seen, first seen in order.
            let first = |a: u32| attempts.iter().position(|&x| x == a);
            assert!(
                matches!((first(0), first(1), first(2)), (Some(a), Some(b), Some(c)) if a < b && b < c),
                "{k}: {attempts:?}"
            );
            assert!(
                mine.iter().filter(|s| s.2 > 0).all(|s| s.3.is_some()),
                "first-received kept"
            );
        }
        assert!(
            mine.iter().all(|s| s.1 == topic),
            "handler saw the origin topic"
        );
        assert!(mine.iter().all(|s| s.4 == mine[0].4), "{k}: same worker");
    }
    // Nothing but the n records on the origin topic.
    let origin = env.read(&topic, n + 1, Duration::from_secs(3));
    assert_eq!(origin.len(), n, "the engine wrote to the origin topic");
    // Everything settled was committed: a second life handles nothing.
    let again: Arc<Mutex<usize>> = Arc::default();
    let a = again.clone();
    let engine = env
        .builder(&group, &[&topic])
        .redelivery(kafka_retry::Redelivery::Private)
        .handler(move |_r: &Record| {
            *a.lock().unwrap() += 1;
            Outcome::Done
        })
        .build()
        .unwrap();
    wait_until(env.session_timeout * 2 + Duration::from_secs(1), || {
        engine.stats().assigned_partitions > 0
    });
    std::thread::sleep(Duration::from_millis(500));
    engine.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(*again.lock().unwrap(), 0, "settled records handled again");
}

/// Records parked by an `Origin` engine are handled by the `Private`
/// engine that replaces it (a mode switch across a restart): nothing is
/// lost, nothing goes back to the origin topic. And back: records parked
/// under `Private` are relayed by an `Origin` engine.
pub fn switching_modes_keeps_parked_records(env: &Env) {
    let topic = env.topic("orders", 1);
    let group = unique("g-switch");
    let n = 10usize;
    // The due time is the relay's: enqueued-at plus the running engine's
    // interval. So the engines that park use an interval nothing reaches
    // before they stop (whatever the group join and the SASL_SSL acks
    // cost), and the engines that take over one that makes everything due.
    let parking = RetryPolicy::new(Duration::from_secs(120), Duration::from_secs(600));
    let taking_over = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(600));
    let run = |mode: kafka_retry::Redelivery, fail: bool, produce: bool| {
        let handled: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
        let h = handled.clone();
        let engine = env
            .builder(&group, &[&topic])
            .redelivery(mode)
            .policy(if fail {
                parking.clone()
            } else {
                taking_over.clone()
            })
            .handler(move |r: &Record| {
                h.lock().unwrap().push((key_of(r), r.attempts()));
                if fail {
                    Outcome::retry("parked")
                } else {
                    Outcome::Done
                }
            })
            .build()
            .unwrap();
        if produce {
            for i in 0..n {
                env.produce(OutRecord::new(&topic).key(format!("k{i}")).value("v"));
            }
        }
        let want = n as u64;
        let ok = wait_until(Duration::from_secs(15) + env.slack * 4, || {
            let s = engine.stats();
            if fail {
                s.retried >= want
            } else {
                // Both counts: a relayed record can be read back from the
                // origin topic and handled before the relay has counted
                // its acknowledgement.
                s.done >= want && s.relayed + s.redelivered_private >= want
            }
        });
        let stats = engine.stats();
        engine.shutdown(Duration::from_secs(10)).unwrap();
        assert!(ok, "{mode:?}: {stats:?}");
        let seen = handled.lock().unwrap().clone();
        (stats, seen)
    };
    use kafka_retry::Redelivery::{Origin, Private};
    // Origin parks them, shuts down before they are due.
    let (s, _) = run(Origin, true, true);
    assert_eq!(s.relayed, 0, "{s:?}");
    // Private handles them: attempts 1, nothing written to the origin.
    let (s, handled) = run(Private, false, false);
    assert_eq!(s.redelivered_private, n as u64, "{s:?}");
    assert!(handled.iter().all(|h| h.1 == 1), "{handled:?}");
    assert_eq!(env.read(&topic, n + 1, Duration::from_secs(3)).len(), n);
    // Private parks new ones; Origin relays them.
    let (_, _) = run(Private, true, true);
    let (s, handled) = run(Origin, false, false);
    assert_eq!(s.relayed, n as u64, "{s:?}");
    assert!(handled.iter().all(|h| h.1 == 1), "{handled:?}");
    let mut keys: Vec<&str> = handled.iter().map(|h| h.0.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), n, "{handled:?}");
}

//! Scenarios for issue 11: handler-chosen delays (`retry_after`), the
//! `attempts` dead reason, dead-letter stamps and routing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_retry::{DeadReason, OutRecord, Outcome, Record, RetryPolicy};

use super::{header, key_of, unique, wait_until, Env};

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
    assert!(zero_gap >= Duration::from_millis(50), "{zero_gap:?}");
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
/// choice (empty, illegal) to the default topic with the problem in
/// `retry.reason`, `None` to the default topic.
pub fn dead_letters_are_routed(env: &Env) {
    let topic = env.topic("orders", 1);
    let group = unique("g-route");
    let dlt = format!("{group}-dlt");
    let routed = format!("{group}-rejected");
    let r2 = routed.clone();
    let engine = env
        .builder(&group, &[&topic])
        .dead_letter_router(move |r: &Record, reason| match key_of(r).as_str() {
            "empty" => Some(String::new()),
            "illegal" => Some("not a topic/name".into()),
            "default" => None,
            _ if reason == DeadReason::Rejected => Some(r2.clone()),
            _ => None,
        })
        .handler(|_r: &Record| Outcome::reject("no"))
        .build()
        .unwrap();
    for k in ["a", "b", "empty", "illegal", "default"] {
        env.produce(OutRecord::new(&topic).key(k).value("v"));
    }
    assert!(
        wait_until(Duration::from_secs(10) + env.slack * 4, || engine
            .stats()
            .dead_lettered
            .rejected
            >= 5),
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
    let default = env.read(&dlt, 3, Duration::from_secs(10));
    assert_eq!(default.len(), 3, "{default:?}");
    for r in &default {
        let reason = header(r, kafka_retry::REASON).unwrap();
        match key_of(r).as_str() {
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

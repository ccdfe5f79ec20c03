//! Issue 11 on the memory broker: header growth across many hops.

mod scenarios;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_retry::{OutRecord, Outcome, Record, RetryPolicy};
use scenarios::{memory_t, wait_until};

fn size(r: &Record) -> usize {
    r.headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
        .sum::<usize>()
        + r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
}

/// One record parked 1,000 times (alternating plain retries and
/// `retry_after`): its header count never changes after the first hop and
/// its size changes only with the width of the attempts count.
#[test]
fn one_record_parked_a_thousand_times_keeps_its_size() {
    let (broker, builder) = memory_t("g-hops", 1);
    // (attempts, header count, size) per delivery.
    let seen: Arc<Mutex<Vec<(u32, usize, usize)>>> = Arc::default();
    let s = seen.clone();
    let engine = builder
        .policy(RetryPolicy::new(
            Duration::from_millis(1),
            Duration::from_secs(600),
        ))
        .commit_interval(Duration::from_millis(100))
        .handler(move |r: &Record| {
            let a = r.attempts();
            s.lock().unwrap().push((a, r.headers.len(), size(r)));
            match a {
                1000.. => Outcome::Done,
                a if a % 2 == 0 => Outcome::retry("still failing"),
                _ => Outcome::retry_after(Duration::from_millis(1), "still failing"),
            }
        })
        .build()
        .unwrap();
    broker
        .produce(OutRecord::new("t").key("k").value("v").header("user", "u"))
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(50), || engine.stats().done == 1),
        "{:?}",
        engine.stats()
    );
    engine.shutdown(Duration::from_secs(5)).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1001);
    for (i, (a, _, _)) in seen.iter().enumerate() {
        assert_eq!(*a as usize, i, "attempts count up by one per hop");
    }
    let digits = |a: u32| a.to_string().len();
    // Odd attempts arrive with `retry.due-at`, even ones without.
    for parity in [0, 1] {
        let hops: Vec<_> = seen[1..]
            .iter()
            .filter(|(a, _, _)| a % 2 == parity)
            .collect();
        let (a0, n0, s0) = *hops[0];
        for &&(a, n, s) in &hops {
            assert_eq!(n, n0, "header count at attempt {a}");
            assert_eq!(s - digits(a), s0 - digits(a0), "size at attempt {a}");
        }
    }
    println!(
        "record size: first delivery {} B, attempt 1 {} B, attempt 1000 {} B",
        seen[0].2, seen[1].2, seen[1000].2
    );
}

//! Issue 11 on the memory broker: header growth across many hops.

mod scenarios;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_retry::{Engine, OutRecord, Outcome, Record, Redelivery, RetryPolicy};
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

/// `Redelivery::Private`, stopped while the handler is busy with records
/// the relay handed over: a graceful stop waits for them and commits their
/// retry-topic offsets, so the next engine of the group handles only what
/// was still parked, nothing twice. (Before, the relay made its final
/// commit without waiting for the consumer thread to mark them done: each
/// one came back.)
#[test]
fn private_stop_commits_what_the_workers_finish() {
    let (broker, _) = memory_t("g-private-stop", 1);
    // (key, attempts) of every handler call, both engines.
    let seen: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let run = |first: bool| {
        let s = seen.clone();
        Engine::builder(broker.clone())
            .group_id("g-private-stop")
            .topics(["t"])
            .redelivery(Redelivery::Private)
            .workers(2)
            .policy(RetryPolicy::new(
                Duration::from_millis(20),
                Duration::from_secs(600),
            ))
            // Longer than the test: only the final commits count.
            .commit_interval(Duration::from_secs(60))
            .handler(move |r: &Record| {
                let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default());
                s.lock().unwrap().push((key.into_owned(), r.attempts()));
                match r.attempts() {
                    0 if first => Outcome::retry("later"),
                    _ => {
                        std::thread::sleep(Duration::from_millis(300));
                        Outcome::Done
                    }
                }
            })
            .build()
            .unwrap()
    };
    let redelivered = || {
        let mut keys: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.1 >= 1)
            .map(|s| s.0.clone())
            .collect();
        keys.sort();
        keys
    };
    let engine = run(true);
    for i in 0..4 {
        broker
            .produce(OutRecord::new("t").key(format!("k{i}")).value("v"))
            .unwrap();
    }
    // Stop while the workers are in the handler with redelivered records.
    assert!(wait_until(Duration::from_secs(10), || !redelivered().is_empty()));
    engine.shutdown(Duration::from_secs(10)).unwrap();
    let engine = run(false);
    assert!(wait_until(Duration::from_secs(10), || {
        let mut k = redelivered();
        k.dedup();
        k.len() == 4
    }));
    std::thread::sleep(Duration::from_millis(500));
    engine.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(
        redelivered(),
        ["k0", "k1", "k2", "k3"],
        "{:?}",
        seen.lock().unwrap()
    );
}

/// ... and a redelivered record still in the handler at the deadline is
/// reported: the shutdown error counts it and names the retry partition
/// and the offset the next relay reads again.
#[test]
fn private_stop_past_the_deadline_reports_the_redelivered_record() {
    let (broker, builder) = memory_t("g-private-late", 1);
    let engine = builder
        .redelivery(Redelivery::Private)
        .policy(RetryPolicy::new(
            Duration::from_millis(20),
            Duration::from_secs(600),
        ))
        .handler(move |r: &Record| match r.attempts() {
            0 => Outcome::retry("later"),
            _ => {
                std::thread::sleep(Duration::from_secs(3));
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    broker
        .produce(OutRecord::new("t").key("k").value("v"))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || engine
        .stats()
        .redelivered_private
        == 1));
    std::thread::sleep(Duration::from_millis(100));
    let err = engine.shutdown(Duration::from_millis(500)).unwrap_err();
    let kafka_retry::Error::Shutdown(report) = &err else {
        panic!("{err}")
    };
    assert_eq!(report.abandoned, 1, "{err}");
    assert!(
        report
            .uncommitted
            .iter()
            .any(|(tp, o)| tp.topic == "g-private-late-retry" && *o == 0),
        "{err}"
    );
}

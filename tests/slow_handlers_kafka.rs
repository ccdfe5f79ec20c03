//! Slow handlers on Kafka: a handler that takes longer than the session
//! timeout on some records, while thousands of other records flow.
//!
//! Two engines share one group (each a witness for the other): if the slow
//! one stopped heartbeating it would be evicted and the other would take its
//! partitions. Checked while the records flow:
//! - no eviction: each engine keeps the partitions it had once the group
//!   settled, `rebalances` does not move, no record is handled twice;
//! - fetching pauses instead of buffering: `paused_partitions > 0` at some
//!   point, `in_flight` stays under workers x (queue + one batch in hand)
//!   plus one poll per partition;
//! - memory stays flat: the process RSS (VmRSS) grows by less than 64 MiB
//!   over its value once the group settled;
//! - everything is handled in the end, and shutdown returns Ok.
//!
//! Run with `scripts/test-broker cargo test --test slow_handlers_kafka -- --nocapture`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{eventually, kafka_bootstrap, unique};
use kafka_retry::transport::Transport;
use kafka_retry::{Engine, KafkaConfig, KafkaTransport, OutRecord, Outcome, Record, Stats};

const PARTITIONS: i32 = 4;
/// Records written while the engines run.
const RECORDS: usize = 40_000;
const VALUE_BYTES: usize = 2048;
const SESSION: Duration = Duration::from_secs(2);
/// Longer than the session timeout.
const SLOW: Duration = Duration::from_secs(5);
/// Which records (index within their partition) are slow.
const SLOW_AT: [usize; 2] = [100, 4_000];
const WORKERS: usize = 2;
const QUEUE_CAPACITY: usize = 256;
const MAX_POLL_RECORDS: usize = 200;
/// Records per job batch inside the engine (`engine::JOB_BATCH`): a worker
/// queue holds whole batches, so its capacity rounds up to this.
const JOB_BATCH: usize = 256;
const RSS_GROWTH_LIMIT: u64 = 64 * 1024 * 1024;

/// VmRSS of this process in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Record `i` of the run: its value starts with the zero-padded index, then
/// `slow` or `fast`.
fn record(topic: &str, i: usize) -> OutRecord {
    let partition = (i % PARTITIONS as usize) as i32;
    let nth = i / PARTITIONS as usize;
    let kind = if SLOW_AT.contains(&nth) {
        "slow"
    } else {
        "fast"
    };
    let mut value = format!("{i:08}-{kind}-").into_bytes();
    value.resize(VALUE_BYTES, b'.');
    OutRecord::new(topic)
        .key(format!("key-{}", i % 997))
        .value(value)
        .partition(partition)
}

fn index_of(r: &Record) -> Option<(usize, bool)> {
    let v = r.value.as_deref()?;
    let i = std::str::from_utf8(v.get(..8)?).ok()?.parse().ok()?;
    Some((i, v.get(9..13) == Some(b"slow")))
}

#[derive(Default, Debug)]
struct Peak {
    in_flight: i64,
    paused: i64,
    rss: u64,
    /// Problems seen while sampling (eviction, rebalance).
    problems: Vec<String>,
}

#[test]
fn slow_handlers_do_not_get_the_member_evicted() {
    common::init_log();
    let config = KafkaConfig::new(kafka_bootstrap())
        .request_timeout(Duration::from_secs(10))
        .fetch_max_wait(Duration::from_millis(50));
    let transport: Arc<dyn Transport> =
        Arc::new(KafkaTransport::connect(config).expect("connect to the test broker"));
    let topic = unique("slow");
    transport.create_topic(&topic, PARTITIONS, None).unwrap();
    let group = unique("g-slow");

    // handled[i]: how many times record i was handled.
    let handled: Arc<Vec<AtomicU32>> = Arc::new((0..RECORDS).map(|_| AtomicU32::new(0)).collect());
    let slow_started: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let make = || {
        let (h, s) = (handled.clone(), slow_started.clone());
        Engine::builder(transport.clone())
            .group_id(&group)
            .topics([topic.as_str()])
            .workers(WORKERS)
            .queue_capacity(QUEUE_CAPACITY)
            .max_poll_records(MAX_POLL_RECORDS)
            .session_timeout(SESSION)
            .rebalance_timeout(SESSION * 4)
            .revoke_timeout(SESSION * 2)
            .commit_interval(Duration::from_millis(200))
            .handler(move |r: &Record| match index_of(r) {
                Some((i, slow)) => {
                    if slow {
                        s.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Instant::now());
                        thread::sleep(SLOW);
                    }
                    if let Some(n) = h.get(i) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Done
                }
                None => Outcome::reject("not a record of this test"),
            })
            .build()
            .unwrap()
    };
    let engines = [make(), make()];
    assert!(
        eventually(Duration::from_secs(30), || {
            let s: Vec<Stats> = engines.iter().map(Engine::stats).collect();
            s.iter().all(|s| s.assigned_partitions > 0)
                && s.iter().map(|s| s.assigned_partitions).sum::<i64>() == i64::from(PARTITIONS)
        }),
        "the group did not settle with both engines: {:?}",
        engines
            .iter()
            .map(|e| e.stats().assigned_partitions)
            .collect::<Vec<_>>()
    );
    let settled: Vec<Stats> = engines.iter().map(Engine::stats).collect();
    let rss_base = rss();

    let started = Instant::now();
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (transport, topic, producing) = (transport.clone(), topic.clone(), producing.clone());
        thread::spawn(move || {
            let p = transport.producer().expect("producer");
            for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(1000) {
                let batch: Vec<OutRecord> = chunk.iter().map(|&i| record(&topic, i)).collect();
                for r in p.send_batch(batch) {
                    r.expect("produce");
                }
            }
            producing.store(false, Ordering::Release);
            started.elapsed()
        })
    };

    let all_done = || handled.iter().all(|n| n.load(Ordering::Relaxed) > 0);
    let mut peak = Peak::default();
    let deadline = started + Duration::from_secs(50);
    let mut samples = 0u64;
    while Instant::now() < deadline && (producing.load(Ordering::Acquire) || !all_done()) {
        for (e, (engine, base)) in engines.iter().zip(&settled).enumerate() {
            let s = engine.stats();
            peak.in_flight = peak.in_flight.max(s.in_flight);
            peak.paused = peak.paused.max(s.paused_partitions);
            if s.rebalances != base.rebalances || s.assigned_partitions != base.assigned_partitions
            {
                peak.problems.push(format!(
                    "engine {e} at {:?}: rebalances {} -> {}, partitions {} -> {}",
                    started.elapsed(),
                    base.rebalances,
                    s.rebalances,
                    base.assigned_partitions,
                    s.assigned_partitions
                ));
            }
        }
        peak.rss = peak.rss.max(rss());
        samples += 1;
        thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    let produced_in = producer.join().expect("producer thread");
    let stats: Vec<Stats> = engines.iter().map(Engine::stats).collect();
    let results: Vec<_> = engines
        .into_iter()
        .map(|e| e.shutdown(Duration::from_secs(10)))
        .collect();

    let counts: Vec<u32> = handled.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    let missing = counts.iter().filter(|&&n| n == 0).count();
    let twice = counts.iter().filter(|&&n| n > 1).count();
    let slow = slow_started.lock().unwrap_or_else(|e| e.into_inner()).len();
    let per_engine_bound = (WORKERS * (QUEUE_CAPACITY.div_ceil(JOB_BATCH) + 1) * JOB_BATCH
        + PARTITIONS as usize * MAX_POLL_RECORDS) as i64;
    let growth = peak.rss.saturating_sub(rss_base);
    println!(
        "slow handlers: {RECORDS} records of {VALUE_BYTES} B on {PARTITIONS} partitions, {slow} slow ones \
         sleeping {SLOW:?} (session timeout {SESSION:?}), 2 engines x {WORKERS} workers, queue \
         {QUEUE_CAPACITY}, max poll {MAX_POLL_RECORDS}: written in {produced_in:?}, all handled in {took:?} ({samples} samples)"
    );
    println!(
        "max in_flight {} (bound {per_engine_bound} per engine), max paused partitions {}, \
         rebalances after settling {:?} -> {:?}, partitions {:?}, handled twice {twice}, missing {missing}",
        peak.in_flight,
        peak.paused,
        settled.iter().map(|s| s.rebalances).collect::<Vec<_>>(),
        stats.iter().map(|s| s.rebalances).collect::<Vec<_>>(),
        stats.iter().map(|s| s.assigned_partitions).collect::<Vec<_>>(),
    );
    println!(
        "RSS: {:.1} MiB once settled, peak {:.1} MiB, growth {:.1} MiB (limit {:.0} MiB)",
        mib(rss_base),
        mib(peak.rss),
        mib(growth),
        mib(RSS_GROWTH_LIMIT)
    );

    assert!(
        peak.problems.is_empty(),
        "evicted or rebalanced:\n{}",
        peak.problems.join("\n")
    );
    assert_eq!(
        missing, 0,
        "{missing} records never handled within {took:?}"
    );
    assert_eq!(
        twice, 0,
        "records handled twice: a member lost its partitions"
    );
    assert_eq!(slow, SLOW_AT.len() * PARTITIONS as usize);
    assert!(
        peak.paused > 0,
        "fetching never paused while handlers were stuck"
    );
    assert!(
        peak.in_flight <= per_engine_bound,
        "in_flight reached {} (bound {per_engine_bound}): buffering without bound",
        peak.in_flight
    );
    assert!(
        growth < RSS_GROWTH_LIMIT,
        "RSS grew by {:.1} MiB while {:.1} MiB of records flowed",
        mib(growth),
        mib((RECORDS * VALUE_BYTES) as u64)
    );
    for s in &stats {
        assert_eq!(s.panics, 0);
        assert_eq!(s.dead_lettered.total(), 0);
    }
    for (e, r) in results.into_iter().enumerate() {
        r.unwrap_or_else(|err| panic!("engine {e} shutdown: {err}"));
    }
}

//! Engine benchmark on the memory broker. Prints numbers; it is not a test.
//!
//! Run: `cargo run --release --example bench_engine` (all sections, 70-90 s
//! on 2 shared cores), or name sections:
//! `cargo run --release --example bench_engine -- memory lateness throughput blocking`
//! (`tp0` / `tp10` run only the 0% / 10% throughput rows).
//! Environment: `BENCH_N` (default 2,000,000) sets the 0%-retry record count
//! (the 10% runs use a quarter), `BENCH_REPEAT` (default 2) the runs per row.
//! `BENCH_PARKED` (default 100,000) the records parked in `memory`;
//! `BENCH_LAT_N` (100,000), `BENCH_LAT_SPREAD_MS` (5,000) and
//! `BENCH_LAT_INTERVAL_MS` (1,000) and `BENCH_LAT_DELAY_MS` (0, added to
//! every enqueued-at) and `BENCH_LAT_RUNS` (3) shape `lateness`;
//! `BENCH_MAX_PARKED` (the engine's default, 100,000) is `max_parked` in
//! `memory` and `lateness`: the relay keeps that many records whole and
//! indexes the rest (hybrid parking), so with 1 M or 10 M parked the index
//! carries all but 100,000, and `BENCH_MAX_PARKED=1` measures the index
//! alone. `BENCH_WHOLE=1` runs `memory` and `lateness` through a transport
//! without a `Reader`, so the relay keeps every parked record whole (the
//! behaviour before index-only parking; `max_parked` is then raised above
//! the count so nothing pauses).
//!
//! Sections:
//! - `memory`: RSS per parked record, the broker's copy of the retry topic
//!   and the relay's heap measured separately (runs first, in a fresh heap).
//! - `lateness`: 100,000 records put on the retry topic with due times
//!   spread over 5 s; how late each comes back (relay -> origin topic ->
//!   consumer -> worker), and how late the relay wrote it.
//! - `hol`: the relay's bound reached by records due in an hour, then
//!   records due in 1 s: how late those come back (no head-of-line
//!   blocking: they must not wait behind the far ones).
//! - `throughput`: pre-loaded records, no-op handler, 0% and 10% retries,
//!   1, 2 and 4 workers; records/second from `build()` to the last `Done`.
//! - `blocking`: non-blocking retries next to a handler that sleeps the
//!   retry interval and retries itself.
//!
//! Per run the engine threads' CPU time, time spent runnable but waiting for
//! a core, and wake-ups come from `/proc/self/task/*/schedstat`: the machine
//! is shared, and the wait column shows how much of a slow run was other
//! jobs (or the engine's own threads outnumbering the cores).

#[path = "shared/bench.rs"]
mod bench;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bench::{id_of, percentile, thread_times, BoxError, ThreadTime};
use bytes::Bytes;
use kafka_retry::transport::Transport;
use kafka_retry::{
    Engine, Header, MemoryBroker, OutRecord, Outcome, Record, RetryPolicy, Stats, ATTEMPTS,
    ENQUEUED_AT, FIRST_RECEIVED_AT, ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TOPIC, REASON,
};

/// Key length in bytes (`key-000042`).
const KEY_BYTES: usize = 10;
/// Value length in bytes; the first 8 are the record id (little endian).
const VALUE_BYTES: usize = 100;
/// Distinct keys.
const KEYS: u64 = 10_000;
/// Partitions of every origin and retry topic.
const PARTITIONS: i32 = 8;

fn main() -> Result<(), BoxError> {
    let sections = bench::Sections::from_args();
    let want = |s: &str| sections.want(s);
    let started = Instant::now();
    let mut summary: Vec<String> = Vec::new();
    println!(
        "bench_engine: {} cores, memory broker, {KEY_BYTES}-byte keys ({KEYS} distinct), \
         {VALUE_BYTES}-byte values, {PARTITIONS} partitions per topic",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Memory first: later sections leave freed pages in the allocator,
    // which would hide growth.
    if want("memory") {
        memory(&mut summary)?;
        println!("[{} at the end of this section]", load());
    }
    if want("lateness") {
        lateness(&mut summary)?;
        println!("[{} at the end of this section]", load());
    }
    if want("hol") {
        head_of_line(&mut summary)?;
        println!("[{} at the end of this section]", load());
    }
    let (tp0, tp10) = (
        want("throughput") || want("tp0"),
        want("throughput") || want("tp10"),
    );
    if tp0 || tp10 {
        throughput(&mut summary, tp0, tp10)?;
        println!("[{} at the end of this section]", load());
    }
    if want("blocking") {
        blocking(&mut summary)?;
        println!("[{} at the end of this section]", load());
    }
    summary.push(format!(
        "machine: shared with other jobs, {} at the end",
        load()
    ));
    println!(
        "\n===== summary (total {:.1} s) =====",
        started.elapsed().as_secs_f64()
    );
    for line in &summary {
        println!("{line}");
    }
    Ok(())
}

// ---------------------------------------------------------------- helpers

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Wall clock in ms with microsecond fractions.
fn now_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_micros() as f64 / 1000.0)
}

/// The 1-minute load average: other processes share these cores.
fn load() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "load average {}",
        l.split_whitespace().next().unwrap_or("?")
    )
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(-1)
}

fn key(id: u64) -> Bytes {
    bench::key(id, KEYS, 6)
}

fn value(id: u64) -> Bytes {
    bench::value(id, VALUE_BYTES)
}

fn header_i64(r: &Record, name: &str) -> Option<i64> {
    let v = r.header(name)?.value.as_deref()?;
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Writes `records` in chunks through a producer (one lock per partition
/// per chunk).
fn produce_all(
    broker: &MemoryBroker,
    records: impl Iterator<Item = OutRecord>,
) -> Result<(), BoxError> {
    bench::send_chunked(&*broker.producer()?, records, 10_000, "produce")
}

/// Polls `stats` every millisecond until `done` is true; the elapsed time,
/// or `None` after `limit`.
fn wait_for(engine: &Engine, limit: Duration, done: impl Fn(&Stats) -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if done(&engine.stats()) {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// CPU seconds, seconds waiting for a core and times scheduled in
/// (thousands) per engine thread kind between two snapshots.
fn cpu_by_role(before: &HashMap<u32, ThreadTime>, after: &HashMap<u32, ThreadTime>) -> String {
    let mut roles: Vec<(&str, f64, f64, u64)> = vec![
        ("consumer", 0.0, 0.0, 0),
        ("workers", 0.0, 0.0, 0),
        ("relay", 0.0, 0.0, 0),
    ];
    for (tid, t) in after {
        let (c0, w0, s0) = before
            .get(tid)
            .map_or((0, 0, 0), |b| (b.cpu, b.wait, b.slices));
        let Some(role) = roles.iter_mut().find(|r| r.0 == bench::role(&t.name)) else {
            continue;
        };
        role.1 += t.cpu.saturating_sub(c0) as f64 / 1e9;
        role.2 += t.wait.saturating_sub(w0) as f64 / 1e9;
        role.3 += t.slices.saturating_sub(s0);
    }
    roles
        .iter()
        .map(|(r, c, w, n)| format!("{r} {c:.2}+{w:.2} ({:.1}k)", *n as f64 / 1e3))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Retry headers as the engine writes them, for a record from
/// `origin`/`partition`/`offset`.
fn retry_headers(
    origin: &str,
    partition: i32,
    offset: i64,
    first: i64,
    enqueued: i64,
) -> Vec<Header> {
    vec![
        Header::new(ORIGIN_TOPIC, origin.to_string()),
        Header::new(ORIGIN_PARTITION, partition.to_string()),
        Header::new(ORIGIN_OFFSET, offset.to_string()),
        Header::new(FIRST_RECEIVED_AT, first.to_string()),
        Header::new(ENQUEUED_AT, enqueued.to_string()),
        Header::new(ATTEMPTS, "1"),
        Header::new(REASON, "bench"),
    ]
}

/// Puts records 0..n on `<origin>-retry` as the engine would have parked
/// them (record i from partition i mod PARTITIONS, offset i), first
/// received at `first` and enqueued at `enqueued(i)`.
fn produce_retries(
    broker: &MemoryBroker,
    origin: &str,
    n: u64,
    first: i64,
    enqueued: impl Fn(u64) -> i64,
) -> Result<(), BoxError> {
    let retry_topic = format!("{origin}-retry");
    produce_all(
        broker,
        (0..n).map(|i| {
            let p = (i % PARTITIONS as u64) as i32;
            OutRecord {
                headers: retry_headers(origin, p, i as i64, first, enqueued(i)),
                ..OutRecord::new(retry_topic.as_str())
                    .key(key(i))
                    .value(value(i))
                    .partition(p)
            }
        }),
    )
}

// ---------------------------------------------------------------- memory

fn memory(summary: &mut Vec<String>) -> Result<(), BoxError> {
    let count = bench::env_u64("BENCH_PARKED", 100_000) as usize;
    println!("\n== memory per parked record: {count} records, {KEY_BYTES}-byte keys, {VALUE_BYTES}-byte values, 7 retry headers ==");

    // The engine's fixed cost (threads, channels, group state), measured on
    // an engine with nothing to park, then subtracted from the relay's growth.
    let fixed = {
        let broker = MemoryBroker::new();
        broker.create_topic("warm", PARTITIONS)?;
        let r0 = rss_kib();
        let engine = Engine::builder(broker.clone())
            .group_id("warm")
            .topics(["warm"])
            .handler(|_: &Record| Outcome::Done)
            .build()?;
        wait_for(&engine, Duration::from_secs(5), |s| {
            s.assigned_partitions > 0
        });
        std::thread::sleep(Duration::from_millis(200));
        let r1 = rss_kib();
        engine.shutdown(Duration::from_secs(5))?;
        r1 - r0
    };

    let broker = MemoryBroker::new();
    broker.create_topic("mem", PARTITIONS)?;
    broker.create_topic("mem-retry", PARTITIONS)?;
    let r0 = rss_kib();
    let now = now_ms();
    produce_retries(&broker, "mem", count as u64, now, |_| now)?;
    let r1 = rss_kib();
    println!("relay: {}", parking_mode(bench_max_parked(count)));
    let engine = Engine::builder(parking_transport(&broker))
        .group_id("mem")
        .topics(["mem"])
        .workers(2)
        .handler(|_: &Record| Outcome::Done)
        .max_parked(bench_max_parked(count))
        .policy(RetryPolicy::new(
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        ))
        .build()?;
    let t = wait_for(&engine, Duration::from_secs(600), |s| {
        s.parked as usize >= count
    });
    std::thread::sleep(Duration::from_millis(200));
    let r2 = rss_kib();
    let parked = engine.stats().parked;
    engine.shutdown(Duration::from_secs(5))?;

    let broker_b = (r1 - r0) as f64 * 1024.0 / count as f64;
    let relay_b = (r2 - r1 - fixed) as f64 * 1024.0 / count as f64;
    println!("engine fixed cost (empty engine):      {fixed:>8} KiB");
    println!("RSS before producing:                  {r0:>8} KiB");
    println!("after producing {count} to the retry topic: {r1:>8} KiB  -> broker copy {broker_b:.0} B/record");
    println!(
        "after the relay parked {parked} ({}):  {r2:>8} KiB  -> relay {relay_b:.0} B/record (fixed cost subtracted)",
        t.map_or("TIMED OUT".into(), |d| format!("in {:.0} ms", d.as_secs_f64() * 1e3))
    );
    println!(
        "size_of::<Record>() = {} B (a whole parked record holds one plus due time, plan and counters); \
         index entry = {} B (plus 16 B in the offset tracker)",
        std::mem::size_of::<Record>(),
        Stats::PARKED_ENTRY_BYTES
    );
    summary.push(format!(
        "memory/parked record ({VALUE_BYTES} B value, {KEY_BYTES} B key, 7 retry headers, {count} parked, {}): \
         relay {relay_b:.0} B (relay total {:.0} MiB) + memory broker's retry-topic copy {broker_b:.0} B = {:.0} B",
        parking_mode(bench_max_parked(count)),
        (r2 - r1 - fixed) as f64 / 1024.0,
        relay_b + broker_b
    ));
    Ok(())
}

// ---------------------------------------------------------------- lateness

/// One lateness run: the whole-hop and relay-write lateness of every
/// record, sorted, plus the count parked before the first due time and the
/// engine threads' CPU and run-queue wait.
struct Lateness {
    hop: Vec<f64>,
    relay: Vec<f64>,
    after: Vec<f64>,
    parked_before_first_due: i64,
    relayed: u64,
    timed_out: bool,
    cpu: String,
    /// The 100 ms windows of due time with the latest records: (start of
    /// the window after the first due time, ms; records due in it; their
    /// p50 and max whole-hop lateness, ms), latest first.
    worst: Vec<(i64, usize, f64, f64)>,
}

/// The `k` windows of `WINDOW_MS` of due time whose records came back
/// latest (by their maximum), from (lateness ms, due ms) samples.
fn worst_windows(samples: &[(f64, i64)], k: usize) -> Vec<(i64, usize, f64, f64)> {
    const WINDOW_MS: i64 = 100;
    let Some(first) = samples.iter().map(|s| s.1).min() else {
        return Vec::new();
    };
    let mut windows: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
    for &(late, due) in samples {
        windows
            .entry((due - first) / WINDOW_MS)
            .or_default()
            .push(late);
    }
    let mut rows: Vec<(i64, usize, f64, f64)> = windows
        .into_iter()
        .map(|(w, mut v)| {
            v.sort_by(f64::total_cmp);
            (
                w * WINDOW_MS,
                v.len(),
                percentile(&v, 0.5),
                percentile(&v, 1.0),
            )
        })
        .collect();
    rows.sort_by(|a, b| b.3.total_cmp(&a.3));
    rows.truncate(k);
    rows
}

fn lat_n() -> usize {
    bench::env_u64("BENCH_LAT_N", 100_000) as usize
}
fn lat_spread_ms() -> i64 {
    bench::env_u64("BENCH_LAT_SPREAD_MS", 5_000) as i64
}
fn lat_interval_ms() -> i64 {
    bench::env_u64("BENCH_LAT_INTERVAL_MS", 1_000) as i64
}

/// The memory broker with no `Reader`: the relay keeps parked records
/// whole, as it did before index-only parking.
#[derive(Debug, Clone)]
struct Whole(MemoryBroker);

impl Transport for Whole {
    fn consumer(
        &self,
        config: kafka_retry::transport::ConsumerConfig,
    ) -> kafka_retry::Result<Box<dyn kafka_retry::transport::Consumer>> {
        self.0.consumer(config)
    }
    fn producer(&self) -> kafka_retry::Result<Arc<dyn kafka_retry::transport::Producer>> {
        self.0.producer()
    }
    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        rf: Option<i16>,
    ) -> kafka_retry::Result<()> {
        Transport::create_topic(&self.0, topic, partitions, rf)
    }
    fn partition_count(&self, topic: &str) -> kafka_retry::Result<Option<i32>> {
        self.0.partition_count(topic)
    }
}

/// The transport the parking sections run on (`BENCH_WHOLE=1`: no Reader).
fn parking_transport(broker: &MemoryBroker) -> Arc<dyn Transport> {
    if whole() {
        Arc::new(Whole(broker.clone()))
    } else {
        Arc::new(broker.clone())
    }
}

fn whole() -> bool {
    bench::env_u64("BENCH_WHOLE", 0) == 1
}

/// `max_parked` of the `memory` and `lateness` runs parking `count`.
fn bench_max_parked(count: usize) -> usize {
    if whole() {
        2 * count
    } else {
        bench::env_u64("BENCH_MAX_PARKED", 100_000).max(1) as usize
    }
}

fn parking_mode(max_parked: usize) -> String {
    if whole() {
        "records kept whole (BENCH_WHOLE=1)".into()
    } else {
        format!("hybrid parking: up to max_parked {max_parked} whole, the rest indexed")
    }
}
const LAT_WORKERS: usize = 2;

fn lateness_run() -> Result<Lateness, BoxError> {
    let (lat_count, spread_ms, interval_ms) = (lat_n(), lat_spread_ms(), lat_interval_ms());
    let broker = MemoryBroker::new();
    broker.create_topic("lat", PARTITIONS)?;
    broker.create_topic("lat-retry", PARTITIONS)?;
    // Enqueued-at starts `BENCH_LAT_DELAY_MS` ahead: producing a million
    // records takes seconds, which would otherwise count as lateness.
    let t_produce = Instant::now();
    let base = now_ms() + bench::env_u64("BENCH_LAT_DELAY_MS", 0) as i64;
    // 7919 is prime to lat_count: a permutation, so due times are shuffled across
    // and within partitions.
    produce_retries(&broker, "lat", lat_count as u64, base, |i| {
        base + (i * 7919 % lat_count as u64) as i64 * spread_ms / lat_count as i64
    })?;
    println!(
        "     produced {lat_count} in {:.0} ms; first due {} ms from now",
        t_produce.elapsed().as_secs_f64() * 1e3,
        base + interval_ms - now_ms()
    );
    // (hop lateness in ms with µs fractions, relay write lateness in whole
    // ms, due time ms)
    let seen: Arc<Mutex<Vec<(f64, i64, i64)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(lat_count)));
    let count = Arc::new(AtomicU64::new(0));
    let handler = {
        let (seen, count) = (seen.clone(), count.clone());
        move |r: &Record| {
            let now = now_ms_f64();
            if let Some(enq) = header_i64(r, ENQUEUED_AT) {
                let due = enq + interval_ms;
                // The broker stamps a record with its write time (ms), so
                // the origin record's timestamp is when the relay wrote it.
                let relay_late = r.timestamp - due;
                seen.lock().unwrap_or_else(|e| e.into_inner()).push((
                    now - due as f64,
                    relay_late,
                    due,
                ));
                count.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Done
        }
    };
    let t0 = thread_times();
    let engine = Engine::builder(parking_transport(&broker))
        .group_id("lat")
        .topics(["lat"])
        .workers(LAT_WORKERS)
        .handler(handler)
        .max_parked(bench_max_parked(lat_count))
        .policy(RetryPolicy::new(
            Duration::from_millis(interval_ms as u64),
            Duration::from_secs(3600),
        ))
        .build()?;
    // How far the relay got parking before the first record was due.
    let mut parked_before_first_due = 0;
    while now_ms() < base + interval_ms - 50 {
        parked_before_first_due = parked_before_first_due.max(engine.stats().parked);
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished = wait_for(&engine, Duration::from_secs(30), |_| {
        count.load(Ordering::Relaxed) as usize >= lat_count
    });
    let cpu = cpu_by_role(&t0, &thread_times());
    let relayed = engine.stats().relayed;
    engine.shutdown(Duration::from_secs(5))?;
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let sorted = |f: &dyn Fn(&(f64, i64, i64)) -> f64| {
        let mut v: Vec<f64> = seen.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    Ok(Lateness {
        hop: sorted(&|s| s.0),
        relay: sorted(&|s| s.1 as f64),
        // After the relay's write: origin topic -> consumer -> worker (the
        // write time has ms resolution, so this is +-1 ms).
        after: sorted(&|s| s.0 - s.1 as f64),
        parked_before_first_due,
        relayed,
        timed_out: finished.is_none(),
        cpu,
        worst: worst_windows(&seen.iter().map(|s| (s.0, s.2)).collect::<Vec<_>>(), 3),
    })
}

fn lateness(summary: &mut Vec<String>) -> Result<(), BoxError> {
    #[allow(non_snake_case)]
    let RUNS = bench::env_u64("BENCH_LAT_RUNS", 3).max(1) as usize;
    let (lat_count, spread_ms, interval_ms) = (lat_n(), lat_spread_ms(), lat_interval_ms());
    println!("relay: {}", parking_mode(bench_max_parked(lat_count)));
    println!(
        "\n== relay lateness: {lat_count} records put on the retry topic with enqueued-at spread over the \
         next {spread_ms} ms (shuffled), retry interval {interval_ms} ms, {LAT_WORKERS} workers, \
         {RUNS} runs =="
    );
    println!(
        "lateness = handler's wall clock (µs) - (enqueued-at + interval); it covers the whole hop \
         relay -> origin topic -> consumer -> worker"
    );
    println!(
        "{:<4} {:<44} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "run", "lateness (actual - due), ms", "min", "p50", "p99", "p99.9", "max", "early"
    );
    let mut p99s = Vec::new();
    let mut any_early = 0;
    let mut runs = Vec::new();
    for run in 1..=RUNS {
        let l = lateness_run()?;
        let early = |v: &[f64]| v.iter().filter(|&&x| x < 0.0).count();
        for (name, v, early) in [
            (
                "whole hop: relay->origin->consumer->worker",
                &l.hop,
                early(&l.hop),
            ),
            (
                "relay write only (broker timestamp, 1 ms)",
                &l.relay,
                early(&l.relay),
            ),
            ("after the write: consumer->worker (+-1 ms)", &l.after, 0),
        ] {
            println!(
                "{run:<4} {name:<44} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {early:>6}",
                percentile(v, 0.0),
                percentile(v, 0.5),
                percentile(v, 0.99),
                percentile(v, 0.999),
                percentile(v, 1.0)
            );
        }
        println!(
            "     {} came back{}, relayed {}, parked {} before the first due time; CPU s + s waiting \
             for a core (k wake-ups): {}",
            l.hop.len(),
            if l.timed_out { " (TIMED OUT)" } else { "" },
            l.relayed,
            l.parked_before_first_due,
            l.cpu
        );
        let worst: Vec<String> = l
            .worst
            .iter()
            .map(|(at, n, p50, max)| {
                format!(
                    "+{:.1} s: {n} due, p50 {p50:.1} / max {max:.1} ms",
                    *at as f64 / 1e3
                )
            })
            .collect();
        println!(
            "     latest 100 ms windows of due time (from the first due): {}",
            worst.join("; ")
        );
        any_early += early(&l.hop) + early(&l.relay);
        p99s.push(percentile(&l.hop, 0.99));
        runs.push(format!(
            "p50 {:.2} / p99 {:.2} / max {:.1} ms (relay write p99 {:.0}, max {:.0})",
            percentile(&l.hop, 0.5),
            percentile(&l.hop, 0.99),
            percentile(&l.hop, 1.0),
            percentile(&l.relay, 0.99),
            percentile(&l.relay, 1.0)
        ));
    }
    p99s.sort_by(f64::total_cmp);
    summary.push(format!(
        "relay lateness, whole hop relay->origin->consumer->worker ({lat_count} parked, due over \
         {spread_ms} ms, {RUNS} runs, {}): {}; median p99 {:.2} ms (goal < 5 ms); early: {any_early}",
        parking_mode(bench_max_parked(lat_count)),
        runs.join("; "),
        p99s[p99s.len() / 2]
    ));
    Ok(())
}

// ---------------------------------------------------------------- head of line

fn head_of_line(summary: &mut Vec<String>) -> Result<(), BoxError> {
    const FAR: u64 = 300_000;
    const NEAR: u64 = 2_000;
    const HOUR_MS: i64 = 3_600_000;
    const MAX_PARKED: usize = 1_000;
    println!(
        "\n== head of line: {FAR} records due in an hour, max_parked {MAX_PARKED} ({}), then {NEAR} \
         due 1-2 s later ==",
        parking_mode(MAX_PARKED)
    );
    let broker = MemoryBroker::new();
    broker.create_topic("hol", PARTITIONS)?;
    broker.create_topic("hol-retry", PARTITIONS)?;
    let now = now_ms();
    produce_retries(&broker, "hol", FAR, now, |_| now)?;
    let late: Arc<Mutex<Vec<f64>>> = Arc::default();
    let handler = {
        let late = late.clone();
        move |r: &Record| {
            if let Some(enq) = header_i64(r, ENQUEUED_AT) {
                let due = (enq + HOUR_MS) as f64;
                late.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(now_ms_f64() - due);
            }
            Outcome::Done
        }
    };
    let engine = Engine::builder(parking_transport(&broker))
        .group_id("hol")
        .topics(["hol"])
        .workers(2)
        .handler(handler)
        .max_parked(MAX_PARKED)
        .policy(RetryPolicy::new(
            Duration::from_millis(HOUR_MS as u64),
            Duration::from_secs(7200),
        ))
        .build()?;
    // Whole records: the bound pauses the retry topic at MAX_PARKED, so wait
    // for that; indexed: all are read (and the latest-due evicted).
    let full = wait_for(&engine, Duration::from_secs(60), |s| {
        s.parked as usize >= MAX_PARKED && (whole() || s.parked as u64 >= FAR)
    });
    let before = engine.stats();
    let now = now_ms();
    // Enqueued an hour ago, less 1-2 s: due 1-2 s from now.
    produce_retries(&broker, "hol", NEAR, now - HOUR_MS, |i| {
        now - HOUR_MS + 1_000 + (i as i64 * 1_000 / NEAR as i64)
    })?;
    let back = wait_for(&engine, Duration::from_secs(20), |_| {
        late.lock().unwrap_or_else(|e| e.into_inner()).len() as u64 >= NEAR
    });
    engine.shutdown(Duration::from_secs(5))?;
    let mut v = std::mem::take(&mut *late.lock().unwrap_or_else(|e| e.into_inner()));
    v.sort_by(f64::total_cmp);
    let line = if v.is_empty() {
        format!("none of {NEAR} came back within 20 s")
    } else {
        format!(
            "{} of {NEAR} came back{}; lateness p50 {:.2} / p99 {:.2} / max {:.1} ms, early {}",
            v.len(),
            if back.is_none() { " (TIMED OUT)" } else { "" },
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            percentile(&v, 1.0),
            v.iter().filter(|&&x| x < 0.0).count()
        )
    };
    println!(
        "when the near ones were written: parked {}, of which unindexed {}{}",
        before.parked,
        before.parked_unindexed,
        if full.is_none() {
            " (bound never reached)"
        } else {
            ""
        }
    );
    println!("{line}");
    summary.push(format!(
        "head of line ({FAR} due in 1 h, max_parked {MAX_PARKED}, {}): {NEAR} due in 1-2 s: {line}",
        parking_mode(MAX_PARKED)
    ));
    Ok(())
}

// ---------------------------------------------------------------- throughput

/// What the handler does with the 10% (id % 10 == 0) on their first attempt.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Every record done at once.
    NoRetry,
    /// `Outcome::Retry`: parked on the retry topic, relayed back, done.
    Retry,
    /// Sleep the retry interval in the handler, then done (a blocking
    /// retry consumer).
    Blocking,
}

struct Run {
    n: u64,
    /// Until the first record was done (group join, first fetch).
    first_done: Option<Duration>,
    /// Until every record was done or parked once.
    first_pass: Option<Duration>,
    elapsed: Option<Duration>,
    stats: Stats,
    cpu: String,
}

impl Run {
    fn rate(&self) -> f64 {
        bench::rate(self.n, self.elapsed)
    }

    /// The rate without the start-up (build to first done). The start-up
    /// is sometimes 50-200 ms in the second and later runs of this process:
    /// perf shows the new consumer thread's first allocation (in the memory
    /// consumer's group join) running glibc's `malloc_consolidate` over the
    /// chunks the previous run freed, an artefact of many runs in one process.
    fn rate_after_start(&self) -> f64 {
        bench::rate_between(self.n, self.first_done, self.elapsed)
    }
}

fn run(n: u64, workers: usize, mode: Mode, interval: Duration) -> Result<Run, BoxError> {
    let broker = MemoryBroker::new();
    broker.create_topic("tp", PARTITIONS)?;
    produce_all(
        &broker,
        (0..n).map(|i| OutRecord::new("tp").key(key(i)).value(value(i))),
    )?;
    // `is_multiple_of` needs Rust 1.87; the crate's MSRV is 1.75.
    #[allow(clippy::manual_is_multiple_of)]
    let handler = move |r: &Record| {
        if mode == Mode::NoRetry || id_of(r) % 10 != 0 || r.header(ATTEMPTS).is_some() {
            return Outcome::Done;
        }
        match mode {
            Mode::Blocking => {
                // The first attempt failed: wait and try again in place.
                std::thread::sleep(interval);
                Outcome::Done
            }
            _ => Outcome::retry("bench"),
        }
    };
    let cpu0 = thread_times();
    let t0 = Instant::now();
    let engine = Engine::builder(broker.clone())
        .group_id("tp")
        .topics(["tp"])
        .workers(workers)
        .handler(handler)
        .policy(RetryPolicy::new(interval, Duration::from_secs(3600)))
        .build()?;
    // First pass: every record done or parked; then the retries' tail.
    let m = bench::watch(&engine, t0, Duration::from_secs(60), n, |s| s.done > 0);
    let cpu = cpu_by_role(&cpu0, &thread_times());
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10))?;
    Ok(Run {
        n,
        first_done: m.first,
        first_pass: m.first_pass,
        elapsed: m.all_done,
        stats,
        cpu,
    })
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("TIMEOUT".into(), |d| format!("{:.3}", d.as_secs_f64()))
}

fn print_run(label: &str, workers: usize, r: &Run) {
    println!(
        "{label:<26} {workers:>7} {:>9} {:>8} {:>10} {:>9} {:>11.0} {:>11.0} {:>8} {:>8}   {}",
        r.n,
        r.first_done
            .map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3)),
        secs(r.first_pass),
        secs(r.elapsed),
        r.rate(),
        r.rate_after_start(),
        r.stats.retried,
        r.stats.relayed,
        r.cpu
    );
}

fn header_row() {
    println!(
        "{:<26} {:>7} {:>9} {:>8} {:>10} {:>9} {:>11} {:>11} {:>8} {:>8}   \
         CPU s + s waiting for a core (k wake-ups)",
        "workload",
        "workers",
        "records",
        "1st ms",
        "1st pass s",
        "all done",
        "records/s",
        "after 1st",
        "retried",
        "relayed",
    );
}

/// Runs every worker count `repeat` times; the best rate per worker count
/// (the machine is shared, so slower runs mostly measure other jobs).
fn series(
    label: &str,
    n: u64,
    mode: Mode,
    interval: Duration,
    repeat: usize,
) -> Result<Vec<(usize, f64, Vec<f64>)>, BoxError> {
    let mut out = Vec::new();
    for workers in [1, 2, 4] {
        let mut rates = Vec::new();
        for _ in 0..repeat {
            let r = run(n, workers, mode, interval)?;
            print_run(label, workers, &r);
            rates.push(r.rate());
        }
        let best = rates.iter().copied().fold(0.0, f64::max);
        out.push((workers, best, rates));
    }
    Ok(out)
}

fn describe(series: &[(usize, f64, Vec<f64>)]) -> String {
    series
        .iter()
        .map(|(w, best, rates)| {
            let all: Vec<String> = rates.iter().map(|r| format!("{:.0}k", r / 1e3)).collect();
            format!("{w}w {:.0}k (runs {})", best / 1e3, all.join("/"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn throughput(summary: &mut Vec<String>, tp0: bool, tp10: bool) -> Result<(), BoxError> {
    let env = bench::env_u64;
    let n0 = env("BENCH_N", 2_000_000);
    let n10 = (n0 / 4).max(1000);
    let repeat = env("BENCH_REPEAT", 2) as usize;
    let interval = Duration::from_millis(10);
    println!(
        "\n== throughput: no-op handler, records pre-loaded (not timed), timed from build() until \
         stats().done == N; 10%: id % 10 == 0 returns Retry on its first attempt, retry interval \
         {interval:?}; {repeat} runs each =="
    );
    header_row();
    if tp0 {
        let s = series("0% retries", n0, Mode::NoRetry, interval, repeat)?;
        let best = s.iter().map(|x| x.1).fold(0.0, f64::max);
        summary.push(format!(
            "throughput 0% retries, N={n0}, best of {repeat}: {} -> best {:.2} M rec/s (goal 1 M)",
            describe(&s),
            best / 1e6
        ));
    }
    if tp10 {
        let s = series(
            "10% retries (non-blocking)",
            n10,
            Mode::Retry,
            interval,
            repeat,
        )?;
        summary.push(format!(
            "throughput 10% retries (10 ms interval; timed until every record is Done, the 10% after \
             their relayed retry), N={n10}, best of {repeat}: {}",
            describe(&s)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- blocking

fn blocking(summary: &mut Vec<String>) -> Result<(), BoxError> {
    const N: u64 = 20_000;
    const WORKERS: usize = 4;
    #[allow(non_snake_case)]
    let RUNS = bench::env_u64("BENCH_LAT_RUNS", 3).max(1) as usize;
    let interval = Duration::from_millis(20);
    println!(
        "\n== non-blocking vs blocking retry: N={N} pre-loaded, 10% (id % 10 == 0) fail their first \
         attempt, retry interval {interval:?}, {WORKERS} workers; non-blocking {RUNS} runs (median), \
         blocking 1 run (sleep-bound: about N/10 x interval / workers) =="
    );
    println!(
        "blocking = the handler sleeps the interval and retries in place (a blocking-retry consumer)"
    );
    header_row();
    let mut nb = Vec::new();
    for _ in 0..RUNS {
        let r = run(N, WORKERS, Mode::Retry, interval)?;
        print_run("10% non-blocking (relay)", WORKERS, &r);
        nb.push(r.rate());
    }
    nb.sort_by(f64::total_cmp);
    let nb_median = nb[nb.len() / 2];
    let bl = run(N, WORKERS, Mode::Blocking, interval)?;
    print_run("10% blocking (sleep)", WORKERS, &bl);
    let ratio = nb_median / bl.rate();
    println!(
        "ratio non-blocking (median) / blocking: {ratio:.0}x (range {:.0}x..{:.0}x)",
        nb[0] / bl.rate(),
        nb[nb.len() - 1] / bl.rate()
    );
    summary.push(format!(
        "non-blocking vs blocking retry (N={N}, 10% fail once, 20 ms interval, {WORKERS} workers): \
         {:.0} (median of {RUNS}, range {:.0}..{:.0}) vs {:.0} rec/s = {ratio:.0}x",
        nb_median,
        nb[0],
        nb[nb.len() - 1],
        bl.rate()
    ));
    Ok(())
}

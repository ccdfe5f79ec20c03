//! Engine benchmark on the memory broker. Prints numbers; it is not a test.
//!
//! Run: `cargo run --release --example bench_engine` (all sections, about a
//! minute on 2 cores), or name sections:
//! `cargo run --release --example bench_engine -- memory lateness throughput blocking`.
//! `tp0` / `tp10` run only the 0% / 10% throughput rows.
//! `BENCH_N=500000` shrinks the 0%-retry throughput runs (for profiling).
//!
//! Sections:
//! - `memory`: RSS per parked record, the broker's copy of the retry topic
//!   and the relay's heap measured separately (runs first, in a fresh heap).
//! - `lateness`: 100,000 records parked on the retry topic with due times
//!   spread over 5 s; how late each comes back (relay -> origin topic ->
//!   consumer -> worker), and how late the relay wrote it.
//! - `throughput`: pre-loaded records, no-op handler, 0% and 10% retries,
//!   1, 2 and 4 workers; records/second from `build()` to the last `Done`.
//! - `blocking`: non-blocking retries next to a handler that sleeps the
//!   retry interval and retries itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_retry::{
    Engine, Header, MemoryBroker, OutRecord, Outcome, Record, RetryPolicy, Stats, Transport,
    ATTEMPTS, ENQUEUED_AT, FIRST_RECEIVED_AT, ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TOPIC,
    REASON,
};

type BoxError = Box<dyn std::error::Error>;

/// Key length in bytes (`key-000042`).
const KEY_BYTES: usize = 10;
/// Value length in bytes; the first 8 are the record id (little endian).
const VALUE_BYTES: usize = 100;
/// Distinct keys.
const KEYS: u64 = 10_000;
/// Partitions of every origin and retry topic.
const PARTITIONS: i32 = 8;

fn main() -> Result<(), BoxError> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s || a == "all");
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
    }
    if want("lateness") {
        lateness(&mut summary)?;
    }
    let (tp0, tp10) = (
        want("throughput") || want("tp0"),
        want("throughput") || want("tp10"),
    );
    if tp0 || tp10 {
        throughput(&mut summary, tp0, tp10)?;
    }
    if want("blocking") {
        blocking(&mut summary)?;
    }
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
    Bytes::from(format!("key-{:06}", id % KEYS))
}

fn value(id: u64) -> Bytes {
    let mut v = vec![b'x'; VALUE_BYTES];
    v[..8].copy_from_slice(&id.to_le_bytes());
    Bytes::from(v)
}

fn id_of(r: &Record) -> u64 {
    r.value
        .as_deref()
        .and_then(|v| v.get(..8))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
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
    let producer = broker.producer()?;
    let mut chunk = Vec::with_capacity(10_000);
    let flush = |chunk: &mut Vec<OutRecord>| -> Result<(), BoxError> {
        for r in producer.send_batch(std::mem::take(chunk)) {
            r?;
        }
        Ok(())
    };
    for r in records {
        chunk.push(r);
        if chunk.len() == 10_000 {
            flush(&mut chunk)?;
        }
    }
    flush(&mut chunk)
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

/// CPU time (user + system, in clock ticks of 10 ms) per thread of this
/// process, by thread id, with the thread's (15-character) name.
fn thread_cpu() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        // After ")": state is field 3, utime field 14, stime field 15.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.insert(tid, (comm, ticks(11) + ticks(12)));
    }
    out
}

/// CPU seconds per engine thread kind between two snapshots.
fn cpu_by_role(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
) -> String {
    let mut roles: Vec<(&str, f64)> = vec![("consumer", 0.0), ("workers", 0.0), ("relay", 0.0)];
    for (tid, (comm, t)) in after {
        let prev = before.get(tid).map_or(0, |(_, p)| *p);
        let secs = t.saturating_sub(prev) as f64 / 100.0;
        let role = if comm.starts_with("kafka-retry-con") {
            0
        } else if comm.starts_with("kafka-retry-wor") {
            1
        } else if comm.starts_with("kafka-retry-rel") {
            2
        } else {
            continue;
        };
        roles[role].1 += secs;
    }
    roles
        .iter()
        .map(|(r, s)| format!("{r} {s:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
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

// ---------------------------------------------------------------- memory

fn memory(summary: &mut Vec<String>) -> Result<(), BoxError> {
    const N: usize = 100_000;
    println!("\n== memory per parked record: {N} records, {KEY_BYTES}-byte keys, {VALUE_BYTES}-byte values, 7 retry headers ==");

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
    produce_all(
        &broker,
        (0..N as u64).map(|i| {
            let p = (i % PARTITIONS as u64) as i32;
            OutRecord {
                headers: retry_headers("mem", p, i as i64, now, now),
                ..OutRecord::new("mem-retry")
                    .key(key(i))
                    .value(value(i))
                    .partition(p)
            }
        }),
    )?;
    let r1 = rss_kib();
    let engine = Engine::builder(broker.clone())
        .group_id("mem")
        .topics(["mem"])
        .workers(2)
        .handler(|_: &Record| Outcome::Done)
        .max_parked(2 * N)
        .policy(RetryPolicy::new(
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        ))
        .build()?;
    let t = wait_for(&engine, Duration::from_secs(30), |s| s.parked as usize >= N);
    std::thread::sleep(Duration::from_millis(200));
    let r2 = rss_kib();
    let parked = engine.stats().parked;
    engine.shutdown(Duration::from_secs(5))?;

    let broker_b = (r1 - r0) as f64 * 1024.0 / N as f64;
    let relay_b = (r2 - r1 - fixed) as f64 * 1024.0 / N as f64;
    println!("engine fixed cost (empty engine):      {fixed:>8} KiB");
    println!("RSS before producing:                  {r0:>8} KiB");
    println!("after producing {N} to the retry topic: {r1:>8} KiB  -> broker copy {broker_b:.0} B/record");
    println!(
        "after the relay parked {parked} ({}):  {r2:>8} KiB  -> relay {relay_b:.0} B/record (fixed cost subtracted)",
        t.map_or("TIMED OUT".into(), |d| format!("in {:.0} ms", d.as_secs_f64() * 1e3))
    );
    println!(
        "size_of::<Record>() = {} B (the relay's heap entry holds one plus due time, plan and counters)",
        std::mem::size_of::<Record>()
    );
    summary.push(format!(
        "memory/parked record ({VALUE_BYTES} B value, {KEY_BYTES} B key, 7 retry headers, {N} parked): \
         relay {relay_b:.0} B + memory broker's retry-topic copy {broker_b:.0} B = {:.0} B",
        relay_b + broker_b
    ));
    Ok(())
}

// ---------------------------------------------------------------- lateness

fn lateness(summary: &mut Vec<String>) -> Result<(), BoxError> {
    const N: usize = 100_000;
    const SPREAD_MS: i64 = 5_000;
    const INTERVAL_MS: i64 = 1_000;
    const WORKERS: usize = 2;
    println!(
        "\n== relay lateness: {N} records on the retry topic, enqueued-at spread over the next {SPREAD_MS} ms \
         (shuffled), retry interval {INTERVAL_MS} ms, {WORKERS} workers =="
    );
    let broker = MemoryBroker::new();
    broker.create_topic("lat", PARTITIONS)?;
    broker.create_topic("lat-retry", PARTITIONS)?;
    let base = now_ms();
    produce_all(
        &broker,
        (0..N as u64).map(|i| {
            let p = (i % PARTITIONS as u64) as i32;
            // 7919 is prime to N: a permutation, so due times are shuffled
            // across and within partitions.
            let enqueued = base + (i * 7919 % N as u64) as i64 * SPREAD_MS / N as i64;
            OutRecord {
                headers: retry_headers("lat", p, i as i64, base, enqueued),
                ..OutRecord::new("lat-retry")
                    .key(key(i))
                    .value(value(i))
                    .partition(p)
            }
        }),
    )?;
    let produced_ms = now_ms() - base;
    // (hop lateness ms with µs fractions, relay write lateness in whole ms)
    let seen: Arc<Mutex<Vec<(f64, i64)>>> = Arc::new(Mutex::new(Vec::with_capacity(N)));
    let count = Arc::new(AtomicU64::new(0));
    let handler = {
        let (seen, count) = (seen.clone(), count.clone());
        move |r: &Record| {
            let now = now_ms_f64();
            if let Some(enq) = header_i64(r, ENQUEUED_AT) {
                let due = enq + INTERVAL_MS;
                // The broker stamps a record with its write time (ms), so
                // the origin record's timestamp is when the relay wrote it.
                let relay_late = r.timestamp - due;
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((now - due as f64, relay_late));
                count.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Done
        }
    };
    let engine = Engine::builder(broker.clone())
        .group_id("lat")
        .topics(["lat"])
        .workers(WORKERS)
        .handler(handler)
        .max_parked(2 * N)
        .policy(RetryPolicy::new(
            Duration::from_millis(INTERVAL_MS as u64),
            Duration::from_secs(3600),
        ))
        .build()?;
    // How far the relay got parking before the first record was due.
    let mut parked_before_first_due = 0;
    while now_ms() < base + INTERVAL_MS - 50 {
        parked_before_first_due = parked_before_first_due.max(engine.stats().parked);
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished = wait_for(&engine, Duration::from_secs(30), |_| {
        count.load(Ordering::Relaxed) as usize >= N
    });
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5))?;
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let mut hop: Vec<f64> = seen.iter().map(|s| s.0).collect();
    let mut relay: Vec<f64> = seen.iter().map(|s| s.1 as f64).collect();
    hop.sort_by(f64::total_cmp);
    relay.sort_by(f64::total_cmp);
    let early_hop = hop.iter().filter(|&&l| l < 0.0).count();
    let early_relay = relay.iter().filter(|&&l| l < 0.0).count();
    println!(
        "produced in {produced_ms} ms; parked {parked_before_first_due} of {N} before the first due time; \
         {} came back{}; relayed {}",
        hop.len(),
        if finished.is_some() { "" } else { " (TIMED OUT)" },
        stats.relayed
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "lateness (actual - due), ms", "min", "p50", "p99", "p99.9", "max", "early"
    );
    for (name, v, early) in [
        (
            "whole hop: relay->origin->consumer->worker",
            &hop,
            early_hop,
        ),
        (
            "relay write only (broker timestamp, 1 ms)",
            &relay,
            early_relay,
        ),
    ] {
        println!(
            "{name:<44} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {early:>6}",
            percentile(v, 0.0),
            percentile(v, 0.5),
            percentile(v, 0.99),
            percentile(v, 0.999),
            percentile(v, 1.0)
        );
    }
    summary.push(format!(
        "relay lateness ({N} parked, due over {SPREAD_MS} ms, whole hop relay->origin->consumer->worker): \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, early {early_hop}; relay write alone p99 {:.0} ms, max {:.0} ms (1 ms resolution)",
        percentile(&hop, 0.5),
        percentile(&hop, 0.99),
        percentile(&hop, 1.0),
        percentile(&relay, 0.99),
        percentile(&relay, 1.0)
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
    elapsed: Option<Duration>,
    stats: Stats,
    cpu: String,
}

impl Run {
    fn rate(&self) -> f64 {
        self.elapsed
            .map_or(0.0, |d| self.n as f64 / d.as_secs_f64())
    }
}

fn run(n: u64, workers: usize, mode: Mode, interval: Duration) -> Result<Run, BoxError> {
    let broker = MemoryBroker::new();
    broker.create_topic("tp", PARTITIONS)?;
    produce_all(
        &broker,
        (0..n).map(|i| OutRecord::new("tp").key(key(i)).value(value(i))),
    )?;
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
    let cpu0 = thread_cpu();
    let engine = Engine::builder(broker.clone())
        .group_id("tp")
        .topics(["tp"])
        .workers(workers)
        .handler(handler)
        .policy(RetryPolicy::new(interval, Duration::from_secs(3600)))
        .build()?;
    let elapsed = wait_for(&engine, Duration::from_secs(60), |s| s.done >= n);
    let cpu = cpu_by_role(&cpu0, &thread_cpu());
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10))?;
    Ok(Run {
        n,
        elapsed,
        stats,
        cpu,
    })
}

fn print_run(label: &str, workers: usize, r: &Run) {
    println!(
        "{label:<26} {workers:>7} {:>10} {:>9} {:>12.0} {:>9} {:>9}   {}",
        r.n,
        r.elapsed
            .map_or("TIMEOUT".into(), |d| format!("{:.3}", d.as_secs_f64())),
        r.rate(),
        r.stats.retried,
        r.stats.relayed,
        r.cpu
    );
}

fn header_row() {
    println!(
        "{:<26} {:>7} {:>10} {:>9} {:>12} {:>9} {:>9}   {}",
        "workload",
        "workers",
        "records",
        "seconds",
        "records/s",
        "retried",
        "relayed",
        "CPU s by thread"
    );
}

fn throughput(summary: &mut Vec<String>, tp0: bool, tp10: bool) -> Result<(), BoxError> {
    let n0: u64 = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let n10: u64 = (n0 / 4).max(1000);
    let interval = Duration::from_millis(10);
    println!(
        "\n== throughput: no-op handler, records pre-loaded, timed from build() until stats().done == N; \
         10% = id % 10 == 0 retried once, retry interval {interval:?} =="
    );
    header_row();
    let mut best0 = (0.0f64, 0);
    let mut best10 = (0.0f64, 0);
    let mut line0 = Vec::new();
    let mut line10 = Vec::new();
    for workers in [1, 2, 4].into_iter().filter(|_| tp0) {
        let r = run(n0, workers, Mode::NoRetry, interval)?;
        print_run("0% retries", workers, &r);
        line0.push(format!("{}w {:.0}", workers, r.rate()));
        if r.rate() > best0.0 {
            best0 = (r.rate(), workers);
        }
    }
    for workers in [1, 2, 4].into_iter().filter(|_| tp10) {
        let r = run(n10, workers, Mode::Retry, interval)?;
        print_run("10% retries (non-blocking)", workers, &r);
        line10.push(format!("{}w {:.0}", workers, r.rate()));
        if r.rate() > best10.0 {
            best10 = (r.rate(), workers);
        }
    }
    if tp0 {
        summary.push(format!(
            "throughput 0% retries, N={n0}: {} rec/s (best {:.0} with {} workers; goal 1,000,000)",
            line0.join(", "),
            best0.0,
            best0.1
        ));
    }
    if tp10 {
        summary.push(format!(
        "throughput 10% retries (10 ms interval, every record done after its retry), N={n10}: {} rec/s",
        line10.join(", ")
    ));
    }
    Ok(())
}

// ---------------------------------------------------------------- blocking

fn blocking(summary: &mut Vec<String>) -> Result<(), BoxError> {
    const N: u64 = 10_000;
    const WORKERS: usize = 4;
    let interval = Duration::from_millis(20);
    println!(
        "\n== non-blocking vs blocking retry: N={N}, 10% fail once, retry interval {interval:?}, {WORKERS} workers =="
    );
    header_row();
    let nb = run(N, WORKERS, Mode::Retry, interval)?;
    print_run("10% non-blocking (relay)", WORKERS, &nb);
    let bl = run(N, WORKERS, Mode::Blocking, interval)?;
    print_run("10% blocking (sleep)", WORKERS, &bl);
    let ratio = nb.rate() / bl.rate();
    println!("ratio non-blocking / blocking: {ratio:.1}x");
    summary.push(format!(
        "non-blocking vs blocking retry (N={N}, 10% fail once, 20 ms interval, {WORKERS} workers): \
         {:.0} vs {:.0} rec/s = {ratio:.1}x",
        nb.rate(),
        bl.rate()
    ));
    Ok(())
}

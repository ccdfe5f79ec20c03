//! Helpers shared by the benchmarks (`bench_engine`, `bench_engine_kafka`,
//! `bench_kafka`): command-line sections and environment knobs, the test
//! workload's keys and values, topic set-up, CPU time from `/proc`, polling
//! an engine's stats until it is done, and number formatting. Each example
//! includes this file with `#[path = "shared/bench.rs"] mod bench;`.

// Each benchmark uses only part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_retry::transport::{Producer, Transport};
use kafka_retry::{Engine, OutRecord, Record, Stats};

pub type BoxError = Box<dyn std::error::Error>;

// ---------------------------------------------------------------- set-up

/// The sections named on the command line; none (or `all`) means every one.
pub struct Sections(Vec<String>);

impl Sections {
    /// Starts logging (`RUST_LOG`, default `warn`) and reads the arguments.
    pub fn from_args() -> Sections {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
        Sections(std::env::args().skip(1).collect())
    }

    /// Whether section `s` runs.
    pub fn want(&self, s: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|a| a == s || a == "all")
    }
}

/// A number from the environment, `default` when unset or unparsable.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// `<pid>-<seconds mod 100,000>`: names this run's topics and groups apart
/// from earlier runs against the same broker.
pub fn run_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() % 100_000)
    )
}

/// The broker's pid from `BENCH_BROKER_PID` (set by scripts/bench-kafka
/// when it started the broker), if it is one.
pub fn broker_pid_from_env() -> Option<String> {
    std::env::var("BENCH_BROKER_PID")
        .ok()
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Creates `topic` and waits until metadata shows every partition (the
/// broker may lag the create).
pub fn create_topic(
    transport: &dyn Transport,
    topic: &str,
    partitions: i32,
) -> Result<(), BoxError> {
    transport.create_topic(topic, partitions, None)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while transport.partition_count(topic)? != Some(partitions) {
        if Instant::now() > deadline {
            return Err(format!("topic {topic} has no {partitions} partitions").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Writes `records` through `producer` with `send_batch`, `chunk` at a
/// time; the first error, prefixed with `what`, ends it.
pub fn send_chunked(
    producer: &dyn Producer,
    records: impl IntoIterator<Item = OutRecord>,
    chunk: usize,
    what: &str,
) -> Result<(), BoxError> {
    let mut batch = Vec::with_capacity(chunk);
    let flush = |batch: &mut Vec<OutRecord>| -> Result<(), BoxError> {
        let full = std::mem::replace(batch, Vec::with_capacity(chunk));
        for r in producer.send_batch(full) {
            r.map_err(|e| format!("{what}: {e}"))?;
        }
        Ok(())
    };
    for r in records {
        batch.push(r);
        if batch.len() >= chunk {
            flush(&mut batch)?;
        }
    }
    if !batch.is_empty() {
        flush(&mut batch)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- workload

/// `key-<id mod keys>`, the number `digits` wide.
pub fn key(id: u64, keys: u64, digits: usize) -> Bytes {
    Bytes::from(format!("key-{:0digits$}", id % keys))
}

/// `bytes` bytes of `x` whose first 8 are `id` (little endian).
pub fn value(id: u64, bytes: usize) -> Bytes {
    let mut v = vec![b'x'; bytes];
    v[..8].copy_from_slice(&id.to_le_bytes());
    Bytes::from(v)
}

/// The id [`value`] wrote into a record (0 if none).
pub fn id_of(r: &Record) -> u64 {
    r.value
        .as_deref()
        .and_then(|v| v.get(..8))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

// ---------------------------------------------------------------- CPU time

/// CPU seconds in a `schedstat` file (its first field, nanoseconds).
pub fn schedstat(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// CPU seconds of the live threads under a `/proc/<pid>/task` directory
/// (NaN where unknown).
pub fn tasks_cpu(dir: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(dir) else {
        return f64::NAN;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| schedstat(&t.path().join("schedstat")))
        .sum()
}

/// CPU seconds used so far by this process's live threads: the sum of
/// `/proc/self/task/*/schedstat` (nanoseconds, Linux); NaN elsewhere.
/// Threads that end before a measurement ends must add their own
/// [`thread_cpu`] to it.
pub fn process_cpu() -> f64 {
    tasks_cpu("/proc/self/task")
}

/// CPU seconds used so far by the calling thread (0 where unknown).
pub fn thread_cpu() -> f64 {
    schedstat(Path::new("/proc/thread-self/schedstat")).unwrap_or(0.0)
}

/// CPU seconds the broker process `pid` has used (NaN without a pid).
pub fn broker_cpu(pid: Option<&str>) -> f64 {
    pid.map_or(f64::NAN, |pid| tasks_cpu(&format!("/proc/{pid}/task")))
}

/// One thread's scheduler counters, from `/proc/self/task/<tid>/`.
pub struct ThreadTime {
    /// Its name (cut to 15 characters by the kernel).
    pub name: String,
    /// CPU time, ns.
    pub cpu: u64,
    /// Time spent runnable but waiting for a core, ns.
    pub wait: u64,
    /// Times it was scheduled in (about one per wake-up).
    pub slices: u64,
}

/// Per thread of this process, by thread id, from
/// `/proc/self/task/*/schedstat`.
pub fn thread_times() -> HashMap<u32, ThreadTime> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let sched = std::fs::read_to_string(e.path().join("schedstat")).unwrap_or_default();
        let mut f = sched
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        let (cpu, wait, slices) = (
            f.next().unwrap_or(0),
            f.next().unwrap_or(0),
            f.next().unwrap_or(0),
        );
        let name = comm.trim().to_string();
        out.insert(
            tid,
            ThreadTime {
                name,
                cpu,
                wait,
                slices,
            },
        );
    }
    out
}

/// The engine thread kind a thread name stands for (names are cut to 15
/// characters): consumer, workers, relay, producer, heartbeat or other.
pub fn role(name: &str) -> &'static str {
    match name {
        c if c.starts_with("kafka-retry-con") => "consumer",
        c if c.starts_with("kafka-retry-wor") => "workers",
        c if c.starts_with("kafka-retry-rel") => "relay",
        c if c.starts_with("kafka-retry-pro") => "producer",
        c if c.starts_with("kafka-retry-hea") => "heartbeat",
        _ => "other",
    }
}

// ---------------------------------------------------------------- engine runs

/// When an engine run reached its milestones, all from the same start.
pub struct Milestones {
    /// The first time the caller's `first` condition held.
    pub first: Option<Duration>,
    /// Every record done or sent to the retry topic once.
    pub first_pass: Option<Duration>,
    /// `stats().done >= n`.
    pub all_done: Option<Duration>,
}

/// Polls `engine.stats()` every millisecond until `n` records are done or
/// `limit` has passed since `t0`.
pub fn watch(
    engine: &Engine,
    t0: Instant,
    limit: Duration,
    n: u64,
    first: impl Fn(&Stats) -> bool,
) -> Milestones {
    let mut m = Milestones {
        first: None,
        first_pass: None,
        all_done: None,
    };
    // `BENCH_TIMELINE_MS=50`: the counters every 50 ms on stderr, from the
    // assignment on (where a run's time goes: the first pass, the tail).
    let step = std::env::var("BENCH_TIMELINE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis);
    let mut next_line = Duration::ZERO;
    while t0.elapsed() < limit {
        let s = engine.stats();
        if m.first.is_none() && first(&s) {
            m.first = Some(t0.elapsed());
        }
        if let (Some(step), Some(from)) = (step, m.first) {
            let at = t0.elapsed() - from;
            if at >= next_line {
                next_line = at + step;
                eprintln!(
                    "  timeline {:>5} ms: received {}, done {}, retried {}, relayed {}, parked {}, in flight {}",
                    at.as_millis(),
                    s.received,
                    s.done,
                    s.retried,
                    s.relayed,
                    s.parked,
                    s.in_flight
                );
            }
        }
        if m.first_pass.is_none() && s.done + s.retried >= n {
            m.first_pass = Some(t0.elapsed());
        }
        if s.done >= n {
            m.all_done = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    m
}

/// `n` records per second over `d` (0 when the run timed out).
pub fn rate(n: u64, d: Option<Duration>) -> f64 {
    d.map_or(0.0, |d| n as f64 / d.as_secs_f64())
}

/// `n` records per second from `from` to `to` (0 when either is missing or
/// they are out of order).
pub fn rate_between(n: u64, from: Option<Duration>, to: Option<Duration>) -> f64 {
    match (to, from) {
        (Some(all), Some(first)) if all > first => n as f64 / (all - first).as_secs_f64(),
        _ => 0.0,
    }
}

// ---------------------------------------------------------------- statistics

/// The element with the median `key` (the upper one of an even count).
pub fn median_by<T>(v: &[T], key: impl Fn(&T) -> f64) -> Option<&T> {
    let mut sorted: Vec<&T> = v.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted.get(sorted.len() / 2).copied()
}

/// The `q` quantile (0 to 1, nearest rank) of sorted values; NaN if none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// `1.23M`, `45.6k` or `789`.
pub fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

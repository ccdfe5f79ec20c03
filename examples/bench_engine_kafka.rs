//! Engine benchmark on a Kafka broker (Tansu under scripts/bench-kafka):
//! the whole engine (`KafkaTransport`: group consumer, workers, producer,
//! relay) with a no-op handler. Prints numbers; it is not a test.
//!
//! Run: `scripts/bench-kafka engine` (starts a throw-away Tansu broker, a
//! release build), which is `scripts/test-broker cargo run --release
//! --example bench_engine_kafka`. Arguments pick rows: `tp0`, `tp10`
//! (default both). `KAFKA_BOOTSTRAP` names the broker.
//!
//! Workload: N records pre-loaded (not timed) into a fresh topic with 6
//! partitions: 10,000 distinct keys (`key-00042`), 100-byte values whose
//! first 8 bytes are the record id. A fresh group per run; its retry and
//! dead-letter topics are created before the clock starts (as in a
//! deployment, where they already exist). Timed from `build()` until
//! `stats().done == N` (polled every millisecond).
//!
//! - `tp0`: every record is `Done` at once.
//! - `tp10`: records with `id % 10 == 0` return `Outcome::retry` on their
//!   first attempt (no `retry.attempts` header): each is written to the
//!   retry topic, read back by the relay, written to the origin topic after
//!   the retry interval, read again and `Done`. Finished when all N are done.
//!
//! Besides the rate from `build()`, the table gives the time from `build()`
//! to the first handler call (mostly the group join: Tansu completes a join
//! after about half the session timeout) and the rate from the assignment
//! on (start offsets, fetches, handling, commits; not the join). The rate
//! from the first handler call would mislead: the first fetch, which may
//! hold a large part of the topic, is done by then.
//!
//! Knobs (environment): `BENCH_ENGINE_N0` (200000 records at 0%),
//! `BENCH_ENGINE_N10` (50000 at 10%), `BENCH_ENGINE_WORKERS` (4),
//! `BENCH_ENGINE_SESSION_MS` (2000), `BENCH_ENGINE_RETRY_MS` (100, the retry
//! interval), `BENCH_ENGINE_POLL_RECORDS` (the engine's default 500),
//! `BENCH_REPEAT` (1: runs per row, median reported). CPU per record comes
//! from `/proc` (this process, all threads) and, with `BENCH_BROKER_PID`
//! (set by scripts/bench-kafka), the broker's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_retry::transport::{Producer, Transport};
use kafka_retry::{
    Engine, KafkaConfig, KafkaTransport, OutRecord, Outcome, Record, RetryPolicy, Stats, ATTEMPTS,
};

type BoxError = Box<dyn std::error::Error>;

const PARTITIONS: i32 = 6;
const KEYS: u64 = 10_000;
const VALUE_BYTES: usize = 100;
/// Records per `send_batch` while pre-loading.
const CHUNK: usize = 10_000;
/// A run that has not finished after this long is reported as timed out.
const RUN_LIMIT: Duration = Duration::from_secs(180);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn key(id: u64) -> Bytes {
    Bytes::from(format!("key-{:05}", id % KEYS))
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

/// CPU seconds of the live threads under a `/proc/<pid>/task` directory
/// (NaN where unknown).
fn tasks_cpu(dir: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(dir) else {
        return f64::NAN;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| {
            let text = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
            Some(ns / 1e9)
        })
        .sum()
}

/// CPU seconds per thread kind of this process (engine threads by name).
fn cpu_by_role() -> HashMap<&'static str, f64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let sched = std::fs::read_to_string(e.path().join("schedstat")).unwrap_or_default();
        let ns: f64 = sched
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        // Thread names are cut to 15 characters.
        let role = match comm.trim() {
            c if c.starts_with("kafka-retry-con") => "consumer",
            c if c.starts_with("kafka-retry-wor") => "workers",
            c if c.starts_with("kafka-retry-rel") => "relay",
            c if c.starts_with("kafka-retry-pro") => "producer",
            c if c.starts_with("kafka-retry-hea") => "heartbeat",
            _ => "other",
        };
        *out.entry(role).or_insert(0.0) += ns / 1e9;
    }
    out
}

const ROLES: [&str; 6] = [
    "consumer",
    "workers",
    "producer",
    "relay",
    "heartbeat",
    "other",
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    NoRetry,
    Retry10,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::NoRetry => "0% retries",
            Mode::Retry10 => "10% retries",
        }
    }
}

/// One run's timings, all from just before `build()`.
#[derive(Debug, Clone)]
struct Run {
    n: u64,
    build: Duration,
    assigned: Option<Duration>,
    first_record: Option<Duration>,
    /// Every record done or sent to the retry topic once.
    first_pass: Option<Duration>,
    all_done: Option<Duration>,
    stats: Stats,
    /// Process CPU seconds from build() to all done, and the broker's.
    cpu: f64,
    broker_cpu: f64,
    roles: String,
}

impl Run {
    fn rate(&self) -> f64 {
        self.all_done
            .map_or(0.0, |d| self.n as f64 / d.as_secs_f64())
    }
    /// From the assignment on: start-offset lookups, fetches, handling,
    /// commits (and the retries' round trips), without the group join.
    fn rate_after_assigned(&self) -> f64 {
        match (self.all_done, self.assigned) {
            (Some(all), Some(first)) if all > first => self.n as f64 / (all - first).as_secs_f64(),
            _ => 0.0,
        }
    }
}

struct Bench {
    kafka: KafkaTransport,
    producer: Arc<dyn Producer>,
    run_id: String,
    workers: usize,
    session: Duration,
    retry_interval: Duration,
    poll_records: Option<usize>,
    broker_pid: Option<String>,
    seq: AtomicU64,
}

impl Bench {
    fn broker_cpu(&self) -> f64 {
        self.broker_pid
            .as_deref()
            .map_or(f64::NAN, |pid| tasks_cpu(&format!("/proc/{pid}/task")))
    }

    /// Creates `topic` and waits until metadata shows every partition.
    fn create(&self, topic: &str) -> Result<(), BoxError> {
        self.kafka.create_topic(topic, PARTITIONS, None)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.kafka.partition_count(topic)? != Some(PARTITIONS) {
            if Instant::now() > deadline {
                return Err(format!("topic {topic} has no {PARTITIONS} partitions").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn preload(&self, topic: &str, n: u64) -> Result<(), BoxError> {
        let mut i = 0;
        while i < n {
            let end = (i + CHUNK as u64).min(n);
            let batch: Vec<OutRecord> = (i..end)
                .map(|id| OutRecord::new(topic).key(key(id)).value(value(id)))
                .collect();
            for r in self.producer.send_batch(batch) {
                r.map_err(|e| format!("pre-load {topic}: {e}"))?;
            }
            i = end;
        }
        Ok(())
    }

    fn run(&self, n: u64, mode: Mode) -> Result<Run, BoxError> {
        let k = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("bench-engine-{}-{k}", self.run_id);
        let group = format!("{name}-g");
        self.create(&name)?;
        // Created here so that build() finds them: the clock measures the
        // engine, not topic creation.
        self.create(&format!("{group}-retry"))?;
        self.create(&format!("{group}-dlt"))?;
        self.preload(&name, n)?;

        // Nanoseconds from t0 to the first handler call, plus one (0: none yet).
        let first = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let handler = {
            let first = first.clone();
            move |r: &Record| {
                if first.load(Ordering::Relaxed) == 0 {
                    let ns = t0.elapsed().as_nanos() as u64 + 1;
                    let _ = first.compare_exchange(0, ns, Ordering::Relaxed, Ordering::Relaxed);
                }
                if mode == Mode::Retry10
                    && id_of(r).is_multiple_of(10)
                    && r.header(ATTEMPTS).is_none()
                {
                    Outcome::retry("bench")
                } else {
                    Outcome::Done
                }
            }
        };
        let (cpu0, broker0, roles0) = (
            tasks_cpu("/proc/self/task"),
            self.broker_cpu(),
            cpu_by_role(),
        );
        let mut builder = Engine::builder(self.kafka.clone())
            .group_id(&group)
            .topics([name.as_str()])
            .workers(self.workers)
            .handler(handler)
            .session_timeout(self.session)
            .policy(RetryPolicy::new(
                self.retry_interval,
                Duration::from_secs(3600),
            ));
        if let Some(p) = self.poll_records {
            builder = builder.max_poll_records(p);
        }
        let engine = builder.build()?;
        let build = t0.elapsed();
        let (mut assigned, mut first_pass, mut all_done) = (None, None, None);
        while t0.elapsed() < RUN_LIMIT {
            let s = engine.stats();
            if assigned.is_none() && s.assigned_partitions > 0 {
                assigned = Some(t0.elapsed());
            }
            if first_pass.is_none() && s.done + s.retried >= n {
                first_pass = Some(t0.elapsed());
            }
            if s.done >= n {
                all_done = Some(t0.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let cpu = tasks_cpu("/proc/self/task") - cpu0;
        let broker_cpu = self.broker_cpu() - broker0;
        let roles1 = cpu_by_role();
        let roles = ROLES
            .iter()
            .map(|r| {
                let d =
                    roles1.get(r).copied().unwrap_or(0.0) - roles0.get(r).copied().unwrap_or(0.0);
                format!("{r} {d:.2}")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let stats = engine.stats();
        if let Err(e) = engine.shutdown(Duration::from_secs(10)) {
            eprintln!("bench_engine_kafka: shutdown: {e}");
        }
        let first_record = match first.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns - 1)),
        };
        Ok(Run {
            n,
            build,
            assigned,
            first_record,
            first_pass,
            all_done,
            stats,
            cpu,
            broker_cpu,
            roles,
        })
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("TIMEOUT".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn print_run(label: &str, r: &Run) {
    let s = &r.stats;
    println!(
        "{label} x {}: build() {:.0} ms, assigned {}, first record {}, first pass {}, all done {} \
         -> {} rec/s from build(), {} rec/s from the assignment; received {}, done {}, \
         retried {}, relayed {}, dead-lettered {}, send errors {}, rebalances {}; CPU/record \
         {:.2} us client, {:.2} us broker; CPU s by thread: {}",
        r.n,
        r.build.as_secs_f64() * 1e3,
        secs(r.assigned),
        secs(r.first_record),
        secs(r.first_pass),
        secs(r.all_done),
        human(r.rate()),
        human(r.rate_after_assigned()),
        s.received,
        s.done,
        s.retried,
        s.relayed,
        s.dead_lettered.total(),
        s.send_errors,
        s.rebalances,
        r.cpu * 1e6 / r.n as f64,
        r.broker_cpu * 1e6 / r.n as f64,
        r.roles
    );
    if r.all_done.is_none() || s.dead_lettered.total() > 0 || s.send_errors > 0 {
        println!("  note: this run did not finish cleanly (see the counters above)");
    }
}

/// The run with the median rate (the upper one of an even count).
fn median(runs: &[Run]) -> Option<&Run> {
    let mut v: Vec<&Run> = runs.iter().collect();
    v.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    v.get(v.len() / 2).copied()
}

fn main() -> Result<(), BoxError> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s || a == "all");
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP")
        .map_err(|_| "KAFKA_BOOTSTRAP is not set: run through scripts/bench-kafka")?;
    let kafka = KafkaTransport::connect(KafkaConfig::new(&bootstrap))?;
    let producer = kafka.producer()?;
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() % 100_000)
    );
    let bench = Bench {
        kafka,
        producer,
        run_id,
        workers: env_u64("BENCH_ENGINE_WORKERS", 4).max(1) as usize,
        session: Duration::from_millis(env_u64("BENCH_ENGINE_SESSION_MS", 2000)),
        retry_interval: Duration::from_millis(env_u64("BENCH_ENGINE_RETRY_MS", 100).max(1)),
        poll_records: std::env::var("BENCH_ENGINE_POLL_RECORDS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&n: &usize| n > 0),
        broker_pid: std::env::var("BENCH_BROKER_PID")
            .ok()
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        seq: AtomicU64::new(0),
    };
    let repeat = env_u64("BENCH_REPEAT", 1).max(1) as usize;
    let n0 = env_u64("BENCH_ENGINE_N0", 200_000).max(1);
    let n10 = env_u64("BENCH_ENGINE_N10", 50_000).max(10);
    println!(
        "bench_engine_kafka: broker {bootstrap} ({}), {} cores; {PARTITIONS} partitions, {KEYS} keys, \
         {VALUE_BYTES}-byte values, no-op handler, {} workers, session timeout {:?}, retry interval \
         {:?}, max_poll_records {}",
        std::env::var("KAFKA_RETRY_BROKER").unwrap_or_else(|_| "?".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bench.workers,
        bench.session,
        bench.retry_interval,
        bench
            .poll_records
            .map_or("500 (default)".to_string(), |n| n.to_string()),
    );

    // Warm-up: connections, metadata, broker-side state, allocator.
    let warm = bench.run(10_000, Mode::NoRetry)?;
    print_run("warm-up", &warm);

    let mut rows: Vec<(Mode, Vec<Run>)> = Vec::new();
    for (mode, n, section) in [(Mode::NoRetry, n0, "tp0"), (Mode::Retry10, n10, "tp10")] {
        if !want(section) {
            continue;
        }
        let mut runs = Vec::new();
        for _ in 0..repeat {
            let r = bench.run(n, mode)?;
            print_run(mode.label(), &r);
            runs.push(r);
        }
        rows.push((mode, runs));
    }

    println!();
    println!(
        "Engine on Kafka (one Tansu broker), no-op handler, {} workers, {PARTITIONS} partitions, \
         session timeout {:?}, retry interval {:?}; timed from build() (retry/DLT topics exist) \
         until stats().done == N; {}.",
        bench.workers,
        bench.session,
        bench.retry_interval,
        if repeat > 1 {
            format!("median of {repeat} runs (by rate from build())")
        } else {
            "one run each".to_string()
        }
    );
    println!();
    println!(
        "| workload | records | build() -> first record | build() -> all done | rec/s from build() \
         | rec/s from assignment | retried / relayed | CPU/record client, broker |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (mode, runs) in &rows {
        let Some(r) = median(runs) else { continue };
        let firsts: Vec<String> = runs.iter().map(|r| secs(r.first_record)).collect();
        println!(
            "| {} | {} | {} (runs: {}) | {} | {} | {} | {} / {} | {:.2} us, {:.2} us |",
            mode.label(),
            r.n,
            secs(r.first_record),
            firsts.join(", "),
            secs(r.all_done),
            human(r.rate()),
            human(r.rate_after_assigned()),
            r.stats.retried,
            r.stats.relayed,
            r.cpu * 1e6 / r.n as f64,
            r.broker_cpu * 1e6 / r.n as f64
        );
    }
    Ok(())
}

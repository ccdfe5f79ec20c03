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

#[path = "shared/bench.rs"]
mod bench;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::{env_u64, human, id_of, process_cpu, BoxError};
use bytes::Bytes;
use kafka_retry::transport::{Producer, Transport};
use kafka_retry::{
    Engine, KafkaConfig, KafkaTransport, OutRecord, Outcome, Record, RetryPolicy, Stats, ATTEMPTS,
};

const PARTITIONS: i32 = 6;
const KEYS: u64 = 10_000;
const VALUE_BYTES: usize = 100;
/// Records per `send_batch` while pre-loading.
const CHUNK: usize = 10_000;
/// A run that has not finished after this long is reported as timed out.
const RUN_LIMIT: Duration = Duration::from_secs(180);

fn key(id: u64) -> Bytes {
    bench::key(id, KEYS, 5)
}

fn value(id: u64) -> Bytes {
    bench::value(id, VALUE_BYTES)
}

/// CPU seconds per thread kind of this process (engine threads by name).
fn cpu_by_role() -> HashMap<&'static str, f64> {
    let mut out = HashMap::new();
    for t in bench::thread_times().values() {
        *out.entry(bench::role(&t.name)).or_insert(0.0) += t.cpu as f64 / 1e9;
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
        bench::rate(self.n, self.all_done)
    }
    /// From the assignment on: start-offset lookups, fetches, handling,
    /// commits (and the retries' round trips), without the group join.
    fn rate_after_assigned(&self) -> f64 {
        bench::rate_between(self.n, self.assigned, self.all_done)
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
        bench::broker_cpu(self.broker_pid.as_deref())
    }

    /// Creates `topic` and waits until metadata shows every partition.
    fn create(&self, topic: &str) -> Result<(), BoxError> {
        bench::create_topic(&self.kafka, topic, PARTITIONS)
    }

    fn preload(&self, topic: &str, n: u64) -> Result<(), BoxError> {
        bench::send_chunked(
            &*self.producer,
            (0..n).map(|id| OutRecord::new(topic).key(key(id)).value(value(id))),
            CHUNK,
            &format!("pre-load {topic}"),
        )
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
        let (cpu0, broker0, roles0) = (process_cpu(), self.broker_cpu(), cpu_by_role());
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
        let m = bench::watch(&engine, t0, RUN_LIMIT, n, |s| s.assigned_partitions > 0);
        let cpu = process_cpu() - cpu0;
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
            assigned: m.first,
            first_record,
            first_pass: m.first_pass,
            all_done: m.all_done,
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

fn main() -> Result<(), BoxError> {
    let sections = bench::Sections::from_args();
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP")
        .map_err(|_| "KAFKA_BOOTSTRAP is not set: run through scripts/bench-kafka")?;
    let kafka = KafkaTransport::connect(KafkaConfig::new(&bootstrap))?;
    let producer = kafka.producer()?;
    let run_id = bench::run_id();
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
        broker_pid: bench::broker_pid_from_env(),
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
        if !sections.want(section) {
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
        // The run with the median rate (the upper one of an even count).
        let Some(r) = bench::median_by(runs, Run::rate) else {
            continue;
        };
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

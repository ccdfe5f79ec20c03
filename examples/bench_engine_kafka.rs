//! Engine benchmark on a Kafka broker (Tansu under scripts/bench-kafka):
//! the whole engine (`KafkaTransport`: group consumer, workers, producer,
//! relay) with a no-op handler. Prints numbers; it is not a test.
//!
//! Run: `scripts/bench-kafka engine` (starts a throw-away Tansu broker, a
//! release build), which is `scripts/test-broker cargo run --release
//! --example bench_engine_kafka`. Arguments pick rows: `tp0`, `tp10`,
//! `tp10p` (default all three). `KAFKA_BOOTSTRAP` names the broker.
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
//!   Also prints the redelivery delay (handled again minus due, p50 / p99 /
//!   max): the copies go back to the end of origin partitions still full of
//!   the pre-load, so it is mostly the wait behind that backlog.
//! - `tp10p`: as `tp10` with `Redelivery::Private`: the relay hands each due
//!   record straight to the workers (no origin write, no second origin
//!   read); done once the worker settles it.
//!
//! Besides the rate from `build()`, the table gives the time from `build()`
//! to the first handler call (mostly the group join: Tansu completes a join
//! after about half the session timeout) and the rate from the assignment
//! on (start offsets, fetches, handling, commits; not the join). The rate
//! from the first handler call would mislead: the first fetch, which may
//! hold a large part of the topic, is done by then.
//!
//! Knobs (environment): `BENCH_ENGINE_N0` (1000000 records at 0%),
//! `BENCH_ENGINE_N10` (1000000 at 10%: with fewer, the 100 ms retry
//! interval and the last records' second pass are much of the time, so
//! the rate measures latency more than throughput), `BENCH_ENGINE_WORKERS` (4),
//! `BENCH_ENGINE_SESSION_MS` (2000), `BENCH_ENGINE_RETRY_MS` (100, the retry
//! interval), `BENCH_ENGINE_POLL_RECORDS` (the engine's default 2000),
//! `BENCH_REPEAT` (1: runs per row, median reported),
//! `BENCH_PERF_CTL` (perf control fifos, comma-separated: profiling
//! enabled during the timed runs only), `BENCH_ENGINE_COMPRESSION` (`none`,
//! `lz4`, `gzip`, `zstd`: `KafkaConfig::engine_compression`, the codec of
//! the engine's writes, lz4 unless set; the pre-load stays uncompressed),
//! `BENCH_FETCH_AHEAD` (`0` turns `KafkaConfig::fetch_ahead` off),
//! `BENCH_TIMELINE_MS` (off; `50`: the engine's counters every 50 ms of a
//! run on stderr, from the assignment on: where the first pass and the
//! tail spend their time).
//! CPU per record comes
//! from `/proc` (this process, all threads) and, with `BENCH_BROKER_PID`
//! (set by scripts/bench-kafka), the broker's.
//!
//! `lateness` (only when named: `scripts/bench-kafka lateness`): relay
//! lateness with `BENCH_LATENESS_N` (100000) records parked at once. Every
//! record is retried once (its first delivery has no `retry.attempts`
//! header), so all N sit in the relay (`max_parked` is raised above N;
//! the peak of `stats().parked` is printed) before the first falls due
//! after `BENCH_LATENESS_RETRY_MS` (10000; it must exceed the time the
//! first pass takes, which the table shows). The handler measures, on
//! the second delivery, lateness = now (wall clock, µs) minus the due time
//! (`retry.enqueued-at` + the retry interval, what the relay computes):
//! the time from falling due through the relay's write, the origin fetch
//! and the queue to a worker. Negative means early and is counted apart
//! (it must be 0). The run is repeated per client setting in
//! `BENCH_LATENESS_FETCH` (`500:1,100:1,10:1,1:1,1:1:0`: `fetch_max_wait`
//! ms, `fetch_min_bytes` and optionally the producer's `linger` ms (default
//! 5) per run, on a transport of its own: the relay's writes wait out the
//! linger before they are sent); after each run
//! the idle engine is watched for 2 s to show what the setting costs the
//! broker when nothing arrives (CPU as % of one core). `BENCH_REPEAT`
//! rounds over the settings; every run is a row of its own.

#[path = "shared/bench.rs"]
mod bench;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::{env_u64, human, id_of, process_cpu, BoxError};
use bytes::Bytes;
use kafka_retry::transport::{
    Consumer, ConsumerConfig, ConsumerEvent, PartitionProgress, Pending, Producer, Reader,
    Transport,
};
use kafka_retry::{
    Compression, Delivered, Engine, KafkaConfig, KafkaTransport, OutRecord, Outcome, Record,
    Redelivery, RetryPolicy, Stats, TopicPartition, ATTEMPTS, ENQUEUED_AT,
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
/// Per engine thread kind: CPU seconds, times scheduled in (about one
/// per wake-up) and seconds spent runnable waiting for a core, so far.
fn cpu_by_role() -> HashMap<&'static str, (f64, u64, f64)> {
    let mut out = HashMap::new();
    for t in bench::thread_times().values() {
        let e = out.entry(bench::role(&t.name)).or_insert((0.0, 0, 0.0));
        e.0 += t.cpu as f64 / 1e9;
        e.1 += t.slices;
        e.2 += t.wait as f64 / 1e9;
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

// ------------------------------------------------ calls the engine makes

/// Producer calls and polls of one run, counted by [`Counted`]: where the
/// retry path's cost goes (many small writes, or polls that return
/// nothing).
#[derive(Debug, Default)]
struct Calls {
    send: AtomicU64,
    send_async: AtomicU64,
    batches: AtomicU64,
    batch_records: AtomicU64,
    /// Records written to the retry topic and to the origin topic (the
    /// relay's writes), whatever the call.
    to_retry: AtomicU64,
    to_origin: AtomicU64,
    /// Polls of the main consumer and of the relay's, and those of each
    /// that returned records.
    polls: [AtomicU64; 2],
    polls_with_records: [AtomicU64; 2],
}

impl Calls {
    fn count_topic(&self, topic: &str, n: u64) {
        let c = if topic.ends_with("-retry") {
            &self.to_retry
        } else if !topic.ends_with("-dlt") {
            &self.to_origin
        } else {
            return;
        };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// One line: calls per second over `secs`, records per call.
    fn describe(&self, secs: f64) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let per_s = |n: u64| human(n as f64 / secs.max(1e-9));
        let (batches, batch_records) = (l(&self.batches), l(&self.batch_records));
        let calls = l(&self.send) + l(&self.send_async) + batches;
        let records = l(&self.send) + l(&self.send_async) + batch_records;
        format!(
            "producer {} calls/s ({} records/call: send {}, send_async {}, send_batch {} of {:.1} \
             records each; to retry topic {}, to origin {}); polls/s main {} ({} with \
             records), relay {} ({} with records)",
            per_s(calls),
            if calls == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", records as f64 / calls as f64)
            },
            l(&self.send),
            l(&self.send_async),
            batches,
            if batches == 0 {
                0.0
            } else {
                batch_records as f64 / batches as f64
            },
            l(&self.to_retry),
            l(&self.to_origin),
            per_s(l(&self.polls[0])),
            per_s(l(&self.polls_with_records[0])),
            per_s(l(&self.polls[1])),
            per_s(l(&self.polls_with_records[1])),
        )
    }
}

/// The Kafka transport with every producer call and poll counted.
#[derive(Debug, Clone)]
struct Counted {
    inner: KafkaTransport,
    calls: Arc<Calls>,
}

impl Transport for Counted {
    fn consumer(&self, config: ConsumerConfig) -> kafka_retry::Result<Box<dyn Consumer>> {
        let which = usize::from(config.group_id.ends_with("-relay"));
        Ok(Box::new(CountedConsumer {
            inner: self.inner.consumer(config)?,
            calls: self.calls.clone(),
            which,
        }))
    }
    fn producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
        Ok(Arc::new(CountedProducer {
            inner: self.inner.producer()?,
            calls: self.calls.clone(),
        }))
    }
    // Forwarded, so the engine's writes are compressed as without the
    // wrapper (`KafkaConfig::engine_compression`).
    fn engine_producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
        Ok(Arc::new(CountedProducer {
            inner: self.inner.engine_producer()?,
            calls: self.calls.clone(),
        }))
    }
    fn create_topic(&self, t: &str, p: i32, rf: Option<i16>) -> kafka_retry::Result<()> {
        self.inner.create_topic(t, p, rf)
    }
    fn partition_count(&self, topic: &str) -> kafka_retry::Result<Option<i32>> {
        self.inner.partition_count(topic)
    }
    fn reader(&self) -> kafka_retry::Result<Box<dyn Reader>> {
        self.inner.reader()
    }
}

#[derive(Debug)]
struct CountedProducer {
    inner: Arc<dyn Producer>,
    calls: Arc<Calls>,
}

impl Producer for CountedProducer {
    fn send(&self, record: OutRecord) -> kafka_retry::Result<Delivered> {
        self.calls.send.fetch_add(1, Ordering::Relaxed);
        self.calls.count_topic(&record.topic, 1);
        self.inner.send(record)
    }
    fn send_async(&self, record: OutRecord) -> Pending {
        self.calls.send_async.fetch_add(1, Ordering::Relaxed);
        self.calls.count_topic(&record.topic, 1);
        self.inner.send_async(record)
    }
    fn send_batch(&self, records: Vec<OutRecord>) -> Vec<kafka_retry::Result<Delivered>> {
        self.calls.batches.fetch_add(1, Ordering::Relaxed);
        self.calls
            .batch_records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        for r in &records {
            self.calls.count_topic(&r.topic, 1);
        }
        self.inner.send_batch(records)
    }
}

#[derive(Debug)]
struct CountedConsumer {
    inner: Box<dyn Consumer>,
    calls: Arc<Calls>,
    /// 0: the main consumer, 1: the relay's.
    which: usize,
}

impl Consumer for CountedConsumer {
    fn poll(&mut self, timeout: Duration) -> kafka_retry::Result<ConsumerEvent> {
        self.calls.polls[self.which].fetch_add(1, Ordering::Relaxed);
        let event = self.inner.poll(timeout)?;
        if matches!(&event, ConsumerEvent::Records(r) if !r.is_empty()) {
            self.calls.polls_with_records[self.which].fetch_add(1, Ordering::Relaxed);
        }
        Ok(event)
    }
    fn pause(&mut self, partitions: &[TopicPartition]) {
        self.inner.pause(partitions)
    }
    fn resume(&mut self, partitions: &[TopicPartition]) {
        self.inner.resume(partitions)
    }
    fn commit(&mut self, offsets: &[(TopicPartition, i64)]) -> kafka_retry::Result<()> {
        self.inner.commit(offsets)
    }
    fn assignment(&self) -> Vec<TopicPartition> {
        self.inner.assignment()
    }
    fn close(&mut self) -> kafka_retry::Result<()> {
        self.inner.close()
    }
    fn close_for_restart(&mut self) -> kafka_retry::Result<()> {
        self.inner.close_for_restart()
    }
    fn progress(&self) -> Vec<PartitionProgress> {
        self.inner.progress()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    NoRetry,
    Retry10,
    /// As `Retry10`, with `Redelivery::Private`: the relay hands due
    /// records to the workers, nothing is written back to the origin topic.
    Retry10Private,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::NoRetry => "0% retries",
            Mode::Retry10 => "10% retries",
            Mode::Retry10Private => "10% retries, Redelivery::Private",
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
    /// Producer calls and polls, per second of the run (see [`Calls`]).
    calls: String,
    /// Redelivery delay of each redelivered record, µs, sorted (empty at 0%): at
    /// 10% the copies return to the end of origin partitions still full of
    /// the pre-load, so this is mostly the wait behind it, not the relay's
    /// lateness (the `lateness` row measures that, with nothing ahead).
    late: Vec<f64>,
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
    /// `BENCH_ENGINE_COMPRESSION`, for the lateness runs' own transports.
    engine_compression: Option<Compression>,
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
        // Redelivery delay of the redelivered records, µs (see `late_us`).
        let late = Arc::new(std::sync::Mutex::new(Vec::with_capacity((n / 10) as usize)));
        let interval_us = self.retry_interval.as_micros() as i64;
        let t0 = Instant::now();
        let handler = {
            let first = first.clone();
            let late = late.clone();
            move |r: &Record| {
                if first.load(Ordering::Relaxed) == 0 {
                    let ns = t0.elapsed().as_nanos() as u64 + 1;
                    let _ = first.compare_exchange(0, ns, Ordering::Relaxed, Ordering::Relaxed);
                }
                if let Some(us) = late_us(r, interval_us) {
                    late.lock().unwrap_or_else(|p| p.into_inner()).push(us);
                }
                if mode != Mode::NoRetry
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
        let calls = Arc::new(Calls::default());
        let transport = Counted {
            inner: self.kafka.clone(),
            calls: calls.clone(),
        };
        let mut builder = Engine::builder(transport)
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
        if mode == Mode::Retry10Private {
            builder = builder.redelivery(Redelivery::Private);
        }
        perf_control("enable");
        let engine = builder.build()?;
        let build = t0.elapsed();
        let m = bench::watch(&engine, t0, RUN_LIMIT, n, |s| s.assigned_partitions > 0);
        perf_control("disable");
        let cpu = process_cpu() - cpu0;
        let broker_cpu = self.broker_cpu() - broker0;
        let roles1 = cpu_by_role();
        let roles = ROLES
            .iter()
            .map(|r| {
                let (c1, s1, w1) = roles1.get(r).copied().unwrap_or_default();
                let (c0, s0, w0) = roles0.get(r).copied().unwrap_or_default();
                // Threads of the run started after `roles0`: their whole
                // counts are the run's.
                format!(
                    "{r} {:.2}/{}/{:.2}",
                    c1 - c0,
                    human(s1.saturating_sub(s0) as f64),
                    w1 - w0
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let stats = engine.stats();
        // Per second of the run from build() to all done (or the limit).
        let calls = calls.describe(m.all_done.unwrap_or(RUN_LIMIT).as_secs_f64());
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
            calls,
            late: sorted(&late),
        })
    }
}

/// The samples gathered in `m`, taken out and sorted.
fn sorted(m: &std::sync::Mutex<Vec<f64>>) -> Vec<f64> {
    let mut v = std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner()));
    v.sort_by(f64::total_cmp);
    v
}

/// For a redelivered record: handled-again time (wall clock, µs) minus its
/// due time (`retry.enqueued-at`, ms, plus the interval).
fn late_us(r: &Record, interval_us: i64) -> Option<f64> {
    r.header(ATTEMPTS)?;
    let ms: i64 = std::str::from_utf8(r.header(ENQUEUED_AT)?.value.as_deref()?)
        .ok()?
        .parse()
        .ok()?;
    Some((wall_us() - (ms * 1000 + interval_us)) as f64)
}

/// Writes `cmd` (`enable`, `disable`) to each control fifo in
/// `BENCH_PERF_CTL` (comma-separated; `perf record --control fifo:PATH -D
/// -1`), so a profile covers the timed runs only, not the pre-load.
fn perf_control(cmd: &str) {
    use std::io::Write as _;
    let Ok(paths) = std::env::var("BENCH_PERF_CTL") else {
        return;
    };
    for path in paths.split(',').filter(|p| !p.is_empty()) {
        match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(mut f) => {
                let _ = writeln!(f, "{cmd}");
            }
            Err(e) => eprintln!("bench_engine_kafka: perf control {path}: {e}"),
        }
    }
}

/// One `lateness` run (see the module docs).
struct Lateness {
    label: String,
    n: u64,
    parked_peak: i64,
    first_pass: Option<Duration>,
    all_done: Option<Duration>,
    /// Lateness of every record handled again, µs, sorted.
    late_us: Vec<f64>,
    /// How many were handled before their due time, and the earliest (µs).
    early: usize,
    earliest_us: f64,
    cpu: f64,
    broker_cpu: f64,
    /// CPU per second (1.0 = one core) of this process and the broker
    /// while the engine sat idle afterwards.
    idle_cpu: f64,
    idle_broker_cpu: f64,
}

fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Bench {
    /// All `n` records parked at once, then relayed; lateness per record.
    fn lateness(
        &self,
        bootstrap: &str,
        n: u64,
        interval: Duration,
        fetch_wait: Duration,
        min_bytes: i32,
        linger: Duration,
    ) -> Result<Lateness, BoxError> {
        let kafka = KafkaTransport::connect(with_settings(
            KafkaConfig::new(bootstrap)
                .fetch_max_wait(fetch_wait)
                .fetch_min_bytes(min_bytes)
                .linger(linger),
            self.engine_compression,
        ))?;
        let k = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("bench-late-{}-{k}", self.run_id);
        let group = format!("{name}-g");
        self.create(&name)?;
        self.create(&format!("{group}-retry"))?;
        self.create(&format!("{group}-dlt"))?;
        self.preload(&name, n)?;
        let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n as usize)));
        let interval_us = interval.as_micros() as i64;
        let handler = {
            let samples = samples.clone();
            move |r: &Record| {
                if r.header(ATTEMPTS).is_none() {
                    return Outcome::retry("bench");
                }
                if let Some(late) = late_us(r, interval_us) {
                    samples.lock().unwrap_or_else(|p| p.into_inner()).push(late);
                }
                Outcome::Done
            }
        };
        let (cpu0, broker0) = (process_cpu(), self.broker_cpu());
        let t0 = Instant::now();
        let engine = Engine::builder(kafka)
            .group_id(&group)
            .topics([name.as_str()])
            .workers(self.workers)
            .handler(handler)
            .session_timeout(self.session)
            .max_parked(n as usize + 10_000)
            .policy(RetryPolicy::new(interval, Duration::from_secs(3600)))
            .build()?;
        let (mut parked_peak, mut first_pass, mut all_done) = (0i64, None, None);
        while t0.elapsed() < RUN_LIMIT + interval {
            let s = engine.stats();
            parked_peak = parked_peak.max(s.parked);
            if first_pass.is_none() && s.retried >= n {
                first_pass = Some(t0.elapsed());
            }
            if s.done >= n {
                all_done = Some(t0.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let (cpu, broker_cpu) = (process_cpu() - cpu0, self.broker_cpu() - broker0);
        // Idle: what the fetch setting costs when nothing arrives.
        let idle = Duration::from_secs(2);
        let (c0, b0) = (process_cpu(), self.broker_cpu());
        std::thread::sleep(idle);
        let idle_cpu = (process_cpu() - c0) / idle.as_secs_f64();
        let idle_broker_cpu = (self.broker_cpu() - b0) / idle.as_secs_f64();
        if let Err(e) = engine.shutdown(Duration::from_secs(10)) {
            eprintln!("bench_engine_kafka: shutdown: {e}");
        }
        let late_us = sorted(&samples);
        let early = late_us.iter().filter(|&&l| l < 0.0).count();
        Ok(Lateness {
            label: format!(
                "fetch_max_wait {fetch_wait:?}, fetch_min_bytes {min_bytes}, linger {linger:?}"
            ),
            n,
            parked_peak,
            first_pass,
            all_done,
            earliest_us: late_us.first().copied().unwrap_or(0.0).min(0.0),
            late_us,
            early,
            cpu,
            broker_cpu,
            idle_cpu,
            idle_broker_cpu,
        })
    }
}

fn print_lateness(l: &Lateness) {
    let ms = |q: f64| bench::percentile(&l.late_us, q) / 1e3;
    println!(
        "lateness, {}: {} records, parked peak {}, first pass {}, all done {}; lateness ms \
         p50 {:.1}, p99 {:.1}, max {:.1} over {} samples, early {} (earliest {:.3} ms); \
         CPU/record {:.2} us client, {:.2} us broker; idle CPU {:.1}% client, {:.1}% broker",
        l.label,
        l.n,
        l.parked_peak,
        secs(l.first_pass),
        secs(l.all_done),
        ms(0.5),
        ms(0.99),
        ms(1.0),
        l.late_us.len(),
        l.early,
        l.earliest_us / 1e3,
        l.cpu * 1e6 / l.n as f64,
        l.broker_cpu * 1e6 / l.n as f64,
        l.idle_cpu * 100.0,
        l.idle_broker_cpu * 100.0
    );
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("TIMEOUT".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn print_run(label: &str, r: &Run) {
    let s = &r.stats;
    println!(
        "{label} x {}: build() {:.0} ms, assigned {}, first record {}, first pass {}, all done {} \
         -> {} rec/s from build(), {} rec/s from the assignment; received {}, done {}, \
         retried {}, relayed {} (privately {}), dead-lettered {}, send errors {}, rebalances {}; CPU/record \
         {:.2} us client, {:.2} us broker; by thread, CPU s / times scheduled in / s runnable waiting for a core: {}",
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
        s.redelivered_private,
        s.dead_lettered.total(),
        s.send_errors,
        s.rebalances,
        r.cpu * 1e6 / r.n as f64,
        r.broker_cpu * 1e6 / r.n as f64,
        r.roles
    );
    println!("  calls: {}", r.calls);
    if !r.late.is_empty() {
        let ms = |q: f64| bench::percentile(&r.late, q) / 1e3;
        println!(
            "  redelivery delay under this load ({} records; handled again minus due; through the origin \
             topic this includes the wait behind the pre-loaded records): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            r.late.len(),
            ms(0.5),
            ms(0.99),
            ms(1.0)
        );
    }
    if r.all_done.is_none() || s.dead_lettered.total() > 0 || s.send_errors > 0 {
        println!("  note: this run did not finish cleanly (see the counters above)");
    }
}

/// `KafkaConfig::fetch_ahead` as `BENCH_FETCH_AHEAD` sets it (on unless 0).
fn fetch_ahead() -> bool {
    env_u64("BENCH_FETCH_AHEAD", 1) != 0
}

/// `config` with `engine_compression` when one is set, and
/// `BENCH_FETCH_AHEAD=0` turning `KafkaConfig::fetch_ahead` off.
fn with_settings(config: KafkaConfig, engine_compression: Option<Compression>) -> KafkaConfig {
    let config = config.fetch_ahead(fetch_ahead());
    match engine_compression {
        Some(c) => config.engine_compression(c),
        None => config,
    }
}

fn main() -> Result<(), BoxError> {
    let sections = bench::Sections::from_args();
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP")
        .map_err(|_| "KAFKA_BOOTSTRAP is not set: run through scripts/bench-kafka")?;
    // `BENCH_ENGINE_COMPRESSION=none` (or lz4, gzip, zstd): the engine's
    // writes (`KafkaConfig::engine_compression`, lz4 unless set; Tansu
    // stores a compressed batch as it came; see the README's retry-path
    // cost table).
    let codec = |var: &str| match std::env::var(var).as_deref() {
        Ok("none") => Some(Compression::None),
        Ok("lz4") => Some(Compression::Lz4),
        Ok("gzip") => Some(Compression::Gzip),
        Ok("zstd") => Some(Compression::Zstd),
        _ => None,
    };
    let engine_compression = codec("BENCH_ENGINE_COMPRESSION");
    let kafka = KafkaTransport::connect(with_settings(
        KafkaConfig::new(&bootstrap),
        engine_compression,
    ))?;
    let compression =
        engine_compression.map_or_else(|| "lz4 (the default)".to_string(), |c| format!("{c:?}"));
    // The input topics are pre-loaded uncompressed whatever the engine's
    // setting: the main path's fetches stay the same, only the engine's
    // own writes (retry topic, relay) change.
    let producer = KafkaTransport::connect(KafkaConfig::new(&bootstrap))?.producer()?;
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
        engine_compression,
    };
    let n0 = env_u64("BENCH_ENGINE_N0", 1_000_000).max(1);
    let n10 = env_u64("BENCH_ENGINE_N10", 1_000_000).max(10);
    println!(
        "bench_engine_kafka: broker {bootstrap} ({}), {} cores; {PARTITIONS} partitions, {KEYS} keys, \
         {VALUE_BYTES}-byte values, no-op handler, {} workers, session timeout {:?}, retry interval \
         {:?}, max_poll_records {}, engine compression {compression}, fetch ahead {}",
        std::env::var("KAFKA_RETRY_BROKER").unwrap_or_else(|_| "?".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bench.workers,
        bench.session,
        bench.retry_interval,
        bench
            .poll_records
            .map_or("2000 (default)".to_string(), |n| n.to_string()),
        if fetch_ahead() { "on" } else { "off" },
    );

    // Warm-up: connections, metadata, broker-side state, allocator.
    let warm = bench.run(10_000, Mode::NoRetry)?;
    print_run("warm-up", &warm);

    let repeat = env_u64("BENCH_REPEAT", 1).max(1) as usize;
    // Only when named: it parks N records once per fetch setting.
    if std::env::args().skip(1).any(|a| a == "lateness") {
        let n = env_u64("BENCH_LATENESS_N", 100_000).max(1);
        let interval = Duration::from_millis(env_u64("BENCH_LATENESS_RETRY_MS", 10_000).max(1));
        let variants: Vec<(u64, i32, u64)> = std::env::var("BENCH_LATENESS_FETCH")
            .unwrap_or_else(|_| "500:1,100:1,10:1,1:1,1:1:0".into())
            .split(',')
            .filter_map(|v| {
                let mut f = v.split(':').map(str::trim);
                let wait = f.next()?.parse().ok()?;
                let min_bytes = f.next()?.parse().ok()?;
                let linger = f.next().map_or(Some(5), |l| l.parse().ok())?;
                Some((wait, min_bytes, linger))
            })
            .collect();
        let mut runs = Vec::new();
        // BENCH_REPEAT rounds over the settings, each run its own row: the
        // tail moves a lot from run to run on a shared machine.
        for _ in 0..repeat {
            for &(wait, min_bytes, linger) in &variants {
                let l = bench.lateness(
                    &bootstrap,
                    n,
                    interval,
                    Duration::from_millis(wait),
                    min_bytes,
                    Duration::from_millis(linger),
                )?;
                print_lateness(&l);
                runs.push(l);
            }
        }
        runs.sort_by_key(|l| l.label.clone());
        println!();
        println!(
            "Relay lateness on Kafka (one Tansu broker): {n} records parked at once, retry \
             interval {interval:?}, {} workers, {PARTITIONS} partitions; lateness = handled \
             again minus due (enqueued-at + interval), never negative unless early; idle = the \
             idle engine over 2 s afterwards.",
            bench.workers
        );
        println!();
        println!(
            "| client setting | parked peak | first pass (all parked) | all done \
             | lateness p50 | p99 | max | early | CPU/record client, broker | idle CPU client, broker |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for l in &runs {
            let ms = |q: f64| format!("{:.1} ms", bench::percentile(&l.late_us, q) / 1e3);
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2} us, {:.2} us | {:.1}%, {:.1}% |",
                l.label,
                l.parked_peak,
                secs(l.first_pass),
                secs(l.all_done),
                ms(0.5),
                ms(0.99),
                ms(1.0),
                l.early,
                l.cpu * 1e6 / l.n as f64,
                l.broker_cpu * 1e6 / l.n as f64,
                l.idle_cpu * 100.0,
                l.idle_broker_cpu * 100.0
            );
        }
        println!();
    }

    let mut rows: Vec<(Mode, Vec<Run>)> = Vec::new();
    for (mode, n, section) in [
        (Mode::NoRetry, n0, "tp0"),
        (Mode::Retry10, n10, "tp10"),
        (Mode::Retry10Private, n10, "tp10p"),
    ] {
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
    if rows.is_empty() {
        return Ok(());
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
            r.stats.relayed + r.stats.redelivered_private,
            r.cpu * 1e6 / r.n as f64,
            r.broker_cpu * 1e6 / r.n as f64
        );
    }
    Ok(())
}

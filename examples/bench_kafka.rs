//! Kafka client benchmark: our client next to librdkafka, through the same
//! broker. Prints numbers; it is not a test.
//!
//! Run (starts a throw-away Tansu broker, builds in release mode, a few
//! minutes on 2 cores):
//!
//! ```text
//! scripts/bench-kafka                      # every section
//! scripts/bench-kafka produce consume join # or some of them
//! scripts/bench-kafka engine               # examples/bench_engine_kafka.rs
//! ```
//!
//! which is `scripts/test-broker cargo run --release --example bench_kafka --
//! [sections]`. `KAFKA_BOOTSTRAP` names the broker; `KAFKA_RETRY_PYTHON` a
//! python with confluent-kafka (scripts/python-peers), which runs
//! `benches/librdkafka_bench.py` for the librdkafka rows; without it only our
//! numbers are printed.
//!
//! Workload (the same for both clients): keyed records (`key-00042`, 10,000
//! distinct keys, Java's murmur2 partitioner on both sides), one 16-byte
//! header, 100-byte and 1 KiB values, acks=all, linger 5 ms, no compression,
//! topics with 6 partitions; each client writes its own topics. Every
//! measurement runs once, after a warm-up. Knobs (environment):
//! `BENCH_N_SMALL` (200000 records at 100 B), `BENCH_N_LARGE` (50000 at
//! 1 KiB), `BENCH_CHUNK` (10000 records per `send_batch`),
//! `BENCH_SEND_THREADS` (`4,64`: one concurrent-`send` run per count),
//! `BENCH_ASYNC_WINDOW` (10000: most unacknowledged `send_async` writes),
//! `BENCH_POLL_RECORDS` (1000, our `max_poll_records`; librdkafka's
//! `consume(num_messages=1000)`), `BENCH_SESSION_MS` (6000, both consumers),
//! `BENCH_REPEAT` (1: run every measurement that many times, clients
//! interleaved, and tabulate the median; for a busy machine),
//! `BENCH_LIBRDKAFKA=0` (ours only, e.g. under a profiler),
//! `BENCH_KAFKA_CONFIG` (a properties file, e.g. `security.protocol=SSL`
//! and `ssl.ca.location`, read by both clients: `scripts/bench-kafka tls`
//! sets it to measure through the TLS front end), `BENCH_FETCH_AHEAD=0`
//! (our consumer with `KafkaConfig::fetch_ahead(false)`).
//!
//! - `idempotence` (only when named): ours with `send_batch`, the
//!   idempotent producer (the default) next to `idempotence(false)`, at
//!   least 3 interleaved repetitions, and the median ratio on/off.
//! - `produce`: ours with `send_batch` in chunks from one thread (as the
//!   relay does), with `send_async` from one thread (keeps up to
//!   `BENCH_ASYNC_WINDOW` `Pending`s, waits on the oldest past that and on
//!   all at the end; every one must be Ok: the fair counterpart of
//!   librdkafka's loop) and with blocking `send` from N threads (each
//!   waits for its acknowledgement); librdkafka with `produce()` +
//!   `poll(0)` in a Python loop and a final `flush()`. Records are built
//!   inside the timed loop on both sides.
//! - `consume`: a new group member reads a topic from the beginning
//!   (earliest reset) until it has every record. Two rates: first record to
//!   last (the join excluded), and assignment to last (also counts the
//!   start-offset lookups and the first Fetch). Both clients read the topic
//!   librdkafka wrote and the one our `send_batch` wrote (needs `produce` in
//!   the same run).
//! - `join`: time from creating a new group member to its assignment and to
//!   its first record (Tansu completes a join after about half the session
//!   timeout; both use `BENCH_SESSION_MS`).
//!
//! MB/s counts value bytes (10^6 bytes), not keys, headers or framing. A
//! second table gives CPU per record of each client process (all threads,
//! from `/proc`) and of the broker while serving it (when
//! `BENCH_BROKER_PID` is set, as scripts/bench-kafka does): unlike rates,
//! these barely move when other work shares the machine.

#[path = "shared/bench.rs"]
mod bench;

use std::collections::VecDeque;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::{human, median_by, process_cpu, thread_cpu, BoxError};
use bytes::Bytes;
use kafka_retry::transport::{ConsumerConfig, ConsumerEvent, Pending, Producer, Transport};
use kafka_retry::{Header, KafkaConfig, KafkaTransport, OutRecord};

const PARTITIONS: i32 = 6;
const KEYS: usize = 10_000;
const HEADER_KEY: &str = "trace";
const HEADER_VALUE: &[u8] = b"0123456789abcdef";
const LINGER: Duration = Duration::from_millis(5);
const BATCH_SIZE: usize = 1024 * 1024;
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/librdkafka_bench.py");

/// One throughput result.
#[derive(Debug, Clone, Copy)]
struct Rate {
    records: u64,
    value_bytes: u64,
    seconds: f64,
    /// CPU time of the client's whole process (all threads) meanwhile,
    /// NaN when unknown. Less sensitive to a busy machine than `seconds`.
    cpu: f64,
    /// CPU time of the broker process meanwhile (NaN when unknown).
    broker_cpu: f64,
}

impl Rate {
    fn per_sec(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    fn mb_per_sec(&self) -> f64 {
        self.value_bytes as f64 / 1e6 / self.seconds
    }
    fn show(&self) -> String {
        format!(
            "{} rec/s, {:.1} MB/s",
            human(self.per_sec()),
            self.mb_per_sec()
        )
    }
    fn cpu_per_record_us(&self) -> f64 {
        self.cpu * 1e6 / self.records as f64
    }
    fn broker_cpu_per_record_us(&self) -> f64 {
        self.broker_cpu * 1e6 / self.records as f64
    }
    fn show_cpu(&self) -> String {
        format!(
            "{}, CPU/record {:.2} us client, {:.2} us broker",
            self.show(),
            self.cpu_per_record_us(),
            self.broker_cpu_per_record_us()
        )
    }
}

/// What one consumer run saw.
#[derive(Debug, Clone, Copy)]
struct ConsumeRun {
    /// First record to last.
    rate: Rate,
    /// Assignment to last record: also counts the start-offset lookups and
    /// the first Fetch, which `rate` leaves out.
    from_assign: Rate,
    /// Start to assignment.
    join: f64,
    /// Start to the first record.
    first: f64,
    /// Longest wait between two deliveries of records (a stalled fetch
    /// shows up here).
    max_gap: f64,
}

impl ConsumeRun {
    fn show(&self) -> String {
        format!(
            "{} first->last, {} assigned->last (assigned {:.2} s, first record {:.2} s, \
             longest gap {:.0} ms, {:.2} us CPU/record)",
            self.rate.show(),
            self.from_assign.show(),
            self.join,
            self.first,
            self.max_gap * 1e3,
            self.rate.cpu_per_record_us()
        )
    }
}

/// The element with the median `key` (the upper one of an even count).
fn median<T: Copy>(v: &[T], key: impl Fn(&T) -> f64) -> Option<T> {
    median_by(v, key).copied()
}

/// A table row: what, ours, librdkafka, and whether bigger is better.
enum Row {
    Rate(String, Option<Rate>, Option<Rate>),
    Secs(String, Option<f64>, Option<f64>),
}

fn env_usize(name: &str, default: usize) -> usize {
    bench::env_u64(name, default as u64) as usize
}

struct Bench {
    kafka: KafkaTransport,
    bootstrap: String,
    python: Option<String>,
    run_id: String,
    keys: Vec<Bytes>,
    chunk: usize,
    send_threads: Vec<usize>,
    /// Most unacknowledged `send_async` writes (`BENCH_ASYNC_WINDOW`).
    async_window: usize,
    poll_records: usize,
    session: Duration,
    repeat: usize,
    /// Set by scripts/bench-kafka (`BENCH_BROKER_PID`) when it started the broker.
    broker_pid: Option<String>,
    /// `key=value` lines of `BENCH_KAFKA_CONFIG`, for librdkafka.
    extra_config: Vec<String>,
}

/// Our config and librdkafka's `--config` pairs from `BENCH_KAFKA_CONFIG`
/// (a properties file), if set; `bootstrap` wins over the file's.
fn bench_config(bootstrap: &str) -> Result<(KafkaConfig, Vec<String>), BoxError> {
    let ahead = env_usize("BENCH_FETCH_AHEAD", 1) != 0;
    let Ok(path) = std::env::var("BENCH_KAFKA_CONFIG") else {
        return Ok((KafkaConfig::new(bootstrap).fetch_ahead(ahead), Vec::new()));
    };
    let ours = KafkaConfig::from_properties_file(&path)?
        .bootstrap(bootstrap)
        .fetch_ahead(ahead);
    let text = std::fs::read_to_string(&path)?;
    let pairs = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .filter(|l| !l.starts_with("bootstrap.servers"))
        .map(|l| l.replacen(':', "=", usize::from(!l.contains('='))))
        .collect();
    Ok((ours, pairs))
}

impl Bench {
    /// CPU seconds the broker process has used (NaN without its pid).
    fn broker_cpu(&self) -> f64 {
        bench::broker_cpu(self.broker_pid.as_deref())
    }

    fn topic(&self, name: &str) -> String {
        format!("bench-{}-{name}", self.run_id)
    }

    fn create(&self, topic: &str) -> Result<(), BoxError> {
        bench::create_topic(&self.kafka, topic, PARTITIONS)
    }

    fn record(&self, topic: &str, i: usize, value: &Bytes) -> OutRecord {
        let mut r = OutRecord::new(topic);
        r.key = Some(self.keys[i % self.keys.len()].clone());
        r.value = Some(value.clone());
        r.headers
            .push(Header::new(HEADER_KEY, Bytes::from_static(HEADER_VALUE)));
        r
    }

    /// `count` records through `send_batch`, `chunk` at a time, one thread.
    fn produce_batch(
        &self,
        producer: &dyn Producer,
        topic: &str,
        count: usize,
        value: &Bytes,
    ) -> Result<Rate, BoxError> {
        let meter = self.meter();
        bench::send_chunked(
            producer,
            (0..count).map(|j| self.record(topic, j, value)),
            self.chunk,
            &format!("send_batch to {topic}"),
        )?;
        Ok(meter.rate(self, count, value, 0.0))
    }

    /// `count` records through `send`, from `threads` threads pulling record
    /// numbers from a shared counter.
    fn produce_send(
        self: &Arc<Self>,
        producer: &Arc<dyn Producer>,
        topic: &str,
        count: usize,
        value: &Bytes,
        threads: usize,
    ) -> Result<Rate, BoxError> {
        let next = Arc::new(AtomicUsize::new(0));
        let meter = self.meter();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (me, producer, next) = (self.clone(), producer.clone(), next.clone());
                let (topic, value) = (topic.to_string(), value.clone());
                std::thread::spawn(move || -> Result<f64, String> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            // Gone before the measurement ends: report our CPU.
                            return Ok(thread_cpu());
                        }
                        producer
                            .send(me.record(&topic, i, &value))
                            .map_err(|e| format!("send to {topic}: {e}"))?;
                    }
                })
            })
            .collect();
        let mut threads_cpu = 0.0;
        for h in handles {
            threads_cpu += h.join().map_err(|_| "a send thread panicked")??;
        }
        Ok(meter.rate(self, count, value, threads_cpu))
    }

    /// `count` records through `send_async` from one thread, at most
    /// `window` unacknowledged: past it, waits on the oldest `Pending`;
    /// then waits on all. Every result must be Ok.
    fn produce_async(
        &self,
        producer: &dyn Producer,
        topic: &str,
        count: usize,
        value: &Bytes,
        window: usize,
    ) -> Result<Rate, BoxError> {
        let meter = self.meter();
        let mut pending: VecDeque<Pending> = VecDeque::with_capacity(window + 1);
        let check = |p: Pending| -> Result<(), BoxError> {
            p.wait()
                .map(|_| ())
                .map_err(|e| format!("send_async to {topic}: {e}").into())
        };
        for i in 0..count {
            pending.push_back(producer.send_async(self.record(topic, i, value)));
            if pending.len() > window {
                if let Some(p) = pending.pop_front() {
                    check(p)?;
                }
            }
        }
        for p in pending {
            check(p)?;
        }
        Ok(meter.rate(self, count, value, 0.0))
    }

    /// Starts measuring a produce run: wall clock, this process's and the
    /// broker's CPU time.
    fn meter(&self) -> Meter {
        Meter {
            start: Instant::now(),
            cpu: process_cpu(),
            broker_cpu: self.broker_cpu(),
        }
    }

    /// A new group member reads `count` records of `topic` from the start.
    fn consume(&self, topic: &str, count: usize) -> Result<ConsumeRun, BoxError> {
        let mut config = ConsumerConfig::new(self.topic(&format!("g{}", unique())), [topic]);
        config.session_timeout = self.session;
        config.rebalance_timeout = Duration::from_secs(10);
        config.max_poll_records = self.poll_records;
        let (start, cpu, broker) = (Instant::now(), process_cpu(), self.broker_cpu());
        let mut consumer = self.kafka.consumer(config)?;
        let deadline = start + Duration::from_secs(120);
        let (mut join, mut first, mut prev): (_, _, Option<Instant>) = (None, None, None);
        let mut max_gap = 0f64;
        let (mut got, mut bytes) = (0usize, 0u64);
        while got < count {
            if Instant::now() > deadline {
                return Err(
                    format!("consume {topic}: {got} of {count} records after 120 s").into(),
                );
            }
            match consumer.poll(Duration::from_millis(500))? {
                ConsumerEvent::Assigned(_) => {
                    join.get_or_insert_with(Instant::now);
                }
                ConsumerEvent::Records(records) => {
                    if !records.is_empty() {
                        let now = Instant::now();
                        first.get_or_insert(now);
                        if let Some(prev) = prev {
                            max_gap = max_gap.max((now - prev).as_secs_f64());
                        }
                        prev = Some(now);
                    }
                    got += records.len();
                    bytes += records
                        .iter()
                        .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
                        .sum::<u64>();
                }
                ev => return Err(format!("consume {topic}: unexpected {ev:?}").into()),
            }
        }
        let last = Instant::now();
        // Consumer's CPU for the whole run: joining costs next to nothing.
        let cpu = process_cpu() - cpu;
        let broker_cpu = self.broker_cpu() - broker;
        let _ = consumer.close();
        let first = first.unwrap_or(last);
        let join = join.unwrap_or(first);
        Ok(ConsumeRun {
            rate: Rate {
                records: got as u64,
                value_bytes: bytes,
                seconds: (last - first).as_secs_f64(),
                cpu,
                broker_cpu,
            },
            from_assign: Rate {
                records: got as u64,
                value_bytes: bytes,
                seconds: (last - join).as_secs_f64(),
                cpu,
                broker_cpu,
            },
            join: (join - start).as_secs_f64(),
            first: (first - start).as_secs_f64(),
            max_gap,
        })
    }

    /// Runs `benches/librdkafka_bench.py`; None (and a message) without python.
    fn python(&self, args: &[String]) -> Result<Option<serde_json::Value>, BoxError> {
        let Some(py) = &self.python else {
            return Ok(None);
        };
        let mut cmd = Command::new(py);
        cmd.arg(SCRIPT)
            .args(args)
            .args(["--bootstrap", &self.bootstrap]);
        for kv in &self.extra_config {
            cmd.args(["--config", kv]);
        }
        if let Some(pid) = &self.broker_pid {
            cmd.args(["--broker-pid", pid]);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(format!(
                "{SCRIPT} {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(Some(serde_json::from_slice(&out.stdout)?))
    }

    fn rdk_produce(
        &self,
        topic: &str,
        count: usize,
        value_bytes: usize,
        warm: &str,
        warm_count: usize,
    ) -> Result<Option<Rate>, BoxError> {
        let args: Vec<String> = [
            "produce",
            "--topic",
            topic,
            "--count",
            &count.to_string(),
            "--value-bytes",
            &value_bytes.to_string(),
            "--keys",
            &KEYS.to_string(),
            "--warmup-topic",
            warm,
            "--warmup-count",
            &warm_count.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let Some(v) = self.python(&args)? else {
            return Ok(None);
        };
        if v["errors"].as_u64().unwrap_or(0) > 0 {
            return Err(format!("librdkafka produce: delivery errors: {v}").into());
        }
        Ok(Some(Rate {
            records: v["records"].as_u64().unwrap_or(0),
            value_bytes: v["value_bytes"].as_u64().unwrap_or(0),
            seconds: v["seconds"].as_f64().unwrap_or(f64::NAN),
            cpu: v["cpu_s"].as_f64().unwrap_or(f64::NAN),
            broker_cpu: v["broker_cpu_s"].as_f64().unwrap_or(f64::NAN),
        }))
    }

    fn rdk_consume(&self, topic: &str, count: usize) -> Result<Option<ConsumeRun>, BoxError> {
        let args: Vec<String> = [
            "consume",
            "--topic",
            topic,
            "--count",
            &count.to_string(),
            "--group",
            &self.topic(&format!("g{}", unique())),
            "--session-timeout-ms",
            &self.session.as_millis().to_string(),
            "--batch",
            &self.poll_records.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let Some(v) = self.python(&args)? else {
            return Ok(None);
        };
        let rate = |secs: &str| Rate {
            records: v["records"].as_u64().unwrap_or(0),
            value_bytes: v["value_bytes"].as_u64().unwrap_or(0),
            seconds: v[secs].as_f64().unwrap_or(f64::NAN),
            cpu: v["cpu_s"].as_f64().unwrap_or(f64::NAN),
            broker_cpu: v["broker_cpu_s"].as_f64().unwrap_or(f64::NAN),
        };
        Ok(Some(ConsumeRun {
            rate: rate("seconds"),
            from_assign: rate("from_assign_s"),
            join: v["join_s"].as_f64().unwrap_or(f64::NAN),
            first: v["first_s"].as_f64().unwrap_or(f64::NAN),
            max_gap: v["max_gap_s"].as_f64().unwrap_or(f64::NAN),
        }))
    }
}

/// A produce measurement under way, from [`Bench::meter`].
struct Meter {
    start: Instant,
    cpu: f64,
    broker_cpu: f64,
}

impl Meter {
    /// The rate of `count` records of `value` since the start; `extra_cpu`
    /// is the CPU of threads that ended meanwhile (see [`process_cpu`]).
    fn rate(&self, bench: &Bench, count: usize, value: &Bytes, extra_cpu: f64) -> Rate {
        Rate {
            records: count as u64,
            value_bytes: (count * value.len()) as u64,
            seconds: self.start.elapsed().as_secs_f64(),
            cpu: process_cpu() - self.cpu + extra_cpu,
            broker_cpu: bench.broker_cpu() - self.broker_cpu,
        }
    }
}

fn unique() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed) as u64
}

fn value_of(size: usize) -> Bytes {
    (0..size)
        .map(|i| ((i * 7) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn main() -> Result<(), BoxError> {
    let sections = bench::Sections::from_args();
    let want = |s: &str| sections.want(s);
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP")
        .map_err(|_| "KAFKA_BOOTSTRAP is not set: run through scripts/bench-kafka")?;
    let python = std::env::var("KAFKA_RETRY_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .filter(|_| std::env::var("BENCH_LIBRDKAFKA").map_or(true, |v| v != "0"));
    if python.is_none() {
        eprintln!(
            "bench_kafka: KAFKA_RETRY_PYTHON is not set (or BENCH_LIBRDKAFKA=0): \
             librdkafka rows are skipped"
        );
    }
    let sizes = [
        (100usize, env_usize("BENCH_N_SMALL", 200_000)),
        (1024usize, env_usize("BENCH_N_LARGE", 50_000)),
    ];
    let send_threads: Vec<usize> = std::env::var("BENCH_SEND_THREADS")
        .unwrap_or_else(|_| "4,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let run_id = bench::run_id();
    let (config, extra_config) = bench_config(&bootstrap)?;
    let bench = Arc::new(Bench {
        // The defaults, spelled out: they are what the table compares.
        kafka: KafkaTransport::connect(
            config
                .acks(kafka_retry::Acks::All)
                .linger(LINGER)
                .batch_size(BATCH_SIZE),
        )?,
        bootstrap: bootstrap.clone(),
        python,
        run_id,
        keys: (0..KEYS)
            .map(|k| Bytes::from(format!("key-{k:05}")))
            .collect(),
        chunk: env_usize("BENCH_CHUNK", 10_000).max(1),
        send_threads,
        async_window: env_usize("BENCH_ASYNC_WINDOW", 10_000).max(1),
        poll_records: env_usize("BENCH_POLL_RECORDS", 1000).max(1),
        session: Duration::from_millis(env_usize("BENCH_SESSION_MS", 6000) as u64),
        repeat: env_usize("BENCH_REPEAT", 1).max(1),
        broker_pid: bench::broker_pid_from_env(),
        extra_config,
    });
    println!(
        "bench_kafka: broker {bootstrap} ({}{}), {} cores; {PARTITIONS} partitions, {KEYS} keys, \
         one {}-byte header, acks=all, linger {LINGER:?}, batch_size {BATCH_SIZE} B; send_batch chunk {}; \
         max_poll_records {}; session timeout {:?}",
        std::env::var("KAFKA_RETRY_BROKER").unwrap_or_else(|_| "?".into()),
        std::env::var("BENCH_KAFKA_CONFIG")
            .map(|p| format!("; settings from {p}: {}", bench.extra_config.join(" ")))
            .unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        HEADER_KEY.len() + HEADER_VALUE.len(),
        bench.chunk,
        bench.poll_records,
        bench.session,
    );

    let mut rows: Vec<Row> = Vec::new();
    // Client CPU per record: (what, ours, librdkafka), microseconds.
    #[allow(clippy::type_complexity)]
    let mut cpu_rows: Vec<(String, Option<(f64, f64)>, Option<(f64, f64)>)> = Vec::new();
    let cpu = |r: Option<Rate>| r.map(|r| (r.cpu_per_record_us(), r.broker_cpu_per_record_us()));
    // Topics written by librdkafka and by our send_batch, per value size.
    let mut written: Vec<(usize, usize, String, String)> = Vec::new();
    let repeat = bench.repeat;

    // Opt-in (not in the default set): `scripts/bench-kafka idempotence`.
    if std::env::args().skip(1).any(|a| a == "idempotence") {
        idempotence_on_off(&bench, &bootstrap, &sizes)?;
    }
    // Opt-in: `scripts/bench-kafka retrycost` (issue 13 §1).
    if std::env::args().skip(1).any(|a| a == "retrycost") {
        retry_cost(&bench, &bootstrap)?;
    }

    if want("produce") {
        let producer = bench.kafka.producer()?;
        // Warm-up: connections, metadata, broker-side topic state, allocator.
        // (The librdkafka script warms its producer up the same way.)
        let warm_ours = bench.topic("warm-ours");
        let warm_rdk = bench.topic("warm-rdk");
        bench.create(&warm_ours)?;
        bench.create(&warm_rdk)?;
        let warm_value = value_of(100);
        bench.produce_batch(&*producer, &warm_ours, 20_000, &warm_value)?;
        bench.produce_send(&producer, &warm_ours, 2_000, &warm_value, 64)?;
        bench.produce_async(
            &*producer,
            &warm_ours,
            20_000,
            &warm_value,
            bench.async_window,
        )?;
        for &(size, count) in &sizes {
            let value = value_of(size);
            let name = size_name(size);
            let (mut batch, mut rdk, mut asyn) = (Vec::new(), Vec::new(), Vec::new());
            let mut send: Vec<Vec<Rate>> = vec![Vec::new(); bench.send_threads.len()];
            // Repetitions interleave the clients, so that a busy spell on a
            // shared machine does not land on one client only.
            for rep in 0..repeat {
                let t_batch = bench.topic(&format!("{size}-batch-{rep}"));
                let t_rdk = bench.topic(&format!("{size}-rdk-{rep}"));
                bench.create(&t_batch)?;
                bench.create(&t_rdk)?;
                let r = bench.produce_batch(&*producer, &t_batch, count, &value)?;
                println!(
                    "produce {name} x {count}: ours send_batch({}): {}",
                    bench.chunk,
                    r.show_cpu()
                );
                batch.push(r);
                if let Some(r) = bench.rdk_produce(&t_rdk, count, size, &warm_rdk, 20_000)? {
                    println!("produce {name} x {count}: librdkafka: {}", r.show_cpu());
                    rdk.push(r);
                }
                let t_async = bench.topic(&format!("{size}-async-{rep}"));
                bench.create(&t_async)?;
                let r =
                    bench.produce_async(&*producer, &t_async, count, &value, bench.async_window)?;
                println!(
                    "produce {name} x {count}: ours send_async (window {}) x1 thread: {}",
                    bench.async_window,
                    r.show_cpu()
                );
                asyn.push(r);
                for (k, &threads) in bench.send_threads.iter().enumerate() {
                    let t_send = bench.topic(&format!("{size}-send{threads}-{rep}"));
                    bench.create(&t_send)?;
                    let r = bench.produce_send(&producer, &t_send, count, &value, threads)?;
                    println!(
                        "produce {name} x {count}: ours send x{threads} threads: {}",
                        r.show_cpu()
                    );
                    send[k].push(r);
                }
                if rep == 0 {
                    written.push((size, count, t_rdk, t_batch));
                }
            }
            let rdk = median(&rdk, Rate::per_sec);
            let what = format!("produce {name}, send_batch({}) x1 thread", bench.chunk);
            let ours = median(&batch, Rate::per_sec);
            cpu_rows.push((what.clone(), cpu(ours), cpu(rdk)));
            rows.push(Row::Rate(what, ours, rdk));
            let what = format!(
                "produce {name}, send_async x1 thread (window {})",
                bench.async_window
            );
            let ours = median(&asyn, Rate::per_sec);
            cpu_rows.push((what.clone(), cpu(ours), cpu(rdk)));
            rows.push(Row::Rate(what, ours, rdk));
            for (k, &threads) in bench.send_threads.iter().enumerate() {
                let what = format!("produce {name}, send x{threads} threads");
                let ours = median(&send[k], Rate::per_sec);
                cpu_rows.push((what.clone(), cpu(ours), cpu(rdk)));
                rows.push(Row::Rate(what, ours, rdk));
            }
        }
    }

    let mut joins: Vec<ConsumeRun> = Vec::new();
    let mut rdk_joins: Vec<ConsumeRun> = Vec::new();
    if want("consume") || want("join") {
        if written.is_empty() {
            // Without `produce`: write the librdkafka-shaped topics with ours.
            let producer = bench.kafka.producer()?;
            for &(size, count) in &sizes {
                let t = bench.topic(&format!("{size}-batch"));
                bench.create(&t)?;
                bench.produce_batch(&*producer, &t, count, &value_of(size))?;
                written.push((size, count, String::new(), t));
            }
        }
        // Warm-up: one join each on a small topic.
        let warm = bench.topic("warm-consume");
        bench.create(&warm)?;
        bench.produce_batch(&*bench.kafka.producer()?, &warm, 10_000, &value_of(100))?;
        bench.consume(&warm, 10_000)?;
        bench.rdk_consume(&warm, 10_000)?;
        for (size, count, t_rdk, t_batch) in &written {
            let name = size_name(*size);
            for (topic, writer) in [(t_rdk, "librdkafka"), (t_batch, "our send_batch")] {
                if topic.is_empty() {
                    continue;
                }
                println!("consume {name} x {count} (written by {writer}):");
                let (mut ours, mut rdk) = (Vec::new(), Vec::new());
                for _ in 0..repeat {
                    let o = bench.consume(topic, *count)?;
                    println!("  ours:       {}", o.show());
                    if o.rate.records != *count as u64 {
                        println!(
                            "  note: ours read {} records, {count} expected",
                            o.rate.records
                        );
                    }
                    ours.push(o);
                    if let Some(r) = bench.rdk_consume(topic, *count)? {
                        println!("  librdkafka: {}", r.show());
                        rdk.push(r);
                    }
                }
                let by_rate = |r: &ConsumeRun| r.rate.per_sec();
                let by_assign = |r: &ConsumeRun| r.from_assign.per_sec();
                let (o, r) = (
                    median(&ours, by_rate).map(|r| r.rate),
                    median(&rdk, by_rate).map(|r| r.rate),
                );
                cpu_rows.push((
                    format!("consume {name} (written by {writer})"),
                    cpu(o),
                    cpu(r),
                ));
                rows.push(Row::Rate(
                    format!("consume {name} (written by {writer}), first record -> last"),
                    o,
                    r,
                ));
                rows.push(Row::Rate(
                    format!("consume {name} (written by {writer}), assigned -> last"),
                    median(&ours, by_assign).map(|r| r.from_assign),
                    median(&rdk, by_assign).map(|r| r.from_assign),
                ));
                joins.extend(ours);
                rdk_joins.extend(rdk);
            }
        }
    }
    if want("join") && !joins.is_empty() {
        let n = joins.len();
        let secs = |v: &[ConsumeRun], f: fn(&ConsumeRun) -> f64| median(v, f).map(|r| f(&r));
        rows.push(Row::Secs(
            format!("new member: start -> assigned (median of {n})"),
            secs(&joins, |r| r.join),
            secs(&rdk_joins, |r| r.join),
        ));
        rows.push(Row::Secs(
            format!("new member: start -> first record (median of {n})"),
            secs(&joins, |r| r.first),
            secs(&rdk_joins, |r| r.first),
        ));
    }

    print_table(&rows, bench.session, repeat);
    if !cpu_rows.is_empty() {
        println!();
        println!(
            "CPU per record, microseconds: the client process (all threads; librdkafka's \
             includes the Python loop) and the broker serving it; ratio = librdkafka/ours \
             (> 1: ours uses less)."
        );
        println!();
        println!(
            "| measurement | ours client | librdkafka client | ratio | broker for ours \
             | broker for librdkafka | ratio |"
        );
        println!("|---|---|---|---|---|---|---|");
        let show = |x: Option<f64>| match x {
            Some(us) if us.is_finite() => format!("{us:.2}"),
            _ => "-".into(),
        };
        let ratio = |o: Option<f64>, r: Option<f64>| match (o, r) {
            (Some(o), Some(r)) if o > 0.0 && r.is_finite() => format!("{:.2}x", r / o),
            _ => "-".into(),
        };
        for (what, ours, rdk) in &cpu_rows {
            let (oc, ob) = (ours.map(|x| x.0), ours.map(|x| x.1));
            let (rc, rb) = (rdk.map(|x| x.0), rdk.map(|x| x.1));
            println!(
                "| {what} | {} | {} | {} | {} | {} | {} |",
                show(oc),
                show(rc),
                ratio(oc, rc),
                show(ob),
                show(rb),
                ratio(ob, rb)
            );
        }
    }
    Ok(())
}

/// What a `retrycost` variant puts in each record's headers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Hdrs {
    /// None at all.
    Zero,
    /// The one 16-byte `trace` header of the other rows.
    One,
    /// The seven headers a worker writes on a retry (names from
    /// src/headers.rs, values as a first retry has them).
    Retry7,
}

/// One `retrycost` variant: how the records look and how they are sent.
#[derive(Debug, Clone, Copy)]
struct CostVariant {
    label: &'static str,
    headers: Hdrs,
    /// Value bytes (100 B, or more to match the retry headers' bytes).
    value: usize,
    chunk: usize,
    compression: kafka_retry::Compression,
    idempotence: bool,
}

/// One `retrycost` measurement: produce, then a group member fetches it
/// all back.
#[derive(Debug, Clone, Copy)]
struct CostRun {
    produce: Rate,
    /// Assignment to last record (the join, during which the broker idles
    /// in fetch waits, left out of the broker's CPU).
    fetch: Rate,
}

/// The seven retry headers of a first retry of record `i` read from
/// `origin` (the values' widths match a real run: a 13-digit clock).
fn retry_headers(origin: &str, i: usize) -> Vec<Header> {
    let now = 1_764_000_000_000i64 + i as i64;
    vec![
        Header::new(kafka_retry::ORIGIN_TOPIC, origin.to_string()),
        Header::new(kafka_retry::ORIGIN_PARTITION, (i % 6).to_string()),
        Header::new(kafka_retry::ORIGIN_OFFSET, (i / 6).to_string()),
        Header::new(kafka_retry::FIRST_RECEIVED_AT, now.to_string()),
        Header::new(kafka_retry::ENQUEUED_AT, (now + 3).to_string()),
        Header::new(kafka_retry::ATTEMPTS, "1"),
        Header::new(kafka_retry::REASON, "bench"),
    ]
}

/// Where the broker's CPU per retried record goes (issue 13 §1): the same
/// records produced with no header, one, or the seven retry headers, in
/// chunks as large as the pre-load's or as the engine's retry writes,
/// compressed or not, idempotent or not; then fetched back by a group
/// member. Prints broker and client CPU per record for both directions.
fn retry_cost(bench: &Bench, bootstrap: &str) -> Result<(), BoxError> {
    use kafka_retry::Compression;
    let n = env_usize("BENCH_RETRYCOST_N", 100_000).max(1);
    // The engine's retry writes go out 400-545 records per send_batch
    // (across 6 partitions); the pre-load's in chunks of 10,000.
    let small = env_usize("BENCH_RETRYCOST_CHUNK", 500).max(1);
    let origin = "bench-engine-1764000000-17"; // as long as the engine bench's topics
    let header_bytes: usize = retry_headers(origin, 123_456)
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + 2)
        .sum();
    let v = |label, headers, value, chunk, compression, idempotence| CostVariant {
        label,
        headers,
        value,
        chunk,
        compression,
        idempotence,
    };
    let variants = [
        v(
            "1 header, chunk 10000",
            Hdrs::One,
            100,
            10_000,
            Compression::None,
            true,
        ),
        v(
            "no header, chunk 10000",
            Hdrs::Zero,
            100,
            10_000,
            Compression::None,
            true,
        ),
        v(
            "7 retry headers, chunk 10000",
            Hdrs::Retry7,
            100,
            10_000,
            Compression::None,
            true,
        ),
        v(
            "no header, value +retry header bytes, chunk 10000",
            Hdrs::Zero,
            100 + header_bytes,
            10_000,
            Compression::None,
            true,
        ),
        v(
            "1 header, chunk small",
            Hdrs::One,
            100,
            small,
            Compression::None,
            true,
        ),
        v(
            "7 retry headers, chunk small",
            Hdrs::Retry7,
            100,
            small,
            Compression::None,
            true,
        ),
        v(
            "7 retry headers, chunk small, idempotence off",
            Hdrs::Retry7,
            100,
            small,
            Compression::None,
            false,
        ),
        v(
            "7 retry headers, chunk small, lz4",
            Hdrs::Retry7,
            100,
            small,
            Compression::Lz4,
            true,
        ),
        v(
            "7 retry headers, chunk 10000, lz4",
            Hdrs::Retry7,
            100,
            10_000,
            Compression::Lz4,
            true,
        ),
        v(
            "no header, value +retry header bytes, chunk small",
            Hdrs::Zero,
            100 + header_bytes,
            small,
            Compression::None,
            true,
        ),
        v(
            "1 header, chunk small, one partition",
            Hdrs::One,
            100,
            small,
            Compression::None,
            true,
        ),
        v(
            "1 header, chunk 2000",
            Hdrs::One,
            100,
            2_000,
            Compression::None,
            true,
        ),
    ];
    let (config, _) = bench_config(bootstrap)?;
    let mut transports: Vec<((Compression, bool), KafkaTransport)> = Vec::new();
    for var in &variants {
        let k = (var.compression, var.idempotence);
        if transports.iter().any(|(t, _)| *t == k) {
            continue;
        }
        let t = KafkaTransport::connect(
            config
                .clone()
                .acks(kafka_retry::Acks::All)
                .linger(LINGER)
                .batch_size(BATCH_SIZE)
                .compression(k.0)
                .idempotence(k.1),
        )?;
        transports.push((k, t));
    }
    let producers: Vec<Arc<dyn Producer>> = transports
        .iter()
        .map(|(_, t)| t.producer())
        .collect::<Result<_, _>>()?;
    let producer_of = |var: &CostVariant| {
        let i = transports
            .iter()
            .position(|(k, _)| *k == (var.compression, var.idempotence))
            .unwrap_or(0);
        &producers[i]
    };
    // Warm-up: every producer once, one fetch.
    let warm = bench.topic("warm-cost");
    bench.create(&warm)?;
    for p in &producers {
        bench.produce_batch(&**p, &warm, 10_000, &value_of(100))?;
    }
    cost_fetch(bench, &warm, 10_000 * producers.len())?;

    println!(
        "retrycost: {n} records per run, 10,000 keys, retry headers {header_bytes} B on the \
         wire (7 headers), small chunk {small}"
    );
    let mut runs: Vec<Vec<CostRun>> = vec![Vec::new(); variants.len()];
    for rep in 0..bench.repeat {
        for (k, var) in variants.iter().enumerate() {
            let topic = bench.topic(&format!("cost-{k}-{rep}"));
            bench.create(&topic)?;
            let value = value_of(var.value);
            let meter = bench.meter();
            bench::send_chunked(
                &**producer_of(var),
                (0..n).map(|i| {
                    let mut r = OutRecord::new(&topic);
                    r.key = Some(bench.keys[i % bench.keys.len()].clone());
                    if var.label.ends_with("one partition") {
                        // One partition batch per request instead of six.
                        r.partitioning = kafka_retry::Partitioning::Explicit(0);
                    }
                    r.value = Some(value.clone());
                    r.headers = match var.headers {
                        Hdrs::Zero => Vec::new(),
                        Hdrs::One => {
                            vec![Header::new(HEADER_KEY, Bytes::from_static(HEADER_VALUE))]
                        }
                        Hdrs::Retry7 => retry_headers(origin, i),
                    };
                    r
                }),
                var.chunk,
                &format!("send_batch to {topic}"),
            )?;
            let produce = meter.rate(bench, n, &value, 0.0);
            let fetch = cost_fetch(bench, &topic, n)?;
            println!(
                "retrycost {}: produce {}; fetch {}",
                var.label,
                produce.show_cpu(),
                fetch.show_cpu()
            );
            runs[k].push(CostRun { produce, fetch });
        }
    }
    println!();
    println!(
        "Retry-path cost on the broker: {n} keyed records per run, 6 partitions, acks=all, \
         linger {LINGER:?}; CPU per record in µs; fetch = a new group member from its \
         assignment to the last record; median of {} (by produce broker CPU).",
        bench.repeat
    );
    println!();
    println!(
        "| variant | produce rec/s | produce broker | produce client | fetch broker | fetch client |"
    );
    println!("|---|---|---|---|---|---|");
    for (var, rs) in variants.iter().zip(&runs) {
        let Some(r) = median(rs, |r| r.produce.broker_cpu_per_record_us()) else {
            continue;
        };
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            var.label.replace("small", &small.to_string()),
            human(r.produce.per_sec()),
            r.produce.broker_cpu_per_record_us(),
            r.produce.cpu_per_record_us(),
            r.fetch.broker_cpu_per_record_us(),
            r.fetch.cpu_per_record_us(),
        );
    }
    println!();
    Ok(())
}

/// A new group member reads `count` records of `topic`; CPU (ours and the
/// broker's) and time from its assignment to the last record.
fn cost_fetch(bench: &Bench, topic: &str, count: usize) -> Result<Rate, BoxError> {
    let mut config = ConsumerConfig::new(bench.topic(&format!("gc{}", unique())), [topic]);
    config.session_timeout = Duration::from_millis(2000);
    config.max_poll_records = bench.poll_records;
    let mut consumer = bench.kafka.consumer(config)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut start: Option<(Instant, f64, f64)> = None;
    let (mut got, mut bytes) = (0usize, 0u64);
    while got < count {
        if Instant::now() > deadline {
            return Err(format!("fetch {topic}: {got} of {count} records after 120 s").into());
        }
        match consumer.poll(Duration::from_millis(200))? {
            ConsumerEvent::Assigned(_) => {
                start.get_or_insert_with(|| (Instant::now(), process_cpu(), bench.broker_cpu()));
            }
            ConsumerEvent::Records(records) => {
                got += records.len();
                bytes += records
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
                    .sum::<u64>();
            }
            ev => return Err(format!("fetch {topic}: unexpected {ev:?}").into()),
        }
    }
    let (t0, cpu0, broker0) = start.ok_or("fetch: records before the assignment")?;
    let rate = Rate {
        records: got as u64,
        value_bytes: bytes,
        seconds: t0.elapsed().as_secs_f64(),
        cpu: process_cpu() - cpu0,
        broker_cpu: bench.broker_cpu() - broker0,
    };
    let _ = consumer.close();
    Ok(rate)
}

/// Our `send_batch` with the idempotent producer (the default) and without
/// it, same broker, interleaved repetitions; prints each rate and the
/// median ratio on/off.
fn idempotence_on_off(
    bench: &Bench,
    bootstrap: &str,
    sizes: &[(usize, usize)],
) -> Result<(), BoxError> {
    let (config, _) = bench_config(bootstrap)?;
    let off = KafkaTransport::connect(
        config
            .acks(kafka_retry::Acks::All)
            .linger(LINGER)
            .batch_size(BATCH_SIZE)
            .idempotence(false),
    )?;
    let p_on = bench.kafka.producer()?;
    let p_off = off.producer()?;
    let warm = bench.topic("warm-idem");
    bench.create(&warm)?;
    let warm_value = value_of(100);
    bench.produce_batch(&*p_on, &warm, 20_000, &warm_value)?;
    bench.produce_batch(&*p_off, &warm, 20_000, &warm_value)?;
    for &(size, count) in sizes {
        let value = value_of(size);
        let name = size_name(size);
        let (mut on, mut offs) = (Vec::new(), Vec::new());
        for rep in 0..bench.repeat.max(3) {
            for (idem, producer) in [(true, &p_on), (false, &p_off)] {
                let t = bench.topic(&format!("{size}-idem-{idem}-{rep}"));
                bench.create(&t)?;
                let r = bench.produce_batch(&**producer, &t, count, &value)?;
                let mode = if idem { "on" } else { "off" };
                println!(
                    "produce {name} x {count}: idempotence {mode}: {}",
                    r.show_cpu()
                );
                if idem {
                    on.push(r)
                } else {
                    offs.push(r)
                }
            }
        }
        let m = |v: &[Rate]| median(v, Rate::per_sec).map_or(f64::NAN, |r| r.per_sec());
        let (a, b) = (m(&on), m(&offs));
        println!(
            "produce {name}: idempotence on {} rec/s, off {} rec/s (medians of {}): on/off = {:.3}",
            human(a),
            human(b),
            on.len(),
            a / b
        );
    }
    Ok(())
}

fn print_table(rows: &[Row], session: Duration, repeat: usize) {
    println!();
    println!(
        "Through one Tansu broker, 6 partitions, acks=all; ratio > 1 means ours is faster \
         (ours/librdkafka for rates, librdkafka/ours for times); session timeout {:?} for both; \
         {}.",
        session,
        if repeat > 1 {
            format!("median of {repeat} runs")
        } else {
            "one run each".to_string()
        }
    );
    println!();
    println!("| measurement | ours | librdkafka | ratio |");
    println!("|---|---|---|---|");
    for row in rows {
        match row {
            Row::Rate(what, ours, rdk) => {
                let ratio = match (ours, rdk) {
                    (Some(o), Some(r)) => format!("{:.2}x", o.per_sec() / r.per_sec()),
                    _ => "-".into(),
                };
                println!(
                    "| {what} | {} | {} | {ratio} |",
                    ours.map_or("-".into(), |r| r.show()),
                    rdk.map_or("-".into(), |r| r.show())
                );
            }
            Row::Secs(what, ours, rdk) => {
                let ratio = match (ours, rdk) {
                    (Some(o), Some(r)) => format!("{:.2}x", r / o),
                    _ => "-".into(),
                };
                let show = |x: &Option<f64>| x.map_or("-".into(), |s| format!("{s:.2} s"));
                println!("| {what} | {} | {} | {ratio} |", show(ours), show(rdk));
            }
        }
    }
}

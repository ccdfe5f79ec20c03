//! kafka-retry next to rust-rdkafka (bundled librdkafka), through the same
//! broker, in one run: the yardstick of issue 13. Prints numbers; it is not
//! a test and never fails on slow results.
//!
//! Run: `scripts/bench-rdkafka [produce] [consume] [engine]` (installs cmake
//! if missing, builds this crate in release mode, starts a throw-away Tansu
//! with scripts/test-broker and sets `BENCH_BROKER_PID` so the broker's CPU
//! per record is reported). `KAFKA_BOOTSTRAP` names the broker.
//!
//! Every measurement is repeated `BENCH_REPEAT` times (3 by default), the
//! two clients alternating (ours then rdkafka in even rounds, rdkafka then
//! ours in odd ones, so neither always runs on a broker the other just
//! warmed), and the table shows the median round of each by rate. Both
//! clients live in this one process: each one's CPU is the whole process's
//! (all threads, `/proc/self/task/*/schedstat`) while it runs, so the other
//! client's idle threads count too (next to nothing: both sit idle in a
//! poll).
//!
//! Settings shared by both sides: acks=all, linger 5 ms, batch size 1 MiB,
//! 5 requests in flight per connection, no compression, Java's murmur2
//! partitioner (librdkafka `partitioner=murmur2_random`), **idempotence
//! on for both** (ours by default, as the Java client's since 3.0; rdkafka
//! with `enable.idempotence=true`), 6 partitions, keys `key-00042` (10,000
//! distinct). Knobs: `BENCH_N_SMALL` (200000 records of 100 B),
//! `BENCH_N_LARGE` (50000 of 1 KiB), `BENCH_CHUNK` (10000 per `send_batch`),
//! `BENCH_ASYNC_WINDOW` (100000 unacknowledged `send_async`: the limit
//! librdkafka's `queue.buffering.max.messages` puts on rdkafka, 100000 by
//! default; with 10000 ours keeps less than one 1 MiB batch of 100-byte
//! records in flight),
//! `BENCH_ENGINE_N0` (1000000), `BENCH_ENGINE_N10` (1000000: fewer measure
//! the retry interval more than the throughput),
//! `BENCH_ENGINE_WORKERS` (4), `BENCH_ENGINE_RETRY_MS` (100),
//! `BENCH_SESSION_MS` (2000, every group member on both sides),
//! `BENCH_REPEAT` (3).
//!
//! - `produce`: keyed records with one 16-byte header, 100 B and 1 KiB
//!   values. Ours: `send_batch` in chunks from one thread, and `send_async`
//!   from one thread with a window of unacknowledged writes; rdkafka:
//!   `BaseProducer::send` + `poll(0)` per record (on `QueueFull`, poll 5 ms
//!   and send again), then `flush`; every delivery report must be Ok.
//!   Records are built inside the timed loop on both sides.
//! - `consume`: a new group member (earliest reset) reads a topic written
//!   beforehand by our `send_batch` until it has every record; rate from
//!   the first record to the last (the join left out), CPU over the whole
//!   life of the member. Ours: `Consumer::poll` (`max_poll_records` 1000);
//!   rdkafka: `BaseConsumer::poll` per message, each value touched.
//! - `engine`: see [`engine`]: our whole engine with a no-op handler (0%
//!   and 10% retries) next to a plain rdkafka loop doing the same work.

#[path = "../../../examples/shared/bench.rs"]
mod bench;
mod engine;
mod ours;
mod peer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench::{human, median_by, process_cpu, BoxError};
use bytes::Bytes;
use kafka_retry::transport::Transport;
use kafka_retry::{KafkaConfig, KafkaTransport};

pub const PARTITIONS: i32 = 6;
pub const KEYS: usize = 10_000;
pub const HEADER_KEY: &str = "trace";
pub const HEADER_VALUE: &[u8] = b"0123456789abcdef";
pub const LINGER: Duration = Duration::from_millis(5);
pub const BATCH_SIZE: usize = 1024 * 1024;
pub const IN_FLIGHT: usize = 5;

/// One measured run: records, wall time, this process's and the broker's CPU.
#[derive(Debug, Clone, Copy)]
pub struct Meas {
    pub records: u64,
    pub secs: f64,
    pub cpu: f64,
    pub broker: f64,
}

impl Meas {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.secs
    }
    pub fn cpu_us(&self) -> f64 {
        self.cpu * 1e6 / self.records as f64
    }
    pub fn broker_us(&self) -> f64 {
        self.broker * 1e6 / self.records as f64
    }
    pub fn show(&self) -> String {
        format!(
            "{} rec/s, CPU/record {:.2} us client, {:.2} us broker",
            human(self.rate()),
            self.cpu_us(),
            self.broker_us()
        )
    }
}

/// Wall clock and CPU (this process, the broker) at the start of a run.
pub struct Meter {
    start: Instant,
    cpu: f64,
    broker: f64,
}

/// What every side needs: the broker, its pid, names, the shared workload.
pub struct Setup {
    pub bootstrap: String,
    pub broker_pid: Option<String>,
    pub run_id: String,
    pub ours: KafkaTransport,
    pub keys: Vec<Bytes>,
    pub session: Duration,
    pub chunk: usize,
    pub async_window: usize,
    pub workers: usize,
    pub retry_interval: Duration,
    seq: AtomicU64,
}

impl Setup {
    pub fn meter(&self) -> Meter {
        Meter {
            start: Instant::now(),
            cpu: process_cpu(),
            broker: self.broker_cpu(),
        }
    }

    /// The run since `m` started, over `records` records, ending now.
    pub fn finish(&self, m: &Meter, records: u64) -> Meas {
        self.finish_from(m, m.start, records)
    }

    /// As [`Setup::finish`] with the wall clock started at `from` (the
    /// first record, the assignment) while CPU counts from the meter's start.
    pub fn finish_from(&self, m: &Meter, from: Instant, records: u64) -> Meas {
        Meas {
            records,
            secs: from.elapsed().as_secs_f64(),
            cpu: process_cpu() - m.cpu,
            broker: self.broker_cpu() - m.broker,
        }
    }

    pub fn broker_cpu(&self) -> f64 {
        bench::broker_cpu(self.broker_pid.as_deref())
    }

    /// A fresh name (topics, groups) for this run.
    pub fn name(&self, what: &str) -> String {
        let k = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("yard-{}-{what}-{k}", self.run_id)
    }

    pub fn create(&self, topic: &str) -> Result<(), BoxError> {
        bench::create_topic(&self.ours, topic, PARTITIONS)
    }
}

/// `size` bytes, the same on both sides.
pub fn value_of(size: usize) -> Bytes {
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

/// One table row: its name and every round's measurement on each side.
struct Row {
    what: String,
    ours: Vec<Meas>,
    rdk: Vec<Meas>,
}

/// Runs `ours` and `rdk` in the order of round `round` (alternating).
fn alternate(
    round: usize,
    ours: &mut dyn FnMut() -> Result<(), BoxError>,
    rdk: &mut dyn FnMut() -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    if round.is_multiple_of(2) {
        ours()?;
        rdk()
    } else {
        rdk()?;
        ours()
    }
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> Result<(), BoxError> {
    let sections = bench::Sections::from_args();
    let env = |k: &str, d: u64| bench::env_u64(k, d);
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP")
        .map_err(|_| "KAFKA_BOOTSTRAP is not set: run through scripts/bench-rdkafka")?;
    let ours = KafkaTransport::connect(
        KafkaConfig::new(&bootstrap)
            .acks(kafka_retry::Acks::All)
            .linger(LINGER)
            .batch_size(BATCH_SIZE)
            .max_in_flight(IN_FLIGHT)
            .idempotence(true),
    )?;
    let setup = Setup {
        bootstrap: bootstrap.clone(),
        broker_pid: bench::broker_pid_from_env(),
        run_id: bench::run_id(),
        ours,
        keys: (0..KEYS)
            .map(|k| Bytes::from(format!("key-{k:05}")))
            .collect(),
        session: Duration::from_millis(env("BENCH_SESSION_MS", 2000)),
        chunk: env("BENCH_CHUNK", 10_000).max(1) as usize,
        async_window: env("BENCH_ASYNC_WINDOW", 100_000).max(1) as usize,
        workers: env("BENCH_ENGINE_WORKERS", 4).max(1) as usize,
        retry_interval: Duration::from_millis(env("BENCH_ENGINE_RETRY_MS", 100).max(1)),
        seq: AtomicU64::new(0),
    };
    let repeat = env("BENCH_REPEAT", 3).max(1) as usize;
    let sizes = [
        (100usize, env("BENCH_N_SMALL", 200_000).max(1)),
        (1024usize, env("BENCH_N_LARGE", 50_000).max(1)),
    ];
    let (n0, n10) = (
        env("BENCH_ENGINE_N0", 1_000_000).max(1),
        env("BENCH_ENGINE_N10", 1_000_000).max(10),
    );
    let (rdk_version, rdk_name) = rdkafka::util::get_rdkafka_version();
    println!(
        "bench-rdkafka: broker {bootstrap} ({}), {} cores, load average {} at the start; \
         librdkafka {rdk_name} (0x{rdk_version:08x}) through rust-rdkafka 0.39; {PARTITIONS} \
         partitions, {KEYS} keys, acks=all, linger {LINGER:?}, batch size {BATCH_SIZE} B, \
         {IN_FLIGHT} in flight, idempotence on for both, session timeout {:?}; {repeat} \
         alternating rounds",
        std::env::var("KAFKA_RETRY_BROKER").unwrap_or_else(|_| "?".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        uptime(),
        setup.session,
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut loads = vec![format!("start {}", uptime())];

    if sections.want("produce") {
        let producer = setup.ours.producer()?;
        let rdk = peer::producer(&setup)?;
        // Warm-up of both: connections, metadata, broker-side topic state.
        let warm = setup.name("warm");
        setup.create(&warm)?;
        ours::produce_batch(&setup, &*producer, &warm, 20_000, &value_of(100))?;
        ours::produce_async(&setup, &*producer, &warm, 20_000, &value_of(100))?;
        peer::produce(&setup, &rdk, &warm, 20_000, &value_of(100))?;
        for &(size, n) in &sizes {
            let value = value_of(size);
            let name = size_name(size);
            let (mut batch, mut asyn, mut peer_runs) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..repeat {
                alternate(
                    round,
                    &mut || {
                        let t = setup.name("batch");
                        setup.create(&t)?;
                        let m = ours::produce_batch(&setup, &*producer, &t, n, &value)?;
                        println!("produce {name} x {n}: ours send_batch: {}", m.show());
                        batch.push(m);
                        let t = setup.name("async");
                        setup.create(&t)?;
                        let m = ours::produce_async(&setup, &*producer, &t, n, &value)?;
                        println!("produce {name} x {n}: ours send_async: {}", m.show());
                        asyn.push(m);
                        Ok(())
                    },
                    &mut || {
                        let t = setup.name("rdk");
                        setup.create(&t)?;
                        let m = peer::produce(&setup, &rdk, &t, n, &value)?;
                        println!("produce {name} x {n}: rdkafka BaseProducer: {}", m.show());
                        peer_runs.push(m);
                        Ok(())
                    },
                )?;
            }
            rows.push(Row {
                what: format!(
                    "produce {name}: ours send_batch({}) vs BaseProducer",
                    setup.chunk
                ),
                ours: batch,
                rdk: peer_runs.clone(),
            });
            rows.push(Row {
                what: format!(
                    "produce {name}: ours send_async (window {}) vs BaseProducer",
                    setup.async_window
                ),
                ours: asyn,
                rdk: peer_runs,
            });
        }
        loads.push(format!("after produce {}", uptime()));
    }

    if sections.want("consume") {
        let producer = setup.ours.producer()?;
        let warm = setup.name("warm-consume");
        setup.create(&warm)?;
        ours::produce_batch(&setup, &*producer, &warm, 10_000, &value_of(100))?;
        ours::consume(&setup, &warm, 10_000)?;
        peer::consume(&setup, &warm, 10_000)?;
        for &(size, n) in &sizes {
            let name = size_name(size);
            let t = setup.name("consume");
            setup.create(&t)?;
            ours::produce_batch(&setup, &*producer, &t, n, &value_of(size))?;
            let (mut o, mut r, mut oa, mut ra) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for round in 0..repeat {
                alternate(
                    round,
                    &mut || {
                        let (m, a) = ours::consume(&setup, &t, n)?;
                        println!(
                            "consume {name} x {n}: ours: {}; from the assignment {} rec/s",
                            m.show(),
                            human(a.rate())
                        );
                        o.push(m);
                        oa.push(a);
                        Ok(())
                    },
                    &mut || {
                        let (m, a) = peer::consume(&setup, &t, n)?;
                        println!(
                            "consume {name} x {n}: rdkafka BaseConsumer: {}; from the \
                             assignment {} rec/s",
                            m.show(),
                            human(a.rate())
                        );
                        r.push(m);
                        ra.push(a);
                        Ok(())
                    },
                )?;
            }
            rows.push(Row {
                what: format!("consume {name}, group member, first record -> last"),
                ours: o,
                rdk: r,
            });
            // Ours reads ahead (one Fetch may bring most of the topic before
            // the first record is handed out), so also from the assignment.
            rows.push(Row {
                what: format!("consume {name}, group member, assigned -> last"),
                ours: oa,
                rdk: ra,
            });
        }
        loads.push(format!("after consume {}", uptime()));
    }

    if sections.want("engine") {
        let producer = setup.ours.producer()?;
        // Warm-up of both paths.
        engine::ours(&setup, &*producer, 10_000, false)?;
        engine::peer(&setup, &*producer, 10_000, false)?;
        for (retry, n, label) in [(false, n0, "0% retries"), (true, n10, "10% retries")] {
            let (mut o, mut r) = (Vec::new(), Vec::new());
            for round in 0..repeat {
                alternate(
                    round,
                    &mut || {
                        let run = engine::ours(&setup, &*producer, n, retry)?;
                        println!("engine {label} x {n}: ours: {}", run.show());
                        o.push(run.from_assign);
                        Ok(())
                    },
                    &mut || {
                        let run = engine::peer(&setup, &*producer, n, retry)?;
                        println!("engine {label} x {n}: rdkafka loop: {}", run.show());
                        r.push(run.from_assign);
                        Ok(())
                    },
                )?;
            }
            rows.push(Row {
                what: format!(
                    "engine {label}, no-op handler, from the assignment (ours: Engine, \
                     {} workers; rdkafka: {})",
                    setup.workers,
                    if retry {
                        "consumer loop + retry topic + relay thread"
                    } else {
                        "consumer loop"
                    }
                ),
                ours: o,
                rdk: r,
            });
        }
        loads.push(format!("after engine {}", uptime()));
    }

    print_table(&rows, repeat, &loads);
    Ok(())
}

fn print_table(rows: &[Row], repeat: usize, loads: &[String]) {
    println!();
    println!(
        "kafka-retry / rust-rdkafka through one Tansu broker; median round of {repeat} \
         (by rate), clients alternating; ratio = ours / rdkafka (rate: > 1 ours faster; \
         CPU: < 1 ours cheaper). Load averages (1, 5, 15 min): {}.",
        loads.join("; ")
    );
    println!();
    println!(
        "| measurement | ours rec/s | rdkafka rec/s | ratio | ours client us/rec \
         | rdkafka client us/rec | ratio | broker us/rec for ours | for rdkafka | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let ratio = |o: f64, r: f64| {
        if o.is_finite() && r.is_finite() && r > 0.0 {
            format!("{:.2}x", o / r)
        } else {
            "-".into()
        }
    };
    let us = |x: f64| {
        if x.is_finite() {
            format!("{x:.2}")
        } else {
            "-".into()
        }
    };
    for row in rows {
        let (Some(o), Some(r)) = (
            median_by(&row.ours, Meas::rate),
            median_by(&row.rdk, Meas::rate),
        ) else {
            continue;
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.what,
            human(o.rate()),
            human(r.rate()),
            ratio(o.rate(), r.rate()),
            us(o.cpu_us()),
            us(r.cpu_us()),
            ratio(o.cpu_us(), r.cpu_us()),
            us(o.broker_us()),
            us(r.broker_us()),
            ratio(o.broker_us(), r.broker_us()),
        );
    }
}

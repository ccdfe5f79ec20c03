//! Key order benchmark on the memory broker (issue 11 §2). Prints numbers;
//! it is not a test.
//!
//! Run: `cargo run --release --example bench_key_order`. Environment:
//! `BENCH_N` (default 400,000) records per run, `BENCH_REPEAT` (default 2)
//! runs per row.
//!
//! Main-path throughput, private redelivery, 10,000 keys, 8 partitions,
//! 4 workers, no-op handler: `KeyOrder::Any` next to `KeyOrder::Kept` with
//! 0%, 1% and 10% of the keys blocked. A key is blocked by one record that
//! always fails with a ten-minute interval, parked before the clock starts;
//! every later record of a blocked key is then held (written to the retry
//! topic) instead of handled. Records/second from the first produce to the
//! moment every record is done or held.

use std::time::{Duration, Instant};

use kafka_retry::transport::Transport;
use kafka_retry::{
    Engine, KeyOrder, MemoryBroker, OutRecord, Outcome, Record, Redelivery, RetryPolicy,
};

const KEYS: u64 = 10_000;
const PARTITIONS: i32 = 8;

type BoxError = Box<dyn std::error::Error>;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace(['_', ','], "").parse().ok())
        .unwrap_or(default)
}

fn load() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().next().unwrap_or("?").to_string()
}

/// One run: records/second, and how many records were held.
fn run(order: KeyOrder, blocked_percent: u64, n: u64) -> Result<(f64, u64), BoxError> {
    let broker = MemoryBroker::new();
    broker.create_topic("t", PARTITIONS)?;
    let engine = Engine::builder(broker.clone())
        .group_id("bench")
        .topics(["t"])
        .workers(4)
        .redelivery(Redelivery::Private)
        .key_order(order)
        .policy(RetryPolicy::new(
            Duration::from_secs(600),
            Duration::from_secs(3600),
        ))
        .handler(|r: &Record| {
            if r.value.as_deref() == Some(b"poison") {
                Outcome::retry("blocks its key")
            } else {
                Outcome::Done
            }
        })
        .build()?;
    let blocked = KEYS * blocked_percent / 100;
    for k in 0..blocked {
        broker.produce(
            OutRecord::new("t")
                .key(format!("key-{k:06}"))
                .value("poison"),
        )?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine.stats().retried < blocked {
        if Instant::now() > deadline {
            return Err(format!("blockers not parked: {:?}", engine.stats()).into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let records: Vec<OutRecord> = (0..n)
        .map(|i| {
            OutRecord::new("t")
                .key(format!("key-{:06}", i % KEYS))
                .value(vec![0u8; 100])
        })
        .collect();
    let start = Instant::now();
    for r in broker.producer()?.send_batch(records) {
        r?;
    }
    let deadline = start + Duration::from_secs(600);
    loop {
        let s = engine.stats();
        if s.done + s.held >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("not finished: {s:?}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    let held = engine.stats().held;
    engine.shutdown(Duration::from_secs(30))?;
    Ok((n as f64 / secs, held))
}

fn main() -> Result<(), BoxError> {
    let n = env_u64("BENCH_N", 400_000);
    let repeat = env_u64("BENCH_REPEAT", 2).max(1);
    println!(
        "bench_key_order: {} cores, memory broker, {KEYS} keys, {PARTITIONS} partitions, 4 workers, \
         private redelivery, {n} records per run, load average {} at start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );
    for (name, order, pct) in [
        ("KeyOrder::Any", KeyOrder::Any, 0),
        ("KeyOrder::Kept, 0% blocked", KeyOrder::Kept, 0),
        ("KeyOrder::Kept, 1% blocked", KeyOrder::Kept, 1),
        ("KeyOrder::Kept, 10% blocked", KeyOrder::Kept, 10),
    ] {
        let mut rates = Vec::new();
        let mut held = 0;
        for _ in 0..repeat {
            let (rate, h) = run(order, pct, n)?;
            rates.push(rate);
            held = h;
        }
        let list: Vec<String> = rates.iter().map(|r| format!("{:.0}", r / 1000.0)).collect();
        println!(
            "{name:<28} {} k records/s (runs), {held} held, load average {}",
            list.join(" / "),
            load()
        );
    }
    Ok(())
}

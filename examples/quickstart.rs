//! The source article's case on the embedded memory broker, no Kafka needed:
//! an `Update` arrives before the `Create` it depends on, is parked on the
//! retry topic, relayed back after the retry interval and then handled; an
//! `Update` whose `Create` never comes is dead-lettered as expired.
//!
//! Run: `cargo run --example quickstart` (`RUST_LOG=info` for engine logs).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_retry::{Engine, MemoryBroker, OutRecord, Outcome, Record, RetryPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let start = Instant::now();
    let t = move || format!("[{:>5} ms]", start.elapsed().as_millis());

    let broker = MemoryBroker::new();
    broker.create_topic("orders", 3)?;

    let created: Arc<Mutex<HashSet<String>>> = Arc::default();
    let finished: Arc<Mutex<Vec<String>>> = Arc::default();
    let handler = {
        let (created, finished) = (created.clone(), finished.clone());
        move |r: &Record| {
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            let attempts = r
                .header(kafka_retry::ATTEMPTS)
                .and_then(|h| h.value.as_deref())
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| "0".into());
            let outcome = match value.as_str() {
                "Create" => {
                    created.lock().unwrap().insert(key.clone());
                    Outcome::Done
                }
                "Update" if created.lock().unwrap().contains(&key) => Outcome::Done,
                "Update" => Outcome::retry(format!("{key} not created yet")),
                other => Outcome::reject(format!("unknown event {other:?}")),
            };
            println!("{} handle {value:<6} {key:<9} after {attempts} failed attempts -> {outcome:?}", t());
            if outcome == Outcome::Done {
                finished.lock().unwrap().push(format!("{value} {key}"));
            }
            outcome
        }
    };

    let engine = Engine::builder(broker.clone())
        .group_id("quickstart")
        .topics(["orders"])
        .workers(2)
        .handler(handler)
        .policy(RetryPolicy::new(Duration::from_millis(500), Duration::from_millis(1800)))
        .commit_interval(Duration::from_millis(200))
        .build()?;

    // The Update overtakes its Create; order-99 is never created.
    for (key, value) in [("order-1", "Update"), ("order-99", "Update")] {
        broker.produce(OutRecord::new("orders").key(key).value(value))?;
    }
    std::thread::sleep(Duration::from_millis(200));
    broker.produce(OutRecord::new("orders").key("order-1").value("Create"))?;

    // Wait for order-1's update and for order-99's dead letter.
    let deadline = Instant::now() + Duration::from_secs(15);
    let dead = loop {
        let dead: Vec<Record> = (0..3)
            .flat_map(|p| broker.records("quickstart-dlt", p).unwrap_or_default())
            .collect();
        let done = finished.lock().unwrap().iter().any(|f| f == "Update order-1");
        if done && !dead.is_empty() {
            break dead;
        }
        if Instant::now() > deadline {
            return Err("quickstart did not finish in 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for r in &dead {
        let h = |name: &str| {
            r.header(name)
                .and_then(|h| h.value.as_deref())
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        println!(
            "{} dead letter: key {} reason {:?}: {}",
            t(),
            String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()),
            h(kafka_retry::DEAD_REASON),
            h(kafka_retry::REASON)
        );
    }
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5))?;
    println!(
        "{} stats: received {}, done {}, retried {}, relayed {}, dead-lettered {}",
        t(),
        stats.received,
        stats.done,
        stats.retried,
        stats.relayed,
        stats.dead_lettered.total()
    );
    Ok(())
}

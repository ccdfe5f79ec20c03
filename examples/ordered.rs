//! Key order kept across retries, on the memory broker: the article's
//! `Create` / `Update` / `Update` story, where the `Create` of order-1 fails
//! at first (its downstream is down). With `KeyOrder::Kept` both `Update`s
//! are parked behind it and handled after it, in origin order: the second
//! `Update` never overtakes the first. order-2 flows meanwhile.
//!
//! Run: `cargo run --example ordered`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_retry::{
    Engine, KeyOrder, MemoryBroker, OutRecord, Outcome, Record, Redelivery, RetryPolicy,
};

fn text(b: Option<&[u8]>) -> String {
    String::from_utf8_lossy(b.unwrap_or_default()).into_owned()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = MemoryBroker::new();
    broker.create_topic("orders", 2)?;
    let start = Instant::now();
    let creates_tried = Arc::new(AtomicU32::new(0));
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let (tried, log) = (creates_tried.clone(), handled.clone());
    let engine = Engine::builder(broker.clone())
        .group_id("ordered")
        .topics(["orders"])
        .redelivery(Redelivery::Private)
        .key_order(KeyOrder::Kept)
        .policy(RetryPolicy::new(
            Duration::from_millis(300),
            Duration::from_secs(30),
        ))
        .handler(move |r: &Record| {
            let (key, value) = (text(r.key.as_deref()), text(r.value.as_deref()));
            // The first two tries of order-1's Create find the downstream down.
            let outcome = if key == "order-1"
                && value == "Create"
                && tried.fetch_add(1, Ordering::SeqCst) < 2
            {
                Outcome::retry("downstream unavailable")
            } else {
                Outcome::Done
            };
            let held = if r.header(kafka_retry::HELD).is_some() {
                " (was held behind its key)"
            } else {
                ""
            };
            println!(
                "[{:>5} ms] {key} {value:<8} attempt {}{held} -> {outcome:?}",
                start.elapsed().as_millis(),
                r.attempts()
            );
            if outcome == Outcome::Done {
                log.lock().unwrap().push(format!("{key} {value}"));
            }
            outcome
        })
        .build()?;
    for (key, value) in [
        ("order-1", "Create"),
        ("order-1", "Update 1"),
        ("order-2", "Create"),
        ("order-1", "Update 2"),
        ("order-2", "Update 1"),
    ] {
        broker.produce(OutRecord::new("orders").key(key).value(value))?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while handled.lock().unwrap().len() < 5 {
        if Instant::now() > deadline {
            return Err("the scenario did not finish in 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5))?;
    let order_1: Vec<String> = handled
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.starts_with("order-1"))
        .cloned()
        .collect();
    println!("order-1 handled in this order: {order_1:?}");
    println!(
        "stats: retried {}, held {}, redelivered privately {}",
        stats.retried, stats.held, stats.redelivered_private
    );
    if order_1 != ["order-1 Create", "order-1 Update 1", "order-1 Update 2"] {
        return Err("order-1 was handled out of order".into());
    }
    Ok(())
}

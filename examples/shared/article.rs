//! The source article's scenario, shared by the `quickstart` (memory broker)
//! and `kafka` examples: an `Update` arrives before the `Create` it depends
//! on, is parked on the retry topic, relayed back after the retry interval
//! and handled; an `Update` whose `Create` never comes is dead-lettered as
//! expired.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_retry::transport::{ConsumerConfig, ConsumerEvent, Transport};
use kafka_retry::{Engine, KeyOrder, OutRecord, Outcome, Record, Redelivery, RetryPolicy};

type BoxError = Box<dyn std::error::Error>;

/// Runs the scenario on `transport`, with `topic` as the origin topic and
/// `group` as the consumer group and `redelivery` as the mode; prints a
/// timeline.
#[allow(dead_code)] // the kafka example calls run_with
pub fn run(
    transport: Arc<dyn Transport>,
    topic: &str,
    group: &str,
    session_timeout: Duration,
    redelivery: Redelivery,
) -> Result<(), BoxError> {
    run_with(
        transport,
        topic,
        group,
        session_timeout,
        redelivery,
        KeyOrder::Any,
    )
}

/// [`run`] with a key order. With `KeyOrder::Kept` the Update of order-1,
/// ahead of its Create in origin order, holds the Create behind it until the
/// Update is dead-lettered: key order kept means the origin order wins.
#[allow(dead_code)] // only the kafka example passes a key order
pub fn run_with(
    transport: Arc<dyn Transport>,
    topic: &str,
    group: &str,
    session_timeout: Duration,
    redelivery: Redelivery,
    key_order: KeyOrder,
) -> Result<(), BoxError> {
    let kept = key_order == KeyOrder::Kept;
    let start = Instant::now();
    let t = move || format!("[{:>5} ms]", start.elapsed().as_millis());
    transport.create_topic(topic, 3, None)?;

    let created: Arc<Mutex<HashSet<String>>> = Arc::default();
    let finished: Arc<Mutex<Vec<String>>> = Arc::default();
    let handler = {
        let (created, finished) = (created.clone(), finished.clone());
        move |r: &Record| {
            let key = text(r.key.as_deref());
            let value = text(r.value.as_deref());
            let attempts = header(r, kafka_retry::ATTEMPTS).unwrap_or_else(|| "0".into());
            let outcome = match value.as_str() {
                "Create" => {
                    created.lock().unwrap().insert(key.clone());
                    Outcome::Done
                }
                "Update" if created.lock().unwrap().contains(&key) => Outcome::Done,
                "Update" => Outcome::retry(format!("{key} not created yet")),
                other => Outcome::reject(format!("unknown event {other:?}")),
            };
            println!(
                "{} handle {value:<6} {key:<9} after {attempts} failed attempts -> {outcome:?}",
                t()
            );
            if outcome == Outcome::Done {
                finished.lock().unwrap().push(format!("{value} {key}"));
            }
            outcome
        }
    };

    let engine = Engine::builder(transport.clone())
        .group_id(group)
        .topics([topic])
        .workers(2)
        .redelivery(redelivery)
        .key_order(key_order)
        .handler(handler)
        .session_timeout(session_timeout)
        .policy(RetryPolicy::new(
            Duration::from_millis(500),
            Duration::from_millis(1800),
        ))
        .commit_interval(Duration::from_millis(200))
        .build()?;
    // Wait for the group to form (instant in memory, a second or so on Kafka).
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.stats().assigned_partitions == 0 {
        if Instant::now() > deadline {
            return Err("the engine got no partition in 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("{} engine running, producing events", t());

    // The Update overtakes its Create; order-99 is never created.
    let producer = transport.producer()?;
    for (key, value) in [("order-1", "Update"), ("order-99", "Update")] {
        producer.send(OutRecord::new(topic).key(key).value(value))?;
    }
    std::thread::sleep(Duration::from_millis(200));
    producer.send(OutRecord::new(topic).key("order-1").value("Create"))?;

    // Read the dead-letter topic until order-99 shows up.
    let mut dlt = ConsumerConfig::new(format!("{group}-dlt-reader"), [format!("{group}-dlt")]);
    dlt.session_timeout = session_timeout;
    let mut reader = transport.consumer(dlt)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dead = Vec::new();
    while dead.is_empty()
        || !finished.lock().unwrap().iter().any(|f| {
            f == if kept {
                "Create order-1"
            } else {
                "Update order-1"
            }
        })
    {
        if Instant::now() > deadline {
            return Err("the scenario did not finish in 30 s".into());
        }
        if let ConsumerEvent::Records(rs) = reader.poll(Duration::from_millis(50))? {
            dead.extend(rs);
        }
    }
    reader.close()?;
    for r in &dead {
        println!(
            "{} dead letter: key {} reason {:?}: {}",
            t(),
            text(r.key.as_deref()),
            header(r, kafka_retry::DEAD_REASON).unwrap_or_default(),
            header(r, kafka_retry::REASON).unwrap_or_default()
        );
    }
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10))?;
    println!(
        "{} stats: received {}, done {}, retried {}, relayed {}, redelivered privately {}, dead-lettered {}",
        t(),
        stats.received,
        stats.done,
        stats.retried,
        stats.relayed,
        stats.redelivered_private,
        stats.dead_lettered.total()
    );
    Ok(())
}

fn text(b: Option<&[u8]>) -> String {
    String::from_utf8_lossy(b.unwrap_or_default()).into_owned()
}

fn header(r: &Record, name: &str) -> Option<String> {
    r.header(name)
        .and_then(|h| h.value.as_deref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

//! rust-rdkafka's side: `BaseProducer` and `BaseConsumer`, configured like
//! ours (see the crate docs), written the way a Rust user would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::bench::BoxError;
use crate::{Meas, Setup, BATCH_SIZE, HEADER_KEY, HEADER_VALUE, IN_FLIGHT, LINGER};

/// Counts delivery reports (every one, as a Rust user's callback would see).
#[derive(Default)]
pub struct Deliveries {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

pub type Prod = BaseProducer<Deliveries>;

/// A producer with the settings ours has (acks=all, linger 5 ms, 1 MiB
/// batches, 5 in flight, no compression, murmur2, idempotence on as ours
/// by default).
pub fn producer(setup: &Setup) -> Result<Prod, BoxError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &setup.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", LINGER.as_millis().to_string())
        .set("batch.size", BATCH_SIZE.to_string())
        .set(
            "max.in.flight.requests.per.connection",
            IN_FLIGHT.to_string(),
        )
        .set("compression.type", "none")
        // Most unacknowledged records (librdkafka's default, spelled out):
        // ours gets the same window (`BENCH_ASYNC_WINDOW`).
        .set("queue.buffering.max.messages", "100000")
        .set("partitioner", "murmur2_random")
        .create_with_context(Deliveries::default())?)
}

/// `BaseProducer::send`, polling (5 ms) while the local queue is full.
pub fn send<'a>(p: &Prod, mut rec: BaseRecord<'a, [u8], [u8]>) -> Result<(), BoxError> {
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                p.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(format!("rdkafka send: {e}").into()),
        }
    }
}

/// Flushes `p` and checks that every delivery since `failed0` was Ok.
pub fn flush_checked(p: &Prod, failed0: u64) -> Result<(), BoxError> {
    p.flush(Duration::from_secs(60))?;
    let failed = p.context().failed.load(Ordering::Relaxed) - failed0;
    if failed > 0 {
        let first = p.context().first_error.lock().ok().and_then(|f| f.clone());
        return Err(format!("rdkafka: {failed} delivery error(s), first: {first:?}").into());
    }
    Ok(())
}

/// `n` keyed records with one header: `send` + `poll(0)` per record, then
/// `flush`; every delivery report must be Ok.
pub fn produce(
    setup: &Setup,
    p: &Prod,
    topic: &str,
    n: u64,
    value: &Bytes,
) -> Result<Meas, BoxError> {
    let failed0 = p.context().failed.load(Ordering::Relaxed);
    let m = setup.meter();
    for i in 0..n as usize {
        let key = &setup.keys[i % setup.keys.len()];
        let headers = OwnedHeaders::new().insert(Header {
            key: HEADER_KEY,
            value: Some(HEADER_VALUE),
        });
        send(
            p,
            BaseRecord::to(topic)
                .key(&key[..])
                .payload(&value[..])
                .headers(headers),
        )?;
        p.poll(Duration::ZERO);
    }
    flush_checked(p, failed0)?;
    Ok(setup.finish(&m, n))
}

/// Notes when the first assignment arrived.
#[derive(Default)]
pub struct Joined {
    pub assigned: Mutex<Option<Instant>>,
}

impl ClientContext for Joined {}

impl ConsumerContext for Joined {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            let mut a = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
            a.get_or_insert_with(Instant::now);
        }
    }
}

pub type Cons = BaseConsumer<Joined>;

/// A group member of `group` on `topic`, earliest reset; `auto_commit`
/// commits every second (the engine's commit interval), else never.
pub fn consumer(
    setup: &Setup,
    group: &str,
    topic: &str,
    auto_commit: bool,
) -> Result<Cons, BoxError> {
    let c: Cons = ClientConfig::new()
        .set("bootstrap.servers", &setup.bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", auto_commit.to_string())
        .set("auto.commit.interval.ms", "1000")
        .set("session.timeout.ms", setup.session.as_millis().to_string())
        .set("enable.partition.eof", "false")
        .create_with_context(Joined::default())?;
    c.subscribe(&[topic])?;
    Ok(c)
}

/// A new group member reads `n` records of `topic` from the start (see
/// `ours::consume`).
pub fn consume(setup: &Setup, topic: &str, n: u64) -> Result<(Meas, Meas), BoxError> {
    let m = setup.meter();
    let c = consumer(setup, &setup.name("g"), topic, false)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut got, mut bytes, mut first) = (0u64, 0u64, None);
    while got < n {
        if Instant::now() > deadline {
            return Err(format!("rdkafka consume {topic}: {got} of {n} after 120 s").into());
        }
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(msg)) => {
                first.get_or_insert_with(Instant::now);
                got += 1;
                bytes += msg.payload().map_or(0, |v| v.len()) as u64;
            }
            Some(Err(e)) => return Err(format!("rdkafka consume {topic}: {e}").into()),
            None => {}
        }
    }
    let first = first.unwrap_or_else(Instant::now);
    let out = setup.finish_from(&m, first, got);
    let assigned = *c
        .context()
        .assigned
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let from_assign = Meas {
        secs: out.secs
            + first
                .saturating_duration_since(assigned.unwrap_or(first))
                .as_secs_f64(),
        ..out
    };
    std::hint::black_box(bytes);
    drop(c);
    Ok((out, from_assign))
}

//! The engine on Kafka next to a plain rust-rdkafka loop doing the same
//! work.
//!
//! Workload (as examples/bench_engine_kafka.rs): `n` records pre-loaded
//! (not timed) into a fresh 6-partition topic, 10,000 keys, 100-byte
//! values whose first 8 bytes are the record id, no user headers; a fresh
//! group per run. At 10%, records with `id % 10 == 0` are retried once
//! (their first delivery has no `retry.attempts` header) and are done when
//! handled again after the retry interval. Both sides are timed from their
//! start (`build()` / creating the consumer) until all `n` are done; the
//! table uses the rate from the assignment on (the join left out: Tansu
//! completes a join after about half the session timeout on both), CPU
//! over the whole run.
//!
//! - Ours: `Engine` with a no-op handler, `workers` workers, retry interval
//!   `BENCH_ENGINE_RETRY_MS`; its retry and dead-letter topics exist before
//!   the clock starts.
//! - rdkafka at 0%: one `BaseConsumer` group member, `poll` per message,
//!   reads the id (the no-op handler), auto-commit every second (the
//!   engine's commit interval). No worker pool: the loop is the handler.
//! - rdkafka at 10%: the same loop writes each record to retry with a
//!   `BaseProducer` (acks=all) to a retry topic, with the headers ours
//!   writes (`retry.origin-topic`, `-partition`, `-offset`,
//!   `retry.first-received-at`, `retry.enqueued-at`, `retry.attempts`,
//!   `retry.reason`); a relay thread (its own group member on the retry
//!   topic and its own producer) keeps them in a heap by due time
//!   (`enqueued-at` + interval) and writes each back to the origin topic,
//!   headers kept, once due; the loop handles it again and it is done.
//!   This is the same round trip through Kafka as ours, with less
//!   book-keeping: rdkafka's auto-commit commits offsets as soon as they
//!   are read (parked records included), where ours commits only a done
//!   watermark and never a parked record. So the peer does somewhat less
//!   work than ours.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_retry::transport::Producer;
use kafka_retry::{
    Engine, OutRecord, Outcome, Record, RetryPolicy, ATTEMPTS, ENQUEUED_AT, FIRST_RECEIVED_AT,
    ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TOPIC, REASON,
};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::BaseRecord;

use crate::bench::{self, human, id_of, BoxError};
use crate::{peer, Meas, Setup};

const KEYS: u64 = 10_000;
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// One engine run: the table's measurement and a line of detail.
pub struct EngineRun {
    pub from_assign: Meas,
    assigned: f64,
    all_done: f64,
    detail: String,
}

impl EngineRun {
    pub fn show(&self) -> String {
        format!(
            "assigned {:.2} s, all done {:.2} s -> {} rec/s from the assignment, CPU/record \
             {:.2} us client, {:.2} us broker; {}",
            self.assigned,
            self.all_done,
            human(self.from_assign.rate()),
            self.from_assign.cpu_us(),
            self.from_assign.broker_us(),
            self.detail
        )
    }
}

/// A fresh origin topic with `n` records, and a group name.
fn prepare(setup: &Setup, producer: &dyn Producer, n: u64) -> Result<(String, String), BoxError> {
    let topic = setup.name("engine");
    let group = format!("{topic}-g");
    setup.create(&topic)?;
    setup.create(&format!("{group}-retry"))?;
    setup.create(&format!("{group}-dlt"))?;
    bench::send_chunked(
        producer,
        (0..n).map(|id| {
            OutRecord::new(topic.as_str())
                .key(bench::key(id, KEYS, 5))
                .value(bench::value(id, 100))
        }),
        10_000,
        &format!("pre-load {topic}"),
    )?;
    Ok((topic, group))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn id_of_payload(p: Option<&[u8]>) -> u64 {
    p.and_then(|v| v.get(..8))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Our engine over `n` pre-loaded records.
pub fn ours(
    setup: &Setup,
    producer: &dyn Producer,
    n: u64,
    retry: bool,
) -> Result<EngineRun, BoxError> {
    let (topic, group) = prepare(setup, producer, n)?;
    let m = setup.meter();
    let t0 = Instant::now();
    let engine = Engine::builder(setup.ours.clone())
        .group_id(&group)
        .topics([topic.as_str()])
        .workers(setup.workers)
        .session_timeout(setup.session)
        .policy(RetryPolicy::new(
            setup.retry_interval,
            Duration::from_secs(3600),
        ))
        .handler(move |r: &Record| {
            if retry && id_of(r).is_multiple_of(10) && r.header(ATTEMPTS).is_none() {
                Outcome::retry("bench")
            } else {
                Outcome::Done
            }
        })
        .build()?;
    let w = bench::watch(&engine, t0, RUN_LIMIT, n, |s| s.assigned_partitions > 0);
    let meas = setup.finish(&m, n);
    let s = engine.stats();
    if let Err(e) = engine.shutdown(Duration::from_secs(10)) {
        eprintln!("bench-rdkafka: engine shutdown: {e}");
    }
    let (Some(assigned), Some(done)) = (w.first, w.all_done) else {
        return Err(format!("engine run of {n} timed out: {s:?}").into());
    };
    Ok(EngineRun {
        from_assign: Meas {
            secs: (done - assigned).as_secs_f64(),
            ..meas
        },
        assigned: assigned.as_secs_f64(),
        all_done: done.as_secs_f64(),
        detail: format!(
            "done {}, retried {}, relayed {}, send errors {}",
            s.done, s.retried, s.relayed, s.send_errors
        ),
    })
}

/// The rdkafka loop over `n` pre-loaded records (see the module docs).
pub fn peer(
    setup: &Setup,
    producer: &dyn Producer,
    n: u64,
    retry: bool,
) -> Result<EngineRun, BoxError> {
    let (topic, group) = prepare(setup, producer, n)?;
    let retry_topic = format!("{group}-retry");
    let m = setup.meter();
    let t0 = Instant::now();
    let c = peer::consumer(setup, &group, &topic, true)?;
    let retries = if retry {
        Some(peer::producer(setup)?)
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let relay = if retry {
        let (stop, interval) = (stop.clone(), setup.retry_interval.as_millis() as i64);
        let rc = peer::consumer(setup, &format!("{group}-relay"), &retry_topic, true)?;
        let rp = peer::producer(setup)?;
        Some(std::thread::spawn(move || {
            relay_loop(rc, rp, interval, &stop)
        }))
    } else {
        None
    };
    let (mut done, mut retried) = (0u64, 0u64);
    let mut first_error: Option<String> = None;
    while done < n && t0.elapsed() < RUN_LIMIT {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                let id = id_of_payload(msg.payload());
                let again = msg
                    .headers()
                    .is_some_and(|h| h.iter().any(|h| h.key == ATTEMPTS));
                match &retries {
                    Some(p) if id.is_multiple_of(10) && !again => {
                        let now = now_ms().to_string();
                        let (part, off) = (msg.partition().to_string(), msg.offset().to_string());
                        let mut headers = OwnedHeaders::new();
                        if let Some(h) = msg.headers() {
                            for h in h.iter() {
                                headers = headers.insert(h);
                            }
                        }
                        for (k, v) in [
                            (ORIGIN_TOPIC, msg.topic()),
                            (ORIGIN_PARTITION, &part),
                            (ORIGIN_OFFSET, &off),
                            (FIRST_RECEIVED_AT, &now),
                            (ENQUEUED_AT, &now),
                            (ATTEMPTS, "1"),
                            (REASON, "bench"),
                        ] {
                            headers = headers.insert(Header {
                                key: k,
                                value: Some(v.as_bytes()),
                            });
                        }
                        let mut rec = BaseRecord::to(&retry_topic).headers(headers);
                        if let Some(k) = msg.key() {
                            rec = rec.key(k);
                        }
                        if let Some(v) = msg.payload() {
                            rec = rec.payload(v);
                        }
                        peer::send(p, rec)?;
                        retried += 1;
                    }
                    _ => done += 1,
                }
            }
            Some(Err(e)) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
            None => {}
        }
        if let Some(p) = &retries {
            p.poll(Duration::ZERO);
        }
    }
    let assigned = *c
        .context()
        .assigned
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let all_done = (done >= n).then(|| t0.elapsed());
    let meas = setup.finish(&m, n);
    stop.store(true, Ordering::Relaxed);
    let relayed = match relay {
        Some(h) => h.join().map_err(|_| "relay thread panicked")??,
        None => 0,
    };
    if let Some(p) = &retries {
        peer::flush_checked(p, 0)?;
    }
    drop(c);
    let (Some(assigned), Some(all_done)) = (assigned, all_done) else {
        return Err(
            format!("rdkafka loop over {n}: done {done} (timed out or never assigned)").into(),
        );
    };
    let assigned = assigned.saturating_duration_since(t0);
    Ok(EngineRun {
        from_assign: Meas {
            secs: (all_done - assigned).as_secs_f64(),
            ..meas
        },
        assigned: assigned.as_secs_f64(),
        all_done: all_done.as_secs_f64(),
        detail: format!(
            "done {done}, retried {retried}, relayed {relayed}, consumer errors: {}",
            first_error.as_deref().unwrap_or("none")
        ),
    })
}

/// The peer's relay: parks retry-topic records by due time and writes each
/// back to its origin topic once due. Returns how many it wrote (all
/// acknowledged).
fn relay_loop(
    c: peer::Cons,
    p: peer::Prod,
    interval_ms: i64,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let mut heap: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut parked: HashMap<u64, OwnedMessage> = HashMap::new();
    let mut seq = 0u64;
    let mut sent = 0u64;
    let failed0 = 0;
    let error = Mutex::new(None::<String>);
    while !stop.load(Ordering::Relaxed) {
        let now = now_ms();
        // Everything due goes back to its origin topic, headers kept.
        while let Some(&Reverse((due, k))) = heap.peek() {
            if due > now {
                break;
            }
            heap.pop();
            let Some(msg) = parked.remove(&k) else {
                continue;
            };
            let origin = msg
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == ORIGIN_TOPIC))
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
                .ok_or("retry record without an origin topic")?;
            let mut rec = BaseRecord::to(&origin);
            if let Some(h) = msg.headers() {
                rec = rec.headers(h.clone());
            }
            if let Some(k) = msg.key() {
                rec = rec.key(k);
            }
            if let Some(v) = msg.payload() {
                rec = rec.payload(v);
            }
            peer::send(&p, rec).map_err(|e| e.to_string())?;
            sent += 1;
        }
        p.poll(Duration::ZERO);
        let wait = heap
            .peek()
            .map_or(100, |Reverse((due, _))| (due - now).clamp(0, 100));
        match c.poll(Duration::from_millis(wait as u64)) {
            Some(Ok(msg)) => {
                let enqueued = msg
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == ENQUEUED_AT))
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or_else(now_ms);
                heap.push(Reverse((enqueued + interval_ms, seq)));
                parked.insert(seq, msg.detach());
                seq += 1;
            }
            Some(Err(e)) => {
                let mut first = error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
            None => {}
        }
    }
    peer::flush_checked(&p, failed0).map_err(|e| e.to_string())?;
    Ok(sent)
}

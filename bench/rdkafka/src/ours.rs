//! Our client's side: produce with `send_batch` / `send_async`, consume as
//! a group member (the same loops as examples/bench_kafka.rs).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_retry::transport::{ConsumerConfig, ConsumerEvent, Pending, Producer, Transport};
use kafka_retry::{Header, OutRecord};

use crate::bench::{self, BoxError};
use crate::{Meas, Setup, HEADER_KEY, HEADER_VALUE};

fn record(setup: &Setup, topic: &str, i: usize, value: &Bytes) -> OutRecord {
    let mut r = OutRecord::new(topic);
    r.key = Some(setup.keys[i % setup.keys.len()].clone());
    r.value = Some(value.clone());
    r.headers
        .push(Header::new(HEADER_KEY, Bytes::from_static(HEADER_VALUE)));
    r
}

/// `n` records through `send_batch`, `setup.chunk` at a time, one thread.
pub fn produce_batch(
    setup: &Setup,
    producer: &dyn Producer,
    topic: &str,
    n: u64,
    value: &Bytes,
) -> Result<Meas, BoxError> {
    let m = setup.meter();
    bench::send_chunked(
        producer,
        (0..n as usize).map(|i| record(setup, topic, i, value)),
        setup.chunk,
        &format!("send_batch to {topic}"),
    )?;
    Ok(setup.finish(&m, n))
}

/// `n` records through `send_async` from one thread, at most
/// `setup.async_window` unacknowledged (past it, waits on the oldest);
/// every result must be Ok.
pub fn produce_async(
    setup: &Setup,
    producer: &dyn Producer,
    topic: &str,
    n: u64,
    value: &Bytes,
) -> Result<Meas, BoxError> {
    let window = setup.async_window;
    let m = setup.meter();
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(window + 1);
    let check = |p: Pending| -> Result<(), BoxError> {
        p.wait()
            .map(|_| ())
            .map_err(|e| format!("send_async to {topic}: {e}").into())
    };
    for i in 0..n as usize {
        pending.push_back(producer.send_async(record(setup, topic, i, value)));
        if pending.len() > window {
            if let Some(p) = pending.pop_front() {
                check(p)?;
            }
        }
    }
    for p in pending {
        check(p)?;
    }
    Ok(setup.finish(&m, n))
}

/// A new group member reads `n` records of `topic` from the start: the rate
/// from the first record to the last and from the assignment to the last,
/// CPU over the member's whole life.
pub fn consume(setup: &Setup, topic: &str, n: u64) -> Result<(Meas, Meas), BoxError> {
    let mut config = ConsumerConfig::new(setup.name("g"), [topic]);
    config.session_timeout = setup.session;
    config.rebalance_timeout = Duration::from_secs(10);
    config.max_poll_records = 1000;
    let m = setup.meter();
    let mut consumer = setup.ours.consumer(config)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut got, mut bytes, mut first, mut assigned) = (0u64, 0u64, None, None);
    while got < n {
        if Instant::now() > deadline {
            return Err(format!("consume {topic}: {got} of {n} records after 120 s").into());
        }
        match consumer.poll(Duration::from_millis(500))? {
            ConsumerEvent::Assigned(_) => {
                assigned.get_or_insert_with(Instant::now);
            }
            ConsumerEvent::Records(records) => {
                if !records.is_empty() {
                    first.get_or_insert_with(Instant::now);
                }
                got += records.len() as u64;
                bytes += records
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
                    .sum::<u64>();
            }
            ev => return Err(format!("consume {topic}: unexpected {ev:?}").into()),
        }
    }
    let first = first.unwrap_or_else(Instant::now);
    let out = setup.finish_from(&m, first, got);
    let from_assign = Meas {
        secs: out.secs + (first - assigned.unwrap_or(first)).as_secs_f64(),
        ..out
    };
    std::hint::black_box(bytes);
    let _ = consumer.close();
    Ok((out, from_assign))
}

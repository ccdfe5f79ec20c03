//! The idempotent producer against a scripted fake broker: each
//! idempotence error code, and the option off.

use std::time::Duration;

use super::KafkaProducer;
use crate::error::Error;
use crate::record::OutRecord;
use crate::transport::kafka::client::Client;
use crate::transport::kafka::config::KafkaConfig;
use crate::transport::kafka::fake::{
    api, init_producer_id, produce, produce_batch_ids, FakeBroker, Seen,
};
use crate::transport::Producer;

/// The idempotence fields of every Produce the broker saw, in order.
fn produces(broker: &FakeBroker) -> Vec<(i64, i16, i32, i32)> {
    broker.produces(produce_batch_ids)
}

/// A fake broker handing out producer id 100 + n (epoch 0) to the n-th
/// InitProducerId, answering the n-th Produce with `script(n)`.
fn broker(script: impl Fn(usize) -> Option<Vec<u8>> + Send + Sync + 'static) -> FakeBroker {
    FakeBroker::start(move |seen: &Seen, n| match seen.key {
        api::INIT_PRODUCER_ID => Some(init_producer_id(0, 100 + n as i64, 0)),
        api::PRODUCE => script(n),
        _ => None,
    })
}

fn producer(broker: &FakeBroker, config: impl FnOnce(KafkaConfig) -> KafkaConfig) -> KafkaProducer {
    let config = config(
        KafkaConfig::new(broker.addr())
            .retry_backoff(Duration::from_millis(5))
            .request_timeout(Duration::from_secs(2))
            .linger(Duration::ZERO),
    );
    KafkaProducer::new(Client::bootstrap(config).unwrap()).unwrap()
}

fn record(v: &'static str) -> OutRecord {
    OutRecord::new("t").partition(0).value(v)
}

#[test]
fn a_lost_ack_resent_as_a_duplicate_is_success() {
    // The first Produce's connection closes unanswered (the broker wrote
    // it, the ack was lost); the resend is answered as a duplicate.
    let b = broker(|n| match n {
        0 => None,
        _ => Some(produce(46, 7)),
    });
    let p = producer(&b, |c| c);
    let d = p.send(record("a")).unwrap();
    assert_eq!(d.offset, 7);
    // The resend is the same batch: same producer id, epoch and sequence.
    assert_eq!(produces(&b), vec![(100, 0, 0, 1), (100, 0, 0, 1)]);
    assert_eq!(b.count(api::INIT_PRODUCER_ID), 1);
}

#[test]
fn out_of_order_behind_a_failed_batch_is_retried_in_sequence_order() {
    // Three batches in flight: the first fails (retriable), the two after
    // it meet the gap (OUT_OF_ORDER_SEQUENCE_NUMBER); all three are resent
    // in sequence order under the same producer id.
    let b = broker(|n| match n {
        0 => Some(produce(19, -1)), // NOT_ENOUGH_REPLICAS
        1 | 2 => Some(produce(45, -1)),
        k => Some(produce(0, k as i64 - 3)),
    });
    // One record per batch, so each goes in a request of its own.
    let p = producer(&b, |c| c.batch_size(64));
    let results = p.send_batch(vec![record("a"), record("b"), record("c")]);
    let offsets: Vec<i64> = results.into_iter().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets, vec![0, 1, 2]);
    let seen = produces(&b);
    let first: Vec<i32> = seen[..3].iter().map(|s| s.2).collect();
    let retried: Vec<i32> = seen[3..].iter().map(|s| s.2).collect();
    assert_eq!(first, vec![0, 1, 2]);
    assert_eq!(retried, vec![0, 1, 2], "resent in sequence order: {seen:?}");
    assert!(seen.iter().all(|s| s.0 == 100), "{seen:?}");
    assert_eq!(b.count(api::INIT_PRODUCER_ID), 1);
}

#[test]
fn out_of_order_of_the_next_batch_and_unknown_producer_take_a_new_id() {
    for code in [45, 59] {
        let b = broker(move |n| match n {
            0 => Some(produce(code, -1)),
            _ => Some(produce(0, 3)),
        });
        let p = producer(&b, |c| c);
        p.send(record("a")).unwrap();
        p.send(record("b")).unwrap();
        // Retried under the new producer id, sequences from 0 again.
        assert_eq!(
            produces(&b),
            vec![(100, 0, 0, 1), (101, 0, 0, 1), (101, 0, 1, 1)],
            "code {code}"
        );
        assert_eq!(b.count(api::INIT_PRODUCER_ID), 2, "code {code}");
    }
}

#[test]
fn invalid_epoch_and_fencing_fail_the_batch_and_take_a_new_id() {
    for code in [47, 90] {
        let b = broker(move |n| match n {
            0 => Some(produce(code, -1)),
            _ => Some(produce(0, 5)),
        });
        let p = producer(&b, |c| c);
        let e = p.send(record("a")).unwrap_err();
        assert_eq!(e.kafka_code().map(|c| c.code()), Some(code), "{e}");
        p.send(record("b")).unwrap();
        assert_eq!(
            produces(&b),
            vec![(100, 0, 0, 1), (101, 0, 0, 1)],
            "code {code}"
        );
    }
}

#[test]
fn a_broker_refusing_init_producer_id_names_the_option_and_off_works() {
    // 31: CLUSTER_AUTHORIZATION_FAILED (no IdempotentWrite permission).
    let b = FakeBroker::start(|seen: &Seen, _| match seen.key {
        api::INIT_PRODUCER_ID => Some(init_producer_id(31, -1, -1)),
        api::PRODUCE => Some(produce(0, 0)),
        _ => None,
    });
    let p = producer(&b, |c| c);
    let e = p.send(record("a")).unwrap_err();
    assert!(matches!(e, Error::Kafka { .. }), "{e:?}");
    assert!(e.to_string().contains("enable.idempotence=false"), "{e}");
    assert_eq!(b.count(api::PRODUCE), 0);

    let p = producer(&b, |c| c.idempotence(false));
    assert_eq!(p.send(record("b")).unwrap().offset, 0);
    assert_eq!(produces(&b), vec![(-1, -1, -1, 1)]);
    assert_eq!(b.count(api::INIT_PRODUCER_ID), 1, "off: no InitProducerId");
}

#[test]
fn after_a_broken_connection_resends_go_one_at_a_time_in_sequence_order() {
    // The first Produce's connection closes unanswered, with the requests
    // written behind it lost too. The first resend is refused (retriable):
    // had the other resends and the new records gone out next to it, the
    // broker would have written them first. They wait behind it (as Java's
    // accumulator holds a partition with batches to retry).
    let b = broker(|n| match n {
        0 => None,
        1 => Some(produce(19, -1)), // NOT_ENOUGH_REPLICAS
        k => Some(produce(0, k as i64 - 2)),
    });
    // One record per batch, each batch in a request of its own.
    let p = producer(&b, |c| c.batch_size(64));
    let pending: Vec<_> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|v| p.send_async(record(v)))
        .collect();
    let offsets: Vec<i64> = pending
        .into_iter()
        .map(|w| w.wait().unwrap().offset)
        .collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    let seqs: Vec<i32> = produces(&b).iter().map(|s| s.2).collect();
    assert_eq!(
        seqs,
        vec![0, 0, 0, 1, 2, 3],
        "the broker saw base sequences {seqs:?}"
    );
    assert_eq!(b.count(api::INIT_PRODUCER_ID), 1);
}

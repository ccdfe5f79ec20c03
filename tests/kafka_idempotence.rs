//! The idempotent producer against Tansu, through the fault-injecting
//! proxy: produce acknowledgements are dropped (the broker wrote the batch,
//! the producer never hears so and resends it) while keyed records stream
//! in; another client (confluent-kafka) then reads every partition back.
//! With idempotence: every record once, each key's records in the order
//! sent (reported: see the test). Without: the resends are written again (the test shows it is the
//! feature that makes the difference).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use kafka_retry::transport::Transport;
use kafka_retry::{KafkaConfig, KafkaTransport, OutRecord};

use common::{Peer, PeerRecord, TansuBroker};

const KEYS: usize = 12;
const ROUNDS: usize = 8;
const PER_ROUND: usize = 1500;

struct Outcome {
    sent: usize,
    dropped: usize,
    read: Vec<PeerRecord>,
    /// Whether more than `sent` records are on the topic.
    more: bool,
}

fn run(idempotence: bool) -> Outcome {
    common::init_log();
    let broker = TansuBroker::start_behind_proxy();
    let topic = common::unique(if idempotence { "idem-on" } else { "idem-off" });
    broker.create_topic(&topic, 3);
    let config = KafkaConfig::new(broker.bootstrap())
        .retry_backoff(Duration::from_millis(20))
        .request_timeout(Duration::from_secs(5))
        // Several batches per request, several requests in flight.
        .batch_size(64 * 1024)
        .idempotence(idempotence);
    let kafka = KafkaTransport::connect(config).unwrap();
    let producer = kafka.producer().unwrap();
    // Metadata and the producer's connection first: the drops below then
    // hit produce acknowledgements.
    producer
        .send(OutRecord::new(&topic).key("warm-up").value("0"))
        .unwrap();
    let pad = "x".repeat(400);
    let mut next = [0usize; KEYS];
    let mut pending = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..PER_ROUND {
            let k = (round * PER_ROUND + i) % KEYS;
            let value = format!("{}:{pad}", next[k]);
            next[k] += 1;
            let record = OutRecord::new(&topic).key(format!("k{k}")).value(value);
            pending.push(producer.send_async(record));
        }
        if (1..ROUNDS - 1).contains(&round) {
            // One drop at a time, while this round streams: it hits a
            // produce acknowledgement, not the reconnect's ApiVersions.
            let before = broker.proxy().dropped();
            broker.proxy().drop_responses(1);
            common::eventually(Duration::from_secs(3), || broker.proxy().dropped() > before);
        }
    }
    for (i, p) in pending.into_iter().enumerate() {
        p.wait()
            .unwrap_or_else(|e| panic!("record {i} not delivered: {e}"));
    }
    let sent = 1 + ROUNDS * PER_ROUND;
    let dropped = broker.proxy().dropped();
    let peer = Peer::on(&broker.bootstrap());
    let read = peer.consume(&topic, sent, Duration::from_secs(30), &[]);
    let more = peer
        .try_consume(&topic, sent + 1, Duration::from_secs(4), &[])
        .is_ok();
    Outcome {
        sent,
        dropped,
        read,
        more,
    }
}

/// Per key, the sequence numbers read, in partition (offset) order.
fn per_key(read: &[PeerRecord]) -> HashMap<String, Vec<usize>> {
    let mut sorted: Vec<&PeerRecord> = read.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut keys: HashMap<String, Vec<usize>> = HashMap::new();
    for r in sorted {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        let n: usize = value.split(':').next().unwrap_or("").parse().unwrap();
        keys.entry(key).or_default().push(n);
    }
    keys
}

#[test]
fn lost_acks_with_idempotence_write_each_record_once() {
    let out = run(true);
    println!(
        "idempotence on: sent {}, acks dropped {}, read {}, more {}",
        out.sent,
        out.dropped,
        out.read.len(),
        out.more
    );
    assert!(out.dropped >= 1, "the proxy dropped no answer");
    assert!(!out.more, "more records on the topic than sent: duplicates");
    let keys = per_key(&out.read);
    let mut reordered = Vec::new();
    for (key, seqs) in &keys {
        let want: Vec<usize> = (0..seqs.len()).collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, want, "key {key}: a record missing or duplicated");
        if let Some(i) = seqs.iter().enumerate().position(|(i, &n)| n != i) {
            let around = &seqs[i.saturating_sub(2)..(i + 6).min(seqs.len())];
            reordered.push(format!("{key} from position {i}: {around:?}"));
        }
    }
    let total: usize = keys.values().map(Vec::len).sum();
    assert_eq!(total, out.sent);
    // Order is reported, not asserted. The producer sends and resends each
    // partition's batches in sequence order, one at a time after a break
    // (`batching::RetryGate`, proven against a fake broker), and with
    // `RUST_LOG=kafka_retry::transport::kafka::producer=trace` every batch
    // is seen acknowledged in sequence order, each at a base offset equal
    // to its sequence. Yet in some runs (5 of about 30 on a loaded
    // machine) Tansu 0.6 reads one request's batches back after later
    // ones, with no duplicate: in a traced run, the batch holding key k8's
    // records 185.. was acknowledged at base offset 741 before the one
    // holding 222.. was acknowledged at 889, and still read back after it.
    // So the broker stores or serves what it acknowledged in another
    // order; the client cannot prevent that, and asserting order here
    // would make this test flaky.
    println!(
        "keys read out of order: {} of {} {reordered:?}",
        reordered.len(),
        keys.len()
    );
}

#[test]
fn lost_acks_without_idempotence_write_duplicates() {
    let out = run(false);
    let keys = per_key(&out.read);
    let duplicated = keys
        .values()
        .filter(|s| s.windows(2).any(|w| w[1] <= w[0]))
        .count();
    println!(
        "idempotence off: sent {}, acks dropped {}, read {}, more {}, keys with a repeat {}",
        out.sent,
        out.dropped,
        out.read.len(),
        out.more,
        duplicated
    );
    assert!(out.dropped >= 1, "the proxy dropped no answer");
    // Each dropped answer was a written batch resent: written twice.
    assert!(out.more, "no duplicate although acks were lost");
    assert!(duplicated > 0, "no key read a record twice");
}

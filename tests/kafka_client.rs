//! The Kafka client against a real broker (`KAFKA_BOOTSTRAP`, see
//! `scripts/test-broker`): connection, version negotiation, admin, producer.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_retry::transport::{Producer, Transport};
use kafka_retry::{Compression, Delivered, Error, Header, KafkaConfig, KafkaTransport, OutRecord};

use common::{kafka_bootstrap, raw_kafka, unique};

fn transport() -> KafkaTransport {
    KafkaTransport::connect(
        KafkaConfig::new(kafka_bootstrap()).request_timeout(Duration::from_secs(10)),
    )
    .expect("connect to KAFKA_BOOTSTRAP")
}

#[test]
fn smoke() {
    let kafka = transport();
    let versions = kafka.api_versions();
    println!("negotiated with {}: {versions:?}", kafka_bootstrap());
    let get = |api: &str| {
        versions
            .iter()
            .find(|(a, _)| a == api)
            .and_then(|(_, v)| *v)
    };
    let produce = get("Produce").expect("Produce negotiated");
    assert!((3..=12).contains(&produce), "Produce v{produce}");
    let fetch = get("Fetch").expect("Fetch negotiated");
    assert!((4..=12).contains(&fetch), "Fetch v{fetch}");
    assert!(get("Metadata").is_some() && get("CreateTopics").is_some());
}

#[test]
fn create_topic_twice_is_ok() {
    let kafka = transport();
    let topic = unique("create-twice");
    kafka.create_topic(&topic, 3, None).unwrap();
    assert_eq!(kafka.partition_count(&topic).unwrap(), Some(3));
    kafka
        .create_topic(&topic, 3, None)
        .expect("second create is Ok");
    assert_eq!(kafka.partition_count(&topic).unwrap(), Some(3));
}

#[test]
fn cleanup_settings_are_read_where_the_broker_reports_them() {
    let kafka = transport();
    let topic = unique("cleanup");
    kafka.create_topic(&topic, 1, None).unwrap();
    // Tansu 0.6 answers DescribeConfigs with no settings (None); Apache
    // Kafka reports its defaults: delete, 7 days, no byte limit.
    match kafka.retention(&topic).expect("DescribeConfigs answered") {
        None => println!("{} reports no cleanup settings", kafka_bootstrap()),
        Some(r) => {
            println!("{topic}: {r:?}");
            assert!(!r.compacted, "{r:?}");
            assert!(r.time.is_none_or(|t| t > Duration::ZERO), "{r:?}");
        }
    }
}

#[test]
fn missing_topic_has_no_partition_count() {
    let kafka = transport();
    assert_eq!(kafka.partition_count(&unique("missing")).unwrap(), None);
}

#[test]
fn unreachable_bootstrap_names_the_address() {
    // Bind then drop a listener: the port is closed (connection refused).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let timeout = Duration::from_secs(2);
    let err =
        KafkaTransport::connect(KafkaConfig::new(&addr).connect_timeout(timeout)).unwrap_err();
    assert!(
        start.elapsed() < timeout + Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    match &err {
        Error::Io { context, .. } => assert_eq!(context, &format!("connect {addr}")),
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(err.to_string().contains(&addr), "{err}");
}

// ---------------------------------------------------------------------------
// Producer

/// Creates a fresh topic named after `name` with `partitions` partitions.
fn new_topic(kafka: &KafkaTransport, name: &str, partitions: i32) -> String {
    let topic = unique(name);
    kafka.create_topic(&topic, partitions, None).unwrap();
    topic
}

fn producer(kafka: &KafkaTransport) -> Arc<dyn Producer> {
    kafka.producer().expect("producer")
}

#[test]
fn produce_to_missing_topic_is_unknown_topic() {
    let kafka = transport();
    let p = producer(&kafka);
    let topic = unique("no-such-topic");
    match p.send(OutRecord::new(&topic).value("v")) {
        Err(Error::UnknownTopic(t)) => assert_eq!(t, topic),
        other => panic!("expected UnknownTopic, got {other:?}"),
    }
    let results = p.send_batch(vec![
        OutRecord::new(&topic).value("a"),
        OutRecord::new(&topic).key("k").partition(0),
    ]);
    assert_eq!(results.len(), 2);
    for r in results {
        assert!(
            matches!(&r, Err(Error::UnknownTopic(t)) if *t == topic),
            "{r:?}"
        );
    }
    // Still missing: producing must not have created it.
    assert_eq!(kafka.partition_count(&topic).unwrap(), None);
}

#[test]
fn produced_records_read_back_byte_for_byte() {
    let kafka = transport();
    let topic = new_topic(&kafka, "roundtrip", 1);
    let p = producer(&kafka);
    let binary: Vec<u8> = (0..=255u8).collect();
    let sent = vec![
        OutRecord::new(&topic)
            .key("k1")
            .value("v1")
            .header("h", "1")
            .header("h", "2"),
        OutRecord::new(&topic).key("tombstone"),
        OutRecord::new(&topic).value(""),
        OutRecord {
            headers: vec![
                Header {
                    key: Bytes::from_static(b"null-value"),
                    value: None,
                },
                Header::new("empty", ""),
                Header::new("bin", binary.clone()),
            ],
            timestamp: Some(1_600_000_000_123),
            ..OutRecord::new(&topic)
                .key(binary.clone())
                .value(binary.clone())
        },
        OutRecord::new(&topic)
            .partition(0)
            .key("")
            .value("explicit"),
    ];
    // One through send (the sender thread), the rest as one batch.
    let first = p.send(sent[0].clone()).unwrap();
    assert_eq!(
        (first.topic.as_str(), first.partition, first.offset),
        (topic.as_str(), 0, 0)
    );
    let rest: Vec<Delivered> = p
        .send_batch(sent[1..].to_vec())
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let offsets: Vec<i64> = rest.iter().map(|d| d.offset).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4]);

    let got = raw_fetch(&kafka_bootstrap(), &topic, 0, 0, sent.len());
    assert_eq!(got.len(), sent.len());
    for (i, (r, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(r.key.as_deref(), s.key.as_deref(), "key of record {i}");
        assert_eq!(
            r.value.as_deref(),
            s.value.as_deref(),
            "value of record {i}"
        );
        let want: Vec<(Vec<u8>, Option<Vec<u8>>)> = s
            .headers
            .iter()
            .map(|h| (h.key.to_vec(), h.value.as_ref().map(|v| v.to_vec())))
            .collect();
        assert_eq!(r.headers, want, "headers of record {i}");
        if let Some(ts) = s.timestamp {
            assert_eq!(r.timestamp, ts);
        }
    }
}

#[test]
fn keyed_records_follow_the_java_partitioner() {
    let kafka = transport();
    let topic = new_topic(&kafka, "keyed", 5);
    let p = producer(&kafka);
    let keys: Vec<String> = (0..50).map(|i| format!("key-{i}")).collect();
    let results = p.send_batch(
        keys.iter()
            .map(|k| OutRecord::new(&topic).key(k.clone()).value("x"))
            .collect(),
    );
    let mut per_partition = [0usize; 5];
    for (k, r) in keys.iter().zip(results) {
        let d = r.unwrap();
        assert_eq!(
            d.partition,
            kafka_retry::transport::partition_for_key(k.as_bytes(), 5),
            "key {k}"
        );
        per_partition[d.partition as usize] += 1;
    }
    // Where the broker says each record is, there it is.
    for (part, &n) in per_partition.iter().enumerate() {
        let got = raw_fetch(&kafka_bootstrap(), &topic, part as i32, 0, n);
        assert_eq!(got.len(), n);
        for r in got {
            let key = r.key.expect("keyed");
            assert_eq!(
                kafka_retry::transport::partition_for_key(&key, 5),
                part as i32
            );
        }
    }
    // Keyless records spread over the partitions.
    let spread: HashSet<i32> = p
        .send_batch((0..10).map(|_| OutRecord::new(&topic).value("x")).collect())
        .into_iter()
        .map(|r| r.unwrap().partition)
        .collect();
    assert_eq!(spread.len(), 5);
}

#[test]
fn concurrent_sends_get_distinct_offsets() {
    let kafka = transport();
    let topic = new_topic(&kafka, "concurrent", 1);
    let p = producer(&kafka);
    let threads = 16;
    let per_thread = 25;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let p = p.clone();
            let topic = topic.clone();
            thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        p.send(OutRecord::new(&topic).value(format!("{t}-{i}")))
                            .unwrap()
                            .offset
                    })
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let mut offsets: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let elapsed = start.elapsed();
    offsets.sort();
    let want: Vec<i64> = (0..(threads * per_thread) as i64).collect();
    assert_eq!(offsets, want);
    println!(
        "{} concurrent sends from {threads} threads in {elapsed:?}",
        threads * per_thread
    );
}

#[test]
fn send_batch_of_ten_thousand() {
    let kafka = transport();
    let topic = new_topic(&kafka, "batch10k", 3);
    let p = producer(&kafka);
    let records: Vec<OutRecord> = (0..10_000)
        .map(|i| {
            OutRecord::new(&topic)
                .key(format!("k{i}"))
                .value(format!("value-{i}"))
        })
        .collect();
    let start = Instant::now();
    let results = p.send_batch(records);
    let elapsed = start.elapsed();
    assert_eq!(results.len(), 10_000);
    let mut per_partition: HashMap<i32, Vec<i64>> = HashMap::new();
    for r in results {
        let d = r.unwrap();
        per_partition.entry(d.partition).or_default().push(d.offset);
    }
    assert_eq!(per_partition.len(), 3);
    for (part, mut offsets) in per_partition {
        offsets.sort();
        let want: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, want, "partition {part}");
    }
    println!("send_batch of 10,000 records in {elapsed:?}");
}

// ---------------------------------------------------------------------------
// A raw Fetch with an independent record-batch decoder (uncompressed v2
// only), so the producer's encoding is checked against the wire format, not
// against our own decoder.

#[derive(Debug)]
struct RawRecord {
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn raw_fetch(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: i64,
    count: usize,
) -> Vec<RawRecord> {
    let mut stream = raw_kafka::connect(bootstrap);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out: Vec<RawRecord> = Vec::new();
    let mut offset = from;
    let mut correlation = 0;
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records fetched",
            out.len()
        );
        let mut fp = FetchPartition::default();
        fp.partition = partition;
        fp.fetch_offset = offset;
        fp.partition_max_bytes = 10 << 20;
        let mut ft = FetchTopic::default();
        ft.topic = TopicName(StrBytes::from_string(topic.to_string()));
        ft.partitions = vec![fp];
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = 100;
        req.min_bytes = 1;
        req.max_bytes = 50 << 20;
        req.topics = vec![ft];
        // Fetch v4: the oldest version Kafka 4 keeps, not flexible.
        let version = 4;
        let resp: FetchResponse = raw_kafka::call(
            &mut stream,
            ApiKey::Fetch,
            version,
            correlation,
            "raw-fetch",
            &req,
        );
        correlation += 1;
        let part = &resp.responses[0].partitions[0];
        assert_eq!(part.error_code, 0, "fetch error");
        let data = part.records.clone().unwrap_or_default();
        let before = out.len();
        decode_batches(&data, &mut out);
        out.retain(|r| r.offset >= from);
        if let Some(last) = out.last() {
            offset = last.offset + 1;
        }
        if out.len() == before {
            thread::sleep(Duration::from_millis(50));
        }
    }
    out
}

fn decode_batches(mut b: &[u8], out: &mut Vec<RawRecord>) {
    while b.len() >= 61 {
        let base_offset = i64::from_be_bytes(b[0..8].try_into().unwrap());
        let len = i32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
        if b.len() < 12 + len {
            break;
        }
        let batch = &b[..12 + len];
        b = &b[12 + len..];
        assert_eq!(batch[16], 2, "magic");
        let attributes = i16::from_be_bytes(batch[21..23].try_into().unwrap());
        assert_eq!(attributes & 0x7, 0, "test batches are uncompressed");
        if attributes & 0x20 != 0 {
            continue; // control batch
        }
        let base_ts = i64::from_be_bytes(batch[27..35].try_into().unwrap());
        let count = i32::from_be_bytes(batch[57..61].try_into().unwrap());
        let mut r = &batch[61..];
        for _ in 0..count {
            let _len = varint(&mut r);
            r = &r[1..]; // attributes
            let ts_delta = varint(&mut r);
            let offset_delta = varint(&mut r);
            let key = bytes_field(&mut r);
            let value = bytes_field(&mut r);
            let n = varint(&mut r);
            let headers = (0..n)
                .map(|_| {
                    (
                        bytes_field(&mut r).expect("header key"),
                        bytes_field(&mut r),
                    )
                })
                .collect();
            out.push(RawRecord {
                offset: base_offset + offset_delta,
                timestamp: base_ts + ts_delta,
                key,
                value,
                headers,
            });
        }
    }
}

/// A zigzag varint (varlong range).
fn varint(b: &mut &[u8]) -> i64 {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = b[0];
        *b = &b[1..];
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn bytes_field(b: &mut &[u8]) -> Option<Vec<u8>> {
    let len = varint(b);
    if len < 0 {
        return None;
    }
    let (v, rest) = b.split_at(len as usize);
    *b = rest;
    Some(v.to_vec())
}

// ---------------------------------------------------------------------------
// Outages (a private broker behind a fault-injecting proxy)

/// A transport on `broker` with short timeouts for outage tests.
fn outage_transport(
    broker: &common::TansuBroker,
    timeout: Duration,
    retries: u32,
) -> KafkaTransport {
    let config = KafkaConfig::new(broker.bootstrap())
        .request_timeout(timeout)
        .connect_timeout(timeout)
        .retry_backoff(Duration::from_millis(50))
        .max_retries(retries);
    KafkaTransport::connect(config).unwrap()
}

/// Sends one record while the proxy is broken by `fault`, restores it after
/// `outage`; the send must wait for the restore and then succeed.
fn send_through_outage(fault: fn(&common::proxy::Proxy), outage: Duration) {
    let broker = common::TansuBroker::start_behind_proxy();
    let topic = unique("outage");
    broker.create_topic(&topic, 1);
    let kafka = outage_transport(&broker, Duration::from_millis(500), 100);
    let p = producer(&kafka);
    assert_eq!(
        p.send(OutRecord::new(&topic).value("before"))
            .unwrap()
            .offset,
        0
    );

    fault(broker.proxy());
    let sender = {
        let p = p.clone();
        let topic = topic.clone();
        thread::spawn(move || {
            let r = p.send(OutRecord::new(&topic).value("during"));
            (r, Instant::now())
        })
    };
    thread::sleep(outage);
    let restored = Instant::now();
    broker.proxy().restore();
    let (during, done) = sender.join().unwrap();
    let during = during.expect("send retried until the broker came back");
    assert!(
        done >= restored,
        "the send finished {:?} before the broker came back",
        restored - done
    );
    // The stalled first attempt may reach the broker after the restore too;
    // the idempotent producer's resend is then a duplicate, whose offset the
    // broker may not report (-1, as Java's RecordMetadata).
    assert!(
        during.offset >= 1 || during.offset == -1,
        "offset {}",
        during.offset
    );
    let after = p.send_batch(vec![OutRecord::new(&topic).value("after")]);
    assert!(after[0].as_ref().unwrap().offset > during.offset);
    assert_eq!(kafka.partition_count(&topic).unwrap(), Some(1));
}

#[test]
fn dropped_connections_reconnect_and_retry() {
    send_through_outage(|p| p.cut(), Duration::from_millis(800));
}

#[test]
fn hung_broker_times_out_and_recovers() {
    send_through_outage(|p| p.stall(), Duration::from_millis(1500));
}

#[test]
fn retries_are_bounded() {
    let broker = common::TansuBroker::start_behind_proxy();
    let topic = unique("bounded");
    broker.create_topic(&topic, 1);
    let kafka = outage_transport(&broker, Duration::from_millis(300), 3);
    let p = producer(&kafka);
    p.send(OutRecord::new(&topic).value("warm-up")).unwrap();
    broker.proxy().stall();
    let start = Instant::now();
    let err = p.send(OutRecord::new(&topic).value("lost")).unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
    // 4 attempts of (450 ms produce + <= 600 ms metadata) at most.
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "gave up after {:?}",
        start.elapsed()
    );
    println!("gave up after {:?}: {err}", start.elapsed());

    // delivery_timeout caps the retrying whatever max_retries says.
    let config = KafkaConfig::new(broker.bootstrap())
        .request_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .max_retries(1000)
        .delivery_timeout(Duration::from_secs(1));
    broker.proxy().restore();
    let kafka = KafkaTransport::connect(config).unwrap();
    let p = producer(&kafka);
    p.send(OutRecord::new(&topic).value("warm-up")).unwrap();
    broker.proxy().stall();
    let start = Instant::now();
    let err = p
        .send_batch(vec![OutRecord::new(&topic).value("lost")])
        .remove(0)
        .unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "gave up after {:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Interop with real clients (tests/py/peer.py)

#[test]
fn interop_confluent_reads_what_we_produce() {
    let kafka = transport();
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic = new_topic(&kafka, "interop-produce", 2);
        let config = KafkaConfig::new(kafka_bootstrap()).compression(compression);
        let p = KafkaTransport::connect(config).unwrap().producer().unwrap();
        let sent = vec![
            OutRecord::new(&topic)
                .key("k1")
                .value("v1")
                .header("h", "1")
                .header("h", "2"),
            OutRecord::new(&topic).key("tombstone").partition(1),
            OutRecord {
                headers: vec![Header {
                    key: Bytes::from_static(b"null"),
                    value: None,
                }],
                timestamp: Some(1_600_000_000_000),
                ..OutRecord::new(&topic).value(vec![0u8, 255, 1]).partition(0)
            },
        ];
        let delivered: Vec<Delivered> = p
            .send_batch(sent.clone())
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let mut got = common::Peer::new().consume(&topic, sent.len(), Duration::from_secs(30), &[]);
        got.sort_by_key(|r| (r.partition, r.offset));
        for (s, d) in sent.iter().zip(&delivered) {
            let r = got
                .iter()
                .find(|r| r.partition == Some(d.partition) && r.offset == Some(d.offset))
                .unwrap_or_else(|| panic!("{compression:?}: {d:?} not read by the peer: {got:?}"));
            assert_eq!(r.key.as_deref(), s.key.as_deref(), "{compression:?}");
            assert_eq!(r.value.as_deref(), s.value.as_deref(), "{compression:?}");
            let want: Vec<(String, Option<Vec<u8>>)> = s
                .headers
                .iter()
                .map(|h| {
                    (
                        h.key_str().unwrap().to_string(),
                        h.value.as_ref().map(|v| v.to_vec()),
                    )
                })
                .collect();
            assert_eq!(r.headers, want, "{compression:?}");
            if let Some(ts) = s.timestamp {
                assert_eq!(r.timestamp, Some(ts), "{compression:?}");
            }
        }
    }
}

#[test]
fn interop_kafka_python_partitions_like_us() {
    // kafka-python's default partitioner is Java's murmur2 (librdkafka's is not).
    let kafka = transport();
    let topic = new_topic(&kafka, "interop-keys", 6);
    let keys: Vec<String> = (0..30).map(|i| format!("customer-{i}")).collect();
    let records: Vec<common::PeerRecord> = keys
        .iter()
        .map(|k| common::PeerRecord::new(Some(k.as_bytes()), Some(b"x")))
        .collect();
    let placed = common::Peer::new()
        .with_client(common::PeerClient::KafkaPython)
        .produce(&topic, &records, &[]);
    let p = producer(&kafka);
    for (k, (partition, _)) in keys.iter().zip(placed) {
        assert_eq!(
            partition,
            kafka_retry::transport::partition_for_key(k.as_bytes(), 6),
            "key {k}"
        );
        let ours = p
            .send(OutRecord::new(&topic).key(k.clone()).value("y"))
            .unwrap();
        assert_eq!(ours.partition, partition, "key {k}");
    }
}

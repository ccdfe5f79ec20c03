//! Bad input on Kafka: records a running engine was never meant to see,
//! written to its retry topic (`<group>-retry`) and to its origin topic by
//! this crate's producer, by confluent-kafka and kafka-python (`Peer`), and
//! by `tests/py/bad_input.py` (kafka-python writing non-UTF-8 header keys).
//!
//! Every record must end either handled (valid retry records relayed back to
//! the origin topic first) or dead-lettered with `retry.dead-reason =
//! malformed` and a `retry.reason`; keys, values and user headers byte for
//! byte (null and empty distinct, duplicate header keys kept in order); no
//! partition stalls (a good record written after all the bad ones is handled
//! within seconds); no panic, and `shutdown` returns Ok (every engine thread
//! was still alive).
//!
//! Run with `scripts/test-broker cargo test --test bad_input_kafka`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{b64_encode, eventually, kafka_bootstrap, unique, Peer, PeerClient, PeerRecord};
use kafka_retry::transport::{ConsumerConfig, ConsumerEvent, Transport};
use kafka_retry::{
    Engine, Header, KafkaConfig, KafkaTransport, OutRecord, Outcome, Record, RetryPolicy,
};

const ONE_MIB: usize = 1024 * 1024;
const SESSION: Duration = Duration::from_secs(2);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The transport, and the size of the big values.
///
/// On Tansu (which ignores `partition_max_bytes` and has no message size
/// limit) the values are exactly 1 MiB and the fetch settings are the
/// defaults: partition_fetch_max_bytes is 1 MiB, less than such a record.
/// Apache Kafka refuses batches over `message.max.bytes` (1 MiB + 12 by
/// default) at produce time, so there the values are 1 MiB - 8 KiB and
/// partition_fetch_max_bytes is lowered to 256 KiB: a record over the
/// partition limit still comes through (KIP-74: the first batch is whole).
fn transport() -> (Arc<dyn Transport>, usize) {
    let mut config = KafkaConfig::new(kafka_bootstrap())
        .request_timeout(Duration::from_secs(10))
        .fetch_max_wait(Duration::from_millis(50));
    let big = if common::broker_is_tansu() {
        ONE_MIB
    } else {
        config = config.partition_fetch_max_bytes(256 * 1024);
        ONE_MIB - 8 * 1024
    };
    let kafka = KafkaTransport::connect(config).expect("connect to the test broker");
    (Arc::new(kafka), big)
}

/// Who writes a case's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// This crate's Kafka producer.
    Ours,
    /// `Peer` with confluent-kafka.
    Confluent,
    /// `Peer` with kafka-python.
    KafkaPython,
    /// `tests/py/bad_input.py produce` (kafka-python, raw header key bytes).
    RawKeys,
    /// `tests/py/bad_input.py produce-corrupt`: a record batch with a wrong
    /// CRC (Tansu stores it; Apache Kafka refuses it, so Tansu only).
    CorruptBatch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    Retry,
    Origin,
}

/// What must become of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Handled once with exactly the key, value and headers written.
    Handled,
    /// The handler retries it once: handled twice, the second time with the
    /// user headers (every non-`retry.*` header) unchanged, first, and fresh
    /// retry headers after them.
    HandledAfterRetry,
    /// On the dead-letter topic: key and value as written, the written
    /// headers first and unchanged, then `retry.reason` and
    /// `retry.dead-reason = malformed`.
    Malformed,
    /// An undecodable batch: on the dead-letter topic as one record holding
    /// the raw batch (so the case name is in its value), no key, reason
    /// `undecodable record batch: ...`, `retry.dead-reason = malformed`.
    Undecodable,
}

type Hdr = (Vec<u8>, Option<Vec<u8>>);

#[derive(Clone, Debug)]
struct Case {
    name: String,
    dest: Dest,
    via: Via,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// As written; the first is always `case = <name>`.
    headers: Vec<Hdr>,
    expect: Expect,
}

fn h(k: &str, v: &str) -> Hdr {
    (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))
}

fn to_headers(hs: &[Hdr]) -> Vec<Header> {
    hs.iter()
        .map(|(k, v)| Header {
            key: k.clone().into(),
            value: v.clone().map(Into::into),
        })
        .collect()
}

/// Valid retry headers pointing at `topic`, enqueued now (due after the
/// 100 ms interval).
fn valid_retry(topic: &str, now: i64) -> Vec<Hdr> {
    vec![
        h(kafka_retry::ORIGIN_TOPIC, topic),
        h(kafka_retry::ORIGIN_PARTITION, "0"),
        h(kafka_retry::ORIGIN_OFFSET, "7"),
        h(kafka_retry::FIRST_RECEIVED_AT, &(now - 1000).to_string()),
        h(kafka_retry::ENQUEUED_AT, &now.to_string()),
        h(kafka_retry::ATTEMPTS, "1"),
        h(kafka_retry::REASON, "not yet"),
    ]
}

/// [`valid_retry`] with header `name` replaced by `value` (None: removed;
/// Some(None): a null value).
fn retry_with(topic: &str, now: i64, name: &str, value: Option<Option<&[u8]>>) -> Vec<Hdr> {
    let mut hs: Vec<Hdr> = valid_retry(topic, now)
        .into_iter()
        .filter(|(k, _)| k != name.as_bytes())
        .collect();
    if let Some(v) = value {
        hs.push((name.as_bytes().to_vec(), v.map(<[u8]>::to_vec)));
    }
    hs
}

/// Collects cases; `case = <name>` is always the first header.
struct Builder {
    cases: Vec<Case>,
    /// Key, value and writer of the next cases (see [`Builder::payload`]).
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    via: Via,
}

impl Builder {
    fn payload(&mut self, via: Via, key: Option<&[u8]>, value: Option<&[u8]>) -> &mut Self {
        self.via = via;
        self.key = key.map(<[u8]>::to_vec);
        self.value = value.map(<[u8]>::to_vec);
        self
    }

    fn add(&mut self, name: &str, dest: Dest, extra: Vec<Hdr>, expect: Expect) -> &mut Self {
        let mut headers = vec![h("case", name)];
        headers.extend(extra);
        self.cases.push(Case {
            name: name.to_string(),
            dest,
            via: self.via,
            key: self.key.clone(),
            value: self.value.clone(),
            headers,
            expect,
        });
        self
    }
}

/// Every bad (and a few good) inputs. `origin` is the engine's topic,
/// `foreign` an existing topic that is not, `big` the size of the big
/// values; `corrupt`: also write batches with a wrong CRC.
fn cases(origin: &str, foreign: &str, big: usize, corrupt: bool) -> Vec<Case> {
    use Dest::*;
    use Expect::*;
    use Via::*;
    let now = now_ms();
    let o = origin;
    let mut b = Builder {
        cases: Vec::new(),
        key: None,
        value: None,
        via: Ours,
    };
    let payload: &[u8] = b"payload";
    let big = vec![b'x'; big];
    // librdkafka's message.max.bytes (1,000,000) and kafka-python's
    // max_request_size (1 MiB) refuse a 1 MiB value client-side.
    let peer_big = vec![b'y'; 900_000];
    let user = |mut hs: Vec<Hdr>| {
        hs.insert(0, h("trace", "t-1"));
        hs
    };
    let day = 86_400_000i64;
    let non_utf8_key: Hdr = (b"\xff\xfe\x00k".to_vec(), Some(b"v\x00\xff".to_vec()));
    let odd = || {
        vec![
            non_utf8_key.clone(),
            h("dup", "1"),
            (b"dup".to_vec(), None),
            h("dup", ""),
            (Vec::new(), Some(b"empty key".to_vec())),
            (b"bin".to_vec(), Some((0..=255u8).collect())),
            h("dup", "4"),
        ]
    };
    let plus = |mut a: Vec<Hdr>, b: Vec<Hdr>| {
        a.extend(b);
        a
    };

    // --- retry topic, this crate's producer: invalid retry headers.
    b.payload(Ours, Some(b"k"), Some(payload));
    b.add("no-retry-headers", Retry, vec![h("user", "u")], Malformed);
    let missing = |name: &str| user(retry_with(o, now, name, None));
    for name in common::REQUIRED_RETRY_HEADERS {
        b.add(&format!("missing-{name}"), Retry, missing(name), Malformed);
    }
    let bad = |name: &str, v: &[u8]| user(retry_with(o, now, name, Some(Some(v))));
    let future = (now + day).to_string();
    let soon_future = (now + 10 * 60_000).to_string();
    let long_ago = (now - day).to_string();
    let nines = "9".repeat(30);
    let invalid: Vec<(&str, &str, &[u8])> = vec![
        (
            "non-numeric-first-received",
            kafka_retry::FIRST_RECEIVED_AT,
            b"soon",
        ),
        ("non-numeric-enqueued", kafka_retry::ENQUEUED_AT, b"12:00"),
        ("non-numeric-attempts", kafka_retry::ATTEMPTS, b"many"),
        (
            "non-numeric-partition",
            kafka_retry::ORIGIN_PARTITION,
            b"zero",
        ),
        ("float-offset", kafka_retry::ORIGIN_OFFSET, b"7.5"),
        ("hex-timestamp", kafka_retry::FIRST_RECEIVED_AT, b"0x18c"),
        ("empty-timestamp", kafka_retry::ENQUEUED_AT, b""),
        (
            "negative-first-received",
            kafka_retry::FIRST_RECEIVED_AT,
            b"-1",
        ),
        ("negative-enqueued", kafka_retry::ENQUEUED_AT, b"-17"),
        ("negative-partition", kafka_retry::ORIGIN_PARTITION, b"-1"),
        ("negative-offset", kafka_retry::ORIGIN_OFFSET, b"-5"),
        ("negative-attempts", kafka_retry::ATTEMPTS, b"-1"),
        (
            "future-first-received",
            kafka_retry::FIRST_RECEIVED_AT,
            future.as_bytes(),
        ),
        (
            "future-enqueued",
            kafka_retry::ENQUEUED_AT,
            soon_future.as_bytes(),
        ),
        (
            "enqueued-before-first-received",
            kafka_retry::ENQUEUED_AT,
            long_ago.as_bytes(),
        ),
        (
            "overflowing-partition",
            kafka_retry::ORIGIN_PARTITION,
            b"99999999999999",
        ),
        (
            "overflowing-timestamp",
            kafka_retry::FIRST_RECEIVED_AT,
            nines.as_bytes(),
        ),
        (
            "i64-min-timestamp",
            kafka_retry::ENQUEUED_AT,
            b"-9223372036854775808",
        ),
        (
            "non-utf8-timestamp",
            kafka_retry::ENQUEUED_AT,
            b"\xff\xfe\x00",
        ),
        (
            "non-utf8-origin-topic",
            kafka_retry::ORIGIN_TOPIC,
            b"or\xc3ders",
        ),
        ("empty-origin-topic", kafka_retry::ORIGIN_TOPIC, b""),
        (
            "unknown-origin-topic",
            kafka_retry::ORIGIN_TOPIC,
            b"no-such-topic-anywhere",
        ),
        (
            "foreign-origin-topic",
            kafka_retry::ORIGIN_TOPIC,
            foreign.as_bytes(),
        ),
    ];
    for (name, header, v) in invalid {
        b.add(name, Retry, bad(header, v), Malformed);
    }
    let null_attempts = user(retry_with(o, now, kafka_retry::ATTEMPTS, Some(None)));
    b.add("null-attempts", Retry, null_attempts, Malformed);
    // Duplicate retry headers: the last one counts.
    let last_bad = plus(
        user(valid_retry(o, now)),
        vec![h(kafka_retry::FIRST_RECEIVED_AT, "garbage")],
    );
    b.add(
        "duplicate-retry-header-last-bad",
        Retry,
        last_bad,
        Malformed,
    );
    let last_good = plus(
        user(vec![h(kafka_retry::FIRST_RECEIVED_AT, "x")]),
        valid_retry(o, now),
    );
    b.add(
        "duplicate-retry-header-last-good",
        Retry,
        last_good,
        Handled,
    );
    // Malformed: the payload must survive the dead-letter hop as is.
    let bad_attempts = retry_with(o, now, kafka_retry::ATTEMPTS, Some(Some(b"x")));
    b.payload(Ours, None, Some(b""));
    b.add(
        "malformed-odd-headers",
        Retry,
        plus(odd(), bad_attempts),
        Malformed,
    );
    b.payload(Ours, None, None);
    b.add(
        "malformed-null-key-null-value",
        Retry,
        missing(kafka_retry::ATTEMPTS),
        Malformed,
    );
    b.payload(Ours, Some(b""), Some(b""));
    b.add(
        "malformed-empty-key-empty-value",
        Retry,
        missing(kafka_retry::ATTEMPTS),
        Malformed,
    );
    b.payload(Ours, Some(b"k"), Some(&big));
    b.add(
        "malformed-big-value",
        Retry,
        missing(kafka_retry::ATTEMPTS),
        Malformed,
    );

    // --- retry topic, this crate's producer: valid retry headers, odd payloads.
    let valid = || user(valid_retry(o, now));
    b.payload(Ours, Some(b""), Some(b""));
    b.add("valid-empty-key-empty-value", Retry, valid(), Handled);
    b.payload(Ours, None, None);
    b.add("valid-null-key-null-value", Retry, valid(), Handled);
    b.payload(Ours, None, Some(b""));
    b.add("valid-null-key-empty-value", Retry, valid(), Handled);
    b.payload(Ours, Some(b"big"), Some(&big));
    b.add("valid-big-value", Retry, valid(), Handled);
    b.payload(Ours, Some(b"\x00\xff"), Some(b"\x00"));
    b.add(
        "valid-odd-headers",
        Retry,
        plus(odd(), valid_retry(o, now)),
        Handled,
    );
    b.payload(Ours, Some(b"k"), Some(payload));
    let many: Vec<Hdr> = (0..300)
        .map(|i| h(&format!("h{}", i % 7), &i.to_string()))
        .collect();
    b.add(
        "valid-300-headers",
        Retry,
        plus(many, valid_retry(o, now)),
        Handled,
    );
    let long_reason = retry_with(o, now, kafka_retry::REASON, Some(Some(&[b'r'; 100_000])));
    b.add("valid-100k-reason", Retry, user(long_reason), Handled);
    let padded = retry_with(o, now, kafka_retry::ATTEMPTS, Some(Some(b" 2 ")));
    b.add("valid-padded-number", Retry, user(padded), Handled);

    // --- origin topic, this crate's producer.
    b.payload(Ours, Some(b""), Some(&big));
    b.add(
        "origin-empty-key-big-value",
        Origin,
        vec![h("user", "u")],
        Handled,
    );
    b.payload(Ours, None, None);
    b.add("origin-null-key-null-value", Origin, vec![], Handled);
    b.payload(Ours, Some(b""), Some(b""));
    b.add(
        "origin-empty-key-empty-value",
        Origin,
        vec![(b"n".to_vec(), None)],
        Handled,
    );
    let bogus = vec![
        h("user", "u"),
        h(kafka_retry::FIRST_RECEIVED_AT, "garbage"),
        h(kafka_retry::ATTEMPTS, "-3"),
        non_utf8_key.clone(),
        h("user", "u2"),
    ];
    b.payload(Ours, Some(b"k"), Some(payload));
    b.add("origin-bogus-retry-headers", Origin, bogus.clone(), Handled);
    b.add(
        "retry-once-origin-bogus-retry-headers",
        Origin,
        bogus,
        HandledAfterRetry,
    );
    b.payload(Ours, None, Some(b""));
    b.add(
        "retry-once-origin-odd-headers",
        Origin,
        odd(),
        HandledAfterRetry,
    );

    // --- other clients. Header keys must be UTF-8 for Peer; values may be anything.
    for (via, tag) in [(Confluent, "confluent"), (KafkaPython, "kafka-python")] {
        let mut hs = vec![
            h("dup", "a"),
            h("dup", "b"),
            h("bin", "\u{0}\u{7f}"),
            h("empty", ""),
        ];
        if via == Confluent {
            hs.push((b"null".to_vec(), None)); // kafka-python cannot send a null header value
        }
        let name = |what: &str| format!("{tag}-{what}");
        b.payload(via, Some(b""), Some(b""));
        b.add(
            &name("retry-valid"),
            Retry,
            plus(hs.clone(), valid_retry(o, now)),
            Handled,
        );
        b.add(&name("origin"), Origin, hs.clone(), Handled);
        b.payload(via, Some(b"k"), Some(payload));
        let yesterday = retry_with(
            o,
            now,
            kafka_retry::FIRST_RECEIVED_AT,
            Some(Some(b"yesterday")),
        );
        b.add(
            &name("retry-invalid"),
            Retry,
            plus(hs.clone(), yesterday),
            Malformed,
        );
        b.add(&name("retry-no-headers"), Retry, hs.clone(), Malformed);
        let bogus = plus(hs.clone(), vec![h(kafka_retry::ENQUEUED_AT, "bogus")]);
        b.add(
            &format!("retry-once-{tag}-origin"),
            Origin,
            bogus,
            HandledAfterRetry,
        );
        b.payload(via, Some(b""), Some(&peer_big));
        b.add(&name("origin-900k-value"), Origin, hs.clone(), Handled);
        if via == Confluent {
            b.payload(via, Some(b"k"), None);
            b.add(&name("origin-tombstone"), Origin, hs.clone(), Handled);
        }
    }
    let raw = vec![
        non_utf8_key,
        h("dup", "a"),
        (b"\xc3".to_vec(), Some(b"".to_vec())),
    ];
    b.payload(RawKeys, Some(b"k"), Some(payload));
    b.add(
        "raw-key-retry-valid",
        Retry,
        plus(raw.clone(), valid_retry(o, now)),
        Handled,
    );
    let bad_attempts = retry_with(o, now, kafka_retry::ATTEMPTS, Some(Some(b"-1")));
    b.add(
        "raw-key-retry-invalid",
        Retry,
        plus(raw.clone(), bad_attempts),
        Malformed,
    );
    b.payload(RawKeys, Some(b""), Some(b"v"));
    b.add("raw-key-origin", Origin, raw, Handled);
    if corrupt {
        b.payload(CorruptBatch, Some(b"k"), Some(b"corrupt"));
        let hs = plus(vec![h("user", "u")], valid_retry(o, now));
        b.add("corrupt-batch-retry", Retry, hs, Undecodable);
        b.add(
            "corrupt-batch-origin",
            Origin,
            vec![h("user", "u")],
            Undecodable,
        );
    }
    b.cases
}

fn peer_record(c: &Case) -> PeerRecord {
    PeerRecord {
        key: c.key.clone(),
        value: c.value.clone(),
        headers: c
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.clone()).expect("peer header keys are UTF-8"),
                    v.clone(),
                )
            })
            .collect(),
        partition: Some(0),
        ..PeerRecord::default()
    }
}

/// Writes records with `tests/py/bad_input.py <cmd>`.
fn bad_input_py(cmd: &str, topic: &str, cases: &[&Case]) {
    if cases.is_empty() {
        return;
    }
    let b = |v: &Option<Vec<u8>>| v.as_deref().map(b64_encode);
    let input: String = cases
        .iter()
        .map(|c| {
            let hs: Vec<serde_json::Value> = c
                .headers
                .iter()
                .map(|(k, v)| serde_json::json!([b64_encode(k), b(v)]))
                .collect();
            format!(
                "{}\n",
                serde_json::json!({"key": b(&c.key), "value": b(&c.value), "headers": hs, "partition": 0})
            )
        })
        .collect();
    let args = [cmd, "--bootstrap", &kafka_bootstrap(), "--topic", topic];
    let lines = common::py_try_run("bad_input.py", &args, Some(input))
        .unwrap_or_else(|e| panic!("{e}"))
        .len();
    assert_eq!(lines, cases.len(), "bad_input.py acknowledged every record");
}

fn case_name(r: &Record) -> String {
    r.headers
        .first()
        .filter(|h| &h.key[..] == b"case")
        .and_then(|h| h.value.as_deref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| format!("<no case header at {}@{}>", r.topic_partition(), r.offset))
}

fn header_str<'a>(r: &'a Record, name: &str) -> Option<&'a str> {
    r.header(name)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Reads `n` records of `topic` from the beginning with a fresh group.
fn read(transport: &Arc<dyn Transport>, topic: &str, n: usize, timeout: Duration) -> Vec<Record> {
    let mut cfg = ConsumerConfig::new(unique("reader"), [topic]);
    cfg.session_timeout = SESSION;
    cfg.rebalance_timeout = SESSION * 2;
    let mut c = transport.consumer(cfg).expect("reader consumer");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let Ok(ConsumerEvent::Records(rs)) = c.poll(Duration::from_millis(100)) {
            out.extend(rs);
        }
    }
    // Anything more (a duplicate) shows up within a short extra poll.
    let extra_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < extra_until {
        if let Ok(ConsumerEvent::Records(rs)) = c.poll(Duration::from_millis(50)) {
            out.extend(rs);
        }
    }
    let _ = c.close();
    out
}

fn show(hs: &[Header]) -> String {
    let v: Vec<String> = hs
        .iter()
        .map(|h| {
            let val = h.value.as_deref().map_or("null".to_string(), |v| {
                let s = String::from_utf8_lossy(&v[..v.len().min(40)]).into_owned();
                format!("{s:?}")
            });
            format!("{:?}={val}", String::from_utf8_lossy(&h.key))
        })
        .collect();
    v.join(", ")
}

#[test]
fn bad_input_ends_handled_or_dead_lettered() {
    common::init_log();
    let (transport, big) = transport();
    let origin = unique("bad-origin");
    let foreign = unique("bad-foreign");
    transport.create_topic(&origin, 1, None).unwrap();
    transport.create_topic(&foreign, 1, None).unwrap();
    let group = unique("g-bad");
    let retry_topic = format!("{group}-retry");
    let dlt = format!("{group}-dlt");

    let seen: Arc<Mutex<Vec<(Instant, Record)>>> = Arc::default();
    let s = seen.clone();
    let engine = Engine::builder(transport.clone())
        .group_id(&group)
        .topics([origin.as_str()])
        .topic_partitions(1)
        .workers(2)
        .session_timeout(SESSION)
        .rebalance_timeout(SESSION * 4)
        .revoke_timeout(SESSION * 2)
        .commit_interval(Duration::from_millis(100))
        .policy(RetryPolicy::new(
            Duration::from_millis(100),
            Duration::from_secs(120),
        ))
        .handler(move |r: &Record| {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            let name = case_name(r);
            let first_time = !s.iter().any(|(_, x)| case_name(x) == name);
            s.push((Instant::now(), r.clone()));
            if name.starts_with("retry-once") && first_time {
                Outcome::retry("once more")
            } else {
                Outcome::Done
            }
        })
        .build()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || engine
            .stats()
            .assigned_partitions
            == 1),
        "the engine never got its partition"
    );

    let all = cases(&origin, &foreign, big, common::broker_is_tansu());
    let started = Instant::now();
    let producer = transport.producer().unwrap();
    for dest in [Dest::Retry, Dest::Origin] {
        let topic = if dest == Dest::Retry {
            &retry_topic
        } else {
            &origin
        };
        let ours: Vec<OutRecord> = all
            .iter()
            .filter(|c| c.dest == dest && c.via == Via::Ours)
            .map(|c| OutRecord {
                topic: topic.into(),
                partitioning: kafka_retry::Partitioning::Explicit(0),
                key: c.key.clone().map(Into::into),
                value: c.value.clone().map(Into::into),
                headers: to_headers(&c.headers),
                timestamp: None,
            })
            .collect();
        for r in producer.send_batch(ours) {
            r.expect("produce a bad input");
        }
        for (via, client) in [
            (Via::Confluent, PeerClient::Confluent),
            (Via::KafkaPython, PeerClient::KafkaPython),
        ] {
            let recs: Vec<PeerRecord> = all
                .iter()
                .filter(|c| c.dest == dest && c.via == via)
                .map(peer_record)
                .collect();
            Peer::new().with_client(client).produce(topic, &recs, &[]);
        }
        for (via, cmd) in [
            (Via::RawKeys, "produce"),
            (Via::CorruptBatch, "produce-corrupt"),
        ] {
            let cases: Vec<&Case> = all
                .iter()
                .filter(|c| c.dest == dest && c.via == via)
                .collect();
            bad_input_py(cmd, topic, &cases);
        }
    }
    let produced_in = started.elapsed();

    // A good record behind all the bad ones, on each topic's only partition.
    let now = now_ms();
    let good_at = Instant::now();
    producer
        .send(
            OutRecord::new(&origin)
                .key("k")
                .value("good")
                .header("case", "final-origin"),
        )
        .unwrap();
    let mut good_retry = OutRecord::new(&retry_topic)
        .key("k")
        .value("good")
        .header("case", "final-retry");
    good_retry
        .headers
        .extend(to_headers(&valid_retry(&origin, now)));
    producer.send(good_retry).unwrap();
    let finals_handled = eventually(Duration::from_secs(10), || {
        let s = seen.lock().unwrap_or_else(|e| e.into_inner());
        ["final-origin", "final-retry"]
            .iter()
            .all(|n| s.iter().any(|(_, r)| case_name(r) == *n))
    });
    let finals_in = good_at.elapsed();

    let malformed: Vec<&Case> = all
        .iter()
        .filter(|c| matches!(c.expect, Expect::Malformed | Expect::Undecodable))
        .collect();
    let handled_deliveries: usize = all
        .iter()
        .map(|c| match c.expect {
            Expect::Handled => 1,
            Expect::HandledAfterRetry => 2,
            Expect::Malformed | Expect::Undecodable => 0,
        })
        .sum::<usize>()
        + 2;
    let all_handled = eventually(Duration::from_secs(20), || {
        seen.lock().unwrap_or_else(|e| e.into_inner()).len() >= handled_deliveries
    });
    let dead = read(&transport, &dlt, malformed.len(), Duration::from_secs(20));
    // Let stray duplicates (there must be none) arrive before counting.
    std::thread::sleep(Duration::from_millis(500));
    let stats = engine.stats();
    let shutdown = engine.shutdown(Duration::from_secs(10));
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();

    let mut failures: Vec<String> = Vec::new();
    let mut by_case: HashMap<String, Vec<&Record>> = HashMap::new();
    for (_, r) in &seen {
        by_case.entry(case_name(r)).or_default().push(r);
    }
    let mut dead_by_case: HashMap<String, Vec<&Record>> = HashMap::new();
    for r in &dead {
        // An undecodable batch has no headers of its own any more: find its
        // case by name in the raw bytes.
        let name = all
            .iter()
            .filter(|c| c.expect == Expect::Undecodable)
            .find(|c| {
                r.value
                    .as_deref()
                    .is_some_and(|v| v.windows(c.name.len()).any(|w| w == c.name.as_bytes()))
            })
            .map_or_else(|| case_name(r), |c| c.name.clone());
        dead_by_case.entry(name).or_default().push(r);
    }
    for c in &all {
        let got = by_case.get(&c.name).cloned().unwrap_or_default();
        let died = dead_by_case.get(&c.name).cloned().unwrap_or_default();
        let written = to_headers(&c.headers);
        let same_payload = |r: &Record| {
            r.key.as_deref() == c.key.as_deref() && r.value.as_deref() == c.value.as_deref()
        };
        let payload_of = |r: &Record| {
            format!(
                "key {:?} value {:?} (len {:?})",
                r.key
                    .as_deref()
                    .map(|k| String::from_utf8_lossy(&k[..k.len().min(20)]).into_owned()),
                r.value
                    .as_deref()
                    .map(|v| String::from_utf8_lossy(&v[..v.len().min(20)]).into_owned()),
                r.value.as_ref().map(|v| v.len())
            )
        };
        match c.expect {
            Expect::Handled | Expect::HandledAfterRetry => {
                let want = if c.expect == Expect::Handled { 1 } else { 2 };
                if got.len() != want || !died.is_empty() {
                    failures.push(format!(
                        "{}: handled {} time(s) (want {want}), dead-lettered {}",
                        c.name,
                        got.len(),
                        died.len()
                    ));
                    continue;
                }
                for r in &got {
                    if !same_payload(r) {
                        failures.push(format!("{}: payload changed: {}", c.name, payload_of(r)));
                    }
                }
                if c.expect == Expect::Handled {
                    if got[0].headers != written {
                        failures.push(format!(
                            "{}: headers changed:\n  wrote {}\n  got   {}",
                            c.name,
                            show(&written),
                            show(&got[0].headers)
                        ));
                    }
                } else {
                    if got[0].headers != written {
                        failures.push(format!("{}: first delivery headers changed", c.name));
                    }
                    let user: Vec<Header> = written
                        .iter()
                        .filter(|h| !h.key.starts_with(b"retry."))
                        .cloned()
                        .collect();
                    let second = &got[1];
                    let ok = second.headers.len() > user.len()
                        && second.headers[..user.len()] == user[..]
                        && second.headers[user.len()..]
                            .iter()
                            .all(|h| h.key.starts_with(b"retry."))
                        && header_str(second, kafka_retry::ATTEMPTS) == Some("1")
                        && header_str(second, kafka_retry::ORIGIN_TOPIC) == Some(origin.as_str())
                        && header_str(second, kafka_retry::FIRST_RECEIVED_AT)
                            .and_then(|v| v.parse::<i64>().ok())
                            .is_some_and(|t| (now - 120_000..=now_ms()).contains(&t));
                    if !ok {
                        failures.push(format!(
                            "{}: redelivery must keep the user headers first and carry fresh retry headers:\n  user {}\n  got  {}",
                            c.name,
                            show(&user),
                            show(&second.headers)
                        ));
                    }
                }
            }
            Expect::Undecodable => {
                let ok = died.len() == 1
                    && got.is_empty()
                    && died[0].key.is_none()
                    && died[0]
                        .headers
                        .first()
                        .is_some_and(|h| &h.key[..] == b"kafka-retry.undecodable")
                    && header_str(died[0], kafka_retry::REASON)
                        .is_some_and(|v| v.starts_with("undecodable record batch"))
                    && header_str(died[0], kafka_retry::DEAD_REASON) == Some("malformed");
                if !ok {
                    failures.push(format!(
                        "{}: want one undecodable dead letter, got {} handled and {:?}",
                        c.name,
                        got.len(),
                        died.iter().map(|r| show(&r.headers)).collect::<Vec<_>>()
                    ));
                }
            }
            Expect::Malformed => {
                if died.len() != 1 || !got.is_empty() {
                    failures.push(format!(
                        "{}: dead-lettered {} time(s) (want 1), handled {}",
                        c.name,
                        died.len(),
                        got.len()
                    ));
                    continue;
                }
                let r = died[0];
                if !same_payload(r) {
                    failures.push(format!(
                        "{}: dead letter payload changed: {}",
                        c.name,
                        payload_of(r)
                    ));
                }
                let kept: Vec<Header> = written
                    .iter()
                    .filter(|h| {
                        &h.key[..] != kafka_retry::REASON.as_bytes()
                            && &h.key[..] != kafka_retry::DEAD_REASON.as_bytes()
                            && &h.key[..] != kafka_retry::DEAD_LETTERED_AT.as_bytes()
                            && &h.key[..] != kafka_retry::GROUP.as_bytes()
                    })
                    .cloned()
                    .collect();
                let n = kept.len();
                // Original headers, then reason and dead reason, then who
                // gave up and when (retry.dead-lettered-at, retry.group).
                let ok = r.headers.len() == n + 4
                    && r.headers[..n] == kept[..]
                    && &r.headers[n].key[..] == kafka_retry::REASON.as_bytes()
                    && header_str(r, kafka_retry::REASON).is_some_and(|v| !v.is_empty())
                    && &r.headers[n + 1].key[..] == kafka_retry::DEAD_REASON.as_bytes()
                    && header_str(r, kafka_retry::DEAD_REASON) == Some("malformed")
                    && &r.headers[n + 2].key[..] == kafka_retry::DEAD_LETTERED_AT.as_bytes()
                    && &r.headers[n + 3].key[..] == kafka_retry::GROUP.as_bytes();
                if !ok {
                    failures.push(format!(
                        "{}: dead letter headers:\n  wrote {}\n  got   {}",
                        c.name,
                        show(&written),
                        show(&r.headers)
                    ));
                }
            }
        }
    }
    let known: std::collections::HashSet<&str> = all
        .iter()
        .map(|c| c.name.as_str())
        .chain(["final-origin", "final-retry"])
        .collect();
    for name in by_case.keys().chain(dead_by_case.keys()) {
        if !known.contains(name.as_str()) {
            failures.push(format!("unexpected record {name}"));
        }
    }

    let count = |d: Dest| all.iter().filter(|c| c.dest == d).count();
    println!(
        "bad inputs tried: {} ({} on the retry topic, {} on the origin topic; by this crate {}, confluent-kafka {}, kafka-python {}, raw-key script {}, corrupt batches {}), produced in {:?}",
        all.len(),
        count(Dest::Retry),
        count(Dest::Origin),
        all.iter().filter(|c| c.via == Via::Ours).count(),
        all.iter().filter(|c| c.via == Via::Confluent).count(),
        all.iter().filter(|c| c.via == Via::KafkaPython).count(),
        all.iter().filter(|c| c.via == Via::RawKeys).count(),
        all.iter().filter(|c| c.via == Via::CorruptBatch).count(),
        produced_in
    );
    println!(
        "outcomes: handled {} (of which retried once first {}), dead-lettered malformed {} (undecodable batches among them {}); good records behind them handled {:?} after being written",
        all.iter().filter(|c| matches!(c.expect, Expect::Handled | Expect::HandledAfterRetry)).count(),
        all.iter().filter(|c| c.expect == Expect::HandledAfterRetry).count(),
        malformed.len(),
        all.iter().filter(|c| c.expect == Expect::Undecodable).count(),
        finals_in
    );
    println!("stats: {stats:?}");

    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        all_handled,
        "only {} of {handled_deliveries} deliveries",
        seen.len()
    );
    assert!(
        finals_handled,
        "a good record behind the bad ones was not handled within 10 s: a partition stalled"
    );
    assert_eq!(stats.panics, 0);
    assert_eq!(stats.dead_lettered.malformed, malformed.len() as u64);
    assert_eq!(stats.dead_lettered.total(), malformed.len() as u64);
    let retried_once = all
        .iter()
        .filter(|c| c.expect == Expect::HandledAfterRetry)
        .count() as u64;
    let relayed_valid = all
        .iter()
        .filter(|c| c.dest == Dest::Retry && c.expect == Expect::Handled)
        .count() as u64;
    assert_eq!(stats.retried, retried_once);
    assert_eq!(stats.relayed, relayed_valid + retried_once + 1);
    assert_eq!(stats.done, handled_deliveries as u64 - retried_once);
    assert_eq!(stats.send_errors, 0);
    shutdown.expect("shutdown: every engine thread alive and committed");
}

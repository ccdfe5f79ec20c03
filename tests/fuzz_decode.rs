//! Bounded fuzzing of what the crate decodes from the outside, through the
//! public API only:
//!
//! - [`retry_headers_fuzz_on_the_memory_broker`]: random retry headers
//!   (valid, invalid, random bytes) on retry-topic records of a running
//!   engine; every record ends handled or dead-lettered, exactly once.
//! - [`kafka_responses_never_panic_or_hang`]: a fake Kafka broker on
//!   127.0.0.1 answers every request correctly enough for
//!   `KafkaTransport::connect`, the producer and a group consumer, except
//!   that the responses of one API at a time are mutated (bit flips,
//!   interesting integers over counts and lengths, truncation, garbage,
//!   broken framing, wrong correlation ids, replies that never finish). The
//!   client must return errors, never panic (in any thread), never abort,
//!   and never take longer than its timeouts allow.
//!
//! The response fuzzing runs in child processes (this test binary again,
//! running the ignored `fuzz_child`) under a 4 GiB address-space limit, so
//! that an abort (a failed huge allocation) or a hang is reported with the
//! case that caused it, and fuzzing resumes after that case.
//!
//! The last two tests pin down the crashes this fuzzing found, one case each.
//!
//! Deterministic (xorshift, `KAFKA_RETRY_FUZZ_SEED`, though thread timing
//! varies the details); steps from `KAFKA_RETRY_FUZZ_ITERS` (default 600
//! response steps and 6,000 header records: a few seconds in debug), and
//! `KAFKA_RETRY_FUZZ_SECS` bounds the time spent restarting crashed children
//! (default 40). A long run:
//! `KAFKA_RETRY_FUZZ_ITERS=20000 KAFKA_RETRY_FUZZ_SECS=900 KAFKA_RETRY_FUZZ_SEED=7 cargo test --test fuzz_decode -- --nocapture`.
//! Record-batch decoding alone is fuzzed by the unit tests of
//! `src/transport/kafka/records/` and by `fuzz/` (cargo-fuzz targets
//! `decode_records` and `retry_headers`).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::fake_broker::{R, W};
use kafka_retry::transport::{Consumer, ConsumerConfig, ConsumerEvent, Producer, Transport};
use kafka_retry::{
    Engine, Header, KafkaConfig, KafkaTransport, MemoryBroker, OutRecord, Outcome, Record,
    RetryPolicy, TopicPartition,
};

// ---------------------------------------------------------------------------
// Shared helpers

/// xorshift64*: deterministic, no dependency.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// 0 to `max - 1` random bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
    /// 1 to `max` random bytes.
    fn some_bytes_nonempty(&mut self, max: usize) -> Vec<u8> {
        let n = 1 + self.below(max);
        self.bytes(n)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    env_u64("KAFKA_RETRY_FUZZ_SEED", 0x5eed_cafe_f00d_0001)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    f()
}

// ---------------------------------------------------------------------------
// 1. Retry headers through a memory-broker engine

/// What the generator meant a record's retry headers to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Intent {
    /// Every retry header valid: relayed back and handled.
    Valid,
    /// At least one header surely invalid: dead-lettered `malformed`.
    Invalid,
    /// Random bytes somewhere: either outcome is right, but exactly one.
    Either,
}

/// Retry headers for case `i`, user headers around them.
fn random_retry_headers(rng: &mut Rng, i: usize, origin: &str, now: i64) -> (Vec<Header>, Intent) {
    let names = common::REQUIRED_RETRY_HEADERS;
    let valid = |name: &str| -> Vec<u8> {
        match name {
            kafka_retry::ORIGIN_TOPIC => origin.as_bytes().to_vec(),
            kafka_retry::ORIGIN_PARTITION => b"1".to_vec(),
            kafka_retry::ORIGIN_OFFSET => b"42".to_vec(),
            kafka_retry::FIRST_RECEIVED_AT => (now - 5_000).to_string().into_bytes(),
            kafka_retry::ENQUEUED_AT => (now - 1_000).to_string().into_bytes(),
            _ => b"3".to_vec(),
        }
    };
    let invalid = |rng: &mut Rng, name: &str| -> Option<Vec<u8>> {
        let numeric = name != kafka_retry::ORIGIN_TOPIC;
        let choices: Vec<Option<Vec<u8>>> = if numeric {
            vec![
                None,
                Some(b"".to_vec()),
                Some(b"-1".to_vec()),
                Some(b"x1".to_vec()),
                Some(b"1e3".to_vec()),
                Some(b"\xff".to_vec()),
                Some("9".repeat(25).into_bytes()),
                Some(match name {
                    kafka_retry::ATTEMPTS | kafka_retry::ORIGIN_PARTITION => b"4294967296".to_vec(),
                    kafka_retry::ORIGIN_OFFSET => b"-7".to_vec(),
                    // A timestamp an hour ahead.
                    _ => (now + 3_600_000).to_string().into_bytes(),
                }),
            ]
        } else {
            vec![
                None,
                Some(b"".to_vec()),
                Some(b"no-such-topic".to_vec()),
                Some(b"\xc3\x28".to_vec()),
            ]
        };
        choices[rng.below(choices.len())].clone()
    };
    let mut hs = vec![Header::new("case", i.to_string())];
    for _ in 0..rng.below(3) {
        let k = rng.some_bytes(4);
        let v = if rng.chance(20) {
            None
        } else {
            Some(rng.some_bytes(6).into())
        };
        hs.push(Header {
            key: k.into(),
            value: v,
        });
    }
    let mut intent = Intent::Valid;
    // A third of the records have only valid retry headers; the others
    // mostly valid ones, so that one bad header is often the only one.
    let all_valid = rng.chance(33);
    for name in names {
        match if all_valid { 0 } else { rng.below(10) } {
            0..=6 => hs.push(Header::new(name, valid(name))),
            7 | 8 => {
                intent = Intent::Invalid;
                match invalid(rng, name) {
                    Some(v) => hs.push(Header::new(name, v)),
                    None if rng.chance(50) => {} // missing
                    None => hs.push(Header {
                        key: name.as_bytes().to_vec().into(),
                        value: None,
                    }),
                }
            }
            _ => {
                if intent == Intent::Valid {
                    intent = Intent::Either;
                }
                // Random bytes, sometimes digits.
                let v = if rng.chance(50) {
                    rng.some_bytes(12)
                } else {
                    (0..rng.below(14))
                        .map(|_| b'0' + rng.below(10) as u8)
                        .collect()
                };
                hs.push(Header::new(name, v));
            }
        }
    }
    // A retry.reason of any bytes is fine; the last of duplicate headers counts.
    if rng.chance(30) {
        hs.push(Header::new(kafka_retry::REASON, rng.some_bytes(50)));
    }
    if rng.chance(10) {
        hs.push(Header::new("after", "a"));
    }
    (hs, intent)
}

fn case_of(r: &Record) -> Option<usize> {
    let h = r.headers.first()?;
    if &h.key[..] != b"case" {
        return None;
    }
    std::str::from_utf8(h.value.as_deref()?).ok()?.parse().ok()
}

#[test]
fn retry_headers_fuzz_on_the_memory_broker() {
    // Records are cheap (about 0.1 ms each): ten per response-fuzz step.
    let n = env_u64("KAFKA_RETRY_FUZZ_ITERS", 600) as usize * 10;
    let broker = MemoryBroker::new();
    broker.create_topic("orders", 2).unwrap();
    broker.create_topic("elsewhere", 1).unwrap();
    let handled: Arc<Mutex<Vec<Record>>> = Arc::default();
    let h = handled.clone();
    let engine = Engine::builder(broker.clone())
        .group_id("fuzz")
        .topics(["orders"])
        .workers(2)
        .commit_interval(Duration::from_millis(50))
        .policy(RetryPolicy::new(
            Duration::from_millis(10),
            Duration::from_secs(3600),
        ))
        .handler(move |r: &Record| {
            h.lock().unwrap_or_else(|e| e.into_inner()).push(r.clone());
            Outcome::Done
        })
        .build()
        .unwrap();
    let started = Instant::now();
    let mut rng = Rng::new(seed());
    let now = now_ms();
    let mut intents = Vec::with_capacity(n);
    let mut sent_headers = Vec::with_capacity(n);
    for i in 0..n {
        let (headers, intent) = random_retry_headers(&mut rng, i, "orders", now);
        intents.push(intent);
        sent_headers.push(headers.clone());
        let mut r = OutRecord::new("fuzz-retry");
        r.headers = headers;
        r.key = if rng.chance(20) {
            None
        } else {
            Some(rng.some_bytes(4).into())
        };
        r.value = if rng.chance(20) {
            None
        } else {
            Some(rng.some_bytes(16).into())
        };
        broker.produce(r).unwrap();
    }
    let dlt_len = || -> usize {
        (0..2)
            .map(|p| broker.records("fuzz-dlt", p).map_or(0, |r| r.len()))
            .sum()
    };
    let finished = wait_until(Duration::from_secs(30), || {
        handled.lock().unwrap_or_else(|e| e.into_inner()).len() + dlt_len() >= n
    });
    thread::sleep(Duration::from_millis(100));
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(10)).expect("shutdown");
    let took = started.elapsed();

    let mut outcome: HashMap<usize, Vec<&'static str>> = HashMap::new();
    let handled = handled.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for r in &handled {
        outcome
            .entry(case_of(r).expect("case header first"))
            .or_default()
            .push("handled");
    }
    let dead: Vec<Record> = (0..2)
        .flat_map(|p| broker.records("fuzz-dlt", p).unwrap_or_default())
        .collect();
    for r in &dead {
        let reason = r
            .header(kafka_retry::DEAD_REASON)
            .and_then(|h| h.value.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let i = case_of(r).expect("case header first");
        assert!(r
            .header(kafka_retry::REASON)
            .is_some_and(|h| h.value.is_some()));
        match reason.as_deref() {
            Some("malformed") => {
                // The written headers come first, unchanged (reason headers aside).
                let kept: Vec<&Header> = sent_headers[i]
                    .iter()
                    .filter(|h| {
                        &h.key[..] != kafka_retry::REASON.as_bytes()
                            && &h.key[..] != kafka_retry::DEAD_REASON.as_bytes()
                    })
                    .collect();
                let got: Vec<&Header> = r.headers.iter().take(kept.len()).collect();
                assert_eq!(got, kept, "case {i}: dead letter headers");
                outcome.entry(i).or_default().push("malformed");
            }
            // Random digits can make a valid but ancient first-received-at.
            Some("expired") => outcome.entry(i).or_default().push("expired"),
            other => panic!("case {i}: dead-lettered with reason {other:?}: {r:?}"),
        }
    }
    let mut counts: HashMap<Intent, [usize; 3]> = HashMap::new();
    for (i, intent) in intents.iter().enumerate() {
        let o = outcome.get(&i).cloned().unwrap_or_default();
        assert_eq!(
            o.len(),
            1,
            "case {i} ({intent:?}): outcomes {o:?}, headers {:?}",
            sent_headers[i]
        );
        match (intent, o[0]) {
            (Intent::Valid, "handled") | (Intent::Invalid, "malformed") | (Intent::Either, _) => {}
            _ => panic!(
                "case {i} ({intent:?}) ended {}: headers {:?}",
                o[0], sent_headers[i]
            ),
        }
        let slot = match o[0] {
            "handled" => 0,
            "malformed" => 1,
            _ => 2,
        };
        counts.entry(*intent).or_default()[slot] += 1;
    }
    println!(
        "retry header fuzz: {n} records in {took:?}: valid {:?}, invalid {:?}, random {:?} ([handled, malformed, expired]); stats {stats:?}",
        counts.get(&Intent::Valid),
        counts.get(&Intent::Invalid),
        counts.get(&Intent::Either)
    );
    assert!(finished, "not every record ended: {stats:?}");
    assert_eq!(stats.panics, 0);
    assert_eq!(stats.relayed as usize, handled.len());
    assert_eq!(stats.dead_lettered.total() as usize, dead.len());
}

// ---------------------------------------------------------------------------
// 2. A fake Kafka broker

/// API keys.
mod api {
    pub const PRODUCE: i16 = 0;
    pub const FETCH: i16 = 1;
    pub const LIST_OFFSETS: i16 = 2;
    pub const METADATA: i16 = 3;
    pub const OFFSET_COMMIT: i16 = 8;
    pub const OFFSET_FETCH: i16 = 9;
    pub const FIND_COORDINATOR: i16 = 10;
    pub const JOIN_GROUP: i16 = 11;
    pub const HEARTBEAT: i16 = 12;
    pub const LEAVE_GROUP: i16 = 13;
    pub const SYNC_GROUP: i16 = 14;
    pub const API_VERSIONS: i16 = 18;
    pub const CREATE_TOPICS: i16 = 19;

    pub fn name(key: i16) -> &'static str {
        match key {
            PRODUCE => "Produce",
            FETCH => "Fetch",
            LIST_OFFSETS => "ListOffsets",
            METADATA => "Metadata",
            OFFSET_COMMIT => "OffsetCommit",
            OFFSET_FETCH => "OffsetFetch",
            FIND_COORDINATOR => "FindCoordinator",
            JOIN_GROUP => "JoinGroup",
            HEARTBEAT => "Heartbeat",
            LEAVE_GROUP => "LeaveGroup",
            SYNC_GROUP => "SyncGroup",
            API_VERSIONS => "ApiVersions",
            CREATE_TOPICS => "CreateTopics",
            _ => "?",
        }
    }
}

/// The one version the fake broker offers per API: the oldest the client
/// accepts, all non-flexible (plain arrays and strings), except ApiVersions
/// v3 which the client always tries first.
const OFFERED: &[(i16, i16, i16)] = &[
    (api::API_VERSIONS, 0, 3),
    (api::METADATA, 1, 1),
    (api::PRODUCE, 3, 3),
    (api::FETCH, 4, 4),
    (api::LIST_OFFSETS, 1, 1),
    (api::FIND_COORDINATOR, 0, 0),
    (api::JOIN_GROUP, 0, 0),
    (api::SYNC_GROUP, 0, 0),
    (api::HEARTBEAT, 0, 0),
    (api::LEAVE_GROUP, 0, 0),
    (api::OFFSET_FETCH, 1, 1),
    (api::OFFSET_COMMIT, 2, 2),
    (api::CREATE_TOPICS, 2, 2),
];

/// The topic the fake broker knows, and its partitions.
const TOPIC: &str = "t";
const PARTITIONS: i32 = 2;

/// A magic-2 record batch of three records at `base`, uncompressed.
fn record_batch(base: i64) -> Vec<u8> {
    let ts = 1_700_000_000_000i64;
    let mut records = W::default();
    for i in 0..3i64 {
        let mut r = W::default();
        r.i8(0).varint(i).varint(i); // attributes, timestamp delta, offset delta
        let key = format!("k{}", base + i);
        r.vbytes(if i == 1 { None } else { Some(key.as_bytes()) });
        let value = format!("value-{}", base + i);
        r.vbytes(Some(value.as_bytes()));
        r.varint(2);
        r.vbytes(Some(b"h")).vbytes(Some(b"v"));
        r.vbytes(Some(b"n")).vbytes(None);
        records.varint(r.0.len() as i64);
        records.0.extend_from_slice(&r.0);
    }
    // From attributes on: covered by the CRC.
    let mut tail = W::default();
    tail.i16(0) // attributes
        .i32(2) // last offset delta
        .i64(ts)
        .i64(ts + 2)
        .i64(-1) // producer id
        .i16(-1) // producer epoch
        .i32(-1) // base sequence
        .i32(3);
    tail.0.extend_from_slice(&records.0);
    let crc = crc32c::crc32c(&tail.0);
    let mut b = W::default();
    b.i64(base)
        .i32((4 + 1 + 4 + tail.0.len()) as i32) // leader epoch, magic, crc, rest
        .i32(-1)
        .i8(2)
        .i32(crc as i32);
    b.0.extend_from_slice(&tail.0);
    b.0
}

/// `ConsumerProtocolSubscription` v0 naming [`TOPIC`].
fn subscription() -> Vec<u8> {
    let mut w = W::default();
    w.i16(0).i32(1).str(TOPIC).bytes(None);
    w.0
}

/// `ConsumerProtocolAssignment` v0: every partition of [`TOPIC`].
fn assignment() -> Vec<u8> {
    let mut w = W::default();
    w.i16(0).i32(1).str(TOPIC).i32(PARTITIONS);
    for p in 0..PARTITIONS {
        w.i32(p);
    }
    w.bytes(None);
    w.0
}

/// What the fake broker remembers.
struct State {
    port: u16,
    /// Next offset handed out by Produce.
    offsets: AtomicU64,
    /// Topics created with CreateTopics (one partition each), besides [`TOPIC`].
    created: Mutex<HashSet<String>>,
}

/// The valid reply body (after the response header) to one request.
fn answer(key: i16, version: i16, mut body: R<'_>, state: &State) -> Vec<u8> {
    let port = state.port;
    let offsets = &state.offsets;
    let mut w = W::default();
    match key {
        api::API_VERSIONS => {
            w.i16(0);
            if version >= 3 {
                w.uvarint(OFFERED.len() as u64 + 1);
                for &(k, lo, hi) in OFFERED {
                    w.i16(k).i16(lo).i16(hi).uvarint(0);
                }
                w.i32(0).uvarint(0);
            } else {
                w.i32(OFFERED.len() as i32);
                for &(k, lo, hi) in OFFERED {
                    w.i16(k).i16(lo).i16(hi);
                }
                if version >= 1 {
                    w.i32(0);
                }
            }
        }
        api::METADATA => {
            let topics: Vec<String> = match body.i32() {
                Some(n) if n >= 0 => (0..n).filter_map(|_| body.str()).collect(),
                _ => vec![TOPIC.to_string()],
            };
            w.i32(1)
                .i32(0)
                .str("127.0.0.1")
                .i32(i32::from(port))
                .nstr(None);
            w.i32(0); // controller
            w.i32(topics.len() as i32);
            for t in &topics {
                if t == TOPIC {
                    w.i16(0).str(t).i8(0).i32(PARTITIONS);
                    for p in 0..PARTITIONS {
                        w.i16(0).i32(p).i32(0).i32(1).i32(0).i32(1).i32(0);
                    }
                } else if state
                    .created
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(t)
                {
                    w.i16(0).str(t).i8(0).i32(1);
                    w.i16(0).i32(0).i32(0).i32(1).i32(0).i32(1).i32(0);
                } else {
                    w.i16(3).str(t).i8(0).i32(0);
                }
            }
        }
        api::PRODUCE => {
            let _transactional_id = body.nstr();
            let _acks = body.i16();
            let _timeout = body.i32();
            let reply = body.topics(|b| {
                let (Some(p), Some(_records)) = (b.i32(), b.nbytes()) else {
                    return None;
                };
                Some(p)
            });
            w.topics(&reply, |w, p| {
                let base = offsets.fetch_add(10, Ordering::Relaxed) as i64;
                w.i32(*p).i16(0).i64(base).i64(-1);
            });
            w.i32(0);
        }
        api::FETCH => {
            let _ = (body.i32(), body.i32(), body.i32(), body.i32(), body.i8());
            let reply = body.topics(|b| {
                let (Some(p), Some(offset), Some(_max)) = (b.i32(), b.i64(), b.i32()) else {
                    return None;
                };
                Some((p, offset))
            });
            w.i32(0).topics(&reply, |w, &(p, offset)| {
                w.i32(p).i16(0).i64(offset + 3).i64(offset + 3).i32(-1);
                w.bytes(Some(&record_batch(offset)));
            });
        }
        api::LIST_OFFSETS => {
            let _replica = body.i32();
            let reply = body.topics(|b| {
                let (Some(p), Some(_ts)) = (b.i32(), b.i64()) else {
                    return None;
                };
                Some(p)
            });
            w.topics(&reply, |w, p| {
                w.i32(*p).i16(0).i64(-1).i64(0);
            });
        }
        api::FIND_COORDINATOR => {
            w.i16(0).i32(0).str("127.0.0.1").i32(i32::from(port));
        }
        api::JOIN_GROUP => {
            w.i16(0).i32(1).str("range").str("m-1").str("m-1");
            w.i32(1).str("m-1").bytes(Some(&subscription()));
        }
        api::SYNC_GROUP => {
            w.i16(0).bytes(Some(&assignment()));
        }
        api::HEARTBEAT | api::LEAVE_GROUP => {
            w.i16(0);
        }
        api::OFFSET_FETCH => {
            // Partition 0 has a committed offset, the others are reset
            // with ListOffsets.
            let _group = body.str();
            w.i32(1).str(TOPIC).i32(PARTITIONS);
            for p in 0..PARTITIONS {
                w.i32(p)
                    .i64(if p == 0 { 5 } else { -1 })
                    .nstr(Some(""))
                    .i16(0);
            }
        }
        api::OFFSET_COMMIT => {
            let _ = (body.str(), body.i32(), body.str(), body.i64());
            let reply = body.topics(|b| {
                let (Some(p), Some(_o), Some(_m)) = (b.i32(), b.i64(), b.nstr()) else {
                    return None;
                };
                Some(p)
            });
            w.topics(&reply, |w, p| {
                w.i32(*p).i16(0);
            });
        }
        api::CREATE_TOPICS => {
            let name = body.count().and_then(|_| body.str()).unwrap_or_default();
            state
                .created
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone());
            w.i32(0).i32(1).str(&name).i16(0).nstr(None);
        }
        _ => {}
    }
    w.0
}

/// What the broker does after writing a (mutated) reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// Keep serving the connection.
    Keep,
    /// Close it.
    Close,
    /// Stop answering but keep it open (the client must time out).
    Hold,
}

/// Which API's replies are mutated, and how.
struct Chaos {
    /// API key whose replies are mutated; -1 for none.
    target: AtomicI32,
    /// Never hold the connection (for APIs the client waits long for by design).
    no_hold: AtomicBool,
    rng: Mutex<Rng>,
    mutations: AtomicU64,
    /// The last mutations, for failure reports.
    log: Mutex<Vec<String>>,
    /// Reply bodies to send instead of the valid ones, by API key
    /// (regression cases).
    fixed: Mutex<HashMap<i16, Vec<u8>>>,
}

impl Chaos {
    fn note(&self, s: String) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= 8 {
            log.remove(0);
        }
        log.push(s);
    }

    fn recent(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("; ")
    }

    /// Mutates a whole reply frame (length, correlation id, body).
    fn mutate(&self, key: i16, frame: Vec<u8>) -> (Vec<u8>, After) {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        self.mutations.fetch_add(1, Ordering::Relaxed);
        let mut body = frame[8..].to_vec();
        let mut corr = [frame[4], frame[5], frame[6], frame[7]];
        let roll = rng.below(200);
        let (what, fix_len, after) = match roll {
            0..=139 => {
                let what = mutate_body(&mut rng, &mut body);
                (what, true, After::Keep)
            }
            140..=159 => {
                let what = mutate_body(&mut rng, &mut body);
                (format!("{what}, length not fixed"), false, After::Close)
            }
            160..=173 => {
                let at = rng.below(4);
                corr[at] ^= 1 << rng.below(8);
                ("correlation id".to_string(), true, After::Keep)
            }
            174..=185 => {
                let cut = rng.below(frame.len());
                self.note(format!(
                    "{}: frame cut at {cut} of {}",
                    api::name(key),
                    frame.len()
                ));
                return (frame[..cut].to_vec(), After::Close);
            }
            186..=197 => {
                let garbage = rng.some_bytes(64);
                self.note(format!(
                    "{}: {} random bytes instead",
                    api::name(key),
                    garbage.len()
                ));
                return (garbage, After::Close);
            }
            _ if self.no_hold.load(Ordering::Relaxed) => {
                let what = mutate_body(&mut rng, &mut body);
                (what, true, After::Keep)
            }
            _ => {
                // A reply that never finishes: half of it, then silence.
                let cut = rng.below(frame.len());
                self.note(format!("{}: hold after {cut} bytes", api::name(key)));
                return (frame[..cut].to_vec(), After::Hold);
            }
        };
        self.note(format!("{}: {what}", api::name(key)));
        let len = if fix_len {
            (body.len() + 4) as i32
        } else {
            i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]])
        };
        let mut out = Vec::with_capacity(body.len() + 8);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&corr);
        out.extend_from_slice(&body);
        (out, after)
    }
}

/// Integers that make decoders misbehave when they land on a count or a length.
const INTERESTING: &[i32] = &[
    0,
    1,
    -1,
    -2,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0x8000,
    0xffff,
    0x10000,
    0x100_0000,
    0x7fff_ffff,
    i32::MIN,
    0x4000_0000,
    1 << 20,
];

fn mutate_body(rng: &mut Rng, body: &mut Vec<u8>) -> String {
    let n = body.len();
    match rng.below(8) {
        0 | 1 => {
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                if n > 0 {
                    let at = rng.below(n);
                    body[at] ^= 1 << rng.below(8);
                }
            }
            format!("{flips} bit flip(s)")
        }
        2 | 3 => {
            // A 4-byte integer over a count, a length, an offset...
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let at = rng.below(n.saturating_sub(3).max(1));
            for (i, b) in v.to_be_bytes().iter().enumerate() {
                if let Some(x) = body.get_mut(at + i) {
                    *x = *b;
                }
            }
            format!("i32 {v:#x} at {at}")
        }
        4 => {
            let v = INTERESTING[rng.below(INTERESTING.len())] as i16;
            let at = rng.below(n.saturating_sub(1).max(1));
            for (i, b) in v.to_be_bytes().iter().enumerate() {
                if let Some(x) = body.get_mut(at + i) {
                    *x = *b;
                }
            }
            format!("i16 {v:#x} at {at}")
        }
        5 => {
            let cut = rng.below(n + 1);
            body.truncate(cut);
            format!("body cut at {cut} of {n}")
        }
        6 => {
            let at = rng.below(n + 1);
            let extra = rng.some_bytes_nonempty(16);
            let k = extra.len();
            body.splice(at..at, extra);
            format!("{k} random bytes inserted at {at}")
        }
        _ => {
            let at = rng.below(n + 1);
            let len = rng.below(n - at + 1).min(16);
            body.drain(at..at + len);
            format!("{len} bytes removed at {at}")
        }
    }
}

/// A fake broker: one thread per connection, one reply per request.
struct FakeBroker {
    port: u16,
    chaos: Arc<Chaos>,
    stop: Arc<AtomicBool>,
}

impl FakeBroker {
    fn start(seed: u64) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake broker");
        let port = listener.local_addr().expect("local addr").port();
        let chaos = Arc::new(Chaos {
            target: AtomicI32::new(-1),
            no_hold: AtomicBool::new(false),
            rng: Mutex::new(Rng::new(seed)),
            mutations: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            fixed: Mutex::new(HashMap::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(State {
            port,
            offsets: AtomicU64::new(0),
            created: Mutex::new(HashSet::new()),
        });
        {
            let (chaos, stop) = (chaos.clone(), stop.clone());
            thread::Builder::new()
                .name("fake-broker".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let Ok(conn) = conn else { continue };
                        let (chaos, stop, state) = (chaos.clone(), stop.clone(), state.clone());
                        let _ = thread::Builder::new()
                            .name("fake-broker-conn".into())
                            .spawn(move || serve(conn, &state, &chaos, &stop));
                    }
                })
                .expect("spawn the fake broker");
        }
        FakeBroker { port, chaos, stop }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Mutate replies of `key` from now on (-1: none).
    fn target(&self, key: i16, no_hold: bool) {
        self.chaos.no_hold.store(no_hold, Ordering::Relaxed);
        self.chaos.target.store(i32::from(key), Ordering::Relaxed);
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut conn: TcpStream, state: &State, chaos: &Chaos, stop: &AtomicBool) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let mut held = false;
    loop {
        let mut len = [0u8; 4];
        match read_exact_or_stop(&mut conn, &mut len, stop) {
            Some(()) => {}
            None => return,
        }
        let len = i32::from_be_bytes(len).clamp(0, 64 << 20) as usize;
        let mut frame = vec![0u8; len];
        if read_exact_or_stop(&mut conn, &mut frame, stop).is_none() {
            return;
        }
        if held {
            continue; // silence until the client gives up
        }
        let mut r = R(&frame);
        let (Some(key), Some(version), Some(corr), Some(_client)) =
            (r.i16(), r.i16(), r.i32(), r.nstr())
        else {
            return;
        };
        if key == api::API_VERSIONS && version >= 3 {
            // Request header v2: tagged fields (none from this client).
            let _ = r.take(1);
        }
        let fixed = chaos
            .fixed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let body = fixed.unwrap_or_else(|| answer(key, version, r, state));
        let mut out = W::default();
        out.i32((body.len() + 4) as i32).i32(corr);
        out.0.extend_from_slice(&body);
        let (bytes, after) = if chaos.target.load(Ordering::Relaxed) == i32::from(key) {
            chaos.mutate(key, out.0)
        } else {
            (out.0, After::Keep)
        };
        if conn.write_all(&bytes).is_err() {
            return;
        }
        match after {
            After::Keep => {}
            After::Close => {
                let _ = conn.shutdown(Shutdown::Both);
                return;
            }
            After::Hold => held = true,
        }
    }
}

/// Reads exactly `buf.len()` bytes; None on EOF, error or stop.
fn read_exact_or_stop(conn: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> Option<()> {
    let mut filled = 0;
    while filled < buf.len() {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        match conn.read(&mut buf[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return None,
        }
    }
    Some(())
}

// ---------------------------------------------------------------------------
// 3. The client against the fake broker

const REQUEST_TIMEOUT: Duration = Duration::from_millis(150);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(400);
const MAX_RETRIES: u32 = 2;

fn client_config(addr: &str) -> KafkaConfig {
    KafkaConfig::new(addr)
        .request_timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .retry_backoff(Duration::from_millis(2))
        .max_retries(MAX_RETRIES)
        .delivery_timeout(Duration::from_secs(1))
        .fetch_max_wait(Duration::from_millis(5))
        .linger(Duration::from_millis(0))
        // The fake broker answers no InitProducerId.
        .idempotence(false)
}

fn consumer_config(group: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group, [TOPIC]);
    c.session_timeout = Duration::from_millis(600);
    c.rebalance_timeout = Duration::from_millis(600);
    c
}

/// Polls until the consumer is assigned and has records (or `tries` polls).
fn poll_some(c: &mut dyn Consumer, tries: usize) -> (bool, Vec<Record>) {
    let mut assigned = false;
    let mut records = Vec::new();
    for _ in 0..tries {
        match c.poll(Duration::from_millis(20)) {
            Ok(ConsumerEvent::Assigned(_)) => assigned = true,
            Ok(ConsumerEvent::Records(rs)) => {
                records.extend(rs);
                if assigned && !records.is_empty() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (assigned, records)
}

/// The fake broker works: connect, metadata, create, produce, a group
/// consumer that joins, fetches, commits and leaves.
#[test]
fn smoke() {
    let broker = FakeBroker::start(1);
    let kafka = KafkaTransport::connect(client_config(&broker.addr())).expect("connect");
    assert_eq!(kafka.partition_count(TOPIC).unwrap(), Some(PARTITIONS));
    assert_eq!(kafka.partition_count("other").unwrap(), None);
    kafka.create_topic("new", 1, Some(1)).unwrap();
    let producer = kafka.producer().unwrap();
    let d = producer
        .send(OutRecord::new(TOPIC).partition(1).value("v"))
        .unwrap();
    assert_eq!((d.partition, d.topic.as_str()), (1, TOPIC));
    let mut c = kafka.consumer(consumer_config("g")).unwrap();
    let (assigned, records) = poll_some(&mut *c, 50);
    assert!(assigned);
    assert!(!records.is_empty());
    let r = &records[0];
    assert_eq!(r.topic, TOPIC);
    assert_eq!(r.headers.len(), 2);
    assert_eq!(r.headers[1].value, None);
    // Partition 0 starts at its committed offset 5, partition 1 at 0.
    let first: HashMap<i32, i64> = records
        .iter()
        .rev()
        .map(|r| (r.partition, r.offset))
        .collect();
    assert!(matches!(first.get(&0), None | Some(5)), "{first:?}");
    assert!(matches!(first.get(&1), None | Some(0)), "{first:?}");
    c.commit(&[(TopicPartition::new(TOPIC, 0), 6)]).unwrap();
    c.close().unwrap();
    assert_eq!(broker.chaos.mutations.load(Ordering::Relaxed), 0);
}

/// What one fuzz step exercises.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// `KafkaTransport::connect` with ApiVersions or Metadata mutated.
    Connect(i16),
    /// `partition_count` / `create_topic` with Metadata or CreateTopics mutated.
    Admin(i16),
    /// `send` / `send_batch` with Produce mutated.
    Produce,
    /// `poll` on a joined consumer with Fetch (or ListOffsets) mutated.
    Fetch(i16),
    /// A consumer's whole life with one group API mutated.
    Group(i16),
}

fn pick(rng: &mut Rng) -> Target {
    match rng.below(100) {
        0..=9 => Target::Connect(if rng.chance(50) {
            api::API_VERSIONS
        } else {
            api::METADATA
        }),
        10..=17 => Target::Admin(if rng.chance(75) {
            api::METADATA
        } else {
            api::CREATE_TOPICS
        }),
        18..=37 => Target::Produce,
        38..=89 => Target::Fetch(if rng.chance(90) {
            api::FETCH
        } else {
            api::LIST_OFFSETS
        }),
        _ => {
            let keys = [
                api::FIND_COORDINATOR,
                api::JOIN_GROUP,
                api::SYNC_GROUP,
                api::HEARTBEAT,
                api::OFFSET_FETCH,
                api::OFFSET_COMMIT,
                api::LEAVE_GROUP,
            ];
            Target::Group(keys[rng.below(keys.len())])
        }
    }
}

/// Longest any one call may take: every retry of every request timing out
/// or reconnecting, plus slack for a loaded machine.
fn call_bound() -> Duration {
    (CONNECT_TIMEOUT + REQUEST_TIMEOUT * 2) * (MAX_RETRIES + 2) + Duration::from_secs(2)
}

/// [`call_bound`] for `what`: `create_topic` nests retries (CreateTopics
/// attempts, each retrying its connection) and then waits for the topic to
/// show in metadata (each read retrying its connection).
fn bound_for(what: &str) -> Duration {
    if what == "create_topic" {
        call_bound() * (MAX_RETRIES + 2)
    } else {
        call_bound()
    }
}

/// Panics anywhere in the child (client threads included).
fn panics() -> &'static Mutex<Vec<String>> {
    static P: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    P.get_or_init(Mutex::default)
}

struct Child {
    broker: FakeBroker,
    kafka: Option<KafkaTransport>,
    producer: Option<Arc<dyn Producer>>,
    consumer: Option<Box<dyn Consumer>>,
    failures: Vec<String>,
    slowest: (Duration, String),
    calls: u64,
    errors: u64,
    records: u64,
    /// Records standing in for a batch the client could not decode.
    undecodable: u64,
}

impl Child {
    fn kafka(&mut self) -> Option<KafkaTransport> {
        if self.kafka.is_none() {
            self.broker.target(-1, false);
            self.kafka = KafkaTransport::connect(client_config(&self.broker.addr())).ok();
        }
        self.kafka.clone()
    }

    /// Times one call; a call over the bound is a failure.
    fn timed<T>(&mut self, what: &str, f: impl FnOnce() -> kafka_retry::Result<T>) -> Option<T> {
        let start = Instant::now();
        let r = f();
        let took = start.elapsed();
        self.calls += 1;
        if took > self.slowest.0 {
            self.slowest = (took, what.to_string());
        }
        if took > bound_for(what) {
            self.failures.push(format!(
                "{what} took {took:?} (bound {:?}); recent mutations: {}",
                bound_for(what),
                self.broker.chaos.recent()
            ));
        }
        match r {
            Ok(v) => Some(v),
            Err(_) => {
                self.errors += 1;
                None
            }
        }
    }

    fn check_records(&mut self, records: &[Record], what: &str) {
        self.records += records.len() as u64;
        self.undecodable += records
            .iter()
            .filter(|r| r.header("kafka-retry.undecodable").is_some())
            .count() as u64;
        let mut last: HashMap<i32, i64> = HashMap::new();
        for r in records {
            if r.topic != TOPIC || !(0..PARTITIONS).contains(&r.partition) {
                self.failures.push(format!(
                    "{what}: record of a partition never assigned: {}; recent mutations: {}",
                    r.topic_partition(),
                    self.broker.chaos.recent()
                ));
            }
            if let Some(prev) = last.insert(r.partition, r.offset) {
                if r.offset <= prev {
                    self.failures.push(format!(
                        "{what}: offsets not ascending in one poll: {prev} then {}; recent mutations: {}",
                        r.offset,
                        self.broker.chaos.recent()
                    ));
                }
            }
        }
    }

    fn step(&mut self, target: Target, i: u64) {
        match target {
            Target::Connect(key) => {
                self.broker.target(key, false);
                let addr = self.broker.addr();
                if let Some(k) =
                    self.timed("connect", || KafkaTransport::connect(client_config(&addr)))
                {
                    let _ =
                        self.timed("partition_count after connect", || k.partition_count(TOPIC));
                }
            }
            Target::Admin(key) => {
                let Some(k) = self.kafka() else { return };
                self.broker.target(key, false);
                let _ = self.timed("partition_count", || k.partition_count(TOPIC));
                let _ = self.timed("create_topic", || {
                    k.create_topic(&format!("n{i}"), 1, Some(1))
                });
            }
            Target::Produce => {
                let Some(k) = self.kafka() else { return };
                if self.producer.is_none() {
                    self.broker.target(-1, false);
                    self.producer = k.producer().ok();
                }
                let Some(p) = self.producer.clone() else {
                    return;
                };
                self.broker.target(api::PRODUCE, false);
                let _ = self.timed("send", || {
                    p.send(OutRecord::new(TOPIC).partition(0).key("k").value("v"))
                });
                let batch: Vec<OutRecord> = (0..3)
                    .map(|j| OutRecord::new(TOPIC).partition(j % PARTITIONS).value("v"))
                    .collect();
                let start = Instant::now();
                let results = p.send_batch(batch);
                let took = start.elapsed();
                if results.len() != 3 {
                    self.failures.push(format!(
                        "send_batch returned {} results for 3",
                        results.len()
                    ));
                }
                if took > call_bound() {
                    self.failures.push(format!(
                        "send_batch took {took:?}; {}",
                        self.broker.chaos.recent()
                    ));
                }
            }
            Target::Fetch(key) => {
                let Some(k) = self.kafka() else { return };
                if self.consumer.is_none() {
                    self.broker.target(-1, false);
                    let Ok(mut c) = k.consumer(consumer_config(&format!("fetch-{i}"))) else {
                        return;
                    };
                    let (assigned, _) = poll_some(&mut *c, 20);
                    if !assigned {
                        return;
                    }
                    self.consumer = Some(c);
                }
                self.broker.target(key, false);
                let Some(mut c) = self.consumer.take() else {
                    return;
                };
                let polled = self.timed("poll", || c.poll(Duration::from_millis(10)));
                match polled {
                    Some(ConsumerEvent::Records(rs)) => {
                        self.check_records(&rs, "poll");
                        self.consumer = Some(c);
                    }
                    Some(_) => self.consumer = Some(c),
                    // An error from poll: start with a fresh consumer.
                    None => {
                        self.broker.target(-1, false);
                        let _ = c.close();
                    }
                }
            }
            Target::Group(key) => {
                let Some(k) = self.kafka() else { return };
                // JoinGroup and SyncGroup replies may take the rebalance
                // timeout + 5 s by design: never hold those.
                let no_hold = matches!(key, api::JOIN_GROUP | api::SYNC_GROUP);
                self.broker.target(key, no_hold);
                let Some(mut c) = self.timed("consumer", || {
                    k.consumer(consumer_config(&format!("g-{i}")))
                }) else {
                    return;
                };
                let start = Instant::now();
                let (_, records) = poll_some(&mut *c, 6);
                let took = start.elapsed();
                if took > call_bound() * 6 {
                    self.failures.push(format!(
                        "6 polls took {took:?}; {}",
                        self.broker.chaos.recent()
                    ));
                }
                self.check_records(&records, "group poll");
                let tp = TopicPartition::new(TOPIC, 0);
                let _ = self.timed("commit", || c.commit(&[(tp, 1)]));
                let _ = self.timed("close", || c.close());
            }
        }
        let mut p = panics().lock().unwrap_or_else(|e| e.into_inner());
        for msg in p.drain(..) {
            self.failures.push(format!(
                "panic: {msg}; recent mutations: {}",
                self.broker.chaos.recent()
            ));
        }
    }
}

const CHILD_ENV: &str = "KAFKA_RETRY_FUZZ_CHILD";

/// The fuzz loop; run by [`kafka_responses_never_panic_or_hang`] in a child
/// process (`KAFKA_RETRY_FUZZ_CHILD=<from>:<to>:<progress file>`).
#[test]
#[ignore = "run by kafka_responses_never_panic_or_hang in a child process"]
fn fuzz_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let from: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let to: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let progress = PathBuf::from(parts.next().unwrap_or("fuzz-progress"));
    std::panic::set_hook(Box::new(|info| {
        let name = thread::current().name().unwrap_or("?").to_string();
        panics()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("thread {name}: {info}"));
    }));
    let mut child = Child {
        broker: FakeBroker::start(seed() ^ from.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        kafka: None,
        producer: None,
        consumer: None,
        failures: Vec::new(),
        slowest: (Duration::ZERO, String::new()),
        calls: 0,
        errors: 0,
        records: 0,
        undecodable: 0,
    };
    let mut rng = Rng::new(seed() ^ from);
    let started = Instant::now();
    let mut per_target: HashMap<String, (u64, Duration)> = HashMap::new();
    for i in from..to {
        let target = pick(&mut rng);
        // Written before the step: if it aborts, the parent knows which one.
        let _ = std::fs::write(&progress, format!("{i}\t{target:?}"));
        let name = format!("{target:?}");
        let step_started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| child.step(target, i)));
        let entry = per_target
            .entry(name.split('(').next().unwrap_or("?").to_string())
            .or_default();
        entry.0 += 1;
        entry.1 += step_started.elapsed();
        if result.is_err() {
            let msgs: Vec<String> = panics()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
                .collect();
            child.failures.push(format!(
                "step {i} {target:?} panicked: {}; recent mutations: {}",
                msgs.join(" | "),
                child.broker.chaos.recent()
            ));
            // The transport may be in any state after a panic: start over.
            child.consumer = None;
            child.producer = None;
            child.kafka = None;
        }
    }
    let _ = std::fs::write(&progress, format!("{to}\tdone"));
    child.consumer = None;
    let mut targets: Vec<_> = per_target.into_iter().collect();
    targets.sort();
    println!(
        "FUZZ-SUMMARY: steps {from}..{to} in {:?}: {} replies mutated, {} calls ({} returned errors), {} records polled ({} undecodable), slowest call {:?} ({}); steps and time by target {targets:?}",
        started.elapsed(),
        child.broker.chaos.mutations.load(Ordering::Relaxed),
        child.calls,
        child.errors,
        child.records,
        child.undecodable,
        child.slowest.0,
        child.slowest.1
    );
    for f in &child.failures {
        println!("FUZZ-FAILURE: {f}");
    }
}

/// How a child process ended.
struct ChildRun {
    ok: bool,
    /// Why not: exit status and the abort or panic message with the first
    /// frames of the crate and of kafka-protocol in its backtrace.
    why: String,
    stdout: String,
}

/// Runs the ignored test `name` of this binary in a child process with
/// `env`, killed after `budget`; `limit_memory` caps its address space at
/// 4 GiB so that a huge allocation fails fast instead of eating the machine.
fn run_child(name: &str, env: &[(&str, String)], limit_memory: bool, budget: Duration) -> ChildRun {
    let exe = std::env::current_exe().expect("test binary path");
    let limit = if limit_memory {
        "ulimit -v 4194304 2>/dev/null; "
    } else {
        ""
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{limit}exec \"$0\" \"$@\""))
        .arg(&exe)
        .args(common::child_test_args(name))
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn a child test process");
    let mut out = child.stdout.take().expect("child stdout");
    let mut err = child.stderr.take().expect("child stderr");
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + budget;
    let mut hung = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() > deadline => {
                hung = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let ok = !hung && status.is_some_and(|s| s.success());
    let why = if ok {
        String::new()
    } else if hung {
        format!("hung (killed after {budget:?})")
    } else {
        format!(
            "{}: {}",
            status.map_or("no exit status".to_string(), |s| s.to_string()),
            crash_signature(&stderr)
        )
    };
    ChildRun { ok, why, stdout }
}

/// The abort or panic message of a crashed child, with the first frames of
/// kafka-protocol and of this crate in its backtrace.
fn crash_signature(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let message = lines
        .iter()
        .find(|l| l.contains("memory allocation of") || l.contains("panicked at"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| {
            let tail = &lines[lines.len().saturating_sub(2)..];
            tail.join(" | ")
        });
    let frame = |needle: &str| {
        lines
            .iter()
            .filter(|l| {
                l.trim_start()
                    .split_once(": ")
                    .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
            })
            .find(|l| l.contains(needle))
            .map(|l| {
                l.trim_start()
                    .split_once(": ")
                    .map_or(*l, |(_, f)| f)
                    .to_string()
            })
    };
    let frames: Vec<String> = [
        frame("kafka_protocol::messages::").or_else(|| frame("kafka_protocol::")),
        frame("kafka_retry::"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if frames.is_empty() {
        message
    } else {
        format!("{message} in {}", frames.join(" <- "))
    }
}

/// Runs `fuzz_child` in child processes until every step ran, restarting
/// after a step that killed its process, and fails listing every distinct
/// failure.
#[test]
fn kafka_responses_never_panic_or_hang() {
    let iters = env_u64("KAFKA_RETRY_FUZZ_ITERS", 600);
    // Restarting after crashes is bounded in time: a crash every few steps
    // must not turn the test into minutes.
    let budget = Duration::from_secs(env_u64("KAFKA_RETRY_FUZZ_SECS", 40));
    let progress = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fuzz-decode-progress-{}", std::process::id()));
    let started = Instant::now();
    let mut from = 0u64;
    let mut failures: Vec<String> = Vec::new();
    let mut summaries: Vec<String> = Vec::new();
    let mut restarts = 0;
    while from < iters && started.elapsed() < budget {
        let _ = std::fs::remove_file(&progress);
        let spec = format!("{from}:{iters}:{}", progress.display());
        let child_budget = Duration::from_secs(60) + call_bound() * 4;
        let run = run_child("fuzz_child", &[(CHILD_ENV, spec)], true, child_budget);
        for line in run.stdout.lines() {
            // libtest may print "test fuzz_child ... " on the same line first.
            if let Some((_, f)) = line.split_once("FUZZ-FAILURE: ") {
                failures.push(f.to_string());
            }
            if let Some((_, s)) = line.split_once("FUZZ-SUMMARY: ") {
                summaries.push(s.to_string());
            }
        }
        if run.ok {
            from = iters;
            break;
        }
        let last = std::fs::read_to_string(&progress).unwrap_or_default();
        let step: u64 = last
            .split('\t')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(from);
        failures.push(format!(
            "child died at step {}: {}",
            last.replace('\t', " "),
            run.why
        ));
        from = step + 1;
        restarts += 1;
    }
    let _ = std::fs::remove_file(&progress);
    println!(
        "response fuzz: {from} of {iters} steps in {:?} ({restarts} crashed child(ren) restarted)",
        started.elapsed()
    );
    for s in &summaries {
        println!("  {s}");
    }
    // Distinct failures: numbers (sizes, steps, offsets) blanked out.
    let mut distinct: Vec<(String, usize, String)> = Vec::new();
    for f in &failures {
        let what = f.split_once(": ").map_or(f.as_str(), |(_, w)| w);
        let what = what.split("; recent mutations").next().unwrap_or(what);
        let key: String = what
            .chars()
            .map(|c| if c.is_ascii_digit() { 'N' } else { c })
            .collect();
        match distinct.iter_mut().find(|(k, _, _)| *k == key) {
            Some(d) => d.1 += 1,
            None => distinct.push((key, 1, f.clone())),
        }
    }
    let report: Vec<String> = distinct
        .iter()
        .map(|(_, n, example)| format!("{n}x {example}"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failure(s), {} distinct (reproduce with KAFKA_RETRY_FUZZ_SEED={:#x} KAFKA_RETRY_FUZZ_ITERS={iters}):\n{}",
        failures.len(),
        distinct.len(),
        seed(),
        report.join("\n")
    );
    assert_eq!(from, iters, "the time budget ran out before every step ran");
}

// ---------------------------------------------------------------------------
// 4. Regression cases found by the fuzzing above

const REGRESSION_ENV: &str = "KAFKA_RETRY_REGRESSION";

/// A joined consumer on `broker` (clean replies), or a panic.
fn joined_consumer(kafka: &KafkaTransport) -> Box<dyn Consumer> {
    let mut c = kafka
        .consumer(consumer_config("regression"))
        .expect("consumer");
    let (assigned, _) = poll_some(&mut *c, 50);
    assert!(
        assigned,
        "the consumer did not join the fake broker's group"
    );
    c
}

/// One regression case, run in a child process by the tests below
/// (`KAFKA_RETRY_REGRESSION=<case>`): the call must come back, with an
/// error or not; an abort or a panic fails it.
#[test]
#[ignore = "run by the regression tests below in a child process"]
fn regression_child() {
    let Ok(case) = std::env::var(REGRESSION_ENV) else {
        return;
    };
    let broker = FakeBroker::start(7);
    let fix = |key: i16, body: Vec<u8>| {
        broker
            .chaos
            .fixed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, body);
    };
    let connect = || KafkaTransport::connect(client_config(&broker.addr()));
    let huge = 0x7fff_ffff;
    match case.as_str() {
        "api-versions-count" => {
            // v3 body: error 0, then a compact array of 2^32 - 2 ApiVersion.
            let mut w = W::default();
            w.i16(0).uvarint(0xffff_ffff);
            fix(api::API_VERSIONS, w.0);
            assert!(connect().is_err());
        }
        "metadata-count" => {
            let mut w = W::default();
            w.i32(huge); // 2^31 - 1 brokers
            fix(api::METADATA, w.0);
            assert!(connect().is_err());
        }
        "fetch-count" => {
            let kafka = connect().expect("connect");
            let mut c = joined_consumer(&kafka);
            let mut w = W::default();
            w.i32(0).i32(huge); // throttle, 2^31 - 1 topics
            fix(api::FETCH, w.0);
            for _ in 0..5 {
                let _ = c.poll(Duration::from_millis(20));
            }
        }
        "metadata-partition-index-max" => {
            let kafka = connect().expect("connect");
            let mut w = W::default();
            w.i32(1)
                .i32(0)
                .str("127.0.0.1")
                .i32(i32::from(broker.port))
                .nstr(None);
            w.i32(0).i32(1);
            w.i16(0).str(TOPIC).i8(0).i32(1);
            w.i16(0).i32(i32::MAX).i32(0).i32(1).i32(0).i32(1).i32(0);
            fix(api::METADATA, w.0);
            let _ = kafka.partition_count(TOPIC);
        }
        other => panic!("unknown regression case {other}"),
    }
}

fn regression(case: &str) -> ChildRun {
    run_child(
        "regression_child",
        &[(REGRESSION_ENV, case.to_string())],
        true,
        Duration::from_secs(30),
    )
}

/// Kafka arrays carry their element count; kafka-protocol 0.18 pre-allocates
/// `Vec::with_capacity(count)` before decoding one element, so a reply of a
/// few bytes naming 2^31 elements asks for hundreds of GB and the allocator
/// aborts the process (not a panic: nothing can catch it). A decode error
/// is the right answer.
#[test]
fn a_reply_with_a_huge_array_count_is_an_error_not_an_abort() {
    let mut failures = Vec::new();
    for case in ["api-versions-count", "metadata-count", "fetch-count"] {
        let run = regression(case);
        if !run.ok {
            failures.push(format!("{case}: {}", run.why));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A Metadata reply naming partition i32::MAX: the leader table is sized
/// `max(partition_index + 1)`, which overflows.
#[test]
fn a_metadata_reply_with_partition_index_i32_max_does_not_panic() {
    let run = regression("metadata-partition-index-max");
    assert!(run.ok, "{}", run.why);
}

//! Static membership (KIP-345) on the wire, against a fake coordinator:
//! the instance id on every group request, no LeaveGroup on a restart-style
//! close, and FENCED_INSTANCE_ID (82) fatal for the member. (Tansu accepts
//! but ignores instance ids, so this is where the protocol is proven; see
//! `tests/kafka_static_membership.rs`.)

use std::sync::atomic::{AtomicI16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::assignor;
use super::super::client::Client;
use super::super::config::KafkaConfig;
use super::super::fake::api::{HEARTBEAT, LEAVE_GROUP, OFFSET_COMMIT, OFFSET_FETCH, SYNC_GROUP};
use super::super::fake::{
    api, leave_group_ok, FakeBroker, Seen, GROUP_V5_VERSIONS as STATIC_VERSIONS, W,
};
use super::*;

/// A JoinGroup v4 broker (Kafka 2.2): no static membership.
const OLD_VERSIONS: &[(i16, i16)] = &[
    (api::API_VERSIONS, 0),
    (api::METADATA, 1),
    (api::FIND_COORDINATOR, 0),
    (api::JOIN_GROUP, 4),
    (SYNC_GROUP, 2),
    (HEARTBEAT, 2),
    (LEAVE_GROUP, 2),
    (OFFSET_FETCH, 1),
    (OFFSET_COMMIT, 6),
];

fn bytes(w: W, b: &[u8]) -> W {
    let mut w = w.i32(b.len() as i32);
    w.0.extend_from_slice(b);
    w
}

/// Error codes the fake coordinator answers with (0 = success).
#[derive(Default)]
struct Script {
    join: AtomicI16,
    heartbeat: AtomicI16,
    commit: AtomicI16,
}

/// A coordinator for group `g` with one member `m-1`, leader, topic `t`
/// with one partition, committed offset 5; every answer per `script`.
fn coordinator(versions: &'static [(i16, i16)], script: Arc<Script>) -> FakeBroker {
    FakeBroker::start_with_versions(versions, move |r, _| {
        Some(match r.key {
            api::JOIN_GROUP => {
                let code = script.join.load(Ordering::SeqCst);
                let sub = assignor::encode_subscription(&["t".to_string()]).unwrap();
                let w = W::default()
                    .i32(0)
                    .i16(code)
                    .i32(if code == 0 { 1 } else { -1 });
                let w = w.str("range").str("m-1").str("m-1").i32(1).str("m-1");
                let w = if r.version >= 5 { w.i16(-1) } else { w };
                bytes(w, &sub).0
            }
            SYNC_GROUP => {
                let a = assignor::encode_assignment(&[TopicPartition::new("t", 0)]).unwrap();
                bytes(W::default().i32(0).i16(0), &a).0
            }
            HEARTBEAT => {
                W::default()
                    .i32(0)
                    .i16(script.heartbeat.load(Ordering::SeqCst))
                    .0
            }
            OFFSET_FETCH => {
                W::default()
                    .i32(1)
                    .str("t")
                    .i32(1)
                    .i32(0)
                    .i32(0)
                    .i32(5) // offset 5 (i64)
                    .i16(-1)
                    .i16(0)
                    .0
            }
            OFFSET_COMMIT => {
                W::default()
                    .i32(0)
                    .i32(1)
                    .str("t")
                    .i32(1)
                    .i32(0)
                    .i16(script.commit.load(Ordering::SeqCst))
                    .0
            }
            LEAVE_GROUP => leave_group_ok("m-1"),
            _ => return None,
        })
    })
}

fn member(broker: &FakeBroker, instance: Option<&str>) -> GroupConsumer {
    let config = KafkaConfig::new(broker.addr())
        .retry_backoff(Duration::from_millis(5))
        .max_retries(2)
        .heartbeat_interval(Some(Duration::from_millis(30)));
    let client = Client::bootstrap(config).unwrap();
    let mut c = ConsumerConfig::new("g", ["t"]);
    c.group_instance_id = instance.map(str::to_string);
    GroupConsumer::new(client, c).unwrap()
}

/// Reads the classic encodings of the request bodies.
struct R<'a>(&'a [u8]);

impl R<'_> {
    fn i16(&mut self) -> i16 {
        let v = i16::from_be_bytes([self.0[0], self.0[1]]);
        self.0 = &self.0[2..];
        v
    }
    fn i32(&mut self) -> i32 {
        let v = i32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]);
        self.0 = &self.0[4..];
        v
    }
    fn nstr(&mut self) -> Option<String> {
        let n = self.i16();
        if n < 0 {
            return None;
        }
        let s = String::from_utf8_lossy(&self.0[..n as usize]).into_owned();
        self.0 = &self.0[n as usize..];
        Some(s)
    }
}

/// The `group_instance_id` a request carries, read at its place in the
/// body of the versions above.
fn instance_of(s: &Seen) -> Option<String> {
    let mut r = R(&s.body);
    r.nstr(); // group id
    match s.key {
        api::JOIN_GROUP => {
            r.i32();
            r.i32();
            r.nstr();
        }
        SYNC_GROUP | HEARTBEAT | OFFSET_COMMIT => {
            r.i32();
            r.nstr();
        }
        LEAVE_GROUP => {
            assert_eq!(r.i32(), 1, "one member leaves");
            r.nstr();
        }
        k => panic!("no instance id in API {k}"),
    }
    r.nstr()
}

fn requests(broker: &FakeBroker, key: i16) -> Vec<Seen> {
    broker.seen().into_iter().filter(|s| s.key == key).collect()
}

fn assigned(m: &mut GroupConsumer) -> Vec<TopicPartition> {
    match m.poll(Duration::from_millis(10)).unwrap() {
        ConsumerEvent::Assigned(p) => p,
        other => panic!("expected Assigned, got {other:?}"),
    }
}

fn wait_for(broker: &FakeBroker, key: i16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.count(key) == 0 {
        assert!(Instant::now() < deadline, "no request {key}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn code(r: Result<ConsumerEvent>) -> Option<KafkaCode> {
    r.unwrap_err().kafka_code()
}

#[test]
fn a_static_member_sends_its_instance_id_on_every_group_request() {
    let broker = coordinator(STATIC_VERSIONS, Arc::default());
    let mut m = member(&broker, Some("pod-0"));
    assert_eq!(assigned(&mut m), vec![TopicPartition::new("t", 0)]);
    m.commit(&[(TopicPartition::new("t", 0), 7)]).unwrap();
    wait_for(&broker, HEARTBEAT);
    m.close().unwrap();
    for key in [
        api::JOIN_GROUP,
        SYNC_GROUP,
        HEARTBEAT,
        OFFSET_COMMIT,
        LEAVE_GROUP,
    ] {
        let seen = requests(&broker, key);
        assert!(!seen.is_empty(), "API {key} was sent");
        for s in seen {
            assert_eq!(instance_of(&s).as_deref(), Some("pod-0"), "API {key}");
        }
    }
    // A dynamic member sends none (null).
    let broker = coordinator(STATIC_VERSIONS, Arc::default());
    let mut m = member(&broker, None);
    assigned(&mut m);
    m.close().unwrap();
    for key in [api::JOIN_GROUP, SYNC_GROUP, LEAVE_GROUP] {
        for s in requests(&broker, key) {
            assert_eq!(instance_of(&s), None, "API {key}");
        }
    }
}

#[test]
fn close_for_restart_keeps_a_static_membership_and_close_leaves() {
    let broker = coordinator(STATIC_VERSIONS, Arc::default());
    let mut m = member(&broker, Some("pod-0"));
    assigned(&mut m);
    m.close_for_restart().unwrap();
    assert_eq!(broker.count(LEAVE_GROUP), 0, "restart: no LeaveGroup");
    assert!(matches!(m.poll(Duration::ZERO), Err(Error::Closed)));
    drop(m);
    assert_eq!(broker.count(LEAVE_GROUP), 0, "nor on drop after close");

    // A dynamic member cannot come back as itself: it leaves either way.
    let broker = coordinator(STATIC_VERSIONS, Arc::default());
    let mut m = member(&broker, None);
    assigned(&mut m);
    m.close_for_restart().unwrap();
    assert_eq!(broker.count(LEAVE_GROUP), 1);
}

#[test]
fn fenced_instance_id_on_join_is_fatal() {
    let script = Arc::new(Script::default());
    script.join.store(82, Ordering::SeqCst);
    let broker = coordinator(STATIC_VERSIONS, script);
    let mut m = member(&broker, Some("pod-0"));
    assert_eq!(code(m.poll(Duration::ZERO)), Some(FENCED_INSTANCE_ID));
    assert_eq!(broker.count(api::JOIN_GROUP), 1, "not retried");
    assert_eq!(code(m.poll(Duration::ZERO)), Some(FENCED_INSTANCE_ID));
    assert!(m.commit(&[(TopicPartition::new("t", 0), 1)]).is_err());
    assert_eq!(broker.count(api::JOIN_GROUP), 1, "never rejoins");
    m.close().unwrap();
    assert_eq!(broker.count(LEAVE_GROUP), 0, "the id is the newer member's");
}

#[test]
fn fenced_instance_id_on_heartbeat_loses_the_partitions_then_fails() {
    let script = Arc::new(Script::default());
    let broker = coordinator(STATIC_VERSIONS, script.clone());
    let mut m = member(&broker, Some("pod-0"));
    assigned(&mut m);
    script.heartbeat.store(82, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    let lost = loop {
        assert!(Instant::now() < deadline, "no Lost");
        // Fetch is not offered: a poll only waits, then sees the report.
        match m.membership.lock().ended {
            Some(GenerationEnd::InstanceFenced) => {}
            _ => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        break m.poll(Duration::from_millis(10)).unwrap();
    };
    assert_eq!(lost, ConsumerEvent::Lost(vec![TopicPartition::new("t", 0)]));
    assert_eq!(code(m.poll(Duration::ZERO)), Some(FENCED_INSTANCE_ID));
    assert_eq!(broker.count(api::JOIN_GROUP), 1, "no rejoin");
    let beats = broker.count(HEARTBEAT);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(broker.count(HEARTBEAT), beats, "heartbeats stopped");
}

#[test]
fn fenced_instance_id_on_commit_is_fatal() {
    let script = Arc::new(Script::default());
    let broker = coordinator(STATIC_VERSIONS, script.clone());
    let mut m = member(&broker, Some("pod-0"));
    assigned(&mut m);
    script.commit.store(82, Ordering::SeqCst);
    let err = m.commit(&[(TopicPartition::new("t", 0), 7)]).unwrap_err();
    assert_eq!(err.kafka_code(), Some(FENCED_INSTANCE_ID));
    assert_eq!(
        m.poll(Duration::from_millis(10)).unwrap(),
        ConsumerEvent::Lost(vec![TopicPartition::new("t", 0)])
    );
    assert_eq!(code(m.poll(Duration::ZERO)), Some(FENCED_INSTANCE_ID));
}

#[test]
fn a_broker_without_static_membership_is_refused() {
    let broker = coordinator(OLD_VERSIONS, Arc::default());
    let mut m = member(&broker, Some("pod-0"));
    match m.poll(Duration::ZERO) {
        Err(Error::Protocol(msg)) => assert!(msg.contains("v5"), "{msg}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    // Dynamic members still work there.
    let broker = coordinator(OLD_VERSIONS, Arc::default());
    let mut m = member(&broker, None);
    assert_eq!(assigned(&mut m), vec![TopicPartition::new("t", 0)]);
}

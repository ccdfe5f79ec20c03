//! Cooperative rebalancing (KIP-429) on the wire, against a fake
//! coordinator whose member is a follower (the SyncGroup answers are the
//! script): protocols offered in order, owned partitions in the
//! subscription, no revoke before the rejoin, only the moved partitions
//! revoked, the follow-up rejoin, commits meanwhile; and the fall-back to
//! eager when the group picks range.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::super::assignor;
use super::super::client::Client;
use super::super::config::KafkaConfig;
use super::super::fake::api::{HEARTBEAT, LEAVE_GROUP, OFFSET_COMMIT, OFFSET_FETCH, SYNC_GROUP};
use super::super::fake::{
    api, leave_group_ok, offset_fetch_at_5, FakeBroker, Seen, GROUP_V5_VERSIONS as VERSIONS, W,
};
use super::*;
use crate::transport::RebalanceProtocol;

fn tps(ps: &[i32]) -> Vec<TopicPartition> {
    ps.iter().map(|&p| TopicPartition::new("t", p)).collect()
}

fn bytes(w: W, b: &[u8]) -> W {
    let mut w = w.i32(b.len() as i32);
    w.0.extend_from_slice(b);
    w
}

/// What the fake coordinator answers: the protocol it picks, the n-th
/// SyncGroup's assignment, and whether heartbeats say 27.
struct Script {
    protocol: &'static str,
    syncs: Vec<Vec<i32>>,
    rebalance: AtomicBool,
}

fn coordinator(script: Arc<Script>) -> FakeBroker {
    FakeBroker::start_with_versions(VERSIONS, move |r, n| {
        Some(match r.key {
            api::JOIN_GROUP => {
                // A JoinGroup is the rejoin the 27 asked for.
                script.rebalance.store(false, Ordering::SeqCst);
                W::default()
                    .i32(0)
                    .i16(0)
                    .i32(n as i32 + 1) // generation
                    .str(script.protocol)
                    .str("m-0") // leader: someone else
                    .str("m-1")
                    .i32(0) // members: none for a follower
                    .0
            }
            SYNC_GROUP => {
                let parts = script.syncs.get(n).cloned().unwrap_or_default();
                let a = assignor::encode_assignment(&tps(&parts)).unwrap();
                bytes(W::default().i32(0).i16(0), &a).0
            }
            HEARTBEAT => {
                let code = if script.rebalance.load(Ordering::SeqCst) {
                    27
                } else {
                    0
                };
                W::default().i32(0).i16(code).0
            }
            OFFSET_FETCH => offset_fetch_at_5(4),
            OFFSET_COMMIT => W::default().i32(0).i32(1).str("t").i32(1).i32(1).i16(0).0,
            LEAVE_GROUP => leave_group_ok("m-1"),
            _ => return None,
        })
    })
}

fn member(broker: &FakeBroker, protocol: RebalanceProtocol) -> GroupConsumer {
    member_with_retries(broker, protocol, 2)
}

fn member_with_retries(
    broker: &FakeBroker,
    protocol: RebalanceProtocol,
    retries: u32,
) -> GroupConsumer {
    let config = KafkaConfig::new(broker.addr())
        .retry_backoff(Duration::from_millis(5))
        .max_retries(retries)
        .fetch_max_wait(Duration::from_millis(20))
        .heartbeat_interval(Some(Duration::from_millis(20)));
    let client = Client::bootstrap(config).unwrap();
    let mut c = ConsumerConfig::new("g", ["t"]);
    c.rebalance_protocol = protocol;
    GroupConsumer::new(client, c).unwrap()
}

/// Polls until an event other than (empty) records, or panics after 5 s.
fn next_event(m: &mut GroupConsumer) -> ConsumerEvent {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match m.poll(Duration::from_millis(20)).unwrap() {
            ConsumerEvent::Records(r) if r.is_empty() => {}
            ev => return ev,
        }
        assert!(Instant::now() < deadline, "no group event");
    }
}

/// The protocols (name, metadata) of the n-th JoinGroup v5.
fn offered(broker: &FakeBroker, n: usize) -> Vec<(String, Bytes)> {
    let joins: Vec<Seen> = broker
        .seen()
        .into_iter()
        .filter(|s| s.key == api::JOIN_GROUP)
        .collect();
    let mut b: &[u8] = &joins[n].body;
    let i16_ = |b: &mut &[u8]| {
        let v = i16::from_be_bytes([b[0], b[1]]);
        *b = &b[2..];
        v
    };
    let skip_str = |b: &mut &[u8]| -> String {
        let n = i16_(b);
        if n < 0 {
            return String::new();
        }
        let s = String::from_utf8_lossy(&b[..n as usize]).into_owned();
        *b = &b[n as usize..];
        s
    };
    skip_str(&mut b); // group id
    b = &b[8..]; // session and rebalance timeouts
    skip_str(&mut b); // member id
    skip_str(&mut b); // instance id
    skip_str(&mut b); // protocol type
    let count = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    b = &b[4..];
    let mut out = Vec::new();
    for _ in 0..count {
        let name = skip_str(&mut b);
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        out.push((name, Bytes::copy_from_slice(&b[4..4 + len])));
        b = &b[4 + len..];
    }
    out
}

fn owned_in(broker: &FakeBroker, n: usize) -> (Vec<TopicPartition>, i32) {
    let protocols = offered(broker, n);
    assert_eq!(protocols[0].0, "cooperative-sticky", "offered first");
    assert_eq!(protocols[1].0, "range", "then range");
    let m = assignor::decode_sticky_member("m-1", &protocols[0].1).unwrap();
    assert_eq!(m.topics, vec!["t".to_string()]);
    (m.owned, m.generation)
}

#[test]
fn a_cooperative_rebalance_revokes_only_what_moves_and_rejoins_once() {
    let script = Arc::new(Script {
        protocol: "cooperative-sticky",
        syncs: vec![vec![0, 1, 2], vec![0, 1], vec![0, 1]],
        rebalance: AtomicBool::new(false),
    });
    let broker = coordinator(script.clone());
    let mut m = member(&broker, RebalanceProtocol::Cooperative);
    assert_eq!(next_event(&mut m), ConsumerEvent::Assigned(tps(&[0, 1, 2])));
    assert_eq!(owned_in(&broker, 0), (vec![], -1));

    // The coordinator starts a rebalance: no Revoked before the rejoin,
    // which names what the member owns; only t-2 moves.
    script.rebalance.store(true, Ordering::SeqCst);
    assert_eq!(next_event(&mut m), ConsumerEvent::Revoked(tps(&[2])));
    assert_eq!(broker.count(api::JOIN_GROUP), 2);
    assert_eq!(owned_in(&broker, 1), (tps(&[0, 1, 2]), 1));
    // Still owned until the next poll; committing works meanwhile.
    assert_eq!(m.assignment(), tps(&[0, 1, 2]));
    m.commit(&[(TopicPartition::new("t", 2), 9)]).unwrap();

    // The next poll: nothing added, and the follow-up rejoin, owning t-0
    // and t-1 of generation 2.
    assert_eq!(next_event(&mut m), ConsumerEvent::Assigned(vec![]));
    assert_eq!(m.assignment(), tps(&[0, 1]));
    assert_eq!(next_event(&mut m), ConsumerEvent::Assigned(vec![]));
    assert_eq!(broker.count(api::JOIN_GROUP), 3);
    assert_eq!(owned_in(&broker, 2), (tps(&[0, 1]), 2));
    assert_eq!(m.generation, 3);
    m.close().unwrap();
}

#[test]
fn when_the_group_picks_range_the_member_rebalances_eagerly() {
    let script = Arc::new(Script {
        protocol: "range",
        syncs: vec![vec![0, 1], vec![1]],
        rebalance: AtomicBool::new(false),
    });
    let broker = coordinator(script.clone());
    let mut m = member(&broker, RebalanceProtocol::Cooperative);
    assert_eq!(next_event(&mut m), ConsumerEvent::Assigned(tps(&[0, 1])));
    script.rebalance.store(true, Ordering::SeqCst);
    // Eager: everything revoked before the member rejoins.
    assert_eq!(next_event(&mut m), ConsumerEvent::Revoked(tps(&[0, 1])));
    assert_eq!(broker.count(api::JOIN_GROUP), 1);
    assert_eq!(next_event(&mut m), ConsumerEvent::Assigned(tps(&[1])));
    assert_eq!(broker.count(api::JOIN_GROUP), 2);
    m.close().unwrap();
}

#[test]
fn the_eager_protocol_offers_range_only() {
    let script = Arc::new(Script {
        protocol: "range",
        syncs: vec![vec![0]],
        rebalance: AtomicBool::new(false),
    });
    let broker = coordinator(script);
    let mut m = member(&broker, RebalanceProtocol::Eager);
    assert_eq!(next_event(&mut m), ConsumerEvent::Assigned(tps(&[0])));
    let names: Vec<String> = offered(&broker, 0).into_iter().map(|p| p.0).collect();
    assert_eq!(names, vec!["range".to_string()]);
    m.close().unwrap();
}

/// A group whose rebalance never completes (on Tansu 0.6 a forming group
/// can keep a leader that left: every SyncGroup answers 27 and every
/// JoinGroup names that leader): a member closing during its rejoin
/// leaves at once instead of running the rejoin's retries out first.
#[test]
fn a_close_during_a_rejoin_that_cannot_complete_leaves_at_once() {
    let rebalance = Arc::new(AtomicBool::new(false));
    let r = rebalance.clone();
    let broker = FakeBroker::start_with_versions(VERSIONS, move |req, n| {
        Some(match req.key {
            api::JOIN_GROUP => {
                if n > 0 {
                    // Tansu holds a follower's JoinGroup a while (1 s seen).
                    std::thread::sleep(Duration::from_millis(100));
                }
                W::default()
                    .i32(0)
                    .i16(0)
                    .i32(n as i32 + 1)
                    .str("cooperative-sticky")
                    .str("m-0") // the leader that left
                    .str("m-1")
                    .i32(0)
                    .0
            }
            SYNC_GROUP if n == 0 => {
                let a = assignor::encode_assignment(&tps(&[0, 1])).unwrap();
                r.store(true, Ordering::SeqCst);
                bytes(W::default().i32(0).i16(0), &a).0
            }
            // Nobody leads, so nobody's assignment ever comes.
            SYNC_GROUP => bytes(W::default().i32(0).i16(27), &[]).0,
            HEARTBEAT => {
                let code = if r.load(Ordering::SeqCst) { 27 } else { 0 };
                W::default().i32(0).i16(code).0
            }
            OFFSET_FETCH => offset_fetch_at_5(2),
            LEAVE_GROUP => leave_group_ok("m-1"),
            _ => return None,
        })
    });
    let mut m = member_with_retries(&broker, RebalanceProtocol::Cooperative, 20);
    assert_eq!(next_event(&mut m), ConsumerEvent::Assigned(tps(&[0, 1])));
    assert!(rebalance.load(Ordering::SeqCst));
    // The 27 starts the rejoin; let it go round a few times.
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.count(api::JOIN_GROUP) < 4 {
        m.poll(Duration::from_millis(20)).unwrap();
        assert!(Instant::now() < deadline, "the rejoin did not start");
    }
    assert!(m.rejoin.is_some(), "rejoin running");
    assert_eq!(m.assignment(), tps(&[0, 1]), "kept while rejoining");
    m.close().unwrap();
    let joins_at_close = broker.count(api::JOIN_GROUP);
    assert_eq!(broker.count(LEAVE_GROUP), 1, "left at close");
    // Without the cancel, close returned only once the 20 retries were
    // spent (21 JoinGroups). With it, at most the one in flight follows.
    assert!(
        joins_at_close < 10,
        "{joins_at_close} JoinGroups before close returned"
    );
    std::thread::sleep(Duration::from_millis(400));
    let after = broker.count(api::JOIN_GROUP);
    assert!(
        after <= joins_at_close + 1,
        "the abandoned rejoin went on: {joins_at_close} JoinGroups at close, {after} later"
    );
}

//! A woken consumer stops waiting for a join that cannot complete (a
//! coordinator that names a departed leader, so every SyncGroup is 27, as
//! Tansu 0.6 did after a leader left mid-rebalance): the poll returns, the
//! close leaves at once, and the join it abandoned stops after its call.

use std::time::{Duration, Instant};

use super::super::client::Client;
use super::super::config::KafkaConfig;
use super::super::fake::api::{HEARTBEAT, LEAVE_GROUP, SYNC_GROUP};
use super::super::fake::{api, leave_group_ok, FakeBroker, GROUP_V5_VERSIONS as VERSIONS, W};
use super::*;
use crate::transport::Wakeup;

/// JoinGroup: a follower of "m-0", held 50 ms as a coordinator does;
/// SyncGroup: 27 for ever (the leader's assignment never comes).
fn stuck_group() -> FakeBroker {
    FakeBroker::start_with_versions(VERSIONS, |req, n| {
        Some(match req.key {
            api::JOIN_GROUP => {
                std::thread::sleep(Duration::from_millis(50));
                W::default()
                    .i32(0)
                    .i16(0)
                    .i32(n as i32 + 1)
                    .str("range")
                    .str("m-0")
                    .str("m-1")
                    .i32(0)
                    .0
            }
            SYNC_GROUP => {
                let w = W::default().i32(0).i16(27).i32(0);
                w.0
            }
            HEARTBEAT => W::default().i32(0).i16(0).0,
            LEAVE_GROUP => leave_group_ok("m-1"),
            _ => return None,
        })
    })
}

fn member(broker: &FakeBroker, wakeup: Option<Wakeup>) -> GroupConsumer {
    let config = KafkaConfig::new(broker.addr())
        .retry_backoff(Duration::from_millis(5))
        .max_retries(1000)
        .heartbeat_interval(Some(Duration::from_millis(20)));
    let client = Client::bootstrap(config).unwrap();
    let mut c = ConsumerConfig::new("g", ["t"]);
    c.wakeup = wakeup;
    GroupConsumer::new(client, c).unwrap()
}

#[test]
fn a_woken_poll_stops_waiting_for_a_join_and_the_close_abandons_it() {
    let broker = stuck_group();
    let wakeup = Wakeup::new();
    let mut m = member(&broker, Some(wakeup.clone()));
    let w = wakeup.clone();
    let waker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        w.wake();
    });
    let t0 = Instant::now();
    // Without the wakeup this poll retries the join 1000 times (50 s).
    let ev = m.poll(Duration::from_millis(20)).unwrap();
    let took = t0.elapsed();
    waker.join().unwrap();
    assert_eq!(ev, ConsumerEvent::Records(Vec::new()));
    assert!(took < Duration::from_secs(3), "the poll took {took:?}");
    assert!(broker.count(api::JOIN_GROUP) >= 2, "it was joining");
    assert!(m.joining.is_some(), "the join goes on in the background");
    // Polled again, it is still joining: no second join starts.
    let ev = m.poll(Duration::from_millis(20)).unwrap();
    assert_eq!(ev, ConsumerEvent::Records(Vec::new()));
    m.close().unwrap();
    let joins_at_close = broker.count(api::JOIN_GROUP);
    assert!(m.joining.is_none());
    std::thread::sleep(Duration::from_millis(400));
    let after = broker.count(api::JOIN_GROUP);
    assert!(
        after <= joins_at_close + 1,
        "the abandoned join went on: {joins_at_close} JoinGroups at close, {after} later"
    );
}

/// Without a wakeup nothing changes: the join runs on the caller's thread
/// and the poll returns its outcome (here: every retry spent).
#[test]
fn without_a_wakeup_the_poll_joins_on_the_callers_thread() {
    let broker = stuck_group();
    let config = KafkaConfig::new(broker.addr())
        .retry_backoff(Duration::from_millis(5))
        .max_retries(3)
        .heartbeat_interval(Some(Duration::from_millis(20)));
    let client = Client::bootstrap(config).unwrap();
    let mut m = GroupConsumer::new(client, ConsumerConfig::new("g", ["t"])).unwrap();
    let err = m.poll(Duration::from_millis(20)).unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(crate::error::KafkaCode::REBALANCE_IN_PROGRESS),
        "{err}"
    );
    assert!(m.joining.is_none());
    assert_eq!(
        broker.count(api::JOIN_GROUP),
        4,
        "one join and three retries"
    );
    m.close().unwrap();
}

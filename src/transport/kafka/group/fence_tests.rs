//! Fencing of a member cut off from its coordinator, against the fake
//! coordinator of `static_tests.rs`: once no heartbeat is answered, the
//! member reports its partitions `Lost` before the broker could expire it
//! (and hand them on), commits nothing more, and rejoins when the
//! coordinator answers again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::client::Client;
use super::super::config::KafkaConfig;
use super::super::fake::{api, FakeBroker, GROUP_V5_VERSIONS};
use super::static_tests::{coordinator, Script};
use super::*;

const SESSION: Duration = Duration::from_secs(1);

fn member(broker: &FakeBroker) -> GroupConsumer {
    let config = KafkaConfig::new(broker.addr())
        .retry_backoff(Duration::from_millis(5))
        .max_retries(2)
        .fetch_max_wait(Duration::from_millis(10))
        .heartbeat_interval(Some(Duration::from_millis(100)));
    let client = Client::bootstrap(config).unwrap();
    let mut c = ConsumerConfig::new("g", ["t"]);
    c.session_timeout = SESSION;
    GroupConsumer::new(client, c).unwrap()
}

fn t0() -> Vec<TopicPartition> {
    vec![TopicPartition::new("t", 0)]
}

/// Polls (Fetch is not offered: a poll only waits) until an event other
/// than an empty batch, for at most `within`.
fn next_event(m: &mut GroupConsumer, within: Duration) -> Option<ConsumerEvent> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        match m.poll(Duration::from_millis(10)).unwrap() {
            ConsumerEvent::Records(r) if r.is_empty() => {}
            ev => return Some(ev),
        }
    }
    None
}

#[test]
fn a_member_whose_heartbeats_go_unanswered_loses_its_partitions_before_the_broker_would() {
    let script = Arc::new(Script::default());
    let broker = coordinator(GROUP_V5_VERSIONS, script.clone());
    let mut m = member(&broker);
    assert_eq!(
        next_event(&mut m, Duration::from_secs(5)),
        Some(ConsumerEvent::Assigned(t0()))
    );
    // Answered heartbeats keep the membership, for longer than a session.
    assert_eq!(next_event(&mut m, SESSION * 2), None, "nothing to report");
    assert!(broker.count(api::HEARTBEAT) >= 10);

    // The coordinator stops answering (the member is cut off from it).
    script.hang_heartbeats.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    let ev = next_event(&mut m, SESSION * 3);
    let lost_at = Instant::now();
    assert_eq!(
        ev,
        Some(ConsumerEvent::Lost(t0())),
        "no Lost {:?} after the cut",
        cut.elapsed()
    );
    // The broker expires the member a session after the last heartbeat it
    // received; the partitions were given up before that.
    let last = script.last_heartbeat.lock().unwrap().expect("heartbeats");
    assert!(
        lost_at < last + SESSION,
        "Lost {:?} after the last heartbeat the broker received (session {SESSION:?})",
        lost_at - last
    );
    // Nothing more is committed for the lost generation.
    let commits = broker.count(api::OFFSET_COMMIT);
    assert!(matches!(
        m.commit(&[(TopicPartition::new("t", 0), 9)]),
        Err(Error::Rebalance(_))
    ));
    assert_eq!(broker.count(api::OFFSET_COMMIT), commits, "nothing sent");

    // The coordinator is back: the next poll rejoins, as the same member.
    script.hang_heartbeats.store(false, Ordering::SeqCst);
    assert_eq!(
        next_event(&mut m, Duration::from_secs(5)),
        Some(ConsumerEvent::Assigned(t0()))
    );
    assert_eq!(broker.count(api::JOIN_GROUP), 2);
    assert_eq!(m.member_id, "m-1");
    m.commit(&[(TopicPartition::new("t", 0), 9)]).unwrap();
    m.close().unwrap();
}

#[test]
fn heartbeats_answered_late_but_within_the_limit_keep_the_membership() {
    // Each heartbeat hangs for 300 ms (a slow coordinator): answered
    // beats, sent less than the limit (800 ms) apart, keep the partitions.
    let script = Arc::new(Script::default());
    let broker = coordinator(GROUP_V5_VERSIONS, script.clone());
    let mut m = member(&broker);
    assert_eq!(
        next_event(&mut m, Duration::from_secs(5)),
        Some(ConsumerEvent::Assigned(t0()))
    );
    let slow = {
        let script = script.clone();
        std::thread::spawn(move || {
            for _ in 0..8 {
                script.hang_heartbeats.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
                script.hang_heartbeats.store(false, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    assert_eq!(next_event(&mut m, SESSION * 2), None);
    slow.join().unwrap();
    m.close().unwrap();
}

#[test]
fn once_the_session_lapses_nothing_is_committed_before_the_poll_reports_lost() {
    let script = Arc::new(Script::default());
    let broker = coordinator(GROUP_V5_VERSIONS, script.clone());
    let mut m = member(&broker);
    assert_eq!(
        next_event(&mut m, Duration::from_secs(5)),
        Some(ConsumerEvent::Assigned(t0()))
    );
    m.commit(&[(TopicPartition::new("t", 0), 7)]).unwrap();
    script.hang_heartbeats.store(true, Ordering::SeqCst);
    // No poll meanwhile (a caller busy committing, say).
    let lapse = m.membership.lapses_at(m.session_limit).unwrap();
    std::thread::sleep(lapse.saturating_duration_since(Instant::now()) + Duration::from_millis(20));
    let commits = broker.count(api::OFFSET_COMMIT);
    assert!(matches!(
        m.commit(&[(TopicPartition::new("t", 0), 8)]),
        Err(Error::Rebalance(_))
    ));
    assert_eq!(broker.count(api::OFFSET_COMMIT), commits, "not sent");
    assert_eq!(
        m.poll(Duration::from_millis(10)).unwrap(),
        ConsumerEvent::Lost(t0())
    );
    script.hang_heartbeats.store(false, Ordering::SeqCst);
    m.close().unwrap();
}

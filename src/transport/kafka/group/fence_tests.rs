//! The local fence, against a fake coordinator whose member is a follower:
//! heartbeats that go unanswered make the member give its partitions up
//! (`Lost`) and refuse commits before the coordinator's session could have
//! expired; a JoinGroup the coordinator holds open for longer than the
//! session (a rebalance waiting for members) does not.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::super::assignor;
use super::super::client::Client;
use super::super::config::KafkaConfig;
use super::super::fake::api::{HEARTBEAT, LEAVE_GROUP, OFFSET_COMMIT, OFFSET_FETCH, SYNC_GROUP};
use super::super::fake::{
    api, leave_group_ok, offset_fetch_at_5, FakeBroker, GROUP_V5_VERSIONS as VERSIONS, W,
};
use super::*;
use crate::transport::RebalanceProtocol;

/// Lapse margin here: a fifth of it, 300 ms (more than fetch_max_wait +
/// 100 ms), so the member gives up 1.2 s after its last proven send.
const SESSION: Duration = Duration::from_millis(1500);

fn tps(ps: &[i32]) -> Vec<TopicPartition> {
    ps.iter().map(|&p| TopicPartition::new("t", p)).collect()
}

/// What the fake coordinator does.
#[derive(Default)]
struct State {
    /// Heartbeats go unanswered (held, then the connection is dropped).
    hang: AtomicBool,
    /// The next heartbeat alone goes unanswered.
    drop_one: AtomicBool,
    /// Heartbeats are answered 27 until the next JoinGroup.
    rebalance: AtomicBool,
    /// How long the next JoinGroups are held before the answer (ms).
    join_hold_ms: AtomicU64,
    /// A JoinGroup is being held; heartbeats wait for it to end (as Tansu's
    /// seem to while a rebalance runs), then are answered 22.
    joining: AtomicBool,
    /// When the last answered heartbeat arrived.
    last_answered: Mutex<Option<Instant>>,
}

fn coordinator(state: Arc<State>, protocol: &'static str) -> FakeBroker {
    FakeBroker::start_with_versions(VERSIONS, move |r, n| {
        Some(match r.key {
            api::JOIN_GROUP => {
                state.rebalance.store(false, Ordering::SeqCst);
                state.joining.store(true, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(
                    state.join_hold_ms.load(Ordering::SeqCst),
                ));
                state.joining.store(false, Ordering::SeqCst);
                W::default()
                    .i32(0)
                    .i16(0)
                    .i32(n as i32 + 1) // generation
                    .str(protocol)
                    .str("m-0") // leader: someone else
                    .str("m-1")
                    .i32(0) // members: none for a follower
                    .0
            }
            SYNC_GROUP => {
                let a = assignor::encode_assignment(&tps(&[0, 1])).unwrap();
                let mut w = W::default().i32(0).i16(0).i32(a.len() as i32);
                w.0.extend_from_slice(&a);
                w.0
            }
            HEARTBEAT => {
                let held = Instant::now();
                if state.drop_one.swap(false, Ordering::SeqCst) {
                    thread::sleep(Duration::from_secs(10));
                    return None;
                }
                while state.hang.load(Ordering::SeqCst) {
                    if held.elapsed() > Duration::from_secs(10) {
                        return None;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                if state.joining.load(Ordering::SeqCst) {
                    while state.joining.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(5));
                    }
                    // The generation it was sent for is over.
                    return Some(W::default().i32(0).i16(22).0);
                }
                *state.last_answered.lock().unwrap() = Some(Instant::now());
                let code = if state.rebalance.load(Ordering::SeqCst) {
                    27
                } else {
                    0
                };
                W::default().i32(0).i16(code).0
            }
            OFFSET_FETCH => offset_fetch_at_5(2),
            OFFSET_COMMIT => W::default().i32(0).i32(1).str("t").i32(1).i32(0).i16(0).0,
            LEAVE_GROUP => leave_group_ok("m-1"),
            _ => return None,
        })
    })
}

fn member(broker: &FakeBroker, protocol: RebalanceProtocol) -> GroupConsumer {
    let config = KafkaConfig::new(broker.addr())
        .retry_backoff(Duration::from_millis(5))
        .max_retries(2)
        .fetch_max_wait(Duration::from_millis(20))
        .heartbeat_interval(Some(Duration::from_millis(20)));
    let client = Client::bootstrap(config).unwrap();
    let mut c = ConsumerConfig::new("g", ["t"]);
    c.rebalance_protocol = protocol;
    c.session_timeout = SESSION;
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

/// Polls for `d`, committing every 100 ms; every poll must return no event
/// and every commit must succeed.
fn poll_and_commit_for(m: &mut GroupConsumer, d: Duration) {
    let end = Instant::now() + d;
    let mut next_commit = Instant::now();
    while Instant::now() < end {
        match m.poll(Duration::from_millis(20)).unwrap() {
            ConsumerEvent::Records(r) if r.is_empty() => {}
            ev => panic!("unexpected {ev:?}"),
        }
        if Instant::now() >= next_commit {
            m.commit(&[(TopicPartition::new("t", 0), 7)]).unwrap();
            next_commit = Instant::now() + Duration::from_millis(100);
        }
    }
}

#[test]
fn unanswered_heartbeats_lose_the_partitions_before_the_session_expires() {
    let state = Arc::new(State::default());
    let broker = coordinator(state.clone(), "range");
    let mut m = member(&broker, RebalanceProtocol::Eager);
    assert_eq!(next_event(&mut m), ConsumerEvent::Assigned(tps(&[0, 1])));
    // Answered heartbeats keep the member in for longer than a session.
    poll_and_commit_for(&mut m, SESSION * 2);

    state.hang.store(true, Ordering::SeqCst);
    let ev = next_event(&mut m);
    let at = Instant::now();
    let last = state.last_answered.lock().unwrap().expect("answered once");
    assert_eq!(ev, ConsumerEvent::Lost(tps(&[0, 1])));
    // The coordinator would expire the member a session after the last
    // heartbeat it answered arrived: the member gave up before.
    assert!(
        at < last + SESSION,
        "Lost {:?} after the last answered heartbeat arrived (session {SESSION:?})",
        at - last
    );
    let commits = broker.count(OFFSET_COMMIT);
    assert!(m.commit(&[(TopicPartition::new("t", 0), 9)]).is_err());
    assert_eq!(broker.count(OFFSET_COMMIT), commits, "nothing sent");
    state.hang.store(false, Ordering::SeqCst);
}

#[test]
fn one_heartbeat_left_unanswered_is_sent_again_in_time() {
    let state = Arc::new(State::default());
    let broker = coordinator(state.clone(), "range");
    let mut m = member(&broker, RebalanceProtocol::Eager);
    assert_eq!(next_event(&mut m), ConsumerEvent::Assigned(tps(&[0, 1])));
    poll_and_commit_for(&mut m, Duration::from_millis(200));
    // No commits now (they prove the member too): only the heartbeat sent
    // again on a fresh connection can keep it in.
    state.drop_one.store(true, Ordering::SeqCst);
    let end = Instant::now() + SESSION * 2;
    while Instant::now() < end {
        match m.poll(Duration::from_millis(20)).unwrap() {
            ConsumerEvent::Records(r) if r.is_empty() => {}
            ev => panic!("unexpected {ev:?}"),
        }
    }
    assert!(!state.drop_one.load(Ordering::SeqCst), "one was dropped");
    m.close().unwrap();
}

#[test]
fn a_commit_after_the_lapse_is_refused_without_asking_the_coordinator() {
    let state = Arc::new(State::default());
    let broker = coordinator(state.clone(), "range");
    let mut m = member(&broker, RebalanceProtocol::Eager);
    assert_eq!(next_event(&mut m), ConsumerEvent::Assigned(tps(&[0, 1])));
    m.commit(&[(TopicPartition::new("t", 0), 6)]).unwrap();
    assert_eq!(broker.count(OFFSET_COMMIT), 1);

    // Cut off, and no poll: the commit itself notices the lapse.
    state.hang.store(true, Ordering::SeqCst);
    thread::sleep(SESSION);
    match m.commit(&[(TopicPartition::new("t", 0), 9)]) {
        Err(Error::Rebalance(msg)) => assert!(msg.contains("unproven"), "{msg}"),
        other => panic!("expected a refused commit, got {other:?}"),
    }
    assert_eq!(broker.count(OFFSET_COMMIT), 1, "refused locally");
    assert_eq!(next_event(&mut m), ConsumerEvent::Lost(tps(&[0, 1])));
    state.hang.store(false, Ordering::SeqCst);
}

#[test]
fn a_join_held_open_for_longer_than_the_session_is_no_lapse() {
    let state = Arc::new(State::default());
    let broker = coordinator(state.clone(), "cooperative-sticky");
    let mut m = member(&broker, RebalanceProtocol::Cooperative);
    assert_eq!(next_event(&mut m), ConsumerEvent::Assigned(tps(&[0, 1])));

    // A rebalance whose JoinGroup the coordinator holds for two sessions,
    // answering no heartbeat meanwhile. The member keeps fetching and
    // committing, and keeps its partitions.
    state
        .join_hold_ms
        .store(SESSION.as_millis() as u64 * 2, Ordering::SeqCst);
    state.rebalance.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let mut committed = false;
    let mut ev;
    loop {
        ev = m.poll(Duration::from_millis(20)).unwrap();
        if !matches!(&ev, ConsumerEvent::Records(r) if r.is_empty()) {
            break;
        }
        // One commit a session into the held join (a successful commit is
        // a proof too, so only one): still accepted.
        if !committed && m.rejoin.is_some() && started.elapsed() > SESSION {
            m.commit(&[(TopicPartition::new("t", 0), 8)]).unwrap();
            committed = true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no group event"
        );
    }
    assert_eq!(ev, ConsumerEvent::Assigned(vec![]));
    assert!(
        committed && started.elapsed() >= SESSION * 2,
        "the join was held"
    );
    assert_eq!(m.generation, 2);
    // The new generation starts a new clock.
    poll_and_commit_for(&mut m, SESSION * 2);
    m.close().unwrap();
}

#[test]
fn the_margin_is_a_fifth_of_the_session_within_bounds() {
    let ms = Duration::from_millis;
    assert_eq!(lapse_margin(ms(10_000), ms(500)), ms(2_000));
    assert_eq!(
        lapse_margin(ms(2_000), ms(500)),
        ms(600),
        "fetch wait + 100"
    );
    assert_eq!(lapse_margin(ms(500), ms(500)), ms(250), "at most half");
}

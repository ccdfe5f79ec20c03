//! The heartbeat thread (`kafka-retry-heartbeat`): heartbeats the target
//! generation of the shared [`Membership`] on its own coordinator
//! connection and reports how the coordinator ended it.
//!
//! It is a schedule, not a retry of one call: a failed heartbeat is
//! classified like any request
//! ([`classify`](super::super::retry::classify)), repaired (a new coordinator
//! connection), and sent again after the client's [`Backoff`], capped at the
//! heartbeat interval.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::protocol::StrBytes;

use super::super::client::Client;
use super::super::retry::{Action, Backoff};
use super::coordinator::{group_id, Coordinator};
use super::membership::{Generation, GenerationEnd, Membership};
use crate::error::{Error, KafkaCode, Result};

/// What the heartbeat thread needs: the group member's identity, the shared
/// membership, and its schedule.
pub(super) struct Heartbeat {
    pub client: Arc<Client>,
    pub group: String,
    pub client_id: Option<String>,
    /// Static membership id, sent on Heartbeat v3+.
    pub group_instance_id: Option<String>,
    pub membership: Arc<Membership>,
    /// Time between beats.
    pub interval: Duration,
    /// Bound on one Heartbeat call.
    pub timeout: Duration,
}

impl Heartbeat {
    /// Starts the heartbeat thread, idle until a generation is set.
    pub(super) fn spawn(self) -> Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("kafka-retry-heartbeat".into())
            .spawn(move || heartbeat_loop(self))
            .map_err(|e| Error::Thread(format!("spawn kafka-retry-heartbeat: {e}")))
    }
}

/// Waits until the target generation is due for a heartbeat; `None` once
/// stopped. `seen_epoch` and `next` carry the schedule between calls.
fn next_target(
    membership: &Membership,
    interval: Duration,
    seen_epoch: &mut u64,
    next: &mut Instant,
) -> Option<Generation> {
    let mut st = membership.lock();
    loop {
        if st.stop {
            return None;
        }
        if st.epoch != *seen_epoch {
            // New generation (or none): first beat one interval after the join.
            *seen_epoch = st.epoch;
            *next = Instant::now() + interval;
        }
        let fenced = matches!(
            st.ended,
            Some(
                GenerationEnd::Fenced(_) | GenerationEnd::InstanceFenced | GenerationEnd::Lapsed(_)
            )
        );
        match (&st.target, fenced) {
            (Some(t), false) => {
                let now = Instant::now();
                if now >= *next {
                    return Some(t.clone());
                }
                st = membership
                    .wake
                    .wait_timeout(st, *next - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            _ => {
                st = membership.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

/// The heartbeat thread: every `interval`, heartbeats the current target
/// generation and reports 27 / 22 / 25 to the poll side.
fn heartbeat_loop(hb: Heartbeat) {
    let Heartbeat {
        client,
        group,
        client_id,
        group_instance_id,
        membership,
        interval,
        timeout,
    } = hb;
    let backoff = Backoff::between(
        client.config().retry_backoff.max(Duration::from_millis(20)),
        interval,
    );
    // Consecutive failures: drive the back-off, and only the first of a
    // streak is a warning.
    let mut failures: u32 = 0;
    let mut coord = Coordinator::new(client, group.clone(), client_id.as_deref());
    let mut seen_epoch = u64::MAX;
    let mut next = Instant::now();
    while let Some(target) = next_target(&membership, interval, &mut seen_epoch, &mut next) {
        let gid = group_id(&group);
        let instance = group_instance_id.clone();
        // Before the call, so before any send: the proof's time (see
        // `Membership::prove`).
        let sent = Instant::now();
        let reply = coord.call(timeout, |v| {
            let mut req = HeartbeatRequest::default();
            req.group_id = gid;
            req.generation_id = target.id;
            req.member_id = StrBytes::from_string(target.member_id.clone());
            if v >= 3 {
                req.group_instance_id = instance.map(StrBytes::from_string);
            }
            req
        });
        next = Instant::now() + interval;
        log::trace!(
            "group {group}: heartbeat for generation {} sent {:?} ago: {}",
            target.id,
            sent.elapsed(),
            match &reply {
                Ok((_, r)) => format!("code {}", r.error_code),
                Err(e) => e.to_string(),
            }
        );
        // 27 proves it too: the coordinator still holds the generation,
        // and counts the heartbeat while it prepares the rebalance.
        if let Ok((_, r)) = &reply {
            if r.error_code == 0 || r.error_code == KafkaCode::REBALANCE_IN_PROGRESS.code() {
                membership.prove(&target, sent);
            }
        }
        let failure = match reply {
            Ok((_, r)) if r.error_code == 0 => None,
            Ok((_, r)) => {
                let err = Error::kafka(format!("Heartbeat {group}"), r.error_code);
                handle_error(&group, &membership, &target, &err, &mut coord).then_some(err)
            }
            Err(e) => handle_error(&group, &membership, &target, &e, &mut coord).then_some(e),
        };
        match failure {
            None => {
                if failures > 0 {
                    log::info!("group {group}: heartbeats work again after {failures} failures");
                    failures = 0;
                }
            }
            Some(e) => {
                if failures == 0 && matches!(e, Error::Auth { .. }) {
                    log::error!("group {group}: heartbeat failed: {e}; retrying");
                } else if failures == 0 {
                    log::warn!("group {group}: heartbeat failed: {e}; retrying");
                } else {
                    log::debug!("group {group}: heartbeat failed again: {e}");
                }
                failures = failures.saturating_add(1);
                next = Instant::now() + backoff.delay(failures);
            }
        }
    }
}

/// Acts on a failed heartbeat per the retry driver's classification; true when it should be sent
/// again soon (the connection broke, the coordinator moved or is loading).
fn handle_error(
    group: &str,
    membership: &Membership,
    target: &Generation,
    e: &Error,
    coord: &mut Coordinator,
) -> bool {
    if e.kafka_code() == Some(super::FENCED_INSTANCE_ID) {
        log::debug!("group {group}: heartbeat: {e}");
        membership.report(target, GenerationEnd::InstanceFenced);
        return false;
    }
    match coord.recover(e) {
        Action::Rejoin => {
            let end = match e.kafka_code() {
                Some(c @ (KafkaCode::ILLEGAL_GENERATION | KafkaCode::UNKNOWN_MEMBER_ID)) => {
                    GenerationEnd::Fenced(c)
                }
                _ => GenerationEnd::Rebalance,
            };
            log::debug!("group {group}: heartbeat: {e}");
            membership.report(target, end);
            false
        }
        Action::Retry | Action::Reconnect | Action::Rediscover => true,
        // Refused credentials: a failure streak (logged once, then sent
        // again at the back-off), not a warning at every beat.
        Action::Fail if matches!(e, Error::Auth { .. }) => true,
        Action::Fail => {
            // Not ours to fix; the next beat tries again at the interval.
            log::warn!("group {group}: heartbeat: {e}");
            false
        }
    }
}

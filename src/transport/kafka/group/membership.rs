//! What the poll side and the heartbeat thread share about the membership
//! (see the module docs of `group`): the generation to heartbeat for, and
//! what the coordinator said about it.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::KafkaCode;

/// A generation this member belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Generation {
    pub(super) id: i32,
    pub(super) member_id: String,
}

/// How the coordinator ended this member's current generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GenerationEnd {
    /// REBALANCE_IN_PROGRESS (or the leader's own request): revoke and
    /// rejoin.
    Rebalance,
    /// ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID: this member is out of the
    /// generation; its partitions are lost.
    Fenced(KafkaCode),
    /// FENCED_INSTANCE_ID (82): a newer member took this member's
    /// `group.instance.id`. Fatal for this member (no rejoin).
    InstanceFenced,
}

#[derive(Debug, Default)]
pub(super) struct MembershipState {
    /// Generation the heartbeat thread heartbeats for; `None` = idle.
    pub(super) target: Option<Generation>,
    /// How `target` ended, once reported; cleared whenever `target` changes.
    pub(super) ended: Option<GenerationEnd>,
    /// Bumped on every `target` change, so the heartbeat thread restarts its
    /// interval for a new generation.
    pub(super) epoch: u64,
    /// When the coordinator last heard from this member for `target`, by
    /// the *sending* time of what it answered (the SyncGroup that entered
    /// the generation, then each heartbeat it answered): the broker's
    /// session timer restarted no earlier than that. `None`: no target.
    pub(super) heard_since: Option<Instant>,
    /// [`Membership::expired`] said so for `target` already.
    pub(super) lapse_reported: bool,
    pub(super) stop: bool,
}

/// The membership state shared by the poll side and the heartbeat thread
/// (mutex + condvar).
#[derive(Debug, Default)]
pub(super) struct Membership {
    state: Mutex<MembershipState>,
    pub(super) wake: Condvar,
}

impl Membership {
    pub(super) fn lock(&self) -> MutexGuard<'_, MembershipState> {
        // A panic while holding this lock cannot leave it inconsistent (plain
        // assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation to heartbeat for from now on (`None`: none), entered
    /// by a SyncGroup sent at `synced_at` (see `heard_since`).
    pub(super) fn set_target(&self, target: Option<Generation>, synced_at: Instant) {
        let mut st = self.lock();
        st.heard_since = target.as_ref().map(|_| synced_at);
        st.lapse_reported = false;
        st.target = target;
        st.ended = None;
        st.epoch = st.epoch.wrapping_add(1);
        self.wake.notify_all();
    }

    /// No generation to heartbeat for.
    pub(super) fn clear_target(&self) {
        self.set_target(None, Instant::now());
    }

    /// The coordinator answered a heartbeat for `about` sent at `sent`
    /// (answered at all: 27 counts too, Kafka restarts the session timer on
    /// it), if `about` is still the target.
    ///
    /// Not once the session lapsed (see [`Membership::lapsed`]): by then
    /// the engine gave the partitions up, so the lapse is final for the
    /// generation and the poll side reports them lost.
    pub(super) fn heard(&self, about: &Generation, sent: Instant, limit: Duration) {
        let mut st = self.lock();
        if st.target.as_ref() != Some(about) {
            return;
        }
        if let Some(since) = &mut st.heard_since {
            if since.elapsed() < limit {
                *since = (*since).max(sent);
            }
        }
    }

    /// Whether the target generation's session lapsed: nothing answered
    /// for `limit` since `heard_since`. Final until the next target.
    pub(super) fn lapsed(&self, limit: Duration) -> bool {
        self.lock()
            .heard_since
            .is_some_and(|since| since.elapsed() >= limit)
    }

    /// Whether nothing sent for the target generation was answered within
    /// `limit` (then the broker may have expired the member): true once per
    /// target, the caller treats its partitions as lost.
    pub(super) fn expired(&self, limit: Duration) -> bool {
        let mut st = self.lock();
        match st.heard_since {
            Some(since) if !st.lapse_reported && since.elapsed() >= limit => {
                st.lapse_reported = true;
                true
            }
            _ => false,
        }
    }

    /// When the target generation's session lapses (see
    /// [`Membership::expired`]) unless a heartbeat is answered before;
    /// `None` without a target.
    pub(super) fn lapses_at(&self, limit: Duration) -> Option<Instant> {
        self.lock().heard_since.map(|since| since + limit)
    }

    /// Records `end` if `about` is still the current generation. Fenced
    /// wins over Rebalance; a fenced generation is no longer heartbeated.
    pub(super) fn report(&self, about: &Generation, end: GenerationEnd) {
        let mut st = self.lock();
        if st.target.as_ref() != Some(about) {
            return;
        }
        // InstanceFenced wins over Fenced, which wins over Rebalance.
        match (st.ended, end) {
            (Some(GenerationEnd::InstanceFenced), _) => {}
            (Some(GenerationEnd::Fenced(_)), GenerationEnd::Rebalance) => {}
            (_, e) => st.ended = Some(e),
        }
    }

    /// The reported end of the current generation, once.
    pub(super) fn take_end(&self) -> Option<GenerationEnd> {
        self.lock().ended.take()
    }

    /// Stops the heartbeat thread.
    pub(super) fn stop(&self) {
        let mut st = self.lock();
        st.stop = true;
        st.target = None;
        st.heard_since = None;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(id: i32) -> Generation {
        Generation {
            id,
            member_id: "m".into(),
        }
    }

    #[test]
    fn reports_about_other_generations_are_ignored() {
        let s = Membership::default();
        s.report(&gen(1), GenerationEnd::Rebalance);
        assert_eq!(s.take_end(), None, "no target yet");
        s.set_target(Some(gen(2)), Instant::now());
        s.report(
            &gen(1),
            GenerationEnd::Fenced(KafkaCode::ILLEGAL_GENERATION),
        );
        assert_eq!(s.take_end(), None, "stale generation");
        s.report(&gen(2), GenerationEnd::Rebalance);
        s.set_target(Some(gen(3)), Instant::now());
        assert_eq!(s.take_end(), None, "a new target clears old reports");
    }

    #[test]
    fn fenced_wins_over_rebalance() {
        let s = Membership::default();
        s.set_target(Some(gen(5)), Instant::now());
        s.report(&gen(5), GenerationEnd::Rebalance);
        s.report(&gen(5), GenerationEnd::Fenced(KafkaCode::UNKNOWN_MEMBER_ID));
        s.report(&gen(5), GenerationEnd::Rebalance);
        assert_eq!(
            s.take_end(),
            Some(GenerationEnd::Fenced(KafkaCode::UNKNOWN_MEMBER_ID))
        );
        assert_eq!(s.take_end(), None, "taken once");
        s.report(&gen(5), GenerationEnd::InstanceFenced);
        s.report(&gen(5), GenerationEnd::Fenced(KafkaCode::UNKNOWN_MEMBER_ID));
        assert_eq!(s.take_end(), Some(GenerationEnd::InstanceFenced));
    }

    #[test]
    fn the_session_expires_from_the_last_answered_send() {
        let s = Membership::default();
        let limit = Duration::from_millis(200);
        let long_ago = Instant::now() - Duration::from_secs(1);
        assert!(!s.expired(limit), "no target, nothing to expire");
        s.set_target(Some(gen(1)), long_ago);
        // A heartbeat sent long ago, answered now, does not help; nor one
        // for another generation.
        s.heard(&gen(1), long_ago + Duration::from_millis(100), limit);
        s.heard(&gen(2), Instant::now(), limit);
        assert!(s.lapsed(limit));
        // Once lapsed, a heartbeat answered late does not revive it.
        s.heard(&gen(1), Instant::now(), limit);
        assert!(s.lapsed(limit));
        assert!(s.expired(limit));
        assert!(!s.expired(limit), "reported once");
        // A fresh target restarts it; a recent answered heartbeat keeps it.
        s.set_target(Some(gen(2)), Instant::now() - limit / 2);
        s.heard(&gen(2), Instant::now(), limit);
        assert!(!s.expired(limit));
        assert!(!s.lapsed(limit));
        let lapses = s.lapses_at(limit).unwrap();
        assert!(lapses > Instant::now() && lapses <= Instant::now() + limit);
        s.clear_target();
        assert!(!s.expired(Duration::ZERO), "no target");
        assert_eq!(s.lapses_at(limit), None);
    }
}

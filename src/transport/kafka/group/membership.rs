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
    /// No answer proved the membership for this long, which is within the
    /// lapse margin of the session timeout: the coordinator may have
    /// expired the member (see [`Membership::lapsed`]). Its partitions
    /// are lost, as for `Fenced`, but the member id is kept.
    Lapsed(Duration),
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
    /// When the coordinator last proved to hold `target`: the send time of
    /// the latest request whose answer showed it (see [`Membership::prove`]),
    /// or the time `target` was set (a join just completed). `None` while
    /// there is no target.
    pub(super) proven: Option<Instant>,
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

    /// The generation to heartbeat for from now on (`None`: none).
    pub(super) fn set_target(&self, target: Option<Generation>) {
        let mut st = self.lock();
        // A new generation starts a new clock. Kafka's coordinator resets
        // the session of every member when it answers their SyncGroup (and
        // counts a member waiting in JoinGroup or SyncGroup as alive), so
        // the broker's clock started no later than the answer arrived here.
        st.proven = target.as_ref().map(|_| Instant::now());
        st.target = target;
        st.ended = None;
        st.epoch = st.epoch.wrapping_add(1);
        self.wake.notify_all();
    }

    /// A request for `about` sent at `sent` was answered in a way that
    /// shows the coordinator still held that generation then (Heartbeat
    /// 0 or 27, a successful OffsetCommit). The send time, not the answer's:
    /// the coordinator got the request no earlier than it was sent, so a
    /// deadline counted from it is never later than the coordinator's.
    /// Ignored for another generation, and never moves the clock back (a
    /// slow answer to an older request arriving after a newer one).
    pub(super) fn prove(&self, about: &Generation, sent: Instant) {
        let mut st = self.lock();
        if st.target.as_ref() != Some(about) {
            return;
        }
        if let Some(before) = st.proven.filter(|&p| p < sent) {
            // How close members come to a lapse (the gap between proofs),
            // for tuning against a coordinator.
            log::trace!(
                "generation {}: proven again after {:?}",
                about.id,
                sent - before
            );
        }
        st.proven = st.proven.max(Some(sent));
    }

    /// How long since the membership of `about` was last proven, if that
    /// is `session - margin` or more: the coordinator expires a member
    /// `session` after the last heartbeat it received, so past this point
    /// the partitions may already be someone else's. `None` for another
    /// generation or one already ended by the coordinator.
    pub(super) fn lapsed(
        &self,
        about: &Generation,
        session: Duration,
        margin: Duration,
    ) -> Option<Duration> {
        let st = self.lock();
        if st.target.as_ref() != Some(about)
            || matches!(
                st.ended,
                Some(GenerationEnd::Fenced(_) | GenerationEnd::InstanceFenced)
            )
        {
            return None;
        }
        let since = st.proven?.elapsed();
        (since >= session.saturating_sub(margin)).then_some(since)
    }

    /// Records `end` if `about` is still the current generation. Fenced
    /// wins over Rebalance; a fenced generation is no longer heartbeated.
    pub(super) fn report(&self, about: &Generation, end: GenerationEnd) {
        let mut st = self.lock();
        if st.target.as_ref() != Some(about) {
            return;
        }
        // InstanceFenced wins over Fenced, which wins over Lapsed, which
        // wins over Rebalance.
        match (st.ended, end) {
            (Some(GenerationEnd::InstanceFenced), _) => {}
            (
                Some(GenerationEnd::Fenced(_)),
                GenerationEnd::Rebalance | GenerationEnd::Lapsed(_),
            ) => {}
            (Some(GenerationEnd::Lapsed(_)), GenerationEnd::Rebalance) => {}
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
        st.proven = None;
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
        s.set_target(Some(gen(2)));
        s.report(
            &gen(1),
            GenerationEnd::Fenced(KafkaCode::ILLEGAL_GENERATION),
        );
        assert_eq!(s.take_end(), None, "stale generation");
        s.report(&gen(2), GenerationEnd::Rebalance);
        s.set_target(Some(gen(3)));
        assert_eq!(s.take_end(), None, "a new target clears old reports");
    }

    #[test]
    fn fenced_wins_over_rebalance() {
        let s = Membership::default();
        s.set_target(Some(gen(5)));
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
    fn lapse_counts_from_the_latest_proof_of_the_current_generation() {
        let s = Membership::default();
        let (session, margin) = (Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(s.lapsed(&gen(1), session, margin), None, "no target");
        s.set_target(Some(gen(1)));
        assert_eq!(s.lapsed(&gen(1), session, margin), None, "just joined");
        // Back-date the clock as if the join were 9 s ago.
        let old = Instant::now() - Duration::from_secs(9);
        s.lock().proven = Some(old);
        let since = s.lapsed(&gen(1), session, margin).expect("lapsed");
        assert!(since >= Duration::from_secs(9), "{since:?}");
        assert_eq!(s.lapsed(&gen(2), session, margin), None, "other generation");
        // A proof for another generation does not help; an older one does
        // not move the clock back; a newer one does.
        s.prove(&gen(2), Instant::now());
        assert!(s.lapsed(&gen(1), session, margin).is_some());
        s.prove(&gen(1), old - Duration::from_secs(1));
        assert_eq!(s.lock().proven, Some(old));
        s.prove(&gen(1), Instant::now() - Duration::from_secs(7));
        assert_eq!(s.lapsed(&gen(1), session, margin), None);
        // A new generation starts a new clock.
        s.lock().proven = Some(old);
        s.set_target(Some(gen(2)));
        assert_eq!(s.lapsed(&gen(2), session, margin), None);
        // Lapsed yields to Fenced, wins over Rebalance.
        s.report(&gen(2), GenerationEnd::Lapsed(Duration::from_secs(9)));
        s.report(&gen(2), GenerationEnd::Rebalance);
        assert_eq!(
            s.take_end(),
            Some(GenerationEnd::Lapsed(Duration::from_secs(9)))
        );
        s.report(
            &gen(2),
            GenerationEnd::Fenced(KafkaCode::ILLEGAL_GENERATION),
        );
        s.report(&gen(2), GenerationEnd::Lapsed(Duration::from_secs(9)));
        assert_eq!(
            s.take_end(),
            Some(GenerationEnd::Fenced(KafkaCode::ILLEGAL_GENERATION))
        );
    }
}

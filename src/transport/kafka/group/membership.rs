//! What the poll side and the heartbeat thread share about the membership
//! (see the module docs of `group`): the generation to heartbeat for, and
//! what the coordinator said about it.

use std::sync::{Condvar, Mutex, MutexGuard};

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
        st.target = target;
        st.ended = None;
        st.epoch = st.epoch.wrapping_add(1);
        self.wake.notify_all();
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
}

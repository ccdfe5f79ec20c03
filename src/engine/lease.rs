//! One assignment of one partition: the fencing token of the engine.
//!
//! A new lease is made on every assignment, and revoking a partition marks
//! its lease revoked. Work carries the lease it was read under, so work of
//! a revoked assignment (a completion, a parked retry record, a write in
//! flight) can never mark offsets done in a later assignment of the same
//! partition. The consumer thread and the relay both fence this way.
//!
//! A lease may also carry its consumer's [`SessionFence`]: once the group
//! session may have lapsed (the member is cut off from the coordinator),
//! the lease counts as revoked from then on, also while the consumer
//! thread is stuck on a hung connection and has not yet seen the `Lost`
//! its next poll reports. A handler already running finishes; its outcome
//! is not committed (the partition is given up without a commit).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::watermark::OffsetTracker;
use crate::record::TopicPartition;
use crate::transport::SessionFence;

/// One assignment of one partition to this engine.
#[derive(Debug)]
pub(crate) struct Lease {
    pub tp: TopicPartition,
    /// Set on revoke: workers skip this lease's queued jobs, the relay
    /// drops its parked records.
    pub revoked: AtomicBool,
    /// Offsets of this lease; locked by the owning thread only (never
    /// contended), kept here so a completion needs no map lookup.
    tracker: Mutex<OffsetTracker>,
    /// Records dispatched and not yet completed (queued, running, or in an
    /// outbox). Consumer thread only: atomics just to make `Lease` `Sync`.
    pub outstanding: AtomicUsize,
    /// Of those, records waiting in an outbox for a full worker queue.
    pub outboxed: AtomicUsize,
    /// The consumer's session check, set once after the assignment.
    fence: OnceLock<Fence>,
}

struct Fence(SessionFence);

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionFence")
    }
}

impl Lease {
    pub(crate) fn new(tp: TopicPartition) -> Arc<Self> {
        Arc::new(Lease {
            tp,
            revoked: AtomicBool::new(false),
            tracker: Mutex::new(OffsetTracker::default()),
            outstanding: AtomicUsize::new(0),
            outboxed: AtomicUsize::new(0),
            fence: OnceLock::new(),
        })
    }

    /// Revokes this lease once `fence` says the session lapsed.
    pub(crate) fn set_fence(&self, fence: SessionFence) {
        let _ = self.fence.set(Fence(fence));
    }

    pub(crate) fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    pub(crate) fn is_revoked(&self) -> bool {
        if self.revoked.load(Ordering::Acquire) {
            return true;
        }
        // Sticky: a lapsed session ends the lease for good, whatever the
        // fence says later (the member may have rejoined by then).
        if self.fence.get().is_some_and(|f| (f.0)()) {
            self.revoke();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lapsed_session_revokes_the_lease_for_good() {
        let lease = Lease::new(TopicPartition::new("t", 0));
        let lapsed = Arc::new(AtomicBool::new(false));
        let l = lapsed.clone();
        lease.set_fence(Arc::new(move || l.load(Ordering::SeqCst)));
        assert!(!lease.is_revoked());
        lapsed.store(true, Ordering::SeqCst);
        assert!(lease.is_revoked());
        lapsed.store(false, Ordering::SeqCst);
        assert!(lease.is_revoked(), "sticky");
    }
}

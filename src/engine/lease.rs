//! One assignment of one partition: the fencing token of the engine.
//!
//! A new lease is made on every assignment, and revoking a partition marks
//! its lease revoked. Work carries the lease it was read under, so work of
//! a revoked assignment (a completion, a parked retry record, a write in
//! flight) can never mark offsets done in a later assignment of the same
//! partition. The consumer thread and the relay both fence this way.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::watermark::OffsetTracker;
use crate::record::TopicPartition;

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
}

impl Lease {
    pub(crate) fn new(tp: TopicPartition) -> Arc<Self> {
        Arc::new(Lease {
            tp,
            revoked: AtomicBool::new(false),
            tracker: Mutex::new(OffsetTracker::default()),
            outstanding: AtomicUsize::new(0),
            outboxed: AtomicUsize::new(0),
        })
    }

    pub(crate) fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

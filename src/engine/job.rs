//! What travels between the consumer thread and the workers.

use std::sync::Arc;

use super::lease::Lease;
use crate::partitioner::murmur2;
use crate::record::Record;

/// Records per job batch sent to a worker.
pub(crate) const JOB_BATCH: usize = 256;

/// The worker for a record: murmur2 of its key modulo `workers`, so a key
/// always goes to the same worker (from the consumer thread and from the
/// relay's private redelivery alike); keyless records take turns through
/// `round_robin`.
pub(crate) fn worker_for(key: Option<&[u8]>, workers: usize, round_robin: &mut usize) -> usize {
    let workers = workers.max(1);
    match key {
        Some(k) => (murmur2(k) as u32 as usize) % workers,
        None => {
            *round_robin = round_robin.wrapping_add(1);
            *round_robin % workers
        }
    }
}

/// A record for a worker.
pub(crate) struct Job {
    pub record: Record,
    pub lease: Arc<Lease>,
    /// When the consumer thread received it (wall clock, ms).
    pub received_ms: i64,
}

/// A worker's answer for one job. `done == false` means skipped (the lease
/// was revoked or the engine is abandoning work): the offset stays
/// uncommitted and the record is read again later.
pub(crate) struct Completion {
    pub lease: Arc<Lease>,
    pub offset: i64,
    pub done: bool,
}

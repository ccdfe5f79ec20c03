//! What travels between the consumer thread and the workers.

use std::sync::Arc;

use super::lease::Lease;
use crate::record::Record;

/// Records per job batch sent to a worker.
pub(crate) const JOB_BATCH: usize = 256;

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

//! What travels between the consumer thread and the workers.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::lease::Lease;
use crate::partitioner::murmur2;
use crate::record::Record;

/// Records per job batch sent to a worker.
pub(crate) const JOB_BATCH: usize = 256;

/// Emptied job batches, handed back by the workers for the consumer thread
/// (and the relay's private redelivery) to fill again. A batch allocated
/// on one thread and freed on another (39 KiB every 256 records) went
/// through glibc's arena lock and chunk coalescing on the workers each
/// time, contending with the consumer thread's own allocations.
pub(crate) struct Spares {
    tx: Sender<Vec<Job>>,
    rx: Receiver<Vec<Job>>,
}

impl Spares {
    /// Keeps at most `max` spare batches (past that, emptied ones are
    /// freed): the batches the worker queues can hold is enough.
    pub(crate) fn new(max: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(max.max(1));
        Spares { tx, rx }
    }

    /// An empty batch with room for [`JOB_BATCH`] jobs.
    pub(crate) fn take(&self) -> Vec<Job> {
        self.rx
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(JOB_BATCH))
    }

    /// Hands back a batch, emptied here; one of another size is freed.
    pub(crate) fn give(&self, mut batch: Vec<Job>) {
        batch.clear();
        if batch.capacity() == JOB_BATCH {
            let _ = self.tx.try_send(batch);
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_hand_back_emptied_batches_of_the_usual_size_up_to_the_bound() {
        let spares = Spares::new(1);
        let fresh = spares.take();
        assert_eq!((fresh.len(), fresh.capacity()), (0, JOB_BATCH));
        // The same allocation comes back, empty.
        let at = fresh.as_ptr();
        spares.give(fresh);
        let again = spares.take();
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty());
        // One other batch of the usual size is kept (the bound is 1), a
        // second is freed, and so is a batch of another size.
        spares.give(again);
        spares.give(Vec::with_capacity(JOB_BATCH));
        spares.give(Vec::with_capacity(JOB_BATCH + 1));
        assert_eq!(spares.rx.len(), 1);
        let kept = spares.take();
        assert_eq!(kept.as_ptr(), at);
        // Then a new batch (`kept` still holds `at`).
        let other = spares.take();
        assert_eq!(other.capacity(), JOB_BATCH);
        assert_ne!(other.as_ptr(), at);
    }
}

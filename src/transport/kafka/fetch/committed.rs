//! What a read_committed consumer keeps of a Fetch reply.

use std::collections::{HashMap, HashSet};

use super::super::records::{BatchSpan, Control};
use crate::record::Record;

/// What a read_committed consumer keeps of one Fetch partition reply:
/// `records` (decoded from `from`, whose batches are `batches`) without
/// those of aborted transactions, and below the last stable offset `lso`
/// (when the broker gives one, >= 0); returns them and the next fetch
/// position.
///
/// Aborted transactions are `(producer id, first offset)`. As in Java's
/// `CompletedFetch`: walking the batches in order, a producer's aborted
/// transaction becomes "open" once a batch of that producer's reaches its
/// first offset, every transactional data batch of an open producer is
/// dropped, and the producer's ABORT marker (a control batch) closes it.
/// Batches without a producer id are never transactional; control batches
/// are already left out by the decoder.
///
/// Beyond Java: a transactional batch whose producer's next marker *in the
/// same reply* is an ABORT is dropped too, listed or not. A producer has
/// one transaction open at a time, so its batches before an ABORT marker
/// belong to the aborted transaction: on Kafka this only repeats what the
/// list says, but Tansu (0.6) lists no aborted transaction at all, and
/// without this read_committed would read them there. A batch whose marker
/// is not in the reply is left to the list (never held back: a
/// transaction bigger than one reply must not stall the partition).
///
/// The LSO clip is a second line of defence: a broker honouring
/// isolation_level 1 never sends data at or above its LSO, but one that
/// ignores it would otherwise hand out records of open transactions. The
/// position then stops at the LSO (never below `from`), so those records
/// are fetched again once their transaction ended.
pub(crate) fn committed_only(
    mut records: Vec<Record>,
    next: i64,
    from: i64,
    batches: &[BatchSpan],
    aborted: &[(i64, i64)],
    lso: i64,
) -> (Vec<Record>, i64) {
    let mut pending: Vec<(i64, i64)> = aborted.to_vec();
    // By first offset, so that the walk opens them in log order.
    pending.sort_by_key(|&(pid, first)| (first, pid));
    let mut pending = pending.into_iter().peekable();
    let mut open: HashSet<i64> = HashSet::new();
    // Inclusive offset ranges of the dropped batches, ascending.
    let mut dropped: Vec<(i64, i64)> = Vec::new();
    // The nearest later marker of each producer, walking backwards.
    let mut next_marker: HashMap<i64, Control> = HashMap::new();
    for b in batches.iter().rev() {
        if b.producer_id < 0 {
            continue;
        }
        match b.control {
            Some(c) => {
                next_marker.insert(b.producer_id, c);
            }
            None if b.transactional && next_marker.get(&b.producer_id) == Some(&Control::Abort) => {
                dropped.push((b.base, b.last));
            }
            None => {}
        }
    }
    for b in batches {
        if b.producer_id < 0 {
            continue;
        }
        while let Some(&(pid, first)) = pending.peek() {
            if first > b.last {
                break;
            }
            open.insert(pid);
            pending.next();
        }
        if b.control == Some(Control::Abort) {
            open.remove(&b.producer_id);
        } else if b.control.is_none() && b.transactional && open.contains(&b.producer_id) {
            dropped.push((b.base, b.last));
        }
    }
    if !dropped.is_empty() {
        // Both walks may name a batch; ranges never overlap otherwise.
        dropped.sort_unstable();
        dropped.dedup();
        let mut i = 0;
        records.retain(|r| {
            while i < dropped.len() && dropped[i].1 < r.offset {
                i += 1;
            }
            !(i < dropped.len() && dropped[i].0 <= r.offset)
        });
    }
    let mut next = next;
    if lso >= 0 {
        records.retain(|r| r.offset < lso);
        next = next.min(lso.max(from));
    }
    (records, next)
}

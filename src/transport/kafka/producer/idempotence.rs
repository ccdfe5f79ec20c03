//! The idempotent producer's state (KIP-98 without transactions, as Java's
//! `enable.idempotence=true`): the producer id and epoch from InitProducerId
//! (asked of any broker: a non-transactional producer has no coordinator),
//! each partition's next sequence number and last acknowledged one, and
//! what the Produce error codes it brings mean.
//!
//! Invariants:
//! - A batch gets its base sequence when first encoded and keeps it, with
//!   exactly the same records, through every retry in the same
//!   *generation* (producer id and epoch): the broker recognises a resent
//!   batch by its sequence range and answers a duplicate with success.
//! - A new producer id (a reset) starts a new generation: every sequence
//!   restarts at 0 and batches numbered in an older generation are numbered
//!   again when next sent. A reset waits until no request is in flight (as
//!   Java's epoch bump waits for in-flight batches to resolve), so no batch
//!   of the old generation is still to be answered.

use std::collections::HashMap;

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, ProducerId};

/// A topic and partition (as `state::Tp`; not imported, so that `state`
/// can hold this module's types without an import cycle).
type Tp = (String, i32);
use crate::error::{Error, KafkaCode, Result};
use crate::transport::kafka::client::Client;
use crate::transport::kafka::retry::{classify, Action};

/// OUT_OF_ORDER_SEQUENCE_NUMBER.
pub(super) const OUT_OF_ORDER_SEQUENCE: i16 = 45;
/// DUPLICATE_SEQUENCE_NUMBER: the broker already has the batch; success.
pub(super) const DUPLICATE_SEQUENCE: i16 = 46;
/// INVALID_PRODUCER_EPOCH.
pub(super) const INVALID_PRODUCER_EPOCH: i16 = 47;
/// UNKNOWN_PRODUCER_ID.
pub(super) const UNKNOWN_PRODUCER_ID: i16 = 59;
/// PRODUCER_FENCED.
pub(super) const PRODUCER_FENCED: i16 = 90;

/// A batch's sequence: the generation it was numbered in and its base
/// sequence.
pub(super) type Seq = (u64, i32);

/// What a Produce error code means for an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SeqAction {
    /// Not an idempotence code: the usual retry rules.
    Usual,
    /// Retry the batch as it is (an earlier batch is unresolved: it arrived
    /// after a gap the earlier batch's retry will fill).
    Retry,
    /// Take a new producer id, then retry the batch with a new sequence.
    ResetAndRetry,
    /// Take a new producer id, and fail the batch.
    ResetAndFail,
}

#[derive(Default)]
pub(super) struct Idempotence {
    /// Producer id and epoch of the current generation, once known.
    pub(super) ids: Option<(i64, i16)>,
    /// Bumped at every new producer id.
    pub(super) generation: u64,
    /// Next base sequence per partition.
    next: HashMap<Tp, i32>,
    /// Last sequence the broker acknowledged per partition.
    acked: HashMap<Tp, i32>,
    /// A new producer id is due before the next request.
    pub(super) reset_due: bool,
}

/// Sequences wrap at i32::MAX to 0, as the broker expects.
fn add(seq: i32, n: i32) -> i32 {
    let sum = i64::from(seq) + i64::from(n);
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

impl Idempotence {
    /// Numbers a new batch of `n` records of `tp`.
    pub(super) fn assign(&mut self, tp: &Tp, n: i32) -> Seq {
        let next = self.next.entry(tp.clone()).or_insert(0);
        let base = *next;
        *next = add(base, n);
        (self.generation, base)
    }

    /// Gives back the numbers of the last batch of `tp` (it could not be
    /// encoded, so it was never sent).
    pub(super) fn unassign(&mut self, tp: &Tp, seq: Seq) {
        if seq.0 == self.generation {
            self.next.insert(tp.clone(), seq.1);
        }
    }

    /// Whether `seq` belongs to the current generation.
    pub(super) fn current(&self, seq: Option<Seq>) -> bool {
        seq.is_some_and(|(g, _)| g == self.generation)
    }

    /// The broker acknowledged the batch `seq` of `n` records of `tp`.
    pub(super) fn acked(&mut self, tp: &Tp, seq: Option<Seq>, n: i32) {
        if let Some(s) = seq.filter(|s| s.0 == self.generation) {
            self.acked.insert(tp.clone(), add(s.1, n - 1));
        }
    }

    /// What `code` means for the batch `seq` of `tp` (Java's
    /// `TransactionManager.canRetry` / `handleFailedBatch` for a
    /// non-transactional producer).
    pub(super) fn on_code(&self, tp: &Tp, seq: Option<Seq>, code: i16) -> SeqAction {
        let codes = [
            OUT_OF_ORDER_SEQUENCE,
            UNKNOWN_PRODUCER_ID,
            INVALID_PRODUCER_EPOCH,
            PRODUCER_FENCED,
        ];
        if codes.contains(&code) && seq.is_some_and(|s| s.0 != self.generation) {
            // Sent under an id we already replaced: numbered again and
            // resent under the new one.
            return SeqAction::Retry;
        }
        match code {
            OUT_OF_ORDER_SEQUENCE => {
                let Some((generation, base)) = seq else {
                    return SeqAction::Usual;
                };
                let expected = self.acked.get(tp).map_or(0, |a| add(*a, 1));
                if generation != self.generation || base != expected {
                    // An earlier batch is unresolved (in flight or waiting
                    // for a retry): its retry fills the gap first.
                    SeqAction::Retry
                } else {
                    // The next batch in line and still out of order: the
                    // broker lost our state. Java bumps the epoch.
                    SeqAction::ResetAndRetry
                }
            }
            // The broker no longer knows the producer (its state expired
            // with the log's retention): as Java, start over with a new id.
            UNKNOWN_PRODUCER_ID => SeqAction::ResetAndRetry,
            // Another producer took over the id, or the epoch is stale:
            // the batch cannot go with it. Java makes the producer unusable
            // (a fatal error); we fail the batch and take a new id, so a
            // long-lived engine keeps producing.
            INVALID_PRODUCER_EPOCH | PRODUCER_FENCED => SeqAction::ResetAndFail,
            _ => SeqAction::Usual,
        }
    }

    /// Forgets the producer id: the next request takes a new one.
    pub(super) fn start_over(&mut self) {
        self.ids = None;
        self.generation += 1;
        self.next.clear();
        self.acked.clear();
        self.reset_due = false;
    }
}

/// How `InitProducerId` failures read: what failed and how to turn it off.
const HINT: &str = "InitProducerId for the idempotent producer (for a broker \
                    that refuses it, set enable.idempotence=false / \
                    KafkaConfig::idempotence(false))";

/// Asks any broker for a producer id and epoch (no transactional id: the
/// Java client sends it to the least loaded broker). Retriable codes
/// (the broker's producer-id manager still loading) are retried a few
/// times with the usual back-off.
pub(super) fn init_producer_id(client: &Client) -> Result<(i64, i16)> {
    let config = client.config();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let e = match request(client) {
            Ok(ids) => return Ok(ids),
            Err(e) => e,
        };
        let retriable = !matches!(classify(&e), Action::Fail | Action::Rejoin);
        if !retriable || attempt > config.max_retries.min(5) {
            return Err(e);
        }
        std::thread::sleep(config.retry_backoff);
    }
}

fn request(client: &Client) -> Result<(i64, i16)> {
    let config = client.config();
    let mut conn = client.connect_any()?;
    let version = conn
        .version(ApiKey::InitProducerId)
        .map_err(|e| Error::Protocol(format!("{HINT}: {e}")))?;
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    // Java's value for a producer without transactions.
    req.transaction_timeout_ms = i32::MAX;
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    let sent = conn.send(version, &req, config.request_timeout)?;
    let resp = conn.receive(sent)?;
    if resp.error_code != 0 {
        return Err(Error::kafka(HINT, KafkaCode::new(resp.error_code)));
    }
    if resp.producer_id.0 < 0 || resp.producer_epoch < 0 {
        return Err(Error::Protocol(format!(
            "{HINT}: the broker answered producer id {} epoch {}",
            resp.producer_id.0, resp.producer_epoch
        )));
    }
    Ok((resp.producer_id.0, resp.producer_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> Tp {
        ("t".into(), 0)
    }

    #[test]
    fn sequences_follow_on_and_wrap() {
        let mut i = Idempotence::default();
        assert_eq!(i.assign(&tp(), 3), (0, 0));
        assert_eq!(i.assign(&tp(), 2), (0, 3));
        i.unassign(&tp(), (0, 3));
        assert_eq!(i.assign(&tp(), 1), (0, 3));
        assert_eq!(add(i32::MAX, 1), 0);
        i.start_over();
        assert_eq!(i.assign(&tp(), 1), (1, 0));
    }

    #[test]
    fn out_of_order_is_retried_unless_next_in_line() {
        let mut i = Idempotence::default();
        let a = i.assign(&tp(), 2);
        let b = i.assign(&tp(), 2);
        // Nothing acked: b is behind a, a is next in line.
        assert_eq!(
            i.on_code(&tp(), Some(b), OUT_OF_ORDER_SEQUENCE),
            SeqAction::Retry
        );
        assert_eq!(
            i.on_code(&tp(), Some(a), OUT_OF_ORDER_SEQUENCE),
            SeqAction::ResetAndRetry
        );
        i.acked(&tp(), Some(a), 2);
        assert_eq!(
            i.on_code(&tp(), Some(b), OUT_OF_ORDER_SEQUENCE),
            SeqAction::ResetAndRetry
        );
        assert_eq!(
            i.on_code(&tp(), Some(b), UNKNOWN_PRODUCER_ID),
            SeqAction::ResetAndRetry
        );
        assert_eq!(
            i.on_code(&tp(), Some(b), PRODUCER_FENCED),
            SeqAction::ResetAndFail
        );
        assert_eq!(i.on_code(&tp(), Some(b), 6), SeqAction::Usual);
    }
}

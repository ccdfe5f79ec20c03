//! Engine counters.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::error::Error;
use crate::headers::DeadReason;

/// A snapshot of an engine's counters, from [`Engine::stats`](crate::Engine::stats).
/// Serializes with serde, e.g. for a metrics endpoint.
///
/// ```
/// use std::time::Duration;
/// use kafka_retry::{Engine, MemoryBroker, Outcome};
/// let broker = MemoryBroker::new();
/// broker.create_topic("orders", 1)?;
/// let engine = Engine::builder(broker)
///     .group_id("billing")
///     .topics(["orders"])
///     .handler(|_r| Outcome::Done)
///     .build()?;
/// let stats = engine.stats();
/// assert_eq!(stats.done, 0);
/// assert_eq!(stats.last_commit_ms, None); // nothing committed yet
/// println!("{}", serde_json::to_string(&stats).unwrap());
/// engine.shutdown(Duration::from_secs(5))?;
/// # Ok::<(), kafka_retry::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Records read from the origin topics (redelivered retries included).
    pub received: u64,
    /// Records the handler finished with [`Outcome::Done`](crate::Outcome::Done).
    pub done: u64,
    /// Records written to the retry topic.
    pub retried: u64,
    /// Parked records sent back to their origin topic by the relay.
    pub relayed: u64,
    /// Parked records the relay handed straight to this engine's workers
    /// ([`Redelivery::Private`](crate::Redelivery::Private)); not counted in
    /// `received` or `relayed`.
    pub redelivered_private: u64,
    /// Records parked behind an earlier record of their key
    /// ([`KeyOrder::Kept`](crate::KeyOrder::Kept)) instead of being
    /// handled: written to the retry topic, not failed, not in `retried`.
    pub held: u64,
    /// Copies the relay read and keeps whole until their key's turn
    /// ([`KeyOrder::Kept`](crate::KeyOrder::Kept)): held copies, and
    /// retries that fell due behind their key's head. At `max_parked` the
    /// engine pauses its origin partitions until these drain to 3/4.
    pub held_waiting: i64,
    /// Origin partitions that waited the longest time (10 s) for this
    /// instance's relay to read their retry partition and were then handed
    /// out in *hold-all* mode ([`KeyOrder::Kept`](crate::KeyOrder::Kept)):
    /// every keyed record of theirs parked until the relay has read it
    /// (slower, never out of order). Stays 0 while the relay group's
    /// assignment follows the engine's.
    pub hold_all: u64,
    /// Records written to the dead-letter topic, by reason.
    pub dead_lettered: DeadLettered,
    /// Records given up on with no dead-letter topic configured.
    pub dropped: u64,
    /// Handler panics caught (each record retried).
    pub panics: u64,
    /// Records handed to workers and not finished yet.
    pub in_flight: i64,
    /// Records parked in the relay, waiting for their due time.
    pub parked: i64,
    /// Of `parked`, records the relay evicted from its index (the budget,
    /// 100 × `max_parked` entries, was full with records due sooner) and
    /// will read again from the retry topic once there is room. Always 0
    /// on a transport without a [`Reader`](crate::transport::Reader).
    pub parked_unindexed: i64,
    /// Parked records gone from the retry topic (retention) before they
    /// were due: nothing was left to relay, their offsets were settled.
    pub parked_gone: u64,
    /// Origin-topic partitions assigned to this engine now.
    pub assigned_partitions: i64,
    /// Retry-topic partitions this engine's relay holds now (its own
    /// group's assignment; 0 while that group rebalances or with no relay).
    pub relay_partitions: i64,
    /// Of those, partitions paused because the workers are saturated.
    pub paused_partitions: i64,
    /// Rebalances seen by the consumer thread (revoked or lost events).
    pub rebalances: u64,
    /// Rebalances seen by the relay (revoked or lost events of its own
    /// group): each drops the released partitions' parked records
    /// uncommitted, so their next owner reads them again.
    pub relay_rebalances: u64,
    /// Failed writes to the retry or dead-letter topic (each retried).
    pub send_errors: u64,
    /// Failed offset commits (retried on the next interval).
    pub commit_errors: u64,
    /// Polls and writes that failed because a broker refused SASL
    /// authentication (wrong or rotated credentials, an expired token):
    /// logged as errors and retried at the longest back-off, never in a
    /// tight reconnect loop.
    pub auth_failures: u64,
    /// Wall-clock time of the last successful commit, ms since the Unix
    /// epoch; `None` before the first one.
    pub last_commit_ms: Option<i64>,
    /// Times the dead-letter limit tripped
    /// ([`EngineBuilder::dead_letter_limit`](crate::EngineBuilder::dead_letter_limit)).
    pub dead_letter_trips: u64,
    /// True while the dead-letter limit keeps the engine paused.
    pub dead_letter_paused: bool,
}

impl Stats {
    /// Bytes the relay keeps per indexed parked record (for benchmarks).
    #[doc(hidden)]
    pub const PARKED_ENTRY_BYTES: usize = crate::engine::PARKED_ENTRY_BYTES;
}

/// Dead-lettered record counts by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeadLettered {
    /// `max_retry_duration` passed (or a `retry_after` delay would outlast it).
    pub expired: u64,
    /// `max_attempts` reached.
    pub attempts: u64,
    /// The handler rejected the record.
    pub rejected: u64,
    /// Bad retry headers or an undecodable record.
    pub malformed: u64,
}

impl DeadLettered {
    /// All dead-lettered records.
    pub fn total(&self) -> u64 {
        self.expired + self.attempts + self.rejected + self.malformed
    }
}

/// The live counters shared by the engine's threads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub received: AtomicU64,
    pub done: AtomicU64,
    pub retried: AtomicU64,
    pub relayed: AtomicU64,
    pub redelivered_private: AtomicU64,
    pub held: AtomicU64,
    pub held_waiting: AtomicI64,
    pub hold_all: AtomicU64,
    pub expired: AtomicU64,
    pub attempts: AtomicU64,
    pub rejected: AtomicU64,
    pub malformed: AtomicU64,
    pub dropped: AtomicU64,
    pub panics: AtomicU64,
    pub in_flight: AtomicI64,
    pub parked: AtomicI64,
    pub parked_unindexed: AtomicI64,
    pub parked_gone: AtomicU64,
    pub assigned_partitions: AtomicI64,
    pub relay_partitions: AtomicI64,
    pub paused_partitions: AtomicI64,
    pub rebalances: AtomicU64,
    pub relay_rebalances: AtomicU64,
    pub send_errors: AtomicU64,
    pub commit_errors: AtomicU64,
    pub auth_failures: AtomicU64,
    /// 0 = never.
    pub last_commit_ms: AtomicI64,
    pub dead_letter_trips: AtomicU64,
    pub dead_letter_paused: AtomicBool,
}

impl Counters {
    pub(crate) fn dead(&self, reason: DeadReason) {
        match reason {
            DeadReason::Expired => &self.expired,
            DeadReason::Attempts => &self.attempts,
            DeadReason::Rejected => &self.rejected,
            DeadReason::Malformed => &self.malformed,
        }
        .fetch_add(1, Relaxed);
    }

    /// Counts `e` when it is an authentication failure; true if it was.
    pub(crate) fn auth_failed(&self, e: &Error) -> bool {
        let auth = matches!(e, Error::Auth { .. });
        if auth {
            self.auth_failures.fetch_add(1, Relaxed);
        }
        auth
    }

    /// A failed write that will be retried: counted (and as an
    /// authentication failure when it is one) and logged, as an error when
    /// the broker refused our credentials (no retry fixes that by itself).
    pub(crate) fn send_failed(&self, what: &str, e: &Error) {
        self.send_errors.fetch_add(1, Relaxed);
        if self.auth_failed(e) {
            log::error!("{what} failed, retrying: {e}");
        } else {
            log::warn!("{what} failed, retrying: {e}");
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            received: self.received.load(Relaxed),
            done: self.done.load(Relaxed),
            retried: self.retried.load(Relaxed),
            relayed: self.relayed.load(Relaxed),
            redelivered_private: self.redelivered_private.load(Relaxed),
            held: self.held.load(Relaxed),
            held_waiting: self.held_waiting.load(Relaxed),
            hold_all: self.hold_all.load(Relaxed),
            dead_lettered: DeadLettered {
                expired: self.expired.load(Relaxed),
                attempts: self.attempts.load(Relaxed),
                rejected: self.rejected.load(Relaxed),
                malformed: self.malformed.load(Relaxed),
            },
            dropped: self.dropped.load(Relaxed),
            panics: self.panics.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            parked: self.parked.load(Relaxed),
            parked_unindexed: self.parked_unindexed.load(Relaxed),
            parked_gone: self.parked_gone.load(Relaxed),
            assigned_partitions: self.assigned_partitions.load(Relaxed),
            relay_partitions: self.relay_partitions.load(Relaxed),
            paused_partitions: self.paused_partitions.load(Relaxed),
            rebalances: self.rebalances.load(Relaxed),
            relay_rebalances: self.relay_rebalances.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            commit_errors: self.commit_errors.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
            last_commit_ms: Some(self.last_commit_ms.load(Relaxed)).filter(|&ms| ms > 0),
            dead_letter_trips: self.dead_letter_trips.load(Relaxed),
            dead_letter_paused: self.dead_letter_paused.load(Relaxed),
        }
    }
}

//! Incremental cooperative rebalancing (KIP-429) on the member's side.
//!
//! Under `cooperative-sticky` a rebalance revokes nothing up front. When
//! the coordinator reports one (27, or the leader's own request), the
//! member rejoins on a thread of its own (`kafka-retry-rejoin`, with its
//! own coordinator connection: a parked JoinGroup blocks what follows it on
//! a connection) and keeps fetching, handing out records and committing
//! meanwhile. Its subscription lists the partitions it owns and their
//! generation, from which the leader's sticky assignor keeps every
//! partition where it is unless it must move, and withholds a moving one
//! until its owner released it.
//!
//! When the join completes, against the partitions owned:
//! - none revoked: `Assigned(added)` (possibly empty), done;
//! - some revoked: `Revoked(revoked)`; they stay owned until the next poll
//!   (the caller finishes or abandons their work and commits), which then
//!   returns `Assigned(added)` and rejoins once more, so the withheld
//!   partitions reach their new owner.
//!
//! Invariants: the partitions kept never lose their position or buffered
//! records (`Fetcher::reassign`); the heartbeat goes on for the old
//! generation until the new one is known; reports about the ending
//! generation are ignored while the rejoin runs (that is what it is for),
//! except a fenced instance id. A failed rejoin reports every partition
//! `Lost` and the next poll joins from scratch (as after a fence). Should
//! the group fall back to range (a member that only speaks eager joined),
//! the member had kept fetching through an eager rebalance: it reports
//! everything `Revoked` and takes the range assignment whole; records
//! handled in between may be handled again by the new owner, as after a
//! lost partition.
//!
//! The default (in `ConsumerConfig` and `EngineBuilder`): offering
//! cooperative first and range second is what "cooperative when every
//! member supports it, eager when the group requires it" needs. It has been
//! run against a fake coordinator and Tansu 0.6, not Apache Kafka.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::thread;

use super::join::{JoinOutcome, Rejoin};
use super::watch::MetadataWatch;
use super::{GroupConsumer, Phase, FENCED_INSTANCE_ID};
use crate::error::Error;
use crate::record::TopicPartition;
use crate::transport::ConsumerEvent;

/// What the poll after a cooperative `Revoked` does.
pub(super) struct AfterRevoke {
    /// The new assignment, in force from that poll.
    parts: Vec<TopicPartition>,
    /// The partitions new to this member, for `Assigned`.
    added: Vec<TopicPartition>,
    /// Rejoin once more (something was revoked under cooperative).
    rejoin: bool,
}

impl GroupConsumer {
    /// Starts a cooperative rejoin; on failure to start one, rebalances
    /// eagerly instead (revokes everything, then joins).
    pub(super) fn start_rejoin(&mut self) -> Option<ConsumerEvent> {
        log::info!(
            "group {}: cooperative rebalance: rejoining with {} partitions owned",
            self.config.group_id,
            self.assignment.len()
        );
        let owned = self.assignment.clone();
        let started = self.joiner(&owned, self.generation).and_then(|mut joiner| {
            let cancel = joiner.cancel.clone();
            thread::Builder::new()
                .name("kafka-retry-rejoin".into())
                .spawn(move || {
                    let result = joiner.run();
                    (joiner, result)
                })
                .map(|handle| Rejoin { handle, cancel })
                .map_err(|e| Error::Thread(format!("start kafka-retry-rejoin: {e}")))
        });
        match started {
            Ok(rejoin) => {
                self.rejoin = Some(rejoin);
                None
            }
            Err(e) => {
                log::warn!(
                    "group {}: {e}; rebalancing eagerly instead",
                    self.config.group_id
                );
                self.phase = Phase::RevokedPending;
                self.fetcher.clear();
                Some(ConsumerEvent::Revoked(self.assignment.clone()))
            }
        }
    }

    /// The event of a finished rejoin, if one finished.
    pub(super) fn rejoin_done(&mut self) -> Option<ConsumerEvent> {
        if !self.rejoin.as_ref().is_some_and(Rejoin::is_finished) {
            return None;
        }
        let rejoin = self.rejoin.take()?;
        let result = match rejoin.handle.join() {
            Ok((joiner, result)) => {
                self.take_back(joiner);
                result
            }
            Err(_) => Err(Error::Thread("kafka-retry-rejoin panicked".into())),
        };
        match result {
            Ok(out) => self.apply_rejoin(out),
            Err(e) => {
                let lost = std::mem::take(&mut self.assignment);
                if e.kafka_code() == Some(FENCED_INSTANCE_ID) {
                    log::error!("group {}: {e}; this member stops", self.config.group_id);
                    self.fence_instance();
                } else {
                    log::warn!(
                        "group {}: cooperative rejoin failed: {e}; {} partitions lost, \
                         joining again",
                        self.config.group_id,
                        lost.len()
                    );
                    self.generation = -1;
                    self.membership.set_target(None);
                    self.fetcher.clear();
                    self.watch = None;
                    self.phase = Phase::Unjoined;
                }
                Some(ConsumerEvent::Lost(lost))
            }
        }
    }

    /// Enters the generation a cooperative rejoin ended in.
    fn apply_rejoin(&mut self, out: JoinOutcome) -> Option<ConsumerEvent> {
        let old: BTreeSet<TopicPartition> = self.assignment.iter().cloned().collect();
        let new: BTreeSet<TopicPartition> = out.parts.iter().cloned().collect();
        self.generation = out.generation;
        self.membership.set_target(self.current());
        self.requested_in = None;
        let next_check = std::time::Instant::now() + self.client.config().metadata_max_age;
        self.watch = out
            .counts
            .map(|counts| MetadataWatch { counts, next_check });
        let was_cooperative = self.cooperative;
        self.cooperative = out.cooperative;
        log::info!(
            "group {}: member {} has generation {} ({}), assigned {:?}",
            self.config.group_id,
            self.member_id,
            out.generation,
            if out.cooperative {
                "cooperative-sticky"
            } else {
                "range"
            },
            out.parts
                .iter()
                .map(|tp| tp.to_string())
                .collect::<Vec<_>>()
        );
        if was_cooperative && !out.cooperative {
            // The group fell back to eager (see the module docs).
            self.fetcher.clear();
            self.after_revoke = Some(AfterRevoke {
                added: out.parts.clone(),
                parts: out.parts,
                rejoin: false,
            });
            return Some(ConsumerEvent::Revoked(old.into_iter().collect()));
        }
        let revoked: Vec<TopicPartition> = old.difference(&new).cloned().collect();
        let added: Vec<TopicPartition> = new.difference(&old).cloned().collect();
        if revoked.is_empty() {
            self.assignment = out.parts;
            self.fetcher.reassign(&self.assignment);
            self.read_new_positions();
            return Some(ConsumerEvent::Assigned(added));
        }
        // The revoked partitions stop delivering now; they stay owned (in
        // `assignment`) until the next poll.
        let kept: Vec<TopicPartition> = old.intersection(&new).cloned().collect();
        self.fetcher.reassign(&kept);
        self.after_revoke = Some(AfterRevoke {
            parts: out.parts,
            added,
            rejoin: true,
        });
        Some(ConsumerEvent::Revoked(revoked))
    }

    /// The poll after a cooperative `Revoked`: the new assignment, and the
    /// follow-up rejoin.
    pub(super) fn after_revoke(&mut self) -> Option<ConsumerEvent> {
        let next = self.after_revoke.take()?;
        self.assignment = next.parts;
        self.fetcher.reassign(&self.assignment);
        self.read_new_positions();
        if next.rejoin {
            // The coordinator answers the new generation's heartbeats
            // normally: ask for the follow-up rebalance ourselves. Should
            // the rejoin not start, the member rebalances eagerly (its
            // `Revoked` names everything, the added partitions too).
            if let Some(ev) = self.start_rejoin() {
                return Some(ev);
            }
        }
        Some(ConsumerEvent::Assigned(next.added))
    }

    fn read_new_positions(&mut self) {
        if self.fetcher.missing_positions().is_empty() {
            return;
        }
        if let Err(e) = self.init_positions() {
            log::warn!(
                "group {}: reading start offsets: {e}; will retry",
                self.config.group_id
            );
        }
    }

    /// On close: tells a rejoin still running to stop, and takes back its
    /// connection and member id if it already finished. One still in a
    /// call is left to end on its own (it sends no SyncGroup and no retry
    /// after that call), so the LeaveGroup goes at once on the member's
    /// own connection, as Java's client leaves in the middle of a join,
    /// instead of after a JoinGroup the coordinator may park for the whole
    /// rebalance timeout, and after every retry of it.
    pub(super) fn abandon_rejoin(&mut self) {
        let Some(rejoin) = self.rejoin.take() else {
            return;
        };
        rejoin.cancel.store(true, Ordering::SeqCst);
        if rejoin.is_finished() {
            if let Ok((joiner, _)) = rejoin.handle.join() {
                self.take_back(joiner);
            }
        } else {
            log::debug!(
                "group {}: closing during a rejoin; it stops after its request in flight",
                self.config.group_id
            );
        }
    }
}

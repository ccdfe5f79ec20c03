//! A classic-protocol (JoinGroup / SyncGroup / Heartbeat) consumer group
//! member: eager rebalances with the range assignor, or incremental ones
//! with cooperative-sticky (KIP-429, `cooperative.rs`) under
//! [`RebalanceProtocol::Cooperative`](crate::transport::RebalanceProtocol).
//!
//! # Threads and who owns what
//!
//! The caller's thread (the "poll side") owns the membership: it joins,
//! syncs, commits and leaves on its own coordinator connection, and fetches
//! on one connection per leader (`fetch.rs`). A background thread named
//! `kafka-retry-heartbeat` heartbeats on a *second* coordinator connection,
//! so a caller that does not poll for a long while keeps its membership.
//!
//! They share one [`Membership`] (mutex + condvar, `membership.rs`):
//! - the poll side publishes the generation to heartbeat for (`target`), or
//!   `None` while it is joining (no generation to heartbeat for) or closed;
//! - the heartbeat thread (and a failed commit) report what the coordinator
//!   said about *that* generation, a [`GenerationEnd`]: `Rebalance` (27)
//!   or `Fenced` (22/25), and when the coordinator last proved to hold it
//!   (see "Fencing itself" below).
//!   A report is only stored if `target` is still the generation the
//!   heartbeat was sent for, and changing `target` clears it, so the poll
//!   side never acts on a stale report from an earlier generation.
//!
//! # Event sequence (see [`ConsumerEvent`])
//!
//! `Unjoined --poll--> join --> Assigned(p) --> Active`
//! `Active --(Rebalance reported)--poll--> Revoked(p) --> RevokedPending`
//! `RevokedPending --poll--> join --> Assigned(q)`
//! `Active --(Fenced reported, or session lapsed)--poll--> Lost(p) --> Unjoined`
//!
//! Under cooperative-sticky a reported rebalance starts a rejoin in the
//! background instead, and the member stays `Active` (see `cooperative.rs`).
//!
//! Between `Revoked` and the next poll the generation stays the heartbeat
//! target: heartbeats continue (Kafka counts them even while it answers 27)
//! and commits at that generation still work, as Kafka accepts them while the
//! group is preparing the rebalance.
//!
//! # Fencing itself (a lapsed session)
//!
//! The coordinator expires a member `session_timeout` after the last
//! heartbeat it *received* and gives its partitions away, while a member
//! cut off from it would go on handling what it fetched. So, like
//! librdkafka (`rd_kafka_cgrp_session_timeout_check`), the member fences
//! itself: [`Membership`] keeps when the generation was last proven (the
//! send time of a Heartbeat answered 0 or 27, or of an OffsetCommit that
//! succeeded; the time a join completed starts a new clock), and once that
//! is `session_timeout` less [`lapse_margin`] ago the poll side reports
//! [`GenerationEnd::Lapsed`]: `Lost(all)` and a rejoin, as for 22/25, and
//! commits for that generation are refused locally from then on. The check
//! pauses while a cooperative rejoin runs (its JoinGroup / SyncGroup keep
//! the member alive on the coordinator however long they wait). A
//! heartbeat is given up after half the time to a lapse, so that one sent
//! again on a fresh connection can still prove the member. Not covered:
//! losing the coordinator during a cooperative rejoin (the member keeps its
//! partitions until the rejoin fails), and records already handed to a
//! handler.
//!
//! # New partitions (leader only)
//!
//! The coordinator does not notice that a topic gained partitions, or that a
//! subscribed topic was created: only the leader's assignor reads partition
//! counts. So, like Java, the leader remembers the counts it assigned from
//! ([`MetadataWatch`], `watch.rs`) and, every `metadata_max_age`, re-reads them from a
//! poll. When one differs it reports `Rebalance` for its own generation, so
//! the member goes through the same `Revoked` -> rejoin path as for a 27; the
//! leader's JoinGroup makes the coordinator rebalance the (stable) group, and
//! every member is then assigned from the new counts.
//!
//! Kafka rebalances a stable group on any JoinGroup from its leader; Tansu
//! (0.6) only when the member's metadata changed, and otherwise answers with
//! the current generation and keeps the old assignment. So the rejoin also
//! carries new metadata (see [`subscription`](join::subscription)); both coordinators rebalance
//! on that. Should a coordinator still keep the generation, the leader
//! keeps comparing against the counts of the assignment in force and asks
//! again at the next check.
//!
//! # Claims (joint assignment)
//!
//! A member with [`ConsumerConfig::claims`] publishes its claim in its
//! subscription's `user_data` (`assignor::user_data`) and, when the claim
//! changes, asks for a rebalance as for new partitions: the rejoin carries
//! new metadata, on which Kafka and Tansu both rebalance. A leader that sees
//! any claim assigns with `transport/claims.rs` instead of range or
//! cooperative-sticky.

//!
//! # Files
//!
//! - `mod.rs`: the member ([`GroupConsumer`]) and its poll / commit / close;
//! - `coordinator.rs`: finding and talking to the coordinator;
//! - `join.rs`: JoinGroup, the leader's assignment, SyncGroup, LeaveGroup;
//! - `cooperative.rs`: the cooperative rejoin, partial revokes;
//! - `offsets.rs`: OffsetFetch (start positions) and OffsetCommit;
//! - `heartbeat.rs`: the heartbeat thread;
//! - `membership.rs`: the state the poll side and the heartbeat thread share;
//! - `watch.rs`: the leader's partition-count watch, and the rejoin when
//!   the member's claims change (`ConsumerConfig::claims`).
//!
//! Every request goes through the retry driver (`retry.rs`).

mod cooperative;
#[cfg(test)]
mod cooperative_tests;
mod coordinator;
#[cfg(test)]
mod fence_tests;
mod heartbeat;
mod join;
mod membership;
mod offsets;
#[cfg(test)]
mod static_tests;
#[cfg(test)]
mod wakeup_tests;
mod watch;

pub(crate) use offsets::fetch_committed;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::Client;
use super::fetch::Fetcher;
use crate::error::{Error, KafkaCode, Result};
use crate::record::TopicPartition;
use crate::transport::{Consumer, ConsumerConfig, ConsumerEvent, PartitionProgress};
use coordinator::Coordinator;
use membership::{Generation, GenerationEnd, Membership};
use watch::MetadataWatch;

const PROTOCOL_TYPE: &str = "consumer";

/// 82: another member joined with this member's `group.instance.id`
/// (KIP-345). Fatal for this member, as in Java: a newer instance owns the
/// id now, so rejoining would fence that one in turn.
pub(super) const FENCED_INSTANCE_ID: KafkaCode = KafkaCode::new(82);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not in a generation; the next poll joins.
    Unjoined,
    /// Assigned and fetching.
    Active,
    /// `Revoked` was returned; the next poll rejoins.
    RevokedPending,
    /// Fenced by a newer member with our `group.instance.id`: every call
    /// fails with [`FENCED_INSTANCE_ID`].
    Fenced,
    Closed,
}

/// A classic consumer group member (see the module docs).
pub(crate) struct GroupConsumer {
    client: Arc<Client>,
    config: ConsumerConfig,
    coord: Coordinator,
    /// Member id the coordinator gave us; kept across rejoins (cleared on 25).
    member_id: String,
    /// Current generation; -1 when not a member (cleared on 22/25).
    generation: i32,
    phase: Phase,
    assignment: Vec<TopicPartition>,
    fetcher: Fetcher,
    membership: Arc<Membership>,
    heartbeat: Option<JoinHandle<()>>,
    /// Set while this member leads the current generation.
    watch: Option<MetadataWatch>,
    /// Rebalances this member asked for (see [`subscription`]).
    rebalance_requests: u32,
    /// The version of `config.claims` the last join published (see
    /// `watch.rs`, [`GroupConsumer::check_claims`]).
    claims_published: u64,
    /// When the member was made: a member with claims waits for its first
    /// claim before it first joins, up to its rebalance timeout from here.
    created: Instant,
    /// After asking for a rebalance: the generation it was asked in and the
    /// counts that generation was assigned from, in case the coordinator
    /// keeps that generation (then those counts are still in force).
    requested_in: Option<(i32, BTreeMap<String, Option<i32>>)>,
    /// Whether the group runs `cooperative-sticky` in this generation.
    cooperative: bool,
    /// A cooperative rejoin running on its own thread (see `cooperative.rs`).
    rejoin: Option<join::Rejoin>,
    /// A join a woken poll stopped waiting for (see `GroupConsumer::join`).
    joining: Option<join::Rejoin>,
    /// After a cooperative `Revoked`: what the next poll assigns.
    after_revoke: Option<cooperative::AfterRevoke>,
    /// How long before the session would expire, counted from the last
    /// proof of membership, the member gives its partitions up (see
    /// [`lapse_margin`]).
    lapse_margin: Duration,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.config.group_id)
            .field("member_id", &self.member_id)
            .field("generation", &self.generation)
            .field("phase", &self.phase)
            .field("assignment", &self.assignment)
            .finish()
    }
}

impl GroupConsumer {
    /// A member of `config.group_id`, not yet joined (the first poll joins).
    /// Starts the heartbeat thread, idle until the join completes.
    pub(crate) fn new(client: Arc<Client>, config: ConsumerConfig) -> Result<GroupConsumer> {
        validate(&config)?;
        let membership = Arc::new(Membership::default());
        let interval = client
            .config()
            .heartbeat_interval
            .unwrap_or(config.session_timeout / 3)
            .max(Duration::from_millis(10));
        let lapse_margin = lapse_margin(config.session_timeout, client.config().fetch_max_wait);
        // A heartbeat whose answer is lost (a dropped connection that does
        // not say so) is given up after half the time to a lapse, so that
        // one sent again on a fresh connection can still prove the member
        // in time; waiting the whole session would lapse it.
        let timeout = client
            .config()
            .request_timeout
            .min(config.session_timeout.saturating_sub(lapse_margin) / 2)
            .max(Duration::from_millis(1));
        let heartbeat = heartbeat::Heartbeat {
            client: client.clone(),
            group: config.group_id.clone(),
            client_id: config.client_id.clone(),
            group_instance_id: config.group_instance_id.clone(),
            membership: membership.clone(),
            interval,
            timeout,
        }
        .spawn()?;
        Ok(GroupConsumer {
            coord: Coordinator::new(
                client.clone(),
                config.group_id.clone(),
                config.client_id.as_deref(),
            ),
            fetcher: Fetcher::new(client.clone(), config.offset_reset, config.isolation_level),
            client,
            config,
            member_id: String::new(),
            generation: -1,
            phase: Phase::Unjoined,
            assignment: Vec::new(),
            membership,
            heartbeat: Some(heartbeat),
            watch: None,
            rebalance_requests: 0,
            claims_published: 0,
            created: Instant::now(),
            requested_in: None,
            cooperative: false,
            rejoin: None,
            joining: None,
            after_revoke: None,
            lapse_margin,
        })
    }

    fn current(&self) -> Option<Generation> {
        (self.generation >= 0).then(|| Generation {
            id: self.generation,
            member_id: self.member_id.clone(),
        })
    }

    /// Reports [`GenerationEnd::Lapsed`] (and returns how long since the
    /// last proof) once the current generation went unproven for the
    /// session timeout less the margin. Paused while a cooperative rejoin
    /// runs: its JoinGroup and SyncGroup keep the member alive on the
    /// coordinator while they wait (Kafka counts a member waiting in either
    /// as heartbeating), however long the rebalance takes, and the rejoin's
    /// outcome (a new generation, or `Lost`) settles the old one anyway.
    fn check_lapse(&self) -> Option<Duration> {
        if self.rejoin.is_some() {
            return None;
        }
        let gen = self.current()?;
        let since = self
            .membership
            .lapsed(&gen, self.config.session_timeout, self.lapse_margin)?;
        self.membership.report(&gen, GenerationEnd::Lapsed(since));
        Some(since)
    }

    /// Applies a pending heartbeat/commit report (or a lapsed session);
    /// returns the event to hand to the caller, if any.
    fn handle_generation_end(&mut self) -> Option<ConsumerEvent> {
        self.check_lapse();
        let end = self.membership.take_end()?;
        if self.rejoin.is_some() && end != GenerationEnd::InstanceFenced {
            // The generation is ending: that is what the rejoin is for (its
            // heartbeats are answered 27, then 22, meanwhile).
            return None;
        }
        match end {
            GenerationEnd::InstanceFenced => {
                log::error!(
                    "group {}: member {} (instance {:?}) fenced: another member joined with \
                     the same group.instance.id; this member stops",
                    self.config.group_id,
                    self.member_id,
                    self.config.group_instance_id.as_deref().unwrap_or_default()
                );
                let was = self.phase;
                self.fence_instance();
                let lost = std::mem::take(&mut self.assignment);
                (was == Phase::Active && !lost.is_empty()).then_some(ConsumerEvent::Lost(lost))
            }
            GenerationEnd::Fenced(_) | GenerationEnd::Lapsed(_) => {
                if let GenerationEnd::Fenced(c) = end {
                    log::warn!(
                        "group {}: member {} fenced from generation {} ({}); rejoining",
                        self.config.group_id,
                        self.member_id,
                        self.generation,
                        c.name()
                    );
                } else if let GenerationEnd::Lapsed(since) = end {
                    log::warn!(
                        "group {}: member {} has had no answer proving generation {} for \
                         {since:?} (session timeout {:?}): the coordinator may have expired \
                         it; its {} partitions are lost, rejoining",
                        self.config.group_id,
                        self.member_id,
                        self.generation,
                        self.config.session_timeout,
                        self.assignment.len()
                    );
                }
                self.generation = -1;
                if end == GenerationEnd::Fenced(KafkaCode::UNKNOWN_MEMBER_ID) {
                    self.member_id.clear();
                }
                self.membership.set_target(None);
                self.fetcher.clear();
                let lost = std::mem::take(&mut self.assignment);
                let was = self.phase;
                self.phase = Phase::Unjoined;
                // After Revoked the caller already let the partitions go.
                (was == Phase::Active).then_some(ConsumerEvent::Lost(lost))
            }
            GenerationEnd::Rebalance if self.phase == Phase::Active && self.cooperative => {
                // KIP-429: nothing is revoked before the rejoin; the member
                // keeps fetching while it runs.
                self.start_rejoin()
            }
            GenerationEnd::Rebalance if self.phase == Phase::Active => {
                log::info!(
                    "group {}: rebalance in progress; revoking {} partitions",
                    self.config.group_id,
                    self.assignment.len()
                );
                self.phase = Phase::RevokedPending;
                // Buffered records are dropped: whoever gets the partitions
                // next starts from the committed offsets.
                self.fetcher.clear();
                Some(ConsumerEvent::Revoked(self.assignment.clone()))
            }
            GenerationEnd::Rebalance => None,
        }
    }

    /// A member with claims that were never set does not join yet: its
    /// first assignment would follow no claim and be revoked one rebalance
    /// later (two rebalances on Tansu, a second each). Waits until
    /// `deadline` (the poll's) for them; true while it still should. Gives
    /// up after the rebalance timeout, then joins without.
    fn await_first_claim(&self, deadline: Instant) -> bool {
        let Some(claims) = &self.config.claims else {
            return false;
        };
        let give_up = self.created + self.config.rebalance_timeout;
        loop {
            if claims.is_set() {
                return false;
            }
            let now = Instant::now();
            if now >= give_up {
                log::warn!(
                    "group {}: no claim within {:?}; joining without",
                    self.config.group_id,
                    self.config.rebalance_timeout
                );
                return false;
            }
            if now >= deadline {
                return true;
            }
            std::thread::sleep(deadline.min(give_up).min(now + Duration::from_millis(10)) - now);
        }
    }

    /// Enters [`Phase::Fenced`]: no generation, no heartbeats, nothing to
    /// fetch. The assignment is left for the caller to report as lost.
    fn fence_instance(&mut self) {
        self.phase = Phase::Fenced;
        self.generation = -1;
        self.membership.set_target(None);
        self.fetcher.clear();
        self.watch = None;
    }

    fn fenced_error(&self) -> Error {
        Error::kafka(
            format!(
                "group {}: instance {:?} fenced by a newer member with the same id",
                self.config.group_id,
                self.config.group_instance_id.as_deref().unwrap_or_default()
            ),
            FENCED_INSTANCE_ID,
        )
    }

    /// Leaves the group (`leave`: LeaveGroup, else only stops) and releases
    /// everything; [`Consumer::close`] and [`Consumer::close_for_restart`].
    fn shut(&mut self, leave: bool) -> Result<()> {
        if self.phase == Phase::Closed {
            return Err(Error::Closed);
        }
        let fenced = self.phase == Phase::Fenced;
        self.phase = Phase::Closed;
        // Stop heartbeating first so no heartbeat races the LeaveGroup.
        self.membership.stop();
        // A rejoin still running is told to stop and left behind: the
        // LeaveGroup goes now, on the member's own connection (see
        // `abandon_rejoin`).
        self.abandon_rejoin();
        self.abandon_join();
        // A fenced instance has nothing to leave: the id is the newer
        // member's, and leaving would remove that one.
        let left = if leave && !fenced {
            self.leave()
        } else {
            Ok(())
        };
        self.generation = -1;
        self.member_id.clear();
        self.assignment.clear();
        self.fetcher.clear();
        self.fetcher.disconnect();
        self.coord.reset();
        let joined = self.stop_heartbeat();
        left.and(joined)
    }

    /// Stops the heartbeat thread and waits for it.
    fn stop_heartbeat(&mut self) -> Result<()> {
        self.membership.stop();
        match self.heartbeat.take() {
            Some(h) => h
                .join()
                .map_err(|_| Error::Thread("kafka-retry-heartbeat panicked".into())),
            None => Ok(()),
        }
    }
}

/// The lapse margin for `session`: a fifth of it, for the time between
/// noticing the lapse and acting on it (the poll side checks between fetch
/// rounds, so up to `fetch_max_wait` late, and handlers finish the records
/// they hold) and for clock drift between here and the coordinator; at
/// least `fetch_max_wait` + 100 ms for the same reason; at most half the
/// session, so that the time to a lapse still spans more than one
/// heartbeat interval at the usual third of the session (a beat may be
/// late by its round trip or be sent again).
fn lapse_margin(session: Duration, fetch_max_wait: Duration) -> Duration {
    (session / 5)
        .max(fetch_max_wait + Duration::from_millis(100))
        .min(session / 2)
}

fn validate(config: &ConsumerConfig) -> Result<()> {
    if config.group_id.is_empty() {
        return Err(Error::config("group_id", "must not be empty"));
    }
    if config.topics.is_empty() || config.topics.iter().any(|t| t.is_empty()) {
        return Err(Error::config(
            "topics",
            "need at least one non-empty topic name",
        ));
    }
    if config.max_poll_records == 0 {
        return Err(Error::config("max_poll_records", "must be more than zero"));
    }
    if let Some(id) = &config.group_instance_id {
        crate::transport::validate_instance_id(id)?;
    }
    for (field, d) in [
        ("session_timeout", config.session_timeout),
        ("rebalance_timeout", config.rebalance_timeout),
    ] {
        if d.is_zero() || d.as_millis() > i32::MAX as u128 {
            return Err(Error::config(field, "must be between 1 ms and i32::MAX ms"));
        }
    }
    Ok(())
}

impl Consumer for GroupConsumer {
    fn poll(&mut self, timeout: Duration) -> Result<ConsumerEvent> {
        match self.phase {
            Phase::Closed => return Err(Error::Closed),
            Phase::Fenced => return Err(self.fenced_error()),
            _ => {}
        }
        let deadline = Instant::now() + timeout;
        if let Some(ev) = self.after_revoke() {
            return Ok(ev);
        }
        self.check_metadata();
        self.check_claims();
        if let Some(ev) = self.rejoin_done() {
            return Ok(ev);
        }
        if let Some(ev) = self.handle_generation_end() {
            return Ok(ev);
        }
        if self.phase == Phase::Fenced {
            return Err(self.fenced_error());
        }
        if self.phase == Phase::Unjoined && self.await_first_claim(deadline) {
            return Ok(ConsumerEvent::Records(Vec::new()));
        }
        if matches!(self.phase, Phase::Unjoined | Phase::RevokedPending) {
            // Blocks for as long as the broker takes to complete the
            // rebalance, which may exceed `timeout`.
            return match self.join() {
                Ok(Some(parts)) => Ok(ConsumerEvent::Assigned(parts)),
                // Woken (a shutdown): still joining, nothing to return.
                Ok(None) => Ok(ConsumerEvent::Records(Vec::new())),
                Err(e) => {
                    if e.kafka_code() == Some(FENCED_INSTANCE_ID) {
                        log::error!(
                            "group {}: {e}; another member uses this group.instance.id",
                            self.config.group_id
                        );
                        self.fence_instance();
                    }
                    Err(e)
                }
            };
        }
        let max = self.config.max_poll_records;
        let fetch_max_wait = self.client.config().fetch_max_wait;
        let mut fetched = false;
        loop {
            let records = self.fetcher.take(max);
            if !records.is_empty() {
                // The next Fetch goes out now, while the caller handles these.
                self.fetcher.fetch_ahead();
                return Ok(ConsumerEvent::Records(records));
            }
            let now = Instant::now();
            if fetched && now >= deadline {
                return Ok(ConsumerEvent::Records(Vec::new()));
            }
            // Once per poll: with the coordinator down this costs a
            // connect attempt, which must not repeat within one poll.
            if !fetched && !self.fetcher.missing_positions().is_empty() {
                if let Err(e) = self.init_positions() {
                    log::warn!(
                        "group {}: reading start offsets: {e}; will retry",
                        self.config.group_id
                    );
                }
            }
            self.fetcher.fetch_round(
                fetch_max_wait.min(deadline.saturating_duration_since(Instant::now())),
            );
            fetched = true;
            // Refused credentials do not heal: tell the caller (the engine
            // counts them and backs off) instead of fetching nothing forever.
            if let Some(e) = self.fetcher.take_auth_failure() {
                return Err(e);
            }
            // A rebalance reported mid-poll ends the poll early.
            self.check_metadata();
            self.check_claims();
            if let Some(ev) = self.rejoin_done() {
                return Ok(ev);
            }
            if let Some(ev) = self.handle_generation_end() {
                return Ok(ev);
            }
            if self.phase == Phase::Fenced {
                return Err(self.fenced_error());
            }
        }
    }

    fn pause(&mut self, partitions: &[TopicPartition]) {
        self.fetcher.pause(partitions, true);
    }

    fn resume(&mut self, partitions: &[TopicPartition]) {
        self.fetcher.pause(partitions, false);
    }

    fn commit(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        match self.phase {
            Phase::Closed => return Err(Error::Closed),
            Phase::Fenced => return Err(self.fenced_error()),
            _ => {}
        }
        let Some(gen) = self.current() else {
            return Err(Error::Rebalance(format!(
                "group {}: not a member of a generation, cannot commit",
                self.config.group_id
            )));
        };
        // Past the lapse the partitions may be another member's already:
        // refused here, not left to a coordinator we cannot reach.
        if let Some(since) = self.check_lapse() {
            return Err(Error::Rebalance(format!(
                "group {}: generation {} unproven for {since:?} (session timeout {:?}), \
                 cannot commit",
                self.config.group_id, gen.id, self.config.session_timeout
            )));
        }
        if offsets.is_empty() {
            return Ok(());
        }
        self.commit_offsets(&gen, offsets)
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.clone()
    }

    fn progress(&self) -> Vec<PartitionProgress> {
        self.fetcher.progress()
    }

    fn generation(&self) -> Option<i32> {
        self.current().map(|g| g.id)
    }

    fn close(&mut self) -> Result<()> {
        self.shut(true)
    }

    /// A static member (with a `group_instance_id`) stops without
    /// LeaveGroup, so the coordinator keeps its membership and assignment
    /// for the session timeout; a dynamic member leaves as on `close`.
    fn close_for_restart(&mut self) -> Result<()> {
        let leave = self.config.group_instance_id.is_none();
        self.shut(leave)
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if self.phase != Phase::Closed {
            // Dropping is a final close: a static member leaves too (use
            // `close_for_restart` to keep the membership).
            if let Err(e) = self.close() {
                log::debug!("group {}: close on drop: {e}", self.config.group_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        let ok = ConsumerConfig::new("g", ["t"]);
        assert!(validate(&ok).is_ok());
        let field = |c: ConsumerConfig| match validate(&c) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(field(ConsumerConfig::new("", ["t"])), "group_id");
        assert_eq!(
            field(ConsumerConfig::new("g", Vec::<String>::new())),
            "topics"
        );
        let mut c = ok.clone();
        c.max_poll_records = 0;
        assert_eq!(field(c), "max_poll_records");
        let mut c = ok;
        c.session_timeout = Duration::from_secs(u64::MAX / 4);
        assert_eq!(field(c), "session_timeout");
    }

    mod against_a_fake_broker {
        use super::super::super::fake::{api, join_group_error, FakeBroker};
        use super::*;
        use crate::transport::kafka::config::KafkaConfig;

        /// A member of group `g` on `broker`, whose transport's client id is
        /// `transport-id`; its first poll joins.
        fn member(broker: &FakeBroker, client_id: Option<&str>) -> GroupConsumer {
            let config = KafkaConfig::new(broker.addr())
                .client_id("transport-id")
                .retry_backoff(Duration::from_millis(5))
                .max_retries(5);
            let client = Client::bootstrap(config).unwrap();
            let mut c = ConsumerConfig::new("g", ["t"]);
            c.client_id = client_id.map(str::to_string);
            GroupConsumer::new(client, c).unwrap()
        }

        fn join_error(m: &mut GroupConsumer) -> Option<KafkaCode> {
            m.poll(Duration::from_millis(10)).unwrap_err().kafka_code()
        }

        /// 23 INCONSISTENT_GROUP_PROTOCOL: not retriable.
        const FATAL: i16 = 23;

        fn join_client_ids(broker: &FakeBroker) -> Vec<Option<String>> {
            let seen = broker.seen();
            seen.into_iter()
                .filter(|s| s.key == api::JOIN_GROUP)
                .map(|s| s.client_id)
                .collect()
        }

        #[test]
        fn members_send_the_transports_client_id_unless_given_their_own() {
            let broker = FakeBroker::start(|r, _| {
                (r.key == api::JOIN_GROUP).then(|| join_group_error(FATAL, ""))
            });
            let mut m = member(&broker, None);
            assert_eq!(join_error(&mut m), Some(KafkaCode::new(FATAL)));
            assert_eq!(join_client_ids(&broker), vec![Some("transport-id".into())]);

            let broker = FakeBroker::start(|r, _| {
                (r.key == api::JOIN_GROUP).then(|| join_group_error(FATAL, ""))
            });
            let mut m = member(&broker, Some("member-id"));
            assert_eq!(join_error(&mut m), Some(KafkaCode::new(FATAL)));
            assert_eq!(join_client_ids(&broker), vec![Some("member-id".into())]);
        }

        #[test]
        fn a_member_with_claims_joins_once_they_are_set_or_its_rebalance_timeout_passed() {
            use crate::transport::Claims;
            let start = || {
                FakeBroker::start(|r, _| {
                    (r.key == api::JOIN_GROUP).then(|| join_group_error(FATAL, ""))
                })
            };
            let with_claims = |broker: &FakeBroker, claims: &Claims, wait: Duration| {
                let mut m = member(broker, None);
                m.config.claims = Some(claims.clone());
                m.config.rebalance_timeout = wait;
                m
            };
            // Not set: no JoinGroup, an empty poll; set: the next poll joins.
            let broker = start();
            let claims = Claims::new();
            let mut m = with_claims(&broker, &claims, Duration::from_secs(60));
            for _ in 0..3 {
                let ev = m.poll(Duration::from_millis(20)).unwrap();
                assert_eq!(ev, ConsumerEvent::Records(Vec::new()));
            }
            assert_eq!(broker.count(api::JOIN_GROUP), 0);
            claims.set([TopicPartition::new("t", 0)], 1);
            assert_eq!(join_error(&mut m), Some(KafkaCode::new(FATAL)));
            assert_eq!(broker.count(api::JOIN_GROUP), 1);
            // Never set: it joins once its rebalance timeout passed.
            let broker = start();
            let t0 = Instant::now(); // before the member's own clock starts
            let mut m = with_claims(&broker, &Claims::new(), Duration::from_millis(50));
            while broker.count(api::JOIN_GROUP) == 0 {
                let _ = m.poll(Duration::from_millis(20));
                assert!(t0.elapsed() < Duration::from_secs(10), "never joined");
            }
            assert!(t0.elapsed() >= Duration::from_millis(50));
        }

        #[test]
        fn join_retries_retriable_codes_and_fails_at_once_on_fatal_ones() {
            // COORDINATOR_LOAD_IN_PROGRESS twice, then fatal: three JoinGroups.
            let broker = FakeBroker::start(|r, n| {
                (r.key == api::JOIN_GROUP)
                    .then(|| join_group_error(if n < 2 { 14 } else { FATAL }, ""))
            });
            let mut m = member(&broker, None);
            assert_eq!(join_error(&mut m), Some(KafkaCode::new(FATAL)));
            assert_eq!(broker.count(api::JOIN_GROUP), 3);

            // MEMBER_ID_REQUIRED is a protocol step: the second JoinGroup
            // carries the id, within one attempt; the fatal code then ends it.
            let broker = FakeBroker::start(|r, n| {
                (r.key == api::JOIN_GROUP).then(|| {
                    if n == 0 {
                        join_group_error(KafkaCode::MEMBER_ID_REQUIRED.code(), "m-1")
                    } else {
                        join_group_error(FATAL, "")
                    }
                })
            });
            let mut m = member(&broker, None);
            assert_eq!(join_error(&mut m), Some(KafkaCode::new(FATAL)));
            assert_eq!(broker.count(api::JOIN_GROUP), 2);
            assert_eq!(m.member_id, "m-1");
            // The coordinator was found once: no failure made us look again.
            assert_eq!(broker.count(api::FIND_COORDINATOR), 1);
        }
    }
}

//! Joining and leaving: JoinGroup (with the member-id-required round), the
//! leader's range assignment, SyncGroup, and LeaveGroup. One join is one
//! attempt of the retry driver; a stale membership (22/25/27 from SyncGroup)
//! makes the driver rejoin at once, a moved coordinator makes it find the
//! coordinator again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::super::assignor;
use super::super::client::Client;
use super::super::errors::check;
use super::super::retry::{Action, Retry};
use super::coordinator::{group_id, ms, Coordinator};
use super::watch::MetadataWatch;
use super::{GroupConsumer, Phase, PROTOCOL_TYPE};
use crate::error::{Error, KafkaCode, Result};
use crate::record::TopicPartition;
use crate::transport::claims::{claims_assign, Claim, ClaimMember};
use crate::transport::sticky::cooperative_sticky_assign;
use crate::transport::{ConsumerConfig, RebalanceProtocol};

/// A join on its own thread, and how to tell it to stop: a cooperative
/// rejoin (`cooperative.rs`), or a first (or eager) join when a wakeup is
/// set (`GroupConsumer::join`).
pub(super) struct Rejoin {
    pub(super) handle: JoinHandle<(Joiner, Result<JoinOutcome>)>,
    /// The joiner's `cancel`.
    pub(super) cancel: Arc<AtomicBool>,
}

impl Rejoin {
    pub(super) fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// What a successful JoinGroup says.
struct Joined {
    generation: i32,
    leader: bool,
    /// The protocol (assignor) the coordinator picked for the group.
    cooperative: bool,
    /// Every member and its subscription metadata (leader only).
    members: Vec<JoinGroupResponseMember>,
}

/// One join (JoinGroup, the leader's assignment, SyncGroup) with what it
/// needs of the member, apart from it: a cooperative rejoin runs on its own
/// thread (`kafka-retry-rejoin`) with its own coordinator connection, while
/// the member keeps fetching and committing on its own (a parked JoinGroup
/// would block every request behind it on one connection).
pub(super) struct Joiner {
    pub(super) client: Arc<Client>,
    pub(super) config: ConsumerConfig,
    pub(super) coord: Coordinator,
    pub(super) member_id: String,
    /// The protocols offered, in order of preference, with their metadata.
    pub(super) protocols: Vec<(&'static str, Bytes)>,
    /// Set when the member closes during a cooperative rejoin: the join
    /// stops at its next step (no SyncGroup after the JoinGroup in flight,
    /// no further retry) instead of running its retries out. Without it a
    /// close waited for them: on Tansu 0.6, whose group can stay without a
    /// leader (its forming group keeps a leader that left), that was 10
    /// JoinGroup/SyncGroup rounds, ~30 s, past the engine's shutdown.
    pub(super) cancel: Arc<AtomicBool>,
}

/// What a join ended with.
pub(super) struct JoinOutcome {
    pub(super) generation: i32,
    pub(super) parts: Vec<TopicPartition>,
    /// The partition counts the leader assigned from (leader only).
    pub(super) counts: Option<BTreeMap<String, Option<i32>>>,
    /// Whether the group runs `cooperative-sticky` this generation.
    pub(super) cooperative: bool,
}

/// The leader's plan: an assignment per member, and the partition counts it
/// was made from.
type Plan = (
    Vec<SyncGroupRequestAssignment>,
    BTreeMap<String, Option<i32>>,
);

/// JoinGroup metadata: the v0 subscription to `topics`, whose `user_data`
/// counts the rebalances this member asked for (none: no user data, the
/// plain subscription). Coordinators rebalance a stable group when a member
/// rejoins with different metadata (Kafka and Tansu alike), which Tansu
/// needs to honour a leader's rejoin. The count only changes when the member
/// asks for a rebalance, so ordinary rejoins do not look like new metadata
/// (that would cost the group an extra rebalance on Tansu). Range assignors
/// (ours, Java's, librdkafka's) ignore user data. A member with claims
/// (`ConsumerConfig::claims`) appends them ([`assignor::user_data`]): a new
/// claim is new metadata, which is how it reaches the leader.
pub(super) fn subscription(
    topics: &[String],
    rebalance_requests: u32,
    claim: Option<&Claim>,
) -> Result<Bytes> {
    if rebalance_requests == 0 && claim.is_none() {
        return assignor::encode_subscription(topics);
    }
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = topics
        .iter()
        .map(|t| StrBytes::from_string(t.clone()))
        .collect();
    sub.user_data = Some(assignor::user_data(rebalance_requests.to_be_bytes(), claim));
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    sub.encode(&mut buf, 0)
        .map_err(|e| Error::Protocol(format!("encode consumer subscription: {e}")))?;
    Ok(buf.freeze())
}

impl GroupConsumer {
    /// Joins (JoinGroup, SyncGroup) through the retry driver, blocking; on
    /// success the member is Active with its new assignment. Owns nothing
    /// while joining (first join, eager rebalance, after being fenced).
    ///
    /// With a [`Wakeup`](crate::transport::Wakeup) configured the join runs
    /// on a thread of its own (`kafka-retry-join`) and this waits for it
    /// until it ends or the wakeup is woken: then `Ok(None)`, the join
    /// going on (the next call waits for the same one; a close abandons
    /// it). A coordinator may hold a JoinGroup for the whole rebalance
    /// timeout and a stuck group retries for longer, which must not keep
    /// an engine's consumer thread past its shutdown deadline.
    pub(super) fn join(&mut self) -> Result<Option<Vec<TopicPartition>>> {
        if self.joining.is_none() {
            // No generation to heartbeat for while joining.
            self.membership.set_target(None);
            self.assignment.clear();
            self.fetcher.clear();
            self.watch = None;
            let mut joiner = self.joiner(&[], -1)?;
            if self.config.wakeup.is_none() {
                let result = joiner.run();
                self.take_back(joiner);
                return self.joined(result).map(Some);
            }
            let cancel = joiner.cancel.clone();
            let waiter = thread::current();
            let spawned = thread::Builder::new()
                .name("kafka-retry-join".into())
                .spawn(move || {
                    let result = joiner.run();
                    waiter.unpark();
                    (joiner, result)
                });
            match spawned {
                Ok(handle) => self.joining = Some(Rejoin { handle, cancel }),
                // No thread: join here, as without a wakeup (the joiner
                // went with the failed spawn, so make another).
                Err(e) => {
                    log::warn!(
                        "group {}: start kafka-retry-join: {e}; joining on this thread",
                        self.config.group_id
                    );
                    let mut joiner = self.joiner(&[], -1)?;
                    let result = joiner.run();
                    self.take_back(joiner);
                    return self.joined(result).map(Some);
                }
            }
        }
        let woken = || self.config.wakeup.as_ref().is_some_and(|w| w.is_woken());
        while !self.joining.as_ref().is_some_and(Rejoin::is_finished) {
            if woken() {
                return Ok(None);
            }
            // Unparked when the join ends; the timeout is for the wakeup.
            thread::park_timeout(Duration::from_millis(10));
        }
        let Some(join) = self.joining.take() else {
            return Err(Error::Thread("kafka-retry-join vanished".into()));
        };
        let result = match join.handle.join() {
            Ok((joiner, result)) => {
                self.take_back(joiner);
                result
            }
            Err(_) => Err(Error::Thread("kafka-retry-join panicked".into())),
        };
        self.joined(result).map(Some)
    }

    /// Takes a finished join's outcome: on success the member is Active.
    fn joined(&mut self, result: Result<JoinOutcome>) -> Result<Vec<TopicPartition>> {
        let out = result?;
        self.cooperative = out.cooperative;
        self.activate(out.generation, &out.parts, out.counts);
        Ok(out.parts)
    }

    /// On close: tells a join still running on its thread to stop (see
    /// [`GroupConsumer::join`]), and takes back its connection and member
    /// id if it already finished; one still in a call is left to end on
    /// its own, as a cooperative rejoin is (`abandon_rejoin`). A member id
    /// it got meanwhile is not known here, so no LeaveGroup names it: the
    /// coordinator drops that member after the session timeout.
    pub(super) fn abandon_join(&mut self) {
        let Some(join) = self.joining.take() else {
            return;
        };
        join.cancel.store(true, Ordering::SeqCst);
        if join.is_finished() {
            if let Ok((joiner, _)) = join.handle.join() {
                self.take_back(joiner);
            }
        } else {
            log::debug!(
                "group {}: closing during a join; it stops after its request in flight",
                self.config.group_id
            );
        }
    }

    /// A [`Joiner`] with this member's coordinator connection (the member
    /// gets a fresh one meanwhile) and subscription: `owned` and
    /// `generation` for the cooperative protocol's metadata.
    pub(super) fn joiner(&mut self, owned: &[TopicPartition], generation: i32) -> Result<Joiner> {
        // The claim as of now; a later change rejoins again (`claims_changed`).
        let claim = self.config.claims.as_ref().map(|c| {
            let (version, claim) = c.snapshot();
            self.claims_published = version;
            claim
        });
        let range = subscription(&self.config.topics, self.rebalance_requests, claim.as_ref())?;
        let mut protocols = Vec::with_capacity(2);
        if self.config.rebalance_protocol == RebalanceProtocol::Cooperative {
            // Cooperative first, range second: the coordinator picks the
            // first one every member lists, so a group with an eager-only
            // member falls back to range (and this member then behaves
            // eagerly). Its metadata (owned partitions, generation) differs
            // from the last join's, so Tansu rebalances on a leader's rejoin.
            protocols.push((
                assignor::COOPERATIVE_STICKY,
                assignor::encode_cooperative_subscription(
                    &self.config.topics,
                    owned,
                    generation,
                    claim.as_ref(),
                )?,
            ));
        }
        protocols.push((assignor::RANGE, range));
        let fresh = Coordinator::new(
            self.client.clone(),
            self.config.group_id.clone(),
            self.config.client_id.as_deref(),
        );
        Ok(Joiner {
            client: self.client.clone(),
            config: self.config.clone(),
            coord: std::mem::replace(&mut self.coord, fresh),
            member_id: self.member_id.clone(),
            protocols,
            cancel: Arc::default(),
        })
    }

    /// Takes the coordinator connection and member id back from a join.
    pub(super) fn take_back(&mut self, joiner: Joiner) {
        self.coord = joiner.coord;
        self.member_id = joiner.member_id;
    }
}

impl Joiner {
    /// Runs the join through the retry driver.
    pub(super) fn run(&mut self) -> Result<JoinOutcome> {
        Retry::new(self.client.config()).run("join", self, Joiner::join_once, |me, e| {
            if e.kafka_code() == Some(KafkaCode::UNKNOWN_MEMBER_ID) {
                me.member_id.clear();
            }
            if me.cancelled().is_err() {
                return Action::Fail;
            }
            me.coord.recover(e)
        })
    }

    /// `Err(Closed)` once the member closed (see `cancel`).
    fn cancelled(&self) -> Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// One join: JoinGroup, the assignment if we lead, SyncGroup.
    fn join_once(&mut self) -> Result<JoinOutcome> {
        self.cancelled()?;
        let joined = self.join_group()?;
        self.cancelled()?;
        let (assignments, counts) = if joined.leader {
            let (assignments, counts) = self.assign(&joined.members, joined.cooperative)?;
            (assignments, Some(counts))
        } else {
            (Vec::new(), None)
        };
        let parts = self.sync_group(joined.generation, joined.cooperative, assignments)?;
        Ok(JoinOutcome {
            generation: joined.generation,
            parts,
            counts,
            cooperative: joined.cooperative,
        })
    }

    /// The JoinGroup read timeout: the broker parks it until every member
    /// has rejoined (up to the rebalance timeout, plus the initial delay for
    /// a new group), as it parks a follower's SyncGroup until the leader's.
    /// Java allows 5 s more.
    fn join_timeout(&self) -> Duration {
        self.config.rebalance_timeout + Duration::from_secs(5)
    }

    /// JoinGroup until the coordinator accepts us. A first JoinGroup without
    /// a member id may be answered MEMBER_ID_REQUIRED with the id to use
    /// (Kafka v4+, Tansu always): that is a step of the protocol, not a
    /// failure, so it is sent again at once within this attempt.
    fn join_group(&mut self) -> Result<Joined> {
        let ctx = format!("JoinGroup {}", self.config.group_id);
        let mut resp = self.send_join_group()?;
        if resp.error_code == KafkaCode::MEMBER_ID_REQUIRED.code() {
            self.member_id = resp.member_id.to_string();
            resp = self.send_join_group()?;
            if resp.error_code == KafkaCode::MEMBER_ID_REQUIRED.code() {
                // The driver rejoins with this one.
                self.member_id = resp.member_id.to_string();
            }
        }
        check(&ctx, resp.error_code)?;
        if resp.member_id.is_empty() || resp.generation_id < 0 {
            return Err(Error::Protocol(format!(
                "{ctx}: reply has member id {:?} and generation {}",
                &*resp.member_id, resp.generation_id
            )));
        }
        // v7+ name the protocol; before, it is the one we offered first
        // that every member lists, which we cannot tell: assume range
        // unless we offered only cooperative (never: range is always last).
        let cooperative = match resp.protocol_name.as_deref() {
            Some(name) if name == assignor::COOPERATIVE_STICKY => true,
            Some(name) if name == assignor::RANGE => false,
            Some(name) => {
                return Err(Error::Protocol(format!(
                    "{ctx}: group chose protocol {name:?}, we offered {:?}",
                    self.protocols.iter().map(|p| p.0).collect::<Vec<_>>()
                )));
            }
            None => false,
        };
        self.member_id = resp.member_id.to_string();
        let leader = resp.leader == resp.member_id;
        log::debug!(
            "group {}: joined generation {} as {} ({}), {} members listed",
            self.config.group_id,
            resp.generation_id,
            self.member_id,
            if leader { "leader" } else { "follower" },
            resp.members.len()
        );
        Ok(Joined {
            generation: resp.generation_id,
            leader,
            cooperative,
            members: resp.members,
        })
    }

    fn send_join_group(&mut self) -> Result<JoinGroupResponse> {
        let (session, rebalance) = (
            ms(self.config.session_timeout),
            ms(self.config.rebalance_timeout),
        );
        let member_id = self.member_id.clone();
        let gid = group_id(&self.config.group_id);
        let protocols: Vec<JoinGroupRequestProtocol> = self
            .protocols
            .iter()
            .map(|(name, md)| {
                let mut p = JoinGroupRequestProtocol::default();
                p.name = StrBytes::from_static_str(name);
                p.metadata = md.clone();
                p
            })
            .collect();
        let timeout = self.join_timeout();
        let instance = self.config.group_instance_id.clone();
        let (version, resp) = self.coord.call(timeout, |v| {
            let mut req = JoinGroupRequest::default();
            req.group_id = gid;
            req.session_timeout_ms = session;
            if v >= 1 {
                req.rebalance_timeout_ms = rebalance;
            }
            if v >= 5 {
                req.group_instance_id = instance.map(StrBytes::from_string);
            }
            req.member_id = StrBytes::from_string(member_id);
            req.protocol_type = StrBytes::from_static_str(PROTOCOL_TYPE);
            req.protocols = protocols;
            req
        })?;
        // The version is only known once the connection negotiated it, so
        // an old broker got a dynamic JoinGroup: refuse to go on as if the
        // membership were static (Java fails the same way). The dynamic
        // member it made expires with the session.
        if version < 5 && self.config.group_instance_id.is_some() {
            return Err(Error::Protocol(format!(
                "JoinGroup {}: the coordinator speaks JoinGroup v{version}, static \
                 membership (group_instance_id) needs v5 (Kafka 2.3)",
                self.config.group_id
            )));
        }
        Ok(resp)
    }

    /// The leader's assignment of every member's subscription, from fresh
    /// partition counts: range, or cooperative-sticky from the partitions
    /// each member says it owns (KIP-429).
    fn assign(&self, members: &[JoinGroupResponseMember], cooperative: bool) -> Result<Plan> {
        let claims: Vec<Option<Claim>> = members
            .iter()
            .map(|m| assignor::decode_claim(&m.metadata))
            .collect();
        if claims.iter().any(Option::is_some) {
            return self.assign_claims(members, claims, cooperative);
        }
        if cooperative {
            return self.assign_sticky(members);
        }
        let group = &self.config.group_id;
        let members: Vec<(String, Vec<String>)> = members
            .iter()
            .map(|m| {
                let topics = assignor::decode_subscription(&m.metadata).unwrap_or_else(|e| {
                    log::warn!(
                        "group {group}: member {} sent unreadable metadata ({e}); it gets nothing",
                        &*m.member_id
                    );
                    Vec::new()
                });
                (m.member_id.to_string(), topics)
            })
            .collect();
        let topics = members
            .iter()
            .flat_map(|(_, t)| t.iter().cloned())
            .collect();
        self.plan(topics, |count| assignor::range_assign(&members, count))
    }

    fn assign_sticky(&self, members: &[JoinGroupResponseMember]) -> Result<Plan> {
        let group = &self.config.group_id;
        let members: Vec<_> = members
            .iter()
            .map(|m| {
                let id = m.member_id.to_string();
                assignor::decode_sticky_member(&id, &m.metadata).unwrap_or_else(|e| {
                    log::warn!(
                        "group {group}: member {id} sent unreadable metadata ({e}); it gets nothing"
                    );
                    crate::transport::sticky::StickyMember {
                        id: id.clone(),
                        ..Default::default()
                    }
                })
            })
            .collect();
        let topics = members
            .iter()
            .flat_map(|m| m.topics.iter().cloned())
            .collect();
        self.plan(topics, |count| cooperative_sticky_assign(&members, count))
    }

    /// The joint assignment (`transport/claims.rs`): some member claims
    /// partitions. Owned partitions and their generation as for the sticky
    /// assignor (empty under eager).
    fn assign_claims(
        &self,
        members: &[JoinGroupResponseMember],
        claims: Vec<Option<Claim>>,
        cooperative: bool,
    ) -> Result<Plan> {
        let group = &self.config.group_id;
        let members: Vec<ClaimMember> = members
            .iter()
            .zip(claims)
            .map(|(m, claim)| {
                let id = m.member_id.to_string();
                let sticky = assignor::decode_sticky_member(&id, &m.metadata).unwrap_or_else(|e| {
                    log::warn!(
                        "group {group}: member {id} sent unreadable metadata ({e}); it gets nothing"
                    );
                    crate::transport::sticky::StickyMember {
                        id: id.clone(),
                        ..Default::default()
                    }
                });
                ClaimMember {
                    id,
                    topics: sticky.topics,
                    owned: if cooperative {
                        sticky.owned
                    } else {
                        Vec::new()
                    },
                    owned_generation: sticky.generation,
                    claim,
                }
            })
            .collect();
        log::debug!(
            "group {group}: assigning by claims: {:?}",
            members
                .iter()
                .map(|m| (&m.id, m.claim.as_ref().map(|c| c.partitions.len())))
                .collect::<Vec<_>>()
        );
        let topics = members
            .iter()
            .flat_map(|m| m.topics.iter().cloned())
            .collect();
        self.plan(topics, |count| claims_assign(&members, cooperative, count))
    }

    /// What both assignors share: fresh partition counts for `topics` (a
    /// topic may have grown), the assignment `assign` makes from them, its
    /// SyncGroup encoding, and the counts it used (for the leader's later
    /// checks).
    fn plan(
        &self,
        mut topics: Vec<String>,
        assign: impl FnOnce(
            &mut dyn FnMut(&str) -> Result<Option<i32>>,
        ) -> Result<BTreeMap<String, Vec<TopicPartition>>>,
    ) -> Result<Plan> {
        topics.sort();
        topics.dedup();
        if let Err(e) = self.client.refresh_metadata(&topics) {
            log::warn!(
                "group {}: metadata refresh before assigning: {e}",
                self.config.group_id
            );
        }
        let mut counts = BTreeMap::new();
        let plan = assign(&mut |t| {
            let n = self.client.cached_partition_count(t)?;
            counts.insert(t.to_string(), n.filter(|&n| n > 0));
            Ok(n)
        })?;
        let mut out = Vec::with_capacity(plan.len());
        for (member, parts) in plan {
            let mut a = SyncGroupRequestAssignment::default();
            a.member_id = StrBytes::from_string(member);
            a.assignment = assignor::encode_assignment(&parts)?;
            out.push(a);
        }
        Ok((out, counts))
    }

    /// SyncGroup: the leader sends every member's assignment, followers
    /// none; each gets its own back.
    fn sync_group(
        &mut self,
        generation: i32,
        cooperative: bool,
        assignments: Vec<SyncGroupRequestAssignment>,
    ) -> Result<Vec<TopicPartition>> {
        let member_id = self.member_id.clone();
        let gid = group_id(&self.config.group_id);
        let timeout = self.join_timeout();
        let instance = self.config.group_instance_id.clone();
        let (_, resp) = self.coord.call(timeout, |v| {
            let mut req = SyncGroupRequest::default();
            req.group_id = gid;
            req.generation_id = generation;
            req.member_id = StrBytes::from_string(member_id);
            if v >= 3 {
                req.group_instance_id = instance.map(StrBytes::from_string);
            }
            if v >= 5 {
                req.protocol_type = Some(StrBytes::from_static_str(PROTOCOL_TYPE));
                req.protocol_name = Some(StrBytes::from_static_str(if cooperative {
                    assignor::COOPERATIVE_STICKY
                } else {
                    assignor::RANGE
                }));
            }
            req.assignments = assignments;
            req
        })?;
        check(
            format!("SyncGroup {}", self.config.group_id),
            resp.error_code,
        )?;
        assignor::decode_assignment(&resp.assignment)
    }
}

impl GroupConsumer {
    /// Enters `generation` with `parts`: fetch them, heartbeat for it, watch
    /// partition counts if we lead, read start positions.
    fn activate(
        &mut self,
        generation: i32,
        parts: &[TopicPartition],
        counts: Option<BTreeMap<String, Option<i32>>>,
    ) {
        self.generation = generation;
        self.phase = Phase::Active;
        self.assignment = parts.to_vec();
        self.fetcher.assign(parts);
        self.membership.set_target(self.current());
        let max_age = self.client.config().metadata_max_age;
        let counts = match (counts, self.requested_in.take()) {
            (Some(_), Some((asked_in, before))) if asked_in == generation => {
                // The coordinator kept the generation, and with it the
                // old assignment: compare against what is in force, so
                // that the next check asks again.
                log::warn!(
                    "group {}: the coordinator did not rebalance generation {generation} \
                     on request; asking again in {max_age:?}",
                    self.config.group_id,
                );
                Some(before)
            }
            (counts, _) => counts,
        };
        let next_check = Instant::now() + max_age;
        self.watch = counts.map(|counts| MetadataWatch { counts, next_check });
        log::info!(
            "group {}: member {} has generation {generation}, assigned {:?}",
            self.config.group_id,
            self.member_id,
            parts.iter().map(|tp| tp.to_string()).collect::<Vec<_>>()
        );
        // Positions now, so that "latest" means "as of the assignment";
        // what fails is retried on the next polls.
        if let Err(e) = self.init_positions() {
            log::warn!(
                "group {}: reading start offsets: {e}; will retry",
                self.config.group_id
            );
        }
    }

    /// LeaveGroup, retried once (after a reconnect or a new coordinator).
    /// A member the coordinator no longer knows has nothing to leave.
    pub(super) fn leave(&mut self) -> Result<()> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        Retry::new(self.client.config()).retries(1).run(
            "LeaveGroup",
            self,
            GroupConsumer::leave_once,
            |me, e| match me.coord.recover(e) {
                // Nothing to rejoin: we are leaving.
                Action::Rejoin => Action::Fail,
                a => a,
            },
        )
    }

    fn leave_once(&mut self) -> Result<()> {
        let group = self.config.group_id.clone();
        let member = self.member_id.clone();
        let timeout = self.client.config().request_timeout;
        let instance = self.config.group_instance_id.clone();
        let (_, resp) = self.coord.call(timeout, |v| {
            let mut req = LeaveGroupRequest::default();
            req.group_id = group_id(&group);
            if v >= 3 {
                // A static member is removed by its instance id (KIP-345):
                // the coordinator checks both against the member it holds.
                let mut m = MemberIdentity::default();
                m.member_id = StrBytes::from_string(member.clone());
                m.group_instance_id = instance.map(StrBytes::from_string);
                if v >= 5 {
                    m.reason = Some(StrBytes::from_static_str("consumer closed"));
                }
                req.members = vec![m];
            } else {
                req.member_id = StrBytes::from_string(member.clone());
            }
            req
        })?;
        let code = if resp.error_code != 0 {
            resp.error_code
        } else {
            resp.members
                .iter()
                .map(|m| m.error_code)
                .find(|&c| c != 0)
                .unwrap_or(0)
        };
        // Already gone (session expired): nothing to leave.
        if code == KafkaCode::UNKNOWN_MEMBER_ID.code() {
            log::debug!("group {group}: member {member} was already gone");
            return Ok(());
        }
        check(format!("LeaveGroup {group}"), code)?;
        log::debug!("group {group}: member {member} left");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebalance_requests_change_the_metadata_but_not_the_topics() {
        let topics = vec!["a".to_string(), "b".to_string()];
        let plain = subscription(&topics, 0, None).unwrap();
        assert_eq!(plain, assignor::encode_subscription(&topics).unwrap());
        let first = subscription(&topics, 1, None).unwrap();
        let second = subscription(&topics, 2, None).unwrap();
        assert_ne!(plain, first);
        assert_ne!(first, second);
        assert_eq!(
            first,
            subscription(&topics, 1, None).unwrap(),
            "stable per count"
        );
        for m in [&plain, &first, &second] {
            assert_eq!(assignor::decode_subscription(m).unwrap(), topics);
        }
        // Java reads it as v0 with user data: version, topics, bytes.
        let mut tail = first.slice(first.len() - 8..);
        assert_eq!(tail.split_to(4).as_ref(), &4i32.to_be_bytes());
        assert_eq!(tail.as_ref(), &1u32.to_be_bytes());
    }

    #[test]
    fn a_claim_is_new_metadata_and_readable_by_the_leader() {
        let topics = vec!["r".to_string()];
        let claim = Claim {
            partitions: vec![TopicPartition::new("r", 1)],
            generation: 3,
        };
        let plain = subscription(&topics, 0, None).unwrap();
        let claimed = subscription(&topics, 0, Some(&claim)).unwrap();
        assert_ne!(plain, claimed, "a claim must make Tansu rebalance");
        assert_eq!(assignor::decode_subscription(&claimed).unwrap(), topics);
        assert_eq!(assignor::decode_claim(&claimed), Some(claim.clone()));
        let other = Claim {
            partitions: vec![TopicPartition::new("r", 2)],
            ..claim
        };
        assert_ne!(claimed, subscription(&topics, 0, Some(&other)).unwrap());
    }
}

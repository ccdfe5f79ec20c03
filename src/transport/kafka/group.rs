//! A classic-protocol (JoinGroup / SyncGroup / Heartbeat) consumer group
//! member with eager rebalances and the range assignor.
//!
//! # Threads and who owns what
//!
//! The caller's thread (the "poll side") owns the membership: it joins,
//! syncs, commits and leaves on its own coordinator connection, and fetches
//! on one connection per leader (`fetch.rs`). A background thread named
//! `kafka-retry-heartbeat` heartbeats on a *second* coordinator connection,
//! so a caller that does not poll for a long while keeps its membership.
//!
//! They share one [`Signals`] (mutex + condvar):
//! - the poll side publishes the generation to heartbeat for (`target`), or
//!   `None` while it is joining (no generation to heartbeat for) or closed;
//! - the heartbeat thread (and a failed commit) report what the coordinator
//!   said about *that* generation: `Rebalance` (27) or `Fenced` (22/25).
//!   A report is only stored if `target` is still the generation the
//!   heartbeat was sent for, and changing `target` clears it, so the poll
//!   side never acts on a stale report from an earlier generation.
//!
//! # Event sequence (see [`ConsumerEvent`])
//!
//! `Unjoined --poll--> join --> Assigned(p) --> Active`
//! `Active --(Rebalance reported)--poll--> Revoked(p) --> RevokedPending`
//! `RevokedPending --poll--> join --> Assigned(q)`
//! `Active --(Fenced reported)--poll--> Lost(p) --> Unjoined`
//!
//! Between `Revoked` and the next poll the generation stays the heartbeat
//! target: heartbeats continue (Kafka counts them even while it answers 27)
//! and commits at that generation still work, as Kafka accepts them while the
//! group is preparing the rebalance.
//!
//! # New partitions (leader only)
//!
//! The coordinator does not notice that a topic gained partitions, or that a
//! subscribed topic was created: only the leader's assignor reads partition
//! counts. So, like Java, the leader remembers the counts it assigned from
//! ([`MetadataWatch`]) and, every `metadata_max_age`, re-reads them from a
//! poll. When one differs it reports `Rebalance` for its own generation, so
//! the member goes through the same `Revoked` -> rejoin path as for a 27; the
//! leader's JoinGroup makes the coordinator rebalance the (stable) group, and
//! every member is then assigned from the new counts.
//!
//! Kafka rebalances a stable group on any JoinGroup from its leader; Tansu
//! (0.6) only when the member's metadata changed, and otherwise answers with
//! the current generation and keeps the old assignment. So the rejoin also
//! carries new metadata (see [`subscription`]); both coordinators rebalance
//! on that. Should a coordinator still keep the generation, the leader
//! keeps comparing against the counts of the assignment in force and asks
//! again at the next check.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::messages::{ApiKey, GroupId, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::assignor;
use super::client::{Client, TopicState};
use super::config::KafkaConfig;
use super::conn::{Connection, KafkaRequest};
use super::errors::code_name;
use super::fetch::Fetcher;
use crate::error::{Error, Result};
use crate::record::TopicPartition;
use crate::transport::{Consumer, ConsumerConfig, ConsumerEvent};

const PROTOCOL_TYPE: &str = "consumer";

/// Kafka error codes the group code branches on.
mod code {
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
}

/// A generation this member belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Generation {
    id: i32,
    member_id: String,
}

/// What the coordinator said about the current generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// 27: a rebalance started; revoke and rejoin.
    Rebalance,
    /// 22 or 25: this member is out of the generation; its partitions are lost.
    Fenced(i16),
}

#[derive(Debug, Default)]
struct SignalState {
    /// Generation the heartbeat thread heartbeats for; `None` = idle.
    target: Option<Generation>,
    /// Report about `target`, cleared whenever `target` changes.
    signal: Option<Signal>,
    /// Bumped on every `target` change, so the heartbeat thread restarts its
    /// interval for a new generation.
    epoch: u64,
    stop: bool,
}

/// State shared by the poll side and the heartbeat thread.
#[derive(Debug, Default)]
struct Signals {
    state: Mutex<SignalState>,
    wake: Condvar,
}

impl Signals {
    fn lock(&self) -> MutexGuard<'_, SignalState> {
        // A panic while holding this lock cannot leave it inconsistent (plain
        // assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_target(&self, target: Option<Generation>) {
        let mut st = self.lock();
        st.target = target;
        st.signal = None;
        st.epoch = st.epoch.wrapping_add(1);
        self.wake.notify_all();
    }

    /// Records `signal` if `about` is still the current generation. Fenced
    /// wins over Rebalance; a fenced generation is no longer heartbeated.
    fn report(&self, about: &Generation, signal: Signal) {
        let mut st = self.lock();
        if st.target.as_ref() != Some(about) {
            return;
        }
        match (st.signal, signal) {
            (Some(Signal::Fenced(_)), _) => {}
            (_, s) => st.signal = Some(s),
        }
    }

    fn take(&self) -> Option<Signal> {
        self.lock().signal.take()
    }

    fn stop(&self) {
        let mut st = self.lock();
        st.stop = true;
        st.target = None;
        self.wake.notify_all();
    }
}

/// A lazily (re)discovered connection to the group coordinator.
struct Coordinator {
    client: Arc<Client>,
    /// The client's settings with the consumer's client id: brokers build
    /// member ids from it and show it in group listings.
    config: KafkaConfig,
    group: String,
    conn: Option<Connection>,
}

impl Coordinator {
    fn new(client: Arc<Client>, group: String, client_id: &str) -> Self {
        let mut config = client.config().clone();
        if !client_id.is_empty() {
            config.client_id = client_id.to_string();
        }
        Coordinator {
            client,
            config,
            group,
            conn: None,
        }
    }

    /// Forget the coordinator (after 15/16 or a broken connection).
    fn reset(&mut self) {
        self.conn = None;
    }

    fn conn(&mut self) -> Result<&mut Connection> {
        let usable = matches!(&self.conn, Some(c) if !c.is_broken());
        if !usable {
            self.conn = None;
            let addr = find_coordinator(&self.client, &self.group)?;
            log::debug!("group {}: coordinator at {addr}", self.group);
            self.conn = Some(Connection::connect(&addr, &self.config)?);
        }
        match self.conn.as_mut() {
            Some(c) => Ok(c),
            None => Err(Error::Protocol("coordinator connection vanished".into())),
        }
    }

    /// Sends the request `build(version)` at the negotiated version; returns
    /// the version (replies differ per version) and the reply. A failed call
    /// drops the connection so the next one rediscovers the coordinator.
    fn call<R: KafkaRequest>(
        &mut self,
        timeout: Duration,
        build: impl FnOnce(i16) -> R,
    ) -> Result<(i16, R::Response)> {
        let conn = self.conn()?;
        let version = conn.version(R::KEY)?;
        let req = build(version);
        match conn.call(version, &req, timeout) {
            Ok(resp) => Ok((version, resp)),
            Err(e) => {
                if conn.is_broken() {
                    self.conn = None;
                }
                Err(e)
            }
        }
    }
}

/// Address (`host:port`) of `group`'s coordinator, asked of any broker.
fn find_coordinator(client: &Client, group: &str) -> Result<String> {
    let mut conn = client.connect_any()?;
    let version = conn.version(ApiKey::FindCoordinator)?;
    let mut req = FindCoordinatorRequest::default();
    req.key_type = 0;
    // v4+ batches keys; the answer moves into `coordinators[]`.
    if version >= 4 {
        req.coordinator_keys = vec![StrBytes::from_string(group.to_string())];
    } else {
        req.key = StrBytes::from_string(group.to_string());
    }
    let resp = conn.call(version, &req, client.config().request_timeout)?;
    let ctx = format!("FindCoordinator {group}");
    let (code, host, port) = if version >= 4 {
        let c = resp
            .coordinators
            .iter()
            .find(|c| &*c.key == group)
            .or_else(|| resp.coordinators.first())
            .ok_or_else(|| Error::Protocol(format!("{ctx}: reply names no coordinator")))?;
        (c.error_code, c.host.to_string(), c.port)
    } else {
        (resp.error_code, resp.host.to_string(), resp.port)
    };
    if code != 0 {
        return Err(Error::kafka(ctx, code));
    }
    if host.is_empty() || !(1..=65535).contains(&port) {
        return Err(Error::Protocol(format!(
            "{ctx}: coordinator address {host:?}:{port} is not usable"
        )));
    }
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// Whether an error is worth a retry after reconnecting / rediscovering.
fn is_transient(e: &Error) -> bool {
    match e {
        Error::Io { .. } | Error::Timeout(_) => true,
        Error::Kafka { code, .. } => matches!(
            code.code(),
            code::COORDINATOR_LOAD_IN_PROGRESS
                | code::COORDINATOR_NOT_AVAILABLE
                | code::NOT_COORDINATOR
        ),
        _ => false,
    }
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

fn ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// What the leader assigned from, and when to compare it with the cluster.
#[derive(Debug)]
struct MetadataWatch {
    /// Partition count per topic of the group's subscriptions; `None`: the
    /// topic did not exist.
    counts: BTreeMap<String, Option<i32>>,
    next_check: Instant,
}

/// JoinGroup metadata: the v0 subscription to `topics`, whose `user_data`
/// counts the rebalances this member asked for (none: no user data, the
/// plain subscription). Coordinators rebalance a stable group when a member
/// rejoins with different metadata (Kafka and Tansu alike), which Tansu
/// needs to honour a leader's rejoin. The count only changes when the member
/// asks for a rebalance, so ordinary rejoins do not look like new metadata
/// (that would cost the group an extra rebalance on Tansu). Range assignors
/// (ours, Java's, librdkafka's) ignore user data.
fn subscription(topics: &[String], rebalance_requests: u32) -> Result<Bytes> {
    if rebalance_requests == 0 {
        return assignor::encode_subscription(topics);
    }
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = topics
        .iter()
        .map(|t| StrBytes::from_string(t.clone()))
        .collect();
    sub.user_data = Some(Bytes::copy_from_slice(&rebalance_requests.to_be_bytes()));
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    sub.encode(&mut buf, 0)
        .map_err(|e| Error::Protocol(format!("encode consumer subscription: {e}")))?;
    Ok(buf.freeze())
}

/// The first difference between what the leader assigned from and a
/// Metadata answer for the same topics, described for the log; `None` when
/// nothing changed. A topic the answer is unsure about (an error, no
/// partitions listed yet, left out of the reply) counts as unchanged: a
/// transient metadata error must not rebalance the whole group.
fn metadata_change(
    assigned: &BTreeMap<String, Option<i32>>,
    now: &std::collections::HashMap<String, TopicState>,
) -> Option<String> {
    for (topic, &before) in assigned {
        let after = match now.get(topic) {
            Some(TopicState::Missing) => None,
            Some(TopicState::Leaders(l)) if !l.is_empty() => {
                Some(i32::try_from(l.len()).unwrap_or(i32::MAX))
            }
            Some(TopicState::Leaders(_)) | Some(TopicState::Failed(_)) | None => continue,
        };
        if after != before {
            let show = |n: Option<i32>| match n {
                Some(n) => format!("{n} partitions"),
                None => "missing".to_string(),
            };
            return Some(format!("{topic}: {} -> {}", show(before), show(after)));
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not in a generation; the next poll joins.
    Unjoined,
    /// Assigned and fetching.
    Active,
    /// `Revoked` was returned; the next poll rejoins.
    RevokedPending,
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
    signals: Arc<Signals>,
    heartbeat: Option<JoinHandle<()>>,
    /// Set while this member leads the current generation.
    watch: Option<MetadataWatch>,
    /// Rebalances this member asked for (see [`subscription`]).
    rebalance_requests: u32,
    /// After asking for a rebalance: the generation it was asked in and the
    /// counts that generation was assigned from, in case the coordinator
    /// keeps that generation (then those counts are still in force).
    requested_in: Option<(i32, BTreeMap<String, Option<i32>>)>,
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
        let signals = Arc::new(Signals::default());
        let interval = client
            .config()
            .heartbeat_interval
            .unwrap_or(config.session_timeout / 3)
            .max(Duration::from_millis(10));
        let heartbeat = {
            let client = client.clone();
            let signals = signals.clone();
            let group = config.group_id.clone();
            let client_id = config.client_id.clone();
            // A heartbeat that takes longer than the session is useless anyway.
            let timeout = client.config().request_timeout.min(config.session_timeout);
            std::thread::Builder::new()
                .name("kafka-retry-heartbeat".into())
                .spawn(move || heartbeat_loop(client, group, client_id, signals, interval, timeout))
                .map_err(|e| Error::Thread(format!("spawn kafka-retry-heartbeat: {e}")))?
        };
        Ok(GroupConsumer {
            coord: Coordinator::new(client.clone(), config.group_id.clone(), &config.client_id),
            fetcher: Fetcher::new(client.clone(), config.offset_reset),
            client,
            config,
            member_id: String::new(),
            generation: -1,
            phase: Phase::Unjoined,
            assignment: Vec::new(),
            signals,
            heartbeat: Some(heartbeat),
            watch: None,
            rebalance_requests: 0,
            requested_in: None,
        })
    }

    fn current(&self) -> Option<Generation> {
        (self.generation >= 0).then(|| Generation {
            id: self.generation,
            member_id: self.member_id.clone(),
        })
    }

    fn backoff(&self) {
        std::thread::sleep(self.client.config().retry_backoff);
    }

    /// Applies a pending heartbeat/commit report; returns the event to hand
    /// to the caller, if any.
    fn handle_signal(&mut self) -> Option<ConsumerEvent> {
        match self.signals.take()? {
            Signal::Fenced(c) => {
                log::warn!(
                    "group {}: member {} fenced from generation {} ({}); rejoining",
                    self.config.group_id,
                    self.member_id,
                    self.generation,
                    code_name(c)
                );
                self.generation = -1;
                if c == code::UNKNOWN_MEMBER_ID {
                    self.member_id.clear();
                }
                self.signals.set_target(None);
                self.fetcher.clear();
                let lost = std::mem::take(&mut self.assignment);
                let was = self.phase;
                self.phase = Phase::Unjoined;
                // After Revoked the caller already let the partitions go.
                (was == Phase::Active).then_some(ConsumerEvent::Lost(lost))
            }
            Signal::Rebalance if self.phase == Phase::Active => {
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
            Signal::Rebalance => None,
        }
    }

    /// The leader's periodic partition-count check (module docs, "New
    /// partitions"). Does nothing unless this member leads an Active
    /// generation and `metadata_max_age` passed since the last check, so
    /// polls in between cost one clock read. One Metadata request without
    /// retries (a failure just waits for the next check), so a poll is held
    /// up for one round trip at most.
    fn check_metadata(&mut self) {
        if self.phase != Phase::Active {
            return;
        }
        let Some(watch) = self.watch.as_mut() else {
            return;
        };
        if Instant::now() < watch.next_check {
            return;
        }
        let topics: Vec<String> = watch.counts.keys().cloned().collect();
        let answer = self.client.fetch_metadata_once(&topics);
        watch.next_check = Instant::now() + self.client.config().metadata_max_age;
        let change = match answer {
            Ok(states) => metadata_change(&watch.counts, &states),
            Err(e) => {
                log::debug!(
                    "group {}: partition count check failed, retrying in {:?}: {e}",
                    self.config.group_id,
                    self.client.config().metadata_max_age
                );
                None
            }
        };
        let Some(change) = change else {
            return;
        };
        log::info!(
            "group {}: {change} since the assignment; rebalancing",
            self.config.group_id
        );
        // The rejoin records the new counts; until then nothing to compare.
        let Some(watch) = self.watch.take() else {
            return;
        };
        if let Some(gen) = self.current() {
            self.rebalance_requests = self.rebalance_requests.wrapping_add(1).max(1);
            self.requested_in = Some((gen.id, watch.counts));
            self.signals.report(&gen, Signal::Rebalance);
        }
    }

    /// Joins (JoinGroup, SyncGroup), retrying transient failures; on success
    /// the member is Active with its new assignment.
    fn join(&mut self) -> Result<Vec<TopicPartition>> {
        // No generation to heartbeat for while joining.
        self.signals.set_target(None);
        self.assignment.clear();
        self.fetcher.clear();
        self.watch = None;
        let group = self.config.group_id.clone();
        let cfg = self.client.config().clone();
        let metadata = subscription(&self.config.topics, self.rebalance_requests)?;
        let attempts = cfg.max_retries.max(3) + 2;
        let mut failures = 0u32;
        let mut fail = |what: Error| -> Result<()> {
            failures += 1;
            if failures > attempts {
                return Err(what);
            }
            log::debug!("group {group}: join attempt failed, retrying: {what}");
            Ok(())
        };
        loop {
            // JoinGroup: the broker parks it until every member has rejoined
            // (up to the rebalance timeout, plus the initial delay for a new
            // group), so the read timeout must cover that.
            let join_timeout = self.config.rebalance_timeout + Duration::from_secs(5);
            let (session, rebalance) = (
                ms(self.config.session_timeout),
                ms(self.config.rebalance_timeout),
            );
            let member_id = self.member_id.clone();
            let md = metadata.clone();
            let gid = group_id(&self.config.group_id);
            let reply = self.coord.call(join_timeout, |v| {
                let mut req = JoinGroupRequest::default();
                req.group_id = gid;
                req.session_timeout_ms = session;
                if v >= 1 {
                    req.rebalance_timeout_ms = rebalance;
                }
                req.member_id = StrBytes::from_string(member_id);
                req.protocol_type = StrBytes::from_static_str(PROTOCOL_TYPE);
                let mut p = JoinGroupRequestProtocol::default();
                p.name = StrBytes::from_static_str(assignor::RANGE);
                p.metadata = md;
                req.protocols = vec![p];
                req
            });
            let (_, resp) = match reply {
                Ok(r) => r,
                Err(e) if is_transient(&e) => {
                    fail(e)?;
                    self.coord.reset();
                    self.backoff();
                    continue;
                }
                Err(e) => return Err(e),
            };
            match resp.error_code {
                0 => {}
                code::MEMBER_ID_REQUIRED => {
                    // Kafka (v4+) and Tansu (always) hand out the id first;
                    // rejoin at once with it.
                    fail(Error::kafka(
                        format!("JoinGroup {}", self.config.group_id),
                        resp.error_code,
                    ))?;
                    self.member_id = resp.member_id.to_string();
                    continue;
                }
                code::UNKNOWN_MEMBER_ID => {
                    fail(Error::kafka(
                        format!("JoinGroup {}", self.config.group_id),
                        resp.error_code,
                    ))?;
                    self.member_id.clear();
                    continue;
                }
                code::ILLEGAL_GENERATION
                | code::REBALANCE_IN_PROGRESS
                | code::COORDINATOR_LOAD_IN_PROGRESS => {
                    fail(Error::kafka(
                        format!("JoinGroup {}", self.config.group_id),
                        resp.error_code,
                    ))?;
                    self.backoff();
                    continue;
                }
                code::COORDINATOR_NOT_AVAILABLE | code::NOT_COORDINATOR => {
                    fail(Error::kafka(
                        format!("JoinGroup {}", self.config.group_id),
                        resp.error_code,
                    ))?;
                    self.coord.reset();
                    self.backoff();
                    continue;
                }
                c => {
                    return Err(Error::kafka(
                        format!("JoinGroup {}", self.config.group_id),
                        c,
                    ))
                }
            }
            if resp.member_id.is_empty() || resp.generation_id < 0 {
                return Err(Error::Protocol(format!(
                    "JoinGroup {}: reply has member id {:?} and generation {}",
                    self.config.group_id, &*resp.member_id, resp.generation_id
                )));
            }
            if let Some(name) = &resp.protocol_name {
                if &**name != assignor::RANGE {
                    return Err(Error::Protocol(format!(
                        "JoinGroup {}: group chose protocol {:?}, we only speak {:?}",
                        self.config.group_id,
                        &**name,
                        assignor::RANGE
                    )));
                }
            }
            self.member_id = resp.member_id.to_string();
            let generation = resp.generation_id;
            let leader = resp.leader == resp.member_id;
            log::debug!(
                "group {}: joined generation {generation} as {} ({}), {} members listed",
                self.config.group_id,
                self.member_id,
                if leader { "leader" } else { "follower" },
                resp.members.len()
            );

            let (assignments, counts) = if leader {
                let members: Vec<(String, Vec<String>)> = resp
                    .members
                    .iter()
                    .map(|m| {
                        let topics = assignor::decode_subscription(&m.metadata).unwrap_or_else(|e| {
                            log::warn!(
                                "group {}: member {} sent unreadable metadata ({e}); it gets nothing",
                                self.config.group_id,
                                &*m.member_id
                            );
                            Vec::new()
                        });
                        (m.member_id.to_string(), topics)
                    })
                    .collect();
                let all_topics: Vec<String> = {
                    let mut t: Vec<String> = members.iter().flat_map(|(_, t)| t.clone()).collect();
                    t.sort();
                    t.dedup();
                    t
                };
                // Fresh partition counts: a topic may have grown.
                if let Err(e) = self.client.refresh_metadata(&all_topics) {
                    log::warn!(
                        "group {}: metadata refresh before assigning: {e}",
                        self.config.group_id
                    );
                }
                // The counts assigned from, for the leader's later checks.
                let mut counts = BTreeMap::new();
                let plan = assignor::range_assign(&members, |t| {
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
                (out, Some(counts))
            } else {
                (Vec::new(), None)
            };

            let member_id = self.member_id.clone();
            let gid = group_id(&self.config.group_id);
            // A follower's SyncGroup waits for the leader's.
            let reply = self.coord.call(join_timeout, |v| {
                let mut req = SyncGroupRequest::default();
                req.group_id = gid;
                req.generation_id = generation;
                req.member_id = StrBytes::from_string(member_id);
                if v >= 5 {
                    req.protocol_type = Some(StrBytes::from_static_str(PROTOCOL_TYPE));
                    req.protocol_name = Some(StrBytes::from_static_str(assignor::RANGE));
                }
                req.assignments = assignments;
                req
            });
            let (_, resp) = match reply {
                Ok(r) => r,
                Err(e) if is_transient(&e) => {
                    fail(e)?;
                    self.coord.reset();
                    self.backoff();
                    continue;
                }
                Err(e) => return Err(e),
            };
            match resp.error_code {
                0 => {}
                c @ (code::REBALANCE_IN_PROGRESS
                | code::ILLEGAL_GENERATION
                | code::UNKNOWN_MEMBER_ID) => {
                    // Another rebalance started (or we were dropped): join again.
                    fail(Error::kafka(
                        format!("SyncGroup {}", self.config.group_id),
                        c,
                    ))?;
                    if c == code::UNKNOWN_MEMBER_ID {
                        self.member_id.clear();
                    }
                    continue;
                }
                c @ (code::COORDINATOR_NOT_AVAILABLE
                | code::NOT_COORDINATOR
                | code::COORDINATOR_LOAD_IN_PROGRESS) => {
                    fail(Error::kafka(
                        format!("SyncGroup {}", self.config.group_id),
                        c,
                    ))?;
                    self.coord.reset();
                    self.backoff();
                    continue;
                }
                c => {
                    return Err(Error::kafka(
                        format!("SyncGroup {}", self.config.group_id),
                        c,
                    ))
                }
            }
            let parts = assignor::decode_assignment(&resp.assignment)?;
            self.generation = generation;
            self.phase = Phase::Active;
            self.assignment = parts.clone();
            self.fetcher.assign(&parts);
            self.signals.set_target(self.current());
            let counts = match (counts, self.requested_in.take()) {
                (Some(_), Some((asked_in, before))) if asked_in == generation => {
                    // The coordinator kept the generation, and with it the
                    // old assignment: compare against what is in force, so
                    // that the next check asks again.
                    log::warn!(
                        "group {}: the coordinator did not rebalance generation {generation} \
                         on request; asking again in {:?}",
                        self.config.group_id,
                        cfg.metadata_max_age
                    );
                    Some(before)
                }
                (counts, _) => counts,
            };
            let next_check = Instant::now() + cfg.metadata_max_age;
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
            return Ok(parts);
        }
    }

    /// Gives every assigned partition without a position its committed
    /// offset (OffsetFetch), or resets it per policy (ListOffsets).
    fn init_positions(&mut self) -> Result<()> {
        let missing = self.fetcher.missing_positions();
        if missing.is_empty() {
            return Ok(());
        }
        let committed = self.offset_fetch(&missing)?;
        let mut reset = Vec::new();
        for tp in &missing {
            match committed.get(tp) {
                Some(&off) if off >= 0 => {
                    log::debug!("{tp}: starting at committed offset {off}");
                    self.fetcher.set_position(tp, off);
                }
                _ => reset.push(tp.clone()),
            }
        }
        if reset.is_empty() {
            return Ok(());
        }
        self.fetcher.reset_positions(&reset)
    }

    /// Committed offsets of `partitions` (-1 = none).
    fn offset_fetch(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let group = self.config.group_id.clone();
        let timeout = self.client.config().request_timeout;
        let reply = self.coord.call(timeout, |v| {
            let mut req = OffsetFetchRequest::default();
            if v >= 8 {
                // v8+ batches groups; the v1-7 fields must stay at their defaults.
                let mut g = OffsetFetchRequestGroup::default();
                g.group_id = group_id(&group);
                g.topics = Some(
                    by_topic
                        .iter()
                        .map(|(t, parts)| {
                            let mut x = OffsetFetchRequestTopics::default();
                            x.name = TopicName(StrBytes::from_string(t.to_string()));
                            x.partition_indexes = parts.clone();
                            x
                        })
                        .collect(),
                );
                req.groups = vec![g];
            } else {
                req.group_id = group_id(&group);
                req.topics = Some(
                    by_topic
                        .iter()
                        .map(|(t, parts)| {
                            let mut x = OffsetFetchRequestTopic::default();
                            x.name = TopicName(StrBytes::from_string(t.to_string()));
                            x.partition_indexes = parts.clone();
                            x
                        })
                        .collect(),
                );
            }
            req
        });
        let (version, resp) = match reply {
            Ok(r) => r,
            Err(e) => {
                if is_transient(&e) {
                    self.coord.reset();
                }
                return Err(e);
            }
        };
        let ctx = format!("OffsetFetch {group}");
        let mut out = BTreeMap::new();
        let mut check_code = |code: i16, what: &str| -> Result<()> {
            if code == 0 {
                return Ok(());
            }
            if matches!(
                code,
                code::COORDINATOR_NOT_AVAILABLE | code::NOT_COORDINATOR
            ) {
                self.coord.reset();
            }
            Err(Error::kafka(format!("{ctx}{what}"), code))
        };
        if version >= 8 {
            let g = resp
                .groups
                .iter()
                .find(|g| *g.group_id.0 == *group)
                .ok_or_else(|| Error::Protocol(format!("{ctx}: reply lacks the group")))?;
            check_code(g.error_code, "")?;
            for t in &g.topics {
                for p in &t.partitions {
                    let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                    check_code(p.error_code, &format!(" {tp}"))?;
                    out.insert(tp, p.committed_offset);
                }
            }
        } else {
            check_code(resp.error_code, "")?;
            for t in &resp.topics {
                for p in &t.partitions {
                    let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                    check_code(p.error_code, &format!(" {tp}"))?;
                    out.insert(tp, p.committed_offset);
                }
            }
        }
        Ok(out)
    }

    fn commit_once(&mut self, gen: &Generation, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for (tp, off) in offsets {
            by_topic
                .entry(&tp.topic)
                .or_default()
                .push((tp.partition, *off));
        }
        let group = self.config.group_id.clone();
        let timeout = self.client.config().request_timeout;
        let (_, resp) = self.coord.call(timeout, |_v| {
            let mut req = OffsetCommitRequest::default();
            req.group_id = group_id(&group);
            req.generation_id_or_member_epoch = gen.id;
            req.member_id = StrBytes::from_string(gen.member_id.clone());
            // -1: the broker's retention (v2-4; later versions lack the field,
            // whose default is also -1).
            req.retention_time_ms = -1;
            req.topics = by_topic
                .iter()
                .map(|(t, parts)| {
                    let mut x = OffsetCommitRequestTopic::default();
                    x.name = TopicName(StrBytes::from_string(t.to_string()));
                    x.partitions = parts
                        .iter()
                        .map(|&(p, off)| {
                            let mut cp = OffsetCommitRequestPartition::default();
                            cp.partition_index = p;
                            cp.committed_offset = off;
                            cp.committed_leader_epoch = -1;
                            cp
                        })
                        .collect();
                    x
                })
                .collect();
            req
        })?;
        let mut first: Option<(TopicPartition, i16)> = None;
        for t in &resp.topics {
            for p in &t.partitions {
                if p.error_code != 0 && first.is_none() {
                    first = Some((
                        TopicPartition::new(t.name.0.to_string(), p.partition_index),
                        p.error_code,
                    ));
                }
            }
        }
        match first {
            None => Ok(()),
            Some((tp, c)) => Err(Error::kafka(format!("OffsetCommit {group} {tp}"), c)),
        }
    }

    fn leave(&mut self) -> Result<()> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let group = self.config.group_id.clone();
        let member = self.member_id.clone();
        let timeout = self.client.config().request_timeout;
        let mut last = None;
        for _ in 0..2 {
            let id = member.clone();
            let reply = self.coord.call(timeout, |v| {
                let mut req = LeaveGroupRequest::default();
                req.group_id = group_id(&group);
                if v >= 3 {
                    let mut m = MemberIdentity::default();
                    m.member_id = StrBytes::from_string(id);
                    if v >= 5 {
                        m.reason = Some(StrBytes::from_static_str("consumer closed"));
                    }
                    req.members = vec![m];
                } else {
                    req.member_id = StrBytes::from_string(id);
                }
                req
            });
            let resp = match reply {
                Ok((_, r)) => r,
                Err(e) if is_transient(&e) => {
                    self.coord.reset();
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let code = if resp.error_code != 0 {
                resp.error_code
            } else {
                resp.members
                    .iter()
                    .map(|m| m.error_code)
                    .find(|&c| c != 0)
                    .unwrap_or(0)
            };
            return match code {
                // Already gone (session expired): nothing to leave.
                0 | code::UNKNOWN_MEMBER_ID => {
                    log::debug!("group {group}: member {member} left");
                    Ok(())
                }
                code::COORDINATOR_NOT_AVAILABLE | code::NOT_COORDINATOR => {
                    self.coord.reset();
                    last = Some(Error::kafka(format!("LeaveGroup {group}"), code));
                    continue;
                }
                c => Err(Error::kafka(format!("LeaveGroup {group}"), c)),
            };
        }
        Err(last.unwrap_or_else(|| Error::Protocol(format!("LeaveGroup {group}: gave up"))))
    }

    /// Stops the heartbeat thread and waits for it.
    fn stop_heartbeat(&mut self) -> Result<()> {
        self.signals.stop();
        match self.heartbeat.take() {
            Some(h) => h
                .join()
                .map_err(|_| Error::Thread("kafka-retry-heartbeat panicked".into())),
            None => Ok(()),
        }
    }
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
        if self.phase == Phase::Closed {
            return Err(Error::Closed);
        }
        let deadline = Instant::now() + timeout;
        self.check_metadata();
        if let Some(ev) = self.handle_signal() {
            return Ok(ev);
        }
        if matches!(self.phase, Phase::Unjoined | Phase::RevokedPending) {
            // Blocks for as long as the broker takes to complete the
            // rebalance, which may exceed `timeout`.
            let parts = self.join()?;
            return Ok(ConsumerEvent::Assigned(parts));
        }
        let max = self.config.max_poll_records;
        let fetch_max_wait = self.client.config().fetch_max_wait;
        let mut fetched = false;
        loop {
            let records = self.fetcher.take(max);
            if !records.is_empty() {
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
            // A rebalance reported mid-poll ends the poll early.
            self.check_metadata();
            if let Some(ev) = self.handle_signal() {
                return Ok(ev);
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
        if self.phase == Phase::Closed {
            return Err(Error::Closed);
        }
        let Some(gen) = self.current() else {
            return Err(Error::Rebalance(format!(
                "group {}: not a member of a generation, cannot commit",
                self.config.group_id
            )));
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let attempts = self.client.config().max_retries;
        let mut tries = 0;
        loop {
            let err = match self.commit_once(&gen, offsets) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let code = err.kafka_code().map(|c| c.code());
            match code {
                Some(c @ (code::ILLEGAL_GENERATION | code::UNKNOWN_MEMBER_ID)) => {
                    self.signals.report(&gen, Signal::Fenced(c));
                    return Err(Error::Rebalance(err.to_string()));
                }
                Some(code::REBALANCE_IN_PROGRESS) => {
                    self.signals.report(&gen, Signal::Rebalance);
                    return Err(Error::Rebalance(err.to_string()));
                }
                // 7 REQUEST_TIMED_OUT: Kafka 3.x passes an append timeout on
                // __consumer_offsets through as is; Java retries it on a
                // rediscovered coordinator, so do we.
                _ if (is_transient(&err) || code == Some(7)) && tries < attempts => {
                    tries += 1;
                    if matches!(
                        code,
                        Some(code::COORDINATOR_NOT_AVAILABLE | code::NOT_COORDINATOR | 7) | None
                    ) {
                        self.coord.reset();
                    }
                    log::debug!(
                        "group {}: commit failed, retrying: {err}",
                        self.config.group_id
                    );
                    self.backoff();
                }
                _ => return Err(err),
            }
        }
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.clone()
    }

    fn close(&mut self) -> Result<()> {
        if self.phase == Phase::Closed {
            return Err(Error::Closed);
        }
        self.phase = Phase::Closed;
        // Stop heartbeating first so no heartbeat races the LeaveGroup.
        self.signals.stop();
        let left = self.leave();
        self.generation = -1;
        self.member_id.clear();
        self.assignment.clear();
        self.fetcher.clear();
        self.fetcher.disconnect();
        self.coord.reset();
        let joined = self.stop_heartbeat();
        left.and(joined)
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if self.phase != Phase::Closed {
            if let Err(e) = self.close() {
                log::debug!("group {}: close on drop: {e}", self.config.group_id);
            }
        }
    }
}

/// The heartbeat thread: every `interval`, heartbeats the current target
/// generation on its own coordinator connection and reports 27 / 22 / 25.
fn heartbeat_loop(
    client: Arc<Client>,
    group: String,
    client_id: String,
    signals: Arc<Signals>,
    interval: Duration,
    timeout: Duration,
) {
    let base_backoff = client.config().retry_backoff.max(Duration::from_millis(20));
    // Consecutive failures: the retry delay doubles from `retry_backoff` up
    // to the heartbeat interval, and only the first failure is a warning.
    let mut failures: u32 = 0;
    let backoff = |failures: u32| {
        base_backoff
            .saturating_mul(1 << failures.min(16))
            .min(interval)
    };
    let mut coord = Coordinator::new(client, group.clone(), &client_id);
    let mut seen_epoch = u64::MAX;
    let mut next = Instant::now();
    loop {
        let target = {
            let mut st = signals.lock();
            loop {
                if st.stop {
                    return;
                }
                if st.epoch != seen_epoch {
                    // New generation (or none): first beat one interval after the join.
                    seen_epoch = st.epoch;
                    next = Instant::now() + interval;
                }
                let fenced = matches!(st.signal, Some(Signal::Fenced(_)));
                match (&st.target, fenced) {
                    (Some(t), false) => {
                        let now = Instant::now();
                        if now >= next {
                            break t.clone();
                        }
                        st = signals
                            .wake
                            .wait_timeout(st, next - now)
                            .map(|(g, _)| g)
                            .unwrap_or_else(|e| e.into_inner().0);
                    }
                    _ => {
                        st = signals.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                }
            }
        };
        let gid = group_id(&group);
        let reply = coord.call(timeout, |_v| {
            let mut req = HeartbeatRequest::default();
            req.group_id = gid;
            req.generation_id = target.id;
            req.member_id = StrBytes::from_string(target.member_id.clone());
            req
        });
        next = Instant::now() + interval;
        let failed = |failures: &mut u32, what: &str| {
            if *failures == 0 {
                log::warn!("group {group}: heartbeat failed: {what}; retrying");
            } else {
                log::debug!("group {group}: heartbeat failed again: {what}");
            }
            *failures = failures.saturating_add(1);
        };
        match reply.map(|(_, r)| r.error_code) {
            Ok(c) => {
                // 14: the coordinator is loading the group; retry soon.
                let done = c != code::COORDINATOR_LOAD_IN_PROGRESS
                    && handle_heartbeat_code(&group, &signals, &target, c, &mut coord);
                if done {
                    if failures > 0 {
                        log::info!(
                            "group {group}: heartbeats work again after {failures} failures"
                        );
                        failures = 0;
                    }
                } else {
                    failed(&mut failures, code_name(c));
                    next = Instant::now() + backoff(failures);
                }
            }
            Err(e) => {
                coord.reset();
                failed(&mut failures, &e.to_string());
                next = Instant::now() + backoff(failures);
            }
        }
    }
}

/// Acts on a heartbeat reply's code; false when the heartbeat should be
/// retried soon (the coordinator moved).
fn handle_heartbeat_code(
    group: &str,
    signals: &Signals,
    target: &Generation,
    code: i16,
    coord: &mut Coordinator,
) -> bool {
    match code {
        0 => true,
        code::REBALANCE_IN_PROGRESS => {
            log::debug!("group {group}: heartbeat: rebalance in progress");
            signals.report(target, Signal::Rebalance);
            true
        }
        c @ (code::ILLEGAL_GENERATION | code::UNKNOWN_MEMBER_ID) => {
            log::debug!("group {group}: heartbeat: fenced ({})", code_name(c));
            signals.report(target, Signal::Fenced(c));
            true
        }
        code::COORDINATOR_NOT_AVAILABLE | code::NOT_COORDINATOR => {
            coord.reset();
            false
        }
        c => {
            log::warn!("group {group}: heartbeat: error {c} ({})", code_name(c));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(id: i32) -> Generation {
        Generation {
            id,
            member_id: "m".into(),
        }
    }

    #[test]
    fn reports_about_other_generations_are_ignored() {
        let s = Signals::default();
        s.report(&gen(1), Signal::Rebalance);
        assert_eq!(s.take(), None, "no target yet");
        s.set_target(Some(gen(2)));
        s.report(&gen(1), Signal::Fenced(22));
        assert_eq!(s.take(), None, "stale generation");
        s.report(&gen(2), Signal::Rebalance);
        s.set_target(Some(gen(3)));
        assert_eq!(s.take(), None, "a new target clears old reports");
    }

    #[test]
    fn fenced_wins_over_rebalance() {
        let s = Signals::default();
        s.set_target(Some(gen(5)));
        s.report(&gen(5), Signal::Rebalance);
        s.report(&gen(5), Signal::Fenced(25));
        s.report(&gen(5), Signal::Rebalance);
        assert_eq!(s.take(), Some(Signal::Fenced(25)));
        assert_eq!(s.take(), None, "taken once");
    }

    #[test]
    fn metadata_change_sees_growth_creation_and_deletion_only() {
        use std::collections::HashMap;
        let assigned: BTreeMap<String, Option<i32>> =
            [("orders".to_string(), Some(2)), ("late".to_string(), None)]
                .into_iter()
                .collect();
        let answer = |orders: TopicState, late: TopicState| -> HashMap<String, TopicState> {
            [("orders".to_string(), orders), ("late".to_string(), late)]
                .into_iter()
                .collect()
        };
        let two = || TopicState::Leaders(vec![1, 1]);
        // Same counts, even with a partition between leaders: no change.
        assert_eq!(
            metadata_change(
                &assigned,
                &answer(TopicState::Leaders(vec![1, -1]), TopicState::Missing)
            ),
            None
        );
        // Unsure answers are not changes.
        for unsure in [TopicState::Failed(5), TopicState::Leaders(Vec::new())] {
            assert_eq!(
                metadata_change(&assigned, &answer(unsure, TopicState::Missing)),
                None
            );
        }
        assert_eq!(metadata_change(&assigned, &HashMap::new()), None);
        // Growth.
        assert_eq!(
            metadata_change(
                &assigned,
                &answer(TopicState::Leaders(vec![1; 4]), TopicState::Missing)
            )
            .as_deref(),
            Some("orders: 2 partitions -> 4 partitions")
        );
        // A subscribed topic that now exists.
        assert_eq!(
            metadata_change(&assigned, &answer(two(), two())).as_deref(),
            Some("late: missing -> 2 partitions")
        );
        // A deleted topic (Java rebalances too: its partitions are gone).
        assert_eq!(
            metadata_change(&assigned, &answer(TopicState::Missing, TopicState::Missing))
                .as_deref(),
            Some("orders: 2 partitions -> missing")
        );
    }

    #[test]
    fn rebalance_requests_change_the_metadata_but_not_the_topics() {
        let topics = vec!["a".to_string(), "b".to_string()];
        let plain = subscription(&topics, 0).unwrap();
        assert_eq!(plain, assignor::encode_subscription(&topics).unwrap());
        let first = subscription(&topics, 1).unwrap();
        let second = subscription(&topics, 2).unwrap();
        assert_ne!(plain, first);
        assert_ne!(first, second);
        assert_eq!(first, subscription(&topics, 1).unwrap(), "stable per count");
        for m in [&plain, &first, &second] {
            assert_eq!(assignor::decode_subscription(m).unwrap(), topics);
        }
        // Java reads it as v0 with user data: version, topics, bytes.
        let mut tail = first.slice(first.len() - 8..);
        assert_eq!(tail.split_to(4).as_ref(), &4i32.to_be_bytes());
        assert_eq!(tail.as_ref(), &1u32.to_be_bytes());
    }

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
}

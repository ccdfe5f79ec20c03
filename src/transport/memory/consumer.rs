//! A consumer-group member on the memory broker.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::group::{Group, GroupState, Member};
use super::{lock, Inner, Partition, Topic, WakeFlag};
use crate::error::{Error, Result};
use crate::record::{Record, TopicPartition};
use crate::transport::{
    Consumer, ConsumerConfig, ConsumerEvent, OffsetReset, PartitionProgress, RebalanceProtocol,
};

/// A partition this member owns, with its fetch position.
struct Owned {
    tp: TopicPartition,
    topic: Arc<Topic>,
    part: Arc<Partition>,
    /// Offset of the next record to return.
    position: i64,
    paused: bool,
}

impl Owned {
    fn has_data(&self) -> bool {
        !self.paused && self.part.end.load(Ordering::SeqCst) > self.position
    }

    /// Appends up to `want` records from the position on.
    fn read_into(&mut self, out: &mut Vec<Record>, want: usize) {
        if want == 0 || !self.has_data() {
            return;
        }
        let log = lock(&self.part.log);
        let from = usize::try_from(self.position)
            .unwrap_or(usize::MAX)
            .min(log.len());
        let to = log.len().min(from.saturating_add(want));
        let topic = crate::record::Topic::from(&self.tp.topic);
        for (i, s) in log.range(from, to).enumerate() {
            out.push(s.to_record(&topic, self.tp.partition, self.position + i as i64));
        }
        drop(log);
        self.position += (to - from) as i64;
    }
}

/// A group member on the memory broker.
///
/// Client-side state (what the member was told, positions, pauses) lives
/// here; group-side state (generation, assignment, commits) in the broker.
pub(super) struct MemoryConsumer {
    inner: Arc<Inner>,
    group: Arc<Group>,
    /// Raised by group changes and by producers of watched topics.
    signal: Arc<WakeFlag>,
    config: ConsumerConfig,
    /// `None` before the first join and after an eviction.
    member_id: Option<String>,
    /// The generation of the last `Assigned` returned.
    generation: i32,
    /// Rejoined; waiting to return `Assigned` for the next generation.
    awaiting: bool,
    /// `Revoked` was returned for the pending rebalance; the next poll rejoins.
    revoke_delivered: bool,
    owned: Vec<Owned>,
    /// Rotates the partition a poll starts with, for fairness.
    rotation: usize,
    closed: bool,
    /// Replaced by a newer member with our `group_instance_id`.
    fenced: bool,
    /// Cooperative: partitions returned in `Revoked`, released on the next
    /// poll (until then they are owned and may be committed).
    releasing: Vec<TopicPartition>,
    /// Cooperative: the `Assigned` that follows a `Revoked`.
    queued: Option<ConsumerEvent>,
}

impl fmt::Debug for MemoryConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryConsumer")
            .field("group", &self.group.id)
            .field("member_id", &self.member_id)
            .field("generation", &self.generation)
            .field("assignment", &self.assignment())
            .field("closed", &self.closed)
            .finish()
    }
}

fn min_deadline(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl MemoryConsumer {
    pub(super) fn new(inner: Arc<Inner>, config: ConsumerConfig) -> Result<Self> {
        if config.group_id.is_empty() {
            return Err(Error::config("group_id", "must not be empty"));
        }
        if config.topics.is_empty() {
            return Err(Error::config("topics", "subscribe to at least one topic"));
        }
        if config.max_poll_records == 0 {
            return Err(Error::config("max_poll_records", "must be at least 1"));
        }
        if let Some(id) = &config.group_instance_id {
            crate::transport::validate_instance_id(id)?;
        }
        let group = {
            let mut groups = lock(&inner.groups);
            let g = groups.entry(config.group_id.clone()).or_insert_with(|| {
                Arc::new(Group {
                    id: config.group_id.clone(),
                    state: Mutex::new(GroupState {
                        generation: 0,
                        members: BTreeMap::new(),
                        rebalance: None,
                        committed: HashMap::new(),
                        next_member: 0,
                        instances: HashMap::new(),
                        fenced: Default::default(),
                    }),
                })
            });
            Arc::clone(g)
        };
        Ok(MemoryConsumer {
            inner,
            group,
            signal: WakeFlag::new(),
            config,
            member_id: None,
            generation: -1,
            awaiting: false,
            revoke_delivered: false,
            owned: Vec::new(),
            rotation: 0,
            closed: false,
            fenced: false,
            releasing: Vec::new(),
            queued: None,
        })
    }

    /// Drops every owned partition (and its pause), returning them.
    fn release(&mut self) -> Vec<TopicPartition> {
        self.owned.drain(..).map(|o| o.tp).collect()
    }

    /// Advances the membership state machine by one group event, if there
    /// is one for this member. Called with the group lock held.
    fn group_step(&mut self, st: &mut GroupState, now: Instant) -> Result<Option<ConsumerEvent>> {
        loop {
            if let Some(id) = &self.member_id {
                if st.fenced.remove(id) {
                    self.fenced = true;
                    self.member_id = None;
                    self.awaiting = false;
                    let lost = self.release();
                    if !lost.is_empty() {
                        return Ok(Some(ConsumerEvent::Lost(lost)));
                    }
                }
            }
            if self.fenced {
                return Err(self.fenced_error());
            }
            if !self.releasing.is_empty() {
                // The caller had its chance to commit them: let them go.
                let gone = std::mem::take(&mut self.releasing);
                self.owned.retain(|o| !gone.contains(&o.tp));
                if let Some(m) = self
                    .member_id
                    .as_ref()
                    .and_then(|id| st.members.get_mut(id))
                {
                    m.revoking.retain(|tp| !gone.contains(tp));
                }
            }
            if let Some(event) = self.queued.take() {
                return Ok(Some(event));
            }
            let Some(id) = self.member_id.clone() else {
                // (Re)join as a fresh member.
                st.next_member += 1;
                let client_id = self.config.client_id.as_deref().unwrap_or("kafka-retry");
                let id = format!("{client_id}-{:010}", st.next_member);
                if let Some(instance) = self.config.group_instance_id.clone() {
                    if st.replace_static(&instance, &id, &self.signal) {
                        // Stable group: the assignment comes back below
                        // without a rebalance; else it waits for the
                        // pending one.
                        self.member_id = Some(id);
                        self.awaiting = true;
                        self.revoke_delivered = false;
                        st.try_complete(&self.inner);
                        continue;
                    }
                    st.instances.insert(instance, id.clone());
                }
                st.members.insert(
                    id.clone(),
                    Member {
                        topics: self.config.topics.clone(),
                        rebalance_timeout: self.config.rebalance_timeout,
                        rejoined: true,
                        generation: -1,
                        assignment: Vec::new(),
                        signal: Arc::clone(&self.signal),
                        instance_id: self.config.group_instance_id.clone(),
                        away_until: None,
                        cooperative: self.config.rebalance_protocol
                            == RebalanceProtocol::Cooperative,
                        revoking: Vec::new(),
                        claims: self.config.claims.clone(),
                        claims_version: 0,
                    },
                );
                self.member_id = Some(id);
                self.awaiting = true;
                self.revoke_delivered = false;
                st.start_rebalance(now, &self.inner);
                continue;
            };
            let group_cooperative = st.cooperative();
            let Some(m) = st.members.get_mut(&id) else {
                // Evicted (did not rejoin within the rebalance timeout): the
                // partitions were taken without a clean revoke.
                self.member_id = None;
                self.awaiting = false;
                self.revoke_delivered = false;
                let lost = self.release();
                if lost.is_empty() {
                    continue;
                }
                return Ok(Some(ConsumerEvent::Lost(lost)));
            };
            // A new generation formed for us: taken before a next rebalance
            // (a cooperative one may already be pending) asks us to rejoin.
            if self.awaiting && !m.rejoined && m.generation != self.generation {
                self.awaiting = false;
                self.generation = m.generation;
                let owned = self.assignment();
                let revoked: Vec<TopicPartition> = owned
                    .iter()
                    .filter(|tp| !m.assignment.contains(tp))
                    .cloned()
                    .collect();
                let added: Vec<TopicPartition> = m
                    .assignment
                    .iter()
                    .filter(|tp| !owned.contains(tp))
                    .cloned()
                    .collect();
                self.take_assignment(&added, &st.committed);
                if revoked.is_empty() {
                    return Ok(Some(ConsumerEvent::Assigned(added)));
                }
                self.releasing = revoked.clone();
                self.queued = Some(ConsumerEvent::Assigned(added));
                return Ok(Some(ConsumerEvent::Revoked(revoked)));
            }
            let cooperative = m.cooperative && group_cooperative;
            if st.rebalance.is_none()
                && !m.rejoined
                && m.claims
                    .as_ref()
                    .is_some_and(|c| c.version() != m.claims_version)
            {
                // A new claim is new metadata: as on Kafka, the group
                // rebalances (and the assignment reads the claim).
                st.start_rebalance(now, &self.inner);
                continue;
            }
            if st.rebalance.is_some() && !m.rejoined && cooperative {
                // Cooperative: rejoin keeping every partition (and reading
                // them) until the new generation says which ones move.
                m.rejoined = true;
                self.awaiting = true;
                st.try_complete(&self.inner);
                continue;
            }
            if st.rebalance.is_some() && !m.rejoined {
                if !self.revoke_delivered && !self.owned.is_empty() {
                    // Still owned until the next poll: the caller may commit.
                    self.revoke_delivered = true;
                    return Ok(Some(ConsumerEvent::Revoked(self.assignment())));
                }
                // This poll is the JoinGroup. Eager protocol: give up all.
                m.rejoined = true;
                m.assignment.clear();
                self.release();
                self.revoke_delivered = false;
                self.awaiting = true;
                st.try_complete(&self.inner);
                continue;
            }
            return Ok(None);
        }
    }

    /// Sets up positions for a new assignment: committed offset, or the
    /// reset policy when there is none or it is out of range (Kafka's
    /// OFFSET_OUT_OF_RANGE handling).
    fn take_assignment(
        &mut self,
        tps: &[TopicPartition],
        committed: &HashMap<TopicPartition, i64>,
    ) {
        let fresh: Vec<&TopicPartition> = tps
            .iter()
            .filter(|tp| !self.owned.iter().any(|o| &o.tp == *tp))
            .collect();
        for tp in fresh {
            let Ok(topic) = self.inner.topic(&tp.topic) else {
                continue;
            };
            let Ok(part) = topic.partition(tp.partition) else {
                continue;
            };
            let end = part.end.load(Ordering::SeqCst);
            let position = match committed.get(tp) {
                Some(&c) if (0..=end).contains(&c) => c,
                _ => match self.config.offset_reset {
                    OffsetReset::Earliest => 0,
                    OffsetReset::Latest => end,
                },
            };
            self.owned.push(Owned {
                tp: tp.clone(),
                topic,
                part,
                position,
                paused: false,
            });
        }
    }

    fn has_data(&self) -> bool {
        self.owned.iter().any(Owned::has_data)
    }

    /// Up to `max_poll_records` records, shared fairly: each ready partition
    /// first gets `max / ready`, then what is left is filled in order. The
    /// starting partition rotates every poll.
    fn fetch(&mut self) -> Vec<Record> {
        let max = self.config.max_poll_records;
        let n = self.owned.len();
        let ready = self.owned.iter().filter(|o| o.has_data()).count();
        if ready == 0 {
            return Vec::new();
        }
        let share = (max / ready).max(1);
        let start = self.rotation % n;
        self.rotation = self.rotation.wrapping_add(1);
        let mut out = Vec::with_capacity(max.min(4096));
        for pass in 0..2 {
            for i in 0..n {
                let room = max - out.len();
                if room == 0 {
                    return out;
                }
                let want = if pass == 0 { share.min(room) } else { room };
                self.owned[(start + i) % n].read_into(&mut out, want);
            }
        }
        out
    }

    /// Topics to be woken for: those of unpaused owned partitions.
    fn register_waiters(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<Arc<Topic>> = Vec::new();
        for o in self.owned.iter().filter(|o| !o.paused) {
            if !topics.iter().any(|t| Arc::ptr_eq(t, &o.topic)) {
                o.topic.add_waiter(&self.signal);
                topics.push(Arc::clone(&o.topic));
            }
        }
        topics
    }

    fn fenced_error(&self) -> Error {
        Error::kafka(
            format!(
                "group {}: instance {:?} fenced by a newer member with the same id",
                self.group.id,
                self.config.group_instance_id.as_deref().unwrap_or_default()
            ),
            82,
        )
    }

    /// Leaves the group; with `stay` a static member only goes away for
    /// its session timeout, keeping its place and assignment.
    fn leave(&mut self, stay: bool) {
        let group = Arc::clone(&self.group);
        let mut st = lock(&group.state);
        let now = Instant::now();
        if let Some(id) = self.member_id.take() {
            let kept = match st.members.get_mut(&id) {
                Some(m) if stay && m.instance_id.is_some() => {
                    // An unrepresentable timeout: away until removed by a
                    // new member or a rebalance.
                    m.away_until = Some(
                        now.checked_add(self.config.session_timeout)
                            .unwrap_or(now + Duration::from_secs(86_400 * 365)),
                    );
                    true
                }
                _ => false,
            };
            if !kept && !st.fenced.remove(&id) {
                st.remove_member(&id, now, &self.inner);
            }
        }
        drop(st);
        self.release();
        self.awaiting = false;
        self.closed = true;
    }
}

impl Consumer for MemoryConsumer {
    fn poll(&mut self, timeout: Duration) -> Result<ConsumerEvent> {
        if self.closed {
            return Err(Error::Closed);
        }
        let deadline = Instant::now().checked_add(timeout);
        let group = Arc::clone(&self.group);
        loop {
            // Lowered before looking at anything: a raise from here on (a
            // group change or new data) makes the wait below return at once.
            self.signal.lower();
            let mut st = lock(&group.state);
            let now = Instant::now();
            st.expire(now, &self.inner);
            if let Some(event) = self.group_step(&mut st, now)? {
                return Ok(event);
            }
            let timed_out = deadline.is_some_and(|d| now >= d);
            // Cooperative members keep reading what they own meanwhile.
            if self.awaiting && self.owned.is_empty() {
                if timed_out {
                    // Still waiting for the other members to rejoin.
                    return Ok(ConsumerEvent::Records(Vec::new()));
                }
                // Wake at the rebalance deadline too, to evict stragglers.
                let until = min_deadline(deadline, st.rebalance.and_then(|r| r.deadline));
                drop(st);
                self.signal.wait(until);
                continue;
            }
            drop(st);
            if self.has_data() {
                // The partitions stay ours until we return `Revoked` and
                // are polled again, so fetching needs no group lock.
                let records = self.fetch();
                if records.is_empty() {
                    continue;
                }
                return Ok(ConsumerEvent::Records(records));
            }
            if timed_out {
                return Ok(ConsumerEvent::Records(Vec::new()));
            }
            // Register, then look again (see the design note in mod.rs).
            let watched = self.register_waiters();
            if !self.has_data() {
                self.signal.wait(deadline);
            }
            for t in &watched {
                t.remove_waiter(&self.signal);
            }
        }
    }

    fn pause(&mut self, partitions: &[TopicPartition]) {
        for o in self.owned.iter_mut().filter(|o| partitions.contains(&o.tp)) {
            o.paused = true;
        }
    }

    fn resume(&mut self, partitions: &[TopicPartition]) {
        for o in self.owned.iter_mut().filter(|o| partitions.contains(&o.tp)) {
            o.paused = false;
        }
    }

    fn commit(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        let group = Arc::clone(&self.group);
        let mut st = lock(&group.state);
        st.expire(Instant::now(), &self.inner);
        if let Some(id) = self.member_id.clone().filter(|id| st.fenced.remove(id)) {
            // Found out here rather than in a poll: the partitions are gone.
            log::warn!("group {}: member {id} fenced by instance id", group.id);
            self.fenced = true;
            self.member_id = None;
            self.release();
        }
        if self.fenced {
            return Err(self.fenced_error());
        }
        let Some(id) = self.member_id.as_deref() else {
            return Err(Error::Rebalance(format!(
                "not a member of group `{}`; poll to join",
                group.id
            )));
        };
        let Some(m) = st.members.get(id) else {
            return Err(Error::Rebalance(format!(
                "member {id} was evicted from group `{}` (no rejoin within the rebalance timeout)",
                group.id
            )));
        };
        // Kafka accepts commits of the current generation, also while a
        // rebalance is being prepared, but not once the member has rejoined
        // (eager: it gave up its partitions).
        // Cooperative members keep their partitions while they rejoin, and
        // may commit those being revoked until they release them.
        let rejoining = !m.cooperative && (m.rejoined || self.awaiting);
        if rejoining || m.generation != st.generation {
            return Err(Error::Rebalance(format!(
                "member {id} is not in the current generation {} of group `{}`",
                st.generation, group.id
            )));
        }
        if let Some((tp, _)) = offsets
            .iter()
            .find(|(tp, _)| !m.assignment.contains(tp) && !m.revoking.contains(tp))
        {
            return Err(Error::Rebalance(format!(
                "partition {tp} is not assigned to member {id} of group `{}`",
                group.id
            )));
        }
        for (tp, offset) in offsets {
            st.committed.insert(tp.clone(), *offset);
        }
        Ok(())
    }

    fn generation(&self) -> Option<i32> {
        (self.member_id.is_some() && self.generation >= 0).then_some(self.generation)
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.iter().map(|o| o.tp.clone()).collect()
    }

    fn progress(&self) -> Vec<PartitionProgress> {
        self.owned
            .iter()
            .map(|o| PartitionProgress {
                partition: o.tp.clone(),
                position: Some(o.position),
                log_end: Some(o.part.end.load(Ordering::SeqCst)),
            })
            .collect()
    }

    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        self.leave(false);
        Ok(())
    }

    fn close_for_restart(&mut self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        self.leave(true);
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        if !self.closed {
            self.leave(false);
        }
    }
}

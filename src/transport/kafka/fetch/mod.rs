//! The fetch side of a group consumer: per-partition positions, Fetch to each
//! leader on a dedicated connection, a buffer of decoded records, pause and
//! offset reset (ListOffsets).
//!
//! Invariants:
//! - `position` is the offset of the next record to *fetch*; records between
//!   the last one returned and `position` sit in `buffer`, so pausing (which
//!   keeps the buffer) or handing out part of the buffer never skips one.
//! - A partition is fetched in a round only when its buffer is empty and
//!   it is not paused. While replies bring records, a group consumer also
//!   sends Fetches ahead ([`Fetcher::fetch_ahead`]) and reads them once
//!   fewer than a poll's worth of records are left (in [`Fetcher::take`]).
//!   A partition is fetched ahead only once its buffer is empty, it has
//!   no Fetch on the way and the broker holds records past its position,
//!   so it holds one reply and has at most one more on the way, and a
//!   consumer at the log end fetches as without it.
//! - A reply's records are kept only if the partition's position is still
//!   the offset they were asked from: a reply to an earlier assignment, a
//!   reset or a read elsewhere is dropped, whenever it is read.
//! - Every partition's state is thrown away on a new assignment: positions
//!   then come from the committed offsets again (eager rebalance).
//! - read_committed (see [`committed_only`]): the broker answers up to the
//!   last stable offset and lists the aborted transactions overlapping the
//!   reply; their records are dropped here, per reply, as Java's
//!   `CompletedFetch` does. Positions still move past them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

mod ahead;
mod committed;
mod request;

use self::committed::committed_only;
use self::request::fetch_request;
use super::client::Client;
use super::conn::{Connection, Sent};
use super::errors::code_name;
use super::records::decode_records_into;
use super::retry::{classify_code, Action, Backoff};
use crate::error::{Error, KafkaCode, Result};
use crate::record::{Record, TopicPartition};
use crate::transport::{IsolationLevel, OffsetReset, PartitionProgress};

/// ListOffsets timestamps meaning "log start" and "log end".
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

/// A Fetch sent ahead to one leader, its reply not read yet (see
/// `ahead.rs`).
struct Ahead {
    list: Vec<(TopicPartition, i64)>,
    sent: Sent<FetchRequest>,
}

#[derive(Debug, Default)]
struct PartState {
    /// Next offset to fetch; `None` until OffsetFetch / ListOffsets set it.
    position: Option<i64>,
    /// Fetched, not yet returned, in offset order.
    buffer: VecDeque<Record>,
    paused: bool,
    /// The log end from the latest fetch reply without error: the high
    /// watermark, or with read_committed the last stable offset (as the
    /// Java client's `records-lag`).
    log_end: Option<i64>,
}

/// Positions, buffers and fetch connections of the assigned partitions.
pub(crate) struct Fetcher {
    client: Arc<Client>,
    reset: OffsetReset,
    /// Fetch with isolation_level 1 and drop aborted transactions.
    read_committed: bool,
    parts: BTreeMap<TopicPartition, PartState>,
    /// One connection per leader node: a long-poll Fetch blocks its socket.
    conns: HashMap<i32, Connection>,
    /// Rotates the start of `take` and of the partition order in Fetch, so
    /// that no partition starves the others.
    turn: usize,
    /// Rotates which leader is asked first (and so with the caller's wait)
    /// in a fetch round. Its own counter: `turn` also moves in `take`, and
    /// a poll calling `take` twice per round moved it by 3 per round, so
    /// with 3 leaders the same one always came first (the cluster harness
    /// of tests/kafka_cluster.rs showed it).
    leader_turn: usize,
    /// Consecutive fetch rounds that hit an error: drives the back-off, and
    /// only the first round of a streak logs warnings (a broker outage must
    /// not flood the log).
    failures: u32,
    /// Leaders whose connection failed are left alone until then.
    retry_at: HashMap<i32, Instant>,
    /// A broker refused our SASL credentials during a round: unlike other
    /// fetch errors it is reported to the caller of `poll` (it will not go
    /// away by itself), see [`Fetcher::take_auth_failure`].
    auth_failure: Option<Error>,
    /// Fetches sent ahead and their leaders, in the order sent (see
    /// [`Fetcher::fetch_ahead`]).
    ahead: Vec<(i32, Ahead)>,
    /// The partitions of `ahead`: none is in two Fetches at once.
    on_the_way: HashSet<TopicPartition>,
    /// Leaders whose last reply brought records: only those are fetched
    /// ahead, so a consumer at the log end long-polls as without it.
    flowing: HashSet<i32>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("partitions", &self.parts)
            .field("leaders", &self.conns.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Up to `max` buffered records of unpaused partitions: each partition with
/// records first gets an equal share, then leftovers fill up in turn; `turn`
/// rotates the starting partition from call to call.
fn take_fair(
    parts: &mut BTreeMap<TopicPartition, PartState>,
    turn: usize,
    max: usize,
) -> Vec<Record> {
    let mut buffered = 0;
    let ready: Vec<TopicPartition> = parts
        .iter()
        .filter(|(_, p)| !p.paused && !p.buffer.is_empty())
        .map(|(tp, p)| {
            buffered += p.buffer.len();
            tp.clone()
        })
        .collect();
    if ready.is_empty() || max == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(buffered.min(max));
    let start = turn % ready.len();
    let order: Vec<&TopicPartition> = ready[start..].iter().chain(&ready[..start]).collect();
    let share = (max / ready.len()).max(1);
    for pass_share in [share, max] {
        for tp in &order {
            if out.len() >= max {
                return out;
            }
            if let Some(p) = parts.get_mut(*tp) {
                let n = pass_share.min(max - out.len()).min(p.buffer.len());
                out.extend(p.buffer.drain(..n));
            }
        }
    }
    out
}

impl Fetcher {
    /// `isolation` is the consumer's; [`KafkaConfig::isolation_level`]
    /// is a floor over it (read_committed if either asks for it).
    ///
    /// [`KafkaConfig::isolation_level`]: crate::KafkaConfig::isolation_level
    pub(crate) fn new(client: Arc<Client>, reset: OffsetReset, isolation: IsolationLevel) -> Self {
        let read_committed = isolation == IsolationLevel::ReadCommitted
            || client.config().isolation_level == IsolationLevel::ReadCommitted;
        Fetcher {
            client,
            reset,
            read_committed,
            parts: BTreeMap::new(),
            conns: HashMap::new(),
            turn: 0,
            leader_turn: 0,
            failures: 0,
            retry_at: HashMap::new(),
            auth_failure: None,
            ahead: Vec::new(),
            on_the_way: HashSet::new(),
            flowing: HashSet::new(),
        }
    }

    /// Starts over with these partitions: no positions, no buffers, no pauses.
    pub(crate) fn assign(&mut self, partitions: &[TopicPartition]) {
        self.parts = partitions
            .iter()
            .map(|tp| (tp.clone(), PartState::default()))
            .collect();
    }

    /// Cooperative rebalance: fetches `partitions` from now on, keeping the
    /// position and buffered records of those already assigned (they did
    /// not move) and dropping the rest.
    pub(crate) fn reassign(&mut self, partitions: &[TopicPartition]) {
        let mut old = std::mem::take(&mut self.parts);
        self.parts = partitions
            .iter()
            .map(|tp| (tp.clone(), old.remove(tp).unwrap_or_default()))
            .collect();
    }

    /// Forgets every partition (revoked or lost).
    pub(crate) fn clear(&mut self) {
        self.parts.clear();
    }

    /// Drops the fetch connections (on close), and with them any reply
    /// still to come.
    pub(crate) fn disconnect(&mut self) {
        self.conns.clear();
        self.ahead.clear();
        self.on_the_way.clear();
        self.flowing.clear();
        self.retry_at.clear();
    }

    pub(crate) fn pause(&mut self, partitions: &[TopicPartition], paused: bool) {
        for tp in partitions {
            if let Some(p) = self.parts.get_mut(tp) {
                p.paused = paused;
            }
        }
    }

    /// Per assigned partition: the offset of the next record `take` will
    /// return (the first buffered one, else the fetch position) and the
    /// log end last seen.
    pub(crate) fn progress(&self) -> Vec<PartitionProgress> {
        self.parts
            .iter()
            .map(|(tp, p)| PartitionProgress {
                partition: tp.clone(),
                position: p.buffer.front().map(|r| r.offset).or(p.position),
                log_end: p.log_end,
            })
            .collect()
    }

    /// The log end of `tp` last seen in a fetch reply.
    pub(crate) fn log_end(&self, tp: &TopicPartition) -> Option<i64> {
        self.parts.get(tp)?.log_end
    }

    /// Assigned partitions without a position yet.
    pub(crate) fn missing_positions(&self) -> Vec<TopicPartition> {
        self.parts
            .iter()
            .filter(|(_, p)| p.position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Sets where an assigned partition starts (its committed offset).
    pub(crate) fn set_position(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.position = Some(offset);
            p.buffer.clear();
        }
    }

    /// The next offset to fetch of an assigned partition, if it has one.
    pub(crate) fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.parts.get(tp).and_then(|p| p.position)
    }

    /// Up to `max` buffered records of unpaused partitions, shared fairly
    /// (see [`take_fair`]). Reads the replies of Fetches sent ahead first
    /// when fewer than `max` are buffered: they have had the caller's
    /// time since to arrive.
    pub(crate) fn take(&mut self, max: usize) -> Vec<Record> {
        if !self.ahead.is_empty() {
            let buffered: usize = self
                .parts
                .values()
                .filter(|p| !p.paused)
                .map(|p| p.buffer.len())
                .sum();
            if buffered < max {
                self.read_ahead();
            }
        }
        self.turn = self.turn.wrapping_add(1);
        take_fair(&mut self.parts, self.turn, max)
    }

    /// The resets and metadata refreshes a round (or a reply read ahead)
    /// asked for.
    fn after_round(&mut self, resets: &[TopicPartition], refresh: &BTreeSet<String>) {
        if !resets.is_empty() {
            if let Err(e) = self.reset_positions(resets) {
                self.complain(format_args!(
                    "offset reset failed, retrying on the next poll: {e}"
                ));
            }
        }
        self.refresh(refresh);
    }

    /// A leader's connection failed: logged, dropped, left alone for a
    /// back-off, and the leadership of `list` re-read.
    fn leader_failed(
        &mut self,
        leader: i32,
        list: &[(TopicPartition, i64)],
        e: Error,
        refresh: &mut BTreeSet<String>,
    ) {
        let backoff = if matches!(e, Error::Auth { .. }) {
            // Refused credentials: wait the longest back-off.
            Backoff::new(self.client.config()).delay(u32::MAX)
        } else {
            self.backoff()
        };
        if matches!(e, Error::Auth { .. }) {
            self.auth_failure = Some(e.clone());
        }
        self.complain(format_args!(
            "fetch from node {leader}: {e}; reconnecting in {backoff:?}"
        ));
        self.conns.remove(&leader);
        // Its replies went with the connection.
        let on_the_way = &mut self.on_the_way;
        self.ahead.retain(|(l, a)| {
            if *l == leader {
                for (tp, _) in &a.list {
                    on_the_way.remove(tp);
                }
            }
            *l != leader
        });
        self.flowing.remove(&leader);
        self.retry_at.insert(leader, Instant::now() + backoff);
        // The leader may be gone for good: re-read who leads these
        // partitions, as Java does after a disconnect.
        for (tp, _) in list {
            refresh.insert(tp.topic.clone());
        }
    }

    /// One Fetch round: every fetchable partition (assigned, positioned,
    /// unpaused, nothing buffered) is asked of its leader, the broker waiting
    /// at most `wait` for data. Errors are handled here (reset, metadata
    /// refresh, reconnect with back-off) and never returned: the caller just
    /// sees no records this round. Sleeps for `wait` when there is nothing to
    /// fetch, so a poll loop does not spin.
    pub(crate) fn fetch_round(&mut self, wait: Duration) {
        // A reply sent ahead comes first: its partitions are not fetched
        // twice, and if it brought records the caller has them now.
        if !self.ahead.is_empty() && self.read_ahead() {
            return;
        }
        let started = Instant::now();
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        let mut refresh: BTreeSet<String> = BTreeSet::new();
        for (tp, p) in &self.parts {
            let Some(pos) = p.position else { continue };
            if p.paused || !p.buffer.is_empty() {
                continue;
            }
            match self.client.leader(&tp.topic, tp.partition) {
                Ok(leader) => by_leader.entry(leader).or_default().push((tp.clone(), pos)),
                Err(e) => {
                    self.complain(format_args!("fetch {tp}: no leader: {e}"));
                    refresh.insert(tp.topic.clone());
                }
            }
        }
        let mut trouble = !refresh.is_empty();
        // Leaders still in their back-off after a failure are skipped.
        let now = Instant::now();
        self.retry_at.retain(|_, at| *at > now);
        by_leader.retain(|leader, _| !self.retry_at.contains_key(leader));
        if by_leader.is_empty() {
            self.refresh(&refresh);
            let until_retry = self
                .retry_at
                .values()
                .min()
                .map_or(wait, |at| at.saturating_duration_since(Instant::now()));
            std::thread::sleep(
                wait.min(until_retry.max(Duration::from_millis(10)))
                    .saturating_sub(started.elapsed()),
            );
            // Waiting out a back-off neither ends the failure streak nor
            // lengthens it.
            if trouble || self.retry_at.is_empty() {
                self.end_round(trouble);
            }
            return;
        }
        self.turn = self.turn.wrapping_add(1);
        self.leader_turn = self.leader_turn.wrapping_add(1);
        let mut leaders: Vec<i32> = by_leader.keys().copied().collect();
        let n = leaders.len();
        leaders.rotate_left(self.leader_turn % n);
        let mut wait = wait;
        let mut resets = Vec::new();
        for leader in leaders {
            let Some(list) = by_leader.remove(&leader) else {
                continue;
            };
            match self.fetch_from(leader, &list, wait, &mut resets, &mut refresh) {
                // Once a leader gave us records, ask the others (almost)
                // without waiting: the caller gets what is there now. 1 ms,
                // not 0: Tansu answers max_wait_ms = 0 with no partitions at
                // all, so with 0 the other leaders starved under load.
                Ok(true) => {
                    log::trace!("fetch from node {leader}: records buffered");
                    wait = wait.min(Duration::from_millis(1))
                }
                Ok(false) => {}
                Err(e) => {
                    self.leader_failed(leader, &list, e, &mut refresh);
                    trouble = true;
                }
            }
        }
        if !refresh.is_empty() {
            trouble = true;
        }
        self.after_round(&resets, &refresh);
        if trouble {
            // Pause a little (within the caller's wait) so that an error
            // does not turn the poll loop into a busy loop.
            std::thread::sleep(
                self.client
                    .config()
                    .retry_backoff
                    .min(wait.saturating_sub(started.elapsed()))
                    .max(Duration::from_millis(10)),
            );
        }
        self.end_round(trouble);
    }

    /// Back-off after a failure: the client's [`Backoff`], counting this
    /// round's failure after the failing rounds before it.
    fn backoff(&self) -> Duration {
        Backoff::new(self.client.config()).delay(self.failures.saturating_add(1))
    }

    /// The SASL refusal of the last rounds, if any (once).
    pub(crate) fn take_auth_failure(&mut self) -> Option<Error> {
        self.auth_failure.take()
    }

    fn end_round(&mut self, trouble: bool) {
        if trouble {
            self.failures = self.failures.saturating_add(1);
        } else if self.failures > 0 {
            log::info!("fetching works again after {} failures", self.failures);
            self.failures = 0;
        }
    }

    /// Logs a fetch problem: a warning on the first failing round of a
    /// streak, debug afterwards.
    fn complain(&self, msg: std::fmt::Arguments<'_>) {
        if self.failures == 0 {
            log::warn!("{msg}");
        } else {
            log::debug!("{msg}");
        }
    }

    /// One Metadata request for `topics`, no retries: fetch rounds are the
    /// retry loop here (with their own back-off), and a poll must return on
    /// time during an outage, not wait out a retry budget.
    fn refresh(&self, topics: &BTreeSet<String>) {
        if topics.is_empty() {
            return;
        }
        let topics: Vec<String> = topics.iter().cloned().collect();
        if let Err(e) = self.client.fetch_metadata_once(&topics) {
            self.complain(format_args!("metadata refresh for {topics:?} failed: {e}"));
        }
    }

    /// Fetches `list` from `leader`; Ok(true) when records were buffered.
    fn fetch_from(
        &mut self,
        leader: i32,
        list: &[(TopicPartition, i64)],
        wait: Duration,
        resets: &mut Vec<TopicPartition>,
        refresh: &mut BTreeSet<String>,
    ) -> Result<bool> {
        let cfg = self.client.config().clone();
        if !self.conns.contains_key(&leader) {
            let conn = self.client.connect_node(leader)?;
            self.conns.insert(leader, conn);
        }
        let Some(conn) = self.conns.get_mut(&leader) else {
            return Ok(false);
        };
        let version = conn.version(ApiKey::Fetch)?;
        let req = fetch_request(&cfg, self.read_committed, self.turn, list, wait);
        let resp: FetchResponse = conn.call(version, &req, wait + cfg.request_timeout)?;
        Ok(self.absorb(leader, resp, list, resets, refresh))
    }

    /// Buffers the records of a Fetch reply from `leader` to `list`; true
    /// when there were any.
    fn absorb(
        &mut self,
        leader: i32,
        resp: FetchResponse,
        list: &[(TopicPartition, i64)],
        resets: &mut Vec<TopicPartition>,
        refresh: &mut BTreeSet<String>,
    ) -> bool {
        if resp.error_code != 0 {
            // Top-level errors (v7+) concern fetch sessions, which we do not use.
            log::warn!(
                "fetch from node {leader}: error {} ({})",
                resp.error_code,
                code_name(resp.error_code)
            );
            self.flowing.remove(&leader);
            return false;
        }

        let requested: HashMap<&TopicPartition, i64> =
            list.iter().map(|(tp, pos)| (tp, *pos)).collect();
        let mut got = false;
        for topic in resp.responses {
            let name: &str = &topic.topic.0;
            for pd in topic.partitions {
                let tp = TopicPartition::new(name, pd.partition_index);
                // Only answers to what we asked, at the position we asked for.
                let Some(&from) = requested.get(&tp) else {
                    continue;
                };
                let Some(state) = self.parts.get_mut(&tp) else {
                    continue;
                };
                if state.position != Some(from) {
                    continue;
                }
                match pd.error_code {
                    0 => {
                        let end = if self.read_committed && pd.last_stable_offset >= 0 {
                            pd.last_stable_offset
                        } else {
                            pd.high_watermark
                        };
                        if end >= 0 {
                            state.log_end = Some(end);
                        }
                        let Some(data) = pd.records else { continue };
                        if data.is_empty() {
                            continue;
                        }
                        // Straight into the partition's buffer (it keeps
                        // its capacity from reply to reply).
                        let start = state.buffer.len();
                        let (next_offset, batches) = decode_records_into(
                            name,
                            pd.partition_index,
                            data,
                            from,
                            &mut state.buffer,
                        );
                        let next = if self.read_committed {
                            let aborted: Vec<(i64, i64)> = pd
                                .aborted_transactions
                                .iter()
                                .flatten()
                                .map(|a| (a.producer_id.0, a.first_offset))
                                .collect();
                            let (records, next) = committed_only(
                                state.buffer.drain(start..).collect(),
                                next_offset,
                                from,
                                &batches,
                                &aborted,
                                pd.last_stable_offset,
                            );
                            state.buffer.extend(records);
                            next
                        } else {
                            next_offset
                        };
                        got |= state.buffer.len() > start;
                        if next > from {
                            state.position = Some(next);
                        }
                    }
                    c if c == KafkaCode::OFFSET_OUT_OF_RANGE.code() => {
                        log::warn!(
                            "fetch {tp}: offset {from} is out of range; resetting to the {} offset",
                            match self.reset {
                                OffsetReset::Earliest => "earliest",
                                OffsetReset::Latest => "latest",
                            }
                        );
                        resets.push(tp);
                    }
                    code if classify_code(code.into()) == Action::Rediscover => {
                        log::debug!("fetch {tp}: error {code} ({}); re-routing", code_name(code));
                        refresh.insert(tp.topic);
                    }
                    code => {
                        log::warn!("fetch {tp}: error {code} ({})", code_name(code));
                    }
                }
            }
        }
        if got {
            self.flowing.insert(leader);
        } else {
            self.flowing.remove(&leader);
        }
        got
    }

    /// Sets the position of `partitions` per the reset policy (ListOffsets
    /// to each leader: -2 earliest, -1 latest). Partitions that fail keep no
    /// position and are retried on a later poll; the first error is returned.
    pub(crate) fn reset_positions(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let timestamp = match self.reset {
            OffsetReset::Earliest => EARLIEST,
            OffsetReset::Latest => LATEST,
        };
        let cfg = self.client.config().clone();
        let mut by_leader: BTreeMap<i32, Vec<&TopicPartition>> = BTreeMap::new();
        let mut first_err = None;
        for tp in partitions {
            // Forget the old position: a partition being reset is not fetched.
            if let Some(p) = self.parts.get_mut(tp) {
                p.position = None;
                p.buffer.clear();
            }
            match self.client.leader(&tp.topic, tp.partition) {
                Ok(l) => by_leader.entry(l).or_default().push(tp),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let mut refresh = BTreeSet::new();
        for (leader, tps) in by_leader {
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for tp in &tps {
                topics.entry(&tp.topic).or_default().push(tp.partition);
            }
            let reply = self.client.with_node(leader, |conn| {
                let version = conn.version(ApiKey::ListOffsets)?;
                let mut req = ListOffsetsRequest::default();
                // -1: a consumer, so "latest" is the high watermark.
                req.replica_id = BrokerId(-1);
                if version >= 10 {
                    req.timeout_ms =
                        i32::try_from(cfg.request_timeout.as_millis()).unwrap_or(i32::MAX);
                }
                req.topics = topics
                    .iter()
                    .map(|(name, parts)| {
                        let mut t = ListOffsetsTopic::default();
                        t.name = TopicName(StrBytes::from_string(name.to_string()));
                        t.partitions = parts
                            .iter()
                            .map(|&p| {
                                let mut lp = ListOffsetsPartition::default();
                                lp.partition_index = p;
                                lp.timestamp = timestamp;
                                lp
                            })
                            .collect();
                        t
                    })
                    .collect();
                conn.call(version, &req, cfg.request_timeout)
            });
            let resp = match reply {
                Ok(r) => r,
                Err(e) => {
                    // Maybe the leader moved: look it up again next time.
                    for tp in &tps {
                        refresh.insert(tp.topic.clone());
                    }
                    first_err.get_or_insert(e);
                    continue;
                }
            };
            for topic in resp.topics {
                for p in topic.partitions {
                    let tp = TopicPartition::new(topic.name.0.to_string(), p.partition_index);
                    if !tps.contains(&&tp) {
                        continue;
                    }
                    if p.error_code != 0 {
                        if classify_code(p.error_code.into()) == Action::Rediscover {
                            refresh.insert(tp.topic.clone());
                        }
                        first_err
                            .get_or_insert(Error::kafka(format!("ListOffsets {tp}"), p.error_code));
                        continue;
                    }
                    if p.offset < 0 {
                        first_err.get_or_insert(Error::Protocol(format!(
                            "ListOffsets {tp}: broker answered offset {}",
                            p.offset
                        )));
                        continue;
                    }
                    log::debug!(
                        "{tp}: starting at offset {} ({:?} reset)",
                        p.offset,
                        self.reset
                    );
                    self.set_position(&tp, p.offset);
                }
            }
        }
        self.refresh(&refresh);
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::KafkaConfig;
    use super::super::fake::{api, FakeBroker};
    use super::super::records::{decode_records, encode_batch, Compression};
    use super::*;
    use crate::record::OutRecord;
    use bytes::Bytes;

    /// A batch at `base` of `values` by producer `pid` (-1: none), with
    /// the transactional bit when `txn`.
    fn data_batch(base: i64, pid: i64, txn: bool, values: &[&str]) -> Vec<u8> {
        let records: Vec<OutRecord> = values
            .iter()
            .map(|v| OutRecord::new("t").value(v.to_string()))
            .collect();
        stamp(
            encode_batch(&records, 1, Compression::None).unwrap(),
            base,
            pid,
            if txn { 0x10 } else { 0 },
        )
    }

    /// A transaction marker (control batch) of producer `pid` at `base`.
    fn marker(base: i64, pid: i64, abort: bool) -> Vec<u8> {
        // Key: version 0, type 0 (ABORT) or 1 (COMMIT); value: version 0,
        // coordinator epoch 0.
        let key = vec![0, 0, 0, u8::from(!abort)];
        let r = OutRecord::new("t").key(key).value(vec![0u8; 6]);
        stamp(
            encode_batch(&[r], 1, Compression::None).unwrap(),
            base,
            pid,
            0x30,
        )
    }

    /// Sets base offset, producer id and extra attribute bits, then the CRC.
    fn stamp(batch: Bytes, base: i64, pid: i64, attrs: i16) -> Vec<u8> {
        let mut v = batch.to_vec();
        v[..8].copy_from_slice(&base.to_be_bytes());
        let a = i16::from_be_bytes([v[21], v[22]]) | attrs;
        v[21..23].copy_from_slice(&a.to_be_bytes());
        v[43..51].copy_from_slice(&pid.to_be_bytes());
        let crc = crc32c::crc32c(&v[21..]);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        v
    }

    /// A log with committed, aborted and plain batches of three producers,
    /// interleaved, and the aborted-transaction list a broker sends for it.
    /// Kept values: their offsets are 0, 1, 5, 6, 9, 10, 15; it ends at 17.
    fn log() -> (Vec<u8>, Vec<(i64, i64)>) {
        let parts = [
            data_batch(0, 7, true, &["c0", "c1"]), // pid 7, committed at 2
            marker(2, 7, false),
            data_batch(3, 8, true, &["a3", "a4"]), // pid 8, aborted at 7
            data_batch(5, -1, false, &["p5"]),     // not transactional
            data_batch(6, 9, true, &["c6"]),       // pid 9, committed at 8
            marker(7, 8, true),
            marker(8, 9, false),
            data_batch(9, 8, true, &["c9", "c10"]), // pid 8 again, committed
            marker(11, 8, false),
            data_batch(12, 8, true, &["a12", "a13"]), // pid 8, aborted at 14
            marker(14, 8, true),
            data_batch(15, 10, false, &["i15"]), // idempotent, no transaction
            // pid 11, aborted, its marker beyond this reply: only the list tells.
            data_batch(16, 11, true, &["a16"]),
        ];
        (parts.concat(), vec![(8, 12), (11, 16), (8, 3)])
    }

    fn values(records: &[Record]) -> Vec<(i64, String)> {
        records
            .iter()
            .map(|r| {
                (
                    r.offset,
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn committed_only_drops_aborted_transactions_per_producer() {
        let (data, aborted) = log();
        let d = decode_records("t", 0, Bytes::from(data), 0);
        assert_eq!(d.batches.len(), 13);
        let (kept, next) = committed_only(
            d.records.clone(),
            d.next_offset,
            0,
            &d.batches,
            &aborted,
            17,
        );
        let want: Vec<(i64, String)> = [
            (0, "c0"),
            (1, "c1"),
            (5, "p5"),
            (6, "c6"),
            (9, "c9"),
            (10, "c10"),
            (15, "i15"),
        ]
        .iter()
        .map(|(o, v)| (*o, v.to_string()))
        .collect();
        assert_eq!(values(&kept), want);
        assert_eq!(next, 17);

        // Without the list (Tansu sends none), the ABORT markers in the
        // reply still drop what they abort.
        let (kept, _) = committed_only(d.records.clone(), d.next_offset, 0, &d.batches, &[], -1);
        assert_eq!(
            kept.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![0, 1, 5, 6, 9, 10, 15, 16]
        );
        // A reply cut before the markers: only the list can tell, and the
        // records are not held back.
        let cut: Vec<u8> = [
            data_batch(0, 7, true, &["c0", "c1"]),
            data_batch(2, 8, true, &["a2"]),
        ]
        .concat();
        let d2 = decode_records("t", 0, Bytes::from(cut), 0);
        let (kept, next) = committed_only(
            d2.records.clone(),
            d2.next_offset,
            0,
            &d2.batches,
            &[(8, 2)],
            -1,
        );
        assert_eq!(
            kept.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(next, 3);
        let (kept, _) = committed_only(d2.records.clone(), d2.next_offset, 0, &d2.batches, &[], -1);
        assert_eq!(kept.len(), 3);

        // The last stable offset caps both the records and the position,
        // never below where the fetch started.
        let (kept, next) =
            committed_only(d.records.clone(), d.next_offset, 0, &d.batches, &aborted, 9);
        assert_eq!(
            kept.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![0, 1, 5, 6]
        );
        assert_eq!(next, 9);
        let (kept, next) = committed_only(Vec::new(), 3, 3, &[], &[], 0);
        assert!(kept.is_empty());
        assert_eq!(next, 3);
    }

    /// A Fetch v4 reply for `t`-0: high watermark and LSO `end`, the
    /// aborted transactions, the record bytes.
    fn fetch_v4(end: i64, aborted: &[(i64, i64)], data: &[u8]) -> Vec<u8> {
        fetch_v4_ends(end, end, aborted, data)
    }

    /// [`fetch_v4`] with a high watermark `hw` and an LSO `lso` apart.
    fn fetch_v4_ends(hw: i64, lso: i64, aborted: &[(i64, i64)], data: &[u8]) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(&0i32.to_be_bytes()); // throttle
        w.extend_from_slice(&1i32.to_be_bytes());
        w.extend_from_slice(&1i16.to_be_bytes());
        w.push(b't');
        w.extend_from_slice(&1i32.to_be_bytes());
        w.extend_from_slice(&0i32.to_be_bytes()); // partition
        w.extend_from_slice(&0i16.to_be_bytes()); // error
        w.extend_from_slice(&hw.to_be_bytes()); // high watermark
        w.extend_from_slice(&lso.to_be_bytes()); // last stable offset
        w.extend_from_slice(&(aborted.len() as i32).to_be_bytes());
        for (pid, first) in aborted {
            w.extend_from_slice(&pid.to_be_bytes());
            w.extend_from_slice(&first.to_be_bytes());
        }
        w.extend_from_slice(&(data.len() as i32).to_be_bytes());
        w.extend_from_slice(data);
        w
    }

    fn fetch_from_fake(isolation: IsolationLevel) -> (Vec<Record>, Option<i64>, FakeBroker) {
        let (data, aborted) = log();
        let broker = FakeBroker::start(move |r, n| {
            // The first Fetch gets the log; later ones nothing new.
            (r.key == api::FETCH).then(|| {
                if n == 0 {
                    fetch_v4(17, &aborted, &data)
                } else {
                    fetch_v4(17, &[], &[])
                }
            })
        });
        let client = Client::bootstrap(KafkaConfig::new(broker.addr())).unwrap();
        let mut f = Fetcher::new(client, OffsetReset::Earliest, isolation);
        let tp = TopicPartition::new("t", 0);
        f.assign(std::slice::from_ref(&tp));
        f.set_position(&tp, 0);
        f.fetch_round(Duration::from_millis(10));
        let got = f.take(100);
        let pos = f.parts[&tp].position;
        (got, pos, broker)
    }

    #[test]
    fn read_committed_fetch_drops_what_the_broker_lists_as_aborted() {
        let (got, pos, broker) = fetch_from_fake(IsolationLevel::ReadCommitted);
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![0, 1, 5, 6, 9, 10, 15]
        );
        assert_eq!(pos, Some(17), "the position moves past aborted records");
        // Fetch v4 body: replica, max wait, min bytes, max bytes, isolation.
        let fetch = broker
            .seen()
            .into_iter()
            .find(|s| s.key == api::FETCH)
            .unwrap();
        assert_eq!(fetch.body[16], 1, "isolation_level sent");

        let (got, pos, broker) = fetch_from_fake(IsolationLevel::ReadUncommitted);
        assert_eq!(got.len(), 12, "every data record, markers skipped");
        assert_eq!(pos, Some(17));
        let fetch = broker
            .seen()
            .into_iter()
            .find(|s| s.key == api::FETCH)
            .unwrap();
        assert_eq!(fetch.body[16], 0);

        // The transport-wide floor turns read_committed on too.
        let (data, aborted) = log();
        let broker = FakeBroker::start(move |r, _| {
            (r.key == api::FETCH).then(|| fetch_v4(17, &aborted, &data))
        });
        let config = KafkaConfig::new(broker.addr()).isolation_level(IsolationLevel::ReadCommitted);
        let mut f = Fetcher::new(
            Client::bootstrap(config).unwrap(),
            OffsetReset::Earliest,
            IsolationLevel::ReadUncommitted,
        );
        let tp = TopicPartition::new("t", 0);
        f.assign(std::slice::from_ref(&tp));
        f.set_position(&tp, 0);
        f.fetch_round(Duration::from_millis(10));
        assert_eq!(f.take(100).len(), 7);
    }

    /// `progress` (for lag gauges): the next record `take` returns and the
    /// log end of the last reply, the LSO under read_committed.
    #[test]
    fn progress_reports_the_next_record_and_the_log_end() {
        for (isolation, end) in [
            (IsolationLevel::ReadUncommitted, 40),
            (IsolationLevel::ReadCommitted, 30),
        ] {
            let (data, _) = log();
            let broker = FakeBroker::start(move |r, _| {
                (r.key == api::FETCH).then(|| fetch_v4_ends(40, 30, &[], &data))
            });
            let client = Client::bootstrap(KafkaConfig::new(broker.addr())).unwrap();
            let mut f = Fetcher::new(client, OffsetReset::Earliest, isolation);
            let tp = TopicPartition::new("t", 0);
            f.assign(std::slice::from_ref(&tp));
            f.set_position(&tp, 0);
            let before = f.progress();
            assert_eq!((before[0].position, before[0].log_end), (Some(0), None));
            f.fetch_round(Duration::from_millis(10));
            assert_eq!(f.take(2).len(), 2);
            let next = f.progress();
            assert_eq!(next[0].partition, tp);
            assert_eq!(next[0].log_end, Some(end), "{isolation:?}");
            // Two returned, the rest buffered: the next one `take` returns.
            let third = f.take(1)[0].offset;
            assert!(third > 1);
            assert_eq!(next[0].position, Some(third), "{isolation:?}");
        }
    }

    fn rec(p: i32, offset: i64) -> Record {
        Record {
            topic: "t".into(),
            partition: p,
            offset,
            timestamp: 0,
            key: None,
            value: None,
            headers: Vec::new(),
        }
    }

    fn parts(sizes: &[(i32, i64, bool)]) -> BTreeMap<TopicPartition, PartState> {
        sizes
            .iter()
            .map(|&(p, n, paused)| {
                let state = PartState {
                    position: Some(n),
                    buffer: (0..n).map(|o| rec(p, o)).collect(),
                    paused,
                    ..Default::default()
                };
                (TopicPartition::new("t", p), state)
            })
            .collect()
    }

    /// The `fetch_offset` and `max_wait_ms` of a Fetch v4 for one topic of
    /// one letter and one partition.
    fn fetch_asked(body: &[u8]) -> (i64, i32) {
        let i32_at = |i: usize| i32::from_be_bytes(body[i..i + 4].try_into().unwrap());
        // replica, max_wait, min_bytes, max_bytes, isolation (1), topics
        // (4), name (2 + 1), partitions (4), partition (4), then the offset.
        let at = 4 + 4 + 4 + 4 + 1 + 4 + 3 + 4 + 4;
        (
            i64::from_be_bytes(body[at..at + 8].try_into().unwrap()),
            i32_at(4),
        )
    }

    /// A broker whose `t`-0 holds offsets 0..`end` and that answers each
    /// Fetch with the 10 records from the offset asked (fewer at the end).
    fn ten_at_a_time(end: i64) -> FakeBroker {
        FakeBroker::start(move |r, _| {
            (r.key == api::FETCH).then(|| {
                let (from, _) = fetch_asked(&r.body);
                let values: Vec<String> = (from..(from + 10).min(end))
                    .map(|o| format!("v{o}"))
                    .collect();
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                let data = if values.is_empty() {
                    Vec::new()
                } else {
                    data_batch(from, -1, false, &values)
                };
                fetch_v4(end, &[], &data)
            })
        })
    }

    /// Fetches seen by `broker`, as (offset, max_wait_ms), waiting up to
    /// 5 s for at least `n` (a Fetch sent ahead is not answered before
    /// the fake broker reads it).
    fn fetches(broker: &FakeBroker, n: usize) -> Vec<(i64, i32)> {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let seen: Vec<(i64, i32)> = broker
                .seen()
                .iter()
                .filter(|s| s.key == api::FETCH)
                .map(|s| fetch_asked(&s.body))
                .collect();
            if seen.len() >= n || Instant::now() > until {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn fetcher_at_0(config: KafkaConfig) -> (Fetcher, TopicPartition) {
        let client = Client::bootstrap(config).unwrap();
        let mut f = Fetcher::new(
            client,
            OffsetReset::Earliest,
            IsolationLevel::ReadUncommitted,
        );
        let tp = TopicPartition::new("t", 0);
        f.assign(std::slice::from_ref(&tp));
        f.set_position(&tp, 0);
        (f, tp)
    }

    /// [`fetcher_at_0`] after its first round, the 10 records of that reply
    /// all taken: the buffer is empty, the broker holds more.
    fn first_reply_taken(config: KafkaConfig) -> (Fetcher, TopicPartition) {
        let (mut f, tp) = fetcher_at_0(config);
        f.fetch_round(Duration::from_millis(10));
        assert_eq!(f.take(10).len(), 10);
        (f, tp)
    }

    #[test]
    fn fetch_ahead_asks_for_what_a_poll_emptied_before_the_caller_comes_back() {
        let broker = ten_at_a_time(40);
        let (mut f, _tp) = fetcher_at_0(KafkaConfig::new(broker.addr()));
        f.fetch_round(Duration::from_millis(10));
        // Records still buffered: nothing is sent ahead.
        assert_eq!(f.take(4).len(), 4);
        f.fetch_ahead();
        assert_eq!(f.take(6).len(), 6);
        // The buffer is empty now: the next Fetch asks from 10, without a
        // long poll, while the caller handles the records it took.
        f.fetch_ahead();
        assert_eq!(fetches(&broker, 2), vec![(0, 10), (10, 1)]);
        let mut got: Vec<i64> = (0..10).collect();
        loop {
            let r = f.take(4);
            if r.is_empty() {
                break;
            }
            got.extend(r.iter().map(|r| r.offset));
            f.fetch_ahead();
        }
        // Every record once, in order, across the replies read ahead.
        assert_eq!(got, (0..40).collect::<Vec<_>>());
        let seen = fetches(&broker, 4);
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![0, 10, 20, 30],
            "one Fetch per reply, each from where the last ended"
        );
        assert!(seen[1..].iter().all(|s| s.1 == 1), "{seen:?}");
        // At the log end (40) nothing is sent ahead: what arrives later
        // comes fresher with the next round's long poll.
        f.fetch_ahead();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(fetches(&broker, 0).len(), 4);
        assert!(f.take(4).is_empty());
    }

    #[test]
    fn a_reply_read_ahead_for_an_old_position_is_dropped() {
        let broker = ten_at_a_time(100);
        let (mut f, tp) = first_reply_taken(KafkaConfig::new(broker.addr()));
        f.fetch_ahead();
        assert_eq!(fetches(&broker, 2).len(), 2);
        // Moved elsewhere (a reset, a Reader's seek) while the reply to
        // offset 10 is on its way: that reply must not be buffered.
        f.set_position(&tp, 55);
        assert!(
            f.take(4).is_empty(),
            "the reply to the old position is dropped"
        );
        f.fetch_round(Duration::from_millis(10));
        let r = f.take(100);
        assert_eq!(r.first().map(|r| r.offset), Some(55));
        assert_eq!(r.len(), 10);
    }

    #[test]
    fn a_partition_with_records_buffered_gets_no_second_reply_ahead() {
        let broker = ten_at_a_time(1000);
        let (mut f, tp) = first_reply_taken(KafkaConfig::new(broker.addr()));
        f.fetch_ahead();
        assert_eq!(fetches(&broker, 2).len(), 2);
        // Paused while the reply is on its way: it is read (nothing else
        // is buffered) and kept.
        f.pause(std::slice::from_ref(&tp), true);
        assert!(f.take(4).is_empty());
        assert_eq!(f.parts[&tp].buffer.len(), 10);
        // Resumed with a reply buffered: nothing is sent ahead for it. A
        // partition paused and resumed (the engine does it whenever a
        // worker queue fills) would otherwise add a reply each time.
        f.pause(std::slice::from_ref(&tp), false);
        f.fetch_ahead();
        assert_eq!(f.take(4).len(), 4);
        f.fetch_ahead();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(fetches(&broker, 0).len(), 2);
        // Once its records are all out, the next goes ahead.
        assert_eq!(f.take(10).len(), 6);
        f.fetch_ahead();
        assert_eq!(fetches(&broker, 3)[2], (20, 1));
    }

    #[test]
    fn fetch_ahead_off_sends_nothing_early() {
        let broker = ten_at_a_time(40);
        let (mut f, _tp) = first_reply_taken(KafkaConfig::new(broker.addr()).fetch_ahead(false));
        f.fetch_ahead();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(fetches(&broker, 0), vec![(0, 10)]);
    }

    #[test]
    fn take_shares_fairly_and_keeps_order() {
        let mut m = parts(&[(0, 100, false), (1, 100, false), (2, 2, false)]);
        let got = take_fair(&mut m, 0, 10);
        assert_eq!(got.len(), 10);
        let count = |p| got.iter().filter(|r| r.partition == p).count();
        // Shares of 3, partition 2 only has 2; the rest tops up in turn.
        assert_eq!((count(0), count(1), count(2)), (5, 3, 2));
        // Per partition, offsets stay in order and continue where they left off.
        let next = take_fair(&mut m, 1, 200);
        for p in 0..2 {
            let offs: Vec<i64> = got
                .iter()
                .chain(&next)
                .filter(|r| r.partition == p)
                .map(|r| r.offset)
                .collect();
            assert_eq!(offs, (0..100).collect::<Vec<_>>());
        }
    }

    #[test]
    fn take_skips_paused_but_keeps_their_records() {
        let mut m = parts(&[(0, 5, true), (1, 5, false)]);
        let got = take_fair(&mut m, 0, 100);
        assert!(got.iter().all(|r| r.partition == 1));
        assert_eq!(got.len(), 5);
        assert!(take_fair(&mut m, 1, 100).is_empty());
        m.get_mut(&TopicPartition::new("t", 0)).unwrap().paused = false;
        let got = take_fair(&mut m, 2, 100);
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn take_rotates_the_first_partition() {
        let mut m = parts(&[(0, 10, false), (1, 10, false), (2, 10, false)]);
        let firsts: Vec<i32> = (0..3)
            .map(|turn| take_fair(&mut m, turn, 1)[0].partition)
            .collect();
        assert_eq!(firsts, vec![0, 1, 2]);
    }
}

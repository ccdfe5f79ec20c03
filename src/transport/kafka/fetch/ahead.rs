//! Fetching ahead: while replies bring records, a group consumer sends the
//! next Fetch for the partitions a poll emptied as it hands their records
//! out, and reads the replies once it runs short ([`Fetcher::take`]), so
//! the broker's round trip overlaps the caller's work
//! (`KafkaConfig::fetch_ahead`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;

use super::request::fetch_request;
use super::{Ahead, Fetcher};
use crate::record::TopicPartition;

/// The broker's wait for a Fetch sent ahead: the caller reads its reply
/// (blocking) once it runs short of records, so it must not be a long
/// poll. 1 ms, not 0: Tansu answers max_wait_ms = 0 with no partitions at
/// all.
const AHEAD_WAIT: Duration = Duration::from_millis(1);

impl Fetcher {
    /// Sends a Fetch to every leader whose last reply brought records, for
    /// its unpaused partitions whose buffers the caller just emptied, that
    /// have none on the way and whose log end is past their position, the
    /// broker waiting [`AHEAD_WAIT`] at most. As the Java client's
    /// `sendFetches` before it returns records: called by a group
    /// consumer's poll after it took records, so the round trip overlaps
    /// the caller's work; [`take`] reads the replies. Errors count as a
    /// failed round's would: the leader is left alone for a back-off.
    ///
    /// [`take`]: Fetcher::take
    pub(crate) fn fetch_ahead(&mut self) {
        if self.flowing.is_empty() || !self.client.config().fetch_ahead {
            return;
        }
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        for (tp, p) in &self.parts {
            let Some(pos) = p.position else { continue };
            // Only an emptied buffer: a partition then holds one reply and
            // has at most one more on the way, whatever its pauses do.
            if p.paused || !p.buffer.is_empty() || self.on_the_way.contains(tp) {
                continue;
            }
            // Caught up with the log end the last reply gave: a Fetch now
            // would bring only what arrives meanwhile, and sent early it
            // would bring it late (relay lateness on Tansu, p99 about 27
            // against 16 ms). Only a partition with records waiting is
            // fetched ahead.
            if p.log_end.is_none_or(|end| pos >= end) {
                continue;
            }
            // A partition without a known leader waits for the next round,
            // which refreshes the metadata.
            if let Ok(leader) = self.client.leader(&tp.topic, tp.partition) {
                if self.flowing.contains(&leader) {
                    by_leader.entry(leader).or_default().push((tp.clone(), pos));
                }
            }
        }
        let now = Instant::now();
        for (leader, list) in by_leader {
            if self.retry_at.get(&leader).is_some_and(|at| *at > now) {
                continue;
            }
            let timeout = AHEAD_WAIT + self.client.config().request_timeout;
            let Some(conn) = self.conns.get_mut(&leader) else {
                continue;
            };
            let sent = conn.version(ApiKey::Fetch).and_then(|version| {
                let req = fetch_request(
                    self.client.config(),
                    self.read_committed,
                    self.turn,
                    &list,
                    AHEAD_WAIT,
                );
                conn.send(version, &req, timeout)
            });
            match sent {
                Ok(sent) => {
                    self.on_the_way
                        .extend(list.iter().map(|(tp, _)| tp.clone()));
                    self.ahead.push((leader, Ahead { list, sent }));
                }
                Err(e) => {
                    let mut refresh = BTreeSet::new();
                    self.leader_failed(leader, &list, e, &mut refresh);
                    self.refresh(&refresh);
                    self.end_round(true);
                }
            }
        }
    }

    /// Reads the reply of every Fetch sent ahead, in the order they were
    /// sent (each connection answers in order), as a round would; true
    /// when records were buffered.
    pub(super) fn read_ahead(&mut self) -> bool {
        let mut resets = Vec::new();
        let mut refresh = BTreeSet::new();
        let mut got = false;
        let mut trouble = false;
        for (leader, ahead) in std::mem::take(&mut self.ahead) {
            for (tp, _) in &ahead.list {
                self.on_the_way.remove(tp);
            }
            // Gone with an earlier failure in this loop: its replies with it.
            let Some(conn) = self.conns.get_mut(&leader) else {
                continue;
            };
            match conn.receive(ahead.sent) {
                Ok(resp) => {
                    got |= self.absorb(leader, resp, &ahead.list, &mut resets, &mut refresh);
                }
                Err(e) => {
                    self.leader_failed(leader, &ahead.list, e, &mut refresh);
                    trouble = true;
                }
            }
        }
        self.after_round(&resets, &refresh);
        if trouble || !refresh.is_empty() {
            self.end_round(true);
        }
        got
    }
}

//! The replay ledger: a topic (`<dlt>-replayed`, one partition) with one
//! entry per dead letter ever selected for a replay, keyed by the dead
//! letter's coordinates (`<dlt>/<partition>/<offset>`), last entry wins.
//!
//! An entry is first written `pending` (with where the replayed copy will
//! go and the destination partition's end offset just before), then `done`
//! with the copy's offset. See `replay.rs` for why this order makes a
//! replay killed at any point replay nothing twice and miss nothing.
//!
//! Compaction is not needed for correctness: the ledger is read whole and
//! the last entry of a key wins, so extra `pending` entries are harmless.
//! The topic is created with the broker's default cleanup policy (the
//! transport's CreateTopics sends no topic configs); under time-based
//! retention an entry outlives its dead letter as long as the ledger's
//! retention is at least the dead-letter topic's (both default to the
//! broker's), since the entry is written after the dead letter. An
//! operator may set `cleanup.policy=compact` on it to keep it small.

use std::collections::{HashMap, HashSet};

use kafka_retry::transport::{Reader, Transport};
use kafka_retry::OutRecord;
use serde::{Deserialize, Serialize};

use crate::dead::scan;
use crate::error::{Failure, Result};

/// Whether the copy is known to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// About to be written (or written, not yet confirmed).
    Pending,
    /// Written at `offset`.
    Done,
    /// The dead letter left the topic (retention) before its pending
    /// replay could be finished.
    Gone,
}

/// One ledger entry (the record's value, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Pending, done or gone.
    pub state: State,
    /// The dead letter's origin coordinates, if it had them (duplicates).
    pub origin: Option<String>,
    /// Destination topic (origin, `--to`, or the parking topic).
    pub to: String,
    /// Destination partition.
    pub partition: i32,
    /// The destination partition's end offset before the copy was written:
    /// the copy, if written, is at or after it.
    pub from: i64,
    /// The copy's offset, once done.
    pub offset: Option<i64>,
    /// `retry.replay-count` of the copy.
    pub count: u32,
    /// Sent to the parking topic (over `--max-replays`).
    pub parked: bool,
    /// When this entry was written, ms since the epoch.
    pub at: i64,
}

/// The ledger as read at start, plus what this run adds.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Ledger topic.
    pub topic: String,
    /// Latest entry per dead letter.
    pub entries: HashMap<String, Entry>,
    /// Origin coordinates of every dead letter in the ledger.
    pub origins: HashSet<String>,
}

impl Ledger {
    /// Reads `topic` whole. A missing topic is an empty ledger, created
    /// (one partition) when `create`.
    pub fn load(
        transport: &dyn Transport,
        reader: &mut dyn Reader,
        topic: &str,
        create: bool,
    ) -> Result<Self> {
        let mut ledger = Ledger {
            topic: topic.to_string(),
            ..Ledger::default()
        };
        let exists = reader
            .partitions(topic)
            .map_err(|e| Failure::kafka(format!("looking up ledger topic {topic}"), e))?
            .is_some();
        if !exists {
            if create {
                transport
                    .create_topic(topic, 1, None)
                    .map_err(|e| Failure::kafka(format!("creating ledger topic {topic}"), e))?;
            }
            return Ok(ledger);
        }
        scan(reader, topic, |r| {
            let at = format!("{}/{}/{}", r.topic, r.partition, r.offset);
            let key = r
                .key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok())
                .ok_or_else(|| {
                    Failure::run(format!(
                        "ledger {at}: key is not a dead letter's coordinates"
                    ))
                })?
                .to_string();
            let entry: Entry = serde_json::from_slice(r.value.as_deref().unwrap_or_default())
                .map_err(|e| Failure::run(format!("ledger {at}: not a ledger entry: {e}")))?;
            ledger.insert(key, entry);
            Ok(())
        })?;
        Ok(ledger)
    }

    /// Records `entry` in memory (after it was written).
    pub fn insert(&mut self, key: String, entry: Entry) {
        if let Some(o) = &entry.origin {
            self.origins.insert(o.clone());
        }
        self.entries.insert(key, entry);
    }

    /// The ledger record for `entry`.
    pub fn record(&self, key: &str, entry: &Entry) -> OutRecord {
        let value = serde_json::to_vec(entry).unwrap_or_default();
        OutRecord::new(self.topic.clone())
            .partition(0)
            .key(key.to_string())
            .value(value)
    }
}

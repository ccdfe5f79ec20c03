//! Dead letters as the commands see them: every record of a topic, read
//! partition by partition without a group, with its retry headers decoded
//! leniently (a dead letter's headers can be broken: that may be why it
//! is there).

use std::time::Duration;

use kafka_retry::transport::Reader;
use kafka_retry::{Record, TopicPartition};

use crate::error::{Failure, Result};

/// Coordinates `topic/partition/offset` (topic names cannot hold `/`).
pub fn coords(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}/{offset}")
}

/// One dead letter and what its headers say.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The record as read from the dead-letter topic.
    pub record: Record,
    /// `retry.dead-reason`.
    pub dead_reason: Option<String>,
    /// `retry.reason`.
    pub reason: Option<String>,
    /// `retry.dead-lettered-at`, else the record's timestamp.
    pub dead_lettered_at: i64,
    /// `retry.origin-topic` / `-partition` / `-offset`, when all three read.
    pub origin: Option<(String, i32, i64)>,
    /// `retry.replay-count` (0 when absent).
    pub replay_count: u32,
    /// Headers that could not be read, in words.
    pub problems: Vec<String>,
}

fn text(r: &Record, name: &str, problems: &mut Vec<String>) -> Option<String> {
    let h = r.header(name)?;
    match h.value.as_deref().map(std::str::from_utf8) {
        Some(Ok(s)) => Some(s.to_string()),
        Some(Err(_)) => {
            problems.push(format!("{name} is not UTF-8"));
            None
        }
        None => {
            problems.push(format!("{name} is null"));
            None
        }
    }
}

fn number<T: std::str::FromStr>(r: &Record, name: &str, problems: &mut Vec<String>) -> Option<T> {
    let s = text(r, name, problems)?;
    match s.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            let shown: String = s.chars().take(40).collect();
            problems.push(format!("{name} is not a number: {shown:?}"));
            None
        }
    }
}

impl DeadLetter {
    /// Decodes `record`'s headers; never fails, problems are collected.
    pub fn new(record: Record) -> Self {
        let mut problems = Vec::new();
        let r = &record;
        let dead_reason = text(r, kafka_retry::DEAD_REASON, &mut problems);
        if dead_reason.is_none() && r.header(kafka_retry::DEAD_REASON).is_none() {
            problems.push(format!("missing header {}", kafka_retry::DEAD_REASON));
        }
        let reason = text(r, kafka_retry::REASON, &mut problems);
        let dead_lettered_at =
            number(r, kafka_retry::DEAD_LETTERED_AT, &mut problems).unwrap_or(r.timestamp);
        let topic = text(r, kafka_retry::ORIGIN_TOPIC, &mut problems).filter(|t| !t.is_empty());
        let partition = number::<i32>(r, kafka_retry::ORIGIN_PARTITION, &mut problems);
        let offset = number::<i64>(r, kafka_retry::ORIGIN_OFFSET, &mut problems);
        let origin = match (topic, partition, offset) {
            (Some(t), Some(p), Some(o)) if p >= 0 && o >= 0 => Some((t, p, o)),
            _ => {
                if !problems.iter().any(|p| p.contains("origin")) {
                    problems.push("origin coordinates missing or invalid".to_string());
                }
                None
            }
        };
        let replay_count = number(r, kafka_retry::REPLAY_COUNT, &mut problems).unwrap_or(0);
        DeadLetter {
            dead_reason,
            reason,
            dead_lettered_at,
            origin,
            replay_count,
            problems,
            record,
        }
    }

    /// This dead letter's own coordinates (the ledger's key).
    pub fn coords(&self) -> String {
        coords(
            &self.record.topic,
            self.record.partition,
            self.record.offset,
        )
    }

    /// The origin coordinates as one string, if known.
    pub fn origin_coords(&self) -> Option<String> {
        self.origin.as_ref().map(|(t, p, o)| coords(t, *p, *o))
    }

    /// The dead reason, `(none)` when missing.
    pub fn dead_reason_or_none(&self) -> &str {
        self.dead_reason.as_deref().unwrap_or("(none)")
    }

    /// The origin topic, `(unknown)` when missing.
    pub fn origin_topic_or_unknown(&self) -> &str {
        self.origin.as_ref().map_or("(unknown)", |o| o.0.as_str())
    }
}

/// How long one read waits for more records.
const READ_WAIT: Duration = Duration::from_millis(500);
/// Empty reads in a row, below the end the offsets gave, before the
/// partition counts as stuck.
const MAX_EMPTY_READS: u32 = 5;

/// Calls `each` for every record of `topic`, partition by partition in
/// offset order, from the log start to the end. [`Failure`] when the
/// topic does not exist.
pub fn scan(
    reader: &mut dyn Reader,
    topic: &str,
    mut each: impl FnMut(Record) -> Result<()>,
) -> Result<()> {
    let offsets = match reader.offsets(topic) {
        Ok(o) => o,
        Err(kafka_retry::Error::UnknownTopic(t)) => {
            return Err(Failure::run(format!("topic `{t}` does not exist")))
        }
        Err(e) => return Err(Failure::kafka(format!("reading offsets of {topic}"), e)),
    };
    for po in offsets {
        let tp = TopicPartition::new(topic, po.partition);
        scan_partition(reader, &tp, po.earliest, po.latest, &mut each)?;
    }
    Ok(())
}

/// [`scan`] for one partition from `from` on: at least up to `until` (the
/// end offset read before), and on until a read finds nothing more or a
/// record past `until` was written after the scan began.
///
/// Why not stop at `until`: Tansu 0.6 answers ListOffsets (latest) with a
/// high watermark that falls behind after multi-record batches (seen: 21
/// for a topic holding 83 records), so the end offset is only a lower
/// bound. And why not read until empty alone: a topic written to all the
/// time (a replay running) would never end; its records written after the
/// start are left out, as Kafka's own end offset would have.
pub fn scan_partition(
    reader: &mut dyn Reader,
    tp: &TopicPartition,
    from: i64,
    until: i64,
    each: &mut dyn FnMut(Record) -> Result<()>,
) -> Result<()> {
    let started = crate::time::now_ms();
    let mut pos = from;
    let mut empty = 0;
    loop {
        let records = reader
            .read(tp, pos, 500, READ_WAIT)
            .map_err(|e| Failure::kafka(format!("reading {tp} at offset {pos}"), e))?;
        let Some(last) = records.last().map(|r| r.offset) else {
            if pos >= until {
                return Ok(());
            }
            // A compacted or truncated tail can end below the high watermark.
            empty += 1;
            if empty >= MAX_EMPTY_READS {
                return Err(Failure::run(format!(
                    "reading {tp}: no record at offset {pos} although the log ends at {until}"
                )));
            }
            continue;
        };
        empty = 0;
        for r in records {
            if r.offset >= until && r.timestamp > started {
                return Ok(());
            }
            each(r)?;
        }
        pos = last + 1;
    }
}

//! `kafka-retry retry status`: what is parked on a retry topic and when it
//! falls due, from the topic's end offsets, the relay group's committed
//! offsets and the parked records' headers (no group joined).

use std::collections::BTreeMap;
use std::io::Write;

use kafka_retry::transport::Reader;
use kafka_retry::TopicPartition;
use serde_json::json;

use crate::args::StatusArgs;
use crate::dead::scan_partition;
use crate::error::{Failure, Result};
use crate::time::{bar, format_ms, format_span, now_ms, parse_duration};

/// Due-time buckets: (label, upper bound in ms from now).
const BUCKETS: [(&str, i64); 7] = [
    ("overdue", 0),
    ("< 10s", 10_000),
    ("< 1m", 60_000),
    ("< 10m", 600_000),
    ("< 1h", 3_600_000),
    ("< 1d", 86_400_000),
    ("later", i64::MAX),
];

/// One partition's numbers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionStatus {
    /// Partition.
    pub partition: i32,
    /// Log end (high watermark).
    pub end: i64,
    /// The relay's committed offset (`None`: never committed; it starts
    /// at the log start).
    pub committed: Option<i64>,
    /// Records from the committed offset (or the log start) to the end.
    pub parked: i64,
}

/// Writes the status of `retry_topic` as the relay group `relay_group`
/// sees it to `out`.
pub fn status(
    reader: &mut dyn Reader,
    retry_topic: &str,
    relay_group: &str,
    args: &StatusArgs,
    out: &mut dyn Write,
) -> Result<()> {
    let interval = parse_duration(&args.interval)
        .map_err(|e| Failure::usage(format!("--interval: {e}")))?
        .as_millis() as i64;
    let offsets = match reader.offsets(retry_topic) {
        Ok(o) => o,
        Err(kafka_retry::Error::UnknownTopic(t)) => {
            return Err(Failure::run(format!("retry topic `{t}` does not exist")))
        }
        Err(e) => {
            return Err(Failure::kafka(
                format!("reading offsets of {retry_topic}"),
                e,
            ))
        }
    };
    let committed: BTreeMap<i32, i64> =
        reader.committed(relay_group, retry_topic).map_err(|e| {
            Failure::kafka(
                format!("reading the committed offsets of group {relay_group}"),
                e,
            )
        })?;
    let now = now_ms();
    let mut parts = Vec::new();
    let mut dues: Vec<i64> = Vec::new();
    let mut oldest: Option<(i64, String)> = None;
    let mut unreadable = 0usize;
    for po in &offsets {
        let c = committed.get(&po.partition).copied();
        let start = c.unwrap_or(po.earliest).max(po.earliest);
        let tp = TopicPartition::new(retry_topic, po.partition);
        // Parked records are counted as read, and the end is the furthest
        // of the end offset and the last record read: Tansu's end offsets
        // lag behind multi-record batches (see `dead::scan_partition`).
        let mut end = po.latest;
        let mut read = 0i64;
        scan_partition(reader, &tp, start, po.latest, &mut |r| {
            end = end.max(r.offset + 1);
            read += 1;
            let num = |name: &str| -> Option<i64> {
                let v = r.header(name)?.value.as_deref()?;
                std::str::from_utf8(v).ok()?.trim().parse().ok()
            };
            let enq = num(kafka_retry::ENQUEUED_AT);
            let due = num(kafka_retry::DUE_AT).or(enq.map(|e| e + interval));
            match (due, enq) {
                (Some(d), Some(e)) => {
                    dues.push(d);
                    let first = num(kafka_retry::FIRST_RECEIVED_AT).unwrap_or(e);
                    if oldest.as_ref().is_none_or(|(t, _)| first < *t) {
                        oldest = Some((first, format!("{}/{}/{}", r.topic, r.partition, r.offset)));
                    }
                }
                _ => unreadable += 1,
            }
            Ok(())
        })?;
        parts.push(PartitionStatus {
            partition: po.partition,
            end,
            committed: c,
            parked: read,
        });
    }
    let mut hist = [0usize; BUCKETS.len()];
    for d in &dues {
        let ahead = d - now;
        let i = BUCKETS
            .iter()
            .position(|(_, hi)| ahead < *hi || *hi == i64::MAX)
            .unwrap_or(BUCKETS.len() - 1);
        hist[i] += 1;
    }
    let parked: i64 = parts.iter().map(|p| p.parked).sum();
    let most_overdue = dues.iter().min().copied().filter(|d| *d < now);

    if args.json {
        let v = json!({
            "retry_topic": retry_topic,
            "relay_group": relay_group,
            "parked": parked,
            "partitions": parts,
            "due": BUCKETS.iter().zip(hist).map(|((l, _), n)| json!({"bucket": l, "count": n})).collect::<Vec<_>>(),
            "oldest_first_received_at": oldest.as_ref().map(|o| format_ms(o.0)),
            "oldest_record": oldest.as_ref().map(|o| &o.1),
            "relay_lag_records": parked,
            "relay_lag_ms": most_overdue.map(|d| now - d),
            "unreadable_headers": unreadable,
        });
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "retry topic {retry_topic}, relay group {relay_group}: {parked} parked"
    )?;
    writeln!(out, "\npartition        end  committed     parked")?;
    for p in &parts {
        let c = p.committed.map_or("-".to_string(), |c| c.to_string());
        writeln!(
            out,
            "{:>9}  {:>9}  {:>9}  {:>9}",
            p.partition, p.end, c, p.parked
        )?;
    }
    writeln!(
        out,
        "\ndue (retry.due-at, else retry.enqueued-at + {}):",
        args.interval
    )?;
    let max = hist.iter().copied().max().unwrap_or(0);
    for ((label, _), n) in BUCKETS.iter().zip(hist) {
        writeln!(out, "  {label:>8}  {n:>7}  {}", bar(n, max, 40))?;
    }
    if let Some((t, at)) = &oldest {
        writeln!(
            out,
            "\noldest: {at}, first received {} ({} ago)",
            format_ms(*t),
            format_span(now - t)
        )?;
    }
    match most_overdue {
        Some(d) => writeln!(
            out,
            "relay lag: {parked} records; the most overdue is {} past due",
            format_span(now - d)
        )?,
        None => writeln!(out, "relay lag: {parked} records; none past due")?,
    }
    if unreadable > 0 {
        writeln!(
            out,
            "{unreadable} parked records without readable retry.enqueued-at"
        )?;
    }
    Ok(())
}

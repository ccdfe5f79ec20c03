//! `kafka-retry dlt replay`: dead letters back to their origin topic (or
//! `--to`), each exactly once, across crashes.
//!
//! # Why a killed replay replays nothing twice and misses nothing
//!
//! For each batch of selected dead letters, in this order:
//!
//! 1. read the end offset `E` of every destination partition;
//! 2. write a `pending` ledger entry per dead letter (destination topic,
//!    partition, `from = E`) and wait for the broker's acknowledgement;
//! 3. write the replayed copies (each carries `retry.replayed-from` = the
//!    dead letter's coordinates) and wait for the acknowledgements;
//! 4. write a `done` ledger entry per copy, with its offset.
//!
//! A dead letter with any ledger entry is never selected again. A run
//! first finishes the `pending` entries an earlier run left: it reads each
//! destination partition from `from` to its end and looks for a copy
//! carrying that dead letter's `retry.replayed-from`; found, it writes
//! `done`; not found, it sends the copy now (then `done`). So:
//!
//! - killed before 2 is acknowledged: no copy was sent (3 starts only
//!   after 2), and the next run selects the dead letter again;
//! - killed between 2 and 4: the copy is either in the log after `from`
//!   (it was written after `E` was read) and is found, or not and is sent
//!   once;
//! - killed after 4: done.
//!
//! A killed process may have requests on their way that the broker
//! appends after the next run started (seen on Tansu: a rerun started at
//! once missed three copies still landing and sent them again). So a run
//! that finds pending entries waits until `--settle` (150 s: the
//! producer's delivery timeout plus a request timeout) has passed since
//! the newest of them was written before it looks; a rerun later than
//! that does not wait. Two replays of the
//! same dead-letter topic running at the same time are not guarded
//! against: run one at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use kafka_retry::transport::{partition_for_key, Reader, Transport};
use kafka_retry::{Header, OutRecord, Record, TopicPartition};
use serde::Serialize;

use crate::args::ReplayArgs;
use crate::dead::{coords, scan, scan_partition, DeadLetter};
use crate::error::{Failure, Result};
use crate::filter::Filter;
use crate::ledger::{Entry, Ledger, State};
use crate::progress::{Progress, ProgressMode};
use crate::time::now_ms;

/// The engine's own headers, reset on a replayed copy (a fresh round).
const RESET: [&str; 14] = [
    kafka_retry::ORIGIN_TOPIC,
    kafka_retry::ORIGIN_PARTITION,
    kafka_retry::ORIGIN_OFFSET,
    kafka_retry::FIRST_RECEIVED_AT,
    kafka_retry::ENQUEUED_AT,
    kafka_retry::ATTEMPTS,
    kafka_retry::REASON,
    kafka_retry::DEAD_REASON,
    kafka_retry::DUE_AT,
    kafka_retry::DEAD_LETTERED_AT,
    kafka_retry::GROUP,
    kafka_retry::HELD,
    kafka_retry::REPLAYED_FROM,
    kafka_retry::REPLAY_COUNT,
];

/// Dead letters written per ledger round trip when no `--rate` slows it.
const BATCH: usize = 100;
/// Problems listed when a selection cannot be replayed.
const SHOWN: usize = 5;

/// One dead letter chosen for this run.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    /// The dead letter's coordinates.
    pub from: String,
    /// Its origin coordinates, if known.
    pub origin: Option<String>,
    /// Destination topic.
    pub to: String,
    /// Destination partition.
    pub partition: i32,
    /// `retry.replay-count` of the copy.
    pub count: u32,
    /// Goes to the parking topic.
    pub parked: bool,
    /// Key, UTF-8 (lossy), for the listing.
    pub key: Option<String>,
    /// `retry.dead-reason`.
    pub dead_reason: Option<String>,
    #[serde(skip)]
    record: Option<Record>,
}

/// What a replay did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Dead-letter topic.
    pub dlt: String,
    /// Ledger topic.
    pub ledger: String,
    /// Dead letters read.
    pub scanned: usize,
    /// Dead letters passing the filters.
    pub matched: usize,
    /// Of those, already in the ledger (replayed by an earlier run).
    pub already_replayed: usize,
    /// Of those, duplicates by origin coordinates of one replayed or selected.
    pub duplicates: usize,
    /// Left out by `--limit`.
    pub over_limit: usize,
    /// Selected for this run.
    pub selected: usize,
    /// Sent to their destination.
    pub replayed: usize,
    /// Sent to the parking topic.
    pub parked: usize,
    /// Pending entries of an earlier run whose copy was found written.
    pub recovered_found: usize,
    /// Pending entries of an earlier run whose copy was sent now.
    pub recovered_sent: usize,
    /// Pending entries whose dead letter is gone from the topic.
    pub recovered_gone: usize,
    /// `--dry-run`: nothing written.
    pub dry_run: bool,
    /// What was (or would be) sent, in order.
    pub records: Vec<Planned>,
}

/// Parses `--rate`: `100` or `100/s`.
fn parse_rate(s: &str) -> Result<f64> {
    let n = s.trim().strip_suffix("/s").unwrap_or(s.trim());
    match n.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(Failure::usage(format!(
            "--rate `{s}`: give records per second, like 100 or 100/s"
        ))),
    }
}

/// The copy of `d` for `p`.
fn copy(d: &Record, p: &Planned) -> OutRecord {
    let mut headers: Vec<Header> = if p.parked {
        // Parked: kept as they are for whoever looks, but one replayed-from.
        d.headers
            .iter()
            .filter(|h| &h.key[..] != kafka_retry::REPLAYED_FROM.as_bytes())
            .cloned()
            .collect()
    } else {
        d.headers
            .iter()
            .filter(|h| !RESET.iter().any(|n| &h.key[..] == n.as_bytes()))
            .cloned()
            .collect()
    };
    headers.push(Header::new(kafka_retry::REPLAYED_FROM, p.from.clone()));
    if !p.parked {
        headers.push(Header::new(kafka_retry::REPLAY_COUNT, p.count.to_string()));
    }
    OutRecord {
        topic: p.to.as_str().into(),
        partitioning: kafka_retry::Partitioning::Explicit(p.partition),
        key: d.key.clone(),
        value: d.value.clone(),
        headers,
        timestamp: None,
    }
}

struct Topics<'a> {
    reader: &'a mut dyn Reader,
    known: HashMap<String, Option<i32>>,
}

impl Topics<'_> {
    fn partitions(&mut self, t: &str) -> Result<Option<i32>> {
        if let Some(n) = self.known.get(t) {
            return Ok(*n);
        }
        let n = self
            .reader
            .partitions(t)
            .map_err(|e| Failure::kafka(format!("looking up topic {t}"), e))?;
        self.known.insert(t.to_string(), n);
        Ok(n)
    }
}

/// Replays the dead letters of `dlt` that `args` select. Output (the
/// dry-run listing, the counts) goes to `out`; progress per `progress`.
pub fn replay(
    transport: &dyn Transport,
    dlt: &str,
    args: &ReplayArgs,
    progress: ProgressMode,
    out: &mut dyn Write,
) -> Result<ReplayReport> {
    let filter = Filter::new(&args.filter, now_ms())?;
    let rate = args.rate.as_deref().map(parse_rate).transpose()?;
    let settle = crate::time::parse_duration(&args.settle)
        .map_err(|e| Failure::usage(format!("--settle: {e}")))?;
    let ledger_topic = args
        .ledger_topic
        .clone()
        .unwrap_or_else(|| format!("{dlt}-replayed"));
    let parking = args
        .parking_topic
        .clone()
        .unwrap_or_else(|| format!("{dlt}-parked"));
    for (flag, t) in [
        ("--to", args.to.as_deref()),
        ("--ledger-topic", Some(&ledger_topic)),
        ("--parking-topic", Some(&parking)),
    ] {
        if let Some(t) = t {
            if !legal_topic(t) || t == dlt {
                return Err(Failure::usage(format!(
                    "{flag} `{t}`: not a legal topic name (1-249 of [a-zA-Z0-9._-]) or the dead-letter topic itself"
                )));
            }
        }
    }
    let mut reader = transport
        .reader()
        .map_err(|e| Failure::kafka("opening a reader", e))?;
    let dlt_partitions = reader
        .partitions(dlt)
        .map_err(|e| Failure::kafka(format!("looking up {dlt}"), e))?
        .ok_or_else(|| Failure::run(format!("dead-letter topic `{dlt}` does not exist")))?;
    let mut ledger = Ledger::load(transport, &mut *reader, &ledger_topic, !args.dry_run)?;
    let mut report = ReplayReport {
        dlt: dlt.to_string(),
        ledger: ledger_topic.clone(),
        dry_run: args.dry_run,
        ..ReplayReport::default()
    };

    // Plan (reads only): what to send where. Bad input fails here, before
    // anything is written.
    let mut selected: Vec<Planned> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut seen_origins: HashSet<String> = HashSet::new();
    let mut letters: Vec<DeadLetter> = Vec::new();
    scan(&mut *reader, dlt, |r| {
        letters.push(DeadLetter::new(r));
        Ok(())
    })?;
    let mut topics = Topics {
        reader: &mut *reader,
        known: HashMap::new(),
    };
    if let Some(to) = &args.to {
        if topics.partitions(to)?.is_none() {
            return Err(Failure::run(format!("--to topic `{to}` does not exist")));
        }
    }
    for d in letters {
        report.scanned += 1;
        if !filter.matches(&d) {
            continue;
        }
        report.matched += 1;
        let key = d.coords();
        if ledger.entries.contains_key(&key) {
            report.already_replayed += 1;
            continue;
        }
        let origin = d.origin_coords();
        if let Some(o) = &origin {
            if ledger.origins.contains(o) || !seen_origins.insert(o.clone()) {
                report.duplicates += 1;
                continue;
            }
        }
        if filter.limit.is_some_and(|l| selected.len() >= l) {
            report.over_limit += 1;
            continue;
        }
        let parked = d.replay_count >= args.max_replays;
        let to = if parked {
            parking.clone()
        } else if let Some(t) = &args.to {
            t.clone()
        } else if let Some((t, _, _)) = &d.origin {
            t.clone()
        } else {
            problems.push(format!(
                "{key}: no origin topic to replay to ({}); use --to TOPIC",
                d.problems.join("; ")
            ));
            continue;
        };
        let partition = if parked {
            // Created below with the dead-letter topic's partition count.
            match topics.partitions(&to)? {
                Some(n) => d.record.partition % n,
                None => d.record.partition,
            }
        } else {
            let Some(n) = topics.partitions(&to)? else {
                problems.push(format!(
                    "{key}: origin topic `{to}` does not exist; use --to TOPIC"
                ));
                continue;
            };
            match (&d.origin, &d.record.key) {
                // Where it was first read: its key's partition whatever
                // partitioner the original producer used.
                (Some((t, p, _)), _) if *t == to && *p < n => *p,
                (_, Some(k)) => partition_for_key(k, n),
                _ => d.record.partition % n,
            }
        };
        selected.push(Planned {
            from: key,
            origin,
            to,
            partition,
            count: if parked {
                d.replay_count
            } else {
                d.replay_count + 1
            },
            parked,
            key: d
                .record
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            dead_reason: d.dead_reason.clone(),
            record: Some(d.record),
        });
    }
    if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(SHOWN).map(String::as_str).collect();
        return Err(Failure::run(format!(
            "{} selected dead letters cannot be replayed, so nothing was replayed: {}{}",
            problems.len(),
            shown.join("; "),
            if problems.len() > SHOWN { "; ..." } else { "" }
        )));
    }
    report.selected = selected.len();
    let pending: Vec<(String, Entry)> = ledger
        .entries
        .iter()
        .filter(|(_, e)| e.state == State::Pending)
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect();

    if args.dry_run {
        if !args.json {
            if !pending.is_empty() {
                writeln!(
                    out,
                    "{} replays of an earlier run are pending; a real run finishes them first",
                    pending.len()
                )?;
            }
            for p in &selected {
                writeln!(
                    out,
                    "would {} {} -> {}/{}  key={}  reason={}  origin={}  replay={}",
                    if p.parked { "park" } else { "replay" },
                    p.from,
                    p.to,
                    p.partition,
                    p.key.as_deref().unwrap_or("(null)"),
                    p.dead_reason.as_deref().unwrap_or("(none)"),
                    p.origin.as_deref().unwrap_or("(unknown)"),
                    p.count
                )?;
            }
        }
        report.replayed = selected.iter().filter(|p| !p.parked).count();
        report.parked = selected.len() - report.replayed;
        report.records = selected;
        return finish(report, args.json, out);
    }

    let producer = transport
        .producer()
        .map_err(|e| Failure::kafka("opening a producer", e))?;
    if let Some(last) = pending.iter().map(|(_, e)| e.at).max() {
        // A run killed moments ago may have requests still on their way
        // to the broker (sent, not yet appended); checking the destination
        // before they land would send those copies twice.
        let wait_ms = last + settle.as_millis() as i64 - now_ms();
        if wait_ms > 0 {
            if !args.json {
                writeln!(
                    out,
                    "{} replays of an interrupted run are pending; waiting {} (--settle) for its last writes to land",
                    pending.len(),
                    crate::time::format_span(wait_ms)
                )?;
            }
            std::thread::sleep(Duration::from_millis(wait_ms as u64));
        }
    }
    recover(
        &mut *reader,
        &*producer,
        dlt,
        &mut ledger,
        pending,
        &mut report,
    )?;

    if selected.iter().any(|p| p.parked)
        && reader
            .partitions(&parking)
            .map_err(|e| Failure::kafka(format!("looking up {parking}"), e))?
            .is_none()
    {
        transport
            .create_topic(&parking, dlt_partitions, None)
            .map_err(|e| Failure::kafka(format!("creating parking topic {parking}"), e))?;
    }

    let batch = match rate {
        Some(r) => ((r / 5.0) as usize).clamp(1, BATCH),
        None => BATCH,
    };
    let pause = std::env::var(TEST_PAUSE)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let mut bar = Progress::new(progress, selected.len() as u64);
    let start = Instant::now();
    let mut sent = 0usize;
    for chunk in selected.chunks_mut(batch) {
        if let Some(r) = rate {
            // Paced per batch: the batch starts when the records before it
            // are due at `rate`.
            let due = start + Duration::from_secs_f64(sent as f64 / r);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        // 1. destination end offsets.
        let mut ends: HashMap<String, BTreeMap<i32, i64>> = HashMap::new();
        for p in chunk.iter() {
            if !ends.contains_key(&p.to) {
                let offs = reader
                    .offsets(&p.to)
                    .map_err(|e| Failure::kafka(format!("reading offsets of {}", p.to), e))?;
                ends.insert(
                    p.to.clone(),
                    offs.iter().map(|o| (o.partition, o.latest)).collect(),
                );
            }
        }
        // 2. pending entries, acknowledged before any copy is sent.
        let entries: Vec<(String, Entry)> = chunk
            .iter()
            .map(|p| {
                let from = ends
                    .get(&p.to)
                    .and_then(|m| m.get(&p.partition))
                    .copied()
                    .unwrap_or(0);
                (
                    p.from.clone(),
                    Entry {
                        state: State::Pending,
                        origin: p.origin.clone(),
                        to: p.to.clone(),
                        partition: p.partition,
                        from,
                        offset: None,
                        count: p.count,
                        parked: p.parked,
                        at: now_ms(),
                    },
                )
            })
            .collect();
        write_entries(&*producer, &mut ledger, &entries)?;
        test_pause(pause);
        // 3. the copies.
        let copies: Vec<OutRecord> = chunk
            .iter()
            // Every planned record of this run carries its dead letter.
            .filter_map(|p| p.record.as_ref().map(|r| copy(r, p)))
            .collect();
        let results = producer.send_batch(copies);
        // 4. done entries for what was acknowledged.
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for ((p, r), (_, e)) in chunk.iter().zip(results).zip(&entries) {
            match r {
                Ok(d) => {
                    if p.parked {
                        report.parked += 1;
                    } else {
                        report.replayed += 1;
                    }
                    done.push((
                        p.from.clone(),
                        Entry {
                            state: State::Done,
                            offset: Some(d.offset),
                            partition: d.partition,
                            at: now_ms(),
                            ..e.clone()
                        },
                    ))
                }
                Err(err) => failed.push(format!("{} -> {}/{}: {err}", p.from, p.to, p.partition)),
            }
        }
        test_pause(pause);
        write_entries(&*producer, &mut ledger, &done)?;
        sent += done.len();
        bar.inc(done.len() as u64);
        if !failed.is_empty() {
            bar.finish();
            return Err(Failure::run(format!(
                "replay stopped after {sent} records: {} writes failed ({}); they are pending in ledger {}, and the next run sends those not written",
                failed.len(),
                failed.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; "),
                ledger.topic
            )));
        }
    }
    bar.finish();
    report.records = selected;
    finish(report, args.json, out)
}

/// Test hook (cli/tests/kafka.rs): sleep this many ms after the pending
/// entries and again after the copies are acknowledged, so a SIGKILL
/// lands inside a batch, between two ledger writes, most of the time.
/// Not an option: nothing but the tests has a reason to set it.
const TEST_PAUSE: &str = "KAFKA_RETRY_CLI_TEST_PAUSE_MS";

fn test_pause(pause: Option<Duration>) {
    if let Some(p) = pause {
        std::thread::sleep(p);
    }
}

/// Writes ledger entries, all acknowledged, or fails.
fn write_entries(
    producer: &dyn kafka_retry::transport::Producer,
    ledger: &mut Ledger,
    entries: &[(String, Entry)],
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let records = entries.iter().map(|(k, e)| ledger.record(k, e)).collect();
    for r in producer.send_batch(records) {
        r.map_err(|e| {
            Failure::kafka(
                format!(
                    "writing ledger {} (rerun to finish what is pending)",
                    ledger.topic
                ),
                e,
            )
        })?;
    }
    for (k, e) in entries {
        ledger.insert(k.clone(), e.clone());
    }
    Ok(())
}

/// Finishes the pending entries an earlier (killed) run left.
fn recover(
    reader: &mut dyn Reader,
    producer: &dyn kafka_retry::transport::Producer,
    dlt: &str,
    ledger: &mut Ledger,
    pending: Vec<(String, Entry)>,
    report: &mut ReplayReport,
) -> Result<()> {
    let mut by_tp: BTreeMap<(String, i32), Vec<(String, Entry)>> = BTreeMap::new();
    for (k, e) in pending {
        by_tp
            .entry((e.to.clone(), e.partition))
            .or_default()
            .push((k, e));
    }
    for ((topic, partition), list) in by_tp {
        let tp = TopicPartition::new(topic.clone(), partition);
        let from = list.iter().map(|(_, e)| e.from).min().unwrap_or(0);
        let end = reader
            .offsets(&topic)
            .map_err(|e| Failure::kafka(format!("reading offsets of {topic}"), e))?
            .iter()
            .find(|o| o.partition == partition)
            .map_or(0, |o| o.latest);
        let wanted: HashSet<&str> = list.iter().map(|(k, _)| k.as_str()).collect();
        let mut found: HashMap<String, i64> = HashMap::new();
        scan_partition(reader, &tp, from, end, &mut |r| {
            if let Some(v) = r
                .header(kafka_retry::REPLAYED_FROM)
                .and_then(|h| h.value.as_deref())
            {
                if let Ok(s) = std::str::from_utf8(v) {
                    if wanted.contains(s) {
                        found.entry(s.to_string()).or_insert(r.offset);
                    }
                }
            }
            Ok(())
        })?;
        let mut done = Vec::new();
        for (k, e) in list {
            if let Some(&offset) = found.get(&k) {
                report.recovered_found += 1;
                done.push((
                    k,
                    Entry {
                        state: State::Done,
                        offset: Some(offset),
                        at: now_ms(),
                        ..e
                    },
                ));
                continue;
            }
            // Not written: send it now, as planned then.
            let record = read_one(reader, dlt, &k)?;
            let Some(record) = record else {
                report.recovered_gone += 1;
                done.push((
                    k,
                    Entry {
                        state: State::Gone,
                        at: now_ms(),
                        ..e
                    },
                ));
                continue;
            };
            let p = Planned {
                from: k.clone(),
                origin: e.origin.clone(),
                to: e.to.clone(),
                partition: e.partition,
                count: e.count,
                parked: e.parked,
                key: None,
                dead_reason: None,
                record: None,
            };
            let d = producer.send(copy(&record, &p)).map_err(|err| {
                Failure::kafka(format!("finishing the pending replay of {k}"), err)
            })?;
            report.recovered_sent += 1;
            done.push((
                k,
                Entry {
                    state: State::Done,
                    offset: Some(d.offset),
                    at: now_ms(),
                    ..e
                },
            ));
        }
        write_entries(producer, ledger, &done)?;
    }
    Ok(())
}

/// The dead letter at coordinates `key` (`<dlt>/<p>/<o>`), `None` if gone.
fn read_one(reader: &mut dyn Reader, dlt: &str, key: &str) -> Result<Option<Record>> {
    let bad = || Failure::run(format!("ledger key `{key}` is not a dead letter of {dlt}"));
    let rest = key
        .strip_prefix(dlt)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(bad)?;
    let (p, o) = rest.split_once('/').ok_or_else(bad)?;
    let (p, o): (i32, i64) = (p.parse().map_err(|_| bad())?, o.parse().map_err(|_| bad())?);
    let tp = TopicPartition::new(dlt, p);
    let records = reader
        .read(&tp, o, 1, Duration::from_secs(2))
        .map_err(|e| Failure::kafka(format!("reading dead letter {}", coords(dlt, p, o)), e))?;
    Ok(records.into_iter().find(|r| r.offset == o))
}

fn finish(report: ReplayReport, json: bool, out: &mut dyn Write) -> Result<ReplayReport> {
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        )?;
        return Ok(report);
    }
    let r = &report;
    if r.recovered_found + r.recovered_sent + r.recovered_gone > 0 {
        writeln!(
            out,
            "finished {} pending replays of an earlier run: {} were written already, {} sent now, {} dead letters gone",
            r.recovered_found + r.recovered_sent + r.recovered_gone,
            r.recovered_found,
            r.recovered_sent,
            r.recovered_gone
        )?;
    }
    writeln!(
        out,
        "{}{} {}, parked {} (ledger {})",
        if r.dry_run { "dry run: " } else { "" },
        if r.dry_run {
            "would replay"
        } else {
            "replayed"
        },
        r.replayed,
        r.parked,
        r.ledger
    )?;
    writeln!(
        out,
        "read {} dead letters from {}: {} matched, {} already replayed, {} duplicates, {} over --limit",
        r.scanned, r.dlt, r.matched, r.already_replayed, r.duplicates, r.over_limit
    )?;
    Ok(report)
}

fn legal_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

//! `kafka-retry dlt summary`: what sits on a dead-letter topic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;

use kafka_retry::transport::Reader;
use serde_json::json;

use crate::args::SummaryArgs;
use crate::dead::{scan, DeadLetter};
use crate::error::Result;
use crate::filter::Filter;
use crate::time::{bar, format_ms, now_ms};

/// Buckets of the dead-lettered-at histogram.
const BUCKETS: usize = 10;
/// `retry.reason` texts shown.
const TOP_REASONS: usize = 5;

/// Reads `dlt` whole (no group, nothing committed) and writes the summary
/// to `out`.
pub fn summary(
    reader: &mut dyn Reader,
    dlt: &str,
    args: &SummaryArgs,
    out: &mut dyn Write,
) -> Result<()> {
    let filter = Filter::new(&args.filter, now_ms())?;
    let mut records = 0usize;
    let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut reasons: HashMap<String, usize> = HashMap::new();
    let mut origins: BTreeSet<String> = BTreeSet::new();
    let mut no_origin = 0usize;
    let mut unreadable = 0usize;
    let mut first_problem: Option<String> = None;
    let mut times: Vec<i64> = Vec::new();
    scan(reader, dlt, |r| {
        if filter.limit.is_some_and(|l| records >= l) {
            return Ok(());
        }
        let d = DeadLetter::new(r);
        if !filter.matches(&d) {
            return Ok(());
        }
        records += 1;
        *by.entry((
            d.origin_topic_or_unknown().to_string(),
            d.dead_reason_or_none().to_string(),
        ))
        .or_default() += 1;
        let text: String = d
            .reason
            .as_deref()
            .unwrap_or("(none)")
            .chars()
            .take(80)
            .collect();
        *reasons.entry(text).or_default() += 1;
        match d.origin_coords() {
            Some(c) => {
                origins.insert(c);
            }
            None => no_origin += 1,
        }
        if !d.problems.is_empty() {
            unreadable += 1;
            first_problem
                .get_or_insert_with(|| format!("{}: {}", d.coords(), d.problems.join("; ")));
        }
        times.push(d.dead_lettered_at);
        Ok(())
    })?;
    // Distinct records: by origin coordinates; those without are each their own.
    let distinct = origins.len() + no_origin;
    let mut top: Vec<(String, usize)> = reasons.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(TOP_REASONS);
    let (oldest, newest) = (times.iter().min().copied(), times.iter().max().copied());
    let hist = histogram(&times, oldest, newest);

    if args.json {
        let v = json!({
            "topic": dlt,
            "records": records,
            "distinct": distinct,
            "duplicates": records - distinct,
            "unreadable_headers": unreadable,
            "by_origin_topic_and_reason": by.iter().map(|((t, r), n)| json!({"origin_topic": t, "dead_reason": r, "count": n})).collect::<Vec<_>>(),
            "top_reasons": top.iter().map(|(r, n)| json!({"reason": r, "count": n})).collect::<Vec<_>>(),
            "oldest": oldest.map(format_ms),
            "newest": newest.map(format_ms),
            "oldest_ms": oldest,
            "newest_ms": newest,
            "histogram": hist.iter().map(|(from, to, n)| json!({"from": format_ms(*from), "to": format_ms(*to), "count": n})).collect::<Vec<_>>(),
        });
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        )?;
        return Ok(());
    }

    writeln!(out, "dead-letter topic {dlt}: {records} records, {distinct} distinct by origin (topic, partition, offset)")?;
    if records == 0 {
        return Ok(());
    }
    let reason_cols: BTreeSet<&str> = by.keys().map(|(_, r)| r.as_str()).collect();
    let topics: BTreeSet<&str> = by.keys().map(|(t, _)| t.as_str()).collect();
    let w = topics
        .iter()
        .map(|t| t.len())
        .max()
        .unwrap_or(0)
        .max("origin topic".len());
    write!(out, "\n{:<w$}", "origin topic")?;
    for r in &reason_cols {
        write!(out, "  {:>9}", r)?;
    }
    writeln!(out, "  {:>9}", "total")?;
    for t in &topics {
        write!(out, "{:<w$}", t)?;
        let mut total = 0;
        for r in &reason_cols {
            let n = by
                .get(&(t.to_string(), r.to_string()))
                .copied()
                .unwrap_or(0);
            total += n;
            write!(out, "  {:>9}", n)?;
        }
        writeln!(out, "  {:>9}", total)?;
    }
    writeln!(out, "\ntop reasons:")?;
    for (r, n) in &top {
        writeln!(out, "  {n:>7}  {r}")?;
    }
    if let (Some(o), Some(n)) = (oldest, newest) {
        writeln!(out, "\noldest {}  newest {}", format_ms(o), format_ms(n))?;
    }
    writeln!(out, "dead-lettered at:")?;
    let max = hist.iter().map(|h| h.2).max().unwrap_or(0);
    for (from, _, n) in &hist {
        writeln!(
            out,
            "  {}  {:>7}  {}",
            format_ms(*from),
            n,
            bar(*n, max, 40)
        )?;
    }
    if unreadable > 0 {
        writeln!(
            out,
            "\n{unreadable} records with unreadable retry headers (first: {})",
            first_problem.unwrap_or_default()
        )?;
    }
    Ok(())
}

/// `BUCKETS` equal spans from `oldest` to `newest`: (from, to, count).
fn histogram(times: &[i64], oldest: Option<i64>, newest: Option<i64>) -> Vec<(i64, i64, usize)> {
    let (Some(lo), Some(hi)) = (oldest, newest) else {
        return Vec::new();
    };
    let span = ((hi - lo) / BUCKETS as i64 + 1).max(1);
    let n = (((hi - lo) / span) as usize + 1).min(BUCKETS);
    let mut counts = vec![0usize; n];
    for t in times {
        let i = (((t - lo) / span) as usize).min(n - 1);
        counts[i] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| (lo + i as i64 * span, lo + (i as i64 + 1) * span, c))
        .collect()
}

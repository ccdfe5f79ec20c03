//! `--reason`, `--origin-topic`, `--key`/`--key-regex`, `--since`/`--until`,
//! checked once before anything is read.

use regex::Regex;

use crate::args::FilterArgs;
use crate::dead::DeadLetter;
use crate::error::{Failure, Result};
use crate::time::parse_time;

/// The dead reasons of the header contract.
const REASONS: [&str; 4] = ["expired", "attempts", "rejected", "malformed"];

/// A checked filter.
#[derive(Debug, Default)]
pub struct Filter {
    reasons: Vec<String>,
    origin_topics: Vec<String>,
    key: Option<String>,
    key_regex: Option<Regex>,
    since: Option<i64>,
    until: Option<i64>,
    /// `--limit`.
    pub limit: Option<usize>,
}

impl Filter {
    /// Checks every argument; a bad one is a usage [`Failure`] naming it.
    pub fn new(args: &FilterArgs, now: i64) -> Result<Self> {
        for r in &args.reason {
            if !REASONS.contains(&r.as_str()) {
                return Err(Failure::usage(format!(
                    "--reason `{r}`: not a dead reason (one of {})",
                    REASONS.join(", ")
                )));
            }
        }
        let key_regex = match &args.key_regex {
            // Anchored: "the whole key matches", as --key is exact.
            Some(re) => Some(
                Regex::new(&format!("^(?:{re})$"))
                    .map_err(|e| Failure::usage(format!("--key-regex `{re}`: {e}")))?,
            ),
            None => None,
        };
        let since = args
            .since
            .as_deref()
            .map(|s| parse_time("--since", s, now))
            .transpose()?;
        let until = args
            .until
            .as_deref()
            .map(|s| parse_time("--until", s, now))
            .transpose()?;
        if let (Some(s), Some(u)) = (since, until) {
            if s >= u {
                return Err(Failure::usage(format!(
                    "--since {} is not before --until {}",
                    crate::time::format_ms(s),
                    crate::time::format_ms(u)
                )));
            }
        }
        if args.limit == Some(0) {
            return Err(Failure::usage("--limit must be at least 1"));
        }
        Ok(Filter {
            reasons: args.reason.clone(),
            origin_topics: args.origin_topic.clone(),
            key: args.key.clone(),
            key_regex,
            since,
            until,
            limit: args.limit,
        })
    }

    /// Whether `d` passes every filter given (`--limit` aside).
    pub fn matches(&self, d: &DeadLetter) -> bool {
        if !self.reasons.is_empty()
            && !self
                .reasons
                .iter()
                .any(|r| Some(r.as_str()) == d.dead_reason.as_deref())
        {
            return false;
        }
        if !self.origin_topics.is_empty()
            && !self
                .origin_topics
                .iter()
                .any(|t| Some(t.as_str()) == d.origin.as_ref().map(|o| o.0.as_str()))
        {
            return false;
        }
        let key = d
            .record
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok());
        if let Some(k) = &self.key {
            if key != Some(k.as_str()) {
                return false;
            }
        }
        if let Some(re) = &self.key_regex {
            if !key.is_some_and(|k| re.is_match(k)) {
                return false;
            }
        }
        if self.since.is_some_and(|s| d.dead_lettered_at < s) {
            return false;
        }
        if self.until.is_some_and(|u| d.dead_lettered_at >= u) {
            return false;
        }
        true
    }
}

//! Retries: parking failed records with back-off and releasing them when
//! due, after a metadata refresh where the error calls for one.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::state::{Item, Meta, Parked, SenderState, Tp};
use crate::error::Error;
use crate::record::OutRecord;
use crate::transport::kafka::client::TopicState;
use crate::transport::kafka::errors::{clone_error, is_retriable_code, needs_metadata_refresh};

impl<'a> SenderState<'a> {
    /// Retriable errors (leader moves, timeouts, dropped connections) park
    /// the records for a retry unless they are out of retries or time; the
    /// rest are answered with `e`.
    pub(super) fn fail_or_retry(
        &mut self,
        tp: &Tp,
        records: Vec<OutRecord>,
        metas: Vec<Meta>,
        e: Error,
    ) {
        let retriable = match &e {
            Error::Kafka { code, .. } => is_retriable_code(*code),
            Error::Io { .. } | Error::Timeout(_) => true,
            _ => false,
        };
        if !retriable {
            self.fail_all(metas, &e);
            return;
        }
        let mut answers = Vec::new();
        let refresh = match &e {
            Error::Kafka { code, .. } => needs_metadata_refresh(*code),
            _ => true,
        };
        let config = self.config;
        let now = Instant::now();
        let mut parked = 0;
        for (record, mut meta) in records.into_iter().zip(metas) {
            meta.failures += 1;
            let spent = meta.arrived.elapsed();
            if meta.failures > config.max_retries || spent >= config.delivery_timeout {
                answers.push((meta.reply, Err(clone_error(&e))));
                continue;
            }
            // Exponential back-off up to 1 s (as KIP-580): a broker that is
            // failing over (KRaft fences it after ~9 s) is outlasted by the
            // default retries instead of failing fast.
            let backoff = config
                .retry_backoff
                .saturating_mul(1 << (meta.failures - 1).min(10))
                .min(config.retry_backoff.max(Duration::from_secs(1)))
                .min(config.delivery_timeout.saturating_sub(spent));
            self.waiting.push((now + backoff, Item { record, meta }));
            parked += 1;
        }
        if parked > 0 {
            log::debug!(
                "kafka: {e}; retrying {parked} record(s) of {}-{}",
                tp.0,
                tp.1
            );
            *self
                .blocked
                .entry(tp.0.clone())
                .or_default()
                .entry(tp.1)
                .or_default() += parked;
            if refresh {
                self.stale.insert(tp.0.clone());
            }
        }
        self.answer(answers);
    }

    /// Moves parked records whose back-off has passed to the front of the
    /// backlog, after a metadata refresh of their topics where needed; a
    /// topic the broker now says is gone fails with UnknownTopic instead of
    /// burning the retries.
    pub(super) fn release_due(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let now = Instant::now();
        if !self.waiting.iter().any(|(due, _)| *due <= now) {
            return;
        }
        let (due, later): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(due, _)| *due <= now);
        self.waiting = later;
        let mut topics: Vec<String> = due
            .iter()
            .map(|(_, i)| &i.record.topic)
            .filter(|t| self.stale.contains(*t))
            .cloned()
            .collect::<HashSet<String>>()
            .into_iter()
            .collect();
        topics.sort();
        let states = if topics.is_empty() {
            HashMap::new()
        } else {
            for t in &topics {
                self.stale.remove(t);
            }
            // One attempt: the parking is the retry loop.
            self.inner
                .client
                .fetch_metadata_once(&topics)
                .unwrap_or_default()
        };
        let mut answers = Vec::new();
        let mut ready = Vec::new();
        for (_, item) in due {
            let topic = &item.record.topic;
            if let Some(ps) = self.blocked.get_mut(topic) {
                if let Some(n) = ps.get_mut(&item.meta.partition) {
                    *n -= 1;
                    if *n == 0 {
                        ps.remove(&item.meta.partition);
                    }
                }
                if ps.is_empty() {
                    self.blocked.remove(topic);
                }
            }
            if states.get(topic) == Some(&TopicState::Missing) {
                answers.push((item.meta.reply, Err(Error::UnknownTopic(topic.clone()))));
            } else {
                ready.push(item);
            }
        }
        for item in ready.into_iter().rev() {
            self.backlog_bytes += item.meta.size;
            self.backlog.push_front(item);
        }
        self.answer(answers);
    }
}

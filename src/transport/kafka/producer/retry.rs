//! Retries: parking failed records with back-off and releasing them when
//! due, after a metadata refresh where the error calls for one.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::state::{Item, Meta, Parked, SenderState, Tp};
use crate::error::Error;
use crate::record::OutRecord;
use crate::transport::kafka::client::TopicState;
use crate::transport::kafka::retry::{classify, Action as Class};

/// What the producer does with records whose write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Answer them with the error.
    Fail,
    /// Park them for a retry with back-off, while `max_retries` and
    /// `delivery_timeout` allow.
    Retry {
        /// Refresh their topic's metadata before the retry (the leader may
        /// have moved).
        refresh_metadata: bool,
        /// When the error broke a connection that had requests in flight:
        /// resend each record once, at once, on a new connection, without
        /// counting a failure (an idle connection the broker closed fails
        /// this way).
        resend_at_once: bool,
    },
}

/// The producer's one decision on an error: every failed write of a record
/// the sender thread holds goes through here (`fail_or_retry`, and
/// `SenderState::connection_failed` for `resend_at_once`).
///
/// It applies the client's one classification ([`classify`], shared with
/// the group and admin paths) to a batch of records:
/// - `Retry` (a retriable code whose metadata is still good): park and
///   retry on the same leader;
/// - `Rediscover` (the leader or coordinator moved, a timeout code):
///   refresh the topic's metadata first;
/// - `Reconnect` (I/O errors, timeouts): refresh too, and an I/O error on a
///   connection with requests in flight resends them at once on a new one
///   (an idle connection the broker closed fails this way);
/// - `Rejoin` and `Fail`: answer the records with the error (group codes
///   mean nothing to a Produce).
///
/// Two failures are answered without asking: a record whose partition
/// cannot be found (`SenderState::intake_one`, before the thread holds it)
/// and a batch that cannot be encoded (it never will be).
pub(super) fn on_error(e: &Error) -> Action {
    match classify(e) {
        Class::Retry => Action::Retry {
            refresh_metadata: false,
            resend_at_once: false,
        },
        Class::Rediscover => Action::Retry {
            refresh_metadata: true,
            resend_at_once: false,
        },
        Class::Reconnect => Action::Retry {
            refresh_metadata: true,
            resend_at_once: matches!(e, Error::Io { .. }),
        },
        Class::Rejoin | Class::Fail => Action::Fail,
    }
}

impl<'a> SenderState<'a> {
    /// What [`on_error`] says: park the records for a retry (leader moves,
    /// timeouts, dropped connections) unless they are out of retries or
    /// time, or answer them with `e`.
    pub(super) fn fail_or_retry(
        &mut self,
        tp: &Tp,
        records: Vec<OutRecord>,
        metas: Vec<Meta>,
        e: Error,
    ) {
        let refresh = match on_error(&e) {
            Action::Fail => {
                self.fail_sent(&metas);
                self.fail_all(metas, &e);
                return;
            }
            Action::Retry {
                refresh_metadata, ..
            } => refresh_metadata,
        };
        self.park(tp, records, metas, e, refresh);
    }

    /// Idempotent producer: a batch that was numbered and sent fails for
    /// good. The broker may or may not have it, so later batches of its
    /// partition would meet a gap: take a new producer id (Java bumps the
    /// epoch and resets the partition's sequence).
    fn fail_sent(&mut self, metas: &[Meta]) {
        if let Some(idem) = self.idem.as_mut() {
            if metas.iter().any(|m| idem.current(m.seq)) {
                idem.reset_due = true;
            }
        }
    }

    /// Parks the records for a retry with back-off; those out of retries
    /// or time are answered with `e` (a numbered batch of the idempotent
    /// producer as a whole: it is resent whole or not at all).
    pub(super) fn park(
        &mut self,
        tp: &Tp,
        records: Vec<OutRecord>,
        metas: Vec<Meta>,
        e: Error,
        refresh: bool,
    ) {
        let mut answers = Vec::new();
        let config = self.config;
        let now = Instant::now();
        let mut parked = 0;
        let spent = |m: &Meta| m.arrived.elapsed();
        let numbered = self
            .idem
            .as_ref()
            .is_some_and(|i| metas.iter().any(|m| i.current(m.seq)));
        if numbered
            && metas
                .iter()
                .any(|m| m.failures + 1 > config.max_retries || spent(m) >= config.delivery_timeout)
        {
            self.fail_sent(&metas);
            self.fail_all(metas, &e);
            return;
        }
        for (record, mut meta) in records.into_iter().zip(metas) {
            meta.failures += 1;
            let spent = spent(&meta);
            if meta.failures > config.max_retries || spent >= config.delivery_timeout {
                self.fail_sent(std::slice::from_ref(&meta));
                answers.push((meta.reply, Err(e.clone())));
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
            .map(|(_, i)| i.record.topic.as_str())
            .filter(|t| self.stale.contains(*t))
            .map(String::from)
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
            let topic = item.record.topic.as_str();
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
                answers.push((item.meta.reply, Err(Error::UnknownTopic(topic.to_string()))));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::KafkaCode;

    fn retry(refresh_metadata: bool, resend_at_once: bool) -> Action {
        Action::Retry {
            refresh_metadata,
            resend_at_once,
        }
    }

    #[test]
    fn on_error_applies_the_client_classification() {
        let io = Error::io("read", std::io::Error::other("reset"));
        assert_eq!(on_error(&io), retry(true, true));
        assert_eq!(
            on_error(&Error::Timeout("reply".into())),
            retry(true, false)
        );
        // NOT_LEADER_OR_FOLLOWER: retry after a metadata refresh.
        assert_eq!(
            on_error(&Error::kafka(
                "Produce t-0",
                KafkaCode::NOT_LEADER_OR_FOLLOWER
            )),
            retry(true, false)
        );
        // REQUEST_TIMED_OUT: the broker may be failing over; refresh.
        assert_eq!(
            on_error(&Error::kafka("Produce t-0", KafkaCode::REQUEST_TIMED_OUT)),
            retry(true, false)
        );
        // A retriable code with good metadata (NOT_ENOUGH_REPLICAS, 19):
        // retry on the same leader.
        assert_eq!(
            on_error(&Error::kafka("Produce t-0", KafkaCode::from(19))),
            retry(false, false)
        );
        // A group code means nothing to a Produce: fail.
        assert_eq!(
            on_error(&Error::kafka("Produce t-0", KafkaCode::from(27))),
            Action::Fail
        );
        // MESSAGE_TOO_LARGE: not retriable.
        assert_eq!(
            on_error(&Error::kafka("Produce t-0", KafkaCode::from(10))),
            Action::Fail
        );
        assert_eq!(on_error(&Error::Protocol("bad reply".into())), Action::Fail);
        assert_eq!(on_error(&Error::UnknownTopic("t".into())), Action::Fail);
    }
}

//! The Kafka client's one retry mechanism: [`classify`] says what an error
//! calls for, [`Retry::run`] applies it with one budget and one back-off.
//!
//! Every request path of the client goes through here (metadata, topic
//! creation, pooled connections, the group's join / sync / offsets / leave);
//! none writes its own loop. The two periodic loops (the heartbeat thread
//! and the fetch rounds) are schedules, not retries of one call: they use
//! [`classify`] and [`Backoff`] for their failures.
//!
//! A path hands [`Retry::run`] two closures over its own state `S`:
//! `attempt`, which sends the request once, and `on_error`, which applies the
//! remedy for an error (drop the connection, forget the coordinator, clear
//! the member id) and returns the [`Action`], normally `classify(e)`,
//! narrowed where the path knows better (a commit cannot rejoin, so for it
//! `Rejoin` is `Fail`). `on_error` runs for every failure, even the last, so
//! the next call starts from a repaired state.

use std::thread;
use std::time::{Duration, Instant};

use super::config::KafkaConfig;
use super::errors::needs_metadata_refresh;
use crate::error::{Error, KafkaCode, Result};

/// What an error calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Back off, then send the same request to the same broker
    /// (COORDINATOR_LOAD_IN_PROGRESS, NOT_ENOUGH_REPLICAS, NOT_CONTROLLER,
    /// any other code Kafka marks retriable).
    Retry,
    /// The connection broke or timed out (I/O error, [`Error::Timeout`]):
    /// drop it and retry on a new one.
    Reconnect,
    /// The request reached a broker that no longer serves it: the leader
    /// moved (refresh metadata) or the coordinator did (FindCoordinator
    /// again); then retry. REQUEST_TIMED_OUT is here too: Kafka passes an
    /// append timeout on `__consumer_offsets` through as is, and Java
    /// retries it on a rediscovered coordinator.
    Rediscover,
    /// The group membership is stale (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
    /// REBALANCE_IN_PROGRESS, MEMBER_ID_REQUIRED, [`Error::Rebalance`]):
    /// join the group again. Only a join can act on it; other paths fail.
    Rejoin,
    /// Retrying cannot help.
    Fail,
}

/// What `e` calls for (see [`Action`]). The one place that decides which
/// errors are worth another attempt.
pub(crate) fn classify(e: &Error) -> Action {
    match e {
        Error::Io { .. } | Error::Timeout(_) => Action::Reconnect,
        Error::Rebalance(_) => Action::Rejoin,
        Error::Kafka { code, .. } => classify_code(*code),
        Error::Config { .. }
        | Error::Protocol(_)
        | Error::UnknownTopic(_)
        | Error::Closed
        | Error::Thread(_)
        | Error::Shutdown(_)
        | Error::Auth { .. }
        | Error::Tls { .. } => Action::Fail,
    }
}

/// What a Kafka error code calls for (see [`Action`]).
pub(crate) fn classify_code(code: KafkaCode) -> Action {
    match code {
        c if c.is_rejoin() => Action::Rejoin,
        KafkaCode::COORDINATOR_NOT_AVAILABLE
        | KafkaCode::NOT_COORDINATOR
        | KafkaCode::REQUEST_TIMED_OUT => Action::Rediscover,
        c if needs_metadata_refresh(c) => Action::Rediscover,
        c if c.is_retriable() => Action::Retry,
        _ => Action::Fail,
    }
}

/// Exponential back-off: `base` doubled per consecutive failure, at most
/// `cap` (as Java's `retry.backoff.ms` / `retry.backoff.max.ms`, KIP-580).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// The client's: from `retry_backoff`, capped at 1 s (or `retry_backoff`
    /// if that is longer), so a broker failing over (KRaft fences it after
    /// ~9 s) is outlasted by the default retries.
    pub(crate) fn new(config: &KafkaConfig) -> Backoff {
        Backoff::between(
            config.retry_backoff,
            config.retry_backoff.max(Duration::from_secs(1)),
        )
    }

    /// From `base` up to `cap` (`cap` below `base` is `base`).
    pub(crate) fn between(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
        }
    }

    /// The wait after `failures` consecutive failures (1 = the first):
    /// `base * 2^(failures - 1)`, at most the cap.
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }
}

/// A retry budget: how many retries, how long to wait between them, and
/// optionally a deadline after which no retry starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    retries: u32,
    backoff: Backoff,
    deadline: Option<Instant>,
}

impl Retry {
    /// `max_retries` retries with the client's [`Backoff`], no deadline.
    pub(crate) fn new(config: &KafkaConfig) -> Retry {
        Retry {
            retries: config.max_retries,
            backoff: Backoff::new(config),
            deadline: None,
        }
    }

    /// At most `retries` retries after the first attempt.
    pub(crate) fn retries(mut self, retries: u32) -> Retry {
        self.retries = retries;
        self
    }

    /// Another back-off.
    pub(crate) fn backoff(mut self, backoff: Backoff) -> Retry {
        self.backoff = backoff;
        self
    }

    /// No retry starts, and no back-off sleeps, past `deadline`.
    pub(crate) fn deadline(mut self, deadline: Instant) -> Retry {
        self.deadline = Some(deadline);
        self
    }

    /// How long to wait before retry number `failures` (1 = the first) for
    /// `action`. A rejoin goes at once (the broker parks the JoinGroup
    /// anyway, as Java does), and so does the first reconnect: a pooled
    /// connection the broker closed while idle (`connections.max.idle.ms`)
    /// is routine, not an outage.
    fn pause(&self, action: Action, failures: u32, reconnects: u32) -> Duration {
        match action {
            Action::Rejoin => Duration::ZERO,
            Action::Reconnect if reconnects == 1 => Duration::ZERO,
            _ => self.backoff.delay(failures),
        }
    }

    /// Runs `attempt` until it succeeds, `on_error` says [`Action::Fail`],
    /// the retries are spent or the deadline would pass; then returns the
    /// last error. `what` names the request in log lines.
    pub(crate) fn run<S, T>(
        &self,
        what: &str,
        state: &mut S,
        mut attempt: impl FnMut(&mut S) -> Result<T>,
        mut on_error: impl FnMut(&mut S, &Error) -> Action,
    ) -> Result<T> {
        let mut failures = 0u32;
        let mut reconnects = 0u32;
        loop {
            let err = match attempt(state) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let action = on_error(state, &err);
            if action == Action::Fail || failures >= self.retries {
                return Err(err);
            }
            failures += 1;
            if action == Action::Reconnect {
                reconnects += 1;
            }
            let pause = self.pause(action, failures, reconnects);
            if let Some(deadline) = self.deadline {
                if Instant::now() + pause >= deadline {
                    return Err(err);
                }
            }
            log::debug!(
                "kafka: {what}: {err}; {action:?}, retry {failures}/{} in {pause:?}",
                self.retries
            );
            if !pause.is_zero() {
                thread::sleep(pause);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn kafka(code: KafkaCode) -> Error {
        Error::kafka("test", code)
    }

    #[test]
    fn every_class_gets_its_action() {
        let io = Error::io("x", io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        assert_eq!(classify(&io), Action::Reconnect);
        assert_eq!(classify(&Error::Timeout("x".into())), Action::Reconnect);
        assert_eq!(classify(&Error::Rebalance("x".into())), Action::Rejoin);
        for fatal in [
            Error::Protocol("x".into()),
            Error::Closed,
            Error::config("f", "bad"),
            Error::UnknownTopic("t".into()),
            Error::Tls {
                context: "TLS handshake with k:9093".into(),
                reason: "untrusted".into(),
            },
        ] {
            assert_eq!(classify(&fatal), Action::Fail, "{fatal}");
        }
        let cases = [
            (KafkaCode::COORDINATOR_LOAD_IN_PROGRESS, Action::Retry),
            (KafkaCode::NOT_ENOUGH_REPLICAS, Action::Retry),
            (KafkaCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND, Action::Retry),
            (KafkaCode::NOT_CONTROLLER, Action::Retry),
            (KafkaCode::COORDINATOR_NOT_AVAILABLE, Action::Rediscover),
            (KafkaCode::NOT_COORDINATOR, Action::Rediscover),
            (KafkaCode::REQUEST_TIMED_OUT, Action::Rediscover),
            (KafkaCode::NOT_LEADER_OR_FOLLOWER, Action::Rediscover),
            (KafkaCode::LEADER_NOT_AVAILABLE, Action::Rediscover),
            (KafkaCode::UNKNOWN_TOPIC_OR_PARTITION, Action::Rediscover),
            (KafkaCode::NETWORK_EXCEPTION, Action::Rediscover),
            (KafkaCode::FENCED_LEADER_EPOCH, Action::Rediscover),
            (KafkaCode::ILLEGAL_GENERATION, Action::Rejoin),
            (KafkaCode::UNKNOWN_MEMBER_ID, Action::Rejoin),
            (KafkaCode::REBALANCE_IN_PROGRESS, Action::Rejoin),
            (KafkaCode::MEMBER_ID_REQUIRED, Action::Rejoin),
            (KafkaCode::OFFSET_OUT_OF_RANGE, Action::Fail),
            (KafkaCode::TOPIC_ALREADY_EXISTS, Action::Fail),
            (KafkaCode::INVALID_RECORD, Action::Fail),
            (KafkaCode::UNKNOWN_SERVER_ERROR, Action::Fail),
            (KafkaCode::new(9999), Action::Fail),
        ];
        for (code, action) in cases {
            assert_eq!(classify(&kafka(code)), action, "{code}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff::between(Duration::from_millis(100), Duration::from_secs(1));
        let ms: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
        let small = Backoff::between(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(small.delay(3), Duration::from_secs(2), "cap below base");
    }

    fn quick(retries: u32) -> Retry {
        Retry {
            retries,
            backoff: Backoff::between(Duration::from_millis(1), Duration::from_millis(2)),
            deadline: None,
        }
    }

    #[test]
    fn retriable_errors_are_retried_within_the_budget() {
        let mut calls = 0;
        let r = quick(5).run(
            "t",
            &mut calls,
            |n| {
                *n += 1;
                if *n < 3 {
                    Err(kafka(KafkaCode::COORDINATOR_LOAD_IN_PROGRESS))
                } else {
                    Ok(*n)
                }
            },
            |_, e| classify(e),
        );
        assert_eq!(r.unwrap(), 3);

        // Budget spent: the last error comes back, after 1 + retries attempts;
        // on_error ran for every failure, the last one included.
        let mut seen = (0, 0);
        let r: Result<()> = quick(2).run(
            "t",
            &mut seen,
            |s| {
                s.0 += 1;
                Err(Error::Timeout("t".into()))
            },
            |s, e| {
                s.1 += 1;
                classify(e)
            },
        );
        assert!(matches!(r, Err(Error::Timeout(_))));
        assert_eq!(seen, (3, 3));
    }

    #[test]
    fn fatal_errors_fail_at_once() {
        let mut calls = 0;
        let r: Result<()> = quick(10).run(
            "t",
            &mut calls,
            |n| {
                *n += 1;
                Err(kafka(KafkaCode::INVALID_RECORD))
            },
            |_, e| classify(e),
        );
        assert_eq!(r.unwrap_err().kafka_code(), Some(KafkaCode::INVALID_RECORD));
        assert_eq!(calls, 1);
    }

    #[test]
    fn no_retry_starts_past_the_deadline() {
        let start = Instant::now();
        let retry = Retry {
            retries: u32::MAX,
            backoff: Backoff::between(Duration::from_millis(20), Duration::from_millis(20)),
            deadline: Some(start + Duration::from_millis(150)),
        };
        let mut calls = 0;
        let r: Result<()> = retry.run(
            "t",
            &mut calls,
            |n| {
                *n += 1;
                Err(kafka(KafkaCode::NOT_CONTROLLER))
            },
            |_, e| classify(e),
        );
        assert!(r.is_err());
        assert!(start.elapsed() < Duration::from_millis(150));
        assert!((3..=8).contains(&calls), "{calls}");
    }
}

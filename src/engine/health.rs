//! Health: running, degraded (and why) or stopped, from atomics the
//! engine's threads keep up to date, so a probe can ask often.
//!
//! Writers: the pollers and commits (failure streaks, reset on success),
//! the supervisor (threads that died, stop), the dead-letter breaker.
//! Readers take no lock unless something is wrong.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::breaker::Breaker;

/// The engine's overall state, in [`Health::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HealthStatus {
    /// Every thread runs and nothing is failing.
    Running,
    /// Running, but see [`Health::issues`]: the broker is unreachable,
    /// commits fail, the dead-letter limit paused the engine, or a thread
    /// died.
    Degraded,
    /// Shut down (or shutting down): nothing is read any more.
    Stopped,
}

/// Why an engine is [`HealthStatus::Degraded`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthIssue {
    /// Polls fail in a row (the broker is unreachable, or refuses us);
    /// retried with backoff.
    BrokerUnreachable {
        /// `"consumer"` (origin topics) or `"relay"` (retry topic).
        reader: &'static str,
        /// Failed polls in a row.
        failed_polls: u32,
        /// The last poll's error.
        last_error: String,
    },
    /// Offset commits fail in a row; retried every commit interval.
    CommitsFailing {
        /// `"consumer"` (origin topics) or `"relay"` (retry topic).
        reader: &'static str,
        /// Failed commits in a row.
        failed_commits: u32,
        /// The last commit's error.
        last_error: String,
    },
    /// The dead-letter limit tripped: the origin partitions are paused
    /// until its cool-down ends or
    /// [`Engine::resume_dead_letters`](crate::Engine::resume_dead_letters).
    DeadLetterLimit,
    /// A thread ended while the engine was running.
    ThreadDied(ThreadFailure),
}

/// Whether the engine runs and, if it is degraded, why; from
/// [`Engine::health`](crate::Engine::health) or a [`HealthProbe`].
///
/// Cheap: a handful of atomic loads while running (no lock, no
/// allocation), so a liveness probe can call it often. A liveness probe
/// should restart on a dead thread or `Stopped`; a readiness probe may
/// also look at `Degraded`.
///
/// ```
/// # use std::time::Duration;
/// use kafka_retry::{Engine, HealthStatus, MemoryBroker, Outcome};
/// let broker = MemoryBroker::new();
/// broker.create_topic("orders", 1)?;
/// let engine = Engine::builder(broker.clone())
///     .group_id("billing")
///     .topics(["orders"])
///     .handler(|_r| Outcome::Done)
///     .build()?;
/// let health = engine.health();
/// assert!(health.is_healthy(), "{health}");
/// assert_eq!(health.status, HealthStatus::Running);
/// let probe = engine.health_probe(); // for another thread
/// engine.shutdown(Duration::from_secs(5))?;
/// assert_eq!(probe.health().status, HealthStatus::Stopped);
/// # Ok::<(), kafka_retry::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Running, degraded or stopped.
    pub status: HealthStatus,
    /// Why it is degraded; empty while running.
    pub issues: Vec<HealthIssue>,
    /// Threads that ended while the engine was running, in the order they
    /// ended (also listed in `issues`).
    pub failed: Vec<ThreadFailure>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            status: HealthStatus::Running,
            issues: Vec::new(),
            failed: Vec::new(),
        }
    }
}

/// One thread that ended while the engine was running.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThreadFailure {
    /// The thread's name: `kafka-retry-consumer`, `kafka-retry-relay`,
    /// `kafka-retry-writer` (the retry path's batching writer) or
    /// `kafka-retry-worker-N`.
    pub thread: String,
    /// Why it ended: its error, or the panic message.
    pub reason: String,
}

impl Health {
    /// True when the engine is [`HealthStatus::Running`].
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Running
    }
}

impl fmt::Display for HealthIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthIssue::BrokerUnreachable {
                reader,
                failed_polls,
                last_error,
            } => write!(
                f,
                "{reader} polls failing ({failed_polls} in a row): {last_error}"
            ),
            HealthIssue::CommitsFailing {
                reader,
                failed_commits,
                last_error,
            } => write!(
                f,
                "{reader} commits failing ({failed_commits} in a row): {last_error}"
            ),
            HealthIssue::DeadLetterLimit => f.write_str("dead-letter limit tripped: paused"),
            HealthIssue::ThreadDied(t) => write!(f, "{} died: {}", t.thread, t.reason),
        }
    }
}

impl fmt::Display for Health {
    /// `running`, `stopped`, or `degraded: consumer polls failing (3 in a
    /// row): ...; kafka-retry-relay died: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            HealthStatus::Running => f.write_str("running"),
            HealthStatus::Stopped => f.write_str("stopped"),
            HealthStatus::Degraded => {
                f.write_str("degraded: ")?;
                for (i, issue) in self.issues.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{issue}")?;
                }
                Ok(())
            }
        }
    }
}

/// A cloneable handle on an engine's health, for another thread (an HTTP
/// liveness endpoint); from
/// [`Engine::health_probe`](crate::Engine::health_probe). It outlives the
/// engine and says [`HealthStatus::Stopped`] once it is shut down. See
/// [`Health`] for an example.
#[derive(Debug, Clone)]
pub struct HealthProbe(pub(crate) Arc<HealthBoard>);

impl HealthProbe {
    /// The engine's health now; see [`Health`].
    pub fn health(&self) -> Health {
        self.0.snapshot()
    }
}

/// Consecutive failures of one kind of call, with the last error.
#[derive(Debug, Default)]
pub(crate) struct Streak {
    failures: AtomicU32,
    last: Mutex<String>,
}

impl Streak {
    /// A success ends the streak: one relaxed load when there was none.
    pub(crate) fn ok(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn failed(&self, error: &dyn fmt::Display) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = error.to_string();
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> Option<(u32, String)> {
        let n = self.failures.load(Ordering::Relaxed);
        (n > 0).then(|| {
            (
                n,
                self.last.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            )
        })
    }
}

/// The engine's health, shared by its threads.
#[derive(Debug, Default)]
pub(crate) struct HealthBoard {
    pub consumer_polls: Streak,
    pub relay_polls: Streak,
    pub consumer_commits: Streak,
    pub relay_commits: Streak,
    pub breaker: Option<Arc<Breaker>>,
    stopped: AtomicBool,
    any_failed: AtomicBool,
    failed: Mutex<Vec<ThreadFailure>>,
}

impl HealthBoard {
    pub(crate) fn new(breaker: Option<Arc<Breaker>>) -> Self {
        HealthBoard {
            breaker,
            ..HealthBoard::default()
        }
    }

    pub(crate) fn thread_died(&self, thread: String, reason: String) {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ThreadFailure { thread, reason });
        self.any_failed.store(true, Ordering::Release);
    }

    pub(crate) fn set_stopped(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    pub(crate) fn snapshot(&self) -> Health {
        let mut h = Health::default();
        if self.stopped.load(Ordering::Acquire) {
            h.status = HealthStatus::Stopped;
        }
        if self.any_failed.load(Ordering::Acquire) {
            h.failed = self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
        }
        if h.status == HealthStatus::Stopped {
            return h;
        }
        for (reader, s) in [
            ("consumer", &self.consumer_polls),
            ("relay", &self.relay_polls),
        ] {
            if let Some((failed_polls, last_error)) = s.read() {
                h.issues.push(HealthIssue::BrokerUnreachable {
                    reader,
                    failed_polls,
                    last_error,
                });
            }
        }
        for (reader, s) in [
            ("consumer", &self.consumer_commits),
            ("relay", &self.relay_commits),
        ] {
            if let Some((failed_commits, last_error)) = s.read() {
                h.issues.push(HealthIssue::CommitsFailing {
                    reader,
                    failed_commits,
                    last_error,
                });
            }
        }
        if self.breaker.as_ref().is_some_and(|b| b.is_open()) {
            h.issues.push(HealthIssue::DeadLetterLimit);
        }
        h.issues
            .extend(h.failed.iter().cloned().map(HealthIssue::ThreadDied));
        if !h.issues.is_empty() {
            h.status = HealthStatus::Degraded;
        }
        h
    }
}

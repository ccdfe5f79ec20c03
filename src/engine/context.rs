//! What the engine's threads share: settings, the producer, the counters
//! and the stop signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::breaker::Breaker;
use super::health::HealthBoard;
use super::shutdown::ShutdownReport;
use crate::headers::DeadReason;
use crate::policy::RetryPolicy;
use crate::record::Topic;
use crate::stats::Counters;
use crate::transport::{Producer, Transport, Wakeup};

/// The most of a shutdown's time kept for the final commits and leaving
/// the groups (a quarter of it when that is less).
const COMMIT_MARGIN: Duration = Duration::from_secs(2);

/// How the engine tells its threads to stop. `stop` ends the polling
/// loops; `abandon` tells workers to skip queued jobs (their records stay
/// uncommitted and are re-read later, never lost).
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    pub stop: AtomicBool,
    pub abandon: AtomicBool,
    /// Until when the stopping threads may wait for running records: the
    /// shutdown's deadline less a slice kept for the final commits and the
    /// leaves. Set once, when the stop is asked for, so every wait (a
    /// revoke wait the stop interrupts as well as the shutdown's own)
    /// keeps the same slice.
    drain_until: Mutex<Option<Instant>>,
    /// Given to both consumers (`ConsumerConfig::wakeup`), woken by the
    /// stop: a poll waiting for a group join returns.
    pub wakeup: Wakeup,
    /// A restart-style stop: consumers close with `close_for_restart`
    /// (static members send no LeaveGroup).
    pub restart: AtomicBool,
    /// What the stopping threads could not finish, for the shutdown error.
    shutdown: Mutex<ShutdownReport>,
}

impl StopSignal {
    /// Adds to the shutdown report (abandoned records, uncommitted
    /// partitions, errors).
    pub(crate) fn add_to_report(&self, f: impl FnOnce(&mut ShutdownReport)) {
        f(&mut self.shutdown.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The shutdown report so far, emptied.
    pub(crate) fn take_report(&self) -> ShutdownReport {
        std::mem::take(&mut *self.shutdown.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Asks every loop to stop, finishing what it can by `deadline`.
    pub(crate) fn request_stop(&self, deadline: Instant) {
        let now = Instant::now();
        // A quarter of the time, at most 2 s, for the commits and leaves.
        let margin = deadline.saturating_duration_since(now) / 4;
        let drain_until = deadline
            .checked_sub(margin.min(COMMIT_MARGIN))
            .unwrap_or(now);
        *self.drain_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(drain_until);
        self.stop.store(true, Ordering::Release);
        self.wakeup.wake();
    }

    /// Tells workers to skip what is left.
    pub(crate) fn request_abandon(&self) {
        self.abandon.store(true, Ordering::Release);
    }

    /// Whether the consumers should keep a static membership on close.
    pub(crate) fn for_restart(&self) -> bool {
        self.restart.load(Ordering::Acquire)
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
    pub(crate) fn abandoning(&self) -> bool {
        self.abandon.load(Ordering::Acquire)
    }
    /// Once a stop was asked for: the latest a thread may wait for running
    /// records before it commits what finished and leaves (see
    /// `drain_until`); `None` before.
    pub(crate) fn drain_until(&self) -> Option<Instant> {
        *self.drain_until.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Everything the engine's threads share.
pub(crate) struct Context {
    pub group_id: String,
    pub topics: Vec<String>,
    pub retry_topic: Topic,
    /// The default dead-letter topic and the router's topics.
    pub dead_letters: super::topics::DeadLetterTopics,
    pub policy: RetryPolicy,
    pub producer: Arc<dyn Producer>,
    /// The retry path's writes (workers' retry copies and dead letters,
    /// the relay's writes), gathered into large batches on `producer`.
    pub writer: super::writes::BatchWriter,
    /// Emptied job batches for reuse (see [`super::job::Spares`]).
    pub spares: super::job::Spares,
    pub transport: Arc<dyn Transport>,
    pub counters: Arc<Counters>,
    pub signal: Arc<StopSignal>,
    pub commit_interval: Duration,
    pub revoke_timeout: Duration,
    pub max_parked: usize,
    pub queue_batches: usize,
    pub health: Arc<HealthBoard>,
    /// The dead-letter limit, when configured.
    pub breaker: Option<Arc<Breaker>>,
    /// The blocked-key state, with `KeyOrder::Kept`.
    pub key_order: Option<Arc<super::keyorder::KeyOrderState>>,
    #[cfg(feature = "metrics")]
    pub metrics: super::metrics::Metrics,
}

impl Context {
    /// A record was written to the dead-letter topic (acknowledged).
    pub(crate) fn dead_lettered(&self, reason: DeadReason) {
        self.counters.dead(reason);
        if let Some(b) = &self.breaker {
            b.record();
        }
    }

    /// A record was given up on with dead-lettering off.
    pub(crate) fn dropped(&self) {
        self.counters
            .dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(b) = &self.breaker {
            b.record();
        }
    }

    /// True while the dead-letter limit pauses the engine.
    pub(crate) fn dead_letters_paused(&self) -> bool {
        self.breaker.as_ref().is_some_and(|b| b.is_open())
    }
}

//! What the engine's threads share: settings, the producer, the counters
//! and the stop signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::policy::RetryPolicy;
use crate::stats::Counters;
use crate::transport::{Producer, Transport};

/// How the engine tells its threads to stop. `stop` ends the polling
/// loops; `abandon` tells workers to skip queued jobs (their records stay
/// uncommitted and are re-read later, never lost).
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    pub stop: AtomicBool,
    pub abandon: AtomicBool,
    pub deadline: Mutex<Option<Instant>>,
    /// What a stopping thread could not finish, said before its last
    /// blocking step (leaving the group), so the shutdown error names it
    /// even when that step outlasts the deadline.
    reports: Mutex<Vec<(String, String)>>,
}

impl StopSignal {
    /// Records what the current thread could not finish.
    pub(crate) fn report(&self, problem: String) {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, problem));
    }

    /// What thread `name` reported with [`StopSignal::report`].
    pub(crate) fn reports_of(&self, name: &str) -> Vec<String> {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Asks every loop to stop, finishing what it can by `deadline`.
    pub(crate) fn request_stop(&self, deadline: Instant) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(deadline);
        self.stop.store(true, Ordering::Release);
    }

    /// Tells workers to skip what is left.
    pub(crate) fn request_abandon(&self) {
        self.abandon.store(true, Ordering::Release);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
    pub(crate) fn abandoning(&self) -> bool {
        self.abandon.load(Ordering::Acquire)
    }
    pub(crate) fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Everything the engine's threads share.
pub(crate) struct Context {
    pub group_id: String,
    pub topics: Vec<String>,
    pub retry_topic: String,
    pub dead_letter_topic: Option<String>,
    pub policy: RetryPolicy,
    pub producer: Arc<dyn Producer>,
    pub transport: Arc<dyn Transport>,
    pub counters: Arc<Counters>,
    pub signal: Arc<StopSignal>,
    pub commit_interval: Duration,
    pub revoke_timeout: Duration,
    pub max_parked: usize,
    pub queue_batches: usize,
}

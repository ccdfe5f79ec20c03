//! [`Engine`]: a running engine, its stats, health and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::supervisor::{Health, HealthState, Threads, DROP_TIMEOUT};
use crate::clock::deadline_after;
use crate::error::Result;
use crate::stats::{Counters, Stats};

/// A running retry engine: a consumer thread, a handler pool and a relay.
///
/// Dropping it shuts it down with a 10 s deadline, ignoring errors; call
/// [`Engine::shutdown`] to learn what could not be finished.
pub struct Engine {
    threads: Option<Threads>,
    counters: Arc<Counters>,
    health: Arc<HealthState>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Engine {
    pub(crate) fn new(threads: Threads, counters: Arc<Counters>) -> Self {
        Engine {
            health: threads.health(),
            threads: Some(threads),
            counters,
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Which of the engine's threads died, and why. Cheap (one atomic
    /// load while healthy), so a liveness probe can call it often.
    pub fn health(&self) -> Health {
        self.health.snapshot()
    }

    /// Stops fetching, lets in-flight records finish until shortly before
    /// `timeout`, commits what is done, leaves the groups and joins every
    /// thread. Returns within `timeout` (plus a commit round trip); an
    /// error says what was not finished or committed, or which thread
    /// panicked. Nothing unfinished is committed, so it is re-read later.
    pub fn shutdown(mut self, timeout: Duration) -> Result<()> {
        match self.threads.take() {
            Some(mut t) => t.stop(deadline_after(timeout)),
            None => Ok(()),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut t) = self.threads.take() {
            if t.is_empty() {
                return;
            }
            if let Err(e) = t.stop(Instant::now() + DROP_TIMEOUT) {
                log::warn!("engine dropped: {e}");
            }
        }
    }
}

//! [`Engine`]: a running engine, its stats, health and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::breaker::Breaker;
use super::health::{Health, HealthBoard, HealthProbe};
use super::supervisor::{Threads, DROP_TIMEOUT};
use crate::clock::deadline_after;
use crate::error::Result;
use crate::stats::{Counters, Stats};

/// A running retry engine: a consumer thread, a handler pool and a relay.
///
/// Made by [`EngineBuilder::build`](crate::EngineBuilder::build). The relay
/// reads the retry topic in its own consumer group, `<group>-relay` unless
/// set with [`EngineBuilder::relay_group_id`](crate::EngineBuilder::relay_group_id):
/// grant it read access to the retry topic and watch its lag.
///
/// Dropping an engine shuts it down and **blocks** until its threads
/// finish, for up to 10 s (in-flight records finish, what is done is
/// committed); it logs that at info level, and a failure at warn level.
/// Call [`Engine::shutdown`] to choose the deadline and learn what could
/// not be finished.
///
/// ```
/// use std::time::Duration;
/// use kafka_retry::{Engine, MemoryBroker, OutRecord, Outcome};
/// use kafka_retry::transport::Transport;
///
/// let broker = MemoryBroker::new();
/// broker.create_topic("orders", 1)?;
/// let engine = Engine::builder(broker.clone())
///     .group_id("billing")
///     .topics(["orders"])
///     .handler(|_r| Outcome::Done)
///     .build()?;
/// broker.producer()?.send(OutRecord::new("orders").value("Create"))?;
/// while engine.stats().done < 1 {
///     std::thread::sleep(Duration::from_millis(10));
/// }
/// assert!(engine.health().is_healthy());
/// engine.shutdown(Duration::from_secs(5))?;
/// # Ok::<(), kafka_retry::Error>(())
/// ```
pub struct Engine {
    threads: Option<Threads>,
    counters: Arc<Counters>,
    health: Arc<HealthBoard>,
    breaker: Option<Arc<Breaker>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Engine {
    pub(crate) fn new(
        threads: Threads,
        counters: Arc<Counters>,
        breaker: Option<Arc<Breaker>>,
    ) -> Self {
        Engine {
            health: threads.health(),
            threads: Some(threads),
            counters,
            breaker,
        }
    }

    /// A snapshot of the counters; see [`Stats`] and the example on
    /// [`Engine`].
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Running, degraded (and why: the broker unreachable, commits
    /// failing, the dead-letter limit tripped, a thread died) or stopped.
    /// Cheap (a few atomic loads while running), so a liveness probe can
    /// call it often; see [`Health`] for an example.
    pub fn health(&self) -> Health {
        self.health.snapshot()
    }

    /// A cloneable handle that answers [`Engine::health`] from another
    /// thread, and says `Stopped` once the engine is shut down.
    pub fn health_probe(&self) -> HealthProbe {
        HealthProbe(self.health.clone())
    }

    /// Lifts a tripped dead-letter limit
    /// ([`EngineBuilder::dead_letter_limit`](crate::EngineBuilder::dead_letter_limit))
    /// before its cool-down: handing records to the handlers and relaying
    /// go on. Returns false when it was not tripped (or no limit is set).
    pub fn resume_dead_letters(&self) -> bool {
        self.breaker
            .as_ref()
            .is_some_and(|b| b.close("resume_dead_letters()"))
    }

    /// Stops fetching, lets in-flight records finish until shortly before
    /// `timeout`, commits what is done, leaves the groups and joins every
    /// thread. Returns by `timeout`. Nothing unfinished is committed, so
    /// it is re-read later.
    ///
    /// `Ok(())` means everything read was finished and committed and every
    /// thread stopped. Otherwise [`Error::Shutdown`](crate::Error::Shutdown)
    /// carries a [`ShutdownReport`](crate::ShutdownReport): how many
    /// records were abandoned, the partitions and offsets not committed
    /// (read again from there), the threads still running at the deadline
    /// and what they were doing, and what failed. See the example on
    /// [`Engine`].
    ///
    /// This is a *final* shutdown: the consumers leave their groups
    /// (LeaveGroup), so the group rebalances at once, also with
    /// [`group_instance_id`](crate::EngineBuilder::group_instance_id) set.
    /// To restart, see [`Engine::shutdown_for_restart`].
    pub fn shutdown(mut self, timeout: Duration) -> Result<()> {
        match self.threads.take() {
            Some(mut t) => t.stop(deadline_after(timeout)),
            None => Ok(()),
        }
    }
}

impl Engine {
    /// [`Engine::shutdown`] for a restart: the same drain and final commit,
    /// but with [`EngineBuilder::group_instance_id`](crate::EngineBuilder::group_instance_id)
    /// set the consumers stop *without* LeaveGroup, so the group does not
    /// rebalance: their partitions wait, unread, for an engine with the
    /// same instance id, which gets them back at once if it starts within
    /// the session timeout; after that the group rebalances without it.
    /// Without an instance id it is the same as `shutdown` (a dynamic
    /// member's id cannot be reused, so it leaves).
    ///
    /// We chose a separate call rather than Java's rule (a static member
    /// never leaves on close) so the final stop of a scaled-down instance
    /// hands its partitions over at once, without a session timeout of
    /// silence; dropping an engine is final too.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kafka_retry::{Engine, MemoryBroker, Outcome};
    ///
    /// let broker = MemoryBroker::new();
    /// broker.create_topic("orders", 2)?;
    /// let start = || {
    ///     Engine::builder(broker.clone())
    ///         .group_id("billing")
    ///         .group_instance_id("billing-0")
    ///         .topics(["orders"])
    ///         .handler(|_r| Outcome::Done)
    ///         .build()
    /// };
    /// start()?.shutdown_for_restart(Duration::from_secs(5))?;
    /// start()?.shutdown(Duration::from_secs(5))?; // the last one leaves
    /// # Ok::<(), kafka_retry::Error>(())
    /// ```
    pub fn shutdown_for_restart(mut self, timeout: Duration) -> Result<()> {
        match self.threads.take() {
            Some(mut t) => {
                t.signal()
                    .restart
                    .store(true, std::sync::atomic::Ordering::Release);
                t.stop(deadline_after(timeout))
            }
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
            log::info!(
                "engine dropped without shutdown(): stopping it, which may take up to {DROP_TIMEOUT:?}; \
                 call Engine::shutdown(deadline) to choose the deadline"
            );
            if let Err(e) = t.stop(Instant::now() + DROP_TIMEOUT) {
                log::warn!("engine dropped: {e}");
            }
        }
    }
}

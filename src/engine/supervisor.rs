//! The engine's threads: named spawns, a drop guard that stops them when
//! start-up fails half way, panic reporting, health, and the join at
//! shutdown.

use std::collections::HashSet;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::context::StopSignal;
use crate::error::{Error, Result};

/// What a thread returns: `Err` says why it could not go on (or finish).
pub(crate) type ThreadResult = std::result::Result<(), String>;

/// How long a dropped engine (or a half-started one) waits for its threads.
pub(crate) const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the engine's threads are all running, from
/// [`Engine::health`](crate::Engine::health).
///
/// A thread that ends while the engine runs (a consumer closed under it, a
/// bug that panicked) is listed here at once, and logged at error level
/// when it happens; a healthy engine has an empty list.
///
/// ```
/// # use std::time::Duration;
/// use kafka_retry::{Engine, MemoryBroker, Outcome};
/// let broker = MemoryBroker::new();
/// broker.create_topic("orders", 1)?;
/// let engine = Engine::builder(broker.clone())
///     .group_id("billing")
///     .topics(["orders"])
///     .handler(|_r| Outcome::Done)
///     .build()?;
/// let health = engine.health();
/// assert!(health.is_healthy(), "{health}");
/// engine.shutdown(Duration::from_secs(5))?;
/// # Ok::<(), kafka_retry::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Threads that ended while the engine was running, in the order they
    /// ended.
    pub failed: Vec<ThreadFailure>,
}

/// One thread that ended while the engine was running.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThreadFailure {
    /// The thread's name: `kafka-retry-consumer`, `kafka-retry-relay` or
    /// `kafka-retry-worker-N`.
    pub thread: String,
    /// Why it ended: its error, or the panic message.
    pub reason: String,
}

impl Health {
    /// True when every thread of the engine is still running.
    pub fn is_healthy(&self) -> bool {
        self.failed.is_empty()
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.failed.is_empty() {
            return f.write_str("healthy");
        }
        for (i, t) in self.failed.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} died: {}", t.thread, t.reason)?;
        }
        Ok(())
    }
}

/// Threads that died, written by the dying thread, read by `health()`.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    any: AtomicBool,
    failed: Mutex<Vec<ThreadFailure>>,
}

impl HealthState {
    fn record(&self, thread: String, reason: String) {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ThreadFailure { thread, reason });
        self.any.store(true, Ordering::Release);
    }

    /// Cheap when healthy: one atomic load.
    pub(crate) fn snapshot(&self) -> Health {
        if !self.any.load(Ordering::Acquire) {
            return Health::default();
        }
        Health {
            failed: self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// The engine's threads. Dropping it before they are handed to an
/// [`Engine`](crate::Engine) (a spawn failed half way) stops the ones
/// already started.
pub(crate) struct Threads {
    handles: Vec<(String, JoinHandle<ThreadResult>)>,
    signal: Arc<StopSignal>,
    health: Arc<HealthState>,
    done_tx: Sender<String>,
    done_rx: Receiver<String>,
}

/// Tells the engine a thread ended, even when it panicked.
struct DoneGuard(String, Sender<String>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.1.send(std::mem::take(&mut self.0));
    }
}

impl Threads {
    pub(crate) fn new(signal: Arc<StopSignal>) -> Self {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        Threads {
            handles: Vec::new(),
            signal,
            health: Arc::new(HealthState::default()),
            done_tx,
            done_rx,
        }
    }

    pub(crate) fn health(&self) -> Arc<HealthState> {
        self.health.clone()
    }

    /// Starts a named thread. If it ends before a stop was asked for, it
    /// is logged at error level at once and listed by `health()`.
    pub(crate) fn spawn(
        &mut self,
        name: String,
        f: impl FnOnce() -> ThreadResult + Send + 'static,
    ) -> Result<()> {
        let guard = DoneGuard(name.clone(), self.done_tx.clone());
        let signal = self.signal.clone();
        let health = self.health.clone();
        let thread_name = name.clone();
        let handle = thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _guard = guard;
                let result = catch_unwind(AssertUnwindSafe(f));
                if !signal.stopping() {
                    let reason = match &result {
                        Ok(Ok(())) => "exited while the engine was running".to_string(),
                        Ok(Err(e)) => e.clone(),
                        Err(panic) => format!("panicked: {}", panic_message(&**panic)),
                    };
                    log::error!("{thread_name} died: {reason}");
                    health.record(thread_name, reason);
                }
                match result {
                    Ok(r) => r,
                    // Keep the panic for the join, which reports it.
                    Err(panic) => resume_unwind(panic),
                }
            })
            .map_err(|e| Error::Thread(format!("spawn {name}: {e}")))?;
        self.handles.push((name, handle));
        Ok(())
    }

    /// Signals stop and waits for every thread until `deadline`. Threads
    /// still running then are left detached and named in the error.
    pub(crate) fn stop(&mut self, deadline: Instant) -> Result<()> {
        self.signal.request_stop(deadline);
        let mut problems = Vec::new();
        let mut finished = HashSet::new();
        while finished.len() < self.handles.len() {
            match self.done_rx.recv_deadline(deadline) {
                Ok(name) => {
                    finished.insert(name);
                }
                Err(_) => break,
            }
        }
        // Whatever is still running past the deadline stops waiting on the
        // broker: workers retrying a write give up (their records stay
        // uncommitted), even if the consumer thread died before saying so.
        self.signal.request_abandon();
        for (name, handle) in self.handles.drain(..) {
            // A thread that signalled is past its work (the signal is sent
            // by a guard on its way out), so joining it cannot block long.
            if !finished.contains(&name) {
                let said = self.signal.reports_of(&name);
                if said.is_empty() {
                    problems.push(format!("{name} still running at the deadline"));
                } else {
                    problems.push(format!(
                        "{name} still running at the deadline: {}",
                        said.join("; ")
                    ));
                }
                continue;
            }
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problems.push(format!("{name}: {e}")),
                Err(panic) => problems.push(format!("{name} panicked: {}", panic_message(&*panic))),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Shutdown(problems.join("; ")))
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        if !self.handles.is_empty() {
            let _ = self.stop(Instant::now() + DROP_TIMEOUT);
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

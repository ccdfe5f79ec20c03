//! The engine's threads: named spawns, a drop guard that stops them when
//! start-up fails half way, panic reporting, health, and the join at
//! shutdown.

use std::collections::HashSet;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::context::StopSignal;
use super::health::HealthBoard;
use super::panic::panic_message;
use crate::error::{Error, Result};

/// What a thread returns: `Err` says why it could not go on (or finish).
pub(crate) type ThreadResult = std::result::Result<(), String>;

/// How long a dropped engine (or a half-started one) waits for its threads.
pub(crate) const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a thread is doing, for the shutdown error when it is still
/// running at the deadline. Workers set it around each record (relaxed
/// stores, no clock read), the consumer and the relay around their last
/// blocking steps.
#[derive(Debug, Default)]
pub(crate) struct ThreadStatus {
    doing: AtomicU8,
    partition: AtomicI32,
    offset: AtomicI64,
    since: Mutex<Option<Instant>>,
}

/// One of the steps a [`ThreadStatus`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Doing {
    Idle = 0,
    /// In the user's handler (partition, offset set).
    Handler = 1,
    /// Waiting for the broker to acknowledge a write.
    AwaitingAck = 2,
    /// The final commit.
    Committing = 3,
    /// Leaving the group (`Consumer::close`).
    LeavingGroup = 4,
}

impl ThreadStatus {
    /// A record enters (or leaves, with `Idle`) the handler.
    #[inline]
    pub(crate) fn record(&self, doing: Doing, partition: i32, offset: i64) {
        self.partition.store(partition, Ordering::Relaxed);
        self.offset.store(offset, Ordering::Relaxed);
        self.doing.store(doing as u8, Ordering::Release);
    }

    /// A step off the hot path: also notes when it started.
    pub(crate) fn step(&self, doing: Doing) {
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.doing.store(doing as u8, Ordering::Release);
    }

    fn describe(&self) -> Option<String> {
        let since = || {
            self.since
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map(|t| format!(" for {:.1} s", t.elapsed().as_secs_f64()))
                .unwrap_or_default()
        };
        let d = self.doing.load(Ordering::Acquire);
        Some(match d {
            1 => format!(
                "in the handler (partition {}, offset {}); a handler cannot be interrupted",
                self.partition.load(Ordering::Relaxed),
                self.offset.load(Ordering::Relaxed)
            ),
            2 => "waiting for the broker to acknowledge a write".to_string(),
            3 => format!("in the final commit{}", since()),
            4 => format!("leaving the group{}", since()),
            _ => return None,
        })
    }
}

/// The engine's threads. Dropping it before they are handed to an
/// [`Engine`](crate::Engine) (a spawn failed half way) stops the ones
/// already started.
pub(crate) struct Threads {
    handles: Vec<(String, JoinHandle<ThreadResult>, Arc<ThreadStatus>)>,
    signal: Arc<StopSignal>,
    health: Arc<HealthBoard>,
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
    pub(crate) fn new(signal: Arc<StopSignal>, health: Arc<HealthBoard>) -> Self {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        Threads {
            handles: Vec::new(),
            signal,
            health,
            done_tx,
            done_rx,
        }
    }

    pub(crate) fn signal(&self) -> &StopSignal {
        &self.signal
    }

    pub(crate) fn health(&self) -> Arc<HealthBoard> {
        self.health.clone()
    }

    /// Starts a named thread. If it ends before a stop was asked for, it
    /// is logged at error level at once and listed by `health()`.
    pub(crate) fn spawn(
        &mut self,
        name: String,
        f: impl FnOnce(Arc<ThreadStatus>) -> ThreadResult + Send + 'static,
    ) -> Result<()> {
        let status = Arc::new(ThreadStatus::default());
        let st = status.clone();
        let guard = DoneGuard(name.clone(), self.done_tx.clone());
        let signal = self.signal.clone();
        let health = self.health.clone();
        let thread_name = name.clone();
        let handle = thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _guard = guard;
                let result = catch_unwind(AssertUnwindSafe(move || f(st)));
                if !signal.stopping() {
                    let reason = match &result {
                        Ok(Ok(())) => "exited while the engine was running".to_string(),
                        Ok(Err(e)) => e.clone(),
                        Err(panic) => format!("panicked: {}", panic_message(&**panic)),
                    };
                    log::error!("{thread_name} died: {reason}");
                    health.thread_died(thread_name, reason);
                }
                match result {
                    Ok(r) => r,
                    // Keep the panic for the join, which reports it.
                    Err(panic) => resume_unwind(panic),
                }
            })
            .map_err(|e| Error::Thread(format!("spawn {name}: {e}")))?;
        self.handles.push((name, handle, status));
        Ok(())
    }

    /// Signals stop and waits for every thread until `deadline`. Threads
    /// still running then are left detached and named in the error, with
    /// what they were doing; so are abandoned records, uncommitted
    /// partitions and failed final commits (see [`ShutdownReport`]).
    pub(crate) fn stop(&mut self, deadline: Instant) -> Result<()> {
        self.signal.request_stop(deadline);
        self.health.set_stopped();
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
        let mut report = self.signal.take_report();
        for (name, handle, status) in self.handles.drain(..) {
            // A thread that signalled is past its work (the signal is sent
            // by a guard on its way out), so joining it cannot block long.
            if !finished.contains(&name) {
                let doing = status.describe().unwrap_or_else(|| "between steps".into());
                report.threads_not_stopped.push(format!("{name}: {doing}"));
                continue;
            }
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => report.errors.push(format!("{name}: {e}")),
                Err(panic) => report
                    .errors
                    .push(format!("{name} panicked: {}", panic_message(&*panic))),
            }
        }
        // A late report (a thread that stopped right at the deadline).
        let late = self.signal.take_report();
        report.abandoned += late.abandoned;
        report.uncommitted.extend(late.uncommitted);
        report.errors.extend(late.errors);
        if report.is_clean() {
            Ok(())
        } else {
            Err(Error::Shutdown(Box::new(report)))
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

//! The dead-letter circuit breaker: more than `limit` records given up on
//! (dead-lettered, or dropped with dead-lettering off) within `window`
//! pauses the engine, so a handler that suddenly rejects everything does
//! not empty its topics into the dead-letter topic.
//!
//! Invariant: while open, no new record reaches a handler (workers wait
//! before each record, the consumer thread hands nothing out and pauses
//! its partitions) and the relay writes nothing; records already inside a
//! handler or a write finish normally. Nothing is skipped, so nothing is
//! committed past a record that was not handled.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::panic::panic_message;
use crate::stats::Counters;

type OnTrip = Arc<dyn Fn(&DeadLetterTrip) + Send + Sync>;

/// A dead-letter limit (a circuit breaker, as Sentry Arroyo's `DlqLimit`
/// and KIP-1316): when more than `limit` records are dead-lettered within
/// `window`, the engine pauses its origin partitions, logs an error,
/// reports it in [`Engine::health`](crate::Engine::health) and
/// [`Stats::dead_letter_paused`](crate::Stats::dead_letter_paused), and
/// calls the [`DeadLetterLimit::on_trip`] callback. It goes on after the
/// cool-down, or when
/// [`Engine::resume_dead_letters`](crate::Engine::resume_dead_letters) is
/// called. Records dropped with dead-lettering off count too.
///
/// While paused nothing new reaches the handlers and the relay writes
/// nothing; records already in a handler finish normally (so up to one
/// record per worker, plus writes in flight, may still be dead-lettered).
/// Nothing is skipped or committed past unhandled work.
///
/// ```
/// use std::time::Duration;
/// use kafka_retry::DeadLetterLimit;
/// let limit = DeadLetterLimit::new(100, Duration::from_secs(60))
///     .cool_down(Duration::from_secs(300))
///     .on_trip(|trip| eprintln!("{trip}"));
/// let b = kafka_retry::Engine::builder(kafka_retry::MemoryBroker::new())
///     .dead_letter_limit(limit);
/// ```
#[derive(Clone)]
pub struct DeadLetterLimit {
    pub(crate) limit: u64,
    pub(crate) window: Duration,
    pub(crate) cool_down: Option<Duration>,
    on_trip: Option<OnTrip>,
}

impl fmt::Debug for DeadLetterLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterLimit")
            .field("limit", &self.limit)
            .field("window", &self.window)
            .field("cool_down", &self.cool_down)
            .field("on_trip", &self.on_trip.is_some())
            .finish()
    }
}

impl DeadLetterLimit {
    /// Trips when more than `limit` records are dead-lettered within
    /// `window` (at most 1,000,000; `window` above zero).
    pub fn new(limit: u64, window: Duration) -> Self {
        DeadLetterLimit {
            limit,
            window,
            cool_down: None,
            on_trip: None,
        }
    }

    /// How long to stay paused before going on by itself. Defaults to
    /// none: paused until
    /// [`Engine::resume_dead_letters`](crate::Engine::resume_dead_letters).
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = Some(cool_down);
        self
    }

    /// Called once per trip, on the engine thread that dead-lettered the
    /// record past the limit; keep it short (a panic in it is caught and
    /// logged). Defaults to none.
    pub fn on_trip(mut self, f: impl Fn(&DeadLetterTrip) + Send + Sync + 'static) -> Self {
        self.on_trip = Some(Arc::new(f));
        self
    }
}

/// What the [`DeadLetterLimit::on_trip`] callback is told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterTrip {
    /// The engine's consumer group.
    pub group: String,
    /// Records dead-lettered within the window (one more than the limit).
    pub count: u64,
    /// The limit's window.
    pub window: Duration,
    /// When it goes on by itself; `None`: on `resume_dead_letters()` only.
    pub cool_down: Option<Duration>,
}

impl fmt::Display for DeadLetterTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} records dead-lettered within {:?}: dead-letter limit tripped, origin partitions paused ",
            self.group, self.count, self.window
        )?;
        match self.cool_down {
            Some(d) => write!(f, "for {d:?}"),
            None => f.write_str("until Engine::resume_dead_letters()"),
        }
    }
}

/// The live breaker, shared by the workers, the relay and the consumer
/// thread.
pub(crate) struct Breaker {
    cfg: DeadLetterLimit,
    group: String,
    counters: Arc<Counters>,
    epoch: Instant,
    open: AtomicBool,
    opened_at_ms: AtomicU64,
    /// Times (ms since `epoch`) of the last dead letters within the
    /// window, at most `limit + 1`.
    recent: Mutex<VecDeque<u64>>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("limit", &self.cfg)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Breaker {
    pub(crate) fn new(cfg: DeadLetterLimit, group: String, counters: Arc<Counters>) -> Self {
        Breaker {
            recent: Mutex::new(VecDeque::with_capacity(cfg.limit as usize + 1)),
            cfg,
            group,
            counters,
            epoch: Instant::now(),
            open: AtomicBool::new(false),
            opened_at_ms: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A record was dead-lettered (or dropped). Trips past the limit.
    pub(crate) fn record(&self) {
        if self.open.load(Ordering::Acquire) {
            return; // in-flight records finishing: already tripped
        }
        let now = self.now();
        let window = self.cfg.window.as_millis() as u64;
        let count = {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.push_back(now);
            while recent
                .front()
                .is_some_and(|&t| now.saturating_sub(t) > window)
            {
                recent.pop_front();
            }
            if (recent.len() as u64) <= self.cfg.limit {
                return;
            }
            let n = recent.len() as u64;
            recent.clear();
            n
        };
        if self.open.swap(true, Ordering::AcqRel) {
            return;
        }
        self.opened_at_ms.store(now, Ordering::Release);
        self.counters
            .dead_letter_trips
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .dead_letter_paused
            .store(true, Ordering::Relaxed);
        let trip = DeadLetterTrip {
            group: self.group.clone(),
            count,
            window: self.cfg.window,
            cool_down: self.cfg.cool_down,
        };
        log::error!("{trip}");
        if let Some(f) = &self.cfg.on_trip {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&trip))) {
                log::error!(
                    "{}: dead-letter limit on_trip callback panicked: {}",
                    self.group,
                    panic_message(&*p)
                );
            }
        }
    }

    /// Whether the engine is paused; ends the pause once the cool-down is
    /// over. One atomic load while closed.
    pub(crate) fn is_open(&self) -> bool {
        if !self.open.load(Ordering::Acquire) {
            return false;
        }
        if let Some(d) = self.cfg.cool_down {
            let at = self.opened_at_ms.load(Ordering::Acquire);
            if self.now().saturating_sub(at) >= d.as_millis() as u64 {
                self.close("cool-down over");
                return false;
            }
        }
        true
    }

    /// Ends the pause. False when it was not paused.
    pub(crate) fn close(&self, why: &str) -> bool {
        if self
            .open
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.counters
            .dead_letter_paused
            .store(false, Ordering::Relaxed);
        log::warn!("{}: dead-letter limit: resuming ({why})", self.group);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(limit: u64, window: Duration) -> Breaker {
        Breaker::new(
            DeadLetterLimit::new(limit, window),
            "g".into(),
            Arc::default(),
        )
    }

    #[test]
    fn trips_past_the_limit_within_the_window_only() {
        let b = breaker(5, Duration::from_secs(60));
        for _ in 0..5 {
            b.record();
        }
        assert!(!b.is_open(), "at the limit, not past it");
        b.record();
        assert!(b.is_open());
        assert_eq!(b.counters.dead_letter_trips.load(Ordering::Relaxed), 1);
        assert!(b.close("test"));
        assert!(!b.close("test"), "already closed");
        // The window starts afresh after a resume.
        for _ in 0..5 {
            b.record();
        }
        assert!(!b.is_open());

        // Spread wider than the window: never more than the limit in it.
        let b = breaker(2, Duration::from_millis(30));
        for _ in 0..6 {
            b.record();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!b.is_open());
    }

    #[test]
    fn a_cool_down_closes_it() {
        let b = Breaker::new(
            DeadLetterLimit::new(0, Duration::from_secs(60)).cool_down(Duration::from_millis(30)),
            "g".into(),
            Arc::default(),
        );
        b.record();
        assert!(b.is_open());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!b.is_open());
        assert!(!b.counters.dead_letter_paused.load(Ordering::Relaxed));
    }
}

//! Polling with backoff, shared by the consumer thread and the relay: a
//! failed poll is logged and retried after the engine's one backoff
//! schedule; a closed consumer ends the thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::context::StopSignal;
use crate::error::Error;
use crate::stats::Counters;
use crate::transport::{Consumer, ConsumerEvent};

/// Step of the wait after a failed poll, so a stop is noticed.
const WAIT_STEP: Duration = Duration::from_millis(10);

/// Polls one consumer, backing off after failures.
pub(crate) struct Poller {
    /// What is polled, for logs and errors ("consumer", "relay consumer").
    what: String,
    /// Where it reads, for logs.
    reads: String,
    backoff: Backoff,
    /// The wait owed after the last failed poll.
    owed: Option<Duration>,
    /// For `auth_failures`.
    counters: Arc<Counters>,
}

impl Poller {
    pub(crate) fn new(
        what: impl Into<String>,
        reads: impl Into<String>,
        counters: Arc<Counters>,
    ) -> Self {
        Poller {
            what: what.into(),
            reads: reads.into(),
            backoff: Backoff::default(),
            owed: None,
            counters,
        }
    }

    /// One poll. `Ok(None)`: it failed and was logged; call
    /// [`Poller::back_off`] before the next. `Err`: the consumer is closed.
    pub(crate) fn poll(
        &mut self,
        consumer: &mut dyn Consumer,
        timeout: Duration,
    ) -> Result<Option<ConsumerEvent>, String> {
        match consumer.poll(timeout) {
            Ok(event) => {
                self.backoff.reset();
                Ok(Some(event))
            }
            Err(Error::Closed) => Err(format!("{} closed", self.what)),
            Err(e) if self.counters.auth_failed(&e) => {
                // Refused credentials: every new connection would be
                // refused too; wait the longest back-off at once.
                let wait = Backoff::after_failures(u32::MAX);
                log::error!(
                    "{} poll {} failed, retrying in {wait:?}: {e}",
                    self.what,
                    self.reads
                );
                self.owed = Some(wait);
                Ok(None)
            }
            Err(e) => {
                let wait = self.backoff.next_wait();
                log::warn!(
                    "{} poll {} failed, retrying in {wait:?}: {e}",
                    self.what,
                    self.reads
                );
                self.owed = Some(wait);
                Ok(None)
            }
        }
    }

    /// Waits what the last failed poll owes, in short steps, calling
    /// `meanwhile` at each step (the relay keeps relaying what is due) and
    /// ending early when the engine stops.
    pub(crate) fn back_off(&mut self, signal: &StopSignal, mut meanwhile: impl FnMut()) {
        let Some(wait) = self.owed.take() else {
            return;
        };
        let until = Instant::now() + wait;
        while Instant::now() < until && !signal.stopping() {
            meanwhile();
            std::thread::sleep(WAIT_STEP.min(until.saturating_duration_since(Instant::now())));
        }
    }
}

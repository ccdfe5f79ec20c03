//! The user's record handler.

use std::time::Duration;

use crate::record::Record;

/// What the handler decided about a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled; the record is done.
    Done,
    /// Cannot be handled yet: park it on the retry topic and try again after
    /// the policy's interval. The reason is kept in `retry.reason`.
    Retry(String),
    /// Never retry: straight to the dead-letter topic with reason `rejected`.
    Reject(String),
    /// Like [`Outcome::Retry`], but the record comes back no earlier than
    /// `delay` from now instead of after the policy's interval (a downstream
    /// answered `Retry-After: 30`, a rate limit resets in 2 s). Made with
    /// [`Outcome::retry_after`]; see there for the bounds.
    RetryAfter {
        /// How long to wait, from the moment the handler returned.
        delay: Duration,
        /// Kept in `retry.reason`.
        reason: String,
    },
}

impl Outcome {
    /// `Outcome::Retry` with a reason.
    ///
    /// ```
    /// use kafka_retry::Outcome;
    /// assert_eq!(Outcome::retry("customer not found"), Outcome::Retry("customer not found".into()));
    /// ```
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry(reason.into())
    }

    /// Retry no earlier than `delay` from now. The due time (ms since the
    /// Unix epoch) travels in the `retry.due-at` header, so a restarted relay
    /// computes the same due time. The policy still bounds it:
    ///
    /// - `max_attempts` counts it like any other retry (dead reason
    ///   `attempts`).
    /// - A delay that would bring the record back after
    ///   `max_retry_duration` has run out (a huge delay, `Duration::MAX`, an
    ///   overflowing one) cannot be honoured: the record is dead-lettered at
    ///   once with reason `expired`, the delay named in `retry.reason`.
    /// - A zero delay means "no delay of my own": the policy's interval (and
    ///   backoff) applies, exactly as for [`Outcome::retry`].
    ///
    /// Sub-millisecond parts are rounded up to the next millisecond, so the
    /// record never comes back early.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kafka_retry::Outcome;
    /// let o = Outcome::retry_after(Duration::from_secs(30), "Retry-After: 30");
    /// assert!(matches!(o, Outcome::RetryAfter { delay, .. } if delay == Duration::from_secs(30)));
    /// ```
    pub fn retry_after(delay: Duration, reason: impl Into<String>) -> Self {
        Outcome::RetryAfter {
            delay,
            reason: reason.into(),
        }
    }

    /// `Outcome::Reject` with a reason.
    ///
    /// ```
    /// use kafka_retry::Outcome;
    /// assert_eq!(Outcome::reject("bad schema"), Outcome::Reject("bad schema".into()));
    /// ```
    pub fn reject(reason: impl Into<String>) -> Self {
        Outcome::Reject(reason.into())
    }
}

/// Handles records. Called from several worker threads at once; records with
/// the same key always go to the same worker, in partition order.
///
/// Most handlers are closures, given to
/// [`EngineBuilder::handler`](crate::EngineBuilder::handler), which infers
/// the argument's type (`.handler(|r| ...)`). A type with state of its own
/// implements `Handler` and goes to
/// [`EngineBuilder::handler_impl`](crate::EngineBuilder::handler_impl):
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use kafka_retry::{Engine, Handler, MemoryBroker, Outcome, Record};
///
/// struct Counting(AtomicU64);
/// impl Handler for Counting {
///     fn handle(&self, r: &Record) -> Outcome {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         match r.value.as_deref() {
///             Some(b"ok") => Outcome::Done,
///             _ => Outcome::retry("not yet"),
///         }
///     }
/// }
/// let builder = Engine::builder(MemoryBroker::new()).handler_impl(Counting(AtomicU64::new(0)));
/// ```
///
/// Closures implement `Handler` too, so generic code can take either.
///
/// A redelivered record carries the `retry.*` headers (attempts, first
/// received time) next to its own. A panic is caught: the worker survives
/// and the record is retried with the panic message as its reason.
pub trait Handler: Send + Sync + 'static {
    /// Decides what happens to `record`.
    fn handle(&self, record: &Record) -> Outcome;
}

impl<F> Handler for F
where
    F: Fn(&Record) -> Outcome + Send + Sync + 'static,
{
    fn handle(&self, record: &Record) -> Outcome {
        self(record)
    }
}

//! The user's record handler.

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

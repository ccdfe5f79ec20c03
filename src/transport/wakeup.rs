//! A handle another thread uses to stop a consumer waiting in a group join.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Lets another thread tell a [`Consumer`](super::Consumer) to stop waiting
/// for a group join, for a shutdown: once woken, a
/// [`poll`](super::Consumer::poll) that waits for the coordinator to
/// complete a join returns no records instead of waiting on, and
/// [`close`](super::Consumer::close) may follow at once. The join goes on
/// in the background until then (a later poll keeps waiting for it); the
/// close abandons it, as a close during a cooperative rejoin does.
///
/// Java's `KafkaConsumer::wakeup` does this for one call; this one stays
/// woken, since it is for stopping. Set it as
/// [`ConsumerConfig::wakeup`](super::ConsumerConfig::wakeup); the engine
/// gives its consumers one and wakes it when asked to shut down, so a
/// group stuck in a rebalance does not hold a shutdown past its deadline.
/// A transport whose polls never wait longer than their timeout (the
/// memory broker) may ignore it.
///
/// ```
/// let w = kafka_retry::transport::Wakeup::new();
/// let seen_by_the_consumer = w.clone();
/// w.wake();
/// assert!(seen_by_the_consumer.is_woken());
/// ```
#[derive(Clone, Default)]
pub struct Wakeup(Arc<AtomicBool>);

impl Wakeup {
    /// A handle not yet woken.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every consumer given a clone of this handle, for good.
    pub fn wake(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`Wakeup::wake`] was called.
    pub fn is_woken(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Equal when they are clones of one handle.
impl PartialEq for Wakeup {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Wakeup {}

impl std::fmt::Debug for Wakeup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Wakeup").field(&self.is_woken()).finish()
    }
}

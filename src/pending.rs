//! A one-shot acknowledgement: what [`Producer::send_async`](crate::transport::Producer::send_async)
//! returns.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::record::Delivered;

/// Where one result lands. A mutex and condvar rather than a channel:
/// crossbeam's `recv` spins and yields before it parks, and with dozens of
/// threads waiting those yields starved the thread that answers them.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct State {
    result: Option<Result<Delivered>>,
    /// Threads blocked in `ready.wait`. `notify_all` is a system call even
    /// with nobody waiting, and most results land before anyone waits
    /// (pipelined writes): notify only when someone does.
    waiters: u32,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fill(&self, result: Result<Delivered>) {
        let mut st = self.lock();
        st.result = Some(result);
        let wake = st.waiters > 0;
        drop(st);
        if wake {
            self.ready.notify_all();
        }
    }
}

/// The outcome of a write that may still be in flight.
///
/// ```
/// use kafka_retry::{transport::Pending, Delivered};
/// let (pending, completer) = Pending::new();
/// completer.complete(Ok(Delivered { topic: "t".into(), partition: 0, offset: 7 }));
/// assert_eq!(pending.wait().unwrap().offset, 7);
/// ```
#[derive(Debug)]
#[must_use = "a write is acknowledged only when its Pending says so"]
pub struct Pending(Arc<Slot>);

/// The answering half of a [`Pending`]. Dropped without answering (its
/// owner died), it answers with an error, so no one waits forever.
#[derive(Debug)]
pub struct Completer(Option<Arc<Slot>>);

impl Pending {
    /// A pending result and the completer that will fill it.
    pub fn new() -> (Pending, Completer) {
        let slot = Arc::new(Slot::default());
        (Pending(slot.clone()), Completer(Some(slot)))
    }

    /// An already known result.
    pub fn ready(result: Result<Delivered>) -> Pending {
        let (p, c) = Pending::new();
        c.complete(result);
        p
    }

    /// Blocks until the result is known.
    pub fn wait(self) -> Result<Delivered> {
        let mut st = self.0.lock();
        loop {
            if let Some(result) = st.result.take() {
                return result;
            }
            st.waiters += 1;
            st = self.0.ready.wait(st).unwrap_or_else(|e| e.into_inner());
            st.waiters -= 1;
        }
    }

    /// Blocks until the result is known or `deadline` passes (then `None`,
    /// and this `Pending` can be asked again).
    pub fn wait_deadline(&self, deadline: Instant) -> Option<Result<Delivered>> {
        let mut st = self.0.lock();
        loop {
            if let Some(result) = st.result.take() {
                return Some(result);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st.waiters += 1;
            st = self
                .0
                .ready
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            st.waiters -= 1;
        }
    }

    /// The result if it is known, without blocking.
    pub fn try_take(&self) -> Option<Result<Delivered>> {
        self.0.lock().result.take()
    }
}

impl Completer {
    /// Answers the [`Pending`].
    pub fn complete(mut self, result: Result<Delivered>) {
        if let Some(slot) = self.0.take() {
            slot.fill(result);
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.fill(Err(Error::Thread(
                "the write was dropped without an answer".into(),
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answered_from_another_thread_and_dropped_unanswered() {
        let (p, c) = Pending::new();
        assert!(p.try_take().is_none());
        assert!(p
            .wait_deadline(Instant::now() + Duration::from_millis(10))
            .is_none());
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            c.complete(Ok(Delivered {
                topic: "t".into(),
                partition: 1,
                offset: 2,
            }));
        });
        assert_eq!(p.wait().unwrap().offset, 2);
        t.join().unwrap();
        let (p, c) = Pending::new();
        drop(c);
        assert!(matches!(p.wait(), Err(Error::Thread(_))));
    }
}

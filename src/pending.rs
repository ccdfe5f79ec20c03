//! A one-shot acknowledgement: what [`Producer::send_async`](crate::transport::Producer::send_async)
//! returns.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::record::Delivered;

/// Where one result lands, or the results of one batch of writes. A mutex
/// and condvar rather than a channel: crossbeam's `recv` spins and yields
/// before it parks, and with dozens of threads waiting those yields starved
/// the thread that answers them.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The result of completer 0 (the only one of a [`Pending`]): inline,
    /// so a single write costs no allocation besides the slot.
    first: Option<Result<Delivered>>,
    /// The results of completers 1.. of a [`PendingBatch`].
    rest: Vec<Option<Result<Delivered>>>,
    /// Completers not answered yet. Waiters wake once, when it reaches 0:
    /// one wake-up per batch, not per record.
    left: usize,
    /// Threads blocked in `ready.wait`. `notify_all` is a system call even
    /// with nobody waiting, and most results land before anyone waits
    /// (pipelined writes): notify only when someone does.
    waiters: u32,
}

impl State {
    fn result_mut(&mut self, index: usize) -> Option<&mut Option<Result<Delivered>>> {
        match index {
            0 => Some(&mut self.first),
            i => self.rest.get_mut(i - 1),
        }
    }
}

impl Slot {
    fn new(n: usize) -> Slot {
        Slot {
            state: Mutex::new(State {
                first: None,
                rest: (1..n).map(|_| None).collect(),
                left: n,
                waiters: 0,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers completer `index` (once: a second answer is ignored).
    fn fill(&self, index: usize, result: Result<Delivered>) {
        let mut st = self.lock();
        match st.result_mut(index) {
            Some(r @ None) => *r = Some(result),
            _ => return,
        }
        st.left -= 1;
        let wake = st.left == 0 && st.waiters > 0;
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
pub struct Completer {
    slot: Option<Arc<Slot>>,
    /// Which result of the slot this answers (0 for a [`Pending`]).
    index: usize,
}

/// The results of several writes (the Kafka producer's `send_batch`),
/// waited for together: the waiter wakes once, when the last lands, where a
/// [`Pending`] per record would wake it once per record whenever it runs
/// ahead of the answers.
#[derive(Debug)]
#[must_use = "writes are acknowledged only when their results say so"]
#[cfg_attr(not(feature = "kafka"), allow(dead_code))] // only the Kafka producer batches
pub(crate) struct PendingBatch {
    slot: Arc<Slot>,
    /// How many results (the slot holds at least one).
    len: usize,
}

impl Pending {
    /// A pending result and the completer that will fill it.
    pub fn new() -> (Pending, Completer) {
        let slot = Arc::new(Slot::new(1));
        let completer = Completer {
            slot: Some(slot.clone()),
            index: 0,
        };
        (Pending(slot), completer)
    }

    /// `n` pending results waited for together, and their completers in
    /// order.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn batch(n: usize) -> (PendingBatch, Vec<Completer>) {
        let slot = Arc::new(Slot::new(n));
        let completers = (0..n)
            .map(|index| Completer {
                slot: Some(slot.clone()),
                index,
            })
            .collect();
        (PendingBatch { slot, len: n }, completers)
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
            if let Some(result) = st.first.take() {
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
            if let Some(result) = st.first.take() {
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
        self.0.lock().first.take()
    }
}

#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
impl PendingBatch {
    /// Blocks until every result is known; results in completer order.
    pub(crate) fn wait(self) -> Vec<Result<Delivered>> {
        let mut st = self.slot.lock();
        while st.left > 0 {
            st.waiters += 1;
            st = self.slot.ready.wait(st).unwrap_or_else(|e| e.into_inner());
            st.waiters -= 1;
        }
        let first = st.first.take();
        let rest = std::mem::take(&mut st.rest);
        drop(st);
        std::iter::once(first)
            .chain(rest)
            .take(self.len)
            .map(|r| r.unwrap_or_else(|| Err(Error::Protocol("write not answered (bug)".into()))))
            .collect()
    }
}

impl Completer {
    /// Answers the [`Pending`].
    pub fn complete(mut self, result: Result<Delivered>) {
        if let Some(slot) = self.slot.take() {
            slot.fill(self.index, result);
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.fill(
                self.index,
                Err(Error::Thread(
                    "the write was dropped without an answer".into(),
                )),
            );
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

    #[test]
    fn batch_answers_in_order_and_wakes_once_all_landed() {
        let d = |offset| Delivered {
            topic: "t".into(),
            partition: 0,
            offset,
        };
        let (batch, mut cs) = Pending::batch(3);
        let last = cs.pop().unwrap();
        let middle = cs.pop().unwrap();
        let first = cs.pop().unwrap();
        let t = std::thread::spawn(move || {
            last.complete(Ok(d(2)));
            std::thread::sleep(Duration::from_millis(20));
            drop(middle); // a dropped completer answers with an error
            first.complete(Ok(d(0)));
        });
        let results = batch.wait();
        t.join().unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().unwrap().offset, 0);
        assert!(matches!(results[1], Err(Error::Thread(_))));
        assert_eq!(results[2].as_ref().unwrap().offset, 2);
        let (batch, cs) = Pending::batch(0);
        assert!(cs.is_empty());
        assert!(batch.wait().is_empty());
    }
}

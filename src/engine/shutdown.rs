//! [`ShutdownReport`]: what a shutdown could not finish, carried by
//! [`Error::Shutdown`](crate::Error::Shutdown).

use std::fmt;

use crate::record::TopicPartition;

/// What [`Engine::shutdown`](crate::Engine::shutdown) could not finish:
/// records abandoned, partitions left uncommitted, threads still running
/// at the deadline and what went wrong. Carried by
/// [`Error::Shutdown`](crate::Error::Shutdown); a clean shutdown returns
/// `Ok(())` instead.
///
/// Nothing in it is lost: an abandoned record was not committed, so the
/// next owner of its partition (or the next start) reads it again, from
/// the offsets listed in [`ShutdownReport::uncommitted`].
///
/// Records parked in the relay for a later retry are not listed: they sit
/// on the retry topic by design, and the next relay re-reads them.
///
/// ```
/// use std::time::Duration;
/// use kafka_retry::{Engine, Error, MemoryBroker, OutRecord, Outcome};
/// let broker = MemoryBroker::new();
/// broker.create_topic("orders", 1)?;
/// let engine = Engine::builder(broker.clone())
///     .group_id("billing")
///     .topics(["orders"])
///     .handler(|_r| {
///         std::thread::sleep(Duration::from_millis(20));
///         Outcome::Done
///     })
///     .build()?;
/// for i in 0..200 {
///     broker.produce(OutRecord::new("orders").value(format!("{i}")))?;
/// }
/// std::thread::sleep(Duration::from_millis(100));
/// match engine.shutdown(Duration::from_millis(300)) {
///     Ok(()) => {}
///     Err(Error::Shutdown(report)) => {
///         assert!(report.abandoned > 0);
///         for (tp, from) in &report.uncommitted {
///             println!("{tp}: re-read from offset {from}");
///         }
///     }
///     Err(e) => panic!("{e}"),
/// }
/// # Ok::<(), kafka_retry::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Records read from the origin topics and not finished (queued for a
    /// worker, or still in the handler or in a write at the deadline).
    pub abandoned: u64,
    /// Partitions with records read but not committed, each with the first
    /// offset not committed: the next owner reads again from there. Origin
    /// partitions with abandoned records or a failed final commit, and
    /// retry-topic partitions whose final commit failed.
    pub uncommitted: Vec<(TopicPartition, i64)>,
    /// Threads still running at the deadline, each with what it was doing
    /// (`kafka-retry-worker-0: in the handler for 2.1 s`). They were left
    /// detached; they stop on their own once that step returns.
    pub threads_not_stopped: Vec<String>,
    /// What failed: a final commit and its cause, a thread that ended with
    /// an error or a panic.
    pub errors: Vec<String>,
}

impl ShutdownReport {
    /// True when there is nothing to report.
    pub fn is_clean(&self) -> bool {
        self.abandoned == 0
            && self.uncommitted.is_empty()
            && self.threads_not_stopped.is_empty()
            && self.errors.is_empty()
    }
}

impl fmt::Display for ShutdownReport {
    /// `2 records abandoned; not committed: t-0 from offset 12; still
    /// running: kafka-retry-worker-1: in the handler for 2.0 s; errors: ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.abandoned > 0 {
            let s = if self.abandoned == 1 { "" } else { "s" };
            parts.push(format!("{} record{s} abandoned", self.abandoned));
        }
        if !self.uncommitted.is_empty() {
            let v: Vec<String> = self
                .uncommitted
                .iter()
                .map(|(tp, o)| format!("{tp} from offset {o}"))
                .collect();
            parts.push(format!("not committed: {}", v.join(", ")));
        }
        if !self.threads_not_stopped.is_empty() {
            parts.push(format!(
                "still running at the deadline: {}",
                self.threads_not_stopped.join("; ")
            ));
        }
        if !self.errors.is_empty() {
            parts.push(self.errors.join("; "));
        }
        if parts.is_empty() {
            return f.write_str("clean");
        }
        f.write_str(&parts.join("; "))
    }
}

//! The partitions a group member owns, each under its [`Lease`], and the
//! watermark commit. Shared by the consumer thread and the relay.
//!
//! Invariant: what is committed for a partition is its tracker's watermark
//! (the lowest offset not done), so a crash never skips unfinished work.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::health::Streak;
use super::lease::Lease;
use crate::clock::now_ms;
use crate::error::Result;
use crate::record::TopicPartition;
use crate::stats::Counters;
use crate::transport::Consumer;
#[cfg(feature = "metrics")]
use crate::transport::PartitionProgress;

/// One owned partition.
pub(crate) struct Part {
    pub lease: Arc<Lease>,
    /// Paused by this engine (workers busy, heap full).
    pub paused: bool,
}

/// Owned partitions by topic-partition.
#[derive(Default)]
pub(crate) struct Partitions {
    parts: HashMap<TopicPartition, Part>,
}

impl Partitions {
    /// Takes these partitions on, each under a fresh lease. A partition
    /// already owned keeps its lease (and in-flight work): with cooperative
    /// rebalancing an assignment adds to what is kept, and a fresh lease
    /// would orphan the work in flight under the old one.
    pub(crate) fn assign(&mut self, tps: Vec<TopicPartition>) {
        for tp in tps {
            self.parts.entry(tp.clone()).or_insert_with(|| Part {
                lease: Lease::new(tp),
                paused: false,
            });
        }
    }

    /// Marks the leases of `tps` revoked: their work is stale from now on.
    pub(crate) fn revoke(&self, tps: &[TopicPartition]) {
        for tp in tps {
            if let Some(p) = self.parts.get(tp) {
                p.lease.revoke();
            }
        }
    }

    /// Forgets `tps` (revoke them first).
    pub(crate) fn remove(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            self.parts.remove(tp);
        }
    }

    pub(crate) fn get(&self, tp: &TopicPartition) -> Option<&Part> {
        self.parts.get(tp)
    }

    pub(crate) fn len(&self) -> usize {
        self.parts.len()
    }

    pub(crate) fn keys(&self) -> Vec<TopicPartition> {
        self.parts.keys().cloned().collect()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Part> {
        self.parts.values()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&TopicPartition, &mut Part)> {
        self.parts.iter_mut()
    }

    /// Records read and not done, and per partition the first offset not
    /// committed (see `OffsetTracker::uncommitted_from`).
    pub(crate) fn unfinished(&self) -> (u64, Vec<(TopicPartition, i64)>) {
        let mut abandoned = 0;
        let mut from = Vec::new();
        for (tp, p) in &self.parts {
            let t = p.lease.tracker();
            abandoned += t.in_flight() as u64;
            if let Some(o) = t.uncommitted_from() {
                from.push((tp.clone(), o));
            }
        }
        from.sort();
        (abandoned, from)
    }

    /// Consumer lag of every owned partition the consumer has seen the log
    /// end of: log end minus the offset committed (before this engine
    /// committed anything: its watermark, or the consumer's position
    /// before any record was read), never negative.
    #[cfg(feature = "metrics")]
    pub(crate) fn lags(&self, progress: &[PartitionProgress]) -> Vec<(TopicPartition, i64)> {
        progress
            .iter()
            .filter_map(|p| {
                let part = self.parts.get(&p.partition)?;
                let end = p.log_end?;
                let at = part.lease.tracker().group_position().or(p.position)?;
                Some((p.partition.clone(), (end - at).max(0)))
            })
            .collect()
    }

    /// The watermarks of `tps` that moved since their last commit.
    pub(crate) fn to_commit(&self, tps: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        tps.iter()
            .filter_map(|tp| {
                let w = self.parts.get(tp)?.lease.tracker().to_commit()?;
                Some((tp.clone(), w))
            })
            .collect()
    }

    /// Commits the watermarks of `tps` that moved, counting failures (and
    /// the failure streak, for health) and stamping the time of the last
    /// success.
    pub(crate) fn commit(
        &self,
        consumer: &mut dyn Consumer,
        counters: &Counters,
        streak: &Streak,
        tps: &[TopicPartition],
    ) -> Result<()> {
        let offsets = self.to_commit(tps);
        if offsets.is_empty() {
            return Ok(());
        }
        if let Err(e) = consumer.commit(&offsets) {
            counters.commit_errors.fetch_add(1, Ordering::Relaxed);
            streak.failed(&e);
            return Err(e);
        }
        streak.ok();
        counters
            .last_commit_ms
            .store(now_ms().max(1), Ordering::Relaxed);
        for (tp, o) in &offsets {
            if let Some(p) = self.parts.get(tp) {
                p.lease.tracker().committed(*o);
            }
        }
        Ok(())
    }

    /// [`Partitions::commit`] for every owned partition.
    pub(crate) fn commit_all(
        &self,
        consumer: &mut dyn Consumer,
        counters: &Counters,
        streak: &Streak,
    ) -> Result<()> {
        self.commit(consumer, counters, streak, &self.keys())
    }
}

//! The leader's watch on partition counts (see "New partitions" in the
//! module docs of `group`): what it assigned from, and the periodic check
//! that asks for a rebalance when a subscribed topic grew or appeared.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::super::client::TopicState;
use super::membership::GenerationEnd;
use super::{GroupConsumer, Phase};

/// What the leader assigned from, and when to compare it with the cluster.
#[derive(Debug)]
pub(super) struct MetadataWatch {
    /// Partition count per topic of the group's subscriptions; `None`: the
    /// topic did not exist.
    pub(super) counts: BTreeMap<String, Option<i32>>,
    pub(super) next_check: Instant,
}

/// The first difference between what the leader assigned from and a
/// Metadata answer for the same topics, described for the log; `None` when
/// nothing changed. A topic the answer is unsure about (an error, no
/// partitions listed yet, left out of the reply) counts as unchanged: a
/// transient metadata error must not rebalance the whole group.
fn metadata_change(
    assigned: &BTreeMap<String, Option<i32>>,
    now: &HashMap<String, TopicState>,
) -> Option<String> {
    for (topic, &before) in assigned {
        let after = match now.get(topic) {
            Some(TopicState::Missing) => None,
            Some(TopicState::Leaders(l)) if !l.is_empty() => {
                Some(i32::try_from(l.len()).unwrap_or(i32::MAX))
            }
            Some(TopicState::Leaders(_)) | Some(TopicState::Failed(_)) | None => continue,
        };
        if after != before {
            let show = |n: Option<i32>| match n {
                Some(n) => format!("{n} partitions"),
                None => "missing".to_string(),
            };
            return Some(format!("{topic}: {} -> {}", show(before), show(after)));
        }
    }
    None
}

impl GroupConsumer {
    /// The leader's periodic partition-count check (module docs, "New
    /// partitions"). Does nothing unless this member leads an Active
    /// generation and `metadata_max_age` passed since the last check, so
    /// polls in between cost one clock read. One Metadata request without
    /// retries (a failure just waits for the next check), so a poll is held
    /// up for one round trip at most.
    pub(super) fn check_metadata(&mut self) {
        if self.phase != Phase::Active {
            return;
        }
        let Some(watch) = self.watch.as_mut() else {
            return;
        };
        if Instant::now() < watch.next_check {
            return;
        }
        let topics: Vec<String> = watch.counts.keys().cloned().collect();
        let answer = self.client.fetch_metadata_once(&topics);
        watch.next_check = Instant::now() + self.client.config().metadata_max_age;
        let change = match answer {
            Ok(states) => metadata_change(&watch.counts, &states),
            Err(e) => {
                log::debug!(
                    "group {}: partition count check failed, retrying in {:?}: {e}",
                    self.config.group_id,
                    self.client.config().metadata_max_age
                );
                None
            }
        };
        let Some(change) = change else {
            return;
        };
        log::info!(
            "group {}: {change} since the assignment; rebalancing",
            self.config.group_id
        );
        // The rejoin records the new counts; until then nothing to compare.
        let Some(watch) = self.watch.take() else {
            return;
        };
        if let Some(gen) = self.current() {
            self.rebalance_requests = self.rebalance_requests.wrapping_add(1).max(1);
            self.requested_in = Some((gen.id, watch.counts));
            self.membership.report(&gen, GenerationEnd::Rebalance);
        }
    }
}

impl GroupConsumer {
    /// Asks for a rebalance when this member's claims changed since its
    /// last join published them (module docs, "Claims"). Cheap when they
    /// did not: one lock. Only from an Active generation with no rejoin
    /// under way: a join in progress publishes them itself, and a change
    /// made meanwhile is seen once it completes.
    pub(super) fn check_claims(&mut self) {
        let Some(claims) = &self.config.claims else {
            return;
        };
        if self.phase != Phase::Active || self.rejoin.is_some() || self.after_revoke.is_some() {
            return;
        }
        let version = claims.version();
        if version == self.claims_published {
            return;
        }
        if let Some(gen) = self.current() {
            log::info!(
                "group {}: member {} claims {:?}; rebalancing",
                self.config.group_id,
                self.member_id,
                claims
                    .partitions()
                    .iter()
                    .map(|tp| tp.to_string())
                    .collect::<Vec<_>>()
            );
            // Once per change: the join that follows publishes `version`.
            self.claims_published = version;
            self.membership.report(&gen, GenerationEnd::Rebalance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_change_sees_growth_creation_and_deletion_only() {
        let assigned: BTreeMap<String, Option<i32>> =
            [("orders".to_string(), Some(2)), ("late".to_string(), None)]
                .into_iter()
                .collect();
        let answer = |orders: TopicState, late: TopicState| -> HashMap<String, TopicState> {
            [("orders".to_string(), orders), ("late".to_string(), late)]
                .into_iter()
                .collect()
        };
        let two = || TopicState::Leaders(vec![1, 1]);
        // Same counts, even with a partition between leaders: no change.
        assert_eq!(
            metadata_change(
                &assigned,
                &answer(TopicState::Leaders(vec![1, -1]), TopicState::Missing)
            ),
            None
        );
        // Unsure answers are not changes.
        for unsure in [TopicState::Failed(5), TopicState::Leaders(Vec::new())] {
            assert_eq!(
                metadata_change(&assigned, &answer(unsure, TopicState::Missing)),
                None
            );
        }
        assert_eq!(metadata_change(&assigned, &HashMap::new()), None);
        // Growth.
        assert_eq!(
            metadata_change(
                &assigned,
                &answer(TopicState::Leaders(vec![1; 4]), TopicState::Missing)
            )
            .as_deref(),
            Some("orders: 2 partitions -> 4 partitions")
        );
        // A subscribed topic that now exists.
        assert_eq!(
            metadata_change(&assigned, &answer(two(), two())).as_deref(),
            Some("late: missing -> 2 partitions")
        );
        // A deleted topic (Java rebalances too: its partitions are gone).
        assert_eq!(
            metadata_change(&assigned, &answer(TopicState::Missing, TopicState::Missing))
                .as_deref(),
            Some("orders: 2 partitions -> missing")
        );
    }
}

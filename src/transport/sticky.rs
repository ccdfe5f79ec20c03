//! The cooperative-sticky assignment (KIP-429), shared by the memory
//! broker's group and the Kafka client's leader.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::record::TopicPartition;

/// A member as the cooperative-sticky assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct StickyMember {
    pub(crate) id: String,
    pub(crate) topics: Vec<String>,
    /// Partitions it owns now (from its subscription, v1+).
    pub(crate) owned: Vec<TopicPartition>,
    /// The generation `owned` is from (-1: unknown); on a conflict the
    /// newest claim wins, as in Java.
    pub(crate) generation: i32,
}

/// The current owner of each partition, from `(member id, owned, the
/// generation owned is from)`: when two members say they own one, the
/// newest generation's wins (the first such member on a tie), as in Java.
pub(crate) fn owners<'a>(
    members: impl IntoIterator<Item = (&'a str, &'a [TopicPartition], i32)>,
) -> BTreeMap<&'a TopicPartition, (&'a str, i32)> {
    let mut owner: BTreeMap<&TopicPartition, (&str, i32)> = BTreeMap::new();
    for (id, owned, generation) in members {
        for tp in owned {
            match owner.get(tp) {
                Some(&(_, g)) if g >= generation => {}
                _ => {
                    owner.insert(tp, (id, generation));
                }
            }
        }
    }
    owner
}

/// The cooperative-sticky assignment (KIP-429, after Java's
/// `CooperativeStickyAssignor`): per topic, among its subscribers, each
/// keeps what it owns up to its balanced share (`n / m`, or one more for
/// `n % m` of them, preferring those with fewer partitions so far); the
/// rest goes to the members with the fewest. Then the cooperative rule: a
/// partition that moves to a new owner is *withheld* this generation (in
/// nobody's assignment), so its old owner revokes it first; the follow-up
/// rebalance, which the revoking member starts, assigns it. Every member
/// appears in the result. Balance is per topic; across topics it is within
/// one partition per topic.
pub(crate) fn cooperative_sticky_assign(
    members: &[StickyMember],
    mut partition_count: impl FnMut(&str) -> Result<Option<i32>>,
) -> Result<BTreeMap<String, Vec<TopicPartition>>> {
    let mut target: BTreeMap<&str, BTreeSet<TopicPartition>> = members
        .iter()
        .map(|m| (m.id.as_str(), BTreeSet::new()))
        .collect();
    let owner = owners(
        members
            .iter()
            .map(|m| (m.id.as_str(), &m.owned[..], m.generation)),
    );
    let mut subscribers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in members {
        for t in &m.topics {
            subscribers.entry(t).or_default().push(m.id.as_str());
        }
    }
    for (topic, mut ids) in subscribers {
        ids.sort_unstable();
        ids.dedup();
        let n = match partition_count(topic)? {
            Some(n) if n > 0 => n,
            _ => {
                log::warn!(
                    "cooperative-sticky assignor: topic {topic} does not exist; nobody gets it"
                );
                continue;
            }
        };
        let m = ids.len();
        let (floor, mut extra) = (n as usize / m, n as usize % m);
        // Who gets one more: those with fewest partitions so far, then
        // those owning more of this topic (less movement), then by id.
        let owns = |id: &str| {
            (0..n)
                .filter(|&p| {
                    owner
                        .get(&TopicPartition::new(topic, p))
                        .is_some_and(|(o, _)| *o == id)
                })
                .count()
        };
        let mut order: Vec<&str> = ids.clone();
        order.sort_by_key(|id| (target[id].len(), std::cmp::Reverse(owns(id)), *id));
        let mut quota: BTreeMap<&str, usize> = BTreeMap::new();
        for id in order {
            let q = floor + usize::from(extra > 0);
            extra = extra.saturating_sub(1);
            quota.insert(id, q);
        }
        let mut count: BTreeMap<&str, usize> = ids.iter().map(|id| (*id, 0)).collect();
        let mut free = Vec::new();
        for p in 0..n {
            let tp = TopicPartition::new(topic, p);
            match owner.get(&tp) {
                Some(&(o, _)) if quota.contains_key(o) && count[o] < quota[o] => {
                    *count.entry(o).or_default() += 1;
                    target.entry(o).or_default().insert(tp);
                }
                _ => free.push(tp),
            }
        }
        for tp in free {
            // The member furthest below its quota, then by id.
            let Some(id) = ids
                .iter()
                .filter(|id| count[**id] < quota[**id])
                .max_by_key(|id| (quota[**id] - count[**id], std::cmp::Reverse(**id)))
                .copied()
            else {
                break;
            };
            *count.entry(id).or_default() += 1;
            target.entry(id).or_default().insert(tp);
        }
    }
    // Withhold partitions that change hands until their owner revoked them.
    let mut out = BTreeMap::new();
    for (id, parts) in target {
        let kept: Vec<TopicPartition> = parts
            .into_iter()
            .filter(|tp| owner.get(tp).is_none_or(|(o, _)| *o == id))
            .collect();
        out.insert(id.to_string(), kept);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tps(list: &[(&str, i32)]) -> Vec<TopicPartition> {
        list.iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect()
    }

    fn sticky(id: &str, owned: &[(&str, i32)], generation: i32) -> StickyMember {
        StickyMember {
            id: id.into(),
            topics: vec!["t".into()],
            owned: tps(owned),
            generation,
        }
    }

    fn six(t: &str) -> Result<Option<i32>> {
        Ok((t == "t").then_some(6))
    }

    #[test]
    fn a_third_member_takes_partitions_in_two_steps_and_nothing_else_moves() {
        let a = sticky("a", &[("t", 0), ("t", 1), ("t", 2)], 3);
        let b = sticky("b", &[("t", 3), ("t", 4), ("t", 5)], 3);
        let c = sticky("c", &[], -1);
        // First rebalance: a and b keep two each; what moves to c is withheld.
        let first = cooperative_sticky_assign(&[a, b, c], six).unwrap();
        assert_eq!(first["a"], tps(&[("t", 0), ("t", 1)]));
        assert_eq!(first["b"], tps(&[("t", 3), ("t", 4)]));
        assert!(first["c"].is_empty(), "withheld until revoked");
        // Follow-up, after a and b revoked t-2 and t-5: c gets them.
        let a = sticky("a", &[("t", 0), ("t", 1)], 4);
        let b = sticky("b", &[("t", 3), ("t", 4)], 4);
        let c = sticky("c", &[], 4);
        let second = cooperative_sticky_assign(&[a, b, c], six).unwrap();
        assert_eq!(second["a"], tps(&[("t", 0), ("t", 1)]));
        assert_eq!(second["b"], tps(&[("t", 3), ("t", 4)]));
        assert_eq!(second["c"], tps(&[("t", 2), ("t", 5)]));
    }

    #[test]
    fn sticky_assignment_is_balanced_and_complete() {
        // Fresh group: 7 partitions over 3 members, 3/2/2, all assigned.
        let members = [
            sticky("a", &[], -1),
            sticky("b", &[], -1),
            sticky("c", &[], -1),
        ];
        let out = cooperative_sticky_assign(&members, |t| Ok((t == "t").then_some(7))).unwrap();
        let mut sizes: Vec<usize> = out.values().map(Vec::len).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![2, 2, 3]);
        let all: BTreeSet<TopicPartition> = out.values().flatten().cloned().collect();
        assert_eq!(all.len(), 7);
        // A member leaves: its partitions are free, nothing is withheld.
        let a = sticky("a", &[("t", 0), ("t", 1)], 5);
        let out = cooperative_sticky_assign(&[a], six).unwrap();
        assert_eq!(out["a"].len(), 6);
        // Two members claim one partition: the newer generation keeps it.
        let a = sticky("a", &[("t", 0)], 5);
        let b = sticky("b", &[("t", 0)], 4);
        let out = cooperative_sticky_assign(&[a, b], six).unwrap();
        assert!(out["a"].contains(&TopicPartition::new("t", 0)));
        assert!(!out["b"].contains(&TopicPartition::new("t", 0)));
        // Unknown topics go to nobody.
        let mut g = sticky("g", &[], -1);
        g.topics = vec!["gone".into()];
        assert!(cooperative_sticky_assign(&[g], six).unwrap()["g"].is_empty());
    }
}

//! Consumer-group state kept by the memory broker: members, generations,
//! the assignors (range for eager groups, sticky for cooperative ones, the
//! claims assignor when a member claims partitions, `transport/claims.rs`),
//! committed offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Inner, WakeFlag};
use crate::record::TopicPartition;
use crate::transport::claims::{claims_assign, ClaimMember};
use crate::transport::sticky::{cooperative_sticky_assign, StickyMember};
use crate::transport::Claims;

pub(super) struct Group {
    pub(super) id: String,
    pub(super) state: Mutex<GroupState>,
}

/// Group state, as Kafka's group coordinator keeps it (classic protocol).
///
/// Invariants: while `rebalance` is `None` every member has `rejoined ==
/// false` and `generation == self.generation` (the group is stable). While
/// it is `Some`, members with `rejoined == false` still own their
/// `assignment` of the current generation (they may commit); rejoined
/// members own nothing and wait for the next generation.
///
/// Every change a member must react to (rebalance started, generation
/// formed, eviction) raises the members' signals before the lock is
/// released.
pub(super) struct GroupState {
    pub(super) generation: i32,
    /// Sorted by member id: the range assignor's order.
    pub(super) members: BTreeMap<String, Member>,
    pub(super) rebalance: Option<Rebalance>,
    pub(super) committed: HashMap<TopicPartition, i64>,
    pub(super) next_member: u64,
    /// Static membership (KIP-345): `group.instance.id` -> member id.
    pub(super) instances: HashMap<String, String>,
    /// Member ids replaced by a newer member with their instance id: their
    /// consumers fail with FENCED_INSTANCE_ID.
    pub(super) fenced: BTreeSet<String>,
}

#[derive(Clone, Copy)]
pub(super) struct Rebalance {
    /// `None`: a rebalance timeout too large to represent; never expires.
    pub(super) deadline: Option<Instant>,
}

pub(super) struct Member {
    pub(super) topics: Vec<String>,
    pub(super) rebalance_timeout: Duration,
    pub(super) rejoined: bool,
    pub(super) generation: i32,
    pub(super) assignment: Vec<TopicPartition>,
    /// Raised to wake the member's `poll`.
    pub(super) signal: Arc<WakeFlag>,
    /// Offers the cooperative protocol (KIP-429).
    pub(super) cooperative: bool,
    /// Cooperative: partitions taken from it in the current generation
    /// that it has not released yet (it may still commit them).
    pub(super) revoking: Vec<TopicPartition>,
    /// Its `group.instance.id`, for a static member.
    pub(super) instance_id: Option<String>,
    /// Its claims (`ConsumerConfig::claims`), read when a generation forms.
    pub(super) claims: Option<Claims>,
    /// The version of `claims` the current generation was assigned from:
    /// a newer one rebalances the group (consumer.rs).
    pub(super) claims_version: u64,
    /// A static member closed for a restart: it stays in the group, its
    /// partitions unread, until this deadline (its session timeout), when
    /// it is removed and the group rebalances. `None`: present. (The
    /// memory broker has no session timeout for present members.)
    pub(super) away_until: Option<Instant>,
}

impl GroupState {
    fn wake_members(&self) {
        for m in self.members.values() {
            m.signal.raise();
        }
    }

    /// Enters PreparingRebalance (if not already there), then forms the
    /// next generation at once if every member has already rejoined.
    pub(super) fn start_rebalance(&mut self, now: Instant, inner: &Inner) {
        if self.members.is_empty() {
            return;
        }
        if self.rebalance.is_none() {
            // Kafka waits for the largest rebalance timeout of the members.
            let timeout = self
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default();
            self.rebalance = Some(Rebalance {
                deadline: now.checked_add(timeout),
            });
            self.wake_members();
        }
        self.try_complete(inner);
    }

    /// Whether the group rebalances cooperatively: every member offers it
    /// (as Kafka picks a protocol every member supports).
    pub(super) fn cooperative(&self) -> bool {
        !self.members.is_empty() && self.members.values().all(|m| m.cooperative)
    }

    /// Forms the next generation if a rebalance is pending and every member
    /// has rejoined. Eager: range assignment (rejoined members own
    /// nothing). Cooperative: sticky assignment from what members own; a
    /// partition moving from one member to another is withheld (nobody's)
    /// until its owner has revoked it, and a follow-up rebalance starts at
    /// once to hand it over.
    pub(super) fn try_complete(&mut self, inner: &Inner) {
        if self.rebalance.is_none() || !self.members.values().all(|m| m.rejoined) {
            return;
        }
        if self.members.is_empty() {
            self.rebalance = None;
            self.generation += 1;
            return;
        }
        self.generation += 1;
        let cooperative = self.cooperative();
        // Claims as they are now; a change from here on rebalances again.
        let mut claimed = false;
        let claim_members: Vec<ClaimMember> = self
            .members
            .iter_mut()
            .map(|(id, m)| {
                let claim = m.claims.as_ref().map(|c| {
                    let (version, claim) = c.snapshot();
                    m.claims_version = version;
                    claim
                });
                claimed |= claim.is_some();
                ClaimMember {
                    id: id.clone(),
                    topics: m.topics.clone(),
                    owned: if cooperative {
                        m.assignment.iter().chain(&m.revoking).cloned().collect()
                    } else {
                        Vec::new()
                    },
                    owned_generation: self.generation - 1,
                    claim,
                }
            })
            .collect();
        let mut assignment = if claimed {
            claims_assign(
                &claim_members,
                cooperative,
                |t| Ok(inner.partition_count(t)),
            )
            .unwrap_or_default()
            .into_iter()
            .collect()
        } else if cooperative {
            let members: Vec<StickyMember> = self
                .members
                .iter()
                .map(|(id, m)| StickyMember {
                    id: id.clone(),
                    topics: m.topics.clone(),
                    owned: m.assignment.iter().chain(&m.revoking).cloned().collect(),
                    generation: self.generation - 1,
                })
                .collect();
            cooperative_sticky_assign(&members, |t| Ok(inner.partition_count(t)))
                .unwrap_or_default()
                .into_iter()
                .collect()
        } else {
            let subs: Vec<(&str, &[String])> = self
                .members
                .iter()
                .map(|(id, m)| (id.as_str(), m.topics.as_slice()))
                .collect();
            range_assign(&subs, |t| inner.partition_count(t).unwrap_or(0))
        };
        // Partitions still owned by a member that does not keep them: it
        // revokes them first, nobody else gets them in this generation.
        let owned: HashMap<TopicPartition, String> = self
            .members
            .iter()
            .flat_map(|(id, m)| m.assignment.iter().map(move |tp| (tp.clone(), id.clone())))
            .collect();
        let mut withheld = false;
        for (id, m) in self.members.iter_mut() {
            let mut next = assignment.remove(id).unwrap_or_default();
            next.retain(|tp| {
                let free = owned.get(tp).is_none_or(|o| o == id);
                withheld |= !free;
                free
            });
            let revoking: Vec<TopicPartition> = m
                .assignment
                .iter()
                .filter(|tp| !next.contains(tp))
                .cloned()
                .collect();
            // The assignor may have withheld them already: a revoke always
            // calls for the follow-up.
            withheld |= !revoking.is_empty();
            m.revoking = revoking;
            m.assignment = next;
            m.generation = self.generation;
            m.rejoined = false;
        }
        self.rebalance = None;
        self.wake_members();
        if withheld {
            // The revoking members rejoin on their poll after `Revoked`;
            // the follow-up generation forms once everyone has.
            self.start_rebalance(Instant::now(), inner);
        }
    }

    /// Evicts members that did not rejoin within the rebalance timeout, then
    /// forms the generation without them.
    pub(super) fn expire(&mut self, now: Instant, inner: &Inner) {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.away_until.is_some_and(|d| now >= d))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id, now, inner);
        }
        if let Some(Rebalance { deadline: Some(d) }) = self.rebalance {
            if now >= d {
                self.members.retain(|_, m| {
                    if !m.rejoined {
                        m.signal.raise();
                    }
                    m.rejoined
                });
                self.try_complete(inner);
            }
        }
    }

    /// Admits a static member with `instance` under the new member id
    /// `id`. A member already holding the instance id is replaced: in a
    /// stable group the newcomer takes over its generation and assignment
    /// (no rebalance, KIP-345), and the old member id is fenced. Returns
    /// false when nothing held the id (the caller joins as a new member).
    pub(super) fn replace_static(
        &mut self,
        instance: &str,
        id: &str,
        signal: &Arc<WakeFlag>,
    ) -> bool {
        let Some(old) = self.instances.get(instance).cloned() else {
            return false;
        };
        let Some(mut m) = self.members.remove(&old) else {
            self.instances.remove(instance);
            return false;
        };
        self.fenced.insert(old);
        // Wake the replaced consumer, if it still runs, to learn it is fenced.
        m.signal.raise();
        m.signal = Arc::clone(signal);
        m.away_until = None;
        m.revoking.clear();
        if self.rebalance.is_some() {
            // Mid-rebalance: rejoin in the pending one, owning nothing.
            m.rejoined = true;
            m.assignment.clear();
        }
        self.members.insert(id.to_string(), m);
        self.instances.insert(instance.to_string(), id.to_string());
        true
    }

    pub(super) fn remove_member(&mut self, id: &str, now: Instant, inner: &Inner) {
        let Some(m) = self.members.remove(id) else {
            return;
        };
        if let Some(instance) = &m.instance_id {
            self.instances.remove(instance);
        }
        if self.members.is_empty() {
            // Empty group: nothing to rebalance, committed offsets stay.
            self.rebalance = None;
            self.generation += 1;
        } else {
            self.start_rebalance(now, inner);
        }
    }
}

/// Kafka's `RangeAssignor`: per topic, among the members subscribed to it
/// (sorted by member id), partitions in ascending order, `n / m` each and
/// one more for the first `n % m` members. `members` must be sorted by id.
fn range_assign(
    members: &[(&str, &[String])],
    partition_count: impl Fn(&str) -> i32,
) -> HashMap<String, Vec<TopicPartition>> {
    let mut out: HashMap<String, Vec<TopicPartition>> = HashMap::new();
    let topics: BTreeSet<&str> = members
        .iter()
        .flat_map(|(_, ts)| ts.iter().map(String::as_str))
        .collect();
    for topic in topics {
        let subs: Vec<&str> = members
            .iter()
            .filter(|(_, ts)| ts.iter().any(|t| t == topic))
            .map(|(id, _)| *id)
            .collect();
        let n = partition_count(topic).max(0) as usize;
        let m = subs.len();
        let (per, extra) = (n / m, n % m);
        for (i, id) in subs.iter().enumerate() {
            let start = i * per + i.min(extra);
            let len = per + usize::from(i < extra);
            out.entry((*id).to_string())
                .or_default()
                .extend((start..start + len).map(|p| TopicPartition::new(topic, p as i32)));
        }
    }
    for tps in out.values_mut() {
        tps.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(members: &[(&str, &[&str])], counts: &[(&str, i32)]) -> Vec<(String, Vec<String>)> {
        let owned: Vec<(&str, Vec<String>)> = members
            .iter()
            .map(|(id, ts)| (*id, ts.iter().map(|t| t.to_string()).collect()))
            .collect();
        let subs: Vec<(&str, &[String])> =
            owned.iter().map(|(id, ts)| (*id, ts.as_slice())).collect();
        let out = range_assign(&subs, |t| {
            counts.iter().find(|(n, _)| *n == t).map_or(0, |(_, c)| *c)
        });
        let mut v: Vec<(String, Vec<String>)> = out
            .into_iter()
            .map(|(id, tps)| (id, tps.iter().map(|tp| tp.to_string()).collect()))
            .collect();
        v.sort();
        v
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn range_assignor_like_kafka() {
        // 7 partitions over 3 members: 3, 2, 2 (first n % m get one more).
        let got = assign(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])], &[("t", 7)]);
        assert_eq!(got[0], ("a".into(), s(&["t-0", "t-1", "t-2"])));
        assert_eq!(got[1], ("b".into(), s(&["t-3", "t-4"])));
        assert_eq!(got[2], ("c".into(), s(&["t-5", "t-6"])));
    }

    #[test]
    fn range_assignor_per_topic_among_subscribers() {
        // Only `b` reads `u`; `t` is split between both; missing topic `x`
        // yields nothing; more members than partitions leaves one empty.
        let got = assign(
            &[("a", &["t", "x"]), ("b", &["t", "u"]), ("c", &["t"])],
            &[("t", 2), ("u", 3)],
        );
        assert_eq!(got[0], ("a".into(), s(&["t-0"])));
        assert_eq!(got[1], ("b".into(), s(&["t-1", "u-0", "u-1", "u-2"])));
        assert_eq!(got[2], ("c".into(), Vec::<String>::new()));
    }
}

//! Joint assignment of two groups: a member's *claims* and the assignor
//! that honours them.
//!
//! An engine with [`KeyOrder::Kept`](crate::KeyOrder::Kept) needs its relay
//! to own the retry partitions of the origin partitions its engine owns.
//! The two groups assign independently, so the engine publishes, through a
//! [`Claims`] handle in the relay consumer's [`ConsumerConfig`], the
//! partitions it wants; the relay consumer carries them in its group
//! metadata and rejoins when they change, and the group's leader gives each
//! claimed partition to its claimant (Kafka Streams co-partitions a join's
//! topics the same way: one assignor decides from what every member says).
//!
//! Rules of [`claims_assign`]:
//! - a claimed partition goes to its claimant; two claimants (a handover
//!   seen half-way, or two origin topics whose partition p went to two
//!   members): the claim of the newer generation wins, then the lower
//!   member id;
//! - an unclaimed partition stays with its owner (cooperative), else goes
//!   to the member with the fewest partitions, then the lower id;
//! - cooperative (KIP-429): a partition another member still owns is
//!   withheld (nobody's) until that member revoked it; its follow-up
//!   rebalance hands it over.
//!
//! The assignor is only used when at least one member carries claims;
//! otherwise the group's own (range or cooperative-sticky) runs, as before.
//! Members without claims (older releases, engines without key order) get
//! unclaimed partitions only.
//!
//! [`ConsumerConfig`]: crate::transport::ConsumerConfig

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::record::TopicPartition;

/// The partitions a group member asks its group's leader for, shared
/// between whoever decides them and the consumer that publishes them
/// ([`ConsumerConfig::claims`](crate::transport::ConsumerConfig::claims)).
///
/// Cheap to clone (one shared state). Setting a different claim makes the
/// consumer rejoin its group with it at its next poll; the leader then
/// gives each claimed partition to its claimant (see the transport docs of
/// `ConsumerConfig::claims`). Equality is identity: two handles are equal
/// when they share their state.
///
/// ```
/// use kafka_retry::transport::Claims;
/// use kafka_retry::TopicPartition;
/// let claims = Claims::new();
/// claims.set([TopicPartition::new("orders-retry", 2)], 7);
/// assert_eq!(claims.partitions(), vec![TopicPartition::new("orders-retry", 2)]);
/// assert_eq!(claims.generation(), 7);
/// ```
#[derive(Clone, Default)]
pub struct Claims {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    claim: Claim,
    /// Bumped by every change, so a consumer sees one it has not published.
    version: u64,
}

/// One claim: sorted, deduplicated partitions and the generation (of the
/// group that decided them) they are from, for ties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) partitions: Vec<TopicPartition>,
    pub(crate) generation: i32,
}

impl Claims {
    /// An empty claim (no partitions, generation -1).
    pub fn new() -> Self {
        Claims {
            inner: Arc::new(Mutex::new(State {
                claim: Claim {
                    partitions: Vec::new(),
                    generation: -1,
                },
                version: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `partitions` (replacing the previous claim), decided in
    /// `generation` (of the group whose assignment they follow; -1 when
    /// unknown). A claim equal to the current one changes nothing.
    pub fn set(&self, partitions: impl IntoIterator<Item = TopicPartition>, generation: i32) {
        let set: BTreeSet<TopicPartition> = partitions.into_iter().collect();
        let claim = Claim {
            partitions: set.into_iter().collect(),
            generation,
        };
        let mut st = self.lock();
        // Only a change of partitions needs a rejoin: a new generation
        // with the same partitions would rebalance the group for nothing.
        // The first claim always counts: a consumer waits for it before it
        // first joins ([`Claims::is_set`]).
        if st.claim.partitions != claim.partitions || st.version == 0 {
            st.claim = claim;
            st.version += 1;
        } else {
            st.claim.generation = claim.generation;
        }
    }

    /// The partitions claimed now, sorted.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.lock().claim.partitions.clone()
    }

    /// The generation of the current claim.
    pub fn generation(&self) -> i32 {
        self.lock().claim.generation
    }

    /// The claim and its version, for the consumer that publishes it.
    pub(crate) fn snapshot(&self) -> (u64, Claim) {
        let st = self.lock();
        (st.version, st.claim.clone())
    }

    /// The current version (changes with every new claim).
    pub(crate) fn version(&self) -> u64 {
        self.lock().version
    }

    /// Whether a claim was ever [`set`](Claims::set). A consumer with
    /// claims waits for the first one (up to its rebalance timeout) before
    /// it first joins, so its first assignment already follows them
    /// instead of being revoked one rebalance later.
    pub fn is_set(&self) -> bool {
        self.version() > 0
    }
}

impl PartialEq for Claims {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Claims {}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Claims")
            .field("partitions", &st.claim.partitions)
            .field("generation", &st.claim.generation)
            .finish()
    }
}

/// A member as the claims assignor sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClaimMember {
    pub(crate) id: String,
    pub(crate) topics: Vec<String>,
    /// Partitions it owns now (cooperative; empty under eager).
    pub(crate) owned: Vec<TopicPartition>,
    /// The generation `owned` is from (-1: unknown).
    pub(crate) owned_generation: i32,
    /// What it claims; `None`: a member that claims nothing (older
    /// release, or not a key-order relay).
    pub(crate) claim: Option<Claim>,
}

/// The claims assignment (module docs). Every member appears in the
/// result; `cooperative` withholds partitions that change hands.
pub(crate) fn claims_assign(
    members: &[ClaimMember],
    cooperative: bool,
    mut partition_count: impl FnMut(&str) -> Result<Option<i32>>,
) -> Result<BTreeMap<String, Vec<TopicPartition>>> {
    let mut target: BTreeMap<&str, BTreeSet<TopicPartition>> = members
        .iter()
        .map(|m| (m.id.as_str(), BTreeSet::new()))
        .collect();
    // Current owner of each partition (none under eager), as the sticky
    // assignor decides it.
    let owner = if cooperative {
        super::sticky::owners(
            members
                .iter()
                .map(|m| (m.id.as_str(), &m.owned[..], m.owned_generation)),
        )
    } else {
        BTreeMap::new()
    };
    let mut subscribers: BTreeMap<&str, Vec<&ClaimMember>> = BTreeMap::new();
    for m in members {
        for t in &m.topics {
            subscribers.entry(t).or_default().push(m);
        }
    }
    let mut unclaimed = Vec::new();
    for (topic, mut subs) in subscribers {
        subs.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        subs.dedup_by(|a, b| a.id == b.id);
        let n = match partition_count(topic)? {
            Some(n) if n > 0 => n,
            _ => {
                log::warn!("claims assignor: topic {topic} does not exist; nobody gets it");
                continue;
            }
        };
        for p in 0..n {
            let tp = TopicPartition::new(topic, p);
            // Newest generation, then lowest id (max of Reverse(id)).
            let winner = subs
                .iter()
                .filter(|m| {
                    m.claim
                        .as_ref()
                        .is_some_and(|c| c.partitions.binary_search(&tp).is_ok())
                })
                .max_by_key(|m| {
                    (
                        m.claim.as_ref().map_or(-1, |c| c.generation),
                        std::cmp::Reverse(m.id.as_str()),
                    )
                });
            match winner {
                Some(m) => {
                    target.entry(m.id.as_str()).or_default().insert(tp);
                }
                None => unclaimed.push((tp, subs.clone())),
            }
        }
    }
    // After every claim, and the owned ones before the free ones, so the
    // fewest-first spread sees everything that stays put.
    let mut free = Vec::new();
    for (tp, subs) in unclaimed {
        let keeper = owner
            .get(&tp)
            .map(|(o, _)| *o)
            .filter(|o| subs.iter().any(|m| m.id == *o));
        match keeper {
            Some(o) => {
                target.entry(o).or_default().insert(tp);
            }
            None => free.push((tp, subs)),
        }
    }
    for (tp, subs) in free {
        if let Some(m) = subs
            .iter()
            .min_by_key(|m| (target[m.id.as_str()].len(), m.id.as_str()))
        {
            target.entry(m.id.as_str()).or_default().insert(tp);
        }
    }
    // KIP-429: a partition still owned by another member is revoked first.
    Ok(target
        .into_iter()
        .map(|(id, parts)| {
            let kept = parts
                .into_iter()
                .filter(|tp| owner.get(tp).is_none_or(|(o, _)| *o == id))
                .collect();
            (id.to_string(), kept)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tps(list: &[i32]) -> Vec<TopicPartition> {
        list.iter().map(|p| TopicPartition::new("r", *p)).collect()
    }

    fn member(id: &str, claim: Option<(&[i32], i32)>, owned: &[i32]) -> ClaimMember {
        ClaimMember {
            id: id.into(),
            topics: vec!["r".into()],
            owned: tps(owned),
            owned_generation: 3,
            claim: claim.map(|(p, g)| Claim {
                partitions: tps(p),
                generation: g,
            }),
        }
    }

    fn six(t: &str) -> Result<Option<i32>> {
        Ok((t == "r").then_some(6))
    }

    #[test]
    fn claims_are_honoured_whatever_the_member_ids() {
        // The range order (a, b, c) would give a 0-1, b 2-3, c 4-5.
        let members = [
            member("a", Some((&[4, 5], 2)), &[]),
            member("b", Some((&[0, 3], 2)), &[]),
            member("c", Some((&[1, 2], 2)), &[]),
        ];
        for cooperative in [false, true] {
            let out = claims_assign(&members, cooperative, six).unwrap();
            assert_eq!(out["a"], tps(&[4, 5]));
            assert_eq!(out["b"], tps(&[0, 3]));
            assert_eq!(out["c"], tps(&[1, 2]));
        }
    }

    #[test]
    fn ties_go_to_the_newer_generation_then_the_lower_id() {
        let members = [
            member("a", Some((&[0], 4)), &[]),
            member("b", Some((&[0, 1], 5)), &[]),
            member("c", Some((&[1], 5)), &[]),
        ];
        let out = claims_assign(&members, false, |_| Ok(Some(2))).unwrap();
        assert_eq!(out["b"], tps(&[0, 1]), "newer than a's; b < c");
        assert!(out["a"].is_empty() && out["c"].is_empty());
    }

    #[test]
    fn unclaimed_partitions_spread_fewest_first_and_stay_put_under_cooperative() {
        // a claims three; 3, 4, 5 are nobody's: b and the claimless c
        // (an older release) share them, fewest first, then by id.
        let members = [
            member("a", Some((&[0, 1, 2], 1)), &[]),
            member("b", Some((&[], 1)), &[]),
            member("c", None, &[]),
        ];
        let out = claims_assign(&members, false, six).unwrap();
        assert_eq!(out["a"], tps(&[0, 1, 2]));
        assert_eq!(out["b"], tps(&[3, 5]));
        assert_eq!(out["c"], tps(&[4]));
        // Cooperative: an unclaimed partition stays with its owner.
        let members = [
            member("a", Some((&[0], 1)), &[3, 4, 5]),
            member("b", Some((&[], 1)), &[]),
        ];
        let out = claims_assign(&members, true, six).unwrap();
        assert_eq!(out["a"], tps(&[0, 3, 4, 5]));
        assert_eq!(out["b"], tps(&[1, 2]));
    }

    #[test]
    fn a_claimed_partition_owned_elsewhere_is_revoked_first_under_cooperative() {
        let members = [
            member("a", Some((&[], 1)), &[0, 1]),
            member("b", Some((&[0], 1)), &[]),
        ];
        let out = claims_assign(&members, true, |_| Ok(Some(2))).unwrap();
        assert!(out["b"].is_empty(), "withheld until a revoked it");
        assert_eq!(out["a"], tps(&[1]), "a keeps what nobody claims");
        // The follow-up, once a no longer owns it: b gets it.
        let members = [
            member("a", Some((&[], 1)), &[1]),
            member("b", Some((&[0], 1)), &[]),
        ];
        let out = claims_assign(&members, true, |_| Ok(Some(2))).unwrap();
        assert_eq!(out["b"], tps(&[0]));
        // Eager members own nothing: given at once.
        let out = claims_assign(&members, false, |_| Ok(Some(2))).unwrap();
        assert_eq!(out["b"], tps(&[0]));
    }

    #[test]
    fn claims_beyond_the_topic_or_for_other_topics_are_ignored() {
        let mut a = member("a", Some((&[7], 1)), &[]);
        a.claim
            .as_mut()
            .unwrap()
            .partitions
            .push(TopicPartition::new("zz", 0));
        let b = member("b", None, &[]);
        let out = claims_assign(&[a, b], false, |_| Ok(Some(2))).unwrap();
        assert_eq!(out["a"], tps(&[0]));
        assert_eq!(out["b"], tps(&[1]));
    }

    #[test]
    fn a_handle_changes_version_only_when_its_partitions_change() {
        let c = Claims::new();
        assert_eq!(c.generation(), -1);
        assert!(!c.is_set());
        let v0 = c.version();
        c.set([], 1);
        assert!(c.is_set(), "the first claim counts, even of nothing");
        assert_ne!(c.version(), v0);
        let v0 = c.version();
        c.set(tps(&[2, 1, 2]), 4);
        assert_eq!(c.partitions(), tps(&[1, 2]), "sorted, deduplicated");
        let v1 = c.version();
        assert_ne!(v0, v1);
        c.set(tps(&[1, 2]), 5);
        assert_eq!(c.version(), v1, "same partitions: no rejoin");
        assert_eq!(c.generation(), 5);
        assert_eq!(c, c.clone());
        assert_ne!(c, Claims::new());
    }
}

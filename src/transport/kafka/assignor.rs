//! The consumer protocol's member metadata (subscription, assignment) and the
//! range assignor the group leader runs.
//!
//! Both payloads are opaque bytes to the broker: an `i16` version followed by
//! the `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment` body at
//! that version. We write version 0 (the fields every client understands).
//! We read any version, like Java reads newer ones as its newest: fields are
//! only ever appended, and the one we need (topics / assigned partitions)
//! leads in every version.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::{
    ConsumerProtocolAssignment, TopicPartition as AssignedTopic,
};
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::error::{Error, Result};
use crate::record::TopicPartition;
use crate::transport::claims::Claim;
use crate::transport::sticky::StickyMember;

/// Name of the only assignment strategy we offer in JoinGroup.
pub(crate) const RANGE: &str = "range";

/// Version we write: v0 carries just the topics (subscription) or the
/// partitions (assignment), which is all an eager range member needs.
const WRITE_VERSION: i16 = 0;

/// Subscription metadata for JoinGroup: `i16` version + body.
pub(crate) fn encode_subscription(topics: &[String]) -> Result<Bytes> {
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = topics
        .iter()
        .map(|t| StrBytes::from_string(t.clone()))
        .collect();
    let mut buf = BytesMut::new();
    buf.put_i16(WRITE_VERSION);
    sub.encode(&mut buf, WRITE_VERSION)
        .map_err(|e| Error::Protocol(format!("encode consumer subscription: {e}")))?;
    Ok(buf.freeze())
}

/// Topics a member subscribed to, from its JoinGroup metadata. Only the
/// leading `topics` array is read: it comes first in every version.
pub(crate) fn decode_subscription(metadata: &Bytes) -> Result<Vec<String>> {
    let mut r = Reader::new(metadata, "subscription");
    r.version()?;
    let n = r.count(2)?;
    (0..n).map(|_| r.string()).collect()
}

/// Assignment bytes for SyncGroup: `i16` version + body, topics and
/// partitions sorted.
pub(crate) fn encode_assignment(partitions: &[TopicPartition]) -> Result<Bytes> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let mut assignment = ConsumerProtocolAssignment::default();
    assignment.assigned_partitions = by_topic
        .into_iter()
        .map(|(topic, mut parts)| {
            parts.sort_unstable();
            let mut t = AssignedTopic::default();
            t.topic = TopicName(StrBytes::from_string(topic.to_string()));
            t.partitions = parts;
            t
        })
        .collect();
    let mut buf = BytesMut::new();
    buf.put_i16(WRITE_VERSION);
    assignment
        .encode(&mut buf, WRITE_VERSION)
        .map_err(|e| Error::Protocol(format!("encode consumer assignment: {e}")))?;
    Ok(buf.freeze())
}

/// Partitions in a SyncGroup assignment, sorted and deduplicated. Empty
/// bytes mean "nothing assigned" (Kafka sends them for a member the leader
/// left out). Only the leading `assigned_partitions` array is read (first in
/// every version; later versions append fields).
pub(crate) fn decode_assignment(bytes: &Bytes) -> Result<Vec<TopicPartition>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(bytes, "assignment");
    r.version()?;
    let out = r.topic_partitions("consumer assignment names partition")?;
    Ok(out.into_iter().collect())
}

/// A bounds-checked reader for the consumer protocol payloads. Hand-written
/// because kafka-protocol's decoders pre-allocate arrays from the wire count:
/// a corrupt count in these nested payloads (which no frame-size cap covers)
/// would abort the process on a huge allocation.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn short(&self, need: usize) -> Error {
        Error::Protocol(format!(
            "consumer {} is truncated: need {need} more bytes, {} left",
            self.what,
            self.buf.len()
        ))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(self.short(n));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The leading version; any non-negative one is accepted (newer versions
    /// only append fields).
    fn version(&mut self) -> Result<i16> {
        let v = self.i16()?;
        if v < 0 {
            return Err(Error::Protocol(format!(
                "consumer {} has version {v}",
                self.what
            )));
        }
        Ok(v)
    }

    /// An array count whose elements (at least `min_size` bytes each) fit
    /// in what is left.
    fn count(&mut self, min_size: usize) -> Result<usize> {
        let n = self.i32()?;
        let n = usize::try_from(n).map_err(|_| {
            Error::Protocol(format!("consumer {} has an array of length {n}", self.what))
        })?;
        if n.saturating_mul(min_size) > self.buf.len() {
            return Err(self.short(n.saturating_mul(min_size)));
        }
        Ok(n)
    }

    /// A `[topic: string, partitions: [i32]]` array (an assignment's or a
    /// claim's), sorted and deduplicated; a negative partition is an error
    /// that starts with `what`.
    fn topic_partitions(&mut self, what: &str) -> Result<BTreeSet<TopicPartition>> {
        let mut out = BTreeSet::new();
        // Each topic entry is at least a 2-byte name length + a 4-byte count.
        for _ in 0..self.count(6)? {
            let topic = self.string()?;
            for _ in 0..self.count(4)? {
                let p = self.i32()?;
                if p < 0 {
                    return Err(Error::Protocol(format!("{what} {p} of {topic}")));
                }
                out.insert(TopicPartition::new(topic.clone(), p));
            }
        }
        Ok(out)
    }

    fn string(&mut self) -> Result<String> {
        let len = self.i16()?;
        let len = usize::try_from(len).map_err(|_| {
            Error::Protocol(format!(
                "consumer {} has a null or negative-length topic",
                self.what
            ))
        })?;
        let b = self.take(len)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::Protocol(format!("consumer {} has a non-UTF-8 topic", self.what)))
    }
}

/// The range assignor: for each topic, its subscribers sorted by member id
/// split the partitions in ascending order, `n / m` each, the first `n % m`
/// members one more. `members` is (member id, subscribed topics);
/// `partition_count` answers per topic (`None`: unknown topic, skipped).
/// Every member appears in the result, possibly with nothing.
pub(crate) fn range_assign(
    members: &[(String, Vec<String>)],
    mut partition_count: impl FnMut(&str) -> Result<Option<i32>>,
) -> Result<BTreeMap<String, Vec<TopicPartition>>> {
    let mut out: BTreeMap<String, Vec<TopicPartition>> = members
        .iter()
        .map(|(id, _)| (id.clone(), Vec::new()))
        .collect();
    let mut subscribers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (id, topics) in members {
        for t in topics {
            subscribers.entry(t).or_default().insert(id);
        }
    }
    for (topic, ids) in subscribers {
        let n = match partition_count(topic)? {
            Some(n) if n > 0 => n as usize,
            _ => {
                log::warn!("range assignor: topic {topic} does not exist; nobody gets it");
                continue;
            }
        };
        // BTreeSet iterates in member-id order.
        let m = ids.len();
        let (per, extra) = (n / m, n % m);
        let mut next = 0usize;
        for (i, id) in ids.into_iter().enumerate() {
            let take = per + usize::from(i < extra);
            let parts = out.entry(id.to_string()).or_default();
            for p in next..next + take {
                parts.push(TopicPartition::new(topic, p as i32));
            }
            next += take;
        }
    }
    Ok(out)
}

/// Name of the incremental cooperative strategy (KIP-429), as Java's
/// `CooperativeStickyAssignor`; offered first in JoinGroup under
/// [`RebalanceProtocol::Cooperative`](crate::transport::RebalanceProtocol).
pub(crate) const COOPERATIVE_STICKY: &str = "cooperative-sticky";

/// Subscription v1 for the cooperative protocol: the topics, the owned
/// partitions, and Java's `CooperativeStickyAssignor` user data (the
/// generation as an `i32`), which Java (and we) read when the subscription
/// is older than v2's `generation_id` field.
pub(crate) fn encode_cooperative_subscription(
    topics: &[String],
    owned: &[TopicPartition],
    generation: i32,
    claim: Option<&Claim>,
) -> Result<Bytes> {
    use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = topics
        .iter()
        .map(|t| StrBytes::from_string(t.clone()))
        .collect();
    sub.user_data = Some(user_data(generation.to_be_bytes(), claim));
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in owned {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    sub.owned_partitions = by_topic
        .into_iter()
        .map(|(t, mut parts)| {
            parts.sort_unstable();
            let mut o = OwnedTopic::default();
            o.topic = TopicName(StrBytes::from_string(t.to_string()));
            o.partitions = parts;
            o
        })
        .collect();
    let mut buf = BytesMut::new();
    buf.put_i16(1);
    sub.encode(&mut buf, 1)
        .map_err(|e| Error::Protocol(format!("encode consumer subscription: {e}")))?;
    Ok(buf.freeze())
}

/// A member's subscription as the cooperative-sticky assignor needs it:
/// topics, owned partitions (empty before v1) and their generation (v2+
/// field, else a 4-byte user data as Java writes it, else -1).
pub(crate) fn decode_sticky_member(id: &str, metadata: &Bytes) -> Result<StickyMember> {
    let mut r = Reader::new(metadata, "subscription");
    let version = r.version()?;
    let n = r.count(2)?;
    let topics = (0..n).map(|_| r.string()).collect::<Result<Vec<_>>>()?;
    let mut m = StickyMember {
        id: id.to_string(),
        topics,
        owned: Vec::new(),
        generation: -1,
    };
    // user_data: nullable bytes.
    let len = r.i32()?;
    let user_data = match usize::try_from(len) {
        Ok(len) => Some(r.take(len)?),
        Err(_) => None,
    };
    if version >= 1 {
        for _ in 0..r.count(6)? {
            let topic = r.string()?;
            for _ in 0..r.count(4)? {
                let p = r.i32()?;
                if p >= 0 {
                    m.owned.push(TopicPartition::new(topic.clone(), p));
                }
            }
        }
    }
    if version >= 2 {
        m.generation = r.i32()?;
    } else if let Some(&[a, b, c, d, ..]) = user_data {
        // Java reads the leading i32 and ignores what follows (our claims).
        m.generation = i32::from_be_bytes([a, b, c, d]);
    }
    Ok(m)
}

/// Marks the claims block in our `user_data` (after its leading 4-byte
/// word): "krc" and the block's version, 1.
const CLAIMS_MAGIC: [u8; 4] = *b"krc\x01";

/// Our subscription `user_data`: a 4-byte word (the cooperative generation,
/// which Java's `CooperativeStickyAssignor` reads from the first 4 bytes,
/// or the eager rebalance-request count), then, for a member with claims
/// (`transport/claims.rs`), [`CLAIMS_MAGIC`], the claim's generation
/// (`i32`) and its partitions as (`i16`-length topic, `i32` count, `i32`
/// partitions) per topic after an `i32` topic count. Range assignors
/// ignore user data; Java's sticky one reads only the leading word.
pub(crate) fn user_data(word: [u8; 4], claim: Option<&Claim>) -> Bytes {
    let mut buf = BytesMut::with_capacity(16);
    buf.put_slice(&word);
    if let Some(c) = claim {
        buf.put_slice(&CLAIMS_MAGIC);
        buf.put_i32(c.generation);
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in &c.partitions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        buf.put_i32(by_topic.len() as i32);
        for (topic, parts) in by_topic {
            // Topic names are at most 249 bytes (Kafka's rule).
            buf.put_i16(topic.len().min(i16::MAX as usize) as i16);
            buf.put_slice(&topic.as_bytes()[..topic.len().min(i16::MAX as usize)]);
            buf.put_i32(parts.len() as i32);
            for p in parts {
                buf.put_i32(p);
            }
        }
    }
    buf.freeze()
}

/// The claim in a member's JoinGroup metadata (see [`user_data`]), any
/// subscription version. `None` for a member without one, and for
/// metadata or a claims block that does not parse: a member whose claim
/// cannot be read is assigned as if it claimed nothing (logged).
pub(crate) fn decode_claim(metadata: &Bytes) -> Option<Claim> {
    let parse = || -> Result<Option<Claim>> {
        let mut r = Reader::new(metadata, "subscription");
        r.version()?;
        for _ in 0..r.count(2)? {
            r.string()?;
        }
        let Ok(len) = usize::try_from(r.i32()?) else {
            return Ok(None); // null user data
        };
        let mut r = Reader::new(r.take(len)?, "subscription claims");
        if len < 8 || r.take(4).is_err() || r.take(4)? != CLAIMS_MAGIC {
            return Ok(None);
        }
        let generation = r.i32()?;
        let partitions = r.topic_partitions("claim of partition")?;
        Ok(Some(Claim {
            partitions: partitions.into_iter().collect(),
            generation,
        }))
    };
    parse().unwrap_or_else(|e| {
        log::warn!("a member's claims are unreadable ({e}); taken as none");
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;

    fn tps(list: &[(&str, i32)]) -> Vec<TopicPartition> {
        list.iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect()
    }

    #[test]
    fn subscription_round_trips_and_starts_with_version_zero() {
        let topics = vec!["orders".to_string(), "payments".to_string()];
        let bytes = encode_subscription(&topics).unwrap();
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(decode_subscription(&bytes).unwrap(), topics);
    }

    #[test]
    fn assignment_round_trips_sorted() {
        let parts = tps(&[("b", 1), ("a", 2), ("a", 0)]);
        let bytes = encode_assignment(&parts).unwrap();
        assert_eq!(
            decode_assignment(&bytes).unwrap(),
            tps(&[("a", 0), ("a", 2), ("b", 1)])
        );
        assert!(decode_assignment(&Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn newer_assignment_versions_decode_as_v3() {
        // A v3 body (topics + user_data) behind version 7 plus trailing bytes
        // a future version might append.
        let mut a = ConsumerProtocolAssignment::default();
        let mut t = AssignedTopic::default();
        t.topic = TopicName(StrBytes::from_static_str("x"));
        t.partitions = vec![3, 1];
        a.assigned_partitions = vec![t];
        let mut buf = BytesMut::new();
        buf.put_i16(7);
        a.encode(&mut buf, 3).unwrap();
        buf.put_slice(&[1, 2, 3]);
        assert_eq!(
            decode_assignment(&buf.freeze()).unwrap(),
            tps(&[("x", 1), ("x", 3)])
        );
    }

    #[test]
    fn reads_what_java_style_v3_writes_and_writes_what_it_reads() {
        // A v3 subscription with owned partitions, generation and rack.
        let mut sub = ConsumerProtocolSubscription::default();
        sub.topics = vec![
            StrBytes::from_static_str("a"),
            StrBytes::from_static_str("b"),
        ];
        sub.user_data = Some(Bytes::from_static(b"ud"));
        let mut owned =
            kafka_protocol::messages::consumer_protocol_subscription::TopicPartition::default();
        owned.topic = TopicName(StrBytes::from_static_str("a"));
        owned.partitions = vec![0];
        sub.owned_partitions = vec![owned];
        sub.generation_id = 4;
        sub.rack_id = Some(StrBytes::from_static_str("r1"));
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        sub.encode(&mut buf, 3).unwrap();
        assert_eq!(decode_subscription(&buf.freeze()).unwrap(), vec!["a", "b"]);

        // Ours, read by kafka-protocol's decoder.
        let mut ours = encode_assignment(&tps(&[("t", 2), ("t", 0)])).unwrap();
        let _version = ours.split_to(2);
        let a = ConsumerProtocolAssignment::decode(&mut ours, 0).unwrap();
        assert_eq!(a.assigned_partitions.len(), 1);
        assert_eq!(&*a.assigned_partitions[0].topic.0, "t");
        assert_eq!(a.assigned_partitions[0].partitions, vec![0, 2]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // A topic whose partition count is huge: bad as an assignment (the
        // same bytes are a fine subscription to topic "x").
        let huge = Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 1, b'x', 0x7f, 0xff, 0xff, 0xff]);
        assert!(decode_assignment(&huge).is_err());
        let bad_inputs: [&[u8]; 6] = [
            &[0u8],
            &[0, 0, 0xff],
            &[0xff, 0xff, 0, 0, 0, 0],
            // Huge array counts must not be trusted (no allocation from them).
            &[0, 0, 0x7f, 0xff, 0xff, 0xff],
            &[0, 0, 0, 0, 0, 1, 0xff, 0xff],
            // Not UTF-8.
            &[0, 0, 0, 0, 0, 1, 0, 2, 0xc3, 0x28, 0, 0, 0, 0],
        ];
        for bad in bad_inputs {
            assert!(
                decode_assignment(&Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
            assert!(
                decode_subscription(&Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn range_splits_like_java() {
        let members = vec![
            ("m-b".to_string(), vec!["t".to_string(), "u".to_string()]),
            ("m-a".to_string(), vec!["t".to_string()]),
            ("m-c".to_string(), vec!["t".to_string(), "u".to_string()]),
        ];
        let out = range_assign(&members, |t| {
            Ok(match t {
                "t" => Some(7),
                "u" => Some(1),
                _ => None,
            })
        })
        .unwrap();
        // t: 7 partitions over a, b, c -> 3, 2, 2; u: 1 partition over b, c -> b.
        assert_eq!(out["m-a"], tps(&[("t", 0), ("t", 1), ("t", 2)]));
        assert_eq!(out["m-b"], tps(&[("t", 3), ("t", 4), ("u", 0)]));
        assert_eq!(out["m-c"], tps(&[("t", 5), ("t", 6)]));
    }

    #[test]
    fn range_gives_everyone_an_entry() {
        let members = vec![
            ("1".to_string(), vec!["t".to_string()]),
            ("2".to_string(), vec!["t".to_string()]),
            ("3".to_string(), vec!["gone".to_string()]),
        ];
        let out = range_assign(&members, |t| Ok((t == "t").then_some(1))).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out["1"], tps(&[("t", 0)]));
        assert!(out["2"].is_empty());
        assert!(out["3"].is_empty());
    }

    #[test]
    fn cooperative_subscription_round_trips_like_java_writes_it() {
        let owned = tps(&[("t", 2), ("t", 0), ("u", 1)]);
        let bytes =
            encode_cooperative_subscription(&["t".into(), "u".into()], &owned, 7, None).unwrap();
        assert_eq!(&bytes[..2], &[0, 1], "version 1");
        // Eager members read its topics as before.
        assert_eq!(decode_subscription(&bytes).unwrap(), vec!["t", "u"]);
        let m = decode_sticky_member("m", &bytes).unwrap();
        assert_eq!(m.owned, tps(&[("t", 0), ("t", 2), ("u", 1)]));
        assert_eq!(m.generation, 7);
        // kafka-protocol's decoder agrees.
        let mut b = bytes.slice(2..);
        let sub = ConsumerProtocolSubscription::decode(&mut b, 1).unwrap();
        assert_eq!(sub.owned_partitions.len(), 2);
        assert_eq!(sub.user_data.as_deref(), Some(&7i32.to_be_bytes()[..]));
        // A v0 subscription owns nothing; a v2 one carries the generation.
        let v0 = decode_sticky_member("m", &encode_subscription(&["t".into()]).unwrap()).unwrap();
        assert!(v0.owned.is_empty());
        assert_eq!(v0.generation, -1);
        let mut s2 = ConsumerProtocolSubscription::default();
        s2.topics = vec![StrBytes::from_static_str("t")];
        s2.generation_id = 9;
        let mut buf = BytesMut::new();
        buf.put_i16(2);
        s2.encode(&mut buf, 2).unwrap();
        assert_eq!(
            decode_sticky_member("m", &buf.freeze()).unwrap().generation,
            9
        );
        assert!(decode_sticky_member("m", &Bytes::from_static(&[0, 1, 0, 0])).is_err());
    }

    fn claim(parts: &[(&str, i32)], generation: i32) -> Claim {
        Claim {
            partitions: tps(parts),
            generation,
        }
    }

    #[test]
    fn claims_ride_in_user_data_after_the_word_others_read() {
        let c = claim(&[("r", 0), ("r", 3), ("s", 1)], 9);
        // Cooperative: Java's reading of the generation is unchanged.
        let coop =
            encode_cooperative_subscription(&["r".into()], &tps(&[("r", 0)]), 7, Some(&c)).unwrap();
        let m = decode_sticky_member("m", &coop).unwrap();
        assert_eq!((m.generation, m.owned.clone()), (7, tps(&[("r", 0)])));
        assert_eq!(decode_subscription(&coop).unwrap(), vec!["r"]);
        assert_eq!(decode_claim(&coop), Some(c.clone()));
        let mut b = coop.slice(2..);
        let sub = ConsumerProtocolSubscription::decode(&mut b, 1).unwrap();
        assert_eq!(&sub.user_data.unwrap()[..4], &7i32.to_be_bytes());
        // An empty claim is a claim (of nothing), not "no claims".
        let empty = claim(&[], -1);
        let coop = encode_cooperative_subscription(&["r".into()], &[], 1, Some(&empty)).unwrap();
        assert_eq!(decode_claim(&coop), Some(empty));
        // Without claims: none, as from a plain or an older member.
        let plain = encode_cooperative_subscription(&["r".into()], &[], 1, None).unwrap();
        assert_eq!(decode_claim(&plain), None);
        assert_eq!(
            decode_claim(&encode_subscription(&["r".into()]).unwrap()),
            None
        );
    }

    #[test]
    fn garbage_claims_are_no_claims() {
        let c = claim(&[("r", 2)], 4);
        let good = user_data(1u32.to_be_bytes(), Some(&c));
        let wrap = |ud: &[u8]| {
            let mut sub = ConsumerProtocolSubscription::default();
            sub.topics = vec![StrBytes::from_static_str("r")];
            sub.user_data = Some(Bytes::copy_from_slice(ud));
            let mut buf = BytesMut::new();
            buf.put_i16(0);
            sub.encode(&mut buf, 0).unwrap();
            buf.freeze()
        };
        assert_eq!(decode_claim(&wrap(&good)), Some(c));
        // Every truncation, a wrong magic, a huge count, a negative
        // partition, and metadata that is not a subscription at all.
        for cut in 0..good.len() {
            let got = decode_claim(&wrap(&good[..cut]));
            assert_eq!(got, None, "cut at {cut}");
        }
        let mut bad_magic = good.to_vec();
        bad_magic[7] = 2;
        assert_eq!(decode_claim(&wrap(&bad_magic)), None);
        let mut huge = good[..12].to_vec();
        huge.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
        assert_eq!(decode_claim(&wrap(&huge)), None);
        let mut negative = good.to_vec();
        let n = negative.len();
        negative[n - 4..].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(decode_claim(&wrap(&negative)), None);
        for junk in [&[][..], &[0xff][..], &[0, 0, 0x7f, 0xff, 0xff, 0xff][..]] {
            assert_eq!(decode_claim(&Bytes::copy_from_slice(junk)), None);
        }
    }
}

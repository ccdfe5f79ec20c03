//! The retry header contract (see the README's header table).
//!
//! Parsing never panics: every failure is a [`Malformed`] with a reason
//! that ends up in the dead-letter record's `retry.reason` header.

use bytes::Bytes;

use crate::record::{Header, Record, Topic};

/// Topic the record was first read from.
pub const ORIGIN_TOPIC: &str = "retry.origin-topic";
/// Partition the record was first read from.
pub const ORIGIN_PARTITION: &str = "retry.origin-partition";
/// Offset the record was first read at.
pub const ORIGIN_OFFSET: &str = "retry.origin-offset";
/// When the record was first read from its origin topic (ms since the epoch).
pub const FIRST_RECEIVED_AT: &str = "retry.first-received-at";
/// When the record was put on the retry topic (ms since the epoch).
pub const ENQUEUED_AT: &str = "retry.enqueued-at";
/// Failed attempts so far.
pub const ATTEMPTS: &str = "retry.attempts";
/// Last failure reason.
pub const REASON: &str = "retry.reason";
/// On dead-letter records: why the engine gave up, one of the values of
/// [`DeadReason::as_str`]: `expired`, `attempts`, `rejected` or `malformed`.
/// The set is part of the header contract; a new value is a breaking change.
pub const DEAD_REASON: &str = "retry.dead-reason";
/// Set by [`Outcome::retry_after`](crate::Outcome::retry_after): when the
/// parked record is due, ms since the Unix epoch. Absent on a plain retry
/// (the policy's interval applies); removed again on the next hop.
pub const DUE_AT: &str = "retry.due-at";
/// On dead-letter records: when the engine dead-lettered it, ms since the
/// Unix epoch.
pub const DEAD_LETTERED_AT: &str = "retry.dead-lettered-at";
/// On dead-letter records: the consumer group that gave up on it.
pub const GROUP: &str = "retry.group";

/// On retry-topic copies only, with [`KeyOrder::Kept`](crate::KeyOrder::Kept):
/// the record was parked behind an earlier record of its key, not because
/// it failed (value `1`). Such a copy is not an attempt, never falls due or
/// expires on its own, and is handled once its key's earlier records are
/// done or dead-lettered; removed on the next hop.
pub const HELD: &str = "retry.held";
/// Set by `kafka-retry dlt replay` on a replayed record: the dead letter it
/// was replayed from, as `<dlt topic>/<partition>/<offset>`. Not one of the
/// engine's own headers: it passes through later hops like a user header, so
/// a record dead-lettered again still says where it came from.
pub const REPLAYED_FROM: &str = "retry.replayed-from";
/// Set by `kafka-retry dlt replay`: how many times the record has been
/// replayed from a dead-letter topic (decimal, 1 on the first replay).
/// Passes through later hops like [`REPLAYED_FROM`], so the next replay
/// counts on from it (`--max-replays`).
pub const REPLAY_COUNT: &str = "retry.replay-count";

/// Set by the Kafka transport on a record standing in for a record batch it
/// could not decode; the value is the reason. Such records are dead-lettered
/// with reason `malformed` and never reach the handler.
pub(crate) const UNDECODABLE: &str = "kafka-retry.undecodable";

/// Longest `retry.reason` value written, in bytes.
pub(crate) const MAX_REASON_BYTES: usize = 1024;

/// How far in the future a header timestamp may be before it counts as
/// malformed. Hosts' clocks differ a little; a timestamp hours ahead is a
/// bug or a forgery, and trusting it would park the record for that long.
pub(crate) const CLOCK_SKEW_TOLERANCE_MS: i64 = 60_000;

/// Why a dead-letter record was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// `max_retry_duration` passed (or a
    /// [`retry_after`](crate::Outcome::retry_after) delay would outlast it).
    Expired,
    /// The policy's `max_attempts` was reached.
    Attempts,
    /// The handler returned [`Outcome::Reject`](crate::Outcome::Reject).
    Rejected,
    /// The retry headers were missing or invalid, or the record could not be decoded.
    Malformed,
}

impl DeadReason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Expired => "expired",
            DeadReason::Attempts => "attempts",
            DeadReason::Rejected => "rejected",
            DeadReason::Malformed => "malformed",
        }
    }
}

/// The parsed retry headers of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", allow(missing_docs))] // public only in `unstable`
pub struct RetryInfo {
    pub origin_topic: Topic,
    pub origin_partition: i32,
    pub origin_offset: i64,
    pub first_received_at: i64,
    pub enqueued_at: i64,
    pub attempts: u32,
    /// `retry.due-at`, when the handler chose the delay.
    pub due_at: Option<i64>,
}

/// A retry header that is missing or invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl RetryInfo {
    /// Info for a record read from its origin topic for the first time.
    pub(crate) fn first(record: &Record, now_ms: i64) -> Self {
        RetryInfo {
            origin_topic: record.topic.clone(),
            origin_partition: record.partition,
            origin_offset: record.offset,
            first_received_at: now_ms,
            enqueued_at: now_ms,
            attempts: 0,
            due_at: None,
        }
    }

    /// Parses the retry headers of `record`. `now_ms` bounds timestamps
    /// from above (plus [`CLOCK_SKEW_TOLERANCE_MS`]).
    pub(crate) fn parse(record: &Record, now_ms: i64) -> Result<Self, Malformed> {
        let [topic, partition, offset, first, enqueued, attempts, due] = gather(record);
        let info = RetryInfo {
            origin_topic: text_of(topic, ORIGIN_TOPIC)?.into(),
            origin_partition: number_of(partition, ORIGIN_PARTITION)?,
            origin_offset: number_of(offset, ORIGIN_OFFSET)?,
            first_received_at: number_of(first, FIRST_RECEIVED_AT)?,
            enqueued_at: number_of(enqueued, ENQUEUED_AT)?,
            attempts: number_of(attempts, ATTEMPTS)?,
            due_at: match due {
                None => None,
                Some(_) => Some(number_of(due, DUE_AT)?),
            },
        };
        // Only the lower bound here: how far ahead a due time may be depends
        // on the policy (`max_retry_duration`), which the relay applies.
        if let Some(d) = info.due_at {
            if d < 0 {
                return Err(Malformed(format!("{DUE_AT} is negative: {d}")));
            }
        }
        if info.origin_topic.is_empty() {
            return Err(Malformed(format!("{ORIGIN_TOPIC} is empty")));
        }
        if info.origin_partition < 0 {
            return Err(Malformed(format!("{ORIGIN_PARTITION} is negative")));
        }
        if info.origin_offset < 0 {
            return Err(Malformed(format!("{ORIGIN_OFFSET} is negative")));
        }
        for (name, t) in [
            (FIRST_RECEIVED_AT, info.first_received_at),
            (ENQUEUED_AT, info.enqueued_at),
        ] {
            if t < 0 {
                return Err(Malformed(format!("{name} is negative: {t}")));
            }
            if t > now_ms.saturating_add(CLOCK_SKEW_TOLERANCE_MS) {
                return Err(Malformed(format!(
                    "{name} is {} ms in the future",
                    t - now_ms
                )));
            }
        }
        if info.enqueued_at.saturating_add(CLOCK_SKEW_TOLERANCE_MS) < info.first_received_at {
            return Err(Malformed(format!(
                "{ENQUEUED_AT} {} is before {FIRST_RECEIVED_AT} {}",
                info.enqueued_at, info.first_received_at
            )));
        }
        Ok(info)
    }

    /// Whether the record carries any retry header at all.
    pub(crate) fn present(record: &Record) -> bool {
        record.header(FIRST_RECEIVED_AT).is_some()
    }

    /// `headers` without any `retry.*` header, followed by fresh retry
    /// headers for this info, `reason`, and `dead` if given. User headers
    /// keep their order and duplicates.
    pub(crate) fn headers(
        &self,
        user: &[Header],
        reason: &str,
        dead: Option<DeadReason>,
    ) -> Vec<Header> {
        // Sized once: the user's headers and up to nine of ours.
        let mut out: Vec<Header> = Vec::with_capacity(user.len() + 9);
        out.extend(user.iter().filter(|h| !is_retry_header(h)).cloned());
        // Every value written into one buffer and sliced from it: one
        // allocation for the seven values instead of one each (this runs
        // once per retried record, on the workers). Numbers in decimal by
        // hand: `write!` went through the formatting machinery per value.
        let reason = truncate(reason);
        let mut buf = Vec::with_capacity(self.origin_topic.len() + reason.len() + 96);
        let mut spans = [0usize; 8];
        let mut put = |buf: &mut Vec<u8>, i: usize, v: &[u8]| {
            buf.extend_from_slice(v);
            spans[i] = buf.len();
        };
        let mut digits = [0u8; 20];
        put(&mut buf, 0, self.origin_topic.as_bytes());
        put(
            &mut buf,
            1,
            decimal(self.origin_partition.into(), &mut digits),
        );
        put(&mut buf, 2, decimal(self.origin_offset, &mut digits));
        put(&mut buf, 3, decimal(self.first_received_at, &mut digits));
        put(&mut buf, 4, decimal(self.enqueued_at, &mut digits));
        put(&mut buf, 5, decimal(self.attempts.into(), &mut digits));
        put(&mut buf, 6, reason.as_bytes());
        if let Some(d) = self.due_at {
            put(&mut buf, 7, decimal(d, &mut digits));
        }
        let buf = Bytes::from(buf);
        let names = [
            ORIGIN_TOPIC,
            ORIGIN_PARTITION,
            ORIGIN_OFFSET,
            FIRST_RECEIVED_AT,
            ENQUEUED_AT,
            ATTEMPTS,
            REASON,
            DUE_AT,
        ];
        let n = if self.due_at.is_some() { 8 } else { 7 };
        let mut start = 0;
        for (name, &end) in names.iter().zip(&spans).take(n) {
            out.push(Header {
                key: Bytes::from_static(name.as_bytes()),
                value: Some(buf.slice(start..end)),
            });
            start = end;
        }
        if let Some(d) = dead {
            out.push(Header::new(DEAD_REASON, d.as_str()));
        }
        out
    }
}

/// `v` in decimal (a leading `-` when negative), as `Display` writes it,
/// in the tail of `digits` (an i64 has at most 19 digits and a sign).
fn decimal(v: i64, digits: &mut [u8; 20]) -> &[u8] {
    let mut u = v.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if v < 0 {
        at -= 1;
        digits[at] = b'-';
    }
    &digits[at..]
}

/// Stamps a dead-letter record's headers with who gave up and when
/// (`retry.group`, `retry.dead-lettered-at`), replacing any earlier stamp
/// so a record dead-lettered, replayed and dead-lettered again carries one.
pub(crate) fn stamp_dead_letter(headers: &mut Vec<Header>, group: &str, now_ms: i64) {
    headers.retain(|h| &h.key[..] != DEAD_LETTERED_AT.as_bytes() && &h.key[..] != GROUP.as_bytes());
    headers.push(Header::new(DEAD_LETTERED_AT, now_ms.to_string()));
    headers.push(Header::new(GROUP, group.to_string()));
}

/// A copy of `headers` (same keys, values, order, nulls) that shares
/// nothing with them: our own names point at static strings, every other
/// key and value is copied into one new buffer. For the relay's origin
/// writes: the read record's headers are slices of the whole Fetch
/// response, so cloning them costs two reference counts per header on one
/// counter that the fetching thread, the relay and the producer thread
/// (which drops the written copy) all touch; a few hundred bytes copied
/// cost less.
pub(crate) fn compact(headers: &[Header]) -> Vec<Header> {
    let copied: usize = headers
        .iter()
        .map(|h| {
            let key = if own_name(&h.key).is_some() {
                0
            } else {
                h.key.len()
            };
            key + h.value.as_ref().map_or(0, |v| v.len())
        })
        .sum();
    let mut buf = Vec::with_capacity(copied);
    // (key span, value span) per header; None: a static key, a null value.
    let mut spans = Vec::with_capacity(headers.len());
    for h in headers {
        let key = match own_name(&h.key) {
            Some(name) => Err(name),
            None => {
                let at = buf.len();
                buf.extend_from_slice(&h.key);
                Ok(at..buf.len())
            }
        };
        let value = h.value.as_ref().map(|v| {
            let at = buf.len();
            buf.extend_from_slice(v);
            at..buf.len()
        });
        spans.push((key, value));
    }
    let buf = Bytes::from(buf);
    spans
        .into_iter()
        .map(|(key, value)| Header {
            key: match key {
                Err(name) => Bytes::from_static(name.as_bytes()),
                Ok(span) => buf.slice(span),
            },
            value: value.map(|span| buf.slice(span)),
        })
        .collect()
}

/// Headers for a dead-letter copy of a record whose retry headers cannot be
/// trusted: every original header kept as is, then the reason.
pub(crate) fn malformed_headers(original: &[Header], reason: &str) -> Vec<Header> {
    let mut out: Vec<Header> = original
        .iter()
        .filter(|h| &h.key[..] != REASON.as_bytes() && &h.key[..] != DEAD_REASON.as_bytes())
        .cloned()
        .collect();
    out.push(Header::new(REASON, truncate(reason).to_string()));
    out.push(Header::new(DEAD_REASON, DeadReason::Malformed.as_str()));
    out
}

fn is_retry_header(h: &Header) -> bool {
    OWN.iter().any(|name| &h.key[..] == name.as_bytes())
}

/// Every `retry.*` name this crate writes: [`OWN`], then the replay stamps.
const NAMES: [&str; 14] = [
    ORIGIN_TOPIC,
    ORIGIN_PARTITION,
    ORIGIN_OFFSET,
    FIRST_RECEIVED_AT,
    ENQUEUED_AT,
    ATTEMPTS,
    REASON,
    DEAD_REASON,
    DUE_AT,
    DEAD_LETTERED_AT,
    GROUP,
    HELD,
    REPLAYED_FROM,
    REPLAY_COUNT,
];

/// Our own header names (all of [`NAMES`] but the replay stamps, which the
/// CLI writes and which travel with the record); a user's other `retry.*`
/// headers pass through.
const OWN: &[&str] = NAMES.split_at(NAMES.len() - 2).0;

/// `key` as the static string of one of this crate's header names, if it
/// is one. The Kafka decoder keeps such keys static rather than as slices
/// of the fetched buffer: a retried record carries seven or so, and every
/// slice is a reference count taken on the decoding thread and dropped on
/// another (a worker, the relay, the producer thread), on one counter per
/// batch that all of them touch.
pub(crate) fn own_name(key: &[u8]) -> Option<&'static str> {
    if !key.starts_with(b"retry.") {
        return None;
    }
    NAMES.iter().find(|name| name.as_bytes() == key).copied()
}

/// Cuts `reason` to at most [`MAX_REASON_BYTES`] on a char boundary.
pub(crate) fn truncate(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The headers [`RetryInfo::parse`] reads, in the order [`gather`] returns
/// them.
const PARSED: [&str; 7] = [
    ORIGIN_TOPIC,
    ORIGIN_PARTITION,
    ORIGIN_OFFSET,
    FIRST_RECEIVED_AT,
    ENQUEUED_AT,
    ATTEMPTS,
    DUE_AT,
];

/// The last header of each [`PARSED`] name (as [`Record::header`] finds
/// it), in one pass over the headers: the relay parses every record it
/// reads, and a search per name went over a retried record's eight or so
/// headers seven times.
fn gather(record: &Record) -> [Option<&Header>; 7] {
    let mut found = [None; 7];
    for h in &record.headers {
        if !h.key.starts_with(b"retry.") {
            continue;
        }
        if let Some(i) = PARSED.iter().position(|name| name.as_bytes() == &h.key[..]) {
            found[i] = Some(h);
        }
    }
    found
}

fn value_of<'a>(header: Option<&'a Header>, name: &str) -> Result<&'a Bytes, Malformed> {
    header
        .ok_or_else(|| Malformed(format!("missing header {name}")))?
        .value
        .as_ref()
        .ok_or_else(|| Malformed(format!("header {name} is null")))
}

fn text_of<'a>(header: Option<&'a Header>, name: &str) -> Result<&'a str, Malformed> {
    std::str::from_utf8(value_of(header, name)?)
        .map_err(|_| Malformed(format!("header {name} is not UTF-8")))
}

fn number_of<T>(header: Option<&Header>, name: &str) -> Result<T, Malformed>
where
    T: std::str::FromStr + TryFrom<i64>,
{
    // The usual value, plain decimal digits as this crate writes them, read
    // straight from the bytes: UTF-8 validation, trimming and `str::parse`
    // were most of the relay's parse of every record it reads. Anything
    // else (spaces, a sign, too long, out of range, not a number) takes the
    // general path below, so what is accepted and every error stay as they
    // were.
    if let Some(v) = plain_decimal(value_of(header, name)?).and_then(|v| T::try_from(v).ok()) {
        return Ok(v);
    }
    let s = text_of(header, name)?;
    s.trim().parse().map_err(|_| {
        let shown: String = s.chars().take(40).collect();
        Malformed(format!("header {name} is not a number: {shown:?}"))
    })
}

/// `bytes` as a number when they are 1 to 18 ASCII digits (18 cannot
/// overflow an i64). Signs go the general way: `str::parse` takes "-0" as
/// a signed zero and refuses it as an unsigned one, and this crate never
/// writes a negative value.
fn plain_decimal(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 18 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0i64, |v, d| v * 10 + i64::from(d - b'0')))
}

fn text<'a>(record: &'a Record, name: &str) -> Result<&'a str, Malformed> {
    text_of(record.header(name), name)
}

fn number<T>(record: &Record, name: &str) -> Result<T, Malformed>
where
    T: std::str::FromStr + TryFrom<i64>,
{
    number_of(record.header(name), name)
}

/// The retry state a record carries, read from its `retry.*` headers. A
/// missing or unreadable header reads as absent (`None`, or 0 attempts):
/// these never fail, so a handler can call them on any record.
///
/// ```
/// use kafka_retry::{Header, Record, ATTEMPTS, FIRST_RECEIVED_AT, ORIGIN_TOPIC};
/// let mut r = Record {
///     topic: "orders".into(), partition: 0, offset: 7, timestamp: 0,
///     key: None, value: None, headers: vec![],
/// };
/// assert_eq!(r.attempts(), 0); // first delivery
/// assert_eq!(r.origin_topic(), None);
/// r.headers.push(Header::new(ATTEMPTS, "2"));
/// r.headers.push(Header::new(FIRST_RECEIVED_AT, "1700000000000"));
/// r.headers.push(Header::new(ORIGIN_TOPIC, "orders"));
/// assert_eq!(r.attempts(), 2);
/// assert_eq!(r.first_received_at(), Some(1_700_000_000_000));
/// assert_eq!(r.origin_topic(), Some("orders"));
/// ```
impl Record {
    /// Failed attempts so far (`retry.attempts`): 0 on the first delivery,
    /// 1 when the record comes back after its first `Retry`, and so on.
    pub fn attempts(&self) -> u32 {
        number(self, ATTEMPTS).unwrap_or(0)
    }

    /// When the record was first read from its origin topic, ms since the
    /// Unix epoch (`retry.first-received-at`); `None` on the first delivery.
    pub fn first_received_at(&self) -> Option<i64> {
        number(self, FIRST_RECEIVED_AT).ok()
    }

    /// The topic the record was first read from (`retry.origin-topic`);
    /// `None` on the first delivery.
    pub fn origin_topic(&self) -> Option<&str> {
        text(self, ORIGIN_TOPIC).ok()
    }

    /// The partition the record was first read from
    /// (`retry.origin-partition`); `None` on the first delivery.
    pub fn origin_partition(&self) -> Option<i32> {
        number(self, ORIGIN_PARTITION).ok()
    }

    /// The offset the record was first read at (`retry.origin-offset`);
    /// `None` on the first delivery.
    pub fn origin_offset(&self) -> Option<i64> {
        number(self, ORIGIN_OFFSET).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn record(headers: Vec<Header>) -> Record {
        Record {
            topic: "retry".into(),
            partition: 0,
            offset: 0,
            timestamp: NOW,
            key: None,
            value: None,
            headers,
        }
    }

    fn valid() -> Vec<Header> {
        let info = RetryInfo {
            origin_topic: "orders".into(),
            origin_partition: 2,
            origin_offset: 41,
            first_received_at: NOW - 5000,
            enqueued_at: NOW - 1000,
            attempts: 3,
            due_at: None,
        };
        info.headers(&[Header::new("user", "u")], "boom", None)
    }

    /// Plain digits take the fast path; whatever the value, `number_of`
    /// accepts and refuses exactly what `str::parse` after `trim` does, with
    /// the same error.
    #[test]
    fn numbers_read_fast_or_slow_agree_with_str_parse() {
        fn check<T>(v: &str)
        where
            T: std::str::FromStr + TryFrom<i64> + PartialEq + std::fmt::Debug,
        {
            let h = Header::new("n", v.to_string());
            let got = number_of::<T>(Some(&h), "n").map_err(|m| m.0);
            let want = v.trim().parse::<T>().map_err(|_| {
                let shown: String = v.chars().take(40).collect();
                format!("header n is not a number: {shown:?}")
            });
            assert_eq!(got, want, "{v:?} as {}", std::any::type_name::<T>());
        }
        let big = "9".repeat(18);
        let bigger = "9".repeat(19);
        let too_big = "9".repeat(20);
        let inputs = [
            "0",
            "7",
            "007",
            "-0",
            "-5",
            "+5",
            " 5",
            "5 ",
            "",
            "-",
            "--5",
            "5a",
            "1.5",
            "2147483647",
            "2147483648",
            "-2147483648",
            "-2147483649",
            "4294967295",
            "4294967296",
            &big,
            &bigger,
            &too_big,
            "-9223372036854775808",
            "9223372036854775807",
            "9223372036854775808",
            "\u{661}",
        ];
        for v in inputs {
            check::<i32>(v);
            check::<i64>(v);
            check::<u32>(v);
        }
    }

    /// `parse` reads, in its one pass, the header a search per name finds:
    /// the last of each name, whatever the order, duplicates and other
    /// `retry.*` headers around them; a later null or bad copy wins (and
    /// makes the record malformed) as it does for the accessors.
    #[test]
    fn parse_reads_the_last_of_each_header_in_one_pass() {
        let mut hs = valid();
        hs.reverse();
        hs.insert(2, Header::new(ATTEMPTS, "9"));
        hs.insert(0, Header::new("retry.mine", "x"));
        hs.push(Header::new(ORIGIN_OFFSET, "77"));
        hs.push(Header::new(DUE_AT, (NOW + 10).to_string()));
        let r = record(hs.clone());
        let info = RetryInfo::parse(&r, NOW).unwrap();
        assert_eq!(info.origin_topic, text(&r, ORIGIN_TOPIC).unwrap());
        assert_eq!(info.origin_offset, 77);
        assert_eq!(
            info.origin_offset,
            number::<i64>(&r, ORIGIN_OFFSET).unwrap()
        );
        assert_eq!(info.attempts, number::<u32>(&r, ATTEMPTS).unwrap());
        assert_eq!(info.due_at, Some(NOW + 10));
        assert_eq!(info.first_received_at, NOW - 5000);
        hs.push(Header {
            key: Bytes::from_static(ENQUEUED_AT.as_bytes()),
            value: None,
        });
        let err = RetryInfo::parse(&record(hs.clone()), NOW).unwrap_err();
        assert_eq!(err.0, format!("header {ENQUEUED_AT} is null"));
        hs.push(Header::new(ENQUEUED_AT, "soon"));
        let err = RetryInfo::parse(&record(hs), NOW).unwrap_err();
        assert!(
            err.0
                .starts_with(&format!("header {ENQUEUED_AT} is not a number")),
            "{}",
            err.0
        );
    }

    #[test]
    fn round_trip_keeps_user_headers_first_and_replaces_retry_headers() {
        let hs = valid();
        let info = RetryInfo::parse(&record(hs.clone()), NOW).unwrap();
        assert_eq!(info.attempts, 3);
        assert_eq!(info.origin_offset, 41);
        let next = RetryInfo {
            attempts: 4,
            ..info.clone()
        }
        .headers(&hs, "again", None);
        assert_eq!(next[0], Header::new("user", "u"));
        assert_eq!(
            next.iter()
                .filter(|h| &h.key[..] == ATTEMPTS.as_bytes())
                .count(),
            1
        );
        let again = RetryInfo::parse(&record(next), NOW).unwrap();
        assert_eq!(again.attempts, 4);
        assert_eq!(again.first_received_at, info.first_received_at);
    }

    /// A retry header given twice counts by its last copy, as
    /// `Record::header` reads it.
    #[test]
    fn the_last_copy_of_a_retry_header_counts() {
        let mut hs = valid();
        hs.insert(0, Header::new(ATTEMPTS, "9"));
        hs.push(Header::new(ORIGIN_OFFSET, "77"));
        let r = record(hs);
        let info = RetryInfo::parse(&r, NOW).unwrap();
        assert_eq!((info.attempts, info.origin_offset), (3, 77));
        assert_eq!(r.attempts(), 3);
        // A bad last copy is malformed even after a good one.
        let mut hs = valid();
        hs.push(Header::new(ATTEMPTS, "x"));
        assert!(RetryInfo::parse(&record(hs), NOW).is_err());
    }

    /// Each value lands under its own name, the due time and dead reason
    /// included (the values share one buffer: no value may run into the
    /// next), and an empty reason stays an empty value.
    #[test]
    fn every_retry_header_carries_its_own_value() {
        let info = RetryInfo {
            origin_topic: "orders".into(),
            origin_partition: 2,
            origin_offset: 41,
            first_received_at: 7,
            enqueued_at: 8,
            attempts: 3,
            due_at: Some(9),
        };
        let hs = info.headers(&[], "", Some(DeadReason::Expired));
        let got: Vec<(String, String)> = hs
            .iter()
            .map(|h| {
                let v = h.value.as_deref().unwrap();
                (
                    String::from_utf8(h.key.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = [
            (ORIGIN_TOPIC, "orders"),
            (ORIGIN_PARTITION, "2"),
            (ORIGIN_OFFSET, "41"),
            (FIRST_RECEIVED_AT, "7"),
            (ENQUEUED_AT, "8"),
            (ATTEMPTS, "3"),
            (REASON, ""),
            (DUE_AT, "9"),
            (DEAD_REASON, "expired"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
        let back = RetryInfo::parse(&record(hs), NOW).unwrap();
        assert_eq!(back, info);
    }

    fn with(name: &str, value: Option<&[u8]>) -> Record {
        let mut hs: Vec<Header> = valid()
            .into_iter()
            .filter(|h| &h.key[..] != name.as_bytes())
            .collect();
        if let Some(v) = value {
            hs.push(Header::new(name.to_string(), Bytes::copy_from_slice(v)));
        }
        record(hs)
    }

    #[test]
    fn every_kind_of_bad_header_is_malformed_with_a_reason() {
        let cases: Vec<(Record, &str)> = vec![
            (
                with(FIRST_RECEIVED_AT, None),
                "missing header retry.first-received-at",
            ),
            (with(FIRST_RECEIVED_AT, Some(b"yesterday")), "not a number"),
            (with(FIRST_RECEIVED_AT, Some(b"-5")), "negative"),
            (
                with(
                    FIRST_RECEIVED_AT,
                    Some((NOW + 3_600_000).to_string().as_bytes()),
                ),
                "in the future",
            ),
            (with(ENQUEUED_AT, Some(b"\xff\xfe")), "not UTF-8"),
            (with(ATTEMPTS, Some(b"-1")), "not a number"),
            (with(ORIGIN_TOPIC, Some(b"")), "empty"),
            (
                with(ORIGIN_PARTITION, Some(b"99999999999999")),
                "not a number",
            ),
            (
                with(ENQUEUED_AT, Some((NOW - 3_600_000).to_string().as_bytes())),
                "before",
            ),
        ];
        for (r, want) in cases {
            let err = RetryInfo::parse(&r, NOW).unwrap_err();
            assert!(err.0.contains(want), "{:?} should mention {want:?}", err.0);
        }
        let mut null = valid();
        null.push(Header {
            key: Bytes::from_static(ATTEMPTS.as_bytes()),
            value: None,
        });
        assert!(RetryInfo::parse(&record(null), NOW)
            .unwrap_err()
            .0
            .contains("null"));
    }

    #[test]
    fn a_users_own_retry_prefixed_header_passes_through() {
        let user = vec![Header::new("retry.policy", "gentle"), Header::new("a", "1")];
        let info = RetryInfo::first(&record(vec![]), NOW);
        let hs = info.headers(&user, "r", None);
        assert_eq!(hs[0], Header::new("retry.policy", "gentle"));
        let again = info.headers(&hs, "r2", Some(DeadReason::Expired));
        assert_eq!(again[..2], user[..]);
        assert_eq!(
            again
                .iter()
                .filter(|h| &h.key[..] == REASON.as_bytes())
                .count(),
            1
        );
    }

    #[test]
    fn due_at_round_trips_and_a_bad_one_is_malformed() {
        let mut info = RetryInfo::parse(&record(valid()), NOW).unwrap();
        assert_eq!(info.due_at, None);
        info.due_at = Some(NOW + 30_000);
        let hs = info.headers(&[], "later", None);
        assert_eq!(RetryInfo::parse(&record(hs.clone()), NOW).unwrap(), info);
        // A plain retry next drops it again.
        info.due_at = None;
        let plain = info.headers(&hs, "again", None);
        assert!(plain.iter().all(|h| &h.key[..] != DUE_AT.as_bytes()));
        for bad in [&b"-1"[..], b"soon", b"99999999999999999999999"] {
            let err = RetryInfo::parse(&with(DUE_AT, Some(bad)), NOW).unwrap_err();
            assert!(err.0.contains(DUE_AT), "{err:?}");
        }
    }

    #[test]
    fn headers_stay_the_same_size_over_a_thousand_hops() {
        let mut hs = valid();
        let mut info = RetryInfo::parse(&record(hs.clone()), NOW).unwrap();
        let size = |hs: &[Header]| -> usize {
            hs.iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
                .sum()
        };
        let mut sizes = Vec::new();
        for i in 0..1000u32 {
            info.attempts = 100 + i % 900; // always three digits
            info.due_at = (i % 2 == 0).then_some(NOW);
            let dead = (i % 3 == 0).then_some(DeadReason::Attempts);
            hs = info.headers(&hs, "same reason", dead);
            if dead.is_some() {
                stamp_dead_letter(&mut hs, "billing", NOW);
            }
            sizes.push((i % 6, hs.len(), size(&hs)));
        }
        // The same kind of hop always gives the same headers, however many came before.
        for w in sizes.windows(7) {
            assert_eq!(w[0], w[6]);
        }
        assert!(hs.len() <= 1 + OWN.len(), "{}", hs.len());
    }

    /// The hand-written decimal matches `Display` everywhere it matters:
    /// 0, the ends of the ranges, every length of number, negatives.
    #[test]
    fn decimal_writes_what_display_writes() {
        let mut cases = vec![
            0i64,
            1,
            -1,
            9,
            10,
            99,
            100,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ];
        let mut p = 1i64;
        for _ in 0..18 {
            p *= 10;
            cases.extend([p - 1, p, p + 1, -p, -(p - 1)]);
        }
        cases.extend([i32::MAX as i64, i32::MIN as i64, u32::MAX as i64, NOW]);
        let mut digits = [0u8; 20];
        for v in cases {
            assert_eq!(decimal(v, &mut digits), v.to_string().as_bytes(), "{v}");
        }
    }

    /// `compact` gives the same headers (keys, values, order, duplicates,
    /// nulls, empty values, non-UTF-8 bytes), none of them pointing into the
    /// buffer the originals are slices of (a Fetch response's, on the wire).
    #[test]
    fn compact_copies_every_header_and_shares_nothing() {
        let mut raw = Vec::new();
        let mut spans = Vec::new();
        let mut add = |k: &[u8], v: Option<&[u8]>| {
            let at = raw.len();
            raw.extend_from_slice(k);
            let kspan = at..raw.len();
            let vspan = v.map(|v| {
                let at = raw.len();
                raw.extend_from_slice(v);
                at..raw.len()
            });
            spans.push((kspan, vspan));
        };
        for h in valid() {
            add(&h.key, h.value.as_deref());
        }
        add(b"\xffuser", Some(b"\xfe"));
        add(b"user-null", None);
        add(ATTEMPTS.as_bytes(), Some(b""));
        add(ATTEMPTS.as_bytes(), Some(b"7"));
        let wire = Bytes::from(raw);
        let hs: Vec<Header> = spans
            .into_iter()
            .map(|(k, v)| Header {
                key: wire.slice(k),
                value: v.map(|v| wire.slice(v)),
            })
            .collect();
        let copy = compact(&hs);
        assert_eq!(copy, hs);
        let start = wire.as_ptr() as usize;
        let inside = |b: &Bytes| {
            let p = b.as_ptr() as usize;
            !b.is_empty() && p >= start && p < start + wire.len()
        };
        for c in &copy {
            assert!(!inside(&c.key), "{c:?}");
            assert!(!c.value.as_ref().is_some_and(inside), "{c:?}");
        }
        assert!(compact(&[]).is_empty());
    }

    #[test]
    fn reasons_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(2000);
        let t = truncate(&long);
        assert!(t.len() <= MAX_REASON_BYTES);
        assert!(t.len() >= MAX_REASON_BYTES - 1);
    }

    #[test]
    fn parser_never_panics_on_arbitrary_header_bytes() {
        let mut x: u64 = 0x1234_5678;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            let names = [
                FIRST_RECEIVED_AT,
                ENQUEUED_AT,
                ATTEMPTS,
                ORIGIN_TOPIC,
                ORIGIN_OFFSET,
            ];
            let r = with(names[(x % 5) as usize], Some(&bytes));
            let _ = RetryInfo::parse(&r, NOW);
        }
    }
}

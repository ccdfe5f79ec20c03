//! Fuzzes the retry header contract (`src/headers.rs`): `RetryInfo::parse`
//! on arbitrary headers, the headers written for a retry or a dead letter,
//! and reason truncation.
//!
//! The parser comes from `kafka_retry::unstable` (feature `fuzzing`).
//!
//! Input: bytes 0..8 = "now" in ms (big-endian, masked to a sane range),
//! then headers as `key_len (1 byte) | key | value_len (1 byte, 255 = null) |
//! value`, repeated. Key lengths 0xf0..=0xf5 stand for the six retry header
//! names, so the fuzzer reaches the number parsing without guessing names.
#![no_main]

use bytes::Bytes;
use kafka_retry::unstable::headers::{self, DeadReason};
use kafka_retry::{Header, Record};

const NAMES: [&str; 6] = [
    headers::ORIGIN_TOPIC,
    headers::ORIGIN_PARTITION,
    headers::ORIGIN_OFFSET,
    headers::FIRST_RECEIVED_AT,
    headers::ENQUEUED_AT,
    headers::ATTEMPTS,
];

fn parse_input(data: &[u8]) -> Option<(i64, Vec<Header>)> {
    let now = i64::from_be_bytes(data.get(..8)?.try_into().ok()?) & ((1 << 45) - 1);
    let mut rest = &data[8..];
    let mut headers = Vec::new();
    while let Some((&klen, tail)) = rest.split_first() {
        let (key, tail) = if (0xf0..=0xf5).contains(&klen) {
            (Bytes::from_static(NAMES[usize::from(klen - 0xf0)].as_bytes()), tail)
        } else {
            let n = usize::from(klen).min(tail.len());
            (Bytes::copy_from_slice(&tail[..n]), &tail[n..])
        };
        let Some((&vlen, tail)) = tail.split_first() else {
            headers.push(Header { key, value: None });
            break;
        };
        let (value, tail) = if vlen == 255 {
            (None, tail)
        } else {
            let n = usize::from(vlen).min(tail.len());
            (Some(Bytes::copy_from_slice(&tail[..n])), &tail[n..])
        };
        headers.push(Header { key, value });
        rest = tail;
    }
    Some((now, headers))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((now, hs)) = parse_input(data) else { return };
    let record = Record {
        topic: "orders-retry".into(),
        partition: 0,
        offset: 7,
        timestamp: now,
        key: None,
        value: None,
        headers: hs.clone(),
    };
    match headers::parse(&record, now) {
        Ok(info) => {
            // What the README promises of a valid record.
            assert!(!info.origin_topic.is_empty());
            assert!(info.origin_partition >= 0 && info.origin_offset >= 0);
            for t in [info.first_received_at, info.enqueued_at] {
                assert!(t >= 0 && t <= now + headers::CLOCK_SKEW_TOLERANCE_MS);
            }
            // Writing the headers again and reading them back is lossless,
            // and user headers stay first, in order.
            let reason = String::from_utf8_lossy(data).into_owned();
            let out = headers::write(&info, &hs, &reason, Some(DeadReason::Expired));
            let user: Vec<&Header> = hs.iter().filter(|h| !h.key.starts_with(b"retry.")).collect();
            assert!(out.iter().take(user.len()).eq(user.iter().copied()));
            let again = Record { headers: out, ..record.clone() };
            assert_eq!(headers::parse(&again, now).as_ref(), Ok(&info));
            let written = again.header(headers::REASON).and_then(|h| h.value.clone()).unwrap_or_default();
            assert!(written.len() <= headers::MAX_REASON_BYTES);
            assert!(std::str::from_utf8(&written).is_ok());
        }
        Err(m) => {
            assert!(!m.0.is_empty());
            // A dead letter keeps every header but the reason ones, in order.
            let dead = headers::malformed(&hs, &m.0);
            let kept: Vec<&Header> = hs
                .iter()
                .filter(|h| &h.key[..] != headers::REASON.as_bytes() && &h.key[..] != headers::DEAD_REASON.as_bytes())
                .collect();
            assert_eq!(dead.len(), kept.len() + 2);
            assert!(dead.iter().take(kept.len()).eq(kept.iter().copied()));
        }
    }
});

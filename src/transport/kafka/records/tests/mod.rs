//! Tests of the record batch codec: round trips through every codec and
//! interop with kafka-protocol's codec here; corrupt input, caps and the
//! decoder's property test in `corrupt`.

use bytes::Bytes;

use super::compression::{deflate, inflate, ZSTD_MAGIC};
use super::decode::{decode_with_caps, Cursor};
use super::encode::{put_varint, put_varlong, varint_len, varlong_len};
use super::*;
use crate::record::{Header, OutRecord, Record};

mod corrupt;

const ALL: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];
const NOW: i64 = 1_700_000_000_000;

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn out(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
    ts: Option<i64>,
) -> OutRecord {
    let mut r = OutRecord::new("t");
    r.key = key.map(b);
    r.value = value.map(b);
    r.headers = headers
        .iter()
        .map(|(k, v)| Header {
            key: b(k),
            value: v.map(b),
        })
        .collect();
    r.timestamp = ts;
    r
}

/// Every corner the codec must keep: null vs empty key/value/header value,
/// duplicate and non-UTF-8 header keys, a 1 MiB value, timestamps out of
/// order (base timestamp = the minimum, not the first) and `None` (now).
fn corner_records() -> Vec<OutRecord> {
    let big: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7 % 251) as u8).collect();
    vec![
        out(None, Some(b"null key"), &[], Some(NOW + 5)),
        out(Some(b""), Some(b"empty key"), &[], Some(NOW - 10)),
        out(Some(b"k"), None, &[], None),
        out(Some(b"k"), Some(b""), &[], Some(NOW + 1000)),
        out(Some(b"big"), Some(&big), &[(b"h", Some(b"v"))], Some(NOW)),
        out(
            Some(b"dup"),
            Some(b"v"),
            &[
                (b"a", Some(b"1")),
                (b"a", Some(b"2")),
                (b"null", None),
                (b"empty", Some(b"")),
                (b"\xff\xfe", Some(b"bad key")),
                (b"a", Some(b"3")),
            ],
            Some(NOW),
        ),
    ]
}

fn small_records(n: usize, tag: &str) -> Vec<OutRecord> {
    (0..n)
        .map(|i| {
            OutRecord::new("t")
                .key(format!("{tag}-k{i}"))
                .value(format!("{tag}-value-{i}").repeat(i % 4 + 1))
                .header("i", i.to_string())
        })
        .map(|mut r| {
            r.timestamp = Some(NOW + 1);
            r
        })
        .collect()
}

/// Asserts `got` is `sent` at offsets `first..`, byte for byte.
fn assert_same(sent: &[OutRecord], got: &[Record], first: i64) {
    assert_eq!(got.len(), sent.len(), "record count");
    for (i, (s, g)) in sent.iter().zip(got).enumerate() {
        assert_eq!(g.offset, first + i as i64, "offset of record {i}");
        assert_eq!(g.timestamp, s.timestamp.unwrap_or(NOW), "timestamp {i}");
        assert_eq!(g.key, s.key, "key {i}");
        assert_eq!(g.value, s.value, "value {i}");
        assert_eq!(g.headers, s.headers, "headers {i}");
        assert_eq!((g.topic.as_str(), g.partition), ("t", 3));
    }
}

fn set_base(batch: &mut [u8], base: i64) {
    batch[..8].copy_from_slice(&base.to_be_bytes());
}

fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[OFF_ATTRIBUTES..]);
    batch[OFF_CRC..OFF_ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
}

fn batch_at(records: &[OutRecord], base: i64, c: Compression) -> Vec<u8> {
    let mut v = encode_batch(records, NOW, c).unwrap().to_vec();
    set_base(&mut v, base);
    v
}

fn decode(data: &[u8], from: i64) -> Decoded {
    decode_records("t", 3, b(data), from)
}

fn reason(r: &Record) -> Option<String> {
    let h = r.header(UNDECODABLE_HEADER)?;
    Some(String::from_utf8(h.value.clone()?.to_vec()).unwrap())
}

#[test]
fn smoke() {
    let sent = small_records(3, "a");
    let data = encode_batch(&sent, NOW, Compression::None).unwrap();
    let d = decode_records("t", 3, data, 0);
    assert_same(&sent, &d.records, 0);
    assert_eq!(d.next_offset, 3);
}

#[test]
fn header_fields() {
    let sent = corner_records();
    for c in ALL {
        let v = encode_batch(&sent, NOW, c).unwrap();
        assert_eq!(be_i64(&v, 0), 0, "base offset");
        assert_eq!(be_i32(&v, 8) as usize, v.len() - 12, "length");
        assert_eq!(be_i32(&v, 12), -1, "partition leader epoch");
        assert_eq!(v[OFF_MAGIC], 2);
        assert_eq!(be_u32(&v, OFF_CRC), crc32c::crc32c(&v[OFF_ATTRIBUTES..]));
        assert_eq!(be_i16(&v, OFF_ATTRIBUTES), c.id(), "attributes");
        assert_eq!(be_i32(&v, OFF_LAST_OFFSET_DELTA), 5);
        assert_eq!(be_i64(&v, OFF_BASE_TIMESTAMP), NOW - 10, "min timestamp");
        assert_eq!(be_i64(&v, OFF_MAX_TIMESTAMP), NOW + 1000);
        assert_eq!(be_i64(&v, 43), -1, "producer id");
        assert_eq!(be_i16(&v, 51), -1, "producer epoch");
        assert_eq!(be_i32(&v, 53), -1, "base sequence");
        assert_eq!(be_i32(&v, OFF_RECORD_COUNT), 6);
    }
    assert!(encode_batch(&[], NOW, Compression::None).is_err());
}

#[test]
fn round_trip_every_codec() {
    let sent = corner_records();
    let mut sizes = Vec::new();
    for c in ALL {
        let data = batch_at(&sent, 1000, c);
        sizes.push((c, data.len()));
        let d = decode(&data, 1000);
        assert!(
            d.records.iter().all(|r| reason(r).is_none()),
            "{c:?}: {:?}",
            d.records.iter().find_map(reason)
        );
        assert_same(&sent, &d.records, 1000);
        assert_eq!(d.next_offset, 1006, "{c:?}");
    }
    // The 1 MiB value is repetitive: every codec must actually compress.
    for (c, len) in &sizes[1..] {
        assert!(*len < sizes[0].1 / 2, "{c:?} did not compress: {len}");
    }
}

#[test]
fn uncompressed_decode_is_zero_copy() {
    let sent = corner_records();
    let data = encode_batch(&sent, NOW, Compression::None).unwrap();
    let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
    let d = decode_records("t", 3, data.clone(), 0);
    let big = d.records[4].value.as_ref().unwrap();
    assert!(range.contains(&(big.as_ptr() as usize)), "value was copied");
}

/// This crate's header names come out as static strings, not slices of the
/// fetched buffer (no reference count on it per header); a user's keys,
/// `retry.`-prefixed or not, and every value stay slices of it. Both read
/// back the same bytes.
#[test]
fn own_header_names_decode_static_and_others_as_slices() {
    use crate::headers::{ATTEMPTS, ORIGIN_TOPIC, REPLAY_COUNT};
    let headers: [(&[u8], Option<&[u8]>); 5] = [
        (ORIGIN_TOPIC.as_bytes(), Some(b"orders")),
        (ATTEMPTS.as_bytes(), Some(b"2")),
        (REPLAY_COUNT.as_bytes(), None),
        (b"retry.mine", Some(b"x")),
        (b"trace", Some(b"abc")),
    ];
    let sent = vec![out(Some(b"k"), Some(b"v"), &headers, Some(NOW))];
    let data = encode_batch(&sent, NOW, Compression::None).unwrap();
    let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
    let inside = |b: &Bytes| range.contains(&(b.as_ptr() as usize));
    let d = decode_records("t", 3, data.clone(), 0);
    assert_same(&sent, &d.records, 0);
    let hs = &d.records[0].headers;
    let statics = [ORIGIN_TOPIC, ATTEMPTS, REPLAY_COUNT];
    for (h, name) in hs.iter().zip(statics) {
        assert_eq!(h.key, name.as_bytes());
        assert!(!inside(&h.key), "{name} was sliced from the buffer");
    }
    assert!(inside(&hs[3].key), "a user's retry.* key must stay a slice");
    assert!(inside(&hs[4].key));
    assert!(hs.iter().filter_map(|h| h.value.as_ref()).all(inside));
}

#[test]
fn log_append_time_uses_max_timestamp() {
    let sent = small_records(3, "a");
    let mut v = batch_at(&sent, 0, Compression::None);
    v[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&42i64.to_be_bytes());
    let attrs = be_i16(&v, OFF_ATTRIBUTES) | ATTR_LOG_APPEND_TIME;
    v[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    fix_crc(&mut v);
    let d = decode(&v, 0);
    assert_eq!(d.records.len(), 3);
    assert!(d.records.iter().all(|r| r.timestamp == 42));
}

/// Three batches (offsets 10-13, 14-15, 16-20), mixed codecs.
fn three_batches() -> (Vec<Vec<OutRecord>>, Vec<u8>, [usize; 3]) {
    let sets = vec![
        small_records(4, "a"),
        small_records(2, "b"),
        small_records(5, "c"),
    ];
    let mut data = batch_at(&sets[0], 10, Compression::None);
    let l0 = data.len();
    data.extend(batch_at(&sets[1], 14, Compression::Gzip));
    let l1 = data.len();
    data.extend(batch_at(&sets[2], 16, Compression::Snappy));
    let l2 = data.len();
    (sets, data, [l0, l1, l2])
}

#[test]
fn several_batches_and_truncated_tail() {
    let (sets, data, [l0, l1, l2]) = three_batches();
    let all: Vec<OutRecord> = sets.concat();
    let d = decode(&data, 10);
    assert_same(&all, &d.records, 10);
    assert_eq!(d.next_offset, 21);

    let first_two: Vec<OutRecord> = sets[..2].concat();
    for cut in l1..l2 {
        let d = decode(&data[..cut], 10);
        assert_same(&first_two, &d.records, 10);
        assert_eq!(d.next_offset, 16, "cut at {cut}");
    }
    for cut in l0..l1 {
        let d = decode(&data[..cut], 10);
        assert_same(&sets[0], &d.records, 10);
        assert_eq!(d.next_offset, 14, "cut at {cut}");
    }
    for cut in 0..l0 {
        let d = decode(&data[..cut], 10);
        assert!(d.records.is_empty(), "cut at {cut}");
        assert_eq!(d.next_offset, 10);
    }
}

#[test]
fn from_offset_inside_and_beyond() {
    let (sets, data, _) = three_batches();
    let all: Vec<OutRecord> = sets.concat();
    // Inside the compressed second batch: its record 14 is dropped.
    let d = decode(&data, 15);
    assert_same(&all[5..], &d.records, 15);
    assert_eq!(d.next_offset, 21);
    // Inside the first batch.
    let d = decode(&data, 12);
    assert_same(&all[2..], &d.records, 12);
    // Past everything: nothing, and next_offset never goes back.
    let d = decode(&data, 50);
    assert!(d.records.is_empty());
    assert_eq!(d.next_offset, 50);
    // Empty and `None`-like buffers.
    let d = decode(&[], 7);
    assert!(d.records.is_empty());
    assert_eq!(d.next_offset, 7);
}

#[test]
fn control_batch_skipped_but_advanced() {
    let a = small_records(2, "a");
    let c = small_records(3, "c");
    // A transaction marker: key (version 0, type 1 = COMMIT).
    let marker = vec![out(
        Some(&[0, 0, 0, 1]),
        Some(&[0, 0, 0, 0, 0, 0]),
        &[],
        None,
    )];
    let mut ctrl = batch_at(&marker, 2, Compression::None);
    let attrs = 0x10 | ATTR_CONTROL; // transactional + control
    ctrl[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    fix_crc(&mut ctrl);

    let mut data = batch_at(&a, 0, Compression::None);
    data.extend(&ctrl);
    let d = decode(&data, 0);
    assert_same(&a, &d.records, 0);
    assert_eq!(d.next_offset, 3, "advanced past the marker");

    data.extend(batch_at(&c, 3, Compression::Lz4));
    let d = decode(&data, 0);
    assert_eq!(d.records.len(), 5);
    assert_same(&c, &d.records[2..], 3);
    assert_eq!(d.next_offset, 6);
}

#[test]
fn empty_compacted_batch_advances() {
    let a = small_records(1, "a");
    let mut v = batch_at(&a, 0, Compression::None);
    // Keep the header only: count 0, last offset delta 9.
    v.truncate(HEADER_LEN);
    v[8..12].copy_from_slice(&((HEADER_LEN - 12) as i32).to_be_bytes());
    v[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&9i32.to_be_bytes());
    v[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&0i32.to_be_bytes());
    fix_crc(&mut v);
    let d = decode(&v, 0);
    assert!(d.records.is_empty());
    assert_eq!(d.next_offset, 10);
}

/// kafka-protocol's records for `sent` (unique UTF-8 header keys only:
/// its IndexMap cannot hold anything else).
fn kp_records(sent: &[OutRecord]) -> Vec<kafka_protocol::records::Record> {
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{Record as KpRecord, TimestampType};
    sent.iter()
        .enumerate()
        .map(|(i, r)| {
            let mut headers = kafka_protocol::indexmap::IndexMap::new();
            for h in &r.headers {
                let key = String::from_utf8(h.key.to_vec()).unwrap();
                headers.insert(StrBytes::from_string(key), h.value.clone());
            }
            KpRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // offset - 1: one batch with base sequence -1 (wire notes).
                sequence: i as i32 - 1,
                timestamp: r.timestamp.unwrap_or(NOW),
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            }
        })
        .collect()
}

fn interop_records() -> Vec<OutRecord> {
    vec![
        out(
            None,
            Some(b"null key"),
            &[("x".as_bytes(), None)],
            Some(NOW + 3),
        ),
        out(Some(b""), Some(b""), &[], Some(NOW)),
        out(
            Some(b"k"),
            None,
            &[(b"a", Some(b"1")), (b"b", Some(b""))],
            Some(NOW - 1),
        ),
        out(
            Some(b"long"),
            Some(&[7u8; 100_000]),
            &[(b"h", Some(b"v"))],
            Some(NOW),
        ),
    ]
}

#[test]
fn decodes_kafka_protocol_batches() {
    use kafka_protocol::records::{Compression as KpC, RecordBatchEncoder, RecordEncodeOptions};
    let sent = interop_records();
    let kp = kp_records(&sent);
    for (kc, ours) in [
        (KpC::None, Compression::None),
        (KpC::Gzip, Compression::Gzip),
        (KpC::Snappy, Compression::Snappy),
    ] {
        let mut buf = bytes::BytesMut::new();
        let opts = RecordEncodeOptions {
            version: 2,
            compression: kc,
        };
        RecordBatchEncoder::encode(&mut buf, &kp, &opts).unwrap();
        let mut data = buf.to_vec();
        assert_eq!(be_i16(&data, OFF_ATTRIBUTES) & 7, ours.id());
        set_base(&mut data, 500);
        let d = decode(&data, 500);
        assert!(d.records.iter().all(|r| reason(r).is_none()), "{kc:?}");
        assert_same(&sent, &d.records, 500);
        assert_eq!(d.next_offset, 504);
    }
}

#[test]
fn kafka_protocol_decodes_our_batches() {
    use kafka_protocol::records::{Compression as KpC, RecordBatchDecoder};
    let sent = interop_records();
    let expected = kp_records(&sent);
    for (c, kc) in [
        (Compression::None, KpC::None),
        (Compression::Gzip, KpC::Gzip),
        (Compression::Snappy, KpC::Snappy),
    ] {
        let mut data = encode_batch(&sent, NOW, c).unwrap();
        let set = RecordBatchDecoder::decode(&mut data).unwrap();
        assert_eq!(set.compression, kc);
        assert_eq!(set.records.len(), expected.len());
        for (g, e) in set.records.iter().zip(&expected) {
            assert_eq!(g.offset, e.offset);
            assert_eq!(g.timestamp, e.timestamp);
            assert_eq!(g.key, e.key);
            assert_eq!(g.value, e.value);
            assert_eq!(g.headers, e.headers);
            assert_eq!(g.producer_id, -1);
        }
    }
}

/// `decode_records_into` makes room for a whole reply once (from the batch
/// headers' counts, a forged count capped), appends after what the buffer
/// holds, and leaves those records alone.
#[test]
fn decoding_into_a_buffer_reserves_the_reply_once_and_appends() {
    use std::collections::VecDeque;
    let mut data = batch_at(&small_records(40, "a"), 0, Compression::None);
    data.extend(batch_at(&small_records(30, "b"), 40, Compression::Lz4));
    let mut buf: VecDeque<Record> = VecDeque::new();
    let (next, batches) = decode_records_into("t", 3, b(&data), 0, &mut buf);
    assert_eq!((next, batches.len(), buf.len()), (70, 2, 70));
    // One reservation of exactly the reply's 70 (growing by doubling from
    // empty would have ended at a power of two).
    assert_eq!(buf.capacity(), 70);

    // A second reply goes after the first one's records, which stay.
    let more = batch_at(&small_records(5, "c"), 70, Compression::None);
    let (next, _) = decode_records_into("t", 3, b(&more), 70, &mut buf);
    assert_eq!(next, 75);
    let offsets: Vec<i64> = buf.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..75).collect::<Vec<_>>());

    // A batch claiming two billion records reserves no more than the cap
    // (and still decodes as undecodable: its CRC no longer matches).
    let mut forged = batch_at(&small_records(3, "d"), 0, Compression::None);
    forged[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&i32::MAX.to_be_bytes());
    let mut buf: VecDeque<Record> = VecDeque::new();
    decode_records_into("t", 3, b(&forged), 0, &mut buf);
    assert_eq!(buf.len(), 1);
    assert!(reason(&buf[0]).unwrap().contains("crc"));
    assert!(buf.capacity() <= 64 << 10, "{}", buf.capacity());
}

//! Writing the one record batch a Produce request carries per partition.

use bytes::Bytes;

use super::compression::{deflate, Compression};
use super::{HEADER_LEN, LOG_OVERHEAD, OFF_ATTRIBUTES, OFF_CRC};
use crate::error::{Error, Result};
use crate::record::OutRecord;

/// The idempotent producer's fields of a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerFields {
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    /// Sequence number of the first record; the others follow it.
    pub(crate) base_sequence: i32,
}

impl ProducerFields {
    /// Not idempotent: every field -1.
    pub(crate) const NONE: ProducerFields = ProducerFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// One record batch (magic 2) holding `records` with offset deltas 0..n,
/// ready for a Produce request (base offset 0: the broker assigns offsets).
/// Records without a timestamp get `now_ms`. Producer id, epoch and base
/// sequence are -1 (not idempotent), timestamp type CreateTime.
#[cfg(test)]
pub(crate) fn encode_batch(
    records: &[OutRecord],
    now_ms: i64,
    compression: Compression,
) -> Result<Bytes> {
    encode_batch_as(records, now_ms, compression, ProducerFields::NONE)
}

/// [`encode_batch`] with the idempotent producer's header fields.
pub(crate) fn encode_batch_as(
    records: &[OutRecord],
    now_ms: i64,
    compression: Compression,
    producer: ProducerFields,
) -> Result<Bytes> {
    let fail = |what: String| Error::Protocol(format!("encode record batch: {what}"));
    if records.is_empty() {
        return Err(fail("no records".into()));
    }
    let count = i32::try_from(records.len())
        .map_err(|_| fail(format!("{} records do not fit a batch", records.len())))?;

    let timestamp = |r: &OutRecord| r.timestamp.unwrap_or(now_ms);
    let base_ts = records.iter().map(timestamp).min().unwrap_or(now_ms);
    let max_ts = records.iter().map(timestamp).max().unwrap_or(now_ms);
    if max_ts.checked_sub(base_ts).is_none() {
        return Err(fail(format!(
            "timestamps {base_ts} and {max_ts} are too far apart"
        )));
    }

    // Sizes first, so the buffer is allocated once; kept, so the writing
    // pass does not walk every record's headers a second time to size it.
    let mut records_len = 0usize;
    let mut bodies = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let body = record_body_len(r, timestamp(r).wrapping_sub(base_ts), i as i32)
            .map_err(|e| fail(format!("record {i}: {e}")))?;
        records_len = records_len
            .checked_add(varint_len(body as i32) + body)
            .ok_or_else(|| fail("batch too large".into()))?;
        bodies.push(body as i32);
    }

    // Uncompressed records go straight after the header (one buffer, one
    // allocation); compressed ones are built apart, then compressed into it.
    let mut out = match compression {
        Compression::None => Vec::with_capacity(HEADER_LEN + records_len),
        _ => Vec::with_capacity(HEADER_LEN + records_len / 2 + 64),
    };
    out.extend_from_slice(&0i64.to_be_bytes()); // base_offset
    out.extend_from_slice(&0i32.to_be_bytes()); // length, patched below
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partition_leader_epoch
    out.push(2); // magic
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, patched below
    out.extend_from_slice(&compression.id().to_be_bytes()); // attributes: codec, CreateTime
    out.extend_from_slice(&(count - 1).to_be_bytes()); // last_offset_delta
    out.extend_from_slice(&base_ts.to_be_bytes());
    out.extend_from_slice(&max_ts.to_be_bytes());
    out.extend_from_slice(&producer.producer_id.to_be_bytes());
    out.extend_from_slice(&producer.producer_epoch.to_be_bytes());
    out.extend_from_slice(&producer.base_sequence.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);

    if compression == Compression::None {
        write_records(&mut out, records, &bodies, now_ms, base_ts);
        debug_assert_eq!(out.len(), HEADER_LEN + records_len, "sizing pass");
    } else {
        let mut raw = Vec::with_capacity(records_len);
        write_records(&mut raw, records, &bodies, now_ms, base_ts);
        debug_assert_eq!(raw.len(), records_len, "sizing pass");
        deflate(compression, &raw, &mut out)
            .map_err(|e| fail(format!("{}: {e}", compression.name())))?;
    }

    let length = i32::try_from(out.len() - LOG_OVERHEAD)
        .map_err(|_| fail(format!("batch of {} bytes too large", out.len())))?;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[OFF_ATTRIBUTES..]);
    out[OFF_CRC..OFF_ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(out))
}

/// Appends the records (offset deltas 0..n); `bodies` holds each one's
/// `record_body_len`, which checked every length to fit an i32.
fn write_records(
    buf: &mut Vec<u8>,
    records: &[OutRecord],
    bodies: &[i32],
    now_ms: i64,
    base_ts: i64,
) {
    for (i, (r, &body)) in records.iter().zip(bodies).enumerate() {
        let ts_delta = r.timestamp.unwrap_or(now_ms).wrapping_sub(base_ts);
        put_varint(buf, body);
        buf.push(0); // record attributes: unused
        put_varlong(buf, ts_delta);
        put_varint(buf, i as i32);
        put_nullable(buf, r.key.as_deref());
        put_nullable(buf, r.value.as_deref());
        put_varint(buf, r.headers.len() as i32);
        for h in &r.headers {
            put_varint(buf, h.key.len() as i32);
            buf.extend_from_slice(&h.key);
            put_nullable(buf, h.value.as_deref());
        }
    }
}

/// Bytes of a record after its length varint.
fn record_body_len(r: &OutRecord, ts_delta: i64, offset_delta: i32) -> Result<usize, String> {
    fn field(len: Option<usize>, what: &str) -> Result<usize, String> {
        match len {
            None => Ok(1),
            Some(n) => {
                let n32 = i32::try_from(n).map_err(|_| format!("{what} of {n} bytes too large"))?;
                Ok(varint_len(n32) + n)
            }
        }
    }
    let headers = i32::try_from(r.headers.len())
        .map_err(|_| format!("{} headers are too many", r.headers.len()))?;
    let mut len = 1 + varlong_len(ts_delta) + varint_len(offset_delta);
    len += field(r.key.as_ref().map(|k| k.len()), "key")?;
    len += field(r.value.as_ref().map(|v| v.len()), "value")?;
    len += varint_len(headers);
    for h in &r.headers {
        let key = field(Some(h.key.len()), "header key")?;
        let value = field(h.value.as_ref().map(|v| v.len()), "header value")?;
        len = len
            .checked_add(key)
            .and_then(|l| l.checked_add(value))
            .ok_or("record too large")?;
    }
    if i32::try_from(len).is_err() {
        return Err(format!("record of {len} bytes too large"));
    }
    Ok(len)
}

fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(super) fn varint_len(v: i32) -> usize {
    uvarint_len(u64::from(zigzag32(v)))
}

pub(super) fn varlong_len(v: i64) -> usize {
    uvarint_len(zigzag64(v))
}

fn uvarint_len(mut u: u64) -> usize {
    let mut n = 1;
    while u >= 0x80 {
        u >>= 7;
        n += 1;
    }
    n
}

fn put_uvarint(out: &mut Vec<u8>, mut u: u64) {
    while u >= 0x80 {
        out.push((u as u8 & 0x7f) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

pub(super) fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_uvarint(out, u64::from(zigzag32(v)));
}

pub(super) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag64(v));
}

/// Length-prefixed bytes, length -1 for null. Lengths were checked to fit
/// an i32 by `record_body_len`.
fn put_nullable(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

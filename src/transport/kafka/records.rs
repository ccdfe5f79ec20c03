//! Our own record batch v2 codec: [`encode_batch`] builds the one batch a
//! Produce request carries per partition, [`decode_records`] walks the batches
//! of a Fetch partition.
//!
//! Why not kafka-protocol's `RecordBatchEncoder`/`RecordBatchDecoder`: its
//! `Record` keeps headers in an `IndexMap<StrBytes, _>` (duplicate keys
//! collapse, non-UTF-8 keys fail to decode) and `decode_all` fails the whole
//! buffer when the last batch is cut short, which Kafka does routinely. We
//! must pass records through unchanged, and the format is small.
//!
//! Batch layout (magic 2), byte offsets from the start of the batch:
//!
//! ```text
//!  0 base_offset            i64
//!  8 length                 i32  bytes after this field (batch size - 12)
//! 12 partition_leader_epoch i32
//! 16 magic                  i8   2; 0 and 1 (legacy message sets) sit here too
//! 17 crc                    u32  CRC-32C (Castagnoli) of bytes 21..end
//! 21 attributes             i16  bits 0-2 codec, 3 LogAppendTime, 4 transactional,
//!                                5 control, 6 delete horizon
//! 23 last_offset_delta      i32
//! 27 base_timestamp         i64
//! 35 max_timestamp          i64
//! 43 producer_id            i64
//! 51 producer_epoch         i16
//! 53 base_sequence          i32
//! 57 record_count           i32
//! 61 records                     compressed as one block when the codec is not 0
//! ```
//!
//! A record is `length` (varint) followed by `length` bytes: attributes i8,
//! timestamp_delta varlong, offset_delta varint, key (varint length, -1 =
//! null, bytes), value (same), header count varint, then per header a key
//! (varint length >= 0, bytes) and a value (varint length, -1 = null, bytes).
//! Varints are zigzag-encoded LEB128 (protobuf style), at most 5 bytes
//! (varint) or 10 bytes (varlong).
//!
//! Decoding never panics and never trusts a wire length or count for an
//! allocation: every length is checked against the bytes left, counts only
//! size a reservation after being capped by the bytes that could hold them,
//! and decompression stops at a cap.

use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::record::{Header, OutRecord, Record};

/// Header added to the single record that stands for a batch we could not
/// decode; its value is the reason (UTF-8).
pub(crate) const UNDECODABLE_HEADER: &str = crate::headers::UNDECODABLE;

/// Record batch compression codec (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Compression {
    /// Codec 0.
    #[default]
    None,
    /// Codec 1: gzip (flate2).
    Gzip,
    /// Codec 2: snappy, xerial ("snappy-java") framing like the Java client.
    Snappy,
    /// Codec 3: LZ4 frame format (lz4_flex).
    Lz4,
    /// Codec 4: zstd (ruzstd; its encoder is roughly zstd level 1).
    Zstd,
}

impl Compression {
    /// The codec id in the batch attributes.
    pub(crate) fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec for an attribute id, `None` when unknown.
    pub(crate) fn from_id(id: i16) -> Option<Compression> {
        match id {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Kafka's name for the codec (`compression.type`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

// Byte offsets inside a batch (see the module docs).
const LOG_OVERHEAD: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_RECORD_COUNT: usize = 57;
const HEADER_LEN: usize = 61;

/// Smallest possible entry after the length field in any message format
/// (a v0 message: crc, magic, attributes, key length, value length). A length
/// below it cannot be a batch, so we cannot know where the next one starts.
const MIN_ENTRY_LEN: usize = 14;
/// Smallest possible record: length, attributes, timestamp delta, offset
/// delta, key length, value length, header count, one byte each.
const MIN_RECORD_LEN: usize = 7;

const ATTR_CODEC_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_CONTROL: i16 = 0x20;

/// Decompressed size cap per batch: a zip bomb becomes an undecodable
/// record instead of eating the memory.
const MAX_INFLATED_BATCH: usize = 64 << 20;
/// Decompressed bytes one `decode_records` call may hold (records keep
/// slices of the decompressed buffers alive). When the next batch would go
/// over it, decoding stops there and `next_offset` points at that batch, so
/// the next fetch picks it up; the first compressed batch is always decoded.
const MAX_INFLATED_PER_CALL: usize = 128 << 20;

/// Xerial ("snappy-java") stream magic; followed by i32 version and i32
/// compatible version (both 1), then blocks of [u32 BE length][raw snappy].
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
/// snappy-java's default block size, which the Java producer uses.
const XERIAL_BLOCK: usize = 32 * 1024;

const ZSTD_MAGIC: u32 = 0xFD2F_B528;

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// One record batch (magic 2) holding `records` with offset deltas 0..n,
/// ready for a Produce request (base offset 0: the broker assigns offsets).
/// Records without a timestamp get `now_ms`. Producer id, epoch and base
/// sequence are -1 (not idempotent), timestamp type CreateTime.
pub(crate) fn encode_batch(
    records: &[OutRecord],
    now_ms: i64,
    compression: Compression,
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

    // Sizes first, so the buffer is allocated once.
    let mut records_len = 0usize;
    for (i, r) in records.iter().enumerate() {
        let body = record_body_len(r, timestamp(r).wrapping_sub(base_ts), i as i32)
            .map_err(|e| fail(format!("record {i}: {e}")))?;
        records_len = records_len
            .checked_add(varint_len(body as i32) + body)
            .ok_or_else(|| fail("batch too large".into()))?;
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
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producer_id
    out.extend_from_slice(&(-1i16).to_be_bytes()); // producer_epoch
    out.extend_from_slice(&(-1i32).to_be_bytes()); // base_sequence
    out.extend_from_slice(&count.to_be_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);

    if compression == Compression::None {
        write_records(&mut out, records, now_ms, base_ts);
        debug_assert_eq!(out.len(), HEADER_LEN + records_len, "sizing pass");
    } else {
        let mut raw = Vec::with_capacity(records_len);
        write_records(&mut raw, records, now_ms, base_ts);
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

/// Appends the records (offset deltas 0..n). Every length was checked to fit
/// an i32 by `record_body_len` beforehand.
fn write_records(buf: &mut Vec<u8>, records: &[OutRecord], now_ms: i64, base_ts: i64) {
    for (i, r) in records.iter().enumerate() {
        let ts_delta = r.timestamp.unwrap_or(now_ms).wrapping_sub(base_ts);
        let body = record_body_len(r, ts_delta, i as i32).unwrap_or(0);
        put_varint(buf, body as i32);
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

fn varint_len(v: i32) -> usize {
    uvarint_len(u64::from(zigzag32(v)))
}

fn varlong_len(v: i64) -> usize {
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

fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_uvarint(out, u64::from(zigzag32(v)));
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
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

/// Compresses `raw` onto the end of `out`.
fn deflate(compression: Compression, raw: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    guarded(|| match compression {
        Compression::None => {
            out.extend_from_slice(raw);
            Ok(())
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            enc.write_all(raw).map_err(|e| e.to_string())?;
            enc.finish().map(|_| ()).map_err(|e| e.to_string())
        }
        Compression::Snappy => {
            // Java-compatible xerial framing in 32 KiB blocks (what the Java
            // producer writes; every consumer accepts it).
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
            let mut enc = snap::raw::Encoder::new();
            for chunk in raw.chunks(XERIAL_BLOCK) {
                let len_at = out.len();
                out.extend_from_slice(&[0; 4]);
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(chunk.len()), 0);
                let n = enc
                    .compress(chunk, &mut out[start..])
                    .map_err(|e| e.to_string())?;
                out.truncate(start + n);
                out[len_at..start].copy_from_slice(&(n as u32).to_be_bytes());
            }
            Ok(())
        }
        Compression::Lz4 => {
            // What Kafka's KafkaLZ4BlockInputStream accepts: independent
            // blocks, 64 KiB (its default), no content size or checksums.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .block_checksums(false)
                .content_checksum(false);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            enc.write_all(raw).map_err(|e| e.to_string())?;
            enc.finish().map(|_| ()).map_err(|e| e.to_string())
        }
        Compression::Zstd => {
            ruzstd::encoding::compress(raw, out, ruzstd::encoding::CompressionLevel::Fastest);
            Ok(())
        }
    })
}

/// Runs third-party codec code, turning a panic into an error: a bug in a
/// decompressor fed hostile bytes must not take the consumer thread down.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err("codec panicked".to_string()))
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// The records of a Fetch partition's record bytes.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Records at or above the fetch offset, in offset order (strictly
    /// ascending), control records left out.
    pub records: Vec<Record>,
    /// The offset to fetch next: past the last whole batch walked, never
    /// below the fetch offset nor at or below a returned record's offset.
    pub next_offset: i64,
}

/// Decodes every whole batch in a Fetch partition's `records` bytes.
///
/// - Records below `from_offset` and control batches are dropped (control
///   batches still move `next_offset` past them).
/// - A truncated last batch (Kafka cuts fetch responses by bytes) is ignored;
///   `next_offset` then points at it.
/// - A batch that cannot be decoded (bad CRC, unknown codec, legacy magic 0/1,
///   corrupt varints, decompressed size over 64 MiB, ...) becomes ONE record
///   with no key, `value` = the raw batch bytes and a
///   [`UNDECODABLE_HEADER`] header holding the reason, at the batch's base
///   offset (or at the fetch position if the batch starts below it), so the
///   engine can dead-letter it and the partition never stalls.
/// - A length field below any format's minimum leaves no way to find the next
///   batch: the rest of the buffer becomes one undecodable record at the
///   current position and decoding stops one offset further.
/// - Decoding may stop early (before the end of `data`) once the batches
///   decompressed in this call hold 128 MiB; `next_offset` then points at the
///   first batch not decoded.
pub fn decode_records(topic: &str, partition: i32, data: Bytes, from_offset: i64) -> Decoded {
    decode_with_caps(
        topic,
        partition,
        data,
        from_offset,
        MAX_INFLATED_BATCH,
        MAX_INFLATED_PER_CALL,
    )
}

/// [`decode_records`] with the decompression caps as parameters (tests use
/// small ones).
fn decode_with_caps(
    topic: &str,
    partition: i32,
    data: Bytes,
    from_offset: i64,
    batch_cap: usize,
    call_budget: usize,
) -> Decoded {
    let mut w = Walker {
        topic,
        partition,
        records: Vec::new(),
        pos: from_offset,
        inflated: 0,
        batch_cap,
        call_budget,
    };
    let mut off = 0usize;
    loop {
        let rest = data.get(off..).unwrap_or_default();
        if rest.len() < LOG_OVERHEAD {
            break; // truncated tail (or the end)
        }
        let base = be_i64(rest, 0);
        let length = be_i32(rest, 8);
        let len = match usize::try_from(length) {
            Ok(len) if len >= MIN_ENTRY_LEN => len,
            _ => {
                let raw = data.slice(off..);
                w.broken_framing(raw, length);
                break;
            }
        };
        let total = match LOG_OVERHEAD.checked_add(len) {
            Some(total) if total <= rest.len() => total,
            _ => break, // truncated tail: fetched again from `next_offset`
        };
        let entry = data.slice(off..off + total);
        let magic = rest.get(OFF_MAGIC).map_or(-1, |&m| m as i8);
        let step = match magic {
            2 => w.batch(entry, base),
            0 | 1 => {
                // A legacy entry's offset is that of its last (inner) message.
                let reason = format!("legacy message format magic {magic} is not supported");
                w.undecodable(entry, base, base.saturating_add(1), -1, reason);
                Step::Next
            }
            _ => {
                let reason = format!("unknown record batch magic {magic}");
                w.undecodable(entry, base, base.saturating_add(1), -1, reason);
                Step::Next
            }
        };
        if step == Step::Stop {
            break;
        }
        off += total;
    }
    Decoded {
        records: w.records,
        next_offset: w.pos,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Go on with the next batch.
    Next,
    /// Stop before this batch (decompression budget spent).
    Stop,
}

struct Walker<'a> {
    topic: &'a str,
    partition: i32,
    records: Vec<Record>,
    /// Lowest offset not yet covered: fetch offset, then past every batch
    /// walked. Records below it are dropped, so output offsets ascend.
    pos: i64,
    /// Decompressed bytes held by this call.
    inflated: usize,
    /// Decompressed size cap per batch.
    batch_cap: usize,
    /// Decompressed bytes this call may hold (see `MAX_INFLATED_PER_CALL`).
    call_budget: usize,
}

impl Walker<'_> {
    /// One whole magic-2 batch (`entry.len()` = 12 + its length field).
    fn batch(&mut self, entry: Bytes, base: i64) -> Step {
        if entry.len() < HEADER_LEN {
            let reason = format!(
                "record batch of {} bytes is shorter than its 61-byte header",
                entry.len()
            );
            self.undecodable(entry, base, base.saturating_add(1), -1, reason);
            return Step::Next;
        }
        let last_delta = be_i32(&entry, OFF_LAST_OFFSET_DELTA);
        // Java advances by base + last_offset_delta + 1 even for control,
        // empty or compacted batches; so do we.
        let next = base
            .saturating_add(i64::from(last_delta.max(0)))
            .saturating_add(1);
        if next <= self.pos {
            return Step::Next; // wholly below the fetch position
        }
        let max_ts = be_i64(&entry, OFF_MAX_TIMESTAMP);

        let stored = be_u32(&entry, OFF_CRC);
        let computed = crc32c::crc32c(entry.get(OFF_ATTRIBUTES..).unwrap_or_default());
        if stored != computed {
            let reason = format!("crc mismatch: expected {stored:#010x} got {computed:#010x}");
            self.undecodable(entry, base, next, max_ts, reason);
            return Step::Next;
        }

        let attributes = be_i16(&entry, OFF_ATTRIBUTES);
        if attributes & ATTR_CONTROL != 0 {
            // Transaction markers: never delivered, but skipped over.
            self.pos = self.pos.max(next);
            return Step::Next;
        }
        let codec = attributes & ATTR_CODEC_MASK;
        let Some(compression) = Compression::from_id(codec) else {
            let reason = format!("unsupported compression codec {codec}");
            self.undecodable(entry, base, next, max_ts, reason);
            return Step::Next;
        };
        let count = be_i32(&entry, OFF_RECORD_COUNT);
        let Ok(count) = usize::try_from(count) else {
            let reason = format!("negative record count {count}");
            self.undecodable(entry, base, next, max_ts, reason);
            return Step::Next;
        };
        if count == 0 {
            // Compaction can leave empty batches (never compressed); skip.
            self.pos = self.pos.max(next);
            return Step::Next;
        }

        let payload = if compression == Compression::None {
            entry.slice(HEADER_LEN..)
        } else {
            let input = entry.get(HEADER_LEN..).unwrap_or_default();
            match inflate(compression, input, self.batch_cap) {
                Ok(buf) => {
                    if self.inflated > 0
                        && self.inflated.saturating_add(buf.len()) > self.call_budget
                    {
                        return Step::Stop;
                    }
                    self.inflated = self.inflated.saturating_add(buf.len());
                    Bytes::from(buf)
                }
                Err(e) => {
                    let reason = format!("{} decompression failed: {e}", compression.name());
                    self.undecodable(entry, base, next, max_ts, reason);
                    return Step::Next;
                }
            }
        };

        let batch = BatchInfo {
            base,
            last_delta,
            count,
            base_ts: be_i64(&entry, OFF_BASE_TIMESTAMP),
            log_append_ts: (attributes & ATTR_LOG_APPEND_TIME != 0).then_some(max_ts),
        };
        let start = self.records.len();
        // Capped by the bytes that could hold that many records.
        self.records
            .reserve(count.min(payload.len() / MIN_RECORD_LEN + 1));
        match self.parse_records(&payload, &batch) {
            Ok(()) => {
                self.pos = self.pos.max(next);
            }
            Err(reason) => {
                self.records.truncate(start);
                self.undecodable(entry, base, next, max_ts, reason);
            }
        }
        Step::Next
    }

    /// Appends the batch's records at or above `self.pos`; on error the
    /// caller truncates what was appended.
    fn parse_records(&mut self, payload: &Bytes, batch: &BatchInfo) -> Result<(), String> {
        let mut cur = Cursor::new(payload, payload.len());
        let mut prev_delta: i64 = -1;
        for i in 0..batch.count {
            let at = |e: String| format!("record {i}: {e}");
            let len = cur.varint().map_err(at)?;
            let len = usize::try_from(len).map_err(|_| at(format!("negative length {len}")))?;
            let end = cur
                .pos
                .checked_add(len)
                .filter(|&end| end <= payload.len())
                .ok_or_else(|| at(format!("length {len} overruns the batch")))?;
            let mut rc = Cursor {
                buf: payload,
                pos: cur.pos,
                end,
            };
            let (delta, record) = self.parse_record(&mut rc, batch).map_err(at)?;
            if rc.pos != end {
                return Err(at(format!("{} unread bytes at its end", end - rc.pos)));
            }
            cur.pos = end;
            // Offsets must ascend inside the batch and stay within it, or the
            // offset bookkeeping downstream (and `next_offset`) would lie.
            if i64::from(delta) <= prev_delta {
                return Err(at(format!(
                    "offset delta {delta} not above the previous {prev_delta}"
                )));
            }
            if delta > batch.last_delta {
                return Err(at(format!(
                    "offset delta {delta} beyond the last offset delta {}",
                    batch.last_delta
                )));
            }
            prev_delta = i64::from(delta);
            if let Some(record) = record {
                self.records.push(record);
            }
        }
        if cur.pos != payload.len() {
            return Err(format!(
                "{} bytes left after the last of {} records",
                payload.len() - cur.pos,
                batch.count
            ));
        }
        Ok(())
    }

    /// One record body; `None` when it sits below the fetch position.
    fn parse_record(
        &self,
        c: &mut Cursor<'_>,
        batch: &BatchInfo,
    ) -> Result<(i32, Option<Record>), String> {
        let _attributes = c.u8()?;
        let ts_delta = c.varlong()?;
        let delta = c.varint()?;
        let key = c.nullable()?;
        let value = c.nullable()?;
        let header_count = c.varint()?;
        let header_count = usize::try_from(header_count)
            .map_err(|_| format!("negative header count {header_count}"))?;
        // A header takes at least 2 bytes: cap the reservation by that.
        let mut headers = Vec::with_capacity(header_count.min(c.remaining() / 2));
        for h in 0..header_count {
            let key_len = c.varint()?;
            let key_len = usize::try_from(key_len)
                .map_err(|_| format!("header {h}: negative key length {key_len}"))?;
            let key = c.bytes(key_len).map_err(|e| format!("header {h}: {e}"))?;
            let value = c.nullable().map_err(|e| format!("header {h}: {e}"))?;
            headers.push(Header { key, value });
        }
        let offset = batch
            .base
            .checked_add(i64::from(delta))
            .ok_or_else(|| format!("offset {} + {delta} overflows", batch.base))?;
        if offset < self.pos {
            return Ok((delta, None));
        }
        let timestamp = batch
            .log_append_ts
            .unwrap_or_else(|| batch.base_ts.wrapping_add(ts_delta));
        Ok((
            delta,
            Some(Record {
                topic: self.topic.to_string(),
                partition: self.partition,
                offset,
                timestamp,
                key,
                value,
                headers,
            }),
        ))
    }

    /// One record standing for a batch we could not decode, at the batch's
    /// base offset (or the current position if the batch starts below it);
    /// `next` is where the batch ends according to its header.
    fn undecodable(&mut self, raw: Bytes, base: i64, next: i64, timestamp: i64, reason: String) {
        if next <= self.pos {
            return; // wholly below the fetch position: already consumed
        }
        let offset = base.max(self.pos);
        log::warn!(
            "{}-{} offset {offset}: undecodable record batch ({} bytes): {reason}",
            self.topic,
            self.partition,
            raw.len()
        );
        self.records.push(Record {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset,
            timestamp,
            key: None,
            value: Some(raw),
            headers: vec![Header {
                key: Bytes::from_static(UNDECODABLE_HEADER.as_bytes()),
                value: Some(Bytes::from(reason)),
            }],
        });
        self.pos = next.max(offset.saturating_add(1));
    }

    /// A length field no format allows: the rest of the buffer is one
    /// undecodable record at the current position (its base offset field is
    /// as suspect as its length).
    fn broken_framing(&mut self, raw: Bytes, length: i32) {
        let reason = format!("record batch length {length} is invalid");
        let at = self.pos;
        self.undecodable(raw, at, at.saturating_add(1), -1, reason);
    }
}

/// Batch header fields the record parser needs.
struct BatchInfo {
    base: i64,
    last_delta: i32,
    count: usize,
    base_ts: i64,
    /// `Some(max_timestamp)` for LogAppendTime batches: every record's
    /// timestamp is the broker's append time.
    log_append_ts: Option<i64>,
}

/// A bounds-checked reader over `buf[pos..end]` handing out zero-copy
/// slices of `buf`.
struct Cursor<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a Bytes, end: usize) -> Self {
        Cursor { buf, pos: 0, end }
    }

    fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    fn u8(&mut self) -> Result<u8, String> {
        if self.pos >= self.end {
            return Err("truncated".into());
        }
        let b = self.buf.get(self.pos).copied().ok_or("truncated")?;
        self.pos += 1;
        Ok(b)
    }

    /// Zigzag varint of at most 5 bytes. Like Java's `ByteUtils.readVarint`,
    /// bits beyond 32 in the fifth byte are dropped.
    fn varint(&mut self) -> Result<i32, String> {
        let mut raw = 0u32;
        for i in 0..5 {
            let b = self.u8().map_err(|_| "truncated varint".to_string())?;
            raw |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i32 ^ -((raw & 1) as i32));
            }
        }
        Err("varint overflows".into())
    }

    /// Zigzag varlong of at most 10 bytes.
    fn varlong(&mut self) -> Result<i64, String> {
        let mut raw = 0u64;
        for i in 0..10 {
            let b = self.u8().map_err(|_| "truncated varlong".to_string())?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err("varlong overflows".into())
    }

    fn bytes(&mut self, len: usize) -> Result<Bytes, String> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.end && end <= self.buf.len())
            .ok_or_else(|| format!("length {len} overruns the record"))?;
        let b = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(b)
    }

    /// Varint length then bytes; -1 is null (distinct from empty).
    fn nullable(&mut self) -> Result<Option<Bytes>, String> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| format!("invalid length {len}"))?;
        self.bytes(len).map(Some)
    }
}

fn be_array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = at.checked_add(N).and_then(|end| b.get(at..end)) {
        a.copy_from_slice(s);
    }
    a
}

// Callers check the length first; out of range reads as 0 rather than panic.
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(be_array(b, at))
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(be_array(b, at))
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(be_array(b, at))
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(be_array(b, at))
}

/// Decompresses a batch's records block, at most `cap` bytes.
fn inflate(compression: Compression, input: &[u8], cap: usize) -> Result<Vec<u8>, String> {
    guarded(|| match compression {
        Compression::None => Ok(input.to_vec()),
        // Multi: Java's GZIPInputStream also reads concatenated members.
        Compression::Gzip => {
            read_capped(flate2::read::MultiGzDecoder::new(input), input.len(), cap)
        }
        Compression::Snappy => snappy_decompress(input, cap),
        Compression::Lz4 => {
            read_capped(lz4_flex::frame::FrameDecoder::new(input), input.len(), cap)
        }
        Compression::Zstd => zstd_decompress(input, cap),
    })
}

fn cap_exceeded(cap: usize) -> String {
    format!("decompressed size exceeds the {} MiB cap", cap >> 20)
}

/// Reads all of `r`, failing past `cap` bytes (zip bombs).
fn read_capped(r: impl Read, input_len: usize, cap: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input_len.saturating_mul(4).min(cap));
    r.take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() > cap {
        return Err(cap_exceeded(cap));
    }
    Ok(out)
}

/// Xerial-framed snappy (Java, kafka-protocol) or, like librdkafka and
/// snappy-java, a plain raw snappy block when the magic is absent.
fn snappy_decompress(input: &[u8], cap: usize) -> Result<Vec<u8>, String> {
    let mut dec = snap::raw::Decoder::new();
    if !input.starts_with(XERIAL_MAGIC) {
        let len = snap::raw::decompress_len(input).map_err(|e| e.to_string())?;
        if len > cap {
            return Err(cap_exceeded(cap));
        }
        let mut out = vec![0; len];
        let n = dec.decompress(input, &mut out).map_err(|e| e.to_string())?;
        out.truncate(n);
        return Ok(out);
    }
    // Magic, then i32 version and i32 compatible version, which we skip as
    // librdkafka does.
    let mut rest = input.get(16..).ok_or("truncated xerial header")?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len_bytes = rest.get(..4).ok_or("truncated xerial block length")?;
        let len = u32::from_be_bytes(be_array(len_bytes, 0)) as usize;
        let block = rest
            .get(4..)
            .and_then(|r| r.get(..len))
            .ok_or_else(|| format!("xerial block of {len} bytes overruns the data"))?;
        rest = rest.get(4 + block.len()..).unwrap_or_default();
        let ulen = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
        let start = out.len();
        let end = start
            .checked_add(ulen)
            .filter(|&end| end <= cap)
            .ok_or_else(|| cap_exceeded(cap))?;
        out.resize(end, 0);
        let n = dec
            .decompress(block, &mut out[start..])
            .map_err(|e| e.to_string())?;
        out.truncate(start + n);
    }
    Ok(out)
}

/// One or more zstd frames. Each frame header is checked first: ruzstd
/// buffers a whole window before handing out output and trusts the header's
/// window size (up to terabytes), so a tiny hostile frame could allocate
/// without bound.
fn zstd_decompress(input: &[u8], cap: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(cap));
    let mut rest = input;
    while !rest.is_empty() {
        if let Some(skip) = zstd_check_frame(rest, cap)? {
            rest = rest.get(skip..).ok_or("truncated zstd skippable frame")?;
            continue;
        }
        let before = rest.len();
        let mut dec =
            ruzstd::decoding::StreamingDecoder::new(&mut rest).map_err(|e| e.to_string())?;
        let room = cap.saturating_sub(out.len());
        (&mut dec)
            .take(room as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?;
        if out.len() > cap {
            return Err(cap_exceeded(cap));
        }
        drop(dec);
        if rest.len() == before {
            return Err("zstd frame consumed no input".into()); // cannot loop forever
        }
    }
    Ok(out)
}

/// Checks a zstd frame header: `Ok(Some(n))` for a skippable frame of `n`
/// bytes, `Ok(None)` for a data frame whose window and content size fit `cap`.
fn zstd_check_frame(b: &[u8], cap: usize) -> Result<Option<usize>, String> {
    let truncated = || "truncated zstd frame header".to_string();
    let magic = u32::from_le_bytes(
        b.get(..4)
            .ok_or_else(truncated)?
            .try_into()
            .map_err(|_| truncated())?,
    );
    if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
        let size = u32::from_le_bytes(
            b.get(4..8)
                .ok_or_else(truncated)?
                .try_into()
                .map_err(|_| truncated())?,
        );
        return Ok(Some((size as usize).saturating_add(8)));
    }
    if magic != ZSTD_MAGIC {
        return Err(format!("bad zstd magic {magic:#010x}"));
    }
    let fhd = *b.get(4).ok_or_else(truncated)?;
    let single_segment = fhd & 0x20 != 0;
    let mut p = 5;
    let mut window = None;
    if !single_segment {
        let wd = *b.get(p).ok_or_else(truncated)?;
        p += 1;
        let base = 1u64 << (10 + u32::from(wd >> 3));
        window = Some(base + (base / 8) * u64::from(wd & 7));
    }
    let dict_len = [0usize, 1, 2, 4][usize::from(fhd & 3)];
    let dict = b.get(p..p + dict_len).ok_or_else(truncated)?;
    if dict.iter().any(|&x| x != 0) {
        return Err("zstd dictionaries are not supported".into());
    }
    p += dict_len;
    let fcs_len = match fhd >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let fcs_bytes = b.get(p..p + fcs_len).ok_or_else(truncated)?;
    let mut fcs = fcs_bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    if fcs_len == 2 {
        fcs += 256;
    }
    let window = window.unwrap_or(fcs);
    if window > cap as u64 {
        return Err(format!(
            "zstd window of {window} bytes exceeds the {} MiB cap",
            cap >> 20
        ));
    }
    if fcs_len > 0 && fcs > cap as u64 {
        return Err(cap_exceeded(cap));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        use kafka_protocol::records::{
            Compression as KpC, RecordBatchEncoder, RecordEncodeOptions,
        };
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

    /// Batches a, <bad>, c: a and c decode, bad becomes one record.
    fn corrupt_middle(bad: Vec<u8>, bad_base: i64, expect_reason: &str) {
        let a = small_records(2, "a");
        let c = small_records(2, "c");
        let mut data = batch_at(&a, 0, Compression::None);
        data.extend(&bad);
        let c_base = bad_base + 3;
        data.extend(batch_at(&c, c_base, Compression::Gzip));
        let d = decode(&data, 0);
        assert_eq!(d.records.len(), 5, "{expect_reason}: {:?}", d.records);
        assert_same(&a, &d.records[..2], 0);
        let u = &d.records[2];
        assert_eq!(u.offset, bad_base);
        assert_eq!(u.key, None);
        assert_eq!(u.value.as_deref(), Some(&bad[..]), "raw batch bytes");
        let why = reason(u).expect("undecodable header");
        assert!(why.starts_with(expect_reason), "reason {why:?}");
        assert_same(&c, &d.records[3..], c_base);
        assert_eq!(d.next_offset, c_base + 2);
    }

    #[test]
    fn flipped_crc_byte() {
        let mut bad = batch_at(&small_records(3, "b"), 2, Compression::None);
        bad[OFF_CRC + 2] ^= 0x40;
        corrupt_middle(bad, 2, "crc mismatch: expected 0x");
        // A flipped payload byte is caught by the same check.
        let mut bad = batch_at(&small_records(3, "b"), 2, Compression::Snappy);
        let n = bad.len();
        bad[n - 3] ^= 1;
        corrupt_middle(bad, 2, "crc mismatch");
    }

    #[test]
    fn unknown_codec() {
        let mut bad = batch_at(&small_records(3, "b"), 2, Compression::None);
        bad[OFF_ATTRIBUTES + 1] |= 7;
        fix_crc(&mut bad);
        corrupt_middle(bad, 2, "unsupported compression codec 7");
    }

    #[test]
    fn corrupt_varint() {
        let mut bad = batch_at(&small_records(3, "b"), 2, Compression::None);
        bad[HEADER_LEN..HEADER_LEN + 5].fill(0xff);
        fix_crc(&mut bad);
        corrupt_middle(bad, 2, "record 0: varint overflows");
    }

    #[test]
    fn garbage_inside_a_batch() {
        let mut bad = batch_at(&small_records(3, "b"), 2, Compression::None);
        bad.extend([1, 2, 3]);
        let len = (bad.len() - 12) as i32;
        bad[8..12].copy_from_slice(&len.to_be_bytes());
        fix_crc(&mut bad);
        corrupt_middle(bad, 2, "3 bytes left after the last of 3 records");
    }

    #[test]
    fn corrupt_compressed_payload() {
        let mut bad = batch_at(&small_records(3, "b"), 2, Compression::Gzip);
        let n = bad.len();
        bad[n - 20..n - 10].fill(0x55);
        fix_crc(&mut bad);
        corrupt_middle(bad, 2, "gzip decompression failed");
    }

    #[test]
    fn legacy_magic_1() {
        // A v1 message: offset, size, crc, magic 1, attributes, timestamp,
        // key (i32 -1 = null), value (i32 length + bytes).
        let mut m = Vec::new();
        m.extend(4i64.to_be_bytes());
        m.extend(0i32.to_be_bytes());
        m.extend(0u32.to_be_bytes());
        m.push(1);
        m.push(0);
        m.extend(NOW.to_be_bytes());
        m.extend((-1i32).to_be_bytes());
        m.extend(5i32.to_be_bytes());
        m.extend(b"hello");
        let size = (m.len() - 12) as i32;
        m[8..12].copy_from_slice(&size.to_be_bytes());
        // Its offset (4) is that of its last message: the batch covers 2..=4.
        let a = small_records(2, "a");
        let mut data = batch_at(&a, 0, Compression::None);
        data.extend(&m);
        data.extend(batch_at(&a, 5, Compression::None));
        let d = decode(&data, 0);
        assert_eq!(d.records.len(), 5);
        assert_eq!(d.records[2].offset, 4);
        assert_eq!(d.records[2].value.as_deref(), Some(&m[..]));
        let why = reason(&d.records[2]).unwrap();
        assert!(why.starts_with("legacy message format magic 1"), "{why}");
        assert_eq!(d.next_offset, 7);
    }

    #[test]
    fn garbage_after_the_last_batch() {
        let a = small_records(2, "a");
        let mut data = batch_at(&a, 0, Compression::None);
        // A huge length reads as a truncated tail: ignored.
        let mut tail = data.clone();
        tail.extend([0x7B; 40]);
        let d = decode(&tail, 0);
        assert_same(&a, &d.records, 0);
        assert_eq!(d.next_offset, 2);
        // A negative length cannot be framed: the rest becomes one
        // undecodable record at the next position, then decoding stops.
        data.extend(0i64.to_be_bytes());
        data.extend((-5i32).to_be_bytes());
        data.extend([1; 30]);
        let d = decode(&data, 0);
        assert_eq!(d.records.len(), 3);
        assert_eq!(d.records[2].offset, 2);
        assert_eq!(
            reason(&d.records[2]).as_deref(),
            Some("record batch length -5 is invalid")
        );
        assert_eq!(d.next_offset, 3);
    }

    #[test]
    fn corrupt_batch_below_fetch_offset_is_skipped() {
        let mut bad = batch_at(&small_records(3, "b"), 0, Compression::None);
        bad[OFF_CRC] ^= 1;
        bad.extend(batch_at(&small_records(2, "c"), 3, Compression::None));
        let d = decode(&bad, 3);
        assert_eq!(d.records.len(), 2);
        assert!(d.records.iter().all(|r| reason(r).is_none()));
        // Starting inside it: the undecodable record sits at the position.
        let d = decode(&bad, 1);
        assert_eq!(d.records[0].offset, 1);
        assert!(reason(&d.records[0]).is_some());
        assert_eq!(d.records.len(), 3);
        assert_eq!(d.next_offset, 5);
    }

    #[test]
    fn decompression_caps() {
        let zeros = vec![0u8; 2 << 20];
        let cap = 1 << 20;
        for c in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut packed = Vec::new();
            deflate(c, &zeros, &mut packed).unwrap();
            let e = inflate(c, &packed, cap).unwrap_err();
            assert!(e.contains("cap"), "{c:?}: {e}");
            assert_eq!(inflate(c, &packed, 4 << 20).unwrap(), zeros, "{c:?}");
        }
        // A raw snappy block claiming a huge length is refused before allocating.
        let e = inflate(Compression::Snappy, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0], cap).unwrap_err();
        assert!(e.contains("cap") || e.contains("snappy"), "{e}");
        // zstd: a frame header declaring a 2 TiB window is refused.
        let mut frame = ZSTD_MAGIC.to_le_bytes().to_vec();
        frame.extend([0x00, 0xf8, 0, 0, 0]);
        let e = inflate(Compression::Zstd, &frame, cap).unwrap_err();
        assert!(e.contains("window"), "{e}");
        // zstd: single segment with a content size over the cap.
        let mut frame = ZSTD_MAGIC.to_le_bytes().to_vec();
        frame.push(0xa0); // 4-byte content size, single segment
        frame.extend((64u32 << 20).to_le_bytes());
        let e = inflate(Compression::Zstd, &frame, cap).unwrap_err();
        assert!(e.contains("cap"), "{e}");
    }

    #[test]
    fn zstd_rle_bomb_is_capped() {
        // 1 MiB window, then raw RLE blocks of 128 KiB from 4 bytes each.
        let mut frame = ZSTD_MAGIC.to_le_bytes().to_vec();
        frame.extend([0x00, 10 << 3]);
        for i in 0..40 {
            let last = u32::from(i == 39);
            let header = last | (1 << 1) | ((128 * 1024) << 3); // RLE, size
            frame.extend(&header.to_le_bytes()[..3]);
            frame.push(b'z');
        }
        let e = inflate(Compression::Zstd, &frame, 1 << 20).unwrap_err();
        assert!(e.contains("cap"), "{e}");
        assert_eq!(
            inflate(Compression::Zstd, &frame, 8 << 20).unwrap().len(),
            40 << 17
        );
    }

    #[test]
    fn batch_over_the_cap_is_undecodable() {
        let big = vec![OutRecord::new("t").value(vec![0u8; 300_000])];
        let data = batch_at(&big, 0, Compression::Gzip);
        let d = decode_with_caps("t", 3, b(&data), 0, 100_000, 1 << 30);
        assert_eq!(d.records.len(), 1);
        let why = reason(&d.records[0]).unwrap();
        assert!(why.contains("exceeds"), "{why}");
        assert_eq!(d.next_offset, 1);
    }

    #[test]
    fn call_budget_stops_early_without_losing_data() {
        let recs = |tag: &str| vec![OutRecord::new("t").value(tag.repeat(50_000))];
        let mut data = batch_at(&recs("a"), 0, Compression::Gzip);
        let second = data.len();
        data.extend(batch_at(&recs("b"), 1, Compression::Gzip));
        data.extend(batch_at(&recs("c"), 2, Compression::None));
        // Budget of 80 KB: the first batch (50 KB) fits, the second does not.
        let d = decode_with_caps("t", 3, b(&data), 0, 1 << 20, 80_000);
        assert_eq!(d.records.len(), 1);
        assert_eq!(d.next_offset, 1);
        // The next fetch starts at the batch not decoded.
        let d = decode_with_caps("t", 3, b(&data[second..]), 1, 1 << 20, 80_000);
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.next_offset, 3);
    }

    #[test]
    fn varint_codec() {
        for v in [0, 1, -1, 63, -64, 64, 300, -300, i32::MAX, i32::MIN] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v));
            let buf = Bytes::from(buf);
            let mut c = Cursor::new(&buf, buf.len());
            assert_eq!(c.varint().unwrap(), v);
        }
        for v in [0, -1, i64::MAX, i64::MIN, 1 << 40] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf.len(), varlong_len(v));
            let buf = Bytes::from(buf);
            let mut c = Cursor::new(&buf, buf.len());
            assert_eq!(c.varlong().unwrap(), v);
        }
        let buf = Bytes::from_static(&[0xff; 11]);
        assert_eq!(
            Cursor::new(&buf, 11).varint().unwrap_err(),
            "varint overflows"
        );
        assert_eq!(
            Cursor::new(&buf, 11).varlong().unwrap_err(),
            "varlong overflows"
        );
        assert_eq!(
            Cursor::new(&buf, 2).varint().unwrap_err(),
            "truncated varint"
        );
    }

    /// Seeds for the cargo-fuzz target in `fuzz/`: one valid buffer per
    /// codec (plus a multi-batch one), prefixed by its flags and offset bytes.
    /// `KAFKA_RETRY_FUZZ_SEEDS=fuzz/corpus/decode_records cargo test --lib
    /// write_fuzz_seeds -- --ignored`
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let Ok(dir) = std::env::var("KAFKA_RETRY_FUZZ_SEEDS") else {
            return;
        };
        std::fs::create_dir_all(&dir).unwrap();
        let mut seeds: Vec<Vec<u8>> = ALL
            .iter()
            .map(|&c| batch_at(&interop_records()[..3], 0, c))
            .collect();
        seeds.push(three_batches().1);
        for (i, seed) in seeds.iter().enumerate() {
            let mut file = vec![1u8, 0];
            file.extend(seed);
            std::fs::write(format!("{dir}/seed-{i}"), file).unwrap();
        }
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Invariants every output must keep, whatever the input.
    fn check_sane(d: &Decoded, from: i64, what: &str) {
        assert!(
            d.next_offset >= from,
            "{what}: next {} < from {from}",
            d.next_offset
        );
        let mut prev = None;
        for r in &d.records {
            assert!(
                r.offset >= from,
                "{what}: offset {} < from {from}",
                r.offset
            );
            // `None < Some(_)`: the first record always passes.
            assert!(prev < Some(r.offset), "{what}: offsets not ascending");
            assert!(
                r.offset < d.next_offset,
                "{what}: offset {} >= next",
                r.offset
            );
            prev = Some(r.offset);
        }
    }

    /// Random buffers and mutated valid batches (bit flips, truncations,
    /// length/count/varint damage, with and without a fixed-up CRC so the
    /// damage reaches the decompressors and the record parser). Must not
    /// panic; output must stay sane. `KAFKA_RETRY_FUZZ_ITERS` sets the count.
    #[test]
    fn fuzz_no_panic() {
        let iters: usize = std::env::var("KAFKA_RETRY_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        let started = std::time::Instant::now();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

        // A pool of valid buffers: 1-3 batches, every codec, corner records.
        let mut pool: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
        for p in 0..40 {
            let mut data = Vec::new();
            let mut starts = Vec::new();
            let mut base = (p % 7) as i64;
            for _ in 0..1 + rng.below(3) {
                let n = 1 + rng.below(6);
                let recs: Vec<OutRecord> = (0..n)
                    .map(|i| {
                        let key = (rng.below(3) > 0).then(|| vec![b'k'; rng.below(5)]);
                        let value = (rng.below(4) > 0).then(|| vec![i as u8; rng.below(200)]);
                        let hs: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..rng.below(3))
                            .map(|_| (vec![0xff; rng.below(3)], (rng.below(2) == 0).then(Vec::new)))
                            .collect();
                        let hs: Vec<(&[u8], Option<&[u8]>)> =
                            hs.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
                        let ts = Some(NOW + rng.below(1000) as i64);
                        out(key.as_deref(), value.as_deref(), &hs, ts)
                    })
                    .collect();
                starts.push(data.len());
                data.extend(batch_at(&recs, base, ALL[rng.below(5)]));
                base += n as i64;
            }
            pool.push((data, starts));
        }

        let mut kinds = std::collections::BTreeMap::new();
        let mut undecodable = 0usize;
        let mut decoded = 0usize;
        for it in 0..iters {
            let from = rng.below(20) as i64 - 2;
            let data: Vec<u8> = if it % 4 == 0 {
                // (a) pure random bytes, sometimes with a plausible header.
                let mut v: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                if v.len() > 61 && rng.below(2) == 0 {
                    let len = (v.len() - 12) as i32;
                    v[8..12].copy_from_slice(&len.to_be_bytes());
                    v[OFF_MAGIC] = 2;
                    if rng.below(2) == 0 {
                        fix_crc(&mut v);
                    }
                }
                v
            } else {
                // (b) a valid buffer, damaged.
                let (orig, starts) = &pool[rng.below(pool.len())];
                let mut v = orig.clone();
                let start = starts[rng.below(starts.len())];
                for _ in 0..1 + rng.below(3) {
                    match rng.below(6) {
                        0 | 1 if !v.is_empty() => {
                            let i = rng.below(v.len());
                            v[i] ^= 1 << rng.below(8);
                        }
                        2 => {
                            let n = rng.below(v.len() + 1);
                            v.truncate(n);
                        }
                        3 if v.len() >= start + 12 => {
                            let edge = [0, -1, 13, 48, 49, i32::MAX, i32::MIN];
                            let len = if rng.below(2) == 0 {
                                edge[rng.below(edge.len())]
                            } else {
                                be_i32(&v, start + 8).wrapping_add(rng.below(9) as i32 - 4)
                            };
                            v[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
                        }
                        4 if v.len() >= start + HEADER_LEN => {
                            // record count or last offset delta
                            let at = [OFF_RECORD_COUNT, OFF_LAST_OFFSET_DELTA][rng.below(2)];
                            let val = [0, -1, 1, 1000, i32::MAX][rng.below(5)];
                            v[start + at..start + at + 4].copy_from_slice(&val.to_be_bytes());
                        }
                        _ if v.len() > start + HEADER_LEN => {
                            // damage the records area (varints live here)
                            let i = start + HEADER_LEN + rng.below(v.len() - start - HEADER_LEN);
                            v[i] = [0xff, 0x80, 0x00, 0x7f, 0x01][rng.below(5)];
                        }
                        _ => {}
                    }
                }
                // Half the time, make the CRC right again so the damage gets
                // past it.
                if rng.below(2) == 0 && v.len() >= start + HEADER_LEN {
                    let len = be_i32(&v, start + 8);
                    if let Ok(len) = usize::try_from(len) {
                        if len >= HEADER_LEN - 12 && start + 12 + len <= v.len() {
                            fix_crc(&mut v[start..start + 12 + len]);
                        }
                    }
                }
                v
            };
            let d = decode(&data, from);
            check_sane(&d, from, &format!("iteration {it}"));
            for r in &d.records {
                if let Some(why) = reason(r) {
                    undecodable += 1;
                    let kind: String = why.chars().take_while(|c| !c.is_ascii_digit()).collect();
                    *kinds.entry(kind).or_insert(0usize) += 1;
                } else {
                    decoded += 1;
                }
            }
        }
        println!(
            "fuzz: {iters} iterations in {:?} ({decoded} records decoded, {undecodable} undecodable)",
            started.elapsed()
        );
        for (kind, n) in &kinds {
            println!("  {n:>7} {kind}");
        }
        // The damage must exercise both paths.
        if iters >= 1000 {
            assert!(decoded > 0 && undecodable > 0);
        }
    }
}

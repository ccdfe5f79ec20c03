//! Walking the record batches of a Fetch partition.

use std::collections::VecDeque;

use bytes::Bytes;

use super::compression::{inflate, Compression};
use super::*;
use crate::record::{Header, Record, Topic};

/// Decompressed size cap per batch: a zip bomb becomes an undecodable
/// record instead of eating the memory.
const MAX_INFLATED_BATCH: usize = 64 << 20;
/// Decompressed bytes one `decode_records` call may hold (records keep
/// slices of the decompressed buffers alive). When the next batch would go
/// over it, decoding stops there and `next_offset` points at that batch, so
/// the next fetch picks it up; the first compressed batch is always decoded.
const MAX_INFLATED_PER_CALL: usize = 128 << 20;
/// The records of a Fetch partition's record bytes.
#[cfg(any(test, feature = "fuzzing"))]
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Records at or above the fetch offset, in offset order (strictly
    /// ascending), control records left out.
    pub records: Vec<Record>,
    /// The offset to fetch next: past the last whole batch walked, never
    /// below the fetch offset nor at or below a returned record's offset.
    pub next_offset: i64,
    /// Every batch walked whose CRC checked out, in order: what a
    /// read_committed consumer needs to drop aborted transactions.
    pub batches: Vec<BatchSpan>,
}

/// Where one record batch lies and who wrote it (for read_committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpan {
    /// Offset of the batch's first record.
    pub base: i64,
    /// Offset of the batch's last record (base + last offset delta).
    pub last: i64,
    /// The writer's producer id; -1 for non-idempotent producers.
    pub producer_id: i64,
    /// Written inside a transaction (attribute bit 4).
    pub transactional: bool,
    /// For a control batch, the marker it holds.
    pub control: Option<Control>,
}

/// The marker of a control batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The producer's open transaction was aborted (type 0).
    Abort,
    /// The producer's open transaction was committed (type 1).
    Commit,
    /// Any other control type (KIP-848 and friends) or an unreadable key.
    Other,
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
///   `kafka-retry.undecodable` header holding the reason, at the batch's base
///   offset (or at the fetch position if the batch starts below it), so the
///   engine can dead-letter it and the partition never stalls.
/// - A length field below any format's minimum leaves no way to find the next
///   batch: the rest of the buffer becomes one undecodable record at the
///   current position and decoding stops one offset further.
/// - Decoding may stop early (before the end of `data`) once the batches
///   decompressed in this call hold 128 MiB; `next_offset` then points at the
///   first batch not decoded.
#[cfg(any(test, feature = "fuzzing"))]
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

/// `decode_records` appending the records to `records`, the partition's
/// buffer in the fetcher: a Vec grown record by record for every reply
/// (then moved into the buffer) cost the fetching thread a fifth of its
/// time in reallocations and page faults, and the buffer keeps its
/// capacity. Returns `Decoded`'s `next_offset` and `batches`.
pub(crate) fn decode_records_into(
    topic: &str,
    partition: i32,
    data: Bytes,
    from_offset: i64,
    records: &mut VecDeque<Record>,
) -> (i64, Vec<BatchSpan>) {
    decode_into_with_caps(
        topic,
        partition,
        data,
        from_offset,
        MAX_INFLATED_BATCH,
        MAX_INFLATED_PER_CALL,
        records,
    )
}

/// [`decode_records`] with the decompression caps as parameters (tests use
/// small ones).
#[cfg(any(test, feature = "fuzzing"))]
pub(super) fn decode_with_caps(
    topic: &str,
    partition: i32,
    data: Bytes,
    from_offset: i64,
    batch_cap: usize,
    call_budget: usize,
) -> Decoded {
    let mut records = VecDeque::new();
    let (next_offset, batches) = decode_into_with_caps(
        topic,
        partition,
        data,
        from_offset,
        batch_cap,
        call_budget,
        &mut records,
    );
    Decoded {
        // Filled from the front of an empty deque: contiguous, so no move.
        records: Vec::from(records),
        next_offset,
        batches,
    }
}

fn decode_into_with_caps(
    topic: &str,
    partition: i32,
    data: Bytes,
    from_offset: i64,
    batch_cap: usize,
    call_budget: usize,
    records: &mut VecDeque<Record>,
) -> (i64, Vec<BatchSpan>) {
    // Room for the whole reply at once, from the batch headers' record
    // counts: growing the buffer batch by batch copied it several times
    // over (a partition's first few replies are most of a run) and an
    // empty buffer's growth copied its dead capacity too. Capped: the
    // counts are the sender's word.
    let want = record_count_hint(&data).min(RESERVE_CAP);
    if records.is_empty() && records.capacity() < want {
        *records = VecDeque::with_capacity(want);
    } else {
        records.reserve(want);
    }
    let mut w = Walker {
        topic: Topic::from(topic),
        partition,
        records,
        pos: from_offset,
        inflated: 0,
        batch_cap,
        call_budget,
        batches: Vec::new(),
    };
    let mut off = 0usize;
    loop {
        let rest = data.get(off..).unwrap_or_default();
        let total = match frame(rest) {
            // A truncated tail (or the end): fetched again from `next_offset`.
            Frame::Short => break,
            Frame::Broken(length) => {
                let raw = data.slice(off..);
                w.broken_framing(raw, length);
                break;
            }
            Frame::Whole(total) => total,
        };
        let base = be_i64(rest, 0);
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
    (w.pos, w.batches)
}

/// Most records `decode_records_into` reserves room for up front (about
/// 9 MiB of `Record`s); a reply with more grows the buffer as it goes.
const RESERVE_CAP: usize = 64 << 10;

/// What the log entry at the start of `rest` is, by its framing alone.
enum Frame {
    /// Fewer bytes than the entry needs (or none): a truncated tail.
    Short,
    /// A length field below any format's minimum (the field itself).
    Broken(i32),
    /// A whole entry of this many bytes, length field included.
    Whole(usize),
}

fn frame(rest: &[u8]) -> Frame {
    if rest.len() < LOG_OVERHEAD {
        return Frame::Short;
    }
    let length = be_i32(rest, 8);
    match usize::try_from(length) {
        Ok(len) if len >= MIN_ENTRY_LEN => match LOG_OVERHEAD.checked_add(len) {
            Some(total) if total <= rest.len() => Frame::Whole(total),
            _ => Frame::Short,
        },
        _ => Frame::Broken(length),
    }
}

/// The record counts of the whole magic-2 batches in `data`, summed: a
/// walk over the framing alone (no CRC, no decompression), stopping where
/// decoding stops reading lengths.
fn record_count_hint(data: &[u8]) -> usize {
    let mut sum = 0usize;
    let mut off = 0usize;
    while let Frame::Whole(total) = frame(data.get(off..).unwrap_or_default()) {
        let rest = &data[off..off + total];
        if total >= HEADER_LEN && rest.get(OFF_MAGIC) == Some(&2) {
            let count = usize::try_from(be_i32(rest, OFF_RECORD_COUNT)).unwrap_or(0);
            sum = sum.saturating_add(count);
        }
        off += total;
    }
    sum
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Go on with the next batch.
    Next,
    /// Stop before this batch (decompression budget spent).
    Stop,
}

struct Walker<'a> {
    /// Shared by every record of the call: one allocation per reply.
    topic: Topic,
    partition: i32,
    /// Where records go; may hold records of earlier calls, which are
    /// left alone (truncating on a bad batch keeps them).
    records: &'a mut VecDeque<Record>,
    /// Lowest offset not yet covered: fetch offset, then past every batch
    /// walked. Records below it are dropped, so output offsets ascend.
    pos: i64,
    /// Decompressed bytes held by this call.
    inflated: usize,
    /// Decompressed size cap per batch.
    batch_cap: usize,
    /// Decompressed bytes this call may hold (see `MAX_INFLATED_PER_CALL`).
    call_budget: usize,
    /// Spans of the batches walked (see [`Decoded::batches`]).
    batches: Vec<BatchSpan>,
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
        let control = attributes & ATTR_CONTROL != 0;
        self.batches.push(BatchSpan {
            base,
            last: next.saturating_sub(1),
            producer_id: be_i64(&entry, OFF_PRODUCER_ID),
            transactional: attributes & ATTR_TRANSACTIONAL != 0,
            control: control.then(|| control_type(&entry)),
        });
        if control {
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
            let mut rc = Cursor::span(payload, cur.pos, end);
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
                self.records.push_back(record);
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
            let key = c.key(key_len).map_err(|e| format!("header {h}: {e}"))?;
            let value = c.nullable().map_err(|e| format!("header {h}: {e}"))?;
            headers.push(Header { key, value });
        }
        // i64::MAX is no offset: no next offset would follow it.
        let offset = batch
            .base
            .checked_add(i64::from(delta))
            .filter(|&o| o < i64::MAX)
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
                topic: self.topic.clone(),
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
        if offset == i64::MAX {
            // A record there could never be fetched past (no offset follows
            // it), and no Kafka log reaches it: a forged base offset.
            return;
        }
        log::warn!(
            "{}-{} offset {offset}: undecodable record batch ({} bytes): {reason}",
            self.topic,
            self.partition,
            raw.len()
        );
        self.records.push_back(Record {
            topic: self.topic.clone(),
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

/// The marker type of a control batch: the key of its first record is
/// `version: i16, type: i16` (control batches are never compressed).
fn control_type(entry: &Bytes) -> Control {
    let payload = entry.slice(HEADER_LEN.min(entry.len())..);
    let mut c = Cursor::new(&payload, payload.len());
    let key = (|| {
        let _len = c.varint()?;
        let _attributes = c.u8()?;
        let _ts_delta = c.varlong()?;
        let _offset_delta = c.varint()?;
        c.nullable()
    })();
    match key {
        Ok(Some(k)) if k.len() >= 4 => match be_i16(&k, 2) {
            0 => Control::Abort,
            1 => Control::Commit,
            _ => Control::Other,
        },
        _ => Control::Other,
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
pub(super) struct Cursor<'a> {
    buf: &'a Bytes,
    /// `buf[..end]`, read as a plain slice: a byte costs one bounds check
    /// rather than a deref of the `Bytes` and two checks.
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a Bytes, end: usize) -> Self {
        Cursor::span(buf, 0, end)
    }

    /// A reader over `buf[pos..end]` (`end` capped at the buffer's length).
    fn span(buf: &'a Bytes, pos: usize, end: usize) -> Self {
        let data = &buf[..end.min(buf.len())];
        Cursor { buf, data, pos }
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn u8(&mut self) -> Result<u8, String> {
        let b = *self.data.get(self.pos).ok_or("truncated")?;
        self.pos += 1;
        Ok(b)
    }

    /// Zigzag varint of at most 5 bytes. Like Java's `ByteUtils.readVarint`,
    /// bits beyond 32 in the fifth byte are dropped.
    pub(super) fn varint(&mut self) -> Result<i32, String> {
        // One byte, the usual case: lengths under 64 (header keys and
        // values, most counts and deltas).
        if let Some(&b) = self.data.get(self.pos) {
            if b & 0x80 == 0 {
                self.pos += 1;
                let raw = u32::from(b);
                return Ok((raw >> 1) as i32 ^ -((raw & 1) as i32));
            }
        }
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
    pub(super) fn varlong(&mut self) -> Result<i64, String> {
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

    /// Where `len` bytes from here end, if they are inside the reader.
    fn end_of(&self, len: usize) -> Option<usize> {
        self.pos
            .checked_add(len)
            .filter(|&end| end <= self.data.len())
    }

    fn bytes(&mut self, len: usize) -> Result<Bytes, String> {
        let end = self
            .end_of(len)
            .ok_or_else(|| format!("length {len} overruns the record"))?;
        let b = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(b)
    }

    /// A header key of `len` bytes: one of this crate's names as its static
    /// string (see [`headers::own_name`](crate::headers::own_name)), any
    /// other as a slice.
    fn key(&mut self, len: usize) -> Result<Bytes, String> {
        let own = self
            .end_of(len)
            .and_then(|end| crate::headers::own_name(&self.data[self.pos..end]));
        match own {
            Some(name) => {
                self.pos += len;
                Ok(Bytes::from_static(name.as_bytes()))
            }
            None => self.bytes(len),
        }
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

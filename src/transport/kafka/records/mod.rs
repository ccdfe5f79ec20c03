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
//!
//! Files: [`encode`] writes a batch, [`decode`] walks a Fetch partition's
//! batches, [`compression`] holds the codecs both use.

mod compression;
mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use compression::Compression;
#[cfg(any(test, feature = "fuzzing"))]
pub use decode::decode_records;
pub(crate) use decode::decode_records_into;
#[cfg(not(any(test, feature = "fuzzing")))]
pub(crate) use decode::{BatchSpan, Control};
#[cfg(any(test, feature = "fuzzing"))]
pub use decode::{BatchSpan, Control, Decoded};
#[cfg(test)]
pub(crate) use encode::encode_batch;
pub(crate) use encode::{encode_batch_as, ProducerFields};

/// Header added to the single record that stands for a batch we could not
/// decode; its value is the reason (UTF-8).
pub(crate) const UNDECODABLE_HEADER: &str = crate::headers::UNDECODABLE;

// Byte offsets inside a batch (see the module docs).
const LOG_OVERHEAD: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
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
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

// Big-endian reads of batch header fields.

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

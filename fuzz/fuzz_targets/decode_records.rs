//! Fuzzes `decode_records` with arbitrary bytes.
//!
//! The decoder comes from `kafka_retry::unstable` (feature `fuzzing`).
//!
//! Input: byte 0 = flags (bit 0: fix up the CRC of every batch that can be
//! framed, so mutations get past the checksum into the decompressors and the
//! record parser), byte 1 = fetch offset (0..=255), the rest = the records
//! bytes of one Fetch partition.
#![no_main]

use kafka_retry::unstable::records;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (flags, from, data) = match input {
        [flags, from, data @ ..] => (*flags, i64::from(*from), data),
        _ => return,
    };
    let mut data = data.to_vec();
    if flags & 1 != 0 {
        fix_crcs(&mut data);
    }
    let d = records::decode_records("t", 0, bytes::Bytes::from(data), from);
    assert!(d.next_offset >= from);
    let mut prev = None;
    for r in &d.records {
        assert!(r.offset >= from);
        assert!(prev < Some(r.offset), "offsets not ascending");
        assert!(r.offset < d.next_offset);
        prev = Some(r.offset);
    }
});

/// Rewrites the CRC-32C of each batch (bytes 21..end, stored at 17..21).
fn fix_crcs(data: &mut [u8]) {
    let mut off = 0usize;
    while let Some(head) = data.get(off..off + 12) {
        let len = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        let Ok(len) = usize::try_from(len) else {
            return;
        };
        let end = off + 12 + len;
        let Some(batch) = data.get_mut(off..end) else {
            return;
        };
        if batch.len() >= 61 {
            let crc = crc32c::crc32c(&batch[21..]);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        if len == 0 {
            return;
        }
        off = end;
    }
}

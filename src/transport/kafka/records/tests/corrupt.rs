//! What the decoder does with input it cannot trust: corrupt and legacy
//! batches, garbage, decompression caps, varint limits, and the property
//! test over random mutations (`fuzz_no_panic`).

use super::*;

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

/// Found by cargo-fuzz: a batch at base offset i64::MAX became a record at
/// i64::MAX with `next_offset` i64::MAX, so the fetcher would read it forever.
#[test]
fn batch_at_the_last_offset_is_dropped() {
    let good = batch_at(&small_records(2, "a"), 5, Compression::None);
    for bad in [
        // Legacy magic: undecodable at its base offset.
        {
            let mut b = batch_at(&small_records(1, "x"), 0, Compression::None);
            set_base(&mut b, i64::MAX);
            b[16] = 0;
            b
        },
        // A valid batch whose one record sits at i64::MAX.
        batch_at(&small_records(1, "y"), i64::MAX, Compression::None),
        // A valid batch that reaches i64::MAX on its second record.
        batch_at(&small_records(2, "z"), i64::MAX - 1, Compression::None),
    ] {
        let mut data = good.clone();
        data.extend(&bad);
        let d = decode(&data, 0);
        check_sane(&d, 0, "batch at i64::MAX");
        assert_eq!(d.records[0].offset, 5);
        assert!(d.records.iter().all(|r| r.offset < i64::MAX));
    }
}

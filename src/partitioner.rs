//! Java's default partitioner, so keyed records land where a Java (or
//! librdkafka with `partitioner=murmur2_random`) producer would put them.

/// Kafka's murmur2 hash of `data`, exactly as the Java client's
/// `Utils.murmur2` computes it (seed `0x9747b28c`, signed result).
///
/// ```
/// assert_eq!(kafka_retry::transport::murmur2(b"21"), -973932308);
/// assert_eq!(kafka_retry::transport::murmur2(b"abc"), 479470107);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java computes on `int` with silent overflow; `u32` with wrapping math
    // gives the same bits. Java truncates the length to `int` too.
    let mut h: u32 = SEED ^ (data.len() as u32);

    let mut words = data.chunks_exact(4);
    for w in &mut words {
        let mut k = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // The tail: only the bytes present, highest first (Java's switch
    // falls through from case 3 to case 1).
    let tail = words.remainder();
    if !tail.is_empty() {
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Java's default partitioner picks for a record with `key`:
/// `(murmur2(key) & 0x7fffffff) % partitions`.
///
/// `partitions` below 1 is treated as 1 (there is no valid answer; callers
/// check the partition count first).
///
/// ```
/// use kafka_retry::transport::partition_for_key;
/// assert_eq!(partition_for_key(b"foobar", 10), 6);
/// assert_eq!(partition_for_key(b"foobar", 3), 0);
/// ```
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    // Java's `toPositive` masks the sign bit (it does not use `abs`, which
    // would overflow on i32::MIN).
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from Kafka's UtilsTest, partitions computed (see
    // kafka-wire-notes.md section 6).
    const VECTORS: &[(&str, i32, i32, i32)] = &[
        ("21", -973932308, 0, 0),
        ("foobar", -790332482, 0, 6),
        ("a-little-bit-long-string", -985981536, 2, 2),
        ("a-little-bit-longer-string", -1486304829, 2, 9),
        ("abc", 479470107, 0, 7),
    ];

    #[test]
    fn murmur2_matches_java() {
        for &(key, hash, _, _) in VECTORS {
            assert_eq!(murmur2(key.as_bytes()), hash, "murmur2({key:?})");
        }
    }

    #[test]
    fn partitions_match_java() {
        for &(key, _, p3, p10) in VECTORS {
            assert_eq!(partition_for_key(key.as_bytes(), 3), p3, "{key:?} % 3");
            assert_eq!(partition_for_key(key.as_bytes(), 10), p10, "{key:?} % 10");
        }
    }

    #[test]
    fn unsigned_view_matches_kafka_python() {
        // kafka-python returns the same bits unsigned.
        assert_eq!(murmur2(b"21") as u32, 3_321_034_988);
    }

    #[test]
    fn every_tail_length_and_empty_key() {
        // Exercise the 0..=3 byte tails; results must be stable and the
        // partition always in range, including for an empty key (Java
        // hashes an empty, non-null key like any other).
        for len in 0..9 {
            let key: Vec<u8> = (0..len as u8).collect();
            let p = partition_for_key(&key, 7);
            assert!((0..7).contains(&p));
            assert_eq!(murmur2(&key), murmur2(&key.clone()));
        }
        assert_eq!(partition_for_key(b"abc", 0), 0);
        assert_eq!(partition_for_key(b"abc", -4), 0);
    }
}

//! Java's default partitioner (placeholder).

/// Kafka's murmur2 hash of `data`, as the Java client computes it.
pub fn murmur2(_data: &[u8]) -> i32 {
    unimplemented!()
}

/// The partition Java's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1)) as i32
}

//! Internals for the fuzz targets in `fuzz/` (feature `fuzzing`), as
//! rskafka's `unstable-fuzzing`: the targets link the crate instead of
//! compiling its source files by path, so the files can move freely.
//!
//! Not part of the API: hidden from the docs, and anything here may change
//! or go away in any release.

/// The record batch v2 decoder of the Kafka client.
pub mod records {
    pub use crate::transport::kafka::records::{decode_records, BatchSpan, Control, Decoded};
}

/// The retry header contract: parsing, writing, dead-letter headers.
pub mod headers {
    use crate::record::{Header, Record};

    pub use crate::headers::{
        DeadReason, Malformed, RetryInfo, ATTEMPTS, DEAD_REASON, ENQUEUED_AT, FIRST_RECEIVED_AT,
        ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TOPIC, REASON,
    };

    /// Longest `retry.reason` value written, in bytes.
    pub const MAX_REASON_BYTES: usize = crate::headers::MAX_REASON_BYTES;
    /// How far in the future a header timestamp may be before it is malformed.
    pub const CLOCK_SKEW_TOLERANCE_MS: i64 = crate::headers::CLOCK_SKEW_TOLERANCE_MS;

    /// `RetryInfo::parse`: the retry headers of `record`.
    pub fn parse(record: &Record, now_ms: i64) -> Result<RetryInfo, Malformed> {
        RetryInfo::parse(record, now_ms)
    }

    /// `RetryInfo::headers`: `user` headers without `retry.*` ones, then
    /// fresh retry headers for `info`.
    pub fn write(
        info: &RetryInfo,
        user: &[Header],
        reason: &str,
        dead: Option<DeadReason>,
    ) -> Vec<Header> {
        info.headers(user, reason, dead)
    }

    /// `malformed_headers`: the headers of a dead-letter copy of a record
    /// whose retry headers cannot be trusted.
    pub fn malformed(original: &[Header], reason: &str) -> Vec<Header> {
        crate::headers::malformed_headers(original, reason)
    }
}

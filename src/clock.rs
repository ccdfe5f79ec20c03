//! The one clock of the crate: wall-clock milliseconds for header values and
//! overflow-safe deadlines for waits.
//!
//! Header times (`retry.first-received-at`, `retry.enqueued-at`, record
//! timestamps) are wall-clock, because they travel between machines. Every
//! wait in the crate uses [`Instant`], which never jumps.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock time in ms since the Unix epoch. A clock set before 1970
/// reads as 0 rather than panicking.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `Instant::now() + d`, or a point a century away when `d` is too large
/// to add (`Duration::MAX` as "no deadline" must not panic).
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2020_and_deadlines_saturate() {
        assert!(now_ms() > 1_577_836_800_000);
        let far = deadline_after(Duration::MAX);
        assert!(far > Instant::now() + Duration::from_secs(365 * 24 * 3600));
        let near = deadline_after(Duration::from_millis(5));
        assert!(near <= Instant::now() + Duration::from_millis(5));
    }
}

//! The one retry schedule of the engine: 50 ms, doubling, at most 2 s.
//! Failed polls and failed writes to the retry, dead-letter and origin
//! topics all wait by it.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(50);
const MAX: Duration = Duration::from_secs(2);

/// Successive waits after consecutive failures.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    /// The wait before the next attempt; each call doubles the one after.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX);
        wait
    }

    /// Back to the first wait, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = FIRST;
    }

    /// The wait after `failures` consecutive failures (1 = the first).
    pub(crate) fn after_failures(failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        (FIRST * (1u32 << doublings)).min(MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_two_seconds_and_both_forms_agree() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
        assert_eq!(waits[0], Duration::from_millis(50));
        assert_eq!(waits[1], Duration::from_millis(100));
        assert_eq!(waits[7], Duration::from_secs(2));
        for (i, w) in waits.iter().enumerate() {
            assert_eq!(*w, Backoff::after_failures(i as u32 + 1));
        }
        assert_eq!(Backoff::after_failures(1000), Duration::from_secs(2));
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(50));
    }
}

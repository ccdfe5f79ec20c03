//! Retry policy: how long to wait between attempts and when to give up.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// When a record that asked to be retried is tried again, and when it is
/// given up on.
///
/// Serde-friendly: durations are strings such as `"250ms"`, `"5s"`, `"2m"`,
/// `"1h"` (or integer milliseconds), so a policy reads well in a config file:
///
/// ```
/// let policy: kafka_retry::RetryPolicy = serde_json::from_str(r#"{
///     "retry_interval": "5s",
///     "max_retry_duration": "1h",
///     "backoff": { "multiplier": 2.0, "max_interval": "2m", "jitter": 0.1 },
///     "max_attempts": 20
/// }"#).unwrap();
/// // Third failure: 5 s * 2^2 = 20 s, shortened by at most 10 % jitter.
/// let wait = policy.interval_for(3, 0);
/// assert!(wait <= std::time::Duration::from_secs(20) && wait >= std::time::Duration::from_secs(18));
/// ```
///
/// A missing field takes its default (the same as [`RetryPolicy::default`]):
/// `retry_interval` 5 s, `max_retry_duration` 1 h, no backoff, no
/// `max_attempts`.
///
/// ```
/// let policy: kafka_retry::RetryPolicy = serde_json::from_str(r#"{ "max_attempts": 3 }"#).unwrap();
/// assert_eq!(policy.retry_interval, std::time::Duration::from_secs(5));
/// assert_eq!(policy.max_attempts, Some(3));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Wait before the first retry (and every retry without backoff).
    #[serde(with = "duration_serde")]
    pub retry_interval: Duration,
    /// A record first received longer ago than this is given up on
    /// (dead-lettered with reason `expired`).
    #[serde(with = "duration_serde")]
    pub max_retry_duration: Duration,
    /// Exponential backoff; `None` waits `retry_interval` every time.
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// Give up after this many failed attempts, whatever the duration.
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

/// Exponential backoff between retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Each attempt waits this many times longer than the previous one.
    pub multiplier: f64,
    /// The wait never grows past this.
    #[serde(with = "duration_serde")]
    pub max_interval: Duration,
    /// Random spread as a fraction of the wait, in `0.0..=1.0`: a wait `w`
    /// becomes a value in `[w * (1 - jitter), w]`, so no retry is early.
    /// The spread is derived from the record's identity, so a restarted
    /// relay computes the same due time.
    #[serde(default)]
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_interval: Duration::from_secs(5),
            max_retry_duration: Duration::from_secs(60 * 60),
            backoff: None,
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    /// A fixed-interval policy.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = kafka_retry::RetryPolicy::new(Duration::from_secs(5), Duration::from_secs(3600));
    /// assert_eq!(p.interval_for(7, 0), Duration::from_secs(5));
    /// ```
    pub fn new(retry_interval: Duration, max_retry_duration: Duration) -> Self {
        RetryPolicy {
            retry_interval,
            max_retry_duration,
            backoff: None,
            max_attempts: None,
        }
    }

    /// Adds exponential backoff.
    pub fn with_backoff(mut self, multiplier: f64, max_interval: Duration, jitter: f64) -> Self {
        self.backoff = Some(Backoff {
            multiplier,
            max_interval,
            jitter,
        });
        self
    }

    /// Gives up after `attempts` failed attempts.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Checks the policy; the error names the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.retry_interval.is_zero() {
            return Err(Error::config("retry_interval", "must be greater than zero"));
        }
        if self.max_retry_duration < self.retry_interval {
            return Err(Error::config(
                "max_retry_duration",
                format!(
                    "{:?} is shorter than retry_interval {:?}",
                    self.max_retry_duration, self.retry_interval
                ),
            ));
        }
        if let Some(b) = &self.backoff {
            if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
                return Err(Error::config(
                    "backoff.multiplier",
                    format!("{} must be a finite number >= 1.0", b.multiplier),
                ));
            }
            if b.max_interval < self.retry_interval {
                return Err(Error::config(
                    "backoff.max_interval",
                    "must not be shorter than retry_interval",
                ));
            }
            if !(0.0..=1.0).contains(&b.jitter) {
                return Err(Error::config(
                    "backoff.jitter",
                    format!("{} is outside 0.0..=1.0", b.jitter),
                ));
            }
        }
        if self.max_attempts == Some(0) {
            return Err(Error::config("max_attempts", "must be at least 1"));
        }
        Ok(())
    }

    /// The wait after the `attempts`-th failed attempt (1 = first failure).
    /// `seed` spreads the jitter; pass anything stable for the record.
    pub fn interval_for(&self, attempts: u32, seed: u64) -> Duration {
        let Some(b) = &self.backoff else {
            return self.retry_interval;
        };
        let exp = attempts.saturating_sub(1).min(1000) as i32;
        let base = self.retry_interval.as_secs_f64() * b.multiplier.powi(exp);
        let capped = base.min(b.max_interval.as_secs_f64());
        // Jitter only shortens the wait down to (1 - jitter) of it, and
        // never below retry_interval: "never early" stays true for the
        // configured minimum.
        let frac = (splitmix(seed ^ u64::from(attempts)) >> 11) as f64 / (1u64 << 53) as f64;
        let jittered = capped * (1.0 - b.jitter * frac);
        // A huge max_interval (Duration::MAX) must not panic the relay.
        Duration::try_from_secs_f64(jittered.max(self.retry_interval.as_secs_f64()))
            .unwrap_or(b.max_interval)
    }
}

/// `d` in whole milliseconds, saturating at `i64::MAX` (a `Duration::MAX`
/// "forever" must not wrap to a negative number).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A tiny, well-mixed hash step (SplitMix64) for deterministic jitter.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Parses `"250ms"`, `"5s"`, `"2m"`, `"1h"`, `"1d"` (a decimal number and a unit).
pub(crate) fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {s:?} has no unit (ms, s, m, h, d)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: {num:?} is not a number"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => return Err(format!("duration {s:?}: unknown unit {other:?}")),
    };
    if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

mod duration_serde {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
        let ms = d.as_millis();
        if ms.is_multiple_of(1000) {
            s.serialize_str(&format!("{}s", ms / 1000))
        } else {
            s.serialize_str(&format!("{ms}ms"))
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_toml_policy_takes_the_documented_defaults() {
        let p: RetryPolicy = toml::from_str("max_attempts = 20\n").unwrap();
        assert_eq!(p.retry_interval, Duration::from_secs(5));
        assert_eq!(p.max_retry_duration, Duration::from_secs(3600));
        assert_eq!(p.backoff, None);
        assert_eq!(p.max_attempts, Some(20));
        assert_eq!(p, RetryPolicy::default().with_max_attempts(20));
        let empty: RetryPolicy = toml::from_str("").unwrap();
        assert_eq!(empty, RetryPolicy::default());
        // Unknown fields are still refused.
        assert!(toml::from_str::<RetryPolicy>("retry_intervall = \"5s\"").is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn backoff_grows_caps_and_is_never_shorter_than_the_interval() {
        let p = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(600)).with_backoff(
            2.0,
            Duration::from_secs(10),
            0.0,
        );
        let waits: Vec<u64> = (1..=6).map(|a| p.interval_for(a, 7).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
        let j = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(600)).with_backoff(
            2.0,
            Duration::from_secs(10),
            0.5,
        );
        for seed in 0..1000 {
            let w = j.interval_for(4, seed);
            assert!(
                w >= Duration::from_secs(4) && w <= Duration::from_secs(8),
                "{w:?}"
            );
            assert_eq!(w, j.interval_for(4, seed), "jitter must be deterministic");
        }
    }

    #[test]
    fn huge_durations_neither_panic_nor_wrap() {
        let p = RetryPolicy::new(Duration::from_secs(1), Duration::MAX).with_backoff(
            2.0,
            Duration::MAX,
            0.5,
        );
        p.validate().unwrap();
        for attempts in [1, 10, 100, 2000, u32::MAX] {
            assert!(p.interval_for(attempts, 3) >= Duration::from_secs(1));
        }
        assert_eq!(millis(Duration::MAX), i64::MAX);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
    }

    #[test]
    fn validate_names_the_field() {
        let bad = RetryPolicy::new(Duration::ZERO, Duration::from_secs(1));
        assert!(matches!(
            bad.validate(),
            Err(Error::Config {
                field: "retry_interval",
                ..
            })
        ));
        let bad = RetryPolicy::new(Duration::from_secs(10), Duration::from_secs(1));
        assert!(matches!(
            bad.validate(),
            Err(Error::Config {
                field: "max_retry_duration",
                ..
            })
        ));
        let bad = RetryPolicy::default().with_backoff(0.5, Duration::from_secs(60), 0.0);
        assert!(matches!(
            bad.validate(),
            Err(Error::Config {
                field: "backoff.multiplier",
                ..
            })
        ));
        let bad = RetryPolicy::default().with_max_attempts(0);
        assert!(matches!(
            bad.validate(),
            Err(Error::Config {
                field: "max_attempts",
                ..
            })
        ));
        RetryPolicy::default().validate().unwrap();
    }

    #[test]
    fn reads_from_toml_and_json() {
        let p: RetryPolicy = toml::from_str(
            r#"
            retry_interval = "500ms"
            max_retry_duration = "2h"
            max_attempts = 5
            [backoff]
            multiplier = 3.0
            max_interval = "1m"
            "#,
        )
        .unwrap();
        assert_eq!(p.retry_interval, Duration::from_millis(500));
        assert_eq!(p.max_retry_duration, Duration::from_secs(7200));
        assert_eq!(p.max_attempts, Some(5));
        assert_eq!(p.backoff.as_ref().unwrap().multiplier, 3.0);
        assert_eq!(p.backoff.as_ref().unwrap().jitter, 0.0);
        let j: RetryPolicy =
            serde_json::from_str(r#"{"retry_interval": 1500, "max_retry_duration": "1d"}"#)
                .unwrap();
        assert_eq!(j.retry_interval, Duration::from_millis(1500));
        assert_eq!(j.max_retry_duration, Duration::from_secs(86400));
        // Round trip through serialization.
        let back: RetryPolicy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        // Typos are errors, not silently ignored fields.
        let typo = serde_json::from_str::<RetryPolicy>(
            r#"{"retry_interval": "1s", "max_retry_duration": "1h", "max_atempts": 3}"#,
        );
        assert!(typo.is_err());
        let unit = serde_json::from_str::<RetryPolicy>(
            r#"{"retry_interval": "1 fortnight", "max_retry_duration": "1h"}"#,
        );
        assert!(unit.unwrap_err().to_string().contains("unknown unit"));
    }
}

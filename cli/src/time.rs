//! Times and durations as an operator types and reads them: RFC 3339 in
//! UTC, epoch milliseconds, or "2h" ago; written in UTC. Hand-written
//! (Howard Hinnant's civil-date algorithm) instead of a date crate, since
//! UTC is all we print and parse.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Failure, Result};

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-12-02T18:01:25.123Z`.
pub fn format_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// A duration such as `90s`, `15m`, `2h`, `1d`, `500ms` (a bare number is
/// seconds).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (like 90s, 15m, 2h, 1d)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h, d)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is out of range"))
}

/// A point in time for `--since` / `--until`: RFC 3339 in UTC
/// (`2026-12-02T18:00:00Z`, fractions and a `+hh:mm` offset allowed), a
/// date (`2026-12-02`, midnight UTC), ms since the epoch, or a duration
/// ago (`2h`, `30m`).
pub fn parse_time(flag: &str, s: &str, now: i64) -> Result<i64> {
    let bad = |why: &str| {
        Failure::usage(format!(
            "{flag} `{s}`: {why}; give RFC 3339 (2026-12-02T18:00:00Z), a date (2026-12-02), ms since the epoch, or a duration ago (2h)"
        ))
    };
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && t.len() >= 9 {
        return t.parse().map_err(|_| bad("out of range"));
    }
    if let Ok(d) = parse_duration(t) {
        return Ok(now - d.as_millis() as i64);
    }
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = t.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad("not a time"));
    }
    let (y, mo, d) = match (num(0..4), num(5..7), num(8..10)) {
        (Some(y), Some(m), Some(d)) if (1..=12).contains(&m) && (1..=31).contains(&d) => (y, m, d),
        _ => return Err(bad("not a valid date")),
    };
    let mut ms = days_from_civil(y, mo, d) * 86_400_000;
    if b.len() == 10 {
        return Ok(ms);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return Err(bad("not a valid time of day"));
    }
    let (h, mi, sec) = match (num(11..13), num(14..16), num(17..19)) {
        (Some(h), Some(m), Some(s)) if h < 24 && m < 60 && s < 61 => (h, m, s),
        _ => return Err(bad("not a valid time of day")),
    };
    ms += ((h * 60 + mi) * 60 + sec) * 1000;
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad("empty fraction of a second"));
        }
        let f = &frac[..digits];
        let milli: String = f.chars().chain("000".chars()).take(3).collect();
        ms += milli.parse::<i64>().map_err(|_| bad("bad fraction"))?;
        rest = &frac[digits..];
    }
    match rest {
        "Z" | "z" => Ok(ms),
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let (oh, om) = match (rest[1..3].parse::<i64>(), rest[4..6].parse::<i64>()) {
                (Ok(h), Ok(m)) if h < 24 && m < 60 => (h, m),
                _ => return Err(bad("bad UTC offset")),
            };
            let off = (oh * 60 + om) * 60_000;
            Ok(if rest.starts_with('+') {
                ms - off
            } else {
                ms + off
            })
        }
        "" => Err(bad("no time zone (end with Z for UTC)")),
        _ => Err(bad("bad time zone")),
    }
}

/// `3m12s`, `2h05m`, `4d03h`: short, for "ago" and "in" columns.
pub fn format_span(ms: i64) -> String {
    let s = ms.unsigned_abs() / 1000;
    let out = if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else {
        format!("{}d{:02}h", s / 86_400, s / 3600 % 24)
    };
    if ms < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A bar of `width * count / max` blocks (at least one for a non-zero count).
pub fn bar(count: usize, max: usize, width: usize) -> String {
    if count == 0 || max == 0 {
        return String::new();
    }
    let n = (count * width).div_ceil(max).clamp(1, width);
    "#".repeat(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        let t = parse_time("--since", "2026-12-02T18:01:25.123Z", 0).unwrap();
        assert_eq!(format_ms(t), "2026-12-02T18:01:25.123Z");
        assert_eq!(parse_time("--since", "1970-01-01", 0).unwrap(), 0);
        assert_eq!(
            parse_time("--since", "2026-12-02T19:01:25+01:00", 0).unwrap(),
            parse_time("--since", "2026-12-02T18:01:25Z", 0).unwrap()
        );
        assert_eq!(parse_time("--since", "2h", 10_000_000).unwrap(), 2_800_000);
        assert_eq!(
            parse_time("--since", "1764698485000", 0).unwrap(),
            1_764_698_485_000
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-12-02T25:00:00Z",
            "2026-12-02T18:00:00",
            "2026-12-02T18:00:00.Z",
        ] {
            let e = parse_time("--since", bad, 0).unwrap_err();
            assert_eq!(e.code, 2, "{bad}");
            assert!(e.message.contains("--since"), "{}", e.message);
        }
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    }
}

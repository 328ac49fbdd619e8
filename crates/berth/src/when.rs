//! Times and durations as people type and read them: RFC 3339, Unix
//! seconds, `90s` / `5m`, and "3m ago".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `90`, `90s`, `5m`, `1h30m` → seconds (clap value parser).
pub fn parse_secs(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    humantime::parse_duration(text)
        .map(|d| d.as_secs())
        .map_err(|e| format!("{text:?} is not a duration (e.g. 30, 30s, 5m, 2h): {e}"))
}

/// An RFC 3339 time → seconds since the epoch (fractions dropped).
/// Accepts `Z` or a `±HH:MM` offset, and `T`, `t` or a space between date
/// and time.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = std::str::from_utf8(b.get(range)?).ok()?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &rest[1 + digits..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let d = |i: usize| i64::from(digits[i] - b'0');
            let minutes = (d(0) * 10 + d(1)) * 60 + d(2) * 10 + d(3);
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch → `2024-05-01T12:00:00Z`.
pub fn format_rfc3339(secs: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A moment a user typed: `now`, RFC 3339, Unix seconds, or a duration
/// (`+5m` in the future when `future`, `1h` ago otherwise).
pub fn parse_moment(text: &str, future: bool) -> Result<i64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now_secs());
    }
    if let Some(secs) = parse_rfc3339(text) {
        return Ok(secs);
    }
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    let (duration, ahead) = match text.strip_prefix('+') {
        Some(rest) => (rest, true),
        None => (text.strip_prefix('-').unwrap_or(text), future),
    };
    match humantime::parse_duration(duration) {
        Ok(d) if ahead => Ok(now_secs() + d.as_secs() as i64),
        Ok(d) => Ok(now_secs() - d.as_secs() as i64),
        Err(_) => Err(format!(
            "{text:?} is not a time: use RFC 3339 (2024-05-01T12:00:00Z), Unix seconds, `now`, \
             or a duration ({})",
            if future { "+10m from now" } else { "1h ago" }
        )),
    }
}

/// A time in a JSON answer, as RFC 3339 text or a number of seconds or
/// milliseconds since the epoch.
pub fn seconds_of(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::String(text) => parse_rfc3339(text),
        serde_json::Value::Number(n) => {
            let n = n.as_i64()?;
            // Milliseconds from 1973 on are larger than any time in seconds
            // before the year 5000.
            Some(if n > 100_000_000_000 { n / 1000 } else { n })
        }
        _ => None,
    }
}

/// `5s ago`, `3m ago`, `in 2h`, `4d ago`.
pub fn relative(secs: i64) -> String {
    let delta = now_secs() - secs;
    let span = short_duration(delta.unsigned_abs());
    if delta.abs() < 1 {
        "just now".to_owned()
    } else if delta > 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// The largest unit of a span: `45s`, `3m`, `2h`, `4d`.
pub fn short_duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// Milliseconds → `850ms`, `12.3s`, `4m05s`, `1h02m`.
pub fn elapsed_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:34:56.789Z"),
            Some(1_709_210_096)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T14:34:56+02:00"),
            Some(1_709_210_096)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29 12:34:56-00:30"),
            Some(1_709_211_896)
        );
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(format_rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn parses_durations_and_moments() {
        assert_eq!(parse_secs("60"), Ok(60));
        assert_eq!(parse_secs("60s"), Ok(60));
        assert_eq!(parse_secs("1h30m"), Ok(5400));
        assert!(parse_secs("soon").is_err());
        let now = now_secs();
        assert!((parse_moment("+1m", false).unwrap() - now - 60).abs() <= 1);
        assert!((parse_moment("1h", false).unwrap() - now + 3600).abs() <= 1);
        assert_eq!(parse_moment("1700000000", false), Ok(1_700_000_000));
        assert!(parse_moment("tomorrow", true).is_err());
    }

    #[test]
    fn reads_json_times() {
        use serde_json::json;
        assert_eq!(seconds_of(&json!("1970-01-01T00:01:00Z")), Some(60));
        assert_eq!(seconds_of(&json!(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(
            seconds_of(&json!(1_700_000_000_123i64)),
            Some(1_700_000_000)
        );
        assert_eq!(seconds_of(&json!(null)), None);
        assert_eq!(elapsed_ms(1500), "1.5s");
        assert_eq!(elapsed_ms(125_000), "2m05s");
    }
}

//! Times and durations as people type and read them: RFC 3339, Unix
//! seconds, `90s` / `5m`, and "3m ago".

use berth_core::time::{format_rfc3339_seconds, now_millis, parse_rfc3339};

/// Seconds since the Unix epoch, now: berth's one clock in the unit the
/// command line speaks.
pub fn now_secs() -> i64 {
    now_millis().div_euclid(1000)
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

/// An RFC 3339 time → seconds since the epoch (fractions dropped). Which
/// forms are accepted: [`berth_core::time`].
fn rfc3339_secs(text: &str) -> Option<i64> {
    parse_rfc3339(text).ok().map(|ms| ms.div_euclid(1000))
}

/// Seconds since the epoch → `2024-05-01T12:00:00Z`.
pub fn format_rfc3339(secs: i64) -> String {
    format_rfc3339_seconds(secs.saturating_mul(1000))
}

/// A moment a user typed: `now`, RFC 3339, Unix seconds, or a duration
/// (`+5m` in the future when `future`, `1h` ago otherwise).
pub fn parse_moment(text: &str, future: bool) -> Result<i64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now_secs());
    }
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    if looks_like_a_date(text) {
        // Say what is wrong with it rather than list every form a time may take.
        return parse_rfc3339(text)
            .map(|ms| ms.div_euclid(1000))
            .map_err(|e| e.to_string());
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

/// `2024-…`: a text meant as a date, not as a duration.
fn looks_like_a_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() > 4 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// A time in a JSON answer, as RFC 3339 text or a number of seconds or
/// milliseconds since the epoch.
pub fn seconds_of(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::String(text) => rfc3339_secs(text),
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
        assert_eq!(rfc3339_secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_secs("2024-02-29T12:34:56.789Z"),
            Some(1_709_210_096)
        );
        assert_eq!(
            rfc3339_secs("2024-02-29T14:34:56+02:00"),
            Some(1_709_210_096)
        );
        assert_eq!(
            rfc3339_secs("2024-02-29 12:34:56-00:30"),
            Some(1_709_211_896)
        );
        assert_eq!(rfc3339_secs("2024-02-29T12:34:56"), None);
        assert_eq!(rfc3339_secs("yesterday"), None);
        // Fractions are dropped towards the past, before 1970 too.
        assert_eq!(rfc3339_secs("1969-12-31T23:59:59.5Z"), Some(-1));
        assert_eq!(format_rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn refuses_impossible_dates_and_says_why() {
        // These were read as 2023-03-03 and 2024-03-01T01:38:00Z.
        let error = parse_moment("2023-02-31T00:00:00Z", true).unwrap_err();
        assert!(error.contains("'day' for `2023-02`"), "{error}");
        let error = parse_moment("2024-02-29T01:00:00+99:99", true).unwrap_err();
        assert!(error.contains("offset"), "{error}");
        // The colon-less offset the task API accepts is a time here too.
        assert_eq!(
            parse_moment("2024-02-29T14:34:56+0200", true),
            Ok(1_709_210_096)
        );
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

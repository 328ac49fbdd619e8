//! Time as berth stores, sends and reads it: milliseconds since the Unix
//! epoch ([`Millis`]), RFC 3339 text on every wire, and the one place berth
//! reads the wall clock ([`now_millis`]).
//!
//! Calendar arithmetic (leap years, days of a month, offsets) is jiff's;
//! this module only decides which texts berth accepts and how it prints
//! them. No time zone database is involved: berth speaks UTC and fixed
//! offsets only, so nothing here reads files or needs initialisation (the
//! shim links this crate and starts in under a millisecond).
//!
//! # What [`parse_rfc3339`] accepts
//!
//! RFC 3339's `date-time` (section 5.6), including what the RFC allows that
//! strict parsers often forget:
//! - `t` and `z` in lower case, and a space instead of `T` (RFC 3339 5.6,
//!   note);
//! - any number of fraction digits (`time-secfrac = "." 1*DIGIT`); berth
//!   keeps milliseconds and drops the rest (towards the past);
//! - a leap second (`23:59:60`), read as `:59` of the same minute (with
//!   its fraction) because Unix time has no leap seconds;
//! - years `0000` to `9999`, before 1970 too (negative [`Millis`]), up to
//!   9999-12-30T22:00Z, the latest instant jiff represents with any offset;
//! - `-00:00` (RFC 3339 4.3, "offset unknown") as UTC.
//!
//! One extension: an offset without its colon (`+0530`), because clients'
//! ISO 8601 writers produce it (`strftime("%z")`, Java's `Z` pattern) and
//! berth's task API has always accepted it. Surrounding whitespace is
//! ignored. Everything else is refused with an error that says what was
//! wrong: a missing offset (a time without one is not an instant), missing
//! seconds, one-digit fields, offsets of 24 hours or more, impossible dates
//! (`2026-02-29`), ISO 8601's other forms (`20261121T100000Z`, week dates,
//! `T10`, `,5`), and time zone annotations (`[Europe/Paris]`).
//!
//! # What the formatters print
//!
//! Always UTC with `Z`: [`format_rfc3339_millis`] prints exactly three
//! fraction digits (`2026-11-21T10:00:00.123Z`, the task API's wire format),
//! [`format_rfc3339_seconds`] none (`2026-11-21T10:00:00Z`). A time outside
//! what RFC 3339 can write (before year 0 or after the range above) prints
//! as the nearest one inside it.

use jiff::civil::DateTime;
use jiff::tz::Offset;
use jiff::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

/// A moment as milliseconds since 1970-01-01T00:00:00Z (negative before).
pub type Millis = i64;

/// 0000-01-01T00:00:00Z, the earliest time RFC 3339 can write.
const EARLIEST_RFC3339: Millis = -62_167_219_200_000;

/// The wall clock, in milliseconds since the Unix epoch: the only place
/// berth reads it. Reads `SystemTime` directly (no jiff, which panics on a
/// clock beyond year 9999); a clock set before 1970 gives a negative value.
pub fn now_millis() -> Millis {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => Millis::try_from(since.as_millis()).unwrap_or(Millis::MAX),
        Err(before) => {
            Millis::try_from(before.duration().as_millis()).map_or(Millis::MIN, |ms| -ms)
        }
    }
}

/// A text that [`parse_rfc3339`] refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 time such as 2026-11-21T10:00:00Z: {reason}")]
pub struct TimeError {
    text: String,
    reason: String,
}

impl TimeError {
    /// What was wrong, without the text (for messages that quote it
    /// themselves).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Parses an RFC 3339 time (see the module docs for exactly which) into
/// milliseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<Millis, TimeError> {
    parse(text.trim()).map_err(|reason| TimeError {
        text: text.to_owned(),
        reason,
    })
}

fn parse(text: &str) -> Result<Millis, String> {
    let mut at = Cursor(text.as_bytes());
    let date = (|| {
        let year = at.digits(4)?;
        at.byte(b"-")?;
        let month = at.digits(2)?;
        at.byte(b"-")?;
        Some((year, month, at.digits(2)?))
    })()
    .ok_or("expected a date as YYYY-MM-DD at the start")?;
    at.byte(b"Tt ")
        .ok_or("expected 'T' between the date and the time")?;
    let (hour, minute, second) = (|| {
        let hour = at.digits(2)?;
        at.byte(b":")?;
        let minute = at.digits(2)?;
        at.byte(b":")?;
        Some((hour, minute, at.digits(2)?))
    })()
    .ok_or("expected a time as HH:MM:SS after the date")?;
    let mut millis = 0;
    if at.byte(b".").is_some() {
        let fraction = at.take_digits();
        if fraction.is_empty() {
            return Err("expected digits after the '.' of the seconds".into());
        }
        // Milliseconds from the first three digits, padded: ".5" is 500.
        for position in 0..3 {
            millis = millis * 10 + fraction.get(position).map_or(0, |d| i32::from(d - b'0'));
        }
    }
    let offset_secs = match at.byte(b"Zz+-") {
        Some(b'Z' | b'z') => 0,
        Some(sign) => {
            let (hours, minutes) = (|| {
                let hours = at.digits(2)?;
                // `+05:30`, or `+0530` (see the module docs).
                let _ = at.byte(b":");
                Some((hours, at.digits(2)?))
            })()
            .ok_or("expected an offset as +HH:MM or -HH:MM")?;
            if hours > 23 || minutes > 59 {
                return Err(format!(
                    "the offset {hours:02}:{minutes:02} is not a time of day (at most 23:59)"
                ));
            }
            let secs = (hours * 60 + minutes) * 60;
            if sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        None => {
            return Err(if at.0.is_empty() {
                "no offset: add Z for UTC or one like +02:00".into()
            } else {
                "expected Z or an offset like +02:00 after the time".into()
            })
        }
    };
    if !at.0.is_empty() {
        return Err(format!(
            "unexpected {:?} after the offset",
            String::from_utf8_lossy(at.0)
        ));
    }
    let (year, month, day) = date;
    // Unix time has no leap seconds: 23:59:60 is read as 23:59:59.
    let second = if second == 60 { 59 } else { second };
    // Every field has at most four digits, so these conversions hold.
    let narrow = |n: i32| i8::try_from(n).map_err(|_| format!("{n} is out of range"));
    let civil = DateTime::new(
        i16::try_from(year).map_err(|_| format!("year {year} is out of range"))?,
        narrow(month)?,
        narrow(day)?,
        narrow(hour)?,
        narrow(minute)?,
        narrow(second)?,
        millis * 1_000_000,
    )
    .map_err(|e| e.to_string())?;
    // At most ±23:59, well inside what jiff's offsets hold.
    let offset = Offset::from_seconds(offset_secs).map_err(|e| e.to_string())?;
    let instant = offset.to_timestamp(civil).map_err(|_| {
        format!(
            "out of range: berth holds times up to {}",
            format_rfc3339_seconds(Timestamp::MAX.as_millisecond())
        )
    })?;
    Ok(instant.as_millisecond())
}

/// The rest of a text being parsed.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    /// Exactly `count` ASCII digits, as a number.
    fn digits(&mut self, count: usize) -> Option<i32> {
        let (digits, rest) = self.0.split_at_checked(count)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = rest;
        Some(digits.iter().fold(0, |n, d| n * 10 + i32::from(d - b'0')))
    }

    /// All the ASCII digits that come next (maybe none).
    fn take_digits(&mut self) -> &[u8] {
        let count = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        let (digits, rest) = self.0.split_at(count);
        self.0 = rest;
        digits
    }

    /// The next byte if it is one of `allowed`.
    fn byte(&mut self, allowed: &[u8]) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        if !allowed.contains(&first) {
            return None;
        }
        self.0 = rest;
        Some(first)
    }
}

/// `2026-11-21T10:00:00.123Z`: UTC with exactly three fraction digits.
pub fn format_rfc3339_millis(millis: Millis) -> String {
    format!("{:.3}", printable(millis))
}

/// `2026-11-21T10:00:00Z`: UTC, whole seconds (the fraction is dropped).
pub fn format_rfc3339_seconds(millis: Millis) -> String {
    format!("{:.0}", printable(millis))
}

/// `millis` as a jiff timestamp, moved into what RFC 3339 can write.
fn printable(millis: Millis) -> Timestamp {
    let latest = Timestamp::MAX.as_millisecond();
    // In range after the clamp, so the fallback is never taken.
    Timestamp::from_millisecond(millis.clamp(EARLIEST_RFC3339, latest)).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-21T10:00:00Z.
    const NOV_21: Millis = 1_795_255_200_000;

    fn ok(text: &str) -> Millis {
        parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?} refused: {e}"))
    }

    fn refused(text: &str) -> String {
        match parse_rfc3339(text) {
            Ok(m) => panic!("{text:?} accepted as {m}"),
            Err(e) => e.reason().to_owned(),
        }
    }

    #[test]
    fn formats_utc_with_and_without_milliseconds() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(NOV_21 + 123),
            "2026-11-21T10:00:00.123Z"
        );
        assert_eq!(
            format_rfc3339_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(format_rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339_seconds(1_700_000_000_999),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(format_rfc3339_seconds(-1), "1969-12-31T23:59:59Z");
        assert_eq!(
            format_rfc3339_seconds(-2_208_988_800_000),
            "1900-01-01T00:00:00Z"
        );
    }

    #[test]
    fn formats_only_what_rfc3339_can_write() {
        assert_eq!(
            format_rfc3339_millis(EARLIEST_RFC3339),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(format_rfc3339_millis(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_millis(i64::MAX), "9999-12-30T22:00:00.999Z");
        assert_eq!(ok("0000-01-01T00:00:00Z"), EARLIEST_RFC3339);
    }

    #[test]
    fn formatted_times_parse_back() {
        for m in [
            0,
            -1,
            NOV_21 + 123,
            951_782_400_000,
            4_102_444_799_999,
            EARLIEST_RFC3339,
        ] {
            assert_eq!(ok(&format_rfc3339_millis(m)), m);
        }
    }

    #[test]
    fn parses_offsets() {
        assert_eq!(ok("2026-11-21T10:00:00Z"), NOV_21);
        assert_eq!(ok("2026-11-21T11:30:00+01:30"), NOV_21);
        assert_eq!(ok("2026-11-21T05:00:00-05:00"), NOV_21);
        assert_eq!(ok("2026-11-21T10:00:00-00:00"), NOV_21);
        assert_eq!(ok("2026-11-22T09:59:00+23:59"), NOV_21);
        // The colon-less offset some clients send.
        assert_eq!(ok("2026-11-21 05:00:00-0500"), NOV_21);
        // Across a day, a month and a year.
        assert_eq!(ok("2026-12-31T20:00:00-05:00"), ok("2027-01-01T01:00:00Z"));
    }

    #[test]
    fn parses_the_forms_rfc3339_allows() {
        assert_eq!(ok("2026-11-21t10:00:00z"), NOV_21);
        assert_eq!(ok("2026-11-21 10:00:00Z"), NOV_21);
        assert_eq!(ok("  2026-11-21T10:00:00Z\n"), NOV_21);
        assert_eq!(ok("2024-02-29T12:34:56Z"), 1_709_210_096_000);
        assert_eq!(ok("2000-02-29T00:00:00Z"), 951_782_400_000);
        assert_eq!(ok("1969-12-31T23:59:59.999Z"), -1);
        assert_eq!(ok("1900-01-01T00:00:00Z"), -2_208_988_800_000);
        assert_eq!(ok("9999-12-30T22:00:00Z"), 253_402_207_200_000);
    }

    #[test]
    fn keeps_milliseconds_of_any_fraction() {
        assert_eq!(ok("2026-11-21T10:00:00.5Z"), NOV_21 + 500);
        assert_eq!(ok("2026-11-21T10:00:00.05Z"), NOV_21 + 50);
        assert_eq!(ok("2026-11-21T10:00:00.123456Z"), NOV_21 + 123);
        assert_eq!(ok("2026-11-21T10:00:00.999999999999Z"), NOV_21 + 999);
        // Dropped towards the past, before 1970 too.
        assert_eq!(ok("1969-12-31T23:59:59.9999Z"), -1);
    }

    #[test]
    fn reads_a_leap_second_as_the_last_second_of_its_minute() {
        assert_eq!(ok("2016-12-31T23:59:60Z"), ok("2016-12-31T23:59:59Z"));
        assert_eq!(ok("2016-12-31T23:59:60.5Z"), ok("2016-12-31T23:59:59.5Z"));
        assert!(ok("2016-12-31T23:59:60Z") < ok("2017-01-01T00:00:00Z"));
        assert!(refused("2016-12-31T23:59:61Z").contains("second"));
    }

    #[test]
    fn refuses_what_rfc3339_does_not_allow_and_says_why() {
        let cases = [
            ("", "date"),
            ("tomorrow", "date"),
            ("2026-11-21", "'T'"),
            ("20261121T100000Z", "date"),
            ("2026-1-21T10:00:00Z", "date"),
            ("+002026-11-21T10:00:00Z", "date"),
            ("2026-11-21X10:00:00Z", "'T'"),
            ("2026-11-21T10:00Z", "HH:MM:SS"),
            ("2026-11-21T10:0a:00Z", "HH:MM:SS"),
            ("2026-11-21T10:00:00", "no offset"),
            ("2026-11-21T10:00:00.Z", "digits after"),
            ("2026-11-21T10:00:00,5Z", "expected Z"),
            ("2026-11-21T10:00:00+1:00", "+HH:MM"),
            ("2026-11-21T10:00:00+01", "+HH:MM"),
            ("2026-11-21T10:00:00+24:00", "at most 23:59"),
            ("2026-11-21T10:00:00+01:60", "at most 23:59"),
            ("2026-11-21T10:00:00Zjunk", "\"junk\" after"),
            (
                "2026-11-21T10:00:00+01:00[Europe/Paris]",
                "after the offset",
            ),
            ("2026-13-01T00:00:00Z", "month"),
            ("2026-00-01T00:00:00Z", "month"),
            ("2026-02-29T00:00:00Z", "day"),
            ("2026-04-31T00:00:00Z", "day"),
            ("2026-11-21T24:00:00Z", "hour"),
            ("2026-11-21T10:60:00Z", "minute"),
            ("9999-12-31T00:00:00Z", "range"),
        ];
        for (text, why) in cases {
            let reason = refused(text);
            assert!(
                reason.contains(why),
                "{text:?}: {reason:?} does not say {why:?}"
            );
        }
        let message = parse_rfc3339("2026-02-29T00:00:00Z")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("\"2026-02-29T00:00:00Z\" is not an RFC 3339 time"),
            "{message}"
        );
    }

    #[test]
    fn reads_the_clock_in_milliseconds() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let now = now_millis();
        assert!(now >= Millis::try_from(before).unwrap_or(Millis::MAX));
        // Later than this test was written, earlier than RFC 3339's end.
        assert!(
            now > 1_790_000_000_000 && now < 253_402_207_200_000,
            "{now}"
        );
    }
}

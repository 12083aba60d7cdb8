//! RFC 3339 timestamps (`created_at`) without a date-time dependency.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// The last second representable with a four-digit year (9999-12-31T23:59:59Z).
const MAX_SECS: i64 = 253_402_300_799;

/// Formats Unix time as RFC 3339 in UTC the way Go's `time.Time` marshals it (Ollama's
/// `created_at`): `2024-07-22T20:32:21Z`, with a fraction only when `nanos` is not zero, trailing
/// zeros trimmed (`2024-07-22T20:32:21.5Z`). Times outside years 1970..=9999 are clamped.
pub(crate) fn rfc3339(secs: i64, nanos: u32) -> String {
    let secs = secs.clamp(0, MAX_SECS);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(30);
    let _ = write!(out, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    let nanos = nanos.min(999_999_999);
    if nanos != 0 {
        let mut frac = format!("{nanos:09}");
        while frac.ends_with('0') {
            frac.pop();
        }
        out.push('.');
        out.push_str(&frac);
    }
    out.push('Z');
    out
}

/// The current time as RFC 3339, for answers that carry no upstream timestamp.
pub fn now_rfc3339() -> String {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => rfc3339(i64::try_from(d.as_secs()).unwrap_or(MAX_SECS), d.subsec_nanos()),
        Err(_) => rfc3339(0, 0),
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_721_680_341, 0), "2024-07-22T20:32:21Z");
        assert_eq!(rfc3339(1_721_680_341, 500_000_000), "2024-07-22T20:32:21.5Z");
        assert_eq!(rfc3339(1_721_680_341, 123_456_789), "2024-07-22T20:32:21.123456789Z");
        // leap day and year ends
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_199, 0), "2023-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_400, 0), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn clamps_out_of_range() {
        assert_eq!(rfc3339(-5, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX, 0), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(0, u32::MAX), "1970-01-01T00:00:00.999999999Z");
    }

    #[test]
    fn now_is_well_formed() {
        let now = now_rfc3339();
        assert!(now.starts_with("20"), "{now}");
        assert!(now.ends_with('Z'), "{now}");
    }
}

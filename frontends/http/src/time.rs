//! Timestamps in the formats the dialects use.

use std::time::Duration;

/// Go's `time.RFC3339Nano` in UTC (`2023-11-14T22:13:20.5Z`): trailing zeros
/// of the fraction are dropped, and so is the fraction when it is zero.
pub fn rfc3339_nano(since_epoch: Duration) -> String {
    let mut s = rfc3339_seconds(since_epoch);
    s.pop(); // 'Z'
    let nanos = since_epoch.subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// RFC 3339 in UTC to the second (`2023-11-14T22:13:20Z`).
pub fn rfc3339_seconds(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339_seconds(Duration::ZERO), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_seconds(Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            rfc3339_seconds(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn nanos_are_trimmed_like_go() {
        let t = Duration::new(1_700_000_000, 500_000_000);
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.5Z");
        let t = Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(
            rfc3339_nano(Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
    }
}

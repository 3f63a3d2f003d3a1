//! RFC 3339 times in UTC, as the Docker Engine writes them in its logs
//! (`2026-11-26T05:30:35.123456789Z`) and as berth writes them back: no crate of ours
//! needs more of calendars than this.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `time` as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`; times before 1970 show as 1970.
pub fn format(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_nanos()
    )
}

/// Parses a UTC time of the shape [`format`] writes; the fraction may have 0 to 9 digits,
/// and the zone must be `Z` or `+00:00`.
pub fn parse(text: &str) -> Option<SystemTime> {
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (date.next()??, date.next()??, date.next()??);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, min, s) = (clock.next()??, clock.next()??, clock.next()??);
    // Years past 9999 are no times a log holds, and would overflow a SystemTime.
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || h > 23
        || min > 59
        || s > 60
    {
        return None;
    }
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<u32>().ok()? * 10u32.pow(9 - fraction.len() as u32)
    };
    let days = u64::try_from(days_from_civil(y, m, d)).ok()?;
    let secs = days * 86_400 + h * 3600 + min * 60 + s;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_read_and_write_alike() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000000Z"),
            (951_782_400, 5, "2000-02-29T00:00:00.000000005Z"),
            (1_795_671_035, 123_456_789, "2026-11-26T05:30:35.123456789Z"),
        ];
        for (secs, nanos, text) in cases {
            let time = UNIX_EPOCH + Duration::new(secs, nanos);
            assert_eq!(format(time), text);
            assert_eq!(parse(text), Some(time));
        }
    }

    #[test]
    fn short_fractions_and_offsets_are_read() {
        let expected = UNIX_EPOCH + Duration::new(1_795_671_035, 120_000_000);
        assert_eq!(parse("2026-11-26T05:30:35.12Z"), Some(expected));
        assert_eq!(parse("2026-11-26T05:30:35.12+00:00"), Some(expected));
        assert_eq!(
            parse("2026-11-26T05:30:35Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_671_035))
        );
    }

    #[test]
    fn malformed_times_are_refused() {
        for text in [
            "",
            "2026-11-26",
            "2026-11-26T05:30:35",
            "2026-13-26T05:30:35Z",
            "2026-11-26T25:30:35Z",
            "2026-11-26T05:30:35.1234567890Z",
            "2026-11-26T05:30:35.x1Z",
            "2026-11-26T05:30:35+02:00",
            "300000000000-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}

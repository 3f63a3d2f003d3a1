//! Cron expressions, as Cloudflare's cron triggers and crontab(5) write them: five fields
//! (minute, hour, day of month, month, day of week), in UTC. Each field takes `*`, a
//! number, a range `a-b`, a step `*/n` or `a-b/n`, and lists of these; months and days of
//! the week also take their English names (`JAN`, `MON`), and 7 is Sunday as 0 is. As in
//! crontab, when both the day of month and the day of the week are restricted, a day
//! that matches either counts. `@hourly`, `@daily`, `@weekly`, `@monthly` and `@yearly`
//! stand for their usual expressions.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::timestamp::civil_from_days;

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    any_day: bool,
    any_weekday: bool,
}

/// How far ahead a tick is looked for: enough for a 29th of February.
const HORIZON_DAYS: i64 = 366 * 9;

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl FromStr for Cron {
    type Err = String;

    fn from_str(text: &str) -> Result<Cron, String> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "has {} fields; a cron expression has five: minute hour day-of-month month day-of-week, as in \"*/5 * * * *\"",
                fields.len()
            ));
        };
        let weekdays = field(weekday, "day of the week", 0, 7, &WEEKDAYS)?;
        // 7 is Sunday too.
        let weekdays = (weekdays & 0x7f) | ((weekdays >> 7) & 1);
        let cron = Cron {
            text: text.trim().to_string(),
            minutes: field(minute, "minute", 0, 59, &[])?,
            hours: field(hour, "hour", 0, 23, &[])?,
            days: field(day, "day of the month", 1, 31, &[])?,
            months: field(month, "month", 1, 12, &MONTHS)?,
            weekdays,
            any_day: day == "*",
            any_weekday: weekday == "*",
        };
        if cron.next_after(UNIX_EPOCH).is_none() {
            return Err("never happens (no month has that day); check the day of the month".into());
        }
        Ok(cron)
    }
}

/// The bits of the values one field allows, each value `v` as bit `v`.
fn field(text: &str, what: &str, low: u64, high: u64, names: &[&str]) -> Result<u64, String> {
    let value = |part: &str| -> Result<u64, String> {
        let lower = part.to_ascii_lowercase();
        if let Some(at) = names.iter().position(|n| *n == lower) {
            // Month names count from 1 (the field's low end), day names from 0.
            return Ok(at as u64 + low);
        }
        match part.parse::<u64>() {
            Ok(v) if (low..=high).contains(&v) => Ok(v),
            _ => Err(format!(
                "has {part:?} as its {what}, which is not a number from {low} to {high}{}",
                if names.is_empty() { "" } else { " or a name" }
            )),
        }
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => match step.parse::<u64>() {
                Ok(s) if s > 0 => (range, s),
                _ => {
                    return Err(format!(
                    "has {item:?} as its {what}: the step after `/` must be a whole number above 0"
                ))
                }
            },
            None => (item, 1),
        };
        let (from, to) = if range == "*" {
            (low, high)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `a/n` runs from a to the end, as in crontab.
            (v, if step > 1 { high } else { v })
        };
        if from > to {
            return Err(format!(
                "has {item:?} as its {what}: a range runs from low to high"
            ));
        }
        let mut v = from;
        while v <= to {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    /// The first tick strictly after `time`, to the minute; `None` if there is none
    /// within the next nine years.
    pub fn next_after(&self, time: SystemTime) -> Option<SystemTime> {
        let secs = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let first = secs / 60 + 1;
        let first_day = i64::try_from(first / 1440).ok()?;
        let first_minute = first % 1440;
        for day in first_day..first_day + HORIZON_DAYS {
            if !self.matches_day(day) {
                continue;
            }
            let from = if day == first_day { first_minute } else { 0 };
            for minute in from..1440 {
                if self.hours & (1 << (minute / 60)) != 0
                    && self.minutes & (1 << (minute % 60)) != 0
                {
                    let at = u64::try_from(day).ok()? * 86_400 + minute * 60;
                    return Some(UNIX_EPOCH + Duration::from_secs(at));
                }
            }
        }
        None
    }

    fn matches_day(&self, day: i64) -> bool {
        let (_, month, date) = civil_from_days(day);
        if self.months & (1 << month) == 0 {
            return false;
        }
        // 1970-01-01 was a Thursday (4).
        let weekday = (day + 4).rem_euclid(7);
        let by_date = self.days & (1 << date) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (false, true) => by_date,
            (true, false) => by_weekday,
            (false, false) => by_date || by_weekday,
        }
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

/// Where schedules read the time. [`Clock::System`] reads the machine's clock at each
/// step, so that a schedule follows a change of it. [`Clock::Tokio`] counts from a start
/// by Tokio's clock, so that tests with paused time move schedules forward too.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    Tokio {
        wall: SystemTime,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that starts at the machine's time now and moves with Tokio's clock.
    pub fn tokio() -> Clock {
        Clock::Tokio {
            wall: SystemTime::now(),
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Tokio { wall, start } => *wall + start.elapsed(),
        }
    }
}

/// Milliseconds since the Unix epoch, as the store keeps times.
pub fn to_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The inverse of [`to_ms`].
pub fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A UTC time from its parts, for tests and for people.
#[cfg(test)]
fn at(y: i64, mo: i64, d: i64, h: u64, mi: u64) -> SystemTime {
    let days = u64::try_from(crate::timestamp::days_from_civil(y, mo, d)).expect("after 1970");
    UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + mi * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(cron: &str, after: SystemTime) -> SystemTime {
        let cron: Cron = cron.parse().expect("parses");
        cron.next_after(after).expect("a next tick")
    }

    #[test]
    fn ticks_come_at_the_next_matching_minute() {
        let t = at(2026, 11, 26, 9, 3);
        assert_eq!(next("*/5 * * * *", t), at(2026, 11, 26, 9, 5));
        assert_eq!(
            next("*/5 * * * *", at(2026, 11, 26, 9, 5)),
            at(2026, 11, 26, 9, 10),
            "strictly after"
        );
        assert_eq!(next("* * * * *", t), at(2026, 11, 26, 9, 4));
        assert_eq!(next("0 0 * * *", t), at(2026, 11, 27, 0, 0));
        assert_eq!(next("@hourly", t), at(2026, 11, 26, 10, 0));
        assert_eq!(next("30 8 1 JAN *", t), at(2027, 1, 1, 8, 30));
        assert_eq!(
            next("0 12 * * mon-fri", at(2026, 11, 28, 0, 0)),
            at(2026, 11, 30, 12, 0),
            "Saturday to Monday"
        );
        assert_eq!(next("0 0 * * 7", t), at(2026, 11, 29, 0, 0), "7 is Sunday");
        assert_eq!(next("0 0 29 2 *", t), at(2028, 2, 29, 0, 0));
        assert_eq!(next("15,45 9-10 * * *", t), at(2026, 11, 26, 9, 15));
        assert_eq!(next("0 22-23/1 * * *", t), at(2026, 11, 26, 22, 0));
        assert_eq!(next("5/20 * * * *", t), at(2026, 11, 26, 9, 5));
        assert_eq!(next("59 23 31 12 *", t), at(2026, 12, 31, 23, 59));
    }

    #[test]
    fn a_restricted_day_and_weekday_match_either_as_in_crontab() {
        // The 1st of the month, or any Friday. 2026-11-27 is a Friday.
        assert_eq!(
            next("0 0 1 * fri", at(2026, 11, 26, 0, 0)),
            at(2026, 11, 27, 0, 0)
        );
        assert_eq!(
            next("0 0 1 * fri", at(2026, 11, 28, 0, 0)),
            at(2026, 12, 1, 0, 0)
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (text, says) in [
            ("* * * *", "has 4 fields"),
            ("60 * * * *", "\"60\" as its minute"),
            ("* 24 * * *", "hour"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "low to high"),
            ("* * * foo *", "month"),
            ("0 0 31 2 *", "never happens"),
            ("0 0 0 * *", "day of the month"),
        ] {
            let err = text.parse::<Cron>().expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}

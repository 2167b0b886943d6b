//! Time in Vietnam (UTC+07:00, no daylight saving) and calendar buckets.
//!
//! Every calendar computation of the product goes through here: "today", "month to
//! date", day and month buckets. Hour buckets are the same in UTC and in Vietnam time
//! because the offset is a whole number of hours, so counters are keyed by the UTC hour
//! number (`hours since 1970-01-01T00:00Z`).

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Vietnam's UTC offset in seconds.
pub const VN_OFFSET_SECS: i32 = 7 * 3600;

/// The Vietnam time zone as a fixed offset.
pub fn vn() -> FixedOffset {
    FixedOffset::east_opt(VN_OFFSET_SECS).expect("valid offset")
}

/// An hour bucket: whole hours since the Unix epoch.
pub type HourBucket = i64;

/// The hour bucket that contains `t`.
pub fn hour_of(t: DateTime<Utc>) -> HourBucket {
    t.timestamp().div_euclid(3600)
}

/// The Vietnam day (days since 1970-01-01 in UTC+7) of an hour bucket.
pub fn vn_day_of(hour: HourBucket) -> i64 {
    (hour + 7).div_euclid(24)
}

/// The first hour bucket of a Vietnam day.
pub fn vn_day_start(day: i64) -> HourBucket {
    day * 24 - 7
}

/// The start of an hour bucket.
pub fn hour_start(h: HourBucket) -> DateTime<Utc> {
    Utc.timestamp_opt(h * 3600, 0).single().expect("in range")
}

/// Granularity of a KPI time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    Day,
    Month,
}

impl Bucket {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    /// The start of the bucket containing `t`, in Vietnam time.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<FixedOffset> {
        let local = t.with_timezone(&vn());
        match self {
            Bucket::Hour => vn_midnight(local.date_naive()) + Duration::hours(local.hour() as i64),
            Bucket::Day => vn_midnight(local.date_naive()),
            Bucket::Month => vn_midnight(first_of_month(local.date_naive())),
        }
    }

    /// The start of the bucket after the one that starts at `start`.
    pub fn next(self, start: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        match self {
            Bucket::Hour => start + Duration::hours(1),
            Bucket::Day => start + Duration::days(1),
            Bucket::Month => vn_midnight(next_month(start.date_naive())),
        }
    }
}

/// Midnight of `date` in Vietnam time.
pub fn vn_midnight(date: NaiveDate) -> DateTime<FixedOffset> {
    vn().from_local_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight"))
        .single()
        .expect("fixed offsets are never ambiguous")
}

fn first_of_month(d: NaiveDate) -> NaiveDate {
    NaiveDate::from_ymd_opt(d.year(), d.month(), 1).expect("valid")
}

fn next_month(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 12 { (d.year() + 1, 1) } else { (d.year(), d.month() + 1) };
    NaiveDate::from_ymd_opt(y, m, 1).expect("valid")
}

/// The Vietnam calendar date that contains `t`.
pub fn vn_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&vn()).date_naive()
}

/// Start of today in Vietnam time.
pub fn start_of_day(now: DateTime<Utc>) -> DateTime<FixedOffset> {
    Bucket::Day.floor(now)
}

/// Start of the current month in Vietnam time ("month to date" starts here).
pub fn start_of_month(now: DateTime<Utc>) -> DateTime<FixedOffset> {
    Bucket::Month.floor(now)
}

/// Start of the current year in Vietnam time.
pub fn start_of_year(now: DateTime<Utc>) -> DateTime<FixedOffset> {
    let d = now.with_timezone(&vn()).date_naive();
    vn_midnight(NaiveDate::from_ymd_opt(d.year(), 1, 1).expect("valid"))
}

/// A period that runs up to now and rolls over at a Vietnam calendar boundary: what a
/// wall display shows live (CONTRACT.md §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LivePeriod {
    /// Since Vietnam midnight.
    Today,
    /// Month to date.
    Mtd,
    /// Year to date.
    Ytd,
}

impl LivePeriod {
    pub const ALL: [LivePeriod; 3] = [LivePeriod::Today, LivePeriod::Mtd, LivePeriod::Ytd];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LivePeriod::Today => "today",
            LivePeriod::Mtd => "mtd",
            LivePeriod::Ytd => "ytd",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The whole calendar period (day, month or year, Vietnam time) that contains
    /// `now`: `[start, end)`. Its totals are those up to now, since no event may be
    /// more than 5 minutes in the future.
    pub fn range(self, now: DateTime<Utc>) -> (DateTime<FixedOffset>, DateTime<FixedOffset>) {
        match self {
            LivePeriod::Today => {
                let start = start_of_day(now);
                (start, Bucket::Day.next(start))
            }
            LivePeriod::Mtd => {
                let start = start_of_month(now);
                (start, Bucket::Month.next(start))
            }
            LivePeriod::Ytd => {
                let start = start_of_year(now);
                let next = NaiveDate::from_ymd_opt(start.year() + 1, 1, 1).expect("valid");
                (start, vn_midnight(next))
            }
        }
    }
}

/// The Vietnam-time year that contains `t`.
pub fn vn_year(t: DateTime<Utc>) -> i32 {
    t.with_timezone(&vn()).year()
}

/// Why a period bound was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PeriodBoundError {
    #[error("`{input}` is neither an RFC 3339 timestamp nor a date YYYY-MM-DD")]
    Unparsable { input: String },
    #[error("`{input}` is outside the supported years: bounds run from 1970-01-01 to before 2200-01-01 (Vietnam time)")]
    OutOfRange { input: String },
}

/// The years a period bound may fall in, Vietnam time: from 1970-01-01 00:00 on, and
/// before 2200-01-01 00:00 (CONTRACT.md §7.1). Every instant in between is a valid
/// timestamp for Arrow, DataFusion's nanosecond literals and every calendar function.
pub const PERIOD_YEARS: std::ops::Range<i32> = 1970..2200;

/// The first instant a period bound may be, and the first it may no longer be.
pub fn period_limits() -> (DateTime<Utc>, DateTime<Utc>) {
    let midnight = |year| vn_midnight(NaiveDate::from_ymd_opt(year, 1, 1).expect("valid")).to_utc();
    (midnight(PERIOD_YEARS.start), midnight(PERIOD_YEARS.end))
}

/// Parses a period bound: an RFC 3339 timestamp, or a date `YYYY-MM-DD` meaning midnight
/// in Vietnam time. Bounds outside [`PERIOD_YEARS`] are refused, before any calendar
/// arithmetic could overflow on them.
pub fn parse_period_bound(s: &str) -> Result<DateTime<Utc>, PeriodBoundError> {
    let t = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.to_utc()
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if !PERIOD_YEARS.contains(&d.year()) {
            return Err(PeriodBoundError::OutOfRange { input: s.to_string() });
        }
        vn_midnight(d).to_utc()
    } else {
        return Err(PeriodBoundError::Unparsable { input: s.to_string() });
    };
    let (first, end) = period_limits();
    if t < first || t >= end {
        return Err(PeriodBoundError::OutOfRange { input: s.to_string() });
    }
    Ok(t)
}

/// Formats an instant as RFC 3339 in Vietnam time, e.g. `2026-11-23T00:00:00+07:00`.
pub fn fmt_vn(t: DateTime<Utc>) -> String {
    t.with_timezone(&vn()).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn day_bucket_follows_vietnam_midnight_not_utc() {
        // 16:59:59Z is 23:59:59 in Hanoi: still the same Vietnam day.
        let before = utc("2026-03-09T16:59:59Z");
        let after = utc("2026-03-09T17:00:00Z");
        assert_eq!(fmt_vn(Bucket::Day.floor(before).to_utc()), "2026-03-09T00:00:00+07:00");
        assert_eq!(fmt_vn(Bucket::Day.floor(after).to_utc()), "2026-03-10T00:00:00+07:00");
        assert_eq!(vn_date(before), NaiveDate::from_ymd_opt(2026, 3, 9).unwrap());
        assert_eq!(vn_date(after), NaiveDate::from_ymd_opt(2026, 3, 10).unwrap());
    }

    #[test]
    fn month_bucket_follows_vietnam_time_across_year_end() {
        // 2025-12-31T17:30Z is already 2026-01-01 00:30 in Vietnam.
        let t = utc("2025-12-31T17:30:00Z");
        let start = Bucket::Month.floor(t);
        assert_eq!(start.to_rfc3339(), "2026-01-01T00:00:00+07:00");
        assert_eq!(Bucket::Month.next(start).to_rfc3339(), "2026-02-01T00:00:00+07:00");
        let t = utc("2025-12-31T16:59:59Z");
        assert_eq!(Bucket::Month.floor(t).to_rfc3339(), "2025-12-01T00:00:00+07:00");
        assert_eq!(Bucket::Month.next(Bucket::Month.floor(t)).to_rfc3339(), "2026-01-01T00:00:00+07:00");
        assert_eq!(vn_year(utc("2025-12-31T17:00:00Z")), 2026);
    }

    #[test]
    fn month_next_handles_february_of_leap_and_common_years() {
        let feb = vn_midnight(NaiveDate::from_ymd_opt(2028, 2, 1).unwrap());
        let mar = Bucket::Month.next(feb);
        assert_eq!((mar - feb).num_days(), 29);
        let feb = vn_midnight(NaiveDate::from_ymd_opt(2027, 2, 1).unwrap());
        assert_eq!((Bucket::Month.next(feb) - feb).num_days(), 28);
    }

    #[test]
    fn hour_buckets_are_shared_by_utc_and_vietnam_time() {
        let t = utc("2026-03-09T16:59:59Z");
        let h = hour_of(t);
        assert_eq!(hour_start(h), utc("2026-03-09T16:00:00Z"));
        assert_eq!(Bucket::Hour.floor(t).to_utc(), hour_start(h));
        // Before the epoch, floor division still floors.
        assert_eq!(hour_of(utc("1969-12-31T23:59:59Z")), -1);
    }

    #[test]
    fn period_bounds_accept_rfc3339_and_vietnam_dates() {
        let d = parse_period_bound("2026-01-01").unwrap();
        assert_eq!(d, utc("2025-12-31T17:00:00Z"));
        let t = parse_period_bound("2026-01-01T08:00:00Z").unwrap();
        assert_eq!(t, utc("2026-01-01T08:00:00Z"));
        for bad in ["yesterday", "2026-13-01", "2026-01-01T08:00:00", "", "2026-1-1x"] {
            assert_eq!(
                parse_period_bound(bad),
                Err(PeriodBoundError::Unparsable { input: bad.into() }),
                "{bad:?}: an offset is required, dates are YYYY-MM-DD"
            );
        }
    }

    #[test]
    fn period_bounds_outside_1970_to_2199_vietnam_time_are_refused() {
        let ok = ["1970-01-01", "1969-12-31T17:00:00Z", "2199-12-31", "2199-12-31T23:59:59.999999+07:00"];
        for s in ok {
            assert!(parse_period_bound(s).is_ok(), "{s}");
        }
        let out = [
            "1969-12-31",
            "1969-12-31T16:59:59Z",
            "2200-01-01",
            "2199-12-31T17:00:00Z",
            "1600-01-01",
            "2300-01-01",
            "-262143-01-01",
            "+262142-12-31",
            "0000-01-01",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00+23:59",
        ];
        for s in out {
            assert_eq!(parse_period_bound(s), Err(PeriodBoundError::OutOfRange { input: s.into() }), "{s}");
        }
        let (first, end) = period_limits();
        assert_eq!(
            (fmt_vn(first).as_str(), fmt_vn(end).as_str()),
            ("1970-01-01T00:00:00+07:00", "2200-01-01T00:00:00+07:00")
        );
    }

    #[test]
    fn live_periods_roll_over_at_vietnam_midnight_month_and_year() {
        let range = |p: LivePeriod, t: &str| {
            let (a, b) = p.range(utc(t));
            (a.to_rfc3339(), b.to_rfc3339())
        };
        // 16:59:59Z on 30 November is 23:59:59 in Hanoi; a second later it is December.
        let before = "2026-11-30T16:59:59Z";
        let after = "2026-11-30T17:00:00Z";
        assert_eq!(
            range(LivePeriod::Today, before),
            ("2026-11-30T00:00:00+07:00".into(), "2026-12-01T00:00:00+07:00".into())
        );
        assert_eq!(
            range(LivePeriod::Today, after),
            ("2026-12-01T00:00:00+07:00".into(), "2026-12-02T00:00:00+07:00".into())
        );
        assert_eq!(
            range(LivePeriod::Mtd, before),
            ("2026-11-01T00:00:00+07:00".into(), "2026-12-01T00:00:00+07:00".into())
        );
        assert_eq!(
            range(LivePeriod::Mtd, after),
            ("2026-12-01T00:00:00+07:00".into(), "2027-01-01T00:00:00+07:00".into())
        );
        assert_eq!(
            range(LivePeriod::Ytd, after),
            ("2026-01-01T00:00:00+07:00".into(), "2027-01-01T00:00:00+07:00".into())
        );
        assert_eq!(
            range(LivePeriod::Ytd, "2026-12-31T17:00:00Z"),
            ("2027-01-01T00:00:00+07:00".into(), "2028-01-01T00:00:00+07:00".into())
        );
        assert_eq!(LivePeriod::parse("ytd"), Some(LivePeriod::Ytd));
        assert_eq!(LivePeriod::parse("week"), None);
    }

    #[test]
    fn start_of_periods_are_in_vietnam_time() {
        let now = utc("2026-11-30T18:00:00Z"); // 2026-12-01 01:00 in Vietnam
        assert_eq!(start_of_day(now).to_rfc3339(), "2026-12-01T00:00:00+07:00");
        assert_eq!(start_of_month(now).to_rfc3339(), "2026-12-01T00:00:00+07:00");
        assert_eq!(start_of_year(now).to_rfc3339(), "2026-01-01T00:00:00+07:00");
    }
}

//! Where events come from: the family of the sending system named by an event's
//! `source`, and the events committed per family over the last minute and the last
//! minutes, which the wall display shows as throughput.
//!
//! The rule (ASCII letters compared without case, on the start of `source`):
//!
//! | `source` starts with | family | key |
//! |---|---|---|
//! | `motcua` | one-stop portals (hệ thống một cửa điện tử), e.g. `motcua-bacninh` | `motcua` |
//! | `vdxp` | the national document exchange (VDXP), e.g. `vdxp`, `vdxp-01` | `vdxp` |
//! | `dvc` | public-service systems (cổng dịch vụ công), e.g. `dvc-quocgia`, `dvcqg` | `dvc` |
//! | anything else | other systems (document management, reporting, inspection, feedback, ...) | `other` |
//!
//! Time is passed in: [`Throughput`] buckets what it is told by the commit time it is
//! given, and answers for the `now` it is given.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::counters::ScopeKey;

/// The family of a sending system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceFamily {
    /// One-stop portals (một cửa điện tử).
    OneStop,
    /// The national document exchange (VDXP).
    Vdxp,
    /// Public-service systems (dịch vụ công).
    PublicService,
    Other,
}

impl SourceFamily {
    /// In the order of [`SourceFamily::index`].
    pub const ALL: [SourceFamily; 4] =
        [SourceFamily::OneStop, SourceFamily::Vdxp, SourceFamily::PublicService, SourceFamily::Other];

    /// The family of `source`, by the rule of this module.
    pub fn of(source: &str) -> Self {
        let starts = |prefix: &str| source.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix));
        if starts("motcua") {
            SourceFamily::OneStop
        } else if starts("vdxp") {
            SourceFamily::Vdxp
        } else if starts("dvc") {
            SourceFamily::PublicService
        } else {
            SourceFamily::Other
        }
    }

    /// The key in JSON: `motcua`, `vdxp`, `dvc` or `other`.
    pub fn key(self) -> &'static str {
        match self {
            SourceFamily::OneStop => "motcua",
            SourceFamily::Vdxp => "vdxp",
            SourceFamily::PublicService => "dvc",
            SourceFamily::Other => "other",
        }
    }

    /// The position in [`FamilyCounts`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A count per family, by [`SourceFamily::index`].
pub type FamilyCounts = [u64; 4];

/// Counts per scope: the nation (`None`) and every province that had events.
pub type ScopeCounts = BTreeMap<ScopeKey, FamilyCounts>;

/// The length of the moving window of [`Throughput::last_minute`], in seconds.
pub const WINDOW_SECS: i64 = 60;

/// Events committed per family and scope: by second over the last minute (a moving
/// window), and by whole minute over the last `history` minutes.
#[derive(Debug, Clone)]
pub struct Throughput {
    history: usize,
    /// By Unix second.
    seconds: BTreeMap<i64, ScopeCounts>,
    /// By Unix minute (seconds / 60).
    minutes: BTreeMap<i64, ScopeCounts>,
}

impl Throughput {
    /// Keeps whole minutes for the last `history` minutes.
    pub fn new(history: usize) -> Self {
        Self { history, seconds: BTreeMap::new(), minutes: BTreeMap::new() }
    }

    /// Counts `n` events of `family`, committed `at`, nationally and, when given, in
    /// `province`.
    pub fn add(&mut self, at: DateTime<Utc>, province: Option<&Arc<str>>, family: SourceFamily, n: u64) {
        let second = at.timestamp();
        for map in [self.seconds.entry(second).or_default(), self.minutes.entry(second.div_euclid(60)).or_default()] {
            map.entry(None).or_default()[family.index()] += n;
            if let Some(p) = province {
                map.entry(Some(p.clone())).or_default()[family.index()] += n;
            }
        }
    }

    /// Forgets what no answer at `now` or later can need.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let second = now.timestamp();
        self.seconds = self.seconds.split_off(&(second - WINDOW_SECS + 1));
        let minute = second.div_euclid(60);
        self.minutes = self.minutes.split_off(&(minute - self.history as i64));
    }

    /// The events committed in the minute up to `now` (the seconds after
    /// `now - 60 s`, up to and including `now`'s), per scope; the nation is always
    /// there.
    pub fn last_minute(&self, now: DateTime<Utc>) -> ScopeCounts {
        let second = now.timestamp();
        let mut out = ScopeCounts::from([(None, FamilyCounts::default())]);
        for counts in self.seconds.range(second - WINDOW_SECS + 1..=second).map(|(_, c)| c) {
            add_into(&mut out, counts);
        }
        out
    }

    /// The last `history` whole minutes before `now`'s, oldest first, each with its
    /// Unix minute and its counts per scope (quiet minutes empty).
    pub fn minutes(&self, now: DateTime<Utc>) -> Vec<(i64, ScopeCounts)> {
        let current = now.timestamp().div_euclid(60);
        (current - self.history as i64..current)
            .map(|m| (m, self.minutes.get(&m).cloned().unwrap_or_default()))
            .collect()
    }
}

fn add_into(out: &mut ScopeCounts, counts: &ScopeCounts) {
    for (scope, c) in counts {
        let o = out.entry(scope.clone()).or_default();
        for (a, b) in o.iter_mut().zip(c) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn a_source_belongs_to_the_family_its_name_starts_with_whatever_the_case() {
        use SourceFamily::*;
        for (source, family) in [
            ("motcua-bacninh", OneStop),
            ("MotCua_HN", OneStop),
            ("motcua", OneStop),
            ("vdxp", Vdxp),
            ("VDXP-01", Vdxp),
            ("dvc-quocgia", PublicService),
            ("dvcqg", PublicService),
            ("DVC", PublicService),
            ("qlvb-01", Other),
            ("hethong-baocao", Other),
            ("pakn-79", Other),
            ("mot", Other),
            ("", Other),
            ("cổng-dvc", Other),
            ("dv", Other),
            // A multi-byte character where the prefix would end is no panic.
            ("motcu\u{1ea1}", Other),
            ("vđxp", Other),
        ] {
            assert_eq!(SourceFamily::of(source), family, "{source:?}");
        }
        let keys: Vec<&str> = SourceFamily::ALL.iter().map(|f| f.key()).collect();
        assert_eq!(keys, ["motcua", "vdxp", "dvc", "other"]);
        assert!(SourceFamily::ALL.iter().enumerate().all(|(i, f)| f.index() == i));
    }

    #[test]
    fn the_last_minute_is_a_moving_window_of_sixty_seconds_nationally_and_per_province() {
        let mut t60 = Throughput::new(30);
        let hn: Arc<str> = "01".into();
        t60.add(t("2026-12-02T06:30:00Z"), Some(&hn), SourceFamily::OneStop, 5);
        t60.add(t("2026-12-02T06:30:30Z"), None, SourceFamily::Vdxp, 2);
        t60.add(t("2026-12-02T06:30:59Z"), Some(&hn), SourceFamily::Other, 1);

        let at = t60.last_minute(t("2026-12-02T06:30:59Z"));
        assert_eq!(at[&None], [5, 2, 0, 1]);
        assert_eq!(at[&Some(hn.clone())], [5, 0, 0, 1]);
        // One second later the first second has left the window.
        let later = t60.last_minute(t("2026-12-02T06:31:00Z"));
        assert_eq!(later[&None], [0, 2, 0, 1]);
        // Quiet: the nation is still there, with zeros.
        let quiet = t60.last_minute(t("2026-12-02T07:00:00Z"));
        assert_eq!(quiet, ScopeCounts::from([(None, [0; 4])]));
    }

    #[test]
    fn whole_minutes_are_kept_for_the_history_and_pruning_keeps_the_answers() {
        let mut tp = Throughput::new(3);
        for (at, n) in [("2026-12-02T06:27:10Z", 1), ("2026-12-02T06:28:59Z", 2), ("2026-12-02T06:30:00Z", 4)] {
            tp.add(t(at), None, SourceFamily::PublicService, n);
        }
        let now = t("2026-12-02T06:30:20Z");
        let minutes = tp.minutes(now);
        let nation: Vec<(i64, u64)> = minutes.iter().map(|(m, c)| (*m, c.get(&None).map_or(0, |f| f[2]))).collect();
        let m0 = t("2026-12-02T06:27:00Z").timestamp() / 60;
        // 06:27, 06:28 and 06:29 (quiet); 06:30 is not over yet.
        assert_eq!(nation, [(m0, 1), (m0 + 1, 2), (m0 + 2, 0)]);

        let (before_last, before_minutes) = (tp.last_minute(now), tp.minutes(now));
        tp.prune(now);
        assert_eq!((tp.last_minute(now), tp.minutes(now)), (before_last, before_minutes));
        assert_eq!(tp.seconds.len(), 1, "only 06:30:00 is within a minute of now");
        assert_eq!(tp.minutes.len(), 3, "06:27 to 06:30");
    }
}

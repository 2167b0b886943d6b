//! Additive KPI counters: numerator and denominator per KPI, hour bucket and dimension
//! tuple. Counters merge by addition, so any period and any slice is a sum, and the
//! ratio is computed last (never an average of ratios).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::{AddAssign, Range};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::time::{Bucket, HourBucket, hour_start};

/// A numerator and a denominator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub numerator: u64,
    pub denominator: u64,
}

impl Count {
    pub fn new(numerator: u64, denominator: u64) -> Self {
        Self { numerator, denominator }
    }

    /// `numerator / denominator`, or `None` when the denominator is 0.
    pub fn ratio(self) -> Option<f64> {
        (self.denominator > 0).then(|| self.numerator as f64 / self.denominator as f64)
    }

    pub fn is_zero(self) -> bool {
        self.numerator == 0 && self.denominator == 0
    }
}

impl AddAssign for Count {
    fn add_assign(&mut self, rhs: Self) {
        self.numerator += rhs.numerator;
        self.denominator += rhs.denominator;
    }
}

/// The dimensions a KPI can be sliced by (CONTRACT.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dim {
    ProvinceCode,
    CommuneCode,
    AgencyCode,
    Level,
    Source,
    ProcedureCode,
    Channel,
}

impl Dim {
    pub const ALL: [Dim; 7] = [
        Dim::ProvinceCode,
        Dim::CommuneCode,
        Dim::AgencyCode,
        Dim::Level,
        Dim::Source,
        Dim::ProcedureCode,
        Dim::Channel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dim::ProvinceCode => "province_code",
            Dim::CommuneCode => "commune_code",
            Dim::AgencyCode => "agency_code",
            Dim::Level => "level",
            Dim::Source => "source",
            Dim::ProcedureCode => "procedure_code",
            Dim::Channel => "channel",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// `procedure_code` and `channel` exist only for dossier KPIs.
    pub fn dossier_only(self) -> bool {
        matches!(self, Dim::ProcedureCode | Dim::Channel)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// An interned dimension value; `None` when the event has no such field.
pub type DimValue = Option<Arc<str>>;

/// The dimension values of one event, indexed by [`Dim::index`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DimValues(pub [DimValue; 7]);

impl DimValues {
    pub fn get(&self, d: Dim) -> Option<&str> {
        self.0[d.index()].as_deref()
    }
}

/// A conjunction of `dim = value` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DimFilter(pub Vec<(Dim, String)>);

impl DimFilter {
    pub fn matches(&self, v: &DimValues) -> bool {
        self.0.iter().all(|(d, want)| v.get(*d) == Some(want.as_str()))
    }
}

/// The key of one output row of a series query: bucket start (if bucketed) and the
/// group-by values in the requested order.
pub type SeriesKey = (Option<DateTime<Utc>>, Vec<DimValue>);

/// Counter deltas of one committed batch: what gets added to [`Counters`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterDelta {
    /// (kpi index, hour, dimensions) -> count.
    pub counts: HashMap<(usize, HourBucket, DimValues), Count>,
    /// Per hour: the earliest and latest `occurred_at` (microseconds) of any event.
    pub spans: HashMap<HourBucket, (i64, i64)>,
}

impl CounterDelta {
    pub fn add(&mut self, kpi: usize, hour: HourBucket, dims: DimValues, count: Count) {
        *self.counts.entry((kpi, hour, dims)).or_default() += count;
    }

    pub fn observe(&mut self, hour: HourBucket, occurred_us: i64) {
        let span = self.spans.entry(hour).or_insert((occurred_us, occurred_us));
        span.0 = span.0.min(occurred_us);
        span.1 = span.1.max(occurred_us);
    }

    pub fn merge(&mut self, other: CounterDelta) {
        for ((k, h, d), c) in other.counts {
            self.add(k, h, d, c);
        }
        for (h, (lo, hi)) in other.spans {
            self.observe(h, lo);
            self.observe(h, hi);
        }
    }
}

/// Live KPI counters for every KPI of the catalog, by hour and dimension tuple.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Index = KPI index in the catalog.
    per_kpi: Vec<BTreeMap<HourBucket, HashMap<DimValues, Count>>>,
    spans: BTreeMap<HourBucket, (i64, i64)>,
}

impl Counters {
    pub fn new(kpis: usize) -> Self {
        Self { per_kpi: vec![BTreeMap::new(); kpis], spans: BTreeMap::new() }
    }

    /// Adds a delta. Addition is commutative and associative, so the order in which
    /// committed batches are applied does not matter.
    pub fn apply(&mut self, delta: &CounterDelta) {
        for ((kpi, hour, dims), c) in &delta.counts {
            if c.is_zero() {
                continue;
            }
            *self.per_kpi[*kpi].entry(*hour).or_default().entry(dims.clone()).or_default() += *c;
        }
        for (h, (lo, hi)) in &delta.spans {
            let s = self.spans.entry(*h).or_insert((*lo, *hi));
            s.0 = s.0.min(*lo);
            s.1 = s.1.max(*hi);
        }
    }

    /// The earliest and latest `occurred_at` (µs) of any event in an hour.
    pub fn span(&self, hour: HourBucket) -> Option<(i64, i64)> {
        self.spans.get(&hour).copied()
    }

    /// Sums a KPI's counters over whole hours, filtered, grouped by `group_by` and,
    /// if given, by calendar bucket (Vietnam time).
    pub fn series(
        &self,
        kpi: usize,
        hours: Range<HourBucket>,
        filter: &DimFilter,
        group_by: &[crate::counters::Dim],
        bucket: Option<Bucket>,
    ) -> BTreeMap<SeriesKey, Count> {
        let mut out: BTreeMap<SeriesKey, Count> = BTreeMap::new();
        if hours.start >= hours.end {
            return out;
        }
        for (hour, by_dims) in self.per_kpi[kpi].range(hours) {
            let b = bucket.map(|b| b.floor(hour_start(*hour)).to_utc());
            for (dims, c) in by_dims {
                if !filter.matches(dims) {
                    continue;
                }
                let key = group_by.iter().map(|d| dims.0[d.index()].clone()).collect();
                *out.entry((b, key)).or_default() += *c;
            }
        }
        out
    }

    /// The whole-hour total of a KPI, filtered.
    pub fn total(&self, kpi: usize, hours: Range<HourBucket>, filter: &DimFilter) -> Count {
        self.series(kpi, hours, filter, &[], None).into_values().fold(Count::default(), |mut a, c| {
            a += c;
            a
        })
    }
}

/// The scope of a live total: the whole country, or one province.
pub type ScopeKey = Option<Arc<str>>;

/// Running totals of every KPI over one period of whole hours, nationally and per
/// province, kept up to date delta by delta. It remembers which (KPI, scope) totals
/// changed since they were last taken, so that a push to wall displays costs
/// O(changes), not a scan of the period's counters.
#[derive(Debug, Clone, Default)]
pub struct PeriodTotals {
    hours: Range<HourBucket>,
    totals: HashMap<(usize, ScopeKey), Count>,
    dirty: HashSet<(usize, ScopeKey)>,
}

impl PeriodTotals {
    /// Totals over `hours`, computed from `counters`; every total counts as changed.
    pub fn new(hours: Range<HourBucket>, counters: &Counters) -> Self {
        let mut t = Self { hours: hours.clone(), ..Self::default() };
        for (kpi, by_hour) in counters.per_kpi.iter().enumerate() {
            for by_dims in by_hour.range(hours.clone()).map(|(_, m)| m) {
                for (dims, c) in by_dims {
                    t.add(kpi, dims, *c);
                }
            }
        }
        t
    }

    pub fn hours(&self) -> Range<HourBucket> {
        self.hours.clone()
    }

    /// Adds the part of a delta that falls inside the period.
    pub fn apply(&mut self, delta: &CounterDelta) {
        for ((kpi, hour, dims), c) in &delta.counts {
            if self.hours.contains(hour) && !c.is_zero() {
                self.add(*kpi, dims, *c);
            }
        }
    }

    fn add(&mut self, kpi: usize, dims: &DimValues, c: Count) {
        let province = dims.0[Dim::ProvinceCode.index()].clone();
        for scope in [None, province].into_iter().collect::<HashSet<_>>() {
            *self.totals.entry((kpi, scope.clone())).or_default() += c;
            self.dirty.insert((kpi, scope));
        }
    }

    /// The current total of one KPI and scope.
    pub fn get(&self, kpi: usize, scope: &ScopeKey) -> Count {
        self.totals.get(&(kpi, scope.clone())).copied().unwrap_or_default()
    }

    /// Every total, e.g. for a snapshot.
    pub fn all(&self) -> impl Iterator<Item = (usize, &ScopeKey, Count)> {
        self.totals.iter().map(|((k, s), c)| (*k, s, *c))
    }

    /// The totals that changed since the last call, in a stable order.
    pub fn take_changed(&mut self) -> Vec<(usize, ScopeKey, Count)> {
        let mut out: Vec<(usize, ScopeKey, Count)> = self
            .dirty
            .drain()
            .map(|(k, s)| (k, s.clone(), self.totals.get(&(k, s)).copied().unwrap_or_default()))
            .collect();
        out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dims(p: &str, ch: Option<&str>) -> DimValues {
        let mut d = DimValues::default();
        d.0[Dim::ProvinceCode.index()] = Some(p.into());
        d.0[Dim::Channel.index()] = ch.map(Into::into);
        d
    }

    #[test]
    fn ratio_is_null_when_denominator_is_zero() {
        assert_eq!(Count::new(0, 0).ratio(), None);
        assert_eq!(Count::new(1, 4).ratio(), Some(0.25));
    }

    #[test]
    fn a_slice_is_the_sum_of_numerators_over_the_sum_of_denominators() {
        let mut d = CounterDelta::default();
        d.add(0, 10, dims("01", Some("online")), Count::new(1, 1));
        d.add(0, 10, dims("79", Some("post")), Count::new(0, 9));
        let mut c = Counters::new(1);
        c.apply(&d);
        let total = c.total(0, 0..100, &DimFilter::default());
        // The average of the two ratios would be 0.5; the correct ratio is 0.1.
        assert_eq!(total, Count::new(1, 10));
        assert_eq!(total.ratio(), Some(0.1));
        let only_01 = c.total(0, 0..100, &DimFilter(vec![(Dim::ProvinceCode, "01".into())]));
        assert_eq!(only_01, Count::new(1, 1));
        assert_eq!(c.total(0, 11..100, &DimFilter::default()), Count::default(), "hour 10 excluded");
    }

    #[test]
    fn series_groups_by_vietnam_day_and_dimension() {
        let mut d = CounterDelta::default();
        // Hour 16:00Z and 17:00Z on the same UTC day are different Vietnam days.
        let h16 = crate::time::hour_of("2026-03-09T16:00:00Z".parse().unwrap());
        d.add(0, h16, dims("01", None), Count::new(1, 2));
        d.add(0, h16 + 1, dims("01", None), Count::new(2, 2));
        d.add(0, h16 + 2, dims("79", None), Count::new(0, 1));
        let mut c = Counters::new(1);
        c.apply(&d);
        let s = c.series(0, h16..h16 + 3, &DimFilter::default(), &[Dim::ProvinceCode], Some(Bucket::Day));
        let rows: Vec<(String, Option<String>, Count)> = s
            .into_iter()
            .map(|((b, k), c)| (crate::time::fmt_vn(b.unwrap()), k[0].as_deref().map(String::from), c))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("2026-03-09T00:00:00+07:00".into(), Some("01".into()), Count::new(1, 2)),
                ("2026-03-10T00:00:00+07:00".into(), Some("01".into()), Count::new(2, 2)),
                ("2026-03-10T00:00:00+07:00".into(), Some("79".into()), Count::new(0, 1)),
            ]
        );
    }

    #[test]
    fn period_totals_follow_deltas_inside_the_period_and_report_what_changed() {
        let mut before = CounterDelta::default();
        before.add(0, 5, dims("01", None), Count::new(1, 2));
        before.add(0, 99, dims("01", None), Count::new(7, 7)); // outside the period
        let mut c = Counters::new(2);
        c.apply(&before);
        let mut t = PeriodTotals::new(0..10, &c);
        let national: ScopeKey = None;
        let p01: ScopeKey = Some("01".into());
        assert_eq!(t.get(0, &national), Count::new(1, 2));
        assert_eq!(t.take_changed(), vec![(0, None, Count::new(1, 2)), (0, p01.clone(), Count::new(1, 2))]);
        assert!(t.take_changed().is_empty(), "nothing changed since");

        let mut late = CounterDelta::default();
        late.add(1, 3, dims("79", None), Count::new(0, 1)); // a late event in a past hour
        late.add(1, 10, dims("79", None), Count::new(5, 5)); // the next period
        t.apply(&late);
        let p79: ScopeKey = Some("79".into());
        assert_eq!(t.take_changed(), vec![(1, None, Count::new(0, 1)), (1, p79.clone(), Count::new(0, 1))]);
        assert_eq!(t.get(0, &p01), Count::new(1, 2), "other scopes untouched");
    }

    proptest! {
        /// Applying deltas in any split and order gives the same counters as applying
        /// their merge once: the property that makes rebuild-after-restart exact.
        #[test]
        fn counter_merge_is_order_independent(entries in prop::collection::vec((0usize..2, 0i64..48, 0u8..3, 0u64..5, 0u64..5), 0..60), split in 0usize..60) {
            let deltas: Vec<CounterDelta> = entries.iter().map(|(k, h, p, n, extra)| {
                let mut d = CounterDelta::default();
                d.add(*k, *h, dims(&format!("0{p}"), None), Count::new(*n, n + extra));
                d.observe(*h, *h * 3_600_000_000 + *n as i64);
                d
            }).collect();
            let split = split.min(deltas.len());
            let mut merged = CounterDelta::default();
            for d in deltas.iter().cloned() { merged.merge(d); }
            let mut one = Counters::new(2);
            one.apply(&merged);
            let mut many = Counters::new(2);
            for d in deltas[split..].iter().chain(deltas[..split].iter()) { many.apply(d); }
            for k in 0..2 {
                prop_assert_eq!(
                    one.series(k, 0..48, &DimFilter::default(), &[Dim::ProvinceCode], Some(Bucket::Hour)),
                    many.series(k, 0..48, &DimFilter::default(), &[Dim::ProvinceCode], Some(Bucket::Hour)));
            }
            for h in 0..48 { prop_assert_eq!(one.span(h), many.span(h)); }
        }
    }
}

//! Additive KPI counters: numerator and denominator per KPI, hour bucket and dimension
//! tuple. Counters merge by addition, so any period and any slice is a sum, and the
//! ratio is computed last (never an average of ratios).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::{AddAssign, Range};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::time::{Bucket, HourBucket, hour_start, vn_day_of, vn_day_start};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

/// What a set of events adds to one counter: the count, and the earliest and latest
/// `occurred_at` (µs) of the events it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollup {
    pub count: Count,
    pub first_us: i64,
    pub last_us: i64,
}

impl Rollup {
    pub fn merge(&mut self, other: Rollup) {
        self.count += other.count;
        self.first_us = self.first_us.min(other.first_us);
        self.last_us = self.last_us.max(other.last_us);
    }
}

/// Counter deltas of committed events, by (KPI index, hour, dimensions): the rows of
/// the `kpi_hourly` rollup table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterDelta {
    pub rows: HashMap<(usize, HourBucket, DimValues), Rollup>,
}

impl CounterDelta {
    /// Counts one event that occurred at `occurred_us`.
    pub fn add(&mut self, kpi: usize, hour: HourBucket, dims: DimValues, count: Count, occurred_us: i64) {
        self.add_rollup(kpi, hour, dims, Rollup { count, first_us: occurred_us, last_us: occurred_us });
    }

    pub fn add_rollup(&mut self, kpi: usize, hour: HourBucket, dims: DimValues, r: Rollup) {
        match self.rows.entry((kpi, hour, dims)) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(r),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(r);
            }
        }
    }

    pub fn merge(&mut self, other: CounterDelta) {
        for ((k, h, d), r) in other.rows {
            self.add_rollup(k, h, d, r);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows projected on the province, as the cube and period totals take them.
    pub fn cube_rows(&self) -> Vec<CubeRow> {
        self.rows
            .iter()
            .map(|((kpi, hour, dims), r)| CubeRow {
                kpi: *kpi,
                hour: *hour,
                province: dims.0[Dim::ProvinceCode.index()].clone(),
                rollup: *r,
            })
            .collect()
    }
}

/// One rollup row projected on the province: what the [`ProvinceCube`] adds up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CubeRow {
    pub kpi: usize,
    pub hour: HourBucket,
    pub province: DimValue,
    pub rollup: Rollup,
}

/// One KPI's counters in one hour: a dense array indexed by province slot, and the
/// earliest and latest event time the hour's counts cover.
#[derive(Debug, Clone)]
struct HourCell {
    counts: Box<[Count]>,
    span: (i64, i64),
}

/// Which provinces a cube query covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvinceSel<'a> {
    All,
    One(&'a str),
}

/// The in-memory KPI counters: per KPI and hour, one count per province slot. Slot 0
/// holds events without a province (central level); slots 1.. the provinces, in the
/// order given, plus any code seen later (province codes are validated against the
/// reference data, so that never happens in practice, but the cube stays exact if it
/// does). A year of 15 KPIs is 15 × 8,760 × 35 counts, about 80 MB, whatever the
/// number of events; summing a year for one KPI is 300k additions.
///
/// It answers every query whose filters and groups use at most the province; other
/// dimensions are answered from the persisted rollups.
#[derive(Debug, Clone, Default)]
pub struct ProvinceCube {
    provinces: Vec<Arc<str>>,
    slots: HashMap<Arc<str>, usize>,
    per_kpi: Vec<BTreeMap<HourBucket, HourCell>>,
    /// The same counts per Vietnam day (see [`vn_day_of`]), so that a year is 365
    /// arrays and not 8,760.
    per_kpi_day: Vec<BTreeMap<i64, Box<[Count]>>>,
}

fn add_at(counts: &mut Box<[Count]>, slot: usize, width: usize, c: Count) {
    if counts.len() <= slot {
        let mut grown = counts.to_vec();
        grown.resize(width, Count::default());
        *counts = grown.into_boxed_slice();
    }
    counts[slot] += c;
}

impl ProvinceCube {
    pub fn new(kpis: usize, provinces: impl IntoIterator<Item = Arc<str>>) -> Self {
        let mut cube =
            Self { per_kpi: vec![BTreeMap::new(); kpis], per_kpi_day: vec![BTreeMap::new(); kpis], ..Self::default() };
        for p in provinces {
            cube.slot_or_insert(&p);
        }
        cube
    }

    fn width(&self) -> usize {
        self.provinces.len() + 1
    }

    fn slot_or_insert(&mut self, p: &Arc<str>) -> usize {
        if let Some(s) = self.slots.get(p) {
            return *s;
        }
        self.provinces.push(p.clone());
        self.slots.insert(p.clone(), self.provinces.len());
        self.provinces.len()
    }

    /// The province of a slot (`None` for slot 0).
    fn province_of(&self, slot: usize) -> DimValue {
        slot.checked_sub(1).map(|i| self.provinces[i].clone())
    }

    /// Adds rows. Addition is commutative and associative, so the order in which
    /// commits are applied does not matter.
    pub fn apply(&mut self, rows: &[CubeRow]) {
        for row in rows {
            let slot = match &row.province {
                None => 0,
                Some(p) => self.slot_or_insert(p),
            };
            let width = self.width();
            let cell = self.per_kpi[row.kpi].entry(row.hour).or_insert_with(|| HourCell {
                counts: vec![Count::default(); width].into_boxed_slice(),
                span: (row.rollup.first_us, row.rollup.last_us),
            });
            add_at(&mut cell.counts, slot, width, row.rollup.count);
            cell.span.0 = cell.span.0.min(row.rollup.first_us);
            cell.span.1 = cell.span.1.max(row.rollup.last_us);
            let day = self.per_kpi_day[row.kpi]
                .entry(vn_day_of(row.hour))
                .or_insert_with(|| vec![Count::default(); width].into_boxed_slice());
            add_at(day, slot, width, row.rollup.count);
        }
    }

    /// The province of each slot from 1 on (slot 0 is events without a province).
    pub fn provinces(&self) -> &[Arc<str>] {
        &self.provinces
    }

    /// Every hour cell: (KPI index, hour, event-time span, counts by slot). What a
    /// snapshot of the cube holds; [`ProvinceCube::add_cell`] adds one back.
    pub fn cells(&self) -> impl Iterator<Item = (usize, HourBucket, (i64, i64), &[Count])> + '_ {
        self.per_kpi
            .iter()
            .enumerate()
            .flat_map(|(kpi, hours)| hours.iter().map(move |(h, c)| (kpi, *h, c.span, &*c.counts)))
    }

    /// Adds one hour cell's counts by slot (slot 0: no province, slot `i`: the `i`-th
    /// of [`ProvinceCube::provinces`]) and widens its span, as [`ProvinceCube::apply`]
    /// adds rows. `None` if a KPI index or a slot is outside the cube.
    pub fn add_cell(&mut self, kpi: usize, hour: HourBucket, span: (i64, i64), counts: &[Count]) -> Option<()> {
        let width = self.width();
        if kpi >= self.per_kpi.len() || counts.len() > width {
            return None;
        }
        let cell = self.per_kpi[kpi]
            .entry(hour)
            .or_insert_with(|| HourCell { counts: vec![Count::default(); width].into_boxed_slice(), span });
        let day = self.per_kpi_day[kpi]
            .entry(vn_day_of(hour))
            .or_insert_with(|| vec![Count::default(); width].into_boxed_slice());
        for (slot, c) in counts.iter().enumerate().filter(|(_, c)| !c.is_zero()) {
            add_at(&mut cell.counts, slot, width, *c);
            add_at(day, slot, width, *c);
        }
        cell.span = (cell.span.0.min(span.0), cell.span.1.max(span.1));
        Some(())
    }

    /// The earliest and latest `occurred_at` (µs) of the events a KPI counts in an hour.
    pub fn span(&self, kpi: usize, hour: HourBucket) -> Option<(i64, i64)> {
        self.per_kpi[kpi].get(&hour).map(|c| c.span)
    }

    /// The whole-hour total of a KPI over `hours`, for all provinces or one.
    pub fn total(&self, kpi: usize, hours: Range<HourBucket>, sel: ProvinceSel<'_>) -> Count {
        let mut total = Count::default();
        if hours.start >= hours.end {
            return total;
        }
        let slot = match sel {
            ProvinceSel::All => None,
            ProvinceSel::One(p) => match self.slots.get(p) {
                Some(s) => Some(*s),
                None => return total,
            },
        };
        for cell in self.per_kpi[kpi].range(hours).map(|(_, c)| c) {
            match slot {
                Some(s) => total += cell.counts.get(s).copied().unwrap_or_default(),
                None => cell.counts.iter().for_each(|c| total += *c),
            }
        }
        total
    }

    /// Sums a KPI's counters over whole hours for all provinces or one, grouped by
    /// province if asked and, if given, by calendar bucket (Vietnam time). Rows with
    /// nothing counted are left out.
    pub fn series(
        &self,
        kpi: usize,
        hours: Range<HourBucket>,
        sel: ProvinceSel<'_>,
        by_province: bool,
        bucket: Option<Bucket>,
    ) -> BTreeMap<SeriesKey, Count> {
        let mut out: BTreeMap<SeriesKey, Count> = BTreeMap::new();
        if hours.start >= hours.end {
            return out;
        }
        let only = match sel {
            ProvinceSel::All => None,
            ProvinceSel::One(p) => match self.slots.get(p) {
                Some(s) => Some(*s),
                None => return out,
            },
        };
        let width = self.width();
        // The current bucket: its start and the first hour after it.
        let mut current: Option<(Option<DateTime<Utc>>, HourBucket)> = None;
        let mut acc = vec![Count::default(); width];
        let flush = |out: &mut BTreeMap<SeriesKey, Count>, key: Option<DateTime<Utc>>, acc: &mut [Count]| {
            if by_province {
                for (slot, c) in acc.iter_mut().enumerate() {
                    if !c.is_zero() {
                        *out.entry((key, vec![self.province_of(slot)])).or_default() += *c;
                    }
                    *c = Count::default();
                }
            } else {
                let mut sum = Count::default();
                for c in acc.iter_mut() {
                    sum += *c;
                    *c = Count::default();
                }
                if !sum.is_zero() {
                    *out.entry((key, vec![])).or_default() += sum;
                }
            }
        };
        // Whole Vietnam days come from the day arrays, the hours around them from the
        // hour arrays; day and month buckets never split a Vietnam day.
        let (d0, d1) = (vn_day_of(hours.start + 23), vn_day_of(hours.end));
        let by_day = bucket != Some(Bucket::Hour) && d0 < d1;
        let hour_cells = |r: Range<HourBucket>| self.per_kpi[kpi].range(r).map(|(h, c)| (*h, &c.counts[..]));
        let cells: Box<dyn Iterator<Item = (HourBucket, &[Count])>> = if by_day {
            let days = self.per_kpi_day[kpi].range(d0..d1).map(|(d, c)| (vn_day_start(*d), &c[..]));
            Box::new(
                hour_cells(hours.start..vn_day_start(d0)).chain(days).chain(hour_cells(vn_day_start(d1)..hours.end)),
            )
        } else {
            Box::new(hour_cells(hours))
        };
        for (hour, counts) in cells {
            let hour = &hour;
            if current.is_none_or(|(_, end)| *hour >= end) {
                if let Some((key, _)) = current {
                    flush(&mut out, key, &mut acc);
                }
                current = Some(match bucket {
                    None => (None, HourBucket::MAX),
                    Some(b) => {
                        let start = b.floor(hour_start(*hour));
                        (Some(start.to_utc()), crate::time::hour_of(b.next(start).to_utc()))
                    }
                });
            }
            match only {
                Some(s) => acc[s] += counts.get(s).copied().unwrap_or_default(),
                None => {
                    for (a, c) in acc.iter_mut().zip(counts.iter()) {
                        *a += *c;
                    }
                }
            }
        }
        if let Some((key, _)) = current {
            flush(&mut out, key, &mut acc);
        }
        out
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
    /// Totals over `hours`, computed from the cube; every total counts as changed.
    pub fn new(hours: Range<HourBucket>, cube: &ProvinceCube) -> Self {
        let mut t = Self { hours: hours.clone(), ..Self::default() };
        for kpi in 0..cube.per_kpi.len() {
            let by_province = cube.series(kpi, hours.clone(), ProvinceSel::All, true, None);
            for ((_, key), c) in by_province {
                t.add(kpi, key.into_iter().next().flatten(), c);
            }
        }
        t
    }

    pub fn hours(&self) -> Range<HourBucket> {
        self.hours.clone()
    }

    /// Adds the rows that fall inside the period.
    pub fn apply(&mut self, rows: &[CubeRow]) {
        for row in rows {
            if self.hours.contains(&row.hour) && !row.rollup.count.is_zero() {
                self.add(row.kpi, row.province.clone(), row.rollup.count);
            }
        }
    }

    fn add(&mut self, kpi: usize, province: ScopeKey, c: Count) {
        let national: ScopeKey = None;
        for scope in std::iter::once(national).chain(province.map(Some)) {
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

    fn cube_of(delta: &CounterDelta, kpis: usize) -> ProvinceCube {
        let mut c = ProvinceCube::new(kpis, ["01", "79"].map(Arc::<str>::from));
        c.apply(&delta.cube_rows());
        c
    }

    fn row(kpi: usize, hour: HourBucket, p: Option<&str>, n: u64, d: u64) -> CubeRow {
        let at = hour * 3_600_000_000;
        CubeRow {
            kpi,
            hour,
            province: p.map(Into::into),
            rollup: Rollup { count: Count::new(n, d), first_us: at, last_us: at },
        }
    }

    #[test]
    fn ratio_is_null_when_denominator_is_zero() {
        assert_eq!(Count::new(0, 0).ratio(), None);
        assert_eq!(Count::new(1, 4).ratio(), Some(0.25));
    }

    #[test]
    fn a_delta_aggregates_by_key_and_keeps_the_event_time_span() {
        let mut d = CounterDelta::default();
        d.add(0, 10, dims("01", Some("online")), Count::new(1, 1), 36_000_000_000 + 5);
        d.add(0, 10, dims("01", Some("online")), Count::new(0, 1), 36_000_000_000 + 2);
        d.add(0, 10, dims("01", Some("post")), Count::new(0, 1), 36_000_000_000 + 9);
        assert_eq!(d.rows.len(), 2);
        let r = d.rows[&(0, 10, dims("01", Some("online")))];
        assert_eq!(r, Rollup { count: Count::new(1, 2), first_us: 36_000_000_002, last_us: 36_000_000_005 });
    }

    #[test]
    fn a_slice_is_the_sum_of_numerators_over_the_sum_of_denominators() {
        let mut d = CounterDelta::default();
        d.add(0, 10, dims("01", Some("online")), Count::new(1, 1), 0);
        d.add(0, 10, dims("79", Some("post")), Count::new(0, 9), 0);
        let c = cube_of(&d, 1);
        let total = c.total(0, 0..100, ProvinceSel::All);
        // The average of the two ratios would be 0.5; the correct ratio is 0.1.
        assert_eq!(total, Count::new(1, 10));
        assert_eq!(total.ratio(), Some(0.1));
        assert_eq!(c.total(0, 0..100, ProvinceSel::One("01")), Count::new(1, 1));
        assert_eq!(c.total(0, 0..100, ProvinceSel::One("02")), Count::default(), "no such province");
        assert_eq!(c.total(0, 11..100, ProvinceSel::All), Count::default(), "hour 10 excluded");
    }

    #[test]
    fn events_without_a_province_and_unlisted_provinces_are_counted_exactly() {
        let mut c = ProvinceCube::new(1, ["01"].map(Arc::<str>::from));
        c.apply(&[row(0, 5, None, 1, 2), row(0, 5, Some("01"), 1, 1)]);
        // A province the cube was not told about gets a slot of its own; older hours
        // keep their narrower arrays.
        c.apply(&[row(0, 6, Some("99"), 3, 3), row(0, 5, Some("99"), 0, 4)]);
        assert_eq!(c.total(0, 0..10, ProvinceSel::All), Count::new(5, 10));
        assert_eq!(c.total(0, 0..10, ProvinceSel::One("99")), Count::new(3, 7));
        let s = c.series(0, 0..10, ProvinceSel::All, true, None);
        let rows: Vec<(Option<String>, Count)> =
            s.into_iter().map(|((_, k), c)| (k[0].as_deref().map(String::from), c)).collect();
        assert_eq!(
            rows,
            vec![
                (None, Count::new(1, 2)),
                (Some("01".into()), Count::new(1, 1)),
                (Some("99".into()), Count::new(3, 7))
            ]
        );
    }

    #[test]
    fn spans_are_kept_per_kpi_and_hour() {
        let mut c = ProvinceCube::new(2, []);
        let mut a = row(0, 5, None, 1, 1);
        a.rollup.first_us += 10;
        a.rollup.last_us += 20;
        let mut b = row(0, 5, Some("01"), 1, 1);
        b.rollup.first_us += 3;
        b.rollup.last_us += 4;
        c.apply(&[a, b]);
        assert_eq!(c.span(0, 5), Some((5 * 3_600_000_000 + 3, 5 * 3_600_000_000 + 20)));
        assert_eq!(c.span(1, 5), None, "another KPI counted nothing in that hour");
    }

    #[test]
    fn series_groups_by_vietnam_day_and_province() {
        let mut d = CounterDelta::default();
        // Hour 16:00Z and 17:00Z on the same UTC day are different Vietnam days.
        let h16 = crate::time::hour_of("2026-03-09T16:00:00Z".parse().unwrap());
        d.add(0, h16, dims("01", None), Count::new(1, 2), 0);
        d.add(0, h16 + 1, dims("01", None), Count::new(2, 2), 0);
        d.add(0, h16 + 2, dims("79", None), Count::new(0, 1), 0);
        let c = cube_of(&d, 1);
        let s = c.series(0, h16..h16 + 3, ProvinceSel::All, true, Some(Bucket::Day));
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
        let month = c.series(0, h16..h16 + 3, ProvinceSel::One("01"), false, Some(Bucket::Month));
        assert_eq!(
            month.into_iter().collect::<Vec<_>>(),
            vec![((Some("2026-02-28T17:00:00Z".parse().unwrap()), vec![]), Count::new(3, 4))]
        );
    }

    #[test]
    fn period_totals_follow_rows_inside_the_period_and_report_what_changed() {
        let mut c = ProvinceCube::new(2, ["01", "79"].map(Arc::<str>::from));
        c.apply(&[row(0, 5, Some("01"), 1, 2), row(0, 99, Some("01"), 7, 7)]); // hour 99: outside
        let mut t = PeriodTotals::new(0..10, &c);
        let national: ScopeKey = None;
        let p01: ScopeKey = Some("01".into());
        assert_eq!(t.get(0, &national), Count::new(1, 2));
        assert_eq!(t.take_changed(), vec![(0, None, Count::new(1, 2)), (0, p01.clone(), Count::new(1, 2))]);
        assert!(t.take_changed().is_empty(), "nothing changed since");

        // A late event in a past hour, one in the next period, one without a province.
        t.apply(&[row(1, 3, Some("79"), 0, 1), row(1, 10, Some("79"), 5, 5), row(1, 4, None, 1, 1)]);
        let p79: ScopeKey = Some("79".into());
        assert_eq!(t.take_changed(), vec![(1, None, Count::new(1, 2)), (1, p79.clone(), Count::new(0, 1))]);
        assert_eq!(t.get(0, &p01), Count::new(1, 2), "other scopes untouched");
    }

    proptest! {
        /// Applying rows in any split and order gives the same cube as applying their
        /// merge once (the property that makes rebuild-after-restart and re-aggregated
        /// rollups exact), and the cube's answers equal a plain sum over the rows.
        #[test]
        fn cube_is_an_order_independent_sum(
            entries in prop::collection::vec((0usize..2, 0i64..48, 0u8..4, 0u64..5, 0u64..5, 0i64..3_600_000_000), 0..80),
            split in 0usize..80,
            from in 0i64..48, len in 0i64..48, sel in 0u8..4,
        ) {
            let province = |p: u8| (p < 3).then(|| format!("0{p}"));
            let deltas: Vec<CounterDelta> = entries.iter().map(|(k, h, p, n, extra, off)| {
                let mut d = CounterDelta::default();
                let mut v = DimValues::default();
                v.0[Dim::ProvinceCode.index()] = province(*p).map(Into::into);
                d.add(*k, *h, v, Count::new(*n, n + extra), h * 3_600_000_000 + off);
                d
            }).collect();
            let split = split.min(deltas.len());
            let mut merged = CounterDelta::default();
            for d in deltas.iter().cloned() { merged.merge(d); }
            let one = cube_of(&merged, 2);
            let mut many = ProvinceCube::new(2, []);
            for d in deltas[split..].iter().chain(deltas[..split].iter()) { many.apply(&d.cube_rows()); }
            let hours = from..from + len;
            let wanted = province(sel);
            let sel = wanted.as_deref().map_or(ProvinceSel::All, ProvinceSel::One);
            for k in 0..2 {
                prop_assert_eq!(
                    one.series(k, 0..48, ProvinceSel::All, true, Some(Bucket::Hour)),
                    many.series(k, 0..48, ProvinceSel::All, true, Some(Bucket::Hour)));
                let mut expected = Count::default();
                for (kk, h, p, n, extra, _) in &entries {
                    if *kk == k && hours.contains(h) && (wanted.is_none() || province(*p) == wanted) {
                        expected += Count::new(*n, n + extra);
                    }
                }
                prop_assert_eq!(many.total(k, hours.clone(), sel), expected);
                let series: Count = many.series(k, hours.clone(), sel, false, Some(Bucket::Day)).into_values()
                    .fold(Count::default(), |mut a, c| { a += c; a });
                prop_assert_eq!(series, expected);
                for h in 0..48 { prop_assert_eq!(one.span(k, h), many.span(k, h)); }
            }
            // A cube restored from the cells of another (a snapshot) answers the same.
            let mut restored = ProvinceCube::new(2, many.provinces().iter().cloned());
            for (kpi, hour, span, counts) in many.cells() {
                prop_assert!(restored.add_cell(kpi, hour, span, counts).is_some());
            }
            for k in 0..2 {
                prop_assert_eq!(
                    restored.series(k, 0..48, ProvinceSel::All, true, Some(Bucket::Hour)),
                    many.series(k, 0..48, ProvinceSel::All, true, Some(Bucket::Hour)));
                prop_assert_eq!(
                    restored.series(k, 0..48, sel, true, Some(Bucket::Day)),
                    many.series(k, 0..48, sel, true, Some(Bucket::Day)));
                for h in 0..48 { prop_assert_eq!(restored.span(k, h), many.span(k, h)); }
            }
            prop_assert!(restored.add_cell(2, 0, (0, 0), &[]).is_none(), "no such KPI");
        }
    }
}

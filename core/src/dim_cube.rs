//! In-memory KPI counters for the dimensions other than the province: one small cube
//! per dimension (agency, commune, level, source, procedure, channel), holding per KPI
//! and Vietnam day the counts of every (province, value) pair seen that day, plus the
//! same per hour for the newest two days.
//!
//! The `kpi_hourly` rollups are an hour × all seven dimensions, finer than the events
//! themselves (97.8M rows for 50M events), so summing a year of them for one dimension
//! reads almost two rows per event. A day × one dimension × province is small: a year
//! of the agency cube at 50M events is a few million cells. Every query whose filters
//! and groups use the province and at most one other dimension is a sum over these
//! cells: whole Vietnam days from the day cells, other hours from the hour cells.
//! Hours older than the newest two days that are not part of a whole day of the
//! period ([`DimCube::gaps`]: the ends of a period with hour precision in the past,
//! or hour buckets) are not held; the caller sums their rollups instead.
//!
//! Counts are kept in 32 bits (a day of one agency for one KPI is far below 4 billion
//! events); a sum that would not fit marks the cube unusable ([`DimCube::answers`]
//! then says no, and the caller falls back to the rollups), never a wrong count. So
//! do more than [`MAX_KEYS`] (province, value) pairs: the values come from the events,
//! and a source sending made-up codes must not grow the server's memory without
//! bound. A cube that declines drops its cells and keeps nothing more.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::counters::{Count, Dim, DimFilter, DimValue, SeriesKey};
use crate::ids::IdHashBuilder;
use crate::time::{Bucket, HourBucket, hour_of, hour_start, vn_day_of, vn_day_start};

/// The most (province, value) pairs a cube keeps: 30 times the communes and agencies
/// of the reference data.
pub const MAX_KEYS: usize = 200_000;

/// A numerator and a denominator in 32 bits each.
pub type Pair = [u32; 2];

/// The counts of one (KPI, day) or (KPI, hour), by key id, sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cells {
    keys: Vec<u32>,
    counts: Vec<Pair>,
}

/// A sum that does not fit in 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Overflow;

fn add_pair(p: &mut Pair, c: Pair) -> Result<(), Overflow> {
    p[0] = p[0].checked_add(c[0]).ok_or(Overflow)?;
    p[1] = p[1].checked_add(c[1]).ok_or(Overflow)?;
    Ok(())
}

impl Cells {
    /// Adds `(key, count)` pairs sorted by key, each key once.
    fn add(&mut self, add: &[(u32, Pair)]) -> Result<(), Overflow> {
        // In place when every key is already there (the common case once a day has
        // started), else one merge.
        let mut missing = 0;
        let mut i = 0;
        for (k, _) in add {
            while i < self.keys.len() && self.keys[i] < *k {
                i += 1;
            }
            if i == self.keys.len() || self.keys[i] != *k {
                missing += 1;
            }
        }
        if missing == 0 {
            let mut i = 0;
            for (k, c) in add {
                while self.keys[i] < *k {
                    i += 1;
                }
                add_pair(&mut self.counts[i], *c)?;
            }
            return Ok(());
        }
        let n = self.keys.len() + missing;
        let (mut keys, mut counts) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut i = 0;
        for (k, c) in add {
            while i < self.keys.len() && self.keys[i] < *k {
                keys.push(self.keys[i]);
                counts.push(self.counts[i]);
                i += 1;
            }
            if i < self.keys.len() && self.keys[i] == *k {
                let mut p = self.counts[i];
                add_pair(&mut p, *c)?;
                keys.push(*k);
                counts.push(p);
                i += 1;
            } else {
                keys.push(*k);
                counts.push(*c);
            }
        }
        keys.extend_from_slice(&self.keys[i..]);
        counts.extend_from_slice(&self.counts[i..]);
        self.keys = keys;
        self.counts = counts;
        Ok(())
    }
}

/// Adds `(kpi, time, key, count)` rows sorted by (kpi, time, key) to the cells of
/// `per_kpi[kpi][time]`, summing rows of the same key first.
fn merge_sorted(rows: &[(u32, i64, u32, Pair)], per_kpi: &mut [BTreeMap<i64, Cells>]) -> Result<(), Overflow> {
    let mut add: Vec<(u32, Pair)> = Vec::new();
    let mut result = Ok(());
    for group in rows.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
        add.clear();
        for (_, _, key, c) in group {
            match add.last_mut() {
                Some((k, sum)) if k == key => {
                    if add_pair(sum, *c).is_err() {
                        result = Err(Overflow);
                    }
                }
                _ => add.push((*key, *c)),
            }
        }
        if per_kpi[group[0].0 as usize].entry(group[0].1).or_default().add(&add).is_err() {
            result = Err(Overflow);
        }
    }
    result
}

fn cells_of(
    grain: Grain,
    per_kpi: &[BTreeMap<i64, Cells>],
) -> impl Iterator<Item = (usize, Grain, i64, &[u32], &[Pair])> + '_ {
    per_kpi
        .iter()
        .enumerate()
        .flat_map(move |(kpi, m)| m.iter().map(move |(t, c)| (kpi, grain, *t, c.keys.as_slice(), c.counts.as_slice())))
}

/// Interned strings: id 0 is "no value", id `i` is `names[i - 1]`.
#[derive(Debug, Clone, Default)]
struct Names {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32, IdHashBuilder>,
}

impl Names {
    fn id(&mut self, s: Option<&str>) -> u32 {
        let Some(s) = s else { return 0 };
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let name: Arc<str> = Arc::from(s);
        self.names.push(name.clone());
        let id = self.names.len() as u32;
        self.ids.insert(name, id);
        id
    }

    fn name(&self, id: u32) -> DimValue {
        id.checked_sub(1).map(|i| self.names[i as usize].clone())
    }

    fn from_names(names: Vec<Arc<str>>) -> Option<Self> {
        let ids: HashMap<Arc<str>, u32, IdHashBuilder> =
            names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32 + 1)).collect();
        (ids.len() == names.len()).then_some(Self { names, ids })
    }
}

/// One rollup row as a dimension cube takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DimRow<'a> {
    pub kpi: usize,
    pub hour: HourBucket,
    pub province: Option<&'a str>,
    pub value: Option<&'a str>,
    pub count: Count,
}

/// The interned names and keys of a cube, as a snapshot stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimCubeParts {
    pub dim: Dim,
    pub provinces: Vec<Arc<str>>,
    pub values: Vec<Arc<str>>,
    /// (province id, value id) of each key; id 0 is no value, `i` the `i`-th name.
    pub keys: Vec<(u32, u32)>,
    pub newest: Option<HourBucket>,
    /// The cube declines every query (see the module docs) and holds no cells.
    pub declined: bool,
}

/// Whether a cell is a Vietnam day or an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Day,
    Hour,
}

/// The counters of one dimension (see the module docs).
#[derive(Debug, Clone)]
pub struct DimCube {
    dim: Dim,
    provinces: Names,
    values: Names,
    keys: Vec<(u32, u32)>,
    key_ids: HashMap<(u32, u32), u32, IdHashBuilder>,
    /// Per KPI: cells by Vietnam day.
    days: Vec<BTreeMap<i64, Cells>>,
    /// Per KPI: cells by hour, for hours from [`DimCube::hourly_from`] on.
    hours: Vec<BTreeMap<HourBucket, Cells>>,
    /// The newest hour counted.
    newest: Option<HourBucket>,
    declined: bool,
}

impl DimCube {
    pub fn new(dim: Dim, kpis: usize) -> Self {
        Self {
            dim,
            provinces: Names::default(),
            values: Names::default(),
            keys: Vec::new(),
            key_ids: HashMap::default(),
            days: vec![BTreeMap::new(); kpis],
            hours: vec![BTreeMap::new(); kpis],
            newest: None,
            declined: false,
        }
    }

    pub fn dim(&self) -> Dim {
        self.dim
    }

    /// The first hour held per hour: the start of the Vietnam day before the newest
    /// hour's (every hour while nothing is counted).
    pub fn hourly_from(&self) -> HourBucket {
        self.newest.map_or(HourBucket::MIN, |h| vn_day_start(vn_day_of(h) - 1))
    }

    /// The number of cells held (days and hours): what the cube's memory is about.
    pub fn cell_count(&self) -> usize {
        self.days.iter().chain(&self.hours).flat_map(|m| m.values()).map(|c| c.keys.len()).sum()
    }

    fn key(&mut self, province: Option<&str>, value: Option<&str>) -> u32 {
        let pair = (self.provinces.id(province), self.values.id(value));
        if let Some(k) = self.key_ids.get(&pair) {
            return *k;
        }
        self.keys.push(pair);
        let k = self.keys.len() as u32 - 1;
        self.key_ids.insert(pair, k);
        k
    }

    /// Adds rollup rows. Addition is commutative and associative, so the order in
    /// which commits are applied does not matter (the hours held depend only on the
    /// newest hour, and older hours are in their days either way). Rows of a KPI
    /// index outside the cube are ignored.
    pub fn apply<'a>(&mut self, rows: impl IntoIterator<Item = DimRow<'a>>) {
        if self.declined {
            return;
        }
        let kpis = self.days.len();
        let mut pending: Vec<(u32, HourBucket, u32, Pair)> = Vec::new();
        for r in rows {
            if r.kpi >= kpis || r.count.is_zero() {
                continue;
            }
            let (Ok(n), Ok(d)) = (u32::try_from(r.count.numerator), u32::try_from(r.count.denominator)) else {
                self.declined = true;
                continue;
            };
            let key = self.key(r.province, r.value);
            pending.push((r.kpi as u32, r.hour, key, [n, d]));
        }
        if self.keys.len() > MAX_KEYS {
            self.decline();
            return;
        }
        let Some(newest) = pending.iter().map(|p| p.1).max() else { return };
        if self.newest.is_none_or(|h| newest > h) {
            self.newest = Some(newest);
            let from = self.hourly_from();
            for hours in &mut self.hours {
                *hours = hours.split_off(&from);
            }
        }
        let from = self.hourly_from();
        let mut overflow = false;
        // By hour, for the hours held.
        let mut hourly: Vec<(u32, HourBucket, u32, Pair)> = pending.iter().filter(|p| p.1 >= from).copied().collect();
        hourly.sort_unstable_by_key(|p| (p.0, p.1, p.2));
        overflow |= merge_sorted(&hourly, &mut self.hours).is_err();
        // By day.
        for p in &mut pending {
            p.1 = vn_day_of(p.1);
        }
        pending.sort_unstable_by_key(|p| (p.0, p.1, p.2));
        overflow |= merge_sorted(&pending, &mut self.days).is_err();
        if overflow {
            self.decline();
        }
    }

    /// From now on, answers nothing and keeps nothing.
    fn decline(&mut self) {
        *self = Self { declined: true, newest: self.newest, ..Self::new(self.dim, self.days.len()) };
    }

    /// Whether [`DimCube::series`] answers a slice: its filters and groups use only
    /// the province and this cube's dimension, and no count declined.
    pub fn answers(&self, group_by: &[Dim], filter: &DimFilter) -> bool {
        !self.declined
            && group_by.iter().chain(filter.0.iter().map(|(d, _)| d)).all(|d| *d == Dim::ProvinceCode || *d == self.dim)
    }

    /// The whole Vietnam days inside `hours` (first day, day after the last), if any
    /// and if the buckets are not hours.
    fn days_in(hours: &Range<HourBucket>, bucket: Option<Bucket>) -> Option<(i64, i64)> {
        let (d0, d1) = (vn_day_of(hours.start + 23), vn_day_of(hours.end));
        (bucket != Some(Bucket::Hour) && d0 < d1).then_some((d0, d1))
    }

    /// The parts of `hours` that [`DimCube::series`] leaves out: hours before
    /// [`DimCube::hourly_from`] that are not in a whole Vietnam day of `hours` (with
    /// hour buckets, every hour before it). At most two ranges, in order.
    pub fn gaps(&self, hours: Range<HourBucket>, bucket: Option<Bucket>) -> Vec<Range<HourBucket>> {
        if hours.start >= hours.end {
            return Vec::new();
        }
        let held = self.hourly_from();
        let pieces = match Self::days_in(&hours, bucket) {
            Some((d0, d1)) => vec![hours.start..vn_day_start(d0), vn_day_start(d1)..hours.end],
            None => vec![hours],
        };
        pieces.into_iter().map(|p| p.start..p.end.min(held)).filter(|p| p.start < p.end).collect()
    }

    /// Sums a KPI's counters over `hours`, except the [`DimCube::gaps`], for the keys
    /// matching `filter`, grouped by `group_by` (the province or this dimension, in
    /// that order) and, if given, by calendar bucket (Vietnam time). Rows with nothing
    /// counted are left out. Call only for slices the cube [`answers`](Self::answers).
    pub fn series(
        &self,
        kpi: usize,
        hours: Range<HourBucket>,
        group_by: &[Dim],
        filter: &DimFilter,
        bucket: Option<Bucket>,
    ) -> BTreeMap<SeriesKey, Count> {
        let mut out: BTreeMap<SeriesKey, Count> = BTreeMap::new();
        if hours.start >= hours.end || kpi >= self.days.len() {
            return out;
        }
        // Each key's output group, or none when the filter rejects it.
        let mut groups: Vec<Vec<DimValue>> = Vec::new();
        let mut group_ids: HashMap<Vec<DimValue>, u32> = HashMap::new();
        let group_of: Vec<u32> = self
            .keys
            .iter()
            .map(|(p, v)| {
                let value =
                    |d: Dim| if d == Dim::ProvinceCode { self.provinces.name(*p) } else { self.values.name(*v) };
                if !filter.0.iter().all(|(d, want)| value(*d).as_deref() == Some(want.as_str())) {
                    return u32::MAX;
                }
                let group: Vec<DimValue> = group_by.iter().map(|d| value(*d)).collect();
                *group_ids.entry(group.clone()).or_insert_with(|| {
                    groups.push(group);
                    groups.len() as u32 - 1
                })
            })
            .collect();
        if groups.is_empty() {
            return out;
        }
        let held = self.hourly_from();
        let hour_cells = |r: Range<HourBucket>| {
            let r = r.start.max(held)..r.end;
            let cells = (r.start < r.end).then(|| self.hours[kpi].range(r)).into_iter().flatten();
            cells.map(|(h, c)| (*h, c))
        };
        let cells: Box<dyn Iterator<Item = (HourBucket, &Cells)>> = match Self::days_in(&hours, bucket) {
            Some((d0, d1)) => {
                let days = self.days[kpi].range(d0..d1).map(|(d, c)| (vn_day_start(*d), c));
                Box::new(
                    hour_cells(hours.start..vn_day_start(d0))
                        .chain(days)
                        .chain(hour_cells(vn_day_start(d1)..hours.end)),
                )
            }
            None => Box::new(hour_cells(hours.clone())),
        };
        let mut acc = vec![Count::default(); groups.len()];
        let flush = |out: &mut BTreeMap<SeriesKey, Count>, key: Option<DateTime<Utc>>, acc: &mut [Count]| {
            for (g, c) in acc.iter_mut().enumerate() {
                if !c.is_zero() {
                    *out.entry((key, groups[g].clone())).or_default() += *c;
                }
                *c = Count::default();
            }
        };
        // The current bucket: its start and the first hour after it.
        let mut current: Option<(Option<DateTime<Utc>>, HourBucket)> = None;
        for (hour, cells) in cells {
            if current.is_none_or(|(_, end)| hour >= end) {
                if let Some((key, _)) = current {
                    flush(&mut out, key, &mut acc);
                }
                current = Some(match bucket {
                    None => (None, HourBucket::MAX),
                    Some(b) => {
                        let start = b.floor(hour_start(hour));
                        (Some(start.to_utc()), hour_of(b.next(start).to_utc()))
                    }
                });
            }
            for (k, c) in cells.keys.iter().zip(&cells.counts) {
                let g = group_of[*k as usize];
                if g != u32::MAX {
                    acc[g as usize] += Count::new(u64::from(c[0]), u64::from(c[1]));
                }
            }
        }
        if let Some((key, _)) = current {
            flush(&mut out, key, &mut acc);
        }
        out
    }

    /// The interned names and keys, for a snapshot; [`DimCube::cells`] are the counts.
    pub fn parts(&self) -> DimCubeParts {
        DimCubeParts {
            dim: self.dim,
            provinces: self.provinces.names.clone(),
            values: self.values.names.clone(),
            keys: self.keys.clone(),
            newest: self.newest,
            declined: self.declined,
        }
    }

    /// Every cell: (KPI index, grain, day or hour, key ids, counts).
    pub fn cells(&self) -> impl Iterator<Item = (usize, Grain, i64, &[u32], &[Pair])> + '_ {
        cells_of(Grain::Day, &self.days).chain(cells_of(Grain::Hour, &self.hours))
    }

    /// An empty cube with the names and keys of `parts`; `None` if they repeat or a
    /// key names an id out of range.
    pub fn from_parts(parts: DimCubeParts, kpis: usize) -> Option<Self> {
        let provinces = Names::from_names(parts.provinces)?;
        let values = Names::from_names(parts.values)?;
        let in_range = |(p, v): &(u32, u32)| *p as usize <= provinces.names.len() && *v as usize <= values.names.len();
        if !parts.keys.iter().all(in_range) {
            return None;
        }
        let key_ids: HashMap<(u32, u32), u32, IdHashBuilder> =
            parts.keys.iter().enumerate().map(|(i, k)| (*k, i as u32)).collect();
        if key_ids.len() != parts.keys.len() {
            return None;
        }
        let mut cube = Self::new(parts.dim, kpis);
        cube.provinces = provinces;
        cube.values = values;
        cube.keys = parts.keys;
        cube.key_ids = key_ids;
        cube.newest = parts.newest;
        cube.declined = parts.declined;
        Some(cube)
    }

    /// Adds one cell's counts, as [`DimCube::cells`] gave them. `None` if the KPI is
    /// outside the cube, the keys are not increasing or name no key, or an hour is
    /// not one the cube holds.
    pub fn add_cell(&mut self, kpi: usize, grain: Grain, t: i64, keys: &[u32], counts: &[Pair]) -> Option<()> {
        let sorted = keys.windows(2).all(|w| w[0] < w[1]);
        let known = keys.last().is_none_or(|k| (*k as usize) < self.keys.len());
        if kpi >= self.days.len() || keys.len() != counts.len() || !sorted || !known {
            return None;
        }
        let cells = match grain {
            Grain::Day => self.days[kpi].entry(t).or_default(),
            Grain::Hour if t >= self.hourly_from() => self.hours[kpi].entry(t).or_default(),
            Grain::Hour => return None,
        };
        let add: Vec<(u32, Pair)> = keys.iter().copied().zip(counts.iter().copied()).collect();
        if cells.add(&add).is_err() {
            self.decline();
        }
        Some(())
    }
}

/// One [`DimCube`] per dimension other than the province.
#[derive(Debug, Clone)]
pub struct DimCubes(Vec<DimCube>);

impl Default for DimCubes {
    fn default() -> Self {
        Self::new(0)
    }
}

impl DimCubes {
    /// The dimensions with a cube: all but the province.
    pub fn dims() -> impl Iterator<Item = Dim> {
        Dim::ALL.into_iter().filter(|d| *d != Dim::ProvinceCode)
    }

    pub fn new(kpis: usize) -> Self {
        Self(Self::dims().map(|d| DimCube::new(d, kpis)).collect())
    }

    /// Cubes from snapshot parts, one per dimension in [`DimCubes::dims`] order.
    pub fn from_cubes(cubes: Vec<DimCube>) -> Option<Self> {
        let dims: Vec<Dim> = cubes.iter().map(DimCube::dim).collect();
        (dims == Self::dims().collect::<Vec<_>>()).then_some(Self(cubes))
    }

    pub fn cubes(&self) -> &[DimCube] {
        &self.0
    }

    pub fn cubes_mut(&mut self) -> &mut [DimCube] {
        &mut self.0
    }

    /// The cube that answers a slice using a dimension other than the province, if
    /// one does.
    pub fn for_slice(&self, group_by: &[Dim], filter: &DimFilter) -> Option<&DimCube> {
        let other = group_by.iter().chain(filter.0.iter().map(|(d, _)| d)).find(|d| **d != Dim::ProvinceCode)?;
        self.0.iter().find(|c| c.dim == *other).filter(|c| c.answers(group_by, filter))
    }

    /// Cells held by all the cubes.
    pub fn cell_count(&self) -> usize {
        self.0.iter().map(DimCube::cell_count).sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn row<'a>(kpi: usize, hour: HourBucket, p: Option<&'a str>, v: Option<&'a str>, n: u64, d: u64) -> DimRow<'a> {
        DimRow { kpi, hour, province: p, value: v, count: Count::new(n, d) }
    }

    /// 2026-01-01 00:00 Vietnam time, as an hour bucket.
    fn jan1() -> HourBucket {
        hour_of("2025-12-31T17:00:00Z".parse().unwrap())
    }

    #[test]
    fn vietnam_days_start_at_17_utc() {
        assert_eq!(vn_day_of(jan1()), vn_day_of(jan1() + 23));
        assert_eq!(vn_day_of(jan1() - 1) + 1, vn_day_of(jan1()));
        assert_eq!(vn_day_start(vn_day_of(jan1() + 5)), jan1());
    }

    #[test]
    fn groups_and_filters_by_value_and_province() {
        let mut c = DimCube::new(Dim::Channel, 2);
        c.apply([
            row(0, jan1() + 1, Some("01"), Some("online"), 1, 2),
            row(0, jan1() + 30, Some("01"), Some("online"), 3, 4),
            row(0, jan1() + 2, Some("79"), Some("online"), 1, 1),
            row(0, jan1() + 2, Some("79"), Some("direct"), 0, 5),
            row(0, jan1() + 3, None, None, 1, 1),
            row(1, jan1() + 3, Some("01"), Some("online"), 7, 7),
        ]);
        let all = jan1()..jan1() + 48;
        let by = |g: &[Dim], f: &[(Dim, &str)]| {
            let f = DimFilter(f.iter().map(|(d, v)| (*d, v.to_string())).collect());
            assert!(c.answers(g, &f));
            assert!(c.gaps(all.clone(), None).is_empty());
            c.series(0, all.clone(), g, &f, None)
        };
        let v = |s: &str| Some(Arc::<str>::from(s));
        let got = by(&[Dim::Channel], &[]);
        assert_eq!(got[&(None, vec![v("online")])], Count::new(5, 7));
        assert_eq!(got[&(None, vec![v("direct")])], Count::new(0, 5));
        assert_eq!(got[&(None, vec![None])], Count::new(1, 1));
        let got = by(&[Dim::ProvinceCode], &[(Dim::Channel, "online")]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[&(None, vec![v("01")])], Count::new(4, 6));
        assert_eq!(got[&(None, vec![v("79")])], Count::new(1, 1));
        let got = by(&[Dim::Channel, Dim::ProvinceCode], &[(Dim::ProvinceCode, "79")]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[&(None, vec![v("direct"), v("79")])], Count::new(0, 5));
        // Two values of one dimension at once: nothing matches.
        assert!(by(&[], &[(Dim::Channel, "online"), (Dim::Channel, "direct")]).is_empty());
        assert!(!c.answers(&[Dim::Level], &DimFilter::default()));
        assert!(!c.answers(&[Dim::Channel], &DimFilter(vec![(Dim::Source, "x".into())])));
    }

    #[test]
    fn old_hours_outside_whole_days_are_gaps() {
        let mut c = DimCube::new(Dim::Level, 1);
        let day = |d: i64| jan1() + 24 * d;
        c.apply([row(0, day(0) + 5, Some("01"), Some("commune"), 1, 1), row(0, day(9) + 2, None, None, 1, 1)]);
        // Hours are held from the start of day 8.
        assert_eq!(c.hourly_from(), day(8));
        // Whole days: no gaps; the odd hours around them before day 8 are gaps.
        assert!(c.gaps(day(0)..day(3), None).is_empty());
        assert_eq!(c.gaps(day(0) + 5..day(3) + 1, None), vec![day(0) + 5..day(1), day(3)..day(3) + 1]);
        assert_eq!(c.gaps(day(0) + 5..day(9) + 3, None), vec![day(0) + 5..day(1)]);
        assert_eq!(c.gaps(day(7) + 5..day(9) + 3, Some(Bucket::Hour)), vec![day(7) + 5..day(8)]);
        assert!(c.gaps(day(8) + 1..day(9) + 3, Some(Bucket::Hour)).is_empty());
        // What is not a gap is counted exactly once.
        let none = DimFilter::default();
        assert_eq!(c.series(0, day(0) + 5..day(9) + 3, &[], &none, None)[&(None, vec![])], Count::new(1, 1));
        assert_eq!(c.series(0, day(0)..day(9) + 3, &[], &none, None)[&(None, vec![])], Count::new(2, 2));
        // A newer hour moves the window; the pruned hours stay in their days.
        c.apply([row(0, day(20), None, None, 1, 1)]);
        assert_eq!(c.hourly_from(), day(19));
        assert_eq!(c.series(0, day(9)..day(10), &[], &none, None)[&(None, vec![])], Count::new(1, 1));
        assert_eq!(c.gaps(day(9) + 2..day(9) + 3, None), vec![day(9) + 2..day(9) + 3]);
    }

    #[test]
    fn a_count_over_32_bits_makes_the_cube_decline() {
        let mut c = DimCube::new(Dim::Source, 1);
        c.apply([row(0, jan1(), None, Some("a"), 0, u64::from(u32::MAX))]);
        assert!(c.answers(&[Dim::Source], &DimFilter::default()));
        c.apply([row(0, jan1() + 1, None, Some("a"), 0, 1)]);
        assert!(!c.answers(&[Dim::Source], &DimFilter::default()));
        let mut c = DimCube::new(Dim::Source, 1);
        c.apply([row(0, jan1(), None, Some("a"), 0, 1 << 40)]);
        assert!(!c.answers(&[], &DimFilter::default()));
        // It stays so through a snapshot's parts, and holds nothing.
        let again = DimCube::from_parts(c.parts(), 1).unwrap();
        assert!(!again.answers(&[], &DimFilter::default()));
        assert_eq!(again.cell_count(), 0);
    }

    #[test]
    fn more_pairs_than_the_cap_make_the_cube_decline_and_drop_its_cells() {
        let mut c = DimCube::new(Dim::AgencyCode, 1);
        let codes: Vec<String> = (0..MAX_KEYS).map(|i| format!("A{i}")).collect();
        c.apply(codes.iter().map(|a| row(0, jan1(), Some("01"), Some(a), 1, 1)));
        assert!(c.answers(&[Dim::AgencyCode], &DimFilter::default()), "at the cap it answers");
        c.apply([row(0, jan1(), Some("79"), Some("made-up"), 1, 1)]);
        assert!(!c.answers(&[Dim::AgencyCode], &DimFilter::default()));
        assert_eq!((c.cell_count(), c.parts().keys.len()), (0, 0));
        c.apply([row(0, jan1(), Some("01"), Some("A1"), 1, 1)]);
        assert_eq!(c.cell_count(), 0, "nothing is kept after");
    }

    #[test]
    fn for_slice_picks_the_cube_of_the_other_dimension() {
        let cubes = DimCubes::new(1);
        let none = DimFilter::default();
        assert!(cubes.for_slice(&[Dim::ProvinceCode], &none).is_none());
        assert_eq!(cubes.for_slice(&[Dim::AgencyCode], &none).map(DimCube::dim), Some(Dim::AgencyCode));
        let online = DimFilter(vec![(Dim::Channel, "online".into())]);
        assert_eq!(cubes.for_slice(&[Dim::ProvinceCode], &online).map(DimCube::dim), Some(Dim::Channel));
        assert!(cubes.for_slice(&[Dim::Level], &online).is_none());
        assert_eq!(cubes.cubes().len(), 6);
    }

    /// (KPI, hour, province, value, numerator, denominator).
    type Row = (usize, HourBucket, Option<&'static str>, Option<&'static str>, u64, u64);

    /// A reference: the rows summed by bucket and group, over the hours `series` covers.
    fn reference(
        rows: &[Row],
        kpi: usize,
        hours: &[Range<HourBucket>],
        group_by: &[Dim],
        filter: &DimFilter,
        bucket: Option<Bucket>,
    ) -> BTreeMap<SeriesKey, Count> {
        let mut out: BTreeMap<SeriesKey, Count> = BTreeMap::new();
        for (k, h, p, v, n, d) in rows {
            if *k != kpi || !hours.iter().any(|r| r.contains(h)) {
                continue;
            }
            let value = |dim: Dim| if dim == Dim::ProvinceCode { *p } else { *v };
            if !filter.0.iter().all(|(dim, want)| value(*dim) == Some(want.as_str())) {
                continue;
            }
            let key = bucket.map(|b| b.floor(hour_start(*h)).to_utc());
            let group = group_by.iter().map(|dim| value(*dim).map(Arc::from)).collect();
            *out.entry((key, group)).or_default() += Count::new(*n, *d);
        }
        out.retain(|_, c| !c.is_zero());
        out
    }

    proptest! {
        #[test]
        fn series_plus_gaps_is_the_sum_of_the_rows_in_any_order(
            rows in prop::collection::vec(
                (0usize..2, 0i64..24 * 12, prop::sample::select(vec![None, Some("01"), Some("79")]),
                 prop::sample::select(vec![None, Some("a"), Some("b"), Some("c")]), 0u64..5, 0u64..5),
                0..60),
            split in 0usize..60,
            start in 0i64..24 * 12,
            len in 0i64..24 * 12,
            bucket in prop::sample::select(vec![None, Some(Bucket::Hour), Some(Bucket::Day), Some(Bucket::Month)]),
            group in prop::sample::select(vec![vec![], vec![Dim::Source], vec![Dim::ProvinceCode], vec![Dim::Source, Dim::ProvinceCode]]),
            filter in prop::sample::select(vec![vec![], vec![(Dim::Source, "a")], vec![(Dim::ProvinceCode, "79")]]),
        ) {
            let rows: Vec<_> = rows.into_iter().map(|(k, h, p, v, n, d)| (k, jan1() - 24 * 3 + h, p, v, n, d)).collect();
            let as_row = |r: &Row| row(r.0, r.1, r.2, r.3, r.4, r.5);
            // In two commits, in either order.
            let split = split.min(rows.len());
            let mut a = DimCube::new(Dim::Source, 2);
            a.apply(rows[..split].iter().map(as_row));
            a.apply(rows[split..].iter().map(as_row));
            let mut b = DimCube::new(Dim::Source, 2);
            b.apply(rows[split..].iter().map(as_row));
            b.apply(rows[..split].iter().map(as_row));
            // And through a snapshot's parts and cells.
            let mut c = DimCube::from_parts(a.parts(), 2).unwrap();
            for (kpi, grain, t, keys, counts) in a.cells() {
                c.add_cell(kpi, grain, t, keys, counts).unwrap();
            }
            let filter = DimFilter(filter.into_iter().map(|(d, v)| (d, v.to_string())).collect());
            let hours = jan1() - 24 * 3 + start..jan1() - 24 * 3 + start + len;
            for cube in [&a, &b, &c] {
                prop_assert_eq!(cube.hourly_from(), a.hourly_from());
                let gaps = cube.gaps(hours.clone(), bucket);
                let covered: Vec<Range<HourBucket>> = {
                    let mut v = Vec::new();
                    let mut at = hours.start;
                    for g in &gaps {
                        v.push(at..g.start);
                        at = g.end;
                    }
                    v.push(at..hours.end);
                    v
                };
                let got = cube.series(1, hours.clone(), &group, &filter, bucket);
                prop_assert_eq!(&got, &reference(&rows, 1, &covered, &group, &filter, bucket));
                // The gaps and the rest make up the whole period.
                let mut all = got.clone();
                for (k, c) in reference(&rows, 1, &gaps, &group, &filter, bucket) {
                    *all.entry(k).or_default() += c;
                }
                prop_assert_eq!(all, reference(&rows, 1, std::slice::from_ref(&hours), &group, &filter, bucket));
            }
        }
    }
}

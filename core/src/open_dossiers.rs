//! The open-dossier state behind the `overdue_open` gauge.
//!
//! A dossier is open once its `dossier.received` is seen and until a
//! `dossier.resolved` or `dossier.closed` is seen. Events may arrive in any order, so
//! a finish that arrives before its receipt is remembered. The state is a pure
//! function of the accepted events; it is rebuilt from storage on start.
//!
//! Memory is O(open dossiers) at one 64-byte map slot each (a 16-byte id hash and a
//! 40-byte entry, aligned), so 75–150 bytes with the map's spare room: the id is kept
//! as its 128-bit hash (see [`crate::ids`]) and the seven dimension values as indexes
//! into a table of the distinct codes seen, which is as small as the code lists
//! (communes, agencies, procedures).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::counters::{Dim, DimFilter, DimValue, ScopeKey};
use crate::ids::{IdHashBuilder, id_hash};

/// No value for a dimension.
const NONE: u32 = u32::MAX;

/// The distinct dimension values seen, each stored once.
#[derive(Debug, Clone, Default)]
struct Symbols {
    ids: HashMap<Arc<str>, u32>,
    values: Vec<Arc<str>>,
}

impl Symbols {
    fn intern(&mut self, v: Option<&str>) -> u32 {
        let Some(v) = v else { return NONE };
        if let Some(i) = self.ids.get(v) {
            return *i;
        }
        let i = u32::try_from(self.values.len()).expect("fewer than 2^32 distinct codes");
        let v: Arc<str> = v.into();
        self.values.push(v.clone());
        self.ids.insert(v, i);
        i
    }

    fn get(&self, i: u32) -> DimValue {
        (i != NONE).then(|| self.values[i as usize].clone())
    }

    #[cfg(test)]
    fn matches(&self, dims: &[u32; 7], filter: &DimFilter) -> bool {
        filter.0.iter().all(|(d, want)| {
            let i = dims[d.index()];
            i != NONE && *self.values[i as usize] == **want
        })
    }
}

/// One tracked dossier.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Entry {
    /// Received, due at this time, with these dimension values (symbol indexes).
    Open { due: i64, dims: [u32; 7] },
    /// Finished before its receipt was seen.
    FinishedFirst,
}

/// The seven dimension values of a dossier, as symbol indexes in [`Dim::ALL`] order.
type Dims = [u32; 7];

/// How far back in time a question may be asked without rebuilding the due index: a
/// request that read the clock just before the live hub's tick is answered as of the
/// tick. A clock stepped back further is followed exactly, by a rebuild.
const CLOCK_SLACK_US: i64 = 5_000_000;

/// Open dossiers split at a moving cursor in time: those due before it are counted as
/// overdue, by their dimension values and by province; the others wait in due-time
/// order. Asking for a later `now` moves the cursor and only touches the dossiers that
/// fell due in between, so the wall display's gauge costs O(changes), not O(open
/// dossiers), and a question grouped by any dimension reads the distinct overdue value
/// tuples, not every dossier.
#[derive(Debug, Clone, Default)]
struct DueIndex {
    cursor: i64,
    /// Overdue dossiers by their dimension values.
    overdue: HashMap<Dims, u64, foldhash::fast::RandomState>,
    /// The same by province symbol ([`NONE`]: no province).
    by_province: HashMap<u32, u64, foldhash::fast::RandomState>,
    /// The others by due time and dimension values.
    pending: BTreeMap<(i64, Dims), u64>,
}

fn add_count<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64, foldhash::fast::RandomState>, key: K, n: i64) {
    let count =
        map.get(&key).copied().unwrap_or(0).checked_add_signed(n).expect("open-dossier counts stay non-negative");
    if count == 0 {
        map.remove(&key);
    } else {
        map.insert(key, count);
    }
}

impl DueIndex {
    fn add(&mut self, due: i64, dims: Dims, n: i64) {
        if due < self.cursor {
            add_count(&mut self.overdue, dims, n);
            add_count(&mut self.by_province, dims[Dim::ProvinceCode.index()], n);
            return;
        }
        let count = self.pending.get(&(due, dims)).copied().unwrap_or(0);
        match count.checked_add_signed(n).expect("open-dossier counts stay non-negative") {
            0 => self.pending.remove(&(due, dims)),
            c => self.pending.insert((due, dims), c),
        };
    }

    /// Moves the cursor to `now_us`, which must not be before it.
    fn advance(&mut self, now_us: i64) {
        debug_assert!(now_us >= self.cursor);
        let later = self.pending.split_off(&(now_us, [0; 7]));
        for ((_, dims), n) in std::mem::replace(&mut self.pending, later) {
            *self.overdue.entry(dims).or_default() += n;
            *self.by_province.entry(dims[Dim::ProvinceCode.index()]).or_default() += n;
        }
        self.cursor = now_us;
    }
}

/// The dossiers overdue at one moment, by their dimension values, taken out of the
/// live state so that grouping and filtering them holds no lock.
#[derive(Debug, Clone, Default)]
pub struct Overdue {
    counts: Vec<(Dims, u64)>,
    symbols: Vec<Arc<str>>,
}

impl Overdue {
    fn value(&self, i: u32) -> DimValue {
        (i != NONE).then(|| self.symbols[i as usize].clone())
    }

    /// Counts filtered and grouped by dimensions.
    pub fn grouped(&self, filter: &DimFilter, group_by: &[Dim]) -> HashMap<Vec<DimValue>, u64> {
        // The filter's values as symbols; a value never seen matches nothing.
        let mut wanted = Vec::with_capacity(filter.0.len());
        for (d, v) in &filter.0 {
            match self.symbols.iter().position(|s| **s == **v) {
                Some(i) => wanted.push((d.index(), i as u32)),
                None => return HashMap::new(),
            }
        }
        let mut counts: HashMap<Vec<u32>, u64> = HashMap::new();
        for (dims, n) in &self.counts {
            if wanted.iter().all(|(d, sym)| dims[*d] == *sym) {
                *counts.entry(group_by.iter().map(|d| dims[d.index()]).collect()).or_default() += n;
            }
        }
        counts.into_iter().map(|(k, n)| (k.into_iter().map(|i| self.value(i)).collect(), n)).collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct OpenDossiers {
    by_id: HashMap<u128, Entry, IdHashBuilder>,
    symbols: Symbols,
    due: DueIndex,
}

impl OpenDossiers {
    /// A receipt: `dims` are the dossier's values in [`Dim::ALL`] order.
    pub fn receive(&mut self, dossier_id: &str, due_at_us: i64, dims: [Option<&str>; 7]) {
        let key = id_hash(dossier_id);
        if self.by_id.get(&key) == Some(&Entry::FinishedFirst) {
            // Both ends seen: the dossier is settled and needs no more memory.
            self.by_id.remove(&key);
            return;
        }
        let dims = dims.map(|v| self.symbols.intern(v));
        if let Some(Entry::Open { due, dims: old }) = self.by_id.insert(key, Entry::Open { due: due_at_us, dims }) {
            self.due.add(due, old, -1);
        }
        self.due.add(due_at_us, dims, 1);
    }

    /// A resolution or closure.
    pub fn finish(&mut self, dossier_id: &str) {
        let key = id_hash(dossier_id);
        match self.by_id.get(&key) {
            Some(Entry::Open { due, dims }) => {
                let (due, dims) = (*due, *dims);
                self.by_id.remove(&key);
                self.due.add(due, dims, -1);
            }
            Some(Entry::FinishedFirst) => {}
            None => {
                self.by_id.insert(key, Entry::FinishedFirst);
            }
        }
    }

    /// Moves the due index to `now`: O(dossiers that fell due since the last call).
    /// A `now` a little before the last one is taken as the last one; a clock stepped
    /// back further rebuilds the index (O(open dossiers), once).
    fn advance(&mut self, now: DateTime<Utc>) {
        let now_us = now.timestamp_micros();
        if now_us >= self.due.cursor {
            self.due.advance(now_us);
        } else if self.due.cursor - now_us > CLOCK_SLACK_US {
            let mut due = DueIndex { cursor: now_us, ..DueIndex::default() };
            for e in self.by_id.values() {
                if let Entry::Open { due: at, dims } = e {
                    due.add(*at, *dims, 1);
                }
            }
            self.due = due;
        }
    }

    /// Open dossiers due before `now`, by province (`None`: no province).
    pub fn overdue_by_province(&mut self, now: DateTime<Utc>) -> HashMap<ScopeKey, u64> {
        self.advance(now);
        self.due.by_province.iter().map(|(&p, &n)| (self.symbols.get(p), n)).collect()
    }

    /// The open dossiers due before `now`, by their dimension values: O(distinct value
    /// tuples among them), to group and filter with [`Overdue::grouped`] outside any lock.
    pub fn overdue(&mut self, now: DateTime<Utc>) -> Overdue {
        self.advance(now);
        Overdue {
            counts: self.due.overdue.iter().map(|(d, n)| (*d, *n)).collect(),
            symbols: self.symbols.values.clone(),
        }
    }

    /// The distinct dimension values seen: what the symbol indexes of
    /// [`OpenDossiers::entries`] point into.
    pub fn symbols(&self) -> &[Arc<str>] {
        &self.symbols.values
    }

    /// Every tracked dossier by its id hash: `Some((due µs, dimension symbols))` if
    /// open (a symbol of `u32::MAX` is no value), `None` if finished before its
    /// receipt was seen. With [`OpenDossiers::symbols`], what a snapshot holds.
    pub fn entries(&self) -> impl Iterator<Item = (u128, Option<(i64, [u32; 7])>)> + '_ {
        self.by_id.iter().map(|(id, e)| match e {
            Entry::Open { due, dims } => (*id, Some((*due, *dims))),
            Entry::FinishedFirst => (*id, None),
        })
    }

    /// The state [`OpenDossiers::symbols`] and [`OpenDossiers::entries`] describe.
    /// `None` if a symbol index is outside `symbols` or a value repeats.
    pub fn from_parts(
        symbols: Vec<Arc<str>>,
        entries: impl IntoIterator<Item = (u128, Option<(i64, [u32; 7])>)>,
    ) -> Option<Self> {
        let mut state = OpenDossiers::default();
        for v in &symbols {
            if state.symbols.ids.insert(v.clone(), state.symbols.values.len() as u32).is_some() {
                return None;
            }
            state.symbols.values.push(v.clone());
        }
        let n = symbols.len() as u32;
        for (id, entry) in entries {
            let entry = match entry {
                Some((due, dims)) if dims.iter().all(|&d| d == NONE || d < n) => {
                    state.due.add(due, dims, 1);
                    Entry::Open { due, dims }
                }
                Some(_) => return None,
                None => Entry::FinishedFirst,
            };
            if state.by_id.insert(id, entry).is_some() {
                return None;
            }
        }
        Some(state)
    }

    /// Number of dossiers tracked (open, or finished before their receipt was seen).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(p: &str) -> [Option<&str>; 7] {
        let mut v = [None; 7];
        v[Dim::ProvinceCode.index()] = Some(p);
        v
    }

    fn total(s: &mut OpenDossiers, now_us: i64) -> u64 {
        let now = DateTime::from_timestamp_micros(now_us).unwrap();
        s.overdue(now).grouped(&DimFilter::default(), &[]).values().sum()
    }

    /// What the due index must equal: every open dossier looked at.
    fn scan(s: &OpenDossiers, now: DateTime<Utc>, filter: &DimFilter, group_by: &[Dim]) -> HashMap<Vec<DimValue>, u64> {
        let now_us = now.timestamp_micros();
        let mut counts: HashMap<Vec<DimValue>, u64> = HashMap::new();
        for e in s.by_id.values() {
            let Entry::Open { due, dims } = e else { continue };
            if *due < now_us && s.symbols.matches(dims, filter) {
                *counts.entry(group_by.iter().map(|d| s.symbols.get(dims[d.index()])).collect()).or_default() += 1;
            }
        }
        counts
    }

    #[test]
    fn a_received_dossier_is_overdue_only_after_its_due_time_and_until_finished() {
        let mut s = OpenDossiers::default();
        s.receive("A", 100, d("01"));
        assert_eq!(total(&mut s, 100), 0, "due_at is not before now");
        assert_eq!(total(&mut s, 101), 1);
        s.finish("A");
        assert_eq!(total(&mut s, 101), 0);
        assert!(s.is_empty(), "settled dossiers are forgotten");
    }

    #[test]
    fn a_finish_that_arrives_before_the_receipt_still_closes_the_dossier() {
        let mut s = OpenDossiers::default();
        s.finish("B");
        s.receive("B", 0, d("01"));
        assert_eq!(total(&mut s, 1_000), 0);
        assert!(s.is_empty());
    }

    #[test]
    fn overdue_is_filtered_and_grouped_by_dimension() {
        let mut s = OpenDossiers::default();
        s.receive("A", 0, d("01"));
        s.receive("B", 0, d("01"));
        s.receive("C", 0, d("79"));
        let now = DateTime::from_timestamp_micros(10).unwrap();
        let overdue = s.overdue(now);
        let g = overdue.grouped(&DimFilter::default(), &[Dim::ProvinceCode]);
        assert_eq!(g[&vec![Some("01".into())]], 2);
        assert_eq!(g[&vec![Some("79".into())]], 1);
        let f = overdue.grouped(&DimFilter(vec![(Dim::ProvinceCode, "79".into())]), &[]);
        assert_eq!(f.values().sum::<u64>(), 1);
        let none = overdue.grouped(&DimFilter(vec![(Dim::Channel, "online".into())]), &[]);
        assert!(none.is_empty(), "a filter on a value the dossiers lack matches none");
    }

    #[test]
    fn parts_that_do_not_fit_together_are_refused() {
        let a: Arc<str> = "01".into();
        assert!(OpenDossiers::from_parts(vec![a.clone(), a.clone()], []).is_none(), "a repeated value");
        assert!(OpenDossiers::from_parts(vec![a.clone()], [(1, Some((0, [1; 7])))]).is_none(), "no symbol 1");
        assert!(OpenDossiers::from_parts(vec![a], [(1, None), (1, None)]).is_none(), "a repeated id");
        let ok = OpenDossiers::from_parts(vec!["01".into()], [(1, Some((0, [0, NONE, NONE, NONE, NONE, NONE, NONE])))]);
        assert_eq!(ok.map(|s| s.len()), Some(1));
    }

    #[test]
    fn a_dossier_keeps_all_its_dimension_values() {
        let mut s = OpenDossiers::default();
        let mut dims = d("01");
        dims[Dim::Channel.index()] = Some("online");
        dims[Dim::CommuneCode.index()] = Some("00004");
        s.receive("A", 0, dims);
        let now = DateTime::from_timestamp_micros(10).unwrap();
        let all = [Dim::ProvinceCode, Dim::Channel, Dim::CommuneCode, Dim::AgencyCode];
        let g = s.overdue(now).grouped(&DimFilter::default(), &all);
        assert_eq!(g[&vec![Some("01".into()), Some("online".into()), Some("00004".into()), None]], 1);
        s.receive("A", 5, d("79"));
        let g = s.overdue(now).grouped(&DimFilter::default(), &all);
        assert_eq!(g.len(), 1);
        assert_eq!(g[&vec![Some("79".into()), None, None, None]], 1, "a re-receipt replaces");
        assert_eq!(s.len(), 1);
    }

    /// The due index agrees with a scan, for every grouping and filter, whatever the
    /// order of receipts, finishes, re-receipts and questions, and when the clock goes
    /// back a little (answered as of the last question) or a lot (rebuilt).
    #[test]
    fn the_due_index_equals_a_scan() {
        use proptest::prelude::*;
        let op = prop_oneof![
            (0u8..20, 0i64..100, 0u8..3, 0u8..3).prop_map(|(id, due, p, c)| (0u8, id, due, p, c)),
            (0u8..20).prop_map(|id| (1u8, id, 0, 0, 0)),
            (0i64..120, 0u8..4).prop_map(|(now, q)| (2u8, 0, now, q, 0)),
        ];
        proptest!(|(ops in proptest::collection::vec(op, 1..80), back in prop::bool::ANY)| {
            let mut s = OpenDossiers::default();
            let mut asked = i64::MIN;
            for (kind, id, t, p, c) in ops {
                let id = format!("D{id}");
                match kind {
                    0 => {
                        let mut dims = d(["01", "79", "48"][p as usize]);
                        dims[Dim::Channel.index()] = ["online", "post", "in_person"].get(c as usize).copied();
                        s.receive(&id, t, dims)
                    }
                    1 => s.finish(&id),
                    _ => {
                        // A clock that only moves forward, or one that may jump back by
                        // more than the slack (times here are µs, the slack 5 s).
                        let t = if back { t * 100_000 } else { t };
                        // A little back is answered as of the last question.
                        let t = if t < asked && asked - t <= CLOCK_SLACK_US { asked } else { t };
                        let now = DateTime::from_timestamp_micros(t).unwrap();
                        asked = t;
                        let by_province: HashMap<ScopeKey, u64> = scan(&s, now, &DimFilter::default(), &[Dim::ProvinceCode])
                            .into_iter()
                            .map(|(k, n)| (k.into_iter().next().flatten(), n))
                            .collect();
                        prop_assert_eq!(s.overdue_by_province(now), by_province);
                        let (filter, group_by) = match p {
                            0 => (DimFilter::default(), vec![Dim::Channel]),
                            1 => (DimFilter(vec![(Dim::Channel, "online".into())]), vec![Dim::ProvinceCode]),
                            2 => (DimFilter(vec![(Dim::ProvinceCode, "79".into())]), vec![Dim::Channel, Dim::CommuneCode]),
                            _ => (DimFilter(vec![(Dim::Source, "nope".into())]), vec![]),
                        };
                        prop_assert_eq!(s.overdue(now).grouped(&filter, &group_by), scan(&s, now, &filter, &group_by));
                        // The state restored from its parts (a snapshot) answers the same,
                        // now and after more receipts and finishes.
                        let mut restored = OpenDossiers::from_parts(s.symbols().to_vec(), s.entries()).unwrap();
                        prop_assert_eq!(restored.len(), s.len());
                        prop_assert_eq!(restored.overdue(now).grouped(&filter, &group_by), scan(&s, now, &filter, &group_by));
                        restored.finish(&id);
                        let mut copy = s.clone();
                        copy.finish(&id);
                        prop_assert_eq!(restored.overdue_by_province(now), copy.overdue_by_province(now));
                    }
                }
            }
        });
    }
}

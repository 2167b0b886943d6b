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

/// Open dossiers counted by province, split at a moving cursor in time: those due
/// before it are counted as overdue, the others wait in due-time order. Asking for a
/// later `now` moves the cursor and only touches the dossiers that fell due in
/// between, so the wall display's gauge costs O(changes), not O(open dossiers).
#[derive(Debug, Clone, Default)]
struct DueIndex {
    cursor: i64,
    /// Overdue dossiers by province symbol ([`NONE`]: no province).
    overdue: HashMap<u32, u64, foldhash::fast::RandomState>,
    /// The others by due time, then province symbol (usually one or two per time).
    pending: BTreeMap<i64, Vec<(u32, u64)>>,
}

impl DueIndex {
    fn add(&mut self, due: i64, province: u32, n: i64) {
        let add = |count: u64| count.checked_add_signed(n).expect("open-dossier counts stay non-negative");
        if due < self.cursor {
            let count = add(self.overdue.get(&province).copied().unwrap_or(0));
            if count == 0 {
                self.overdue.remove(&province);
            } else {
                self.overdue.insert(province, count);
            }
            return;
        }
        let at = self.pending.entry(due).or_default();
        match at.iter().position(|(p, _)| *p == province) {
            Some(i) => {
                at[i].1 = add(at[i].1);
                if at[i].1 == 0 {
                    at.swap_remove(i);
                }
            }
            None => {
                let count = add(0);
                if count > 0 {
                    at.push((province, count));
                }
            }
        }
        if at.is_empty() {
            self.pending.remove(&due);
        }
    }

    /// Overdue counts by province symbol at `now`; `None` if `now` is before the cursor.
    fn at(&mut self, now_us: i64) -> Option<&HashMap<u32, u64, foldhash::fast::RandomState>> {
        if now_us < self.cursor {
            return None;
        }
        let later = self.pending.split_off(&now_us);
        for (_, by_province) in std::mem::replace(&mut self.pending, later) {
            for (p, n) in by_province {
                *self.overdue.entry(p).or_default() += n;
            }
        }
        self.cursor = now_us;
        Some(&self.overdue)
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
            self.due.add(due, old[Dim::ProvinceCode.index()], -1);
        }
        self.due.add(due_at_us, dims[Dim::ProvinceCode.index()], 1);
    }

    /// A resolution or closure.
    pub fn finish(&mut self, dossier_id: &str) {
        let key = id_hash(dossier_id);
        match self.by_id.get(&key) {
            Some(Entry::Open { due, dims }) => {
                let (due, province) = (*due, dims[Dim::ProvinceCode.index()]);
                self.by_id.remove(&key);
                self.due.add(due, province, -1);
            }
            Some(Entry::FinishedFirst) => {}
            None => {
                self.by_id.insert(key, Entry::FinishedFirst);
            }
        }
    }

    /// Open dossiers due before `now`, by province (`None`: no province), from the due
    /// index: O(dossiers that fell due since the last call). Falls back to a scan if
    /// `now` is earlier than a previous call's.
    pub fn overdue_by_province(&mut self, now: DateTime<Utc>) -> HashMap<ScopeKey, u64> {
        if let Some(counts) = self.due.at(now.timestamp_micros()) {
            return counts.iter().map(|(&p, &n)| (self.symbols.get(p), n)).collect();
        }
        self.overdue(now, &DimFilter::default(), &[Dim::ProvinceCode])
            .into_iter()
            .map(|(k, n)| (k.into_iter().next().flatten(), n))
            .collect()
    }

    /// Open dossiers whose due time is before `now`, filtered and grouped.
    pub fn overdue(&self, now: DateTime<Utc>, filter: &DimFilter, group_by: &[Dim]) -> HashMap<Vec<DimValue>, u64> {
        let now_us = now.timestamp_micros();
        let mut counts: HashMap<Vec<u32>, u64> = HashMap::new();
        for e in self.by_id.values() {
            let Entry::Open { due, dims } = e else { continue };
            if *due < now_us && self.symbols.matches(dims, filter) {
                *counts.entry(group_by.iter().map(|d| dims[d.index()]).collect()).or_default() += 1;
            }
        }
        counts.into_iter().map(|(k, n)| (k.into_iter().map(|i| self.symbols.get(i)).collect(), n)).collect()
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

    fn total(s: &OpenDossiers, now_us: i64) -> u64 {
        let now = DateTime::from_timestamp_micros(now_us).unwrap();
        s.overdue(now, &DimFilter::default(), &[]).values().sum()
    }

    #[test]
    fn a_received_dossier_is_overdue_only_after_its_due_time_and_until_finished() {
        let mut s = OpenDossiers::default();
        s.receive("A", 100, d("01"));
        assert_eq!(total(&s, 100), 0, "due_at is not before now");
        assert_eq!(total(&s, 101), 1);
        s.finish("A");
        assert_eq!(total(&s, 101), 0);
        assert!(s.is_empty(), "settled dossiers are forgotten");
    }

    #[test]
    fn a_finish_that_arrives_before_the_receipt_still_closes_the_dossier() {
        let mut s = OpenDossiers::default();
        s.finish("B");
        s.receive("B", 0, d("01"));
        assert_eq!(total(&s, 1_000), 0);
        assert!(s.is_empty());
    }

    #[test]
    fn overdue_is_filtered_and_grouped_by_dimension() {
        let mut s = OpenDossiers::default();
        s.receive("A", 0, d("01"));
        s.receive("B", 0, d("01"));
        s.receive("C", 0, d("79"));
        let now = DateTime::from_timestamp_micros(10).unwrap();
        let g = s.overdue(now, &DimFilter::default(), &[Dim::ProvinceCode]);
        assert_eq!(g[&vec![Some("01".into())]], 2);
        assert_eq!(g[&vec![Some("79".into())]], 1);
        let f = s.overdue(now, &DimFilter(vec![(Dim::ProvinceCode, "79".into())]), &[]);
        assert_eq!(f.values().sum::<u64>(), 1);
        let none = s.overdue(now, &DimFilter(vec![(Dim::Channel, "online".into())]), &[]);
        assert!(none.is_empty(), "a filter on a value the dossiers lack matches none");
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
        let g = s.overdue(now, &DimFilter::default(), &all);
        assert_eq!(g[&vec![Some("01".into()), Some("online".into()), Some("00004".into()), None]], 1);
        s.receive("A", 5, d("79"));
        let g = s.overdue(now, &DimFilter::default(), &all);
        assert_eq!(g.len(), 1);
        assert_eq!(g[&vec![Some("79".into()), None, None, None]], 1, "a re-receipt replaces");
        assert_eq!(s.len(), 1);
    }

    /// The due index agrees with a scan whatever the order of receipts, finishes,
    /// re-receipts and questions.
    #[test]
    fn the_due_index_equals_a_scan() {
        use proptest::prelude::*;
        let op = prop_oneof![
            (0u8..20, 0i64..100, 0u8..3).prop_map(|(id, due, p)| (0u8, id, due, p)),
            (0u8..20).prop_map(|id| (1u8, id, 0, 0)),
            (0i64..120).prop_map(|now| (2u8, 0, now, 0)),
        ];
        proptest!(|(ops in proptest::collection::vec(op, 1..80))| {
            let mut s = OpenDossiers::default();
            for (kind, id, t, p) in ops {
                let id = format!("D{id}");
                match kind {
                    0 => s.receive(&id, t, d(["01", "79", "48"][p as usize])),
                    1 => s.finish(&id),
                    _ => {
                        let now = DateTime::from_timestamp_micros(t).unwrap();
                        let scan: HashMap<ScopeKey, u64> = s
                            .overdue(now, &DimFilter::default(), &[Dim::ProvinceCode])
                            .into_iter()
                            .map(|(k, n)| (k.into_iter().next().flatten(), n))
                            .collect();
                        prop_assert_eq!(s.overdue_by_province(now), scan);
                    }
                }
            }
        });
    }
}

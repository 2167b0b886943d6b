//! The open-dossier state behind the `overdue_open` gauge.
//!
//! A dossier is open once its `dossier.received` is seen and until a
//! `dossier.resolved` or `dossier.closed` is seen. Events may arrive in any order, so
//! a finish that arrives before its receipt is remembered. The state is a pure
//! function of the accepted events; it is rebuilt from storage on start.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use crate::counters::{Dim, DimFilter, DimValue, DimValues, ScopeKey};

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// Due time and dimensions, once the receipt is seen.
    received: Option<(i64, DimValues)>,
    finished: bool,
}

/// Open dossiers counted by province, split at a moving cursor in time: those due
/// before it are counted as overdue, the others wait in due-time order. Asking for a
/// later `now` moves the cursor and only touches the dossiers that fell due in
/// between, so the wall display's gauge costs O(changes), not O(open dossiers).
#[derive(Debug, Clone, Default)]
struct DueIndex {
    cursor: i64,
    overdue: HashMap<ScopeKey, u64>,
    pending: BTreeMap<i64, HashMap<ScopeKey, u64>>,
}

impl DueIndex {
    fn add(&mut self, due: i64, province: ScopeKey, n: i64) {
        let slot = if due < self.cursor {
            self.overdue.entry(province).or_default()
        } else {
            self.pending.entry(due).or_default().entry(province).or_default()
        };
        *slot = slot.checked_add_signed(n).expect("open-dossier counts stay non-negative");
        if due >= self.cursor {
            let at = self.pending.get_mut(&due).expect("just touched");
            at.retain(|_, n| *n > 0);
            if at.is_empty() {
                self.pending.remove(&due);
            }
        } else {
            self.overdue.retain(|_, n| *n > 0);
        }
    }

    /// Overdue counts by province at `now`; `None` if `now` is before the cursor.
    fn at(&mut self, now_us: i64) -> Option<&HashMap<ScopeKey, u64>> {
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
    by_id: HashMap<String, Entry>,
    due: DueIndex,
}

impl OpenDossiers {
    pub fn receive(&mut self, dossier_id: &str, due_at_us: i64, dims: DimValues) {
        let entry = self.by_id.entry(dossier_id.to_string()).or_insert(Entry { received: None, finished: false });
        if entry.finished {
            // Both ends seen: the dossier is settled and needs no more memory.
            self.by_id.remove(dossier_id);
            return;
        }
        let province = dims.0[Dim::ProvinceCode.index()].clone();
        if let Some((old_due, old_dims)) = entry.received.replace((due_at_us, dims)) {
            self.due.add(old_due, old_dims.0[Dim::ProvinceCode.index()].clone(), -1);
        }
        self.due.add(due_at_us, province, 1);
    }

    pub fn finish(&mut self, dossier_id: &str) {
        match self.by_id.get_mut(dossier_id) {
            Some(e) if e.received.is_some() => {
                if let Some(Entry { received: Some((due, dims)), .. }) = self.by_id.remove(dossier_id) {
                    self.due.add(due, dims.0[Dim::ProvinceCode.index()].clone(), -1);
                }
            }
            Some(e) => e.finished = true,
            None => {
                self.by_id.insert(dossier_id.to_string(), Entry { received: None, finished: true });
            }
        }
    }

    /// Open dossiers due before `now`, by province (`None`: no province), from the due
    /// index: O(dossiers that fell due since the last call). Falls back to a scan if
    /// `now` is earlier than a previous call's.
    pub fn overdue_by_province(&mut self, now: DateTime<Utc>) -> HashMap<ScopeKey, u64> {
        if let Some(counts) = self.due.at(now.timestamp_micros()) {
            return counts.clone();
        }
        self.overdue(now, &DimFilter::default(), &[Dim::ProvinceCode])
            .into_iter()
            .map(|(k, n)| (k.into_iter().next().flatten(), n))
            .collect()
    }

    /// Open dossiers whose due time is before `now`, filtered and grouped.
    pub fn overdue(&self, now: DateTime<Utc>, filter: &DimFilter, group_by: &[Dim]) -> HashMap<Vec<DimValue>, u64> {
        let now_us = now.timestamp_micros();
        let mut out: HashMap<Vec<DimValue>, u64> = HashMap::new();
        for e in self.by_id.values() {
            if e.finished {
                continue;
            }
            let Some((due, dims)) = &e.received else {
                continue;
            };
            if *due < now_us && filter.matches(dims) {
                *out.entry(group_by.iter().map(|d| dims.0[d.index()].clone()).collect()).or_default() += 1;
            }
        }
        out
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

    fn d(p: &str) -> DimValues {
        let mut v = DimValues::default();
        v.0[Dim::ProvinceCode.index()] = Some(p.into());
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

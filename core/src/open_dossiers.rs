//! The open-dossier state behind the `overdue_open` gauge.
//!
//! A dossier is open once its `dossier.received` is seen and until a
//! `dossier.resolved` or `dossier.closed` is seen. Events may arrive in any order, so
//! a finish that arrives before its receipt is remembered. The state is a pure
//! function of the accepted events; it is rebuilt from storage on start.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::counters::{Dim, DimFilter, DimValue, DimValues};

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// Due time and dimensions, once the receipt is seen.
    received: Option<(i64, DimValues)>,
    finished: bool,
}

#[derive(Debug, Clone, Default)]
pub struct OpenDossiers {
    by_id: HashMap<String, Entry>,
}

impl OpenDossiers {
    pub fn receive(&mut self, dossier_id: &str, due_at_us: i64, dims: DimValues) {
        let entry = self.by_id.entry(dossier_id.to_string()).or_insert(Entry { received: None, finished: false });
        entry.received = Some((due_at_us, dims));
        if entry.finished {
            // Both ends seen: the dossier is settled and needs no more memory.
            self.by_id.remove(dossier_id);
        }
    }

    pub fn finish(&mut self, dossier_id: &str) {
        match self.by_id.get_mut(dossier_id) {
            Some(e) if e.received.is_some() => {
                self.by_id.remove(dossier_id);
            }
            Some(e) => e.finished = true,
            None => {
                self.by_id.insert(dossier_id.to_string(), Entry { received: None, finished: true });
            }
        }
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
}

//! The dedupe index: which `event_id`s were accepted recently.
//!
//! Ids are kept as 128-bit xxh3 hashes (a collision among 10^12 ids has probability
//! ~10^-15), bucketed by the Vietnam day on which they were *accepted*, because the
//! contract counts the 35 days from the first acceptance, whatever the event time.
//! Buckets older than the window are dropped whole.
//!
//! Memory bound: about 32 bytes per id accepted within the window (16-byte hash plus
//! hash-table overhead). At 1M events a day and the default 40-day window that is
//! ~1.3 GB; at the 50k events a day of a large province, ~64 MB. The index is rebuilt
//! on start from the `event_id` columns of the files committed within the window, so
//! it needs no state of its own and always agrees with storage.

use std::collections::{HashSet, VecDeque};

use chrono::NaiveDate;
use ioc_core::ids::IdHashBuilder;
pub use ioc_core::ids::id_hash;

/// Default and minimum retention of the index, in days.
pub const DEFAULT_WINDOW_DAYS: u32 = 40;
pub const MIN_WINDOW_DAYS: u32 = 35;

#[derive(Debug)]
pub struct DedupeIndex {
    window_days: u32,
    /// Oldest first.
    days: VecDeque<(NaiveDate, HashSet<u128, IdHashBuilder>)>,
}

impl DedupeIndex {
    pub fn new(window_days: u32) -> Self {
        Self { window_days: window_days.max(MIN_WINDOW_DAYS), days: VecDeque::new() }
    }

    pub fn window_days(&self) -> u32 {
        self.window_days
    }

    pub fn contains(&self, h: u128) -> bool {
        self.days.iter().any(|(_, s)| s.contains(&h))
    }

    /// Records ids accepted on `day`.
    pub fn insert(&mut self, day: NaiveDate, h: u128) {
        match self.days.iter_mut().find(|(d, _)| *d == day) {
            Some((_, s)) => {
                s.insert(h);
            }
            None => {
                let mut s = HashSet::default();
                s.insert(h);
                self.days.push_back((day, s));
                self.days.make_contiguous().sort_by_key(|(d, _)| *d);
            }
        }
    }

    /// Drops days that fell out of the window as of `today`.
    pub fn evict(&mut self, today: NaiveDate) {
        let oldest = today - chrono::Days::new(u64::from(self.window_days));
        while self.days.front().is_some_and(|(d, _)| *d < oldest) {
            self.days.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.days.iter().map(|(_, s)| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn an_id_is_remembered_for_the_whole_window_after_acceptance() {
        let mut idx = DedupeIndex::new(35);
        let h = id_hash("e-1");
        idx.insert(day("2026-01-01"), h);
        idx.evict(day("2026-02-05")); // 35 days later: still inside
        assert!(idx.contains(h));
        idx.evict(day("2026-02-06"));
        assert!(!idx.contains(h), "dropped after the window");
        assert!(idx.is_empty());
    }

    #[test]
    fn the_window_never_goes_below_35_days() {
        assert_eq!(DedupeIndex::new(7).window_days(), 35);
        assert_eq!(DedupeIndex::new(60).window_days(), 60);
    }

    #[test]
    fn days_may_arrive_out_of_order() {
        let mut idx = DedupeIndex::new(35);
        idx.insert(day("2026-01-10"), 1);
        idx.insert(day("2026-01-01"), 2);
        idx.evict(day("2026-02-10")); // drops 01-01 (older than 01-06), keeps 01-10
        assert!(idx.contains(1));
        assert!(!idx.contains(2));
        assert_eq!(idx.len(), 1);
    }
}

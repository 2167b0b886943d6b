//! Identifiers kept as 128-bit hashes, and the hasher for maps keyed by them.
//!
//! Long-lived sets of ids (the dedupe window, the open dossiers) keep each id as its
//! 128-bit xxh3 hash: 16 bytes and no allocation instead of a `String` of ~60. Two of
//! 10^12 distinct ids collide with probability about 10^-15.
//!
//! Maps keyed by these hashes use [`IdHashBuilder`], foldhash (hashbrown's default),
//! not std's SipHash, which showed among the top costs of start-up. The ids come from
//! outside, and xxh3 has no key, so the map hash must not simply be the id hash's low
//! bits: a source could then choose ids that all land in one bucket chain. foldhash
//! seeds every map at random.

use xxhash_rust::xxh3::xxh3_128;

/// The 128-bit hash an id is kept as.
pub fn id_hash(id: &str) -> u128 {
    xxh3_128(id.as_bytes())
}

/// The hasher of maps keyed by [`id_hash`]es.
pub type IdHashBuilder = foldhash::fast::RandomState;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn distinct_ids_differ_and_maps_are_seeded_apart() {
        let h = id_hash("HS-01-1");
        assert_ne!(h, id_hash("HS-01-2"));
        assert_eq!(h, id_hash("HS-01-1"), "the id hash itself is stable");
        let (a, b) = (IdHashBuilder::default(), IdHashBuilder::default());
        let differs = (0..8u128).any(|k| a.hash_one(h ^ k) != b.hash_one(h ^ k));
        assert!(differs, "two maps hash the same key differently");
    }
}

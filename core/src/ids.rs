//! Identifiers kept as 128-bit hashes, and a hasher for maps keyed by them.
//!
//! Long-lived sets of ids (the dedupe window, the open dossiers) keep each id as its
//! 128-bit xxh3 hash: 16 bytes and no allocation instead of a `String` of ~60. Two of
//! 10^12 distinct ids collide with probability about 10^-15.
//!
//! The hash is already uniform, so maps keyed by it use [`IdHashBuilder`], which takes
//! its low 64 bits instead of hashing it again with SipHash.

use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::xxh3_128;

/// The 128-bit hash an id is kept as.
pub fn id_hash(id: &str) -> u128 {
    xxh3_128(id.as_bytes())
}

/// A [`Hasher`] for keys that are [`id_hash`]es: it passes their low 64 bits through.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for key types other than u128: fold the bytes in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
}

pub type IdHashBuilder = BuildHasherDefault<IdHasher>;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn an_id_hash_is_passed_through_and_distinct_ids_differ() {
        let h = id_hash("HS-01-1");
        assert_ne!(h, id_hash("HS-01-2"));
        assert_eq!(IdHashBuilder::default().hash_one(h), h as u64);
    }
}

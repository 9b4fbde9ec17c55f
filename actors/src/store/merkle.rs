//! Merkle trees for anti-entropy, one per bucket: `SEGMENTS` leaves, each
//! the XOR of the digests of the keys that fall in it, and a root over the
//! leaves. XOR makes a leaf incremental: a write swaps the key's old
//! digest for its new one, so the trees stay current as writes land and
//! are never rebuilt except from the store at start. Two replicas compare
//! roots, then leaves, and exchange only the keys of the leaves that
//! differ. Pure.

use crate::hash::hash_bytes;
use crate::version::Version;
use md5::{Digest, Md5};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub const SEGMENTS: usize = 64;

/// The leaves of one bucket's tree.
pub type Segments = [u64; SEGMENTS];

/// What anti-entropy compares of a key: its name and the dots of its
/// versions (a dot names one version for good). 0 for no versions.
pub fn key_digest(key: &[u8], versions: &[Version]) -> u64 {
    if versions.is_empty() {
        return 0;
    }
    // Inline: a key mostly has one version, and this runs twice a write.
    let mut dots: smallvec::SmallVec<[(&str, u64); 2]> = versions.iter().map(|v| (&*v.dot.node, v.dot.counter)).collect();
    dots.sort_unstable();
    let mut md5 = Md5::new();
    md5.update((key.len() as u32).to_be_bytes());
    md5.update(key);
    for (node, counter) in dots {
        md5.update((node.len() as u32).to_be_bytes());
        md5.update(node.as_bytes());
        md5.update(counter.to_be_bytes());
    }
    let out = md5.finalize();
    u64::from_be_bytes([out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7]])
}

/// The leaf a key falls in (the key hash's low bits; its high bits
/// chose the bucket).
pub fn segment_of(key: &[u8]) -> usize {
    hash_bytes(key) as usize % SEGMENTS
}

/// The root of a bucket's tree; 0 for a bucket holding nothing, so an
/// empty bucket is known without listing it.
pub fn root(segments: &Segments) -> u64 {
    if segments.iter().all(|&s| s == 0) {
        return 0;
    }
    root_of_roots(segments)
}

/// A digest over a list of hashes (a tree's leaves, or many trees' roots).
pub fn root_of_roots(hashes: &[u64]) -> u64 {
    let mut md5 = Md5::new();
    for h in hashes {
        md5.update(h.to_be_bytes());
    }
    let out = md5.finalize();
    u64::from_be_bytes([out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7]])
}

/// The leaves whose hashes differ.
pub fn differing(a: &[u64], b: &[u64]) -> Vec<usize> {
    (0..SEGMENTS).filter(|&i| a.get(i) != b.get(i)).collect()
}

/// Every bucket's tree. XOR commutes, so a write changes its leaf with one
/// atomic XOR and no lock: writers never wait on one another, and a copy
/// of a tree taken while writes land is at worst a write behind, as any
/// copy is by the time a peer compares it.
pub struct MerkleForest {
    buckets: Vec<[AtomicU64; SEGMENTS]>,
}

impl MerkleForest {
    pub fn new(number_of_buckets: u32) -> Self {
        MerkleForest { buckets: (0..number_of_buckets).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect() }
    }

    /// A key's versions changed from `old` to `new` digests.
    pub fn update(&self, bucket: u32, key: &[u8], old: u64, new: u64) {
        if old != new {
            self.buckets[bucket as usize][segment_of(key)].fetch_xor(old ^ new, Relaxed);
        }
    }

    /// Forgets every tree (before they are built again from the store).
    pub fn clear(&self) {
        for leaf in self.buckets.iter().flatten() {
            leaf.store(0, Relaxed);
        }
    }

    pub fn segments(&self, bucket: u32) -> Segments {
        std::array::from_fn(|i| self.buckets[bucket as usize][i].load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{stamp, Payload, VClock};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn version(node: &str, v: &str) -> Version {
        let p = Payload { value: Bytes::from(v.to_string()), flags: 0, expires_at: 0, deleted: false };
        stamp(node, &[], &VClock::new(), p, 1, 10)
    }

    /// Builds a forest from scratch for a set of keys.
    fn forest(keys: &[(String, Vec<Version>)]) -> MerkleForest {
        let f = MerkleForest::new(1);
        for (k, vs) in keys {
            f.update(0, k.as_bytes(), 0, key_digest(k.as_bytes(), vs));
        }
        f
    }

    #[test]
    fn digests_name_the_versions_not_their_order() {
        let (a, b) = (version("a", "x"), version("b", "y"));
        assert_eq!(key_digest(b"k", &[a.clone(), b.clone()]), key_digest(b"k", &[b.clone(), a.clone()]));
        assert_ne!(key_digest(b"k", &[a.clone()]), key_digest(b"k", &[a.clone(), b]));
        assert_ne!(key_digest(b"k", &[a.clone()]), key_digest(b"j", &[a]));
        assert_eq!(key_digest(b"k", &[]), 0);
    }

    #[test]
    fn incremental_updates_equal_a_rebuild() {
        let f = MerkleForest::new(1);
        let (v1, v2) = (version("a", "1"), version("a", "2"));
        f.update(0, b"k", 0, key_digest(b"k", &[v1.clone()]));
        f.update(0, b"j", 0, key_digest(b"j", &[v1.clone()]));
        f.update(0, b"k", key_digest(b"k", &[v1.clone()]), key_digest(b"k", &[v2.clone()]));
        f.update(0, b"j", key_digest(b"j", &[v1]), 0);
        let rebuilt = forest(&[("k".into(), vec![v2])]);
        assert_eq!(f.segments(0), rebuilt.segments(0));
    }

    proptest! {
        /// The diff finds exactly the leaves holding the keys that differ.
        #[test]
        fn the_diff_finds_exactly_the_differing_keys(n in 1usize..200, changed in proptest::collection::btree_set(0usize..200, 0..10)) {
            let base: Vec<(String, Vec<Version>)> = (0..n).map(|i| (format!("key-{i}"), vec![version("a", "v")])).collect();
            let mut other = base.clone();
            for &c in changed.iter().filter(|&&c| c < n) {
                other[c].1 = vec![version("b", "w")];
            }
            let (fa, fb) = (forest(&base), forest(&other));
            let diff = differing(&fa.segments(0), &fb.segments(0));
            let expected: std::collections::BTreeSet<usize> =
                changed.iter().filter(|&&c| c < n).map(|&c| segment_of(format!("key-{c}").as_bytes())).collect();
            prop_assert_eq!(diff.into_iter().collect::<std::collections::BTreeSet<_>>(), expected.clone());
            prop_assert_eq!(root(&fa.segments(0)) == root(&fb.segments(0)), expected.is_empty());
        }
    }
}

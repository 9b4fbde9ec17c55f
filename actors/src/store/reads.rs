//! When each key was last read by a client since this replica last wrote
//! it: kept in memory (from the node's start, like memcached's own access
//! record) for the meta protocol's `h` (hit before) and `l` (last access).
//! A write forgets the key's record, so "read since written" never hangs
//! on comparing two clocks within one millisecond.
//!
//! The memory engine keeps the record beside the key's versions (as
//! memcached keeps it in the item: the lookup that found them has it at
//! hand); the disk engine beside a key's cached versions while they are
//! cached, and in a [`ReadLog`] otherwise, where keys are held by a 64-bit
//! hash under this process's random hash keys, so a record costs 16 bytes
//! and no copy of the key.

use crate::version::Version;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

const STRIPES: usize = 64;

pub struct ReadLog {
    hasher: std::collections::hash_map::RandomState,
    stripes: Vec<Mutex<HashMap<u64, u64>>>,
}

impl Default for ReadLog {
    fn default() -> Self {
        ReadLog { hasher: Default::default(), stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

/// Whether a client's read of these versions is a hit, and so recorded.
pub fn is_hit(versions: &[Version], now_ms: u64) -> bool {
    super::any_live(versions, now_ms / 1000)
}

/// Records a client read at `now_ms` in a key's `record` (0: none), and
/// answers when it was read before. A clock stepped back never makes a
/// read look older than one before.
pub fn mark(record: &mut u64, now_ms: u64) -> u64 {
    let before = *record;
    *record = before.max(now_ms);
    before
}

impl ReadLog {
    fn stripe(&self, key: &[u8]) -> (u64, std::sync::MutexGuard<'_, HashMap<u64, u64>>) {
        let hash = self.hasher.hash_one(key);
        let stripe = self.stripes[hash as usize % STRIPES].lock().unwrap_or_else(|e| e.into_inner());
        (hash, stripe)
    }

    /// Records a client read of `key` at `now_ms`, and answers when it was
    /// read before that (0: not since this node started).
    pub fn mark(&self, key: &[u8], now_ms: u64) -> u64 {
        let (hash, mut stripe) = self.stripe(key);
        mark(stripe.entry(hash).or_insert(0), now_ms)
    }

    /// The key was written (or removed): not read since.
    pub fn forget(&self, key: &[u8]) {
        self.take(key);
    }

    /// Takes the key's record out (0: none), for a holder that keeps it
    /// beside the key for a while (the disk engine's read cache).
    pub fn take(&self, key: &[u8]) -> u64 {
        let (hash, mut stripe) = self.stripe(key);
        stripe.remove(&hash).unwrap_or(0)
    }

    /// Hands a record taken out back (0: none to keep).
    pub fn put_back(&self, key: &[u8], record: u64) {
        if record != 0 {
            let (hash, mut stripe) = self.stripe(key);
            mark(stripe.entry(hash).or_insert(0), record);
        }
    }

    /// The key's record, left in place (0: none).
    #[cfg(test)]
    pub fn peek(&self, key: &[u8]) -> u64 {
        let (hash, stripe) = self.stripe(key);
        stripe.get(&hash).copied().unwrap_or(0)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.stripes.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_answers_the_one_before_it() {
        let log = ReadLog::default();
        assert_eq!(log.mark(b"k", 1_000), 0, "never read");
        assert_eq!(log.mark(b"k", 2_500), 1_000);
        assert_eq!(log.mark(b"other", 3_000), 0, "keys apart");
        assert_eq!(log.mark(b"k", 2_000), 2_500, "a clock stepped back");
        assert_eq!(log.mark(b"k", 4_000), 2_500, "the later read was kept");
        log.forget(b"k");
        assert_eq!(log.mark(b"k", 5_000), 0, "not read since it was written");
        assert_eq!(log.len(), 2);
    }
}

//! A bounded cache of decoded sibling sets in front of the disk engine: a
//! point read that hits it costs a hash lookup, not an LSM search and a
//! decode. Writes go through it (the engine first, then the cache), and a
//! read that missed fills it only if no write reached its shard meanwhile,
//! so a slow read never puts an older set back over a newer one.

use super::engine::InlineKey;
use crate::version::Version;
use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 64;
/// What an entry costs beyond its key and values (maps, clocks, dots).
const ENTRY_OVERHEAD: usize = 96;

pub struct ReadCache {
    shards: Vec<Mutex<Shard>>,
    budget_per_shard: usize,
}

#[derive(Default)]
struct Shard {
    /// As the memory engine's tables: a short key and a single version in
    /// the slot itself, so a hit compares and copies without a cache miss
    /// more (both were allocations of their own).
    map: HashMap<InlineKey, smallvec::SmallVec<[Version; 1]>>,
    bytes: usize,
    /// Writes seen: a read's fill is dropped if this moved since its miss.
    writes: u64,
}

/// A read that missed: hand it back to `fill` with what the engine had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Miss {
    shard: usize,
    writes: u64,
}

fn cost(key: &[u8], versions: &[Version]) -> usize {
    key.len() + versions.iter().map(|v| v.value.len() + ENTRY_OVERHEAD).sum::<usize>()
}

impl Shard {
    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= cost(key, &old);
        }
    }

    fn insert(&mut self, key: &[u8], versions: &[Version], budget: usize) {
        self.remove(key);
        let size = cost(key, versions);
        if versions.is_empty() || size > budget {
            return;
        }
        while self.bytes + size > budget {
            // Any entry will do: the map's order is as good as random.
            let Some(victim) = self.map.keys().next().cloned() else { break };
            self.remove(&victim);
        }
        self.bytes += size;
        self.map.insert(InlineKey::from_slice(key), versions.into());
    }
}

impl ReadCache {
    /// A cache of at most about `budget` bytes; 0 turns it off.
    pub fn new(budget: usize) -> Self {
        ReadCache { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), budget_per_shard: budget / SHARDS }
    }

    pub fn enabled(&self) -> bool {
        self.budget_per_shard > 0
    }

    fn shard(&self, bucket: u32) -> (usize, std::sync::MutexGuard<'_, Shard>) {
        let i = bucket as usize % SHARDS;
        (i, self.shards[i].lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The cached set of an engine key in `bucket`, or the miss to fill.
    pub fn get(&self, bucket: u32, key: &[u8]) -> Result<Vec<Version>, Miss> {
        let (shard, guard) = self.shard(bucket);
        match guard.map.get(key) {
            Some(versions) => Ok(versions.to_vec()),
            None => Err(Miss { shard, writes: guard.writes }),
        }
    }

    /// Caches what the engine answered a miss, unless a write came since.
    pub fn fill(&self, miss: Miss, key: &[u8], versions: &[Version]) {
        let mut guard = self.shards[miss.shard].lock().unwrap_or_else(|e| e.into_inner());
        if guard.writes == miss.writes {
            guard.insert(key, versions, self.budget_per_shard);
        }
    }

    /// A write the engine took: the cache holds the new set (none: gone).
    pub fn put(&self, bucket: u32, key: &[u8], versions: &[Version]) {
        let (_, mut guard) = self.shard(bucket);
        guard.writes += 1;
        guard.insert(key, versions, self.budget_per_shard);
    }

    /// A write that may or may not have reached the engine: forget the key.
    pub fn forget(&self, bucket: u32, key: &[u8]) {
        let (_, mut guard) = self.shard(bucket);
        guard.writes += 1;
        guard.remove(key);
    }

    pub fn clear(&self) {
        for shard in &self.shards {
            let mut guard = shard.lock().unwrap_or_else(|e| e.into_inner());
            guard.writes += 1;
            guard.map.clear();
            guard.bytes = 0;
        }
    }

    /// Bytes the cache holds now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{stamp, Payload, VClock};
    use bytes::Bytes;

    fn set(value: &str) -> Vec<Version> {
        let payload = Payload { value: Bytes::from(value.to_string()), flags: 0, expires_at: 0, deleted: false };
        vec![stamp("n1", &[], &VClock::new(), payload, 1, 10)]
    }

    #[test]
    fn a_fill_after_a_miss_is_served_and_writes_replace_it() {
        let cache = ReadCache::new(1 << 20);
        let miss = cache.get(1, b"k").unwrap_err();
        cache.fill(miss, b"k", &set("old"));
        assert_eq!(cache.get(1, b"k").unwrap()[0].value, Bytes::from("old"));
        cache.put(1, b"k", &set("new"));
        assert_eq!(cache.get(1, b"k").unwrap()[0].value, Bytes::from("new"));
        cache.put(1, b"k", &[]);
        assert!(cache.get(1, b"k").is_err(), "a removed key is not cached");
    }

    #[test]
    fn a_slow_read_never_puts_an_older_set_back() {
        let cache = ReadCache::new(1 << 20);
        let miss = cache.get(1, b"k").unwrap_err();
        // A write lands while the read is at the engine.
        cache.put(1, b"k", &set("new"));
        cache.fill(miss, b"k", &set("old"));
        assert_eq!(cache.get(1, b"k").unwrap()[0].value, Bytes::from("new"));
        // The same after a write whose outcome is unknown.
        let miss = cache.get(2, b"j").unwrap_err();
        cache.forget(2, b"j");
        cache.fill(miss, b"j", &set("old"));
        assert!(cache.get(2, b"j").is_err());
    }

    #[test]
    fn it_stays_within_its_budget() {
        let cache = ReadCache::new(64 * 4096);
        let value = "v".repeat(1000);
        for i in 0..2000u32 {
            cache.put(i, format!("key{i}").as_bytes(), &set(&value));
        }
        assert!(cache.bytes() <= 64 * 4096, "{} bytes", cache.bytes());
        assert!(cache.bytes() > 64 * 2048, "and it is used: {} bytes", cache.bytes());
        let off = ReadCache::new(0);
        off.put(1, b"k", &set("x"));
        assert!(!off.enabled() && off.get(1, b"k").is_err());
    }
}

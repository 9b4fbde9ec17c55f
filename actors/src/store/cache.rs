//! A bounded cache of decoded sibling sets in front of the disk engine: a
//! point read that hits it costs a hash lookup, not an LSM search and a
//! decode. Writes go through it (the engine first, then the cache), and a
//! read that missed fills it only if no write reached its shard meanwhile,
//! so a slow read never puts an older set back over a newer one.
//!
//! A cached key's read record (`reads`) lives in its entry, so a hit finds
//! it without a second table; the [`ReadLog`] holds the records of keys
//! not cached. A record moves between the two under the shard's lock, as
//! its key enters or leaves the cache, so it is always in exactly one.

use super::engine::InlineKey;
use super::reads::{self, ReadLog};
use crate::version::Version;
use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 64;
/// What an entry costs beyond its key and values (maps, clocks, dots).
const ENTRY_OVERHEAD: usize = 96;

pub struct ReadCache {
    shards: Vec<Mutex<Shard>>,
    budget_per_shard: usize,
    /// The read records of the keys not cached.
    log: ReadLog,
}

#[derive(Default)]
struct Shard {
    /// As the memory engine's tables: a short key and a single version in
    /// the slot itself, so a hit compares and copies without a cache miss
    /// more (both were allocations of their own).
    map: HashMap<InlineKey, Cached>,
    bytes: usize,
    /// Writes seen: a read's fill is dropped if this moved since its miss.
    writes: u64,
}

struct Cached {
    versions: smallvec::SmallVec<[Version; 1]>,
    /// When a client last read the key since it was written (0: not since).
    last_read_ms: u64,
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
    /// Drops the key's entry, answering its read record (0: none).
    fn remove(&mut self, key: &[u8]) -> u64 {
        match self.map.remove(key) {
            Some(old) => {
                self.bytes -= cost(key, &old.versions);
                old.last_read_ms
            }
            None => 0,
        }
    }

    /// Caches the key's versions with this read record; one that cannot be
    /// cached (empty, or over the budget) hands the record to the log, as
    /// does every entry evicted to make room.
    fn insert(&mut self, key: &[u8], versions: &[Version], last_read_ms: u64, budget: usize, log: &ReadLog) {
        let size = cost(key, versions);
        if versions.is_empty() || size > budget {
            log.put_back(key, last_read_ms);
            return;
        }
        while self.bytes + size > budget {
            // Any entry will do: the map's order is as good as random.
            let Some(victim) = self.map.keys().next().cloned() else { break };
            let record = self.remove(&victim);
            log.put_back(&victim, record);
        }
        self.bytes += size;
        self.map.insert(InlineKey::from_slice(key), Cached { versions: versions.into(), last_read_ms });
    }
}

impl ReadCache {
    /// A cache of at most about `budget` bytes; 0 turns it off.
    pub fn new(budget: usize) -> Self {
        ReadCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            budget_per_shard: budget / SHARDS,
            log: ReadLog::default(),
        }
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
            Some(cached) => Ok(cached.versions.to_vec()),
            None => Err(Miss { shard, writes: guard.writes }),
        }
    }

    /// A client's read: the cached set and, if it is a hit, when the key
    /// was read before (recorded in the entry); or the miss to fill.
    pub fn client_get(&self, bucket: u32, key: &[u8], now_ms: u64) -> Result<(Vec<Version>, u64), Miss> {
        let (shard, mut guard) = self.shard(bucket);
        match guard.map.get_mut(key) {
            Some(cached) => Ok(super::engine::client_read_held(&cached.versions, &mut cached.last_read_ms, now_ms)),
            None => Err(Miss { shard, writes: guard.writes }),
        }
    }

    /// Records a client's read of versions it had from the engine, wherever
    /// the key's record is now; answers when it was read before.
    pub fn record_read(&self, bucket: u32, key: &[u8], now_ms: u64) -> u64 {
        let (_, mut guard) = self.shard(bucket);
        match guard.map.get_mut(key) {
            Some(cached) => reads::mark(&mut cached.last_read_ms, now_ms),
            None => self.log.mark(key, now_ms),
        }
    }

    /// Caches what the engine answered a miss, unless a write came since;
    /// the key's record comes along from the log.
    pub fn fill(&self, miss: Miss, key: &[u8], versions: &[Version]) {
        let mut guard = self.shards[miss.shard].lock().unwrap_or_else(|e| e.into_inner());
        if guard.writes == miss.writes {
            // Another read may have filled it meanwhile, with the record.
            let record = guard.remove(key).max(self.log.take(key));
            guard.insert(key, versions, record, self.budget_per_shard, &self.log);
        }
    }

    /// A write the engine took: the cache holds the new set (none: gone),
    /// not read since.
    pub fn put(&self, bucket: u32, key: &[u8], versions: &[Version]) {
        let (_, mut guard) = self.shard(bucket);
        guard.writes += 1;
        guard.remove(key);
        self.log.forget(key);
        guard.insert(key, versions, 0, self.budget_per_shard, &self.log);
    }

    /// A write that may or may not have reached the engine: forget the
    /// key's set (its read record is kept, in the log).
    pub fn forget(&self, bucket: u32, key: &[u8]) {
        let (_, mut guard) = self.shard(bucket);
        guard.writes += 1;
        let record = guard.remove(key);
        self.log.put_back(key, record);
    }

    /// Forgets every cached set; their read records are kept, in the log.
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut guard = shard.lock().unwrap_or_else(|e| e.into_inner());
            guard.writes += 1;
            for (key, cached) in guard.map.drain() {
                self.log.put_back(&key, cached.last_read_ms);
            }
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

    #[test]
    fn a_read_record_stays_with_its_key_in_the_cache_or_the_log() {
        // Room for one 1 KB entry a shard: a second key in a shard evicts.
        let cache = ReadCache::new(64 * 1200);
        let value = "v".repeat(1000);
        let miss = cache.client_get(1, b"k", 10_000).unwrap_err();
        cache.fill(miss, b"k", &set(&value));
        assert_eq!(cache.record_read(1, b"k", 10_000), 0, "first read");
        assert_eq!(cache.client_get(1, b"k", 11_000).unwrap().1, 10_000, "a hit answers the read before");
        assert_eq!(cache.log.peek(b"k"), 0, "recorded in the entry, not the log");

        cache.put(1 + SHARDS as u32, b"j", &set(&value));
        assert!(cache.get(1, b"k").is_err(), "evicted by a key of the same shard");
        assert_eq!(cache.log.peek(b"k"), 11_000, "its record went to the log");
        let miss = cache.client_get(1, b"k", 12_000).unwrap_err();
        cache.fill(miss, b"k", &set(&value));
        assert_eq!(cache.log.peek(b"k"), 0, "and came back with it");
        assert_eq!(cache.client_get(1, b"k", 12_000).unwrap().1, 11_000);

        cache.forget(1, b"k");
        assert_eq!(cache.log.peek(b"k"), 12_000, "a write of unknown outcome keeps the record");
        cache.put(1, b"k", &set(&value));
        assert_eq!(cache.client_get(1, b"k", 13_000).unwrap().1, 0, "a write resets it");
        cache.clear();
        assert_eq!(cache.record_read(1, b"k", 14_000), 13_000, "clearing the cache keeps the records");

        let off = ReadCache::new(0);
        assert_eq!(off.record_read(1, b"k", 1_000), 0);
        assert_eq!(off.record_read(1, b"k", 2_000), 1_000, "with no cache, the log keeps them");
        off.put(1, b"k", &set("x"));
        assert_eq!(off.record_read(1, b"k", 3_000), 0, "and a write resets them");
    }
}

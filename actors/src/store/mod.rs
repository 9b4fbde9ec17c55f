//! store: a node's local data. `Store` keeps each key's sibling set in an
//! engine (memory or disk), merges replica writes by clock, and runs client
//! writes at the coordinator atomically (check, stamp, apply under one key
//! lock). The actor is a pool of threads (`SyncArbiter`), since disk work
//! must not block an event loop.

mod cache;
mod engine;
pub mod merkle;
mod reads;
pub mod serve;
mod write;

pub use engine::{disk_capacity, DiskEngine, Engine, Entry, MemoryEngine};
use merkle::{key_digest, segment_of, MerkleForest, Segments};
pub use write::{plan, Condition, Mutation, Write, WriteOutcome};

use crate::error::{Error, Result};
use crate::hash::bucket_of;
use crate::stats::NodeStats;
use crate::version::{self, Version};
use actix::prelude::*;
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const KEY_LOCKS: usize = 256;

thread_local! {
    /// The simulator's wall clock on its thread: tokio's paused clock from
    /// a fixed moment, so a run stamps the same times every time. None on
    /// a real node.
    static SIMULATED_WALL: std::cell::Cell<Option<(tokio::time::Instant, u64)>> = const { std::cell::Cell::new(None) };
}

/// Runs this thread's wall clock on tokio's clock, from `epoch_ms` now.
pub fn simulate_wall_clock(epoch_ms: u64) {
    SIMULATED_WALL.with(|wall| wall.set(Some((tokio::time::Instant::now(), epoch_ms))));
}

fn simulated_millis() -> Option<u64> {
    let (start, epoch_ms) = SIMULATED_WALL.with(|wall| wall.get())?;
    Some(epoch_ms + start.elapsed().as_millis() as u64)
}

/// Milliseconds since the epoch, exact: what stamps a version.
pub fn now_millis() -> u64 {
    if let Some(ms) = simulated_millis() {
        return ms;
    }
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Milliseconds since the epoch from the kernel's coarse clock, at most a
/// tick (1-4 ms) behind `now_millis`: it is read without the timestamp
/// counter, where every request reads the time two or three times. For
/// what needs no finer: expiry (memcached's own clock moves once a
/// second) and when a key was read.
pub fn coarse_now_millis() -> u64 {
    simulated_millis().unwrap_or_else(|| coarse_clock_millis(libc::CLOCK_REALTIME_COARSE))
}

/// Milliseconds on the coarse monotonic clock (from an arbitrary start):
/// how long a client has been idle, cheaply, on every read.
pub fn coarse_monotonic_millis() -> u64 {
    coarse_clock_millis(libc::CLOCK_MONOTONIC_COARSE)
}

fn coarse_clock_millis(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write; both clocks exist on
    // every Linux since 2.6.32, and a failure leaves it at zero.
    unsafe { libc::clock_gettime(clock, &mut now) };
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

/// Unix seconds, for expiry: from the coarse clock.
pub fn now_secs() -> u64 {
    coarse_now_millis() / 1000
}

/// A node's wall clock: the machine's (or the simulator's), moved by a
/// skew the simulator sets per node, so one node's clock can run ahead of
/// or behind the others'. Version stamps, expiry and tombstone grace read
/// it.
#[derive(Clone, Default)]
pub struct WallClock(Arc<std::sync::atomic::AtomicI64>);

impl WallClock {
    /// Milliseconds since the epoch, exact: what stamps a version.
    pub fn millis(&self) -> u64 {
        self.skewed(now_millis())
    }

    /// Milliseconds from the coarse clock (`coarse_now_millis`).
    pub fn coarse_millis(&self) -> u64 {
        self.skewed(coarse_now_millis())
    }

    /// Unix seconds, for expiry.
    pub fn secs(&self) -> u64 {
        self.coarse_millis() / 1000
    }

    /// Runs this clock `skew_ms` ahead of the machine's (behind if negative).
    pub fn set_skew(&self, skew_ms: i64) {
        self.0.store(skew_ms, Relaxed);
    }

    fn skewed(&self, ms: u64) -> u64 {
        ms.saturating_add_signed(self.0.load(Relaxed))
    }
}

/// The versions of a set a reader is shown at `now`: the live ones. A
/// tombstone removes what its delete had seen (its clock covers them);
/// a value written concurrently, which the delete could not have seen,
/// stays a sibling and is read, as Dynamo keeps it. Ordering the two by
/// their stamps would let a skewed clock hide an acknowledged write.
fn shown(versions: &[Version], now_secs: u64) -> impl Iterator<Item = &Version> + Clone {
    versions.iter().filter(move |v| v.is_live(now_secs))
}

/// The live versions of a set at `now`: what a reader sees.
pub fn live_versions(versions: &[Version], now_secs: u64) -> Vec<Version> {
    shown(versions, now_secs).cloned().collect()
}

/// Whether a reader sees any value in these versions at `now`.
pub fn any_live(versions: &[Version], now_secs: u64) -> bool {
    shown(versions, now_secs).next().is_some()
}

pub struct StoreSettings {
    /// This node's name: the node part of the dots it stamps.
    pub node: String,
    pub number_of_buckets: u32,
    pub max_clock_entries: usize,
    /// fsync before acknowledging each write (survives power loss).
    pub fsync: bool,
    /// The most value bytes the store holds (the memory engine's budget);
    /// a write past it is refused as out of memory.
    pub max_bytes: Option<u64>,
}

/// Whether a store takes writes: the store alone sets it (a failed write
/// clears it, a recovery sets it again); the request path, membership and
/// sync read it.
#[derive(Clone, Debug)]
pub struct Writable(Arc<std::sync::atomic::AtomicBool>);

impl Writable {
    pub fn get(&self) -> bool {
        self.0.load(Relaxed)
    }
}

pub struct Store {
    engine: Box<dyn Engine>,
    settings: StoreSettings,
    stats: Arc<NodeStats>,
    /// A Merkle tree per bucket, kept current by every write.
    merkle: MerkleForest,
    /// Striped key locks: a read-modify-write of one key is atomic. Each
    /// holds the last dot counter this node stamped under it.
    locks: Vec<Mutex<u64>>,
    /// False once the engine failed a write (a full disk): writes are then
    /// refused at once, reads go on, and `recover` tries to take writes
    /// again.
    writable: Writable,
    clock: WallClock,
}

/// Free space under which a read-only store does not try writes again.
const FREE_TO_RECOVER: u64 = 4 << 20;

impl Store {
    pub fn new(engine: Box<dyn Engine>, settings: StoreSettings, stats: Arc<NodeStats>) -> Result<Self> {
        let merkle = MerkleForest::new(settings.number_of_buckets);
        let locks = (0..KEY_LOCKS).map(|_| Mutex::new(0)).collect();
        let writable = Writable(Arc::new(std::sync::atomic::AtomicBool::new(true)));
        let store = Store { engine, settings, stats, merkle, locks, writable, clock: WallClock::default() };
        store.load()?;
        Ok(store)
    }

    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// This node's wall clock.
    pub fn clock(&self) -> &WallClock {
        &self.clock
    }

    /// Whether a write may wait now: with fsync on, or while the engine
    /// holds writes back.
    pub fn writes_may_wait(&self) -> bool {
        self.settings.fsync || self.engine.writes_may_wait()
    }

    fn bucket(&self, key: &[u8]) -> u32 {
        bucket_of(key, self.settings.number_of_buckets)
    }

    /// The lock of a key's read-modify-writes: striped by bucket (already
    /// computed, and spread evenly by MD5), so no second hash per request.
    fn lock(&self, bucket: u32) -> std::sync::MutexGuard<'_, u64> {
        self.locks[bucket as usize % KEY_LOCKS].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stored version of a key, tombstones and expired ones included:
    /// replicas reconcile on the whole set.
    pub fn read(&self, key: &[u8]) -> Result<Vec<Version>> {
        self.engine.read(self.bucket(key), key)
    }

    /// A client's read: the key's versions, as `read` answers them, and
    /// when a client last read the key through this replica since the
    /// replica's last write of it, in milliseconds since the epoch (0: not
    /// since, or not since this node started).
    pub fn client_read(&self, key: &[u8]) -> Result<(Vec<Version>, u64)> {
        self.replica_read(key, true)
    }

    /// A replica's read for a coordinator: a client's is recorded and
    /// answers when the key was read before (`client_read`); any other (a
    /// conditional write's catch-up, the admin tool) is not, and answers 0.
    pub fn replica_read(&self, key: &[u8], client_read: bool) -> Result<(Vec<Version>, u64)> {
        self.replica_read_in(self.bucket(key), key, client_read)
    }

    /// `replica_read` for a caller that knows the key's bucket already (a
    /// coordinator routed by it): one MD5 a request, not two.
    pub fn replica_read_in(&self, bucket: u32, key: &[u8], client_read: bool) -> Result<(Vec<Version>, u64)> {
        self.check_bucket(bucket, key);
        if client_read {
            self.engine.client_read(bucket, key, self.clock.coarse_millis())
        } else {
            self.engine.read(bucket, key).map(|versions| (versions, 0))
        }
    }

    /// Starts loading what a lookup in `bucket` reads first: a hint for a
    /// coordinator that has just routed a request there.
    pub fn prefetch(&self, bucket: u32) {
        self.engine.prefetch(bucket);
    }

    fn check_bucket(&self, bucket: u32, key: &[u8]) {
        debug_assert_eq!(bucket, self.bucket(key), "a caller's bucket for a key is the store's");
    }

    /// Merges versions from another replica (or read repair) by clock. A
    /// stand-in for a down home node also records a hint, before it acks.
    pub fn merge(&self, key: &[u8], incoming: &[Version], hint: Option<&str>) -> Result<()> {
        self.merge_in(self.bucket(key), key, incoming, hint)
    }

    /// `merge` for a caller that knows the key's bucket already.
    pub fn merge_in(&self, bucket: u32, key: &[u8], incoming: &[Version], hint: Option<&str>) -> Result<()> {
        self.check_bucket(bucket, key);
        let _guard = self.lock(bucket);
        let current = self.engine.read(bucket, key)?;
        let merged = version::sync(&current, incoming);
        if merged != current {
            self.replace(bucket, key, &current, &merged)?;
        }
        if let Some(home) = hint {
            self.engine_write(|| self.engine.add_hint(home, key))?;
            self.sync_if_asked()?;
        }
        Ok(())
    }

    fn sync_if_asked(&self) -> Result<()> {
        if self.settings.fsync {
            self.engine.sync()?;
        }
        Ok(())
    }

    /// Every hint held: (home node, key, the key's versions now).
    pub fn hints(&self) -> Result<Vec<(String, Bytes, Vec<Version>)>> {
        self.engine
            .hints()?
            .into_iter()
            .map(|(home, key)| {
                let versions = self.read(&key)?;
                Ok((home, key, versions))
            })
            .collect()
    }

    pub fn hint_counts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut counts = std::collections::BTreeMap::new();
        for (home, _) in self.engine.hints()? {
            *counts.entry(home).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Drops a delivered hint, unless the key changed since it was read
    /// (then the newer versions still need delivering).
    /// With `drop_copy` (this node is not a home replica of the key, and no
    /// other hint is held for it), the stand-in's copy goes too: the key is
    /// then on exactly its N homes. A write that arrived meanwhile changed
    /// the key, so then neither hint nor copy is dropped.
    pub fn drop_hint(&self, home: &str, key: &[u8], delivered: &[Version], drop_copy: bool) -> Result<bool> {
        let bucket = self.bucket(key);
        let _guard = self.lock(bucket);
        let current = self.engine.read(bucket, key)?;
        if current != delivered {
            return Ok(false);
        }
        self.engine_write(|| self.engine.remove_hint(home, key))?;
        if drop_copy && !current.is_empty() {
            self.replace(bucket, key, &current, &[])?;
        }
        Ok(true)
    }

    /// Runs a client write as its coordinator: checks the condition against
    /// the live values, stamps a new version with the context of everything
    /// held, and stores it, all under the key's lock.
    pub fn coordinate(&self, key: &[u8], write: &Write) -> Result<WriteOutcome> {
        self.coordinate_in(self.bucket(key), key, write)
    }

    /// `coordinate` for a caller that knows the key's bucket already.
    pub fn coordinate_in(&self, bucket: u32, key: &[u8], write: &Write) -> Result<WriteOutcome> {
        self.check_bucket(bucket, key);
        let mut last_dot = self.lock(bucket);
        let current = self.engine.read(bucket, key)?;
        let now_ms = self.clock.millis();
        let live = live_versions(&current, now_ms / 1000);
        let payload = match plan(write, &live, || version::cas_token(key, &live)) {
            Ok(payload) => payload,
            Err(outcome) => return Ok(outcome),
        };
        // Keep sibling order causal even if the wall clock stepped back.
        let newest = current.iter().map(|v| v.timestamp + 1).max().unwrap_or(0);
        let mut stamped = version::stamp(
            &self.settings.node,
            &current,
            &version::context(&current),
            payload,
            now_ms.max(newest),
            self.settings.max_clock_entries,
        );
        // Never a dot this node stamped before, even for a key whose
        // history it no longer holds (a stand-in that handed its copy off,
        // a memory node restarted): replicas would take the new version for
        // the old one, already seen, and drop it. Above the last counter of
        // this lock's keys, and above the wall clock in µs, which a restart
        // does not set back.
        stamped.dot.counter = stamped.dot.counter.max(*last_dot + 1).max(now_ms * 1000);
        *last_dot = stamped.dot.counter;
        let merged = version::sync(&current, std::slice::from_ref(&stamped));
        self.replace(bucket, key, &current, &merged)?;
        Ok(WriteOutcome::Stored { new: stamped, held: merged })
    }

    /// Runs one engine write, unless the store is read-only; a failed write
    /// makes it read-only (fjall refuses every write after one fails, and a
    /// full disk fails them all anyway) until `recover` succeeds.
    fn engine_write<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.is_writable() {
            return Err(Error::ReadOnly(self.read_only_reason()));
        }
        write().map_err(|e| {
            if self.writable.0.swap(false, Relaxed) {
                tracing::error!("the store failed a write and takes none until it can again: {e}");
                self.stats.store_read_only.store(1, Relaxed);
            }
            Error::ReadOnly(format!("{}: {e}", self.read_only_reason()))
        })
    }

    pub fn is_writable(&self) -> bool {
        self.writable.get()
    }

    /// Whether this store takes writes, for the parts of the node that
    /// route around a read-only store.
    pub fn writable(&self) -> Writable {
        self.writable.clone()
    }

    fn read_only_reason(&self) -> String {
        match self.engine.free_bytes() {
            Some(free) if free < FREE_TO_RECOVER => format!("disk full ({free} bytes free)"),
            _ => "the engine failed a write".to_string(),
        }
    }

    /// A read-only store tries to take writes again: once there is room,
    /// it reopens the engine and proves a write works. Answers whether it
    /// takes writes now.
    pub fn recover(&self) -> bool {
        if self.is_writable() {
            return true;
        }
        if self.engine.free_bytes().is_some_and(|free| free < FREE_TO_RECOVER) {
            return false;
        }
        let probe = |engine: &dyn Engine| -> Result<()> {
            engine.reopen()?;
            let key = b"\0kai-write-probe";
            let probe = version::stamp(
                &self.settings.node,
                &[],
                &version::VClock::new(),
                version::Payload { value: Bytes::new(), flags: 0, expires_at: 0, deleted: true },
                self.clock.millis(),
                2,
            );
            engine.write(0, key, std::slice::from_ref(&probe))?;
            engine.write(0, key, &[])?;
            // What the engine kept through its failure is what counts: the
            // trees and counts are built again from it, so anti-entropy
            // repairs whatever a failed write left out.
            self.merkle.clear();
            self.load()
        };
        match probe(self.engine.as_ref()) {
            Ok(()) => {
                tracing::warn!("the store takes writes again");
                self.writable.0.store(true, Relaxed);
                self.stats.store_read_only.store(0, Relaxed);
                true
            }
            Err(e) => {
                tracing::debug!("the store still cannot write: {e}");
                false
            }
        }
    }

    /// The one place a key's stored versions change.
    fn replace(&self, bucket: u32, key: &[u8], old: &[Version], new: &[Version]) -> Result<()> {
        if let Some(max) = self.settings.max_bytes {
            let now = self.clock.secs();
            let grows = live_size(new, now).1 - live_size(old, now).1;
            if grows > 0 && self.stats.bytes.load(Relaxed) + grows > max as i64 {
                return Err(Error::OutOfMemory);
            }
        }
        self.engine_write(|| self.engine.write(bucket, key, new))?;
        self.sync_if_asked()?;
        self.merkle.update(bucket, key, key_digest(key, old), key_digest(key, new));
        let now = self.clock.secs();
        let (old_items, old_bytes) = live_size(old, now);
        let (new_items, new_bytes) = live_size(new, now);
        self.stats.curr_items.fetch_add(new_items - old_items, Relaxed);
        self.stats.bytes.fetch_add(new_bytes - old_bytes, Relaxed);
        if new_items > old_items {
            self.stats.total_items.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    pub fn list_bucket(&self, bucket: u32) -> Result<Vec<Entry>> {
        self.engine.list_bucket(bucket)
    }

    /// Writes a tombstone over every live key (memcache `flush_all`).
    pub fn flush_all(&self) -> Result<u64> {
        let now = self.clock.secs();
        let mut flushed = 0;
        for bucket in 0..self.settings.number_of_buckets {
            for (key, versions) in self.engine.list_bucket(bucket)? {
                if any_live(&versions, now) {
                    if let WriteOutcome::Stored { .. } = self.coordinate(&key, &Write::delete())? {
                        flushed += 1;
                    }
                }
            }
        }
        Ok(flushed)
    }

    pub fn sync(&self) -> Result<()> {
        self.engine.sync()
    }

    /// The leaves of a bucket's Merkle tree.
    pub fn segments(&self, bucket: u32) -> Segments {
        self.merkle.segments(bucket)
    }

    /// Each bucket's Merkle root (0 for a bucket holding nothing).
    pub fn bucket_roots(&self, buckets: &[u32]) -> Vec<u64> {
        buckets.iter().map(|&b| merkle::root(&self.segments(b))).collect()
    }

    /// One digest over the Merkle roots of these buckets.
    pub fn combined_root(&self, buckets: &[u32]) -> u64 {
        let roots: Vec<u64> = buckets.iter().map(|&b| merkle::root(&self.segments(b))).collect();
        merkle::root_of_roots(&roots)
    }

    /// The keys of a bucket that fall in the given Merkle leaves.
    pub fn segment_entries(&self, bucket: u32, segments: &[usize]) -> Result<Vec<Entry>> {
        let mut entries = self.engine.list_bucket(bucket)?;
        entries.retain(|(key, _)| segments.contains(&segment_of(key)));
        Ok(entries)
    }

    /// Merges many keys' versions (anti-entropy, bucket transfer).
    pub fn merge_entries(&self, entries: &[Entry]) -> Result<()> {
        for (key, versions) in entries {
            self.merge(key, versions, None)?;
        }
        Ok(())
    }

    /// The stored versions of many keys.
    pub fn read_keys(&self, keys: &[Bytes]) -> Result<Vec<Entry>> {
        keys.iter().map(|k| Ok((k.clone(), self.read(k)?))).collect()
    }

    /// Removes keys whose versions are still exactly `expected`: a handed-off
    /// bucket's keys, or reaped tombstones. A key written since stays.
    pub fn remove_if_unchanged(&self, expected: &[Entry]) -> Result<u64> {
        let mut removed = 0;
        for (key, versions) in expected {
            let bucket = self.bucket(key);
            let _guard = self.lock(bucket);
            let current = self.engine.read(bucket, key)?;
            if current == *versions && !current.is_empty() {
                self.replace(bucket, key, &current, &[])?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Keys all of whose versions are tombstones or expired, and older than
    /// `grace_secs`: what may be reaped once every replica holds the same.
    pub fn reap_candidates(&self, buckets: &[u32], grace_secs: u64) -> Result<Vec<Entry>> {
        let now_ms = self.clock.millis();
        let mut out = Vec::new();
        for &bucket in buckets {
            for (key, versions) in self.engine.list_bucket(bucket)? {
                let dead = versions.iter().all(|v| !v.is_live(now_ms / 1000) && v.timestamp + grace_secs * 1000 <= now_ms);
                if dead && !versions.is_empty() {
                    out.push((key, versions));
                }
            }
        }
        Ok(out)
    }

    /// Builds the Merkle trees and sets `curr_items` and `bytes` from what
    /// the engine holds at open.
    fn load(&self) -> Result<()> {
        let now = self.clock.secs();
        let (mut items, mut bytes) = (0, 0);
        for bucket in 0..self.settings.number_of_buckets {
            for (key, versions) in self.engine.list_bucket(bucket)? {
                let (i, b) = live_size(&versions, now);
                items += i;
                bytes += b;
                self.merkle.update(bucket, &key, 0, key_digest(&key, &versions));
            }
        }
        self.stats.curr_items.store(items, Relaxed);
        self.stats.bytes.store(bytes, Relaxed);
        Ok(())
    }
}

/// (1 if the key has a live value, bytes of its live values).
fn live_size(versions: &[Version], now: u64) -> (i64, i64) {
    let live = shown(versions, now);
    let bytes: usize = live.clone().map(|v| v.value.len()).sum();
    (i64::from(live.count() > 0), bytes as i64)
}

// ---- the actor -----------------------------------------------------------

/// Merges versions into a replica (for `hint`, a down home node).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct ReplicaPut {
    pub key: Bytes,
    pub versions: Vec<Version>,
    pub hint: Option<String>,
}

/// Every hint held, with the hinted keys' versions now.
#[derive(Message)]
#[rtype(result = "Result<Vec<(String, Bytes, Vec<Version>)>>")]
pub struct Hints;

/// How many hints are held for each home node.
#[derive(Message)]
#[rtype(result = "Result<std::collections::BTreeMap<String, u64>>")]
pub struct HintCounts;

/// Drops a delivered hint if the key is unchanged since delivery.
#[derive(Message)]
#[rtype(result = "Result<bool>")]
pub struct DropHint {
    pub home: String,
    pub key: Bytes,
    pub delivered: Vec<Version>,
    /// Drop this node's copy too: it is not a home replica of the key.
    pub drop_copy: bool,
}

/// Each bucket's Merkle root (0 for a bucket holding nothing).
#[derive(Message)]
#[rtype(result = "Vec<u64>")]
pub struct BucketRoots(pub Vec<u32>);

/// A read-only store tries to take writes again; answers whether it does.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Recover;

/// Runs a client write at its coordinator, unless its deadline passed
/// while it waited for a store thread.
#[derive(Message)]
#[rtype(result = "Result<WriteOutcome>")]
pub struct CoordinateWrite {
    pub key: Bytes,
    pub write: Write,
    pub deadline: tokio::time::Instant,
}

#[derive(Message)]
#[rtype(result = "Result<Vec<Entry>>")]
pub struct ListBucket(pub u32);

/// The leaves of a bucket's Merkle tree.
#[derive(Message)]
#[rtype(result = "Segments")]
pub struct GetSegments(pub u32);

/// One digest over the Merkle roots of these buckets.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct CombinedRoot(pub Vec<u32>);

/// The keys of a bucket in some Merkle leaves.
#[derive(Message)]
#[rtype(result = "Result<Vec<Entry>>")]
pub struct SegmentEntries {
    pub bucket: u32,
    pub segments: Vec<usize>,
}

/// Merges many keys' versions.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct MergeEntries(pub Vec<Entry>);

/// Many keys' stored versions.
#[derive(Message)]
#[rtype(result = "Result<Vec<Entry>>")]
pub struct ReadKeys(pub Vec<Bytes>);

/// Removes the keys still exactly as given.
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct RemoveIfUnchanged(pub Vec<Entry>);

/// Keys of these buckets that hold only tombstones or expired values
/// older than the grace period.
#[derive(Message)]
#[rtype(result = "Result<Vec<Entry>>")]
pub struct ReapCandidates {
    pub buckets: Vec<u32>,
    pub grace_secs: u64,
}

#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct FlushAll;

/// The store as a pool of threads, for requests that may wait (scans, and
/// writes on disk): a `SyncArbiter` runs several and restarts one that stops.
pub struct StoreActor {
    store: Arc<Store>,
}

impl StoreActor {
    pub fn new(store: Arc<Store>) -> Self {
        StoreActor { store }
    }
}

impl Actor for StoreActor {
    type Context = SyncContext<Self>;
}

/// The store on a worker's own event loop, for requests that never wait:
/// such a request then never leaves its worker thread.
pub struct LocalStoreActor {
    store: Arc<Store>,
}

impl LocalStoreActor {
    pub fn new(store: Arc<Store>) -> Self {
        LocalStoreActor { store }
    }
}

impl Actor for LocalStoreActor {
    type Context = Context<Self>;
}

impl Supervised for LocalStoreActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        crate::stats::count_restart("store");
        tracing::warn!("store actor restarting");
    }
}

/// The same handlers for both kinds of store actor: each calls `Store`.
macro_rules! store_handlers {
    ($actor:ty) => {
        impl Handler<ReplicaPut> for $actor {
            type Result = Result<()>;
            fn handle(&mut self, msg: ReplicaPut, _: &mut Self::Context) -> Self::Result {
                self.store.merge(&msg.key, &msg.versions, msg.hint.as_deref())
            }
        }

        impl Handler<CoordinateWrite> for $actor {
            type Result = Result<WriteOutcome>;
            fn handle(&mut self, msg: CoordinateWrite, _: &mut Self::Context) -> Self::Result {
                crate::coordinator::in_time(msg.deadline)?;
                self.store.coordinate(&msg.key, &msg.write)
            }
        }

        impl Handler<ListBucket> for $actor {
            type Result = Result<Vec<Entry>>;
            fn handle(&mut self, msg: ListBucket, _: &mut Self::Context) -> Self::Result {
                self.store.list_bucket(msg.0)
            }
        }

        impl Handler<GetSegments> for $actor {
            type Result = MessageResult<GetSegments>;
            fn handle(&mut self, msg: GetSegments, _: &mut Self::Context) -> Self::Result {
                MessageResult(self.store.segments(msg.0))
            }
        }

        impl Handler<Recover> for $actor {
            type Result = bool;
            fn handle(&mut self, _: Recover, _: &mut Self::Context) -> bool {
                self.store.recover()
            }
        }

        impl Handler<BucketRoots> for $actor {
            type Result = MessageResult<BucketRoots>;
            fn handle(&mut self, msg: BucketRoots, _: &mut Self::Context) -> Self::Result {
                MessageResult(self.store.bucket_roots(&msg.0))
            }
        }

        impl Handler<CombinedRoot> for $actor {
            type Result = u64;
            fn handle(&mut self, msg: CombinedRoot, _: &mut Self::Context) -> Self::Result {
                self.store.combined_root(&msg.0)
            }
        }

        impl Handler<SegmentEntries> for $actor {
            type Result = Result<Vec<Entry>>;
            fn handle(&mut self, msg: SegmentEntries, _: &mut Self::Context) -> Self::Result {
                self.store.segment_entries(msg.bucket, &msg.segments)
            }
        }

        impl Handler<MergeEntries> for $actor {
            type Result = Result<()>;
            fn handle(&mut self, msg: MergeEntries, _: &mut Self::Context) -> Self::Result {
                self.store.merge_entries(&msg.0)
            }
        }

        impl Handler<ReadKeys> for $actor {
            type Result = Result<Vec<Entry>>;
            fn handle(&mut self, msg: ReadKeys, _: &mut Self::Context) -> Self::Result {
                self.store.read_keys(&msg.0)
            }
        }

        impl Handler<RemoveIfUnchanged> for $actor {
            type Result = Result<u64>;
            fn handle(&mut self, msg: RemoveIfUnchanged, _: &mut Self::Context) -> Self::Result {
                self.store.remove_if_unchanged(&msg.0)
            }
        }

        impl Handler<ReapCandidates> for $actor {
            type Result = Result<Vec<Entry>>;
            fn handle(&mut self, msg: ReapCandidates, _: &mut Self::Context) -> Self::Result {
                self.store.reap_candidates(&msg.buckets, msg.grace_secs)
            }
        }

        impl Handler<Hints> for $actor {
            type Result = Result<Vec<(String, Bytes, Vec<Version>)>>;
            fn handle(&mut self, _: Hints, _: &mut Self::Context) -> Self::Result {
                self.store.hints()
            }
        }

        impl Handler<HintCounts> for $actor {
            type Result = Result<std::collections::BTreeMap<String, u64>>;
            fn handle(&mut self, _: HintCounts, _: &mut Self::Context) -> Self::Result {
                self.store.hint_counts()
            }
        }

        impl Handler<DropHint> for $actor {
            type Result = Result<bool>;
            fn handle(&mut self, msg: DropHint, _: &mut Self::Context) -> Self::Result {
                self.store.drop_hint(&msg.home, &msg.key, &msg.delivered, msg.drop_copy)
            }
        }

        impl Handler<FlushAll> for $actor {
            type Result = Result<u64>;
            fn handle(&mut self, _: FlushAll, _: &mut Self::Context) -> Self::Result {
                self.store.flush_all()
            }
        }
    };
}

/// A `SyncArbiter` restarts its actors without a `restarting` hook, so
/// the pool's restarts are counted when asked for.
impl Handler<crate::Restart> for StoreActor {
    type Result = ();
    fn handle(&mut self, _: crate::Restart, ctx: &mut Self::Context) {
        tracing::warn!("store actor asked to restart");
        crate::stats::count_restart("store");
        ctx.stop();
    }
}

impl Handler<crate::supervision::Panic> for StoreActor {
    type Result = ();
    fn handle(&mut self, _: crate::supervision::Panic, _: &mut Self::Context) {
        panic!("fault injection: store actor (pool thread) told to panic");
    }
}

impl Handler<crate::supervision::Panic> for LocalStoreActor {
    type Result = ();
    fn handle(&mut self, _: crate::supervision::Panic, _: &mut Self::Context) {
        panic!("fault injection: store actor told to panic");
    }
}

impl Handler<crate::Restart> for LocalStoreActor {
    type Result = ();
    fn handle(&mut self, _: crate::Restart, ctx: &mut Self::Context) {
        tracing::warn!("store actor asked to restart");
        ctx.stop();
    }
}

store_handlers!(StoreActor);
store_handlers!(LocalStoreActor);

/// How long a store request may hold the thread that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// A point read: memtable, cache or page cache; never waits.
    Read,
    /// A point write: never waits in memory; on disk the engine may hold
    /// it back (its write backpressure sleeps).
    Write,
    /// A walk over many keys: long by nature.
    Scan,
}

/// A request to the store, with its cost.
pub trait StoreRequest: Message {
    const COST: Cost;
}

impl StoreRequest for ReplicaPut {
    const COST: Cost = Cost::Write;
}
impl StoreRequest for CoordinateWrite {
    const COST: Cost = Cost::Write;
}
impl StoreRequest for ListBucket {
    const COST: Cost = Cost::Scan;
}
impl StoreRequest for GetSegments {
    const COST: Cost = Cost::Read;
}
impl StoreRequest for Recover {
    const COST: Cost = Cost::Scan;
}
impl StoreRequest for BucketRoots {
    const COST: Cost = Cost::Read;
}
impl StoreRequest for CombinedRoot {
    const COST: Cost = Cost::Read;
}
impl StoreRequest for SegmentEntries {
    const COST: Cost = Cost::Scan;
}
impl StoreRequest for MergeEntries {
    const COST: Cost = Cost::Scan;
}
impl StoreRequest for ReadKeys {
    const COST: Cost = Cost::Read;
}
impl StoreRequest for RemoveIfUnchanged {
    const COST: Cost = Cost::Scan;
}
impl StoreRequest for ReapCandidates {
    const COST: Cost = Cost::Scan;
}
impl StoreRequest for Hints {
    const COST: Cost = Cost::Scan;
}
impl StoreRequest for HintCounts {
    const COST: Cost = Cost::Scan;
}
impl StoreRequest for DropHint {
    const COST: Cost = Cost::Write;
}
impl StoreRequest for FlushAll {
    const COST: Cost = Cost::Scan;
}

/// Where a worker sends its store requests: what never waits runs on the
/// worker's own loop (no thread hop, the main cost of a request); what may
/// wait goes to the pool, so it never stalls the worker's other clients.
#[derive(Clone)]
pub struct StoreAddr {
    pub local: Addr<LocalStoreActor>,
    /// None: no pool (the simulator, whose one thread must run everything);
    /// what may wait then runs on the worker's loop too.
    pub pool: Option<Addr<StoreActor>>,
    /// Whether writes never wait in this engine (memory).
    /// The store itself, for a client request's replica call that never
    /// waits: made on the request's own thread, no mailbox hop.
    pub direct: Arc<Store>,
}

impl StoreAddr {
    /// Whether a write would not wait now, and so may run on the worker's
    /// own loop (always on the memory engine; on disk, while the engine
    /// is far from holding writes back).
    pub fn writes_inline(&self) -> bool {
        !self.direct.writes_may_wait()
    }

    pub fn send<M>(&self, msg: M) -> impl std::future::Future<Output = std::result::Result<M::Result, MailboxError>>
    where
        M: StoreRequest + Send + 'static,
        M::Result: Send,
        StoreActor: Handler<M>,
        LocalStoreActor: Handler<M>,
    {
        use futures_util::future::Either;
        let inline = match M::COST {
            Cost::Read => true,
            Cost::Write => self.writes_inline(),
            Cost::Scan => false,
        };
        match (inline, &self.pool) {
            (false, Some(pool)) => Either::Right(pool.send(msg)),
            _ => Either::Left(self.local.send(msg)),
        }
    }

    /// Restarts this worker's store actor and one of the pool's.
    pub fn restart(&self) -> bool {
        self.local.try_send(crate::Restart).is_ok() && self.pool.as_ref().is_none_or(|pool| pool.try_send(crate::Restart).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One suite, run over both engines.
    fn engines() -> Vec<(Box<dyn Engine>, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskEngine::open(dir.path()).unwrap();
        vec![(Box::new(MemoryEngine::new(16)), None), (Box::new(disk), Some(dir))]
    }

    fn store(engine: Box<dyn Engine>) -> Store {
        let settings =
            StoreSettings { node: "n1".into(), number_of_buckets: 16, max_clock_entries: 10, fsync: false, max_bytes: None };
        Store::new(engine, settings, Arc::new(NodeStats::default())).unwrap()
    }

    fn set(v: &str) -> Write {
        Write::set(Bytes::from(v.to_string()), 3, 0)
    }

    fn stored(outcome: WriteOutcome) -> Version {
        match outcome {
            WriteOutcome::Stored { new, .. } => new,
            other => panic!("not stored: {other:?}"),
        }
    }

    #[test]
    fn set_then_set_keeps_one_version() {
        for (engine, _dir) in engines() {
            let s = store(engine);
            s.coordinate(b"k", &set("a")).unwrap();
            let v = stored(s.coordinate(b"k", &set("b")).unwrap());
            assert_eq!(s.read(b"k").unwrap(), vec![v]);
            assert_eq!(s.stats.curr_items.load(Relaxed), 1);
            assert_eq!(s.stats.bytes.load(Relaxed), 1);
        }
    }

    #[test]
    fn a_client_read_answers_the_one_before_it_until_a_write() {
        for (engine, _dir) in engines() {
            let s = store(engine);
            assert_eq!(s.client_read(b"k").unwrap(), (vec![], 0), "absent");
            s.coordinate(b"k", &set("a")).unwrap();
            assert_eq!(s.client_read(b"k").unwrap().1, 0, "not read since written");
            let before = now_millis();
            let (versions, read_at) = s.client_read(b"k").unwrap();
            assert_eq!(versions.len(), 1);
            assert!(read_at > 0 && read_at <= before, "the read before: {read_at}");
            assert_eq!(s.replica_read(b"k", false).unwrap().1, 0, "a replica's own read is not a client's");
            assert!(s.client_read(b"k").unwrap().1 >= read_at);
            s.coordinate(b"k", &set("b")).unwrap();
            assert_eq!(s.client_read(b"k").unwrap().1, 0, "a write forgets");
            s.coordinate(b"k", &Write::delete()).unwrap();
            s.client_read(b"k").unwrap();
            assert_eq!(s.client_read(b"k").unwrap().1, 0, "a miss is not recorded");
        }
    }

    #[test]
    fn concurrent_replica_writes_are_siblings_and_a_coordinated_write_resolves_them() {
        for (engine, _dir) in engines() {
            let s = store(engine);
            let base = stored(s.coordinate(b"k", &set("a")).unwrap());
            let other = version::stamp(
                "n2",
                &[base.clone()],
                &base.history(),
                version::Payload { value: Bytes::from("x"), flags: 0, expires_at: 0, deleted: false },
                now_millis() + 5,
                10,
            );
            let mine = stored(s.coordinate(b"k", &set("b")).unwrap());
            s.merge(b"k", &[other.clone()], None).unwrap();
            let held = s.read(b"k").unwrap();
            assert_eq!(held.len(), 2);
            assert!(held.contains(&mine) && held.contains(&other));
            // A cas with the context of both replaces both.
            let token = version::cas_token(b"k", &held);
            let cas = Write {
                condition: Condition::Context(token),
                mutation: Mutation::Set { value: Bytes::from("c"), flags: 0, expires_at: 0 },
            };
            let resolved = stored(s.coordinate(b"k", &cas).unwrap());
            assert_eq!(s.read(b"k").unwrap(), vec![resolved]);
        }
    }

    #[test]
    fn a_merged_older_version_never_replaces_a_newer_one() {
        for (engine, _dir) in engines() {
            let s = store(engine);
            let old = stored(s.coordinate(b"k", &set("a")).unwrap());
            let new = stored(s.coordinate(b"k", &set("b")).unwrap());
            s.merge(b"k", &[old], None).unwrap();
            assert_eq!(s.read(b"k").unwrap(), vec![new]);
        }
    }

    #[test]
    fn delete_leaves_a_tombstone_that_reaping_removes_after_grace() {
        for (engine, _dir) in engines() {
            let s = store(engine);
            s.coordinate(b"k", &set("a")).unwrap();
            let tomb = stored(s.coordinate(b"k", &Write::delete()).unwrap());
            assert!(tomb.deleted);
            assert_eq!(s.read(b"k").unwrap(), vec![tomb]);
            assert_eq!(s.coordinate(b"k", &Write::delete()).unwrap(), WriteOutcome::NotFound);
            assert_eq!(s.stats.curr_items.load(Relaxed), 0);
            let all: Vec<u32> = (0..16).collect();
            assert!(s.reap_candidates(&all, 3600).unwrap().is_empty(), "inside the grace period");
            std::thread::sleep(std::time::Duration::from_millis(5));
            let candidates = s.reap_candidates(&all, 0).unwrap();
            assert_eq!(candidates.len(), 1);
            assert_eq!(s.remove_if_unchanged(&candidates).unwrap(), 1);
            assert!(s.read(b"k").unwrap().is_empty());
            assert_eq!(s.segments(bucket_of(b"k", 16)), [0; merkle::SEGMENTS], "the tree forgot the key too");
        }
    }

    #[test]
    fn a_key_written_since_is_not_removed() {
        for (engine, _dir) in engines() {
            let s = store(engine);
            s.coordinate(b"k", &set("a")).unwrap();
            let seen = s.read_keys(&[Bytes::from("k")]).unwrap();
            s.coordinate(b"k", &set("b")).unwrap();
            assert_eq!(s.remove_if_unchanged(&seen).unwrap(), 0);
            assert_eq!(s.read(b"k").unwrap().len(), 1);
        }
    }

    #[test]
    fn merkle_trees_are_rebuilt_at_open_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let before: Vec<_> = {
            let s = store(Box::new(DiskEngine::open(dir.path()).unwrap()));
            for i in 0..100 {
                s.coordinate(format!("k{i}").as_bytes(), &set("v")).unwrap();
            }
            s.coordinate(b"k7", &Write::delete()).unwrap();
            (0..16).map(|b| s.segments(b)).collect()
        };
        let s = store(Box::new(DiskEngine::open(dir.path()).unwrap()));
        let after: Vec<_> = (0..16).map(|b| s.segments(b)).collect();
        assert_eq!(before, after);
        assert!(after.iter().any(|seg| seg.iter().any(|&x| x != 0)));
    }

    #[test]
    fn buckets_list_their_keys_in_order() {
        for (engine, _dir) in engines() {
            let s = store(engine);
            let keys: Vec<String> = (0..50).map(|i| format!("key-{i}")).collect();
            for k in &keys {
                s.coordinate(k.as_bytes(), &set("v")).unwrap();
            }
            let mut listed = 0;
            for b in 0..16 {
                let entries = s.list_bucket(b).unwrap();
                let names: Vec<_> = entries.iter().map(|(k, _)| k.clone()).collect();
                let mut sorted = names.clone();
                sorted.sort();
                assert_eq!(names, sorted);
                assert!(names.iter().all(|k| bucket_of(k, 16) == b));
                listed += names.len();
            }
            assert_eq!(listed, 50);
            assert_eq!(s.flush_all().unwrap(), 50);
            assert_eq!(s.stats.curr_items.load(Relaxed), 0);
        }
    }

    #[test]
    fn hints_are_kept_until_delivered_unchanged() {
        for (engine, _dir) in engines() {
            let s = store(engine);
            let v = stored(s.coordinate(b"k", &set("a")).unwrap());
            s.merge(b"k", &[v.clone()], Some("10.0.0.9:11011")).unwrap();
            let hints = s.hints().unwrap();
            assert_eq!(hints, vec![("10.0.0.9:11011".to_string(), Bytes::from("k"), vec![v.clone()])]);
            // The key changed after delivery was read: the hint stays.
            let newer = stored(s.coordinate(b"k", &set("b")).unwrap());
            assert!(!s.drop_hint("10.0.0.9:11011", b"k", &[v], true).unwrap());
            assert!(s.read(b"k").unwrap() == vec![newer.clone()], "the newer write is kept");
            assert!(s.drop_hint("10.0.0.9:11011", b"k", &[newer.clone()], false).unwrap());
            assert!(s.hints().unwrap().is_empty());
            assert_eq!(s.read(b"k").unwrap(), vec![newer], "a home replica keeps its copy");
            // A stand-in drops its copy with the hint.
            let w = stored(s.coordinate(b"j", &set("c")).unwrap());
            s.merge(b"j", &[w.clone()], Some("10.0.0.9:11011")).unwrap();
            assert!(s.drop_hint("10.0.0.9:11011", b"j", &[w], true).unwrap());
            assert!(s.read(b"j").unwrap().is_empty());
        }
    }

    #[test]
    fn disk_engine_keeps_data_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let v = {
            let s = store(Box::new(DiskEngine::open(dir.path()).unwrap()));
            stored(s.coordinate(b"k", &set("kept")).unwrap())
        };
        let s = store(Box::new(DiskEngine::open(dir.path()).unwrap()));
        assert_eq!(s.read(b"k").unwrap(), vec![v]);
        assert_eq!(s.stats.curr_items.load(Relaxed), 1);
    }
}

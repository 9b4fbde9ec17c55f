//! Storage engines behind one interface: each keeps a key's sibling set,
//! grouped by bucket so a bucket's keys list in order. The `Store` above
//! them does all version logic; an engine only reads and writes sets.

use super::reads;
use crate::error::{Error, Result};
use crate::stats::Line;
use crate::version::Version;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// A key with its versions, as listed from a bucket.
pub type Entry = (Bytes, Vec<Version>);

pub trait Engine: Send + Sync + 'static {
    /// The engine's name, as `stats` reports it.
    fn name(&self) -> &'static str;
    /// The key's stored versions; empty when it has none.
    fn read(&self, bucket: u32, key: &[u8]) -> Result<Vec<Version>>;
    /// A client's read: the key's versions as `read` answers them, and when
    /// a client last read the key before, since it was last written (0: not
    /// since, or not since this process started). A hit is recorded.
    fn client_read(&self, bucket: u32, key: &[u8], now_ms: u64) -> Result<(Vec<Version>, u64)>;
    /// Replaces the key's versions; an empty set removes the key (and a
    /// write forgets when the key was read).
    fn write(&self, bucket: u32, key: &[u8], versions: &[Version]) -> Result<()>;
    /// Every key of a bucket, in key order.
    fn list_bucket(&self, bucket: u32) -> Result<Vec<Entry>>;
    /// Makes every write so far survive power loss (an fsync).
    fn sync(&self) -> Result<()>;
    /// Whether a write may wait now (on I/O, or the engine's backpressure),
    /// and so must not run on an event loop.
    fn writes_may_wait(&self) -> bool;
    /// Records that this node holds `key` for the down node `home`.
    fn add_hint(&self, home: &str, key: &[u8]) -> Result<()>;
    fn remove_hint(&self, home: &str, key: &[u8]) -> Result<()>;
    /// Every (home, key) hint held.
    fn hints(&self) -> Result<Vec<(String, Bytes)>>;
    /// Closes and opens the engine again (after it failed a write).
    fn reopen(&self) -> Result<()> {
        Ok(())
    }
    /// Starts loading what a lookup in `bucket` reads first (a hint, called
    /// as soon as a request's bucket is known).
    fn prefetch(&self, _bucket: u32) {}
    /// Space left for data, where the engine keeps it on a disk.
    fn free_bytes(&self) -> Option<u64> {
        None
    }
}

/// Hint records: the home node's name, a zero byte, then the key.
fn hint_key(home: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(home.len() + 1 + key.len());
    k.extend_from_slice(home.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

fn split_hint_key(raw: &[u8]) -> Option<(String, Bytes)> {
    let zero = raw.iter().position(|&b| b == 0)?;
    let home = String::from_utf8(raw[..zero].to_vec()).ok()?;
    Some((home, Bytes::copy_from_slice(&raw[zero + 1..])))
}

/// Engine keys: the bucket big-endian, then the key, so a bucket is a range.
fn engine_key(bucket: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&bucket.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Everything in RAM: a hash map per bucket, so point reads are a hash
/// lookup and a bucket lists on its own (sorted when listed, which only
/// background work does).
pub struct MemoryEngine {
    /// Each bucket's table on lines of its own: the lock is written on
    /// every request, and neighbouring buckets are another worker's.
    buckets: Vec<Line<Mutex<HashMap<InlineKey, Stored>>>>,
    hints: Mutex<std::collections::BTreeSet<Vec<u8>>>,
}

/// A key as the memory engine holds it: a short one (memcache keys mostly
/// are) in the table's slot itself, so a lookup compares it without
/// another cache miss, and a write allocates nothing for it.
pub(super) type InlineKey = smallvec::SmallVec<[u8; 24]>;

/// A key's versions in RAM, with when a client last read them (0: not
/// since they were written). A key mostly has one version: it is kept in
/// the table's slot itself, so a lookup reaches it without another cache
/// miss (and a write allocates nothing for it).
struct Stored {
    versions: smallvec::SmallVec<[Version; 1]>,
    last_read_ms: u64,
}

impl MemoryEngine {
    pub fn new(number_of_buckets: u32) -> Self {
        MemoryEngine {
            buckets: (0..number_of_buckets).map(|_| Line(Mutex::new(HashMap::new()))).collect(),
            hints: Default::default(),
        }
    }

    fn bucket(&self, bucket: u32) -> std::sync::MutexGuard<'_, HashMap<InlineKey, Stored>> {
        self.buckets[bucket as usize % self.buckets.len()].0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn read(&self, bucket: u32, key: &[u8]) -> Result<Vec<Version>> {
        Ok(self.bucket(bucket).get(key).map(|s| s.versions.to_vec()).unwrap_or_default())
    }

    fn client_read(&self, bucket: u32, key: &[u8], now_ms: u64) -> Result<(Vec<Version>, u64)> {
        let mut map = self.bucket(bucket);
        let Some(stored) = map.get_mut(key) else { return Ok((Vec::new(), 0)) };
        Ok(client_read_held(&stored.versions, &mut stored.last_read_ms, now_ms))
    }

    fn write(&self, bucket: u32, key: &[u8], versions: &[Version]) -> Result<()> {
        let mut map = self.bucket(bucket);
        if versions.is_empty() {
            map.remove(key);
        } else {
            map.insert(InlineKey::from_slice(key), Stored { versions: versions.into(), last_read_ms: 0 });
        }
        Ok(())
    }

    fn list_bucket(&self, bucket: u32) -> Result<Vec<Entry>> {
        let mut entries: Vec<Entry> =
            self.bucket(bucket).iter().map(|(k, s)| (Bytes::copy_from_slice(k), s.versions.to_vec())).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn writes_may_wait(&self) -> bool {
        false
    }

    fn prefetch(&self, bucket: u32) {
        // The bucket's lock and its table's header share a line.
        prefetch_line((&self.buckets[bucket as usize % self.buckets.len()] as *const Line<_>).cast());
    }

    fn add_hint(&self, home: &str, key: &[u8]) -> Result<()> {
        self.hints.lock().unwrap_or_else(|e| e.into_inner()).insert(hint_key(home, key));
        Ok(())
    }

    fn remove_hint(&self, home: &str, key: &[u8]) -> Result<()> {
        self.hints.lock().unwrap_or_else(|e| e.into_inner()).remove(&hint_key(home, key));
        Ok(())
    }

    fn hints(&self) -> Result<Vec<(String, Bytes)>> {
        Ok(self.hints.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(|k| split_hint_key(k)).collect())
    }
}

/// A client's read of versions held in memory beside their read record (the
/// memory engine's slot, the disk engine's cache entry): records it there
/// if it is a hit, starts loading the values for the reply's copy, and
/// hands out the versions with when the key was read before (0: not since).
pub(super) fn client_read_held(versions: &[Version], record: &mut u64, now_ms: u64) -> (Vec<Version>, u64) {
    let before = if reads::is_hit(versions, now_ms) { reads::mark(record, now_ms) } else { 0 };
    prefetch_values(versions);
    (versions.to_vec(), before)
}

/// Asks the CPU to start loading the values a client read is about to copy
/// into its reply, so the copy, a few hundred nanoseconds later, finds them
/// in the cache rather than waiting on memory line by line.
fn prefetch_values(versions: &[Version]) {
    for version in versions {
        for line in version.value.chunks(64).take(64) {
            prefetch_line(line.as_ptr());
        }
    }
}

/// A hint to load the cache line at `at`: it reads nothing and cannot fault.
fn prefetch_line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only hints; any address is allowed.
    unsafe {
        std::arch::x86_64::_mm_prefetch(at.cast(), std::arch::x86_64::_MM_HINT_T0)
    };
}

/// On disk in fjall, a log-structured engine: every write is appended to
/// its journal and handed to the OS before it returns, so it survives the
/// process being killed; `sync` adds an fsync for power loss.
pub struct DiskEngine {
    dir: std::path::PathBuf,
    /// None only while it is being reopened.
    open: std::sync::RwLock<Option<OpenDisk>>,
    /// Decoded sets of recently used keys, and every key's read record.
    cache: super::cache::ReadCache,
    _writeback: JournalWriteback,
}

/// fjall rotates its journal at a memtable flush once it passes 64 MB, and
/// fsyncs it first, holding the journal's lock: every write then waits
/// until the whole journal is on the disk (about 100 ms here). This thread
/// asks the kernel every 25 ms to start writing the newest journal's
/// dirty pages out (`sync_file_range`, which neither waits for the disk
/// nor takes fjall's lock), so that fsync finds little left to write. It
/// adds no durability: a write is in the journal, handed to the OS, before
/// it is acknowledged either way.
struct JournalWriteback {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JournalWriteback {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(25);

    fn start(dir: std::path::PathBuf) -> Self {
        use std::os::fd::AsRawFd;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let run = move || {
            let mut journal: Option<(u64, std::fs::File)> = None;
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Self::EVERY) {
                let Some(newest) = newest_journal(&dir) else { continue };
                if journal.as_ref().map(|(id, _)| *id) != Some(newest) {
                    journal = std::fs::File::open(dir.join(format!("{newest}.jnl"))).ok().map(|file| (newest, file));
                }
                if let Some((_, file)) = &journal {
                    // SAFETY: a system call on a descriptor this thread holds open.
                    unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
                }
            }
        };
        let thread = std::thread::Builder::new().name("kai-writeback".into()).spawn(run);
        if let Err(e) = &thread {
            tracing::warn!("no journal writeback thread: {e}");
        }
        JournalWriteback { stop: Some(stop), thread: thread.ok() }
    }
}

impl Drop for JournalWriteback {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The id of the newest of fjall's journals (`<id>.jnl` in its directory).
fn newest_journal(dir: &Path) -> Option<u64> {
    let names = std::fs::read_dir(dir).ok()?.filter_map(|entry| entry.ok()?.file_name().into_string().ok());
    names.filter_map(|name| name.strip_suffix(".jnl")?.parse().ok()).max()
}

struct OpenDisk {
    db: fjall::Database,
    items: fjall::Keyspace,
    hints: fjall::Keyspace,
}

impl OpenDisk {
    fn open(dir: &Path) -> Result<Self> {
        let db = fjall::Database::builder(dir).open()?;
        let items = db.keyspace("items", fjall::KeyspaceCreateOptions::default)?;
        let hints = db.keyspace("hints", fjall::KeyspaceCreateOptions::default)?;
        Ok(OpenDisk { db, items, hints })
    }
}

impl DiskEngine {
    pub fn open(dir: &Path) -> Result<Self> {
        let open = std::sync::RwLock::new(Some(OpenDisk::open(dir)?));
        let _writeback = JournalWriteback::start(dir.to_path_buf());
        Ok(DiskEngine { dir: dir.to_path_buf(), open, cache: super::cache::ReadCache::new(0), _writeback })
    }

    /// Keeps up to `bytes` of recently read or written keys decoded in RAM.
    pub fn with_cache(mut self, bytes: usize) -> Self {
        self.cache = super::cache::ReadCache::new(bytes);
        self
    }

    fn with<T>(&self, f: impl FnOnce(&OpenDisk) -> Result<T>) -> Result<T> {
        let open = self.open.read().unwrap_or_else(|e| e.into_inner());
        f(open.as_ref().ok_or_else(|| Error::ReadOnly("the store is being reopened".into()))?)
    }

    /// A key the cache did not hold: read from fjall, and cached (unless a
    /// write came since the miss).
    fn read_missed(&self, miss: super::cache::Miss, bucket: u32, key: &[u8]) -> Result<Vec<Version>> {
        let versions = self.with(|d| match d.items.get(engine_key(bucket, key))? {
            Some(bytes) => decode(&bytes),
            None => Ok(Vec::new()),
        })?;
        if self.cache.enabled() {
            self.cache.fill(miss, key, &versions);
        }
        Ok(versions)
    }
}

impl Engine for DiskEngine {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn read(&self, bucket: u32, key: &[u8]) -> Result<Vec<Version>> {
        match self.cache.get(bucket, key) {
            Ok(versions) => Ok(versions),
            Err(miss) => self.read_missed(miss, bucket, key),
        }
    }

    fn client_read(&self, bucket: u32, key: &[u8], now_ms: u64) -> Result<(Vec<Version>, u64)> {
        let versions = match self.cache.client_get(bucket, key, now_ms) {
            Ok(hit) => return Ok(hit),
            Err(miss) => self.read_missed(miss, bucket, key)?,
        };
        let last_read_ms = if reads::is_hit(&versions, now_ms) { self.cache.record_read(bucket, key, now_ms) } else { 0 };
        Ok((versions, last_read_ms))
    }

    fn write(&self, bucket: u32, key: &[u8], versions: &[Version]) -> Result<()> {
        let k = engine_key(bucket, key);
        let written = self.with(|d| {
            if versions.is_empty() {
                d.items.remove(k)?;
            } else {
                let mut record = Vec::with_capacity(64 + versions.iter().map(|v| v.value.len()).sum::<usize>());
                crate::version::wire::put_versions(&mut record, versions);
                d.items.insert(k, record)?;
            }
            Ok(())
        });
        match &written {
            Ok(()) => self.cache.put(bucket, key, versions),
            Err(_) => self.cache.forget(bucket, key),
        }
        written
    }

    fn list_bucket(&self, bucket: u32) -> Result<Vec<Entry>> {
        self.with(|d| {
            d.items
                .prefix(bucket.to_be_bytes())
                .map(|guard| {
                    let (k, v) = guard.into_inner()?;
                    Ok((Bytes::copy_from_slice(&k[4..]), decode(&v)?))
                })
                .collect()
        })
    }

    fn sync(&self) -> Result<()> {
        self.with(|d| d.db.persist(fjall::PersistMode::SyncData).map_err(Error::from))
    }

    /// A write is a journal append and a memtable insert, and runs on the
    /// worker, unless fjall may hold it: while a sealed memtable is being
    /// flushed, fjall's worker rotates the journal, and fsyncs up to 64 MB of
    /// it holding the journal's lock (tens of ms here even with
    /// `JournalWriteback`, 100 without), and it holds writes back
    /// from 4 sealed memtables or 20 level-0 runs. A write waiting there on
    /// the worker would stall every connection of the worker; on the store
    /// pool it stalls only itself.
    fn writes_may_wait(&self) -> bool {
        self.with(|d| Ok(d.items.sealed_memtable_count() >= 1 || d.items.l0_table_count() >= 12)).unwrap_or(true)
    }

    fn add_hint(&self, home: &str, key: &[u8]) -> Result<()> {
        self.with(|d| Ok(d.hints.insert(hint_key(home, key), [])?))
    }

    fn remove_hint(&self, home: &str, key: &[u8]) -> Result<()> {
        self.with(|d| Ok(d.hints.remove(hint_key(home, key))?))
    }

    fn hints(&self) -> Result<Vec<(String, Bytes)>> {
        self.with(|d| {
            d.hints
                .iter()
                .map(|guard| {
                    let key = guard.key()?;
                    split_hint_key(&key).ok_or_else(|| Error::Store("corrupt hint record".into()))
                })
                .collect()
        })
    }

    /// A database that failed a write (fjall then refuses every later one)
    /// is closed and opened again from its files: what it acknowledged is
    /// in its journal.
    fn reopen(&self) -> Result<()> {
        let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
        *open = None;
        self.cache.clear();
        *open = Some(OpenDisk::open(&self.dir)?);
        Ok(())
    }

    fn free_bytes(&self) -> Option<u64> {
        free_bytes(&self.dir)
    }
}

fn statvfs(dir: &Path) -> Option<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is a valid C string and stat a place statvfs may fill.
    let ok = unsafe { libc::statvfs(path.as_ptr(), &mut stat) } == 0;
    ok.then_some(stat)
}

/// Bytes free to an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    statvfs(dir).map(|s| s.f_bavail * s.f_frsize)
}

/// The size of the file system holding `dir`: the disk engine's bound.
pub fn disk_capacity(dir: &Path) -> Option<u64> {
    statvfs(dir).map(|s| s.f_blocks * s.f_frsize)
}

/// A record as `put_versions` writes it (the bytes serde would), read by
/// hand; serde reads anything else, and says what is wrong with it.
fn decode(bytes: &[u8]) -> Result<Vec<Version>> {
    match crate::version::wire::read_versions(bytes) {
        Some(versions) => Ok(versions),
        None => rmp_serde::from_slice(bytes).map_err(|e| Error::Store(format!("corrupt record: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_journal_is_the_one_with_the_highest_id() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(newest_journal(dir.path()), None);
        for name in ["3.jnl", "12.jnl", "9.jnl", "junk.jnl", "40.txt", "lock"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(newest_journal(dir.path()), Some(12), "by number, not by name");
        assert_eq!(newest_journal(&dir.path().join("missing")), None);
    }

    #[test]
    fn fjall_keeps_its_journals_where_the_writeback_looks() {
        let dir = tempfile::tempdir().unwrap();
        let engine = DiskEngine::open(dir.path()).unwrap();
        engine.write(1, b"k", &[]).unwrap();
        assert!(newest_journal(dir.path()).is_some(), "no journal in {:?}", dir.path());
    }

    #[test]
    fn the_writeback_thread_ends_when_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let writeback = JournalWriteback::start(dir.path().to_path_buf());
        let (done, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(writeback);
            let _ = done.send(());
        });
        assert!(dropped.recv_timeout(std::time::Duration::from_secs(10)).is_ok(), "the thread never ended");
    }
}

//! A simulated node's disk: what outlives its crashes. It keeps what the
//! disk engine promises at each acknowledgement (every write and hint
//! before it is acknowledged, and the member table once kept) and nothing
//! else: a node's memory is lost with its process, and each incarnation
//! reaches the disk through its own handle, which the crash closes.
//!
//! The disk can also fill up, and it can be told to misbehave in a known
//! way, so the checkers are shown to catch a node that loses data.

use crate::error::{Error, Result};
use crate::membership::{SavedMembers, TableKeeper};
use crate::store::{Engine, Entry, MemoryEngine};
use crate::version::Version;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// A way a disk misbehaves, to show a checker catches it. None is set on
/// a real node: this lives in the simulator alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    /// Silently drops one write in `one_in` (chosen by the version's dot,
    /// so every replica drops the same one) and acknowledges it anyway.
    DropWrites { one_in: u64 },
    /// Never forgets a key: removals are acknowledged and ignored, so a
    /// copy handed off stays where it was.
    KeepRemoved,
    /// Anti-entropy never runs (its interval is a day).
    NoAntiEntropy,
}

impl std::str::FromStr for Misbehave {
    type Err = String;

    /// `drop-writes:N`, `keep-removed` or `no-anti-entropy`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once(':') {
            Some(("drop-writes", n)) => match n.parse() {
                Ok(one_in) if one_in > 0 => Ok(Misbehave::DropWrites { one_in }),
                _ => Err(format!("drop-writes:N takes a positive N, not {n:?}")),
            },
            None if s == "keep-removed" => Ok(Misbehave::KeepRemoved),
            None if s == "no-anti-entropy" => Ok(Misbehave::NoAntiEntropy),
            _ => Err(format!("unknown misbehaviour {s:?}: drop-writes:N, keep-removed or no-anti-entropy")),
        }
    }
}

/// One node's disk, shared by its incarnations.
pub struct Disk {
    data: MemoryEngine,
    table: Mutex<Option<SavedMembers>>,
    full: AtomicBool,
    misbehave: Option<Misbehave>,
}

impl Disk {
    pub fn new(number_of_buckets: u32, misbehave: Option<Misbehave>) -> Arc<Disk> {
        Arc::new(Disk {
            data: MemoryEngine::new(number_of_buckets),
            table: Mutex::new(None),
            full: AtomicBool::new(false),
            misbehave,
        })
    }

    /// A new incarnation's handle.
    pub fn open(self: &Arc<Self>) -> DiskHandle {
        DiskHandle { disk: self.clone(), open: Arc::new(AtomicBool::new(true)) }
    }

    /// Fills the disk (writes fail) or frees it.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Relaxed);
    }

    fn drops(&self, versions: &[Version]) -> bool {
        match self.misbehave {
            Some(Misbehave::DropWrites { one_in }) => versions.iter().any(|v| dot_hash(v).is_multiple_of(one_in)),
            Some(Misbehave::KeepRemoved) => versions.is_empty(),
            Some(Misbehave::NoAntiEntropy) | None => false,
        }
    }
}

/// FNV-1a over a version's dot: the same on every replica and every run.
fn dot_hash(version: &Version) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let counter = version.dot.counter.to_le_bytes();
    for byte in version.dot.node.bytes().chain(counter) {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// An incarnation's way to its disk: closed when the process crashes, so
/// what it still tries to do reaches nothing.
#[derive(Clone)]
pub struct DiskHandle {
    disk: Arc<Disk>,
    open: Arc<AtomicBool>,
}

impl DiskHandle {
    /// The process is gone: nothing more through this handle.
    pub fn close(&self) {
        self.open.store(false, Relaxed);
    }

    fn check(&self) -> Result<&Disk> {
        match self.open.load(Relaxed) {
            true => Ok(&self.disk),
            false => Err(Error::Store("the process crashed".into())),
        }
    }

    fn check_write(&self) -> Result<&Disk> {
        let disk = self.check()?;
        match disk.full.load(Relaxed) {
            true => Err(Error::Store("No space left on device".into())),
            false => Ok(disk),
        }
    }
}

impl Engine for DiskHandle {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn read(&self, bucket: u32, key: &[u8]) -> Result<Vec<Version>> {
        self.check()?.data.read(bucket, key)
    }

    fn client_read(&self, bucket: u32, key: &[u8], now_ms: u64) -> Result<(Vec<Version>, u64)> {
        self.check()?.data.client_read(bucket, key, now_ms)
    }

    fn write(&self, bucket: u32, key: &[u8], versions: &[Version]) -> Result<()> {
        let disk = self.check_write()?;
        if disk.drops(versions) {
            return Ok(());
        }
        disk.data.write(bucket, key, versions)
    }

    fn list_bucket(&self, bucket: u32) -> Result<Vec<Entry>> {
        self.check()?.data.list_bucket(bucket)
    }

    fn sync(&self) -> Result<()> {
        self.check().map(|_| ())
    }

    fn writes_may_wait(&self) -> bool {
        false
    }

    fn add_hint(&self, home: &str, key: &[u8]) -> Result<()> {
        self.check_write()?.data.add_hint(home, key)
    }

    fn remove_hint(&self, home: &str, key: &[u8]) -> Result<()> {
        self.check_write()?.data.remove_hint(home, key)
    }

    fn hints(&self) -> Result<Vec<(String, Bytes)>> {
        self.check()?.data.hints()
    }

    fn free_bytes(&self) -> Option<u64> {
        self.disk.full.load(Relaxed).then_some(0)
    }
}

impl TableKeeper for DiskHandle {
    fn load(&self) -> Result<Option<SavedMembers>> {
        Ok(self.check()?.table.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn save(&self, saved: &SavedMembers) -> Result<()> {
        *self.check_write()?.table.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved.clone());
        Ok(())
    }

    fn describe(&self) -> String {
        "the simulated disk".into()
    }
}

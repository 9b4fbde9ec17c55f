//! `set`, `add`, `replace`, `append`, `prepend`, `cas`, `ms`, and their
//! binary opcodes.

use super::write;
use crate::error::Result;
use crate::memcache::SessionEnv;
use crate::stats::NodeStats;
use crate::store::{Condition, Mutation, Write, WriteOutcome};
use bytes::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    /// Only if absent (`add`, meta's `ME`).
    Add,
    /// Only if present.
    Replace,
    Append,
    Prepend,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub key: Bytes,
    pub mode: StoreMode,
    pub value: Bytes,
    pub flags: u32,
    /// Absolute unix seconds; 0: never.
    pub expires_at: u64,
    /// Stored only if the key is unchanged since the client read this cas
    /// token, whatever the mode.
    pub cas: Option<u64>,
    /// Append or prepend on a miss creates the key from the data, with
    /// this expiry (meta's `N`).
    pub vivify: Option<u64>,
    /// W for this request alone (meta's `w` flag).
    pub quorum: Option<u8>,
}

impl Store {
    /// A plain store: no cas, no vivify, the node's own W.
    pub fn new(key: Bytes, mode: StoreMode, value: Bytes, flags: u32, expires_at: u64) -> Self {
        Store { key, mode, value, flags, expires_at, cas: None, vivify: None, quorum: None }
    }

    pub async fn run(self, env: &SessionEnv) -> Result<WriteOutcome> {
        let stats = &env.stats;
        NodeStats::incr(&stats.cmd_set);
        let set = || Mutation::Set { value: self.value.clone(), flags: self.flags, expires_at: self.expires_at };
        let (condition, mutation) = match self.mode {
            StoreMode::Set => (Condition::Always, set()),
            StoreMode::Add => (Condition::Absent, set()),
            StoreMode::Replace => (Condition::Present, set()),
            StoreMode::Append => (Condition::Present, Mutation::Append(self.value.clone())),
            StoreMode::Prepend => (Condition::Present, Mutation::Prepend(self.value.clone())),
        };
        let condition = self.cas.map_or(condition, Condition::Context);
        let mut outcome = write(env, &self.key, Write { condition, mutation }, self.quorum).await?;
        let appending = matches!(self.mode, StoreMode::Append | StoreMode::Prepend);
        if let (WriteOutcome::NotStored, Some(expires_at), true) = (&outcome, self.vivify, appending) {
            let create = Mutation::Set { value: self.value.clone(), flags: self.flags, expires_at };
            outcome = write(env, &self.key, Write { condition: Condition::Absent, mutation: create }, self.quorum).await?;
        }
        if self.cas.is_some() {
            match &outcome {
                WriteOutcome::Stored { .. } => NodeStats::incr(&stats.cas_hits),
                WriteOutcome::Exists => NodeStats::incr(&stats.cas_badval),
                _ => NodeStats::incr(&stats.cas_misses),
            }
        }
        Ok(outcome)
    }
}

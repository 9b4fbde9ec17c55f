//! `incr`, `decr`, `ma`, and binary INCREMENT and DECREMENT.

use super::write;
use crate::error::Result;
use crate::memcache::SessionEnv;
use crate::stats::NodeStats;
use crate::store::{Condition, Mutation, Write, WriteOutcome};
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arith {
    pub key: Bytes,
    pub incr: bool,
    pub delta: u64,
    /// Counted only if unchanged since the client read this cas token.
    pub cas: Option<u64>,
    /// A miss creates the counter at this value, with this expiry (binary's
    /// initial value, meta's `N` and `J`).
    pub create: Option<(u64, u64)>,
    /// A new expiry once counted (meta's `T`).
    pub touch: Option<u64>,
    pub quorum: Option<u8>,
}

impl Arith {
    /// `incr` or `decr` by `delta`, nothing more.
    pub fn new(key: Bytes, incr: bool, delta: u64) -> Self {
        Arith { key, incr, delta, cas: None, create: None, touch: None, quorum: None }
    }

    pub async fn run(self, env: &SessionEnv) -> Result<WriteOutcome> {
        let condition = self.cas.map_or(Condition::Present, Condition::Context);
        let mutation = if self.incr { Mutation::Incr(self.delta) } else { Mutation::Decr(self.delta) };
        let arith = Write { condition, mutation };
        let mut outcome = write(env, &self.key, arith.clone(), self.quorum).await?;
        if let (WriteOutcome::NotFound, Some((initial, expires_at))) = (&outcome, self.create) {
            // A racing creator's counter is counted on instead.
            let create = Mutation::Set { value: Bytes::from(initial.to_string()), flags: 0, expires_at };
            outcome = match write(env, &self.key, Write { condition: Condition::Absent, mutation: create }, self.quorum).await? {
                WriteOutcome::NotStored => write(env, &self.key, arith, self.quorum).await?,
                created => created,
            };
        }
        if let (WriteOutcome::Stored { .. }, Some(expires_at)) = (&outcome, self.touch) {
            let touch = Write { condition: Condition::Present, mutation: Mutation::Touch { expires_at } };
            outcome = write(env, &self.key, touch, self.quorum).await?;
        }
        let hit = matches!(outcome, WriteOutcome::Stored { .. });
        let stats = &env.stats;
        match self.incr {
            true => NodeStats::hit_or_miss(hit, &stats.incr_hits, &stats.incr_misses),
            false => NodeStats::hit_or_miss(hit, &stats.decr_hits, &stats.decr_misses),
        }
        Ok(outcome)
    }
}

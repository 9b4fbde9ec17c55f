//! `delete`, `md` and binary DELETE: a tombstone over what the coordinator
//! read; concurrent values stay siblings.

use super::write;
use crate::error::Result;
use crate::memcache::SessionEnv;
use crate::stats::NodeStats;
use crate::store::{Condition, Mutation, Write, WriteOutcome};
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub key: Bytes,
    /// Deleted only if unchanged since the client read this cas token.
    pub cas: Option<u64>,
    pub quorum: Option<u8>,
}

impl Delete {
    pub async fn run(self, env: &SessionEnv) -> Result<WriteOutcome> {
        let condition = self.cas.map_or(Condition::Present, Condition::Context);
        let outcome = write(env, &self.key, Write { condition, mutation: Mutation::Delete }, self.quorum).await?;
        let deleted = matches!(outcome, WriteOutcome::Stored { .. });
        NodeStats::hit_or_miss(deleted, &env.stats.delete_hits, &env.stats.delete_misses);
        Ok(outcome)
    }
}

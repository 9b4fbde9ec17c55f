//! `touch` and binary TOUCH: a new expiry for a present key.

use super::write;
use crate::error::Result;
use crate::memcache::SessionEnv;
use crate::stats::NodeStats;
use crate::store::{Condition, Mutation, Write, WriteOutcome};
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    pub key: Bytes,
    /// Absolute unix seconds; 0: never.
    pub expires_at: u64,
}

impl Touch {
    pub async fn run(self, env: &SessionEnv) -> Result<WriteOutcome> {
        let stats = &env.stats;
        NodeStats::incr(&stats.cmd_touch);
        let touch = Write { condition: Condition::Present, mutation: Mutation::Touch { expires_at: self.expires_at } };
        let outcome = write(env, &self.key, touch, None).await?;
        NodeStats::hit_or_miss(matches!(outcome, WriteOutcome::Stored { .. }), &stats.touch_hits, &stats.touch_misses);
        Ok(outcome)
    }
}

//! `get`, `gets`, `gat`, `gats`, `mg`, and binary GET and GAT: a key's live
//! siblings, read with R replies, or touched first.

use super::{held_live, write};
use crate::coordinator::{Fetched, Origin};
use crate::error::Result;
use crate::memcache::SessionEnv;
use crate::stats::NodeStats;
use crate::store::{Condition, Mutation, Write};
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub key: Bytes,
    /// A new expiry to set first (absolute unix seconds, 0: never): in Kai
    /// a touch is a write, and the key then reads as never hit.
    pub touch: Option<u64>,
    /// R for this request alone (meta's `r` flag).
    pub quorum: Option<u8>,
}

impl Read {
    pub fn new(key: Bytes) -> Self {
        Read { key, touch: None, quorum: None }
    }

    pub async fn run(self, env: &SessionEnv) -> Result<Fetched> {
        let stats = &env.stats;
        NodeStats::incr(&stats.cmd_get);
        let fetched = match self.touch {
            None => env.coordinator.fetch(self.key, Origin::CLIENT, self.quorum).await?,
            Some(expires_at) => {
                NodeStats::incr(&stats.cmd_touch);
                let touch = Write { condition: Condition::Present, mutation: Mutation::Touch { expires_at } };
                let outcome = write(env, &self.key, touch, None).await?;
                Fetched { siblings: held_live(&outcome, env.clock().secs()), last_read_ms: 0 }
            }
        };
        NodeStats::hit_or_miss(!fetched.siblings.is_empty(), &stats.get_hits, &stats.get_misses);
        Ok(fetched)
    }
}

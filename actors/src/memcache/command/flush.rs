//! `flush_all` and binary FLUSH: every key deleted, now or after a delay,
//! if the node allows it.

use crate::error::{Error, Result};
use crate::memcache::SessionEnv;
use crate::stats::NodeStats;
use crate::store::FlushAll;
use std::time::Duration;

/// Why a flush is refused on a node that does not allow it.
pub const FLUSH_DISABLED: &str = "flush_all is disabled on this node; set allow_flush_all = true in its config to enable it";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flush {
    /// Seconds to wait first; 0: now.
    pub delay: u64,
}

impl Flush {
    pub async fn run(self, env: &SessionEnv) -> Result<()> {
        if !env.settings.allow_flush_all {
            return Err(Error::Client(FLUSH_DISABLED.into()));
        }
        NodeStats::incr(&env.stats.cmd_flush);
        let store = env.store.clone();
        let flush = async move {
            match store.send(FlushAll).await.map_err(Error::from).and_then(|flushed| flushed) {
                Ok(keys) => {
                    tracing::info!(keys, "flush_all");
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!("flush_all failed: {e}");
                    Err(e)
                }
            }
        };
        if self.delay == 0 {
            return flush.await;
        }
        let delay = Duration::from_secs(self.delay);
        actix::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = flush.await;
        });
        Ok(())
    }
}

//! sync: keeps a node's replicas in good order in the background. Today it
//! reaps tombstones and expired versions past their grace period, which is
//! safe only where this node is every key's only home replica (a cluster
//! of one); with more nodes, reaping waits for every replica to hold them.

use crate::hash::RingHandle;
use crate::store::{Reap, StoreAddr};
use actix::prelude::*;
use std::time::Duration;

#[derive(Clone)]
pub struct SyncSettings {
    pub reap_interval: Duration,
    /// How long a tombstone (or expired value) is kept before reaping.
    pub tombstone_grace: Duration,
}

pub struct SyncActor {
    settings: SyncSettings,
    ring: RingHandle,
    store: StoreAddr,
}

impl SyncActor {
    pub fn new(settings: SyncSettings, ring: RingHandle, store: StoreAddr) -> Self {
        SyncActor { settings, ring, store }
    }
}

/// Reaps now if it is safe (also sent by the reap timer).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReapTick;

impl Actor for SyncActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.settings.reap_interval, |_, ctx| ctx.notify(ReapTick));
    }
}

crate::supervised!(SyncActor, "sync");

impl Handler<ReapTick> for SyncActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: ReapTick, _: &mut Self::Context) -> Self::Result {
        let sole_replica = self.ring.snapshot().len() == 1;
        let reap = sole_replica.then(|| self.store.send(Reap { grace_secs: self.settings.tombstone_grace.as_secs() }));
        Box::pin(
            async move {
                let Some(reap) = reap else { return };
                match reap.await {
                    Ok(Ok(n)) if n > 0 => tracing::debug!(reaped = n, "reaped tombstones and expired values"),
                    Ok(Err(e)) => tracing::warn!("reaping failed: {e}"),
                    _ => {}
                }
            }
            .into_actor(self),
        )
    }
}

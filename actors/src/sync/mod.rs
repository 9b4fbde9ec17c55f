//! sync: keeps a node's replicas in good order in the background.
//!
//! - Hinted handoff: writes this node took as a stand-in for a down home
//!   node are delivered when that node is up again (at once when
//!   membership says so, and on a timer for any missed), then dropped.
//! - Reaping: tombstones and expired versions past their grace period are
//!   removed, which is safe only where this node is every key's only home
//!   replica (a cluster of one); with more nodes, reaping waits for every
//!   replica to hold them.

use crate::api::{Peers, Request, Response};
use crate::error::{Error, Result};
use crate::hash::RingHandle;
use crate::membership::{Liveness, MemberUp};
use crate::stats::NodeStats;
use crate::store::{DropHint, Hints, Reap, StoreAddr};
use actix::prelude::*;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct SyncSettings {
    pub reap_interval: Duration,
    /// How long a tombstone (or expired value) is kept before reaping.
    pub tombstone_grace: Duration,
    pub hint_interval: Duration,
    pub timeout: Duration,
}

pub struct SyncActor {
    settings: SyncSettings,
    ring: RingHandle,
    liveness: Liveness,
    store: StoreAddr,
    peers: Peers,
    stats: Arc<NodeStats>,
    /// A delivery round is under way; ticks meanwhile are skipped.
    delivering: bool,
}

impl SyncActor {
    pub fn new(
        settings: SyncSettings,
        ring: RingHandle,
        liveness: Liveness,
        store: StoreAddr,
        peers: Peers,
        stats: Arc<NodeStats>,
    ) -> Self {
        SyncActor { settings, ring, liveness, store, peers, stats, delivering: false }
    }

    /// Delivers every hint whose home node is up now.
    fn deliver_hints(&mut self, ctx: &mut Context<Self>) {
        if self.delivering {
            return;
        }
        self.delivering = true;
        let (store, peers, timeout, liveness, stats) =
            (self.store.clone(), self.peers.clone(), self.settings.timeout, self.liveness.clone(), self.stats.clone());
        let work = async move {
            let hints = store.send(Hints).await??;
            stats.hints_pending.store(hints.len() as i64, Relaxed);
            let down = liveness.down();
            let mut delivered = 0;
            for (home, key, versions) in hints {
                let Ok(addr) = home.parse::<SocketAddrV4>() else { continue };
                if down.contains(&addr) {
                    continue;
                }
                let put = Request::ReplicaPut { key: key.clone(), versions: versions.clone(), hint: None };
                match peers.call(SocketAddr::V4(addr), put, timeout).await {
                    Ok(Response::Done) => {
                        if store.send(DropHint { home, key, delivered: versions }).await?? {
                            delivered += 1;
                            stats.hints_pending.fetch_sub(1, Relaxed);
                        }
                    }
                    Ok(other) => tracing::debug!(%addr, "hint refused: {other:?}"),
                    // The home node is unreachable after all: try later.
                    Err(e) => {
                        tracing::debug!(%addr, "hint delivery failed: {e}");
                        break;
                    }
                }
            }
            Ok::<u64, Error>(delivered)
        };
        ctx.spawn(work.into_actor(self).map(|result: Result<u64>, act, _| {
            act.delivering = false;
            match result {
                Ok(n) if n > 0 => tracing::info!(delivered = n, "hinted writes handed off"),
                Ok(_) => {}
                Err(e) => tracing::warn!("hint delivery failed: {e}"),
            }
        }));
    }
}

/// Reaps now if it is safe (also sent by the reap timer).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReapTick;

#[derive(Message)]
#[rtype(result = "()")]
struct HintTick;

impl Actor for SyncActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.delivering = false;
        ctx.run_interval(self.settings.reap_interval, |_, ctx| ctx.notify(ReapTick));
        ctx.run_interval(self.settings.hint_interval, |_, ctx| ctx.notify(HintTick));
    }
}

crate::supervised!(SyncActor, "sync");

impl Handler<HintTick> for SyncActor {
    type Result = ();

    fn handle(&mut self, _: HintTick, ctx: &mut Self::Context) {
        self.deliver_hints(ctx);
    }
}

impl Handler<MemberUp> for SyncActor {
    type Result = ();

    fn handle(&mut self, MemberUp(node): MemberUp, ctx: &mut Self::Context) {
        tracing::debug!(%node, "member up: handing off hints");
        self.deliver_hints(ctx);
    }
}

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

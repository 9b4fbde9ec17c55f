//! membership: who is in the cluster and whether each member is up. The
//! pure member table and its gossip rules are in `table`; the actor gossips
//! with one random peer every interval, tells hash when the ring changes,
//! and publishes which nodes are down for request paths to read.

mod table;

pub use table::{Digest, Event, Member, Members, Status};

use crate::api::{Peers, Request, Response};
use crate::error::{Error, Result};
use crate::hash::{HashActor, RingNode, UpdateNodes};
use actix::prelude::*;
use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The nodes on the ring that are down now: read by every request, so
/// published as an immutable snapshot like the ring.
#[derive(Clone, Default)]
pub struct Liveness(Arc<RwLock<Arc<BTreeSet<SocketAddrV4>>>>);

impl Liveness {
    pub fn down(&self) -> Arc<BTreeSet<SocketAddrV4>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn publish(&self, down: BTreeSet<SocketAddrV4>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(down);
    }
}

/// Told when a member comes back up (hints are waiting for it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct MemberUp(pub SocketAddrV4);

#[derive(Clone)]
pub struct MembershipSettings {
    pub gossip_interval: Duration,
    /// A member silent this long is marked down.
    pub down_after: Duration,
    pub timeout: Duration,
    /// Nodes to link with at start (as `check_node` would).
    pub seeds: Vec<SocketAddrV4>,
}

/// Every member and its state.
#[derive(Message)]
#[rtype(result = "Vec<Member>")]
pub struct MemberList;

/// Gossip from a peer: merge it and answer with our table.
#[derive(Message)]
#[rtype(result = "Vec<Digest>")]
pub struct ReceiveGossip(pub Vec<Digest>);

/// `check_node`: contact a node and merge member lists with it.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct CheckNode(pub SocketAddrV4);

/// `remove_node`: takes a node off the ring for good; its buckets are
/// re-homed (moved by sync) and the news spreads by gossip.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct RemoveNode(pub SocketAddrV4);

#[derive(Message)]
#[rtype(result = "()")]
struct GossipTick;

pub struct MembershipActor {
    members: Members,
    settings: MembershipSettings,
    peers: Peers,
    hash: Addr<HashActor>,
    liveness: Liveness,
    up_listeners: Vec<Recipient<MemberUp>>,
    epoch: Instant,
}

impl MembershipActor {
    pub fn new(
        me: RingNode,
        settings: MembershipSettings,
        peers: Peers,
        hash: Addr<HashActor>,
        liveness: Liveness,
        up_listeners: Vec<Recipient<MemberUp>>,
    ) -> Self {
        let down_after = settings.down_after.as_millis() as u64;
        MembershipActor {
            members: Members::new(me, down_after, 0),
            settings,
            peers,
            hash,
            liveness,
            up_listeners,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Acts on what changed: ring changes go to hash, up/down is published.
    fn apply(&mut self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for event in &events {
            match event {
                Event::Joined(node) => {
                    tracing::info!(node = %node.addr, "member joined");
                    added.push(node.clone());
                }
                Event::Left(addr) => {
                    tracing::info!(node = %addr, "member left");
                    removed.push(*addr);
                }
                Event::Down(addr) => tracing::warn!(node = %addr, "member down"),
                Event::Up(addr) => {
                    tracing::info!(node = %addr, "member up");
                    for listener in &self.up_listeners {
                        listener.do_send(MemberUp(*addr));
                    }
                }
            }
        }
        if !added.is_empty() || !removed.is_empty() {
            self.hash.do_send(UpdateNodes { added, removed });
        }
        self.liveness.publish(self.members.down_nodes().into_iter().collect());
    }

    /// One push-pull exchange with `peer`, run outside the message loop.
    fn exchange(&self, peer: SocketAddrV4) -> impl ActorFuture<Self, Output = Result<()>> {
        let (peers, timeout) = (self.peers.clone(), self.settings.timeout);
        let request = Request::Gossip { members: self.members.digests() };
        async move { peers.call(SocketAddr::V4(peer), request, timeout).await }.into_actor(self).map(move |result, act, _| {
            match result {
                Ok(Response::Members(digests)) => {
                    let now = act.now_ms();
                    let events = act.members.merge(&digests, now);
                    act.apply(events);
                    Ok(())
                }
                Ok(other) => Err(Error::Protocol(format!("{peer} answered gossip with {other:?}"))),
                Err(e) => Err(e),
            }
        })
    }
}

impl Actor for MembershipActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.settings.gossip_interval, |_, ctx| ctx.notify(GossipTick));
        for seed in self.settings.seeds.clone() {
            if seed != self.members.me() {
                ctx.spawn(self.exchange(seed).map(move |result, _, _| {
                    if let Err(e) = result {
                        tracing::warn!(%seed, "seed not reached: {e}");
                    }
                }));
            }
        }
    }
}

crate::supervised!(MembershipActor, "membership");

impl Handler<GossipTick> for MembershipActor {
    type Result = ();

    fn handle(&mut self, _: GossipTick, ctx: &mut Self::Context) {
        let now = self.now_ms();
        let events = self.members.tick(now);
        self.apply(events);
        if let Some(peer) = self.members.gossip_target(&mut rand::thread_rng()) {
            ctx.spawn(self.exchange(peer).map(move |result, _, _| {
                if let Err(e) = result {
                    tracing::debug!(%peer, "gossip failed: {e}");
                }
            }));
        }
    }
}

impl Handler<ReceiveGossip> for MembershipActor {
    type Result = MessageResult<ReceiveGossip>;

    fn handle(&mut self, msg: ReceiveGossip, _: &mut Self::Context) -> Self::Result {
        let now = self.now_ms();
        let events = self.members.merge(&msg.0, now);
        self.apply(events);
        MessageResult(self.members.digests())
    }
}

impl Handler<CheckNode> for MembershipActor {
    type Result = ResponseActFuture<Self, Result<()>>;

    fn handle(&mut self, msg: CheckNode, _: &mut Self::Context) -> Self::Result {
        if msg.0 == self.members.me() {
            return Box::pin(async { Ok(()) }.into_actor(self));
        }
        Box::pin(self.exchange(msg.0))
    }
}

impl Handler<MemberList> for MembershipActor {
    type Result = MessageResult<MemberList>;

    fn handle(&mut self, _: MemberList, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.members.list())
    }
}

impl Handler<RemoveNode> for MembershipActor {
    type Result = Result<()>;

    fn handle(&mut self, RemoveNode(node): RemoveNode, _: &mut Self::Context) -> Self::Result {
        if !self.members.ring_nodes().iter().any(|n| n.addr == node) {
            return Err(Error::Client(format!("{node} is not on the ring")));
        }
        if self.members.ring_nodes().len() == 1 {
            return Err(Error::Client("the last node of a cluster cannot be removed".into()));
        }
        let events = self.members.leave(node);
        self.apply(events);
        Ok(())
    }
}

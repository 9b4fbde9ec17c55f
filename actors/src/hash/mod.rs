//! hash: the ring. The pure ring is in `ring`; the actor owns the current
//! ring, applies membership changes and publishes immutable snapshots, so
//! request paths read placement without ever queueing behind the actor.

mod ring;

pub use ring::{bucket_of, hash_bytes, is_valid_bucket_count, virtual_node_position, Ring, RingNode, MAX_BUCKETS};

use crate::api::admin::{answer, AdminCommand};
use crate::api::{respond, Request, Response};
use actix::prelude::*;
use arc_swap::ArcSwap;
use std::net::SocketAddrV4;
use std::sync::Arc;

/// The published ring: cheap to clone. Every request reads it from both
/// workers, so a read writes nothing the other worker reads (no lock, no
/// shared reference count: `arc_swap`).
#[derive(Clone)]
pub struct RingHandle(Arc<ArcSwap<Ring>>);

impl RingHandle {
    pub fn new(ring: Ring) -> Self {
        RingHandle(Arc::new(ArcSwap::from_pointee(ring)))
    }

    /// The ring now, to keep.
    pub fn snapshot(&self) -> Arc<Ring> {
        self.0.load_full()
    }

    /// The ring now, for the span of one request.
    pub fn current(&self) -> arc_swap::Guard<Arc<Ring>> {
        self.0.load()
    }

    fn publish(&self, ring: Ring) {
        self.0.store(Arc::new(ring));
    }
}

/// Joins and removes nodes; answers the buckets whose home replicas changed.
#[derive(Message)]
#[rtype(result = "Vec<u32>")]
pub struct UpdateNodes {
    pub added: Vec<RingNode>,
    pub removed: Vec<SocketAddrV4>,
}

/// The preference list of a key: every node, home replicas first.
#[derive(Message)]
#[rtype(result = "Vec<SocketAddrV4>")]
pub struct FindNodes(pub Vec<u8>);

/// Told whenever a new ring is published (sync plans transfers from it).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct RingChanged;

/// Asks to be told of every new ring.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchRing(pub Recipient<RingChanged>);

pub struct HashActor {
    ring: RingHandle,
    n: usize,
    watchers: Vec<Recipient<RingChanged>>,
}

impl HashActor {
    pub fn new(ring: RingHandle, n: usize) -> Self {
        HashActor { ring, n, watchers: Vec::new() }
    }
}

impl Handler<WatchRing> for HashActor {
    type Result = ();

    fn handle(&mut self, WatchRing(watcher): WatchRing, _: &mut Self::Context) {
        self.watchers.push(watcher);
    }
}

impl Actor for HashActor {
    type Context = Context<Self>;
}

crate::supervised!(HashActor, "hash");

impl Handler<UpdateNodes> for HashActor {
    type Result = MessageResult<UpdateNodes>;

    fn handle(&mut self, msg: UpdateNodes, _: &mut Self::Context) -> Self::Result {
        let (ring, replaced) = self.ring.snapshot().update_nodes(&msg.added, &msg.removed, self.n);
        tracing::info!(nodes = ring.len(), replaced = replaced.len(), "ring updated");
        self.ring.publish(ring);
        for watcher in &self.watchers {
            watcher.do_send(RingChanged);
        }
        MessageResult(replaced)
    }
}

impl Handler<FindNodes> for HashActor {
    type Result = MessageResult<FindNodes>;

    fn handle(&mut self, msg: FindNodes, _: &mut Self::Context) -> Self::Result {
        let ring = self.ring.snapshot();
        MessageResult(ring.preference_list(ring.bucket_of(&msg.0)).to_vec())
    }
}

/// `find_nodes`: a key's preference list.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct PreferenceList {
    pub key: bytes::Bytes,
}

crate::admin_command!(PreferenceList, "find_nodes", Hash, Placement);

/// A key's bucket and its nodes in preference order, as the admin tool
/// shows them.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct Placement {
    pub bucket: u32,
    pub n: usize,
    /// Every node in preference order with whether it is up.
    pub nodes: Vec<(String, bool)>,
}

/// `buckets`: the buckets this node is a home replica of, and how many
/// each node is.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Buckets;

crate::admin_command!(Buckets, "buckets", Hash, BucketBalance);

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct BucketBalance {
    pub held: Vec<u32>,
    pub per_node: Vec<(String, usize)>,
}

/// Serves hash's admin commands.
pub fn serve(
    ring: &RingHandle,
    liveness: &crate::membership::Liveness,
    identity: &crate::stats::Identity,
    request: Request,
) -> ResponseFuture<Response> {
    let Request::Admin(call) = &request else { return respond::misrouted("hash", &request) };
    let ring = ring.snapshot();
    let n = identity.n;
    match call.command.as_str() {
        PreferenceList::NAME => {
            let down = liveness.down();
            answer(call, move |PreferenceList { key }| async move {
                let bucket = ring.bucket_of(&key);
                let nodes = ring.preference_list(bucket).iter().map(|a| (a.to_string(), !down.contains(a))).collect();
                Ok(Placement { bucket, n, nodes })
            })
        }
        Buckets::NAME => {
            let held = identity.node.parse().map(|me| ring.buckets_of(&me, n)).unwrap_or_default();
            answer(call, move |Buckets| async move {
                let per_node = ring.nodes().map(|node| (node.name(), ring.buckets_of(&node.addr, n).len())).collect();
                Ok(BucketBalance { held, per_node })
            })
        }
        _ => call.unknown(),
    }
}

//! Routes each internal API request to the module that owns it.

use crate::api::{ApiActor, ApiCall, Faults, ForwardOp, NodeInfo, Placement, Request, Response};
use crate::coordinator::{ClientGet, ClientWrite, CoordinatorActor, Origin};
use crate::hash::{HashActor, RingHandle};
use crate::membership::{
    Answer, CheckNode, Liveness, MemberList, MemberStatus, MembershipActor, ReceiveDelta, ReceiveGossip, ReceiveHeartbeats,
    RemoveNode,
};
use crate::memcache::MemcacheActor;
use crate::stats::{report, Identity, NodeStats};
use crate::store::{
    BucketRoots, CombinedRoot, GetSegments, HintCounts, MergeEntries, ReadKeys, ReplicaPut, SegmentEntries, StoreAddr,
};
use crate::supervision::{Panic, PANIC_NEXT_QUORUM};
use crate::sync::{GetTransfers, SyncActor};
use crate::version::VersionActor;
use crate::Restart;
use actix::prelude::*;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

/// Routes each internal API request to the actor that serves it. One runs
/// on each worker, with that worker's store and coordinator.
#[derive(Clone)]
pub struct Router {
    pub(super) identity: Identity,
    pub(super) memcache_port: u16,
    pub(super) stats: Arc<NodeStats>,
    pub(super) ring: RingHandle,
    pub(super) liveness: Liveness,
    pub(super) faults: Faults,
    pub(super) allow_fault_injection: bool,
    /// This worker's store and coordinator, and every worker's.
    pub(super) store: StoreAddr,
    pub(super) coordinator: Addr<CoordinatorActor>,
    pub(super) stores: Vec<StoreAddr>,
    pub(super) hash: Addr<HashActor>,
    pub(super) membership: Addr<MembershipActor>,
    pub(super) versions: Vec<Addr<VersionActor>>,
    pub(super) coordinators: Vec<Addr<CoordinatorActor>>,
    pub(super) sync: Addr<SyncActor>,
    pub(super) api: Option<Addr<ApiActor>>,
    pub(super) memcache: Option<Addr<MemcacheActor>>,
}

impl Actor for Router {
    type Context = Context<Self>;
}

impl Supervised for Router {
    fn restarting(&mut self, _: &mut Self::Context) {
        crate::stats::count_restart("api");
        tracing::warn!("api router restarting");
    }
}

/// Hands the router the addresses of the actors started after it.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Faces {
    pub(super) api: Addr<ApiActor>,
    pub(super) memcache: Option<Addr<MemcacheActor>>,
}

impl Handler<Faces> for Router {
    type Result = ();
    fn handle(&mut self, msg: Faces, _: &mut Self::Context) {
        self.api = Some(msg.api);
        self.memcache = msg.memcache;
    }
}

fn failed(e: impl std::fmt::Display) -> Response {
    Response::Error(e.to_string())
}

/// Awaits an actor's answer and turns it into a response.
fn reply<T, E: std::fmt::Display>(
    answer: impl std::future::Future<Output = Result<Result<T, E>, MailboxError>> + 'static,
    ok: impl FnOnce(T) -> Response + 'static,
) -> ResponseFuture<Response> {
    Box::pin(async move {
        match answer.await {
            Ok(Ok(value)) => ok(value),
            Ok(Err(e)) => failed(e),
            Err(e) => failed(e),
        }
    })
}

/// Awaits a client request's answer; a failure keeps its kind, so the
/// peer that forwarded it knows whether it may have run.
fn typed_reply<T>(
    answer: impl std::future::Future<Output = Result<crate::Result<T>, MailboxError>> + 'static,
    ok: impl FnOnce(T) -> Response + 'static,
) -> ResponseFuture<Response> {
    Box::pin(async move {
        match answer.await {
            Ok(Ok(value)) => ok(value),
            Ok(Err(e)) => Response::Failed(e),
            Err(e) => Response::Failed(crate::Error::Indeterminate(format!("coordinator: {e}"))),
        }
    })
}

fn refuse(why: String) -> ResponseFuture<Response> {
    Box::pin(async move { Response::Error(why) })
}

impl Handler<ApiCall> for Router {
    type Result = ResponseFuture<Response>;

    fn handle(&mut self, ApiCall { request, deadline }: ApiCall, _: &mut Self::Context) -> Self::Result {
        match request {
            Request::Hello { .. } | Request::Proof { .. } => refuse("already shook hands".into()),
            Request::ReplicaGet { key, client_read } => {
                let answer = crate::api::replica_get(&self.store.direct, &key, client_read);
                Box::pin(async move { answer })
            }
            Request::ReplicaPut { key, versions, hint } => {
                reply(self.store.send(ReplicaPut { key, versions, hint }), |()| Response::Done)
            }
            Request::Forward { key, op, hops, quorum, .. } => {
                let coordinator = &self.coordinator;
                let origin = Origin { hops, deadline };
                match op {
                    ForwardOp::Get => typed_reply(coordinator.send(ClientGet { key, origin, quorum }), |fetched| {
                        Response::VersionsRead { versions: fetched.siblings, last_read_ms: fetched.last_read_ms }
                    }),
                    ForwardOp::Write(write) => {
                        typed_reply(coordinator.send(ClientWrite { key, write, origin, quorum }), Response::Outcome)
                    }
                }
            }
            Request::Gossip { members } => {
                let answer = self.membership.send(ReceiveGossip(members));
                Box::pin(async move { answer.await.map(Response::Members).unwrap_or_else(failed) })
            }
            Request::GossipHeartbeats(opening) => {
                let answer = self.membership.send(ReceiveHeartbeats(opening));
                Box::pin(async move {
                    match answer.await {
                        Ok(Answer::Ahead(ahead)) => Response::HeartbeatsAhead(ahead),
                        Ok(Answer::Table(table)) => Response::Members(table),
                        Err(e) => failed(e),
                    }
                })
            }
            Request::GossipDelta { members } => {
                let merged = self.membership.send(ReceiveDelta(members));
                Box::pin(async move { merged.await.map(|()| Response::Done).unwrap_or_else(failed) })
            }
            Request::CheckNode { node } => match node.parse::<SocketAddrV4>() {
                Ok(addr) => reply(self.membership.send(CheckNode(addr)), |()| Response::Done),
                Err(_) => refuse(format!("bad node address {node:?}: expected IPv4 HOST:PORT")),
            },
            Request::FindNodes { key } => {
                let ring = self.ring.snapshot();
                let down = self.liveness.down();
                let bucket = ring.bucket_of(&key);
                let nodes = ring.preference_list(bucket).iter().map(|a| (a.to_string(), !down.contains(a))).collect();
                let placement = Placement { bucket, n: self.identity.n, nodes };
                Box::pin(async move { Response::Placement(placement) })
            }
            Request::Buckets => {
                let ring = self.ring.snapshot();
                let n = self.identity.n;
                let per_node = ring.nodes().map(|node| (node.name(), ring.buckets_of(&node.addr, n).len())).collect();
                let held = self.identity.node.parse().map(|me| ring.buckets_of(&me, n)).unwrap_or_default();
                Box::pin(async move { Response::Buckets { held, per_node } })
            }
            Request::Segments { bucket } if bucket < self.identity.number_of_buckets => {
                let segments = self.store.send(GetSegments(bucket));
                Box::pin(async move { segments.await.map(|s| Response::Segments(s.to_vec())).unwrap_or_else(failed) })
            }
            Request::Segments { bucket } => refuse(format!("no bucket {bucket}")),
            Request::BucketRoots { buckets } if buckets.iter().all(|b| *b < self.identity.number_of_buckets) => {
                let roots = self.store.send(BucketRoots(buckets));
                Box::pin(async move { roots.await.map(Response::Roots).unwrap_or_else(failed) })
            }
            Request::BucketRoots { .. } => refuse(format!("buckets run from 0 to {}", self.identity.number_of_buckets - 1)),
            Request::MemberStatus => {
                let rows = self.membership.send(MemberStatus);
                let hints = self.store.send(HintCounts);
                let (ring, n) = (self.ring.snapshot(), self.identity.n);
                Box::pin(async move {
                    let Ok(mut rows) = rows.await else { return Response::Error("membership is restarting".into()) };
                    let hints = match hints.await {
                        Ok(Ok(hints)) => hints,
                        _ => Default::default(),
                    };
                    let (first, home) = ring.bucket_counts(n);
                    for row in &mut rows {
                        if let Ok(addr) = row.addr.parse::<SocketAddrV4>() {
                            row.buckets_first = first.get(&addr).copied().unwrap_or(0);
                            row.buckets_home = home.get(&addr).copied().unwrap_or(0);
                        }
                        row.hints_held = hints.get(&row.addr).copied().unwrap_or(0);
                    }
                    Response::MemberStatus(rows)
                })
            }
            Request::SegmentEntries { bucket, segments } if bucket < self.identity.number_of_buckets => {
                let segments = segments.into_iter().map(|s| s as usize).collect();
                reply(self.store.send(SegmentEntries { bucket, segments }), Response::Entries)
            }
            Request::SegmentEntries { bucket, .. } => refuse(format!("no bucket {bucket}")),
            Request::MergeEntries { entries } => reply(self.store.send(MergeEntries(entries)), |()| Response::Done),
            Request::ReadKeys { keys } => reply(self.store.send(ReadKeys(keys)), Response::Entries),
            Request::RemoveNode { node } => match node.parse::<SocketAddrV4>() {
                Ok(addr) => reply(self.membership.send(RemoveNode(addr)), |()| Response::Done),
                Err(_) => refuse(format!("bad node address {node:?}: expected IPv4 HOST:PORT")),
            },
            Request::MerkleRoot => {
                let ring = self.ring.snapshot();
                let held = self.identity.node.parse().map(|me| ring.buckets_of(&me, self.identity.n)).unwrap_or_default();
                let root = self.store.send(CombinedRoot(held));
                Box::pin(async move { root.await.map(Response::Root).unwrap_or_else(failed) })
            }
            Request::Transfers => {
                let progress = self.sync.send(GetTransfers);
                Box::pin(async move { progress.await.map(Response::Transfers).unwrap_or_else(failed) })
            }
            Request::Block { peers } => {
                if !self.allow_fault_injection {
                    return refuse("fault injection is disabled; set allow_fault_injection = true to enable it".into());
                }
                tracing::warn!(?peers, "fault injection: blocking traffic");
                self.faults.block(peers);
                Box::pin(async { Response::Done })
            }
            Request::NodeInfo => {
                let id = self.identity.clone();
                let memcache_port = self.memcache_port;
                let members = self.membership.send(MemberList);
                Box::pin(async move {
                    let members = members.await.unwrap_or_default();
                    Response::NodeInfo(NodeInfo {
                        node: id.node,
                        memcache_port,
                        number_of_buckets: id.number_of_buckets,
                        virtual_nodes: id.virtual_nodes,
                        n: id.n,
                        r: id.r,
                        w: id.w,
                        store: id.store.to_string(),
                        members: members
                            .iter()
                            .filter(|m| m.state.on_ring())
                            .map(|m| {
                                let status = if m.suspected { "down" } else { m.state.name() };
                                format!("{} {status} {} virtual nodes", m.node.name(), m.node.virtual_nodes)
                            })
                            .collect(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                    })
                })
            }
            Request::Stats => {
                let lines = report(&self.stats, &self.identity, &self.ring.snapshot());
                Box::pin(async move { Response::Stats(lines) })
            }
            Request::RestartActor { module } => {
                let answer = match self.tell_module(&module, Tell::Restart) {
                    Ok(true) => Response::Done,
                    Ok(false) => Response::Error("module busy".into()),
                    Err(why) => Response::Error(why),
                };
                Box::pin(async move { answer })
            }
            Request::Panic { module } => {
                if !self.allow_fault_injection {
                    return refuse("fault injection is disabled; set allow_fault_injection = true to enable it".into());
                }
                tracing::warn!(%module, "fault injection: panicking");
                let answer = match self.tell_module(&module, Tell::Panic) {
                    Ok(_) => Response::Done,
                    Err(why) => Response::Error(why),
                };
                Box::pin(async move { answer })
            }
        }
    }
}

/// What `tell_module` asks of a module's actors.
#[derive(Clone, Copy, PartialEq)]
enum Tell {
    Restart,
    Panic,
}

impl Router {
    /// Asks every actor of a module to restart (or, for fault injection, to
    /// panic); whether all took the message.
    fn tell_module(&self, module: &str, tell: Tell) -> Result<bool, String> {
        fn send<A>(addr: &Addr<A>, tell: Tell) -> bool
        where
            A: Actor<Context = Context<A>> + Handler<Restart> + Handler<Panic>,
        {
            match tell {
                Tell::Restart => addr.try_send(Restart).is_ok(),
                Tell::Panic => addr.try_send(Panic).is_ok(),
            }
        }
        Ok(match module {
            // A pool thread: it cannot be restarted in place, so the node
            // exits; a moment later, so the caller hears "told to panic".
            "store" if tell == Tell::Panic => match self.store.pool.clone() {
                Some(pool) => {
                    actix::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = pool.try_send(Panic);
                    });
                    true
                }
                None => self.stores.iter().all(|s| s.local.try_send(Panic).is_ok()),
            },
            "store" => self.stores.iter().all(StoreAddr::restart),
            "quorum" if tell == Tell::Panic => {
                PANIC_NEXT_QUORUM.store(true, std::sync::atomic::Ordering::Relaxed);
                true
            }
            "quorum" => return Err("a quorum actor lives for one request: there is none to restart".into()),
            "hash" => send(&self.hash, tell),
            "membership" => send(&self.membership, tell),
            "version" => self.versions.iter().all(|a| send(a, tell)),
            "coordinator" => self.coordinators.iter().all(|a| send(a, tell)),
            "sync" => send(&self.sync, tell),
            "api" => self.api.as_ref().is_some_and(|a| send(a, tell)),
            "memcache" => self.memcache.as_ref().is_some_and(|a| send(a, tell)),
            other => {
                return Err(format!(
                    "no module {other:?}; modules: store hash membership version coordinator sync api memcache (and quorum for panic)"
                ))
            }
        })
    }
}

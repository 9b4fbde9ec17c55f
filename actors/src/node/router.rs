//! Routes each internal API request to the module that owns it
//! (`Request::owner`); each module serves its own (`serve` in each).

use crate::api::admin::{answer, AdminCommand};
use crate::api::respond::{misrouted, refuse};
use crate::api::{ApiActor, ApiCall, Faults, Owner, Request, Response};
use crate::coordinator::CoordinatorActor;
use crate::error::Error;
use crate::hash::{HashActor, RingHandle};
use crate::membership::serve::MembershipApi;
use crate::membership::{Liveness, MembershipActor};
use crate::memcache::MemcacheActor;
use crate::stats::{report, Identity, NodeStats};
use crate::store::StoreAddr;
use crate::supervision::Panic;
use crate::sync::SyncActor;
use crate::version::VersionActor;
use crate::Restart;
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Routes each internal API request to the actor that serves it. One runs
/// on each worker, with that worker's store and coordinator.
#[derive(Clone)]
pub struct Router {
    pub(super) identity: Identity,
    pub(super) memcache_port: u16,
    /// The peer protocol version this node offers.
    pub(super) protocol_version: u32,
    /// How long removed members stay in `node_list`.
    pub(super) tombstone_grace: Duration,
    pub(super) stats: Arc<NodeStats>,
    pub(super) ring: RingHandle,
    pub(super) liveness: Liveness,
    pub(super) faults: Faults,
    pub(super) credentials: Arc<super::Credentials>,
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

impl Handler<ApiCall> for Router {
    type Result = ResponseFuture<Response>;

    /// Sends each request to the module that owns it (`Request::owner`).
    fn handle(&mut self, ApiCall { request, deadline }: ApiCall, _: &mut Self::Context) -> Self::Result {
        let Some(owner) = request.owner() else {
            return match request {
                Request::Admin(call) => call.unknown(),
                other => misrouted("the node", &other),
            };
        };
        match owner {
            Owner::Api => refuse(Error::Protocol("already shook hands".into())),
            Owner::Store => crate::store::serve::serve(&self.store, &self.ring, &self.identity, request),
            Owner::Coordinator => crate::coordinator::serve(&self.coordinator, request, deadline),
            Owner::Membership => {
                let api = MembershipApi {
                    membership: &self.membership,
                    store: &self.store,
                    ring: &self.ring,
                    identity: &self.identity,
                    memcache_port: self.memcache_port,
                    protocol_version: self.protocol_version,
                    tombstone_grace: self.tombstone_grace,
                };
                crate::membership::serve::serve(api, request)
            }
            Owner::Hash => crate::hash::serve(&self.ring, &self.liveness, &self.identity, request),
            Owner::Sync => crate::sync::serve(&self.sync, request),
            Owner::Node => self.serve_node(request),
        }
    }
}

/// `stats`: every stat of the node, typed.
#[derive(Serialize, Deserialize, Debug)]
pub struct Stats;

crate::admin_command!(Stats, "stats", Node, crate::stats::Stats);

/// `restart_actor`: stops a module's actors so their supervisor starts them
/// afresh.
#[derive(Serialize, Deserialize, Debug)]
pub struct RestartActor {
    pub module: String,
}

crate::admin_command!(RestartActor, "restart_actor", Node, ());

/// `panic`, test-only: makes a module's actor panic (or the next
/// request's quorum actor, for "quorum").
#[derive(Serialize, Deserialize, Debug)]
pub struct PanicModule {
    pub module: String,
}

crate::admin_command!(PanicModule, "panic", Node, ());

/// `block`, test-only: drops all traffic with these peers (none: heals).
#[derive(Serialize, Deserialize, Debug)]
pub struct Block {
    pub peers: Vec<String>,
}

crate::admin_command!(Block, "block", Node, ());

/// Reads the certificates and password files again.
#[derive(Serialize, Deserialize)]
pub struct ReloadCerts;
crate::admin_command!(ReloadCerts, "reload_certs", Node, ());

impl Router {
    /// The node's own admin commands: stats, restarts and fault injection.
    fn serve_node(&self, request: Request) -> ResponseFuture<Response> {
        let Request::Admin(call) = &request else { return misrouted("the node", &request) };
        let fault_injection = || match self.allow_fault_injection {
            true => Ok(()),
            false => Err(Error::Refused("fault injection is disabled; set allow_fault_injection = true to enable it".into())),
        };
        match call.command.as_str() {
            Stats::NAME => {
                let stats = report(&self.stats, &self.identity, &self.ring.snapshot());
                answer(call, |Stats| async move { Ok(stats) })
            }
            RestartActor::NAME => answer(call, |RestartActor { module }| {
                let told = self.tell_module(&module, Tell::Restart).and_then(|all| match all {
                    true => Ok(()),
                    false => Err(Error::Busy(format!("{module} did not take the restart"))),
                });
                async move { told }
            }),
            PanicModule::NAME => answer(call, |PanicModule { module }| {
                let told = fault_injection().and_then(|()| {
                    tracing::warn!(%module, "fault injection: panicking");
                    self.tell_module(&module, Tell::Panic).map(drop)
                });
                async move { told }
            }),
            Block::NAME => answer(call, |Block { peers }| {
                let blocked = fault_injection().map(|()| {
                    tracing::warn!(?peers, "fault injection: blocking traffic");
                    self.faults.block(peers);
                });
                async move { blocked }
            }),
            ReloadCerts::NAME => answer(call, |ReloadCerts| {
                let reloaded = self.credentials.reload(&self.stats).map_err(Error::Refused);
                async move { reloaded }
            }),
            _ => call.unknown(),
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
    fn tell_module(&self, module: &str, tell: Tell) -> crate::Result<bool> {
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
                self.faults.arm_quorum_panic();
                true
            }
            "quorum" => return Err(Error::Client("a quorum actor lives for one request: there is none to restart".into())),
            "hash" => send(&self.hash, tell),
            "membership" => send(&self.membership, tell),
            "version" => self.versions.iter().all(|a| send(a, tell)),
            "coordinator" => self.coordinators.iter().all(|a| send(a, tell)),
            "sync" => send(&self.sync, tell),
            "api" => self.api.as_ref().is_some_and(|a| send(a, tell)),
            "memcache" => self.memcache.as_ref().is_some_and(|a| send(a, tell)),
            other => {
                return Err(Error::Client(format!(
                    "no module {other:?}; modules: store hash membership version coordinator sync api memcache (and quorum for panic)"
                )))
            }
        })
    }
}

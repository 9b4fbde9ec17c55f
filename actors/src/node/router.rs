//! Routes each internal API request to the module that owns it
//! (`Request::owner`); each module serves its own (`serve` in each).

use crate::api::respond::{misrouted, now, refuse};
use crate::api::{ApiActor, ApiCall, Faults, Owner, Request, Response};
use crate::coordinator::CoordinatorActor;
use crate::hash::{HashActor, RingHandle};
use crate::membership::serve::MembershipApi;
use crate::membership::{Liveness, MembershipActor};
use crate::memcache::MemcacheActor;
use crate::stats::{report, Identity, NodeStats};
use crate::store::StoreAddr;
use crate::supervision::{Panic, PANIC_NEXT_QUORUM};
use crate::sync::SyncActor;
use crate::version::VersionActor;
use crate::Restart;
use actix::prelude::*;
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

impl Handler<ApiCall> for Router {
    type Result = ResponseFuture<Response>;

    /// Sends each request to the module that owns it (`Request::owner`).
    fn handle(&mut self, ApiCall { request, deadline }: ApiCall, _: &mut Self::Context) -> Self::Result {
        match request.owner() {
            Owner::Api => refuse("already shook hands".into()),
            Owner::Store => crate::store::serve::serve(&self.store, &self.ring, &self.identity, request),
            Owner::Coordinator => crate::coordinator::serve(&self.coordinator, request, deadline),
            Owner::Membership => {
                let api = MembershipApi {
                    membership: &self.membership,
                    store: &self.store,
                    ring: &self.ring,
                    identity: &self.identity,
                    memcache_port: self.memcache_port,
                };
                crate::membership::serve::serve(api, request)
            }
            Owner::Hash => crate::hash::serve(&self.ring, &self.liveness, &self.identity, request),
            Owner::Sync => crate::sync::serve(&self.sync, request),
            Owner::Node => self.serve_node(request),
        }
    }
}

impl Router {
    /// The node's own requests: stats, restarts and fault injection.
    fn serve_node(&self, request: Request) -> ResponseFuture<Response> {
        match request {
            Request::Stats => now(Response::Stats(report(&self.stats, &self.identity, &self.ring.snapshot()))),
            Request::RestartActor { module } => now(match self.tell_module(&module, Tell::Restart) {
                Ok(true) => Response::Done,
                Ok(false) => Response::Error("module busy".into()),
                Err(why) => Response::Error(why),
            }),
            Request::Panic { .. } | Request::Block { .. } if !self.allow_fault_injection => {
                refuse("fault injection is disabled; set allow_fault_injection = true to enable it".into())
            }
            Request::Panic { module } => {
                tracing::warn!(%module, "fault injection: panicking");
                now(match self.tell_module(&module, Tell::Panic) {
                    Ok(_) => Response::Done,
                    Err(why) => Response::Error(why),
                })
            }
            Request::Block { peers } => {
                tracing::warn!(?peers, "fault injection: blocking traffic");
                self.faults.block(peers);
                now(Response::Done)
            }
            other => misrouted("the node", &other),
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

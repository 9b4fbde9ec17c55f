//! Node start-up: the one place that shows how a node is wired. It opens
//! the store, binds the ports (so a clash fails at start, not later),
//! starts every module's actor under a supervisor, and routes the internal
//! API's requests to the actor that serves each.

use crate::config::{Config, StoreKind};
use actix::prelude::*;
use kai_actors::api::auth::Secret;
use kai_actors::api::{
    ApiActor, ApiCall, ApiSettings, ApiWorker, Faults, ForwardOp, NodeInfo, Peers, Placement, Request, Response,
};
use kai_actors::coordinator::{
    ClientGet, ClientWrite, Coordinator, CoordinatorActor, CoordinatorSettings, QuorumSetup, Replicas,
};
use kai_actors::hash::{HashActor, Ring, RingHandle, RingNode, WatchRing};
use kai_actors::membership::{
    load_saved, Answer, CheckNode, Liveness, MemberList, MemberStatus, MembershipActor, MembershipSettings, PhiSettings,
    ReceiveDelta, ReceiveGossip, ReceiveHeartbeats, RemoveNode,
};
use kai_actors::memcache::{MemcacheActor, MemcacheSettings, SessionEnv, Worker};
use kai_actors::stats::{report, Identity, NodeStats};
use kai_actors::store::{
    BucketRoots, CombinedRoot, DiskEngine, Engine, GetSegments, HintCounts, LocalStoreActor, MemoryEngine, MergeEntries,
    ReadKeys, ReplicaPut, SegmentEntries, Store, StoreActor, StoreAddr, StoreSettings,
};
use kai_actors::supervision::{self, Panic, PANIC_NEXT_QUORUM};
use kai_actors::sync::{GetTransfers, NotifySettled, SyncActor, SyncSettings};
use kai_actors::version::VersionActor;
use kai_actors::Restart;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// A running node.
pub struct Node {
    store: Arc<Store>,
    /// The worker threads live as long as the node.
    _workers: Vec<Arbiter>,
}

/// Routes each internal API request to the actor that serves it. One runs
/// on each worker, with that worker's store and coordinator.
#[derive(Clone)]
struct Router {
    identity: Identity,
    memcache_port: u16,
    stats: Arc<NodeStats>,
    ring: RingHandle,
    liveness: Liveness,
    faults: Faults,
    allow_fault_injection: bool,
    /// This worker's store and coordinator, and every worker's.
    store: StoreAddr,
    coordinator: Addr<CoordinatorActor>,
    stores: Vec<StoreAddr>,
    hash: Addr<HashActor>,
    membership: Addr<MembershipActor>,
    versions: Vec<Addr<VersionActor>>,
    coordinators: Vec<Addr<CoordinatorActor>>,
    sync: Addr<SyncActor>,
    api: Option<Addr<ApiActor>>,
    memcache: Option<Addr<MemcacheActor>>,
}

impl Actor for Router {
    type Context = Context<Self>;
}

impl Supervised for Router {
    fn restarting(&mut self, _: &mut Self::Context) {
        kai_actors::stats::count_restart("api");
        tracing::warn!("api router restarting");
    }
}

/// Hands the router the addresses of the actors started after it.
#[derive(Message)]
#[rtype(result = "()")]
struct Faces {
    api: Addr<ApiActor>,
    memcache: Addr<MemcacheActor>,
}

impl Handler<Faces> for Router {
    type Result = ();
    fn handle(&mut self, msg: Faces, _: &mut Self::Context) {
        self.api = Some(msg.api);
        self.memcache = Some(msg.memcache);
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

fn refuse(why: String) -> ResponseFuture<Response> {
    Box::pin(async move { Response::Error(why) })
}

impl Handler<ApiCall> for Router {
    type Result = ResponseFuture<Response>;

    fn handle(&mut self, ApiCall(request): ApiCall, _: &mut Self::Context) -> Self::Result {
        match request {
            Request::Hello { .. } | Request::Proof { .. } => refuse("already shook hands".into()),
            Request::ReplicaGet { key, client_read } => {
                let answer = kai_actors::api::replica_get(&self.store.direct, &key, client_read);
                Box::pin(async move { answer })
            }
            Request::ReplicaPut { key, versions, hint } => {
                reply(self.store.send(ReplicaPut { key, versions, hint }), |()| Response::Done)
            }
            Request::Forward { key, op, hops, quorum } => {
                let coordinator = &self.coordinator;
                match op {
                    ForwardOp::Get => reply(coordinator.send(ClientGet { key, hops, quorum }), |fetched| {
                        Response::VersionsRead { versions: fetched.siblings, last_read_ms: fetched.last_read_ms }
                    }),
                    ForwardOp::Write(write) => {
                        reply(coordinator.send(ClientWrite { key, write, hops, quorum }), Response::Outcome)
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
            "store" if tell == Tell::Panic => {
                let pool = self.store.pool.clone();
                actix::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = pool.try_send(Panic);
                });
                true
            }
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

async fn bind(addr: &str, what: &str) -> Result<Arc<TcpListener>, String> {
    TcpListener::bind(addr).await.map(Arc::new).map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
}

/// Starts every actor of a node; returns once the node is serving.
pub async fn start(config: &Config) -> Result<Node, String> {
    let me = config.node_addr().map_err(|e| e.to_string())?;
    let node_name = me.to_string();
    let stats = Arc::new(NodeStats::default());

    let engine: Box<dyn Engine> = match config.store {
        StoreKind::Memory => Box::new(MemoryEngine::new(config.number_of_buckets)),
        StoreKind::Disk => {
            crate::ring_shape::check_or_record(&config.data_dir, config.number_of_buckets)?;
            let disk = DiskEngine::open(&config.data_dir).map_err(|e| match e.to_string().contains("Locked") {
                true => format!("data_dir {} is in use: another kai may be running on it", config.data_dir.display()),
                false => format!("cannot open {}: {e}", config.data_dir.display()),
            })?;
            Box::new(disk.with_cache(config.disk_cache_bytes as usize))
        }
    };
    let store_settings = StoreSettings {
        node: node_name.clone(),
        number_of_buckets: config.number_of_buckets,
        max_clock_entries: config.max_clock_entries,
        fsync: config.fsync,
        max_bytes: (config.store == StoreKind::Memory).then_some(config.max_memory_bytes),
    };
    let store = Arc::new(Store::new(engine, store_settings, stats.clone()).map_err(|e| e.to_string())?);
    let limit_maxbytes = match config.store {
        StoreKind::Memory => config.max_memory_bytes,
        StoreKind::Disk => kai_actors::store::disk_capacity(&config.data_dir).unwrap_or(0),
    };

    let api_listener = bind(&me.to_string(), "the internal API").await?;
    let memcache_listener = bind(&config.memcache_addr(), "memcache").await?;

    let identity = Identity {
        node: node_name.clone(),
        n: config.n,
        r: config.r,
        w: config.w,
        number_of_buckets: config.number_of_buckets,
        virtual_nodes: config.number_of_virtual_nodes,
        store: store.engine_name(),
        max_connections: config.max_connections,
        threads: config.worker_threads,
        limit_maxbytes,
        started: Instant::now(),
    };
    // The member table as this node left it (a node comes back knowing its
    // cluster, and a removed node stays removed), or this node alone.
    let me_on_ring = RingNode::new(me, config.number_of_virtual_nodes).in_zone(&config.zone);
    let members_file = (config.store == StoreKind::Disk).then(|| config.data_dir.join("members"));
    let saved = match &members_file {
        Some(path) => load_saved(path).map_err(|e| format!("cannot read the member table {}: {e}", path.display()))?,
        None => None,
    };
    let phi = PhiSettings::for_interval(config.phi_threshold, config.gossip_interval_ms);
    let seeds = config.seed_addrs().map_err(|e| e.to_string())?;
    let has_seeds = seeds.iter().any(|s| *s != me);
    let members = MembershipActor::initial_members(me_on_ring, saved.as_ref(), has_seeds, phi);
    let ring = RingHandle::new(Ring::new(config.number_of_buckets, members.ring_nodes()));
    let timeout = Duration::from_millis(config.request_timeout_ms);

    let hash = supervision::start({
        let (ring, n) = (ring.clone(), config.n);
        move |_| HashActor::new(ring.clone(), n)
    });
    let faults = Faults::default();
    let liveness = Liveness::default();
    let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
    // Connections to peers belong to the thread that uses them: each worker
    // has its own, and the background actors on the main thread theirs.
    let secret = Secret::new(&config.cluster_secret);
    let new_peers = || Peers::new(node_name.clone(), config.number_of_buckets, secret.clone(), connect_timeout, faults.clone());
    let peers = new_peers();

    // Client requests run on worker threads, each with its own coordinator
    // and version actor, so one request never hops threads to be tallied.
    // Each worker has a store actor of its own for requests that never wait,
    // and shares a pool of store threads for those that may.
    let arbiters: Vec<Arbiter> = (0..config.worker_threads).map(|_| Arbiter::new()).collect();
    let pool = {
        let store = store.clone();
        // Named, so the panic hook knows a pool thread (it cannot be
        // restarted in place: the node exits instead).
        let name = || std::thread::Builder::new().name(supervision::STORE_THREAD.into());
        SyncArbiter::start_with_thread_builder(config.store_threads, name, move || StoreActor::new(store.clone()))
    };
    let stores: Vec<StoreAddr> = arbiters
        .iter()
        .map(|arbiter| {
            let store = store.clone();
            StoreAddr {
                local: supervision::start_in_arbiter(&arbiter.handle(), {
                    let store = store.clone();
                    move |_| LocalStoreActor::new(store.clone())
                }),
                pool: pool.clone(),
                direct: store.clone(),
            }
        })
        .collect();
    let store_addr = stores[0].clone();
    let mut versions = Vec::new();
    let mut coordinators = Vec::new();
    let mut coordinator_cores = Vec::new();
    for (arbiter, worker_store) in arbiters.iter().zip(&stores) {
        let version = supervision::start_in_arbiter(&arbiter.handle(), |_| VersionActor::default());
        let settings =
            CoordinatorSettings { n: config.n, r: config.r, w: config.w, max_in_flight: config.max_requests_in_flight };
        let setup = QuorumSetup {
            timeout,
            read_quorum: config.r,
            via: Replicas { me, store: worker_store.clone(), peers: new_peers() },
            version: version.clone(),
            stats: stats.clone(),
        };
        let core = Arc::new(Coordinator::new(settings, ring.clone(), liveness.clone(), setup));
        let coordinator = supervision::start_in_arbiter(&arbiter.handle(), {
            let core = core.clone();
            move |_| CoordinatorActor::new(core.clone())
        });
        versions.push(version);
        coordinators.push(coordinator);
        coordinator_cores.push(core);
    }
    let sync = supervision::start({
        let settings = SyncSettings {
            me,
            n: config.n,
            reap_interval: Duration::from_secs(config.reap_interval_secs),
            tombstone_grace: Duration::from_secs(config.tombstone_grace_secs),
            hint_interval: Duration::from_millis(config.hint_interval_ms),
            timeout,
            ae_interval: Duration::from_millis(config.anti_entropy_interval_ms),
            ae_buckets_per_round: config.anti_entropy_buckets_per_round,
            ae_max_bytes_per_round: config.anti_entropy_max_bytes_per_round,
        };
        let (ring, liveness, store, peers, stats) =
            (ring.clone(), liveness.clone(), store_addr.clone(), peers.clone(), stats.clone());
        move |_| SyncActor::new(settings.clone(), ring.clone(), liveness.clone(), store.clone(), peers.clone(), stats.clone())
    });
    let membership = supervision::start({
        let settings = MembershipSettings {
            gossip_interval: Duration::from_millis(config.gossip_interval_ms),
            phi,
            timeout,
            seeds,
            state_file: members_file,
        };
        let (peers, hash, liveness, stats) = (peers.clone(), hash.clone(), liveness.clone(), stats.clone());
        let up_listeners = vec![sync.clone().recipient()];
        move |_| {
            MembershipActor::new(
                members.clone(),
                settings.clone(),
                peers.clone(),
                hash.clone(),
                liveness.clone(),
                stats.clone(),
                up_listeners.clone(),
            )
        }
    });
    sync.do_send(NotifySettled(membership.clone().recipient()));
    hash.do_send(WatchRing(sync.clone().recipient()));

    let router = Router {
        identity: identity.clone(),
        memcache_port: config.memcache_port,
        stats: stats.clone(),
        ring: ring.clone(),
        liveness: liveness.clone(),
        faults: faults.clone(),
        allow_fault_injection: config.allow_fault_injection,
        store: stores[0].clone(),
        coordinator: coordinators[0].clone(),
        stores: stores.clone(),
        hash,
        membership,
        versions,
        coordinators: coordinators.clone(),
        sync,
        api: None,
        memcache: None,
    };
    let routers: Vec<Addr<Router>> = arbiters
        .iter()
        .zip(stores.iter().zip(&coordinators))
        .map(|(arbiter, (store, coordinator))| {
            let router = Router { store: store.clone(), coordinator: coordinator.clone(), ..router.clone() };
            supervision::start_in_arbiter(&arbiter.handle(), move |_| router)
        })
        .collect();
    let api_workers: Arc<[ApiWorker]> = arbiters
        .iter()
        .zip(&routers)
        .zip(&stores)
        .map(|((arbiter, router), store)| ApiWorker {
            arbiter: arbiter.handle(),
            handler: router.clone().recipient(),
            store: store.clone(),
        })
        .collect();
    let api = supervision::start({
        let settings = ApiSettings {
            node: node_name.clone(),
            number_of_buckets: config.number_of_buckets,
            secret: secret.clone(),
            max_in_flight: config.api_max_in_flight,
            faults,
        };
        move |_| ApiActor::new(api_listener.clone(), api_workers.clone(), settings.clone())
    });
    let settings = MemcacheSettings {
        max_value_size: config.max_value_size,
        max_connections: config.max_connections,
        allow_flush_all: config.allow_flush_all,
        idle_timeout: (config.idle_timeout_secs > 0).then(|| Duration::from_secs(config.idle_timeout_secs)),
        command_timeout: Duration::from_secs(config.command_timeout_secs),
    };
    let workers: Arc<[Worker]> = arbiters
        .iter()
        .zip(coordinator_cores)
        .zip(stores)
        .map(|((arbiter, coordinator), store)| Worker {
            arbiter: arbiter.handle(),
            env: Arc::new(SessionEnv {
                settings: settings.clone(),
                coordinator,
                store,
                stats: stats.clone(),
                identity: identity.clone(),
                ring: ring.clone(),
            }),
        })
        .collect();
    let memcache = supervision::start(move |_| MemcacheActor::new(memcache_listener.clone(), workers.clone()));
    for router in &routers {
        router.do_send(Faces { api: api.clone(), memcache: memcache.clone() });
    }
    if let Some(addr) = config.http_addr() {
        let state =
            crate::http::HttpState { router: routers[0].clone().recipient(), stats: stats.clone(), identity: identity.clone() };
        let server = crate::http::serve(&addr, state)?;
        actix::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!("the HTTP port stopped: {e}");
            }
        });
        tracing::info!(%addr, "HTTP: /status, /metrics, /health");
    }

    if secret.is_set() {
        tracing::info!("internal API: every connection must prove the cluster secret");
    } else {
        tracing::warn!(node = %node_name, "no cluster_secret: the internal API serves this machine (loopback) only");
    }
    tracing::info!(
        target: kai_actors::membership::EVENTS,
        node = %node_name,
        memcache = %config.memcache_addr(),
        store = store.engine_name(),
        quorum = %format!("{},{},{}", config.n, config.r, config.w),
        "kai node serving"
    );
    Ok(Node { store, _workers: arbiters })
}

impl Node {
    /// Makes every acknowledged write durable before the process exits.
    pub fn shutdown(&self) {
        if let Err(e) = self.store.sync() {
            tracing::error!("final sync failed: {e}");
        }
        tracing::info!(target: kai_actors::membership::EVENTS, "kai node stopped");
    }
}

/// Runs a node until SIGINT or SIGTERM.
pub fn run(config: Config) -> Result<(), String> {
    supervision::install(supervision::RestartIntensity {
        max_restarts: config.restart_intensity,
        period: Duration::from_secs(config.restart_period_secs),
    });
    actix_rt::System::new().block_on(async move {
        let node = start(&config).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        node.shutdown();
        Ok(())
    })
}

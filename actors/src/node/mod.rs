//! A node, assembled: the one place that shows how the modules are wired.
//! The `kai` program and the simulator both build a node here, from its
//! settings and a [`NodeEnv`] that says what the node runs on: its network,
//! its listeners, its worker threads and its store's engine.

mod credentials;
mod ring_shape;
mod router;

pub use credentials::Credentials;
pub use router::{Block, PanicModule, ReloadCerts, RestartActor, Router, Stats};

use crate::api::auth::Secret;
use crate::api::net::{Listener, Network};
use crate::api::{ApiActor, ApiSettings, ApiWorker, Faults, Peers, SeenTerms};
use crate::config::{Config, StoreKind};
use crate::coordinator::{Coordinator, CoordinatorActor, CoordinatorSettings, QuorumSetup, Replicas};
use crate::hash::{HashActor, Ring, RingHandle, RingNode, WatchRing};
use crate::membership::{Liveness, MemberState, Members, MembershipActor, MembershipSettings, PhiSettings, TableKeeper};
use crate::memcache::{MemcacheActor, MemcachePort, MemcacheSettings, SessionEnv, Worker};
use crate::stats::{Identity, NodeStats};
use crate::store::{DiskEngine, Engine, LocalStoreActor, MemoryEngine, Store, StoreActor, StoreAddr, StoreSettings};
use crate::supervision;
use crate::sync::{NotifySettled, SyncActor, SyncSettings};
use crate::version::VersionActor;
use actix::prelude::*;
use router::Faces;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a node runs on, given by whoever starts it.
pub struct NodeEnv {
    /// Its address on the ring (the internal API's).
    pub me: SocketAddrV4,
    pub seeds: Vec<SocketAddrV4>,
    pub network: Arc<dyn Network>,
    pub api_listener: Arc<dyn Listener>,
    /// The memcache ports (plain, TLS, or one of each); none in the
    /// simulator, whose clients call a coordinator.
    pub memcache_ports: Vec<MemcachePort>,
    /// Certificates and passwords, as read from the settings' files.
    pub credentials: Arc<Credentials>,
    /// The threads client requests and peer connections run on.
    pub workers: Vec<ArbiterHandle>,
    /// The store's capacity, for `stats` (memcached's limit_maxbytes).
    pub limit_maxbytes: u64,
    /// Where the member table is kept across restarts; None: nowhere.
    pub members_file: Option<Arc<dyn TableKeeper>>,
    /// Seeds the node's random choices (gossip peers); None: entropy.
    pub rng_seed: Option<u64>,
}

/// A running node.
#[derive(Clone)]
pub struct Node {
    pub store: Arc<Store>,
    pub stats: Arc<NodeStats>,
    pub identity: Identity,
    pub ring: RingHandle,
    /// One router a worker; the first serves the HTTP port.
    pub routers: Vec<Addr<Router>>,
    /// One coordinator a worker, for clients that call it directly.
    pub coordinators: Vec<Arc<Coordinator>>,
    /// What each worker's memcache sessions run commands with.
    pub sessions: Vec<Arc<SessionEnv>>,
    /// Every peer's terms, as their handshakes said them.
    pub seen: SeenTerms,
    /// Which members are down, and this node's own state.
    pub liveness: Liveness,
    pub credentials: Arc<Credentials>,
}

/// Opens the engine the settings name: the disk engine's data directory
/// must hold a ring of the same bucket count, served as the same address
/// `me`. Answers it with its capacity in bytes.
pub fn open_engine(config: &Config, me: SocketAddrV4) -> Result<(Box<dyn Engine>, u64), String> {
    match config.store {
        StoreKind::Memory => Ok((Box::new(MemoryEngine::new(config.number_of_buckets)), config.max_memory_bytes)),
        StoreKind::Disk => {
            // Opened first: a data dir another kai holds is the first thing
            // to say, before whose data it is.
            let disk = DiskEngine::open(&config.data_dir).map_err(|e| match e {
                crate::Error::InUse(_) => {
                    format!("data_dir {} is in use: another kai may be running on it", config.data_dir.display())
                }
                e => format!("cannot open {}: {e}", config.data_dir.display()),
            })?;
            ring_shape::check_or_record(&config.data_dir, config.number_of_buckets, me, config.replaced())?;
            let capacity = crate::store::disk_capacity(&config.data_dir).unwrap_or(0);
            Ok((Box::new(disk.with_cache(config.disk_cache_bytes as usize)), capacity))
        }
    }
}

/// What every part of a node shares, made before any actor starts.
struct Shared {
    me: SocketAddrV4,
    store: Arc<Store>,
    stats: Arc<NodeStats>,
    identity: Identity,
    ring: RingHandle,
    liveness: Liveness,
    faults: Faults,
    seen: SeenTerms,
    secret: Secret,
    network: Arc<dyn Network>,
    timeout: Duration,
}

impl Shared {
    /// Connections to peers belong to the thread that uses them: each
    /// worker has its own, and the background actors theirs.
    fn peers(&self, config: &Config) -> Peers {
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let (network, name) = (self.network.clone(), self.identity.node.clone());
        let (faults, seen) = (self.faults.clone(), self.seen.clone());
        Peers::new(network, name, config.peer_terms(), self.secret.clone(), connect_timeout, faults, seen)
    }
}

/// One worker thread's actors: client requests run on it whole, with its
/// own coordinator and version actor, so a request never hops threads.
struct WorkerActors {
    arbiter: ArbiterHandle,
    store: StoreAddr,
    version: Addr<VersionActor>,
    coordinator: Addr<CoordinatorActor>,
    core: Arc<Coordinator>,
}

/// Starts every actor of a node on a store over `engine`; returns once
/// the node is serving.
pub fn start(config: &Config, engine: Box<dyn Engine>, env: NodeEnv) -> Result<Node, String> {
    let stats = Arc::new(NodeStats::default());
    let env = with_cluster_tls(env, &stats);
    let store = open_store(config, &env, engine, stats.clone())?;
    let saved = match &env.members_file {
        Some(keeper) => keeper.load().map_err(|e| format!("cannot read the member table {}: {e}", keeper.describe()))?,
        None => None,
    };
    // The member table as this node left it (a node comes back knowing its
    // cluster, and a removed node stays removed), or this node alone.
    let me_on_ring = RingNode::new(env.me, config.number_of_virtual_nodes).in_zone(&config.zone).in_place_of(config.replaced());
    let phi = PhiSettings::for_interval(config.phi_threshold, config.gossip_interval_ms);
    let has_seeds = env.seeds.iter().any(|s| *s != env.me);
    let members = MembershipActor::initial_members(me_on_ring, saved.as_ref(), has_seeds, phi);
    if members.my_state() == MemberState::Removed {
        tracing::warn!(
            node = %env.me,
            "this node was removed from its cluster (remove_node): it serves no client and is not ready; \
             to serve again, stop it, empty its data_dir, and link it as a new node"
        );
    }
    let shared = Shared {
        me: env.me,
        identity: identity(config, &env, &store),
        store,
        stats,
        ring: RingHandle::new(Ring::new(config.number_of_buckets, members.ring_nodes())),
        liveness: Liveness::default(),
        faults: Faults::default(),
        seen: SeenTerms::default(),
        secret: Secret::new(&config.cluster_secret),
        network: env.network.clone(),
        timeout: Duration::from_millis(config.request_timeout_ms),
    };
    shared.liveness.publish(&members);
    env.credentials.mark_refreshed(&shared.stats);
    let workers = start_workers(config, &shared, &env.workers);
    let router = start_background(config, &shared, &env, members, phi, &workers);
    let node = start_faces(config, &shared, env, router, workers);
    log_serving(config, &shared);
    Ok(node)
}

/// The internal API over mutual TLS, when the cluster uses it: every
/// connection dialled or accepted runs TLS over the node's network.
fn with_cluster_tls(env: NodeEnv, stats: &Arc<NodeStats>) -> NodeEnv {
    let Some(tls) = env.credentials.cluster.clone() else { return env };
    tracing::info!("internal API: mutual TLS against the cluster CA");
    NodeEnv {
        network: Arc::new(crate::tls::TlsNetwork { inner: env.network.clone(), tls: tls.clone() }),
        api_listener: Arc::new(crate::tls::TlsListener { inner: env.api_listener.clone(), tls, stats: stats.clone() }),
        ..env
    }
}

fn open_store(config: &Config, env: &NodeEnv, engine: Box<dyn Engine>, stats: Arc<NodeStats>) -> Result<Arc<Store>, String> {
    let settings = StoreSettings {
        node: env.me.to_string(),
        number_of_buckets: config.number_of_buckets,
        max_clock_entries: config.max_clock_entries,
        fsync: config.fsync,
        max_bytes: (config.store == StoreKind::Memory).then_some(config.max_memory_bytes),
    };
    Store::new(engine, settings, stats).map(Arc::new).map_err(|e| e.to_string())
}

fn identity(config: &Config, env: &NodeEnv, store: &Store) -> Identity {
    Identity {
        node: env.me.to_string(),
        n: config.n,
        r: config.r,
        w: config.w,
        number_of_buckets: config.number_of_buckets,
        virtual_nodes: config.number_of_virtual_nodes,
        store: store.engine_name(),
        max_connections: config.max_connections,
        threads: env.workers.len(),
        limit_maxbytes: env.limit_maxbytes,
        started: Instant::now(),
        terms: config.peer_terms(),
    }
}

/// Each worker's store actor answers requests that never wait; a shared
/// pool of store threads takes those that may.
fn start_workers(config: &Config, shared: &Shared, arbiters: &[ArbiterHandle]) -> Vec<WorkerActors> {
    // No threads at all: the simulator's node runs on its one thread.
    let pool = (config.store_threads > 0).then(|| {
        let store = shared.store.clone();
        // Named, so the panic hook knows a pool thread (it cannot be
        // restarted in place: the node exits instead).
        let name = || std::thread::Builder::new().name(supervision::STORE_THREAD.into());
        SyncArbiter::start_with_thread_builder(config.store_threads, name, move || StoreActor::new(store.clone()))
    });
    let settings = CoordinatorSettings { n: config.n, r: config.r, w: config.w, max_in_flight: config.max_requests_in_flight };
    arbiters
        .iter()
        .map(|arbiter| {
            let direct = shared.store.clone();
            let local = supervision::start_in_arbiter(arbiter, move |_| LocalStoreActor::new(direct.clone()));
            let store = StoreAddr { local, pool: pool.clone(), direct: shared.store.clone() };
            let version = supervision::start_in_arbiter(arbiter, |_| VersionActor::default());
            let setup = QuorumSetup {
                timeout: shared.timeout,
                read_quorum: config.r,
                via: Replicas { me: shared.me, store: store.clone(), peers: shared.peers(config) },
                version: version.clone(),
                stats: shared.stats.clone(),
                faults: shared.faults.clone(),
            };
            let core = Arc::new(Coordinator::new(settings.clone(), shared.ring.clone(), shared.liveness.clone(), setup));
            let coordinator = supervision::start_in_arbiter(arbiter, {
                let core = core.clone();
                move |_| CoordinatorActor::new(core.clone())
            });
            WorkerActors { arbiter: arbiter.clone(), store, version, coordinator, core }
        })
        .collect()
}

/// The actors that keep the cluster whole: the ring, membership and sync.
/// Answers a router holding every module's address.
fn start_background(
    config: &Config,
    shared: &Shared,
    env: &NodeEnv,
    members: Members,
    phi: PhiSettings,
    workers: &[WorkerActors],
) -> Router {
    let hash = supervision::start({
        let (ring, n) = (shared.ring.clone(), config.n);
        move |_| HashActor::new(ring.clone(), n)
    });
    let peers = shared.peers(config);
    let store = workers[0].store.clone();
    let sync = supervision::start({
        let settings = SyncSettings {
            me: shared.me,
            n: config.n,
            reap_interval: Duration::from_secs(config.reap_interval_secs),
            tombstone_grace: Duration::from_secs(config.tombstone_grace_secs),
            hint_interval: Duration::from_millis(config.hint_interval_ms),
            timeout: shared.timeout,
            ae_interval: Duration::from_millis(config.anti_entropy_interval_ms),
            ae_buckets_per_round: config.anti_entropy_buckets_per_round,
            ae_max_bytes_per_round: config.anti_entropy_max_bytes_per_round,
        };
        let (ring, liveness, store, peers, stats) =
            (shared.ring.clone(), shared.liveness.clone(), store.clone(), peers.clone(), shared.stats.clone());
        move |_| SyncActor::new(settings.clone(), ring.clone(), liveness.clone(), store.clone(), peers.clone(), stats.clone())
    });
    let membership = supervision::start({
        let settings = MembershipSettings {
            gossip_interval: Duration::from_millis(config.gossip_interval_ms),
            phi,
            timeout: shared.timeout,
            seeds: env.seeds.clone(),
            state_file: env.members_file.clone(),
            rng_seed: env.rng_seed,
            store_writable: shared.store.writable(),
        };
        let (hash, liveness, stats) = (hash.clone(), shared.liveness.clone(), shared.stats.clone());
        let up_listeners = vec![sync.clone().recipient()];
        move |_| {
            let (peers, listeners) = (peers.clone(), up_listeners.clone());
            MembershipActor::new(
                members.clone(),
                settings.clone(),
                peers,
                hash.clone(),
                liveness.clone(),
                stats.clone(),
                listeners,
            )
        }
    });
    sync.do_send(NotifySettled(membership.clone().recipient()));
    hash.do_send(WatchRing(sync.clone().recipient()));
    Router {
        identity: shared.identity.clone(),
        memcache_port: config.memcache_port,
        protocol_version: config.peer_terms().protocol_version,
        tombstone_grace: Duration::from_secs(config.tombstone_grace_secs),
        stats: shared.stats.clone(),
        ring: shared.ring.clone(),
        liveness: shared.liveness.clone(),
        faults: shared.faults.clone(),
        credentials: env.credentials.clone(),
        allow_fault_injection: config.allow_fault_injection,
        store,
        coordinator: workers[0].coordinator.clone(),
        stores: workers.iter().map(|w| w.store.clone()).collect(),
        hash,
        membership,
        versions: workers.iter().map(|w| w.version.clone()).collect(),
        coordinators: workers.iter().map(|w| w.coordinator.clone()).collect(),
        sync,
        api: None,
        memcache: None,
    }
}

/// The node's faces: a router on each worker, the internal API's listener
/// and the memcache port's.
fn start_faces(config: &Config, shared: &Shared, env: NodeEnv, router: Router, workers: Vec<WorkerActors>) -> Node {
    let routers: Vec<Addr<Router>> = workers
        .iter()
        .map(|w| {
            let router = Router { store: w.store.clone(), coordinator: w.coordinator.clone(), ..router.clone() };
            supervision::start_in_arbiter(&w.arbiter, move |_| router)
        })
        .collect();
    let api_workers: Arc<[ApiWorker]> = workers
        .iter()
        .zip(&routers)
        .map(|(w, router)| {
            let store = w.store.clone();
            let inline: crate::api::Inline = Arc::new(move |request| crate::store::serve::answer_inline(&store, request));
            ApiWorker { arbiter: w.arbiter.clone(), handler: router.clone().recipient(), inline }
        })
        .collect();
    let api = supervision::start({
        let settings = ApiSettings {
            node: shared.identity.node.clone(),
            terms: config.peer_terms(),
            seen: shared.seen.clone(),
            secret: shared.secret.clone(),
            max_in_flight: config.api_max_in_flight,
            faults: shared.faults.clone(),
        };
        let listener = env.api_listener.clone();
        move |_| ApiActor::new(listener.clone(), api_workers.clone(), settings.clone())
    });
    let settings = MemcacheSettings {
        max_value_size: config.max_value_size,
        max_connections: config.max_connections,
        allow_flush_all: config.allow_flush_all,
        idle_timeout: (config.idle_timeout_secs > 0).then(|| Duration::from_secs(config.idle_timeout_secs)),
        command_timeout: Duration::from_secs(config.command_timeout_secs),
        tls: config.client_tls(),
    };
    let sessions: Arc<[Worker]> = workers
        .iter()
        .map(|w| Worker {
            arbiter: w.arbiter.clone(),
            env: Arc::new(SessionEnv {
                settings: settings.clone(),
                coordinator: w.core.clone(),
                store: w.store.clone(),
                stats: shared.stats.clone(),
                identity: shared.identity.clone(),
                ring: shared.ring.clone(),
                auth: env.credentials.auth.clone(),
            }),
        })
        .collect();
    let session_envs = sessions.iter().map(|worker| worker.env.clone()).collect();
    let ports = env.memcache_ports;
    let memcache = (!ports.is_empty()).then(|| supervision::start(move |_| MemcacheActor::new(ports.clone(), sessions.clone())));
    for router in &routers {
        router.do_send(Faces { api: api.clone(), memcache: memcache.clone() });
    }
    Node {
        store: shared.store.clone(),
        stats: shared.stats.clone(),
        identity: shared.identity.clone(),
        ring: shared.ring.clone(),
        routers,
        coordinators: workers.iter().map(|w| w.core.clone()).collect(),
        sessions: session_envs,
        seen: shared.seen.clone(),
        liveness: shared.liveness.clone(),
        credentials: env.credentials,
    }
}

fn log_serving(config: &Config, shared: &Shared) {
    if shared.secret.is_set() {
        tracing::info!("internal API: every connection must prove the cluster secret");
    } else {
        tracing::warn!(node = %shared.identity.node, "no cluster_secret: the internal API serves this machine (loopback) only");
    }
    tracing::info!(
        target: crate::membership::EVENTS,
        node = %shared.identity.node,
        memcache_port = config.memcache_port,
        store = shared.store.engine_name(),
        quorum = %format!("{},{},{}", config.n, config.r, config.w),
        "kai node serving"
    );
}

impl Node {
    /// Makes every acknowledged write durable before the process exits.
    pub fn shutdown(&self) {
        if let Err(e) = self.store.sync() {
            tracing::error!("final sync failed: {e}");
        }
        tracing::info!(target: crate::membership::EVENTS, "kai node stopped");
    }
}

//! The whole cluster in one process, deterministic: every node is built by
//! [`crate::node::start`] with its own actors, on one thread, over an
//! in-memory network ([`net`]) and tokio's paused clock. Time moves only
//! when every task waits, straight to the next timer, so a run of minutes
//! takes moments, and the same seed gives the same run.
//!
//! [`run`] drives a random workload through random coordinators while
//! faults come and go, then heals everything, waits, and checks what the
//! cluster holds against what clients were told ([`check`]).

pub mod check;
pub mod net;

use crate::api::{ApiCall, MemberState, Request, Response};
use crate::config::{Config, StoreKind};
use crate::coordinator::Origin;
use crate::node::{self, Node, NodeEnv};
use crate::store::{MemoryEngine, Write, WriteOutcome};
use crate::version::Version;
use bytes::Bytes;
use check::{History, Op};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

/// The wall clock every simulated run starts at (2026-01-01).
const EPOCH_MS: u64 = 1_767_225_600_000;

/// Runs `body` inside a fresh single-threaded actor system on a paused
/// clock.
pub fn simulate<T>(body: impl std::future::Future<Output = T>) -> T {
    let runtime =
        || tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("a paused runtime");
    let system = actix_rt::System::with_tokio_rt(runtime);
    system.block_on(async {
        crate::store::simulate_wall_clock(EPOCH_MS);
        crate::api::arrival::simulate_epoch();
        body.await
    })
}

/// A node's settings in the simulator: the defaults, scaled to a small
/// ring and brisk background work, so a run covers much in little time.
pub fn node_config(seeds: Vec<String>) -> Config {
    Config {
        store: StoreKind::Memory,
        number_of_buckets: 64,
        number_of_virtual_nodes: 16,
        cluster_secret: "simulated".into(),
        worker_threads: 1,
        store_threads: 0,
        gossip_interval_ms: 250,
        hint_interval_ms: 1000,
        anti_entropy_interval_ms: 500,
        seeds,
        ..Config::default()
    }
}

/// A cluster of simulated nodes.
pub struct Cluster {
    pub world: net::World,
    pub addrs: Vec<SocketAddrV4>,
    pub nodes: Vec<Node>,
}

fn addr(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, i as u8 + 1), 11011)
}

impl Cluster {
    /// Starts `size` nodes, each joining through the first, and waits
    /// (in simulated time) until every one sees every one up.
    pub async fn start(seed: u64, size: usize) -> Cluster {
        let world = net::World::new(seed);
        let addrs: Vec<SocketAddrV4> = (0..size).map(addr).collect();
        let mut nodes = Vec::new();
        for (i, me) in addrs.iter().enumerate() {
            let seeds = if i == 0 { vec![] } else { vec![addrs[0].to_string()] };
            let config = Config { port: me.port(), ..node_config(seeds.clone()) };
            let (network, api_listener) = world.attach(*me);
            let env = NodeEnv {
                me: *me,
                seeds: seeds.iter().map(|s| s.parse().expect("a seed address")).collect(),
                network,
                api_listener,
                memcache_listener: None,
                workers: vec![actix::Arbiter::current()],
                limit_maxbytes: config.max_memory_bytes,
                members_file: None,
                rng_seed: Some(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            };
            let engine = Box::new(MemoryEngine::new(config.number_of_buckets));
            nodes.push(node::start(&config, engine, env).expect("a simulated node starts"));
        }
        let cluster = Cluster { world, addrs, nodes };
        cluster.await_all_up(Duration::from_secs(60)).await;
        cluster
    }

    async fn ask(&self, node: usize, request: Request) -> Option<Response> {
        self.nodes[node].routers[0].send(ApiCall::new(request)).await.ok()
    }

    /// Whether every node sees every node up.
    pub async fn all_up(&self) -> bool {
        for i in 0..self.nodes.len() {
            let Some(Response::MemberStatus(rows)) = self.ask(i, Request::MemberStatus).await else { return false };
            let up = rows.iter().filter(|r| r.state == MemberState::Up && !r.suspected).count();
            if up != self.nodes.len() {
                return false;
            }
        }
        true
    }

    async fn await_all_up(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.all_up().await {
            assert!(tokio::time::Instant::now() < deadline, "the simulated cluster did not form within {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client's write through `node` as coordinator.
    pub async fn write(&self, node: usize, key: &str, write: Write) -> crate::Result<WriteOutcome> {
        self.nodes[node].coordinators[0].write(Bytes::from(key.to_string()), write, Origin::CLIENT, None).await
    }

    pub async fn set(&self, node: usize, key: &str, value: &str) -> crate::Result<WriteOutcome> {
        self.write(node, key, Write::set(Bytes::from(value.to_string()), 0, 0)).await
    }

    /// A client's read through `node`: the live siblings, newest last.
    pub async fn get(&self, node: usize, key: &str) -> crate::Result<Vec<Version>> {
        self.nodes[node].coordinators[0].get(Bytes::from(key.to_string()), Origin::CLIENT, None).await
    }

    /// The nodes that hold a key: its N home replicas, by index.
    pub fn homes(&self, key: &str) -> Vec<usize> {
        let ring = self.nodes[0].ring.snapshot();
        let bucket = ring.bucket_of(key.as_bytes());
        let n = self.nodes[0].identity.n;
        ring.preference_list(bucket).iter().take(n).filter_map(|a| self.addrs.iter().position(|x| x == a)).collect()
    }

    /// What each node holds of a key, read straight from its store.
    pub fn held(&self, key: &str) -> Vec<Vec<Version>> {
        self.nodes.iter().map(|n| n.store.replica_read(key.as_bytes(), false).map(|(v, _)| v).unwrap_or_default()).collect()
    }
}

/// What a random run does: how big, how busy, and whether faults come.
#[derive(Debug, Clone)]
pub struct Plan {
    pub nodes: usize,
    pub clients: usize,
    pub ops_per_client: usize,
    /// Keys every client writes (so writes to one key run concurrently),
    /// and counters every client increments.
    pub keys: usize,
    pub counters: usize,
    pub faults: bool,
    /// Healed and quiet this long before the checks.
    pub quiet: Duration,
}

impl Default for Plan {
    fn default() -> Self {
        Plan { nodes: 5, clients: 4, ops_per_client: 40, keys: 6, counters: 2, faults: true, quiet: Duration::from_secs(30) }
    }
}

/// What a run saw and found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub seed: u64,
    /// A digest of the run's trace: the same seed gives the same digest.
    pub digest: u64,
    pub trace: Vec<String>,
    pub violations: Vec<String>,
    pub faults: BTreeMap<&'static str, u64>,
    pub ops: usize,
    pub acked: usize,
    pub simulated: Duration,
}

/// One random run from `seed`.
pub fn run(seed: u64, plan: &Plan) -> Outcome {
    simulate(async move {
        let started = tokio::time::Instant::now();
        let cluster = Rc::new(Cluster::start(seed, plan.nodes).await);
        let history = Rc::new(History::default());
        for counter in 0..plan.counters {
            // Counters start at 0, before any fault.
            let key = format!("counter{counter}");
            let invoked = history.now();
            let result = cluster.set(0, &key, "0").await;
            history.record(0, Op::Set { key, value: "0".into(), stamped: String::new() }, invoked, &result);
        }
        let faults = plan.faults.then(|| actix::spawn(inject_faults(cluster.clone(), seed)));
        let clients: Vec<_> =
            (0..plan.clients).map(|c| actix::spawn(client(cluster.clone(), history.clone(), plan.clone(), seed, c))).collect();
        for client in clients {
            let _ = client.await;
        }
        let fault_counts = match faults {
            Some(task) => {
                task.abort();
                let _ = task.await;
                cluster.world.heal_all();
                cluster.world.fault_counts()
            }
            None => BTreeMap::new(),
        };
        tokio::time::sleep(plan.quiet).await;
        let mut outcome = check::check(&cluster, &history);
        outcome.seed = seed;
        outcome.faults = fault_counts;
        outcome.simulated = started.elapsed();
        outcome
    })
}

/// One client: sequential requests through random coordinators.
async fn client(cluster: Rc<Cluster>, history: Rc<History>, plan: Plan, seed: u64, id: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(id as u64 + 7));
    for seq in 0..plan.ops_per_client {
        let node = rng.gen_range(0..cluster.nodes.len());
        let invoked = history.now();
        let roll = rng.gen_range(0..100);
        if roll < 15 && plan.counters > 0 {
            let key = format!("counter{}", rng.gen_range(0..plan.counters));
            let write = Write { condition: crate::store::Condition::Present, mutation: crate::store::Mutation::Incr(1) };
            let result = cluster.write(node, &key, write).await;
            let value = result.as_ref().ok().and_then(stored_value);
            history.record(id, Op::Incr { key, result: value }, invoked, &result);
            continue;
        }
        let key = format!("key{}", rng.gen_range(0..plan.keys));
        if roll < 40 {
            let result = cluster.get(node, &key).await;
            let values = result.as_ref().map(|v| live_values(v)).ok();
            history.record(id, Op::Get { key, values }, invoked, &result);
        } else if roll < 48 {
            let result = cluster.write(node, &key, Write::delete()).await;
            history.record(id, Op::Delete { key }, invoked, &result);
        } else {
            let value = format!("c{id}-{seq}");
            let result = cluster.set(node, &key, &value).await;
            let stamped = match &result {
                Ok(WriteOutcome::Stored { new, .. }) => format!("{}:{}", new.dot.node, new.dot.counter),
                _ => String::new(),
            };
            history.record(id, Op::Set { key, value, stamped }, invoked, &result);
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
    }
}

fn stored_value(outcome: &WriteOutcome) -> Option<String> {
    match outcome {
        WriteOutcome::Stored { new, .. } => Some(String::from_utf8_lossy(&new.value).into_owned()),
        _ => None,
    }
}

/// The values of the versions a read answers with (tombstones left out).
pub fn live_values(versions: &[Version]) -> Vec<String> {
    versions.iter().filter(|v| !v.deleted).map(|v| String::from_utf8_lossy(&v.value).into_owned()).collect()
}

/// Faults drawn from the seed, one after another, some overlapping: a node
/// cut off, two at once, a one-way cut, the cluster split in halves.
async fn inject_faults(cluster: Rc<Cluster>, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xfa17);
    let n = cluster.addrs.len();
    loop {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..2000))).await;
        let a = rng.gen_range(0..n);
        let b = (a + rng.gen_range(1..n)) % n;
        let cuts: (&'static str, Vec<(usize, usize)>) = match rng.gen_range(0..4) {
            0 => ("isolate one", (0..n).filter(|o| *o != a).flat_map(|o| [(a, o), (o, a)]).collect()),
            1 => ("isolate two", (0..n).filter(|o| *o != a && *o != b).flat_map(|o| [(a, o), (o, a), (b, o), (o, b)]).collect()),
            2 => ("one-way cut", vec![(a, b)]),
            _ => {
                let half: Vec<usize> = (0..n).filter(|_| rng.gen_bool(0.5)).collect();
                let cuts = half.iter().flat_map(|x| (0..n).filter(|o| !half.contains(o)).flat_map(move |o| [(*x, o), (o, *x)]));
                ("split in two", cuts.collect())
            }
        };
        let lasting = Duration::from_millis(rng.gen_range(200..4000));
        let (world, addrs) = (cluster.world.clone(), cluster.addrs.clone());
        let links: Vec<_> = cuts.1.iter().map(|(x, y)| (addrs[*x], addrs[*y])).collect();
        world.apply(cuts.0, &links);
        actix::spawn(async move {
            tokio::time::sleep(lasting).await;
            world.lift(&links);
        });
    }
}

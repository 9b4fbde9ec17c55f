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
pub mod disk;
pub mod net;

use crate::api::admin::AdminCommand;
use crate::config::{Config, StoreKind};
use crate::coordinator::Origin;
use crate::membership::serve::{NodeList, Remove};
use crate::membership::MemberState;
use crate::node::{self, Node, NodeEnv};
use crate::store::{Condition, Mutation, Write, WriteOutcome};
use crate::version::Version;
use bytes::Bytes;
use check::{History, Op};
use disk::{Disk, DiskHandle, Misbehave};
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::sync::Arc;
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

/// One node's place in the cluster: its disk, which outlives its
/// crashes, and the incarnation running on it now.
struct Slot {
    addr: SocketAddrV4,
    disk: Arc<Disk>,
    handle: DiskHandle,
    /// None while crashed.
    node: Option<Node>,
    incarnation: u64,
    paused: bool,
    /// How far this machine's wall clock is off, in milliseconds.
    skew_ms: i64,
    /// Started at least once (a spare has not joined yet).
    joined: bool,
    /// Removed from the cluster by `remove_node` (it runs on, outside).
    removed: bool,
    /// Its failure domain (empty: none).
    zone: String,
}

/// A cluster of simulated nodes.
pub struct Cluster {
    pub world: net::World,
    pub addrs: Vec<SocketAddrV4>,
    seed: u64,
    slots: RefCell<Vec<Slot>>,
    misbehave: Option<Misbehave>,
    /// Faults as they started and ended, in simulated time: part of the
    /// trace.
    events: RefCell<Vec<String>>,
    started: tokio::time::Instant,
}

fn addr(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, i as u8 + 1), 11011)
}

impl Cluster {
    /// Starts `size` nodes, each joining through the first, and waits
    /// (in simulated time) until every one sees every one up.
    pub async fn start(seed: u64, size: usize) -> Cluster {
        Cluster::start_with(seed, size, 0, None).await
    }

    /// A node in each of `zones` (its failure domain), in order.
    pub async fn start_in_zones(seed: u64, zones: &[&str]) -> Cluster {
        let cluster = Cluster::unstarted(seed, zones.len(), 0, None);
        for (slot, zone) in cluster.slots.borrow_mut().iter_mut().zip(zones) {
            slot.zone = zone.to_string();
        }
        cluster.boot_all(zones.len()).await;
        cluster
    }

    /// `start`, with `spares` more nodes that may join later, every
    /// node's disk misbehaving as told.
    pub async fn start_with(seed: u64, size: usize, spares: usize, misbehave: Option<Misbehave>) -> Cluster {
        let cluster = Cluster::unstarted(seed, size, spares, misbehave);
        cluster.boot_all(size).await;
        cluster
    }

    /// Starts the first `size` nodes and waits until they all see each
    /// other up.
    async fn boot_all(&self, size: usize) {
        for i in 0..size {
            self.boot(i);
        }
        self.await_all_up(Duration::from_secs(60)).await;
    }

    fn unstarted(seed: u64, size: usize, spares: usize, misbehave: Option<Misbehave>) -> Cluster {
        let buckets = node_config(vec![]).number_of_buckets;
        let slots = (0..size + spares)
            .map(|i| {
                let disk = Disk::new(buckets, misbehave);
                let handle = disk.open();
                let (node, incarnation, paused, skew_ms, joined, removed) = (None, 0, false, 0, false, false);
                let zone = String::new();
                Slot { addr: addr(i), disk, handle, node, incarnation, paused, skew_ms, joined, removed, zone }
            })
            .collect();
        Cluster {
            world: net::World::new(seed),
            addrs: (0..size + spares).map(addr).collect(),
            seed,
            slots: RefCell::new(slots),
            misbehave,
            events: RefCell::default(),
            started: tokio::time::Instant::now(),
        }
    }

    /// Starts node `i`'s next incarnation on its disk.
    fn boot(&self, i: usize) {
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[i];
        let seeds = if i == 0 { vec![] } else { vec![self.addrs[0]] };
        let mut config = Config { port: slot.addr.port(), ..node_config(seeds.iter().map(|s| s.to_string()).collect()) };
        if self.misbehave == Some(Misbehave::NoAntiEntropy) {
            config.anti_entropy_interval_ms = 24 * 3600 * 1000;
        }
        config.zone = slot.zone.clone();
        let (network, api_listener) = self.world.attach(slot.addr);
        let mix = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ slot.incarnation.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let env = NodeEnv {
            me: slot.addr,
            seeds,
            network,
            api_listener,
            memcache_ports: Vec::new(),
            credentials: Default::default(),
            workers: vec![actix::Arbiter::current()],
            limit_maxbytes: config.max_memory_bytes,
            members_file: Some(Arc::new(slot.handle.clone())),
            rng_seed: Some(self.seed ^ mix),
        };
        let node = node::start(&config, Box::new(slot.handle.clone()), env).expect("a simulated node starts");
        node.store.clock().set_skew(slot.skew_ms);
        slot.node = Some(node);
        slot.joined = true;
    }

    /// Spare nodes that have not joined.
    pub fn spares_left(&self) -> usize {
        self.slots.borrow().iter().filter(|s| !s.joined).count()
    }

    /// The nodes in the cluster now: joined, and not removed.
    pub fn members(&self) -> Vec<usize> {
        self.slots.borrow().iter().enumerate().filter(|(_, s)| s.joined && !s.removed).map(|(i, _)| i).collect()
    }

    /// A spare node starts and joins through the first; false if none is
    /// left.
    pub fn join_spare(&self) -> Option<usize> {
        let spare = self.slots.borrow().iter().position(|s| !s.joined)?;
        self.boot(spare);
        Some(spare)
    }

    /// `remove_node` of node `i`, asked of another member that runs.
    pub async fn remove(&self, i: usize) -> bool {
        let Some(asked) = self.members().into_iter().find(|m| *m != i && self.node(*m).is_some()) else { return false };
        let removed = matches!(self.ask(asked, Remove { node: self.addrs[i].to_string() }).await, Some(Ok(())));
        self.slots.borrow_mut()[i].removed |= removed;
        removed
    }

    /// Notes a fault's start or end in the trace.
    pub fn note(&self, event: String) {
        self.events.borrow_mut().push(format!("{:?} {event}", self.started.elapsed()));
    }

    pub fn events(&self) -> Vec<String> {
        self.events.borrow().clone()
    }

    /// Node `i` as it runs now; None while it is crashed.
    pub fn node(&self, i: usize) -> Option<Node> {
        self.slots.borrow()[i].node.clone()
    }

    fn running(&self) -> Vec<(usize, Node)> {
        self.slots.borrow().iter().enumerate().filter_map(|(i, s)| s.node.clone().map(|n| (i, n))).collect()
    }

    /// Node `i`'s process dies: its connections break, and its memory is
    /// lost; its disk keeps what it acknowledged.
    pub fn crash(&self, i: usize) {
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[i];
        if slot.node.take().is_some() {
            slot.handle.close();
            self.world.crash(slot.addr);
        }
    }

    /// Starts node `i` again on its disk, if it is crashed.
    pub fn restart(&self, i: usize) {
        {
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[i];
            if slot.node.is_some() || !slot.joined {
                return;
            }
            slot.incarnation += 1;
            slot.handle = slot.disk.open();
        }
        self.boot(i);
    }

    /// Node `i` stops (SIGSTOP) or goes on: while it is stopped, nothing
    /// it sends or is sent arrives, and its clients' requests wait.
    pub fn pause(&self, i: usize, paused: bool) {
        let links = self.links_of(i);
        let mut slots = self.slots.borrow_mut();
        match (slots[i].paused, paused) {
            (false, true) => self.world.apply_cuts(&links),
            (true, false) => self.world.lift(&links),
            _ => return,
        }
        slots[i].paused = paused;
    }

    /// Every link to and from node `i`.
    pub fn links_of(&self, i: usize) -> Vec<(SocketAddrV4, SocketAddrV4)> {
        let me = self.addrs[i];
        self.addrs.iter().filter(|a| **a != me).flat_map(|a| [(me, *a), (*a, me)]).collect()
    }

    /// Node `i`'s disk fills up, or has room again.
    pub fn fill_disk(&self, i: usize, full: bool) {
        self.slots.borrow()[i].disk.set_full(full);
    }

    /// Steps node `i`'s wall clock to `skew_ms` off the true time.
    pub fn skew_clock(&self, i: usize, skew_ms: i64) {
        let mut slots = self.slots.borrow_mut();
        slots[i].skew_ms = skew_ms;
        if let Some(node) = &slots[i].node {
            node.store.clock().set_skew(skew_ms);
        }
    }

    /// Ends every fault: links heal, crashed nodes start, stopped ones go
    /// on, full disks are freed (clocks stay as they are).
    pub fn heal_all(&self) {
        for i in 0..self.addrs.len() {
            self.pause(i, false);
            self.fill_disk(i, false);
            self.restart(i);
        }
        self.world.heal_all();
    }

    /// An admin command asked of node `i`'s router.
    async fn ask<C: AdminCommand>(&self, node: usize, command: C) -> Option<crate::Result<C::Reply>> {
        let router = self.node(node)?.routers[0].clone().recipient();
        Some(crate::api::admin::ask(&router, &command).await)
    }

    /// Whether every member sees every member up.
    pub async fn all_up(&self) -> bool {
        let members = self.members();
        for i in members.iter().copied() {
            let Some(Ok(rows)) = self.ask(i, NodeList).await else { return false };
            let up = rows.iter().filter(|r| r.state == MemberState::Up && !r.suspected).count();
            if up != members.len() {
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

    /// Node `i`'s coordinator for a client: waits while the node is
    /// stopped; None while it is crashed (its port refuses).
    async fn coordinator(&self, i: usize) -> Option<Arc<crate::coordinator::Coordinator>> {
        while self.slots.borrow()[i].paused {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Some(self.node(i)?.coordinators[0].clone())
    }

    /// A client's write through `node` as coordinator.
    pub async fn write(&self, node: usize, key: &str, write: Write) -> crate::Result<WriteOutcome> {
        let coordinator = self.coordinator(node).await.ok_or_else(refused)?;
        coordinator.write(Bytes::from(key.to_string()), write, Origin::CLIENT, None).await
    }

    pub async fn set(&self, node: usize, key: &str, value: &str) -> crate::Result<WriteOutcome> {
        self.write(node, key, Write::set(Bytes::from(value.to_string()), 0, 0)).await
    }

    /// A client's read through `node`: the live siblings, newest last.
    pub async fn get(&self, node: usize, key: &str) -> crate::Result<Vec<Version>> {
        let coordinator = self.coordinator(node).await.ok_or_else(refused)?;
        coordinator.get(Bytes::from(key.to_string()), Origin::CLIENT, None).await
    }

    /// The nodes that hold a key: its N home replicas, by index.
    pub fn homes(&self, key: &str) -> Vec<usize> {
        let Some((_, node)) = self.running().into_iter().next() else { return Vec::new() };
        let ring = node.ring.snapshot();
        let bucket = ring.bucket_of(key.as_bytes());
        let n = node.identity.n;
        ring.preference_list(bucket).iter().take(n).filter_map(|a| self.addrs.iter().position(|x| x == a)).collect()
    }

    /// What each node holds of a key, read straight from its store.
    pub fn held(&self, key: &str) -> Vec<Vec<Version>> {
        let read = |slot: &Slot| slot.node.as_ref()?.store.replica_read(key.as_bytes(), false).ok().map(|(v, _)| v);
        self.slots.borrow().iter().map(|slot| read(slot).unwrap_or_default()).collect()
    }
}

fn refused() -> crate::Error {
    crate::Error::Unavailable("connection refused: the node is down".into())
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
    /// The kinds of fault drawn (`FAULT_KINDS` by default).
    pub fault_kinds: Vec<&'static str>,
    /// How every node's disk misbehaves, to show the checks catch it.
    pub misbehave: Option<Misbehave>,
    /// Healed and quiet this long before the checks.
    pub quiet: Duration,
    /// Spare nodes, which may join during the run.
    pub spares: usize,
    /// Replicas agree, member tables agree and handoff is done this long
    /// after the last fault healed, or the run fails.
    pub settle_within: Duration,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            nodes: 5,
            clients: 4,
            ops_per_client: 40,
            keys: 6,
            counters: 2,
            faults: true,
            fault_kinds: FAULT_KINDS.to_vec(),
            misbehave: None,
            quiet: Duration::from_secs(30),
            settle_within: Duration::from_secs(10),
            spares: 1,
        }
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
    /// How long after the last fault healed every replica agreed, every
    /// member table did, and nothing was left to hand off.
    pub settled: Option<Duration>,
}

/// One random run from `seed`.
pub fn run(seed: u64, plan: &Plan) -> Outcome {
    simulate(async move {
        let started = tokio::time::Instant::now();
        let cluster = Rc::new(Cluster::start_with(seed, plan.nodes, plan.spares, plan.misbehave).await);
        let history = Rc::new(History::new(cluster.started));
        for counter in 0..plan.counters {
            // Counters start at 0, before any fault.
            let key = format!("counter{counter}");
            let invoked = history.now();
            let result = cluster.set(0, &key, "0").await;
            history.record_write(0, Op::Set { key, value: "0".into() }, invoked, &result);
        }
        let kinds = plan.fault_kinds.clone();
        let faults = (plan.faults && !kinds.is_empty()).then(|| actix::spawn(inject_faults(cluster.clone(), seed, kinds)));
        let clients: Vec<_> =
            (0..plan.clients).map(|c| actix::spawn(client(cluster.clone(), history.clone(), plan.clone(), seed, c))).collect();
        for client in clients {
            let _ = client.await;
        }
        let fault_counts = match faults {
            Some(task) => {
                task.abort();
                let _ = task.await;
                cluster.heal_all();
                cluster.world.fault_counts()
            }
            None => BTreeMap::new(),
        };
        let healed = tokio::time::Instant::now();
        let settled = cluster.await_settled(&history.keys(), plan.settle_within).await;
        tokio::time::sleep(plan.quiet.saturating_sub(healed.elapsed())).await;
        let mut outcome = check::check(&cluster, &history);
        match settled {
            Some(took) => outcome.settled = Some(took),
            None => {
                let still = cluster.unsettled(&history.keys()).await;
                let within = plan.settle_within;
                let why = if still.is_empty() { format!("settled after {within:?} only") } else { still.join("; ") };
                outcome
                    .violations
                    .push(format!("not settled: not within {within:?} of healing, and {:?} after: {why}", plan.quiet));
            }
        }
        outcome.trace.push(format!("settled {:?}", outcome.settled));
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
        let node = cluster.pick_up(rng.gen_range(0..cluster.addrs.len()));
        let invoked = history.now();
        let roll = rng.gen_range(0..100);
        if roll < 15 && plan.counters > 0 {
            let key = format!("counter{}", rng.gen_range(0..plan.counters));
            let write = Write { condition: Condition::Present, mutation: Mutation::Incr(1) };
            let result = cluster.write(node, &key, write).await;
            let value = result.as_ref().ok().and_then(stored_value);
            history.record_write(id, Op::Incr { key, result: value }, invoked, &result);
            continue;
        }
        let key = format!("key{}", rng.gen_range(0..plan.keys));
        if roll < 40 {
            let result = cluster.get(node, &key).await;
            history.record_read(id, key, invoked, &result);
        } else if roll < 48 {
            let result = cluster.write(node, &key, Write::delete()).await;
            history.record_write(id, Op::Delete { key }, invoked, &result);
        } else {
            // Each write's value is its own, so a read names its writer:
            // s… a set, a… an add, x… a cas over what the client just read.
            let (prefix, condition) = if roll < 55 {
                ("a", Condition::Absent)
            } else if roll < 62 {
                match cluster.get(node, &key).await {
                    Ok(live) => ("x", Condition::Context(crate::version::cas_token(key.as_bytes(), &live))),
                    Err(_) => continue,
                }
            } else {
                ("s", Condition::Always)
            };
            let value = format!("{prefix}{id}-{seq}");
            let mutation = Mutation::Set { value: Bytes::from(value.clone()), flags: 0, expires_at: 0 };
            let result = cluster.write(node, &key, Write { condition, mutation }).await;
            history.record_write(id, Op::Set { key, value }, invoked, &result);
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

impl Cluster {
    /// Waits until the cluster is settled (`unsettled` finds nothing), up
    /// to `within`; answers how long that took.
    pub async fn await_settled(&self, keys: &[String], within: Duration) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        while started.elapsed() < within {
            if self.unsettled(keys).await.is_empty() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }

    /// What keeps the cluster from being settled: members whose tables
    /// differ or show a member not up, hints held, buckets still to move,
    /// and keys whose replicas differ or sit off their homes.
    pub async fn unsettled(&self, keys: &[String]) -> Vec<String> {
        let mut found = Vec::new();
        let mut tables = BTreeMap::new();
        let members = self.members();
        for i in members.iter().copied() {
            let Some(Ok(rows)) = self.ask(i, NodeList).await else {
                found.push(format!("member tables disagree: n{i} does not answer"));
                continue;
            };
            let table: Vec<String> =
                rows.iter().map(|r| format!("{} {:?}{}", r.addr, r.state, if r.suspected { " suspected" } else { "" })).collect();
            tables.insert(i, table);
        }
        let distinct: BTreeSet<_> = tables.values().collect();
        let slots = self.slots.borrow();
        let expected: BTreeSet<String> = (0..slots.len())
            .filter(|i| slots[*i].joined)
            .map(|i| format!("{} {}", self.addrs[i], if slots[i].removed { "Removed" } else { "Up" }))
            .collect();
        drop(slots);
        let as_expected = tables.values().all(|t| t.iter().cloned().collect::<BTreeSet<_>>() == expected);
        if distinct.len() > 1 || !as_expected {
            found.push(format!("member tables disagree: {tables:?}"));
        }
        for (i, node) in self.running() {
            let hints = node.store.hints().map(|h| h.len()).unwrap_or(0);
            let pending = node.stats.buckets_pending.load(std::sync::atomic::Ordering::Relaxed);
            if hints > 0 || pending > 0 {
                found.push(format!("handoff not done: n{i} holds {hints} hints, {pending} buckets to move"));
            }
        }
        for key in keys {
            check::check_placement(self, key, &self.held(key), &mut found);
        }
        found
    }

    /// `node`, or the next one running if it is crashed (a client fails
    /// over to another node it knows).
    fn pick_up(&self, node: usize) -> usize {
        let members = self.members();
        let n = members.len();
        (0..n).map(|step| members[(node + step) % n]).find(|i| self.node(*i).is_some()).unwrap_or(members[node % n])
    }
}

/// The kinds of fault a run draws from: failures, and an operator's
/// changes (a spare node joins; a member is removed, at most one a run).
pub const FAULT_KINDS: [&str; 12] = [
    "isolate one",
    "isolate two",
    "one-way cut",
    "split in two",
    "crash",
    "pause",
    "slow links",
    "reset links",
    "clock step",
    "full disk",
    "join",
    "remove",
];

/// Faults drawn from the seed, one after another, some overlapping, each
/// lasting 0.2-4 s.
async fn inject_faults(cluster: Rc<Cluster>, seed: u64, kinds: Vec<&'static str>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xfa17);
    loop {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..2000))).await;
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let lasting = Duration::from_millis(rng.gen_range(200..4000));
        if kind == "join" || kind == "remove" {
            change_membership(&cluster, kind, &mut rng).await;
            continue;
        }
        let (undo, what) = start_fault(&cluster, kind, &mut rng);
        cluster.world.count(kind);
        cluster.note(format!("start {what}"));
        let cluster = cluster.clone();
        actix::spawn(async move {
            tokio::time::sleep(lasting).await;
            undo(&cluster);
            cluster.note(format!("end {what}"));
        });
    }
}

/// A spare joins, or a member other than the first is removed (while
/// more than N members would remain, and once a run).
async fn change_membership(cluster: &Cluster, kind: &'static str, rng: &mut impl Rng) {
    let members = cluster.members();
    let removed_before = members.len() + cluster.spares_left() < cluster.addrs.len();
    let what = match kind {
        "join" => cluster.join_spare().map(|i| format!("join n{i}")),
        _ if members.len() > 3 && !removed_before => {
            let i = members[rng.gen_range(1..members.len())];
            cluster.remove(i).await.then(|| format!("remove n{i}"))
        }
        _ => None,
    };
    if let Some(what) = what {
        cluster.world.count(kind);
        cluster.note(what);
    }
}

type Undo = Box<dyn FnOnce(&Cluster)>;

/// Starts one fault of `kind` on nodes drawn from `rng`; answers how to
/// end it, and what it is.
fn start_fault(cluster: &Cluster, kind: &str, rng: &mut impl Rng) -> (Undo, String) {
    let members = cluster.members();
    let n = members.len();
    let first = rng.gen_range(0..n);
    let (a, b) = (members[first], members[(first + rng.gen_range(1..n)) % n]);
    let mut what = match kind {
        "isolate two" | "one-way cut" => format!("{kind} n{a} n{b}"),
        _ => format!("{kind} n{a}"),
    };
    let undo: Undo = match kind {
        "crash" => {
            cluster.crash(a);
            Box::new(move |c| c.restart(a))
        }
        "pause" => {
            cluster.pause(a, true);
            Box::new(move |c| c.pause(a, false))
        }
        "slow links" => {
            let (links, extra) = (cluster.links_of(a), Duration::from_millis(rng.gen_range(20..1500)));
            cluster.world.slow(&links, extra);
            Box::new(move |c| c.world.unslow(&links, extra))
        }
        "reset links" => {
            let (me, others) = (cluster.addrs[a], cluster.addrs.clone());
            others.iter().filter(|o| **o != me).for_each(|o| cluster.world.reset(me, *o));
            Box::new(|_| {})
        }
        "clock step" => {
            let skew = rng.gen_range(-5000..5000);
            cluster.skew_clock(a, skew);
            cluster.note(format!("n{a} clock {skew} ms off"));
            Box::new(|_| {})
        }
        "full disk" => {
            cluster.fill_disk(a, true);
            Box::new(move |c| c.fill_disk(a, false))
        }
        "split in two" => {
            let half: Vec<usize> = members.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
            what = format!("{kind}: {half:?} apart");
            let rest: Vec<usize> = members.iter().copied().filter(|o| !half.contains(o)).collect();
            let cuts = half.iter().flat_map(|x| rest.iter().map(move |o| (*x, *o)));
            let links: Vec<_> =
                cuts.flat_map(|(x, y)| [(cluster.addrs[x], cluster.addrs[y]), (cluster.addrs[y], cluster.addrs[x])]).collect();
            cluster.world.apply_cuts(&links);
            Box::new(move |c| c.world.lift(&links))
        }
        cut => {
            let links: Vec<_> =
                cut_links(cut, &members, a, b).iter().map(|(x, y)| (cluster.addrs[*x], cluster.addrs[*y])).collect();
            cluster.world.apply_cuts(&links);
            Box::new(move |c| c.world.lift(&links))
        }
    };
    (undo, what)
}

/// The directed links a partition of `kind` cuts.
fn cut_links(kind: &str, members: &[usize], a: usize, b: usize) -> Vec<(usize, usize)> {
    let apart = |x: usize| members.iter().copied().filter(move |o| *o != x).flat_map(move |o| [(x, o), (o, x)]);
    match kind {
        "isolate one" => apart(a).collect(),
        "isolate two" => apart(a).chain(apart(b)).filter(|(x, y)| !(*x == a && *y == b || *x == b && *y == a)).collect(),
        _ => vec![(a, b)],
    }
}

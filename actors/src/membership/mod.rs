//! membership: who is in the cluster and in what state. The pure member
//! table and its gossip rules are in `table`, the failure detector in
//! `phi`; the actor gossips with one random peer every interval, keeps the
//! table in `data_dir` across restarts, retries its seeds (and every known
//! member) with backoff while it is alone, tells hash when the ring
//! changes, and publishes which nodes are down for request paths to read.

mod digest;
mod phi;
pub mod serve;
mod table;

pub use digest::{Heartbeats, MemberDigest, MemberRow, MemberState};
pub use phi::{PhiDetector, PhiSettings};
pub use table::{Answer, Event, Member, Members, SavedMembers};

use crate::api::{Peers, Request, Response};
use crate::error::{Error, Result};
use crate::hash::{HashActor, RingNode, UpdateNodes};
use crate::stats::NodeStats;
use actix::prelude::*;
use arc_swap::ArcSwap;
use rand::SeedableRng;
use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
// The node's clock: tokio's, which the simulator pauses and moves by hand.
use tokio::time::Instant;

/// The log target of membership changes, start and stop: logged whatever
/// the configured level.
pub const EVENTS: &str = "kai::events";

/// The longest wait between two rounds of contacting seeds while alone.
const MAX_CONTACT_BACKOFF: Duration = Duration::from_secs(30);

/// The nodes on the ring that are down now, and those that take no writes
/// (down, or a full disk): read by every request, so published as
/// immutable snapshots like the ring.
#[derive(Clone, Default)]
pub struct Liveness {
    down: Arc<ArcSwap<BTreeSet<SocketAddrV4>>>,
    unwritable: Arc<ArcSwap<BTreeSet<SocketAddrV4>>>,
    /// This node's own state (`MemberState` as a number; 0 until the
    /// table is first published).
    own: Arc<std::sync::atomic::AtomicU8>,
}

/// A set of nodes as published, for the span of one request.
pub type NodeSet = arc_swap::Guard<Arc<BTreeSet<SocketAddrV4>>>;

impl Liveness {
    pub fn down(&self) -> NodeSet {
        self.down.load()
    }

    /// Where writes must not go: down members and read-only ones.
    pub fn unwritable(&self) -> NodeSet {
        self.unwritable.load()
    }

    /// This node's own place in the cluster; None before membership has
    /// published its table.
    pub fn own_state(&self) -> Option<MemberState> {
        let states = [MemberState::Joining, MemberState::Up, MemberState::Leaving, MemberState::Removed];
        let own = self.own.load(Relaxed) as usize;
        own.checked_sub(1).and_then(|i| states.get(i).copied())
    }

    /// Whether this node was taken off the ring (`remove_node`): it then
    /// coordinates no client request.
    pub fn is_removed(&self) -> bool {
        self.own_state() == Some(MemberState::Removed)
    }

    pub fn publish(&self, members: &Members) {
        self.own.store(1 + members.my_state() as u8, Relaxed);
        let down: BTreeSet<SocketAddrV4> = members.down_nodes().into_iter().collect();
        let mut unwritable = down.clone();
        unwritable.extend(members.read_only_nodes());
        self.down.store(Arc::new(down));
        self.unwritable.store(Arc::new(unwritable));
    }
}

/// Where a node keeps its member table across restarts: a file in
/// `data_dir`, or the simulator's disk.
pub trait TableKeeper: Send + Sync {
    /// The table as last kept; None when none was.
    fn load(&self) -> Result<Option<SavedMembers>>;
    fn save(&self, saved: &SavedMembers) -> Result<()>;
    /// Where it is kept, for messages.
    fn describe(&self) -> String;
}

/// The member table in a file.
pub struct TableFile(pub PathBuf);

impl TableKeeper for TableFile {
    fn load(&self) -> Result<Option<SavedMembers>> {
        match std::fs::read(&self.0) {
            Ok(bytes) => Ok(Some(rmp_serde::from_slice(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the table whole, then renames it over the old one, so a crash
    /// leaves the old table or the new, never half of one.
    fn save(&self, saved: &SavedMembers) -> Result<()> {
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, rmp_serde::to_vec(saved)?)?;
        std::fs::rename(&tmp, &self.0)?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

/// Told when a member comes back up (hints are waiting for it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct MemberUp(pub SocketAddrV4);

#[derive(Clone)]
pub struct MembershipSettings {
    pub gossip_interval: Duration,
    pub phi: PhiSettings,
    pub timeout: Duration,
    /// Nodes to link with at start (as `check_node` would), retried with
    /// backoff while this node is alone.
    pub seeds: Vec<SocketAddrV4>,
    /// Where the member table is kept across restarts (None: not kept).
    pub state_file: Option<Arc<dyn TableKeeper>>,
    /// Seeds the choice of gossip peers (the simulator's runs repeat);
    /// None: from entropy.
    pub rng_seed: Option<u64>,
    /// Whether this node's store takes writes, for gossip to spread.
    pub store_writable: crate::store::Writable,
}

/// Every member and its state.
#[derive(Message)]
#[rtype(result = "Vec<Member>")]
pub struct MemberList;

/// Every member as `node_list` shows it (buckets and hints left for the
/// caller, which holds the ring and the store).
#[derive(Message)]
#[rtype(result = "Vec<MemberRow>")]
pub struct MemberStatus;

/// A whole table from a peer: merge it and answer with our table.
#[derive(Message)]
#[rtype(result = "Vec<MemberDigest>")]
pub struct ReceiveGossip(pub Vec<MemberDigest>);

/// A peer's gossip round opens: answer with heartbeats, or our table.
#[derive(Message)]
#[rtype(result = "Answer")]
pub struct ReceiveHeartbeats(pub Heartbeats);

/// What a peer knows newer than the table we answered it with.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReceiveDelta(pub Vec<MemberDigest>);

/// `check_node`: contact a node and merge member lists with it.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct CheckNode(pub SocketAddrV4);

/// `remove_node`: takes a node off the ring for good; it hands its data to
/// the buckets' new homes (moved by sync) and the news spreads by gossip.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct RemoveNode(pub SocketAddrV4);

/// From sync: this node has no bucket left to pull or hand off, on a ring
/// of `ring_nodes` nodes that does (or does not) include this node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Settled {
    pub ring_nodes: usize,
    pub ring_has_me: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
struct GossipTick;

pub struct MembershipActor {
    members: Members,
    settings: MembershipSettings,
    peers: Peers,
    hash: Addr<HashActor>,
    liveness: Liveness,
    stats: Arc<NodeStats>,
    up_listeners: Vec<Recipient<MemberUp>>,
    epoch: Instant,
    rng: rand::rngs::StdRng,
    /// While alone: when to contact seeds next, and the wait after that.
    next_contact_ms: u64,
    contact_backoff: Duration,
    /// Why the last contact with a seed or `check_node` target failed,
    /// while this node hears from no member.
    waiting: Option<String>,
    /// When this node first knew each removed member removed (for one
    /// restored removed, this start): `node_list` drops them once
    /// `tombstone_grace_secs` have passed.
    removed_seen: std::collections::HashMap<SocketAddrV4, u64>,
}

impl MembershipActor {
    pub fn new(
        members: Members,
        settings: MembershipSettings,
        peers: Peers,
        hash: Addr<HashActor>,
        liveness: Liveness,
        stats: Arc<NodeStats>,
        up_listeners: Vec<Recipient<MemberUp>>,
    ) -> Self {
        let backoff = settings.gossip_interval;
        let rng = match settings.rng_seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_entropy(),
        };
        MembershipActor {
            rng,
            members,
            settings,
            peers,
            hash,
            liveness,
            stats,
            up_listeners,
            epoch: Instant::now(),
            next_contact_ms: 0,
            contact_backoff: backoff,
            waiting: None,
            removed_seen: Default::default(),
        }
    }

    /// The table a node starts with: as saved in `data_dir` (at the next
    /// incarnation), or new, joining if it has seeds to join through.
    pub fn initial_members(me: RingNode, saved: Option<&SavedMembers>, has_seeds: bool, phi: PhiSettings) -> Members {
        match saved {
            Some(saved) => Members::restore(me, saved, phi, 0),
            None => {
                let state = if has_seeds { MemberState::Joining } else { MemberState::Up };
                Members::new(me, state, 1, phi, 0)
            }
        }
    }

    /// Counts a gossip message this node sends (encoded once more to
    /// measure it: a few a second).
    fn count_sent<T: serde::Serialize>(&self, message: &T, whole_table: bool) {
        let bytes = rmp_serde::to_vec(message).map_or(0, |b| b.len());
        NodeStats::add(&self.stats.gossip_bytes_sent, bytes as u64);
        if whole_table {
            NodeStats::incr(&self.stats.gossip_tables_sent);
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn persist(&self) {
        if let Some(keeper) = &self.settings.state_file {
            if let Err(e) = keeper.save(&self.members.save()) {
                tracing::error!(path = %keeper.describe(), "cannot keep the member table: {e}");
            }
        }
    }

    fn count_states(&self) {
        let mut counts = [0i64; 5];
        for m in self.members.list() {
            let i = match (m.state, m.suspected) {
                (MemberState::Joining | MemberState::Up, true) if m.node.addr != self.members.me() => 2,
                (MemberState::Joining, _) => 0,
                (MemberState::Up, _) => 1,
                (MemberState::Leaving, _) => 3,
                (MemberState::Removed, _) => 4,
            };
            counts[i] += 1;
        }
        let s = &self.stats;
        for (counter, n) in
            [&s.members_joining, &s.members_up, &s.members_down, &s.members_leaving, &s.members_removed].into_iter().zip(counts)
        {
            counter.store(n, Relaxed);
        }
    }

    /// Acts on what changed: ring changes go to hash, up/down is published,
    /// and a change of anyone's state is kept on disk.
    fn apply(&mut self, events: Vec<Event>) {
        // A member's last step to removed comes with no event of its own.
        self.note_removed();
        if events.is_empty() {
            return;
        }
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut keep = false;
        let me = self.members.me();
        for event in &events {
            match event {
                Event::Joined(node) => {
                    tracing::info!(target: EVENTS, node = %node.addr, vnodes = node.virtual_nodes, "member on the ring");
                    added.push(node.clone());
                    keep = true;
                }
                Event::Left(addr) => {
                    tracing::info!(target: EVENTS, node = %addr, "member left the ring");
                    removed.push(*addr);
                    keep = true;
                }
                Event::Down(addr) => {
                    tracing::warn!(target: EVENTS, node = %addr, "member down (suspected by the failure detector)")
                }
                Event::Writes(addr, false) => {
                    tracing::warn!(target: EVENTS, node = %addr, "member takes no writes (its store is read-only)")
                }
                Event::Writes(addr, true) => {
                    tracing::info!(target: EVENTS, node = %addr, "member takes writes again");
                    for listener in &self.up_listeners {
                        listener.do_send(MemberUp(*addr));
                    }
                }
                Event::Up(addr) => {
                    tracing::info!(target: EVENTS, node = %addr, "member up");
                    for listener in &self.up_listeners {
                        listener.do_send(MemberUp(*addr));
                    }
                }
                Event::MyState(state) => {
                    keep = true;
                    match state {
                        MemberState::Leaving => {
                            tracing::warn!(target: EVENTS, "this node was removed from the ring: handing its data to the new homes");
                            removed.push(me);
                        }
                        MemberState::Removed => {
                            tracing::warn!(target: EVENTS,
                                "this node is removed from the cluster and holds nothing it must hand over: safe to stop"
                            );
                            removed.push(me);
                        }
                        MemberState::Up => tracing::info!(target: EVENTS, "this node holds its buckets: up"),
                        MemberState::Joining => {}
                    }
                }
            }
        }
        if !added.is_empty() || !removed.is_empty() {
            self.hash.do_send(UpdateNodes { added, removed });
        }
        self.liveness.publish(&self.members);
        self.count_states();
        if keep {
            self.persist();
        }
    }

    /// One gossip round with `peer`, run outside the message loop: our
    /// heartbeats out, its heartbeats or table back, and if its table
    /// differed, what we know newer sent after.
    fn gossip_round(&self, peer: SocketAddrV4) -> impl ActorFuture<Self, Output = Result<()>> {
        let (peers, timeout) = (self.peers.clone(), self.settings.timeout);
        let opening = self.members.heartbeats();
        let request = Request::GossipHeartbeats(opening.clone());
        NodeStats::incr(&self.stats.gossip_rounds);
        self.count_sent(&request, false);
        async move { peers.call(SocketAddr::V4(peer), request, timeout).await }.into_actor(self).map(move |result, act, ctx| {
            let answer = match result? {
                Response::HeartbeatsAhead(ahead) => Answer::Ahead(ahead),
                Response::Members(table) => Answer::Table(table),
                other => return Err(Error::Protocol(format!("{peer} answered gossip with {other:?}"))),
            };
            let now = act.now_ms();
            let (events, delta) = act.members.take_answer(&opening, &answer, now);
            act.apply(events);
            if !delta.is_empty() {
                let (peers, timeout) = (act.peers.clone(), act.settings.timeout);
                let request = Request::GossipDelta { members: delta };
                act.count_sent(&request, false);
                ctx.spawn(
                    async move {
                        if let Err(e) = peers.call(SocketAddr::V4(peer), request, timeout).await {
                            tracing::debug!(%peer, "gossip delta not delivered (the next round will do): {e}");
                        }
                    }
                    .into_actor(act),
                );
            }
            Ok(())
        })
    }

    /// One push-pull exchange of whole tables with `peer`: both ends know
    /// each other once it returns (linking, and contacting seeds).
    fn exchange(&self, peer: SocketAddrV4) -> impl ActorFuture<Self, Output = Result<()>> {
        let (peers, timeout) = (self.peers.clone(), self.settings.timeout);
        let request = Request::Gossip { members: self.members.digests() };
        self.count_sent(&request, true);
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

    /// While this node hears from no other member: contact every seed and
    /// every member it knows of, then wait longer before the next try.
    fn contact_if_alone(&mut self, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        if self.members.live_peers() > 0 {
            self.contact_backoff = self.settings.gossip_interval;
            self.waiting = None;
            return;
        }
        if now < self.next_contact_ms {
            return;
        }
        let mut targets: BTreeSet<SocketAddrV4> = self.settings.seeds.iter().copied().collect();
        targets.extend(self.members.contacts());
        targets.remove(&self.members.me());
        if targets.is_empty() {
            return;
        }
        self.next_contact_ms = now + self.contact_backoff.as_millis() as u64;
        self.contact_backoff = (self.contact_backoff * 2).min(MAX_CONTACT_BACKOFF);
        for target in targets {
            ctx.spawn(self.exchange(target).map(move |result, act, _| {
                if let Err(e) = result {
                    act.contact_failed(target, &e, "will retry");
                }
            }));
        }
    }

    /// Notes when each removed member was first known removed here (within
    /// a gossip round: the table is scanned only when the count of removed
    /// members, as last counted, says one is new).
    fn note_removed(&mut self) {
        let counted = self.stats.members_removed.load(Relaxed).max(0) as usize;
        if counted == self.removed_seen.len() {
            return;
        }
        let now = self.now_ms();
        for member in self.members.list().into_iter().filter(|m| m.state == MemberState::Removed) {
            self.removed_seen.entry(member.node.addr).or_insert(now);
        }
    }

    /// A failed contact with a seed or a `check_node` target: logged with
    /// its reason, which `node_list` and `/status` show beside `joining`.
    fn contact_failed(&mut self, target: SocketAddrV4, error: &Error, then: &str) {
        let reason = contact_failure(target, error);
        tracing::warn!(target: EVENTS, %target, "could not link with {reason} ({then})");
        if self.members.live_peers() == 0 {
            self.waiting = Some(reason);
        }
    }
}

impl Actor for MembershipActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.settings.gossip_interval, |_, ctx| ctx.notify(GossipTick));
        self.count_states();
        self.note_removed();
        // Members restored from disk are suspected until heard from.
        self.liveness.publish(&self.members);
        // Record this start's incarnation before anyone hears of it.
        self.persist();
        self.contact_if_alone(ctx);
    }
}

crate::supervised!(MembershipActor, "membership");

impl Handler<GossipTick> for MembershipActor {
    type Result = ();

    fn handle(&mut self, _: GossipTick, ctx: &mut Self::Context) {
        let now = self.now_ms();
        let mut events = self.members.set_my_writes(self.settings.store_writable.get());
        events.extend(self.members.tick(now));
        self.apply(events);
        self.count_states();
        for peer in self.members.gossip_targets(&mut self.rng) {
            ctx.spawn(self.gossip_round(peer).map(move |result, _, _| {
                if let Err(e) = result {
                    tracing::debug!(%peer, "gossip failed: {e}");
                }
            }));
        }
        self.contact_if_alone(ctx);
    }
}

impl Handler<ReceiveGossip> for MembershipActor {
    type Result = MessageResult<ReceiveGossip>;

    fn handle(&mut self, msg: ReceiveGossip, _: &mut Self::Context) -> Self::Result {
        let now = self.now_ms();
        let events = self.members.merge(&msg.0, now);
        self.apply(events);
        let table = self.members.digests();
        self.count_sent(&table, true);
        MessageResult(table)
    }
}

impl Handler<ReceiveHeartbeats> for MembershipActor {
    type Result = MessageResult<ReceiveHeartbeats>;

    fn handle(&mut self, ReceiveHeartbeats(opening): ReceiveHeartbeats, _: &mut Self::Context) -> Self::Result {
        let now = self.now_ms();
        let (answer, events) = self.members.answer(&opening, now);
        self.apply(events);
        match &answer {
            Answer::Ahead(ahead) => self.count_sent(ahead, false),
            Answer::Table(table) => self.count_sent(table, true),
        }
        MessageResult(answer)
    }
}

impl Handler<ReceiveDelta> for MembershipActor {
    type Result = ();

    fn handle(&mut self, ReceiveDelta(delta): ReceiveDelta, _: &mut Self::Context) {
        let now = self.now_ms();
        let events = self.members.merge(&delta, now);
        self.apply(events);
    }
}

/// Why a contact failed, as an operator reads it: refused (a wrong secret,
/// another protocol version or other settings, in the refusal's words),
/// unreachable, or timed out.
fn contact_failure(target: SocketAddrV4, error: &Error) -> String {
    match error {
        Error::Refused(why) => format!("{target}: refused: {why}"),
        Error::Indeterminate(why) => format!("{target}: timed out: {why}"),
        Error::Unavailable(why) => format!("{target}: unreachable: {why}"),
        other => format!("{target}: {other}"),
    }
}

/// What an operator is told when a removed address is linked again.
fn removed_error(addr: SocketAddrV4) -> Error {
    Error::Client(format!(
        "{addr} was removed from this cluster, and a removed address never rejoins (so no stale copy of its data \
         can come back): start the node on another port or hostname with an empty data_dir, then check_node it"
    ))
}

impl Handler<CheckNode> for MembershipActor {
    type Result = ResponseActFuture<Self, Result<()>>;

    fn handle(&mut self, CheckNode(peer): CheckNode, _: &mut Self::Context) -> Self::Result {
        let me = self.members.me();
        if self.members.my_state() == MemberState::Removed {
            return Box::pin(async move { Err(removed_error(me)) }.into_actor(self));
        }
        if peer == me {
            return Box::pin(async { Ok(()) }.into_actor(self));
        }
        // Every node on the ring needs buckets of its own: a ring cut into
        // fewer buckets than nodes would leave some holding nothing.
        let (nodes, buckets) = (self.members.ring_nodes().len() + 1, self.peers.terms().number_of_buckets as usize);
        if self.members.get(&peer).is_none() && nodes > buckets {
            let why = format!(
                "linking {peer} would put {nodes} nodes on a ring of {buckets} buckets, fewer buckets than nodes; \
                 a cluster of {nodes} needs number_of_buckets of at least {} (see SCALE.md)",
                (nodes * 16).next_power_of_two()
            );
            return Box::pin(async move { Err(Error::Client(why)) }.into_actor(self));
        }
        // Linked means both ends are members afterwards: say so if either
        // turns out to be removed, never "linked" with no effect.
        Box::pin(self.exchange(peer).map(move |result, act, _| {
            if let Err(e) = &result {
                act.contact_failed(peer, e, "check_node failed");
            }
            result?;
            if act.members.my_state() == MemberState::Removed {
                return Err(removed_error(me));
            }
            if act.members.get(&peer).is_some_and(|m| m.state == MemberState::Removed) {
                return Err(removed_error(peer));
            }
            Ok(())
        }))
    }
}

impl Handler<MemberList> for MembershipActor {
    type Result = MessageResult<MemberList>;

    fn handle(&mut self, _: MemberList, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.members.list())
    }
}

impl Handler<MemberStatus> for MembershipActor {
    type Result = MessageResult<MemberStatus>;

    fn handle(&mut self, _: MemberStatus, _: &mut Self::Context) -> Self::Result {
        let now = self.now_ms();
        let me = self.members.me();
        let rows = self
            .members
            .list()
            .into_iter()
            .map(|m| MemberRow {
                addr: m.node.addr.to_string(),
                state: m.state,
                suspected: m.suspected && m.node.addr != me && m.state != MemberState::Removed,
                virtual_nodes: m.node.virtual_nodes,
                incarnation: m.incarnation,
                buckets_first: 0,
                buckets_home: 0,
                hints_held: 0,
                heartbeat_age_ms: m.last_heard_ms().map(|t| now.saturating_sub(t)),
                phi: self.members.phi(&m.node.addr, now),
                accepts_writes: m.accepts_writes,
                zone: m.node.zone.to_string(),
                waiting: (m.node.addr == me).then(|| self.waiting.clone()).flatten(),
                removed_for_ms: self.removed_seen.get(&m.node.addr).map(|since| now.saturating_sub(*since)),
            })
            .collect();
        MessageResult(rows)
    }
}

impl Handler<RemoveNode> for MembershipActor {
    type Result = Result<()>;

    fn handle(&mut self, RemoveNode(node): RemoveNode, _: &mut Self::Context) -> Self::Result {
        match self.members.get(&node).map(|m| (m.state, m.suspected)) {
            None => return Err(Error::Client(format!("{node} is not a member"))),
            Some((MemberState::Removed, _)) => return Err(Error::Client(format!("{node} is removed already"))),
            // A leaving node that went down cannot finish handing over:
            // removing it again removes it at once.
            Some((MemberState::Leaving, false)) => {
                return Err(Error::Client(format!("{node} is leaving already (handing its data over)")));
            }
            _ => {}
        }
        if self.members.ring_nodes().iter().all(|n| n.addr == node) {
            return Err(Error::Client("the last node of a cluster cannot be removed".into()));
        }
        let events = self.members.remove(node);
        self.apply(events);
        Ok(())
    }
}

impl Handler<Settled> for MembershipActor {
    type Result = ();

    fn handle(&mut self, msg: Settled, _: &mut Self::Context) {
        let next = match self.members.my_state() {
            MemberState::Joining if msg.ring_has_me && msg.ring_nodes >= 2 => MemberState::Up,
            MemberState::Leaving if !msg.ring_has_me => MemberState::Removed,
            _ => return,
        };
        let events = self.members.advance_me(next);
        self.apply(events);
    }
}

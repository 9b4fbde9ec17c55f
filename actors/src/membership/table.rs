//! The member table and its gossip: a pure state machine. Time comes in as
//! an argument, messages go out as values, so a whole cluster can be
//! simulated in a unit test.
//!
//! Each member has a state that only moves forward (joining, up, leaving,
//! removed: see [`MemberState`]), an incarnation bumped at each start of
//! its process, and a heartbeat it bumps every gossip period. Gossip
//! exchanges tables: heartbeats merge by (incarnation, heartbeat), states
//! by the later one, so a removal is never undone by a node that has not
//! heard of it, and removed is final for an address. Whether a member is
//! down is each node's own judgement, by a phi accrual failure detector
//! on the heartbeats it sees rise; a down member keeps its place on the
//! ring (its writes go to stand-ins with hints).
//!
//! A gossip round sends no whole tables while tables agree: the opener
//! sends [`Heartbeats`] (a fingerprint of everything but heartbeats, and
//! the heartbeats in address order); a peer with the same fingerprint
//! merges them and answers with its own. Only when the fingerprints differ
//! (a join, a restart, a state change) does the peer answer with its whole
//! table, and the opener sends back just what it knows newer: a delta.

use super::phi::{PhiDetector, PhiSettings};
use super::{Heartbeats, MemberDigest, MemberState};
use crate::hash::RingNode;
use md5::{Digest, Md5};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddrV4;

/// What changed in the table, for the actor to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A node is on the ring now, or again at another vnode count.
    Joined(RingNode),
    /// A node left the ring (leaving or removed).
    Left(SocketAddrV4),
    /// A node on the ring is suspected by the failure detector, or is heard
    /// from again.
    Down(SocketAddrV4),
    Up(SocketAddrV4),
    /// This node's own state changed (it learned it is leaving or removed,
    /// or it finished joining).
    MyState(MemberState),
    /// A member's store stopped or started taking writes.
    Writes(SocketAddrV4, bool),
}

#[derive(Debug, Clone)]
pub struct Member {
    pub node: RingNode,
    pub state: MemberState,
    pub incarnation: u64,
    pub heartbeat: u64,
    /// The failure detector suspects it (shown as down).
    pub suspected: bool,
    /// Its store takes writes (false: a full disk).
    pub accepts_writes: bool,
    detector: PhiDetector,
    /// [`Member::hash_agreed`], kept: the table's fingerprint is their sum.
    agreed_hash: u64,
}

impl Member {
    fn new(node: RingNode, state: MemberState, incarnation: u64, heartbeat: u64, phi: &PhiSettings) -> Self {
        let detector = PhiDetector::new(phi);
        let mut m =
            Member { node, state, incarnation, heartbeat, suspected: false, accepts_writes: true, detector, agreed_hash: 0 };
        m.agreed_hash = m.hash_agreed();
        m
    }

    /// A member as another node's digest describes it.
    fn from_digest(d: &MemberDigest, phi: &PhiSettings) -> Self {
        let mut m = Member::new(d.ring_node(), d.state, d.incarnation, d.heartbeat, phi);
        m.accepts_writes = d.accepts_writes;
        m.agreed_hash = m.hash_agreed();
        m
    }

    /// What gossip makes every node agree on about this member, but its
    /// heartbeat, hashed (suspicion is each node's own judgement: left out).
    /// Of a removed member only that: merging stops at removed, so nodes
    /// may keep different last lives of it, and must still agree.
    fn hash_agreed(&self) -> u64 {
        let mut md5 = Md5::new();
        md5.update(self.node.addr.ip().octets());
        md5.update(self.node.addr.port().to_be_bytes());
        md5.update([self.state as u8]);
        if self.state != MemberState::Removed {
            md5.update(self.node.virtual_nodes.to_be_bytes());
            md5.update((self.node.zone.len() as u32).to_be_bytes());
            md5.update(self.node.zone.as_bytes());
            md5.update(self.incarnation.to_be_bytes());
            md5.update([u8::from(self.accepts_writes)]);
            if let Some(place) = self.node.place {
                md5.update(place.ip().octets());
                md5.update(place.port().to_be_bytes());
            }
        }
        u64::from_be_bytes(md5.finalize()[..8].try_into().expect("an MD5 digest has 16 bytes"))
    }

    /// What changes the agreed hash. Vnodes and zone are not here: they
    /// change only with a new incarnation.
    fn agreed(&self) -> (u64, MemberState, bool) {
        (self.incarnation, self.state, self.accepts_writes)
    }

    /// Local time its heartbeat last rose here; None if never since start.
    pub fn last_heard_ms(&self) -> Option<u64> {
        self.detector.last_heartbeat_ms()
    }

    fn digest(&self) -> MemberDigest {
        MemberDigest {
            addr: self.node.addr,
            virtual_nodes: self.node.virtual_nodes,
            incarnation: self.incarnation,
            heartbeat: self.heartbeat,
            state: self.state,
            accepts_writes: self.accepts_writes,
            zone: self.node.zone.to_string(),
            place: self.node.place,
        }
    }
}

/// What a node keeps of its member table across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMembers {
    /// Every member, this node included, as last gossiped.
    pub members: Vec<MemberDigest>,
}

#[derive(Debug, Clone)]
pub struct Members {
    me: SocketAddrV4,
    phi: PhiSettings,
    members: BTreeMap<SocketAddrV4, Member>,
    /// The wrapping sum of every member's agreed hash (see [`Heartbeats`]).
    fingerprint: u64,
    /// The live peers still to gossip with this cycle (see `gossip_targets`).
    gossip_cycle: Vec<SocketAddrV4>,
}

/// How a node answers a gossip round's opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The tables agree: how far each of our heartbeats is ahead of the
    /// opening's (mostly 0 or 1: a byte a member, where absolute beats
    /// take up to nine).
    Ahead(Heartbeats),
    /// They differ: our whole table.
    Table(Vec<MemberDigest>),
}

/// Whether `me` gossips with `m` at all (live or suspected).
fn is_peer(me: SocketAddrV4, m: &Member) -> bool {
    m.node.addr != me && m.state != MemberState::Removed
}

/// A heartbeat of a member's current life: if it rose, the member is alive.
fn hear(m: &mut Member, heartbeat: u64, now_ms: u64, events: &mut Vec<Event>) {
    if heartbeat <= m.heartbeat {
        return;
    }
    m.heartbeat = heartbeat;
    m.detector.heartbeat(now_ms);
    if m.suspected {
        m.suspected = false;
        events.push(Event::Up(m.node.addr));
    }
}

/// What another node tells of a member we know, merged into ours.
fn merge_into(m: &mut Member, d: &MemberDigest, now_ms: u64, phi: &PhiSettings, events: &mut Vec<Event>) {
    if m.state == MemberState::Removed {
        return;
    }
    let was_on_ring = m.state.on_ring();
    if (d.incarnation, d.heartbeat) > (m.incarnation, m.heartbeat) {
        if d.incarnation > m.incarnation {
            // A new life: its old intervals say nothing about this one.
            m.detector = PhiDetector::new(phi);
            // A restart with another share or zone is taken as it is now.
            if d.ring_node() != m.node && m.state.on_ring() && d.state.on_ring() {
                m.node = d.ring_node();
                events.push(Event::Joined(m.node.clone()));
            }
            m.incarnation = d.incarnation;
            m.heartbeat = 0;
        }
        if m.accepts_writes != d.accepts_writes {
            m.accepts_writes = d.accepts_writes;
            events.push(Event::Writes(d.addr, d.accepts_writes));
        }
        hear(m, d.heartbeat, now_ms, events);
    }
    if d.state > m.state {
        m.state = d.state;
        if was_on_ring && !m.state.on_ring() {
            events.push(Event::Left(d.addr));
        }
    }
}

impl Members {
    /// A table of this node alone, in `state`, at `incarnation`.
    pub fn new(me: RingNode, state: MemberState, incarnation: u64, phi: PhiSettings, now_ms: u64) -> Self {
        let addr = me.addr;
        let mut mine = Member::new(me, state, incarnation, 1, &phi);
        mine.detector.heartbeat(now_ms);
        let mut table = Members { me: addr, phi, members: BTreeMap::new(), fingerprint: 0, gossip_cycle: Vec::new() };
        table.insert(mine);
        table
    }

    fn insert(&mut self, m: Member) {
        self.fingerprint = self.fingerprint.wrapping_add(m.agreed_hash);
        self.members.insert(m.node.addr, m);
    }

    /// Runs `change` on a member, keeping its agreed hash and the table's
    /// fingerprint true.
    fn change<R>(&mut self, addr: &SocketAddrV4, change: impl FnOnce(&mut Member) -> R) -> Option<R> {
        let m = self.members.get_mut(addr)?;
        let before = m.agreed();
        let result = change(m);
        if m.agreed() != before {
            let new = m.hash_agreed();
            self.fingerprint = self.fingerprint.wrapping_sub(m.agreed_hash).wrapping_add(new);
            m.agreed_hash = new;
        }
        Some(result)
    }

    /// The table a node comes back with after a restart: its own entry at
    /// the next incarnation (its state as saved: a removed node stays
    /// removed), and every other member as saved, suspected until heard.
    pub fn restore(me: RingNode, saved: &SavedMembers, phi: PhiSettings, now_ms: u64) -> Self {
        let mine = saved.members.iter().find(|d| d.addr == me.addr);
        // A node that took another's place keeps it across restarts.
        let place = me.place.or(mine.and_then(|d| d.place));
        let me = me.in_place_of(place);
        // Over the data of the node it replaces, it is where that node was.
        let replaced = place.and_then(|p| saved.members.iter().find(|d| d.addr == p && d.state.on_ring()));
        let state = mine.or(replaced).map_or(MemberState::Joining, |d| d.state);
        let incarnation = mine.map_or(0, |d| d.incarnation) + 1;
        let addr = me.addr;
        let mut table = Members::new(me, state, incarnation, phi, now_ms);
        for d in saved.members.iter().filter(|d| d.addr != addr) {
            let mut m = Member::from_digest(d, &phi);
            m.suspected = true;
            table.insert(m);
        }
        // The data dir of the node this one replaced: that node is gone.
        if let Some(replaced) = place {
            let vnodes = saved.members.iter().find(|d| d.addr == replaced).map_or(0, |d| d.virtual_nodes);
            table.retire(replaced, vnodes);
        }
        table
    }

    pub fn save(&self) -> SavedMembers {
        SavedMembers { members: self.digests() }
    }

    pub fn me(&self) -> SocketAddrV4 {
        self.me
    }

    pub fn my_state(&self) -> MemberState {
        self.members[&self.me].state
    }

    pub fn get(&self, addr: &SocketAddrV4) -> Option<&Member> {
        self.members.get(addr)
    }

    pub fn list(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    pub fn phi(&self, addr: &SocketAddrV4, now_ms: u64) -> f64 {
        match self.members.get(addr) {
            Some(_) if *addr == self.me => 0.0,
            Some(m) => m.detector.phi(now_ms, &self.phi),
            None => f64::INFINITY,
        }
    }

    pub fn is_up(&self, addr: &SocketAddrV4) -> bool {
        self.members.get(addr).is_some_and(|m| m.state.on_ring() && !m.suspected)
    }

    /// The nodes on the ring: every member joining or up.
    pub fn ring_nodes(&self) -> Vec<RingNode> {
        self.members.values().filter(|m| m.state.on_ring()).map(|m| m.node.clone()).collect()
    }

    /// The members suspected down (on the ring or still leaving).
    pub fn down_nodes(&self) -> Vec<SocketAddrV4> {
        self.members.values().filter(|m| m.state != MemberState::Removed && m.suspected).map(|m| m.node.addr).collect()
    }

    /// Members on the ring whose stores take no writes now.
    pub fn read_only_nodes(&self) -> Vec<SocketAddrV4> {
        self.members.values().filter(|m| m.state.on_ring() && !m.accepts_writes).map(|m| m.node.addr).collect()
    }

    /// Whether this node's store takes writes, told to others by gossip.
    pub fn set_my_writes(&mut self, accepts: bool) -> Vec<Event> {
        let me = self.me;
        let changed = self.change(&me, |m| std::mem::replace(&mut m.accepts_writes, accepts) != accepts);
        if changed != Some(true) {
            return Vec::new();
        }
        vec![Event::Writes(me, accepts)]
    }

    /// Other members this node may contact: every one not removed.
    pub fn contacts(&self) -> Vec<SocketAddrV4> {
        self.members.values().filter(|m| m.node.addr != self.me && m.state != MemberState::Removed).map(|m| m.node.addr).collect()
    }

    /// Other members heard from lately (not suspected, not removed).
    pub fn live_peers(&self) -> usize {
        self.members.values().filter(|m| m.node.addr != self.me && m.state != MemberState::Removed && !m.suspected).count()
    }

    pub fn digests(&self) -> Vec<MemberDigest> {
        self.members.values().map(Member::digest).collect()
    }

    /// A gossip round's opening: the table in brief.
    pub fn heartbeats(&self) -> Heartbeats {
        Heartbeats { table: self.fingerprint, beats: self.members.values().map(|m| m.heartbeat).collect() }
    }

    /// Merges a peer's heartbeats if its table agrees with ours on all
    /// else (then the i-th beat is our i-th member's); None if it does not.
    pub fn merge_heartbeats(&mut self, theirs: &Heartbeats, now_ms: u64) -> Option<Vec<Event>> {
        if theirs.table != self.fingerprint || theirs.beats.len() != self.members.len() {
            return None;
        }
        let mut events = Vec::new();
        for (m, &beat) in self.members.values_mut().zip(&theirs.beats) {
            if m.node.addr == self.me {
                // Someone saw a later beat of this life than ours: move past it.
                if beat > m.heartbeat {
                    m.heartbeat = beat + 1;
                }
            } else if m.state != MemberState::Removed {
                hear(m, beat, now_ms, &mut events);
            }
        }
        Some(events)
    }

    /// A peer opened a gossip round: merge its heartbeats and answer with
    /// ours, or, if our tables differ, answer with our whole table.
    pub fn answer(&mut self, opening: &Heartbeats, now_ms: u64) -> (Answer, Vec<Event>) {
        match self.merge_heartbeats(opening, now_ms) {
            Some(events) => {
                let ahead = self.members.values().zip(&opening.beats).map(|(m, theirs)| m.heartbeat.saturating_sub(*theirs));
                (Answer::Ahead(Heartbeats { table: self.fingerprint, beats: ahead.collect() }), events)
            }
            None => (Answer::Table(self.digests()), Vec::new()),
        }
    }

    /// The opener's side of a round: takes the answer to `opening`, and
    /// answers the delta to send back (what we know newer than the table
    /// we were sent; nothing after heartbeats).
    pub fn take_answer(&mut self, opening: &Heartbeats, answer: &Answer, now_ms: u64) -> (Vec<Event>, Vec<MemberDigest>) {
        match answer {
            Answer::Ahead(ahead) if ahead.beats.len() == opening.beats.len() => {
                let beats = opening.beats.iter().zip(&ahead.beats).map(|(sent, ahead)| sent.saturating_add(*ahead)).collect();
                // Our table may have changed since we opened: then the
                // beats are not ours to place, and the next round will do.
                let events = self.merge_heartbeats(&Heartbeats { table: ahead.table, beats }, now_ms);
                (events.unwrap_or_default(), Vec::new())
            }
            Answer::Ahead(_) => (Vec::new(), Vec::new()),
            Answer::Table(table) => {
                let events = self.merge(table, now_ms);
                (events, self.newer_than(table))
            }
        }
    }

    /// Our entries that are not as in `theirs`: after merging theirs into
    /// ours, what we know newer (or what their merge would keep final).
    pub fn newer_than(&self, theirs: &[MemberDigest]) -> Vec<MemberDigest> {
        let theirs: BTreeMap<SocketAddrV4, &MemberDigest> = theirs.iter().map(|d| (d.addr, d)).collect();
        self.members.values().map(Member::digest).filter(|d| theirs.get(&d.addr) != Some(&d)).collect()
    }

    /// One gossip period: bump our heartbeat, suspect the silent.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let phi = self.phi;
        for (addr, m) in self.members.iter_mut() {
            if *addr == self.me {
                m.heartbeat += 1;
                m.detector.heartbeat(now_ms);
            } else if m.state != MemberState::Removed && !m.suspected && m.detector.is_suspect(now_ms, &phi) {
                m.suspected = true;
                events.push(Event::Down(*addr));
            }
        }
        events
    }

    /// Merges another node's table into ours.
    pub fn merge(&mut self, digests: &[MemberDigest], now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        for d in digests {
            if d.addr == self.me {
                self.merge_about_me(d, &mut events);
            } else {
                self.merge_member(d, now_ms, &mut events);
            }
            if let Some(replaced) = d.place.filter(|p| *p != d.addr && d.state.on_ring()) {
                events.extend(self.retire(replaced, d.virtual_nodes));
            }
        }
        events
    }

    /// A member another took the place of: removed for good, at once (its
    /// place is held; nothing of it is to hand over). Kept in the table if
    /// it was not there, so it never rejoins under its old address.
    fn retire(&mut self, addr: SocketAddrV4, virtual_nodes: u16) -> Vec<Event> {
        if !self.members.contains_key(&addr) {
            let retired = Member::new(RingNode::new(addr, virtual_nodes), MemberState::Removed, 0, 0, &self.phi);
            self.insert(retired);
            return Vec::new();
        }
        let step = self.change(&addr, |m| {
            let was_on_ring = m.state.on_ring();
            (m.state < MemberState::Removed).then(|| {
                m.state = MemberState::Removed;
                was_on_ring
            })
        });
        match (step, addr == self.me) {
            (Some(Some(_)), true) => vec![Event::MyState(MemberState::Removed)],
            (Some(Some(true)), false) => vec![Event::Left(addr)],
            _ => Vec::new(),
        }
    }

    fn merge_about_me(&mut self, d: &MemberDigest, events: &mut Vec<Event>) {
        let me = self.me;
        self.change(&me, |me| {
            if (d.incarnation, d.heartbeat) > (me.incarnation, me.heartbeat) {
                // Others remember a later life of ours than we do (our data
                // dir was wiped): start the one after it, so our news wins,
                // vnodes and zone as they are now included.
                me.incarnation = d.incarnation + 1;
            }
            if d.state > me.state {
                // Removed (or leaving) by an operator at another node.
                me.state = d.state;
                events.push(Event::MyState(d.state));
            }
        });
    }

    fn merge_member(&mut self, d: &MemberDigest, now_ms: u64, events: &mut Vec<Event>) {
        let phi = self.phi;
        if self.change(&d.addr, |m| merge_into(m, d, now_ms, &phi, events)).is_some() {
            return;
        }
        let mut m = Member::from_digest(d, &phi);
        m.detector.heartbeat(now_ms);
        if d.state.on_ring() {
            events.push(Event::Joined(m.node.clone()));
        }
        self.insert(m);
    }

    /// An operator's removal of `addr`: a member heard from lately leaves
    /// (hands its data over, then says it is removed); one suspected down
    /// cannot hand anything over, so it is removed at once (its buckets'
    /// new homes pull from the other replicas).
    pub fn remove(&mut self, addr: SocketAddrV4) -> Vec<Event> {
        let step = self.change(&addr, |m| {
            let target = if m.suspected { MemberState::Removed } else { MemberState::Leaving };
            let was_on_ring = m.state.on_ring();
            (m.state < target).then(|| {
                m.state = target;
                (target, was_on_ring)
            })
        });
        let Some(Some((target, was_on_ring))) = step else { return Vec::new() };
        match (addr == self.me, was_on_ring) {
            (true, _) => vec![Event::MyState(target)],
            (false, true) => vec![Event::Left(addr)],
            (false, false) => Vec::new(),
        }
    }

    /// This node's own step forward: joining to up once its buckets are
    /// pulled, leaving to removed once they are handed over.
    pub fn advance_me(&mut self, state: MemberState) -> Vec<Event> {
        let me = self.me;
        let advanced = self.change(&me, |m| (state > m.state).then(|| m.state = state));
        match advanced {
            Some(Some(())) => vec![Event::MyState(state)],
            _ => Vec::new(),
        }
    }

    /// Whom to gossip with this period: the next live peer in turn (each
    /// cycle in a new random order), and now and then a suspected one as
    /// well, so a healed partition finds its way back. In turn, not at
    /// random, and the suspected one besides, not instead: two live members
    /// then hear each other at least once in any two cycles, however small
    /// the cluster. A random pick left gaps of several periods that the
    /// failure detector took for failures (simulated, three nodes with one
    /// stopped: the two left suspected each other about five times an
    /// hour).
    pub fn gossip_targets(&mut self, rng: &mut impl Rng) -> Vec<SocketAddrV4> {
        let down: Vec<SocketAddrV4> =
            self.members.values().filter(|m| is_peer(self.me, m) && m.suspected).map(|m| m.node.addr).collect();
        let mut targets: Vec<SocketAddrV4> = self.next_live_peer(rng).into_iter().collect();
        if !down.is_empty() && (targets.is_empty() || rng.gen_bool(0.2)) {
            targets.extend(down.choose(rng));
        }
        targets
    }

    fn next_live_peer(&mut self, rng: &mut impl Rng) -> Option<SocketAddrV4> {
        let live = |m: &Member| is_peer(self.me, m) && !m.suspected;
        if !self.members.values().any(live) {
            return None;
        }
        loop {
            match self.gossip_cycle.pop() {
                Some(peer) if self.members.get(&peer).is_some_and(live) => return Some(peer),
                Some(_) => {}
                None => {
                    self.gossip_cycle = self.members.values().filter(|m| live(m)).map(|m| m.node.addr).collect();
                    self.gossip_cycle.shuffle(rng);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::net::Ipv4Addr;

    fn addr(i: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 20000 + i)
    }

    fn phi() -> PhiSettings {
        PhiSettings::for_interval(8.0, 1000)
    }

    fn table(i: u16) -> Members {
        Members::new(RingNode::new(addr(i), 8), MemberState::Up, 1, phi(), 0)
    }

    /// A table whose node has run for `beats` heartbeats.
    fn aged(i: u16, beats: u64) -> Members {
        let mut t = table(i);
        for beat in 1..=beats {
            t.tick(beat);
        }
        t
    }

    fn wire<T: Serialize>(message: &T) -> usize {
        rmp_serde::to_vec(message).unwrap().len()
    }

    /// A gossip round from `a` to `b` as the actor runs it: heartbeats,
    /// the answer, and a delta if any. Answers the bytes each end sent.
    fn exchange(tables: &mut [Members], a: usize, b: usize, now: u64) -> (usize, usize) {
        let opening = tables[a].heartbeats();
        let (answer, _) = tables[b].answer(&opening, now);
        let (_, delta) = tables[a].take_answer(&opening, &answer, now);
        let answered = match &answer {
            Answer::Ahead(ahead) => wire(ahead),
            Answer::Table(table) => wire(table),
        };
        if !delta.is_empty() {
            tables[b].merge(&delta, now);
        }
        (wire(&opening) + if delta.is_empty() { 0 } else { wire(&delta) }, answered)
    }

    /// Bytes nodes sent per round: on average, and the most by any node.
    #[derive(Debug, Default)]
    struct Sent {
        mean: usize,
        most: usize,
    }

    /// Gossips every node with one random peer, every second, until
    /// `until` holds or `limit` rounds pass; answers the rounds taken and
    /// the bytes sent.
    fn gossip_until(
        tables: &mut [Members],
        dead: &[usize],
        seed: u64,
        limit: u64,
        until: impl Fn(&[Members]) -> bool,
    ) -> (u64, Sent) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (mut total, mut most) = (0, 0);
        for round in 1..=limit {
            let now = round * 1000;
            let mut sent = vec![0usize; tables.len()];
            for i in 0..tables.len() {
                if dead.contains(&i) {
                    continue;
                }
                tables[i].tick(now);
                for peer in tables[i].gossip_targets(&mut rng) {
                    let j = (peer.port() - 20000) as usize;
                    if dead.contains(&j) {
                        sent[i] += wire(&tables[i].heartbeats());
                    } else {
                        let (by_i, by_j) = exchange(tables, i, j, now);
                        sent[i] += by_i;
                        sent[j] += by_j;
                    }
                }
            }
            total += sent.iter().sum::<usize>();
            most = most.max(sent.into_iter().max().unwrap_or(0));
            if until(tables) {
                let mean = total / (round as usize * tables.len());
                return (round, Sent { mean, most });
            }
        }
        panic!("not settled after {limit} rounds");
    }

    /// Three nodes gossiping as the actor does (each on its own tick, one
    /// round a tick, 1 s apart), for ten minutes; then one stops answering
    /// (stalled or dead) for an hour. The two left hear each other only
    /// directly now, where the third used to relay their heartbeats too:
    /// neither may suspect the other, and both must suspect the third in
    /// a bounded time. Over 20 runs with their own random choices.
    #[test]
    fn a_member_stopping_makes_no_false_suspicion_between_the_two_left() {
        let mut false_downs = Vec::new();
        let mut caught_after = Vec::new();
        for seed in 0..20 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut tables: Vec<Members> = (0..3).map(table).collect();
            for i in 0..3 {
                for j in 0..3 {
                    let digests = tables[j].digests();
                    tables[i].merge(&digests, 0);
                }
            }
            // Each node ticks at its own phase within the second.
            let phase = [0u64, 330, 670];
            let (stop_at, end) = (600u64, 600 + 3600);
            let mut suspected_at: [Option<u64>; 2] = [None, None];
            for second in 1..end {
                for i in 0..3 {
                    let now = second * 1000 + phase[i];
                    if i == 2 && second >= stop_at {
                        continue;
                    }
                    for event in tables[i].tick(now) {
                        match event {
                            Event::Down(a) if a == addr(2) && second >= stop_at => {
                                suspected_at[i].get_or_insert(now);
                            }
                            Event::Down(a) => false_downs.push((seed, i, a, now)),
                            _ => {}
                        }
                    }
                    for peer in tables[i].gossip_targets(&mut rng) {
                        let j = (peer.port() - 20000) as usize;
                        if j != 2 || second < stop_at {
                            exchange(&mut tables, i, j, now);
                        }
                    }
                }
            }
            for at in suspected_at {
                let at = at.expect("the stopped member was never suspected");
                caught_after.push(at - stop_at * 1000);
            }
        }
        let slowest = caught_after.iter().max().unwrap();
        println!(
            "3 nodes, 1 s gossip, one stopped for an hour, 20 runs: {} false suspicions between the two left; \
             the stopped one suspected within {slowest} ms",
            false_downs.len()
        );
        assert!(false_downs.is_empty(), "live members suspected (seed, by, whom, at ms): {false_downs:?}");
        assert!(*slowest <= 10_000, "the stopped member was suspected only {slowest} ms after it stopped");
    }

    #[test]
    fn merging_learns_new_members_and_fresher_heartbeats() {
        let (mut a, mut b) = (table(1), table(2));
        b.tick(10);
        let events = a.merge(&b.digests(), 10);
        assert_eq!(events, vec![Event::Joined(RingNode::new(addr(2), 8))]);
        assert_eq!(a.ring_nodes().len(), 2);
        assert!(a.merge(&b.digests(), 20).is_empty(), "nothing new the second time");
    }

    #[test]
    fn a_member_in_another_s_place_retires_it_for_good() {
        let (mut a, b) = (table(1), table(2));
        a.merge(&b.digests(), 10);
        let replacement = Members::new(RingNode::new(addr(9), 8).in_place_of(Some(addr(2))), MemberState::Joining, 1, phi(), 0);
        let events = a.merge(&replacement.digests(), 20);
        assert!(events.contains(&Event::Left(addr(2))), "{events:?}");
        assert_eq!(a.get(&addr(2)).unwrap().state, MemberState::Removed);
        let ring: Vec<SocketAddrV4> = a.ring_nodes().iter().map(|n| n.addr).collect();
        assert_eq!(ring, vec![addr(1), addr(9)], "the old address is off the ring");
        assert_eq!(a.ring_nodes()[1].position_source(), addr(2), "where the old node's virtual nodes were");
        // The old node back from the dead stays removed.
        let mut back = table(2);
        back.tick(30);
        a.merge(&back.digests(), 30);
        assert_eq!(a.get(&addr(2)).unwrap().state, MemberState::Removed);
        // One never heard of is kept as removed, so it never joins.
        let mut c = table(3);
        let stranger = Members::new(RingNode::new(addr(8), 8).in_place_of(Some(addr(7))), MemberState::Up, 1, phi(), 0);
        c.merge(&stranger.digests(), 5);
        assert_eq!(c.get(&addr(7)).unwrap().state, MemberState::Removed);
    }

    #[test]
    fn a_silent_member_is_suspected_and_comes_back_up() {
        let (mut a, mut b) = (table(1), table(2));
        for t in 0..10 {
            b.tick(t * 1000);
            a.merge(&b.digests(), t * 1000);
        }
        assert!(a.tick(10_500).is_empty(), "half a beat late is fine");
        let down_at = (10_000..30_000).step_by(100).find(|t| !a.tick(*t).is_empty()).expect("never suspected");
        assert!(down_at <= 14_000, "suspected only at {down_at}");
        assert!(!a.is_up(&addr(2)));
        assert_eq!(a.ring_nodes().len(), 2, "down is not left: still on the ring");
        b.tick(down_at + 100);
        assert_eq!(a.merge(&b.digests(), down_at + 100), vec![Event::Up(addr(2))]);
        assert!(a.is_up(&addr(2)));
    }

    #[test]
    fn a_removal_spreads_takes_the_node_off_the_ring_and_is_final() {
        let (mut a, mut b, mut c) = (table(1), table(2), table(3));
        a.merge(&c.digests(), 0);
        b.merge(&c.digests(), 0);
        c.merge(&a.digests(), 0);
        assert_eq!(a.remove(addr(3)), vec![Event::Left(addr(3))]);
        assert_eq!(a.get(&addr(3)).unwrap().state, MemberState::Leaving, "heard from lately: it hands over first");
        assert_eq!(b.merge(&a.digests(), 1), vec![Event::Joined(RingNode::new(addr(1), 8)), Event::Left(addr(3))]);
        assert_eq!(b.ring_nodes().len(), 2);
        // c learns it is leaving; once it has handed over it says removed.
        assert_eq!(
            c.merge(&b.digests(), 2),
            vec![Event::Joined(RingNode::new(addr(2), 8)), Event::MyState(MemberState::Leaving)]
        );
        assert!(!c.ring_nodes().iter().any(|n| n.addr == addr(3)));
        assert_eq!(c.advance_me(MemberState::Removed), vec![Event::MyState(MemberState::Removed)]);
        a.merge(&c.digests(), 3);
        assert_eq!(a.get(&addr(3)).unwrap().state, MemberState::Removed);
        // No later heartbeat, incarnation or state brings it back.
        let mut reborn = Members::new(RingNode::new(addr(3), 8), MemberState::Joining, 9, phi(), 4);
        reborn.tick(5);
        assert!(a.merge(&reborn.digests(), 5).is_empty());
        assert_eq!(a.get(&addr(3)).unwrap().state, MemberState::Removed);
        assert_eq!(a.ring_nodes().len(), 2);
        // And the reborn node learns what it is.
        assert!(reborn.merge(&a.digests(), 6).contains(&Event::MyState(MemberState::Removed)));
        assert_eq!(reborn.my_state(), MemberState::Removed);
    }

    #[test]
    fn removing_a_member_that_is_down_removes_it_at_once() {
        let (mut a, b) = (table(1), table(2));
        a.merge(&b.digests(), 0);
        let late = (1000..60_000).step_by(500).find(|t| !a.tick(*t).is_empty()).unwrap();
        assert!(!a.is_up(&addr(2)), "suspected at {late}");
        assert_eq!(a.remove(addr(2)), vec![Event::Left(addr(2))]);
        assert_eq!(a.get(&addr(2)).unwrap().state, MemberState::Removed);
        assert!(a.contacts().is_empty());
    }

    #[test]
    fn a_restarted_node_outbids_its_old_life_and_a_restored_table_starts_suspicious() {
        let (mut a, mut b) = (table(1), aged(2, 50));
        a.merge(&b.digests(), 50);
        b.merge(&a.digests(), 50);
        let saved = b.save();
        let mut reborn = Members::restore(RingNode::new(addr(2), 8), &saved, phi(), 60);
        assert_eq!(reborn.get(&addr(2)).unwrap().incarnation, 2);
        assert_eq!(reborn.ring_nodes().len(), 2, "it comes back knowing its cluster");
        assert_eq!(reborn.down_nodes(), vec![addr(1)], "suspected until heard from");
        assert!(reborn.merge(&a.digests(), 61).is_empty(), "the heartbeat it saved is no news");
        a.tick(61);
        assert_eq!(reborn.merge(&a.digests(), 61), vec![Event::Up(addr(1))]);
        reborn.tick(61);
        // Its heartbeat is back at 2, below the 51 a remembers, but its
        // incarnation is higher: a takes its news.
        let late = (1000..60_000).step_by(500).find(|t| !a.tick(*t).is_empty()).unwrap();
        assert_eq!(a.merge(&reborn.digests(), late + 1), vec![Event::Up(addr(2))]);
        assert_eq!(a.get(&addr(2)).unwrap().incarnation, 2);
    }

    #[test]
    fn a_wiped_node_moves_past_the_life_others_remember() {
        let (mut a, b) = (table(1), aged(2, 50));
        a.merge(&b.digests(), 50);
        // Back with an empty data dir and twice the vnodes: incarnation 1,
        // heartbeat 1 again.
        let mut wiped = Members::new(RingNode::new(addr(2), 16), MemberState::Up, 1, phi(), 60);
        wiped.merge(&a.digests(), 60);
        assert_eq!(wiped.get(&addr(2)).unwrap().incarnation, 2, "the life after the one a remembers");
        wiped.tick(61);
        assert_eq!(a.merge(&wiped.digests(), 61), vec![Event::Joined(RingNode::new(addr(2), 16))]);
        assert_eq!(a.heartbeats().table, wiped.heartbeats().table);
    }

    #[test]
    fn a_member_that_takes_no_writes_says_so_and_is_heard() {
        let (mut a, mut b) = (table(1), table(2));
        a.merge(&b.digests(), 0);
        assert_eq!(b.set_my_writes(false), vec![Event::Writes(addr(2), false)]);
        assert!(b.set_my_writes(false).is_empty());
        b.tick(10);
        assert_eq!(a.merge(&b.digests(), 10), vec![Event::Writes(addr(2), false)]);
        assert_eq!(a.read_only_nodes(), vec![addr(2)]);
        assert!(a.is_up(&addr(2)), "it still serves reads");
        b.set_my_writes(true);
        b.tick(20);
        assert_eq!(a.merge(&b.digests(), 20), vec![Event::Writes(addr(2), true)]);
        assert!(a.read_only_nodes().is_empty());
    }

    #[test]
    fn a_node_back_at_another_vnode_count_is_taken_at_it() {
        let (mut a, b) = (table(1), table(2));
        a.merge(&b.digests(), 0);
        let bigger = Members::new(RingNode::new(addr(2), 16), MemberState::Up, 2, phi(), 1);
        assert_eq!(a.merge(&bigger.digests(), 1), vec![Event::Joined(RingNode::new(addr(2), 16))]);
        assert!(a.ring_nodes().contains(&RingNode::new(addr(2), 16)));
    }

    #[test]
    fn tables_that_agree_trade_heartbeats_only_and_those_that_differ_a_table_and_a_delta() {
        let (mut a, mut b) = (table(1), table(2));
        a.merge(&b.digests(), 0);
        b.merge(&a.digests(), 0);
        assert_eq!(a.heartbeats().table, b.heartbeats().table, "one table, in whatever order it was learned");
        // Agreeing: heartbeats alone, and a silent member's beat revives it.
        let late = (1000..60_000).step_by(500).find(|t| !a.tick(*t).is_empty()).unwrap();
        assert!(!a.is_up(&addr(2)));
        assert_eq!(b.tick(late), vec![Event::Down(addr(1))], "b has not heard from a either");
        let opening = a.heartbeats();
        let (answer, events) = b.answer(&opening, late);
        assert_eq!(events, vec![Event::Up(addr(1))]);
        let Answer::Ahead(ahead) = &answer else { panic!("agreeing tables answered with {answer:?}") };
        assert!(ahead.beats.iter().all(|beat| *beat <= 1), "{ahead:?}");
        assert_eq!(a.take_answer(&opening, &answer, late), (vec![Event::Up(addr(2))], Vec::new()));
        assert_eq!(a.get(&addr(2)).unwrap().heartbeat, b.get(&addr(2)).unwrap().heartbeat);
        // b takes no writes: the fingerprints part, b answers with its
        // table, a learns from it and has nothing newer to send back.
        b.set_my_writes(false);
        b.tick(late + 1);
        assert_ne!(a.heartbeats().table, b.heartbeats().table);
        let opening = a.heartbeats();
        let (answer, _) = b.answer(&opening, late + 1);
        let Answer::Table(_) = &answer else { panic!("differing tables answered with {answer:?}") };
        let (events, delta) = a.take_answer(&opening, &answer, late + 1);
        assert_eq!(events, vec![Event::Writes(addr(2), false)]);
        assert!(delta.iter().all(|d| d.addr == addr(1)), "only what a knows newer: {delta:?}");
        b.merge(&delta, late + 1);
        assert_eq!(a.heartbeats().table, b.heartbeats().table);
        // a learns of c; opening to b, it is answered with b's table and
        // sends c back as the delta.
        let c = table(3);
        a.merge(&c.digests(), late + 2);
        let opening = a.heartbeats();
        let (answer, _) = b.answer(&opening, late + 2);
        let (_, delta) = a.take_answer(&opening, &answer, late + 2);
        assert!(delta.iter().any(|d| d.addr == addr(3)), "{delta:?}");
        assert_eq!(b.merge(&delta, late + 2), vec![Event::Joined(RingNode::new(addr(3), 8))]);
        assert_eq!(a.heartbeats().table, b.heartbeats().table);
    }

    #[test]
    fn tables_agree_on_a_removed_member_whatever_life_of_it_they_kept() {
        let (mut a, mut b, c) = (table(1), table(2), table(3));
        a.merge(&b.digests(), 0);
        b.merge(&a.digests(), 0);
        // a hears of c's first life, b of a later one, then both of its
        // removal: merging stops at removed, their entries keep the lives.
        a.merge(&c.digests(), 1);
        let later = Members::new(RingNode::new(addr(3), 16), MemberState::Up, 5, phi(), 1);
        b.merge(&later.digests(), 1);
        let mut removed = later.digests();
        removed[0].state = MemberState::Removed;
        a.merge(&removed, 2);
        removed[0].incarnation = 9;
        b.merge(&removed, 2);
        assert_ne!(a.get(&addr(3)).unwrap().incarnation, b.get(&addr(3)).unwrap().incarnation);
        assert_eq!(a.heartbeats().table, b.heartbeats().table, "a removed member's last life must not part the tables");
        // A table kept across a restart, with a member taking no writes,
        // comes back agreeing with the table it was saved from.
        b.set_my_writes(false);
        let saved = b.save();
        let restored = Members::restore(RingNode::new(addr(1), 8), &saved, phi(), 3);
        assert!(!restored.get(&addr(2)).unwrap().accepts_writes);
    }

    #[test]
    fn heartbeats_from_a_table_that_has_changed_since_are_not_placed() {
        let (mut a, mut b) = (table(1), table(2));
        a.merge(&b.digests(), 0);
        b.merge(&a.digests(), 0);
        let opening = a.heartbeats();
        let (answer, _) = b.answer(&opening, 1);
        // a learns of another member before the answer arrives.
        a.merge(&table(0).digests(), 1);
        let before = a.get(&addr(2)).unwrap().heartbeat;
        b.tick(2);
        let Answer::Ahead(mut ahead) = answer else { panic!() };
        ahead.beats.iter_mut().for_each(|beat| *beat += 10);
        assert_eq!(a.take_answer(&opening, &Answer::Ahead(ahead), 2), (Vec::new(), Vec::new()));
        assert_eq!(a.get(&addr(2)).unwrap().heartbeat, before, "a beat placed by position into another table");
    }

    /// 128 nodes linked in a line (each told only of the one before it, as
    /// a chain of `check_node`s would); every round each node gossips with
    /// one random peer it knows. Report and bound the rounds to agree.
    #[test]
    fn a_large_cluster_agrees_in_few_rounds() {
        let n = 128u16;
        let mut tables: Vec<Members> = (0..n).map(table).collect();
        for i in 1..n as usize {
            let before = tables[i - 1].digests();
            tables[i].merge(&before, 0);
        }
        let (rounds, _) = gossip_until(&mut tables, &[], 7, 40, |ts| ts.iter().all(|t| t.ring_nodes().len() == n as usize));
        println!("{n} nodes agreed on membership after {rounds} gossip rounds");
        assert!(rounds <= 20, "{rounds} rounds is slow for {n} nodes");
    }

    /// 1,000 nodes that all know each other; one joins through a single
    /// node, and later one dies. Reports the rounds until every node knows
    /// (target O(log n)) and the bytes a node sends per round: heartbeats
    /// while tables agree, a table and a delta only while they differ.
    #[test]
    fn a_thousand_nodes_learn_of_a_join_and_a_failure() {
        let n = 1000u16;
        let mut tables: Vec<Members> = (0..n).map(table).collect();
        // Heartbeats as of a cluster up for a month (a beat a second):
        // absolute beats then take five bytes each on the wire.
        for (i, t) in tables.iter_mut().enumerate() {
            t.members.get_mut(&addr(i as u16)).unwrap().heartbeat = 2_600_000 + i as u64;
        }
        let all: Vec<MemberDigest> = tables.iter().flat_map(|t| t.digests()).collect();
        for t in tables.iter_mut() {
            t.merge(&all, 0);
        }
        let joiner = n as usize;
        tables.push(table(n));
        let first = tables[0].digests();
        tables[joiner].merge(&first, 0);
        let agreed = |ts: &[Members]| ts.iter().all(|t| t.heartbeats().table == ts[0].heartbeats().table);
        let (joined, join) = gossip_until(&mut tables, &[], 11, 60, |ts| agreed(ts));
        let steady_rounds = std::cell::Cell::new(0);
        let (_, steady) = gossip_until(&mut tables, &[], 12, 10, |_| {
            steady_rounds.set(steady_rounds.get() + 1);
            steady_rounds.get() == 10
        });
        let dead = 500usize;
        let (failed, failure) = gossip_until(&mut tables, &[dead], 13, 60, |ts| {
            ts.iter().enumerate().filter(|(i, _)| *i != dead).all(|(_, t)| !t.is_up(&addr(dead as u16)))
        });
        let whole_table = wire(&tables[0].digests());
        println!(
            "{} nodes (one whole table: {whole_table} bytes; bytes a node sends a round, mean and most):\n  \
             a join known to all after {joined} rounds, meanwhile {} and {}\n  \
             tables agreeing: {} and {}\n  \
             a failure known to all after {failed} rounds, meanwhile {} and {}",
            n + 1,
            join.mean,
            join.most,
            steady.mean,
            steady.most,
            failure.mean,
            failure.most,
        );
        assert!(joined <= 25, "{joined} rounds for a join");
        assert!(failed <= 25, "{failed} rounds for a failure");
        // A push-pull of whole tables would send two tables a node a round.
        assert!(steady.mean < whole_table / 2, "agreeing tables still trade whole tables: {steady:?}");
        assert!(failure.mean < whole_table / 2, "a failure needs no table: {failure:?}");
    }
}

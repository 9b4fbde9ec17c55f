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

use super::phi::{PhiDetector, PhiSettings};
use crate::api::{MemberDigest, MemberState};
use crate::hash::RingNode;
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
}

impl Member {
    fn new(node: RingNode, state: MemberState, incarnation: u64, heartbeat: u64, phi: &PhiSettings) -> Self {
        Member { node, state, incarnation, heartbeat, suspected: false, accepts_writes: true, detector: PhiDetector::new(phi) }
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
}

impl Members {
    /// A table of this node alone, in `state`, at `incarnation`.
    pub fn new(me: RingNode, state: MemberState, incarnation: u64, phi: PhiSettings, now_ms: u64) -> Self {
        let addr = me.addr;
        let mut mine = Member::new(me, state, incarnation, 1, &phi);
        mine.detector.heartbeat(now_ms);
        Members { me: addr, phi, members: BTreeMap::from([(addr, mine)]) }
    }

    /// The table a node comes back with after a restart: its own entry at
    /// the next incarnation (its state as saved: a removed node stays
    /// removed), and every other member as saved, suspected until heard.
    pub fn restore(me: RingNode, saved: &SavedMembers, phi: PhiSettings, now_ms: u64) -> Self {
        let mine = saved.members.iter().find(|d| d.addr == me.addr);
        let state = mine.map_or(MemberState::Joining, |d| d.state);
        let incarnation = mine.map_or(0, |d| d.incarnation) + 1;
        let mut table = Members::new(me, state, incarnation, phi, now_ms);
        for d in saved.members.iter().filter(|d| d.addr != table.me) {
            let mut m = Member::new(d.ring_node(), d.state, d.incarnation, d.heartbeat, &phi);
            m.suspected = true;
            table.members.insert(d.addr, m);
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
        let me = self.members.get_mut(&self.me).expect("self is a member");
        if me.accepts_writes == accepts {
            return Vec::new();
        }
        me.accepts_writes = accepts;
        vec![Event::Writes(self.me, accepts)]
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
        }
        events
    }

    fn merge_about_me(&mut self, d: &MemberDigest, events: &mut Vec<Event>) {
        let me = self.members.get_mut(&self.me).expect("self is a member");
        if (d.incarnation, d.heartbeat) >= (me.incarnation, me.heartbeat) {
            // Others remember a later life of ours than we do (our data dir
            // was wiped): move past it so our news wins.
            me.incarnation = d.incarnation;
            me.heartbeat = d.heartbeat + 1;
        }
        if d.state > me.state {
            // Removed (or leaving) by an operator at another node.
            me.state = d.state;
            events.push(Event::MyState(d.state));
        }
    }

    fn merge_member(&mut self, d: &MemberDigest, now_ms: u64, events: &mut Vec<Event>) {
        let phi = self.phi;
        let Some(m) = self.members.get_mut(&d.addr) else {
            let node = d.ring_node();
            let mut m = Member::new(node.clone(), d.state, d.incarnation, d.heartbeat, &phi);
            m.accepts_writes = d.accepts_writes;
            m.detector.heartbeat(now_ms);
            self.members.insert(d.addr, m);
            if d.state.on_ring() {
                events.push(Event::Joined(node));
            }
            return;
        };
        if m.state == MemberState::Removed {
            return;
        }
        let was_on_ring = m.state.on_ring();
        if (d.incarnation, d.heartbeat) > (m.incarnation, m.heartbeat) {
            if d.incarnation > m.incarnation {
                // A new life: its old intervals say nothing about this one.
                m.detector = PhiDetector::new(&phi);
                // A restart with another share or zone is taken as it is now.
                if d.ring_node() != m.node && m.state.on_ring() && d.state.on_ring() {
                    m.node = d.ring_node();
                    events.push(Event::Joined(m.node.clone()));
                }
            }
            m.incarnation = d.incarnation;
            m.heartbeat = d.heartbeat;
            m.detector.heartbeat(now_ms);
            if m.accepts_writes != d.accepts_writes {
                m.accepts_writes = d.accepts_writes;
                events.push(Event::Writes(d.addr, d.accepts_writes));
            }
            if m.suspected {
                m.suspected = false;
                events.push(Event::Up(d.addr));
            }
        }
        if d.state > m.state {
            m.state = d.state;
            if was_on_ring && !m.state.on_ring() {
                events.push(Event::Left(d.addr));
            }
        }
    }

    /// An operator's removal of `addr`: a member heard from lately leaves
    /// (hands its data over, then says it is removed); one suspected down
    /// cannot hand anything over, so it is removed at once (its buckets'
    /// new homes pull from the other replicas).
    pub fn remove(&mut self, addr: SocketAddrV4) -> Vec<Event> {
        let Some(m) = self.members.get_mut(&addr) else { return Vec::new() };
        let target = if m.suspected { MemberState::Removed } else { MemberState::Leaving };
        if m.state >= target {
            return Vec::new();
        }
        let was_on_ring = m.state.on_ring();
        m.state = target;
        match (addr == self.me, was_on_ring) {
            (true, _) => vec![Event::MyState(target)],
            (false, true) => vec![Event::Left(addr)],
            (false, false) => Vec::new(),
        }
    }

    /// This node's own step forward: joining to up once its buckets are
    /// pulled, leaving to removed once they are handed over.
    pub fn advance_me(&mut self, state: MemberState) -> Vec<Event> {
        let me = self.members.get_mut(&self.me).expect("self is a member");
        if state <= me.state {
            return Vec::new();
        }
        me.state = state;
        vec![Event::MyState(state)]
    }

    /// Whom to gossip with this period: a random live peer, or now and then
    /// a suspected one, so a healed partition finds its way back.
    pub fn gossip_target(&self, rng: &mut impl Rng) -> Option<SocketAddrV4> {
        let peers: Vec<&Member> =
            self.members.values().filter(|m| m.node.addr != self.me && m.state != MemberState::Removed).collect();
        let live: Vec<SocketAddrV4> = peers.iter().filter(|m| !m.suspected).map(|m| m.node.addr).collect();
        let down: Vec<SocketAddrV4> = peers.iter().filter(|m| m.suspected).map(|m| m.node.addr).collect();
        if !down.is_empty() && (live.is_empty() || rng.gen_bool(0.2)) {
            return down.choose(rng).copied();
        }
        live.choose(rng).copied()
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

    /// A push-pull exchange between two tables.
    fn exchange(tables: &mut [Members], a: usize, b: usize, now: u64) {
        let from_a = tables[a].digests();
        tables[b].merge(&from_a, now);
        let from_b = tables[b].digests();
        tables[a].merge(&from_b, now);
    }

    /// Gossips every node with one random peer, every second, until
    /// `until` holds or `limit` rounds pass; answers the rounds taken.
    fn gossip_until(tables: &mut [Members], dead: &[usize], seed: u64, limit: u64, until: impl Fn(&[Members]) -> bool) -> u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for round in 1..=limit {
            let now = round * 1000;
            for i in 0..tables.len() {
                if dead.contains(&i) {
                    continue;
                }
                tables[i].tick(now);
                if let Some(peer) = tables[i].gossip_target(&mut rng) {
                    let j = (peer.port() - 20000) as usize;
                    if !dead.contains(&j) {
                        exchange(tables, i, j, now);
                    }
                }
            }
            if until(tables) {
                return round;
            }
        }
        panic!("not settled after {limit} rounds");
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
        let mut wiped = table(2); // incarnation 1, heartbeat 1 again
        wiped.merge(&a.digests(), 60);
        let me = wiped.get(&addr(2)).unwrap();
        assert!(me.heartbeat > 51, "heartbeat {}", me.heartbeat);
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
        let rounds = gossip_until(&mut tables, &[], 7, 40, |ts| ts.iter().all(|t| t.ring_nodes().len() == n as usize));
        println!("{n} nodes agreed on membership after {rounds} gossip rounds");
        assert!(rounds <= 20, "{rounds} rounds is slow for {n} nodes");
    }

    /// 1,000 nodes that all know each other; one joins through a single
    /// node, and later one dies. Reports the rounds until every node knows
    /// (target O(log n)) and the bytes each node sends per round.
    #[test]
    fn a_thousand_nodes_learn_of_a_join_and_a_failure() {
        let n = 1000u16;
        let mut tables: Vec<Members> = (0..n).map(table).collect();
        let all: Vec<MemberDigest> = tables.iter().flat_map(|t| t.digests()).collect();
        for t in tables.iter_mut() {
            t.merge(&all, 0);
        }
        let joiner = n as usize;
        tables.push(table(n));
        let first = tables[0].digests();
        tables[joiner].merge(&first, 0);
        let joined = gossip_until(&mut tables, &[], 11, 60, |ts| ts.iter().all(|t| t.get(&addr(n)).is_some()));
        let dead = 500usize;
        let failed = gossip_until(&mut tables, &[dead], 13, 60, |ts| {
            ts.iter().enumerate().filter(|(i, _)| *i != dead).all(|(_, t)| !t.is_up(&addr(dead as u16)))
        });
        let bytes = rmp_serde::to_vec(&tables[0].digests()).unwrap().len();
        println!(
            "{} nodes: a join known to all after {joined} rounds, a failure after {failed} rounds; \
             one gossip message is {bytes} bytes (each node sends one and answers one per round on average: ~{} KiB/round)",
            n + 1,
            2 * bytes / 1024
        );
        assert!(joined <= 25, "{joined} rounds for a join");
        assert!(failed <= 25, "{failed} rounds for a failure");
    }
}

//! The member table and its gossip: a pure state machine. Time comes in as
//! an argument, messages go out as values, so a whole cluster can be
//! simulated in a unit test.
//!
//! Every node bumps its own heartbeat each tick. Gossip exchanges tables;
//! an entry merges by the higher heartbeat. A member whose heartbeat has
//! not risen for `down_after_ms` is marked down; it keeps its place on the
//! ring (down is not left) and comes back up when its heartbeat rises.
//! Only an explicit leave takes a node off the ring, and that news also
//! spreads by gossip. Left is final for an address (whatever heartbeats
//! say later), so a removal is never undone by a node that has not heard
//! of it yet; a removed node comes back under a new address.

use crate::hash::RingNode;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddrV4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Up,
    Down,
}

/// One member as gossip carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub addr: SocketAddrV4,
    pub virtual_nodes: u16,
    pub heartbeat: u64,
    pub left: bool,
}

/// What changed in the table, for the actor to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A node is on the ring now.
    Joined(RingNode),
    /// A node left the ring for good.
    Left(SocketAddrV4),
    /// A node on the ring stopped answering, or came back.
    Down(SocketAddrV4),
    Up(SocketAddrV4),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node: RingNode,
    pub status: Status,
    pub heartbeat: u64,
    pub left: bool,
    /// Local time the heartbeat last rose.
    pub last_rise_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Members {
    me: SocketAddrV4,
    down_after_ms: u64,
    members: BTreeMap<SocketAddrV4, Member>,
}

impl Members {
    pub fn new(me: RingNode, down_after_ms: u64, now_ms: u64) -> Self {
        let mut members = BTreeMap::new();
        let addr = me.addr;
        members.insert(addr, Member { node: me, status: Status::Up, heartbeat: 1, left: false, last_rise_ms: now_ms });
        Members { me: addr, down_after_ms, members }
    }

    pub fn me(&self) -> SocketAddrV4 {
        self.me
    }

    pub fn list(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    pub fn is_up(&self, addr: &SocketAddrV4) -> bool {
        self.members.get(addr).is_some_and(|m| m.status == Status::Up && !m.left)
    }

    /// The nodes on the ring: every member that has not left.
    pub fn ring_nodes(&self) -> Vec<RingNode> {
        self.members.values().filter(|m| !m.left).map(|m| m.node.clone()).collect()
    }

    /// The nodes on the ring that are down now.
    pub fn down_nodes(&self) -> Vec<SocketAddrV4> {
        self.members.values().filter(|m| !m.left && m.status == Status::Down).map(|m| m.node.addr).collect()
    }

    pub fn digests(&self) -> Vec<Digest> {
        self.members
            .values()
            .map(|m| Digest { addr: m.node.addr, virtual_nodes: m.node.virtual_nodes, heartbeat: m.heartbeat, left: m.left })
            .collect()
    }

    /// One gossip period: bump our heartbeat, mark silent members down.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        for (addr, m) in self.members.iter_mut() {
            if *addr == self.me {
                m.heartbeat += 1;
                m.last_rise_ms = now_ms;
            } else if !m.left && m.status == Status::Up && now_ms.saturating_sub(m.last_rise_ms) > self.down_after_ms {
                m.status = Status::Down;
                events.push(Event::Down(*addr));
            }
        }
        events
    }

    /// Merges another node's table into ours.
    pub fn merge(&mut self, digests: &[Digest], now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        for d in digests {
            if d.addr == self.me {
                let me = self.members.get_mut(&self.me).expect("self is a member");
                if d.left && !me.left {
                    // We were removed from the ring.
                    me.left = true;
                    events.push(Event::Left(self.me));
                } else if d.heartbeat >= me.heartbeat && !me.left {
                    // Others hold an old heartbeat of ours (we restarted and
                    // began again from 1): jump past it so our news wins.
                    me.heartbeat = d.heartbeat + 1;
                }
                continue;
            }
            match self.members.get_mut(&d.addr) {
                None => {
                    let node = RingNode::new(d.addr, d.virtual_nodes);
                    self.members.insert(
                        d.addr,
                        Member {
                            node: node.clone(),
                            status: Status::Up,
                            heartbeat: d.heartbeat,
                            left: d.left,
                            last_rise_ms: now_ms,
                        },
                    );
                    if !d.left {
                        events.push(Event::Joined(node));
                    }
                }
                Some(m) if m.left => {}
                Some(m) => {
                    if d.left {
                        m.left = true;
                        events.push(Event::Left(d.addr));
                    } else if d.heartbeat > m.heartbeat {
                        m.heartbeat = d.heartbeat;
                        m.last_rise_ms = now_ms;
                        if m.status == Status::Down {
                            m.status = Status::Up;
                            events.push(Event::Up(d.addr));
                        }
                    }
                }
            }
        }
        events
    }

    /// Marks a node as leaving the ring (an operator's explicit removal).
    pub fn leave(&mut self, addr: SocketAddrV4) -> Vec<Event> {
        match self.members.get_mut(&addr) {
            Some(m) if !m.left => {
                m.left = true;
                m.heartbeat += 1;
                vec![Event::Left(addr)]
            }
            _ => Vec::new(),
        }
    }

    /// Whom to gossip with this period: a random live peer, or now and then
    /// a down one, so a healed partition finds its way back.
    pub fn gossip_target(&self, rng: &mut impl Rng) -> Option<SocketAddrV4> {
        let peers: Vec<&Member> = self.members.values().filter(|m| m.node.addr != self.me && !m.left).collect();
        let live: Vec<SocketAddrV4> = peers.iter().filter(|m| m.status == Status::Up).map(|m| m.node.addr).collect();
        let down: Vec<SocketAddrV4> = peers.iter().filter(|m| m.status == Status::Down).map(|m| m.node.addr).collect();
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

    fn table(i: u16) -> Members {
        Members::new(RingNode::new(addr(i), 8), 3000, 0)
    }

    /// A push-pull exchange between two tables.
    fn exchange(tables: &mut [Members], a: usize, b: usize, now: u64) {
        let from_a = tables[a].digests();
        tables[b].merge(&from_a, now);
        let from_b = tables[b].digests();
        tables[a].merge(&from_b, now);
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
    fn a_silent_member_goes_down_and_comes_back_up() {
        let (mut a, mut b) = (table(1), table(2));
        a.merge(&b.digests(), 0);
        assert!(a.tick(2000).is_empty());
        assert_eq!(a.tick(3500), vec![Event::Down(addr(2))]);
        assert!(!a.is_up(&addr(2)));
        assert_eq!(a.ring_nodes().len(), 2, "down is not left: still on the ring");
        b.tick(3600);
        assert_eq!(a.merge(&b.digests(), 3600), vec![Event::Up(addr(2))]);
        assert!(a.is_up(&addr(2)));
    }

    #[test]
    fn a_leave_spreads_and_takes_the_node_off_the_ring() {
        let (mut a, mut b, c) = (table(1), table(2), table(3));
        a.merge(&c.digests(), 0);
        b.merge(&c.digests(), 0);
        assert_eq!(a.leave(addr(3)), vec![Event::Left(addr(3))]);
        assert_eq!(b.merge(&a.digests(), 1), vec![Event::Joined(RingNode::new(addr(1), 8)), Event::Left(addr(3))]);
        assert_eq!(b.ring_nodes().len(), 2);
        // An old heartbeat of the left node does not bring it back.
        assert!(b.merge(&c.digests(), 2).is_empty());
    }

    #[test]
    fn a_removed_node_learns_it_and_a_lagging_heartbeat_does_not_undo_it() {
        let (mut a, mut b) = (table(1), table(2));
        a.merge(&b.digests(), 0);
        b.merge(&a.digests(), 0);
        a.leave(addr(2));
        for t in 1..=20 {
            b.tick(t); // b's heartbeat runs far ahead of what a saw
        }
        assert!(a.merge(&b.digests(), 21).is_empty(), "a newer heartbeat does not bring b back");
        assert_eq!(b.merge(&a.digests(), 22), vec![Event::Left(addr(2))]);
        assert_eq!(b.ring_nodes(), vec![RingNode::new(addr(1), 8)]);
    }

    #[test]
    fn a_restarted_node_outbids_its_old_heartbeat() {
        let (mut a, mut b) = (table(1), table(2));
        for t in 1..=50 {
            b.tick(t);
        }
        a.merge(&b.digests(), 50);
        let mut reborn = table(2); // heartbeat back at 1
        reborn.merge(&a.digests(), 60);
        reborn.tick(61);
        a.tick(5000); // b looked dead meanwhile
        assert!(!a.is_up(&addr(2)));
        assert_eq!(a.merge(&reborn.digests(), 5001), vec![Event::Up(addr(2))]);
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
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut rounds = 0;
        while !tables.iter().all(|t| t.ring_nodes().len() == n as usize) {
            rounds += 1;
            assert!(rounds <= 40, "no agreement after 40 rounds");
            for i in 0..n as usize {
                tables[i].tick(rounds * 10);
                if let Some(peer) = tables[i].gossip_target(&mut rng) {
                    let j = (peer.port() - 20000) as usize;
                    exchange(&mut tables, i, j, rounds * 10);
                }
            }
        }
        println!("{n} nodes agreed on membership after {rounds} gossip rounds");
        assert!(rounds <= 20, "{rounds} rounds is slow for {n} nodes");
    }

    /// One node of 32 stops; everyone notices within the down timeout plus
    /// a few rounds, and nobody takes it off the ring.
    #[test]
    fn a_dead_node_is_noticed_by_all() {
        let n = 32u16;
        let mut tables: Vec<Members> = (0..n).map(table).collect();
        let all: Vec<Digest> = tables.iter().flat_map(|t| t.digests()).collect();
        for t in tables.iter_mut() {
            t.merge(&all, 0);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let dead = 5usize;
        let mut noticed_at = None;
        for round in 1..=100u64 {
            let now = round * 1000;
            for i in 0..n as usize {
                if i == dead {
                    continue;
                }
                tables[i].tick(now);
                if let Some(peer) = tables[i].gossip_target(&mut rng) {
                    let j = (peer.port() - 20000) as usize;
                    if j != dead {
                        exchange(&mut tables, i, j, now);
                    }
                }
            }
            let everyone = tables.iter().enumerate().filter(|(i, _)| *i != dead).all(|(_, t)| !t.is_up(&addr(dead as u16)));
            if everyone {
                noticed_at = Some(round);
                break;
            }
        }
        let round = noticed_at.expect("the dead node was never noticed by all");
        assert!(round <= 6, "noticed only after {round} s");
        assert!(tables.iter().all(|t| t.ring_nodes().len() == n as usize));
    }
}

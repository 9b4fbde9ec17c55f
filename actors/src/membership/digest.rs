//! Membership's own types: a member as gossip carries it, the gossip
//! round's brief, and a member as `node_list` shows it. The api module
//! carries them; membership alone decides what they mean.

use serde::{Deserialize, Serialize};
use std::net::SocketAddrV4;

/// A member's place in the cluster, as gossip spreads it. A member only
/// ever moves forward through these (the order below), so gossip merges
/// two views of a member by taking the later state; `Removed` is final.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberState {
    /// Started with a cluster to join, and not yet holding its buckets.
    Joining,
    Up,
    /// Taken off the ring by `remove_node`, still handing its data over.
    Leaving,
    /// Off the ring for good, its data handed over (or lost with it).
    Removed,
}

impl MemberState {
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Up => "up",
            MemberState::Leaving => "leaving",
            MemberState::Removed => "removed",
        }
    }

    /// Whether a member in this state holds buckets on the ring.
    pub fn on_ring(self) -> bool {
        matches!(self, MemberState::Joining | MemberState::Up)
    }
}

/// One member as gossip carries it (membership's wire message).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberDigest {
    pub addr: SocketAddrV4,
    pub virtual_nodes: u16,
    /// Bumped at every start of the member's process, so its news wins
    /// over what others remember of its last life.
    pub incarnation: u64,
    pub heartbeat: u64,
    pub state: MemberState,
    /// False while its store takes no writes (a full disk): others then
    /// send its writes to stand-ins with hints, as for a down member.
    pub accepts_writes: bool,
    /// Its zone (failure domain); empty: none.
    #[serde(default)]
    pub zone: String,
    /// The removed node whose place on the ring it holds (`replaces`).
    #[serde(default)]
    pub place: Option<SocketAddrV4>,
}

impl MemberDigest {
    /// The member as the ring places it.
    pub fn ring_node(&self) -> crate::hash::RingNode {
        crate::hash::RingNode::new(self.addr, self.virtual_nodes).in_zone(&self.zone).in_place_of(self.place)
    }
}

/// A member table in brief: a fingerprint of everything gossip agrees on
/// but heartbeats (members, their lives, states, vnodes, zones, whether
/// they take writes), and every member's heartbeat in address order. Two
/// tables with one fingerprint list the same members in the same order, so
/// the heartbeats need no addresses.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Heartbeats {
    pub table: u64,
    pub beats: Vec<u64>,
}

/// One member as `node_list` shows it, from the answering node's view.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MemberRow {
    pub addr: String,
    pub state: MemberState,
    /// The failure detector suspects it: shown as down.
    pub suspected: bool,
    pub virtual_nodes: u16,
    pub incarnation: u64,
    /// Buckets it is the first replica of, and a home replica of at all.
    pub buckets_first: u32,
    pub buckets_home: u32,
    /// Hints this node holds for it.
    pub hints_held: u64,
    /// Milliseconds since its heartbeat last rose here (None: never heard).
    pub heartbeat_age_ms: Option<u64>,
    pub phi: f64,
    /// Its store takes writes (false: a full disk).
    pub accepts_writes: bool,
    #[serde(default)]
    pub zone: String,
    /// For the answering node itself while it hears from no member: why
    /// its last contact with a seed or `check_node` target failed.
    #[serde(default)]
    pub waiting: Option<String>,
    /// For a removed member: how long this node has known it removed.
    #[serde(default)]
    pub removed_for_ms: Option<u64>,
}

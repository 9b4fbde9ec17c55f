//! The internal protocol's messages and framing: a 4-byte big-endian
//! length, then a MessagePack body. Pure: encode and decode only.

use crate::error::{Error, Result};
use crate::store::{Write, WriteOutcome};
use crate::version::Version;
use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::net::SocketAddrV4;

/// Bumped whenever a message changes shape.
pub const PROTOCOL_VERSION: u32 = 5;

/// No frame may claim more than this; a peer that does is cut off.
pub const MAX_FRAME: usize = 64 << 20;

/// What one node (or the admin tool) asks another.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Request {
    /// The first frame on every connection, with the caller's nonce for
    /// the cluster secret's challenge-response.
    Hello {
        protocol_version: u32,
        number_of_buckets: u32,
        from: String,
        nonce: Bytes,
    },
    /// The second: the caller's proof that it knows the cluster secret.
    Proof {
        proof: Bytes,
    },
    NodeInfo,
    ReplicaGet {
        key: Bytes,
        /// A client's read: recorded, and answered with `VersionsRead`.
        client_read: bool,
    },
    /// Merge these versions; `hint` names the home node a stand-in holds
    /// them for, when the home node is down.
    ReplicaPut {
        key: Bytes,
        versions: Vec<Version>,
        hint: Option<String>,
    },
    /// A client request from a node outside the key's replicas.
    Forward {
        key: Bytes,
        op: ForwardOp,
        hops: u8,
        /// R or W for this request alone (the meta protocol's `r`/`w`
        /// flags); none: the node's own.
        #[serde(default)]
        quorum: Option<u8>,
    },
    /// A whole member table, answered with the answerer's (linking, and
    /// contacting seeds while alone: both ends learn in one round trip).
    Gossip {
        members: Vec<MemberDigest>,
    },
    /// A gossip round's opening: answered with the answerer's heartbeats
    /// when both tables agree on everything else, else with its table.
    GossipHeartbeats(Heartbeats),
    /// What the opener knows newer than the table it was answered with.
    GossipDelta {
        members: Vec<MemberDigest>,
    },
    /// Every member as this node sees it, for `node_list`.
    MemberStatus,
    /// Contact `node` and merge member lists with it.
    CheckNode {
        node: String,
    },
    /// A key's preference list.
    FindNodes {
        key: Bytes,
    },
    /// Bucket ownership across the ring.
    Buckets,
    /// The leaves of a bucket's Merkle tree.
    Segments {
        bucket: u32,
    },
    /// The Merkle roots of these buckets (0 for an empty one): buckets
    /// whose roots agree need nothing more.
    BucketRoots {
        buckets: Vec<u32>,
    },
    /// The keys of a bucket in some Merkle leaves.
    SegmentEntries {
        bucket: u32,
        segments: Vec<u32>,
    },
    /// Merge many keys' versions (anti-entropy, bucket transfer).
    MergeEntries {
        entries: Vec<(Bytes, Vec<Version>)>,
    },
    /// Many keys' stored versions.
    ReadKeys {
        keys: Vec<Bytes>,
    },
    /// Take a node off the ring for good, re-homing its buckets.
    RemoveNode {
        node: String,
    },
    /// Bucket transfers under way on this node.
    Transfers,
    /// One digest over the Merkle roots of every bucket this node is a
    /// home replica of: equal on replicas that hold the same data.
    MerkleRoot,
    Stats,
    /// Stops one module's actor so its supervisor starts it afresh.
    RestartActor {
        module: String,
    },
    /// Test-only fault injection: make a module's actor panic (or the next
    /// request's quorum actor, for "quorum").
    Panic {
        module: String,
    },
    /// Test-only fault injection: drop all traffic with these peers.
    /// Refused unless the node allows fault injection.
    Block {
        peers: Vec<String>,
    },
}

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
}

impl MemberDigest {
    /// The member as the ring places it.
    pub fn ring_node(&self) -> crate::hash::RingNode {
        crate::hash::RingNode::new(self.addr, self.virtual_nodes).in_zone(&self.zone)
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
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ForwardOp {
    Get,
    Write(Write),
}

/// A node in a preference list, as the admin tool shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Placement {
    pub bucket: u32,
    pub n: usize,
    /// Every node in preference order with whether it is up.
    pub nodes: Vec<(String, bool)>,
}

/// What a node says about itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub node: String,
    pub memcache_port: u16,
    pub number_of_buckets: u32,
    pub virtual_nodes: u16,
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub store: String,
    pub members: Vec<String>,
    pub version: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Response {
    /// The answerer's nonce and its own proof of the cluster secret.
    Challenge {
        nonce: Bytes,
        proof: Bytes,
    },
    /// The handshake is done: requests may follow.
    Hello {
        node: String,
    },
    NodeInfo(NodeInfo),
    Versions(Vec<Version>),
    /// A client read's answer: the versions, and when a client last read
    /// the key through that replica before (ms since the epoch; 0: never).
    VersionsRead {
        versions: Vec<Version>,
        last_read_ms: u64,
    },
    Outcome(WriteOutcome),
    Members(Vec<MemberDigest>),
    /// The answer to agreeing heartbeats: how far each of the answerer's
    /// is ahead of the opening's.
    HeartbeatsAhead(Heartbeats),
    MemberStatus(Vec<MemberRow>),
    Placement(Placement),
    /// Buckets held by each node (home replica of), and this node's.
    Buckets {
        held: Vec<u32>,
        per_node: Vec<(String, usize)>,
    },
    Segments(Vec<u64>),
    Roots(Vec<u64>),
    Entries(Vec<(Bytes, Vec<Version>)>),
    Transfers(TransferProgress),
    Root(u64),
    Done,
    Stats(Vec<(String, String)>),
    Error(String),
}

/// Bucket movement after a membership change, as the admin tool shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct TransferProgress {
    /// Buckets to move since the work began (never more than the ring's
    /// buckets), and done of them; equal once nothing is left to move.
    pub buckets_total: u64,
    pub buckets_done: u64,
    /// Seconds until done at the pace so far (None before any is done).
    pub eta_secs: Option<u64>,
    /// Bytes of values moved in so far, and of values handed off.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A request or response with the id that pairs them on a shared connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Frame<T> {
    pub id: u64,
    pub body: T,
}

pub fn encode<T: Serialize>(frame: &Frame<T>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    encode_into(&mut out, frame)?;
    Ok(out)
}

/// Appends one frame to `out`, serialized in place (no buffer of its own
/// to copy from): the length is written once the body is.
pub fn encode_into<T: Serialize>(out: &mut Vec<u8>, frame: &Frame<T>) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = rmp_serde::encode::write(out, frame) {
        out.truncate(start);
        return Err(e.into());
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Takes one whole frame off the front of `buf`, if one is there.
pub fn decode<T: for<'de> Deserialize<'de>>(buf: &mut BytesMut) -> Result<Option<Frame<T>>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(Error::Protocol(format!("frame of {len} bytes is over the {MAX_FRAME} byte limit")));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len);
    Ok(Some(rmp_serde::from_slice(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let frames = vec![
            Frame { id: 1, body: Request::NodeInfo },
            Frame { id: 2, body: Request::ReplicaGet { key: Bytes::from("k"), client_read: true } },
            Frame {
                id: 3,
                body: Request::Hello {
                    protocol_version: 1,
                    number_of_buckets: 1024,
                    from: "a:1".into(),
                    nonce: Bytes::from_static(b"n"),
                },
            },
        ];
        let wire: Vec<u8> = frames.iter().flat_map(|f| encode(f).unwrap()).collect();
        for split in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = Vec::new();
            while let Some(f) = decode::<Request>(&mut buf).unwrap() {
                got.push(f);
            }
            buf.extend_from_slice(&wire[split..]);
            while let Some(f) = decode::<Request>(&mut buf).unwrap() {
                got.push(f);
            }
            assert_eq!(got, frames);
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(decode::<Request>(&mut buf).is_err());
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1][..]);
        assert!(decode::<Request>(&mut buf).is_err());
    }

    #[test]
    fn binary_fields_encode_as_msgpack_bin() {
        let f = Frame { id: 0, body: Request::ReplicaGet { key: Bytes::from(vec![7u8; 100]), client_read: false } };
        // A bin field is ~100 bytes; a list of integers would be far larger.
        assert!(encode(&f).unwrap().len() < 130);
    }
}

//! The internal protocol's messages and framing: a 4-byte big-endian
//! length, then a MessagePack body. Pure: encode and decode only.

use crate::error::{Error, Result};
use crate::membership::{Heartbeats, MemberDigest};
use crate::store::{Write, WriteOutcome};
use crate::version::wire::{put_array_len, put_bin, put_bool, put_map_len, put_nil, put_str, put_uint, put_versions, Reader};
use crate::version::Version;
use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The peer protocol this build speaks: replica reads and writes,
/// forwarding, gossip and sync. Bumped whenever one of their messages
/// changes shape. Two nodes agree on the lower of their versions at the
/// handshake, and serve each other while those differ by at most one, so a
/// cluster upgrades one node at a time. The handshake itself (`Hello`,
/// `Proof` and their answers) never changes shape.
pub const PEER_PROTOCOL_VERSION: u32 = 7;

/// The version two peers speak, or None when they are too far apart:
/// each side serves peers one version older and one newer than its own.
pub fn agree(ours: u32, theirs: u32) -> Option<u32> {
    (ours.abs_diff(theirs) <= 1).then_some(ours.min(theirs))
}

/// No frame may claim more than this; a peer that does is cut off.
pub const MAX_FRAME: usize = 64 << 20;

/// What one node (or the admin tool) asks another.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Request {
    /// The first frame on every connection, with the caller's nonce for
    /// the cluster secret's challenge-response. A node says the terms of
    /// the peer protocol it offers; the admin tool says none.
    Hello { from: String, nonce: Bytes, peer: Option<PeerTerms> },
    /// The second: the caller's proof that it knows the cluster secret,
    /// and when it sent it by its monotonic clock (µs): the first measure
    /// of how long the connection takes to deliver (`arrival::Lateness`).
    Proof { proof: Bytes, sent_us: i64 },
    ReplicaGet {
        key: Bytes,
        /// A client's read: recorded, and answered with `VersionsRead`.
        client_read: bool,
    },
    /// Merge these versions; `hint` names the home node a stand-in holds
    /// them for, when the home node is down.
    ReplicaPut { key: Bytes, versions: Vec<Version>, hint: Option<String> },
    /// A client request from a node outside the key's replicas.
    Forward {
        key: Bytes,
        op: ForwardOp,
        hops: u8,
        /// R or W for this request alone (the meta protocol's `r`/`w`
        /// flags); none: the node's own.
        quorum: Option<u8>,
        /// How long the sender waits for the answer (ms), counted from
        /// `sent_us` (its monotonic clock, µs). One that arrives later
        /// than that never runs: the sender has given up on it and may
        /// have handed it to another replica.
        budget_ms: u32,
        sent_us: i64,
    },
    /// A whole member table, answered with the answerer's (linking, and
    /// contacting seeds while alone: both ends learn in one round trip).
    Gossip { members: Vec<MemberDigest> },
    /// A gossip round's opening: answered with the answerer's heartbeats
    /// when both tables agree on everything else, else with its table.
    GossipHeartbeats(Heartbeats),
    /// What the opener knows newer than the table it was answered with.
    GossipDelta { members: Vec<MemberDigest> },
    /// The leaves of a bucket's Merkle tree.
    Segments { bucket: u32 },
    /// The Merkle roots of these buckets (0 for an empty one): buckets
    /// whose roots agree need nothing more.
    BucketRoots { buckets: Vec<u32> },
    /// The keys of a bucket in some Merkle leaves.
    SegmentEntries { bucket: u32, segments: Vec<u32> },
    /// Merge many keys' versions (anti-entropy, bucket transfer).
    MergeEntries { entries: Vec<(Bytes, Vec<Version>)> },
    /// Many keys' stored versions.
    ReadKeys { keys: Vec<Bytes> },
    /// An operator's command, in the admin protocol: never part of the
    /// peer protocol, so a new command leaves the peer version alone.
    Admin(AdminCall),
}

/// What a node offers at the handshake: the peer protocol version it
/// speaks, and the settings that place keys. A peer whose bucket count or
/// N differs would place keys otherwise, so it is refused; R and W may
/// differ on purpose, and are only said.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerTerms {
    pub protocol_version: u32,
    pub number_of_buckets: u32,
    pub n: u32,
    pub r: u32,
    pub w: u32,
}

impl PeerTerms {
    /// The terms of a node of this build with the default quorum (tests).
    pub fn of_build(number_of_buckets: u32, n: u32) -> Self {
        PeerTerms { protocol_version: PEER_PROTOCOL_VERSION, number_of_buckets, n, r: n / 2 + 1, w: n / 2 + 1 }
    }
}

/// An admin command by name, its arguments encoded as its module reads
/// them (`admin::AdminCommand`). A node that lacks the command says so.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AdminCall {
    /// The module that answers it (`Owner::name`).
    pub module: String,
    pub command: String,
    pub args: Bytes,
}

/// The module that serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The handshake's frames, which the api module itself answers.
    Api,
    Store,
    Coordinator,
    Membership,
    Hash,
    Sync,
    /// The node as a whole: stats, restarts, fault injection.
    Node,
}

impl Owner {
    pub fn name(self) -> &'static str {
        match self {
            Owner::Api => "api",
            Owner::Store => "store",
            Owner::Coordinator => "coordinator",
            Owner::Membership => "membership",
            Owner::Hash => "hash",
            Owner::Sync => "sync",
            Owner::Node => "node",
        }
    }

    pub fn named(name: &str) -> Option<Owner> {
        let all = [Owner::Api, Owner::Store, Owner::Coordinator, Owner::Membership, Owner::Hash, Owner::Sync, Owner::Node];
        all.into_iter().find(|owner| owner.name() == name)
    }
}

impl Request {
    /// Which module serves this request: the router sends it there. An
    /// admin command names its module; one this node lacks has none.
    pub fn owner(&self) -> Option<Owner> {
        Some(match self {
            Request::Hello { .. } | Request::Proof { .. } => Owner::Api,
            Request::ReplicaGet { .. }
            | Request::ReplicaPut { .. }
            | Request::Segments { .. }
            | Request::BucketRoots { .. }
            | Request::SegmentEntries { .. }
            | Request::MergeEntries { .. }
            | Request::ReadKeys { .. } => Owner::Store,
            Request::Forward { .. } => Owner::Coordinator,
            Request::Gossip { .. } | Request::GossipHeartbeats(_) | Request::GossipDelta { .. } => Owner::Membership,
            Request::Admin(call) => return Owner::named(&call.module),
        })
    }

    /// The request's name, for messages.
    pub fn name(&self) -> String {
        if let Request::Admin(call) = self {
            return call.command.clone();
        }
        let debug = format!("{self:?}");
        debug.split([' ', '(', '{']).next().unwrap_or_default().to_string()
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ForwardOp {
    Get,
    Write(Write),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Response {
    /// The answerer's nonce and its own proof of the cluster secret.
    Challenge {
        nonce: Bytes,
        proof: Bytes,
    },
    /// The handshake is done: requests may follow, in the peer protocol
    /// version both agreed on (none for the admin tool); with the
    /// answerer's own terms, for a peer.
    Hello {
        node: String,
        protocol_version: Option<u32>,
        terms: Option<PeerTerms>,
    },
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
    Segments(Vec<u64>),
    Roots(Vec<u64>),
    Entries(Vec<(Bytes, Vec<Version>)>),
    /// An admin command's answer, encoded as its command says.
    Admin(Bytes),
    Done,
    /// A failure, typed: its kind says whether the request may have run.
    Failed(Error),
}

/// A request or response with the id that pairs them on a shared connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Frame<T> {
    pub id: u64,
    pub body: T,
}

/// A message of the internal protocol. The replica traffic of every client
/// request (a key's versions asked for, sent, answered) is also written and
/// read by hand, in the very bytes serde writes (`version::wire`); every
/// other message, and anything the hand reader does not expect, goes
/// through serde.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// Writes this body by hand if it is one of the replica messages, and
    /// says whether it did (writing nothing if not).
    fn put(&self, out: &mut Vec<u8>) -> bool;
    /// Reads a body as `put` writes one; None for anything else.
    fn read(reader: &mut Reader<'_>) -> Option<Self>;
}

impl Message for Request {
    fn put(&self, out: &mut Vec<u8>) -> bool {
        match self {
            Request::ReplicaGet { key, client_read } => {
                put_variant(out, "ReplicaGet", 2);
                put_bin(out, key);
                put_bool(out, *client_read);
            }
            Request::ReplicaPut { key, versions, hint } => {
                put_variant(out, "ReplicaPut", 3);
                put_bin(out, key);
                put_versions(out, versions);
                match hint {
                    Some(home) => put_str(out, home),
                    None => put_nil(out),
                }
            }
            _ => return false,
        }
        true
    }

    fn read(r: &mut Reader<'_>) -> Option<Self> {
        match r.variant()? {
            "ReplicaGet" => {
                r.array_of(2)?;
                Some(Request::ReplicaGet { key: Bytes::copy_from_slice(r.bin()?), client_read: r.bool()? })
            }
            "ReplicaPut" => {
                r.array_of(3)?;
                let key = Bytes::copy_from_slice(r.bin()?);
                let versions = r.versions()?;
                let hint = if r.nil() { None } else { Some(r.str()?.to_string()) };
                Some(Request::ReplicaPut { key, versions, hint })
            }
            _ => None,
        }
    }
}

impl Message for Response {
    fn put(&self, out: &mut Vec<u8>) -> bool {
        match self {
            Response::VersionsRead { versions, last_read_ms } => {
                put_variant(out, "VersionsRead", 2);
                put_versions(out, versions);
                put_uint(out, *last_read_ms);
            }
            Response::Versions(versions) => {
                // A newtype variant: the name maps to the value itself.
                put_map_len(out, 1);
                put_str(out, "Versions");
                put_versions(out, versions);
            }
            Response::Done => put_str(out, "Done"),
            _ => return false,
        }
        true
    }

    fn read(r: &mut Reader<'_>) -> Option<Self> {
        if r.clone().str() == Some("Done") {
            r.str()?;
            return Some(Response::Done);
        }
        match r.variant()? {
            "VersionsRead" => {
                r.array_of(2)?;
                Some(Response::VersionsRead { versions: r.versions()?, last_read_ms: r.uint()? })
            }
            "Versions" => Some(Response::Versions(r.versions()?)),
            _ => None,
        }
    }
}

/// An enum's struct variant as serde writes it: a map of its name to an
/// array of its fields.
fn put_variant(out: &mut Vec<u8>, name: &str, fields: usize) {
    put_map_len(out, 1);
    put_str(out, name);
    put_array_len(out, fields);
}

pub fn encode<T: Message>(frame: &Frame<T>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    encode_into(&mut out, frame)?;
    Ok(out)
}

/// Appends one frame to `out`, serialized in place (no buffer of its own
/// to copy from): the length is written once the body is.
pub fn encode_into<T: Message>(out: &mut Vec<u8>, frame: &Frame<T>) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    put_array_len(out, 2);
    put_uint(out, frame.id);
    if !frame.body.put(out) {
        out.truncate(start + 4);
        if let Err(e) = rmp_serde::encode::write(out, frame) {
            out.truncate(start);
            return Err(e.into());
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A frame's body read by hand, if it is a replica message whole.
fn read_by_hand<T: Message>(body: &[u8]) -> Option<Frame<T>> {
    let mut r = Reader::new(body);
    r.array_of(2)?;
    let id = r.uint()?;
    let body = T::read(&mut r)?;
    r.is_done().then_some(Frame { id, body })
}

/// Takes one whole frame off the front of `buf`, if one is there.
pub fn decode<T: Message>(buf: &mut BytesMut) -> Result<Option<Frame<T>>> {
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
    match read_by_hand(&body) {
        Some(frame) => Ok(Some(frame)),
        None => Ok(Some(rmp_serde::from_slice(&body)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let frames = vec![
            Frame { id: 1, body: Request::GossipDelta { members: vec![] } },
            Frame { id: 2, body: Request::ReplicaGet { key: Bytes::from("k"), client_read: true } },
            Frame {
                id: 3,
                body: Request::Hello {
                    from: "a:1".into(),
                    nonce: Bytes::from_static(b"n"),
                    peer: Some(PeerTerms { protocol_version: 1, ..PeerTerms::of_build(1024, 3) }),
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

    /// The replica messages, and neighbours the hand codec leaves to serde.
    fn replica_frames() -> impl proptest::strategy::Strategy<Value = (Frame<Request>, Frame<Response>)> {
        use crate::version::wire::tests::arb_version;
        use proptest::prelude::*;
        let versions = || prop::collection::vec(arb_version(), 0..3);
        let key = prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from);
        let request = prop_oneof![
            (key.clone(), any::<bool>()).prop_map(|(key, client_read)| Request::ReplicaGet { key, client_read }),
            (key.clone(), versions(), prop::option::of("[a-z0-9.:]{1,40}"))
                .prop_map(|(key, versions, hint)| Request::ReplicaPut { key, versions, hint }),
            key.clone().prop_map(|args| Request::Admin(AdminCall { module: "hash".into(), command: "find_nodes".into(), args })),
        ];
        let response = prop_oneof![
            (versions(), any::<u64>()).prop_map(|(versions, last_read_ms)| Response::VersionsRead { versions, last_read_ms }),
            versions().prop_map(Response::Versions),
            Just(Response::Done),
            "[a-z ]{0,40}".prop_map(|why| Response::Failed(Error::Refused(why))),
            (key, versions()).prop_map(|(k, v)| Response::Entries(vec![(k, v)])),
        ];
        (any::<u64>(), request, response)
            .prop_map(|(id, request, response)| (Frame { id, body: request }, Frame { id, body: response }))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn replica_frames_are_the_bytes_serde_writes_and_read_back((request, response) in replica_frames()) {
            fn serde_frame<T: Serialize>(frame: &Frame<T>) -> Vec<u8> {
                let body = rmp_serde::to_vec(frame).unwrap();
                [&(body.len() as u32).to_be_bytes()[..], &body].concat()
            }
            let wire = encode(&request).unwrap();
            proptest::prop_assert_eq!(&wire, &serde_frame(&request));
            proptest::prop_assert_eq!(decode::<Request>(&mut BytesMut::from(&wire[..])).unwrap(), Some(request));
            let wire = encode(&response).unwrap();
            proptest::prop_assert_eq!(&wire, &serde_frame(&response));
            proptest::prop_assert_eq!(decode::<Response>(&mut BytesMut::from(&wire[..])).unwrap(), Some(response));
        }
    }

    #[test]
    fn a_replica_frame_with_trailing_bytes_is_left_to_serde() {
        let mut body = rmp_serde::to_vec(&Frame { id: 9, body: Response::Done }).unwrap();
        assert!(read_by_hand::<Response>(&body).is_some());
        body.push(0xc0);
        assert!(read_by_hand::<Response>(&body).is_none(), "not whole: serde decides");
    }

    #[test]
    fn binary_fields_encode_as_msgpack_bin() {
        let f = Frame { id: 0, body: Request::ReplicaGet { key: Bytes::from(vec![7u8; 100]), client_read: false } };
        // A bin field is ~100 bytes; a list of integers would be far larger.
        assert!(encode(&f).unwrap().len() < 130);
    }
}

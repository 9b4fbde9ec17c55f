//! The store's internal API requests: replica reads and writes, the
//! Merkle exchanges of anti-entropy and bucket transfers, and the
//! `merkle_root` and `get` admin commands.

use super::{BucketRoots, CombinedRoot, GetSegments, MergeEntries, ReadKeys, ReplicaPut, SegmentEntries, Store, StoreAddr};
use crate::api::admin::{answer, AdminCommand};
use crate::api::respond::{failed, misrouted, now, refuse, reply};
use crate::api::{AdminCall, Request, Response};
use crate::error::Error;
use crate::hash::RingHandle;
use crate::stats::Identity;
use actix::prelude::*;
use serde::{Deserialize, Serialize};

/// `merkle_root`: one digest over the Merkle roots of every bucket the node
/// is a home replica of, equal on replicas that hold the same data.
#[derive(Serialize, Deserialize, Debug)]
pub struct MerkleRoot;

crate::admin_command!(MerkleRoot, "merkle_root", Store, u64);

/// A replica call answered at once from this node's store, when it cannot
/// wait there (every read; writes on the memory engine): no task, no
/// mailbox hop. Anything else is given back, to be routed.
pub fn answer_inline(store: &StoreAddr, request: Request) -> Result<Response, Request> {
    match request {
        Request::ReplicaGet { key, client_read } => Ok(replica_get(&store.direct, &key, client_read)),
        Request::ReplicaPut { key, versions, hint } if store.writes_inline() => {
            Ok(store.direct.merge(&key, &versions, hint.as_deref()).map_or_else(failed, |()| Response::Done))
        }
        other => Err(other),
    }
}

/// A replica read's answer: a client's read is recorded and answered with
/// when the key was read before (for the meta protocol's `h` and `l`).
pub fn replica_get(store: &Store, key: &[u8], client_read: bool) -> Response {
    let answer = store.replica_read(key, client_read).map(|(versions, last_read_ms)| match client_read {
        true => Response::VersionsRead { versions, last_read_ms },
        false => Response::Versions(versions),
    });
    answer.unwrap_or_else(failed)
}

/// Serves a store request (`Owner::Store`). Bucket numbers come from a
/// peer: each is checked before it reaches the Merkle trees.
pub fn serve(store: &StoreAddr, ring: &RingHandle, identity: &Identity, request: Request) -> ResponseFuture<Response> {
    let buckets = identity.number_of_buckets;
    match request {
        Request::ReplicaGet { key, client_read } => now(replica_get(&store.direct, &key, client_read)),
        Request::ReplicaPut { key, versions, hint } => reply(store.send(ReplicaPut { key, versions, hint }), |()| Response::Done),
        Request::Segments { bucket } if bucket < buckets => {
            let segments = store.send(GetSegments(bucket));
            Box::pin(async move { segments.await.map_or_else(failed, |s| Response::Segments(s.to_vec())) })
        }
        Request::BucketRoots { buckets: asked } if asked.iter().all(|b| *b < buckets) => {
            let roots = store.send(BucketRoots(asked));
            Box::pin(async move { roots.await.map_or_else(failed, Response::Roots) })
        }
        Request::SegmentEntries { bucket, segments } if bucket < buckets => {
            let segments = segments.into_iter().map(|s| s as usize).collect();
            reply(store.send(SegmentEntries { bucket, segments }), Response::Entries)
        }
        Request::Segments { .. } | Request::BucketRoots { .. } | Request::SegmentEntries { .. } => {
            refuse(Error::Client(format!("buckets run from 0 to {}", buckets - 1)))
        }
        Request::MergeEntries { entries } => reply(store.send(MergeEntries(entries)), |()| Response::Done),
        Request::ReadKeys { keys } => reply(store.send(ReadKeys(keys)), Response::Entries),
        Request::Admin(call) => admin(store, ring, identity, &call),
        other => misrouted("the store", &other),
    }
}

/// `get KEY` in the admin tool: every version this node stores of a key.
#[derive(Serialize, Deserialize, Debug)]
pub struct StoredVersions {
    pub key: bytes::Bytes,
}

crate::admin_command!(StoredVersions, "get", Store, Vec<crate::version::Version>);

/// The store's admin commands.
fn admin(store: &StoreAddr, ring: &RingHandle, identity: &Identity, call: &AdminCall) -> ResponseFuture<Response> {
    match call.command.as_str() {
        MerkleRoot::NAME => {
            let ring = ring.snapshot();
            let held = identity.node.parse().map(|me| ring.buckets_of(&me, identity.n)).unwrap_or_default();
            let root = store.send(CombinedRoot(held));
            answer(call, |MerkleRoot| async move { Ok(root.await?) })
        }
        StoredVersions::NAME => {
            let store = store.direct.clone();
            answer(call, move |StoredVersions { key }| {
                let versions = store.replica_read(&key, false).map(|(versions, _)| versions);
                async move { versions }
            })
        }
        _ => call.unknown(),
    }
}

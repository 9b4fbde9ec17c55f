//! Membership's internal API requests: gossip, and its admin commands
//! (linking and removing nodes, the member table as `node_list` and
//! `node_info` show it).

use super::{Answer, MemberList, MemberStatus, MembershipActor, ReceiveDelta, ReceiveGossip, ReceiveHeartbeats};
use crate::api::admin::{answer, AdminCommand};
use crate::api::respond::{failed, misrouted};
use crate::api::{AdminCall, Request, Response};
use crate::error::{Error, Result};
use crate::hash::RingHandle;
use crate::membership::MemberRow;
use crate::stats::Identity;
use crate::store::{HintCounts, StoreAddr};
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::net::SocketAddrV4;

/// `check_node`: the asked node contacts `node` and they merge member lists.
#[derive(Serialize, Deserialize, Debug)]
pub struct LinkNode {
    pub node: String,
}

crate::admin_command!(LinkNode, "check_node", Membership, ());

/// `remove_node`: takes `node` off the ring for good, re-homing its buckets.
#[derive(Serialize, Deserialize, Debug)]
pub struct Remove {
    pub node: String,
}

crate::admin_command!(Remove, "remove_node", Membership, ());

/// `node_list`: every member as the asked node sees it, but those removed
/// more than `tombstone_grace_secs` ago.
#[derive(Serialize, Deserialize, Debug)]
pub struct NodeList;

/// `node_list all`: every member, those removed long ago too.
#[derive(Serialize, Deserialize, Debug)]
pub struct NodeListAll;

crate::admin_command!(NodeListAll, "node_list_all", Membership, Vec<MemberRow>);

crate::admin_command!(NodeList, "node_list", Membership, Vec<MemberRow>);

/// `node_info`: what a node says about itself.
#[derive(Serialize, Deserialize, Debug)]
pub struct DescribeNode;

crate::admin_command!(DescribeNode, "node_info", Membership, NodeInfo);

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
    /// The peer protocol version it offers.
    pub protocol_version: u32,
}

/// What membership's answers draw on besides its actor.
pub struct MembershipApi<'a> {
    pub membership: &'a Addr<MembershipActor>,
    pub store: &'a StoreAddr,
    pub ring: &'a RingHandle,
    pub identity: &'a Identity,
    pub memcache_port: u16,
    pub protocol_version: u32,
    /// How long removed members stay in `node_list`.
    pub tombstone_grace: std::time::Duration,
}

fn address(node: &str) -> Result<SocketAddrV4> {
    node.parse().map_err(|_| Error::Client(format!("bad node address {node:?}: expected IPv4 HOST:PORT")))
}

/// Serves a membership request (`Owner::Membership`).
pub fn serve(api: MembershipApi<'_>, request: Request) -> ResponseFuture<Response> {
    let membership = api.membership;
    match request {
        Request::Gossip { members } => {
            let answer = membership.send(ReceiveGossip(members));
            Box::pin(async move { answer.await.map(Response::Members).unwrap_or_else(failed) })
        }
        Request::GossipHeartbeats(opening) => {
            let answer = membership.send(ReceiveHeartbeats(opening));
            Box::pin(async move {
                match answer.await {
                    Ok(Answer::Ahead(ahead)) => Response::HeartbeatsAhead(ahead),
                    Ok(Answer::Table(table)) => Response::Members(table),
                    Err(e) => failed(e),
                }
            })
        }
        Request::GossipDelta { members } => {
            let merged = membership.send(ReceiveDelta(members));
            Box::pin(async move { merged.await.map(|()| Response::Done).unwrap_or_else(failed) })
        }
        Request::Admin(call) => admin(api, &call),
        other => misrouted("membership", &other),
    }
}

/// Membership's admin commands.
fn admin(api: MembershipApi<'_>, call: &AdminCall) -> ResponseFuture<Response> {
    let membership = api.membership.clone();
    match call.command.as_str() {
        LinkNode::NAME => answer(call, |LinkNode { node }| async move {
            let addr = address(&node)?;
            membership.send(super::CheckNode(addr)).await?
        }),
        Remove::NAME => answer(call, |Remove { node }| async move {
            let addr = address(&node)?;
            membership.send(super::RemoveNode(addr)).await?
        }),
        NodeList::NAME => {
            let grace = api.tombstone_grace.as_millis() as u64;
            let recent = member_status(&api);
            answer(call, move |NodeList| async move {
                let rows = recent.await?;
                Ok(rows.into_iter().filter(|row| row.removed_for_ms.is_none_or(|ms| ms <= grace)).collect())
            })
        }
        NodeListAll::NAME => answer(call, |NodeListAll| member_status(&api)),
        DescribeNode::NAME => answer(call, |DescribeNode| node_info(&api)),
        _ => call.unknown(),
    }
}

/// Every member, with the buckets it is home of and the hints held for it.
fn member_status(api: &MembershipApi<'_>) -> impl std::future::Future<Output = Result<Vec<MemberRow>>> {
    let rows = api.membership.send(MemberStatus);
    let hints = api.store.send(HintCounts);
    let (ring, n) = (api.ring.snapshot(), api.identity.n);
    async move {
        let mut rows = rows.await?;
        let hints = match hints.await {
            Ok(Ok(hints)) => hints,
            _ => Default::default(),
        };
        let (first, home) = ring.bucket_counts(n);
        for row in &mut rows {
            let row: &mut MemberRow = row;
            if let Ok(addr) = row.addr.parse::<SocketAddrV4>() {
                row.buckets_first = first.get(&addr).copied().unwrap_or(0);
                row.buckets_home = home.get(&addr).copied().unwrap_or(0);
            }
            row.hints_held = hints.get(&row.addr).copied().unwrap_or(0);
        }
        Ok(rows)
    }
}

/// This node's settings and the members on the ring.
fn node_info(api: &MembershipApi<'_>) -> impl std::future::Future<Output = Result<NodeInfo>> {
    let id = api.identity.clone();
    let (memcache_port, protocol_version) = (api.memcache_port, api.protocol_version);
    let members = api.membership.send(MemberList);
    async move {
        let members = members.await?;
        Ok(NodeInfo {
            node: id.node,
            memcache_port,
            number_of_buckets: id.number_of_buckets,
            virtual_nodes: id.virtual_nodes,
            n: id.n,
            r: id.r,
            w: id.w,
            store: id.store.to_string(),
            members: members
                .iter()
                .filter(|m| m.state.on_ring())
                .map(|m| {
                    let status = if m.suspected { "down" } else { m.state.name() };
                    format!("{} {status} {} virtual nodes", m.node.name(), m.node.virtual_nodes)
                })
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol_version,
        })
    }
}

//! Membership's internal API requests: gossip, linking and removing
//! nodes, and the member table as `node_list` and `node_info` show it.

use super::{
    Answer, CheckNode, MemberList, MemberStatus, MembershipActor, ReceiveDelta, ReceiveGossip, ReceiveHeartbeats, RemoveNode,
};
use crate::api::respond::{failed, misrouted, refuse, reply};
use crate::api::{MemberRow, NodeInfo, Request, Response};
use crate::hash::RingHandle;
use crate::stats::Identity;
use crate::store::{HintCounts, StoreAddr};
use actix::prelude::*;
use std::net::SocketAddrV4;

/// What membership's answers draw on besides its actor.
pub struct MembershipApi<'a> {
    pub membership: &'a Addr<MembershipActor>,
    pub store: &'a StoreAddr,
    pub ring: &'a RingHandle,
    pub identity: &'a Identity,
    pub memcache_port: u16,
}

fn address(node: &str) -> Result<SocketAddrV4, String> {
    node.parse().map_err(|_| format!("bad node address {node:?}: expected IPv4 HOST:PORT"))
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
        Request::CheckNode { node } => match address(&node) {
            Ok(addr) => reply(membership.send(CheckNode(addr)), |()| Response::Done),
            Err(why) => refuse(why),
        },
        Request::RemoveNode { node } => match address(&node) {
            Ok(addr) => reply(membership.send(RemoveNode(addr)), |()| Response::Done),
            Err(why) => refuse(why),
        },
        Request::MemberStatus => member_status(&api),
        Request::NodeInfo => node_info(&api),
        other => misrouted("membership", &other),
    }
}

/// Every member, with the buckets it is home of and the hints held for it.
fn member_status(api: &MembershipApi<'_>) -> ResponseFuture<Response> {
    let rows = api.membership.send(MemberStatus);
    let hints = api.store.send(HintCounts);
    let (ring, n) = (api.ring.snapshot(), api.identity.n);
    Box::pin(async move {
        let Ok(mut rows) = rows.await else { return Response::Error("membership is restarting".into()) };
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
        Response::MemberStatus(rows)
    })
}

/// This node's settings and the members on the ring.
fn node_info(api: &MembershipApi<'_>) -> ResponseFuture<Response> {
    let id = api.identity.clone();
    let memcache_port = api.memcache_port;
    let members = api.membership.send(MemberList);
    Box::pin(async move {
        let members = members.await.unwrap_or_default();
        Response::NodeInfo(NodeInfo {
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
        })
    })
}

//! membership: who is in the cluster and whether each member is up. The
//! member table is pure; the actor owns it and tells hash about changes.
//! A single node is a cluster of one; gossip grows it.

use crate::hash::RingNode;
use actix::prelude::*;
use std::collections::BTreeMap;
use std::net::SocketAddrV4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Up,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node: RingNode,
    pub status: Status,
}

/// The member table, keyed by node address.
#[derive(Debug, Clone, Default)]
pub struct Members {
    members: BTreeMap<SocketAddrV4, Member>,
}

impl Members {
    pub fn new(me: RingNode) -> Self {
        let mut members = BTreeMap::new();
        members.insert(me.addr, Member { node: me, status: Status::Up });
        Members { members }
    }

    pub fn list(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    pub fn is_up(&self, addr: &SocketAddrV4) -> bool {
        self.members.get(addr).is_some_and(|m| m.status == Status::Up)
    }
}

/// Every member and its state.
#[derive(Message)]
#[rtype(result = "Vec<Member>")]
pub struct MemberList;

pub struct MembershipActor {
    members: Members,
}

impl MembershipActor {
    pub fn new(me: RingNode) -> Self {
        MembershipActor { members: Members::new(me) }
    }
}

impl Actor for MembershipActor {
    type Context = Context<Self>;
}

crate::supervised!(MembershipActor, "membership");

impl Handler<MemberList> for MembershipActor {
    type Result = MessageResult<MemberList>;

    fn handle(&mut self, _: MemberList, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.members.list())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_new_table_holds_only_this_node_up() {
        let me = RingNode::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 11011), 128);
        let members = Members::new(me.clone());
        assert_eq!(members.list(), vec![Member { node: me.clone(), status: Status::Up }]);
        assert!(members.is_up(&me.addr));
    }
}

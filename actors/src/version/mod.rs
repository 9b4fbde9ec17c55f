//! version: vector clocks. The pure core is in `clock`; the actor reconciles
//! the replies a read gathered and says which replicas need repair.

mod clock;
pub mod wire;

pub use clock::{
    cas_token, context, distinct_values, sort_siblings, stamp, sync, Causality, ClockEntry, Dot, NodeName, Payload, VClock,
    Version, CAS_TOKEN_LIMIT,
};

use actix::prelude::*;

/// What a read learned once its replies are reconciled.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    /// The versions no other version supersedes, newest last.
    pub siblings: Vec<Version>,
    /// Indexes of the replies that lacked some of `siblings` (read repair).
    pub stale: Vec<usize>,
}

/// Merges every replica's versions and finds the replicas that are behind.
pub fn reconcile(replies: &[Vec<Version>]) -> Reconciled {
    let siblings = replies.iter().fold(Vec::new(), |acc, r| sync(&acc, r));
    let stale = replies
        .iter()
        .enumerate()
        .filter(|(_, r)| siblings.iter().any(|s| !r.iter().any(|v| v.dot == s.dot)))
        .map(|(i, _)| i)
        .collect();
    Reconciled { siblings, stale }
}

/// Reconciles the replies of one read.
#[derive(Message)]
#[rtype(result = "Reconciled")]
pub struct Reconcile(pub Vec<Vec<Version>>);

/// The version module as an actor: coordinators hand it the replies a read
/// gathered; it keeps count of the divergence it saw.
#[derive(Default)]
pub struct VersionActor {
    pub reconciled: u64,
}

impl Actor for VersionActor {
    type Context = Context<Self>;
}

crate::supervised!(VersionActor, "version");

impl Handler<Reconcile> for VersionActor {
    type Result = MessageResult<Reconcile>;

    fn handle(&mut self, msg: Reconcile, _: &mut Self::Context) -> Self::Result {
        self.reconciled += 1;
        MessageResult(reconcile(&msg.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn put(node: &str, seen: &[Version], v: &str) -> Version {
        let p = Payload { value: Bytes::from(v.to_string()), flags: 0, expires_at: 0, deleted: false };
        stamp(node, seen, &context(seen), p, 1, 10)
    }

    #[test]
    fn reconcile_finds_the_stale_replica() {
        let v1 = put("a", &[], "one");
        let v2 = put("a", &[v1.clone()], "two");
        let r = reconcile(&[vec![v2.clone()], vec![v1], vec![v2.clone()]]);
        assert_eq!(r.siblings, vec![v2]);
        assert_eq!(r.stale, vec![1]);
    }

    #[test]
    fn reconcile_marks_a_replica_missing_a_sibling() {
        let x = put("a", &[], "x");
        let y = put("b", &[], "y");
        let r = reconcile(&[vec![x.clone()], vec![y.clone()], vec![]]);
        assert_eq!(r.siblings.len(), 2);
        assert_eq!(r.stale, vec![0, 1, 2]);
    }
}

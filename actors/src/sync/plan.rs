//! The pure decisions of sync: what to move after comparing two replicas'
//! keys, and which dead keys every replica agrees on.

use crate::store::merkle::key_digest;
use crate::store::Entry;
use crate::version::Version;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddrV4;

/// From the keys of the differing leaves on both sides: what to pull from
/// the peer and what to push to it (keys whose versions differ, or that
/// one side lacks). The receiving store merges by clock, so moving a key
/// both ways is safe and makes both sides equal.
pub fn entries_to_move(mine: &[Entry], theirs: &[Entry]) -> (Vec<Entry>, Vec<Entry>) {
    let digests =
        |entries: &[Entry]| -> HashMap<Bytes, u64> { entries.iter().map(|(k, vs)| (k.clone(), key_digest(k, vs))).collect() };
    let (my_digests, their_digests) = (digests(mine), digests(theirs));
    let pull = theirs.iter().filter(|(k, vs)| my_digests.get(k) != Some(&key_digest(k, vs))).cloned().collect();
    let push = mine.iter().filter(|(k, vs)| their_digests.get(k) != Some(&key_digest(k, vs))).cloned().collect();
    (pull, push)
}

/// The reap candidates that every other home replica (`others_of`) holds
/// with exactly the same versions, or holds nothing of (it reaped already),
/// by their answers. Then no replica holds anything the reaped versions
/// superseded, so nothing can come back.
pub fn confirmed_reaps(
    candidates: &[Entry],
    others_of: impl Fn(&[u8]) -> Vec<SocketAddrV4>,
    answers: &BTreeMap<SocketAddrV4, HashMap<Bytes, Vec<Version>>>,
) -> Vec<Entry> {
    candidates
        .iter()
        .filter(|(key, mine)| {
            let digest = key_digest(key, mine);
            others_of(key).iter().all(|peer| {
                answers
                    .get(peer)
                    .and_then(|a| a.get(key))
                    .is_some_and(|theirs| theirs.is_empty() || key_digest(key, theirs) == digest)
            })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{stamp, Payload, VClock};
    use std::net::Ipv4Addr;

    fn v(node: &str, value: &str, deleted: bool) -> Version {
        let p = Payload { value: Bytes::from(value.to_string()), flags: 0, expires_at: 0, deleted };
        stamp(node, &[], &VClock::new(), p, 1, 10)
    }

    fn e(key: &str, versions: Vec<Version>) -> Entry {
        (Bytes::from(key.to_string()), versions)
    }

    #[test]
    fn only_what_differs_moves_and_both_ways() {
        let same = e("same", vec![v("a", "1", false)]);
        let mine = vec![same.clone(), e("only-mine", vec![v("a", "2", false)]), e("both", vec![v("a", "3", false)])];
        let theirs = vec![same, e("only-theirs", vec![v("b", "4", false)]), e("both", vec![v("b", "5", false)])];
        let (pull, push) = entries_to_move(&mine, &theirs);
        let names = |es: &[Entry]| es.iter().map(|(k, _)| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>();
        assert_eq!(names(&pull), vec!["only-theirs", "both"]);
        assert_eq!(names(&push), vec!["only-mine", "both"]);
    }

    #[test]
    fn a_reap_needs_every_replica_to_hold_the_same_tombstone() {
        let peer = |i: u16| SocketAddrV4::new(Ipv4Addr::LOCALHOST, i);
        let tomb = v("a", "", true);
        let candidates = vec![
            e("agreed", vec![tomb.clone()]),
            e("stale-peer", vec![tomb.clone()]),
            e("unanswered", vec![tomb.clone()]),
            e("reaped-there", vec![tomb.clone()]),
        ];
        let mut answers: BTreeMap<SocketAddrV4, HashMap<Bytes, Vec<Version>>> = BTreeMap::new();
        for p in [peer(1), peer(2)] {
            answers.entry(p).or_default().insert(Bytes::from("agreed"), vec![tomb.clone()]);
            answers.entry(p).or_default().insert(Bytes::from("stale-peer"), vec![tomb.clone()]);
        }
        answers.get_mut(&peer(1)).unwrap().insert(Bytes::from("reaped-there"), vec![]);
        answers.get_mut(&peer(2)).unwrap().insert(Bytes::from("reaped-there"), vec![tomb.clone()]);
        // One replica still holds the old live value beside the tombstone.
        answers.get_mut(&peer(2)).unwrap().insert(Bytes::from("stale-peer"), vec![tomb.clone(), v("b", "old", false)]);
        let confirmed = confirmed_reaps(&candidates, |_| vec![peer(1), peer(2)], &answers);
        assert_eq!(confirmed, vec![e("agreed", vec![tomb.clone()]), e("reaped-there", vec![tomb.clone()])]);
        // A single node has no one else to ask.
        assert_eq!(confirmed_reaps(&candidates, |_| vec![], &answers).len(), 4);
    }
}

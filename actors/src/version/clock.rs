//! Dotted version vectors: every stored value carries the dot that created
//! it and the causal context it was written with. A write replaces exactly
//! the versions whose dots its context covers; everything else stays as a
//! sibling. Pure: no actors, no I/O.

use bytes::Bytes;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// A node's name in clocks and dots: interned once per process and then
/// copied as a pointer. Every copy of a version copies its clock, so with
/// `String` each copy cost an allocation per entry, and with `Arc<str>` an
/// atomic count that worker threads pulled back and forth between them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(&'static str);

/// The most distinct names a process takes in (a node name is an address;
/// a cluster has as many as it ever had members): past it a peer's frame
/// naming yet another is refused rather than held forever.
const MOST_NAMES: usize = 1 << 16;

impl NodeName {
    /// The interned name; None once the process holds `MOST_NAMES`.
    pub fn try_new(name: &str) -> Option<Self> {
        use std::cell::RefCell;
        use std::collections::HashSet;
        thread_local! {
            // This thread's copy of the table: a known name costs no lock.
            static KNOWN: RefCell<HashSet<&'static str>> = RefCell::default();
        }
        static ALL: std::sync::Mutex<Option<HashSet<&'static str>>> = std::sync::Mutex::new(None);
        if let Some(known) = KNOWN.with(|k| k.borrow().get(name).copied()) {
            return Some(NodeName(known));
        }
        let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
        let all = all.get_or_insert_with(HashSet::new);
        let interned = match all.get(name) {
            Some(known) => *known,
            None if all.len() >= MOST_NAMES => return None,
            None => {
                let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
                all.insert(leaked);
                leaked
            }
        };
        KNOWN.with(|k| k.borrow_mut().insert(interned));
        Some(NodeName(interned))
    }

    /// The interned name (a node's own, or one from a trusted source).
    pub fn new(name: &str) -> Self {
        Self::try_new(name).expect("more distinct node names than any cluster has")
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl std::ops::Deref for NodeName {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl From<&str> for NodeName {
    fn from(name: &str) -> Self {
        NodeName::new(name)
    }
}

impl std::fmt::Debug for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0, f)
    }
}

impl std::fmt::Display for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for NodeName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(NodeNameVisitor)
    }
}

/// Reads a name in place: every clock entry of every version a peer sends
/// carries one, and a known name needs no copy to be looked up.
struct NodeNameVisitor;

impl serde::de::Visitor<'_> for NodeNameVisitor {
    type Value = NodeName;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a node name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<NodeName, E> {
        NodeName::try_new(name).ok_or_else(|| E::custom("too many distinct node names"))
    }

    fn visit_bytes<E: serde::de::Error>(self, name: &[u8]) -> Result<NodeName, E> {
        let name = std::str::from_utf8(name).map_err(|_| E::custom("a node name that is not UTF-8"))?;
        self.visit_str(name)
    }
}

/// One node's entry in a vector clock.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClockEntry {
    pub node: NodeName,
    pub counter: u64,
    /// Milliseconds since the epoch when this entry last advanced; used only
    /// to decide which entries to prune.
    pub timestamp: u64,
}

/// A vector clock, entries sorted by node name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct VClock {
    entries: ClockEntries,
}

/// A clock's entries, the first in place: a key written through one
/// coordinator has a clock of one entry (or none), and every read copies
/// its versions out of the store, clocks and all, so a copy allocates
/// nothing (an entry on the heap cost an allocation and a free a read).
pub type ClockEntries = smallvec::SmallVec<[ClockEntry; 1]>;

/// How two clocks relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    Before,
    After,
    Equal,
    Concurrent,
}

/// The event that created a version: the coordinating node and its counter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dot {
    pub node: NodeName,
    pub counter: u64,
}

impl VClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock of these entries as read from a peer or a disk record, in the
    /// order given (sorted by node name, as every clock is written), as
    /// serde reads one.
    pub fn from_entries(entries: ClockEntries) -> Self {
        VClock { entries }
    }

    pub fn entries(&self) -> &[ClockEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn counter(&self, node: &str) -> u64 {
        match self.entries.binary_search_by(|e| (*e.node).cmp(node)) {
            Ok(i) => self.entries[i].counter,
            Err(_) => 0,
        }
    }

    /// Whether the event `dot` is in this clock's causal past.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.counter(&dot.node) >= dot.counter
    }

    /// Raises `node`'s entry to `counter` (never lowers it).
    pub fn advance(&mut self, node: &str, counter: u64, timestamp: u64) {
        self.advance_with(node, counter, timestamp, || NodeName::new(node));
    }

    fn advance_entry(&mut self, entry: &ClockEntry) {
        self.advance_with(&entry.node, entry.counter, entry.timestamp, || entry.node);
    }

    fn advance_with(&mut self, node: &str, counter: u64, timestamp: u64, name: impl FnOnce() -> NodeName) {
        match self.entries.binary_search_by(|e| (*e.node).cmp(node)) {
            Ok(i) => {
                let e = &mut self.entries[i];
                if counter > e.counter {
                    e.counter = counter;
                }
                e.timestamp = e.timestamp.max(timestamp);
            }
            Err(i) => self.entries.insert(i, ClockEntry { node: name(), counter, timestamp }),
        }
    }

    /// The least clock that covers both.
    pub fn merge(&self, other: &VClock) -> VClock {
        let mut merged = self.clone();
        for e in &other.entries {
            merged.advance_entry(e);
        }
        merged
    }

    pub fn compare(&self, other: &VClock) -> Causality {
        let mut self_ahead = false;
        let mut other_ahead = false;
        for e in &self.entries {
            if e.counter > other.counter(&e.node) {
                self_ahead = true;
            }
        }
        for e in &other.entries {
            if e.counter > self.counter(&e.node) {
                other_ahead = true;
            }
        }
        match (self_ahead, other_ahead) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (true, true) => Causality::Concurrent,
        }
    }

    /// Keeps at most `max_entries`, dropping the oldest by timestamp but
    /// never `keep` (the entry of the version's own dot). Pruning can only
    /// make a clock cover less, so it may add siblings but never loses one.
    pub fn prune(&mut self, max_entries: usize, keep: &str) {
        while self.entries.len() > max_entries.max(1) {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| &*e.node != keep)
                .min_by_key(|(_, e)| (e.timestamp, e.counter))
                .map(|(i, _)| i);
            match oldest {
                Some(i) => {
                    self.entries.remove(i);
                }
                None => break,
            }
        }
    }
}

/// One stored version of a key's value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub dot: Dot,
    /// The causal context the value was written with: what its writer had
    /// seen. It does not include `dot`, so a write that saw nothing of a
    /// sibling from the same node does not cover it.
    pub clock: VClock,
    /// Milliseconds since the epoch at the coordinator; orders siblings.
    pub timestamp: u64,
    pub flags: u32,
    /// Unix seconds after which the value reads as absent; 0 = never.
    pub expires_at: u64,
    /// A tombstone: records a delete so it wins against older copies.
    pub deleted: bool,
    pub value: Bytes,
}

impl Version {
    /// Whether this version reads as a value at unix time `now_secs`.
    pub fn is_live(&self, now_secs: u64) -> bool {
        !self.deleted && (self.expires_at == 0 || self.expires_at > now_secs)
    }

    /// Whether `other` is made obsolete by this version.
    pub fn supersedes(&self, other: &Version) -> bool {
        self.dot != other.dot && self.clock.covers(&other.dot)
    }

    /// The causal past including this version's own dot.
    pub fn history(&self) -> VClock {
        let mut h = self.clock.clone();
        h.advance_entry(&ClockEntry { node: self.dot.node, counter: self.dot.counter, timestamp: self.timestamp });
        h
    }

    fn order_key(&self) -> (u64, &Dot) {
        (self.timestamp, &self.dot)
    }
}

/// The contents of a new version, before it is stamped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub value: Bytes,
    pub flags: u32,
    pub expires_at: u64,
    pub deleted: bool,
}

/// Merges two sibling sets: keeps every version that no other version
/// supersedes, each dot once, oldest first (newest last).
pub fn sync(a: &[Version], b: &[Version]) -> Vec<Version> {
    let mut all: Vec<&Version> = a.iter().chain(b.iter()).collect();
    all.sort_by(|x, y| x.dot.cmp(&y.dot));
    all.dedup_by(|x, y| x.dot == y.dot);
    let mut kept: Vec<Version> =
        all.iter().filter(|v| !all.iter().any(|other| other.supersedes(v))).map(|v| (*v).clone()).collect();
    sort_siblings(&mut kept);
    kept
}

/// Orders siblings oldest first, so naive clients that keep the last
/// `VALUE` block see last-write-wins.
pub fn sort_siblings(versions: &mut [Version]) {
    versions.sort_by(|x, y| x.order_key().cmp(&y.order_key()));
}

/// The siblings a plain memcache `get` shows: one per distinct value and
/// flags, the newest of each (siblings come oldest first). Two versions
/// that say the same thing — a write retried through another coordinator
/// after the first applied it but could not answer — are one value to a
/// client; the cas token still covers them all, so a `cas` replaces both.
pub fn distinct_values(versions: &[Version]) -> impl Iterator<Item = &Version> {
    versions
        .iter()
        .enumerate()
        .filter(|(i, v)| !versions[i + 1..].iter().any(|later| later.flags == v.flags && later.value == v.value))
        .map(|(_, v)| v)
}

/// The merged history of a set of versions: what a reader has seen.
///
/// This is exact because a coordinator stamps a key's dots in order and
/// replicas always receive the coordinator's whole sibling set, so a
/// replica holding dot (n, k) holds every (n, j < k) not superseded.
pub fn context(versions: &[Version]) -> VClock {
    versions.iter().fold(VClock::new(), |acc, v| acc.merge(&v.history()))
}

/// The largest token handed out, plus one: 2^32, so every client keeps it
/// exactly: JavaScript's doubles, signed 64-bit integers (libmemcached,
/// PHP), and meta-memcache, which reads a meta `c` token as 32 bits and
/// drops a larger one (a cas then becomes a plain set). The cost: a stale
/// token matches the current one by chance once in 2^32 tries.
pub const CAS_TOKEN_LIMIT: u64 = 1 << 32;

/// The memcache `cas` token of a key's live versions: a digest of the key
/// and of each version's dot and stamp time, in [1, 2^32).
///
/// A function of what is stored, so every replica gives the same token
/// without coordination. The key is in it, so keys written alike get
/// different tokens; the stamp time is in it, so a key deleted, reaped and
/// written again (its dots start over) never gets back an old token. The
/// dots name the sibling set exactly, so a `cas` holding this token can
/// only replace the versions its client saw. Sibling order does not count.
pub fn cas_token(key: &[u8], live: &[Version]) -> u64 {
    let mut stamps: Vec<(&Dot, u64)> = live.iter().map(|v| (&v.dot, v.timestamp)).collect();
    stamps.sort_unstable();
    let mut md5 = Md5::new();
    md5.update((key.len() as u32).to_be_bytes());
    md5.update(key);
    for (dot, timestamp) in stamps {
        md5.update((dot.node.len() as u32).to_be_bytes());
        md5.update(dot.node.as_bytes());
        md5.update(dot.counter.to_be_bytes());
        md5.update(timestamp.to_be_bytes());
    }
    let out = md5.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    // 0 means "no token" to memcached clients: never hand it out.
    (u64::from_be_bytes(first) % CAS_TOKEN_LIMIT).max(1)
}

/// Stamps a new version at coordinator `node`. `seen` is every version the
/// coordinator holds for the key (so the new counter is fresh) and `context`
/// what the writer saw (so the write replaces exactly that).
pub fn stamp(node: &str, seen: &[Version], context: &VClock, payload: Payload, now_ms: u64, max_clock_entries: usize) -> Version {
    let counter =
        seen.iter().map(|v| v.history().counter(node)).chain(std::iter::once(context.counter(node))).max().unwrap_or(0) + 1;
    let mut clock = context.clone();
    clock.prune(max_clock_entries, node);
    Version {
        dot: Dot { node: NodeName::new(node), counter },
        clock,
        timestamp: now_ms,
        flags: payload.flags,
        expires_at: payload.expires_at,
        deleted: payload.deleted,
        value: payload.value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_clock_is_written_as_it_was_when_its_entries_were_on_the_heap() {
        #[derive(Serialize)]
        struct HeapClock {
            entries: Vec<ClockEntry>,
        }
        for names in [&[][..], &["a"][..], &["a", "b", "c"][..]] {
            let mut clock = VClock::new();
            for (i, name) in names.iter().enumerate() {
                clock.advance(name, i as u64 + 1, 7);
            }
            let bytes = rmp_serde::to_vec(&clock).unwrap();
            assert_eq!(bytes, rmp_serde::to_vec(&HeapClock { entries: clock.entries().to_vec() }).unwrap());
            assert_eq!(rmp_serde::from_slice::<VClock>(&bytes).unwrap(), clock);
        }
    }

    #[test]
    fn a_node_name_is_read_in_place_and_interned() {
        let dot = Dot { node: NodeName::new("127.0.0.1:7001"), counter: 9 };
        let bytes = rmp_serde::to_vec(&dot).unwrap();
        let back: Dot = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, dot);
        assert!(std::ptr::eq(back.node.as_str(), dot.node.as_str()), "one interned copy of a name");
        // Read from a stream, the name arrives in a scratch buffer instead.
        let streamed: Dot = rmp_serde::from_read(&bytes[..]).unwrap();
        assert_eq!(streamed, dot);
        // A name that is not a string is refused, not guessed at.
        let not_a_name = rmp_serde::to_vec(&(7u32, 9u64)).unwrap();
        assert!(rmp_serde::from_slice::<Dot>(&not_a_name).is_err());
    }

    fn payload(v: &str) -> Payload {
        Payload { value: Bytes::from(v.to_string()), flags: 0, expires_at: 0, deleted: false }
    }

    fn write(node: &str, seen: &[Version], ctx: &VClock, v: &str, t: u64) -> Version {
        stamp(node, seen, ctx, payload(v), t, 10)
    }

    #[test]
    fn a_write_with_context_replaces_what_it_saw() {
        let v1 = write("a", &[], &VClock::new(), "one", 1);
        let v2 = write("a", &[v1.clone()], &v1.history(), "two", 2);
        assert_eq!(sync(&[v1.clone()], &[v2.clone()]), vec![v2.clone()]);
        assert_eq!(sync(&[v2.clone()], &[v1]), vec![v2]);
    }

    #[test]
    fn concurrent_writes_become_siblings_newest_last() {
        let v1 = write("a", &[], &VClock::new(), "one", 1);
        let x = write("a", &[v1.clone()], &v1.history(), "x", 5);
        let y = write("b", &[v1.clone()], &v1.history(), "y", 3);
        let merged = sync(&[x.clone()], &[y.clone(), v1]);
        assert_eq!(merged, vec![y.clone(), x.clone()]);
        assert_eq!(x.history().compare(&y.history()), Causality::Concurrent);
        // Writing back with the merged context resolves both.
        let z = write("b", &merged, &context(&merged), "z", 6);
        assert_eq!(sync(&merged, &[z.clone()]), vec![z]);
    }

    #[test]
    fn siblings_that_say_the_same_show_once_and_keep_one_token() {
        let v1 = write("a", &[], &VClock::new(), "same", 1);
        let retried = write("b", &[], &VClock::new(), "same", 2);
        let other = write("c", &[], &VClock::new(), "other", 3);
        let siblings = sync(&[v1.clone(), other.clone()], &[retried.clone()]);
        assert_eq!(siblings.len(), 3);
        let shown: Vec<&Version> = distinct_values(&siblings).collect();
        assert_eq!(shown, vec![&retried, &other], "the newest of the two alike, and the one that differs");
        let mut flagged = v1.clone();
        flagged.flags = 7;
        assert_eq!(distinct_values(&[flagged, retried.clone()]).count(), 2, "other flags are another value");
        assert_ne!(cas_token(b"k", &siblings), cas_token(b"k", &[retried, other]), "the token covers every sibling");
    }

    #[test]
    fn a_blind_write_at_the_same_node_does_not_replace_unseen_siblings() {
        // Two writes at node a, each with an empty context: the second must
        // not swallow the first (the dot is what makes this safe).
        let v1 = write("a", &[], &VClock::new(), "one", 1);
        let v2 = write("a", &[v1.clone()], &VClock::new(), "two", 2);
        assert_eq!(v2.dot.counter, 2);
        assert_eq!(sync(&[v1.clone()], &[v2.clone()]).len(), 2);
    }

    #[test]
    fn prune_keeps_own_entry_and_newest() {
        let mut c = VClock::new();
        for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
            c.advance(n, 1, i as u64 + 10);
        }
        c.prune(2, "a");
        let nodes: Vec<_> = c.entries().iter().map(|e| &*e.node).collect();
        assert_eq!(nodes, vec!["a", "d"]);
    }

    fn tokens(key: &[u8], vs: &[Version]) -> u64 {
        let t = cas_token(key, vs);
        assert!((1..CAS_TOKEN_LIMIT).contains(&t), "token {t} out of range");
        t
    }

    #[test]
    fn keys_written_alike_get_different_tokens() {
        let v = write("a", &[], &VClock::new(), "same", 1);
        let all: std::collections::HashSet<u64> = (0..1000).map(|i| tokens(format!("k{i}").as_bytes(), &[v.clone()])).collect();
        assert_eq!(all.len(), 1000);
    }

    #[test]
    fn replicas_agree_and_sibling_order_does_not_count() {
        let x = write("a", &[], &VClock::new(), "x", 5);
        let y = write("b", &[], &VClock::new(), "y", 3);
        assert_eq!(tokens(b"k", &[x.clone(), y.clone()]), tokens(b"k", &[y.clone(), x.clone()]));
        assert_eq!(tokens(b"k", &[x.clone()]), tokens(b"k", &[x.clone()]));
        assert_ne!(tokens(b"k", &[x.clone(), y]), tokens(b"k", &[x]));
    }

    #[test]
    fn a_key_never_gets_back_a_token_it_had() {
        // Written, overwritten, deleted and reaped (the set starts empty
        // again, dots start over) many times: every token is new.
        let mut seen = std::collections::HashSet::new();
        let mut t = 1_700_000_000_000;
        for _life in 0..50 {
            let mut held: Vec<Version> = Vec::new();
            for i in 0..20 {
                t += 1;
                held = vec![write("a", &held, &context(&held), &i.to_string(), t)];
                assert!(seen.insert(tokens(b"k", &held)), "token repeated");
            }
            assert_eq!(held[0].dot.counter, 20);
        }
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn tokens_fill_the_range_below_the_limit() {
        // The digest is spread over [1, 2^32): some tokens land in the top
        // half, none at or above the limit.
        let v = write("a", &[], &VClock::new(), "v", 1);
        let top = (0..1000).filter(|i| tokens(format!("k{i}").as_bytes(), &[v.clone()]) >= CAS_TOKEN_LIMIT / 2).count();
        assert!((300..700).contains(&top), "{top} of 1000 in the top half");
        assert_ne!(cas_token(b"", &[]), 0);
    }

    fn arb_clock() -> impl Strategy<Value = VClock> {
        proptest::collection::vec((0..4u8, 0..5u64), 0..5).prop_map(|es| {
            let mut c = VClock::new();
            for (n, k) in es {
                c.advance(&format!("n{n}"), k, k);
            }
            c
        })
    }

    /// Histories of writes at random nodes with random (possibly stale) contexts.
    fn arb_versions() -> impl Strategy<Value = Vec<Version>> {
        proptest::collection::vec((0..3u8, any::<bool>(), 0..100u64), 1..8).prop_map(|steps| {
            let mut all: Vec<Version> = Vec::new();
            for (i, (node, with_ctx, t)) in steps.into_iter().enumerate() {
                let ctx = if with_ctx { context(&all) } else { VClock::new() };
                let v = stamp(&format!("n{node}"), &all, &ctx, payload(&i.to_string()), t, 10);
                all.push(v);
            }
            all
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative_and_associative(a in arb_clock(), b in arb_clock(), c in arb_clock()) {
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&a), a.clone());
        }

        #[test]
        fn compare_is_antisymmetric(a in arb_clock(), b in arb_clock()) {
            let expect = match a.compare(&b) {
                Causality::Before => Causality::After,
                Causality::After => Causality::Before,
                other => other,
            };
            prop_assert_eq!(b.compare(&a), expect);
            prop_assert_eq!(a.merge(&b).compare(&a) != Causality::Before, true);
        }

        #[test]
        fn sync_is_commutative_associative_idempotent(vs in arb_versions(), split1 in 0..8usize, split2 in 0..8usize) {
            let (s1, s2) = (split1.min(vs.len()), split2.min(vs.len()));
            let a = &vs[..s1.min(s2)];
            let b = &vs[s1.min(s2)..s1.max(s2)];
            let c = &vs[s1.max(s2)..];
            prop_assert_eq!(sync(a, b), sync(b, a));
            prop_assert_eq!(sync(&sync(a, b), c), sync(a, &sync(b, c)));
            let ab = sync(a, b);
            prop_assert_eq!(sync(&ab, &ab), ab.clone());
        }

        #[test]
        fn sync_never_drops_an_unsuperseded_version(vs in arb_versions()) {
            let merged = sync(&vs, &[]);
            for v in &vs {
                let kept = merged.iter().any(|m| m.dot == v.dot);
                let superseded = vs.iter().any(|o| o.supersedes(v));
                prop_assert_eq!(kept, !superseded);
            }
        }
    }
}

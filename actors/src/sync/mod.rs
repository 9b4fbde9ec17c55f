//! sync: keeps replicas equal in the background.
//!
//! - Hinted handoff: writes this node took as a stand-in for a down home
//!   node are delivered when that node is up again (at once when
//!   membership says so, and on a timer for any missed), then dropped.
//! - Anti-entropy: each round compares a few buckets' Merkle trees with a
//!   fellow home replica (their leaves, 64 a bucket), fetches keys only of
//!   the leaves that differ, and exchanges the keys whose versions differ
//!   both ways; the store merges by clock, so a newer or concurrent version
//!   is never dropped. Rounds are throttled (buckets and bytes per round).
//! - Bucket transfer: when the ring changes, buckets this node gained are
//!   pulled first (anti-entropy with every other home replica); buckets it
//!   lost are handed to their new home nodes and dropped only once every
//!   one of them has acknowledged them.
//! - Reaping: a key that holds only tombstones (or expired values) older
//!   than the grace period is removed once every home replica holds the
//!   very same versions, so no replica can bring the value back.
//!
//! The plans are made in the actor; the network and disk work runs as
//! futures outside its message loop.

mod plan;

pub use plan::{confirmed_reaps, entries_to_move};

use crate::api::{Peers, Request, Response};
use crate::error::{Error, Result};
use crate::hash::RingNode;
use crate::hash::{Ring, RingChanged, RingHandle};
use crate::membership::{Liveness, MemberUp, Settled};
use crate::stats::NodeStats;
use crate::store::merkle::{differing, SEGMENTS};
use crate::store::{
    BucketRoots, DropHint, Entry, GetSegments, Hints, MergeEntries, ReapCandidates, Recover, RemoveIfUnchanged, SegmentEntries,
    StoreAddr,
};
use crate::version::Version;
use actix::prelude::*;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
// The node's clock: tokio's, which the simulator pauses and moves by hand.
use tokio::time::Instant;

/// Keys sent in one merge request during a transfer.
const TRANSFER_CHUNK: usize = 256;

/// Buckets compared or moved at the same time within a round.
const BUCKETS_AT_ONCE: usize = 4;

#[derive(Clone)]
pub struct SyncSettings {
    pub me: SocketAddrV4,
    pub n: usize,
    pub reap_interval: Duration,
    /// How long a tombstone (or expired value) is kept before reaping.
    pub tombstone_grace: Duration,
    pub hint_interval: Duration,
    pub timeout: Duration,
    pub ae_interval: Duration,
    /// Throttle: buckets compared (or moved) per anti-entropy round.
    pub ae_buckets_per_round: usize,
    /// Throttle: value bytes moved per round; a round stops past it.
    pub ae_max_bytes_per_round: u64,
}

/// What one round (or one bucket of it) did.
#[derive(Default)]
struct Report {
    compared: u64,
    repaired: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Gained buckets now synced with every other home replica.
    pulled: Vec<u32>,
    /// Lost buckets handed off and dropped.
    handed_off: Vec<u32>,
    /// Pending buckets that needed nothing moved (their replicas agreed,
    /// or a lost one was empty): no longer pending, and no part of a
    /// transfer, so a restart in sync shows none.
    settled: Vec<u32>,
    /// Buckets this node is no home of that still hold copies.
    strays: Vec<u32>,
}

impl Report {
    fn add(&mut self, other: Report) {
        self.compared += other.compared;
        self.repaired += other.repaired;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.pulled.extend(other.pulled);
        self.handed_off.extend(other.handed_off);
        self.settled.extend(other.settled);
        self.strays.extend(other.strays);
    }
}

/// The network side of the work, cloned into each round's future.
#[derive(Clone)]
struct Remote {
    store: StoreAddr,
    peers: Peers,
    timeout: Duration,
}

impl Remote {
    /// Compares buckets with their peers, several at once; false once the
    /// round's byte budget is spent (what was cut off is simply compared
    /// again next round).
    async fn pull_all(&self, pulls: Vec<(Pending, bool)>, max_bytes: u64, report: &mut Report) -> bool {
        let mut pulled = stream::iter(pulls)
            .map(|((bucket, peers), is_gained)| self.pull(bucket, peers, is_gained))
            .buffer_unordered(BUCKETS_AT_ONCE);
        while let Some(outcome) = pulled.next().await {
            report.add(outcome);
            if report.bytes_in + report.bytes_out > max_bytes {
                return false;
            }
        }
        true
    }

    /// One bucket compared with each of `peers`; a gained bucket counts as
    /// pulled only once every peer answered.
    async fn pull(&self, bucket: u32, peers: Vec<SocketAddrV4>, is_gained: bool) -> Report {
        let mut outcome = Report::default();
        let mut all_ok = true;
        for peer in peers {
            match self.compare(bucket, peer).await {
                Ok((moved, bytes_in, bytes_out)) => {
                    outcome.compared += 1;
                    outcome.repaired += moved;
                    outcome.bytes_in += bytes_in;
                    outcome.bytes_out += bytes_out;
                }
                Err(e) => {
                    tracing::debug!(bucket, %peer, "anti-entropy failed: {e}");
                    all_ok = false;
                }
            }
        }
        if is_gained && all_ok {
            outcome.pulled.push(bucket);
        }
        outcome
    }

    /// Hands lost buckets to their homes, several at once, within the
    /// round's byte budget.
    async fn hand_off_all(&self, handoffs: Vec<Pending>, max_bytes: u64, report: &mut Report) {
        let mut handed = stream::iter(handoffs)
            .map(|(bucket, homes)| async move { (bucket, self.hand_off(bucket, homes).await) })
            .buffer_unordered(BUCKETS_AT_ONCE);
        while let Some((bucket, result)) = handed.next().await {
            match result {
                Ok(bytes) => {
                    report.bytes_out += bytes;
                    report.handed_off.push(bucket);
                }
                Err(e) => tracing::debug!(bucket, "hand-off failed, will retry: {e}"),
            }
            if report.bytes_in + report.bytes_out > max_bytes {
                break;
            }
        }
    }

    async fn call(&self, peer: SocketAddrV4, request: Request) -> Result<Response> {
        self.peers.call(SocketAddr::V4(peer), request, self.timeout).await
    }

    async fn merge_into(&self, peer: SocketAddrV4, entries: Vec<Entry>) -> Result<()> {
        for chunk in entries.chunks(TRANSFER_CHUNK) {
            match self.call(peer, Request::MergeEntries { entries: chunk.to_vec() }).await? {
                Response::Done => {}
                other => return Err(Error::Protocol(format!("{peer} answered a merge with {other:?}"))),
            }
        }
        Ok(())
    }

    /// Compares one bucket with `peer` and exchanges what differs:
    /// (keys moved, bytes in, bytes out).
    async fn compare(&self, bucket: u32, peer: SocketAddrV4) -> Result<(u64, u64, u64)> {
        let mine = self.store.send(GetSegments(bucket)).await?;
        let theirs = match self.call(peer, Request::Segments { bucket }).await? {
            Response::Segments(s) if s.len() == SEGMENTS => s,
            other => return Err(Error::Protocol(format!("{peer} answered segments with {other:?}"))),
        };
        // Equal leaves are equal roots: nothing to do for this bucket.
        let segments = differing(&mine, &theirs);
        if segments.is_empty() {
            return Ok((0, 0, 0));
        }
        let my_entries = self.store.send(SegmentEntries { bucket, segments: segments.clone() }).await??;
        let request = Request::SegmentEntries { bucket, segments: segments.iter().map(|&s| s as u32).collect() };
        let their_entries = match self.call(peer, request).await? {
            Response::Entries(e) => e,
            other => return Err(Error::Protocol(format!("{peer} answered entries with {other:?}"))),
        };
        let (pull, push) = entries_to_move(&my_entries, &their_entries);
        let (bytes_in, bytes_out) = (value_bytes(&pull), value_bytes(&push));
        let moved = (pull.len() + push.len()) as u64;
        if !pull.is_empty() {
            self.store.send(MergeEntries(pull)).await??;
        }
        if !push.is_empty() {
            self.merge_into(peer, push).await?;
        }
        Ok((moved, bytes_in, bytes_out))
    }

    /// Settles at once, in one exchange per fellow replica, the pending
    /// buckets that need nothing moved: gained buckets whose Merkle roots
    /// every other home replica shares, and lost buckets holding nothing.
    /// Answers the pending buckets that are left.
    async fn settle_quickly(
        &self,
        gained: Vec<Pending>,
        lost: Vec<Pending>,
        report: &mut Report,
    ) -> (Vec<Pending>, Vec<Pending>) {
        let buckets: Vec<u32> = gained.iter().chain(&lost).map(|(b, _)| *b).collect();
        if buckets.is_empty() {
            return (gained, lost);
        }
        let Ok(roots) = self.store.send(BucketRoots(buckets.clone())).await else { return (gained, lost) };
        let mine: HashMap<u32, u64> = buckets.into_iter().zip(roots).collect();
        let (empty, lost): (Vec<Pending>, Vec<Pending>) = lost.into_iter().partition(|(b, _)| mine.get(b) == Some(&0));
        report.settled.extend(empty.iter().map(|(b, _)| *b));
        let mut shared: BTreeMap<SocketAddrV4, Vec<u32>> = BTreeMap::new();
        for (b, peers) in &gained {
            for peer in peers {
                shared.entry(*peer).or_default().push(*b);
            }
        }
        let mut agreeing: HashMap<u32, usize> = HashMap::new();
        for (peer, buckets) in shared {
            let Some(theirs) = self.roots_at(peer, &buckets).await else { continue };
            for (b, root) in buckets.into_iter().zip(theirs) {
                if mine.get(&b) == Some(&root) {
                    *agreeing.entry(b).or_default() += 1;
                }
            }
        }
        let (settled, gained): (Vec<Pending>, Vec<Pending>) =
            gained.into_iter().partition(|(b, peers)| agreeing.get(b).copied().unwrap_or(0) == peers.len());
        report.compared += settled.len() as u64;
        report.settled.extend(settled.iter().map(|(b, _)| *b));
        (gained, lost)
    }

    /// `peer`'s Merkle roots of these buckets, in one exchange (None if it
    /// does not answer in kind).
    async fn roots_at(&self, peer: SocketAddrV4, buckets: &[u32]) -> Option<Vec<u64>> {
        match self.call(peer, Request::BucketRoots { buckets: buckets.to_vec() }).await {
            Ok(Response::Roots(theirs)) if theirs.len() == buckets.len() => Some(theirs),
            Ok(other) => {
                tracing::debug!(%peer, "bucket roots answered with {other:?}");
                None
            }
            Err(e) => {
                tracing::debug!(%peer, "bucket roots failed: {e}");
                None
            }
        }
    }

    /// The buckets among `buckets` whose Merkle roots differ between this
    /// node and `peer` (none if the peer does not answer).
    async fn differing_roots(&self, peer: SocketAddrV4, buckets: Vec<u32>) -> Vec<u32> {
        let Ok(mine) = self.store.send(BucketRoots(buckets.clone())).await else { return Vec::new() };
        let Some(theirs) = self.roots_at(peer, &buckets).await else { return Vec::new() };
        buckets.into_iter().zip(mine.into_iter().zip(theirs)).filter(|(_, (a, b))| a != b).map(|(b, _)| b).collect()
    }

    /// Hands a lost bucket to every one of its home nodes, then drops
    /// what they all acknowledged (keys written meanwhile stay).
    async fn hand_off(&self, bucket: u32, homes: Vec<SocketAddrV4>) -> Result<u64> {
        let all: Vec<usize> = (0..SEGMENTS).collect();
        let entries = self.store.send(SegmentEntries { bucket, segments: all }).await??;
        if entries.is_empty() {
            return Ok(0);
        }
        for home in homes {
            self.merge_into(home, entries.clone()).await?;
        }
        let bytes = value_bytes(&entries);
        self.store.send(RemoveIfUnchanged(entries)).await??;
        Ok(bytes)
    }
}

/// A pending bucket and the other home replicas it is moved with.
type Pending = (u32, Vec<SocketAddrV4>);

/// The bucket movement since the work began: what `transfers` shows.
#[derive(Default)]
struct Transfer {
    started: Option<Instant>,
    /// Buckets settled since the work began.
    done: BTreeSet<u32>,
    bytes_in: u64,
    bytes_out: u64,
}

impl Transfer {
    fn begin() -> Self {
        Transfer { started: Some(Instant::now()), ..Default::default() }
    }

    /// Progress against what is still pending: distinct buckets, so the
    /// total never exceeds the ring's, and done equals total exactly when
    /// nothing is pending.
    fn progress(&self, pending: &BTreeSet<u32>) -> TransferProgress {
        let total = self.done.union(pending).count() as u64;
        let done = self.done.difference(pending).count() as u64;
        let eta_secs = match (self.started, done) {
            (Some(started), d) if d > 0 && !pending.is_empty() => {
                Some((started.elapsed().as_secs_f64() * pending.len() as f64 / d as f64).ceil() as u64)
            }
            (_, _) if pending.is_empty() => Some(0),
            _ => None,
        };
        TransferProgress {
            buckets_total: total,
            buckets_done: done,
            eta_secs,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
        }
    }
}

fn value_bytes(entries: &[Entry]) -> u64 {
    entries.iter().flat_map(|(_, vs)| vs.iter()).map(|v| v.value.len() as u64).sum()
}

pub struct SyncActor {
    settings: SyncSettings,
    ring: RingHandle,
    liveness: Liveness,
    remote: Remote,
    stats: Arc<NodeStats>,
    /// The ring the plans below were made for.
    ring_seen: Arc<Ring>,
    /// Buckets this node gained, to pull before anything else.
    gained: BTreeSet<u32>,
    /// Buckets this node lost, to hand off and then drop.
    lost: BTreeSet<u32>,
    /// Which fellow replica the next background round compares with.
    cursor: u32,
    transfer: Transfer,
    /// Told whenever nothing is left to pull or hand off.
    settled_to: Option<Recipient<Settled>>,
    in_round: bool,
    delivering: bool,
    reaping: bool,
}

impl SyncActor {
    pub fn new(
        settings: SyncSettings,
        ring: RingHandle,
        liveness: Liveness,
        store: StoreAddr,
        peers: Peers,
        stats: Arc<NodeStats>,
    ) -> Self {
        let remote = Remote { store, peers, timeout: settings.timeout };
        // Plans start from a ring of this node alone: whatever ring it runs
        // on then counts as a change, so a new or restarted node pulls its
        // buckets (settling at once those its fellows already agree on) and
        // hands off any it holds but is not home to, wherever a transfer
        // was cut off before.
        let ring_seen = Arc::new(Ring::new(ring.snapshot().number_of_buckets(), [RingNode::new(settings.me, 1)]));
        let mut sync = SyncActor {
            settings,
            ring,
            liveness,
            remote,
            stats,
            ring_seen,
            gained: BTreeSet::new(),
            lost: BTreeSet::new(),
            cursor: 0,
            transfer: Transfer::default(),
            settled_to: None,
            in_round: false,
            delivering: false,
            reaping: false,
        };
        // Planned at once, before the node takes requests: a restarted
        // node never shows nothing pending while its plan is still to come.
        sync.follow_ring();
        sync
    }

    fn pending(&self) -> BTreeSet<u32> {
        self.gained.union(&self.lost).copied().collect()
    }

    fn count_pending(&self) {
        self.stats.buckets_pending.store((self.gained.len() + self.lost.len()) as i64, Relaxed);
    }

    /// Notices a new ring and plans the buckets to move.
    fn follow_ring(&mut self) -> Arc<Ring> {
        let ring = self.ring.snapshot();
        if !Arc::ptr_eq(&self.ring_seen, &ring) {
            let (gained, lost) = self.ring_seen.home_changes(&ring, &self.settings.me, self.settings.n);
            if !gained.is_empty() || !lost.is_empty() {
                tracing::info!(gained = gained.len(), lost = lost.len(), "ring changed: moving buckets");
                if self.gained.is_empty() && self.lost.is_empty() {
                    self.transfer = Transfer::begin();
                }
            }
            for b in gained {
                self.lost.remove(&b);
                self.gained.insert(b);
            }
            for b in lost {
                self.gained.remove(&b);
                self.lost.insert(b);
            }
            self.ring_seen = ring.clone();
        }
        // A bucket this node is home of again is no longer to hand off
        // (strays found on an older ring may have become so).
        let (me, n) = (self.settings.me, self.settings.n);
        self.lost.retain(|b| !ring.home(*b, n).contains(&me));
        self.count_pending();
        ring
    }

    /// Tells membership when nothing is pending (joining becomes up,
    /// leaving becomes removed), for the ring the plan was made for.
    fn report_if_settled(&self, ring: &Ring) {
        if let (true, Some(listener)) = (self.gained.is_empty() && self.lost.is_empty(), &self.settled_to) {
            let ring_has_me = ring.nodes().any(|n| n.addr == self.settings.me);
            listener.do_send(Settled { ring_nodes: ring.len(), ring_has_me });
        }
    }

    /// The other home replicas of a bucket that are up.
    fn fellows(&self, ring: &Ring, bucket: u32) -> Vec<SocketAddrV4> {
        let down = self.liveness.down();
        ring.home(bucket, self.settings.n).iter().filter(|a| **a != self.settings.me && !down.contains(a)).copied().collect()
    }

    fn all_homes_up(&self, ring: &Ring, bucket: u32) -> Option<Vec<SocketAddrV4>> {
        let down = self.liveness.down();
        let homes = ring.home(bucket, self.settings.n);
        homes.iter().all(|a| !down.contains(a)).then(|| homes.iter().filter(|a| **a != self.settings.me).copied().collect())
    }

    /// One anti-entropy round: pending buckets that need nothing moved
    /// settle at once; then, within the round's budget, gained buckets are
    /// pulled, lost ones handed off, and held buckets compared in turn.
    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.in_round {
            return;
        }
        let ring = self.follow_ring();
        let (me, n, budget) = (self.settings.me, self.settings.n, self.settings.ae_buckets_per_round);
        self.report_if_settled(&ring);
        let gained: Vec<Pending> =
            self.gained.iter().filter_map(|&b| self.all_homes_up(&ring, b).map(|others| (b, others))).collect();
        let lost: Vec<Pending> = self.lost.iter().filter_map(|&b| self.all_homes_up(&ring, b).map(|homes| (b, homes))).collect();
        // Buckets this node is no home of and does not plan to hand off: any
        // that holds something (a read repair from a coordinator still on
        // the old ring, say) is found below and handed off too.
        let strays: Vec<u32> =
            (0..ring.number_of_buckets()).filter(|b| !ring.home(*b, n).contains(&me) && !self.lost.contains(b)).collect();
        let background = self.background_peer(&ring);
        self.in_round = true;
        let (remote, max_bytes) = (self.remote.clone(), self.settings.ae_max_bytes_per_round);
        let work = async move {
            let mut report = Report::default();
            if let Ok(roots) = remote.store.send(BucketRoots(strays.clone())).await {
                report.strays = strays.into_iter().zip(roots).filter(|(_, root)| *root != 0).map(|(b, _)| b).collect();
            }
            let (gained, lost) = remote.settle_quickly(gained, lost, &mut report).await;
            // Then the real work, pending buckets first, within the budget.
            // Pending buckets (a transfer) are throttled by bytes only, so
            // a join or removal finishes as fast as the byte budget lets
            // it; of the background buckets, only those whose roots differ
            // are compared leaf by leaf, at most the bucket budget a round.
            let mut pulls: Vec<(Pending, bool)> = gained.into_iter().map(|p| (p, true)).collect();
            if let Some((peer, buckets)) = background {
                report.compared += buckets.len() as u64;
                let differing = remote.differing_roots(peer, buckets).await;
                pulls.extend(differing.into_iter().take(budget).map(|b| ((b, vec![peer]), false)));
            }
            if remote.pull_all(pulls, max_bytes, &mut report).await {
                remote.hand_off_all(lost, max_bytes, &mut report).await;
            }
            report
        };
        ctx.spawn(work.into_actor(self).map(|report, act, _| act.finish_round(report)));
    }

    /// Background anti-entropy: one fellow replica a round, in turn, with
    /// all the buckets shared with it, compared by root in one exchange.
    fn background_peer(&mut self, ring: &Ring) -> Option<(SocketAddrV4, Vec<u32>)> {
        let (me, n) = (self.settings.me, self.settings.n);
        let mut shared: BTreeMap<SocketAddrV4, Vec<u32>> = BTreeMap::new();
        for b in ring.buckets_of(&me, n) {
            for peer in self.fellows(ring, b) {
                shared.entry(peer).or_default().push(b);
            }
        }
        match shared.len() {
            0 => None,
            peers => {
                self.cursor = self.cursor.wrapping_add(1);
                shared.into_iter().nth(self.cursor as usize % peers)
            }
        }
    }

    /// Takes in what a round did: buckets moved, strays found, stats.
    fn finish_round(&mut self, report: Report) {
        self.in_round = false;
        NodeStats::add(&self.stats.ae_compared, report.compared);
        NodeStats::add(&self.stats.ae_repaired, report.repaired);
        for b in report.pulled.iter().chain(&report.handed_off) {
            if self.gained.remove(b) || self.lost.remove(b) {
                self.transfer.done.insert(*b);
            }
        }
        for b in &report.settled {
            self.gained.remove(b);
            self.lost.remove(b);
        }
        // Strays were found on the ring the round began with; one that
        // changed meanwhile may have made this node their home again.
        let (me, n) = (self.settings.me, self.settings.n);
        let strays: Vec<u32> = report.strays.into_iter().filter(|b| !self.ring_seen.home(*b, n).contains(&me)).collect();
        if !strays.is_empty() {
            tracing::info!(buckets = strays.len(), "copies found in buckets this node is no home of: handing them off");
            self.lost.extend(strays);
        }
        if self.transfer.started.is_some() {
            self.transfer.bytes_in += report.bytes_in;
            self.transfer.bytes_out += report.bytes_out;
        }
        self.count_pending();
        let ring = self.ring_seen.clone();
        self.report_if_settled(&ring);
    }

    /// Delivers every hint whose home node is up now.
    fn deliver_hints(&mut self, ctx: &mut Context<Self>) {
        if self.delivering {
            return;
        }
        self.delivering = true;
        let (remote, liveness, stats) = (self.remote.clone(), self.liveness.clone(), self.stats.clone());
        let (ring, me, n) = (self.ring.snapshot(), self.settings.me, self.settings.n);
        let work = async move {
            let hints = remote.store.send(Hints).await??;
            stats.hints_pending.store(hints.len() as i64, Relaxed);
            // By key: a stand-in drops its copy of a key only once every
            // home it held the key for has it, and only if it is no home
            // of the key itself.
            let mut by_key: BTreeMap<Bytes, Vec<(String, Vec<Version>)>> = BTreeMap::new();
            for (home, key, versions) in hints {
                by_key.entry(key).or_default().push((home, versions));
            }
            let down = liveness.down();
            let mut delivered = 0;
            'keys: for (key, homes) in by_key {
                let stand_in = !ring.home(ring.bucket_of(&key), n).contains(&me);
                let count = homes.len();
                for (i, (home, versions)) in homes.into_iter().enumerate() {
                    let Ok(addr) = home.parse::<SocketAddrV4>() else { continue 'keys };
                    if down.contains(&addr) {
                        continue 'keys;
                    }
                    let put = Request::ReplicaPut { key: key.clone(), versions: versions.clone(), hint: None };
                    match remote.call(addr, put).await {
                        Ok(Response::Done) => {
                            let drop_copy = stand_in && i + 1 == count;
                            let drop = DropHint { home, key: key.clone(), delivered: versions, drop_copy };
                            if !remote.store.send(drop).await?? {
                                continue 'keys; // written meanwhile: next time
                            }
                            delivered += 1;
                            stats.hints_pending.fetch_sub(1, Relaxed);
                        }
                        Ok(other) => {
                            tracing::debug!(%addr, "hint refused: {other:?}");
                            continue 'keys;
                        }
                        // The home node is unreachable after all: try later.
                        Err(e) => {
                            tracing::debug!(%addr, "hint delivery failed: {e}");
                            break 'keys;
                        }
                    }
                }
            }
            Ok::<u64, Error>(delivered)
        };
        ctx.spawn(work.into_actor(self).map(|result: Result<u64>, act, _| {
            act.delivering = false;
            match result {
                Ok(n) if n > 0 => tracing::info!(delivered = n, "hinted writes handed off"),
                Ok(_) => {}
                Err(e) => tracing::warn!("hint delivery failed: {e}"),
            }
        }));
    }

    /// Reaps dead keys that every home replica holds exactly as this one.
    fn reap(&mut self, ctx: &mut Context<Self>) {
        if self.reaping {
            return;
        }
        let ring = self.follow_ring();
        // Only buckets whose home replicas are all up can be confirmed.
        let others: BTreeMap<u32, Vec<SocketAddrV4>> = ring
            .buckets_of(&self.settings.me, self.settings.n)
            .into_iter()
            .filter_map(|b| self.all_homes_up(&ring, b).map(|others| (b, others)))
            .collect();
        if others.is_empty() {
            return;
        }
        self.reaping = true;
        let (remote, grace, stats) = (self.remote.clone(), self.settings.tombstone_grace.as_secs(), self.stats.clone());
        let work = async move {
            let buckets: Vec<u32> = others.keys().copied().collect();
            let candidates = remote.store.send(ReapCandidates { buckets, grace_secs: grace }).await??;
            if candidates.is_empty() {
                return Ok(0);
            }
            let others_of = |key: &[u8]| others.get(&ring.bucket_of(key)).cloned().unwrap_or_default();
            let mut asks: BTreeMap<SocketAddrV4, Vec<Bytes>> = BTreeMap::new();
            for (key, _) in &candidates {
                for peer in others_of(key) {
                    asks.entry(peer).or_default().push(key.clone());
                }
            }
            let mut answers: BTreeMap<SocketAddrV4, HashMap<Bytes, Vec<Version>>> = BTreeMap::new();
            for (peer, keys) in asks {
                for chunk in keys.chunks(TRANSFER_CHUNK) {
                    match remote.call(peer, Request::ReadKeys { keys: chunk.to_vec() }).await {
                        Ok(Response::Entries(entries)) => answers.entry(peer).or_default().extend(entries),
                        Ok(_) | Err(_) => break, // unconfirmed: try again next time
                    }
                }
            }
            let confirmed = confirmed_reaps(&candidates, others_of, &answers);
            if confirmed.is_empty() {
                return Ok(0);
            }
            let reaped = remote.store.send(RemoveIfUnchanged(confirmed)).await??;
            NodeStats::add(&stats.reaped_versions, reaped);
            Ok::<u64, Error>(reaped)
        };
        ctx.spawn(work.into_actor(self).map(|result: Result<u64>, act, _| {
            act.reaping = false;
            match result {
                Ok(n) if n > 0 => tracing::info!(keys = n, "reaped tombstones every replica holds"),
                Ok(_) => {}
                Err(e) => tracing::warn!("reaping failed: {e}"),
            }
        }));
    }
}

/// Bucket transfers under way.
#[derive(Message)]
#[rtype(result = "TransferProgress")]
pub struct GetTransfers;

/// Whom to tell when nothing is left to move (membership).
#[derive(Message)]
#[rtype(result = "()")]
pub struct NotifySettled(pub Recipient<Settled>);

impl Handler<NotifySettled> for SyncActor {
    type Result = ();
    fn handle(&mut self, NotifySettled(listener): NotifySettled, _: &mut Self::Context) {
        self.settled_to = Some(listener);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct AntiEntropyTick;

#[derive(Message)]
#[rtype(result = "()")]
struct ReapTick;

#[derive(Message)]
#[rtype(result = "()")]
struct HintTick;

impl Actor for SyncActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.in_round = false;
        self.delivering = false;
        self.reaping = false;
        ctx.run_interval(self.settings.ae_interval, |_, ctx| ctx.notify(AntiEntropyTick));
        ctx.run_interval(self.settings.reap_interval, |_, ctx| ctx.notify(ReapTick));
        ctx.run_interval(self.settings.hint_interval, |_, ctx| ctx.notify(HintTick));
    }
}

crate::supervised!(SyncActor, "sync");

impl Handler<AntiEntropyTick> for SyncActor {
    type Result = ();
    fn handle(&mut self, _: AntiEntropyTick, ctx: &mut Self::Context) {
        if !self.remote.store.direct.is_writable() {
            // A full disk is a state, not a death: try writes again.
            let recover = self.remote.store.send(Recover);
            ctx.spawn(async move { recover.await.ok() }.into_actor(self).map(|_, _, _| ()));
        }
        self.round(ctx);
    }
}

impl Handler<HintTick> for SyncActor {
    type Result = ();
    fn handle(&mut self, _: HintTick, ctx: &mut Self::Context) {
        self.deliver_hints(ctx);
    }
}

impl Handler<ReapTick> for SyncActor {
    type Result = ();
    fn handle(&mut self, _: ReapTick, ctx: &mut Self::Context) {
        self.reap(ctx);
    }
}

impl Handler<MemberUp> for SyncActor {
    type Result = ();
    fn handle(&mut self, MemberUp(node): MemberUp, ctx: &mut Self::Context) {
        tracing::debug!(%node, "member up: handing off hints");
        self.deliver_hints(ctx);
    }
}

impl Handler<RingChanged> for SyncActor {
    type Result = ();
    /// Plans the transfers at once (so `kai_buckets_pending` tells the
    /// truth) and starts moving without waiting for the next round.
    fn handle(&mut self, _: RingChanged, ctx: &mut Self::Context) {
        self.follow_ring();
        self.round(ctx);
    }
}

impl Handler<GetTransfers> for SyncActor {
    type Result = MessageResult<GetTransfers>;
    fn handle(&mut self, _: GetTransfers, _: &mut Self::Context) -> Self::Result {
        self.follow_ring();
        MessageResult(self.transfer.progress(&self.pending()))
    }
}

/// `transfers`: bucket transfers under way on this node.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Transfers;

crate::admin_command!(Transfers, "transfers", Sync, TransferProgress);

/// Bucket movement after a membership change, as the admin tool shows it.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
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

/// Serves sync's admin commands.
pub fn serve(sync: &Addr<SyncActor>, request: crate::api::Request) -> ResponseFuture<crate::api::Response> {
    use crate::api::admin::{answer, AdminCommand};
    use crate::api::{respond, Request};
    let Request::Admin(call) = &request else { return respond::misrouted("sync", &request) };
    match call.command.as_str() {
        Transfers::NAME => {
            let progress = sync.send(GetTransfers);
            answer(call, |Transfers| async move { Ok(progress.await?) })
        }
        _ => call.unknown(),
    }
}

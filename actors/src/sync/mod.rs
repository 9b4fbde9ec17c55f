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

use crate::api::{Peers, Request, Response, TransferProgress};
use crate::error::{Error, Result};
use crate::hash::{Ring, RingHandle};
use crate::membership::{Liveness, MemberUp};
use crate::stats::NodeStats;
use crate::store::merkle::{differing, SEGMENTS};
use crate::store::{
    DropHint, Entry, GetSegments, Hints, MergeEntries, ReapCandidates, RemoveIfUnchanged, SegmentEntries, StoreAddr,
};
use crate::version::Version;
use actix::prelude::*;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

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
}

impl Report {
    fn add(&mut self, other: Report) {
        self.compared += other.compared;
        self.repaired += other.repaired;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.pulled.extend(other.pulled);
        self.handed_off.extend(other.handed_off);
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
    async fn call(&self, peer: SocketAddrV4, request: Request) -> Result<Response> {
        match self.peers.call(SocketAddr::V4(peer), request, self.timeout).await? {
            Response::Error(why) => Err(Error::Unavailable(why)),
            other => Ok(other),
        }
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
    ring_seen: Option<Arc<Ring>>,
    /// Buckets this node gained, to pull before anything else.
    gained: VecDeque<u32>,
    /// Buckets this node lost, to hand off and then drop.
    lost: BTreeSet<u32>,
    /// Where the round-robin over held buckets goes on.
    cursor: u32,
    progress: TransferProgress,
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
        // The ring at start (this node alone, until gossip brings the rest):
        // joining the cluster then counts as gaining its buckets, so a new
        // or restarted node pulls them first.
        let ring_seen = Some(ring.snapshot());
        SyncActor {
            settings,
            ring,
            liveness,
            remote,
            stats,
            ring_seen,
            gained: VecDeque::new(),
            lost: BTreeSet::new(),
            cursor: 0,
            progress: TransferProgress::default(),
            in_round: false,
            delivering: false,
            reaping: false,
        }
    }

    /// Notices a new ring and plans the buckets to move.
    fn follow_ring(&mut self) -> Arc<Ring> {
        let ring = self.ring.snapshot();
        let changed = self.ring_seen.as_ref().is_none_or(|seen| !Arc::ptr_eq(seen, &ring));
        if changed {
            if let Some(seen) = &self.ring_seen {
                let (gained, lost) = seen.home_changes(&ring, &self.settings.me, self.settings.n);
                if !gained.is_empty() || !lost.is_empty() {
                    tracing::info!(gained = gained.len(), lost = lost.len(), "ring changed: moving buckets");
                    self.progress = TransferProgress {
                        buckets_total: (gained.len() + lost.len() + self.gained.len() + self.lost.len()) as u64,
                        ..Default::default()
                    };
                }
                for b in &gained {
                    self.lost.remove(b);
                }
                self.gained.retain(|b| !lost.contains(b));
                self.gained.extend(gained);
                self.lost.extend(lost);
            }
            self.ring_seen = Some(ring.clone());
        }
        self.stats.buckets_pending.store((self.gained.len() + self.lost.len()) as i64, Relaxed);
        ring
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

    /// One anti-entropy round: gained buckets first, then lost ones, then
    /// the held buckets in turn.
    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.in_round {
            return;
        }
        let ring = self.follow_ring();
        let budget = self.settings.ae_buckets_per_round;
        let mut pulls: Vec<(u32, Vec<SocketAddrV4>, bool)> = Vec::new();
        for &b in self.gained.iter().take(budget) {
            if let Some(others) = self.all_homes_up(&ring, b) {
                pulls.push((b, others, true));
            }
        }
        let mut handoffs = Vec::new();
        for &b in self.lost.iter().take(budget.saturating_sub(pulls.len())) {
            if let Some(homes) = self.all_homes_up(&ring, b) {
                if !ring.home(b, self.settings.n).contains(&self.settings.me) {
                    handoffs.push((b, homes));
                }
            }
        }
        let held = ring.buckets_of(&self.settings.me, self.settings.n);
        let mut rng = rand::thread_rng();
        for _ in 0..budget.saturating_sub(pulls.len() + handoffs.len()).min(held.len()) {
            let b = held[self.cursor as usize % held.len()];
            self.cursor = self.cursor.wrapping_add(1);
            if let Some(&peer) = self.fellows(&ring, b).choose(&mut rng) {
                pulls.push((b, vec![peer], false));
            }
        }
        if pulls.is_empty() && handoffs.is_empty() {
            return;
        }
        self.in_round = true;
        let (remote, max_bytes) = (self.remote.clone(), self.settings.ae_max_bytes_per_round);
        let work = async move {
            let mut report = Report::default();
            // Several buckets at once; a round ends early once its byte
            // budget is spent (what was cut off is simply compared again).
            let mut pulled = stream::iter(pulls)
                .map(|(bucket, peers, is_gained)| {
                    let remote = remote.clone();
                    async move {
                        let mut outcome = Report::default();
                        let mut all_ok = true;
                        for peer in peers {
                            match remote.compare(bucket, peer).await {
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
                })
                .buffer_unordered(BUCKETS_AT_ONCE);
            while let Some(outcome) = pulled.next().await {
                report.add(outcome);
                if report.bytes_in + report.bytes_out > max_bytes {
                    return report;
                }
            }
            drop(pulled);
            let mut handed = stream::iter(handoffs)
                .map(|(bucket, homes)| {
                    let remote = remote.clone();
                    async move { (bucket, remote.hand_off(bucket, homes).await) }
                })
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
            report
        };
        ctx.spawn(work.into_actor(self).map(|report, act, _| {
            act.in_round = false;
            NodeStats::add(&act.stats.ae_compared, report.compared);
            NodeStats::add(&act.stats.ae_repaired, report.repaired);
            act.gained.retain(|b| !report.pulled.contains(b));
            for b in &report.handed_off {
                act.lost.remove(b);
            }
            let done = (report.pulled.len() + report.handed_off.len()) as u64;
            act.progress.buckets_done = (act.progress.buckets_done + done).min(act.progress.buckets_total);
            if act.progress.buckets_total > 0 {
                act.progress.bytes_in += report.bytes_in;
                act.progress.bytes_out += report.bytes_out;
            }
            act.stats.buckets_pending.store((act.gained.len() + act.lost.len()) as i64, Relaxed);
        }));
    }

    /// Delivers every hint whose home node is up now.
    fn deliver_hints(&mut self, ctx: &mut Context<Self>) {
        if self.delivering {
            return;
        }
        self.delivering = true;
        let (remote, liveness, stats) = (self.remote.clone(), self.liveness.clone(), self.stats.clone());
        let work = async move {
            let hints = remote.store.send(Hints).await??;
            stats.hints_pending.store(hints.len() as i64, Relaxed);
            let down = liveness.down();
            let mut delivered = 0;
            for (home, key, versions) in hints {
                let Ok(addr) = home.parse::<SocketAddrV4>() else { continue };
                if down.contains(&addr) {
                    continue;
                }
                let put = Request::ReplicaPut { key: key.clone(), versions: versions.clone(), hint: None };
                match remote.call(addr, put).await {
                    Ok(Response::Done) => {
                        if remote.store.send(DropHint { home, key, delivered: versions }).await?? {
                            delivered += 1;
                            stats.hints_pending.fetch_sub(1, Relaxed);
                        }
                    }
                    Ok(other) => tracing::debug!(%addr, "hint refused: {other:?}"),
                    // The home node is unreachable after all: try later.
                    Err(e) => {
                        tracing::debug!(%addr, "hint delivery failed: {e}");
                        break;
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
        let others: HashMap<u32, Vec<SocketAddrV4>> = ring
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

impl Handler<GetTransfers> for SyncActor {
    type Result = MessageResult<GetTransfers>;
    fn handle(&mut self, _: GetTransfers, _: &mut Self::Context) -> Self::Result {
        self.follow_ring();
        MessageResult(self.progress.clone())
    }
}

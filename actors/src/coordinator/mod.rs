//! coordinator: runs client reads and writes. For each request it picks
//! the replicas from the published ring and liveness (sloppy quorum: the
//! first N nodes of the key's preference list that are up, a stand-in
//! holding a hint for each down home node), forwards the request when this
//! node is not among them, and otherwise starts one short-lived
//! `QuorumActor`, which gathers R or W replies within one deadline.

mod quorum;
mod tally;

pub use quorum::{Ask, Job, QuorumActor};
pub use tally::{QuorumTally, TallyState};

use crate::api::{ForwardOp, Peers, Request, Response};
use crate::error::{Error, Result};
use crate::hash::{Ring, RingHandle};
use crate::local_oneshot as oneshot;
use crate::membership::Liveness;
use crate::stats::NodeStats;
use crate::store::{CoordinateWrite, ReplicaPut, StoreAddr, Write, WriteOutcome};
use crate::version::{Version, VersionActor};
use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::Instant as Deadline;

/// A forwarded request may be forwarded again (rings disagree for a
/// moment while membership spreads), but not round and round.
pub const MAX_HOPS: u8 = 2;

/// One replica a request goes to; a stand-in names the home node it holds
/// the write for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: SocketAddrV4,
    pub hint: Option<SocketAddrV4>,
}

/// A request's replicas: N of them, inline (no allocation a request).
pub type Targets = smallvec::SmallVec<[Target; 3]>;

/// Sloppy quorum: the first `n` nodes of `preference` that are not down.
/// Each stand-in (a live node past the first `n`) takes the hint of one
/// down home node, in order.
pub fn choose_targets(preference: &[SocketAddrV4], n: usize, down: &BTreeSet<SocketAddrV4>) -> Targets {
    let home = &preference[..n.min(preference.len())];
    let mut down_homes = home.iter().filter(|a| down.contains(a));
    preference
        .iter()
        .enumerate()
        .filter(|(_, a)| !down.contains(a))
        .take(n)
        .map(|(i, a)| Target { node: *a, hint: if i >= n { down_homes.next().copied() } else { None } })
        .collect()
}

/// How requests reach a replica: this node's store directly, any other
/// node through the internal API.
#[derive(Clone)]
pub struct Replicas {
    pub me: SocketAddrV4,
    pub store: StoreAddr,
    pub peers: Peers,
}

/// A replica's versions of a key, and when a client last read it there
/// (ms since the epoch; 0: not since that node started, or not asked).
pub type ReplicaRead = (Vec<Version>, u64);

/// A client read's answer: the key's live siblings (newest last) and when
/// a client last read it since it was written, the latest any replica that
/// answered with those siblings saw (0: not since).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fetched {
    pub siblings: Vec<Version>,
    pub last_read_ms: u64,
}

impl Fetched {
    /// When the key was last written (its newest sibling's stamp).
    fn written_ms(&self) -> u64 {
        self.siblings.iter().map(|v| v.timestamp).max().unwrap_or(0)
    }

    /// memcached's "hit before": read by a client since it was last written.
    pub fn hit_before(&self) -> bool {
        self.last_read_ms != 0
    }

    /// memcached's "last access": seconds since the key was last read or
    /// written, whichever came later.
    pub fn idle_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_read_ms.max(self.written_ms())) / 1000
    }
}

/// A replica's answer: at once (this node's store, for a call that never
/// waits) or later (a peer, or the store's pool for a write that may wait).
pub enum Answer<T> {
    Now(Result<T>),
    Later(LocalBoxFuture<'static, Result<T>>),
}

impl<T: 'static> Answer<T> {
    pub async fn wait(self) -> Result<T> {
        match self {
            Answer::Now(result) => result,
            Answer::Later(future) => future.await,
        }
    }
}

impl Replicas {
    /// A replica's versions of a key; a client's read (not a write's catch
    /// up) is recorded there, and answers when the key was read before.
    /// Without a timeout the call has no timer of its own: the caller's
    /// deadline (the quorum actor's, which drops it) bounds it.
    pub fn get(
        &self,
        node: SocketAddrV4,
        key: Bytes,
        bucket: u32,
        client_read: bool,
        timeout: Option<Duration>,
    ) -> Answer<ReplicaRead> {
        if node == self.me {
            // A read never waits, in either engine.
            return Answer::Now(self.store.direct.replica_read_in(bucket, &key, client_read));
        }
        let peers = self.peers.clone();
        Answer::Later(Box::pin(async move {
            let request = Request::ReplicaGet { key, client_read };
            let answer = match timeout {
                Some(timeout) => peers.call(SocketAddr::V4(node), request, timeout).await,
                None => peers.call_untimed(SocketAddr::V4(node), request).await,
            };
            match answer? {
                Response::Versions(versions) => Ok((versions, 0)),
                Response::VersionsRead { versions, last_read_ms } => Ok((versions, last_read_ms)),
                other => Err(Error::Protocol(format!("{node} answered a get with {other:?}"))),
            }
        }))
    }

    pub fn put(&self, target: &Target, key: Bytes, bucket: u32, versions: Vec<Version>, timeout: Duration) -> Answer<()> {
        let (node, hint) = (target.node, target.hint.map(|h| h.to_string()));
        if node == self.me {
            if self.store.writes_inline() {
                return Answer::Now(self.store.direct.merge_in(bucket, &key, &versions, hint.as_deref()));
            }
            let store = self.store.clone();
            return Answer::Later(Box::pin(async move { store.send(ReplicaPut { key, versions, hint }).await? }));
        }
        let peers = self.peers.clone();
        Answer::Later(Box::pin(async move {
            match peers.call(SocketAddr::V4(node), Request::ReplicaPut { key, versions, hint }, timeout).await? {
                Response::Done => Ok(()),
                other => Err(Error::Protocol(format!("{node} answered a put with {other:?}"))),
            }
        }))
    }

    /// Stamps and stores a write here, unless its deadline has passed by
    /// the moment it would run: then it never runs (`Error::Late`).
    pub fn coordinate(&self, key: Bytes, bucket: u32, write: Write, deadline: Deadline) -> Answer<WriteOutcome> {
        if self.store.writes_inline() {
            if let Err(late) = in_time(deadline) {
                return Answer::Now(Err(late));
            }
            return Answer::Now(self.store.direct.coordinate_in(bucket, &key, &write));
        }
        let store = self.store.clone();
        Answer::Later(Box::pin(async move { store.send(CoordinateWrite { key, write, deadline }).await? }))
    }

    /// Hands a request to a node among the key's replicas, which runs it
    /// only if it can start within `timeout`. A request never handed over
    /// (no connection) fails `Unavailable`; one handed over and not
    /// answered in time fails `Indeterminate`: it may have run.
    fn forward(
        &self,
        node: SocketAddrV4,
        key: Bytes,
        op: ForwardOp,
        hops: u8,
        quorum: Option<u8>,
        timeout: Duration,
    ) -> Answer<Response> {
        let peers = self.peers.clone();
        Answer::Later(Box::pin(async move {
            let started = Deadline::now();
            let client = match tokio::time::timeout(timeout, peers.connected(SocketAddr::V4(node))).await {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => return Err(Error::Unavailable(format!("{node}: {e}"))),
                Err(_) => return Err(Error::Unavailable(format!("{node}: no connection within {timeout:?}"))),
            };
            let left = timeout.saturating_sub(started.elapsed());
            let budget_ms = left.as_millis().min(u32::MAX as u128) as u32;
            let sent_us = crate::api::arrival::mono_us();
            let request = Request::Forward { key, op, hops: hops + 1, quorum, budget_ms, sent_us };
            client.call(request, left).await
        }))
    }
}

/// Whether a write may still start: not once its deadline has passed.
pub fn in_time(deadline: Deadline) -> Result<()> {
    match Deadline::now() < deadline {
        true => Ok(()),
        false => Err(Error::Late("the request's deadline passed before it could be stamped".into())),
    }
}

/// Where a request comes from: a client of this node, or a peer that
/// forwarded it, with how many hops it took and when that peer gives up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin {
    pub hops: u8,
    /// None: this node's own request deadline.
    pub deadline: Option<Deadline>,
}

impl Origin {
    /// A request from one of this node's clients.
    pub const CLIENT: Origin = Origin { hops: 0, deadline: None };
}

/// What a client of a removed node is told.
pub const REMOVED: &str =
    "this node was removed from its cluster (remove_node) and serves no client; use another member (kai admin node_list)";

/// A client request the coordinator runs: a read or a write. Each says
/// how its quorum actor runs it, how it travels when forwarded, and
/// whether running it twice does no harm.
pub trait Op: Clone + std::fmt::Debug + 'static {
    type Answer: 'static;
    const WRITES: bool;
    fn job(self, reply: oneshot::Sender<Result<Self::Answer>>) -> Job;
    /// The request as the peer protocol carries it.
    fn forwarded(self) -> ForwardOp;
    fn unpack(response: Response) -> std::result::Result<Self::Answer, Box<Response>>;
    /// A second `set` or `touch` leaves what the first did; an `incr` run
    /// twice counts twice, and a second `add`, `cas` or `delete` answers
    /// as if the first had not run.
    fn harmless_twice(&self) -> bool;
}

/// A read of a key's live siblings.
#[derive(Debug, Clone, Copy)]
pub struct Read;

impl Op for Read {
    type Answer = Fetched;
    const WRITES: bool = false;

    fn job(self, reply: oneshot::Sender<Result<Fetched>>) -> Job {
        Job::Read { reply }
    }

    fn forwarded(self) -> ForwardOp {
        ForwardOp::Get
    }

    fn unpack(response: Response) -> std::result::Result<Fetched, Box<Response>> {
        match response {
            Response::VersionsRead { versions, last_read_ms } => Ok(Fetched { siblings: versions, last_read_ms }),
            other => Err(Box::new(other)),
        }
    }

    fn harmless_twice(&self) -> bool {
        true
    }
}

impl Op for Write {
    type Answer = WriteOutcome;
    const WRITES: bool = true;

    fn job(self, reply: oneshot::Sender<Result<WriteOutcome>>) -> Job {
        Job::Write { write: self, reply }
    }

    fn forwarded(self) -> ForwardOp {
        ForwardOp::Write(self)
    }

    fn unpack(response: Response) -> std::result::Result<WriteOutcome, Box<Response>> {
        match response {
            Response::Outcome(outcome) => Ok(outcome),
            other => Err(Box::new(other)),
        }
    }

    fn harmless_twice(&self) -> bool {
        use crate::store::{Condition, Mutation};
        matches!(
            (&self.condition, &self.mutation),
            (Condition::Always | Condition::Present, Mutation::Set { .. } | Mutation::Touch { .. })
        )
    }
}

/// Whether a request that failed at one replica may be handed to the next:
/// always when it surely did not run there; when it may have, only if
/// running it twice does no harm.
pub fn may_try_next(op: &impl Op, error: &Error) -> bool {
    op.harmless_twice() || !error.may_have_run()
}

#[derive(Clone)]
pub struct CoordinatorSettings {
    pub n: usize,
    pub r: usize,
    pub w: usize,
    /// Quorum requests this node runs at once (all workers together);
    /// beyond it a request is refused at once as busy.
    pub max_in_flight: usize,
}

/// Reads a key: its live siblings, newest last (empty when absent), and
/// when a client last read it.
#[derive(Message)]
#[rtype(result = "Result<Fetched>")]
pub struct ClientGet {
    pub key: Bytes,
    pub origin: Origin,
    /// R for this request alone; none: the node's own.
    pub quorum: Option<u8>,
}

/// Writes a key; the outcome says whether it was stored.
#[derive(Message)]
#[rtype(result = "Result<WriteOutcome>")]
pub struct ClientWrite {
    pub key: Bytes,
    pub write: Write,
    pub origin: Origin,
    /// W for this request alone; none: the node's own.
    pub quorum: Option<u8>,
}

/// What every quorum actor of a coordinator works with.
#[derive(Clone)]
pub struct QuorumSetup {
    /// The one deadline of a whole request.
    pub timeout: Duration,
    /// R: how many replicas a conditional write reads before it decides.
    pub read_quorum: usize,
    pub via: Replicas,
    pub version: Addr<VersionActor>,
    pub stats: Arc<NodeStats>,
    pub faults: crate::api::Faults,
}

/// The coordinator's state and logic: where a request goes, whether it is
/// admitted, and its quorum actor. The actor serves requests that arrive
/// as messages (forwarded by peers); a worker's sessions call the same
/// core directly, on their own thread, with no mailbox hop.
#[derive(Clone)]
pub struct Coordinator {
    settings: CoordinatorSettings,
    ring: RingHandle,
    liveness: Liveness,
    /// Shared by every quorum actor: one reference count each, no copies.
    setup: Arc<QuorumSetup>,
}

pub struct CoordinatorActor {
    core: Arc<Coordinator>,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Run here with these replicas; `spares` are the live nodes past them
    /// in preference order, to stand in (with a hint) for a replica whose
    /// write fails before the failure detector has noticed anything.
    /// `suspects` are the home replicas skipped as down, tried last, when a
    /// reply failed and nothing else is left: the failure detector only
    /// suspects, and one cut off from a peer that relayed another's
    /// heartbeats may suspect a live node.
    Here {
        targets: Targets,
        spares: Vec<SocketAddrV4>,
        suspects: Vec<SocketAddrV4>,
    },
    /// Forward to these replicas, in preference order: each in turn, within
    /// the one deadline, until one answers.
    Forward(Vec<SocketAddrV4>),
    Nowhere(String),
}

/// Where a request for a key with this preference list goes, from `me`.
pub fn route(preference: &[SocketAddrV4], n: usize, down: &BTreeSet<SocketAddrV4>, me: SocketAddrV4, hops: u8) -> Route {
    let targets = choose_targets(preference, n, down);
    if targets.iter().any(|t| t.node == me) {
        let spares = preference.iter().filter(|a| !down.contains(a) && !targets.iter().any(|t| t.node == **a)).copied().collect();
        let home = &preference[..n.min(preference.len())];
        let suspects = home.iter().filter(|a| down.contains(a) && **a != me).copied().collect();
        return Route::Here { targets, spares, suspects };
    }
    if targets.is_empty() {
        Route::Nowhere("every node of the key's preference list is down".into())
    } else if hops >= MAX_HOPS {
        Route::Nowhere(format!("forwarded {hops} times without reaching a replica"))
    } else {
        Route::Forward(targets.iter().map(|t| t.node).collect())
    }
}

impl CoordinatorActor {
    pub fn new(core: Arc<Coordinator>) -> Self {
        CoordinatorActor { core }
    }
}

impl Coordinator {
    pub fn new(settings: CoordinatorSettings, ring: RingHandle, liveness: Liveness, setup: QuorumSetup) -> Self {
        Coordinator { settings, ring, liveness, setup: Arc::new(setup) }
    }

    /// Reads skip members that are down; writes also those whose store
    /// takes no writes (a full disk), so stand-ins take their writes.
    fn route(&self, ring: &Ring, bucket: u32, hops: u8, writing: bool) -> Route {
        let published = if writing { self.liveness.unwritable() } else { self.liveness.down() };
        let mut skip = std::borrow::Cow::Borrowed(&**published);
        if writing && !self.setup.via.store.direct.is_writable() {
            // This node's own store, at once, before gossip says so.
            skip.to_mut().insert(self.setup.via.me);
        }
        route(ring.preference_list(bucket), self.settings.n, &skip, self.setup.via.me, hops)
    }

    /// Sheds load: a saturated node says so at once instead of queueing.
    fn admit(&self) -> Result<()> {
        let in_flight = self.setup.stats.requests_in_flight.load(std::sync::atomic::Ordering::Relaxed);
        if in_flight >= self.settings.max_in_flight as i64 {
            NodeStats::incr(&self.setup.stats.shed_busy);
            return Err(Error::Busy(format!("{in_flight} requests in flight")));
        }
        Ok(())
    }

    /// When a request from `origin` must be answered by.
    fn deadline(&self, origin: Origin) -> Deadline {
        let own = Deadline::now() + self.setup.timeout;
        origin.deadline.map_or(own, |theirs| theirs.min(own))
    }
}

impl Actor for CoordinatorActor {
    type Context = Context<Self>;
}

crate::supervised!(CoordinatorActor, "coordinator");

impl Coordinator {
    /// N: how many replicas each key has (the most R or W can be).
    pub fn replicas(&self) -> usize {
        self.settings.n
    }

    /// Reads a key: its live siblings, newest last (empty when absent),
    /// with R replies, or `quorum` for this request alone.
    pub async fn get(&self, key: Bytes, origin: Origin, quorum: Option<u8>) -> Result<Vec<Version>> {
        self.fetch(key, origin, quorum).await.map(|fetched| fetched.siblings)
    }

    /// Reads a key as `get` does, with when a client last read it before.
    pub async fn fetch(&self, key: Bytes, origin: Origin, quorum: Option<u8>) -> Result<Fetched> {
        let started = Instant::now();
        let result = self.run(key, origin, quorum, Read).await;
        self.setup.stats.get_latency.record(started.elapsed());
        result
    }

    /// Writes a key with W acknowledgements (or `quorum`); the outcome
    /// says whether it was stored.
    pub async fn write(&self, key: Bytes, write: Write, origin: Origin, quorum: Option<u8>) -> Result<WriteOutcome> {
        let started = Instant::now();
        let result = self.run(key, origin, quorum, write).await;
        self.setup.stats.set_latency.record(started.elapsed());
        result
    }

    /// Runs a request here through a quorum actor, or forwards it to a
    /// replica, or says why neither can be done.
    async fn run<O: Op>(&self, key: Bytes, origin: Origin, quorum: Option<u8>, op: O) -> Result<O::Answer> {
        if self.liveness.is_removed() {
            return Err(Error::Refused(REMOVED.into()));
        }
        let writing = O::WRITES;
        let default = if writing { self.settings.w } else { self.settings.r };
        let needed = match quorum {
            None => default,
            Some(q) if (1..=self.settings.n).contains(&(q as usize)) => q as usize,
            Some(q) => return Err(Error::Client(format!("a quorum of {q} is not between 1 and N = {}", self.settings.n))),
        };
        let ring = self.ring.current();
        let bucket = ring.bucket_of(&key);
        // Loads the bucket's line while the request is routed and its
        // quorum actor set up: this node's store mostly reads it next.
        self.setup.via.store.direct.prefetch(bucket);
        let deadline = self.deadline(origin);
        match self.route(&ring, bucket, origin.hops, writing) {
            Route::Here { targets, mut spares, suspects } => {
                self.admit()?;
                // A live node past the replicas holds nothing for a read to
                // find: a read falls back on suspected replicas alone.
                match writing {
                    true => spares.extend(suspects),
                    false => spares = suspects,
                }
                let (reply, rx) = oneshot::channel();
                let quorum =
                    QuorumActor::new(key, bucket, targets, spares, self.setup.clone(), op.job(reply), Ask { needed, deadline });
                quorum::start(quorum).await;
                rx.await.map_err(|_| Error::Indeterminate("quorum actor stopped".into()))?
            }
            Route::Forward(nodes) => {
                let response = self.forward(&nodes, key, op, origin.hops, quorum, deadline).await?;
                O::unpack(response)
                    .map_err(|other| Error::Protocol(format!("a replica answered a forwarded request with {other:?}")))
            }
            Route::Nowhere(why) => Err(Error::Unavailable(why)),
        }
    }

    /// Hands a request to each of the key's replicas in turn, within the
    /// one deadline, until one answers. Each is told how long this node
    /// waits for it, and does not start later than that, so a replica
    /// given up on never runs the request after the next one did. A write
    /// that may have run goes no further unless it is harmless twice.
    async fn forward(
        &self,
        nodes: &[SocketAddrV4],
        key: Bytes,
        op: impl Op,
        hops: u8,
        quorum: Option<u8>,
        deadline: Deadline,
    ) -> Result<Response> {
        let mut failure = Error::Unavailable("no time left to forward".into());
        for (i, node) in nodes.iter().enumerate() {
            let left = deadline.saturating_duration_since(Deadline::now());
            if left.is_zero() {
                break;
            }
            // What is left is shared among the replicas not yet tried, so a
            // stalled one leaves time for the next.
            let attempt = left / (nodes.len() - i) as u32;
            match self.setup.via.forward(*node, key.clone(), op.clone().forwarded(), hops, quorum, attempt).wait().await {
                Ok(response) => return Ok(response),
                Err(e) if may_try_next(&op, &e) => {
                    tracing::debug!(%node, "forwarding failed, trying the next replica: {e}");
                    failure = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(failure)
    }
}

impl Handler<ClientGet> for CoordinatorActor {
    type Result = ResponseFuture<Result<Fetched>>;

    fn handle(&mut self, msg: ClientGet, _: &mut Self::Context) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move { core.fetch(msg.key, msg.origin, msg.quorum).await })
    }
}

impl Handler<ClientWrite> for CoordinatorActor {
    type Result = ResponseFuture<Result<WriteOutcome>>;

    fn handle(&mut self, msg: ClientWrite, _: &mut Self::Context) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move { core.write(msg.key, msg.write, msg.origin, msg.quorum).await })
    }
}

/// Serves a forwarded client request (`Owner::Coordinator`), within what
/// is left of its sender's deadline; a failure keeps its kind, so the
/// sender knows whether it may have run.
pub fn serve(
    coordinator: &Addr<CoordinatorActor>,
    request: crate::api::Request,
    deadline: Option<tokio::time::Instant>,
) -> ResponseFuture<crate::api::Response> {
    use crate::api::{respond, Request, Response};
    let Request::Forward { key, op, hops, quorum, .. } = request else { return respond::misrouted("the coordinator", &request) };
    let origin = Origin { hops, deadline };
    match op {
        ForwardOp::Get => respond::typed_reply(coordinator.send(ClientGet { key, origin, quorum }), |fetched| {
            Response::VersionsRead { versions: fetched.siblings, last_read_ms: fetched.last_read_ms }
        }),
        ForwardOp::Write(write) => {
            respond::typed_reply(coordinator.send(ClientWrite { key, write, origin, quorum }), Response::Outcome)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn a(i: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, i)
    }

    #[test]
    fn hit_before_and_last_access_count_from_the_last_write() {
        let written = |ms| {
            let payload = crate::version::Payload { value: Bytes::from("v"), flags: 0, expires_at: 0, deleted: false };
            crate::version::stamp("n", &[], &crate::version::VClock::new(), payload, ms, 10)
        };
        let fresh = Fetched { siblings: vec![written(10_000)], last_read_ms: 0 };
        assert!(!fresh.hit_before(), "never read");
        assert_eq!(fresh.idle_secs(15_500), 5, "idle since it was written");
        let read = Fetched { siblings: vec![written(10_000)], last_read_ms: 12_000 };
        assert!(read.hit_before());
        assert_eq!(read.idle_secs(15_500), 3, "idle since it was read");
        let siblings = Fetched { siblings: vec![written(10_000), written(13_000)], last_read_ms: 0 };
        assert_eq!(siblings.idle_secs(15_500), 2, "idle since the newest sibling was written");
        assert_eq!(siblings.idle_secs(1_000), 0, "a clock behind the stamps");
    }

    #[test]
    fn all_up_takes_the_home_replicas() {
        let pref = [a(1), a(2), a(3), a(4), a(5)];
        let t = choose_targets(&pref, 3, &BTreeSet::new());
        assert_eq!(
            t.to_vec(),
            vec![Target { node: a(1), hint: None }, Target { node: a(2), hint: None }, Target { node: a(3), hint: None }]
        );
    }

    #[test]
    fn a_request_runs_here_with_spares_or_is_forwarded_to_every_live_replica_in_turn() {
        let pref = [a(1), a(2), a(3), a(4), a(5)];
        let none = BTreeSet::new();
        let here = route(&pref, 3, &none, a(2), 0);
        let Route::Here { targets, spares, suspects } = here else { panic!("{here:?}") };
        assert_eq!(targets.len(), 3);
        assert_eq!(spares, vec![a(4), a(5)], "the nodes past the replicas, in order");
        assert!(suspects.is_empty());
        let down: BTreeSet<_> = [a(1), a(3)].into_iter().collect();
        let here = route(&pref, 3, &down, a(2), 0);
        let Route::Here { targets, spares, suspects } = here else { panic!("{here:?}") };
        let nodes: Vec<_> = targets.iter().map(|t| t.node).collect();
        assert_eq!((nodes, spares), (vec![a(2), a(4), a(5)], vec![]), "stand-ins for the down ones");
        assert_eq!(suspects, vec![a(1), a(3)], "the down home replicas, tried last");
        assert_eq!(route(&pref, 3, &none, a(5), 0), Route::Forward(vec![a(1), a(2), a(3)]));
        let down: BTreeSet<_> = [a(1)].into_iter().collect();
        assert_eq!(route(&pref, 3, &down, a(5), 0), Route::Forward(vec![a(2), a(3), a(4)]), "down ones are skipped");
        assert!(matches!(route(&pref, 3, &none, a(5), MAX_HOPS), Route::Nowhere(_)));
        let all: BTreeSet<_> = pref.into_iter().collect();
        assert!(matches!(route(&pref, 3, &all, a(9), 0), Route::Nowhere(_)));
    }

    #[test]
    fn a_write_that_may_have_run_goes_to_the_next_replica_only_if_harmless_twice() {
        use crate::store::{Condition, Mutation};
        let write = |condition, mutation| Write { condition, mutation };
        let set = Mutation::Set { value: Bytes::from("v"), flags: 0, expires_at: 0 };
        let maybe = Error::Indeterminate("no reply".into());
        let quorum = Error::Quorum { op: "write".into(), needed: 2, got: 1, reason: "timed out".into() };
        let never = [Error::Late("late".into()), Error::Busy("busy".into()), Error::Unavailable("refused".into())];
        assert!(may_try_next(&Read, &maybe) && may_try_next(&Read, &quorum));
        let harmless = [
            write(Condition::Always, set.clone()),
            write(Condition::Present, set.clone()),
            write(Condition::Present, Mutation::Touch { expires_at: 5 }),
        ];
        let once = [
            write(Condition::Present, Mutation::Incr(1)),
            write(Condition::Present, Mutation::Decr(1)),
            write(Condition::Present, Mutation::Append(Bytes::from("x"))),
            write(Condition::Absent, set.clone()),
            write(Condition::Context(7), set),
            Write::delete(),
        ];
        for op in &harmless {
            assert!(may_try_next(op, &maybe) && may_try_next(op, &quorum), "{op:?}");
        }
        for op in &once {
            assert!(!may_try_next(op, &maybe), "{op:?} may have run: not again elsewhere");
            assert!(!may_try_next(op, &quorum), "{op:?} ran and failed its quorum: not again elsewhere");
            assert!(never.iter().all(|e| may_try_next(op, e)), "{op:?} surely did not run: the next replica takes it");
        }
    }

    #[test]
    fn a_write_past_its_deadline_is_late() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let deadline = Deadline::now() + Duration::from_millis(10);
            assert_eq!(in_time(deadline), Ok(()));
            tokio::time::advance(Duration::from_millis(10)).await;
            assert!(matches!(in_time(deadline), Err(Error::Late(_))));
        });
    }

    #[test]
    fn a_down_home_node_gets_a_stand_in_with_a_hint() {
        let pref = [a(1), a(2), a(3), a(4), a(5)];
        let down: BTreeSet<_> = [a(2)].into_iter().collect();
        let t = choose_targets(&pref, 3, &down);
        assert_eq!(
            t.to_vec(),
            vec![Target { node: a(1), hint: None }, Target { node: a(3), hint: None }, Target { node: a(4), hint: Some(a(2)) }]
        );
        let down: BTreeSet<_> = [a(1), a(3), a(4)].into_iter().collect();
        let t = choose_targets(&pref, 3, &down);
        assert_eq!(t.to_vec(), vec![Target { node: a(2), hint: None }, Target { node: a(5), hint: Some(a(1)) }]);
    }
}

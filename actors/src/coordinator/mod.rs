//! coordinator: runs client reads and writes. For each request it picks
//! the replicas from the published ring and starts one short-lived
//! `QuorumActor`, which gathers R or W replies within one deadline.

mod quorum;
mod tally;

pub use quorum::{Job, QuorumActor};
pub use tally::{QuorumTally, TallyState};

use crate::api::{Peers, Request, Response};
use crate::error::{Error, Result};
use crate::hash::RingHandle;
use crate::stats::NodeStats;
use crate::store::{CoordinateWrite, ReplicaGet, ReplicaPut, StoreAddr, Write, WriteOutcome};
use crate::version::{Version, VersionActor};
use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How requests reach a replica: this node's store directly, any other
/// node through the internal API.
#[derive(Clone)]
pub struct Replicas {
    pub me: SocketAddrV4,
    pub store: StoreAddr,
    pub peers: Peers,
}

impl Replicas {
    pub fn get(&self, node: SocketAddrV4, key: Bytes, timeout: Duration) -> LocalBoxFuture<'static, Result<Vec<Version>>> {
        if node == self.me {
            let store = self.store.clone();
            Box::pin(async move { store.send(ReplicaGet(key)).await? })
        } else {
            let peers = self.peers.clone();
            Box::pin(async move {
                match peers.call(SocketAddr::V4(node), Request::ReplicaGet { key }, timeout).await? {
                    Response::Versions(versions) => Ok(versions),
                    other => Err(Error::Protocol(format!("{node} answered a get with {other:?}"))),
                }
            })
        }
    }

    pub fn put(&self, node: SocketAddrV4, key: Bytes, versions: Vec<Version>, timeout: Duration) -> LocalBoxFuture<'static, Result<()>> {
        if node == self.me {
            let store = self.store.clone();
            Box::pin(async move { store.send(ReplicaPut { key, versions }).await? })
        } else {
            let peers = self.peers.clone();
            Box::pin(async move {
                match peers.call(SocketAddr::V4(node), Request::ReplicaPut { key, versions }, timeout).await? {
                    Response::Done => Ok(()),
                    other => Err(Error::Protocol(format!("{node} answered a put with {other:?}"))),
                }
            })
        }
    }

    pub fn coordinate(&self, key: Bytes, write: Write) -> LocalBoxFuture<'static, Result<WriteOutcome>> {
        let store = self.store.clone();
        Box::pin(async move { store.send(CoordinateWrite { key, write }).await? })
    }
}

#[derive(Clone)]
pub struct CoordinatorSettings {
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub timeout: Duration,
}

/// Reads a key: its live siblings, newest last (empty when absent).
#[derive(Message)]
#[rtype(result = "Result<Vec<Version>>")]
pub struct ClientGet(pub Bytes);

/// Writes a key; the outcome says whether it was stored.
#[derive(Message)]
#[rtype(result = "Result<WriteOutcome>")]
pub struct ClientWrite {
    pub key: Bytes,
    pub write: Write,
}

pub struct CoordinatorActor {
    settings: CoordinatorSettings,
    ring: RingHandle,
    replicas: Replicas,
    version: Addr<VersionActor>,
    stats: Arc<NodeStats>,
}

impl CoordinatorActor {
    pub fn new(
        settings: CoordinatorSettings,
        ring: RingHandle,
        replicas: Replicas,
        version: Addr<VersionActor>,
        stats: Arc<NodeStats>,
    ) -> Self {
        CoordinatorActor { settings, ring, replicas, version, stats }
    }

    /// The first N nodes of the key's preference list.
    fn replicas_for(&self, key: &[u8]) -> Vec<SocketAddrV4> {
        self.ring.snapshot().find_nodes(key, self.settings.n).to_vec()
    }

    fn start_quorum(&self, key: Bytes, needed: usize, job: Job) {
        let replicas = self.replicas_for(&key);
        QuorumActor::new(
            key,
            replicas,
            needed,
            self.settings.timeout,
            self.replicas.clone(),
            self.version.clone(),
            self.stats.clone(),
            job,
        )
        .start();
    }
}

impl Actor for CoordinatorActor {
    type Context = Context<Self>;
}

crate::supervised!(CoordinatorActor, "coordinator");

fn await_reply<T: 'static>(rx: oneshot::Receiver<Result<T>>) -> ResponseFuture<Result<T>> {
    Box::pin(async move { rx.await.map_err(|_| Error::Unavailable("quorum actor stopped".into()))? })
}

impl Handler<ClientGet> for CoordinatorActor {
    type Result = ResponseFuture<Result<Vec<Version>>>;

    fn handle(&mut self, msg: ClientGet, _: &mut Self::Context) -> Self::Result {
        let (reply, rx) = oneshot::channel();
        self.start_quorum(msg.0, self.settings.r, Job::Read { reply });
        let (stats, started) = (self.stats.clone(), Instant::now());
        let reply = await_reply(rx);
        Box::pin(async move {
            let result = reply.await;
            stats.get_latency.record(started.elapsed());
            result
        })
    }
}

impl Handler<ClientWrite> for CoordinatorActor {
    type Result = ResponseFuture<Result<WriteOutcome>>;

    fn handle(&mut self, msg: ClientWrite, _: &mut Self::Context) -> Self::Result {
        let (reply, rx) = oneshot::channel();
        self.start_quorum(msg.key, self.settings.w, Job::Write { write: msg.write, reply });
        let (stats, started) = (self.stats.clone(), Instant::now());
        let reply = await_reply(rx);
        Box::pin(async move {
            let result = reply.await;
            stats.set_latency.record(started.elapsed());
            result
        })
    }
}

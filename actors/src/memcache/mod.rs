//! memcache: the client face. A listener actor accepts connections (up to
//! `max_connections`) and spreads them over worker threads, one `Session`
//! actor per connection.

pub mod auth;
pub mod binary;
pub mod command;
pub mod meta;
mod meta_run;
pub mod parse;
pub mod reply;
mod session;

pub use session::{expires_at, Session};

use crate::coordinator::Coordinator;
use crate::hash::RingHandle;
use crate::stats::{Identity, NodeStats};
use crate::store::StoreAddr;
use crate::tls::Tls;
use actix::prelude::*;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub struct MemcacheSettings {
    pub max_value_size: usize,
    pub max_connections: usize,
    pub allow_flush_all: bool,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Option<std::time::Duration>,
    /// A command must arrive whole within this long of its first byte.
    pub command_timeout: std::time::Duration,
    /// The TLS port's files, for `stats settings`; None: no TLS.
    pub tls: Option<crate::tls::TlsFiles>,
}

/// What every session shares.
pub struct SessionEnv {
    pub settings: MemcacheSettings,
    /// This worker's coordinator, called directly (no mailbox hop).
    pub coordinator: Arc<Coordinator>,
    pub store: StoreAddr,
    pub stats: Arc<NodeStats>,
    pub identity: Identity,
    pub ring: RingHandle,
    /// Who must authenticate, and against which passwords.
    pub auth: Arc<auth::ClientAuth>,
}

impl SessionEnv {
    /// This node's wall clock, for expiry times.
    pub fn clock(&self) -> &crate::store::WallClock {
        self.store.direct.clock()
    }
}

/// A worker thread that runs sessions, and what its sessions share.
#[derive(Clone)]
pub struct Worker {
    pub arbiter: ArbiterHandle,
    pub env: Arc<SessionEnv>,
}

/// A port clients connect to, and its TLS if it speaks TLS.
#[derive(Clone)]
pub struct MemcachePort {
    pub listener: Arc<TcpListener>,
    pub tls: Option<Arc<Tls>>,
}

/// Accepts clients on each memcache port (plain, TLS, or one of each).
pub struct MemcacheActor {
    ports: Vec<MemcachePort>,
    workers: Arc<[Worker]>,
}

impl MemcacheActor {
    pub fn new(ports: Vec<MemcachePort>, workers: Arc<[Worker]>) -> Self {
        assert!(!workers.is_empty(), "a memcache listener needs a worker");
        MemcacheActor { ports, workers }
    }
}

impl Actor for MemcacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        for port in self.ports.clone() {
            ctx.spawn(accept(port, self.workers.clone()).into_actor(self));
        }
    }
}

/// Hands each client of one port to a worker, turn by turn, up to
/// `max_connections` open in all.
async fn accept(port: MemcachePort, workers: Arc<[Worker]>) {
    let MemcachePort { listener, tls } = port;
    let env = workers[0].env.clone();
    for turn in 0.. {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("memcache accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Counted here, where the bound is checked (the session
        // uncounts itself when it stops), so a burst cannot overshoot.
        let open = env.stats.curr_connections.fetch_add(1, Relaxed);
        if open >= env.settings.max_connections as i64 {
            env.stats.curr_connections.fetch_sub(1, Relaxed);
            NodeStats::incr(&env.stats.rejected_connections);
            // Said to a plain client; a TLS client is closed.
            if tls.is_none() {
                actix::spawn(async move {
                    let mut stream = stream;
                    let _ = stream.write_all(b"SERVER_ERROR too many open connections\r\n").await;
                });
            }
            continue;
        }
        // Sessions are spread over the workers, turn by turn.
        let worker = &workers[turn % workers.len()];
        match stream.into_std() {
            Ok(stream) => Session::start_on(&worker.arbiter, stream, tls.clone(), worker.env.clone()),
            Err(e) => {
                env.stats.curr_connections.fetch_sub(1, Relaxed);
                tracing::warn!("cannot hand a connection to a worker: {e}");
            }
        }
    }
}

crate::supervised!(MemcacheActor, "memcache");

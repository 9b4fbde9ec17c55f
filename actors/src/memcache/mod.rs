//! memcache: the client face. A listener actor accepts connections (up to
//! `max_connections`) and spreads them over worker threads, one `Session`
//! actor per connection.

pub mod parse;
pub mod reply;
mod session;

pub use session::{expires_at, Session};

use crate::coordinator::CoordinatorActor;
use crate::hash::RingHandle;
use crate::stats::{Identity, NodeStats};
use crate::store::StoreActor;
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
}

/// What every session shares.
pub struct SessionEnv {
    pub settings: MemcacheSettings,
    pub coordinator: Addr<CoordinatorActor>,
    pub store: Addr<StoreActor>,
    pub stats: Arc<NodeStats>,
    pub identity: Identity,
    pub ring: RingHandle,
}

pub struct MemcacheActor {
    listener: Arc<TcpListener>,
    env: Arc<SessionEnv>,
}

impl MemcacheActor {
    pub fn new(listener: Arc<TcpListener>, env: Arc<SessionEnv>) -> Self {
        MemcacheActor { listener, env }
    }
}

impl Actor for MemcacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (listener, env) = (self.listener.clone(), self.env.clone());
        let accept = async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("memcache accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let open = env.stats.curr_connections.load(Relaxed);
                if open >= env.settings.max_connections as i64 {
                    NodeStats::incr(&env.stats.rejected_connections);
                    actix::spawn(async move {
                        let mut stream = stream;
                        let _ = stream.write_all(b"SERVER_ERROR too many open connections\r\n").await;
                    });
                    continue;
                }
                Session::start(stream, env.clone());
            }
        };
        ctx.spawn(accept.into_actor(self));
    }
}

crate::supervised!(MemcacheActor, "memcache");

//! Runs a node as a program: TCP listeners, worker threads, the HTTP port
//! and signals. The node itself is assembled by `kai_actors::node`.

use crate::config::{Config, Settings, StoreKind};
use actix::prelude::*;
use kai_actors::api::net::{self, Listener};
use kai_actors::config::MemcacheTls;
use kai_actors::membership::{TableFile, TableKeeper};
use kai_actors::memcache::MemcachePort;
use kai_actors::node::{self, NodeEnv};
use kai_actors::supervision;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

async fn bind(addr: &str, what: &str) -> Result<Arc<TcpListener>, String> {
    TcpListener::bind(addr).await.map(Arc::new).map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
}

/// Starts a node on TCP, with its worker threads (kept as long as it
/// runs) and its HTTP port.
async fn start(config: &Config) -> Result<(node::Node, Vec<Arbiter>), String> {
    let me = config.node_addr().map_err(|e| e.to_string())?;
    let seeds = config.seed_addrs().map_err(|e| e.to_string())?;
    let (engine, limit_maxbytes) = node::open_engine(config, me)?;
    // Bound before anything starts, so a clash fails at start, not later.
    let api_addr = config.api_bind.clone().unwrap_or_else(|| me.to_string());
    let api_listener: Arc<dyn Listener> = bind(&api_addr, "the internal API").await?;
    let credentials = Arc::new(node::Credentials::load(config)?);
    let memcache_ports = memcache_ports(config, &credentials).await?;
    let arbiters: Vec<Arbiter> = (0..config.worker_threads).map(|_| Arbiter::new()).collect();
    let env = NodeEnv {
        me,
        seeds,
        network: net::tcp(),
        api_listener,
        memcache_ports,
        credentials,
        workers: arbiters.iter().map(Arbiter::handle).collect(),
        limit_maxbytes,
        members_file: (config.store == StoreKind::Disk)
            .then(|| Arc::new(TableFile(config.data_dir.join("members"))) as Arc<dyn TableKeeper>),
        rng_seed: None,
    };
    let node = node::start(config, engine, env)?;
    if let Some(addr) = config.http_addr() {
        let state = crate::http::HttpState {
            router: node.routers[0].clone().recipient(),
            stats: node.stats.clone(),
            identity: node.identity.clone(),
            store: node.store.clone(),
            ring: node.ring.clone(),
            liveness: node.liveness.clone(),
            seen: node.seen.clone(),
        };
        let server = crate::http::serve(&addr, state)?;
        actix::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!("the HTTP port stopped: {e}");
            }
        });
        tracing::info!(%addr, "HTTP: /status, /metrics, /health");
    }
    Ok((node, arbiters))
}

/// The memcache port, plain or TLS, and with `memcache_tls = "both"` a
/// second one for TLS.
async fn memcache_ports(config: &Config, credentials: &node::Credentials) -> Result<Vec<MemcachePort>, String> {
    let tls = credentials.clients.clone();
    let main = bind(&config.memcache_addr(), "memcache").await?;
    Ok(match config.memcache_tls {
        MemcacheTls::Off => vec![MemcachePort { listener: main, tls: None }],
        MemcacheTls::Only => vec![MemcachePort { listener: main, tls }],
        MemcacheTls::Both => {
            let addr = format!("{}:{}", config.memcache_bind.as_deref().unwrap_or(&config.hostname), config.memcache_tls_port);
            let second = bind(&addr, "memcache over TLS").await?;
            vec![MemcachePort { listener: main, tls: None }, MemcachePort { listener: second, tls }]
        }
    })
}

/// Runs a node until SIGINT or SIGTERM; SIGHUP reads the certificates
/// and password files again.
pub fn run(config: Config) -> Result<(), String> {
    supervision::install(supervision::RestartIntensity {
        max_restarts: config.restart_intensity,
        period: Duration::from_secs(config.restart_period_secs),
    });
    actix_rt::System::new().block_on(async move {
        let (node, _workers) = start(&config).await?;
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut hangup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hangup.recv() => {
                    if let Err(e) = node.credentials.reload(&node.stats) {
                        tracing::error!("SIGHUP: the certificates or password files in use stay as they were: {e}");
                    }
                }
            }
        }
        node.shutdown();
        Ok(())
    })
}

//! The HTTP port, for operators and their tools: `/metrics` (Prometheus),
//! `/status` (a page for people, self-contained, refreshing itself),
//! `/status.json` (what the page draws), `/livez` (the process serves),
//! and `/readyz` with its old name `/health` (this node can coordinate).
//! Cluster figures are asked of the node's router, the same way `kai
//! admin` asks.

use crate::metrics::{render, Scrape};
use actix::prelude::*;
use actix_web::{web, App, HttpResponse, HttpServer};
use kai_actors::api::admin::{ask, AdminCommand};
use kai_actors::api::ApiCall;
use kai_actors::membership::serve::NodeList;
use kai_actors::membership::MemberRow;
use kai_actors::node::Stats;
use kai_actors::stats::{Identity, NodeStats};
use kai_actors::sync::{TransferProgress, Transfers};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

const PAGE: &str = include_str!("status.html");

#[derive(Clone)]
pub struct HttpState {
    pub router: Recipient<ApiCall>,
    pub stats: Arc<NodeStats>,
    pub identity: Identity,
    pub store: Arc<kai_actors::store::Store>,
    pub ring: kai_actors::hash::RingHandle,
    pub liveness: kai_actors::membership::Liveness,
    pub seen: kai_actors::api::SeenTerms,
}

impl HttpState {
    /// An admin command's answer, or its default when the node does not
    /// answer in time (the page shows what it has).
    async fn ask<C: AdminCommand>(&self, command: C) -> C::Reply
    where
        C::Reply: Default,
    {
        match tokio::time::timeout(Duration::from_secs(2), ask(&self.router, &command)).await {
            Ok(Ok(reply)) => reply,
            _ => Default::default(),
        }
    }

    async fn members(&self) -> Vec<MemberRow> {
        self.ask(NodeList).await
    }

    async fn transfers(&self) -> TransferProgress {
        self.ask(Transfers).await
    }

    /// Buckets whose up home replicas are fewer than the larger of R and
    /// W: requests for their keys fail their quorum wherever they start.
    fn buckets_without_quorum(&self) -> u32 {
        let id = &self.identity;
        self.ring.snapshot().buckets_short_of(&self.liveness.down(), id.n, id.r.max(id.w))
    }

    /// Why this node cannot coordinate, if it cannot: it has not joined,
    /// is leaving or removed, its ring lacks it, or its store cannot read.
    fn unready(&self) -> Option<String> {
        use kai_actors::membership::MemberState;
        match self.liveness.own_state() {
            Some(MemberState::Up) => {}
            Some(MemberState::Joining) => {
                return Some("joining: not yet holding its buckets (node_list says why it waits)".into())
            }
            Some(MemberState::Leaving) => return Some("leaving the cluster (remove_node)".into()),
            Some(MemberState::Removed) => return Some("removed from the cluster (remove_node)".into()),
            None => return Some("its member table is not loaded yet".into()),
        }
        let me = self.identity.node.parse().ok()?;
        if !self.ring.snapshot().nodes().any(|node| node.addr == me) {
            return Some("its ring is not loaded yet".into());
        }
        self.store.replica_read(b"\0kai-ready", false).err().map(|e| format!("its store cannot read: {e}"))
    }
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    let (members, transfers) = (state.members().await, state.transfers().await);
    let restarts = kai_actors::stats::restarts_by_module();
    let scrape = Scrape {
        stats: &state.stats,
        identity: &state.identity,
        members: &members,
        transfers: &transfers,
        restarts: &restarts,
        panics: kai_actors::stats::panics(),
        buckets_without_quorum: state.buckets_without_quorum(),
    };
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(render(&scrape))
}

/// Liveness: the process serves. A load balancer or orchestrator that
/// gets no answer restarts it.
async fn livez() -> HttpResponse {
    HttpResponse::Ok().body("ok\n")
}

/// Readiness: this node can coordinate a client's request. Whether other
/// members are up is not part of it (`/status.json` and the
/// `kai_buckets_without_quorum` metric say that), so losing peers never
/// takes every surviving node out of a load balancer at once.
async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    match state.unready() {
        Some(why) => HttpResponse::ServiceUnavailable().body(format!("not ready: {why}\n")),
        None if !state.store.is_writable() => HttpResponse::Ok().body("ok: serving reads; the store takes no writes\n"),
        None => HttpResponse::Ok().body("ok\n"),
    }
}

#[derive(Serialize)]
struct Status {
    node: String,
    quorum: [usize; 3],
    number_of_buckets: u32,
    store: &'static str,
    uptime_secs: u64,
    members: Vec<MemberRow>,
    transfers: TransferProgress,
    /// Each stat as the memcache `stats` reply writes it.
    stats: Vec<(String, String)>,
    /// Members whose R, W or peer protocol version differ from this
    /// node's, with how.
    differing: Vec<(String, String)>,
    /// Buckets short of a quorum of up home replicas (0: every key can be
    /// read and written), and whether that holds for every bucket.
    buckets_without_quorum: u32,
    quorum_reachable: bool,
    /// Latency histograms: (upper bound in microseconds, count) per op.
    latency: Vec<(&'static str, Vec<(u64, u64)>)>,
}

/// Counts in power-of-two buckets of microseconds, for the page's charts.
fn chart(latency: &kai_actors::stats::Latency) -> Vec<(u64, u64)> {
    let h = latency.snapshot();
    let mut bars: Vec<(u64, u64)> = (0..=24).map(|i| (1u64 << i, 0)).collect();
    for v in h.iter_recorded() {
        let i = (64 - v.value_iterated_to().max(1).leading_zeros() as usize).min(bars.len() - 1);
        bars[i].1 += v.count_at_value();
    }
    while bars.len() > 1 && bars.last().is_some_and(|b| b.1 == 0) {
        bars.pop();
    }
    bars
}

async fn status_json(state: web::Data<HttpState>) -> HttpResponse {
    let (members, transfers) = (state.members().await, state.transfers().await);
    let stats = state.ask(Stats).await.into_iter().map(|(name, value)| (name, value.to_string())).collect();
    let buckets_without_quorum = state.buckets_without_quorum();
    let id = &state.identity;
    let status = Status {
        node: id.node.clone(),
        quorum: [id.n, id.r, id.w],
        number_of_buckets: id.number_of_buckets,
        store: id.store,
        uptime_secs: id.started.elapsed().as_secs(),
        members,
        transfers,
        stats,
        differing: state.seen.differing(id.terms),
        buckets_without_quorum,
        quorum_reachable: buckets_without_quorum == 0,
        latency: vec![("get", chart(&state.stats.get_latency)), ("set", chart(&state.stats.set_latency))],
    };
    HttpResponse::Ok().json(status)
}

async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(PAGE)
}

/// Serves the HTTP port on one thread of its own.
pub fn serve(addr: &str, state: HttpState) -> Result<actix_web::dev::Server, String> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/metrics", web::get().to(metrics))
            .route("/livez", web::get().to(livez))
            .route("/readyz", web::get().to(readyz))
            .route("/health", web::get().to(readyz))
            .route("/status", web::get().to(page))
            .route("/", web::get().to(page))
            .route("/status.json", web::get().to(status_json))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)
    .map_err(|e| format!("cannot listen for HTTP on {addr}: {e}"))?
    .run();
    Ok(server)
}

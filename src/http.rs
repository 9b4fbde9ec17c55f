//! The HTTP port, for operators and their tools: `/metrics` (Prometheus),
//! `/status` (a page for people, self-contained, refreshing itself),
//! `/status.json` (what the page draws) and `/health` (200 while the node
//! serves, 503 otherwise). Everything is asked of the node's router, the
//! same way `kai admin` asks.

use crate::metrics::{render, Scrape};
use actix::prelude::*;
use actix_web::{web, App, HttpResponse, HttpServer};
use kai_actors::api::admin::{ask, AdminCommand};
use kai_actors::api::{ApiCall, ForwardOp, Request, Response};
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
    pub store_writable: kai_actors::store::Writable,
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
    };
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(render(&scrape))
}

/// Serving means a client's read would succeed: a quorum read of a probe
/// key, through this node's coordinator, as any `get` runs.
async fn health(state: web::Data<HttpState>) -> HttpResponse {
    let key = bytes::Bytes::from_static(b"\0kai-health");
    // Run as a peer's forwarded read would be, within the node's own deadline.
    let probe = Request::Forward { key, op: ForwardOp::Get, hops: 0, quorum: None, budget_ms: 0, sent_us: 0 };
    let answer = tokio::time::timeout(Duration::from_secs(3), state.router.send(ApiCall::new(probe))).await;
    let read_only = !state.store_writable.get();
    match answer {
        Ok(Ok(Response::VersionsRead { .. })) if read_only => {
            HttpResponse::Ok().body("ok: serving reads; the store takes no writes\n")
        }
        Ok(Ok(Response::VersionsRead { .. })) => HttpResponse::Ok().body("ok\n"),
        Ok(Ok(Response::Failed(why))) => HttpResponse::ServiceUnavailable().body(format!("not serving: {why}\n")),
        _ => HttpResponse::ServiceUnavailable().body("not serving: no answer\n"),
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
            .route("/health", web::get().to(health))
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

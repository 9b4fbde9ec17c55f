//! A node's counters in the Prometheus text exposition format (0.0.4):
//! `kai_` names, `_total` counters, `_seconds` histograms, base units.
//! Pure: it renders what it is given.

use kai_actors::membership::{MemberRow, MemberState};
use kai_actors::stats::{Identity, Latency, NodeStats};
use kai_actors::sync::TransferProgress;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

/// What one scrape shows, gathered from the node's actors.
pub struct Scrape<'a> {
    pub stats: &'a NodeStats,
    pub identity: &'a Identity,
    pub members: &'a [MemberRow],
    pub transfers: &'a TransferProgress,
    pub restarts: &'a [(&'static str, u64)],
    pub panics: u64,
    pub buckets_without_quorum: u32,
}

/// Histogram bucket bounds, in seconds.
const BOUNDS: [f64; 15] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", v.replace('"', "\\\""))).collect();
        let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, command: &str, latency: &Latency) {
        let h = latency.snapshot();
        for bound in BOUNDS {
            let micros = (bound * 1e6) as u64;
            let count: u64 = h.iter_recorded().filter(|v| v.value_iterated_to() <= micros).map(|v| v.count_at_value()).sum();
            self.sample(&format!("{name}_bucket"), &[("command", command), ("le", &bound.to_string())], count);
        }
        self.sample(&format!("{name}_bucket"), &[("command", command), ("le", "+Inf")], h.len());
        self.sample(&format!("{name}_sum"), &[("command", command)], h.mean() * h.len() as f64 / 1e6);
        self.sample(&format!("{name}_count"), &[("command", command)], h.len());
    }
}

pub fn render(s: &Scrape) -> String {
    let mut out = Out(String::new());
    requests(&mut out, s);
    replication(&mut out, s);
    members(&mut out, s);
    node(&mut out, s);
    security(&mut out, s);
    out.0
}

/// TLS handshakes and client authentication (memcached's
/// ssl_handshake_errors, time_since_server_cert_refresh, auth_cmds and
/// auth_errors).
fn security(out: &mut Out, s: &Scrape) {
    let st = s.stats;
    let get = |c: &kai_actors::stats::Counter| c.load(Relaxed);
    out.family("kai_tls_handshake_errors_total", "counter", "TLS handshakes that failed, by port.");
    out.sample("kai_tls_handshake_errors_total", &[("port", "memcache")], get(&st.ssl_handshake_errors));
    out.sample("kai_tls_handshake_errors_total", &[("port", "internal")], get(&st.peer_tls_handshake_errors));
    if let Some(since) = st.since_certs_refreshed() {
        let help = "Seconds since the certificates were last read (at start, SIGHUP or reload_certs).";
        out.one("kai_tls_cert_refresh_age_seconds", "gauge", help, since);
    }
    out.one("kai_auth_attempts_total", "counter", "Client authentication attempts (SASL or the text token).", get(&st.auth_cmds));
    out.one("kai_auth_failures_total", "counter", "Client authentication attempts refused.", get(&st.auth_errors));
}

/// Client requests by command and outcome, and their latency.
fn requests(out: &mut Out, s: &Scrape) {
    let st = s.stats;
    let get = |c: &kai_actors::stats::Counter| c.load(Relaxed);
    out.family("kai_requests_total", "counter", "Client requests by command and outcome.");
    for (command, outcome, value) in [
        ("get", "hit", get(&st.get_hits)),
        ("get", "miss", get(&st.get_misses)),
        ("get", "expired", get(&st.get_expired)),
        ("set", "any", get(&st.cmd_set)),
        ("delete", "hit", get(&st.delete_hits)),
        ("delete", "miss", get(&st.delete_misses)),
        ("incr", "hit", get(&st.incr_hits)),
        ("incr", "miss", get(&st.incr_misses)),
        ("decr", "hit", get(&st.decr_hits)),
        ("decr", "miss", get(&st.decr_misses)),
        ("cas", "hit", get(&st.cas_hits)),
        ("cas", "miss", get(&st.cas_misses)),
        ("cas", "badval", get(&st.cas_badval)),
        ("touch", "hit", get(&st.touch_hits)),
        ("touch", "miss", get(&st.touch_misses)),
        ("flush_all", "any", get(&st.cmd_flush)),
    ] {
        out.sample("kai_requests_total", &[("command", command), ("outcome", outcome)], value);
    }
    out.family(
        "kai_request_duration_seconds",
        "histogram",
        "Client request latency at the coordinator, by command (get: reads, set: writes).",
    );
    out.histogram("kai_request_duration_seconds", "get", &st.get_latency);
    out.histogram("kai_request_duration_seconds", "set", &st.set_latency);
}

/// Quorums, repair, gossip, hints, anti-entropy and transfers.
fn replication(out: &mut Out, s: &Scrape) {
    let st = s.stats;
    let get = |c: &kai_actors::stats::Counter| c.load(Relaxed);
    for (name, kind, help, value) in [
        (
            "kai_quorum_failures_total",
            "counter",
            "Requests that did not meet their R or W quorum.",
            get(&st.quorum_failures) as i64,
        ),
        ("kai_read_repairs_total", "counter", "Replicas repaired by reads.", get(&st.read_repairs) as i64),
        (
            "kai_speculative_reads_total",
            "counter",
            "Reads that asked past their first R replicas (one failed or was slow).",
            get(&st.speculative_reads) as i64,
        ),
        ("kai_gossip_rounds_total", "counter", "Gossip rounds this node opened.", get(&st.gossip_rounds) as i64),
        (
            "kai_gossip_tables_sent_total",
            "counter",
            "Whole member tables sent (only while tables differ, and to link).",
            get(&st.gossip_tables_sent) as i64,
        ),
        ("kai_gossip_bytes_sent_total", "counter", "Bytes of gossip messages sent.", get(&st.gossip_bytes_sent) as i64),
        ("kai_siblings_served_total", "counter", "Sibling versions answered to reads.", get(&st.siblings_served) as i64),
        ("kai_hints_pending", "gauge", "Hinted writes held here for down home nodes.", st.hints_pending.load(Relaxed)),
        (
            "kai_hinted_at_once_total",
            "counter",
            "Replica writes that failed and went to a stand-in at once.",
            get(&st.hinted_at_once) as i64,
        ),
        (
            "kai_anti_entropy_buckets_compared_total",
            "counter",
            "Buckets compared with a fellow replica by anti-entropy.",
            get(&st.ae_compared) as i64,
        ),
        ("kai_anti_entropy_keys_repaired_total", "counter", "Keys moved by anti-entropy.", get(&st.ae_repaired) as i64),
        ("kai_reaped_versions_total", "counter", "Tombstones and expired versions reaped.", get(&st.reaped_versions) as i64),
        (
            "kai_buckets_in_transfer",
            "gauge",
            "Buckets still to pull or hand off after a ring change.",
            st.buckets_pending.load(Relaxed),
        ),
        (
            "kai_transfer_buckets_done",
            "gauge",
            "Buckets moved since the current transfer began.",
            s.transfers.buckets_done as i64,
        ),
        ("kai_transfer_bytes_in_total", "counter", "Value bytes pulled by the current transfer.", s.transfers.bytes_in as i64),
        (
            "kai_transfer_bytes_out_total",
            "counter",
            "Value bytes handed off by the current transfer.",
            s.transfers.bytes_out as i64,
        ),
    ] {
        out.one(name, kind, help, value);
    }
}

/// Members by state, and the failure detector's view of each.
fn members(out: &mut Out, s: &Scrape) {
    out.family("kai_members", "gauge", "Members as this node sees them, by state.");
    for state in ["joining", "up", "down", "leaving", "removed"] {
        let n = s
            .members
            .iter()
            .filter(|m| match state {
                "down" => m.suspected && m.state.on_ring(),
                _ => m.state.name() == state && !(m.suspected && m.state.on_ring()),
            })
            .count();
        out.sample("kai_members", &[("state", state)], n);
    }
    out.one(
        "kai_buckets_without_quorum",
        "gauge",
        "Buckets with fewer home replicas up than max(R, W): their keys fail a quorum anywhere.",
        s.buckets_without_quorum,
    );
    out.family("kai_member_phi", "gauge", "The failure detector's suspicion of each member.");
    for m in s.members.iter().filter(|m| m.state != MemberState::Removed) {
        let phi = if m.phi.is_finite() { m.phi } else { 1e9 };
        out.sample("kai_member_phi", &[("member", &m.addr)], format!("{phi:.3}"));
    }
}

/// The node itself: connections, the store, restarts, identity.
fn node(out: &mut Out, s: &Scrape) {
    let st = s.stats;
    let get = |c: &kai_actors::stats::Counter| c.load(Relaxed);
    for (name, kind, help, value) in [
        ("kai_connections", "gauge", "Client connections open.", st.curr_connections.load(Relaxed)),
        ("kai_connections_total", "counter", "Client connections accepted.", get(&st.total_connections) as i64),
        (
            "kai_connections_rejected_total",
            "counter",
            "Client connections refused at max_connections.",
            get(&st.rejected_connections) as i64,
        ),
        ("kai_load_shed_total", "counter", "Requests refused as busy (max_requests_in_flight).", get(&st.shed_busy) as i64),
        ("kai_requests_in_flight", "gauge", "Client requests running now.", st.requests_in_flight.load(Relaxed)),
    ] {
        out.one(name, kind, help, value);
    }
    let engine = s.identity.store;
    out.family("kai_items", "gauge", "Keys with a live value held here.");
    out.sample("kai_items", &[("engine", engine)], st.curr_items.load(Relaxed));
    out.family("kai_bytes", "gauge", "Bytes of live values held here.");
    out.sample("kai_bytes", &[("engine", engine)], st.bytes.load(Relaxed));
    out.family("kai_limit_bytes", "gauge", "The store's bound: the memory budget, or the disk's size.");
    out.sample("kai_limit_bytes", &[("engine", engine)], s.identity.limit_maxbytes);
    out.one("kai_store_read_only", "gauge", "1 while the store takes no writes (a full disk).", st.store_read_only.load(Relaxed));
    out.one("kai_network_read_bytes_total", "counter", "Bytes read from clients.", get(&st.bytes_read));
    out.one("kai_network_written_bytes_total", "counter", "Bytes written to clients.", get(&st.bytes_written));

    out.family("kai_actor_restarts_total", "counter", "Actor restarts, by module.");
    for module in ["api", "coordinator", "hash", "membership", "memcache", "store", "sync", "version"] {
        let n = s.restarts.iter().find(|(m, _)| *m == module).map_or(0, |(_, n)| *n);
        out.sample("kai_actor_restarts_total", &[("module", module)], n);
    }
    out.one("kai_panics_total", "counter", "Panics anywhere in the node.", s.panics);
    out.one("kai_uptime_seconds", "gauge", "Seconds since the node started.", s.identity.started.elapsed().as_secs());
    out.family("kai_info", "gauge", "The node's identity.");
    let quorum = format!("{},{},{}", s.identity.n, s.identity.r, s.identity.w);
    out.sample("kai_info", &[("node", &s.identity.node), ("version", kai_actors::stats::VERSION), ("quorum", &quorum)], 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn identity() -> Identity {
        Identity {
            terms: kai_actors::api::PeerTerms::of_build(1024, 3),
            node: "127.0.0.1:11011".into(),
            n: 3,
            r: 2,
            w: 2,
            number_of_buckets: 1024,
            virtual_nodes: 128,
            store: "disk",
            max_connections: 10,
            threads: 2,
            limit_maxbytes: 1 << 30,
            started: std::time::Instant::now(),
        }
    }

    #[test]
    fn the_exposition_is_well_formed_and_counts_what_happened() {
        let stats = NodeStats::default();
        NodeStats::add(&stats.get_hits, 7);
        stats.get_latency.record(Duration::from_micros(300));
        stats.get_latency.record(Duration::from_millis(30));
        let row = MemberRow {
            addr: "127.0.0.1:11012".into(),
            state: MemberState::Up,
            suspected: true,
            virtual_nodes: 128,
            incarnation: 1,
            buckets_first: 0,
            buckets_home: 0,
            hints_held: 0,
            heartbeat_age_ms: None,
            phi: f64::INFINITY,
            accepts_writes: true,
            zone: String::new(),
            waiting: None,
            removed_for_ms: None,
        };
        let text = render(&Scrape {
            stats: &stats,
            identity: &identity(),
            members: &[row],
            transfers: &TransferProgress::default(),
            restarts: &[("sync", 2)],
            panics: 1,
            buckets_without_quorum: 12,
        });
        assert!(text.contains("kai_buckets_without_quorum 12\n"), "{text}");
        assert!(text.contains("kai_requests_total{command=\"get\",outcome=\"hit\"} 7\n"), "{text}");
        assert!(text.contains("kai_request_duration_seconds_bucket{command=\"get\",le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("kai_request_duration_seconds_bucket{command=\"get\",le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("kai_members{state=\"down\"} 1\n") && text.contains("kai_members{state=\"up\"} 0\n"), "{text}");
        assert!(text.contains("kai_actor_restarts_total{module=\"sync\"} 2\n"), "{text}");
        // Every sample belongs to a family declared before it, once.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(declared.insert(rest.split(' ').next().unwrap().to_string()), "declared twice: {line}");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
                assert!(declared.contains(name) || declared.contains(family), "undeclared: {line}");
                assert!(line.rsplit(' ').next().unwrap().parse::<f64>().is_ok(), "not a number: {line}");
            }
        }
    }
}

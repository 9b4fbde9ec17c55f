//! Counters shared by the node's actors and reported by `stats`. Atomics,
//! so no request path waits for a stats actor; the ones every request
//! touches are striped over cache lines by thread, so two workers counting
//! at once never pull one line back and forth.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering, Ordering::Relaxed};
use std::time::Duration;

/// One cache line (two, for the adjacent-line prefetcher) to itself: what
/// two threads write is kept off each other's lines.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Line<T>(pub T);

/// A counter striped by thread: adds touch this thread's line only; a read
/// sums the stripes. The same calls as an `AtomicU64`.
#[derive(Default)]
pub struct Counter {
    stripes: [Line<AtomicU64>; STRIPES],
}

impl Counter {
    pub fn fetch_add(&self, n: u64, order: Ordering) -> u64 {
        self.stripes[stripe()].0.fetch_add(n, order)
    }

    pub fn load(&self, order: Ordering) -> u64 {
        self.stripes.iter().map(|s| s.0.load(order)).fold(0, u64::wrapping_add)
    }

    /// Sets the sum (`stats reset`): not atomic against adds meanwhile.
    pub fn store(&self, value: u64, order: Ordering) {
        for (i, s) in self.stripes.iter().enumerate() {
            s.0.store(if i == 0 { value } else { 0 }, order);
        }
    }
}

/// A gauge that goes up and down from many threads (requests in flight):
/// striped like `Counter`; a stripe may go below zero, the sum never does.
#[derive(Default)]
pub struct Gauge {
    stripes: [Line<AtomicI64>; STRIPES],
}

impl Gauge {
    pub fn fetch_add(&self, n: i64, order: Ordering) -> i64 {
        self.stripes[stripe()].0.fetch_add(n, order)
    }

    pub fn fetch_sub(&self, n: i64, order: Ordering) -> i64 {
        self.stripes[stripe()].0.fetch_sub(n, order)
    }

    pub fn load(&self, order: Ordering) -> i64 {
        self.stripes.iter().map(|s| s.0.load(order)).sum()
    }

    /// Sets the sum (a count rebuilt from the store): not atomic against
    /// adds meanwhile.
    pub fn store(&self, value: i64, order: Ordering) {
        for (i, s) in self.stripes.iter().enumerate() {
            s.0.store(if i == 0 { value } else { 0 }, order);
        }
    }
}

/// Latency histograms stripe over this many HDR histograms, so recordings
/// from different worker threads rarely wait on one lock.
const STRIPES: usize = 4;

/// The longest latency recorded exactly (longer ones count as this).
const LATENCY_MAX_MICROS: u64 = 60_000_000;

/// A latency histogram: HDR histograms of microseconds, three significant
/// figures, up to a minute.
pub struct Latency {
    stripes: [std::sync::Mutex<hdrhistogram::Histogram<u64>>; STRIPES],
}

impl Default for Latency {
    fn default() -> Self {
        let histogram = || {
            let h = hdrhistogram::Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3).expect("valid histogram bounds");
            std::sync::Mutex::new(h)
        };
        Latency { stripes: std::array::from_fn(|_| histogram()) }
    }
}

/// Which stripe this thread records into: handed out in turn.
fn stripe() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local!(static MINE: usize = (NEXT.fetch_add(1, Relaxed) as usize) % STRIPES);
    MINE.with(|s| *s)
}

impl Latency {
    pub fn record(&self, elapsed: Duration) {
        let micros = (elapsed.as_micros() as u64).clamp(1, LATENCY_MAX_MICROS);
        let mut h = self.stripes[stripe()].lock().unwrap_or_else(|e| e.into_inner());
        h.saturating_record(micros);
    }

    /// Every recording so far, in one histogram.
    pub fn snapshot(&self) -> hdrhistogram::Histogram<u64> {
        let mut all = hdrhistogram::Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3).expect("valid histogram bounds");
        for stripe in &self.stripes {
            let _ = all.add(&*stripe.lock().unwrap_or_else(|e| e.into_inner()));
        }
        all
    }

    /// The latency at quantile `q`, in microseconds (0 before any).
    pub fn quantile_micros(&self, q: f64) -> u64 {
        let all = self.snapshot();
        if all.is_empty() {
            0
        } else {
            all.value_at_quantile(q)
        }
    }

    /// Forgets every recording (`stats reset`).
    pub fn reset(&self) {
        for stripe in &self.stripes {
            stripe.lock().unwrap_or_else(|e| e.into_inner()).reset();
        }
    }
}

#[derive(Default)]
pub struct NodeStats {
    // memcache face
    pub curr_connections: AtomicI64,
    pub total_connections: Counter,
    pub rejected_connections: Counter,
    pub timed_out_connections: Counter,
    pub cmd_get: Counter,
    pub cmd_set: Counter,
    pub cmd_touch: Counter,
    pub cmd_flush: Counter,
    pub get_hits: Counter,
    pub get_misses: Counter,
    /// Reads that found only values past their expiry.
    pub get_expired: Counter,
    pub delete_hits: Counter,
    pub delete_misses: Counter,
    pub incr_hits: Counter,
    pub incr_misses: Counter,
    pub decr_hits: Counter,
    pub decr_misses: Counter,
    pub cas_hits: Counter,
    pub cas_misses: Counter,
    pub cas_badval: Counter,
    pub touch_hits: Counter,
    pub touch_misses: Counter,
    pub bytes_read: Counter,
    pub bytes_written: Counter,
    /// TLS handshakes that failed on the memcache port, and between peers.
    pub ssl_handshake_errors: Counter,
    pub peer_tls_handshake_errors: Counter,
    /// When the certificates were last read (unix seconds; 0: no TLS).
    pub certs_refreshed_at: AtomicU64,
    /// Authentication attempts (SASL or the text token), and those refused.
    pub auth_cmds: Counter,
    pub auth_errors: Counter,
    // store
    pub curr_items: Gauge,
    pub bytes: Gauge,
    pub total_items: Counter,
    pub reaped_versions: Counter,
    pub hints_pending: AtomicI64,
    /// 1 while the store takes no writes (a full disk): a figure to show;
    /// the store's `Writable` is what the node acts on.
    pub store_read_only: AtomicI64,
    // sync
    pub ae_compared: Counter,
    pub ae_repaired: Counter,
    pub buckets_pending: AtomicI64,
    // membership: members by state, as this node sees them (down counts
    // members on the ring that the failure detector suspects)
    pub members_joining: AtomicI64,
    pub members_up: AtomicI64,
    pub members_down: AtomicI64,
    pub members_leaving: AtomicI64,
    pub members_removed: AtomicI64,
    /// Gossip rounds this node opened, whole member tables it sent (as an
    /// answer to a differing table, or to link), and the bytes of every
    /// gossip message it sent (openings, answers, deltas, tables).
    pub gossip_rounds: Counter,
    pub gossip_tables_sent: Counter,
    pub gossip_bytes_sent: Counter,
    // coordinator
    pub siblings_served: Counter,
    pub unreconciled_get: Counter,
    pub read_repairs: Counter,
    /// Reads that asked past their first R replicas: one failed, or did
    /// not answer within the speculation delay.
    pub speculative_reads: Counter,
    /// Replica writes that failed and went to a stand-in with a hint at once.
    pub hinted_at_once: Counter,
    pub quorum_failures: Counter,
    pub requests_in_flight: Gauge,
    pub shed_busy: Counter,
    pub get_latency: Latency,
    pub set_latency: Latency,
}

/// Actor restarts in this process, counted by every supervised actor.
static ACTOR_RESTARTS: AtomicU64 = AtomicU64::new(0);

static RESTARTS_BY_MODULE: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Counts a restart of one of `module`'s actors.
pub fn count_restart(module: &'static str) {
    ACTOR_RESTARTS.fetch_add(1, Relaxed);
    *RESTARTS_BY_MODULE.lock().unwrap_or_else(|e| e.into_inner()).entry(module).or_default() += 1;
}

/// Restarts so far, by module.
pub fn restarts_by_module() -> Vec<(&'static str, u64)> {
    RESTARTS_BY_MODULE.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(m, n)| (*m, *n)).collect()
}

/// Panics so far, anywhere in the node.
pub fn panics() -> u64 {
    PANICS.load(Relaxed)
}

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Counts a panic anywhere in the node (the panic hook calls this).
pub fn count_panic() {
    PANICS.fetch_add(1, Relaxed);
}

impl NodeStats {
    pub fn add(counter: &Counter, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn incr(counter: &Counter) {
        counter.fetch_add(1, Relaxed);
    }

    /// Counts a hit or a miss.
    pub fn hit_or_miss(hit: bool, hits: &Counter, misses: &Counter) {
        Self::incr(if hit { hits } else { misses });
    }

    /// `stats reset`: the counters start again from zero (gauges such as
    /// items, bytes and connections open stay as they are).
    pub fn reset(&self) {
        for counter in [
            &self.total_connections,
            &self.rejected_connections,
            &self.timed_out_connections,
            &self.cmd_get,
            &self.cmd_set,
            &self.cmd_touch,
            &self.cmd_flush,
            &self.get_hits,
            &self.get_misses,
            &self.get_expired,
            &self.delete_hits,
            &self.delete_misses,
            &self.incr_hits,
            &self.incr_misses,
            &self.decr_hits,
            &self.decr_misses,
            &self.cas_hits,
            &self.cas_misses,
            &self.cas_badval,
            &self.touch_hits,
            &self.touch_misses,
            &self.bytes_read,
            &self.bytes_written,
            &self.total_items,
        ] {
            counter.store(0, Relaxed);
        }
        self.get_latency.reset();
        self.set_latency.reset();
    }
}

/// What a node is, for reports: fixed at start-up.
#[derive(Clone, Debug)]
pub struct Identity {
    pub node: String,
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub number_of_buckets: u32,
    pub virtual_nodes: u16,
    pub store: &'static str,
    pub max_connections: usize,
    pub threads: usize,
    /// The bound on what the store holds, in bytes: the memory budget of
    /// the memory engine, the size of the disk holding the disk engine.
    pub limit_maxbytes: u64,
    pub started: std::time::Instant,
    /// What it offers peers at the handshake.
    pub terms: crate::api::PeerTerms,
}

/// The version reported to memcache clients: the protocol level Kai
/// speaks, then Kai's own version.
pub const VERSION: &str = concat!("1.6.21-kai-", env!("CARGO_PKG_VERSION"));

/// Process CPU time (user, system) in seconds, to the microsecond.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage only fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (0.0, 0.0);
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

/// One figure of a node's stats, typed: the admin tool and the tests read
/// it as a number, and the memcache `stats` reply writes it as memcached
/// does.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub enum StatValue {
    Count(u64),
    Gauge(i64),
    /// Seconds to the microsecond (CPU time).
    Seconds(f64),
    Text(String),
}

impl StatValue {
    /// The figure as a count, if it is one.
    pub fn count(&self) -> Option<u64> {
        match self {
            StatValue::Count(n) => Some(*n),
            StatValue::Gauge(n) => u64::try_from(*n).ok(),
            StatValue::Seconds(_) | StatValue::Text(_) => None,
        }
    }
}

impl std::fmt::Display for StatValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatValue::Count(n) => write!(f, "{n}"),
            StatValue::Gauge(n) => write!(f, "{n}"),
            StatValue::Seconds(s) => write!(f, "{s:.6}"),
            StatValue::Text(t) => write!(f, "{t}"),
        }
    }
}

pub type Stats = Vec<(String, StatValue)>;

/// One figure of a node's stats, by name.
pub fn find<'a>(stats: &'a Stats, name: &str) -> Option<&'a StatValue> {
    stats.iter().find(|(n, _)| n == name).map(|(_, value)| value)
}

/// Every stat of the node, memcached's names first, then Kai's own.
pub fn report(stats: &NodeStats, id: &Identity, ring: &crate::hash::Ring) -> Stats {
    let mut lines = process_stats(stats, id);
    lines.extend(command_stats(stats));
    lines.extend(security_stats(stats));
    lines.extend(cluster_stats(stats, id, ring));
    let mut lines: Stats = lines.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    for (op, latency) in [("get", &stats.get_latency), ("set", &stats.set_latency)] {
        for (q, label) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")] {
            lines.push((format!("kai_{op}_latency_{label}_us"), StatValue::Count(latency.quantile_micros(q))));
        }
    }
    lines
}

fn count(c: &Counter) -> StatValue {
    StatValue::Count(c.load(Relaxed))
}

/// Seconds since the unix epoch (memcached's `time`).
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl NodeStats {
    /// Notes that the certificates were read just now.
    pub fn mark_certs_refreshed(&self) {
        self.certs_refreshed_at.store(unix_secs().max(1), Relaxed);
    }

    /// Seconds since the certificates were last read; None without TLS.
    pub fn since_certs_refreshed(&self) -> Option<u64> {
        let at = self.certs_refreshed_at.load(Relaxed);
        (at != 0).then(|| unix_secs().saturating_sub(at))
    }
}

/// The process, its connections and its memory, as memcached names them.
fn process_stats(stats: &NodeStats, id: &Identity) -> Vec<(&'static str, StatValue)> {
    use StatValue::{Count, Seconds, Text};
    let now = unix_secs();
    let (user, system) = cpu_seconds();
    vec![
        ("pid", Count(std::process::id().into())),
        ("uptime", Count(id.started.elapsed().as_secs())),
        ("time", Count(now)),
        ("version", Text(VERSION.to_string())),
        ("pointer_size", Count(8 * std::mem::size_of::<usize>() as u64)),
        ("rusage_user", Seconds(user)),
        ("rusage_system", Seconds(system)),
        ("max_connections", Count(id.max_connections as u64)),
        ("curr_connections", StatValue::Gauge(stats.curr_connections.load(Relaxed))),
        ("total_connections", count(&stats.total_connections)),
        ("rejected_connections", count(&stats.rejected_connections)),
        ("kai_timed_out_connections", count(&stats.timed_out_connections)),
        ("limit_maxbytes", Count(id.limit_maxbytes)),
        ("accepting_conns", Count(1)),
        ("threads", Count(id.threads as u64)),
        ("curr_items", StatValue::Gauge(stats.curr_items.load(Relaxed))),
        ("total_items", count(&stats.total_items)),
        ("bytes", StatValue::Gauge(stats.bytes.load(Relaxed))),
        ("evictions", Count(0)),
    ]
}

/// Commands served, as memcached names them.
fn command_stats(stats: &NodeStats) -> Vec<(&'static str, StatValue)> {
    vec![
        ("cmd_get", count(&stats.cmd_get)),
        ("cmd_set", count(&stats.cmd_set)),
        ("cmd_flush", count(&stats.cmd_flush)),
        ("cmd_touch", count(&stats.cmd_touch)),
        ("get_hits", count(&stats.get_hits)),
        ("get_misses", count(&stats.get_misses)),
        ("get_expired", count(&stats.get_expired)),
        // Kai's flush_all writes tombstones: a flushed key reads as deleted.
        ("get_flushed", StatValue::Count(0)),
        ("delete_misses", count(&stats.delete_misses)),
        ("delete_hits", count(&stats.delete_hits)),
        ("incr_misses", count(&stats.incr_misses)),
        ("incr_hits", count(&stats.incr_hits)),
        ("decr_misses", count(&stats.decr_misses)),
        ("decr_hits", count(&stats.decr_hits)),
        ("cas_misses", count(&stats.cas_misses)),
        ("cas_hits", count(&stats.cas_hits)),
        ("cas_badval", count(&stats.cas_badval)),
        ("touch_hits", count(&stats.touch_hits)),
        ("touch_misses", count(&stats.touch_misses)),
        ("bytes_read", count(&stats.bytes_read)),
        ("bytes_written", count(&stats.bytes_written)),
    ]
}

/// Authentication and TLS, as memcached names them; the TLS lines only
/// when the node speaks TLS (as memcached shows them only with `-Z`).
fn security_stats(stats: &NodeStats) -> Vec<(&'static str, StatValue)> {
    let mut lines = vec![("auth_cmds", count(&stats.auth_cmds)), ("auth_errors", count(&stats.auth_errors))];
    if let Some(since) = stats.since_certs_refreshed() {
        lines.extend([
            ("ssl_handshake_errors", count(&stats.ssl_handshake_errors)),
            ("time_since_server_cert_refresh", StatValue::Count(since)),
            ("kai_peer_tls_handshake_errors", count(&stats.peer_tls_handshake_errors)),
        ]);
    }
    lines
}

/// Kai's own: the node, its cluster, and its replication's work.
fn cluster_stats(stats: &NodeStats, id: &Identity, ring: &crate::hash::Ring) -> Vec<(&'static str, StatValue)> {
    use StatValue::{Count, Text};
    let held = id.node.parse().map(|addr| ring.buckets_of(&addr, id.n).len()).unwrap_or(0);
    let live = stats.members_joining.load(Relaxed) + stats.members_up.load(Relaxed);
    vec![
        ("kai_node", Text(id.node.clone())),
        ("kai_quorum", Text(format!("{},{},{}", id.n, id.r, id.w))),
        ("kai_peer_protocol_version", Count(id.terms.protocol_version.into())),
        ("kai_number_of_buckets", Count(id.number_of_buckets.into())),
        ("kai_number_of_virtual_nodes", Count(id.virtual_nodes.into())),
        ("kai_store", Text(id.store.to_string())),
        // Live members only: on the ring and not suspected down.
        ("kai_curr_nodes", StatValue::Gauge(live)),
        ("kai_ring_nodes", Count(ring.len() as u64)),
        ("kai_members_joining", StatValue::Gauge(stats.members_joining.load(Relaxed))),
        ("kai_members_up", StatValue::Gauge(stats.members_up.load(Relaxed))),
        ("kai_members_down", StatValue::Gauge(stats.members_down.load(Relaxed))),
        ("kai_members_leaving", StatValue::Gauge(stats.members_leaving.load(Relaxed))),
        ("kai_members_removed", StatValue::Gauge(stats.members_removed.load(Relaxed))),
        ("kai_gossip_rounds", count(&stats.gossip_rounds)),
        ("kai_gossip_tables_sent", count(&stats.gossip_tables_sent)),
        ("kai_gossip_bytes_sent", count(&stats.gossip_bytes_sent)),
        ("kai_buckets_held", Count(held as u64)),
        ("kai_unreconciled_get", count(&stats.unreconciled_get)),
        ("kai_read_repairs", count(&stats.read_repairs)),
        ("kai_speculative_reads", count(&stats.speculative_reads)),
        ("kai_hinted_at_once", count(&stats.hinted_at_once)),
        ("kai_siblings_served", count(&stats.siblings_served)),
        ("kai_quorum_failures", count(&stats.quorum_failures)),
        ("kai_requests_in_flight", StatValue::Gauge(stats.requests_in_flight.load(Relaxed))),
        ("kai_shed_busy", count(&stats.shed_busy)),
        ("kai_reaped_versions", count(&stats.reaped_versions)),
        ("kai_hints_pending", StatValue::Gauge(stats.hints_pending.load(Relaxed))),
        ("kai_store_read_only", StatValue::Gauge(stats.store_read_only.load(Relaxed))),
        ("kai_buckets_pending", StatValue::Gauge(stats.buckets_pending.load(Relaxed))),
        ("kai_anti_entropy_compared", count(&stats.ae_compared)),
        ("kai_anti_entropy_repaired", count(&stats.ae_repaired)),
        ("kai_actor_restarts", Count(ACTOR_RESTARTS.load(Relaxed))),
        ("kai_panics", Count(PANICS.load(Relaxed))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_out_to_three_figures() {
        let l = Latency::default();
        assert_eq!(l.quantile_micros(0.5), 0);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let l = Latency::default();
                    l.record(Duration::from_micros(5));
                    l.snapshot().len()
                })
            })
            .collect();
        assert!(threads.into_iter().all(|t| t.join().unwrap() == 1));
        for _ in 0..990 {
            l.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            l.record(Duration::from_millis(10));
        }
        assert_eq!(l.quantile_micros(0.5), 100);
        assert_eq!(l.quantile_micros(0.99), 100);
        assert!((9_990..=10_010).contains(&l.quantile_micros(0.999)), "{}", l.quantile_micros(0.999));
        l.reset();
        assert_eq!(l.quantile_micros(0.5), 0);
    }
}

//! A node's settings, as `kai.config.toml` gives them (the program reads
//! and checks the file; the library builds a node from the result).

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Memory,
    Disk,
}

/// TLS on the memcache port.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MemcacheTls {
    /// Plain text only.
    Off,
    /// TLS only, on `memcache_port`.
    Only,
    /// Plain on `memcache_port`, TLS on `memcache_tls_port`.
    Both,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The address other nodes reach this node at; part of its identity.
    pub hostname: String,
    /// Internal API port (node to node, and the admin tool).
    pub port: u16,
    /// Where the internal API listens, when not at `hostname:port` (behind
    /// a NAT, a proxy or a container's port mapping, where peers reach
    /// this node at `hostname:port` and that leads here).
    pub api_bind: Option<String>,
    /// Every internal API connection proves it knows this (HMAC-SHA256
    /// challenge-response). Empty: none, and the internal API then listens
    /// on loopback only.
    pub cluster_secret: String,
    pub memcache_port: u16,
    /// The HTTP port (/metrics, /status, /health), bound like the memcache
    /// port; 0 turns it off.
    pub http_port: u16,
    /// Where the memcache port listens; defaults to `hostname`.
    pub memcache_bind: Option<String>,
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub number_of_buckets: u32,
    pub number_of_virtual_nodes: u16,
    pub store: StoreKind,
    pub data_dir: PathBuf,
    /// Log file; standard error when absent.
    pub logfile: Option<PathBuf>,
    /// error, warn, info, debug or trace (RUST_LOG, when set, wins).
    pub log_level: String,
    pub max_connections: usize,
    /// Close memcache connections idle this long; 0 = never.
    pub idle_timeout_secs: u64,
    /// Close a memcache connection whose command has not arrived whole this
    /// long after its first byte (slow clients holding connections).
    pub command_timeout_secs: u64,
    /// Client requests a node runs at once; beyond it, `SERVER_ERROR busy`.
    pub max_requests_in_flight: usize,
    pub max_value_size: usize,
    /// The memory engine's budget for values, in bytes (memcached's -m);
    /// a write past it gets `SERVER_ERROR out of memory storing object`.
    pub max_memory_bytes: u64,
    /// The disk engine's cache of recently read or written keys, in bytes
    /// (0: none): a point read it holds skips the LSM search and decode.
    pub disk_cache_bytes: u64,
    /// This node's failure domain (a rack, a data centre): a key's
    /// replicas go to as many zones as there are. Empty: none.
    pub zone: String,
    pub allow_flush_all: bool,
    /// fsync every write before acknowledging it (survives power loss, not
    /// just a crash of the process).
    pub fsync: bool,
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub store_threads: usize,
    /// Threads running client connections and their requests.
    pub worker_threads: usize,
    pub api_max_in_flight: usize,
    pub max_clock_entries: usize,
    pub tombstone_grace_secs: u64,
    pub reap_interval_secs: u64,
    /// Nodes (internal API addresses) to link with at start.
    pub seeds: Vec<String>,
    pub gossip_interval_ms: u64,
    /// The phi accrual failure detector suspects a member (marks it down)
    /// once phi passes this: 8 is a one in 10^8 chance of being wrong.
    pub phi_threshold: f64,
    /// How often held hints are offered to their home nodes again.
    pub hint_interval_ms: u64,
    /// Lets the admin tool cut this node off from chosen peers, or make a
    /// module panic (tests).
    pub allow_fault_injection: bool,
    /// Panics a node survives (each panicking actor restarted in place)
    /// within `restart_period_secs`; one more and it exits with status 70
    /// for its service manager to restart it.
    pub restart_intensity: u32,
    pub restart_period_secs: u64,
    /// Anti-entropy and bucket transfer: a round every interval, at most
    /// this many value bytes a round, and this many held buckets compared
    /// in the background (a transfer's buckets are paced by bytes alone).
    pub anti_entropy_interval_ms: u64,
    pub anti_entropy_buckets_per_round: usize,
    pub anti_entropy_max_bytes_per_round: u64,
    /// The address (HOST:PORT) of a node this one replaces: it takes that
    /// node's place on the ring, so only the replaced node's buckets move
    /// (to it), and the old address is removed for good. It joins through
    /// `seeds`, or the members its `data_dir` (the old node's) knows.
    pub replaces: Option<String>,
    /// TLS for memcache clients: off, only (on `memcache_port`), or both
    /// (plain on `memcache_port`, TLS on `memcache_tls_port`).
    pub memcache_tls: MemcacheTls,
    pub memcache_tls_port: u16,
    /// The memcache port's certificate chain and key (PEM).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The CA clients' certificates must come from, when they are asked
    /// for (PEM).
    pub tls_ca: Option<PathBuf>,
    /// none, request or require: memcached's ssl_verify_mode.
    pub tls_verify_client: crate::tls::VerifyClient,
    /// "1.2" or "1.3": the oldest TLS a client may speak.
    pub tls_min_version: crate::tls::MinVersion,
    /// Mutual TLS for the internal API (peers and `kai admin`), all three
    /// or none: this node's certificate and key, and the cluster's CA
    /// every member's certificate must come from.
    pub cluster_tls_cert: Option<PathBuf>,
    pub cluster_tls_key: Option<PathBuf>,
    pub cluster_tls_ca: Option<PathBuf>,
    /// SASL PLAIN on the binary protocol (memcached's -S): `user:password`
    /// lines. Text clients are then refused unless `ascii_auth_file` is set.
    pub sasl_password_file: Option<PathBuf>,
    /// Authentication for text clients (memcached's -Y): `user:password`
    /// lines, proved with memcached's `set` convention. Binary clients are
    /// then refused unless `sasl_password_file` is set.
    pub ascii_auth_file: Option<PathBuf>,
    /// Test-only: the peer protocol version this node offers, to emulate
    /// the next release in an upgrade test (0: this build's own).
    pub test_peer_protocol_version: u32,
}

impl Config {
    /// The memcache port's TLS files, when it speaks TLS.
    pub fn client_tls(&self) -> Option<crate::tls::TlsFiles> {
        let (cert, key) = (self.tls_cert.clone()?, self.tls_key.clone()?);
        (self.memcache_tls != MemcacheTls::Off).then(|| crate::tls::TlsFiles {
            cert,
            key,
            ca: self.tls_ca.clone(),
            verify_client: self.tls_verify_client,
            min_version: self.tls_min_version,
        })
    }

    /// The internal API's mutual TLS files, when all three are set.
    pub fn cluster_tls(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.cluster_tls_cert.clone()?,
            key: self.cluster_tls_key.clone()?,
            ca: Some(self.cluster_tls_ca.clone()?),
            verify_client: crate::tls::VerifyClient::Require,
            min_version: self.tls_min_version,
        })
    }

    /// The node this one replaces, if any (checked at start).
    pub fn replaced(&self) -> Option<std::net::SocketAddrV4> {
        self.replaces.as_deref().and_then(|addr| addr.parse().ok())
    }

    /// What this node offers peers at the handshake.
    pub fn peer_terms(&self) -> crate::api::PeerTerms {
        let protocol_version = match self.test_peer_protocol_version {
            0 => crate::api::PEER_PROTOCOL_VERSION,
            offered => offered,
        };
        let quorum = |q: usize| q.min(u32::MAX as usize) as u32;
        crate::api::PeerTerms {
            protocol_version,
            number_of_buckets: self.number_of_buckets,
            n: quorum(self.n),
            r: quorum(self.r),
            w: quorum(self.w),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "127.0.0.1".into(),
            cluster_secret: String::new(),
            http_port: 11080,
            port: 11011,
            api_bind: None,
            memcache_port: 11211,
            memcache_bind: None,
            n: 3,
            r: 2,
            w: 2,
            number_of_buckets: 1024,
            number_of_virtual_nodes: 128,
            store: StoreKind::Disk,
            data_dir: PathBuf::from("data"),
            logfile: None,
            log_level: "info".into(),
            max_connections: 1024,
            idle_timeout_secs: 600,
            command_timeout_secs: 30,
            max_requests_in_flight: 4096,
            max_value_size: 1 << 20,
            max_memory_bytes: 1 << 30,
            disk_cache_bytes: 64 << 20,
            zone: String::new(),
            allow_flush_all: false,
            fsync: false,
            request_timeout_ms: 1000,
            connect_timeout_ms: 500,
            store_threads: 2,
            worker_threads: 2,
            api_max_in_flight: 256,
            max_clock_entries: 10,
            tombstone_grace_secs: 24 * 60 * 60,
            reap_interval_secs: 60,
            seeds: Vec::new(),
            gossip_interval_ms: 1000,
            phi_threshold: 8.0,
            restart_intensity: 3,
            restart_period_secs: 10,
            hint_interval_ms: 5000,
            allow_fault_injection: false,
            anti_entropy_interval_ms: 1000,
            anti_entropy_buckets_per_round: 64,
            anti_entropy_max_bytes_per_round: 8 << 20,
            replaces: None,
            memcache_tls: MemcacheTls::Off,
            memcache_tls_port: 0,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_verify_client: crate::tls::VerifyClient::None,
            tls_min_version: crate::tls::MinVersion::Tls12,
            cluster_tls_cert: None,
            cluster_tls_key: None,
            cluster_tls_ca: None,
            sasl_password_file: None,
            ascii_auth_file: None,
            test_peer_protocol_version: 0,
        }
    }
}

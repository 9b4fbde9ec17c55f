//! The node's configuration: `kai.config.toml`, with `--set KEY=VALUE`
//! overrides, checked as a whole before anything starts. A config that
//! makes no sense is refused with the key that is wrong.

pub use kai_actors::config::{Config, StoreKind};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, ToSocketAddrs};
use std::path::Path;

/// A refused config, naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config: {}", self.message)
        } else {
            write!(f, "config key `{}`: {}", self.key, self.message)
        }
    }
}

fn refuse<T>(key: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError { key: key.into(), message: message.into() })
}

/// Reads `path` (a missing path is an error), applies the overrides and
/// checks the result.
fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError { key: String::new(), message: format!("cannot read {}: {e}", path.display()) })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError { key: String::new(), message: format!("{}: {e}", path.display()) })
}

/// What the admin tool takes from a node config to reach the internal
/// API: `cluster_secret`, and the cluster's mutual TLS if it runs it. The
/// tool runs no node, so nothing else of the config is checked.
pub struct AdminAccess {
    pub secret: String,
    pub cluster_tls: Option<kai_actors::tls::TlsFiles>,
}

pub fn admin_access(path: &Path) -> Result<AdminAccess, ConfigError> {
    let mut table = read_table(path)?;
    let mut text = |key: &str| match table.remove(key) {
        Some(toml::Value::String(value)) => Ok(Some(value)),
        Some(_) => refuse(key, "must be a string"),
        None => Ok(None),
    };
    let secret = text("cluster_secret")?.unwrap_or_default();
    let (cert, key, ca) = (text("cluster_tls_cert")?, text("cluster_tls_key")?, text("cluster_tls_ca")?);
    let config = Config {
        cluster_tls_cert: cert.map(Into::into),
        cluster_tls_key: key.map(Into::into),
        cluster_tls_ca: ca.map(Into::into),
        ..Config::default()
    };
    Ok(AdminAccess { secret, cluster_tls: config.cluster_tls() })
}

pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Config, ConfigError> {
    let mut table = match path {
        Some(path) => read_table(path)?,
        None => toml::Table::new(),
    };
    for item in overrides {
        let Some((key, value)) = item.split_once('=') else {
            return refuse(item, "an override must be KEY=VALUE");
        };
        let key = key.trim();
        // A TOML value if it parses as one (numbers, booleans, quoted
        // strings), else the bare text as a string.
        let value = format!("v = {}", value.trim())
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.trim().to_string()));
        table.insert(key.to_string(), value);
    }
    let keys: Vec<String> = table.keys().cloned().collect();
    let config: Config = table.clone().try_into().map_err(|e: toml::de::Error| {
        let mut message = e.message().to_string();
        let unknown = message.split('`').nth(1).filter(|_| message.starts_with("unknown field")).map(str::to_string);
        if let Some(near) = unknown.as_deref().and_then(|word| nearest_key(word, &message)) {
            message = format!("unknown key `{}`: did you mean `{near}`?", unknown.as_deref().unwrap_or_default());
        }
        // Otherwise the value that does not fit: the key that alone fails.
        let key = unknown.or_else(|| {
            keys.iter()
                .find(|k| toml::Table::from_iter([((*k).clone(), table[k.as_str()].clone())]).try_into::<Config>().is_err())
                .cloned()
        });
        ConfigError { key: key.unwrap_or_default(), message }
    })?;
    config.check()?;
    Ok(config)
}

/// The known key nearest to an unknown one, from the keys serde's message
/// lists (`expected one of `a`, `b``), when it is near enough to be a
/// slip: at most a third of its letters apart.
fn nearest_key(word: &str, message: &str) -> Option<String> {
    let known = message.split_once("expected one of")?.1.split('`').skip(1).step_by(2);
    let (distance, key) = known.map(|key| (edit_distance(word, key), key)).min()?;
    (distance <= word.len().max(3) / 3).then(|| key.to_string())
}

/// Levenshtein distance: letters inserted, deleted or changed.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// What the program makes of a node's settings: its addresses, resolved,
/// and whether the whole makes sense.
pub trait Settings {
    fn node_addr(&self) -> Result<SocketAddrV4, ConfigError>;
    fn seed_addrs(&self) -> Result<Vec<SocketAddrV4>, ConfigError>;
    fn http_addr(&self) -> Option<String>;
    fn memcache_addr(&self) -> String;
    fn check(&self) -> Result<(), ConfigError>;
}

impl Settings for Config {
    /// This node's identity on the ring: hostname resolved to IPv4.
    fn node_addr(&self) -> Result<SocketAddrV4, ConfigError> {
        if let Ok(ip) = self.hostname.parse::<Ipv4Addr>() {
            return Ok(SocketAddrV4::new(ip, self.port));
        }
        let resolved = (self.hostname.as_str(), self.port).to_socket_addrs().ok().into_iter().flatten();
        for addr in resolved {
            if let std::net::SocketAddr::V4(v4) = addr {
                return Ok(v4);
            }
        }
        refuse("hostname", format!("{:?} does not resolve to an IPv4 address", self.hostname))
    }

    fn seed_addrs(&self) -> Result<Vec<SocketAddrV4>, ConfigError> {
        self.seeds
            .iter()
            .map(|seed| match seed.to_socket_addrs().ok().and_then(|mut a| a.find(|a| a.is_ipv4())) {
                Some(std::net::SocketAddr::V4(v4)) => Ok(v4),
                _ => refuse("seeds", format!("{seed:?} is not an IPv4 HOST:PORT")),
            })
            .collect()
    }

    fn http_addr(&self) -> Option<String> {
        (self.http_port != 0).then(|| format!("{}:{}", self.memcache_bind.as_deref().unwrap_or(&self.hostname), self.http_port))
    }

    fn memcache_addr(&self) -> String {
        format!("{}:{}", self.memcache_bind.as_deref().unwrap_or(&self.hostname), self.memcache_port)
    }

    fn check(&self) -> Result<(), ConfigError> {
        check_quorum(self)?;
        check_ports(self)?;
        check_limits(self)?;
        check_timing(self)?;
        check_tls(self)?;
        check_auth(self)?;
        self.seed_addrs()?;
        let me = self.node_addr()?;
        check_replaces(self, me)?;
        let listens = match self.api_bind.as_deref() {
            None => me,
            Some(addr) => {
                addr.parse::<SocketAddrV4>().or_else(|_| refuse("api_bind", format!("{addr:?} is not an IPv4 HOST:PORT")))?
            }
        };
        if self.cluster_secret.is_empty() && (!me.ip().is_loopback() || !listens.ip().is_loopback()) {
            return refuse(
                "cluster_secret",
                format!(
                    "the internal API would listen on {listens} (reached as {me}), beyond this machine, where anyone reaching it could command \
                     the cluster: set cluster_secret (the same on every node) or use a loopback hostname"
                ),
            );
        }
        if self.store == StoreKind::Disk {
            check_writable(&self.data_dir)?;
        }
        Ok(())
    }
}

/// `replaces`: another node's address.
fn check_replaces(config: &Config, me: SocketAddrV4) -> Result<(), ConfigError> {
    let Some(old) = config.replaces.as_deref() else { return Ok(()) };
    let Ok(old) = old.parse::<SocketAddrV4>() else {
        return refuse("replaces", format!("{old:?} is not an IPv4 HOST:PORT (the replaced node's internal API address)"));
    };
    if old == me {
        return refuse("replaces", format!("{old} is this node's own address: a node replaces another"));
    }
    Ok(())
}

/// N, R and W: a majority writes, and reads meet writes.
fn check_quorum(config: &Config) -> Result<(), ConfigError> {
    let (n, r, w) = (config.n, config.r, config.w);
    if n == 0 {
        return refuse("n", "must be at least 1");
    }
    if r == 0 || r > n {
        return refuse("r", format!("must be between 1 and n ({n})"));
    }
    if w == 0 || w > n {
        return refuse("w", format!("must be between 1 and n ({n})"));
    }
    if n > 1 && w <= n / 2 {
        return refuse("w", format!("must be a majority of n ({n}): more than {}", n / 2));
    }
    if r + w <= n {
        return refuse("r", format!("r + w ({}) must be more than n ({n}) so reads see writes", r + w));
    }
    Ok(())
}

/// The node's ports: fixed, and apart.
fn check_ports(config: &Config) -> Result<(), ConfigError> {
    if config.port == 0 {
        return refuse("port", "must be a fixed port: it is part of the node's identity");
    }
    if config.memcache_port == 0 {
        return refuse("memcache_port", "must not be 0");
    }
    if config.port == config.memcache_port {
        return refuse("memcache_port", format!("clashes with port ({})", config.port));
    }
    if config.http_port != 0 && (config.http_port == config.port || config.http_port == config.memcache_port) {
        return refuse("http_port", format!("clashes with port ({}) or memcache_port ({})", config.port, config.memcache_port));
    }
    Ok(())
}

/// The memcache port's TLS and the cluster's: each setting means
/// something only with the others it needs, and a setting that would be
/// ignored is refused rather than silently dropped.
fn check_tls(config: &Config) -> Result<(), ConfigError> {
    use kai_actors::config::MemcacheTls;
    use kai_actors::tls::VerifyClient;
    let tls_on = config.memcache_tls != MemcacheTls::Off;
    for (key, set) in [("tls_cert", config.tls_cert.is_some()), ("tls_key", config.tls_key.is_some())] {
        if tls_on && !set {
            return refuse(key, "memcache_tls is on: give the memcache port's certificate and key (PEM files)");
        }
    }
    let client_keys =
        [("tls_cert", config.tls_cert.is_some()), ("tls_key", config.tls_key.is_some()), ("tls_ca", config.tls_ca.is_some())];
    if let Some((key, _)) = client_keys.iter().find(|(_, set)| *set).filter(|_| !tls_on) {
        return refuse(key, "is set but memcache_tls is off: set memcache_tls = \"only\" or \"both\", or remove it");
    }
    if config.tls_verify_client != VerifyClient::None && config.tls_ca.is_none() {
        return refuse("tls_ca", "tls_verify_client asks for client certificates: give the CA they must come from");
    }
    if config.memcache_tls == MemcacheTls::Both {
        let port = config.memcache_tls_port;
        if port == 0 || [config.port, config.memcache_port, config.http_port].contains(&port) {
            return refuse("memcache_tls_port", "memcache_tls = \"both\" needs a port of its own for TLS clients");
        }
    } else if config.memcache_tls_port != 0 {
        return refuse("memcache_tls_port", "is used only with memcache_tls = \"both\"");
    }
    let cluster = [
        ("cluster_tls_cert", config.cluster_tls_cert.is_some()),
        ("cluster_tls_key", config.cluster_tls_key.is_some()),
        ("cluster_tls_ca", config.cluster_tls_ca.is_some()),
    ];
    if cluster.iter().any(|(_, set)| *set) {
        if let Some((key, _)) = cluster.iter().find(|(_, set)| !set) {
            return refuse(
                key,
                "mutual TLS between nodes needs all three of cluster_tls_cert, cluster_tls_key and cluster_tls_ca",
            );
        }
    }
    Ok(())
}

/// Client authentication: the files must be readable password lists.
fn check_auth(config: &Config) -> Result<(), ConfigError> {
    for (key, path) in [("sasl_password_file", &config.sasl_password_file), ("ascii_auth_file", &config.ascii_auth_file)] {
        if let Some(path) = path {
            kai_actors::memcache::auth::Passwords::load(path).map_err(|message| ConfigError { key: key.into(), message })?;
        }
    }
    Ok(())
}

/// Sizes and counts: the ring's shape, threads, limits, the peer protocol.
fn check_limits(config: &Config) -> Result<(), ConfigError> {
    if !kai_actors::hash::is_valid_bucket_count(config.number_of_buckets) {
        return refuse(
            "number_of_buckets",
            format!("must be a power of two from 1 to {} (so buckets cut the ring evenly)", kai_actors::hash::MAX_BUCKETS),
        );
    }
    if config.number_of_virtual_nodes == 0 {
        return refuse("number_of_virtual_nodes", "must be at least 1");
    }
    if config.max_connections == 0 {
        return refuse("max_connections", "must be at least 1");
    }
    if config.command_timeout_secs == 0 {
        return refuse("command_timeout_secs", "must be at least 1");
    }
    if config.max_requests_in_flight == 0 {
        return refuse("max_requests_in_flight", "must be at least 1");
    }
    if config.max_value_size == 0 || config.max_value_size > 32 << 20 {
        return refuse("max_value_size", "must be between 1 byte and 32 MiB");
    }
    let ours = kai_actors::api::PEER_PROTOCOL_VERSION;
    if ![0, ours, ours + 1].contains(&config.test_peer_protocol_version) {
        return refuse(
            "test_peer_protocol_version",
            format!("test-only: 0 (this build's {ours}) or {} (the next release's, for upgrade tests)", ours + 1),
        );
    }
    Ok(())
}

/// Timeouts and intervals, and the log and restart policy.
fn check_timing(config: &Config) -> Result<(), ConfigError> {
    if config.request_timeout_ms == 0 || config.connect_timeout_ms == 0 {
        return refuse("request_timeout_ms", "timeouts must be more than 0");
    }
    if config.store_threads == 0 || config.store_threads > 64 {
        return refuse("store_threads", "must be between 1 and 64");
    }
    if config.worker_threads == 0 || config.worker_threads > 64 {
        return refuse("worker_threads", "must be between 1 and 64");
    }
    if config.api_max_in_flight == 0 {
        return refuse("api_max_in_flight", "must be at least 1");
    }
    if config.max_clock_entries < 2 {
        return refuse("max_clock_entries", "must be at least 2");
    }
    if config.reap_interval_secs == 0 {
        return refuse("reap_interval_secs", "must be at least 1");
    }
    if config.gossip_interval_ms == 0 || config.hint_interval_ms == 0 {
        return refuse("gossip_interval_ms", "intervals must be more than 0");
    }
    if config.anti_entropy_interval_ms == 0 || config.anti_entropy_buckets_per_round == 0 {
        return refuse("anti_entropy_interval_ms", "anti-entropy needs an interval and buckets per round above 0");
    }
    if !["error", "warn", "info", "debug", "trace"].contains(&config.log_level.as_str()) {
        return refuse("log_level", format!("{:?} is none of error, warn, info, debug, trace", config.log_level));
    }
    if config.restart_period_secs == 0 {
        return refuse("restart_period_secs", "must be at least 1");
    }
    if !(config.phi_threshold.is_finite() && config.phi_threshold >= 1.0) {
        return refuse("phi_threshold", "must be a number of at least 1 (8 is usual)");
    }
    Ok(())
}

fn check_writable(dir: &Path) -> Result<(), ConfigError> {
    let probe = dir.join(".kai-write-probe");
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"ok"))
        .and_then(|_| std::fs::remove_file(&probe))
        .or_else(|e| refuse("data_dir", format!("{} cannot be written: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(overrides: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["store=\"memory\"".to_string()];
        all.extend(overrides.iter().map(|s| s.to_string()));
        load(None, &all)
    }

    fn refused_key(overrides: &[&str]) -> String {
        with(overrides).expect_err("should be refused").key
    }

    #[test]
    fn defaults_are_the_originals() {
        let c = with(&[]).unwrap();
        assert_eq!((c.n, c.r, c.w, c.number_of_buckets, c.number_of_virtual_nodes), (3, 2, 2, 1024, 128));
        assert_eq!((c.port, c.memcache_port), (11011, 11211));
    }

    #[test]
    fn overrides_take_toml_values_or_bare_strings() {
        let c = with(&["n=1", "r=1", "w=1", "hostname=127.0.0.2", "allow_flush_all=true"]).unwrap();
        assert_eq!((c.n, c.r, c.w), (1, 1, 1));
        assert_eq!(c.hostname, "127.0.0.2");
        assert!(c.allow_flush_all);
    }

    #[test]
    fn nonsense_is_refused_by_key() {
        assert_eq!(refused_key(&["r=4"]), "r");
        assert_eq!(refused_key(&["w=0"]), "w");
        assert_eq!(refused_key(&["n=4", "w=2", "r=3"]), "w");
        assert_eq!(refused_key(&["n=3", "r=1", "w=2"]), "r");
        assert_eq!(refused_key(&["memcache_port=11011"]), "memcache_port");
        assert_eq!(refused_key(&["bogus=1"]), "bogus");
        assert_eq!(refused_key(&["number_of_buckets=0"]), "number_of_buckets");
        assert_eq!(refused_key(&["n=three"]), "n", "a value of the wrong type names its key");
        assert_eq!(refused_key(&["log_level=\"loud\""]), "log_level");
        assert_eq!(refused_key(&["hostname=\"10.1.2.3\""]), "cluster_secret");
        assert!(with(&["hostname=\"10.1.2.3\"", "cluster_secret=\"s3cret\""]).is_ok());
        assert_eq!(refused_key(&["number_of_buckets=3000"]), "number_of_buckets");
        assert_eq!(refused_key(&["number_of_buckets=131072"]), "number_of_buckets");
        assert!(with(&["number_of_buckets=1"]).is_ok() && with(&["number_of_buckets=65536"]).is_ok());
        assert_eq!(refused_key(&["hostname=no.such.host.invalid"]), "hostname");
        assert!(with(&["n=\"three\""]).is_err());
        assert!(with(&["nokey"]).is_err());
    }

    #[test]
    fn tls_and_auth_settings_that_would_be_ignored_or_incomplete_are_refused() {
        assert_eq!(refused_key(&["memcache_tls=\"only\""]), "tls_cert");
        assert_eq!(refused_key(&["memcache_tls=\"only\"", "tls_cert=\"c.pem\""]), "tls_key");
        assert_eq!(refused_key(&["tls_cert=\"c.pem\"", "tls_key=\"k.pem\""]), "tls_cert", "memcache_tls is off");
        assert_eq!(refused_key(&["memcache_tls=\"sometimes\""]), "memcache_tls");
        let tls = ["memcache_tls=\"only\"", "tls_cert=\"c.pem\"", "tls_key=\"k.pem\""];
        assert!(with(&tls).is_ok());
        assert_eq!(refused_key(&[&tls[..], &["tls_verify_client=\"require\""]].concat()), "tls_ca");
        assert_eq!(refused_key(&[&tls[..], &["tls_min_version=\"1.1\""]].concat()), "tls_min_version");
        assert_eq!(refused_key(&[&tls[..], &["memcache_tls_port=11300"]].concat()), "memcache_tls_port");
        let both = ["memcache_tls=\"both\"", "tls_cert=\"c.pem\"", "tls_key=\"k.pem\""];
        assert_eq!(refused_key(&both), "memcache_tls_port");
        assert_eq!(refused_key(&[&both[..], &["memcache_tls_port=11211"]].concat()), "memcache_tls_port");
        assert!(with(&[&both[..], &["memcache_tls_port=11300"]].concat()).is_ok());
        assert_eq!(refused_key(&["cluster_tls_cert=\"c.pem\"", "cluster_tls_key=\"k.pem\""]), "cluster_tls_ca");
        assert_eq!(refused_key(&["sasl_password_file=\"/no/such/file\""]), "sasl_password_file");
        assert_eq!(refused_key(&["api_bind=\"somewhere\""]), "api_bind");
        assert_eq!(refused_key(&["api_bind=\"10.0.0.1:11011\""]), "cluster_secret", "beyond loopback needs the secret");
    }

    #[test]
    fn an_unwritable_data_dir_is_refused() {
        let e = load(None, &["data_dir=\"/proc/kai-cannot-write\"".into()]).unwrap_err();
        assert_eq!(e.key, "data_dir");
    }

    #[test]
    fn the_shipped_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kai.config.toml");
        let dir = tempfile::tempdir().unwrap();
        let c = load(Some(&path), &[format!("data_dir={:?}", dir.path().display().to_string())]).unwrap();
        assert_eq!((c.n, c.r, c.w), (1, 1, 1));
    }

    #[test]
    fn an_unknown_key_suggests_the_nearest_known_one() {
        let err = with(&["max_conections=5"]).unwrap_err();
        assert_eq!(err.key, "max_conections");
        assert!(err.message.contains("did you mean `max_connections`?"), "{}", err.message);
        let err = with(&["zzzzzz=5"]).unwrap_err();
        assert!(!err.message.contains("did you mean"), "nothing near: {}", err.message);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}

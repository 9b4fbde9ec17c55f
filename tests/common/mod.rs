//! Whole-node test harness: real `kai` processes on free loopback ports,
//! each with its own data directory, killed and removed when dropped.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const STARTUP: Duration = Duration::from_secs(20);

/// Waits until `check` holds, polling; returns how long it took.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// A free loopback port for a listener. Chosen below the kernel's
/// ephemeral range: an outgoing connection (any test's client, any node's
/// gossip) takes its local port from that range, and could take a node's
/// port while the node is down for a restart. Each test process walks its
/// own stretch of the range (from its pid), and never hands a port out twice.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// Several free ports, all different.
pub fn free_ports<const K: usize>() -> [u16; K] {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = listener_port_range();
    let span = u32::from(high - low);
    let start = std::process::id().wrapping_mul(7919) % span;
    std::array::from_fn(|_| {
        for _ in 0..span {
            let port = low + ((start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
        panic!("no free port in {low}..{high}");
    })
}

/// The ports from 10000 up to the ephemeral range (`ip_local_port_range`);
/// at least 10000..20000 if that range starts lower.
fn listener_port_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    (10000, ephemeral_low.max(20000))
}

pub struct TestNode {
    pub api_port: u16,
    pub memcache_port: u16,
    pub http_port: u16,
    pub dir: tempfile::TempDir,
    overrides: Vec<String>,
    child: Option<Child>,
}

impl TestNode {
    /// Starts a single node (n = r = w = 1) on the disk store with extra overrides.
    pub fn start(extra: &[&str]) -> TestNode {
        let mut node = TestNode::prepare(extra);
        node.launch();
        node
    }

    /// A node with its ports and data dir chosen, not started yet.
    pub fn prepare(extra: &[&str]) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let [api_port, memcache_port, http_port] = free_ports();
        let mut overrides: Vec<String> = vec![
            "n=1".into(),
            "r=1".into(),
            "w=1".into(),
            format!("port={api_port}"),
            format!("memcache_port={memcache_port}"),
            format!("http_port={http_port}"),
            format!("data_dir={:?}", dir.path().join("data").display().to_string()),
            format!("logfile={:?}", dir.path().join("kai.log").display().to_string()),
        ];
        overrides.extend(extra.iter().map(|s| s.to_string()));
        TestNode { api_port, memcache_port, http_port, dir, overrides, child: None }
    }

    /// One more config override, for the next launch.
    pub fn set(&mut self, setting: String) {
        self.overrides.push(setting);
    }

    /// Deletes the node's data dir (while it is stopped).
    pub fn wipe_data(&self) {
        assert!(self.child.is_none(), "stop the node first");
        std::fs::remove_dir_all(self.dir.path().join("data")).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kai.log")).unwrap_or_default()
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kai"));
        cmd.arg("--config").arg(repo_config());
        for o in self.overrides.iter().map(String::as_str).chain(extra.iter().copied()) {
            cmd.arg("--set").arg(o);
        }
        cmd
    }

    /// Starts the process on this node's data with `extra` overrides, which
    /// must make it refuse to start; answers what it said.
    pub fn refused_start(&self, extra: &[&str]) -> String {
        assert!(self.child.is_none(), "already running");
        let out = Command::new("timeout")
            .arg("20")
            .arg(self.command(extra).get_program())
            .args(self.command(extra).get_args())
            .output()
            .expect("run kai");
        assert!(!out.status.success(), "kai started with {extra:?}");
        assert_ne!(out.status.code(), Some(124), "kai neither started nor refused within 20 s");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Starts the process (again) with the same config and data.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = self.command(&[]);
        // If this test process dies without running its destructors (killed,
        // or aborted), the node dies with it rather than linger.
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs in pre_exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn kai");
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        // Every port the node serves, the HTTP one too (it may open a
        // moment after the others) unless the test turned it off.
        let http_off = self.overrides.iter().any(|o| o.replace(' ', "") == "http_port=0");
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.memcache_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.api_port)).is_ok()
                && (http_off || TcpStream::connect(("127.0.0.1", self.http_port)).is_ok())
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let mut err = String::new();
                let _ = self.child.take().unwrap().stderr.unwrap().read_to_string(&mut err);
                panic!("kai exited at start ({status}): {err}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kai did not start listening within {STARTUP:?}\n{}", self.log());
    }

    /// kill -9: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe_sigterm(child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("kai did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, once the process has ended by itself (it can then
    /// be launched again).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn client(&self) -> memcache::Client {
        let url = format!("memcache://127.0.0.1:{}?protocol=ascii&timeout=5", self.memcache_port);
        memcache::Client::connect(url.as_str()).expect("memcache client")
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.memcache_port)
    }

    pub fn api_addr(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }

    /// Runs `kai admin -e ...` against this node; (success, stdout, stderr).
    /// Runs `kai admin` with this node's own cluster secret, if it has one.
    pub fn admin(&self, commands: &[&str]) -> (bool, String, String) {
        match self.admin_config() {
            Some(config) => admin_with_config(&self.api_addr(), &config, commands),
            None => admin_with_secret(&self.api_addr(), self.secret().as_deref(), commands),
        }
    }

    /// One setting this node was started with, as given.
    pub fn setting(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.overrides.iter().rev().find_map(|o| o.strip_prefix(&prefix)).map(|v| v.trim_matches('"').to_string())
    }

    /// The cluster's mutual TLS files this node runs with, if any.
    pub fn cluster_tls(&self) -> Option<kai_actors::tls::TlsFiles> {
        Some(kai_actors::tls::TlsFiles {
            cert: self.setting("cluster_tls_cert")?.into(),
            key: self.setting("cluster_tls_key")?.into(),
            ca: Some(self.setting("cluster_tls_ca")?.into()),
            verify_client: kai_actors::tls::VerifyClient::Require,
            min_version: kai_actors::tls::MinVersion::Tls12,
        })
    }

    /// A config file for `kai admin --config`, when the node runs mutual
    /// TLS: its secret and its cluster TLS files.
    fn admin_config(&self) -> Option<PathBuf> {
        let tls = self.cluster_tls()?;
        let path = self.dir.path().join("admin.toml");
        let text = format!(
            "cluster_secret = {:?}\ncluster_tls_cert = {:?}\ncluster_tls_key = {:?}\ncluster_tls_ca = {:?}\n",
            self.secret().unwrap_or_default(),
            tls.cert.display().to_string(),
            tls.key.display().to_string(),
            tls.ca.unwrap().display().to_string()
        );
        std::fs::write(&path, text).unwrap();
        Some(path)
    }

    /// The network the admin protocol reaches this node over.
    fn network(&self) -> std::sync::Arc<dyn kai_actors::api::net::Network> {
        use kai_actors::tls::{Tls, TlsNetwork};
        match self.cluster_tls() {
            Some(files) => {
                std::sync::Arc::new(TlsNetwork { inner: kai_actors::api::net::tcp(), tls: Tls::for_cluster(files).unwrap() })
            }
            None => kai_actors::api::net::tcp(),
        }
    }

    /// The `cluster_secret` this node was started with.
    pub fn secret(&self) -> Option<String> {
        self.setting("cluster_secret")
    }

    /// Every stat, typed, as the admin protocol carries them.
    pub fn stats(&self) -> kai_actors::stats::Stats {
        use kai_actors::api::auth::Secret;
        use kai_actors::api::ApiClient;
        let network = self.network();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let secret = Secret::new(&self.secret().unwrap_or_default());
        let addr = self.api_addr().parse().unwrap();
        let timeout = Duration::from_secs(5);
        let asked = runtime.block_on(async {
            let client = ApiClient::connect(network.as_ref(), addr, "kai-test", None, &secret, timeout).await?;
            client.admin(&kai_actors::node::Stats, timeout).await
        });
        asked.unwrap_or_else(|e| panic!("stats of {}: {e}", self.api_addr()))
    }

    /// One stat that counts something, read typed.
    pub fn count(&self, name: &str) -> u64 {
        let stats = self.stats();
        kai_actors::stats::find(&stats, name).and_then(|v| v.count()).unwrap_or_else(|| panic!("no count {name} in {stats:?}"))
    }

    /// One `stats` value as the memcache protocol writes it.
    pub fn stat(&self, name: &str) -> String {
        let text = self.raw().request("stats\r\n", "END\r\n");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")).map(str::to_string))
            .unwrap_or_else(|| panic!("no stat {name} in {text}"))
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}

pub fn repo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kai.config.toml")
}

pub fn admin(node: &str, commands: &[&str]) -> (bool, String, String) {
    admin_with_secret(node, None, commands)
}

/// Runs `kai admin -e ...` proving `secret` (KAI_CLUSTER_SECRET).
pub fn admin_with_secret(node: &str, secret: Option<&str>, commands: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kai"));
    cmd.arg("admin").arg("--node").arg(node).env_remove("KAI_CLUSTER_SECRET");
    if let Some(secret) = secret {
        cmd.env("KAI_CLUSTER_SECRET", secret);
    }
    for c in commands {
        cmd.arg("-e").arg(c);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run kai admin");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Runs `kai admin --config FILE -e ...`; (success, stdout, stderr).
pub fn admin_with_config(node: &str, config: &Path, commands: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kai"));
    cmd.arg("admin").arg("--node").arg(node).arg("--config").arg(config).env_remove("KAI_CLUSTER_SECRET");
    for c in commands {
        cmd.arg("-e").arg(c);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run kai admin");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Runs `tests/clients/secure_clients.py` (Python's clients over TLS and
/// with authentication); whether it passed, and what it said.
pub fn secure_client(args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("60")
        .arg("/usr/bin/python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/secure_clients.py"))
        .args(args)
        .output()
        .expect("python3");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// memcached itself, the yardstick some tests compare replies with;
/// stopped when dropped.
pub struct Memcached(std::process::Child);

impl Memcached {
    /// memcached with `args` (and `env`) on a free loopback port, one
    /// thread; answers it and its port once it listens.
    pub fn start(args: &[&str], env: &[(&str, &Path)]) -> (Memcached, u16) {
        let [port] = free_ports::<1>();
        let child = Command::new("memcached")
            .args(["-u", "nobody", "-l", "127.0.0.1", "-U", "0", "-t", "1", "-p", &port.to_string()])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached is the yardstick here: bash tests/clients/install.sh installs it");
        let server = Memcached(child);
        wait_for("memcached to listen", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok());
        (server, port)
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTP GET's whole answer, status line first.
pub fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// A raw memcache connection, for exact bytes.
pub struct Raw {
    stream: TcpStream,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads until the reply ends with `end` (or 10 s pass: a test failure).
    pub fn read_until(&mut self, end: &str) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !got.ends_with(end.as_bytes()) {
            assert!(Instant::now() < deadline, "no {end:?} after {:?}", String::from_utf8_lossy(&got));
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read failed ({e}) after {:?}", String::from_utf8_lossy(&got)),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Sends `request` and reads the reply through `end`.
    pub fn request(&mut self, request: &str, end: &str) -> String {
        self.send(request.as_bytes());
        self.read_until(end)
    }

    /// Whether the server closed the connection (reads EOF within 5 s).
    pub fn closed(&mut self) -> bool {
        self.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// Settings that make a cluster notice failures within a couple of seconds.
pub const CLUSTER: &[&str] = &[
    "n=3",
    "r=2",
    "w=2",
    "gossip_interval_ms=200",
    "hint_interval_ms=500",
    "request_timeout_ms=1000",
    "allow_fault_injection=true",
];

pub struct TestCluster {
    pub nodes: Vec<TestNode>,
}

/// Runs `during` with the link between `a` and `b` cut both ways (each
/// still reaches every other node), then mends it: writes made through
/// each side meanwhile are concurrent, so siblings.
pub fn with_link_cut(a: &TestNode, b: &TestNode, during: impl FnOnce()) {
    assert!(a.admin(&[&format!("block {}", b.api_addr())]).0);
    assert!(b.admin(&[&format!("block {}", a.api_addr())]).0);
    during();
    assert!(a.admin(&["block"]).0);
    assert!(b.admin(&["block"]).0);
}

/// `check_node A B` through `via`, as an operator would: tried again (up
/// to three times, a second apart) if it fails, as a link made while the
/// machine is starved for CPU can time out; every failure is shown.
fn check_node(via: &TestNode, a: &str, b: &str) {
    let mut failures = Vec::new();
    for _ in 0..3 {
        let (ok, out, err) = via.admin(&[&format!("check_node {a} {b}")]);
        if ok {
            return;
        }
        failures.push(format!("{out} {err}"));
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("check_node {a} {b}: {failures:?}");
}

/// Tells each of `others` about `first`, then `first` about it, as an
/// operator would, without waiting for anyone to be seen up.
pub fn link_to<'a>(first: &TestNode, others: impl IntoIterator<Item = &'a TestNode>) {
    for node in others {
        check_node(node, &node.api_addr(), &first.api_addr());
        check_node(node, &first.api_addr(), &node.api_addr());
    }
}

impl TestCluster {
    /// Starts `k` nodes and links them as an operator would: each new node
    /// is told about the first, then the first about it.
    pub fn start(k: usize, extra: &[&str]) -> TestCluster {
        let mut settings: Vec<&str> = CLUSTER.to_vec();
        settings.extend_from_slice(extra);
        TestCluster::link((0..k).map(|_| TestNode::start(&settings)).collect())
    }

    /// Links running nodes as an operator would.
    pub fn link(nodes: Vec<TestNode>) -> TestCluster {
        let cluster = TestCluster { nodes };
        let (first, others) = cluster.nodes.split_first().expect("a node to link to");
        link_to(first, others.iter());
        cluster.wait_until_all_up(Duration::from_secs(20));
        cluster
    }

    /// Waits until every running node lists every node as up.
    pub fn wait_until_all_up(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let want = self.nodes.len();
        loop {
            let agreed = self.nodes.iter().all(|n| n.up_members().len() == want);
            if agreed {
                return;
            }
            assert!(Instant::now() < deadline, "members did not agree within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl TestNode {
    /// The members this node lists as up.
    pub fn up_members(&self) -> Vec<String> {
        self.members_in("up")
    }

    /// The members `node_list` shows in `state` (its second column).
    pub fn members_in(&self, state: &str) -> Vec<String> {
        self.member_states().into_iter().filter(|(_, s)| s == state).map(|(m, _)| m).collect()
    }

    /// Every member `node_list` shows, with its state.
    pub fn member_states(&self) -> Vec<(String, String)> {
        let (ok, out, _) = self.admin(&["node_list"]);
        if !ok {
            return Vec::new();
        }
        // The table ends at the first empty line; notes follow it.
        out.lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| {
                let mut cells = l.split_whitespace();
                Some((cells.next()?.to_string(), cells.next()?.to_string()))
            })
            .collect()
    }

    /// Waits until this node lists `member` as down (or up).
    pub fn wait_for_member(&self, member: &str, up: bool, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.up_members().iter().any(|m| m == member) != up {
            assert!(
                Instant::now() < deadline,
                "{member} not {} on {} within {limit:?}",
                if up { "up" } else { "down" },
                self.api_addr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A key's preference list as `find_nodes` shows it (home replicas first).
pub fn preference(node: &TestNode, key: &str) -> Vec<String> {
    let (ok, out, err) = node.admin(&[&format!("find_nodes {key}")]);
    assert!(ok, "{err}");
    out.lines().map(|l| l.split(' ').next().unwrap().to_string()).collect()
}

pub fn by_addr<'a>(cluster: &'a mut TestCluster, addr: &str) -> &'a mut TestNode {
    cluster.nodes.iter_mut().find(|n| n.api_addr() == addr).unwrap()
}

impl TestCluster {
    /// The cluster's ring, computed here exactly as every node computes it
    /// (1024 buckets, 128 virtual nodes each): placement without asking.
    pub fn ring(&self) -> kai_actors::hash::Ring {
        let nodes = self.nodes.iter().map(|n| kai_actors::hash::RingNode::new(n.api_addr().parse().unwrap(), 128));
        kai_actors::hash::Ring::new(1024, nodes)
    }

    /// A key's home replicas, first first.
    pub fn homes(&self, ring: &kai_actors::hash::Ring, key: &str) -> Vec<String> {
        ring.find_nodes(key.as_bytes(), 3).iter().map(|a| a.to_string()).collect()
    }
}

/// Tests in one binary run in parallel. A test that times how a failure
/// is ridden out takes the machine alone (`alone`); its neighbours take
/// it shared (`beside`), so a cluster of theirs cannot starve its nodes
/// into timeouts that say nothing about Kai.
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

pub fn beside() -> std::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

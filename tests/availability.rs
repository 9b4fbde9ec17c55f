//! Always writeable through a failing member, before the failure detector
//! has noticed anything: five nodes (N=3, R=2, W=2), one home replica of
//! the keys killed (-9) or paused (SIGSTOP), requests arriving at a node
//! that is not among the keys' replicas and so forwards them.

mod common;

use common::{link_to, preference, TestCluster, TestNode, CLUSTER};
use std::time::{Duration, Instant};

/// Keys whose first home is `first` and whose homes exclude `outsider`:
/// an outsider forwards them to `first` before any other replica.
fn keys_forwarded_first_to(cluster: &TestCluster, first: &str, outsider: &str, count: usize) -> Vec<String> {
    let ring = cluster.ring();
    let keys: Vec<String> = (0..5000)
        .map(|i| format!("fw{i}"))
        .filter(|k| {
            let homes = cluster.homes(&ring, k);
            homes[0] == first && !homes.iter().any(|h| h == outsider)
        })
        .take(count)
        .collect();
    assert_eq!(keys.len(), count, "not enough keys placed as wanted");
    // The nodes place them so too.
    assert_eq!(preference(&cluster.nodes[0], &keys[0])[0], first);
    keys
}

fn signal(node: &TestNode, signal: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(node.pid().to_string()).status().unwrap();
    assert!(status.success());
}

/// Writes every key through `via` right after the first home failed, and
/// reads it back: no request may fail, and each must be answered within
/// the request deadline.
fn writes_go_on_through(via: &TestNode, keys: &[String], what: &str) {
    let client = via.client();
    let started = Instant::now();
    for k in keys {
        let t = Instant::now();
        client.set(k, k.as_str(), 0).unwrap_or_else(|e| panic!("{what}: set {k} failed: {e}"));
        assert!(t.elapsed() < Duration::from_millis(1500), "{what}: set {k} took {:?}", t.elapsed());
    }
    for k in keys {
        assert_eq!(client.get::<String>(k).unwrap_or_else(|e| panic!("{what}: get {k}: {e}")).as_deref(), Some(k.as_str()));
    }
    println!("{what}: {} writes and reads through a forwarding node, 0 failed, {:?}", keys.len(), started.elapsed());
}

#[test]
fn forwarding_falls_back_when_the_first_replica_is_killed() {
    let mut cluster = TestCluster::start(5, &[]);
    let (first, outsider) = (cluster.nodes[1].api_addr(), cluster.nodes[4].api_addr());
    let keys = keys_forwarded_first_to(&cluster, &first, &outsider, 20);
    cluster.nodes[1].kill();
    // At once, long before any node suspects it.
    writes_go_on_through(&cluster.nodes[4], &keys, "first replica killed -9");
}

#[test]
fn forwarding_falls_back_when_the_first_replica_is_paused() {
    let cluster = TestCluster::start(5, &[]);
    let (first, outsider) = (cluster.nodes[1].api_addr(), cluster.nodes[4].api_addr());
    let keys = keys_forwarded_first_to(&cluster, &first, &outsider, 10);
    signal(&cluster.nodes[1], "STOP");
    writes_go_on_through(&cluster.nodes[4], &keys, "first replica paused (SIGSTOP)");
    signal(&cluster.nodes[1], "CONT");
}

/// Right after a home replica dies, writes through a node that holds the
/// keys get a stand-in with a hint for the dead one at once: every key is
/// on three live nodes (two homes and a stand-in) without waiting for the
/// failure detector or for repair.
#[test]
fn a_failed_replica_write_gets_a_stand_in_at_once() {
    let mut cluster = TestCluster::start(5, &["anti_entropy_interval_ms=600000"]);
    let dead = cluster.nodes[1].api_addr();
    let coordinator = cluster.nodes[0].api_addr();
    // Keys the coordinator and the dead node are both home replicas of.
    let ring = cluster.ring();
    let keys: Vec<String> = (0..5000)
        .map(|i| format!("sb{i}"))
        .filter(|k| {
            let homes = cluster.homes(&ring, k);
            homes.contains(&dead) && homes.contains(&coordinator)
        })
        .take(40)
        .collect();
    assert_eq!(keys.len(), 40);
    let live: Vec<usize> = vec![0, 2, 3, 4];
    let items = |c: &TestCluster| -> u64 { live.iter().map(|&i| c.nodes[i].count("curr_items")).sum() };
    let before = items(&cluster);
    cluster.nodes[1].kill();
    let client = cluster.nodes[0].client();
    for k in &keys {
        client.set(k, "v", 0).unwrap_or_else(|e| panic!("set {k}: {e}"));
    }
    let written = Instant::now();
    let want = before + 3 * keys.len() as u64;
    let deadline = written + Duration::from_secs(1);
    while items(&cluster) != want {
        assert!(
            Instant::now() < deadline,
            "{} copies of {} keys on the live nodes, not {}",
            items(&cluster) - before,
            keys.len(),
            3 * keys.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let at_once: u64 = cluster.nodes[0].count("kai_hinted_at_once");
    assert!(at_once > 0, "no write went to a stand-in at once");
    println!("stand-in at once: {} keys, 3 live copies each within {:?} of the last write", keys.len(), written.elapsed());
}

/// The failure detector only suspects: a node whose heartbeats stop
/// reaching the coordinator may still serve (its heartbeats came through a
/// peer now cut off, say). When another replica fails, the suspected one is
/// asked last rather than the request refused.
#[test]
fn a_suspected_replica_is_asked_when_another_fails() {
    let settings = |extra: &'static str| CLUSTER.iter().copied().chain([extra]).collect::<Vec<_>>();
    let a = TestNode::start(&settings("store=\"memory\""));
    // b's heartbeat rises once a minute: a suspects it within a second,
    // while it serves every request as before.
    let b = TestNode::start(&settings("gossip_interval_ms=60000"));
    let c = TestNode::start(&settings("store=\"memory\""));
    link_to(&a, [&b, &c]);
    a.wait_for_member(&c.api_addr(), true, Duration::from_secs(10));
    a.wait_for_member(&b.api_addr(), false, Duration::from_secs(10));
    // Each key's replicas (N = 3 of three nodes): a, b suspected, c cut off.
    assert!(a.admin(&[&format!("block {}", c.api_addr())]).0);
    assert!(c.admin(&[&format!("block {}", a.api_addr())]).0);
    let client = a.client();
    let keys: Vec<String> = (0..10).map(|i| format!("suspect{i}")).collect();
    for k in &keys {
        client.set(k, "v", 0).unwrap_or_else(|e| panic!("set {k} with c cut off and b suspected: {e}"));
    }
    for k in &keys {
        let got: Option<String> = client.get(k).unwrap_or_else(|e| panic!("get {k} with c cut off and b suspected: {e}"));
        assert_eq!(got.as_deref(), Some("v"), "{k}");
    }
    assert_eq!(b.count("curr_items"), keys.len() as u64, "b took the writes c could not");
    assert!(a.members_in("down").contains(&b.api_addr()), "b was suspected throughout");
}

/// One node of five is down for 10 s while writes go on through the
/// others; within 5 s of its return every key written has exactly its three
/// home copies (hints handed back, stand-ins' copies dropped), and sampled
/// keys hold the same version on every home.
#[test]
fn replicas_converge_within_seconds_of_a_return() {
    let mut cluster = TestCluster::start(5, &[]);
    cluster.nodes[2].kill();
    let ports: Vec<u16> = [0, 1, 3, 4].iter().map(|&i| cluster.nodes[i].memcache_port).collect();
    let started = Instant::now();
    let mut written = 0u64;
    let clients: Vec<memcache::Client> = ports
        .iter()
        .map(|p| memcache::Client::connect(format!("memcache://127.0.0.1:{p}?protocol=ascii&timeout=5").as_str()).unwrap())
        .collect();
    while started.elapsed() < Duration::from_secs(10) && written < 20_000 {
        let key = format!("cv{written}");
        clients[written as usize % clients.len()].set(&key, key.as_str(), 0).unwrap_or_else(|e| panic!("{key}: {e}"));
        written += 1;
    }
    cluster.nodes[2].launch();
    let back = Instant::now();
    let total = |c: &TestCluster, stat: &str| -> u64 { c.nodes.iter().map(|n| n.count(stat)).sum() };
    while !(total(&cluster, "curr_items") == 3 * written && total(&cluster, "kai_hints_pending") == 0) {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "not converged 5 s after the return: {} copies of {written} keys, {} hints",
            total(&cluster, "curr_items"),
            total(&cluster, "kai_hints_pending")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let converged = back.elapsed();
    for i in (0..written).step_by((written / 10).max(1) as usize) {
        let (ok, out, err) = cluster.nodes[2].admin(&[&format!("get cv{i}")]);
        assert!(ok, "{err}");
        assert_eq!(out.matches(&format!("\"cv{i}\"")).count(), 3, "cv{i}: {out}");
        let dots: Vec<&str> = out.lines().filter_map(|l| l.split(" dot ").nth(1)).map(|d| d.split(' ').next().unwrap()).collect();
        assert!(dots.len() == 3 && dots.iter().all(|d| *d == dots[0]), "cv{i} differs between replicas: {out}");
    }
    println!(
        "convergence: {written} keys written during a 10 s outage; all on exactly their 3 homes {converged:?} after the return"
    );
}

/// A tmpfs mounted over a node's data dir (root only), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size_mib: u32) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Fills the file system to the last byte; answers the filler's path.
    fn fill(&self) -> std::path::PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Three nodes; one's data dir is a small tmpfs that is then filled. Writes
/// through the others all succeed; that node answers reads, says it takes
/// no writes (`kai_store_read_only`, and its peers route around it), and a
/// write through it gets a clear error or is forwarded. Once space is
/// freed it takes writes again by itself, catches up, and every
/// acknowledged write is there.
#[test]
fn a_full_disk_is_a_state_not_a_death() {
    let mut nodes: Vec<TestNode> = (0..3).map(|_| TestNode::prepare(common::CLUSTER)).collect();
    let Some(disk) = Tmpfs::mount(&nodes[2].dir.path().join("data"), 24) else {
        println!("full disk: skipped (mounting a tmpfs needs root, as CI has)");
        return;
    };
    for node in nodes.iter_mut() {
        node.launch();
    }
    let cluster = TestCluster::link(nodes);
    let (a, b, full) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    a.client().set("before", "b", 0).unwrap();
    let filler = disk.fill();
    let value = "x".repeat(10_000);
    let mut acked = Vec::new();
    for i in 0..200 {
        let key = format!("fd{i}");
        [a, b][i % 2].client().set(&key, value.as_str(), 0).unwrap_or_else(|e| panic!("{key} through a healthy node: {e}"));
        acked.push(key);
    }
    common::wait_for("the full node says it takes no writes", Duration::from_secs(5), || {
        full.count("kai_store_read_only") == 1 && a.count("kai_members_up") == 3
    });
    assert_eq!(full.client().get::<String>("before").unwrap().as_deref(), Some("b"), "reads go on");
    match full.raw().request("set through-full 0 0 1\r\nv\r\n", "\r\n").as_str() {
        "STORED\r\n" => acked.push("through-full".into()),
        reply => assert!(reply.starts_with("SERVER_ERROR store read-only: disk full"), "{reply}"),
    }
    assert!(full.log().contains("No space left on device"), "the cause is logged");

    std::fs::remove_file(filler).unwrap();
    let healed = Instant::now();
    common::wait_for("writes taken again without a restart", Duration::from_secs(10), || full.count("kai_store_read_only") == 0);
    full.client().set("after", "a", 0).unwrap();
    let want = acked.len() + 2;
    let deadline = Instant::now() + Duration::from_secs(20);
    while full.count("curr_items") != want as u64 {
        assert!(
            Instant::now() < deadline,
            "not caught up: {} of {want} keys, compared {} repaired {}\n{}",
            full.stat("curr_items"),
            full.stat("kai_anti_entropy_compared"),
            full.stat("kai_anti_entropy_repaired"),
            full.log().lines().rev().take(15).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let caught_up = healed.elapsed();
    for key in &acked {
        let (ok, out, _) = full.admin(&[&format!("get {key}")]);
        assert!(ok && !out.contains("(nothing)"), "{key} missing on a replica: {out}");
    }
    println!("full disk: {} writes acknowledged while one replica's disk was full; it took writes again and held all of them {caught_up:?} after space returned", acked.len());
}

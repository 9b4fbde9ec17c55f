//! Never losing a write: real processes killed, cut off, joined and
//! removed under load. Each test prints the figures RELIABILITY.md quotes.

mod common;

use common::{wait_for, TestCluster, TestNode};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Background work fast enough for tests.
const FAST_SYNC: &[&str] = &["anti_entropy_interval_ms=100", "anti_entropy_buckets_per_round=128"];

fn stat(node: &TestNode, name: &str) -> Option<String> {
    let (ok, out, _) = node.admin(&["stats"]);
    ok.then(|| out.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))).flatten()
}

fn stat_u64(node: &TestNode, name: &str) -> u64 {
    stat(node, name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn merkle_root(node: &TestNode) -> String {
    let (ok, out, err) = node.admin(&["merkle_root"]);
    assert!(ok, "{err}");
    out.trim().to_string()
}

/// Reads a key through a raw connection: the values of its VALUE blocks.
fn values(node: &TestNode, key: &str) -> Vec<String> {
    let mut raw = node.raw();
    raw.send(format!("get {key}\r\n").as_bytes());
    let mut lines = Vec::new();
    loop {
        let line = raw.read_until("\r\n");
        for l in line.split_terminator("\r\n") {
            assert!(!l.contains("ERROR"), "get {key} via {}: {l}", node.api_addr());
            lines.push(l.to_string());
        }
        if lines.last().is_some_and(|l| l == "END") {
            break;
        }
    }
    lines.chunks(2).filter(|c| c[0].starts_with("VALUE")).map(|c| c[1].clone()).collect()
}

#[test]
fn kill_9_during_a_write_load_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(5, FAST_SYNC);
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.memcache_port).collect();
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop, ports) = (acked.clone(), stop.clone(), ports.clone());
            std::thread::spawn(move || {
                let (mut sent, mut failed) = (0u64, 0u64);
                for i in 0..100_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let port = ports[(w + i as usize) % ports.len()];
                    let (key, value) = (format!("w{w}-{i}"), format!("value-{w}-{i}"));
                    sent += 1;
                    // A fresh connection each time: one to a dead node just fails.
                    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                        failed += 1;
                        continue;
                    };
                    use std::io::{Read, Write};
                    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    let _ = s.write_all(format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes());
                    let mut buf = [0u8; 128];
                    match s.read(&mut buf) {
                        Ok(n) if buf[..n].starts_with(b"STORED\r\n") => {
                            acked.lock().unwrap().insert(key, value);
                        }
                        _ => failed += 1,
                    }
                }
                (sent, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    cluster.nodes[4].kill();
    let killed_at = acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(2));
    cluster.nodes[4].launch();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (mut sent, mut failed) = (0, 0);
    for w in writers {
        let (s, f) = w.join().unwrap();
        sent += s;
        failed += f;
    }
    cluster.wait_until_all_up(Duration::from_secs(20));
    let acked = acked.lock().unwrap().clone();
    let mut lost = Vec::new();
    for (i, (key, value)) in acked.iter().enumerate() {
        let via = &cluster.nodes[i % 5];
        if !values(via, key).contains(value) {
            lost.push(key.clone());
        }
    }
    println!(
        "kill -9 of 1 of 5 under load: {sent} writes sent, {} acknowledged ({killed_at} before the kill), {failed} refused, {} lost",
        acked.len(),
        lost.len()
    );
    assert!(acked.len() > 100, "the load did not run");
    assert!(lost.is_empty(), "acknowledged writes lost: {:?}", &lost[..lost.len().min(10)]);
}

#[test]
fn a_partitioned_node_converges_after_healing() {
    let cluster = TestCluster::start(3, FAST_SYNC);
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    assert!(c.admin(&[&format!("block {} {}", a.api_addr(), b.api_addr())]).0);
    assert!(a.admin(&[&format!("block {}", c.api_addr())]).0);
    assert!(b.admin(&[&format!("block {}", c.api_addr())]).0);
    let client = a.client();
    for i in 0..300 {
        client.set(&format!("p{i}"), format!("while-cut-{i}").as_str(), 0).unwrap();
    }
    for i in 0..50 {
        client.delete(&format!("p{i}")).unwrap();
    }
    assert_ne!(merkle_root(a), merkle_root(c), "c cannot have these writes yet");
    for n in [a, b, c] {
        assert!(n.admin(&["block"]).0);
    }
    let healed = Instant::now();
    // No reads: anti-entropy alone brings c up to date.
    let took = wait_for("merkle roots agree", Duration::from_secs(60), || {
        let roots: Vec<String> = [a, b, c].iter().map(|n| merkle_root(n)).collect();
        roots.iter().all(|r| *r == roots[0])
    });
    println!("partition healed: 300 writes and 50 deletes reached the cut-off node; Merkle roots agreed after {took:?}");
    assert!(stat_u64(c, "kai_anti_entropy_repaired") > 0 || stat_u64(a, "kai_anti_entropy_repaired") > 0);
    let _ = healed;
    for i in 0..300 {
        let want: Vec<String> = if i < 50 { vec![] } else { vec![format!("while-cut-{i}")] };
        assert_eq!(values(c, &format!("p{i}")), want);
    }
}

fn total_items(nodes: &[&TestNode]) -> u64 {
    nodes.iter().map(|n| stat_u64(n, "curr_items")).sum()
}

#[test]
fn a_fourth_node_joins_under_load_then_is_removed_with_no_loss() {
    let mut cluster = TestCluster::start(3, FAST_SYNC);
    let keys = 400;
    let client = cluster.nodes[0].client();
    for i in 0..keys {
        client.set(&format!("j{i}"), format!("v{i}").as_str(), 0).unwrap();
    }
    let nodes: Vec<&TestNode> = cluster.nodes.iter().collect();
    wait_for("every key on three nodes", Duration::from_secs(30), || total_items(&nodes) == 3 * keys);

    // Readers run through the join and the removal; none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.memcache_port).collect();
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut bad = Vec::new();
            let clients: Vec<_> = ports
                .iter()
                .map(|p| {
                    memcache::Client::connect(format!("memcache://127.0.0.1:{p}?protocol=ascii&timeout=5").as_str()).unwrap()
                })
                .collect();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && reads < 1_000_000 {
                let key = format!("j{}", i % keys);
                match clients[(i % 3) as usize].get::<String>(&key) {
                    Ok(Some(v)) if v == format!("v{}", i % keys) => {}
                    other => bad.push(format!("{key}: {other:?}")),
                }
                reads += 1;
                i += 1;
            }
            (reads, bad)
        })
    };

    let new = TestNode::start(&[common::CLUSTER, FAST_SYNC].concat());
    let first = cluster.nodes[0].api_addr();
    assert!(new.admin(&[&format!("check_node {} {first}", new.api_addr())]).0);
    assert!(new.admin(&[&format!("check_node {first} {}", new.api_addr())]).0);
    cluster.nodes.push(new);
    cluster.wait_until_all_up(Duration::from_secs(20));
    let join_started = Instant::now();
    let nodes: Vec<&TestNode> = cluster.nodes.iter().collect();
    wait_for("transfers done after the join", Duration::from_secs(60), || {
        nodes.iter().all(|n| stat_u64(n, "kai_buckets_pending") == 0) && total_items(&nodes) == 3 * keys
    });
    let joined_in = join_started.elapsed();
    let new = &cluster.nodes[3];
    let held = stat_u64(new, "curr_items");
    let (_, progress, _) = new.admin(&["transfers"]);
    println!("join: the 4th node holds {held} of {keys} keys x3 replicas after {joined_in:?}; {}", progress.trim());
    assert!(held > keys / 2 && held < keys * 3, "the new node holds {held}");
    assert!(progress.contains("buckets"), "{progress}\n{}", new.log());
    for n in &cluster.nodes[..3] {
        assert!(stat_u64(n, "curr_items") < keys, "{} kept buckets it no longer owns", n.api_addr());
    }

    // Now take it out again.
    let removed = cluster.nodes[3].api_addr();
    let (ok, out, err) = cluster.nodes[0].admin(&[&format!("remove_node {removed}")]);
    assert!(ok, "{out} {err}");
    let remove_started = Instant::now();
    let remaining: Vec<&TestNode> = cluster.nodes[..3].iter().collect();
    let rehomed = || total_items(&remaining) == 3 * keys && stat_u64(&cluster.nodes[3], "curr_items") == 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !rehomed() {
        let pending: Vec<u64> = cluster.nodes.iter().map(|n| stat_u64(n, "kai_buckets_pending")).collect();
        assert!(
            Instant::now() < deadline,
            "not re-homed 60 s after the removal: {} key copies on the three (want {}), {} on the removed node, buckets pending {pending:?}\n{}",
            total_items(&remaining),
            3 * keys,
            stat_u64(&cluster.nodes[3], "curr_items"),
            cluster.nodes[1].log().lines().rev().take(25).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("remove_node: its buckets re-homed and dropped after {:?}", remove_started.elapsed());

    stop.store(true, Ordering::Relaxed);
    let (reads, bad) = reader.join().unwrap();
    println!("reads during join and removal: {reads}, failed or wrong: {}", bad.len());
    assert!(bad.is_empty(), "reads failed: {:?}", &bad[..bad.len().min(10)]);
    for i in 0..keys {
        assert_eq!(values(&cluster.nodes[1], &format!("j{i}")), vec![format!("v{i}")]);
    }
}

#[test]
fn a_delete_while_a_replica_is_down_stays_deleted_after_the_grace_period() {
    let settings = [FAST_SYNC, &["tombstone_grace_secs=1", "reap_interval_secs=1"]].concat();
    let mut cluster = TestCluster::start(3, &settings);
    let c0 = cluster.nodes[0].client();
    c0.set("doomed", "alive", 0).unwrap();
    for i in 0..20 {
        c0.set(&format!("keep{i}"), "kept", 0).unwrap();
    }
    let down = cluster.nodes[2].api_addr();
    cluster.nodes[2].kill();
    cluster.nodes[0].wait_for_member(&down, false, Duration::from_secs(10));
    assert!(c0.delete("doomed").unwrap());
    // Well past the grace period: no replica may reap while one is missing.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(stat_u64(&cluster.nodes[0], "kai_reaped_versions"), 0);

    cluster.nodes[2].launch(); // still holds "alive"
    cluster.wait_until_all_up(Duration::from_secs(20));
    for node in &cluster.nodes {
        assert_eq!(values(node, "doomed"), Vec::<String>::new(), "via {}", node.api_addr());
    }
    // Once every replica holds the tombstone, it is reaped everywhere.
    let took = wait_for("the tombstone reaped on every replica", Duration::from_secs(30), || {
        cluster.nodes.iter().all(|n| stat_u64(n, "curr_items") == 20)
            && cluster.nodes.iter().all(|n| stat_u64(n, "kai_reaped_versions") >= 1)
    });
    println!("delete during an outage: stayed deleted; reaped on all replicas {took:?} after the node returned");
    for node in &cluster.nodes {
        assert_eq!(values(node, "doomed"), Vec::<String>::new());
        assert_eq!(values(node, "keep3"), vec!["kept".to_string()]);
    }
}

//! Zones on real processes: six nodes in three zones with N = 3. Every
//! key's home replicas span the three zones; a whole zone killed under
//! write load costs no request; when it comes back every acknowledged
//! write is there and the replicas agree.

mod common;

use common::{TestCluster, TestNode, CLUSTER};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const ZONES: [&str; 3] = ["east", "west", "north"];

/// Six nodes, two a zone, linked.
fn zoned_cluster() -> (TestCluster, BTreeMap<String, &'static str>) {
    let nodes: Vec<TestNode> = (0..6)
        .map(|i| {
            let zone = format!("zone=\"{}\"", ZONES[i % 3]);
            let mut settings: Vec<&str> = CLUSTER.to_vec();
            settings.push(&zone);
            TestNode::start(&settings)
        })
        .collect();
    let zone_of = nodes.iter().enumerate().map(|(i, n)| (n.api_addr(), ZONES[i % 3])).collect();
    (TestCluster::link(nodes), zone_of)
}

/// The home replicas `find_nodes` gives for each key, in one admin run.
fn homes(node: &TestNode, keys: &[String]) -> Vec<Vec<String>> {
    let commands: Vec<String> = keys.iter().map(|k| format!("find_nodes {k}")).collect();
    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    let (ok, out, err) = node.admin(&commands);
    assert!(ok, "{err}");
    let homes: Vec<String> =
        out.lines().filter(|l| l.contains(" home ")).map(|l| l.split(' ').next().unwrap().to_string()).collect();
    assert_eq!(homes.len(), keys.len() * 3, "three home replicas a key:\n{out}");
    homes.chunks(3).map(|c| c.to_vec()).collect()
}

#[test]
fn every_preference_list_spans_the_three_zones() {
    let (cluster, zone_of) = zoned_cluster();
    let keys: Vec<String> = (0..1000).map(|i| format!("zoned-{i}")).collect();
    for (key, home) in keys.iter().zip(homes(&cluster.nodes[0], &keys)) {
        let zones: BTreeSet<&str> = home.iter().map(|n| zone_of[n]).collect();
        assert_eq!(zones.len(), 3, "{key}: {home:?}");
    }
    let (ok, out, _) = cluster.nodes[0].admin(&["node_list"]);
    assert!(ok && ZONES.iter().all(|z| out.matches(z).count() == 2), "node_list shows each zone twice:\n{out}");
}

/// What each home replica holds of `key`, as `kai admin get` lists it.
fn replica_copies(node: &TestNode, key: &str) -> Vec<String> {
    let (ok, out, err) = node.admin(&[&format!("get {key}")]);
    assert!(ok, "{err}");
    let mut copies: Vec<String> = Vec::new();
    for line in out.lines() {
        if line.starts_with("  ") {
            copies.last_mut().expect("a replica line first").push_str(line);
        } else {
            copies.push(String::new());
        }
    }
    copies
}

#[test]
fn a_whole_zone_down_costs_no_request_and_it_catches_up_when_back() {
    let (mut cluster, _) = zoned_cluster();
    // Nodes 0 and 3 are "east": kill both under write load through "west".
    let mut writer = cluster.nodes[1].raw();
    let mut acked = Vec::new();
    let mut write = |i: usize, acked: &mut Vec<String>| {
        let key = format!("through-{i}");
        let reply = writer.request(&format!("set {key} 0 0 {}\r\n{key}\r\n", key.len()), "\r\n");
        assert_eq!(reply, "STORED\r\n", "write {i} with a zone down");
        acked.push(key);
    };
    for i in 0..200 {
        write(i, &mut acked);
    }
    cluster.nodes[0].kill();
    cluster.nodes[3].kill();
    let outage = Instant::now();
    let mut i = 200;
    while outage.elapsed() < Duration::from_secs(3) && i < 5000 {
        write(i, &mut acked);
        i += 1;
    }
    // Reads (R = 2) of every key written, through the other zone's node.
    let mut reader = cluster.nodes[2].raw();
    for key in &acked {
        let reply = reader.request(&format!("get {key}\r\n"), "END\r\n");
        assert_eq!(reply, format!("VALUE {key} 0 {}\r\n{key}\r\nEND\r\n", key.len()), "read with a zone down");
    }
    let during = acked.len() - 200;

    cluster.nodes[0].launch();
    cluster.nodes[3].launch();
    cluster.wait_until_all_up(Duration::from_secs(20));
    // Hints go home and anti-entropy runs: every sampled key's three home
    // replicas come to hold the same versions.
    let sample: Vec<&String> = acked.iter().step_by(acked.len() / 40).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for key in &sample {
        loop {
            let copies = replica_copies(&cluster.nodes[1], key);
            if copies.len() == 3 && copies.iter().all(|c| *c == copies[0] && c.contains(key.as_str())) {
                break;
            }
            assert!(Instant::now() < deadline, "{key} did not converge: {copies:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Every acknowledged write reads back through the zone that was down.
    let mut back = cluster.nodes[0].raw();
    for key in &acked {
        let reply = back.request(&format!("get {key}\r\n"), "END\r\n");
        assert_eq!(reply, format!("VALUE {key} 0 {}\r\n{key}\r\nEND\r\n", key.len()), "after the zone came back");
    }
    println!("zone down: {during} writes acknowledged in the outage; {} keys in all converged", acked.len());
}

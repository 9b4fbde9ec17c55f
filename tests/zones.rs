//! Failure domains and uneven nodes on real processes: six nodes in three
//! zones with N = 3 (every key's home replicas span the three zones; a
//! whole zone killed under write load costs no request; when it comes back
//! every acknowledged write is there and the replicas agree), and a node
//! with twice the virtual nodes, restarted with fewer, placed exactly as
//! the pure ring places those addresses; and a ring cut into fewer buckets
//! than it would have nodes, refused.

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
    let _machine = common::beside();
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
    let _machine = common::alone();
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

/// Buckets each node is a home replica of, as `kai admin buckets` says.
fn balance(node: &TestNode) -> BTreeMap<String, u32> {
    let (ok, out, err) = node.admin(&["buckets"]);
    assert!(ok, "{err}");
    out.lines()
        .skip_while(|l| !l.starts_with("balance"))
        .skip(1)
        .filter_map(|l| {
            let mut cells = l.split_whitespace();
            Some((cells.next()?.to_string(), cells.next()?.parse().ok()?))
        })
        .collect()
}

/// Each node's home buckets (N = 1) on the pure ring of the cluster's
/// members with these virtual nodes, as `balance` reports them.
fn ring_shares(cluster: &TestCluster, virtual_nodes: &[u16]) -> BTreeMap<String, u32> {
    use kai_actors::hash::{Ring, RingNode};
    let addrs: Vec<std::net::SocketAddrV4> = cluster.nodes.iter().map(|n| n.api_addr().parse().expect("an address")).collect();
    let buckets = kai_actors::config::Config::default().number_of_buckets;
    let ring = Ring::new(buckets, addrs.iter().zip(virtual_nodes).map(|(a, v)| RingNode::new(*a, *v)));
    addrs.iter().map(|a| (a.to_string(), ring.buckets_of(a, 1).len() as u32)).collect()
}

#[test]
fn twice_the_virtual_nodes_hold_about_twice_the_buckets_and_a_restart_changes_the_share() {
    let _machine = common::beside();
    // N = 1, so a node's home buckets are its first-replica buckets.
    let settings = |vnodes: &'static str| {
        let mut s: Vec<&str> = CLUSTER.to_vec();
        s.extend(["n=1", "r=1", "w=1", vnodes]);
        s
    };
    let nodes = vec![
        TestNode::start(&settings("number_of_virtual_nodes=256")),
        TestNode::start(&settings("number_of_virtual_nodes=128")),
        TestNode::start(&settings("number_of_virtual_nodes=128")),
    ];
    let mut cluster = TestCluster::link(nodes);
    let big = cluster.nodes[0].api_addr();
    // The share follows from the members' addresses (their ports are
    // drawn at random), so the cluster must hold exactly the pure ring's
    // placement for these addresses; that twice the virtual nodes hold
    // about twice the buckets is the ring's own test.
    let counts = balance(&cluster.nodes[1]);
    assert_eq!(counts, ring_shares(&cluster, &[256, 128, 128]), "the ring of 256, 128 and 128 virtual nodes");
    let small: Vec<u32> = counts.iter().filter(|(n, _)| **n != big).map(|(_, c)| *c).collect();
    println!("256 vnodes: {} buckets; 128 vnodes: {small:?}", counts[&big]);
    assert!(counts[&big] > small.iter().copied().max().unwrap_or(0), "the 256-vnode node holds the most: {counts:?}");

    // Restarted with 128, it is placed at 128 by the others.
    cluster.nodes[0].kill();
    cluster.nodes[0].set("number_of_virtual_nodes=128".into());
    cluster.nodes[0].launch();
    cluster.wait_until_all_up(Duration::from_secs(20));
    let expected = ring_shares(&cluster, &[128, 128, 128]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counts = balance(&cluster.nodes[1]);
        if counts == expected {
            println!("after the restart at 128 vnodes: {counts:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the new share was not taken: {counts:?}, expected {expected:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, list, _) = cluster.nodes[2].admin(&["node_list"]);
    let row = list.lines().find(|l| l.starts_with(&big)).expect("its row");
    assert!(row.split_whitespace().any(|c| c == "128") && !row.contains("256"), "{row}");
}

#[test]
fn a_ring_with_fewer_buckets_than_nodes_is_refused() {
    let _machine = common::beside();
    let mut settings: Vec<&str> = CLUSTER.to_vec();
    settings.extend(["n=1", "r=1", "w=1", "number_of_buckets=1"]);
    let (a, b) = (TestNode::start(&settings), TestNode::start(&settings));
    let (ok, out, err) = b.admin(&[&format!("check_node {} {}", b.api_addr(), a.api_addr())]);
    assert!(!ok, "linked two nodes on one bucket: {out}");
    assert!(err.contains("fewer buckets than nodes") && err.contains("number_of_buckets of at least"), "{err}");
    assert_eq!(b.up_members(), vec![b.api_addr()], "nothing changed");
}

//! Clusters of real `kai` processes on loopback, linked with `kai admin
//! check_node`, driven by a memcache client crate and raw bytes.

mod common;

use common::{wait_for, with_link_cut, TestCluster, TestNode};
use std::time::Duration;

fn value(node: &TestNode, key: &str) -> Option<String> {
    node.client().get::<String>(key).unwrap_or_else(|e| panic!("get {key} via {}: {e}", node.api_addr()))
}

#[test]
fn three_nodes_serve_every_key_from_every_node() {
    let cluster = TestCluster::start(3, &[]);
    let writer = cluster.nodes[0].client();
    for i in 0..60 {
        writer.set(&format!("k{i}"), format!("v{i}").as_str(), 0).unwrap();
    }
    for node in &cluster.nodes {
        for i in 0..60 {
            assert_eq!(value(node, &format!("k{i}")).as_deref(), Some(format!("v{i}").as_str()), "via {}", node.api_addr());
        }
        assert_eq!(node.count("kai_curr_nodes"), 3);
        assert_eq!(node.stat("kai_quorum"), "3,2,2");
    }
    // Every key lives on all three: the admin tool shows each replica's copy.
    let (ok, out, _) = cluster.nodes[1].admin(&["get k7"]);
    assert!(ok);
    assert_eq!(out.matches("\"v7\"").count(), 3, "{out}");
    let (ok, out, _) = cluster.nodes[2].admin(&["find_nodes k7", "buckets"]);
    assert!(ok);
    assert_eq!(out.matches(" home up").count(), 3, "{out}");
    assert!(out.contains("holds 1024 buckets"), "{out}");
}

#[test]
fn five_nodes_write_through_one_read_through_every_other() {
    let cluster = TestCluster::start(5, &[]);
    let writer = cluster.nodes[0].client();
    for i in 0..100 {
        writer.set(&format!("key-{i}"), format!("value-{i}").as_str(), 0).unwrap();
    }
    // With N = 3 of 5, most nodes are not home to a key: they forward.
    for node in &cluster.nodes[1..] {
        for i in 0..100 {
            assert_eq!(value(node, &format!("key-{i}")).as_deref(), Some(format!("value-{i}").as_str()));
        }
    }
    let (ok, out, _) = cluster.nodes[3].admin(&["buckets"]);
    assert!(ok);
    // Each node is home to about 3/5 of the buckets.
    for line in out.lines().filter(|l| l.starts_with("  127.0.0.1:")) {
        let held: usize = line.split(' ').next_back().unwrap().parse().unwrap();
        assert!((400..=850).contains(&held), "unbalanced: {line}\n{out}");
    }
}

#[test]
fn one_of_three_down_reads_and_writes_go_on_and_it_catches_up_by_read_repair() {
    // Anti-entropy rounds once in ten minutes: only reads repair here.
    let mut cluster = TestCluster::start(3, &["anti_entropy_interval_ms=600000"]);
    let c0 = cluster.nodes[0].client();
    for i in 0..30 {
        c0.set(&format!("r{i}"), "before", 0).unwrap();
    }
    let dead = cluster.nodes[2].api_addr();
    cluster.nodes[2].kill();
    // At once, before anyone notices: the dead replica just fails its part.
    for i in 0..30 {
        c0.set(&format!("r{i}"), "during", 0).unwrap();
    }
    cluster.nodes[0].wait_for_member(&dead, false, Duration::from_secs(10));
    let c1 = cluster.nodes[1].client();
    for i in 0..30 {
        assert_eq!(c1.get::<String>(&format!("r{i}")).unwrap().as_deref(), Some("during"));
    }
    c1.set("written-while-down", "yes", 0).unwrap();

    cluster.nodes[2].launch();
    cluster.wait_until_all_up(Duration::from_secs(20));
    // A read asks R replicas, the coordinator's own store first: reads
    // through the returned node answer the fresh value and repair its
    // stale copies.
    let c2 = cluster.nodes[2].client();
    for i in 0..30 {
        assert_eq!(c2.get::<String>(&format!("r{i}")).unwrap().as_deref(), Some("during"));
    }
    assert_eq!(c2.get::<String>("written-while-down").unwrap().as_deref(), Some("yes"));
    std::thread::sleep(Duration::from_millis(500));
    let (ok, out, _) = cluster.nodes[0].admin(&["get r3", "get written-while-down"]);
    assert!(ok);
    let returned = out.split(&format!("{dead}:")).nth(1).expect("the returned node's section");
    let section: String = returned.lines().skip(1).take_while(|l| l.starts_with("  ")).collect();
    assert!(section.contains("\"during\"") && !section.contains("\"before\""), "not repaired:\n{out}");
    let repairs: u64 = cluster.nodes.iter().map(|n| n.count("kai_read_repairs")).sum();
    assert!(repairs >= 30, "{repairs} read repairs");
}

#[test]
fn partitioned_coordinators_make_siblings_that_cas_resolves() {
    let cluster = TestCluster::start(3, &[]);
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    // Cut the link between a and b; both still reach c.
    with_link_cut(a, b, || {
        assert_eq!(a.raw().request("set contested 1 0 6\r\nfrom-a\r\n", "\r\n"), "STORED\r\n");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(b.raw().request("set contested 2 0 6\r\nfrom-b\r\n", "\r\n"), "STORED\r\n");
    });

    // Both writes were acknowledged, so both are kept: siblings, newest last.
    let mut raw = c.raw();
    let reply = raw.request("gets contested\r\n", "END\r\n");
    let lines: Vec<&str> = reply.split("\r\n").collect();
    assert_eq!(lines.len(), 6, "two VALUE blocks and END: {reply:?}");
    assert!(lines[0].starts_with("VALUE contested 1 6 ") && lines[1] == "from-a", "{reply:?}");
    assert!(lines[2].starts_with("VALUE contested 2 6 ") && lines[3] == "from-b", "{reply:?}");
    let token = lines[0].rsplit(' ').next().unwrap();
    assert_eq!(lines[2].rsplit(' ').next().unwrap(), token, "one token for the whole sibling set");
    // Every coordinator answers the same, newest last (a client that keeps
    // the last block gets last-write-wins).
    let plain = a.raw().request("get contested\r\n", "END\r\n");
    assert_eq!(plain, "VALUE contested 1 6\r\nfrom-a\r\nVALUE contested 2 6\r\nfrom-b\r\nEND\r\n");
    assert!(c.count("kai_siblings_served") >= 2);

    // cas with that token through another coordinator replaces both.
    let mut raw_a = a.raw();
    assert_eq!(raw_a.request(&format!("cas contested 3 0 6 {token}\r\nmerged\r\n"), "\r\n"), "STORED\r\n");
    for node in &cluster.nodes {
        assert_eq!(node.raw().request("get contested\r\n", "END\r\n"), "VALUE contested 3 6\r\nmerged\r\nEND\r\n");
    }
}

/// A write acknowledged by W of N replicas leaves one behind for a moment;
/// a `cas` through that replica, with the token a quorum read gave, is
/// still honoured: the replica catches up before it refuses a condition.
#[test]
fn a_cas_through_a_replica_that_missed_the_write_is_honoured() {
    let cluster = TestCluster::start(3, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert_eq!(a.raw().request("set lagging 0 0 2\r\nv1\r\n", "\r\n"), "STORED\r\n");
    // Cut b off (both ways) while v2 is written and its token read, so
    // neither the write nor read repair reaches it; heal before gossip
    // could mark it down.
    let others = format!("block {} {}", a.api_addr(), cluster.nodes[2].api_addr());
    assert!(b.admin(&[&others]).0);
    assert_eq!(a.raw().request("set lagging 0 0 2\r\nv2\r\n", "\r\n"), "STORED\r\n");
    let reply = a.raw().request("gets lagging\r\n", "END\r\n");
    let token = reply.lines().next().and_then(|l| l.split(' ').nth(4)).unwrap_or_else(|| panic!("{reply:?}")).to_string();
    assert!(b.admin(&["block"]).0);
    let (ok, out, _) = b.admin(&["get lagging"]);
    assert!(ok);
    assert_eq!(out.matches("\"v2\"").count(), 2, "b still holds only v1: {out}");

    assert_eq!(b.raw().request(&format!("cas lagging 0 0 2 {token}\r\nv3\r\n"), "\r\n"), "STORED\r\n");
    assert_eq!(b.raw().request(&format!("cas lagging 0 0 2 {token}\r\nv4\r\n"), "\r\n"), "EXISTS\r\n");
    for node in &cluster.nodes {
        assert_eq!(node.raw().request("get lagging\r\n", "END\r\n"), "VALUE lagging 0 2\r\nv3\r\nEND\r\n");
    }

    // And the other way: a token used up through b is stale through a,
    // even while a's own copy has not heard of the cas yet.
    let reply = a.raw().request("gets lagging\r\n", "END\r\n");
    let token = reply.lines().next().and_then(|l| l.split(' ').nth(4)).unwrap().to_string();
    let c = &cluster.nodes[2];
    assert!(a.admin(&[&format!("block {} {}", b.api_addr(), c.api_addr())]).0);
    assert_eq!(b.raw().request(&format!("cas lagging 0 0 2 {token}\r\nv5\r\n"), "\r\n"), "STORED\r\n");
    assert!(a.admin(&["block"]).0);
    assert_eq!(a.raw().request(&format!("cas lagging 0 0 2 {token}\r\nv6\r\n"), "\r\n"), "EXISTS\r\n");
    assert_eq!(a.raw().request("get lagging\r\n", "END\r\n"), "VALUE lagging 0 2\r\nv5\r\nEND\r\n");
}

#[test]
fn a_write_without_its_quorum_says_why() {
    let mut cluster = TestCluster::start(3, &[]);
    cluster.nodes[1].kill();
    cluster.nodes[2].kill();
    let reply = cluster.nodes[0].raw().request("set lonely 0 0 1\r\nx\r\n", "\r\n");
    assert!(reply.starts_with("SERVER_ERROR write quorum not met: 1 of 2"), "{reply:?}");
    assert!(reply.ends_with("; the write may still be applied\r\n"), "it says what the failure means: {reply:?}");
    let reply = cluster.nodes[0].raw().request("get lonely\r\n", "\r\n");
    assert!(reply.starts_with("SERVER_ERROR read quorum not met"), "{reply:?}");
    assert!(cluster.nodes[0].count("kai_quorum_failures") >= 2);
    // Once both are known down, the local replica still counts.
    let (b, c) = (cluster.nodes[1].api_addr(), cluster.nodes[2].api_addr());
    cluster.nodes[0].wait_for_member(&b, false, Duration::from_secs(15));
    cluster.nodes[0].wait_for_member(&c, false, Duration::from_secs(15));
    let reply = cluster.nodes[0].raw().request("set lonely 0 0 1\r\nx\r\n", "\r\n");
    assert!(
        reply.starts_with("SERVER_ERROR write quorum not met: 1 of 2 replicas answered (only 1 of the key's replicas is up)"),
        "{reply:?}"
    );
}

#[test]
fn a_node_with_another_bucket_count_is_refused() {
    let cluster = TestCluster::start(2, &[]);
    let odd = TestNode::start(&[common::CLUSTER, &["number_of_buckets=512"]].concat());
    let (ok, _, err) = odd.admin(&[&format!("check_node {} {}", odd.api_addr(), cluster.nodes[0].api_addr())]);
    assert!(!ok, "the link was made");
    assert!(err.contains("number_of_buckets 512") && err.contains("differs from 1024"), "{err}");
    let (ok, _, err) = cluster.nodes[0].admin(&[&format!("check_node {} {}", cluster.nodes[0].api_addr(), odd.api_addr())]);
    assert!(!ok && err.contains("number_of_buckets"), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cluster.nodes[0].up_members().len(), 2);
    assert_eq!(odd.up_members(), vec![odd.api_addr()]);
}

#[test]
fn members_must_agree_on_n_and_say_when_r_or_w_differ() {
    let a = TestNode::start(common::CLUSTER);
    let other_n = TestNode::start(&[common::CLUSTER, &["n=1", "r=1", "w=1"]].concat());
    for (asked, told) in [(&a, &other_n), (&other_n, &a)] {
        let (ok, _, err) = asked.admin(&[&format!("check_node {} {}", asked.api_addr(), told.api_addr())]);
        assert!(!ok, "linked across another n");
        assert!(
            err.contains("n 3 of") && err.contains("differs from 1 of")
                || err.contains("n 1 of") && err.contains("differs from 3 of"),
            "{err}"
        );
    }
    assert_eq!(a.up_members(), vec![a.api_addr()]);
    // R and W may differ on purpose: linked, and said.
    let other_rw = TestNode::start(&[common::CLUSTER, &["r=1", "w=3"]].concat());
    let cluster = TestCluster::link(vec![a, other_rw]);
    let (ok, out, err) = cluster.nodes[0].admin(&["node_list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("note: members' settings differ") && out.contains("n,r,w 3,1,3") && out.contains("n,r,w 3,2,2"),
        "{out}"
    );
    let logged = |node: &TestNode| node.log().contains("r,w 1,3 against 2,2") || node.log().contains("r,w 2,2 against 1,3");
    wait_for("the difference logged", Duration::from_secs(5), || logged(&cluster.nodes[0]) && logged(&cluster.nodes[1]));
    let status = common::http_get(cluster.nodes[0].http_port, "/status.json");
    assert!(status.contains("\"differing\":[[") && status.contains(&cluster.nodes[1].api_addr()), "{status}");
}

/// The nodes of a key's preference list, in order, from `find_nodes`.
#[test]
fn a_stand_in_keeps_hints_across_its_own_crash_and_hands_them_off() {
    let mut cluster = TestCluster::start(4, &[]);
    let key = "hinted-key";
    let order = common::preference(&cluster.nodes[0], key);
    let (home_down, stand_in) = (order[2].clone(), order[3].clone());
    let coordinator = order[0].clone();

    common::by_addr(&mut cluster, &home_down).kill();
    common::by_addr(&mut cluster, &coordinator).wait_for_member(&home_down, false, Duration::from_secs(10));
    let reply = common::by_addr(&mut cluster, &coordinator).raw().request(&format!("set {key} 0 0 6\r\nhinted\r\n"), "\r\n");
    assert_eq!(reply, "STORED\r\n");

    // The stand-in holds the write with a hint; it survives kill -9.
    let s = common::by_addr(&mut cluster, &stand_in);
    wait_for_stat(s, "kai_hints_pending", "1");
    s.kill();
    s.launch();
    wait_for_stat(common::by_addr(&mut cluster, &stand_in), "kai_hints_pending", "1");

    // The home node returns: the hint is delivered, then dropped.
    common::by_addr(&mut cluster, &home_down).launch();
    cluster.wait_until_all_up(Duration::from_secs(20));
    wait_for_stat(common::by_addr(&mut cluster, &stand_in), "kai_hints_pending", "0");
    let (ok, out, _) = cluster.nodes[0].admin(&[&format!("get {key}")]);
    assert!(ok);
    let section = out.split(&format!("{home_down}:")).nth(1).unwrap().lines().nth(1).unwrap_or_default().to_string();
    assert!(section.contains("\"hinted\""), "the home node lacks the handed-off write:\n{out}");
}

fn wait_for_stat(node: &TestNode, name: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, out, _) = node.admin(&["stats"]);
        let got = out.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap_or("").to_string();
        if got == want {
            return;
        }
        if std::time::Instant::now() >= deadline {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            panic!("{name} on {} is {got:?}, not {want:?}; its log ends:\n{}", node.api_addr(), tail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

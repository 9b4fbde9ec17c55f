//! Rolling upgrades: a cluster under write load has its nodes replaced one
//! at a time by a build speaking the next peer protocol version, and the
//! admin protocol stays apart from the peer protocol.

mod common;

use common::{wait_for, TestCluster, TestNode, CLUSTER};
use kai_actors::api::admin::AdminCommand;
use kai_actors::api::auth::Secret;
use kai_actors::api::{net::Tcp, ApiClient, Owner, PeerTerms, PEER_PROTOCOL_VERSION};
use kai_actors::Error;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NEXT: u32 = PEER_PROTOCOL_VERSION + 1;

/// Shakes hands with `node` (of replication factor `n`) as a peer offering
/// `version`: the version agreed, or the refusal.
fn handshake_n(node: &TestNode, n: u32, version: u32) -> Result<Option<u32>, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let terms = PeerTerms { protocol_version: version, ..PeerTerms::of_build(1024, n) };
        let addr = node.api_addr().parse().unwrap();
        let client = ApiClient::connect(&Tcp, addr, "127.0.0.1:1", Some(terms), &Secret::new(""), Duration::from_secs(5)).await?;
        Ok(client.protocol_version())
    })
}

/// A handshake with a single node (n = 1).
fn handshake(node: &TestNode, version: u32) -> Result<Option<u32>, Error> {
    handshake_n(node, 1, version)
}

/// The write load: through every node but the one being replaced, each
/// write under the lock, so the node is never stopped under a write.
struct Load {
    /// The node being replaced (none: `usize::MAX`).
    replacing: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
    writes: Arc<AtomicU64>,
}

impl Load {
    fn start(ports: Vec<u16>) -> (Load, std::thread::JoinHandle<()>) {
        let load = Load {
            replacing: Arc::new(Mutex::new(usize::MAX)),
            stop: Arc::default(),
            acknowledged: Arc::default(),
            errors: Arc::default(),
            writes: Arc::default(),
        };
        let (replacing, stop, acknowledged, errors, writes) =
            (load.replacing.clone(), load.stop.clone(), load.acknowledged.clone(), load.errors.clone(), load.writes.clone());
        let writer = std::thread::spawn(move || {
            for i in 0..100_000u64 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let replacing = replacing.lock().unwrap();
                let through = (0..ports.len()).map(|k| (i as usize + k) % ports.len()).find(|k| *k != *replacing).unwrap();
                let url = format!("memcache://127.0.0.1:{}?protocol=ascii&timeout=5", ports[through]);
                let key = format!("rolling-{i}");
                match memcache::Client::connect(url.as_str()).and_then(|c| c.set(&key, key.as_str(), 0)) {
                    Ok(()) => acknowledged.lock().unwrap().push(key),
                    Err(e) => errors.lock().unwrap().push(format!("{key} through node {through}: {e}")),
                }
                writes.fetch_add(1, Ordering::Relaxed);
                drop(replacing);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        (load, writer)
    }

    /// Waits for `more` writes past the count now.
    fn wait_for_writes(&self, more: u64) {
        let until = self.writes.load(Ordering::Relaxed) + more;
        wait_for("writes under load", Duration::from_secs(30), || self.writes.load(Ordering::Relaxed) >= until);
    }
}

/// Waits until every node's Merkle root is the same: every write made so
/// far is on every replica.
fn wait_until_in_sync(cluster: &TestCluster) {
    wait_for("replicas in sync", Duration::from_secs(60), || {
        let roots: Vec<String> = cluster.nodes.iter().map(|n| n.admin(&["merkle_root"]).1).collect();
        roots.iter().all(|r| !r.is_empty() && *r == roots[0])
    });
}

#[test]
fn a_cluster_upgrades_one_node_at_a_time_under_load_without_an_error_or_a_lost_write() {
    let mut settings = CLUSTER.to_vec();
    settings.push("anti_entropy_interval_ms=200");
    let mut cluster = TestCluster::start(3, &settings);
    let (load, writer) = Load::start(cluster.nodes.iter().map(|n| n.memcache_port).collect());
    load.wait_for_writes(50);
    for i in 0..cluster.nodes.len() {
        *load.replacing.lock().unwrap() = i;
        let node = &mut cluster.nodes[i];
        assert!(node.terminate().success());
        node.set(format!("test_peer_protocol_version={NEXT}"));
        node.launch();
        let (ok, info, err) = node.admin(&["node_info"]);
        assert!(ok && info.contains(&format!("protocol_version {NEXT}")), "{info}{err}");
        cluster.wait_until_all_up(Duration::from_secs(30));
        *load.replacing.lock().unwrap() = usize::MAX;
        load.wait_for_writes(50);
        // As an operator would: the next node goes once this one caught up.
        let paused = load.replacing.lock().unwrap();
        wait_until_in_sync(&cluster);
        drop(paused);
    }
    load.wait_for_writes(50);
    load.stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    let errors = load.errors.lock().unwrap();
    assert!(errors.is_empty(), "healthy nodes answered errors: {errors:?}");
    let acknowledged = load.acknowledged.lock().unwrap();
    assert!(acknowledged.len() >= 200, "only {} writes", acknowledged.len());
    for node in &cluster.nodes {
        let client = node.client();
        for key in acknowledged.iter() {
            let value: Option<String> = client.get(key).unwrap();
            assert_eq!(value.as_deref(), Some(key.as_str()), "{key} through {}", node.api_addr());
        }
    }
    // Every node now offers the next version, and two of them speak it.
    assert_eq!(handshake_n(&cluster.nodes[0], 3, NEXT).unwrap(), Some(NEXT));
    assert_eq!(handshake_n(&cluster.nodes[0], 3, PEER_PROTOCOL_VERSION).unwrap(), Some(PEER_PROTOCOL_VERSION));
}

#[test]
fn peers_one_version_apart_agree_on_the_older_and_two_apart_are_refused() {
    let old = TestNode::start(&[]);
    let new = TestNode::start(&[&format!("test_peer_protocol_version={NEXT}")]);
    let ours = PEER_PROTOCOL_VERSION;
    assert_eq!(handshake(&old, ours).unwrap(), Some(ours));
    assert_eq!(handshake(&old, NEXT).unwrap(), Some(ours), "a newer peer speaks the older version");
    assert_eq!(handshake(&new, ours).unwrap(), Some(ours), "the newer node serves an older peer");
    assert_eq!(handshake(&new, NEXT).unwrap(), Some(NEXT));
    for (node, far) in [(&old, ours + 2), (&old, ours - 1 - 1), (&new, ours - 1)] {
        match handshake(node, far) {
            Err(Error::Refused(why)) => assert!(why.contains("more than one away"), "{why}"),
            other => panic!("version {far} was answered {other:?}"),
        }
    }
    let said = TestNode::prepare(&[]).refused_start(&[&format!("test_peer_protocol_version={}", ours + 2)]);
    assert!(said.contains("`test_peer_protocol_version`"), "{said}");
}

/// A command from a newer admin tool, which this build's nodes lack.
#[derive(Serialize, Deserialize)]
struct ResizeRing {
    buckets: u32,
}

impl AdminCommand for ResizeRing {
    const NAME: &'static str = "resize_ring";
    const MODULE: Owner = Owner::Hash;
    type Reply = ();
}

#[test]
fn an_admin_command_a_node_lacks_is_answered_that_it_does_not_know_it() {
    let node = TestNode::start(&[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let answer = runtime.block_on(async {
        let addr = node.api_addr().parse().unwrap();
        let client = ApiClient::connect(&Tcp, addr, "kai-admin", None, &Secret::new(""), Duration::from_secs(5)).await?;
        // An admin connection carries admin commands only.
        let peer_request = client.call(kai_actors::api::Request::Segments { bucket: 0 }, Duration::from_secs(5)).await;
        assert!(matches!(peer_request, Err(Error::Refused(_))), "{peer_request:?}");
        client.admin(&ResizeRing { buckets: 4096 }, Duration::from_secs(5)).await
    });
    match answer {
        Err(Error::Unsupported(why)) => assert_eq!(why, "this node does not know `resize_ring`"),
        other => panic!("answered {other:?}"),
    }
    assert!(node.client().set("still", "serving", 0).is_ok());
}

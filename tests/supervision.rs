//! A node never stays up half-dead: under a write load on a disk node, each
//! module is made to panic (`kai admin -e 'panic MODULE'`). Within two
//! seconds every request succeeds again, or the process has exited
//! non-zero; after a restart on the same data every acknowledged write is
//! there. Zero acknowledged writes lost either way.

mod common;

use common::TestNode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the writer saw: each write's start time, key, and whether it was
/// acknowledged.
type Outcomes = Arc<Mutex<Vec<(Instant, String, bool)>>>;

/// A client, or None at once when the node is not listening (the crate's
/// pool would otherwise wait 30 s for a connection).
fn client(port: u16) -> Option<memcache::Client> {
    memcache::Client::builder()
        .add_server(format!("memcache://127.0.0.1:{port}?protocol=ascii").as_str())
        .ok()?
        .with_connection_timeout(Duration::from_millis(300))
        .with_read_timeout(Duration::from_secs(1))
        .with_write_timeout(Duration::from_secs(1))
        .build()
        .ok()
}

/// Writes keys one after another until told to stop (a new connection
/// after any error), recording every outcome.
fn writer(port: u16, stop: Arc<AtomicBool>, outcomes: Outcomes) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut c = client(port);
        for i in 0..100_000u64 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let key = format!("w{i}");
            let started = Instant::now();
            let ok = c.as_ref().is_some_and(|c| c.set(&key, key.as_str(), 0).is_ok());
            outcomes.lock().unwrap().push((started, key, ok));
            if !ok {
                std::thread::sleep(Duration::from_millis(20));
                c = client(port);
            }
        }
    })
}

fn panics_and_recovers(module: &str) {
    let mut node = TestNode::start(&["allow_fault_injection=true"]);
    let port = node.memcache_port;
    let (stop, outcomes): (Arc<AtomicBool>, Outcomes) = Default::default();
    let load = writer(port, stop.clone(), outcomes.clone());
    std::thread::sleep(Duration::from_millis(300));

    let (ok, out, err) = node.admin(&[&format!("panic {module}")]);
    assert!(ok, "panic {module}: {out} {err}");
    let panicked = Instant::now();
    // Within two seconds: serving again, or exited non-zero.
    let mut exited = None;
    loop {
        if let Some(status) = node.exit_status() {
            exited = Some(status);
            break;
        }
        let served = client(port).is_some_and(|c| c.set("probe", "p", 0).is_ok() && c.get::<String>("probe").is_ok());
        if served && panicked.elapsed() > Duration::from_millis(200) {
            break;
        }
        if let Some(status) = node.exit_status() {
            exited = Some(status);
            break;
        }
        assert!(
            panicked.elapsed() < Duration::from_secs(2),
            "{module}: neither serving nor exited 2 s after the panic\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if exited.is_none() {
        // Serving: keep the load on past the two seconds, then every
        // request from then on must succeed.
        std::thread::sleep((panicked + Duration::from_millis(3000)).saturating_duration_since(Instant::now()));
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let outcomes = outcomes.lock().unwrap().clone();
    match exited {
        Some(status) => {
            assert!(!status.success(), "{module}: exited with {status}");
            node.launch();
        }
        None => {
            let late_failures: Vec<&String> =
                outcomes.iter().filter(|(t, _, ok)| *t > panicked + Duration::from_secs(2) && !ok).map(|(_, k, _)| k).collect();
            assert!(late_failures.is_empty(), "{module}: writes failed 2 s after the panic: {late_failures:?}");
            assert!(outcomes.iter().any(|(t, _, ok)| *t > panicked + Duration::from_secs(2) && *ok), "{module}: no load after");
            assert!(node.is_running());
        }
    }
    let log = node.log();
    assert!(
        log.contains("panic: fault injection") && log.contains(".rs:"),
        "{module}: the panic is not logged with where it happened"
    );
    let acked: Vec<&String> = outcomes.iter().filter(|(_, _, ok)| *ok).map(|(_, k, _)| k).collect();
    assert!(acked.len() > 10, "{module}: only {} writes", acked.len());
    let c = client(port).expect("connect after recovery");
    let lost: Vec<&&String> = acked.iter().filter(|k| c.get::<String>(k).ok().flatten().as_deref() != Some(k.as_str())).collect();
    assert!(
        lost.is_empty(),
        "{module}: {} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    println!(
        "panic {module}: {}; {} writes acknowledged, 0 lost",
        match exited {
            Some(status) => format!("the node exited ({status}) and came back on its data"),
            None => "the node served again without restarting".to_string(),
        },
        acked.len()
    );
}

macro_rules! panic_tests {
    ($($name:ident: $module:literal,)*) => {
        $(
            #[test]
            fn $name() {
                panics_and_recovers($module);
            }
        )*
    };
}

panic_tests! {
    a_panicking_store_never_leaves_the_node_half_dead: "store",
    a_panicking_hash_never_leaves_the_node_half_dead: "hash",
    a_panicking_membership_never_leaves_the_node_half_dead: "membership",
    a_panicking_version_never_leaves_the_node_half_dead: "version",
    a_panicking_coordinator_never_leaves_the_node_half_dead: "coordinator",
    a_panicking_sync_never_leaves_the_node_half_dead: "sync",
    a_panicking_api_never_leaves_the_node_half_dead: "api",
    a_panicking_memcache_never_leaves_the_node_half_dead: "memcache",
    a_panicking_quorum_actor_never_leaves_the_node_half_dead: "quorum",
}

#[test]
fn too_many_panics_end_the_process_for_its_service_manager() {
    let mut node = TestNode::start(&["allow_fault_injection=true", "restart_intensity=2", "restart_period_secs=30"]);
    for _ in 0..3 {
        let _ = node.admin(&["panic hash"]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = node.exit_status() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after three panics with an intensity of two");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(70), "{status}");
    assert!(node.log().contains("more than 2 panics"), "{}", node.log());
}

#[test]
fn panic_is_refused_without_fault_injection() {
    let node = TestNode::start(&[]);
    let (ok, _, err) = node.admin(&["panic coordinator"]);
    assert!(!ok && err.contains("fault injection is disabled"), "{err}");
    let (ok, _, err) = common::TestNode::start(&["allow_fault_injection=true"]).admin(&["panic nonsense"]);
    assert!(!ok && err.contains("no module"), "{err}");
    assert!(node.client().set("still", "here", 0).is_ok());
}

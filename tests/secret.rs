//! The cluster secret: nobody joins or commands a cluster without it, a
//! recorded handshake cannot be replayed, and without a secret the
//! internal API serves this machine only.

mod common;

use bytes::{Bytes, BytesMut};
use common::{admin_with_secret, wait_for, TestNode, CLUSTER};
use kai_actors::api::admin::AdminCommand;
use kai_actors::api::auth::{self, Role, Secret};
use kai_actors::api::{decode, encode, Frame, PeerTerms, Request, Response};
use kai_actors::Error;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn with_secret(secret: &str) -> Vec<String> {
    let mut settings: Vec<String> = CLUSTER.iter().map(|s| s.to_string()).collect();
    settings.push(format!("cluster_secret=\"{secret}\""));
    settings
}

/// A single node (n = 1) with a secret.
fn alone_with_secret(secret: &str) -> TestNode {
    start(&[format!("cluster_secret=\"{secret}\"")])
}

fn start(settings: &[String]) -> TestNode {
    TestNode::start(&settings.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_node_with_a_wrong_secret_never_joins() {
    let (a, b) = (start(&with_secret("alpha")), start(&with_secret("alpha")));
    let intruder = start(&with_secret("beta"));
    let (ok, out, err) = b.admin(&[&format!("check_node {} {}", b.api_addr(), a.api_addr())]);
    assert!(ok, "the same secret links: {out} {err}");
    wait_for("a and b linked", Duration::from_secs(10), || a.up_members().len() == 2);

    let (ok, out, err) = intruder.admin(&[&format!("check_node {} {}", intruder.api_addr(), a.api_addr())]);
    assert!(!ok && err.contains("cluster secret"), "{out} {err}");
    let (ok, out, err) = a.admin(&[&format!("check_node {} {}", a.api_addr(), intruder.api_addr())]);
    assert!(!ok && err.contains("cluster secret"), "{out} {err}");
    // Nothing is gossiped to or from it: after some rounds, no member lists it.
    std::thread::sleep(Duration::from_secs(2));
    for node in [&a, &b] {
        let members: Vec<String> = node.member_states().into_iter().map(|(m, _)| m).collect();
        assert_eq!(members.len(), 2, "{members:?}");
        assert!(!members.contains(&intruder.api_addr()));
    }
    assert_eq!(intruder.member_states().len(), 1);
    assert!(a.log().contains("wrong or missing cluster secret"), "the refusal is logged");
}

/// A node joining through a seed that refuses it says why it waits: in
/// its own log at WARN, beside `joining` in `node_list`, and in
/// `/status.json`.
#[test]
fn a_joining_node_with_the_wrong_secret_says_why_it_waits() {
    let seed = start(&with_secret("alpha"));
    let mut settings = with_secret("beta");
    settings.push(format!("seeds=[\"{}\"]", seed.api_addr()));
    let joining = start(&settings);
    let reason = "do not share the cluster secret";
    wait_for("the refusal logged", Duration::from_secs(10), || {
        joining.log().lines().any(|l| l.contains("WARN") && l.contains("could not link with") && l.contains(reason))
    });
    let (ok, out, err) = joining.admin(&["node_list"]);
    assert!(ok, "{err}");
    assert_eq!(joining.member_states(), vec![(joining.api_addr(), "joining".to_string())]);
    assert!(
        out.contains("hears from no member; the last contact failed") && out.contains("refused") && out.contains(reason),
        "{out}"
    );
    let status = common::http_get(joining.http_port, "/status.json");
    assert!(status.contains("\"waiting\":") && status.contains(reason), "{status}");
    // The seed logs the refusal with the address it came from.
    let logged = seed.log();
    assert!(logged.contains("refused a connection from 127.0.0.1:") && logged.contains("calling itself"), "{logged}");
}

#[test]
fn the_admin_tool_without_the_secret_is_refused() {
    let node = alone_with_secret("alpha");
    for secret in [None, Some("beta")] {
        let (ok, out, err) = admin_with_secret(&node.api_addr(), secret, &["node_list"]);
        assert!(!ok, "{secret:?} was let in: {out}");
        assert!(out.is_empty(), "node_list printed something: {out}");
        assert!(err.contains("cluster secret") && err.lines().count() == 1, "one clear line: {err}");
    }
    let (ok, out, _) = admin_with_secret(&node.api_addr(), Some("alpha"), &["node_list"]);
    assert!(ok && out.contains(&node.api_addr()), "{out}");
    // --config FILE works as the environment does.
    let file = node.dir.path().join("admin.toml");
    std::fs::write(&file, "cluster_secret = \"alpha\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kai"))
        .args(["admin", "--node", &node.api_addr(), "--config"])
        .arg(&file)
        .args(["-e", "node_info"])
        .env_remove("KAI_CLUSTER_SECRET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn send(stream: &mut TcpStream, body: Request) -> Vec<u8> {
    let bytes = encode(&Frame { id: 0, body }).unwrap();
    stream.write_all(&bytes).unwrap();
    bytes
}

/// The next response frame, or None once the node closed the connection.
fn receive(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Response> {
    loop {
        if let Some(frame) = decode::<Response>(buf).unwrap() {
            return Some(frame.body);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn connect(node: &TestNode) -> (TcpStream, BytesMut) {
    let stream = TcpStream::connect(node.api_addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (stream, BytesMut::new())
}

#[test]
fn a_recorded_handshake_cannot_be_replayed() {
    let node = alone_with_secret("alpha");
    let secret = Secret::new("alpha");
    let hello = || Request::Hello {
        from: "127.0.0.1:1".into(),
        nonce: Bytes::from(auth::nonce()),
        peer: Some(PeerTerms::of_build(1024, 1)),
    };
    // A real handshake, recorded.
    let (mut stream, mut buf) = connect(&node);
    let recorded_hello = send(&mut stream, hello());
    let Some(Response::Challenge { nonce, proof }) = receive(&mut stream, &mut buf) else { panic!("no challenge") };
    let Request::Hello { nonce: ours, .. } = decode::<Request>(&mut BytesMut::from(&recorded_hello[..])).unwrap().unwrap().body
    else {
        unreachable!()
    };
    assert!(secret.verify(Role::Answerer, &nonce, &ours, &proof), "the node proves the secret too");
    let recorded_proof =
        send(&mut stream, Request::Proof { proof: Bytes::from(secret.prove(Role::Caller, &ours, &nonce)), sent_us: 0 });
    assert!(matches!(receive(&mut stream, &mut buf), Some(Response::Hello { .. })));
    drop(stream);

    // Played back on a new connection: the node's nonce is new, so the old
    // proof fails, and the connection closes after one refusal.
    let (mut stream, mut buf) = connect(&node);
    stream.write_all(&recorded_hello).unwrap();
    let Some(Response::Challenge { nonce: fresh, .. }) = receive(&mut stream, &mut buf) else { panic!("no challenge") };
    assert_ne!(fresh, nonce);
    stream.write_all(&recorded_proof).unwrap();
    match receive(&mut stream, &mut buf) {
        Some(Response::Failed(Error::Refused(why))) => assert!(why.contains("cluster secret"), "{why}"),
        other => panic!("a replay was answered {other:?}"),
    }
    assert!(receive(&mut stream, &mut buf).is_none(), "the connection closes");
    // No request runs before the proof: a request instead of a proof is refused.
    let (mut stream, mut buf) = connect(&node);
    send(&mut stream, hello());
    assert!(matches!(receive(&mut stream, &mut buf), Some(Response::Challenge { .. })));
    let remove = kai_actors::membership::serve::Remove { node: node.api_addr() };
    send(&mut stream, remove.call().unwrap());
    assert!(matches!(receive(&mut stream, &mut buf), Some(Response::Failed(Error::Refused(_)))));
    assert!(receive(&mut stream, &mut buf).is_none());
    assert_eq!(node.member_states().len(), 1);
    assert!(node.client().set("still", "serving", 0).is_ok());
}

#[test]
fn without_a_secret_only_loopback_is_served() {
    let mut node = TestNode::prepare(&[]);
    let said = node.refused_start(&["hostname=\"10.1.2.3\""]);
    assert!(said.contains("`cluster_secret`") && said.contains("loopback"), "{said}");
    node.launch();
    // Logged just after the ports open: the test may look first.
    wait_for("it says so at start", Duration::from_secs(5), || node.log().contains("no cluster_secret"));
}

#[test]
fn the_memcache_port_takes_no_cluster_operation() {
    let node = alone_with_secret("alpha");
    let mut raw = node.raw();
    for command in ["remove_node 127.0.0.1:1", "check_node a b", "block 127.0.0.1:1", "panic store", "restart_actor store"] {
        assert_eq!(raw.request(&format!("{command}\r\n"), "\r\n"), "ERROR\r\n", "{command}");
    }
    // An internal API hello on the memcache port is just bad input.
    let mut other = node.raw();
    let hello = encode(&Frame { id: 0, body: Request::Hello { from: "x".into(), nonce: Bytes::new(), peer: None } }).unwrap();
    other.send(&hello);
    assert!(node.client().set("k", "v", 0).is_ok());
    assert_eq!(node.member_states().len(), 1);
}

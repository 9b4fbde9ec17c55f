//! The memcached clients applications deploy, each driving a real node (and
//! a real three-node cluster) through the same steps: set/get, multi-get,
//! add/replace/append/prepend, incr/decr, touch, delete, and gets/cas with a
//! fresh token (accepted) and a stale one (refused). The steps live in one
//! script per language under `tests/clients/`; `tests/clients/install.sh`
//! (run by `.ci/run`) installs the clients from Debian's packages, npm and
//! PyPI.

mod common;

use common::{TestCluster, TestNode};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One client: a name and the command that runs the steps with it.
struct Client {
    name: &'static str,
    program: &'static str,
    script: &'static str,
    mode: Option<&'static str>,
}

/// Each client, and the protocol it speaks.
const CLIENTS: &[Client] = &[
    // libmemcached, as Python applications use it (text and binary).
    Client { name: "pylibmc", program: "/usr/bin/python3", script: "python_clients.py", mode: Some("pylibmc") },
    Client { name: "pylibmc (binary)", program: "/usr/bin/python3", script: "python_clients.py", mode: Some("pylibmc-binary") },
    Client { name: "pymemcache", program: "/usr/bin/python3", script: "python_clients.py", mode: Some("pymemcache") },
    // PHP's memcached extension, also on libmemcached (text and binary).
    Client { name: "php-memcached", program: "php", script: "php_client.php", mode: Some("text") },
    Client { name: "php-memcached (binary)", program: "php", script: "php_client.php", mode: Some("binary") },
    Client { name: "Cache::Memcached::Fast", program: "perl", script: "perl_client.pl", mode: None },
    // Node.js: memcached (text) and memjs (binary).
    Client { name: "node memcached", program: "node", script: "node/clients.js", mode: Some("memcached") },
    Client { name: "node memjs (binary)", program: "node", script: "node/clients.js", mode: Some("memjs") },
    // The meta protocol: meta-memcache (PyPI), in the venv install.sh makes.
    Client {
        name: "meta-memcache (meta)",
        program: concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/.venv/bin/python"),
        script: "meta_client.py",
        mode: None,
    },
];

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs every client with writes through `writer` and reads through
/// `reader`; panics listing every client that failed, with its output.
fn run_every_client(writer: u16, reader: u16, label: &str) {
    let mut failures = Vec::new();
    for (i, client) in CLIENTS.iter().enumerate() {
        let mut cmd = Command::new("timeout");
        cmd.arg("60").arg(client.program).arg(scripts().join(client.script));
        cmd.args(client.mode);
        cmd.arg(format!("127.0.0.1:{writer}")).arg(format!("127.0.0.1:{reader}")).arg(format!("{label}-{i}:"));
        match cmd.output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => failures.push(format!(
                "{} ({}): {}{}",
                client.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => failures.push(format!("{}: cannot run {} ({e})", client.name, client.program)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} clients failed {label} (bash tests/clients/install.sh installs them):\n{}",
        failures.len(),
        CLIENTS.len(),
        failures.join("\n")
    );
}

#[test]
fn every_client_on_one_node() {
    let node = TestNode::start(&[]);
    run_every_client(node.memcache_port, node.memcache_port, "one-node");
}

#[test]
fn every_client_on_a_three_node_cluster() {
    // Writes through one node, reads and the other half of each check
    // (cas with a token from the other node among them) through another.
    let cluster = TestCluster::start(3, &[]);
    let port = |i: usize| cluster.nodes[i].memcache_port;
    run_every_client(port(0), port(1), "cluster");
    run_every_client(port(2), port(0), "cluster-again");
}

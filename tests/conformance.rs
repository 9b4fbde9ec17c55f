//! libmemcached's conformance tester (`memccapable`, from Debian's
//! libmemcached-tools, which `.ci/run` installs) against a real node: every
//! test must pass, text and binary protocol, as they do against memcached.

mod common;

use common::TestNode;
use std::process::Command;

#[test]
fn libmemcached_conformance_tests_pass() {
    let found = Command::new("memccapable").arg("-h").output().is_ok();
    if !found {
        // CI installs the tool; on a developer machine without it, say so.
        assert!(std::env::var_os("CI").is_none(), "memccapable is missing on CI: .ci/run installs libmemcached-tools");
        eprintln!("memccapable not installed (apt-get install libmemcached-tools): conformance not checked");
        return;
    }
    // memccapable flushes the server, so the node must allow it.
    let node = TestNode::start(&["allow_flush_all=true"]);
    let out = Command::new("timeout")
        .args(["120", "memccapable", "-h", "127.0.0.1", "-p", &node.memcache_port.to_string(), "-t", "10"])
        .output()
        .expect("run memccapable");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.contains("All tests passed"), "{report}");
    // 27 ascii and 27 binary-protocol tests.
    assert!(report.matches("[pass]").count() >= 54, "{report}");
}

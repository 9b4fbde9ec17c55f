//! A single real `kai` node, driven by a well-kept memcache client crate
//! and by raw bytes where the exact reply matters.

mod common;

use common::{Raw, TestNode};
use std::time::Duration;

#[test]
fn a_memcache_client_crate_works_unchanged() {
    let node = TestNode::start(&[]);
    let c = node.client();

    c.set("greeting", "hello", 0).unwrap();
    assert_eq!(c.get::<String>("greeting").unwrap().as_deref(), Some("hello"));
    assert_eq!(c.get::<String>("absent").unwrap(), None);

    c.add("fresh", "1", 0).unwrap();
    // (This crate's ascii add reports NOT_STORED as success; the value shows it.)
    c.add("fresh", "2", 0).unwrap();
    assert_eq!(c.get::<String>("fresh").unwrap().as_deref(), Some("1"));
    c.replace("fresh", "3", 0).unwrap();
    c.replace("nothing-here", "x", 0).unwrap();
    assert_eq!(c.get::<String>("nothing-here").unwrap(), None);
    assert_eq!(c.get::<String>("fresh").unwrap().as_deref(), Some("3"));

    c.append("greeting", ", world").unwrap();
    c.prepend("greeting", "oh ").unwrap();
    assert_eq!(c.get::<String>("greeting").unwrap().as_deref(), Some("oh hello, world"));

    c.set("counter", 41u64, 0).unwrap();
    assert_eq!(c.increment("counter", 1).unwrap(), 42);
    assert_eq!(c.decrement("counter", 50).unwrap(), 0);

    assert!(c.touch("greeting", 100).unwrap());
    assert!(!c.touch("absent", 100).unwrap());

    assert!(c.delete("fresh").unwrap());
    assert!(!c.delete("fresh").unwrap());
    assert_eq!(c.get::<String>("fresh").unwrap(), None);

    let many: Vec<String> = (0..20).map(|i| format!("multi-{i}")).collect();
    for k in &many {
        c.set(k, k.as_str(), 0).unwrap();
    }
    let keys: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
    let got: std::collections::HashMap<String, String> = c.gets(&keys).unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(got["multi-7"], "multi-7");

    // cas with the token from gets, then with a stale one.
    let token = cas_token(&mut node.raw(), "greeting");
    assert!(c.cas("greeting", "swapped", 0, token).unwrap());
    assert!(!c.cas("greeting", "again", 0, token).unwrap());
    assert_eq!(c.get::<String>("greeting").unwrap().as_deref(), Some("swapped"));

    let version = c.version().unwrap();
    assert!(version[0].1.contains("kai"), "{version:?}");
    assert!(c.flush().is_err(), "flush_all is refused unless enabled");
}

fn cas_token(raw: &mut Raw, key: &str) -> u64 {
    let reply = raw.request(&format!("gets {key}\r\n"), "END\r\n");
    let header = reply.lines().next().unwrap();
    header.split(' ').nth(4).unwrap_or_else(|| panic!("no cas in {reply:?}")).parse().unwrap()
}

#[test]
fn replies_are_memcacheds_byte_for_byte() {
    let node = TestNode::start(&[]);
    let mut r = node.raw();
    let exchanges: &[(&str, &str)] = &[
        ("set k 5 0 3\r\nabc\r\n", "STORED\r\n"),
        ("get k\r\n", "VALUE k 5 3\r\nabc\r\nEND\r\n"),
        ("get nope\r\n", "END\r\n"),
        ("add k 0 0 1\r\nx\r\n", "NOT_STORED\r\n"),
        ("replace nope 0 0 1\r\nx\r\n", "NOT_STORED\r\n"),
        ("append nope 0 0 1\r\nx\r\n", "NOT_STORED\r\n"),
        ("prepend k 0 0 2\r\n>>\r\n", "STORED\r\n"),
        ("append k 0 0 2\r\n<<\r\n", "STORED\r\n"),
        ("get k\r\n", "VALUE k 5 7\r\n>>abc<<\r\nEND\r\n"),
        ("cas nope 0 0 1 123\r\nx\r\n", "NOT_FOUND\r\n"),
        ("cas k 0 0 1 123\r\nx\r\n", "EXISTS\r\n"),
        ("incr k 1\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
        ("incr nope 1\r\n", "NOT_FOUND\r\n"),
        ("set n 0 0 20\r\n18446744073709551615\r\n", "STORED\r\n"),
        ("incr n 1\r\n", "0\r\n"),
        ("decr n 5\r\n", "0\r\n"),
        ("incr n 10\r\n", "10\r\n"),
        ("decr n 3\r\n", "7\r\n"),
        ("incr n -1\r\n", "CLIENT_ERROR invalid numeric delta argument\r\n"),
        ("touch k 0\r\n", "TOUCHED\r\n"),
        ("touch nope 0\r\n", "NOT_FOUND\r\n"),
        ("delete n\r\n", "DELETED\r\n"),
        ("delete n\r\n", "NOT_FOUND\r\n"),
        ("delete k 5\r\n", "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"),
        ("verbosity 1\r\n", "OK\r\n"),
        ("bogus command\r\n", "ERROR\r\n"),
        ("stats noreply\r\n", "ERROR\r\n"),
        ("stats items\r\n", "END\r\n"),
        ("version extra words\r\n", concat!("VERSION 1.6.21-kai-", env!("CARGO_PKG_VERSION"), "\r\n")),
        ("delete a b c d e\r\n", "ERROR\r\n"),
        ("get\r\n", "ERROR\r\n"),
        ("set k 0 0\r\n", "ERROR\r\n"),
        ("set k abc 0 1\r\n", "CLIENT_ERROR bad command line format\r\n"),
        ("set k 0 0 -1\r\n", "CLIENT_ERROR bad command line format\r\n"),
        ("set k 0 0 99999999999999999999\r\n", "CLIENT_ERROR bad command line format\r\n"),
        (
            "flush_all\r\n",
            "CLIENT_ERROR flush_all is disabled on this node; set allow_flush_all = true in its config to enable it\r\n",
        ),
        // A data block of the wrong length: refused, and the rest of the
        // line read as a command, as memcached does.
        ("set k 0 0 2\r\nabcd\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\n"),
        ("get k\r\n", "VALUE k 5 7\r\n>>abc<<\r\nEND\r\n"),
    ];
    for (request, want) in exchanges {
        let got = r.request(request, want);
        assert_eq!(&got, want, "for {request:?}");
    }
    // A key too long, or with a control character.
    let long = "k".repeat(251);
    assert_eq!(r.request(&format!("get {long}\r\n"), "\r\n"), "CLIENT_ERROR bad command line format\r\n");
    assert_eq!(r.request("get a\x07b\r\n", "\r\n"), "CLIENT_ERROR bad command line format\r\n");
    let max = "k".repeat(250);
    assert_eq!(r.request(&format!("set {max} 0 0 1\r\nx\r\n"), "\r\n"), "STORED\r\n");
    // The version line.
    assert!(r.request("version\r\n", "\r\n").starts_with("VERSION 1.6.21-kai-"));
}

#[test]
fn noreply_pipelining_and_bare_newlines() {
    let node = TestNode::start(&[]);
    let mut r = node.raw();
    // Common clients send noreply by default: nothing comes back for those.
    r.send(b"set a 0 0 1 noreply\r\n1\r\nset b 0 0 1 noreply\r\n2\r\nincr a 5 noreply\r\ndelete b noreply\r\nadd a 0 0 1 noreply\r\nx\r\n");
    // Many commands in one packet: replies in order.
    let mut batch = String::new();
    let mut want = String::new();
    for i in 0..50 {
        batch.push_str(&format!("set p{i} {i} 0 {}\r\n{i}\r\n", i.to_string().len()));
        want.push_str("STORED\r\n");
    }
    for i in 0..50 {
        batch.push_str(&format!("get p{i}\r\n"));
        want.push_str(&format!("VALUE p{i} {i} {}\r\n{i}\r\nEND\r\n", i.to_string().len()));
    }
    batch.push_str("get a b\r\n");
    want.push_str("VALUE a 0 1\r\n6\r\nEND\r\n");
    assert_eq!(r.request(&batch, "VALUE a 0 1\r\n6\r\nEND\r\n"), want);
    // Bare \n line endings are taken, as memcached takes them.
    assert_eq!(r.request("get a\n", "END\r\n"), "VALUE a 0 1\r\n6\r\nEND\r\n");
    // A command split across packets.
    r.send(b"se");
    std::thread::sleep(Duration::from_millis(50));
    r.send(b"t split 0 0 5\r\nhel");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(r.request("lo\r\n", "\r\n"), "STORED\r\n");
    assert_eq!(r.request("get split\r\n", "END\r\n"), "VALUE split 0 5\r\nhello\r\nEND\r\n");
}

#[test]
fn gets_cas_and_gat() {
    let node = TestNode::start(&[]);
    let mut r = node.raw();
    r.request("set k 3 0 2\r\nv1\r\n", "\r\n");
    let token = cas_token(&mut r, "k");
    assert_ne!(token, 0);
    assert_eq!(cas_token(&mut r, "k"), token, "the token is stable while the value is");
    assert_eq!(r.request(&format!("cas k 4 0 2 {token}\r\nv2\r\n"), "\r\n"), "STORED\r\n");
    assert_eq!(r.request(&format!("cas k 4 0 2 {token}\r\nv3\r\n"), "\r\n"), "EXISTS\r\n");
    let fresh = cas_token(&mut r, "k");
    assert_ne!(fresh, token);
    // gat touches and returns; gats adds the token of the touched value.
    assert_eq!(r.request("gat 100 k nope\r\n", "END\r\n"), "VALUE k 4 2\r\nv2\r\nEND\r\n");
    let gats = r.request("gats 100 k\r\n", "END\r\n");
    let token_after_touch = cas_token(&mut r, "k");
    assert_eq!(gats, format!("VALUE k 4 2 {token_after_touch}\r\nv2\r\nEND\r\n"));
    assert_eq!(r.request("gat x k\r\n", "\r\n"), "CLIENT_ERROR invalid exptime argument\r\n");
}

/// Tokens every client can hold (below 2^32: doubles in JavaScript, signed
/// 64-bit integers in libmemcached and PHP, 32 bits in meta-memcache), different for keys written
/// alike, and never handed out again for a key: not after a delete is
/// reaped and the key written anew, not across a restart.
#[test]
fn cas_tokens_are_small_distinct_and_never_come_back() {
    let mut node = TestNode::start(&["tombstone_grace_secs=1", "reap_interval_secs=1"]);
    let mut r = node.raw();
    let mut seen = std::collections::HashSet::new();
    for i in 0..6 {
        assert_eq!(r.request(&format!("set same{i} 0 0 1\r\nv\r\n"), "\r\n"), "STORED\r\n");
        let token = cas_token(&mut r, &format!("same{i}"));
        assert!((1..1u64 << 32).contains(&token), "token {token} out of range");
        assert!(seen.insert(token), "keys written alike share token {token}");
    }
    let mut mine = Vec::new();
    for life in 0..3 {
        assert_eq!(r.request("set k 0 0 1\r\nv\r\n", "\r\n"), "STORED\r\n");
        mine.push(cas_token(&mut r, "k"));
        assert_eq!(r.request("delete k\r\n", "\r\n"), "DELETED\r\n");
        // Wait for the tombstone to be reaped: the key's dots start over.
        let reaped = node.count("kai_reaped_versions");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while node.count("kai_reaped_versions") <= reaped {
            assert!(std::time::Instant::now() < deadline, "tombstone {life} not reaped");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(r.request("set k 0 0 1\r\nv\r\n", "\r\n"), "STORED\r\n");
    let before_restart = cas_token(&mut r, "k");
    mine.push(before_restart);
    node.terminate();
    node.launch();
    let mut r = node.raw();
    assert_eq!(cas_token(&mut r, "k"), before_restart, "an unchanged value keeps its token across a restart");
    assert_eq!(r.request("set k 0 0 1\r\nv\r\n", "\r\n"), "STORED\r\n");
    mine.push(cas_token(&mut r, "k"));
    let distinct: std::collections::HashSet<u64> = mine.iter().copied().collect();
    assert_eq!(distinct.len(), mine.len(), "a token came back: {mine:?}");
    assert_eq!(r.request(&format!("cas k 0 0 2 {before_restart}\r\nv2\r\n"), "\r\n"), "EXISTS\r\n");
}

#[test]
fn exptime_is_a_ttl_the_memcached_way() {
    let node = TestNode::start(&[]);
    let mut r = node.raw();
    // TTLs of 2 s: expiry counts whole seconds (in memcached too), so a 1 s
    // TTL set just before a second turns may be over by the next command.
    assert_eq!(r.request("set short 0 2 1\r\nx\r\n", "\r\n"), "STORED\r\n");
    assert_eq!(r.request("set gone 0 -1 1\r\nx\r\n", "\r\n"), "STORED\r\n");
    let far = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    assert_eq!(r.request(&format!("set absolute 0 {far} 1\r\nx\r\n"), "\r\n"), "STORED\r\n");
    assert_eq!(r.request("set past 0 1000000000 1\r\nx\r\n", "\r\n"), "STORED\r\n");
    assert_eq!(r.request("get gone past\r\n", "END\r\n"), "END\r\n", "negative and past exptimes are already expired");
    assert_eq!(r.request("get short absolute\r\n", "END\r\n"), "VALUE short 0 1\r\nx\r\nVALUE absolute 0 1\r\nx\r\nEND\r\n");
    // touch extends a TTL.
    assert_eq!(r.request("set extended 0 2 1\r\ny\r\n", "\r\n"), "STORED\r\n");
    assert_eq!(r.request("touch extended 100\r\n", "\r\n"), "TOUCHED\r\n");
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(r.request("get short\r\n", "END\r\n"), "END\r\n");
    assert_eq!(r.request("get extended\r\n", "END\r\n"), "VALUE extended 0 1\r\ny\r\nEND\r\n");
    // An expired key is absent for add, replace and incr too.
    assert_eq!(r.request("replace short 0 0 1\r\nz\r\n", "\r\n"), "NOT_STORED\r\n");
    assert_eq!(r.request("add short 0 0 1\r\nz\r\n", "\r\n"), "STORED\r\n");
}

#[test]
fn too_large_values_are_swallowed_and_the_old_value_kept() {
    let node = TestNode::start(&["max_value_size=1024"]);
    let mut r = node.raw();
    assert_eq!(r.request("set k 0 0 3\r\nold\r\n", "\r\n"), "STORED\r\n");
    let big = "x".repeat(5000);
    assert_eq!(r.request(&format!("set k 0 0 5000\r\n{big}\r\n"), "\r\n"), "SERVER_ERROR object too large for cache\r\n");
    // The swallowed data was not read as commands: the next reply is for get.
    assert_eq!(r.request("get k\r\n", "END\r\n"), "VALUE k 0 3\r\nold\r\nEND\r\n");
    // A huge declared length allocates nothing and does not stall the node.
    r.send(b"set k 0 0 2000000000\r\n");
    assert_eq!(r.read_until("\r\n"), "SERVER_ERROR object too large for cache\r\n");
    let fresh = node.raw().request("get k\r\n", "END\r\n");
    assert_eq!(fresh, "VALUE k 0 3\r\nold\r\nEND\r\n");
    let exactly = "y".repeat(1024);
    assert_eq!(node.raw().request(&format!("set k 0 0 1024\r\n{exactly}\r\n"), "\r\n"), "STORED\r\n");
}

#[test]
fn a_bad_client_harms_no_other() {
    let node = TestNode::start(&[]);
    let mut good = node.raw();
    good.request("set safe 0 0 4\r\nsafe\r\n", "\r\n");
    // Binary garbage, then a line that never ends: closed for too long a line.
    let mut bad = node.raw();
    bad.send(&[0u8, 0xff, 0x80, b'\r', b'\n']);
    assert_eq!(bad.read_until("\r\n"), "ERROR\r\n");
    bad.send(&vec![b'z'; 5000]);
    assert_eq!(bad.read_until("\r\n"), "CLIENT_ERROR line too long\r\n");
    assert!(bad.closed());
    // A client that vanishes mid-value.
    let mut vanishing = node.raw();
    vanishing.send(b"set safe 0 0 100\r\nonly part");
    drop(vanishing);
    assert_eq!(good.request("get safe\r\n", "END\r\n"), "VALUE safe 0 4\r\nsafe\r\nEND\r\n");
    assert_eq!(node.raw().request("get safe\r\n", "END\r\n"), "VALUE safe 0 4\r\nsafe\r\nEND\r\n");
}

#[test]
fn quit_closes_and_the_connection_limit_holds() {
    let node = TestNode::start(&["max_connections=3"]);
    let mut r = node.raw();
    r.send(b"quit\r\n");
    assert!(r.closed());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(node.stat("curr_connections"), "1", "only the stats connection itself");
    std::thread::sleep(Duration::from_millis(200)); // for that one to close
    let held: Vec<Raw> = (0..3).map(|_| node.raw()).collect();
    // Each held connection really is a session.
    for mut h in held.into_iter() {
        assert_eq!(h.request("get x\r\n", "END\r\n"), "END\r\n");
        std::mem::forget(h); // keep open until the node goes
    }
    let mut extra = node.raw();
    assert_eq!(extra.read_until("\r\n"), "SERVER_ERROR too many open connections\r\n");
    assert!(extra.closed());
    // The memcache port is full, so ask through the admin tool.
    let (ok, stats, _) = node.admin(&["stats"]);
    assert!(ok && stats.contains("rejected_connections 1\n"), "{stats}");
}

#[test]
fn flush_all_when_enabled() {
    let node = TestNode::start(&["allow_flush_all=true", "store=\"memory\""]);
    let mut r = node.raw();
    for i in 0..10 {
        r.request(&format!("set f{i} 0 0 1\r\nx\r\n"), "\r\n");
    }
    assert_eq!(node.count("curr_items"), 10);
    assert_eq!(r.request("flush_all\r\n", "\r\n"), "OK\r\n");
    assert_eq!(r.request("get f0 f9\r\n", "END\r\n"), "END\r\n");
    assert_eq!(node.count("curr_items"), 0);
    assert_eq!(node.stat("kai_store"), "memory");
}

#[test]
fn stats_has_memcached_and_kai_fields() {
    let node = TestNode::start(&[]);
    let mut r = node.raw();
    r.request("set s 0 0 5\r\nhello\r\n", "\r\n");
    r.request("get s nope\r\n", "END\r\n");
    let stats = r.request("stats\r\n", "END\r\n");
    for field in [
        "pid",
        "uptime",
        "time",
        "version",
        "curr_connections",
        "total_connections",
        "cmd_get",
        "cmd_set",
        "get_hits",
        "get_misses",
        "curr_items",
        "total_items",
        "bytes",
        "bytes_read",
        "bytes_written",
        "threads",
        "kai_node",
        "kai_quorum",
        "kai_number_of_buckets",
        "kai_number_of_virtual_nodes",
        "kai_store",
        "kai_curr_nodes",
        "kai_unreconciled_get",
    ] {
        assert!(stats.contains(&format!("STAT {field} ")), "no {field} in\n{stats}");
    }
    let stat = |name: &str| node.stat(name);
    assert_eq!(stat("kai_quorum"), "1,1,1");
    assert_eq!(stat("cmd_get"), "2");
    assert_eq!(stat("get_hits"), "1");
    assert_eq!(stat("get_misses"), "1");
    assert_eq!(stat("curr_items"), "1");
    assert_eq!(stat("bytes"), "5");
    assert_eq!(stat("kai_store"), "disk");
    assert_eq!(stat("kai_node"), node.api_addr());
    assert_eq!(stat("kai_number_of_buckets"), "1024");
}

#[test]
fn a_node_runs_without_transparent_huge_pages() {
    // Their 2 MiB first-touch zeroing doubled the disk engine's p99.
    let node = TestNode::start(&[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).expect("the node's /proc status");
    assert!(status.lines().any(|l| l.split_whitespace().eq(["THP_enabled:", "0"])), "{status}");
}

#[test]
fn acknowledged_writes_survive_kill_9_and_restart() {
    let mut node = TestNode::start(&[]);
    {
        let mut r = node.raw();
        for i in 0..200 {
            assert_eq!(r.request(&format!("set durable-{i} {i} 0 {}\r\n{i}\r\n", i.to_string().len()), "\r\n"), "STORED\r\n");
        }
        assert_eq!(r.request("delete durable-0\r\n", "\r\n"), "DELETED\r\n");
    }
    node.kill();
    node.launch();
    let mut r = node.raw();
    assert_eq!(r.request("get durable-0\r\n", "END\r\n"), "END\r\n", "the delete survived too");
    for i in 1..200 {
        let want = format!("VALUE durable-{i} {i} {}\r\n{i}\r\nEND\r\n", i.to_string().len());
        assert_eq!(r.request(&format!("get durable-{i}\r\n"), "END\r\n"), want);
    }
    assert_eq!(node.count("curr_items"), 199);
    // And a clean stop (SIGTERM) exits 0 and keeps them as well.
    assert!(node.terminate().success());
    node.launch();
    assert_eq!(node.raw().request("get durable-199\r\n", "END\r\n"), "VALUE durable-199 199 3\r\n199\r\nEND\r\n");
}

#[test]
fn a_restarted_actor_is_supervised_and_the_node_keeps_serving() {
    let mut node = TestNode::start(&[]);
    node.raw().request("set before 0 0 1\r\nb\r\n", "\r\n");
    let mut held = node.raw();
    for module in ["coordinator", "store", "version", "hash", "membership", "sync", "api", "memcache"] {
        let (ok, out, err) = node.admin(&[&format!("restart_actor {module}")]);
        assert!(ok, "restart_actor {module}: {out} {err}");
        std::thread::sleep(Duration::from_millis(100));
        // A connection from before the restart and a fresh one both work.
        assert_eq!(held.request("get before\r\n", "END\r\n"), "VALUE before 0 1\r\nb\r\nEND\r\n", "after {module}");
        let mut fresh = node.raw();
        assert_eq!(fresh.request(&format!("set after-{module} 0 0 1\r\na\r\n"), "\r\n"), "STORED\r\n");
    }
    assert!(node.is_running());
    // At least one restart per module (workers each run their own coordinator,
    // version and store actors, so there are more).
    let restarts: u64 = node.count("kai_actor_restarts");
    assert!(restarts >= 8, "{restarts} restarts");
    let (ok, _, err) = node.admin(&["restart_actor nonsense"]);
    assert!(!ok && err.contains("no module"), "{err}");
}

#[test]
fn admin_reports_and_refuses_clearly() {
    let node = TestNode::start(&[]);
    let (ok, out, _) = node.admin(&["node_list", "node_info", "stats"]);
    assert!(ok);
    // node_list is a status table: a header, then a row per member.
    assert!(out.starts_with("address  "), "{out}");
    for column in ["state", "zone", "vnodes", "first", "home", "keys", "bytes", "hints", "moving", "heard", "phi"] {
        assert!(out.lines().next().unwrap().split_whitespace().any(|c| c == column), "no {column} column: {out}");
    }
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..7], [node.api_addr().as_str(), "up", "-", "128", "1024", "1024", "0"], "{out}");
    assert!(out.contains("quorum 1,1,1"), "{out}");
    assert!(out.contains("kai_store disk"), "{out}");
    let (ok, _, err) = node.admin(&["no_such_command"]);
    assert!(!ok && err.contains("unknown command"), "{err}");
    let (ok, _, err) = common::admin(&format!("127.0.0.1:{}", common::free_port()), &["node_list"]);
    assert!(!ok && err.contains("unreachable"), "{err}");
}

#[test]
fn a_config_that_makes_no_sense_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (set, key) in [
        (vec!["r=4", "n=3"], "`r`"),
        (vec!["n=3", "r=2", "w=1"], "`w`"),
        (vec!["memcache_port=11011", "port=11011"], "`memcache_port`"),
        (vec!["colour=\"blue\""], "`colour`"),
        (vec!["data_dir=\"/proc/no-such-place\""], "`data_dir`"),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kai"));
        cmd.arg("--config").arg(common::repo_config()).current_dir(dir.path());
        for s in &set {
            cmd.arg("--set").arg(s);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set:?} was accepted");
        assert!(err.contains(key), "{set:?}: {err}");
    }
}

/// Keys are stored by bucket: a start on existing data with another bucket
/// count would read them as missing, so it is refused, and so is a count
/// that does not cut the ring evenly.
#[test]
fn the_rings_shape_is_kept_with_the_data() {
    let mut node = TestNode::start(&[]);
    node.client().set("shaped", "v", 0).unwrap();
    node.terminate();
    let said = node.refused_start(&["number_of_buckets=512"]);
    assert!(said.contains("`number_of_buckets`") && said.contains("= 1024") && said.contains("gives 512"), "{said}");
    let said = node.refused_start(&["number_of_buckets=3000"]);
    assert!(said.contains("`number_of_buckets`") && said.contains("power of two"), "{said}");
    node.launch();
    assert_eq!(node.client().get::<String>("shaped").unwrap().as_deref(), Some("v"));
}

#[test]
fn the_memory_engine_serves_the_same() {
    let node = TestNode::start(&["store=\"memory\""]);
    let c = node.client();
    c.set("m", "memory", 0).unwrap();
    assert_eq!(c.get::<String>("m").unwrap().as_deref(), Some("memory"));
    assert_eq!(c.increment("absent", 1).ok(), None);
    assert_eq!(node.stat("kai_store"), "memory");
}

#[test]
fn a_binary_protocol_client_works_too() {
    let node = TestNode::start(&[]);
    // The memcache crate speaks the binary protocol unless told otherwise.
    let url = format!("memcache://127.0.0.1:{}?timeout=5", node.memcache_port);
    let c = memcache::Client::connect(url.as_str()).expect("binary client");
    c.set("bin", "hello", 0).unwrap();
    assert_eq!(c.get::<String>("bin").unwrap().as_deref(), Some("hello"));
    assert_eq!(c.get::<String>("absent").unwrap(), None);
    assert!(c.add("bin", "again", 0).is_err(), "add on a present key");
    c.add("fresh", "1", 0).unwrap();
    assert!(c.replace("missing", "x", 0).is_err(), "replace on an absent key");
    c.append("bin", " world").unwrap();
    c.prepend("bin", ">").unwrap();
    assert_eq!(c.get::<String>("bin").unwrap().as_deref(), Some(">hello world"));
    c.set("n", 10u64, 0).unwrap();
    assert_eq!(c.increment("n", 5).unwrap(), 15);
    assert_eq!(c.decrement("n", 20).unwrap(), 0);
    assert!(c.touch("bin", 100).unwrap());
    assert!(!c.touch("absent", 100).unwrap());
    let many: std::collections::HashMap<String, String> = c.gets(&["bin", "fresh", "absent"]).unwrap();
    assert_eq!(many.len(), 2);
    assert!(c.delete("bin").unwrap());
    assert!(!c.delete("bin").unwrap());
    assert!(c.version().unwrap()[0].1.contains("kai"));
    assert!(c.flush().is_err(), "flush is refused unless enabled");
    assert!(!c.stats().unwrap()[0].1.is_empty());
    // The same data through the text protocol.
    assert_eq!(node.raw().request("get fresh\r\n", "END\r\n"), "VALUE fresh 0 1\r\n1\r\nEND\r\n");
}

/// memcached's `stats`, as monitoring expects it: every per-command hit
/// and miss counter, `stats reset`, a real `limit_maxbytes`, CPU time to
/// the microsecond.
#[test]
fn memcached_stats_are_complete() {
    let node = TestNode::start(&[]);
    let mut r = node.raw();
    r.request("set k 0 0 1\r\n5\r\n", "\r\n");
    for (command, end) in [
        ("delete nope\r\n", "\r\n"),
        ("incr k 1\r\n", "\r\n"),
        ("incr nope 1\r\n", "\r\n"),
        ("decr k 1\r\n", "\r\n"),
        ("touch k 100\r\n", "\r\n"),
        ("touch nope 100\r\n", "\r\n"),
        ("cas k 0 0 1 1\r\nx\r\n", "\r\n"),
        ("cas nope 0 0 1 1\r\nx\r\n", "\r\n"),
        ("set gone 0 -1 1\r\nx\r\n", "\r\n"),
        ("get gone\r\n", "END\r\n"),
        ("delete k\r\n", "\r\n"),
    ] {
        r.request(command, end);
    }
    let stat = |name: &str| node.stat(name).parse::<u64>().unwrap_or_else(|_| panic!("{name}"));
    for (name, want) in [
        ("delete_hits", 1),
        ("delete_misses", 1),
        ("incr_hits", 1),
        ("incr_misses", 1),
        ("decr_hits", 1),
        ("decr_misses", 0),
        ("touch_hits", 1),
        ("touch_misses", 1),
        ("cas_badval", 1),
        ("cas_misses", 1),
        ("cas_hits", 0),
        ("get_expired", 1),
        ("get_flushed", 0),
        ("accepting_conns", 1),
    ] {
        assert_eq!(stat(name), want, "{name}");
    }
    assert!(stat("limit_maxbytes") > 0, "the disk's size");
    let user: f64 = node.stat("rusage_user").parse().unwrap();
    assert!(user > 0.0 && (user * 1e6).fract() < 1.0, "{user}");
    assert_eq!(r.request("stats reset\r\n", "\r\n"), "RESET\r\n");
    assert_eq!(stat("delete_hits"), 0);
    assert_eq!(stat("cmd_set"), 0);
    assert!(r.request("stats settings\r\n", "END\r\n").lines().filter(|l| l.starts_with("STAT ")).count() >= 3);
    assert_eq!(r.request("stats items\r\n", "END\r\n"), "END\r\n");
    assert_eq!(r.request("stats slabs\r\n", "END\r\n"), "END\r\n");
    let memory = TestNode::start(&["store=\"memory\"", "max_memory_bytes=2500"]);
    assert_eq!(memory.count("limit_maxbytes"), 2500);
    let mut m = memory.raw();
    let value = "v".repeat(1000);
    assert_eq!(m.request(&format!("set a 0 0 1000\r\n{value}\r\n"), "\r\n"), "STORED\r\n");
    assert_eq!(m.request(&format!("set b 0 0 1000\r\n{value}\r\n"), "\r\n"), "STORED\r\n");
    let reply = m.request(&format!("set c 0 0 1000\r\n{value}\r\n"), "\r\n");
    assert_eq!(reply, "SERVER_ERROR out of memory storing object\r\n", "past the budget");
    assert_eq!(m.request("get a\r\n", "END\r\n").len(), format!("VALUE a 0 1000\r\n{value}\r\nEND\r\n").len());
}

/// Logs read well in a file: no colour codes, the storage engine quiet,
/// start and membership changes there whatever the level.
#[test]
fn logs_are_plain_and_say_what_matters() {
    let node = TestNode::start(&["log_level=\"warn\""]);
    node.client().set("k", "v", 0).unwrap();
    let log = node.log();
    assert!(!log.contains('\u{1b}'), "colour codes in a log file:\n{log}");
    assert!(!log.contains("INFO fjall") && !log.contains("INFO lsm_tree"), "{log}");
    assert!(log.contains("kai node serving"), "start is always logged:\n{log}");
    let quiet = TestNode::start(&["log_level=\"error\""]);
    let (ok, _, err) = quiet.admin(&[&format!("check_node {} {}", quiet.api_addr(), node.api_addr())]);
    assert!(ok, "{err}");
    common::wait_for("the link is logged", Duration::from_secs(5), || quiet.log().contains("member on the ring"));
}

#[test]
fn the_admin_tool_is_polite() {
    let node = TestNode::start(&[]);
    // A closed pipe ends it quietly.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} admin --node {} -e stats -e stats | head -1", env!("CARGO_BIN_EXE_kai"), node.api_addr()))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kai"))
        .args(["admin", "--node", &node.api_addr(), "-e", "stats"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(101), "no panic on a broken pipe");
    // The memcache port is named as such, at once.
    let started = std::time::Instant::now();
    let (ok, _, err) = common::admin(&format!("127.0.0.1:{}", node.memcache_port), &["node_list"]);
    assert!(!ok && err.contains("memcache port"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // Help lists the REPL's commands; times read as dates.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_kai")).args(["admin", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("check_node A B") && help.contains("remove_node"), "{help}");
    node.client().set("dated", "v", 0).unwrap();
    let (_, out, _) = node.admin(&["get dated"]);
    assert!(out.contains("expires never") && out.contains(&format!(" at {}", &humantime_year())), "{out}");
    // A data dir in use, and a value of the wrong type, say what is wrong.
    let data_dir = format!("data_dir={:?}", node.dir.path().join("data").display().to_string());
    let said = TestNode::prepare(&[&data_dir]).refused_start(&[]);
    assert!(said.contains("in use") && said.contains("another kai"), "{said}");
    let said = TestNode::prepare(&[]).refused_start(&["n=three"]);
    assert!(said.contains("`n`"), "{said}");
}

fn humantime_year() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Good for this century: the year of an RFC 3339 time stamp.
    let year = 1970 + secs / 31_556_952;
    format!("{year}-")
}

/// An operator's slips get an answer that says what happened: the admin
/// tool pointed at the wrong port, a failing `-e` command, a mistyped
/// config key. The log is the node's own (no actix chatter at start).
#[test]
fn operator_slips_are_explained() {
    let node = TestNode::start(&[]);
    for (port, name) in [(node.http_port, "HTTP"), (node.memcache_port, "memcache")] {
        let (ok, _, err) = common::admin(&format!("127.0.0.1:{port}"), &["node_list"]);
        assert!(!ok && err.contains(&format!("that is a node's {name} port, not its internal API port")), "{err}");
    }
    let (ok, out, err) = node.admin(&["nonsense", "node_list"]);
    assert!(!ok && err.contains("unknown command") && out.is_empty(), "-e stops at the first failure: {out} {err}");
    let said = TestNode::prepare(&[]).refused_start(&["max_conections=5"]);
    assert!(said.contains("did you mean `max_connections`?"), "{said}");
    assert!(!node.log().contains("actix_server"), "{}", node.log());
    let shipped = std::fs::read_to_string(common::repo_config()).unwrap();
    assert!(shipped.contains("cluster_secret =") && !shipped.contains("no authentication"), "kai.config.toml");
}

/// A node's address is its identity: its data is never served under
/// another, which would leave the old address on the ring as a ghost.
#[test]
fn a_data_dir_is_not_served_under_another_address() {
    let mut node = TestNode::start(&[]);
    node.client().set("k", "v", 0).unwrap();
    let old = node.api_addr();
    assert!(node.terminate().success());
    let new_port = common::free_port();
    let said = node.refused_start(&[&format!("port={new_port}")]);
    let new = format!("127.0.0.1:{new_port}");
    assert!(
        said.contains(&format!("holds the data of node {old}")) && said.contains(&format!("this start is node {new}")),
        "{said}"
    );
    assert!(said.contains(&format!("replaces = \"{old}\"")), "it says the way to move a node: {said}");
    node.launch();
    assert_eq!(node.client().get::<String>("k").unwrap().as_deref(), Some("v"), "nothing stored was harmed");
    // Moved the supported way: the same data, served as the new address.
    assert!(node.terminate().success());
    node.set(format!("port={new_port}"));
    node.set(format!("replaces=\"{old}\""));
    node.api_port = new_port;
    node.launch();
    assert_eq!(node.client().get::<String>("k").unwrap().as_deref(), Some("v"), "the moved node serves its data");
    assert_eq!(node.member_states(), vec![(old.clone(), "removed".to_string()), (new.clone(), "up".to_string())]);
}

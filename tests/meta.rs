//! The meta protocol from outside: replies byte for byte as memcached's,
//! Kai's per-request R and W flags on a cluster with a node gone, and
//! siblings seen and resolved through `mg` and `ms`. (The meta-protocol
//! client library's run is in tests/clients.rs.)

mod common;

use common::{with_link_cut, Memcached, Raw, TestCluster, TestNode};
use std::time::Duration;

/// Meta and text commands whose replies memcached and Kai must agree on
/// byte for byte: no cas values (memcached counts them, Kai derives them
/// from versions), no flags Kai refuses (I, E, N, R), no `l` (memcached's
/// clock ticks by whole seconds), no siblings.
const SCRIPT: &[&str] = &[
    "mg foo v\r\n",
    "mg foo v q\r\n",
    "mg foo k O123 v\r\n",
    "ms foo 3\r\nbar\r\n",
    "ms foo 3 k O9\r\nbar\r\n",
    "mg foo v\r\n",
    "mg foo\r\n",
    "mg foo q\r\n",
    "mg foo s v f t k O1 q\r\n",
    "ms foo 3 F7 T100\r\nbaz\r\n",
    "mg foo f t v\r\n",
    "mg foo T30 t v\r\n",
    "ms foo 3 ME\r\nqux\r\n",
    "ms new 3 ME\r\nqux\r\n",
    "ms nokey 1 MR\r\nx\r\n",
    "ms foo 2 MA\r\nzz\r\n",
    "ms foo 2 MP\r\naa\r\n",
    "mg foo v\r\n",
    "get foo\r\n",
    "append foo 0 0 1\r\n!\r\n",
    "mg foo s v\r\n",
    "ms nope 1 C1\r\nx\r\n",
    "md foo q\r\n",
    "md foo\r\n",
    "md foo O5 k\r\n",
    "md nx q\r\n",
    "ma cnt\r\n",
    "ma cnt N0 J10 v\r\n",
    "ma cnt v\r\n",
    "ma cnt MD D3 v t\r\n",
    "ma cnt q\r\n",
    "ma cnt q v\r\n",
    "incr cnt 5\r\n",
    "ma cnt D18446744073709551615 v\r\n",
    "ms cnt 2\r\nab\r\n",
    "ma cnt\r\n",
    "mg Zm9v b k v\r\n",
    "ms Zm9v 1 b k\r\nx\r\n",
    "mg Zm9v b k v\r\n",
    "get foo\r\n",
    "ms t1 1 T-1\r\nx\r\n",
    "mg t1 v\r\n",
    "ms big 1 T0 F4294967295\r\nx\r\n",
    "mg big f s t\r\n",
    "mg foo zz\r\n",
    "mg foo v v\r\n",
    "mg\r\n",
    "ms foo\r\n",
    "ms foo x\r\n",
    "ms foo 1 S5\r\nx\r\n",
    "ms foo 1 Fx\r\nx\r\n",
    "ms foo 1 MX\r\nx\r\n",
    "ma cnt MX\r\n",
    "ma cnt Dx\r\n",
    "md nx C99 q\r\n",
    "mg foo v\r\n",
    "ms hl 1\r\nx\r\n",
    "mg hl h\r\n",
    "mg hl h v\r\n",
    "mg hl k h f\r\n",
    "ms hl 1\r\ny\r\n",
    "mg hl h\r\n",
    "get hl\r\n",
    "mg hl h\r\n",
    "mg nothere h\r\n",
];

/// Sends each command followed by `mn`, so the reply ends at `MN` (which
/// tests `mn` itself every time), and returns each command's reply
/// without it.
fn replies(port: u16) -> Vec<String> {
    let mut raw = Raw::connect(port);
    SCRIPT
        .iter()
        .map(|command| {
            let reply = raw.request(&format!("{command}mn\r\n"), "MN\r\n");
            reply.strip_suffix("MN\r\n").unwrap_or(&reply).to_string()
        })
        .collect()
}

/// Two replies alike byte for byte, except that a TTL (`t<n>`) may be one
/// second apart: both servers count whole seconds, so a second may turn
/// between a set and the read of its TTL on one server and not the other.
fn alike(theirs: &str, ours: &str) -> bool {
    let tokens = |reply: &str| reply.split([' ', '\r', '\n']).map(str::to_string).collect::<Vec<_>>();
    let ttl = |token: &str| token.strip_prefix('t').and_then(|n| n.parse::<i64>().ok());
    let (a, b) = (tokens(theirs), tokens(ours));
    theirs.len().abs_diff(ours.len()) <= 1
        && a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| x == y || matches!((ttl(x), ttl(y)), (Some(p), Some(q)) if p.abs_diff(q) <= 1))
}

#[test]
fn replies_alike_allow_only_a_turning_second() {
    assert!(alike("VA 3 f7 t100\r\nbaz\r\n", "VA 3 f7 t99\r\nbaz\r\n"));
    assert!(alike("HD t-1\r\n", "HD t-1\r\n"));
    assert!(!alike("VA 3 f7 t100\r\nbaz\r\n", "VA 3 f7 t98\r\nbaz\r\n"));
    assert!(!alike("VA 3 f7 t100\r\nbaz\r\n", "VA 3 f8 t100\r\nbaz\r\n"));
    assert!(!alike("HD\r\n", "HD \r\n"), "a byte more is a difference");
}

#[test]
fn meta_and_text_replies_match_memcached_byte_for_byte() {
    let (_memcached, port) = Memcached::start(&[], &[]);
    let theirs = replies(port);
    let node = TestNode::start(&[]);
    let ours = replies(node.memcache_port);
    let differ: Vec<String> = SCRIPT
        .iter()
        .zip(theirs.iter().zip(&ours))
        .filter(|(_, (a, b))| !alike(a, b))
        .map(|(c, (a, b))| format!("{c:?}\n  memcached: {a:?}\n  kai:       {b:?}"))
        .collect();
    assert!(differ.is_empty(), "{} of {} replies differ:\n{}", differ.len(), SCRIPT.len(), differ.join("\n"));
}

#[test]
fn flags_kai_cannot_honour_are_refused_by_name() {
    let node = TestNode::start(&[]);
    let mut raw = node.raw();
    assert_eq!(raw.request("ms k 1\r\nx\r\n", "\r\n"), "HD\r\n");
    let reply = raw.request("mg k N30 v\r\n", "\r\n");
    assert!(reply.starts_with("CLIENT_ERROR flag N"), "{reply:?}");
    let reply = raw.request("mg k h T30\r\n", "\r\n");
    assert!(reply.starts_with("CLIENT_ERROR flags h and l cannot be combined with T"), "{reply:?}");
    let reply = raw.request("ms k 1 I\r\ny\r\n", "\r\n");
    assert!(reply.starts_with("CLIENT_ERROR flag I"), "{reply:?}");
    let reply = raw.request("md k x\r\n", "\r\n");
    assert!(reply.starts_with("CLIENT_ERROR flag x"), "{reply:?}");
    // Nothing stored was harmed, and the connection still serves.
    assert_eq!(raw.request("mg k v\r\n", "x\r\n"), "VA 1\r\nx\r\n");
    // A single node has N = 1: a quorum of 2 cannot be asked for.
    let reply = raw.request("mg k v r2\r\n", "\r\n");
    assert!(reply.starts_with("CLIENT_ERROR bad r flag"), "{reply:?}");
}

/// `h` and `l` as memcached means them, through any node: a read is
/// recorded at the replicas that answered it, and any later read quorum
/// meets one of them (R + R > N).
#[test]
fn hit_before_and_last_access_are_seen_through_any_node() {
    let cluster = TestCluster::start(3, &[]);
    let (mut a, mut b, mut c) = (cluster.nodes[0].raw(), cluster.nodes[1].raw(), cluster.nodes[2].raw());
    assert_eq!(a.request("ms seen 1\r\nx\r\n", "\r\n"), "HD\r\n");
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(b.request("mg seen h l\r\n", "\r\n"), "HD h0 l1\r\n", "written a second ago, never read");
    assert_eq!(c.request("mg seen h l v\r\n", "x\r\n"), "VA 1 h1 l0\r\nx\r\n", "read just now through b");
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(a.request("get seen\r\n", "END\r\n"), "VALUE seen 0 1\r\nx\r\nEND\r\n");
    assert_eq!(b.request("mg seen l\r\n", "\r\n"), "HD l0\r\n", "a text get is a read too");
    assert_eq!(c.request("ms seen 1\r\ny\r\n", "\r\n"), "HD\r\n");
    assert_eq!(a.request("mg seen h\r\n", "\r\n"), "HD h0\r\n", "written again: not hit since");
    assert_eq!(b.request("mg seen h\r\n", "\r\n"), "HD h1\r\n");
    assert_eq!(c.request("mg gone h l\r\n", "\r\n"), "EN\r\n");
}

#[test]
fn r_and_w_flags_set_the_quorum_of_one_request() {
    let mut cluster = TestCluster::start(3, &[]);
    let mut raw = cluster.nodes[0].raw();
    // All up: W = 3 for this write, R = 3 for this read.
    assert_eq!(raw.request("ms every 3 w3\r\nall\r\n", "\r\n"), "HD\r\n");
    assert_eq!(raw.request("mg every v r3\r\n", "all\r\n"), "VA 3\r\nall\r\n");
    for bad in ["mg every v r0\r\n", "mg every v r4\r\n", "mg every v rx\r\n", "ms every 1 w9\r\nx\r\n"] {
        let reply = raw.request(bad, "\r\n");
        assert!(reply.starts_with("CLIENT_ERROR bad"), "{bad:?} gave {reply:?}");
    }

    cluster.nodes[2].kill();
    // With a node gone, 3 replicas cannot answer, and 1 or 2 can; the text
    // protocol keeps the config's R = W = 2.
    let reply = raw.request("ms k 3 w3\r\nabc\r\n", "\r\n");
    assert!(reply.starts_with("SERVER_ERROR write quorum not met"), "w3 with a node down: {reply:?}");
    assert_eq!(raw.request("ms k 3 w1\r\nabc\r\n", "\r\n"), "HD\r\n");
    let reply = raw.request("mg k v r3\r\n", "\r\n");
    assert!(reply.starts_with("SERVER_ERROR read quorum not met"), "r3 with a node down: {reply:?}");
    assert_eq!(raw.request("mg k v r1\r\n", "abc\r\n"), "VA 3\r\nabc\r\n");
    assert_eq!(raw.request("get k\r\n", "END\r\n"), "VALUE k 0 3\r\nabc\r\nEND\r\n");
    // Through a node that forwards (not a replica of every key with N = 3
    // of 3 here, so every node is one): the flags travel the same way.
    let mut other = cluster.nodes[1].raw();
    assert_eq!(other.request("ma n N0 J5 v w2\r\n", "5\r\n"), "VA 1\r\n5\r\n");
    let reply = other.request("md n w3\r\n", "\r\n");
    assert!(reply.starts_with("SERVER_ERROR write quorum not met"), "{reply:?}");
}

#[test]
fn siblings_are_counted_listed_and_resolved_through_meta() {
    let cluster = TestCluster::start(3, &[]);
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    // Cut the link between a and b; both still reach c: two acknowledged
    // writes neither saw, so siblings.
    with_link_cut(a, b, || {
        assert_eq!(a.raw().request("ms contested 6 F1\r\nfrom-a\r\n", "\r\n"), "HD\r\n");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(b.raw().request("ms contested 6 F2\r\nfrom-b\r\n", "\r\n"), "HD\r\n");
    });

    let mut raw = c.raw();
    // Plain mg: one answer, the newest, and y says there are two.
    assert_eq!(raw.request("mg contested v f y\r\n", "from-b\r\n"), "VA 6 f2 y2\r\nfrom-b\r\n");
    // a: every sibling, each with its own flags, one cas token for all.
    let all = raw.request("mg contested v f y c a\r\n", "from-b\r\n");
    let lines: Vec<&str> = all.split("\r\n").collect();
    assert!(lines[0].starts_with("VA 6 f1 y2 c") && lines[1] == "from-a", "{all:?}");
    assert!(lines[2].starts_with("VA 6 f2 y2 c") && lines[3] == "from-b", "{all:?}");
    let token = lines[0].rsplit(" c").next().unwrap();
    assert_eq!(lines[2].rsplit(" c").next().unwrap(), token, "one token for the sibling set");
    // Without a token, a stale one, then the set's token: only the last
    // replaces both, through another coordinator.
    assert_eq!(a.raw().request("ms contested 6 C1\r\nstale!\r\n", "\r\n"), "EX\r\n");
    assert_eq!(a.raw().request(&format!("ms contested 6 C{token}\r\nmerged\r\n"), "\r\n"), "HD\r\n");
    assert_eq!(raw.request("mg contested v y\r\n", "merged\r\n"), "VA 6 y1\r\nmerged\r\n");
    assert_eq!(raw.request("me contested\r\n", "\r\n").rsplit(' ').next(), Some("siblings=1\r\n"));
}

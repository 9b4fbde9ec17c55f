//! memcached's client authentication from outside: SASL PLAIN on the
//! binary protocol (memcached's `-S`) and the text protocol's token
//! (memcached's `-Y`), with real clients (pylibmc, pymemcache, the Rust
//! `memcache` crate), and the refusals an unauthenticated client gets
//! compared byte for byte with memcached's own.

mod common;

use common::{Memcached, TestNode};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";

/// A password file readable by anyone (memcached runs as nobody).
fn password_file(dir: &Path) -> PathBuf {
    let path = dir.join("passwords");
    std::fs::write(&path, format!("{USER}:{PASSWORD}\nbob:hunter2\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// What a server says to `bytes` on a fresh connection: everything until
/// it closes or falls quiet for half a second; a close is shown as <EOF>.
fn said(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(bytes).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let (mut got, mut buf, deadline) = (Vec::new(), [0u8; 4096], Instant::now() + Duration::from_secs(10));
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => {
                got.extend_from_slice(b"<EOF>");
                break;
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    got
}

/// A binary request with opaque 0xdeadbeef.
fn binary(opcode: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80, opcode];
    frame.extend_from_slice(&(key.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(&((key.len() + value.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&0xdead_beef_u32.to_be_bytes());
    frame.extend_from_slice(&[0; 8]);
    frame.extend_from_slice(key);
    frame.extend_from_slice(value);
    frame
}

#[test]
fn sasl_plain_admits_real_clients_and_refuses_as_memcached_does() {
    let _beside = common::beside();
    let dir = tempfile::tempdir().unwrap();
    let passwords = password_file(dir.path());
    let node = TestNode::start(&[&format!("sasl_password_file={}", quoted(&passwords))]);
    let addr = format!("127.0.0.1:{}", node.memcache_port);

    // libmemcached (pylibmc) with SASL: a right password, then a wrong one.
    let (ok, out) = common::secure_client(&["pylibmc-sasl", &addr, "py-", USER, PASSWORD]);
    assert!(ok, "{out}");
    // The Rust client, with SASL on the binary protocol.
    let url = format!("memcache://{USER}:{PASSWORD}@{addr}?protocol=binary&timeout=5");
    let client = memcache::Client::connect(url.as_str()).unwrap();
    client.set("rust", "sasl", 0).unwrap();
    assert_eq!(client.get::<String>("rust").unwrap().as_deref(), Some("sasl"));
    assert!(node.count("auth_cmds") >= 3 && node.count("auth_errors") >= 1);

    // memcached with -S, beside it: an unauthenticated request, a wrong
    // password and a SASL step without a start get the same bytes.
    let conf = dir.path().join("sasl");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("memcached.conf"), "mech_list: plain\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_memcached, port) = Memcached::start(&["-S"], &[("SASL_CONF_PATH", &conf), ("MEMCACHED_SASL_PWDB", &passwords)]);
    for (what, request) in [
        ("a get before authenticating", binary(0x00, b"k", b"")),
        ("a set before authenticating", binary(0x01, b"k", b"v")),
        ("the mechanisms", binary(0x20, b"", b"")),
        ("a wrong password", binary(0x21, b"PLAIN", format!("\0{USER}\0wrong").as_bytes())),
        ("an unknown mechanism", binary(0x21, b"CRAM-MD5", b"x")),
        ("a step without a start", binary(0x22, b"PLAIN", b"\0alice\0s3cret")),
    ] {
        assert_eq!(said(node.memcache_port, &request), said(port, &request), "{what}");
    }
    // Nothing a refused client sent ran.
    assert_eq!(said(node.memcache_port, &binary(0x01, b"rust", b"intruder"))[6..8], [0x00, 0x20]);
    assert_eq!(client.get::<String>("rust").unwrap().as_deref(), Some("sasl"));
    // Text clients cannot authenticate with SASL alone: told, and closed.
    assert_eq!(said(node.memcache_port, b"get rust\r\n"), b"CLIENT_ERROR unauthenticated\r\n<EOF>");
}

#[test]
fn the_text_token_admits_real_clients_and_refuses_as_memcached_does() {
    let _beside = common::beside();
    let dir = tempfile::tempdir().unwrap();
    let passwords = password_file(dir.path());
    let node = TestNode::start(&[&format!("ascii_auth_file={}", quoted(&passwords))]);
    let addr = format!("127.0.0.1:{}", node.memcache_port);

    // pymemcache sending the token by hand, and the Rust client, whose
    // text protocol sends it for a user in the URL.
    let (ok, out) = common::secure_client(&["ascii-auth", &addr, "py-", USER, PASSWORD]);
    assert!(ok, "{out}");
    let url = format!("memcache://{USER}:{PASSWORD}@{addr}?protocol=ascii&timeout=5");
    let client = memcache::Client::connect(url.as_str()).unwrap();
    client.set("rust", "token", 0).unwrap();
    assert_eq!(client.get::<String>("rust").unwrap().as_deref(), Some("token"));

    // memcached with -Y, beside it: the same bytes, one command to a
    // connection.
    let (_memcached, port) = Memcached::start(&["-Y", &passwords.display().to_string()], &[]);
    for (what, request) in [
        ("a get before authenticating", &b"get rust\r\n"[..]),
        ("a set that is not a token", b"set rust 0 0 8\r\nintruder\r\n"),
        ("a wrong password", b"set a 0 0 11\r\nalice wrong\r\n"),
        ("a token without a password", b"set a 0 0 5\r\nalice\r\n"),
        ("a right password, then a read", b"set a 0 0 12\r\nalice s3cret\r\n"),
        ("quit before authenticating", b"quit\r\n"),
    ] {
        assert_eq!(
            String::from_utf8_lossy(&said(node.memcache_port, request)),
            String::from_utf8_lossy(&said(port, request)),
            "{what}"
        );
    }
    assert_eq!(
        said(node.memcache_port, b"set a 0 0 12\r\nalice s3cret\r\nget rust\r\n"),
        b"STORED\r\nVALUE rust 0 5\r\ntoken\r\nEND\r\n"
    );
    let settings = String::from_utf8(said(node.memcache_port, b"set a 0 0 12\r\nalice s3cret\r\nstats settings\r\n")).unwrap();
    assert!(settings.contains("STAT auth_enabled_ascii yes\r\nSTAT ssl_enabled no\r\n"), "{settings}");
    // Nothing a refused client sent ran.
    assert_eq!(client.get::<String>("rust").unwrap().as_deref(), Some("token"));
    // Binary clients cannot authenticate with the token alone: refused.
    assert_eq!(said(node.memcache_port, &binary(0x00, b"rust", b""))[6..8], [0x00, 0x20]);
}

#[test]
fn password_files_reload_and_bad_ones_are_refused_at_start() {
    let _beside = common::beside();
    let dir = tempfile::tempdir().unwrap();
    let passwords = password_file(dir.path());
    let node = TestNode::start(&[&format!("ascii_auth_file={}", quoted(&passwords))]);
    let token = |user: &str, password: &str| {
        let line = format!("{user} {password}");
        said(node.memcache_port, format!("set a 0 0 {}\r\n{line}\r\n", line.len()).as_bytes())
    };
    assert_eq!(token("carol", "new"), b"CLIENT_ERROR authentication failure\r\n");
    std::fs::write(&passwords, "carol:new\n").unwrap();
    let (ok, out, err) = node.admin(&["reload_certs"]);
    assert!(ok, "{out}{err}");
    assert_eq!(token("carol", "new"), b"STORED\r\n");
    assert_eq!(token(USER, PASSWORD), b"CLIENT_ERROR authentication failure\r\n");

    // A file that is not user:password lines: the node will not start.
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "just-a-name\n").unwrap();
    let other = TestNode::prepare(&[]);
    let said = other.refused_start(&[&format!("sasl_password_file={}", quoted(&bad))]);
    assert!(said.contains("sasl_password_file") && said.contains("line 1 is not user:password"), "{said}");
}

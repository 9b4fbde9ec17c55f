//! The admin REPL: commands named after the original Kai's API, sent to a
//! node's internal API. Interactive with line editing and history on a
//! terminal; one command per line from a pipe; or `-e` for scripts.

use bytes::Bytes;
use kai_actors::api::auth::Secret;
use kai_actors::api::{ApiClient, MemberRow, MemberState, Placement, Request, Response, TransferProgress, ADMIN_BUCKETS};
use kai_actors::version::Version;
use std::io::{BufRead, IsTerminal};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);
const ADMIN_NAME: &str = "kai-admin";

pub const HELP: &str = "\
commands:
  check_node A B            tell node A about node B: A contacts B and they
                            merge member lists (how nodes are linked)
  node_list                 every member: state (joining up down leaving
                            removed), vnodes, buckets, keys, bytes, hints held
                            here, buckets moving, last heartbeat, phi
  node_info [NODE]          a node's identity and quorum
  find_nodes KEY            the key's preference list, home replicas first
  buckets                   the buckets this node holds, and the balance
  get KEY                   every version on each of the key's replicas
  stats [NODE]              a node's stats
  remove_node NODE          take NODE off the ring for good; its buckets move
  transfers                 bucket transfers under way, with a progress bar
  merkle_root [NODE]        a digest of the node's data (equal on replicas in sync)
  block [NODE...]           test-only: cut this node off from NODEs (none: heal)
  panic MODULE              test-only: make a module's actor panic (or quorum:
                            the next request's quorum actor)
  restart_actor MODULE      stop a module's actor so its supervisor restarts it
                            (store hash membership version coordinator sync api memcache)
  help                      this text
  quit                      leave the REPL
NODE is a node's internal API address, HOST:PORT; the default is the node the REPL is on.";

const COMMANDS: &[&str] = &[
    "check_node",
    "node_list",
    "node_info",
    "find_nodes",
    "buckets",
    "get",
    "stats",
    "remove_node",
    "transfers",
    "merkle_root",
    "restart_actor",
    "block",
    "panic",
    "help",
    "quit",
];

struct Admin {
    runtime: tokio::runtime::Runtime,
    node: SocketAddr,
    secret: Secret,
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("bad address {addr:?}"))
}

impl Admin {
    fn ask(&self, node: SocketAddr, request: Request) -> Result<Response, String> {
        self.runtime.block_on(async {
            let client = ApiClient::connect(&kai_actors::api::net::Tcp, node, ADMIN_NAME, ADMIN_BUCKETS, &self.secret, TIMEOUT)
                .await
                .map_err(|e| {
                    let hint = match e.to_string().contains("cluster secret") && !self.secret.is_set() {
                        true => " (give the admin tool the secret: --config FILE or KAI_CLUSTER_SECRET)",
                        false => "",
                    };
                    format!("node {node} unreachable: {e}{hint}")
                })?;
            match client.call(request, TIMEOUT).await.map_err(|e| e.to_string())? {
                Response::Error(why) => Err(why),
                answer => Ok(answer),
            }
        })
    }

    fn target(&self, arg: Option<&str>) -> Result<SocketAddr, String> {
        arg.map(resolve).unwrap_or(Ok(self.node))
    }

    /// Runs one command line; the text to show, or why it failed.
    fn execute(&self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => Ok(String::new()),
            ["help"] => Ok(HELP.to_string()),
            ["node_list"] => match self.ask(self.node, Request::MemberStatus)? {
                Response::MemberStatus(rows) => Ok(self.status_table(&rows)),
                other => Err(format!("unexpected answer: {other:?}")),
            },
            ["node_info"] | ["node_info", _] => match self.ask(self.target(words.get(1).copied())?, Request::NodeInfo)? {
                Response::NodeInfo(i) => Ok(format!(
                    "node {}\nmemcache_port {}\nquorum {},{},{}\nnumber_of_buckets {}\nvirtual_nodes {}\nstore {}\nversion {}",
                    i.node, i.memcache_port, i.n, i.r, i.w, i.number_of_buckets, i.virtual_nodes, i.store, i.version
                )),
                other => Err(format!("unexpected answer: {other:?}")),
            },
            ["stats"] | ["stats", _] => match self.ask(self.target(words.get(1).copied())?, Request::Stats)? {
                Response::Stats(lines) => Ok(lines.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join("\n")),
                other => Err(format!("unexpected answer: {other:?}")),
            },
            ["check_node", a, b] => {
                let b_addr = resolve(b)?;
                match self.ask(resolve(a)?, Request::CheckNode { node: b_addr.to_string() })? {
                    Response::Done => Ok(format!("{a} linked with {b}")),
                    other => Err(format!("unexpected answer: {other:?}")),
                }
            }
            ["find_nodes", key] => match self.ask(self.node, Request::FindNodes { key: Bytes::from(key.to_string()) })? {
                Response::Placement(p) => Ok(placement_lines(&p).join("\n")),
                other => Err(format!("unexpected answer: {other:?}")),
            },
            ["buckets"] => match self.ask(self.node, Request::Buckets)? {
                Response::Buckets { held, per_node } => {
                    let mut out = format!("{} holds {} buckets as a home replica", self.node, held.len());
                    out.push_str(&format!("\nheld: {}", ranges(&held)));
                    out.push_str("\nbalance (buckets each node is a home replica of):");
                    for (node, count) in per_node {
                        out.push_str(&format!("\n  {node} {count}"));
                    }
                    Ok(out)
                }
                other => Err(format!("unexpected answer: {other:?}")),
            },
            ["get", key] => self.versions_on_replicas(key),
            ["remove_node", node] => {
                let addr = resolve(node)?;
                match self.ask(self.node, Request::RemoveNode { node: addr.to_string() })? {
                    Response::Done => Ok(format!(
                        "{addr} leaves the ring: its buckets move to their new homes (node_list shows it leaving, then removed)"
                    )),
                    other => Err(format!("unexpected answer: {other:?}")),
                }
            }
            ["transfers"] => match self.ask(self.node, Request::Transfers)? {
                Response::Transfers(p) => Ok(progress_line(&p)),
                other => Err(format!("unexpected answer: {other:?}")),
            },
            ["merkle_root"] | ["merkle_root", _] => match self.ask(self.target(words.get(1).copied())?, Request::MerkleRoot)? {
                Response::Root(root) => Ok(format!("{root:016x}")),
                other => Err(format!("unexpected answer: {other:?}")),
            },
            ["block", peers @ ..] => {
                let peers = peers.iter().map(|p| resolve(p).map(|a| a.to_string())).collect::<Result<Vec<_>, _>>()?;
                let what = if peers.is_empty() { "healed".to_string() } else { format!("cut off from {}", peers.join(" ")) };
                match self.ask(self.node, Request::Block { peers })? {
                    Response::Done => Ok(format!("{} {what}", self.node)),
                    other => Err(format!("unexpected answer: {other:?}")),
                }
            }
            ["restart_actor", module] => match self.ask(self.node, Request::RestartActor { module: module.to_string() })? {
                Response::Done => Ok(format!("{module} restarting")),
                other => Err(format!("unexpected answer: {other:?}")),
            },
            ["panic", module] => match self.ask(self.node, Request::Panic { module: module.to_string() })? {
                Response::Done => Ok(format!("{module} told to panic")),
                other => Err(format!("unexpected answer: {other:?}")),
            },
            [cmd, ..] if COMMANDS.contains(cmd) => Err(format!("wrong arguments for {cmd}; try help")),
            [cmd, ..] => Err(format!("unknown command {cmd:?}; try help")),
        }
    }
}

/// A member's state as an operator reads it: down when the failure
/// detector suspects a member that should be serving.
fn shown_state(row: &MemberRow) -> String {
    let state = match (row.state, row.suspected) {
        (MemberState::Joining | MemberState::Up, true) => "down".to_string(),
        (MemberState::Leaving, true) => "leaving,down".to_string(),
        (state, _) => state.name().to_string(),
    };
    if row.accepts_writes || !row.state.on_ring() {
        state
    } else {
        format!("{state},read-only")
    }
}

impl Admin {
    /// `node_list`: every member as the asked node sees it, with what each
    /// member says of its own keys, bytes and transfers ("-" when it does
    /// not answer).
    fn status_table(&self, rows: &[MemberRow]) -> String {
        let header = ["address", "state", "zone", "vnodes", "first", "home", "keys", "bytes", "hints", "moving", "heard", "phi"];
        let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
        for row in rows {
            let stats = match (row.state, resolve(&row.addr)) {
                (MemberState::Removed, _) | (_, Err(_)) => None,
                (_, Ok(addr)) => match self.ask(addr, Request::Stats) {
                    Ok(Response::Stats(lines)) => Some(lines),
                    _ => None,
                },
            };
            let stat = |name: &str| {
                stats
                    .as_ref()
                    .and_then(|lines| lines.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
                    .unwrap_or_else(|| "-".into())
            };
            let heard = match row.heartbeat_age_ms {
                Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
                None => "never".into(),
            };
            let phi = if row.phi.is_finite() { format!("{:.1}", row.phi) } else { "inf".into() };
            let bytes = stat("bytes").parse::<u64>().map(human_bytes).unwrap_or_else(|_| "-".into());
            table.push(vec![
                row.addr.clone(),
                shown_state(row),
                if row.zone.is_empty() { "-".into() } else { row.zone.clone() },
                row.virtual_nodes.to_string(),
                row.buckets_first.to_string(),
                row.buckets_home.to_string(),
                stat("curr_items"),
                bytes,
                row.hints_held.to_string(),
                stat("kai_buckets_pending"),
                heard,
                phi,
            ]);
        }
        let widths: Vec<usize> = (0..header.len()).map(|c| table.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
        table
            .iter()
            .map(|r| {
                r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `get KEY`: asks each of the key's home replicas for its versions.
    fn versions_on_replicas(&self, key: &str) -> Result<String, String> {
        let key = Bytes::from(key.to_string());
        let placement = match self.ask(self.node, Request::FindNodes { key: key.clone() })? {
            Response::Placement(p) => p,
            other => return Err(format!("unexpected answer: {other:?}")),
        };
        let mut out = Vec::new();
        for (node, _) in placement.nodes.iter().take(placement.n) {
            out.push(format!("{node}:"));
            let answer =
                resolve(node).and_then(|addr| self.ask(addr, Request::ReplicaGet { key: key.clone(), client_read: false }));
            match answer {
                Ok(Response::Versions(versions)) if versions.is_empty() => out.push("  (nothing)".into()),
                Ok(Response::Versions(versions)) => out.extend(versions.iter().map(|v| format!("  {}", describe(v)))),
                Ok(other) => out.push(format!("  unexpected answer: {other:?}")),
                Err(e) => out.push(format!("  unreachable: {e}")),
            }
        }
        Ok(out.join("\n"))
    }
}

fn placement_lines(p: &Placement) -> Vec<String> {
    p.nodes
        .iter()
        .enumerate()
        .map(|(i, (node, up))| {
            let role = if i < p.n { "home" } else { "stand-in" };
            format!("{node} {role} {}", if *up { "up" } else { "down" })
        })
        .collect()
}

/// A version as one line: value (or tombstone), flags, expiry, dot, clock.
fn describe(v: &Version) -> String {
    let what = if v.deleted { "tombstone".to_string() } else { format!("{:?}", String::from_utf8_lossy(&v.value)) };
    let clock: Vec<String> = v.clock.entries().iter().map(|e| format!("{}:{}", e.node, e.counter)).collect();
    let at = |ms: u64| humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    let expires = if v.expires_at == 0 { "never".to_string() } else { at(v.expires_at * 1000).to_string() };
    format!(
        "{what} flags {} expires {expires} dot {}:{} clock [{}] at {}",
        v.flags,
        v.dot.node,
        v.dot.counter,
        clock.join(" "),
        at(v.timestamp)
    )
}

/// `[#########...........] 45/100 buckets, 1.2 MiB in, 0 B out`
fn progress_line(p: &TransferProgress) -> String {
    const WIDTH: u64 = 30;
    let filled = (p.buckets_done * WIDTH).checked_div(p.buckets_total).unwrap_or(WIDTH);
    let bar: String = (0..WIDTH).map(|i| if i < filled { '#' } else { '.' }).collect();
    if p.buckets_total == 0 {
        return "no bucket transfers since this node started".to_string();
    }
    let eta = match p.eta_secs {
        _ if p.buckets_done == p.buckets_total => ", done".to_string(),
        Some(secs) => format!(", about {secs} s to go"),
        None => String::new(),
    };
    format!(
        "[{bar}] {}/{} buckets, {} in, {} out{eta}",
        p.buckets_done,
        p.buckets_total,
        human_bytes(p.bytes_in),
        human_bytes(p.bytes_out)
    )
}

fn human_bytes(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1048576 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    }
}

/// Bucket numbers as ranges: 0-3 7 9-10.
fn ranges(buckets: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < buckets.len() {
        let start = buckets[i];
        while i + 1 < buckets.len() && buckets[i + 1] == buckets[i] + 1 {
            i += 1;
        }
        parts.push(if buckets[i] == start { start.to_string() } else { format!("{start}-{}", buckets[i]) });
        i += 1;
    }
    parts.join(" ")
}

/// Runs the admin tool against `node`, proving `secret` to it.
pub fn run(node: &str, secret: Secret, execute: &[String]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let admin = Admin { runtime, node: resolve(node)?, secret };
    if !execute.is_empty() {
        for line in execute {
            if !print(&admin.execute(line)?) {
                break;
            }
        }
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        let mut failed = false;
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| e.to_string())?;
            if line.trim() == "quit" {
                break;
            }
            match admin.execute(&line) {
                Ok(out) if out.is_empty() => {}
                Ok(out) => {
                    if !print(&out) {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    failed = true;
                }
            }
        }
        return if failed { Err("some commands failed".into()) } else { Ok(()) };
    }
    interactive(&admin)
}

/// Prints one answer; false once standard output is closed (`| head`),
/// which ends the tool quietly rather than with a panic.
fn print(text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|_| out.flush()).is_ok()
}

/// Where the REPL keeps its history across sessions.
fn history_file() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".kai_admin_history"))
}

fn interactive(admin: &Admin) -> Result<(), String> {
    use rustyline::completion::{Completer, Pair};
    use rustyline::{Helper, Highlighter, Hinter, Validator};

    #[derive(Helper, Highlighter, Hinter, Validator)]
    struct Commands;

    impl Completer for Commands {
        type Candidate = Pair;
        fn complete(&self, line: &str, pos: usize, _: &rustyline::Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
            let word = &line[..pos];
            if word.contains(' ') {
                return Ok((pos, Vec::new()));
            }
            let matches = COMMANDS
                .iter()
                .filter(|c| c.starts_with(word))
                .map(|c| Pair { display: c.to_string(), replacement: c.to_string() })
                .collect();
            Ok((0, matches))
        }
    }

    let mut editor = rustyline::Editor::<Commands, rustyline::history::DefaultHistory>::new().map_err(|e| e.to_string())?;
    editor.set_helper(Some(Commands));
    let history = history_file();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!("kai admin on {}; type help for commands, Ctrl-D to leave", admin.node);
    let result = loop {
        match editor.readline("kai> ") {
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                if line.trim() == "quit" {
                    break Ok(());
                }
                match admin.execute(&line) {
                    Ok(out) if out.is_empty() => {}
                    Ok(out) => println!("{out}"),
                    Err(e) => println!("error: {e}"),
                }
            }
            // Ctrl-C drops the line being typed; Ctrl-D leaves.
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        }
    };
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    result
}

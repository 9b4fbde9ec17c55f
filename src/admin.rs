//! The admin REPL: commands named after the original Kai's API, sent to a
//! node's internal API. Interactive with line editing and history on a
//! terminal; one command per line from a pipe; or `-e` for scripts.

use bytes::Bytes;
use kai_actors::api::admin::AdminCommand;
use kai_actors::api::auth::Secret;
use kai_actors::api::net::{self, Network};
use kai_actors::api::ApiClient;
use kai_actors::hash::{Buckets, Placement, PreferenceList};
use kai_actors::membership::serve::{DescribeNode, LinkNode, NodeList, NodeListAll, Remove};
use kai_actors::membership::{MemberRow, MemberState};
use kai_actors::node::{Block, PanicModule, ReloadCerts, RestartActor, Stats};
use kai_actors::store::serve::{MerkleRoot, StoredVersions};
use kai_actors::sync::{TransferProgress, Transfers};
use kai_actors::version::Version;
use kai_actors::Error;
use std::io::{BufRead, IsTerminal};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);
const ADMIN_NAME: &str = "kai-admin";

/// One command of the REPL: its words, its help, and what it runs. The
/// node answers it in the module that owns it (`AdminCommand`).
struct Command {
    name: &'static str,
    usage: &'static str,
    /// What it does; more lines for a longer story.
    help: &'static [&'static str],
    /// How many words may follow the name.
    args: std::ops::RangeInclusive<usize>,
    run: fn(&Admin, &[&str]) -> Result<String, String>,
}

/// Every command, in the order `help` lists them.
const COMMANDS: &[Command] = &[
    Command {
        name: "check_node",
        usage: "A B",
        help: &["tell node A about node B: A contacts B and they", "merge member lists (how nodes are linked)"],
        args: 2..=2,
        run: |admin, args| {
            let b = resolve(args[1])?.to_string();
            admin.ask(resolve(args[0])?, LinkNode { node: b })?;
            Ok(format!("{} linked with {}", args[0], args[1]))
        },
    },
    Command {
        name: "node_list",
        usage: "[all]",
        help: &[
            "every member: state (joining up down leaving",
            "removed), vnodes, buckets, keys, bytes, hints held",
            "here, buckets moving, last heartbeat, phi; members",
            "removed over tombstone_grace_secs ago only with all",
        ],
        args: 0..=1,
        run: |admin, args| match args {
            [] => Ok(admin.status_table(&admin.ask(admin.node, NodeList)?)),
            ["all"] => Ok(admin.status_table(&admin.ask(admin.node, NodeListAll)?)),
            _ => Err("node_list takes nothing, or all".into()),
        },
    },
    Command {
        name: "node_info",
        usage: "[NODE]",
        help: &["a node's identity and quorum"],
        args: 0..=1,
        run: |admin, args| {
            let i = admin.ask(admin.target(args)?, DescribeNode)?;
            Ok(format!(
                "node {}\nmemcache_port {}\nquorum {},{},{}\nnumber_of_buckets {}\nvirtual_nodes {}\nstore {}\nversion {}\nprotocol_version {}",
                i.node, i.memcache_port, i.n, i.r, i.w, i.number_of_buckets, i.virtual_nodes, i.store, i.version, i.protocol_version
            ))
        },
    },
    Command {
        name: "find_nodes",
        usage: "KEY",
        help: &["the key's preference list, home replicas first"],
        args: 1..=1,
        run: |admin, args| {
            let placement = admin.ask(admin.node, PreferenceList { key: Bytes::from(args[0].to_string()) })?;
            Ok(placement_lines(&placement).join("\n"))
        },
    },
    Command {
        name: "buckets",
        usage: "",
        help: &["the buckets this node holds, and the balance"],
        args: 0..=0,
        run: |admin, _| {
            let balance = admin.ask(admin.node, Buckets)?;
            let mut out = format!("{} holds {} buckets as a home replica", admin.node, balance.held.len());
            out.push_str(&format!("\nheld: {}", ranges(&balance.held)));
            out.push_str("\nbalance (buckets each node is a home replica of):");
            for (node, count) in balance.per_node {
                out.push_str(&format!("\n  {node} {count}"));
            }
            Ok(out)
        },
    },
    Command {
        name: "get",
        usage: "KEY",
        help: &["every version on each of the key's replicas"],
        args: 1..=1,
        run: |admin, args| admin.versions_on_replicas(args[0]),
    },
    Command {
        name: "stats",
        usage: "[NODE]",
        help: &["a node's stats"],
        args: 0..=1,
        run: |admin, args| {
            let stats = admin.ask(admin.target(args)?, Stats)?;
            Ok(stats.iter().map(|(name, value)| format!("{name} {value}")).collect::<Vec<_>>().join("\n"))
        },
    },
    Command {
        name: "remove_node",
        usage: "NODE",
        help: &["take NODE off the ring for good; its buckets move"],
        args: 1..=1,
        run: |admin, args| {
            let addr = resolve(args[0])?;
            admin.ask(admin.node, Remove { node: addr.to_string() })?;
            Ok(format!("{addr} leaves the ring: its buckets move to their new homes (node_list shows it leaving, then removed)"))
        },
    },
    Command {
        name: "transfers",
        usage: "",
        help: &["bucket transfers under way, with a progress bar"],
        args: 0..=0,
        run: |admin, _| Ok(progress_line(&admin.ask(admin.node, Transfers)?)),
    },
    Command {
        name: "merkle_root",
        usage: "[NODE]",
        help: &["a digest of the node's data (equal on replicas in sync)"],
        args: 0..=1,
        run: |admin, args| Ok(format!("{:016x}", admin.ask(admin.target(args)?, MerkleRoot)?)),
    },
    Command {
        name: "block",
        usage: "[NODE...]",
        help: &["test-only: cut this node off from NODEs (none: heal)"],
        args: 0..=usize::MAX,
        run: |admin, args| {
            let peers = args.iter().map(|p| resolve(p).map(|a| a.to_string())).collect::<Result<Vec<_>, _>>()?;
            let what = if peers.is_empty() { "healed".to_string() } else { format!("cut off from {}", peers.join(" ")) };
            admin.ask(admin.node, Block { peers })?;
            Ok(format!("{} {what}", admin.node))
        },
    },
    Command {
        name: "panic",
        usage: "MODULE",
        help: &["test-only: make a module's actor panic (or quorum:", "the next request's quorum actor)"],
        args: 1..=1,
        run: |admin, args| {
            admin.ask(admin.node, PanicModule { module: args[0].to_string() })?;
            Ok(format!("{} told to panic", args[0]))
        },
    },
    Command {
        name: "restart_actor",
        usage: "MODULE",
        help: &[
            "stop a module's actor so its supervisor restarts it",
            "(store hash membership version coordinator sync api memcache)",
        ],
        args: 1..=1,
        run: |admin, args| {
            admin.ask(admin.node, RestartActor { module: args[0].to_string() })?;
            Ok(format!("{} restarting", args[0]))
        },
    },
    Command {
        name: "reload_certs",
        usage: "[NODE]",
        help: &[
            "read a node's certificates and password files again (as SIGHUP);",
            "open connections keep theirs, and a file that fails changes nothing",
        ],
        args: 0..=1,
        run: |admin, args| {
            let node = admin.target(args)?;
            admin.ask(node, ReloadCerts)?;
            Ok(format!("{node}: certificates and password files read again"))
        },
    },
    Command { name: "help", usage: "", help: &["this text"], args: 0..=0, run: |_, _| Ok(help()) },
    Command { name: "quit", usage: "", help: &["leave the REPL"], args: 0..=0, run: |_, _| Ok(String::new()) },
];

/// The commands and what each does, from the table.
pub fn help() -> String {
    let mut out = String::from("commands:\n");
    for command in COMMANDS {
        let words = format!("{} {}", command.name, command.usage);
        for (i, line) in command.help.iter().enumerate() {
            let left = if i == 0 { words.as_str() } else { "" };
            out.push_str(&format!("  {left:<26}{line}\n"));
        }
    }
    out.push_str("NODE is a node's internal API address, HOST:PORT; the default is the node the REPL is on.");
    out
}

/// What the admin tool proves to a node, and the network it reaches it
/// over (plain TCP, or mutual TLS against the cluster CA).
pub struct Access {
    secret: Secret,
    network: Arc<dyn Network>,
    tls: bool,
}

impl Access {
    pub fn new(secret: &str, cluster_tls: Option<kai_actors::tls::TlsFiles>) -> Result<Access, String> {
        let secret = Secret::new(secret);
        let Some(files) = cluster_tls else { return Ok(Access { secret, network: net::tcp(), tls: false }) };
        let tls = kai_actors::tls::Tls::for_cluster(files).map_err(|e| format!("cluster TLS: {e}"))?;
        Ok(Access { secret, network: Arc::new(kai_actors::tls::TlsNetwork { inner: net::tcp(), tls }), tls: true })
    }

    /// What the operator may have left out, when a node refused or closed.
    fn hint(&self, error: &Error) -> &'static str {
        match (error, self.secret.is_set(), self.tls) {
            (Error::Refused(_), false, _) => " (give the admin tool the secret: --config FILE or KAI_CLUSTER_SECRET)",
            (Error::Refused(_), true, _) => "",
            (_, _, false) => " (if the cluster runs mutual TLS, give --config FILE naming its cluster_tls_* files)",
            _ => "",
        }
    }
}

struct Admin {
    runtime: tokio::runtime::Runtime,
    node: SocketAddr,
    access: Access,
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("bad address {addr:?}"))
}

impl Admin {
    /// Asks `node` an admin command, on a connection of the admin protocol.
    fn ask<C: AdminCommand>(&self, node: SocketAddr, command: C) -> Result<C::Reply, String> {
        self.runtime.block_on(async {
            let access = &self.access;
            let client = ApiClient::connect(access.network.as_ref(), node, ADMIN_NAME, None, &access.secret, TIMEOUT)
                .await
                .map_err(|e| format!("node {node} unreachable: {e}{}", access.hint(&e)))?;
            client.admin(&command, TIMEOUT).await.map_err(|e| e.to_string())
        })
    }

    /// The node named by a command's one optional word, or the REPL's own.
    fn target(&self, args: &[&str]) -> Result<SocketAddr, String> {
        args.first().map(|arg| resolve(arg)).unwrap_or(Ok(self.node))
    }

    /// Runs one command line; the text to show, or why it failed.
    fn execute(&self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((name, args)) = words.split_first() else { return Ok(String::new()) };
        match COMMANDS.iter().find(|c| c.name == *name) {
            Some(command) if command.args.contains(&args.len()) => (command.run)(self, args),
            Some(command) => Err(format!("wrong arguments for {name}: {name} {}; try help", command.usage)),
            None => Err(format!("unknown command {name:?}; try help")),
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
        let mut settings = Vec::new();
        for row in rows {
            let stats = match (row.state, resolve(&row.addr)) {
                (MemberState::Removed, _) | (_, Err(_)) => None,
                (_, Ok(addr)) => self.ask(addr, Stats).ok(),
            };
            if let Some(said) = stats.as_ref().and_then(quorum_and_version) {
                settings.push((row.addr.clone(), said));
            }
            let figure = |name: &str| kai_actors::stats::find(stats.as_ref()?, name).cloned();
            let stat = |name: &str| figure(name).map_or_else(|| "-".into(), |v| v.to_string());
            let heard = match row.heartbeat_age_ms {
                Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
                None => "never".into(),
            };
            let phi = if row.phi.is_finite() { format!("{:.1}", row.phi) } else { "inf".into() };
            let bytes = figure("bytes").and_then(|v| v.count()).map_or_else(|| "-".into(), human_bytes);
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
        let mut lines: Vec<String> = table
            .iter()
            .map(|r| {
                r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
            })
            .collect();
        lines.extend(settings_note(&settings));
        for (row, why) in rows.iter().filter_map(|row| Some((row, row.waiting.as_ref()?))) {
            lines.push(String::new());
            lines.push(format!("{} is {} and hears from no member; the last contact failed: {why}", row.addr, shown_state(row)));
        }
        lines.join("\n")
    }

    /// `get KEY`: asks each of the key's home replicas for its versions.
    fn versions_on_replicas(&self, key: &str) -> Result<String, String> {
        let key = Bytes::from(key.to_string());
        let placement = self.ask(self.node, PreferenceList { key: key.clone() })?;
        let mut out = Vec::new();
        for (node, _) in placement.nodes.iter().take(placement.n) {
            out.push(format!("{node}:"));
            match resolve(node).and_then(|addr| self.ask(addr, StoredVersions { key: key.clone() })) {
                Ok(versions) if versions.is_empty() => out.push("  (nothing)".into()),
                Ok(versions) => out.extend(versions.iter().map(|v| format!("  {}", describe(v)))),
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

/// A member's N,R,W and peer protocol version, from its stats.
fn quorum_and_version(stats: &kai_actors::stats::Stats) -> Option<String> {
    let figure = |name: &str| kai_actors::stats::find(stats, name).map(ToString::to_string);
    Some(format!("n,r,w {} peer protocol {}", figure("kai_quorum")?, figure("kai_peer_protocol_version")?))
}

/// When members' quorums or protocol versions differ, a note under the
/// table naming each (allowed, but worth knowing: each coordinator uses
/// its own R and W).
fn settings_note(settings: &[(String, String)]) -> Vec<String> {
    if settings.windows(2).all(|pair| pair[0].1 == pair[1].1) {
        return Vec::new();
    }
    let mut note = vec![String::new(), "note: members' settings differ (each coordinator uses its own R and W):".to_string()];
    note.extend(settings.iter().map(|(addr, said)| format!("  {addr} {said}")));
    note
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

/// Runs the admin tool against `node`, reaching it as `access` says.
pub fn run(node: &str, access: Access, execute: &[String]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let admin = Admin { runtime, node: resolve(node)?, access };
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
                .filter(|c| c.name.starts_with(word))
                .map(|c| Pair { display: c.name.to_string(), replacement: c.name.to_string() })
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

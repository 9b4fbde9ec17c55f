//! `kai`: run a node, or administer one.
//!
//! - `kai --config kai.config.toml [--set KEY=VALUE]...` starts a node.
//! - `kai admin [--node HOST:PORT] [-e COMMAND]...` opens the admin REPL.

/// glibc malloc showed up at a fifth of a node's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod config;
mod http;
mod metrics;
mod node;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kai", version, about = "A Dynamo-style key/value store with a memcache API")]
struct Cli {
    /// The node's config file.
    #[arg(long, short, default_value = "kai.config.toml")]
    config: PathBuf,
    /// Overrides one config key, e.g. `--set n=1`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Administer a node through its internal API.
    #[command(after_help = admin::help())]
    Admin {
        /// The node's internal API address.
        #[arg(long, default_value = "127.0.0.1:11011")]
        node: String,
        /// Runs a command and exits instead of opening the REPL; repeatable.
        /// Commands run in order, and the first that fails ends the run
        /// with its error and exit status 1 (those after it do not run).
        #[arg(short = 'e', long = "execute", value_name = "COMMAND")]
        execute: Vec<String>,
        /// A node config to take `cluster_secret` and the cluster's mutual
        /// TLS (`cluster_tls_*`) from (else the secret from the
        /// KAI_CLUSTER_SECRET environment variable, and plain TCP).
        #[arg(long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Logs to the log file (or standard error), in colour only on a terminal.
/// RUST_LOG wins over `log_level`; the storage engine's and actix's own
/// messages are kept to warnings unless asked for; start, stop and
/// membership changes are logged whatever the level.
fn init_logging(config: &config::Config) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let wanted = std::env::var("RUST_LOG")
        .unwrap_or_else(|_| format!("{},fjall=warn,lsm_tree=warn,actix_server=warn,actix_web=warn", config.log_level));
    let events = format!("{}=info", kai_actors::membership::EVENTS).parse().expect("a valid directive");
    let filter = EnvFilter::try_new(&wanted).map_err(|e| format!("RUST_LOG {wanted:?}: {e}"))?.add_directive(events);
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.logfile.as_deref() {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open logfile {}: {e}", path.display()))?;
            builder.with_ansi(false).with_writer(std::sync::Mutex::new(file)).init();
        }
        None => builder.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).init(),
    }
    Ok(())
}

/// How the admin tool reaches a node: the cluster secret and mutual TLS
/// from `--config FILE`, else the secret from KAI_CLUSTER_SECRET and plain
/// TCP.
fn admin_access(config: Option<&std::path::Path>) -> Result<admin::Access, String> {
    let access = match config {
        Some(path) => config::admin_access(path).map_err(|e| e.to_string())?,
        None => config::AdminAccess { secret: std::env::var("KAI_CLUSTER_SECRET").unwrap_or_default(), cluster_tls: None },
    };
    admin::Access::new(&access.secret, access.cluster_tls)
}

/// Turns transparent huge pages off for this process. The allocator asks
/// for them; a first touch of one zeroes 2 MiB inside whatever request
/// faulted, and the disk engine's memtables fault fresh ones all the time:
/// with them off its p99 halves (6.5 → 3.2 ms on three nodes, BENCHMARKS.md)
/// and nothing measured gets slower.
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes no pointers; it sets a flag on this
    // process's address space. On failure (an old kernel) huge pages stay on.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Admin { node, execute, config }) => {
            admin_access(config.as_deref()).and_then(|access| admin::run(&node, access, &execute))
        }
        None => config::load(Some(&cli.config), &cli.overrides).map_err(|e| e.to_string()).and_then(|config| {
            init_logging(&config)?;
            no_huge_pages();
            node::run(config)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kai: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Runs the deterministic cluster simulation over many seeds, or one.
//!
//!     cargo run --release --example simulate -- --seeds 10000
//!     cargo run --release --example simulate -- --seed 42 [--trace] [--log]
//!
//! `--without "crash,pause"` leaves those kinds of fault out;
//! `--misbehave drop-writes:1000|keep-removed|no-anti-entropy` makes every
//! node's disk (or anti-entropy) misbehave, to show the checks catch it.
//!
//! Each seed is a five-node cluster on the node's own actors, clients
//! writing, reading, deleting and incrementing through random nodes while
//! partitions come and go; then the checks. The summary's last line is
//! `violations: N`; a single seed's run ends with `digest <hex>`.

use kai_actors::sim::{self, Plan};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The plan the flags ask for: `--misbehave WHAT`, `--without KINDS`.
fn plan_from(args: &[String]) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let after = |flag: &str| args.iter().position(|a| a == flag).map(|i| args.get(i + 1));
    match after("--misbehave") {
        Some(Some(what)) => plan.misbehave = Some(what.parse()?),
        Some(None) => return Err("--misbehave takes drop-writes:N, keep-removed or no-anti-entropy".into()),
        None => {}
    }
    match after("--without") {
        Some(Some(kinds)) => {
            for kind in kinds.split(',') {
                if !sim::FAULT_KINDS.contains(&kind) {
                    return Err(format!("no fault kind {kind:?}; kinds: {}", sim::FAULT_KINDS.join(", ")));
                }
                plan.fault_kinds.retain(|k| *k != kind);
            }
            if plan.fault_kinds.is_empty() {
                plan.faults = false;
            }
        }
        Some(None) => return Err("--without takes kinds of fault, comma-separated".into()),
        None => {}
    }
    Ok(plan)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value =
        |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).and_then(|v| v.parse::<u64>().ok());
    let plan = match plan_from(&args) {
        Ok(plan) => plan,
        Err(why) => {
            eprintln!("{why}");
            std::process::exit(2);
        }
    };
    if args.iter().any(|a| a == "--log") {
        // The nodes' own logs (RUST_LOG, default debug), in simulated order.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "debug".into());
        tracing_subscriber::fmt().with_env_filter(filter).without_time().with_writer(std::io::stderr).init();
    }
    if let Some(seed) = value("--seed") {
        let outcome = sim::run(seed, &plan);
        if args.iter().any(|a| a == "--trace") {
            outcome.trace.iter().for_each(|line| println!("{line}"));
        }
        outcome.violations.iter().for_each(|v| println!("violation: {v}"));
        println!(
            "seed {seed}: {} ops, {} acknowledged writes, {:.1} simulated s",
            outcome.ops,
            outcome.acked,
            outcome.simulated.as_secs_f64()
        );
        println!("digest {:016x}", outcome.digest);
        std::process::exit(if outcome.violations.is_empty() { 0 } else { 1 });
    }
    let seeds = value("--seeds").unwrap_or(100);
    let first = value("--from").unwrap_or(0);
    let started = Instant::now();
    let (mut simulated, mut ops, mut acked) = (Duration::ZERO, 0, 0);
    let mut settled: Vec<Duration> = Vec::new();
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut violations: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for seed in first..first + seeds {
        let outcome = sim::run(seed, &plan);
        simulated += outcome.simulated;
        ops += outcome.ops;
        acked += outcome.acked;
        settled.extend(outcome.settled);
        outcome.faults.iter().for_each(|(kind, n)| *faults.entry(kind).or_default() += n);
        for v in &outcome.violations {
            let checker = v.split(':').next().unwrap_or(v).to_string();
            violations.entry(checker).or_default().push(seed);
            eprintln!("seed {seed}: {v}");
        }
    }
    let real = started.elapsed();
    println!("seeds: {seeds} (from {first})");
    println!("requests: {ops}, acknowledged writes: {acked}");
    println!(
        "simulated: {:.2} h in {:.1} s real ({:.0} simulated s a real s)",
        simulated.as_secs_f64() / 3600.0,
        real.as_secs_f64(),
        simulated.as_secs_f64() / real.as_secs_f64().max(1e-9)
    );
    settled.sort();
    if let (Some(median), Some(worst)) = (settled.get(settled.len() / 2), settled.last()) {
        println!("settled after the last fault healed: median {median:.1?}, at most {worst:.1?} (simulated)");
    }
    for (kind, n) in &faults {
        println!("faults: {kind}: {n}");
    }
    let total: usize = violations.values().map(|seeds| seeds.len()).sum();
    for (checker, seeds) in &violations {
        let mut distinct = seeds.clone();
        distinct.dedup();
        println!("violations: {checker}: {} (seeds {:?})", seeds.len(), &distinct[..distinct.len().min(10)]);
    }
    println!("violations: {total}");
}

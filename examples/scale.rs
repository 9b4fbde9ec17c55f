//! The ring at scale, in simulation (the pure core, no sockets): build and
//! update time for a membership change, balance of buckets and keys per
//! node, and what a join moves. Figures for SCALE.md.
//!
//!     cargo run --release --example scale

use kai_actors::hash::{Ring, RingNode, MAX_BUCKETS};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

const N: usize = 3;
const VNODES: u16 = 128;

fn node(i: u32) -> RingNode {
    node_with(i, VNODES)
}

fn node_with(i: u32, vnodes: u16) -> RingNode {
    let ip = Ipv4Addr::from(0x0A00_0000 + i);
    RingNode::new(SocketAddrV4::new(ip, 11011), vnodes)
}

/// Max over mean of per-node counts (1.0 is perfect balance).
fn spread(counts: impl Iterator<Item = u64>, nodes: usize) -> f64 {
    let counts: Vec<u64> = counts.collect();
    let mean = counts.iter().sum::<u64>() as f64 / nodes as f64;
    *counts.iter().max().unwrap_or(&0) as f64 / mean
}

/// Max over mean of keys per node, counting every home replica of 20,000
/// keys a node.
fn home_key_spread(ring: &Ring, nodes: u32) -> f64 {
    let mut keys: HashMap<SocketAddrV4, u64> = HashMap::new();
    for k in 0..nodes as u64 * 20_000 {
        for node in ring.find_nodes(format!("key:{k}").as_bytes(), N) {
            *keys.entry(*node).or_default() += 1;
        }
    }
    spread(keys.values().copied(), nodes as usize)
}

fn main() {
    build_and_update();
    balance();
    balance_by_virtual_nodes();
    twice_the_virtual_nodes();
}

/// How long a ring takes to build, and a join to update it.
fn build_and_update() {
    println!("## Ring build and update ({VNODES} vnodes a node, N = {N})\n");
    println!("| nodes | buckets | build | a join (update_nodes) | buckets whose home changed | share of buckets |");
    println!("|---|---|---|---|---|---|");
    for (nodes, buckets) in [(100u32, 1024u32), (1000, 16384), (5000, 65536)] {
        let started = Instant::now();
        let ring = Ring::new(buckets, (0..nodes).map(node));
        let build = started.elapsed();
        let started = Instant::now();
        let (next, moved) = ring.update_nodes(&[node(nodes)], &[], N);
        let update = started.elapsed();
        assert_eq!(next.len(), nodes as usize + 1);
        println!(
            "| {nodes} | {buckets} | {:.1} ms | {:.1} ms | {} | {:.2}% (≈ N/n = {:.2}%) |",
            build.as_secs_f64() * 1e3,
            update.as_secs_f64() * 1e3,
            moved.len(),
            100.0 * moved.len() as f64 / buckets as f64,
            100.0 * N as f64 / (nodes + 1) as f64
        );
    }
}

/// Buckets and keys per node against the mean.
fn balance() {
    println!("\n## Balance: max/mean buckets (home replicas) and keys (first replica) per node\n");
    println!("| nodes | buckets | buckets max/mean | keys max/mean (20,000 keys a node) |");
    println!("|---|---|---|---|");
    for nodes in [10u32, 100, 1000] {
        for buckets in [1024u32, 4096, 16384, 65536] {
            if buckets < nodes {
                continue;
            }
            let ring = Ring::new(buckets, (0..nodes).map(node));
            let (_, home) = ring.bucket_counts(N);
            let mut keys: HashMap<SocketAddrV4, u64> = HashMap::new();
            let total_keys = nodes as u64 * 20_000;
            for k in 0..total_keys {
                let key = format!("key:{k}");
                *keys.entry(ring.find_nodes(key.as_bytes(), 1)[0]).or_default() += 1;
            }
            println!(
                "| {nodes} | {buckets} | {:.3} | {:.3} |",
                spread(home.values().map(|c| *c as u64), nodes as usize),
                spread(keys.values().copied(), nodes as usize)
            );
        }
    }
}

/// Where more virtual nodes or buckets bring the busiest node under 1.1.
fn balance_by_virtual_nodes() {
    println!("\n## Buckets max/mean (home replicas) by virtual nodes and buckets\n");
    println!("Past 65,536 buckets (marked *) is beyond what `number_of_buckets` may be: the same placement, for the figure.\n");
    let bucket_counts = [1024u32, 4096, 16384, 65536, 1 << 18, 1 << 20];
    let header: Vec<String> = bucket_counts.iter().map(|b| format!("{b}{}", if *b > MAX_BUCKETS { "*" } else { "" })).collect();
    println!("| nodes | vnodes | {} | smallest under 1.1 | keys max/mean there |", header.join(" | "));
    println!("|---|---|{}---|---|", "---|".repeat(bucket_counts.len()));
    for nodes in [10u32, 100, 1000] {
        for vnodes in [128u16, 256, 512] {
            let mut cells = Vec::new();
            let mut under = None;
            for &buckets in &bucket_counts {
                if buckets < nodes * 16 {
                    cells.push("-".to_string());
                    continue;
                }
                let ring = Ring::new(buckets, (0..nodes).map(|i| node_with(i, vnodes)));
                let (_, home) = ring.bucket_counts(N);
                let spread = spread(home.values().map(|c| *c as u64), nodes as usize);
                if spread < 1.1 && under.is_none() {
                    under = Some((buckets, home_key_spread(&ring, nodes)));
                }
                cells.push(format!("{spread:.3}"));
            }
            let (smallest, keys) = match under {
                Some((buckets, keys)) => (buckets.to_string(), format!("{keys:.3}")),
                None => ("none".to_string(), "-".to_string()),
            };
            println!("| {nodes} | {vnodes} | {} | {smallest} | {keys} |", cells.join(" | "));
        }
    }
}

/// A node given twice the virtual nodes holds about twice the buckets.
fn twice_the_virtual_nodes() {
    println!("\n## A node with twice the virtual nodes\n");
    let mut nodes: Vec<RingNode> = (0..9).map(node).collect();
    nodes.push(RingNode::new(node(9).addr, VNODES * 2));
    let ring = Ring::new(4096, nodes);
    let (first, home) = ring.bucket_counts(N);
    for (what, counts) in [("first replica of", &first), ("home replica of (N = 3)", &home)] {
        let others: f64 = (0..9).map(|i| counts[&node(i).addr] as f64).sum::<f64>() / 9.0;
        let big = counts[&node(9).addr];
        println!(
            "- buckets {what}: 128-vnode nodes {others:.0} on average, the 256-vnode node {big} ({:.2}×)",
            big as f64 / others
        );
    }
}

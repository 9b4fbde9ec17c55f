//! A memcache load generator: many connections, pipelined requests, a
//! get:set mix, fixed-size values over a key space, for a bounded time.
//! Prints ops/s, errors and latency quantiles. Works against Kai or
//! memcached alike.
//!
//! cargo run --release --example load -- --servers 127.0.0.1:11211 \
//!     --connections 50 --depth 1 --get-ratio 0.9 --value-size 1024 --seconds 10

use clap::Parser;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Comma-separated memcache addresses; connections are spread over them.
    #[arg(long, default_value = "127.0.0.1:11211", value_delimiter = ',')]
    servers: Vec<String>,
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Requests sent back to back before reading their replies.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Fraction of requests that are gets (the rest are sets).
    #[arg(long, default_value_t = 0.9)]
    get_ratio: f64,
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Client threads (the machine's cores are shared with the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A label for the result line.
    #[arg(long, default_value = "target")]
    label: String,
}

#[derive(Default)]
struct Tally {
    ops: u64,
    errors: u64,
    latency: Option<Histogram<u64>>,
}

/// Consumes one whole reply from the front of `buf`: (bytes, was it an error).
fn take_reply(buf: &[u8]) -> Option<(usize, bool)> {
    let mut at = 0;
    loop {
        let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let line = &buf[at..end];
        at = end + 2;
        if let Some(header) = line.strip_prefix(b"VALUE ") {
            let len: usize = std::str::from_utf8(header).ok()?.split(' ').nth(2)?.parse().ok()?;
            if buf.len() < at + len + 2 {
                return None;
            }
            at += len + 2;
            continue;
        }
        let error = line.starts_with(b"SERVER_ERROR") || line.starts_with(b"CLIENT_ERROR") || line == b"ERROR";
        return Some((at, error));
    }
}

async fn connection(args: Arc<Args>, server: String, seed: u64, deadline: Instant) -> std::io::Result<Tally> {
    let mut stream = TcpStream::connect(&server).await?;
    stream.set_nodelay(true)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let value = vec![b'v'; args.value_size];
    let mut tally = Tally { latency: Some(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()), ..Default::default() };
    let mut out = Vec::with_capacity(args.depth * (args.value_size + 64));
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        out.clear();
        for _ in 0..args.depth {
            let key = rng.gen_range(0..args.keys);
            if rng.gen_bool(args.get_ratio) {
                out.extend_from_slice(format!("get key:{key}\r\n").as_bytes());
            } else {
                out.extend_from_slice(format!("set key:{key} 0 0 {}\r\n", value.len()).as_bytes());
                out.extend_from_slice(&value);
                out.extend_from_slice(b"\r\n");
            }
        }
        let started = Instant::now();
        stream.write_all(&out).await?;
        let mut replies = 0;
        while replies < args.depth {
            match take_reply(&buf) {
                Some((used, error)) => {
                    buf.drain(..used);
                    replies += 1;
                    tally.errors += u64::from(error);
                }
                None => {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(std::io::Error::other("server closed the connection"));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        let micros = started.elapsed().as_micros().max(1) as u64;
        let latency = tally.latency.as_mut().unwrap();
        for _ in 0..args.depth {
            latency.saturating_record(micros);
        }
        tally.ops += args.depth as u64;
    }
    Ok(tally)
}

/// Sets every key once so gets hit.
async fn populate(args: &Args) -> std::io::Result<()> {
    let value = vec![b'v'; args.value_size];
    let mut stream = TcpStream::connect(&args.servers[0]).await?;
    let mut buf = Vec::new();
    for batch in (0..args.keys).collect::<Vec<_>>().chunks(100) {
        let mut out = Vec::new();
        for key in batch {
            out.extend_from_slice(format!("set key:{key} 0 0 {} noreply\r\n", value.len()).as_bytes());
            out.extend_from_slice(&value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"version\r\n");
        stream.write_all(&out).await?;
        buf.clear();
        while !buf.ends_with(b"\r\n") {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed while populating"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(())
}

fn main() {
    let args = Arc::new(Args::parse());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build().unwrap();
    runtime.block_on(async {
        if let Err(e) = populate(&args).await {
            eprintln!("populate failed: {e}");
            std::process::exit(1);
        }
        let started = Instant::now();
        let deadline = started + Duration::from_secs(args.seconds);
        let tasks: Vec<_> = (0..args.connections)
            .map(|i| {
                let server = args.servers[i % args.servers.len()].clone();
                tokio::spawn(connection(args.clone(), server, i as u64, deadline))
            })
            .collect();
        let mut total = Tally { latency: Some(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()), ..Default::default() };
        let mut failed_connections = 0;
        for task in tasks {
            match task.await {
                Ok(Ok(t)) => {
                    total.ops += t.ops;
                    total.errors += t.errors;
                    total.latency.as_mut().unwrap().add(t.latency.unwrap()).unwrap();
                }
                _ => failed_connections += 1,
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let h = total.latency.unwrap();
        println!(
            "{label}: {ops:.0} ops/s  errors {errors}  failed_connections {failed_connections}  p50 {p50} us  p99 {p99} us  p99.9 {p999} us  ({conns} conns, depth {depth}, get {ratio}, {size} B, {secs} s)",
            label = args.label,
            ops = total.ops as f64 / elapsed,
            errors = total.errors,
            p50 = h.value_at_quantile(0.5),
            p99 = h.value_at_quantile(0.99),
            p999 = h.value_at_quantile(0.999),
            conns = args.connections,
            depth = args.depth,
            ratio = args.get_ratio,
            size = args.value_size,
            secs = args.seconds,
        );
    });
}

#[cfg(test)]
mod tests {
    use super::take_reply;

    #[test]
    fn replies_are_framed() {
        assert_eq!(take_reply(b"STORED\r\n"), Some((8, false)));
        assert_eq!(take_reply(b"VALUE k 0 3\r\nabc\r\nEND\r\nX"), Some((23, false)));
        assert_eq!(take_reply(b"VALUE k 0 3\r\nab"), None);
        assert_eq!(take_reply(b"SERVER_ERROR busy\r\n"), Some((19, true)));
    }
}

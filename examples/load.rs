//! A memcache load generator: many connections, pipelined requests, a
//! get:set mix, fixed-size values over a key space, for a bounded time.
//! Prints ops/s, errors and latency quantiles. Works against Kai or
//! memcached alike.
//!
//! Built not to be the bottleneck: each client thread runs its own
//! single-threaded event loop over its share of the connections (no work
//! stealing, no locks), every request is encoded once before the run, and
//! replies are framed in place with `memchr`, never copied or reformatted.
//! The benchmark scripts show it: one more client thread does not raise
//! memcached's figure.
//!
//! cargo run --release --example load -- --servers 127.0.0.1:11211 \
//!     --connections 50 --depth 1 --get-ratio 0.9 --value-size 1024 --seconds 10
//!
//! `--tls-ca CA.pem` speaks TLS (rustls), to Kai's TLS port or memcached's
//! `-Z`, verifying the servers against that CA.

use clap::Parser;
use hdrhistogram::Histogram;
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
    #[arg(long, default_value_t = 20_000)]
    keys: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Client threads, each with its own event loop and share of the
    /// connections (the machine's cores are shared with the server).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Skip setting every key before the run (it is already populated).
    #[arg(long)]
    no_populate: bool,
    /// A label for the result line.
    #[arg(long, default_value = "target")]
    label: String,
    /// Speak TLS, trusting the servers' certificates from this CA (PEM).
    #[arg(long, value_name = "CA_PEM")]
    tls_ca: Option<std::path::PathBuf>,
}

/// A connection to a server, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Stream for S {}

/// The TLS client every connection shares, when the run speaks TLS.
fn tls_connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    static CONNECTOR: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();
    CONNECTOR.get_or_init(|| make_connector(ca)).clone()
}

fn make_connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("the CA file").map(|c| c.expect("a PEM certificate")) {
        roots.add(cert).expect("a CA certificate");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Opens a connection to `server`, with TLS when the run speaks it.
async fn dial(args: &Args, server: &str) -> std::io::Result<Box<dyn Stream>> {
    let stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let Some(ca) = &args.tls_ca else { return Ok(Box::new(stream)) };
    let host = server.rsplit_once(':').map_or(server, |(host, _)| host).to_string();
    let name = rustls::pki_types::ServerName::try_from(host).map_err(std::io::Error::other)?;
    Ok(Box::new(tls_connector(ca).connect(name, stream).await?))
}

/// Every request of a run, encoded once: key i's get and set.
struct Requests {
    gets: Vec<Box<[u8]>>,
    sets: Vec<Box<[u8]>>,
}

impl Requests {
    fn new(keys: usize, value_size: usize) -> Self {
        let value = vec![b'v'; value_size];
        let gets = (0..keys).map(|k| format!("get key:{k}\r\n").into_bytes().into_boxed_slice()).collect();
        let sets = (0..keys)
            .map(|k| {
                let mut set = format!("set key:{k} 0 0 {value_size}\r\n").into_bytes();
                set.extend_from_slice(&value);
                set.extend_from_slice(b"\r\n");
                set.into_boxed_slice()
            })
            .collect();
        Requests { gets, sets }
    }
}

/// What one reply was.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// A get that found its value.
    Hit,
    /// A get that found nothing: counted, so a miss never passes for speed.
    Miss,
    Ok,
    /// `SERVER_ERROR busy`: load shed on purpose.
    Busy,
    Error,
}

/// Frames one whole reply at the front of `buf`: its length and kind.
fn take_reply(buf: &[u8]) -> Option<(usize, Reply)> {
    let (mut at, mut values) = (0, 0);
    loop {
        let end = memchr::memmem::find(&buf[at..], b"\r\n")? + at;
        let line = &buf[at..end];
        at = end + 2;
        if let Some(header) = line.strip_prefix(b"VALUE ") {
            // "VALUE <key> <flags> <bytes> [<cas>]"
            let len: usize = std::str::from_utf8(header.split(|b| *b == b' ').nth(2)?).ok()?.parse().ok()?;
            if buf.len() < at + len + 2 {
                return None;
            }
            at += len + 2;
            values += 1;
            continue;
        }
        let kind = if line == b"END" {
            if values > 0 {
                Reply::Hit
            } else {
                Reply::Miss
            }
        } else if line.starts_with(b"SERVER_ERROR busy") {
            Reply::Busy
        } else if line.starts_with(b"SERVER_ERROR") || line.starts_with(b"CLIENT_ERROR") || line == b"ERROR" {
            Reply::Error
        } else {
            Reply::Ok
        };
        return Some((at, kind));
    }
}

/// A small, fast generator (xorshift64*): the load's choices, not crypto.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

struct Tally {
    ops: u64,
    hits: u64,
    misses: u64,
    busy: u64,
    errors: u64,
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Tally { ops: 0, hits: 0, misses: 0, busy: 0, errors: 0, latency: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap() }
    }
    fn add(&mut self, other: Tally) {
        self.ops += other.ops;
        self.hits += other.hits;
        self.misses += other.misses;
        self.busy += other.busy;
        self.errors += other.errors;
        self.latency.add(other.latency).unwrap();
    }
}

async fn connection(
    args: Arc<Args>,
    requests: Arc<Requests>,
    server: String,
    seed: u64,
    deadline: Instant,
) -> std::io::Result<Tally> {
    let mut stream = dial(&args, &server).await?;
    let mut dice = Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut tally = Tally::new();
    let mut out = Vec::with_capacity(args.depth * (args.value_size + 64));
    let mut buf = vec![0u8; 256 * 1024];
    while Instant::now() < deadline {
        out.clear();
        for _ in 0..args.depth {
            let key = dice.below(args.keys);
            let request = if dice.chance(args.get_ratio) { &requests.gets[key] } else { &requests.sets[key] };
            out.extend_from_slice(request);
        }
        let started = Instant::now();
        stream.write_all(&out).await?;
        stream.flush().await?;
        let (mut start, mut end, mut replies) = (0, 0, 0);
        while replies < args.depth {
            match take_reply(&buf[start..end]) {
                Some((used, kind)) => {
                    start += used;
                    replies += 1;
                    match kind {
                        Reply::Ok => {}
                        Reply::Hit => tally.hits += 1,
                        Reply::Miss => tally.misses += 1,
                        Reply::Busy => tally.busy += 1,
                        Reply::Error => tally.errors += 1,
                    }
                }
                None => {
                    if end == buf.len() {
                        // Move the unfinished reply to the front for room.
                        buf.copy_within(start..end, 0);
                        (start, end) = (0, end - start);
                        if end == buf.len() {
                            buf.resize(buf.len() * 2, 0);
                        }
                    }
                    let n = stream.read(&mut buf[end..]).await?;
                    if n == 0 {
                        return Err(std::io::Error::other("server closed the connection"));
                    }
                    end += n;
                }
            }
        }
        let micros = started.elapsed().as_micros().max(1) as u64;
        tally.latency.saturating_record_n(micros, args.depth as u64);
        tally.ops += args.depth as u64;
    }
    Ok(tally)
}

/// Sets every key once, through the first server, so gets hit (a
/// cluster's nodes share the keys: one node's writes serve all).
async fn populate(args: &Args, requests: &Requests) -> std::io::Result<()> {
    let mut stream = dial(args, &args.servers[0]).await?;
    // Batches within one TLS record: memcached -Z (1.6.18) stalls on a
    // batch of sets that spans several records.
    for batch in requests.sets.chunks(8) {
        let mut out = Vec::new();
        for set in batch {
            out.extend_from_slice(set);
        }
        stream.write_all(&out).await?;
        stream.flush().await?;
        let mut buf = Vec::new();
        let mut replies = 0;
        while replies < batch.len() {
            match take_reply(&buf) {
                Some((used, _)) => {
                    buf.drain(..used);
                    replies += 1;
                }
                None => {
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(std::io::Error::other("closed while populating"));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
    Ok(())
}

/// One client thread: its own event loop, running its share of connections.
fn client_thread(args: Arc<Args>, requests: Arc<Requests>, connections: Vec<usize>, deadline: Instant) -> (Tally, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio::task::LocalSet::new().block_on(&runtime, async move {
        let tasks: Vec<_> = connections
            .into_iter()
            .map(|i| {
                let server = args.servers[i % args.servers.len()].clone();
                tokio::task::spawn_local(connection(args.clone(), requests.clone(), server, i as u64 + 1, deadline))
            })
            .collect();
        let (mut total, mut failed) = (Tally::new(), 0);
        for task in tasks {
            match task.await {
                Ok(Ok(t)) => total.add(t),
                Ok(Err(e)) => {
                    eprintln!("a connection failed: {e}");
                    failed += 1;
                }
                Err(_) => failed += 1,
            }
        }
        (total, failed)
    })
}

fn main() {
    let args = Arc::new(Args::parse());
    let requests = Arc::new(Requests::new(args.keys, args.value_size));
    if !args.no_populate {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        if let Err(e) = runtime.block_on(populate(&args, &requests)) {
            eprintln!("populate failed: {e}");
            std::process::exit(1);
        }
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let threads = args.threads.max(1);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mine: Vec<usize> = (0..args.connections).filter(|i| i % threads == t).collect();
            let (args, requests) = (args.clone(), requests.clone());
            std::thread::spawn(move || client_thread(args, requests, mine, deadline))
        })
        .collect();
    let (mut total, mut failed_connections) = (Tally::new(), 0);
    for handle in handles {
        let (tally, failed) = handle.join().expect("a client thread panicked");
        total.add(tally);
        failed_connections += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let h = &total.latency;
    println!(
        "{label}: {ops:.0} ops/s  errors {errors}  busy {busy}  failed_connections {failed_connections}  get hits {hit_rate:.1}%  p50 {p50} us  p99 {p99} us  p99.9 {p999} us  ({conns} conns, {threads} threads, depth {depth}, get {ratio}, {size} B, {secs} s)",
        label = args.label,
        ops = total.ops as f64 / elapsed,
        errors = total.errors,
        busy = total.busy,
        hit_rate = 100.0 * total.hits as f64 / (total.hits + total.misses).max(1) as f64,
        p50 = h.value_at_quantile(0.5),
        p99 = h.value_at_quantile(0.99),
        p999 = h.value_at_quantile(0.999),
        conns = args.connections,
        depth = args.depth,
        ratio = args.get_ratio,
        size = args.value_size,
        secs = args.seconds,
    );
}

#[cfg(test)]
mod tests {
    use super::{take_reply, Reply};

    #[test]
    fn replies_are_framed() {
        assert_eq!(take_reply(b"STORED\r\n"), Some((8, Reply::Ok)));
        assert_eq!(take_reply(b"VALUE k 0 3\r\nabc\r\nEND\r\nX"), Some((23, Reply::Hit)));
        assert_eq!(take_reply(b"END\r\n"), Some((5, Reply::Miss)));
        assert_eq!(take_reply(b"VALUE k 0 3\r\nab"), None);
        assert_eq!(take_reply(b"SERVER_ERROR busy\r\n"), Some((19, Reply::Busy)));
        assert_eq!(take_reply(b"SERVER_ERROR out of memory\r\n"), Some((28, Reply::Error)));
    }
}

//! The simulator's network: in-memory links with TCP's promises (bytes
//! arrive in order, once) and its failures. A link cut in one direction
//! holds the bytes sent across it, as retransmissions would, and delivers
//! them when it heals, unless the connection is reset first; a connect
//! across a cut waits, as a lost SYN does, until the caller gives up.

use crate::api::net::{Accepted, Conn, Listener, Network};
use futures_util::future::BoxFuture;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

/// How often a held link looks again whether it healed.
const HELD_POLL: Duration = Duration::from_millis(5);

type Incoming = mpsc::UnboundedSender<(Conn, SocketAddr)>;

struct WorldState {
    listeners: BTreeMap<SocketAddrV4, Incoming>,
    /// Directed cuts, counted (faults overlap): bytes from the first to
    /// the second are held while any stands.
    cut: BTreeMap<(SocketAddrV4, SocketAddrV4), u32>,
    faults: BTreeMap<&'static str, u64>,
    rng: rand::rngs::StdRng,
    /// Bytes delivered, a link at a time: part of a run's trace.
    delivered: BTreeMap<(SocketAddrV4, SocketAddrV4), u64>,
}

/// Every node's network, shared: who listens where, and which links are cut.
#[derive(Clone)]
pub struct World(Arc<Mutex<WorldState>>);

impl World {
    pub fn new(seed: u64) -> Self {
        World(Arc::new(Mutex::new(WorldState {
            listeners: BTreeMap::new(),
            cut: BTreeMap::new(),
            faults: BTreeMap::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            delivered: BTreeMap::new(),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WorldState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A node's view of the network, and its listener.
    pub fn attach(&self, me: SocketAddrV4) -> (Arc<dyn Network>, Arc<dyn Listener>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state().listeners.insert(me, tx);
        (Arc::new(SimNet { me, world: self.clone() }), Arc::new(SimListener(tokio::sync::Mutex::new(rx))))
    }

    /// A fault of some kind: these links cut (what each first node sends
    /// the second is held) until `lift`.
    pub fn apply(&self, kind: &'static str, links: &[(SocketAddrV4, SocketAddrV4)]) {
        let mut state = self.state();
        *state.faults.entry(kind).or_default() += 1;
        for link in links {
            *state.cut.entry(*link).or_default() += 1;
        }
    }

    /// Ends one fault's cuts (others may still hold the same links).
    pub fn lift(&self, links: &[(SocketAddrV4, SocketAddrV4)]) {
        let mut state = self.state();
        for link in links {
            if let Some(count) = state.cut.get_mut(link) {
                *count -= 1;
                if *count == 0 {
                    state.cut.remove(link);
                }
            }
        }
    }

    /// Faults applied so far, by kind.
    pub fn fault_counts(&self) -> BTreeMap<&'static str, u64> {
        self.state().faults.clone()
    }

    /// Lifts every fault's cuts at once.
    pub fn heal_all(&self) {
        self.state().cut.clear();
    }

    fn is_cut(&self, from: SocketAddrV4, to: SocketAddrV4) -> bool {
        self.state().cut.contains_key(&(from, to))
    }

    /// One delivery's delay: 50-250 µs, drawn from the run's seed.
    fn latency(&self) -> Duration {
        Duration::from_micros(self.state().rng.gen_range(50..250))
    }

    /// Bytes delivered on every link so far, in link order.
    pub fn delivered(&self) -> Vec<((SocketAddrV4, SocketAddrV4), u64)> {
        self.state().delivered.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

fn conn(stream: DuplexStream) -> Conn {
    let (reader, writer) = tokio::io::split(stream);
    Conn { reader: Box::new(reader), writer: Box::new(writer) }
}

struct SimNet {
    me: SocketAddrV4,
    world: World,
}

impl Network for SimNet {
    fn connect(&self, peer: SocketAddr) -> BoxFuture<'static, io::Result<Conn>> {
        let (me, world) = (self.me, self.world.clone());
        Box::pin(async move {
            let SocketAddr::V4(peer) = peer else { return Err(io::ErrorKind::AddrNotAvailable.into()) };
            // A SYN across a cut is lost, and retried until the caller gives up.
            while world.is_cut(me, peer) || world.is_cut(peer, me) {
                tokio::time::sleep(HELD_POLL).await;
            }
            tokio::time::sleep(world.latency()).await;
            let Some(incoming) = world.state().listeners.get(&peer).cloned() else {
                return Err(io::ErrorKind::ConnectionRefused.into());
            };
            let (client, client_far) = tokio::io::duplex(64 << 10);
            let (server, server_far) = tokio::io::duplex(64 << 10);
            let (client_out, client_in) = tokio::io::split(client_far);
            let (server_out, server_in) = tokio::io::split(server_far);
            incoming.send((conn(server), SocketAddr::V4(me))).map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
            tokio::spawn(world.clone().pump_halves(me, peer, client_out, server_in));
            tokio::spawn(world.pump_halves(peer, me, server_out, client_in));
            Ok(conn(client))
        })
    }
}

impl World {
    /// Moves bytes one way across a link, in order, holding them while
    /// the link is cut; ends when either side closes.
    async fn pump_halves(
        self,
        from: SocketAddrV4,
        to: SocketAddrV4,
        source: tokio::io::ReadHalf<DuplexStream>,
        sink: tokio::io::WriteHalf<DuplexStream>,
    ) {
        let mut buf = vec![0u8; 16 << 10];
        let (mut source, mut sink) = (source, sink);
        loop {
            let n = match source.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            while self.is_cut(from, to) {
                tokio::time::sleep(HELD_POLL).await;
            }
            tokio::time::sleep(self.latency()).await;
            if sink.write_all(&buf[..n]).await.is_err() {
                break;
            }
            *self.state().delivered.entry((from, to)).or_default() += n as u64;
        }
        let _ = sink.shutdown().await;
    }
}

struct SimListener(tokio::sync::Mutex<mpsc::UnboundedReceiver<(Conn, SocketAddr)>>);

impl Listener for SimListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Accepted, SocketAddr)>> {
        Box::pin(async move {
            match self.0.lock().await.recv().await {
                Some((conn, peer)) => {
                    let open: Accepted = Box::new(move || Ok(conn));
                    Ok((open, peer))
                }
                None => Err(io::ErrorKind::NotConnected.into()),
            }
        })
    }
}

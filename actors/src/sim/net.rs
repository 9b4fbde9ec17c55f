//! The simulator's network: in-memory links with TCP's promises (bytes
//! arrive in order, once) and its failures. A link cut in one direction
//! holds the bytes sent across it, as retransmissions would, and delivers
//! them when it heals, unless the connection is reset first; a connect
//! across a cut waits, as a lost SYN does, until the caller gives up. A
//! slow link delays what crosses it (in order), a reset link breaks the
//! connections across it, and a crashed node's connections all break and
//! its address refuses connections until it starts again.

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
    /// Directed slow links, counted: the extra delay of each delivery.
    slow: BTreeMap<(SocketAddrV4, SocketAddrV4), Vec<Duration>>,
    /// Each address's incarnation: a crash starts a new one, and every
    /// connection of the old one breaks.
    incarnation: BTreeMap<SocketAddrV4, u64>,
    /// Resets of the link between two nodes (lower address first).
    resets: BTreeMap<(SocketAddrV4, SocketAddrV4), u64>,
}

/// What a connection was opened across: it breaks when either end's
/// incarnation or the link's reset count moves on.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Span {
    ends: (SocketAddrV4, SocketAddrV4),
    incarnations: (u64, u64),
    resets: u64,
}

fn pair(a: SocketAddrV4, b: SocketAddrV4) -> (SocketAddrV4, SocketAddrV4) {
    (a.min(b), a.max(b))
}

impl WorldState {
    fn span(&self, a: SocketAddrV4, b: SocketAddrV4) -> Span {
        let incarnation = |x| self.incarnation.get(&x).copied().unwrap_or(0);
        Span {
            ends: (a, b),
            incarnations: (incarnation(a), incarnation(b)),
            resets: self.resets.get(&pair(a, b)).copied().unwrap_or(0),
        }
    }
}

/// Every node's network, shared: who listens where, and which links are cut.
#[derive(Clone)]
pub struct World(Arc<Mutex<WorldState>>, Arc<tokio::sync::watch::Sender<u64>>);

impl World {
    pub fn new(seed: u64) -> Self {
        World(
            Arc::new(Mutex::new(WorldState {
                listeners: BTreeMap::new(),
                cut: BTreeMap::new(),
                faults: BTreeMap::new(),
                rng: rand::rngs::StdRng::seed_from_u64(seed),
                delivered: BTreeMap::new(),
                slow: BTreeMap::new(),
                incarnation: BTreeMap::new(),
                resets: BTreeMap::new(),
            })),
            Arc::new(tokio::sync::watch::channel(0).0),
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WorldState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A node's view of the network, and its listener.
    pub fn attach(&self, me: SocketAddrV4) -> (Arc<dyn Network>, Arc<dyn Listener>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.state();
        state.listeners.insert(me, tx);
        let incarnation = state.incarnation.get(&me).copied().unwrap_or(0);
        (Arc::new(SimNet { me, incarnation, world: self.clone() }), Arc::new(SimListener(tokio::sync::Mutex::new(rx))))
    }

    /// A node's process is gone: its connections break, and its address
    /// refuses connections until `attach` again.
    pub fn crash(&self, me: SocketAddrV4) {
        let mut state = self.state();
        state.listeners.remove(&me);
        *state.incarnation.entry(me).or_default() += 1;
        drop(state);
        self.breaks();
    }

    /// Breaks every connection between two nodes, as a storm of losses
    /// does once TCP gives up retransmitting.
    pub fn reset(&self, a: SocketAddrV4, b: SocketAddrV4) {
        *self.state().resets.entry(pair(a, b)).or_default() += 1;
        self.breaks();
    }

    /// Delays what each first node sends the second by `extra` more, until
    /// `unslow` with the same.
    pub fn slow(&self, links: &[(SocketAddrV4, SocketAddrV4)], extra: Duration) {
        let mut state = self.state();
        for link in links {
            state.slow.entry(*link).or_default().push(extra);
        }
    }

    pub fn unslow(&self, links: &[(SocketAddrV4, SocketAddrV4)], extra: Duration) {
        let mut state = self.state();
        for link in links {
            if let Some(delays) = state.slow.get_mut(link) {
                if let Some(at) = delays.iter().position(|d| *d == extra) {
                    delays.remove(at);
                }
                if delays.is_empty() {
                    state.slow.remove(link);
                }
            }
        }
    }

    /// Counts a fault of some kind.
    pub fn count(&self, kind: &'static str) {
        *self.state().faults.entry(kind).or_default() += 1;
    }

    fn breaks(&self) {
        self.1.send_modify(|n| *n += 1);
    }

    fn is_broken(&self, span: &Span) -> bool {
        self.state().span(span.ends.0, span.ends.1) != *span
    }

    /// These links cut (what each first node sends the second is held)
    /// until `lift`.
    pub fn apply_cuts(&self, links: &[(SocketAddrV4, SocketAddrV4)]) {
        let mut state = self.state();
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

    /// Lifts every fault's cuts and slow links at once.
    pub fn heal_all(&self) {
        let mut state = self.state();
        state.cut.clear();
        state.slow.clear();
    }

    fn is_cut(&self, from: SocketAddrV4, to: SocketAddrV4) -> bool {
        self.state().cut.contains_key(&(from, to))
    }

    /// One delivery's delay: 50-250 µs, drawn from the run's seed, and
    /// the link's slowness.
    fn latency(&self, from: SocketAddrV4, to: SocketAddrV4) -> Duration {
        let mut state = self.state();
        let slow = state.slow.get(&(from, to)).and_then(|d| d.iter().max().copied()).unwrap_or_default();
        Duration::from_micros(state.rng.gen_range(50..250)) + slow
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
    /// The incarnation this network belongs to: a crashed one's reaches
    /// nothing.
    incarnation: u64,
    world: World,
}

impl Network for SimNet {
    fn connect(&self, peer: SocketAddr) -> BoxFuture<'static, io::Result<Conn>> {
        let (me, incarnation, world) = (self.me, self.incarnation, self.world.clone());
        Box::pin(async move {
            let SocketAddr::V4(peer) = peer else { return Err(io::ErrorKind::AddrNotAvailable.into()) };
            let gone = || world.state().incarnation.get(&me).copied().unwrap_or(0) != incarnation;
            // A SYN across a cut is lost, and retried until the caller gives up.
            while world.is_cut(me, peer) || world.is_cut(peer, me) {
                if gone() {
                    return Err(io::ErrorKind::ConnectionRefused.into());
                }
                tokio::time::sleep(HELD_POLL).await;
            }
            tokio::time::sleep(world.latency(me, peer)).await;
            let incoming = world.state().listeners.get(&peer).cloned();
            let (Some(incoming), false) = (incoming, gone()) else {
                return Err(io::ErrorKind::ConnectionRefused.into());
            };
            let span = world.state().span(me, peer);
            let (client, client_far) = tokio::io::duplex(64 << 10);
            let (server, server_far) = tokio::io::duplex(64 << 10);
            let (client_out, client_in) = tokio::io::split(client_far);
            let (server_out, server_in) = tokio::io::split(server_far);
            incoming.send((conn(server), SocketAddr::V4(me))).map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
            tokio::spawn(world.clone().pump_halves(span, me, peer, client_out, server_in));
            tokio::spawn(world.pump_halves(span, peer, me, server_out, client_in));
            Ok(conn(client))
        })
    }
}

impl World {
    /// Moves bytes one way across a link, in order, holding them while
    /// the link is cut; ends when either side closes, or the connection
    /// breaks (its bytes still in flight are lost).
    async fn pump_halves(
        self,
        span: Span,
        from: SocketAddrV4,
        to: SocketAddrV4,
        source: tokio::io::ReadHalf<DuplexStream>,
        sink: tokio::io::WriteHalf<DuplexStream>,
    ) {
        let mut buf = vec![0u8; 16 << 10];
        let (mut source, mut sink) = (source, sink);
        let mut breaks = self.1.subscribe();
        loop {
            let n = tokio::select! {
                read = source.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = breaks.changed() => match self.is_broken(&span) {
                    true => return,
                    false => continue,
                },
            };
            while self.is_cut(from, to) {
                if self.is_broken(&span) {
                    return;
                }
                tokio::time::sleep(HELD_POLL).await;
            }
            tokio::time::sleep(self.latency(from, to)).await;
            if self.is_broken(&span) || sink.write_all(&buf[..n]).await.is_err() {
                return;
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
                    let open: Accepted = Box::new(move || Box::pin(std::future::ready(Ok(conn))));
                    Ok((open, peer))
                }
                // The process crashed: it accepts nothing, ever.
                None => std::future::pending().await,
            }
        })
    }
}

//! The network under the internal API: TCP for a real node, in-memory
//! links for the simulator. The API's frames, handshake and connection
//! handling are the same over either; only how bytes move differs.

use futures_util::future::BoxFuture;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

pub type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
pub type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// One open connection, split into its two directions.
pub struct Conn {
    pub reader: BoxRead,
    pub writer: BoxWrite,
}

/// A connection accepted on the listening thread, opened on the thread
/// that serves it (a TCP socket is bound to one thread's reactor, and a
/// TLS handshake is work for the serving thread, not the listener).
pub type Accepted = Box<dyn FnOnce() -> BoxFuture<'static, io::Result<Conn>> + Send>;

/// How a node reaches its peers.
pub trait Network: Send + Sync + 'static {
    fn connect(&self, peer: SocketAddr) -> BoxFuture<'static, io::Result<Conn>>;
}

/// Where a node's peers reach it.
pub trait Listener: Send + Sync + 'static {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Accepted, SocketAddr)>>;
}

/// Writes `bytes` whole and flushes them: a TLS stream holds what it
/// encrypted until it is flushed (plain TCP sends at once; its flush is
/// free).
pub async fn send(writer: &mut (impl AsyncWrite + Unpin + ?Sized), bytes: &[u8]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// TCP with Nagle off: frames are small and answered at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

fn tcp_conn(stream: TcpStream) -> io::Result<Conn> {
    stream.set_nodelay(true)?;
    let (reader, writer) = stream.into_split();
    Ok(Conn { reader: Box::new(reader), writer: Box::new(writer) })
}

impl Network for Tcp {
    fn connect(&self, peer: SocketAddr) -> BoxFuture<'static, io::Result<Conn>> {
        Box::pin(async move { tcp_conn(TcpStream::connect(peer).await?) })
    }
}

impl Listener for TcpListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Accepted, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = TcpListener::accept(self).await?;
            let stream = stream.into_std()?;
            let open: Accepted = Box::new(move || Box::pin(async move { tcp_conn(TcpStream::from_std(stream)?) }));
            Ok((open, peer))
        })
    }
}

/// The network every real node uses.
pub fn tcp() -> Arc<dyn Network> {
    Arc::new(Tcp)
}

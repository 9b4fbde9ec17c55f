//! api: the node-to-node protocol, transport only. The server hands every
//! request to one `Recipient<ApiCall>` given at start-up (the node routes
//! it); the client multiplexes many requests over one connection by id.

pub mod admin;
pub mod arrival;
pub mod auth;
mod frame;
pub mod net;
pub mod respond;

pub use frame::{
    agree, decode, encode, encode_into, AdminCall, ForwardOp, Frame, Owner, PeerTerms, Request, Response, MAX_FRAME,
    PEER_PROTOCOL_VERSION,
};

use crate::error::{Error, Result};
use actix::prelude::*;
use auth::{Role, Secret};
use bytes::{Bytes, BytesMut};
use net::{Conn, Listener, Network};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// One request from a peer, for the node's router to answer. A forwarded
/// client request comes with the moment its sender gives up on it, by
/// this node's clock: it must not start after that.
#[derive(Message)]
#[rtype(result = "Response")]
pub struct ApiCall {
    pub request: Request,
    pub deadline: Option<tokio::time::Instant>,
}

impl ApiCall {
    /// A request that runs within the answering node's own deadlines.
    pub fn new(request: Request) -> Self {
        ApiCall { request, deadline: None }
    }
}

#[derive(Clone)]
pub struct ApiSettings {
    pub node: String,
    /// What this node offers peers at the handshake.
    pub terms: PeerTerms,
    /// Every peer's terms as its handshake said them.
    pub seen: SeenTerms,
    pub secret: Secret,
    /// Requests one connection may have in flight before reads pause.
    pub max_in_flight: usize,
    pub faults: Faults,
}

/// Test-only fault injection, one per node: peers whose traffic this node
/// drops both ways (as if the network between them were cut), and whether
/// the next request's quorum actor panics. Nothing is set unless an
/// operator (a test) asks a node that allows it; until then a frame pays
/// one relaxed load.
#[derive(Clone, Default)]
pub struct Faults(Arc<FaultState>);

#[derive(Default)]
struct FaultState {
    /// Whether any peer is blocked: read before the set, on every frame.
    any_blocked: std::sync::atomic::AtomicBool,
    blocked: std::sync::RwLock<std::collections::BTreeSet<String>>,
    panic_next_quorum: std::sync::atomic::AtomicBool,
}

impl Faults {
    /// The peer is named only when something is blocked: no string is
    /// made, and no lock taken, for each call of an unfaulted node.
    pub fn is_blocked(&self, peer: impl std::fmt::Display) -> bool {
        if !self.0.any_blocked.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let blocked = self.0.blocked.read().unwrap_or_else(|e| e.into_inner());
        blocked.contains(&peer.to_string())
    }

    pub fn block(&self, peers: Vec<String>) {
        let mut blocked = self.0.blocked.write().unwrap_or_else(|e| e.into_inner());
        *blocked = peers.into_iter().collect();
        self.0.any_blocked.store(!blocked.is_empty(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes this node's next quorum actor panic.
    pub fn arm_quorum_panic(&self) {
        self.0.panic_next_quorum.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this quorum actor is the one to panic (and disarms it).
    pub fn take_quorum_panic(&self) -> bool {
        let armed = &self.0.panic_next_quorum;
        // Loaded before it is swapped: a swap writes the flag's cache line,
        // which every request on every worker reads.
        armed.load(std::sync::atomic::Ordering::Relaxed) && armed.swap(false, std::sync::atomic::Ordering::Relaxed)
    }
}

/// A worker thread that serves peer connections, and where its requests go.
#[derive(Clone)]
pub struct ApiWorker {
    pub arbiter: ArbiterHandle,
    pub handler: Recipient<ApiCall>,
    /// Answers a request at once, in the connection's own loop, when it
    /// need not wait (the store's replica reads); gives back any other.
    pub inline: Inline,
}

/// A module's answer given on the spot, or the request given back to be
/// routed.
pub type Inline = Arc<dyn Fn(Request) -> std::result::Result<Response, Request> + Send + Sync>;

/// Accepts peers on the internal port and spreads their connections over
/// the workers, so replica traffic is not funnelled through one thread.
pub struct ApiActor {
    listener: Arc<dyn Listener>,
    workers: Arc<[ApiWorker]>,
    settings: ApiSettings,
}

impl ApiActor {
    pub fn new(listener: Arc<dyn Listener>, workers: Arc<[ApiWorker]>, settings: ApiSettings) -> Self {
        assert!(!workers.is_empty(), "an api listener needs a worker");
        ApiActor { listener, workers, settings }
    }
}

impl Actor for ApiActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let listener = self.listener.clone();
        let workers = self.workers.clone();
        let settings = self.settings.clone();
        let accept = async move {
            for turn in 0.. {
                match listener.accept().await {
                    Ok((open, peer)) => {
                        let worker = &workers[turn % workers.len()];
                        let (handler, inline, settings) = (worker.handler.clone(), worker.inline.clone(), settings.clone());
                        worker.arbiter.spawn(async move {
                            let served = match open().await {
                                Ok(conn) => serve(conn, peer, handler, inline, settings).await,
                                Err(e) => Err(e.into()),
                            };
                            if let Err(e) = served {
                                tracing::debug!(%peer, "api connection closed: {e}");
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, go on.
                        tracing::warn!("api accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        };
        ctx.spawn(accept.into_actor(self));
    }
}

crate::supervised!(ApiActor, "api");

async fn read_frame<T: frame::Message>(stream: &mut (impl AsyncReadExt + Unpin), buf: &mut BytesMut) -> Result<Option<Frame<T>>> {
    loop {
        if let Some(frame) = decode(buf)? {
            return Ok(Some(frame));
        }
        if !read_more(stream, buf).await? {
            return Ok(None);
        }
    }
}

/// Reads what has arrived into `buf`; false at a clean end of the stream.
async fn read_more(stream: &mut (impl AsyncReadExt + Unpin), buf: &mut BytesMut) -> Result<bool> {
    if stream.read_buf(buf).await? == 0 {
        return if buf.is_empty() { Ok(false) } else { Err(Error::Protocol("connection closed mid-frame".into())) };
    }
    Ok(true)
}

/// Serves one peer connection: a handshake, then requests answered
/// concurrently (up to `max_in_flight`), replies in any order by id.
async fn serve(conn: Conn, addr: SocketAddr, handler: Recipient<ApiCall>, inline: Inline, settings: ApiSettings) -> Result<()> {
    let Conn { mut reader, mut writer } = conn;
    let mut buf = BytesMut::with_capacity(8192);
    let Some(Shaken { from: peer_name, mut lateness, protocol_version }) =
        handshake(&mut reader, &mut writer, &mut buf, &settings, addr).await?
    else {
        return Ok(());
    };
    // The admin tool speaks the admin protocol alone.
    let admin_only = protocol_version.is_none();

    let (tx, rx) = mpsc::channel::<Vec<u8>>(settings.max_in_flight.max(1));
    let write_loop = write_answers(writer, rx);
    let in_flight = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    let faults = settings.faults.clone();
    let read_loop = async move {
        let closed = || Error::Unavailable("closed".into());
        // Answers given at once, for every frame of one read: they go to
        // the writer together when the frames run out.
        let mut answered = Vec::new();
        loop {
            let Some(Frame { id, body }) = decode::<Request>(&mut buf)? else {
                if !answered.is_empty() {
                    tx.send(std::mem::take(&mut answered)).await.map_err(|_| closed())?;
                }
                if !read_more(&mut reader, &mut buf).await? {
                    return Ok(());
                }
                continue;
            };
            if faults.is_blocked(&peer_name) {
                return Err(Error::Unavailable(format!("traffic with {peer_name} is blocked")));
            }
            if admin_only && !matches!(body, Request::Admin(_)) {
                let why = format!("{} is a peer request, and an admin connection carries admin commands only", body.name());
                encode_into(&mut answered, &Frame { id, body: Response::Failed(Error::Refused(why)) })?;
                continue;
            }
            let (body, deadline) = match in_time(body, &mut lateness) {
                Ok(admitted) => admitted,
                Err(late) => {
                    encode_into(&mut answered, &Frame { id, body: late })?;
                    continue;
                }
            };
            let body = match inline(body) {
                Ok(body) => {
                    if answered.capacity() == 0 {
                        // Room for a few answers with values at once, not
                        // grown a doubling at a time.
                        answered.reserve(ANSWERS_BUFFER_BYTES);
                    }
                    encode_into(&mut answered, &Frame { id, body })?;
                    continue;
                }
                Err(body) => body,
            };
            let permit = in_flight.clone().acquire_owned().await.map_err(|_| closed())?;
            let (handler, tx) = (handler.clone(), tx.clone());
            actix::spawn(async move {
                let body = handler
                    .send(ApiCall { request: body, deadline })
                    .await
                    .unwrap_or_else(|e| Response::Failed(Error::Indeterminate(format!("node busy or restarting: {e}"))));
                if let Ok(bytes) = encode(&Frame { id, body }) {
                    let _ = tx.send(bytes).await;
                }
                drop(permit);
            });
        }
    };
    let (read, write) = tokio::join!(read_loop, write_loop);
    read.and(write)
}

/// Writes a connection's answers as they are ready, those ready together
/// in one write.
async fn write_answers(mut writer: impl AsyncWriteExt + Unpin, mut rx: mpsc::Receiver<Vec<u8>>) -> Result<()> {
    let mut batch = Vec::new();
    while let Some(bytes) = rx.recv().await {
        let Ok(second) = rx.try_recv() else {
            // The common case, one read's answers: sent as they are.
            net::send(&mut writer, &bytes).await?;
            continue;
        };
        batch.extend_from_slice(&bytes);
        batch.extend_from_slice(&second);
        while let Ok(more) = rx.try_recv() {
            batch.extend_from_slice(&more);
        }
        net::send(&mut writer, &batch).await?;
        batch.clear();
    }
    Ok(())
}

/// A forwarded client request's deadline here: what is left of the time
/// its sender waits, less how late it arrived. One with nothing left is
/// answered at once that it did not run.
fn in_time(
    request: Request,
    lateness: &mut arrival::Lateness,
) -> std::result::Result<(Request, Option<tokio::time::Instant>), Response> {
    let Request::Forward { budget_ms, sent_us, .. } = &request else { return Ok((request, None)) };
    let late = lateness.of(*sent_us, arrival::mono_us());
    match arrival::Lateness::left(*budget_ms, late) {
        Some(left) => Ok((request, Some(tokio::time::Instant::now() + left))),
        None => Err(Response::Failed(Error::Late(format!(
            "a forwarded request arrived {late:?} late, past its sender's {budget_ms} ms"
        )))),
    }
}

/// A connection past its handshake: who called, how late its frames
/// arrive, and the peer protocol version agreed (none: the admin tool).
struct Shaken {
    from: String,
    lateness: arrival::Lateness,
    protocol_version: Option<u32>,
}

/// Why two nodes' terms keep them apart, if they do: a peer protocol more
/// than one version away, or settings that place keys otherwise (the
/// bucket count, N). Each side names its own values.
pub fn mismatch(ours: PeerTerms, me: &str, theirs: PeerTerms, them: &str) -> Option<String> {
    if agree(ours.protocol_version, theirs.protocol_version).is_none() {
        return Some(format!(
            "peer protocol version {} of {them} is more than one away from {} of {me}",
            theirs.protocol_version, ours.protocol_version
        ));
    }
    if theirs.number_of_buckets != ours.number_of_buckets {
        return Some(format!(
            "number_of_buckets {} of {them} differs from {} of {me}",
            theirs.number_of_buckets, ours.number_of_buckets
        ));
    }
    (theirs.n != ours.n).then(|| {
        format!(
            "n {} of {them} differs from {} of {me}: every member must place keys alike, so n is the same on all",
            theirs.n, ours.n
        )
    })
}

/// Every peer's terms as its handshake said them, by name; shared by a
/// node's connections both ways. R, W and the protocol version may differ
/// between members on purpose (a rolling upgrade, a per-node default):
/// a difference is logged when first seen, and shown on the status page.
#[derive(Clone, Default)]
pub struct SeenTerms(Arc<std::sync::Mutex<std::collections::BTreeMap<String, PeerTerms>>>);

impl SeenTerms {
    /// Records a peer's terms, and logs how they differ from ours the
    /// first time they do.
    pub fn record(&self, ours: PeerTerms, me: &str, peer: &str, theirs: PeerTerms) {
        let before = self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(peer.to_string(), theirs);
        if before == Some(theirs) {
            return;
        }
        if let Some(how) = differences(ours, theirs) {
            tracing::warn!(%peer, "{peer} differs from {me}: {how} (allowed; each coordinator uses its own)");
        }
    }

    /// Each peer whose terms differ from ours, with how.
    pub fn differing(&self, ours: PeerTerms) -> Vec<(String, String)> {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().filter_map(|(peer, theirs)| Some((peer.clone(), differences(ours, *theirs)?))).collect()
    }
}

/// How R, W or the protocol version of a peer differ from ours, in words.
fn differences(ours: PeerTerms, theirs: PeerTerms) -> Option<String> {
    let mut said = Vec::new();
    if (theirs.r, theirs.w) != (ours.r, ours.w) {
        said.push(format!("r,w {},{} against {},{}", theirs.r, theirs.w, ours.r, ours.w));
    }
    if theirs.protocol_version != ours.protocol_version {
        said.push(format!("peer protocol version {} against {}", theirs.protocol_version, ours.protocol_version));
    }
    (!said.is_empty()).then(|| said.join(", "))
}

/// The answering side of the handshake: the caller's hello, our challenge,
/// its proof of the cluster secret, then our hello or one typed refusal.
/// None when the connection is to close. A refusal is logged with the
/// address the connection came from, beside the name the caller gave.
async fn handshake(
    reader: &mut (impl AsyncReadExt + Unpin),
    writer: &mut (impl AsyncWriteExt + Unpin),
    buf: &mut BytesMut,
    settings: &ApiSettings,
    addr: SocketAddr,
) -> Result<Option<Shaken>> {
    let refuse = |id, why: String| encode(&Frame { id, body: Response::Failed(Error::Refused(why)) });
    let (id, from, terms, theirs) = match read_frame::<Request>(reader, buf).await? {
        Some(Frame { id, body: Request::Hello { from, nonce, peer } }) => (id, from, peer, nonce),
        Some(_) => return Err(Error::Protocol("first frame was not a hello".into())),
        None => return Ok(None),
    };
    if settings.faults.is_blocked(&from) {
        return Ok(None); // cut off: say nothing, as a dead link would
    }
    let ours = auth::nonce();
    let proof = Bytes::from(settings.secret.prove(Role::Answerer, &ours, &theirs));
    net::send(writer, &encode(&Frame { id, body: Response::Challenge { nonce: Bytes::from(ours.clone()), proof } })?).await?;
    let mut lateness = arrival::Lateness::default();
    let proved = match read_frame::<Request>(reader, buf).await? {
        Some(Frame { body: Request::Proof { proof, sent_us }, .. }) => {
            lateness.of(sent_us, arrival::mono_us());
            settings.secret.verify(Role::Caller, &theirs, &ours, &proof)
        }
        _ => false,
    };
    if !proved {
        tracing::warn!(%addr, %from, "refused a connection from {addr} (calling itself {from}): wrong or missing cluster secret");
        net::send(writer, &refuse(id, "wrong or missing cluster secret".into())?).await?;
        return Ok(None);
    }
    // The ring's shape and our version are said only to a caller that
    // proved the secret.
    let ours = settings.terms;
    if let Some(why) = terms.and_then(|theirs| mismatch(ours, &settings.node, theirs, &from)) {
        tracing::warn!(%addr, %from, "refused a connection from {addr} (calling itself {from}): {why}");
        net::send(writer, &refuse(id, why)?).await?;
        return Ok(None);
    }
    if let Some(theirs) = terms {
        settings.seen.record(ours, &settings.node, &from, theirs);
    }
    let protocol_version = terms.and_then(|t| agree(ours.protocol_version, t.protocol_version));
    let hello = Response::Hello { node: settings.node.clone(), protocol_version, terms: terms.map(|_| ours) };
    net::send(writer, &encode(&Frame { id, body: hello })?).await?;
    Ok(Some(Shaken { from, lateness, protocol_version }))
}

type Pending = (Request, oneshot::Sender<Result<Response>>);

/// A call to `peer` given `timeout` to answer.
async fn within(
    timeout: Duration,
    peer: SocketAddr,
    call: impl std::future::Future<Output = Result<Response>>,
) -> Result<Response> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(Error::Indeterminate(format!("{peer}: no reply within {timeout:?}"))))
}

/// Requests one client connection may have in flight; more wait (within
/// their deadline) rather than pile up on a slow peer.
const CLIENT_MAX_IN_FLIGHT: usize = 512;

/// A connection to one peer, shared by many callers at once.
#[derive(Clone)]
pub struct ApiClient {
    tx: mpsc::Sender<Pending>,
    peer: SocketAddr,
    in_flight: Arc<Semaphore>,
    protocol_version: Option<u32>,
    terms: Option<PeerTerms>,
}

impl ApiClient {
    /// Connects and shakes hands: a node says the peer terms it offers,
    /// the admin tool none. A peer with another bucket count or a protocol
    /// too far from ours refuses, and that refusal is the error.
    pub async fn connect(
        network: &dyn Network,
        peer: SocketAddr,
        from: &str,
        terms: Option<PeerTerms>,
        secret: &Secret,
        timeout: Duration,
    ) -> Result<Self> {
        let handshake = async {
            let Conn { mut reader, mut writer } = network.connect(peer).await?;
            let ours = auth::nonce();
            let hello = Request::Hello { from: from.to_string(), nonce: Bytes::from(ours.clone()), peer: terms };
            net::send(&mut writer, &encode(&Frame { id: 0, body: hello })?).await?;
            let mut buf = BytesMut::with_capacity(8192);
            let refused = |error: Error| match error {
                Error::Refused(why) => Error::Refused(format!("{peer}: {why}")),
                other => other,
            };
            // A memcache or HTTP port answers in text: say so at once,
            // rather than read its words as a frame's length.
            let text_port = |buf: &BytesMut| {
                let port = if buf.starts_with(b"HTTP/") {
                    "HTTP"
                } else if [&b"SERVER_ERROR"[..], b"CLIENT_ERROR", b"ERROR"].iter().any(|p| buf.starts_with(p)) {
                    "memcache"
                } else {
                    return None;
                };
                Some(Error::Protocol(format!(
                    "{peer} speaks the {port} protocol: that is a node's {port} port, not its internal API port (`port` in its config)"
                )))
            };
            read_more(&mut reader, &mut buf).await?;
            if let Some(e) = text_port(&buf) {
                return Err(e);
            }
            let theirs = match read_frame::<Response>(&mut reader, &mut buf).await? {
                Some(Frame { body: Response::Challenge { nonce, proof }, .. }) => {
                    if !secret.verify(Role::Answerer, &nonce, &ours, &proof) {
                        let why = format!("{peer} and this side do not share the cluster secret");
                        return Err(Error::Refused(why));
                    }
                    nonce
                }
                Some(Frame { body: Response::Failed(error), .. }) => return Err(refused(error)),
                _ => return Err(Error::Protocol(format!("{peer} sent no challenge"))),
            };
            let proof = Bytes::from(secret.prove(Role::Caller, &ours, &theirs));
            let proof = Request::Proof { proof, sent_us: arrival::mono_us() };
            net::send(&mut writer, &encode(&Frame { id: 0, body: proof })?).await?;
            match read_frame::<Response>(&mut reader, &mut buf).await? {
                Some(Frame { body: Response::Hello { protocol_version, terms: answerer, .. }, .. }) => {
                    Ok((Conn { reader, writer }, buf, protocol_version, answerer))
                }
                Some(Frame { body: Response::Failed(error), .. }) => Err(refused(error)),
                _ => Err(Error::Protocol(format!("{peer} sent no hello"))),
            }
        };
        let (conn, buf, protocol_version, answerer) = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| Error::Unavailable(format!("{peer}: no answer within {timeout:?}")))??;
        // Refused on this side too: an answerer that took us may still
        // place keys otherwise.
        if let (Some(ours), Some(theirs)) = (terms, answerer) {
            if let Some(why) = mismatch(ours, from, theirs, &peer.to_string()) {
                return Err(Error::Refused(why));
            }
        }
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(drive(conn, buf, rx));
        Ok(ApiClient { tx, peer, in_flight: Arc::new(Semaphore::new(CLIENT_MAX_IN_FLIGHT)), protocol_version, terms: answerer })
    }

    /// The peer's own terms, as its hello said them (none for the admin
    /// tool).
    pub fn terms(&self) -> Option<PeerTerms> {
        self.terms
    }

    /// The peer protocol version both sides agreed on (none on an admin
    /// connection).
    pub fn protocol_version(&self) -> Option<u32> {
        self.protocol_version
    }

    /// Asks an admin command.
    pub async fn admin<C: admin::AdminCommand>(&self, command: &C, timeout: Duration) -> Result<C::Reply> {
        C::reply(self.call(command.call()?, timeout).await?)
    }

    pub async fn call(&self, request: Request, timeout: Duration) -> Result<Response> {
        within(timeout, self.peer, self.call_untimed(request)).await
    }

    /// A call with no timer of its own, for a caller whose own deadline
    /// drops it.
    pub async fn call_untimed(&self, request: Request) -> Result<Response> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let peer = self.peer;
        let gone = || Error::Unavailable(format!("connection to {peer} closed"));
        let _permit = self.in_flight.acquire().await.map_err(|_| gone())?;
        self.tx.send((request, reply_tx)).await.map_err(|_| gone())?;
        // Handed over: from here a failure leaves open whether it ran.
        let lost = || Error::Indeterminate(format!("connection to {peer} closed before it answered"));
        match reply_rx.await.map_err(|_| lost())? {
            Ok(Response::Failed(error)) => Err(error),
            result => result,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// What a peer connection's buffer of inline answers starts with.
const ANSWERS_BUFFER_BYTES: usize = 8 << 10;

/// The most a connection's reused write buffer keeps between batches.
const KEPT_BATCH_BYTES: usize = 1 << 20;

/// Owns a client connection: writes requests with fresh ids, matches
/// replies to callers, and fails every caller if the connection breaks.
async fn drive(conn: Conn, mut buf: BytesMut, mut rx: mpsc::Receiver<Pending>) {
    let Conn { mut reader, mut writer } = conn;
    let mut waiting: HashMap<u64, oneshot::Sender<Result<Response>>> = HashMap::new();
    let mut next_id = 1u64;
    let mut batch = Vec::new();
    let failure = loop {
        tokio::select! {
            // In a fixed order, so a simulated run is the same every time.
            biased;
            pending = rx.recv() => {
                let Some(first) = pending else { break None };
                // Let the rest of this turn of the worker's scheduler (other
                // sessions' requests to the same peer) join the batch: one
                // send, and one wakeup of the peer, for all of them.
                tokio::task::yield_now().await;
                // Whatever else is ready goes out in the same write.
                batch.clear();
                let mut next = Some(first);
                while let Some((request, reply)) = next.take() {
                    let id = next_id;
                    next_id += 1;
                    match encode_into(&mut batch, &Frame { id, body: request }) {
                        Ok(()) => {
                            waiting.insert(id, reply);
                        }
                        Err(e) => { let _ = reply.send(Err(e)); }
                    }
                    next = rx.try_recv().ok();
                }
                if let Err(e) = net::send(&mut writer, &batch).await {
                    break Some(format!("write failed: {e}"));
                }
                if batch.capacity() > KEPT_BATCH_BYTES {
                    // A transfer's big batch: not kept for the small ones.
                    batch = Vec::new();
                }
            }
            frame = read_frame::<Response>(&mut reader, &mut buf) => {
                match frame {
                    Ok(Some(Frame { id, body })) => {
                        if let Some(reply) = waiting.remove(&id) {
                            let _ = reply.send(Ok(body));
                        }
                    }
                    Ok(None) => break Some("peer closed the connection".to_string()),
                    Err(e) => break Some(e.to_string()),
                }
            }
        }
    };
    let why = failure.unwrap_or_else(|| "client dropped".into());
    for (_, reply) in waiting {
        let _ = reply.send(Err(Error::Indeterminate(why.clone())));
    }
}

/// Reused connections to peers, made on first use. Connecting happens in
/// the caller's future, never inside an actor's message loop, so a slow or
/// dead peer costs its callers a timeout and stalls nobody else. Shared:
/// each replica call takes a clone into its future, one reference count.
#[derive(Clone)]
pub struct Peers(Arc<PeersInner>);

struct PeersInner {
    network: Arc<dyn Network>,
    clients: std::sync::Mutex<HashMap<SocketAddr, ApiClient>>,
    from: String,
    terms: PeerTerms,
    secret: Secret,
    connect_timeout: Duration,
    faults: Faults,
    seen: SeenTerms,
}

impl Peers {
    /// What this node offers in its hello.
    pub fn terms(&self) -> PeerTerms {
        self.0.terms
    }

    pub fn new(
        network: Arc<dyn Network>,
        from: String,
        terms: PeerTerms,
        secret: Secret,
        connect_timeout: Duration,
        faults: Faults,
        seen: SeenTerms,
    ) -> Self {
        let clients = Default::default();
        Peers(Arc::new(PeersInner { network, clients, from, terms, secret, connect_timeout, faults, seen }))
    }

    fn cached(&self, peer: SocketAddr) -> Option<ApiClient> {
        let mut clients = self.0.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.get(&peer) {
            Some(c) if c.is_closed() => {
                clients.remove(&peer);
                None
            }
            other => other.cloned(),
        }
    }

    pub async fn client(&self, peer: SocketAddr) -> Result<ApiClient> {
        if let Some(client) = self.cached(peer) {
            return Ok(client);
        }
        let inner = &*self.0;
        let terms = Some(inner.terms);
        let client = ApiClient::connect(&*inner.network, peer, &inner.from, terms, &inner.secret, inner.connect_timeout).await?;
        if let Some(theirs) = client.terms() {
            inner.seen.record(inner.terms, &inner.from, &peer.to_string(), theirs);
        }
        self.0.clients.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, client.clone());
        Ok(client)
    }

    pub async fn call(&self, peer: SocketAddr, request: Request, timeout: Duration) -> Result<Response> {
        within(timeout, peer, self.call_untimed(peer, request)).await
    }

    /// A call with no timer of its own (connecting has its own timeout),
    /// for a caller whose own deadline drops it.
    pub async fn call_untimed(&self, peer: SocketAddr, request: Request) -> Result<Response> {
        self.connected(peer).await?.call_untimed(request).await
    }

    /// A connection to `peer` to call on, unless traffic with it is
    /// blocked: a caller that must tell a request never handed over from
    /// one that may have run makes its calls on this.
    pub async fn connected(&self, peer: SocketAddr) -> Result<ApiClient> {
        if self.0.faults.is_blocked(peer) {
            return Err(Error::Unavailable(format!("traffic with {peer} is blocked")));
        }
        self.client(peer).await
    }
}

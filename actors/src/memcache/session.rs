//! One client connection: an actor that reads bytes, parses commands,
//! runs them through the coordinator in order, and writes the replies.
//! While a batch of pipelined commands runs, reading pauses: the client's
//! own pace is the backpressure.

use super::auth;
use super::binary;
use super::command::{self as cmd, StoreMode};
use super::parse::{self, valid_key, Command, Parsed, StoreKind};
use super::reply::{binary_status, error_line, line, value_block};
use super::SessionEnv;
use crate::error::{Error, Result};
use crate::stats::{report, NodeStats};
use crate::store::{coarse_monotonic_millis, WriteOutcome};
use crate::tls::Tls;
use crate::version::{cas_token, distinct_values};
use actix::prelude::*;
use bytes::{Buf, Bytes, BytesMut};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// memcached's cut-off: exptimes up to 30 days are relative.
const RELATIVE_EXPTIME_LIMIT: i64 = 60 * 60 * 24 * 30;

/// An exptime as memcached reads it, as an absolute unix time (0 = never).
pub fn expires_at(exptime: i64, now: u64) -> u64 {
    match exptime {
        0 => 0,
        e if e < 0 => 1, // already in the past
        e if e <= RELATIVE_EXPTIME_LIMIT => now + e as u64,
        e => e as u64,
    }
}

const INTERNAL_API_HERE: &str =
    "SERVER_ERROR this is a memcache port; the internal API (peers, kai admin) listens on the node's `port`";

enum Step {
    Run(Command),
    Reply(&'static str),
    RunBinary(binary::Request),
    /// A ready binary response (a refused frame).
    Frame(Vec<u8>),
    Close,
}

/// What authentication makes of a binary request.
enum Gate {
    Run,
    /// Answered on the spot (SASL).
    Answer(Vec<u8>),
    /// Refused, and the connection closed.
    Refuse(Vec<u8>),
}

/// What one read brought: mostly a single command (no allocation for it).
type Steps = smallvec::SmallVec<[Step; 1]>;

/// A client connection's actor: it owns the connection's serving loop and
/// closes idle or dribbling clients.
pub struct Session {
    env: Arc<SessionEnv>,
    activity: Rc<Activity>,
    /// Taken by the serving loop when the actor starts, with the port's
    /// TLS when it speaks TLS.
    stream: Option<(TcpStream, Option<Arc<Tls>>)>,
    /// The serving loop, a task of its own on this worker (its wakes then
    /// skip the actor's context), ended with the session.
    serving: Option<tokio::task::JoinHandle<()>>,
}

/// The serving loop ended (the client left, or the loop panicked): the
/// session stops.
#[derive(Message)]
#[rtype(result = "()")]
struct ServeEnded;

/// Held by the serving loop's task: tells its session when the loop ends,
/// however it ends (a panic unwinds through it too).
struct EndsSession(Addr<Session>);

impl Drop for EndsSession {
    fn drop(&mut self) {
        self.0.do_send(ServeEnded);
    }
}

impl Handler<ServeEnded> for Session {
    type Result = ();

    fn handle(&mut self, _: ServeEnded, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// When the client last sent anything, and since when an unfinished
/// command has sat in the buffer: shared by the serving loop (which sets
/// them) and the actor's timer (which reads them). Milliseconds on the
/// coarse monotonic clock: the loop sets them on every read, and the
/// timer's limits are seconds.
struct Activity {
    last_active: Cell<u64>,
    partial_since: Cell<Option<u64>>,
}

impl Activity {
    fn idle_for(&self, now: u64) -> Duration {
        Duration::from_millis(now.saturating_sub(self.last_active.get()))
    }

    fn partial_for(&self, now: u64) -> Option<Duration> {
        self.partial_since.get().map(|since| Duration::from_millis(now.saturating_sub(since)))
    }
}

/// What the serving loop keeps between reads: unparsed bytes and how to
/// read them.
struct Connection {
    env: Arc<SessionEnv>,
    buf: BytesMut,
    /// Bytes of an oversized value still to discard as they arrive.
    skip: usize,
    /// Whether the client speaks the binary protocol: its first byte says.
    binary: Option<bool>,
    /// Whether the client has authenticated (or need not).
    trusted: bool,
    /// The text token's length, once its `set` line has come.
    token_owed: Option<usize>,
}

/// Room the read buffer keeps free for the next read.
const READ_ROOM: usize = 16 * 1024;
/// A reply buffer that grew past this (a huge multi-get) is not kept.
const KEEP_REPLY_CAPACITY: usize = 1 << 20;

impl Session {
    /// Starts a session on a worker thread. The socket travels as a std
    /// socket and is registered with the worker's own event loop there.
    pub fn start_on(worker: &ArbiterHandle, stream: std::net::TcpStream, tls: Option<Arc<Tls>>, env: Arc<SessionEnv>) {
        Session::start_in_arbiter(worker, move |ctx| {
            let activity =
                Rc::new(Activity { last_active: Cell::new(coarse_monotonic_millis()), partial_since: Cell::new(None) });
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => Some((stream, tls)),
                Err(e) => {
                    tracing::warn!("cannot take a client connection: {e}");
                    ctx.stop();
                    None
                }
            };
            Session { env, activity, stream, serving: None }
        });
    }
}

impl Connection {
    /// Parses every whole command in the buffer into steps to run.
    fn take_steps(&mut self) -> Steps {
        let first = self.binary.is_none();
        let binary = *self.binary.get_or_insert_with(|| self.buf.first() == Some(&binary::REQUEST_MAGIC));
        if binary {
            return self.take_binary_steps();
        }
        if !self.trusted {
            let mut steps = self.take_token();
            if !self.trusted {
                return steps;
            }
            steps.extend(self.take_steps());
            return steps;
        }
        // An internal API frame (a 4-byte length whose first byte is 0, then
        // a MessagePack array of two: id and body): a peer or `kai admin`
        // pointed at the wrong port, told so at once.
        if first && self.buf.len() >= 5 && self.buf[0] == 0 && self.buf[4] == 0x92 {
            self.buf.clear();
            return smallvec::smallvec![Step::Reply(INTERNAL_API_HERE), Step::Close];
        }
        let mut steps = Steps::new();
        loop {
            match parse::parse(&self.buf, self.env.settings.max_value_size) {
                Parsed::Incomplete => break,
                Parsed::Command(command, used) => {
                    self.buf.advance(used);
                    let quit = command == Command::Quit;
                    steps.push(Step::Run(command));
                    if quit {
                        break;
                    }
                }
                Parsed::Invalid { reply, consumed, close } => {
                    self.buf.advance(consumed.min(self.buf.len()));
                    steps.extend(reply.map(Step::Reply));
                    if close {
                        steps.push(Step::Close);
                        break;
                    }
                }
                Parsed::Swallow { reply, consumed, skip } => {
                    self.buf.advance(consumed);
                    steps.extend(reply.map(Step::Reply));
                    let now = skip.min(self.buf.len());
                    self.buf.advance(now);
                    self.skip = skip - now;
                }
            }
        }
        steps
    }

    fn take_binary_steps(&mut self) -> Steps {
        let mut steps = Steps::new();
        while !self.buf.is_empty() {
            match binary::parse(&self.buf, self.env.settings.max_value_size) {
                binary::Parsed::Incomplete => break,
                binary::Parsed::Request(request, used) => {
                    self.buf.advance(used);
                    match self.sasl(&request) {
                        Gate::Run => {}
                        Gate::Answer(frame) => {
                            steps.push(Step::Frame(frame));
                            continue;
                        }
                        Gate::Refuse(frame) => {
                            self.buf.clear();
                            steps.extend([Step::Frame(frame), Step::Close]);
                            break;
                        }
                    }
                    let quit = matches!(request.opcode, binary::op::QUIT | binary::op::QUITQ);
                    steps.push(Step::RunBinary(request));
                    if quit {
                        break;
                    }
                }
                binary::Parsed::Refused { opcode, opaque, status, consumed, skip, close } => {
                    self.buf.advance(consumed.min(self.buf.len()));
                    let mut frame = Vec::new();
                    let message = if status == binary::status::TOO_LARGE { "Too large." } else { "Invalid arguments" };
                    binary::encode(
                        &mut frame,
                        &binary::Response { opcode, opaque, status, value: message.as_bytes(), ..Default::default() },
                    );
                    steps.push(Step::Frame(frame));
                    if close {
                        steps.push(Step::Close);
                        break;
                    }
                    let now = skip.min(self.buf.len());
                    self.buf.advance(now);
                    self.skip = skip - now;
                }
            }
        }
        steps
    }
}

impl Connection {
    /// The text protocol before its client is trusted: memcached's token,
    /// or a refusal when only binary clients may authenticate.
    fn take_token(&mut self) -> Steps {
        let env = self.env.clone();
        let Some(passwords) = env.auth.ascii.as_ref() else {
            self.buf.clear();
            return smallvec::smallvec![Step::Reply("CLIENT_ERROR unauthenticated"), Step::Close];
        };
        let mut steps = Steps::new();
        while !self.trusted {
            match auth::ascii_step(&mut self.buf, &mut self.token_owed, passwords) {
                auth::Outcome::Wait => break,
                auth::Outcome::Close => {
                    self.buf.clear();
                    steps.push(Step::Close);
                    break;
                }
                auth::Outcome::Reply { reply, proved } => {
                    self.count_proof(proved);
                    steps.push(Step::Frame(reply));
                }
            }
        }
        steps
    }

    /// What SASL makes of a binary request: SASL itself is answered on the
    /// spot, and an untrusted client asking anything else but `version`
    /// is refused and closed, as memcached does.
    fn sasl(&mut self, request: &binary::Request) -> Gate {
        if self.trusted && !(self.env.auth.sasl.is_some() && auth::is_sasl(request.opcode)) {
            return Gate::Run;
        }
        let env = self.env.clone();
        let Some(passwords) = env.auth.sasl.as_ref() else {
            // Only text clients may authenticate here.
            return Gate::Refuse(auth::refusal(request));
        };
        if auth::is_sasl(request.opcode) {
            let (reply, proved) = auth::sasl_step(request, passwords);
            self.count_proof(proved);
            return Gate::Answer(reply);
        }
        match auth::binary_refusal(request) {
            Some(refusal) => Gate::Refuse(refusal),
            None => Gate::Run,
        }
    }

    fn count_proof(&mut self, proved: Option<bool>) {
        let Some(proved) = proved else { return };
        NodeStats::incr(&self.env.stats.auth_cmds);
        if proved {
            self.trusted = true;
        } else {
            NodeStats::incr(&self.env.stats.auth_errors);
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // (curr_connections was counted by the listener.)
        NodeStats::incr(&self.env.stats.total_connections);
        // Idle clients and clients that dribble a command (slowloris) are
        // closed, so they cannot hold connections forever.
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            let settings = &act.env.settings;
            let now = coarse_monotonic_millis();
            let idle = settings.idle_timeout.is_some_and(|t| act.activity.idle_for(now) > t);
            let slow = act.activity.partial_for(now).is_some_and(|partial| partial > settings.command_timeout);
            if idle || slow {
                NodeStats::incr(&act.env.stats.timed_out_connections);
                ctx.stop();
            }
        });
        if let Some((stream, tls)) = self.stream.take() {
            let connection = Connection {
                env: self.env.clone(),
                buf: BytesMut::with_capacity(READ_ROOM),
                skip: 0,
                binary: None,
                trusted: !self.env.auth.required(),
                token_owed: None,
            };
            let activity = self.activity.clone();
            let ends = EndsSession(ctx.address());
            self.serving = Some(actix::spawn(async move {
                let _ends = ends;
                match tls {
                    None => serve(connection, stream, activity).await,
                    Some(tls) => serve_tls(connection, stream, &tls, activity).await,
                }
            }));
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Timed out: the loop's task drops the connection.
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
        self.env.stats.curr_connections.fetch_sub(1, Relaxed);
    }
}

/// A connection's life: read what the client sent, run every whole command
/// in it in order, write all their replies at once, and read again. While
/// a batch runs nothing more is read: the client's own pace is the
/// backpressure. Returns when the client goes or is told to.
async fn serve(mut conn: Connection, mut stream: impl AsyncRead + AsyncWrite + Unpin, activity: Rc<Activity>) {
    let env = conn.env.clone();
    let mut out = Vec::with_capacity(4096);
    loop {
        if conn.buf.capacity() - conn.buf.len() < READ_ROOM / 4 {
            conn.buf.reserve(READ_ROOM);
        }
        let read = match stream.read_buf(&mut conn.buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        NodeStats::add(&env.stats.bytes_read, read as u64);
        let now = coarse_monotonic_millis();
        activity.last_active.set(now);
        // An oversized value's bytes are dropped as they come (the buffer
        // held nothing else while some were still owed).
        let skipped = conn.skip.min(conn.buf.len());
        conn.buf.advance(skipped);
        conn.skip -= skipped;

        let steps = conn.take_steps();
        let unfinished = !conn.buf.is_empty() || conn.skip > 0;
        if !unfinished {
            activity.partial_since.set(None);
        } else if activity.partial_since.get().is_none() || !steps.is_empty() {
            activity.partial_since.set(Some(now));
        }
        if steps.is_empty() {
            continue;
        }
        out.clear();
        if out.capacity() > KEEP_REPLY_CAPACITY {
            out = Vec::with_capacity(4096);
        }
        let mut close = false;
        for step in steps {
            match step {
                Step::Run(command) => {
                    if execute(&env, command, &mut out).await == Flow::Close {
                        close = true;
                        break;
                    }
                }
                Step::Reply(text) => line(&mut out, text),
                Step::RunBinary(request) => {
                    if execute_binary(&env, request, &mut out).await == Flow::Close {
                        close = true;
                        break;
                    }
                }
                Step::Frame(frame) => out.extend_from_slice(&frame),
                Step::Close => {
                    close = true;
                    break;
                }
            }
        }
        if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        NodeStats::add(&env.stats.bytes_written, out.len() as u64);
        if close {
            return;
        }
    }
}

/// A TLS client: the handshake, bounded like a command (a client that
/// dribbles it is closed), then the session as over plain TCP.
async fn serve_tls(conn: Connection, stream: TcpStream, tls: &Tls, activity: Rc<Activity>) {
    let peer = stream.peer_addr();
    activity.partial_since.set(Some(coarse_monotonic_millis()));
    match tls.acceptor().accept(stream).await {
        Ok(stream) => {
            activity.partial_since.set(None);
            serve(conn, stream, activity).await
        }
        Err(e) => {
            let peer = peer.unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
            crate::tls::refused(&conn.env.stats.ssl_handshake_errors, peer, &e);
        }
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Appends a command's reply line, unless the client asked for none.
fn respond(out: &mut Vec<u8>, noreply: bool, result: Result<&str>) {
    if !noreply {
        match result {
            Ok(text) => line(out, text),
            Err(e) => line(out, &error_line(&e)),
        }
    }
}

/// The text protocol's word for a write's outcome.
fn stored_word(outcome: &WriteOutcome) -> &'static str {
    match outcome {
        WriteOutcome::Stored { .. } => "STORED",
        WriteOutcome::NotStored => "NOT_STORED",
        WriteOutcome::Exists => "EXISTS",
        WriteOutcome::NotFound | WriteOutcome::NonNumeric => "NOT_FOUND",
    }
}

/// Runs one text command, appending its reply to `out`.
async fn execute(env: &SessionEnv, command: Command, out: &mut Vec<u8>) -> Flow {
    let now = || env.clock().secs();
    match command {
        Command::Get { keys, with_cas, touch } => get(env, keys, with_cas, touch, out).await,
        Command::Store { kind, key, flags, exptime, value, cas, noreply } => {
            let mode = match kind {
                StoreKind::Set | StoreKind::Cas => StoreMode::Set,
                StoreKind::Add => StoreMode::Add,
                StoreKind::Replace => StoreMode::Replace,
                StoreKind::Append => StoreMode::Append,
                StoreKind::Prepend => StoreMode::Prepend,
            };
            let mut store = cmd::Store::new(key, mode, value, flags, expires_at(exptime, now()));
            store.cas = (kind == StoreKind::Cas).then_some(cas);
            respond(out, noreply, store.run(env).await.map(|outcome| stored_word(&outcome)));
        }
        Command::Delete { key, noreply } => {
            let deleted = cmd::Delete { key, cas: None, quorum: None }.run(env).await;
            let word = |o: WriteOutcome| if matches!(o, WriteOutcome::Stored { .. }) { "DELETED" } else { "NOT_FOUND" };
            respond(out, noreply, deleted.map(word));
        }
        Command::Arith { key, delta, incr, noreply } => {
            let text = match cmd::Arith::new(key, incr, delta).run(env).await {
                Ok(WriteOutcome::Stored { new, .. }) => Ok(String::from_utf8_lossy(&new.value).into_owned()),
                Ok(WriteOutcome::NonNumeric) => Err(Error::Client(NON_NUMERIC.into())),
                Ok(_) => Ok("NOT_FOUND".to_string()),
                Err(e) => Err(e),
            };
            respond(out, noreply, text.as_deref().map_err(Clone::clone));
        }
        Command::Touch { key, exptime, noreply } => {
            let touched = cmd::Touch { key, expires_at: expires_at(exptime, now()) }.run(env).await;
            let word = |o: WriteOutcome| if matches!(o, WriteOutcome::Stored { .. }) { "TOUCHED" } else { "NOT_FOUND" };
            respond(out, noreply, touched.map(word));
        }
        Command::FlushAll { delay, noreply } => {
            let flushed = cmd::Flush { delay: delay.max(0) as u64 }.run(env).await;
            respond(out, noreply, flushed.map(|()| "OK"));
        }
        Command::Stats { args } => stats_reply(env, &args, out),
        Command::Meta(request) => super::meta_run::execute(env, request, out).await,
        Command::Version => line(out, &format!("VERSION {}", crate::stats::VERSION)),
        Command::Verbosity { noreply } => respond(out, noreply, Ok("OK")),
        Command::Quit => return Flow::Close,
    }
    Flow::Continue
}

/// What memcached answers an incr or decr of a value that is not a number.
pub const NON_NUMERIC: &str = "cannot increment or decrement non-numeric value";

/// `get`, `gets`, `gat` and `gats`: one value block per distinct value of
/// each key's live siblings. One key's failure fails the command: a
/// partial answer would read as misses.
async fn get(env: &SessionEnv, keys: smallvec::SmallVec<[Bytes; 1]>, with_cas: bool, touch: Option<i64>, out: &mut Vec<u8>) {
    let touch = touch.map(|exptime| expires_at(exptime, env.clock().secs()));
    let fetch = |key: &Bytes| cmd::Read { key: key.clone(), touch, quorum: None }.run(env);
    // The common single-key get is awaited as it is; a multi-get's keys
    // are fetched at once.
    let results: smallvec::SmallVec<[_; 1]> = match keys.as_slice() {
        [key] => smallvec::smallvec![fetch(key).await],
        _ => futures_util::future::join_all(keys.iter().map(fetch)).await.into(),
    };
    // Values go straight into the reply; on a failure it is cut back to
    // what it held before this command.
    let start = out.len();
    for (key, result) in keys.iter().zip(results) {
        match result {
            Ok(fetched) => {
                let versions = &fetched.siblings;
                let cas = (with_cas && !versions.is_empty()).then(|| cas_token(key, versions));
                for v in distinct_values(versions) {
                    value_block(out, key, v.flags, &v.value, cas);
                }
            }
            Err(e) => {
                out.truncate(start);
                line(out, &error_line(&e));
                return;
            }
        }
    }
    line(out, "END");
}

/// `stats` and its groups.
fn stats_reply(env: &SessionEnv, args: &[String], out: &mut Vec<u8>) {
    match args.first().map(String::as_str) {
        None => {
            let ring = env.ring.snapshot();
            for (name, value) in report(&env.stats, &env.identity, &ring) {
                line(out, &format!("STAT {name} {value}"));
            }
            line(out, "END");
        }
        Some("settings") => {
            let settings = &env.settings;
            line(out, &format!("STAT maxconns {}", settings.max_connections));
            line(out, &format!("STAT item_size_max {}", settings.max_value_size));
            line(out, &format!("STAT flush_enabled {}", if settings.allow_flush_all { "yes" } else { "no" }));
            let idle = settings.idle_timeout.map(|t| t.as_secs()).unwrap_or(0);
            line(out, &format!("STAT idle_timeout {idle}"));
            security_settings(env, out);
            line(out, "END");
        }
        Some("reset") => {
            env.stats.reset();
            line(out, "RESET");
        }
        // These describe memcached's slab allocator, which Kai has not: an
        // empty report, as memcached gives for an empty cache.
        Some("items" | "slabs" | "sizes" | "conns") => line(out, "END"),
        Some(_) => line(out, parse::ERROR),
    }
}

/// Authentication and TLS in `stats settings`, as memcached names them.
fn security_settings(env: &SessionEnv, out: &mut Vec<u8>) {
    let yes_no = |on: bool| if on { "yes" } else { "no" };
    line(out, &format!("STAT auth_enabled_sasl {}", yes_no(env.auth.sasl.is_some())));
    line(out, &format!("STAT auth_enabled_ascii {}", yes_no(env.auth.ascii.is_some())));
    line(out, &format!("STAT ssl_enabled {}", yes_no(env.settings.tls.is_some())));
    let Some(tls) = &env.settings.tls else { return };
    line(out, &format!("STAT ssl_chain_cert {}", tls.cert.display()));
    line(out, &format!("STAT ssl_key {}", tls.key.display()));
    let verify = match tls.verify_client {
        crate::tls::VerifyClient::None => 0,
        crate::tls::VerifyClient::Request => 1,
        crate::tls::VerifyClient::Require => 2,
    };
    line(out, &format!("STAT ssl_verify_mode {verify}"));
    line(out, &format!("STAT ssl_ca_cert {}", tls.ca.as_ref().map_or("NULL".into(), |ca| ca.display().to_string())));
    line(out, &format!("STAT ssl_min_version {}", tls.min_version.name()));
}

/// The status for a write that did not go ahead.
fn binary_outcome_status(outcome: &WriteOutcome, absent: u16) -> u16 {
    match outcome {
        WriteOutcome::Stored { .. } => binary::status::OK,
        WriteOutcome::NotStored => absent,
        WriteOutcome::Exists => binary::status::EXISTS,
        WriteOutcome::NotFound => binary::status::NOT_FOUND,
        WriteOutcome::NonNumeric => binary::status::NON_NUMERIC,
    }
}

/// Runs one binary-protocol request, appending its response (if any) to
/// `out`: the same commands as the text protocol, framed otherwise. A key
/// with siblings answers its newest value, with the cas token of them all
/// (binary gets carry one value).
async fn execute_binary(env: &SessionEnv, req: binary::Request, out: &mut Vec<u8>) -> Flow {
    use binary::{op, status};
    let base = binary::Response { opcode: req.opcode, opaque: req.opaque, ..Default::default() };
    let answer = |out: &mut Vec<u8>, status: u16, message: &str| {
        binary::encode(out, &binary::Response { status, value: message.as_bytes(), ..base.clone() });
    };
    let needs_key = !matches!(req.opcode, op::NOOP | op::VERSION | op::STAT | op::QUIT | op::QUITQ | op::FLUSH | op::FLUSHQ)
        && !auth::is_sasl(req.opcode);
    if needs_key && !valid_key(&req.key) {
        answer(out, status::INVALID, "Invalid key");
        return Flow::Continue;
    }
    match binary_command(&req, env.clock().secs()) {
        Ok(Some(command)) => run_binary(env, command, &req, &base, out).await,
        Ok(None) => return binary_plain(env, &req, out, &base),
        Err(message) => answer(out, status::INVALID, message),
    }
    Flow::Continue
}

/// A binary request that runs through the coordinator, as a command.
enum BinaryCommand {
    Read(cmd::Read),
    Store(cmd::Store, u16),
    Delete(cmd::Delete),
    Touch(cmd::Touch),
    Arith(cmd::Arith),
    Flush(cmd::Flush),
}

/// The command a binary request asks for; None for those answered on the
/// spot (noop, version, stat, quit), Err for bad extras.
fn binary_command(req: &binary::Request, now: u64) -> std::result::Result<Option<BinaryCommand>, &'static str> {
    use binary::{op, status};
    const BAD: &str = "Invalid arguments";
    let key = || req.key.clone();
    let exptime = |at: usize| req.extra_u32(at).map(|e| expires_at(e as i32 as i64, now)).ok_or(BAD);
    let cas = (req.cas != 0).then_some(req.cas);
    Ok(Some(match req.opcode {
        op::GET | op::GETQ | op::GETK | op::GETKQ => BinaryCommand::Read(cmd::Read::new(key())),
        op::GAT | op::GATQ | op::GATK | op::GATKQ => {
            BinaryCommand::Read(cmd::Read { touch: Some(exptime(0)?), ..cmd::Read::new(key()) })
        }
        op::SET
        | op::SETQ
        | op::ADD
        | op::ADDQ
        | op::REPLACE
        | op::REPLACEQ
        | op::APPEND
        | op::APPENDQ
        | op::PREPEND
        | op::PREPENDQ => {
            let (mode, absent) = match req.opcode {
                op::SET | op::SETQ => (StoreMode::Set, status::NOT_FOUND),
                // add on a present key is "exists", replace on an absent one "not found".
                op::ADD | op::ADDQ => (StoreMode::Add, status::EXISTS),
                op::REPLACE | op::REPLACEQ => (StoreMode::Replace, status::NOT_FOUND),
                op::APPEND | op::APPENDQ => (StoreMode::Append, status::NOT_STORED),
                _ => (StoreMode::Prepend, status::NOT_STORED),
            };
            let appending = matches!(mode, StoreMode::Append | StoreMode::Prepend);
            let (flags, expires) = if appending { (0, 0) } else { (req.extra_u32(0).ok_or(BAD)?, exptime(4)?) };
            let store = cmd::Store { cas, ..cmd::Store::new(key(), mode, req.value.clone(), flags, expires) };
            BinaryCommand::Store(store, absent)
        }
        op::DELETE | op::DELETEQ => BinaryCommand::Delete(cmd::Delete { key: key(), cas, quorum: None }),
        op::TOUCH => BinaryCommand::Touch(cmd::Touch { key: key(), expires_at: exptime(0)? }),
        op::INCREMENT | op::INCREMENTQ | op::DECREMENT | op::DECREMENTQ => {
            let (Some(delta), Some(initial), Some(raw_exptime)) = (req.extra_u64(0), req.extra_u64(8), req.extra_u32(16)) else {
                return Err(BAD);
            };
            let incr = matches!(req.opcode, op::INCREMENT | op::INCREMENTQ);
            // An absent counter starts at `initial`, unless the client said
            // not to create it (exptime all ones).
            let create = (raw_exptime != u32::MAX).then(|| (initial, expires_at(raw_exptime as i64, now)));
            BinaryCommand::Arith(cmd::Arith { create, ..cmd::Arith::new(key(), incr, delta) })
        }
        op::FLUSH | op::FLUSHQ => BinaryCommand::Flush(cmd::Flush { delay: req.extra_u32(0).unwrap_or(0) as u64 }),
        _ => return Ok(None),
    }))
}

/// Runs a binary command and frames its answer.
async fn run_binary(
    env: &SessionEnv,
    command: BinaryCommand,
    req: &binary::Request,
    base: &binary::Response<'_>,
    out: &mut Vec<u8>,
) {
    use binary::{op, status};
    let quiet = req.quiet();
    match command {
        BinaryCommand::Read(read) => {
            let with_key = matches!(req.opcode, op::GETK | op::GETKQ | op::GATK | op::GATKQ);
            let key: &[u8] = if with_key { &req.key } else { b"" };
            match read.run(env).await.map(|fetched| fetched.siblings) {
                Ok(versions) => match versions.last() {
                    None if quiet => {}
                    None => binary::encode(
                        out,
                        &binary::Response { status: status::NOT_FOUND, key, value: b"Not found", ..base.clone() },
                    ),
                    Some(newest) => {
                        let flags = newest.flags.to_be_bytes();
                        let cas = cas_token(&req.key, &versions);
                        binary::encode(out, &binary::Response { cas, extras: &flags, key, value: &newest.value, ..base.clone() });
                    }
                },
                Err(e) => binary_error(out, base, &e),
            }
        }
        BinaryCommand::Store(store, absent) => respond_binary_write(out, base, &req.key, quiet, store.run(env).await, absent),
        BinaryCommand::Delete(delete) => match delete.run(env).await {
            // A delete answers no cas: nothing is left to compare with.
            Ok(WriteOutcome::Stored { .. }) if quiet => {}
            Ok(WriteOutcome::Stored { .. }) => binary::encode(out, base),
            other => respond_binary_write(out, base, &req.key, quiet, other, status::NOT_FOUND),
        },
        BinaryCommand::Touch(touch) => respond_binary_write(out, base, &req.key, false, touch.run(env).await, status::NOT_FOUND),
        BinaryCommand::Arith(arith) => match arith.run(env).await {
            Ok(WriteOutcome::Stored { .. }) if quiet => {}
            Ok(WriteOutcome::Stored { new, .. }) => {
                let value: u64 = std::str::from_utf8(&new.value).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                let cas = cas_token(&req.key, std::slice::from_ref(&new));
                binary::encode(out, &binary::Response { cas, value: &value.to_be_bytes(), ..base.clone() });
            }
            other => respond_binary_write(out, base, &req.key, quiet, other, status::NOT_FOUND),
        },
        BinaryCommand::Flush(flush) => match flush.run(env).await {
            Ok(()) if quiet => {}
            Ok(()) => binary::encode(out, base),
            Err(e) => binary_error(out, base, &e),
        },
    }
}

/// The requests answered on the spot: noop, version, stat and quit.
fn binary_plain(env: &SessionEnv, req: &binary::Request, out: &mut Vec<u8>, base: &binary::Response<'_>) -> Flow {
    use binary::{op, status};
    let answer = |out: &mut Vec<u8>, status: u16, message: &str| {
        binary::encode(out, &binary::Response { status, value: message.as_bytes(), ..base.clone() });
    };
    match req.opcode {
        op::NOOP => answer(out, status::OK, ""),
        op::VERSION => answer(out, status::OK, crate::stats::VERSION),
        op::STAT => {
            if req.key.is_empty() {
                let ring = env.ring.snapshot();
                for (name, value) in report(&env.stats, &env.identity, &ring) {
                    let value = value.to_string();
                    binary::encode(out, &binary::Response { key: name.as_bytes(), value: value.as_bytes(), ..base.clone() });
                }
            }
            answer(out, status::OK, "");
        }
        op::QUIT | op::QUITQ => {
            if req.opcode == op::QUIT {
                answer(out, status::OK, "");
            }
            return Flow::Close;
        }
        _ => answer(out, status::UNKNOWN_COMMAND, "Unknown command"),
    }
    Flow::Continue
}

/// A node error as a binary response.
fn binary_error(out: &mut Vec<u8>, base: &binary::Response<'_>, error: &Error) {
    let message = error.to_string();
    binary::encode(out, &binary::Response { status: binary_status(error), value: message.as_bytes(), ..base.clone() });
}

/// The response to a store, append, delete or touch.
fn respond_binary_write(
    out: &mut Vec<u8>,
    base: &binary::Response,
    key: &[u8],
    quiet: bool,
    result: Result<WriteOutcome>,
    absent: u16,
) {
    match result {
        Ok(WriteOutcome::Stored { new, .. }) => {
            if !quiet {
                let cas = cas_token(key, std::slice::from_ref(&new));
                binary::encode(out, &binary::Response { cas, ..base.clone() });
            }
        }
        Ok(outcome) => {
            let status = binary_outcome_status(&outcome, absent);
            binary::encode(out, &binary::Response { status, value: b"Not stored", ..base.clone() });
        }
        Err(e) => binary_error(out, base, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_requests_become_the_commands_text_and_meta_run() {
        use binary::op;
        let request = |opcode, extras: Vec<u8>, cas| binary::Request {
            opcode,
            key: Bytes::from_static(b"k"),
            extras: Bytes::from(extras),
            value: Bytes::from_static(b"v"),
            cas,
            opaque: 0,
        };
        let set = [&5u32.to_be_bytes()[..], &0u32.to_be_bytes()].concat();
        let Ok(Some(BinaryCommand::Store(store, _))) = binary_command(&request(op::ADD, set.clone(), 7), 100) else { panic!() };
        assert_eq!((store.mode, store.flags, store.cas), (StoreMode::Add, 5, Some(7)), "a cas binds any mode, as in meta");
        let incr = [&1u64.to_be_bytes()[..], &10u64.to_be_bytes(), &u32::MAX.to_be_bytes()].concat();
        let Ok(Some(BinaryCommand::Arith(arith))) = binary_command(&request(op::INCREMENT, incr, 0), 100) else { panic!() };
        assert_eq!(arith.create, None, "an exptime of all ones makes no counter");
        let incr = [&1u64.to_be_bytes()[..], &10u64.to_be_bytes(), &60u32.to_be_bytes()].concat();
        let Ok(Some(BinaryCommand::Arith(arith))) = binary_command(&request(op::INCREMENT, incr, 0), 100) else { panic!() };
        assert_eq!(arith.create, Some((10, 160)));
        assert!(matches!(binary_command(&request(op::SET, vec![1], 0), 100), Err("Invalid arguments")));
        assert!(matches!(binary_command(&request(op::NOOP, vec![], 0), 100), Ok(None)));
    }

    #[test]
    fn node_errors_take_the_binary_status_memcached_would() {
        assert_eq!(binary_status(&Error::TooLarge), binary::status::TOO_LARGE);
        assert_eq!(binary_status(&Error::Client("flush".into())), binary::status::INVALID);
        assert_eq!(binary_status(&Error::Busy("b".into())), binary::status::TEMPORARY_FAILURE);
    }

    #[test]
    fn exptimes_read_the_memcached_way() {
        let now = 1_700_000_000;
        assert_eq!(expires_at(0, now), 0);
        assert_eq!(expires_at(-1, now), 1);
        assert_eq!(expires_at(10, now), now + 10);
        assert_eq!(expires_at(RELATIVE_EXPTIME_LIMIT, now), now + RELATIVE_EXPTIME_LIMIT as u64);
        assert_eq!(expires_at(now as i64 + 5, now), now + 5);
    }
}

//! One client connection: an actor that reads bytes, parses commands,
//! runs them through the coordinator in order, and writes the replies.
//! While a batch of pipelined commands runs, reading pauses: the client's
//! own pace is the backpressure.

use super::binary;
use super::parse::{self, valid_key, Command, Parsed, StoreKind};
use super::reply::{error_line, line, value_block};
use super::SessionEnv;
use crate::coordinator::Origin;
use crate::error::{Error, Result};
use crate::stats::{report, NodeStats};
use crate::store::{coarse_monotonic_millis, Condition, FlushAll, Mutation, Write, WriteOutcome};
use crate::version::{cas_token, distinct_values, Version};
use actix::prelude::*;
use bytes::{Buf, Bytes, BytesMut};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// What one read brought: mostly a single command (no allocation for it).
type Steps = smallvec::SmallVec<[Step; 1]>;

/// A client connection's actor: it owns the connection's serving loop and
/// closes idle or dribbling clients.
pub struct Session {
    env: Arc<SessionEnv>,
    activity: Rc<Activity>,
    /// Taken by the serving loop when the actor starts.
    stream: Option<TcpStream>,
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
}

/// Room the read buffer keeps free for the next read.
const READ_ROOM: usize = 16 * 1024;
/// A reply buffer that grew past this (a huge multi-get) is not kept.
const KEEP_REPLY_CAPACITY: usize = 1 << 20;

impl Session {
    /// Starts a session on a worker thread. The socket travels as a std
    /// socket and is registered with the worker's own event loop there.
    pub fn start_on(worker: &ArbiterHandle, stream: std::net::TcpStream, env: Arc<SessionEnv>) {
        Session::start_in_arbiter(worker, move |ctx| {
            let activity =
                Rc::new(Activity { last_active: Cell::new(coarse_monotonic_millis()), partial_since: Cell::new(None) });
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => Some(stream),
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
        if let Some(stream) = self.stream.take() {
            let connection = Connection { env: self.env.clone(), buf: BytesMut::with_capacity(READ_ROOM), skip: 0, binary: None };
            let serve = serve(connection, stream, self.activity.clone());
            let ends = EndsSession(ctx.address());
            self.serving = Some(actix::spawn(async move {
                let _ends = ends;
                serve.await;
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
async fn serve(mut conn: Connection, stream: TcpStream, activity: Rc<Activity>) {
    let (mut reader, mut writer) = stream.into_split();
    let env = conn.env.clone();
    let mut out = Vec::with_capacity(4096);
    loop {
        if conn.buf.capacity() - conn.buf.len() < READ_ROOM / 4 {
            conn.buf.reserve(READ_ROOM);
        }
        let read = match reader.read_buf(&mut conn.buf).await {
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
        if writer.write_all(&out).await.is_err() {
            return;
        }
        NodeStats::add(&env.stats.bytes_written, out.len() as u64);
        if close {
            return;
        }
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

async fn read(env: &SessionEnv, key: Bytes) -> Result<Vec<Version>> {
    env.coordinator.get(key, Origin::CLIENT, None).await
}

async fn write(env: &SessionEnv, key: Bytes, write: Write) -> Result<WriteOutcome> {
    env.coordinator.write(key, write, Origin::CLIENT, None).await
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

/// Runs one command, appending its reply to `out`.
async fn execute(env: &SessionEnv, command: Command, out: &mut Vec<u8>) -> Flow {
    let stats = &env.stats;
    match command {
        Command::Get { keys, with_cas, touch } => {
            let fetch = |key: &Bytes| {
                let key = key.clone();
                async move {
                    match touch {
                        None => read(env, key).await,
                        Some(exptime) => {
                            let mutation = Mutation::Touch { expires_at: expires_at(exptime, env.clock().secs()) };
                            match write(env, key, Write { condition: Condition::Present, mutation }).await? {
                                WriteOutcome::Stored { new, .. } => Ok(vec![new]),
                                _ => Ok(Vec::new()),
                            }
                        }
                    }
                }
            };
            // The common single-key get is awaited as it is; a multi-get's
            // keys are fetched at once.
            let results: smallvec::SmallVec<[_; 1]> = match keys.as_slice() {
                [key] => smallvec::smallvec![fetch(key).await],
                _ => futures_util::future::join_all(keys.iter().map(fetch)).await.into(),
            };
            NodeStats::add(&stats.cmd_get, keys.len() as u64);
            if touch.is_some() {
                NodeStats::add(&stats.cmd_touch, keys.len() as u64);
            }
            // Values go straight into the reply; on a failure it is cut
            // back to what it held before this command.
            let start = out.len();
            for (key, result) in keys.iter().zip(results) {
                match result {
                    Ok(versions) if versions.is_empty() => NodeStats::incr(&stats.get_misses),
                    Ok(versions) => {
                        NodeStats::incr(&stats.get_hits);
                        let cas = with_cas.then(|| cas_token(key, &versions));
                        for v in distinct_values(&versions) {
                            value_block(out, key, v.flags, &v.value, cas);
                        }
                    }
                    Err(e) => {
                        // One key's failure fails the command: a partial
                        // answer would read as misses.
                        out.truncate(start);
                        line(out, &error_line(&e));
                        return Flow::Continue;
                    }
                }
            }
            line(out, "END");
        }
        Command::Store { kind, key, flags, exptime, value, cas, noreply } => {
            NodeStats::incr(&stats.cmd_set);
            let set = Mutation::Set { value: value.clone(), flags, expires_at: expires_at(exptime, env.clock().secs()) };
            let w = match kind {
                StoreKind::Set => Write { condition: Condition::Always, mutation: set },
                StoreKind::Add => Write { condition: Condition::Absent, mutation: set },
                StoreKind::Replace => Write { condition: Condition::Present, mutation: set },
                StoreKind::Cas => Write { condition: Condition::Context(cas), mutation: set },
                StoreKind::Append => Write { condition: Condition::Present, mutation: Mutation::Append(value) },
                StoreKind::Prepend => Write { condition: Condition::Present, mutation: Mutation::Prepend(value) },
            };
            let result = write(env, key, w).await.map(|outcome| match outcome {
                WriteOutcome::Stored { .. } => "STORED",
                WriteOutcome::NotStored => "NOT_STORED",
                WriteOutcome::Exists => "EXISTS",
                WriteOutcome::NotFound | WriteOutcome::NonNumeric => "NOT_FOUND",
            });
            if kind == StoreKind::Cas {
                match result {
                    Ok("STORED") => NodeStats::incr(&stats.cas_hits),
                    Ok("EXISTS") => NodeStats::incr(&stats.cas_badval),
                    Ok(_) => NodeStats::incr(&stats.cas_misses),
                    Err(_) => {}
                }
            }
            respond(out, noreply, result);
        }
        Command::Delete { key, noreply } => {
            let result = write(env, key, Write::delete()).await.map(|outcome| match outcome {
                WriteOutcome::Stored { .. } => "DELETED",
                _ => "NOT_FOUND",
            });
            if let Ok(reply) = result {
                NodeStats::hit_or_miss(reply == "DELETED", &stats.delete_hits, &stats.delete_misses);
            }
            respond(out, noreply, result);
        }
        Command::Arith { key, delta, incr, noreply } => {
            let mutation = if incr { Mutation::Incr(delta) } else { Mutation::Decr(delta) };
            let result = write(env, key, Write { condition: Condition::Present, mutation }).await;
            if let Ok(outcome) = &result {
                let hit = matches!(outcome, WriteOutcome::Stored { .. });
                match incr {
                    true => NodeStats::hit_or_miss(hit, &stats.incr_hits, &stats.incr_misses),
                    false => NodeStats::hit_or_miss(hit, &stats.decr_hits, &stats.decr_misses),
                }
            }
            let text = match &result {
                Ok(WriteOutcome::Stored { new, .. }) => Ok(String::from_utf8_lossy(&new.value).into_owned()),
                Ok(WriteOutcome::NonNumeric) => Err(Error::Client("cannot increment or decrement non-numeric value".into())),
                Ok(_) => Ok("NOT_FOUND".to_string()),
                Err(e) => Err(e.clone()),
            };
            respond(out, noreply, text.as_deref().map_err(Clone::clone));
        }
        Command::Touch { key, exptime, noreply } => {
            NodeStats::incr(&stats.cmd_touch);
            let mutation = Mutation::Touch { expires_at: expires_at(exptime, env.clock().secs()) };
            let result = write(env, key, Write { condition: Condition::Present, mutation }).await.map(|o| match o {
                WriteOutcome::Stored { .. } => "TOUCHED",
                _ => "NOT_FOUND",
            });
            if let Ok(reply) = result {
                NodeStats::hit_or_miss(reply == "TOUCHED", &stats.touch_hits, &stats.touch_misses);
            }
            respond(out, noreply, result);
        }
        Command::FlushAll { delay, noreply } => {
            if !env.settings.allow_flush_all {
                let why = "flush_all is disabled on this node; set allow_flush_all = true in its config to enable it";
                respond(out, noreply, Err(Error::Client(why.into())));
                return Flow::Continue;
            }
            NodeStats::incr(&stats.cmd_flush);
            let store = env.store.clone();
            let flush = async move {
                match store.send(FlushAll).await {
                    Ok(Ok(n)) => tracing::info!(keys = n, "flush_all"),
                    Ok(Err(e)) => tracing::warn!("flush_all failed: {e}"),
                    Err(e) => tracing::warn!("flush_all failed: {e}"),
                }
            };
            if delay > 0 {
                actix::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(delay as u64)).await;
                    flush.await;
                });
            } else {
                flush.await;
            }
            respond(out, noreply, Ok("OK"));
        }
        Command::Stats { args } => match args.first().map(String::as_str) {
            None => {
                let ring = env.ring.snapshot();
                for (name, value) in report(stats, &env.identity, &ring) {
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
                line(out, "END");
            }
            Some("reset") => {
                stats.reset();
                line(out, "RESET");
            }
            // These describe memcached's slab allocator, which Kai has not:
            // an empty report, as memcached gives for an empty cache.
            Some("items" | "slabs" | "sizes" | "conns") => line(out, "END"),
            Some(_) => line(out, parse::ERROR),
        },
        Command::Meta(request) => super::meta_run::execute(env, request, out).await,
        Command::Version => line(out, &format!("VERSION {}", crate::stats::VERSION)),
        Command::Verbosity { noreply } => respond(out, noreply, Ok("OK")),
        Command::Quit => return Flow::Close,
    }
    Flow::Continue
}

/// The binary protocol's status for a node error.
fn binary_status(error: &Error) -> u16 {
    match error {
        Error::TooLarge => binary::status::TOO_LARGE,
        Error::Client(_) => binary::status::INVALID,
        _ => binary::status::TEMPORARY_FAILURE,
    }
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
/// `out`. The same coordinator requests as the text protocol; only the
/// framing of the answers differs. A key with siblings answers its newest
/// value, with the cas token of them all (binary gets carry one value).
async fn execute_binary(env: &SessionEnv, req: binary::Request, out: &mut Vec<u8>) -> Flow {
    use binary::{op, status, Response};
    let stats = &env.stats;
    let quiet = req.quiet();
    let base = Response { opcode: req.opcode, opaque: req.opaque, ..Default::default() };
    let answer = |out: &mut Vec<u8>, status: u16, message: &str| {
        binary::encode(out, &Response { status, value: message.as_bytes(), ..base.clone() });
    };
    let needs_key = !matches!(req.opcode, op::NOOP | op::VERSION | op::STAT | op::QUIT | op::QUITQ | op::FLUSH | op::FLUSHQ);
    if needs_key && !valid_key(&req.key) {
        answer(out, status::INVALID, "Invalid key");
        return Flow::Continue;
    }
    let now = env.clock().secs();
    let exptime = |at: usize| req.extra_u32(at).map(|e| expires_at(e as i32 as i64, now));
    match req.opcode {
        op::GET | op::GETQ | op::GETK | op::GETKQ | op::GAT | op::GATQ | op::GATK | op::GATKQ => {
            let touch = matches!(req.opcode, op::GAT | op::GATQ | op::GATK | op::GATKQ);
            let with_key = matches!(req.opcode, op::GETK | op::GETKQ | op::GATK | op::GATKQ);
            NodeStats::incr(&stats.cmd_get);
            let result = if touch {
                let Some(expires_at) = exptime(0) else {
                    answer(out, status::INVALID, "Invalid arguments");
                    return Flow::Continue;
                };
                NodeStats::incr(&stats.cmd_touch);
                let w = Write { condition: Condition::Present, mutation: Mutation::Touch { expires_at } };
                write(env, req.key.clone(), w).await.map(|o| match o {
                    WriteOutcome::Stored { new, .. } => vec![new],
                    _ => Vec::new(),
                })
            } else {
                read(env, req.key.clone()).await
            };
            match result {
                Ok(versions) => match versions.last() {
                    None => {
                        NodeStats::incr(&stats.get_misses);
                        if !quiet {
                            let key: &[u8] = if with_key { &req.key } else { b"" };
                            binary::encode(
                                out,
                                &Response { status: status::NOT_FOUND, key, value: b"Not found", ..base.clone() },
                            );
                        }
                    }
                    Some(newest) => {
                        NodeStats::incr(&stats.get_hits);
                        let flags = newest.flags.to_be_bytes();
                        let key: &[u8] = if with_key { &req.key } else { b"" };
                        let cas = cas_token(&req.key, &versions);
                        binary::encode(out, &Response { cas, extras: &flags, key, value: &newest.value, ..base.clone() });
                    }
                },
                Err(e) => answer(out, binary_status(&e), &e.to_string()),
            }
        }
        op::SET | op::SETQ | op::ADD | op::ADDQ | op::REPLACE | op::REPLACEQ => {
            NodeStats::incr(&stats.cmd_set);
            let (Some(flags), Some(expires_at)) = (req.extra_u32(0), exptime(4)) else {
                answer(out, status::INVALID, "Invalid arguments");
                return Flow::Continue;
            };
            let condition = match (req.opcode, req.cas) {
                (op::ADD | op::ADDQ, _) => Condition::Absent,
                (_, cas) if cas != 0 => Condition::Context(cas),
                (op::SET | op::SETQ, _) => Condition::Always,
                _ => Condition::Present,
            };
            let w = Write { condition, mutation: Mutation::Set { value: req.value.clone(), flags, expires_at } };
            // add on a present key is "exists", replace on an absent one "not found".
            let absent = if matches!(req.opcode, op::ADD | op::ADDQ) { status::EXISTS } else { status::NOT_FOUND };
            respond_binary_write(out, &base, &req.key, quiet, write(env, req.key.clone(), w).await, absent);
        }
        op::APPEND | op::APPENDQ | op::PREPEND | op::PREPENDQ => {
            NodeStats::incr(&stats.cmd_set);
            let mutation = if matches!(req.opcode, op::APPEND | op::APPENDQ) {
                Mutation::Append(req.value.clone())
            } else {
                Mutation::Prepend(req.value.clone())
            };
            let w = Write { condition: Condition::Present, mutation };
            respond_binary_write(out, &base, &req.key, quiet, write(env, req.key.clone(), w).await, status::NOT_STORED);
        }
        op::DELETE | op::DELETEQ => {
            let condition = if req.cas != 0 { Condition::Context(req.cas) } else { Condition::Present };
            let w = Write { condition, mutation: Mutation::Delete };
            match write(env, req.key.clone(), w).await {
                // A delete answers no cas: nothing is left to compare with.
                Ok(WriteOutcome::Stored { .. }) if !quiet => answer(out, status::OK, ""),
                Ok(WriteOutcome::Stored { .. }) => {}
                other => respond_binary_write(out, &base, &req.key, quiet, other, status::NOT_FOUND),
            }
        }
        op::TOUCH => {
            NodeStats::incr(&stats.cmd_touch);
            let Some(expires_at) = exptime(0) else {
                answer(out, status::INVALID, "Invalid arguments");
                return Flow::Continue;
            };
            let w = Write { condition: Condition::Present, mutation: Mutation::Touch { expires_at } };
            respond_binary_write(out, &base, &req.key, false, write(env, req.key.clone(), w).await, status::NOT_FOUND);
        }
        op::INCREMENT | op::INCREMENTQ | op::DECREMENT | op::DECREMENTQ => {
            let (Some(delta), Some(initial), Some(raw_exptime)) = (req.extra_u64(0), req.extra_u64(8), req.extra_u32(16)) else {
                answer(out, status::INVALID, "Invalid arguments");
                return Flow::Continue;
            };
            let incr = matches!(req.opcode, op::INCREMENT | op::INCREMENTQ);
            let mutation = if incr { Mutation::Incr(delta) } else { Mutation::Decr(delta) };
            let mut result = write(env, req.key.clone(), Write { condition: Condition::Present, mutation }).await;
            // An absent counter starts at `initial`, unless the client said
            // not to create it (exptime all ones).
            if matches!(result, Ok(WriteOutcome::NotFound)) && raw_exptime != u32::MAX {
                let set = Mutation::Set {
                    value: Bytes::from(initial.to_string()),
                    flags: 0,
                    expires_at: expires_at(raw_exptime as i64, now),
                };
                result = write(env, req.key.clone(), Write { condition: Condition::Absent, mutation: set }).await;
                if matches!(result, Ok(WriteOutcome::NotStored)) {
                    result = Ok(WriteOutcome::NotFound);
                }
            }
            match result {
                Ok(WriteOutcome::Stored { new, .. }) => {
                    if !quiet {
                        let value: u64 = std::str::from_utf8(&new.value).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                        let cas = cas_token(&req.key, std::slice::from_ref(&new));
                        binary::encode(out, &Response { cas, value: &value.to_be_bytes(), ..base.clone() });
                    }
                }
                Ok(outcome) => answer(out, binary_outcome_status(&outcome, status::NOT_FOUND), "Not stored"),
                Err(e) => answer(out, binary_status(&e), &e.to_string()),
            }
        }
        op::FLUSH | op::FLUSHQ => {
            if !env.settings.allow_flush_all {
                answer(out, status::INVALID, "flush_all is disabled on this node; set allow_flush_all = true to enable it");
                return Flow::Continue;
            }
            NodeStats::incr(&stats.cmd_flush);
            if let Err(e) = env.store.send(FlushAll).await.map_err(Error::from).and_then(|r| r) {
                answer(out, binary_status(&e), &e.to_string());
            } else if !quiet {
                answer(out, status::OK, "");
            }
        }
        op::NOOP => answer(out, status::OK, ""),
        op::VERSION => answer(out, status::OK, crate::stats::VERSION),
        op::STAT => {
            if req.key.is_empty() {
                let ring = env.ring.snapshot();
                for (name, value) in report(stats, &env.identity, &ring) {
                    let value = value.to_string();
                    binary::encode(out, &Response { key: name.as_bytes(), value: value.as_bytes(), ..base.clone() });
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
        Err(e) => {
            let message = e.to_string();
            binary::encode(out, &binary::Response { status: binary_status(&e), value: message.as_bytes(), ..base.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

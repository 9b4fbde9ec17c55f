//! The short-lived actor that runs one client request's quorum: it asks
//! the replicas, answers the client once R (or W) replied, and stops when
//! every replica answered or its one deadline passed. Late replies are safe
//! to apply: replica operations are versioned and idempotent.
//!
//! A read asks R replicas first (this node's own store among them), and
//! the others only if one of those fails, or if the quorum is not met
//! within [`SPECULATE_AFTER`] (a slow replica, not yet suspected). The
//! replicas that answered are compared and the stale among them repaired;
//! one not asked is brought level by anti-entropy.

use super::tally::{QuorumTally, TallyState};
use super::{Answer, Fetched, QuorumSetup, Target, Targets};
use crate::error::{Error, Result};
use crate::lean_context::LeanContext;
use crate::local_oneshot as oneshot;
use crate::stats::NodeStats;
use crate::store::{Condition, Write, WriteOutcome};
use crate::version::{Reconcile, Version};
use actix::prelude::*;
use bytes::Bytes;
use std::net::SocketAddrV4;
use std::time::Duration;
use tokio::time::Instant;

/// How long a read waits for its first R replicas before asking the rest:
/// past the tail of a healthy replica read under load, far below the
/// request deadline.
pub const SPECULATE_AFTER: Duration = Duration::from_millis(20);

pub enum Job {
    /// Read a key: answers its live siblings, newest last, and when a
    /// client last read it.
    Read { reply: oneshot::Sender<Result<Fetched>> },
    /// Write a key through this node as coordinator.
    Write { write: Write, reply: oneshot::Sender<Result<WriteOutcome>> },
}

/// What a request asks of its quorum: how many replies, and by when.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub needed: usize,
    pub deadline: Instant,
}

/// A replica's read: who, its versions, and when a client last read the
/// key there.
type ReadReply = (SocketAddrV4, Vec<Version>, u64);

pub struct QuorumActor {
    key: Bytes,
    /// The key's bucket, as routed: this node's store takes it as is.
    bucket: u32,
    targets: Targets,
    /// Who takes a failed replica's place, in order: for a write the live
    /// nodes past the targets (with a hint, at once), then the suspected
    /// home replicas; for a read the suspected home replicas alone.
    spares: std::collections::VecDeque<SocketAddrV4>,
    needed: usize,
    setup: std::sync::Arc<QuorumSetup>,
    job: Option<Job>,
    /// When the client (or the peer that forwarded the request) gives up:
    /// nothing is awaited after it, and a write not yet stamped by then
    /// never is.
    deadline: Instant,
    op: &'static str,
    tally: QuorumTally,
    /// Read replies by replica, for reconciling and read repair, each with
    /// when a client last read the key there since that replica's last
    /// write of it (0: not since).
    read_replies: smallvec::SmallVec<[ReadReply; 3]>,
    /// A write's outcome, held until W replicas acknowledged it.
    write_outcome: Option<WriteOutcome>,
    /// Every replica's failure, in order: all of them go into the reply.
    errors: Vec<String>,
    /// A read's answer is being reconciled; do not stop under it.
    answering: bool,
    /// The deadline passed: no more replies are awaited.
    expired: bool,
    /// A conditional write has caught up from a read quorum.
    caught_up: bool,
    finishing: bool,
}

impl QuorumActor {
    /// Whether every replica that answered holds the very same versions.
    fn replies_agree(&self) -> bool {
        // Compared in place: this runs for every read, twice.
        fn same_dots(a: &[Version], b: &[Version]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.dot == y.dot)
        }
        match self.read_replies.split_first() {
            Some(((_, first, _), rest)) => rest.iter().all(|(_, v, _)| same_dots(v, first)),
            None => true,
        }
    }

    /// Takes the client's side of the request to answer it. Only requests
    /// still owing an answer count as in flight: waiting on for late
    /// replicas (read repair) must not make a node shed load.
    fn take_job(&mut self) -> Option<Job> {
        let job = self.job.take();
        if job.is_some() {
            self.setup.stats.requests_in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        job
    }

    pub fn new(
        key: Bytes,
        bucket: u32,
        targets: Targets,
        spares: Vec<SocketAddrV4>,
        setup: std::sync::Arc<QuorumSetup>,
        job: Job,
        Ask { needed, deadline }: Ask,
    ) -> Self {
        let mut tally = QuorumTally::new(needed, targets.len());
        setup.stats.requests_in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let op = match job {
            Job::Read { .. } => "read",
            Job::Write { .. } => {
                // A write goes to every replica at once.
                while tally.ask().is_some() {}
                "write"
            }
        };
        QuorumActor {
            key,
            bucket,
            targets,
            spares: spares.into(),
            needed,
            setup,
            job: Some(job),
            deadline,
            op,
            tally,
            read_replies: smallvec::SmallVec::new(),
            write_outcome: None,
            errors: Vec::new(),
            answering: false,
            expired: false,
            caught_up: false,
            finishing: false,
        }
    }

    fn quorum_error(&self, reason: String) -> Error {
        Error::Quorum { op: self.op.into(), needed: self.needed, got: self.tally.oks(), reason }
    }

    /// Answers the client with an error, if it has not been answered.
    fn fail(&mut self, reason: String) {
        let error = self.quorum_error(reason);
        self.answer_error(error);
    }

    /// Fewer replicas are up than the quorum needs: fails at once, counting
    /// those that are up (this node among them) as the ones that answer.
    fn fail_short(&mut self) {
        let up = self.targets.len();
        let reason = format!("only {up} of the key's replicas {} up", if up == 1 { "is" } else { "are" });
        let error = Error::Quorum { op: self.op.into(), needed: self.needed, got: up, reason };
        self.answer_error(error);
    }

    fn answer_error(&mut self, error: Error) {
        match self.take_job() {
            Some(Job::Read { reply }) => {
                NodeStats::incr(&self.setup.stats.quorum_failures);
                reply.send(Err(error));
            }
            Some(Job::Write { reply, .. }) => {
                NodeStats::incr(&self.setup.stats.quorum_failures);
                reply.send(Err(error));
            }
            None => {}
        }
    }

    fn record(&mut self, ok: bool, error: Option<Error>, ctx: &mut LeanContext<Self>) {
        if let Some(e) = error {
            self.errors.push(e.to_string());
        }
        let state = if ok { self.tally.ok() } else { self.tally.fail() };
        match state {
            TallyState::Met => self.answer(ctx),
            TallyState::Failed => {
                let why = if self.errors.is_empty() { "replicas failed".into() } else { self.errors.join("; ") };
                self.fail(why);
            }
            TallyState::Waiting => {}
        }
        self.maybe_finish(ctx);
    }

    /// Finishes once the client has its answer and no more replies will
    /// come (all are in, or the deadline passed).
    fn maybe_finish(&mut self, ctx: &mut LeanContext<Self>) {
        if self.job.is_none() && !self.answering && (self.tally.all_in() || self.expired) {
            self.finish(ctx);
        }
    }

    /// The quorum is met: answer the client (a read after reconciling).
    fn answer(&mut self, ctx: &mut LeanContext<Self>) {
        match self.take_job() {
            Some(Job::Read { reply }) => {
                let stats = self.setup.stats.clone();
                let clock = self.setup.via.store.direct.clock().clone();
                // A replica's reads count only if it holds what is answered:
                // one behind read an older write of the key.
                let last_read = |replies: &[ReadReply], stale: &[usize]| {
                    let current = replies.iter().enumerate().filter(|(i, _)| !stale.contains(i));
                    current.map(|(_, (_, _, read))| *read).max().unwrap_or(0)
                };
                let answer = move |mut siblings: Vec<Version>, last_read_ms: u64| {
                    let now = clock.secs();
                    let expired = siblings.iter().any(|v| !v.deleted && !v.is_live(now));
                    siblings.retain(|v| v.is_live(now));
                    if expired && siblings.is_empty() {
                        NodeStats::incr(&stats.get_expired);
                    }
                    if siblings.len() > 1 {
                        NodeStats::add(&stats.siblings_served, siblings.len() as u64);
                    }
                    Fetched { siblings, last_read_ms }
                };
                let sole_replica = self.targets.len() == 1;
                if let [(_, only, last_read_ms)] = self.read_replies.as_mut_slice() {
                    // One reply (R = 1) is already reconciled: a replica
                    // never holds a version another of its versions covers.
                    // With a sole replica nothing repairs from it later,
                    // so it moves out rather than being copied.
                    let siblings = if sole_replica { std::mem::take(only) } else { only.clone() };
                    reply.send(Ok(answer(siblings, *last_read_ms)));
                    return;
                }
                if self.replies_agree() {
                    // Replicas in agreement (the common case): nothing to
                    // reconcile. Once every replica asked has answered,
                    // nothing is left to repair either: the answer moves out.
                    let last_read_ms = last_read(&self.read_replies, &[]);
                    let siblings = if self.tally.all_in() {
                        std::mem::take(&mut self.read_replies).swap_remove(0).1
                    } else {
                        self.read_replies[0].1.clone()
                    };
                    reply.send(Ok(answer(siblings, last_read_ms)));
                    return;
                }
                let replies: Vec<Vec<Version>> = self.read_replies.iter().map(|(_, v, _)| v.clone()).collect();
                self.answering = true;
                self.setup
                    .version
                    .send(Reconcile(replies))
                    .into_actor(self)
                    .map(move |result, act, ctx| {
                        let fetched = result.map_err(Error::from).map(|r| {
                            let last_read_ms = last_read(&act.read_replies, &r.stale);
                            answer(r.siblings, last_read_ms)
                        });
                        reply.send(fetched);
                        act.answering = false;
                        act.maybe_finish(ctx);
                    })
                    .spawn(ctx);
            }
            Some(Job::Write { reply, .. }) => {
                let outcome = self.write_outcome.clone().ok_or_else(|| self.quorum_error("no outcome".into()));
                reply.send(outcome);
            }
            None => {}
        }
    }

    /// Every replica answered (or the deadline passed): repair stale
    /// replicas from what the read learned, then stop.
    fn finish(&mut self, ctx: &mut LeanContext<Self>) {
        if self.finishing {
            return;
        }
        self.finishing = true;
        if self.read_replies.len() < 2 || self.replies_agree() {
            // No replica is behind another: nothing to repair.
            ctx.stop();
            return;
        }
        let replies: Vec<Vec<Version>> = self.read_replies.iter().map(|(_, v, _)| v.clone()).collect();
        self.setup
            .version
            .send(Reconcile(replies))
            .into_actor(self)
            .map(|result, act, ctx| {
                if let Ok(reconciled) = result {
                    if !reconciled.stale.is_empty() {
                        NodeStats::incr(&act.setup.stats.unreconciled_get);
                    }
                    for i in reconciled.stale {
                        let node = act.read_replies[i].0;
                        NodeStats::incr(&act.setup.stats.read_repairs);
                        let target = Target { node, hint: None };
                        let repair = act.setup.via.put(
                            &target,
                            act.key.clone(),
                            act.bucket,
                            reconciled.siblings.clone(),
                            act.setup.timeout,
                        );
                        actix::spawn(async move {
                            if let Err(e) = repair.wait().await {
                                tracing::debug!(%node, "read repair failed: {e}");
                            }
                        });
                    }
                }
                ctx.stop();
            })
            .spawn(ctx);
    }

    /// Asks R replicas, this node first (its store answers at once); the
    /// rest if the quorum is not met soon.
    fn start_read(&mut self, ctx: &mut LeanContext<Self>) {
        let me = self.setup.via.me;
        self.targets.sort_by_key(|t| t.node != me);
        for _ in 0..self.needed.min(self.targets.len()) {
            self.ask_next(ctx);
        }
    }

    /// The speculation delay passed: a read still short of its quorum asks
    /// every replica not asked yet.
    fn speculate(&mut self, ctx: &mut LeanContext<Self>) {
        if self.job.is_some() && !self.expired && !self.tally.asked_all() {
            NodeStats::incr(&self.setup.stats.speculative_reads);
            while !self.tally.asked_all() {
                self.ask_next(ctx);
            }
        }
    }

    /// The request's one deadline passed: no more replies are awaited.
    fn expire(&mut self, ctx: &mut LeanContext<Self>) {
        self.expired = true;
        if self.tally.state() != TallyState::Met {
            // Say who failed, and that the rest did not answer in time.
            let mut why = self.errors.clone();
            why.push("the rest did not answer by the request's deadline".to_string());
            self.fail(why.join("; "));
        }
        self.maybe_finish(ctx);
    }

    /// Asks the next replica not asked yet, if any, for the key's versions;
    /// a failure asks the one after it.
    fn ask_next(&mut self, ctx: &mut LeanContext<Self>) {
        let Some(i) = self.tally.ask() else { return };
        let node = self.targets[i].node;
        let answer = self.setup.via.get(node, self.key.clone(), self.bucket, true, None);
        self.on_answer(answer, ctx, move |act, result, ctx| match result {
            Ok((versions, last_read_ms)) => {
                act.read_replies.push((node, versions, last_read_ms));
                act.record(true, None, ctx);
            }
            Err(e) => {
                if act.job.is_some() && !act.expired {
                    if act.tally.asked_all() {
                        // Every replica asked: a suspected one is the last hope.
                        if let Some(suspect) = act.spares.pop_front() {
                            tracing::debug!(%node, %suspect, "replica read failed, asking a suspected replica: {e}");
                            act.targets.push(Target { node: suspect, hint: None });
                            act.tally.add_replica();
                        }
                    }
                    if !act.tally.asked_all() {
                        NodeStats::incr(&act.setup.stats.speculative_reads);
                        act.ask_next(ctx);
                    }
                }
                act.record(false, Some(e), ctx);
            }
        });
    }

    /// A conditional write (cas, add, replace, incr, delete, ...) is decided
    /// on what a read quorum holds, not on this node's copy alone, which may
    /// lag a write that W of N replicas acknowledged: first the versions of
    /// R - 1 other replicas (this node is the R-th) are merged into this
    /// node's copy, then the write runs. So a token from any node is
    /// honoured through any other, and a stale one refused.
    fn catch_up_then_write(&mut self, write: Write, ctx: &mut LeanContext<Self>) {
        self.caught_up = true;
        let me = self.setup.via.me;
        let others: Vec<SocketAddrV4> = self.targets.iter().map(|t| t.node).filter(|n| *n != me).collect();
        let need = self.setup.read_quorum.saturating_sub(1).min(others.len());
        let timeout = self.deadline.saturating_duration_since(Instant::now());
        let (via, key, bucket) = (self.setup.via.clone(), self.key.clone(), self.bucket);
        let catch_up = async move {
            use futures_util::stream::{FuturesUnordered, StreamExt};
            let mut replies: FuturesUnordered<_> =
                others.iter().map(|n| via.get(*n, key.clone(), bucket, false, Some(timeout / 2)).wait()).collect();
            let (mut versions, mut answered) = (Vec::new(), 0);
            while answered < need {
                match replies.next().await {
                    Some(Ok((held, _))) => {
                        versions.extend(held);
                        answered += 1;
                    }
                    Some(Err(e)) => tracing::debug!("a replica did not answer before a conditional write: {e}"),
                    None => break,
                }
            }
            if versions.is_empty() {
                return Ok(());
            }
            via.put(&Target { node: me, hint: None }, key, bucket, versions, timeout).wait().await
        };
        catch_up
            .into_actor(self)
            .map(move |result, act, ctx| {
                if let Err(e) = result {
                    tracing::debug!("catching up before a conditional write failed: {e}");
                }
                if act.job.is_none() {
                    // The deadline answered the client meanwhile.
                    ctx.stop();
                    return;
                }
                act.start_write(write, ctx);
            })
            .spawn(ctx);
    }

    /// Sends what the coordinator holds for the key to one replica. If a
    /// home replica fails, the next spare takes it with a hint for that
    /// home, at once: the write never waits for the failure detector, and
    /// an acknowledged write has its N copies or hints for them.
    ///
    /// Each replica write has half the time left, so even one to a stalled
    /// (not refusing) replica fails in time for a stand-in to take it
    /// before this actor's deadline.
    fn replicate(&mut self, target: Target, held: Vec<Version>, ctx: &mut LeanContext<Self>) {
        let timeout = self.deadline.saturating_duration_since(Instant::now()) / 2;
        let answer = self.setup.via.put(&target, self.key.clone(), self.bucket, held.clone(), timeout);
        self.on_answer(answer, ctx, move |act, result, ctx| match result {
            Ok(()) => act.record(true, None, ctx),
            Err(e) => match (target.hint, act.spares.pop_front()) {
                (None, Some(spare)) if !act.expired => {
                    tracing::debug!(home = %target.node, %spare, "replica write failed, a stand-in takes it: {e}");
                    NodeStats::incr(&act.setup.stats.hinted_at_once);
                    act.replicate(Target { node: spare, hint: Some(target.node) }, held, ctx);
                }
                _ => act.record(false, Some(e), ctx),
            },
        });
    }

    fn start_write(&mut self, write: Write, ctx: &mut LeanContext<Self>) {
        let others = self.targets.iter().any(|t| t.node != self.setup.via.me);
        if !self.caught_up && others && write.condition != Condition::Always {
            self.catch_up_then_write(write, ctx);
            return;
        }
        // This node stamps and stores first; then the other replicas receive
        // everything it holds for the key (and a stand-in its hint).
        let coordinate = self.setup.via.coordinate(self.key.clone(), self.bucket, write, self.deadline);
        self.on_answer(coordinate, ctx, |act, result, ctx| match result {
            Ok(WriteOutcome::Stored { new, held }) => {
                act.write_outcome = Some(WriteOutcome::Stored { new, held: held.clone() });
                let me = act.setup.via.me;
                // The coordinated write is this node's ack, unless this
                // node is a stand-in: then its ack waits for the hint.
                let mut acked_here = true;
                for target in act.targets.clone() {
                    if target.node == me && target.hint.is_none() {
                        continue;
                    }
                    if target.node == me {
                        acked_here = false;
                    }
                    act.replicate(target, held.clone(), ctx);
                }
                if acked_here {
                    act.record(true, None, ctx);
                }
            }
            Ok(outcome) => {
                // Refused (add on a present key, a stale cas, ...):
                // nothing to replicate.
                if let Some(Job::Write { reply, .. }) = act.take_job() {
                    reply.send(Ok(outcome));
                }
                ctx.stop();
            }
            Err(e) => {
                if let Some(Job::Write { reply, .. }) = act.take_job() {
                    reply.send(Err(e));
                }
                ctx.stop();
            }
        });
    }

    /// Runs `then` on a replica's answer: at once when it is here already,
    /// else when it comes (and not at all if the actor stopped first).
    fn on_answer<T: 'static>(
        &mut self,
        answer: Answer<T>,
        ctx: &mut LeanContext<Self>,
        then: impl FnOnce(&mut Self, Result<T>, &mut LeanContext<Self>) + 'static,
    ) {
        match answer {
            Answer::Now(result) => then(self, result, ctx),
            Answer::Later(future) => {
                future.into_actor(self).map(move |result, act, ctx| then(act, result, ctx)).spawn(ctx);
            }
        }
    }
}

/// Starts a request's quorum actor with its first turn here, on the
/// requester's task: a request this node's own store answers whole is done
/// before a task of its own would even have been scheduled. One still
/// awaiting replicas goes on as its own task, where later turns run. A
/// panic in that first turn is the actor's alone, as in its own task: it is
/// dropped (the client hears that it stopped) and the requester goes on.
/// It runs in a [`LeanContext`]: replies reach it as the futures it
/// spawned, never through a mailbox, so none is made for it.
pub async fn start(actor: QuorumActor) {
    use std::future::Future;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::task::Poll;
    let mut run = LeanContext::new().into_future(actor);
    let first = std::future::poll_fn(|cx| Poll::Ready(catch_unwind(AssertUnwindSafe(|| std::pin::Pin::new(&mut run).poll(cx)))));
    if let Ok(Poll::Pending) = first.await {
        actix::spawn(run);
    }
}

impl Drop for QuorumActor {
    /// Stopped (or panicked) before the client had its answer: the count of
    /// requests in flight must never drift.
    fn drop(&mut self) {
        self.take_job();
    }
}

impl Actor for QuorumActor {
    type Context = LeanContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.setup.faults.take_quorum_panic() {
            panic!("fault injection: quorum actor told to panic");
        }
        match &self.job {
            Some(Job::Read { .. }) => {
                if self.tally.state() == TallyState::Failed {
                    self.fail_short();
                    ctx.stop();
                } else {
                    self.start_read(ctx);
                }
            }
            Some(Job::Write { write, .. }) => {
                let write = write.clone();
                if self.tally.state() == TallyState::Failed {
                    self.fail_short();
                    ctx.stop();
                } else {
                    self.start_write(write, ctx);
                }
            }
            None => ctx.stop(),
        }
        if ctx.state() == ActorState::Running {
            // Something is still awaited: one deadline for the whole
            // request, not one per reply. (A request this node's store
            // answered whole, at once, is done and needs no timer.) A read
            // with replicas not asked yet reaches it through the
            // speculation delay: one timer, re-armed only in the rare case
            // that the delay passes.
            let left = self.deadline.saturating_duration_since(Instant::now());
            if matches!(self.job, Some(Job::Read { .. })) && !self.tally.asked_all() && left > SPECULATE_AFTER {
                ctx.run_later(SPECULATE_AFTER, |act, ctx| {
                    act.speculate(ctx);
                    ctx.run_later(act.deadline.saturating_duration_since(Instant::now()), Self::expire);
                });
            } else {
                ctx.run_later(left, Self::expire);
            }
        }
    }
}

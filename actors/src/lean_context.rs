//! A lighter actix context for short-lived actors that nothing sends
//! messages to, such as a request's quorum actor.
//!
//! actix's `Context` makes a mailbox for every actor before it starts: a
//! channel of five allocations (the channel, two queue stubs, the sender's
//! task and its park flag), freed again when the actor stops. A quorum
//! actor lives for one request and is never addressed, so on a node's
//! request path that mailbox was the actor's largest fixed cost
//! (BENCHMARKS.md, "What was tried"). `LeanContext` keeps the rest of the
//! contract: `started`, futures spawned into the context or waited on,
//! `run_later`, cancellation, `stop` with `stopping` and `stopped`, and an
//! actor that stops by itself once nothing is left to run and nothing can
//! reach it. It makes the mailbox only when someone asks for the actor's
//! address.

use actix::dev::channel::{channel, AddressReceiver};
use actix::dev::{Envelope, EnvelopeProxy, OneshotSender, ToEnvelope};
use actix::prelude::*;
use futures_util::Stream;
use smallvec::SmallVec;
use std::cell::{OnceCell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as Task, Poll};

type Job<A> = Pin<Box<dyn ActorFuture<A, Output = ()>>>;
/// Shared by the context (for addresses) and its driver (which polls it
/// while the actor handles what came).
type Mailbox<A> = Rc<RefCell<AddressReceiver<A>>>;

/// As actix's mailbox: 16 messages before senders wait.
const MAILBOX_CAPACITY: usize = 16;

/// The context of an actor run by [`LeanActor`].
pub struct LeanContext<A: Actor<Context = LeanContext<A>>> {
    state: ActorState,
    /// Futures spawned since the driver last took them, with their handles.
    spawned: SmallVec<[(SpawnHandle, Job<A>); 2]>,
    /// Futures to finish before anything else runs, newest last.
    waits: SmallVec<[Job<A>; 1]>,
    cancelled: SmallVec<[SpawnHandle; 1]>,
    last_handle: SpawnHandle,
    /// Made the first time the actor's address is asked for.
    mailbox: OnceCell<Mailbox<A>>,
}

impl<A: Actor<Context = LeanContext<A>>> Default for LeanContext<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Actor<Context = LeanContext<A>>> LeanContext<A> {
    pub fn new() -> Self {
        LeanContext {
            state: ActorState::Started,
            spawned: SmallVec::new(),
            waits: SmallVec::new(),
            cancelled: SmallVec::new(),
            last_handle: SpawnHandle::default(),
            mailbox: OnceCell::new(),
        }
    }

    /// The actor in this context, as a future that runs it to its stop.
    pub fn into_future(self, act: A) -> LeanActor<A> {
        LeanActor { act, ctx: self, items: SmallVec::new(), waits: SmallVec::new() }
    }

    fn stopping(&self) -> bool {
        matches!(self.state, ActorState::Stopping | ActorState::Stopped)
    }

    fn addressed(&self) -> bool {
        self.mailbox.get().is_some_and(|rx| rx.borrow().connected())
    }
}

impl<A: Actor<Context = LeanContext<A>>> ActorContext for LeanContext<A> {
    fn stop(&mut self) {
        if self.state == ActorState::Running {
            self.state = ActorState::Stopping;
        }
    }

    fn terminate(&mut self) {
        self.state = ActorState::Stopped;
    }

    fn state(&self) -> ActorState {
        self.state
    }
}

impl<A: Actor<Context = LeanContext<A>>> AsyncContext<A> for LeanContext<A> {
    fn address(&self) -> Addr<A> {
        let mailbox = self.mailbox.get_or_init(|| Rc::new(RefCell::new(channel(MAILBOX_CAPACITY).1)));
        Addr::new(mailbox.borrow().sender())
    }

    fn spawn<F>(&mut self, fut: F) -> SpawnHandle
    where
        F: ActorFuture<A, Output = ()> + 'static,
    {
        self.last_handle = self.last_handle.next();
        self.spawned.push((self.last_handle, Box::pin(fut)));
        self.last_handle
    }

    fn wait<F>(&mut self, fut: F)
    where
        F: ActorFuture<A, Output = ()> + 'static,
    {
        self.waits.push(Box::pin(fut));
    }

    fn waiting(&self) -> bool {
        !self.waits.is_empty() || self.stopping()
    }

    fn cancel_future(&mut self, handle: SpawnHandle) -> bool {
        self.cancelled.push(handle);
        true
    }
}

impl<A, M> ToEnvelope<A, M> for LeanContext<A>
where
    A: Actor<Context = LeanContext<A>> + Handler<M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    fn pack(msg: M, tx: Option<OneshotSender<M::Result>>) -> Envelope<A> {
        Envelope::new(msg, tx)
    }
}

/// An actor and its [`LeanContext`], run as a future: `started` on the
/// first poll, then its messages and futures until it stops.
pub struct LeanActor<A: Actor<Context = LeanContext<A>>> {
    act: A,
    ctx: LeanContext<A>,
    items: SmallVec<[(SpawnHandle, Job<A>); 2]>,
    waits: SmallVec<[Job<A>; 1]>,
}

impl<A: Actor<Context = LeanContext<A>>> LeanActor<A> {
    /// Takes what the actor spawned or waits on since the last look, and
    /// drops what it cancelled; says whether anything changed.
    fn merge(&mut self) -> bool {
        let ctx = &mut self.ctx;
        let news = !ctx.spawned.is_empty() || !ctx.waits.is_empty() || !ctx.cancelled.is_empty();
        self.items.extend(ctx.spawned.drain(..));
        self.waits.extend(ctx.waits.drain(..));
        for handle in ctx.cancelled.drain(..) {
            self.items.retain(|(h, _)| *h != handle);
        }
        news
    }

    /// Nothing left to run, and nothing can send it anything.
    fn idle(&self) -> bool {
        self.items.is_empty() && self.waits.is_empty() && !self.ctx.addressed()
    }

    fn alive(&self) -> bool {
        !matches!(self.ctx.state, ActorState::Started | ActorState::Stopped)
    }
}

impl<A: Actor<Context = LeanContext<A>>> Future for LeanActor<A> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, task: &mut Task<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.ctx.state == ActorState::Started {
            this.ctx.state = ActorState::Running;
            this.act.started(&mut this.ctx);
        }
        'outer: loop {
            this.merge();
            // A future waited on holds everything else back, newest first.
            while let Some(wait) = this.waits.last_mut() {
                if this.ctx.stopping() {
                    break;
                }
                if wait.as_mut().poll(&mut this.act, &mut this.ctx, task).is_pending() {
                    return Poll::Pending;
                }
                this.waits.pop();
                this.merge();
            }
            if let Some(mailbox) = this.ctx.mailbox.get().cloned() {
                while !this.ctx.waiting() {
                    let next = Pin::new(&mut *mailbox.borrow_mut()).poll_next(task);
                    match next {
                        Poll::Ready(Some(mut envelope)) => envelope.handle(&mut this.act, &mut this.ctx),
                        Poll::Ready(None) | Poll::Pending => break,
                    }
                }
            }
            let mut i = 0;
            while i < this.items.len() && !this.ctx.stopping() {
                let polled = this.items[i].1.as_mut().poll(&mut this.act, &mut this.ctx, task);
                if polled.is_ready() {
                    this.items.swap_remove(i);
                } else {
                    i += 1;
                }
                if !this.ctx.waits.is_empty() || !this.ctx.cancelled.is_empty() {
                    continue 'outer;
                }
            }
            if this.merge() && !this.ctx.stopping() {
                continue;
            }
            match this.ctx.state {
                ActorState::Running if !this.idle() => return Poll::Pending,
                ActorState::Running | ActorState::Stopping => {
                    if this.act.stopping(&mut this.ctx) == Running::Continue {
                        this.ctx.state = ActorState::Running;
                        if this.idle() {
                            // As actix: an idle actor that will not stop waits.
                            return Poll::Pending;
                        }
                        continue;
                    }
                    this.ctx.state = ActorState::Stopped;
                    this.act.stopped(&mut this.ctx);
                    return Poll::Ready(());
                }
                ActorState::Stopped => {
                    this.act.stopped(&mut this.ctx);
                    return Poll::Ready(());
                }
                ActorState::Started => unreachable!("started above"),
            }
        }
    }
}

impl<A: Actor<Context = LeanContext<A>>> Drop for LeanActor<A> {
    /// Dropped while running (its task ended, or its first turn was not
    /// carried on): it stops as an actor does, with `stopping` and
    /// `stopped`, and its futures are dropped unfinished.
    fn drop(&mut self) {
        if self.alive() {
            self.ctx.stop();
            let _ = Pin::new(self).poll(&mut Task::from_waker(std::task::Waker::noop()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    type Log = Rc<RefCell<Vec<String>>>;
    type Plan = Box<dyn FnOnce(&mut Probe, &mut LeanContext<Probe>)>;

    /// An actor that logs what happens to it and runs a plan when it starts.
    struct Probe {
        log: Log,
        plan: Option<Plan>,
        /// How many times `stopping` keeps it running.
        refusals: usize,
    }

    impl Probe {
        fn new(log: &Log, plan: impl FnOnce(&mut Probe, &mut LeanContext<Probe>) + 'static) -> Self {
            Probe { log: log.clone(), plan: Some(Box::new(plan)), refusals: 0 }
        }

        fn note(&self, what: &str) {
            self.log.borrow_mut().push(what.to_string());
        }
    }

    impl Actor for Probe {
        type Context = LeanContext<Self>;

        fn started(&mut self, ctx: &mut Self::Context) {
            self.note("started");
            if let Some(plan) = self.plan.take() {
                plan(self, ctx);
            }
        }

        fn stopping(&mut self, _: &mut Self::Context) -> Running {
            self.note("stopping");
            if self.refusals > 0 {
                self.refusals -= 1;
                return Running::Continue;
            }
            Running::Stop
        }

        fn stopped(&mut self, _: &mut Self::Context) {
            self.note("stopped");
        }
    }

    #[derive(Message)]
    #[rtype(result = "usize")]
    struct Ping(usize);

    impl Handler<Ping> for Probe {
        type Result = usize;

        fn handle(&mut self, msg: Ping, _: &mut Self::Context) -> usize {
            self.note("ping");
            msg.0 + 1
        }
    }

    fn log() -> Log {
        Rc::new(RefCell::new(Vec::new()))
    }

    async fn run(actor: Probe) {
        tokio::time::timeout(Duration::from_secs(5), LeanContext::new().into_future(actor)).await.expect("the actor stops");
    }

    #[actix::test]
    async fn an_actor_with_nothing_to_do_stops_on_its_first_turn() {
        let log = log();
        let mut run = LeanContext::new().into_future(Probe::new(&log, |_, _| {}));
        let polled = Pin::new(&mut run).poll(&mut Task::from_waker(std::task::Waker::noop()));
        assert!(polled.is_ready());
        assert_eq!(*log.borrow(), ["started", "stopping", "stopped"]);
    }

    #[actix::test]
    async fn spawned_futures_and_timers_run_before_it_stops_by_itself() {
        let log = log();
        run(Probe::new(&log, |_, ctx| {
            ctx.run_later(Duration::from_millis(20), |act, ctx| {
                act.note("late");
                ctx.run_later(Duration::from_millis(1), |act, _| act.note("later still"));
            });
            let soon = tokio::time::sleep(Duration::from_millis(5));
            actix::fut::wrap_future::<_, Probe>(soon).map(|_, act, _| act.note("spawned")).spawn(ctx);
        }))
        .await;
        assert_eq!(*log.borrow(), ["started", "spawned", "late", "later still", "stopping", "stopped"]);
    }

    #[actix::test]
    async fn stop_drops_what_is_pending_and_says_stopping_then_stopped() {
        let log = log();
        run(Probe::new(&log, |_, ctx| {
            ctx.run_later(Duration::from_secs(3600), |act, _| act.note("never"));
            ctx.run_later(Duration::from_millis(5), |act, ctx| {
                act.note("stop");
                ctx.stop();
            });
        }))
        .await;
        assert_eq!(*log.borrow(), ["started", "stop", "stopping", "stopped"]);
    }

    #[actix::test]
    async fn stopping_may_keep_it_running() {
        let log = log();
        let mut probe = Probe::new(&log, |_, ctx| {
            ctx.stop();
            ctx.run_later(Duration::from_millis(5), |act, ctx| {
                act.note("still here");
                ctx.stop();
            });
        });
        probe.refusals = 1;
        run(probe).await;
        assert_eq!(*log.borrow(), ["started", "stopping", "still here", "stopping", "stopped"]);
    }

    #[actix::test]
    async fn a_cancelled_future_never_runs() {
        let log = log();
        run(Probe::new(&log, |_, ctx| {
            let handle = ctx.run_later(Duration::from_millis(5), |act, _| act.note("cancelled"));
            ctx.run_later(Duration::from_millis(1), move |act, ctx| {
                act.note("cancels");
                ctx.cancel_future(handle);
            });
        }))
        .await;
        assert_eq!(*log.borrow(), ["started", "cancels", "stopping", "stopped"]);
    }

    #[actix::test]
    async fn a_future_waited_on_holds_back_the_others() {
        let log = log();
        run(Probe::new(&log, |_, ctx| {
            let slow = tokio::time::sleep(Duration::from_millis(20));
            ctx.wait(actix::fut::wrap_future::<_, Probe>(slow).map(|_, act, _| act.note("waited")));
            ctx.spawn(actix::fut::wrap_future::<_, Probe>(async {}).map(|_, act, _| act.note("spawned")));
        }))
        .await;
        assert_eq!(*log.borrow(), ["started", "waited", "spawned", "stopping", "stopped"]);
    }

    #[actix::test]
    async fn an_address_brings_a_mailbox_that_keeps_the_actor_while_held() {
        let log = log();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let actor = Probe::new(&log, move |_, ctx| {
            let _ = tx.send(ctx.address());
        });
        let running = actix::spawn(LeanContext::new().into_future(actor));
        let addr = rx.await.expect("the actor hands out its address");
        assert_eq!(addr.send(Ping(41)).await.expect("delivered"), 42);
        assert_eq!(addr.send(Ping(1)).await.expect("delivered"), 2);
        assert!(!running.is_finished(), "held addresses keep it");
        drop(addr);
        tokio::time::timeout(Duration::from_secs(5), running).await.expect("stops").expect("no panic");
        assert_eq!(*log.borrow(), ["started", "ping", "ping", "stopping", "stopped"]);
    }

    #[actix::test]
    async fn dropped_while_running_it_stops_as_an_actor_does() {
        let log = log();
        let mut run = LeanContext::new().into_future(Probe::new(&log, |_, ctx| {
            ctx.run_later(Duration::from_secs(3600), |act, _| act.note("never"));
        }));
        assert!(Pin::new(&mut run).poll(&mut Task::from_waker(std::task::Waker::noop())).is_pending());
        drop(run);
        assert_eq!(*log.borrow(), ["started", "stopping", "stopped"]);
    }
}

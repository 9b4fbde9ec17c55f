//! Supervision, the Erlang way: a module's actor that panics is started
//! afresh by its supervisor (its mailbox, and so every address of it, kept),
//! and a node that panics too often exits so its service manager starts it
//! again. A node never stays up half-dead.
//!
//! actix's own `Supervisor` restarts an actor that stops, but a panic
//! unwinds out of the actor's future and the runtime drops it, mailbox and
//! all: every later message gets "Mailbox has closed". Here the actor's
//! future is polled under `catch_unwind`; after a panic it is restarted in
//! place (spawned work cancelled, `restarting` then `started` called again).
//!
//! Every panic anywhere (an actor, a connection's task, a request's quorum
//! actor) is logged through `tracing` with its message and location by the
//! panic hook, and counted: past `max_restarts` within `period` the process
//! exits with status 70. So does a panic on a store pool thread, which
//! cannot be restarted in place. Acknowledged writes are in the engine
//! before the acknowledgement, so an exit loses none.

use actix::dev::channel;
use actix::dev::ContextFut;
use actix::prelude::*;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

/// The exit status of a node that gave up after too many panics
/// (EX_SOFTWARE): its service manager should start it again.
pub const EXIT_TOO_MANY_PANICS: i32 = 70;

/// The name of the store pool's threads: a panic there ends the process.
pub const STORE_THREAD: &str = "kai-store";

/// How many panics a node survives within a period before it exits.
#[derive(Debug, Clone, Copy)]
pub struct RestartIntensity {
    pub max_restarts: u32,
    pub period: Duration,
}

impl RestartIntensity {
    /// Whether one more panic at `now`, after those in `recent`, is past
    /// the limit; `recent` keeps only those within the period.
    pub fn exceeded(&self, recent: &mut VecDeque<Instant>, now: Instant) -> bool {
        while recent.front().is_some_and(|t| now.duration_since(*t) > self.period) {
            recent.pop_front();
        }
        recent.push_back(now);
        recent.len() as u32 > self.max_restarts
    }
}

static INTENSITY: OnceLock<RestartIntensity> = OnceLock::new();
static RECENT: Mutex<VecDeque<Instant>> = Mutex::new(VecDeque::new());

/// Installs the panic hook; call once at start, before any actor runs.
pub fn install(intensity: RestartIntensity) {
    let _ = INTENSITY.set(intensity);
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!(%location, %thread, "panic: {message}");
        crate::stats::count_panic();
        let intensity = INTENSITY.get().copied().unwrap_or(RestartIntensity { max_restarts: 0, period: Duration::ZERO });
        let too_many = intensity.exceeded(&mut RECENT.lock().unwrap_or_else(|e| e.into_inner()), Instant::now());
        if too_many || thread.starts_with(STORE_THREAD) {
            let why = if too_many {
                format!("more than {} panics within {:?}", intensity.max_restarts, intensity.period)
            } else {
                "a store thread panicked".to_string()
            };
            tracing::error!("{why}: exiting (status {EXIT_TOO_MANY_PANICS}) for the service manager to restart the node");
            // _exit, not exit: exit's handlers (the allocator's among them)
            // can deadlock against threads still running. Nothing is lost:
            // every acknowledged write is in the engine already.
            // SAFETY: _exit ends the process at once; nothing runs after it.
            unsafe { libc::_exit(EXIT_TOO_MANY_PANICS) }
        }
    }));
}

/// Makes an actor panic, for fault-injection tests.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Panic;

/// Runs an actor's future, restarting it in place when it stops or panics.
struct PanicSupervisor<A: Actor<Context = Context<A>>> {
    fut: ContextFut<A, Context<A>>,
}

impl<A> Future for PanicSupervisor<A>
where
    A: Actor<Context = Context<A>> + actix::Supervised + Unpin,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.fut).poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                // Stopped, or panicked (the hook logged and counted it):
                // start afresh while anyone still holds its address.
                Ok(Poll::Ready(())) | Err(_) => {
                    if !this.fut.restart() {
                        return Poll::Ready(());
                    }
                }
            }
        }
    }
}

/// Starts a supervised actor on the current thread's runtime.
pub fn start<A, F>(f: F) -> Addr<A>
where
    A: Actor<Context = Context<A>> + actix::Supervised + Unpin,
    F: FnOnce(&mut Context<A>) -> A + 'static,
{
    let mut ctx = Context::new();
    let act = f(&mut ctx);
    let addr = ctx.address();
    actix_rt::spawn(PanicSupervisor { fut: ctx.into_future(act) });
    addr
}

/// Starts a supervised actor on another arbiter's thread.
pub fn start_in_arbiter<A, F>(arbiter: &ArbiterHandle, f: F) -> Addr<A>
where
    A: Actor<Context = Context<A>> + actix::Supervised + Unpin,
    F: FnOnce(&mut Context<A>) -> A + Send + 'static,
{
    let (tx, rx) = channel::channel(16);
    arbiter.spawn_fn(move || {
        let mut ctx = Context::with_receiver(rx);
        let act = f(&mut ctx);
        actix_rt::spawn(PanicSupervisor { fut: ctx.into_future(act) });
    });
    Addr::new(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intensity_counts_panics_within_the_period_only() {
        let limit = RestartIntensity { max_restarts: 2, period: Duration::from_secs(5) };
        let mut recent = VecDeque::new();
        let t0 = Instant::now();
        assert!(!limit.exceeded(&mut recent, t0));
        assert!(!limit.exceeded(&mut recent, t0 + Duration::from_secs(1)));
        assert!(limit.exceeded(&mut recent, t0 + Duration::from_secs(2)), "a third within 5 s");
        let mut recent = VecDeque::new();
        for i in 0..10 {
            assert!(!limit.exceeded(&mut recent, t0 + Duration::from_secs(3 * i)), "spread out, never");
        }
    }

    struct Flaky {
        started: u32,
    }

    impl Actor for Flaky {
        type Context = Context<Self>;
        fn started(&mut self, _: &mut Self::Context) {
            self.started += 1;
        }
    }

    impl actix::Supervised for Flaky {}

    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Starts;

    impl Handler<Starts> for Flaky {
        type Result = u32;
        fn handle(&mut self, _: Starts, _: &mut Self::Context) -> u32 {
            self.started
        }
    }

    impl Handler<Panic> for Flaky {
        type Result = ();
        fn handle(&mut self, _: Panic, _: &mut Self::Context) {
            panic!("injected");
        }
    }

    #[test]
    fn a_panicking_actor_is_restarted_with_its_address() {
        System::new().block_on(async {
            let addr = start(|_| Flaky { started: 0 });
            assert_eq!(addr.send(Starts).await.unwrap(), 1);
            // The panic loses that message's answer, not the actor.
            assert!(addr.send(Panic).await.is_err());
            assert_eq!(addr.send(Starts).await.unwrap(), 2, "started again after the panic");
            assert!(addr.send(Panic).await.is_err());
            assert_eq!(addr.send(Starts).await.unwrap(), 3);
        });
    }
}

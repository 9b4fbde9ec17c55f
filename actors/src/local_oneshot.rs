//! A one-value channel between two futures on the same thread: how a
//! request's quorum actor hands its answer to the connection that asked.
//!
//! Both ends live on one worker (the actor is polled first in the caller's
//! own task, and spawned on the same thread only if it must wait), so the
//! channel needs no atomics: a shared cell, not `tokio::sync::oneshot`'s
//! compare-and-swap protocol on every send, poll and drop.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    /// The sender is gone: no value will come if none is here.
    closed: bool,
    waker: Option<Waker>,
}

pub struct Sender<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

pub struct Receiver<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

/// The sender was dropped without sending.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(RefCell::new(Slot { value: None, closed: false, waker: None }));
    (Sender { slot: slot.clone() }, Receiver { slot })
}

impl<T> Sender<T> {
    /// Hands the value over; it is dropped if the receiver is gone.
    pub fn send(self, value: T) {
        if Rc::strong_count(&self.slot) > 1 {
            self.slot.borrow_mut().value = Some(value);
        }
        // Drop wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.slot.borrow_mut();
            slot.closed = true;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.slot.borrow_mut();
        if let Some(value) = slot.value.take() {
            return Poll::Ready(Ok(value));
        }
        if slot.closed {
            return Poll::Ready(Err(Closed));
        }
        match &mut slot.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            none => *none = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll<T>(rx: &mut Receiver<T>, wakes: &Arc<Count>) -> Poll<Result<T, Closed>> {
        let waker = Waker::from(wakes.clone());
        Pin::new(rx).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_value_sent_before_the_first_poll_is_ready_at_once() {
        let (tx, mut rx) = channel();
        tx.send(7);
        assert_eq!(poll(&mut rx, &Arc::new(Count(AtomicUsize::new(0)))), Poll::Ready(Ok(7)));
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_the_send() {
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let (tx, mut rx) = channel();
        assert_eq!(poll(&mut rx, &wakes), Poll::Pending);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        tx.send("answer");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut rx, &wakes), Poll::Ready(Ok("answer")));
    }

    #[test]
    fn a_sender_dropped_unsent_closes_the_channel_and_wakes_the_receiver() {
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let (tx, mut rx) = channel::<u8>();
        assert_eq!(poll(&mut rx, &wakes), Poll::Pending);
        drop(tx);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut rx, &wakes), Poll::Ready(Err(Closed)));
    }

    #[test]
    fn a_value_sent_to_a_dropped_receiver_is_dropped_with_the_sender() {
        let value = Rc::new(());
        let (tx, rx) = channel();
        drop(rx);
        tx.send(value.clone());
        assert_eq!(Rc::strong_count(&value), 1, "nothing holds the value");
    }
}

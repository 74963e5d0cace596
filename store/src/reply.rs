//! `Reply`: the future a store or log request resolves through, completed by another thread.
//!
//! Owns the hand-back from a dedicated thread (the log's writer, the store's reader pool, a
//! database driver's runtime) to an executor: one oneshot per request, no lock, no blocking.
//! A `Reply` is either already decided (an error found before queueing, or an in-memory
//! answer) or waiting on its oneshot. Invariant: a dropped sender resolves to the error type's
//! "closed" value, never to a hang.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_channel::oneshot;

/// Errors that have a value for "the thread that should answer is gone".
pub trait Closed {
    /// The error a waiter gets when the answering side dropped its sender.
    fn closed() -> Self;
}

/// The outcome of one request, resolved by another thread (or already decided).
#[must_use = "a request is acknowledged only when its reply resolves"]
pub struct Reply<T, E> {
    state: State<T, E>,
}

enum State<T, E> {
    Ready(Option<Result<T, E>>),
    Waiting(oneshot::Receiver<Result<T, E>>),
}

/// The answering side of a [`Reply`].
pub struct Replier<T, E>(oneshot::Sender<Result<T, E>>);

impl<T, E> Reply<T, E> {
    /// A reply that is already decided.
    pub fn ready(result: Result<T, E>) -> Self {
        Self {
            state: State::Ready(Some(result)),
        }
    }

    /// A reply and the sender that completes it.
    pub fn channel() -> (Replier<T, E>, Self) {
        let (tx, rx) = oneshot::channel();
        let reply = Self {
            state: State::Waiting(rx),
        };
        (Replier(tx), reply)
    }
}

impl<T, E> Replier<T, E> {
    /// Completes the reply; a waiter that stopped waiting is not an error.
    pub fn send(self, result: Result<T, E>) {
        drop(self.0.send(result));
    }
}

impl<T, E> std::fmt::Debug for Reply<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Ready(Some(_)) => "ready",
            State::Ready(None) => "taken",
            State::Waiting(_) => "waiting",
        };
        f.debug_struct("Reply").field("state", &state).finish()
    }
}

impl<T: Unpin, E: Closed + Unpin> Future for Reply<T, E> {
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (a oneshot receiver and an `Option`), so this is plain access.
        match &mut self.get_mut().state {
            State::Ready(result) => Poll::Ready(
                result
                    .take()
                    .expect("a Reply is not polled after it resolved"),
            ),
            State::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(E::closed()))),
        }
    }
}

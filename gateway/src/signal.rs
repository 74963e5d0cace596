//! A one-waiter wake-up flag for tasks on one core: raise it from anywhere on the core, and the
//! task waiting on it runs again.
//!
//! Owns no allocation and no lock: a `Cell<bool>` and the waiter's `Waker`. Invariant: a raise
//! is never lost: if no task is waiting, the next `poll_take` sees it.

use std::cell::Cell;
use std::task::{Context, Poll, Waker};

/// The flag.
#[derive(Default)]
pub struct Signal {
    raised: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Signal {
    /// Raises the flag and wakes the waiter, if any.
    pub fn raise(&self) {
        self.raised.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Ready (and lowers the flag) if it was raised; otherwise remembers the waiter.
    pub fn poll_take(&self, cx: &Context<'_>) -> Poll<()> {
        if self.raised.replace(false) {
            return Poll::Ready(());
        }
        self.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }

    /// Waits until raised.
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| self.poll_take(cx)).await;
    }
}

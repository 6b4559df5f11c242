//! A stream's (or tail's) wake-up for its one waiting transport: a permit and a waker, so a
//! wake-up that comes before the wait is not lost, and the waiting future holds no waiter node
//! (tokio's `Notify` puts one in every waiting future, which made each idle stream's task a
//! size class larger).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

#[derive(Default)]
pub struct Wake {
    waker: AtomicWaker,
    permit: AtomicBool,
}

impl Wake {
    /// Wake the waiting transport, or let its next wait end at once.
    pub fn wake(&self) {
        self.permit.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once woken since the last ready poll (only one task may wait).
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.permit.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub async fn woken(&self) {
        poll_fn(|cx| self.poll(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept_once() {
        let w = Wake::default();
        w.wake();
        w.wake();
        w.woken().await;
        let again = tokio::time::timeout(std::time::Duration::from_millis(20), w.woken()).await;
        assert!(again.is_err(), "two wakes make one permit");
    }

    #[tokio::test]
    async fn a_wake_during_the_wait_ends_it() {
        let w = std::sync::Arc::new(Wake::default());
        let waiter = tokio::spawn({
            let w = w.clone();
            async move { w.woken().await }
        });
        tokio::task::yield_now().await;
        w.wake();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
    }
}

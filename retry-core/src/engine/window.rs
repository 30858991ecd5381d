//! The in-flight window of one partition: records finished or being published, in offset
//! order, released as a contiguous run from the front.
//!
//! A record finished at once while publishes are in flight costs one slot in a ring (no
//! allocation). A publish whose acknowledgement comes by other means (the owner's
//! [`Acks`](super::publish::Acks)) is counted until [`acked`](Window::acked); one that needs
//! more work (tried again, dead-lettered) is a future the window drives. The front of the
//! window is the offset the partition may be committed up to.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

/// An entry leaving the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Released<O> {
    pub(crate) offset: i64,
    pub(crate) bytes: usize,
    pub(crate) outcome: O,
}

struct Entry<O> {
    offset: i64,
    bytes: usize,
    /// `None` while its publish is in flight.
    outcome: Option<O>,
}

pub(crate) struct Window<O> {
    entries: VecDeque<Entry<O>>,
    /// Sequence number of `entries[0]`.
    front: u64,
    publishes: FuturesUnordered<Tagged<O>>,
    /// Publishes whose acknowledgements come by other means.
    acks_expected: usize,
}

/// A publish with its place in the window (one allocation per publish: its box).
struct Tagged<O> {
    seq: u64,
    publish: BoxFuture<'static, O>,
}

impl<O> Future for Tagged<O> {
    type Output = (u64, O);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(u64, O)> {
        let this = self.get_mut();
        this.publish.poll_unpin(cx).map(|o| (this.seq, o))
    }
}

impl<O: Copy + Send + 'static> Window<O> {
    pub(crate) fn new() -> Self {
        Window { entries: VecDeque::new(), front: 0, publishes: FuturesUnordered::new(), acks_expected: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Publishes in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.publishes.len() + self.acks_expected
    }

    /// Publishes whose acknowledgements are expected by other means.
    pub(crate) fn acks_expected(&self) -> usize {
        self.acks_expected
    }

    /// The reserved place `seq` is published; its acknowledgement comes by other means,
    /// then [`acked`](Self::acked) and [`settle`](Self::settle) (or
    /// [`publishing_at`](Self::publishing_at)) follow.
    pub(crate) fn awaiting_ack(&mut self, seq: u64) {
        debug_assert!(seq >= self.front && seq < self.front + self.entries.len() as u64, "a reserved place");
        self.acks_expected += 1;
    }

    /// An acknowledgement expected by other means arrived.
    pub(crate) fn acked(&mut self) {
        self.acks_expected = self.acks_expected.saturating_sub(1);
    }

    /// A record finished now: released at once if nothing is ahead of it.
    pub(crate) fn finished(&mut self, offset: i64, bytes: usize, outcome: O) -> Option<Released<O>> {
        if self.entries.is_empty() {
            return Some(Released { offset, bytes, outcome });
        }
        self.entries.push_back(Entry { offset, bytes, outcome: Some(outcome) });
        None
    }

    /// A record whose fate `publish` decides.
    pub(crate) fn publishing(&mut self, offset: i64, bytes: usize, publish: BoxFuture<'static, O>) {
        let seq = self.reserve(offset, bytes);
        self.publishes.push(Tagged { seq, publish });
    }

    /// The next place, for a record whose fate is not known yet (it is in the handler);
    /// returns the place's number, for [`settle`](Self::settle) or
    /// [`publishing_at`](Self::publishing_at) later.
    pub(crate) fn reserve(&mut self, offset: i64, bytes: usize) -> u64 {
        let seq = self.front + self.entries.len() as u64;
        self.entries.push_back(Entry { offset, bytes, outcome: None });
        seq
    }

    /// The reserved place `seq`'s fate is what `publish` decides.
    pub(crate) fn publishing_at(&mut self, seq: u64, publish: BoxFuture<'static, O>) {
        self.publishes.push(Tagged { seq, publish });
    }

    /// The reserved (or published) place `seq` is settled with `outcome`.
    pub(crate) fn settle(&mut self, seq: u64, outcome: O) {
        if let Some(e) = seq.checked_sub(self.front).and_then(|i| self.entries.get_mut(i as usize)) {
            e.outcome = Some(outcome);
        }
    }

    /// Takes the settled run at the front.
    pub(crate) fn release(&mut self, out: &mut Vec<Released<O>>) {
        while let Some(outcome) = self.entries.front().and_then(|e| e.outcome) {
            let e = self.entries.pop_front().expect("front exists");
            self.front += 1;
            out.push(Released { offset: e.offset, bytes: e.bytes, outcome });
        }
    }

    /// Settles the publishes that are done, without waiting.
    pub(crate) fn poll_ready(&mut self) {
        while let Some(Some((seq, o))) = self.publishes.next().now_or_never() {
            self.settle(seq, o);
        }
    }

    /// Waits for the next publish to be done (pending forever if none is in flight).
    pub(crate) async fn next_settled(&mut self) {
        match self.publishes.next().await {
            Some((seq, o)) => self.settle(seq, o),
            None => futures::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn released_in_offset_order_whatever_order_publishes_finish() {
        let mut w: Window<&'static str> = Window::new();
        assert_eq!(w.finished(0, 1, "ok"), Some(Released { offset: 0, bytes: 1, outcome: "ok" }));
        let (tx1, rx1) = tokio::sync::oneshot::channel::<()>();
        let (tx3, rx3) = tokio::sync::oneshot::channel::<()>();
        w.publishing(1, 10, async move { rx1.await.map_or("lost", |_| "acked") }.boxed());
        assert_eq!(w.finished(2, 1, "ok"), None, "behind a publish");
        w.publishing(3, 10, async move { rx3.await.map_or("lost", |_| "acked") }.boxed());
        assert_eq!(w.in_flight(), 2);
        let mut out = Vec::new();
        tx3.send(()).unwrap();
        w.next_settled().await;
        w.release(&mut out);
        assert!(out.is_empty(), "3 is acked but 1 is not: nothing may pass 1");
        tx1.send(()).unwrap();
        w.next_settled().await;
        w.release(&mut out);
        let offsets: Vec<(i64, &str)> = out.iter().map(|r| (r.offset, r.outcome)).collect();
        assert_eq!(offsets, [(1, "acked"), (2, "ok"), (3, "acked")]);
        assert!(w.is_empty());
        assert_eq!(w.finished(4, 1, "ok").map(|r| r.offset), Some(4));
    }

    #[tokio::test]
    async fn a_publish_acknowledged_by_other_means_is_in_flight_until_acked() {
        let mut w: Window<&'static str> = Window::new();
        let a = w.reserve(0, 1);
        w.awaiting_ack(a);
        let b = w.reserve(1, 1);
        w.awaiting_ack(b);
        assert_eq!(w.finished(2, 1, "ok"), None, "behind two publishes");
        assert_eq!((w.in_flight(), w.acks_expected()), (2, 2));
        let mut out = Vec::new();
        // 1's acknowledgement comes first; 0's says it must be published again.
        w.acked();
        w.settle(b, "acked");
        w.release(&mut out);
        assert!(out.is_empty(), "0 is not acknowledged yet");
        w.acked();
        w.publishing_at(a, async { "published again" }.boxed());
        assert_eq!((w.in_flight(), w.acks_expected()), (1, 0));
        w.next_settled().await;
        w.release(&mut out);
        let offsets: Vec<(i64, &str)> = out.iter().map(|r| (r.offset, r.outcome)).collect();
        assert_eq!(offsets, [(0, "published again"), (1, "acked"), (2, "ok")]);
        assert!(w.is_empty());
        assert_eq!(w.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_reserved_place_holds_back_what_follows_until_settled_or_published() {
        let mut w: Window<&'static str> = Window::new();
        let (a, b) = (w.reserve(0, 1), w.reserve(1, 1));
        assert_eq!(w.finished(2, 1, "ok"), None, "behind two places in the handler");
        let mut out = Vec::new();
        w.settle(b, "handled");
        w.release(&mut out);
        assert!(out.is_empty(), "0 is still in the handler");
        w.publishing_at(a, async { "acked" }.boxed());
        assert_eq!(w.in_flight(), 1);
        w.next_settled().await;
        w.release(&mut out);
        let offsets: Vec<(i64, &str)> = out.iter().map(|r| (r.offset, r.outcome)).collect();
        assert_eq!(offsets, [(0, "acked"), (1, "handled"), (2, "ok")]);
        assert!(w.is_empty());
    }
}

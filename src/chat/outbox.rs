//! A subscribed connection's outbound queue: bounded in bytes, filled by the
//! relay without ever waiting, drained by the connection in batches.
//!
//! Two bounds, as Redis bounds its pub/sub clients' output buffers:
//! - the **soft** bound (`chat.queue_bytes`): a queue above it is "full"; if
//!   it stays full for longer than `chat.slow_timeout`, the connection is
//!   closed with `slow_consumer`;
//! - the **hard** bound (4 × the soft one): a queue that would grow past it
//!   closes the connection at once.
//!
//! Between the two, events are kept, so a reader that is only briefly behind
//! (a burst) loses nothing; a reader that stops costs at most the hard bound
//! of memory, and never the relay's time or anyone else's latency.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Event;

/// The hard bound, as a multiple of the soft one.
pub const HARD_FACTOR: usize = 4;

/// Why an event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The connection is gone.
    Closed,
    /// The connection was just closed for not reading.
    Kicked,
}

#[derive(Debug, Default)]
struct State {
    events: VecDeque<Event>,
    bytes: usize,
    /// When the queue last went over the soft bound (cleared below it).
    full_since: Option<Instant>,
    /// The connection is gone.
    closed: bool,
}

/// One connection's queue.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    /// Cancelled when the relay closes the connection for not reading.
    pub kicked: CancellationToken,
    /// The same, readable without a lock (checked per event).
    kicked_flag: AtomicBool,
    /// Set when the relay stops (server shutdown).
    stopped: AtomicBool,
    soft: usize,
    slow: Duration,
}

/// Roughly what an event costs in memory and on the wire.
pub fn size_of(e: &Event) -> usize {
    match e {
        Event::Message(m) => 96 + m.message.text.len() + m.message.from.len(),
        Event::Presence { .. } | Event::Member { .. } => 96,
    }
}

impl Outbox {
    /// An empty queue with a soft bound of `soft` bytes.
    pub fn new(soft: usize, slow: Duration) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            kicked: CancellationToken::new(),
            kicked_flag: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            soft: soft.max(1),
            slow,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an event (the relay's side; never waits).
    pub fn push(&self, event: Event) -> Result<(), Refused> {
        let size = size_of(&event);
        let mut s = self.lock();
        if s.closed || self.is_kicked() {
            return Err(Refused::Closed);
        }
        if s.bytes + size > self.soft * HARD_FACTOR {
            drop(s);
            self.kick();
            return Err(Refused::Kicked);
        }
        let was_empty = s.events.is_empty();
        s.events.push_back(event);
        s.bytes += size;
        if s.bytes > self.soft {
            let since = *s.full_since.get_or_insert_with(Instant::now);
            if since.elapsed() > self.slow {
                drop(s);
                self.kick();
                return Err(Refused::Kicked);
            }
        }
        drop(s);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Whether the queue has been full for longer than allowed (the relay's
    /// periodic check, for queues that get no new events).
    pub fn overdue(&self) -> bool {
        let s = self.lock();
        s.full_since.is_some_and(|t| t.elapsed() > self.slow)
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Closes the connection for not reading.
    pub fn kick(&self) {
        self.kicked_flag.store(true, Ordering::Release);
        self.kicked.cancel();
        self.ready.notify_one();
    }

    /// Whether the relay closed the connection for not reading.
    pub fn is_kicked(&self) -> bool {
        self.kicked_flag.load(Ordering::Acquire)
    }

    /// Tells the connection the relay has stopped.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// Whether the relay has stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Marks the connection gone (its side, on drop).
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// Takes up to `max` queued events into `out` (the connection's side).
    pub fn take(&self, out: &mut VecDeque<Event>, max: usize) {
        let mut guard = self.lock();
        let s = &mut *guard;
        let n = s.events.len().min(max);
        for e in s.events.drain(..n) {
            s.bytes = s.bytes.saturating_sub(size_of(&e));
            out.push_back(e);
        }
        if s.bytes <= self.soft {
            s.full_since = None;
        }
    }

    /// Frees the queue's memory if it is empty (after a burst).
    pub fn shrink(&self) {
        let mut s = self.lock();
        if s.events.is_empty() && s.events.capacity() > 0 {
            s.events = VecDeque::new();
        }
    }

    /// Waits until there is something to take or the connection is kicked.
    /// Cancel-safe.
    pub async fn ready(&self) {
        loop {
            let notified = self.ready.notified();
            if self.is_kicked() || self.is_stopped() || !self.lock().events.is_empty() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::chat::{Delivered, Message};

    fn msg(len: usize) -> Event {
        Event::Message(Delivered::new(Message {
            seq: 1,
            ts: 0,
            from: "a".into(),
            room: Some("r".into()),
            to: None,
            text: "x".repeat(len),
        }))
    }

    #[test]
    fn a_burst_between_the_bounds_is_kept() {
        let o = Outbox::new(10_000, Duration::from_secs(60));
        for _ in 0..30 {
            o.push(msg(1000)).unwrap();
        }
        let mut out = VecDeque::new();
        o.take(&mut out, usize::MAX);
        assert_eq!(out.len(), 30);
        assert!(!o.overdue());
    }

    #[test]
    fn past_the_hard_bound_the_connection_is_kicked() {
        let o = Outbox::new(10_000, Duration::from_secs(60));
        let mut refused = None;
        for _ in 0..100 {
            if let Err(e) = o.push(msg(1000)) {
                refused = Some(e);
                break;
            }
        }
        assert_eq!(refused, Some(Refused::Kicked));
        assert!(o.is_kicked());
        assert_eq!(o.push(msg(1)), Err(Refused::Closed));
    }

    #[test]
    fn full_for_too_long_is_kicked() {
        let o = Outbox::new(1000, Duration::ZERO);
        o.push(msg(2000)).unwrap_or(());
        assert!(o.overdue() || o.is_kicked());
    }

    #[tokio::test]
    async fn ready_wakes_on_push() {
        let o = Arc::new(Outbox::new(1000, Duration::from_secs(1)));
        let waiter = tokio::spawn({
            let o = o.clone();
            async move { o.ready().await }
        });
        o.push(msg(1)).unwrap();
        waiter.await.unwrap();
    }
}

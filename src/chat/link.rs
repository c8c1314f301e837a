//! One connection's side of the relay, the same for the framed port and the
//! WebSocket: the subscription's queue, and sends in flight (answered in
//! the order they were made).

use std::collections::VecDeque;

use super::relay::{SendReceipt, Subscription};
use super::{ChatError, Event, Message, Relay, Sent, Target, UserRef};

/// Sends a connection may have in flight before it waits for answers.
pub const MAX_IN_FLIGHT: usize = 64;
/// Events taken from the queue at once.
const TAKE: usize = 256;

/// What a connection has to write next.
#[derive(Debug)]
pub enum Output<T> {
    /// An event from the relay.
    Event(Event),
    /// The answer to a send; `T` identifies the request.
    Answer(T, Result<Sent, ChatError>),
    /// The relay closed this connection for not reading.
    Kicked,
    /// The relay stopped (server shutdown).
    Closed,
}

/// A connection's chat state. `T` is how the transport identifies a request
/// (the framed request frame, or a WebSocket request id).
#[derive(Debug)]
pub struct Link<T> {
    relay: Relay,
    user: UserRef,
    sub: Option<Subscription>,
    /// Events taken from the queue, not yet written.
    taken: VecDeque<Event>,
    in_flight: VecDeque<(T, SendReceipt)>,
}

impl<T> Link<T> {
    /// A link for `user`, not yet subscribed.
    pub fn new(relay: Relay, user: UserRef) -> Link<T> {
        Link {
            relay,
            user,
            sub: None,
            taken: VecDeque::new(),
            in_flight: VecDeque::new(),
        }
    }

    /// The relay.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The user.
    pub fn user(&self) -> &UserRef {
        &self.user
    }

    /// Whether [`Link::next`] can produce anything.
    pub fn active(&self) -> bool {
        self.sub.is_some() || !self.in_flight.is_empty()
    }

    /// Whether the connection should wait for answers before reading more.
    pub fn saturated(&self) -> bool {
        self.in_flight.len() >= MAX_IN_FLIGHT
    }

    /// Whether sends are waiting for their answers.
    pub fn in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Subscribes. Returns the subscription's rooms, backlog, whether the
    /// backlog was cut, and the server's last `seq`.
    pub async fn subscribe(
        &mut self,
        since: Option<i64>,
    ) -> Result<(Vec<String>, Vec<Message>, bool, i64), ChatError> {
        if self.sub.is_some() {
            return Err(ChatError::BadRequest(
                "this connection is already subscribed".into(),
            ));
        }
        let mut sub = self.relay.subscribe(&self.user, since).await?;
        let out = (
            std::mem::take(&mut sub.rooms),
            std::mem::take(&mut sub.backlog),
            sub.truncated,
            sub.last_seq,
        );
        self.sub = Some(sub);
        Ok(out)
    }

    /// Hands a message to the relay; its answer comes out of [`Link::next`]
    /// in order.
    pub async fn send(
        &mut self,
        tag: T,
        target: Target,
        text: String,
    ) -> Result<(), (T, ChatError)> {
        match self.relay.submit(&self.user, target, text).await {
            Ok(receipt) => {
                self.in_flight.push_back((tag, receipt));
                Ok(())
            }
            Err(e) => Err((tag, e)),
        }
    }

    /// The next thing to write. Cancel-safe: nothing is lost if another
    /// branch of a `select!` wins.
    pub async fn next(&mut self) -> Output<T> {
        loop {
            if self.kicked() {
                return Output::Kicked;
            }
            if self.sub.as_ref().is_some_and(|s| s.outbox.is_stopped()) {
                return Output::Closed;
            }
            if let Some(e) = self.taken.pop_front() {
                return Output::Event(e);
            }
            let Link { sub, in_flight, .. } = &mut *self;
            let answer = async {
                match in_flight.front_mut() {
                    Some((_, receipt)) => receipt.await,
                    None => std::future::pending().await,
                }
            };
            let ready = async {
                match sub {
                    Some(s) => s.outbox.ready().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                // Events first: the relay queues a message's deliveries
                // before it answers its sender, and this keeps that order.
                () = ready => {
                    if let Some(s) = &self.sub {
                        s.outbox.take(&mut self.taken, TAKE);
                    }
                }
                r = answer => {
                    let r = r.unwrap_or_else(|_| {
                        Err(ChatError::Internal("the chat relay has stopped".into()))
                    });
                    if let Some((tag, _)) = self.in_flight.pop_front() {
                        return Output::Answer(tag, r);
                    }
                }
            }
        }
    }

    /// Frees queue memory left from a burst, before the connection waits.
    pub fn release_buffers(&mut self) {
        if self.taken.is_empty() {
            self.taken = VecDeque::new();
        }
        if let Some(s) = &self.sub {
            s.outbox.shrink();
        }
    }

    /// Whether an event is waiting to be written now.
    pub fn has_ready(&self) -> bool {
        !self.taken.is_empty()
    }

    /// The next queued event if one is ready now (for writing several at
    /// once).
    pub fn try_next_event(&mut self) -> Option<Event> {
        if self.taken.is_empty() {
            self.sub.as_ref()?.outbox.take(&mut self.taken, TAKE);
        }
        self.taken.pop_front()
    }

    /// Whether the relay closed this connection for not reading.
    pub fn kicked(&self) -> bool {
        self.sub.as_ref().is_some_and(|s| s.outbox.is_kicked())
    }

    /// Resolves when the relay closes this connection for not reading.
    pub fn kick_signal(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        match &self.sub {
            Some(s) => s.outbox.kicked.clone().cancelled_owned(),
            None => tokio_util::sync::CancellationToken::new().cancelled_owned(),
        }
    }
}

//! The relay: one task that owns the chat state and is the only writer of
//! `chat.db`. Connections talk to it through a bounded command channel.
//!
//! Sends that arrive together are stored in one transaction (one fsync for
//! the batch), then each stored message is offered to every subscribed
//! connection that should see it, in `seq` order. Offering never waits:
//! each connection has a bounded [`Outbox`]; one that stays full too long,
//! or overflows, has its connection closed. So a slow reader can cost
//! itself its connection, never the relay or anyone else their latency.
//!
//! Several processes could share rooms later by publishing each stored
//! message on a Redis channel per room and fanning out what they receive;
//! see docs/architecture.md. Nothing here pays for that now.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::outbox::{Outbox, Refused};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::db::{self, ChatDb, Dest, NewMessage};
use super::{
    now_ms, room_key, valid_room, ChatError, Delivered, Event, Joined, Member, Message, RoomInfo,
    Sent, Settings, Target, UserRef, MAX_HISTORY_PAGE, MAX_WHO,
};

/// Commands waiting for the relay.
const COMMANDS: usize = 4096;
/// Most commands taken at once (and so most messages per transaction).
const BATCH: usize = 512;
/// How often full and closed queues are looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A connection's subscription: its queue and what it missed while away.
#[derive(Debug)]
pub struct Subscription {
    /// Events, in the order the relay produced them.
    pub outbox: Arc<Outbox>,
    /// The user's rooms (names), sorted.
    pub rooms: Vec<String>,
    /// Offline direct messages, or everything after `since`.
    pub backlog: Vec<Message>,
    /// The backlog was cut at [`super::MAX_REPLAY`].
    pub truncated: bool,
    /// The largest `seq` given so far, server-wide.
    pub last_seq: i64,
    id: u64,
    user_key: String,
    relay: mpsc::Sender<Command>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.outbox.close();
        // If the relay is too busy to hear this now, its sweep finds the
        // closed queue within a second.
        let _ = self.relay.try_send(Command::Unsubscribe {
            user_key: std::mem::take(&mut self.user_key),
            id: self.id,
        });
    }
}

/// Whose history to read.
#[derive(Debug, Clone)]
pub enum HistoryOf {
    Room(String),
    User(UserRef),
}

type Reply<T> = oneshot::Sender<Result<T, ChatError>>;

/// A receipt for a send: resolves once the message is stored (or refused).
pub type SendReceipt = oneshot::Receiver<Result<Sent, ChatError>>;

enum Command {
    Subscribe {
        user: UserRef,
        since: Option<i64>,
        id: u64,
        outbox: Arc<Outbox>,
        reply: Reply<(Vec<String>, Vec<Message>, bool, i64)>,
    },
    Unsubscribe {
        user_key: String,
        id: u64,
    },
    Send {
        from: UserRef,
        target: Target,
        text: String,
        reply: Reply<Sent>,
    },
    Join {
        user: UserRef,
        room: String,
        reply: Reply<Joined>,
    },
    Leave {
        user: UserRef,
        room: String,
        reply: Reply<String>,
    },
    Rooms {
        user: UserRef,
        reply: Reply<Vec<RoomInfo>>,
    },
    Members {
        room: String,
        reply: Reply<(String, Vec<Member>)>,
    },
    Who {
        reply: Reply<Vec<String>>,
    },
    History {
        user: UserRef,
        of: HistoryOf,
        before: Option<i64>,
        limit: usize,
        reply: Reply<Vec<Message>>,
    },
    Replay {
        user: UserRef,
        since: i64,
        reply: Reply<(Vec<Message>, bool)>,
    },
}

/// A handle on the relay; cheap to clone.
#[derive(Debug, Clone)]
pub struct Relay {
    tx: mpsc::Sender<Command>,
    settings: Arc<Settings>,
    next_id: Arc<AtomicU64>,
    stop: CancellationToken,
}

fn stopped() -> ChatError {
    ChatError::Internal("the chat relay has stopped".into())
}

impl Relay {
    /// Loads the rooms from `db` and starts the relay task, which runs until
    /// [`Relay::stop`] (or until every handle is dropped).
    pub fn start(db: ChatDb, settings: Settings) -> Result<Relay, ChatError> {
        let shutdown = CancellationToken::new();
        let snapshot = db.snapshot()?;
        let settings = Arc::new(settings);
        let mut actor = Actor {
            settings: settings.clone(),
            db: Arc::new(Mutex::new(db)),
            users: HashMap::new(),
            rooms: BTreeMap::new(),
            dead: Vec::new(),
        };
        for (key, name) in snapshot.rooms {
            actor.rooms.insert(
                key,
                Room {
                    name: name.into(),
                    members: BTreeSet::new(),
                },
            );
        }
        for (room, user) in snapshot.members {
            if let Some(r) = actor.rooms.get_mut(&room) {
                r.members.insert(user.key.clone());
                actor.user(&user).rooms.insert(room);
            }
        }
        for (a, b) in snapshot.contacts {
            if let Some(u) = actor.users.get_mut(&a) {
                u.contacts.insert(b);
            } else {
                let mut u = UserState::new(&a);
                u.contacts.insert(b);
                actor.users.insert(a, u);
            }
        }
        let (tx, rx) = mpsc::channel(COMMANDS);
        tokio::spawn(actor.run(rx, shutdown.clone()));
        Ok(Relay {
            tx,
            settings,
            next_id: Arc::new(AtomicU64::new(1)),
            stop: shutdown,
        })
    }

    /// Stops the relay: every subscribed connection is told the server is
    /// shutting down, and further requests fail.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The relay's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ChatError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Subscribes a connection of `user`: from now on it receives the events
    /// of the user's rooms and conversations. With `since`, the backlog is
    /// every kept message after it; without, the offline direct messages.
    pub async fn subscribe(
        &self,
        user: &UserRef,
        since: Option<i64>,
    ) -> Result<Subscription, ChatError> {
        let outbox = Arc::new(Outbox::new(
            self.settings.queue_bytes,
            self.settings.slow_timeout,
        ));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (rooms, backlog, truncated, last_seq) = self
            .ask(|reply| Command::Subscribe {
                user: user.clone(),
                since,
                id,
                outbox: outbox.clone(),
                reply,
            })
            .await?;
        Ok(Subscription {
            outbox,
            rooms,
            backlog,
            truncated,
            last_seq,
            id,
            user_key: user.key.clone(),
            relay: self.tx.clone(),
        })
    }

    /// Hands a message to the relay. Returns once it is queued for storing
    /// (waiting only if the relay's queue is full); the receipt resolves when
    /// it is stored and delivered, or refused.
    pub async fn submit(
        &self,
        from: &UserRef,
        target: Target,
        text: String,
    ) -> Result<SendReceipt, ChatError> {
        let (reply, receipt) = oneshot::channel();
        let cmd = Command::Send {
            from: from.clone(),
            target,
            text,
            reply,
        };
        self.tx.send(cmd).await.map_err(|_| stopped())?;
        Ok(receipt)
    }

    /// Sends a message and waits until it is stored.
    pub async fn send(
        &self,
        from: &UserRef,
        target: Target,
        text: String,
    ) -> Result<Sent, ChatError> {
        self.submit(from, target, text)
            .await?
            .await
            .map_err(|_| stopped())?
    }

    /// Joins (and creates if needed) a room.
    pub async fn join(&self, user: &UserRef, room: &str) -> Result<Joined, ChatError> {
        let (user, room) = (user.clone(), room.to_string());
        self.ask(|reply| Command::Join { user, room, reply }).await
    }

    /// Leaves a room; returns its name.
    pub async fn leave(&self, user: &UserRef, room: &str) -> Result<String, ChatError> {
        let (user, room) = (user.clone(), room.to_string());
        self.ask(|reply| Command::Leave { user, room, reply }).await
    }

    /// Every room, sorted.
    pub async fn rooms(&self, user: &UserRef) -> Result<Vec<RoomInfo>, ChatError> {
        let user = user.clone();
        self.ask(|reply| Command::Rooms { user, reply }).await
    }

    /// A room's name and members.
    pub async fn members(&self, room: &str) -> Result<(String, Vec<Member>), ChatError> {
        let room = room.to_string();
        self.ask(|reply| Command::Members { room, reply }).await
    }

    /// The users with a subscribed connection, sorted.
    pub async fn who(&self) -> Result<Vec<String>, ChatError> {
        self.ask(|reply| Command::Who { reply }).await
    }

    /// Messages of a room the user is in, or of a conversation with a user.
    pub async fn history(
        &self,
        user: &UserRef,
        of: HistoryOf,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Message>, ChatError> {
        let user = user.clone();
        self.ask(|reply| Command::History {
            user,
            of,
            before,
            limit,
            reply,
        })
        .await
    }

    /// Every kept message of the user's rooms and conversations after
    /// `since`: what a lagging connection missed.
    pub async fn replay(
        &self,
        user: &UserRef,
        since: i64,
    ) -> Result<(Vec<Message>, bool), ChatError> {
        let user = user.clone();
        self.ask(|reply| Command::Replay { user, since, reply })
            .await
    }
}

/// One subscribed connection, as the relay sees it.
struct Conn {
    id: u64,
    outbox: Arc<Outbox>,
}

/// Per-user message budget (token bucket).
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct UserState {
    name: Arc<str>,
    conns: Vec<Conn>,
    /// Room keys.
    rooms: BTreeSet<String>,
    /// User keys this user has exchanged direct messages with.
    contacts: HashSet<String>,
    bucket: Option<Bucket>,
}

impl UserState {
    fn new(name: &str) -> UserState {
        UserState {
            name: name.into(),
            conns: Vec::new(),
            rooms: BTreeSet::new(),
            contacts: HashSet::new(),
            bucket: None,
        }
    }
}

struct Room {
    name: Arc<str>,
    /// Member user keys.
    members: BTreeSet<String>,
}

struct Actor {
    settings: Arc<Settings>,
    db: Arc<Mutex<ChatDb>>,
    users: HashMap<String, UserState>,
    rooms: BTreeMap<String, Room>,
    /// Connections to drop after the current fan-out: (user key, id).
    dead: Vec<(String, u64)>,
}

/// Offers an event to one connection without waiting.
fn offer(conn: &Conn, event: Event, dead: &mut Vec<(String, u64)>, key: &str) {
    match conn.outbox.push(event) {
        Ok(()) => {}
        Err(Refused::Kicked) => {
            warn!(
                user = key,
                "closing a chat connection that does not read its messages"
            );
            dead.push((key.to_string(), conn.id));
        }
        Err(Refused::Closed) => dead.push((key.to_string(), conn.id)),
    }
}

impl Actor {
    fn user(&mut self, u: &UserRef) -> &mut UserState {
        let state = self
            .users
            .entry(u.key.clone())
            .or_insert_with(|| UserState::new(&u.name));
        if *state.name != *u.name {
            state.name = u.name.as_str().into();
        }
        state
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ChatDb) -> Result<T, ChatError> + Send + 'static,
    ) -> Result<T, ChatError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = db
                .lock()
                .map_err(|_| ChatError::Internal("chat database lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| ChatError::Internal(e.to_string()))?
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    self.handle(&mut batch).await;
                }
                _ = sweep.tick() => self.sweep(),
            }
        }
        for u in self.users.values() {
            for c in &u.conns {
                c.outbox.stop();
            }
        }
        debug!("chat relay stopped");
    }

    /// Handles commands in order; runs of sends are stored together.
    async fn handle(&mut self, batch: &mut Vec<Command>) {
        let mut sends = Vec::new();
        for cmd in batch.drain(..) {
            match cmd {
                Command::Send {
                    from,
                    target,
                    text,
                    reply,
                } => sends.push((from, target, text, reply)),
                other => {
                    if !sends.is_empty() {
                        self.store_and_deliver(std::mem::take(&mut sends)).await;
                    }
                    self.command(other).await;
                }
            }
        }
        if !sends.is_empty() {
            self.store_and_deliver(sends).await;
        }
        self.reap();
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Send { .. } => {}
            Command::Subscribe {
                user,
                since,
                id,
                outbox,
                reply,
            } => {
                let r = self.subscribe(&user, since, id, outbox).await;
                let _ = reply.send(r);
            }
            Command::Unsubscribe { user_key, id } => {
                self.dead.push((user_key, id));
            }
            Command::Join { user, room, reply } => {
                let r = self.join(&user, &room).await;
                let _ = reply.send(r);
            }
            Command::Leave { user, room, reply } => {
                let r = self.leave(&user, &room).await;
                let _ = reply.send(r);
            }
            Command::Rooms { user, reply } => {
                let _ = reply.send(Ok(self.room_list(&user.key)));
            }
            Command::Members { room, reply } => {
                let r = self.members(&room);
                let _ = reply.send(r);
            }
            Command::Who { reply } => {
                let mut names: Vec<String> = self
                    .users
                    .values()
                    .filter(|u| !u.conns.is_empty())
                    .map(|u| u.name.to_string())
                    .collect();
                names.sort_by_key(|n| n.to_ascii_lowercase());
                names.truncate(MAX_WHO);
                let _ = reply.send(Ok(names));
            }
            Command::History {
                user,
                of,
                before,
                limit,
                reply,
            } => {
                let r = self.history(&user, of, before, limit).await;
                let _ = reply.send(r);
            }
            Command::Replay { user, since, reply } => {
                let rooms: Vec<String> = self
                    .users
                    .get(&user.key)
                    .map(|u| u.rooms.iter().cloned().collect())
                    .unwrap_or_default();
                let key = user.key.clone();
                let r = self.db(move |db| db.since(&key, &rooms, since)).await;
                let _ = reply.send(r);
            }
        }
    }

    async fn subscribe(
        &mut self,
        user: &UserRef,
        since: Option<i64>,
        id: u64,
        outbox: Arc<Outbox>,
    ) -> Result<(Vec<String>, Vec<Message>, bool, i64), ChatError> {
        let room_keys: Vec<String> = self.user(user).rooms.iter().cloned().collect();
        let key = user.key.clone();
        let keys = room_keys.clone();
        let (backlog, truncated, last_seq) = self
            .db(move |db| {
                let (backlog, truncated) = match since {
                    Some(since) => db.since(&key, &keys, since)?,
                    None => db.undelivered(&key)?,
                };
                Ok((backlog, truncated, db.last_seq()?))
            })
            .await?;
        let state = self.user(user);
        state.conns.push(Conn { id, outbox });
        let first = state.conns.len() == 1;
        if first {
            self.presence(&user.key, true);
        }
        let rooms = room_keys
            .iter()
            .filter_map(|k| self.rooms.get(k).map(|r| r.name.to_string()))
            .collect();
        debug!(user = %user.name, id, "chat subscribed");
        Ok((rooms, backlog, truncated, last_seq))
    }

    /// Tells everyone who shares a room or a conversation with `key`.
    fn presence(&mut self, key: &str, online: bool) {
        let Some(state) = self.users.get(key) else {
            return;
        };
        let name = state.name.clone();
        let mut peers: HashSet<&str> = state.contacts.iter().map(String::as_str).collect();
        for room in &state.rooms {
            if let Some(r) = self.rooms.get(room) {
                peers.extend(r.members.iter().map(String::as_str));
            }
        }
        peers.remove(key);
        let peers: Vec<String> = peers.into_iter().map(String::from).collect();
        let event = Event::Presence { user: name, online };
        for peer in peers {
            self.tell_user(&peer, &event);
        }
    }

    /// Offers an event to every connection of one user.
    fn tell_user(&mut self, key: &str, event: &Event) {
        if let Some(u) = self.users.get(key) {
            for c in &u.conns {
                offer(c, event.clone(), &mut self.dead, key);
            }
        }
    }

    /// Offers an event to every connection of every member of a room.
    fn tell_room(&mut self, room: &str, event: &Event) {
        let Actor {
            rooms, users, dead, ..
        } = self;
        let Some(r) = rooms.get(room) else { return };
        for key in &r.members {
            if let Some(u) = users.get(key) {
                for c in &u.conns {
                    offer(c, event.clone(), dead, key);
                }
            }
        }
    }

    fn allow(&mut self, key: &str) -> bool {
        let (rate, burst) = (self.settings.rate, f64::from(self.settings.burst.max(1)));
        if rate <= 0.0 {
            return true;
        }
        let Some(u) = self.users.get_mut(key) else {
            return true;
        };
        let now = Instant::now();
        let b = u.bucket.get_or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Checks one send against the rules; the message to store if it passes.
    fn check(
        &mut self,
        from: &UserRef,
        target: &Target,
        text: String,
    ) -> Result<NewMessage, ChatError> {
        self.user(from);
        if !self.allow(&from.key) {
            return Err(ChatError::RateLimited {
                rate: self.settings.rate,
            });
        }
        let (dest, delivered) = match target {
            Target::Room(name) => {
                if !valid_room(name) {
                    return Err(ChatError::BadRoom(name.clone()));
                }
                let key = room_key(name);
                let member = self
                    .users
                    .get(&from.key)
                    .is_some_and(|u| u.rooms.contains(&key));
                let Some(room) = self.rooms.get(&key).filter(|_| member) else {
                    return Err(ChatError::NotMember(name.clone()));
                };
                (
                    Dest::Room {
                        key,
                        name: room.name.to_string(),
                    },
                    false,
                )
            }
            Target::User(to) => {
                let online = self.user(to).conns.iter().any(|c| !c.outbox.is_closed());
                (Dest::User(to.clone()), online)
            }
        };
        Ok(NewMessage {
            from: from.clone(),
            dest,
            text,
            ts: now_ms(),
            delivered,
        })
    }

    async fn store_and_deliver(&mut self, sends: Vec<(UserRef, Target, String, Reply<Sent>)>) {
        let mut batch = Vec::with_capacity(sends.len());
        let mut replies = Vec::with_capacity(sends.len());
        for (from, target, text, reply) in sends {
            match self.check(&from, &target, text) {
                Ok(m) => {
                    batch.push(m);
                    replies.push(reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        if batch.is_empty() {
            return;
        }
        let keep = self.settings.history;
        let db = self.db.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let r = match db.lock() {
                Ok(mut db) => db.store(&batch, keep),
                Err(_) => Err(ChatError::Internal("chat database lock poisoned".into())),
            };
            (batch, r)
        })
        .await;
        let (batch, seqs) = match stored {
            Ok((batch, Ok(seqs))) => (batch, seqs),
            Ok((_, Err(e))) => {
                warn!("storing chat messages failed: {e}");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
            Err(e) => {
                warn!("storing chat messages failed: {e}");
                for reply in replies {
                    let _ = reply.send(Err(ChatError::Internal(e.to_string())));
                }
                return;
            }
        };
        for ((m, seq), reply) in batch.into_iter().zip(seqs).zip(replies) {
            let sent = Sent { seq, ts: m.ts };
            let (room, to) = match &m.dest {
                Dest::Room { name, .. } => (Some(name.clone()), None),
                Dest::User(u) => (None, Some(u.name.clone())),
            };
            let event = Event::Message(Delivered::new(Message {
                seq,
                ts: m.ts,
                from: m.from.name.clone(),
                room,
                to,
                text: m.text,
            }));
            match &m.dest {
                Dest::Room { key, .. } => self.tell_room(key, &event),
                Dest::User(to) => {
                    self.user(to).contacts.insert(m.from.key.clone());
                    self.user(&m.from).contacts.insert(to.key.clone());
                    self.tell_user(&to.key, &event);
                    if to.key != m.from.key {
                        self.tell_user(&m.from.key, &event);
                    }
                }
            }
            let _ = reply.send(Ok(sent));
        }
    }

    async fn join(&mut self, user: &UserRef, name: &str) -> Result<Joined, ChatError> {
        if !valid_room(name) {
            return Err(ChatError::BadRoom(name.into()));
        }
        let key = room_key(name);
        let max_rooms = self.settings.max_rooms;
        let state = self.user(user);
        let already = state.rooms.contains(&key);
        if !already && state.rooms.len() >= max_rooms {
            return Err(ChatError::TooManyRooms(max_rooms));
        }
        if !already {
            let (k, n, u, ts) = (key.clone(), name.to_string(), user.clone(), now_ms());
            let stored_name = self.db(move |db| db.join(&k, &n, &u, ts)).await?;
            let room = self.rooms.entry(key.clone()).or_insert_with(|| Room {
                name: stored_name.as_str().into(),
                members: BTreeSet::new(),
            });
            room.members.insert(user.key.clone());
            let room_name = room.name.clone();
            self.user(user).rooms.insert(key.clone());
            info!(user = %user.name, room = %room_name, "joined");
            let event = Event::Member {
                room: room_name,
                user: user.name.as_str().into(),
                joined: true,
            };
            self.tell_room(&key, &event);
        }
        let (room_name, members) = self.members(&key)?;
        let conv = db::room_conv(&key);
        let limit = self.settings.history;
        let history = self.db(move |db| db.history(&conv, None, limit)).await?;
        Ok(Joined {
            room: room_name,
            members,
            history,
        })
    }

    async fn leave(&mut self, user: &UserRef, name: &str) -> Result<String, ChatError> {
        if !valid_room(name) {
            return Err(ChatError::BadRoom(name.into()));
        }
        let key = room_key(name);
        if !self.user(user).rooms.contains(&key) {
            return Err(ChatError::NotMember(name.into()));
        }
        let (k, u) = (key.clone(), user.key.clone());
        self.db(move |db| db.leave(&k, &u)).await?;
        let room_name = self
            .rooms
            .get(&key)
            .map_or_else(|| Arc::from(name), |r| r.name.clone());
        let event = Event::Member {
            room: room_name.clone(),
            user: user.name.as_str().into(),
            joined: false,
        };
        // The leaver's own connections hear it too, then stop hearing the room.
        self.tell_room(&key, &event);
        if let Some(r) = self.rooms.get_mut(&key) {
            r.members.remove(&user.key);
        }
        self.user(user).rooms.remove(&key);
        info!(user = %user.name, room = %room_name, "left");
        Ok(room_name.to_string())
    }

    fn members(&self, name: &str) -> Result<(String, Vec<Member>), ChatError> {
        if !valid_room(name) {
            return Err(ChatError::BadRoom(name.into()));
        }
        let Some(room) = self.rooms.get(&room_key(name)) else {
            return Err(ChatError::NoSuchRoom(name.into()));
        };
        let mut members: Vec<Member> = room
            .members
            .iter()
            .filter_map(|k| self.users.get(k))
            .map(|u| Member {
                user: u.name.to_string(),
                online: !u.conns.is_empty(),
            })
            .collect();
        members.sort_by_key(|m| m.user.to_ascii_lowercase());
        Ok((room.name.to_string(), members))
    }

    fn room_list(&self, user_key: &str) -> Vec<RoomInfo> {
        let mine = self.users.get(user_key).map(|u| &u.rooms);
        self.rooms
            .iter()
            .map(|(key, r)| RoomInfo {
                room: r.name.to_string(),
                members: r.members.len(),
                online: r
                    .members
                    .iter()
                    .filter(|k| self.users.get(*k).is_some_and(|u| !u.conns.is_empty()))
                    .count(),
                joined: mine.is_some_and(|m| m.contains(key)),
            })
            .collect()
    }

    async fn history(
        &mut self,
        user: &UserRef,
        of: HistoryOf,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Message>, ChatError> {
        let conv = match of {
            HistoryOf::Room(name) => {
                if !valid_room(&name) {
                    return Err(ChatError::BadRoom(name));
                }
                let key = room_key(&name);
                if !self.user(user).rooms.contains(&key) {
                    return Err(ChatError::NotMember(name));
                }
                db::room_conv(&key)
            }
            HistoryOf::User(other) => db::dm_conv(&user.key, &other.key),
        };
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        self.db(move |db| db.history(&conv, before, limit)).await
    }

    /// Drops closed connections and those whose queue stayed full too long.
    fn sweep(&mut self) {
        for (key, u) in &self.users {
            for c in &u.conns {
                if c.outbox.is_closed() {
                    self.dead.push((key.clone(), c.id));
                } else if c.outbox.overdue() {
                    warn!(user = %key, "closing a chat connection that does not read its messages");
                    c.outbox.kick();
                    self.dead.push((key.clone(), c.id));
                }
            }
        }
        self.reap();
    }

    /// Removes the connections marked dead; a user whose last connection
    /// went is announced offline.
    fn reap(&mut self) {
        while let Some((key, id)) = self.dead.pop() {
            let Some(u) = self.users.get_mut(&key) else {
                continue;
            };
            let before = u.conns.len();
            u.conns.retain(|c| c.id != id);
            if before > 0 && u.conns.is_empty() {
                if before == 1 {
                    debug!(user = %u.name, "chat offline");
                }
                self.presence(&key, false);
            }
        }
    }
}

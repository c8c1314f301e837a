//! The chat relay: direct messages and rooms between logged-in users, with
//! presence, offline delivery and bounded queues, on the framed port and
//! over WebSocket on the web port.
//!
//! - [`db`]: `chat.db`, where every message is stored before anyone hears
//!   of it (offline direct messages, room history, memberships).
//! - [`relay`]: the one place that orders messages: it stores them, gives
//!   each a `seq`, and fans them out to the subscribed connections' bounded
//!   queues without ever waiting for one.
//! - [`outbox`]: each subscribed connection's bounded queue.
//! - [`link`]: one connection's side of the relay (subscription, pipelined
//!   sends in order), shared by both transports.
//! - [`server`]: the chat messages of the framed port.
//! - [`ws`]: the same over WebSocket, for the browser.
//! - [`client`]: `sockit chat`, `chat send` and `chat tail`.
//!
//! The wire format is in `docs/protocol.md` (Chat) and `docs/http-api.md`.

pub mod client;
pub mod db;
pub mod link;
pub mod outbox;
pub mod relay;
pub mod server;
pub mod ws;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use relay::Relay;

/// Message types of the chat service on the framed port.
pub const MESSAGES: &[&str] = &[
    "subscribe",
    "send",
    "join",
    "leave",
    "rooms",
    "members",
    "who",
    "history",
];

/// Longest room name.
pub const MAX_ROOM_NAME: usize = 64;
/// Most messages a subscribe or a catch-up returns at once.
pub const MAX_REPLAY: usize = 1000;
/// Most messages one `history` request returns.
pub const MAX_HISTORY_PAGE: usize = 100;
/// Most names a `who` returns.
pub const MAX_WHO: usize = 1000;

/// Settings of the chat relay (`[chat]` in the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest message text, in bytes.
    pub max_message: usize,
    /// Messages each room keeps for joiners and `history`.
    pub history: usize,
    /// Bytes queued per subscribed connection before it counts as full
    /// (the hard bound is four times this; see [`outbox`]).
    pub queue_bytes: usize,
    /// How long a connection's queue may stay full before it is closed.
    pub slow_timeout: Duration,
    /// Messages per second per user; 0 means no limit.
    pub rate: f64,
    /// Burst allowed above `rate`.
    pub burst: u32,
    /// Rooms one user may be a member of.
    pub max_rooms: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_message: 16 * 1024,
            history: 100,
            queue_bytes: 256 * 1024,
            slow_timeout: Duration::from_secs(10),
            rate: 10.0,
            burst: 20,
            max_rooms: 1000,
        }
    }
}

/// Whether `name` is a valid room name: 1 to 64 of `A-Z a-z 0-9 _ . -`.
pub fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The case-folded form rooms are compared by.
pub fn room_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A stored message, as delivered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    /// Server-assigned, increasing across the server.
    pub seq: i64,
    /// Server time, milliseconds since the Unix epoch.
    pub ts: i64,
    /// The sender's account name.
    pub from: String,
    /// The room, for a room message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The recipient, for a direct message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The text.
    pub text: String,
}

/// A message on its way to many connections: its encodings are made once,
/// by whichever connection needs them first, and shared.
#[derive(Debug)]
pub struct Delivered {
    /// The message.
    pub message: Message,
    /// The complete framed-protocol message (length, header, body).
    framed: OnceLock<Bytes>,
    /// The WebSocket JSON text.
    json: OnceLock<tokio_tungstenite::tungstenite::Utf8Bytes>,
}

impl Delivered {
    /// Wraps a stored message.
    pub fn new(message: Message) -> Arc<Delivered> {
        Arc::new(Delivered {
            message,
            framed: OnceLock::new(),
            json: OnceLock::new(),
        })
    }

    /// The framed encoding: `{"type":"message",...}` with the text as body.
    pub fn framed(&self) -> &Bytes {
        self.framed
            .get_or_init(|| server::encode_message(&self.message))
    }

    /// The WebSocket encoding: `{"type":"message",...,"text":...}`.
    pub fn json(&self) -> &tokio_tungstenite::tungstenite::Utf8Bytes {
        self.json
            .get_or_init(|| ws::encode_message(&self.message).into())
    }
}

/// Something a subscribed connection is told.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message in one of the user's rooms or conversations.
    Message(Arc<Delivered>),
    /// A user who shares a room or a conversation came online or went away.
    Presence { user: Arc<str>, online: bool },
    /// Someone joined or left one of the user's rooms.
    Member {
        room: Arc<str>,
        user: Arc<str>,
        joined: bool,
    },
}

/// A member of a room, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub user: String,
    pub online: bool,
}

/// A room, as listed by `rooms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomInfo {
    pub room: String,
    pub members: usize,
    pub online: usize,
    pub joined: bool,
}

/// What `join` answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Joined {
    pub room: String,
    pub members: Vec<Member>,
    pub history: Vec<Message>,
}

/// What `send` answers once the message is stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sent {
    pub seq: i64,
    pub ts: i64,
}

/// A user as the relay knows them: the case-folded key and the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub key: String,
    pub name: String,
}

impl From<&crate::accounts::User> for UserRef {
    fn from(u: &crate::accounts::User) -> Self {
        UserRef {
            key: u.key(),
            name: u.name.clone(),
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A room, by name as the client gave it.
    Room(String),
    /// A user (checked to exist by the caller).
    User(UserRef),
}

/// Refusals of the chat service, each with its documented wire code.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ChatError {
    #[error("the message is {len} bytes; the limit is {max}")]
    TooLarge { len: u64, max: usize },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0:?} is not a valid room name (1 to 64 of A-Z a-z 0-9 _ . -)")]
    BadRoom(String),
    #[error("there is no room {0:?}")]
    NoSuchRoom(String),
    #[error("you are not a member of {0:?}: join it first")]
    NotMember(String),
    #[error("there is no user {0:?}")]
    NoSuchUser(String),
    #[error("you are sending too fast: at most {rate} messages per second; wait and send again")]
    RateLimited { rate: f64 },
    #[error("you are a member of {0} rooms, the most allowed: leave one first")]
    TooManyRooms(usize),
    #[error("the chat relay failed: {0}")]
    Internal(String),
}

impl ChatError {
    /// The wire code.
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::TooLarge { .. } => "too_large",
            ChatError::BadRequest(_) => "bad_request",
            ChatError::BadRoom(_) => "bad_room",
            ChatError::NoSuchRoom(_) => "no_such_room",
            ChatError::NotMember(_) => "not_member",
            ChatError::NoSuchUser(_) => "no_such_user",
            ChatError::RateLimited { .. } => "rate_limited",
            ChatError::TooManyRooms(_) => "too_many_rooms",
            ChatError::Internal(_) => "internal",
        }
    }
}

impl From<rusqlite::Error> for ChatError {
    fn from(e: rusqlite::Error) -> Self {
        ChatError::Internal(format!("chat database: {e}"))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        for ok in ["lobby", "A", "rust-lang.zh_CN", &"x".repeat(64)] {
            assert!(valid_room(ok), "{ok}");
        }
        for bad in ["", "a b", "#lobby", "a/b", "é", &"x".repeat(65), "a\0"] {
            assert!(!valid_room(bad), "{bad:?}");
        }
        assert_eq!(room_key("Lobby"), room_key("LOBBY"));
    }
}

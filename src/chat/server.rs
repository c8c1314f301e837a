//! The chat messages of the framed port: requests are parsed from frames and
//! handed to the relay through the connection's [`Link`]; events and answers
//! are written back as frames. Message events are encoded once per message
//! and the same bytes are written to every connection.

use std::time::Duration;

use crate::tls::Stream;
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::codec::Encoder;

use super::link::{Link, Output};
use super::relay::HistoryOf;
use super::{ChatError, Event, Message, Relay, Target, UserRef, MAX_HISTORY_PAGE};
use crate::accounts::{Accounts, User};
use crate::framed::HandlerError;
use crate::proto::{timed, Connection, ErrorCode, Frame, FrameCodec, ProtoError};

type Conn = Connection<Stream>;

/// Events written in one go before a flush.
const WRITE_BATCH: usize = 256;

impl From<ChatError> for HandlerError {
    fn from(e: ChatError) -> Self {
        HandlerError::refuse(e.code(), e.to_string())
    }
}

/// The `message` frame of a stored message, complete with its body.
pub fn encode_message(m: &Message) -> Bytes {
    let mut header = Frame::new("message")
        .with("seq", m.seq)
        .with("ts", m.ts)
        .with("from", m.from.as_str());
    if let Some(room) = &m.room {
        header = header.with("room", room.as_str());
    }
    if let Some(to) = &m.to {
        header = header.with("to", to.as_str());
    }
    let header = header.with_body_len(m.text.len() as u64);
    let mut buf = BytesMut::with_capacity(128 + m.text.len());
    // Names are at most 64 bytes, so the header is far below every limit.
    if FrameCodec::default().encode(&header, &mut buf).is_err() {
        return Bytes::new();
    }
    buf.extend_from_slice(m.text.as_bytes());
    buf.freeze()
}

/// Finds the account a message or history request names.
pub async fn find_user(accounts: &Accounts, name: &str) -> Result<UserRef, ChatError> {
    let n = name.to_string();
    match accounts.run(move |a| a.find(&n)).await {
        Ok(Some(u)) => Ok(UserRef::from(&u)),
        Ok(None) => Err(ChatError::NoSuchUser(name.into())),
        Err(e) => Err(ChatError::Internal(e.to_string())),
    }
}

/// Parses a send's target: exactly one of `room` and `to`.
pub async fn target(
    accounts: &Accounts,
    room: Option<&str>,
    to: Option<&str>,
) -> Result<Target, ChatError> {
    match (room, to) {
        (Some(room), None) => Ok(Target::Room(room.to_string())),
        (None, Some(to)) => Ok(Target::User(find_user(accounts, to).await?)),
        _ => Err(ChatError::BadRequest(
            "name exactly one of \"room\" and \"to\"".into(),
        )),
    }
}

/// Checks a message text: UTF-8, not empty.
pub fn text(bytes: Vec<u8>) -> Result<String, ChatError> {
    let text = String::from_utf8(bytes)
        .map_err(|_| ChatError::BadRequest("the message text is not UTF-8".into()))?;
    if text.is_empty() {
        return Err(ChatError::BadRequest("the message is empty".into()));
    }
    Ok(text)
}

/// Messages a `history` request returns when it names no `limit`.
pub const DEFAULT_HISTORY_PAGE: usize = 50;

/// Checks a `history` request's `limit`: 1 to [`MAX_HISTORY_PAGE`], or
/// absent for the default. Out of range is refused rather than clamped: a
/// client that asked for 500 and silently got 100 would take the page for
/// the start of the history.
pub fn history_limit(limit: Option<i64>) -> Result<usize, ChatError> {
    match limit {
        None => Ok(DEFAULT_HISTORY_PAGE),
        Some(n) if (1..=MAX_HISTORY_PAGE as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(ChatError::BadRequest(format!(
            "\"limit\" must be 1 to {MAX_HISTORY_PAGE}, not {n}"
        ))),
    }
}

/// An optional integer field of a request: absent or `null` is `None`;
/// anything but an integer is refused.
pub fn optional_integer(fields: &Map<String, Value>, key: &str) -> Result<Option<i64>, ChatError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| ChatError::BadRequest(format!("\"{key}\" must be an integer"))),
    }
}

/// A `history` request's `before` and `limit`, read by the same rules from
/// a frame's header and from a WebSocket request.
pub fn history_page(fields: &Map<String, Value>) -> Result<(Option<i64>, usize), ChatError> {
    let before = optional_integer(fields, "before")?;
    let limit = history_limit(optional_integer(fields, "limit")?)?;
    Ok((before, limit))
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, HandlerError> {
    serde_json::to_vec(value).map_err(|e| HandlerError::refuse("internal", e.to_string()))
}

fn field<'a>(req: &'a Frame, key: &str) -> Result<&'a str, HandlerError> {
    req.str(key).ok_or_else(|| {
        HandlerError::refuse(
            "bad_request",
            format!("{} needs a string \"{key}\"", req.kind()),
        )
    })
}

/// Handles one chat request for the logged-in `user`.
pub async fn handle(
    conn: &mut Conn,
    chat: &mut Option<Link<Frame>>,
    req: &Frame,
    user: &User,
    accounts: &Accounts,
    relay: &Relay,
    idle: Duration,
) -> Result<(), HandlerError> {
    let me = UserRef::from(user);
    let link = match chat {
        // A different account logged in on this connection: start afresh.
        Some(link) if link.user().key == me.key => link,
        _ => chat.insert(Link::new(relay.clone(), me.clone())),
    };
    if req.kind() == "send" {
        return send(conn, link, req, accounts, idle).await;
    }
    // Everything else is answered after the sends before it.
    while link.in_flight() {
        let out = link.next().await;
        write_output(conn, link, out, idle).await?;
    }
    let (reply, body) = match req.kind() {
        "subscribe" => {
            let since = optional_integer(req.header(), "since")?;
            let (rooms, backlog, truncated, last) = link.subscribe(since).await?;
            let mut f = Frame::new("subscribed")
                .with("user", me.name.as_str())
                .with("rooms", rooms)
                .with("seq", last);
            if truncated {
                f = f.with("truncated", true);
            }
            (f, json(&backlog)?)
        }
        "join" => {
            let j = relay.join(&me, field(req, "room")?).await?;
            let body = json(&serde_json::json!({"members": j.members, "history": j.history}))?;
            (Frame::new("joined").with("room", j.room), body)
        }
        "leave" => {
            let name = relay.leave(&me, field(req, "room")?).await?;
            (Frame::new("left").with("room", name), Vec::new())
        }
        "rooms" => (Frame::new("rooms"), json(&relay.rooms(&me).await?)?),
        "members" => {
            let (name, members) = relay.members(field(req, "room")?).await?;
            (Frame::new("members").with("room", name), json(&members)?)
        }
        "who" => (Frame::new("who"), json(&relay.who().await?)?),
        "history" => {
            let of = match (req.str("room"), req.str("with")) {
                (Some(room), None) => HistoryOf::Room(room.to_string()),
                (None, Some(with)) => HistoryOf::User(find_user(accounts, with).await?),
                _ => {
                    return Err(ChatError::BadRequest(
                        "history needs exactly one of \"room\" and \"with\"".into(),
                    )
                    .into())
                }
            };
            let (before, limit) = history_page(req.header())?;
            let messages = relay.history(&me, of, before, limit).await?;
            (Frame::new("history"), json(&messages)?)
        }
        other => {
            return Err(HandlerError::refuse(
                "unknown_type",
                format!("unknown message type {other:?}"),
            ))
        }
    };
    let reply = reply.with_body_len(body.len() as u64).reply_to(req);
    conn.queue_message(&reply, &body)?;
    flush(conn, link, idle).await
}

/// `send`: the text is the body; the answer (`sent` or an error) comes when
/// the relay has stored it, in order with the connection's other answers.
async fn send(
    conn: &mut Conn,
    link: &mut Link<Frame>,
    req: &Frame,
    accounts: &Accounts,
    idle: Duration,
) -> Result<(), HandlerError> {
    if req.get("text").is_some() {
        // The WebSocket's form; here the text travels as the body.
        return Err(ChatError::BadRequest(
            "on the framed port the text is the body (\"size\" bytes of UTF-8), not a \"text\" field"
                .into(),
        )
        .into());
    }
    let max = link.relay().settings().max_message;
    if req.body_len() > max as u64 {
        return Err(ChatError::TooLarge {
            len: req.body_len(),
            max,
        }
        .into());
    }
    let body = timed(idle, conn.read_body_to_vec(max)).await?;
    let text = text(body)?;
    let target = target(accounts, req.str("room"), req.str("to")).await?;
    while link.saturated() {
        let out = link.next().await;
        write_output(conn, link, out, idle).await?;
    }
    link.send(req.clone(), target, text)
        .await
        .map_err(|(_, e)| HandlerError::from(e))
}

fn kicked(link: &Link<Frame>) -> HandlerError {
    HandlerError::Fatal {
        code: ErrorCode::SlowConsumer,
        message: format!(
            "this connection did not read its messages for {}: closing it",
            humantime::format_duration(link.relay().settings().slow_timeout)
        ),
    }
}

/// Flushes, giving up at once if the relay closes the connection meanwhile.
async fn flush(conn: &mut Conn, link: &Link<Frame>, idle: Duration) -> Result<(), HandlerError> {
    // The write is tried first: when the socket takes it at once, the kick
    // signal is never even registered.
    tokio::select! {
        biased;
        r = timed(idle, conn.flush()) => Ok(r?),
        _ = link.kick_signal() => Err(kicked(link)),
    }
}

fn queue_event(conn: &mut Conn, event: &Event) -> Result<(), ProtoError> {
    match event {
        Event::Message(m) => conn.queue_encoded(m.framed()),
        Event::Presence { user, online } => conn.queue_frame(
            &Frame::new("presence")
                .with("user", &**user)
                .with("online", *online),
        ),
        Event::Member { room, user, joined } => conn.queue_frame(
            &Frame::new("member")
                .with("room", &**room)
                .with("user", &**user)
                .with("joined", *joined),
        ),
    }
}

/// Writes what [`Link::next`] produced, with any further events already
/// queued, in one flush.
pub async fn write_output(
    conn: &mut Conn,
    link: &mut Link<Frame>,
    out: Output<Frame>,
    idle: Duration,
) -> Result<(), HandlerError> {
    match out {
        Output::Event(event) => {
            queue_event(conn, &event)?;
            for _ in 1..WRITE_BATCH {
                match link.try_next_event() {
                    Some(e) => queue_event(conn, &e)?,
                    None => break,
                }
            }
        }
        Output::Answer(req, Ok(sent)) => conn.queue_frame(
            &Frame::new("sent")
                .with("seq", sent.seq)
                .with("ts", sent.ts)
                .reply_to(&req),
        )?,
        Output::Answer(req, Err(e)) => conn.queue_frame(
            &Frame::new("error")
                .with("code", e.code())
                .with("message", e.to_string())
                .reply_to(&req),
        )?,
        Output::Kicked => return Err(kicked(link)),
        Output::Closed => {
            return Err(HandlerError::Fatal {
                code: ErrorCode::ShuttingDown,
                message: "server is shutting down".into(),
            })
        }
    }
    flush(conn, link, idle).await
}

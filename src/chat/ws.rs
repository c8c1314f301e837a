//! The chat over WebSocket, for the browser (`GET /api/chat` on the web
//! port): the same relay and the same [`Link`] as the framed port, with
//! requests and events as JSON text messages (docs/http-api.md).
//!
//! The socket keeps RFC 6455's rules for ending: a client's Close is
//! answered with the same code; a client that breaks the protocol gets a
//! Close with 1002, 1007 or 1009 and nothing it sends after is read; the
//! server's own Closes (1001 at shutdown, 1008 for a slow reader, 1011)
//! wait for the client's. Every Close is flushed, then the server half-closes
//! the TCP connection and waits, for [`CLOSE_TIMEOUT`] at most, for the
//! client to close its side, so that bytes still arriving cannot reset the
//! connection under the Close on its way out.
//!
//! Writes are bounded: everything written, tungstenite's own pongs
//! included, is flushed before the next message is read, so a client that
//! does not read is not read either, and its socket's write buffer stays
//! within [`MAX_WRITE_BUFFER`].

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use super::link::{Link, Output};
use super::relay::HistoryOf;
use super::server::{find_user, history_page, target, text};
use super::{ChatError, Event, Message, Relay, Settings, UserRef};
use crate::accounts::{AccountError, Accounts, Grant};

/// How often the server pings the browser.
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// A socket silent for this long (no message, no pong) is closed.
const SILENCE: Duration = Duration::from_secs(90);
/// How long one write may wait for the browser to take it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Room over `max_message` for the JSON around the text: the longest
/// WebSocket message (and frame) the server reads is `max_message` plus
/// this; a longer one is closed with 1009.
pub const JSON_OVERHEAD: usize = 4096;
/// Events written before one flush.
const WRITE_BATCH: usize = 256;
/// Bytes queued before they go to the socket (a burst of events in one
/// write); a flush writes the rest.
const WRITE_BUFFER: usize = 64 * 1024;
/// The longest frame the server writes: a longer message (a long history,
/// a big backlog) goes out in fragments of this size.
const FRAGMENT: usize = 64 * 1024;
/// The socket's write buffer never holds more (tungstenite's
/// `max_write_buffer_size`): what is queued, one fragment, and room for the
/// control frames tungstenite adds by itself (a pong or a close reply, 127
/// bytes at most each). A pong that does not fit waits in its place, and a
/// newer one replaces it.
pub const MAX_WRITE_BUFFER: usize = WRITE_BUFFER + FRAGMENT + 1024;
/// How long closing may take once the server has sent or answered a Close:
/// the client's Close, then its TCP close.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest close reason (RFC 6455 5.5: a control frame carries 125 bytes,
/// two of them the code).
const MAX_REASON: usize = 123;

/// The read buffer a chat socket starts with. tungstenite allocates 128
/// KiB per socket by default (1.25 GiB for 10 000 idle browsers); chat
/// requests are a few hundred bytes, and a longer frame grows the buffer as
/// it arrives.
const READ_BUFFER: usize = 4 * 1024;

/// The WebSocket settings of a chat socket.
pub fn config(settings: &Settings) -> WebSocketConfig {
    let max = settings.max_message + JSON_OVERHEAD;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

#[derive(Serialize)]
struct Typed<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    inner: &'a T,
}

/// The `message` event of a stored message.
pub fn encode_message(m: &Message) -> String {
    serde_json::to_string(&Typed {
        kind: "message",
        inner: m,
    })
    .unwrap_or_default()
}

fn event_text(e: &Event) -> Utf8Bytes {
    match e {
        Event::Message(m) => m.json().clone(),
        Event::Presence { user, online } => {
            json!({"type": "presence", "user": &**user, "online": online})
                .to_string()
                .into()
        }
        Event::Member { room, user, joined } => {
            json!({"type": "member", "room": &**room, "user": &**user, "joined": joined})
                .to_string()
                .into()
        }
    }
}

fn error_json(id: &Option<Value>, e: &ChatError) -> Value {
    let mut v = json!({"type": "error", "code": e.code(), "message": e.to_string()});
    if let (Some(id), Some(obj)) = (id, v.as_object_mut()) {
        obj.insert("id".into(), id.clone());
    }
    v
}

/// The answer to a send: `sent`, or the refusal, with the request's id.
fn answer_json(id: Option<Value>, r: Result<super::Sent, ChatError>) -> Value {
    match r {
        Ok(sent) => {
            let mut v = json!({"type": "sent", "seq": sent.seq, "ts": sent.ts});
            if let (Some(id), Some(o)) = (id, v.as_object_mut()) {
                o.insert("id".into(), id);
            }
            v
        }
        Err(e) => error_json(&id, &e),
    }
}

/// How the socket ends.
enum Close {
    /// The client went away, or cannot be written to: nothing more to say.
    Gone,
    /// The client sent a Close; tungstenite has queued the reply (the same
    /// code, or 1002 for a code a Close may not carry).
    Answer,
    /// The client broke the protocol (RFC 6455 7.1.7): a Close with this
    /// code and reason, and nothing the client sends after it is read.
    Fail(u16, String),
    /// Say this (an error event, then a Close with the code), and wait for
    /// the client's Close.
    Say(u16, ChatError),
    /// The server is stopping: a Close with 1001, and wait for the client's.
    Shutdown,
    /// The session was revoked (logout elsewhere, password changed): an
    /// `unauthorized` error event, then a Close with 1008.
    Revoked,
}

/// The Close for a failed read, or `None` when the client has just gone.
fn violation(e: &WsError) -> Option<Close> {
    let code = match e {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return None,
        WsError::Protocol(_) => 1002,
        WsError::Utf8(_) => 1007,
        WsError::Capacity(_) => 1009,
        _ => return None,
    };
    let mut reason = e.to_string();
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    Some(Close::Fail(code, reason))
}

fn close_message(code: u16, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }))
}

struct Socket<S> {
    ws: WebSocketStream<S>,
    last_heard: Instant,
    /// A message went out in part (a write given up between its
    /// fragments): no data frame may follow, only the Close.
    torn: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socket<S> {
    /// Queues one text message: one frame, or fragments of [`FRAGMENT`]
    /// bytes, so that no frame needs more room than that in the buffer.
    async fn feed(&mut self, text: Utf8Bytes) -> Result<(), WsError> {
        if text.len() <= FRAGMENT {
            return self.ws.feed(WsMessage::Text(text)).await;
        }
        let bytes = Bytes::from(text);
        self.torn = true;
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + FRAGMENT).min(bytes.len());
            let opcode = OpCode::Data(if at == 0 { Data::Text } else { Data::Continue });
            let frame = Frame::message(bytes.slice(at..end), opcode, end == bytes.len());
            self.ws.feed(WsMessage::Frame(frame)).await?;
            at = end;
        }
        self.torn = false;
        Ok(())
    }

    async fn send_json(&mut self, link: &Link<Option<Value>>, v: &Value) -> Result<(), Close> {
        let text = Utf8Bytes::from(v.to_string());
        bounded(link, async {
            self.feed(text).await?;
            self.ws.flush().await
        })
        .await
    }

    /// Writes an event and whatever else is queued now, then flushes once.
    async fn send_events(
        &mut self,
        link: &mut Link<Option<Value>>,
        first: Event,
    ) -> Result<(), Close> {
        let mut batch = vec![event_text(&first)];
        while batch.len() < WRITE_BATCH {
            match link.try_next_event() {
                Some(e) => batch.push(event_text(&e)),
                None => break,
            }
        }
        bounded(link, async {
            for text in batch {
                self.feed(text).await?;
            }
            self.ws.flush().await
        })
        .await
    }

    /// Writes what tungstenite queued by itself (a pong).
    async fn flush(&mut self, link: &Link<Option<Value>>) -> Result<(), Close> {
        bounded(link, self.ws.flush()).await
    }

    async fn ping(&mut self, link: &Link<Option<Value>>) -> Result<(), Close> {
        bounded(link, self.ws.send(WsMessage::Ping(Bytes::new()))).await
    }
}

/// Runs a write for [`WRITE_TIMEOUT`] at most, unless the relay kicks the
/// connection first.
async fn bounded(
    link: &Link<Option<Value>>,
    write: impl Future<Output = Result<(), WsError>>,
) -> Result<(), Close> {
    let kick = link.kick_signal();
    tokio::select! {
        biased;
        r = tokio::time::timeout(WRITE_TIMEOUT, write) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                debug!("chat socket write failed: {e}");
                Err(Close::Gone)
            }
            Err(_) => {
                debug!("chat socket not read for {WRITE_TIMEOUT:?}: closing it");
                Err(Close::Gone)
            }
        },
        _ = kick => Err(kicked(link)),
    }
}

fn kicked(link: &Link<Option<Value>>) -> Close {
    Close::Say(
        1008,
        ChatError::Internal(format!(
            "this connection did not read its messages for {}: closing it",
            humantime::format_duration(link.relay().settings().slow_timeout)
        )),
    )
}

/// Serves one authenticated chat socket until it closes.
///
/// The socket lives as long as `grant` holds: when one of the user's
/// sessions is revoked it re-checks its own, and a revoked one closes the
/// socket with 1008 at once (and each request checks it first).
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    relay: Relay,
    accounts: Accounts,
    mut grant: Grant,
    since: Option<i64>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let user = UserRef::from(&grant.user);
    let name = user.name.clone();
    let mut link: Link<Option<Value>> = Link::new(relay, user);
    let mut socket = Socket {
        ws,
        last_heard: Instant::now(),
        torn: false,
    };
    let close = match run(&mut socket, &mut link, &accounts, &mut grant, since).await {
        Ok(never) => match never {},
        Err(close) => close,
    };
    if tokio::time::timeout(CLOSE_TIMEOUT, goodbye(&mut socket, close))
        .await
        .is_err()
    {
        debug!(user = %name, "chat socket: the client did not close within {CLOSE_TIMEOUT:?}");
    }
    debug!(user = %name, "chat socket closed");
}

/// Ends the socket as `close` says: the Close sent or answered and flushed,
/// then the TCP close (RFC 6455 7.1.1): the server half-closes first and
/// discards what still comes until the client closes its side.
async fn goodbye<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut Socket<S>, close: Close) {
    if let Close::Gone = close {
        return;
    }
    // Whether ours starts the closing handshake, which the client's Close
    // ends.
    let ours = matches!(close, Close::Say(..) | Close::Shutdown | Close::Revoked);
    let torn = socket.torn;
    let ws = &mut socket.ws;
    let sent = async {
        match close {
            Close::Gone => {}
            Close::Answer => ws.flush().await?,
            Close::Fail(code, reason) => {
                debug!("chat socket broke the protocol ({code}): {reason}");
                ws.send(close_message(code, &reason)).await?
            }
            Close::Say(code, e) => {
                let text = if code == 1008 {
                    json!({"type": "error", "code": "slow_consumer", "message": e.to_string()})
                } else {
                    error_json(&None, &e)
                };
                // After a message cut between fragments only a control
                // frame may follow.
                if !torn {
                    ws.feed(WsMessage::Text(text.to_string().into())).await?;
                }
                ws.send(close_message(code, e.code())).await?
            }
            Close::Shutdown => {
                ws.send(close_message(1001, "server is shutting down"))
                    .await?
            }
            Close::Revoked => {
                let e = AccountError::Unauthorized;
                let text = json!({"type": "error", "code": e.code(), "message": e.to_string()});
                if !torn {
                    ws.feed(WsMessage::Text(text.to_string().into())).await?;
                }
                ws.send(close_message(1008, e.code())).await?
            }
        }
        Ok::<_, WsError>(())
    };
    if let Err(e) = sent.await {
        debug!("chat socket: the close was not written: {e}");
        return;
    }
    if ours {
        // Messages before the client's Close are dropped; tungstenite ends
        // the stream after it.
        while let Some(Ok(_)) = ws.next().await {}
    }
    let io = ws.get_mut();
    if io.shutdown().await.is_err() {
        return;
    }
    let mut discard = [0u8; 4096];
    while matches!(io.read(&mut discard).await, Ok(n) if n > 0) {}
}

/// Whether `grant` still holds; `Close::Revoked` when it does not.
async fn recheck(accounts: &Accounts, grant: &mut Grant) -> Result<(), Close> {
    match accounts.recheck(grant).await {
        Ok(()) => Ok(()),
        Err(AccountError::Unauthorized) => {
            debug!(user = %grant.user.name, "chat socket: session revoked");
            Err(Close::Revoked)
        }
        Err(e) => Err(Close::Say(1011, ChatError::Internal(e.to_string()))),
    }
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut Socket<S>,
    link: &mut Link<Option<Value>>,
    accounts: &Accounts,
    grant: &mut Grant,
    since: Option<i64>,
) -> Result<Infallible, Close> {
    recheck(accounts, grant).await?;
    let (rooms, backlog, truncated, last) = match link.subscribe(since).await {
        Ok(s) => s,
        Err(e) => return Err(Close::Say(1011, e)),
    };
    let hello = json!({
        "type": "subscribed",
        "user": link.user().name,
        "rooms": rooms,
        "seq": last,
        "messages": backlog,
        "truncated": truncated,
    });
    socket.send_json(link, &hello).await?;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        let saturated = link.saturated();
        tokio::select! {
            biased;
            out = link.next() => match out {
                Output::Event(e) => socket.send_events(link, e).await?,
                Output::Answer(id, r) => socket.send_json(link, &answer_json(id, r)).await?,
                Output::Kicked => return Err(kicked(link)),
                Output::Closed => return Err(Close::Shutdown),
            },
            msg = socket.ws.next(), if !saturated => {
                socket.last_heard = Instant::now();
                match msg {
                    Some(Ok(WsMessage::Text(t))) => {
                        recheck(accounts, grant).await?;
                        request(socket, link, accounts, t.as_str()).await?
                    }
                    Some(Ok(WsMessage::Binary(_))) => {
                        let e = ChatError::BadRequest("send JSON text messages".into());
                        socket.send_json(link, &error_json(&None, &e)).await?;
                    }
                    // tungstenite has queued the pong: it is written before
                    // anything more is read, so a client that pings without
                    // reading stops being read and its pongs cannot pile up.
                    Some(Ok(WsMessage::Ping(_))) => socket.flush(link).await?,
                    Some(Ok(WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                    Some(Ok(WsMessage::Close(_))) => return Err(Close::Answer),
                    Some(Err(e)) => {
                        debug!("chat socket failed: {e}");
                        return Err(violation(&e).unwrap_or(Close::Gone));
                    }
                    None => return Err(Close::Gone),
                }
            }
            () = grant.revoked() => recheck(accounts, grant).await?,
            _ = ping.tick() => {
                if socket.last_heard.elapsed() > SILENCE {
                    debug!("chat socket silent for {SILENCE:?}: closing it");
                    return Err(Close::Gone);
                }
                socket.ping(link).await?;
            }
        }
    }
}

/// Handles one JSON request.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut Socket<S>,
    link: &mut Link<Option<Value>>,
    accounts: &Accounts,
    text_in: &str,
) -> Result<(), Close> {
    let (obj, id) = match parse_request(text_in) {
        Ok(request) => request,
        Err(e) => return socket.send_json(link, &error_json(&None, &e)).await,
    };
    match answer(socket, link, accounts, &obj, id.clone()).await {
        Ok(Some(mut v)) => {
            if let (Some(id), Some(o)) = (id, v.as_object_mut()) {
                o.insert("id".into(), id);
            }
            socket.send_json(link, &v).await
        }
        Ok(None) => Ok(()),
        Err(Ok(e)) => socket.send_json(link, &error_json(&id, &e)).await,
        Err(Err(close)) => Err(close),
    }
}

/// Reads one request's text: a JSON object, and its `id` if it has one,
/// which is a number or a string (the framed port's rule). A refusal is
/// answered without an id, as there is none to trust.
pub fn parse_request(text_in: &str) -> Result<(Map<String, Value>, Option<Value>), ChatError> {
    let Ok(Value::Object(obj)) = serde_json::from_str(text_in) else {
        return Err(ChatError::BadRequest(
            "each message must be a JSON object".into(),
        ));
    };
    let id = match obj.get("id") {
        None => None,
        Some(id @ (Value::Number(_) | Value::String(_))) => Some(id.clone()),
        Some(_) => {
            return Err(ChatError::BadRequest(
                "\"id\" must be a number or a string".into(),
            ))
        }
    };
    Ok((obj, id))
}

fn string<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn need<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, ChatError> {
    string(obj, key).ok_or_else(|| ChatError::BadRequest(format!("needs a string \"{key}\"")))
}

/// The answer to a request; `Ok(None)` when it comes later (send).
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut Socket<S>,
    link: &mut Link<Option<Value>>,
    accounts: &Accounts,
    obj: &Map<String, Value>,
    id: Option<Value>,
) -> Result<Option<Value>, Result<ChatError, Close>> {
    let kind = string(obj, "type").unwrap_or("");
    let relay = link.relay().clone();
    let me = link.user().clone();
    if kind == "send" {
        let max = relay.settings().max_message;
        let t = need(obj, "text").map_err(Ok)?;
        if t.len() > max {
            return Err(Ok(ChatError::TooLarge {
                len: t.len() as u64,
                max,
            }));
        }
        let t = text(t.as_bytes().to_vec()).map_err(Ok)?;
        let to = target(accounts, string(obj, "room"), string(obj, "to"))
            .await
            .map_err(Ok)?;
        link.send(id, to, t).await.map_err(|(_, e)| Ok(e))?;
        return Ok(None);
    }
    // Everything else is answered after the sends before it.
    while link.in_flight() {
        match link.next().await {
            Output::Event(e) => socket.send_events(link, e).await.map_err(Err)?,
            Output::Answer(aid, r) => socket
                .send_json(link, &answer_json(aid, r))
                .await
                .map_err(Err)?,
            Output::Kicked => return Err(Err(kicked(link))),
            Output::Closed => return Err(Err(Close::Shutdown)),
        }
    }
    let v = match kind {
        "join" => {
            let j = relay
                .join(&me, need(obj, "room").map_err(Ok)?)
                .await
                .map_err(Ok)?;
            json!({"type": "joined", "room": j.room, "members": j.members, "history": j.history})
        }
        "leave" => {
            let name = relay
                .leave(&me, need(obj, "room").map_err(Ok)?)
                .await
                .map_err(Ok)?;
            json!({"type": "left", "room": name})
        }
        "rooms" => json!({"type": "rooms", "rooms": relay.rooms(&me).await.map_err(Ok)?}),
        "members" => {
            let (name, members) = relay
                .members(need(obj, "room").map_err(Ok)?)
                .await
                .map_err(Ok)?;
            json!({"type": "members", "room": name, "members": members})
        }
        "who" => json!({"type": "who", "users": relay.who().await.map_err(Ok)?}),
        "history" => {
            let of = match (string(obj, "room"), string(obj, "with")) {
                (Some(room), None) => HistoryOf::Room(room.to_string()),
                (None, Some(with)) => HistoryOf::User(find_user(accounts, with).await.map_err(Ok)?),
                _ => {
                    return Err(Ok(ChatError::BadRequest(
                        "history needs exactly one of \"room\" and \"with\"".into(),
                    )))
                }
            };
            let (before, limit) = history_page(obj).map_err(Ok)?;
            let messages = relay.history(&me, of, before, limit).await.map_err(Ok)?;
            json!({"type": "history", "messages": messages})
        }
        "subscribe" => {
            return Err(Ok(ChatError::BadRequest(
                "a chat socket is subscribed from the start; reconnect with ?since= to resume"
                    .into(),
            )))
        }
        other => {
            return Err(Ok(ChatError::BadRequest(format!(
                "unknown request type {other:?}"
            ))))
        }
    };
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(request: &str) -> Result<(Option<i64>, usize), ChatError> {
        let (obj, _) = parse_request(request).expect("a valid request");
        history_page(&obj)
    }

    /// The framed port refuses a `limit` outside 1 to 100 and a `before`
    /// that is not an integer; the socket used to cut 500 down to 100 and
    /// 0 up to 1 and to drop a bad `before`, so a client took a short page
    /// for the start of the history.
    #[test]
    fn history_limit_outside_1_to_100_is_refused_as_on_the_framed_port() {
        for limit in ["0", "-1", "101", "500", "1.5", "\"50\""] {
            let r = page(&format!(
                r#"{{"type":"history","room":"lobby","limit":{limit}}}"#
            ));
            assert!(
                matches!(&r, Err(ChatError::BadRequest(m)) if m.contains("limit")),
                "limit {limit}: {r:?}"
            );
        }
        let r = page(r#"{"type":"history","room":"lobby","before":"x"}"#);
        assert!(matches!(r, Err(ChatError::BadRequest(_))), "{r:?}");
        assert_eq!(page(r#"{"type":"history","room":"lobby"}"#), Ok((None, 50)));
        assert_eq!(
            page(r#"{"type":"history","room":"lobby","before":7,"limit":100}"#),
            Ok((Some(7), 100))
        );
    }

    #[test]
    fn a_request_is_an_object_whose_id_is_a_number_or_a_string() {
        for bad in [
            "",
            "[]",
            "\"send\"",
            "1",
            "{",
            r#"{"id":[1]}"#,
            r#"{"id":null}"#,
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
        let (_, id) = parse_request(r#"{"type":"who","id":"a"}"#).unwrap();
        assert_eq!(id, Some(json!("a")));
        let (_, id) = parse_request(r#"{"type":"who"}"#).unwrap();
        assert_eq!(id, None);
    }
}

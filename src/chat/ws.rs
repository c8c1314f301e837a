//! The chat over WebSocket, for the browser (`GET /api/chat` on the web
//! port): the same relay and the same [`Link`] as the framed port, with
//! requests and events as JSON text messages (docs/http-api.md).

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::SinkExt as _;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tracing::debug;

use super::link::{Link, Output};
use super::relay::HistoryOf;
use super::server::{find_user, target, text};
use super::{ChatError, Event, Message, Relay, UserRef};
use crate::accounts::Accounts;

/// How often the server pings the browser.
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// A socket silent for this long (no message, no pong) is closed.
const SILENCE: Duration = Duration::from_secs(90);
/// How long one write may wait for the browser to take it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Room over `max_message` for the JSON around the text.
pub const JSON_OVERHEAD: usize = 4096;
/// Events written before one flush.
const WRITE_BATCH: usize = 256;

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

/// Why the socket is closing.
enum Close {
    /// The browser went away or broke the protocol: just stop.
    Quiet,
    /// Say this (an error event, then a close frame) and stop.
    Say(u16, ChatError),
    /// The server is stopping.
    Shutdown,
}

struct Socket {
    ws: WebSocket,
    last_heard: Instant,
}

impl Socket {
    async fn send(&mut self, link: &Link<Option<Value>>, msg: WsMessage) -> Result<(), Close> {
        let kick = link.kick_signal();
        tokio::select! {
            biased;
            r = tokio::time::timeout(WRITE_TIMEOUT, self.ws.send(msg)) => match r {
                Ok(Ok(())) => Ok(()),
                _ => Err(Close::Quiet),
            },
            _ = kick => Err(kicked(link)),
        }
    }

    async fn send_json(&mut self, link: &Link<Option<Value>>, v: &Value) -> Result<(), Close> {
        self.send(link, WsMessage::Text(v.to_string().into())).await
    }

    /// Writes an event and whatever else is queued now, then flushes once.
    async fn send_events(
        &mut self,
        link: &mut Link<Option<Value>>,
        first: Event,
    ) -> Result<(), Close> {
        let mut batch = vec![WsMessage::Text(event_text(&first))];
        while batch.len() < WRITE_BATCH {
            match link.try_next_event() {
                Some(e) => batch.push(WsMessage::Text(event_text(&e))),
                None => break,
            }
        }
        let kick = link.kick_signal();
        let ws = &mut self.ws;
        let write = async move {
            for m in batch {
                ws.feed(m).await?;
            }
            ws.flush().await
        };
        tokio::select! {
            biased;
            r = tokio::time::timeout(WRITE_TIMEOUT, write) => match r {
                Ok(Ok(())) => Ok(()),
                _ => Err(Close::Quiet),
            },
            _ = kick => Err(kicked(link)),
        }
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
pub async fn serve(
    ws: WebSocket,
    relay: Relay,
    accounts: Accounts,
    user: UserRef,
    since: Option<i64>,
) {
    let name = user.name.clone();
    let mut link: Link<Option<Value>> = Link::new(relay, user);
    let mut socket = Socket {
        ws,
        last_heard: Instant::now(),
    };
    let close = run(&mut socket, &mut link, &accounts, since)
        .await
        .err()
        .unwrap_or(Close::Quiet);
    let frame = match close {
        Close::Quiet => None,
        Close::Shutdown => Some((1001, "server is shutting down".to_string())),
        Close::Say(code, e) => {
            let text = if code == 1008 {
                json!({"type": "error", "code": "slow_consumer", "message": e.to_string()})
            } else {
                error_json(&None, &e)
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                socket.ws.send(WsMessage::Text(text.to_string().into())),
            )
            .await;
            Some((code, e.code().to_string()))
        }
    };
    if let Some((code, reason)) = frame {
        let close = WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.ws.send(close)).await;
    }
    debug!(user = %name, "chat socket closed");
}

async fn run(
    socket: &mut Socket,
    link: &mut Link<Option<Value>>,
    accounts: &Accounts,
    since: Option<i64>,
) -> Result<(), Close> {
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
            msg = socket.ws.recv(), if !saturated => {
                socket.last_heard = Instant::now();
                match msg {
                    Some(Ok(WsMessage::Text(t))) => request(socket, link, accounts, t.as_str()).await?,
                    Some(Ok(WsMessage::Binary(_))) => {
                        let e = ChatError::BadRequest("send JSON text messages".into());
                        socket.send_json(link, &error_json(&None, &e)).await?;
                    }
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                    Some(Ok(WsMessage::Close(_))) | None => return Ok(()),
                    Some(Err(e)) => {
                        debug!("chat socket failed: {e}");
                        return Err(Close::Quiet);
                    }
                }
            }
            _ = ping.tick() => {
                if socket.last_heard.elapsed() > SILENCE {
                    debug!("chat socket silent for {SILENCE:?}: closing it");
                    return Err(Close::Quiet);
                }
                socket.send(link, WsMessage::Ping(Default::default())).await?;
            }
        }
    }
}

/// Handles one JSON request.
async fn request(
    socket: &mut Socket,
    link: &mut Link<Option<Value>>,
    accounts: &Accounts,
    text_in: &str,
) -> Result<(), Close> {
    let obj: Map<String, Value> = match serde_json::from_str(text_in) {
        Ok(Value::Object(o)) => o,
        _ => {
            let e = ChatError::BadRequest("each message must be a JSON object".into());
            return socket.send_json(link, &error_json(&None, &e)).await;
        }
    };
    let id = obj.get("id").cloned();
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

fn string<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn need<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, ChatError> {
    string(obj, key).ok_or_else(|| ChatError::BadRequest(format!("needs a string \"{key}\"")))
}

/// The answer to a request; `Ok(None)` when it comes later (send).
async fn answer(
    socket: &mut Socket,
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
            let before = obj.get("before").and_then(Value::as_i64);
            let limit = obj
                .get("limit")
                .and_then(Value::as_i64)
                .unwrap_or(50)
                .clamp(1, 100) as usize;
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

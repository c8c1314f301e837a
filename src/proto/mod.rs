//! The framed protocol: a 4-byte big-endian length, a JSON header, a streamed body.
//!
//! This is the proper fix for TCP's "sticky packets": a reader always knows
//! where one message ends and the next begins. [`codec`] turns bytes into
//! [`codec::Item`]s and back; [`Connection`] wraps a stream with `read_frame` /
//! `write_frame` and bounded body streaming. The wire format is documented in
//! `docs/protocol.md`.

pub mod codec;
mod connection;

use std::fmt;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};

pub use codec::{FrameCodec, Item, Limits};
pub use connection::Connection;

/// Bounds one read or write by a timeout (the idle timeout, typically);
/// running out of time is [`ProtoError::Timeout`].
pub async fn timed<T>(
    limit: std::time::Duration,
    op: impl std::future::Future<Output = Result<T, ProtoError>>,
) -> Result<T, ProtoError> {
    tokio::time::timeout(limit, op)
        .await
        .unwrap_or(Err(ProtoError::Timeout))
}

/// Protocol version spoken by this build.
pub const VERSION: u64 = 1;

/// A message header: a JSON object with a string `type`, an optional `id`
/// (number or string) and an optional body `size`.
#[derive(Clone, PartialEq)]
pub struct Frame {
    header: Map<String, Value>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({})", Value::Object(self.header.clone()))
    }
}

impl Frame {
    /// A header of the given type and no other fields.
    pub fn new(kind: &str) -> Frame {
        let mut header = Map::new();
        header.insert("type".into(), Value::String(kind.into()));
        Frame { header }
    }

    /// Builds a frame from a serialisable message whose fields become the
    /// header; the message must serialise to an object with a string `type`.
    pub fn from_message<T: Serialize>(msg: &T) -> Result<Frame, ProtoError> {
        match serde_json::to_value(msg) {
            Ok(Value::Object(header)) if header.get("type").is_some_and(Value::is_string) => {
                Ok(Frame { header })
            }
            Ok(_) => Err(ProtoError::BadHeader(
                "message is not an object with a type".into(),
            )),
            Err(e) => Err(ProtoError::BadHeader(e.to_string())),
        }
    }

    /// Parses and validates a raw header as it came off the wire.
    pub fn parse(raw: &[u8], max_body: u64) -> Result<Frame, ProtoError> {
        let text = std::str::from_utf8(raw)
            .map_err(|e| ProtoError::BadHeader(format!("header is not UTF-8: {e}")))?;
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ProtoError::BadHeader(format!("header is not JSON: {e}")))?;
        let Value::Object(header) = value else {
            return Err(ProtoError::BadHeader("header is not a JSON object".into()));
        };
        match header.get("type") {
            Some(Value::String(_)) => {}
            Some(_) => return Err(ProtoError::BadHeader("\"type\" is not a string".into())),
            None => return Err(ProtoError::BadHeader("header has no \"type\"".into())),
        }
        match header.get("id") {
            None | Some(Value::Number(_)) | Some(Value::String(_)) => {}
            Some(_) => {
                return Err(ProtoError::BadHeader(
                    "\"id\" must be a number or a string".into(),
                ))
            }
        }
        if let Some(size) = header.get("size") {
            let Some(n) = size.as_u64() else {
                return Err(ProtoError::BadSize(format!(
                    "\"size\" must be a non-negative integer, got {size}"
                )));
            };
            if n > max_body {
                return Err(ProtoError::BadSize(format!(
                    "\"size\" {n} is over the limit of {max_body} bytes"
                )));
            }
        }
        Ok(Frame { header })
    }

    /// An error frame with a documented code and a human message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Frame {
        Frame::new("error")
            .with("code", code.as_str())
            .with("message", message.into())
    }

    /// Adds or replaces a header field. Fields are written in the order
    /// they were first added, except `id`, which always goes right after
    /// `type` (so a reader of a capture sees what a frame answers first).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Frame {
        if key == "id" {
            self.set_id(value.into());
        } else {
            self.header.insert(key.into(), value.into());
        }
        self
    }

    /// Puts `id` right after `type` (`type` is always the first field).
    fn set_id(&mut self, id: Value) {
        let at = usize::from(self.header.contains_key("type"));
        self.header.shift_insert(at, "id".into(), id);
    }

    /// Declares a body of `n` bytes (no `size` field when `n` is 0).
    pub fn with_body_len(mut self, n: u64) -> Frame {
        if n == 0 {
            self.header.remove("size");
        } else {
            self.header.insert("size".into(), Value::from(n));
        }
        self
    }

    /// Copies the request's `id`, if any, so the peer can match the answer.
    pub fn reply_to(mut self, request: &Frame) -> Frame {
        if let Some(id) = request.id() {
            self.set_id(id.clone());
        }
        self
    }

    /// The message type.
    pub fn kind(&self) -> &str {
        self.header
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The request id, if the sender gave one.
    pub fn id(&self) -> Option<&Value> {
        self.header.get("id")
    }

    /// The number of body bytes that follow this header.
    pub fn body_len(&self) -> u64 {
        self.header.get("size").and_then(Value::as_u64).unwrap_or(0)
    }

    /// One header field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header.get(key)
    }

    /// One string field.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.header.get(key).and_then(Value::as_str)
    }

    /// The whole header.
    pub fn header(&self) -> &Map<String, Value> {
        &self.header
    }

    /// Decodes the header into a typed message; a mismatch is `bad_request`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ProtoError> {
        T::deserialize(&Value::Object(self.header.clone())).map_err(|e| ProtoError::Remote {
            code: ErrorCode::BadRequest.as_str().into(),
            message: format!("bad {} message: {e}", self.kind()),
        })
    }

    /// If this is an error frame, its code and message.
    pub fn as_error(&self) -> Option<(String, String)> {
        (self.kind() == "error").then(|| {
            (
                self.str("code").unwrap_or("unknown").to_string(),
                self.str("message").unwrap_or("").to_string(),
            )
        })
    }
}

/// Documented error codes carried in `{"type":"error","code":...}` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Header length over the limit; the connection is closed.
    HeaderTooLarge,
    /// Header is not a UTF-8 JSON object with a string `type`; closed.
    BadHeader,
    /// `size` is not a non-negative integer within the limit; closed.
    BadSize,
    /// The first message was not `hello`.
    HelloRequired,
    /// A message type this server does not know.
    UnknownType,
    /// A protocol version this server does not speak.
    UnsupportedVersion,
    /// A known message with missing or invalid fields.
    BadRequest,
    /// The server is at its connection limit; closed.
    Busy,
    /// Nothing arrived within the idle or handshake timeout; closed.
    Timeout,
    /// The server is stopping; closed.
    ShuttingDown,
    /// The server failed; the message says what happened.
    Internal,
    /// A chat connection did not read its messages in time; closed.
    SlowConsumer,
    /// A plain client reached a port that speaks TLS; closed.
    TlsRequired,
    /// The client's address has as many connections open as the server
    /// allows one address; closed.
    TooManyConnections,
    /// A body arrived more slowly than the server's least rate; closed.
    BodyTooSlow,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::HeaderTooLarge => "header_too_large",
            ErrorCode::BadHeader => "bad_header",
            ErrorCode::BadSize => "bad_size",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Busy => "busy",
            ErrorCode::Timeout => "timeout",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::TlsRequired => "tls_required",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::BodyTooSlow => "body_too_slow",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors reading or writing framed messages.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The header length is over the limit.
    #[error("header of {len} bytes is over the limit of {max}")]
    HeaderTooLarge { len: usize, max: usize },
    /// The header is not a valid header.
    #[error("bad header: {0}")]
    BadHeader(String),
    /// The `size` field is invalid.
    #[error("bad size: {0}")]
    BadSize(String),
    /// The stream ended in the middle of a message.
    #[error("connection closed in the middle of a message")]
    Truncated,
    /// A header was written before the previous body was complete.
    #[error("previous body still owes {0} bytes")]
    BodyIncomplete(u64),
    /// More body bytes were written than the header declared.
    #[error("body is {extra} bytes longer than its declared size")]
    BodyOverrun { extra: u64 },
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// A body brought less than its least progress in time.
    #[error("body too slow: less than {bytes} bytes arrived within {}", humantime::format_duration(*.within))]
    BodyTooSlow {
        bytes: usize,
        within: std::time::Duration,
    },
    /// The peer answered with an error frame (client side), or a request was
    /// refused with this code (server side).
    #[error("{code}: {message}")]
    Remote { code: String, message: String },
}

impl ProtoError {
    /// The wire code this error is reported with, when it is the peer's fault.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ProtoError::HeaderTooLarge { .. } => Some(ErrorCode::HeaderTooLarge),
            ProtoError::BadHeader(_) => Some(ErrorCode::BadHeader),
            ProtoError::BadSize(_) => Some(ErrorCode::BadSize),
            ProtoError::Timeout => Some(ErrorCode::Timeout),
            ProtoError::BodyTooSlow { .. } => Some(ErrorCode::BodyTooSlow),
            _ => None,
        }
    }

    /// A refusal with a code, for request handlers.
    pub fn refuse(code: ErrorCode, message: impl Into<String>) -> ProtoError {
        ProtoError::Remote {
            code: code.as_str().into(),
            message: message.into(),
        }
    }
}

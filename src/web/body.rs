//! Response bodies: the access-log wrapper that counts what was sent, and
//! file bodies read from disk a large chunk at a time, only as fast as the
//! client takes them.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, StatusCode, Version};
use http_body::{Frame, SizeHint};

/// Bytes read from a file per chunk of a response.
pub const FILE_CHUNK: usize = crate::store::read::READ_CHUNK;

/// What the access log says of one request, completed when the body ends.
#[derive(Debug)]
pub struct AccessLine {
    pub peer: SocketAddr,
    pub method: Method,
    pub target: String,
    pub version: Version,
    pub status: StatusCode,
    pub started: Instant,
}

/// What the access line takes from a request, kept while it is answered.
/// Taken only when the access log is on: it is off in benchmarks, and this
/// is the hot path.
pub struct Access {
    started: Instant,
    method: Method,
    target: String,
    version: Version,
}

impl Access {
    /// The request's part of its access line, if the access log is on.
    pub fn of<B>(req: &http::Request<B>) -> Option<Access> {
        tracing::enabled!(target: "sockit::access", tracing::Level::INFO).then(|| Access {
            started: Instant::now(),
            method: req.method().clone(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".into(), |p| p.as_str().to_owned()),
            version: req.version(),
        })
    }

    /// `response`, logging its access line once its body is done (if
    /// `access` was taken: the log is on).
    pub fn log(
        access: Option<Access>,
        peer: SocketAddr,
        response: http::Response<Body>,
    ) -> http::Response<Body> {
        let Some(a) = access else {
            return response;
        };
        let line = AccessLine {
            peer,
            method: a.method,
            target: a.target,
            version: a.version,
            status: response.status(),
            started: a.started,
        };
        response.map(|b| Body::new(Logged::new(b, line)))
    }
}

/// A response body that logs one access line when it is done (sent in full,
/// or dropped because the client went away).
pub struct Logged {
    inner: Body,
    sent: u64,
    line: Option<AccessLine>,
    complete: bool,
}

impl Logged {
    pub fn new(inner: Body, line: AccessLine) -> Logged {
        Logged {
            inner,
            sent: 0,
            line: Some(line),
            complete: false,
        }
    }
}

/// Escapes control characters (and backslashes) so a request target cannot
/// forge log lines or move a terminal's cursor.
pub fn escape_log(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_control() || ch == '\\' {
            let _ = write!(out, "{}", ch.escape_default());
        } else {
            out.push(ch);
        }
    }
    out
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(l) = self.line.take() {
            tracing::info!(
                target: "sockit::access",
                peer = %l.peer,
                method = %l.method,
                path = %escape_log(&l.target),
                version = ?l.version,
                status = l.status.as_u16(),
                bytes = self.sent,
                ms = format_args!("{:.3}", l.started.elapsed().as_secs_f64() * 1000.0),
                complete = self.complete || http_body::Body::is_end_stream(&self.inner),
                "request"
            );
        }
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) => self.complete = true,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body of `len` bytes of `file` from `offset`, read a [`FILE_CHUNK`] at
/// a time (see [`FileBody`]).
pub fn file_body(file: std::fs::File, offset: u64, len: u64) -> Body {
    file_parts_body(vec![Part::File { file, offset, len }])
}

/// One part of a multi-part body.
pub enum Part {
    /// Bytes in memory (multipart boundaries, headers).
    Bytes(Bytes),
    /// A range of a file.
    File {
        file: std::fs::File,
        offset: u64,
        len: u64,
    },
}

/// A body made of parts, file ranges read a chunk at a time.
pub fn file_parts_body(parts: Vec<Part>) -> Body {
    let left = parts
        .iter()
        .map(|p| match p {
            Part::Bytes(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        })
        .sum();
    let parts = parts
        .into_iter()
        .map(|p| match p {
            Part::Bytes(b) => Piece::Bytes(b),
            Part::File { file, offset, len } => Piece::File {
                file: Arc::new(file),
                at: offset,
                end: offset + len,
            },
        })
        .collect();
    Body::new(FileBody {
        parts,
        ahead: VecDeque::new(),
        left,
    })
}

/// What is left of a part to send.
enum Piece {
    Bytes(Bytes),
    File {
        file: Arc<std::fs::File>,
        at: u64,
        end: u64,
    },
}

/// A chunk being read on the blocking pool.
type Read = Pin<Box<dyn Future<Output = std::io::Result<Bytes>> + Send>>;

/// Chunks of a response read ahead of the one hyper is sending. Two hide the
/// time a blocking thread takes to wake on a busy machine; a client that
/// stops reading holds them (and hyper's one) in memory, no thread.
pub const READ_AHEAD: usize = 2;

/// One read ahead: in flight, or done and waiting for its turn.
enum Slot {
    Reading(Read),
    Done(std::io::Result<Bytes>),
}

/// A body read from files a chunk at a time. Hyper polls a body only when the
/// connection can take more (HTTP/1: the socket is writable; HTTP/2: the
/// stream has window), and each chunk is one short blocking read
/// ([`crate::store::read::read_at`], under the transfers' shared limit), at
/// most [`READ_AHEAD`] ahead of the one being sent: a client that stops
/// reading holds no thread, only those chunks.
struct FileBody {
    /// The parts not yet sent, the current one first.
    parts: VecDeque<Piece>,
    /// Reads of the current file part's next chunks, in order.
    ahead: VecDeque<Slot>,
    /// Bytes still to send (the exact length hyper announced).
    left: u64,
}

impl FileBody {
    /// Starts reads of the current part's next chunks, up to [`READ_AHEAD`],
    /// if it is a file part with bytes left.
    fn read_ahead(&mut self) {
        let Some(Piece::File { file, at, end }) = self.parts.front_mut() else {
            return;
        };
        while self.ahead.len() < READ_AHEAD && *at < *end {
            let want = (*end - *at).min(FILE_CHUNK as u64) as usize;
            self.ahead
                .push_back(Slot::Reading(Box::pin(crate::store::read::read_at(
                    file.clone(),
                    *at,
                    want,
                ))));
            *at += want as u64;
        }
    }

    /// Drives every read in flight (each waits for a permit, then for its
    /// thread), keeping the results in order.
    fn drive(&mut self, cx: &mut Context<'_>) {
        for slot in self.ahead.iter_mut() {
            if let Slot::Reading(read) = slot {
                if let Poll::Ready(r) = read.as_mut().poll(cx) {
                    *slot = Slot::Done(r);
                }
            }
        }
    }

    /// The first read's result, once it is there.
    fn poll_ahead(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Bytes>> {
        self.drive(cx);
        match self.ahead.front() {
            Some(Slot::Done(_)) => match self.ahead.pop_front() {
                Some(Slot::Done(r)) => Poll::Ready(r),
                _ => Poll::Pending,
            },
            _ => Poll::Pending,
        }
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        loop {
            if !this.ahead.is_empty() {
                let chunk = ready!(this.poll_ahead(cx))?;
                this.left = this.left.saturating_sub(chunk.len() as u64);
                this.read_ahead();
                // Started reads get going now, not when hyper polls next.
                this.drive(cx);
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            match this.parts.front_mut() {
                None => return Poll::Ready(None),
                Some(Piece::Bytes(b)) => {
                    let b = std::mem::take(b);
                    this.parts.pop_front();
                    this.left = this.left.saturating_sub(b.len() as u64);
                    this.read_ahead();
                    this.drive(cx);
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Some(Piece::File { at, end, .. }) if *at >= *end => {
                    this.parts.pop_front();
                }
                Some(Piece::File { .. }) => this.read_ahead(),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::escape_log;

    #[test]
    fn log_text_cannot_forge_lines_or_drive_a_terminal() {
        assert_eq!(escape_log("/a\nb"), "/a\\nb");
        assert_eq!(escape_log("/\u{1b}[31mred"), "/\\u{1b}[31mred");
        assert_eq!(escape_log("/back\\slash"), "/back\\\\slash");
        assert_eq!(escape_log("/plain/ünï"), "/plain/ünï");
    }
}

/// A request body that must keep moving: at least `bytes` within each
/// `within`, or it ends with an error, which the handler reading it sees as
/// a cut body (an upload keeps what arrived, for a resume). One deadline per
/// body, moved on each time enough bytes have come, never a timer per
/// chunk; 0 bytes turns it off. The framed port's bodies have the same rule
/// ([`crate::proto::Limits::body_progress_bytes`]).
pub struct ProgressBody<B> {
    inner: B,
    bytes: usize,
    within: std::time::Duration,
    /// Bytes since the deadline last moved.
    since: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// What a [`ProgressBody`] that stalled ends with.
#[derive(Debug, thiserror::Error)]
#[error("the body came slower than {bytes} bytes per {}; cut", humantime::format_duration(*.within))]
pub struct BodyTooSlow {
    pub bytes: usize,
    pub within: std::time::Duration,
}

impl<B> ProgressBody<B> {
    pub fn new(inner: B, bytes: usize, within: std::time::Duration) -> ProgressBody<B> {
        ProgressBody {
            inner,
            bytes,
            within,
            since: 0,
            deadline: None,
        }
    }
}

impl<B> http_body::Body for ProgressBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.since += data.len();
                    if this.since >= this.bytes {
                        this.since = 0;
                        this.deadline = None;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending if this.bytes == 0 => Poll::Pending,
            Poll::Pending => {
                let within = this.within;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(within)));
                ready!(deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(BodyTooSlow {
                    bytes: this.bytes,
                    within,
                }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

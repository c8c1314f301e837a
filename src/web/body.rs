//! Response bodies: the access-log wrapper that counts what was sent, and
//! file bodies read on the blocking pool in large chunks.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// Bytes read from a file per chunk of a response.
pub const FILE_CHUNK: usize = 256 * 1024;

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

/// Chunks of file data waiting to be sent, per response.
const FILE_PIPE_DEPTH: usize = 2;

/// A body of `len` bytes of `file` from `offset`, read on the blocking pool
/// in [`FILE_CHUNK`]s, at most [`FILE_PIPE_DEPTH`] ahead of the socket.
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

/// A body made of parts, file ranges read on the blocking pool.
pub fn file_parts_body(parts: Vec<Part>) -> Body {
    let total: u64 = parts
        .iter()
        .map(|p| match p {
            Part::Bytes(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        })
        .sum();
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(FILE_PIPE_DEPTH);
    tokio::task::spawn_blocking(move || {
        for part in parts {
            match part {
                Part::Bytes(b) => {
                    if tx.blocking_send(Ok(b)).is_err() {
                        return;
                    }
                }
                Part::File { file, offset, len } => {
                    let mut at = offset;
                    let end = offset + len;
                    while at < end {
                        let want = (end - at).min(FILE_CHUNK as u64) as usize;
                        match read_chunk(&file, at, want) {
                            Ok(chunk) => {
                                at += want as u64;
                                if tx.blocking_send(Ok(chunk)).is_err() {
                                    return; // The client went away.
                                }
                            }
                            Err(e) => {
                                let _ = tx.blocking_send(Err(e));
                                return;
                            }
                        }
                    }
                }
            }
        }
    });
    Body::new(ChannelBody { rx, left: total })
}

/// Reads exactly `want` bytes at `at` into a fresh buffer that is never
/// zeroed first (the read fills it), or fails if the file got shorter.
fn read_chunk(file: &std::fs::File, at: u64, want: usize) -> std::io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    let mut buf = bytes::BytesMut::with_capacity(want);
    let mut filled = 0;
    while filled < want {
        // SAFETY: pread writes at most `want - filled` bytes into the spare
        // capacity, which holds at least that many; only the bytes it
        // reports are then counted as initialised (set_len below).
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(filled).cast(),
                want - filled,
                (at + filled as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was being sent",
            ));
        }
        filled += n as usize;
        // SAFETY: the first `filled` bytes were written by pread.
        unsafe { buf.set_len(filled) };
    }
    Ok(buf.freeze())
}

/// Body fed by a channel, with an exact length.
struct ChannelBody {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    left: u64,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.left = self.left.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file reader stopped early",
            )))),
            Poll::Pending => Poll::Pending,
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

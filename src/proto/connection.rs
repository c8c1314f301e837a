//! [`Connection`]: framed messages over any byte stream, with bounded buffers.
//!
//! The read buffer starts empty (an idle connection costs no buffer memory)
//! and grows only to what one header or one body chunk needs. Bodies are read
//! chunk by chunk and written either through the write buffer (small pieces) or
//! straight to the stream (large pieces), never held whole.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use super::codec::{self, FrameCodec, Item, Limits, MAX_CHUNK};
use super::{ErrorCode, Frame, ProtoError};

/// Read size for headers and small bodies.
const READ_SIZE: usize = 8 * 1024;
/// Writes at least this large skip the write buffer.
const DIRECT_WRITE: usize = 32 * 1024;

/// A framed-protocol connection over a byte stream.
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    /// Bytes read but not yet decoded.
    rbuf: BytesMut,
    /// Encoded bytes not yet written; flushed once per message.
    wbuf: BytesMut,
    /// Tracks message boundaries and the body owed in each direction.
    codec: FrameCodec,
    /// Where the bytes this connection moves are counted (`sockit stats`).
    traffic: Option<Arc<crate::server::Counters>>,
    /// The progress deadline of the body being read, from the first time
    /// it is asked for until it is complete.
    progress: Option<Progress>,
}

/// How a body being read stands against its least progress
/// ([`Limits::body_progress_bytes`] per [`Limits::body_progress_timeout`]):
/// one deadline, moved on each time enough bytes have come, rather than a
/// timer per read.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// When the bytes still owed for this step must have come.
    deadline: tokio::time::Instant,
    /// Bytes come in this step.
    got: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a stream with the given limits on what is read.
    pub fn new(stream: S, limits: Limits) -> Self {
        Connection {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            codec: FrameCodec::new(limits),
            traffic: None,
            progress: None,
        }
    }

    /// Counts every byte read and written from now on in `counters`.
    pub fn count_traffic(&mut self, counters: Arc<crate::server::Counters>) {
        self.traffic = Some(counters);
    }

    /// The counters given to [`count_traffic`](Self::count_traffic), if any.
    pub fn traffic(&self) -> Option<&Arc<crate::server::Counters>> {
        self.traffic.as_ref()
    }

    /// The stream and the input read ahead but not yet decoded, for a
    /// service that drives both directions at once for a while (`exec`
    /// reads the client's stdin while it writes the program's output). The
    /// caller reads and writes whole messages itself and must leave the
    /// buffer at a message boundary. Refused while a body is owed in either
    /// direction or output is buffered (flush first).
    pub fn duplex_parts(&mut self) -> Result<(&mut S, &mut BytesMut), ProtoError> {
        if self.codec.read_body_left() > 0 {
            return Err(ProtoError::BodyIncomplete(self.codec.read_body_left()));
        }
        if self.codec.write_body_left() > 0 || !self.wbuf.is_empty() {
            return Err(ProtoError::BodyIncomplete(
                self.codec.write_body_left() + self.wbuf.len() as u64,
            ));
        }
        Ok((&mut self.stream, &mut self.rbuf))
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Frees the read and write buffers if they hold nothing, so that a
    /// connection waiting for a long time (a chat subscriber) costs no
    /// buffer memory; the next read or write allocates again.
    pub fn release_buffers(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
            self.wbuf = BytesMut::new();
        }
    }

    /// The stream and the bytes read from it but not yet decoded, for a
    /// caller that takes over the reading (a load generator's lean reader).
    /// Only between messages: any unread body is part of the bytes.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.stream, self.rbuf)
    }

    /// The limits in force for reading.
    pub fn limits(&self) -> Limits {
        self.codec.limits()
    }

    /// Reads into the buffer; `Ok(false)` at end of stream.
    async fn fill(&mut self, want: usize) -> Result<bool, ProtoError> {
        if self.rbuf.capacity() == 0 {
            // No buffer (a new connection, or one that released it to wait):
            // wait for the first bytes with a small buffer in the task, so a
            // connection that waits long holds no heap buffer meanwhile.
            let mut first = [0u8; 512];
            let n = self.stream.read(&mut first).await?;
            if n == 0 {
                return Ok(false);
            }
            if let Some(t) = &self.traffic {
                t.add_in(n);
            }
            self.rbuf.reserve(want.max(n));
            self.rbuf.extend_from_slice(&first[..n]);
            return Ok(true);
        }
        if self.rbuf.capacity() - self.rbuf.len() < want {
            self.rbuf.reserve(want);
        }
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if let Some(t) = &self.traffic {
            t.add_in(n);
        }
        Ok(n > 0)
    }

    /// Reads the next message header. `Ok(None)` is a clean end of stream
    /// between messages; end of stream inside a message is [`ProtoError::Truncated`].
    /// Any unread body of the previous message is skipped first.
    ///
    /// Cancel-safe: all progress is kept in the connection.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        self.discard_body().await?;
        loop {
            if let Some(item) = self.codec.decode(&mut self.rbuf)? {
                match item {
                    Item::Header(frame) => return Ok(Some(frame)),
                    Item::Body(_) => unreachable!("body was discarded above"),
                }
            }
            if self.rbuf.is_empty() {
                // Between messages with nothing buffered: the connection may
                // now wait a long time, so it gives its buffer back (the
                // next bytes arrive in a small buffer in the task).
                self.rbuf = BytesMut::new();
            }
            if !self.fill(READ_SIZE).await? {
                return match self.codec.decode_eof(&mut self.rbuf)? {
                    Some(Item::Header(frame)) => Ok(Some(frame)),
                    _ => Ok(None),
                };
            }
        }
    }

    /// The next message's header if it is already complete in the read
    /// buffer, without consuming it or reading the socket. Lets a handler
    /// see whether the client has pipelined more of the same request.
    pub fn peek_buffered(&self) -> Option<Frame> {
        if self.codec.read_body_left() > 0 || self.rbuf.len() < codec::LEN_PREFIX {
            return None;
        }
        let n =
            u32::from_be_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], self.rbuf[3]]) as usize;
        if n == 0 || n > self.codec.limits().max_header || self.rbuf.len() < codec::LEN_PREFIX + n {
            return None;
        }
        Frame::parse(
            &self.rbuf[codec::LEN_PREFIX..codec::LEN_PREFIX + n],
            self.codec.limits().max_body,
        )
        .ok()
    }

    /// The next chunk of the current message's body, or `None` once it is
    /// complete. Chunks are at most [`MAX_CHUNK`] bytes.
    pub async fn read_body_chunk(&mut self) -> Result<Option<Bytes>, ProtoError> {
        loop {
            let left = self.codec.read_body_left();
            if left == 0 {
                self.progress = None;
                return Ok(None);
            }
            if let Some(Item::Body(chunk)) = self.codec.decode(&mut self.rbuf)? {
                return Ok(Some(chunk));
            }
            let want = (left as usize).clamp(READ_SIZE, MAX_CHUNK);
            if !self.fill_in_time(want).await? {
                return Err(ProtoError::Truncated);
            }
        }
    }

    /// [`fill`](Self::fill) for a body, under its progress deadline.
    async fn fill_in_time(&mut self, want: usize) -> Result<bool, ProtoError> {
        let limits = self.codec.limits();
        if limits.body_progress_bytes == 0 {
            return self.fill(want).await;
        }
        let now = tokio::time::Instant::now();
        let progress = *self.progress.get_or_insert(Progress {
            deadline: now + limits.body_progress_timeout,
            got: 0,
        });
        let before = self.rbuf.len();
        let filled = tokio::time::timeout_at(progress.deadline, self.fill(want))
            .await
            .map_err(|_| ProtoError::BodyTooSlow {
                bytes: limits.body_progress_bytes,
                within: limits.body_progress_timeout,
            })??;
        let got = progress.got + self.rbuf.len().saturating_sub(before);
        self.progress = Some(if got >= limits.body_progress_bytes {
            Progress {
                deadline: tokio::time::Instant::now() + limits.body_progress_timeout,
                got: 0,
            }
        } else {
            Progress { got, ..progress }
        });
        Ok(filled)
    }

    /// Body bytes of the current message still unread.
    pub fn body_left(&self) -> u64 {
        self.codec.read_body_left()
    }

    /// Reads and drops the rest of the current body.
    pub async fn discard_body(&mut self) -> Result<(), ProtoError> {
        while let Some(chunk) = self.read_body_chunk().await? {
            drop(chunk);
        }
        Ok(())
    }

    /// Reads the whole current body into memory, refusing bodies over `max`.
    /// For small bodies only (chat text, short replies).
    pub async fn read_body_to_vec(&mut self, max: usize) -> Result<Vec<u8>, ProtoError> {
        let left = self.codec.read_body_left();
        if left > max as u64 {
            return Err(ProtoError::refuse(
                ErrorCode::BadRequest,
                format!("body of {left} bytes is over the limit of {max}"),
            ));
        }
        let mut out = Vec::with_capacity(left as usize);
        while let Some(chunk) = self.read_body_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Queues a header without flushing (for batching several messages).
    pub fn queue_frame(&mut self, frame: &Frame) -> Result<(), ProtoError> {
        self.codec.encode(frame, &mut self.wbuf)
    }

    /// Queues a header and its whole (small) body without flushing.
    pub fn queue_message(&mut self, frame: &Frame, body: &[u8]) -> Result<(), ProtoError> {
        self.codec.encode(frame, &mut self.wbuf)?;
        self.codec.encode(body, &mut self.wbuf)
    }

    /// Queues complete messages encoded beforehand (by [`FrameCodec`], a
    /// header with all of its body), without flushing. Lets one encoding be
    /// written to many connections.
    pub fn queue_encoded(&mut self, bytes: &[u8]) -> Result<(), ProtoError> {
        if self.codec.write_body_left() > 0 {
            return Err(ProtoError::BodyIncomplete(self.codec.write_body_left()));
        }
        self.wbuf.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes a header and flushes it (one write for the whole header).
    pub async fn write_frame(&mut self, frame: &Frame) -> Result<(), ProtoError> {
        self.queue_frame(frame)?;
        self.flush().await
    }

    /// Writes a piece of the current body. Small pieces are buffered until
    /// [`flush`](Self::flush); large ones go straight to the stream.
    pub async fn write_body(&mut self, chunk: &[u8]) -> Result<(), ProtoError> {
        if chunk.len() < DIRECT_WRITE {
            return self.codec.encode(chunk, &mut self.wbuf);
        }
        self.codec.note_body_written(chunk.len())?;
        self.flush_buffer().await?;
        self.stream.write_all(chunk).await?;
        if let Some(t) = &self.traffic {
            t.add_out(chunk.len());
        }
        Ok(())
    }

    /// Writes a header and its whole (small) body, then flushes.
    pub async fn write_message(&mut self, frame: &Frame, body: &[u8]) -> Result<(), ProtoError> {
        let frame = frame.clone().with_body_len(body.len() as u64);
        self.queue_frame(&frame)?;
        self.write_body(body).await?;
        self.flush().await
    }

    async fn flush_buffer(&mut self) -> Result<(), ProtoError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            if let Some(t) = &self.traffic {
                t.add_out(self.wbuf.len());
            }
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Writes everything buffered and flushes the stream.
    pub async fn flush(&mut self) -> Result<(), ProtoError> {
        self.flush_buffer().await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends an error frame (answering `request` if given) and flushes.
    pub async fn write_error(
        &mut self,
        request: Option<&Frame>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<(), ProtoError> {
        let mut frame = Frame::error(code, message);
        if let Some(req) = request {
            frame = frame.reply_to(req);
        }
        self.write_frame(&frame).await
    }

    /// Reads and drops raw input until end of stream or `max` bytes. Used
    /// after a fatal error: closing a socket with unread input makes the
    /// kernel send a reset, which can destroy the error frame in flight.
    pub async fn drain_input(&mut self, max: usize) -> Result<(), ProtoError> {
        let mut seen = self.rbuf.len();
        self.rbuf.clear();
        while seen < max {
            self.rbuf.clear();
            if !self.fill(READ_SIZE).await? {
                break;
            }
            seen += self.rbuf.len();
        }
        self.rbuf.clear();
        Ok(())
    }

    /// Flushes and shuts down the write side (the peer reads end of stream).
    pub async fn shutdown(&mut self) -> Result<(), ProtoError> {
        self.flush().await?;
        self.stream.shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::duplex;

    #[tokio::test]
    async fn frames_and_bodies_cross_a_small_pipe() {
        // A 64-byte pipe forces many partial reads and writes.
        let (a, b) = duplex(64);
        let mut tx = Connection::new(a, Limits::default());
        let mut rx = Connection::new(b, Limits::default());
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let sent = body.clone();
        let writer = tokio::spawn(async move {
            tx.write_frame(&Frame::new("ping").with("id", 1)).await?;
            tx.queue_frame(&Frame::new("put").with_body_len(sent.len() as u64))?;
            for piece in sent.chunks(70_000) {
                tx.write_body(piece).await?;
            }
            tx.flush().await?;
            tx.write_message(&Frame::new("note"), b"tail").await?;
            tx.shutdown().await
        });
        let f = rx.read_frame().await.unwrap().unwrap();
        assert_eq!((f.kind(), f.id()), ("ping", Some(&1.into())));
        let f = rx.read_frame().await.unwrap().unwrap();
        assert_eq!(f.body_len(), body.len() as u64);
        let mut got = Vec::new();
        while let Some(chunk) = rx.read_body_chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, body);
        let f = rx.read_frame().await.unwrap().unwrap();
        assert_eq!(rx.read_body_to_vec(16).await.unwrap(), b"tail");
        assert_eq!(f.kind(), "note");
        assert!(rx.read_frame().await.unwrap().is_none());
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn unread_body_is_skipped_by_next_read_frame() {
        let (a, b) = duplex(1024);
        let mut tx = Connection::new(a, Limits::default());
        let mut rx = Connection::new(b, Limits::default());
        tokio::spawn(async move {
            tx.write_message(&Frame::new("big"), &[7u8; 5000]).await?;
            tx.write_frame(&Frame::new("after")).await?;
            tx.shutdown().await
        });
        assert_eq!(rx.read_frame().await.unwrap().unwrap().kind(), "big");
        assert_eq!(rx.read_frame().await.unwrap().unwrap().kind(), "after");
    }

    #[tokio::test]
    async fn eof_inside_a_message_is_truncated() {
        let (mut a, b) = duplex(1024);
        let mut rx = Connection::new(b, Limits::default());
        a.write_all(&[0, 0, 0, 50, b'{']).await.unwrap();
        drop(a);
        assert!(matches!(rx.read_frame().await, Err(ProtoError::Truncated)));
    }

    /// Sends a `put` header of `size` and then `piece` bytes every `every`,
    /// `pieces` times, keeping the pipe open, to a reader that wants 1 KiB
    /// per `within`; returns what reading the body ended with, and after how
    /// long. (Real time: tokio's paused clock is not built in.)
    async fn drip(
        size: u64,
        piece: usize,
        every: Duration,
        pieces: usize,
        within: Duration,
    ) -> (Result<u64, ProtoError>, Duration) {
        let limits = Limits {
            body_progress_bytes: 1024,
            body_progress_timeout: within,
            ..Limits::default()
        };
        let (a, b) = duplex(1 << 16);
        let mut tx = Connection::new(a, Limits::default());
        let mut rx = Connection::new(b, limits);
        tx.queue_frame(&Frame::new("put").with_body_len(size))
            .unwrap();
        tx.flush().await.unwrap();
        let writer = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            for _ in 0..pieces {
                ticks.tick().await;
                if tx.write_body(&vec![b'x'; piece]).await.is_err() || tx.flush().await.is_err() {
                    break;
                }
            }
            // Hold the pipe open: the reader must end on its own.
            std::future::pending::<()>().await;
        });
        rx.read_frame().await.unwrap().unwrap();
        let start = tokio::time::Instant::now();
        let mut got = 0u64;
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match rx.read_body_chunk().await {
                    Ok(Some(chunk)) => got += chunk.len() as u64,
                    Ok(None) => break Ok(got),
                    Err(e) => break Err(e),
                }
            }
        })
        .await
        .expect("reading the body ends within 10 s");
        writer.abort();
        (end, start.elapsed())
    }

    #[tokio::test]
    async fn a_body_dripped_below_1_kib_per_500_ms_is_cut_at_the_deadline() {
        // 1 byte every 100 ms: each byte is traffic (an idle timer would be
        // reset by every one), but far from the progress asked for.
        let within = Duration::from_millis(500);
        let (end, after) = drip(1_000_000, 1, Duration::from_millis(100), 1_000, within).await;
        assert!(
            matches!(end, Err(ProtoError::BodyTooSlow { bytes: 1024, .. })),
            "{end:?}"
        );
        assert!(after >= within, "not before the deadline: {after:?}");
        assert!(after < within * 4, "at the deadline: {after:?}");
        assert_eq!(
            end.unwrap_err().code(),
            Some(ErrorCode::BodyTooSlow),
            "reported with its code"
        );
    }

    #[tokio::test]
    async fn a_slow_body_above_1_kib_per_1_s_is_read_to_its_end() {
        // 600 bytes every 100 ms (6 KiB/s, 2 s in all): slow, but moving.
        let size = 20 * 600;
        let (end, _) = drip(
            size,
            600,
            Duration::from_millis(100),
            20,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(end.unwrap(), size);
    }

    #[tokio::test]
    async fn eof_inside_a_body_is_truncated() {
        let (a, b) = duplex(1024);
        let mut tx = Connection::new(a, Limits::default());
        let mut rx = Connection::new(b, Limits::default());
        tx.queue_frame(&Frame::new("put").with_body_len(10))
            .unwrap();
        tx.write_body(b"abc").await.unwrap();
        tx.flush().await.unwrap();
        drop(tx);
        rx.read_frame().await.unwrap().unwrap();
        let mut res = Ok(None);
        for _ in 0..3 {
            res = rx.read_body_chunk().await;
            if !matches!(res, Ok(Some(_))) {
                break;
            }
        }
        assert!(matches!(res, Err(ProtoError::Truncated)), "{res:?}");
    }
}

//! Client side of `exec` and the `sockit exec` command: sends the request,
//! then relays stdin to the server and the program's stdout and stderr to
//! their own sinks as they arrive, until the server reports the exit.
//!
//! Like the server, the relay is one `select!` loop over the socket's two
//! halves and the stdin channel, with bounded buffers: a new stdin chunk is
//! taken only once the previous one is on the wire.

use crate::files::commands::Remote;
use std::io::{Read, Write};

use crate::tls::Stream;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};

use crate::files::client::ClientError;
use crate::proto::{Connection, Frame, FrameCodec, Item, ProtoError};

/// Bytes of stdin read and sent at a time.
pub const STDIN_CHUNK: usize = 64 * 1024;
/// Stdin chunks read ahead of the socket.
const STDIN_DEPTH: usize = 4;
/// Exit status of `sockit exec` when the time limit killed the command (as
/// `timeout(1)` does).
pub const EXIT_TIMEOUT: u8 = 124;
/// Exit status of `sockit exec` when sockit itself failed (as `ssh` does).
pub const EXIT_FAILED: u8 = 255;

/// How a remote program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Finished {
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Its pid on the server.
    pub pid: u32,
    /// Milliseconds it ran, as the server measured.
    pub duration_ms: u64,
    /// Bytes of stdout received.
    pub stdout_bytes: u64,
    /// Bytes of stderr received.
    pub stderr_bytes: u64,
}

impl Finished {
    /// The exit status a shell would report: the code, or 128 + the signal.
    pub fn status(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(c), _) => (c & 0xff) as u8,
            (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
            (None, None) => EXIT_FAILED,
        }
    }
}

/// Where the program's output goes.
pub struct Sinks<'a> {
    /// Receives stdout bytes as they arrive.
    pub stdout: &'a mut (dyn Write + Send),
    /// Receives stderr bytes as they arrive.
    pub stderr: &'a mut (dyn Write + Send),
}

/// Called once the server has started the program, with its pid.
pub type OnStart<'a> = Box<dyn FnOnce(u32) + Send + 'a>;

fn remote(frame: &Frame) -> Option<ClientError> {
    frame
        .as_error()
        .map(|(code, message)| ClientError::Remote { code, message })
}

fn sink_error(which: &str, e: std::io::Error) -> ClientError {
    ClientError::Local {
        path: which.to_string(),
        message: e.to_string(),
    }
}

/// Runs `argv` on the server of `conn` (hello done and authenticated).
/// Stdin comes from `stdin` (its end is the program's end of file; `None`
/// gives the program an empty stdin); output goes to `sinks`, flushed after
/// every chunk. A refusal or a run cut short (`timeout`, `too_large`) is
/// [`ClientError::Remote`] with the server's code.
pub async fn run(
    conn: &mut Connection<Stream>,
    argv: &[String],
    timeout: Option<f64>,
    mut stdin: Option<mpsc::Receiver<std::io::Result<Bytes>>>,
    sinks: Sinks<'_>,
    on_start: Option<OnStart<'_>>,
) -> Result<Finished, ClientError> {
    let mut req = Frame::new("exec").with("id", 1).with("argv", argv.to_vec());
    if let Some(t) = timeout {
        req = req.with("timeout", t);
    }
    conn.write_frame(&req).await?;
    let reply = conn.read_frame().await?.ok_or(ProtoError::Truncated)?;
    if let Some(e) = remote(&reply) {
        conn.discard_body().await?;
        return Err(e);
    }
    if reply.kind() != "exec_started" {
        return Err(ClientError::Other(format!(
            "unexpected answer to exec: {}",
            reply.kind()
        )));
    }
    let mut finished = Finished {
        pid: reply
            .get("pid")
            .and_then(|v| v.as_u64())
            .unwrap_or_default() as u32,
        ..Finished::default()
    };
    if let Some(f) = on_start {
        f(finished.pid);
    }
    let mut codec = FrameCodec::new(conn.limits());
    let mut enc = FrameCodec::default();
    let mut out = BytesMut::new();
    let mut eof_sent = false;
    if stdin.is_none() {
        let _ = enc.encode(&Frame::new("stdin_eof"), &mut out);
        eof_sent = true;
    }
    let (stream, rbuf) = conn.duplex_parts()?;
    let (mut rd, mut wr) = stream.split();
    // Which stream the body being received belongs to.
    let mut body_for_stderr = false;
    let ending: Result<(), ClientError> = 'relay: loop {
        loop {
            match codec.decode(rbuf)? {
                None => break,
                Some(Item::Header(f)) => match f.kind() {
                    "stdout" => body_for_stderr = false,
                    "stderr" => body_for_stderr = true,
                    "exit" => {
                        finished.code = f.get("code").and_then(|v| v.as_i64()).map(|c| c as i32);
                        finished.signal =
                            f.get("signal").and_then(|v| v.as_i64()).map(|c| c as i32);
                        finished.duration_ms = f
                            .get("duration_ms")
                            .and_then(|v| v.as_u64())
                            .unwrap_or_default();
                        break 'relay Ok(());
                    }
                    "error" => {
                        break 'relay Err(remote(&f)
                            .unwrap_or(ClientError::Other("the server ended the command".into())))
                    }
                    other => {
                        break 'relay Err(ClientError::Other(format!(
                            "unexpected message during exec: {other}"
                        )))
                    }
                },
                Some(Item::Body(chunk)) => {
                    let (sink, which, count) = if body_for_stderr {
                        (&mut *sinks.stderr, "stderr", &mut finished.stderr_bytes)
                    } else {
                        (&mut *sinks.stdout, "stdout", &mut finished.stdout_bytes)
                    };
                    *count += chunk.len() as u64;
                    if let Err(e) = sink.write_all(&chunk).and_then(|()| sink.flush()) {
                        return Err(sink_error(which, e));
                    }
                }
            }
        }
        tokio::select! {
            biased;
            r = wr.write(&out), if !out.is_empty() => match r {
                Ok(n) if n > 0 => out.advance(n),
                Ok(_) => break Err(ProtoError::Truncated.into()),
                Err(e) => break Err(ProtoError::Io(e).into()),
            },
            r = super::server::read_some(&mut rd, rbuf) => match r {
                Ok(n) if n > 0 => {}
                Ok(_) => break Err(ClientError::Other("the server closed the connection during the command".into())),
                Err(e) => break Err(ProtoError::Io(e).into()),
            },
            chunk = recv(&mut stdin), if out.is_empty() && !eof_sent => match chunk {
                // The command must not run on with its input cut short as
                // if it had ended: that is an error, not an end of file.
                Some(Err(e)) => break Err(ClientError::Other(format!("reading stdin failed: {e}"))),
                Some(Ok(data)) => {
                    let _ = enc.encode(&Frame::new("stdin").with_body_len(data.len() as u64), &mut out);
                    let _ = enc.encode(&data[..], &mut out);
                }
                None => {
                    let _ = enc.encode(&Frame::new("stdin_eof"), &mut out);
                    eof_sent = true;
                    stdin = None;
                }
            },
        }
    };
    // The run is over; end our side of it so the connection can be reused.
    if !eof_sent {
        let _ = enc.encode(&Frame::new("stdin_eof"), &mut out);
    }
    let closed = async {
        wr.write_all(&out).await?;
        wr.flush().await
    }
    .await;
    match (ending, closed) {
        (Ok(()), Ok(())) => Ok(finished),
        (Ok(()), Err(e)) => Err(ProtoError::Io(e).into()),
        // The server's own word matters more than a failed goodbye (it may
        // have closed the connection after a `shutting_down`).
        (Err(e), _) => Err(e),
    }
}

/// The next stdin chunk (or the error that ended it); `None` at its end
/// (and forever without stdin).
async fn recv(
    stdin: &mut Option<mpsc::Receiver<std::io::Result<Bytes>>>,
) -> Option<std::io::Result<Bytes>> {
    match stdin {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

/// Reads this process's stdin on a thread of its own (blocking reads, as a
/// terminal or pipe needs), a bounded number of chunks ahead; a read that
/// fails is the last item.
pub fn stdin_reader() -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(STDIN_DEPTH);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        loop {
            let mut buf = vec![0u8; STDIN_CHUNK];
            match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    rx
}

/// Remembers whether a sink's reader went away (`sockit exec ... | head`).
struct Output<W: Write> {
    inner: W,
    broken: bool,
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        if matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe) {
            self.broken = true;
        }
        r
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        if matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe) {
            self.broken = true;
        }
        r
    }
}

/// `sockit exec`: runs `argv` on the server and returns the exit status to
/// exit with (the remote code, 128 + signal, 124 at the time limit, 255
/// when sockit failed; failures are reported on stderr).
pub async fn command(remote: &Remote, argv: &[String], timeout: Option<f64>, no_stdin: bool) -> u8 {
    let mut stdout = Output {
        inner: std::io::stdout(),
        broken: false,
    };
    let mut stderr = Output {
        inner: std::io::stderr(),
        broken: false,
    };
    let result = async {
        let client = crate::files::commands::connect_authed(remote).await?;
        let mut conn = client.into_connection();
        // A terminal's stdin is forwarded too (line by line, without a
        // pseudo-terminal); -n gives the program an empty stdin instead.
        let input = (!no_stdin).then(stdin_reader);
        let sinks = Sinks {
            stdout: &mut stdout,
            stderr: &mut stderr,
        };
        run(&mut conn, argv, timeout, input, sinks, None).await
    }
    .await;
    match result {
        Ok(f) => f.status(),
        // The reader of our output went away: end as a Unix filter does.
        Err(_) if stdout.broken || stderr.broken => 128 + libc::SIGPIPE as u8,
        Err(ClientError::Remote { code, message }) if code == "timeout" => {
            eprintln!("sockit: {message}");
            EXIT_TIMEOUT
        }
        Err(e) => {
            let hint = match e.code() {
                Some("exec_disabled") => " (enable [exec] in the server's config)",
                _ => "",
            };
            eprintln!("sockit: {e}{hint}");
            EXIT_FAILED
        }
    }
}

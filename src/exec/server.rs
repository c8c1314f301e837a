//! Server side of `exec`: checks the request, starts the program in its own
//! process group, then relays stdin, stdout and stderr until the program has
//! ended and its output has been delivered.
//!
//! The relay is one `select!` loop in the connection's task over the
//! client's socket (both halves), the program's three pipes, its exit, the
//! time limit and the server's shutdown. Every branch is cancel-safe (a
//! single `read` or `write` whose progress is kept outside the future), and
//! every buffer is bounded: output is read from the pipes only while less
//! than [`OUT_CHUNK`] bytes wait for the socket, and the client's input is
//! read only while the program has taken the last stdin chunk. A slow client
//! therefore slows the program (its pipe fills and its writes block), not the
//! server's memory.
//!
//! The process group is killed (SIGKILL) when the program exits (whatever it
//! left running in its group goes with it), when the client disconnects, at
//! the time limit, over the output limit, at server shutdown, and if the
//! connection task is dropped. The program is reaped only after the group is
//! killed: while it is a zombie its process id, which is the group id,
//! cannot be reused, so the kill never reaches an unrelated group.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::tls::Stream;
use bytes::{Buf, Bytes, BytesMut};
use serde::Deserialize;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{AuditRecord, Exec, MAX_ARGS, PERMISSION};
use crate::accounts::User;
use crate::framed::HandlerError;
use crate::proto::{Connection, ErrorCode, Frame, FrameCodec, Item, ProtoError};
use crate::server::Counters;

/// Bytes read from a pipe at a time, and the most output waiting for the
/// socket before the pipes are left unread.
pub const OUT_CHUNK: usize = 64 * 1024;
/// After the program has exited, how long its pipes may stay open without
/// a byte (held by a process that left its group) before they are dropped.
const DRAIN: Duration = Duration::from_secs(2);
/// How often the client's connection is checked while the program is not
/// taking its stdin (the socket is not being read, so a close would go
/// unnoticed otherwise).
const PEER_CHECK: Duration = Duration::from_secs(1);

/// What a run needs to know about its connection.
#[derive(Debug, Clone, Copy)]
pub struct RunCtx<'a> {
    /// The client's address (for the audit log).
    pub peer: SocketAddr,
    /// Fires when the server shuts down.
    pub shutdown: &'a CancellationToken,
    /// How long the client may take to read or send the closing messages.
    pub idle_timeout: Duration,
}

#[derive(Deserialize)]
struct ExecRequest {
    argv: Vec<String>,
    #[serde(default)]
    timeout: Option<f64>,
}

/// Kills the process group when dropped, unless the program was reaped
/// (after which the group id may belong to someone else).
struct Group {
    pgid: i32,
    reaped: bool,
}

impl Group {
    fn kill(&self) {
        if !self.reaped {
            // SAFETY: a plain system call; the group id is our child's pid,
            // which is not reused while the child is unreaped.
            unsafe {
                libc::killpg(self.pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Learns of the program's exit without reaping it (a pidfd turns readable),
/// or, where pidfds do not exist, by reaping it.
enum ExitWatch {
    Pidfd(AsyncFd<OwnedFd>),
    Reap,
}

impl ExitWatch {
    fn new(pid: u32) -> ExitWatch {
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor (or -1), which we then own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return ExitWatch::Reap;
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // SAFETY: an OwnedFd keeps its descriptor open until dropped and
        // always reports the same one.
        match unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) } {
            Ok(a) => ExitWatch::Pidfd(a),
            Err(_) => ExitWatch::Reap,
        }
    }

    /// Resolves once the program has exited; `Some` if it was reaped.
    async fn exited(&self, child: &mut Child) -> std::io::Result<Option<ExitStatus>> {
        match self {
            ExitWatch::Pidfd(fd) => {
                let _ready = fd.readable().await?;
                Ok(None)
            }
            ExitWatch::Reap => child.wait().await.map(Some),
        }
    }
}

/// True when the client has closed or reset the connection (TCP_INFO's
/// state), without reading from it.
fn peer_gone(fd: RawFd) -> bool {
    let mut info = [0u8; 8];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // tcpi_state: TCP_CLOSE = 7, TCP_CLOSE_WAIT = 8, TCP_LAST_ACK = 9.
    r == 0 && len >= 1 && matches!(info[0], 7..=9)
}

/// One read of a pipe; a closed pipe reads as end of file.
async fn read_pipe<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => Ok(0),
    }
}

/// Bytes of the client's input read at a time.
const IN_CHUNK: usize = 256 * 1024;

/// One read of the client's input into `buf`, with room for a large read
/// (a `BytesMut` without spare room would read 64 bytes at a time).
pub(crate) async fn read_some<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < IN_CHUNK / 4 {
        buf.reserve(IN_CHUNK);
    }
    r.read_buf(buf).await
}

/// One write to the program's stdin.
async fn write_stdin(stdin: &mut Option<ChildStdin>, data: &[u8]) -> std::io::Result<usize> {
    match stdin {
        Some(s) => s.write(data).await,
        None => Err(std::io::ErrorKind::BrokenPipe.into()),
    }
}

/// Why the program's run is ending, when something other than its own exit
/// decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Timeout,
    TooLarge,
    Shutdown,
}

/// How the relay loop ended.
enum Outcome {
    /// The program exited and every byte of its output was delivered.
    Finished,
    /// The client went away.
    Disconnected,
    /// The client broke the protocol, or stopped reading at the end.
    Fatal(HandlerError),
}

/// Byte counts of one run.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    stdout: u64,
    stderr: u64,
    stdin: u64,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn fatal(code: ErrorCode, message: impl Into<String>) -> HandlerError {
    HandlerError::Fatal {
        code,
        message: message.into(),
    }
}

fn disconnected() -> HandlerError {
    HandlerError::Proto(ProtoError::Io(std::io::ErrorKind::ConnectionAborted.into()))
}

/// Handles one `exec` request from `user` (whose permissions were just
/// read from the accounts database).
pub async fn run(
    conn: &mut Connection<Stream>,
    req: &Frame,
    exec: &Exec,
    user: &User,
    ctx: RunCtx<'_>,
) -> Result<(), HandlerError> {
    let asked = SystemTime::now();
    let mut record = AuditRecord {
        time: rfc3339(asked),
        user: user.name.clone(),
        peer: ctx.peer.to_string(),
        argv: req
            .get("argv")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().map_or_else(|| s.to_string(), String::from))
                    .collect()
            })
            .unwrap_or_default(),
        program: None,
        pid: None,
        result: "refused".into(),
        code: None,
        signal: None,
        error: None,
        duration_ms: 0,
        stdout_bytes: 0,
        stderr_bytes: 0,
        stdin_bytes: 0,
    };
    let (allowed, limit, permit) = match check(req, exec, user) {
        Ok(v) => v,
        Err((code, message)) => {
            record.error = Some(code.into());
            audit(exec, &record).await;
            info!(peer = %ctx.peer, user = %user.name, code, "exec refused: {message}");
            return Err(HandlerError::refuse(code, message));
        }
    };
    record.program = Some(allowed.path.display().to_string());
    let argv = &record.argv;
    let mut cmd = Command::new(&allowed.path);
    let s = exec.settings();
    cmd.arg0(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", &s.path)
        .env("LANG", &s.lang)
        .envs(&s.env)
        .current_dir(&s.workdir)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some((uid, gid)) = exec.run_as() {
        cmd.uid(uid).gid(gid);
    }
    let rlimits = ChildLimits::of(s);
    // SAFETY: the hook only makes system calls (getrlimit, setrlimit) on
    // values computed before the fork; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || rlimits.apply());
    }
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            record.result = "failed".into();
            record.error = Some("internal".into());
            audit(exec, &record).await;
            warn!(peer = %ctx.peer, user = %user.name, program = %allowed.path.display(), "exec failed to start: {e}");
            return Err(HandlerError::refuse(
                "internal",
                format!("cannot start {}: {e}", allowed.path.display()),
            ));
        }
    };
    let Some(pid) = child.id() else {
        return Err(HandlerError::refuse("internal", "the program vanished"));
    };
    record.pid = Some(pid);
    let mut group = Group {
        pgid: pid as i32,
        reaped: false,
    };
    info!(peer = %ctx.peer, user = %user.name, pid, argv = ?record.argv, "exec started");
    let started = Frame::new("exec_started")
        .with("pid", pid)
        .with("program", allowed.path.display().to_string())
        .reply_to(req);
    if let Err(e) = crate::proto::timed(ctx.idle_timeout, conn.write_frame(&started)).await {
        drop(permit);
        group.kill();
        let _ = child.wait().await;
        group.reaped = true;
        record.result = "disconnected".into();
        record.duration_ms = start.elapsed().as_millis() as u64;
        audit(exec, &record).await;
        return Err(e.into());
    }
    let counters = conn.traffic().cloned().unwrap_or_default();
    let limits = conn.limits();
    let mut relay = Relay {
        counters,
        codec: FrameCodec::new(limits),
        enc: FrameCodec::default(),
        out: BytesMut::with_capacity(2 * OUT_CHUNK),
        counts: Counts::default(),
        eof_seen: false,
        max_output: exec.settings().max_output,
    };
    let (outcome, status, cut) = relay
        .run(conn, &mut child, &mut group, start + limit, ctx)
        .await;
    drop(permit);
    let duration = start.elapsed();
    record.duration_ms = duration.as_millis() as u64;
    record.stdout_bytes = relay.counts.stdout;
    record.stderr_bytes = relay.counts.stderr;
    record.stdin_bytes = relay.counts.stdin;
    if let Some(st) = status {
        record.code = st.code();
        record.signal = st.signal();
    }
    record.result = match (&outcome, cut) {
        (Outcome::Disconnected, _) => "disconnected",
        (Outcome::Fatal(_), _) => "failed",
        (_, Some(Cut::Timeout)) => "timeout",
        (_, Some(Cut::TooLarge)) => "too_large",
        (_, Some(Cut::Shutdown)) => "shutdown",
        (_, None) if record.signal.is_some() => "signal",
        (_, None) => "exit",
    }
    .into();
    // Written before the answer leaves, so a client that sees the answer
    // finds the record.
    audit(exec, &record).await;
    info!(
        peer = %ctx.peer, user = %user.name, pid, result = %record.result,
        code = ?record.code, signal = ?record.signal, ms = record.duration_ms,
        out = relay.counts.stdout + relay.counts.stderr, "exec ended"
    );
    match outcome {
        Outcome::Disconnected => return Err(disconnected()),
        Outcome::Fatal(e) => return Err(e),
        Outcome::Finished => {}
    }
    let last = match cut {
        Some(Cut::Shutdown) => {
            return Err(fatal(
                ErrorCode::ShuttingDown,
                "server is shutting down: the command was killed",
            ))
        }
        Some(Cut::Timeout) => Frame::new("error").with("code", "timeout").with(
            "message",
            format!(
                "the command ran longer than {} and was killed",
                humantime::format_duration(Duration::from_secs(limit.as_secs().max(1)))
            ),
        ),
        Some(Cut::TooLarge) => Frame::new("error").with("code", "too_large").with(
            "message",
            format!(
                "the command wrote more than {} bytes of output and was killed",
                exec.settings().max_output
            ),
        ),
        None => {
            let mut f = Frame::new("exit");
            if let Some(code) = record.code {
                f = f.with("code", code);
            }
            if let Some(sig) = record.signal {
                f = f.with("signal", sig);
            }
            f.with("duration_ms", record.duration_ms)
                .with("stdout_bytes", record.stdout_bytes)
                .with("stderr_bytes", record.stderr_bytes)
                .with("stdin_bytes", record.stdin_bytes)
        }
    };
    relay.finish(conn, &last.reply_to(req), ctx).await
}

/// The resource limits a program runs under, set in the child between fork
/// and exec.
#[derive(Debug, Clone, Copy)]
struct ChildLimits {
    /// `RLIMIT_NPROC`; 0 leaves the inherited one.
    processes: u64,
    /// `RLIMIT_AS`, bytes; 0 leaves the inherited one.
    memory: u64,
}

impl ChildLimits {
    fn of(s: &super::Settings) -> ChildLimits {
        ChildLimits {
            processes: s.max_processes,
            memory: s.max_memory,
        }
    }

    /// Lowers the limits (never above the inherited hard limit) and turns
    /// core dumps off: a crashing program leaves no image of its memory on
    /// disk, nor a disk filled with them.
    fn apply(self) -> std::io::Result<()> {
        lower(libc::RLIMIT_CORE, 0)?;
        if self.processes > 0 {
            lower(libc::RLIMIT_NPROC, self.processes)?;
        }
        if self.memory > 0 {
            lower(libc::RLIMIT_AS, self.memory)?;
        }
        Ok(())
    }
}

/// Sets both limits of `resource` to `value`, or to the current hard limit
/// when that is lower (only root may raise it).
fn lower(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is a valid rlimit to write into.
    if unsafe { libc::getrlimit(resource, &mut cur) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let v = (value as libc::rlim_t).min(cur.rlim_max);
    let new = libc::rlimit {
        rlim_cur: v,
        rlim_max: v,
    };
    // SAFETY: `new` is a valid rlimit to read.
    if unsafe { libc::setrlimit(resource, &new) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Checks permission, request and allowlist; returns the program, the
/// time limit and a running permit, or the refusal's code and message.
#[allow(clippy::type_complexity)]
fn check<'e>(
    req: &Frame,
    exec: &'e Exec,
    user: &User,
) -> Result<
    (
        &'e super::Allowed,
        Duration,
        tokio::sync::OwnedSemaphorePermit,
    ),
    (&'static str, String),
> {
    if !user.permissions.contains(PERMISSION) {
        return Err((
            "forbidden",
            format!(
                "{} may not run commands: an administrator grants it with `sockit admin grant {} exec`",
                user.name, user.name
            ),
        ));
    }
    if req.body_len() > 0 {
        return Err(("bad_request", "exec takes no body".into()));
    }
    let r: ExecRequest = req.decode().map_err(|e| ("bad_request", e.to_string()))?;
    if r.argv.is_empty() {
        return Err(("bad_request", "argv is empty: name a program".into()));
    }
    if r.argv.len() > MAX_ARGS {
        return Err(("bad_request", format!("more than {MAX_ARGS} arguments")));
    }
    if r.argv.iter().any(|a| a.contains('\0')) {
        return Err(("bad_request", "an argument contains NUL".into()));
    }
    let program = &r.argv[0];
    let Some(allowed) = exec.lookup(program) else {
        let names: Vec<&str> = exec.allowed().iter().map(|a| a.name.as_str()).collect();
        return Err((
            "not_allowed",
            format!(
                "{program:?} is not on this server's exec allowlist (allowed: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ));
    };
    let limit = match r.timeout {
        None => exec.settings().timeout,
        Some(t) if t.is_finite() && t > 0.0 => {
            Duration::from_secs_f64(t.min(1e9)).min(exec.settings().timeout)
        }
        Some(t) => {
            return Err((
                "bad_request",
                format!("timeout must be a positive number of seconds, got {t}"),
            ))
        }
    };
    let Some(permit) = exec.try_start() else {
        return Err((
            "busy",
            format!(
                "{} commands are already running on this server; try again later",
                exec.settings().max_running
            ),
        ));
    };
    Ok((allowed, limit, permit))
}

async fn audit(exec: &Exec, record: &AuditRecord) {
    if let Err(e) = exec.audit(record).await {
        warn!(path = %exec.audit_path().display(), "cannot write the exec audit log: {e}");
    }
}

/// The state of one relay between the client and the program.
struct Relay {
    /// The framed port's byte counters (the relay bypasses the connection).
    counters: Arc<Counters>,
    /// Decodes the client's messages (stdin, stdin_eof).
    codec: FrameCodec,
    /// Encodes the messages to the client.
    enc: FrameCodec,
    /// Encoded messages not yet written to the socket; bounded by reading
    /// the pipes only while it holds less than [`OUT_CHUNK`].
    out: BytesMut,
    counts: Counts,
    /// The client sent `stdin_eof`.
    eof_seen: bool,
    max_output: u64,
}

impl Relay {
    /// Queues one output message of `data` from `stream` (none for no data).
    fn queue_output(&mut self, stream: &str, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let frame = Frame::new(stream).with_body_len(data.len() as u64);
        // Both encodes only fail when a body is owed, which never happens
        // here: each header is followed at once by its whole body.
        let _ = self.enc.encode(&frame, &mut self.out);
        let _ = self.enc.encode(data, &mut self.out);
    }

    /// Takes in the client's messages already buffered, up to the next
    /// stdin chunk for the program (`Some`) or the end of the buffer.
    fn decode_input(
        &mut self,
        rbuf: &mut BytesMut,
        stdin: &mut Option<ChildStdin>,
    ) -> Result<Option<Bytes>, HandlerError> {
        loop {
            match self.codec.decode(rbuf) {
                Ok(None) => return Ok(None),
                Ok(Some(Item::Header(f))) => match f.kind() {
                    "stdin" if !self.eof_seen => {}
                    "stdin_eof" if f.body_len() == 0 && !self.eof_seen => {
                        self.eof_seen = true;
                        // Dropping the pipe's end gives the program its EOF.
                        *stdin = None;
                        // What follows is the client's next request, once
                        // this run is over: leave it for the session.
                        return Ok(None);
                    }
                    other => {
                        return Err(fatal(
                            ErrorCode::BadRequest,
                            format!(
                                "during exec only stdin and one stdin_eof (without a body) may be sent, got {other:?}"
                            ),
                        ))
                    }
                },
                Ok(Some(Item::Body(chunk))) => {
                    self.counts.stdin += chunk.len() as u64;
                    if stdin.is_some() {
                        return Ok(Some(chunk));
                    }
                    // The program closed its stdin: the rest is dropped.
                }
                Err(e) => {
                    return Err(match e.code() {
                        Some(code) => fatal(code, e.to_string()),
                        None => HandlerError::Proto(e),
                    })
                }
            }
        }
    }

    /// Relays until the program has exited and its output is delivered, or
    /// the client goes away. Returns how it ended, the program's status and
    /// what cut the run short.
    async fn run(
        &mut self,
        conn: &mut Connection<Stream>,
        child: &mut Child,
        group: &mut Group,
        deadline: Instant,
        ctx: RunCtx<'_>,
    ) -> (Outcome, Option<ExitStatus>, Option<Cut>) {
        let Some(pid) = child.id() else {
            return (Outcome::Disconnected, None, None);
        };
        let watch = ExitWatch::new(pid);
        let mut stdin = child.stdin.take();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let mut out_buf = vec![0u8; OUT_CHUNK];
        let mut err_buf = vec![0u8; OUT_CHUNK];
        let mut pending = Bytes::new();
        let mut status: Option<ExitStatus> = None;
        let mut cut: Option<Cut> = None;
        let mut drain_until: Option<tokio::time::Instant> = None;
        // Once the end is decided, the client has this long to take the rest.
        let mut finish_by: Option<tokio::time::Instant> = None;
        let mut check = tokio::time::interval(PEER_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = tokio::time::Instant::from_std(deadline);
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);

        let (stream, rbuf) = match conn.duplex_parts() {
            Ok(p) => p,
            Err(e) => return (Outcome::Fatal(e.into()), None, None),
        };
        let fd = stream.as_raw_fd();
        let (mut rd, mut wr) = stream.split();

        let outcome = loop {
            if pending.is_empty() {
                match self.decode_input(rbuf, &mut stdin) {
                    Ok(Some(chunk)) => pending = chunk,
                    Ok(None) => {}
                    Err(e) => break Outcome::Fatal(e),
                }
            }
            if status.is_some() && stdout.is_none() && stderr.is_none() && self.out.is_empty() {
                break Outcome::Finished;
            }
            let take_output = self.out.len() < OUT_CHUNK && cut != Some(Cut::TooLarge);
            let draining = drain_until.is_some() && self.out.is_empty();
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled(), if cut.is_none() => {
                    cut = Some(Cut::Shutdown);
                    group.kill();
                    finish_by = Some(tokio::time::Instant::now() + DRAIN);
                }
                _ = tokio::time::sleep_until(deadline), if cut.is_none() => {
                    debug!(peer = %ctx.peer, pid, "exec time limit reached");
                    cut = Some(Cut::Timeout);
                    group.kill();
                    finish_by.get_or_insert(tokio::time::Instant::now() + ctx.idle_timeout);
                }
                _ = tokio::time::sleep_until(finish_by.unwrap_or(far)), if finish_by.is_some() => {
                    debug!(peer = %ctx.peer, pid, "client did not take the end of the output");
                    break Outcome::Disconnected;
                }
                r = wr.write(&self.out), if !self.out.is_empty() => match r {
                    Ok(n) if n > 0 => {
                        self.out.advance(n);
                        self.counters.add_out(n);
                    }
                    _ => break Outcome::Disconnected,
                },
                r = write_stdin(&mut stdin, &pending), if !pending.is_empty() => match r {
                    Ok(n) if n > 0 => pending.advance(n),
                    _ => {
                        // The program closed its stdin; the rest is dropped.
                        stdin = None;
                        pending = Bytes::new();
                    }
                },
                r = read_some(&mut rd, rbuf), if pending.is_empty() => match r {
                    Ok(n) if n > 0 => self.counters.add_in(n),
                    _ => break Outcome::Disconnected,
                },
                _ = check.tick(), if !pending.is_empty() => {
                    if peer_gone(fd) {
                        break Outcome::Disconnected;
                    }
                }
                r = read_pipe(&mut stdout, &mut out_buf), if take_output && stdout.is_some() => match r {
                    Ok(n) if n > 0 => {
                        let n = self.take(n, &mut cut, group);
                        self.counts.stdout += n as u64;
                        self.queue_output("stdout", &out_buf[..n]);
                        if drain_until.is_some() {
                            drain_until = Some(tokio::time::Instant::now() + DRAIN);
                        }
                    }
                    _ => stdout = None,
                },
                r = read_pipe(&mut stderr, &mut err_buf), if take_output && stderr.is_some() => match r {
                    Ok(n) if n > 0 => {
                        let n = self.take(n, &mut cut, group);
                        self.counts.stderr += n as u64;
                        self.queue_output("stderr", &err_buf[..n]);
                        if drain_until.is_some() {
                            drain_until = Some(tokio::time::Instant::now() + DRAIN);
                        }
                    }
                    _ => stderr = None,
                },
                r = watch.exited(child), if status.is_none() => {
                    // Kill what the program left in its group, then reap it.
                    group.kill();
                    let reaped = match r {
                        Ok(Some(st)) => Ok(st),
                        _ => child.wait().await,
                    };
                    group.reaped = true;
                    match reaped {
                        Ok(st) => status = Some(st),
                        Err(e) => break Outcome::Fatal(HandlerError::refuse("internal", e.to_string())),
                    }
                    drain_until = Some(tokio::time::Instant::now() + DRAIN);
                    finish_by.get_or_insert(tokio::time::Instant::now() + ctx.idle_timeout);
                }
                _ = tokio::time::sleep_until(drain_until.unwrap_or(far)), if draining && (stdout.is_some() || stderr.is_some()) => {
                    debug!(peer = %ctx.peer, pid, "output pipes held open after exit; closing them");
                    stdout = None;
                    stderr = None;
                }
            }
            if cut == Some(Cut::TooLarge) {
                stdout = None;
                stderr = None;
            }
        };
        if !group.reaped {
            group.kill();
            if let Ok(st) = child.wait().await {
                status.get_or_insert(st);
            }
            group.reaped = true;
        }
        (outcome, status, cut)
    }

    /// How much of `n` new output bytes may be sent; at the output limit the
    /// run is cut and the group killed.
    fn take(&mut self, n: usize, cut: &mut Option<Cut>, group: &Group) -> usize {
        let sent = self.counts.stdout + self.counts.stderr;
        let room = self.max_output.saturating_sub(sent);
        if n as u64 > room {
            *cut = Some(Cut::TooLarge);
            group.kill();
            room as usize
        } else {
            n
        }
    }

    /// Sends the last message, then waits for the client's `stdin_eof` (its
    /// stdin bodies in flight are dropped), so the connection is again at a
    /// message boundary in both directions for the next request.
    async fn finish(
        &mut self,
        conn: &mut Connection<Stream>,
        last: &Frame,
        ctx: RunCtx<'_>,
    ) -> Result<(), HandlerError> {
        let _ = self.enc.encode(last, &mut self.out);
        let (stream, rbuf) = conn.duplex_parts()?;
        let idle = ctx.idle_timeout;
        let write = async {
            stream.write_all(&self.out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(idle, write).await {
            Ok(Ok(())) => {
                self.counters.add_out(self.out.len());
                self.out.clear();
            }
            _ => return Err(disconnected()),
        }
        let mut none = None;
        while !self.eof_seen {
            // Everything decoded now is stdin the program will not get.
            while self.decode_input(rbuf, &mut none)?.is_some() {}
            if self.eof_seen {
                break;
            }
            let read = tokio::select! {
                _ = ctx.shutdown.cancelled() => {
                    return Err(fatal(ErrorCode::ShuttingDown, "server is shutting down"));
                }
                r = tokio::time::timeout(idle, read_some(stream, rbuf)) => r,
            };
            match read {
                Ok(Ok(n)) if n > 0 => self.counters.add_in(n),
                Ok(_) => return Err(disconnected()),
                Err(_) => {
                    return Err(fatal(
                        ErrorCode::Timeout,
                        "the client did not send stdin_eof after the command ended",
                    ))
                }
            }
        }
        // Any body of the last stdin message was taken above; the codec is
        // at a message boundary again.
        Ok(())
    }
}

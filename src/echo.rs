//! The echo service: the classic first socket exercise, over TCP and UDP on
//! the same port, in three modes.
//!
//! - `echo`: bytes back unchanged;
//! - `upper`: UTF-8 text upper-cased, invalid UTF-8 passed through unchanged
//!   (a character split across two TCP reads is upper-cased whole);
//! - `hello`: `Hello, <data>!` per line on TCP and per datagram on UDP (a
//!   trailing line ending is kept after the `!`).
//!
//! TCP connections run on the shared [`crate::server`] runtime. An idle
//! connection holds no buffer: data is read into a per-thread buffer and only
//! a reply the peer cannot take at once is copied into memory of its own.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::server::{self, ConnCtx, Handler, Limits};

/// Default address of the echo service (TCP and UDP).
pub const DEFAULT_ECHO_ADDR: &str = "127.0.0.1:7007";
/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// Bytes read per TCP read.
const READ_BUF: usize = 64 * 1024;
/// In `hello` mode, a line longer than this is greeted in pieces.
pub const MAX_LINE: usize = 64 * 1024;

/// What the echo service does to the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Bytes back unchanged.
    #[default]
    Echo,
    /// UTF-8 text upper-cased; invalid UTF-8 passed through.
    Upper,
    /// `Hello, <data>!` per line (TCP) or datagram (UDP).
    Hello,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "echo" => Ok(Mode::Echo),
            "upper" => Ok(Mode::Upper),
            "hello" => Ok(Mode::Hello),
            _ => Err(format!("unknown mode {s:?} (echo, upper, hello)")),
        }
    }
}

/// Turns a byte stream into the reply stream for one mode, carrying the state
/// a stream needs between reads: at most 3 bytes of a split UTF-8 character
/// (`upper`) or one partial line of at most [`MAX_LINE`] bytes (`hello`).
#[derive(Debug, Default)]
pub struct Transformer {
    mode: Mode,
    /// Start of a UTF-8 sequence cut off at the end of the last read.
    carry: Vec<u8>,
    /// The current line in `hello` mode.
    line: Vec<u8>,
}

impl Transformer {
    /// A transformer for `mode`.
    pub fn new(mode: Mode) -> Self {
        Transformer {
            mode,
            ..Default::default()
        }
    }

    /// Appends the reply to `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match self.mode {
            Mode::Echo => out.extend_from_slice(input),
            Mode::Upper => self.upper(input, out),
            Mode::Hello => self.hello(input, out),
        }
    }

    /// At end of stream: appends whatever is still held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.carry);
        if self.mode == Mode::Hello && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            greet(&line, out);
        }
    }

    fn upper(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        if !self.carry.is_empty() {
            // Complete the character split by the previous read with this
            // read's continuation bytes, then handle it on its own.
            let mut joined = std::mem::take(&mut self.carry);
            let width = utf8_width(joined[0]);
            let mut used = 0;
            while joined.len() < width && used < rest.len() && rest[used] & 0xC0 == 0x80 {
                joined.push(rest[used]);
                used += 1;
            }
            if joined.len() < width && used == rest.len() {
                self.carry = joined;
                return;
            }
            let mut incomplete = Vec::new();
            upper_into(&joined, &mut incomplete, out);
            out.extend_from_slice(&incomplete);
            rest = &rest[used..];
        }
        upper_into(rest, &mut self.carry, out);
    }

    fn hello(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            let room = MAX_LINE - self.line.len();
            let (piece, rest, complete) = match input.iter().position(|&b| b == b'\n') {
                Some(i) if i < room => (&input[..=i], &input[i + 1..], true),
                _ if input.len() >= room => (&input[..room], &input[room..], true),
                _ => (input, &input[input.len()..], false),
            };
            self.line.extend_from_slice(piece);
            input = rest;
            if complete {
                greet(&self.line, out);
                self.line.clear();
            }
        }
    }

    /// The reply to one UDP datagram (stateless; at most [`MAX_DATAGRAM`] bytes).
    pub fn datagram(mode: Mode, input: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match mode {
            Mode::Echo => out.extend_from_slice(input),
            Mode::Upper => {
                let mut carry = Vec::new();
                upper_into(input, &mut carry, out);
                out.extend_from_slice(&carry);
            }
            Mode::Hello => greet(input, out),
        }
        out.truncate(MAX_DATAGRAM);
    }
}

/// Length of the UTF-8 sequence a lead byte starts (1 for anything else).
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

/// Upper-cases valid UTF-8 in `input` into `out`, passes invalid bytes through,
/// and leaves an incomplete sequence at the very end in `carry`.
fn upper_into(mut input: &[u8], carry: &mut Vec<u8>, out: &mut Vec<u8>) {
    loop {
        match std::str::from_utf8(input) {
            Ok(s) => {
                push_upper(s, out);
                return;
            }
            Err(e) => {
                let (valid, after) = input.split_at(e.valid_up_to());
                // from_utf8 said this prefix is valid, so this cannot fail.
                push_upper(std::str::from_utf8(valid).unwrap_or_default(), out);
                match e.error_len() {
                    Some(bad) => {
                        out.extend_from_slice(&after[..bad]);
                        input = &after[bad..];
                    }
                    None => {
                        carry.extend_from_slice(after);
                        return;
                    }
                }
            }
        }
    }
}

fn push_upper(s: &str, out: &mut Vec<u8>) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| b.to_ascii_uppercase()));
    } else {
        out.extend_from_slice(s.to_uppercase().as_bytes());
    }
}

/// `Hello, <data>!` keeping a trailing `\n` or `\r\n` after the `!`.
fn greet(data: &[u8], out: &mut Vec<u8>) {
    let (name, ending): (&[u8], &[u8]) = if let Some(n) = data.strip_suffix(b"\r\n") {
        (n, b"\r\n")
    } else if let Some(n) = data.strip_suffix(b"\n") {
        (n, b"\n")
    } else {
        (data, b"")
    };
    out.extend_from_slice(b"Hello, ");
    out.extend_from_slice(name);
    out.extend_from_slice(b"!");
    out.extend_from_slice(ending);
}

thread_local! {
    /// Per-thread read and reply buffers: idle connections hold none.
    static BUFFERS: RefCell<(Vec<u8>, Vec<u8>)> = RefCell::new((vec![0; READ_BUF], Vec::with_capacity(READ_BUF)));
}

/// What one non-blocking read-and-reply step did.
enum Step {
    /// Nothing to read right now.
    WouldBlock,
    /// Replied fully; `drained` when the read came back short, which for TCP
    /// means the socket had nothing more at that instant.
    Done { drained: bool },
    /// The peer closed its side; the rest of the reply is in `pending`.
    Eof,
    /// The reply did not all fit in the socket; the rest is in `pending`.
    Partial,
}

/// Reads what is available, transforms it and writes as much of the reply as
/// the socket takes, all without awaiting (so the thread-local buffers are
/// never held across an await).
fn step(
    stream: &std::net::TcpStream,
    t: &mut Transformer,
    pending: &mut Vec<u8>,
    tally: &mut Tally<'_>,
) -> io::Result<Step> {
    BUFFERS.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (input, output) = &mut *bufs;
        let n = match (&*stream).read(input) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                return Ok(Step::Done { drained: false })
            }
            Err(e) => return Err(e),
        };
        let reply: &[u8] = if n == 0 {
            output.clear();
            t.finish(output);
            output
        } else if t.mode == Mode::Echo {
            &input[..n]
        } else {
            output.clear();
            t.feed(&input[..n], output);
            output
        };
        let mut written = 0;
        while written < reply.len() {
            match (&*stream).write(&reply[written..]) {
                Ok(w) => written += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        tally.add(n, written);
        pending.extend_from_slice(&reply[written..]);
        Ok(match (n, pending.is_empty()) {
            (0, _) => Step::Eof,
            (_, true) => Step::Done {
                drained: n < input.len(),
            },
            (_, false) => Step::Partial,
        })
    })
}

/// Bytes a connection moves between two additions to its service's shared
/// counters: touching them on every round trip would bounce their cache
/// line between the cores.
const TALLY_STEP: u64 = 64 * 1024;

/// Bytes of one connection not yet added to its service's counters: added
/// every [`TALLY_STEP`] and when the connection ends (the drop), so `sockit
/// stats` is exact once a connection is over and at most 64 KiB behind for
/// one that is open.
struct Tally<'a> {
    counters: &'a server::Counters,
    bytes_in: u64,
    bytes_out: u64,
}

impl<'a> Tally<'a> {
    fn new(counters: &'a server::Counters) -> Tally<'a> {
        Tally {
            counters,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    fn add(&mut self, read: usize, written: usize) {
        self.bytes_in += read as u64;
        self.bytes_out += written as u64;
        if self.bytes_in + self.bytes_out >= TALLY_STEP {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.bytes_in > 0 {
            self.counters.add_in(self.bytes_in as usize);
        }
        if self.bytes_out > 0 {
            self.counters.add_out(self.bytes_out as usize);
        }
        self.bytes_in = 0;
        self.bytes_out = 0;
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The TCP side of the echo service.
#[derive(Debug, Clone, Copy)]
pub struct EchoHandler {
    /// What is done to the data.
    pub mode: Mode,
}

impl Handler for EchoHandler {
    async fn serve(&self, stream: TcpStream, ctx: ConnCtx) {
        if let Err(e) = serve_tcp(stream, self.mode, &ctx).await {
            debug!(peer = %ctx.peer, "echo connection ended: {e}");
        }
    }
}

/// Serves one echo connection.
///
/// The socket is driven through [`AsyncFd`] rather than tokio's `TcpStream`
/// so that a short read can clear the read readiness at once: tokio's own
/// streams clear it only after a read fails with `EAGAIN`, which costs one
/// wasted system call per request. `clear_ready` is race-free: tokio ignores
/// it if a new readiness event arrived since the guard was taken.
async fn serve_tcp(stream: TcpStream, mode: Mode, ctx: &ConnCtx) -> io::Result<()> {
    let std_stream = stream.into_std()?;
    // SAFETY: a std TcpStream owns its descriptor, keeps it open until it is
    // dropped and always reports the same one, as `register` requires.
    let fd = unsafe { AsyncFd::register(std_stream) }?;
    let mut t = Transformer::new(mode);
    let mut pending = Vec::new();
    let mut tally = Tally::new(&ctx.counters);
    // One idle watch and one shutdown waiter for the connection's life, not
    // a timer per message (a timer wheel entry per message cost about a
    // tenth of the server's CPU per round trip).
    let activity = AtomicU64::new(0);
    let idle = crate::server::idle(&activity, ctx.idle_timeout);
    tokio::pin!(idle);
    let shutdown = ctx.shutdown.cancelled();
    tokio::pin!(shutdown);
    loop {
        let mut guard = tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            ready = fd.readable() => ready?,
            _ = &mut idle => {
                debug!(peer = %ctx.peer, "idle timeout");
                return Ok(());
            }
        };
        activity.fetch_add(1, Ordering::Relaxed);
        loop {
            match step(fd.get_ref(), &mut t, &mut pending, &mut tally)? {
                Step::WouldBlock | Step::Done { drained: true } => {
                    guard.clear_ready();
                    break;
                }
                Step::Done { drained: false } => continue,
                Step::Partial => {
                    // The peer reads slower than it writes: wait until it
                    // takes the reply before reading more (bounded memory).
                    write_pending(&fd, &mut pending, ctx, &mut tally).await?;
                }
                Step::Eof => {
                    // Half-close honoured: finish replying, then close.
                    write_pending(&fd, &mut pending, ctx, &mut tally).await?;
                    fd.get_ref().shutdown(std::net::Shutdown::Write)?;
                    return Ok(());
                }
            }
        }
    }
}

/// Writes the reply the peer could not take at once, waiting for it to read,
/// at most the idle timeout between two writes.
async fn write_pending(
    fd: &AsyncFd<std::net::TcpStream>,
    pending: &mut Vec<u8>,
    ctx: &ConnCtx,
    tally: &mut Tally<'_>,
) -> io::Result<()> {
    let mut written = 0;
    while written < pending.len() {
        let mut guard = match tokio::time::timeout(ctx.idle_timeout, fd.writable()).await {
            Ok(g) => g?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer stopped reading",
                ))
            }
        };
        match guard.try_io(|s| s.get_ref().write(&pending[written..])) {
            Ok(Ok(n)) => {
                written += n;
                tally.add(0, n);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    pending.clear();
    pending.shrink_to(0);
    Ok(())
}

/// Serves UDP echo on `socket` until `shutdown` fires: one reply datagram per
/// request datagram, to its sender, including for empty datagrams. Bytes
/// received and sent go to `counters`, with the TCP side's.
pub async fn serve_udp(
    socket: UdpSocket,
    mode: Mode,
    shutdown: CancellationToken,
    counters: Arc<server::Counters>,
) {
    match socket.local_addr() {
        Ok(addr) => info!(service = "echo", %addr, "listening (udp)"),
        Err(e) => warn!(
            service = "echo",
            "listening (udp) on an unknown address: {e}"
        ),
    }
    let socket = Arc::new(socket);
    // One receiver per core: the socket is shared, each takes the next datagram.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let socket = socket.clone();
        let shutdown = shutdown.clone();
        let counters = counters.clone();
        tasks.spawn(async move {
            let mut buf = vec![0u8; 65_536];
            let mut out = Vec::with_capacity(65_536);
            loop {
                let (n, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = socket.recv_from(&mut buf) => match r {
                        Ok(x) => x,
                        Err(e) => {
                            // ICMP errors from earlier sends surface here; not fatal.
                            debug!("udp receive failed: {e}");
                            continue;
                        }
                    },
                };
                let reply: &[u8] = if mode == Mode::Echo {
                    &buf[..n]
                } else {
                    Transformer::datagram(mode, &buf[..n], &mut out);
                    &out
                };
                counters.add_in(n);
                match socket.send_to(reply, peer).await {
                    Ok(sent) => counters.add_out(sent),
                    Err(e) => debug!(%peer, "udp reply failed: {e}"),
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    info!(service = "echo", "stopped (udp)");
}

/// Runs the echo service on the given sockets until `shutdown`.
pub async fn run(
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    mode: Mode,
    limits: Limits,
    shutdown: CancellationToken,
) {
    run_counted(tcp, udp, mode, limits, shutdown, Arc::default()).await
}

/// [`run`], keeping the TCP side's open connections in `counters`.
pub async fn run_counted(
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    mode: Mode,
    limits: Limits,
    shutdown: CancellationToken,
    counters: Arc<server::Counters>,
) {
    let udp_task =
        udp.map(|s| tokio::spawn(serve_udp(s, mode, shutdown.clone(), counters.clone())));
    if let Some(listener) = tcp {
        let handler = EchoHandler { mode };
        server::serve_counted("echo", listener, handler, limits, shutdown, counters).await;
    }
    if let Some(task) = udp_task {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_split(mode: Mode, input: &[u8], cut: usize) -> Vec<u8> {
        let mut t = Transformer::new(mode);
        let mut out = Vec::new();
        t.feed(&input[..cut], &mut out);
        t.feed(&input[cut..], &mut out);
        t.finish(&mut out);
        out
    }

    #[test]
    fn upper_handles_characters_split_at_every_byte() {
        let input = "héllo wörld ß 报告 🎉 end".as_bytes();
        let expected = "HÉLLO WÖRLD SS 报告 🎉 END".as_bytes();
        for cut in 0..=input.len() {
            assert_eq!(run_split(Mode::Upper, input, cut), expected, "cut at {cut}");
        }
        // One byte per read.
        let mut t = Transformer::new(Mode::Upper);
        let mut out = Vec::new();
        for b in input {
            t.feed(std::slice::from_ref(b), &mut out);
        }
        t.finish(&mut out);
        assert_eq!(out, expected);
    }

    #[test]
    fn upper_passes_invalid_utf8_through() {
        let input = b"ab\xffcd\xe4\xb8zz\xf0\x9f\x8e";
        let expected = b"AB\xffCD\xe4\xb8ZZ\xf0\x9f\x8e";
        for cut in 0..=input.len() {
            assert_eq!(run_split(Mode::Upper, input, cut), expected, "cut at {cut}");
        }
    }

    #[test]
    fn hello_greets_each_line_and_the_unterminated_tail() {
        for cut in 0..=17 {
            assert_eq!(
                run_split(Mode::Hello, b"bob\nalice\r\nclaire", cut),
                b"Hello, bob!\nHello, alice!\r\nHello, claire!",
                "cut at {cut}"
            );
        }
        assert_eq!(run_split(Mode::Hello, b"", 0), b"");
    }

    #[test]
    fn hello_line_limit_is_enforced() {
        let long = vec![b'x'; MAX_LINE + 10];
        let out = run_split(Mode::Hello, &long, 5);
        let greetings = out.windows(7).filter(|w| w == b"Hello, ").count();
        assert_eq!(greetings, 2);
    }

    #[test]
    fn datagram_replies() {
        let mut out = Vec::new();
        Transformer::datagram(Mode::Hello, b"", &mut out);
        assert_eq!(out, b"Hello, !");
        Transformer::datagram(Mode::Hello, b"sam\n", &mut out);
        assert_eq!(out, b"Hello, sam!\n");
        Transformer::datagram(Mode::Upper, b"abc\xe4", &mut out);
        assert_eq!(out, b"ABC\xe4");
        Transformer::datagram(Mode::Hello, &vec![b'a'; MAX_DATAGRAM], &mut out);
        assert_eq!(out.len(), MAX_DATAGRAM);
    }
}

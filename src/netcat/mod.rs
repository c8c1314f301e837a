//! `sockit connect` and `sockit listen`: a netcat-style client and its mirror.
//!
//! Interactive (stdin is a terminal): a prompt loop, each line sent, replies
//! printed as they arrive (TCP), or one reply awaited per datagram (UDP).
//! Piped: stdin streams to the socket and the socket to stdout, each
//! direction ending on its own: stdin's end of file becomes a TCP half-close,
//! the peer's end stops the printing, and the program ends when both are
//! done. It exits 0 only when every byte of stdin was written to the socket
//! and acknowledged by the peer, and the peer's stream was read to its end
//! ([`Relay`] names the exceptions a user can ask for, as ncat's
//! `--send-only`, `--recv-only` and `--no-shutdown` and nc's `-q`); any error
//! in either direction is a one-line message and a non-zero exit.
//!
//! - [`keyboard`]: typing at a terminal: lines after a prompt.
//! - [`tcp`]: plain TCP, on blocking sockets with one thread per direction,
//!   and the check that what was sent was acknowledged.
//! - [`udp`]: datagrams, one per line or per read.
//! - [`tls`]: `--tls` (as `ncat --ssl`), one session shared by both
//!   directions on a small single-threaded runtime.

mod keyboard;
mod tcp;
mod tls;
mod udp;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::tls::{CertSource, Trust};

/// Default TCP connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to wait for a UDP reply.
pub const DEFAULT_UDP_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
const PROMPT: &str = "> ";
/// Bytes moved per read in piped mode: large reads keep bulk transfers cheap.
const PUMP_BUF: usize = 256 * 1024;

/// Errors of `connect` and `listen`, each a one-line message for the user.
#[derive(Debug, thiserror::Error)]
pub enum NetcatError {
    /// The host name did not resolve.
    #[error("unknown host {0}")]
    UnknownHost(String),
    /// Nothing listens there.
    #[error("connection refused by {0}")]
    Refused(SocketAddr),
    /// The peer did not answer in time.
    #[error("timed out connecting to {0}")]
    Timeout(String),
    /// The address is not HOST:PORT.
    #[error("bad address {0:?}: expected HOST:PORT")]
    BadAddress(String),
    /// `--tls` with `--udp`.
    #[error("--tls works over TCP only: DTLS (TLS over UDP) is not supported")]
    TlsOverUdp,
    /// TLS could not be set up or failed; the message says why and what to
    /// do (some span several lines, as the unknown-server notice).
    #[error("{0}")]
    Tls(String),
    /// Not every byte of stdin reached the peer: it closed or reset the
    /// connection first, or did not acknowledge them in time.
    #[error("{0}")]
    Undelivered(String),
    /// Any other socket or terminal error. (Not named `source`: the message
    /// includes it already, and a `source()` would print it twice.)
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> NetcatError {
    let context = context.into();
    move |error| NetcatError::Io { context, error }
}

/// How the two directions of a TCP or TLS conversation end, beyond the
/// default (each on its own end of file; done when both are).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relay {
    /// Only send (`--send-only`): stdin is sent, what the peer sends is read
    /// and thrown away (so that the peer never blocks and our close never
    /// turns into a reset), and the program ends as soon as stdin has been
    /// sent, half-closed and acknowledged by the peer.
    pub send_only: bool,
    /// Only receive (`--recv-only`): stdin is never read and nothing is sent,
    /// not even a half-close; the program ends at the peer's end of stream.
    pub recv_only: bool,
    /// Do not pass stdin's end on as a half-close (`--no-shutdown`), for
    /// peers that take it as a hang-up; the program ends at the peer's end.
    pub no_shutdown: bool,
    /// After stdin's end, wait at most this long for the peer's end
    /// (`-q`/`--close-after`), then stop reading. What was sent must still
    /// be acknowledged by the peer.
    pub close_after: Option<Duration>,
}

/// Where a conversation stands: which directions have ended, and when
/// `-q` gives up on the peer. The one rule for TCP and TLS alike.
struct Ends {
    relay: Relay,
    interactive: bool,
    /// The bytes of stdin sent, once stdin has ended.
    sent: Option<u64>,
    /// The peer's stream was read to its end.
    received: bool,
    /// When `-q` stops waiting for the peer.
    deadline: Option<std::time::Instant>,
}

impl Ends {
    fn new(relay: Relay, interactive: bool) -> Ends {
        Ends {
            relay,
            interactive,
            sent: None,
            received: false,
            deadline: None,
        }
    }

    /// Whether the conversation is over: both directions ended (on a
    /// terminal the peer's end is enough), or stdin was sent with
    /// `--send-only`. Starts `-q`'s clock once stdin has ended.
    fn over(&mut self) -> bool {
        let sending_done = self.sent.is_some() || !self.relay.sends();
        if self.received && (sending_done || self.interactive) {
            return true;
        }
        if self.sent.is_some() {
            if self.relay.send_only {
                return true;
            }
            if let Some(wait) = self.relay.close_after {
                self.deadline
                    .get_or_insert_with(|| std::time::Instant::now() + wait);
            }
        }
        false
    }
}

impl Relay {
    /// Whether the sending direction runs at all.
    fn sends(&self) -> bool {
        !self.recv_only
    }

    /// Whether stdin's end becomes a half-close (or a TLS close_notify).
    fn shuts_down(&self) -> bool {
        !self.no_shutdown
    }
}

/// Options of `sockit connect`.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// HOST:PORT.
    pub target: String,
    /// Use UDP instead of TCP.
    pub udp: bool,
    /// Connect timeout (TCP) or reply timeout (UDP); with TLS it bounds the
    /// handshake too.
    pub timeout: Option<Duration>,
    /// Speak TLS, trusting the server as this says; `None` is plain TCP.
    pub tls: Option<Trust>,
    /// How the conversation ends.
    pub relay: Relay,
}

/// Options of `sockit listen`.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// [HOST:]PORT; the host defaults to 127.0.0.1.
    pub bind: String,
    /// Use UDP instead of TCP.
    pub udp: bool,
    /// Keep accepting clients after the first one leaves.
    pub keep_open: bool,
    /// Speak TLS with this certificate (given files, or a self-signed one
    /// made once and kept); `None` is plain TCP.
    pub tls: Option<CertSource>,
    /// How the conversation with the (first) client ends.
    pub relay: Relay,
}

/// Resolves HOST:PORT, telling a malformed address from an unknown host.
fn resolve(target: &str) -> Result<Vec<SocketAddr>, NetcatError> {
    let Some((host, port)) = target.rsplit_once(':') else {
        return Err(NetcatError::BadAddress(target.into()));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(NetcatError::BadAddress(target.into()));
    }
    match target.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            if addrs.is_empty() {
                Err(NetcatError::UnknownHost(host.into()))
            } else {
                Ok(addrs)
            }
        }
        Err(_) => Err(NetcatError::UnknownHost(host.into())),
    }
}

/// `[HOST:]PORT` → an address to bind, with 127.0.0.1 as the default host.
pub fn listen_address(bind: &str) -> String {
    if bind.parse::<u16>().is_ok() {
        format!("127.0.0.1:{bind}")
    } else {
        bind.to_string()
    }
}

/// `sockit connect`: returns when the conversation is over, with an error
/// unless every byte went where it had to.
pub fn connect(opts: &ConnectOptions) -> Result<(), NetcatError> {
    if opts.udp {
        if opts.tls.is_some() {
            return Err(NetcatError::TlsOverUdp);
        }
        return udp::connect(opts);
    }
    if let Some(trust) = &opts.tls {
        return tls::connect(opts, trust);
    }
    tcp::connect(opts)
}

/// `sockit listen`: the mirror of `connect`, as `ncat -l` does.
pub fn listen(opts: &ListenOptions) -> Result<(), NetcatError> {
    let bind = listen_address(&opts.bind);
    let addr = *resolve(&bind)?
        .first()
        .ok_or_else(|| NetcatError::BadAddress(bind.clone()))?;
    if opts.udp {
        if opts.tls.is_some() {
            return Err(NetcatError::TlsOverUdp);
        }
        return udp::listen(addr, opts.keep_open);
    }
    if let Some(source) = &opts.tls {
        return tls::listen(addr, opts, source);
    }
    tcp::listen(addr, opts)
}

/// Where a copy stopped short (with the bytes written before a failed write).
#[derive(Debug)]
enum CopyError {
    /// Reading the source failed.
    Read(io::Error),
    /// Writing the destination failed.
    Write(io::Error, u64),
}

/// Copies `from` to `to` until end of file, flushing after every read so
/// interactive output is not held back. Returns the bytes copied.
fn copy(from: &mut impl Read, to: &mut impl Write) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; PUMP_BUF];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                return to
                    .flush()
                    .map(|()| total)
                    .map_err(|e| CopyError::Write(e, total))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n])
            .and_then(|()| to.flush())
            .map_err(|e| CopyError::Write(e, total))?;
        total += n as u64;
    }
}

/// Reads stdin in reads of up to `len` bytes, handing each to `each`, until
/// its end; a read that fails is said in one line and ends it. For the
/// listeners that go on serving after stdin ends (`-k`, UDP).
fn each_stdin_chunk(len: usize, mut each: impl FnMut(&[u8])) {
    let mut buf = vec![0u8; len];
    let mut stdin = io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => each(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("sockit: reading stdin failed: {e}");
                return;
            }
        }
    }
}

/// "PEER" for messages, or "the peer" when its address is unknown.
fn peer_name(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "the peer".into(), |p| p.to_string())
}

/// The message for a failed write of stdin to the peer, after `sent` bytes.
fn send_failed(e: io::Error, peer: Option<SocketAddr>, sent: u64) -> NetcatError {
    let peer = peer_name(peer);
    match e.kind() {
        io::ErrorKind::BrokenPipe => NetcatError::Undelivered(format!(
            "{peer} closed the connection before all of stdin was sent ({sent} bytes sent)"
        )),
        io::ErrorKind::ConnectionReset => NetcatError::Undelivered(format!(
            "connection reset by {peer} while sending ({sent} bytes of stdin sent)"
        )),
        _ => NetcatError::Io {
            context: format!("sending to {peer} failed after {sent} bytes"),
            error: e,
        },
    }
}

/// The message for a failed read from the peer.
fn receive_failed(e: io::Error, peer: Option<SocketAddr>) -> NetcatError {
    let peer = peer_name(peer);
    match e.kind() {
        io::ErrorKind::ConnectionReset => NetcatError::Io {
            context: format!("connection reset by {peer}"),
            error: e,
        },
        _ => NetcatError::Io {
            context: format!("receiving from {peer} failed"),
            error: e,
        },
    }
}

/// The error of the sending direction (stdin → peer).
fn sending_error(e: CopyError, peer: Option<SocketAddr>) -> NetcatError {
    match e {
        CopyError::Read(e) => io_err("reading stdin failed")(e),
        CopyError::Write(e, sent) => send_failed(e, peer, sent),
    }
}

/// The error of the receiving direction (peer → stdout).
fn receiving_error(e: CopyError, peer: Option<SocketAddr>) -> NetcatError {
    match e {
        CopyError::Read(e) => receive_failed(e, peer),
        CopyError::Write(e, _) => stdout_failed(e),
    }
}

/// The message for a failed write to stdout: the peer's stream was not read
/// to its end.
fn stdout_failed(e: io::Error) -> NetcatError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        NetcatError::Undelivered(
            "stdout was closed before the peer's stream ended; what it sent next was not printed"
                .into(),
        )
    } else {
        io_err("writing stdout failed")(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(listen_address("9000"), "127.0.0.1:9000");
        assert_eq!(listen_address("0.0.0.0:9000"), "0.0.0.0:9000");
        assert!(matches!(
            resolve("nohostport"),
            Err(NetcatError::BadAddress(_))
        ));
        assert!(matches!(
            resolve("host:99999"),
            Err(NetcatError::BadAddress(_))
        ));
        assert!(matches!(resolve(":80"), Err(NetcatError::BadAddress(_))));
        assert!(matches!(
            resolve("no-such-host.invalid:80"),
            Err(NetcatError::UnknownHost(_))
        ));
        assert_eq!(resolve("127.0.0.1:80").unwrap()[0].port(), 80);
    }
}

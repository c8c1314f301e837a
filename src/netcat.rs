//! `sockit connect` and `sockit listen`: a netcat-style client and its mirror.
//!
//! Interactive (stdin is a terminal): a prompt loop, each line sent, replies
//! printed as they arrive (TCP), or one reply awaited per datagram (UDP).
//! Piped: stdin streams to the socket and the socket to stdout until both
//! directions are closed; stdin's end of file becomes a TCP half-close.
//!
//! This is a client tool with at most a handful of sockets, so it uses plain
//! blocking sockets and one thread per direction: on Linux `std::io::copy`
//! between descriptors moves bulk data with splice/sendfile, without copying
//! through user space.
//!
//! With `--tls` (as `ncat --ssl`), both directions share one TLS session,
//! which two blocking threads could only share under a lock. That path runs
//! on a small single-threaded tokio runtime instead, with [`crate::tls`]'s
//! client (trust on first use, `--ca`, `--insecure`) and server
//! certificate; stdin is still read on a thread of its own, which may block
//! on a terminal forever, and handed over through a bounded channel. Its end
//! of file becomes a TLS close_notify followed by the TCP half-close.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::echo::MAX_DATAGRAM;
use crate::tls::client::{rustls_error, ConnectError};
use crate::tls::{CertSource, ServerTls, Stream, Transport, Trust, HANDSHAKE_RECORD};

/// Default TCP connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to wait for a UDP reply.
pub const DEFAULT_UDP_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
const PROMPT: &str = "> ";

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
    /// Any other socket or terminal error. (Not named `source`: the message
    /// includes it already, and a `source()` would print it twice.)
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> NetcatError {
    let context = context.into();
    move |error| NetcatError::Io { context, error }
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

fn connect_tcp(target: &str, timeout: Duration) -> Result<TcpStream, NetcatError> {
    let mut last = None;
    for addr in resolve(target)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => {
                last = Some(match e.kind() {
                    io::ErrorKind::ConnectionRefused => NetcatError::Refused(addr),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                        NetcatError::Timeout(target.into())
                    }
                    _ => NetcatError::Io {
                        context: format!("cannot connect to {addr}"),
                        error: e,
                    },
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| NetcatError::UnknownHost(target.into())))
}

/// `sockit connect`: returns when the conversation is over.
pub fn connect(opts: &ConnectOptions) -> Result<(), NetcatError> {
    if opts.udp {
        if opts.tls.is_some() {
            return Err(NetcatError::TlsOverUdp);
        }
        return connect_udp(opts);
    }
    if let Some(trust) = &opts.tls {
        return connect_tls(opts, trust);
    }
    let stream = connect_tcp(
        &opts.target,
        opts.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
    )?;
    let _ = stream.set_nodelay(true);
    relay_tcp(stream, io::stdin().is_terminal())
}

/// Pumps stdin to `stream` and `stream` to stdout; returns when the peer has
/// closed its side (after stdin's end of file was passed on as a half-close,
/// or while stdin is still open: the conversation is over either way).
fn relay_tcp(stream: TcpStream, interactive: bool) -> Result<(), NetcatError> {
    let mut to_peer = stream.try_clone().map_err(io_err("cannot clone socket"))?;
    let peer = stream.peer_addr().ok();
    // stdin → socket on its own thread: it may block on the terminal forever,
    // so it is not joined; the process ends when the peer is done.
    thread::spawn(move || {
        let result = if interactive {
            prompt_lines(|line| to_peer.write_all(line))
        } else {
            pump(&mut io::stdin().lock(), &mut to_peer)
        };
        if let Err(e) = result {
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("sockit: sending failed: {e}");
            }
        }
        let _ = to_peer.shutdown(Shutdown::Write);
    });
    let mut from_peer = stream;
    let mut out = io::stdout().lock();
    match pump(&mut from_peer, &mut out) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
            return Err(NetcatError::Io {
                context: format!(
                    "connection reset by {}",
                    peer.map_or("peer".into(), |p| p.to_string())
                ),
                error: e,
            })
        }
        Err(e) => return Err(io_err("receiving failed")(e)),
    }
    let _ = out.flush();
    if interactive {
        eprintln!("\nsockit: connection closed by peer");
    }
    Ok(())
}

/// Bytes moved per read in piped mode: large reads keep bulk transfers cheap.
const PUMP_BUF: usize = 256 * 1024;

/// Copies `from` to `to` until end of file, flushing after every read so
/// interactive output is not held back.
fn pump(from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; PUMP_BUF];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return to.flush(),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}

/// Reads stdin a line at a time with a prompt, handing each line (with its
/// newline) to `send`, until end of file.
fn prompt_lines(mut send: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let stdin = io::stdin();
    let mut line = Vec::new();
    loop {
        eprint!("{PROMPT}");
        line.clear();
        if stdin.lock().read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        send(&line)?;
    }
}

fn connect_udp(opts: &ConnectOptions) -> Result<(), NetcatError> {
    let addrs = resolve(&opts.target)?;
    let addr = addrs[0];
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).map_err(io_err("cannot open a UDP socket"))?;
    socket
        .connect(addr)
        .map_err(io_err(format!("cannot reach {addr}")))?;
    let wait = opts.timeout.unwrap_or(DEFAULT_UDP_REPLY_TIMEOUT);
    if io::stdin().is_terminal() {
        udp_interactive(&socket, addr, wait)
    } else {
        udp_piped(socket, addr, wait)
    }
}

fn udp_error(addr: SocketAddr, e: io::Error) -> NetcatError {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        NetcatError::Refused(addr)
    } else {
        io_err("UDP receive failed")(e)
    }
}

/// One datagram per line (without its line ending), one reply awaited each.
fn udp_interactive(
    socket: &UdpSocket,
    addr: SocketAddr,
    wait: Duration,
) -> Result<(), NetcatError> {
    socket
        .set_read_timeout(Some(wait))
        .map_err(io_err("socket option"))?;
    let mut buf = vec![0u8; 65_536];
    let mut result = Ok(());
    prompt_lines(|line| {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        socket.send(line)?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                let mut out = io::stdout().lock();
                out.write_all(&buf[..n])?;
                if !buf[..n].ends_with(b"\n") {
                    out.write_all(b"\n")?;
                }
                out.flush()
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                eprintln!("no reply within {}", humantime::format_duration(wait));
                Ok(())
            }
            Err(e) => {
                result = Err(udp_error(addr, e));
                Err(io::Error::other("stop"))
            }
        }
    })
    .or_else(|e| {
        if result.is_err() {
            Ok(())
        } else {
            Err(io_err("terminal")(e))
        }
    })?;
    result
}

/// Each read of stdin (up to 65 507 bytes) is one datagram; replies are
/// printed as they come. After stdin's end of file, waits until every
/// datagram has had a reply or none came for `wait`.
fn udp_piped(socket: UdpSocket, addr: SocketAddr, wait: Duration) -> Result<(), NetcatError> {
    let sent = Arc::new(AtomicU64::new(0));
    let stdin_done = Arc::new(AtomicU64::new(0));
    let sender = socket.try_clone().map_err(io_err("cannot clone socket"))?;
    {
        let sent = sent.clone();
        let stdin_done = stdin_done.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let mut stdin = io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Err(e) = sender.send(&buf[..n]) {
                            eprintln!("sockit: UDP send failed: {e}");
                            break;
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("sockit: reading stdin failed: {e}");
                        break;
                    }
                }
            }
            stdin_done.store(1, Ordering::SeqCst);
        });
    }
    socket
        .set_read_timeout(Some(wait))
        .map_err(io_err("socket option"))?;
    let mut buf = vec![0u8; 65_536];
    let mut received = 0u64;
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                received += 1;
                let mut out = io::stdout().lock();
                if let Err(e) = out.write_all(&buf[..n]).and_then(|_| out.flush()) {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(io_err("writing stdout")(e));
                }
                if stdin_done.load(Ordering::SeqCst) == 1 && received >= sent.load(Ordering::SeqCst)
                {
                    return Ok(());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stdin_done.load(Ordering::SeqCst) == 1 {
                    let missing = sent.load(Ordering::SeqCst).saturating_sub(received);
                    if missing > 0 {
                        eprintln!(
                            "sockit: no reply within {} for {missing} datagram(s)",
                            humantime::format_duration(wait)
                        );
                    }
                    return Ok(());
                }
            }
            Err(e) => return Err(udp_error(addr, e)),
        }
    }
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
        return listen_udp(addr, opts.keep_open);
    }
    if let Some(source) = &opts.tls {
        return listen_tls(addr, opts.keep_open, source);
    }
    let listener = TcpListener::bind(addr).map_err(io_err(format!("cannot listen on {addr}")))?;
    let local = listener.local_addr().map_err(io_err("listener address"))?;
    eprintln!("sockit: listening on {local} (tcp)");
    if !opts.keep_open {
        let (stream, peer) = listener.accept().map_err(io_err("accept failed"))?;
        eprintln!("sockit: connection from {peer}");
        drop(listener);
        return relay_tcp(stream, io::stdin().is_terminal());
    }
    broadcast_server(listener)
}

/// `--keep-open`: every client's bytes go to stdout; stdin goes to every client.
fn broadcast_server(listener: TcpListener) -> Result<(), NetcatError> {
    let clients: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    {
        let clients = clients.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut stdin = io::stdin().lock();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut list = clients.lock().unwrap_or_else(|p| p.into_inner());
                list.retain_mut(|c| c.write_all(&buf[..n]).is_ok());
            }
        });
    }
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("sockit: accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        eprintln!("sockit: connection from {peer}");
        if let Ok(clone) = stream.try_clone() {
            clients
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(clone);
        }
        thread::spawn(move || {
            let mut stream = stream;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut out = io::stdout().lock();
                        if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                            break;
                        }
                    }
                }
            }
            eprintln!("sockit: {peer} disconnected");
        });
    }
}

/// UDP listen: print each datagram; stdin goes to the peer. Without
/// `keep_open` only the first peer is served; with it, replies go to whoever
/// sent last.
fn listen_udp(addr: SocketAddr, keep_open: bool) -> Result<(), NetcatError> {
    let socket = UdpSocket::bind(addr).map_err(io_err(format!("cannot listen on {addr}")))?;
    let local = socket.local_addr().map_err(io_err("socket address"))?;
    eprintln!("sockit: listening on {local} (udp)");
    let last_peer: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    {
        let socket = socket.try_clone().map_err(io_err("cannot clone socket"))?;
        let last_peer = last_peer.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let mut stdin = io::stdin().lock();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let peer = *last_peer.lock().unwrap_or_else(|p| p.into_inner());
                match peer {
                    Some(p) => {
                        let _ = socket.send_to(&buf[..n], p);
                    }
                    None => eprintln!("sockit: no peer yet; input dropped"),
                }
            }
        });
    }
    let mut buf = vec![0u8; 65_536];
    let mut first: Option<SocketAddr> = None;
    loop {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("sockit: receive failed: {e}");
                continue;
            }
        };
        match first {
            None => {
                eprintln!("sockit: datagrams from {peer}");
                first = Some(peer);
            }
            Some(f) if f != peer && !keep_open => continue,
            _ => {}
        }
        *last_peer.lock().unwrap_or_else(|p| p.into_inner()) = Some(peer);
        let mut out = io::stdout().lock();
        if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
            return Ok(());
        }
    }
}

// TLS (`--tls`): one session shared by both directions, on a small runtime.

/// Time a client of `listen --tls` has to complete its handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to say goodbye (close_notify) to a `listen --tls -k` client that
/// left.
const TLS_GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// Chunks of stdin waiting for the socket. Bounded: when the peer reads
/// slowly, reading stdin waits, memory does not grow.
const STDIN_CHUNKS: usize = 4;
/// Chunks waiting for each `-k` client, and for stdout; full means the
/// sender waits, as a blocking write would.
const PEER_CHUNKS: usize = 4;
const STDOUT_CHUNKS: usize = 16;
/// Bytes read from a TLS session at once (records carry up to 16 KiB).
const TLS_READ_BUF: usize = 64 * 1024;

fn tls_runtime() -> Result<tokio::runtime::Runtime, NetcatError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("cannot start the async runtime"))
}

/// `sockit connect --tls`.
fn connect_tls(opts: &ConnectOptions, trust: &Trust) -> Result<(), NetcatError> {
    // The same messages as plain TCP for a malformed address or unknown host.
    resolve(&opts.target)?;
    let timeout = opts.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let transport = Transport::Tls(trust.clone());
    tls_runtime()?.block_on(async {
        let stream = crate::tls::client::connect(&opts.target, &transport, timeout)
            .await
            .map_err(|e| connect_error(&opts.target, e))?;
        relay_tls(stream, io::stdin().is_terminal()).await
    })
}

/// The TLS client's errors, in `connect`'s words: `tls::client`'s messages
/// give the framed port's hints (`sockit serve`, `--no-tls`), which do not
/// apply to `connect`.
fn connect_error(target: &str, e: ConnectError) -> NetcatError {
    const PLAIN: &str = "is it listening with --tls? Without --tls, connect speaks plain TCP";
    match e {
        ConnectError::Refused { .. } => NetcatError::Tls(format!("connection refused by {target}")),
        ConnectError::ConnectTimeout { .. } => NetcatError::Timeout(target.into()),
        ConnectError::NotTls { server } => NetcatError::Tls(format!(
            "cannot connect to {server}: it answered in plain text, not TLS ({PLAIN})"
        )),
        ConnectError::Handshake { server, reason } if reason.contains("got ClientHello") => {
            NetcatError::Tls(format!(
                "cannot connect to {server}: it sent our TLS greeting back, as an echo server does ({PLAIN})"
            ))
        }
        ConnectError::HandshakeTimeout { server } => NetcatError::Tls(format!(
            "cannot connect to {server}: the TLS handshake timed out ({PLAIN})"
        )),
        ConnectError::ClosedInHandshake { server } => NetcatError::Tls(format!(
            "cannot connect to {server}: it closed the connection during the TLS handshake ({PLAIN})"
        )),
        other => NetcatError::Tls(other.to_string()),
    }
}

/// `sockit listen --tls`: as the plain listener, but every client is a TLS
/// handshake first. One that fails it is reported in a line and closed, and
/// the listener waits for the next: it was not a conversation.
fn listen_tls(addr: SocketAddr, keep_open: bool, source: &CertSource) -> Result<(), NetcatError> {
    let tls =
        ServerTls::load_or_create(source.clone()).map_err(|e| NetcatError::Tls(e.to_string()))?;
    let config = tls
        .config(&[])
        .map_err(|e| NetcatError::Tls(e.to_string()))?;
    let acceptor = TlsAcceptor::from(config);
    let listener = TcpListener::bind(addr).map_err(io_err(format!("cannot listen on {addr}")))?;
    let local = listener.local_addr().map_err(io_err("listener address"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("socket option"))?;
    eprintln!("sockit: listening on {local} (tcp)");
    eprintln!(
        "sockit: listening with TLS, certificate {}",
        tls.fingerprint()
    );
    tls_runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(io_err("listener"))?;
        if keep_open {
            return tls_broadcast_server(listener, acceptor).await;
        }
        let stream = loop {
            let (tcp, peer) = listener.accept().await.map_err(io_err("accept failed"))?;
            match tls_accept(&acceptor, tcp, peer).await {
                Ok(stream) => {
                    eprintln!("sockit: connection from {peer} (TLS)");
                    break stream;
                }
                Err(e) => eprintln!("sockit: {e}"),
            }
        };
        drop(listener);
        relay_tls(stream, io::stdin().is_terminal()).await
    })
}

/// Completes the handshake of an accepted connection within
/// [`TLS_HANDSHAKE_TIMEOUT`]. The first byte is peeked before: a client that
/// does not start with a TLS handshake record is closed without a word, so
/// nothing reaches it (not even a TLS alert) that it could take for data.
async fn tls_accept(
    acceptor: &TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Result<Stream, NetcatError> {
    let failed = |why: String| NetcatError::Tls(format!("TLS handshake with {peer} failed: {why}"));
    let handshake = async {
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(0) => {
                return Err(failed(
                    "it closed the connection before sending anything".into(),
                ))
            }
            Ok(_) if first[0] != HANDSHAKE_RECORD => return Err(failed(
                "it does not speak TLS (plain TCP? it needs connect --tls); closed without a reply"
                    .into(),
            )),
            Ok(_) => {}
            Err(e) => return Err(failed(e.to_string())),
        }
        acceptor
            .accept(tcp)
            .await
            .map_err(|e| failed(describe_client_failure(&e)))
    };
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
        Ok(result) => result.map(|tls| Stream::Server(Box::new(tls))),
        Err(_) => Err(failed(format!(
            "no handshake within {}; closed",
            humantime::format_duration(TLS_HANDSHAKE_TIMEOUT)
        ))),
    }
}

/// Why a client's handshake failed, from the server's side.
fn describe_client_failure(e: &io::Error) -> String {
    match rustls_error(e) {
        Some(rustls::Error::AlertReceived(alert)) => format!(
            "the client refused it ({alert:?}); a client that does not know this certificate yet must compare its fingerprint and accept it"
        ),
        Some(other) => other.to_string(),
        None if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
        ) =>
        {
            "the client closed the connection during the handshake".into()
        }
        None => e.to_string(),
    }
}

/// Reads stdin on a thread of its own into a bounded channel, which closes
/// at stdin's end of file: a line at a time after a prompt on a terminal
/// (`prompt`), large reads otherwise. The thread is never joined: it may
/// block on a terminal forever, and the process ends when the peer is done.
fn stdin_chunks(prompt: bool) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(STDIN_CHUNKS);
    thread::spawn(move || {
        let gone = || io::Error::from(io::ErrorKind::BrokenPipe);
        let result = if prompt {
            prompt_lines(|line| {
                tx.blocking_send(Bytes::copy_from_slice(line))
                    .map_err(|_| gone())
            })
        } else {
            let mut stdin = io::stdin().lock();
            let mut buf = vec![0u8; PUMP_BUF];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                            break Err(gone());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            }
        };
        if let Err(e) = result {
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("sockit: reading stdin failed: {e}");
            }
        }
    });
    rx
}

/// The TLS twin of [`relay_tcp`]: stdin to the peer (its end of file sent
/// as close_notify and a TCP half-close), the peer to stdout. Piped, it
/// returns when both directions are done: leaving as soon as the peer has
/// closed its side would cut off the rest of stdin and our close_notify,
/// which the peer would rightly report as a truncated session. On a
/// terminal it returns when the peer has closed: the conversation is over.
async fn relay_tls(stream: Stream, interactive: bool) -> Result<(), NetcatError> {
    let peer = stream.tcp().peer_addr().ok();
    let (mut from_peer, mut to_peer) = tokio::io::split(stream);
    let mut stdin = stdin_chunks(interactive);
    let sending = async move {
        while let Some(chunk) = stdin.recv().await {
            to_peer.write_all(&chunk).await?;
            to_peer.flush().await?;
        }
        to_peer.shutdown().await
    };
    let receiving = receive_tls(&mut from_peer, peer);
    tokio::pin!(sending, receiving);
    let (mut sent, mut received) = (false, false);
    while !(sent && received) {
        tokio::select! {
            result = &mut sending, if !sent => {
                sent = true;
                if let Err(e) = result {
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        eprintln!("sockit: sending failed: {e}");
                    }
                }
            }
            result = &mut receiving, if !received => {
                received = true;
                result?;
                if interactive {
                    eprintln!("\nsockit: connection closed by peer");
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Copies the peer's bytes to stdout until its close_notify. A peer that
/// closes the connection without one may have been cut off (or the
/// connection cut by someone else): that is an error, not an end of file.
async fn receive_tls(
    from: &mut (impl AsyncRead + Unpin),
    peer: Option<SocketAddr>,
) -> Result<(), NetcatError> {
    let peer = peer.map_or("peer".into(), |p| p.to_string());
    let mut out = tokio::io::stdout();
    let mut buf = vec![0u8; TLS_READ_BUF];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(NetcatError::Tls(format!(
                    "{peer} closed the connection without ending TLS (no close_notify): what was received may be cut short"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(NetcatError::Io {
                    context: format!("connection reset by {peer}"),
                    error: e,
                })
            }
            Err(e) => return Err(io_err("receiving failed")(e)),
        };
        match out.write_all(&buf[..n]).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(io_err("writing stdout")(e)),
        }
        match out.flush().await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(io_err("writing stdout")(e)),
        }
    }
}

/// `listen --tls -k`: as [`broadcast_server`], every client's bytes go to
/// stdout and stdin goes to every client. A client whose handshake fails is
/// reported and the listener goes on.
async fn tls_broadcast_server(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
) -> Result<(), NetcatError> {
    // The std lock is only taken to add, copy or prune the list, never
    // across an await.
    let clients: Arc<Mutex<Vec<mpsc::Sender<Bytes>>>> = Arc::default();
    let (stdout_tx, stdout_rx) = mpsc::channel(STDOUT_CHUNKS);
    tokio::spawn(write_stdout(stdout_rx));
    let mut stdin = stdin_chunks(false);
    {
        let clients = clients.clone();
        // A slow client slows stdin for all, as the plain server's blocking
        // writes do; one that left is dropped from the list.
        tokio::spawn(async move {
            while let Some(chunk) = stdin.recv().await {
                let list = clients.lock().unwrap_or_else(|p| p.into_inner()).clone();
                for client in list {
                    let _ = client.send(chunk.clone()).await;
                }
                clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|c| !c.is_closed());
            }
        });
    }
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("sockit: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let clients = clients.clone();
        let stdout = stdout_tx.clone();
        tokio::spawn(async move {
            let stream = match tls_accept(&acceptor, tcp, peer).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("sockit: {e}");
                    return;
                }
            };
            let (to_client, from_stdin) = mpsc::channel(PEER_CHUNKS);
            clients
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(to_client);
            eprintln!("sockit: connection from {peer} (TLS)");
            serve_tls_client(stream, from_stdin, stdout).await;
            eprintln!("sockit: {peer} disconnected");
        });
    }
}

/// One `-k` client: its bytes to stdout, stdin's chunks to it, until it
/// leaves; then our close_notify, so it sees a clean end.
async fn serve_tls_client(
    stream: Stream,
    mut from_stdin: mpsc::Receiver<Bytes>,
    stdout: mpsc::Sender<Bytes>,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let receiving = async {
        let mut buf = vec![0u8; TLS_READ_BUF];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stdout
                        .send(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let sending = async {
        while let Some(chunk) = from_stdin.recv().await {
            if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = receiving => {}
        () = sending => {}
    }
    // Closed first, so that stdin's sender never waits for this client.
    drop(from_stdin);
    let _ = tokio::time::timeout(TLS_GOODBYE_TIMEOUT, writer.shutdown()).await;
}

/// The one writer of stdout for `-k`: chunks of different clients never
/// interleave. Stops (and with it every client's reading) when stdout is
/// closed.
async fn write_stdout(mut chunks: mpsc::Receiver<Bytes>) {
    let mut out = tokio::io::stdout();
    while let Some(chunk) = chunks.recv().await {
        if out.write_all(&chunk).await.is_err() || out.flush().await.is_err() {
            return;
        }
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

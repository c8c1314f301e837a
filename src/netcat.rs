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

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::echo::MAX_DATAGRAM;

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
    /// Any other socket or terminal error.
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> NetcatError {
    let context = context.into();
    move |source| NetcatError::Io { context, source }
}

/// Options of `sockit connect`.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// HOST:PORT.
    pub target: String,
    /// Use UDP instead of TCP.
    pub udp: bool,
    /// Connect timeout (TCP) or reply timeout (UDP).
    pub timeout: Option<Duration>,
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
                        source: e,
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
        return connect_udp(opts);
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
                source: e,
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
        return listen_udp(addr, opts.keep_open);
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

//! Plain TCP for `connect` and `listen`.
//!
//! A client tool with at most a handful of sockets, so it uses blocking
//! sockets and one thread per direction; each thread reports its end (or its
//! error) on a channel, and the caller decides from both when the
//! conversation is over ([`Relay`]). Before exiting 0 it checks with the
//! kernel that the peer acknowledged every byte sent ([`await_acknowledged`]),
//! so that a reset that arrives after the last write is still an error.

use std::io::{self, IsTerminal, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::keyboard::{self, Keyboard};
use super::{
    copy, io_err, peer_name, receiving_error, resolve, send_failed, sending_error, ConnectOptions,
    Ends, ListenOptions, NetcatError, Relay, DEFAULT_CONNECT_TIMEOUT,
};

/// `sockit connect` over plain TCP.
pub(super) fn connect(opts: &ConnectOptions) -> Result<(), NetcatError> {
    let stream = connect_tcp(
        &opts.target,
        opts.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
    )?;
    let _ = stream.set_nodelay(true);
    relay(stream, io::stdin().is_terminal(), opts.relay)
}

/// `sockit listen` over plain TCP: one client, or every client with `-k`.
pub(super) fn listen(addr: SocketAddr, opts: &ListenOptions) -> Result<(), NetcatError> {
    let listener = TcpListener::bind(addr).map_err(io_err(format!("cannot listen on {addr}")))?;
    let local = listener.local_addr().map_err(io_err("listener address"))?;
    eprintln!("sockit: listening on {local} (tcp)");
    if opts.keep_open {
        return broadcast_server(listener, opts.relay);
    }
    let (stream, peer) = listener.accept().map_err(io_err("accept failed"))?;
    eprintln!("sockit: connection from {peer}");
    drop(listener);
    relay(stream, io::stdin().is_terminal(), opts.relay)
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

/// The end of one direction, as its thread reports it.
enum End {
    /// stdin was sent (this many bytes) and, unless `--no-shutdown`,
    /// half-closed; or it failed.
    Sent(Result<u64, NetcatError>),
    /// The peer's stream was read to its end; or reading or printing failed.
    Received(Result<u64, NetcatError>),
}

/// Pumps stdin to `stream` and `stream` to stdout, each direction on a
/// thread of its own, and returns when the conversation is over as `relay`
/// says: by default when both directions have ended. On a terminal the
/// peer's end is the end (the terminal may never reach end of file).
fn relay(stream: TcpStream, interactive: bool, relay: Relay) -> Result<(), NetcatError> {
    let peer = stream.peer_addr().ok();
    // Two messages at most, one per direction: never full.
    let (ends, ended) = mpsc::sync_channel(2);
    let (keyboard, screen) = match interactive {
        true => {
            let (k, s) = keyboard::open();
            (Some(k), Some(s))
        }
        false => (None, None),
    };
    if relay.sends() {
        let mut to_peer = stream.try_clone().map_err(io_err("cannot clone socket"))?;
        let ends = ends.clone();
        // It may block on the terminal forever, so it is never joined: the
        // process ends when the conversation is.
        thread::spawn(move || {
            let _ = ends.send(End::Sent(send_stdin(&mut to_peer, keyboard, relay, peer)));
        });
    }
    {
        let mut from_peer = stream.try_clone().map_err(io_err("cannot clone socket"))?;
        thread::spawn(move || {
            let received = match (relay.send_only, screen) {
                (true, _) => copy(&mut from_peer, &mut io::sink()),
                (false, Some(mut screen)) => copy(&mut from_peer, &mut screen),
                (false, None) => copy(&mut from_peer, &mut io::stdout().lock()),
            };
            let _ = ends.send(End::Received(
                received.map_err(|e| receiving_error(e, peer)),
            ));
        });
    }
    let mut ends = Ends::new(relay, interactive);
    while !ends.over() {
        let end = match ends.deadline {
            None => ended.recv().ok(),
            Some(at) => match ended.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(end) => Some(end),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => None,
            },
        };
        match end {
            Some(End::Sent(result)) => ends.sent = Some(result?),
            Some(End::Received(result)) => {
                result?;
                ends.received = true;
            }
            // Both threads reported already: `over` ended the loop.
            None => break,
        }
    }
    if let Some(sent) = ends.sent {
        await_acknowledged(stream.as_fd(), peer, sent)?;
    } else if interactive && relay.sends() {
        eprintln!("\nsockit: connection closed by {}", peer_name(peer));
    }
    Ok(())
}

/// The sending direction: stdin (a line at a time from the `keyboard` of a
/// terminal) to the peer, then a half-close unless `--no-shutdown`.
fn send_stdin(
    to_peer: &mut TcpStream,
    keyboard: Option<Keyboard>,
    relay: Relay,
    peer: Option<SocketAddr>,
) -> Result<u64, NetcatError> {
    let sent = match keyboard {
        Some(keyboard) => keyboard.lines(|line| to_peer.write_all(line)),
        None => copy(&mut io::stdin().lock(), to_peer),
    }
    .map_err(|e| sending_error(e, peer))?;
    if relay.shuts_down() {
        to_peer
            .shutdown(Shutdown::Write)
            .map_err(|e| send_failed(e, peer, sent))?;
    }
    Ok(sent)
}

/// The longest pause between two looks at the acknowledgement count.
pub(super) const ACK_POLL_MAX: Duration = Duration::from_millis(50);

/// What the kernel says of the bytes written to a TCP socket.
pub(super) enum Acked {
    /// The peer acknowledged them all (and our FIN, if one was sent).
    All,
    /// Some are still waiting for the peer's acknowledgement.
    Pending,
}

/// Asks the kernel whether the peer acknowledged everything written to
/// `socket`: an error if the connection was reset or closed with bytes
/// outstanding. (On systems without the counters, everything counts as
/// acknowledged: the last write's success is all we can know there.)
pub(super) fn acknowledged(
    socket: BorrowedFd<'_>,
    peer: Option<SocketAddr>,
    sent: u64,
) -> Result<Acked, NetcatError> {
    let sock = socket2::SockRef::from(&socket);
    if let Some(e) = sock.take_error().map_err(io_err("socket status"))? {
        return Err(send_failed(e, peer, sent));
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let mut pending: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer,
        // which points at a live c_int; `fd` is borrowed, hence open.
        if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut pending) } != 0 {
            return Err(io_err("socket status")(io::Error::last_os_error()));
        }
        if pending <= 0 {
            return Ok(Acked::All);
        }
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `info`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        // TCP_CLOSE: the connection is gone with bytes never acknowledged.
        const TCP_CLOSE: u8 = 7;
        if rc == 0 && info.tcpi_state == TCP_CLOSE {
            return Err(NetcatError::Undelivered(format!(
                "the connection to {} ended with {pending} bytes of stdin unacknowledged",
                peer_name(peer)
            )));
        }
        Ok(Acked::Pending)
    }
    #[cfg(not(target_os = "linux"))]
    Ok(Acked::All)
}

/// Waits until the peer has acknowledged every byte written to `socket`;
/// an error if the connection is reset first. As a blocking write, it waits
/// as long as the peer is alive and not reading. There is no event for "the
/// peer acknowledged", so it looks again after a pause that grows to
/// [`ACK_POLL_MAX`]; usually the first look finds nothing outstanding.
fn await_acknowledged(
    socket: BorrowedFd<'_>,
    peer: Option<SocketAddr>,
    sent: u64,
) -> Result<(), NetcatError> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Acked::All = acknowledged(socket, peer, sent)? {
            return Ok(());
        }
        thread::sleep(pause);
        pause = (pause * 2).min(ACK_POLL_MAX);
    }
}

/// Clients of `listen -k`, and a signal for the first one: stdin is not
/// read before someone can receive it.
#[derive(Default)]
struct Clients {
    list: Mutex<Vec<TcpStream>>,
    arrived: Condvar,
}

/// `--keep-open`: every client's bytes go to stdout; stdin goes to every
/// client connected when it is read (reading waits for the first client).
/// `--recv-only` never reads stdin; `--send-only` throws clients' bytes away.
fn broadcast_server(listener: TcpListener, relay: Relay) -> Result<(), NetcatError> {
    let clients: Arc<Clients> = Arc::default();
    if relay.sends() {
        let clients = clients.clone();
        thread::spawn(move || {
            {
                let list = clients.list.lock().unwrap_or_else(|p| p.into_inner());
                let _list = clients
                    .arrived
                    .wait_while(list, |l| l.is_empty())
                    .unwrap_or_else(|p| p.into_inner());
            }
            super::each_stdin_chunk(64 * 1024, |chunk| {
                let mut list = clients.list.lock().unwrap_or_else(|p| p.into_inner());
                list.retain_mut(|c| match c.write_all(chunk) {
                    Ok(()) => true,
                    Err(e) => {
                        eprintln!(
                            "sockit: sending to {} failed: {e}; dropped it",
                            peer_name(c.peer_addr().ok())
                        );
                        false
                    }
                });
            });
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
                .list
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(clone);
            clients.arrived.notify_all();
        }
        thread::spawn(move || {
            let mut stream = stream;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Err(e) => {
                        eprintln!("sockit: receiving from {peer} failed: {e}");
                        break;
                    }
                    Ok(_) if relay.send_only => {}
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

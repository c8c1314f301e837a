//! UDP for `connect` and `listen`: one datagram per line on a terminal, per
//! read of stdin otherwise.

use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use super::keyboard;
use super::{
    io_err, resolve, stdout_failed, ConnectOptions, CopyError, NetcatError,
    DEFAULT_UDP_REPLY_TIMEOUT,
};
use crate::echo::MAX_DATAGRAM;

/// `sockit connect --udp`.
pub(super) fn connect(opts: &ConnectOptions) -> Result<(), NetcatError> {
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
        interactive(&socket, addr, wait)
    } else {
        piped(socket, addr, wait)
    }
}

/// A failed send or receive on a connected UDP socket: a refusal is the
/// ICMP "port unreachable" an earlier datagram provoked.
fn udp_error(addr: SocketAddr, what: &str, e: io::Error) -> NetcatError {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        NetcatError::Refused(addr)
    } else {
        io_err(format!("UDP {what} failed"))(e)
    }
}

/// One datagram per line (without its line ending), one reply awaited each.
fn interactive(socket: &UdpSocket, addr: SocketAddr, wait: Duration) -> Result<(), NetcatError> {
    socket
        .set_read_timeout(Some(wait))
        .map_err(io_err("socket option"))?;
    let mut buf = vec![0u8; 65_536];
    let mut failed = None;
    let (keyboard, _) = keyboard::open();
    let typed = keyboard.lines(|line| {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Err(e) = socket.send(line) {
            failed = Some(udp_error(addr, "send", e));
            return Err(io::Error::other("stop"));
        }
        match socket.recv(&mut buf) {
            Ok(n) => {
                let mut out = io::stdout().lock();
                let printed = out.write_all(&buf[..n]).and_then(|()| {
                    if !buf[..n].ends_with(b"\n") {
                        out.write_all(b"\n")?;
                    }
                    out.flush()
                });
                if let Err(e) = printed {
                    failed = Some(stdout_failed(e));
                    return Err(io::Error::other("stop"));
                }
                Ok(())
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
                failed = Some(udp_error(addr, "receive", e));
                Err(io::Error::other("stop"))
            }
        }
    });
    match (failed, typed) {
        (Some(e), _) => Err(e),
        (None, Err(CopyError::Read(e))) => Err(io_err("reading the terminal failed")(e)),
        (None, Err(CopyError::Write(e, _))) => Err(io_err("UDP send failed")(e)),
        (None, Ok(_)) => Ok(()),
    }
}

/// Each read of stdin (up to 65 507 bytes) is one datagram; replies are
/// printed as they come. After stdin's end of file, waits until every
/// datagram has had a reply or none came for `wait`. Missing replies are
/// reported but are not an error (UDP promises none); a datagram that could
/// not be sent, or stdin that could not be read, is.
fn piped(socket: UdpSocket, addr: SocketAddr, wait: Duration) -> Result<(), NetcatError> {
    let sender = socket.try_clone().map_err(io_err("cannot clone socket"))?;
    // The sender's one report: how many datagrams it sent, or why it stopped.
    let (done, sender_done) = mpsc::sync_channel::<Result<u64, NetcatError>>(1);
    let sent = Arc::new(AtomicU64::new(0));
    {
        let sent = sent.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let mut stdin = io::stdin().lock();
            let result = loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break Ok(sent.load(Ordering::SeqCst)),
                    Ok(n) => {
                        if let Err(e) = sender.send(&buf[..n]) {
                            break Err(udp_error(addr, "send", e));
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(io_err("reading stdin failed")(e)),
                }
            };
            let _ = done.send(result);
        });
    }
    socket
        .set_read_timeout(Some(wait))
        .map_err(io_err("socket option"))?;
    let mut buf = vec![0u8; 65_536];
    let mut received = 0u64;
    let mut total: Option<u64> = None;
    loop {
        if total.is_none() {
            match sender_done.try_recv() {
                Ok(result) => total = Some(result?),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => total = Some(sent.load(Ordering::SeqCst)),
            }
        }
        if total.is_some_and(|t| received >= t) {
            return Ok(());
        }
        match socket.recv(&mut buf) {
            Ok(n) => {
                received += 1;
                let mut out = io::stdout().lock();
                out.write_all(&buf[..n])
                    .and_then(|_| out.flush())
                    .map_err(stdout_failed)?;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if let Some(total) = total {
                    let missing = total.saturating_sub(received);
                    eprintln!(
                        "sockit: no reply within {} for {missing} datagram(s)",
                        humantime::format_duration(wait)
                    );
                    return Ok(());
                }
            }
            Err(e) => return Err(udp_error(addr, "receive", e)),
        }
    }
}

/// The peer of `listen --udp`, and a signal for its first datagram: stdin is
/// not read before there is someone to send it to.
#[derive(Default)]
struct Peer {
    last: Mutex<Option<SocketAddr>>,
    known: Condvar,
}

/// UDP listen: print each datagram; stdin goes to the peer, once one has
/// sent a datagram. Without `keep_open` only the first peer is served; with
/// it, replies go to whoever sent last.
pub(super) fn listen(addr: SocketAddr, keep_open: bool) -> Result<(), NetcatError> {
    let socket = UdpSocket::bind(addr).map_err(io_err(format!("cannot listen on {addr}")))?;
    let local = socket.local_addr().map_err(io_err("socket address"))?;
    eprintln!("sockit: listening on {local} (udp)");
    let peer: Arc<Peer> = Arc::default();
    {
        let socket = socket.try_clone().map_err(io_err("cannot clone socket"))?;
        let peer = peer.clone();
        thread::spawn(move || {
            {
                let last = peer.last.lock().unwrap_or_else(|p| p.into_inner());
                let _last = peer
                    .known
                    .wait_while(last, |l| l.is_none())
                    .unwrap_or_else(|p| p.into_inner());
            }
            super::each_stdin_chunk(MAX_DATAGRAM, |chunk| {
                let to = *peer.last.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(to) = to {
                    if let Err(e) = socket.send_to(chunk, to) {
                        eprintln!("sockit: sending to {to} failed: {e}");
                    }
                }
            });
        });
    }
    let mut buf = vec![0u8; 65_536];
    let mut first: Option<SocketAddr> = None;
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("sockit: receive failed: {e}");
                continue;
            }
        };
        match first {
            None => {
                eprintln!("sockit: datagrams from {from}");
                first = Some(from);
            }
            Some(f) if f != from && !keep_open => continue,
            _ => {}
        }
        *peer.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
        peer.known.notify_all();
        let mut out = io::stdout().lock();
        out.write_all(&buf[..n])
            .and_then(|_| out.flush())
            .map_err(stdout_failed)?;
    }
}

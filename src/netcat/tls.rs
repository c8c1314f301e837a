//! `--tls` for `connect` and `listen` (as `ncat --ssl`).
//!
//! Both directions share one TLS session, which two blocking threads could
//! only share under a lock, so this path runs on a small single-threaded
//! tokio runtime, with [`crate::tls`]'s client (trust on first use, `--ca`,
//! `--insecure`) and server certificate. stdin is still read on a thread of
//! its own, which may block on a terminal forever, and handed over through a
//! bounded channel. Its end of file becomes a TLS close_notify followed by
//! the TCP half-close; a peer that ends without close_notify may have been
//! cut off, and that is an error.

use std::io::{self, IsTerminal, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::keyboard::{self, Keyboard, Screen};
use super::tcp::{acknowledged, Acked, ACK_POLL_MAX};
use super::{
    io_err, peer_name, receive_failed, resolve, send_failed, stdout_failed, ConnectOptions,
    CopyError, Ends, ListenOptions, NetcatError, Relay, DEFAULT_CONNECT_TIMEOUT, PUMP_BUF,
};
use crate::tls::client::{rustls_error, ConnectError};
use crate::tls::{CertSource, ServerTls, Stream, Transport, Trust, HANDSHAKE_RECORD};

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

fn runtime() -> Result<tokio::runtime::Runtime, NetcatError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("cannot start the async runtime"))
}

/// `sockit connect --tls`.
pub(super) fn connect(opts: &ConnectOptions, trust: &Trust) -> Result<(), NetcatError> {
    // The same messages as plain TCP for a malformed address or unknown host.
    resolve(&opts.target)?;
    let timeout = opts.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let transport = Transport::Tls(trust.clone());
    runtime()?.block_on(async {
        let stream = crate::tls::client::connect(&opts.target, &transport, timeout)
            .await
            .map_err(|e| connect_error(&opts.target, e))?;
        relay(stream, io::stdin().is_terminal(), opts.relay).await
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
pub(super) fn listen(
    addr: SocketAddr,
    opts: &ListenOptions,
    source: &CertSource,
) -> Result<(), NetcatError> {
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
    let (keep_open, relay_opts) = (opts.keep_open, opts.relay);
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(io_err("listener"))?;
        if keep_open {
            return broadcast_server(listener, acceptor, relay_opts).await;
        }
        let stream = loop {
            let (tcp, peer) = listener.accept().await.map_err(io_err("accept failed"))?;
            match accept(&acceptor, tcp, peer).await {
                Ok(stream) => {
                    eprintln!("sockit: connection from {peer} (TLS)");
                    break stream;
                }
                Err(e) => eprintln!("sockit: {e}"),
            }
        };
        drop(listener);
        relay(stream, io::stdin().is_terminal(), relay_opts).await
    })
}

/// Completes the handshake of an accepted connection within
/// [`TLS_HANDSHAKE_TIMEOUT`]. The first byte is peeked before: a client that
/// does not start with a TLS handshake record is closed without a word, so
/// nothing reaches it (not even a TLS alert) that it could take for data.
async fn accept(
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
/// at stdin's end of file (after an error, if reading failed): a line at a
/// time from the `keyboard` of a terminal, large reads otherwise. The
/// thread is never joined: it may block on a terminal forever, and the
/// process ends when the conversation is over.
fn stdin_chunks(keyboard: Option<Keyboard>) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(STDIN_CHUNKS);
    thread::spawn(move || {
        let gone = || io::Error::from(io::ErrorKind::BrokenPipe);
        let result = if let Some(keyboard) = keyboard {
            keyboard
                .lines(|line| {
                    tx.blocking_send(Ok(Bytes::copy_from_slice(line)))
                        .map_err(|_| gone())
                })
                .map(|_| ())
                .map_err(|e| match e {
                    CopyError::Read(e) => e,
                    CopyError::Write(e, _) => e,
                })
        } else {
            let mut stdin = io::stdin().lock();
            let mut buf = vec![0u8; PUMP_BUF];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        if tx
                            .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                            .is_err()
                        {
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
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    rx
}

/// The TLS twin of the plain TCP relay: stdin to the peer (its end of file
/// sent as close_notify and a TCP half-close, unless `--no-shutdown`), the
/// peer to stdout; returns when the conversation is over as `relay` says.
/// Leaving as soon as the peer has closed its side would cut off the rest of
/// stdin and our close_notify, which the peer would rightly report as a
/// truncated session. On a terminal the peer's end is the end.
async fn relay(stream: Stream, interactive: bool, relay: Relay) -> Result<(), NetcatError> {
    let peer = stream.tcp().peer_addr().ok();
    let fd = stream.tcp().as_raw_fd();
    let (mut from_peer, mut to_peer) = tokio::io::split(stream);
    let (keyboard, screen) = match interactive {
        true => {
            let (k, s) = keyboard::open();
            (Some(k), Some(s))
        }
        false => (None, None),
    };
    let mut stdin = relay.sends().then(|| stdin_chunks(keyboard));
    let sending = async {
        let mut sent = 0u64;
        if let Some(stdin) = stdin.as_mut() {
            while let Some(chunk) = stdin.recv().await {
                let chunk = chunk.map_err(io_err("reading stdin failed"))?;
                to_peer
                    .write_all(&chunk)
                    .await
                    .map_err(|e| send_failed(e, peer, sent))?;
                to_peer
                    .flush()
                    .await
                    .map_err(|e| send_failed(e, peer, sent))?;
                sent += chunk.len() as u64;
            }
        }
        if relay.shuts_down() {
            to_peer
                .shutdown()
                .await
                .map_err(|e| send_failed(e, peer, sent))?;
        }
        Ok::<u64, NetcatError>(sent)
    };
    let receiving = receive(&mut from_peer, peer, relay.send_only, screen);
    tokio::pin!(sending, receiving);
    let mut ends = Ends::new(relay, interactive);
    while !ends.over() {
        let deadline = ends.deadline.map(Instant::from_std);
        let at = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            result = &mut sending, if relay.sends() && ends.sent.is_none() => {
                ends.sent = Some(result?);
            }
            result = &mut receiving, if !ends.received => {
                result?;
                ends.received = true;
            }
            () = tokio::time::sleep_until(at), if deadline.is_some() => break,
        }
    }
    if let Some(sent) = ends.sent {
        // SAFETY: the socket stays open while `from_peer` and `to_peer`,
        // which own it, are alive: they live to the end of this function.
        let socket = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut pause = Duration::from_millis(1);
        loop {
            if let Acked::All = acknowledged(socket, peer, sent)? {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(ACK_POLL_MAX);
        }
    } else if interactive && relay.sends() {
        eprintln!("\nsockit: connection closed by {}", peer_name(peer));
    }
    Ok(())
}

/// Copies the peer's bytes to stdout, or above the line being typed on the
/// `screen` (or nowhere, with `discard`), until its close_notify. A peer
/// that closes the connection without one may have been cut off (or the
/// connection cut by someone else): that is an error, not an end of file.
async fn receive(
    from: &mut (impl AsyncRead + Unpin),
    peer: Option<SocketAddr>,
    discard: bool,
    screen: Option<Screen>,
) -> Result<(), NetcatError> {
    use std::io::Write as _;
    let mut screen = screen.filter(Screen::edits);
    let mut out = tokio::io::stdout();
    let mut buf = vec![0u8; TLS_READ_BUF];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(NetcatError::Tls(format!(
                    "{} closed the connection without ending TLS (no close_notify): what was received may be cut short",
                    peer_name(peer)
                )))
            }
            Err(e) => return Err(receive_failed(e, peer)),
        };
        if discard {
            continue;
        }
        if let Some(screen) = &mut screen {
            screen.write_all(&buf[..n]).map_err(stdout_failed)?;
            continue;
        }
        out.write_all(&buf[..n]).await.map_err(stdout_failed)?;
        out.flush().await.map_err(stdout_failed)?;
    }
}

/// `listen --tls -k`: as the plain `-k`, every client's bytes go to stdout
/// and stdin goes to every client connected when it is read (reading waits
/// for the first client). A client whose handshake fails is reported and
/// the listener goes on.
async fn broadcast_server(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    relay: Relay,
) -> Result<(), NetcatError> {
    // The std lock is only taken to add, copy or prune the list, never
    // across an await.
    let clients: Arc<Mutex<Vec<mpsc::Sender<Bytes>>>> = Arc::default();
    let first_client = Arc::new(Notify::new());
    let (stdout_tx, stdout_rx) = mpsc::channel(STDOUT_CHUNKS);
    tokio::spawn(write_stdout(stdout_rx));
    if relay.sends() {
        let clients = clients.clone();
        let first_client = first_client.clone();
        // A slow client slows stdin for all, as the plain server's blocking
        // writes do; one that left is dropped from the list.
        tokio::spawn(async move {
            first_client.notified().await;
            let mut stdin = stdin_chunks(None);
            while let Some(chunk) = stdin.recv().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        eprintln!("sockit: reading stdin failed: {e}");
                        return;
                    }
                };
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
        let first_client = first_client.clone();
        let stdout = (!relay.send_only).then(|| stdout_tx.clone());
        tokio::spawn(async move {
            let stream = match accept(&acceptor, tcp, peer).await {
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
            // A permit is kept if the reader of stdin is not waiting yet.
            first_client.notify_one();
            eprintln!("sockit: connection from {peer} (TLS)");
            serve_client(stream, from_stdin, stdout).await;
            eprintln!("sockit: {peer} disconnected");
        });
    }
}

/// One `-k` client: its bytes to stdout (unless `--send-only`), stdin's
/// chunks to it, until it leaves; then our close_notify, so it sees a clean
/// end.
async fn serve_client(
    stream: Stream,
    mut from_stdin: mpsc::Receiver<Bytes>,
    stdout: Option<mpsc::Sender<Bytes>>,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let receiving = async {
        let mut buf = vec![0u8; TLS_READ_BUF];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let Some(stdout) = &stdout else { continue };
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

//! The one server runtime every TCP service runs on: binding, the accept loop,
//! the connection limit, idle timeouts and graceful shutdown.
//!
//! The caller binds (tests bind port 0) and hands [`serve`] a listener, a
//! [`Handler`] and a shutdown token. The accept loop never dies on a
//! per-connection error; when the process runs out of file descriptors it
//! backs off and continues. On shutdown it stops accepting, tells every
//! connection to finish (their [`ConnCtx::shutdown`] token fires), waits up to
//! [`Limits::shutdown_grace`], then drops whatever is still open.
//!
//! No one client can take every slot: each source address (IPv4, or an IPv6
//! /64, what one host usually holds) gets at most
//! [`Limits::max_per_address`] of them. And the listeners of one process
//! share its open-files limit: [`nofile_budget`] says how many connections
//! each can hold without starving the files and databases.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{lookup_host, TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Default connection limit per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on the connections from one source address per listener.
pub const DEFAULT_MAX_PER_ADDRESS: usize = 256;
/// Open files kept out of the listeners' share, at least: files served and
/// stored, databases, logs, the runtime's own descriptors.
pub const NOFILE_RESERVE_MIN: u64 = 256;
/// Share of the open-files limit kept out of the listeners', in percent
/// (when more than [`NOFILE_RESERVE_MIN`]).
pub const NOFILE_RESERVE_PERCENT: u64 = 10;
/// Default idle timeout per connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time in-flight connections get to finish on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Listen backlog requested (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 4096;
/// Longest pause of the accept loop when out of file descriptors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Idle checks per idle timeout.
const IDLE_CHECKS: u32 = 4;

/// Returns when `activity` has not moved for a whole `timeout`. Without a
/// clock read per I/O: a connection whose count has not moved for
/// IDLE_CHECKS consecutive quarters of the timeout is idle, so it goes
/// between 1 and 1.25 timeouts after its last byte.
pub async fn idle(activity: &AtomicU64, timeout: Duration) {
    let period = (timeout / IDLE_CHECKS).max(Duration::from_millis(1));
    let mut seen = activity.load(Ordering::Relaxed);
    let mut quiet = 0;
    loop {
        tokio::time::sleep(period).await;
        let now = activity.load(Ordering::Relaxed);
        if now == seen {
            quiet += 1;
            if quiet >= IDLE_CHECKS {
                return;
            }
        } else {
            (seen, quiet) = (now, 0);
        }
    }
}

/// Per-listener limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are refused.
    pub max_connections: usize,
    /// Connections served at once from one source address (an IPv6 /64
    /// counts as one); more from it are refused.
    pub max_per_address: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// On shutdown, how long open connections get to finish.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_address: DEFAULT_MAX_PER_ADDRESS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// What a connection task knows about its surroundings.
#[derive(Debug, Clone)]
pub struct ConnCtx {
    /// The client's address.
    pub peer: SocketAddr,
    /// Fires when the server starts shutting down: finish the request in
    /// progress, say goodbye if the protocol has a way to, and return.
    pub shutdown: CancellationToken,
    /// Close the connection after this long without traffic.
    pub idle_timeout: Duration,
    /// The live figures of this connection's service (for `sockit stats`);
    /// services that count their bytes add them here.
    pub counters: Arc<Counters>,
}

/// Live figures of one service, shared by its listener and connections.
/// Relaxed atomics: they are statistics, read together with no ordering.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections being served now.
    pub open: AtomicU64,
    /// Connections accepted since the start (refusals not included).
    pub accepted: AtomicU64,
    /// Bytes read from clients, where the service counts them.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients, where the service counts them.
    pub bytes_out: AtomicU64,
}

impl Counters {
    /// Adds to the bytes read from clients.
    pub fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Adds to the bytes written to clients.
    pub fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The figures as plain numbers.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            open: self.open.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// A reading of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Connections being served now.
    pub open: u64,
    /// Connections accepted since the start.
    pub accepted: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
}

/// The counters of every service of one server, by service name, in the
/// order they were first asked for. Cheap to clone; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    services: Arc<Mutex<Vec<Named>>>,
}

/// One service's counters and its name.
type Named = (&'static str, Arc<Counters>);

impl Metrics {
    /// The counters of service `name`, created on first use.
    pub fn service(&self, name: &'static str) -> Arc<Counters> {
        let mut services = self
            .services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, c)) = services.iter().find(|(n, _)| *n == name) {
            return c.clone();
        }
        let c = Arc::new(Counters::default());
        services.push((name, c.clone()));
        c
    }

    /// Every service's figures now.
    pub fn snapshot(&self) -> Vec<(&'static str, CountersSnapshot)> {
        let services = self
            .services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        services.iter().map(|(n, c)| (*n, c.snapshot())).collect()
    }
}

/// Counts a connection as open while it lives.
struct OpenGuard(Arc<Counters>);

impl OpenGuard {
    fn new(counters: Arc<Counters>) -> OpenGuard {
        counters.open.fetch_add(1, Ordering::Relaxed);
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        OpenGuard(counters)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP service: serves one accepted connection.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Serves one connection until it ends. Errors are the handler's to log.
    fn serve(&self, stream: TcpStream, ctx: ConnCtx) -> impl Future<Output = ()> + Send;

    /// Called instead of [`serve`](Self::serve) when the server is at its
    /// connection limit. Must not block: the accept loop is waiting. The
    /// default closes the connection without a word (raw ports).
    fn refuse(&self, _stream: &TcpStream) {}

    /// Called instead of [`serve`](Self::serve) when the client's address
    /// has [`Limits::max_per_address`] connections open already. Must not
    /// block. The default answers as at the connection limit.
    fn refuse_per_address(&self, stream: &TcpStream) {
        self.refuse(stream);
    }
}

/// What counts as one client for [`Limits::max_per_address`]: an IPv4
/// address, or the /64 prefix of an IPv6 one (a host is usually given a
/// whole /64, so counting its addresses one by one would bound nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The source `ip` belongs to (an IPv4-mapped IPv6 address is its IPv4).
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => v4.fmt(f),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Open connections per source address of one listener.
#[derive(Debug, Default)]
struct PerAddress {
    open: Mutex<HashMap<Source, usize>>,
}

impl PerAddress {
    /// A slot for `source`, or `None` when it holds `max` already.
    fn try_take(self: &Arc<Self>, source: Source, max: usize) -> Option<AddressGuard> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(source).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressGuard {
            table: self.clone(),
            source,
        })
    }
}

/// One connection's place in its address's count; given back on drop.
struct AddressGuard {
    table: Arc<PerAddress>,
    source: Source,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// How many connections each of `listeners` TCP listeners can hold under
/// an open-files limit of `nofile`: what is left once
/// [`NOFILE_RESERVE_PERCENT`] (at least [`NOFILE_RESERVE_MIN`]) is kept for
/// files and databases, shared equally; at least 1.
pub fn nofile_budget(nofile: u64, listeners: usize) -> NofileBudget {
    let reserve = (nofile / 100 * NOFILE_RESERVE_PERCENT).max(NOFILE_RESERVE_MIN);
    let per_listener = nofile.saturating_sub(reserve) / listeners.max(1) as u64;
    NofileBudget {
        nofile,
        reserve,
        listeners,
        per_listener: usize::try_from(per_listener).unwrap_or(usize::MAX).max(1),
    }
}

/// The split of the open-files limit among the listeners ([`nofile_budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileBudget {
    /// The process's open-files limit (soft).
    pub nofile: u64,
    /// Descriptors kept for files, databases and the runtime.
    pub reserve: u64,
    /// Listeners sharing the rest.
    pub listeners: usize,
    /// Connections each listener may hold.
    pub per_listener: usize,
}

/// The process's open-files limit now (soft), if it can be read.
pub fn nofile_limit() -> Option<u64> {
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// Caps `limits.max_connections` to what the open-files limit leaves each of
/// `listeners` listeners, with a warning naming the numbers when it lowers
/// it.
pub fn fit_to_nofile(limits: &mut Limits, listeners: usize) {
    let Some(nofile) = nofile_limit() else {
        warn!("cannot read the open-files limit: connection limits are not checked against it");
        return;
    };
    let budget = nofile_budget(nofile, listeners);
    if limits.max_connections > budget.per_listener {
        warn!(
            max_connections = budget.per_listener,
            configured = limits.max_connections,
            open_files = budget.nofile,
            reserved = budget.reserve,
            listeners = budget.listeners,
            "connection limit lowered to fit the open-files limit: {} open files, {} kept for files and databases, the rest shared by {} listeners; raise `ulimit -n` to serve more",
            budget.nofile,
            budget.reserve,
            budget.listeners,
        );
        limits.max_connections = budget.per_listener;
    }
}

/// How the server's async runtime runs its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Every task on the thread that starts the runtime, in the order it
    /// became ready.
    CurrentThread,
    /// A worker thread per core, stealing work from each other.
    MultiThread,
}

/// The flavour for a process allowed `cores` CPUs (`available_parallelism`:
/// affinity mask and cgroup quota), with `TOKIO_WORKER_THREADS` set or not.
///
/// With one core, a work-stealing pool has nothing to balance and only costs
/// order: its worker's local queue holds 256 tasks, the rest wait in a
/// global queue visited every few tasks, so with hundreds of ready
/// connections some are served well after others that became ready later.
/// The current-thread scheduler's queue has no such bound and is first in,
/// first out (echo, 500 busy connections on one core, load generator on
/// the other: p99 6.1 -> 5.25 ms, medians of 8 alternating runs; the C epoll
/// server 5.1 ms). An explicit `TOKIO_WORKER_THREADS` keeps the pool, sized
/// as asked.
pub fn runtime_flavor(cores: usize, worker_threads_set: bool) -> Flavor {
    if cores <= 1 && !worker_threads_set {
        Flavor::CurrentThread
    } else {
        Flavor::MultiThread
    }
}

/// Builds the async runtime the servers run on (see [`runtime_flavor`]) and
/// logs its choice.
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let flavor = runtime_flavor(cores, std::env::var_os("TOKIO_WORKER_THREADS").is_some());
    debug!(cores, ?flavor, "async runtime");
    match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread()
            // When more connections are ready than a worker's local queue
            // holds (256), tokio moves the oldest half to the global queue,
            // which a worker checks only every `global_queue_interval`
            // tasks; tuned by itself, that interval grows as tasks get short
            // (up to 127), and those connections wait. Checking every second
            // task keeps the order close to first come, first served: echo
            // at 500 busy connections, one worker pinned to one core, p99
            // 30-36 ms -> 6.3-6.7 ms; on two cores, p99 10.3 -> 9.3 ms and
            // max 25 -> 20 ms, at the same rate (bench/README.md, TCP echo).
            .global_queue_interval(2)
            .enable_all()
            .build(),
    }
}

/// Resolves `addr` ("127.0.0.1:7007", "localhost:0", "[::1]:80") to the first
/// socket address.
pub async fn resolve(addr: &str) -> io::Result<SocketAddr> {
    lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address found")))
}

/// Binds a TCP listener with SO_REUSEADDR and a large backlog.
pub async fn bind_tcp(addr: &str) -> io::Result<TcpListener> {
    let sa = resolve(addr).await?;
    let socket = if sa.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(sa)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind TCP {sa}: {e}")))?;
    socket.listen(BACKLOG)
}

/// Binds a UDP socket.
pub async fn bind_udp(addr: &str) -> io::Result<UdpSocket> {
    let sa = resolve(addr).await?;
    UdpSocket::bind(sa)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP {sa}: {e}")))
}

/// Raises the soft open-files limit to the hard limit and logs both.
pub fn raise_nofile_limit() {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) => match rlimit::increase_nofile_limit(hard) {
            Ok(now) => info!(soft_was = soft, soft = now, hard, "open-files limit"),
            Err(e) => warn!(soft, hard, "cannot raise the open-files limit: {e}"),
        },
        Err(e) => warn!("cannot read the open-files limit: {e}"),
    }
}

/// Makes glibc's malloc give large blocks back to the system when they are
/// freed. By default it raises its mmap threshold to the size of the
/// largest block freed so far (up to 32 MiB), after which blocks that big
/// (Argon2id's 19 MiB, large transfer buffers) are carved from per-thread
/// arenas and stay resident for the life of the process. A fixed 1 MiB
/// threshold keeps them out of the arenas. No effect on other allocators.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called once at
    // start-up, before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Raises the soft open-files limit to the hard limit without logging (clients).
pub fn raise_nofile_limit_quietly() {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::increase_nofile_limit(hard);
    }
}

/// Resolves when SIGINT or SIGTERM arrives (Ctrl-C elsewhere).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => info!("SIGINT received, shutting down"),
                    _ = term.recv() => info!("SIGTERM received, shutting down"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// True for accept errors that mean "out of descriptors or memory": worth a pause.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// How often refusals are logged at most: once per interval for the
/// connection limit, once per interval and address for the per-address cap.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Addresses remembered for [`AddressRefusals`]; past this, those not
/// refused within the interval are forgotten.
const REFUSAL_LOG_ADDRESSES: usize = 1024;

/// Logs refusals at most once a second, with a count, so a flood of clients
/// at the limit cannot flood the log.
struct RefusalLog {
    name: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    fn refused(&mut self, peer: SocketAddr, limit: usize) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        warn!(
            service = self.name,
            %peer,
            limit,
            also_refused = self.suppressed,
            "connection refused: at the connection limit"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Logs per-address refusals at most once per address per interval, with a
/// count, so one client hammering its cap cannot flood the log.
struct AddressRefusals {
    name: &'static str,
    /// When each address was last logged, and its refusals since.
    seen: HashMap<Source, (Instant, u64)>,
}

impl AddressRefusals {
    fn refused(&mut self, source: Source, peer: SocketAddr, limit: usize) {
        let now = Instant::now();
        if let Some((last, suppressed)) = self.seen.get_mut(&source) {
            if now.duration_since(*last) < REFUSAL_LOG_INTERVAL {
                *suppressed += 1;
                return;
            }
        }
        if self.seen.len() >= REFUSAL_LOG_ADDRESSES {
            self.seen
                .retain(|_, (last, _)| now.duration_since(*last) < REFUSAL_LOG_INTERVAL);
        }
        let also = self.seen.insert(source, (now, 0)).map_or(0, |(_, n)| n);
        warn!(
            service = self.name,
            %peer,
            %source,
            limit,
            also_refused = also,
            "connection refused: too many connections from this address"
        );
    }
}

/// Runs the accept loop for `listener` until `shutdown` fires, then shuts the
/// connections down gracefully. Returns once every connection task is gone.
pub async fn serve<H: Handler>(
    name: &'static str,
    listener: TcpListener,
    handler: H,
    limits: Limits,
    shutdown: CancellationToken,
) {
    serve_counted(name, listener, handler, limits, shutdown, Arc::default()).await
}

/// [`serve`], keeping the service's open connections (and whatever its
/// connections add) in `counters`.
pub async fn serve_counted<H: Handler>(
    name: &'static str,
    listener: TcpListener,
    handler: H,
    limits: Limits,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
) {
    match listener.local_addr() {
        Ok(addr) => info!(service = name, %addr, "listening (tcp)"),
        Err(e) => warn!(service = name, "listening on an unknown address: {e}"),
    }
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // The open connections' tasks: waited for at shutdown, aborted after the
    // grace period. (Aborting, rather than a token every connection selects
    // on, keeps a lock shared by all connections off every wake-up.)
    let mut conns = JoinSet::new();
    let mut refusals = RefusalLog {
        name,
        last: None,
        suppressed: 0,
    };
    let per_address = Arc::new(PerAddress::default());
    let mut address_refusals = AddressRefusals {
        name,
        seen: HashMap::new(),
    };
    let mut backoff = Duration::from_millis(10);

    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(done) = conns.join_next() => {
                reap(name, done);
                continue;
            }
        };
        // Busy accepting, the branch above may not be reached: reap here too.
        while let Some(done) = conns.try_join_next() {
            reap(name, done);
        }
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(10);
                pair
            }
            Err(e) if is_resource_exhaustion(&e) => {
                warn!(service = name, "accept failed: {e}; pausing {backoff:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
            Err(e) => {
                debug!(service = name, "accept failed: {e}");
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            handler.refuse(&stream);
            refusals.refused(peer, limits.max_connections);
            continue;
        };
        let source = Source::of(peer.ip());
        let Some(address) = per_address.try_take(source, limits.max_per_address) else {
            handler.refuse_per_address(&stream);
            address_refusals.refused(source, peer, limits.max_per_address);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(service = name, %peer, "cannot set TCP_NODELAY: {e}");
        }
        let ctx = ConnCtx {
            peer,
            shutdown: shutdown.child_token(),
            idle_timeout: limits.idle_timeout,
            counters: counters.clone(),
        };
        let handler = handler.clone();
        let open = OpenGuard::new(counters.clone());
        conns.spawn(async move {
            let _permit = permit;
            let _address = address;
            let _open = open;
            debug!(service = name, %peer, "connection opened");
            handler.serve(stream, ctx).await;
            debug!(service = name, %peer, "connection closed");
        });
    }

    drop(listener);
    if !conns.is_empty() {
        info!(
            service = name,
            open = conns.len(),
            grace = ?limits.shutdown_grace,
            "waiting for open connections to finish"
        );
    }
    let finished = tokio::time::timeout(limits.shutdown_grace, async {
        while let Some(done) = conns.join_next().await {
            reap(name, done);
        }
    })
    .await;
    if finished.is_err() {
        warn!(
            service = name,
            open = conns.len(),
            "grace period over: closing the remaining connections"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    info!(service = name, "stopped");
}

/// Logs a connection task that panicked (a bug: it ends only that
/// connection, whose permit and count its guards give back).
fn reap(name: &'static str, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            warn!(service = name, "connection task panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::sync::mpsc;

    /// A handler that tells the test when it starts serving, then either
    /// ignores the shutdown token and holds the connection forever, or
    /// panics.
    #[derive(Clone)]
    struct Stubborn {
        started: mpsc::UnboundedSender<()>,
        panic: bool,
    }

    impl Handler for Stubborn {
        async fn serve(&self, mut stream: TcpStream, _ctx: ConnCtx) {
            let _ = self.started.send(());
            if self.panic {
                panic!("a bug in a handler");
            }
            let mut buf = [0u8; 64];
            while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            std::future::pending::<()>().await;
        }
    }

    async fn start(
        panic: bool,
        limits: Limits,
    ) -> (
        SocketAddr,
        CancellationToken,
        Arc<Counters>,
        mpsc::UnboundedReceiver<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = bind_tcp("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let (started, rx) = mpsc::unbounded_channel();
        let run = tokio::spawn(serve_counted(
            "test",
            listener,
            Stubborn { started, panic },
            limits,
            shutdown.clone(),
            counters.clone(),
        ));
        (addr, shutdown, counters, rx, run)
    }

    #[tokio::test]
    async fn after_the_grace_period_connections_that_ignore_shutdown_are_closed() {
        let limits = Limits {
            shutdown_grace: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, shutdown, counters, mut started, run) = start(false, limits).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            started.recv().await.unwrap();
        }
        assert_eq!(counters.snapshot().open, 3);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("serve returns after the grace period")
            .unwrap();
        assert_eq!(counters.snapshot().open, 0);
        for mut c in clients {
            let mut rest = Vec::new();
            assert_eq!(c.read_to_end(&mut rest).await.unwrap(), 0, "closed");
        }
    }

    #[tokio::test]
    async fn a_panicking_connection_gives_its_slot_back_and_the_server_goes_on() {
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let (addr, shutdown, counters, mut started, run) = start(true, limits).await;
        // With one slot, each of these is served only if the last one's
        // panic gave the slot back.
        for _ in 0..3 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            tokio::time::timeout(Duration::from_secs(10), started.recv())
                .await
                .expect("served: the slot was given back")
                .unwrap();
            let mut rest = Vec::new();
            assert_eq!(c.read_to_end(&mut rest).await.unwrap(), 0, "closed");
        }
        shutdown.cancel();
        run.await.unwrap();
        assert_eq!(counters.snapshot().accepted, 3);
        assert_eq!(counters.snapshot().open, 0);
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let of = |s: &str| Source::of(s.parse().unwrap());
        assert_eq!(of("127.0.0.1"), of("::ffff:127.0.0.1"));
        assert_ne!(of("127.0.0.1"), of("127.0.0.2"));
        assert_eq!(
            of("2001:db8:1:2::1"),
            of("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(of("2001:db8:1:2::1"), of("2001:db8:1:3::1"));
        assert_eq!(of("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn the_open_files_limit_is_shared_by_the_listeners_after_a_reserve() {
        // 20 000 open files: 2 000 kept, 6 000 each for three listeners,
        // not the 3 x 10 000 the default limit would let them open.
        let b = nofile_budget(20_000, 3);
        assert_eq!((b.reserve, b.per_listener), (2_000, 6_000));
        // Small limits keep at least 256.
        let b = nofile_budget(1_024, 3);
        assert_eq!((b.reserve, b.per_listener), (256, 256));
        // Never 0, however small.
        assert_eq!(nofile_budget(100, 3).per_listener, 1);
    }

    #[tokio::test]
    async fn the_per_address_count_is_given_back_when_a_connection_ends() {
        let table = Arc::new(PerAddress::default());
        let source = Source::of("127.0.0.1".parse().unwrap());
        let first = table.try_take(source, 2).unwrap();
        let _second = table.try_take(source, 2).unwrap();
        assert!(table.try_take(source, 2).is_none(), "3 over a cap of 2");
        drop(first);
        assert!(table.try_take(source, 2).is_some());
    }

    #[test]
    fn one_core_runs_on_the_current_thread_unless_workers_are_asked_for() {
        assert_eq!(runtime_flavor(1, false), Flavor::CurrentThread);
        assert_eq!(runtime_flavor(1, true), Flavor::MultiThread);
        assert_eq!(runtime_flavor(2, false), Flavor::MultiThread);
        assert_eq!(runtime_flavor(64, true), Flavor::MultiThread);
    }
}

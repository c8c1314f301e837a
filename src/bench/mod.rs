//! `sockit bench`: the load generator behind the project's numbers, usable
//! against any echo-style server.
//!
//! Modes:
//! - `rr`: each connection sends a message and waits for the same number of
//!   bytes back, as fast as it can; reports round trips/s and latency
//!   percentiles (hdrhistogram, microseconds).
//! - `bulk`: each connection streams one way as fast as it can (anything the
//!   server sends back is drained and ignored); reports MB/s.
//! - `connect`: each worker opens a connection, does one round trip, closes;
//!   reports the latency of the whole exchange. With `--hold N`, N idle
//!   connections are opened first and held for the whole run.
//!
//! Every run stops by itself after `duration`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How a benchmark drives the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// Request/response round trips.
    Rr,
    /// One-way streaming.
    Bulk,
    /// A new connection per round trip.
    Connect,
}

/// Options of `sockit bench echo`.
#[derive(Debug, Clone)]
pub struct EchoBench {
    /// HOST:PORT of the server.
    pub target: String,
    /// Concurrent connections (UDP: sockets).
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
    /// Bytes per message (rr, connect) or per write (bulk).
    pub size: usize,
    /// Use UDP.
    pub udp: bool,
    /// What to measure.
    pub mode: BenchMode,
    /// Idle connections held open during the run.
    pub hold: usize,
    /// Total round trips per second to offer (rr over TCP), spread evenly
    /// over the connections; `None` sends as fast as replies come back.
    pub rate: Option<f64>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: BenchMode,
    pub transport: &'static str,
    pub connections: usize,
    pub size: usize,
    pub duration_s: f64,
    /// Completed round trips (bulk: writes).
    pub round_trips: u64,
    pub rt_per_sec: f64,
    /// Payload megabytes (10^6) per second, one way.
    pub mb_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Connections or round trips that failed.
    pub errors: u64,
    /// UDP datagrams with no reply within a second.
    pub lost: u64,
    /// Idle connections held during the run.
    pub held: usize,
    /// The offered rate, if the run was paced.
    pub rate: Option<f64>,
}

/// Errors that stop a benchmark before it measures anything.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The target did not resolve.
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    /// Not one connection could be made.
    #[error("{}", crate::words::connect_failed(.0, .1))]
    Connect(SocketAddr, std::io::Error),
    /// Bad options.
    #[error("{0}")]
    Options(String),
}

/// Per-worker tally, merged at the end. Latencies go to the thread's
/// histogram ([`LATENCIES`]), not the worker's.
struct Tally {
    count: u64,
    bytes: u64,
    errors: u64,
    lost: u64,
    /// The first connection failure, reported if nothing succeeded.
    connect_error: Option<std::io::Error>,
}

/// A histogram of round-trip times in µs: 1 µs to 100 s, 3 significant figures.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 sigfig is valid")))
}

thread_local! {
    /// The latencies recorded on this load-generator thread, shared by all
    /// its connections: one histogram per connection (144 KiB each, 72 MiB
    /// at 500 connections) was 3.5% of the load generator's CPU in cache
    /// misses.
    static LATENCIES: std::cell::RefCell<Histogram<u64>> = std::cell::RefCell::new(histogram());
}

impl Tally {
    fn new() -> Tally {
        Tally {
            count: 0,
            bytes: 0,
            errors: 0,
            lost: 0,
            connect_error: None,
        }
    }

    /// Records one exchange that started at `since` and ended at `now`.
    fn record(&mut self, since: Instant, now: Instant) {
        let us = now.duration_since(since).as_micros().max(1) as u64;
        LATENCIES.with(|h| {
            let _ = h.borrow_mut().record(us.min(100_000_000));
        });
        self.count += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.count += other.count;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.lost += other.lost;
        if self.connect_error.is_none() {
            self.connect_error = other.connect_error;
        }
    }

    /// Counts a failed connection attempt.
    fn connect_failed(&mut self, e: std::io::Error) {
        self.errors += 1;
        self.connect_error.get_or_insert(e);
    }
}

/// Runs a benchmark and reports what it measured.
pub async fn run(opts: &EchoBench) -> Result<Report, BenchError> {
    if opts.connections == 0 {
        return Err(BenchError::Options(
            "--connections must be at least 1".into(),
        ));
    }
    if opts.rate.is_some() && (opts.udp || opts.mode != BenchMode::Rr) {
        return Err(BenchError::Options("--rate applies to TCP rr runs".into()));
    }
    if opts.udp && opts.mode != BenchMode::Rr {
        return Err(BenchError::Options("--udp supports only --mode rr".into()));
    }
    if opts.udp && opts.size > crate::echo::MAX_DATAGRAM {
        return Err(BenchError::Options(format!(
            "--size {} is over the UDP limit of {}",
            opts.size,
            crate::echo::MAX_DATAGRAM
        )));
    }
    let addr = crate::server::resolve(&opts.target)
        .await
        .map_err(|e| BenchError::Resolve(opts.target.clone(), e))?;
    let held = hold_connections(addr, opts.hold).await?;
    let payload: Arc<[u8]> = vec![b'a'; opts.size].into();
    let start = Instant::now();
    let deadline = start + opts.duration;
    let (total, hist) = run_sharded(opts, addr, payload, deadline).await;
    if total.count == 0 {
        if let Some(e) = total.connect_error {
            return Err(BenchError::Connect(addr, e));
        }
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let held_count = held.len();
    drop(held);
    let h = &hist;
    let pct = |q: f64| {
        if total.count == 0 {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    Ok(Report {
        target: opts.target.clone(),
        mode: opts.mode,
        transport: if opts.udp { "udp" } else { "tcp" },
        connections: opts.connections,
        size: opts.size,
        duration_s: elapsed,
        round_trips: total.count,
        rt_per_sec: total.count as f64 / elapsed,
        mb_per_sec: total.bytes as f64 / elapsed / 1e6,
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
        max_us: if total.count == 0 { 0 } else { h.max() },
        errors: total.errors,
        lost: total.lost,
        held: held_count,
        rate: opts.rate,
    })
}

/// Runs the workers on one single-threaded runtime per core, as wrk does:
/// no work stealing and no cross-thread wake-ups on the hot path.
async fn run_sharded(
    opts: &EchoBench,
    addr: SocketAddr,
    payload: Arc<[u8]>,
    deadline: Instant,
) -> (Tally, Histogram<u64>) {
    let shards = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(opts.connections);
    let (udp, mode) = (opts.udp, opts.mode);
    // Paced runs: each connection sends every `connections / rate` seconds.
    let interval = opts
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(opts.connections as f64 / r));
    let mut threads = Vec::with_capacity(shards);
    for shard in 0..shards {
        // Spread connections evenly: the first `connections % shards` get one more.
        let n = opts.connections / shards + usize::from(shard < opts.connections % shards);
        let payload = payload.clone();
        threads.push(std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(_) => {
                    let mut t = Tally::new();
                    t.errors += n as u64;
                    return (t, histogram());
                }
            };
            let total = rt.block_on(async move {
                let mut workers = JoinSet::new();
                for _ in 0..n {
                    let payload = payload.clone();
                    match (udp, mode) {
                        (true, _) => workers.spawn(udp_rr(addr, payload, deadline)),
                        (false, BenchMode::Rr) => {
                            workers.spawn(tcp_rr(addr, payload, deadline, interval))
                        }
                        (false, BenchMode::Bulk) => {
                            workers.spawn(tcp_bulk(addr, payload, deadline))
                        }
                        (false, BenchMode::Connect) => {
                            workers.spawn(tcp_connect(addr, payload, deadline))
                        }
                    };
                }
                let mut total = Tally::new();
                while let Some(done) = workers.join_next().await {
                    if let Ok(tally) = done {
                        total.merge(tally);
                    }
                }
                total
            });
            (total, LATENCIES.with(|h| h.replace(histogram())))
        }));
    }
    tokio::task::spawn_blocking(move || {
        let (mut total, mut hist) = (Tally::new(), histogram());
        for t in threads {
            if let Ok((tally, h)) = t.join() {
                total.merge(tally);
                let _ = hist.add(&h);
            }
        }
        (total, hist)
    })
    .await
    .unwrap_or_else(|_| (Tally::new(), histogram()))
}

/// Opens `n` idle connections, at most 256 handshakes at a time.
async fn hold_connections(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>, BenchError> {
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire().await;
            TcpStream::connect(addr).await
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => {
                return Err(BenchError::Connect(addr, e));
            }
            Err(_) => {}
        }
    }
    Ok(held)
}

async fn tcp_rr(
    addr: SocketAddr,
    payload: Arc<[u8]>,
    deadline: Instant,
    interval: Option<Duration>,
) -> Tally {
    let mut t = Tally::new();
    let fd = match TcpStream::connect(addr).await.and_then(|s| {
        s.set_nodelay(true)?;
        let s = s.into_std()?;
        // SAFETY: a std TcpStream owns its descriptor for its whole life.
        Ok(unsafe { AsyncFd::register(s) }?)
    }) {
        Ok(fd) => fd,
        Err(e) => {
            t.connect_failed(e);
            return t;
        }
    };
    let mut back = vec![0u8; payload.len()];
    // Paced: start at a random phase so connections do not send in step.
    let mut next = interval.map(|iv| Instant::now() + iv.mul_f64(fastrand_phase(&fd)));
    // One clock read per round trip: its end is the next one's start.
    let mut now = Instant::now();
    while now < deadline {
        if let (Some(at), Some(iv)) = (next.as_mut(), interval) {
            tokio::time::sleep_until((*at).into()).await;
            *at += iv;
            now = Instant::now();
        }
        let sent = now;
        if round_trip(&fd, &payload, &mut back).await.is_err() {
            t.errors += 1;
            break;
        }
        now = Instant::now();
        t.record(sent, now);
        t.bytes += payload.len() as u64;
    }
    t
}

/// A phase in [0, 1) that differs per connection (from its port number).
fn fastrand_phase(fd: &AsyncFd<std::net::TcpStream>) -> f64 {
    let port = fd.get_ref().local_addr().map_or(0, |a| a.port());
    f64::from(port.wrapping_mul(40_503)) / 65_536.0
}

/// Sends `payload` and reads `back.len()` bytes in reply. The reply cannot
/// be there before the request is sent, so the read waits for readiness
/// first instead of trying (and failing) at once; once the whole reply is in,
/// the readiness is cleared (race-free, see `echo::serve_tcp`).
async fn round_trip(
    fd: &AsyncFd<std::net::TcpStream>,
    payload: &[u8],
    back: &mut [u8],
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut sent = 0;
    while sent < payload.len() {
        match fd.get_ref().write(&payload[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                fd.writable().await?.clear_ready();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut got = 0;
    while got < back.len() {
        let mut guard = fd.readable().await?;
        match guard.try_io(|s| s.get_ref().read(&mut back[got..])) {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(n)) => {
                got += n;
                if got == back.len() {
                    guard.clear_ready();
                }
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

async fn tcp_connect(addr: SocketAddr, payload: Arc<[u8]>, deadline: Instant) -> Tally {
    let mut t = Tally::new();
    let mut back = vec![0u8; payload.len()];
    while Instant::now() < deadline {
        let sent = Instant::now();
        let ok = async {
            let mut s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            s.write_all(&payload).await?;
            s.read_exact(&mut back).await?;
            std::io::Result::Ok(())
        }
        .await;
        match ok {
            Ok(()) => {
                t.record(sent, Instant::now());
                t.bytes += payload.len() as u64;
            }
            Err(e) => t.connect_failed(e),
        }
    }
    t
}

async fn tcp_bulk(addr: SocketAddr, payload: Arc<[u8]>, deadline: Instant) -> Tally {
    let mut t = Tally::new();
    let s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            t.connect_failed(e);
            return t;
        }
    };
    let (mut rd, mut wr) = s.into_split();
    // Drain whatever comes back (an echo server) so the sender never stalls.
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 256 * 1024];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    let stop = tokio::time::sleep_until(deadline.into());
    tokio::pin!(stop);
    loop {
        let sent = Instant::now();
        tokio::select! {
            _ = &mut stop => break,
            r = wr.write_all(&payload) => {
                if r.is_err() {
                    t.errors += 1;
                    break;
                }
                t.record(sent, Instant::now());
                t.bytes += payload.len() as u64;
            }
        }
    }
    let _ = wr.shutdown().await;
    drain.abort();
    t
}

async fn udp_rr(addr: SocketAddr, payload: Arc<[u8]>, deadline: Instant) -> Tally {
    let mut t = Tally::new();
    let local: SocketAddr = if addr.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let socket = match UdpSocket::bind(local).await {
        Ok(s) if s.connect(addr).await.is_ok() => s,
        _ => {
            t.errors += 1;
            return t;
        }
    };
    let mut back = vec![0u8; 65_536];
    while Instant::now() < deadline {
        let sent = Instant::now();
        if socket.send(&payload).await.is_err() {
            t.errors += 1;
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut back)).await {
            Ok(Ok(_)) => {
                t.record(sent, Instant::now());
                t.bytes += payload.len() as u64;
            }
            Ok(Err(_)) => t.errors += 1,
            Err(_) => t.lost += 1,
        }
    }
    t
}

impl Report {
    /// The human-readable summary.
    pub fn render(&self) -> String {
        let lat = |us: u64| {
            if us >= 10_000 {
                format!("{:.1} ms", us as f64 / 1000.0)
            } else {
                format!("{us} µs")
            }
        };
        let mut s = format!(
            "target     {} {} {}, {} connection{}, {}-byte {}, {:.1} s\n",
            self.target,
            self.transport,
            serde_json::to_value(self.mode)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            self.size,
            if self.mode == BenchMode::Bulk {
                "writes"
            } else {
                "messages"
            },
            self.duration_s,
        );
        if self.held > 0 {
            s += &format!("held       {} idle connections\n", self.held);
        }
        if let Some(rate) = self.rate {
            s += &format!("offered    {rate:.0} round trips/s (paced)\n");
        }
        if self.mode == BenchMode::Bulk {
            s += &format!(
                "sent       {:.1} MB/s ({:.2} Gbit/s) in {} writes\n",
                self.mb_per_sec,
                self.mb_per_sec * 8.0 / 1000.0,
                self.round_trips
            );
        } else {
            s += &format!(
                "rate       {:.0} round trips/s ({} in all, {:.1} MB/s each way)\n",
                self.rt_per_sec, self.round_trips, self.mb_per_sec
            );
        }
        let what = if self.mode == BenchMode::Bulk {
            "write time"
        } else {
            "latency"
        };
        s += &format!(
            "{what:<11}p50 {}  p90 {}  p99 {}  max {}\n",
            lat(self.p50_us),
            lat(self.p90_us),
            lat(self.p99_us),
            lat(self.max_us)
        );
        s += &format!("errors     {}", self.errors);
        if self.transport == "udp" {
            s += &format!("   lost {}", self.lost);
        }
        s
    }
}

pub mod chat;
pub mod handshake;

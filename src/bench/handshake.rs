//! `sockit bench handshake`: how many new connections a server sets up per
//! second. Each worker connects, completes the TLS handshake (a full one:
//! no session resumption, as for a new client), optionally does the framed
//! `hello` round trip, closes, and starts again until the time is up.
//!
//! With `--no-tls` the same loop measures plain TCP connections, the
//! baseline the TLS figure is compared with; `--handshake-only` leaves out
//! the hello, so any TLS server (nginx) can be measured the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::proto::{self, Connection, Frame};
use crate::tls::client::{fresh_config, server_name, tcp_connect};
use crate::tls::{Stream, Transport};

/// Options of `sockit bench handshake`.
#[derive(Debug, Clone)]
pub struct HandshakeBench {
    /// HOST:PORT.
    pub target: String,
    /// Workers, each with one connection at a time.
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
    /// Plain TCP or TLS (and how the server is trusted).
    pub transport: Transport,
    /// Skip the framed hello: connection (and handshake) only.
    pub handshake_only: bool,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct HandshakeReport {
    pub target: String,
    pub tls: bool,
    pub hello: bool,
    pub connections: usize,
    pub duration_s: f64,
    /// Connections set up (and, with hello, answered) and closed.
    pub completed: u64,
    pub per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub errors: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
}

impl HandshakeReport {
    /// A few lines for a terminal.
    pub fn render(&self) -> String {
        let what = match (self.tls, self.hello) {
            (true, true) => "TCP + TLS handshake + hello",
            (true, false) => "TCP + TLS handshake",
            (false, true) => "TCP + hello",
            (false, false) => "TCP connect",
        };
        let mut s = format!(
            "{} ({what}), {} workers, {:.1} s\n  {:.0} connections/s ({} done)\n  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
            self.target,
            self.connections,
            self.duration_s,
            self.per_sec,
            self.completed,
            self.p50_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0,
            self.max_us as f64 / 1000.0,
        );
        if self.errors > 0 {
            s.push_str(&format!(
                "  {} errors, the first: {}\n",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        s
    }
}

/// Errors that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeBenchError {
    #[error("{0}")]
    Setup(#[from] crate::tls::ConnectError),
}

/// One connection, set up and closed.
async fn once(
    opts: &HandshakeBench,
    tls: Option<&(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
) -> Result<(), String> {
    let timeout = Duration::from_secs(10);
    let tcp = tcp_connect(&opts.target, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = match tls {
        None => Stream::Plain(tcp),
        Some((config, name)) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
                .await
                .map_err(|_| "the TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS handshake: {e}"))?;
            Stream::Client(Box::new(tls))
        }
    };
    if opts.handshake_only {
        if let Stream::Client(_) = stream {
            // The handshake is done when connect returns (TLS 1.3: the
            // server's flight was verified); say goodbye properly.
            let _ = stream.shutdown().await;
        }
        return Ok(());
    }
    let mut conn = Connection::new(stream, proto::Limits::default());
    conn.write_frame(&Frame::new("hello").with("version", proto::VERSION))
        .await
        .map_err(|e| e.to_string())?;
    match conn.read_frame().await {
        Ok(Some(f)) if f.kind() == "hello" => {}
        Ok(Some(f)) => return Err(format!("answer to hello: {f:?}")),
        Ok(None) => return Err("closed before answering hello".into()),
        Err(e) => return Err(e.to_string()),
    }
    let (mut stream, _) = conn.into_parts();
    let _ = stream.shutdown().await;
    // Wait for the server's close, so the next connection does not race
    // this one's teardown.
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(timeout, stream.read(&mut sink)).await;
    Ok(())
}

/// Runs the benchmark.
pub async fn run(opts: &HandshakeBench) -> Result<HandshakeReport, HandshakeBenchError> {
    let tls = match &opts.transport {
        Transport::Plain => None,
        Transport::Tls(trust) => Some(Arc::new((
            {
                if trust.verify == crate::tls::Verify::Insecure {
                    eprintln!("warning: --insecure: the server's certificate is not checked");
                }
                fresh_config(&opts.target, trust)?
            },
            server_name(&opts.target)?,
        ))),
    };
    // One connection first: a setup problem (unknown server, wrong port)
    // is reported once, not as a run full of errors.
    if let Err(e) = once(opts, tls.as_deref()).await {
        return Err(HandshakeBenchError::Setup(
            crate::tls::ConnectError::Handshake {
                server: opts.target.clone(),
                reason: e,
            },
        ));
    }
    let started = Instant::now();
    let deadline = started + opts.duration;
    let mut workers = JoinSet::new();
    for _ in 0..opts.connections.max(1) {
        let (opts, tls) = (opts.clone(), tls.clone());
        workers.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid bounds"));
            let (mut errors, mut first) = (0u64, None);
            while Instant::now() < deadline {
                let t = Instant::now();
                match once(&opts, tls.as_deref()).await {
                    Ok(()) => {
                        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            (hist, errors, first)
        });
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| unreachable!("valid bounds"));
    let (mut errors, mut first_error) = (0u64, None);
    while let Some(done) = workers.join_next().await {
        if let Ok((h, e, f)) = done {
            let _ = hist.add(h);
            errors += e;
            if first_error.is_none() {
                first_error = f;
            }
        }
    }
    let duration_s = started.elapsed().as_secs_f64();
    Ok(HandshakeReport {
        target: opts.target.clone(),
        tls: tls.is_some(),
        hello: !opts.handshake_only,
        connections: opts.connections.max(1),
        duration_s,
        completed: hist.len(),
        per_sec: hist.len() as f64 / duration_s.max(1e-9),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
        errors,
        first_error,
    })
}

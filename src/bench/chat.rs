//! `sockit bench chat`: fan-out load on the chat relay. One sender talks in
//! a room of `members` users, each with its own subscribed connection (and
//! `hold` further idle connections per user, for memory measurements);
//! every delivery's latency is measured from the moment the sender wrote the
//! message to the moment a member read it.
//!
//! The users are `<prefix>0 ..` with one password; missing ones are
//! registered first (the server must allow registration, or create them
//! with `sockit admin add-user`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::tls::{Stream, Transport};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::AsyncReadExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::files::client::{Client, ClientError};
use crate::proto::{Connection, Frame, ProtoError};

/// Options of `sockit bench chat`.
#[derive(Debug, Clone)]
pub struct ChatBench {
    /// HOST:PORT of the framed port.
    pub target: String,
    /// Users in the room, each with one subscribed connection.
    pub members: usize,
    /// Further subscribed connections per user, held idle.
    pub hold: usize,
    /// Messages the sender sends.
    pub messages: usize,
    /// Messages per second offered; 0 sends as fast as acknowledgements
    /// allow (64 in flight).
    pub rate: f64,
    /// Bytes of text per message (at least 24: the send time travels in it).
    pub size: usize,
    /// User name prefix.
    pub prefix: String,
    /// The users' password.
    pub password: String,
    /// The room.
    pub room: String,
    /// How long to keep the connections open after the run (for RSS).
    pub linger: Duration,
    /// A file to keep the benchmark users' session tokens in between runs,
    /// so that a rerun does not pay an Argon2id login per user.
    pub token_cache: Option<std::path::PathBuf>,
    /// Plain TCP or TLS.
    pub transport: Transport,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    pub members: usize,
    pub connections: usize,
    pub messages: usize,
    pub size: usize,
    pub offered_per_sec: f64,
    pub sent_per_sec: f64,
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub duration_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub missing: u64,
}

/// Errors of a chat benchmark.
#[derive(Debug, thiserror::Error)]
pub enum ChatBenchError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("connection failed: {0}")]
    Proto(#[from] ProtoError),
    #[error("{0}")]
    Other(String),
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Logs in as `name`, registering it first if needed; returns the token.
async fn token(
    server: &str,
    transport: &Transport,
    name: &str,
    password: &str,
) -> Result<String, ChatBenchError> {
    let mut c = Client::connect(server, transport).await?;
    match c.login(name, password).await {
        Ok(t) => Ok(t.1),
        Err(e) if e.code() == Some("bad_credentials") => {
            c.register(name, password).await?;
            Ok(c.login(name, password).await?.1)
        }
        Err(e) => Err(e.into()),
    }
}

async fn connect(opts: &ChatBench, token: &str) -> Result<Connection<Stream>, ChatBenchError> {
    let mut c = Client::connect(&opts.target, &opts.transport).await?;
    c.auth(token).await?;
    Ok(c.into_connection())
}

/// Sends a request and reads to its answer, dropping events.
async fn call(conn: &mut Connection<Stream>, req: Frame) -> Result<Frame, ChatBenchError> {
    conn.write_frame(&req.with("id", 1)).await?;
    loop {
        let f = conn.read_frame().await?.ok_or(ProtoError::Truncated)?;
        conn.discard_body().await?;
        if f.id().is_some() {
            if let Some((code, message)) = f.as_error() {
                return Err(ChatBenchError::Other(format!("{code}: {message}")));
            }
            return Ok(f);
        }
    }
}

#[derive(serde::Deserialize)]
struct Header<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    size: usize,
}

/// Reads frames straight from the socket (no per-message allocation, the
/// header parsed only for its type and size) until `expected` messages have
/// come, or none for 30 s. The send time is the first 20 bytes of the text.
async fn read_messages(
    stream: &mut Stream,
    buf: &mut BytesMut,
    expected: u64,
) -> Result<(Histogram<u64>, u64, Instant), ChatBenchError> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| ChatBenchError::Other(e.to_string()))?;
    let (mut got, mut last) = (0u64, Instant::now());
    while got < expected {
        // Decode every complete frame in the buffer.
        loop {
            if buf.len() < 4 {
                break;
            }
            let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + n {
                break;
            }
            let h: Header<'_> = serde_json::from_slice(&buf[4..4 + n])
                .map_err(|e| ChatBenchError::Other(format!("bad header: {e}")))?;
            if buf.len() < 4 + n + h.size {
                break;
            }
            if h.kind == "message" {
                let body = &buf[4 + n..4 + n + h.size.min(20)];
                let sent: u64 = std::str::from_utf8(body)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let _ = hist.record(now_us().saturating_sub(sent).max(1));
                got += 1;
                last = Instant::now();
            }
            let _ = buf.split_to(4 + n + h.size);
        }
        if got >= expected {
            break;
        }
        buf.reserve(64 * 1024);
        match tokio::time::timeout(Duration::from_secs(30), stream.read_buf(buf)).await {
            Ok(Ok(0)) => return Err(ProtoError::Truncated.into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ProtoError::from(e).into()),
            Err(_) => break,
        }
    }
    Ok((hist, got, last))
}

/// Runs the benchmark.
pub async fn run(opts: &ChatBench) -> Result<ChatReport, ChatBenchError> {
    let size = opts.size.max(24);
    // Accounts, 16 at a time (each costs an Argon2id hash on the server).
    let gate = Arc::new(Semaphore::new(16));
    let mut logins = JoinSet::new();
    let cached: Vec<String> = opts
        .token_cache
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.lines().map(String::from).collect())
        .unwrap_or_default();
    let mut tokens = vec![String::new(); opts.members + 1];
    for (i, slot) in tokens.iter_mut().enumerate() {
        if let Some(t) = cached.get(i).filter(|t| !t.is_empty()) {
            *slot = t.clone();
            continue;
        }
        let (server, transport, name, pw, gate) = (
            opts.target.clone(),
            opts.transport.clone(),
            format!("{}{i}", opts.prefix),
            opts.password.clone(),
            gate.clone(),
        );
        logins.spawn(async move {
            let _permit = gate.acquire_owned().await;
            token(&server, &transport, &name, &pw).await.map(|t| (i, t))
        });
    }
    let fresh = !logins.is_empty();
    while let Some(r) = logins.join_next().await {
        let (i, t) = r.map_err(|e| ChatBenchError::Other(e.to_string()))??;
        tokens[i] = t;
    }
    if let (Some(path), true) = (&opts.token_cache, fresh) {
        std::fs::write(path, tokens.join("\n"))
            .map_err(|e| ChatBenchError::Other(format!("{}: {e}", path.display())))?;
    }
    // Members: join and subscribe, then read until they have every message.
    let expected = opts.messages as u64;
    let mut readers = JoinSet::new();
    let ready = Arc::new(Semaphore::new(0));
    let mut held = Vec::new();
    for token in tokens.iter().skip(1) {
        let mut conn = connect(opts, token).await?;
        call(
            &mut conn,
            Frame::new("join").with("room", opts.room.as_str()),
        )
        .await?;
        call(&mut conn, Frame::new("subscribe")).await?;
        for _ in 0..opts.hold {
            let mut idle = connect(opts, token).await?;
            call(&mut idle, Frame::new("subscribe")).await?;
            // An idle user still reads what comes (presence, messages).
            let (mut stream, _) = idle.into_parts();
            held.push(tokio::spawn(async move {
                let mut sink = vec![0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            }));
        }
        let ready = ready.clone();
        readers.spawn(async move {
            let (mut stream, mut buf) = conn.into_parts();
            ready.add_permits(1);
            let r = read_messages(&mut stream, &mut buf, expected).await;
            r.map(|(hist, got, last)| (hist, got, last, stream))
        });
    }
    // Every reader is listening before the first message.
    let _ = ready
        .acquire_many(opts.members as u32)
        .await
        .map_err(|e| ChatBenchError::Other(e.to_string()))?;
    let mut sender = connect(opts, &tokens[0]).await?;
    call(
        &mut sender,
        Frame::new("join").with("room", opts.room.as_str()),
    )
    .await?;
    let start = Instant::now();
    let window = Arc::new(Semaphore::new(64));
    let (mut w, mut acks) = (0usize, 0usize);
    let interval = (opts.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / opts.rate));
    let pad = ".".repeat(size.saturating_sub(20));
    while acks < opts.messages {
        let can_send = w < opts.messages && window.available_permits() > 0;
        let due = interval.map_or(start, |iv| start + iv.mul_f64(w as f64));
        if can_send && Instant::now() >= due {
            let permit = window.clone().try_acquire_owned().ok();
            if let Some(p) = permit {
                p.forget();
            }
            let text = format!("{:020}{pad}", now_us());
            let f = Frame::new("send")
                .with("room", opts.room.as_str())
                .with("id", w)
                .with_body_len(text.len() as u64);
            sender.write_message(&f, text.as_bytes()).await?;
            w += 1;
            continue;
        }
        let wait = if can_send {
            tokio::time::sleep_until(due.into())
        } else {
            tokio::time::sleep(Duration::from_secs(3600))
        };
        tokio::select! {
            r = sender.read_frame() => {
                let f = r?.ok_or(ProtoError::Truncated)?;
                sender.discard_body().await?;
                if f.kind() == "sent" {
                    acks += 1;
                    window.add_permits(1);
                } else if let Some((code, message)) = f.as_error() {
                    return Err(ChatBenchError::Other(format!("send refused: {code}: {message}")));
                }
            }
            _ = wait => {}
        }
    }
    let sent_for = start.elapsed();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| ChatBenchError::Other(e.to_string()))?;
    let (mut deliveries, mut end) = (0u64, start);
    let mut conns = Vec::new();
    while let Some(r) = readers.join_next().await {
        let (h, got, last, conn) = r.map_err(|e| ChatBenchError::Other(e.to_string()))??;
        let _ = hist.add(&h);
        deliveries += got;
        end = end.max(last);
        conns.push(conn);
    }
    let duration = end.duration_since(start).max(Duration::from_micros(1));
    let held_count = held.len();
    if !opts.linger.is_zero() {
        eprintln!(
            "holding {} connections for {}",
            conns.len() + held_count + 1,
            humantime::format_duration(opts.linger)
        );
        tokio::time::sleep(opts.linger).await;
    }
    for h in held {
        h.abort();
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(ChatReport {
        members: opts.members,
        connections: opts.members * (1 + opts.hold) + 1,
        messages: opts.messages,
        size,
        offered_per_sec: opts.rate,
        sent_per_sec: opts.messages as f64 / sent_for.as_secs_f64().max(1e-9),
        deliveries,
        deliveries_per_sec: deliveries as f64 / duration.as_secs_f64(),
        duration_s: duration.as_secs_f64(),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1000.0,
        missing: expected * opts.members as u64 - deliveries,
    })
}

impl ChatReport {
    /// The human-readable summary.
    pub fn render(&self) -> String {
        format!(
            "room       {} members ({} connections), {} messages of {} bytes\n\
             sent       {:.0} messages/s{}\n\
             delivered  {} in {:.2} s: {:.0} deliveries/s\n\
             latency    p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n\
             missing    {}",
            self.members,
            self.connections,
            self.messages,
            self.size,
            self.sent_per_sec,
            if self.offered_per_sec > 0.0 {
                format!(" (offered {:.0}/s)", self.offered_per_sec)
            } else {
                " (as fast as acknowledged, 64 in flight)".into()
            },
            self.deliveries,
            self.duration_s,
            self.deliveries_per_sec,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms,
            self.missing,
        )
    }
}

//! Server side of the file messages: each request is parsed from its frame,
//! applied to the store for the logged-in user, and answered.

use std::time::Duration;

use crate::tls::Stream;
use serde::Deserialize;
use sha2::Digest;

use crate::accounts::User;
use crate::framed::HandlerError;
use crate::proto::{timed, Connection, ErrorCode, Frame, ProtoError};
use crate::store::{RemotePath, Source, Store, StoreError};

use super::{pipe, MAX_INLINE};

type Conn = Connection<Stream>;

/// Runs blocking store work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HandlerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HandlerError::refuse("internal", e.to_string()))?
        .map_err(HandlerError::from)
}

fn parse<T: for<'de> Deserialize<'de>>(frame: &Frame) -> Result<T, HandlerError> {
    frame
        .decode()
        .map_err(|e| HandlerError::refuse("bad_request", e.to_string()))
}

fn path(text: &str) -> Result<RemotePath, HandlerError> {
    Ok(RemotePath::parse(text)?)
}

#[derive(Deserialize)]
struct PutRequest {
    path: String,
    length: u64,
    #[serde(default)]
    mtime_ns: i64,
    #[serde(default)]
    force: bool,
    #[serde(default = "yes")]
    resume: bool,
    /// The client's identity for its local file (resume key).
    #[serde(default)]
    source: String,
}

/// The hashes a sender gives for the whole file. BLAKE3 is the store's own
/// (it computes it as the bytes arrive, and `put_ok` reports it); SHA-256 is
/// accepted too, as the HTTP API accepts `Repr-Digest: sha-256`, for clients
/// whose language has no BLAKE3 (Python's hashlib, say). At least one is
/// given; each one given is checked before anything is published.
struct Expected {
    blake3: Option<String>,
    sha256: Option<[u8; 32]>,
}

impl Expected {
    /// The hashes of a `put_end` or of an inline `put`.
    fn of(frame: &Frame) -> Result<Expected, HandlerError> {
        let hex = |key: &str| -> Result<Option<&str>, HandlerError> {
            match frame.get(key) {
                None => Ok(None),
                Some(v) => match v.as_str() {
                    Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        Ok(Some(h))
                    }
                    _ => Err(HandlerError::refuse(
                        "bad_request",
                        format!("\"{key}\" must be 64 hex digits"),
                    )),
                },
            }
        };
        let blake3 = hex("blake3")?.map(str::to_string);
        let sha256 = match hex("sha256")? {
            None => None,
            Some(h) => {
                let mut bytes = [0u8; 32];
                for (i, byte) in bytes.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&h[2 * i..2 * i + 2], 16)
                        .map_err(|e| HandlerError::refuse("bad_request", e.to_string()))?;
                }
                Some(bytes)
            }
        };
        if blake3.is_none() && sha256.is_none() {
            return Err(HandlerError::refuse(
                "bad_request",
                format!(
                    "{} needs the hash of the whole file: \"blake3\" or \"sha256\" (64 hex digits)",
                    frame.kind()
                ),
            ));
        }
        Ok(Expected { blake3, sha256 })
    }
}

/// Whether a `put` is the inline form (its hash in the header, the file in
/// the body).
fn is_inline(put: &Frame) -> bool {
    put.kind() == "put" && (put.get("blake3").is_some() || put.get("sha256").is_some())
}

/// The SHA-256 of a whole file, read from its start.
fn sha256_of(file: &std::fs::File) -> std::io::Result<[u8; 32]> {
    use std::os::unix::fs::FileExt;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; super::TRANSFER_CHUNK];
    let mut at = 0u64;
    loop {
        let n = match file.read_at(&mut buf, at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize().into())
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct GetRequest {
    path: String,
    #[serde(default)]
    offset: u64,
    /// The length and mtime the client saw before: resume only if unchanged.
    length: Option<u64>,
    mtime_ns: Option<i64>,
}

#[derive(Deserialize)]
struct PathRequest {
    #[serde(default)]
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    parents: bool,
}

#[derive(Deserialize)]
struct MoveRequest {
    from: String,
    to: String,
    #[serde(default)]
    force: bool,
}

/// Handles one file message.
pub async fn handle(
    conn: &mut Conn,
    req: &Frame,
    store: &Store,
    user: &User,
    idle: Duration,
) -> Result<(), HandlerError> {
    let key = user.key();
    let reply = match req.kind() {
        "put" if is_inline(req) => return put_inline_batch(conn, req, store, &key, idle).await,
        "put" => return put(conn, req, store, &key, idle).await,
        "get" => return get(conn, req, store, &key, idle).await,
        "ls" => {
            let r: PathRequest = parse(req)?;
            let p = path(&r.path)?;
            let (s, k) = (store.clone(), key.clone());
            let entries = blocking(move || s.list(&k, &p, r.recursive)).await?;
            let body = serde_json::to_vec(&entries)
                .map_err(|e| HandlerError::refuse("internal", e.to_string()))?;
            let frame = Frame::new("listing")
                .with("path", r.path)
                .with("count", entries.len())
                .reply_to(req);
            timed(idle, conn.write_message(&frame, &body)).await?;
            return Ok(());
        }
        "stat" => {
            let r: PathRequest = parse(req)?;
            let p = path(&r.path)?;
            let (s, k) = (store.clone(), key.clone());
            let entry = blocking(move || s.stat(&k, &p)).await?;
            let entry = serde_json::to_value(entry)
                .map_err(|e| HandlerError::refuse("internal", e.to_string()))?;
            Frame::new("stat").with("entry", entry)
        }
        "mkdir" => {
            let r: PathRequest = parse(req)?;
            let p = path(&r.path)?;
            let (s, k) = (store.clone(), key.clone());
            blocking(move || s.mkdir(&k, &p, r.parents)).await?;
            Frame::new("ok")
        }
        "rm" => {
            let r: PathRequest = parse(req)?;
            let p = path(&r.path)?;
            let (s, k) = (store.clone(), key.clone());
            blocking(move || s.remove(&k, &p, r.recursive)).await?;
            Frame::new("ok")
        }
        "mv" => {
            let r: MoveRequest = parse(req)?;
            let (from, to) = (path(&r.from)?, path(&r.to)?);
            let (s, k) = (store.clone(), key.clone());
            blocking(move || s.rename(&k, &from, &to, r.force)).await?;
            Frame::new("ok")
        }
        other => {
            return Err(HandlerError::refuse(
                "unknown_type",
                format!("unknown message type {other:?}"),
            ))
        }
    };
    Ok(timed(idle, conn.write_frame(&reply.reply_to(req))).await?)
}

/// `put`, negotiated: offer a resume offset, receive, verify, publish.
async fn put(
    conn: &mut Conn,
    req: &Frame,
    store: &Store,
    key: &str,
    idle: Duration,
) -> Result<(), HandlerError> {
    let r: PutRequest = parse(req)?;
    let p = path(&r.path)?;
    if req.body_len() != 0 {
        return Err(HandlerError::refuse(
            "bad_request",
            "a put without blake3 carries no body; send put_data after put_ready",
        ));
    }
    let (s, k, pp) = (store.clone(), key.to_string(), p.clone());
    let source = Source {
        mtime_ns: r.mtime_ns,
        id: r.source.clone(),
    };
    let mut upload =
        blocking(move || s.begin_upload(&k, &pp, r.length, &source, r.force, r.resume)).await?;
    let ready = Frame::new("put_ready")
        .with("offset", upload.offset())
        .reply_to(req);
    timed(idle, conn.write_frame(&ready)).await?;
    let data = timed(idle, conn.read_frame())
        .await?
        .ok_or(ProtoError::Truncated)?;
    if data.kind() != "put_data" || data.body_len() != upload.remaining() {
        // The client is out of step with the upload it started; what
        // follows cannot be interpreted, so the connection ends.
        return Err(HandlerError::Fatal {
            code: ErrorCode::BadRequest,
            message: format!(
                "expected put_data with {} body bytes after put_ready, got {} with {}",
                upload.remaining(),
                data.kind(),
                data.body_len()
            ),
        });
    }

    // Receive the body into the partial file; a disk thread hashes and writes.
    let (file, hasher) = upload
        .take_writer()
        .ok_or_else(|| HandlerError::refuse("internal", "upload file already taken"))?;
    let (tx, disk) = pipe::writer(file, hasher);
    let mut receive_error = None;
    loop {
        match timed(idle, conn.read_body_chunk()).await {
            Ok(Some(chunk)) => {
                if tx.send(chunk).await.is_err() {
                    break; // The disk side failed: its error is reported below.
                }
            }
            Ok(None) => break,
            Err(e) => {
                receive_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let disk = disk
        .await
        .map_err(|e| HandlerError::refuse("internal", e.to_string()))?;
    if let Some(e) = receive_error {
        return Err(e.into());
    }
    let (file, hasher, written) = match disk {
        Ok(done) => done,
        Err(e) => {
            // The disk failed (full, say): take the rest of the message,
            // trailer included, so the client gets exactly one answer.
            timed(idle, conn.discard_body()).await?;
            let _ = timed(idle, conn.read_frame()).await?;
            return Err(HandlerError::refuse(
                "internal",
                format!("storing {p}: {e}"),
            ));
        }
    };

    let end = timed(idle, conn.read_frame())
        .await?
        .ok_or(ProtoError::Truncated)?;
    if end.kind() != "put_end" {
        return Err(HandlerError::Fatal {
            code: ErrorCode::BadRequest,
            message: format!("expected put_end after the data, got {}", end.kind()),
        });
    }
    // In step, but unusable: refused, and the partial file kept for a resume.
    let expected = Expected::of(&end)?;
    let published = blocking(move || {
        if let Some(want) = expected.sha256 {
            let got = sha256_of(&file).map_err(|e| StoreError::Io(format!("reading back: {e}")))?;
            if got != want {
                drop(file);
                upload.discard();
                return Err(StoreError::ChecksumMismatch);
            }
        }
        upload.finish(file, hasher, written, expected.blake3.as_deref())
    })
    .await?;
    let ok = Frame::new("put_ok")
        .with("path", published.path)
        .with("length", published.length)
        .with("blake3", published.blake3)
        .reply_to(req);
    Ok(timed(idle, conn.write_frame(&ok)).await?)
}

/// `get`: stream a file (from an offset when resuming), then its hash.
async fn get(
    conn: &mut Conn,
    req: &Frame,
    store: &Store,
    key: &str,
    idle: Duration,
) -> Result<(), HandlerError> {
    let r: GetRequest = parse(req)?;
    let p = path(&r.path)?;
    let (s, k, pp) = (store.clone(), key.to_string(), p.clone());
    let (file, length, mtime_ns) = blocking(move || s.open_read(&k, &pp)).await?;
    // Resume only from the same version of the file.
    let unchanged = r.length == Some(length) && r.mtime_ns == Some(mtime_ns);
    let offset = if unchanged && r.offset <= length {
        r.offset
    } else {
        0
    };
    // The hash covers the whole file: hash the part the client already has,
    // then read and hash the rest a chunk at a time as the socket takes it.
    let file = std::sync::Arc::new(file);
    let hasher = crate::store::read::hash_range(file.clone(), 0, offset, blake3::Hasher::new())
        .await
        .map_err(|e| HandlerError::refuse("internal", format!("reading {p}: {e}")))?;
    let header = Frame::new("file")
        .with("path", p.to_string())
        .with("length", length)
        .with("mtime_ns", mtime_ns)
        .with("offset", offset)
        .with_body_len(length - offset)
        .reply_to(req);
    conn.queue_frame(&header)?;
    // The file changed after the header promised its length: the stream
    // cannot be completed, so the connection must end.
    let cut = |e: std::io::Error| {
        tracing::warn!(path = %p, "cannot finish sending: {e}; closing the connection");
        HandlerError::Proto(ProtoError::Truncated)
    };
    let mut chunks = pipe::Chunks::new(file, offset, length - offset, hasher);
    let mut chunk = chunks.next().await.map_err(cut)?;
    while let Some(c) = chunk {
        // The next chunk is read while this one is sent: one read ahead.
        let (sent, next) = tokio::join!(timed(idle, conn.write_body(&c)), chunks.next());
        sent?;
        chunk = next.map_err(cut)?;
    }
    let hasher = chunks.finish().map_err(cut)?;
    let end = Frame::new("file_end")
        .with("blake3", hasher.finalize().to_hex().to_string())
        .reply_to(req);
    conn.queue_frame(&end)?;
    Ok(timed(idle, conn.flush()).await?)
}

/// Most inline uploads committed together.
const BATCH: usize = 64;

/// Inline puts (small files with their hash in the header). This one and
/// every further inline put the client has already pipelined into the read
/// buffer are received and verified, then made durable and published
/// together ([`crate::store::commit_batch`]: two file-system syncs for the
/// batch instead of three per file), and only then acknowledged, in order.
async fn put_inline_batch(
    conn: &mut Conn,
    first: &Frame,
    store: &Store,
    key: &str,
    idle: Duration,
) -> Result<(), HandlerError> {
    let mut requests = vec![first.clone()];
    let mut staged: Vec<Result<crate::store::Staged, HandlerError>> = Vec::new();
    loop {
        let req = requests.last().cloned().unwrap_or_else(|| first.clone());
        staged.push(stage_inline(conn, &req, store, key, idle).await);
        if let Some(Err(HandlerError::Proto(_) | HandlerError::Fatal { .. })) = staged.last() {
            // The connection is broken: nothing more can be answered.
            return match staged.pop() {
                Some(Err(e)) => Err(e),
                _ => Ok(()),
            };
        }
        let more = conn.peek_buffered().is_some_and(|next| is_inline(&next));
        if !more || requests.len() >= BATCH {
            break;
        }
        let next = timed(idle, conn.read_frame())
            .await?
            .ok_or(ProtoError::Truncated)?;
        requests.push(next);
    }
    // Commit the verified ones together; keep each refusal in its place.
    let mut ok = Vec::new();
    let mut slots = Vec::with_capacity(staged.len());
    for s in staged {
        match s {
            Ok(st) => {
                slots.push(None);
                ok.push(st);
            }
            Err(e) => slots.push(Some(e)),
        }
    }
    let mut committed = blocking(move || Ok(crate::store::commit_batch(ok)))
        .await?
        .into_iter();
    for (req, slot) in requests.iter().zip(slots) {
        let result = match slot {
            Some(e) => Err(e),
            None => committed
                .next()
                .unwrap_or_else(|| Err(StoreError::Io("batch result missing".into())))
                .map_err(HandlerError::from),
        };
        let reply = match result {
            Ok(published) => Frame::new("put_ok")
                .with("path", published.path)
                .with("length", published.length)
                .with("blake3", published.blake3)
                .reply_to(req),
            Err(HandlerError::Refused { code, message }) => Frame::new("error")
                .with("code", code)
                .with("message", message)
                .reply_to(req),
            Err(other) => return Err(other),
        };
        conn.queue_frame(&reply)?;
    }
    Ok(timed(idle, conn.flush()).await?)
}

/// Receives one inline put: reads its body (always, so the stream stays in
/// step even when the put is refused), writes and verifies it.
async fn stage_inline(
    conn: &mut Conn,
    req: &Frame,
    store: &Store,
    key: &str,
    idle: Duration,
) -> Result<crate::store::Staged, HandlerError> {
    if req.body_len() > MAX_INLINE {
        // Skipped, so the stream stays in step with the next request.
        timed(idle, conn.discard_body()).await?;
        return Err(HandlerError::refuse(
            "too_large",
            format!(
                "an inline put carries at most {MAX_INLINE} bytes, this one {}: \
send larger files with the negotiated put (no hash in the put, put_data after put_ready)",
                req.body_len()
            ),
        ));
    }
    let body = timed(idle, conn.read_body_to_vec(MAX_INLINE as usize)).await?;
    let r: PutRequest = parse(req)?;
    let p = path(&r.path)?;
    if body.len() as u64 != r.length {
        return Err(HandlerError::refuse(
            "bad_request",
            "an inline put carries exactly `length` body bytes",
        ));
    }
    let expected = Expected::of(req)?;
    if let Some(want) = expected.sha256 {
        if sha2::Sha256::digest(&body)[..] != want[..] {
            return Err(StoreError::ChecksumMismatch.into());
        }
    }
    let source = Source {
        mtime_ns: r.mtime_ns,
        id: r.source.clone(),
    };
    let (s, k) = (store.clone(), key.to_string());
    blocking(move || {
        let mut upload = s.begin_upload(&k, &p, r.length, &source, r.force, false)?;
        let (mut file, mut hasher) = upload
            .take_writer()
            .ok_or_else(|| StoreError::Io("upload file already taken".into()))?;
        std::io::Write::write_all(&mut file, &body)
            .map_err(|e| StoreError::Io(format!("writing: {e}")))?;
        hasher.update(&body);
        upload.stage(file, hasher, body.len() as u64, expected.blake3.as_deref())
    })
    .await
}

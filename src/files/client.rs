//! Client side of the accounts and file messages: a [`Client`] holds one
//! connection (hello done, optionally authenticated) and offers typed calls;
//! transfers are verified with BLAKE3 and resumable in both directions.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::tls::{ConnectError, Stream, Transport};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::proto::{self, Connection, Frame, ProtoError};
use crate::store::{Entry, Kind};

use super::{pipe, MAX_INLINE};

/// How long to wait for the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pipelined requests in flight at once.
pub const WINDOW: usize = 64;
/// Largest listing body accepted.
const MAX_LISTING: usize = 256 * 1024 * 1024;

/// Client errors, each a one-line message for the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached, or not trusted.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server refused the request.
    #[error("{message}")]
    Remote { code: String, message: String },
    /// The connection broke or the server broke the protocol.
    #[error("connection to the server failed: {0}")]
    Proto(#[from] ProtoError),
    /// A local file problem.
    #[error("{path}: {message}")]
    Local { path: String, message: String },
    /// No saved session for this server.
    #[error("not logged in to {0}: run `sockit login --server {0}` first")]
    NotLoggedIn(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// The server's error code, if the server refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Remote { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn local(path: &Path, e: impl std::fmt::Display) -> ClientError {
        let message = e.to_string();
        // An I/O error in the words every command uses ("no such file or
        // folder", not "No such file or directory (os error 2)").
        let message = message
            .strip_suffix(')')
            .and_then(|m| m.rsplit_once(" (os error "))
            .and_then(|(_, code)| code.parse::<i32>().ok())
            .map_or(message.clone(), |code| {
                crate::words::io(&std::io::Error::from_raw_os_error(code))
            });
        ClientError::Local {
            path: path.display().to_string(),
            message,
        }
    }
}

/// What a finished upload became on the server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Uploaded {
    pub path: String,
    pub length: u64,
    pub blake3: String,
}

/// A connection to the framed port.
pub struct Client {
    conn: Connection<Stream>,
    /// The address connected to, as given.
    pub server: String,
    next_id: u64,
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}

/// An identity for a local file, for the server's resume key: two different
/// local files never share a partial upload, even with the same size and
/// modification time.
fn source_id(local: &Path, meta: &std::fs::Metadata) -> String {
    let mut h = blake3::Hasher::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        h.update(&meta.dev().to_le_bytes());
        h.update(&meta.ino().to_le_bytes());
    }
    let path = std::fs::canonicalize(local).unwrap_or_else(|_| local.to_path_buf());
    h.update(path.as_os_str().as_encoded_bytes());
    h.finalize().to_hex()[..32].to_string()
}

fn remote_error(frame: &Frame) -> Option<ClientError> {
    frame
        .as_error()
        .map(|(code, message)| ClientError::Remote { code, message })
}

/// A handshake that failed because `server` is not a framed port at all
/// (a web or an echo port: `--no-tls` would be the wrong advice, and would
/// send a password in clear) is said in those words.
async fn explain_port(server: &str, e: ConnectError) -> ClientError {
    use crate::tls::client::{probe_port, PortKind};
    let suspicious = match &e {
        ConnectError::NotTls { .. } | ConnectError::ClosedInHandshake { .. } => true,
        ConnectError::Handshake { reason, .. } => reason.contains("got ClientHello"),
        _ => false,
    };
    if !suspicious {
        return e.into();
    }
    let default = crate::framed::DEFAULT_FRAMED_ADDR;
    match probe_port(server, CONNECT_TIMEOUT).await {
        Some(PortKind::Http) => ClientError::Other(format!(
            "cannot connect to {server}: that port speaks HTTP (a web port, for the browser and the HTTP API); the framed port is {default} unless the server says otherwise"
        )),
        Some(PortKind::Echo) => ClientError::Other(format!(
            "cannot connect to {server}: that port echoes what it gets (an echo port); the framed port is {default} unless the server says otherwise"
        )),
        None => e.into(),
    }
}

/// Moves the bar to where a transfer starts. A resumed one says so, and its
/// rate counts from now: the bytes sent before are not this run's (a jump
/// to the offset made the rate read 406 MiB/s).
fn resumed(progress: &ProgressBar, offset: u64, length: u64) {
    progress.set_position(offset);
    progress.reset_eta();
    progress.reset_elapsed();
    if offset > 0 {
        progress.println(format!(
            "resuming at byte {offset} of {length} (what came before is there already)"
        ));
    }
}

impl Client {
    /// Connects (TLS unless `transport` is plain) and completes the hello.
    pub async fn connect(server: &str, transport: &Transport) -> Result<Client, ClientError> {
        let stream = match crate::tls::client::connect(server, transport, CONNECT_TIMEOUT).await {
            Ok(stream) => stream,
            Err(e) => return Err(explain_port(server, e).await),
        };
        let mut client = Client {
            conn: Connection::new(stream, proto::Limits::default()),
            server: server.to_string(),
            next_id: 1,
        };
        let hello = client
            .call(Frame::new("hello").with("version", proto::VERSION))
            .await?;
        if hello.kind() != "hello" {
            return Err(ClientError::Other(format!(
                "unexpected answer to hello: {}",
                hello.kind()
            )));
        }
        Ok(client)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The connection (hello done, authenticated if it was), for a service
    /// that speaks its own messages on it (`exec`, `stats`).
    pub fn into_connection(self) -> Connection<Stream> {
        self.conn
    }

    /// Sends a request without a body and returns its answer; an error frame
    /// becomes [`ClientError::Remote`].
    pub async fn call(&mut self, frame: Frame) -> Result<Frame, ClientError> {
        let id = self.id();
        self.conn.write_frame(&frame.with("id", id)).await?;
        self.answer().await
    }

    async fn answer(&mut self) -> Result<Frame, ClientError> {
        let reply = self.conn.read_frame().await?.ok_or(ProtoError::Truncated)?;
        match remote_error(&reply) {
            Some(e) => {
                self.conn.discard_body().await?;
                Err(e)
            }
            None => Ok(reply),
        }
    }

    /// Creates an account.
    pub async fn register(&mut self, user: &str, password: &str) -> Result<String, ClientError> {
        let r = self
            .call(
                Frame::new("register")
                    .with("user", user)
                    .with("password", password),
            )
            .await?;
        Ok(r.str("user").unwrap_or(user).to_string())
    }

    /// Logs in: returns (user name, token, expiry in seconds since the epoch).
    pub async fn login(
        &mut self,
        user: &str,
        password: &str,
    ) -> Result<(String, String, i64), ClientError> {
        let r = self
            .call(
                Frame::new("login")
                    .with("user", user)
                    .with("password", password),
            )
            .await?;
        let token = r
            .str("token")
            .ok_or_else(|| ClientError::Other("the server sent no token".into()))?;
        Ok((
            r.str("user").unwrap_or(user).to_string(),
            token.to_string(),
            r.get("expires_at").and_then(|v| v.as_i64()).unwrap_or(0),
        ))
    }

    /// Authenticates this connection with a saved token.
    pub async fn auth(&mut self, token: &str) -> Result<String, ClientError> {
        let r = self.call(Frame::new("auth").with("token", token)).await?;
        Ok(r.str("user").unwrap_or_default().to_string())
    }

    /// Revokes the token this connection authenticated with.
    pub async fn logout(&mut self) -> Result<(), ClientError> {
        self.call(Frame::new("logout")).await.map(drop)
    }

    /// Describes a remote path, or `None` if nothing is there.
    pub async fn stat(&mut self, path: &str) -> Result<Option<Entry>, ClientError> {
        match self.call(Frame::new("stat").with("path", path)).await {
            Ok(r) => Ok(r
                .get("entry")
                .and_then(|e| serde_json::from_value(e.clone()).ok())),
            Err(e) if e.code() == Some("not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists a remote folder (entries are paths relative to it when recursive).
    pub async fn list(&mut self, path: &str, recursive: bool) -> Result<Vec<Entry>, ClientError> {
        self.call(
            Frame::new("ls")
                .with("path", path)
                .with("recursive", recursive),
        )
        .await?;
        let body = self.conn.read_body_to_vec(MAX_LISTING).await?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Other(format!("bad listing from the server: {e}")))
    }

    /// Creates a remote folder.
    pub async fn mkdir(&mut self, path: &str, parents: bool) -> Result<(), ClientError> {
        self.call(
            Frame::new("mkdir")
                .with("path", path)
                .with("parents", parents),
        )
        .await
        .map(drop)
    }

    /// Removes a remote file or folder.
    pub async fn remove(&mut self, path: &str, recursive: bool) -> Result<(), ClientError> {
        self.call(
            Frame::new("rm")
                .with("path", path)
                .with("recursive", recursive),
        )
        .await
        .map(drop)
    }

    /// Moves or renames a remote file or folder.
    pub async fn rename(&mut self, from: &str, to: &str, force: bool) -> Result<(), ClientError> {
        self.call(
            Frame::new("mv")
                .with("from", from)
                .with("to", to)
                .with("force", force),
        )
        .await
        .map(drop)
    }

    /// Uploads one file, resuming an interrupted upload of the same source
    /// unless `resume` is off. Small files go inline in one message.
    pub async fn put_file(
        &mut self,
        local: &Path,
        remote: &str,
        force: bool,
        resume: bool,
        progress: &ProgressBar,
    ) -> Result<Uploaded, ClientError> {
        let file = std::fs::File::open(local).map_err(|e| ClientError::local(local, e))?;
        let meta = file.metadata().map_err(|e| ClientError::local(local, e))?;
        if meta.is_dir() {
            return Err(ClientError::local(local, "is a folder (use -r)"));
        }
        let (length, mtime) = (meta.len(), mtime_ns(&meta));
        if length <= MAX_INLINE {
            let data = std::fs::read(local).map_err(|e| ClientError::local(local, e))?;
            if data.len() as u64 != length {
                return Err(ClientError::local(
                    local,
                    "the file changed while it was being read",
                ));
            }
            let id = self.id();
            let source = source_id(local, &meta);
            self.send_inline(id, remote, &data, mtime, &source, force)
                .await?;
            self.conn.flush().await?;
            let r = self.answer().await?;
            progress.inc(length);
            return uploaded(&r);
        }
        match self
            .put_stream(file, local, remote, length, mtime, force, resume, progress)
            .await
        {
            // A resumed upload whose earlier part no longer matches the
            // source: start over once from the beginning.
            Err(e) if e.code() == Some("checksum_mismatch") && resume => {
                progress.set_position(0);
                let file = std::fs::File::open(local).map_err(|e| ClientError::local(local, e))?;
                self.put_stream(file, local, remote, length, mtime, force, false, progress)
                    .await
            }
            other => other,
        }
    }

    async fn send_inline(
        &mut self,
        id: u64,
        remote: &str,
        data: &[u8],
        mtime: i64,
        source: &str,
        force: bool,
    ) -> Result<(), ClientError> {
        let frame = Frame::new("put")
            .with("id", id)
            .with("path", remote)
            .with("length", data.len() as u64)
            .with("mtime_ns", mtime)
            .with("source", source)
            .with("force", force)
            .with("blake3", blake3::hash(data).to_hex().to_string());
        self.conn
            .queue_frame(&frame.with_body_len(data.len() as u64))?;
        self.conn.write_body(data).await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_stream(
        &mut self,
        mut file: std::fs::File,
        local: &Path,
        remote: &str,
        length: u64,
        mtime: i64,
        force: bool,
        resume: bool,
        progress: &ProgressBar,
    ) -> Result<Uploaded, ClientError> {
        let id = self.id();
        let meta = file.metadata().map_err(|e| ClientError::local(local, e))?;
        let ask = Frame::new("put")
            .with("id", id)
            .with("path", remote)
            .with("length", length)
            .with("mtime_ns", mtime)
            .with("source", source_id(local, &meta))
            .with("force", force)
            .with("resume", resume);
        self.conn.write_frame(&ask).await?;
        let ready = self.answer().await?;
        let offset = ready
            .get("offset")
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
            .min(length);
        let path = local.to_path_buf();
        let (file, hasher) = tokio::task::spawn_blocking(move || {
            let h = pipe::hash_prefix(&mut file, offset)?;
            Ok::<_, std::io::Error>((file, h))
        })
        .await
        .map_err(|e| ClientError::Other(e.to_string()))?
        .map_err(|e| ClientError::local(&path, e))?;
        resumed(progress, offset, length);
        self.conn.queue_frame(
            &Frame::new("put_data")
                .with("id", id)
                .with_body_len(length - offset),
        )?;
        let (mut chunks, disk) = pipe::reader(file, length - offset, hasher);
        while let Some(chunk) = chunks.recv().await {
            self.conn.write_body(&chunk).await?;
            progress.inc(chunk.len() as u64);
        }
        let hasher = match disk.await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                // The data promised cannot be sent: the connection is unusable.
                return Err(ClientError::local(local, format!("{e}; upload abandoned")));
            }
            Err(e) => return Err(ClientError::Other(e.to_string())),
        };
        let end = Frame::new("put_end")
            .with("id", id)
            .with("blake3", hasher.finalize().to_hex().to_string());
        self.conn.write_frame(&end).await?;
        let r = self.answer().await?;
        uploaded(&r)
    }

    /// Uploads many files on this one connection. Small files are pipelined
    /// (up to [`WINDOW`] in flight); larger ones stream one at a time.
    /// Returns how many were uploaded; stops at the first error.
    pub async fn put_many(
        &mut self,
        files: &[(PathBuf, String)],
        force: bool,
        resume: bool,
        progress: &ProgressBar,
    ) -> Result<usize, ClientError> {
        let mut in_flight: std::collections::VecDeque<u64> = Default::default();
        let mut done = 0;
        for (local, remote) in files {
            let meta = std::fs::metadata(local).map_err(|e| ClientError::local(local, e))?;
            if meta.len() > MAX_INLINE {
                while let Some(len) = in_flight.pop_front() {
                    self.conn.flush().await?;
                    self.answer().await?;
                    progress.inc(len);
                    done += 1;
                }
                self.put_file(local, remote, force, resume, progress)
                    .await?;
                done += 1;
                continue;
            }
            let data = std::fs::read(local).map_err(|e| ClientError::local(local, e))?;
            let id = self.id();
            self.send_inline(
                id,
                remote,
                &data,
                mtime_ns(&meta),
                &source_id(local, &meta),
                force,
            )
            .await?;
            in_flight.push_back(data.len() as u64);
            if in_flight.len() >= WINDOW {
                self.conn.flush().await?;
                self.answer().await?;
                progress.inc(in_flight.pop_front().unwrap_or(0));
                done += 1;
            }
        }
        self.conn.flush().await?;
        while let Some(len) = in_flight.pop_front() {
            self.answer().await?;
            progress.inc(len);
            done += 1;
        }
        Ok(done)
    }

    /// Downloads a file to `local`, through `local.part`, resuming an earlier
    /// interrupted download of the same remote version unless `resume` is off.
    /// Returns the number of bytes in the file.
    pub async fn get_file(
        &mut self,
        remote: &str,
        local: &Path,
        resume: bool,
        progress: &ProgressBar,
    ) -> Result<u64, ClientError> {
        match self.get_once(remote, local, resume, progress).await {
            Err(e) if e.code() == Some("checksum_mismatch") && resume => {
                progress.set_position(0);
                self.get_once(remote, local, false, progress).await
            }
            other => other,
        }
    }

    async fn get_once(
        &mut self,
        remote: &str,
        local: &Path,
        resume: bool,
        progress: &ProgressBar,
    ) -> Result<u64, ClientError> {
        // Said before asking the server, and about the folder the user
        // named, not the `.part` files made in it.
        if let Some(folder) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !folder.is_dir() {
                return Err(ClientError::local(
                    folder,
                    "no such folder (a download goes into a folder that exists)",
                ));
            }
        }
        let part = part_path(local, ".part");
        let meta_path = part_path(local, ".part.sockit");
        let err = |p: &Path| {
            let p = p.to_path_buf();
            move |e: std::io::Error| ClientError::local(&p, e)
        };
        // What an earlier attempt left: how much, and of which version.
        let mut ask = Frame::new("get").with("path", remote);
        if resume {
            if let (Ok(m), Ok(info)) = (std::fs::metadata(&part), std::fs::read(&meta_path)) {
                if let Ok(info) = serde_json::from_slice::<PartInfo>(&info) {
                    if info.path == remote {
                        ask = ask
                            .with("offset", m.len())
                            .with("length", info.length)
                            .with("mtime_ns", info.mtime_ns);
                    }
                }
            }
        }
        let header = self.call(ask).await?;
        let length = header.get("length").and_then(|v| v.as_u64()).unwrap_or(0);
        let offset = header.get("offset").and_then(|v| v.as_u64()).unwrap_or(0);
        let mtime = header.get("mtime_ns").and_then(|v| v.as_i64()).unwrap_or(0);
        if header.kind() != "file" || offset + header.body_len() != length {
            return Err(ClientError::Other(
                "the server's answer to get is malformed".into(),
            ));
        }
        let info = PartInfo {
            path: remote.to_string(),
            length,
            mtime_ns: mtime,
        };
        std::fs::write(&meta_path, serde_json::to_vec(&info).unwrap_or_default())
            .map_err(err(&meta_path))?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(err(&part))?;
        file.set_len(offset).map_err(err(&part))?;
        let hasher = {
            let part2 = part.clone();
            tokio::task::spawn_blocking(move || {
                let h = pipe::hash_prefix(&mut file, offset)?;
                Ok::<_, std::io::Error>((file, h))
            })
            .await
            .map_err(|e| ClientError::Other(e.to_string()))?
            .map_err(err(&part2))?
        };
        let (file, hasher) = hasher;
        progress.set_length(length);
        resumed(progress, offset, length);
        let (tx, disk) = pipe::writer(file, hasher);
        let mut failed = None;
        loop {
            match self.conn.read_body_chunk().await {
                Ok(Some(chunk)) => {
                    let n = chunk.len() as u64;
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                    progress.inc(n);
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let disk = disk.await.map_err(|e| ClientError::Other(e.to_string()))?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        let (file, hasher, _) = disk.map_err(err(&part))?;
        let end = self.answer().await?;
        let expected = end.str("blake3").unwrap_or_default().to_string();
        if end.kind() != "file_end" || !hasher.finalize().to_hex().eq_ignore_ascii_case(&expected) {
            drop(file);
            let _ = std::fs::remove_file(&part);
            let _ = std::fs::remove_file(&meta_path);
            return Err(ClientError::Remote {
                code: "checksum_mismatch".into(),
                message: "checksum mismatch: the data received does not match the server's BLAKE3 hash; nothing was saved"
                    .into(),
            });
        }
        let (part2, local2) = (part.clone(), local.to_path_buf());
        tokio::task::spawn_blocking(move || {
            if mtime > 0 {
                // Keep the server's modification time, as scp -p does.
                file.set_modified(UNIX_EPOCH + Duration::from_nanos(mtime as u64))?;
            }
            file.sync_all()?;
            drop(file);
            std::fs::rename(&part2, &local2)?;
            let dir = local2
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::File::open(dir)?.sync_all()
        })
        .await
        .map_err(|e| ClientError::Other(e.to_string()))?
        .map_err(err(local))?;
        let _ = std::fs::remove_file(&meta_path);
        Ok(length)
    }
}

/// What a download in progress records beside `LOCAL.part`, so a later
/// attempt resumes only from the same remote version.
#[derive(Debug, Serialize, Deserialize)]
struct PartInfo {
    path: String,
    length: u64,
    mtime_ns: i64,
}

/// `local` with a suffix added to its file name.
pub fn part_path(local: &Path, suffix: &str) -> PathBuf {
    let mut name = local.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    local.with_file_name(name)
}

fn uploaded(r: &Frame) -> Result<Uploaded, ClientError> {
    if r.kind() != "put_ok" {
        return Err(ClientError::Other(format!(
            "unexpected answer to put: {}",
            r.kind()
        )));
    }
    r.decode::<Uploaded>()
        .map_err(|e| ClientError::Other(format!("bad put_ok: {e}")))
}

/// True for listing entries that are folders.
pub fn is_dir(e: &Entry) -> bool {
    e.kind == Kind::Dir
}

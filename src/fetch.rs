//! `sockit fetch`: the HTTP client, for downloading over HTTP/1.1 and HTTP/2,
//! plain or TLS.
//!
//! Built on reqwest with rustls (the *ring* provider) and the platform's root
//! store, plus any CA given with `--cacert`. HTTP/2 is negotiated by ALPN over
//! TLS; on plain `http://` it is used only with `--http2-prior-knowledge`.
//! Redirects are followed up to a bound.
//!
//! The body is streamed, never held whole in memory: to stdout, or to a file
//! written the way `sockit get` writes one. Into `FILE.part` beside it, then
//! fsync, rename over `FILE`, fsync the folder, so `FILE` is never half a
//! download. An interrupted download leaves `FILE.part` and a small JSON
//! sidecar, `FILE.part.sockit`, holding the URL and the validator (strong
//! ETag, else Last-Modified) of what is in the part. `--continue` then asks
//! for the rest with `Range` and `If-Range`: a 206 from the right offset is
//! appended, a 200 (no range support, or the file changed) starts over, a 416
//! means the part is already whole.
//!
//! Every failure is one [`FetchError`], one line for the user: the reqwest
//! error's source chain is walked to say what actually went wrong (unknown
//! host, refused connection, untrusted certificate, which timeout) instead of
//! "error sending request".

use std::future::Future;
use std::io::{self, IsTerminal, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE,
};
use reqwest::{Client, Response, StatusCode, Url, Version};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::time::Instant;
use tracing::debug;

use crate::store::path::escape_for_terminal;

/// Redirects followed before giving up.
pub const DEFAULT_MAX_REDIRECTS: usize = 10;
/// Time allowed to open the TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence from the server, waiting for the answer or within the
/// body, before the transfer is called stalled.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// What we call ourselves.
pub const USER_AGENT: &str = concat!("sockit/", env!("CARGO_PKG_VERSION"));
/// Bytes gathered before each write to the output file: bulk writes, few
/// trips to the blocking pool.
const FILE_BUFFER: usize = 256 * 1024;

/// Everything that can go wrong, each a one-line message for the user.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL does not parse.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// Not http or https (given, or redirected to).
    #[error("unsupported URL scheme {scheme:?} in {url}: sockit fetch speaks http and https")]
    UnsupportedScheme { scheme: String, url: String },
    /// A `-H` that is not `Name: value`.
    #[error("bad header {0:?}: expected 'Name: value'")]
    BadHeader(String),
    /// The `--cacert` file is unreadable or holds no PEM certificate.
    #[error("--cacert {path}: {reason}")]
    CaCert { path: String, reason: String },
    /// The HTTP client could not be set up (no usable root store, say).
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// Options that do not go together.
    #[error("{0}")]
    Usage(String),
    /// The final answer is not a success: an error status, or a redirect
    /// with nowhere to go.
    #[error("HTTP {status}: {url}")]
    Status { status: String, url: String },
    /// More redirects than allowed (a loop, typically).
    #[error("too many redirects (more than {max}) starting from {url}")]
    TooManyRedirects { max: usize, url: String },
    /// DNS said no.
    #[error("cannot resolve host {host}{detail}")]
    Dns { host: String, detail: String },
    /// Nothing listens at the address.
    #[error("connection refused by {0}")]
    Refused(String),
    /// The TCP connection did not open within `--connect-timeout`.
    #[error("cannot connect to {addr}: no answer within {after} (--connect-timeout)")]
    ConnectTimeout { addr: String, after: String },
    /// Any other failure to connect.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The TLS handshake failed (an untrusted certificate, typically).
    #[error("TLS handshake with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    /// The server accepted the request and then said nothing.
    #[error("no answer from {host} within {after} (--idle-timeout)")]
    NoResponse { host: String, after: String },
    /// The body stopped flowing.
    #[error("the transfer from {host} stalled: nothing received for {after} after {received} bytes (--idle-timeout)")]
    Stalled {
        host: String,
        after: String,
        received: u64,
    },
    /// `--timeout` ran out.
    #[error("timed out after {after} (--timeout) fetching {url}")]
    TimedOut { after: String, url: String },
    /// The connection broke in the middle of the body.
    #[error("the connection to {host} broke after {received} bytes: {reason}")]
    Broken {
        host: String,
        received: u64,
        reason: String,
    },
    /// The body ended before the length the server announced.
    #[error("the body from {host} ended after {got} of {expected} bytes")]
    Truncated {
        host: String,
        got: u64,
        expected: u64,
    },
    /// A 206 that does not continue where the part ends; nothing was written.
    #[error("the server's Content-Range {got:?} does not continue the download at byte {expected}; nothing was written (run without -c to start over)")]
    BadContentRange { got: String, expected: u64 },
    /// Any other request failure.
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    /// Writing or renaming the output file.
    #[error("{}: {error}", path.display())]
    Local { path: PathBuf, error: io::Error },
    /// Writing to stdout.
    #[error("writing to stdout: {0}")]
    Stdout(io::Error),
}

/// Where the body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Streamed to stdout as it arrives.
    Stdout,
    /// Saved atomically through `FILE.part`.
    File(PathBuf),
}

impl Output {
    /// `-o FILE`: none or `-` is stdout.
    pub fn from_arg(arg: Option<PathBuf>) -> Output {
        match arg {
            Some(p) if p.as_os_str() != "-" => Output::File(p),
            _ => Output::Stdout,
        }
    }
}

/// What `sockit fetch` was asked to do.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The URL, as typed.
    pub url: String,
    /// Stdout or a file.
    pub output: Output,
    /// Resume from `FILE.part` (`-c`).
    pub resume: bool,
    /// Send HEAD and print the response head instead of a body (`-I`).
    pub head: bool,
    /// Extra request headers, each `Name: value`.
    pub headers: Vec<String>,
    /// Redirects followed at most.
    pub max_redirects: usize,
    /// Limit on opening the TCP connection.
    pub connect_timeout: Duration,
    /// Limit on the whole transfer, redirects and body included.
    pub timeout: Option<Duration>,
    /// Longest silence from the server.
    pub idle_timeout: Duration,
    /// A PEM file of CA certificates trusted on top of the platform's.
    pub cacert: Option<PathBuf>,
    /// HTTP/2 without negotiation on plain http (h2c).
    pub http2_prior_knowledge: bool,
    /// No progress bar, no summary.
    pub quiet: bool,
}

impl FetchOptions {
    /// The defaults for `url`, to stdout.
    pub fn new(url: impl Into<String>) -> FetchOptions {
        FetchOptions {
            url: url.into(),
            output: Output::Stdout,
            resume: false,
            head: false,
            headers: Vec::new(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            cacert: None,
            http2_prior_knowledge: false,
            quiet: false,
        }
    }
}

/// What a successful fetch did.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The URL that answered, after redirects.
    pub url: Url,
    /// The final status (200, 206, or 416 for a part that was already whole).
    pub status: StatusCode,
    /// HTTP/1.1 or HTTP/2.
    pub version: Version,
    /// Body bytes received in this run.
    pub received: u64,
    /// Length of the saved file (or bytes written to stdout).
    pub length: u64,
    /// Bytes kept from an earlier attempt (`-c`).
    pub resumed_from: u64,
}

/// `sockit fetch`: fetches, then says what it saved (unless quiet).
pub async fn run(opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let done = fetch(opts).await?;
    if let (Output::File(path), false, false) = (&opts.output, opts.quiet, opts.head) {
        let resumed = match done.resumed_from {
            0 => String::new(),
            n => format!(", resumed at byte {n}"),
        };
        eprintln!(
            "{} ({} bytes, {}{resumed})",
            escape_for_terminal(&path.to_string_lossy()),
            done.length,
            version_name(done.version),
        );
    }
    Ok(done)
}

/// Fetches `opts.url` to `opts.output`.
pub async fn fetch(opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let url = parse_url(&opts.url)?;
    if opts.resume && opts.output == Output::Stdout {
        return Err(FetchError::Usage(
            "--continue needs -o FILE: there is nothing to resume on stdout".into(),
        ));
    }
    let session = Session {
        client: build_client(opts)?,
        headers: parse_headers(&opts.headers)?,
        deadline: opts.timeout.map(|t| Instant::now() + t),
        url,
        opts,
    };
    if opts.head {
        return session.head().await;
    }
    match &opts.output {
        Output::Stdout => session.to_stdout().await,
        Output::File(path) => session.to_file(path).await,
    }
}

/// Parses the URL and checks its scheme, with a hint for a missing one.
fn parse_url(raw: &str) -> Result<Url, FetchError> {
    let url = Url::parse(raw).map_err(|e| {
        let hint = match raw.contains("://") {
            true => String::new(),
            false => format!(" (did you mean http://{raw}?)"),
        };
        FetchError::BadUrl {
            url: raw.to_string(),
            reason: format!("{e}{hint}"),
        }
    })?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "http" | "https" => Err(FetchError::BadUrl {
            url: raw.to_string(),
            reason: "no host".into(),
        }),
        other => Err(FetchError::UnsupportedScheme {
            scheme: other.to_string(),
            url: shown(&url),
        }),
    }
}

/// `-H 'Name: value'` lines as a header map.
fn parse_headers(lines: &[String]) -> Result<HeaderMap, FetchError> {
    let mut map = HeaderMap::new();
    for line in lines {
        let bad = || FetchError::BadHeader(line.clone());
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        map.append(name, value);
    }
    Ok(map)
}

fn build_client(opts: &FetchOptions) -> Result<Client, FetchError> {
    // reqwest is built without a crypto provider of its own; ours is ring.
    // Installing fails only when one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::limited(opts.max_redirects))
        .connect_timeout(opts.connect_timeout)
        .read_timeout(opts.idle_timeout)
        .tcp_nodelay(true);
    if opts.http2_prior_knowledge {
        builder = builder.http2_prior_knowledge();
    }
    if let Some(path) = &opts.cacert {
        let err = |reason: String| FetchError::CaCert {
            path: escape_for_terminal(&path.to_string_lossy()),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| err(format!("not a PEM certificate file ({e})")))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate in it".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| FetchError::Client(innermost(&e)))
}

/// What a partial download records beside `FILE.part`: which URL, and which
/// version of it, the bytes in the part came from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PartInfo {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    /// The full length, when the server said.
    length: Option<u64>,
}

impl PartInfo {
    fn from_response(url: &Url, resp: &Response, length: Option<u64>) -> PartInfo {
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(String::from)
        };
        PartInfo {
            url: url.to_string(),
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
            length,
        }
    }

    /// The `If-Range` validator: a strong ETag, else the Last-Modified date
    /// (a weak ETag may not be used there).
    fn if_range(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }
}

/// A parsed `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ContentRange {
    start: u64,
    end: u64,
    total: Option<u64>,
}

fn parse_content_range(v: &str) -> Option<ContentRange> {
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (start <= end && total.map_or(true, |t| end < t)).then_some(ContentRange { start, end, total })
}

/// The TOTAL of a 416's `Content-Range: bytes */TOTAL`.
fn unsatisfied_total(v: &str) -> Option<u64> {
    v.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

/// One fetch: the client, the request's fixed parts, and the deadline.
struct Session<'a> {
    client: Client,
    url: Url,
    headers: HeaderMap,
    /// When `--timeout` runs out.
    deadline: Option<Instant>,
    opts: &'a FetchOptions,
}

/// What resuming from a part turned into.
enum Resume {
    /// A 206 from the right offset: append.
    Append(Response, ContentRange),
    /// The whole body from byte 0.
    Whole(Response),
    /// The part is already the whole file.
    Complete(Response),
}

impl Session<'_> {
    async fn send(
        &self,
        method: reqwest::Method,
        range: Option<(u64, Option<&str>)>,
    ) -> Result<Response, FetchError> {
        let mut req = self
            .client
            .request(method, self.url.clone())
            .headers(self.headers.clone());
        if let Some((from, validator)) = range {
            req = req.header(RANGE, format!("bytes={from}-"));
            if let Some(v) = validator {
                req = req.header(IF_RANGE, v);
            }
        }
        self.within(req.send())
            .await?
            .map_err(|e| self.explain(e, None))
    }

    /// Runs `f` under the `--timeout` deadline.
    async fn within<F: Future>(&self, f: F) -> Result<F::Output, FetchError> {
        match self.deadline {
            None => Ok(f.await),
            Some(d) => tokio::time::timeout_at(d, f)
                .await
                .map_err(|_| FetchError::TimedOut {
                    after: humantime::format_duration(self.opts.timeout.unwrap_or_default())
                        .to_string(),
                    url: shown(&self.url),
                }),
        }
    }

    /// An error unless the final status is a success (2xx).
    fn check_status(resp: &Response) -> Result<(), FetchError> {
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        Err(FetchError::Status {
            status: match status.canonical_reason() {
                Some(reason) => format!("{} {reason}", status.as_u16()),
                None => status.as_u16().to_string(),
            },
            url: shown(resp.url()),
        })
    }

    /// `-I`: the response head on stdout, as `curl -I` prints it.
    async fn head(&self) -> Result<Fetched, FetchError> {
        let resp = self.send(reqwest::Method::HEAD, None).await?;
        let mut text = format!("{} {}\r\n", version_name(resp.version()), resp.status());
        for (name, value) in resp.headers() {
            text.push_str(&format!(
                "{name}: {}\r\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        text.push_str("\r\n");
        let mut out = tokio::io::stdout();
        out.write_all(text.as_bytes())
            .await
            .map_err(FetchError::Stdout)?;
        out.flush().await.map_err(FetchError::Stdout)?;
        Self::check_status(&resp)?;
        Ok(Fetched {
            url: resp.url().clone(),
            status: resp.status(),
            version: resp.version(),
            received: 0,
            length: 0,
            resumed_from: 0,
        })
    }

    async fn to_stdout(&self) -> Result<Fetched, FetchError> {
        let mut resp = self.send(reqwest::Method::GET, None).await?;
        Self::check_status(&resp)?;
        let expected = resp.content_length();
        let mut out = tokio::io::stdout();
        let mut received = 0;
        let pumped = self
            .pump(&mut resp, &mut out, &mut received, &ProgressBar::hidden())
            .await;
        let flushed = out.flush().await;
        pumped?;
        flushed.map_err(FetchError::Stdout)?;
        Self::check_length(&resp, received, expected)?;
        Ok(Fetched {
            url: resp.url().clone(),
            status: resp.status(),
            version: resp.version(),
            received,
            length: received,
            resumed_from: 0,
        })
    }

    /// Streams the body into `out` until its end, counting into `received`
    /// so the caller knows how much arrived even when it fails.
    async fn pump<W: AsyncWrite + Unpin>(
        &self,
        resp: &mut Response,
        out: &mut W,
        received: &mut u64,
        bar: &ProgressBar,
    ) -> Result<(), FetchError> {
        loop {
            let chunk = self
                .within(resp.chunk())
                .await?
                .map_err(|e| self.explain(e, Some(*received)))?;
            let Some(chunk) = chunk else {
                return Ok(());
            };
            out.write_all(&chunk)
                .await
                .map_err(|e| match &self.opts.output {
                    Output::File(path) => FetchError::Local {
                        path: part_path(path, ".part"),
                        error: e,
                    },
                    Output::Stdout => FetchError::Stdout(e),
                })?;
            *received += chunk.len() as u64;
            bar.inc(chunk.len() as u64);
        }
    }

    /// An error when the body's length is not the announced one.
    fn check_length(resp: &Response, got: u64, expected: Option<u64>) -> Result<(), FetchError> {
        match expected {
            Some(expected) if expected != got => Err(FetchError::Truncated {
                host: host_port(resp.url()),
                got,
                expected,
            }),
            _ => Ok(()),
        }
    }

    /// Sends the resuming request for a part of `offset` bytes and sorts out
    /// the answer; falls back to a whole download when the part cannot be
    /// continued.
    async fn resume(
        &self,
        offset: u64,
        info: &PartInfo,
        notice: impl Fn(&str),
    ) -> Result<Resume, FetchError> {
        let resp = self
            .send(reqwest::Method::GET, Some((offset, info.if_range())))
            .await?;
        let range = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let raw = range.unwrap_or_default();
                let cr = parse_content_range(&raw)
                    .filter(|cr| cr.start == offset)
                    .ok_or(FetchError::BadContentRange {
                        got: raw,
                        expected: offset,
                    })?;
                // Without a validator, a new total is how a change shows.
                match (cr.total, info.length) {
                    (Some(now), Some(before)) if now != before => {}
                    _ => return Ok(Resume::Append(resp, cr)),
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                match range.as_deref().and_then(unsatisfied_total) {
                    Some(total) if total != offset => {}
                    _ => return Ok(Resume::Complete(resp)),
                }
            }
            s if s.is_success() => {
                notice("the server sent the whole file (it changed, or it cannot resume); starting over");
                return Ok(Resume::Whole(resp));
            }
            _ => return Self::check_status(&resp).map(|()| Resume::Whole(resp)),
        }
        // Here the server's copy is not the one the part was cut from.
        drop(resp);
        notice("the file on the server has changed; starting over");
        let resp = self.send(reqwest::Method::GET, None).await?;
        Ok(Resume::Whole(resp))
    }

    async fn to_file(&self, path: &Path) -> Result<Fetched, FetchError> {
        let local = |p: &Path| {
            let p = p.to_path_buf();
            move |error| FetchError::Local { path: p, error }
        };
        if path.file_name().is_none() || path.is_dir() {
            return Err(FetchError::Local {
                path: path.to_path_buf(),
                error: io::Error::other("is a folder, or not a file name (use -o FILE)"),
            });
        }
        let part = part_path(path, ".part");
        let side = part_path(path, ".part.sockit");
        let shown_path = escape_for_terminal(&path.to_string_lossy());
        let notice = |what: &str| eprintln!("sockit: {shown_path}: {what}");

        // What an earlier attempt left, if we are to continue it.
        let mut have = 0;
        let mut info = PartInfo::default();
        if self.opts.resume {
            if let Ok(meta) = tokio::fs::metadata(&part).await {
                let saved = tokio::fs::read(&side)
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<PartInfo>(&b).ok());
                match saved {
                    // Bytes of another URL are no start for this one.
                    Some(s) if s.url != self.url.as_str() => {
                        notice("the partial file is of another URL; starting over")
                    }
                    // No sidecar (another tool's part): resume as wget -c
                    // does, trusting the server's range.
                    s => {
                        have = meta.len();
                        info = s.unwrap_or_default();
                    }
                }
            }
        }

        let (mut resp, start, total) = if have > 0 {
            match self.resume(have, &info, notice).await? {
                Resume::Append(resp, cr) => (resp, have, cr.total.or(Some(cr.end + 1))),
                Resume::Whole(resp) => {
                    let total = resp.content_length();
                    (resp, 0, total)
                }
                Resume::Complete(resp) => {
                    let file = tokio::fs::OpenOptions::new()
                        .write(true)
                        .open(&part)
                        .await
                        .map_err(local(&part))?;
                    publish(file, &part, path, &side).await?;
                    return Ok(Fetched {
                        url: resp.url().clone(),
                        status: resp.status(),
                        version: resp.version(),
                        received: 0,
                        length: have,
                        resumed_from: have,
                    });
                }
            }
        } else {
            let resp = self.send(reqwest::Method::GET, None).await?;
            let total = resp.content_length();
            (resp, 0, total)
        };
        Self::check_status(&resp)?;
        // Only a 206 we asked for continues; any other success is the whole body.
        if resp.status() == StatusCode::PARTIAL_CONTENT && start == 0 {
            let raw = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if parse_content_range(&raw).map_or(true, |cr| cr.start != 0) {
                return Err(FetchError::BadContentRange {
                    got: raw,
                    expected: 0,
                });
            }
        }

        let saved = PartInfo::from_response(&self.url, &resp, total);
        tokio::fs::write(&side, serde_json::to_vec(&saved).unwrap_or_default())
            .await
            .map_err(local(&side))?;
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(start == 0)
            .open(&part)
            .await
            .map_err(local(&part))?;
        file.set_len(start).await.map_err(local(&part))?;
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(local(&part))?;
        let mut out = BufWriter::with_capacity(FILE_BUFFER, file);

        let bar = progress(total, &shown_path, self.opts.quiet);
        bar.set_position(start);
        let mut received = 0;
        let pumped = self.pump(&mut resp, &mut out, &mut received, &bar).await;
        bar.finish_and_clear();
        // Keep every byte that arrived, even on failure: -c continues there.
        let flushed = out.flush().await.map_err(local(&part));
        pumped?;
        flushed?;
        Self::check_length(&resp, start + received, total)?;
        publish(out.into_inner(), &part, path, &side).await?;
        Ok(Fetched {
            url: resp.url().clone(),
            status: resp.status(),
            version: resp.version(),
            received,
            length: start + received,
            resumed_from: start,
        })
    }

    /// Turns a reqwest error into what happened, from its source chain.
    /// `received` is `Some` once the body has started.
    fn explain(&self, e: reqwest::Error, received: Option<u64>) -> FetchError {
        debug!(error = ?e, "request failed");
        let url = e.url().cloned().unwrap_or_else(|| self.url.clone());
        let host = host_port(&url);
        let secs = |d: Duration| humantime::format_duration(d).to_string();
        if e.is_redirect() && chain(&e).any(|s| s.to_string() == "too many redirects") {
            return FetchError::TooManyRedirects {
                max: self.opts.max_redirects,
                url: shown(&self.url),
            };
        }
        if e.is_builder() && url.scheme() != "http" && url.scheme() != "https" {
            return FetchError::UnsupportedScheme {
                scheme: url.scheme().to_string(),
                url: shown(&url),
            };
        }
        if e.is_dns() {
            let detail = innermost(&e);
            let detail = detail
                .strip_prefix("failed to lookup address information: ")
                .unwrap_or(&detail);
            return FetchError::Dns {
                host: url.host_str().unwrap_or_default().to_string(),
                detail: format!(" ({detail})"),
            };
        }
        if let Some(tls) = chain(&e).find_map(crate::tls::client::rustls_error) {
            return FetchError::Tls {
                host,
                reason: crate::tls::describe(tls, "--cacert"),
            };
        }
        if e.is_timeout() {
            return match (e.is_connect(), received) {
                (true, _) => FetchError::ConnectTimeout {
                    addr: host,
                    after: secs(self.opts.connect_timeout),
                },
                (false, None) => FetchError::NoResponse {
                    host,
                    after: secs(self.opts.idle_timeout),
                },
                (false, Some(received)) => FetchError::Stalled {
                    host,
                    after: secs(self.opts.idle_timeout),
                    received,
                },
            };
        }
        let io_kind = chain(&e).find_map(io_kind);
        if e.is_connect() {
            return match io_kind {
                Some(io::ErrorKind::ConnectionRefused) => FetchError::Refused(host),
                _ => FetchError::Connect {
                    addr: host,
                    reason: innermost(&e),
                },
            };
        }
        match received {
            Some(received) => FetchError::Broken {
                host,
                received,
                reason: innermost(&e),
            },
            None => FetchError::Request {
                url: shown(&url),
                reason: innermost(&e),
            },
        }
    }
}

/// fsyncs the part, renames it over the target, fsyncs the folder, and drops
/// the sidecar.
async fn publish(
    file: tokio::fs::File,
    part: &Path,
    target: &Path,
    side: &Path,
) -> Result<(), FetchError> {
    let local = |p: &Path| {
        let p = p.to_path_buf();
        move |error| FetchError::Local { path: p, error }
    };
    file.sync_all().await.map_err(local(part))?;
    drop(file);
    tokio::fs::rename(part, target)
        .await
        .map_err(local(target))?;
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let d = tokio::fs::File::open(dir).await.map_err(local(dir))?;
    d.sync_all().await.map_err(local(dir))?;
    // A stale sidecar is harmless (it has no part to describe), so a failure
    // here does not fail the download.
    let _ = tokio::fs::remove_file(side).await;
    Ok(())
}

/// `local` with a suffix added to its file name.
fn part_path(local: &Path, suffix: &str) -> PathBuf {
    let mut name = local.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    local.with_file_name(name)
}

/// A progress bar on stderr when it is a terminal and not quiet, else
/// nothing; a spinner when the length is unknown.
fn progress(total: Option<u64>, label: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{msg:20!} {bar:30.cyan/blue} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{msg:20!} {spinner} {bytes:>10} {bytes_per_sec:>12} {elapsed}",
        ),
    };
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(label.to_string());
    bar
}

/// The URL without its password, for messages.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
}

/// `host:port` of a URL, the port made explicit.
fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

/// An error and its sources, outermost first.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// The deepest message in the chain: the one that says what happened
/// ("connection reset by peer"), not what was being done.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    chain(e)
        .last()
        .map(|s| s.to_string())
        .unwrap_or_else(|| e.to_string())
}

/// The kind of the innermost `io::Error` wrapped in `e`, if `e` is one.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut io = e.downcast_ref::<io::Error>()?;
    while let Some(inner) = io.get_ref().and_then(|i| i.downcast_ref::<io::Error>()) {
        io = inner;
    }
    Some(io.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse_and_bad_ones_do_not() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some(ContentRange {
                start: 100,
                end: 199,
                total: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("bytes 0-9/*"),
            Some(ContentRange {
                start: 0,
                end: 9,
                total: None
            })
        );
        for bad in [
            "",
            "bytes */1000",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes x-1/2",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
        assert_eq!(unsatisfied_total("bytes */1000"), Some(1000));
        assert_eq!(unsatisfied_total("bytes 0-1/2"), None);
    }

    #[test]
    fn if_range_prefers_a_strong_etag() {
        let mut info = PartInfo {
            etag: Some("\"v1\"".into()),
            last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            ..PartInfo::default()
        };
        assert_eq!(info.if_range(), Some("\"v1\""));
        info.etag = Some("W/\"v1\"".into());
        assert_eq!(info.if_range(), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        info.last_modified = None;
        assert_eq!(info.if_range(), None);
    }

    #[test]
    fn urls_are_checked() {
        assert!(parse_url("https://example.com/a?b").is_ok());
        let e = parse_url("example.com/file").unwrap_err().to_string();
        assert!(e.contains("did you mean http://example.com/file"), "{e}");
        let e = parse_url("ftp://example.com/").unwrap_err().to_string();
        assert!(e.starts_with("unsupported URL scheme \"ftp\""), "{e}");
        assert!(parse_url("http://").is_err());
        assert!(shown(&Url::parse("http://u:secret@h/").unwrap()).contains("u:***@"));
    }

    #[test]
    fn headers_parse() {
        let h = parse_headers(&["X-A: 1".into(), "Accept:text/plain ".into()]).unwrap();
        assert_eq!(h["x-a"], "1");
        assert_eq!(h["accept"], "text/plain");
        assert!(parse_headers(&["no colon".into()]).is_err());
        assert!(parse_headers(&["bad name: x".into()]).is_err());
    }

    #[test]
    fn part_paths_sit_beside_the_file() {
        assert_eq!(
            part_path(Path::new("dir/a.iso"), ".part"),
            Path::new("dir/a.iso.part")
        );
    }
}

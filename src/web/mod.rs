//! The HTTP port: the static site server (`sockit web`), the file store in
//! the browser (`/app/`) and its JSON API (`/api/`, see `docs/http-api.md`).
//!
//! HTTP is parsed by hyper (HTTP/1.1 and HTTP/2, one connection per task on
//! the shared [`crate::server`] runtime, which supplies the connection limit
//! and graceful shutdown). This module adds what hyper leaves to its user: a
//! header read timeout (slow-loris), an idle timeout between requests,
//! security headers on every response and one access-log line per request.
//!
//! With TLS (`web.tls`, `sockit web --tls`) the port speaks HTTPS: ALPN
//! picks HTTP/2 or HTTP/1.1, every response carries `Strict-Transport-
//! Security`, and a plain HTTP request that comes to it anyway is answered
//! with a `308` to its `https://` URL.
//!
//! - [`site`]: static files from a folder: conditional requests, ranges,
//!   compression, listings, a small-file cache.
//! - [`api`]: the JSON API over the accounts and the file store.
//! - [`app`]: the browser app's embedded files.
//! - [`upgrade`]: the WebSocket opening handshake, for the chat socket.
//! - [`user_content`]: how the bytes users uploaded are served (a sandbox
//!   policy, a type that cannot script, their digests), by every path that
//!   serves them.

pub mod api;
pub mod app;
pub mod body;
pub mod range;
pub mod sealed;
pub mod site;
pub mod upgrade;
pub mod user_content;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

use crate::server::{ConnCtx, Handler};

/// Default address of the web port.
pub const DEFAULT_WEB_ADDR: &str = "127.0.0.1:8080";
/// Default time a client has to send a request's headers.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on a request's header block, in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// The static site's default policy: everything from this origin only (so
/// no inline script or style), no plugins, never framed.
pub const DEFAULT_CSP: &str =
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// The policy of the app and the API: the same, spelled out, with `data:`
/// images.
pub const APP_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; media-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Settings of one web port.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time allowed for a request's headers to arrive.
    pub header_timeout: Duration,
    /// Largest header block accepted (larger gets 431).
    pub max_header_bytes: usize,
    /// `Content-Security-Policy` of the static site.
    pub csp: String,
    /// The port speaks TLS (cookies get `Secure`).
    pub tls: bool,
    /// A request body must bring at least this many bytes within each
    /// `body_progress_timeout` (0: no minimum), as on the framed port.
    pub body_progress_bytes: usize,
    /// See `body_progress_bytes`.
    pub body_progress_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            csp: DEFAULT_CSP.to_string(),
            tls: false,
            body_progress_bytes: crate::proto::codec::DEFAULT_BODY_PROGRESS_BYTES,
            body_progress_timeout: crate::proto::codec::DEFAULT_BODY_PROGRESS_TIMEOUT,
        }
    }
}

/// Everything one web port serves. Cheap to clone.
#[derive(Clone)]
pub struct Web {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    /// The static site at `/`, if any.
    site: Option<site::Site>,
    /// The API at `/api/` (and the app at `/app/`), if accounts run.
    api: Option<axum::Router>,
    /// Pre-built security header values.
    csp_site: HeaderValue,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("settings", &self.inner.settings)
            .field("site", &self.inner.site)
            .field("api", &self.inner.api.is_some())
            .finish()
    }
}

impl Web {
    /// A web port serving `site` at `/` and, when given, the app and the API.
    pub fn new(settings: Settings, site: Option<site::Site>, api: Option<api::Api>) -> Web {
        let csp_site = HeaderValue::from_str(&settings.csp)
            .unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_CSP));
        let api = api.map(|a| a.router(settings.tls));
        Web {
            inner: Arc::new(Inner {
                settings,
                site,
                api,
                csp_site,
            }),
        }
    }

    /// Answers one request.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        // HTTP/2 names the host in `:authority` (hyper puts it in the URI),
        // not in `Host`: copied there, what reads `Host` (the API's
        // same-origin check) works the same on both versions.
        if !req.headers().contains_key(header::HOST) {
            if let Some(host) = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        let access = body::Access::of(&req);
        let path = req.uri().path();
        let is_app = path == "/app" || path.starts_with("/app/");
        let is_api = path == "/api" || path.starts_with("/api/");
        // The app and the API exist only where accounts run; elsewhere
        // their paths belong to the static site like any other.
        let router = self.inner.api.as_ref().filter(|_| is_app || is_api);
        let dynamic = router.is_some();
        let mut response = if let Some(router) = router {
            if path == "/app" {
                redirect("/app/")
            } else if is_app {
                app::serve(&req)
            } else {
                let (bytes, within) = (
                    self.inner.settings.body_progress_bytes,
                    self.inner.settings.body_progress_timeout,
                );
                let mut req = req.map(|b| Body::new(body::ProgressBody::new(b, bytes, within)));
                req.extensions_mut().insert(api::Peer(peer));
                match tower::ServiceExt::oneshot(router.clone(), req).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                }
            }
        } else if let Some(site) = &self.inner.site {
            site.serve(&req).await
        } else {
            site::not_found_page()
        };
        let headers = response.headers_mut();
        // A response that set its own policy keeps it: the sandbox of
        // user content above all ([`user_content::mark`]).
        let csp = if dynamic {
            HeaderValue::from_static(APP_CSP)
        } else {
            self.inner.csp_site.clone()
        };
        headers
            .entry(header::CONTENT_SECURITY_POLICY)
            .or_insert(csp);
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        body::Access::log(access, peer, response)
    }
}

/// A `301` to `location`.
pub(crate) fn redirect(location: &str) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Serves HTTP connections on the shared runtime.
#[derive(Debug, Clone)]
pub struct HttpHandler {
    /// What the port serves.
    pub web: Web,
    /// HTTPS for every connection (ALPN h2 and http/1.1); `None` serves
    /// plain HTTP.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// `Strict-Transport-Security` of every HTTPS response: a year, this host
/// only (the site's other hosts may not speak HTTPS).
pub const HSTS: &str = "max-age=31536000";

/// Which HTTP a connection speaks, as TLS negotiated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    /// Plain TCP, or TLS without ALPN: HTTP/1.1, or HTTP/2 when the client
    /// opens with its preface.
    Either,
    /// ALPN `http/1.1`.
    Http1,
    /// ALPN `h2`.
    Http2,
}

impl Handler for HttpHandler {
    async fn serve(&self, stream: TcpStream, ctx: ConnCtx) {
        let Some(config) = &self.tls else {
            if let Some((io, activity)) = watch(stream, &ctx) {
                self.serve_http(io, activity, &ctx, Speaks::Either).await;
            }
            return;
        };
        let header_timeout = self.web.inner.settings.header_timeout;
        // One byte tells a TLS client from a plain HTTP one that came to
        // the wrong scheme; it is peeked, so it is still there for either.
        let first = tokio::select! {
            first = tokio::time::timeout(header_timeout, first_byte(&stream)) => first,
            _ = ctx.shutdown.cancelled() => return,
        };
        let first = match first {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                debug!(peer = %ctx.peer, "http connection ended: {e}");
                return;
            }
            Err(_) => {
                debug!(peer = %ctx.peer, "no request within the header timeout");
                return;
            }
        };
        let Some((io, activity)) = watch(stream, &ctx) else {
            return;
        };
        if first != crate::tls::HANDSHAKE_RECORD {
            redirect_to_https(io, activity, &self.web.inner.settings, &ctx).await;
            return;
        }
        let handshake = tokio::time::timeout(
            header_timeout,
            tokio_rustls::TlsAcceptor::from(config.clone()).accept(io),
        );
        let tls = tokio::select! {
            tls = handshake => match tls {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(peer = %ctx.peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!(peer = %ctx.peer, "TLS handshake timed out");
                    return;
                }
            },
            _ = ctx.shutdown.cancelled() => return,
        };
        let speaks = match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => Speaks::Http2,
            Some(_) => Speaks::Http1,
            None => Speaks::Either,
        };
        self.serve_http(tls, activity, &ctx, speaks).await;
    }

    /// A `503` saying why, on plain HTTP (an HTTPS client would read it as
    /// a broken handshake: it just sees the close).
    fn refuse_per_address(&self, stream: &TcpStream) {
        if self.tls.is_none() {
            // A fresh socket's send buffer is empty: this small write
            // completes at once, or the client just sees the close.
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
        }
    }
}

/// The answer to a connection over its address's cap
/// (`limits.max_connections_per_address`).
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 64\r\n\
retry-after: 1\r\n\
connection: close\r\n\
\r\n\
too many connections from your address: close one and try again\n";

impl HttpHandler {
    /// Serves HTTP on `io` (plain TCP or TLS) until the connection ends,
    /// idles out or the server shuts down. `activity` is the counter `io`
    /// bumps on every byte moved.
    async fn serve_http<I>(&self, io: I, activity: Arc<AtomicU64>, ctx: &ConnCtx, speaks: Speaks)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let settings = &self.web.inner.settings;
        let web = self.web.clone();
        let peer = ctx.peer;
        let secure = self.tls.is_some();
        let (lease, mut released) = tokio::sync::mpsc::channel::<()>(1);
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let web = web.clone();
            if req.uri().path() == api::CHAT_PATH {
                req.extensions_mut().insert(ConnLease {
                    _held: lease.clone(),
                });
            }
            async move {
                let mut response = web.handle(req, peer).await;
                if secure {
                    response.headers_mut().insert(
                        header::STRICT_TRANSPORT_SECURITY,
                        HeaderValue::from_static(HSTS),
                    );
                }
                Ok::<_, Infallible>(response)
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_timeout)
            .max_buf_size(settings.max_header_bytes.max(8192))
            // A client that sends its request and then shuts down its
            // writing side (curl, `printf ... | nc`) waits for the answer:
            // without this, hyper takes the end of input for the end of the
            // connection and closes without one.
            .half_close(true)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(100)
            .max_header_list_size(settings.max_header_bytes as u32);
        let builder = match speaks {
            Speaks::Either => builder,
            Speaks::Http1 => builder.http1_only(),
            Speaks::Http2 => builder.http2_only(),
        };
        {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(peer = %ctx.peer, "http connection ended: {e}");
                    }
                }
                _ = ctx.shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
                _ = crate::server::idle(&activity, ctx.idle_timeout) => debug!(peer = %ctx.peer, "idle timeout"),
            }
            // The connection (and its service's sender) is dropped here.
        }
        // A WebSocket taken over from this connection holds a lease; the
        // connection's slot lasts until it ends. Without one, at once.
        let _ = released.recv().await;
    }
}

/// Held by what goes on after its HTTP connection on the same socket (a
/// chat WebSocket): the connection's slot in the server's limit, its place
/// in the shutdown tracker and its count in `sockit stats` last until every
/// lease of the connection is dropped. Given to `/api/chat` requests as a
/// request extension.
#[derive(Clone, Debug)]
pub struct ConnLease {
    _held: tokio::sync::mpsc::Sender<()>,
}

/// Wraps the connection's socket to count its traffic; `None` (logged) if
/// it cannot be registered.
fn watch(stream: TcpStream, ctx: &ConnCtx) -> Option<(Watched, Arc<AtomicU64>)> {
    let activity = Arc::new(AtomicU64::new(0));
    match Watched::new(stream, activity.clone(), ctx.counters.clone()) {
        Ok(w) => Some((w, activity)),
        Err(e) => {
            debug!(peer = %ctx.peer, "cannot register the connection: {e}");
            None
        }
    }
}

/// The first byte the client sends, left in the socket; `None` if it
/// closes first.
async fn first_byte(stream: &TcpStream) -> std::io::Result<Option<u8>> {
    let mut byte = [0u8; 1];
    Ok(match stream.peek(&mut byte).await? {
        0 => None,
        _ => Some(byte[0]),
    })
}

/// Answers a plain HTTP request on the HTTPS port with a `308` to the same
/// URL over HTTPS, then closes. hyper parses the request, under the same
/// header timeout and size cap as any other.
async fn redirect_to_https(
    io: Watched,
    activity: Arc<AtomicU64>,
    settings: &Settings,
    ctx: &ConnCtx,
) {
    let peer = ctx.peer;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
        let access = body::Access::of(&req);
        let response = https_redirect(&req);
        Ok::<_, Infallible>(body::Access::log(access, peer, response))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .half_close(true)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(peer = %ctx.peer, "plain http connection on the https port ended: {e}");
            }
        }
        _ = ctx.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        _ = crate::server::idle(&activity, ctx.idle_timeout) => debug!(peer = %ctx.peer, "idle timeout"),
    }
}

/// The answer to a plain HTTP request on the HTTPS port: `308` to
/// `https://<host><path and query>`, or `400` when the request names no
/// host to send the client to.
fn https_redirect<B>(req: &Request<B>) -> Response<Body> {
    let location = https_location(req).and_then(|l| HeaderValue::from_str(&l).ok());
    let mut r = match location {
        Some(location) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
            r.headers_mut().insert(header::LOCATION, location);
            r
        }
        None => {
            let mut r = Response::new(Body::from(
                "This port speaks HTTPS: use https:// (the request had no Host header to redirect with).\n",
            ));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    };
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// `https://` + the request's host (the absolute URI's, else `Host`) + its
/// path and query; `None` without a usable host.
fn https_location<B>(req: &Request<B>) -> Option<String> {
    let authority = match req.uri().authority() {
        Some(a) => a.clone(),
        None => req
            .headers()
            .get(header::HOST)?
            .to_str()
            .ok()?
            .parse::<http::uri::Authority>()
            .ok()?,
    };
    // A user name in the host would be carried into the redirect.
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return None;
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    Some(format!("https://{authority}{target}"))
}

/// The connection's socket, driven through [`AsyncFd`] so that a short read
/// clears the read readiness at once (tokio's `TcpStream` clears it only
/// after a read fails with `EAGAIN`: one wasted system call per request, as
/// hyper reads again after every response). `clear_ready` is race-free:
/// tokio ignores it if a newer readiness event arrived. Every read and write
/// that moves bytes bumps `activity`, for the idle timeout.
struct Watched {
    inner: AsyncFd<std::net::TcpStream>,
    /// Bumped on every read or write that moved bytes.
    activity: Arc<AtomicU64>,
    /// The web port's byte counters (`sockit stats`).
    counters: Arc<crate::server::Counters>,
}

impl Watched {
    fn new(
        stream: TcpStream,
        activity: Arc<AtomicU64>,
        counters: Arc<crate::server::Counters>,
    ) -> std::io::Result<Watched> {
        let std_stream = stream.into_std()?;
        // SAFETY: a std TcpStream owns its descriptor, keeps it open until
        // it is dropped and always reports the same one, as `register`
        // requires.
        let inner = unsafe { AsyncFd::register(std_stream) }?;
        Ok(Watched {
            inner,
            activity,
            counters,
        })
    }

    fn touch(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
    }

    /// One write when the socket is writable, retried after `EAGAIN`.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&std::net::TcpStream) -> std::io::Result<usize>,
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = ready!(self.inner.poll_write_ready(cx))?;
            match guard.try_io(|s| write(s.get_ref())) {
                Ok(Ok(n)) => {
                    if n > 0 {
                        self.touch();
                        self.counters.add_out(n);
                    }
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut guard = ready!(self.inner.poll_read_ready(cx))?;
            // SAFETY: recv writes at most `len` bytes into the unfilled part,
            // and exactly the `n` it reports are then marked initialised.
            let unfilled = unsafe { buf.unfilled_mut() };
            let want = unfilled.len();
            let n = unsafe {
                libc::recv(
                    self.inner.as_raw_fd(),
                    unfilled.as_mut_ptr().cast(),
                    want,
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        continue;
                    }
                    std::io::ErrorKind::Interrupted => continue,
                    _ => return Poll::Ready(Err(e)),
                }
            }
            let n = n as usize;
            // SAFETY: the kernel initialised these `n` bytes.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            if n > 0 {
                self.touch();
                self.counters.add_in(n);
                if n < want {
                    // Drained: the next read waits for a new event instead
                    // of asking the kernel again.
                    guard.clear_ready();
                }
            }
            return Poll::Ready(Ok(()));
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_with(cx, |mut s| s.write(buf))
    }

    /// Buffers that point into a sealed cached file ([`sealed`]) go out with
    /// `sendfile`, without a copy; what comes before one (the response
    /// head) is written first with `MSG_MORE`, so head and body still leave
    /// in the same segments. Everything else is one `writev`.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let from_file = bufs
            .iter()
            .enumerate()
            .find_map(|(i, b)| sealed::lookup(b).map(|at| (i, at)));
        match from_file {
            None => self.poll_write_with(cx, |mut s| s.write_vectored(bufs)),
            Some((0, (fd, offset))) => {
                let len = bufs[0].len();
                self.poll_write_with(cx, |s| {
                    let mut off = offset as libc::off_t;
                    // SAFETY: `fd` is the sealed file `bufs[0]` points into,
                    // open while that buffer is borrowed; `off` is a valid
                    // out-parameter.
                    let n = unsafe { libc::sendfile(s.as_raw_fd(), fd, &mut off, len) };
                    if n < 0 {
                        Err(std::io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                })
            }
            Some((i, _)) => self.poll_write_with(cx, |s| {
                socket2::SockRef::from(s).send_vectored_with_flags(&bufs[..i], libc::MSG_MORE)
            }),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.inner.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn plain_requests_are_sent_to_the_same_url_over_https() {
        let cases = [
            (
                "/a/b?x=1&y=%20",
                Some("example.org:8443"),
                Some("https://example.org:8443/a/b?x=1&y=%20"),
            ),
            ("/", Some("[::1]:8080"), Some("https://[::1]:8080/")),
            (
                "http://other.example/p?q",
                Some("ignored"),
                Some("https://other.example/p?q"),
            ),
            ("*", Some("h"), Some("https://h/")),
            ("/", None, None),
            ("/", Some(""), None),
            ("/", Some("user@evil.example"), None),
            ("/", Some("two words"), None),
        ];
        for (uri, host, want) in cases {
            assert_eq!(
                https_location(&request(uri, host)).as_deref(),
                want,
                "{uri} {host:?}"
            );
        }
        let r = https_redirect(&request("/x", Some("h:1")));
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "https://h:1/x");
        let r = https_redirect(&request("/x", None));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}

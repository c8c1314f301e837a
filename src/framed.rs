//! The framed port (7070): handshake, then dispatch of each message to the
//! service that owns its type.
//!
//! Every connection starts with `hello`; after that, each message type is
//! handled by one arm of [`Session::dispatch`]. Later services (files, chat,
//! exec, stats) add their arms and their names to [`Services`]. Protocol
//! errors are answered with documented error frames; the ones that leave the
//! stream unreadable (`header_too_large`, `bad_header`, `bad_size`) close the
//! connection, the others leave it open.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::tls::Stream;
use tracing::{debug, warn};

use crate::accounts::{AccountError, Accounts, Grant};
use crate::exec::{self, Exec};
use crate::proto::{self, timed, Connection, ErrorCode, Frame, ProtoError};
use crate::server::{ConnCtx, Handler};
use crate::store::{PathError, Store, StoreError};
use crate::{chat, files};

/// Default address of the framed port.
pub const DEFAULT_FRAMED_ADDR: &str = "127.0.0.1:7070";
/// Default time a new connection has to complete the TLS handshake and
/// send `hello`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection waits for its goodbye to be delivered.
const LINGER: Duration = Duration::from_secs(1);
/// Most input read and dropped while lingering.
const LINGER_BYTES: usize = 1 << 20;
/// Server name sent in the hello reply.
pub const SERVER_NAME: &str = concat!("sockit/", env!("CARGO_PKG_VERSION"));

/// Settings of the framed port.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Header and body limits for incoming messages.
    pub limits: proto::Limits,
    /// Time a new connection has, from accept, to complete the TLS
    /// handshake (if any) and send `hello`: one deadline, so that neither
    /// a slow handshake nor messages before `hello` extend it.
    pub handshake_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: proto::Limits::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// The services offered on the framed port, as announced in the hello reply.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// Accounts (register, login, auth); `None` runs without accounts.
    pub accounts: Option<Accounts>,
    /// The file store; needs `accounts`.
    pub store: Option<Store>,
    /// Remote commands (`[exec]`); `None` answers `exec_disabled`.
    pub exec: Option<Exec>,
    /// Host and server statistics; needs `accounts`.
    pub stats: Option<crate::stats::Stats>,
    /// The chat relay; needs `accounts`.
    pub chat: Option<chat::Relay>,
}

impl Services {
    /// Names announced to clients.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = vec!["ping"];
        if self.accounts.is_some() {
            names.push("accounts");
        }
        if self.accounts.is_some() && self.store.is_some() {
            names.push("files");
        }
        if self.accounts.is_some() && self.exec.is_some() {
            names.push("exec");
        }
        if self.accounts.is_some() && self.stats.is_some() {
            names.push("stats");
        }
        if self.accounts.is_some() && self.chat.is_some() {
            names.push("chat");
        }
        names
    }
}

/// Why a request handler stopped: a refusal the client hears about (the
/// session goes on), or a protocol or I/O failure (the session ends).
#[derive(Debug)]
pub enum HandlerError {
    /// Answer the request with this error code and message.
    Refused { code: &'static str, message: String },
    /// The peer broke a service's message sequence: answer with this
    /// error, then close (the stream is no longer in a known state).
    Fatal { code: ErrorCode, message: String },
    /// The connection failed or the peer broke the protocol.
    Proto(ProtoError),
}

impl HandlerError {
    /// A refusal with a documented code.
    pub fn refuse(code: &'static str, message: impl Into<String>) -> HandlerError {
        HandlerError::Refused {
            code,
            message: message.into(),
        }
    }
}

impl From<ProtoError> for HandlerError {
    fn from(e: ProtoError) -> Self {
        HandlerError::Proto(e)
    }
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        HandlerError::refuse(e.code(), e.to_string())
    }
}

impl From<PathError> for HandlerError {
    fn from(e: PathError) -> Self {
        HandlerError::refuse("bad_path", e.to_string())
    }
}

impl From<AccountError> for HandlerError {
    fn from(e: AccountError) -> Self {
        HandlerError::refuse(e.code(), e.to_string())
    }
}

/// What a plain client on the TLS port is told.
const TLS_REQUIRED: &str =
    "this port speaks TLS: connect with TLS (sockit's clients do by default; \
in Python, wrap the socket with the ssl module as docs/protocol.md shows)";

/// Serves the framed port on the shared runtime.
#[derive(Debug, Clone)]
pub struct FramedHandler {
    /// Limits and timeouts.
    pub settings: Settings,
    /// What is offered after the handshake.
    pub services: Services,
    /// TLS for every connection; `None` serves plain TCP.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl FramedHandler {
    fn session(&self, stream: Stream, ctx: ConnCtx) -> Session<'_> {
        let mut conn = Connection::new(stream, self.settings.limits);
        conn.count_traffic(ctx.counters.clone());
        Session {
            conn,
            ctx,
            settings: &self.settings,
            services: &self.services,
            login: None,
            chat: None,
        }
    }

    /// Completes the TLS handshake before `deadline`. A client whose first
    /// byte is not a TLS record is told in the framed protocol that this
    /// port needs TLS.
    async fn accept_tls(
        &self,
        config: &std::sync::Arc<rustls::ServerConfig>,
        stream: TcpStream,
        ctx: &ConnCtx,
        deadline: Instant,
    ) -> Option<Stream> {
        let mut first = [0u8; 1];
        let peeked = tokio::select! {
            _ = ctx.shutdown.cancelled() => return None,
            r = tokio::time::timeout_at(deadline, stream.peek(&mut first)) => r,
        };
        match peeked {
            Ok(Ok(1)) if first[0] == crate::tls::HANDSHAKE_RECORD => {}
            Ok(Ok(1)) => {
                debug!(peer = %ctx.peer, "plain client on the TLS port");
                let session = self.session(Stream::Plain(stream), ctx.clone());
                let end = End::say(ErrorCode::TlsRequired, TLS_REQUIRED);
                session.close(end).await;
                return None;
            }
            _ => return None,
        }
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return None,
            r = tokio::time::timeout_at(deadline, tokio_rustls::TlsAcceptor::from(config.clone()).accept(stream)) => r,
        };
        match accepted {
            Ok(Ok(tls)) => Some(Stream::Server(Box::new(tls))),
            Ok(Err(e)) => {
                debug!(peer = %ctx.peer, "TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                debug!(peer = %ctx.peer, "TLS handshake timed out");
                None
            }
        }
    }
}

impl Handler for FramedHandler {
    async fn serve(&self, stream: TcpStream, ctx: ConnCtx) {
        let deadline = Instant::now() + self.settings.handshake_timeout;
        let stream = match &self.tls {
            None => Stream::Plain(stream),
            Some(config) => match self.accept_tls(config, stream, &ctx, deadline).await {
                Some(s) => s,
                None => return,
            },
        };
        self.session(stream, ctx).run(deadline).await;
    }

    fn refuse(&self, stream: &TcpStream) {
        self.refuse_with(
            stream,
            ErrorCode::Busy,
            "server is at its connection limit, try again later",
        );
    }

    fn refuse_per_address(&self, stream: &TcpStream) {
        self.refuse_with(
            stream,
            ErrorCode::TooManyConnections,
            "too many connections from your address: close one and try again",
        );
    }
}

impl FramedHandler {
    /// Tells a plain-TCP client refused at accept why, in one error frame.
    fn refuse_with(&self, stream: &TcpStream, code: ErrorCode, message: &str) {
        if self.tls.is_some() {
            // A TLS client would read a plain frame as a broken handshake;
            // closing says as much.
            return;
        }
        // A fresh socket's send buffer is empty, so this small write
        // completes at once; if it does not, the client just sees a close.
        let frame = Frame::error(code, message);
        let mut codec = proto::FrameCodec::default();
        let mut buf = bytes::BytesMut::new();
        if tokio_util::codec::Encoder::encode(&mut codec, &frame, &mut buf).is_ok() {
            let _ = stream.try_write(&buf);
        }
    }
}

/// Why a session ended.
enum End {
    /// The peer closed cleanly or the stream failed; nothing more to say.
    Quiet,
    /// Send this error frame, then close.
    Say(Frame),
}

impl End {
    /// An error not tied to a request (no `id`), then close.
    fn say(code: ErrorCode, message: impl Into<String>) -> End {
        End::Say(Frame::error(code, message))
    }
}

/// One framed-port connection.
struct Session<'a> {
    conn: Connection<Stream>,
    ctx: ConnCtx,
    settings: &'a Settings,
    services: &'a Services,
    /// The session this connection authenticated with; re-checked when
    /// one of the user's sessions is revoked.
    login: Option<Grant>,
    /// Chat state, from the first chat message on.
    chat: Option<chat::link::Link<Frame>>,
}

impl Session<'_> {
    async fn run(mut self, hello_by: Instant) {
        let end = match self.handshake(hello_by).await {
            Ok(()) => self.serve_messages().await,
            Err(end) => end,
        };
        self.close(end).await;
    }

    /// Says goodbye if there is something to say, then closes.
    async fn close(mut self, end: End) {
        let said = matches!(end, End::Say(..));
        if let End::Say(goodbye) = end {
            // Best effort, bounded: the peer may be gone or not reading.
            let _ = tokio::time::timeout(LINGER, self.conn.write_frame(&goodbye)).await;
        }
        let _ = tokio::time::timeout(LINGER, self.conn.shutdown()).await;
        if said {
            // Lingering close: let the error frame reach the peer before
            // unread input turns the close into a reset.
            let _ = tokio::time::timeout(LINGER, self.conn.drain_input(LINGER_BYTES)).await;
        }
    }

    /// Reads the next message, bounded by `deadline` and the shutdown
    /// signal; `late` says what the peer was too slow for.
    async fn next(
        &mut self,
        deadline: Instant,
        late: impl FnOnce() -> String,
    ) -> Result<Frame, End> {
        let read = tokio::select! {
            _ = self.ctx.shutdown.cancelled() => {
                return Err(End::say(ErrorCode::ShuttingDown, "server is shutting down"));
            }
            read = tokio::time::timeout_at(deadline, self.conn.read_frame()) => read,
        };
        self.read_result(read, late)
    }

    /// Like [`Session::next`], while also writing what the chat relay has
    /// for this connection; `Ok(None)` when it wrote instead of reading.
    async fn next_or_chat(&mut self, limit: Duration) -> Result<Option<Frame>, End> {
        let Some(link) = self.chat.as_mut().filter(|l| l.active()) else {
            return self
                .next(Instant::now() + limit, || idle_message(limit))
                .await
                .map(Some);
        };
        let written = if link.saturated() {
            let out = link.next().await;
            Box::pin(chat::server::write_output(&mut self.conn, link, out, limit)).await
        } else {
            if !link.has_ready() {
                // About to wait: hold no buffers meanwhile.
                self.conn.release_buffers();
                link.release_buffers();
            }
            // Ready events first (then the shutdown signal is not even
            // registered while a busy connection writes).
            let revoked = async {
                match self.login.as_mut() {
                    Some(grant) => grant.revoked().await,
                    None => std::future::pending().await,
                }
            };
            let out = tokio::select! {
                biased;
                out = link.next() => out,
                read = tokio::time::timeout(limit, self.conn.read_frame()) => {
                    return self.read_result(read, || idle_message(limit)).map(Some);
                }
                () = revoked => {
                    // A subscription ends with its session, not at its
                    // next request.
                    return self.recheck_login().await.map(|()| None);
                }
                _ = self.ctx.shutdown.cancelled() => {
                    return Err(End::say(ErrorCode::ShuttingDown, "server is shutting down"));
                }
            };
            Box::pin(chat::server::write_output(&mut self.conn, link, out, limit)).await
        };
        match written {
            Ok(()) => Ok(None),
            Err(e) => Err(self.handler_failed(e)),
        }
    }

    fn read_result(
        &self,
        read: Result<Result<Option<Frame>, ProtoError>, tokio::time::error::Elapsed>,
        late: impl FnOnce() -> String,
    ) -> Result<Frame, End> {
        match read {
            Err(_) => {
                debug!(peer = %self.ctx.peer, "timed out waiting for a message");
                Err(End::say(ErrorCode::Timeout, late()))
            }
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) => Err(End::Quiet),
            Ok(Err(e)) => Err(self.read_failed(e)),
        }
    }

    fn read_failed(&self, e: ProtoError) -> End {
        let peer = self.ctx.peer;
        match e.code() {
            Some(code) => {
                warn!(%peer, %code, "closing connection: {e}");
                End::say(code, e.to_string())
            }
            None => {
                debug!(%peer, "connection ended: {e}");
                End::Quiet
            }
        }
    }

    /// Answers messages until a good `hello`, which must come before
    /// `deadline` (however many other messages come first).
    async fn handshake(&mut self, deadline: Instant) -> Result<(), End> {
        let limit = self.settings.handshake_timeout;
        loop {
            let late = || {
                format!(
                    "no hello within {} of connecting",
                    humantime::format_duration(limit)
                )
            };
            let frame = self.next(deadline, late).await?;
            if frame.kind() != "hello" {
                debug!(peer = %self.ctx.peer, kind = frame.kind(), "message before hello");
                self.refuse(
                    &frame,
                    ErrorCode::HelloRequired,
                    "send {\"type\":\"hello\",\"version\":1} first",
                )
                .await?;
                continue;
            }
            if self.hello(&frame).await? {
                return Ok(());
            }
        }
    }

    /// Answers a hello; `Ok(false)` when the version is refused.
    async fn hello(&mut self, frame: &Frame) -> Result<bool, End> {
        let version = frame.get("version").and_then(|v| v.as_u64());
        if version != Some(proto::VERSION) {
            let got = frame
                .get("version")
                .map_or("none".into(), |v| v.to_string());
            self.refuse(
                frame,
                ErrorCode::UnsupportedVersion,
                format!(
                    "version {got} is not supported; this server speaks version {}",
                    proto::VERSION
                ),
            )
            .await?;
            return Ok(false);
        }
        let reply = Frame::new("hello")
            .with("version", proto::VERSION)
            .with("server", SERVER_NAME)
            .with("services", self.services.names())
            .reply_to(frame);
        self.send(&reply).await?;
        Ok(true)
    }

    async fn serve_messages(&mut self) -> End {
        loop {
            let frame = match self.next_or_chat(self.ctx.idle_timeout).await {
                Ok(Some(f)) => f,
                Ok(None) => continue,
                Err(end) => return end,
            };
            if let Err(end) = self.dispatch(frame).await {
                return end;
            }
        }
    }

    /// Routes one message to its handler. New services add arms here.
    ///
    /// Each service's handler is boxed: its state exists only while a
    /// request runs, so an idle connection's task stays small (the largest
    /// handler would otherwise set the size of every connection's task).
    async fn dispatch(&mut self, frame: Frame) -> Result<(), End> {
        if !matches!(
            frame.kind(),
            "hello" | "ping" | "register" | "login" | "auth"
        ) {
            // Every request checks the session first (free unless one of
            // the user's sessions was revoked meanwhile).
            self.recheck_login().await?;
        }
        let result = match frame.kind() {
            "hello" => return self.hello(&frame).await.map(drop),
            "ping" => return self.ping(&frame).await,
            "register" | "login" | "auth" | "logout" | "whoami"
                if self.services.accounts.is_some() =>
            {
                Box::pin(self.account(&frame)).await
            }
            kind if files::MESSAGES.contains(&kind) && self.services.store.is_some() => {
                Box::pin(self.files(&frame)).await
            }
            "exec" => Box::pin(self.exec(&frame)).await,
            "stats" if self.services.stats.is_some() && self.services.accounts.is_some() => {
                Box::pin(self.stats(&frame)).await
            }
            kind if chat::MESSAGES.contains(&kind) && self.services.chat.is_some() => {
                Box::pin(self.chat(&frame)).await
            }
            other => {
                debug!(peer = %self.ctx.peer, kind = other, "unknown message type");
                let message = format!("unknown message type {other:?}");
                return self.refuse(&frame, ErrorCode::UnknownType, message).await;
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(HandlerError::Refused { code, message }) => {
                debug!(peer = %self.ctx.peer, kind = frame.kind(), code, "request refused: {message}");
                if let Err(e) = self.conn.discard_body().await {
                    return Err(self.read_failed(e));
                }
                let reply = Frame::new("error")
                    .with("code", code)
                    .with("message", message)
                    .reply_to(&frame);
                self.send(&reply).await
            }
            Err(HandlerError::Fatal { code, message }) => {
                // The request ends with this error: its answer repeats the
                // request's id, as any answer does.
                warn!(peer = %self.ctx.peer, %code, "closing connection: {message}");
                Err(End::Say(Frame::error(code, message).reply_to(&frame)))
            }
            Err(HandlerError::Proto(e)) if e.code().is_some() => Err(self.read_failed(e)),
            Err(HandlerError::Proto(e)) => Err(self.write_failed(e)),
        }
    }

    /// How a failure outside any request (writing chat events) ends the
    /// session.
    fn handler_failed(&self, e: HandlerError) -> End {
        match e {
            HandlerError::Refused { message, .. } => {
                warn!(peer = %self.ctx.peer, "closing connection: {message}");
                End::say(ErrorCode::Internal, message)
            }
            HandlerError::Fatal { code, message } => {
                warn!(peer = %self.ctx.peer, %code, "closing connection: {message}");
                End::say(code, message)
            }
            HandlerError::Proto(e) if e.code().is_some() => self.read_failed(e),
            HandlerError::Proto(e) => self.write_failed(e),
        }
    }

    /// Whether the session still holds, after a revocation of one of the
    /// user's sessions. A revoked one logs the connection out (its requests
    /// get `unauthorized`); one that uses the chat is told `unauthorized`
    /// and closed, since its subscription was for that session.
    async fn recheck_login(&mut self) -> Result<(), End> {
        let (Some(accounts), Some(grant)) = (&self.services.accounts, self.login.as_mut()) else {
            return Ok(());
        };
        match accounts.recheck(grant).await {
            Ok(()) => Ok(()),
            Err(AccountError::Unauthorized) => {
                debug!(peer = %self.ctx.peer, user = %grant.user.name, "session revoked");
                self.login = None;
                match self.chat {
                    Some(_) => Err(End::Say(revoked_frame())),
                    None => Ok(()),
                }
            }
            Err(e) => {
                warn!(peer = %self.ctx.peer, "closing connection: checking the session: {e}");
                Err(End::say(ErrorCode::Internal, e.to_string()))
            }
        }
    }

    /// Chat messages, for the logged-in user.
    async fn chat(&mut self, frame: &Frame) -> Result<(), HandlerError> {
        let (Some(relay), Some(accounts), Some(grant)) =
            (&self.services.chat, &self.services.accounts, &self.login)
        else {
            return Err(AccountError::Unauthorized.into());
        };
        let (relay, accounts, user) = (relay.clone(), accounts.clone(), grant.user.clone());
        let idle = self.ctx.idle_timeout;
        chat::server::handle(
            &mut self.conn,
            &mut self.chat,
            frame,
            &user,
            &accounts,
            &relay,
            idle,
        )
        .await
    }

    /// Account messages: register, login, auth, logout, whoami.
    async fn account(&mut self, frame: &Frame) -> Result<(), HandlerError> {
        let Some(accounts) = self.services.accounts.clone() else {
            return Err(HandlerError::refuse(
                "unknown_type",
                "accounts are not enabled",
            ));
        };
        let field = |key: &str| -> Result<String, HandlerError> {
            frame.str(key).map(String::from).ok_or_else(|| {
                HandlerError::refuse(
                    "bad_request",
                    format!("{} needs a string \"{key}\"", frame.kind()),
                )
            })
        };
        let reply = match frame.kind() {
            "register" => {
                let (name, password) = (field("user")?, field("password")?);
                let ip = Some(self.ctx.peer.ip());
                let user = match accounts.register(name, password, ip).await {
                    Ok(user) => user,
                    Err(e) => {
                        debug!(peer = %self.ctx.peer, code = e.code(), "registration refused");
                        return Err(e.into());
                    }
                };
                tracing::info!(peer = %self.ctx.peer, user = %user.name, "user registered");
                Frame::new("registered").with("user", user.name)
            }
            "login" => {
                let (name, password) = (field("user")?, field("password")?);
                let ip = Some(self.ctx.peer.ip());
                let session = match accounts.login(name, password, ip).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::info!(peer = %self.ctx.peer, code = e.code(), "login failed");
                        return Err(e.into());
                    }
                };
                let reply = Frame::new("logged_in")
                    .with("user", session.user.name.clone())
                    .with("token", session.token.clone())
                    .with("expires_at", session.expires_at);
                self.login = Some(accounts.grant_session(&session));
                reply
            }
            "auth" => {
                let grant = accounts.grant(field("token")?).await?;
                let reply = Frame::new("authed").with("user", grant.user.name.clone());
                self.login = Some(grant);
                reply
            }
            "logout" => {
                let Some(grant) = self.login.take() else {
                    return Err(AccountError::Unauthorized.into());
                };
                accounts.run(move |a| a.logout(grant.token())).await?;
                Frame::new("logged_out")
            }
            _ => match &self.login {
                Some(grant) => Frame::new("whoami").with("user", grant.user.name.clone()),
                None => return Err(AccountError::Unauthorized.into()),
            },
        };
        self.conn.write_frame(&reply.reply_to(frame)).await?;
        Ok(())
    }

    /// File messages, for the logged-in user.
    async fn files(&mut self, frame: &Frame) -> Result<(), HandlerError> {
        let (Some(store), Some(grant)) = (&self.services.store, &self.login) else {
            return Err(AccountError::Unauthorized.into());
        };
        let (store, user) = (store.clone(), grant.user.clone());
        files::server::handle(&mut self.conn, frame, &store, &user, self.ctx.idle_timeout).await
    }

    /// `exec`: a remote command, for a user with the `exec` permission.
    async fn exec(&mut self, frame: &Frame) -> Result<(), HandlerError> {
        let Some(exec) = self.services.exec.clone() else {
            return Err(HandlerError::refuse(
                "exec_disabled",
                "remote commands are disabled on this server ([exec] enabled = false)",
            ));
        };
        let (Some(accounts), Some(grant)) = (&self.services.accounts, &self.login) else {
            return Err(AccountError::Unauthorized.into());
        };
        // Permissions as they are now, not as they were at login.
        let (accounts, token) = (accounts.clone(), grant.token().to_string());
        let user = accounts.run(move |a| a.authenticate(&token)).await?;
        let ctx = exec::server::RunCtx {
            peer: self.ctx.peer,
            shutdown: &self.ctx.shutdown,
            idle_timeout: self.ctx.idle_timeout,
        };
        // Boxed: a run's state is large, and every connection would carry it.
        Box::pin(exec::server::run(&mut self.conn, frame, &exec, &user, ctx)).await
    }

    /// `stats`: host and server statistics, for a logged-in user.
    async fn stats(&mut self, frame: &Frame) -> Result<(), HandlerError> {
        let (Some(stats), Some(accounts), Some(grant)) =
            (&self.services.stats, &self.services.accounts, &self.login)
        else {
            return Err(AccountError::Unauthorized.into());
        };
        let (stats, mut user) = (stats.clone(), grant.user.clone());
        if stats.admins_only() {
            // Permissions as they are now, not as they were at login.
            let (accounts, token) = (accounts.clone(), grant.token().to_string());
            user = accounts.run(move |a| a.authenticate(&token)).await?;
        }
        stats
            .answer(&mut self.conn, frame, &user, self.ctx.idle_timeout)
            .await
    }

    /// `ping` → `pong`, streaming any body straight back.
    async fn ping(&mut self, frame: &Frame) -> Result<(), End> {
        let idle = self.ctx.idle_timeout;
        let pong = Frame::new("pong")
            .reply_to(frame)
            .with_body_len(frame.body_len());
        self.conn
            .queue_frame(&pong)
            .map_err(|e| self.write_failed(e))?;
        loop {
            let chunk = match timed(idle, self.conn.read_body_chunk()).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => return Err(self.read_failed(e)),
            };
            timed(idle, self.conn.write_body(&chunk))
                .await
                .map_err(|e| self.write_failed(e))?;
        }
        timed(idle, self.conn.flush())
            .await
            .map_err(|e| self.write_failed(e))
    }

    /// Answers `request` with an error, skipping whatever body it carried.
    async fn refuse(
        &mut self,
        request: &Frame,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<(), End> {
        if let Err(e) = self.conn.discard_body().await {
            return Err(self.read_failed(e));
        }
        let frame = Frame::error(code, message).reply_to(request);
        self.send(&frame).await
    }

    async fn send(&mut self, frame: &Frame) -> Result<(), End> {
        match tokio::time::timeout(self.ctx.idle_timeout, self.conn.write_frame(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.write_failed(e)),
            Err(_) => {
                debug!(peer = %self.ctx.peer, "peer stopped reading");
                Err(End::Quiet)
            }
        }
    }

    fn write_failed(&self, e: ProtoError) -> End {
        debug!(peer = %self.ctx.peer, "write failed: {e}");
        End::Quiet
    }
}

/// What a connection whose session was revoked is told before it closes.
fn revoked_frame() -> Frame {
    let e = AccountError::Unauthorized;
    Frame::new("error")
        .with("code", e.code())
        .with("message", e.to_string())
}

/// What a connection idle for longer than `limit` is told.
fn idle_message(limit: Duration) -> String {
    format!(
        "the server received no complete message within {}",
        humantime::format_duration(limit)
    )
}

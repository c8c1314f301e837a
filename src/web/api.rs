//! The JSON API under `/api/` (documented in `docs/http-api.md`): login by
//! cookie or bearer token over the shared [`Accounts`], and the file
//! operations of the shared [`Store`], with the same rules as the framed
//! port. Uploads stream to a partial file and resume from an offset the
//! server confirms.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures_util::StreamExt as _;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest as _;
use tracing::{debug, info};

use super::site::parse_url_path;
use crate::accounts::{AccountError, Accounts, User};
use crate::files::pipe;
use crate::store::path::{PathError, RemotePath};
use crate::store::{Kind, Source, Store, StoreError};

/// Name of the session cookie.
pub const COOKIE: &str = "sockit_session";
/// Header carrying the CSRF value on cookie-authenticated changes.
pub const CSRF_HEADER: &str = "x-sockit-csrf";
/// Longest upload id accepted.
const MAX_UPLOAD_ID: usize = 128;

/// The client's address, put in each request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What the API works on.
#[derive(Debug, Clone)]
pub struct Api {
    /// Users and sessions.
    pub accounts: Accounts,
    /// The file store, if it runs.
    pub store: Option<Store>,
    /// Host and server statistics, if enabled.
    pub stats: Option<crate::stats::Stats>,
    /// The chat relay, if it runs (`/api/chat`).
    pub chat: Option<crate::chat::Relay>,
}

#[derive(Clone)]
struct ApiState {
    api: Api,
    /// Cookies get `Secure`.
    tls: bool,
}

impl Api {
    /// The router of `/api/...`.
    pub fn router(self, tls: bool) -> Router {
        Router::new()
            .route("/api/login", post(login))
            .route("/api/register", post(register))
            .route("/api/logout", post(logout))
            .route("/api/whoami", get(whoami))
            .route("/api/ls", get(ls))
            .route("/api/ls/", get(ls))
            .route("/api/ls/{*path}", get(ls))
            .route(
                "/api/files/{*path}",
                get(download).head(download).put(upload).delete(remove),
            )
            .route("/api/uploads/{*path}", get(upload_offset))
            .route("/api/mkdir", post(mkdir))
            .route("/api/mv", post(mv))
            .route("/api/stats", get(stats))
            .route(CHAT_PATH, get(chat_socket))
            .fallback(|| async {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API endpoint")
            })
            .with_state(ApiState { api: self, tls })
    }
}

/// An error answer: `{"error": code, "message": ..., ...extra}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn with(mut self, extra: Value) -> ApiError {
        self.extra = Some(extra);
        self
    }
}

/// HTTP status of each wire error code.
fn status_of(code: &str) -> StatusCode {
    match code {
        "bad_request" | "bad_path" => StatusCode::BAD_REQUEST,
        "unauthorized" | "bad_credentials" => StatusCode::UNAUTHORIZED,
        "csrf" | "registration_closed" | "forbidden" | "not_a_file" => StatusCode::FORBIDDEN,
        "not_found" => StatusCode::NOT_FOUND,
        "exists" | "busy" | "not_empty" | "offset_mismatch" | "is_a_directory"
        | "not_a_directory" => StatusCode::CONFLICT,
        "quota_exceeded" | "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "checksum_mismatch" => StatusCode::UNPROCESSABLE_ENTITY,
        "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        "disk_full" => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let code = e.code();
        // The store's messages name the CLI's flags; say what HTTP needs.
        let message = match &e {
            StoreError::Exists(p) => {
                format!("{p} already exists (ask again with overwrite to replace it)")
            }
            StoreError::NotEmpty(p) => {
                format!("{p} is not empty (delete with ?recursive=1 to remove its content too)")
            }
            _ => e.to_string(),
        };
        ApiError::new(status_of(code), code, message)
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        let code = e.code();
        let error = ApiError::new(status_of(code), code, e.to_string());
        match e {
            AccountError::RateLimited { retry_after, .. } => {
                let secs = retry_after.as_secs().max(1);
                error.with(json!({ "retry_after": secs }))
            }
            _ => error,
        }
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, "api error: {}", self.message);
        }
        // A 429 says when to come back, in the header as in the body.
        let retry_after = self
            .extra
            .as_ref()
            .and_then(|e| e.get("retry_after"))
            .and_then(Value::as_u64)
            .filter(|_| self.status == StatusCode::TOO_MANY_REQUESTS);
        let mut body = json!({ "error": self.code, "message": self.message });
        if let (Some(Value::Object(extra)), Some(obj)) = (self.extra, body.as_object_mut()) {
            obj.extend(extra);
        }
        let mut r = (self.status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// Runs store work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

/// The CSRF value of a session: derived from the token, so only a page that
/// was given it (by login or whoami, same origin) can know it.
pub fn csrf_for(token: &str) -> String {
    blake3::derive_key("sockit 2026-11 http api csrf v1", token.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A logged-in request.
struct Authed {
    user: User,
    token: String,
    by_cookie: bool,
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Refuses cross-site requests that change things: `Sec-Fetch-Site` from
/// another site, or an `Origin` that is not this server.
fn same_origin(headers: &HeaderMap) -> ApiResult<()> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site == "cross-site" || site == "same-site" {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "cross-site request refused",
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
        if origin == "null" || origin_host != host {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "cross-origin request refused",
            ));
        }
    }
    Ok(())
}

impl ApiState {
    /// Who is asking: bearer token first, else the session cookie. Changes
    /// made with the cookie need the CSRF header.
    async fn auth(&self, method: &Method, headers: &HeaderMap) -> ApiResult<Authed> {
        let (token, by_cookie) = match bearer_token(headers) {
            Some(t) => (t, false),
            None => match cookie_token(headers) {
                Some(t) => (t, true),
                None => return Err(self.unauthorized()),
            },
        };
        let unsafe_method = method != Method::GET && method != Method::HEAD;
        if by_cookie && unsafe_method {
            same_origin(headers)?;
            let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if sent != Some(csrf_for(&token).as_str()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "missing or wrong X-Sockit-CSRF header (take it from /api/whoami)",
                ));
            }
        }
        let check = token.clone();
        let user = self
            .api
            .accounts
            .run(move |a| a.authenticate(&check))
            .await
            .map_err(|e| match e {
                AccountError::Unauthorized => self.unauthorized(),
                e => e.into(),
            })?;
        Ok(Authed {
            user,
            token,
            by_cookie,
        })
    }

    fn unauthorized(&self) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "not logged in, or the session expired: log in again",
        )
        .with(json!({ "allow_register": self.api.accounts.settings().allow_register }))
    }

    fn store(&self) -> ApiResult<Store> {
        self.api.store.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "the file store is not enabled on this server",
            )
        })
    }

    /// The answer to a browser login: the session in a cookie, the CSRF
    /// value in the body.
    fn cookie_session(&self, status: StatusCode, session: &crate::accounts::Session) -> Response {
        let max_age = self.api.accounts.settings().session_ttl.as_secs() as i64;
        let mut r = (
            status,
            Json(json!({
                "user": session.user.name,
                "csrf": csrf_for(&session.token),
                "expires_at": session.expires_at,
            })),
        )
            .into_response();
        r.headers_mut().insert(
            header::SET_COOKIE,
            self.session_cookie(&session.token, max_age),
        );
        r
    }

    fn session_cookie(&self, token: &str, max_age: i64) -> HeaderValue {
        let secure = if self.tls { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
        ))
        .unwrap_or(HeaderValue::from_static(
            "sockit_session=; Path=/; Max-Age=0",
        ))
    }
}

#[derive(Deserialize)]
struct Credentials {
    name: String,
    password: String,
    /// Return the token in the body instead of setting a cookie.
    #[serde(default)]
    token: bool,
}

fn peer_ip(req_ext: &http::Extensions) -> Option<std::net::IpAddr> {
    req_ext.get::<Peer>().map(|p| p.0.ip())
}

/// An address for the log ("-" when unknown).
fn shown(ip: Option<std::net::IpAddr>) -> String {
    ip.map_or_else(|| "-".into(), |i| i.to_string())
}

/// Reads a JSON body of at most 64 KiB.
async fn json_body<T: serde::de::DeserializeOwned>(req: Request) -> ApiResult<T> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    if !is_json {
        return Err(ApiError::bad_request("send Content-Type: application/json"));
    }
    let bytes = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|_| ApiError::bad_request("the request body is too large or was cut off"))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("bad JSON: {e}")))
}

async fn login(State(st): State<ApiState>, req: Request) -> ApiResult {
    same_origin(req.headers())?;
    let ip = peer_ip(req.extensions());
    let c: Credentials = json_body(req).await?;
    let session = match st.api.accounts.login(c.name, c.password, ip).await {
        Ok(s) => s,
        Err(e) => {
            info!(ip = %shown(ip), code = e.code(), "web login failed");
            return Err(e.into());
        }
    };
    info!(ip = %shown(ip), user = %session.user.name, "web login");
    if c.token {
        return Ok(Json(json!({
            "user": session.user.name,
            "token": session.token,
            "expires_at": session.expires_at,
        }))
        .into_response());
    }
    Ok(st.cookie_session(StatusCode::OK, &session))
}

async fn register(State(st): State<ApiState>, req: Request) -> ApiResult {
    same_origin(req.headers())?;
    let ip = peer_ip(req.extensions());
    let c: Credentials = json_body(req).await?;
    let session = match st
        .api
        .accounts
        .register_and_login(c.name, c.password, ip)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            debug!(ip = %shown(ip), code = e.code(), "web registration refused");
            return Err(e.into());
        }
    };
    info!(ip = %shown(ip), user = %session.user.name, "user registered (web)");
    Ok(st.cookie_session(StatusCode::CREATED, &session))
}

async fn logout(State(st): State<ApiState>, req: Request) -> ApiResult {
    let who = st.auth(req.method(), req.headers()).await?;
    let token = who.token;
    st.api.accounts.run(move |a| a.logout(&token)).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    if who.by_cookie {
        r.headers_mut()
            .insert(header::SET_COOKIE, st.session_cookie("", 0));
    }
    Ok(r)
}

async fn whoami(State(st): State<ApiState>, req: Request) -> ApiResult {
    let who = st.auth(req.method(), req.headers()).await?;
    let (used, quota) = match &st.api.store {
        Some(store) => {
            let (s, k) = (store.clone(), who.user.key());
            (
                Some(blocking(move || s.used(&k)).await?),
                store.settings().quota,
            )
        }
        None => (None, None),
    };
    Ok(Json(json!({
        "user": who.user.name,
        "permissions": who.user.permissions,
        "used": used,
        "quota": quota,
        "csrf": csrf_for(&who.token),
        "allow_register": st.api.accounts.settings().allow_register,
    }))
    .into_response())
}

/// `GET /api/stats`: the same JSON as `sockit stats --json`.
#[derive(Deserialize)]
struct ChatQuery {
    since: Option<i64>,
}

/// Where the chat's WebSocket is.
pub const CHAT_PATH: &str = "/api/chat";

/// `GET /api/chat`: the chat over WebSocket (see docs/http-api.md).
async fn chat_socket(
    State(st): State<ApiState>,
    lease: Option<axum::Extension<super::ConnLease>>,
    query: Result<axum::extract::Query<ChatQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    upgrade: Result<super::upgrade::Upgrade, super::upgrade::NotWebSocket>,
) -> ApiResult {
    let q = query
        .map_err(|_| ApiError::bad_request("since must be an integer (a message seq)"))?
        .0;
    let upgrade =
        upgrade.map_err(|e| ApiError::bad_request(format!("not a WebSocket request: {e}")))?;
    let Some(relay) = st.api.chat.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the chat is not enabled on this server",
        ));
    };
    // A page on another site must not open a socket with the cookie.
    same_origin(&headers)?;
    let who = st.auth(&Method::GET, &headers).await?;
    // The socket outlives this request: it holds a grant, so that a
    // revocation closes it.
    let accounts = st.api.accounts.clone();
    let grant = accounts.grant(who.token).await.map_err(|e| match e {
        AccountError::Unauthorized => st.unauthorized(),
        e => e.into(),
    })?;
    let config = crate::chat::ws::config(relay.settings());
    Ok(upgrade.respond(config, move |socket| async move {
        // The socket counts as its connection until it closes.
        let _lease = lease;
        crate::chat::ws::serve(socket, relay, accounts, grant, q.since).await
    }))
}

async fn stats(State(st): State<ApiState>, req: Request) -> ApiResult {
    let who = st.auth(req.method(), req.headers()).await?;
    let Some(stats) = st.api.stats.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "statistics are not enabled on this server",
        ));
    };
    let fail =
        |e: crate::stats::StatsError| ApiError::new(status_of(e.code()), e.code(), e.to_string());
    stats.allowed(&who.user).map_err(fail)?;
    let snap = stats.snapshot().await.map_err(fail)?;
    let mut r = Json(snap).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The remote path after `prefix` in the request's URL path.
fn path_after(uri: &http::Uri, prefix: &str) -> ApiResult<(RemotePath, bool)> {
    let rest = uri.path().strip_prefix(prefix).unwrap_or("");
    Ok(parse_url_path(&format!("/{rest}"))?)
}

fn query_flag(uri: &http::Uri, name: &str) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&').any(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, "1"));
            k == name && matches!(v, "1" | "true" | "yes" | "")
        })
    })
}

fn query_value(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

async fn ls(State(st): State<ApiState>, req: Request) -> ApiResult {
    let who = st.auth(req.method(), req.headers()).await?;
    let store = st.store()?;
    let (path, _) = if req.uri().path() == "/api/ls" {
        (RemotePath::root(), true)
    } else {
        path_after(req.uri(), "/api/ls/")?
    };
    let recursive = query_flag(req.uri(), "recursive");
    let (k, p) = (who.user.key(), path.clone());
    let mut entries = blocking(move || store.list(&k, &p, recursive)).await?;
    entries.sort_by(|a, b| {
        (b.kind == Kind::Dir)
            .cmp(&(a.kind == Kind::Dir))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(Json(json!({ "path": path.to_string(), "entries": entries })).into_response())
}

async fn download(State(st): State<ApiState>, req: Request) -> ApiResult {
    let who = st.auth(req.method(), req.headers()).await?;
    let store = st.store()?;
    let (path, _) = path_after(req.uri(), "/api/files/")?;
    let (k, p) = (who.user.key(), path.clone());
    let (file, meta, digests) = blocking(move || {
        let (file, _, _) = store.open_read(&k, &p)?;
        let meta = file.metadata().map_err(|e| StoreError::Io(e.to_string()))?;
        let digests = crate::store::digest::recorded(&file);
        Ok((file, meta, digests))
    })
    .await?;
    let name = path.name().unwrap_or("download");
    let mut r = super::user_content::send(
        req.method(),
        req.headers(),
        file,
        &meta,
        name,
        query_flag(req.uri(), "inline"),
        digests.as_ref(),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(r)
}

/// `Content-Range: bytes START-END/TOTAL` of an upload.
#[doc(hidden)] // Public for the fuzz targets (fuzz/).
pub fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    // Digits only: `u64::from_str` would also take a leading `+`, which
    // the grammar (RFC 9110 14.4) has not, and a proxy may read otherwise.
    let number = |t: &str| -> Option<u64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let total = number(total.trim())?;
    let (s, e) = span.trim().split_once('-')?;
    let (s, e) = (number(s)?, number(e)?);
    (s <= e && e < total).then_some((s, e, total))
}

/// `Repr-Digest: sha-256=:BASE64:` (RFC 9530).
fn parse_sha256(headers: &HeaderMap) -> ApiResult<Option<[u8; 32]>> {
    let Some(v) = headers
        .get(super::user_content::REPR_DIGEST)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    for item in v.split(',') {
        let Some((alg, val)) = item.trim().split_once('=') else {
            continue;
        };
        if alg.trim().eq_ignore_ascii_case("sha-256") {
            let b64 = val.trim().trim_matches(':');
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| ApiError::bad_request("Repr-Digest: sha-256 is not valid base64"))?;
            let arr: [u8; 32] = bytes
                .try_into()
                .map_err(|_| ApiError::bad_request("Repr-Digest: sha-256 must be 32 bytes"))?;
            return Ok(Some(arr));
        }
    }
    Ok(None)
}

fn source_of(uri: &http::Uri, headers: &HeaderMap) -> ApiResult<Source> {
    let text = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mtime_ms = match text("x-sockit-mtime").or_else(|| query_value(uri, "mtime")) {
        Some(t) => t.trim().parse::<i64>().map_err(|_| {
            ApiError::bad_request("X-Sockit-Mtime must be milliseconds since the epoch")
        })?,
        None => 0,
    };
    let id = text("x-sockit-upload-id")
        .or_else(|| query_value(uri, "id"))
        .unwrap_or_default();
    if id.len() > MAX_UPLOAD_ID {
        return Err(ApiError::bad_request(
            "the upload id is longer than 128 bytes",
        ));
    }
    Ok(Source {
        mtime_ns: mtime_ms.clamp(0, i64::MAX / 1_000_000) * 1_000_000,
        id,
    })
}

async fn upload_offset(State(st): State<ApiState>, req: Request) -> ApiResult {
    let who = st.auth(req.method(), req.headers()).await?;
    let store = st.store()?;
    let (path, _) = path_after(req.uri(), "/api/uploads/")?;
    let length: u64 = query_value(req.uri(), "length")
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| ApiError::bad_request("give the file's total length: ?length=N"))?;
    let source = source_of(req.uri(), req.headers())?;
    let k = who.user.key();
    let offset = blocking(move || store.partial_offset(&k, &path, length, &source)).await?;
    Ok(Json(json!({ "offset": offset, "length": length })).into_response())
}

async fn upload(State(st): State<ApiState>, req: Request) -> ApiResult {
    let who = st.auth(req.method(), req.headers()).await?;
    let store = st.store()?;
    let (path, folder) = path_after(req.uri(), "/api/files/")?;
    if folder || path.is_root() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "is_a_directory",
            "a file name is needed after the folder",
        ));
    }
    let headers = req.headers();
    let content_length: Option<u64> = match headers.get(header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::bad_request("bad Content-Length"))?,
        ),
        None => None,
    };
    let range = match headers.get(header::CONTENT_RANGE) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    ApiError::bad_request("Content-Range must be bytes START-END/TOTAL")
                })?,
        ),
        None => None,
    };
    let (start, total, body_len) = match range {
        Some((s, e, t)) => (s, t, e - s + 1),
        None => {
            let len = content_length
                .ok_or_else(|| ApiError::bad_request("send Content-Length (or Content-Range)"))?;
            (0, len, len)
        }
    };
    if content_length.is_some_and(|cl| cl != body_len) {
        return Err(ApiError::bad_request(
            "Content-Length does not match Content-Range",
        ));
    }
    let source = source_of(req.uri(), headers)?;
    let blake3_hex = headers
        .get(super::user_content::BLAKE3_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if blake3_hex
        .as_ref()
        .is_some_and(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::bad_request(
            "X-Sockit-Blake3 must be 64 hex digits",
        ));
    }
    let sha256 = parse_sha256(headers)?;
    let force = query_flag(req.uri(), "overwrite");
    let resume = range.is_some();

    let (s, k, p) = (store.clone(), who.user.key(), path.clone());
    let mut up = blocking(move || s.begin_upload(&k, &p, total, &source, force, resume)).await?;
    if up.offset() != start {
        let offset = up.offset();
        drop(up);
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "offset_mismatch",
            format!("the server holds {offset} bytes of this upload: continue from there"),
        )
        .with(json!({ "offset": offset, "length": total })));
    }
    let Some((file, hasher)) = up.take_writer() else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "upload file already taken",
        ));
    };
    let (tx, disk) = pipe::writer(file, hasher);
    let mut stream = req.into_body().into_data_stream();
    let mut received = 0u64;
    let mut cut = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                received += bytes.len() as u64;
                if received > body_len {
                    cut = Some("the body is longer than Content-Length".to_string());
                    break;
                }
                if tx.send(bytes).await.is_err() {
                    break; // The disk failed; its error is below.
                }
            }
            Err(e) => {
                cut = Some(format!("the upload was cut off: {e}"));
                break;
            }
        }
    }
    drop(tx);
    let (file, hasher, written) = disk
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::from(StoreError::Io(format!("writing the upload: {e}"))))?;
    // Whatever arrived is kept for a resume, made durable first.
    if let Some(why) =
        cut.or_else(|| (written != body_len).then(|| "the body ended early".to_string()))
    {
        let offset = up.offset() + written;
        let _ = blocking(move || up.suspend(file, hasher, written)).await;
        return Err(ApiError::bad_request(why).with(json!({ "offset": offset, "length": total })));
    }
    if start + written < total {
        let held = blocking(move || up.suspend(file, hasher, written)).await?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "offset": held, "length": total })),
        )
            .into_response());
    }
    let published = blocking(move || {
        // Computed from what was stored (all chunks of a resumed upload), to
        // check the client's digest if it sent one and to be recorded with
        // the file for downloads either way.
        let mut f = file
            .try_clone()
            .map_err(|e| StoreError::Io(e.to_string()))?;
        let got = sha256_of(&mut f).map_err(|e| StoreError::Io(e.to_string()))?;
        if sha256.is_some_and(|want| got != want) {
            drop(file);
            up.discard();
            return Err(StoreError::ChecksumMismatch);
        }
        up.set_sha256(got);
        up.finish(file, hasher, written, blake3_hex.as_deref())
    })
    .await?;
    info!(user = %who.user.name, path = %published.path, length = published.length, "uploaded (web)");
    Ok((StatusCode::CREATED, Json(json!(published))).into_response())
}

fn sha256_of(f: &mut std::fs::File) -> std::io::Result<[u8; 32]> {
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(0))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

async fn remove(State(st): State<ApiState>, req: Request) -> ApiResult {
    let who = st.auth(req.method(), req.headers()).await?;
    let store = st.store()?;
    let (path, _) = path_after(req.uri(), "/api/files/")?;
    let recursive = query_flag(req.uri(), "recursive");
    let k = who.user.key();
    blocking(move || store.remove(&k, &path, recursive)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct MkdirBody {
    path: String,
}

async fn mkdir(State(st): State<ApiState>, req: Request) -> ApiResult {
    let who = st.auth(req.method(), req.headers()).await?;
    let store = st.store()?;
    let b: MkdirBody = json_body(req).await?;
    let path = RemotePath::parse(b.path.trim_matches('/'))?;
    let k = who.user.key();
    let shown = path.to_string();
    blocking(move || store.mkdir(&k, &path, true)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "path": shown }))).into_response())
}

#[derive(Deserialize)]
struct MvBody {
    from: String,
    to: String,
    #[serde(default)]
    overwrite: bool,
}

async fn mv(State(st): State<ApiState>, req: Request) -> ApiResult {
    let who = st.auth(req.method(), req.headers()).await?;
    let store = st.store()?;
    let b: MvBody = json_body(req).await?;
    let from = RemotePath::parse(b.from.trim_matches('/'))?;
    let to = RemotePath::parse(b.to.trim_matches('/'))?;
    let k = who.user.key();
    let shown = to.to_string();
    blocking(move || store.rename(&k, &from, &to, b.overwrite)).await?;
    Ok(Json(json!({ "path": shown })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_strict() {
        assert_eq!(parse_content_range("bytes 0-9/10"), Some((0, 9, 10)));
        assert_eq!(parse_content_range("bytes 5-9/100"), Some((5, 9, 100)));
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("bytes 0-10/10"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    /// Found by fuzz/content_range: a sign is not a digit.
    #[test]
    fn content_range_with_a_plus_sign_in_0_9_of_10_is_refused() {
        assert_eq!(parse_content_range("bytes +0-9/10"), None);
        assert_eq!(parse_content_range("bytes 0-+9/10"), None);
        assert_eq!(parse_content_range("bytes 0-9/+10"), None);
        assert_eq!(parse_content_range("bytes 0-9/ 10 "), Some((0, 9, 10)));
    }

    #[test]
    fn csrf_depends_on_the_token() {
        assert_ne!(csrf_for("sk_a"), csrf_for("sk_b"));
        assert_eq!(csrf_for("sk_a"), csrf_for("sk_a"));
        assert_eq!(csrf_for("sk_a").len(), 32);
    }

    #[test]
    fn cross_site_changes_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(same_origin(&h).is_err());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_origin(&h).is_err());
    }
}

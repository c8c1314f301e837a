//! The file store and the chat in the browser: plain HTML, CSS and JavaScript
//! embedded in the binary (no build step, nothing fetched from elsewhere),
//! served at `/app/`. It talks to the [`super::api`] and to the chat's
//! WebSocket at `/api/chat`.

use axum::body::Body;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const CHAT_JS: &str = include_str!("assets/chat.js");
const STATS_HTML: &str = include_str!("assets/stats.html");
const STATS_JS: &str = include_str!("assets/stats.js");
const STATS_CSS: &str = include_str!("assets/stats.css");

/// The ETag of every asset: they change only with the binary.
fn etag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let mut h = blake3::Hasher::new();
        for part in [
            INDEX_HTML, APP_JS, APP_CSS, CHAT_JS, STATS_HTML, STATS_JS, STATS_CSS,
        ] {
            h.update(part.as_bytes());
        }
        format!("\"app-{}\"", &h.finalize().to_hex()[..16])
    })
}

/// Serves `/app/...`.
pub fn serve<B>(req: &Request<B>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let (body, content_type) = match req.uri().path() {
        "/app/" | "/app/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/app/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/app/app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "/app/chat.js" => (CHAT_JS, "text/javascript; charset=utf-8"),
        "/app/stats.html" => (STATS_HTML, "text/html; charset=utf-8"),
        "/app/stats.js" => (STATS_JS, "text/javascript; charset=utf-8"),
        "/app/stats.css" => (STATS_CSS, "text/css; charset=utf-8"),
        _ => return super::site::not_found_page(),
    };
    let tag = etag();
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == tag)
        });
    let mut r = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if req.method() == Method::HEAD {
        let mut r = Response::new(Body::empty());
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, body.len().into());
        r
    } else {
        Response::new(Body::from(body))
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    r
}

//! The server's side of the WebSocket opening handshake (RFC 6455 4.2) on
//! HTTP/1.1: checks the upgrade request, answers `101 Switching Protocols`,
//! and hands the connection over as a tungstenite stream.
//!
//! sockit does this itself rather than through axum's `WebSocketUpgrade`:
//! axum's `WebSocket` keeps the connection to itself, and closing a socket
//! by the RFC's rules needs it (after the Close, a half-close, then the
//! client's TCP close awaited, so that what is still arriving cannot reset
//! the connection under the Close on its way out).

use std::future::Future;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

/// The stream a WebSocket handler gets.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// A request to open a WebSocket, checked; taken as an extractor.
#[derive(Debug)]
pub struct Upgrade {
    /// Resolves to the connection once hyper has sent the `101`.
    on_upgrade: OnUpgrade,
    /// `Sec-WebSocket-Accept`: proof to the client that this server read
    /// its key.
    accept: HeaderValue,
}

/// Why a request cannot open a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotWebSocket(&'static str);

impl IntoResponse for NotWebSocket {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, self.0).into_response()
    }
}

impl Upgrade {
    /// Checks that `parts` asks for a WebSocket (RFC 6455 4.2.1) and takes
    /// its connection's upgrade.
    pub fn from_parts(parts: &mut Parts) -> Result<Upgrade, NotWebSocket> {
        if parts.version != Version::HTTP_11 {
            return Err(NotWebSocket("a WebSocket opens over HTTP/1.1"));
        }
        if parts.method != Method::GET {
            return Err(NotWebSocket("a WebSocket opens with GET"));
        }
        let h = &parts.headers;
        if !has_token(h, header::CONNECTION, "upgrade") {
            return Err(NotWebSocket("no \"Connection: Upgrade\" header"));
        }
        if !has_token(h, header::UPGRADE, "websocket") {
            return Err(NotWebSocket("no \"Upgrade: websocket\" header"));
        }
        if h.get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            return Err(NotWebSocket("no \"Sec-WebSocket-Version: 13\" header"));
        }
        let key = h
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(NotWebSocket("no \"Sec-WebSocket-Key\" header"))?;
        let accept = HeaderValue::try_from(derive_accept_key(key.as_bytes()))
            .map_err(|_| NotWebSocket("bad \"Sec-WebSocket-Key\" header"))?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(NotWebSocket("this connection cannot be upgraded"))?;
        Ok(Upgrade { on_upgrade, accept })
    }

    /// The `101` answer. Once hyper has sent it, `serve` runs with the
    /// socket, in its own task.
    pub fn respond<F, Fut>(self, config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(io) => {
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(io),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    serve(ws).await;
                }
                Err(e) => debug!("websocket upgrade failed: {e}"),
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        response
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotWebSocket;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Upgrade::from_parts(parts)
    }
}

/// Whether the comma-separated header `name` lists `token` (any case).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upgrade request of RFC 6455 1.2, as hyper hands it over.
    fn request() -> Parts {
        let mut r = http::Request::get("/api/chat")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        // What hyper puts on a request whose connection can be upgraded.
        let on = hyper::upgrade::on(http::Request::new(()));
        r.extensions_mut().insert(on);
        r.into_parts().0
    }

    #[tokio::test]
    async fn the_rfc_example_key_gets_its_accept_value() {
        let up = Upgrade::from_parts(&mut request()).unwrap();
        let r = up.respond(WebSocketConfig::default(), |_| async {});
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(r.headers()[header::CONNECTION], "upgrade");
        assert_eq!(r.headers()[header::UPGRADE], "websocket");
        // RFC 6455 1.3.
        assert_eq!(
            r.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn requests_that_are_not_upgrades_are_refused_with_the_reason() {
        type Spoil = fn(&mut Parts);
        let cases: [(Spoil, &str); 7] = [
            (|p| p.method = Method::POST, "GET"),
            (|p| p.version = Version::HTTP_10, "HTTP/1.1"),
            (
                |p| {
                    drop(
                        p.headers
                            .insert(header::CONNECTION, "close".parse().unwrap()),
                    )
                },
                "Connection",
            ),
            (|p| drop(p.headers.remove(header::UPGRADE)), "Upgrade:"),
            (
                |p| {
                    let v = "8".parse().unwrap();
                    drop(p.headers.insert(header::SEC_WEBSOCKET_VERSION, v))
                },
                "Version",
            ),
            (|p| drop(p.headers.remove(header::SEC_WEBSOCKET_KEY)), "Key"),
            (|p| drop(p.extensions.remove::<OnUpgrade>()), "upgraded"),
        ];
        for (spoil, reason) in cases {
            let mut p = request();
            spoil(&mut p);
            let e = Upgrade::from_parts(&mut p).unwrap_err();
            assert!(e.0.contains(reason), "{e:?} should name {reason}");
        }
    }

    #[test]
    fn connection_tokens_are_matched_whole_and_without_case() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, "keep-alive".parse().unwrap());
        h.append(header::CONNECTION, "UPGRADE".parse().unwrap());
        assert!(has_token(&h, header::CONNECTION, "upgrade"));
        h.insert(header::CONNECTION, "upgraded, no-upgrade".parse().unwrap());
        assert!(!has_token(&h, header::CONNECTION, "upgrade"));
    }
}

//! Accounts under attack, on a real server on port 0: revoked sessions stop
//! working on connections that are already open, login attempts are
//! limited across connections without locking the owner out, and a
//! registration flood neither makes accounts without bound nor slows the
//! other users down.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use sockit::accounts::{Accounts, Settings as AccountSettings};
use sockit::proto::{Connection, Frame, Limits};
use sockit::tls::Stream;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Conn = Connection<Stream>;

const PASSWORD: &str = "correct horse";
/// How long any single answer may take before a test gives up.
const PATIENCE: Duration = Duration::from_secs(30);

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Creates `name` the way `sockit admin add-user` does (the database, not
/// the server, so no limit is spent) and logs in for a token.
async fn user(srv: &common::TestServer, name: &str) -> String {
    let admin = Accounts::open(srv.data.path(), AccountSettings::default()).unwrap();
    let n = name.to_string();
    admin.run(move |a| a.add_user(&n, PASSWORD)).await.unwrap();
    admin
        .login(name.into(), PASSWORD.into(), None)
        .await
        .unwrap()
        .token
}

/// A framed connection from `source` (loopback accepts all of 127/8).
async fn framed_from(source: &str, addr: SocketAddr) -> Conn {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let mut conn = Connection::new(Stream::Plain(stream), Limits::default());
    let hello = call(&mut conn, Frame::new("hello").with("version", 1)).await;
    assert_eq!(hello.0.kind(), "hello", "{:?}", hello.0);
    conn
}

/// Reads one frame and its body.
async fn read(conn: &mut Conn) -> Option<(Frame, Vec<u8>)> {
    let frame = tokio::time::timeout(PATIENCE, conn.read_frame())
        .await
        .expect("an answer in time")
        .ok()??;
    let mut body = Vec::new();
    while let Some(chunk) = conn.read_body_chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    Some((frame, body))
}

async fn call(conn: &mut Conn, frame: Frame) -> (Frame, Vec<u8>) {
    conn.write_frame(&frame).await.unwrap();
    read(conn).await.expect("an answer, not the end")
}

fn code(f: &Frame) -> String {
    assert_eq!(f.kind(), "error", "{f:?}");
    f.str("code").unwrap_or("").to_string()
}

async fn authed(srv: &common::TestServer, token: &str) -> Conn {
    let mut c = common::framed_client(srv.framed).await;
    let (r, _) = call(&mut c, Frame::new("auth").with("token", token)).await;
    assert_eq!(r.kind(), "authed", "{r:?}");
    c
}

#[tokio::test]
async fn after_logout_on_one_connection_the_others_ls_get_whoami_and_put_get_unauthorized() {
    let srv = common::start(|_| {}).await;
    let token = user(&srv, "alice").await;
    let mut one = authed(&srv, &token).await;
    let mut two = authed(&srv, &token).await;
    let (r, _) = call(&mut two, Frame::new("ls").with("path", "")).await;
    assert_eq!(r.kind(), "listing", "{r:?}");

    let (r, _) = call(&mut one, Frame::new("logout")).await;
    assert_eq!(r.kind(), "logged_out", "{r:?}");

    for request in [
        Frame::new("whoami"),
        Frame::new("ls").with("path", ""),
        Frame::new("get").with("path", "a.txt"),
        Frame::new("stat").with("path", "a.txt"),
    ] {
        let what = request.kind().to_string();
        let (r, _) = call(&mut two, request).await;
        assert_eq!(code(&r), "unauthorized", "{what} after logout: {r:?}");
    }
    // An upload's body is skipped, and the connection goes on.
    let put = Frame::new("put")
        .with("path", "a.txt")
        .with("length", 5)
        .with_body_len(5);
    two.queue_frame(&put).unwrap();
    two.write_body(b"hello").await.unwrap();
    two.flush().await.unwrap();
    let (r, _) = read(&mut two).await.expect("an answer to put");
    assert_eq!(code(&r), "unauthorized", "put after logout: {r:?}");
    let (r, _) = call(&mut two, Frame::new("ping")).await;
    assert_eq!(r.kind(), "pong", "the connection stays usable: {r:?}");
    // The HTTP API agrees.
    let r = http()
        .get(format!("http://{}/api/whoami", srv.web))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    srv.stop().await;
}

/// Opens the chat WebSocket with a bearer token and reads `subscribed`.
async fn chat_socket(
    addr: SocketAddr,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let mut req = format!("ws://{addr}/api/chat")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    let first = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
    let Some(Ok(WsMessage::Text(t))) = first else {
        panic!("subscribed first, got {first:?}");
    };
    let v: Value = serde_json::from_str(t.as_str()).unwrap();
    assert_eq!(v["type"], "subscribed", "{v}");
    ws
}

#[tokio::test]
async fn an_admin_password_change_closes_framed_subscriptions_and_chat_sockets_within_2_s() {
    let srv = common::start(|_| {}).await;
    let token = user(&srv, "bob").await;
    let mut subscribed = authed(&srv, &token).await;
    let (r, _) = call(&mut subscribed, Frame::new("subscribe")).await;
    assert_eq!(r.kind(), "subscribed", "{r:?}");
    let mut idle = authed(&srv, &token).await;
    let mut ws = chat_socket(srv.web, &token).await;

    // `sockit admin passwd` opens the database in its own process.
    let data = srv.data.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        Accounts::open(&data, AccountSettings::default())
            .unwrap()
            .set_password("bob", "another horse")
    })
    .await
    .unwrap()
    .unwrap();
    let revoked = Instant::now();
    let bound = Duration::from_secs(2);

    // The framed subscription: `unauthorized`, then the end.
    let told = tokio::time::timeout(bound, async {
        loop {
            match read(&mut subscribed).await {
                Some((f, _)) if f.kind() == "error" => break f,
                Some(_) => continue,
                None => panic!("closed without an error frame"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the framed subscription still open {bound:?} after passwd"));
    assert_eq!(code(&told), "unauthorized", "{told:?}");
    assert!(read(&mut subscribed).await.is_none(), "closed after it");

    // The WebSocket: the error event, then a Close with 1008.
    let close = tokio::time::timeout(bound.saturating_sub(revoked.elapsed()), async {
        let mut told = false;
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    told |= v["type"] == "error" && v["code"] == "unauthorized";
                }
                Some(Ok(WsMessage::Close(c))) => break (told, c),
                Some(Ok(_)) => {}
                other => panic!("the socket ended without a Close: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the chat socket still open {bound:?} after passwd"));
    assert!(close.0, "an unauthorized error before the Close");
    let frame = close.1.expect("a Close with a code");
    assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
    assert!(revoked.elapsed() < bound, "{:?}", revoked.elapsed());

    // A connection without a subscription is logged out.
    let (r, _) = call(&mut idle, Frame::new("whoami")).await;
    assert_eq!(code(&r), "unauthorized", "{r:?}");
    srv.stop().await;
}

#[tokio::test]
async fn fifty_parallel_logins_from_one_address_get_10_per_minute_checked_and_the_owner_on_127_0_0_2_logs_in_at_once(
) {
    let srv = common::start(|_| {}).await;
    user(&srv, "carol").await;
    let started = Instant::now();
    let tries: Vec<_> = (0..50)
        .map(|i| {
            let addr = srv.framed;
            tokio::spawn(async move {
                let mut c = framed_from("127.0.0.1", addr).await;
                let guess = format!("guess {i}");
                let login = Frame::new("login")
                    .with("user", "carol")
                    .with("password", guess);
                let (r, _) = call(&mut c, login).await;
                code(&r)
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for t in tries {
        *codes.entry(t.await.unwrap()).or_default() += 1;
    }
    let elapsed = started.elapsed();
    // 10 per (account, address) per minute: a bucket of 10 that gains one
    // every 6 s.
    let allowed = 10 + (elapsed.as_secs() / 6) as usize;
    let checked = codes.get("bad_credentials").copied().unwrap_or(0);
    assert!(
        (10..=allowed).contains(&checked),
        "{checked} of 50 parallel guesses were checked in {elapsed:?} (at most {allowed}): {codes:?}"
    );
    assert_eq!(
        codes.get("rate_limited").copied().unwrap_or(0),
        50 - checked,
        "{codes:?}"
    );

    // The HTTP port counts in the same buckets: even the right password
    // waits from this address, and is told for how long.
    let r = http()
        .post(format!("http://{}/api/login", srv.web))
        .json(&json!({"name": "carol", "password": PASSWORD, "token": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");

    // The owner, from another address, is not locked out nor delayed.
    let owner = Instant::now();
    let mut c = framed_from("127.0.0.2", srv.framed).await;
    let login = Frame::new("login")
        .with("user", "carol")
        .with("password", PASSWORD);
    let (r, _) = tokio::time::timeout(Duration::from_secs(2), call(&mut c, login))
        .await
        .expect("the owner logs in within 2 s");
    assert_eq!(r.kind(), "logged_in", "{r:?}");
    assert!(
        owner.elapsed() < Duration::from_secs(2),
        "{:?}",
        owner.elapsed()
    );
    srv.stop().await;
}

/// Parallel registrations from one address.
const FLOOD: usize = 200;
/// Threads of the blocking pool in the flood test: few, so that a server
/// whose hashes hold threads while they wait runs out of them.
const BLOCKING_THREADS: usize = 16;

#[test]
fn a_registration_flood_gets_20_per_hour_then_429_while_others_stat_and_ls_stay_under_1_s() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let srv = common::start(|_| {}).await;
        let token = user(&srv, "dave").await;
        let mut framed = authed(&srv, &token).await;
        let client = http();
        let base = format!("http://{}", srv.web);

        let flood: Vec<_> = (0..FLOOD)
            .map(|i| {
                let (client, base) = (client.clone(), base.clone());
                tokio::spawn(async move {
                    let r = client
                        .post(format!("{base}/api/register"))
                        .json(&json!({"name": format!("bot{i}"), "password": PASSWORD}))
                        .send()
                        .await
                        .unwrap();
                    r.status().as_u16()
                })
            })
            .collect();
        let flooding = async {
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            for t in flood {
                *statuses.entry(t.await.unwrap()).or_default() += 1;
            }
            statuses
        };
        // Meanwhile dave works, and each request is timed.
        let working = async {
            let mut slowest = Duration::ZERO;
            for _ in 0..20 {
                let t = Instant::now();
                let (r, _) = call(&mut framed, Frame::new("stat").with("path", "")).await;
                assert_eq!(r.kind(), "stat", "{r:?}");
                slowest = slowest.max(t.elapsed());
                let t = Instant::now();
                let r = client
                    .get(format!("{base}/api/ls/"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                slowest = slowest.max(t.elapsed());
            }
            slowest
        };
        let (statuses, slowest) = tokio::join!(flooding, working);
        assert_eq!(
            statuses.get(&201).copied().unwrap_or(0),
            20,
            "{FLOOD} registrations from one address: {statuses:?}"
        );
        assert_eq!(
            statuses.get(&429).copied().unwrap_or(0),
            FLOOD - 20,
            "{statuses:?}"
        );
        assert!(
            slowest < Duration::from_secs(1),
            "another user's stat or /api/ls took {slowest:?} during the flood"
        );
        // The framed port shares the bucket.
        let mut c = common::framed_client(srv.framed).await;
        let register = Frame::new("register")
            .with("user", "bot-framed")
            .with("password", PASSWORD);
        let (r, _) = call(&mut c, register).await;
        assert_eq!(code(&r), "rate_limited", "{r:?}");
        srv.stop().await;
    });
}

//! The HTTP API of `sockit serve` (docs/http-api.md) on a real server on
//! port 0: sessions by cookie and bearer token, CSRF, uploads that resume,
//! checksums, and one store shared with the framed protocol.

mod common;

use base64::Engine as _;
use indicatif::ProgressBar;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha2::Digest as _;
use sockit::files::client::Client as FramedClient;

fn http() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn body(r: reqwest::Response) -> Value {
    let bytes = r.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&bytes) }))
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

struct Session {
    base: String,
    c: Client,
    token: String,
}

impl Session {
    fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }
    fn req(&self, m: reqwest::Method, p: &str) -> reqwest::RequestBuilder {
        self.c.request(m, self.url(p)).bearer_auth(&self.token)
    }
}

/// Registers `user` over HTTP and logs in for a bearer token.
async fn bearer(srv: &common::TestServer, user: &str) -> Session {
    let base = format!("http://{}", srv.web);
    let c = http();
    let creds = json!({ "name": user, "password": "correct horse" });
    let r = c
        .post(format!("{base}/api/register"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", body(r).await);
    let mut creds = creds;
    creds["token"] = json!(true);
    let r = c
        .post(format!("{base}/api/login"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("set-cookie").is_none(),
        "a token login sets no cookie"
    );
    let v = body(r).await;
    let token = v["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("sk_"));
    Session { base, c, token }
}

#[tokio::test]
async fn cookie_login_csrf_whoami_and_logout() {
    let srv = common::start(|_| {}).await;
    let base = format!("http://{}", srv.web);
    let c = http();
    // Not logged in: 401, and the app learns whether it may offer registration.
    let r = c.get(format!("{base}/api/whoami")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v = body(r).await;
    assert_eq!(v["error"], "unauthorized");
    assert_eq!(v["allow_register"], true);

    // Login needs JSON (a cross-site form cannot send it).
    let r = c
        .post(format!("{base}/api/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=a&password=b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let creds = json!({ "name": "alice", "password": "correct horse" });
    let r = c
        .post(format!("{base}/api/register"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .post(format!("{base}/api/register"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["error"], "exists");
    let wrong = json!({ "name": "alice", "password": "nope" });
    let r = c
        .post(format!("{base}/api/login"))
        .json(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(body(r).await["error"], "bad_credentials");

    let r = c
        .post(format!("{base}/api/login"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in [
        "sockit_session=sk_",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "no TLS here: {cookie}");
    let csrf = body(r).await["csrf"].as_str().unwrap().to_string();
    let session = cookie.split(';').next().unwrap().to_string();

    let r = c
        .get(format!("{base}/api/whoami"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = body(r).await;
    assert_eq!(v["user"], "alice");
    assert_eq!(v["csrf"], csrf.as_str());

    // A change with the cookie but without the CSRF header is refused, as is
    // one from another origin; with the header it works.
    let mkdir = |headers: Vec<(&'static str, String)>| {
        let mut rb = c
            .post(format!("{base}/api/mkdir"))
            .header("cookie", &session)
            .json(&json!({ "path": "photos/2026" }));
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        rb.send()
    };
    let r = mkdir(vec![]).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(body(r).await["error"], "csrf");
    let r = mkdir(vec![("x-sockit-csrf", "0".repeat(32))])
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = mkdir(vec![
        ("x-sockit-csrf", csrf.clone()),
        ("origin", "http://evil.example".into()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let r = mkdir(vec![
        ("x-sockit-csrf", csrf.clone()),
        ("sec-fetch-site", "cross-site".into()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let r = mkdir(vec![
        ("x-sockit-csrf", csrf.clone()),
        ("origin", base.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "{:?}", body(r).await);

    // Logout revokes the session for good and clears the cookie.
    let r = c
        .post(format!("{base}/api/logout"))
        .header("cookie", &session)
        .header("x-sockit-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = c
        .get(format!("{base}/api/whoami"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Security headers on API and app responses too.
    let r = c.get(format!("{base}/app/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    srv.stop().await;
}

#[tokio::test]
async fn registration_closed_is_403() {
    let srv = common::start(|c| c.accounts.allow_register = false).await;
    let r = http()
        .post(format!("http://{}/api/register", srv.web))
        .json(&json!({ "name": "bob", "password": "pw" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(body(r).await["error"], "registration_closed");
    srv.stop().await;
}

#[tokio::test]
async fn upload_list_download_move_delete_with_a_bearer_token() {
    let srv = common::start(|_| {}).await;
    let s = bearer(&srv, "carol").await;
    use reqwest::Method as M;
    let data = pattern(300_000, 1);
    let r = s
        .req(M::PUT, "/api/files/docs/r%C3%A9sum%C3%A9.bin")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v = body(r).await;
    assert_eq!(v["path"], "docs/résumé.bin");
    assert_eq!(v["length"], 300_000);
    assert_eq!(v["blake3"], blake3::hash(&data).to_hex().as_str());

    // Exists without overwrite; replaced with it.
    let r = s
        .req(M::PUT, "/api/files/docs/r%C3%A9sum%C3%A9.bin")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(body(r).await["error"], "exists");

    let r = s.req(M::GET, "/api/ls/").send().await.unwrap();
    let v = body(r).await;
    assert_eq!(v["entries"][0]["name"], "docs");
    assert_eq!(v["entries"][0]["kind"], "dir");
    let r = s.req(M::GET, "/api/ls/docs").send().await.unwrap();
    let v = body(r).await;
    assert_eq!(v["entries"][0]["name"], "résumé.bin");
    assert_eq!(v["entries"][0]["size"], 300_000);

    // Download: whole, a range, 304, the attachment name.
    let r = s
        .req(M::GET, "/api/files/docs/r%C3%A9sum%C3%A9.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cd.starts_with("attachment;") && cd.contains("filename*=UTF-8''r%C3%A9sum%C3%A9%2Ebin"),
        "{cd}"
    );
    let etag = r.headers()["etag"].clone();
    assert_eq!(r.bytes().await.unwrap()[..], data[..]);
    let r = s
        .req(M::GET, "/api/files/docs/r%C3%A9sum%C3%A9.bin")
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap()[..], data[1000..2000]);
    let r = s
        .req(M::GET, "/api/files/docs/r%C3%A9sum%C3%A9.bin")
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // Another user cannot see it.
    let other = bearer(&srv, "mallory").await;
    let r = other
        .req(M::GET, "/api/files/docs/r%C3%A9sum%C3%A9.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Move, then delete; a folder with content needs recursive.
    let r = s
        .req(M::POST, "/api/mv")
        .json(&json!({ "from": "docs/résumé.bin", "to": "cv.bin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.req(M::GET, "/api/files/cv.bin")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    s.req(M::PUT, "/api/files/docs/keep.txt")
        .body("k")
        .send()
        .await
        .unwrap();
    let r = s.req(M::DELETE, "/api/files/docs").send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(body(r).await["error"], "not_empty");
    assert_eq!(
        s.req(M::DELETE, "/api/files/docs?recursive=1")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        s.req(M::DELETE, "/api/files/cv.bin")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let r = s.req(M::GET, "/api/files/cv.bin").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(body(r).await["error"], "not_found");
    srv.stop().await;
}

#[tokio::test]
async fn hostile_paths_get_bad_path() {
    let srv = common::start(|_| {}).await;
    let s = bearer(&srv, "dave").await;
    use reqwest::Method as M;
    for p in [
        "/api/files/..%2f..%2fetc%2fpasswd",
        "/api/files/a%5cb",
        "/api/files/a%00b",
        "/api/files/.sockit-partial/x",
        "/api/files/%c0%ae%c0%ae/x",
    ] {
        let r = s.req(M::PUT, p).body("x").send().await.unwrap();
        assert_eq!(r.status(), 400, "{p}");
        assert_eq!(body(r).await["error"], "bad_path", "{p}");
    }
    // Dot segments as raw bytes (an HTTP client would resolve them).
    for target in [
        "/api/files/%2e%2e/x",
        "/api/files/../../x",
        "/api/files/a/%2E%2E/%2E%2E/x",
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = tokio::net::TcpStream::connect(srv.web).await.unwrap();
        let req = format!(
            "PUT {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
            s.token
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        sock.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{target}: {out}");
        assert!(out.contains("bad_path"), "{target}: {out}");
    }
    let r = s
        .req(M::POST, "/api/mv")
        .json(&json!({ "from": "a", "to": "../../x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["error"], "bad_path");
    srv.stop().await;
}

#[tokio::test]
async fn a_cut_upload_resumes_from_the_offset_the_server_confirms() {
    let srv = common::start(|_| {}).await;
    let s = bearer(&srv, "erin").await;
    use reqwest::Method as M;
    let data = pattern(3_000_000, 7);
    let total = data.len();
    let hdr = |req: reqwest::RequestBuilder| {
        req.header("x-sockit-upload-id", "file-123")
            .header("x-sockit-mtime", "1700000000000")
    };
    // Nothing held yet.
    let r = s
        .req(
            M::GET,
            &format!("/api/uploads/big.bin?length={total}&id=file-123&mtime=1700000000000"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["offset"], 0);
    // First chunk: 1 MB.
    let r = hdr(s.req(M::PUT, "/api/files/big.bin"))
        .header("content-range", format!("bytes 0-999999/{total}"))
        .body(data[..1_000_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(body(r).await["offset"], 1_000_000);
    // Not published yet.
    assert_eq!(
        s.req(M::GET, "/api/files/big.bin")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // A chunk from the wrong place is told where to continue.
    let r = hdr(s.req(M::PUT, "/api/files/big.bin"))
        .header("content-range", format!("bytes 2000000-2999999/{total}"))
        .body(data[2_000_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let v = body(r).await;
    assert_eq!(v["error"], "offset_mismatch");
    assert_eq!(v["offset"], 1_000_000);
    // A different upload id (another local file) does not share the partial.
    let r = s
        .req(
            M::GET,
            &format!("/api/uploads/big.bin?length={total}&id=other"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["offset"], 0);
    // The client asks where to go on, and sends the rest with both checksums.
    let r = s
        .req(
            M::GET,
            &format!("/api/uploads/big.bin?length={total}&id=file-123&mtime=1700000000000"),
        )
        .send()
        .await
        .unwrap();
    let offset = body(r).await["offset"].as_u64().unwrap() as usize;
    assert_eq!(offset, 1_000_000);
    let sha = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&data));
    let r = hdr(s.req(M::PUT, "/api/files/big.bin"))
        .header(
            "content-range",
            format!("bytes {offset}-{}/{total}", total - 1),
        )
        .header("x-sockit-blake3", blake3::hash(&data).to_hex().as_str())
        .header("repr-digest", format!("sha-256=:{sha}:"))
        .body(data[offset..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", body(r).await);
    let got = s
        .req(M::GET, "/api/files/big.bin")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got[..], data[..]);
    // The file keeps the mtime the client sent.
    let v = body(s.req(M::GET, "/api/ls/").send().await.unwrap()).await;
    assert_eq!(v["entries"][0]["mtime_ns"], 1_700_000_000_000_000_000i64);

    // A body cut off mid-way keeps what arrived.
    let mut sock = tokio::net::TcpStream::connect(srv.web).await.unwrap();
    let head = format!(
        "PUT /api/files/cut.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Range: bytes 0-{}/{total}\r\nContent-Length: {total}\r\nX-Sockit-Upload-Id: cut\r\n\r\n",
        s.token,
        total - 1
    );
    use tokio::io::AsyncWriteExt;
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&data[..500_000]).await.unwrap();
    sock.flush().await.unwrap();
    drop(sock);
    // The server sees the cut; poll the offset until the partial is synced.
    let mut held = 0;
    for _ in 0..200 {
        let r = s
            .req(
                M::GET,
                &format!("/api/uploads/cut.bin?length={total}&id=cut"),
            )
            .send()
            .await
            .unwrap();
        held = body(r).await["offset"].as_u64().unwrap();
        if held == 500_000 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(held, 500_000);
    srv.stop().await;
}

#[tokio::test]
async fn wrong_checksums_publish_nothing() {
    let srv = common::start(|_| {}).await;
    let s = bearer(&srv, "fred").await;
    use reqwest::Method as M;
    let r = s
        .req(M::PUT, "/api/files/a.txt")
        .header("x-sockit-blake3", blake3::hash(b"other").to_hex().as_str())
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(body(r).await["error"], "checksum_mismatch");
    let sha = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b"other"));
    let r = s
        .req(M::PUT, "/api/files/a.txt")
        .header("repr-digest", format!("sha-256=:{sha}:"))
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        s.req(M::GET, "/api/files/a.txt")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = s
        .req(M::PUT, "/api/files/a.txt")
        .header("x-sockit-blake3", "zz")
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    srv.stop().await;
}

#[tokio::test]
async fn quota_is_checked_before_any_byte_is_stored() {
    let srv = common::start(|c| c.files.quota = 100_000).await;
    let s = bearer(&srv, "gina").await;
    let r = s
        .req(reqwest::Method::PUT, "/api/files/big.bin")
        .body(vec![0u8; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(body(r).await["error"], "quota_exceeded");
    srv.stop().await;
}

#[tokio::test]
async fn one_store_for_http_and_the_framed_protocol() {
    let srv = common::start(|_| {}).await;
    let s = bearer(&srv, "hana").await;
    let dir = tempfile::tempdir().unwrap();
    // HTTP up, framed down.
    let data = pattern(2_500_000, 3);
    let r = s
        .req(reqwest::Method::PUT, "/api/files/from-web.bin")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut framed = FramedClient::connect(&srv.framed.to_string(), &sockit::tls::Transport::Plain)
        .await
        .unwrap();
    framed.auth(&s.token).await.unwrap();
    let local = dir.path().join("got.bin");
    framed
        .get_file("from-web.bin", &local, false, &ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&local).unwrap(), data);
    // Framed up, HTTP down.
    let src = dir.path().join("up.bin");
    let up = pattern(1_700_000, 9);
    std::fs::write(&src, &up).unwrap();
    framed
        .put_file(&src, "from-cli.bin", false, true, &ProgressBar::hidden())
        .await
        .unwrap();
    let got = s
        .req(reqwest::Method::GET, "/api/files/from-cli.bin")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got[..], up[..]);
    let names: Vec<String> = framed
        .list("", false)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    srv.stop().await;
}

#[tokio::test]
async fn the_static_site_is_served_beside_the_app() {
    let srv = common::start(|_| {}).await;
    let c = http();
    // The welcome page written into <data>/public on first start.
    let r = c.get(format!("http://{}/", srv.web)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("/app/"));
    std::fs::write(srv.data.path().join("public/about.html"), "<p>about</p>").unwrap();
    let r = c
        .get(format!("http://{}/about.html", srv.web))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "<p>about</p>");
    let r = c
        .get(format!("http://{}/app", srv.web))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    for asset in ["/app/app.js", "/app/app.css", "/app/"] {
        let r = c
            .get(format!("http://{}{asset}", srv.web))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
    }
    let r = c
        .get(format!("http://{}/api/nope", srv.web))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(body(r).await["error"], "not_found");
    srv.stop().await;
}

/// Opens the chat WebSocket by hand (the upgrade request, then the `101`),
/// with a bearer token; returns the socket, upgraded.
async fn open_chat_socket(addr: std::net::SocketAddr, token: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /api/chat HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "the upgrade answer ended early"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Whether the web port refuses a new connection (the runtime closes it
/// without a byte).
async fn web_refuses(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s
        .write_all(b"GET /api/whoami HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer or a close")
        .unwrap_or(0);
    n == 0
}

#[tokio::test]
async fn a_chat_socket_holds_its_connection_slot_until_it_closes() {
    let srv = common::start(|c| c.limits.max_connections = 2).await;
    let s = bearer(&srv, "wsuser").await;
    // reqwest keeps its connection: the first of the two slots.
    let web_open = || async {
        let v = body(
            s.req(reqwest::Method::GET, "/api/stats")
                .send()
                .await
                .unwrap(),
        )
        .await;
        v["server"]["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "web")
            .unwrap()["open"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(web_open().await, 1);
    let ws = open_chat_socket(srv.web, &s.token).await;
    assert_eq!(web_open().await, 2, "the socket counts as a connection");
    assert!(
        web_refuses(srv.web).await,
        "a third connection is refused while the socket is open"
    );
    drop(ws);
    // The server sees the socket close, then frees its slot.
    let mut open = web_open().await;
    for _ in 0..1000 {
        if open == 1 {
            break;
        }
        tokio::task::yield_now().await;
        open = web_open().await;
    }
    assert_eq!(open, 1, "the closed socket's slot is freed");
    assert!(
        !web_refuses(srv.web).await,
        "a new connection is served again"
    );
    // Shutdown waits for an open socket as for any connection, and the
    // relay closes it: the server stops well within its grace period.
    let mut ws = open_chat_socket(srv.web, &s.token).await;
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), srv.stop()).await;
    assert!(stopped.is_ok(), "the server waited out its grace period");
    let mut rest = Vec::new();
    use tokio::io::AsyncReadExt as _;
    let closed =
        tokio::time::timeout(std::time::Duration::from_secs(5), ws.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the socket was closed at shutdown");
}

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

/// The policy every byte a user uploaded is served with (docs/http-api.md).
const SANDBOX_CSP: &str =
    "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox";

/// Logs `user` in with a password for a session cookie, as the app does;
/// returns the `Cookie` header value.
async fn cookie(srv: &common::TestServer, user: &str) -> String {
    let r = http()
        .post(format!("http://{}/api/login", srv.web))
        .json(&json!({ "name": user, "password": "correct horse" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set = r.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

/// A header's text, or "" when absent.
fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or("<not text>"))
}

#[tokio::test]
async fn uploads_are_served_so_that_they_cannot_run_script() {
    let srv = common::start(|_| {}).await;
    let s = bearer(&srv, "ivan").await;
    let session = cookie(&srv, "ivan").await;
    use reqwest::Method as M;
    let page = "<!doctype html><script>fetch('/api/whoami')</script><script src=evil.js></script>";
    // name, bytes, Content-Type sent, inline allowed when asked.
    let files: [(&str, &[u8], &str, bool); 7] = [
        (
            "evil.html",
            page.as_bytes(),
            "text/plain; charset=utf-8",
            true,
        ),
        (
            "evil.js",
            b"fetch('/api/whoami')",
            "text/plain; charset=utf-8",
            true,
        ),
        (
            "evil.svg",
            b"<svg xmlns='http://www.w3.org/2000/svg'><script>fetch('/api/whoami')</script></svg>",
            "image/svg+xml",
            false,
        ),
        (
            "photo.png",
            b"\x89PNG\r\n\x1a\n not really",
            "image/png",
            true,
        ),
        (
            "report.pdf",
            b"%PDF-1.4 not really",
            "application/pdf",
            true,
        ),
        (
            "tone.wav",
            b"RIFF\0\0\0\0WAVE not really",
            "audio/wav",
            true,
        ),
        (
            "blob.bin",
            b"\x00\x01\x02\x03\x04",
            "application/octet-stream",
            false,
        ),
    ];
    for (name, bytes, _, _) in &files {
        let r = s
            .req(M::PUT, &format!("/api/files/{name}"))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{name}: {:?}", body(r).await);
    }
    for (name, bytes, content_type, inline_ok) in files {
        for by_cookie in [false, true] {
            let auth = |rb: reqwest::RequestBuilder| {
                if by_cookie {
                    rb.header("cookie", &session)
                } else {
                    rb.bearer_auth(&s.token)
                }
            };
            let url = |q: &str| s.url(&format!("/api/files/{name}{q}"));
            let etag = header(&auth(s.c.get(url(""))).send().await.unwrap(), "etag").to_string();
            let requests = [
                ("GET", auth(s.c.get(url("")))),
                ("GET ?inline=1", auth(s.c.get(url("?inline=1")))),
                ("HEAD ?inline=1", auth(s.c.head(url("?inline=1")))),
                (
                    "GET a range ?inline=1",
                    auth(s.c.get(url("?inline=1"))).header("range", "bytes=1-3"),
                ),
                (
                    "GET two ranges ?inline=1",
                    auth(s.c.get(url("?inline=1"))).header("range", "bytes=0-0,2-3"),
                ),
                (
                    "GET 304 ?inline=1",
                    auth(s.c.get(url("?inline=1"))).header("if-none-match", &etag),
                ),
                (
                    "GET 416 ?inline=1",
                    auth(s.c.get(url("?inline=1"))).header("range", "bytes=999-"),
                ),
            ];
            for (what, rb) in requests {
                let r = rb.send().await.unwrap();
                let at = format!("{what} {name} (by cookie: {by_cookie})");
                let want_status = match what {
                    w if w.contains("range") => 206,
                    w if w.contains("304") => 304,
                    w if w.contains("416") => 416,
                    _ => 200,
                };
                assert_eq!(r.status(), want_status, "{at}");
                // Media keep this origin (still without scripts) for the
                // browser's own player page, which fetches them with CORS.
                let want_csp = if content_type.starts_with("audio/") {
                    format!("{SANDBOX_CSP} allow-same-origin")
                } else {
                    SANDBOX_CSP.to_string()
                };
                assert_eq!(header(&r, "content-security-policy"), want_csp, "{at}");
                assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{at}");
                assert_eq!(
                    header(&r, "cross-origin-resource-policy"),
                    "same-origin",
                    "{at}"
                );
                assert_eq!(
                    header(&r, "cross-origin-opener-policy"),
                    "same-origin",
                    "{at}"
                );
                let disposition = header(&r, "content-disposition");
                let inline = what.contains("inline") && inline_ok;
                let want = if inline { "inline;" } else { "attachment;" };
                assert!(disposition.starts_with(want), "{at}: {disposition}");
                match want_status {
                    200 | 206 if what.contains("two ranges") => {
                        let ct = header(&r, "content-type").to_string();
                        assert!(ct.starts_with("multipart/byteranges"), "{at}: {ct}");
                        let text = String::from_utf8_lossy(&r.bytes().await.unwrap()).to_string();
                        assert!(
                            text.contains(&format!("Content-Type: {content_type}\r\n")),
                            "{at}: {text:?}"
                        );
                    }
                    200 | 206 => {
                        assert_eq!(header(&r, "content-type"), content_type, "{at}");
                        let got = r.bytes().await.unwrap();
                        match what {
                            w if w.starts_with("HEAD") => assert!(got.is_empty(), "{at}"),
                            w if w.contains("range") => assert_eq!(got[..], bytes[1..4], "{at}"),
                            _ => assert_eq!(got[..], bytes[..], "{at}"),
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    // The app and the API's own answers keep the app's policy; the site its own.
    let r = s
        .req(M::GET, "/api/files/nothing-here")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(header(&r, "content-security-policy").contains("script-src 'self'"));
    let r = http()
        .get(format!("http://{}/", srv.web))
        .send()
        .await
        .unwrap();
    assert!(!header(&r, "content-security-policy").contains("sandbox"));
    srv.stop().await;
}

/// `Repr-Digest: sha-256=:BASE64:` of `data`.
fn repr_digest(data: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(data));
    format!("sha-256=:{b64}:")
}

#[tokio::test]
async fn downloads_carry_the_digests_of_the_whole_file() {
    let srv = common::start(|_| {}).await;
    let s = bearer(&srv, "judy").await;
    use reqwest::Method as M;
    // The digests of `data` on a whole download, HEAD, one range and two.
    let check = |path: &'static str, data: Vec<u8>, sha: bool| {
        let s = &s;
        async move {
            let want_sha = if sha {
                repr_digest(&data)
            } else {
                String::new()
            };
            let want_blake3 = blake3::hash(&data).to_hex().to_string();
            let url = format!("/api/files/{path}");
            let cases = [
                (s.req(M::GET, &url), 200),
                (s.req(M::HEAD, &url), 200),
                (s.req(M::GET, &url).header("range", "bytes=10-19"), 206),
                (s.req(M::GET, &url).header("range", "bytes=0-0,-5"), 206),
            ];
            for (i, (rb, status)) in cases.into_iter().enumerate() {
                let r = rb.send().await.unwrap();
                assert_eq!(r.status(), status, "{path} case {i}");
                assert_eq!(header(&r, "repr-digest"), want_sha, "{path} case {i}");
                assert_eq!(
                    header(&r, "x-sockit-blake3"),
                    want_blake3,
                    "{path} case {i}"
                );
                if i == 0 {
                    assert_eq!(r.bytes().await.unwrap()[..], data[..]);
                } else if i == 2 {
                    assert_eq!(r.bytes().await.unwrap()[..], data[10..20]);
                }
            }
        }
    };

    // Over HTTP in one request, even without a digest sent.
    let data = pattern(700_000, 11);
    let r = s
        .req(M::PUT, "/api/files/one.bin")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    check("one.bin", data, true).await;

    // In two chunks (the app's way): the digests cover the whole file.
    let data = pattern(1_500_000, 12);
    let total = data.len();
    for (from, to) in [(0, 999_999), (1_000_000, total - 1)] {
        let r = s
            .req(M::PUT, "/api/files/chunked.bin")
            .header("x-sockit-upload-id", "chunked")
            .header("content-range", format!("bytes {from}-{to}/{total}"))
            .header("repr-digest", repr_digest(&data))
            .body(data[from..=to].to_vec())
            .send()
            .await
            .unwrap();
        assert!(r.status() == 202 || r.status() == 201, "{}", r.status());
    }
    check("chunked.bin", data.clone(), true).await;
    // Moved, the file keeps them.
    let r = s
        .req(M::POST, "/api/mkdir")
        .json(&json!({ "path": "dir" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .req(M::POST, "/api/mv")
        .json(&json!({ "from": "chunked.bin", "to": "dir/moved.bin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    check("dir/moved.bin", data, true).await;

    // Over the framed port: its BLAKE3 only (it computes no SHA-256).
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("up.bin");
    let data = pattern(300_000, 13);
    std::fs::write(&local, &data).unwrap();
    let mut framed = FramedClient::connect(&srv.framed.to_string(), &sockit::tls::Transport::Plain)
        .await
        .unwrap();
    framed.auth(&s.token).await.unwrap();
    framed
        .put_file(&local, "framed.bin", false, true, &ProgressBar::hidden())
        .await
        .unwrap();
    check("framed.bin", data, false).await;

    // Replaced over HTTP: the new file's digests.
    let data = pattern(200_000, 14);
    let r = s
        .req(M::PUT, "/api/files/framed.bin?overwrite=1")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    check("framed.bin", data, true).await;

    // Changed behind the store's back: no digest rather than a wrong one.
    let on_disk = srv.data.path().join("files/judy/one.bin");
    let mut changed = std::fs::read(&on_disk).unwrap();
    changed[0] ^= 0xff;
    std::fs::write(&on_disk, &changed).unwrap();
    let r = s.req(M::GET, "/api/files/one.bin").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "repr-digest"), "");
    assert_eq!(header(&r, "x-sockit-blake3"), "");
    assert_eq!(r.bytes().await.unwrap()[..], changed[..]);
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

/// Threads of this process (the server runs in it).
fn process_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Sends `request` on a connection whose receive buffer is 4 KiB, waits for
/// the response head (within 10 s) and returns the connection unread:
/// the body stalls on the server's side. `None` if no head came.
async fn stalled_download(
    addr: std::net::SocketAddr,
    request: String,
) -> (tokio::net::TcpStream, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let head = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        s.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    })
    .await
    .ok()
    .flatten();
    (s, head)
}

/// Downloads started by the attack that never read: half from the API,
/// half from the static site (which needs no account).
const STALLED_DOWNLOADS: usize = 600;
/// How long another user may wait for `/api/ls` meanwhile.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);
/// Process threads allowed while the stalled downloads are open: the
/// transfers' 64 disk reads, the runtimes' workers and room for metadata
/// work, and the runtimes and idle blocking threads of the other tests
/// running in this process meanwhile; a thread per download fills tokio's
/// pool of 512 (516 threads were seen before the fix).
const THREADS_AT_MOST: usize = 400;
/// The two 600-download tests count this process's threads: one at a time.
static STALLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_downloads_that_never_read_leave_api_ls_answered_within_2s() {
    let _one_at_a_time = STALLING.lock().await;
    // The per-address connection cap, a defence of its own, is lifted so
    // that this attack can come from one address.
    let srv = common::start(|c| c.limits.max_connections_per_address = 10_000).await;
    let attacker = bearer(&srv, "mallory").await;
    let victim = bearer(&srv, "victor").await;
    let big = pattern(16 << 20, 2);
    let space = srv.data.path().join("files/mallory");
    std::fs::create_dir_all(&space).unwrap();
    std::fs::write(space.join("big.bin"), &big).unwrap();
    std::fs::write(srv.data.path().join("public/big.bin"), &big).unwrap();

    let tasks: Vec<_> = (0..STALLED_DOWNLOADS)
        .map(|i| {
            let request = if i % 2 == 0 {
                format!(
                    "GET /api/files/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
                    attacker.token
                )
            } else {
                "GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n".to_string()
            };
            tokio::spawn(stalled_download(srv.web, request))
        })
        .collect();
    let mut stalled = Vec::new();
    let mut sending = 0;
    for t in tasks {
        let (s, head) = t.await.unwrap();
        sending += usize::from(head.is_some_and(|h| h.starts_with("HTTP/1.1 200")));
        stalled.push(s);
    }

    let t0 = std::time::Instant::now();
    let listed = tokio::time::timeout(
        ANSWER_WITHIN,
        victim.req(reqwest::Method::GET, "/api/ls/").send(),
    )
    .await;
    let threads = process_threads();
    let status = listed.ok().and_then(|r| r.ok()).map(|r| r.status());
    assert_eq!(
        status,
        Some(StatusCode::OK),
        "with {STALLED_DOWNLOADS} downloads that never read ({sending} of them sending), \
another user's /api/ls must be answered within {ANSWER_WITHIN:?}; waited {:?} ({threads} threads)",
        t0.elapsed()
    );
    assert!(
        threads <= THREADS_AT_MOST,
        "{STALLED_DOWNLOADS} stalled downloads ({sending} sending) hold {threads} threads; \
at most {THREADS_AT_MOST} allowed (no thread per download)"
    );
    assert_eq!(sending, STALLED_DOWNLOADS, "every download started");
    drop(stalled);
    srv.stop().await;
}

/// The HTTP/2 form of the same attack: 6 connections of 100 streams each,
/// with a flow-control window of 0, so that no stream can take a byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_http2_connections_of_100_zero_window_streams_leave_api_ls_answered_within_2s() {
    let _one_at_a_time = STALLING.lock().await;
    let srv = common::start(|c| c.limits.max_connections_per_address = 10_000).await;
    let victim = bearer(&srv, "victor").await;
    std::fs::write(srv.data.path().join("public/big.bin"), pattern(16 << 20, 3)).unwrap();
    let (mut clients, mut responses) = (Vec::new(), Vec::new());
    for _ in 0..6 {
        let tcp = tokio::net::TcpStream::connect(srv.web).await.unwrap();
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        for _ in 0..100 {
            let mut c = client.clone().ready().await.unwrap();
            let req = http::Request::get(format!("http://{}/big.bin", srv.web))
                .body(())
                .unwrap();
            let (response, _) = c.send_request(req, true).unwrap();
            responses.push(response);
        }
        clients.push(client);
    }
    // Response heads are not flow-controlled: every stream gets its 200,
    // and then its body waits for a window that never opens.
    let mut bodies = Vec::new();
    for r in responses {
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), r)
            .await
            .expect("a response head within 10 s")
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        bodies.push(r.into_body());
    }
    let t0 = std::time::Instant::now();
    let listed = tokio::time::timeout(
        ANSWER_WITHIN,
        victim.req(reqwest::Method::GET, "/api/ls/").send(),
    )
    .await;
    let threads = process_threads();
    let status = listed.ok().and_then(|r| r.ok()).map(|r| r.status());
    assert_eq!(
        status,
        Some(StatusCode::OK),
        "with 600 HTTP/2 streams at a zero window, another user's /api/ls must be answered \
within {ANSWER_WITHIN:?}; waited {:?} ({threads} threads)",
        t0.elapsed()
    );
    assert!(
        threads <= THREADS_AT_MOST,
        "600 HTTP/2 streams at a zero window hold {threads} threads; at most {THREADS_AT_MOST}"
    );
    drop((bodies, clients));
    srv.stop().await;
}

/// Opens the FIFO at `path` for writing, if a reader waits on it, and
/// closes it: a server stuck opening it is released, so a failing test
/// ends instead of waiting for its blocked thread at shutdown.
fn release_fifo(path: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

/// Makes a FIFO at `path` (as an administrator could plant one).
fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a plain system call with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[tokio::test]
async fn a_fifo_is_refused_at_once_with_403_by_the_api_and_the_site() {
    let srv = common::start(|_| {}).await;
    let s = bearer(&srv, "fifi").await;
    let space = srv.data.path().join("files/fifi");
    std::fs::create_dir_all(&space).unwrap();
    mkfifo(&space.join("pipe"));
    mkfifo(&srv.data.path().join("public/pipe"));
    let r = tokio::time::timeout(
        ANSWER_WITHIN,
        s.req(reqwest::Method::GET, "/api/files/pipe").send(),
    )
    .await;
    release_fifo(&space.join("pipe"));
    let r = r
        .expect("a download of a FIFO is refused within 2 s, not left waiting for a writer")
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(body(r).await["error"], "not_a_file");
    let r = tokio::time::timeout(
        ANSWER_WITHIN,
        s.c.get(format!("http://{}/pipe", srv.web)).send(),
    )
    .await;
    release_fifo(&srv.data.path().join("public/pipe"));
    let r = r
        .expect("the site refuses a FIFO within 2 s, not left waiting for a writer")
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    srv.stop().await;
}

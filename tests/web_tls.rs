//! The web port over HTTPS (`web.tls`, `sockit serve --web-tls`,
//! `sockit web --tls`), on port 0 with the self-signed certificate the
//! server makes in its data directory: HTTP/2 by ALPN, HSTS, `Secure`
//! cookies, a `308` for plain HTTP on the HTTPS port, clients that do not
//! trust the certificate refused, and timeouts before and during the
//! handshake.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode, Version};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The certificate the server made in `data` on its first start.
fn cert_pem(data: &Path) -> Vec<u8> {
    std::fs::read(data.join("tls/cert.pem")).expect("the generated certificate")
}

/// A client that trusts only the certificate in `pem`.
fn trusting(pem: &[u8]) -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = reqwest::Certificate::from_pem(pem).unwrap();
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([cert])
}

/// Starts `sockit serve` in-process with the web port on HTTPS.
async fn start_https() -> (common::TestServer, Client) {
    let srv = common::start(|c| c.web.tls = true).await;
    let client = trusting(&cert_pem(srv.data.path())).build().unwrap();
    (srv, client)
}

#[tokio::test]
async fn https_speaks_http2_by_alpn_and_http1_to_who_asks_with_hsts() {
    let (srv, c) = start_https().await;
    let url = format!("https://{}/", srv.web);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), Version::HTTP_2, "ALPN h2");
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    assert!(r.text().await.unwrap().contains("sockit is running"));

    let h1 = trusting(&cert_pem(srv.data.path()))
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), Version::HTTP_11, "ALPN http/1.1");
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");

    // Errors carry it too, and the API's answers.
    let r = c
        .get(format!("https://{}/nope", srv.web))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    let r = c
        .get(format!("https://{}/api/whoami", srv.web))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    srv.stop().await;
}

#[tokio::test]
async fn plain_http_sends_no_hsts() {
    let srv = common::start(|_| {}).await;
    let text = common::raw(
        srv.web,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{text}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn the_session_cookie_is_secure_over_https() {
    let (srv, c) = start_https().await;
    let base = format!("https://{}", srv.web);
    let creds = json!({ "name": "alice", "password": "correct horse" });
    let r = c
        .post(format!("{base}/api/register"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .post(format!("{base}/api/login"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), Version::HTTP_2);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in [
        "sockit_session=sk_",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
    ] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    let csrf = r.json::<serde_json::Value>().await.unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    // The session works over HTTPS, changes included: HTTP/2 has no `Host`
    // header (the host is in `:authority`), and the same-origin check of a
    // browser's request still sees its own origin.
    let session = cookie.split(';').next().unwrap().to_string();
    let r = c
        .get(format!("{base}/api/whoami"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mkdir = |origin: String| {
        c.post(format!("{base}/api/mkdir"))
            .header("cookie", &session)
            .header("x-sockit-csrf", &csrf)
            .header("origin", origin)
            .json(&json!({ "path": "photos" }))
            .send()
    };
    let r = mkdir("https://evil.example".into()).await.unwrap();
    assert_eq!(r.status(), 403);
    let r = mkdir(base.clone()).await.unwrap();
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    srv.stop().await;
}

#[tokio::test]
async fn plain_http_on_the_https_port_gets_a_308_to_the_https_url() {
    let (srv, c) = start_https().await;
    let port = srv.web.port();
    let text = common::raw(
        srv.web,
        format!("GET /app/?x=1&y=%20z HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        text.starts_with("HTTP/1.1 308 Permanent Redirect\r\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\r\nlocation: https://localhost:{port}/app/?x=1&y=%20z\r\n"
        )),
        "{text}"
    );
    assert!(
        !text
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "HSTS is not sent over plain HTTP: {text}"
    );
    // The connection was closed after the answer (`raw` read to the end),
    // even though HTTP/1.1 keeps connections open by default.

    // A POST is redirected the same way (308 keeps the method).
    let text = common::raw(
        srv.web,
        format!(
            "POST /api/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 2\r\n\r\n{{}}"
        )
        .as_bytes(),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 308"), "{text}");
    assert!(
        text.contains(&format!(
            "\r\nlocation: https://127.0.0.1:{port}/api/login\r\n"
        )),
        "{text}"
    );

    // No host to send the client to: 400 with a word of explanation.
    let text = common::raw(srv.web, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.0 400"), "{text}");
    assert!(text.contains("This port speaks HTTPS"), "{text}");

    // Not HTTP at all: hyper refuses it, nobody hand-parses it.
    let text = common::raw(srv.web, b"\x00\x01garbage\r\n\r\n").await;
    assert!(!text.contains("location:"), "{text}");

    // What a real client sees, and following the redirect lands on HTTPS.
    let plain = format!("http://{}/app/", srv.web);
    let r = c.get(&plain).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, format!("https://{}/app/", srv.web));
    let r = c.get(&location).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), Version::HTTP_2);
    srv.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let (srv, trusted) = start_https().await;
    let url = format!("https://{}/", srv.web);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let system_roots = Client::builder().no_proxy().build().unwrap();
    let err = system_roots
        .get(&url)
        .send()
        .await
        .expect_err("a self-signed certificate is not trusted by default");
    assert!(err.is_connect(), "{err:?}");
    let chain = format!("{err:?}").to_ascii_lowercase();
    assert!(chain.contains("certificate"), "{chain}");

    // Another certificate as the only root: refused too.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let other_only = trusting(other.cert.pem().as_bytes()).build().unwrap();
    let err = other_only.get(&url).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    // The server shrugs it off and serves the next client.
    let r = trusted.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    srv.stop().await;
}

#[tokio::test]
async fn silent_clients_and_stalled_handshakes_are_dropped_after_the_header_timeout() {
    let srv = common::start(|c| {
        c.web.tls = true;
        c.web.header_timeout = Duration::from_millis(500);
    })
    .await;
    // Each stalls at another point: before its first byte, after the first
    // byte of a TLS record, in a plain request's headers.
    let stalls: [&[u8]; 3] = [b"", b"\x16\x03\x01", b"GET / HTTP/1.1\r\nHo"];
    for stall in stalls {
        let started = Instant::now();
        let mut s = TcpStream::connect(srv.web).await.unwrap();
        s.write_all(stall).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "{stall:?}: still open after 10 s");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(5),
            "{stall:?}: closed after {took:?}"
        );
    }
    srv.stop().await;
}

/// A `sockit web --tls` process with what it logged before listening, and
/// its later log lines as they come.
struct WebProcess {
    child: Child,
    addr: String,
    fingerprint: String,
    log: std::sync::mpsc::Receiver<String>,
}

impl WebProcess {
    fn start(site: &Path, config_dir: &Path, extra: &[&str]) -> WebProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sockit"))
            .args(["web", "--tls", "--bind", "127.0.0.1:0"])
            .args(extra)
            .arg(site)
            .env("SOCKIT_CONFIG_DIR", config_dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let mut fingerprint = None;
        let addr = loop {
            line.clear();
            assert!(err.read_line(&mut line).unwrap() > 0, "exited early");
            if line.contains("TLS certificate") {
                fingerprint = line
                    .split("fingerprint=")
                    .nth(1)
                    .map(|f| f.trim().to_string());
            }
            if line.contains("listening") {
                break line.split("addr=").nth(1).unwrap().trim().to_string();
            }
        };
        // Keep reading (a process whose log cannot be written does not stop
        // on SIGTERM), and pass the lines on for `log_line`.
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        WebProcess {
            child,
            addr,
            fingerprint: fingerprint.expect("the fingerprint is logged at start"),
            log,
        }
    }

    /// The next log line that contains `needle` (within 10 s).
    fn log_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?}: {e}"),
            }
        }
    }

    /// SIGTERM, then waits for exit 0 off the runtime, which goes on
    /// driving the test's HTTP/2 connections: the server's goodbye (GOAWAY
    /// and a PING) wants an answer before it closes them.
    async fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = tokio::task::spawn_blocking(move || self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(exited.success(), "exit 0 after SIGTERM");
    }
}

impl Drop for WebProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_cli_serves_https_with_a_certificate_made_once_in_the_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), "<h1>hi</h1>").unwrap();
    let config = dir.path().join("config");
    let web = WebProcess::start(&site, &config, &[]);
    let pem =
        std::fs::read(config.join("web-tls/tls/cert.pem")).expect("made in the config folder");
    let der = sockit::tls::server::read_certs(&config.join("web-tls/tls/cert.pem")).unwrap();
    assert_eq!(web.fingerprint, sockit::tls::fingerprint(&der[0]));
    let c = trusting(&pem).build().unwrap();
    let r = c
        .get(format!("https://{}/", web.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.text().await.unwrap(), "<h1>hi</h1>");
    web.stop().await;

    // The next start keeps it: clients that trust it still do.
    let again = WebProcess::start(&site, &config, &[]);
    assert_eq!(again.fingerprint, sockit::tls::fingerprint(&der[0]));
    let r = c
        .get(format!("https://{}/", again.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    again.stop().await;

    // --data-dir puts it elsewhere.
    let data = dir.path().join("data");
    let elsewhere = WebProcess::start(&site, &config, &["--data-dir", data.to_str().unwrap()]);
    assert!(data.join("tls/cert.pem").is_file());
    assert_ne!(elsewhere.fingerprint, sockit::tls::fingerprint(&der[0]));
    elsewhere.stop().await;
}

#[tokio::test]
async fn the_cli_serves_https_with_a_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("a.txt"), "A").unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let config = dir.path().join("config");
    let web = WebProcess::start(
        &site,
        &config,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(web.fingerprint, sockit::tls::fingerprint(made.cert.der()));
    assert!(
        !config.exists(),
        "nothing is made when a certificate is given"
    );
    let port = web.addr.rsplit(':').next().unwrap().to_string();
    let c = trusting(made.cert.pem().as_bytes())
        .resolve("localhost", web.addr.parse().unwrap())
        .build()
        .unwrap();
    let r = c
        .get(format!("https://localhost:{port}/a.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    assert_eq!(r.text().await.unwrap(), "A");
    let line = web.log_line("path=/a.txt");
    assert!(line.contains("status=200"), "{line}");
    // A plain request on the HTTPS port gets its 308 and its access line.
    let text = common::raw(
        web.addr.parse().unwrap(),
        format!("GET /a.txt?x=1 HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 308"), "{text}");
    let line = web.log_line("path=/a.txt?x=1");
    assert!(
        line.contains("status=308") && line.contains("method=GET"),
        "{line}"
    );
    web.stop().await;
}

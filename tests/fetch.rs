//! `sockit fetch` as a user runs it: the real binary against small HTTP
//! servers built on hyper, on 127.0.0.1 port 0, plain, h2c and TLS.
//!
//! One test server serves every route; a shared [`State`] lets a test cut
//! the connection after K bytes, change the file (and its ETag) between two
//! runs, and read back what each request carried.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LOCATION, RANGE, USER_AGENT,
};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Length of `/big`: a few MiB, many reads and writes.
const BIG: usize = 3 * 1024 * 1024 + 12_345;

type Body = BoxBody<Bytes, io::Error>;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    version: hyper::Version,
    range: Option<String>,
    if_range: Option<String>,
    user_agent: Option<String>,
    x_test: Option<String>,
    status: u16,
}

/// What the tests steer and read.
#[derive(Default)]
struct State {
    /// Version of `/big`: its bytes and its ETag change with it.
    generation: AtomicU32,
    /// Cut the connection once `/big` has sent this absolute offset (0: never).
    cut_at: AtomicU64,
    /// Requests to `/loop` (to count redirects).
    loops: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

impl State {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

/// The bytes of `/big` in one generation.
fn big(generation: u32) -> Bytes {
    (0..BIG)
        .map(|i| ((i * 31 + generation as usize * 7 + i / 4093) % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

fn etag(generation: u32) -> String {
    format!("\"v{generation}\"")
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// `data[start..]` in 64 KiB frames, or up to `cut` and then a broken
/// connection. The pause before the error lets hyper flush every byte up to
/// the cut, so the client holds exactly `cut` bytes.
fn chunked(data: Bytes, start: usize, cut: Option<usize>) -> Body {
    let end = cut.map_or(data.len(), |c| c.min(data.len()));
    let frames: Vec<Result<Frame<Bytes>, io::Error>> = (start..end)
        .step_by(64 * 1024)
        .map(|i| Ok(Frame::data(data.slice(i..(i + 64 * 1024).min(end)))))
        .collect();
    let stream = futures_util::stream::iter(frames);
    if end == data.len() {
        return BodyExt::boxed(StreamBody::new(stream));
    }
    let broken = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Err(io::Error::other("cut by the test"))
    });
    BodyExt::boxed(StreamBody::new(stream.chain(broken)))
}

fn redirect(status: StatusCode, to: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(LOCATION, to)
        .body(full(""))
        .unwrap()
}

/// `/big` with ranges, If-Range and the optional cut.
fn serve_big(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let generation = state.generation.load(Ordering::SeqCst);
    let (data, tag) = (big(generation), etag(generation));
    let cut = match state.cut_at.load(Ordering::SeqCst) {
        0 => None,
        k => Some(k as usize),
    };
    let start = req
        .headers()
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok());
    let validator_ok = req
        .headers()
        .get(IF_RANGE)
        .map_or(true, |v| v == tag.as_str());
    let builder = Response::builder()
        .header(ETAG, &tag)
        .header("accept-ranges", "bytes");
    match start.filter(|_| validator_ok) {
        Some(n) if n >= data.len() => builder
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(CONTENT_RANGE, format!("bytes */{}", data.len()))
            .body(full(""))
            .unwrap(),
        Some(n) => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                CONTENT_RANGE,
                format!("bytes {n}-{}/{}", data.len() - 1, data.len()),
            )
            .header(CONTENT_LENGTH, data.len() - n)
            .body(chunked(data, n, cut))
            .unwrap(),
        None => builder
            .header(CONTENT_LENGTH, data.len())
            .body(chunked(data, 0, cut))
            .unwrap(),
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let response = match path.as_str() {
        "/big" => serve_big(&state, &req),
        "/small" => Response::new(full("hello\n")),
        "/r1" => redirect(StatusCode::MOVED_PERMANENTLY, "/r2"),
        "/r2" => redirect(StatusCode::FOUND, "/small"),
        "/loop" => {
            state.loops.fetch_add(1, Ordering::SeqCst);
            redirect(StatusCode::FOUND, "/loop")
        }
        "/to-ftp" => redirect(StatusCode::FOUND, "ftp://127.0.0.1/file"),
        "/version" => Response::new(full(format!("{:?}", req.version()))),
        "/never" => std::future::pending().await,
        "/stall" => {
            // Ten bytes of the promised thousand, then silence.
            let body =
                futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(b"0123456789")))])
                    .chain(futures_util::stream::pending());
            Response::builder()
                .header(CONTENT_LENGTH, 1000)
                .body(BodyExt::boxed(StreamBody::new(body)))
                .unwrap()
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full("not here\n"))
            .unwrap(),
    };
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(String::from)
    };
    state.seen.lock().unwrap().push(Seen {
        path,
        version: req.version(),
        range: header(RANGE),
        if_range: header(IF_RANGE),
        user_agent: header(USER_AGENT),
        x_test: header(hyper::header::HeaderName::from_static("x-test")),
        status: response.status().as_u16(),
    });
    Ok(response)
}

/// A running test server.
struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Serves HTTP/1.1 and HTTP/2 (by preface, so h2c too) on port 0, over TLS
/// when given an acceptor.
async fn start(tls: Option<TlsAcceptor>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(State::default());
    let st = state.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (st, tls) = (st.clone(), tls.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(st.clone(), req));
                let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // A failed connection (a cut, a refused certificate) only ends itself.
                let _ = match tls {
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                        Err(_) => Ok(()),
                    },
                };
            });
        }
    });
    Server { addr, state, task }
}

/// What one run of the binary did.
struct Run {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
    took: Duration,
}

impl Run {
    /// The one line of stderr, for a failed run that printed nothing.
    fn error_line(&self) -> &str {
        assert!(self.stdout.is_empty(), "stdout: {:?}", self.stdout);
        self.error_line_after_output()
    }

    /// The one line of stderr, for a failed run (stdout aside: a body that
    /// breaks off has streamed its start already).
    fn error_line_after_output(&self) -> &str {
        assert!(!self.ok, "expected a failure, stderr: {}", self.stderr);
        assert_eq!(self.stderr.lines().count(), 1, "{}", self.stderr);
        let line = self.stderr.trim_end();
        assert!(line.starts_with("sockit: "), "{line}");
        line
    }
}

async fn fetch(args: &[&str]) -> Run {
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sockit"))
        .arg("fetch")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_body_streams_to_stdout_byte_exact() {
    let srv = start(None).await;
    let run = fetch(&[&srv.url("/big")]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stdout == big(0), "got {} bytes", run.stdout.len());
    assert_eq!(run.stderr, "", "nothing but the body, and no noise");
    let seen = srv.state.seen_at("/big");
    assert_eq!(
        seen[0].user_agent.as_deref(),
        Some(concat!("sockit/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(seen[0].version, hyper::Version::HTTP_11);
}

#[tokio::test(flavor = "multi_thread")]
async fn dash_o_saves_the_file_atomically_and_leaves_nothing_behind() {
    let srv = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    // A stale part from some earlier run is replaced, not continued, without -c.
    std::fs::write(dir.path().join("big.bin.part"), b"garbage").unwrap();
    let run = fetch(&[&srv.url("/big"), "-o", s(&file), "-H", "X-Test: yes please"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(std::fs::read(&file).unwrap() == big(0));
    assert_eq!(
        run.stderr.trim_end(),
        format!("{} ({BIG} bytes, HTTP/1.1)", file.display())
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["big.bin"]);
    let seen = srv.state.seen_at("/big");
    assert_eq!(seen[0].x_test.as_deref(), Some("yes please"));
    assert_eq!(seen[0].range, None);

    // -q: no summary; -o - is stdout.
    let run = fetch(&[&srv.url("/small"), "-q", "-o", "-"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, b"hello\n");
    assert_eq!(run.stderr, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_chain_is_followed() {
    let srv = start(None).await;
    let run = fetch(&[&srv.url("/r1")]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, b"hello\n");
    let paths: Vec<_> = srv
        .state
        .seen()
        .into_iter()
        .map(|s| (s.path, s.status))
        .collect();
    assert_eq!(
        paths,
        [
            ("/r1".to_string(), 301),
            ("/r2".to_string(), 302),
            ("/small".to_string(), 200)
        ]
    );
    // One fewer allowed than the chain has: refused.
    let run = fetch(&[&srv.url("/r1"), "--max-redirects", "1"]).await;
    assert!(run.error_line().contains("too many redirects"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_redirect_loop_stops_with_too_many_redirects() {
    let srv = start(None).await;
    let url = srv.url("/loop");
    let run = fetch(&[&url]).await;
    assert_eq!(
        run.error_line(),
        format!("sockit: too many redirects (more than 10) starting from {url}")
    );
    // The first request and ten redirects were followed; the eleventh was not.
    assert_eq!(srv.state.loops.load(Ordering::SeqCst), 11);

    srv.state.loops.store(0, Ordering::SeqCst);
    let run = fetch(&[&url, "--max-redirects", "3"]).await;
    assert!(run.error_line().contains("(more than 3)"));
    assert_eq!(srv.state.loops.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_is_one_line_nothing_on_stdout_and_no_file() {
    let srv = start(None).await;
    let url = srv.url("/missing");
    let run = fetch(&[&url]).await;
    assert_eq!(
        run.error_line(),
        format!("sockit: HTTP 404 Not Found: {url}")
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x");
    let run = fetch(&[&url, "-o", s(&file)]).await;
    assert!(run.error_line().contains("HTTP 404 Not Found"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_download_resumes_with_continue() {
    let srv = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let part = dir.path().join("big.bin.part");
    let cut = 1024 * 1024 + 123;
    srv.state.cut_at.store(cut, Ordering::SeqCst);

    let run = fetch(&[&srv.url("/big"), "-o", s(&file)]).await;
    let line = run.error_line();
    assert!(line.contains(&format!("broke after {cut} bytes")), "{line}");
    assert!(!file.exists(), "a failed download never shows as the file");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), cut);
    assert!(std::fs::read(&part).unwrap() == big(0)[..cut as usize]);

    // The server recovers; -c asks for the rest only, from the same version.
    srv.state.cut_at.store(0, Ordering::SeqCst);
    let run = fetch(&[&srv.url("/big"), "-o", s(&file), "-c"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "{} ({BIG} bytes, HTTP/1.1, resumed at byte {cut})",
            file.display()
        )
    );
    assert!(std::fs::read(&file).unwrap() == big(0), "bytes differ");
    assert!(!part.exists());
    assert!(!dir.path().join("big.bin.part.sockit").exists());
    let last = srv.state.seen_at("/big").pop().unwrap();
    assert_eq!(last.range, Some(format!("bytes={cut}-")));
    assert_eq!(last.if_range.as_deref(), Some("\"v0\""));
    assert_eq!(last.status, 206);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_between_runs_starts_over_from_zero() {
    let srv = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    srv.state.cut_at.store(500_000, Ordering::SeqCst);
    let run = fetch(&[&srv.url("/big"), "-o", s(&file)]).await;
    assert!(!run.ok);

    // New content, new ETag: If-Range no longer matches, the server sends it all.
    srv.state.cut_at.store(0, Ordering::SeqCst);
    srv.state.generation.store(1, Ordering::SeqCst);
    let run = fetch(&[&srv.url("/big"), "-o", s(&file), "-c"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stderr.contains("starting over"),
        "says so: {}",
        run.stderr
    );
    assert!(
        std::fs::read(&file).unwrap() == big(1),
        "the new version, whole"
    );
    let last = srv.state.seen_at("/big").pop().unwrap();
    assert_eq!(last.range.as_deref(), Some("bytes=500000-"));
    assert_eq!(last.if_range.as_deref(), Some("\"v0\""));
    assert_eq!(last.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_that_is_already_whole_is_finished_on_416() {
    let srv = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    // A complete part with no sidecar (left by another tool): resumed as wget -c does.
    std::fs::write(dir.path().join("big.bin.part"), big(0)).unwrap();
    let run = fetch(&[&srv.url("/big"), "-o", s(&file), "-c", "-q"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    assert!(std::fs::read(&file).unwrap() == big(0));
    let last = srv.state.seen_at("/big").pop().unwrap();
    assert_eq!(last.range, Some(format!("bytes={BIG}-")));
    assert_eq!(last.status, 416);
}

#[tokio::test(flavor = "multi_thread")]
async fn continue_needs_a_file() {
    let run = fetch(&["http://127.0.0.1:9/", "-c"]).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("--output"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_times_out() {
    let srv = start(None).await;
    let url = srv.url("/never");
    let run = fetch(&[&url, "--timeout", "1s"]).await;
    assert_eq!(
        run.error_line(),
        format!("sockit: timed out after 1s (--timeout) fetching {url}")
    );
    assert!(run.took < Duration::from_secs(10), "{:?}", run.took);
    // The idle timeout alone catches it too.
    let run = fetch(&[&url, "--idle-timeout", "0.5"]).await;
    assert!(
        run.error_line().contains("no answer from 127.0.0.1:"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_does_not_open_fails_on_the_connect_timeout() {
    // A listener that never accepts, with its accept queue full: Linux then
    // drops further SYNs, so a new connection can only time out.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let _queued: Vec<_> = (0..4)
        .filter_map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            s.connect_timeout(&addr.into(), Duration::from_millis(200))
                .ok()?;
            Some(s)
        })
        .collect();
    let run = fetch(&[&format!("http://{addr}/"), "--connect-timeout", "300ms"]).await;
    assert_eq!(
        run.error_line(),
        format!("sockit: cannot connect to {addr}: no answer within 300ms (--connect-timeout)")
    );
    assert!(run.took < Duration::from_secs(5), "{:?}", run.took);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_fails_on_the_idle_timeout() {
    let srv = start(None).await;
    let run = fetch(&[&srv.url("/stall"), "--idle-timeout", "500ms"]).await;
    assert_eq!(run.stdout, b"0123456789", "streamed as it came");
    let line = run.error_line_after_output();
    assert!(
        line.contains("stalled: nothing received for 500ms after 10 bytes"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_connection_is_one_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = fetch(&[&format!("http://127.0.0.1:{port}/")]).await;
    assert_eq!(
        run.error_line(),
        format!("sockit: connection refused by 127.0.0.1:{port}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_host_bad_url_and_unsupported_scheme_are_one_line() {
    let run = fetch(&["http://nonexistent.invalid/"]).await;
    assert!(
        run.error_line()
            .starts_with("sockit: cannot resolve host nonexistent.invalid"),
        "{}",
        run.stderr
    );
    let run = fetch(&["not a url"]).await;
    assert!(run
        .error_line()
        .starts_with("sockit: bad URL \"not a url\""));
    let run = fetch(&["ftp://127.0.0.1/file"]).await;
    assert_eq!(
        run.error_line(),
        "sockit: unsupported URL scheme \"ftp\" in ftp://127.0.0.1/file: sockit fetch speaks http and https"
    );
    // Redirected there: the same answer.
    let srv = start(None).await;
    let run = fetch(&[&srv.url("/to-ftp")]).await;
    assert!(
        run.error_line()
            .starts_with("sockit: unsupported URL scheme \"ftp\""),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_with_prior_knowledge_and_head() {
    let srv = start(None).await;
    let run = fetch(&[&srv.url("/version"), "--http2-prior-knowledge"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, b"HTTP/2.0");
    let run = fetch(&[&srv.url("/big"), "--http2-prior-knowledge", "-o", "-"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stdout == big(0));
    assert!(srv
        .state
        .seen()
        .iter()
        .all(|s| s.version == hyper::Version::HTTP_2));

    let run = fetch(&[&srv.url("/big"), "-I"]).await;
    assert!(run.ok, "{}", run.stderr);
    let head = String::from_utf8(run.stdout).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("etag: \"v0\"\r\n"), "{head}");
    assert!(
        head.contains(&format!("content-length: {BIG}\r\n")),
        "{head}"
    );
}

/// A CA, a certificate for `localhost` signed by it, and an acceptor
/// offering h2 and http/1.1 by ALPN. Returns the acceptor and the CA's PEM.
fn tls_setup() -> (TlsAcceptor, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sockit test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (TlsAcceptor::from(Arc::new(config)), ca.pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_needs_cacert_for_a_private_ca_and_negotiates_h2() {
    let (acceptor, ca_pem) = tls_setup();
    let srv = start(Some(acceptor)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let url = format!("https://localhost:{}/version", srv.addr.port());

    let run = fetch(&[&url]).await;
    let line = run.error_line();
    assert!(
        line.starts_with(&format!(
            "sockit: TLS handshake with localhost:{} failed",
            srv.addr.port()
        )),
        "{line}"
    );
    assert!(line.contains("not trusted"), "{line}");
    assert!(line.contains("--cacert"), "says what to do: {line}");
    assert!(srv.state.seen().is_empty());

    let run = fetch(&[&url, "--cacert", s(&ca)]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, b"HTTP/2.0", "h2 by ALPN");
    let big_url = format!("https://localhost:{}/big", srv.addr.port());
    let file = dir.path().join("big.bin");
    let run = fetch(&[&big_url, "--cacert", s(&ca), "-o", s(&file)]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stderr.contains("HTTP/2)"), "{}", run.stderr);
    assert!(std::fs::read(&file).unwrap() == big(0));
    assert!(srv
        .state
        .seen()
        .iter()
        .all(|s| s.version == hyper::Version::HTTP_2));

    // A file that is no certificate is refused up front.
    let run = fetch(&[&url, "--cacert", s(&file)]).await;
    assert!(run.error_line().contains("--cacert"), "{}", run.stderr);
}

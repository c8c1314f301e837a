//! `sockit web`: the static site server, on port 0, checked with a real HTTP
//! client (reqwest) and with raw bytes where a client would tidy the request.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sockit::server::{self, Limits};
use sockit::web::site::{Site, SiteOptions};
use sockit::web::{HttpHandler, Settings, Web};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct Served {
    addr: SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A site folder `<tmp>/site` with a secret beside it, served on port 0.
async fn serve_site(
    prepare: impl FnOnce(&Path),
    tweak: impl FnOnce(&mut SiteOptions, &mut Settings),
) -> Served {
    serve_site_with(prepare, tweak, Limits::default()).await
}

async fn serve_site_with(
    prepare: impl FnOnce(&Path),
    tweak: impl FnOnce(&mut SiteOptions, &mut Settings),
    limits: Limits,
) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(dir.path().join("secret.txt"), "TOP-SECRET").unwrap();
    std::fs::write(root.join("hello.txt"), "hello, world\n").unwrap();
    prepare(&root);
    let mut opts = SiteOptions::new(&root);
    let mut settings = Settings::default();
    tweak(&mut opts, &mut settings);
    let site = Site::open(opts).unwrap();
    let listener = server::bind_tcp("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handler = HttpHandler {
        web: Web::new(settings, Some(site), None),
        tls: None,
    };
    tokio::spawn(server::serve(
        "web",
        listener,
        handler,
        limits,
        shutdown.clone(),
    ));
    Served {
        addr,
        shutdown,
        _dir: dir,
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn traversal_attempts_never_leave_the_folder() {
    let s = serve_site(|_| {}, |_, _| {}).await;
    for target in [
        "/../secret.txt",
        "/a/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/%252e%252e/secret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/hello.txt%00.png",
        "/%c0%ae%c0%ae/secret.txt",
        "/%c0%af..%c0%afsecret.txt",
        "//secret.txt",
        "/./../secret.txt",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let resp = common::raw(s.addr, req.as_bytes()).await;
        let code = status_of(&resp);
        assert!(
            code == 400 || code == 404,
            "{target}: status {code}\n{resp}"
        );
        assert!(!resp.contains("TOP-SECRET"), "{target} leaked the secret");
    }
    // The same file through a legitimate path is served.
    let ok = common::raw(
        s.addr,
        b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&ok), 200, "{ok}");
}

#[tokio::test]
async fn dot_files_and_escaping_symlinks_are_refused_by_default() {
    let prepare = |root: &Path| {
        std::fs::write(root.join(".env"), "PASSWORD=x").unwrap();
        std::fs::create_dir(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/config"), "[core]").unwrap();
        std::os::unix::fs::symlink(root.join("../secret.txt"), root.join("out.txt")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("hello.txt", root.join("in.txt")).unwrap();
    };
    let s = serve_site(prepare, |_, _| {}).await;
    let c = client();
    let get = |p: &str| c.get(format!("http://{}{p}", s.addr)).send();
    for p in ["/.env", "/.git/config", "/out.txt", "/etc/passwd"] {
        let r = get(p).await.unwrap();
        assert_eq!(r.status(), 404, "{p}");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("TOP-SECRET") && !body.contains("root:"),
            "{p}"
        );
        assert!(body.contains("404"), "an HTML 404 page for {p}");
    }
    // A symlink that stays inside is fine.
    let r = get("/in.txt").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello, world\n");
    // The listing shows neither dot-files nor escaping links.
    let listing = get("/").await.unwrap().text().await.unwrap();
    assert!(listing.contains("hello.txt"));
    assert!(
        !listing.contains(".env") && !listing.contains("out.txt"),
        "{listing}"
    );

    // --hidden and --follow-symlinks turn both on.
    let s = serve_site(prepare, |o, _| {
        o.hidden = true;
        o.follow_symlinks = true;
    })
    .await;
    let get = |p: &str| c.get(format!("http://{}{p}", s.addr)).send();
    assert_eq!(
        get("/.env").await.unwrap().text().await.unwrap(),
        "PASSWORD=x"
    );
    assert_eq!(
        get("/out.txt").await.unwrap().text().await.unwrap(),
        "TOP-SECRET"
    );
}

#[tokio::test]
async fn get_head_types_validators_and_not_modified() {
    let s = serve_site(
        |root| {
            std::fs::write(root.join("page.html"), "<p>hi</p>").unwrap();
            std::fs::write(root.join("data.json"), "{}").unwrap();
            std::fs::create_dir(root.join("docs")).unwrap();
            std::fs::write(root.join("docs/index.html"), "<h1>docs</h1>").unwrap();
        },
        |_, _| {},
    )
    .await;
    let c = client();
    let url = |p: &str| format!("http://{}{p}", s.addr);
    let r = c.get(url("/page.html")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-length"], "9");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let etag = h["etag"].to_str().unwrap().to_string();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong: {etag}"
    );
    let lm = h["last-modified"].to_str().unwrap().to_string();
    assert_eq!(
        c.get(url("/data.json")).send().await.unwrap().headers()["content-type"],
        "application/json; charset=utf-8"
    );

    // 304 by ETag and by date; a different ETag gets the body.
    let r = c
        .get(url("/page.html"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .get(url("/page.html"))
        .header("if-modified-since", &lm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = c
        .get(url("/page.html"))
        .header("if-none-match", "\"nope\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(url("/page.html"))
        .header("if-match", "\"nope\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);

    // HEAD: the same headers, no body.
    let head = common::raw(
        s.addr,
        b"HEAD /page.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&head), 200);
    assert!(
        head.to_ascii_lowercase().contains("content-length: 9\r\n"),
        "{head}"
    );
    assert!(head.ends_with("\r\n\r\n"), "no body after HEAD: {head:?}");

    // Folders: index.html, a redirect to add the slash, 404 page, 405.
    assert_eq!(
        c.get(url("/docs/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "<h1>docs</h1>"
    );
    let r = c.get(url("/docs?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "/docs/?x=1");
    let r = c.get(url("/missing.txt")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let r = c.post(url("/page.html")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");

    // Keep-alive: many requests on one connection.
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    for _ in 0..3 {
        stream
            .write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).ends_with("hello, world\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed between requests");
            got.extend_from_slice(&buf[..n]);
        }
    }
}

#[tokio::test]
async fn ranges_single_multiple_and_unsatisfiable() {
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let mid: Vec<u8> = (0..300_000u32).map(|i| (i % 239) as u8).collect();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let (d, m, b) = (data.clone(), mid.clone(), big.clone());
    let s = serve_site(
        move |root| {
            std::fs::write(root.join("data.bin"), &d).unwrap();
            std::fs::write(root.join("mid.bin"), &m).unwrap();
            std::fs::write(root.join("big.bin"), &b).unwrap();
        },
        |_, _| {},
    )
    .await;
    let c = client();
    // The in-memory path (data.bin), the in-memory path sent with sendfile
    // (mid.bin) and the streamed path (big.bin).
    for (name, bytes) in [("data.bin", &data), ("mid.bin", &mid), ("big.bin", &big)] {
        let len = bytes.len();
        let get = |range: &str| {
            c.get(format!("http://{}/{name}", s.addr))
                .header("range", range)
                .send()
        };
        let r = get("bytes=0-0").await.unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes 0-0/{len}").as_str()
        );
        assert_eq!(r.bytes().await.unwrap()[..], bytes[0..1]);
        let r = get("bytes=-100").await.unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap()[..], bytes[len - 100..]);
        let r = get(&format!("bytes={}-", len - 10)).await.unwrap();
        assert_eq!(r.bytes().await.unwrap()[..], bytes[len - 10..]);
        let r = get(&format!("bytes=100-{}", len * 2)).await.unwrap();
        assert_eq!(r.status(), 206, "an end beyond the size is clamped");
        assert_eq!(r.bytes().await.unwrap()[..], bytes[100..]);
        for bad in [
            "bytes=10-5".to_string(),
            format!("bytes={len}-"),
            format!("bytes={}-{}", len + 5, len + 9),
        ] {
            let r = get(&bad).await.unwrap();
            assert_eq!(r.status(), 416, "{bad}");
            assert_eq!(
                r.headers()["content-range"],
                format!("bytes */{len}").as_str()
            );
        }
        // A malformed header is ignored: the whole file.
        let r = get("bytes=x-y").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), len);
        // Several ranges: multipart/byteranges with each part right.
        let r = get("bytes=0-9,100-109,-5").await.unwrap();
        assert_eq!(r.status(), 206);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        let boundary = ct
            .strip_prefix("multipart/byteranges; boundary=")
            .expect(&ct)
            .to_string();
        let declared: usize = r.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), declared);
        let parts = split_multipart(&body, &boundary);
        assert_eq!(parts.len(), 3);
        let want = [(0, 9), (100, 109), (len - 5, len - 1)];
        for ((head, part), (a, z)) in parts.iter().zip(want) {
            assert!(
                head.contains(&format!("Content-Range: bytes {a}-{z}/{len}")),
                "{head}"
            );
            assert_eq!(part[..], bytes[a..=z]);
        }
        // Too many ranges is refused rather than amplified.
        let many: Vec<String> = (0..200)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
            .collect();
        let r = get(&format!("bytes={}", many.join(","))).await.unwrap();
        assert_eq!(r.status(), 416);
        // If-Range with a stale validator: the whole file.
        let r = c
            .get(format!("http://{}/{name}", s.addr))
            .header("range", "bytes=0-0")
            .header("if-range", "\"stale\"")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// Splits a multipart/byteranges body into (headers, bytes) parts.
fn split_multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delim = format!("\r\n--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    while let Some(i) = find(rest, delim.as_bytes()) {
        rest = &rest[i + delim.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let head_end = find(rest, b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        rest = &rest[head_end + 4..];
        let end = find(rest, delim.as_bytes()).unwrap();
        parts.push((head, rest[..end].to_vec()));
        rest = &rest[end..];
    }
    parts
}

#[tokio::test]
async fn listing_escapes_names_and_has_a_json_form() {
    let evil = "<img src=x onerror=alert(1)>.txt";
    let s = serve_site(
        |root| {
            std::fs::write(root.join(evil), "x").unwrap();
            std::fs::create_dir(root.join("zdir")).unwrap();
        },
        |_, _| {},
    )
    .await;
    let c = client();
    let html = c
        .get(format!("http://{}/", s.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains("<img"), "raw markup in the listing: {html}");
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;.txt"));
    // Folders first, then files by name.
    let (zdir, hello) = (html.find("zdir/").unwrap(), html.find("hello.txt").unwrap());
    assert!(zdir < hello);
    for url in [
        format!("http://{}/?json", s.addr),
        format!("http://{}/", s.addr),
    ] {
        let r = c
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        let names: Vec<&str> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["zdir", evil, "hello.txt"]);
        assert_eq!(v["entries"][2]["size"], 13);
    }
    // The escaped link leads to the file.
    let link = format!(
        "http://{}/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.txt",
        s.addr
    );
    assert_eq!(c.get(link).send().await.unwrap().text().await.unwrap(), "x");

    let s = serve_site(|_| {}, |o, _| o.list = false).await;
    assert_eq!(
        c.get(format!("http://{}/", s.addr))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn listing_shows_direction_overrides_and_escapes_as_escapes_u202e_and_1b() {
    // With U+202E raw, "invoice" + U+202E + "fdp.exe" reads "invoiceexe.pdf".
    let spoof = "invoice\u{202e}fdp.exe";
    let esc = "red\u{1b}[31mtext";
    let s = serve_site(
        |root| {
            std::fs::write(root.join(spoof), "spoof").unwrap();
            std::fs::write(root.join(esc), "esc").unwrap();
            std::fs::create_dir(root.join("dir\u{202e}")).unwrap();
        },
        |_, _| {},
    )
    .await;
    let c = client();
    let html = c
        .get(format!("http://{}/", s.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for raw in ['\u{202e}', '\u{1b}'] {
        assert!(
            !html.contains(raw),
            "U+{:04X} raw in the listing: {html:?}",
            raw as u32
        );
    }
    for shown in [
        r"invoice\u{202e}fdp.exe",
        r"red\u{1b}[31mtext",
        r"dir\u{202e}/",
    ] {
        assert!(html.contains(shown), "{shown} not in the listing: {html}");
    }
    assert!(html.contains("title=\"this name holds control or direction characters"));
    // The links keep the real names, percent-encoded (the site itself
    // answers 400 to paths with control or direction characters).
    for href in [
        "invoice%E2%80%AEfdp.exe",
        "red%1B%5B31mtext",
        "dir%E2%80%AE/",
    ] {
        assert!(html.contains(&format!("href=\"{href}\"")), "{href}: {html}");
    }
}

#[tokio::test]
async fn compression_on_the_fly_and_precompressed_siblings() {
    let text: String = (0..3000).map(|i| format!("line {i}\n")).collect();
    let big_text: String = (0..300_000).map(|i| format!("row {i}\n")).collect();
    let (t, bt) = (text.clone(), big_text.clone());
    let s = serve_site(
        move |root| {
            std::fs::write(root.join("a.txt"), &t).unwrap();
            std::fs::write(root.join("big.txt"), &bt).unwrap();
            std::fs::write(root.join("tiny.txt"), "small").unwrap();
            std::fs::write(root.join("app.js"), "console.log(1)").unwrap();
            std::fs::write(root.join("app.js.gz"), b"GZ-SIBLING").unwrap();
            std::fs::write(root.join("photo.png"), vec![7u8; 5000]).unwrap();
        },
        |_, _| {},
    )
    .await;
    // reqwest is built without decompression: bytes arrive as sent.
    let c = client();
    let get = |p: &str, enc: &str| {
        c.get(format!("http://{}{p}", s.addr))
            .header("accept-encoding", enc)
            .send()
    };
    let plain_etag = get("/a.txt", "identity").await.unwrap().headers()["etag"].clone();
    for (path, original) in [("/a.txt", &text), ("/big.txt", &big_text)] {
        let r = get(path, "gzip").await.unwrap();
        assert_eq!(r.headers()["content-encoding"], "gzip", "{path}");
        assert_eq!(r.headers()["vary"], "accept-encoding");
        let gz = r.bytes().await.unwrap();
        assert!(gz.len() < original.len() / 2);
        let mut out = Vec::new();
        async_compression::tokio::bufread::GzipDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(&String::from_utf8(out).unwrap(), original);
        let r = get(path, "br, gzip").await.unwrap();
        assert_eq!(r.headers()["content-encoding"], "br", "{path}");
    }
    let r = get("/a.txt", "gzip").await.unwrap();
    let gz_etag = r.headers()["etag"].clone();
    assert_ne!(gz_etag, plain_etag, "each encoding has its own ETag");
    let r = c
        .get(format!("http://{}/a.txt", s.addr))
        .header("accept-encoding", "gzip")
        .header("if-none-match", gz_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // Below 1 KiB, binary types and refused codings stay as they are.
    assert!(get("/tiny.txt", "gzip")
        .await
        .unwrap()
        .headers()
        .get("content-encoding")
        .is_none());
    assert!(get("/photo.png", "gzip")
        .await
        .unwrap()
        .headers()
        .get("content-encoding")
        .is_none());
    assert!(get("/a.txt", "gzip;q=0")
        .await
        .unwrap()
        .headers()
        .get("content-encoding")
        .is_none());
    // A precompressed sibling is sent as is.
    let r = get("/app.js", "gzip").await.unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(r.bytes().await.unwrap(), "GZ-SIBLING");
    // A range request gets identity bytes.
    let r = c
        .get(format!("http://{}/a.txt", s.addr))
        .header("accept-encoding", "gzip")
        .header("range", "bytes=0-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), "line 0");
}

#[tokio::test]
async fn cached_files_are_revalidated_when_changed() {
    let s = serve_site(|_| {}, |o, _| o.revalidate = Duration::ZERO).await;
    let c = client();
    let url = format!("http://{}/hello.txt", s.addr);
    assert_eq!(
        c.get(&url).send().await.unwrap().text().await.unwrap(),
        "hello, world\n"
    );
    let path = s._dir.path().join("site/hello.txt");
    // Replace it (a new inode), as editors and `sockit put` do.
    std::fs::write(s._dir.path().join("site/.new"), "changed\n").unwrap();
    std::fs::rename(s._dir.path().join("site/.new"), &path).unwrap();
    assert_eq!(
        c.get(&url).send().await.unwrap().text().await.unwrap(),
        "changed\n"
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(c.get(&url).send().await.unwrap().status(), 404);
}

/// Sealed in-memory files (the cache's `sendfile` path) this process holds.
fn sealed_cache_files() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().contains("memfd:sockit-web-cache"))
        .count()
}

#[tokio::test]
async fn cached_files_sent_with_sendfile_are_whole_under_load_and_change() {
    let v1: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let v2: Vec<u8> = (0..200_000u32).map(|i| (i % 13) as u8 + 100).collect();
    let d = v1.clone();
    let s = serve_site(
        move |root| std::fs::write(root.join("sealed.bin"), &d).unwrap(),
        |o, _| o.revalidate = Duration::ZERO,
    )
    .await;
    let url = format!("http://{}/sealed.bin", s.addr);
    let c = client();
    assert_eq!(c.get(&url).send().await.unwrap().bytes().await.unwrap(), v1);
    assert!(
        sealed_cache_files() >= 1,
        "the cached file is held in a sealed memfd"
    );
    // Many keep-alive clients at once, over HTTP/1.1 and HTTP/2, each
    // response whole and byte-exact.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let c = if i % 4 == 0 { h2.clone() } else { client() };
        let (url, want) = (url.clone(), v1.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                assert_eq!(r.content_length(), Some(want.len() as u64));
                assert!(r.bytes().await.unwrap() == want, "a whole, exact body");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Rewritten in place (same inode, truncated first): the next request
    // gets the new content, never a mix.
    std::fs::write(s._dir.path().join("site/sealed.bin"), &v2).unwrap();
    assert_eq!(c.get(&url).send().await.unwrap().bytes().await.unwrap(), v2);
}

#[tokio::test]
async fn a_slow_loris_neither_blocks_others_nor_stays_forever() {
    let s = serve_site(|_| {}, |_, st| st.header_timeout = Duration::from_secs(2)).await;
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    let slow_task = tokio::spawn(async move {
        let started = Instant::now();
        for b in
            b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"
        {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest).await;
        (
            started.elapsed(),
            String::from_utf8_lossy(&rest).into_owned(),
        )
    });
    // Meanwhile, ordinary clients are served at once.
    let c = client();
    for _ in 0..20 {
        let r = tokio::time::timeout(
            Duration::from_secs(1),
            c.get(format!("http://{}/hello.txt", s.addr)).send(),
        )
        .await
        .expect("served while the slow client dribbles")
        .unwrap();
        assert_eq!(r.status(), 200);
    }
    let (took, answer) = slow_task.await.unwrap();
    assert!(
        took < Duration::from_secs(8),
        "the slow client was cut off: {took:?}"
    );
    assert!(
        !answer.contains("hello, world"),
        "the slow request was not served: {answer}"
    );
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let s = serve_site(|_| {}, |_, st| st.max_header_bytes = 8192).await;
    let big = "a".repeat(20_000);
    let req =
        format!("GET /hello.txt HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    let _ = sock.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&text), 431, "{text}");
}

#[tokio::test]
async fn a_5_gib_sparse_file_has_the_right_length_and_resumes() {
    const SIZE: u64 = 5 * 1024 * 1024 * 1024;
    let s = serve_site(
        |root| {
            let f = std::fs::File::create(root.join("huge.img")).unwrap();
            f.set_len(SIZE).unwrap();
            use std::os::unix::fs::FileExt;
            f.write_all_at(b"THE-END", SIZE - 7).unwrap();
            f.write_all_at(b"MIDDLE", SIZE / 2).unwrap();
        },
        |_, _| {},
    )
    .await;
    let c = client();
    let url = format!("http://{}/huge.img", s.addr);
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], SIZE.to_string().as_str());
    // A download that resumes from the middle, and one from near the end.
    let r = c
        .get(&url)
        .header("range", format!("bytes={}-{}", SIZE / 2, SIZE / 2 + 5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), "MIDDLE");
    let r = c
        .get(&url)
        .header("range", format!("bytes={}-", SIZE - 7))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes {}-{}/{SIZE}", SIZE - 7, SIZE - 1).as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), "THE-END");
    // A full GET announces the whole length and starts streaming at once.
    let mut r = c.get(&url).send().await.unwrap();
    assert_eq!(r.headers()["content-length"], SIZE.to_string().as_str());
    let first = r.chunk().await.unwrap().unwrap();
    assert!(first.iter().all(|b| *b == 0));
}

#[tokio::test]
async fn http2_prior_knowledge_works() {
    let s = serve_site(|_| {}, |_, _| {}).await;
    let _ = client();
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let r = c
        .get(format!("http://{}/hello.txt", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().await.unwrap(), "hello, world\n");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(400),
        ..Limits::default()
    };
    let s = serve_site_with(|_| {}, |_, _| {}, limits).await;
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    sock.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = sock.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    // Then nothing: the server closes the connection (EOF).
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
        .await
        .expect("closed by the idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        answered.elapsed() >= Duration::from_millis(400),
        "{:?}",
        answered.elapsed()
    );
}

#[test]
fn the_cli_serves_logs_each_request_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>hi</h1>").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sockit"))
        .args(["web", "--bind", "127.0.0.1:0"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "exited early");
        if line.contains("listening") {
            break line.split("addr=").nth(1).unwrap().trim().to_string();
        }
    };
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(
        &mut sock,
        b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut sock, &mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("<h1>hi</h1>"),
        "{resp}"
    );
    let access = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no access line");
        if line.contains("sockit::access") {
            break line.clone();
        }
    };
    for part in [
        "method=GET",
        "path=/index.html",
        "status=200",
        "bytes=11",
        "peer=127.0.0.1:",
        "ms=",
    ] {
        assert!(access.contains(part), "{part} missing from {access}");
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "exit 0 after SIGTERM");
}

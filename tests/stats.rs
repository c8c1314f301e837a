//! Host and server statistics over the framed port, the HTTP API and the
//! CLI: every field present with sane values, and who may read them.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::Value;
use sockit::files::client::Client;
use sockit::proto::{Connection, Frame};
use sockit::stats::{fetch, Snapshot};
use sockit::tls::{Stream, Transport};

const BIN: &str = env!("CARGO_BIN_EXE_sockit");

async fn login(srv: &common::TestServer, user: &str) -> (Connection<Stream>, String) {
    let mut c = Client::connect(&srv.framed.to_string(), &Transport::Plain)
        .await
        .unwrap();
    c.register(user, "pw").await.unwrap();
    let (_, token, _) = c.login(user, "pw").await.unwrap();
    (c.into_connection(), token)
}

/// Every key of the documented JSON, by section.
fn assert_every_field(v: &Value) {
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(v),
        ["cpu", "disks", "host", "memory", "networks", "server", "time"]
    );
    assert_eq!(
        keys(&v["host"]),
        ["arch", "kernel", "load", "name", "os", "uptime_secs"]
    );
    assert_eq!(keys(&v["cpu"]), ["cores", "usage"]);
    assert_eq!(
        keys(&v["memory"]),
        ["available", "swap_total", "swap_used", "total", "used"]
    );
    for d in v["disks"].as_array().unwrap() {
        assert_eq!(keys(d), ["free", "fs", "mount", "name", "total", "used"]);
    }
    for n in v["networks"].as_array().unwrap() {
        assert_eq!(
            keys(n),
            ["bytes_in", "bytes_out", "name", "rate_in", "rate_out"]
        );
    }
    assert_eq!(
        keys(&v["server"]),
        [
            "bytes_in",
            "bytes_out",
            "rss",
            "services",
            "uptime_secs",
            "version"
        ]
    );
    for s in v["server"]["services"].as_array().unwrap() {
        assert_eq!(
            keys(s),
            ["accepted", "bytes_in", "bytes_out", "name", "open"]
        );
    }
}

fn assert_sane(s: &Snapshot) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(s.time <= now && s.time + 60 > now, "{}", s.time);
    let h = &s.host;
    assert!(!h.name.is_empty() && !h.os.is_empty() && !h.kernel.is_empty() && !h.arch.is_empty());
    assert!(h.uptime_secs > 0);
    assert!(
        h.load.iter().all(|l| l.is_finite() && *l >= 0.0),
        "{:?}",
        h.load
    );
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        s.cpu.cores.len() >= cores,
        "{} cores, {cores} usable",
        s.cpu.cores.len()
    );
    assert!(s
        .cpu
        .cores
        .iter()
        .chain([&s.cpu.usage])
        .all(|u| (0.0..=100.0).contains(u)));
    let m = &s.memory;
    assert!(m.total > 16 << 20 && m.used <= m.total && m.available <= m.total);
    assert_eq!(m.used + m.available, m.total);
    assert!(m.swap_used <= m.swap_total);
    assert!(!s.disks.is_empty(), "no disk at all");
    for d in &s.disks {
        assert!(d.total > 0 && d.used + d.free <= d.total, "{d:?}");
        assert!(d.mount.starts_with('/'), "{d:?}");
    }
    assert!(!s.networks.is_empty(), "no network interface at all");
    for n in &s.networks {
        assert!(!n.name.is_empty());
        assert!(n.rate_in >= 0.0 && n.rate_out >= 0.0);
    }
    let v = &s.server;
    assert_eq!(v.version, env!("CARGO_PKG_VERSION"));
    assert!(v.uptime_secs < 3600);
    assert!(v.rss > 1 << 20, "rss {}", v.rss);
    let names: Vec<&str> = v.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["echo", "framed", "web"]);
    assert_eq!(
        v.bytes_in,
        v.services.iter().map(|s| s.bytes_in).sum::<u64>()
    );
}

#[tokio::test]
async fn a_logged_in_user_gets_every_figure() {
    let srv = common::start(|_| {}).await;
    let mut anon = common::framed_client(srv.framed).await;
    anon.write_frame(&Frame::new("stats")).await.unwrap();
    let reply = anon.read_frame().await.unwrap().unwrap();
    assert_eq!(reply.as_error().unwrap().0, "unauthorized");
    let (mut conn, _) = login(&srv, "ann").await;
    // The raw answer: a stats frame whose body is the JSON.
    conn.write_frame(&Frame::new("stats").with("id", 7))
        .await
        .unwrap();
    let reply = conn.read_frame().await.unwrap().unwrap();
    assert_eq!((reply.kind(), reply.id()), ("stats", Some(&7.into())));
    let body = conn.read_body_to_vec(1 << 20).await.unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_every_field(&json);
    let snap: Snapshot = serde_json::from_value(json).unwrap();
    assert_sane(&snap);
    let framed = snap
        .server
        .services
        .iter()
        .find(|s| s.name == "framed")
        .unwrap();
    // This connection and the anonymous one are open.
    assert!(framed.open >= 2 && framed.accepted >= 2, "{framed:?}");
    assert!(framed.bytes_in > 0 && framed.bytes_out > 0, "{framed:?}");
    // The counters move: a 100 KiB ping adds to both directions.
    conn.write_message(&Frame::new("ping"), &vec![7u8; 100_000])
        .await
        .unwrap();
    conn.read_frame().await.unwrap().unwrap();
    conn.discard_body().await.unwrap();
    let later = fetch(&mut conn).await.unwrap();
    let framed_later = later
        .server
        .services
        .iter()
        .find(|s| s.name == "framed")
        .unwrap();
    assert!(framed_later.bytes_in >= framed.bytes_in + 100_000);
    assert!(framed_later.bytes_out >= framed.bytes_out + 100_000);
    srv.stop().await;
}

#[tokio::test]
async fn admins_only_and_disabled() {
    let srv = common::start(|c| c.stats.admins_only = true).await;
    let (mut conn, _) = login(&srv, "bob").await;
    let err = fetch(&mut conn).await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    assert!(err.to_string().contains("sockit admin grant bob admin"));
    sockit::accounts::Accounts::open(srv.data.path(), Default::default())
        .unwrap()
        .set_permission("bob", "admin", true)
        .unwrap();
    assert_sane(&fetch(&mut conn).await.unwrap());
    srv.stop().await;

    let srv = common::start(|c| c.stats.enabled = false).await;
    let (mut conn, _) = login(&srv, "cy").await;
    assert_eq!(
        fetch(&mut conn).await.unwrap_err().code(),
        Some("unknown_type")
    );
    srv.stop().await;
}

#[tokio::test]
async fn the_http_api_serves_the_same_json() {
    let srv = common::start(|_| {}).await;
    let (_, token) = login(&srv, "dee").await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/stats", srv.web);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let json: Value = r.json().await.unwrap();
    assert_every_field(&json);
    let snap: Snapshot = serde_json::from_value(json).unwrap();
    assert_sane(&snap);
    let web = snap
        .server
        .services
        .iter()
        .find(|s| s.name == "web")
        .unwrap();
    assert!(web.open >= 1 && web.accepted >= 1, "{web:?}");
    // The request just answered and the 401 before it were counted.
    assert!(web.bytes_in > 0 && web.bytes_out > 0, "{web:?}");
    srv.stop().await;
}

#[tokio::test]
async fn the_cli_prints_text_json_and_json_lines_when_watching() {
    let srv = common::start(|_| {}).await;
    let config = tempfile::tempdir().unwrap();
    let addr = srv.framed.to_string();
    let cli = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("SOCKIT_CONFIG_DIR", config.path())
            .env_remove("SOCKIT_SERVER");
        c
    };
    let mut c = Client::connect(&addr, &Transport::Plain).await.unwrap();
    c.register("eve", "pw").await.unwrap();
    let mut login = cli(&[
        "login",
        "--no-tls",
        "-S",
        &addr,
        "-u",
        "eve",
        "--password-stdin",
    ])
    .stdin(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    login.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    // Blocking waits: the server runs on this test's runtime, so let it work.
    let ok = tokio::task::spawn_blocking(move || login.wait().unwrap().success())
        .await
        .unwrap();
    assert!(ok);
    let text = tokio::task::spawn_blocking({
        let mut cmd = cli(&["stats", "--no-tls", "-S", &addr]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert!(text.status.success(), "{text:?}");
    let text = String::from_utf8(text.stdout).unwrap();
    for label in [
        "host ", "load ", "cpu ", "memory ", "disk ", "net ", "sockit ", "service ",
    ] {
        assert!(text.contains(label), "{label:?} missing in:\n{text}");
    }
    let json = tokio::task::spawn_blocking({
        let mut cmd = cli(&["stats", "--no-tls", "-S", &addr, "--json"]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_every_field(&v);
    // Watching into a pipe: one JSON object per line, until stopped.
    let mut watch = cli(&["stats", "--no-tls", "-S", &addr, "--watch", "0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut r = BufReader::new(stdout);
        let mut lines = Vec::new();
        for _ in 0..2 {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            lines.push(l);
        }
        lines
    })
    .await
    .unwrap();
    watch.kill().unwrap();
    watch.wait().unwrap();
    let first: Snapshot = serde_json::from_str(&lines[0]).unwrap();
    let second: Snapshot = serde_json::from_str(&lines[1]).unwrap();
    assert!(second.server.uptime_secs >= first.server.uptime_secs);
    srv.stop().await;
}

#[tokio::test]
async fn the_web_app_has_a_live_stats_page() {
    let srv = common::start(|_| {}).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("http://{}{path}", srv.web)).send();
    let index = get("/app/").await.unwrap().text().await.unwrap();
    assert!(
        index.contains("href=\"stats.html\""),
        "no link to the stats page"
    );
    for (path, kind, needle) in [
        ("/app/stats.html", "text/html", "stats.js"),
        ("/app/stats.js", "text/javascript", "/api/stats"),
        ("/app/stats.css", "text/css", ".stats-grid"),
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        let body = r.text().await.unwrap();
        assert!(body.contains(needle), "{path}");
        // No inline script, and data never goes in as HTML.
        assert!(
            !body.contains("<script>") && !body.contains("innerHTML"),
            "{path}"
        );
    }
    srv.stop().await;
}

fn service<'a>(s: &'a Snapshot, name: &str) -> &'a sockit::stats::Service {
    s.server.services.iter().find(|x| x.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_bytes_are_counted_as_the_client_counts_them_tcp_and_udp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = common::start(|_| {}).await;
    let (mut conn, _) = login(&srv, "eve").await;
    // 1 MiB and 100 bytes over TCP, all echoed; the connection then ends.
    let sent = vec![b'e'; (1 << 20) + 100];
    let mut tcp = tokio::net::TcpStream::connect(srv.echo).await.unwrap();
    let (mut rd, mut wr) = tcp.split();
    let echoed = async {
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        got.len()
    };
    let sending = async {
        wr.write_all(&sent).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let (got, ()) = tokio::join!(echoed, sending);
    assert_eq!(got, sent.len());
    drop(tcp);
    // 10 datagrams of 1 000 bytes, each answered.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 2000];
    let mut udp_back = 0;
    for _ in 0..10 {
        udp.send_to(&[b'u'; 1000], srv.echo).await.unwrap();
        let (n, _) = udp.recv_from(&mut buf).await.unwrap();
        udp_back += n;
    }
    let want = (sent.len() + 10_000) as u64;
    assert_eq!(udp_back, 10_000);
    // The server's side of the TCP connection ends a moment after ours:
    // its count is complete once it is no longer open.
    let mut last = None;
    for _ in 0..200 {
        let s = fetch(&mut conn).await.unwrap();
        let echo = service(&s, "echo").clone();
        if echo.open == 0 && echo.bytes_in == want {
            last = Some(echo);
            break;
        }
        last = Some(echo);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let echo = last.unwrap();
    assert_eq!(
        (echo.bytes_in, echo.bytes_out),
        (want, want),
        "echo counted {echo:?}; the client sent and received {want} bytes each way"
    );
    srv.stop().await;
}

/// `df -P`'s `Use%` of the file system holding `path`.
fn df_use_percent(path: &std::path::Path) -> f64 {
    let out = Command::new("df").arg("-P").arg(path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1).unwrap();
    let pct = line.split_whitespace().nth(4).unwrap();
    pct.trim_end_matches('%').parse().unwrap()
}

#[tokio::test]
async fn disk_use_is_the_percentage_df_prints() {
    let srv = common::start(|_| {}).await;
    let (mut conn, _) = login(&srv, "fay").await;
    let s = fetch(&mut conn).await.unwrap();
    let root = s.disks.iter().find(|d| d.mount == "/").unwrap();
    let df = df_use_percent(std::path::Path::new("/"));
    // Other tests write meanwhile: a point either way is the same reading.
    assert!(
        (root.use_percent() - df).abs() <= 1.0,
        "stats says {}% used, df says {df}%",
        root.use_percent()
    );
    srv.stop().await;
}

/// Busy and total jiffies of all CPUs, from /proc/stat.
fn proc_stat() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields[4];
    (total - idle, total)
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_use_describes_the_last_moments_not_the_time_since_the_last_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let srv = common::start(|_| {}).await;
    let (mut conn, _) = login(&srv, "gil").await;
    fetch(&mut conn).await.unwrap();
    // A quiet stretch longer than a reading stays fresh (2 s): the next
    // figure must not be the average over it.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().unwrap().get();
    let spinners: Vec<_> = (0..cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let (busy0, total0) = proc_stat();
    let s = fetch(&mut conn).await.unwrap();
    let (busy1, total1) = proc_stat();
    stop.store(true, Ordering::Relaxed);
    for t in spinners {
        t.join().unwrap();
    }
    let measured = (busy1 - busy0) as f64 * 100.0 / (total1 - total0).max(1) as f64;
    assert!(
        (s.cpu.usage as f64 - measured).abs() <= 20.0,
        "stats says {:.0}% while /proc/stat says {measured:.0}% over the same request",
        s.cpu.usage
    );
    srv.stop().await;
}

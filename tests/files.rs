//! The file service over real sockets and real files: accounts, hostile
//! paths, verified transfers, resume, concurrency, quota.

mod common;

use std::path::Path;
use std::time::Duration;

use indicatif::ProgressBar;
use serde_json::Value;
use sockit::files::client::{Client, ClientError};
use sockit::proto::{Connection, Frame};
use sockit::tls::Transport;

async fn registered(srv: &common::TestServer, user: &str) -> Client {
    let mut c = Client::connect(&srv.framed.to_string(), &Transport::Plain)
        .await
        .unwrap();
    c.register(user, "correct horse").await.unwrap();
    c.login(user, "correct horse").await.unwrap();
    c
}

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Err(e) => e.code().unwrap_or("(no code)").to_string(),
        Ok(v) => format!("(succeeded: {v:?})"),
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

#[tokio::test]
async fn accounts_register_login_and_the_same_error_for_bad_user_or_password() {
    let srv = common::start(|_| {}).await;
    let addr = srv.framed.to_string();
    let mut c = Client::connect(&addr, &Transport::Plain).await.unwrap();
    c.register("Alice", "pw one").await.unwrap();
    assert_eq!(code(c.register("alice", "other").await), "exists");
    assert_eq!(code(c.register("bad name", "x").await), "bad_request");
    assert_eq!(code(c.login("alice", "wrong").await), "bad_credentials");
    assert_eq!(code(c.login("nobody", "wrong").await), "bad_credentials");
    let (user, token, _) = c.login("ALICE", "pw one").await.unwrap();
    assert_eq!(user, "Alice");
    let mut other = Client::connect(&addr, &Transport::Plain).await.unwrap();
    assert_eq!(code(other.list("", false).await), "unauthorized");
    assert_eq!(other.auth(&token).await.unwrap(), "Alice");
    other.list("", false).await.unwrap();
    // Logout revokes the token everywhere.
    c.logout().await.unwrap();
    let mut third = Client::connect(&addr, &Transport::Plain).await.unwrap();
    assert_eq!(code(third.auth(&token).await), "unauthorized");
    srv.stop().await;
}

#[tokio::test]
async fn expired_tokens_and_closed_registration() {
    let srv = common::start(|c| {
        c.accounts.session_ttl = Duration::ZERO;
        c.accounts.allow_register = false;
    })
    .await;
    let mut c = Client::connect(&srv.framed.to_string(), &Transport::Plain)
        .await
        .unwrap();
    assert_eq!(code(c.register("bob", "pw").await), "registration_closed");
    sockit::accounts::Accounts::open(srv.data.path(), Default::default())
        .unwrap()
        .add_user("bob", "pw")
        .unwrap();
    let (_, token, _) = c.login("bob", "pw").await.unwrap();
    let mut c2 = Client::connect(&srv.framed.to_string(), &Transport::Plain)
        .await
        .unwrap();
    assert_eq!(code(c2.auth(&token).await), "unauthorized");
    srv.stop().await;
}

/// Sends one raw request on an authenticated connection; returns the error
/// code (or the reply type if it succeeded).
async fn raw(conn: &mut Connection<sockit::tls::Stream>, frame: Frame, body: &[u8]) -> String {
    if body.is_empty() {
        conn.write_frame(&frame).await.unwrap();
    } else {
        conn.write_message(&frame, body).await.unwrap();
    }
    let reply = conn.read_frame().await.unwrap().unwrap();
    conn.discard_body().await.unwrap();
    match reply.as_error() {
        Some((code, _)) => code,
        None => reply.kind().to_string(),
    }
}

/// Registers `user` and returns a raw connection authenticated as them.
async fn raw_login(srv: &common::TestServer, user: &str) -> Connection<sockit::tls::Stream> {
    registered(srv, user).await;
    raw_login_again(srv, user).await
}

/// A raw connection authenticated as an existing `user`.
async fn raw_login_again(srv: &common::TestServer, user: &str) -> Connection<sockit::tls::Stream> {
    let mut c = Client::connect(&srv.framed.to_string(), &Transport::Plain)
        .await
        .unwrap();
    let (_, token, _) = c.login(user, "correct horse").await.unwrap();
    let mut conn = common::framed_client(srv.framed).await;
    assert_eq!(
        raw(&mut conn, Frame::new("auth").with("token", token), b"").await,
        "authed"
    );
    conn
}

#[tokio::test]
async fn hostile_paths_are_refused_on_every_operation() {
    let srv = common::start(|_| {}).await;
    let mut conn = raw_login(&srv, "mallory").await;
    // A symlink planted in the user's space, pointing outside it.
    let space = srv.data.path().join("files/mallory");
    std::fs::create_dir_all(&space).unwrap();
    std::os::unix::fs::symlink("/etc", space.join("etc")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", space.join("passwd")).unwrap();
    let hostile = [
        "../x",
        "..",
        "a/../../x",
        "./a",
        "/etc/passwd",
        "..\\x",
        "a\\b",
        "a\0b",
        "C:x",
        "c:\\windows\\system32",
        "a//b",
        "%2e%2e/x",
        "%2E%2E%2Fx",
        "%252e%252e/x",
        "..%2fx",
        "\u{FF0E}\u{FF0E}/x",
        "a\u{FF0F}b",
        "a\u{2215}..",
        "\u{FF3C}x",
        "x\u{202E}fdp.exe",
        "\u{1b}[2J",
        "a\nb",
        ".sockit-partial/x",
        "etc/passwd",
        "etc/new",
        "passwd",
        &"d/".repeat(70),
    ];
    assert!(hostile.len() >= 25);
    for p in hostile {
        let put = Frame::new("put")
            .with("path", p)
            .with("length", 1)
            .with("blake3", blake3::hash(b"x").to_hex().to_string());
        assert_eq!(raw(&mut conn, put, b"x").await, "bad_path", "put {p:?}");
        assert_eq!(
            raw(&mut conn, Frame::new("get").with("path", p), b"").await,
            "bad_path",
            "get {p:?}"
        );
        if p != "passwd" {
            // `ls passwd` lists the symlink itself without following it.
            assert_eq!(
                raw(&mut conn, Frame::new("ls").with("path", p), b"").await,
                "bad_path",
                "ls {p:?}"
            );
        }
        // mkdir onto the planted symlink itself: that name exists.
        let want = if p == "passwd" { "exists" } else { "bad_path" };
        assert_eq!(
            raw(&mut conn, Frame::new("mkdir").with("path", p), b"").await,
            want,
            "mkdir {p:?}"
        );
        let mv = Frame::new("mv").with("from", "nothing").with("to", p);
        let got = raw(&mut conn, mv, b"").await;
        assert!(
            got == "bad_path" || (got == "not_found" && p == "passwd"),
            "mv {p:?}: {got}"
        );
    }
    // Nothing was written outside, and the connection is still fine.
    assert_eq!(raw(&mut conn, Frame::new("ls"), b"").await, "listing");
    srv.stop().await;
}

#[tokio::test]
async fn put_get_round_trip_with_unicode_names_exists_and_force() {
    let srv = common::start(|_| {}).await;
    let mut c = registered(&srv, "ann").await;
    let tmp = tempfile::tempdir().unwrap();
    let none = ProgressBar::hidden();
    for (name, len) in [
        ("报告 2026.pdf", 3_000_000),
        ("empty", 0),
        ("small.txt", 5),
        ("exact", 1024 * 1024),
    ] {
        let data = pattern(len, len as u32);
        let local = write(tmp.path(), "src", &data);
        let up = c
            .put_file(&local, &format!("docs/{name}"), false, true, &none)
            .await
            .unwrap();
        assert_eq!(up.length, len as u64);
        assert_eq!(up.blake3, blake3::hash(&data).to_hex().to_string());
        let back = tmp.path().join("back");
        let n = c
            .get_file(&format!("docs/{name}"), &back, true, &none)
            .await
            .unwrap();
        assert_eq!(n, len as u64);
        assert!(std::fs::read(&back).unwrap() == data, "{name}");
        std::fs::remove_file(&back).unwrap();
        assert!(!tmp.path().join("back.part").exists());
    }
    let local = write(tmp.path(), "v2", b"version two");
    assert_eq!(
        code(
            c.put_file(&local, "docs/small.txt", false, true, &none)
                .await
        ),
        "exists"
    );
    c.put_file(&local, "docs/small.txt", true, true, &none)
        .await
        .unwrap();
    let names: Vec<_> = c
        .list("docs", false)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["empty", "exact", "small.txt", "报告 2026.pdf"]);
    // The partial-upload folder is never listed.
    assert!(c
        .list("", true)
        .await
        .unwrap()
        .iter()
        .all(|e| !e.name.contains("sockit-partial")));
    c.rename("docs/small.txt", "moved.txt", false)
        .await
        .unwrap();
    assert_eq!(code(c.remove("docs", false).await), "not_empty");
    c.remove("docs", true).await.unwrap();
    assert_eq!(
        code(
            c.get_file("docs/exact", &tmp.path().join("x"), true, &none)
                .await
        ),
        "not_found"
    );
    srv.stop().await;
}

#[tokio::test]
async fn corrupt_or_truncated_bodies_publish_nothing() {
    let srv = common::start(|_| {}).await;
    let mut conn = raw_login(&srv, "carl").await;
    // Inline put whose body does not match its hash.
    let put = Frame::new("put")
        .with("path", "bad.bin")
        .with("length", 4)
        .with("blake3", blake3::hash(b"good").to_hex().to_string());
    assert_eq!(raw(&mut conn, put, b"evil").await, "checksum_mismatch");
    // Negotiated put, cut off half-way.
    let put = Frame::new("put")
        .with("path", "cut.bin")
        .with("length", 1_000_000)
        .with("mtime_ns", 5);
    assert_eq!(raw(&mut conn, put, b"").await, "put_ready");
    conn.queue_frame(&Frame::new("put_data").with_body_len(1_000_000))
        .unwrap();
    conn.write_body(&[1u8; 300_000]).await.unwrap();
    conn.flush().await.unwrap();
    drop(conn);
    let mut c = Client::connect(&srv.framed.to_string(), &Transport::Plain)
        .await
        .unwrap();
    c.login("carl", "correct horse").await.unwrap();
    // Wait until the server has seen the end of the cut connection: the
    // same upload is `busy` while its first attempt is still open.
    let mut conn = raw_login_again(&srv, "carl").await;
    loop {
        let put = Frame::new("put")
            .with("path", "cut.bin")
            .with("length", 1_000_000)
            .with("mtime_ns", 5);
        let got = raw(&mut conn, put, b"").await;
        if got == "put_ready" {
            break;
        }
        assert_eq!(got, "busy");
        tokio::task::yield_now().await;
    }
    drop(conn);
    assert!(
        c.list("", false).await.unwrap().is_empty(),
        "nothing published"
    );
    srv.stop().await;
}

#[tokio::test]
async fn an_interrupted_upload_resumes_where_it_stopped() {
    let srv = common::start(|_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = pattern(5_000_000, 9);
    let local = write(tmp.path(), "big", &data);
    let meta = std::fs::metadata(&local).unwrap();
    let mtime = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    {
        let mut conn = raw_login(&srv, "dora").await;
        let put = Frame::new("put")
            .with("path", "big")
            .with("length", 5_000_000)
            .with("mtime_ns", mtime);
        assert_eq!(raw(&mut conn, put, b"").await, "put_ready");
        conn.queue_frame(&Frame::new("put_data").with_body_len(5_000_000))
            .unwrap();
        conn.write_body(&data[..2_000_000]).await.unwrap();
        conn.flush().await.unwrap();
        // The connection drops mid-body.
    }
    let mut c = Client::connect(&srv.framed.to_string(), &Transport::Plain)
        .await
        .unwrap();
    c.login("dora", "correct horse").await.unwrap();
    let bar = ProgressBar::hidden();
    // Retry while the server still holds the first attempt (`busy`).
    let up = loop {
        match c.put_file(&local, "big", false, true, &bar).await {
            Err(e) if e.code() == Some("busy") => tokio::task::yield_now().await,
            other => break other.unwrap(),
        }
    };
    assert_eq!(up.blake3, blake3::hash(&data).to_hex().to_string());
    // The progress bar started at the resumed offset, not at 0.
    assert!(bar.position() >= 5_000_000);
    let back = tmp.path().join("back");
    c.get_file("big", &back, true, &ProgressBar::hidden())
        .await
        .unwrap();
    assert!(std::fs::read(&back).unwrap() == data);
    srv.stop().await;
}

#[tokio::test]
async fn an_interrupted_download_resumes_and_a_changed_file_starts_over() {
    let srv = common::start(|_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut c = registered(&srv, "eli").await;
    let data = pattern(3_000_000, 1);
    let local = write(tmp.path(), "src", &data);
    c.put_file(&local, "f", false, true, &ProgressBar::hidden())
        .await
        .unwrap();
    // Fake an earlier interrupted download: the first 1 MB and its record.
    let target = tmp.path().join("dl");
    c.get_file("f", &target, true, &ProgressBar::hidden())
        .await
        .unwrap();
    std::fs::rename(&target, tmp.path().join("dl.part")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(tmp.path().join("dl.part"))
        .unwrap();
    f.set_len(1_000_000).unwrap();
    let entry = c.stat("f").await.unwrap().unwrap();
    let info = serde_json::json!({"path": "f", "length": 3_000_000, "mtime_ns": entry.mtime_ns});
    std::fs::write(tmp.path().join("dl.part.sockit"), info.to_string()).unwrap();
    let bar = ProgressBar::hidden();
    c.get_file("f", &target, true, &bar).await.unwrap();
    assert!(std::fs::read(&target).unwrap() == data);
    assert!(!tmp.path().join("dl.part.sockit").exists());
    // A stale .part of another version: the server starts over from 0.
    std::fs::remove_file(&target).unwrap();
    std::fs::write(tmp.path().join("dl.part"), vec![0u8; 500]).unwrap();
    let stale = serde_json::json!({"path": "f", "length": 3_000_000, "mtime_ns": 1});
    std::fs::write(tmp.path().join("dl.part.sockit"), stale.to_string()).unwrap();
    c.get_file("f", &target, true, &ProgressBar::hidden())
        .await
        .unwrap();
    assert!(std::fs::read(&target).unwrap() == data);
    // A .part that is corrupt but claims the right version: caught by the
    // hash, and the client starts over by itself.
    std::fs::remove_file(&target).unwrap();
    std::fs::write(tmp.path().join("dl.part"), vec![0u8; 1000]).unwrap();
    std::fs::write(tmp.path().join("dl.part.sockit"), info.to_string()).unwrap();
    c.get_file("f", &target, true, &ProgressBar::hidden())
        .await
        .unwrap();
    assert!(std::fs::read(&target).unwrap() == data);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_uploads_of_one_name_leave_one_whole_file() {
    let srv = common::start(|_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let a = pattern(4_000_000, 1);
    let b = pattern(4_000_000, 2);
    let la = write(tmp.path(), "a", &a);
    let lb = write(tmp.path(), "b", &b);
    let mut ca = registered(&srv, "fred").await;
    let mut cb = Client::connect(&srv.framed.to_string(), &Transport::Plain)
        .await
        .unwrap();
    cb.login("fred", "correct horse").await.unwrap();
    let none = ProgressBar::hidden();
    let (ra, rb) = tokio::join!(
        ca.put_file(&la, "same", true, false, &none),
        cb.put_file(&lb, "same", true, false, &none)
    );
    ra.unwrap();
    rb.unwrap();
    let back = tmp.path().join("back");
    ca.get_file("same", &back, false, &none).await.unwrap();
    let got = std::fs::read(&back).unwrap();
    assert!(got == a || got == b, "a mix of two uploads");
    // Without --force, exactly one of two racing uploads wins.
    let (ra, rb) = tokio::join!(
        ca.put_file(&la, "race", false, false, &none),
        cb.put_file(&lb, "race", false, false, &none)
    );
    assert_eq!(ra.is_ok() as u8 + rb.is_ok() as u8, 1, "{ra:?} {rb:?}");
    srv.stop().await;
}

#[tokio::test]
async fn quota_and_size_limits_are_enforced() {
    let srv = common::start(|c| {
        c.files.quota = 100_000;
        c.files.max_file_size = 80_000;
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let mut c = registered(&srv, "gil").await;
    let none = ProgressBar::hidden();
    c.put_file(
        &write(tmp.path(), "a", &[1; 60_000]),
        "a",
        false,
        true,
        &none,
    )
    .await
    .unwrap();
    assert_eq!(
        code(
            c.put_file(
                &write(tmp.path(), "b", &[2; 50_000]),
                "b",
                false,
                true,
                &none
            )
            .await
        ),
        "quota_exceeded"
    );
    assert_eq!(
        code(
            c.put_file(
                &write(tmp.path(), "c", &[3; 90_000]),
                "c",
                false,
                true,
                &none
            )
            .await
        ),
        "too_large"
    );
    c.remove("a", false).await.unwrap();
    c.put_file(&tmp.path().join("b"), "b", false, true, &none)
        .await
        .unwrap();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_upload_and_download_at_once() {
    let srv = common::start(|_| {}).await;
    let addr = srv.framed.to_string();
    let mut admin = Client::connect(&addr, &Transport::Plain).await.unwrap();
    for u in 0..10 {
        admin
            .register(&format!("user{u}"), "correct horse")
            .await
            .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100u32 {
        let (addr, dir) = (addr.clone(), tmp.path().to_path_buf());
        tasks.spawn(async move {
            let data = pattern(50_000 + (i as usize) * 7_919, i);
            let local = write(&dir, &format!("in{i}"), &data);
            let mut c = Client::connect(&addr, &Transport::Plain).await.unwrap();
            c.login(&format!("user{}", i % 10), "correct horse")
                .await
                .unwrap();
            let none = ProgressBar::hidden();
            let remote = format!("c{i}/data.bin");
            let up = c
                .put_file(&local, &remote, false, true, &none)
                .await
                .unwrap();
            assert_eq!(up.blake3, blake3::hash(&data).to_hex().to_string());
            let back = dir.join(format!("out{i}"));
            c.get_file(&remote, &back, true, &none).await.unwrap();
            assert!(std::fs::read(&back).unwrap() == data, "client {i}");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    srv.stop().await;
}

#[tokio::test]
async fn listing_comes_in_the_body_and_stat_describes() {
    let srv = common::start(|_| {}).await;
    let mut c = registered(&srv, "hank").await;
    c.mkdir("a/b/c", true).await.unwrap();
    assert_eq!(code(c.mkdir("a", false).await), "exists");
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..300)
        .map(|i| {
            (
                write(tmp.path(), &format!("f{i}"), format!("file {i}").as_bytes()),
                format!("a/b/f{i:03}"),
            )
        })
        .collect();
    assert_eq!(
        c.put_many(&files, false, true, &ProgressBar::hidden())
            .await
            .unwrap(),
        300
    );
    let all = c.list("a", true).await.unwrap();
    assert_eq!(all.len(), 302);
    let e = c.stat("a/b/f007").await.unwrap().unwrap();
    assert_eq!((e.size, e.name.as_str()), (6, "f007"));
    assert!(c.stat("a/nothing").await.unwrap().is_none());
    let v: Value = serde_json::to_value(&all[0]).unwrap();
    assert!(v["mtime_ns"].as_i64().unwrap() > 0);
    srv.stop().await;
}

#[tokio::test]
async fn file_messages_need_auth_and_bad_requests_keep_the_connection() {
    let srv = common::start(|_| {}).await;
    let mut conn = common::framed_client(srv.framed).await;
    assert_eq!(raw(&mut conn, Frame::new("ls"), b"").await, "unauthorized");
    assert_eq!(
        raw(&mut conn, Frame::new("whoami"), b"").await,
        "unauthorized"
    );
    let mut conn = raw_login(&srv, "ivy").await;
    assert_eq!(
        raw(&mut conn, Frame::new("mv").with("from", "a"), b"").await,
        "bad_request"
    );
    assert_eq!(raw(&mut conn, Frame::new("whoami"), b"").await, "whoami");
    srv.stop().await;
}

/// Reads one frame and its body.
async fn next(conn: &mut Connection<sockit::tls::Stream>) -> (Frame, Vec<u8>) {
    let frame = conn.read_frame().await.unwrap().expect("a frame");
    let body = conn.read_body_to_vec(8 << 20).await.unwrap();
    (frame, body)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn after_put_ready_anything_but_put_data_closes_with_the_puts_id() {
    let srv = common::start(|_| {}).await;
    let mut conn = raw_login(&srv, "otto").await;
    let put = Frame::new("put")
        .with("id", "up-1")
        .with("path", "a.bin")
        .with("length", 3);
    conn.write_frame(&put).await.unwrap();
    let (ready, _) = next(&mut conn).await;
    assert_eq!(ready.kind(), "put_ready", "{ready:?}");
    // Out of step: a ping where put_data was due.
    conn.write_frame(&Frame::new("ping").with("id", 2))
        .await
        .unwrap();
    let (err, _) = next(&mut conn).await;
    assert_eq!(err.str("code"), Some("bad_request"), "{err:?}");
    assert_eq!(err.id(), Some(&serde_json::json!("up-1")), "{err:?}");
    assert!(conn.read_frame().await.unwrap().is_none(), "then closed");
    srv.stop().await;
}

#[tokio::test]
async fn an_inline_put_over_1_mib_is_too_large_and_the_connection_goes_on() {
    let srv = common::start(|_| {}).await;
    let mut conn = raw_login(&srv, "olga").await;
    let data = vec![7u8; sockit::files::MAX_INLINE as usize + 1];
    let put = Frame::new("put")
        .with("id", 1)
        .with("path", "big.bin")
        .with("length", data.len())
        .with("blake3", blake3::hash(&data).to_hex().to_string())
        .with_body_len(data.len() as u64);
    conn.write_message(&put, &data).await.unwrap();
    let (err, _) = next(&mut conn).await;
    assert_eq!(err.str("code"), Some("too_large"), "{err:?}");
    assert!(
        err.str("message").unwrap().contains("negotiated"),
        "{err:?}"
    );
    // The body was skipped: the next request is understood.
    assert_eq!(raw(&mut conn, Frame::new("whoami"), b"").await, "whoami");
    srv.stop().await;
}

/// A negotiated put of `data` whose put_end gives only its SHA-256; returns
/// the answer to put_end.
async fn put_with_sha256(
    conn: &mut Connection<sockit::tls::Stream>,
    put: Frame,
    data: &[u8],
    sha256: String,
) -> Frame {
    conn.write_frame(&put).await.unwrap();
    let (ready, _) = next(conn).await;
    assert_eq!(ready.kind(), "put_ready", "{ready:?}");
    let put_data = Frame::new("put_data").with_body_len(data.len() as u64);
    conn.write_message(&put_data, data).await.unwrap();
    conn.write_frame(&Frame::new("put_end").with("sha256", sha256))
        .await
        .unwrap();
    next(conn).await.0
}

#[tokio::test]
async fn put_may_be_checked_with_sha256_and_the_store_still_records_blake3() {
    let srv = common::start(|_| {}).await;
    let mut conn = raw_login(&srv, "sam").await;
    let data = pattern(300_000, 3);
    let blake3 = blake3::hash(&data).to_hex().to_string();
    // Negotiated, with only SHA-256 in put_end.
    let put = |path: &str| {
        Frame::new("put")
            .with("id", 1)
            .with("path", path)
            .with("length", data.len())
    };
    let ok = put_with_sha256(&mut conn, put("good.bin"), &data, sha256_hex(&data)).await;
    assert_eq!(ok.kind(), "put_ok", "{ok:?}");
    assert_eq!(ok.str("blake3"), Some(blake3.as_str()), "{ok:?}");
    let bad = put_with_sha256(&mut conn, put("bad.bin"), &data, sha256_hex(b"other")).await;
    assert_eq!(bad.str("code"), Some("checksum_mismatch"), "{bad:?}");
    // Neither hash, or a hash that is not 64 hex digits: refused, in step.
    conn.write_frame(&put("none.bin")).await.unwrap();
    assert_eq!(next(&mut conn).await.0.kind(), "put_ready");
    conn.write_message(
        &Frame::new("put_data").with_body_len(data.len() as u64),
        &data,
    )
    .await
    .unwrap();
    conn.write_frame(&Frame::new("put_end").with("sha256", "abc"))
        .await
        .unwrap();
    assert_eq!(next(&mut conn).await.0.str("code"), Some("bad_request"));
    assert_eq!(raw(&mut conn, Frame::new("whoami"), b"").await, "whoami");
    // Inline, with only SHA-256.
    let small = b"hello".to_vec();
    let inline = Frame::new("put")
        .with("path", "small.txt")
        .with("length", small.len())
        .with("sha256", sha256_hex(&small));
    assert_eq!(raw(&mut conn, inline.clone(), &small).await, "put_ok");
    let wrong = inline
        .with("path", "wrong.txt")
        .with("sha256", sha256_hex(b"jello"));
    assert_eq!(raw(&mut conn, wrong, &small).await, "checksum_mismatch");
    // Published: the two good ones, and what get reports is BLAKE3.
    let mut c = Client::connect(&srv.framed.to_string(), &Transport::Plain)
        .await
        .unwrap();
    c.login("sam", "correct horse").await.unwrap();
    let names: Vec<String> = c
        .list("", false)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["good.bin", "small.txt"]);
    conn.write_frame(&Frame::new("get").with("path", "good.bin"))
        .await
        .unwrap();
    let (file, body) = next(&mut conn).await;
    assert_eq!(file.kind(), "file");
    assert!(body == data);
    assert_eq!(next(&mut conn).await.0.str("blake3"), Some(blake3.as_str()));
    srv.stop().await;
}

/// Threads of this process (the server runs in it).
fn process_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// A plain framed connection whose receive buffer is 4 KiB, so a download
/// it does not read stalls the server's side at once.
async fn tiny_window_client(addr: std::net::SocketAddr) -> Connection<sockit::tls::Stream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut conn = Connection::new(
        sockit::tls::Stream::Plain(stream),
        sockit::proto::Limits::default(),
    );
    conn.write_frame(&Frame::new("hello").with("version", 1))
        .await
        .unwrap();
    conn.read_frame().await.unwrap().unwrap();
    conn
}

/// Downloads started by the attack that never read (most at once).
const STALLED_GETS: usize = 600;
/// How long another user may wait for `auth` + `stat` meanwhile.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// Process threads allowed while the stalled downloads are open: the
/// transfers' 64 disk reads, the runtimes' workers and room for metadata
/// work, and the runtimes and idle blocking threads of the other tests
/// running in this process meanwhile; a thread per download fills tokio's
/// pool of 512 (516 threads were seen before the fix).
const THREADS_AT_MOST: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_gets_that_never_read_leave_other_users_answered_within_2s() {
    // The per-address connection cap, a defence of its own, is lifted so
    // that this attack can come from one address.
    let srv = common::start(|c| c.limits.max_connections_per_address = 10_000).await;
    let mut attacker = registered(&srv, "mallory").await;
    let (_, token, _) = attacker.login("mallory", "correct horse").await.unwrap();
    let space = srv.data.path().join("files/mallory");
    std::fs::create_dir_all(&space).unwrap();
    std::fs::write(space.join("big.bin"), pattern(16 << 20, 1)).unwrap();
    let mut victim = registered(&srv, "victor").await;
    victim.mkdir("docs", false).await.unwrap();
    let (_, victim_token, _) = victim.login("victor", "correct horse").await.unwrap();

    // Each attacker authenticates, asks for the 16 MiB file, takes the
    // header and then reads nothing more.
    let tasks: Vec<_> = (0..STALLED_GETS)
        .map(|_| {
            let (addr, token) = (srv.framed, token.clone());
            tokio::spawn(async move {
                let mut conn = tiny_window_client(addr).await;
                let started = tokio::time::timeout(Duration::from_secs(10), async {
                    conn.write_frame(&Frame::new("auth").with("token", token))
                        .await
                        .ok()?;
                    conn.read_frame().await.ok()??;
                    conn.write_frame(&Frame::new("get").with("path", "big.bin"))
                        .await
                        .ok()?;
                    let header = conn.read_frame().await.ok()??;
                    (header.kind() == "file").then_some(())
                })
                .await;
                (conn, matches!(started, Ok(Some(()))))
            })
        })
        .collect();
    let mut stalled = Vec::new();
    let mut sending = 0;
    for t in tasks {
        let (conn, started) = t.await.unwrap();
        sending += usize::from(started);
        stalled.push(conn);
    }

    // Another user, meanwhile: a fresh connection, auth, stat.
    let t0 = std::time::Instant::now();
    let answered = tokio::time::timeout(ANSWER_WITHIN, async {
        let mut conn = common::framed_client(srv.framed).await;
        let authed = raw(
            &mut conn,
            Frame::new("auth").with("token", victim_token),
            b"",
        )
        .await;
        let stat = raw(&mut conn, Frame::new("stat").with("path", "docs"), b"").await;
        (authed, stat)
    })
    .await;
    let threads = process_threads();
    assert_eq!(
        answered.as_ref().ok(),
        Some(&("authed".to_string(), "stat".to_string())),
        "with {STALLED_GETS} gets that never read ({sending} of them sending), another user's \
auth + stat must be answered within {ANSWER_WITHIN:?}; waited {:?} ({threads} threads)",
        t0.elapsed()
    );
    assert!(
        threads <= THREADS_AT_MOST,
        "{STALLED_GETS} stalled gets ({sending} sending) hold {threads} threads; at most \
{THREADS_AT_MOST} allowed (no thread per download)"
    );
    assert_eq!(sending, STALLED_GETS, "every attacker's get started");
    drop(stalled);
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
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a plain system call with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[tokio::test]
async fn get_of_a_fifo_is_refused_at_once_with_not_a_file() {
    let srv = common::start(|_| {}).await;
    let mut conn = raw_login(&srv, "fifi").await;
    let space = srv.data.path().join("files/fifi");
    std::fs::create_dir_all(&space).unwrap();
    mkfifo(&space.join("pipe"));
    let refused = tokio::time::timeout(
        ANSWER_WITHIN,
        raw(&mut conn, Frame::new("get").with("path", "pipe"), b""),
    )
    .await;
    release_fifo(&space.join("pipe"));
    assert_eq!(
        refused.ok().as_deref(),
        Some("not_a_file"),
        "a get of a FIFO must be refused within {ANSWER_WITHIN:?}, not wait for a writer"
    );
    // The connection goes on.
    assert_eq!(
        raw(&mut conn, Frame::new("stat").with("path", "pipe"), b"").await,
        "stat"
    );
    srv.stop().await;
}

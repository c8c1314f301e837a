//! The file commands as a user runs them: the real binary, a real server
//! process, real files; including SIGKILL of the server or the client in the
//! middle of a transfer.

mod common;

use common::cli::{serve, serve_with, wait_until, Server, BIN};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

fn pattern_file(path: &Path, len: usize, seed: u8) {
    let mut f = std::fs::File::create(path).unwrap();
    let block: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed as u32) >> 3) as u8)
        .collect();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        f.write_all(&block[..n]).unwrap();
        left -= n;
    }
}

fn hash_file(path: &Path) -> String {
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_hex().to_string()
}

#[test]
fn the_whole_flow_as_a_user_runs_it() {
    let data = tempfile::tempdir().unwrap();
    let srv = serve(data.path(), "127.0.0.1:0");
    let u = srv.user();
    u.sign_up("Zoe");
    // The token is saved privately.
    let creds = u.config.path().join("credentials.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&creds).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&creds).unwrap().contains("sk_"));

    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("报告 2026.pdf");
    pattern_file(&src, 2_500_000, 1);
    assert_eq!(u.ok(&["ls"]), "");
    u.ok(&["put", src.to_str().unwrap(), "docs/"]);
    assert_eq!(u.ok(&["ls"]), "docs/\n");
    assert_eq!(u.ok(&["ls", "docs"]), "报告 2026.pdf\n");
    let long = u.ok(&["ls", "-l", "docs"]);
    assert!(long.starts_with("file        2500000 "), "{long}");
    let json: serde_json::Value = serde_json::from_str(&u.ok(&["ls", "--json", "docs"])).unwrap();
    assert_eq!(json[0]["size"], 2_500_000);

    let err = u.fails(&["put", src.to_str().unwrap(), "docs/"]);
    assert!(err.contains("already exists"), "{err}");
    u.ok(&["put", "--force", src.to_str().unwrap(), "docs/"]);

    let down = tempfile::tempdir().unwrap();
    u.ok(&["get", "docs/报告 2026.pdf", down.path().to_str().unwrap()]);
    assert_eq!(
        hash_file(&down.path().join("报告 2026.pdf")),
        hash_file(&src)
    );
    let err = u.fails(&["get", "docs/报告 2026.pdf", down.path().to_str().unwrap()]);
    assert!(err.contains("already exists"), "{err}");

    u.ok(&["mkdir", "-p", "archive/2026"]);
    // A missing local file or folder: the same words for put and get, the
    // path the user named, no "(os error 2)", no internal `.part` file.
    let err = u.fails(&["put", "/nonexistent/file.txt"]);
    assert!(
        err.contains("/nonexistent/file.txt: no such file or folder") && !err.contains("os error"),
        "{err}"
    );
    let missing = down.path().join("no-such-folder/x.pdf");
    let err = u.fails(&["get", "docs/报告 2026.pdf", missing.to_str().unwrap()]);
    assert!(
        err.contains("no-such-folder: no such folder") && !err.contains(".part"),
        "{err}"
    );
    // An existing folder: mkdir's own hint, not put's --force.
    let err = u.fails(&["mkdir", "archive/2026"]);
    assert!(
        err.contains("already exists") && err.contains("-p") && !err.contains("--force"),
        "{err}"
    );
    u.ok(&["mkdir", "-p", "archive/2026"]);
    u.ok(&["mv", "docs/报告 2026.pdf", "archive/2026"]);
    assert_eq!(
        u.ok(&["ls", "-R", "archive"]),
        "2026/\n2026/报告 2026.pdf\n"
    );
    let err = u.fails(&["rm", "archive"]);
    assert!(err.contains("not empty"), "{err}");
    u.ok(&["rm", "-r", "archive"]);
    let err = u.fails(&["get", "nothing.txt"]);
    assert!(err.contains("no such file"), "{err}");
    let err = u.fails(&["get", "../etc/passwd"]);
    assert!(err.contains("bad path"), "{err}");

    // Control characters are refused in names sent by clients...
    let evil = work.path().join("evil");
    std::fs::write(&evil, b"x").unwrap();
    let err = u.fails(&["put", evil.to_str().unwrap(), "x\u{1b}]0;pwned\u{7}"]);
    assert!(
        err.contains("control characters") && !err.contains('\u{1b}'),
        "{err:?}"
    );
    // ...and a name that got onto the server's disk another way is shown
    // escaped, never sent raw to the terminal.
    std::fs::write(srv.data.join("files/zoe/x\u{1b}]0;pwned\u{7}"), b"x").unwrap();
    let listing = u.ok(&["ls"]);
    assert!(!listing.contains('\u{1b}'), "{listing:?}");
    assert!(listing.contains("x\\u{1b}]0;pwned\\u{7}"), "{listing:?}");

    u.ok(&["logout"]);
    // A second logout has nothing to do: it says so and succeeds.
    let (ok, _, err) = u.run(&["logout"], "");
    assert!(ok && err.contains("nothing to log out of"), "{err}");
    let err = u.fails(&["ls"]);
    assert!(err.contains("not logged in"), "{err}");
    let (ok, _, err) = u.run(&["login", "--user", "Zoe", "--password-stdin"], "wrong\n");
    assert!(!ok && err.contains("wrong user name or password"), "{err}");
}

#[test]
fn folders_go_up_and_come_back_with_put_r_and_get_r() {
    let data = tempfile::tempdir().unwrap();
    let srv = serve(data.path(), "127.0.0.1:0");
    let u = srv.user();
    u.sign_up("tree");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("project");
    for (i, rel) in [
        "a.txt",
        "src/main.rs",
        "src/deep/er/x.bin",
        "文档/说明.md",
        "empty/.keep",
    ]
    .iter()
    .enumerate()
    {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        pattern_file(&p, 1000 * i + 3, i as u8);
    }
    std::fs::create_dir_all(root.join("really-empty")).unwrap();
    let err = u.fails(&["put", root.to_str().unwrap()]);
    assert!(err.contains("use -r"), "{err}");
    u.ok(&["put", "-r", root.to_str().unwrap()]);
    let tree = u.ok(&["ls", "-R", "project"]);
    assert!(
        tree.contains("really-empty/\n") && tree.contains("文档/说明.md\n"),
        "{tree}"
    );
    let back = work.path().join("back");
    std::fs::create_dir(&back).unwrap();
    u.ok(&["get", "-r", "project", back.to_str().unwrap()]);
    for rel in [
        "a.txt",
        "src/main.rs",
        "src/deep/er/x.bin",
        "文档/说明.md",
        "empty/.keep",
    ] {
        assert_eq!(
            hash_file(&back.join("project").join(rel)),
            hash_file(&root.join(rel)),
            "{rel}"
        );
    }
    assert!(back.join("project/really-empty").is_dir());
}

#[test]
fn server_killed_mid_upload_restarts_and_the_upload_resumes() {
    let data = tempfile::tempdir().unwrap();
    let mut srv = serve(data.path(), "127.0.0.1:0");
    let addr = srv.addr.clone();
    let u = srv.user();
    u.sign_up("kim");
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big.bin");
    pattern_file(&big, 400 * 1024 * 1024, 7);
    let mut put = u
        .cmd(&["put", "-q", big.to_str().unwrap()])
        .spawn()
        .unwrap();
    let partials = srv.data.join("files/kim/.sockit-partial");
    let partial_size = || -> u64 {
        std::fs::read_dir(&partials)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .and_then(|e| e.metadata().ok())
            .map_or(0, |m| m.len())
    };
    wait_until("part of the upload to reach the server's disk", || {
        partial_size() > 50 * 1024 * 1024
    });
    srv.child.kill().unwrap(); // SIGKILL
    srv.child.wait().unwrap();
    let status = put.wait().unwrap();
    assert!(!status.success(), "the client must notice the server died");
    let kept = partial_size();
    assert!(kept > 0 && kept < 400 * 1024 * 1024, "partial kept: {kept}");

    let srv = serve(data.path(), &addr);
    u.ok(&["put", "-q", big.to_str().unwrap()]);
    assert!(
        srv.log.lock().unwrap().contains("resuming upload"),
        "the second put did not resume"
    );
    let down = work.path().join("down.bin");
    u.ok(&["get", "-q", "big.bin", down.to_str().unwrap()]);
    assert_eq!(hash_file(&down), hash_file(&big));
}

#[test]
fn client_killed_mid_download_resumes() {
    let data = tempfile::tempdir().unwrap();
    let srv = serve(data.path(), "127.0.0.1:0");
    let u = srv.user();
    u.sign_up("lea");
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big.bin");
    pattern_file(&big, 300 * 1024 * 1024, 3);
    u.ok(&["put", "-q", big.to_str().unwrap()]);
    let down = work.path().join("down.bin");
    let mut get = u
        .cmd(&["get", "-q", "big.bin", down.to_str().unwrap()])
        .spawn()
        .unwrap();
    let part = work.path().join("down.bin.part");
    wait_until("part of the download", || {
        std::fs::metadata(&part).map_or(0, |m| m.len()) > 30 * 1024 * 1024
    });
    get.kill().unwrap();
    get.wait().unwrap();
    assert!(!down.exists(), "no half file under the final name");
    u.ok(&["get", "-q", "big.bin", down.to_str().unwrap()]);
    assert_eq!(hash_file(&down), hash_file(&big));
    assert!(!part.exists());
}

#[test]
fn admin_add_user_works_when_registration_is_closed() {
    let data = tempfile::tempdir().unwrap();
    let cfg = data.path().join("sockit.toml");
    std::fs::write(&cfg, "[accounts]\nallow_register = false\n").unwrap();
    let mut child = Command::new(BIN)
        .args([
            "admin",
            "add-user",
            "root2",
            "--password-stdin",
            "--data-dir",
        ])
        .arg(data.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"admin pw\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let srv = serve_with(
        data.path(),
        "127.0.0.1:0",
        &["--config", cfg.to_str().unwrap()],
    );
    let u = srv.user();
    let (ok, _, err) = u.run(&["register", "--user", "new", "--password-stdin"], "x\n");
    assert!(!ok && err.contains("registration is closed"), "{err}");
    let (ok, _, err) = u.run(
        &["login", "--user", "root2", "--password-stdin"],
        "admin pw\n",
    );
    assert!(ok, "{err}");
}

/// Runs the Python example client against `srv`, over TLS with its
/// certificate pinned; `None` if python3 is missing.
fn python(srv: &Server, args: &[&str], stdin: &str) -> Option<(bool, String, String)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_client.py");
    let port = srv.addr.rsplit(':').next().unwrap();
    let fp = srv.fingerprint.as_deref().unwrap();
    let mut child = match Command::new("python3")
        .arg(script)
        .args(["--port", port, "--fingerprint", fp])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return None,
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn python_and_sockit_exchange_files_both_ways() {
    let data = tempfile::tempdir().unwrap();
    let srv = serve(data.path(), "127.0.0.1:0");
    let Some((ok, _, err)) = python(
        &srv,
        &["register", "--user", "py", "--password-stdin"],
        "snake pw\n",
    ) else {
        eprintln!("SKIPPED: python3 is not installed; the Python interop test did not run");
        return;
    };
    assert!(ok, "{err}");
    // Over TLS, pinned: another certificate is refused before the password
    // goes out.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_client.py");
    let port = srv.addr.rsplit(':').next().unwrap();
    let wrong = format!("SHA256:{}", "0".repeat(64));
    let out = Command::new("python3")
        .args([script, "--port", port, "--fingerprint", &wrong, "ping"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not the pinned"),
        "{err}"
    );
    let (ok, token, err) = python(
        &srv,
        &["login", "--user", "py", "--password-stdin"],
        "snake pw\n",
    )
    .unwrap();
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    let u = srv.user();
    let (ok, _, err) = u.run(&["login", "--user", "py", "--password-stdin"], "snake pw\n");
    assert!(ok, "{err}");

    // Python uploads, sockit downloads. (The example's pure-Python BLAKE3 is
    // slow, so the files are small.)
    let work = tempfile::tempdir().unwrap();
    let from_py = work.path().join("from python.bin");
    pattern_file(&from_py, 200_000, 5);
    let (ok, _, err) = python(
        &srv,
        &[
            "upload",
            "--token",
            &token,
            from_py.to_str().unwrap(),
            "py/数据.bin",
        ],
        "",
    )
    .unwrap();
    assert!(ok, "{err}");
    let got = work.path().join("got.bin");
    u.ok(&["get", "-q", "py/数据.bin", got.to_str().unwrap()]);
    assert_eq!(hash_file(&got), hash_file(&from_py));

    // sockit uploads, Python downloads.
    let from_rs = work.path().join("from sockit.bin");
    pattern_file(&from_rs, 150_000, 6);
    u.ok(&["put", "-q", from_rs.to_str().unwrap(), "rs.bin"]);
    let py_got = work.path().join("py got.bin");
    let (ok, _, err) = python(
        &srv,
        &[
            "download",
            "--token",
            &token,
            "rs.bin",
            py_got.to_str().unwrap(),
        ],
        "",
    )
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(hash_file(&py_got), hash_file(&from_rs));

    // Errors come back as codes.
    let (ok, _, err) = python(
        &srv,
        &["download", "--token", &token, "../x", "/dev/null"],
        "",
    )
    .unwrap();
    assert!(!ok && err.contains("bad_path"), "{err}");
}

#[test]
fn admin_commands_outside_the_servers_folder_name_the_path_and_create_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    for args in [
        &["admin", "users"][..],
        &["admin", "grant", "ann", "exec"],
        &["admin", "add-user", "ann", "--password-stdin"],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(cwd.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {err}");
        assert!(
            err.contains("sockit-data") && err.contains("--data-dir"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    assert!(
        !cwd.path().join("sockit-data").exists(),
        "a data folder was made where no server runs"
    );
    // The config file's data_dir is the one used when given.
    let data = tempfile::tempdir().unwrap();
    let cfg = cwd.path().join("sockit.toml");
    std::fs::write(
        &cfg,
        format!("data_dir = {:?}\n", data.path().join("missing")),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["admin", "users", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("missing"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wrong_port_is_named_for_what_it_speaks_and_no_password_is_asked_first() {
    let srv = common::start(|_| {}).await;
    let config = tempfile::tempdir().unwrap();
    let run = |args: Vec<String>| {
        let config = config.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            // stdin stays open and empty: a password read first would hang.
            let mut child = Command::new(BIN)
                .args(&args)
                .env("SOCKIT_CONFIG_DIR", &config)
                .env_remove("SOCKIT_PASSWORD")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let stdin = child.stdin.take();
            let out = child.wait_with_output().unwrap();
            drop(stdin);
            out
        })
    };
    let cases = [
        ("login", srv.web.to_string(), "that port speaks HTTP"),
        (
            "register",
            srv.echo.to_string(),
            "that port echoes what it gets",
        ),
    ];
    for (cmd, addr, want) in cases {
        let args = vec![
            cmd.to_string(),
            "--server".into(),
            addr,
            "--user".into(),
            "ann".into(),
            "--password-stdin".into(),
        ];
        let out = tokio::time::timeout(std::time::Duration::from_secs(30), run(args))
            .await
            .expect("it waited for a password before trying the server")
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd}: {err}");
        assert!(err.contains(want), "{cmd}: {err}");
        assert!(!err.contains("--no-tls"), "{cmd}: {err}");
        assert!(err.contains("7070"), "{cmd}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{cmd}: {err}");
    }
    // Nothing listening: refused at once, before any password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let args = [
        "register",
        "--server",
        &closed,
        "--user",
        "ann",
        "--password-stdin",
    ]
    .map(String::from)
    .to_vec();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), run(args))
        .await
        .expect("it waited for a password before trying the server")
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));
    srv.stop().await;
}

//! TLS on the framed port: trust on first use, pins that must match,
//! re-pinning, CA verification (expired and wrong-name certificates
//! refused), reload on SIGHUP without dropping connections, and clear
//! errors when one side speaks TLS and the other does not.

mod common;

use common::ca::Ca;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::cli::{serve, serve_with, wait_until, User, BIN};
use sockit::proto::{Connection, Frame, Limits};
use sockit::tls::{Transport, Trust, Verify};

fn known_servers(u: &User) -> String {
    std::fs::read_to_string(u.config.path().join("known_servers")).unwrap_or_default()
}

fn register(u: &User, name: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["register", "--user", name, "--password-stdin"];
    args.extend_from_slice(extra);
    u.run(&args, "tls test pw\n")
}

#[test]
fn a_new_server_is_pinned_on_first_use_and_then_matched() {
    let data = tempfile::tempdir().unwrap();
    let srv = serve(data.path(), "127.0.0.1:0");
    let fp = srv
        .fingerprint
        .clone()
        .expect("the server logs its fingerprint");
    assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 64, "{fp}");
    // The generated key is the owner's alone.
    let key = data.path().join("tls/key.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // The operator's view of the fingerprint is the clients' view.
    let u = User::new(&srv.addr);
    let shown = u.ok(&[
        "tls",
        "fingerprint",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    assert_eq!(shown.trim(), fp);

    // Unknown, and no terminal to ask on: refused, with the fingerprint
    // and what to do.
    let (ok, _, err) = register(&u, "ann", &[]);
    assert!(!ok);
    assert!(
        err.contains("not a known server") && err.contains(&fp),
        "{err}"
    );
    assert!(
        err.contains("--accept-new") && err.contains("sockit tls trust"),
        "{err}"
    );
    assert!(
        known_servers(&u).is_empty(),
        "nothing is pinned by a refusal"
    );

    // --accept-new pins it.
    let (ok, _, err) = register(&u, "ann", &["--accept-new"]);
    assert!(ok, "{err}");
    assert!(err.contains("trusting") && err.contains(&fp), "{err}");
    assert!(known_servers(&u).contains(&format!("{} {fp}", srv.addr)));
    // From now on it is known.
    let (ok, _, err) = u.run(
        &["login", "--user", "ann", "--password-stdin"],
        "tls test pw\n",
    );
    assert!(ok, "{err}");
    assert_eq!(u.ok(&["tls", "known"]).trim(), format!("{} {fp}", srv.addr));
}

#[test]
fn a_changed_certificate_is_refused_until_it_is_pinned_again() {
    let data = tempfile::tempdir().unwrap();
    let srv = serve(data.path(), "127.0.0.1:0");
    let addr = srv.addr.clone();
    let old = srv.fingerprint.clone().unwrap();
    let u = srv.user();
    u.sign_up("bo");
    assert_eq!(u.ok(&["ls"]).trim(), "");
    drop(srv);
    // The server comes back with a new certificate (as an attacker would).
    std::fs::remove_dir_all(data.path().join("tls")).unwrap();
    let srv = serve(data.path(), &addr);
    let new = srv.fingerprint.clone().unwrap();
    assert_ne!(old, new);

    let (ok, _, err) = u.run(&["ls"], "");
    assert!(!ok);
    assert!(err.contains("HAS CHANGED"), "{err}");
    assert!(err.contains(&old) && err.contains(&new), "{err}");
    assert!(err.contains(&format!("sockit tls forget {addr}")), "{err}");
    // --accept-new does not override a pin.
    let (ok, _, err) = u.run(&["ls", "--accept-new"], "");
    assert!(!ok && err.contains("HAS CHANGED"), "{err}");

    // The operator confirms the change; the user forgets and re-pins.
    u.ok(&["tls", "forget", &addr]);
    let (ok, _, err) = u.run(&["ls"], "");
    assert!(!ok && err.contains("not a known server"), "{err}");
    u.ok(&[
        "tls",
        "trust",
        &addr,
        &new.to_uppercase().replace("SHA256:", ""),
    ]);
    assert_eq!(
        u.ok(&["ls"]).trim(),
        "",
        "the session survives the new certificate"
    );
    assert!(known_servers(&u).contains(&new));
    // A fingerprint that is not one is refused.
    let (ok, _, err) = u.run(&["tls", "trust", &addr, "SHA256:abc"], "");
    assert!(!ok && err.contains("not a SHA-256 fingerprint"), "{err}");
}

fn hangup(pid: u32) {
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_refuses_expired_and_wrong_name_certificates_and_sighup_reloads_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "good");
    let _other = Ca::new(dir.path(), "other");
    let ca_file = dir.path().join("good.pem");
    let other_file = dir.path().join("other.pem");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    ca.issue(&["127.0.0.1", "localhost"], &cert, &key);
    let data = dir.path().join("data");
    let srv = serve_with(
        &data,
        "127.0.0.1:0",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let addr = srv.addr.clone();
    let u = User::new(&addr);
    let ca_arg = ["--ca", ca_file.to_str().unwrap()];
    let (ok, _, err) = register(&u, "cy", &ca_arg);
    assert!(ok, "{err}");
    assert!(
        known_servers(&u).is_empty(),
        "a CA-verified server is not pinned"
    );
    // Another CA does not vouch for it.
    let (ok, _, err) = register(&u, "cy2", &["--ca", other_file.to_str().unwrap()]);
    assert!(!ok && err.contains("not trusted"), "{err}");

    // A connection made now must survive the reloads below.
    let trust = Trust {
        verify: Verify::Ca(ca_file.clone()),
        prompt: false,
        ..Trust::default()
    };
    let stream =
        sockit::tls::client::connect(&addr, &Transport::Tls(trust), Duration::from_secs(10))
            .await
            .unwrap();
    let mut conn = Connection::new(stream, Limits::default());
    conn.write_frame(&Frame::new("hello").with("version", 1))
        .await
        .unwrap();
    assert_eq!(conn.read_frame().await.unwrap().unwrap().kind(), "hello");

    let pid = srv.child.id();
    let reloads = |n: usize| {
        let log = srv.log.clone();
        move || {
            log.lock()
                .unwrap()
                .matches("reloaded the TLS certificate")
                .count()
                >= n
        }
    };
    // Expired.
    ca.issue_between(&["127.0.0.1"], 2000, 2001, &cert, &key);
    hangup(pid);
    wait_until("the first reload", reloads(1));
    let (ok, _, err) = register(&u, "cy3", &ca_arg);
    assert!(!ok && err.contains("expired"), "{err}");
    // Valid, for another name.
    ca.issue(&["files.example.org"], &cert, &key);
    hangup(pid);
    wait_until("the second reload", reloads(2));
    let (ok, _, err) = register(&u, "cy4", &ca_arg);
    assert!(!ok && err.contains("not valid for this host name"), "{err}");
    // A broken file is refused and the current certificate kept.
    std::fs::write(&cert, "not a certificate").unwrap();
    hangup(pid);
    wait_until("the failed reload", || {
        srv.log
            .lock()
            .unwrap()
            .contains("keeping the current TLS certificate")
    });
    let (ok, _, err) = register(&u, "cy5", &ca_arg);
    assert!(!ok && err.contains("not valid for this host name"), "{err}");

    // The first connection went on through all of it.
    let ping = Frame::new("ping").with("id", 7);
    conn.write_frame(&ping).await.unwrap();
    let pong = conn.read_frame().await.unwrap().unwrap();
    assert_eq!(pong.kind(), "pong", "{pong:?}");
}

#[test]
fn a_plain_client_on_the_tls_port_is_told_to_use_tls() {
    let data = tempfile::tempdir().unwrap();
    let srv = serve(data.path(), "127.0.0.1:0");
    // Raw bytes, as the exercises' Python clients send them.
    let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
    let hello = br#"{"type":"hello","version":1}"#;
    s.write_all(&(hello.len() as u32).to_be_bytes()).unwrap();
    s.write_all(hello).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut header = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut header).unwrap();
    let frame: serde_json::Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(frame["type"], "error");
    assert_eq!(frame["code"], "tls_required");
    assert!(frame["message"].as_str().unwrap().contains("TLS"));
    // Then the server closes.
    assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 0);

    // sockit's own client with --no-tls hears the same.
    let u = srv.user();
    let (ok, _, err) = register(&u, "dee", &["--no-tls"]);
    assert!(!ok && err.contains("speaks TLS"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_tls_client_on_a_plain_port_is_told_so() {
    let data = tempfile::tempdir().unwrap();
    let srv = serve_with(data.path(), "127.0.0.1:0", &["--no-tls"]);
    assert!(srv.fingerprint.is_none());
    let u = User::new(&srv.addr);
    let (ok, _, err) = register(&u, "eve", &["--accept-new"]);
    assert!(!ok);
    assert!(
        err.contains("plain text, not TLS") && err.contains("--no-tls"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (ok, _, err) = register(&u, "eve", &["--no-tls"]);
    assert!(ok, "{err}");
}

#[test]
fn plain_tcp_is_refused_on_a_network_address_unless_allowed() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--no-tls", "--framed-bind", "0.0.0.0:0"])
        .args([
            "--echo-bind",
            "127.0.0.1:0",
            "--web-bind",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("plain_on_network"),
        "{err}"
    );
}

#[test]
fn insecure_connects_to_anything_and_warns_every_time() {
    let data = tempfile::tempdir().unwrap();
    let srv = serve(data.path(), "127.0.0.1:0");
    let u = User::new(&srv.addr);
    for name in ["fay", "gus"] {
        let (ok, _, err) = register(&u, name, &["--insecure"]);
        assert!(ok, "{err}");
        assert!(err.contains("warning: --insecure"), "{err}");
    }
    assert!(known_servers(&u).is_empty(), "--insecure pins nothing");
}

//! The data folder under attack from the same machine and from its own
//! users: what it holds is its owner's alone (modes 0700 and 0600 whatever
//! the umask), and a full disk never locks anyone out.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use indicatif::ProgressBar;
use sockit::files::client::Client;
use sockit::tls::Transport;

const PASSWORD: &str = "correct horse";

async fn registered(addr: &str, user: &str) -> Client {
    let mut c = Client::connect(addr, &Transport::Plain).await.unwrap();
    c.register(user, PASSWORD).await.unwrap();
    c.login(user, PASSWORD).await.unwrap();
    c
}

/// Every file and folder beneath `dir` (itself included) with its mode bits.
fn modes(dir: &Path, out: &mut Vec<(String, bool, u32)>) {
    let meta = std::fs::symlink_metadata(dir).unwrap();
    out.push((
        dir.display().to_string(),
        true,
        meta.permissions().mode() & 0o777,
    ));
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            modes(&entry.path(), out);
        } else {
            out.push((
                entry.path().display().to_string(),
                false,
                meta.permissions().mode() & 0o777,
            ));
        }
    }
}

#[tokio::test]
async fn every_created_file_is_0600_and_every_folder_0700_under_umask_022() {
    // SAFETY: umask only changes this process's file creation mask; this
    // test binary creates its files after it.
    unsafe { libc::umask(0o022) };
    let srv = common::start(|c| {
        c.exec.enabled = true;
        c.exec.allow = vec!["true".into()];
    })
    .await;
    let addr = srv.framed.to_string();
    let mut c = registered(&addr, "ann").await;
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("a.txt");
    std::fs::write(&local, b"direct messages, files, secrets").unwrap();
    let none = ProgressBar::hidden();
    c.put_file(&local, "docs/deep/a.txt", false, true, &none)
        .await
        .unwrap();
    c.mkdir("made/by/hand", true).await.unwrap();
    sockit::accounts::Accounts::open(srv.data.path(), Default::default())
        .unwrap()
        .set_permission("ann", "exec", true)
        .unwrap();
    let mut conn = registered(&addr, "bob").await;
    conn.login("ann", PASSWORD).await.unwrap();
    let mut conn = conn.into_connection();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let sinks = sockit::exec::client::Sinks {
        stdout: &mut out,
        stderr: &mut err,
    };
    sockit::exec::client::run(&mut conn, &["true".to_string()], None, None, sinks, None)
        .await
        .unwrap();

    let data = srv.data.path();
    for must in [
        "sockit.db",
        "chat.db",
        "exec-audit.jsonl",
        "public/index.html",
        "files/ann/docs/deep/a.txt",
        "files/ann/.sockit-partial",
        "files/ann/made/by/hand",
    ] {
        assert!(data.join(must).exists(), "{must} was not made");
    }
    let mut all = Vec::new();
    // The temporary folder itself is the test's; what the server made is inside.
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            modes(&path, &mut all);
        } else {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            all.push((path.display().to_string(), false, mode));
        }
    }
    let wrong: Vec<_> = all
        .iter()
        .filter(|(_, dir, mode)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(p, dir, mode)| format!("{p}: {mode:o} ({})", if *dir { "folder" } else { "file" }))
        .collect();
    assert!(
        wrong.is_empty(),
        "not the owner's alone (0700/0600):\n{}",
        wrong.join("\n")
    );
    srv.stop().await;

    // A data folder the server makes itself is 0700.
    let fresh = tmp.path().join("new-data");
    let srv = common::start(|c| c.data_dir = fresh.clone()).await;
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "a new data folder is {mode:o}");
    srv.stop().await;
}

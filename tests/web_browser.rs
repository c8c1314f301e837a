//! The file store in a real browser: starts `sockit serve` in-process on
//! port 0, creates a user, and runs `tests/browser/app.test.mjs`, which drives
//! Debian's headless Chromium with playwright-core (log in, upload through
//! the file input, see it listed, download and compare, rename, delete, log
//! out, phone-sized layout).
//!
//! Needs `node`, `tests/browser/node_modules` (`npm ci` there) and
//! `/usr/bin/chromium`; `.ci/run` installs them. Where they are missing the
//! test says so and passes, except under CI (`CI=true`), where it fails.

mod common;

use std::path::Path;
use std::process::Stdio;

fn missing_prerequisite() -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        return Some(format!("run `npm ci` in {}", dir.display()));
    }
    let chromium = std::env::var("SOCKIT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some("install Chromium (`apt-get install chromium`)".into());
    }
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("install Node.js".into());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_works_in_headless_chromium() {
    if let Some(what) = missing_prerequisite() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(!ci, "the browser test cannot run: {what}");
        eprintln!("SKIPPED the browser test: {what}");
        return;
    }
    let srv = common::start(|_| {}).await;
    let accounts =
        sockit::accounts::Accounts::open(srv.data.path(), sockit::accounts::Settings::default())
            .unwrap();
    accounts.add_user("alice", "correct horse battery").unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = tokio::process::Command::new("node")
        .arg("app.test.mjs")
        .current_dir(&dir)
        .env("SOCKIT_URL", format!("http://{}", srv.web))
        .env("SOCKIT_USER", "alice")
        .env("SOCKIT_PASSWORD", "correct horse battery")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run node");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser test failed:\n{text}");
    srv.stop().await;
}

//! The web app in real browsers: starts `sockit serve` in-process on port 0,
//! creates users, and runs node scripts that drive Debian's headless
//! Chromium (DevTools protocol) and Firefox ESR (WebDriver BiDi) with
//! playwright-core (`tests/browser/browser.mjs` picks one):
//! - `tests/browser/app.test.mjs`, the file store (log in, upload through
//!   the file input, see it listed, download and compare, rename, delete, log
//!   out, phone-sized layout), in both browsers over HTTP, and in Chromium
//!   again over HTTPS with the server's self-signed certificate trusted by
//!   its key (HTTP/2, HSTS, a `Secure` session cookie);
//! - `tests/browser/chat.test.mjs`, the chat page against a user on the
//!   framed port, played by the script itself over raw TCP (messages both
//!   ways in a room and directly, markup shown as text, a refused send,
//!   history, a dropped socket resumed with `?since=`, presence, phone size,
//!   logout closing the socket), in both browsers over HTTP, and in Chromium
//!   again over HTTPS (wss://);
//! - `tests/browser/uploads.test.mjs`, uploaded files that try to use the
//!   viewer's session (an HTML page opened inline, the script it loads, the
//!   same script loaded by a page of the site, an SVG) and get nowhere, with
//!   the same page on the static site as the control that does; and the
//!   inline previews (image, text, PDF, sound) working under the sandbox, in
//!   both browsers over HTTP.
//!
//! Over HTTPS the scripts get the server's self-signed certificate
//! (`SOCKIT_CA`) and Chromium trusts its key only (`tests/browser/trust.mjs`).
//! Firefox has no way to trust one key, so its runs are over HTTP.
//!
//! Needs `node`, `tests/browser/node_modules` (`npm ci` there),
//! `/usr/bin/chromium` and `/usr/bin/firefox-esr`; `.ci/run` installs them.
//! Where they are missing the test says so and passes, except under CI
//! (`CI=true`), where it fails.

mod common;

use std::path::Path;
use std::process::Stdio;

#[derive(Clone, Copy)]
enum Browser {
    Chromium,
    Firefox,
}

impl Browser {
    /// `SOCKIT_BROWSER` for the scripts.
    fn name(self) -> &'static str {
        match self {
            Browser::Chromium => "chromium",
            Browser::Firefox => "firefox",
        }
    }

    /// The executable, and how to install it.
    fn executable(self) -> (String, &'static str) {
        match self {
            Browser::Chromium => (
                std::env::var("SOCKIT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "apt-get install chromium",
            ),
            Browser::Firefox => (
                std::env::var("SOCKIT_FIREFOX").unwrap_or_else(|_| "/usr/bin/firefox-esr".into()),
                "apt-get install firefox-esr",
            ),
        }
    }
}

fn missing_prerequisite(browser: Browser) -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        return Some(format!("run `npm ci` in {}", dir.display()));
    }
    let (exe, install) = browser.executable();
    if !Path::new(&exe).exists() {
        return Some(format!("{exe} is missing (`{install}`)"));
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

/// True (after saying so) when the prerequisites are missing outside CI.
fn skipped(browser: Browser) -> bool {
    let Some(what) = missing_prerequisite(browser) else {
        return false;
    };
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(!ci, "the browser test cannot run: {what}");
    eprintln!("SKIPPED the browser test: {what}");
    true
}

/// Runs `tests/browser/<script>` with `env`; fails with its output unless it passes.
async fn run_node(script: &str, env: &[(&str, String)]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = tokio::process::Command::new("node")
        .arg(script)
        .current_dir(&dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run node");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "browser test {script} failed:\n{text}"
    );
}

/// A server for one browser run with `users` (name, password) added; with
/// `tls` its web port speaks HTTPS. Returns it with the scripts' common
/// environment: the URL and, over HTTPS, the certificate to trust.
async fn server_for(
    tls: bool,
    users: &[(&str, &str)],
) -> (common::TestServer, Vec<(&'static str, String)>) {
    let srv = common::start(|c| c.web.tls = tls).await;
    let accounts =
        sockit::accounts::Accounts::open(srv.data.path(), sockit::accounts::Settings::default())
            .unwrap();
    for (name, password) in users {
        accounts.add_user(name, password).unwrap();
    }
    let scheme = if tls { "https" } else { "http" };
    let mut env = vec![("SOCKIT_URL", format!("{scheme}://{}", srv.web))];
    if tls {
        let cert = srv.data.path().join("tls/cert.pem");
        env.push(("SOCKIT_CA", cert.display().to_string()));
    }
    (srv, env)
}

/// Runs `app.test.mjs` in `browser`, over HTTPS when `tls`.
async fn app_test(browser: Browser, tls: bool) {
    if skipped(browser) {
        return;
    }
    let (srv, mut env) = server_for(tls, &[("alice", "correct horse battery")]).await;
    env.extend([
        ("SOCKIT_BROWSER", browser.name().into()),
        ("SOCKIT_USER", "alice".into()),
        ("SOCKIT_PASSWORD", "correct horse battery".into()),
    ]);
    run_node("app.test.mjs", &env).await;
    srv.stop().await;
}

/// Runs `uploads.test.mjs` in `browser`, with the static site's folder to
/// put its control pages in.
async fn uploads_test(browser: Browser) {
    if skipped(browser) {
        return;
    }
    let (srv, mut env) = server_for(false, &[("alice", "correct horse battery")]).await;
    let site = srv.data.path().join("public");
    env.extend([
        ("SOCKIT_BROWSER", browser.name().into()),
        ("SOCKIT_USER", "alice".into()),
        ("SOCKIT_PASSWORD", "correct horse battery".into()),
        ("SOCKIT_SITE", site.display().to_string()),
    ]);
    run_node("uploads.test.mjs", &env).await;
    srv.stop().await;
}

/// Runs `chat.test.mjs` in `browser`, over HTTPS (and its socket over
/// wss://) when `tls`.
async fn chat_test(browser: Browser, tls: bool) {
    if skipped(browser) {
        return;
    }
    let (srv, mut env) = server_for(
        tls,
        &[
            ("alice", "correct horse battery"),
            ("bob", "battery staple bob"),
        ],
    )
    .await;
    env.extend([
        ("SOCKIT_BROWSER", browser.name().into()),
        ("SOCKIT_FRAMED", srv.framed.to_string()),
        ("SOCKIT_USER", "alice".into()),
        ("SOCKIT_PASSWORD", "correct horse battery".into()),
        ("SOCKIT_PEER", "bob".into()),
        ("SOCKIT_PEER_PASSWORD", "battery staple bob".into()),
    ]);
    run_node("chat.test.mjs", &env).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_works_in_headless_chromium() {
    app_test(Browser::Chromium, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_works_in_headless_firefox() {
    app_test(Browser::Firefox, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_works_in_headless_chromium_over_https() {
    app_test(Browser::Chromium, true).await;
}

/// Issue 15: an uploaded page opened inline cannot act with the viewer's
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_files_cannot_run_script_in_headless_chromium() {
    uploads_test(Browser::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_files_cannot_run_script_in_headless_firefox() {
    uploads_test(Browser::Firefox).await;
}

/// The scenario: a user in the browser and a user of the framed
/// protocol talk to each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_talks_with_a_framed_client_in_headless_chromium() {
    chat_test(Browser::Chromium, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_talks_with_a_framed_client_in_headless_firefox() {
    chat_test(Browser::Firefox, false).await;
}

/// The same over HTTPS: the page's socket is wss://, an HTTP/1.1 upgrade
/// (the port does not offer WebSockets over HTTP/2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_works_over_https_in_headless_chromium() {
    chat_test(Browser::Chromium, true).await;
}

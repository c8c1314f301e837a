//! Running the real binary: a `sockit serve` process and users with their
//! own config directories.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sockit");

/// A `sockit serve` process with its data directory and framed address.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data: PathBuf,
    pub log: Arc<Mutex<String>>,
    /// The certificate's fingerprint, from the log (None: plain TCP).
    pub fingerprint: Option<String>,
}

pub fn serve(data: &Path, framed_bind: &str) -> Server {
    serve_with(data, framed_bind, &[])
}

/// `sockit serve` with extra arguments (e.g. `--config FILE`).
pub fn serve_with(data: &Path, framed_bind: &str, extra: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--echo-bind",
            "127.0.0.1:0",
            "--framed-bind",
            framed_bind,
            "--web-bind",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "sockit=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut fingerprint = None;
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited early"
        );
        if let Some(fp) = line.split("fingerprint=").nth(1) {
            fingerprint = Some(fp.trim().to_string());
        }
        if line.contains("service=\"framed\"") && line.contains("listening") {
            break line.split("addr=").nth(1).unwrap().trim().to_string();
        }
    };
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut l = String::new();
        while stderr.read_line(&mut l).is_ok_and(|n| n > 0) {
            sink.lock().unwrap().push_str(&l);
            l.clear();
        }
    });
    Server {
        child,
        addr,
        data: data.to_path_buf(),
        log,
        fingerprint,
    }
}

impl Server {
    /// A user of this server who trusts its certificate (pinned, as a
    /// first connection answered with yes would).
    pub fn user(&self) -> User {
        let u = User::new(&self.addr);
        if let Some(fp) = &self.fingerprint {
            std::fs::write(
                u.config.path().join("known_servers"),
                format!("{} {fp}\n", self.addr),
            )
            .unwrap();
        }
        u
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user's environment: its own config directory, pointed at a server.
pub struct User {
    pub config: tempfile::TempDir,
    pub server: String,
}

impl User {
    pub fn new(server: &str) -> User {
        User {
            config: tempfile::tempdir().unwrap(),
            server: server.to_string(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("SOCKIT_CONFIG_DIR", self.config.path())
            .env("SOCKIT_SERVER", &self.server)
            .env_remove("SOCKIT_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs a command with `input` on stdin: (success, stdout, stderr).
    pub fn run(&self, args: &[&str], input: &str) -> (bool, String, String) {
        let mut child = self.cmd(args).spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args, "");
        assert!(ok, "sockit {args:?} failed: {err}");
        out
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let (ok, _, err) = self.run(args, "");
        assert!(!ok, "sockit {args:?} should have failed");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one-line error expected: {err}"
        );
        err
    }

    pub fn sign_up(&self, name: &str) {
        let (ok, _, err) = self.run(
            &["register", "--user", name, "--password-stdin"],
            "pw for tests\n",
        );
        assert!(ok, "{err}");
        let (ok, _, err) = self.run(
            &["login", "--user", name, "--password-stdin"],
            "pw for tests\n",
        );
        assert!(ok, "{err}");
    }
}

/// Waits (bounded) until `cond` holds, checking every few milliseconds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

//! Remote commands for administrators (`sockit exec`), on the framed port.
//!
//! Off by default. When `[exec]` enables it, a user with the `exec`
//! permission may run a program from the configured allowlist; the program
//! runs in its own process group with a cleared environment, a working
//! directory, a time limit and an output limit, and the whole group is killed
//! when the run ends for any reason. [`server`] runs the program and relays
//! its stdin, stdout and stderr over one connection with bounded buffers;
//! [`client`] is the other side and the `sockit exec` command. Every run and
//! every refusal is appended to the audit log (`<data>/exec-audit.jsonl`).
//! The messages are documented in `docs/protocol.md`.

pub mod client;
pub mod server;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

/// The permission a user needs to run commands.
pub const PERMISSION: &str = "exec";
/// File name of the audit log inside the data directory.
pub const AUDIT_FILE: &str = "exec-audit.jsonl";
/// Default time limit of one run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit on stdout and stderr together, in bytes.
pub const DEFAULT_MAX_OUTPUT: u64 = 64 * 1024 * 1024;
/// Default number of runs at once on one server.
pub const DEFAULT_MAX_RUNNING: usize = 16;
/// Default `PATH` of the programs run (and where allowlisted names are looked up).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Default `LANG` of the programs run.
pub const DEFAULT_LANG: &str = "C.UTF-8";
/// Most arguments in one request (the header limit bounds their bytes too).
pub const MAX_ARGS: usize = 4096;
/// Default `RLIMIT_NPROC` of the programs run: processes their user may
/// have at once (all of that user's processes count, not only one run's).
pub const DEFAULT_MAX_PROCESSES: u64 = 256;
/// Default `RLIMIT_AS` of the programs run: address space of each process,
/// in bytes (4 GiB).
pub const DEFAULT_MAX_MEMORY: u64 = 4 << 30;

/// Errors setting up the exec service (at server start).
#[derive(Debug, thiserror::Error)]
pub enum ExecSetupError {
    /// An allowlist entry does not name an executable file.
    #[error("exec.allow: {entry:?}: {reason}")]
    Allow { entry: String, reason: String },
    /// The working directory is not a directory.
    #[error("exec.workdir: {path}: {reason}")]
    Workdir { path: PathBuf, reason: String },
    /// An environment variable is unusable.
    #[error("exec.env: {0}")]
    Env(String),
    /// The user to run programs as does not exist.
    #[error("exec.user: {0:?}: no such user on this system")]
    User(String),
    /// The audit log cannot be opened.
    #[error("cannot open the exec audit log {}: {}", path.display(), crate::words::io(error))]
    Audit {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// How runs are made, as configured in `[exec]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Programs that may be run: names (looked up in `path`) or absolute paths.
    pub allow: Vec<String>,
    /// `PATH` given to the programs; also where allowlisted names are found.
    pub path: String,
    /// `LANG` given to the programs.
    pub lang: String,
    /// Further environment variables given to the programs.
    pub env: BTreeMap<String, String>,
    /// Working directory of the programs.
    pub workdir: PathBuf,
    /// Time limit of one run (a client may ask for less).
    pub timeout: Duration,
    /// Limit on stdout and stderr together, in bytes.
    pub max_output: u64,
    /// Runs at once; more are refused with `busy`.
    pub max_running: usize,
    /// `RLIMIT_NPROC` of the programs (0: inherited). Root ignores it, so a
    /// server running as root should also set `user`.
    pub max_processes: u64,
    /// `RLIMIT_AS` of the programs, bytes (0: inherited).
    pub max_memory: u64,
    /// Run the programs as this user (and its primary group) instead of the
    /// server's own; needs a server started as root. Empty: the server's user.
    pub user: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow: Vec::new(),
            path: DEFAULT_PATH.into(),
            lang: DEFAULT_LANG.into(),
            env: BTreeMap::new(),
            workdir: PathBuf::from("/"),
            timeout: DEFAULT_TIMEOUT,
            max_output: DEFAULT_MAX_OUTPUT,
            max_running: DEFAULT_MAX_RUNNING,
            max_processes: DEFAULT_MAX_PROCESSES,
            max_memory: DEFAULT_MAX_MEMORY,
            user: String::new(),
        }
    }
}

/// One allowlisted program, resolved at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The entry as configured (`cat`, `/usr/local/bin/tool`).
    pub entry: String,
    /// Its file name, which a client may use as the program.
    pub name: String,
    /// The absolute path that is executed.
    pub path: PathBuf,
}

/// The exec service of one server: resolved settings, the running-runs
/// limit and the audit log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Exec {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    allowed: Vec<Allowed>,
    /// One permit per run in progress.
    running: Arc<Semaphore>,
    /// The audit log, appended one line per write under the lock.
    audit: Mutex<std::fs::File>,
    audit_path: PathBuf,
    /// The user id and group id of `settings.user`, resolved at start.
    run_as: Option<(u32, u32)>,
}

/// The user id and primary group id of the user `name`.
fn lookup_user(name: &str) -> Result<(u32, u32), ExecSetupError> {
    let unknown = || ExecSetupError::User(name.to_string());
    let c_name = std::ffi::CString::new(name).map_err(|_| unknown())?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: zeroed is a valid `passwd` (pointers null, numbers 0); it is
    // only read after getpwnam_r filled it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` for its length;
    // the strings it points into are not used afterwards.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(unknown());
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

fn is_executable(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a file".into());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("not executable".into());
    }
    Ok(())
}

/// Resolves one allowlist entry: an absolute path as it is, a bare name
/// through the directories of `search_path`, in order.
pub fn resolve_program(entry: &str, search_path: &str) -> Result<Allowed, ExecSetupError> {
    let fail = |reason: String| ExecSetupError::Allow {
        entry: entry.to_string(),
        reason,
    };
    if entry.is_empty() {
        return Err(fail("empty name".into()));
    }
    let path = if entry.contains('/') {
        let p = PathBuf::from(entry);
        if !p.is_absolute() {
            return Err(fail(
                "a path must be absolute (or give a bare name, looked up in exec.path)".into(),
            ));
        }
        is_executable(&p).map_err(fail)?;
        p
    } else {
        search_path
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| Path::new(d).join(entry))
            .find(|p| is_executable(p).is_ok())
            .ok_or_else(|| fail(format!("not found in exec.path ({search_path})")))?
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| entry.to_string());
    Ok(Allowed {
        entry: entry.to_string(),
        name,
        path,
    })
}

impl Exec {
    /// Resolves the allowlist, checks the settings and opens the audit log
    /// in `data_dir`. Any problem stops the server from starting.
    pub fn new(settings: Settings, data_dir: &Path) -> Result<Exec, ExecSetupError> {
        let allowed = settings
            .allow
            .iter()
            .map(|e| resolve_program(e, &settings.path))
            .collect::<Result<Vec<_>, _>>()?;
        match std::fs::metadata(&settings.workdir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ExecSetupError::Workdir {
                    path: settings.workdir.clone(),
                    reason: "not a directory".into(),
                })
            }
            Err(e) => {
                return Err(ExecSetupError::Workdir {
                    path: settings.workdir.clone(),
                    reason: e.to_string(),
                })
            }
        }
        for (k, v) in &settings.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(ExecSetupError::Env(format!(
                    "{k:?}: names must be non-empty without '=' or NUL, values without NUL"
                )));
            }
        }
        let run_as = match settings.user.as_str() {
            "" => None,
            name => Some(lookup_user(name)?),
        };
        let audit_path = data_dir.join(AUDIT_FILE);
        let audit = crate::store::mode::private_file()
            .append(true)
            .open(&audit_path)
            .map_err(|error| ExecSetupError::Audit {
                path: audit_path.clone(),
                error,
            })?;
        Ok(Exec {
            inner: Arc::new(Inner {
                running: Arc::new(Semaphore::new(settings.max_running.max(1))),
                settings,
                allowed,
                audit: Mutex::new(audit),
                audit_path,
                run_as,
            }),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The resolved allowlist.
    pub fn allowed(&self) -> &[Allowed] {
        &self.inner.allowed
    }

    /// The user id and group id programs run as, when `exec.user` is set.
    pub fn run_as(&self) -> Option<(u32, u32)> {
        self.inner.run_as
    }

    /// Where the audit log is.
    pub fn audit_path(&self) -> &Path {
        &self.inner.audit_path
    }

    /// The allowlisted program a client's PROGRAM names: a path must equal a
    /// resolved path exactly, a bare name must equal an entry's file name.
    pub fn lookup(&self, program: &str) -> Option<&Allowed> {
        if program.contains('/') {
            self.inner
                .allowed
                .iter()
                .find(|a| a.path.as_os_str() == program)
        } else {
            self.inner.allowed.iter().find(|a| a.name == program)
        }
    }

    /// A permit for one run, or `None` when `max_running` are in progress.
    pub(crate) fn try_start(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.running.clone().try_acquire_owned().ok()
    }

    /// Appends one record to the audit log (one `write` of one line, on the
    /// blocking pool) and returns once it is written.
    pub async fn audit(&self, record: &AuditRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = inner
                .audit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            file.write_all(&line)?;
            file.flush()
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct AuditRecord {
    /// When the request arrived (RFC 3339, UTC).
    pub time: String,
    /// The user who asked.
    pub user: String,
    /// The client's address.
    pub peer: String,
    /// The arguments as the client sent them (PROGRAM first).
    pub argv: Vec<String>,
    /// The program executed, when one was.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub program: Option<String>,
    /// The process id (and group id) of the run.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<u32>,
    /// `exit`, `signal`, `timeout`, `too_large`, `disconnected`,
    /// `shutdown`, `failed` (could not start) or `refused`.
    pub result: String,
    /// The exit code, when the program exited.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<i32>,
    /// The signal that ended the program.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub signal: Option<i32>,
    /// Why a request was refused or failed (the error code).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Milliseconds from start to end.
    pub duration_ms: u64,
    /// Bytes of stdout sent to the client.
    pub stdout_bytes: u64,
    /// Bytes of stderr sent to the client.
    pub stderr_bytes: u64,
    /// Bytes of stdin given to the program.
    pub stdin_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_through_the_path_and_paths_must_be_absolute() {
        let a = resolve_program("sh", "/nonexistent:/bin:/usr/bin").unwrap();
        assert!(a.path.is_absolute());
        assert_eq!(a.name, "sh");
        assert!(resolve_program("bin/sh", DEFAULT_PATH).is_err());
        assert!(resolve_program("no-such-program-xyz", DEFAULT_PATH).is_err());
        assert!(resolve_program("/etc/passwd", DEFAULT_PATH).is_err());
        assert!(resolve_program("", DEFAULT_PATH).is_err());
        // Relative directories in the search path are ignored.
        assert!(resolve_program("sh", "bin:.").is_err());
    }

    #[test]
    fn lookup_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let sh = resolve_program("sh", DEFAULT_PATH).unwrap().path;
        let settings = Settings {
            allow: vec!["sh".into()],
            ..Settings::default()
        };
        let exec = Exec::new(settings, dir.path()).unwrap();
        assert!(exec.lookup("sh").is_some());
        assert!(exec.lookup(sh.to_str().unwrap()).is_some());
        assert!(exec.lookup("bash").is_none());
        assert!(exec.lookup("./sh").is_none());
        assert!(exec
            .lookup(&format!("{}/../bin/sh", sh.parent().unwrap().display()))
            .is_none());
        assert!(exec.lookup("SH").is_none());
    }
}

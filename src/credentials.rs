//! The client's saved sessions: one token per server, in
//! `<config dir>/sockit/credentials.json` (mode 0600), plus the last server
//! logged into. The directory is `$SOCKIT_CONFIG_DIR` if set, else the
//! platform's configuration directory (`~/.config` on Linux).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default framed-port address for client commands.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7070";

/// Errors reading or writing the credentials file.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// No configuration directory could be found.
    #[error("no configuration directory: set SOCKIT_CONFIG_DIR or HOME")]
    NoConfigDir,
    /// The file could not be read or written.
    #[error("{}: {}", path.display(), crate::words::io(error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path} is damaged ({message}); delete it and log in again")]
    Damaged { path: PathBuf, message: String },
}

/// One saved login.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Saved {
    /// Account name.
    pub user: String,
    /// Session token (a secret).
    pub token: String,
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Credentials {
    /// The server last logged into: the default for later commands.
    pub last_server: Option<String>,
    /// Sessions by server address.
    pub servers: BTreeMap<String, Saved>,
}

/// The directory holding sockit's client files.
pub fn config_dir() -> Result<PathBuf, CredentialsError> {
    if let Some(dir) = std::env::var_os("SOCKIT_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    dirs::config_dir()
        .map(|d| d.join("sockit"))
        .ok_or(CredentialsError::NoConfigDir)
}

fn path() -> Result<PathBuf, CredentialsError> {
    Ok(config_dir()?.join("credentials.json"))
}

impl Credentials {
    /// Loads the file; a missing file is an empty one.
    pub fn load() -> Result<Credentials, CredentialsError> {
        let path = path()?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CredentialsError::Damaged {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
            Err(error) => Err(CredentialsError::Io { path, error }),
        }
    }

    /// Writes the file atomically, readable by its owner only.
    pub fn save(&self) -> Result<(), CredentialsError> {
        let path = path()?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| CredentialsError::Damaged {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &json, 0o600).map_err(|error| CredentialsError::Io { path, error })
    }

    /// Which server a command talks to: the flag, then `$SOCKIT_SERVER`, then
    /// the last server logged into, then 127.0.0.1:7070.
    pub fn pick_server(&self, flag: Option<&str>) -> String {
        flag.map(String::from)
            .or_else(|| {
                std::env::var("SOCKIT_SERVER")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| self.last_server.clone())
            .unwrap_or_else(|| DEFAULT_SERVER.to_string())
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the
/// new one, never a mix: a temporary file beside it (created with `mode`),
/// fsync, rename, fsync of the folder. Creates the folder if needed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    if !dir.as_os_str().is_empty() {
        std::fs::create_dir_all(&dir)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = (|| {
        let mut file = opts.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &dir
    }) {
        let _ = d.sync_all();
    }
    Ok(())
}

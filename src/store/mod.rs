//! The file store: one private space per user under `<data>/files/<user>/`,
//! shared by every service that touches files (the framed file service, the
//! web app).
//!
//! Every path goes through [`path::RemotePath::parse`] and [`path::resolve`].
//! Uploads are written to a partial file in the user's hidden
//! `.sockit-partial/` folder, verified with BLAKE3, fsynced, then published
//! atomically (a hard link when the target must not exist, a rename when it
//! may be replaced) and the directory fsynced: a reader never sees half a
//! file. An interrupted upload leaves its partial file behind; the next
//! upload of the same source (same path, length and modification time)
//! resumes from it. Partial files untouched for `partial_ttl` are removed;
//! they count against the user's quota, and an upload that fails otherwise
//! (checksum, quota, a disk at its floor) deletes its partial at once.
//! Uploads never take the disk below its free-space floor ([`FreeFloor`]),
//! which keeps room for the databases: logins work on a full disk.
//! A published file carries its hashes ([`digest`]): the BLAKE3 every
//! upload computes, and a SHA-256 when the transport gave one.

pub mod digest;
pub mod mode;
pub mod path;
pub mod read;

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_std::fs::{Dir, DirBuilder, DirBuilderExt as _, OpenOptions, OpenOptionsExt as _};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

pub use path::{resolve, PathError, RemotePath, Resolved};

/// Default time an abandoned partial upload is kept.
pub const DEFAULT_PARTIAL_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most entries one listing returns.
pub const MAX_LIST_ENTRIES: usize = 100_000;
/// Default free-space floor: uploads that would leave less than this share
/// of the data disk free are refused, so the databases always have room.
pub const DEFAULT_MIN_FREE: FreeFloor = FreeFloor::Percent(5);
/// The most a percentage floor holds back, however large the disk.
pub const MAX_PERCENT_FLOOR: u64 = 1 << 30;

/// Free space the data disk keeps for everything but uploads (logins,
/// registrations, deletes, messages: SQLite's writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeFloor {
    /// This percentage of the file system's size.
    Percent(u8),
    /// This many bytes.
    Bytes(u64),
}

impl FreeFloor {
    /// Parses `"5%"` or a byte count (`"268435456"`).
    pub fn parse(text: &str) -> Result<FreeFloor, String> {
        let t = text.trim();
        let bad = || format!("{text:?}: give a percentage (\"5%\") or a number of bytes");
        match t.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p < 100 => Ok(FreeFloor::Percent(p)),
                _ => Err(bad()),
            },
            None => t.parse().map(FreeFloor::Bytes).map_err(|_| bad()),
        }
    }

    /// The floor in bytes on a file system of `total` bytes. A percentage
    /// is capped at [`MAX_PERCENT_FLOOR`]: 5% of a 250 GiB disk would hold
    /// back 12 GiB where the databases need far less (a floor in bytes is
    /// taken as it is).
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            FreeFloor::Percent(p) => (total / 100 * u64::from(p)).min(MAX_PERCENT_FLOOR),
            FreeFloor::Bytes(b) => b,
        }
    }
}

impl std::fmt::Display for FreeFloor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FreeFloor::Percent(p) => write!(f, "{p}%"),
            FreeFloor::Bytes(b) => write!(f, "{b}"),
        }
    }
}

/// Errors of the store; each has a wire code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The path breaks the rules or leads outside the space.
    #[error(transparent)]
    BadPath(#[from] PathError),
    /// Resolution left the space (a symlink pointing outside).
    #[error("bad path {0:?}: it leads outside your space")]
    Escape(String),
    /// Nothing there.
    #[error("{0}: no such file or folder")]
    NotFound(String),
    /// Something is already there.
    #[error("{0} already exists (use --force to replace it)")]
    Exists(String),
    /// A folder where a file was expected.
    #[error("{0} is a folder")]
    IsADirectory(String),
    /// A file where a folder was expected.
    #[error("{0} is not a folder")]
    NotADirectory(String),
    /// Neither a regular file nor a folder (a FIFO, a socket, a device):
    /// never read, since reading one could wait forever.
    #[error("{0} is not a regular file or folder; only those are served")]
    NotAFile(String),
    /// Removing a folder that has content, without recursion.
    #[error("{0} is not empty (use -r to remove it with its content)")]
    NotEmpty(String),
    /// The user's quota would be exceeded.
    #[error("quota exceeded: {used} of {quota} bytes used, {wanted} more wanted")]
    QuotaExceeded { used: u64, quota: u64, wanted: u64 },
    /// The upload would take the data disk below its free-space floor.
    #[error("the server's disk is full: {free} bytes free, {wanted} more wanted, {floor} kept free for accounts and messages; delete files or ask the administrator for room")]
    DiskFull { free: u64, wanted: u64, floor: u64 },
    /// Over the maximum file size.
    #[error("{length} bytes is over this server's file size limit of {max} bytes")]
    TooLarge { length: u64, max: u64 },
    /// The data did not match the sender's hash; nothing was published.
    #[error("checksum mismatch: the data received does not match the sender's BLAKE3 hash; nothing was saved")]
    ChecksumMismatch,
    /// The same upload is already running.
    #[error("an upload of {0} from the same source is already in progress")]
    Busy(String),
    /// Anything else from the file system.
    #[error("storage error: {0}")]
    Io(String),
}

impl StoreError {
    /// The documented wire code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::BadPath(_) | StoreError::Escape(_) => "bad_path",
            StoreError::NotFound(_) => "not_found",
            StoreError::Exists(_) => "exists",
            StoreError::IsADirectory(_) => "is_a_directory",
            StoreError::NotADirectory(_) => "not_a_directory",
            StoreError::NotAFile(_) => "not_a_file",
            StoreError::NotEmpty(_) => "not_empty",
            StoreError::QuotaExceeded { .. } => "quota_exceeded",
            StoreError::TooLarge { .. } => "too_large",
            StoreError::DiskFull { .. } => "disk_full",
            StoreError::ChecksumMismatch => "checksum_mismatch",
            StoreError::Busy(_) => "busy",
            StoreError::Io(_) => "internal",
        }
    }

    /// Maps a file-system error on `path` to a store error.
    pub fn from_io(e: io::Error, path: &RemotePath) -> StoreError {
        let p = path.to_string();
        match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(p),
            io::ErrorKind::AlreadyExists => StoreError::Exists(p),
            io::ErrorKind::PermissionDenied => StoreError::Escape(p),
            io::ErrorKind::IsADirectory => StoreError::IsADirectory(p),
            io::ErrorKind::NotADirectory => StoreError::NotADirectory(p),
            io::ErrorKind::DirectoryNotEmpty => StoreError::NotEmpty(p),
            // ELOOP: a symlink loop, or a symlink where none may be.
            _ if e.raw_os_error() == Some(libc::ELOOP) => StoreError::Escape(p),
            _ => StoreError::Io(format!("{p}: {e}")),
        }
    }
}

/// Store limits.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bytes each user may store; `None` is unlimited.
    pub quota: Option<u64>,
    /// Largest single file; `None` is unlimited.
    pub max_file_size: Option<u64>,
    /// Abandoned partial uploads older than this are removed.
    pub partial_ttl: Duration,
    /// Free space uploads leave on the data disk.
    pub min_free: FreeFloor,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            quota: None,
            max_file_size: None,
            partial_ttl: DEFAULT_PARTIAL_TTL,
            min_free: DEFAULT_MIN_FREE,
        }
    }
}

/// What kind of thing an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Name, or path relative to the listed folder when recursive.
    pub name: String,
    /// File, folder, symlink or other.
    pub kind: Kind,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// Bytes used and reserved by in-flight uploads, per user.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    used: u64,
    reserved: u64,
}

#[derive(Debug)]
struct Inner {
    /// `<data>/files`, opened once; user spaces are opened beneath it.
    root: Dir,
    settings: Settings,
    /// Usage per user key, computed on first use and kept up to date.
    usage: Mutex<HashMap<String, Usage>>,
    /// Uploads in progress, by (user key, partial name).
    active: Mutex<HashSet<(String, String)>>,
    /// The hash state of partial uploads that stopped cleanly between
    /// chunks, by (user key, partial name), with the length it covers: the
    /// next chunk goes on from it instead of re-reading the whole prefix
    /// (chunked browser uploads would otherwise read the file quadratically).
    suspended: Mutex<HashMap<(String, String), (u64, blake3::Hasher)>>,
    /// Bytes in-flight uploads may still write, over all users: counted as
    /// taken when the free-space floor is checked, so uploads running at
    /// once cannot pass it together.
    writing: Mutex<u64>,
}

/// The file store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn mtime_ns(meta: &cap_std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .map(|t| t.into_std())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}

fn kind_of(ft: cap_std::fs::FileType) -> Kind {
    if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

/// Creates folders with [`mode::DIR_MODE`] (and their parents when
/// `recursive`).
fn private_dirs(recursive: bool) -> DirBuilder {
    let mut b = DirBuilder::new();
    b.recursive(recursive).mode(mode::DIR_MODE);
    b
}

/// fsyncs a directory so a rename or link in it survives a crash. (The
/// handle cap-std keeps may be `O_PATH`, which cannot be synced, so the
/// directory is opened again, read-only, through it.)
fn sync_dir(dir: &Dir) -> io::Result<()> {
    dir.open(".")?.into_std().sync_all()
}

impl Store {
    /// Opens (creating if needed) the store under `<data_dir>/files`.
    pub fn open(data_dir: &std::path::Path, settings: Settings) -> io::Result<Store> {
        let files = data_dir.join("files");
        mode::create_private_dir_all(&files)?;
        let root = Dir::open_ambient_dir(&files, cap_std::ambient_authority())?;
        Ok(Store {
            inner: Arc::new(Inner {
                root,
                settings,
                usage: Mutex::default(),
                active: Mutex::default(),
                suspended: Mutex::default(),
                writing: Mutex::default(),
            }),
        })
    }

    /// The limits in force.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Opens a user's space, creating it on first use.
    pub fn space(&self, user_key: &str) -> Result<Dir, StoreError> {
        if !crate::accounts::valid_name(user_key) {
            return Err(StoreError::Io(format!("invalid user key {user_key:?}")));
        }
        let io = |e: io::Error| StoreError::Io(format!("user space: {e}"));
        match self
            .inner
            .root
            .create_dir_with(user_key, &private_dirs(false))
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        self.inner.root.open_dir(user_key).map_err(io)
    }

    /// The single resolution function applied to a user's space.
    pub fn resolve(&self, user_key: &str, path: &RemotePath) -> Result<Resolved, StoreError> {
        let space = self.space(user_key)?;
        resolve(&space, path).map_err(|e| StoreError::from_io(e, path))
    }

    /// Lists a folder (or describes a file), optionally recursively.
    /// The store's own partial-upload folder is never shown.
    pub fn list(
        &self,
        user_key: &str,
        path: &RemotePath,
        recursive: bool,
    ) -> Result<Vec<Entry>, StoreError> {
        let r = self.resolve(user_key, path)?;
        let err = |e| StoreError::from_io(e, path);
        let meta = r.dir.symlink_metadata(r.name_or_dot()).map_err(err)?;
        if !meta.is_dir() {
            return Ok(vec![Entry {
                name: path.name().unwrap_or(".").to_string(),
                kind: kind_of(meta.file_type()),
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
            }]);
        }
        let dir = r.dir.open_dir(r.name_or_dot()).map_err(err)?;
        let mut out = Vec::new();
        walk(&dir, "", path.is_root(), recursive, &mut out).map_err(err)?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Describes one path (the root included) without following a final symlink.
    pub fn stat(&self, user_key: &str, path: &RemotePath) -> Result<Entry, StoreError> {
        let r = self.resolve(user_key, path)?;
        let meta = r
            .dir
            .symlink_metadata(r.name_or_dot())
            .map_err(|e| StoreError::from_io(e, path))?;
        let kind = kind_of(meta.file_type());
        Ok(Entry {
            name: path.name().unwrap_or(".").to_string(),
            kind,
            size: if kind == Kind::File { meta.len() } else { 0 },
            mtime_ns: mtime_ns(&meta),
        })
    }

    /// Creates a folder (and its parents with `parents`).
    pub fn mkdir(
        &self,
        user_key: &str,
        path: &RemotePath,
        parents: bool,
    ) -> Result<(), StoreError> {
        if path.is_root() {
            return Err(StoreError::Exists(".".into()));
        }
        let space = self.space(user_key)?;
        let err = |e| StoreError::from_io(e, path);
        if parents {
            space
                .create_dir_with(path.to_path_buf(), &private_dirs(true))
                .map_err(err)?;
        } else {
            let r = resolve(&space, path).map_err(err)?;
            r.dir
                .create_dir_with(r.name_or_dot(), &private_dirs(false))
                .map_err(err)?;
        }
        let r = resolve(&space, path).map_err(err)?;
        sync_dir(&r.dir).map_err(err)
    }

    /// Removes a file, or a folder (with its content when `recursive`).
    pub fn remove(
        &self,
        user_key: &str,
        path: &RemotePath,
        recursive: bool,
    ) -> Result<(), StoreError> {
        if path.is_root() {
            return Err(StoreError::BadPath(PathError {
                path: ".".into(),
                reason: "the root of your space cannot be removed",
            }));
        }
        let r = self.resolve(user_key, path)?;
        let err = |e| StoreError::from_io(e, path);
        let name = r.name_or_dot();
        let meta = r.dir.symlink_metadata(name).map_err(err)?;
        let freed = if meta.is_dir() {
            let freed = dir_size(&r.dir.open_dir(name).map_err(err)?).unwrap_or(0);
            if recursive {
                r.dir.remove_dir_all(name).map_err(err)?;
            } else {
                r.dir.remove_dir(name).map_err(err)?;
            }
            freed
        } else {
            r.dir.remove_file(name).map_err(err)?;
            meta.len()
        };
        sync_dir(&r.dir).map_err(err)?;
        self.adjust_usage(user_key, 0, freed);
        Ok(())
    }

    /// Moves or renames within the space. An existing target is refused
    /// unless `force`, which replaces a file (never a folder).
    pub fn rename(
        &self,
        user_key: &str,
        from: &RemotePath,
        to: &RemotePath,
        force: bool,
    ) -> Result<(), StoreError> {
        if from.is_root() || to.is_root() {
            return Err(StoreError::BadPath(PathError {
                path: ".".into(),
                reason: "the root of your space cannot be moved or replaced",
            }));
        }
        let space = self.space(user_key)?;
        let src = resolve(&space, from).map_err(|e| StoreError::from_io(e, from))?;
        let dst = resolve(&space, to).map_err(|e| StoreError::from_io(e, to))?;
        src.dir
            .symlink_metadata(src.name_or_dot())
            .map_err(|e| StoreError::from_io(e, from))?;
        let mut replaced = 0;
        match dst.dir.symlink_metadata(dst.name_or_dot()) {
            Ok(m) if m.is_dir() => return Err(StoreError::Exists(to.to_string())),
            Ok(_) if !force => return Err(StoreError::Exists(to.to_string())),
            Ok(m) => replaced = m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::from_io(e, to)),
        }
        src.dir
            .rename(src.name_or_dot(), &dst.dir, dst.name_or_dot())
            .map_err(|e| StoreError::from_io(e, to))?;
        sync_dir(&dst.dir).map_err(|e| StoreError::from_io(e, to))?;
        sync_dir(&src.dir).map_err(|e| StoreError::from_io(e, from))?;
        self.adjust_usage(user_key, 0, replaced);
        Ok(())
    }

    /// Opens a regular file for download: the file, its length and mtime.
    /// Anything else (a FIFO, a device) is refused at once with `not_a_file`.
    pub fn open_read(
        &self,
        user_key: &str,
        path: &RemotePath,
    ) -> Result<(std::fs::File, u64, i64), StoreError> {
        let r = self.resolve(user_key, path)?;
        let err = |e| StoreError::from_io(e, path);
        let file = path::open_for_reading(&r.dir, r.name_or_dot()).map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        if meta.is_dir() {
            return Err(StoreError::IsADirectory(path.to_string()));
        }
        if !meta.is_file() {
            return Err(StoreError::NotAFile(path.to_string()));
        }
        Ok((file.into_std(), meta.len(), mtime_ns(&meta)))
    }

    /// Bytes used by a user, computed on first use.
    pub fn used(&self, user_key: &str) -> Result<u64, StoreError> {
        Ok(self.usage(user_key)?.used)
    }

    fn usage(&self, user_key: &str) -> Result<Usage, StoreError> {
        if let Some(u) = lock(&self.inner.usage).get(user_key) {
            return Ok(*u);
        }
        let space = self.space(user_key)?;
        let used = dir_size(&space).map_err(|e| StoreError::Io(e.to_string()))?;
        let mut map = lock(&self.inner.usage);
        Ok(*map
            .entry(user_key.to_string())
            .or_insert(Usage { used, reserved: 0 }))
    }

    fn adjust_usage(&self, user_key: &str, added: u64, freed: u64) {
        if let Some(u) = lock(&self.inner.usage).get_mut(user_key) {
            u.used = (u.used + added).saturating_sub(freed);
        }
    }

    /// Starts (or resumes) an upload of `length` bytes to `path`.
    ///
    /// `source_mtime_ns` identifies the sender's version of the file: a
    /// partial upload is resumed only for the same path, length and mtime
    /// (and the final hash check catches anything else). With `resume` off,
    /// any partial is discarded.
    pub fn begin_upload(
        &self,
        user_key: &str,
        path: &RemotePath,
        length: u64,
        source: &Source,
        force: bool,
        resume: bool,
    ) -> Result<Upload, StoreError> {
        let settings = &self.inner.settings;
        if path.is_root() {
            return Err(StoreError::IsADirectory(".".into()));
        }
        if let Some(max) = settings.max_file_size {
            if length > max {
                return Err(StoreError::TooLarge { length, max });
            }
        }
        let space = self.space(user_key)?;
        if path.components().len() > 1 {
            // Parents are created as needed. "Already exists" (a file, or a
            // symlink cap-std will not follow) is left for `resolve` to judge.
            match space.create_dir_with(path.parent().to_path_buf(), &private_dirs(true)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::from_io(e, &path.parent())),
            }
        }
        let target = resolve(&space, path).map_err(|e| StoreError::from_io(e, path))?;
        let replaced = match target.dir.symlink_metadata(target.name_or_dot()) {
            // A symlink at the target is replaced, never written through; one
            // that leads outside the space is refused outright.
            Ok(m) if m.file_type().is_symlink() => {
                match target.dir.metadata(target.name_or_dot()) {
                    Err(e)
                        if e.kind() == io::ErrorKind::PermissionDenied
                            || e.raw_os_error() == Some(libc::ELOOP) =>
                    {
                        return Err(StoreError::Escape(path.to_string()))
                    }
                    _ if !force => return Err(StoreError::Exists(path.to_string())),
                    _ => 0,
                }
            }
            Ok(m) if m.is_dir() => return Err(StoreError::IsADirectory(path.to_string())),
            Ok(_) if !force => return Err(StoreError::Exists(path.to_string())),
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StoreError::from_io(e, path)),
        };
        let key = partial_key(path, length, source);
        let active_key = (user_key.to_string(), key.clone());
        if !lock(&self.inner.active).insert(active_key.clone()) {
            return Err(StoreError::Busy(path.to_string()));
        }
        let mut guard = UploadGuard {
            store: self.clone(),
            active: active_key,
            user_key: user_key.to_string(),
            reserved: 0,
            writing: 0,
            partial: None,
        };
        // Quota: reserve the whole length now, settle at publish. Partial
        // uploads kept for a resume count too, so they cannot fill the disk.
        let usage = self.usage(user_key)?;
        if let Some(quota) = settings.quota {
            let kept = self.kept_partials(user_key, &space, &key);
            let committed = usage.used.saturating_sub(replaced) + usage.reserved + kept;
            // A length near u64::MAX from a peer must not wrap past it.
            let over = match committed.checked_add(length) {
                Some(total) => total > quota,
                None => true,
            };
            if over {
                remove_partial(&space, &key);
                return Err(StoreError::QuotaExceeded {
                    used: usage.used + kept,
                    quota,
                    wanted: length,
                });
            }
        }
        if let Some(u) = lock(&self.inner.usage).get_mut(user_key) {
            u.reserved = u.reserved.saturating_add(length);
        }
        guard.reserved = length;

        let io = |e: io::Error| StoreError::Io(format!("partial upload: {e}"));
        match space.create_dir_with(path::RESERVED, &private_dirs(false)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let partial_dir = space.open_dir(path::RESERVED).map_err(io)?;
        let mut opts = OpenOptions::new();
        opts.read(true)
            .write(true)
            .create(true)
            .mode(mode::FILE_MODE);
        let file = partial_dir.open_with(&key, &opts).map_err(io)?;
        let mut offset = file.metadata().map_err(io)?.len();
        if !resume || offset > length {
            file.set_len(0).map_err(io)?;
            offset = 0;
        }
        // The hash covers the whole file: take the state a suspended upload
        // left for exactly this length, else re-read what is already there.
        let mut std_file = file.into_std();
        let saved = lock(&self.inner.suspended).remove(&guard.active);
        let hasher = match saved {
            Some((len, h)) if len == offset && offset > 0 => h,
            _ => match crate::files::pipe::hash_prefix(&mut std_file, offset) {
                Ok(h) => h,
                Err(_) => {
                    // Unreadable partial: start over.
                    std_file.set_len(0).map_err(io)?;
                    offset = 0;
                    blake3::Hasher::new()
                }
            },
        };
        if offset > 0 {
            debug!(user = user_key, %path, offset, "resuming upload");
        }
        io::Seek::seek(&mut std_file, io::SeekFrom::Start(offset)).map_err(io)?;
        guard.partial = Some((partial_dir.try_clone().map_err(io)?, key.clone()));
        // The floor, before any byte is written: what this upload still has
        // to write, and what the others still may, must leave it free.
        let wanted = length - offset;
        let (free, total) = free_space(&partial_dir).map_err(io)?;
        let floor = settings.min_free.bytes(total);
        let mut writing = lock(&self.inner.writing);
        if free.saturating_sub(*writing) < floor.saturating_add(wanted) {
            drop(writing);
            drop(std_file);
            let free = free.saturating_sub(*lock(&self.inner.writing));
            warn!(user = user_key, %path, free, wanted, floor, "upload refused: the disk is at its free-space floor");
            let _ = partial_dir.remove_file(&key);
            guard.partial = None;
            return Err(StoreError::DiskFull {
                free,
                wanted,
                floor,
            });
        }
        *writing += wanted;
        drop(writing);
        guard.writing = wanted;
        Ok(Upload {
            path: path.clone(),
            length,
            offset,
            replaced,
            force,
            target,
            partial_dir,
            partial_name: key,
            mtime_ns: source.mtime_ns,
            file: Some((std_file, hasher)),
            sha256: None,
            guard,
        })
    }

    /// Bytes already held for an upload of `length` bytes of `source` to
    /// `path` (what [`begin_upload`](Self::begin_upload) would resume from);
    /// 0 when none.
    pub fn partial_offset(
        &self,
        user_key: &str,
        path: &RemotePath,
        length: u64,
        source: &Source,
    ) -> Result<u64, StoreError> {
        let space = self.space(user_key)?;
        let key = partial_key(path, length, source);
        let held = space
            .open_dir(path::RESERVED)
            .and_then(|d| d.metadata(&key))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(if held > length { 0 } else { held })
    }

    /// Removes partial uploads older than the configured time to live.
    pub fn sweep_partials(&self) -> io::Result<usize> {
        let ttl = self.inner.settings.partial_ttl;
        let now = SystemTime::now();
        let mut removed = 0;
        for user in self.inner.root.entries()? {
            let user = user?;
            let Ok(space) = user.open_dir() else { continue };
            let Ok(partials) = space.open_dir(path::RESERVED) else {
                continue;
            };
            for entry in partials.entries()? {
                let entry = entry?;
                let name = entry.file_name();
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| now.duration_since(t.into_std()).unwrap_or_default() > ttl)
                    .unwrap_or(false);
                let busy = lock(&self.inner.active)
                    .iter()
                    .any(|(_, k)| *k == name.to_string_lossy());
                if stale && !busy && partials.remove_file(&name).is_ok() {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            info!(removed, "removed abandoned partial uploads");
        }
        Ok(removed)
    }
}

/// Removes the partial file `key` of a space, if there is one.
fn remove_partial(space: &Dir, key: &str) {
    if let Ok(dir) = space.open_dir(path::RESERVED) {
        let _ = dir.remove_file(key);
    }
}

/// Bytes available to this process and the size of the file system that
/// holds `dir`.
fn free_space(dir: &Dir) -> io::Result<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let file = dir.open(".")?.into_std();
    // SAFETY: zeroed is a valid statvfs; fstatvfs fills it from a descriptor we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let block = st.f_frsize as u64;
    Ok((
        (st.f_bavail as u64).saturating_mul(block),
        (st.f_blocks as u64).saturating_mul(block),
    ))
}

impl Store {
    /// Bytes of a user's partial uploads kept for a resume: every partial
    /// file but `except` and those of uploads in progress (their whole
    /// length is reserved already).
    fn kept_partials(&self, user_key: &str, space: &Dir, except: &str) -> u64 {
        let Ok(dir) = space.open_dir(path::RESERVED) else {
            return 0;
        };
        let Ok(entries) = dir.entries() else { return 0 };
        let active = lock(&self.inner.active);
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name != except && !active.contains(&(user_key.to_string(), name))
            })
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }
}

/// Most suspended uploads whose hash state is kept.
const MAX_SUSPENDED: usize = 1024;

/// What identifies the sender's version of a file being uploaded: a partial
/// upload is resumed only for the same target, length and source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// The source file's modification time (ns since the epoch); also given
    /// to the published file. 0 when unknown.
    pub mtime_ns: i64,
    /// An opaque identity the client chose for its local file (sockit sends
    /// a hash of device, inode and path), so two different local files of
    /// the same length and mtime never share a partial upload.
    pub id: String,
}

/// Name of the partial file for one source version of one target.
fn partial_key(path: &RemotePath, length: u64, source: &Source) -> String {
    let mut h = blake3::Hasher::new();
    h.update(path.to_string().as_bytes());
    h.update(&[0]);
    h.update(&length.to_le_bytes());
    h.update(&source.mtime_ns.to_le_bytes());
    h.update(source.id.as_bytes());
    h.finalize().to_hex()[..32].to_string()
}

fn walk(
    dir: &Dir,
    prefix: &str,
    at_root: bool,
    recursive: bool,
    out: &mut Vec<Entry>,
) -> io::Result<()> {
    for entry in dir.entries()? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if at_root && prefix.is_empty() && name == path::RESERVED {
            continue;
        }
        let meta = entry.metadata()?;
        let full = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let kind = kind_of(meta.file_type());
        out.push(Entry {
            name: full.clone(),
            kind,
            size: if kind == Kind::File { meta.len() } else { 0 },
            mtime_ns: mtime_ns(&meta),
        });
        if out.len() > MAX_LIST_ENTRIES {
            return Err(io::Error::other(format!(
                "more than {MAX_LIST_ENTRIES} entries; list a smaller folder"
            )));
        }
        if recursive && kind == Kind::Dir {
            walk(&entry.open_dir()?, &full, at_root, true, out)?;
        }
    }
    Ok(())
}

/// Total size of the regular files beneath `dir`, partial uploads excluded.
fn dir_size(dir: &Dir) -> io::Result<u64> {
    let mut total = 0;
    for entry in dir.entries()? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            if entry.file_name() != path::RESERVED {
                total += dir_size(&entry.open_dir()?)?;
            }
        } else if ft.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Releases an upload's lock and quota reservation however it ends.
#[derive(Debug)]
struct UploadGuard {
    store: Store,
    active: (String, String),
    user_key: String,
    reserved: u64,
    /// Bytes counted in the store's `writing` for this upload.
    writing: u64,
    /// The partial file while it may still be abandoned: an upload dropped
    /// without finishing (a cut, a disk error) keeps it for a resume only
    /// while the disk is above its free-space floor.
    partial: Option<(Dir, String)>,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if let Some((dir, name)) = self.partial.take() {
            let floor = self.store.inner.settings.min_free;
            let short = free_space(&dir).is_ok_and(|(free, total)| free < floor.bytes(total));
            if short {
                // A write failed for want of room, or the disk filled since:
                // the partial goes now, not in `partial_ttl`.
                if dir.remove_file(&name).is_ok() {
                    warn!(user = %self.user_key, "the disk is at its free-space floor: a failed upload's partial file was removed");
                }
            }
        }
        {
            let mut writing = lock(&self.store.inner.writing);
            *writing = writing.saturating_sub(self.writing);
        }
        lock(&self.store.inner.active).remove(&self.active);
        if let Some(u) = lock(&self.store.inner.usage).get_mut(&self.user_key) {
            u.reserved = u.reserved.saturating_sub(self.reserved);
        }
    }
}

/// An upload in progress: bytes go to a partial file and into the hash.
#[derive(Debug)]
pub struct Upload {
    path: RemotePath,
    length: u64,
    offset: u64,
    replaced: u64,
    force: bool,
    target: Resolved,
    partial_dir: Dir,
    partial_name: String,
    /// Given to the published file (0: leave the time of writing).
    mtime_ns: i64,
    /// The partial file, positioned at `offset`, and the hash of its
    /// first `offset` bytes; taken by the writer.
    file: Option<(std::fs::File, blake3::Hasher)>,
    /// The whole file's SHA-256, when the transport computed one: recorded
    /// with the file at publish ([`digest`]).
    sha256: Option<[u8; 32]>,
    guard: UploadGuard,
}

/// What a published upload became.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// Where it is.
    pub path: String,
    /// Its length.
    pub length: u64,
    /// Its BLAKE3 hash, hex.
    pub blake3: String,
}

impl Upload {
    /// Bytes already stored from an earlier attempt: send from here.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Total length of the file.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.length - self.offset
    }

    /// Takes the partial file (positioned at [`offset`](Self::offset)) and
    /// the hash of what it already holds; every byte written to the file must
    /// also go into the hasher.
    pub fn take_writer(&mut self) -> Option<(std::fs::File, blake3::Hasher)> {
        self.file.take()
    }

    /// The SHA-256 of the whole file, computed by the caller from what it
    /// wrote: recorded with the file when it is published, beside its
    /// BLAKE3, so downloads can name both.
    pub fn set_sha256(&mut self, digest: [u8; 32]) {
        self.sha256 = Some(digest);
    }

    /// Makes what was written so far durable, so the offset a client is
    /// told to resume from survives a crash.
    fn sync_partial(file: &std::fs::File) -> Result<(), StoreError> {
        file.sync_data()
            .map_err(|e| StoreError::Io(format!("syncing a partial upload: {e}")))
    }

    /// Stops after a chunk, keeping what was written (made durable) and the
    /// hash state, so the next chunk of the same upload goes on from here
    /// without re-reading the part already stored.
    pub fn suspend(
        mut self,
        file: std::fs::File,
        hasher: blake3::Hasher,
        written: u64,
    ) -> Result<u64, StoreError> {
        Upload::sync_partial(&file)?;
        // Kept for the next chunk, whatever the disk says.
        self.guard.partial = None;
        let held = self.offset + written;
        let store = &self.guard.store;
        let mut saved = lock(&store.inner.suspended);
        if saved.len() >= MAX_SUSPENDED {
            // Bounded: forget an arbitrary one (it will re-read its prefix).
            if let Some(k) = saved.keys().next().cloned() {
                saved.remove(&k);
            }
        }
        saved.insert(self.guard.active.clone(), (held, hasher));
        Ok(held)
    }

    /// Abandons the upload and deletes what it stored (a failed check).
    pub fn discard(self) {
        let _ = self.partial_dir.remove_file(&self.partial_name);
    }

    /// Verifies the hash (when one is given), makes the data durable and
    /// publishes the file.
    /// On a mismatch the partial file is deleted and nothing is published.
    /// `file` and `hasher` are what [`take_writer`](Self::take_writer) gave,
    /// after `written` more bytes went through both.
    pub fn finish(
        self,
        file: std::fs::File,
        hasher: blake3::Hasher,
        written: u64,
        expected_hex: Option<&str>,
    ) -> Result<Published, StoreError> {
        let staged = self.stage(file, hasher, written, expected_hex)?;
        let io = |e: io::Error| StoreError::Io(format!("publishing: {e}"));
        staged.file.sync_all().map_err(io)?;
        let staged = staged.publish()?;
        sync_dir(&staged.upload.target.dir).map_err(io)?;
        sync_dir(&staged.upload.partial_dir).map_err(io)?;
        Ok(staged.done())
    }

    /// Checks the length and hash and sets the modification time; the data
    /// is not yet durable nor published. On a mismatch the partial file is
    /// deleted.
    pub fn stage(
        self,
        file: std::fs::File,
        hasher: blake3::Hasher,
        written: u64,
        expected_hex: Option<&str>,
    ) -> Result<Staged, StoreError> {
        let io = |e: io::Error| StoreError::Io(format!("publishing: {e}"));
        if self.offset + written != self.length {
            return Err(StoreError::Io(format!(
                "upload ended after {} of {} bytes",
                self.offset + written,
                self.length
            )));
        }
        let hash = hasher.finalize();
        let actual = hash.to_hex().to_string();
        if expected_hex.is_some_and(|e| !actual.eq_ignore_ascii_case(e.trim())) {
            drop(file);
            let _ = self.partial_dir.remove_file(&self.partial_name);
            warn!(path = %self.path, "checksum mismatch; partial upload discarded");
            return Err(StoreError::ChecksumMismatch);
        }
        if self.mtime_ns > 0 {
            // Keep the source's modification time, as scp -p and rsync -t do.
            let when = UNIX_EPOCH + Duration::from_nanos(self.mtime_ns as u64);
            file.set_modified(when).map_err(io)?;
        }
        // After the last write and the time: the record names both. Without
        // it (a file system with no user attributes) the file is served
        // without digests, so a failure here fails nothing.
        let digests = digest::Digests {
            blake3: hash,
            sha256: self.sha256,
        };
        if let Err(e) = digest::record(&file, &digests) {
            debug!(path = %self.path, "the file's digests are not recorded: {e}");
        }
        Ok(Staged {
            upload: self,
            file,
            blake3: actual,
        })
    }
}

/// A verified upload whose data is not yet durable nor published.
#[derive(Debug)]
pub struct Staged {
    upload: Upload,
    file: std::fs::File,
    blake3: String,
}

impl Staged {
    /// Links or renames the partial file into place (not yet synced).
    fn publish(self) -> Result<Staged, StoreError> {
        let up = &self.upload;
        let name = up.target.name_or_dot().to_path_buf();
        if up.force {
            up.partial_dir
                .rename(&up.partial_name, &up.target.dir, &name)
                .map_err(|e| StoreError::from_io(e, &up.path))?;
        } else {
            // A hard link fails if the name exists: publish-if-absent,
            // atomically, even against a concurrent upload.
            up.partial_dir
                .hard_link(&up.partial_name, &up.target.dir, &name)
                .map_err(|e| StoreError::from_io(e, &up.path))?;
            up.partial_dir
                .remove_file(&up.partial_name)
                .map_err(|e| StoreError::Io(format!("publishing: {e}")))?;
        }
        Ok(self)
    }

    fn done(self) -> Published {
        let up = &self.upload;
        up.guard
            .store
            .adjust_usage(&up.guard.user_key, up.length, up.replaced);
        Published {
            path: up.path.to_string(),
            length: up.length,
            blake3: self.blake3,
        }
    }
}

/// Makes a batch of staged uploads durable and published with two file
/// system syncs in all instead of three per file (group commit): one
/// `syncfs` makes every file's data durable, then each is published, then a
/// second `syncfs` makes the new names durable. Nothing is acknowledged
/// before both. Results come back in order.
pub fn commit_batch(batch: Vec<Staged>) -> Vec<Result<Published, StoreError>> {
    let Some(first) = batch.first() else {
        return Vec::new();
    };
    if let Err(e) = sync_filesystem(&first.file) {
        let message = format!("syncing: {e}");
        return batch
            .iter()
            .map(|_| Err(StoreError::Io(message.clone())))
            .collect();
    }
    let published: Vec<_> = batch.into_iter().map(Staged::publish).collect();
    let sync = published
        .iter()
        .find_map(|r| r.as_ref().ok())
        .map(|s| sync_filesystem(&s.file));
    match sync {
        Some(Err(e)) => {
            let message = format!("syncing: {e}");
            published
                .into_iter()
                .map(|r| r.and(Err(StoreError::Io(message.clone()))))
                .collect()
        }
        _ => published.into_iter().map(|r| r.map(Staged::done)).collect(),
    }
}

/// Flushes the whole file system holding `file` (Linux `syncfs`); elsewhere,
/// the file alone.
fn sync_filesystem(file: &std::fs::File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a system call on a descriptor we own; no memory is shared.
        if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn src(mtime_ns: i64) -> Source {
        Source {
            mtime_ns,
            id: "test".into(),
        }
    }

    fn store(settings: Settings) -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), settings).unwrap();
        (d, s)
    }

    fn put(s: &Store, path: &str, data: &[u8], force: bool) -> Result<Published, StoreError> {
        let p = RemotePath::parse(path).unwrap();
        let mut up = s.begin_upload("u", &p, data.len() as u64, &src(1), force, true)?;
        let (mut file, mut hasher) = up.take_writer().unwrap();
        file.write_all(data).unwrap();
        hasher.update(data);
        let hash = blake3::hash(data).to_hex().to_string();
        up.finish(file, hasher, data.len() as u64, Some(&hash))
    }

    #[test]
    fn upload_list_rename_remove() {
        let (_d, s) = store(Settings::default());
        put(&s, "docs/报告 2026.pdf", b"hello", false).unwrap();
        assert!(matches!(
            put(&s, "docs/报告 2026.pdf", b"x", false),
            Err(StoreError::Exists(_))
        ));
        put(&s, "docs/报告 2026.pdf", b"replaced", true).unwrap();
        let l = s.list("u", &RemotePath::root(), true).unwrap();
        let names: Vec<_> = l.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["docs", "docs/报告 2026.pdf"]);
        assert_eq!(l[1].size, 8);
        assert_eq!(s.used("u").unwrap(), 8);
        let from = RemotePath::parse("docs/报告 2026.pdf").unwrap();
        let to = RemotePath::parse("r.pdf").unwrap();
        s.rename("u", &from, &to, false).unwrap();
        assert!(matches!(
            s.remove("u", &RemotePath::parse("docs").unwrap(), false),
            Ok(())
        ));
        s.remove("u", &to, false).unwrap();
        assert_eq!(s.used("u").unwrap(), 0);
        assert!(s.list("u", &RemotePath::root(), false).unwrap().is_empty());
    }

    #[test]
    fn published_files_carry_their_digests() {
        use sha2::Digest as _;
        let (_d, s) = store(Settings::default());
        let recorded = |path: &str| {
            let (f, _, _) = s.open_read("u", &RemotePath::parse(path).unwrap()).unwrap();
            digest::recorded(&f)
        };
        put(&s, "a", b"hello", false).unwrap();
        let want = digest::Digests {
            blake3: blake3::hash(b"hello"),
            sha256: None,
        };
        assert_eq!(recorded("a"), Some(want));

        // Replaced, with the SHA-256 a transport computed; then moved.
        let p = RemotePath::parse("a").unwrap();
        let mut up = s.begin_upload("u", &p, 3, &src(2), true, false).unwrap();
        let (mut file, mut hasher) = up.take_writer().unwrap();
        file.write_all(b"abc").unwrap();
        hasher.update(b"abc");
        let sha: [u8; 32] = sha2::Sha256::digest(b"abc").into();
        up.set_sha256(sha);
        up.finish(file, hasher, 3, None).unwrap();
        let to = RemotePath::parse("moved/b").unwrap();
        s.mkdir("u", &to.parent(), true).unwrap();
        s.rename("u", &p, &to, false).unwrap();
        let want = digest::Digests {
            blake3: blake3::hash(b"abc"),
            sha256: Some(sha),
        };
        assert_eq!(recorded("moved/b"), Some(want));

        // Published in a batch (the framed port's inline puts).
        let p = RemotePath::parse("c").unwrap();
        let mut up = s.begin_upload("u", &p, 2, &src(3), false, false).unwrap();
        let (mut file, mut hasher) = up.take_writer().unwrap();
        file.write_all(b"xy").unwrap();
        hasher.update(b"xy");
        let staged = up.stage(file, hasher, 2, None).unwrap();
        assert!(commit_batch(vec![staged]).pop().unwrap().is_ok());
        assert_eq!(recorded("c").map(|d| d.blake3), Some(blake3::hash(b"xy")));
    }

    #[test]
    fn checksum_mismatch_publishes_nothing() {
        let (_d, s) = store(Settings::default());
        let p = RemotePath::parse("f").unwrap();
        let mut up = s.begin_upload("u", &p, 3, &src(1), false, true).unwrap();
        let (mut file, mut hasher) = up.take_writer().unwrap();
        file.write_all(b"abc").unwrap();
        hasher.update(b"abc");
        let wrong = blake3::hash(b"abd").to_hex().to_string();
        assert!(matches!(
            up.finish(file, hasher, 3, Some(&wrong)),
            Err(StoreError::ChecksumMismatch)
        ));
        assert!(s.list("u", &RemotePath::root(), false).unwrap().is_empty());
    }

    #[test]
    fn quota_and_size_limits() {
        let (_d, s) = store(Settings {
            quota: Some(10),
            max_file_size: Some(8),
            ..Settings::default()
        });
        put(&s, "a", b"12345678", false).unwrap();
        assert!(matches!(
            put(&s, "b", b"123", false),
            Err(StoreError::QuotaExceeded { .. })
        ));
        assert!(matches!(
            put(&s, "c", b"123456789", false),
            Err(StoreError::TooLarge { .. })
        ));
        // Replacing a file counts only the difference.
        put(&s, "a", b"1234567", true).unwrap();
        // A length near u64::MAX (from a peer) is over the quota, not a
        // wrap past it.
        let (_d, s) = store(Settings {
            quota: Some(10),
            ..Settings::default()
        });
        put(&s, "a", b"12345678", false).unwrap();
        let p = RemotePath::parse("huge").unwrap();
        assert!(matches!(
            s.begin_upload("u", &p, u64::MAX - 3, &src(1), false, false),
            Err(StoreError::QuotaExceeded { .. })
        ));
    }

    #[test]
    fn partials_kept_for_a_resume_count_against_the_quota_of_10_bytes() {
        let (_d, s) = store(Settings {
            quota: Some(10),
            ..Settings::default()
        });
        {
            let p = RemotePath::parse("cut").unwrap();
            let mut up = s.begin_upload("u", &p, 8, &src(1), false, true).unwrap();
            let (mut file, _) = up.take_writer().unwrap();
            file.write_all(b"123456").unwrap();
            // Dropped: the connection was cut; 6 bytes are kept.
        }
        let r = put(&s, "other", b"12345", false);
        assert!(
            matches!(
                r,
                Err(StoreError::QuotaExceeded {
                    used: 6,
                    quota: 10,
                    wanted: 5
                })
            ),
            "6 kept + 5 wanted over a quota of 10: {r:?}"
        );
        // The cut upload itself still resumes within the quota.
        let p = RemotePath::parse("cut").unwrap();
        let up = s.begin_upload("u", &p, 8, &src(1), false, true).unwrap();
        assert_eq!(up.offset(), 6);
    }

    #[test]
    fn uploads_below_the_free_space_floor_are_refused_before_writing() {
        let (d, s) = store(Settings {
            min_free: FreeFloor::Bytes(u64::MAX / 2),
            ..Settings::default()
        });
        let r = put(&s, "f", b"12345", false);
        assert!(
            matches!(r, Err(StoreError::DiskFull { wanted: 5, .. })),
            "{r:?}"
        );
        assert_eq!(r.unwrap_err().code(), "disk_full");
        let partials = std::fs::read_dir(d.path().join("files/u").join(path::RESERVED))
            .unwrap()
            .count();
        assert_eq!(partials, 0, "a refused upload left its partial file");
        assert_eq!(*lock(&s.inner.writing), 0);
    }

    #[test]
    fn free_floors_parse_as_percentages_or_bytes() {
        assert_eq!(FreeFloor::parse("5%"), Ok(FreeFloor::Percent(5)));
        // 5% of 64 MiB, but at most 1 GiB of a 252 GiB disk.
        assert_eq!(FreeFloor::Percent(5).bytes(64 << 20), (64 << 20) / 100 * 5);
        assert_eq!(FreeFloor::Percent(5).bytes(252 << 30), 1 << 30);
        assert_eq!(FreeFloor::Bytes(20 << 30).bytes(252 << 30), 20 << 30);
        assert_eq!(
            FreeFloor::parse("268435456"),
            Ok(FreeFloor::Bytes(256 << 20))
        );
        assert!(FreeFloor::parse("100%").is_err());
        assert!(FreeFloor::parse("lots").is_err());
        assert_eq!(FreeFloor::Percent(5).bytes(64 << 20), 3_355_440);
        assert_eq!(
            FreeFloor::parse(&DEFAULT_MIN_FREE.to_string()),
            Ok(DEFAULT_MIN_FREE)
        );
    }

    #[test]
    fn an_interrupted_upload_resumes() {
        let (_d, s) = store(Settings::default());
        let p = RemotePath::parse("big").unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        {
            let mut up = s
                .begin_upload("u", &p, data.len() as u64, &src(7), false, true)
                .unwrap();
            let (mut file, _) = up.take_writer().unwrap();
            file.write_all(&data[..40_000]).unwrap();
            // Dropped: the connection died.
        }
        let mut up = s
            .begin_upload("u", &p, data.len() as u64, &src(7), false, true)
            .unwrap();
        assert_eq!(up.offset(), 40_000);
        let (mut file, mut hasher) = up.take_writer().unwrap();
        file.write_all(&data[40_000..]).unwrap();
        hasher.update(&data[40_000..]);
        let published = up
            .finish(file, hasher, 60_000, Some(&blake3::hash(&data).to_hex()))
            .unwrap();
        assert_eq!(published.length, 100_000);
        // Another source version (mtime) starts over.
        let up = s
            .begin_upload(
                "u",
                &RemotePath::parse("big2").unwrap(),
                10,
                &src(8),
                false,
                true,
            )
            .unwrap();
        assert_eq!(up.offset(), 0);
    }

    #[test]
    fn the_same_upload_twice_at_once_is_busy() {
        let (_d, s) = store(Settings::default());
        let p = RemotePath::parse("f").unwrap();
        let _first = s.begin_upload("u", &p, 5, &src(1), false, true).unwrap();
        assert!(matches!(
            s.begin_upload("u", &p, 5, &src(1), false, true),
            Err(StoreError::Busy(_))
        ));
    }

    #[test]
    fn symlink_planted_in_space_cannot_leak() {
        let (d, s) = store(Settings::default());
        s.space("u").unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("files/u/etc")).unwrap();
        let p = RemotePath::parse("etc/passwd").unwrap();
        assert!(matches!(s.open_read("u", &p), Err(StoreError::Escape(_))));
        assert!(matches!(
            s.list("u", &RemotePath::parse("etc").unwrap(), false),
            Err(StoreError::Escape(_)) | Ok(_)
        ));
        let r = put(&s, "etc/x", b"x", false);
        assert!(matches!(r, Err(StoreError::Escape(_))), "{r:?}");
    }

    #[test]
    fn stale_partials_are_swept() {
        let (_d, s) = store(Settings {
            partial_ttl: Duration::ZERO,
            ..Settings::default()
        });
        {
            let mut up = s
                .begin_upload(
                    "u",
                    &RemotePath::parse("f").unwrap(),
                    10,
                    &src(1),
                    false,
                    true,
                )
                .unwrap();
            let (mut f, _) = up.take_writer().unwrap();
            f.write_all(b"12345").unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.sweep_partials().unwrap(), 1);
    }
}

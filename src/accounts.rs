//! Accounts: users, Argon2id passwords, session tokens hashed at rest, and
//! login throttling, in the embedded SQLite database every service shares.
//!
//! The database lives at `<data>/sockit.db` (WAL mode). Its schema is
//! versioned with `PRAGMA user_version` and migrated forward at open.
//! Calls block (SQLite, Argon2), so async callers run them through
//! [`Accounts::run`], which moves the work to tokio's blocking pool.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "sockit.db";
/// Default lifetime of a session token.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Failed logins allowed before responses are delayed.
pub const FREE_FAILURES: u32 = 3;
/// Longest delay imposed on a throttled login.
pub const MAX_LOGIN_DELAY: Duration = Duration::from_secs(30);
/// Failures older than this are forgotten.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Longest accepted password, in bytes (Argon2 input is bounded on purpose).
pub const MAX_PASSWORD: usize = 1024;

/// Schema migrations, applied in order; entry i moves the schema to version i+1.
const MIGRATIONS: &[&str] = &[
    // 1: users, sessions, login failures.
    "CREATE TABLE users (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        name_key    TEXT NOT NULL UNIQUE,
        password    TEXT NOT NULL,
        permissions TEXT NOT NULL DEFAULT '',
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        token_hash  BLOB PRIMARY KEY,
        user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        peer        TEXT
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE TABLE login_failures (
        key         TEXT PRIMARY KEY,
        count       INTEGER NOT NULL,
        last_at     INTEGER NOT NULL
    );",
];

/// Errors of the accounts store. Each maps to a wire error code.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Wrong password or unknown user: deliberately the same error.
    #[error("wrong user name or password")]
    BadCredentials,
    /// The token is unknown, revoked or expired.
    #[error("not logged in, or the session expired or was revoked: log in again")]
    Unauthorized,
    /// The user name is taken.
    #[error("user {0:?} already exists")]
    Exists(String),
    /// The user does not exist.
    #[error("no user {0:?}")]
    NotFound(String),
    /// The user name breaks the naming rule.
    #[error("bad user name {0:?}: use 1 to 32 of A-Z a-z 0-9 _ . -")]
    BadName(String),
    /// The password is unacceptable.
    #[error("{0}")]
    BadPassword(String),
    /// Registration is switched off on this server.
    #[error("registration is closed on this server; ask its administrator for an account")]
    RegistrationClosed,
    /// The database failed.
    #[error("accounts database: {0}")]
    Db(#[from] rusqlite::Error),
    /// Anything else (hashing, the blocking pool).
    #[error("accounts: {0}")]
    Internal(String),
}

impl AccountError {
    /// The error code on the wire (framed protocol and HTTP API alike).
    pub fn code(&self) -> &'static str {
        match self {
            AccountError::BadCredentials => "bad_credentials",
            AccountError::Unauthorized => "unauthorized",
            AccountError::Exists(_) => "exists",
            AccountError::NotFound(_) => "not_found",
            AccountError::BadName(_) | AccountError::BadPassword(_) => "bad_request",
            AccountError::RegistrationClosed => "registration_closed",
            AccountError::Db(_) | AccountError::Internal(_) => "internal",
        }
    }
}

/// A user as the services see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Row id, stable for the user's life.
    pub id: i64,
    /// The name as registered (case kept).
    pub name: String,
    /// Permissions granted by an administrator (e.g. "exec").
    pub permissions: BTreeSet<String>,
}

impl User {
    /// The case-folded name, used for storage paths and lookups.
    pub fn key(&self) -> String {
        name_key(&self.name)
    }
}

/// A fresh session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The secret the client keeps; only its hash is stored.
    pub token: String,
    /// Who it belongs to.
    pub user: User,
    /// When it stops working (seconds since the epoch).
    pub expires_at: i64,
}

/// Settings of the accounts store.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whether `register` is open to anyone who can connect.
    pub allow_register: bool,
    /// Lifetime of a session token.
    pub session_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow_register: true,
            session_ttl: DEFAULT_SESSION_TTL,
        }
    }
}

/// The accounts store. Cheap to clone; all clones share one database handle.
#[derive(Clone)]
pub struct Accounts {
    db: Arc<Mutex<Connection>>,
    settings: Settings,
    /// A hash verified when the user does not exist, so that an unknown user
    /// costs the same time as a wrong password.
    dummy_hash: Arc<String>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("settings", &self.settings)
            .finish()
    }
}

/// Checks the user-name rule: 1 to 32 of `[A-Za-z0-9_.-]`.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name != "."
        && name != ".."
}

/// The case-insensitive key of a user name.
pub fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AccountError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| AccountError::Internal(format!("no randomness: {e}")))?;
    Ok(buf)
}

/// Argon2id runs at once, at most one per core. Each takes 19 MiB and a
/// core for tens of milliseconds: a burst of logins (or an attacker guessing
/// passwords) waits its turn instead of taking every core and, through the
/// allocator's per-thread arenas, hundreds of MiB that are never returned.
struct HashGate {
    busy: Mutex<usize>,
    freed: Condvar,
}

static HASH_GATE: HashGate = HashGate {
    busy: Mutex::new(0),
    freed: Condvar::new(),
};

fn hash_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs `f` when a hashing slot is free.
fn gated<T>(f: impl FnOnce() -> T) -> T {
    let max = hash_slots();
    {
        let mut busy = HASH_GATE.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= max {
            busy = HASH_GATE
                .freed
                .wait(busy)
                .unwrap_or_else(|p| p.into_inner());
        }
        *busy += 1;
    }
    // Released even if `f` panics.
    struct Slot;
    impl Drop for Slot {
        fn drop(&mut self) {
            let mut busy = HASH_GATE.busy.lock().unwrap_or_else(|p| p.into_inner());
            *busy = busy.saturating_sub(1);
            HASH_GATE.freed.notify_one();
        }
    }
    let _slot = Slot;
    f()
}

fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| AccountError::Internal(e.to_string()))?;
    gated(|| {
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AccountError::Internal(e.to_string()))
    })
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            gated(|| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .unwrap_or(false)
}

fn check_password(password: &str) -> Result<(), AccountError> {
    if password.is_empty() {
        return Err(AccountError::BadPassword("the password is empty".into()));
    }
    if password.len() > MAX_PASSWORD {
        return Err(AccountError::BadPassword(format!(
            "the password is longer than {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

/// The stored form of a token: its BLAKE3 hash. Tokens are 256 random bits,
/// so a fast hash is enough; a database leak yields no usable token.
fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// The delay owed for `failures` recent failures: none for the first
/// [`FREE_FAILURES`], then 1 s, 2 s, 4 s ... up to [`MAX_LOGIN_DELAY`].
pub fn login_delay(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let exp = (failures - FREE_FAILURES).min(10);
    Duration::from_secs(1u64 << exp).min(MAX_LOGIN_DELAY)
}

impl Accounts {
    /// Opens (creating and migrating if needed) the database in `data_dir`.
    pub fn open(data_dir: &Path, settings: Settings) -> Result<Accounts, AccountError> {
        let path = data_dir.join(DB_FILE);
        crate::store::mode::ensure_private_file(&path)
            .map_err(|e| AccountError::Internal(format!("{}: {e}", path.display())))?;
        let conn = Connection::open(path)?;
        Self::with_connection(conn, settings)
    }

    fn with_connection(mut conn: Connection, settings: Settings) -> Result<Accounts, AccountError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Accounts {
            db: Arc::new(Mutex::new(conn)),
            settings,
            dummy_hash: Arc::new(hash_password("sockit dummy password")?),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back), so a poisoned lock is still usable.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs blocking account work on tokio's blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Accounts) -> Result<T, AccountError> + Send + 'static,
    ) -> Result<T, AccountError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| AccountError::Internal(e.to_string()))?
    }

    /// Creates a user (self-service: refused when registration is closed).
    pub fn register(&self, name: &str, password: &str) -> Result<User, AccountError> {
        if !self.settings.allow_register {
            return Err(AccountError::RegistrationClosed);
        }
        self.add_user(name, password)
    }

    /// Creates a user regardless of `allow_register` (local administration).
    pub fn add_user(&self, name: &str, password: &str) -> Result<User, AccountError> {
        if !valid_name(name) {
            return Err(AccountError::BadName(name.into()));
        }
        check_password(password)?;
        let phc = hash_password(password)?;
        let db = self.db();
        let inserted = db.execute(
            "INSERT INTO users (name, name_key, password, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name_key) DO NOTHING",
            params![name, name_key(name), phc, now()],
        )?;
        if inserted == 0 {
            return Err(AccountError::Exists(name.into()));
        }
        Ok(User {
            id: db.last_insert_rowid(),
            name: name.into(),
            permissions: BTreeSet::new(),
        })
    }

    /// Changes a user's password and revokes every session of theirs.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AccountError> {
        check_password(password)?;
        let phc = hash_password(password)?;
        let mut db = self.db();
        let tx = db.transaction()?;
        let id: i64 = tx
            .query_row(
                "SELECT id FROM users WHERE name_key = ?1",
                [name_key(name)],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| AccountError::NotFound(name.into()))?;
        tx.execute(
            "UPDATE users SET password = ?1 WHERE id = ?2",
            params![phc, id],
        )?;
        tx.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    /// The delay a login attempt for `name` from `ip` must wait first.
    pub fn throttle(&self, name: &str, ip: Option<IpAddr>) -> Result<Duration, AccountError> {
        let db = self.db();
        let since = now() - FAILURE_WINDOW.as_secs() as i64;
        let mut worst = 0u32;
        for key in failure_keys(name, ip) {
            let count: Option<u32> = db
                .query_row(
                    "SELECT count FROM login_failures WHERE key = ?1 AND last_at >= ?2",
                    params![key, since],
                    |r| r.get(0),
                )
                .optional()?;
            worst = worst.max(count.unwrap_or(0));
        }
        Ok(login_delay(worst))
    }

    /// Checks a password and opens a session. Unknown users and wrong
    /// passwords take the same time and get the same error. The caller
    /// applies [`throttle`](Self::throttle) first.
    pub fn login(
        &self,
        name: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<Session, AccountError> {
        let row: Option<(i64, String, String, String)> = self
            .db()
            .query_row(
                "SELECT id, name, password, permissions FROM users WHERE name_key = ?1",
                [name_key(name)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let password_ok = password.len() <= MAX_PASSWORD
            && match &row {
                Some((_, _, phc, _)) => verify_password(password, phc),
                None => {
                    verify_password(password, &self.dummy_hash);
                    false
                }
            };
        let keys = failure_keys(name, ip);
        let (id, stored_name, perms) = match row {
            Some((id, n, _, p)) if password_ok => (id, n, p),
            _ => {
                let db = self.db();
                let since = now() - FAILURE_WINDOW.as_secs() as i64;
                for key in keys {
                    db.execute(
                        "INSERT INTO login_failures (key, count, last_at) VALUES (?1, 1, ?2)
                         ON CONFLICT(key) DO UPDATE SET
                           count = CASE WHEN last_at < ?3 THEN 1 ELSE count + 1 END,
                           last_at = ?2",
                        params![key, now(), since],
                    )?;
                }
                return Err(AccountError::BadCredentials);
            }
        };
        let token = format!("sk_{}", hex(&random_bytes::<32>()?));
        let expires_at = now() + self.settings.session_ttl.as_secs() as i64;
        let db = self.db();
        db.execute(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, peer) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&token_hash(&token)[..], id, now(), expires_at, ip.map(|i| i.to_string())],
        )?;
        for key in keys {
            db.execute("DELETE FROM login_failures WHERE key = ?1", [key])?;
        }
        Ok(Session {
            token,
            user: User {
                id,
                name: stored_name,
                permissions: parse_permissions(&perms),
            },
            expires_at,
        })
    }

    /// The user a token belongs to, if it is valid and unexpired.
    pub fn authenticate(&self, token: &str) -> Result<User, AccountError> {
        if token.len() > 256 {
            return Err(AccountError::Unauthorized);
        }
        self.db()
            .query_row(
                "SELECT u.id, u.name, u.permissions FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_hash = ?1 AND s.expires_at > ?2",
                params![&token_hash(token)[..], now()],
                |r| {
                    Ok(User {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        permissions: parse_permissions(&r.get::<_, String>(2)?),
                    })
                },
            )
            .optional()?
            .ok_or(AccountError::Unauthorized)
    }

    /// Revokes a token. Revoking an unknown token is not an error.
    pub fn logout(&self, token: &str) -> Result<(), AccountError> {
        self.db().execute(
            "DELETE FROM sessions WHERE token_hash = ?1",
            [&token_hash(token)[..]],
        )?;
        Ok(())
    }

    /// Deletes expired sessions and stale failure counters.
    pub fn sweep(&self) -> Result<usize, AccountError> {
        let db = self.db();
        let n = db.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now()])?;
        db.execute(
            "DELETE FROM login_failures WHERE last_at < ?1",
            [now() - FAILURE_WINDOW.as_secs() as i64],
        )?;
        Ok(n)
    }

    /// Grants or revokes a permission (local administration).
    pub fn set_permission(
        &self,
        name: &str,
        permission: &str,
        granted: bool,
    ) -> Result<User, AccountError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let (id, stored, perms): (i64, String, String) = tx
            .query_row(
                "SELECT id, name, permissions FROM users WHERE name_key = ?1",
                [name_key(name)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .ok_or_else(|| AccountError::NotFound(name.into()))?;
        let mut set = parse_permissions(&perms);
        if granted {
            set.insert(permission.to_string());
        } else {
            set.remove(permission);
        }
        let joined = set.iter().cloned().collect::<Vec<_>>().join(",");
        tx.execute(
            "UPDATE users SET permissions = ?1 WHERE id = ?2",
            params![joined, id],
        )?;
        tx.commit()?;
        Ok(User {
            id,
            name: stored,
            permissions: set,
        })
    }

    /// The user with this name (compared without regard to case), if any.
    pub fn find(&self, name: &str) -> Result<Option<User>, AccountError> {
        if !valid_name(name) {
            return Ok(None);
        }
        let db = self.db();
        let mut stmt =
            db.prepare_cached("SELECT id, name, permissions FROM users WHERE name_key = ?1")?;
        let mut rows = stmt.query_map([name_key(name)], |r| {
            Ok(User {
                id: r.get(0)?,
                name: r.get(1)?,
                permissions: parse_permissions(&r.get::<_, String>(2)?),
            })
        })?;
        Ok(rows.next().transpose()?)
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<User>, AccountError> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT id, name, permissions FROM users ORDER BY name_key")?;
        let rows = stmt.query_map([], |r| {
            Ok(User {
                id: r.get(0)?,
                name: r.get(1)?,
                permissions: parse_permissions(&r.get::<_, String>(2)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn failure_keys(name: &str, ip: Option<IpAddr>) -> Vec<String> {
    let mut keys = vec![format!("user:{}", name_key(name))];
    if let Some(ip) = ip {
        keys.push(format!("ip:{ip}"));
    }
    keys
}

fn parse_permissions(s: &str) -> BTreeSet<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn migrate(conn: &mut Connection) -> Result<(), AccountError> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(AccountError::Internal(format!(
            "database schema version {version} is newer than this sockit understands ({}); upgrade sockit",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(allow_register: bool) -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let a = Accounts::open(
            dir.path(),
            Settings {
                allow_register,
                ..Settings::default()
            },
        )
        .unwrap();
        (dir, a)
    }

    #[test]
    fn names() {
        for ok in ["a", "Alice", "bob_2", "x.y-z", &"n".repeat(32)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "ü", "a/b", &"n".repeat(33), "a\0"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn register_login_authenticate_logout() {
        let (_d, a) = store(true);
        let u = a.register("Alice", "secret pw").unwrap();
        assert_eq!(u.name, "Alice");
        assert!(matches!(
            a.register("alice", "x"),
            Err(AccountError::Exists(_))
        ));
        let s = a.login("ALICE", "secret pw", None).unwrap();
        assert!(s.token.len() >= 64);
        assert_eq!(a.authenticate(&s.token).unwrap().name, "Alice");
        a.logout(&s.token).unwrap();
        assert!(matches!(
            a.authenticate(&s.token),
            Err(AccountError::Unauthorized)
        ));
    }

    #[test]
    fn wrong_password_and_unknown_user_are_the_same_error() {
        let (_d, a) = store(true);
        a.register("bob", "right").unwrap();
        assert!(matches!(
            a.login("bob", "wrong", None),
            Err(AccountError::BadCredentials)
        ));
        assert!(matches!(
            a.login("nobody", "wrong", None),
            Err(AccountError::BadCredentials)
        ));
    }

    #[test]
    fn tokens_are_stored_hashed() {
        let (_d, a) = store(true);
        a.register("carol", "pw").unwrap();
        let s = a.login("carol", "pw", None).unwrap();
        let stored: Vec<u8> = a
            .db()
            .query_row("SELECT token_hash FROM sessions", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, s.token.as_bytes());
        assert_eq!(stored, token_hash(&s.token));
        let phc: String = a
            .db()
            .query_row("SELECT password FROM users", [], |r| r.get(0))
            .unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
    }

    #[test]
    fn expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Accounts::open(
            dir.path(),
            Settings {
                allow_register: true,
                session_ttl: Duration::ZERO,
            },
        )
        .unwrap();
        a.register("dan", "pw").unwrap();
        let s = a.login("dan", "pw", None).unwrap();
        assert!(matches!(
            a.authenticate(&s.token),
            Err(AccountError::Unauthorized)
        ));
        assert_eq!(a.sweep().unwrap(), 1);
    }

    #[test]
    fn failures_are_throttled_per_user_and_address() {
        let (_d, a) = store(true);
        a.register("eve", "pw").unwrap();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(a.throttle("eve", Some(ip)).unwrap(), Duration::ZERO);
            let _ = a.login("eve", "bad", Some(ip));
        }
        assert_eq!(a.throttle("eve", None).unwrap(), Duration::from_secs(1));
        assert_eq!(
            a.throttle("other", Some(ip)).unwrap(),
            Duration::from_secs(1)
        );
        let _ = a.login("eve", "bad", Some(ip));
        assert_eq!(a.throttle("eve", None).unwrap(), Duration::from_secs(2));
        // Success clears the counters.
        a.login("eve", "pw", Some(ip)).unwrap();
        assert_eq!(a.throttle("eve", Some(ip)).unwrap(), Duration::ZERO);
        assert_eq!(login_delay(100), MAX_LOGIN_DELAY);
    }

    #[test]
    fn registration_can_be_closed_but_admin_can_add() {
        let (_d, a) = store(false);
        assert!(matches!(
            a.register("fay", "pw"),
            Err(AccountError::RegistrationClosed)
        ));
        a.add_user("fay", "pw").unwrap();
        a.login("fay", "pw", None).unwrap();
    }

    #[test]
    fn password_change_revokes_sessions_and_permissions_stick() {
        let (_d, a) = store(true);
        a.register("gus", "old").unwrap();
        let s = a.login("gus", "old", None).unwrap();
        a.set_password("gus", "new").unwrap();
        assert!(a.authenticate(&s.token).is_err());
        a.login("gus", "new", None).unwrap();
        let u = a.set_permission("GUS", "exec", true).unwrap();
        assert!(u.permissions.contains("exec"));
        let s = a.login("gus", "new", None).unwrap();
        assert!(a
            .authenticate(&s.token)
            .unwrap()
            .permissions
            .contains("exec"));
        assert!(a.set_permission("nobody", "exec", true).is_err());
    }

    #[test]
    fn reopening_keeps_data_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let a = Accounts::open(dir.path(), Settings::default()).unwrap();
            a.register("hal", "pw").unwrap();
        }
        let a = Accounts::open(dir.path(), Settings::default()).unwrap();
        a.login("hal", "pw", None).unwrap();
        let v: usize = a
            .db()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len());
    }
}

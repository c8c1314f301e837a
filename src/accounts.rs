//! Accounts: users, Argon2id passwords, session tokens hashed at rest,
//! revocation pushed to open connections, and the per-client limits on
//! logins and registrations, in the embedded SQLite database every service
//! shares.
//!
//! The database lives at `<data>/sockit.db` (WAL mode). Its schema is
//! versioned with `PRAGMA user_version` and migrated forward at open.
//! Database calls block, so async callers run them through
//! [`Accounts::run`], which moves the work to tokio's blocking pool. The
//! calls that hash a password ([`Accounts::login`], [`Accounts::register`])
//! are async: they take a slot of their own semaphore *before* they take a
//! blocking thread, so a flood of them waits in memory and never holds the
//! threads that session lookups need.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "sockit.db";
/// Default lifetime of a session token.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest accepted password, in bytes (Argon2 input is bounded on purpose).
pub const MAX_PASSWORD: usize = 1024;
/// Default login attempts one address may have checked per
/// [`DEFAULT_LOGIN_WINDOW`], over all accounts.
pub const DEFAULT_LOGIN_PER_ADDRESS: u32 = 30;
/// Default login attempts against one account from one address per
/// [`DEFAULT_LOGIN_WINDOW`].
pub const DEFAULT_LOGIN_PER_ACCOUNT: u32 = 10;
/// Default window of the login limits (the buckets refill over it).
pub const DEFAULT_LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Default registrations one address may make per [`DEFAULT_REGISTER_WINDOW`].
pub const DEFAULT_REGISTER_PER_ADDRESS: u32 = 20;
/// Default window of the registration limit.
pub const DEFAULT_REGISTER_WINDOW: Duration = Duration::from_secs(3600);
/// Most buckets the in-memory limiter keeps; past it the idlest are
/// forgotten, so a spray of addresses or user names cannot grow memory.
pub const MAX_LIMITER_ENTRIES: usize = 65_536;
/// How often a server looks for revocations made by another process (the
/// `sockit admin passwd` command); revocations made in this process are
/// pushed at once.
pub const REVOCATION_POLL: Duration = Duration::from_secs(1);
/// Longest an attempt waits for attempts being checked ahead of it to
/// settle before it is refused.
pub const MAX_LIMIT_WAIT: Duration = Duration::from_secs(10);
/// Revocation records older than this are swept (every server has read
/// them long before).
const REVOCATION_KEEP: Duration = Duration::from_secs(3600);

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
    // 2: login throttling moved to memory (`Limiter`); revocations are
    // recorded so that servers in other processes hear of them.
    "DROP TABLE login_failures;
    CREATE TABLE revocations (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id     INTEGER NOT NULL,
        at          INTEGER NOT NULL
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
    /// Too many attempts from this client: a limit of [`Settings`] is
    /// reached.
    #[error("too many {what} from your address: at most {limit} per {}; try again in {} s", humantime::format_duration(*.window), .retry_after.as_secs().max(1))]
    RateLimited {
        /// What was limited ("login attempts", "registrations").
        what: &'static str,
        /// The limit per window.
        limit: u32,
        /// The window.
        window: Duration,
        /// When the next attempt may be checked.
        retry_after: Duration,
    },
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
            AccountError::RateLimited { .. } => "rate_limited",
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
    /// The revocation epoch when it was opened; see [`Accounts::grant`].
    epoch: u64,
}

/// Settings of the accounts store.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whether `register` is open to anyone who can connect.
    pub allow_register: bool,
    /// Lifetime of a session token.
    pub session_ttl: Duration,
    /// Login attempts checked per address per `login_window`, over all
    /// accounts.
    pub login_per_address: u32,
    /// Login attempts checked per (account, address) per `login_window`.
    pub login_per_account: u32,
    /// Window of the login limits.
    pub login_window: Duration,
    /// Registrations per address per `register_window`.
    pub register_per_address: u32,
    /// Window of the registration limit.
    pub register_window: Duration,
    /// Password hashes computed at once; 0 picks half the cores (at least
    /// one), which leaves the other half to everything else.
    pub hash_slots: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow_register: true,
            session_ttl: DEFAULT_SESSION_TTL,
            login_per_address: DEFAULT_LOGIN_PER_ADDRESS,
            login_per_account: DEFAULT_LOGIN_PER_ACCOUNT,
            login_window: DEFAULT_LOGIN_WINDOW,
            register_per_address: DEFAULT_REGISTER_PER_ADDRESS,
            register_window: DEFAULT_REGISTER_WINDOW,
            hash_slots: 0,
        }
    }
}

impl Settings {
    fn hash_slots(&self) -> usize {
        match self.hash_slots {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
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
    /// Login and registration buckets: the one place every transport's
    /// attempts are counted.
    limiter: Arc<dyn Limiter>,
    /// Argon2 runs at once. Each takes 19 MiB and a core for tens of
    /// milliseconds; the permit is taken before a blocking thread is, so
    /// waiting hashes hold neither a thread nor a core.
    hash_slots: Arc<tokio::sync::Semaphore>,
    /// Who is told when a user's sessions are revoked.
    revocations: Arc<Revocations>,
    /// Woken when an attempt is settled, for those waiting in `take`.
    settled: Arc<tokio::sync::Notify>,
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

fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| AccountError::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Internal(e.to_string()))
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
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
        let last_revocation: i64 =
            conn.query_row("SELECT coalesce(max(seq), 0) FROM revocations", [], |r| {
                r.get(0)
            })?;
        Ok(Accounts {
            db: Arc::new(Mutex::new(conn)),
            limiter: Arc::new(MemoryLimiter::new(&settings, MAX_LIMITER_ENTRIES)),
            hash_slots: Arc::new(tokio::sync::Semaphore::new(settings.hash_slots())),
            settings,
            dummy_hash: Arc::new(hash_password("sockit dummy password")?),
            revocations: Arc::new(Revocations::new(last_revocation)),
            settled: Arc::new(tokio::sync::Notify::new()),
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

    /// Runs password hashing on the blocking pool once a hashing slot is
    /// free; the slot is awaited first, so a queue of hashes holds no thread.
    async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Accounts) -> Result<T, AccountError> + Send + 'static,
    ) -> Result<T, AccountError> {
        let _slot = self
            .hash_slots
            .acquire()
            .await
            .map_err(|e| AccountError::Internal(e.to_string()))?;
        self.run(f).await
    }

    /// Creates a user for a client at `ip` (self-service: refused when
    /// registration is closed, limited per address).
    pub async fn register(
        &self,
        name: String,
        password: String,
        ip: Option<IpAddr>,
    ) -> Result<User, AccountError> {
        self.register_as(name, password, ip, false)
            .await
            .map(|(user, _)| user)
    }

    /// [`register`](Self::register), and a session for the new user (the
    /// web's sign-up: one hash, not a second one to log in).
    pub async fn register_and_login(
        &self,
        name: String,
        password: String,
        ip: Option<IpAddr>,
    ) -> Result<Session, AccountError> {
        match self.register_as(name, password, ip, true).await? {
            (_, Some(session)) => Ok(session),
            (_, None) => Err(AccountError::Internal("no session was opened".into())),
        }
    }

    async fn register_as(
        &self,
        name: String,
        password: String,
        ip: Option<IpAddr>,
        open: bool,
    ) -> Result<(User, Option<Session>), AccountError> {
        if !self.settings.allow_register {
            return Err(AccountError::RegistrationClosed);
        }
        if !valid_name(&name) {
            return Err(AccountError::BadName(name));
        }
        check_password(&password)?;
        // The cheap refusal first: a taken name costs no hash and no attempt.
        let check = name.clone();
        if self.run(move |a| a.find(&check)).await?.is_some() {
            return Err(AccountError::Exists(name));
        }
        let keys: Vec<Key> = ip.map(|_| Key::register(ip)).into_iter().collect();
        self.take(&keys).await?;
        let result = self
            .hashing(move |a| {
                let user = a.add_user(&name, &password)?;
                let session = match open {
                    true => Some(a.open_session(user.clone(), ip)?),
                    false => None,
                };
                Ok((user, session))
            })
            .await;
        // A name taken meanwhile costs nothing, like one taken before.
        self.settle(&keys, matches!(result, Err(AccountError::Exists(_))));
        result
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

    /// Changes a user's password and revokes every session of theirs: open
    /// connections in this process hear it at once, those of servers in
    /// other processes within [`REVOCATION_POLL`].
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
        record_revocation(&tx, id)?;
        tx.commit()?;
        drop(db);
        self.revocations.notify(id);
        Ok(())
    }

    /// Takes one attempt from each bucket of `keys`, or says when to retry.
    ///
    /// A bucket emptied only by attempts still being checked is not a
    /// refusal yet: those may succeed and give their attempts back (a crowd
    /// behind one address logging in at once), so this waits for them, up
    /// to [`MAX_LIMIT_WAIT`]. Attempts that fail keep theirs, and the
    /// waiters behind them are then refused: a guesser's parallel
    /// connections still get no more checks than the limit.
    async fn take(&self, keys: &[Key]) -> Result<(), AccountError> {
        let deadline = tokio::time::Instant::now() + MAX_LIMIT_WAIT;
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Registered before looking, so a settlement in between wakes it.
            settled.as_mut().enable();
            match self.limiter.take(keys) {
                Ok(()) => return Ok(()),
                Err(Denied::Pending) => {
                    if tokio::time::timeout_at(deadline, settled).await.is_err() {
                        return Err(self.refusal(keys[0].kind, MAX_LIMIT_WAIT));
                    }
                }
                Err(Denied::Empty(kind, retry_after)) => {
                    return Err(self.refusal(kind, retry_after))
                }
            }
        }
    }

    /// The attempt of `take` is over: `success` gives it back.
    fn settle(&self, keys: &[Key], success: bool) {
        self.limiter.settle(keys, success);
        self.settled.notify_waiters();
    }

    fn refusal(&self, kind: Kind, retry_after: Duration) -> AccountError {
        let (limit, window) = self.limits(kind);
        AccountError::RateLimited {
            what: kind.what(),
            limit,
            window,
            retry_after,
        }
    }

    fn limits(&self, kind: Kind) -> (u32, Duration) {
        limits_of(&self.settings, kind)
    }

    /// Checks a password from a client at `ip` and opens a session.
    ///
    /// Attempts are counted before they are checked, per address and per
    /// (account, address), so that parallel connections share one budget;
    /// a success gives its attempt back. Unknown users and wrong passwords
    /// take the same time and get the same error.
    pub async fn login(
        &self,
        name: String,
        password: String,
        ip: Option<IpAddr>,
    ) -> Result<Session, AccountError> {
        // Local callers (the admin command, tests) have no address and no
        // limit.
        let keys = match ip {
            Some(_) => Key::login(&name, ip).to_vec(),
            None => Vec::new(),
        };
        self.take(&keys).await?;
        let result = self
            .hashing(move |a| a.check_password_blocking(&name, &password, ip))
            .await;
        self.settle(&keys, result.is_ok());
        result
    }

    fn check_password_blocking(
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
        match row {
            Some((id, name, _, perms)) if password_ok => self.open_session(
                User {
                    id,
                    name,
                    permissions: parse_permissions(&perms),
                },
                ip,
            ),
            _ => Err(AccountError::BadCredentials),
        }
    }

    /// A new session for `user`, who has just proved who they are.
    fn open_session(&self, user: User, ip: Option<IpAddr>) -> Result<Session, AccountError> {
        let epoch = self.revocations.epoch();
        let token = format!("sk_{}", hex(&random_bytes::<32>()?));
        let expires_at = now() + self.settings.session_ttl.as_secs() as i64;
        self.db().execute(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, peer) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&token_hash(&token)[..], user.id, now(), expires_at, ip.map(|i| i.to_string())],
        )?;
        Ok(Session {
            token,
            user,
            expires_at,
            epoch,
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

    /// Authenticates `token` for a connection that stays open: the
    /// [`Grant`] hears of every later revocation of the user's sessions.
    pub async fn grant(&self, token: String) -> Result<Grant, AccountError> {
        // Read before the lookup: a revocation between the lookup and the
        // subscription moves it, and the grant then starts out stale.
        let epoch = self.revocations.epoch();
        let check = token.clone();
        let user = self.run(move |a| a.authenticate(&check)).await?;
        self.poll_revocations();
        let mut watch = self.revocations.watch(user.id);
        if self.revocations.epoch() != epoch {
            watch.mark_changed();
        }
        Ok(Grant { user, token, watch })
    }

    /// The grant of a session this connection has just opened (no lookup).
    pub fn grant_session(&self, session: &Session) -> Grant {
        self.poll_revocations();
        let mut watch = self.revocations.watch(session.user.id);
        if self.revocations.epoch() != session.epoch {
            watch.mark_changed();
        }
        Grant {
            user: session.user.clone(),
            token: session.token.clone(),
            watch,
        }
    }

    /// Checks that `grant` still holds: free unless one of the user's
    /// sessions was revoked since the last check, then one lookup (which
    /// also refreshes the user's permissions).
    pub async fn recheck(&self, grant: &mut Grant) -> Result<(), AccountError> {
        if !grant.watch.has_changed().unwrap_or(false) {
            return Ok(());
        }
        // Seen before the lookup, so a revocation during it is not missed.
        grant.watch.borrow_and_update();
        let token = grant.token.clone();
        grant.user = self.run(move |a| a.authenticate(&token)).await?;
        Ok(())
    }

    /// Revokes a token; the user's open connections re-check theirs.
    /// Revoking an unknown token is not an error.
    pub fn logout(&self, token: &str) -> Result<(), AccountError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let user: Option<i64> = tx
            .query_row(
                "DELETE FROM sessions WHERE token_hash = ?1 RETURNING user_id",
                [&token_hash(token)[..]],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = user {
            record_revocation(&tx, id)?;
        }
        tx.commit()?;
        drop(db);
        if let Some(id) = user {
            self.revocations.notify(id);
        }
        Ok(())
    }

    /// Deletes expired sessions and old revocation records.
    pub fn sweep(&self) -> Result<usize, AccountError> {
        let db = self.db();
        let n = db.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now()])?;
        db.execute(
            "DELETE FROM revocations WHERE at < ?1",
            [now() - REVOCATION_KEEP.as_secs() as i64],
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

/// An authenticated connection's hold on its session: who it is, and a
/// channel that wakes it when one of the user's sessions is revoked (then
/// [`Accounts::recheck`] says whether this one was).
#[derive(Debug)]
pub struct Grant {
    /// The user, with the permissions of the last check.
    pub user: User,
    token: String,
    /// Bumped for each revocation of the user's sessions.
    watch: tokio::sync::watch::Receiver<u64>,
}

impl Grant {
    /// The token the connection authenticated with.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Resolves when one of the user's sessions has been revoked since the
    /// last check (cancel-safe). The next [`Accounts::recheck`] looks.
    pub async fn revoked(&mut self) {
        if self.watch.changed().await.is_err() {
            // The sender lives as long as a receiver does; never reached.
            std::future::pending::<()>().await;
        }
        self.watch.mark_changed();
    }
}

/// Who hears of revocations: a watch channel per user with open
/// connections, fed at once by this process's revocations and, through one
/// poll of the `revocations` table every [`REVOCATION_POLL`], by other
/// processes'. (With several servers this becomes a Redis channel.)
struct Revocations {
    /// Per user id, and the size at which dead entries are pruned next.
    users: Mutex<(HashMap<i64, tokio::sync::watch::Sender<u64>>, usize)>,
    /// Bumped by every revocation of anyone; see [`Accounts::grant`].
    epoch: AtomicU64,
    /// The last `revocations.seq` the poll has passed on.
    seen: Mutex<i64>,
    /// Whether the poll runs.
    polling: std::sync::Once,
}

/// Entries of the revocation map before the first prune.
const REVOCATION_PRUNE_MIN: usize = 64;

impl Revocations {
    fn new(seen: i64) -> Revocations {
        Revocations {
            users: Mutex::new((HashMap::new(), REVOCATION_PRUNE_MIN)),
            epoch: AtomicU64::new(0),
            seen: Mutex::new(seen),
            polling: std::sync::Once::new(),
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn watch(&self, user: i64) -> tokio::sync::watch::Receiver<u64> {
        let mut guard = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let (users, prune_at) = &mut *guard;
        if users.len() >= *prune_at {
            // Users whose connections have all closed.
            users.retain(|_, tx| tx.receiver_count() > 0);
            *prune_at = (users.len() * 2).max(REVOCATION_PRUNE_MIN);
        }
        users
            .entry(user)
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    }

    fn notify(&self, user: i64) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let guard = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = guard.0.get(&user) {
            tx.send_modify(|n| *n += 1);
        }
    }
}

impl Accounts {
    /// Starts, once per store, the task that passes on revocations made by
    /// other processes. It ends within a poll of the store's last clone
    /// being dropped.
    fn poll_revocations(&self) {
        let (db, revocations) = (Arc::downgrade(&self.db), Arc::downgrade(&self.revocations));
        self.revocations.polling.call_once(|| {
            tokio::spawn(poll_revocations(db, revocations));
        });
    }
}

async fn poll_revocations(db: Weak<Mutex<Connection>>, revocations: Weak<Revocations>) {
    let mut tick = tokio::time::interval(REVOCATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(db), Some(rev)) = (db.upgrade(), revocations.upgrade()) else {
            return;
        };
        let found = tokio::task::spawn_blocking(move || {
            let after = *rev.seen.lock().unwrap_or_else(|p| p.into_inner());
            let rows = revocations_after(&db.lock().unwrap_or_else(|p| p.into_inner()), after);
            (rev, rows)
        })
        .await;
        match found {
            Ok((rev, Ok(rows))) => {
                for (seq, user) in rows {
                    rev.notify(user);
                    *rev.seen.lock().unwrap_or_else(|p| p.into_inner()) = seq;
                }
            }
            Ok((_, Err(e))) => tracing::warn!("reading revocations: {e}"),
            Err(e) => tracing::warn!("reading revocations: {e}"),
        }
    }
}

/// Revocations recorded (by any process) after `seq`: (seq, user id).
fn revocations_after(db: &Connection, seq: i64) -> Result<Vec<(i64, i64)>, AccountError> {
    let mut stmt = db.prepare_cached(
        "SELECT seq, user_id FROM revocations WHERE seq > ?1 ORDER BY seq LIMIT 1000",
    )?;
    let rows = stmt.query_map([seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn record_revocation(tx: &rusqlite::Transaction<'_>, user: i64) -> Result<(), AccountError> {
    tx.execute(
        "INSERT INTO revocations (user_id, at) VALUES (?1, ?2)",
        params![user, now()],
    )?;
    Ok(())
}

/// What a limiter bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Login attempts from one address, over all accounts.
    LoginAddress,
    /// Login attempts against one account from one address.
    LoginAccount,
    /// Registrations from one address.
    Register,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::LoginAddress => "login attempts",
            Kind::LoginAccount => "login attempts for this account",
            Kind::Register => "registrations",
        }
    }
}

/// One bucket: a kind and who it is for (an address, or account and
/// address).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// What is counted.
    pub kind: Kind,
    /// For whom.
    pub id: String,
}

impl Key {
    fn login(name: &str, ip: Option<IpAddr>) -> [Key; 2] {
        let address = address_key(ip);
        // A name that cannot exist still gets a bucket, but a short one.
        let account = if valid_name(name) {
            name_key(name)
        } else {
            "(invalid)".into()
        };
        [
            Key {
                kind: Kind::LoginAddress,
                id: address.clone(),
            },
            Key {
                kind: Kind::LoginAccount,
                id: format!("{account} {address}"),
            },
        ]
    }

    fn register(ip: Option<IpAddr>) -> Key {
        Key {
            kind: Kind::Register,
            id: address_key(ip),
        }
    }
}

/// The address a limit applies to: IPv4 as is, IPv6 by its /64 (what one
/// subscriber gets), an IPv4-mapped IPv6 address as the IPv4 one.
fn address_key(ip: Option<IpAddr>) -> String {
    match ip {
        None => "-".into(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

fn limits_of(settings: &Settings, kind: Kind) -> (u32, Duration) {
    match kind {
        Kind::LoginAddress => (settings.login_per_address, settings.login_window),
        Kind::LoginAccount => (settings.login_per_account, settings.login_window),
        Kind::Register => (settings.register_per_address, settings.register_window),
    }
}

/// Where attempts are counted: token buckets that hold `limit` attempts and
/// refill over their window. In memory for one process; a Redis-backed one
/// (`INCR` with expiry) replaces it when several processes serve one site.
pub trait Limiter: Send + Sync {
    /// Takes one attempt from every bucket of `keys`, or from none.
    fn take(&self, keys: &[Key]) -> Result<(), Denied>;
    /// Ends an attempt `take` let through: a success gives it back (it
    /// proves the client was not guessing), a failure keeps it spent.
    fn settle(&self, keys: &[Key], success: bool);
}

/// Why [`Limiter::take`] let nothing through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Denied {
    /// A bucket is empty, but some of its attempts are still being checked
    /// and may come back: ask again when one settles.
    Pending,
    /// A bucket of this kind is empty; it has an attempt again after this.
    Empty(Kind, Duration),
}

/// The in-process [`Limiter`]: a map capped at `max` buckets.
pub struct MemoryLimiter {
    /// Capacity and refill per second, per kind; `None`: unlimited.
    rates: HashMap<Kind, Option<(f64, f64)>>,
    buckets: Mutex<HashMap<Key, Bucket>>,
    max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Attempts taken and not yet settled.
    pending: u32,
}

impl MemoryLimiter {
    /// A limiter with the limits of `settings`, keeping at most `max`
    /// buckets.
    pub fn new(settings: &Settings, max: usize) -> MemoryLimiter {
        let rates = [Kind::LoginAddress, Kind::LoginAccount, Kind::Register]
            .into_iter()
            .map(|kind| {
                let (limit, window) = limits_of(settings, kind);
                let rate = (limit > 0 && !window.is_zero())
                    .then(|| (f64::from(limit), f64::from(limit) / window.as_secs_f64()));
                (kind, rate)
            })
            .collect();
        MemoryLimiter {
            rates,
            buckets: Mutex::new(HashMap::new()),
            max: max.max(8),
        }
    }

    fn rate(&self, kind: Kind) -> Option<(f64, f64)> {
        self.rates.get(&kind).copied().flatten()
    }

    /// Tokens in `bucket` at `now` (a missing bucket is full).
    fn tokens(&self, kind: Kind, bucket: Option<&Bucket>, now: Instant) -> f64 {
        let Some((cap, per_sec)) = self.rate(kind) else {
            return f64::INFINITY;
        };
        bucket.map_or(cap, |b| {
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec).min(cap)
        })
    }

    /// Makes room: full buckets say nothing and go first, then the eighth
    /// least recently used.
    fn evict(&self, buckets: &mut HashMap<Key, Bucket>, now: Instant) {
        buckets.retain(|k, b| {
            b.pending > 0
                || self.tokens(k.kind, Some(b), now) < self.rate(k.kind).map_or(0.0, |r| r.0)
        });
        if buckets.len() < self.max - self.max / 8 {
            return;
        }
        let mut ages: Vec<Instant> = buckets.values().map(|b| b.at).collect();
        let cut = self.max / 8;
        let (_, &mut cutoff, _) = ages.select_nth_unstable(cut);
        buckets.retain(|_, b| b.at > cutoff);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Limiter for MemoryLimiter {
    fn take(&self, keys: &[Key]) -> Result<(), Denied> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut pending = false;
        for key in keys {
            let bucket = buckets.get(key);
            let tokens = self.tokens(key.kind, bucket, now);
            if tokens >= 1.0 {
                continue;
            }
            if bucket.is_some_and(|b| b.pending > 0) {
                pending = true;
                continue;
            }
            let per_sec = self.rate(key.kind).map_or(1.0, |r| r.1);
            let retry = Duration::from_secs_f64((1.0 - tokens) / per_sec);
            return Err(Denied::Empty(key.kind, retry));
        }
        if pending {
            return Err(Denied::Pending);
        }
        for key in keys {
            if self.rate(key.kind).is_none() {
                continue;
            }
            let bucket = buckets.get(key).copied();
            let tokens = self.tokens(key.kind, bucket.as_ref(), now) - 1.0;
            let pending = bucket.map_or(0, |b| b.pending) + 1;
            if bucket.is_none() && buckets.len() >= self.max {
                self.evict(&mut buckets, now);
            }
            buckets.insert(
                key.clone(),
                Bucket {
                    tokens,
                    at: now,
                    pending,
                },
            );
        }
        Ok(())
    }

    fn settle(&self, keys: &[Key], success: bool) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            let Some(cap) = self.rate(key.kind).map(|r| r.0) else {
                continue;
            };
            if let Some(b) = buckets.get(key).copied() {
                let back = if success { 1.0 } else { 0.0 };
                let tokens = (self.tokens(key.kind, Some(&b), now) + back).min(cap);
                buckets.insert(
                    key.clone(),
                    Bucket {
                        tokens,
                        at: now,
                        pending: b.pending.saturating_sub(1),
                    },
                );
            }
        }
    }
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

    fn store_with(settings: Settings) -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let a = Accounts::open(dir.path(), settings).unwrap();
        (dir, a)
    }

    fn store(allow_register: bool) -> (tempfile::TempDir, Accounts) {
        store_with(Settings {
            allow_register,
            ..Settings::default()
        })
    }

    fn s(v: &str) -> String {
        v.to_string()
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

    #[tokio::test]
    async fn register_login_authenticate_logout() {
        let (_d, a) = store(true);
        let u = a.register(s("Alice"), s("secret pw"), None).await.unwrap();
        assert_eq!(u.name, "Alice");
        assert!(matches!(
            a.register(s("alice"), s("x"), None).await,
            Err(AccountError::Exists(_))
        ));
        let ses = a.login(s("ALICE"), s("secret pw"), None).await.unwrap();
        assert!(ses.token.len() >= 64);
        assert_eq!(a.authenticate(&ses.token).unwrap().name, "Alice");
        a.logout(&ses.token).unwrap();
        assert!(matches!(
            a.authenticate(&ses.token),
            Err(AccountError::Unauthorized)
        ));
    }

    #[tokio::test]
    async fn wrong_password_and_unknown_user_are_the_same_error() {
        let (_d, a) = store(true);
        a.register(s("bob"), s("right"), None).await.unwrap();
        assert!(matches!(
            a.login(s("bob"), s("wrong"), None).await,
            Err(AccountError::BadCredentials)
        ));
        assert!(matches!(
            a.login(s("nobody"), s("wrong"), None).await,
            Err(AccountError::BadCredentials)
        ));
    }

    #[tokio::test]
    async fn tokens_are_stored_hashed() {
        let (_d, a) = store(true);
        let ses = a
            .register_and_login(s("carol"), s("pw"), None)
            .await
            .unwrap();
        let stored: Vec<u8> = a
            .db()
            .query_row("SELECT token_hash FROM sessions", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, ses.token.as_bytes());
        assert_eq!(stored, token_hash(&ses.token));
        let phc: String = a
            .db()
            .query_row("SELECT password FROM users", [], |r| r.get(0))
            .unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
    }

    #[tokio::test]
    async fn expired_tokens_are_refused() {
        let (_d, a) = store_with(Settings {
            session_ttl: Duration::ZERO,
            ..Settings::default()
        });
        a.register(s("dan"), s("pw"), None).await.unwrap();
        let ses = a.login(s("dan"), s("pw"), None).await.unwrap();
        assert!(matches!(
            a.authenticate(&ses.token),
            Err(AccountError::Unauthorized)
        ));
        assert_eq!(a.sweep().unwrap(), 1);
    }

    #[tokio::test]
    async fn login_attempts_are_limited_per_address_and_per_account_and_address() {
        let (_d, a) = store_with(Settings {
            login_per_address: 5,
            login_per_account: 3,
            login_window: Duration::from_secs(3600),
            ..Settings::default()
        });
        a.register(s("eve"), s("pw"), None).await.unwrap();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "10.1.2.4".parse().unwrap();
        // A success gives its attempt back, however many there are.
        for _ in 0..10 {
            a.login(s("eve"), s("pw"), Some(ip)).await.unwrap();
        }
        for _ in 0..3 {
            let r = a.login(s("eve"), s("bad"), Some(ip)).await;
            assert!(matches!(r, Err(AccountError::BadCredentials)), "{r:?}");
        }
        // 3 per (account, address): even the right password waits now ...
        let r = a.login(s("eve"), s("pw"), Some(ip)).await;
        assert!(
            matches!(r, Err(AccountError::RateLimited { limit: 3, .. })),
            "{r:?}"
        );
        // ... but not from another address.
        a.login(s("eve"), s("pw"), Some(other)).await.unwrap();
        // 5 per address over all accounts: 2 more names, then none.
        for name in ["x1", "x2"] {
            let r = a.login(s(name), s("bad"), Some(ip)).await;
            assert!(matches!(r, Err(AccountError::BadCredentials)), "{r:?}");
        }
        let r = a.login(s("x3"), s("bad"), Some(ip)).await;
        match r {
            Err(AccountError::RateLimited {
                limit: 5,
                retry_after,
                ..
            }) => assert!(retry_after > Duration::from_secs(600), "{retry_after:?}"),
            r => panic!("{r:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crowd_of_right_passwords_waits_for_the_attempts_ahead_but_guesses_get_3_checks() {
        let (_d, a) = store_with(Settings {
            login_per_address: 3,
            login_per_account: 3,
            login_window: Duration::from_secs(3600),
            ..Settings::default()
        });
        a.register(s("joe"), s("pw"), None).await.unwrap();
        let ip: IpAddr = "10.3.3.3".parse().unwrap();
        let crowd = |password: &'static str| {
            let tasks: Vec<_> = (0..10)
                .map(|_| {
                    let a = a.clone();
                    tokio::spawn(async move { a.login(s("joe"), s(password), Some(ip)).await })
                })
                .collect();
            async move {
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap());
                }
                out
            }
        };
        // 10 at once, 3 in each bucket: the others wait for the successes.
        let logins = crowd("pw").await;
        assert!(logins.iter().all(Result::is_ok), "{logins:?}");
        // 10 guesses at once: 3 checked, the waiters refused after them.
        let guesses = crowd("bad").await;
        let checked = guesses
            .iter()
            .filter(|r| matches!(r, Err(AccountError::BadCredentials)))
            .count();
        let refused = guesses
            .iter()
            .filter(|r| matches!(r, Err(AccountError::RateLimited { .. })))
            .count();
        assert_eq!((checked, refused), (3, 7), "{guesses:?}");
    }

    #[test]
    fn the_limiter_forgets_the_idlest_buckets_beyond_its_cap() {
        let settings = Settings {
            login_per_address: 2,
            login_window: Duration::from_secs(3600),
            ..Settings::default()
        };
        let limiter = MemoryLimiter::new(&settings, 64);
        let key = |i: usize| Key {
            kind: Kind::LoginAddress,
            id: format!("10.0.{}.{}", i / 256, i % 256),
        };
        for _ in 0..2 {
            limiter.take(&[key(0)]).unwrap();
            limiter.settle(&[key(0)], false);
        }
        assert!(matches!(limiter.take(&[key(0)]), Err(Denied::Empty(..))));
        for i in 1..10_000 {
            limiter.take(&[key(i)]).unwrap();
            limiter.settle(&[key(i)], false);
            assert!(limiter.len() <= 64, "{} buckets", limiter.len());
        }
        // The oldest was forgotten, so its address starts afresh.
        assert!(limiter.take(&[key(0)]).is_ok());
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(Some(a)), address_key(Some(b)));
        assert_ne!(address_key(Some(a)), address_key(Some(c)));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(address_key(Some(mapped)), "10.0.0.1");
    }

    #[tokio::test]
    async fn registrations_are_limited_per_address() {
        let (_d, a) = store_with(Settings {
            register_per_address: 2,
            ..Settings::default()
        });
        let ip: IpAddr = "10.9.9.9".parse().unwrap();
        a.register(s("r1"), s("pw"), Some(ip)).await.unwrap();
        // A taken name costs nothing.
        let r = a.register(s("R1"), s("pw"), Some(ip)).await;
        assert!(matches!(r, Err(AccountError::Exists(_))), "{r:?}");
        a.register(s("r2"), s("pw"), Some(ip)).await.unwrap();
        let r = a.register(s("r3"), s("pw"), Some(ip)).await;
        assert!(
            matches!(r, Err(AccountError::RateLimited { limit: 2, .. })),
            "{r:?}"
        );
        // Local administration (no address) is not limited.
        a.register(s("r3"), s("pw"), None).await.unwrap();
    }

    #[tokio::test]
    async fn registration_can_be_closed_but_admin_can_add() {
        let (_d, a) = store(false);
        assert!(matches!(
            a.register(s("fay"), s("pw"), None).await,
            Err(AccountError::RegistrationClosed)
        ));
        a.add_user("fay", "pw").unwrap();
        a.login(s("fay"), s("pw"), None).await.unwrap();
    }

    #[tokio::test]
    async fn password_change_revokes_sessions_and_permissions_stick() {
        let (_d, a) = store(true);
        a.register(s("gus"), s("old"), None).await.unwrap();
        let ses = a.login(s("gus"), s("old"), None).await.unwrap();
        a.set_password("gus", "new").unwrap();
        assert!(a.authenticate(&ses.token).is_err());
        a.login(s("gus"), s("new"), None).await.unwrap();
        let u = a.set_permission("GUS", "exec", true).unwrap();
        assert!(u.permissions.contains("exec"));
        let ses = a.login(s("gus"), s("new"), None).await.unwrap();
        assert!(a
            .authenticate(&ses.token)
            .unwrap()
            .permissions
            .contains("exec"));
        assert!(a.set_permission("nobody", "exec", true).is_err());
    }

    #[tokio::test]
    async fn grants_hear_of_revocations_here_and_in_other_processes() {
        let (dir, a) = store(true);
        a.register(s("ida"), s("pw"), None).await.unwrap();
        let one = a.login(s("ida"), s("pw"), None).await.unwrap();
        let two = a.login(s("ida"), s("pw"), None).await.unwrap();
        let mut g1 = a.grant(one.token.clone()).await.unwrap();
        let mut g2 = a.grant(two.token.clone()).await.unwrap();
        a.recheck(&mut g1).await.unwrap();
        // Logging one session out wakes both; only that one fails.
        a.logout(&one.token).unwrap();
        tokio::time::timeout(Duration::from_secs(1), g2.revoked())
            .await
            .unwrap();
        a.recheck(&mut g2).await.unwrap();
        assert!(matches!(
            a.recheck(&mut g1).await,
            Err(AccountError::Unauthorized)
        ));
        // Another process (the admin command) opens the database itself.
        let admin = Accounts::open(dir.path(), Settings::default()).unwrap();
        admin.set_password("ida", "new").unwrap();
        tokio::time::timeout(REVOCATION_POLL * 3, g2.revoked())
            .await
            .expect("the poll passes the revocation on");
        assert!(matches!(
            a.recheck(&mut g2).await,
            Err(AccountError::Unauthorized)
        ));
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let a = Accounts::open(dir.path(), Settings::default()).unwrap();
            a.register(s("hal"), s("pw"), None).await.unwrap();
        }
        let a = Accounts::open(dir.path(), Settings::default()).unwrap();
        a.login(s("hal"), s("pw"), None).await.unwrap();
        let v: usize = a
            .db()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len());
    }
}

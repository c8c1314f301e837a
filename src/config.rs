//! `sockit.toml`: the optional configuration file of `sockit serve`.
//!
//! Every key has a default, so an empty file (or none) is a valid
//! configuration; unknown keys are refused so that a typo is not silently
//! ignored. Command-line flags override the file. Each key is documented in
//! `docs/config.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{accounts, chat, echo, exec, framed, proto, server, store, web};

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid configuration in {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where sockit keeps its state (accounts, files, logs).
    pub data_dir: PathBuf,
    /// PEM certificate chain for TLS (framed and web ports); empty uses a
    /// self-signed certificate made on first start in `<data_dir>/tls/`.
    /// Reloaded on SIGHUP.
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert`.
    pub tls_key: PathBuf,
    /// Limits shared by every TCP service.
    pub limits: LimitsConfig,
    /// The echo service.
    pub echo: EchoConfig,
    /// The framed-protocol port.
    pub framed: FramedConfig,
    /// Accounts and sessions.
    pub accounts: AccountsConfig,
    /// The file store.
    pub files: FilesConfig,
    /// The web port: static site, browser app and HTTP API.
    pub web: WebConfig,
    /// Remote commands for administrators (off by default).
    pub exec: ExecConfig,
    /// Host and server statistics.
    pub stats: StatsConfig,
    /// The chat relay.
    pub chat: ChatConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("sockit-data"),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            limits: LimitsConfig::default(),
            echo: EchoConfig::default(),
            framed: FramedConfig::default(),
            accounts: AccountsConfig::default(),
            files: FilesConfig::default(),
            web: WebConfig::default(),
            exec: ExecConfig::default(),
            stats: StatsConfig::default(),
            chat: ChatConfig::default(),
        }
    }
}

/// `[chat]`: the chat relay (framed port and `/api/chat`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Run the chat relay.
    pub enabled: bool,
    /// Longest message text, in bytes.
    pub max_message: usize,
    /// Messages each room keeps (and direct-message conversations, once
    /// delivered).
    pub history: usize,
    /// Bytes queued per subscribed connection before it counts as full;
    /// four times this closes it at once.
    pub queue_bytes: usize,
    /// How long a connection's queue may stay full before it is closed.
    #[serde(with = "human_duration")]
    pub slow_timeout: Duration,
    /// Messages per second per user; 0 turns the limit off.
    pub rate: f64,
    /// Messages a user may send at once above `rate`.
    pub burst: u32,
    /// Rooms one user may be a member of.
    pub max_rooms: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        let d = chat::Settings::default();
        ChatConfig {
            enabled: true,
            max_message: d.max_message,
            history: d.history,
            queue_bytes: d.queue_bytes,
            slow_timeout: d.slow_timeout,
            rate: d.rate,
            burst: d.burst,
            max_rooms: d.max_rooms,
        }
    }
}

impl ChatConfig {
    /// The relay's settings.
    pub fn to_settings(&self) -> chat::Settings {
        chat::Settings {
            max_message: self.max_message.clamp(1, 1 << 20),
            history: self.history,
            queue_bytes: self.queue_bytes.max(1024),
            slow_timeout: self.slow_timeout,
            rate: self.rate.max(0.0),
            burst: self.burst,
            max_rooms: self.max_rooms,
        }
    }
}

/// `[exec]`: remote commands (`sockit exec`), for users with the `exec`
/// permission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecConfig {
    /// Offer remote commands at all.
    pub enabled: bool,
    /// Programs that may be run: bare names (looked up in `path` at start)
    /// or absolute paths.
    pub allow: Vec<String>,
    /// `PATH` of the programs run, and where `allow`'s names are looked up.
    pub path: String,
    /// `LANG` of the programs run.
    pub lang: String,
    /// Further environment variables of the programs run.
    pub env: std::collections::BTreeMap<String, String>,
    /// Working directory of the programs run.
    pub workdir: PathBuf,
    /// Time limit of one run.
    #[serde(with = "human_duration")]
    pub timeout: Duration,
    /// Limit on a run's stdout and stderr together, in bytes.
    pub max_output: u64,
    /// Runs at once; more are refused with `busy`.
    pub max_running: usize,
    /// `RLIMIT_NPROC` of the programs run; 0 leaves the server's own.
    pub max_processes: u64,
    /// `RLIMIT_AS` of the programs run, bytes; 0 leaves the server's own.
    pub max_memory: u64,
    /// Run the programs as this user; empty: the server's user.
    pub user: String,
}

impl Default for ExecConfig {
    fn default() -> Self {
        let d = exec::Settings::default();
        ExecConfig {
            enabled: false,
            allow: d.allow,
            path: d.path,
            lang: d.lang,
            env: d.env,
            workdir: d.workdir,
            timeout: d.timeout,
            max_output: d.max_output,
            max_running: d.max_running,
            max_processes: d.max_processes,
            max_memory: d.max_memory,
            user: d.user,
        }
    }
}

impl ExecConfig {
    /// The exec service's settings.
    pub fn to_settings(&self) -> exec::Settings {
        exec::Settings {
            allow: self.allow.clone(),
            path: self.path.clone(),
            lang: self.lang.clone(),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            timeout: self.timeout,
            max_output: self.max_output,
            max_running: self.max_running,
            max_processes: self.max_processes,
            max_memory: self.max_memory,
            user: self.user.clone(),
        }
    }
}

/// `[stats]`: host and server statistics (`sockit stats`, `/api/stats`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    /// Offer statistics at all.
    pub enabled: bool,
    /// Only users with the `admin` permission may read them.
    pub admins_only: bool,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            enabled: true,
            admins_only: false,
        }
    }
}

/// `[web]`: the web port of `sockit serve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Run the web port at all.
    pub enabled: bool,
    /// Address to listen on.
    pub bind: String,
    /// The static site's folder; empty means `<data_dir>/public`.
    pub root: PathBuf,
    /// Show listings of folders without `index.html`.
    pub list: bool,
    /// Serve dot-files.
    pub hidden: bool,
    /// Follow symlinks that lead out of the site's folder.
    pub follow_symlinks: bool,
    /// `Cache-Control` of the site's files; empty sends none.
    pub cache_control: String,
    /// Compress text on the fly for clients that accept it.
    pub compress: bool,
    /// `Content-Security-Policy` of the static site.
    pub csp: String,
    /// Serve the browser app at `/app/` and the API at `/api/`.
    pub app: bool,
    /// Time a client has to send a request's headers.
    #[serde(with = "human_duration")]
    pub header_timeout: Duration,
    /// Largest request header block, in bytes.
    pub max_header_bytes: usize,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with the server's certificate
    /// (`tls_cert`, or the self-signed one); plain HTTP requests get a
    /// redirect.
    pub tls: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        let site = web::site::SiteOptions::new("");
        WebConfig {
            enabled: true,
            bind: web::DEFAULT_WEB_ADDR.into(),
            root: PathBuf::new(),
            list: site.list,
            hidden: site.hidden,
            follow_symlinks: site.follow_symlinks,
            cache_control: site.cache_control.unwrap_or_default(),
            compress: site.compress,
            csp: web::DEFAULT_CSP.into(),
            app: true,
            header_timeout: web::DEFAULT_HEADER_TIMEOUT,
            max_header_bytes: web::DEFAULT_MAX_HEADER_BYTES,
            tls: false,
        }
    }
}

impl WebConfig {
    /// The site's options, its folder resolved against `data_dir`.
    pub fn site_options(&self, data_dir: &Path) -> web::site::SiteOptions {
        let root = if self.root.as_os_str().is_empty() {
            data_dir.join("public")
        } else {
            self.root.clone()
        };
        let mut o = web::site::SiteOptions::new(root);
        o.list = self.list;
        o.hidden = self.hidden;
        o.follow_symlinks = self.follow_symlinks;
        o.cache_control = (!self.cache_control.is_empty()).then(|| self.cache_control.clone());
        o.compress = self.compress;
        o
    }

    /// The port's settings.
    pub fn to_settings(&self) -> web::Settings {
        web::Settings {
            header_timeout: self.header_timeout,
            max_header_bytes: self.max_header_bytes,
            csp: self.csp.clone(),
            tls: self.tls,
            ..web::Settings::default()
        }
    }
}

/// `[accounts]`: users and sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    /// Whether anyone who can connect may register.
    pub allow_register: bool,
    /// How long a login stays valid.
    #[serde(with = "human_duration")]
    pub session_ttl: Duration,
    /// Login attempts checked per client address per `login_window`, over
    /// all accounts (0: no limit).
    pub login_per_address: u32,
    /// Login attempts checked per account and client address per
    /// `login_window` (0: no limit).
    pub login_per_account: u32,
    /// Window over which the login limits refill.
    #[serde(with = "human_duration")]
    pub login_window: Duration,
    /// Registrations per client address per `register_window` (0: no limit).
    pub register_per_address: u32,
    /// Window over which the registration limit refills.
    #[serde(with = "human_duration")]
    pub register_window: Duration,
    /// Password hashes computed at once (0: half the cores, at least one).
    pub hash_slots: usize,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        let d = accounts::Settings::default();
        AccountsConfig {
            allow_register: d.allow_register,
            session_ttl: d.session_ttl,
            login_per_address: d.login_per_address,
            login_per_account: d.login_per_account,
            login_window: d.login_window,
            register_per_address: d.register_per_address,
            register_window: d.register_window,
            hash_slots: d.hash_slots,
        }
    }
}

impl AccountsConfig {
    /// The accounts store's settings.
    pub fn to_settings(&self) -> accounts::Settings {
        accounts::Settings {
            allow_register: self.allow_register,
            session_ttl: self.session_ttl,
            login_per_address: self.login_per_address,
            login_per_account: self.login_per_account,
            login_window: self.login_window,
            register_per_address: self.register_per_address,
            register_window: self.register_window,
            hash_slots: self.hash_slots,
        }
    }
}

/// `[files]`: the file store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Run the file service.
    pub enabled: bool,
    /// Bytes each user may store; 0 is unlimited.
    pub quota: u64,
    /// Largest single file in bytes; 0 is unlimited.
    pub max_file_size: u64,
    /// Abandoned partial uploads older than this are removed.
    #[serde(with = "human_duration")]
    pub partial_ttl: Duration,
    /// Free space uploads must leave on the data disk: `"5%"` or bytes.
    pub min_free: String,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            enabled: true,
            quota: 0,
            max_file_size: 0,
            partial_ttl: store::DEFAULT_PARTIAL_TTL,
            min_free: store::DEFAULT_MIN_FREE.to_string(),
        }
    }
}

impl FilesConfig {
    /// The store's settings.
    pub fn to_settings(&self) -> store::Settings {
        store::Settings {
            quota: (self.quota > 0).then_some(self.quota),
            max_file_size: (self.max_file_size > 0).then_some(self.max_file_size),
            partial_ttl: self.partial_ttl,
            // Checked by `Config::parse`; a value set in code that does not
            // parse keeps the default.
            min_free: store::FreeFloor::parse(&self.min_free).unwrap_or(store::DEFAULT_MIN_FREE),
        }
    }
}

/// `[limits]`: connection limits of every TCP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections served at once per listener; more are refused. Capped
    /// at start to what the open-files limit leaves each listener.
    pub max_connections: usize,
    /// Connections served at once per listener from one source address
    /// (an IPv6 /64 counts as one); more from it are refused.
    pub max_connections_per_address: usize,
    /// A message body (framed) must bring at least `body_progress_bytes`
    /// within each `body_progress_timeout`, or the connection is cut.
    pub body_progress_bytes: usize,
    /// See `body_progress_bytes`.
    #[serde(with = "human_duration")]
    pub body_progress_timeout: Duration,
    /// Close a connection after this long without traffic ("5m", "30s").
    #[serde(with = "human_duration")]
    pub idle_timeout: Duration,
    /// On SIGINT/SIGTERM, how long open connections get to finish.
    #[serde(with = "human_duration")]
    pub shutdown_grace: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = server::Limits::default();
        let p = proto::Limits::default();
        LimitsConfig {
            max_connections: d.max_connections,
            max_connections_per_address: d.max_per_address,
            body_progress_bytes: p.body_progress_bytes,
            body_progress_timeout: p.body_progress_timeout,
            idle_timeout: d.idle_timeout,
            shutdown_grace: d.shutdown_grace,
        }
    }
}

impl LimitsConfig {
    /// The runtime's view of these limits.
    pub fn to_limits(&self) -> server::Limits {
        server::Limits {
            max_connections: self.max_connections,
            max_per_address: self.max_connections_per_address,
            idle_timeout: self.idle_timeout,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

/// `[echo]`: the echo service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EchoConfig {
    /// Run the echo service at all.
    pub enabled: bool,
    /// Address for both TCP and UDP.
    pub bind: String,
    /// `echo`, `upper` or `hello`.
    pub mode: echo::Mode,
    /// Serve TCP.
    pub tcp: bool,
    /// Serve UDP.
    pub udp: bool,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            enabled: true,
            bind: echo::DEFAULT_ECHO_ADDR.into(),
            mode: echo::Mode::Echo,
            tcp: true,
            udp: true,
        }
    }
}

/// `[framed]`: the framed-protocol port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FramedConfig {
    /// Run the framed port at all.
    pub enabled: bool,
    /// Address to listen on.
    pub bind: String,
    /// Largest header length accepted, in bytes.
    pub max_header: usize,
    /// Largest body `size` accepted, in bytes.
    pub max_body: u64,
    /// Time a new connection has to send `hello` (and, with TLS, to
    /// complete the TLS handshake).
    #[serde(with = "human_duration")]
    pub handshake_timeout: Duration,
    /// Speak TLS. `false` serves plain TCP (for the exercises' Python
    /// clients), on a loopback address only unless `plain_on_network`.
    pub tls: bool,
    /// Allow `tls = false` on an address other than loopback: passwords,
    /// tokens and files then cross the network readable by anyone on it.
    pub plain_on_network: bool,
}

impl Default for FramedConfig {
    fn default() -> Self {
        FramedConfig {
            enabled: true,
            bind: framed::DEFAULT_FRAMED_ADDR.into(),
            max_header: proto::codec::DEFAULT_MAX_HEADER,
            max_body: proto::codec::DEFAULT_MAX_BODY,
            handshake_timeout: framed::DEFAULT_HANDSHAKE_TIMEOUT,
            tls: true,
            plain_on_network: false,
        }
    }
}

impl FramedConfig {
    /// The framed port's settings.
    pub fn to_settings(&self) -> framed::Settings {
        framed::Settings {
            limits: proto::Limits {
                max_header: self.max_header,
                max_body: self.max_body,
                ..proto::Limits::default()
            },
            handshake_timeout: self.handshake_timeout,
        }
    }
}

impl Config {
    /// The web port's settings, with the body progress of `[limits]`.
    pub fn web_settings(&self) -> web::Settings {
        web::Settings {
            body_progress_bytes: self.limits.body_progress_bytes,
            body_progress_timeout: self.limits.body_progress_timeout,
            ..self.web.to_settings()
        }
    }

    /// The framed port's settings, with the body progress of `[limits]`.
    pub fn framed_settings(&self) -> framed::Settings {
        let mut s = self.framed.to_settings();
        s.limits.body_progress_bytes = self.limits.body_progress_bytes;
        s.limits.body_progress_timeout = self.limits.body_progress_timeout;
        s
    }

    /// Where the TLS certificate comes from.
    pub fn cert_source(&self) -> crate::tls::CertSource {
        fn set(p: &Path) -> Option<&Path> {
            (!p.as_os_str().is_empty()).then_some(p)
        }
        crate::tls::CertSource::new(&self.data_dir, set(&self.tls_cert), set(&self.tls_key))
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.message().to_string())?;
        if config.limits.max_connections == 0 {
            return Err("limits.max_connections must be at least 1".into());
        }
        if config.limits.max_connections_per_address == 0 {
            return Err("limits.max_connections_per_address must be at least 1".into());
        }
        if config.limits.body_progress_timeout.is_zero() {
            return Err("limits.body_progress_timeout must be more than 0".into());
        }
        if config.web.max_header_bytes < 1024 {
            return Err("web.max_header_bytes must be at least 1024".into());
        }
        if http::HeaderValue::from_str(&config.web.csp).is_err() {
            return Err("web.csp must be a valid header value".into());
        }
        if config.framed.max_header == 0 || config.framed.max_header > u32::MAX as usize {
            return Err("framed.max_header must be between 1 and 4294967295".into());
        }
        if config.tls_cert.as_os_str().is_empty() != config.tls_key.as_os_str().is_empty() {
            return Err("tls_cert and tls_key go together: set both or neither".into());
        }
        if config.exec.timeout.is_zero() {
            return Err("exec.timeout must be more than 0".into());
        }
        store::FreeFloor::parse(&config.files.min_free)
            .map_err(|e| format!("files.min_free: {e}"))?;
        if config.exec.max_running == 0 {
            return Err("exec.max_running must be at least 1".into());
        }
        Ok(config)
    }
}

/// Durations written as "5m", "30s", "1h 30m".
pub mod human_duration {
    use super::*;

    /// Serialises as humantime text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Parses humantime text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.echo.bind, "127.0.0.1:7007");
        assert_eq!(c.framed.bind, "127.0.0.1:7070");
        assert_eq!(c.limits.max_connections, 10_000);
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn keys_are_read() {
        let c = Config::parse(
            "data_dir = \"/tmp/x\"\n[limits]\nidle_timeout = \"30s\"\nmax_connections = 5\n\
             [echo]\nmode = \"upper\"\nudp = false\n[framed]\nmax_header = 1024\n",
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.limits.max_connections, 5);
        assert_eq!(c.echo.mode, echo::Mode::Upper);
        assert!(!c.echo.udp);
        assert_eq!(c.framed.max_header, 1024);
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        assert!(Config::parse("[echo]\nbnid = \"x\"")
            .unwrap_err()
            .contains("bnid"));
        assert!(Config::parse("[limits]\nidle_timeout = \"soon\"").is_err());
        assert!(Config::parse("[echo]\nmode = \"shout\"").is_err());
        assert!(Config::parse("[limits]\nmax_connections = 0").is_err());
    }

    #[test]
    fn the_free_space_floor_is_5_percent_or_what_is_set() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.files.to_settings().min_free, store::FreeFloor::Percent(5));
        let c = Config::parse("[files]\nmin_free = \"268435456\"").unwrap();
        assert_eq!(
            c.files.to_settings().min_free,
            store::FreeFloor::Bytes(256 << 20)
        );
        let e = Config::parse("[files]\nmin_free = \"lots\"").unwrap_err();
        assert!(e.contains("files.min_free"), "{e}");
    }

    #[test]
    fn exec_is_off_by_default_and_its_keys_are_read() {
        let c = Config::parse("").unwrap();
        assert!(!c.exec.enabled);
        assert!(c.exec.allow.is_empty());
        assert_eq!(c.exec.timeout, Duration::from_secs(60));
        assert_eq!(c.exec.max_output, 64 * 1024 * 1024);
        assert!(c.stats.enabled && !c.stats.admins_only);
        let c = Config::parse(
            "[exec]\nenabled = true\nallow = [\"cat\", \"/bin/sh\"]\ntimeout = \"5s\"\n\
             workdir = \"/tmp\"\n[exec.env]\nTZ = \"UTC\"\n[stats]\nadmins_only = true\n",
        )
        .unwrap();
        assert!(c.exec.enabled);
        assert_eq!(c.exec.allow, ["cat", "/bin/sh"]);
        assert_eq!(c.exec.timeout, Duration::from_secs(5));
        assert_eq!(c.exec.env.get("TZ").map(String::as_str), Some("UTC"));
        assert!(c.stats.admins_only);
        assert!(Config::parse("[exec]\nallwo = []").is_err());
        assert!(Config::parse("[exec]\ntimeout = \"0s\"").is_err());
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = toml::to_string(&Config::default()).unwrap();
        let back = Config::parse(&text).unwrap();
        assert_eq!(back.framed.max_body, Config::default().framed.max_body);
    }
}

//! `sockit serve`: binds every enabled service from a [`Config`] and runs them
//! together until shutdown.
//!
//! Binding happens first, all at once, so a taken port is reported before any
//! service starts; [`Bound`] then exposes the real addresses (port 0 resolved)
//! for tests and logs.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::time::Duration;

use tracing::{info, warn};

use crate::accounts::Accounts;
use crate::config::Config;
use crate::framed::{FramedHandler, Services};
use crate::store::Store;
use crate::tls::ServerTls;
use crate::web::{self, HttpHandler, Web};
use crate::{echo, server};

/// Errors starting the services.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("{service}: {source}")]
    Bind {
        service: &'static str,
        source: std::io::Error,
    },
    /// The chat database could not be opened.
    #[error("cannot start the chat relay: {0}")]
    Chat(#[from] crate::chat::ChatError),
    /// The accounts database could not be opened.
    #[error("cannot open the accounts database: {0}")]
    Accounts(#[from] crate::accounts::AccountError),
    /// The file store could not be opened.
    #[error("cannot open the file store: {0}")]
    Store(std::io::Error),
    /// The web port's site folder could not be opened.
    #[error("web: {0}")]
    Site(std::io::Error),
    /// The exec service's settings are unusable (allowlist, workdir, audit log).
    #[error("exec: {0}")]
    Exec(#[from] crate::exec::ExecSetupError),
    /// The TLS certificate could not be made or loaded.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Plain TCP was asked for on a network address.
    #[error("framed: tls = false on {0}, which is not a loopback address: passwords, tokens and files would cross the network readable by anyone on the path. Bind to 127.0.0.1, or set framed.plain_on_network = true if the network is trusted")]
    PlainOnNetwork(SocketAddr),
    /// The data directory could not be created. (Not named `source`: the
    /// message says it already, and a `source()` would print it twice.)
    #[error("cannot create data directory {}: {}", path.display(), crate::words::io(error))]
    DataDir {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
}

/// Every listener of an enabled service, bound and not yet serving.
#[derive(Debug)]
pub struct Bound {
    config: Config,
    echo_tcp: Option<TcpListener>,
    echo_udp: Option<UdpSocket>,
    framed: Option<TcpListener>,
    web: Option<(TcpListener, Web)>,
    services: Services,
    /// Each service's live counters, read by the stats service.
    metrics: server::Metrics,
    /// The certificate, when a port speaks TLS.
    tls: Option<ServerTls>,
    /// The framed port's TLS configuration (`framed.tls`).
    framed_tls: Option<Arc<rustls::ServerConfig>>,
    /// The web port's TLS configuration (`web.tls`): HTTP/2 and HTTP/1.1.
    web_tls: Option<Arc<rustls::ServerConfig>>,
}

fn bind_err(service: &'static str) -> impl FnOnce(std::io::Error) -> ServeError {
    move |source| ServeError::Bind { service, source }
}

/// Creates the data directory and binds every enabled service.
pub async fn bind(config: Config) -> Result<Bound, ServeError> {
    hide_environment();
    crate::store::mode::create_private_dir_all(&config.data_dir).map_err(|error| {
        ServeError::DataDir {
            path: config.data_dir.clone(),
            error,
        }
    })?;
    if crate::store::mode::open_to_others(&config.data_dir).unwrap_or(false) {
        warn!(
            path = %config.data_dir.display(),
            "the data folder may be read by other users of this machine (accounts, messages, files): chmod 700 it"
        );
    }
    let web_app = config.web.enabled && config.web.app;
    let metrics = server::Metrics::default();
    let services = if config.framed.enabled || web_app {
        let accounts = Accounts::open(&config.data_dir, config.accounts.to_settings())?;
        let store = if config.files.enabled {
            Some(
                Store::open(&config.data_dir, config.files.to_settings())
                    .map_err(ServeError::Store)?,
            )
        } else {
            None
        };
        let exec = match config.exec.enabled {
            true => Some(crate::exec::Exec::new(
                config.exec.to_settings(),
                &config.data_dir,
            )?),
            false => None,
        };
        let stats = config
            .stats
            .enabled
            .then(|| crate::stats::Stats::new(metrics.clone(), config.stats.admins_only));
        let chat = match config.chat.enabled {
            true => {
                let db = crate::chat::db::ChatDb::open(&config.data_dir)?;
                Some(crate::chat::Relay::start(db, config.chat.to_settings())?)
            }
            false => None,
        };
        Services {
            accounts: Some(accounts),
            store,
            exec,
            stats,
            chat,
        }
    } else {
        Services::default()
    };
    let wants_tls =
        (config.framed.enabled && config.framed.tls) || (config.web.enabled && config.web.tls);
    let tls = match wants_tls {
        true => {
            let tls = ServerTls::load_or_create(config.cert_source())?;
            info!(fingerprint = %tls.fingerprint(), "TLS certificate");
            Some(tls)
        }
        false => None,
    };
    // Built now, so a port that asked for TLS never starts without it.
    let (framed_tls, web_tls) = match &tls {
        Some(t) => (
            (config.framed.enabled && config.framed.tls)
                .then(|| t.config(&[]))
                .transpose()?,
            (config.web.enabled && config.web.tls)
                .then(|| t.config(crate::tls::server::WEB_ALPN))
                .transpose()?,
        ),
        None => (None, None),
    };
    let mut bound = Bound {
        echo_tcp: None,
        echo_udp: None,
        framed: None,
        web: None,
        config,
        services,
        metrics,
        tls,
        framed_tls,
        web_tls,
    };
    let c = &bound.config;
    if c.echo.enabled && c.echo.tcp {
        bound.echo_tcp = Some(
            server::bind_tcp(&c.echo.bind)
                .await
                .map_err(bind_err("echo"))?,
        );
    }
    if c.echo.enabled && c.echo.udp {
        // With port 0, UDP takes the port TCP got, so both share one number.
        let addr = match &bound.echo_tcp {
            Some(l) => l.local_addr().map_err(bind_err("echo"))?.to_string(),
            None => c.echo.bind.clone(),
        };
        bound.echo_udp = Some(server::bind_udp(&addr).await.map_err(bind_err("echo"))?);
    }
    if c.framed.enabled {
        let listener = server::bind_tcp(&c.framed.bind)
            .await
            .map_err(bind_err("framed"))?;
        let addr = listener.local_addr().map_err(bind_err("framed"))?;
        if !c.framed.tls && !c.framed.plain_on_network && !addr.ip().is_loopback() {
            return Err(ServeError::PlainOnNetwork(addr));
        }
        bound.framed = Some(listener);
    }
    if c.web.enabled {
        let listener = server::bind_tcp(&c.web.bind)
            .await
            .map_err(bind_err("web"))?;
        let options = c.web.site_options(&c.data_dir);
        if c.web.root.as_os_str().is_empty() {
            create_default_site(&options.root).map_err(ServeError::Site)?;
        }
        let site = web::site::Site::open(options).map_err(ServeError::Site)?;
        let api = match (&bound.services.accounts, web_app) {
            (Some(accounts), true) => Some(web::api::Api {
                accounts: accounts.clone(),
                store: bound.services.store.clone(),
                stats: bound.services.stats.clone(),
                chat: bound.services.chat.clone(),
            }),
            _ => None,
        };
        let w = Web::new(c.web_settings(), Some(site), api);
        bound.web = Some((listener, w));
    }
    Ok(bound)
}

/// Makes this process undumpable, so that no other process of its user
/// (a program run by exec among them) can read its memory or its
/// `/proc/<pid>/environ`, where secrets given to the server live.
fn hide_environment() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments only; changes a flag of this process.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            warn!(
                "cannot make the server undumpable: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The page `<data>/public/index.html` starts with, when the folder is new.
const WELCOME_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>sockit</title></head><body><h1>sockit is running</h1>\
<p>This page is <code>public/index.html</code> in the data folder: replace it with your site.</p>\
<p>Your files are in the <a href=\"/app/\">file store</a>.</p></body></html>\n";

/// Creates the default site folder with a welcome page the first time.
fn create_default_site(root: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .mode(crate::store::mode::DIR_MODE)
        .create(root)
    {
        Ok(()) => std::io::Write::write_all(
            &mut crate::store::mode::private_file()
                .write(true)
                .open(root.join("index.html"))?,
            WELCOME_PAGE.as_bytes(),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl Bound {
    /// The echo service's TCP address, if it runs.
    pub fn echo_tcp_addr(&self) -> Option<SocketAddr> {
        self.echo_tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The echo service's UDP address, if it runs.
    pub fn echo_udp_addr(&self) -> Option<SocketAddr> {
        self.echo_udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The framed port's address, if it runs.
    pub fn framed_addr(&self) -> Option<SocketAddr> {
        self.framed.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The TLS certificate's fingerprint, when a port speaks TLS.
    pub fn tls_fingerprint(&self) -> Option<String> {
        self.tls.as_ref().map(ServerTls::fingerprint)
    }

    /// The web port's address, if it runs.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until `shutdown` fires and every service has stopped.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut limits = self.config.limits.to_limits();
        let listeners = [
            self.echo_tcp.is_some(),
            self.framed.is_some(),
            self.web.is_some(),
        ]
        .into_iter()
        .filter(|&l| l)
        .count();
        server::fit_to_nofile(&mut limits, listeners);
        let tasks = TaskTracker::new();
        if self.echo_tcp.is_some() || self.echo_udp.is_some() {
            tasks.spawn(echo::run_counted(
                self.echo_tcp,
                self.echo_udp,
                self.config.echo.mode,
                limits,
                shutdown.clone(),
                self.metrics.service("echo"),
            ));
        }
        tasks.spawn(sweep(self.services.clone(), shutdown.clone()));
        if let Some(relay) = self.services.chat.clone() {
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                shutdown.cancelled().await;
                relay.stop();
            });
        }
        if let Some(tls) = self.tls.clone() {
            tasks.spawn(reload_on_hangup(tls, shutdown.clone()));
        }
        if let Some(listener) = self.framed {
            let handler = FramedHandler {
                settings: self.config.framed_settings(),
                services: self.services,
                tls: self.framed_tls,
            };
            tasks.spawn(server::serve_counted(
                "framed",
                listener,
                handler,
                limits,
                shutdown.clone(),
                self.metrics.service("framed"),
            ));
        }
        if let Some((listener, web)) = self.web {
            tasks.spawn(server::serve_counted(
                "web",
                listener,
                HttpHandler {
                    web,
                    tls: self.web_tls,
                },
                limits,
                shutdown.clone(),
                self.metrics.service("web"),
            ));
        }
        tasks.close();
        tasks.wait().await;
    }
}

/// Reads the certificate again on each SIGHUP; established connections
/// keep theirs, new ones get the new one. A failed reload keeps the old.
pub async fn reload_on_hangup(tls: ServerTls, shutdown: CancellationToken) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        warn!("cannot listen for SIGHUP: the certificate will not be reloaded");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hangups.recv() => if got.is_none() { return },
        }
        match tls.reload() {
            Ok(fp) => info!(fingerprint = %fp, "SIGHUP: reloaded the TLS certificate"),
            Err(e) => warn!("SIGHUP: keeping the current TLS certificate: {e}"),
        }
    }
}

/// How often expired sessions and abandoned partial uploads are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Removes expired sessions and stale partial uploads at start and hourly.
async fn sweep(services: Services, shutdown: CancellationToken) {
    loop {
        if let Some(store) = services.store.clone() {
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.sweep_partials()).await {
                warn!("sweeping partial uploads failed: {e}");
            }
        }
        if let Some(accounts) = &services.accounts {
            if let Err(e) = accounts.run(|a| a.sweep()).await {
                warn!("sweeping sessions failed: {e}");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}

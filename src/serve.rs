//! `sockit serve`: binds every enabled service from a [`Config`] and runs them
//! together until shutdown.
//!
//! Binding happens first, all at once, so a taken port is reported before any
//! service starts; [`Bound`] then exposes the real addresses (port 0 resolved)
//! for tests and logs.

use std::net::SocketAddr;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::time::Duration;

use tracing::warn;

use crate::accounts::Accounts;
use crate::config::Config;
use crate::framed::{FramedHandler, Services};
use crate::store::Store;
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
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
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
}

fn bind_err(service: &'static str) -> impl FnOnce(std::io::Error) -> ServeError {
    move |source| ServeError::Bind { service, source }
}

/// Creates the data directory and binds every enabled service.
pub async fn bind(config: Config) -> Result<Bound, ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
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
    let mut bound = Bound {
        echo_tcp: None,
        echo_udp: None,
        framed: None,
        web: None,
        config,
        services,
        metrics,
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
        bound.framed = Some(
            server::bind_tcp(&c.framed.bind)
                .await
                .map_err(bind_err("framed"))?,
        );
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
        let w = Web::new(c.web.to_settings(), Some(site), api);
        bound.web = Some((listener, w));
    }
    Ok(bound)
}

/// The page `<data>/public/index.html` starts with, when the folder is new.
const WELCOME_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>sockit</title></head><body><h1>sockit is running</h1>\
<p>This page is <code>public/index.html</code> in the data folder: replace it with your site.</p>\
<p>Your files are in the <a href=\"/app/\">file store</a>.</p></body></html>\n";

/// Creates the default site folder with a welcome page the first time.
fn create_default_site(root: &std::path::Path) -> std::io::Result<()> {
    match std::fs::create_dir(root) {
        Ok(()) => std::fs::write(root.join("index.html"), WELCOME_PAGE),
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

    /// The web port's address, if it runs.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until `shutdown` fires and every service has stopped.
    pub async fn run(self, shutdown: CancellationToken) {
        let limits = self.config.limits.to_limits();
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
        if let Some(listener) = self.framed {
            let handler = FramedHandler {
                settings: self.config.framed.to_settings(),
                services: self.services,
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
                HttpHandler { web },
                limits,
                shutdown.clone(),
                self.metrics.service("web"),
            ));
        }
        tasks.close();
        tasks.wait().await;
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

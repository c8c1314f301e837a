//! A client's side of TLS: how it decides to trust a server.
//!
//! By default a server is trusted on first use, as ssh does: the first
//! connection shows the certificate's fingerprint and, once accepted (a
//! prompt on a terminal, `--accept-new` in scripts), pins it in the
//! known-servers file of the user's configuration directory. Later
//! connections must present the same certificate; a different one is
//! refused loudly. A certificate that system roots vouch for (a public name
//! with a public certificate) is accepted without pinning, so renewals do
//! not break anything. `--ca FILE` verifies against that CA only (name and
//! dates checked); `--insecure` checks nothing and says so every time.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{describe, fingerprint, provider, Stream, TlsError};
use crate::credentials::write_atomic;

/// Name of the known-servers file in the configuration directory.
pub const KNOWN_SERVERS: &str = "known_servers";

/// How a client reaches a server.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Plain TCP: for servers run with `tls = false` on a trusted path.
    Plain,
    /// TLS, trusting the server as [`Trust`] says.
    Tls(Trust),
}

/// How a TLS client decides that the server is the one it wants.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The check applied to the certificate.
    pub verify: Verify,
    /// Pin an unknown server's certificate without asking (scripts).
    pub accept_new: bool,
    /// Ask on the terminal whether to trust an unknown server.
    pub prompt: bool,
    /// The known-servers file; `None` is the one in the configuration
    /// directory.
    pub known_servers: Option<PathBuf>,
    /// ALPN protocols to offer (none for the framed port).
    pub alpn: Vec<Vec<u8>>,
}

/// The check applied to a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Trust on first use, then the pinned fingerprint (system roots vouch
    /// for public certificates).
    Pin,
    /// Only certificates issued by the CA(s) in this PEM file, for the name
    /// connected to, within their dates.
    Ca(PathBuf),
    /// No check at all.
    Insecure,
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            verify: Verify::Pin,
            accept_new: false,
            prompt: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
            known_servers: None,
            alpn: Vec::new(),
        }
    }
}

impl Default for Transport {
    fn default() -> Self {
        Transport::Tls(Trust::default())
    }
}

/// Why a connection could not be made, each a message for the user.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens there.
    #[error("cannot connect to {server}: connection refused (is `sockit serve` running there?)")]
    Refused { server: String },
    /// The TCP connection was not made in time.
    #[error("cannot connect to {server}: timed out")]
    ConnectTimeout { server: String },
    /// The address does not resolve, or the connection failed otherwise.
    #[error("cannot connect to {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// A TLS client reached a plain port.
    #[error("cannot connect to {server}: the server answered in plain text, not TLS (it runs with `tls = false`); use --no-tls if the network between you is trusted")]
    NotTls { server: String },
    /// The server is not known and the user was not asked.
    #[error("{server} is not a known server; its certificate's fingerprint is\n  {fingerprint}\nCompare it with the server's (`sockit tls fingerprint` on the server, or its log at start), then trust it with\n  sockit tls trust {server} {fingerprint}\nor connect again with --accept-new")]
    Unknown { server: String, fingerprint: String },
    /// The user declined to trust an unknown server.
    #[error("not connecting to {server}: its certificate was not trusted")]
    Declined { server: String },
    /// The certificate differs from the pinned one.
    #[error("{}", changed_message(server, pinned, presented, file))]
    Changed {
        server: String,
        pinned: String,
        presented: String,
        file: PathBuf,
    },
    /// The certificate failed verification (`--ca`, system roots).
    #[error("cannot connect to {server}: {reason}")]
    Untrusted { server: String, reason: String },
    /// The handshake did not finish in time.
    #[error("cannot connect to {server}: the TLS handshake timed out (is this a TLS port?)")]
    HandshakeTimeout { server: String },
    /// The server closed the connection during the handshake.
    #[error("cannot connect to {server}: the server closed the connection during the TLS handshake (it may be at its connection limit; or it is not a TLS port, then use --no-tls)")]
    ClosedInHandshake { server: String },
    /// The handshake failed otherwise.
    #[error("cannot connect to {server}: {reason}")]
    Handshake { server: String, reason: String },
    /// The known-servers file or the CA file is unusable.
    #[error("{0}")]
    Setup(String),
}

impl ConnectError {
    /// Whether trying again later may succeed (the server is down or
    /// restarting), as opposed to a refusal that stays (trust, protocol).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectError::Unreachable { .. }
                | ConnectError::Refused { .. }
                | ConnectError::ConnectTimeout { .. }
                | ConnectError::HandshakeTimeout { .. }
                | ConnectError::ClosedInHandshake { .. }
                | ConnectError::Handshake { .. }
        )
    }
}

fn changed_message(server: &str, pinned: &str, presented: &str, file: &Path) -> String {
    let bar = "@".repeat(64);
    format!(
        "{bar}\n@  WARNING: THE CERTIFICATE OF {server} HAS CHANGED!\n{bar}\n\
         Someone may be intercepting this connection (a man-in-the-middle attack),\n\
         or the server's certificate was replaced. Refusing to connect.\n\
         \x20 pinned:    {pinned}\n\
         \x20 presented: {presented}\n\
         Check the fingerprint on the server: `sockit tls fingerprint --data-dir DIR`\n\
         (or the line it logs at start). If the change is expected, pin the new one:\n\
         \x20 sockit tls forget {server}   (then connect again)\n\
         The pins are in {}",
        file.display()
    )
}

/// The known-servers file: one `HOST:PORT SHA256:...` line per server.
#[derive(Debug, Clone, Default)]
pub struct KnownServers {
    path: PathBuf,
    pins: BTreeMap<String, String>,
}

impl KnownServers {
    /// The default file, in the configuration directory.
    pub fn default_path() -> Result<PathBuf, ConnectError> {
        crate::credentials::config_dir()
            .map(|d| d.join(KNOWN_SERVERS))
            .map_err(|e| ConnectError::Setup(e.to_string()))
    }

    /// Reads the file; a missing file has no pins. Lines that are not
    /// `SERVER FINGERPRINT` are refused, so a damaged file is noticed.
    pub fn load(path: &Path) -> Result<KnownServers, ConnectError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(ConnectError::Setup(format!("{}: {e}", path.display()))),
        };
        let mut pins = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line
                .split_once(char::is_whitespace)
                .and_then(|(s, f)| Some((s, super::parse_fingerprint(f)?)));
            let Some((server, fp)) = parsed else {
                return Err(ConnectError::Setup(format!(
                    "{} line {}: expected `HOST:PORT SHA256:...`; fix or delete the line",
                    path.display(),
                    n + 1
                )));
            };
            pins.insert(server.to_string(), fp);
        }
        Ok(KnownServers {
            path: path.into(),
            pins,
        })
    }

    /// The pinned fingerprint of `server`.
    pub fn get(&self, server: &str) -> Option<&str> {
        self.pins.get(server).map(String::as_str)
    }

    /// Every pin, by server.
    pub fn pins(&self) -> &BTreeMap<String, String> {
        &self.pins
    }

    /// Pins `fingerprint` for `server` and saves the file.
    pub fn pin(&mut self, server: &str, fingerprint: &str) -> Result<(), ConnectError> {
        self.pins.insert(server.into(), fingerprint.into());
        self.save()
    }

    /// Forgets `server`'s pin; `false` if there was none.
    pub fn forget(&mut self, server: &str) -> Result<bool, ConnectError> {
        let had = self.pins.remove(server).is_some();
        if had {
            self.save()?;
        }
        Ok(had)
    }

    fn save(&self) -> Result<(), ConnectError> {
        let mut text = String::from(
            "# Servers sockit trusts: HOST:PORT and the SHA-256 fingerprint of its certificate.\n\
             # Written by sockit; `sockit tls forget HOST:PORT` removes a line.\n",
        );
        for (server, fp) in &self.pins {
            text.push_str(&format!("{server} {fp}\n"));
        }
        write_atomic(&self.path, text.as_bytes(), 0o644)
            .map_err(|e| ConnectError::Setup(format!("{}: {e}", self.path.display())))
    }
}

/// The host part of `HOST:PORT` (brackets of an IPv6 literal removed).
pub fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Connects to `server` (HOST:PORT) over TCP, then TLS unless `transport`
/// is plain; `timeout` bounds both.
pub async fn connect(
    server: &str,
    transport: &Transport,
    timeout: Duration,
) -> Result<Stream, ConnectError> {
    let trust = match transport {
        Transport::Plain => return Ok(Stream::Plain(tcp_connect(server, timeout).await?)),
        Transport::Tls(trust) => trust,
    };
    if trust.verify == Verify::Insecure {
        eprintln!(
            "warning: --insecure: the identity of {server} is not checked; anyone on the path can read and change this connection"
        );
    }
    let known_path = match &trust.known_servers {
        Some(p) => p.clone(),
        None if trust.verify == Verify::Pin => KnownServers::default_path()?,
        None => PathBuf::new(),
    };
    let mut accept = trust.accept_new;
    loop {
        let mut known = match trust.verify {
            Verify::Pin => Some(KnownServers::load(&known_path)?),
            _ => None,
        };
        let (config, seen) = build_config(server, trust, accept, known.as_ref())?;
        let name = server_name(server)?;
        let started = tokio::time::Instant::now();
        let tcp = tcp_connect(server, timeout).await?;
        let handshake = TlsConnector::from(config).connect(name, tcp);
        let left = timeout.saturating_sub(started.elapsed());
        let result = match tokio::time::timeout(left, handshake).await {
            Ok(r) => r,
            Err(_) => {
                return Err(ConnectError::HandshakeTimeout {
                    server: server.into(),
                })
            }
        };
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        match result {
            Ok(tls) => {
                if let (Verdict::New, Some(fp), Some(k)) =
                    (seen.verdict, &seen.fingerprint, &mut known)
                {
                    k.pin(server, fp)?;
                    eprintln!(
                        "sockit: trusting {server} from now on ({fp}), pinned in {}",
                        known_path.display()
                    );
                }
                return Ok(Stream::Client(Box::new(tls)));
            }
            Err(e) => {
                let fp = seen.fingerprint.clone().unwrap_or_default();
                match seen.verdict {
                    Verdict::Changed => {
                        return Err(ConnectError::Changed {
                            server: server.into(),
                            pinned: known
                                .as_ref()
                                .and_then(|k| k.get(server))
                                .unwrap_or_default()
                                .into(),
                            presented: fp,
                            file: known_path,
                        })
                    }
                    Verdict::Unknown if trust.prompt => {
                        if ask_trust(server, &fp)? {
                            accept = true;
                            continue;
                        }
                        return Err(ConnectError::Declined {
                            server: server.into(),
                        });
                    }
                    Verdict::Unknown => {
                        return Err(ConnectError::Unknown {
                            server: server.into(),
                            fingerprint: fp,
                        })
                    }
                    _ => return Err(handshake_error(server, &e, &trust.verify)),
                }
            }
        }
    }
}

/// The rustls configuration for `trust`, and the record of what its
/// verifier saw (for pinning and for explaining a refusal).
fn build_config(
    server: &str,
    trust: &Trust,
    accept_new: bool,
    known: Option<&KnownServers>,
) -> Result<(Arc<ClientConfig>, Arc<Mutex<Seen>>), ConnectError> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let verifier: Arc<dyn ServerCertVerifier> = match &trust.verify {
        Verify::Pin => Arc::new(PinVerifier {
            expected: known.and_then(|k| k.get(server)).map(String::from),
            accept_new,
            insecure: false,
            seen: seen.clone(),
        }),
        Verify::Ca(file) => ca_verifier(file)?,
        Verify::Insecure => Arc::new(PinVerifier {
            expected: None,
            accept_new: false,
            insecure: true,
            seen: seen.clone(),
        }),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = trust.alpn.clone();
    Ok((Arc::new(config), seen))
}

/// A client configuration that trusts `server` as `trust` says, with no
/// pinning of new servers and no session resumption: every handshake is a
/// full one (the load generator's).
pub fn fresh_config(server: &str, trust: &Trust) -> Result<Arc<ClientConfig>, ConnectError> {
    let known = match (&trust.verify, &trust.known_servers) {
        (Verify::Pin, Some(p)) => Some(KnownServers::load(p)?),
        (Verify::Pin, None) => Some(KnownServers::load(&KnownServers::default_path()?)?),
        _ => None,
    };
    let (config, _) = build_config(server, trust, false, known.as_ref())?;
    let mut config = Arc::unwrap_or_clone(config);
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The name to present in the handshake for `server` (HOST:PORT).
pub fn server_name(server: &str) -> Result<ServerName<'static>, ConnectError> {
    ServerName::try_from(host_of(server).to_string()).map_err(|_| ConnectError::Unreachable {
        server: server.into(),
        reason: "not a valid host name".into(),
    })
}

/// What a port that failed our TLS handshake speaks instead, as far as a
/// second look can tell (see [`probe_port`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// It answers HTTP: a web port.
    Http,
    /// It sends back what it gets: an echo port.
    Echo,
}

/// After a failed handshake: connects once more and sends a tiny HTTP
/// request, to tell a web port (`HTTP/` back) or an echo port (the request
/// back) from anything else, so that the error can name the port's
/// protocol instead of suggesting `--no-tls`. `None` when unsure.
pub async fn probe_port(server: &str, timeout: Duration) -> Option<PortKind> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PROBE: &[u8] = b"HEAD / HTTP/1.0\r\n\r\n";
    let look = async {
        let mut tcp = tcp_connect(server, timeout).await.ok()?;
        tcp.write_all(PROBE).await.ok()?;
        let mut got = [0u8; 8];
        let mut n = 0;
        while n < got.len() {
            match tcp.read(&mut got[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        let got = &got[..n];
        if got.starts_with(b"HTTP/") {
            Some(PortKind::Http)
        } else if !got.is_empty() && PROBE.starts_with(got) {
            Some(PortKind::Echo)
        } else {
            None
        }
    };
    tokio::time::timeout(timeout, look).await.ok().flatten()
}

/// A failed handshake, explained.
fn handshake_error(server: &str, e: &std::io::Error, verify: &Verify) -> ConnectError {
    let flag = match verify {
        Verify::Ca(_) => "a different --ca",
        _ => "--ca",
    };
    match rustls_error(e) {
        Some(rustls::Error::InvalidMessage(_)) => ConnectError::NotTls {
            server: server.into(),
        },
        Some(tls @ rustls::Error::InvalidCertificate(_)) => ConnectError::Untrusted {
            server: server.into(),
            reason: describe(tls, flag),
        },
        Some(tls) => ConnectError::Handshake {
            server: server.into(),
            reason: describe(tls, flag),
        },
        None if e.kind() == std::io::ErrorKind::UnexpectedEof
            || e.kind() == std::io::ErrorKind::ConnectionReset =>
        {
            ConnectError::ClosedInHandshake {
                server: server.into(),
            }
        }
        None => ConnectError::Handshake {
            server: server.into(),
            reason: e.to_string(),
        },
    }
}

/// A rustls error in the chain. rustls errors travel inside `io::Error`s,
/// sometimes one inside another, and an `io::Error`'s `source()` skips what
/// it wraps, so each one is opened.
pub fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut e = e;
    loop {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

/// TCP connection with a timeout and `TCP_NODELAY`, errors explained.
pub async fn tcp_connect(server: &str, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let fail = |reason: String| ConnectError::Unreachable {
        server: server.to_string(),
        reason,
    };
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(server)).await {
        Err(_) => {
            return Err(ConnectError::ConnectTimeout {
                server: server.into(),
            })
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused {
                server: server.into(),
            })
        }
        Ok(Err(e)) => return Err(fail(e.to_string())),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Asks on the terminal whether to trust `server`.
fn ask_trust(server: &str, fp: &str) -> Result<bool, ConnectError> {
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "The authenticity of {server} can't be established.\n\
         Its certificate's fingerprint is {fp}.\n\
         Compare it with the server's (`sockit tls fingerprint` there, or its log at start).\n\
         Trust it and remember it (yes/no)? "
    );
    let _ = err.flush();
    loop {
        let mut line = String::new();
        let n = std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| ConnectError::Setup(format!("reading the answer: {e}")))?;
        if n == 0 {
            return Ok(false);
        }
        match line.trim().to_ascii_lowercase().as_str() {
            "yes" => return Ok(true),
            "no" => return Ok(false),
            _ => {
                let _ = write!(err, "Please type 'yes' or 'no': ");
                let _ = err.flush();
            }
        }
    }
}

/// What the pin verifier saw, read back after the handshake.
#[derive(Debug, Clone, Default)]
struct Seen {
    fingerprint: Option<String>,
    verdict: Verdict,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Verdict {
    #[default]
    None,
    /// Matched the pin.
    Pinned,
    /// Vouched for by system roots.
    Public,
    /// Unknown, accepted and to be pinned.
    New,
    /// Unknown, not accepted.
    Unknown,
    /// A pin exists and differs.
    Changed,
}

/// Trust on first use (and, with `insecure`, no check at all). The
/// handshake's signatures are checked either way, so even `--insecure`
/// talks to whoever holds the certificate's key.
#[derive(Debug)]
struct PinVerifier {
    expected: Option<String>,
    accept_new: bool,
    insecure: bool,
    seen: Arc<Mutex<Seen>>,
}

/// The system's roots, loaded once; `None` if there are none.
fn system_verifier() -> Option<Arc<WebPkiServerVerifier>> {
    static SYSTEM: OnceLock<Option<Arc<WebPkiServerVerifier>>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return None;
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .ok()
        })
        .clone()
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let fp = fingerprint(end_entity);
        let verdict = if self.expected.as_deref() == Some(fp.as_str()) {
            Verdict::Pinned
        } else if system_verifier().is_some_and(|v| {
            v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .is_ok()
        }) {
            Verdict::Public
        } else if self.expected.is_some() {
            Verdict::Changed
        } else if self.accept_new {
            Verdict::New
        } else {
            Verdict::Unknown
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Seen {
                fingerprint: Some(fp),
                verdict,
            };
        }
        match verdict {
            Verdict::Pinned | Verdict::Public | Verdict::New => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::General(
                "the server's certificate is not trusted".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A verifier trusting only the CA certificates of `file`.
fn ca_verifier(file: &Path) -> Result<Arc<dyn ServerCertVerifier>, ConnectError> {
    let certs = super::server::read_certs(file).map_err(|e| ConnectError::Setup(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(ConnectError::Setup(format!(
            "{}: no usable CA certificate in the file",
            file.display()
        )));
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| ConnectError::Setup(format!("{}: {e}", file.display())))?;
    Ok(verifier)
}

/// `sockit tls fingerprint`: the fingerprint of a certificate file.
pub fn file_fingerprint(cert: &Path) -> Result<String, TlsError> {
    let certs = super::server::read_certs(cert)?;
    Ok(fingerprint(&certs[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_taken_from_addresses() {
        assert_eq!(host_of("127.0.0.1:7070"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7070"), "::1");
        assert_eq!(host_of("files.example.org:7070"), "files.example.org");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn known_servers_round_trip_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_servers");
        let mut k = KnownServers::load(&path).unwrap();
        assert!(k.get("a:1").is_none());
        let fp = fingerprint(b"x");
        k.pin("a:1", &fp).unwrap();
        k.pin("[::1]:7070", &fp).unwrap();
        let k2 = KnownServers::load(&path).unwrap();
        assert_eq!(k2.get("a:1"), Some(fp.as_str()));
        assert_eq!(k2.pins().len(), 2);
        let mut k3 = k2.clone();
        assert!(k3.forget("a:1").unwrap());
        assert!(!k3.forget("a:1").unwrap());
        assert!(KnownServers::load(&path).unwrap().get("a:1").is_none());
        std::fs::write(&path, "a:1 not-a-fingerprint\n").unwrap();
        let e = KnownServers::load(&path).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}

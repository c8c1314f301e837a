//! The server's certificate: a configured one (PEM files, reloaded on
//! SIGHUP) or one made on first start and kept in the data directory; and
//! the acceptors of the framed and web ports built on it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tracing::info;

use super::{fingerprint, provider, TlsError};

/// Folder of the generated certificate, inside the data directory.
pub const GENERATED_DIR: &str = "tls";
/// ALPN names the web port offers, best first.
pub const WEB_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Files named in the configuration (`tls_cert`, `tls_key`).
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate made once and kept in `dir` (`cert.pem`,
    /// `key.pem`): `<data>/tls/` for `sockit serve`, the configuration
    /// directory for `sockit web --tls` and `sockit listen --tls`. Kept, so
    /// that the clients' pins hold across restarts.
    Generated { dir: PathBuf },
}

impl CertSource {
    /// The configured files if both are set, else the generated
    /// certificate of `data_dir`.
    pub fn new(data_dir: &Path, cert: Option<&Path>, key: Option<&Path>) -> CertSource {
        match (cert, key) {
            (Some(cert), Some(key)) => CertSource::Files {
                cert: cert.into(),
                key: key.into(),
            },
            _ => CertSource::Generated {
                dir: data_dir.join(GENERATED_DIR),
            },
        }
    }

    /// The certificate and key files.
    fn paths(&self) -> (PathBuf, PathBuf) {
        match self {
            CertSource::Files { cert, key } => (cert.clone(), key.clone()),
            CertSource::Generated { dir } => (dir.join("cert.pem"), dir.join("key.pem")),
        }
    }
}

/// The server's side of TLS, shared by every port that speaks it. Cloning
/// is cheap; a reload is seen by every clone.
#[derive(Debug, Clone)]
pub struct ServerTls {
    source: CertSource,
    resolver: Arc<Resolver>,
}

/// Hands every handshake the current certificate; a reload swaps it while
/// established connections keep the session they have.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Loaded>,
}

#[derive(Debug, Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|l| l.key.clone())
    }
}

impl ServerTls {
    /// Loads the certificate, making and saving a self-signed one first if
    /// the source is [`CertSource::Generated`] and there is none yet.
    pub fn load_or_create(source: CertSource) -> Result<ServerTls, TlsError> {
        if let CertSource::Generated { dir } = &source {
            let (cert, key) = source.paths();
            if !cert.exists() || !key.exists() {
                let fp = generate(dir, &cert, &key)?;
                if !fp.is_empty() {
                    info!(fingerprint = %fp, path = %cert.display(), "created a self-signed certificate");
                }
            }
        }
        let loaded = load(&source)?;
        Ok(ServerTls {
            source,
            resolver: Arc::new(Resolver {
                current: RwLock::new(loaded),
            }),
        })
    }

    /// Reads the certificate and key again (after SIGHUP). On failure the
    /// current certificate stays in use.
    pub fn reload(&self) -> Result<String, TlsError> {
        let loaded = load(&self.source)?;
        let fp = loaded.fingerprint.clone();
        if let Ok(mut current) = self.resolver.current.write() {
            *current = loaded;
        }
        Ok(fp)
    }

    /// SHA-256 fingerprint of the certificate in use, as clients show it.
    pub fn fingerprint(&self) -> String {
        self.resolver
            .current
            .read()
            .map(|l| l.fingerprint.clone())
            .unwrap_or_default()
    }

    /// Where the certificate comes from.
    pub fn source(&self) -> &CertSource {
        &self.source
    }

    /// A server configuration offering `alpn` (empty: no ALPN); make a
    /// `tokio_rustls::TlsAcceptor` from it per connection.
    pub fn config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// Reads and checks a certificate chain and its key.
fn load(source: &CertSource) -> Result<Loaded, TlsError> {
    let (cert_path, key_path) = source.paths();
    let certs = read_certs(&cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Pem {
        path: key_path.clone(),
        message: e.to_string(),
    })?;
    let fingerprint = fingerprint(&certs[0]);
    let key = CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Pem {
        path: key_path,
        message: format!("the key does not fit the certificate: {e}"),
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        fingerprint,
    })
}

/// Reads every certificate of a PEM file (the leaf first); none is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |message: String| TlsError::Pem {
        path: path.into(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| pem(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

/// The names a generated certificate is made for: this host's name,
/// `localhost` and the loopback addresses.
fn host_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Some(host) = sysinfo::System::host_name().filter(|h| !h.is_empty()) {
        if !names.contains(&host) {
            names.insert(0, host);
        }
    }
    names.push("127.0.0.1".into());
    names.push("::1".into());
    names
}

/// A self-signed certificate (ECDSA P-256) for [`host_names`], and its key.
fn self_signed() -> Result<(rcgen::Certificate, rcgen::KeyPair), TlsError> {
    let names = host_names();
    let mut params = rcgen::CertificateParams::new(names).map_err(TlsError::Generate)?;
    let label = format!(
        "sockit on {}",
        sysinfo::System::host_name().unwrap_or_else(|| "localhost".into())
    );
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, label);
    let key = rcgen::KeyPair::generate().map_err(TlsError::Generate)?;
    let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
    Ok((cert, key))
}

/// Makes a self-signed certificate and writes it, the key readable by its
/// owner only. Returns the fingerprint. Both files are written in a fresh
/// folder that is then renamed to `dir`, so two processes starting at once
/// cannot pair one's certificate with the other's key: the second rename
/// fails and that process uses the first one's files.
fn generate(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<String, TlsError> {
    let (cert, key) = self_signed()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    let write = |folder: &Path| -> std::io::Result<()> {
        let name = |p: &Path| folder.join(p.file_name().unwrap_or_default());
        crate::credentials::write_atomic(&name(key_path), key.serialize_pem().as_bytes(), 0o600)?;
        crate::credentials::write_atomic(&name(cert_path), cert.pem().as_bytes(), 0o644)
    };
    let in_dir = cert_path.parent() == Some(dir) && key_path.parent() == Some(dir);
    if dir.exists() || !in_dir {
        // A folder that is already there (made by hand, or the files live
        // elsewhere): write in place.
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write(dir).map_err(io(dir))?;
        return Ok(fingerprint(cert.der()));
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    let made = write(&tmp).and_then(|()| std::fs::rename(&tmp, dir));
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        if cert_path.exists() && key_path.exists() {
            // Another process made it first: use its certificate.
            return Ok(String::new());
        }
    }
    made.map_err(io(dir))?;
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(fingerprint(cert.der()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_made_once_and_a_reload_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let source = CertSource::new(dir.path(), None, None);
        let tls = ServerTls::load_or_create(source.clone()).unwrap();
        let fp = tls.fingerprint();
        assert!(crate::tls::parse_fingerprint(&fp).is_some(), "{fp}");
        let key = dir.path().join("tls/key.pem");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A second start finds it.
        assert_eq!(ServerTls::load_or_create(source).unwrap().fingerprint(), fp);
        // Another certificate's files: a reload takes them.
        let other = tempfile::tempdir().unwrap();
        let fp2 = ServerTls::load_or_create(CertSource::new(other.path(), None, None))
            .unwrap()
            .fingerprint();
        assert_ne!(fp, fp2);
        for f in ["cert.pem", "key.pem"] {
            std::fs::copy(
                other.path().join("tls").join(f),
                dir.path().join("tls").join(f),
            )
            .unwrap();
        }
        assert_eq!(tls.reload().unwrap(), fp2);
        assert_eq!(tls.fingerprint(), fp2);
        // A broken file is refused and the current certificate kept.
        std::fs::write(dir.path().join("tls/cert.pem"), "junk").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(tls.fingerprint(), fp2);
        // A key that does not fit the certificate is refused at load.
        let mismatched = CertSource::Files {
            cert: other.path().join("tls/cert.pem"),
            key: dir.path().join("tls/key.pem"),
        };
        std::fs::copy(
            other.path().join("tls/cert.pem"),
            dir.path().join("tls/cert.pem"),
        )
        .unwrap();
        let third = tempfile::tempdir().unwrap();
        ServerTls::load_or_create(CertSource::new(third.path(), None, None)).unwrap();
        std::fs::copy(
            third.path().join("tls/key.pem"),
            dir.path().join("tls/key.pem"),
        )
        .unwrap();
        let e = ServerTls::load_or_create(mismatched)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit"), "{e}");
    }
}

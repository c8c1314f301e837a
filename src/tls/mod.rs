//! TLS for the framed port, the web port and `connect`/`listen`: rustls
//! with the *ring* provider, TLS 1.3 and 1.2 with rustls' safe defaults.
//!
//! - [`stream`]: [`Stream`], one connection type for plain TCP and TLS.
//! - [`server`]: the server's certificate (configured PEM files, reloaded on
//!   SIGHUP, or a self-signed one made on first start) and its acceptors.
//! - [`client`]: how a client trusts a server: pinned on first use as ssh
//!   does (a known-servers file), a CA file, or system roots for names with
//!   public certificates.

pub mod client;
pub mod server;
pub mod stream;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use sha2::{Digest, Sha256};

pub use client::{ConnectError, Transport, Trust, Verify};
pub use server::{CertSource, ServerTls};
pub use stream::Stream;

/// The first byte of a TLS connection (a handshake record); a framed
/// client's first byte is the top of a length, and an HTTP client's a
/// method letter, so one byte tells them apart.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or used.
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A certificate could not be made.
    #[error("cannot make a certificate: {0}")]
    Generate(rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(rustls::Error),
}

/// The crypto provider every sockit TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A certificate's SHA-256 fingerprint as sockit shows and pins it:
/// `SHA256:` and 64 lowercase hex digits (what `sha256sum` prints for the
/// DER bytes, and `openssl x509 -fingerprint -sha256` without the colons).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("SHA256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Reads a fingerprint in any of the usual spellings (`SHA256:` prefix or
/// not, hex with or without colons, any case) into sockit's.
pub fn parse_fingerprint(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t
        .strip_prefix("SHA256:")
        .or_else(|| t.strip_prefix("sha256:"))
        .or_else(|| t.strip_prefix("sha256 Fingerprint="))
        .or_else(|| t.strip_prefix("SHA256 Fingerprint="))
        .unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("SHA256:{}", hex.to_ascii_lowercase()))
}

/// What a rustls error means, for a user; `ca_flag` names the option that
/// adds a CA.
pub fn describe(e: &rustls::Error, ca_flag: &str) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => format!(
                "the server's certificate is not trusted (unknown issuer); if your own CA signed it, pass that CA with {ca_flag} FILE"
            ),
            C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the server's certificate is not valid for this host name".into()
            }
            C::Revoked => "the server's certificate has been revoked".into(),
            C::Other(other) => format!("the server's certificate is not accepted ({other})"),
            other => format!("the server's certificate is not accepted ({other:?})"),
        },
        rustls::Error::AlertReceived(alert) => {
            format!("the server ended the TLS handshake ({alert:?})")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_in_every_usual_spelling() {
        let fp = fingerprint(b"abc");
        assert_eq!(
            fp,
            "SHA256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_fingerprint(&fp).as_deref(), Some(fp.as_str()));
        let colons = "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD";
        assert_eq!(parse_fingerprint(colons).as_deref(), Some(fp.as_str()));
        assert_eq!(
            parse_fingerprint(&format!("sha256 Fingerprint={colons}")).as_deref(),
            Some(fp.as_str())
        );
        assert_eq!(parse_fingerprint("SHA256:abc"), None);
        assert_eq!(parse_fingerprint(&"z".repeat(64)), None);
    }
}

//! A test certificate authority: writes its certificate as `NAME.pem` and
//! issues certificates (with their keys) as PEM files.

use std::path::Path;

pub struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl Ca {
    /// A new CA, its certificate written to `dir/NAME.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        Ca { params, key }
    }

    /// Writes a certificate for `names`, valid now for years, and its key;
    /// returns its DER bytes.
    pub fn issue(&self, names: &[&str], cert: &Path, key: &Path) -> Vec<u8> {
        self.issue_between(names, 2020, 2100, cert, key)
    }

    /// As [`Ca::issue`], valid from January 1st of `from` to that of `until`.
    pub fn issue_between(
        &self,
        names: &[&str],
        from: i32,
        until: i32,
        cert: &Path,
        key: &Path,
    ) -> Vec<u8> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        std::fs::write(cert, leaf.pem()).unwrap();
        std::fs::write(key, leaf_key.serialize_pem()).unwrap();
        leaf.der().to_vec()
    }
}

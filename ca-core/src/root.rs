//! The offline root CA (DESIGN §2): its own directory, its own key, no store.
//!
//! The root signs issuing CAs and its own small CRL, in ceremonies run with
//! `ca-cli root …` on a machine that is otherwise offline. Everything it
//! needs is in its directory:
//!
//! ```text
//!   root.pem         the root certificate (the trust anchor gateways and devices get)
//!   root.key         its key, encrypted (AES-256-GCM under scrypt; purpose "root-signing")
//!   root.token.json  … or which PKCS#11 token key it is (no key material)
//!   root.json        what it signed, what it revoked, its last CRL number, a log
//! ```
//!
//! Nothing of the root lives in the issuing CA's data directory but its
//! certificate (`root.pem`) and, after `ca import-crl`, its latest CRL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::TokenConfig;
use crate::duration::Duration;
use crate::error::{Error, Result};
use crate::ids::Serial;
use crate::keys::{write_encrypted_key, KeyAlgorithm, KeyPurpose, Passphrase, MIN_PASSPHRASE_LEN};
use crate::pki::crl::{CrlBuilder, CrlDer, RevokedEntry};
use crate::pki::x509::{
    build_issuing_certificate, build_root_certificate, csr_subject_and_key, parse_subject,
    CaCertificate, CertificateDer, IssuingCaRequest,
};
use crate::reason::RevocationReason;
use crate::signer::pkcs11::{read_key_record, write_key_record, Pkcs11Signer, Token};
use crate::signer::{FileSigner, Signer};

/// What `root init` needs.
pub struct RootInit {
    /// Subject DN, `CN=…,O=…`.
    pub subject: String,
    /// Key type (default ECDSA P-384: a root outlives its issuing CAs).
    pub key: KeyAlgorithm,
    /// Certificate lifetime.
    pub validity: Duration,
    /// Where gateways fetch the root's CRL, written as CRL distribution point
    /// into the issuing CA certificates it signs (optional).
    pub crl_url: Option<String>,
}

/// The secret that unlocks the root key: a passphrase (key file) or a token PIN.
pub enum RootSecret<'a> {
    /// The key file's passphrase.
    Passphrase(&'a [u8]),
    /// A PKCS#11 token and its user PIN.
    Token(&'a TokenConfig, &'a str),
}

/// An issuing CA certificate the root signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedCa {
    /// Serial (hex).
    pub serial: String,
    /// Subject, one line.
    pub subject: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// When revoked, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Why (RFC 5280 §5.3.1 name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One line of the root's own log (no store, so no hash chain: the
/// directory is kept offline and backed up whole).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogLine {
    at: String,
    action: String,
    detail: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RootState {
    #[serde(default)]
    crl_number: u64,
    #[serde(default)]
    crl_url: Option<String>,
    #[serde(default)]
    signed: Vec<SignedCa>,
    #[serde(default)]
    log: Vec<LogLine>,
}

/// An open root CA directory.
pub struct RootCa {
    dir: PathBuf,
    certificate: CaCertificate,
    signer: Arc<dyn Signer>,
    state: RootState,
}

fn files(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        dir.join("root.pem"),
        dir.join("root.key"),
        dir.join("root.token.json"),
        dir.join("root.json"),
    )
}

impl RootCa {
    /// Creates the root: key (encrypted file, or generated in a token), the
    /// self-signed certificate, its state. Refuses an existing root.
    pub fn init(dir: &Path, request: &RootInit, secret: RootSecret<'_>) -> Result<RootCa> {
        let (cert_path, key_path, token_path, state_path) = files(dir);
        if cert_path.exists() || key_path.exists() || token_path.exists() {
            return Err(Error::Conflict(format!(
                "a root CA already exists in {} (refusing to overwrite it; choose another --root-dir)",
                dir.display()
            )));
        }
        let subject = parse_subject(&request.subject)?;
        if request.validity.as_secs() < 86_400 {
            return Err(Error::InvalidInput(
                "root validity must be at least 1d".into(),
            ));
        }
        if let Some(url) = &request.crl_url {
            crate::pki::x509::Endpoints::new(url).map_err(|_| {
                Error::InvalidInput(format!(
                    "invalid --crl-url \"{}\": expected an http(s):// URL",
                    url.escape_debug()
                ))
            })?;
        }
        if let RootSecret::Passphrase(p) = &secret {
            if p.len() < MIN_PASSPHRASE_LEN {
                return Err(Error::Key(format!(
                    "the root key passphrase must be at least {MIN_PASSPHRASE_LEN} characters (set CA_KEY_PASSPHRASE or pass --passphrase-file)"
                )));
            }
        }
        std::fs::create_dir_all(dir).map_err(Error::io("cannot create root directory", dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let now = crate::now();
        let not_before = now - crate::pki::x509::BACKDATE;
        let (signer, der): (Arc<dyn Signer>, CertificateDer) = match secret {
            RootSecret::Passphrase(p) => {
                let key = request.key.generate()?;
                let signer = FileSigner::new(key.clone())?;
                let der = build_root_certificate(
                    subject,
                    &signer,
                    not_before,
                    request.validity.to_time(),
                )?;
                write_encrypted_key(
                    &key_path,
                    &key,
                    &Passphrase::new(p),
                    KeyPurpose::RootSigning,
                )?;
                (Arc::new(signer), der)
            }
            RootSecret::Token(config, pin) => {
                let token = Token::open(config, pin)?;
                let label = format!("root {}", common_name(&request.subject));
                let signer = token.generate(request.key, &label)?;
                let der = build_root_certificate(
                    subject,
                    &signer,
                    not_before,
                    request.validity.to_time(),
                )?;
                write_key_record(&token_path, signer.key())?;
                (Arc::new(signer), der)
            }
        };
        let certificate = CaCertificate::from_der(der.0.clone())?;
        crate::fsutil::write_file(&cert_path, der.to_pem().as_bytes())?;
        let mut root = RootCa {
            dir: dir.to_owned(),
            certificate,
            signer,
            state: RootState {
                crl_url: request.crl_url.clone(),
                ..Default::default()
            },
        };
        root.log(
            "root-init",
            format!(
                "subject={} key={} serial={} sha256={}",
                request.subject,
                request.key,
                crate::pki::x509::certificate_serial_hex(&der.0),
                hex::encode(crate::hash::sha256(&der.0))
            ),
        );
        root.save(&state_path)?;
        Ok(root)
    }

    /// Opens a root directory. Without a secret only the certificate and the
    /// state can be read (`root cert`).
    pub fn open(dir: &Path, secret: Option<RootSecret<'_>>) -> Result<RootCa> {
        let (cert_path, key_path, token_path, state_path) = files(dir);
        if !cert_path.exists() {
            return Err(Error::NotFound(format!(
                "no root CA in {}: run `ca-cli root init --root-dir {}` first",
                dir.display(),
                dir.display()
            )));
        }
        let pem = std::fs::read(&cert_path).map_err(Error::io("cannot read", &cert_path))?;
        let certificate =
            CaCertificate::from_der(crate::pki::x509::certificate_der_from_pem_or_der(&pem)?)?;
        let text = std::fs::read_to_string(&state_path)
            .map_err(Error::io("cannot read the root's state", &state_path))?;
        let state: RootState = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{} is damaged: {e}", state_path.display())))?;
        let signer: Arc<dyn Signer> = match secret {
            None => Arc::new(NoKey(certificate.public_key().clone())),
            Some(RootSecret::Passphrase(p)) => {
                if !key_path.exists() {
                    return Err(Error::Config(format!(
                        "the root in {} keeps its key in a PKCS#11 token ({}): set key.source = \"pkcs11\", key.module and key.token_label",
                        dir.display(),
                        token_path.display()
                    )));
                }
                let key = crate::keys::read_encrypted_key(
                    &key_path,
                    &Passphrase::new(p),
                    KeyPurpose::RootSigning,
                )?;
                let signer = FileSigner::new(key)?;
                crate::signer::check_matches(&signer, certificate.public_key().spki_der())?;
                Arc::new(signer)
            }
            Some(RootSecret::Token(config, pin)) => {
                let record = read_key_record(&token_path)?;
                let token = Token::open(config, pin)?;
                Arc::new(Pkcs11Signer::find(
                    &token,
                    record,
                    certificate.public_key().clone(),
                    &format!("the root certificate {}", cert_path.display()),
                )?)
            }
        };
        Ok(RootCa {
            dir: dir.to_owned(),
            certificate,
            signer,
            state,
        })
    }

    /// The root certificate.
    pub fn certificate(&self) -> &CaCertificate {
        &self.certificate
    }

    /// The issuing CA certificates it signed (revoked ones included).
    pub fn signed(&self) -> &[SignedCa] {
        &self.state.signed
    }

    /// Signs an issuing CA's CSR: the CSR's signature must verify (proof of
    /// possession); its subject is kept, its requested extensions ignored.
    /// The certificate never outlives the root.
    pub fn sign_ca(
        &mut self,
        csr: &[u8],
        validity: Duration,
        path_len: u8,
    ) -> Result<CertificateDer> {
        let (subject_der, public_key) = csr_subject_and_key(csr)?;
        if public_key.spki_der() == self.certificate.public_key().spki_der() {
            return Err(Error::InvalidInput(
                "the CSR carries the root's own key: an issuing CA needs a key of its own".into(),
            ));
        }
        if validity.as_secs() < 86_400 {
            return Err(Error::InvalidInput(
                "issuing CA validity must be at least 1d".into(),
            ));
        }
        let now = crate::now();
        let not_after = (now + validity.to_time()).min(self.certificate.not_after());
        if not_after <= now + time::Duration::days(1) {
            return Err(Error::Conflict(
                "the root expires within a day: it can no longer sign an issuing CA; create a new root".into(),
            ));
        }
        let serial = Serial::random()?;
        let request = IssuingCaRequest {
            subject_der: &subject_der,
            public_key: &public_key,
            serial,
            not_before: now - crate::pki::x509::BACKDATE,
            not_after,
            path_len,
            crl_url: self.state.crl_url.as_deref(),
        };
        let der = build_issuing_certificate(&request, &self.certificate, &*self.signer)?;
        let subject = crate::pki::x509::subject_line(&der.0);
        self.state.signed.push(SignedCa {
            serial: serial.to_hex(),
            subject: subject.clone(),
            not_after: crate::rfc3339(not_after),
            revoked_at: None,
            reason: None,
        });
        self.log(
            "root-sign-ca",
            format!(
                "serial={} subject={subject} not_after={} sha256={}",
                serial.to_hex(),
                crate::rfc3339(not_after),
                hex::encode(crate::hash::sha256(&der.0))
            ),
        );
        // Recorded before the certificate is handed out: a signed CA the
        // root has no record of could never be revoked by it.
        self.save(&files(&self.dir).3)?;
        Ok(der)
    }

    /// Revokes an issuing CA the root signed (listed in the next root CRL).
    pub fn revoke_ca(&mut self, serial: &Serial, reason: RevocationReason) -> Result<SignedCa> {
        let hex_serial = serial.to_hex();
        let entry = self
            .state
            .signed
            .iter_mut()
            .find(|s| s.serial == hex_serial)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "the root signed no issuing CA with serial {hex_serial} (see `ca-cli root list`)"
                ))
            })?;
        if let Some(at) = &entry.revoked_at {
            return Err(Error::Conflict(format!(
                "issuing CA {hex_serial} is already revoked (since {at})"
            )));
        }
        entry.revoked_at = Some(crate::rfc3339(crate::now()));
        entry.reason = Some(reason.name().to_owned());
        let entry = entry.clone();
        self.log(
            "root-revoke-ca",
            format!("serial={hex_serial} reason={}", reason.name()),
        );
        self.save(&files(&self.dir).3)?;
        Ok(entry)
    }

    /// Signs the root's next CRL (number one above the last; the number is
    /// saved before the CRL is returned, so no number is ever used twice).
    pub fn crl(&mut self, validity: Duration) -> Result<(u64, CrlDer)> {
        if validity.as_secs() < 3600 {
            return Err(Error::InvalidInput(
                "the root CRL's validity (--next-update) must be at least 1h".into(),
            ));
        }
        let this_update = crate::now();
        let next_update = this_update + validity.to_time();
        let number = self.state.crl_number + 1;
        let mut builder = CrlBuilder::new(
            &self.certificate,
            &*self.signer,
            number,
            this_update,
            next_update,
        )?;
        let mut revoked: Vec<RevokedEntry> = Vec::new();
        for signed in &self.state.signed {
            let Some(at) = &signed.revoked_at else {
                continue;
            };
            let parse =
                |t: &str| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339);
            let (Ok(revoked_at), Some(serial)) = (parse(at), Serial::parse(&signed.serial).ok())
            else {
                return Err(Error::Config(format!(
                    "root.json has a damaged revocation of {}",
                    signed.serial
                )));
            };
            revoked.push(RevokedEntry {
                serial,
                revoked_at,
                reason: signed
                    .reason
                    .as_deref()
                    .and_then(|r| RevocationReason::parse(r).ok())
                    .unwrap_or(RevocationReason::Unspecified),
                invalidity_date: None,
            });
        }
        revoked.sort_by_key(|e| e.serial);
        for entry in &revoked {
            builder.push(entry);
        }
        let der = builder.finish(&*self.signer)?;
        self.state.crl_number = number;
        self.log(
            "root-crl",
            format!(
                "crl_number={number} entries={} next_update={} sha256={}",
                revoked.len(),
                crate::rfc3339(next_update),
                hex::encode(crate::hash::sha256(&der.0))
            ),
        );
        self.save(&files(&self.dir).3)?;
        Ok((number, der))
    }

    fn log(&mut self, action: &str, detail: String) {
        self.state.log.push(LogLine {
            at: crate::rfc3339(crate::now()),
            action: action.to_owned(),
            detail,
        });
    }

    fn save(&self, path: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(&self.state).map_err(|e| Error::Crypto(e.to_string()))?;
        crate::fsutil::write_file(path, text.as_bytes())
    }
}

fn common_name(subject: &str) -> String {
    let separator = if subject.starts_with('/') { '/' } else { ',' };
    subject
        .split(separator)
        .filter_map(|part| part.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("CN"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_else(|| subject.to_owned())
}

/// The signer of a root opened without its secret: it knows the public key
/// and refuses to sign, naming what is missing.
struct NoKey(crate::keys::PublicKey);

impl Signer for NoKey {
    fn public_key(&self) -> &crate::keys::PublicKey {
        &self.0
    }

    fn sign(&self, _message: &[u8]) -> Result<Vec<u8>> {
        Err(Error::Key(
            "this needs the root key: set CA_KEY_PASSPHRASE or pass --passphrase-file (or the token PIN)".into(),
        ))
    }
}

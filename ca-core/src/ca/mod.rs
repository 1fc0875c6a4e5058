//! The certificate authority: ties policies, keys, certificate building,
//! PKCS#12, revocation, CRLs and the audit log to a [`Store`] and a [`Signer`].
//!
//! Issuance is two steps (as in Boulder): `prepare_*` validates, generates the
//! key, signs and packages; [`Ca::commit`] makes the record durable. The
//! front end hands the bundle out only after `commit` returns.

use crate::audit::{verify_chain, AuditDraft, AuditEvent};
use crate::config::{Config, OcspKeySource};
use crate::duration::Duration;
use crate::error::{Error, Result};
use crate::ids::{AdminId, Serial, TenantId};
use crate::keys::{
    write_encrypted_key, KeyAlgorithm, KeyPurpose, Passphrase, PublicKey, MIN_PASSPHRASE_LEN,
};
use crate::pki::ocsp::{CertState, IssuerHashes, OcspFailure, OcspResponder};
use crate::pki::pkcs12::{build_pkcs12, check_password, generate_password, Pkcs12Der};
use crate::pki::x509::{
    build_ca_certificate, build_leaf, parse_subject, CaCertificate, Endpoints, LeafRequest,
};
use crate::policy::{Policies, Policy, PolicyKind};
use crate::reason::RevocationReason;
use crate::signer::pkcs11::{write_key_record, Pkcs11Signer, Token, TokenKey};
use crate::signer::{FileSigner, Signer};
use crate::store::{
    AuditStore, CertificateRecord, IdempotencyKey, IssuerStore, ListFilter, PublishedCrl, SqlStore,
    Store, Supersede,
};
use crate::tokens::{NewToken, Principal, Role, TokenRecord};
use openssl::pkey::{PKey, Private};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;
use zeroize::Zeroizing;

mod audit;
mod client_auth;
mod console;
mod init;
mod issuance;
mod issuers;
mod ocsp;
mod pickup;
mod revocation;
mod revoked_list;
mod server_cert;
mod tokens;

use init::*;
use issuance::*;

pub(crate) use audit::verify_store_audit;
pub(crate) use issuance::not_replaceable;

pub use audit::AuditReport;
pub use console::{ConsoleSecret, CONSOLE_SESSION_LIFETIME};
pub use init::{InitRequest, KeySecrets};
pub use issuance::{Issuance, IssueRequest, PreparedIssuance, ReissueMode};
pub use issuers::{ImportedIssuer, Issuer, IssuingRequest, PendingIssuer};
pub use pickup::{check_delivery, check_email, PickupIssuance, PickupOutcome, PickupRequest};
pub use server_cert::{PreparedServerCertificate, ServerCertRequest};

/// The current time, whole seconds (certificates and the store keep seconds).
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Files in the data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The layout of `dir`.
    pub fn new(dir: &Path) -> Self {
        Layout {
            dir: dir.to_owned(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// CA certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Encrypted CA key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// Which token key is the CA key (`key.source = "pkcs11"`; no key material).
    pub fn token_key(&self) -> PathBuf {
        self.dir.join("ca.token.json")
    }

    /// Editable copies of the policies.
    pub fn policies(&self) -> PathBuf {
        self.dir.join("policies")
    }

    /// The root certificate, under a trust hierarchy (`ca import-cert --chain`).
    pub fn root_cert(&self) -> PathBuf {
        self.dir.join("root.pem")
    }
}

/// An open certificate authority.
pub struct Ca {
    store: Arc<dyn Store>,
    ca_cert: CaCertificate,
    endpoints: Endpoints,
    policies: Policies,
    default_policy: String,
    crl_validity: Duration,
    ocsp_validity: Duration,
    signer: Option<Arc<dyn Signer>>,
    /// Kept (zeroized on drop) to unlock and protect the OCSP responder key.
    passphrase: Option<Arc<Passphrase>>,
    /// The PKCS#11 token holding the CA key, when it is in one.
    token: Option<Arc<Token>>,
    /// Where a new OCSP responder key goes.
    ocsp_key_source: OcspKeySource,
    /// How to supply the CA key's secret, for messages.
    key_hint: &'static str,
    issuer_hashes: IssuerHashes,
    tokens: crate::tokens::TokenCache,
    // --- Trust hierarchy (ca/issuers.rs). The fields above (ca_cert,
    // signer, endpoints, issuer_hashes) are the active issuer's. ---
    /// Every issuer with an unexpired certificate, the active one first.
    issuers: Vec<Arc<Issuer>>,
    /// The active issuer's number (what new certificates record).
    active_issuer: u64,
    /// The root certificate, under a hierarchy.
    root: Option<crate::pki::x509::CertificateDer>,
    /// How long a bundle waits for pickup (`pickup.validity`).
    pickup_validity: Duration,
    /// Bounds the scrypt runs of pickup codes (see `pickup.rs`).
    pickup_slots: Arc<tokio::sync::Semaphore>,
    /// Each issuer's revoked-entry list as of its last CRL (ca/revoked_list.rs).
    crl_lists: tokio::sync::Mutex<std::collections::HashMap<u64, revoked_list::RevokedList>>,
    /// Whether to keep them ([`Ca::keep_crl_lists`]).
    keep_crl_lists: std::sync::atomic::AtomicBool,
    /// Issuers whose list [`Ca::warm_crl_list`] built once already.
    crl_lists_warmed: std::sync::Mutex<std::collections::HashSet<u64>>,
}

/// Runs a token call on a blocking thread (never on an async worker).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Crypto(format!("token worker failed: {e}")))?
}

impl Ca {
    /// Opens an existing CA. With a passphrase the key is unlocked (and checked
    /// against the certificate); without, only key-less operations work.
    pub async fn open(config: &Config, passphrase: Option<&[u8]>) -> Result<Ca> {
        let secrets = KeySecrets {
            passphrase: passphrase.map(|p| Zeroizing::new(p.to_vec())),
            pin: None,
        };
        Self::open_with(config, &secrets).await
    }

    /// Opens an existing CA with the secrets its `key.source` needs. With
    /// them, the CA key is loaded and checked against the CA certificate (a
    /// token key by a test signature: a wrong token or key is refused,
    /// naming both); without, only key-less operations work.
    pub async fn open_with(config: &Config, secrets: &KeySecrets) -> Result<Ca> {
        let layout = Layout::new(&config.data_dir);
        let (in_token, in_file) = (layout.token_key().exists(), layout.ca_key().exists());
        if !layout.ca_cert().exists() && !in_token && !in_file {
            return Err(Error::NotFound(format!(
                "no CA in {}: run `ca-cli init` first, or point --data-dir / CA_DATA_DIR at the data directory",
                layout.dir().display()
            )));
        }
        if config.token().is_none() && in_token && !in_file {
            return Err(Error::Config(format!(
                "key.source: the CA in {} keeps its key in a PKCS#11 token ({}): set key.source = \"pkcs11\", key.module and key.token_label",
                layout.dir().display(),
                layout.token_key().display()
            )));
        }
        if config.token().is_some() && in_file && !in_token {
            return Err(Error::Config(format!(
                "key.source: the CA in {} keeps its key in the encrypted file {}, not in a token: set key.source = \"file\"",
                layout.dir().display(),
                layout.ca_key().display()
            )));
        }
        let store = SqlStore::connect(&config.database_url()).await?;
        store.migrate().await?;
        // A single self-signed CA has no issuer rows; a hierarchy has one
        // per issuing CA, and the store says which is active.
        let rows = store.issuers().await?;
        let hierarchy = !rows.is_empty();
        if hierarchy
            && !rows
                .iter()
                .any(|r| r.state == crate::store::IssuerState::Active)
        {
            return Err(issuers::not_ready(&rows, &layout));
        }
        let ca_der = match rows
            .iter()
            .find(|r| r.state == crate::store::IssuerState::Active)
        {
            Some(row) => row.der.clone().ok_or_else(|| {
                Error::Store(format!(
                    "the active issuer {} has no certificate",
                    row.number
                ))
            })?,
            None => {
                let pem = std::fs::read(layout.ca_cert())
                    .map_err(Error::io("cannot read", layout.ca_cert()))?;
                crate::pki::x509::certificate_der_from_pem_or_der(&pem)?
            }
        };
        let ca_cert = CaCertificate::from_der(ca_der)?;
        let active_issuer = rows
            .iter()
            .find(|r| r.state == crate::store::IssuerState::Active)
            .map(|r| r.number)
            .unwrap_or(1);
        let passphrase = secrets
            .passphrase
            .as_ref()
            .map(|p| Arc::new(Passphrase::new(p)));
        let token = match (config.token(), &secrets.pin) {
            (Some(token_config), Some(pin)) => {
                let (token_config, pin) = (token_config.clone(), pin.clone());
                Some(blocking(move || Token::open(&token_config, &pin)).await?)
            }
            _ => None,
        };
        let base_url = match &config.base_url {
            Some(url) => url.clone(),
            None => store.meta("base_url").await?.ok_or_else(|| {
                Error::Config(
                    "the store has no base_url: set base_url in the config or CA_BASE_URL".into(),
                )
            })?,
        };
        let base_endpoints = Endpoints::new(&base_url)?;
        let (issuers, root) = if hierarchy {
            let issuers = issuers::load_issuers(
                &rows,
                &layout,
                &base_endpoints,
                passphrase.as_ref(),
                token.as_ref(),
                now(),
            )
            .await?;
            let root = std::fs::read(layout.root_cert()).map_err(Error::io(
                "cannot read the root certificate",
                layout.root_cert(),
            ))?;
            let root = crate::pki::x509::CertificateDer(
                crate::pki::x509::certificate_der_from_pem_or_der(&root)?,
            );
            (issuers, Some(root))
        } else {
            let signer = issuers::unlock_issuer_key(
                &layout,
                1,
                &ca_cert,
                passphrase.as_ref(),
                token.as_ref(),
            )
            .await?;
            let single = Arc::new(Issuer {
                number: 1,
                id: crate::pki::x509::issuer_id(&ca_cert),
                state: crate::store::IssuerState::Active,
                hashes: IssuerHashes::new(&ca_cert)?,
                certificate: ca_cert.clone(),
                signer,
                endpoints: base_endpoints.clone(),
            });
            (vec![single], None)
        };
        let active = Arc::clone(&issuers[0]);
        let signer = active.signer.clone();
        Ok(Ca {
            store: Arc::new(store),
            issuer_hashes: IssuerHashes::new(&ca_cert)?,
            tokens: Default::default(),
            ca_cert,
            endpoints: active.endpoints.clone(),
            policies: load_policies(config, &layout)?,
            default_policy: config.default_policy.clone(),
            crl_validity: config.crl_validity,
            ocsp_validity: config.ocsp_validity,
            passphrase: signer.as_ref().and(passphrase),
            signer,
            key_hint: if config.token().is_some() {
                pin_hint()
            } else {
                passphrase_hint()
            },
            token,
            ocsp_key_source: config.ocsp_key_source,
            crl_lists: Default::default(),
            keep_crl_lists: Default::default(),
            crl_lists_warmed: Default::default(),
            issuers,
            active_issuer,
            root,
            pickup_validity: config.pickup_validity,
            pickup_slots: Arc::new(tokio::sync::Semaphore::new(pickup::PICKUP_SCRYPT_SLOTS)),
        })
    }

    fn shared_signer(&self) -> Result<Arc<dyn Signer>> {
        self.signer
            .clone()
            .ok_or_else(|| Error::Key(format!("this needs the CA key: {}", self.key_hint)))
    }

    /// The CA certificate.
    pub fn ca_certificate(&self) -> &CaCertificate {
        &self.ca_cert
    }

    /// The policy `issue` uses when none is named (`default_policy` in the config).
    pub fn default_policy(&self) -> &str {
        &self.default_policy
    }

    /// The policies in effect.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The CDP/AIA endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// True when the CA key is unlocked.
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// One certificate.
    pub async fn certificate(&self, serial: &Serial) -> Result<CertificateRecord> {
        self.store
            .certificate(serial)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no certificate with serial {serial}")))
    }

    /// A page of certificates.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<CertificateRecord>> {
        self.store.list(filter, now()).await
    }
}

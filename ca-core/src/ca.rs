//! The certificate authority: ties policies, keys, certificate building,
//! PKCS#12, revocation, CRLs and the audit log to a [`Store`] and a [`Signer`].
//!
//! Issuance is two steps (as in Boulder): `prepare_*` validates, generates the
//! key, signs and packages; [`Ca::commit`] makes the record durable. The
//! front end hands the bundle out only after `commit` returns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use time::OffsetDateTime;
use zeroize::Zeroizing;

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
    CertificateRecord, IdempotencyKey, ListFilter, PublishedCrl, SqlStore, Store, Supersede,
};
use crate::tokens::{NewToken, Principal, Role, TokenRecord};

const OCSP_CERT_META: &str = "ocsp_responder_cert";
const OCSP_KEY_META: &str = "ocsp_responder_key";
/// The responder certificate is recorded under this tenant/admin.
const OCSP_TENANT: &str = crate::ids::RESERVED_TENANT;
const OCSP_ADMIN: &str = "ocsp-responder";

/// Where issuer `number`'s responder certificate and key are kept (issuer 1
/// keeps the names of the single CA).
fn responder_meta(number: u64) -> (String, String) {
    match number {
        1 => (OCSP_CERT_META.to_owned(), OCSP_KEY_META.to_owned()),
        n => (
            format!("{OCSP_CERT_META}/{n}"),
            format!("{OCSP_KEY_META}/{n}"),
        ),
    }
}

/// The admin name issuer `number`'s responder certificates are recorded
/// under (one active responder per issuer: the one-active rule is per admin).
fn responder_admin(number: u64) -> String {
    match number {
        1 => OCSP_ADMIN.to_owned(),
        n => format!("{OCSP_ADMIN}-{n}"),
    }
}

mod client_auth;
mod console;
mod issuers;
mod server_cert;

pub use console::{ConsoleSecret, CONSOLE_SESSION_LIFETIME};
pub use issuers::{ImportedIssuer, Issuer, IssuingRequest, PendingIssuer};
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

/// What `init` needs.
pub struct InitRequest {
    /// Subject DN, `CN=…,O=…`.
    pub subject: String,
    /// CA key type.
    pub key: KeyAlgorithm,
    /// CA certificate lifetime.
    pub validity: Duration,
    /// Base URL for CDP/AIA.
    pub base_url: String,
    /// Passphrase for the key file (and, with a token, for an OCSP
    /// responder key kept as a file); empty when nothing needs it.
    pub passphrase: Zeroizing<Vec<u8>>,
    /// The token user PIN (`key.source = "pkcs11"`).
    pub pin: Option<Zeroizing<String>>,
}

/// What unlocks an existing CA's keys; which of them is needed depends on
/// `key.source` and `ocsp.key_source` (see [`Config::needs_passphrase`]).
#[derive(Default)]
pub struct KeySecrets {
    /// The key file passphrase.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
    /// The token user PIN.
    pub pin: Option<Zeroizing<String>>,
}

/// A certificate request from an operator or job.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Tenant.
    pub tenant: String,
    /// Admin.
    pub admin: String,
    /// Policy; the default policy (issue) or the active certificate's (reissue) when `None`.
    pub policy: Option<String>,
    /// A caller-chosen bundle password; generated when `None`.
    pub password: Option<Zeroizing<String>>,
}

/// Signed, packaged, not yet committed. Dropping it discards the certificate.
pub struct PreparedIssuance {
    record: CertificateRecord,
    supersede: Option<Supersede>,
    action: &'static str,
    /// The PKCS#12 bundle (server-generated key policies).
    pub bundle: Option<Pkcs12Der>,
    /// The bundle password, shown once.
    pub password: Option<Zeroizing<String>>,
}

impl PreparedIssuance {
    /// The new certificate's record.
    pub fn record(&self) -> &CertificateRecord {
        &self.record
    }
}

/// A committed issuance.
pub struct Issuance {
    /// The new certificate.
    pub record: CertificateRecord,
    /// Serials revoked in the same transaction (reissue).
    pub revoked: Vec<Serial>,
    /// The bundle.
    pub bundle: Option<Pkcs12Der>,
    /// Its password.
    pub password: Option<Zeroizing<String>>,
}

/// The outcome of `audit verify`.
#[derive(Debug, Clone)]
pub struct AuditReport {
    /// Events checked.
    pub events: u64,
    /// Hash of the last event.
    pub head: String,
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
}

fn load_policies(config: &Config, layout: &Layout) -> Result<Policies> {
    match &config.policies_dir {
        Some(dir) => Policies::load_dir(dir),
        None if layout.policies().is_dir() => Policies::load_dir(&layout.policies()),
        None => Ok(Policies::shipped()),
    }
}

/// Whether a reissue may also create a first certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReissueMode {
    /// Only replace an active certificate (renewers: they may not issue).
    ReplaceOnly,
    /// Replace, or issue the first certificate when nothing is active
    /// (callers who may issue: operators, admins, the CLI).
    ReplaceOrIssue,
}

/// The refusal of a replace-only reissue with nothing to replace.
pub(crate) fn not_replaceable(tenant: &str, admin: &str, policy: &str) -> Error {
    Error::Forbidden(format!(
        "{tenant}/{admin} has no active certificate under policy {policy} to replace, and this caller may only replace (a renewer cannot obtain a first certificate): an operator must issue it"
    ))
}

fn passphrase_hint() -> &'static str {
    "set CA_KEY_PASSPHRASE or pass --passphrase-file"
}

fn pin_hint() -> &'static str {
    "set CA_PKCS11_PIN or key.pin_file to the token's user PIN"
}

/// The CN of a subject given as `CN=…,O=…` (or `/CN=…/O=…`): the CA key's label in a token.
fn common_name(subject: &str) -> String {
    let separator = if subject.starts_with('/') { '/' } else { ',' };
    subject
        .split(separator)
        .filter_map(|part| part.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("CN"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_else(|| subject.to_owned())
}

/// The token label of the OCSP responder keys of the CA whose key identifier is `ca_key_id`.
fn responder_key_label(ca_key_id: &[u8]) -> String {
    format!(
        "ocsp-responder {}",
        hex::encode(&ca_key_id[..ca_key_id.len().min(8)])
    )
}

/// Runs a token call on a blocking thread (never on an async worker).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Crypto(format!("token worker failed: {e}")))?
}

impl Ca {
    /// Creates the data directory, store, encrypted CA key and self-signed CA
    /// certificate. Refuses to touch an existing CA.
    pub async fn init(config: &Config, request: InitRequest, actor: &str) -> Result<Ca> {
        let layout = Layout::new(&config.data_dir);
        if layout.ca_key().exists() || layout.ca_cert().exists() || layout.token_key().exists() {
            return Err(Error::Conflict(format!(
                "a CA already exists in {} (refusing to overwrite it; choose another --data-dir)",
                layout.dir().display()
            )));
        }
        if config.needs_passphrase() && request.passphrase.len() < MIN_PASSPHRASE_LEN {
            let what = match config.token() {
                None => "the CA key passphrase",
                Some(_) => "with ocsp.key_source = \"file\", the passphrase protecting the OCSP responder key",
            };
            return Err(Error::Key(format!(
                "{what} must be at least {MIN_PASSPHRASE_LEN} characters ({})",
                passphrase_hint()
            )));
        }
        let pin = match (config.token(), &request.pin) {
            (Some(_), None) => {
                return Err(Error::Key(format!(
                    "init with key.source = \"pkcs11\" needs the token's PIN: {}",
                    pin_hint()
                )))
            }
            (_, pin) => pin.clone(),
        };
        let subject = parse_subject(&request.subject)?;
        let endpoints = Endpoints::new(config.base_url.as_deref().unwrap_or(&request.base_url))?;
        if request.validity.as_secs() < 86_400 {
            return Err(Error::InvalidInput(
                "CA validity must be at least 1d".into(),
            ));
        }
        std::fs::create_dir_all(layout.dir())
            .map_err(Error::io("cannot create data directory", layout.dir()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(layout.dir(), std::fs::Permissions::from_mode(0o700));
        }

        // The store first: a database that belongs to another CA is refused
        // before a key is generated (in a token, that key would outlive the refusal).
        let store = SqlStore::connect(&config.database_url()).await?;
        store.migrate().await?;
        if store.meta("ca_spki_sha256").await?.is_some() {
            return Err(Error::Conflict(
                "the database already belongs to a CA (refusing to overwrite it)".into(),
            ));
        }
        let now = now();
        let (not_before, validity) = (now - crate::pki::x509::BACKDATE, request.validity.to_time());
        let passphrase = Arc::new(Passphrase::new(&request.passphrase));
        let (signer, token, der): (Arc<dyn Signer>, _, _) = match (config.token(), pin) {
            (Some(token_config), Some(pin)) => {
                let (token_config, algorithm) = (token_config.clone(), request.key);
                let label = common_name(&request.subject);
                let (token, signer, der) = blocking(move || {
                    let token = Token::open(&token_config, &pin)?;
                    let signer = token.generate(algorithm, &label)?;
                    let der = build_ca_certificate(subject, &signer, not_before, validity)?;
                    Ok((token, signer, der))
                })
                .await?;
                write_key_record(&layout.token_key(), signer.key())?;
                (Arc::new(signer), Some(token), der)
            }
            _ => {
                let key = request.key.generate()?;
                let signer = FileSigner::new(key.clone())?;
                let der = build_ca_certificate(subject, &signer, not_before, validity)?;
                write_encrypted_key(&layout.ca_key(), &key, &passphrase, KeyPurpose::CaSigning)?;
                (Arc::new(signer), None, der)
            }
        };
        let ca_cert = CaCertificate::from_der(der.0.clone())?;
        crate::fsutil::write_file(&layout.ca_cert(), der.to_pem().as_bytes())?;
        if config.policies_dir.is_none() && !layout.policies().exists() {
            std::fs::create_dir_all(layout.policies())
                .map_err(Error::io("cannot create", layout.policies()))?;
            for (file, text) in crate::policy::SHIPPED {
                crate::fsutil::write_file(&layout.policies().join(file), text.as_bytes())?;
            }
        }
        store.set_meta("base_url", &endpoints.base_url).await?;
        store
            .set_meta(
                "ca_spki_sha256",
                &hex::encode(crate::hash::sha256(ca_cert.public_key().spki_der())),
            )
            .await?;
        let mut draft = AuditDraft::new(actor, "init", request.subject.clone());
        draft.details = match &token {
            Some(token) => format!(
                "key={} source=pkcs11 token={} base_url={}",
                request.key,
                token.label(),
                endpoints.base_url
            ),
            None => format!("key={} base_url={}", request.key, endpoints.base_url),
        };
        store.audit(draft, now).await?;
        let single = Arc::new(Issuer {
            number: 1,
            id: crate::pki::x509::issuer_id(&ca_cert),
            state: crate::store::IssuerState::Active,
            certificate: ca_cert.clone(),
            signer: Some(Arc::clone(&signer)),
            hashes: IssuerHashes::new(&ca_cert)?,
            endpoints: endpoints.clone(),
        });
        let ca = Ca {
            store: Arc::new(store),
            issuer_hashes: IssuerHashes::new(&ca_cert)?,
            tokens: Default::default(),
            issuers: vec![single],
            active_issuer: 1,
            root: None,
            ca_cert,
            endpoints,
            policies: load_policies(config, &layout)?,
            default_policy: config.default_policy.clone(),
            crl_validity: config.crl_validity,
            ocsp_validity: config.ocsp_validity,
            signer: Some(signer),
            passphrase: (!request.passphrase.is_empty()).then_some(passphrase),
            key_hint: if token.is_some() {
                pin_hint()
            } else {
                passphrase_hint()
            },
            token,
            ocsp_key_source: config.ocsp_key_source,
        };
        ca.publish_crl(actor).await?;
        Ok(ca)
    }

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
            issuers,
            active_issuer,
            root,
        })
    }

    fn shared_signer(&self) -> Result<Arc<dyn Signer>> {
        self.signer
            .clone()
            .ok_or_else(|| Error::Key(format!("this needs the CA key: {}", self.key_hint)))
    }

    /// Whether the CA key can sign now: `Err` with the reason when its token
    /// is unavailable. A token that went away is re-opened here (at most
    /// once a second), so polling this restores service once it is back.
    pub async fn check_key(&self) -> Result<()> {
        if self.signer.is_none() {
            return Err(Error::Key(format!(
                "the CA key is not loaded: {}",
                self.key_hint
            )));
        }
        match &self.token {
            None => Ok(()),
            Some(token) => {
                let token = Arc::clone(token);
                blocking(move || token.check().map_err(Error::SignerUnavailable)).await
            }
        }
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

    fn policy_of_kind(&self, name: &str, kind: PolicyKind) -> Result<&Policy> {
        let policy = self.policies.get(name)?;
        if policy.kind != kind {
            let how = match policy.kind {
                PolicyKind::Pkcs12 => "issue or reissue",
                PolicyKind::Csr => "sign-csr",
                PolicyKind::OcspResponder => "the OCSP responder rotation",
                PolicyKind::TlsServer => "server-cert",
            };
            return Err(Error::Policy(format!(
                "policy {name} is used with {how}, not here"
            )));
        }
        Ok(policy)
    }

    async fn check_no_active(
        &self,
        tenant: &TenantId,
        admin: &AdminId,
        policy: &str,
    ) -> Result<()> {
        let active = self
            .store
            .active_for(tenant.as_str(), admin.as_str(), now())
            .await?;
        if let Some(existing) = active.iter().find(|r| r.policy == policy) {
            return Err(Error::Conflict(format!(
                "{tenant}/{admin} already has an active certificate under policy {policy} (serial {}): use reissue to replace it",
                existing.serial
            )));
        }
        Ok(())
    }

    /// First certificate for (tenant, admin, policy): generates the key and bundle.
    pub async fn prepare_issue(&self, request: &IssueRequest) -> Result<PreparedIssuance> {
        let (tenant, admin) = (
            TenantId::parse_customer(&request.tenant)?,
            AdminId::parse(&request.admin)?,
        );
        let policy_name = request
            .policy
            .clone()
            .unwrap_or_else(|| self.default_policy.clone());
        let policy = self.policy_of_kind(&policy_name, PolicyKind::Pkcs12)?;
        self.check_no_active(&tenant, &admin, &policy.name).await?;
        self.prepare_bundle(
            policy,
            &tenant,
            &admin,
            request.password.clone(),
            None,
            "issue",
        )
        .await
    }

    /// New certificate and bundle; every active one of the same policy is revoked
    /// with `reason` when this is committed.
    ///
    /// A reissue replaces; it never adds (DESIGN §3). With
    /// [`ReissueMode::ReplaceOnly`] (renewers) there must be an active
    /// certificate under the policy, and the store checks it again inside the
    /// committing transaction, so no race turns the call into a first issuance.
    /// With [`ReissueMode::ReplaceOrIssue`] (callers who may also issue) an
    /// admin with nothing active gets a first certificate. Under either mode,
    /// naming a policy other than the one the admin's active certificate is
    /// under is refused (409): switching policies is revoke + issue, two
    /// explicit steps, so no reissue leaves two login certificates active.
    pub async fn prepare_reissue(
        &self,
        request: &IssueRequest,
        reason: RevocationReason,
        mode: ReissueMode,
    ) -> Result<PreparedIssuance> {
        let (tenant, admin) = (
            TenantId::parse_customer(&request.tenant)?,
            AdminId::parse(&request.admin)?,
        );
        let active = self
            .store
            .active_for(tenant.as_str(), admin.as_str(), now())
            .await?;
        let mut names: Vec<&str> = active.iter().map(|r| r.policy.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let policy_name = match (&request.policy, names.as_slice()) {
            (Some(name), _) => name.clone(),
            (None, [one]) => one.to_string(),
            (None, []) => {
                return Err(Error::NotFound(format!(
                    "{tenant}/{admin} has no active certificate to replace: name the policy to reissue under, or use issue"
                )))
            }
            (None, many) => {
                return Err(Error::InvalidInput(format!(
                    "{tenant}/{admin} has active certificates under several policies ({}): name the one to reissue",
                    many.join(", ")
                )))
            }
        };
        let policy = self.policy_of_kind(&policy_name, PolicyKind::Pkcs12)?;
        if !names.contains(&policy.name.as_str()) {
            if let Some(other) = active.first() {
                return Err(Error::Conflict(format!(
                    "{tenant}/{admin} has an active certificate under policy {} (serial {}), none under {}: a reissue replaces a certificate under its own policy; to switch policies, revoke {} and issue under {}",
                    other.policy, other.serial, policy.name, other.serial, policy.name
                )));
            }
            if mode == ReissueMode::ReplaceOnly {
                return Err(not_replaceable(
                    tenant.as_str(),
                    admin.as_str(),
                    &policy.name,
                ));
            }
        }
        self.prepare_bundle(
            policy,
            &tenant,
            &admin,
            request.password.clone(),
            Some(Supersede {
                reason,
                require_active: mode == ReissueMode::ReplaceOnly,
            }),
            "reissue",
        )
        .await
    }

    async fn prepare_bundle(
        &self,
        policy: &Policy,
        tenant: &TenantId,
        admin: &AdminId,
        password: Option<Zeroizing<String>>,
        supersede: Option<Supersede>,
        action: &'static str,
    ) -> Result<PreparedIssuance> {
        let settings = policy.pkcs12.clone().ok_or_else(|| {
            Error::Policy(format!("policy {} has no pkcs12 settings", policy.name))
        })?;
        let password = match password {
            Some(p) => {
                check_password(&p, &settings)?;
                p
            }
            None => generate_password(settings.password_length)?,
        };
        let signer = self.shared_signer()?;
        let (ca_cert, endpoints) = (self.ca_cert.clone(), self.endpoints.clone());
        let (policy, tenant, admin) = (policy.clone(), tenant.clone(), admin.clone());
        // Key generation, signing and PBKDF2 are CPU work: keep them off the async workers.
        let (record, bundle, password) = tokio::task::spawn_blocking(move || -> Result<_> {
            let (key, record) = generate_and_sign(
                &policy,
                &tenant,
                &admin,
                signer.as_ref(),
                &ca_cert,
                &endpoints,
            )?;
            let friendly_name = settings.friendly_name.render(&tenant, &admin);
            let bundle = build_pkcs12(
                &key,
                &record.der,
                &ca_cert.der().0,
                &settings,
                &friendly_name,
                &password,
            )?;
            Ok((record, bundle, password))
        })
        .await
        .map_err(|e| Error::Crypto(format!("issuance worker failed: {e}")))??;
        Ok(PreparedIssuance {
            record,
            supersede,
            action,
            bundle: Some(bundle),
            password: Some(password),
        })
    }

    /// Signs a client-held key's CSR (PEM or DER). Its signature must verify;
    /// its subject and extensions are ignored — the policy's apply.
    pub async fn prepare_sign_csr(
        &self,
        tenant: &str,
        admin: &str,
        policy: &str,
        csr: &[u8],
    ) -> Result<PreparedIssuance> {
        let (tenant, admin) = (TenantId::parse_customer(tenant)?, AdminId::parse(admin)?);
        let policy = self.policies.get(policy)?;
        if matches!(
            policy.kind,
            PolicyKind::OcspResponder | PolicyKind::TlsServer
        ) {
            return Err(Error::Policy(format!(
                "policy {} cannot be used to sign CSRs",
                policy.name
            )));
        }
        let public_key = crate::pki::csr::verified_public_key(csr, |algorithm| {
            if policy.keys.contains(&algorithm) {
                return Ok(());
            }
            Err(Error::InvalidInput(format!(
                "the CSR's key is {algorithm} but policy {} accepts {}",
                policy.name,
                policy
                    .keys
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        })?;
        // No look-up of an active certificate first: signing is cheap, and the
        // insertion refuses a second active certificate with the same message.
        let signer = self.shared_signer()?;
        let record = if signer.blocks() {
            let (policy, ca_cert, endpoints) =
                (policy.clone(), self.ca_cert.clone(), self.endpoints.clone());
            blocking(move || {
                sign_leaf(
                    &policy,
                    &tenant,
                    &admin,
                    &public_key,
                    &*signer,
                    &ca_cert,
                    &endpoints,
                )
            })
            .await?
        } else {
            sign_leaf(
                policy,
                &tenant,
                &admin,
                &public_key,
                &*signer,
                &self.ca_cert,
                &self.endpoints,
            )?
        };
        Ok(PreparedIssuance {
            record,
            supersede: None,
            action: "sign-csr",
            bundle: None,
            password: None,
        })
    }

    /// Makes a prepared issuance durable (one transaction, with its audit event).
    pub async fn commit(&self, prepared: PreparedIssuance, actor: &str) -> Result<Issuance> {
        self.commit_idempotent(prepared, None, actor).await
    }

    /// Like [`Ca::commit`], recording `idempotency` in the same transaction.
    pub async fn commit_idempotent(
        &self,
        prepared: PreparedIssuance,
        idempotency: Option<&IdempotencyKey>,
        actor: &str,
    ) -> Result<Issuance> {
        let mut record = prepared.record;
        // Leaves are signed by the active issuer (0 until committed); a
        // retired issuer signs only its own OCSP responder certificates.
        if record.issuer == 0 {
            record.issuer = self.active_issuer;
        }
        let mut draft = AuditDraft::new(
            actor,
            prepared.action,
            format!("{}/{}", record.tenant, record.admin),
        );
        draft.details = format!(
            "policy={} not_after={}",
            record.policy,
            crate::rfc3339(record.not_after)
        );
        let inserted = self
            .store
            .insert_certificate(&record, prepared.supersede, idempotency, draft, now())
            .await;
        let revoked = match (inserted, idempotency) {
            (Ok(revoked), _) => revoked,
            // A concurrent request with the same key won the race: answer as a retry.
            (Err(Error::Conflict(message)), Some(idem)) => {
                self.check_idempotency(idem).await?;
                return Err(Error::Conflict(message));
            }
            (Err(e), _) => return Err(e),
        };
        Ok(Issuance {
            record,
            revoked,
            bundle: prepared.bundle,
            password: prepared.password,
        })
    }

    /// Refuses a request whose `Idempotency-Key` was already used in the last 24 h:
    /// the same request gets `AlreadyDone` with the serial issued then (the bundle
    /// is not kept, so it cannot be returned again); a different one is invalid.
    pub async fn check_idempotency(&self, idem: &IdempotencyKey) -> Result<()> {
        let since = now() - time::Duration::seconds(crate::store::IDEMPOTENCY_WINDOW_SECS);
        let Some(earlier) = self.store.idempotency(&idem.key, since).await? else {
            return Ok(());
        };
        if earlier.request_hash != idem.request_hash {
            return Err(Error::InvalidInput(
                "this Idempotency-Key was already used for a different request: use a new key for a new request".into(),
            ));
        }
        Err(Error::AlreadyDone {
            message: format!(
                "this request was already carried out at {} with the same Idempotency-Key: certificate {} was issued and its bundle delivered then; the server keeps no copy of bundles or passwords, so if that bundle was lost, reissue again with a new key",
                crate::rfc3339(earlier.created_at),
                earlier.serial
            ),
            serial: earlier.serial.to_hex(),
        })
    }

    /// Revokes one certificate.
    pub async fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        invalidity_date: Option<OffsetDateTime>,
        actor: &str,
    ) -> Result<CertificateRecord> {
        // The CA's own certificates (the OCSP responder, ca-server's TLS
        // certificate) change only through CA commands (`ocsp-signer rotate`,
        // `server-cert`), never through a revocation: a revoked responder
        // would make every OCSP answer unverifiable.
        let existing = self.certificate(serial).await?;
        if existing.tenant == crate::ids::RESERVED_TENANT {
            return Err(Error::Forbidden(format!(
                "certificate {serial} belongs to the CA itself (tenant {}); it is replaced by `ca-cli ocsp-signer rotate` (OCSP responder) or `ca-cli server-cert` (ca-server's TLS certificate), never revoked directly",
                crate::ids::RESERVED_TENANT
            )));
        }
        let draft = AuditDraft::new(actor, "revoke", serial.to_hex());
        let mut record = self
            .store
            .revoke(serial, reason, invalidity_date, draft, now())
            .await?;
        if record.revoked_at.is_none() {
            // The row was read inside the transaction after the update.
            record.revoked_at = Some(now());
            record.reason = Some(reason);
        }
        Ok(record)
    }

    /// Builds, signs and publishes a fresh CRL of the active issuer.
    pub async fn publish_crl(&self, actor: &str) -> Result<PublishedCrl> {
        self.publish_crl_for(self.active_issuer, actor).await
    }

    /// True when the active issuer's published CRL misses a revocation, or
    /// has passed half its validity (DESIGN §5: regenerated on revocation and
    /// ahead of nextUpdate).
    pub async fn crl_needs_refresh(&self) -> Result<bool> {
        self.crl_needs_refresh_for(self.active_issuer).await
    }

    /// A counter every state change moves, by any process (the audit
    /// chain's sequence): servers poll it to drop what an issuance elsewhere
    /// makes stale.
    pub async fn change_counter(&self) -> Result<u64> {
        Ok(self.store.audit_head().await?.0)
    }

    /// Cheap state of the active issuer's CRL publication (polled by
    /// servers; its revision moves on every revocation of any issuer).
    pub async fn crl_status(&self) -> Result<crate::store::CrlStatus> {
        self.store.crl_status(self.active_issuer).await
    }

    /// Creates an API token that never expires; the returned secret is shown once.
    pub async fn create_token(
        &self,
        role: Role,
        tenant: Option<&str>,
        name: &str,
        actor: &str,
    ) -> Result<NewToken> {
        self.create_token_expiring(role, tenant, name, None, actor)
            .await
    }

    /// Creates an API token, expiring `expires_in` from now when given; the
    /// returned secret is shown once.
    pub async fn create_token_expiring(
        &self,
        role: Role,
        tenant: Option<&str>,
        name: &str,
        expires_in: Option<Duration>,
        actor: &str,
    ) -> Result<NewToken> {
        let tenant = crate::tokens::check_scope(tenant)?;
        let expires_at = expires_in.map(crate::tokens::expiry_from_now).transpose()?;
        if tenant.is_some() && !matches!(role, Role::Operator | Role::Renewer) {
            return Err(Error::InvalidInput(format!(
                "--tenant applies to operator and renewer tokens, not {role}"
            )));
        }
        if name.len() > 200 || name.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "token name must be at most 200 printable characters".into(),
            ));
        }
        let (id, token, hash) = crate::tokens::generate()?;
        let record = TokenRecord {
            id: id.clone(),
            role,
            tenant,
            name: name.to_owned(),
            created_at: crate::rfc3339(now()),
            revoked_at: None,
            expires_at,
        };
        let draft = AuditDraft::new(actor, "token-create", id);
        self.store
            .insert_token(&record, &hash, draft, now())
            .await?;
        Ok(NewToken { record, token })
    }

    /// All tokens.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.store.tokens().await
    }

    /// Revokes a token.
    pub async fn revoke_token(&self, id: &str, actor: &str) -> Result<()> {
        let draft = AuditDraft::new(actor, "token-revoke", id);
        let revoked = self.store.revoke_token(id, draft, now()).await;
        self.tokens.clear();
        revoked
    }

    /// Notices tokens revoked by other processes (servers call this on every
    /// store poll; until then, tokens are not cached).
    pub async fn refresh_token_cache(&self) -> Result<()> {
        let count = self.store.revoked_token_count().await?;
        self.tokens.observe_revoked(count);
        Ok(())
    }

    /// Checks a presented bearer token.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal> {
        let unauthenticated = || Error::Unauthenticated("invalid or revoked API token".into());
        let (id, secret) = crate::tokens::split(presented).ok_or_else(unauthenticated)?;
        let (record, stored_hash) = self.token_record(id).await?.ok_or_else(unauthenticated)?;
        let matches =
            crate::tokens::digests_equal(&crate::tokens::hash_secret(secret), &stored_hash);
        if !matches {
            return Err(unauthenticated());
        }
        Self::token_principal(record)
    }

    /// A token's record and secret hash, from the cache or the store.
    async fn token_record(&self, id: &str) -> Result<Option<(TokenRecord, String)>> {
        Ok(match self.tokens.get(id) {
            Ok(cached) => Some(cached),
            Err(epoch) => {
                let found = self.store.token(id).await?;
                if let Some((record, hash)) = &found {
                    self.tokens.insert(epoch, record, hash);
                }
                found
            }
        })
    }

    /// The caller a token record stands for, unless it is revoked or expired.
    /// The one place those two rules live: bearer tokens and console
    /// sessions signed in with one both come through here.
    fn token_principal(record: TokenRecord) -> Result<Principal> {
        if record.revoked_at.is_some() {
            return Err(Error::Unauthenticated(
                "invalid or revoked API token".into(),
            ));
        }
        // Checked on every use, cached or not: expiry needs no store poll.
        if let Some(expires_at) = record.expires_at {
            if now() >= expires_at {
                return Err(Error::TokenExpired(format!(
                    "API token {} expired at {}: create a new one",
                    record.id,
                    crate::rfc3339(expires_at)
                )));
            }
        }
        Ok(Principal {
            credential: crate::tokens::Credential::Token(record.id),
            role: record.role,
            tenant: record.tenant,
        })
    }

    /// The CA's name/key hashes, for matching OCSP CertIDs.
    pub fn issuer_hashes(&self) -> &IssuerHashes {
        &self.issuer_hashes
    }

    /// Lifetime of OCSP responses (nextUpdate − thisUpdate).
    pub fn ocsp_validity(&self) -> Duration {
        self.ocsp_validity
    }

    /// The status of one certificate as OCSP reports it (`None`: not a serial of ours).
    pub async fn ocsp_state(
        &self,
        serial: Option<&Serial>,
    ) -> std::result::Result<CertState, OcspFailure> {
        self.ocsp_state_for(self.active_issuer, serial).await
    }

    /// The status of one certificate of issuer `number` as OCSP reports it:
    /// a serial another of our issuers signed is `unknown` under this one
    /// (RFC 6960 §2.2: the CertID names the issuer).
    pub async fn ocsp_state_for(
        &self,
        number: u64,
        serial: Option<&Serial>,
    ) -> std::result::Result<CertState, OcspFailure> {
        let Some(serial) = serial else {
            return Ok(CertState::Unknown);
        };
        let record = self.store.certificate(serial).await.map_err(|e| match e {
            Error::Unavailable(_) | Error::SignerUnavailable(_) => OcspFailure::TryLater,
            _ => OcspFailure::Internal,
        })?;
        Ok(match record {
            None => CertState::Unknown,
            Some(record) if record.issuer != number => CertState::Unknown,
            Some(record) => match record.revoked_at {
                Some(at) => CertState::Revoked {
                    at,
                    reason: record.reason.unwrap_or(RevocationReason::Unspecified),
                },
                None => CertState::Good,
            },
        })
    }

    /// The active issuer's delegated OCSP responder in the store, if one was issued.
    pub async fn load_ocsp_responder(&self) -> Result<Option<OcspResponder>> {
        self.load_ocsp_responder_for(self.active_issuer).await
    }

    /// Issuer `number`'s delegated OCSP responder in the store, if one was
    /// issued. Each issuer has its own: a delegated responder answers only
    /// for the CA that certified it (RFC 6960 §4.2.2.2).
    pub async fn load_ocsp_responder_for(&self, number: u64) -> Result<Option<OcspResponder>> {
        let (cert_meta, key_meta) = responder_meta(number);
        let (Some(cert_pem), Some(key_text)) = (
            self.store.meta(&cert_meta).await?,
            self.store.meta(&key_meta).await?,
        ) else {
            return Ok(None);
        };
        let der = crate::pki::x509::certificate_der_from_pem_or_der(cert_pem.as_bytes())?;
        if let Some(key) = TokenKey::from_json(&key_text) {
            let token = self.token.clone().ok_or_else(|| {
                Error::Key(format!(
                    "the OCSP responder key is in token \"{}\": {}",
                    key.token_label.escape_debug(),
                    pin_hint()
                ))
            })?;
            let public = responder_public_key(&der)?;
            let signer = blocking(move || {
                Pkcs11Signer::find(&token, key, public, "the OCSP responder certificate")
            })
            .await?;
            return Ok(Some(OcspResponder::new(der, Arc::new(signer))?));
        }
        let passphrase = self.passphrase.as_ref().ok_or_else(|| {
            Error::Key(format!(
                "the OCSP responder key is a file encrypted with the CA passphrase: {}",
                passphrase_hint()
            ))
        })?;
        let key = crate::keys::decrypt_key(
            &key_text,
            passphrase,
            KeyPurpose::OcspResponder,
            "the OCSP responder key",
        )?;
        Ok(Some(OcspResponder::new(
            der,
            Arc::new(FileSigner::new(key)?),
        )?))
    }

    /// Issues a new delegated responder certificate and key (policy kind
    /// `ocsp-responder`), supersedes the previous one, and stores it for every
    /// server sharing this store.
    pub async fn rotate_ocsp_responder(&self, actor: &str) -> Result<OcspResponder> {
        self.rotate_ocsp_responder_for(self.active_issuer, actor)
            .await
    }

    /// Like [`Ca::rotate_ocsp_responder`], for issuer `number` (a retired
    /// issuer's responder is certified by the retired issuer's key).
    pub async fn rotate_ocsp_responder_for(
        &self,
        number: u64,
        actor: &str,
    ) -> Result<OcspResponder> {
        let issuer = Arc::clone(
            self.issuer_by_number(number)
                .ok_or_else(|| Error::NotFound(format!("no issuer numbered {number}")))?,
        );
        let (cert_meta, key_meta) = responder_meta(number);
        let policy = self
            .policies
            .ocsp_responder()
            .ok_or_else(|| {
                Error::Policy(format!(
                    "no policy with kind = \"ocsp-responder\" in {}",
                    self.policies.source
                ))
            })?
            .clone();
        let signer = issuer
            .signer
            .clone()
            .ok_or_else(|| Error::Key(format!("this needs the CA key: {}", self.key_hint)))?;
        // With a token, the new key is generated in it (the default for
        // key.source = "pkcs11"); else it is encrypted with the passphrase.
        let in_token = match (&self.token, self.ocsp_key_source) {
            (Some(token), OcspKeySource::Pkcs11) => Some(Arc::clone(token)),
            _ => None,
        };
        let passphrase = match in_token {
            Some(_) => None,
            None => Some(self.passphrase.clone().ok_or_else(|| {
                Error::Key(format!(
                    "a new OCSP responder key is encrypted with the CA passphrase: {}",
                    passphrase_hint()
                ))
            })?),
        };
        let label = responder_key_label(&issuer.certificate.public_key().key_identifier());
        let (ca_cert, endpoints) = (issuer.certificate.clone(), issuer.endpoints.clone());
        let key_label = label.clone();
        let (record, key_text, responder_signer) = blocking(move || {
            let (tenant, admin) = (
                TenantId::parse(OCSP_TENANT)?,
                AdminId::parse(&responder_admin(number))?,
            );
            let sign = |public_key: &PublicKey| {
                sign_leaf(
                    &policy,
                    &tenant,
                    &admin,
                    public_key,
                    signer.as_ref(),
                    &ca_cert,
                    &endpoints,
                )
            };
            match (in_token, passphrase) {
                (Some(token), _) => {
                    let key = token.generate(policy.generated_key(), &key_label)?;
                    let record = sign(key.public_key())?;
                    let key_text = Zeroizing::new(key.key().to_json());
                    Ok((record, key_text, Arc::new(key) as Arc<dyn Signer>))
                }
                (None, Some(passphrase)) => {
                    let key = policy.generated_key().generate()?;
                    let record = sign(&PublicKey::from_pkey(&key)?)?;
                    let key_text =
                        crate::keys::encrypt_key(&key, &passphrase, KeyPurpose::OcspResponder)?;
                    Ok((
                        record,
                        key_text,
                        Arc::new(FileSigner::new(key)?) as Arc<dyn Signer>,
                    ))
                }
                (None, None) => Err(Error::Key("no place for the OCSP responder key".into())),
            }
        })
        .await?;
        let mut record = record;
        record.issuer = number;
        let prepared = PreparedIssuance {
            record,
            supersede: Some(Supersede {
                require_active: false,
                reason: RevocationReason::Superseded,
            }),
            action: "ocsp-signer-rotate",
            bundle: None,
            password: None,
        };
        let previous = self.store.meta(&key_meta).await?;
        let issuance = self.commit(prepared, actor).await?;
        self.store.set_meta(&key_meta, &key_text).await?;
        self.store
            .set_meta(
                &cert_meta,
                &crate::pki::x509::pem_encode("CERTIFICATE", &issuance.record.der),
            )
            .await?;
        if let (Some(token), Some(current)) = (&self.token, TokenKey::from_json(&key_text)) {
            // Retired responder keys leave the token; the one just replaced
            // stays, as other servers sign with it until they notice (~5 s).
            let previous = previous.as_deref().and_then(TokenKey::from_json);
            let token = Arc::clone(token);
            let _ = blocking(move || {
                let keep: Vec<&TokenKey> = [Some(&current), previous.as_ref()]
                    .into_iter()
                    .flatten()
                    .collect();
                token.destroy_except(&label, &keep)
            })
            .await;
        }
        OcspResponder::new(issuance.record.der, responder_signer)
    }

    /// The responder to sign with: the stored one, or a fresh one when there is
    /// none or the stored one has passed half its validity.
    pub async fn ensure_ocsp_responder(&self, actor: &str) -> Result<OcspResponder> {
        self.ensure_ocsp_responder_for(self.active_issuer, actor)
            .await
    }

    /// Like [`Ca::ensure_ocsp_responder`], for issuer `number`.
    pub async fn ensure_ocsp_responder_for(
        &self,
        number: u64,
        actor: &str,
    ) -> Result<OcspResponder> {
        if let Some(responder) = self.load_ocsp_responder_for(number).await? {
            if !self.ocsp_rotation_due(&responder) {
                return Ok(responder);
            }
        }
        self.rotate_ocsp_responder_for(number, actor).await
    }

    /// True once a responder certificate has less than half its policy validity left.
    pub fn ocsp_rotation_due(&self, responder: &OcspResponder) -> bool {
        let validity = self
            .policies
            .ocsp_responder()
            .map(|p| p.validity.to_time())
            .unwrap_or(time::Duration::days(7));
        now() + validity / 2 >= responder.not_after()
    }

    /// The serial of the stored responder certificate (cheap; to notice rotation by another process).
    pub async fn ocsp_responder_fingerprint(&self) -> Result<Option<String>> {
        self.ocsp_responder_fingerprint_for(self.active_issuer)
            .await
    }

    /// Like [`Ca::ocsp_responder_fingerprint`], for issuer `number`.
    pub async fn ocsp_responder_fingerprint_for(&self, number: u64) -> Result<Option<String>> {
        Ok(self
            .store
            .meta(&responder_meta(number).0)
            .await?
            .map(|pem| hex::encode(crate::hash::sha256(pem.as_bytes()))))
    }

    /// The active issuer's published CRL.
    pub async fn latest_crl(&self) -> Result<Option<PublishedCrl>> {
        self.store.latest_crl(self.active_issuer).await
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

    /// Audit events after `after_seq`.
    pub async fn audit_events(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditEvent>> {
        self.store.audit_events(after_seq, limit).await
    }

    /// Reads the whole chain and verifies it.
    ///
    /// The head is read first and the events up to it are verified: a running
    /// server appends events (each with its head) meanwhile, and those are
    /// covered by the next run, not mistaken for a broken chain.
    pub async fn verify_audit(&self) -> Result<AuditReport> {
        verify_store_audit(&*self.store).await
    }
}

/// Verifies the audit chain of `store` (see [`Ca::verify_audit`]); also run
/// on a backup's snapshot, which has no `Ca`.
pub(crate) async fn verify_store_audit(store: &dyn Store) -> Result<AuditReport> {
    let head = store.audit_head().await?;
    let mut events = Vec::new();
    loop {
        let after = events.last().map(|e: &AuditEvent| e.seq).unwrap_or(0);
        if after >= head.0 {
            break;
        }
        let page = store.audit_events(after, 10_000).await?;
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    events.truncate(events.partition_point(|e| e.seq <= head.0));
    let count = verify_chain(&events, (head.0, &head.1))?;
    Ok(AuditReport {
        events: count,
        head: head.1,
    })
}

/// A fresh key of the policy's type and its certificate naming `alt_names`.
fn generate_and_sign_with_names(
    policy: &Policy,
    tenant: &TenantId,
    admin: &AdminId,
    alt_names: &[crate::pki::x509::AltName],
    signer: &dyn Signer,
    ca_cert: &CaCertificate,
    endpoints: &Endpoints,
) -> Result<(PKey<Private>, CertificateRecord)> {
    let key = policy.generated_key().generate()?;
    let public_key = PublicKey::from_pkey(&key)?;
    let leaf = Leaf {
        policy,
        tenant,
        admin,
        public_key: &public_key,
        alt_names,
    };
    let record = leaf.sign(signer, ca_cert, endpoints)?;
    Ok((key, record))
}

/// The public key of a responder certificate (DER).
fn responder_public_key(der: &[u8]) -> Result<PublicKey> {
    use der::{Decode, Encode};
    let certificate = x509_cert::Certificate::from_der(der)
        .map_err(|e| Error::Crypto(format!("responder certificate: {e}")))?;
    let spki = certificate
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| Error::Crypto(e.to_string()))?;
    PublicKey::from_spki_der(&spki)
}

/// A fresh key of the policy's type and its signed certificate.
fn generate_and_sign(
    policy: &Policy,
    tenant: &TenantId,
    admin: &AdminId,
    signer: &dyn Signer,
    ca_cert: &CaCertificate,
    endpoints: &Endpoints,
) -> Result<(PKey<Private>, CertificateRecord)> {
    generate_and_sign_with_names(policy, tenant, admin, &[], signer, ca_cert, endpoints)
}

fn sign_leaf(
    policy: &Policy,
    tenant: &TenantId,
    admin: &AdminId,
    public_key: &PublicKey,
    signer: &dyn Signer,
    ca_cert: &CaCertificate,
    endpoints: &Endpoints,
) -> Result<CertificateRecord> {
    let leaf = Leaf {
        policy,
        tenant,
        admin,
        public_key,
        alt_names: &[],
    };
    leaf.sign(signer, ca_cert, endpoints)
}

/// What a leaf certificate is about; [`Leaf::sign`] draws its serial and
/// makes its record.
struct Leaf<'a> {
    policy: &'a Policy,
    tenant: &'a TenantId,
    admin: &'a AdminId,
    public_key: &'a PublicKey,
    alt_names: &'a [crate::pki::x509::AltName],
}

impl Leaf<'_> {
    fn sign(
        &self,
        signer: &dyn Signer,
        ca_cert: &CaCertificate,
        endpoints: &Endpoints,
    ) -> Result<CertificateRecord> {
        let request = LeafRequest {
            policy: self.policy,
            tenant: self.tenant,
            admin: self.admin,
            public_key: self.public_key,
            serial: Serial::random()?,
            now: now(),
            alt_names: self.alt_names,
        };
        let issued = build_leaf(&request, ca_cert, signer, endpoints)?;
        Ok(CertificateRecord {
            serial: issued.serial,
            tenant: self.tenant.to_string(),
            admin: self.admin.to_string(),
            policy: self.policy.name.clone(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            revoked_at: None,
            reason: None,
            invalidity_date: None,
            der: issued.der.0,
            // Set to the active issuer's number when committed.
            issuer: 0,
        })
    }
}

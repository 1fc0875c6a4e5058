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
use crate::config::Config;
use crate::crl::CrlBuilder;
use crate::duration::Duration;
use crate::error::{Error, Result};
use crate::ids::{AdminId, Serial, TenantId};
use crate::keys::{
    write_encrypted_key, KeyAlgorithm, KeyPurpose, Passphrase, PublicKey, MIN_PASSPHRASE_LEN,
};
use crate::ocsp::{CertState, IssuerHashes, OcspFailure, OcspResponder};
use crate::pkcs12::{build_pkcs12, check_password, generate_password, Pkcs12Der};
use crate::policy::{Policies, Policy, PolicyKind};
use crate::reason::RevocationReason;
use crate::signer::{FileSigner, Signer};
use crate::store::{
    CertificateRecord, IdempotencyKey, ListFilter, PublishedCrl, SqlStore, Store, Supersede,
};
use crate::tokens::{NewToken, Principal, Role, TokenRecord};
use crate::x509::{
    build_ca_certificate, build_leaf, parse_subject, CaCertificate, Endpoints, LeafRequest,
};

const OCSP_CERT_META: &str = "ocsp_responder_cert";
const OCSP_KEY_META: &str = "ocsp_responder_key";
/// The responder certificate is recorded under this tenant/admin.
const OCSP_TENANT: &str = crate::ids::RESERVED_TENANT;
const OCSP_ADMIN: &str = "ocsp-responder";

mod client_auth;
mod server_cert;

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

    /// Editable copies of the policies.
    pub fn policies(&self) -> PathBuf {
        self.dir.join("policies")
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
    /// Passphrase for the key file.
    pub passphrase: Zeroizing<Vec<u8>>,
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
    issuer_hashes: IssuerHashes,
    tokens: crate::tokens::TokenCache,
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

impl Ca {
    /// Creates the data directory, store, encrypted CA key and self-signed CA
    /// certificate. Refuses to touch an existing CA.
    pub async fn init(config: &Config, request: InitRequest, actor: &str) -> Result<Ca> {
        let layout = Layout::new(&config.data_dir);
        if layout.ca_key().exists() || layout.ca_cert().exists() {
            return Err(Error::Conflict(format!(
                "a CA already exists in {} (refusing to overwrite it; choose another --data-dir)",
                layout.dir().display()
            )));
        }
        if request.passphrase.len() < MIN_PASSPHRASE_LEN {
            return Err(Error::Key(format!(
                "the CA key passphrase must be at least {MIN_PASSPHRASE_LEN} characters ({})",
                passphrase_hint()
            )));
        }
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

        let key = request.key.generate()?;
        let signer = FileSigner::new(key.clone())?;
        let now = now();
        let der = build_ca_certificate(
            subject,
            &signer,
            now - crate::x509::BACKDATE,
            request.validity.to_time(),
        )?;
        let ca_cert = CaCertificate::from_der(der.0.clone())?;

        let store = SqlStore::connect(&config.database_url()).await?;
        store.migrate().await?;
        if store.meta("ca_spki_sha256").await?.is_some() {
            return Err(Error::Conflict(
                "the database already belongs to a CA (refusing to overwrite it)".into(),
            ));
        }
        let passphrase = Arc::new(Passphrase::new(&request.passphrase));
        write_encrypted_key(&layout.ca_key(), &key, &passphrase, KeyPurpose::CaSigning)?;
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
        draft.details = format!("key={} base_url={}", request.key, endpoints.base_url);
        store.audit(draft, now).await?;
        let ca = Ca {
            store: Arc::new(store),
            issuer_hashes: IssuerHashes::new(&ca_cert)?,
            tokens: Default::default(),
            ca_cert,
            endpoints,
            policies: load_policies(config, &layout)?,
            default_policy: config.default_policy.clone(),
            crl_validity: config.crl_validity,
            ocsp_validity: config.ocsp_validity,
            signer: Some(Arc::new(signer)),
            passphrase: Some(passphrase),
        };
        ca.publish_crl(actor).await?;
        Ok(ca)
    }

    /// Opens an existing CA. With a passphrase the key is unlocked (and checked
    /// against the certificate); without, only key-less operations work.
    pub async fn open(config: &Config, passphrase: Option<&[u8]>) -> Result<Ca> {
        let layout = Layout::new(&config.data_dir);
        if !layout.ca_cert().exists() {
            return Err(Error::NotFound(format!(
                "no CA in {}: run `ca-cli init` first, or point --data-dir / CA_DATA_DIR at the data directory",
                layout.dir().display()
            )));
        }
        let pem =
            std::fs::read(layout.ca_cert()).map_err(Error::io("cannot read", layout.ca_cert()))?;
        let ca_cert = CaCertificate::from_der(crate::x509::certificate_der_from_pem_or_der(&pem)?)?;
        let passphrase = passphrase.map(|p| Arc::new(Passphrase::new(p)));
        let signer: Option<Arc<dyn Signer>> = match &passphrase {
            Some(p) => {
                let signer = FileSigner::unlock(&layout.ca_key(), p)?;
                crate::signer::check_matches(&signer, ca_cert.public_key().spki_der())?;
                Some(Arc::new(signer))
            }
            None => None,
        };
        let store = SqlStore::connect(&config.database_url()).await?;
        store.migrate().await?;
        let base_url = match &config.base_url {
            Some(url) => url.clone(),
            None => store.meta("base_url").await?.ok_or_else(|| {
                Error::Config(
                    "the store has no base_url: set base_url in the config or CA_BASE_URL".into(),
                )
            })?,
        };
        Ok(Ca {
            store: Arc::new(store),
            issuer_hashes: IssuerHashes::new(&ca_cert)?,
            tokens: Default::default(),
            ca_cert,
            endpoints: Endpoints::new(&base_url)?,
            policies: load_policies(config, &layout)?,
            default_policy: config.default_policy.clone(),
            crl_validity: config.crl_validity,
            ocsp_validity: config.ocsp_validity,
            passphrase: signer.as_ref().and(passphrase),
            signer,
        })
    }

    fn shared_signer(&self) -> Result<Arc<dyn Signer>> {
        self.signer
            .clone()
            .ok_or_else(|| Error::Key(format!("this needs the CA key: {}", passphrase_hint())))
    }

    fn signer(&self) -> Result<&dyn Signer> {
        self.signer
            .as_deref()
            .ok_or_else(|| Error::Key(format!("this needs the CA key: {}", passphrase_hint())))
    }

    /// The CA certificate.
    pub fn ca_certificate(&self) -> &CaCertificate {
        &self.ca_cert
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
        let public_key = crate::csr::verified_public_key(csr, |algorithm| {
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
        let record = sign_leaf(
            policy,
            &tenant,
            &admin,
            &public_key,
            self.signer()?,
            &self.ca_cert,
            &self.endpoints,
        )?;
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
        let record = prepared.record;
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
        // The CA's own certificates (the OCSP responder) change only through
        // CA commands (`ocsp-signer rotate`), never through a revocation: a
        // revoked responder would make every OCSP answer unverifiable.
        let existing = self.certificate(serial).await?;
        if existing.tenant == crate::ids::RESERVED_TENANT {
            return Err(Error::Forbidden(format!(
                "certificate {serial} belongs to the CA itself (tenant {}); it is replaced by `ca-cli ocsp-signer rotate`, never revoked directly",
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

    /// Builds, signs and publishes a fresh CRL.
    pub async fn publish_crl(&self, actor: &str) -> Result<PublishedCrl> {
        let signer = self.signer()?;
        let this_update = now();
        let next_update = this_update + self.crl_validity.to_time();
        let (number, revision) = self.store.begin_crl().await?;
        let mut builder = CrlBuilder::new(&self.ca_cert, signer, number, this_update, next_update)?;
        self.store
            .revoked_entries(this_update, &mut |entry| builder.push(&entry))
            .await?;
        let count = builder.entries();
        let der = builder.finish(signer)?;
        let crl = PublishedCrl {
            number,
            this_update,
            next_update,
            der: der.0,
            revision,
            entries: count,
        };
        let draft = AuditDraft::new(actor, "crl", format!("crl {number}"));
        self.store.publish_crl(&crl, draft).await?;
        Ok(crl)
    }

    /// True when the published CRL misses a revocation, or has passed half its
    /// validity (DESIGN §5: regenerated on revocation and ahead of nextUpdate).
    pub async fn crl_needs_refresh(&self) -> Result<bool> {
        let status = self.store.crl_status().await?;
        let (Some(this_update), Some(next_update)) = (status.this_update, status.next_update)
        else {
            return Ok(true);
        };
        let half_life = this_update + (next_update - this_update) / 2;
        Ok(status.revision > status.published_revision || now() >= half_life)
    }

    /// A counter every state change moves, by any process (the audit
    /// chain's sequence): servers poll it to drop what an issuance elsewhere
    /// makes stale.
    pub async fn change_counter(&self) -> Result<u64> {
        Ok(self.store.audit_head().await?.0)
    }

    /// Cheap state of CRL publication (polled by servers).
    pub async fn crl_status(&self) -> Result<crate::store::CrlStatus> {
        self.store.crl_status().await
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
        let (record, stored_hash) = match self.tokens.get(id) {
            Ok(cached) => cached,
            Err(epoch) => {
                let (record, hash) = self.store.token(id).await?.ok_or_else(unauthenticated)?;
                self.tokens.insert(epoch, &record, &hash);
                (record, hash)
            }
        };
        let matches =
            crate::tokens::digests_equal(&crate::tokens::hash_secret(secret), &stored_hash);
        if !matches || record.revoked_at.is_some() {
            return Err(unauthenticated());
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
        let Some(serial) = serial else {
            return Ok(CertState::Unknown);
        };
        let record = self.store.certificate(serial).await.map_err(|e| match e {
            Error::Unavailable(_) => OcspFailure::TryLater,
            _ => OcspFailure::Internal,
        })?;
        Ok(match record {
            None => CertState::Unknown,
            Some(record) => match record.revoked_at {
                Some(at) => CertState::Revoked {
                    at,
                    reason: record.reason.unwrap_or(RevocationReason::Unspecified),
                },
                None => CertState::Good,
            },
        })
    }

    /// The delegated OCSP responder in the store, if one was issued.
    pub async fn load_ocsp_responder(&self) -> Result<Option<OcspResponder>> {
        let (Some(cert_pem), Some(key_text)) = (
            self.store.meta(OCSP_CERT_META).await?,
            self.store.meta(OCSP_KEY_META).await?,
        ) else {
            return Ok(None);
        };
        let passphrase = self.passphrase.as_ref().ok_or_else(|| {
            Error::Key(format!(
                "the OCSP responder needs the CA key: {}",
                passphrase_hint()
            ))
        })?;
        let key = crate::keys::decrypt_key(
            &key_text,
            passphrase,
            KeyPurpose::OcspResponder,
            "the OCSP responder key",
        )?;
        let der = crate::x509::certificate_der_from_pem_or_der(cert_pem.as_bytes())?;
        Ok(Some(OcspResponder::new(
            der,
            Arc::new(FileSigner::new(key)?),
        )?))
    }

    /// Issues a new delegated responder certificate and key (policy kind
    /// `ocsp-responder`), supersedes the previous one, and stores it for every
    /// server sharing this store.
    pub async fn rotate_ocsp_responder(&self, actor: &str) -> Result<OcspResponder> {
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
        let signer = self.shared_signer()?;
        let passphrase = self
            .passphrase
            .clone()
            .ok_or_else(|| Error::Key(format!("this needs the CA key: {}", passphrase_hint())))?;
        let (ca_cert, endpoints) = (self.ca_cert.clone(), self.endpoints.clone());
        let (record, key_text, key) = tokio::task::spawn_blocking(move || -> Result<_> {
            let (tenant, admin) = (TenantId::parse(OCSP_TENANT)?, AdminId::parse(OCSP_ADMIN)?);
            let (key, record) = generate_and_sign(
                &policy,
                &tenant,
                &admin,
                signer.as_ref(),
                &ca_cert,
                &endpoints,
            )?;
            let key_text = crate::keys::encrypt_key(&key, &passphrase, KeyPurpose::OcspResponder)?;
            Ok((record, key_text, key))
        })
        .await
        .map_err(|e| Error::Crypto(format!("responder worker failed: {e}")))??;
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
        let issuance = self.commit(prepared, actor).await?;
        self.store.set_meta(OCSP_KEY_META, &key_text).await?;
        self.store
            .set_meta(
                OCSP_CERT_META,
                &crate::x509::pem_encode("CERTIFICATE", &issuance.record.der),
            )
            .await?;
        OcspResponder::new(issuance.record.der, Arc::new(FileSigner::new(key)?))
    }

    /// The responder to sign with: the stored one, or a fresh one when there is
    /// none or the stored one has passed half its validity.
    pub async fn ensure_ocsp_responder(&self, actor: &str) -> Result<OcspResponder> {
        if let Some(responder) = self.load_ocsp_responder().await? {
            if !self.ocsp_rotation_due(&responder) {
                return Ok(responder);
            }
        }
        self.rotate_ocsp_responder(actor).await
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
        Ok(self
            .store
            .meta(OCSP_CERT_META)
            .await?
            .map(|pem| hex::encode(crate::hash::sha256(pem.as_bytes()))))
    }

    /// The published CRL.
    pub async fn latest_crl(&self) -> Result<Option<PublishedCrl>> {
        self.store.latest_crl().await
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
        let head = self.store.audit_head().await?;
        let mut events = Vec::new();
        loop {
            let after = events.last().map(|e: &AuditEvent| e.seq).unwrap_or(0);
            if after >= head.0 {
                break;
            }
            let page = self.store.audit_events(after, 10_000).await?;
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
}

/// A fresh key of the policy's type and its certificate naming `alt_names`.
fn generate_and_sign_with_names(
    policy: &Policy,
    tenant: &TenantId,
    admin: &AdminId,
    alt_names: &[crate::x509::AltName],
    signer: &dyn Signer,
    ca_cert: &CaCertificate,
    endpoints: &Endpoints,
) -> Result<(PKey<Private>, CertificateRecord)> {
    let key = policy.generated_key().generate()?;
    let public_key = PublicKey::from_pkey(&key)?;
    let request = LeafRequest {
        policy,
        tenant,
        admin,
        public_key: &public_key,
        serial: Serial::random()?,
        now: now(),
        alt_names,
    };
    let issued = build_leaf(&request, ca_cert, signer, endpoints)?;
    Ok((
        key,
        CertificateRecord {
            serial: issued.serial,
            tenant: tenant.to_string(),
            admin: admin.to_string(),
            policy: policy.name.clone(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            revoked_at: None,
            reason: None,
            invalidity_date: None,
            der: issued.der.0,
        },
    ))
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
    let key = policy.generated_key().generate()?;
    let public_key = PublicKey::from_pkey(&key)?;
    let record = sign_leaf(
        policy,
        tenant,
        admin,
        &public_key,
        signer,
        ca_cert,
        endpoints,
    )?;
    Ok((key, record))
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
    let request = LeafRequest {
        policy,
        tenant,
        admin,
        public_key,
        serial: Serial::random()?,
        now: now(),
        alt_names: &[],
    };
    let issued = build_leaf(&request, ca_cert, signer, endpoints)?;
    Ok(CertificateRecord {
        serial: issued.serial,
        tenant: tenant.to_string(),
        admin: admin.to_string(),
        policy: policy.name.clone(),
        not_before: issued.not_before,
        not_after: issued.not_after,
        revoked_at: None,
        reason: None,
        invalidity_date: None,
        der: issued.der.0,
    })
}

//! Issuance and reissue: `prepare_*` validates, generates the key, signs and
//! packages; `commit` makes the record durable before anything is handed out.

use super::*;

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
    pub(super) record: CertificateRecord,
    pub(super) supersede: Option<Supersede>,
    pub(super) action: &'static str,
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

/// The CN of a subject given as `CN=…,O=…` (or `/CN=…/O=…`): the CA key's label in a token.
pub(super) fn common_name(subject: &str) -> String {
    let separator = if subject.starts_with('/') { '/' } else { ',' };
    subject
        .split(separator)
        .filter_map(|part| part.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("CN"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_else(|| subject.to_owned())
}

/// A fresh key of the policy's type and its certificate naming `alt_names`.
pub(super) fn generate_and_sign_with_names(
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

/// A fresh key of the policy's type and its signed certificate.
pub(super) fn generate_and_sign(
    policy: &Policy,
    tenant: &TenantId,
    admin: &AdminId,
    signer: &dyn Signer,
    ca_cert: &CaCertificate,
    endpoints: &Endpoints,
) -> Result<(PKey<Private>, CertificateRecord)> {
    generate_and_sign_with_names(policy, tenant, admin, &[], signer, ca_cert, endpoints)
}

pub(super) fn sign_leaf(
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
pub(super) struct Leaf<'a> {
    pub(super) policy: &'a Policy,
    pub(super) tenant: &'a TenantId,
    pub(super) admin: &'a AdminId,
    pub(super) public_key: &'a PublicKey,
    pub(super) alt_names: &'a [crate::pki::x509::AltName],
}

impl Leaf<'_> {
    pub(super) fn sign(
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

impl Ca {
    pub(super) fn policy_of_kind(&self, name: &str, kind: PolicyKind) -> Result<&Policy> {
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

    pub(super) async fn check_no_active(
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

    /// What a reissue of `tenant`/`admin` would revoke now, by serial: its
    /// active, unexpired certificates under `policy` (under every policy when
    /// none is named — [`Ca::prepare_reissue`] then refuses if there are
    /// several). The same rows the committing transaction supersedes; the
    /// console's confirmation names them and checks they did not change.
    pub async fn reissue_would_revoke(
        &self,
        tenant: &TenantId,
        admin: &AdminId,
        policy: Option<&str>,
    ) -> Result<Vec<CertificateRecord>> {
        let mut active = self
            .store
            .active_for(tenant.as_str(), admin.as_str(), now())
            .await?;
        if let Some(policy) = policy {
            active.retain(|r| r.policy == policy);
        }
        active.sort_by_key(|r| r.serial.to_hex());
        Ok(active)
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

    pub(super) async fn prepare_bundle(
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

    /// How `prepared`'s bundle is handed over when the caller did not say:
    /// its policy's `delivery` (direct for policies without a bundle).
    pub fn default_delivery(&self, prepared: &PreparedIssuance) -> crate::Delivery {
        match (&prepared.bundle, self.policies.get(&prepared.record.policy)) {
            (Some(_), Ok(policy)) => policy.delivery,
            _ => crate::Delivery::Direct,
        }
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
}

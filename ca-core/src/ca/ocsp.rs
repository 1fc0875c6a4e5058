//! The OCSP responder of each issuer: its delegated certificate and key,
//! rotation before expiry, and the state answers are signed from.

use super::*;

pub(super) const OCSP_CERT_META: &str = "ocsp_responder_cert";

pub(super) const OCSP_KEY_META: &str = "ocsp_responder_key";

/// The responder certificate is recorded under this tenant/admin.
pub(super) const OCSP_TENANT: &str = crate::ids::RESERVED_TENANT;

pub(super) const OCSP_ADMIN: &str = "ocsp-responder";

/// Where issuer `number`'s responder certificate and key are kept (issuer 1
/// keeps the names of the single CA).
pub(super) fn responder_meta(number: u64) -> (String, String) {
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
pub(super) fn responder_admin(number: u64) -> String {
    match number {
        1 => OCSP_ADMIN.to_owned(),
        n => format!("{OCSP_ADMIN}-{n}"),
    }
}

/// The token label of the OCSP responder keys of the CA whose key identifier is `ca_key_id`.
pub(super) fn responder_key_label(ca_key_id: &[u8]) -> String {
    format!(
        "ocsp-responder {}",
        hex::encode(&ca_key_id[..ca_key_id.len().min(8)])
    )
}

/// The public key of a responder certificate (DER).
pub(super) fn responder_public_key(der: &[u8]) -> Result<PublicKey> {
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

impl Ca {
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
}

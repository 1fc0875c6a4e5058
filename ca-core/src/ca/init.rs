//! Creating a CA: `init` makes the store, the CA key (file or PKCS#11 token)
//! and its certificate, and the OCSP responder.

use super::*;

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

pub(super) fn load_policies(config: &Config, layout: &Layout) -> Result<Policies> {
    match &config.policies_dir {
        Some(dir) => Policies::load_dir(dir),
        None if layout.policies().is_dir() => Policies::load_dir(&layout.policies()),
        None => Ok(Policies::shipped()),
    }
}

pub(super) fn passphrase_hint() -> &'static str {
    "set CA_KEY_PASSPHRASE or pass --passphrase-file"
}

pub(super) fn pin_hint() -> &'static str {
    "set CA_PKCS11_PIN or key.pin_file to the token's user PIN"
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
            pickup_validity: config.pickup_validity,
            pickup_slots: Arc::new(tokio::sync::Semaphore::new(
                super::pickup::PICKUP_SCRYPT_SLOTS,
            )),
            crl_lists: Default::default(),
            keep_crl_lists: Default::default(),
            crl_lists_warmed: Default::default(),
        };
        ca.publish_crl(actor).await?;
        Ok(ca)
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
}

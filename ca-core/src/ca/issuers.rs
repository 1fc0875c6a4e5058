//! The CA as a set of issuers, one active (DESIGN §2, §5).
//!
//! A single self-signed CA (plain `init`) is one issuer and needs no rows in
//! the `issuers` table: its certificate is `ca.pem`, its key `ca.key` (or
//! `ca.token.json`). Under an offline root (`init --issuing`) every issuing
//! CA is a row: number `n` (its CRL numbers, and what its certificates
//! record), a stable id (start of its key identifier, used in its URLs),
//! its state, its certificate once the root signed it. Its key is
//! `ca.key` for issuer 1 and `issuer-<n>.key` after (`.token.json` when the
//! key is in a token). `ca.pem` is always a copy of the active issuer's
//! certificate, `root.pem` the root's.
//!
//! ```text
//!   init --issuing ──► issuer 1 pending (key + CSR) ──► ca import-cert ──► active
//!   ca rollover    ──► issuer 2 pending              ──► ca import-cert ──► active, 1 retired
//! ```
//!
//! A retired issuer keeps signing its own CRL (with its own numbers) and its
//! OCSP answers until its last certificate expires; new certificates come
//! from the active one only.

use std::path::PathBuf;
use std::sync::Arc;

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{blocking, common_name, Ca, KeySecrets, Layout};
use crate::audit::AuditDraft;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::{write_encrypted_key, KeyAlgorithm, KeyPurpose, Passphrase, MIN_PASSPHRASE_LEN};
use crate::pki::ocsp::IssuerHashes;
use crate::pki::x509::{
    build_ca_csr, certificates_from_pem, issuer_id, parse_subject, CaCertificate, CertificateDer,
    Endpoints,
};
use crate::signer::pkcs11::{read_key_record, write_key_record, Pkcs11Signer, Token};
use crate::signer::{FileSigner, Signer};
use crate::store::{IssuerRow, IssuerState, IssuerStore, PublishedCrl, SqlStore, Store};

/// The meta entry holding the root's latest CRL (PEM), given by `ca import-crl`.
const ROOT_CRL_META: &str = "root_crl";

/// One issuer with a certificate.
pub struct Issuer {
    pub(crate) number: u64,
    pub(crate) id: String,
    pub(crate) state: IssuerState,
    pub(crate) certificate: CaCertificate,
    pub(crate) signer: Option<Arc<dyn Signer>>,
    pub(crate) hashes: IssuerHashes,
    pub(crate) endpoints: Endpoints,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("number", &self.number)
            .field("id", &self.id)
            .field("state", &self.state)
            .finish()
    }
}

impl Issuer {
    /// Its number (certificates record it; its CRL numbers are its own).
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Its stable id, as in `/crl/{id}` and `/ca/{id}.crt`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Active or retired.
    pub fn state(&self) -> IssuerState {
        self.state
    }

    /// Its certificate.
    pub fn certificate(&self) -> &CaCertificate {
        &self.certificate
    }

    /// Its name and key hashes, for matching OCSP CertIDs.
    pub fn hashes(&self) -> &IssuerHashes {
        &self.hashes
    }

    /// Whether its key is unlocked.
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }
}

/// The key file names of issuer `number` (issuer 1 keeps the names of the
/// single CA, so a data directory reads the same either way).
pub(crate) fn key_files(layout: &Layout, number: u64) -> (PathBuf, PathBuf) {
    match number {
        1 => (layout.ca_key(), layout.token_key()),
        n => (
            layout.dir().join(format!("issuer-{n}.key")),
            layout.dir().join(format!("issuer-{n}.token.json")),
        ),
    }
}

/// Where the CSR of pending issuer `number` is kept (to check the imported certificate against).
fn csr_file(layout: &Layout, number: u64) -> PathBuf {
    layout.dir().join(format!("issuer-{number}.csr"))
}

/// Unlocks issuer `number`'s key and checks it against its certificate.
pub(crate) async fn unlock_issuer_key(
    layout: &Layout,
    number: u64,
    certificate: &CaCertificate,
    passphrase: Option<&Arc<Passphrase>>,
    token: Option<&Arc<Token>>,
) -> Result<Option<Arc<dyn Signer>>> {
    let (file, token_file) = key_files(layout, number);
    if let Some(token) = token {
        if token_file.exists() {
            let record = read_key_record(&token_file)?;
            let (token, public) = (Arc::clone(token), certificate.public_key().clone());
            let what = match number {
                1 => format!(
                    "the CA certificate \"{}\" in {}",
                    crate::pki::x509::subject_line(&certificate.der().0),
                    layout.ca_cert().display()
                ),
                n => format!(
                    "the certificate of issuer {n} \"{}\"",
                    crate::pki::x509::subject_line(&certificate.der().0)
                ),
            };
            let signer =
                blocking(move || Pkcs11Signer::find(&token, record, public, &what)).await?;
            return Ok(Some(Arc::new(signer)));
        }
    }
    match passphrase {
        Some(passphrase) if file.exists() => {
            let signer = FileSigner::unlock(&file, passphrase)?;
            crate::signer::check_matches(&signer, certificate.public_key().spki_der())?;
            Ok(Some(Arc::new(signer)))
        }
        _ => Ok(None),
    }
}

/// What `init --issuing` and `ca rollover` need.
pub struct IssuingRequest {
    /// Subject DN of the new issuing CA, `CN=…,O=…`.
    pub subject: String,
    /// Its key type.
    pub key: KeyAlgorithm,
    /// Base URL for CDP/AIA (init only; a rollover keeps the store's).
    pub base_url: Option<String>,
    /// Passphrase for its key file.
    pub passphrase: Zeroizing<Vec<u8>>,
    /// The token user PIN (`key.source = "pkcs11"`).
    pub pin: Option<Zeroizing<String>>,
}

/// A new issuer's key and CSR, waiting for the root.
pub struct PendingIssuer {
    /// Its number.
    pub number: u64,
    /// Its id.
    pub id: String,
    /// The CSR to take to the root ceremony (PEM).
    pub csr_pem: String,
}

/// The outcome of `ca import-cert`.
pub struct ImportedIssuer {
    /// The issuer now active.
    pub number: u64,
    /// Its id.
    pub id: String,
    /// The issuer it replaced, if any (retired: it keeps its CRL and OCSP).
    pub retired: Option<u64>,
    /// Its certificate's notAfter.
    pub not_after: OffsetDateTime,
}

fn pending_message(rows: &[IssuerRow], layout: &Layout) -> String {
    let pending = rows.iter().find(|r| r.state == IssuerState::Pending);
    match pending {
        Some(row) => format!(
            "the issuing CA \"{}\" waits for its certificate: have the root sign {} (`ca-cli root sign-ca`), then run `ca-cli ca import-cert ISSUING.pem --chain ROOT.pem`",
            row.subject,
            csr_file(layout, row.number).display()
        ),
        None => "the CA has no active issuer".into(),
    }
}

/// Opens the key of a new issuer: generated in the token (with a PIN and
/// `key.source = "pkcs11"`) or as an encrypted file.
async fn generate_issuer_key(
    config: &Config,
    layout: &Layout,
    number: u64,
    request: &IssuingRequest,
) -> Result<(Arc<dyn Signer>, String)> {
    let (file, token_file) = key_files(layout, number);
    match (config.token(), &request.pin) {
        (Some(token_config), Some(pin)) => {
            let (token_config, pin, algorithm) = (token_config.clone(), pin.clone(), request.key);
            let label = common_name(&request.subject);
            let signer = blocking(move || {
                let token = Token::open(&token_config, &pin)?;
                token.generate(algorithm, &label)
            })
            .await?;
            write_key_record(&token_file, signer.key())?;
            Ok((Arc::new(signer), file_name(&token_file)))
        }
        (Some(_), None) => Err(Error::Key(
            "with key.source = \"pkcs11\" the new issuing key is generated in the token: set CA_PKCS11_PIN or key.pin_file".into(),
        )),
        (None, _) => {
            if request.passphrase.len() < MIN_PASSPHRASE_LEN {
                return Err(Error::Key(format!(
                    "the issuing CA key passphrase must be at least {MIN_PASSPHRASE_LEN} characters (set CA_KEY_PASSPHRASE or pass --passphrase-file)"
                )));
            }
            let key = request.key.generate()?;
            let signer = FileSigner::new(key.clone())?;
            write_encrypted_key(
                &file,
                &key,
                &Passphrase::new(&request.passphrase),
                KeyPurpose::CaSigning,
            )?;
            Ok((Arc::new(signer), file_name(&file)))
        }
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The public key of a key reference's CSR (kept beside it).
fn pending_csr(layout: &Layout, number: u64) -> Result<(Vec<u8>, crate::keys::PublicKey)> {
    let path = csr_file(layout, number);
    let pem = std::fs::read(&path).map_err(Error::io("cannot read the pending CSR", &path))?;
    let (_, key) = crate::pki::x509::csr_subject_and_key(&pem)?;
    Ok((pem, key))
}

impl Ca {
    /// `init --issuing`: creates the data directory, the store, the first
    /// issuing CA's key and its CSR. The CA cannot sign until
    /// [`Ca::import_issuer_certificate`] installs the certificate the root signs.
    pub async fn init_issuing(
        config: &Config,
        request: IssuingRequest,
        actor: &str,
    ) -> Result<PendingIssuer> {
        let layout = Layout::new(&config.data_dir);
        if layout.ca_key().exists() || layout.ca_cert().exists() || layout.token_key().exists() {
            return Err(Error::Conflict(format!(
                "a CA already exists in {} (refusing to overwrite it; choose another --data-dir)",
                layout.dir().display()
            )));
        }
        let subject = parse_subject(&request.subject)?;
        let base_url = config
            .base_url
            .clone()
            .or_else(|| request.base_url.clone())
            .ok_or_else(|| {
                Error::InvalidInput(
                    "init --issuing needs --base-url (what CDP and AIA point at)".into(),
                )
            })?;
        let endpoints = Endpoints::new(&base_url)?;
        if config.token().is_none() && request.passphrase.len() < MIN_PASSPHRASE_LEN {
            return Err(Error::Key(format!(
                "the CA key passphrase must be at least {MIN_PASSPHRASE_LEN} characters (set CA_KEY_PASSPHRASE or pass --passphrase-file)"
            )));
        }
        std::fs::create_dir_all(layout.dir())
            .map_err(Error::io("cannot create data directory", layout.dir()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(layout.dir(), std::fs::Permissions::from_mode(0o700));
        }
        let store = SqlStore::connect(&config.database_url()).await?;
        store.migrate().await?;
        if store.meta("ca_spki_sha256").await?.is_some() || !store.issuers().await?.is_empty() {
            return Err(Error::Conflict(
                "the database already belongs to a CA (refusing to overwrite it)".into(),
            ));
        }
        let pending = create_pending(config, &layout, &store, 1, subject, &request, actor).await?;
        store.set_meta("base_url", &endpoints.base_url).await?;
        if config.policies_dir.is_none() && !layout.policies().exists() {
            std::fs::create_dir_all(layout.policies())
                .map_err(Error::io("cannot create", layout.policies()))?;
            for (file, text) in crate::policy::SHIPPED {
                crate::fsutil::write_file(&layout.policies().join(file), text.as_bytes())?;
            }
        }
        Ok(pending)
    }

    /// `ca rollover`: a new issuing CA's key and CSR. Until its certificate
    /// is imported, the active issuer goes on issuing.
    pub async fn rollover(
        config: &Config,
        request: IssuingRequest,
        actor: &str,
    ) -> Result<PendingIssuer> {
        let layout = Layout::new(&config.data_dir);
        if !layout.root_cert().exists() {
            return Err(Error::Conflict(format!(
                "the CA in {} is self-signed (no root.pem): its certificate is itself the trust anchor gateways hold, so it cannot roll over without a flag day; create a hierarchy with `ca-cli root init` and `ca-cli init --issuing`",
                layout.dir().display()
            )));
        }
        let subject = parse_subject(&request.subject)?;
        let store = SqlStore::connect(&config.database_url()).await?;
        store.migrate().await?;
        let rows = store.issuers().await?;
        if let Some(pending) = rows.iter().find(|r| r.state == IssuerState::Pending) {
            return Err(Error::Conflict(format!(
                "issuer {} (\"{}\") already waits for its certificate: import it with `ca-cli ca import-cert` before starting another rollover",
                pending.number, pending.subject
            )));
        }
        let number = rows.iter().map(|r| r.number).max().unwrap_or(0) + 1;
        create_pending(config, &layout, &store, number, subject, &request, actor).await
    }

    /// `ca import-cert F --chain ROOT.pem`: installs the certificate the root
    /// signed for the pending issuer, which becomes the active one.
    ///
    /// Refused, naming why, unless: it is a CA certificate (CA:TRUE,
    /// keyCertSign, cRLSign), its key is the pending issuer's (the CSR's), it
    /// chains to the given root (OpenSSL path validation, RFC 5280 §6), the
    /// root is self-signed, and — after the first import — the root is the
    /// one already installed (a new root would be a flag day for gateways).
    pub async fn import_issuer_certificate(
        config: &Config,
        secrets: &KeySecrets,
        certificate_pem: &[u8],
        chain_pem: &[u8],
        actor: &str,
    ) -> Result<ImportedIssuer> {
        let layout = Layout::new(&config.data_dir);
        let store = SqlStore::connect(&config.database_url()).await?;
        store.migrate().await?;
        let rows = store.issuers().await?;
        let pending = rows
            .iter()
            .find(|r| r.state == IssuerState::Pending)
            .ok_or_else(|| {
                Error::Conflict(
                    "no issuing CA waits for a certificate: run `ca-cli init --issuing` or `ca-cli ca rollover` first".into(),
                )
            })?;
        let ders = certificates_from_pem(certificate_pem)?;
        let der = ders[0].clone();
        let certificate = CaCertificate::from_der(der.clone()).map_err(|e| {
            Error::InvalidInput(format!(
                "the certificate to import is not usable as an issuing CA: {e}"
            ))
        })?;
        let (_, csr_key) = pending_csr(&layout, pending.number)?;
        if certificate.public_key().spki_der() != csr_key.spki_der() {
            return Err(Error::InvalidInput(format!(
                "the certificate \"{}\" is not for the pending issuing CA's key: it was signed from another CSR (the pending one is {})",
                crate::pki::x509::subject_line(&der),
                csr_file(&layout, pending.number).display()
            )));
        }
        let chain = certificates_from_pem(chain_pem)?;
        let root_der = chain
            .last()
            .cloned()
            .expect("certificates_from_pem returns at least one");
        verify_chain_to_root(&der, &chain, &root_der)?;
        if layout.root_cert().exists() {
            let installed = std::fs::read(layout.root_cert())
                .map_err(Error::io("cannot read", layout.root_cert()))?;
            let installed = crate::pki::x509::certificate_der_from_pem_or_der(&installed)?;
            if installed != root_der {
                return Err(Error::InvalidInput(format!(
                    "the chain ends in root \"{}\", not in the root this CA already trusts (\"{}\", {}): a rollover stays under the same root, or gateways trusting it would refuse the new certificates",
                    crate::pki::x509::subject_line(&root_der),
                    crate::pki::x509::subject_line(&installed),
                    layout.root_cert().display()
                )));
            }
        }
        let now = crate::now();
        if certificate.not_after() <= now {
            return Err(Error::InvalidInput(
                "the certificate to import has expired".into(),
            ));
        }
        // With the secrets given, the key itself must sign for the certificate.
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
        unlock_issuer_key(
            &layout,
            pending.number,
            &certificate,
            passphrase.as_ref(),
            token.as_ref(),
        )
        .await?;
        let retired = rows
            .iter()
            .find(|r| r.state == IssuerState::Active)
            .map(|r| r.number);
        let mut draft = AuditDraft::new(actor, "ca-import-cert", pending.id.clone());
        draft.serials = vec![crate::pki::x509::certificate_serial_hex(&der)];
        store
            .activate_issuer(pending.number, &der, certificate.not_after(), draft, now)
            .await?;
        // The files are copies of what the store now says (the store is what
        // `open` trusts); root.pem is the trust anchor the chain ends in.
        if !layout.root_cert().exists() {
            crate::fsutil::write_file(
                &layout.root_cert(),
                CertificateDer(root_der).to_pem().as_bytes(),
            )?;
        }
        crate::fsutil::write_file(&layout.ca_cert(), CertificateDer(der).to_pem().as_bytes())?;
        Ok(ImportedIssuer {
            number: pending.number,
            id: pending.id.clone(),
            retired,
            not_after: certificate.not_after(),
        })
    }

    /// Whether the store's active issuer is no longer the one this CA was
    /// opened with: `ca import-cert` (a rollover) ran in another process.
    /// A long-running server then opens the CA again (`ca-server` checks
    /// every second). A single self-signed CA never changes issuer.
    pub async fn issuer_changed(&self) -> Result<bool> {
        let rows = self.store.issuers().await?;
        Ok(rows
            .iter()
            .find(|r| r.state == IssuerState::Active)
            .is_some_and(|r| r.number != self.active_issuer))
    }

    /// Every issuer with a certificate: the active one first, then retired
    /// ones whose certificates have not expired.
    pub fn issuers(&self) -> &[Arc<Issuer>] {
        &self.issuers
    }

    /// The issuer with this id.
    pub fn issuer_by_id(&self, id: &str) -> Option<&Arc<Issuer>> {
        self.issuers.iter().find(|i| i.id == id)
    }

    /// The issuer with this number.
    pub fn issuer_by_number(&self, number: u64) -> Option<&Arc<Issuer>> {
        self.issuers.iter().find(|i| i.number == number)
    }

    /// True under an offline root (`init --issuing`).
    pub fn is_hierarchy(&self) -> bool {
        self.root.is_some()
    }

    /// The root certificate, under a hierarchy.
    pub fn root_certificate(&self) -> Option<&CertificateDer> {
        self.root.as_ref()
    }

    /// The active issuer's chain as PEM: its certificate, then the root's
    /// (RFC 8446 §4.4.2 order: each certificate certified by the next).
    pub fn chain_pem(&self) -> String {
        let mut pem = self.ca_cert.der().to_pem();
        if let Some(root) = &self.root {
            pem.push_str(&root.to_pem());
        }
        pem
    }

    /// Publishes every issuer's CRL that is stale (see [`Ca::crl_needs_refresh_for`]);
    /// returns the ones published.
    pub async fn publish_stale_crls(&self, actor: &str) -> Result<Vec<PublishedCrl>> {
        let mut published = Vec::new();
        for issuer in &self.issuers {
            if issuer.signer.is_some() && self.crl_needs_refresh_for(issuer.number).await? {
                published.push(self.publish_crl_for(issuer.number, actor).await?);
            }
        }
        Ok(published)
    }

    /// True when issuer `number`'s published CRL misses a revocation, or has
    /// passed half its validity.
    pub async fn crl_needs_refresh_for(&self, number: u64) -> Result<bool> {
        let status = self.store.crl_status(number).await?;
        let (Some(this_update), Some(next_update)) = (status.this_update, status.next_update)
        else {
            return Ok(true);
        };
        let half_life = this_update + (next_update - this_update) / 2;
        Ok(status.revision > status.published_revision || crate::now() >= half_life)
    }

    /// Where issuer `number`'s CRL publication stands.
    pub async fn crl_status_for(&self, number: u64) -> Result<crate::store::CrlStatus> {
        self.store.crl_status(number).await
    }

    /// Issuer `number`'s published CRL.
    pub async fn latest_crl_for(&self, number: u64) -> Result<Option<PublishedCrl>> {
        self.store.latest_crl(number).await
    }

    /// `ca import-crl`: keeps the root's latest CRL so the server can serve
    /// it in `/crls.pem`. It must be signed by the installed root, and never
    /// older (by CRL number) than the one already kept.
    pub async fn import_root_crl(&self, crl: &[u8], actor: &str) -> Result<u64> {
        let root = self.root.as_ref().ok_or_else(|| {
            Error::Conflict(
                "this CA is self-signed: there is no root whose CRL it could serve".into(),
            )
        })?;
        let root_pem = root.to_pem();
        let now = crate::now();
        let verified = crate::gateway::verify_crl(crl, root_pem.as_bytes(), now)?;
        if let Some(kept) = self.store.meta(ROOT_CRL_META).await? {
            // An expired kept CRL still has a number to compare with.
            let kept_at = now - time::Duration::days(36_500);
            if let Ok(previous) =
                crate::gateway::verify_crl(kept.as_bytes(), root_pem.as_bytes(), kept_at)
            {
                if previous.number > verified.number {
                    return Err(Error::Conflict(format!(
                        "the root CRL given has number {}, older than the one already imported ({}): import the root's latest CRL",
                        verified.number, previous.number
                    )));
                }
            }
        }
        let pem = verified.to_pem();
        self.store.set_meta(ROOT_CRL_META, &pem).await?;
        let mut draft = AuditDraft::new(
            actor,
            "ca-import-crl",
            format!("root crl {}", verified.number),
        );
        draft.details = format!("sha256={}", hex::encode(crate::hash::sha256(&verified.der)));
        self.store.audit(draft, crate::now()).await?;
        Ok(verified.number)
    }

    /// The root's latest imported CRL (PEM).
    pub async fn root_crl_pem(&self) -> Result<Option<String>> {
        self.store.meta(ROOT_CRL_META).await
    }
}

/// A pending issuer: key, CSR (kept in the data directory and returned), row.
async fn create_pending(
    config: &Config,
    layout: &Layout,
    store: &SqlStore,
    number: u64,
    subject: rcgen::DistinguishedName,
    request: &IssuingRequest,
    actor: &str,
) -> Result<PendingIssuer> {
    let (file, token_file) = key_files(layout, number);
    if file.exists() || token_file.exists() {
        return Err(Error::Conflict(format!(
            "a key for issuer {number} already exists ({}): refusing to overwrite it",
            if file.exists() { &file } else { &token_file }.display()
        )));
    }
    let (signer, key_ref) = generate_issuer_key(config, layout, number, request).await?;
    let csr_pem = if signer.blocks() {
        let signer = Arc::clone(&signer);
        blocking(move || build_ca_csr(subject, &*signer)).await?
    } else {
        build_ca_csr(subject, &*signer)?
    };
    crate::fsutil::write_file(&csr_file(layout, number), csr_pem.as_bytes())?;
    let key_id = signer.public_key().key_identifier();
    let id = hex::encode(&key_id[..key_id.len().min(8)]);
    let row = IssuerRow {
        number,
        id: id.clone(),
        state: IssuerState::Pending,
        subject: request.subject.clone(),
        key_ref,
        der: None,
        not_after: None,
    };
    let action = if number == 1 {
        "init-issuing"
    } else {
        "ca-rollover"
    };
    store
        .add_issuer(
            &row,
            AuditDraft::new(actor, action, request.subject.clone()),
            crate::now(),
        )
        .await?;
    Ok(PendingIssuer {
        number,
        id,
        csr_pem,
    })
}

/// Checks with OpenSSL that `leaf` chains to `root` through `chain` (any
/// certificates between), at the current time, and that the root signed itself.
fn verify_chain_to_root(leaf: &[u8], chain: &[Vec<u8>], root: &[u8]) -> Result<()> {
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509StoreContext, X509};
    let root_cert = X509::from_der(root)?;
    let self_signed = root_cert
        .public_key()
        .and_then(|key| root_cert.verify(&key))
        .unwrap_or(false);
    if !self_signed || root_cert.issued(&root_cert) != openssl::x509::X509VerifyResult::OK {
        return Err(Error::InvalidInput(format!(
            "the last certificate of --chain (\"{}\") is not a self-signed root",
            crate::pki::x509::subject_line(root)
        )));
    }
    CaCertificate::from_der(root.to_vec())
        .map_err(|e| Error::InvalidInput(format!("the root given in --chain is not a CA: {e}")))?;
    let mut builder = X509StoreBuilder::new()?;
    builder.add_cert(root_cert)?;
    let store = builder.build();
    let mut untrusted = Stack::new()?;
    for der in &chain[..chain.len() - 1] {
        untrusted.push(X509::from_der(der)?)?;
    }
    let leaf_cert = X509::from_der(leaf)?;
    let mut context = X509StoreContext::new()?;
    let (ok, why) = context.init(&store, &leaf_cert, &untrusted, |c| {
        let ok = c.verify_cert()?;
        Ok((ok, c.error().error_string().to_owned()))
    })?;
    if !ok {
        return Err(Error::InvalidInput(format!(
            "the certificate \"{}\" does not chain to the root \"{}\": {why}",
            crate::pki::x509::subject_line(leaf),
            crate::pki::x509::subject_line(root)
        )));
    }
    Ok(())
}

/// The pending-issuer refusal for `open` (used when no issuer is active yet).
pub(crate) fn not_ready(rows: &[IssuerRow], layout: &Layout) -> Error {
    Error::NotReady(pending_message(rows, layout))
}

/// The issuers of a hierarchy with certificates, loaded from their rows.
pub(crate) async fn load_issuers(
    rows: &[IssuerRow],
    layout: &Layout,
    endpoints: &Endpoints,
    passphrase: Option<&Arc<Passphrase>>,
    token: Option<&Arc<Token>>,
    now: OffsetDateTime,
) -> Result<Vec<Arc<Issuer>>> {
    let mut issuers = Vec::new();
    // Active first: it is the one new certificates come from.
    let mut ordered: Vec<&IssuerRow> = rows
        .iter()
        .filter(|r| r.state == IssuerState::Active)
        .collect();
    ordered.extend(
        rows.iter()
            .filter(|r| r.state == IssuerState::Retired && r.not_after.is_some_and(|t| t > now)),
    );
    for row in ordered {
        let der = row.der.clone().ok_or_else(|| {
            Error::Store(format!(
                "issuer {} has no certificate in the store",
                row.number
            ))
        })?;
        let certificate = CaCertificate::from_der(der)?;
        let signer = unlock_issuer_key(layout, row.number, &certificate, passphrase, token).await?;
        let id = issuer_id(&certificate);
        issuers.push(Arc::new(Issuer {
            number: row.number,
            hashes: IssuerHashes::new(&certificate)?,
            endpoints: endpoints.for_issuer(&id),
            id,
            state: row.state,
            certificate,
            signer,
        }));
    }
    Ok(issuers)
}

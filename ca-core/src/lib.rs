//! # ca-core — the private CA behind a portal's certificate login
//!
//! Everything that is CA logic lives here; the HTTP server and the CLI are thin
//! front ends. This crate never opens a socket or reads argv.
//!
//! ```text
//!   Policy (TOML) ──► Ca::prepare_issue ──► keys::generate ─► x509::build_leaf ─► pkcs12
//!                            │                                      │ signs through
//!                            ▼                                      ▼
//!                      Ca::commit ──► Store (one transaction,   Signer (encrypted key file,
//!                                      audit event chained)      or a PKCS#11 token)
//!   revoke / reissue ──► Store ──► Ca::publish_crl ──► pki::crl::build_crl
//! ```
//!
//! Two seams keep the rest independent of where things live: [`Signer`] ("sign
//! these bytes with the CA key") and [`Store`] (durable state; SQLite or
//! PostgreSQL through the same portable SQL).

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod audit;
pub mod backup;
mod ca;
mod config;
mod duration;
mod error;
pub mod fsutil;
mod gateway;
mod hash;
mod ids;
mod keys;
pub(crate) mod pki;
mod policy;
mod reason;
mod root;
mod signer;
mod store;
mod tokens;
mod view;

pub use audit::{verify_chain, AuditDraft, AuditEvent, GENESIS_HASH};
pub use ca::{
    check_delivery, check_email, now, AuditReport, Ca, ConsoleSecret, ImportedIssuer, InitRequest,
    Issuance, IssueRequest, Issuer, IssuingRequest, KeySecrets, Layout, PendingIssuer,
    PickupIssuance, PickupOutcome, PickupRequest, PreparedIssuance, PreparedServerCertificate,
    ReissueMode, ServerCertRequest, CONSOLE_SESSION_LIFETIME,
};
pub use config::{
    read_pin, take_secret_env, Config, KeySource, Limits, LogFormat, OcspKeySource, SmtpConfig,
    TlsFiles, TokenConfig,
};
pub use duration::{Duration, DURATION_FORMAT};
pub use error::{Error, Result};
pub use gateway::{
    certificate_key_ids, compare_crl, crl_authority_key_id, issuer_id_of, split_crls, verify_crl,
    verify_crl_set, CrlUpdate, VerifiedCrl,
};
pub use ids::{AdminId, Serial, TenantId, NAME_RULE, RESERVED_TENANT};
pub use keys::{KeyAlgorithm, PublicKey, MIN_PASSPHRASE_LEN};
pub use pki::crl::{build_crl, CrlBuilder, CrlDer, CrlPiece, RevokedEntry};
pub use pki::ocsp;
pub use pki::pkcs12::{generate_password, Pkcs12Der};
pub use pki::seal::{
    Opened as OpenedBundle, PickupCode, Sealed as SealedBundle, MAX_FAILURES as PICKUP_MAX_FAILURES,
};
pub use pki::x509::{
    certificate_serial_hex, pem_encode, subject_line, CaCertificate, CertificateDer, Endpoints,
};
pub use policy::{
    Delivery, ExtendedKeyUsage, Pkcs12Profile, Policies, Policy, PolicyKind,
    SHIPPED as SHIPPED_POLICIES,
};
pub use reason::RevocationReason;
pub use root::{RootCa, RootInit, RootSecret, SignedCa};
pub use signer::{FileSigner, Pkcs11Signer, Signer};
pub use store::{
    on_sqlite_connection, AuditStore, CertificateRecord, CertificateStatus, CertificateStore,
    ConsoleSession, ConsoleSessionStore, CrlStatus, CrlStore, IdempotencyKey, IdempotencyRecord,
    IssuerRow, IssuerState, IssuerStore, ListFilter, MailState, NewPickup, PickupRecord,
    PickupState, PickupStore, PublishedCrl, ReminderDue, SealedPickup, SqlStore, Store, Supersede,
    TokenStore, WrongCode, CONSOLE_SESSIONS_PER_CREDENTIAL,
};
pub use tokens::{token_id, Action, Credential, NewToken, Principal, Role, TokenRecord};
pub use view::{CertificateView, ErrorDetail, ErrorView, ListView};

pub use time::format_description::well_known::Rfc3339;
pub use time::OffsetDateTime;

/// Entry points for the fuzz targets (`fuzz/`): parsers of outside input
/// that are otherwise reached only through a `Ca`. Not a stable interface.
#[doc(hidden)]
pub mod fuzzing {
    /// A CSR as `sign-csr` and `POST …/csr` receive it (PEM or DER).
    pub fn csr(data: &[u8]) -> crate::Result<crate::PublicKey> {
        crate::pki::csr::verified_public_key(data, |_| Ok(()))
    }

    /// A policy file as `policy check` and start-up read it, named after
    /// its `name` (so the fuzzer gets past the file-name rule).
    pub fn policy(text: &str) -> crate::Result<crate::Policy> {
        let name = toml::from_str::<toml::Table>(text)
            .ok()
            .and_then(|t| t.get("name")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "fuzz".into());
        crate::Policy::parse(&format!("{name}.toml"), text)
    }
}

/// Entry points for the benchmark harness (`benches/bench.py`, through
/// `ca-core/examples/pkcs12_step.rs`): one step of issuance timed on its own.
/// Not a stable interface.
#[doc(hidden)]
pub mod benching {
    use crate::policy::{Pkcs12Profile, Pkcs12Settings};

    /// The PKCS#12 step of an issuance alone: packages one fixed key and a
    /// self-signed certificate for it (as leaf and as CA) into a bundle of
    /// `profile` ("modern" or "legacy") with the shipped settings (2,048
    /// iterations), the way `Ca` does after signing. Key generation, signing
    /// and the store are left out. Returns the bundle's size.
    ///
    /// "openssl-legacy" is the peer: the same legacy bundle from OpenSSL 3's
    /// `PKCS12_create` (through the `openssl` crate), the path ca-core took
    /// before it wrote the legacy profile itself.
    pub fn pkcs12_step(
        key_algorithm: crate::KeyAlgorithm,
        profile: &str,
    ) -> crate::Result<impl FnMut() -> crate::Result<usize>> {
        let (profile, openssl) = match profile {
            "modern" => (Pkcs12Profile::Modern, false),
            "legacy" => (Pkcs12Profile::Legacy, false),
            "openssl-legacy" => (Pkcs12Profile::Legacy, true),
            other => {
                return Err(crate::Error::InvalidInput(format!(
                    "unknown PKCS#12 profile {other:?}: use modern, legacy or openssl-legacy"
                )))
            }
        };
        let mut settings: Pkcs12Settings = crate::policy::Policies::shipped()
            .get("portal-admin")?
            .pkcs12
            .clone()
            .ok_or_else(|| crate::Error::Policy("portal-admin has no pkcs12 settings".into()))?;
        settings.profile = profile;
        let key = key_algorithm.generate()?;
        let signer = crate::signer::FileSigner::new(key.clone())?;
        let certificate = crate::pki::x509::build_ca_certificate(
            crate::pki::x509::parse_subject("CN=PKCS#12 step")?,
            &signer,
            crate::now(),
            time::Duration::days(1),
        )?;
        let password = crate::generate_password(settings.password_length)?;
        let x509 = openssl::x509::X509::from_der(&certificate.0)?;
        Ok(move || {
            if openssl {
                use openssl::nid::Nid;
                let mut chain = openssl::stack::Stack::new()?;
                chain.push(x509.clone())?;
                let mut builder = openssl::pkcs12::Pkcs12::builder();
                builder
                    .name("admin (tenant)")
                    .pkey(&key)
                    .cert(&x509)
                    .ca(chain)
                    .key_iter(settings.iterations)
                    .mac_iter(settings.iterations)
                    .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
                    .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
                    .mac_md(openssl::hash::MessageDigest::sha1());
                return Ok(builder.build2(&password)?.to_der()?.len());
            }
            let bundle = crate::pki::pkcs12::build_pkcs12(
                &key,
                &certificate.0,
                &certificate.0,
                &settings,
                "admin (tenant)",
                &password,
            )?;
            Ok(bundle.0.len())
        })
    }
}

/// Formats a time as RFC 3339 UTC (`2026-11-25T20:29:41Z`).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

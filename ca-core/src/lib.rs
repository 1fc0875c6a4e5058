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
    now, AuditReport, Ca, ImportedIssuer, InitRequest, Issuance, IssueRequest, Issuer,
    IssuingRequest, KeySecrets, Layout, PendingIssuer, PreparedIssuance, PreparedServerCertificate,
    ReissueMode, ServerCertRequest,
};
pub use config::{
    read_pin, take_secret_env, Config, KeySource, Limits, LogFormat, OcspKeySource, TlsFiles,
    TokenConfig,
};
pub use duration::{Duration, DURATION_FORMAT};
pub use error::{Error, Result};
pub use gateway::{
    certificate_key_ids, compare_crl, crl_authority_key_id, issuer_id_of, split_crls, verify_crl,
    verify_crl_set, CrlUpdate, VerifiedCrl,
};
pub use ids::{AdminId, Serial, TenantId, NAME_RULE, RESERVED_TENANT};
pub use keys::{KeyAlgorithm, PublicKey, MIN_PASSPHRASE_LEN};
pub use pki::crl::{build_crl, CrlBuilder, CrlDer, RevokedEntry};
pub use pki::ocsp;
pub use pki::pkcs12::{generate_password, Pkcs12Der};
pub use pki::x509::{
    certificate_serial_hex, pem_encode, subject_line, CaCertificate, CertificateDer, Endpoints,
};
pub use policy::{
    ExtendedKeyUsage, Pkcs12Profile, Policies, Policy, PolicyKind, SHIPPED as SHIPPED_POLICIES,
};
pub use reason::RevocationReason;
pub use root::{RootCa, RootInit, RootSecret, SignedCa};
pub use signer::{FileSigner, Pkcs11Signer, Signer};
pub use store::{
    CertificateRecord, CertificateStatus, CrlStatus, IdempotencyKey, IdempotencyRecord, IssuerRow,
    IssuerState, ListFilter, PublishedCrl, SqlStore, Store, Supersede,
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

/// Formats a time as RFC 3339 UTC (`2026-11-25T20:29:41Z`).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

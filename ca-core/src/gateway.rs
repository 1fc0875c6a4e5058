//! The gateway's side of CRL distribution: checking a fetched CRL against the
//! CA certificate before it replaces the one a TLS gateway enforces. Pure: the
//! fetching and file handling are the caller's.

use time::OffsetDateTime;

use crate::error::{Error, Result};

/// A CRL that verified against the CA certificate.
#[derive(Debug, Clone)]
pub struct VerifiedCrl {
    /// DER.
    pub der: Vec<u8>,
    /// CRL number (RFC 5280 §5.2.3).
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// Number of revoked certificates listed.
    pub revoked: usize,
}

impl VerifiedCrl {
    /// PEM armour.
    pub fn to_pem(&self) -> String {
        crate::pki::x509::pem_encode("X509 CRL", &self.der)
    }
}

fn der_of(bytes: &[u8]) -> Result<Vec<u8>> {
    let crl = openssl::x509::X509Crl::from_der(bytes)
        .or_else(|_| openssl::x509::X509Crl::from_pem(bytes))
        .map_err(|_| Error::InvalidInput("the fetched data is not a DER or PEM CRL".into()))?;
    Ok(crl.to_der()?)
}

/// Checks `bytes` (DER or PEM) is a CRL signed by the CA in `ca_certificate`
/// (PEM or DER), issued by it, and not past its nextUpdate at `now`.
pub fn verify_crl(bytes: &[u8], ca_certificate: &[u8], now: OffsetDateTime) -> Result<VerifiedCrl> {
    use x509_parser::prelude::FromDer;
    let der = der_of(bytes)?;
    let ca = openssl::x509::X509::from_pem(ca_certificate)
        .or_else(|_| openssl::x509::X509::from_der(ca_certificate))
        .map_err(|_| Error::InvalidInput("the --ca file is not a PEM or DER certificate".into()))?;
    let crl = openssl::x509::X509Crl::from_der(&der)?;
    let ca_key = ca.public_key()?;
    if !crl.verify(&ca_key).unwrap_or(false) {
        return Err(Error::InvalidInput(
            "CRL signature does not verify against the CA certificate (tampered, or signed by another CA)".into(),
        ));
    }
    let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
        .map_err(|e| Error::InvalidInput(format!("CRL does not parse: {e}")))?;
    let ca_der = ca.to_der()?;
    let (_, ca_parsed) = x509_parser::certificate::X509Certificate::from_der(&ca_der)
        .map_err(|e| Error::InvalidInput(format!("CA certificate does not parse: {e}")))?;
    if parsed.issuer().as_raw() != ca_parsed.subject().as_raw() {
        return Err(Error::InvalidInput(
            "CRL issuer is not the CA certificate's subject".into(),
        ));
    }
    let number = parsed
        .crl_number()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| {
            Error::InvalidInput("CRL has no CRL number (RFC 5280 §5.2.3 requires one)".into())
        })?;
    let this_update = parsed.last_update().to_datetime();
    let next_update = parsed
        .next_update()
        .map(|t| t.to_datetime())
        .ok_or_else(|| Error::InvalidInput("CRL has no nextUpdate".into()))?;
    if next_update <= now {
        return Err(Error::InvalidInput(format!(
            "CRL {number} expired at {} (nextUpdate): the CA is not publishing fresh CRLs",
            crate::rfc3339(next_update)
        )));
    }
    let revoked = parsed.iter_revoked_certificates().count();
    Ok(VerifiedCrl {
        der,
        number,
        this_update,
        next_update,
        revoked,
    })
}

/// How a fetched CRL relates to the one already installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlUpdate {
    /// Same content: nothing to do.
    Unchanged,
    /// Newer: install it.
    Newer,
}

/// Compares a fetched CRL with the installed one (if any readable one exists);
/// refuses one with a lower CRL number, or the same number and other content.
pub fn compare_crl(fetched: &VerifiedCrl, installed: Option<&VerifiedCrl>) -> Result<CrlUpdate> {
    let Some(installed) = installed else {
        return Ok(CrlUpdate::Newer);
    };
    if installed.der == fetched.der {
        return Ok(CrlUpdate::Unchanged);
    }
    if fetched.number <= installed.number {
        return Err(Error::InvalidInput(format!(
            "fetched CRL number {} is not newer than the installed CRL number {} (a replayed or rolled-back CRL); keeping the installed one",
            fetched.number, installed.number
        )));
    }
    Ok(CrlUpdate::Newer)
}

//! CRL building (RFC 5280 §5): a pure function of issuer, entries and time.

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::OffsetDateTime;

use crate::error::Result;
use crate::ids::Serial;
use crate::reason::RevocationReason;
use crate::signer::Signer;
use crate::x509::CaCertificate;

/// One revoked certificate as listed on a CRL.
#[derive(Debug, Clone)]
pub struct RevokedEntry {
    /// Serial.
    pub serial: Serial,
    /// When the CA processed the revocation.
    pub revoked_at: OffsetDateTime,
    /// Reason code (omitted from the entry when `unspecified`, per RFC 5280 §5.3.1).
    pub reason: RevocationReason,
    /// When the key was known or suspected compromised, if the operator said.
    pub invalidity_date: Option<OffsetDateTime>,
}

/// A signed DER CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlDer(pub Vec<u8>);

impl CrlDer {
    /// PEM armour.
    pub fn to_pem(&self) -> String {
        crate::x509::pem_encode("X509 CRL", &self.0)
    }
}

/// Builds and signs a v2 CRL with CRL number and AKI.
pub fn build_crl(
    ca: &CaCertificate,
    signer: &dyn Signer,
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    entries: &[RevokedEntry],
) -> Result<CrlDer> {
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: entries
            .iter()
            .map(|e| RevokedCertParams {
                serial_number: SerialNumber::from_slice(e.serial.as_bytes()),
                revocation_time: e.revoked_at,
                reason_code: (e.reason != RevocationReason::Unspecified)
                    .then(|| e.reason.to_rcgen()),
                invalidity_date: e.invalidity_date,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::PreSpecified(ca.public_key().key_identifier()),
    };
    let issuer = ca.issuer(signer)?;
    Ok(CrlDer(params.signed_by(&issuer)?.der().to_vec()))
}

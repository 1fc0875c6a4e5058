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

// ---------------------------------------------------------------------------
// Several issuers (a trust hierarchy, a rollover): one PEM file with every CRL
// (`GET /crls.pem`), each verified against its own issuer, every issuer
// chaining to a root the gateway pins.
// ---------------------------------------------------------------------------

/// The CRLs of a PEM file holding one or more (or of one DER CRL), as DER.
pub fn split_crls(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    const BEGIN: &str = "-----BEGIN X509 CRL-----";
    const END: &str = "-----END X509 CRL-----";
    let text = String::from_utf8_lossy(bytes);
    if !text.contains(BEGIN) {
        return Ok(vec![der_of(bytes)?]);
    }
    let mut crls = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(BEGIN) {
        let end = rest[start..]
            .find(END)
            .map(|e| start + e + END.len())
            .ok_or_else(|| Error::InvalidInput("a PEM CRL block is not terminated".into()))?;
        crls.push(der_of(&rest.as_bytes()[start..end])?);
        rest = &rest[end..];
    }
    Ok(crls)
}

/// The authority key identifier of a CRL (RFC 5280 §5.2.1), if it has one.
pub fn crl_authority_key_id(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der).ok()?;
    crl.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

/// Verifies every CRL of a set against its issuer. `anchors` (PEM) holds the
/// certificates the gateway trusts: the root (self-signed) and, optionally,
/// issuing CAs; `fetched` more issuer certificates (DER), e.g. a retired
/// issuer's from `/ca/{id}.crt`. Every certificate that is not self-signed
/// must chain to a self-signed one of `anchors` (OpenSSL path validation), so
/// nothing fetched is trusted by itself. Each CRL is matched to the issuer
/// whose subject and key it names.
pub fn verify_crl_set(
    crls: &[Vec<u8>],
    anchors: &[u8],
    fetched: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<Vec<VerifiedCrl>> {
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509StoreContext, X509};
    let anchor_certs = X509::stack_from_pem(anchors)
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| X509::from_der(anchors).ok().map(|c| vec![c]))
        .ok_or_else(|| {
            Error::InvalidInput("the --ca file holds no PEM or DER certificate".into())
        })?;
    let self_signed = |c: &X509| {
        c.issued(c) == openssl::x509::X509VerifyResult::OK
            && c.public_key().and_then(|k| c.verify(&k)).unwrap_or(false)
    };
    let mut builder = X509StoreBuilder::new()?;
    for root in anchor_certs.iter().filter(|c| self_signed(c)) {
        builder.add_cert(root.clone())?;
    }
    let store = builder.build();
    let mut candidates = Vec::new();
    let fetched_certs = fetched
        .iter()
        .map(|d| X509::from_der(d).map_err(Error::from))
        .collect::<Result<Vec<_>>>()?;
    for cert in anchor_certs.iter().chain(fetched_certs.iter()) {
        if !self_signed(cert) {
            let mut context = X509StoreContext::new()?;
            let chain = openssl::stack::Stack::new()?;
            let ok = context.init(&store, cert, &chain, |c| c.verify_cert())?;
            if !ok {
                return Err(Error::InvalidInput(format!(
                    "issuer certificate \"{}\" does not chain to a root in the --ca file",
                    crate::pki::x509::subject_line(&cert.to_der()?)
                )));
            }
        }
        candidates.push(cert.to_der()?);
    }
    let mut verified = Vec::new();
    for crl in crls {
        let found = candidates
            .iter()
            .find_map(|issuer| verify_crl(crl, issuer, now).ok());
        let Some(ok) = found else {
            // Say why with the closest candidate (a bad signature, an expiry).
            let why = candidates
                .iter()
                .filter_map(|issuer| verify_crl(crl, issuer, now).err())
                .map(|e| e.to_string())
                .find(|m| {
                    !m.contains("does not verify")
                        && !m.contains("not the CA certificate's subject")
                })
                .unwrap_or_else(|| "no issuer certificate it verifies against".into());
            return Err(Error::InvalidInput(format!(
                "CRL {} of the set is refused: {why}",
                verified.len() + 1
            )));
        };
        verified.push(ok);
    }
    Ok(verified)
}

/// The subject key identifiers of the certificates in a PEM file.
pub fn certificate_key_ids(pem: &[u8]) -> Vec<Vec<u8>> {
    openssl::x509::X509::stack_from_pem(pem)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.subject_key_id().map(|k| k.as_slice().to_vec()))
        .collect()
}

/// The issuer id (as in `/ca/{issuer-id}.crt`) of the CA with this key identifier.
pub fn issuer_id_of(key_id: &[u8]) -> String {
    hex::encode(&key_id[..key_id.len().min(8)])
}

//! OCSP (RFC 6960, RFC 5019 profile): request parsing and response signing as
//! pure functions of (issuer, responder, statuses, time). Caching and HTTP are
//! the server's.

use std::sync::Arc;

use der::asn1::{BitString, OctetString};
use der::{Decode, Encode};
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, ObjectIdentifier,
    SignatureBitStringEncoding,
};
use time::OffsetDateTime;
use x509_ocsp::builder::OcspResponseBuilder;
use x509_ocsp::ext::Nonce;
use x509_ocsp::{
    CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse, RevokedInfo, SingleResponse,
};

use crate::error::{Error, Result};
use crate::ids::Serial;
use crate::keys::KeyAlgorithm;
use crate::reason::RevocationReason;
use crate::signer::Signer;
use crate::x509::CaCertificate;

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");

/// Longest nonce accepted (RFC 8954 §2.1).
pub const MAX_NONCE_LEN: usize = 32;
/// Most CertIDs answered in one request.
pub const MAX_REQUESTS: usize = 32;

/// Why a request gets no signed answer (the `OCSPResponseStatus` values, RFC 6960 §4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspFailure {
    /// Not an OCSP request, or one we refuse to parse (bad nonce, too many CertIDs).
    Malformed,
    /// A CertID of another issuer, or hashed with an algorithm we do not use.
    Unauthorized,
    /// Signing failed.
    Internal,
}

impl OcspFailure {
    /// The unsigned response carrying this status.
    pub fn response(self) -> Vec<u8> {
        let response = match self {
            OcspFailure::Malformed => OcspResponse::malformed_request(),
            OcspFailure::Unauthorized => OcspResponse::unauthorized(),
            OcspFailure::Internal => OcspResponse::internal_error(),
        };
        response.to_der().expect("static response encodes")
    }

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            OcspFailure::Malformed => "malformed_request",
            OcspFailure::Unauthorized => "unauthorized",
            OcspFailure::Internal => "internal_error",
        }
    }
}

/// A parsed request: the CertIDs (all for our CA) and the nonce, if any.
#[derive(Debug, Clone)]
pub struct OcspQuery {
    /// The CertIDs, as received (echoed in the response).
    pub cert_ids: Vec<CertId>,
    /// Our serial for each CertID; `None` if it cannot be one of ours.
    pub serials: Vec<Option<Serial>>,
    /// The nonce (1..=32 octets), if the request carried one.
    pub nonce: Option<Vec<u8>>,
}

/// The CA's name and key hashes in both CertID hash algorithms.
#[derive(Debug, Clone)]
pub struct IssuerHashes {
    sha1: ([u8; 20], [u8; 20]),
    sha256: ([u8; 32], [u8; 32]),
}

impl IssuerHashes {
    /// From the CA certificate: hashes of its subject DER and of its public key bits (RFC 6960 §4.1.1).
    pub fn new(ca: &CaCertificate) -> Result<Self> {
        use x509_parser::prelude::FromDer;
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&ca.der().0)
            .map_err(|e| Error::Crypto(format!("CA certificate: {e}")))?;
        let key_bits = parsed.public_key().subject_public_key.data.to_vec();
        let name = ca.subject_der();
        Ok(IssuerHashes {
            sha1: (openssl::sha::sha1(name), openssl::sha::sha1(&key_bits)),
            sha256: (openssl::sha::sha256(name), openssl::sha::sha256(&key_bits)),
        })
    }

    /// Hashes of the CA whose real certificate the fuzz corpus requests were
    /// made for; lets fuzzers reach the per-CertID code without a data directory.
    #[doc(hidden)]
    pub fn fixed_for_fuzzing() -> Self {
        let mut sha1 = ([0u8; 20], [0u8; 20]);
        let mut sha256 = ([0u8; 32], [0u8; 32]);
        sha1.0.copy_from_slice(&openssl::sha::sha1(b"fuzz-name"));
        sha1.1.copy_from_slice(&openssl::sha::sha1(b"fuzz-key"));
        sha256
            .0
            .copy_from_slice(&openssl::sha::sha256(b"fuzz-name"));
        sha256.1.copy_from_slice(&openssl::sha::sha256(b"fuzz-key"));
        IssuerHashes { sha1, sha256 }
    }

    fn matches(&self, id: &CertId) -> bool {
        let (name, key) = (
            id.issuer_name_hash.as_bytes(),
            id.issuer_key_hash.as_bytes(),
        );
        match id.hash_algorithm.oid {
            SHA1 => name == self.sha1.0 && key == self.sha1.1,
            SHA256 => name == self.sha256.0 && key == self.sha256.1,
            _ => false,
        }
    }
}

/// Parses a DER request and checks every CertID names our CA.
pub fn parse_request(
    der: &[u8],
    issuer: &IssuerHashes,
) -> std::result::Result<OcspQuery, OcspFailure> {
    let request = OcspRequest::from_der(der).map_err(|_| OcspFailure::Malformed)?;
    let list = &request.tbs_request.request_list;
    if list.is_empty() || list.len() > MAX_REQUESTS {
        return Err(OcspFailure::Malformed);
    }
    let nonce = match &request.tbs_request.request_extensions {
        None => None,
        Some(extensions) => match extensions.iter().find(|e| e.extn_id == NONCE) {
            None => None,
            Some(extension) => {
                let nonce = Nonce::from_der(extension.extn_value.as_bytes())
                    .map_err(|_| OcspFailure::Malformed)?;
                let bytes = nonce.0.as_bytes();
                if bytes.is_empty() || bytes.len() > MAX_NONCE_LEN {
                    return Err(OcspFailure::Malformed);
                }
                Some(bytes.to_vec())
            }
        },
    };
    let mut cert_ids = Vec::with_capacity(list.len());
    let mut serials = Vec::with_capacity(list.len());
    for item in list {
        if !issuer.matches(&item.req_cert) {
            return Err(OcspFailure::Unauthorized);
        }
        serials.push(Serial::from_bytes(item.req_cert.serial_number.as_bytes()));
        cert_ids.push(item.req_cert.clone());
    }
    Ok(OcspQuery {
        cert_ids,
        serials,
        nonce,
    })
}

/// Decodes the path of an RFC 5019 GET (`/ocsp/{base64 DER}`, URL-decoded by the
/// caller). Standard and URL-safe alphabets, padded or not, are accepted.
pub fn decode_get_path(encoded: &str) -> std::result::Result<Vec<u8>, OcspFailure> {
    use base64::Engine as _;
    let cleaned: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if cleaned.is_empty() || cleaned.len() > 8192 {
        return Err(OcspFailure::Malformed);
    }
    let trimmed = cleaned.trim_end_matches('=');
    let engines = [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(trimmed).ok())
        .ok_or(OcspFailure::Malformed)
}

/// A strong HTTP validator for a response (RFC 5019 §6.2 suggests a hash of it).
pub fn etag(der: &[u8]) -> String {
    format!("\"{}\"", hex::encode(openssl::sha::sha1(der)))
}

/// What the CA knows about a serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// Issued by this CA and not revoked.
    Good,
    /// Revoked.
    Revoked {
        /// When.
        at: OffsetDateTime,
        /// Why.
        reason: RevocationReason,
    },
    /// Never issued by this CA.
    Unknown,
}

/// The delegated responder: its certificate (issued by the CA with
/// id-kp-OCSPSigning and id-pkix-ocsp-nocheck) and its key behind the `Signer` seam.
pub struct OcspResponder {
    certificate: x509_cert::Certificate,
    certificate_der: Vec<u8>,
    key_hash: OctetString,
    signer: Arc<dyn Signer>,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for OcspResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OcspResponder(not_after {})",
            crate::rfc3339(self.not_after)
        )
    }
}

impl OcspResponder {
    /// From the responder certificate (DER) and its signer; they must match.
    pub fn new(certificate_der: Vec<u8>, signer: Arc<dyn Signer>) -> Result<Self> {
        let certificate = x509_cert::Certificate::from_der(&certificate_der)
            .map_err(|e| Error::Crypto(format!("responder certificate: {e}")))?;
        let spki = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| Error::Crypto(e.to_string()))?;
        crate::signer::check_matches(signer.as_ref(), &spki).map_err(|_| {
            Error::Key("the OCSP responder key does not match its certificate".into())
        })?;
        let bits = certificate
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        let key_hash = OctetString::new(openssl::sha::sha1(bits).to_vec())
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let not_after = OffsetDateTime::from_unix_timestamp(
            certificate
                .tbs_certificate
                .validity
                .not_after
                .to_unix_duration()
                .as_secs() as i64,
        )
        .map_err(|e| Error::Crypto(e.to_string()))?;
        Ok(OcspResponder {
            certificate,
            certificate_der,
            key_hash,
            signer,
            not_after,
        })
    }

    /// End of the responder certificate's validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The responder certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// Signs a response for `query` with one state per CertID. With a nonce it is
    /// echoed (RFC 8954); thisUpdate is `now`, nextUpdate `now + validity`.
    pub fn sign(
        &self,
        query: &OcspQuery,
        states: &[CertState],
        now: OffsetDateTime,
        validity: time::Duration,
    ) -> std::result::Result<Vec<u8>, OcspFailure> {
        self.sign_inner(query, states, now, validity)
            .map_err(|_| OcspFailure::Internal)
    }

    fn sign_inner(
        &self,
        query: &OcspQuery,
        states: &[CertState],
        now: OffsetDateTime,
        validity: time::Duration,
    ) -> Result<Vec<u8>> {
        let bad = |e: &dyn std::fmt::Display| Error::Crypto(format!("OCSP response: {e}"));
        let this_update = generalized(now)?;
        let next_update = generalized(now + validity)?;
        let mut builder =
            OcspResponseBuilder::new(x509_ocsp::ResponderId::ByKey(self.key_hash.clone()));
        for (id, state) in query.cert_ids.iter().zip(states) {
            let status = match state {
                CertState::Good => CertStatus::good(),
                CertState::Unknown => CertStatus::unknown(),
                CertState::Revoked { at, reason } => CertStatus::revoked(RevokedInfo {
                    revocation_time: generalized(*at)?,
                    revocation_reason: Some(crl_reason(*reason)),
                }),
            };
            builder = builder.with_single_response(
                SingleResponse::new(id.clone(), status, this_update).with_next_update(next_update),
            );
        }
        if let Some(nonce) = &query.nonce {
            builder = builder
                .with_extension(Nonce::new(nonce.clone()).map_err(|e| bad(&e))?)
                .map_err(|e| bad(&e))?;
        }
        let mut signer = OcspSigner(self.signer.as_ref());
        let response = builder
            .sign(
                &mut signer,
                Some(vec![self.certificate.clone()]),
                this_update,
            )
            .map_err(|e| bad(&e))?;
        response.to_der().map_err(|e| bad(&e))
    }
}

fn generalized(t: OffsetDateTime) -> Result<OcspGeneralizedTime> {
    let secs =
        u64::try_from(t.unix_timestamp()).map_err(|_| Error::Crypto("time before 1970".into()))?;
    let time = der::asn1::GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(OcspGeneralizedTime(time))
}

fn crl_reason(reason: RevocationReason) -> x509_cert::ext::pkix::CrlReason {
    use x509_cert::ext::pkix::CrlReason as R;
    match reason {
        RevocationReason::Unspecified => R::Unspecified,
        RevocationReason::KeyCompromise => R::KeyCompromise,
        RevocationReason::CaCompromise => R::CaCompromise,
        RevocationReason::AffiliationChanged => R::AffiliationChanged,
        RevocationReason::Superseded => R::Superseded,
        RevocationReason::CessationOfOperation => R::CessationOfOperation,
        RevocationReason::CertificateHold => R::CertificateHold,
        RevocationReason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
    }
}

/// Presents a [`Signer`] to the RustCrypto `signature` traits the OCSP builder uses.
struct OcspSigner<'a>(&'a dyn Signer);

struct OcspSignature(Vec<u8>);

impl SignatureBitStringEncoding for OcspSignature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl signature::Signer<OcspSignature> for OcspSigner<'_> {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<OcspSignature, signature::Error> {
        self.0
            .sign(message)
            .map(OcspSignature)
            .map_err(|_| signature::Error::new())
    }
}

impl DynSignatureAlgorithmIdentifier for OcspSigner<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        // RFC 5758 §3.2: ECDSA identifiers carry no parameters; RFC 4055: RSA carries NULL.
        Ok(match self.0.public_key().algorithm() {
            KeyAlgorithm::EcdsaP256 => AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
                parameters: None,
            },
            KeyAlgorithm::EcdsaP384 => AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3"),
                parameters: None,
            },
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                AlgorithmIdentifierOwned {
                    oid: ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11"),
                    parameters: Some(der::asn1::Null.into()),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        let issuer = IssuerHashes {
            sha1: ([0; 20], [0; 20]),
            sha256: ([0; 32], [0; 32]),
        };
        for input in [
            &b""[..],
            b"\x30",
            b"\x30\x00",
            b"\x30\x80\x00\x00",
            b"hello world",
            &[0xff; 100],
        ] {
            assert_eq!(
                parse_request(input, &issuer).unwrap_err(),
                OcspFailure::Malformed
            );
        }
        assert!(decode_get_path("!!!").is_err());
        assert!(decode_get_path("").is_err());
        assert_eq!(decode_get_path("MAA=").unwrap(), vec![0x30, 0x00]);
        assert_eq!(decode_get_path("MAA").unwrap(), vec![0x30, 0x00]);
    }

    #[test]
    fn failure_responses_encode() {
        for f in [
            OcspFailure::Malformed,
            OcspFailure::Unauthorized,
            OcspFailure::Internal,
        ] {
            let der = f.response();
            assert!(OcspResponse::from_der(&der).is_ok());
        }
    }
}

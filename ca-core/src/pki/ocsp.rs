//! OCSP (RFC 6960, RFC 5019 profile): request parsing and response signing as
//! pure functions of (issuer, responder, statuses, time). Caching and HTTP are
//! the server's.

use std::sync::Arc;

use der::{Decode, Encode};
use spki::ObjectIdentifier;
use time::OffsetDateTime;
use x509_ocsp::ext::Nonce;
use x509_ocsp::{CertId, OcspRequest, OcspResponse};

use crate::error::{Error, Result};
use crate::ids::Serial;
use crate::pki::derw::{
    push_extension, push_generalized_time, signature_algorithm, wrap, wrap_all,
};
use crate::pki::x509::CaCertificate;
use crate::reason::RevocationReason;
use crate::signer::Signer;

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
// The same OIDs as DER content octets, for writing.
const OID_NONCE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02];
const OID_OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];

/// Longest nonce accepted (RFC 8954 §2.1).
pub const MAX_NONCE_LEN: usize = 32;
/// Most CertIDs answered in one request.
pub const MAX_REQUESTS: usize = 32;
/// Largest request accepted, in bytes. An RFC 5019 request is about 100
/// bytes; 32 CertIDs with a nonce stay under 3 KiB. Anything larger is padding.
pub const MAX_REQUEST_LEN: usize = 4096;
/// Largest request a responder keeps a pre-signed answer for: one CertID
/// and nothing else comes to about 80 (SHA-1) or 110 (SHA-256) bytes.
const MAX_CACHEABLE_LEN: usize = 160;

/// Why a request gets no signed answer (the `OCSPResponseStatus` values, RFC 6960 §4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspFailure {
    /// Not an OCSP request, or one we refuse to parse (bad nonce, too many CertIDs).
    Malformed,
    /// A CertID of another issuer, or hashed with an algorithm we do not use.
    Unauthorized,
    /// Signing failed.
    Internal,
    /// The store cannot be reached to look the serial up, or the responder's
    /// key is unavailable for now (its token was removed) — RFC 6960 §4.2.1
    /// `tryLater`: the client should retry, and may use a cached answer.
    TryLater,
}

impl OcspFailure {
    /// The unsigned response carrying this status.
    pub fn response(self) -> Vec<u8> {
        let response = match self {
            OcspFailure::Malformed => OcspResponse::malformed_request(),
            OcspFailure::Unauthorized => OcspResponse::unauthorized(),
            OcspFailure::Internal => OcspResponse::internal_error(),
            OcspFailure::TryLater => OcspResponse::try_later(),
        };
        response.to_der().expect("static response encodes")
    }

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            OcspFailure::Malformed => "malformed_request",
            OcspFailure::Unauthorized => "unauthorized",
            OcspFailure::Internal => "internal_error",
            OcspFailure::TryLater => "try_later",
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
    /// The request is in the one plain form a pre-signed answer may be kept
    /// for, keyed by its bytes: a single CertID whose hash algorithm has
    /// absent or NULL parameters, and no requestor name, extension or
    /// signature. Padding (junk extensions, parameters, names) cannot then
    /// mint new cache keys: each serial has only a handful of such encodings.
    pub plain: bool,
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
            sha1: (crate::hash::sha1(name), crate::hash::sha1(&key_bits)),
            sha256: (crate::hash::sha256(name), crate::hash::sha256(&key_bits)),
        })
    }

    /// Hashes of the CA whose real certificate the fuzz corpus requests were
    /// made for; lets fuzzers reach the per-CertID code without a data directory.
    #[doc(hidden)]
    pub fn fixed_for_fuzzing() -> Self {
        let mut sha1 = ([0u8; 20], [0u8; 20]);
        let mut sha256 = ([0u8; 32], [0u8; 32]);
        sha1.0.copy_from_slice(&crate::hash::sha1(b"fuzz-name"));
        sha1.1.copy_from_slice(&crate::hash::sha1(b"fuzz-key"));
        sha256.0.copy_from_slice(&crate::hash::sha256(b"fuzz-name"));
        sha256.1.copy_from_slice(&crate::hash::sha256(b"fuzz-key"));
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
    parse_request_any(der, &[issuer]).map(|(_, query)| query)
}

/// Parses a DER request for one of several issuers (a CA after a rollover):
/// every CertID must name the same one of `issuers`, whose index is
/// returned with the query. A request mixing issuers is `unauthorized`: one
/// response is signed by one delegated responder, and a delegated responder
/// answers only for the CA that certified it (RFC 6960 §4.2.2.2).
pub fn parse_request_any(
    der: &[u8],
    issuers: &[&IssuerHashes],
) -> std::result::Result<(usize, OcspQuery), OcspFailure> {
    if der.len() > MAX_REQUEST_LEN {
        return Err(OcspFailure::Malformed);
    }
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
    let which = issuers
        .iter()
        .position(|issuer| issuer.matches(&list[0].req_cert))
        .ok_or(OcspFailure::Unauthorized)?;
    let issuer = issuers[which];
    for item in list {
        if !issuer.matches(&item.req_cert) {
            return Err(OcspFailure::Unauthorized);
        }
        serials.push(Serial::from_bytes(item.req_cert.serial_number.as_bytes()));
        cert_ids.push(item.req_cert.clone());
    }
    let tbs = &request.tbs_request;
    let plain = der.len() <= MAX_CACHEABLE_LEN
        && list.len() == 1
        && list[0].single_request_extensions.is_none()
        && tbs.requestor_name.is_none()
        && tbs.request_extensions.is_none()
        && request.optional_signature.is_none()
        && list[0]
            .req_cert
            .hash_algorithm
            .parameters
            .as_ref()
            .is_none_or(|p| der::Tagged::tag(p) == der::Tag::Null && p.value().is_empty());
    Ok((
        which,
        OcspQuery {
            cert_ids,
            serials,
            nonce,
            plain,
        },
    ))
}

/// Decodes the path of an RFC 5019 GET (`/ocsp/{base64 DER}`, URL-decoded by the
/// caller). Standard and URL-safe alphabets, padded or not, are accepted.
pub fn decode_get_path(encoded: &str) -> std::result::Result<Vec<u8>, OcspFailure> {
    use base64::Engine as _;
    let cleaned: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if cleaned.is_empty() || cleaned.len() > MAX_REQUEST_LEN.div_ceil(3) * 4 {
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
    format!("\"{}\"", hex::encode(crate::hash::sha1(der)))
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
    certificate_der: Vec<u8>,
    /// `responderID` as encoded in every response: `byKey`, the SHA-1 of the
    /// responder's public key bits.
    responder_id: Vec<u8>,
    /// `signatureAlgorithm`, encoded.
    algorithm: Vec<u8>,
    /// `certs [0] EXPLICIT SEQUENCE OF Certificate`, encoded: the responder certificate.
    certs: Vec<u8>,
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
        let responder_id = wrap(0xa2, &wrap(0x04, &crate::hash::sha1(bits)));
        let certs = wrap(0xa0, &wrap(0x30, &certificate_der));
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
            algorithm: signature_algorithm(signer.public_key().algorithm()),
            certificate_der,
            responder_id,
            certs,
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
            .map_err(|e| match e {
                Error::SignerUnavailable(_) => OcspFailure::TryLater,
                _ => OcspFailure::Internal,
            })
    }

    /// True when signing waits on a device (a token): call
    /// [`OcspResponder::sign`] from a blocking thread then.
    pub fn blocks(&self) -> bool {
        self.signer.blocks()
    }

    /// Writes the response DER by hand (RFC 6960 §4.2.1): this runs for every
    /// nonce request, and a tree of values re-encoding the responder
    /// certificate each time cost as much as the signature.
    fn sign_inner(
        &self,
        query: &OcspQuery,
        states: &[CertState],
        now: OffsetDateTime,
        validity: time::Duration,
    ) -> Result<Vec<u8>> {
        let bad = |e: &dyn std::fmt::Display| Error::Crypto(format!("OCSP response: {e}"));
        if now.unix_timestamp() < 0 {
            return Err(Error::Crypto("OCSP response: time before 1970".into()));
        }
        let mut this_update = Vec::with_capacity(17);
        push_generalized_time(&mut this_update, now);
        let mut time = Vec::with_capacity(17);
        push_generalized_time(&mut time, now + validity);
        let next_update = wrap(0xa0, &time);

        let mut responses = Vec::with_capacity(states.len() * 128);
        for (id, state) in query.cert_ids.iter().zip(states) {
            let status = match state {
                CertState::Good => vec![0x80, 0x00],
                CertState::Unknown => vec![0x82, 0x00],
                CertState::Revoked { at, reason } => {
                    // revocationTime, revocationReason [0] EXPLICIT CRLReason.
                    let mut info = Vec::with_capacity(24);
                    push_generalized_time(&mut info, *at);
                    info.extend_from_slice(&[0xa0, 0x03, 0x0a, 0x01, reason.code()]);
                    wrap(0xa1, &info)
                }
            };
            let id = id.to_der().map_err(|e| bad(&e))?;
            responses.extend(wrap_all(0x30, &[&id, &status, &this_update, &next_update]));
        }

        // ResponseData: version v1 (the default, omitted), responderID,
        // producedAt, responses, responseExtensions [1] with the nonce echoed
        // (RFC 8954 §2.1: its value is the nonce as an OCTET STRING).
        let extensions = match &query.nonce {
            Some(nonce) => {
                let mut extension = Vec::with_capacity(nonce.len() + 16);
                push_extension(&mut extension, OID_NONCE, &wrap(0x04, nonce));
                wrap(0xa1, &wrap(0x30, &extension))
            }
            None => Vec::new(),
        };
        let data = wrap_all(
            0x30,
            &[
                &self.responder_id,
                &this_update,
                &wrap(0x30, &responses),
                &extensions,
            ],
        );
        let signature = self.signer.sign(&data)?;
        let mut bit_string = Vec::with_capacity(signature.len() + 1);
        bit_string.push(0x00);
        bit_string.extend_from_slice(&signature);
        let basic = wrap_all(
            0x30,
            &[
                &data,
                &self.algorithm,
                &wrap(0x03, &bit_string),
                &self.certs,
            ],
        );

        // OCSPResponse: successful, responseBytes [0] EXPLICIT
        // { id-pkix-ocsp-basic, OCTET STRING { BasicOCSPResponse } }.
        let response_bytes = wrap_all(0x30, &[&wrap(0x06, OID_OCSP_BASIC), &wrap(0x04, &basic)]);
        Ok(wrap_all(
            0x30,
            &[&[0x0a, 0x01, 0x00], &wrap(0xa0, &response_bytes)],
        ))
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

    #[test]
    fn hand_written_responses_decode_and_verify() {
        use crate::keys::KeyAlgorithm;
        use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponseStatus};

        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let (certificate, signer) = crate::pki::x509::test_certificate(
                algorithm.generate().unwrap(),
                "CN=Test Responder",
            );
            let signer = Arc::new(signer);
            let now = crate::now();
            let responder = OcspResponder::new(certificate.0.clone(), signer.clone()).unwrap();
            let id = |serial: u8| CertId {
                hash_algorithm: spki::AlgorithmIdentifierOwned {
                    oid: SHA1,
                    parameters: None,
                },
                issuer_name_hash: der::asn1::OctetString::new([1u8; 20]).unwrap(),
                issuer_key_hash: der::asn1::OctetString::new([2u8; 20]).unwrap(),
                serial_number: x509_cert::serial_number::SerialNumber::new(&[0x40, serial])
                    .unwrap(),
            };
            let revoked_at = now - time::Duration::hours(1);
            let query = OcspQuery {
                cert_ids: vec![id(1), id(2), id(3)],
                serials: vec![None, None, None],
                nonce: Some(vec![7u8; 32]),
                plain: false,
            };
            let states = [
                CertState::Good,
                CertState::Revoked {
                    at: revoked_at,
                    reason: RevocationReason::KeyCompromise,
                },
                CertState::Unknown,
            ];
            let der = responder
                .sign(&query, &states, now, time::Duration::hours(4))
                .unwrap();

            let response = OcspResponse::from_der(&der).unwrap();
            assert_eq!(response.response_status, OcspResponseStatus::Successful);
            let bytes = response.response_bytes.unwrap();
            let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
            assert_eq!(
                basic.to_der().unwrap(),
                bytes.response.as_bytes(),
                "canonical DER"
            );
            let data = &basic.tbs_response_data;
            assert_eq!(data.responses.len(), 3);
            for (single, expected) in data.responses.iter().zip(&query.cert_ids) {
                assert_eq!(&single.cert_id, expected);
                let this = single.this_update.0.to_unix_duration().as_secs() as i64;
                let next = single.next_update.unwrap().0.to_unix_duration().as_secs() as i64;
                assert_eq!((this, next - this), (now.unix_timestamp(), 4 * 3600));
            }
            assert!(matches!(data.responses[0].cert_status, CertStatus::Good(_)));
            match &data.responses[1].cert_status {
                CertStatus::Revoked(info) => {
                    assert_eq!(
                        info.revocation_time.0.to_unix_duration().as_secs() as i64,
                        revoked_at.unix_timestamp()
                    );
                    assert_eq!(
                        info.revocation_reason,
                        Some(x509_cert::ext::pkix::CrlReason::KeyCompromise)
                    );
                }
                other => panic!("expected revoked, got {other:?}"),
            }
            assert!(matches!(
                data.responses[2].cert_status,
                CertStatus::Unknown(_)
            ));
            let extensions = data.response_extensions.as_ref().unwrap();
            let nonce = Nonce::from_der(extensions[0].extn_value.as_bytes()).unwrap();
            assert_eq!(nonce.0.as_bytes(), &[7u8; 32]);
            let certs = basic.certs.as_ref().unwrap();
            assert_eq!(certs[0].to_der().unwrap(), certificate.0);

            // The signature covers the ResponseData exactly as sent.
            let public =
                openssl::pkey::PKey::public_key_from_der(signer.public_key().spki_der()).unwrap();
            let mut verifier = openssl::sign::Verifier::new(algorithm.digest(), &public).unwrap();
            verifier.update(&data.to_der().unwrap()).unwrap();
            assert!(verifier.verify(basic.signature.raw_bytes()).unwrap());
        }
    }
}

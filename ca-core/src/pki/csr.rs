//! PKCS#10 certificate requests: proof of possession, and the key they carry.
//!
//! Only the key and the request's signature matter; the subject and the
//! requested extensions are ignored (the policy decides those).
//!
//! ECDSA requests on P-256/P-384 — what automation clients send — are parsed
//! here and verified with ring (already linked: the TLS listener runs on it).
//! Going through `X509_REQ` made OpenSSL 3 run its generic key decoder and
//! encoder (provider lookups under global locks), five times the signature
//! check itself; OpenSSL's low-level ECDSA still spent a fifth more than the
//! check on building the key and decoding and re-encoding the signature, which
//! ring does in one pass (BENCHMARKS.md, CSR signing). Every other request
//! (RSA, compressed points, other digests) takes OpenSSL's general path.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};
use crate::keys::{KeyAlgorithm, PublicKey};

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

fn not_a_csr() -> Error {
    Error::InvalidInput("the CSR is not a PEM or DER PKCS#10 certificate request".into())
}

fn bad_signature() -> Error {
    Error::InvalidInput(
        "the CSR's signature does not verify: it was not signed by the key it carries (or was altered)"
            .into(),
    )
}

/// Checks that a CSR (PEM or DER) is signed by the key it carries and
/// returns that key. `accept` sees the key's algorithm first: a key the
/// policy refuses (or an odd RSA size or exponent) costs no signature check.
pub(crate) fn verified_public_key(
    csr: &[u8],
    accept: impl Fn(KeyAlgorithm) -> Result<()>,
) -> Result<PublicKey> {
    let der = to_der(csr)?;
    let (rest, request) = X509CertificationRequest::from_der(&der).map_err(|_| not_a_csr())?;
    if !rest.is_empty() {
        return Err(not_a_csr());
    }
    match verify_ecdsa(&request, &accept)? {
        Some(key) => Ok(key),
        None => verify_with_openssl(&der, &accept),
    }
}

/// The DER of a PEM `CERTIFICATE REQUEST` block, or the input itself.
fn to_der(csr: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    let text = csr.trim_ascii_start();
    if !text.starts_with(b"-----BEGIN") {
        return Ok(std::borrow::Cow::Borrowed(csr));
    }
    let (_, pem) = x509_parser::pem::parse_x509_pem(text).map_err(|_| not_a_csr())?;
    if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
        return Err(Error::InvalidInput(format!(
            "expected a PEM CERTIFICATE REQUEST block, found {}",
            pem.label
        )));
    }
    Ok(std::borrow::Cow::Owned(pem.contents))
}

/// The fast path: a named-curve ECDSA request with an uncompressed point.
/// `None` when the request is of another kind.
fn verify_ecdsa(
    request: &X509CertificationRequest<'_>,
    accept: &impl Fn(KeyAlgorithm) -> Result<()>,
) -> Result<Option<PublicKey>> {
    let spki = &request.certification_request_info.subject_pki;
    if spki.algorithm.algorithm.to_id_string() != OID_EC_PUBLIC_KEY {
        return Ok(None);
    }
    let Some(curve) = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
    else {
        return Ok(None);
    };
    let algorithm = match curve.to_id_string().as_str() {
        OID_P256 => KeyAlgorithm::EcdsaP256,
        OID_P384 => KeyAlgorithm::EcdsaP384,
        _ => return Ok(None),
    };
    use ring::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1};
    let verifier = match (
        algorithm,
        request
            .signature_algorithm
            .algorithm
            .to_id_string()
            .as_str(),
    ) {
        (KeyAlgorithm::EcdsaP256, OID_ECDSA_SHA256) => &ECDSA_P256_SHA256_ASN1,
        (KeyAlgorithm::EcdsaP384, OID_ECDSA_SHA384) => &ECDSA_P384_SHA384_ASN1,
        // Another curve-digest pairing: OpenSSL's general path takes it.
        _ => return Ok(None),
    };
    if request.signature_algorithm.parameters.is_some() {
        return Ok(None);
    }
    let point_bytes = spki.subject_public_key.data.as_ref();
    if point_bytes.first() != Some(&0x04) {
        return Ok(None);
    }
    accept(algorithm)?;
    // ring refuses a point off the curve and any signature that is not the
    // one DER encoding of (r, s), as OpenSSL does.
    let key = ring::signature::UnparsedPublicKey::new(verifier, point_bytes);
    key.verify(
        request.certification_request_info.raw,
        request.signature_value.data.as_ref(),
    )
    .map_err(|_| {
        let curve = match algorithm {
            KeyAlgorithm::EcdsaP384 => "P-384",
            _ => "P-256",
        };
        Error::InvalidInput(format!(
            "the CSR's signature does not verify: it was not signed by the {curve} key it carries (or was altered), or that key is not a valid {curve} point"
        ))
    })?;
    PublicKey::from_ec_point(algorithm, point_bytes.to_vec()).map(Some)
}

/// The general path, for RSA and anything the fast path does not take.
fn verify_with_openssl(
    der: &[u8],
    accept: &impl Fn(KeyAlgorithm) -> Result<()>,
) -> Result<PublicKey> {
    let request = openssl::x509::X509Req::from_der(der).map_err(|_| not_a_csr())?;
    let key = request
        .public_key()
        .map_err(|_| Error::InvalidInput("the CSR's public key cannot be read".into()))?;
    accept(KeyAlgorithm::of_key(&key)?)?;
    if !request.verify(&key).unwrap_or(false) {
        return Err(bad_signature());
    }
    PublicKey::from_pkey(&key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::x509::{X509NameBuilder, X509ReqBuilder};

    fn csr(
        algorithm: KeyAlgorithm,
        digest: MessageDigest,
    ) -> (PKey<openssl::pkey::Private>, Vec<u8>) {
        let key = algorithm.generate().unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "robot").unwrap();
        let mut builder = X509ReqBuilder::new().unwrap();
        builder.set_subject_name(&name.build()).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder.sign(&key, digest).unwrap();
        (key, builder.build().to_der().unwrap())
    }

    #[test]
    fn every_supported_key_round_trips_with_the_spki_openssl_writes() {
        for (algorithm, digest) in [
            (KeyAlgorithm::EcdsaP256, MessageDigest::sha256()),
            (KeyAlgorithm::EcdsaP384, MessageDigest::sha384()),
            (KeyAlgorithm::EcdsaP256, MessageDigest::sha512()), // general path
            (KeyAlgorithm::Rsa2048, MessageDigest::sha256()),
        ] {
            let (key, der) = csr(algorithm, digest);
            let pem = openssl::x509::X509Req::from_der(&der)
                .unwrap()
                .to_pem()
                .unwrap();
            for input in [&der, &pem] {
                let public = verified_public_key(input, any).unwrap();
                assert_eq!(public.algorithm(), algorithm);
                assert_eq!(public.spki_der(), key.public_key_to_der().unwrap());
            }
        }
    }

    #[test]
    fn altered_requests_and_other_inputs_are_refused() {
        let (_, der) = csr(KeyAlgorithm::EcdsaP256, MessageDigest::sha256());
        // Flip one byte of the subject (inside the signed info).
        let cn = der.windows(5).position(|w| w == b"robot").unwrap();
        let mut altered = der.clone();
        altered[cn] ^= 0x01;
        let err = verified_public_key(&altered, any).unwrap_err().to_string();
        assert!(err.contains("does not verify"), "{err}");

        // A signature from a different key over the same body.
        let (_, other) = csr(KeyAlgorithm::EcdsaP256, MessageDigest::sha256());
        let mut spliced = der.clone();
        let (ours, theirs) = (sig_start(&der), sig_start(&other));
        spliced.truncate(ours);
        spliced.extend_from_slice(&other[theirs..]);
        fix_outer_length(&mut spliced);
        assert!(verified_public_key(&spliced, any).is_err());

        let mut trailing = der.clone();
        trailing.push(0);
        assert!(verified_public_key(&trailing, any).is_err());
        assert!(verified_public_key(b"not a request", any).is_err());
        let cert_pem = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        let err = verified_public_key(cert_pem, any).unwrap_err().to_string();
        assert!(err.contains("CERTIFICATE REQUEST"), "{err}");
    }

    /// What the P-256 check must refuse as OpenSSL did: a signature in a
    /// DER encoding other than the one canonical form (seen failing with a
    /// lenient re-encode in front of ring), and an altered key, refused
    /// naming the curve.
    #[test]
    fn non_canonical_signatures_and_altered_keys_are_refused() {
        let (_, der) = csr(KeyAlgorithm::EcdsaP256, MessageDigest::sha256());
        assert!(verified_public_key(&der, any).is_ok());
        let start = sig_start(&der);
        // The signature: SEQUENCE { INTEGER r, INTEGER s } with short lengths.
        let sig = &der[start + 3..];
        assert_eq!((sig[0], sig[2]), (0x30, 0x02));
        let r_len = sig[3] as usize;
        // The same r with one more leading zero byte: same value, longer form.
        let mut padded = vec![0x30, sig[1] + 1, 0x02, sig[3] + 1, 0x00];
        padded.extend_from_slice(&sig[4..4 + r_len]);
        padded.extend_from_slice(&sig[4 + r_len..]);
        let mut request = der[..start].to_vec();
        request.extend_from_slice(&[0x03, padded.len() as u8 + 1, 0x00]);
        request.extend_from_slice(&padded);
        fix_outer_length(&mut request);
        // Refused by the signature check itself, not as an unreadable request.
        let err = verified_public_key(&request, any).unwrap_err().to_string();
        assert!(err.contains("signed by the P-256 key it carries"), "{err}");

        // The key's y coordinate changed (off the curve, and no longer the
        // key that signed): refused either way, by the one check.
        let (_, parsed) = X509CertificationRequest::from_der(&der).unwrap();
        let point = parsed
            .certification_request_info
            .subject_pki
            .subject_public_key
            .data
            .to_vec();
        let at = der.windows(point.len()).position(|w| w == point).unwrap();
        let mut off_curve = der.clone();
        off_curve[at + point.len() - 1] ^= 0x01;
        let err = verified_public_key(&off_curve, any)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid P-256 point"), "{err}");
    }

    fn any(_: KeyAlgorithm) -> Result<()> {
        Ok(())
    }

    fn rsa_csr(bits: u32, exponent: u32) -> Vec<u8> {
        let e = openssl::bn::BigNum::from_u32(exponent).unwrap();
        let rsa = openssl::rsa::Rsa::generate_with_e(bits, &e).unwrap();
        let key = PKey::from_rsa(rsa).unwrap();
        let mut builder = X509ReqBuilder::new().unwrap();
        builder.set_pubkey(&key).unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        builder.build().to_der().unwrap()
    }

    #[test]
    fn rsa_keys_must_be_exactly_a_supported_size_with_exponent_65537() {
        let err = verified_public_key(&rsa_csr(2047, 65537), any)
            .unwrap_err()
            .to_string();
        assert!(err.contains("RSA-2047"), "{err}");
        let err = verified_public_key(&rsa_csr(2048, 3), any)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exponent 3"), "{err}");
        let err = verified_public_key(&rsa_csr(1024, 65537), any)
            .unwrap_err()
            .to_string();
        assert!(err.contains("RSA-1024"), "{err}");
        let key = verified_public_key(&rsa_csr(2048, 65537), any).unwrap();
        assert_eq!(key.algorithm(), KeyAlgorithm::Rsa2048);
    }

    #[test]
    fn the_policy_sees_the_key_type_before_the_signature_is_checked() {
        let refuse = |alg: KeyAlgorithm| -> Result<()> {
            Err(Error::InvalidInput(format!("policy refuses {alg}")))
        };
        // A refused key type wins over a broken signature, on both paths.
        for (algorithm, digest) in [
            (KeyAlgorithm::EcdsaP256, MessageDigest::sha256()),
            (KeyAlgorithm::Rsa2048, MessageDigest::sha256()),
        ] {
            let (_, der) = csr(algorithm, digest);
            let cn = der.windows(5).position(|w| w == b"robot").unwrap();
            let mut altered = der.clone();
            altered[cn] ^= 0x01;
            let err = verified_public_key(&altered, refuse)
                .unwrap_err()
                .to_string();
            assert_eq!(err, format!("policy refuses {algorithm}"));
        }
    }

    /// Offset of the signature BIT STRING (the last element of the request).
    fn sig_start(der: &[u8]) -> usize {
        let (_, request) = X509CertificationRequest::from_der(der).unwrap();
        let len = request.signature_value.data.len();
        // tag + one-byte length + unused-bits byte
        der.len() - len - 3
    }

    fn fix_outer_length(der: &mut [u8]) {
        // Test requests are 128..=255 bytes long: 0x30 0x81 LEN.
        assert_eq!(der[1], 0x81);
        der[2] = (der.len() - 3) as u8;
    }
}

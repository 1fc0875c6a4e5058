//! PKCS#12 bundles (RFC 7292) for delivery to the admin's device, and their passwords.

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::X509;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::policy::{Pkcs12Profile, Pkcs12Settings};

/// Password alphabet: letters and digits without the look-alikes 0/O, 1/l/I,
/// since the password is read out or typed by a person.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

/// A DER PKCS#12 bundle.
#[derive(Clone)]
pub struct Pkcs12Der(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Pkcs12Der {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs12Der({} bytes)", self.0.len())
    }
}

/// Draws a password of `length` characters from the OS CSPRNG (≈5.8 bits each).
pub fn generate_password(length: usize) -> Result<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(length));
    let mut buf = Zeroizing::new([0u8; 64]);
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - (256 % ALPHABET.len());
    while out.len() < length {
        openssl::rand::rand_bytes(&mut buf[..])?;
        for &b in buf.iter() {
            if (b as usize) < limit && out.len() < length {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// Checks a caller-supplied bundle password.
pub(crate) fn check_password(password: &str) -> Result<()> {
    if password.len() < 8 || password.len() > 256 {
        return Err(Error::InvalidInput(
            "PKCS#12 password must be 8 to 256 characters".into(),
        ));
    }
    if password.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidInput(
            "PKCS#12 password must not contain control characters".into(),
        ));
    }
    Ok(())
}

/// Packages key + certificate + CA chain. The friendly name goes on the key and
/// certificate bags, with the matching localKeyId on both. The modern profile
/// is written here ([`modern`]); the legacy one by OpenSSL.
pub(crate) fn build_pkcs12(
    key: &PKey<Private>,
    certificate_der: &[u8],
    ca_der: &[u8],
    settings: &Pkcs12Settings,
    friendly_name: &str,
    password: &str,
) -> Result<Pkcs12Der> {
    if settings.profile == Pkcs12Profile::Modern {
        return modern::build(
            key,
            certificate_der,
            ca_der,
            settings.iterations,
            friendly_name,
            password,
        );
    }
    let cert = X509::from_der(certificate_der)?;
    let mut chain = Stack::new()?;
    chain.push(X509::from_der(ca_der)?)?;
    let mut builder = openssl::pkcs12::Pkcs12::builder();
    builder
        .name(friendly_name)
        .pkey(key)
        .cert(&cert)
        .ca(chain)
        .key_iter(settings.iterations)
        .mac_iter(settings.iterations);
    builder
        .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .mac_md(MessageDigest::sha1());
    let p12 = builder.build2(password)?;
    Ok(Pkcs12Der(Zeroizing::new(p12.to_der()?)))
}

/// The modern profile (PBES2: PBKDF2-HMAC-SHA256 and AES-256-CBC for the key
/// and the certificates, HMAC-SHA256 MAC), laid out as OpenSSL 3's
/// `PKCS12_create` lays it out.
///
/// Written by hand for speed: the three key derivations are nearly all of an
/// issuance, and OpenSSL 3 spends ~4× the hashing itself on copying HMAC
/// contexts (with an allocation each) every iteration. Here each iteration is
/// two SHA-256 compressions on states precomputed for the HMAC pads.
mod modern {
    use openssl::pkey::{PKey, Private};
    use openssl::sha::Sha256;
    use openssl::symm::Cipher;
    use zeroize::Zeroizing;

    use crate::derw::{uint, wrap, wrap_all};
    use crate::error::Result;
    use crate::hash::sha1;

    const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    const OID_ENCRYPTED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
    const OID_PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
    const OID_PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
    const OID_HMAC_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09];
    const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
    const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    const OID_SHROUDED_KEY_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
    ];
    const OID_CERT_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03,
    ];
    const OID_X509_CERTIFICATE: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
    const OID_FRIENDLY_NAME: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x14];
    const OID_LOCAL_KEY_ID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x15];
    const NULL: &[u8] = &[0x05, 0x00];

    /// Salt length for PBKDF2 and the MAC (128 bits, as NIST SP 800-132 asks).
    const SALT_LEN: usize = 16;

    pub(super) fn build(
        key: &PKey<Private>,
        certificate_der: &[u8],
        ca_der: &[u8],
        iterations: u32,
        friendly_name: &str,
        password: &str,
    ) -> Result<super::Pkcs12Der> {
        let attributes = bag_attributes(friendly_name, &sha1(certificate_der));

        // The certificates, encrypted: leaf (named) then the CA. EncryptedData
        // is version 0 and EncryptedContentInfo { data, algorithm, [0] IMPLICIT ciphertext }.
        let certs = wrap_all(
            0x30,
            &[
                &cert_bag(certificate_der, Some(&attributes)),
                &cert_bag(ca_der, None),
            ],
        );
        let (algorithm, encrypted) = pbes2_encrypt(password, iterations, &certs)?;
        let encrypted_content = wrap_all(
            0x30,
            &[&wrap(0x06, OID_DATA), &algorithm, &wrap(0x80, &encrypted)],
        );
        let encrypted_data = wrap_all(0x30, &[&[0x02, 0x01, 0x00], &encrypted_content]);
        let certificates = content_info(OID_ENCRYPTED_DATA, &encrypted_data);

        // The key, as a pkcs8ShroudedKeyBag inside plain data.
        let pkcs8 = Zeroizing::new(key.private_key_to_pkcs8()?);
        let (algorithm, encrypted) = pbes2_encrypt(password, iterations, &pkcs8)?;
        let shrouded = wrap_all(0x30, &[&algorithm, &wrap(0x04, &encrypted)]);
        let key_bags = wrap(
            0x30,
            &safe_bag(OID_SHROUDED_KEY_BAG, &shrouded, Some(&attributes)),
        );
        let keys = content_info(OID_DATA, &wrap(0x04, &key_bags));

        let authenticated_safe = wrap_all(0x30, &[&certificates, &keys]);

        // MAC over the AuthenticatedSafe, keyed by the PKCS#12 KDF (RFC 7292 App. B).
        let mac_salt = random::<SALT_LEN>()?;
        let mac_key = pkcs12_mac_key(password, &mac_salt, iterations);
        let mac = Hmac::new(&mac_key[..]).mac(&authenticated_safe);
        let digest_algorithm = wrap_all(0x30, &[&wrap(0x06, OID_SHA256), NULL]);
        let mac_data = wrap_all(
            0x30,
            &[
                &wrap_all(0x30, &[&digest_algorithm, &wrap(0x04, &mac)]),
                &wrap(0x04, &mac_salt),
                &uint(&iterations.to_be_bytes()),
            ],
        );

        let pfx = wrap_all(
            0x30,
            &[
                &[0x02, 0x01, 0x03],
                &content_info(OID_DATA, &wrap(0x04, &authenticated_safe)),
                &mac_data,
            ],
        );
        Ok(super::Pkcs12Der(Zeroizing::new(pfx)))
    }

    /// `ContentInfo { contentType, [0] EXPLICIT content }`.
    fn content_info(content_type: &[u8], content: &[u8]) -> Vec<u8> {
        wrap_all(0x30, &[&wrap(0x06, content_type), &wrap(0xa0, content)])
    }

    /// `SET OF Attribute` with friendlyName (BMPString) and localKeyId, in DER order.
    fn bag_attributes(friendly_name: &str, key_id: &[u8]) -> Vec<u8> {
        let bmp: Vec<u8> = friendly_name
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let attribute = |oid: &[u8], tag: u8, value: &[u8]| {
            wrap_all(0x30, &[&wrap(0x06, oid), &wrap(0x31, &wrap(tag, value))])
        };
        let mut attributes = [
            attribute(OID_FRIENDLY_NAME, 0x1e, &bmp),
            attribute(OID_LOCAL_KEY_ID, 0x04, key_id),
        ];
        attributes.sort();
        wrap(0x31, &attributes.concat())
    }

    fn safe_bag(bag_id: &[u8], value: &[u8], attributes: Option<&[u8]>) -> Vec<u8> {
        wrap_all(
            0x30,
            &[
                &wrap(0x06, bag_id),
                &wrap(0xa0, value),
                attributes.unwrap_or_default(),
            ],
        )
    }

    fn cert_bag(certificate_der: &[u8], attributes: Option<&[u8]>) -> Vec<u8> {
        let bag = wrap_all(
            0x30,
            &[
                &wrap(0x06, OID_X509_CERTIFICATE),
                &wrap(0xa0, &wrap(0x04, certificate_der)),
            ],
        );
        safe_bag(OID_CERT_BAG, &bag, attributes)
    }

    /// Encrypts under PBES2 (RFC 8018 §6.2) with a fresh salt and IV; returns
    /// the AlgorithmIdentifier and the ciphertext.
    fn pbes2_encrypt(password: &str, iterations: u32, plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let salt = random::<SALT_LEN>()?;
        let iv = random::<16>()?;
        let key = pbkdf2_sha256(password.as_bytes(), &salt, iterations);
        let encrypted = openssl::symm::encrypt(Cipher::aes_256_cbc(), &key[..], Some(&iv), plain)?;

        let prf = wrap_all(0x30, &[&wrap(0x06, OID_HMAC_SHA256), NULL]);
        let params = wrap_all(
            0x30,
            &[&wrap(0x04, &salt), &uint(&iterations.to_be_bytes()), &prf],
        );
        let kdf = wrap_all(0x30, &[&wrap(0x06, OID_PBKDF2), &params]);
        let scheme = wrap_all(0x30, &[&wrap(0x06, OID_AES256_CBC), &wrap(0x04, &iv)]);
        let algorithm = wrap_all(
            0x30,
            &[&wrap(0x06, OID_PBES2), &wrap_all(0x30, &[&kdf, &scheme])],
        );
        Ok((algorithm, encrypted))
    }

    fn random<const N: usize>() -> Result<[u8; N]> {
        let mut bytes = [0u8; N];
        openssl::rand::rand_bytes(&mut bytes)?;
        Ok(bytes)
    }

    /// HMAC-SHA256 with the padded key's states computed once; each MAC
    /// copies them (a plain struct copy, no allocation).
    struct Hmac {
        inner: Sha256,
        outer: Sha256,
    }

    impl Hmac {
        fn new(key: &[u8]) -> Self {
            let mut block = Zeroizing::new([0u8; 64]);
            if key.len() > 64 {
                block[..32].copy_from_slice(&crate::hash::sha256(key));
            } else {
                block[..key.len()].copy_from_slice(key);
            }
            let mut pad = Zeroizing::new([0u8; 64]);
            let mut state = |byte: u8| {
                for (p, k) in pad.iter_mut().zip(block.iter()) {
                    *p = k ^ byte;
                }
                let mut h = Sha256::new();
                h.update(&pad[..]);
                h
            };
            Hmac {
                inner: state(0x36),
                outer: state(0x5c),
            }
        }

        fn mac(&self, message: &[u8]) -> [u8; 32] {
            let mut inner = self.inner.clone();
            inner.update(message);
            let mut outer = self.outer.clone();
            outer.update(&inner.finish());
            outer.finish()
        }
    }

    impl Drop for Hmac {
        /// The pad states are derived from the password: overwrite them.
        fn drop(&mut self) {
            self.inner = Sha256::new();
            self.outer = Sha256::new();
            std::hint::black_box(&self.inner);
            std::hint::black_box(&self.outer);
        }
    }

    /// PBKDF2-HMAC-SHA256 (RFC 8018 §5.2), one 32-byte block: the AES-256 key.
    pub(super) fn pbkdf2_sha256(
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Zeroizing<[u8; 32]> {
        let hmac = Hmac::new(password);
        let mut first = Vec::with_capacity(salt.len() + 4);
        first.extend_from_slice(salt);
        first.extend_from_slice(&1u32.to_be_bytes());
        let mut u = Zeroizing::new(hmac.mac(&first));
        let mut t = Zeroizing::new(*u);
        for _ in 1..iterations {
            *u = hmac.mac(&u[..]);
            for (t, u) in t.iter_mut().zip(u.iter()) {
                *t ^= u;
            }
        }
        t
    }

    /// The PKCS#12 key derivation (RFC 7292 Appendix B.2) with SHA-256 for
    /// the MAC key (ID 3): the password as a NUL-terminated BMPString.
    pub(super) fn pkcs12_mac_key(
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Zeroizing<[u8; 32]> {
        const V: usize = 64;
        let mut bmp = Zeroizing::new(Vec::with_capacity(password.len() * 2 + 2));
        bmp.extend(password.encode_utf16().flat_map(u16::to_be_bytes));
        bmp.extend_from_slice(&[0, 0]);
        let fill = |source: &[u8]| -> Zeroizing<Vec<u8>> {
            let len = source.len().div_ceil(V) * V;
            Zeroizing::new(source.iter().copied().cycle().take(len).collect())
        };
        let mut h = Sha256::new();
        h.update(&[3u8; V]);
        h.update(&fill(salt));
        h.update(&fill(&bmp));
        let mut a = Zeroizing::new(h.finish());
        for _ in 1..iterations {
            let mut h = Sha256::new();
            h.update(&a[..]);
            *a = h.finish();
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_random_and_unambiguous() {
        let a = generate_password(20).unwrap();
        let b = generate_password(20).unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(*a, *b);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
        assert!(check_password("short").is_err());
    }

    #[test]
    fn pbkdf2_matches_openssl() {
        for (password, iterations) in [
            (&b"password"[..], 1),
            (b"password", 2),
            (b"passwordPASSWORDpassword", 2048),
            (&[0x41u8; 100][..], 1000),
        ] {
            let salt = b"saltSALTsaltSALTsaltSALTsaltSALTsalt";
            let mut expected = [0u8; 32];
            openssl::pkcs5::pbkdf2_hmac(
                password,
                salt,
                iterations,
                MessageDigest::sha256(),
                &mut expected,
            )
            .unwrap();
            assert_eq!(
                *modern::pbkdf2_sha256(password, salt, iterations as u32),
                expected
            );
        }
    }

    #[test]
    fn modern_bundles_open_with_openssl_for_any_password() {
        let key = crate::keys::KeyAlgorithm::EcdsaP256.generate().unwrap();
        let (cert, _) = crate::x509::test_certificate(key.clone(), "CN=Bundle Test");
        let long = "x".repeat(100);
        for password in ["Abcdefgh2345", "pässwörd-ünïcode-€-😀", long.as_str()] {
            let der =
                modern::build(&key, &cert.0, &cert.0, 2048, "alice (acme)", password).unwrap();
            let parsed = openssl::pkcs12::Pkcs12::from_der(&der.0)
                .unwrap()
                .parse2(password)
                .unwrap_or_else(|e| panic!("{password}: {e}"));
            assert!(parsed.pkey.unwrap().public_eq(&key));
            assert_eq!(parsed.cert.unwrap().to_der().unwrap(), cert.0);
            assert_eq!(parsed.ca.unwrap().len(), 1);
            assert!(openssl::pkcs12::Pkcs12::from_der(&der.0)
                .unwrap()
                .parse2("wrong password")
                .is_err());
        }
    }
}

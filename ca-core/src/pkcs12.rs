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

    use crate::derw::{push_uint, tlv};
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
        let key_id = sha1(certificate_der);
        let attributes = bag_attributes(friendly_name, &key_id);

        // The certificates, encrypted: leaf (named) then the CA.
        let mut certs = Vec::with_capacity(certificate_der.len() + ca_der.len() + 256);
        cert_bag(&mut certs, certificate_der, Some(&attributes));
        cert_bag(&mut certs, ca_der, None);
        let mut cert_contents = Vec::with_capacity(certs.len() + 4);
        tlv(&mut cert_contents, 0x30, &certs);
        let (algorithm, encrypted) = pbes2_encrypt(password, iterations, &cert_contents)?;
        let mut encrypted_content_info = Vec::with_capacity(encrypted.len() + 128);
        tlv(&mut encrypted_content_info, 0x06, OID_DATA);
        encrypted_content_info.extend_from_slice(&algorithm);
        tlv(&mut encrypted_content_info, 0x80, &encrypted);
        let mut encrypted_data = vec![0x02, 0x01, 0x00];
        tlv(&mut encrypted_data, 0x30, &encrypted_content_info);
        let mut encrypted_data_seq = Vec::with_capacity(encrypted_data.len() + 4);
        tlv(&mut encrypted_data_seq, 0x30, &encrypted_data);
        let mut first = Vec::with_capacity(encrypted_data_seq.len() + 16);
        tlv(&mut first, 0x06, OID_ENCRYPTED_DATA);
        tlv(&mut first, 0xa0, &encrypted_data_seq);

        // The key, as a pkcs8ShroudedKeyBag inside plain data.
        let pkcs8 = Zeroizing::new(key.private_key_to_pkcs8()?);
        let (algorithm, encrypted) = pbes2_encrypt(password, iterations, &pkcs8)?;
        let mut epki_body = algorithm;
        tlv(&mut epki_body, 0x04, &encrypted);
        let mut epki = Vec::with_capacity(epki_body.len() + 4);
        tlv(&mut epki, 0x30, &epki_body);
        let mut key_bags = Vec::with_capacity(epki.len() + attributes.len() + 32);
        safe_bag(
            &mut key_bags,
            OID_SHROUDED_KEY_BAG,
            &epki,
            Some(&attributes),
        );
        let mut key_contents = Vec::with_capacity(key_bags.len() + 4);
        tlv(&mut key_contents, 0x30, &key_bags);
        let mut second = Vec::with_capacity(key_contents.len() + 32);
        tlv(&mut second, 0x06, OID_DATA);
        content_octets(&mut second, &key_contents);

        let mut safes = Vec::with_capacity(first.len() + second.len() + 16);
        tlv(&mut safes, 0x30, &first);
        tlv(&mut safes, 0x30, &second);
        let mut authenticated_safe = Vec::with_capacity(safes.len() + 4);
        tlv(&mut authenticated_safe, 0x30, &safes);

        // MAC over the AuthenticatedSafe, keyed by the PKCS#12 KDF (RFC 7292 App. B).
        let mac_salt = random::<SALT_LEN>()?;
        let mac_key = pkcs12_mac_key(password, &mac_salt, iterations);
        let mac = Hmac::new(&mac_key[..]).mac(&authenticated_safe);
        let mut digest_algorithm = Vec::with_capacity(16);
        tlv(&mut digest_algorithm, 0x06, OID_SHA256);
        digest_algorithm.extend_from_slice(NULL);
        let mut digest_info = Vec::with_capacity(64);
        tlv(&mut digest_info, 0x30, &digest_algorithm);
        tlv(&mut digest_info, 0x04, &mac);
        let mut mac_data = Vec::with_capacity(96);
        tlv(&mut mac_data, 0x30, &digest_info);
        tlv(&mut mac_data, 0x04, &mac_salt);
        push_uint(&mut mac_data, &iterations.to_be_bytes());

        let mut pfx = vec![0x02, 0x01, 0x03];
        let mut auth_safe = Vec::with_capacity(authenticated_safe.len() + 32);
        tlv(&mut auth_safe, 0x06, OID_DATA);
        content_octets(&mut auth_safe, &authenticated_safe);
        tlv(&mut pfx, 0x30, &auth_safe);
        tlv(&mut pfx, 0x30, &mac_data);
        let mut out = Zeroizing::new(Vec::with_capacity(pfx.len() + 4));
        tlv(&mut out, 0x30, &pfx);
        Ok(super::Pkcs12Der(out))
    }

    /// `[0] EXPLICIT OCTET STRING`: the content of a `data` ContentInfo.
    fn content_octets(out: &mut Vec<u8>, content: &[u8]) {
        let mut octets = Vec::with_capacity(content.len() + 4);
        tlv(&mut octets, 0x04, content);
        tlv(out, 0xa0, &octets);
    }

    /// `SET OF Attribute` with friendlyName (BMPString) and localKeyId, in DER order.
    fn bag_attributes(friendly_name: &str, key_id: &[u8]) -> Vec<u8> {
        let bmp: Vec<u8> = friendly_name
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let attribute = |oid: &[u8], tag: u8, value: &[u8]| {
            let mut inner = Vec::with_capacity(value.len() + 4);
            tlv(&mut inner, tag, value);
            let mut set = Vec::with_capacity(inner.len() + 4);
            tlv(&mut set, 0x31, &inner);
            let mut body = Vec::with_capacity(set.len() + 16);
            tlv(&mut body, 0x06, oid);
            body.extend_from_slice(&set);
            let mut attribute = Vec::with_capacity(body.len() + 4);
            tlv(&mut attribute, 0x30, &body);
            attribute
        };
        let mut attributes = [
            attribute(OID_FRIENDLY_NAME, 0x1e, &bmp),
            attribute(OID_LOCAL_KEY_ID, 0x04, key_id),
        ];
        attributes.sort();
        let mut set = Vec::with_capacity(bmp.len() + 64);
        tlv(&mut set, 0x31, &attributes.concat());
        set
    }

    fn safe_bag(out: &mut Vec<u8>, bag_id: &[u8], value: &[u8], attributes: Option<&[u8]>) {
        let mut body = Vec::with_capacity(value.len() + 64);
        tlv(&mut body, 0x06, bag_id);
        tlv(&mut body, 0xa0, value);
        if let Some(attributes) = attributes {
            body.extend_from_slice(attributes);
        }
        tlv(out, 0x30, &body);
    }

    fn cert_bag(out: &mut Vec<u8>, certificate_der: &[u8], attributes: Option<&[u8]>) {
        let mut body = Vec::with_capacity(certificate_der.len() + 32);
        tlv(&mut body, 0x06, OID_X509_CERTIFICATE);
        let mut octets = Vec::with_capacity(certificate_der.len() + 4);
        tlv(&mut octets, 0x04, certificate_der);
        tlv(&mut body, 0xa0, &octets);
        let mut bag = Vec::with_capacity(body.len() + 4);
        tlv(&mut bag, 0x30, &body);
        safe_bag(out, OID_CERT_BAG, &bag, attributes);
    }

    /// Encrypts under PBES2 (RFC 8018 §6.2) with a fresh salt and IV; returns
    /// the AlgorithmIdentifier and the ciphertext.
    fn pbes2_encrypt(password: &str, iterations: u32, plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let salt = random::<SALT_LEN>()?;
        let iv = random::<16>()?;
        let key = pbkdf2_sha256(password.as_bytes(), &salt, iterations);
        let encrypted = openssl::symm::encrypt(Cipher::aes_256_cbc(), &key[..], Some(&iv), plain)?;

        let mut prf = Vec::with_capacity(14);
        tlv(&mut prf, 0x06, OID_HMAC_SHA256);
        prf.extend_from_slice(NULL);
        let mut params = Vec::with_capacity(48);
        tlv(&mut params, 0x04, &salt);
        push_uint(&mut params, &iterations.to_be_bytes());
        tlv(&mut params, 0x30, &prf);
        let mut kdf = Vec::with_capacity(64);
        tlv(&mut kdf, 0x06, OID_PBKDF2);
        tlv(&mut kdf, 0x30, &params);
        let mut scheme = Vec::with_capacity(32);
        tlv(&mut scheme, 0x06, OID_AES256_CBC);
        tlv(&mut scheme, 0x04, &iv);
        let mut pbes2_params = Vec::with_capacity(112);
        tlv(&mut pbes2_params, 0x30, &kdf);
        tlv(&mut pbes2_params, 0x30, &scheme);
        let mut body = Vec::with_capacity(128);
        tlv(&mut body, 0x06, OID_PBES2);
        tlv(&mut body, 0x30, &pbes2_params);
        let mut algorithm = Vec::with_capacity(132);
        tlv(&mut algorithm, 0x30, &body);
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

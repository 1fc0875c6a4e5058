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

/// Checks a caller-supplied bundle password against the policy's minimum.
pub(crate) fn check_password(password: &str, settings: &Pkcs12Settings) -> Result<()> {
    let length = password.chars().count();
    let min = settings.min_password_length;
    if length < min || length > 256 {
        return Err(Error::InvalidInput(format!(
            "the bundle password has {length} characters; it must have {min} to 256 (the policy's pkcs12.min_password_length), or leave it out and one is generated"
        )));
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
/// The DER is written here; the primitives are maintained crates: AES from
/// OpenSSL, PBKDF2, HMAC and SHA-256 from RustCrypto (`pbkdf2`, `hmac`,
/// `sha2`, which picks SHA-NI at run time), the PKCS#12 KDF from RustCrypto
/// `pkcs12`. The three key derivations are nearly all of an issuance, and
/// OpenSSL 3's own PKCS#12 path spends ~4× the hashing itself on copying HMAC
/// contexts (with an allocation each) every iteration.
mod modern {
    use openssl::pkey::{PKey, Private};
    use openssl::symm::Cipher;
    use zeroize::Zeroizing;

    use crate::error::Result;
    use crate::hash::sha1;
    use crate::pki::derw::{uint, wrap, wrap_all};

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
        let mac_key = pkcs12_mac_key(password, &mac_salt, iterations)?;
        let mac = hmac_sha256(&mac_key, &authenticated_safe);
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

    /// HMAC-SHA256 (RustCrypto `hmac`).
    fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
        use hmac::Mac as _;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// PBKDF2-HMAC-SHA256 (RFC 8018 §5.2; RustCrypto `pbkdf2`), one 32-byte
    /// block: the AES-256 key.
    pub(super) fn pbkdf2_sha256(
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Zeroizing<[u8; 32]> {
        let mut key = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, &mut key[..]);
        key
    }

    /// The PKCS#12 key derivation (RFC 7292 Appendix B.2; RustCrypto
    /// `pkcs12`) with SHA-256 for the MAC key (ID 3).
    ///
    /// The password goes in as OpenSSL 3 encodes it (`OPENSSL_utf82uni`):
    /// UTF-16 big-endian, characters beyond the BMP as surrogate pairs, and
    /// a two-byte NUL terminator. The crate's own UTF-8 entry point refuses
    /// non-BMP characters (a BMPString cannot hold them), so the encoding is
    /// done here and the crate runs the derivation itself.
    pub(super) fn pkcs12_mac_key(
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut utf16 = Zeroizing::new(Vec::with_capacity(password.len() * 2 + 2));
        utf16.extend(password.encode_utf16().flat_map(u16::to_be_bytes));
        utf16.extend_from_slice(&[0, 0]);
        let rounds = i32::try_from(iterations).map_err(|_| {
            crate::error::Error::Policy(format!("pkcs12.iterations {iterations} is too large"))
        })?;
        Ok(Zeroizing::new(pkcs12::kdf::derive_key::<sha2::Sha256>(
            &utf16,
            salt,
            pkcs12::kdf::Pkcs12KeyType::Mac,
            rounds,
            32,
        )))
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
    }

    fn settings(profile: Pkcs12Profile, iterations: u32) -> Pkcs12Settings {
        let mut settings = crate::policy::Policies::shipped()
            .get("portal-admin")
            .unwrap()
            .pkcs12
            .clone()
            .unwrap();
        settings.profile = profile;
        settings.iterations = iterations;
        settings
    }

    #[test]
    fn caller_passwords_meet_the_policy_minimum() {
        let mut policy = settings(Pkcs12Profile::Modern, 2048);
        assert_eq!(policy.min_password_length, 12, "the shipped default");
        for short in ["", "short", "8chars!!", "elevenchars"] {
            let err = check_password(short, &policy).unwrap_err().to_string();
            assert!(err.contains("must have 12 to 256"), "{err}");
        }
        assert!(check_password("twelve chars", &policy).is_ok());
        // Characters, not bytes: 12 umlauts are 24 bytes and still 12 characters.
        assert!(check_password(&"ü".repeat(11), &policy).is_err());
        assert!(check_password(&"ü".repeat(12), &policy).is_ok());
        policy.min_password_length = 16;
        assert!(check_password("twelve chars", &policy).is_err());
        assert!(check_password("bell\u{7}charsxxxxxxxx", &policy).is_err());
    }

    fn unhex(text: &str) -> Vec<u8> {
        hex::decode(text).unwrap()
    }

    /// RFC 7914 §11 (PBKDF2-HMAC-SHA256 test vectors), first 32 bytes.
    #[test]
    fn pbkdf2_known_answers() {
        assert_eq!(
            modern::pbkdf2_sha256(b"passwd", b"salt", 1).to_vec(),
            unhex("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc")
        );
        assert_eq!(
            modern::pbkdf2_sha256(b"Password", b"NaCl", 80_000).to_vec(),
            unhex("4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56")
        );
    }

    /// The PKCS#12 KDF (RFC 7292 App. B) with SHA-256, MAC key (ID 3): a
    /// vector made with OpenSSL's `PKCS12_key_gen_utf8` (published with the
    /// RustCrypto `pkcs12` crate's tests), and OpenSSL's reading of a
    /// non-BMP password (surrogate pairs), checked through a full bundle in
    /// `modern_bundles_open_with_openssl_for_any_password`.
    #[test]
    fn pkcs12_kdf_known_answers() {
        let key = modern::pkcs12_mac_key("ge@äheim", &[1, 2, 3, 4, 5, 6, 7, 8], 100).unwrap();
        assert_eq!(
            key.to_vec(),
            unhex("136355ed9434516682534f46d63956db5ff06b844702c2c1f3b46321e2524a4d")
        );
    }

    /// The 16-byte values that follow `prefix` (salts and IVs: `04 10 …`).
    fn values_after(der: &[u8], prefix: &[u8]) -> Vec<Vec<u8>> {
        der.windows(prefix.len())
            .enumerate()
            .filter(|(_, w)| *w == prefix)
            .map(|(i, _)| i + prefix.len())
            .filter_map(|at| {
                let rest = &der[at..];
                let start = rest.windows(2).position(|w| w == [0x04, 0x10])?;
                Some(rest[start + 2..start + 18].to_vec())
            })
            .collect()
    }

    #[test]
    fn every_bundle_has_fresh_salts_and_ivs() {
        let key = crate::keys::KeyAlgorithm::EcdsaP256.generate().unwrap();
        let (cert, _) = crate::pki::x509::test_certificate(key.clone(), "CN=Bundle Test");
        let build = || {
            let der = modern::build(&key, &cert.0, &cert.0, 2048, "a (t)", "Abcdefgh2345").unwrap();
            const PBKDF2: &[u8] = &[
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c,
            ];
            const AES: &[u8] = &[
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a,
            ];
            const SHA256: &[u8] = &[
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
            ];
            let mut values = values_after(&der.0, PBKDF2);
            values.extend(values_after(&der.0, AES));
            // The MAC salt follows the MAC digest (after the last SHA-256 OID).
            let mac = values_after(&der.0, SHA256);
            values.push(mac.last().unwrap().clone());
            values
        };
        let (first, second) = (build(), build());
        // Two PBKDF2 salts, two IVs, one MAC salt in each.
        assert_eq!(first.len(), 5, "{first:?}");
        let mut all: Vec<&Vec<u8>> = first.iter().chain(second.iter()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 10, "every salt and IV is drawn afresh");
    }

    /// The policy's iteration count is the one written, and the one OpenSSL
    /// reads back (`openssl pkcs12 -info`), for both profiles.
    #[test]
    fn the_policy_iteration_count_is_written_and_used() {
        let key = crate::keys::KeyAlgorithm::EcdsaP256.generate().unwrap();
        let (cert, _) = crate::pki::x509::test_certificate(key.clone(), "CN=Bundle Test");
        let dir = tempfile::tempdir().unwrap();
        for profile in [Pkcs12Profile::Modern, Pkcs12Profile::Legacy] {
            let bundle = build_pkcs12(
                &key,
                &cert.0,
                &cert.0,
                &settings(profile, 4321),
                "a (t)",
                "Abcdefgh2345",
            )
            .unwrap();
            let path = dir.path().join("b.p12");
            std::fs::write(&path, &bundle.0[..]).unwrap();
            let out = std::process::Command::new("openssl")
                .args([
                    "pkcs12",
                    "-info",
                    "-noout",
                    "-passin",
                    "pass:Abcdefgh2345",
                    "-in",
                ])
                .arg(&path)
                .output()
                .expect("openssl CLI");
            let text = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{profile:?}: {text}");
            assert!(text.contains("Iteration 4321"), "{profile:?}: {text}");
            assert!(!text.contains("Iteration 2048"), "{profile:?}: {text}");
        }
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
        let (cert, _) = crate::pki::x509::test_certificate(key.clone(), "CN=Bundle Test");
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

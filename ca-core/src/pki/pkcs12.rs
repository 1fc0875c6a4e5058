//! PKCS#12 bundles (RFC 7292) for delivery to the admin's device, and their passwords.

use openssl::pkey::{PKey, Private};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::policy::Pkcs12Settings;

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
/// certificate bags, with the matching localKeyId on both. Both profiles are
/// written here ([`writer`]), in the layout of OpenSSL 3's `PKCS12_create`.
pub(crate) fn build_pkcs12(
    key: &PKey<Private>,
    certificate_der: &[u8],
    ca_der: &[u8],
    settings: &Pkcs12Settings,
    friendly_name: &str,
    password: &str,
) -> Result<Pkcs12Der> {
    writer::build(
        key,
        certificate_der,
        ca_der,
        settings.profile,
        settings.iterations,
        friendly_name,
        password,
    )
}

/// Both profiles, laid out as OpenSSL 3's `PKCS12_create` lays them out:
/// a PFX (RFC 7292 §4) whose AuthenticatedSafe holds the certificates as
/// EncryptedData (leaf, then the CA) and the key as a pkcs8ShroudedKeyBag
/// inside plain Data, with a password MAC over the AuthenticatedSafe.
///
/// - modern: PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) for both bags, HMAC-SHA256 MAC;
/// - legacy: pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 App. C) for both bags,
///   HMAC-SHA1 MAC — what Windows before 10 1709 and the macOS Keychain read.
///
/// The DER is written here; the primitives are maintained crates: AES and
/// 3DES from OpenSSL, PBKDF2, HMAC, SHA-1 and SHA-256 from RustCrypto
/// (`pbkdf2`, `hmac`, `sha1`, `sha2`, which pick SHA-NI at run time), the
/// PKCS#12 KDF (RFC 7292 App. B) from RustCrypto `pkcs12`. The key
/// derivations are nearly all of a bundle's cost, and OpenSSL 3's own PKCS#12
/// path spends ~4× the hashing itself on copying digest and HMAC contexts
/// (with an allocation each) every iteration.
pub(crate) mod writer {
    use openssl::pkey::{PKey, Private};
    use openssl::symm::Cipher;
    use zeroize::Zeroizing;

    use crate::error::{Error, Result};
    use crate::hash::sha1;
    use crate::pki::derw::{uint, wrap, wrap_all};
    use crate::policy::Pkcs12Profile;

    // Dotted forms beside each: PKCS#7 (RFC 2315 §14), PKCS#5 (RFC 8018
    // App. C), PKCS#12 (RFC 7292 App. D), NIST and OIW algorithm arcs.
    /// 1.2.840.113549.1.7.1 data
    const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    /// 1.2.840.113549.1.7.6 encryptedData
    const OID_ENCRYPTED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
    /// 1.2.840.113549.1.5.13 PBES2
    const OID_PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
    /// 1.2.840.113549.1.5.12 PBKDF2
    const OID_PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
    /// 1.2.840.113549.2.9 hmacWithSHA256
    const OID_HMAC_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09];
    /// 2.16.840.1.101.3.4.1.42 aes256-CBC
    const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
    /// 2.16.840.1.101.3.4.2.1 sha256
    const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    /// 1.3.14.3.2.26 sha1
    const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
    /// 1.2.840.113549.1.12.1.3 pbeWithSHAAnd3-KeyTripleDES-CBC
    const OID_PBE_SHA1_3DES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03];
    /// 1.2.840.113549.1.12.10.1.2 pkcs8ShroudedKeyBag
    const OID_SHROUDED_KEY_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
    ];
    /// 1.2.840.113549.1.12.10.1.3 certBag
    const OID_CERT_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03,
    ];
    /// 1.2.840.113549.1.9.22.1 x509Certificate
    const OID_X509_CERTIFICATE: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
    /// 1.2.840.113549.1.9.20 friendlyName
    const OID_FRIENDLY_NAME: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x14];
    /// 1.2.840.113549.1.9.21 localKeyId
    const OID_LOCAL_KEY_ID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x15];
    const NULL: &[u8] = &[0x05, 0x00];

    /// Salt length for every derivation (128 bits, as NIST SP 800-132 asks).
    /// OpenSSL's `PKCS12_create` draws 8 bytes for the legacy PBE and MAC
    /// salts; RFC 7292 puts no bound on either (an OCTET STRING), Windows and
    /// Java write 20-byte salts themselves, and the readers in the tests
    /// (OpenSSL, NSS, Python `cryptography`, Java) take 16.
    const SALT_LEN: usize = 16;

    pub(crate) fn build(
        key: &PKey<Private>,
        certificate_der: &[u8],
        ca_der: &[u8],
        profile: Pkcs12Profile,
        iterations: u32,
        friendly_name: &str,
        password: &str,
    ) -> Result<super::Pkcs12Der> {
        // Checked once, before any work: the PKCS#12 KDF counts rounds in an i32.
        if i32::try_from(iterations).is_err() {
            return Err(Error::Policy(format!(
                "pkcs12.iterations {iterations} is too large"
            )));
        }
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
        let (algorithm, encrypted) = encrypt(profile, password, iterations, &certs)?;
        let encrypted_content = wrap_all(
            0x30,
            &[&wrap(0x06, OID_DATA), &algorithm, &wrap(0x80, &encrypted)],
        );
        let encrypted_data = wrap_all(0x30, &[&[0x02, 0x01, 0x00], &encrypted_content]);
        let certificates = content_info(OID_ENCRYPTED_DATA, &encrypted_data);

        // The key, as a pkcs8ShroudedKeyBag inside plain data.
        let pkcs8 = Zeroizing::new(key.private_key_to_pkcs8()?);
        let (algorithm, encrypted) = encrypt(profile, password, iterations, &pkcs8)?;
        let shrouded = wrap_all(0x30, &[&algorithm, &wrap(0x04, &encrypted)]);
        let key_bags = wrap(
            0x30,
            &safe_bag(OID_SHROUDED_KEY_BAG, &shrouded, Some(&attributes)),
        );
        let keys = content_info(OID_DATA, &wrap(0x04, &key_bags));

        let authenticated_safe = wrap_all(0x30, &[&certificates, &keys]);

        // MAC over the AuthenticatedSafe, keyed by the PKCS#12 KDF (RFC 7292
        // App. B.2, ID 3) with the MAC's own digest (RFC 7292 §4: MacData).
        let mac_salt = random::<SALT_LEN>()?;
        let (digest_oid, mac) = match profile {
            Pkcs12Profile::Modern => {
                let mac_key = pkcs12_kdf::<sha2::Sha256>(
                    password,
                    &mac_salt,
                    pkcs12::kdf::Pkcs12KeyType::Mac,
                    iterations,
                    32,
                )?;
                (OID_SHA256, hmac_sha256(&mac_key, &authenticated_safe))
            }
            Pkcs12Profile::Legacy => {
                let mac_key = pkcs12_kdf::<sha1::Sha1>(
                    password,
                    &mac_salt,
                    pkcs12::kdf::Pkcs12KeyType::Mac,
                    iterations,
                    20,
                )?;
                (OID_SHA1, hmac_sha1(&mac_key, &authenticated_safe))
            }
        };
        let digest_algorithm = wrap_all(0x30, &[&wrap(0x06, digest_oid), NULL]);
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

    /// Encrypts a bag's content under the profile's scheme with a fresh salt
    /// (and, for PBES2, IV); returns the AlgorithmIdentifier and the ciphertext.
    fn encrypt(
        profile: Pkcs12Profile,
        password: &str,
        iterations: u32,
        plain: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        match profile {
            Pkcs12Profile::Modern => pbes2_encrypt(password, iterations, plain),
            Pkcs12Profile::Legacy => pbe_sha1_3des_encrypt(password, iterations, plain),
        }
    }

    /// Encrypts under PBES2 (RFC 8018 §6.2) with a fresh salt and IV.
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

    /// Encrypts under pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 App. C):
    /// the 24-byte 3DES key (ID 1) and the 8-byte IV (ID 2) both come from
    /// the PKCS#12 KDF with SHA-1 over one fresh salt; the parameters are
    /// `pkcs-12PbeParams ::= SEQUENCE { salt OCTET STRING, iterations INTEGER }`.
    /// CBC with PKCS#5 padding (RFC 8018 §6.1.1 step 4), as OpenSSL pads.
    fn pbe_sha1_3des_encrypt(
        password: &str,
        iterations: u32,
        plain: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let salt = random::<SALT_LEN>()?;
        let (key, iv) = pbe_sha1_3des_key_iv(password, &salt, iterations)?;
        let encrypted =
            openssl::symm::encrypt(Cipher::des_ede3_cbc(), &key[..], Some(&iv[..]), plain)?;
        let params = wrap_all(
            0x30,
            &[&wrap(0x04, &salt), &uint(&iterations.to_be_bytes())],
        );
        let algorithm = wrap_all(0x30, &[&wrap(0x06, OID_PBE_SHA1_3DES), &params]);
        Ok((algorithm, encrypted))
    }

    /// A derived secret (a key, an IV), wiped when dropped.
    pub(super) type Secret = Zeroizing<Vec<u8>>;

    /// The 3DES key and IV of pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 App. C).
    pub(super) fn pbe_sha1_3des_key_iv(
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<(Secret, Secret)> {
        use pkcs12::kdf::Pkcs12KeyType;
        let key =
            pkcs12_kdf::<sha1::Sha1>(password, salt, Pkcs12KeyType::EncryptionKey, iterations, 24)?;
        let iv = pkcs12_kdf::<sha1::Sha1>(password, salt, Pkcs12KeyType::Iv, iterations, 8)?;
        Ok((key, iv))
    }

    fn random<const N: usize>() -> Result<[u8; N]> {
        let mut bytes = [0u8; N];
        openssl::rand::rand_bytes(&mut bytes)?;
        Ok(bytes)
    }

    /// HMAC-SHA256 (RFC 2104; RustCrypto `hmac`).
    pub(super) fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
        use hmac::Mac as _;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }

    /// HMAC-SHA1 (RFC 2104; RustCrypto `hmac` + `sha1`).
    pub(super) fn hmac_sha1(key: &[u8], message: &[u8]) -> Vec<u8> {
        use hmac::Mac as _;
        let mut mac =
            hmac::Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
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
    /// `pkcs12`) with digest `D`: the MAC key (ID 3), and for the legacy
    /// PBE the 3DES key (ID 1) and IV (ID 2).
    ///
    /// The password goes in as OpenSSL 3 encodes it (`OPENSSL_utf82uni`):
    /// UTF-16 big-endian, characters beyond the BMP as surrogate pairs, and
    /// a two-byte NUL terminator. The crate's own UTF-8 entry point refuses
    /// non-BMP characters (a BMPString cannot hold them), so the encoding is
    /// done here and the crate runs the derivation itself.
    pub(super) fn pkcs12_kdf<D>(
        password: &str,
        salt: &[u8],
        id: pkcs12::kdf::Pkcs12KeyType,
        iterations: u32,
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>>
    where
        D: sha2::Digest + sha2::digest::FixedOutputReset + sha2::digest::core_api::BlockSizeUser,
    {
        let mut utf16 = Zeroizing::new(Vec::with_capacity(password.len() * 2 + 2));
        utf16.extend(password.encode_utf16().flat_map(u16::to_be_bytes));
        utf16.extend_from_slice(&[0, 0]);
        let rounds = i32::try_from(iterations)
            .map_err(|_| Error::Policy(format!("pkcs12.iterations {iterations} is too large")))?;
        Ok(Zeroizing::new(pkcs12::kdf::derive_key::<D>(
            &utf16, salt, id, rounds, len,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Pkcs12Profile;
    use openssl::hash::MessageDigest;
    use pkcs12::kdf::Pkcs12KeyType;

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
            writer::pbkdf2_sha256(b"passwd", b"salt", 1).to_vec(),
            unhex("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc")
        );
        assert_eq!(
            writer::pbkdf2_sha256(b"Password", b"NaCl", 80_000).to_vec(),
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
        let key = writer::pkcs12_kdf::<sha2::Sha256>(
            "ge@äheim",
            &[1, 2, 3, 4, 5, 6, 7, 8],
            Pkcs12KeyType::Mac,
            100,
            32,
        )
        .unwrap();
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
            let der = writer::build(
                &key,
                &cert.0,
                &cert.0,
                Pkcs12Profile::Modern,
                2048,
                "a (t)",
                "Abcdefgh2345",
            )
            .unwrap();
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
                *writer::pbkdf2_sha256(password, salt, iterations as u32),
                expected
            );
        }
    }

    #[test]
    fn bundles_of_both_profiles_open_with_openssl_for_any_password() {
        let key = crate::keys::KeyAlgorithm::EcdsaP256.generate().unwrap();
        let (cert, _) = crate::pki::x509::test_certificate(key.clone(), "CN=Bundle Test");
        let long = "x".repeat(100);
        for profile in [Pkcs12Profile::Modern, Pkcs12Profile::Legacy] {
            for password in ["Abcdefgh2345", "pässwörd-ünïcode-€-😀", long.as_str()] {
                let der = writer::build(
                    &key,
                    &cert.0,
                    &cert.0,
                    profile,
                    2048,
                    "alice (acme)",
                    password,
                )
                .unwrap();
                let parsed = openssl::pkcs12::Pkcs12::from_der(&der.0)
                    .unwrap()
                    .parse2(password)
                    .unwrap_or_else(|e| panic!("{profile:?} {password}: {e}"));
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

    /// The PKCS#12 KDF (RFC 7292 App. B) with SHA-1: the published vectors
    /// for the 3DES key (ID 1), its IV (ID 2) and the MAC key (ID 3), at 1
    /// and 1,000 iterations (the test set that OpenSSL and Bouncy Castle
    /// both carry, passwords "smeg" and "queeg").
    #[test]
    fn pkcs12_kdf_sha1_known_answers() {
        let kdf = |password: &str, salt: &str, id, iterations, len| {
            writer::pkcs12_kdf::<sha1::Sha1>(password, &unhex(salt), id, iterations, len)
                .unwrap()
                .to_vec()
        };
        use Pkcs12KeyType::{EncryptionKey, Iv, Mac};
        assert_eq!(
            kdf("smeg", "0a58cf64530d823f", EncryptionKey, 1, 24),
            unhex("8aaae6297b6cb04642ab5b077851284eb7128f1a2a7fbca3")
        );
        assert_eq!(
            kdf("smeg", "0a58cf64530d823f", Iv, 1, 8),
            unhex("79993dfe048d3b76")
        );
        assert_eq!(
            kdf("smeg", "3d83c0e4546ac140", Mac, 1, 20),
            unhex("8d967d88f6caa9d714800ab3d48051d63f73a312")
        );
        assert_eq!(
            kdf("queeg", "1682c0fc5b3f7ec5", EncryptionKey, 1000, 24),
            unhex("483dd6e919d7de2e8e648ba8f862f3fbfbdc2bcb2c02957f")
        );
        assert_eq!(
            kdf("queeg", "1682c0fc5b3f7ec5", Iv, 1000, 8),
            unhex("9d461d1b00355c50")
        );
        assert_eq!(
            kdf("queeg", "263216fcc2fab31c", Mac, 1000, 20),
            unhex("5ec4c7a80df652294c3925b6489a7ab857c83476")
        );
    }

    /// RFC 2202 §3 test cases 1 and 2 (HMAC-SHA1).
    #[test]
    fn hmac_sha1_known_answers() {
        assert_eq!(
            writer::hmac_sha1(&[0x0b; 20], b"Hi There"),
            unhex("b617318655057264e28bc0b6fb378c8ef146be00")
        );
        assert_eq!(
            writer::hmac_sha1(b"Jefe", b"what do ya want for nothing?"),
            unhex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        );
    }

    /// A legacy bundle made by OpenSSL's own `PKCS12_create` (the path this
    /// writer replaced) opens with this writer's derivations: its MAC checks
    /// under our SHA-1 MAC key, and its key bag decrypts under our 3DES key
    /// and IV — for an ASCII and a non-ASCII password (OpenSSL's UTF-16 reading).
    #[test]
    fn legacy_derivations_open_a_bundle_made_by_openssl() {
        use der::Decode as _;
        let key = crate::keys::KeyAlgorithm::EcdsaP256.generate().unwrap();
        let (cert, _) = crate::pki::x509::test_certificate(key.clone(), "CN=Bundle Test");
        for password in ["Abcdefgh2345", "pässwörd-ünïcode-€-😀"] {
            let pfx = openssl_legacy_bundle(&key, &cert.0, password, 2048);
            let pfx = pkcs12::pfx::Pfx::from_der(&pfx).unwrap();
            let safe = pfx
                .auth_safe
                .content
                .decode_as::<der::asn1::OctetString>()
                .unwrap();
            let mac_data = pfx.mac_data.unwrap();
            assert_eq!(mac_data.iterations, 2048);
            let mac_key = writer::pkcs12_kdf::<sha1::Sha1>(
                password,
                mac_data.mac_salt.as_bytes(),
                Pkcs12KeyType::Mac,
                2048,
                20,
            )
            .unwrap();
            assert_eq!(
                writer::hmac_sha1(&mac_key, safe.as_bytes()),
                mac_data.mac.digest.as_bytes(),
                "{password}: the MAC key matches OpenSSL's"
            );

            // AuthenticatedSafe: [encrypted certificates, data with the key bag].
            let contents: pkcs12::authenticated_safe::AuthenticatedSafe =
                Vec::from_der(safe.as_bytes()).unwrap();
            let data = contents[1]
                .content
                .decode_as::<der::asn1::OctetString>()
                .unwrap();
            let bags: Vec<pkcs12::safe_bag::SafeBag> = Vec::from_der(data.as_bytes()).unwrap();
            let explicit = der::asn1::AnyRef::from_der(&bags[0].bag_value).unwrap();
            let shrouded =
                pkcs12::pbe_params::EncryptedPrivateKeyInfo::from_der(explicit.value()).unwrap();
            let params = shrouded
                .encryption_algorithm
                .parameters
                .unwrap()
                .decode_as::<pkcs12::pbe_params::Pkcs12PbeParams>()
                .unwrap();
            let (des_key, iv) =
                writer::pbe_sha1_3des_key_iv(password, params.salt.as_bytes(), 2048).unwrap();
            let pkcs8 = openssl::symm::decrypt(
                openssl::symm::Cipher::des_ede3_cbc(),
                &des_key,
                Some(&iv),
                shrouded.encrypted_data.as_bytes(),
            )
            .unwrap_or_else(|e| panic!("{password}: {e}"));
            let decrypted = PKey::private_key_from_pkcs8(&pkcs8).unwrap();
            assert!(decrypted.public_eq(&key), "{password}");
        }
    }

    /// What OpenSSL writes for the legacy profile: `PKCS12_create` with
    /// PBE-SHA1-3DES for both bags and a SHA-1 MAC.
    fn openssl_legacy_bundle(
        key: &PKey<Private>,
        certificate_der: &[u8],
        password: &str,
        iterations: u32,
    ) -> Vec<u8> {
        use openssl::nid::Nid;
        let cert = openssl::x509::X509::from_der(certificate_der).unwrap();
        let mut chain = openssl::stack::Stack::new().unwrap();
        chain.push(cert.clone()).unwrap();
        let mut builder = openssl::pkcs12::Pkcs12::builder();
        builder
            .name("alice (acme)")
            .pkey(key)
            .cert(&cert)
            .ca(chain)
            .key_iter(iterations)
            .mac_iter(iterations)
            .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
            .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
            .mac_md(MessageDigest::sha1());
        builder.build2(password).unwrap().to_der().unwrap()
    }

    /// The DER tree of a bundle as (depth, tag, OID or small INTEGER), with
    /// lengths and the random values (salts, IVs, ciphertexts, MACs) left
    /// out; the OCTET STRING right inside a `[0]` (a ContentInfo's data, a
    /// certificate bag's value) is opened, as its content is DER.
    fn layout(der: &[u8]) -> Vec<String> {
        fn walk(mut der: &[u8], depth: usize, open: bool, out: &mut Vec<String>) {
            while !der.is_empty() {
                let tag = der[0];
                let (len, header) = match der[1] {
                    n if n < 0x80 => (n as usize, 2),
                    n => {
                        let count = (n & 0x7f) as usize;
                        let len = der[2..2 + count]
                            .iter()
                            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
                        (len, 2 + count)
                    }
                };
                let content = &der[header..header + len];
                let detail = match tag {
                    0x06 => format!(" {}", hex::encode(content)),
                    0x02 if len <= 4 => format!(" {}", hex::encode(content)),
                    _ => String::new(),
                };
                out.push(format!("{depth} {tag:02x}{detail}"));
                if tag & 0x20 != 0 {
                    walk(content, depth + 1, tag == 0xa0, out);
                } else if tag == 0x04 && open {
                    walk(content, depth + 1, false, out);
                }
                der = &der[header + len..];
            }
        }
        let mut out = Vec::new();
        walk(der, 0, false, &mut out);
        out
    }

    /// Same layout as OpenSSL's `PKCS12_create` with PBE-SHA1-3DES and a
    /// SHA-1 MAC: the same tree of SEQUENCEs, OIDs, versions and iteration
    /// counts, element for element (only salt lengths, which are ours to
    /// choose, and the random values differ). The openssl CLI then reads
    /// both the same way (`pkcs12 -info`).
    #[test]
    fn legacy_layout_matches_openssl_pkcs12_create() {
        let key = crate::keys::KeyAlgorithm::EcdsaP256.generate().unwrap();
        let (cert, _) = crate::pki::x509::test_certificate(key.clone(), "CN=Bundle Test");
        let ours = writer::build(
            &key,
            &cert.0,
            &cert.0,
            Pkcs12Profile::Legacy,
            2048,
            "alice (acme)",
            "Abcdefgh2345",
        )
        .unwrap();
        let theirs = openssl_legacy_bundle(&key, &cert.0, "Abcdefgh2345", 2048);
        let (ours_layout, theirs_layout) = (layout(&ours.0), layout(&theirs));
        assert!(ours_layout.len() > 40, "{ours_layout:?}");
        assert_eq!(ours_layout, theirs_layout);

        let dir = tempfile::tempdir().unwrap();
        let info = |der: &[u8]| {
            let path = dir.path().join("b.p12");
            std::fs::write(&path, der).unwrap();
            let out = std::process::Command::new("openssl")
                .args([
                    "pkcs12",
                    "-info",
                    "-nokeys",
                    "-passin",
                    "pass:Abcdefgh2345",
                    "-in",
                ])
                .arg(&path)
                .output()
                .expect("openssl CLI");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The algorithm lines, without the salt lengths.
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .map(|l| l.split(", salt length").next().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        let lines = info(&ours.0);
        assert!(lines.iter().any(|l| l.contains("MAC: sha1")), "{lines:?}");
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048"))
                .count(),
            2,
            "{lines:?}"
        );
        assert_eq!(lines, info(&theirs));
    }
}

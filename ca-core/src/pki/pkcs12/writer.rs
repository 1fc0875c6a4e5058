//! Both profiles, laid out as OpenSSL 3's `PKCS12_create` lays them out:
//! a PFX (RFC 7292 §4) whose AuthenticatedSafe holds the certificates as
//! EncryptedData (leaf, then the CA) and the key as a pkcs8ShroudedKeyBag
//! inside plain Data, with a password MAC over the AuthenticatedSafe.
//!
//! - modern: PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) for both bags, HMAC-SHA256 MAC;
//! - legacy: pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 App. C) for both bags,
//!   HMAC-SHA1 MAC — what Windows before 10 1709 and the macOS Keychain read.
//!
//! The DER is written here; the primitives are maintained crates: AES and
//! 3DES from OpenSSL, PBKDF2, HMAC, SHA-1 and SHA-256 from RustCrypto
//! (`pbkdf2`, `hmac`, `sha1`, `sha2`, which pick SHA-NI at run time), the
//! PKCS#12 KDF (RFC 7292 App. B) from RustCrypto `pkcs12`. The key
//! derivations are nearly all of a bundle's cost, and OpenSSL 3's own PKCS#12
//! path spends ~4× the hashing itself on copying digest and HMAC contexts
//! (with an allocation each) every iteration.

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
const OID_X509_CERTIFICATE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
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
    let encrypted = openssl::symm::encrypt(Cipher::des_ede3_cbc(), &key[..], Some(&iv[..]), plain)?;
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
pub(super) fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
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

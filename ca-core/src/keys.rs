//! Key types, key generation, and the encrypted key file format.
//!
//! Keys at rest are PKCS#8 DER encrypted with AES-256-GCM under a key derived
//! from the passphrase with scrypt (N=2^15, r=8, p=1). The file is JSON so its
//! parameters are visible and can be raised later without breaking old files.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Rsa;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The key types this CA generates, signs with and accepts in CSRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256, signing with SHA-256.
    EcdsaP256,
    /// ECDSA on NIST P-384, signing with SHA-384.
    EcdsaP384,
    /// RSA 2048-bit, PKCS#1 v1.5 with SHA-256.
    Rsa2048,
    /// RSA 3072-bit.
    Rsa3072,
    /// RSA 4096-bit.
    Rsa4096,
}

impl KeyAlgorithm {
    /// Every algorithm, in the order shown to users.
    pub const ALL: [KeyAlgorithm; 5] = [
        Self::EcdsaP256,
        Self::EcdsaP384,
        Self::Rsa2048,
        Self::Rsa3072,
        Self::Rsa4096,
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa3072 => "rsa-3072",
            Self::Rsa4096 => "rsa-4096",
        }
    }

    /// Parses a configuration name.
    pub fn parse(text: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == text)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown key type \"{}\": use one of {}",
                    text.escape_debug(),
                    Self::names()
                ))
            })
    }

    /// All names, comma separated, for messages.
    pub fn names() -> String {
        Self::ALL.map(|a| a.name()).join(", ")
    }

    /// Generates a fresh private key from the OS CSPRNG.
    pub fn generate(self) -> Result<PKey<Private>> {
        Ok(match self {
            Self::EcdsaP256 | Self::EcdsaP384 => {
                let group = EcGroup::from_curve_name(self.curve().expect("EC"))?;
                PKey::from_ec_key(EcKey::generate(&group)?)?
            }
            Self::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?)?,
            Self::Rsa3072 => PKey::from_rsa(Rsa::generate(3072)?)?,
            Self::Rsa4096 => PKey::from_rsa(Rsa::generate(4096)?)?,
        })
    }

    fn curve(self) -> Option<Nid> {
        match self {
            Self::EcdsaP256 => Some(Nid::X9_62_PRIME256V1),
            Self::EcdsaP384 => Some(Nid::SECP384R1),
            _ => None,
        }
    }

    /// Recognises the algorithm of an existing key, if it is one we support.
    pub fn of_key<T: openssl::pkey::HasPublic>(key: &PKey<T>) -> Result<Self> {
        let unsupported = |what: String| {
            Error::InvalidInput(format!(
                "unsupported key {what}: use one of {}",
                Self::names()
            ))
        };
        if let Ok(ec) = key.ec_key() {
            return match ec.group().curve_name() {
                Some(Nid::X9_62_PRIME256V1) => Ok(Self::EcdsaP256),
                Some(Nid::SECP384R1) => Ok(Self::EcdsaP384),
                other => Err(unsupported(format!("curve {other:?}"))),
            };
        }
        if let Ok(rsa) = key.rsa() {
            // The modulus' exact bit length: a 2047-bit modulus still fills
            // 256 bytes, so `size() * 8` would pass it off as RSA-2048.
            let algorithm = match rsa.n().num_bits() {
                2048 => Self::Rsa2048,
                3072 => Self::Rsa3072,
                4096 => Self::Rsa4096,
                bits => {
                    return Err(unsupported(format!(
                        "RSA-{bits} (RSA keys must be exactly 2048, 3072 or 4096 bits)"
                    )))
                }
            };
            // Small exponents invite broken padding attacks; every mainstream
            // generator uses F4 (CA/Browser Forum BR §6.1.6 wants odd ≥ 65537).
            if rsa.e().to_vec() != [0x01, 0x00, 0x01] {
                return Err(Error::InvalidInput(format!(
                    "unsupported RSA public exponent {}: it must be 65537",
                    rsa.e()
                )));
            }
            return Ok(algorithm);
        }
        Err(unsupported(format!("type {:?}", key.id())))
    }

    /// The digest used when this key signs.
    pub(crate) fn digest(self) -> openssl::hash::MessageDigest {
        match self {
            Self::EcdsaP384 => openssl::hash::MessageDigest::sha384(),
            _ => openssl::hash::MessageDigest::sha256(),
        }
    }

    pub(crate) fn rcgen_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            _ => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A public key in the shapes certificate building needs.
#[derive(Debug, Clone)]
pub struct PublicKey {
    algorithm: KeyAlgorithm,
    /// The full SubjectPublicKeyInfo DER.
    spki: Vec<u8>,
    /// The subjectPublicKey BIT STRING contents.
    bits: Vec<u8>,
}

impl PublicKey {
    /// From any OpenSSL key (private or public).
    pub fn from_pkey<T: openssl::pkey::HasPublic>(key: &PKey<T>) -> Result<Self> {
        let algorithm = KeyAlgorithm::of_key(key)?;
        if let Ok(ec) = key.ec_key() {
            let mut ctx = openssl::bn::BigNumContext::new()?;
            let point = ec.public_key().to_bytes(
                ec.group(),
                openssl::ec::PointConversionForm::UNCOMPRESSED,
                &mut ctx,
            )?;
            return Self::from_ec_point(algorithm, point);
        }
        Ok(PublicKey {
            algorithm,
            spki: key.public_key_to_der()?,
            bits: key.rsa()?.public_key_to_der_pkcs1()?,
        })
    }

    /// From an uncompressed EC point already known to lie on the curve of
    /// `algorithm`. The SubjectPublicKeyInfo (RFC 5480, named curve) is
    /// written here: OpenSSL 3's generic key encoder costs more than the
    /// signature a certificate needs.
    pub(crate) fn from_ec_point(algorithm: KeyAlgorithm, point: Vec<u8>) -> Result<Self> {
        // SEQUENCE { SEQUENCE { id-ecPublicKey, namedCurve }, BIT STRING (0 unused bits)
        const P256_SPKI_PREFIX: &[u8] = &[
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        const P384_SPKI_PREFIX: &[u8] = &[
            0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
        ];
        let (prefix, point_len) = match algorithm {
            KeyAlgorithm::EcdsaP256 => (P256_SPKI_PREFIX, 65),
            KeyAlgorithm::EcdsaP384 => (P384_SPKI_PREFIX, 97),
            other => {
                return Err(Error::Crypto(format!("{other} is not an EC algorithm")));
            }
        };
        if point.len() != point_len || point[0] != 0x04 {
            return Err(Error::InvalidInput(format!(
                "the {algorithm} public key is not an uncompressed point"
            )));
        }
        let mut spki = Vec::with_capacity(prefix.len() + point_len);
        spki.extend_from_slice(prefix);
        spki.extend_from_slice(&point);
        Ok(PublicKey {
            algorithm,
            spki,
            bits: point,
        })
    }

    /// From SubjectPublicKeyInfo DER.
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        let key: PKey<Public> = PKey::public_key_from_der(der).map_err(|_| {
            Error::InvalidInput("public key is not a valid SubjectPublicKeyInfo".into())
        })?;
        Self::from_pkey(&key)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits.
    pub fn key_identifier(&self) -> Vec<u8> {
        crate::hash::sha1(&self.bits).to_vec()
    }
}

impl rcgen::PublicKeyData for PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm.rcgen_algorithm()
    }
}

/// Minimum passphrase length for a new CA key.
pub const MIN_PASSPHRASE_LEN: usize = 12;

/// What an encrypted key is for. It is bound into the AES-GCM associated
/// data, so a key file of one purpose cannot be passed off as another (the
/// OCSP responder's key stored in place of the CA key, or back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyPurpose {
    /// The CA's certificate and CRL signing key (`ca.key`).
    CaSigning,
    /// The delegated OCSP responder's key (kept in the store).
    OcspResponder,
    /// An offline root's key (`root.key` in the root directory): bound into
    /// the associated data, so it can never be passed off as an issuing key.
    RootSigning,
}

impl KeyPurpose {
    fn label(self) -> &'static str {
        match self {
            KeyPurpose::CaSigning => "ca-signing",
            KeyPurpose::OcspResponder => "ocsp-responder",
            KeyPurpose::RootSigning => "root-signing",
        }
    }

    /// The associated data of the current format: format name and purpose.
    fn aad(self) -> Vec<u8> {
        [KEY_FORMAT.as_bytes(), b"\0", self.label().as_bytes()].concat()
    }
}

#[derive(Serialize, Deserialize)]
struct EncryptedKeyFile {
    format: String,
    /// The purpose (also bound into the AAD); absent in v1 files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    purpose: Option<String>,
    kdf: String,
    log_n: u8,
    r: u32,
    p: u32,
    salt: String,
    cipher: String,
    nonce: String,
    ciphertext: String,
    tag: String,
}

/// The current format: AAD = format name, NUL, purpose.
const KEY_FORMAT: &str = "ca-core-encrypted-key-v2";
/// Files written before purposes were bound (AAD = the format name alone).
/// Still opened, so existing data directories keep working; every key
/// written now is v2. A v2 file cannot be relabelled v1: the AAD differs,
/// so its tag would not verify.
const KEY_FORMAT_V1: &str = "ca-core-encrypted-key-v1";
/// AES-GCM nonce and tag lengths: exactly these, nothing shorter. OpenSSL
/// verifies whatever tag length it is handed, so a truncated tag would
/// otherwise weaken (a 1-byte tag: 1 in 256) the integrity check.
const GCM_NONCE_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;
const SCRYPT_LOG_N: u8 = 15;

fn derive_key(
    passphrase: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>> {
    if !(10..=20).contains(&log_n) || r == 0 || r > 32 || p == 0 || p > 16 {
        return Err(Error::Key(
            "key file has out-of-range scrypt parameters".into(),
        ));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    openssl::pkcs5::scrypt(
        passphrase,
        salt,
        1u64 << log_n,
        r.into(),
        p.into(),
        256 << 20,
        &mut key[..],
    )?;
    Ok(key)
}

/// The CA passphrase, and the last key scrypt derived from it. Keys
/// encrypted after the CA key is unlocked reuse its salt, so the OCSP
/// responder key opens without a second scrypt run (~100 ms of CPU and
/// 32 MB each; a server unlocks both at start). Both are wiped on drop.
pub(crate) struct Passphrase {
    secret: Zeroizing<Vec<u8>>,
    derived: std::sync::Mutex<Option<Derived>>,
}

struct Derived {
    salt: Vec<u8>,
    log_n: u8,
    r: u32,
    p: u32,
    key: Zeroizing<[u8; 32]>,
}

impl Passphrase {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Passphrase {
            secret: Zeroizing::new(secret.to_vec()),
            derived: Default::default(),
        }
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Option<Derived>> {
        self.derived.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The wrapping key for `salt` and the scrypt parameters.
    fn derive(&self, salt: &[u8], log_n: u8, r: u32, p: u32) -> Result<Zeroizing<[u8; 32]>> {
        if let Some(d) = self.memo().as_ref() {
            if d.salt == salt && (d.log_n, d.r, d.p) == (log_n, r, p) {
                return Ok(d.key.clone());
            }
        }
        let key = derive_key(&self.secret, salt, log_n, r, p)?;
        *self.memo() = Some(Derived {
            salt: salt.to_vec(),
            log_n,
            r,
            p,
            key: key.clone(),
        });
        Ok(key)
    }

    /// Salt and parameters for a new key file: the last derived, else fresh.
    fn salt_for_new_key(&self) -> Result<(Vec<u8>, u8, u32, u32)> {
        if let Some(d) = self.memo().as_ref() {
            return Ok((d.salt.clone(), d.log_n, d.r, d.p));
        }
        let mut salt = [0u8; 16];
        openssl::rand::rand_bytes(&mut salt)?;
        Ok((salt.to_vec(), SCRYPT_LOG_N, 8, 1))
    }
}

/// Encrypts a private key into the JSON text of the encrypted key format.
pub(crate) fn encrypt_key(
    key: &PKey<Private>,
    passphrase: &Passphrase,
    purpose: KeyPurpose,
) -> Result<Zeroizing<String>> {
    let pkcs8 = Zeroizing::new(key.private_key_to_pkcs8()?);
    let (salt, log_n, r, p) = passphrase.salt_for_new_key()?;
    let mut nonce = [0u8; GCM_NONCE_LEN];
    openssl::rand::rand_bytes(&mut nonce)?;
    let wrapping = passphrase.derive(&salt, log_n, r, p)?;
    let mut tag = [0u8; GCM_TAG_LEN];
    let ciphertext = openssl::symm::encrypt_aead(
        openssl::symm::Cipher::aes_256_gcm(),
        &wrapping[..],
        Some(&nonce),
        &purpose.aad(),
        &pkcs8,
        &mut tag,
    )?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let file = EncryptedKeyFile {
        format: KEY_FORMAT.into(),
        purpose: Some(purpose.label().into()),
        kdf: "scrypt".into(),
        log_n,
        r,
        p,
        salt: b64(&salt),
        cipher: "aes-256-gcm".into(),
        nonce: b64(&nonce),
        ciphertext: b64(&ciphertext),
        tag: b64(&tag),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(Zeroizing::new(text))
}

/// Decrypts text written by [`encrypt_key`]; `what` names the key in messages.
pub(crate) fn decrypt_key(
    text: &str,
    passphrase: &Passphrase,
    purpose: KeyPurpose,
    what: &str,
) -> Result<PKey<Private>> {
    let corrupt = |why: &str| Error::Key(format!("{what} is damaged: {why}"));
    let file: EncryptedKeyFile = serde_json::from_str(text).map_err(|e| corrupt(&e.to_string()))?;
    if file.kdf != "scrypt" || file.cipher != "aes-256-gcm" {
        return Err(corrupt("unknown format"));
    }
    let aad = match file.format.as_str() {
        KEY_FORMAT => {
            if file.purpose.as_deref() != Some(purpose.label()) {
                return Err(Error::Key(format!(
                    "{what} is a {} key, not a {} key: the file was swapped or mislabelled",
                    file.purpose.as_deref().unwrap_or("unlabelled"),
                    purpose.label()
                )));
            }
            purpose.aad()
        }
        KEY_FORMAT_V1 => KEY_FORMAT_V1.as_bytes().to_vec(),
        _ => return Err(corrupt("unknown format")),
    };
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| corrupt("bad base64"))
    };
    let (salt, nonce, ciphertext, tag) = (
        b64(&file.salt)?,
        b64(&file.nonce)?,
        b64(&file.ciphertext)?,
        b64(&file.tag)?,
    );
    if nonce.len() != GCM_NONCE_LEN {
        return Err(corrupt(&format!(
            "the AES-GCM nonce is {} bytes, not {GCM_NONCE_LEN}",
            nonce.len()
        )));
    }
    if tag.len() != GCM_TAG_LEN {
        return Err(corrupt(&format!(
            "the AES-GCM tag is {} bytes, not {GCM_TAG_LEN} (a truncated tag is never accepted)",
            tag.len()
        )));
    }
    let wrapping = passphrase.derive(&salt, file.log_n, file.r, file.p)?;
    let pkcs8 = openssl::symm::decrypt_aead(
        openssl::symm::Cipher::aes_256_gcm(),
        &wrapping[..],
        Some(&nonce),
        &aad,
        &ciphertext,
        &tag,
    )
    .map(Zeroizing::new)
    .map_err(|_| {
        Error::Key(format!(
            "wrong passphrase for {what} (set CA_KEY_PASSPHRASE or --passphrase-file to the passphrase given at init)"
        ))
    })?;
    Ok(PKey::private_key_from_pkcs8(&pkcs8)?)
}

/// Encrypts a private key for storage at `path` (written with mode 0600).
pub(crate) fn write_encrypted_key(
    path: &Path,
    key: &PKey<Private>,
    passphrase: &Passphrase,
    purpose: KeyPurpose,
) -> Result<()> {
    let text = encrypt_key(key, passphrase, purpose)?;
    crate::fsutil::write_private_file(path, text.as_bytes())
}

/// Decrypts a key written by [`write_encrypted_key`].
pub(crate) fn read_encrypted_key(
    path: &Path,
    passphrase: &Passphrase,
    purpose: KeyPurpose,
) -> Result<PKey<Private>> {
    let text = std::fs::read_to_string(path).map_err(Error::io("cannot read key file", path))?;
    decrypt_key(&text, passphrase, purpose, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_key_round_trips_and_rejects_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.enc");
        let key = KeyAlgorithm::EcdsaP256.generate().unwrap();
        let passphrase = || Passphrase::new(b"correct horse battery");
        let ca = KeyPurpose::CaSigning;
        write_encrypted_key(&path, &key, &passphrase(), ca).unwrap();
        let back = read_encrypted_key(&path, &passphrase(), ca).unwrap();
        assert!(back.public_eq(&key));
        let err = read_encrypted_key(&path, &Passphrase::new(b"wrong"), ca).unwrap_err();
        assert!(err.to_string().contains("wrong passphrase"), "{err}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("BEGIN"), "no plaintext key material");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn keys_encrypted_after_an_unlock_share_its_salt_and_open_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.key");
        let ca_key = KeyAlgorithm::EcdsaP256.generate().unwrap();
        let (ca, ocsp) = (KeyPurpose::CaSigning, KeyPurpose::OcspResponder);
        write_encrypted_key(
            &path,
            &ca_key,
            &Passphrase::new(b"correct horse battery"),
            ca,
        )
        .unwrap();

        let unlocked = Passphrase::new(b"correct horse battery");
        read_encrypted_key(&path, &unlocked, ca).unwrap();
        let second = KeyAlgorithm::EcdsaP256.generate().unwrap();
        let text = encrypt_key(&second, &unlocked, ocsp).unwrap();
        let salt = |t: &str| serde_json::from_str::<EncryptedKeyFile>(t).unwrap().salt;
        assert_eq!(salt(&text), salt(&std::fs::read_to_string(&path).unwrap()));
        // Opens with the passphrase alone, in a fresh process, too.
        let fresh = Passphrase::new(b"correct horse battery");
        assert!(decrypt_key(&text, &fresh, ocsp, "k")
            .unwrap()
            .public_eq(&second));
        assert!(decrypt_key(&text, &Passphrase::new(b"wrong passphrase"), ocsp, "k").is_err());
    }

    /// Rewrites one JSON field of an encrypted key's text.
    fn with_field(text: &str, field: &str, value: serde_json::Value) -> String {
        let mut file: serde_json::Value = serde_json::from_str(text).unwrap();
        file[field] = value;
        file.to_string()
    }

    fn b64(bytes: &[u8]) -> serde_json::Value {
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into()
    }

    #[test]
    fn truncated_tags_and_odd_nonces_are_refused() {
        let passphrase = Passphrase::new(b"correct horse battery");
        let key = KeyAlgorithm::EcdsaP256.generate().unwrap();
        let text = encrypt_key(&key, &passphrase, KeyPurpose::CaSigning).unwrap();
        let file: EncryptedKeyFile = serde_json::from_str(&text).unwrap();
        let tag = base64::engine::general_purpose::STANDARD
            .decode(&file.tag)
            .unwrap();
        assert_eq!(tag.len(), 16);
        // Every prefix of the real tag would verify in OpenSSL; none may open the key.
        for length in [0, 1, 4, 8, 12, 15] {
            let truncated = with_field(&text, "tag", b64(&tag[..length]));
            let err = decrypt_key(&truncated, &passphrase, KeyPurpose::CaSigning, "ca.key")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("tag is") && err.contains("not 16"),
                "{length}: {err}"
            );
        }
        for length in [8, 16] {
            let odd = with_field(&text, "nonce", b64(&vec![0u8; length]));
            let err = decrypt_key(&odd, &passphrase, KeyPurpose::CaSigning, "ca.key")
                .unwrap_err()
                .to_string();
            assert!(err.contains("nonce is") && err.contains("not 12"), "{err}");
        }
        assert!(decrypt_key(&text, &passphrase, KeyPurpose::CaSigning, "ca.key").is_ok());
    }

    #[test]
    fn a_key_of_one_purpose_never_opens_as_another() {
        let passphrase = Passphrase::new(b"correct horse battery");
        let key = KeyAlgorithm::EcdsaP256.generate().unwrap();
        let text = encrypt_key(&key, &passphrase, KeyPurpose::OcspResponder).unwrap();
        let err = decrypt_key(&text, &passphrase, KeyPurpose::CaSigning, "ca.key")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ocsp-responder key, not a ca-signing key"),
            "{err}"
        );
        // Relabelled: the purpose is in the AAD, so the tag no longer verifies.
        let relabelled = with_field(&text, "purpose", "ca-signing".into());
        assert!(decrypt_key(&relabelled, &passphrase, KeyPurpose::CaSigning, "ca.key").is_err());
        // Downgraded to v1 (AAD = the v1 format name): refused as well.
        let downgraded = with_field(&text, "format", KEY_FORMAT_V1.into());
        assert!(decrypt_key(&downgraded, &passphrase, KeyPurpose::CaSigning, "ca.key").is_err());
    }

    #[test]
    fn v1_key_files_still_open() {
        // Written as v1 did: AAD = the format name, no purpose field.
        let passphrase = Passphrase::new(b"correct horse battery");
        let key = KeyAlgorithm::EcdsaP256.generate().unwrap();
        let pkcs8 = key.private_key_to_pkcs8().unwrap();
        let (salt, log_n, r, p) = passphrase.salt_for_new_key().unwrap();
        let wrapping = passphrase.derive(&salt, log_n, r, p).unwrap();
        let nonce = [7u8; 12];
        let mut tag = [0u8; 16];
        let ciphertext = openssl::symm::encrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            &wrapping[..],
            Some(&nonce),
            KEY_FORMAT_V1.as_bytes(),
            &pkcs8,
            &mut tag,
        )
        .unwrap();
        let text = serde_json::json!({
            "format": KEY_FORMAT_V1, "kdf": "scrypt", "log_n": log_n, "r": r, "p": p,
            "salt": b64(&salt), "cipher": "aes-256-gcm", "nonce": b64(&nonce),
            "ciphertext": b64(&ciphertext), "tag": b64(&tag),
        })
        .to_string();
        let back = decrypt_key(&text, &passphrase, KeyPurpose::CaSigning, "ca.key").unwrap();
        assert!(back.public_eq(&key));
    }

    #[test]
    fn recognises_key_types() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa2048,
        ] {
            let key = alg.generate().unwrap();
            assert_eq!(PublicKey::from_pkey(&key).unwrap().algorithm(), alg);
        }
    }
}

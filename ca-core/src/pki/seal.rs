//! Sealing a bundle for pickup (DESIGN §3): the PKCS#12 bundle and its
//! password are encrypted with AES-256-GCM under a key that scrypt derives
//! from a random one-time code. The code is never stored; what is stored
//! (salt, nonce, ciphertext with its tag, and a hash that tells a right code
//! from a wrong one) opens nothing without it.
//!
//! ```text
//!   code (60 random bits) ─► scrypt(N=2^13, r=8, p=1, salt) ─► 64 bytes
//!                                                   ├─ [0..32)  AES-256-GCM key
//!                                                   └─ [32..64) verifier ─► SHA-256 ─► code_hash
//!   AAD = "ca-pickup-v1" NUL pickup id NUL serial
//! ```
//!
//! scrypt's cost (~8 MiB and a few tens of milliseconds a guess) and the
//! store's lock-out after [`MAX_FAILURES`] wrong codes bound online guessing
//! to 5 in 2^60; a stolen database costs an offline guesser 2^59 scrypt runs
//! on average per pickup.

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Wrong codes a pickup takes before it locks (a resend is then needed).
pub const MAX_FAILURES: u32 = 5;

/// Crockford's base32 alphabet: no I, L, O or U, so a code read aloud or
/// typed from a phone call cannot be misread (`normalize` maps I/L to 1 and
/// O to 0 anyway).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// 12 symbols of 5 bits: 60 bits.
const CODE_SYMBOLS: usize = 12;
const SCRYPT_N: u64 = 1 << 13;
const SCRYPT_R: u64 = 8;
const SCRYPT_P: u64 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const AAD_LABEL: &[u8] = b"ca-pickup-v1";

/// A one-time pickup code, `XXXX-XXXX-XXXX`; wiped on drop.
pub struct PickupCode(Zeroizing<String>);

impl PickupCode {
    /// A fresh random code.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 8]);
        openssl::rand::rand_bytes(&mut bytes[..])?;
        let mut bits = u64::from_be_bytes(*bytes);
        let mut text = Zeroizing::new(String::with_capacity(CODE_SYMBOLS + 2));
        for i in 0..CODE_SYMBOLS {
            if i > 0 && i % 4 == 0 {
                text.push('-');
            }
            text.push(ALPHABET[(bits & 31) as usize] as char);
            bits >>= 5;
        }
        Ok(PickupCode(text))
    }

    /// The code as shown to the operator.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical symbols of what someone typed: case, spaces and dashes
    /// ignored, I/L read as 1 and O as 0. `None` unless it is 12 symbols of
    /// the alphabet.
    fn normalize(typed: &str) -> Option<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::with_capacity(CODE_SYMBOLS));
        for c in typed.chars() {
            let c = match c.to_ascii_uppercase() {
                ' ' | '-' | '\t' => continue,
                'I' | 'L' => '1',
                'O' => '0',
                c => c,
            };
            if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || out.len() == CODE_SYMBOLS {
                return None;
            }
            out.push(c as u8);
        }
        (out.len() == CODE_SYMBOLS).then_some(out)
    }
}

/// What the store keeps of a sealed bundle.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// scrypt salt (random per pickup).
    pub salt: Vec<u8>,
    /// AES-GCM nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the 16-byte tag.
    pub sealed: Vec<u8>,
    /// SHA-256 of the verifier half of the scrypt output.
    pub code_hash: Vec<u8>,
}

/// A bundle and its password, opened with the right code; wiped on drop.
pub struct Opened {
    /// The PKCS#12 DER.
    pub bundle: Zeroizing<Vec<u8>>,
    /// Its password.
    pub password: Zeroizing<String>,
}

/// Why a code did not open a pickup.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Not a code of this form at all (nothing counted).
    Malformed,
    /// A well-formed code that is not this pickup's (counted).
    WrongCode,
}

fn aad(id: &str, serial: &str) -> Vec<u8> {
    [AAD_LABEL, b"\0", id.as_bytes(), b"\0", serial.as_bytes()].concat()
}

/// (AES key, verifier hash) for `symbols` and `salt`.
fn derive(symbols: &[u8], salt: &[u8]) -> Result<(Zeroizing<[u8; 32]>, [u8; 32])> {
    let mut out = Zeroizing::new([0u8; 64]);
    openssl::pkcs5::scrypt(
        symbols,
        salt,
        SCRYPT_N,
        SCRYPT_R,
        SCRYPT_P,
        32 << 20,
        &mut out[..],
    )?;
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&out[..32]);
    Ok((key, crate::hash::sha256(&out[32..])))
}

/// Seals `bundle` and `password` for pickup `id` of certificate `serial` under `code`.
pub(crate) fn seal(
    code: &PickupCode,
    id: &str,
    serial: &str,
    bundle: &[u8],
    password: &str,
) -> Result<Sealed> {
    let symbols = PickupCode::normalize(code.as_str())
        .ok_or_else(|| Error::Crypto("generated pickup code is malformed".into()))?;
    let mut salt = vec![0u8; SALT_LEN];
    openssl::rand::rand_bytes(&mut salt)?;
    let mut nonce = vec![0u8; NONCE_LEN];
    openssl::rand::rand_bytes(&mut nonce)?;
    let (key, code_hash) = derive(&symbols, &salt)?;
    let mut plain = Zeroizing::new(Vec::with_capacity(4 + password.len() + bundle.len()));
    plain.extend_from_slice(&(password.len() as u32).to_be_bytes());
    plain.extend_from_slice(password.as_bytes());
    plain.extend_from_slice(bundle);
    let mut tag = [0u8; TAG_LEN];
    let mut sealed = openssl::symm::encrypt_aead(
        openssl::symm::Cipher::aes_256_gcm(),
        &key[..],
        Some(&nonce),
        &aad(id, serial),
        &plain,
        &mut tag,
    )?;
    sealed.extend_from_slice(&tag);
    Ok(Sealed {
        salt,
        nonce,
        sealed,
        code_hash: code_hash.to_vec(),
    })
}

/// Checks `typed` against the stored hash (no decryption yet): a code of the
/// wrong form is [`OpenError::Malformed`], a wrong one [`OpenError::WrongCode`].
/// On success returns the AES key to [`open`] with.
pub(crate) fn check_code(
    typed: &str,
    salt: &[u8],
    code_hash: &[u8],
) -> Result<std::result::Result<Zeroizing<[u8; 32]>, OpenError>> {
    let Some(symbols) = PickupCode::normalize(typed) else {
        return Ok(Err(OpenError::Malformed));
    };
    let (key, hash) = derive(&symbols, salt)?;
    if code_hash.len() != hash.len() || !openssl::memcmp::eq(&hash, code_hash) {
        return Ok(Err(OpenError::WrongCode));
    }
    Ok(Ok(key))
}

/// Opens a sealed bundle with the key [`check_code`] returned.
pub(crate) fn open(
    key: &[u8; 32],
    id: &str,
    serial: &str,
    nonce: &[u8],
    sealed: &[u8],
) -> Result<Opened> {
    let damaged = || Error::Store(format!("pickup {id}: the sealed bundle is damaged"));
    // OpenSSL checks whatever tag length it is handed: insist on 16 bytes.
    if nonce.len() != NONCE_LEN || sealed.len() < TAG_LEN + 4 {
        return Err(damaged());
    }
    let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    let plain = openssl::symm::decrypt_aead(
        openssl::symm::Cipher::aes_256_gcm(),
        key,
        Some(nonce),
        &aad(id, serial),
        ciphertext,
        tag,
    )
    .map(Zeroizing::new)
    .map_err(|_| damaged())?;
    let len = u32::from_be_bytes([plain[0], plain[1], plain[2], plain[3]]) as usize;
    if plain.len() < 4 + len {
        return Err(damaged());
    }
    let password = std::str::from_utf8(&plain[4..4 + len]).map_err(|_| damaged())?;
    Ok(Opened {
        password: Zeroizing::new(password.to_owned()),
        bundle: Zeroizing::new(plain[4 + len..].to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_grouped_and_read_forgivingly() {
        let code = PickupCode::generate().unwrap();
        let text = code.as_str();
        assert_eq!(text.len(), 14);
        assert_eq!(&text[4..5], "-");
        assert!(PickupCode::normalize(&text.to_lowercase().replace('-', " ")).is_some());
        assert!(PickupCode::normalize("ABCD-EFGH-JKMO").is_some());
        assert!(PickupCode::normalize("ABCD-EFGH-JKM").is_none());
        assert!(PickupCode::normalize("ABCD-EFGH-JKMNP").is_none());
        assert!(PickupCode::normalize("ABCD-EFGH-JKMU").is_none());
        assert_ne!(
            PickupCode::generate().unwrap().as_str(),
            PickupCode::generate().unwrap().as_str()
        );
    }

    #[test]
    fn only_the_right_code_opens_and_the_binding_holds() {
        let code = PickupCode::generate().unwrap();
        let sealed = seal(&code, "p1", "0a", b"bundle-der", "pass word").unwrap();
        assert!(!sealed
            .sealed
            .windows(b"bundle-der".len())
            .any(|w| w == b"bundle-der"));
        let key = check_code(
            &code.as_str().to_lowercase(),
            &sealed.salt,
            &sealed.code_hash,
        )
        .unwrap()
        .unwrap();
        let opened = open(&key, "p1", "0a", &sealed.nonce, &sealed.sealed).unwrap();
        assert_eq!(&opened.bundle[..], b"bundle-der");
        assert_eq!(&opened.password[..], "pass word");
        // Another pickup's id or serial in the AAD: refused.
        assert!(open(&key, "p2", "0a", &sealed.nonce, &sealed.sealed).is_err());
        assert!(open(&key, "p1", "0b", &sealed.nonce, &sealed.sealed).is_err());
        // A truncated tag: refused.
        let short = &sealed.sealed[..sealed.sealed.len() - 8];
        assert!(open(&key, "p1", "0a", &sealed.nonce, short).is_err());
        let other = PickupCode::generate().unwrap();
        assert_eq!(
            check_code(other.as_str(), &sealed.salt, &sealed.code_hash)
                .unwrap()
                .err(),
            Some(OpenError::WrongCode)
        );
        assert_eq!(
            check_code("not a code", &sealed.salt, &sealed.code_hash)
                .unwrap()
                .err(),
            Some(OpenError::Malformed)
        );
    }
}

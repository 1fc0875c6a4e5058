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

pub(crate) mod writer;

#[cfg(test)]
mod tests;

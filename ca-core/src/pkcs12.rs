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
/// certificate bags; OpenSSL adds the matching localKeyId to both.
pub(crate) fn build_pkcs12(
    key: &PKey<Private>,
    certificate_der: &[u8],
    ca_der: &[u8],
    settings: &Pkcs12Settings,
    friendly_name: &str,
    password: &str,
) -> Result<Pkcs12Der> {
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
    match settings.profile {
        Pkcs12Profile::Modern => builder
            .key_algorithm(Nid::AES_256_CBC)
            .cert_algorithm(Nid::AES_256_CBC)
            .mac_md(MessageDigest::sha256()),
        Pkcs12Profile::Legacy => builder
            .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
            .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
            .mac_md(MessageDigest::sha1()),
    };
    let p12 = builder.build2(password)?;
    Ok(Pkcs12Der(Zeroizing::new(p12.to_der()?)))
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
}

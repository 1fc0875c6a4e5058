//! One-shot digests through OpenSSL's streaming hashers.
//!
//! OpenSSL 3's one-shot `SHA256()` looks its algorithm up in the provider
//! table on every call (`EVP_Q_digest`), which costs as much as hashing a
//! small message; `SHA256_Init`/`Update`/`Final` do not. These sit on the
//! per-request paths (signing, CSR checks, OCSP validators, token hashes).

use openssl::sha::{Sha1, Sha256, Sha384};

/// SHA-1 (CertID hashes and HTTP validators only; never for signatures).
pub(crate) fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(data);
    h.finish()
}

/// SHA-256.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

/// SHA-384.
pub(crate) fn sha384(data: &[u8]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn digests_match_the_one_shot_functions() {
        let data = b"abc";
        assert_eq!(super::sha1(data), openssl::sha::sha1(data));
        assert_eq!(super::sha256(data), openssl::sha::sha256(data));
        assert_eq!(super::sha384(data), openssl::sha::sha384(data));
    }
}

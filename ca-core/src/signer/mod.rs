//! The `Signer` seam: "sign these bytes with the CA key".
//!
//! Certificate, CRL and OCSP building only see this trait, so where the key
//! lives — an encrypted file ([`FileSigner`]) or a PKCS#11 token
//! ([`Pkcs11Signer`], in `pkcs11/`) — is configuration.

pub(crate) mod pkcs11;

use std::cell::RefCell;
use std::path::Path;

use crate::hash::{sha256, sha384};
use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::pkey::{PKey, Private};

use crate::error::{Error, Result};
use crate::keys::{read_encrypted_key, KeyAlgorithm, KeyPurpose, Passphrase, PublicKey};

/// A private key that can sign, wherever it is kept.
pub trait Signer: Send + Sync {
    /// The public half.
    fn public_key(&self) -> &PublicKey;

    /// Signs `message`, returning the signature as X.509 carries it
    /// (DER `ECDSA-Sig-Value` for ECDSA, PKCS#1 v1.5 for RSA), hashing with the
    /// digest of [`KeyAlgorithm`] (SHA-384 for P-384, SHA-256 otherwise).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;

    /// True when signing waits on a device (a PKCS#11 token): callers on an
    /// async task must move the call to a blocking thread. An in-memory key
    /// signs in microseconds and is called inline.
    fn blocks(&self) -> bool {
        false
    }
}

pub use pkcs11::Pkcs11Signer;

/// A key held in process memory, loaded from an encrypted key file.
/// OpenSSL clears the key's memory when it is freed.
pub struct FileSigner {
    key: PKey<Private>,
    /// The same key as an `EC_KEY` for ECDSA keys: signing through it skips
    /// OpenSSL 3's per-call provider look-up (`EVP_DigestSignInit`), which
    /// costs a third of a P-256 signature.
    ec: Option<EcKey<Private>>,
    public: PublicKey,
}

impl FileSigner {
    /// Wraps an in-memory key.
    pub fn new(key: PKey<Private>) -> Result<Self> {
        let public = PublicKey::from_pkey(&key)?;
        let ec = match public.algorithm() {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => Some(key.ec_key()?),
            _ => None,
        };
        Ok(FileSigner { key, ec, public })
    }

    /// Decrypts and loads the key file at `path`.
    pub fn open(path: &Path, passphrase: &[u8]) -> Result<Self> {
        Self::unlock(path, &Passphrase::new(passphrase))
    }

    /// Like [`FileSigner::open`], remembering the derived key in `passphrase`.
    pub(crate) fn unlock(path: &Path, passphrase: &Passphrase) -> Result<Self> {
        Self::new(read_encrypted_key(path, passphrase, KeyPurpose::CaSigning)?)
    }
}

impl Signer for FileSigner {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        if let Some(ec) = &self.ec {
            let signature = match self.public.algorithm() {
                KeyAlgorithm::EcdsaP384 => EcdsaSig::sign(&sha384(message), ec)?,
                _ => EcdsaSig::sign(&sha256(message), ec)?,
            };
            return Ok(signature.to_der()?);
        }
        let digest = self.public.algorithm().digest();
        let mut signer = openssl::sign::Signer::new(digest, &self.key)?;
        if matches!(
            self.public.algorithm(),
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096
        ) {
            signer.set_rsa_padding(openssl::rsa::Padding::PKCS1)?;
        }
        signer.update(message)?;
        Ok(signer.sign_to_vec()?)
    }
}

/// Presents a [`Signer`] to rcgen.
pub(crate) struct RcgenSigner<'a>(pub(crate) &'a dyn Signer);

impl rcgen::PublicKeyData for RcgenSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        rcgen::PublicKeyData::der_bytes(self.0.public_key())
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        rcgen::PublicKeyData::algorithm(self.0.public_key())
    }
}

thread_local! {
    /// The error behind the last `RemoteKeyError` rcgen reported on this
    /// thread: rcgen's error type cannot carry ours (an unavailable token
    /// must stay `SignerUnavailable`, not become a crypto error).
    static SIGNER_ERROR: RefCell<Option<Error>> = const { RefCell::new(None) };
}

impl rcgen::SigningKey for RcgenSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|e| {
            SIGNER_ERROR.with(|slot| *slot.borrow_mut() = Some(e));
            rcgen::Error::RemoteKeyError
        })
    }
}

/// An rcgen result with the signer's own error restored.
pub(crate) fn rcgen_result<T>(result: Result<T, rcgen::Error>) -> Result<T> {
    let stashed = SIGNER_ERROR.with(|slot| slot.borrow_mut().take());
    match (result, stashed) {
        (Ok(value), _) => Ok(value),
        (Err(rcgen::Error::RemoteKeyError), Some(error)) => Err(error),
        (Err(e), _) => Err(e.into()),
    }
}

/// Checks that `signer` holds the private key of `certificate_spki`; refuses a mismatched pair at load time.
pub(crate) fn check_matches(signer: &dyn Signer, certificate_spki: &[u8]) -> Result<()> {
    if signer.public_key().spki_der() != certificate_spki {
        return Err(Error::Key(
            "the CA key does not match the CA certificate in the data directory".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_under_the_public_key_for_every_algorithm() {
        let message = b"tbsCertificate bytes";
        for algorithm in KeyAlgorithm::ALL {
            let signer = FileSigner::new(algorithm.generate().unwrap()).unwrap();
            let signature = signer.sign(message).unwrap();
            let public = PKey::public_key_from_der(signer.public_key().spki_der()).unwrap();
            let mut verifier = openssl::sign::Verifier::new(algorithm.digest(), &public).unwrap();
            verifier.update(message).unwrap();
            assert!(verifier.verify(&signature).unwrap(), "{algorithm:?}");
            let mut verifier = openssl::sign::Verifier::new(algorithm.digest(), &public).unwrap();
            verifier.update(b"other bytes").unwrap();
            assert!(
                !verifier.verify(&signature).unwrap_or(false),
                "{algorithm:?}"
            );
        }
    }
}

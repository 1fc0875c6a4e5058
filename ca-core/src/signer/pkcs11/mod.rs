//! Keys in a PKCS#11 token (an HSM in production, SoftHSM2 for trials and
//! tests) behind the [`Signer`] seam. The private keys are generated inside
//! the token (sensitive, never extractable) and never leave it.
//!
//! ```text
//!  Pkcs11Signer (CA key) ─┐
//!  Pkcs11Signer (OCSP)  ──┴─► Token ── pool of sessions (Mutex<Vec<Session>> + Condvar),
//!                              │        logged in once per (re-)open with the PIN kept in memory
//!                              └─ device gone? ─► down (reason for /readyz), re-opened at most
//!                                 once a second; a refused PIN is never retried (no lock-out)
//! ```
//!
//! Every call here waits on the token: callers run it on blocking threads,
//! never on async workers ([`Signer::blocks`] says so).

use std::path::Path;
use std::sync::{Arc, Mutex};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use serde::{Deserialize, Serialize};

use super::Signer;
use crate::error::{Error, Result};
use crate::hash::{sha256, sha384};
use crate::keys::{KeyAlgorithm, PublicKey};

mod token;

use token::Failure;
pub(crate) use token::Token;

/// Which key in the token: what the data directory records (never the PIN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenKey {
    format: String,
    /// The token it was generated in (for messages when another is configured).
    pub(crate) token_label: String,
    /// CKA_LABEL of the private and public key objects.
    pub(crate) key_label: String,
    /// CKA_ID shared by both objects, hex.
    pub(crate) key_id: String,
}

const TOKEN_KEY_FORMAT: &str = "ca-core-token-key-v1";

impl TokenKey {
    /// Parses a record written by [`TokenKey::to_json`]; `None` if `text` is
    /// something else (an encrypted key file).
    pub(crate) fn from_json(text: &str) -> Option<TokenKey> {
        serde_json::from_str::<TokenKey>(text)
            .ok()
            .filter(|k| k.format == TOKEN_KEY_FORMAT)
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    fn id(&self) -> Result<Vec<u8>> {
        hex::decode(&self.key_id)
            .map_err(|_| Error::Key(format!("the key record has a bad key id {}", self.key_id)))
    }

    fn describe(&self) -> String {
        format!(
            "key \"{}\" (CKA_ID {})",
            self.key_label.escape_debug(),
            self.key_id
        )
    }
}

/// A private key in a token.
pub struct Pkcs11Signer {
    token: Arc<Token>,
    key: TokenKey,
    public: PublicKey,
    /// The private key's handle and the token generation it belongs to.
    handle: Mutex<Option<(u64, ObjectHandle)>>,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11Signer({:?}, {})", self.token, self.key.describe())
    }
}

impl Pkcs11Signer {
    /// The key `key` in `token`, whose public half is `public` (taken from
    /// its certificate). Checked by signing a challenge and verifying it
    /// under `public`: a wrong token or key is refused here, naming both.
    pub(crate) fn find(
        token: &Arc<Token>,
        key: TokenKey,
        public: PublicKey,
        certificate: &str,
    ) -> Result<Self> {
        let id = key.id()?;
        let found = token.with_session(|session, _| {
            Ok(session.find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(key.key_label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
            ])?)
        })?;
        if found.is_empty() {
            let elsewhere = if key.token_label != token.label() {
                format!(
                    " (it was generated in token \"{}\")",
                    key.token_label.escape_debug()
                )
            } else {
                String::new()
            };
            return Err(Error::Key(format!(
                "{} for {certificate} is not in token \"{}\"{elsewhere}: wrong token, or the key was deleted",
                key.describe(),
                token.label().escape_debug()
            )));
        }
        let signer = Pkcs11Signer {
            token: Arc::clone(token),
            key,
            public,
            handle: Mutex::new(None),
        };
        let challenge = b"ca-core: does this token key match its certificate?";
        // A key of another type cannot even produce a signature of the
        // certificate's shape: that is the same mismatch.
        let signature = match signer.sign(challenge) {
            Ok(signature) => signature,
            Err(Error::SignerUnavailable(reason)) => return Err(Error::SignerUnavailable(reason)),
            Err(_) => Vec::new(),
        };
        let public = openssl::pkey::PKey::public_key_from_der(signer.public.spki_der())?;
        let mut verifier =
            openssl::sign::Verifier::new(signer.public.algorithm().digest(), &public)?;
        verifier.update(challenge)?;
        if !verifier.verify(&signature).unwrap_or(false) {
            return Err(Error::Key(format!(
                "{} in token \"{}\" does not match {certificate}: wrong token or key",
                signer.key.describe(),
                signer.token.label().escape_debug()
            )));
        }
        Ok(signer)
    }

    /// Which key this is (recorded in the data directory or the store).
    pub(crate) fn key(&self) -> &TokenKey {
        &self.key
    }

    fn private_handle(
        &self,
        session: &Session,
        generation: u64,
    ) -> std::result::Result<ObjectHandle, Failure> {
        let mut cached = self.handle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, handle)) = *cached {
            if g == generation {
                return Ok(handle);
            }
        }
        let id = self.key.id().map_err(|e| Failure {
            gone: false,
            message: e.to_string(),
        })?;
        let found = session.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(match self.public.algorithm() {
                KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => KeyType::EC,
                _ => KeyType::RSA,
            }),
            Attribute::Label(self.key.key_label.as_bytes().to_vec()),
            Attribute::Id(id),
        ])?;
        let handle = found.into_iter().next().ok_or_else(|| Failure {
            // The token answered but no longer holds the key (another token
            // in its place, or the key deleted): unavailable until it is back.
            gone: true,
            message: format!("{} is not in the token", self.key.describe()),
        })?;
        *cached = Some((generation, handle));
        Ok(handle)
    }
}

impl Signer for Pkcs11Signer {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let algorithm = self.public.algorithm();
        // ECDSA in the token signs a digest we compute (CKM_ECDSA); RSA hashes
        // inside (CKM_SHA256_RSA_PKCS, PKCS#1 v1.5 as X.509 expects).
        let (mechanism, data, field_len) = match algorithm {
            KeyAlgorithm::EcdsaP256 => (Mechanism::Ecdsa, sha256(message).to_vec(), 32),
            KeyAlgorithm::EcdsaP384 => (Mechanism::Ecdsa, sha384(message).to_vec(), 48),
            _ => (Mechanism::Sha256RsaPkcs, message.to_vec(), 0),
        };
        let raw = self.token.with_session(|session, generation| {
            let handle = self.private_handle(session, generation)?;
            Ok(session.sign(&mechanism, handle, &data)?)
        })?;
        if field_len == 0 {
            return Ok(raw);
        }
        ecdsa_der(&raw, field_len)
    }

    fn blocks(&self) -> bool {
        true
    }
}

/// PKCS#11 ECDSA signatures are r ‖ s, each the field's length (PKCS#11
/// §2.3.1); X.509 carries `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`
/// (RFC 5480 §2.2 / RFC 3279 §2.2.3).
fn ecdsa_der(raw: &[u8], field_len: usize) -> Result<Vec<u8>> {
    if raw.len() != 2 * field_len {
        return Err(Error::Crypto(format!(
            "the token returned a {}-byte ECDSA signature, not {}",
            raw.len(),
            2 * field_len
        )));
    }
    let (r, s) = raw.split_at(field_len);
    let signature =
        EcdsaSig::from_private_components(BigNum::from_slice(r)?, BigNum::from_slice(s)?)?;
    Ok(signature.to_der()?)
}

/// What a token-backed CA keeps in its data directory instead of a key file.
pub(crate) fn write_key_record(path: &Path, key: &TokenKey) -> Result<()> {
    crate::fsutil::write_file(path, key.to_json().as_bytes())
}

/// Reads a record written by [`write_key_record`].
pub(crate) fn read_key_record(path: &Path) -> Result<TokenKey> {
    let text = std::fs::read_to_string(path).map_err(Error::io("cannot read", path))?;
    TokenKey::from_json(&text)
        .ok_or_else(|| Error::Key(format!("{} is not a token key record", path.display())))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use cryptoki::object::AttributeType;

    use super::token::REOPEN_INTERVAL;
    use super::*;
    use crate::config::TokenConfig;

    #[test]
    fn raw_ecdsa_signatures_become_der_with_minimal_integers() {
        // r with a high bit (needs a 0x00 pad), s with leading zeros (trimmed).
        let mut raw = vec![0x80; 32];
        raw.extend([0x00, 0x00, 0x01].iter().chain([0x02; 29].iter()));
        let der = ecdsa_der(&raw, 32).unwrap();
        let back = EcdsaSig::from_der(&der).unwrap();
        assert_eq!(back.r().to_vec(), vec![0x80; 32]);
        assert_eq!(back.s().to_vec()[0], 0x01);
        assert_eq!(&der[..4], &[0x30, der.len() as u8 - 2, 0x02, 33]);
        assert!(ecdsa_der(&raw[..63], 32).is_err());
    }

    #[test]
    fn token_key_records_round_trip_and_are_told_from_key_files() {
        let key = TokenKey {
            format: TOKEN_KEY_FORMAT.into(),
            token_label: "ca".into(),
            key_label: "Portal CA".into(),
            key_id: "00ff".into(),
        };
        assert_eq!(TokenKey::from_json(&key.to_json()), Some(key));
        assert_eq!(
            TokenKey::from_json("{\"format\":\"ca-core-encrypted-key-v2\"}"),
            None
        );
    }

    /// A fresh SoftHSM2 token in a temp directory (SOFTHSM2_CONF points
    /// there); the one test below uses it, as the module is process-wide.
    fn softhsm_token(dir: &Path) -> TokenConfig {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let status = std::process::Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                "unit",
                "--pin",
                "1234",
                "--so-pin",
                "5678",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("softhsm2-util (apt-get install softhsm2)");
        assert!(status.success());
        TokenConfig {
            module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            token_label: "unit".into(),
            pin_file: None,
        }
    }

    fn verifies(signer: &dyn Signer, message: &[u8], signature: &[u8]) -> bool {
        let public =
            openssl::pkey::PKey::public_key_from_der(signer.public_key().spki_der()).unwrap();
        let mut verifier =
            openssl::sign::Verifier::new(signer.public_key().algorithm().digest(), &public)
                .unwrap();
        verifier.update(message).unwrap();
        verifier.verify(signature).unwrap_or(false)
    }

    #[test]
    fn softhsm_keys_sign_verifiably_stay_in_the_token_and_survive_removal() {
        let dir = tempfile::tempdir().unwrap();
        let config = softhsm_token(dir.path());

        let wrong = Token::open(&config, "0000").unwrap_err().to_string();
        assert!(wrong.contains("\"unit\" refused the PIN"), "{wrong}");
        let missing = TokenConfig {
            token_label: "nope".into(),
            ..config.clone()
        };
        let e = Token::open(&missing, "1234").unwrap_err().to_string();
        assert!(
            e.contains("no token labelled \"nope\"") && e.contains("\"unit\""),
            "{e}"
        );

        let token = Token::open(&config, "1234").unwrap();
        let message = b"tbsCertificate";
        let mut signers = Vec::new();
        for algorithm in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::Rsa3072,
        ] {
            let signer = token
                .generate(algorithm, &format!("key {algorithm}"))
                .unwrap();
            assert_eq!(signer.public_key().algorithm(), algorithm);
            let signature = signer.sign(message).unwrap();
            assert!(verifies(&signer, message, &signature), "{algorithm}");
            assert!(!verifies(&signer, b"other", &signature), "{algorithm}");
            signers.push(signer);
        }

        // The private key never leaves: sensitive, never extractable.
        let attributes = token
            .with_session(|session, _| {
                let handle = session.find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label(b"key ecdsa-p256".to_vec()),
                ])?[0];
                Ok(session.get_attributes(
                    handle,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::NeverExtractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::Token,
                    ],
                )?)
            })
            .unwrap();
        for attribute in &attributes {
            match attribute {
                Attribute::Sensitive(v)
                | Attribute::NeverExtractable(v)
                | Attribute::AlwaysSensitive(v)
                | Attribute::Token(v) => assert!(v, "{attribute:?}"),
                Attribute::Extractable(v) => assert!(!v),
                _ => {}
            }
        }
        assert_eq!(attributes.len(), 5);

        // Found again by its record; a wrong public key is refused by the test signature.
        let first = &signers[0];
        let again = Pkcs11Signer::find(
            &token,
            first.key().clone(),
            first.public_key().clone(),
            "cert",
        )
        .unwrap();
        assert!(verifies(first, message, &again.sign(message).unwrap()));
        let e = Pkcs11Signer::find(
            &token,
            first.key().clone(),
            signers[1].public_key().clone(),
            "the CA certificate",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("does not match the CA certificate") && e.contains("\"unit\""),
            "{e}"
        );

        // Token removed: signing is unavailable, and comes back with the token.
        let tokens = dir.path().join("tokens");
        let away = dir.path().join("away");
        std::fs::rename(&tokens, &away).unwrap();
        let e = first.sign(message).unwrap_err();
        assert!(matches!(e, Error::SignerUnavailable(_)), "{e}");
        assert!(token.check().is_err());
        std::fs::rename(&away, &tokens).unwrap();
        std::thread::sleep(REOPEN_INTERVAL + Duration::from_millis(100));
        token.check().unwrap();
        assert!(verifies(first, message, &first.sign(message).unwrap()));

        // Retired keys go; kept ones stay.
        let old = token.generate(KeyAlgorithm::EcdsaP256, "retire").unwrap();
        let kept = token.generate(KeyAlgorithm::EcdsaP256, "retire").unwrap();
        assert_eq!(token.destroy_except("retire", &[kept.key()]).unwrap(), 2);
        assert!(kept.sign(message).is_ok());
        assert!(matches!(
            old.sign(message),
            Err(Error::SignerUnavailable(_))
        ));
    }
}

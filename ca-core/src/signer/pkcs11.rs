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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use serde::{Deserialize, Serialize};

use super::Signer;
use crate::config::TokenConfig;
use crate::error::{Error, Result};
use crate::hash::{sha256, sha384};
use crate::keys::{KeyAlgorithm, PublicKey};

/// After the token went away, re-open it at most this often.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

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

/// Why a token call failed, and whether the token is gone.
struct Failure {
    gone: bool,
    message: String,
}

impl From<CkError> for Failure {
    fn from(e: CkError) -> Self {
        Failure {
            gone: is_gone(&e),
            message: describe(&e),
        }
    }
}

/// Return values that mean the device, its session or our login went away:
/// the token was removed, reset or lost its state. Anything else (a bad
/// mechanism, a bad argument) is an ordinary error and leaves the token up.
fn is_gone(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::CryptokiNotInitialized
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::GeneralError
                | RvError::FunctionFailed,
            _
        )
    )
}

/// `C_Sign: DeviceRemoved` rather than the specification's paragraph.
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => {
            let function = format!("{function}");
            let function = function.trim_start_matches("Function::");
            format!("C_{function}: {rv:?}")
        }
        other => other.to_string(),
    }
}

/// One token of one PKCS#11 module, with a pool of logged-in sessions.
pub(crate) struct Token {
    module: PathBuf,
    label: String,
    /// Kept (wiped on drop) to log in again after the token comes back.
    pin: AuthPin,
    pool_size: usize,
    context: Pkcs11,
    state: Mutex<State>,
    returned: Condvar,
}

struct State {
    /// Idle sessions of the current generation.
    sessions: Vec<Session>,
    /// Bumped on every re-open: sessions and handles of an older one are dead.
    generation: u64,
    down: Option<Down>,
}

struct Down {
    reason: String,
    last_attempt: Instant,
    /// The PIN was refused: retrying could lock the token, so never again.
    permanent: bool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({:?})", self.label)
    }
}

impl Token {
    /// Loads the module, finds the token by label, logs in once and opens
    /// the session pool (one session per core, at least two).
    pub(crate) fn open(config: &TokenConfig, pin: &str) -> Result<Arc<Token>> {
        if !config.module.exists() {
            return Err(Error::Config(format!(
                "key.module: no PKCS#11 module at {}",
                config.module.display()
            )));
        }
        let context = Pkcs11::new(&config.module).map_err(|e| {
            Error::Config(format!(
                "key.module: cannot load the PKCS#11 module {}: {e}",
                config.module.display()
            ))
        })?;
        let pool_size = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
        let token = Token {
            module: config.module.clone(),
            label: config.token_label.clone(),
            pin: AuthPin::from(pin.to_owned()),
            pool_size,
            context,
            state: Mutex::new(State {
                sessions: Vec::new(),
                generation: 0,
                down: None,
            }),
            returned: Condvar::new(),
        };
        token.initialize()?;
        let sessions = token.log_in()?;
        token.lock().sessions = sessions;
        Ok(Arc::new(token))
    }

    /// The token's label.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn initialize(&self) -> Result<()> {
        match self
            .context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
            Err(e) => Err(Error::Key(format!(
                "cannot initialise the PKCS#11 module {}: {}",
                self.module.display(),
                describe(&e)
            ))),
        }
    }

    fn find_slot(&self) -> Result<Slot> {
        let slots = self.context.get_slots_with_token().map_err(|e| {
            Error::Key(format!(
                "cannot list the tokens of {}: {}",
                self.module.display(),
                describe(&e)
            ))
        })?;
        let mut seen = Vec::new();
        for slot in slots {
            let Ok(info) = self.context.get_token_info(slot) else {
                continue;
            };
            let label = info.label().trim_end().to_owned();
            if label == self.label {
                return Ok(slot);
            }
            seen.push(format!("\"{}\"", label.escape_debug()));
        }
        Err(Error::Key(format!(
            "no token labelled \"{}\" in the PKCS#11 module {} (tokens present: {}); check key.token_label",
            self.label.escape_debug(),
            self.module.display(),
            if seen.is_empty() { "none".to_owned() } else { seen.join(", ") }
        )))
    }

    /// Opens the pool and logs in (one attempt: a wrong PIN is reported, not
    /// retried, so the token's retry counter is never run down by us).
    fn log_in(&self) -> Result<Vec<Session>> {
        let slot = self.find_slot()?;
        let open = || {
            // Sessions are closed by C_Finalize on a re-open, never by a drop:
            // a session handle from before a re-open may name a new session.
            self.context.open_rw_session_no_drop(slot).map_err(|e| {
                Error::Key(format!(
                    "token \"{}\": cannot open a session: {}",
                    self.label.escape_debug(),
                    describe(&e)
                ))
            })
        };
        let first = open()?;
        match first.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => {
                let _ = first.close();
                return Err(Error::Key(format!(
                    "token \"{}\" refused the PIN (CKR_PIN_INCORRECT); not retried, so the token is not locked: set CA_PKCS11_PIN or key.pin_file to the token's user PIN",
                    self.label.escape_debug()
                )));
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                let _ = first.close();
                return Err(Error::Key(format!(
                    "token \"{}\" has locked its user PIN (CKR_PIN_LOCKED): its security officer must unlock it",
                    self.label.escape_debug()
                )));
            }
            Err(e) => {
                let _ = first.close();
                return Err(Error::Key(format!(
                    "token \"{}\": login failed: {}",
                    self.label.escape_debug(),
                    describe(&e)
                )));
            }
        }
        let mut sessions = vec![first];
        for _ in 1..self.pool_size {
            sessions.push(open()?);
        }
        Ok(sessions)
    }

    /// Runs `f` on a pooled session. A failure that means the token went
    /// away takes the whole pool down (until a re-open succeeds) and comes
    /// back as [`Error::SignerUnavailable`].
    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session, u64) -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let (session, generation) = self.check_out()?;
        match f(&session, generation) {
            Ok(value) => {
                self.check_in(session, generation);
                Ok(value)
            }
            Err(failure) if failure.gone => {
                let reason = format!(
                    "token \"{}\" is unavailable ({}); retrying in the background",
                    self.label.escape_debug(),
                    failure.message
                );
                self.mark_down(generation, &reason);
                Err(Error::SignerUnavailable(reason))
            }
            Err(failure) => {
                self.check_in(session, generation);
                Err(Error::Crypto(format!(
                    "token \"{}\": {}",
                    self.label.escape_debug(),
                    failure.message
                )))
            }
        }
    }

    fn check_out(&self) -> Result<(Session, u64)> {
        let mut state = self.lock();
        loop {
            if state.down.is_some() {
                self.try_reopen(&mut state);
            }
            if let Some(down) = &state.down {
                return Err(Error::SignerUnavailable(down.reason.clone()));
            }
            if let Some(session) = state.sessions.pop() {
                return Ok((session, state.generation));
            }
            state = self
                .returned
                .wait_timeout(state, Duration::from_millis(500))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn check_in(&self, session: Session, generation: u64) {
        let mut state = self.lock();
        if state.generation == generation && state.down.is_none() {
            state.sessions.push(session);
            drop(state);
            self.returned.notify_one();
        }
        // Else the session died with its generation (it is never closed by
        // handle: see `log_in`).
    }

    fn mark_down(&self, generation: u64, reason: &str) {
        let mut state = self.lock();
        if state.generation != generation || state.down.is_some() {
            return;
        }
        state.sessions.clear();
        state.down = Some(Down {
            reason: reason.to_owned(),
            last_attempt: Instant::now(),
            permanent: false,
        });
        drop(state);
        self.returned.notify_all();
    }

    /// Re-initialises the module and logs in again, at most once per
    /// [`REOPEN_INTERVAL`]. Runs under the state lock: other callers wait
    /// for its outcome rather than piling up attempts.
    fn try_reopen(&self, state: &mut State) {
        let Some(down) = &state.down else { return };
        if down.permanent || down.last_attempt.elapsed() < REOPEN_INTERVAL {
            return;
        }
        state.sessions.clear();
        // C_Finalize drops every session and handle of the old generation;
        // SoftHSM2 and real modules re-read the token on C_Initialize.
        let _ = self.context.clone().finalize();
        let result = self.initialize().and_then(|()| self.log_in());
        match result {
            Ok(sessions) => {
                state.sessions = sessions;
                state.generation += 1;
                state.down = None;
                self.returned.notify_all();
            }
            Err(e) => {
                let permanent = e.to_string().contains("refused the PIN")
                    || e.to_string().contains("CKR_PIN_LOCKED");
                state.down = Some(Down {
                    reason: format!(
                        "{e}; {}",
                        if permanent {
                            "not retried: restart with the right PIN"
                        } else {
                            "retrying every second"
                        }
                    ),
                    last_attempt: Instant::now(),
                    permanent,
                });
            }
        }
    }

    /// `Ok` when the token can sign now; else why not. A token that is down
    /// is re-opened here too (at most once a second), so polling this brings
    /// it back without a request having to fail first.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let mut state = self.lock();
        self.try_reopen(&mut state);
        match &state.down {
            Some(down) => Err(down.reason.clone()),
            None => Ok(()),
        }
    }

    /// Generates a key pair in the token: private key CKA_TOKEN,
    /// CKA_PRIVATE, CKA_SENSITIVE, not CKA_EXTRACTABLE, CKA_SIGN only; both
    /// halves share `label` and a fresh random CKA_ID.
    pub(crate) fn generate(
        self: &Arc<Self>,
        algorithm: KeyAlgorithm,
        label: &str,
    ) -> Result<Pkcs11Signer> {
        let mut id = [0u8; 16];
        openssl::rand::rand_bytes(&mut id)?;
        let key = TokenKey {
            format: TOKEN_KEY_FORMAT.into(),
            token_label: self.label.clone(),
            key_label: label.to_owned(),
            key_id: hex::encode(id),
        };
        let common = |private: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Private(private),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ]
        };
        let mut public_template = common(false);
        public_template.push(Attribute::Verify(true));
        let mut private_template = common(true);
        private_template.extend([
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Unwrap(false),
        ]);
        let mechanism = match algorithm {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                public_template.push(Attribute::EcParams(curve_oid(algorithm)?.to_vec()));
                Mechanism::EccKeyPairGen
            }
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let bits: u64 = match algorithm {
                    KeyAlgorithm::Rsa2048 => 2048,
                    KeyAlgorithm::Rsa3072 => 3072,
                    _ => 4096,
                };
                public_template.push(Attribute::ModulusBits(bits.into()));
                public_template.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
        };
        let public = self.with_session(|session, _| {
            let (public, _) =
                session.generate_key_pair(&mechanism, &public_template, &private_template)?;
            read_public_key(session, public, algorithm)
        })?;
        Ok(Pkcs11Signer {
            token: Arc::clone(self),
            key,
            public,
            handle: Mutex::new(None),
        })
    }

    /// Destroys the key pairs labelled `label` except those whose CKA_ID is
    /// in `keep` (retired OCSP responder keys). Best effort: returns how many went.
    pub(crate) fn destroy_except(&self, label: &str, keep: &[&TokenKey]) -> Result<usize> {
        let keep: Vec<Vec<u8>> = keep.iter().filter_map(|k| k.id().ok()).collect();
        self.with_session(|session, _| {
            let mut destroyed = 0;
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                let objects = session.find_objects(&[
                    Attribute::Class(class),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])?;
                for object in objects {
                    let id = session.get_attributes(object, &[AttributeType::Id])?;
                    let Some(Attribute::Id(id)) = id.into_iter().next() else {
                        continue;
                    };
                    if !keep.contains(&id) {
                        session.destroy_object(object)?;
                        destroyed += 1;
                    }
                }
            }
            Ok(destroyed)
        })
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        let mut state = self.lock();
        for session in state.sessions.drain(..) {
            let _ = session.close();
        }
        drop(state);
        let _ = self.context.clone().finalize();
    }
}

/// The DER OID of a curve, as CKA_EC_PARAMS holds it (RFC 5480 namedCurve).
fn curve_oid(algorithm: KeyAlgorithm) -> Result<&'static [u8]> {
    match algorithm {
        // 1.2.840.10045.3.1.7 (prime256v1)
        KeyAlgorithm::EcdsaP256 => {
            Ok(&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07])
        }
        // 1.3.132.0.34 (secp384r1)
        KeyAlgorithm::EcdsaP384 => Ok(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]),
        other => Err(Error::Crypto(format!("{other} is not an EC algorithm"))),
    }
}

/// The public half from the token's public key object.
fn read_public_key(
    session: &Session,
    object: ObjectHandle,
    algorithm: KeyAlgorithm,
) -> std::result::Result<PublicKey, Failure> {
    let bad = |message: String| Failure {
        gone: false,
        message,
    };
    match algorithm {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
            let attributes = session.get_attributes(object, &[AttributeType::EcPoint])?;
            let Some(Attribute::EcPoint(point)) = attributes.into_iter().next() else {
                return Err(bad("the token returned no CKA_EC_POINT".into()));
            };
            let point_len = if algorithm == KeyAlgorithm::EcdsaP256 {
                65
            } else {
                97
            };
            // PKCS#11 §2.3.3: CKA_EC_POINT is a DER OCTET STRING wrapping the
            // point; a few modules return the bare point.
            let point = match point.as_slice() {
                [0x04, len, rest @ ..]
                    if usize::from(*len) == point_len && rest.len() == point_len =>
                {
                    rest.to_vec()
                }
                bare if bare.len() == point_len => bare.to_vec(),
                _ => {
                    return Err(bad(
                        "the token's CKA_EC_POINT is not an uncompressed point".into()
                    ))
                }
            };
            PublicKey::from_ec_point(algorithm, point).map_err(|e| bad(e.to_string()))
        }
        _ => {
            let attributes = session.get_attributes(
                object,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            let (mut modulus, mut exponent) = (None, None);
            for attribute in attributes {
                match attribute {
                    Attribute::Modulus(n) => modulus = Some(n),
                    Attribute::PublicExponent(e) => exponent = Some(e),
                    _ => {}
                }
            }
            let (Some(n), Some(e)) = (modulus, exponent) else {
                return Err(bad("the token returned no RSA modulus or exponent".into()));
            };
            let rsa = BigNum::from_slice(&n)
                .and_then(|n| Ok((n, BigNum::from_slice(&e)?)))
                .and_then(|(n, e)| openssl::rsa::Rsa::from_public_components(n, e))
                .and_then(openssl::pkey::PKey::from_rsa)
                .map_err(|e| bad(e.to_string()))?;
            PublicKey::from_pkey(&rsa).map_err(|e| bad(e.to_string()))
        }
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
            let elsewhere = if key.token_label != token.label {
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
                token.label.escape_debug()
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
                signer.token.label.escape_debug()
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
    use super::*;

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

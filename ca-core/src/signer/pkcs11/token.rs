//! The token itself: its session pool, log-in, and going down and coming
//! back (see the diagram in the parent module). Key objects are made and
//! found here; signing with one is [`super::Pkcs11Signer`]'s.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use openssl::bn::BigNum;

use super::{Pkcs11Signer, TokenKey, TOKEN_KEY_FORMAT};
use crate::config::TokenConfig;
use crate::error::{Error, Result};
use crate::keys::{KeyAlgorithm, PublicKey};

/// After the token went away, re-open it at most this often.
pub(super) const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// Why a token call failed, and whether the token is gone.
pub(super) struct Failure {
    pub(super) gone: bool,
    pub(super) message: String,
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
    pub(super) fn with_session<T>(
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

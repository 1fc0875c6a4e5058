//! Operator-console sessions (DESIGN §7, `GET /ui/…`): a browser signs in
//! once with an API token (or its TLS client certificate) and then carries a
//! random session secret in a cookie instead of the token.
//!
//! Why sessions live in the store rather than in a MAC'd cookie: a stored
//! session can be ended by signing out (a MAC'd cookie stays good until it
//! expires), needs no MAC key shared by every replica, and only the secret's
//! SHA-256 is kept, so a read of the database yields no usable session. On
//! every request the session's credential is checked again through the same
//! code as the API ([`Ca::authenticate`]'s token rules,
//! [`Ca::authenticate_certificate`]): revoking or expiring the token ends
//! its sessions on every replica as soon as that replica's token cache sees
//! the revocation (its store poll, every 250 ms).
//!
//! CSRF tokens are derived from the session secret (HMAC-SHA256 under the
//! secret, RFC 2104), so they are bound to the session, need no storage, and
//! cannot be computed by anyone who cannot read the cookie.

use base64::Engine as _;
use hmac::Mac as _;
use zeroize::Zeroizing;

use super::{now, Ca};
use crate::audit::AuditDraft;
use crate::error::{Error, Result};
use crate::store::ConsoleSession;
use crate::tokens::{Credential, Principal};

/// How long a console session lasts from sign-in (never longer than the
/// token it came from). Short on purpose: a console left open on a support
/// desk stops working within the half hour.
pub const CONSOLE_SESSION_LIFETIME: time::Duration = time::Duration::minutes(30);

/// The secret a browser holds for its session (the cookie's value); wiped on drop.
pub struct ConsoleSecret(Zeroizing<String>);

impl ConsoleSecret {
    /// A presented cookie value; `None` unless it has the shape we hand out
    /// (43 characters of unpadded base64url), so junk never reaches the store.
    pub fn parse(text: &str) -> Option<ConsoleSecret> {
        (text.len() == 43
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| ConsoleSecret(Zeroizing::new(text.to_owned())))
    }

    fn generate() -> Result<ConsoleSecret> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        openssl::rand::rand_bytes(&mut bytes[..])?;
        Ok(ConsoleSecret(Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..]),
        )))
    }

    /// The cookie value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn id_hash(&self) -> String {
        hex::encode(crate::hash::sha256(self.0.as_bytes()))
    }

    /// The CSRF token of this session, for every form it renders.
    pub fn csrf_token(&self) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.0.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"ca-console csrf v1");
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether a form's CSRF token is this session's (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        crate::tokens::digests_equal(&self.csrf_token(), presented)
    }
}

impl std::fmt::Debug for ConsoleSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleSecret(<redacted>)")
    }
}

fn session_expired() -> Error {
    Error::Unauthenticated("your console session has ended: sign in again".into())
}

impl Ca {
    /// Signs in with an API token: checks it exactly as the API does, then
    /// stores a new session (audited `console-sign-in`, actor the token).
    pub async fn console_sign_in_token(
        &self,
        presented: &str,
    ) -> Result<(ConsoleSecret, Principal)> {
        let principal = self.authenticate(presented).await?;
        let token_expiry = match &principal.credential {
            Credential::Token(id) => self
                .token_record(id)
                .await?
                .and_then(|(record, _)| record.expires_at),
            Credential::Certificate(_) => None,
        };
        let secret = self.start_session(&principal, token_expiry).await?;
        Ok((secret, principal))
    }

    /// Signs in with the TLS client certificate of this connection (DER);
    /// the same rules as the API's certificate login.
    pub async fn console_sign_in_certificate(
        &self,
        der: &[u8],
    ) -> Result<(ConsoleSecret, Principal)> {
        let principal = self.authenticate_certificate(der).await?;
        let secret = self.start_session(&principal, None).await?;
        Ok((secret, principal))
    }

    async fn start_session(
        &self,
        principal: &Principal,
        not_after: Option<time::OffsetDateTime>,
    ) -> Result<ConsoleSecret> {
        let secret = ConsoleSecret::generate()?;
        let now = now();
        let mut expires_at = now + CONSOLE_SESSION_LIFETIME;
        if let Some(limit) = not_after {
            expires_at = expires_at.min(limit);
        }
        let session = ConsoleSession {
            id_hash: secret.id_hash(),
            credential: principal.actor(),
            created_at: now,
            expires_at,
        };
        let mut draft = AuditDraft::new(&principal.actor(), "console-sign-in", "console");
        draft.details = format!("expires_at={}", crate::rfc3339(expires_at));
        self.store
            .insert_console_session(&session, draft, now)
            .await?;
        Ok(secret)
    }

    /// The caller behind a session cookie. The session must exist and be
    /// unexpired, and its credential must still authenticate now: a token
    /// neither revoked nor expired, or — for a certificate session — the
    /// same client certificate on this connection, still valid.
    pub async fn console_session(
        &self,
        secret: &ConsoleSecret,
        peer_certificate: Option<&[u8]>,
    ) -> Result<Principal> {
        let session = self
            .store
            .console_session(&secret.id_hash())
            .await?
            .ok_or_else(session_expired)?;
        if now() >= session.expires_at {
            return Err(session_expired());
        }
        if let Some(id) = session.credential.strip_prefix("token:") {
            let (record, _) = self.token_record(id).await?.ok_or_else(session_expired)?;
            return Self::token_principal(record);
        }
        if session.credential.starts_with("cert:") {
            let der = peer_certificate.ok_or_else(|| {
                Error::Unauthenticated(
                    "this session was signed in with a client certificate: present it again".into(),
                )
            })?;
            let principal = self.authenticate_certificate(der).await?;
            if principal.actor() != session.credential {
                return Err(Error::Unauthenticated(
                    "this connection's client certificate is not the one this session signed in with: sign in again".into(),
                ));
            }
            return Ok(principal);
        }
        Err(session_expired())
    }

    /// Ends a session (audited `console-sign-out`); ending one already gone
    /// is not an error and writes nothing.
    pub async fn console_sign_out(&self, secret: &ConsoleSecret, actor: &str) -> Result<()> {
        let draft = AuditDraft::new(actor, "console-sign-out", "console");
        self.store
            .delete_console_session(&secret.id_hash(), draft, now())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_only_in_their_shape_and_csrf_is_bound_to_the_secret() {
        let a = ConsoleSecret::generate().unwrap();
        let b = ConsoleSecret::generate().unwrap();
        assert!(ConsoleSecret::parse(a.expose()).is_some());
        assert!(ConsoleSecret::parse("short").is_none());
        assert!(ConsoleSecret::parse(&"a".repeat(42).replace('a', "*")).is_none());
        assert!(a.csrf_matches(&a.csrf_token()));
        assert!(!a.csrf_matches(&b.csrf_token()));
        assert!(!a.csrf_matches(""));
        assert_ne!(a.id_hash(), b.id_hash());
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}

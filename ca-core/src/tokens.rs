//! API tokens and what each role may do (DESIGN §7).
//!
//! A token reads `cat_<id>_<secret>`: the id (not secret) finds the record, and
//! only SHA-256 of the secret is stored, compared in constant time.

use std::fmt;

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::ids::{Serial, TenantId};

/// A role a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, including tokens.
    Admin,
    /// Issue, reissue, sign CSRs, revoke, read; optionally scoped to one tenant.
    Operator,
    /// Reissue and read (automated renewal jobs).
    Renewer,
    /// Read and audit.
    Auditor,
}

/// What a caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// First issuance.
    Issue,
    /// Reissue.
    Reissue,
    /// CSR signing.
    SignCsr,
    /// Revocation.
    Revoke,
    /// Reading certificates.
    Read,
    /// Reading the audit log.
    Audit,
    /// Creating, listing and revoking API tokens.
    ManageTokens,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Renewer, Role::Auditor];

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Renewer => "renewer",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == text)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown role \"{}\": use admin, operator, renewer or auditor",
                    text.escape_debug()
                ))
            })
    }

    /// Whether this role may perform `action`.
    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(action, Issue | Reissue | SignCsr | Revoke | Read),
            Role::Renewer => matches!(action, Reissue | Read),
            Role::Auditor => matches!(action, Read | Audit),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stored token (without its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenRecord {
    /// Public id.
    pub id: String,
    /// Role.
    #[serde(serialize_with = "role_name")]
    pub role: Role,
    /// Tenant scope.
    pub tenant: Option<String>,
    /// Free-text name.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Revocation time (RFC 3339).
    pub revoked_at: Option<String>,
    /// When it stops working (RFC 3339); `null` for a token that never expires.
    #[serde(serialize_with = "optional_time")]
    pub expires_at: Option<time::OffsetDateTime>,
}

fn optional_time<S: serde::Serializer>(
    t: &Option<time::OffsetDateTime>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&crate::rfc3339(*t)),
        None => s.serialize_none(),
    }
}

fn role_name<S: serde::Serializer>(role: &Role, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(role.name())
}

/// What a caller authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A bearer token, by its public id (safe to log).
    Token(String),
    /// A TLS client certificate issued by this CA, by its serial.
    Certificate(Serial),
}

/// Who is calling, once their token or client certificate checked out.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The credential presented.
    pub credential: Credential,
    /// Role.
    pub role: Role,
    /// Tenant scope.
    pub tenant: Option<String>,
}

impl Principal {
    /// The audit actor string: `token:<id>` or `cert:<serial>`.
    pub fn actor(&self) -> String {
        match &self.credential {
            Credential::Token(id) => format!("token:{id}"),
            Credential::Certificate(serial) => format!("cert:{serial}"),
        }
    }

    /// Checks the role allows `action`, and the tenant scope covers `tenant` (when given).
    pub fn authorize(&self, action: Action, tenant: Option<&str>) -> Result<()> {
        if !self.role.allows(action) {
            return Err(Error::Forbidden(format!(
                "role {} may not {}",
                self.role,
                action_text(action)
            )));
        }
        if let (Some(scope), Some(tenant)) = (&self.tenant, tenant) {
            if scope != tenant {
                return Err(Error::Forbidden(format!(
                    "this token is limited to tenant {scope}"
                )));
            }
        }
        Ok(())
    }
}

fn action_text(action: Action) -> &'static str {
    match action {
        Action::Issue => "issue certificates",
        Action::Reissue => "reissue certificates",
        Action::SignCsr => "sign CSRs",
        Action::Revoke => "revoke certificates",
        Action::Read => "read certificates",
        Action::Audit => "read the audit log",
        Action::ManageTokens => "manage API tokens",
    }
}

/// A freshly created token: the secret is shown once.
pub struct NewToken {
    /// Stored record.
    pub record: TokenRecord,
    /// The full bearer token.
    pub token: Zeroizing<String>,
}

pub(crate) fn generate() -> Result<(String, Zeroizing<String>, String)> {
    let mut id = [0u8; 8];
    let mut secret = Zeroizing::new([0u8; 32]);
    openssl::rand::rand_bytes(&mut id)?;
    openssl::rand::rand_bytes(&mut secret[..])?;
    let id = hex::encode(id);
    let secret_text =
        Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secret[..]));
    let token = Zeroizing::new(format!("cat_{id}_{}", secret_text.as_str()));
    Ok((id, token, hash_secret(&secret_text)))
}

pub(crate) fn hash_secret(secret: &str) -> String {
    hex::encode(crate::hash::sha256(secret.as_bytes()))
}

/// The public id part of a presented token, if it has our shape (safe to log).
pub fn token_id(presented: &str) -> Option<&str> {
    split(presented).map(|(id, _)| id)
}

/// Splits a presented token into (id, secret); `None` if it is not of our shape.
pub(crate) fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("cat_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && !secret.is_empty()
        && secret.len() <= 128)
        .then_some((id, secret))
}

/// Constant-time comparison of two hex digests.
pub(crate) fn digests_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a.as_bytes(), b.as_bytes())
}

/// The longest lifetime a token may be given.
const MAX_TOKEN_LIFETIME_SECS: u64 = 10 * 366 * 24 * 3600;

/// When a token created now with lifetime `expires_in` expires.
pub(crate) fn expiry_from_now(
    expires_in: crate::duration::Duration,
) -> Result<time::OffsetDateTime> {
    let secs = expires_in.as_secs();
    if secs == 0 || secs > MAX_TOKEN_LIFETIME_SECS {
        return Err(Error::InvalidInput(format!(
            "token expiry must be between 1s and 10y, not {expires_in}"
        )));
    }
    Ok(crate::ca::now() + expires_in.to_time())
}

/// Validates an optional tenant scope.
pub(crate) fn check_scope(tenant: Option<&str>) -> Result<Option<String>> {
    tenant
        .map(|t| TenantId::parse(t).map(|t| t.to_string()))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_design_says() {
        assert!(Role::Admin.allows(Action::Audit));
        assert!(Role::Operator.allows(Action::Revoke) && !Role::Operator.allows(Action::Audit));
        assert!(Role::Renewer.allows(Action::Reissue));
        for a in [
            Action::Issue,
            Action::SignCsr,
            Action::Revoke,
            Action::Audit,
            Action::ManageTokens,
        ] {
            assert!(!Role::Renewer.allows(a));
        }
        assert!(Role::Admin.allows(Action::ManageTokens));
        assert!(!Role::Operator.allows(Action::ManageTokens));
        assert!(!Role::Auditor.allows(Action::ManageTokens));
        assert!(Role::Auditor.allows(Action::Audit) && !Role::Auditor.allows(Action::Reissue));
    }

    #[test]
    fn tokens_split_and_hash() {
        let (id, token, hash) = generate().unwrap();
        let (got_id, secret) = split(&token).unwrap();
        assert_eq!(got_id, id);
        assert!(digests_equal(&hash_secret(secret), &hash));
        assert!(split("Bearer x").is_none() && split("cat_zz_x").is_none());
    }
}

/// Tokens already read from the store, so authenticating a request does not
/// wait on it. Expiry is checked on every use against the cached record, so an
/// expired token is refused at once without a store read. A token never
/// changes except by being revoked, so an entry
/// stays good until a revocation: one through this process clears the cache
/// at once ([`TokenCache::clear`]); one by another process is noticed by
/// [`TokenCache::observe_revoked`], which a server calls on every store poll.
/// Until the first observation nothing is cached (a process that does not
/// poll always reads the store).
#[derive(Default)]
pub(crate) struct TokenCache {
    inner: std::sync::Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// Revoked tokens in the store at the last observation.
    revoked: Option<u64>,
    /// Bumped on every clear: a store read that began before a clear must
    /// not be cached after it.
    epoch: u64,
    entries: std::collections::HashMap<String, (TokenRecord, String)>,
}

/// Most tokens cached (there are few; this bounds memory if ids are made up).
const TOKEN_CACHE_MAX: usize = 10_000;

impl TokenCache {
    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached record and secret hash, or the epoch to pass to
    /// [`TokenCache::insert`] after reading the store.
    pub(crate) fn get(&self, id: &str) -> Result<(TokenRecord, String), u64> {
        let state = self.state();
        state.entries.get(id).cloned().ok_or(state.epoch)
    }

    /// Caches what a store read begun at `epoch` returned, unless the cache
    /// was cleared meanwhile or is not in use.
    pub(crate) fn insert(&self, epoch: u64, record: &TokenRecord, hash: &str) {
        let mut state = self.state();
        if state.revoked.is_none() || state.epoch != epoch {
            return;
        }
        if state.entries.len() >= TOKEN_CACHE_MAX {
            state.entries.clear();
        }
        state
            .entries
            .insert(record.id.clone(), (record.clone(), hash.to_owned()));
    }

    /// Forgets every entry.
    pub(crate) fn clear(&self) {
        let mut state = self.state();
        state.entries.clear();
        state.epoch += 1;
    }

    /// Takes the store's count of revoked tokens; clears on any change.
    pub(crate) fn observe_revoked(&self, count: u64) {
        let mut state = self.state();
        if state.revoked != Some(count) {
            state.entries.clear();
            state.epoch += 1;
            state.revoked = Some(count);
        }
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn record(id: &str) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            role: Role::Operator,
            tenant: None,
            name: String::new(),
            created_at: String::new(),
            revoked_at: None,
            expires_at: None,
        }
    }

    #[test]
    fn caches_only_once_observing_and_never_across_a_clear() {
        let cache = TokenCache::default();
        let epoch = cache.get("a").unwrap_err();
        cache.insert(epoch, &record("a"), "h");
        assert!(
            cache.get("a").is_err(),
            "not in use before the first observation"
        );

        cache.observe_revoked(0);
        let epoch = cache.get("a").unwrap_err();
        cache.insert(epoch, &record("a"), "h");
        assert_eq!(cache.get("a").unwrap().1, "h");

        // A read that started before a revocation is not cached after it.
        let epoch = cache.get("b").unwrap_err();
        cache.clear();
        cache.insert(epoch, &record("b"), "h");
        assert!(cache.get("b").is_err());

        let epoch = cache.get("a").unwrap_err();
        cache.insert(epoch, &record("a"), "h");
        cache.observe_revoked(0);
        assert!(cache.get("a").is_ok(), "unchanged count keeps entries");
        cache.observe_revoked(1);
        assert!(cache.get("a").is_err(), "a revocation elsewhere clears");
    }
}

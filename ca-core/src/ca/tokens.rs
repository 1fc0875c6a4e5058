//! API tokens: creating, revoking and authenticating them (the cache that
//! follows revocations on every replica).

use super::*;

impl Ca {
    /// Creates an API token that never expires; the returned secret is shown once.
    pub async fn create_token(
        &self,
        role: Role,
        tenant: Option<&str>,
        name: &str,
        actor: &str,
    ) -> Result<NewToken> {
        self.create_token_expiring(role, tenant, name, None, actor)
            .await
    }

    /// Creates an API token, expiring `expires_in` from now when given; the
    /// returned secret is shown once.
    pub async fn create_token_expiring(
        &self,
        role: Role,
        tenant: Option<&str>,
        name: &str,
        expires_in: Option<Duration>,
        actor: &str,
    ) -> Result<NewToken> {
        let tenant = crate::tokens::check_scope(tenant)?;
        let expires_at = expires_in.map(crate::tokens::expiry_from_now).transpose()?;
        if tenant.is_some() && !matches!(role, Role::Operator | Role::Renewer) {
            return Err(Error::InvalidInput(format!(
                "--tenant applies to operator and renewer tokens, not {role}"
            )));
        }
        if name.len() > 200 || name.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "token name must be at most 200 printable characters".into(),
            ));
        }
        let (id, token, hash) = crate::tokens::generate()?;
        let record = TokenRecord {
            id: id.clone(),
            role,
            tenant,
            name: name.to_owned(),
            created_at: crate::rfc3339(now()),
            revoked_at: None,
            expires_at,
        };
        let draft = AuditDraft::new(actor, "token-create", id);
        self.store
            .insert_token(&record, &hash, draft, now())
            .await?;
        Ok(NewToken { record, token })
    }

    /// All tokens.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.store.tokens().await
    }

    /// Revokes a token.
    pub async fn revoke_token(&self, id: &str, actor: &str) -> Result<()> {
        let draft = AuditDraft::new(actor, "token-revoke", id);
        let revoked = self.store.revoke_token(id, draft, now()).await;
        self.tokens.clear();
        revoked
    }

    /// Notices tokens revoked by other processes (servers call this on every
    /// store poll; until then, tokens are not cached).
    pub async fn refresh_token_cache(&self) -> Result<()> {
        let count = self.store.revoked_token_count().await?;
        self.tokens.observe_revoked(count);
        Ok(())
    }

    /// Checks a presented bearer token.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal> {
        let unauthenticated = || Error::Unauthenticated("invalid or revoked API token".into());
        let (id, secret) = crate::tokens::split(presented).ok_or_else(unauthenticated)?;
        let (record, stored_hash) = self.token_record(id).await?.ok_or_else(unauthenticated)?;
        let matches =
            crate::tokens::digests_equal(&crate::tokens::hash_secret(secret), &stored_hash);
        if !matches {
            return Err(unauthenticated());
        }
        Self::token_principal(record)
    }

    /// A token's record and secret hash, from the cache or the store.
    pub(super) async fn token_record(&self, id: &str) -> Result<Option<(TokenRecord, String)>> {
        Ok(match self.tokens.get(id) {
            Ok(cached) => Some(cached),
            Err(epoch) => {
                let found = self.store.token(id).await?;
                if let Some((record, hash)) = &found {
                    self.tokens.insert(epoch, record, hash);
                }
                found
            }
        })
    }

    /// The caller a token record stands for, unless it is revoked or expired.
    /// The one place those two rules live: bearer tokens and console
    /// sessions signed in with one both come through here.
    pub(super) fn token_principal(record: TokenRecord) -> Result<Principal> {
        if record.revoked_at.is_some() {
            return Err(Error::Unauthenticated(
                "invalid or revoked API token".into(),
            ));
        }
        // Checked on every use, cached or not: expiry needs no store poll.
        if let Some(expires_at) = record.expires_at {
            if now() >= expires_at {
                return Err(Error::TokenExpired(format!(
                    "API token {} expired at {}: create a new one",
                    record.id,
                    crate::rfc3339(expires_at)
                )));
            }
        }
        Ok(Principal {
            credential: crate::tokens::Credential::Token(record.id),
            role: record.role,
            tenant: record.tenant,
        })
    }
}

//! API tokens (only their secrets' hashes).

use super::*;

pub(super) fn token_from_row(row: &AnyRow) -> Result<TokenRecord> {
    let role: String = row.try_get("role")?;
    Ok(TokenRecord {
        id: row.try_get("id")?,
        role: Role::parse(&role).map_err(|_| Error::Store(format!("bad role in store: {role}")))?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        created_at: crate::rfc3339(from_ts(row.try_get("created_at")?)?),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(from_ts)
            .transpose()?
            .map(crate::rfc3339),
        expires_at: row
            .try_get::<Option<i64>, _>("expires_at")?
            .map(from_ts)
            .transpose()?,
    })
}

/// API tokens: the part of [`Store`](super::Store) authentication goes through.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new API token (only the secret's hash).
    async fn insert_token(
        &self,
        token: &TokenRecord,
        secret_hash: &str,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<()>;

    /// A token and its secret hash.
    async fn token(&self, id: &str) -> Result<Option<(TokenRecord, String)>>;

    /// All tokens.
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;

    /// How many tokens are revoked (it only grows: tokens are never deleted
    /// nor un-revoked), so a change means a revocation.
    async fn revoked_token_count(&self) -> Result<u64>;

    /// Revokes a token.
    async fn revoke_token(&self, id: &str, audit: AuditDraft, now: OffsetDateTime) -> Result<()>;
}

#[async_trait]
impl TokenStore for SqlStore {
    async fn insert_token(
        &self,
        token: &TokenRecord,
        secret_hash: &str,
        mut audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<()> {
        audit.details = format!(
            "role={} tenant={} expires_at={}",
            token.role,
            token.tenant.as_deref().unwrap_or("*"),
            token
                .expires_at
                .map(crate::rfc3339)
                .as_deref()
                .unwrap_or("never")
        );
        let (mut tx, open) = self.begin(audit, now).await?;
        sqlx::query("INSERT INTO tokens (id, name, role, tenant, secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&token.id)
            .bind(&token.name)
            .bind(token.role.name())
            .bind(token.tenant.as_deref())
            .bind(secret_hash)
            .bind(ts(now))
            .bind(token.expires_at.map(ts))
            .execute(&mut *tx)
            .await?;
        self.commit(tx, open).await
    }

    async fn token(&self, id: &str) -> Result<Option<(TokenRecord, String)>> {
        let row = sqlx::query("SELECT id, name, role, tenant, secret_hash, created_at, revoked_at, expires_at FROM tokens WHERE id = $1")
            .bind(id)
            .fetch_all(&self.pool).await?.into_iter().next();
        row.map(|row| Ok((token_from_row(&row)?, row.try_get("secret_hash")?)))
            .transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT id, name, role, tenant, created_at, revoked_at, expires_at FROM tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoked_token_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query("SELECT count(*) AS n FROM tokens WHERE revoked_at IS NOT NULL")
            .fetch_all(&self.pool)
            .await?
            .one()?
            .try_get("n")?;
        Ok(n as u64)
    }

    async fn revoke_token(&self, id: &str, audit: AuditDraft, now: OffsetDateTime) -> Result<()> {
        let (mut tx, open) = self.begin(audit, now).await?;
        let changed =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(ts(now))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if changed == 0 {
            let exists = sqlx::query("SELECT id FROM tokens WHERE id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .next();
            return Err(match exists {
                Some(_) => Error::Conflict(format!("token {id} is already revoked")),
                None => Error::NotFound(format!("no token with id {id} (see `ca-cli token list`)")),
            });
        }
        self.commit(tx, open).await
    }
}

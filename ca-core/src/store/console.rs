//! Operator console sessions (only their secrets' hashes).

use super::*;

/// Live console sessions one credential may hold at once; signing in again
/// beyond this ends the oldest.
pub const CONSOLE_SESSIONS_PER_CREDENTIAL: i64 = 20;

/// A console session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// SHA-256 (hex) of the cookie's secret.
    pub id_hash: String,
    /// Who signed in: the audit actor (`token:<id>` or `cert:<serial>`).
    pub credential: String,
    /// When.
    pub created_at: OffsetDateTime,
    /// When it stops working, whatever the credential does.
    pub expires_at: OffsetDateTime,
}

/// Console sessions: the part of [`Store`](super::Store) the operator console signs in with.
#[async_trait]
pub trait ConsoleSessionStore: Send + Sync {
    /// Stores a console session (only its secret's hash). In the same
    /// transaction, drops expired sessions and the oldest of this
    /// credential's beyond [`CONSOLE_SESSIONS_PER_CREDENTIAL`], so the table
    /// stays bounded however often someone signs in.
    async fn insert_console_session(
        &self,
        session: &ConsoleSession,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<()>;

    /// A console session by its secret's hash.
    async fn console_session(&self, id_hash: &str) -> Result<Option<ConsoleSession>>;

    /// Ends a console session (sign-out); `false` when it was already gone.
    async fn delete_console_session(
        &self,
        id_hash: &str,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<bool>;
}

#[async_trait]
impl ConsoleSessionStore for SqlStore {
    async fn insert_console_session(
        &self,
        session: &ConsoleSession,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<()> {
        let (mut tx, open) = self.begin(audit, now).await?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(ts(now))
            .execute(&mut *tx)
            .await?;
        // Keep the newest (limit - 1), making room for this one.
        sqlx::query(
            "DELETE FROM console_sessions WHERE credential = $1 AND id_hash NOT IN \
             (SELECT id_hash FROM console_sessions WHERE credential = $1 \
              ORDER BY created_at DESC, id_hash LIMIT $2)",
        )
        .bind(&session.credential)
        .bind(CONSOLE_SESSIONS_PER_CREDENTIAL - 1)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO console_sessions (id_hash, credential, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(&session.id_hash)
            .bind(&session.credential)
            .bind(ts(session.created_at))
            .bind(ts(session.expires_at))
            .execute(&mut *tx)
            .await?;
        self.commit(tx, open).await
    }

    async fn console_session(&self, id_hash: &str) -> Result<Option<ConsoleSession>> {
        let row = sqlx::query("SELECT id_hash, credential, created_at, expires_at FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .next();
        row.map(|row| {
            Ok(ConsoleSession {
                id_hash: row.try_get("id_hash")?,
                credential: row.try_get("credential")?,
                created_at: from_ts(row.try_get("created_at")?)?,
                expires_at: from_ts(row.try_get("expires_at")?)?,
            })
        })
        .transpose()
    }

    async fn delete_console_session(
        &self,
        id_hash: &str,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let (mut tx, open) = self.begin(audit, now).await?;
        let gone = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            // Nothing changed: no audit event for it.
            return Ok(false);
        }
        self.commit(tx, open).await?;
        Ok(true)
    }
}

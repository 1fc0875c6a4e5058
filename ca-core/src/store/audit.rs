//! The hash-chained audit log: every state change appends its events in the
//! same transaction, under the chain head's lock.

use super::*;

/// A stand-alone audited transaction: the chain head it locked, and the
/// event it will append on commit.
pub(super) struct OpenAudit {
    /// Write transactions of this process take turns (see [`SqlStore::writer`]).
    pub(super) _writer: OwnedMutexGuard<()>,
    pub(super) head: ChainHead,
    pub(super) at: i64,
    pub(super) draft: AuditDraft,
}

/// The audit chain's head as a transaction moves it: events are chained in
/// memory and written together with the new head before the commit.
pub(super) struct ChainHead {
    pub(super) seq: u64,
    pub(super) hash: String,
}

/// An audit event chained to its predecessor, not yet written.
pub(super) struct ChainedEvent {
    pub(super) seq: u64,
    pub(super) at: i64,
    pub(super) draft: AuditDraft,
    pub(super) serials: String,
    pub(super) prev_hash: String,
    pub(super) hash: String,
}

impl ChainHead {
    pub(super) fn append(&mut self, draft: &AuditDraft, at: i64) -> ChainedEvent {
        let seq = self.seq + 1;
        let serials = draft.serials.join(",");
        let hash = event_hash(
            &self.hash,
            seq,
            at,
            [
                &draft.actor,
                &draft.action,
                &draft.subject,
                &serials,
                &draft.details,
            ],
        );
        let prev_hash = std::mem::replace(&mut self.hash, hash.clone());
        self.seq = seq;
        ChainedEvent {
            seq,
            at,
            draft: draft.clone(),
            serials,
            prev_hash,
            hash,
        }
    }
}

/// Reads the chain head with a no-op update, which takes the write lock
/// (SQLite) or the head row lock (PostgreSQL) until the transaction ends.
/// Locks the chain head's row (the write lock, on both backends) and reads it.
pub(super) const LOCK_AUDIT_HEAD: &str =
    "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash";

pub(super) async fn lock_audit_head(conn: &mut AnyConnection) -> Result<ChainHead> {
    let row = sqlx::query(LOCK_AUDIT_HEAD)
        .fetch_all(&mut *conn)
        .await?
        .one()?;
    ChainHead::from_row(&row)
}

impl ChainHead {
    /// The head from the row [`LOCK_AUDIT_HEAD`] returns.
    pub(super) fn from_row(row: &AnyRow) -> Result<ChainHead> {
        Ok(ChainHead {
            seq: row.try_get::<i64, _>("seq")? as u64,
            hash: row.try_get("hash")?,
        })
    }
}

pub(super) async fn store_audit_head(conn: &mut AnyConnection, head: &ChainHead) -> Result<()> {
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(head.seq as i64)
        .bind(&head.hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Values each audit event binds in [`insert_events_sql`].
pub(super) const EVENT_COLUMNS: usize = 9;

/// The INSERT of `rows` audit events, bound by [`bind_events`].
pub(super) fn insert_events_sql(rows: usize, style: Placeholders) -> String {
    format!(
        "INSERT INTO audit_events (seq, at, actor, action, subject, serials, details, prev_hash, hash) VALUES {}",
        values_list_as(rows, EVENT_COLUMNS, style)
    )
}

pub(super) fn bind_events<'q>(mut query: AnyQuery<'q>, events: &[ChainedEvent]) -> AnyQuery<'q> {
    for e in events {
        query = query
            .bind(e.seq as i64)
            .bind(e.at)
            .bind(&e.draft.actor)
            .bind(&e.draft.action)
            .bind(&e.draft.subject)
            .bind(&e.serials)
            .bind(&e.draft.details)
            .bind(&e.prev_hash)
            .bind(&e.hash);
    }
    query
}

pub(super) async fn insert_events(conn: &mut AnyConnection, events: &[ChainedEvent]) -> Result<()> {
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let query = sqlx::query(AssertSqlSafe(insert_events_sql(
            chunk.len(),
            Placeholders::Numbered,
        )));
        bind_events(query, chunk).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The audit log's part of [`Store`](super::Store).
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an audit event on its own.
    async fn audit(&self, audit: AuditDraft, now: OffsetDateTime) -> Result<()>;

    /// Events after `after_seq`, oldest first.
    async fn audit_events(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditEvent>>;

    /// The chain head `(seq, hash)`; the seq doubles as a cheap change counter.
    async fn audit_head(&self) -> Result<(u64, String)>;
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn audit(&self, audit: AuditDraft, now: OffsetDateTime) -> Result<()> {
        let (tx, open) = self.begin(audit, now).await?;
        self.commit(tx, open).await
    }

    async fn audit_events(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, subject, serials, details, prev_hash, hash FROM audit_events \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let serials: String = row.try_get("serials")?;
                Ok(AuditEvent {
                    seq: row.try_get::<i64, _>("seq")? as u64,
                    at: from_ts(row.try_get("at")?)?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    subject: row.try_get("subject")?,
                    serials: serials
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    details: row.try_get("details")?,
                    prev_hash: row.try_get("prev_hash")?,
                    hash: row.try_get("hash")?,
                })
            })
            .collect()
    }

    async fn audit_head(&self) -> Result<(u64, String)> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_all(&self.pool)
            .await?
            .one()?;
        Ok((row.try_get::<i64, _>("seq")? as u64, row.try_get("hash")?))
    }
}

//! Certificate records: issuance (through the group-commit queue), revocation,
//! lookups and `Idempotency-Key` records.

use super::*;

/// Whether a certificate can still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateStatus {
    /// Issued, unrevoked, unexpired.
    Active,
    /// Revoked.
    Revoked,
    /// Past its not-after.
    Expired,
}

impl CertificateStatus {
    /// The JSON / CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "active" => Ok(Self::Active),
            "revoked" => Ok(Self::Revoked),
            "expired" => Ok(Self::Expired),
            other => Err(Error::InvalidInput(format!(
                "unknown status \"{}\": use active, revoked or expired",
                other.escape_debug()
            ))),
        }
    }
}

/// A certificate as the store keeps it.
#[derive(Debug, Clone)]
pub struct CertificateRecord {
    /// Serial.
    pub serial: Serial,
    /// Tenant.
    pub tenant: String,
    /// Admin.
    pub admin: String,
    /// Policy name.
    pub policy: String,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
    /// When revoked.
    pub revoked_at: Option<OffsetDateTime>,
    /// Why revoked.
    pub reason: Option<RevocationReason>,
    /// Compromise time given by the operator.
    pub invalidity_date: Option<OffsetDateTime>,
    /// The certificate.
    pub der: Vec<u8>,
    /// The number of the issuer that signed it (see [`IssuerRow`]).
    pub issuer: u64,
}

impl CertificateRecord {
    /// Status at `now`.
    pub fn status(&self, now: OffsetDateTime) -> CertificateStatus {
        if self.revoked_at.is_some() {
            CertificateStatus::Revoked
        } else if self.not_after <= now {
            CertificateStatus::Expired
        } else {
            CertificateStatus::Active
        }
    }
}

/// What [`Store::insert_certificate`] revokes in the same transaction (reissue).
#[derive(Debug, Clone, Copy)]
pub struct Supersede {
    /// Reason given to every revoked certificate.
    pub reason: RevocationReason,
    /// Refuse (and roll back) when nothing was active to revoke: a
    /// replace-only reissue must never become a first issuance.
    pub require_active: bool,
}

/// An `Idempotency-Key` recorded with the issuance it produced.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The caller's key within its scope, as stored.
    pub key: String,
    /// Hash of what was asked (operation, tenant, admin, parameters).
    pub request_hash: String,
}

impl IdempotencyKey {
    /// Checks the caller's key (1-255 visible ASCII characters) and fingerprints
    /// the request it came with; `parts` are the request's parameters in a fixed order.
    ///
    /// Keys live in the namespace `scope` (the tenant and the caller's
    /// credential): a caller can neither see that another used a key nor
    /// claim one first to block another's retries.
    pub fn new(key: &str, scope: &str, operation: &str, parts: &[&str]) -> Result<Self> {
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidInput(
                "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good choice)".into(),
            ));
        }
        let mut h = openssl::sha::Sha256::new();
        for part in std::iter::once(operation).chain(parts.iter().copied()) {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        Ok(IdempotencyKey {
            // The unit separator cannot occur in a key or a scope.
            key: format!("{scope}\u{1f}{key}"),
            request_hash: hex::encode(h.finish()),
        })
    }
}

/// What an earlier request with the same `Idempotency-Key` did.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    /// Hash of that request.
    pub request_hash: String,
    /// The serial it issued.
    pub serial: Serial,
    /// When.
    pub created_at: OffsetDateTime,
}

/// Filters for [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this admin.
    pub admin: Option<String>,
    /// Only this policy.
    pub policy: Option<String>,
    /// Only this status.
    pub status: Option<CertificateStatus>,
    /// Only active certificates whose not-after is within this many seconds.
    pub expiring_within_secs: Option<u64>,
    /// Page size (1..=1000).
    pub limit: u32,
    /// Start after this serial.
    pub cursor: Option<Serial>,
}

/// How long an `Idempotency-Key` is remembered.
pub(crate) const IDEMPOTENCY_WINDOW_SECS: i64 = 24 * 3600;

pub(super) async fn bump_revision(tx: &mut Tx) -> Result<()> {
    // Every issuer's revision moves (not only the revoked certificate's
    // issuer's): each CRL is then rebuilt, which costs a second small CRL
    // during a rollover and keeps row 1's revision a counter of every
    // revocation, which the OCSP caches watch.
    sqlx::query("UPDATE crl_state SET revision = revision + 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records, in the revoking transaction and after [`bump_revision`], the
/// revision of its issuer's CRL state at which `serial` was revoked: the
/// publisher reads the entries revoked since its last CRL by this column
/// (`CrlStore::revoked_between`). The row lock the bump took orders these
/// revisions as the commits are ordered, so a window of revisions the
/// publisher has seen committed never gains a late entry.
pub(super) async fn mark_revoked_rev(conn: &mut AnyConnection, serial: &Serial) -> Result<()> {
    sqlx::query(
        "UPDATE certificates SET revoked_rev = (SELECT revision FROM crl_state WHERE crl_state.id = certificates.issuer) \
         WHERE serial = $1",
    )
    .bind(serial.to_hex())
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() || db.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}

pub(super) const CERT_COLUMNS: &str =
    "serial, tenant, admin, policy, not_before, not_after, revoked_at, reason, invalidity_date, der, issuer";

pub(super) fn record_from_row(row: &AnyRow) -> Result<CertificateRecord> {
    let serial: String = row.try_get("serial")?;
    let opt_ts = |name: &str| -> Result<Option<OffsetDateTime>> {
        row.try_get::<Option<i64>, _>(name)?
            .map(from_ts)
            .transpose()
    };
    Ok(CertificateRecord {
        serial: Serial::parse(&serial)
            .map_err(|_| Error::Store(format!("bad serial in store: {serial}")))?,
        tenant: row.try_get("tenant")?,
        admin: row.try_get("admin")?,
        policy: row.try_get("policy")?,
        not_before: from_ts(row.try_get("not_before")?)?,
        not_after: from_ts(row.try_get("not_after")?)?,
        revoked_at: opt_ts("revoked_at")?,
        reason: row
            .try_get::<Option<i64>, _>("reason")?
            .and_then(RevocationReason::from_code),
        invalidity_date: opt_ts("invalidity_date")?,
        der: row.try_get("der")?,
        issuer: row.try_get::<i64, _>("issuer")? as u64,
    })
}

/// Certificate records: the part of [`Store`](super::Store) issuance, reissue and revocation go through.
#[async_trait]
pub trait CertificateStore: Send + Sync {
    /// Inserts a new certificate. With `supersede`, first revokes every active
    /// certificate of the same (tenant, admin, policy) — all in one transaction —
    /// and returns their serials. Without it, an active one means `Conflict`.
    /// With `idempotency`, the key is recorded in the same transaction; a key
    /// already recorded means `AlreadyDone`.
    async fn insert_certificate(
        &self,
        record: &CertificateRecord,
        supersede: Option<Supersede>,
        idempotency: Option<&IdempotencyKey>,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<Vec<Serial>>;

    /// The record of an `Idempotency-Key` used since `since`.
    async fn idempotency(
        &self,
        key: &str,
        since: OffsetDateTime,
    ) -> Result<Option<IdempotencyRecord>>;

    /// Revokes one certificate.
    async fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        invalidity_date: Option<OffsetDateTime>,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<CertificateRecord>;

    /// One certificate.
    async fn certificate(&self, serial: &Serial) -> Result<Option<CertificateRecord>>;

    /// Certificates matching `filter`, in serial order.
    async fn list(
        &self,
        filter: &ListFilter,
        now: OffsetDateTime,
    ) -> Result<Vec<CertificateRecord>>;

    /// Active certificates of one admin (all policies).
    async fn active_for(
        &self,
        tenant: &str,
        admin: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<CertificateRecord>>;

    /// Keeps a revocation a CRL newer than a restored backup shows (restore
    /// `--roll-forward`): an unrevoked certificate is revoked as of
    /// `revoked_at`; a serial the store never saw (issued after the backup)
    /// gets a revoked placeholder row of `issuer`, listed on its CRLs until
    /// `not_after` (no DER: the certificate itself is not known). Returns
    /// whether anything changed.
    async fn keep_revocation(
        &self,
        issuer: u64,
        entry: &RevokedEntry,
        not_after: OffsetDateTime,
        audit: AuditDraft,
    ) -> Result<bool>;
}

#[async_trait]
impl CertificateStore for SqlStore {
    async fn insert_certificate(
        &self,
        record: &CertificateRecord,
        supersede: Option<Supersede>,
        idempotency: Option<&IdempotencyKey>,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<Vec<Serial>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = InsertJob {
            record: record.clone(),
            supersede,
            idempotency: idempotency.cloned(),
            audit,
            now,
            reply,
            pickup: None,
        };
        self.inserts
            .send(job)
            .await
            .map_err(|_| Error::Store("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Store("the store's writer has stopped".into()))?
    }

    async fn idempotency(
        &self,
        key: &str,
        since: OffsetDateTime,
    ) -> Result<Option<IdempotencyRecord>> {
        let row = sqlx::query("SELECT request_hash, serial, created_at FROM idempotency_keys WHERE idem_key = $1 AND created_at > $2")
            .bind(key)
            .bind(ts(since))
            .fetch_all(&self.pool).await?.into_iter().next();
        row.map(|row| {
            let serial: String = row.try_get("serial")?;
            Ok(IdempotencyRecord {
                request_hash: row.try_get("request_hash")?,
                serial: Serial::parse(&serial)?,
                created_at: from_ts(row.try_get("created_at")?)?,
            })
        })
        .transpose()
    }

    async fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        invalidity_date: Option<OffsetDateTime>,
        mut audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<CertificateRecord> {
        audit.serials = vec![serial.to_hex()];
        audit.details = format!("reason={}", reason.name());
        let (mut tx, open) = self.begin(audit, now).await?;
        let changed = sqlx::query(
            "UPDATE certificates SET state = 1, revoked_at = $1, reason = $2, invalidity_date = $3 \
             WHERE serial = $4 AND revoked_at IS NULL",
        )
        .bind(ts(now))
        .bind(i64::from(reason.code()))
        .bind(invalidity_date.map(ts))
        .bind(serial.to_hex())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CERT_COLUMNS} FROM certificates WHERE serial = $1"
        )))
        .bind(serial.to_hex())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .next();
        let Some(row) = row else {
            return Err(Error::NotFound(format!(
                "no certificate with serial {serial}"
            )));
        };
        let record = record_from_row(&row)?;
        if changed == 0 {
            let when = record.revoked_at.map(crate::rfc3339).unwrap_or_default();
            return Err(Error::Conflict(format!(
                "certificate {serial} is already revoked (since {when}, reason {})",
                record.reason.map(|r| r.name()).unwrap_or("unspecified")
            )));
        }
        bump_revision(&mut tx).await?;
        mark_revoked_rev(&mut tx, serial).await?;
        self.commit(tx, open).await?;
        Ok(record)
    }

    async fn certificate(&self, serial: &Serial) -> Result<Option<CertificateRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CERT_COLUMNS} FROM certificates WHERE serial = $1"
        )))
        .bind(serial.to_hex())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        row.as_ref().map(record_from_row).transpose()
    }

    async fn list(
        &self,
        filter: &ListFilter,
        now: OffsetDateTime,
    ) -> Result<Vec<CertificateRecord>> {
        enum Arg {
            Text(String),
            Int(i64),
        }
        let mut conditions = Vec::new();
        let mut args = Vec::new();
        let mut push = |condition: &str, arg: Arg| {
            args.push(arg);
            conditions.push(condition.replace('?', &format!("${}", args.len())));
        };
        match &filter.tenant {
            Some(t) => push("tenant = ?", Arg::Text(t.clone())),
            // The CA's own certificates (OCSP responder) are listed only when asked for.
            None => push(
                "tenant <> ?",
                Arg::Text(crate::ids::RESERVED_TENANT.to_owned()),
            ),
        }
        if let Some(a) = &filter.admin {
            push("admin = ?", Arg::Text(a.clone()));
        }
        if let Some(p) = &filter.policy {
            push("policy = ?", Arg::Text(p.clone()));
        }
        match filter.status {
            Some(CertificateStatus::Active) => {
                push("revoked_at IS NULL AND not_after > ?", Arg::Int(ts(now)))
            }
            Some(CertificateStatus::Expired) => {
                push("revoked_at IS NULL AND not_after <= ?", Arg::Int(ts(now)))
            }
            Some(CertificateStatus::Revoked) => {
                push("revoked_at IS NOT NULL AND 0 = ?", Arg::Int(0))
            }
            None => {}
        }
        if let Some(within) = filter.expiring_within_secs {
            let horizon = ts(now).saturating_add(i64::try_from(within).unwrap_or(i64::MAX / 2));
            push("revoked_at IS NULL AND not_after > ?", Arg::Int(ts(now)));
            push("not_after <= ?", Arg::Int(horizon));
        }
        if let Some(cursor) = &filter.cursor {
            push("serial > ?", Arg::Text(cursor.to_hex()));
        }
        let mut sql = format!("SELECT {CERT_COLUMNS} FROM certificates");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(
            " ORDER BY serial LIMIT {}",
            filter.limit.clamp(1, 1000)
        ));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for arg in args {
            query = match arg {
                Arg::Text(t) => query.bind(t),
                Arg::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn active_for(
        &self,
        tenant: &str,
        admin: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<CertificateRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CERT_COLUMNS} FROM certificates WHERE tenant = $1 AND admin = $2 AND state = 0 AND not_after > $3 ORDER BY serial"
        )))
        .bind(tenant)
        .bind(admin)
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn keep_revocation(
        &self,
        issuer: u64,
        entry: &RevokedEntry,
        not_after: OffsetDateTime,
        mut audit: AuditDraft,
    ) -> Result<bool> {
        audit.serials = vec![entry.serial.to_hex()];
        audit.details = format!(
            "reason={} revoked_at={}",
            entry.reason.name(),
            crate::rfc3339(entry.revoked_at)
        );
        let at = entry.revoked_at;
        let (mut tx, open) = self.begin(audit, crate::now()).await?;
        let changed = sqlx::query(
            "UPDATE certificates SET state = 1, revoked_at = $1, reason = $2, invalidity_date = $3 \
             WHERE serial = $4 AND revoked_at IS NULL",
        )
        .bind(ts(at))
        .bind(i64::from(entry.reason.code()))
        .bind(entry.invalidity_date.map(ts))
        .bind(entry.serial.to_hex())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let known = sqlx::query("SELECT serial FROM certificates WHERE serial = $1")
            .bind(entry.serial.to_hex())
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .next()
            .is_some();
        let inserted = if known {
            0
        } else {
            // The CA's reserved tenant: listed only when asked for, never
            // counted as an admin's active certificate.
            sqlx::query(
                "INSERT INTO certificates (serial, tenant, admin, policy, state, not_before, not_after, revoked_at, reason, invalidity_date, created_at, der, issuer) \
                 VALUES ($1, $2, $3, $4, 1, $5, $6, $5, $7, $8, $9, $10, $11)",
            )
            .bind(entry.serial.to_hex())
            .bind(crate::ids::RESERVED_TENANT)
            .bind(format!("restored-{}", entry.serial.to_hex()))
            .bind("restored-revocation")
            .bind(ts(at))
            .bind(ts(not_after))
            .bind(i64::from(entry.reason.code()))
            .bind(entry.invalidity_date.map(ts))
            .bind(ts(crate::now()))
            .bind(Vec::<u8>::new())
            .bind(issuer as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        };
        if changed + inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        bump_revision(&mut tx).await?;
        mark_revoked_rev(&mut tx, &entry.serial).await?;
        self.commit(tx, open).await?;
        Ok(true)
    }
}

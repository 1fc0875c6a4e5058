//! The issuers of this CA (one active, earlier ones retired but still
//! answering for their certificates).

use super::*;

/// Where an issuer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerState {
    /// Its key and CSR exist; it waits for the root to sign its certificate.
    Pending,
    /// New certificates come from it.
    Active,
    /// Replaced by a rollover: it signs only its CRL and OCSP answers until
    /// its last certificate expires.
    Retired,
}

impl IssuerState {
    pub(super) fn code(self) -> i64 {
        match self {
            Self::Pending => 0,
            Self::Active => 1,
            Self::Retired => 2,
        }
    }

    pub(super) fn from_code(code: i64) -> Result<Self> {
        match code {
            0 => Ok(Self::Pending),
            1 => Ok(Self::Active),
            2 => Ok(Self::Retired),
            other => Err(Error::Store(format!("bad issuer state {other} in store"))),
        }
    }

    /// The name shown to operators.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }
}

/// One issuer of the CA as the store keeps it (no key material: `key_ref`
/// names the key file or the token key).
#[derive(Debug, Clone)]
pub struct IssuerRow {
    /// Its number: its CRL state, and what certificates record as their issuer.
    pub number: u64,
    /// Its stable id (hex of the start of its key identifier), used in URLs.
    pub id: String,
    /// Where it stands.
    pub state: IssuerState,
    /// Its subject, as given when it was created.
    pub subject: String,
    /// Its key: a file name in the data directory, or a token key record.
    pub key_ref: String,
    /// Its certificate (none while pending).
    pub der: Option<Vec<u8>>,
    /// Its certificate's notAfter.
    pub not_after: Option<OffsetDateTime>,
}

/// The issuer set: the part of [`Store`](super::Store) the hierarchy commands go through.
#[async_trait]
pub trait IssuerStore: Send + Sync {
    /// Every issuer, by number.
    async fn issuers(&self) -> Result<Vec<IssuerRow>>;

    /// Records a new issuer (its CRL numbers start at 0), in one audited
    /// transaction. Its number must be new.
    async fn add_issuer(
        &self,
        issuer: &IssuerRow,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<()>;

    /// Installs `der` as the certificate of pending issuer `number` and makes
    /// it the active one; the previously active issuer is retired (it keeps
    /// its CRL and OCSP). One audited transaction.
    async fn activate_issuer(
        &self,
        number: u64,
        der: &[u8],
        not_after: OffsetDateTime,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<()>;
}

#[async_trait]
impl IssuerStore for SqlStore {
    async fn issuers(&self) -> Result<Vec<IssuerRow>> {
        let rows = sqlx::query(
            "SELECT number, id, state, subject, key_ref, not_after, der FROM issuers ORDER BY number",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(IssuerRow {
                    number: row.try_get::<i64, _>("number")? as u64,
                    id: row.try_get("id")?,
                    state: IssuerState::from_code(row.try_get("state")?)?,
                    subject: row.try_get("subject")?,
                    key_ref: row.try_get("key_ref")?,
                    der: row.try_get("der")?,
                    not_after: row
                        .try_get::<Option<i64>, _>("not_after")?
                        .map(from_ts)
                        .transpose()?,
                })
            })
            .collect()
    }

    async fn add_issuer(
        &self,
        issuer: &IssuerRow,
        mut audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<()> {
        audit.details = format!(
            "issuer={} number={} state={}",
            issuer.id,
            issuer.number,
            issuer.state.name()
        );
        let (mut tx, open) = self.begin(audit, now).await?;
        let inserted = sqlx::query(
            "INSERT INTO issuers (number, id, state, subject, key_ref, not_after, der, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(issuer.number as i64)
        .bind(&issuer.id)
        .bind(issuer.state.code())
        .bind(&issuer.subject)
        .bind(&issuer.key_ref)
        .bind(issuer.not_after.map(ts))
        .bind(issuer.der.clone())
        .bind(ts(now))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Conflict(format!(
                    "an issuer numbered {} or with id {} already exists",
                    issuer.number, issuer.id
                )))
            }
            Err(e) => return Err(e.into()),
        }
        // Issuer 1's CRL state comes with the schema; later issuers get theirs here.
        sqlx::query(
            "INSERT INTO crl_state (id, last_number, published_number) VALUES ($1, 0, 0) ON CONFLICT DO NOTHING",
        )
        .bind(issuer.number as i64)
        .execute(&mut *tx)
        .await?;
        self.commit(tx, open).await
    }

    async fn activate_issuer(
        &self,
        number: u64,
        der: &[u8],
        not_after: OffsetDateTime,
        mut audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<()> {
        audit.details = format!(
            "number={number} not_after={} sha256={}",
            crate::rfc3339(not_after),
            hex::encode(crate::hash::sha256(der))
        );
        let (mut tx, open) = self.begin(audit, now).await?;
        let changed = sqlx::query(
            "UPDATE issuers SET state = 1, der = $1, not_after = $2 WHERE number = $3 AND state = 0",
        )
        .bind(der)
        .bind(ts(not_after))
        .bind(number as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(Error::Conflict(format!(
                "issuer {number} is not waiting for a certificate (it was imported already, or never created)"
            )));
        }
        sqlx::query("UPDATE issuers SET state = 2 WHERE state = 1 AND number <> $1")
            .bind(number as i64)
            .execute(&mut *tx)
            .await?;
        self.commit(tx, open).await
    }
}

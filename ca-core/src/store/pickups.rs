//! Bundles waiting for one-time pickup (sealed; see `pki::seal`), their mail
//! bookkeeping, and the expiry reminders already sent.
//!
//! A pickup is created in the transaction that inserts its certificate (the
//! group-commit queue's `insert_one`), so there is never a certificate whose
//! bundle was meant to wait but does not, nor a pickup without its
//! certificate. Every later change of state — a wrong code, collection,
//! expiry, lock-out, replacement — clears the sealed columns where it ends
//! the pickup, in the transaction that writes its audit event.

use super::*;
use crate::pki::seal::{Sealed, MAX_FAILURES};

/// Where a pickup stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickupState {
    /// The sealed bundle waits for its code.
    Waiting,
    /// Collected; the sealed bundle is gone.
    Collected,
    /// Not collected within `pickup.validity`; destroyed.
    Expired,
    /// Too many wrong codes; destroyed (a resend makes a new one).
    Locked,
    /// A resend or reissue replaced it; destroyed.
    Replaced,
}

impl PickupState {
    /// The JSON / CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Collected => "collected",
            Self::Expired => "expired",
            Self::Locked => "locked",
            Self::Replaced => "replaced",
        }
    }

    fn code(self) -> i64 {
        match self {
            Self::Waiting => 0,
            Self::Collected => 1,
            Self::Expired => 2,
            Self::Locked => 3,
            Self::Replaced => 4,
        }
    }

    fn from_code(code: i64) -> Result<Self> {
        Ok(match code {
            0 => Self::Waiting,
            1 => Self::Collected,
            2 => Self::Expired,
            3 => Self::Locked,
            4 => Self::Replaced,
            other => return Err(Error::Store(format!("bad pickup state in store: {other}"))),
        })
    }
}

/// Whether the notification mail of a pickup went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailState {
    /// No mail: no address given, or no `smtp.url` configured.
    None,
    /// To be sent.
    Pending,
    /// Accepted by the SMTP server.
    Sent,
    /// The SMTP server could not be reached or refused it (`resend` retries).
    Failed,
    /// Claimed by a server that is sending it now.
    Sending,
}

impl MailState {
    /// The JSON / CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Sending => "sending",
        }
    }

    fn code(self) -> i64 {
        match self {
            Self::None => 0,
            Self::Pending => 1,
            Self::Sent => 2,
            Self::Failed => 3,
            Self::Sending => 4,
        }
    }

    fn from_code(code: i64) -> Self {
        match code {
            1 => Self::Pending,
            2 => Self::Sent,
            3 => Self::Failed,
            4 => Self::Sending,
            _ => Self::None,
        }
    }
}

/// A pickup as listed (never its sealed bundle).
#[derive(Debug, Clone)]
pub struct PickupRecord {
    /// Random id (the link's last part).
    pub id: String,
    /// The certificate whose bundle waits.
    pub serial: String,
    /// Tenant.
    pub tenant: String,
    /// Admin.
    pub admin: String,
    /// Policy.
    pub policy: String,
    /// Where the notification mail goes.
    pub email: Option<String>,
    /// Where it stands.
    pub state: PickupState,
    /// Wrong codes so far.
    pub failures: u32,
    /// When made.
    pub created_at: OffsetDateTime,
    /// When it expires.
    pub expires_at: OffsetDateTime,
    /// When collected, expired, locked or replaced.
    pub closed_at: Option<OffsetDateTime>,
    /// The notification mail.
    pub mail: MailState,
    /// Why the last mail failed.
    pub mail_error: Option<String>,
}

impl PickupRecord {
    /// The state at `now`: a waiting pickup past its expiry counts as expired
    /// even before the sweep records it.
    pub fn state_at(&self, now: OffsetDateTime) -> PickupState {
        if self.state == PickupState::Waiting && self.expires_at <= now {
            PickupState::Expired
        } else {
            self.state
        }
    }
}

/// A new pickup, inserted with its certificate.
#[derive(Debug, Clone)]
pub struct NewPickup {
    /// Random id.
    pub id: String,
    /// Notification address.
    pub email: Option<String>,
    /// Expiry.
    pub expires_at: OffsetDateTime,
    /// The sealed bundle.
    pub sealed: Sealed,
    /// Whether the notification mail is to be sent.
    pub mail: MailState,
    /// A resend: refused inside the transaction if the bundle being
    /// replaced was already collected (or there was none waiting).
    pub resend: bool,
}

/// The sealed parts of a waiting pickup.
#[derive(Debug, Clone)]
pub struct SealedPickup {
    /// scrypt salt.
    pub salt: Vec<u8>,
    /// AES-GCM nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub sealed: Vec<u8>,
    /// Hash that tells the right code.
    pub code_hash: Vec<u8>,
}

/// What a wrong code did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrongCode {
    /// Counted; this many tries are left.
    Counted {
        /// Tries left before the lock.
        left: u32,
    },
    /// That was the last try: the pickup is locked and destroyed.
    Locked,
    /// The pickup was no longer waiting.
    NotWaiting,
}

/// An active certificate whose expiry reminder is due.
#[derive(Debug, Clone)]
pub struct ReminderDue {
    /// Serial.
    pub serial: String,
    /// Tenant.
    pub tenant: String,
    /// Admin.
    pub admin: String,
    /// Not-after.
    pub not_after: OffsetDateTime,
    /// The address the certificate's pickup named.
    pub email: String,
}

const PICKUP_COLUMNS: &str = "id, serial, tenant, admin, policy, email, state, failures, created_at, expires_at, closed_at, mail_state, mail_error";

fn pickup_from_row(row: &AnyRow) -> Result<PickupRecord> {
    Ok(PickupRecord {
        id: row.try_get("id")?,
        serial: row.try_get("serial")?,
        tenant: row.try_get("tenant")?,
        admin: row.try_get("admin")?,
        policy: row.try_get("policy")?,
        email: row.try_get("email")?,
        state: PickupState::from_code(row.try_get::<i64, _>("state")?)?,
        failures: row.try_get::<i64, _>("failures")? as u32,
        created_at: from_ts(row.try_get("created_at")?)?,
        expires_at: from_ts(row.try_get("expires_at")?)?,
        closed_at: row
            .try_get::<Option<i64>, _>("closed_at")?
            .map(from_ts)
            .transpose()?,
        mail: MailState::from_code(row.try_get::<i64, _>("mail_state")?),
        mail_error: row.try_get("mail_error")?,
    })
}

/// Ends a pickup (destroying its sealed bundle) if it is still waiting;
/// true when it was.
async fn close(conn: &mut AnyConnection, id: &str, state: PickupState, now: i64) -> Result<bool> {
    let changed = sqlx::query(
        "UPDATE pickups SET state = $1, salt = NULL, nonce = NULL, sealed = NULL, closed_at = $2 WHERE id = $3 AND state = 0",
    )
    .bind(state.code())
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// The statements of a pickup inside its certificate's insertion (see
/// `insert_queue::insert_one`): the resend check runs before anything is
/// revoked, then every waiting pickup of (tenant, admin, policy) is replaced
/// and the new one inserted. Returns the audit events to append.
pub(super) async fn check_resend(
    conn: &mut AnyConnection,
    record: &CertificateRecord,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT p.id AS id, p.state AS state FROM pickups p JOIN certificates c ON c.serial = p.serial \
         WHERE c.tenant = $1 AND c.admin = $2 AND c.policy = $3 AND c.state = 0 ORDER BY p.ordinal",
    )
    .bind(&record.tenant)
    .bind(&record.admin)
    .bind(&record.policy)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Err(Error::NotFound(format!(
            "{}/{} has no bundle waiting for pickup under policy {}: nothing to resend (issue or reissue with delivery \"pickup\")",
            record.tenant, record.admin, record.policy
        )));
    }
    let mut ids = Vec::new();
    for row in rows {
        let state = PickupState::from_code(row.try_get::<i64, _>("state")?)?;
        if state == PickupState::Collected {
            return Err(Error::Conflict(format!(
                "already collected: the bundle of {}/{} was downloaded; a resend cannot bring it back: reissue",
                record.tenant, record.admin
            )));
        }
        ids.push(row.try_get("id")?);
    }
    Ok(ids)
}

/// Replaces (destroys) every waiting pickup of (tenant, admin, policy);
/// returns their ids.
pub(super) async fn replace_waiting(
    conn: &mut AnyConnection,
    record: &CertificateRecord,
    now: i64,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "UPDATE pickups SET state = 4, salt = NULL, nonce = NULL, sealed = NULL, closed_at = $1 \
         WHERE tenant = $2 AND admin = $3 AND policy = $4 AND state = 0 RETURNING id",
    )
    .bind(now)
    .bind(&record.tenant)
    .bind(&record.admin)
    .bind(&record.policy)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>("id")?))
        .collect()
}

pub(super) async fn insert_pickup(
    conn: &mut AnyConnection,
    record: &CertificateRecord,
    pickup: &NewPickup,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO pickups (id, serial, tenant, admin, policy, email, state, salt, nonce, sealed, code_hash, failures, created_at, expires_at, mail_state, ordinal) \
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10, 0, $11, $12, $13, $14)",
    )
    .bind(&pickup.id)
    .bind(record.serial.to_hex())
    .bind(&record.tenant)
    .bind(&record.admin)
    .bind(&record.policy)
    .bind(pickup.email.as_deref())
    .bind(&pickup.sealed.salt)
    .bind(&pickup.sealed.nonce)
    .bind(&pickup.sealed.sealed)
    .bind(&pickup.sealed.code_hash)
    .bind(now)
    .bind(ts(pickup.expires_at))
    .bind(pickup.mail.code())
    .bind(ordinal())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Microseconds since the epoch, strictly increasing within this process.
fn ordinal() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

impl SqlStore {
    /// Commits `tx` with `open`'s event followed by `more`.
    async fn commit_with(
        &self,
        mut tx: Tx,
        mut open: OpenAudit,
        more: &[AuditDraft],
    ) -> Result<()> {
        let mut events = vec![open.head.append(&open.draft, open.at)];
        for draft in more {
            events.push(open.head.append(draft, open.at));
        }
        insert_events(&mut tx, &events).await?;
        store_audit_head(&mut tx, &open.head).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Pickups: the part of [`Store`](super::Store) delivery goes through.
#[async_trait]
pub trait PickupStore: Send + Sync {
    /// [`CertificateStore::insert_certificate`] that also stores the sealed
    /// bundle as a pickup, replacing the waiting ones of (tenant, admin,
    /// policy), in the same transaction; audited `pickup.created` (or
    /// `pickup.resent`).
    async fn insert_certificate_with_pickup(
        &self,
        record: &CertificateRecord,
        supersede: Option<Supersede>,
        pickup: NewPickup,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<Vec<Serial>>;

    /// One pickup, with its sealed parts while it waits.
    async fn pickup(&self, id: &str) -> Result<Option<(PickupRecord, Option<SealedPickup>)>>;

    /// Pickups, newest first: of one tenant, only the uncollected
    /// (waiting, locked, expired) unless `all`; at most `limit`.
    async fn pickups(
        &self,
        tenant: Option<&str>,
        admin: Option<&str>,
        all: bool,
        limit: u32,
    ) -> Result<Vec<PickupRecord>>;

    /// Counts a wrong code; the last allowed one locks the pickup
    /// (`pickup.locked`, sealed bundle destroyed).
    async fn pickup_wrong_code(&self, id: &str, now: OffsetDateTime) -> Result<WrongCode>;

    /// Marks a waiting pickup collected and destroys its sealed bundle
    /// (`pickup.collected`); false when it was no longer waiting.
    async fn collect_pickup(&self, id: &str, now: OffsetDateTime) -> Result<bool>;

    /// Expires waiting pickups past their expiry (`pickup.expired` each),
    /// at most 500 at a time; returns their ids.
    async fn expire_pickups(&self, now: OffsetDateTime) -> Result<Vec<String>>;

    /// Waiting pickups whose mail is still to be sent (made by `ca-cli`, or
    /// by a server that stopped before sending), oldest first.
    async fn pending_mails(&self, limit: u32) -> Result<Vec<PickupRecord>>;

    /// Claims a pending mail for sending (false when another server did).
    async fn claim_pickup_mail(&self, id: &str) -> Result<bool>;

    /// Records what became of a pickup's notification mail
    /// (`pickup.mailed` or `pickup.mail_failed`).
    async fn set_pickup_mail(
        &self,
        id: &str,
        state: MailState,
        error: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<()>;

    /// Active certificates expiring before `before` with an address and no
    /// reminder sent yet (at most `limit`).
    async fn reminders_due(&self, before: OffsetDateTime, limit: u32) -> Result<Vec<ReminderDue>>;

    /// Claims the reminder of `serial` (false when another server already
    /// did); audited `reminder.sent` on success of the claim.
    async fn claim_reminder(&self, due: &ReminderDue, now: OffsetDateTime) -> Result<bool>;

    /// Gives a claimed reminder back after its mail failed (`reminder.failed`),
    /// so a later round tries again.
    async fn release_reminder(&self, serial: &str, error: &str, now: OffsetDateTime) -> Result<()>;
}

fn system(action: &str, subject: String) -> AuditDraft {
    AuditDraft::new("system", action, subject)
}

#[async_trait]
impl PickupStore for SqlStore {
    async fn insert_certificate_with_pickup(
        &self,
        record: &CertificateRecord,
        supersede: Option<Supersede>,
        pickup: NewPickup,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<Vec<Serial>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = InsertJob {
            record: record.clone(),
            supersede,
            idempotency: None,
            audit,
            now,
            reply,
            pickup: Some(pickup),
        };
        self.inserts
            .send(job)
            .await
            .map_err(|_| Error::Store("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Store("the store's writer has stopped".into()))?
    }

    async fn pickup(&self, id: &str) -> Result<Option<(PickupRecord, Option<SealedPickup>)>> {
        let sql = format!(
            "SELECT {PICKUP_COLUMNS}, salt, nonce, sealed, code_hash FROM pickups WHERE id = $1"
        );
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let record = pickup_from_row(&row)?;
        let salt: Option<Vec<u8>> = row.try_get("salt")?;
        let nonce: Option<Vec<u8>> = row.try_get("nonce")?;
        let sealed: Option<Vec<u8>> = row.try_get("sealed")?;
        let parts = match (salt, nonce, sealed) {
            (Some(salt), Some(nonce), Some(sealed)) if record.state == PickupState::Waiting => {
                Some(SealedPickup {
                    salt,
                    nonce,
                    sealed,
                    code_hash: row.try_get("code_hash")?,
                })
            }
            _ => None,
        };
        Ok(Some((record, parts)))
    }

    async fn pickups(
        &self,
        tenant: Option<&str>,
        admin: Option<&str>,
        all: bool,
        limit: u32,
    ) -> Result<Vec<PickupRecord>> {
        let states = if all { "" } else { " AND state IN (0, 2, 3)" };
        let sql = format!(
            "SELECT {PICKUP_COLUMNS} FROM pickups WHERE ($1 = '' OR tenant = $1) AND ($2 = '' OR admin = $2){states} ORDER BY ordinal DESC LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.unwrap_or(""))
            .bind(admin.unwrap_or(""))
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pickup_from_row).collect()
    }

    async fn pickup_wrong_code(&self, id: &str, now: OffsetDateTime) -> Result<WrongCode> {
        let (mut tx, open) = self
            .begin(system("pickup.wrong_code", id.to_owned()), now)
            .await?;
        let rows = sqlx::query(
            "UPDATE pickups SET failures = failures + 1 WHERE id = $1 AND state = 0 RETURNING failures, serial",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let Some(row) = rows.first() else {
            return Ok(WrongCode::NotWaiting);
        };
        let failures = row.try_get::<i64, _>("failures")? as u32;
        let serial: String = row.try_get("serial")?;
        let mut open = open;
        open.draft.serials = vec![serial.clone()];
        open.draft.details = format!("failures={failures}");
        if failures >= MAX_FAILURES {
            close(&mut tx, id, PickupState::Locked, ts(now)).await?;
            let mut locked = system("pickup.locked", id.to_owned());
            locked.serials = vec![serial];
            locked.details = format!("failures={failures} sealed bundle destroyed");
            self.commit_with(tx, open, &[locked]).await?;
            return Ok(WrongCode::Locked);
        }
        self.commit(tx, open).await?;
        Ok(WrongCode::Counted {
            left: MAX_FAILURES.saturating_sub(failures),
        })
    }

    async fn collect_pickup(&self, id: &str, now: OffsetDateTime) -> Result<bool> {
        let (mut tx, mut open) = self
            .begin(system("pickup.collected", id.to_owned()), now)
            .await?;
        let serial = sqlx::query("SELECT serial FROM pickups WHERE id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .first()
            .map(|r| r.try_get::<String, _>("serial"))
            .transpose()?;
        if !close(&mut tx, id, PickupState::Collected, ts(now)).await? {
            return Ok(false);
        }
        open.draft.serials = serial.into_iter().collect();
        open.draft.details = "sealed bundle destroyed".into();
        self.commit(tx, open).await?;
        Ok(true)
    }

    async fn expire_pickups(&self, now: OffsetDateTime) -> Result<Vec<String>> {
        let due = sqlx::query(
            "SELECT id, serial FROM pickups WHERE state = 0 AND expires_at <= $1 ORDER BY expires_at LIMIT 500",
        )
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let (mut tx, open) = self
            .begin(system("pickup.expire-sweep", String::new()), now)
            .await?;
        let mut drafts = Vec::new();
        let mut ids = Vec::new();
        for row in &due {
            let id: String = row.try_get("id")?;
            if close(&mut tx, &id, PickupState::Expired, ts(now)).await? {
                let mut draft = system("pickup.expired", id.clone());
                draft.serials = vec![row.try_get("serial")?];
                draft.details = "sealed bundle destroyed".into();
                drafts.push(draft);
                ids.push(id);
            }
        }
        if drafts.is_empty() {
            return Ok(ids);
        }
        // The first expiry is the transaction's own event; no sweep event.
        let mut open = open;
        open.draft = drafts.remove(0);
        self.commit_with(tx, open, &drafts).await?;
        Ok(ids)
    }

    async fn pending_mails(&self, limit: u32) -> Result<Vec<PickupRecord>> {
        let sql = format!(
            "SELECT {PICKUP_COLUMNS} FROM pickups WHERE mail_state = 1 AND state = 0 ORDER BY ordinal LIMIT $1"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pickup_from_row).collect()
    }

    async fn claim_pickup_mail(&self, id: &str) -> Result<bool> {
        let _writer = self.writer.lock().await;
        let changed =
            sqlx::query("UPDATE pickups SET mail_state = 4 WHERE id = $1 AND mail_state = 1")
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(changed == 1)
    }

    async fn set_pickup_mail(
        &self,
        id: &str,
        state: MailState,
        error: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<()> {
        let action = match state {
            MailState::Failed => "pickup.mail_failed",
            _ => "pickup.mailed",
        };
        let mut draft = system(action, id.to_owned());
        if let Some(error) = error {
            draft.details = format!("error={}", error.replace(char::is_whitespace, "_"));
        }
        let (mut tx, open) = self.begin(draft, now).await?;
        sqlx::query("UPDATE pickups SET mail_state = $1, mail_error = $2 WHERE id = $3")
            .bind(state.code())
            .bind(error)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.commit(tx, open).await
    }

    async fn reminders_due(&self, before: OffsetDateTime, limit: u32) -> Result<Vec<ReminderDue>> {
        let rows = sqlx::query(
            "SELECT c.serial AS serial, c.tenant AS tenant, c.admin AS admin, c.not_after AS not_after, p.email AS email \
             FROM certificates c JOIN pickups p ON p.serial = c.serial \
             WHERE c.state = 0 AND c.not_after <= $1 AND c.not_after > $2 AND p.email IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM reminders r WHERE r.serial = c.serial) \
             ORDER BY c.not_after LIMIT $3",
        )
        .bind(ts(before))
        .bind(ts(crate::ca::now()))
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.pool)
        .await?;
        let mut due: Vec<ReminderDue> = Vec::with_capacity(rows.len());
        for row in rows {
            let serial: String = row.try_get("serial")?;
            // A certificate resent has several pickups: one reminder.
            if due.iter().any(|d| d.serial == serial) {
                continue;
            }
            due.push(ReminderDue {
                serial,
                tenant: row.try_get("tenant")?,
                admin: row.try_get("admin")?,
                not_after: from_ts(row.try_get("not_after")?)?,
                email: row.try_get("email")?,
            });
        }
        Ok(due)
    }

    async fn claim_reminder(&self, due: &ReminderDue, now: OffsetDateTime) -> Result<bool> {
        let mut draft = system("reminder.sent", format!("{}/{}", due.tenant, due.admin));
        draft.serials = vec![due.serial.clone()];
        draft.details = format!("not_after={}", crate::rfc3339(due.not_after));
        let (mut tx, open) = self.begin(draft, now).await?;
        let inserted = sqlx::query(
            "INSERT INTO reminders (serial, email, sent_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&due.serial)
        .bind(&due.email)
        .bind(ts(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        self.commit(tx, open).await?;
        Ok(true)
    }

    async fn release_reminder(&self, serial: &str, error: &str, now: OffsetDateTime) -> Result<()> {
        let mut draft = system("reminder.failed", serial.to_owned());
        draft.serials = vec![serial.to_owned()];
        draft.details = format!("error={}", error.replace(char::is_whitespace, "_"));
        let (mut tx, open) = self.begin(draft, now).await?;
        sqlx::query("DELETE FROM reminders WHERE serial = $1")
            .bind(serial)
            .execute(&mut *tx)
            .await?;
        self.commit(tx, open).await
    }
}

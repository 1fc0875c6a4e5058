//! The `Store` seam: all durable state behind one trait, every state change one
//! transaction. [`SqlStore`] implements it for SQLite (embedded default) and
//! PostgreSQL with the same portable SQL through sqlx's `Any` driver.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::AnyConnection;
// Single-row reads use `fetch_all`: a SQLite statement left un-stepped by
// `fetch_one`/`fetch_optional` keeps its read transaction (and so a stale WAL
// snapshot) open on that pooled connection, hiding later commits from other
// processes.
//
// Dynamic SQL here only ever interpolates fixed column lists and `$n`
// placeholders; every value is bound.
use sqlx::{AnyPool, AssertSqlSafe, Row};
use time::OffsetDateTime;
use tokio::sync::OwnedMutexGuard;

use crate::audit::{event_hash, AuditDraft, AuditEvent};
use crate::error::{Error, Result};
use crate::ids::Serial;
use crate::pki::crl::RevokedEntry;
use crate::reason::RevocationReason;
use crate::tokens::{Role, TokenRecord};

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

/// Where CRL publication stands, read cheaply by publishers in any process.
#[derive(Debug, Clone, Copy)]
pub struct CrlStatus {
    /// Bumped by every revoking transaction.
    pub revision: u64,
    /// The revision the published CRL was built from.
    pub published_revision: u64,
    /// Published CRL number (0: none yet).
    pub published_number: u64,
    /// thisUpdate of the published CRL.
    pub this_update: Option<OffsetDateTime>,
    /// nextUpdate of the published CRL.
    pub next_update: Option<OffsetDateTime>,
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

/// The CRL currently published.
#[derive(Debug, Clone)]
pub struct PublishedCrl {
    /// CRL number.
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// Signed DER.
    pub der: Vec<u8>,
    /// The revocation revision it reflects.
    pub revision: u64,
    /// How many revoked certificates it lists.
    pub entries: u64,
    /// The number of the issuer that signed it.
    pub issuer: u64,
}

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
    fn code(self) -> i64 {
        match self {
            Self::Pending => 0,
            Self::Active => 1,
            Self::Retired => 2,
        }
    }

    fn from_code(code: i64) -> Result<Self> {
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

/// Durable state. Implementations make each method one transaction.
#[async_trait]
pub trait Store: Send + Sync {
    /// Creates or upgrades the schema.
    async fn migrate(&self) -> Result<()>;

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

    /// Reserves the next CRL number (strictly increasing, never reused) and
    /// returns it with the revocation revision. Read the entries after this,
    /// so a higher number never lists fewer revocations.
    async fn begin_crl(&self, issuer: u64) -> Result<(u64, u64)>;

    /// Hands every revoked certificate not expired at `now` to `visit`, in
    /// serial order, a page at a time (a million are never held at once).
    async fn revoked_entries(
        &self,
        issuer: u64,
        now: OffsetDateTime,
        visit: &mut (dyn FnMut(RevokedEntry) + Send),
    ) -> Result<()>;

    /// Where CRL publication of `issuer` stands.
    async fn crl_status(&self, issuer: u64) -> Result<CrlStatus>;

    /// Publishes a signed CRL (of `crl.issuer`) unless a higher number is already published.
    async fn publish_crl(&self, crl: &PublishedCrl, audit: AuditDraft) -> Result<bool>;

    /// The published CRL of `issuer`.
    async fn latest_crl(&self, issuer: u64) -> Result<Option<PublishedCrl>>;

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

    /// Raises `issuer`'s CRL numbers so the next one is above `at_least`
    /// (restore, shown a CRL newer than the backup). Never lowers them.
    async fn raise_crl_number(
        &self,
        issuer: u64,
        at_least: u64,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<()>;

    /// The last CRL number `issuer` reserved (0: none yet).
    async fn last_crl_number(&self, issuer: u64) -> Result<u64>;

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

    /// A consistent copy of the whole database in the file `path` while other
    /// processes go on writing (SQLite `VACUUM INTO`). PostgreSQL: refused,
    /// naming `pg_dump`, which does the same for a server database.
    async fn snapshot_into(&self, path: &std::path::Path) -> Result<()>;

    /// Appends an audit event on its own.
    async fn audit(&self, audit: AuditDraft, now: OffsetDateTime) -> Result<()>;

    /// Events after `after_seq`, oldest first.
    async fn audit_events(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditEvent>>;

    /// The chain head `(seq, hash)`; the seq doubles as a cheap change counter.
    async fn audit_head(&self) -> Result<(u64, String)>;

    /// A named setting.
    async fn meta(&self, name: &str) -> Result<Option<String>>;

    /// Sets a named setting.
    async fn set_meta(&self, name: &str, value: &str) -> Result<()>;

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

    /// Revokes a token.
    async fn revoke_token(&self, id: &str, audit: AuditDraft, now: OffsetDateTime) -> Result<()>;

    /// How many tokens are revoked (it only grows: tokens are never deleted
    /// nor un-revoked), so a change means a revocation.
    async fn revoked_token_count(&self) -> Result<u64>;

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

/// [`Store`] over SQLite or PostgreSQL.
pub struct SqlStore {
    pool: AnyPool,
    /// Write transactions of this process take turns here, so they never
    /// meet inside SQLite, whose busy handler backs off in whole milliseconds.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Queue of the group-committing certificate writer.
    inserts: tokio::sync::mpsc::UnboundedSender<InsertJob>,
    /// SQLite or PostgreSQL (the few statements that differ).
    sqlite: bool,
}

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_ts(secs: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| Error::Store(format!("bad timestamp {secs}: {e}")))
}

/// The single row a statement returns. (Reads use `fetch_all`; see the note at the top.)
trait OneRow {
    fn one(self) -> Result<AnyRow>;
}

impl OneRow for Vec<AnyRow> {
    fn one(self) -> Result<AnyRow> {
        self.into_iter()
            .next()
            .ok_or_else(|| sqlx::Error::RowNotFound.into())
    }
}

/// Revoked entries read per query when building a CRL.
const CRL_CHUNK: i64 = 20_000;

/// Size of the pieces a published CRL's DER is stored in.
const CRL_DER_CHUNK: usize = 1 << 20;

/// One page of revoked entries as [`Store::revoked_entries`] reads it: the
/// serials back to back (32 hex digits each), and the other fields as
/// comma-separated lists in the same order (-1 for none).
struct RevokedPage {
    serials: String,
    revoked_at: String,
    reasons: String,
    invalidity_dates: String,
}

impl RevokedPage {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(RevokedPage {
            serials: row.try_get("serials")?,
            revoked_at: row.try_get("revoked_at")?,
            reasons: row.try_get("reasons")?,
            invalidity_dates: row.try_get("invalidity_dates")?,
        })
    }

    fn visit(&self, n: usize, visit: &mut (dyn FnMut(RevokedEntry) + Send)) -> Result<()> {
        let bad = || Error::Store("bad page of revoked entries in the store".into());
        let number = |text: &str| text.parse::<i64>().map_err(|_| bad());
        if self.serials.len() != n * 32 {
            return Err(bad());
        }
        let mut revoked_at = self.revoked_at.split(',');
        let mut reasons = self.reasons.split(',');
        let mut invalidity_dates = self.invalidity_dates.split(',');
        for hex_serial in self.serials.as_bytes().chunks(32) {
            let mut serial = [0u8; 16];
            hex::decode_to_slice(hex_serial, &mut serial).map_err(|_| bad())?;
            let serial = Serial::from_bytes(&serial).ok_or_else(bad)?;
            let at = number(revoked_at.next().ok_or_else(bad)?)?;
            let reason = number(reasons.next().ok_or_else(bad)?)?;
            let invalidity = number(invalidity_dates.next().ok_or_else(bad)?)?;
            visit(RevokedEntry {
                serial,
                revoked_at: from_ts(at)?,
                reason: RevocationReason::from_code(reason)
                    .unwrap_or(RevocationReason::Unspecified),
                invalidity_date: (invalidity >= 0).then(|| from_ts(invalidity)).transpose()?,
            });
        }
        Ok(())
    }
}

/// How long an `Idempotency-Key` is remembered.
pub(crate) const IDEMPOTENCY_WINDOW_SECS: i64 = 24 * 3600;

async fn bump_revision(tx: &mut Tx) -> Result<()> {
    // Every issuer's revision moves (not only the revoked certificate's
    // issuer's): each CRL is then rebuilt, which costs a second small CRL
    // during a rollover and keeps row 1's revision a counter of every
    // revocation, which the OCSP caches watch.
    sqlx::query("UPDATE crl_state SET revision = revision + 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn token_from_row(row: &AnyRow) -> Result<TokenRecord> {
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

fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() || db.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}

const CERT_COLUMNS: &str =
    "serial, tenant, admin, policy, not_before, not_after, revoked_at, reason, invalidity_date, der, issuer";

fn record_from_row(row: &AnyRow) -> Result<CertificateRecord> {
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

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// A stand-alone audited transaction: the chain head it locked, and the
/// event it will append on commit.
struct OpenAudit {
    /// Write transactions of this process take turns (see [`SqlStore::writer`]).
    _writer: OwnedMutexGuard<()>,
    head: ChainHead,
    at: i64,
    draft: AuditDraft,
}

impl SqlStore {
    /// Connects to `url` (`sqlite://path`, `postgres://…`). SQLite runs in WAL
    /// mode with `synchronous=FULL`: a commit is on disk when it returns.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("invalid database_url: {e}")))?;
        if is_sqlite {
            check_writable_dir(url)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if is_sqlite { 4 } else { 16 })
            // A database that went away must fail requests fast (503), not
            // hold them: PostgreSQL gets 3 s. SQLite waits longer for its
            // few connections under a burst of writes, never for a network.
            .acquire_timeout(StdDuration::from_secs(if is_sqlite { 15 } else { 3 }))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if is_sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA busy_timeout = 15000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            // A COMMIT that SQLite refused (disk full, I/O error) leaves its
            // transaction open on the connection, and sqlx then hands the
            // connection out again inside it: later writes fail with
            // SQLITE_BUSY_SNAPSHOT on its stale snapshot. A connection
            // coming back to the pool is therefore always rolled back (an
            // error here just means there was nothing to roll back).
            .after_release(move |conn, _meta| {
                Box::pin(async move {
                    if is_sqlite {
                        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| Error::Store(format!("cannot open database: {e}")))?;
        let writer = Arc::new(tokio::sync::Mutex::new(()));
        let (inserts, jobs) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run_inserts(pool.clone(), Arc::clone(&writer), jobs));
        Ok(SqlStore {
            pool,
            writer,
            inserts,
            sqlite: is_sqlite,
        })
    }

    /// Starts an audited transaction: locks the chain head first, which takes
    /// the write lock (SQLite) or the head row lock (PostgreSQL) and so
    /// serialises all state changes.
    async fn begin(&self, draft: AuditDraft, now: OffsetDateTime) -> Result<(Tx, OpenAudit)> {
        let writer = Arc::clone(&self.writer).lock_owned().await;
        let mut tx = self.pool.begin().await?;
        let head = lock_audit_head(&mut tx).await?;
        let open = OpenAudit {
            _writer: writer,
            head,
            at: ts(now),
            draft,
        };
        Ok((tx, open))
    }

    /// The DER of published CRL `number`, read a piece at a time into one
    /// buffer of the right size; `None` if a piece is gone (superseded).
    async fn crl_der(&self, issuer: i64, number: i64) -> Result<Option<Vec<u8>>> {
        let sizes = sqlx::query(
            "SELECT count(*) AS n, coalesce(sum(length(data)), 0) AS len FROM crl_pieces WHERE issuer = $2 AND number = $1",
        )
        .bind(number)
        .bind(issuer)
        .fetch_all(&self.pool)
        .await?
        .one()?;
        let pieces: i64 = sizes.try_get("n")?;
        let len: i64 = sizes.try_get("len")?;
        if pieces == 0 {
            return Ok(None);
        }
        let mut der = Vec::with_capacity(len as usize);
        for idx in 0..pieces {
            let row = sqlx::query(
                "SELECT data FROM crl_pieces WHERE number = $1 AND idx = $2 AND issuer = $3",
            )
            .bind(number)
            .bind(idx)
            .bind(issuer)
            .fetch_all(&self.pool)
            .await?;
            let Some(row) = row.first() else {
                return Ok(None);
            };
            der.extend_from_slice(&row.try_get::<Vec<u8>, _>("data")?);
        }
        Ok(Some(der))
    }

    /// Appends the event, moves the head, commits.
    async fn commit(&self, mut tx: Tx, mut open: OpenAudit) -> Result<()> {
        let event = open.head.append(&open.draft, open.at);
        insert_events(&mut tx, &[event]).await?;
        store_audit_head(&mut tx, &open.head).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// SQLite in WAL mode writes beside its database file (`-wal`, `-shm`) even
/// to read; on a full or read-only file system the pool would only time out
/// ("pool timed out while waiting for an open connection") after its 15 s.
/// A probe file says at once what is wrong, naming the directory.
fn check_writable_dir(url: &str) -> Result<()> {
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path.starts_with(':') {
        return Ok(()); // in memory
    }
    let dir = match std::path::Path::new(path).parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Ok(()); // the open reports the missing directory itself
    }
    let probe = dir.join(format!(".ca-write-probe-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        // EROFS, ENOSPC, EDQUOT: the disk, not the request.
        Err(e) if matches!(e.raw_os_error(), Some(30 | 28 | 122)) => Err(Error::StorageFull(
            format!("cannot write in {}: {e}", dir.display()),
        )),
        Err(_) => Ok(()), // permissions and the rest: the open names them
    }
}

/// The audit chain's head as a transaction moves it: events are chained in
/// memory and written together with the new head before the commit.
struct ChainHead {
    seq: u64,
    hash: String,
}

/// An audit event chained to its predecessor, not yet written.
struct ChainedEvent {
    seq: u64,
    at: i64,
    draft: AuditDraft,
    serials: String,
    prev_hash: String,
    hash: String,
}

impl ChainHead {
    fn append(&mut self, draft: &AuditDraft, at: i64) -> ChainedEvent {
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
async fn lock_audit_head(conn: &mut AnyConnection) -> Result<ChainHead> {
    let row = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
        .fetch_all(&mut *conn)
        .await?
        .one()?;
    Ok(ChainHead {
        seq: row.try_get::<i64, _>("seq")? as u64,
        hash: row.try_get("hash")?,
    })
}

async fn store_audit_head(conn: &mut AnyConnection, head: &ChainHead) -> Result<()> {
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(head.seq as i64)
        .bind(&head.hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Most rows one multi-row INSERT carries (9 values each, well inside the
/// bind limits of SQLite and PostgreSQL).
const ROWS_PER_INSERT: usize = 128;

/// `($1, $2, …), ($n+1, …)…` for `rows` rows of `columns` values.
fn values_list(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * columns + column + 1));
        }
        sql.push(')');
    }
    sql
}

async fn insert_events(conn: &mut AnyConnection, events: &[ChainedEvent]) -> Result<()> {
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO audit_events (seq, at, actor, action, subject, serials, details, prev_hash, hash) VALUES {}",
            values_list(chunk.len(), 9)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for e in chunk {
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
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// One certificate insertion waiting for the group commit.
struct InsertJob {
    record: CertificateRecord,
    supersede: Option<Supersede>,
    idempotency: Option<IdempotencyKey>,
    audit: AuditDraft,
    now: OffsetDateTime,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Serial>>>,
}

/// Most insertions committed together.
const MAX_BATCH: usize = 128;

/// Group commit: insertions queued while a commit is in progress go into the
/// next transaction together, each inside its own savepoint (one failing —
/// say, a conflict — leaves the others alone), and share one fsync. Nobody is
/// answered before the transaction holding their row has committed.
async fn run_inserts(
    pool: AnyPool,
    writer: Arc<tokio::sync::Mutex<()>>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<InsertJob>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        let _writer = Arc::clone(&writer).lock_owned().await;
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcomes = commit_batch(&pool, &mut batch).await;
        match outcomes {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in batch {
                    let again = match &e {
                        Error::Unavailable(m) => Error::Unavailable(m.clone()),
                        Error::StorageFull(m) => Error::StorageFull(m.clone()),
                        other => Error::Store(other.to_string()),
                    };
                    let _ = job.reply.send(Err(again));
                }
            }
        }
    }
}

async fn commit_batch(pool: &AnyPool, batch: &mut [InsertJob]) -> Result<Vec<Result<Vec<Serial>>>> {
    let mut tx = pool.begin().await?;
    let mut head = lock_audit_head(&mut tx).await?;
    let mut events = Vec::with_capacity(batch.len());
    let mut results: Vec<Option<Result<Vec<Serial>>>> = batch.iter().map(|_| None).collect();

    // Plain issuances (no reissue, no idempotency key) share one INSERT;
    // a row that meets a conflict is skipped there and retried alone below,
    // where an expired-but-active predecessor is retired first.
    let plain: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].supersede.is_none() && batch[i].idempotency.is_none())
        .collect();
    let plain_jobs: Vec<&InsertJob> = plain.iter().map(|&i| &batch[i]).collect();
    let inserted = insert_rows(&mut tx, &plain_jobs).await?;
    for &i in &plain {
        let job = &batch[i];
        if inserted.contains(&job.record.serial) {
            let draft = job.draft(Vec::new(), "");
            events.push(head.append(&draft, ts(job.now)));
            results[i] = Some(Ok(Vec::new()));
        }
    }

    // The rest one at a time, each in a savepoint: one failing (a conflict,
    // say) leaves the others alone.
    for (job, result) in batch.iter_mut().zip(results.iter_mut()) {
        if result.is_some() {
            continue;
        }
        sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
        let outcome = insert_one(&mut tx, job).await;
        if outcome.is_err() {
            sqlx::query("ROLLBACK TO SAVEPOINT job")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("RELEASE SAVEPOINT job")
            .execute(&mut *tx)
            .await?;
        *result = Some(outcome.map(|(revoked, draft)| {
            events.push(head.append(&draft, ts(job.now)));
            revoked
        }));
    }

    insert_events(&mut tx, &events).await?;
    store_audit_head(&mut tx, &head).await?;
    tx.commit().await?;
    Ok(results.into_iter().flatten().collect())
}

impl InsertJob {
    /// The job's audit event: the new serial first, then those it revoked.
    fn draft(&self, revoked: Vec<String>, extra: &str) -> AuditDraft {
        let mut draft = self.audit.clone();
        draft.serials = std::iter::once(self.record.serial.to_hex())
            .chain(revoked)
            .collect();
        draft.details.push_str(extra);
        draft
    }
}

/// Inserts the jobs' certificate rows with `ON CONFLICT DO NOTHING`;
/// returns the serials that went in (a missing one met a conflict).
async fn insert_rows(
    conn: &mut AnyConnection,
    jobs: &[&InsertJob],
) -> Result<std::collections::HashSet<Serial>> {
    let mut inserted = std::collections::HashSet::with_capacity(jobs.len());
    for chunk in jobs.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO certificates (serial, tenant, admin, policy, state, not_before, not_after, created_at, der, issuer) \
             VALUES {} ON CONFLICT DO NOTHING RETURNING serial",
            values_list(chunk.len(), 10)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for job in chunk {
            let (record, now) = (&job.record, job.now);
            query = query
                .bind(record.serial.to_hex())
                .bind(&record.tenant)
                .bind(&record.admin)
                .bind(&record.policy)
                .bind(0_i64)
                .bind(ts(record.not_before))
                .bind(ts(record.not_after))
                .bind(ts(now))
                .bind(&record.der)
                .bind(record.issuer as i64);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let serial: String = row.try_get("serial")?;
            inserted.insert(Serial::parse(&serial)?);
        }
    }
    Ok(inserted)
}

/// The statements of one insertion (see [`Store::insert_certificate`]), and
/// its audit event.
async fn insert_one(
    conn: &mut AnyConnection,
    job: &mut InsertJob,
) -> Result<(Vec<Serial>, AuditDraft)> {
    let (record, now) = (&job.record, job.now);
    let mut details = String::new();
    if let Some(idem) = &job.idempotency {
        // Keys expire after 24 h; an expired one may be used afresh.
        sqlx::query("DELETE FROM idempotency_keys WHERE idem_key = $1 AND created_at <= $2")
            .bind(&idem.key)
            .bind(ts(now) - IDEMPOTENCY_WINDOW_SECS)
            .execute(&mut *conn)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (idem_key, request_hash, serial, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&idem.key)
        .bind(&idem.request_hash)
        .bind(record.serial.to_hex())
        .bind(ts(now))
        .execute(&mut *conn)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Conflict(
                    "this Idempotency-Key is being used by a concurrent request".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        details.push_str(&format!(
            " idempotency_key_sha256={}",
            hex::encode(crate::hash::sha256(idem.key.as_bytes()))
        ));
    }
    // An issued certificate past its not-after no longer counts as active.
    sqlx::query(
        "UPDATE certificates SET state = 2 WHERE tenant = $1 AND admin = $2 AND policy = $3 AND state = 0 AND not_after <= $4",
    )
    .bind(&record.tenant)
    .bind(&record.admin)
    .bind(&record.policy)
    .bind(ts(now))
    .execute(&mut *conn)
    .await?;
    let mut revoked = Vec::new();
    if let Some(supersede) = job.supersede {
        let rows = sqlx::query(
            "UPDATE certificates SET state = 1, revoked_at = $1, reason = $2 \
             WHERE tenant = $3 AND admin = $4 AND policy = $5 AND state = 0 RETURNING serial",
        )
        .bind(ts(now))
        .bind(i64::from(supersede.reason.code()))
        .bind(&record.tenant)
        .bind(&record.admin)
        .bind(&record.policy)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let serial: String = row.try_get("serial")?;
            revoked.push(Serial::parse(&serial)?);
        }
        revoked.sort();
        if supersede.require_active && revoked.is_empty() {
            return Err(crate::ca::not_replaceable(
                &record.tenant,
                &record.admin,
                &record.policy,
            ));
        }
        if !revoked.is_empty() {
            sqlx::query("UPDATE crl_state SET revision = revision + 1")
                .execute(&mut *conn)
                .await?;
        }
        details.push_str(&format!(" reason={}", supersede.reason.name()));
    }
    if insert_rows(conn, &[&*job]).await?.is_empty() {
        let active = sqlx::query(
                "SELECT serial FROM certificates WHERE tenant = $1 AND admin = $2 AND policy = $3 AND state = 0",
            )
            .bind(&record.tenant)
            .bind(&record.admin)
            .bind(&record.policy)
            .fetch_all(&mut *conn)
            .await?;
        let serial = match active.first() {
            Some(row) => format!(" (serial {})", row.try_get::<String, _>("serial")?),
            None => String::new(),
        };
        return Err(Error::Conflict(format!(
                "{}/{} already has an active certificate under policy {}{serial}: use reissue to replace it",
                record.tenant, record.admin, record.policy
            )));
    }
    let draft = job.draft(revoked.iter().map(Serial::to_hex).collect(), &details);
    Ok((revoked, draft))
}

#[async_trait]
impl Store for SqlStore {
    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .map_err(|e| Error::Store(format!("schema migration failed: {e}")))
    }

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
        };
        self.inserts
            .send(job)
            .map_err(|_| Error::Store("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Store("the store's writer has stopped".into()))?
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

    async fn begin_crl(&self, issuer: u64) -> Result<(u64, u64)> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let state = sqlx::query(
            "UPDATE crl_state SET last_number = last_number + 1 WHERE id = $1 RETURNING last_number, revision",
        )
        .bind(issuer as i64)
        .fetch_all(&mut *tx)
        .await?
        .one()?;
        tx.commit().await?;
        Ok((
            state.try_get::<i64, _>("last_number")? as u64,
            state.try_get::<i64, _>("revision")? as u64,
        ))
    }

    async fn revoked_entries(
        &self,
        issuer: u64,
        now: OffsetDateTime,
        visit: &mut (dyn FnMut(RevokedEntry) + Send),
    ) -> Result<()> {
        // Rows come packed, thousands to a row: one row at a time through the
        // driver costs a thread hand-off each, which for a million entries
        // took seconds. One aggregate per column is cheaper for the database
        // than concatenating each row first. The covering index (migration
        // 0005) means the table, whose rows carry each certificate's DER, is
        // never read.
        let agg = |expr: &str, sep: &str| match self.sqlite {
            true => format!("group_concat({expr}, '{sep}')"),
            false => format!("string_agg(CAST({expr} AS TEXT), '{sep}' ORDER BY serial)"),
        };
        let sql = format!(
            "SELECT {} AS serials, {} AS revoked_at, {} AS reasons, {} AS invalidity_dates, \
                    max(serial) AS last, count(*) AS n FROM ( \
               SELECT serial, revoked_at, coalesce(reason, -1) AS reason, coalesce(invalidity_date, -1) AS invalidity_date \
               FROM certificates WHERE revoked_at IS NOT NULL AND issuer = $3 AND not_after > $1 AND serial > $2 \
               ORDER BY serial LIMIT {CRL_CHUNK}) AS page",
            agg("serial", ""),
            agg("revoked_at", ","),
            agg("reason", ","),
            agg("invalidity_date", ","),
        );
        let page = |after: String| {
            sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(ts(now))
                .bind(after)
                .bind(issuer as i64)
                .fetch_all(&self.pool)
        };
        let mut rows = page(String::new()).await?;
        loop {
            let row = rows.one()?;
            let n: i64 = row.try_get("n")?;
            if n == 0 {
                return Ok(());
            }
            let chunk = RevokedPage::from_row(&row)?;
            let last: String = row.try_get("last")?;
            let next = async {
                match n < CRL_CHUNK {
                    true => None,
                    false => Some(page(last).await),
                }
            };
            // This page is parsed while the database reads the next one.
            let parse = async { chunk.visit(n as usize, visit) };
            let (next, parsed) = tokio::join!(next, parse);
            parsed?;
            match next {
                Some(next) => rows = next?,
                None => return Ok(()),
            }
        }
    }

    async fn crl_status(&self, issuer: u64) -> Result<CrlStatus> {
        let row = sqlx::query(
            "SELECT revision, published_revision, published_number, this_update, next_update FROM crl_state WHERE id = $1",
        )
        .bind(issuer as i64)
        .fetch_all(&self.pool).await?.one()?;
        Ok(CrlStatus {
            revision: row.try_get::<i64, _>("revision")? as u64,
            published_revision: row.try_get::<i64, _>("published_revision")? as u64,
            published_number: row.try_get::<i64, _>("published_number")? as u64,
            this_update: row
                .try_get::<Option<i64>, _>("this_update")?
                .map(from_ts)
                .transpose()?,
            next_update: row
                .try_get::<Option<i64>, _>("next_update")?
                .map(from_ts)
                .transpose()?,
        })
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

    async fn publish_crl(&self, crl: &PublishedCrl, mut audit: AuditDraft) -> Result<bool> {
        audit.details = format!(
            "crl_number={} next_update={} sha256={}",
            crl.number,
            crate::rfc3339(crl.next_update),
            hex::encode(crate::hash::sha256(&crl.der))
        );
        let (mut tx, open) = self.begin(audit, crl.this_update).await?;
        let changed = sqlx::query(
            "UPDATE crl_state SET published_number = $1, this_update = $2, next_update = $3, published_revision = $4, entries = $5 \
             WHERE id = $6 AND published_number < $1",
        )
        .bind(crl.number as i64)
        .bind(ts(crl.this_update))
        .bind(ts(crl.next_update))
        .bind(crl.revision as i64)
        .bind(crl.entries as i64)
        .bind(crl.issuer as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM crl_pieces WHERE issuer = $2 AND number <> $1")
            .bind(crl.number as i64)
            .bind(crl.issuer as i64)
            .execute(&mut *tx)
            .await?;
        for (idx, piece) in crl.der.chunks(CRL_DER_CHUNK).enumerate() {
            sqlx::query(
                "INSERT INTO crl_pieces (issuer, number, idx, data) VALUES ($4, $1, $2, $3)",
            )
            .bind(crl.number as i64)
            .bind(idx as i64)
            .bind(piece)
            .bind(crl.issuer as i64)
            .execute(&mut *tx)
            .await?;
        }
        self.commit(tx, open).await?;
        Ok(true)
    }

    async fn latest_crl(&self, issuer: u64) -> Result<Option<PublishedCrl>> {
        // The pieces of CRL n are written in the transaction that publishes
        // n and deleted in the one that publishes a later CRL: a missing
        // piece means a newer CRL won the race, so read that one.
        for _ in 0..5 {
            let row = sqlx::query(
                "SELECT published_number, published_revision, entries, this_update, next_update FROM crl_state WHERE id = $1",
            )
            .bind(issuer as i64)
            .fetch_all(&self.pool).await?.one()?;
            let number: i64 = row.try_get("published_number")?;
            if number == 0 {
                return Ok(None);
            }
            let Some(der) = self.crl_der(issuer as i64, number).await? else {
                continue;
            };
            return Ok(Some(PublishedCrl {
                number: number as u64,
                this_update: from_ts(row.try_get("this_update")?)?,
                next_update: from_ts(row.try_get("next_update")?)?,
                der,
                revision: row.try_get::<i64, _>("published_revision")? as u64,
                entries: row.try_get::<i64, _>("entries")? as u64,
                issuer,
            }));
        }
        Err(Error::Store(
            "the published CRL kept changing while it was read; try again".into(),
        ))
    }

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

    async fn raise_crl_number(
        &self,
        issuer: u64,
        at_least: u64,
        mut audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<()> {
        audit.details = format!("issuer_number={issuer} crl_number_at_least={at_least}");
        let (mut tx, open) = self.begin(audit, now).await?;
        sqlx::query(
            "UPDATE crl_state SET last_number = $1, revision = revision + 1 WHERE id = $2 AND last_number < $1",
        )
        .bind(at_least as i64)
        .bind(issuer as i64)
        .execute(&mut *tx)
        .await?;
        self.commit(tx, open).await
    }

    async fn last_crl_number(&self, issuer: u64) -> Result<u64> {
        let row = sqlx::query("SELECT last_number FROM crl_state WHERE id = $1")
            .bind(issuer as i64)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .next();
        Ok(match row {
            Some(row) => row.try_get::<i64, _>("last_number")? as u64,
            None => 0,
        })
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
        self.commit(tx, open).await?;
        Ok(true)
    }

    async fn snapshot_into(&self, path: &std::path::Path) -> Result<()> {
        if !self.sqlite {
            return Err(Error::Conflict(
                "the store is PostgreSQL: back its database up with pg_dump (see the README, \"Backup and restore\"); `ca-cli backup` then archives the data directory and records where the database stood".into(),
            ));
        }
        let target = path.to_str().ok_or_else(|| {
            Error::InvalidInput(format!("backup path {} is not UTF-8", path.display()))
        })?;
        // VACUUM INTO reads in one transaction: the copy is the database as
        // of one commit, while writers carry on (WAL mode).
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

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

    async fn meta(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM ca_meta WHERE name = $1")
            .bind(name)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .next();
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM ca_meta WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO ca_meta (name, value) VALUES ($1, $2)")
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn crl(number: u64, len: usize) -> PublishedCrl {
        let now = crate::now();
        PublishedCrl {
            number,
            this_update: now,
            next_update: now + time::Duration::days(1),
            der: (0..len).map(|i| (i * 7 + number as usize) as u8).collect(),
            revision: number,
            entries: 0,
            issuer: 1,
        }
    }

    /// A PostgreSQL database of its own for one test, from `CA_TEST_POSTGRES_URL`
    /// (see the README); `None` outside CI when the variable is unset.
    async fn postgres_store(tag: &str) -> Option<(SqlStore, PgScratch)> {
        use sqlx::{Connection as _, Executor as _};
        let Ok(admin_url) = std::env::var("CA_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CA_TEST_POSTGRES_URL is not set: CI must run the PostgreSQL tests"
            );
            eprintln!("skipping PostgreSQL: set CA_TEST_POSTGRES_URL=postgres://…");
            return None;
        };
        sqlx::any::install_default_drivers();
        // A fixed name: a database left by a failed run is dropped by the next.
        let name = format!("ca_store_{tag}");
        let mut admin = AnyConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL unreachable at {admin_url}: {e}"));
        let drop_sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        admin
            .execute(AssertSqlSafe(drop_sql.clone()))
            .await
            .unwrap();
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        let (server, _) = admin_url
            .split('?')
            .next()
            .unwrap()
            .rsplit_once('/')
            .unwrap();
        let store = SqlStore::connect(&format!("{server}/{name}"))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        Some((store, PgScratch { admin, drop_sql }))
    }

    /// Drops the test's database when the test is done with it.
    struct PgScratch {
        admin: AnyConnection,
        drop_sql: String,
    }

    impl PgScratch {
        async fn drop_database(mut self, store: SqlStore) {
            use sqlx::Executor as _;
            store.pool.close().await;
            self.admin
                .execute(AssertSqlSafe(self.drop_sql))
                .await
                .unwrap();
        }
    }

    /// A migrated SQLite store in a temp directory (kept while the guard lives).
    async fn sqlite_store() -> (tempfile::TempDir, SqlStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = SqlStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_published_crl_is_stored_in_pieces_and_read_back_whole() {
        let (_dir, store) = sqlite_store().await;
        crl_pieces(&store).await;
    }

    #[tokio::test]
    async fn a_published_crl_is_stored_in_pieces_on_postgres_too() {
        if let Some((store, scratch)) = postgres_store("crl_pieces").await {
            crl_pieces(&store).await;
            scratch.drop_database(store).await;
        }
    }

    #[tokio::test]
    async fn console_sessions_are_bounded_expire_and_end() {
        let (_dir, store) = sqlite_store().await;
        console_sessions(&store).await;
    }

    #[tokio::test]
    async fn console_sessions_are_bounded_expire_and_end_on_postgres_too() {
        if let Some((store, scratch)) = postgres_store("console_sessions").await {
            console_sessions(&store).await;
            scratch.drop_database(store).await;
        }
    }

    async fn console_sessions(store: &SqlStore) {
        let now = crate::now();
        let session = |n: i64, credential: &str, life: i64| ConsoleSession {
            id_hash: format!("{credential}-{n:03}"),
            credential: credential.into(),
            created_at: now + time::Duration::seconds(n),
            expires_at: now + time::Duration::seconds(n + life),
        };
        let draft = || AuditDraft::new("token:t", "console-sign-in", "console");
        // An expired session of another credential is swept by the next sign-in.
        store
            .insert_console_session(&session(0, "token:old", -1), draft(), now)
            .await
            .unwrap();
        let limit = CONSOLE_SESSIONS_PER_CREDENTIAL;
        for n in 1..=limit + 5 {
            store
                .insert_console_session(&session(n, "token:a", 1800), draft(), now)
                .await
                .unwrap();
        }
        assert!(store
            .console_session("token:old-000")
            .await
            .unwrap()
            .is_none());
        // Only the newest `limit` of one credential stay.
        for n in 1..=5 {
            let gone = session(n, "token:a", 1800).id_hash;
            assert!(
                store.console_session(&gone).await.unwrap().is_none(),
                "{gone}"
            );
        }
        let newest = session(limit + 5, "token:a", 1800);
        assert_eq!(
            store.console_session(&newest.id_hash).await.unwrap(),
            Some(newest.clone())
        );
        let kept = store
            .console_session(&session(6, "token:a", 1800).id_hash)
            .await
            .unwrap();
        assert!(kept.is_some());
        // Sign-out deletes; a second one changes nothing.
        let out = || AuditDraft::new("token:a", "console-sign-out", "console");
        assert!(store
            .delete_console_session(&newest.id_hash, out(), now)
            .await
            .unwrap());
        let head = store.audit_head().await.unwrap();
        assert!(!store
            .delete_console_session(&newest.id_hash, out(), now)
            .await
            .unwrap());
        assert_eq!(
            store.audit_head().await.unwrap(),
            head,
            "a no-op sign-out was audited"
        );
        assert!(store
            .console_session(&newest.id_hash)
            .await
            .unwrap()
            .is_none());
    }

    async fn crl_pieces(store: &SqlStore) {
        assert!(store.latest_crl(1).await.unwrap().is_none());

        // Larger than two pieces, not a multiple of the piece size.
        let first = crl(1, 2 * CRL_DER_CHUNK + 12_345);
        let draft = || AuditDraft::new("test", "crl", "crl");
        assert!(store.publish_crl(&first, draft()).await.unwrap());
        assert_eq!(store.latest_crl(1).await.unwrap().unwrap().der, first.der);

        let second = crl(2, CRL_DER_CHUNK / 3);
        assert!(store.publish_crl(&second, draft()).await.unwrap());
        let latest = store.latest_crl(1).await.unwrap().unwrap();
        assert_eq!((latest.number, latest.der), (2, second.der.clone()));
        // The first CRL's pieces are gone; an older number is refused.
        let left: i64 = sqlx::query("SELECT count(*) AS n FROM crl_pieces")
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .one()
            .unwrap()
            .try_get("n")
            .unwrap();
        assert_eq!(left, 1);
        assert!(!store.publish_crl(&first, draft()).await.unwrap());
        assert_eq!(store.latest_crl(1).await.unwrap().unwrap().der, second.der);
    }

    /// Inserts `n` certificate rows straight into the table; row `i` is
    /// revoked unless `i % 7 == 6`, and expired when `i % 13 == 12`.
    async fn fill(store: &SqlStore, n: usize, now: i64) {
        const ROWS: usize = 400;
        for start in (0..n).step_by(ROWS) {
            let end = (start + ROWS).min(n);
            let values: Vec<String> = (start..end)
                .map(|k| {
                    let b = (k - start) * 12;
                    let p: Vec<String> = (1..=12).map(|j| format!("${}", b + j)).collect();
                    format!("({})", p.join(","))
                })
                .collect();
            let sql = format!(
                "INSERT INTO certificates (serial, tenant, admin, policy, state, not_before, not_after, \
                 revoked_at, reason, invalidity_date, created_at, der) VALUES {}",
                values.join(",")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for i in start..end {
                let revoked = i % 7 != 6;
                let not_after = if i % 13 == 12 { now - 10 } else { now + 86_400 };
                query = query
                    .bind(format!("{:032x}", (1u128 << 124) + i as u128))
                    .bind("bulk")
                    .bind(format!("a{i}"))
                    .bind("portal-admin")
                    .bind(if revoked { 1i64 } else { 0 })
                    .bind(now - 3600)
                    .bind(not_after)
                    .bind(revoked.then_some(now - i as i64))
                    .bind((revoked && i % 3 != 0).then_some(if i % 3 == 1 { 1i64 } else { 4 }))
                    .bind((revoked && i % 5 == 0).then_some(now - 7200 - i as i64))
                    .bind(now - 3600)
                    .bind(vec![0x30u8, 0x00]);
            }
            query.execute(&store.pool).await.unwrap();
        }
    }

    /// More than two pages of entries, with every optional field present and
    /// absent, come back complete, in serial order, and without expired ones.
    async fn revoked_pages(store: &SqlStore) {
        let now = crate::now();
        let n = 2 * CRL_CHUNK as usize + 500;
        fill(store, n, now.unix_timestamp()).await;
        let mut seen = Vec::new();
        store
            .revoked_entries(1, now, &mut |entry| seen.push(entry))
            .await
            .unwrap();
        let expected: Vec<usize> = (0..n).filter(|i| i % 7 != 6 && i % 13 != 12).collect();
        assert_eq!(seen.len(), expected.len());
        for (entry, &i) in seen.iter().zip(&expected) {
            let serial = format!("{:032x}", (1u128 << 124) + i as u128);
            assert_eq!(entry.serial.to_hex(), serial);
            assert_eq!(
                entry.revoked_at.unix_timestamp(),
                now.unix_timestamp() - i as i64
            );
            let reason = match i % 3 {
                0 => RevocationReason::Unspecified,
                1 => RevocationReason::KeyCompromise,
                _ => RevocationReason::Superseded,
            };
            assert_eq!(entry.reason, reason, "{serial}");
            assert_eq!(
                entry.invalidity_date.map(|t| t.unix_timestamp()),
                (i % 5 == 0).then_some(now.unix_timestamp() - 7200 - i as i64),
                "{serial}"
            );
        }
    }

    #[tokio::test]
    async fn revoked_entries_come_in_pages_complete_and_in_order() {
        let (_dir, store) = sqlite_store().await;
        revoked_pages(&store).await;
    }

    #[tokio::test]
    async fn revoked_entries_come_in_pages_on_postgres_too() {
        if let Some((store, scratch)) = postgres_store("revoked_pages").await {
            revoked_pages(&store).await;
            scratch.drop_database(store).await;
        }
    }
}
